//! Deployment: rolls a pod template out through ReplicaSets.
//!
//! As upstream's deployment controller, each distinct template a deployment
//! has run gets one ReplicaSet, named `<deployment>-<pod-template-hash>` and
//! selecting only its own pods through the `pod-template-hash` label. The
//! ReplicaSet running the current template is the *new* one; all others are
//! *old*. A rollout moves pods from old to new: RollingUpdate grows the new
//! ReplicaSet within `maxSurge` pods above the deployment's size and shrinks
//! old ones while at most `maxUnavailable` pods are unavailable; Recreate
//! scales old ReplicaSets to zero and waits until their pods are gone before
//! starting new ones. Pods themselves are the ReplicaSet controller's work
//! ([`crate::replicaset`]); this controller only sizes ReplicaSets.
//!
//! What kubectl reads comes from here, in upstream's words:
//!
//! - `kubectl rollout status` waits on `status.observedGeneration`, the
//!   replica counts and the `Progressing` condition ([`progress`]);
//! - `kubectl rollout history` lists the ReplicaSets' revision annotations
//!   and the `kubernetes.io/change-cause` copied onto them ([`revision`]);
//! - `kubectl rollout undo` copies an old ReplicaSet's template back into
//!   the deployment; the controller then recognises that ReplicaSet as the
//!   new one (templates are compared without the hash label) and gives it
//!   the next revision;
//! - `kubectl rollout restart` changes a template annotation, so a new
//!   ReplicaSet rolls out; `kubectl rollout pause` stops rollouts but not
//!   scaling.
//!
//! [`plan::plan`] makes every decision without IO; [`start`] wires the
//! informers, performs the writes and records the `ScalingReplicaSet`
//! events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::informer::{Informer, InformerFactory, controller_uid};
use crate::ownership::set_controller;
use crate::pods;
use crate::runtime::api_message;
use crate::runtime::{Clock, SystemClock, run_controller};

pub mod hash;
pub mod plan;
pub mod progress;
pub mod replicas;
pub mod revision;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use hash::equal_ignore_hash;
use plan::{Input, Plan, claim};
use replicas::{Params, SpecError};

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "deployment-controller";

/// The label (and ReplicaSet name suffix) that tells templates apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The rollout a ReplicaSet serves, also set on the deployment.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that became current again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The deployment's size when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The deployment's size plus surge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// Event reason for every ReplicaSet resize.
const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// How soon to look again after the cache turned out stale (a write was
/// refused as a conflict, or the new ReplicaSet already exists).
const STALE_RETRY: Duration = Duration::from_secs(1);

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentConfig {
    /// The longest `deployment.kubernetes.io/revision-history` value; the
    /// oldest entries are dropped beyond it.
    pub revision_history_max_chars: usize,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        Self {
            revision_history_max_chars: 2000,
        }
    }
}

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The spec cannot be acted on (validation should have refused it).
    #[error("deployment {name}: {source}")]
    Spec {
        /// The deployment.
        name: String,
        /// What is wrong.
        #[source]
        source: SpecError,
    },
    /// A write to the API failed.
    #[error("{action} {name}: {source}")]
    Api {
        /// What was being written.
        action: &'static str,
        /// The object.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl ReconcileError {
    fn api(action: &'static str, name: &str, source: kube::Error) -> Self {
        Self::Api {
            action,
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}

/// The message of `ScalingReplicaSet` events, upstream's wording.
pub fn scaling_message(rs: &str, from: i32, to: i32) -> String {
    let direction = if to > from { "up" } else { "down" };
    format!("Scaled {direction} replica set {rs} from {from} to {to}")
}

struct Context {
    client: Client,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: DeploymentConfig,
}

/// Builds the controller on `factory`'s informers; the returned future runs
/// it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: DeploymentConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: DeploymentConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let deployments = factory.informer::<Deployment>();
    let replicasets = factory.informer::<ReplicaSet>();
    let pods = factory.informer::<Pod>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        replicasets: replicasets.clone(),
        pods: pods.clone(),
        clock,
        config,
    });
    let deployment_changes = deployments.subscribe();
    let rs_changes = replicasets.subscribe();
    let pod_changes = pods.subscribe();
    async move {
        deployments.wait_synced().await;
        replicasets.wait_synced().await;
        pods.wait_synced().await;
        let rs_owners = {
            let deployments = deployments.clone();
            move |rs: Arc<ReplicaSet>| deployments_of_replica_set(&deployments, &rs)
        };
        let pod_owners = {
            let replicasets = replicasets.clone();
            move |pod: Arc<Pod>| deployment_of_pod(&replicasets, &pod)
        };
        let controller = Controller::for_shared_stream(deployment_changes, deployments.store())
            .watches_shared_stream(rs_changes, rs_owners)
            .watches_shared_stream(pod_changes, pod_owners);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

/// The controller reference of `obj` if it names a `kind` of `apps/v1`.
fn apps_controller<'a, K: Resource>(obj: &'a K, kind: &str) -> Option<&'a OwnerReference> {
    obj.meta()
        .owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind && o.api_version == "apps/v1")
}

