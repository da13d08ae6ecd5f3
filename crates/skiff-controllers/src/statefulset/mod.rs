//! StatefulSet: pods with stable names, stable storage and an order.
//!
//! As upstream's statefulset controller. Member `i` of set `web` is always
//! the pod `web-i` (ordinals from `spec.ordinals.start`), with hostname
//! `web-i` under the set's `serviceName`, and mounts its own claims
//! `{template}-web-i`, created from the volumeClaimTemplates before the pod
//! and kept when it goes ([`claims`] keeps the owner references that let the
//! garbage collector apply `persistentVolumeClaimRetentionPolicy`). A member
//! deleted by anyone, or failed, comes back under the same name on the same
//! claims.
//!
//! Each template the set has had is a ControllerRevision ([`revision`]); the
//! status names the revision pods are rolled from (`currentRevision`) and to
//! (`updateRevision`), and counts the pods at each, which is what
//! `kubectl rollout status statefulset/web` reads. Which pod to create,
//! delete or repair next is decided by the pure [`plan::plan`]: one at a time
//! in ordinal order under `OrderedReady`, all at once under `Parallel`, and a
//! rolling update from the highest ordinal down to `partition`.
//!
//! Names are stable, so creating a member twice fails rather than making a
//! second pod; still, pods created or deleted but not yet in the cache are
//! tracked by [`Expectations`] so a reconcile that runs early waits instead
//! of retrying into `AlreadyExists`.
//!
//! The reconcile: adopt orphaned revisions and find or record the update
//! revision; [`plan::plan`]; adopt and release pods; run the plan's writes
//! (in order, stopping at the first failure; a `Parallel` set's independent
//! writes in slow-start batches); write the status; delete revisions beyond
//! `revisionHistoryLimit`.

pub mod claims;
pub mod identity;
#[cfg(test)]
mod io_tests;
pub mod plan;
pub mod revision;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::informer::{Informer, InformerFactory, controller_uid};
use crate::ownership::{patch_owners, set_controller};
use crate::pods::{self, controller_reference};
use crate::runtime::api_message;
use crate::runtime::{Clock, SystemClock, run_controller};
use identity::{ordinal, parent_and_ordinal, revision_of};
use plan::{Observed, Plan, Revision, Revisions, Step};
use revision::UpdateRevision;

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "statefulset-controller";

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulSetConfig {
    /// The most writes a `Parallel` set runs at once (slow start: 1, 2, 4, …
    /// up to this).
    pub max_batch_size: usize,
}

impl Default for StatefulSetConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 500,
        }
    }
}

/// Why a reconcile failed. Every variant is retried with backoff; an
/// invalid revision keeps failing until someone fixes or deletes it.
#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    /// A write to (or read from) the API failed.
    #[error("{action} {name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// To which object.
        name: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A ControllerRevision of the set does not record a pod template.
    #[error("ControllerRevision {0} records no pod template")]
    InvalidRevision(String),
}

