//! Storage object in-use protection: the `pvc-protection` and
//! `pv-protection` controllers (upstream's pkg/controller/volume/
//! pvcprotection and pvprotection).
//!
//! The API server's admission puts `kubernetes.io/pvc-protection` on every
//! claim and `kubernetes.io/pv-protection` on every volume when they are
//! created, so deleting one only marks it (`deletionTimestamp`) until these
//! controllers take the finalizer off:
//!
//! - a claim's, once no pod uses it: a pod uses a claim when it is
//!   scheduled (a pod not yet on a node cannot start on a claim being
//!   deleted), has not finished (Succeeded or Failed, or deleted with
//!   nothing running) nor been force-deleted, and mounts the claim, by
//!   `persistentVolumeClaim.claimName` or as the generic ephemeral volume
//!   the claim was made for. The informer's pods are asked first; when they
//!   show no user, the namespace's pods are listed live before the
//!   finalizer goes, since a pod created a moment ago may not be cached yet.
//! - a volume's, once it is no longer `Bound`.
//!
//! Objects created before admission added the finalizers get them here, as
//! upstream does.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::informer::{Informer, InformerFactory, controller_uid};
use crate::runtime::run_controller;

/// The finalizer that keeps a claim in use from going away.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a bound volume from going away.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

/// Which of the two controllers run (upstream runs both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeProtectionConfig {
    /// Run `pvc-protection`.
    pub pvc_protection: bool,
    /// Run `pv-protection`.
    pub pv_protection: bool,
}

impl Default for VolumeProtectionConfig {
    fn default() -> Self {
        Self {
            pvc_protection: true,
            pv_protection: true,
        }
    }
}

/// A finalizer write or pod list that failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {name}: {source}")]
pub struct ProtectionError {
    action: &'static str,
    kind: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

/// What to do with an object's protection finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizerAction {
    /// Put it on (a live object without it).
    Add,
    /// Take it off (a deleted object nothing uses any more).
    Remove,
    /// Leave it.
    Keep,
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|f| f == finalizer)
}

/// Deleted, and still held by `finalizer`.
pub fn is_deletion_candidate(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_some() && has_finalizer(meta, finalizer)
}

/// Live, and missing `finalizer`.
pub fn needs_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_none() && !has_finalizer(meta, finalizer)
}

/// The claims a pod's volumes name: `persistentVolumeClaim.claimName`, and
/// `<pod>-<volume>` for a generic ephemeral volume.
pub fn referenced_claims(pod: &Pod) -> Vec<String> {
    let pod_name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|volume| {
            if let Some(source) = &volume.persistent_volume_claim {
                Some(source.claim_name.clone())
            } else {
                volume
                    .ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", volume.name))
            }
        })
        .collect()
}

/// Upstream's `IsPodTerminated`: Succeeded or Failed, or deleted with no
/// container running any more.
pub fn is_terminated(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return true;
    }
    if pod.metadata.deletion_timestamp.is_none() {
        return false;
    }
    let not_running = |list: Option<&Vec<ContainerStatus>>| {
        list.into_iter().flatten().all(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some() || s.waiting.is_some())
        })
    };
    not_running(status.and_then(|s| s.init_container_statuses.as_ref()))
        && not_running(status.and_then(|s| s.container_statuses.as_ref()))
        && not_running(status.and_then(|s| s.ephemeral_container_statuses.as_ref()))
}

/// Deleted with a zero grace period: the node agent is done with it, or it
/// was force-deleted; either way it no longer holds its volumes.
fn is_shut_down(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
}

/// Whether `pod` keeps `claim` from being deleted (see the module docs).
pub fn pod_uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if !scheduled
        || pod.metadata.namespace != claim.metadata.namespace
        || is_terminated(pod)
        || is_shut_down(pod)
    {
        return false;
    }
    let claim_name = claim.name_any();
    let pod_name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|volume| {
            if let Some(source) = &volume.persistent_volume_claim {
                source.claim_name == claim_name
            } else {
                // An ephemeral volume's claim is the pod's only if the pod
                // controls it; a same-named claim of someone else is not.
                volume.ephemeral.is_some()
                    && format!("{pod_name}-{}", volume.name) == claim_name
                    && controller_uid(claim)
                        .is_some_and(|uid| Some(uid) == pod.metadata.uid.as_deref())
            }
        })
}

/// Whether any of `pods` uses `claim`.
pub fn claim_in_use<'a>(
    claim: &PersistentVolumeClaim,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> bool {
    pods.into_iter().any(|pod| pod_uses_claim(pod, claim))
}

/// `pv-protection`'s decision for a volume.
pub fn volume_action(volume: &PersistentVolume) -> FinalizerAction {
    if is_deletion_candidate(&volume.metadata, PV_PROTECTION_FINALIZER) {
        let bound = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound {
            FinalizerAction::Keep
        } else {
            FinalizerAction::Remove
        }
    } else if needs_finalizer(&volume.metadata, PV_PROTECTION_FINALIZER) {
        FinalizerAction::Add
    } else {
        FinalizerAction::Keep
    }
}