/// The deployments a ReplicaSet change concerns: its controller, or for an
/// orphan every deployment of its namespace that could adopt it.
fn deployments_of_replica_set(
    deployments: &Informer<Deployment>,
    rs: &ReplicaSet,
) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.namespace().unwrap_or_default();
    if let Some(owner) = apps_controller(rs, "Deployment") {
        return vec![ObjectRef::new(&owner.name).within(&namespace)];
    }
    if controller_uid(rs).is_some() {
        return Vec::new();
    }
    deployments
        .list_namespace(&namespace)
        .iter()
        .filter(|d| !plan::selects_everything(d))
        .filter(|d| {
            pods::selects(
                &pods::selector(Some(&d.spec.selector)),
                rs.metadata.labels.as_ref(),
            )
        })
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// The deployment whose ReplicaSet controls the pod.
fn deployment_of_pod(
    replicasets: &Informer<ReplicaSet>,
    pod: &Pod,
) -> Option<ObjectRef<Deployment>> {
    let namespace = pod.namespace().unwrap_or_default();
    let rs = replicasets.get(&namespace, &apps_controller(pod, "ReplicaSet")?.name)?;
    let owner = apps_controller(&*rs, "Deployment")?;
    Some(ObjectRef::new(&owner.name).within(&namespace))
}

/// Reconciles one deployment. A write refused as a conflict means the
/// caches were behind; the watch brings the newer objects shortly.
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    match sync(&d, &ctx).await {
        Err(ReconcileError::Api { source, .. }) if is_conflict(&source) => {
            tracing::debug!(deployment = %d.name_any(), "stale cache; retrying after the watch catches up");
            Ok(Action::requeue(STALE_RETRY))
        }
        other => other,
    }
}