fn api_error(
    action: &'static str,
    name: impl Into<String>,
) -> impl FnOnce(kube::Error) -> StatefulSetError {
    let name = name.into();
    move |source| StatefulSetError::Api {
        action,
        name,
        source: Box::new(source),
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    claims: Informer<PersistentVolumeClaim>,
    revisions: Informer<ControllerRevision>,
    expectations: Expectations,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: StatefulSetConfig,
}

/// Builds the controller on `factory`'s informers (StatefulSets, Pods,
/// PersistentVolumeClaims, ControllerRevisions); the returned future runs it
/// (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: StatefulSetConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: StatefulSetConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let sets = factory.informer::<StatefulSet>();
    let pods = factory.informer::<Pod>();
    let claims = factory.informer::<PersistentVolumeClaim>();
    let revisions = factory.informer::<ControllerRevision>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        pods: pods.clone(),
        claims: claims.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
        clock,
        config,
    });
    let set_changes = sets.subscribe();
    let pod_changes = pods.subscribe();
    let orphan_changes = pods.subscribe();
    let claim_changes = claims.subscribe();
    let revision_changes = revisions.subscribe();
    async move {
        sets.wait_synced().await;
        pods.wait_synced().await;
        claims.wait_synced().await;
        revisions.wait_synced().await;
        let store = sets.store();
        let (for_orphans, for_claims) = (store.clone(), store.clone());
        let controller = Controller::for_shared_stream(set_changes, store)
            .owns_shared_stream(pod_changes)
            .owns_shared_stream(revision_changes)
            .watches_shared_stream(orphan_changes, move |pod| adopter(&for_orphans, &pod))
            .watches_shared_stream(claim_changes, move |claim| claim_sets(&for_claims, &claim));
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

/// The set that may adopt an orphan pod: the one its name and labels match.
fn adopter(sets: &Store<StatefulSet>, pod: &Pod) -> Option<ObjectRef<StatefulSet>> {
    if controller_uid(pod).is_some() {
        return None;
    }
    let (parent, _) = parent_and_ordinal(pod.metadata.name.as_deref()?)?;
    let set = sets.get(&ObjectRef::new(parent).within(pod.metadata.namespace.as_deref()?))?;
    let selector = pods::selector(Some(&set.spec.selector));
    pods::selects(&selector, pod.metadata.labels.as_ref()).then(|| ObjectRef::from_obj(&*set))
}

/// The sets whose selector matches a claim's labels (claims carry the
/// selector's labels), so a claim's deletion or update wakes its set.
fn claim_sets(
    sets: &Store<StatefulSet>,
    claim: &PersistentVolumeClaim,
) -> Vec<ObjectRef<StatefulSet>> {
    sets.state()
        .iter()
        .filter(|set| set.metadata.namespace == claim.metadata.namespace)
        .filter(|set| {
            let selector = pods::selector(Some(&set.spec.selector));
            !selector.is_everything() && pods::selects(&selector, claim.metadata.labels.as_ref())
        })
        .map(|set| ObjectRef::from_obj(&**set))
        .collect()
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, StatefulSetError> {
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();

    let mut history = owned_revisions(&set, &ctx).await?;
    revision::sort(&mut history);
    let mut collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let update = update_revision(&set, &ctx, &mut history, &mut collision_count).await?;
    let current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .and_then(|name| {
            history
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
        })
        .map_or_else(|| Arc::clone(&update), Arc::clone);
    let revisions = Revisions {
        current: recorded(&current)?,
        update: recorded(&update)?,
        collision_count,
    };

    let mut candidates = ctx.pods.controlled_by(&uid);
    candidates.extend(
        ctx.pods
            .list_namespace(&namespace)
            .into_iter()
            .filter(|p| controller_uid(&**p).is_none()),
    );
    let in_flight = ctx.expectations.settle(&uid, |name| {
        ctx.pods
            .get(&namespace, name)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    });
    let claims: BTreeMap<String, Arc<PersistentVolumeClaim>> = ctx
        .claims
        .list_namespace(&namespace)
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    let plan = plan::plan(
        &set,
        &revisions,
        &Observed {
            candidates: &candidates,
            claims: &claims,
            in_flight: &in_flight,
            now: ctx.clock.now(),
        },
    );

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for (pods, owner) in [(&plan.adopt, Some(&*set)), (&plan.release, None)] {
        for pod in pods {
            let action = if owner.is_some() {
                "adopt pod"
            } else {
                "release pod"
            };
            set_controller(&api, &**pod, owner)
                .await
                .map_err(api_error(action, pod.name_any()))?;
        }
    }
    let outcome = execute(&set, &ctx, &plan).await;
    if plan::status_changed(set.status.as_ref(), &plan.status) {
        write_status(&ctx.client, &set, &plan.status).await?;
    }
    let mut live: BTreeSet<&str> = candidates.iter().map(|p| revision_of(p)).collect();
    live.insert(&revisions.current.name);
    live.insert(&revisions.update.name);
    let revision_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    for doomed in revision::excess_history(&set, &history, &live) {
        let name = doomed.name_any();
        match revision_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_status(&error, 404) => {}
            Err(error) => return Err(api_error("delete ControllerRevision", name)(error)),
        }
    }
    outcome?;
    Ok(plan
        .recheck_after
        .map_or_else(Action::await_change, Action::requeue))
}

fn recorded(revision: &ControllerRevision) -> Result<Revision, StatefulSetError> {
    let name = revision.name_any();
    let template = revision::template_of(revision)
        .ok_or_else(|| StatefulSetError::InvalidRevision(name.clone()))?;
    Ok(Revision { name, template })
}

/// The set's revisions: those its selector matches that it controls, or
/// that nobody controls (which it adopts, unless it is being deleted).
async fn owned_revisions(
    set: &StatefulSet,
    ctx: &Context,
) -> Result<Vec<Arc<ControllerRevision>>, StatefulSetError> {
    let uid = set.uid().unwrap_or_default();
    let selector = pods::selector(Some(&set.spec.selector));
    let deleting = set.metadata.deletion_timestamp.is_some();
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let mut owned = Vec::new();
    for revision in ctx
        .revisions
        .list_namespace(&set.namespace().unwrap_or_default())
    {
        if !pods::selects(&selector, revision.metadata.labels.as_ref()) {
            continue;
        }
        match controller_uid(&*revision) {
            Some(owner) if owner == uid => owned.push(revision),
            Some(_) => {}
            None if deleting => owned.push(revision),
            None => {
                let mut owners = revision.owner_references().to_vec();
                owners.push(controller_reference(set));
                let adopted = patch_owners(&api, &*revision, &owners)
                    .await
                    .map_err(api_error("adopt ControllerRevision", revision.name_any()))?;
                owned.push(Arc::new(adopted));
            }
        }
    }
    Ok(owned)
}

/// Finds, renumbers or creates the revision recording the set's template;
/// keeps `history` sorted and in step.
async fn update_revision(
    set: &StatefulSet,
    ctx: &Context,
    history: &mut Vec<Arc<ControllerRevision>>,
    collision_count: &mut i32,
) -> Result<Arc<ControllerRevision>, StatefulSetError> {
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let update = match revision::resolve_update(set, history, *collision_count) {
        UpdateRevision::Latest(index) => return Ok(Arc::clone(&history[index])),
        UpdateRevision::Renumber(index, number) => {
            let name = history[index].name_any();
            let renumbered = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"revision": number})),
                )
                .await
                .map_err(api_error("renumber ControllerRevision", &name))?;
            let renumbered = Arc::new(renumbered);
            history[index] = Arc::clone(&renumbered);
            renumbered
        }
        UpdateRevision::Create(mut wanted) => loop {
            let name = wanted.name_any();
            match api.create(&PostParams::default(), &wanted).await {
                Ok(created) => break Arc::new(created),
                Err(error) if is_status(&error, 409) => {
                    let existing = api
                        .get(&name)
                        .await
                        .map_err(api_error("get ControllerRevision", &name))?;
                    if revision::same_template(&existing, &wanted) {
                        break Arc::new(existing);
                    }
                    *collision_count += 1;
                    let number = wanted.revision.unwrap_or(1);
                    *wanted = revision::new_revision(set, number, *collision_count);
                }
                Err(error) => return Err(api_error("create ControllerRevision", name)(error)),
            }
        },
    };
    if !history
        .iter()
        .any(|r| r.metadata.name == update.metadata.name)
    {
        history.push(Arc::clone(&update));
    }
    revision::sort(history);
    Ok(update)
}

