//! The workers' IO: reading objects and owners live, then deleting,
//! patching references, or removing a finalizer, as [`plan`] decides.
//!
//! Every write is guarded: deletes by the object's UID, patches by the
//! resourceVersion they were computed from (retried on conflict with a
//! fresh read), so a decision made on an object never applies to another
//! one that took its name.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{
    DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};

use super::discovery::{Served, ServedResources};
use super::graph::{FOREGROUND_FINALIZER, Identity, Item, Node, ORPHAN_FINALIZER};
use super::plan::{self, Decision, Propagation};
use super::{Collector, GarbageCollectorError, GraphEvent, Outcome};

/// Attempts at a guarded write before giving up until the retry.
const WRITE_ATTEMPTS: usize = 5;
/// Dependents orphaned at once.
const ORPHAN_CONCURRENCY: usize = 16;

type Result<T> = std::result::Result<T, GarbageCollectorError>;

fn api_error(
    action: &'static str,
    object: &Identity,
    source: kube::Error,
) -> GarbageCollectorError {
    GarbageCollectorError::Api {
        action,
        object: Box::new(object.clone()),
        source,
    }
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

impl Collector {
    fn served(&self) -> Arc<ServedResources> {
        Arc::clone(&self.served.read().expect("discovery poisoned"))
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Result<Served> {
        self.served()
            .resolve(api_version, kind)
            .cloned()
            .ok_or_else(|| GarbageCollectorError::UnknownType {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }

    /// The metadata API of `served` objects in `namespace` (ignored for
    /// cluster-scoped types).
    fn api(&self, served: &Served, namespace: &str) -> Api<PartialObjectMeta<DynamicObject>> {
        if served.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &served.resource)
        } else {
            Api::all_with(self.client.clone(), &served.resource)
        }
    }

    /// The object at `identity`, live; `None` if there is none.
    async fn get(&self, identity: &Identity) -> Result<Option<ObjectMeta>> {
        let served = self.resolve(&identity.api_version, &identity.kind)?;
        if served.namespaced && identity.namespace.is_empty() {
            return Ok(None);
        }
        match self
            .api(&served, &identity.namespace)
            .get_metadata(&identity.name)
            .await
        {
            Ok(object) => Ok(Some(object.metadata)),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(api_error("get", identity, e)),
        }
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.graph
            .lock()
            .expect("graph poisoned")
            .node(uid)
            .cloned()
    }

    async fn virtual_delete(&self, identity: Identity) {
        // Only fails at shutdown.
        let _ = self.changes.send(GraphEvent::VirtualDelete(identity)).await;
    }

    /// Upstream's `attemptToDeleteItem`: looks at one object and deletes it,
    /// trims its references, or (for an owner deleting in the foreground)
    /// moves its deletion on.
    pub(super) async fn attempt_to_delete_item(&self, item: &Item) -> Result<Outcome> {
        let Some(node) = self.node(&item.uid) else {
            return Ok(Outcome::Done);
        };
        if item.virtual_node && node.observed {
            // Queued as a guess that a watch has since replaced.
            return Ok(Outcome::Done);
        }
        if node.being_deleted && !node.deleting_dependents {
            // Its deletion is under way; its dependents are looked at once
            // it is gone.
            return Ok(Outcome::Done);
        }
        let latest = match self.get(&node.identity).await? {
            Some(latest) if latest.uid.as_deref() == Some(node.identity.uid.as_str()) => latest,
            _ => {
                self.virtual_delete(node.identity.clone()).await;
                return Ok(Outcome::Done);
            }
        };
        if node.deleting_dependents {
            self.process_deleting_dependents(&node).await?;
            return Ok(Outcome::Done);
        }
        let references = latest.owner_references.clone().unwrap_or_default();
        if !references.is_empty() {
            let mut classified = Vec::with_capacity(references.len());
            for reference in &references {
                let owner = self.live_owner(reference, &node.identity).await?;
                classified.push((reference.uid.clone(), plan::classify(owner.as_ref())));
            }
            let (has_dependents, dependent_in_foreground) = {
                let graph = self.graph.lock().expect("graph poisoned");
                let dependents = graph.dependents(&node.identity.uid);
                (
                    !dependents.is_empty(),
                    dependents.iter().any(|d| d.deleting_dependents),
                )
            };
            let finalizers = latest.finalizers.clone().unwrap_or_default();
            let decision = plan::decide(
                &finalizers,
                &classified,
                has_dependents,
                dependent_in_foreground,
            );
            self.carry_out(&node.identity, decision).await?;
        }
        if !node.observed {
            // It exists but no watch has shown it (yet): look again later,
            // so a guess never lingers for an object deleted meanwhile.
            return Ok(Outcome::Again);
        }
        Ok(Outcome::Done)
    }

    async fn carry_out(&self, identity: &Identity, decision: Decision) -> Result<()> {
        match decision {
            Decision::Keep => Ok(()),
            Decision::RemoveReferences(owners) => {
                tracing::debug!(object = %identity, ?owners, "removing dangling owner references");
                self.patch_references(identity, |refs| plan::without_owners(refs, &owners))
                    .await
            }
            Decision::DeleteInForeground { unblock } => {
                if unblock {
                    self.patch_references(identity, plan::unblocked).await?;
                }
                self.delete(identity, Propagation::Foreground).await
            }
            Decision::Delete(propagation) => self.delete(identity, propagation).await,
        }
    }

    /// The owner `reference` of `dependent` names, live: `None` if it does
    /// not exist (or another object has its name). Owners the API denied
    /// before are not asked for again.
    async fn live_owner(
        &self,
        reference: &OwnerReference,
        dependent: &Identity,
    ) -> Result<Option<ObjectMeta>> {
        {
            let graph = self.graph.lock().expect("graph poisoned");
            if graph.is_absent(&Identity::of_reference(reference, ""))
                || graph.is_absent(&Identity::of_reference(reference, &dependent.namespace))
            {
                return Ok(None);
            }
        }
        let served = self.resolve(&reference.api_version, &reference.kind)?;
        if served.namespaced && dependent.namespace.is_empty() {
            return Err(
                GarbageCollectorError::NamespacedOwnerOfClusterScopedObject {
                    dependent: Box::new(dependent.clone()),
                    api_version: reference.api_version.clone(),
                    kind: reference.kind.clone(),
                },
            );
        }
        let namespace = if served.namespaced {
            dependent.namespace.as_str()
        } else {
            ""
        };
        let owner = Identity::of_reference(reference, namespace);
        let found = match self
            .api(&served, namespace)
            .get_metadata(&reference.name)
            .await
        {
            Ok(found) => Some(found.metadata),
            Err(e) if status_code(&e) == Some(404) => None,
            Err(e) => return Err(api_error("get owner", &owner, e)),
        };
        match found {
            Some(meta) if meta.uid.as_deref() == Some(reference.uid.as_str()) => Ok(Some(meta)),
            _ => {
                self.graph
                    .lock()
                    .expect("graph poisoned")
                    .record_absent(owner);
                Ok(None)
            }
        }
    }

    /// An owner deleting in the foreground: once no blocking dependent
    /// remains its finalizer goes; until then its blocking dependents are
    /// looked at.
    async fn process_deleting_dependents(&self, node: &Node) -> Result<()> {
        let (any_blocking, to_look_at) = {
            let graph = self.graph.lock().expect("graph poisoned");
            let blocking = graph.blocking_dependents(&node.identity.uid);
            let to_look_at: Vec<Item> = blocking
                .iter()
                .filter(|d| !d.deleting_dependents)
                .map(|d| Item {
                    uid: d.identity.uid.clone(),
                    virtual_node: false,
                })
                .collect();
            (!blocking.is_empty(), to_look_at)
        };
        if !any_blocking {
            tracing::debug!(object = %node.identity, "no blocking dependents left; removing foregroundDeletion");
            return self
                .remove_finalizer(&node.identity, FOREGROUND_FINALIZER)
                .await;
        }
        for item in to_look_at {
            self.attempt_to_delete.add(item);
        }
        Ok(())
    }

    /// Upstream's `attemptToOrphan`: removes the owner from every
    /// dependent's references, then its `orphan` finalizer.
    pub(super) async fn attempt_to_orphan_item(&self, uid: &str) -> Result<Outcome> {
        let Some(owner) = self.node(uid) else {
            return Ok(Outcome::Done);
        };
        let dependents: Vec<Identity> = self
            .graph
            .lock()
            .expect("graph poisoned")
            .dependents(uid)
            .into_iter()
            .map(|d| d.identity.clone())
            .collect();
        let owners = [uid.to_string()];
        let owners = &owners;
        let results: Vec<Result<()>> = futures::stream::iter(dependents)
            .map(|dependent| async move {
                self.patch_references(&dependent, |refs| plan::without_owners(refs, owners))
                    .await
            })
            .buffer_unordered(ORPHAN_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.remove_finalizer(&owner.identity, ORPHAN_FINALIZER)
            .await?;
        Ok(Outcome::Done)
    }

    /// Deletes the object, guarded by its UID.
    async fn delete(&self, identity: &Identity, propagation: Propagation) -> Result<()> {
        let served = self.resolve(&identity.api_version, &identity.kind)?;
        tracing::debug!(object = %identity, ?propagation, "garbage collector deleting");
        let params = DeleteParams {
            propagation_policy: Some(match propagation {
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
                Propagation::Orphan => PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(identity.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .api(&served, &identity.namespace)
            .delete(&identity.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_error("delete", identity, e)),
        }
    }

    /// Rewrites the object's owner references with `change` (`None`: no
    /// change needed), guarded by the resourceVersion it read.
    async fn patch_references<F>(&self, identity: &Identity, change: F) -> Result<()>
    where
        F: Fn(&[OwnerReference]) -> Option<Vec<OwnerReference>>,
    {
        self.guarded_metadata_patch(identity, "update owner references of", |meta| {
            let references = meta.owner_references.as_deref().unwrap_or_default();
            change(references).map(|new| {
                plan::metadata_patch(
                    "ownerReferences",
                    &new,
                    meta.resource_version.as_deref().unwrap_or_default(),
                )
            })
        })
        .await
    }

    /// Removes `finalizer` from the object, guarded by the resourceVersion
    /// it read.
    async fn remove_finalizer(&self, identity: &Identity, finalizer: &str) -> Result<()> {
        self.guarded_metadata_patch(identity, "remove a finalizer of", |meta| {
            let finalizers = meta.finalizers.as_deref().unwrap_or_default();
            plan::without_finalizer(finalizers, finalizer).map(|kept| {
                plan::metadata_patch(
                    "finalizers",
                    &kept,
                    meta.resource_version.as_deref().unwrap_or_default(),
                )
            })
        })
        .await
    }

    /// Reads the object, computes a merge patch from its metadata (`None`:
    /// nothing to do) and sends it, again on conflict. An object that is
    /// gone or has another UID is left alone.
    async fn guarded_metadata_patch<F>(
        &self,
        identity: &Identity,
        action: &'static str,
        patch: F,
    ) -> Result<()>
    where
        F: Fn(&ObjectMeta) -> Option<serde_json::Value>,
    {
        let served = self.resolve(&identity.api_version, &identity.kind)?;
        let api = self.api(&served, &identity.namespace);
        for _ in 0..WRITE_ATTEMPTS {
            let meta = match api.get_metadata(&identity.name).await {
                Ok(object) => object.metadata,
                Err(e) if status_code(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(api_error(action, identity, e)),
            };
            if meta.uid.as_deref() != Some(identity.uid.as_str()) {
                return Ok(());
            }
            let Some(body) = patch(&meta) else {
                return Ok(());
            };
            match api
                .patch_metadata(
                    &identity.name,
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(404) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) => return Err(api_error(action, identity, e)),
            }
        }
        Err(GarbageCollectorError::Contended {
            action,
            object: Box::new(identity.clone()),
        })
    }
}