async fn sync(d: &Deployment, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = d.name_any();
    let namespace = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let mut candidates = ctx.replicasets.controlled_by(&uid);
    candidates.extend(
        ctx.replicasets
            .list_namespace(&namespace)
            .into_iter()
            .filter(|rs| controller_uid(&**rs).is_none()),
    );
    let claim = claim(d, &candidates);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    for (replica_sets, owner) in [(&claim.adopt, Some(d)), (&claim.release, None)] {
        for rs in replica_sets {
            let action = if owner.is_some() {
                "adopt replica set"
            } else {
                "release replica set"
            };
            set_controller(&rs_api, &**rs, owner)
                .await
                .map_err(|e| ReconcileError::api(action, &rs.name_any(), e))?;
        }
    }
    let pods: HashMap<String, Vec<Arc<Pod>>> = claim
        .owned
        .iter()
        .filter_map(|rs| rs.uid())
        .map(|rs_uid| {
            let owned = ctx.pods.controlled_by(&rs_uid);
            (rs_uid, owned)
        })
        .collect();
    let input = Input {
        deployment: d,
        replica_sets: &claim.owned,
        pods: &pods,
        now: ctx.clock.now(),
        config: &ctx.config,
    };
    let plan = plan::plan(&input).map_err(|source| ReconcileError::Spec { name, source })?;
    apply(d, ctx, &rs_api, &claim.owned, plan).await
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Performs the plan's writes in order and records their events; `owned`
/// are the ReplicaSets as the plan saw them.
async fn apply(
    d: &Deployment,
    ctx: &Context,
    rs_api: &Api<ReplicaSet>,
    owned: &[Arc<ReplicaSet>],
    plan: Plan,
) -> Result<Action, ReconcileError> {
    let namespace = d.namespace().unwrap_or_default();
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let reference = d.object_ref(&());
    if plan.selecting_all {
        ctx.recorder.record(
            &reference,
            EventType::Warning,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
        );
    }
    if let Some(rs) = &plan.create
        && let Some(action) = create_replica_set(d, ctx, rs_api, &d_api, rs).await?
    {
        return Ok(action);
    }
    for rs in &plan.update {
        let before = owned
            .iter()
            .find(|cached| cached.metadata.name == rs.metadata.name)
            .and_then(|cached| cached.spec.replicas);
        update_replica_set(ctx, rs_api, d, rs, before).await?;
    }
    let mut resource_version = d.resource_version();
    if let Some(revision) = &plan.revision {
        let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision}}});
        let updated = d_api
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| ReconcileError::api("set revision of deployment", &d.name_any(), e))?;
        resource_version = updated.resource_version();
    }
    for rs in &plan.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match rs_api.delete(&rs.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => {
                return Err(ReconcileError::api(
                    "delete old replica set",
                    &rs.name_any(),
                    e,
                ));
            }
        }
    }
    if !progress::same_status(d.status.as_ref(), &plan.status) {
        write_status(&d_api, d, resource_version, &plan.status).await?;
    }
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Creates the new ReplicaSet. `Some(action)` ends the reconcile early: the
/// name is taken, either by this very ReplicaSet (the cache is behind) or by
/// another template (a hash collision, resolved by bumping
/// `status.collisionCount` so the next hash differs).
async fn create_replica_set(
    d: &Deployment,
    ctx: &Context,
    rs_api: &Api<ReplicaSet>,
    d_api: &Api<Deployment>,
    rs: &ReplicaSet,
) -> Result<Option<Action>, ReconcileError> {
    let name = rs.name_any();
    let reference = d.object_ref(&());
    match rs_api.create(&PostParams::default(), rs).await {
        Ok(_) => {
            let replicas = rs.spec.replicas.unwrap_or(0);
            if replicas > 0 {
                ctx.recorder.record(
                    &reference,
                    EventType::Normal,
                    SCALING_REPLICA_SET,
                    &scaling_message(&name, 0, replicas),
                );
            }
            Ok(None)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = rs_api
                .get(&name)
                .await
                .map_err(|e| ReconcileError::api("get replica set", &name, e))?;
            let ours = controller_uid(&existing) == d.uid().as_deref();
            let same = match (&existing.spec.template, &rs.spec.template) {
                (Some(a), Some(b)) => equal_ignore_hash(a, b),
                _ => false,
            };
            if !(ours && same) {
                let count = d
                    .status
                    .as_ref()
                    .and_then(|s| s.collision_count)
                    .unwrap_or(0);
                tracing::info!(deployment = %d.name_any(), replica_set = %name, collision_count = count + 1, "pod template hash collision");
                let patch = json!({
                    "metadata": {"resourceVersion": d.resource_version()},
                    "status": {"collisionCount": count + 1},
                });
                d_api
                    .patch_status(
                        &d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|e| {
                        ReconcileError::api("bump collision count of", &d.name_any(), e)
                    })?;
            }
            Ok(Some(Action::requeue(STALE_RETRY)))
        }
        Err(error) => {
            let message = api_message(&error);
            ctx.recorder.record(
                &reference,
                EventType::Warning,
                progress::FAILED_RS_CREATE,
                &format!("Failed to create new replica set {name:?}: {message}"),
            );
            if let Ok(params) = Params::of(d) {
                let mut status = d.status.clone().unwrap_or_default();
                progress::create_failed(&mut status, &params, &name, &message, ctx.clock.now());
                // Best effort: the create error is what gets retried.
                if let Err(status_error) =
                    write_status(d_api, d, d.resource_version(), &status).await
                {
                    tracing::debug!(error = %status_error, "recording the create failure");
                }
            }
            Err(ReconcileError::api("create replica set", &name, error))
        }
    }
}

/// Writes a ReplicaSet's new size, annotations and minReadySeconds, pinned
/// to the cached resourceVersion, and records a resize from `before`.
async fn update_replica_set(
    ctx: &Context,
    rs_api: &Api<ReplicaSet>,
    d: &Deployment,
    rs: &ReplicaSet,
    before: Option<i32>,
) -> Result<(), ReconcileError> {
    let name = rs.name_any();
    let patch = json!({
        "metadata": {
            "resourceVersion": rs.resource_version(),
            "annotations": rs.metadata.annotations,
        },
        "spec": {
            "replicas": rs.spec.replicas,
            "minReadySeconds": rs.spec.min_ready_seconds,
        },
    });
    rs_api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ReconcileError::api("update replica set", &name, e))?;
    if let (Some(from), Some(to)) = (before, rs.spec.replicas)
        && from != to
    {
        ctx.recorder.record(
            &d.object_ref(&()),
            EventType::Normal,
            SCALING_REPLICA_SET,
            &scaling_message(&name, from, to),
        );
    }
    Ok(())
}

async fn write_status(
    api: &Api<Deployment>,
    d: &Deployment,
    resource_version: Option<String>,
    status: &DeploymentStatus,
) -> Result<(), ReconcileError> {
    let patch = json!({
        "metadata": {"resourceVersion": resource_version},
        "status": status,
    });
    match api
        .patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ReconcileError::api(
            "update status of deployment",
            &d.name_any(),
            e,
        )),
    }
}