/// Runs the plan's writes: each phase in turn; in a `Parallel` set, a
/// phase's writes in slow-start batches. The first failure ends the run.
async fn execute(set: &StatefulSet, ctx: &Context, plan: &Plan) -> Result<(), StatefulSetError> {
    for phase in &plan.phases {
        if !plan.parallel {
            for step in phase {
                run_step(set, ctx, step).await?;
            }
            continue;
        }
        let mut rest = phase.as_slice();
        let mut batch = 1;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            let results =
                futures::future::join_all(now.iter().map(|step| run_step(set, ctx, step))).await;
            if let Some(error) = results.into_iter().find_map(Result::err) {
                return Err(error);
            }
            rest = later;
            batch = (batch * 2).min(ctx.config.max_batch_size.max(1));
        }
    }
    Ok(())
}

/// Events name the set, as upstream's do.
fn event(set: &StatefulSet, ctx: &Context, failure: Option<&str>, reason: &str, message: String) {
    let (event_type, message) = match failure {
        None => (EventType::Normal, message),
        Some(error) => (
            EventType::Warning,
            format!("{message} failed error: {error}"),
        ),
    };
    ctx.recorder
        .record(&set.object_ref(&()), event_type, reason, &message);
}

fn pod_event(set: &StatefulSet, ctx: &Context, verb: &str, pod: &str, failure: Option<&str>) {
    let reason = match (verb, failure.is_some()) {
        ("create", false) => "SuccessfulCreate",
        ("create", true) => "FailedCreate",
        ("delete", false) => "SuccessfulDelete",
        ("delete", true) => "FailedDelete",
        (_, false) => "SuccessfulUpdate",
        (_, true) => "FailedUpdate",
    };
    let base = format!("{verb} Pod {pod} in StatefulSet {}", set.name_any());
    let message = if failure.is_some() {
        base
    } else {
        format!("{base} successful")
    };
    event(set, ctx, failure, reason, message);
}

async fn run_step(set: &StatefulSet, ctx: &Context, step: &Step) -> Result<(), StatefulSetError> {
    match step {
        Step::CreatePod { pod, claims } => create_pod(set, ctx, pod, claims).await,
        Step::CreateClaims { pod, claims } => create_claims(set, ctx, &pod.name_any(), claims)
            .await
            .map(drop),
        Step::DeletePod { pod, .. } => delete_pod(set, ctx, pod).await,
        Step::RestoreIdentity { pod, labels } => restore_identity(set, ctx, pod, labels).await,
        Step::SetClaimOwners { claim, owners } => {
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
            match patch_owners(&api, &**claim, owners).await {
                Ok(_) => Ok(()),
                Err(error) if is_status(&error, 404) => Ok(()),
                Err(error) => Err(api_error("set owners of claim", claim.name_any())(error)),
            }
        }
    }
}