/// The object's finalizers after `action` on `finalizer`.
pub fn finalizers_after(
    meta: &ObjectMeta,
    finalizer: &str,
    action: FinalizerAction,
) -> Vec<String> {
    let mut finalizers: Vec<String> = meta.finalizers.clone().unwrap_or_default();
    match action {
        FinalizerAction::Add => finalizers.push(finalizer.to_string()),
        FinalizerAction::Remove => finalizers.retain(|f| f != finalizer),
        FinalizerAction::Keep => {}
    }
    finalizers
}

/// Builds the enabled protection controllers on `factory`'s informers; the
/// returned future runs them (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: VolumeProtectionConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let claims = config
        .pvc_protection
        .then(|| start_pvc_protection(factory, client.clone(), shutdown.clone()));
    let volumes = config
        .pv_protection
        .then(|| start_pv_protection(factory, client, shutdown));
    async move {
        let claims = async {
            if let Some(run) = claims {
                run.await;
            }
        };
        let volumes = async {
            if let Some(run) = volumes {
                run.await;
            }
        };
        tokio::join!(claims, volumes);
    }
}

struct ClaimContext {
    client: Client,
    pods: Informer<Pod>,
}

fn start_pvc_protection(
    factory: &mut InformerFactory,
    client: Client,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let claims = factory.informer::<PersistentVolumeClaim>();
    let pods = factory.informer::<Pod>();
    let claim_changes = claims.subscribe();
    let pod_changes = pods.subscribe();
    let ctx = Arc::new(ClaimContext {
        client,
        pods: pods.clone(),
    });
    async move {
        claims.wait_synced().await;
        pods.wait_synced().await;
        let deleted_claims = {
            let claims = claims.clone();
            move |pod: Arc<Pod>| {
                let namespace = pod.namespace().unwrap_or_default();
                referenced_claims(&pod)
                    .iter()
                    .filter_map(|name| claims.get(&namespace, name))
                    .filter(|c| is_deletion_candidate(&c.metadata, PVC_PROTECTION_FINALIZER))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            }
        };
        let controller = Controller::for_shared_stream(claim_changes, claims.store())
            .watches_shared_stream(pod_changes, deleted_claims);
        run_controller(
            "pvc-protection-controller",
            controller,
            ctx,
            reconcile_claim,
            shutdown,
        )
        .await;
    }
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<ClaimContext>,
) -> Result<Action, ProtectionError> {
    let namespace = claim.namespace().unwrap_or_default();
    let action = if is_deletion_candidate(&claim.metadata, PVC_PROTECTION_FINALIZER) {
        let cached = ctx.pods.list_namespace(&namespace);
        if claim_in_use(&claim, cached.iter().map(|p| &**p)) {
            FinalizerAction::Keep
        } else {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let live =
                api.list(&ListParams::default())
                    .await
                    .map_err(|source| ProtectionError {
                        action: "list pods for",
                        kind: "PersistentVolumeClaim",
                        name: claim.name_any(),
                        source,
                    })?;
            if claim_in_use(&claim, &live.items) {
                FinalizerAction::Keep
            } else {
                FinalizerAction::Remove
            }
        }
    } else if needs_finalizer(&claim.metadata, PVC_PROTECTION_FINALIZER) {
        FinalizerAction::Add
    } else {
        FinalizerAction::Keep
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    write_finalizers(
        &api,
        "PersistentVolumeClaim",
        &*claim,
        PVC_PROTECTION_FINALIZER,
        action,
    )
    .await?;
    Ok(Action::await_change())
}

fn start_pv_protection(
    factory: &mut InformerFactory,
    client: Client,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let volumes = factory.informer::<PersistentVolume>();
    let changes = volumes.subscribe();
    let ctx = Arc::new(client);
    async move {
        volumes.wait_synced().await;
        let controller = Controller::for_shared_stream(changes, volumes.store());
        run_controller(
            "pv-protection-controller",
            controller,
            ctx,
            reconcile_volume,
            shutdown,
        )
        .await;
    }
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    client: Arc<Client>,
) -> Result<Action, ProtectionError> {
    let api: Api<PersistentVolume> = Api::all((*client).clone());
    write_finalizers(
        &api,
        "PersistentVolume",
        &*volume,
        PV_PROTECTION_FINALIZER,
        volume_action(&volume),
    )
    .await?;
    Ok(Action::await_change())
}

/// Writes the object's finalizers after `action`, pinned to the
/// resourceVersion the decision was made from.
async fn write_finalizers<K>(
    api: &Api<K>,
    kind: &'static str,
    obj: &K,
    finalizer: &str,
    action: FinalizerAction,
) -> Result<(), ProtectionError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if action == FinalizerAction::Keep {
        return Ok(());
    }
    let patch = json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers_after(obj.meta(), finalizer, action),
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ProtectionError {
            action: match action {
                FinalizerAction::Add => "add protection finalizer to",
                _ => "remove protection finalizer from",
            },
            kind,
            name: obj.name_any(),
            source,
        }),
    }
}