/// Creates a member's missing claims; returns those created.
async fn create_claims(
    set: &StatefulSet,
    ctx: &Context,
    pod: &str,
    claims: &[PersistentVolumeClaim],
) -> Result<Vec<PersistentVolumeClaim>, StatefulSetError> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let mut created = Vec::new();
    for claim in claims {
        let name = claim.name_any();
        let base = format!("create Claim {name}");
        match api.create(&PostParams::default(), claim).await {
            Ok(claim) => {
                let message = format!("{base} Pod {pod} in StatefulSet {} success", set.name_any());
                event(set, ctx, None, "SuccessfulCreate", message);
                created.push(claim);
            }
            // Made by an earlier reconcile the cache has not caught up with.
            Err(error) if is_status(&error, 409) => {}
            Err(error) => {
                let message = format!("{base} for Pod {pod} in StatefulSet {}", set.name_any());
                event(
                    set,
                    ctx,
                    Some(&api_message(&error)),
                    "FailedCreate",
                    message,
                );
                return Err(api_error("create claim", name)(error));
            }
        }
    }
    Ok(created)
}

/// Creates a member's claims, the member, then sets its claims' owners.
async fn create_pod(
    set: &StatefulSet,
    ctx: &Context,
    pod: &Pod,
    claims: &[PersistentVolumeClaim],
) -> Result<(), StatefulSetError> {
    let name = pod.name_any();
    let created_claims = match create_claims(set, ctx, &name, claims).await {
        Ok(created) => created,
        Err(error) => {
            let failure = match &error {
                StatefulSetError::Api { name, source, .. } => {
                    format!("failed to create PVC {name}: {}", api_message(source))
                }
                other => other.to_string(),
            };
            pod_event(set, ctx, "create", &name, Some(&failure));
            return Err(error);
        }
    };
    let uid = set.uid().unwrap_or_default();
    let namespace = set.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.expectations.expect_create(&uid, &name);
    let created = match api.create(&PostParams::default(), pod).await {
        Ok(created) => created,
        Err(error) => {
            ctx.expectations.write_failed(&uid, &name);
            if !is_status(&error, 409) {
                pod_event(set, ctx, "create", &name, Some(&api_message(&error)));
            }
            return Err(api_error("create pod", name)(error));
        }
    };
    pod_event(set, ctx, "create", &name, None);
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for claim_name in claims::claim_names(set, ordinal(pod).unwrap_or(0)) {
        let claim = created_claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(claim_name.as_str()))
            .cloned()
            .or_else(|| {
                ctx.claims
                    .get(&namespace, &claim_name)
                    .map(|c| (*c).clone())
            });
        let Some(claim) = claim else {
            continue;
        };
        let Some(owners) = claims::owner_update(&claim, set, &created, false) else {
            continue;
        };
        if let Err(error) = patch_owners(&claim_api, &claim, &owners).await {
            pod_event(set, ctx, "update", &name, Some(&api_message(&error)));
            return Err(api_error("set owners of claim", claim_name)(error));
        }
    }
    Ok(())
}

async fn delete_pod(set: &StatefulSet, ctx: &Context, pod: &Pod) -> Result<(), StatefulSetError> {
    let uid = set.uid().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    ctx.expectations.expect_delete(&uid, &name);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            pod_event(set, ctx, "delete", &name, None);
            Ok(())
        }
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => {
            ctx.expectations.write_failed(&uid, &name);
            pod_event(set, ctx, "delete", &name, Some(&api_message(&error)));
            Err(api_error("delete pod", name)(error))
        }
    }
}

async fn restore_identity(
    set: &StatefulSet,
    ctx: &Context,
    pod: &Pod,
    labels: &BTreeMap<String, String>,
) -> Result<(), StatefulSetError> {
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let patch = json!({"metadata": {
        "labels": labels,
        "resourceVersion": pod.resource_version(),
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            pod_event(set, ctx, "update", &name, None);
            Ok(())
        }
        Err(error) => {
            pod_event(set, ctx, "update", &name, Some(&api_message(&error)));
            Err(api_error("update pod", name)(error))
        }
    }
}

async fn write_status(
    client: &Client,
    set: &StatefulSet,
    status: &StatefulSetStatus,
) -> Result<(), StatefulSetError> {
    let api: Api<StatefulSet> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    match api
        .patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => Err(api_error("update status of StatefulSet", set.name_any())(
            error,
        )),
    }
}
