//! DaemonSet: one pod on every eligible node.
//!
//! As upstream's daemon controller. Which nodes are eligible is decided in
//! [`nodes`] (selector, required node affinity, taints against the pod's
//! tolerations plus the daemon tolerations every daemon pod gets); what to
//! create and delete, and the status, in [`plan`]; the template's revisions
//! in [`history`]. This module does the IO: it claims pods and
//! ControllerRevisions (adopting matching orphans, releasing owned objects
//! that stopped matching), keeps the current revision, creates pods in
//! slow-start batches, deletes pods, prunes old revisions and writes the
//! status `kubectl rollout status` reads.
//!
//! Daemon pods are not bound by the controller: each is created with a
//! required node affinity `metadata.name In [node]` and the scheduler binds
//! it, as upstream does since 1.12, so resources and ports are accounted
//! for in one place.
//!
//! A change to any Node (its labels, taints, cordoning or conditions; the
//! heartbeat alone does not count) reconciles every DaemonSet, since any of
//! them may now want, or no longer want, a pod there.

pub mod history;
pub mod nodes;
pub mod plan;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, Taint};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_api::selector::LabelSelector;
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use self::history::{REVISION_HASH_LABEL, TEMPLATE_GENERATION_LABEL};
use self::plan::{Counts, FailedPodBackoff, Observed};
use crate::expectations::Expectations;
use crate::informer::{Informed, Informer, InformerFactory, controller_uid};
use crate::ownership::set_controller;
use crate::pods::{self, controller_reference, generate_name};
use crate::runtime::{Clock, SystemClock, run_controller};

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "daemonset-controller";

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSetConfig {
    /// The most pods created, or deleted, in one reconcile.
    pub burst_replicas: usize,
    /// The wait before deleting a second failed pod on the same node.
    pub failed_pod_backoff: Duration,
    /// The longest wait between failed-pod deletions on one node.
    pub failed_pod_backoff_max: Duration,
}

impl Default for DaemonSetConfig {
    fn default() -> Self {
        Self {
            burst_replicas: 250,
            failed_pod_backoff: Duration::from_secs(1),
            failed_pod_backoff_max: Duration::from_secs(15 * 60),
        }
    }
}

/// Why a reconcile failed; every variant is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A write to the API failed.
    #[error("{action} {name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The object it was done to.
        name: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// The revision name of the current template is taken by another
    /// template; the collision count was raised so the next try hashes anew.
    #[error(
        "ControllerRevision {revision} holds another template; collisionCount of DaemonSet {daemonset} raised to {count}"
    )]
    HashCollision {
        /// The taken name.
        revision: String,
        /// The DaemonSet.
        daemonset: String,
        /// The new collision count.
        count: i32,
    },
    /// The cached collision count is behind the API's; the cache will catch up.
    #[error("collisionCount of DaemonSet {daemonset} changed since it was cached")]
    StaleCollisionCount {
        /// The DaemonSet.
        daemonset: String,
    },
}

fn api_error(
    action: &'static str,
    name: impl Into<String>,
) -> impl FnOnce(kube::Error) -> ReconcileError {
    let name = name.into();
    move |source| ReconcileError::Api {
        action,
        name,
        source,
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    expectations: Expectations,
    backoff: Mutex<FailedPodBackoff>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: DaemonSetConfig,
}

/// Builds the controller on `factory`'s informers (DaemonSets, Pods, Nodes,
/// ControllerRevisions); the returned future runs it, after the caches
/// sync, until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: DaemonSetConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: DaemonSetConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let daemonsets = factory.informer::<DaemonSet>();
    let pods = factory.informer::<Pod>();
    let nodes = factory.informer::<Node>();
    let revisions = factory.informer::<ControllerRevision>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        pods: pods.clone(),
        nodes: nodes.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
        backoff: Mutex::new(FailedPodBackoff::new(
            config.failed_pod_backoff,
            config.failed_pod_backoff_max,
        )),
        clock,
        config,
    });
    let ds_changes = daemonsets.subscribe();
    let pod_changes = pods.subscribe();
    let orphan_changes = pods.subscribe();
    let revision_changes = revisions.subscribe();
    let node_changes = nodes.subscribe();
    async move {
        daemonsets.wait_synced().await;
        pods.wait_synced().await;
        nodes.wait_synced().await;
        revisions.wait_synced().await;
        let ds_changes = {
            let (daemonsets, ctx) = (daemonsets.clone(), Arc::clone(&ctx));
            ds_changes.inspect(move |ds| forget_if_gone(&daemonsets, &ctx, ds))
        };
        let orphan_owners = {
            let daemonsets = daemonsets.clone();
            move |pod: Arc<Pod>| orphan_owners(&daemonsets, &pod)
        };
        let controller = Controller::for_shared_stream(ds_changes, daemonsets.store())
            .owns_shared_stream(pod_changes)
            .owns_shared_stream(revision_changes)
            .watches_shared_stream(orphan_changes, orphan_owners)
            .reconcile_all_on(node_triggers(node_changes, nodes));
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

/// Drops the in-flight writes and failed-pod backoff of a DaemonSet that is
/// gone from the cache.
fn forget_if_gone(daemonsets: &Informer<DaemonSet>, ctx: &Context, ds: &DaemonSet) {
    let Some(uid) = ds.uid() else { return };
    let cached = daemonsets.get(&ds.namespace().unwrap_or_default(), &ds.name_any());
    if cached.is_none_or(|c| c.uid().as_deref() != Some(uid.as_str())) {
        ctx.expectations.forget(&uid);
        ctx.backoff
            .lock()
            .expect("backoff poisoned")
            .gc(ctx.clock.now(), Some(&format!("{uid}/")));
    }
}

/// The DaemonSets whose selector matches an orphan pod, so they adopt it.
fn orphan_owners(daemonsets: &Informer<DaemonSet>, pod: &Pod) -> Vec<ObjectRef<DaemonSet>> {
    if controller_uid(pod).is_some() || pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    daemonsets
        .list_namespace(&pod.namespace().unwrap_or_default())
        .iter()
        .filter(|ds| {
            pods::selects(
                &pods::selector(Some(&ds.spec.selector)),
                pod.metadata.labels.as_ref(),
            )
        })
        .map(|ds| ObjectRef::from_obj(&**ds))
        .collect()
}

/// What about a node can change where daemon pods belong.
#[derive(Debug, Clone, PartialEq)]
struct NodeShape {
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    unschedulable: bool,
    true_conditions: Vec<String>,
}

impl NodeShape {
    fn of(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let mut true_conditions: Vec<String> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.status == "True")
            .map(|c| c.type_.clone())
            .collect();
        true_conditions.sort();
        Self {
            labels: node.labels().clone(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            true_conditions,
        }
    }
}

/// One trigger per node added, deleted or changed in a way that matters.
fn node_triggers(
    changes: impl Stream<Item = Arc<Node>> + Send + 'static,
    nodes: Informer<Node>,
) -> impl Stream<Item = ()> + Send + 'static {
    changes
        .scan(HashMap::<String, NodeShape>::new(), move |seen, node| {
            let name = node.name_any();
            let changed = if nodes.get("", &name).is_none() {
                seen.remove(&name);
                true
            } else {
                let shape = NodeShape::of(&node);
                seen.insert(name, shape.clone()).as_ref() != Some(&shape)
            };
            future::ready(Some(changed))
        })
        .filter_map(|changed| future::ready(changed.then_some(())))
}

/// The pod `ds` runs on `node`: the template with the daemon tolerations,
/// the revision labels, and a required affinity to `node` alone.
pub fn new_pod(ds: &DaemonSet, hash: &str, node: &str, name: String) -> Pod {
    let mut template: PodTemplateSpec = ds.spec.template.clone();
    let labels = template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    if let Some(generation) = history::template_generation(ds) {
        labels.insert(
            TEMPLATE_GENERATION_LABEL.to_string(),
            generation.to_string(),
        );
    }
    if !hash.is_empty() {
        labels.insert(REVISION_HASH_LABEL.to_string(), hash.to_string());
    }
    let spec = template.spec.get_or_insert_default();
    nodes::add_daemon_tolerations(spec);
    nodes::bind_to_node(spec, node);
    let prefix = format!("{}-", ds.name_any());
    pods::pod_from_template(
        &template,
        &ds.namespace().unwrap_or_default(),
        name,
        &prefix,
        controller_reference(ds),
    )
}

/// The status fields upstream writes, if they differ from what `ds` shows
/// (or `observedGeneration` must catch up).
fn status_patch(ds: &DaemonSet, counts: &Counts, synced: bool) -> Option<serde_json::Value> {
    let status = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation.unwrap_or(0);
    let shown = Counts {
        desired: status.desired_number_scheduled,
        current: status.current_number_scheduled,
        misscheduled: status.number_misscheduled,
        ready: status.number_ready,
        updated: status.updated_number_scheduled.unwrap_or(0),
        available: status.number_available.unwrap_or(0),
        unavailable: status.number_unavailable.unwrap_or(0),
    };
    let observed = status.observed_generation.unwrap_or(0);
    if shown == *counts && (observed >= generation || !synced) {
        return None;
    }
    let mut patch = json!({"status": {
        "desiredNumberScheduled": counts.desired,
        "currentNumberScheduled": counts.current,
        "numberMisscheduled": counts.misscheduled,
        "numberReady": counts.ready,
        "updatedNumberScheduled": counts.updated,
        "numberAvailable": counts.available,
        "numberUnavailable": counts.unavailable,
    }});
    if synced {
        patch["status"]["observedGeneration"] = json!(generation);
    }
    Some(patch)
}

fn selects_everything(ds: &DaemonSet) -> bool {
    let selector = &ds.spec.selector;
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    // A DaemonSet being deleted may already have lost its revisions, so its
    // status cannot be trusted; the garbage collector removes its pods.
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if selects_everything(&ds) {
        ctx.recorder.record(
            &ds.object_ref(&()),
            EventType::Warning,
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.",
        );
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let selector = pods::selector(Some(&ds.spec.selector));

    let revisions = claim(
        &ctx.client,
        &ds,
        &selector,
        ctx.revisions.controlled_by(&uid),
        ctx.revisions.list_namespace(&namespace),
    )
    .await?;
    let (hash, old_revisions) = construct_history(&ds, &ctx, revisions).await?;
    let claimed = claim(
        &ctx.client,
        &ds,
        &selector,
        ctx.pods.controlled_by(&uid),
        ctx.pods.list_namespace(&namespace),
    )
    .await?;

    let in_flight = ctx.expectations.settle(&uid, |name| {
        ctx.pods
            .get(&namespace, name)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    });
    let nodes = ctx.nodes.list();
    let now = ctx.clock.now();
    let observed = Observed {
        ds: &ds,
        nodes: &nodes,
        pods: &claimed,
        hash: &hash,
        in_flight: &in_flight,
        now,
    };
    let plan = {
        let mut backoff = ctx.backoff.lock().expect("backoff poisoned");
        backoff.gc(now, None);
        plan::plan(&observed, &mut backoff, &ctx.config)
    };
    for notice in &plan.notices {
        ctx.recorder.record(
            &ds.object_ref(&()),
            notice.event_type,
            notice.reason,
            &notice.message,
        );
    }

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut failure = None;
    if !plan.create.is_empty() {
        failure = create_pods(&ds, &ctx, &api, &hash, &plan.create)
            .await
            .err();
    }
    let deletes = plan
        .delete
        .iter()
        .map(|pod| delete_pod(&ds, &ctx, &api, pod));
    for result in futures::future::join_all(deletes).await {
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
    }
    if plan.synced && failure.is_none() {
        prune_history(&ds, &ctx, &old_revisions, &claimed).await?;
    }
    if let Some(patch) = status_patch(&ds, &plan.counts, plan.synced) {
        let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
        match ds_api
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(api_error("update status of", ds.name_any())(error)),
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(plan
        .recheck_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// The objects `ds` controls after claiming: owned ones its selector still
/// matches, plus matching orphans it adopts. Owned ones that stopped
/// matching are released.
async fn claim<K>(
    client: &Client,
    ds: &DaemonSet,
    selector: &LabelSelector,
    owned: Vec<Arc<K>>,
    in_namespace: Vec<Arc<K>>,
) -> Result<Vec<Arc<K>>, ReconcileError>
where
    K: Informed + Resource<Scope = NamespaceResourceScope> + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &ds.namespace().unwrap_or_default());
    let describe = |obj: &K| format!("{} {}", K::kind(&()), obj.name_any());
    let mut claimed = Vec::with_capacity(owned.len());
    for obj in owned {
        if pods::selects(selector, obj.meta().labels.as_ref()) {
            claimed.push(obj);
        } else {
            set_controller::<_, DaemonSet>(&api, &*obj, None)
                .await
                .map_err(api_error("release", describe(&obj)))?;
        }
    }
    for obj in in_namespace {
        let orphan = controller_uid(&*obj).is_none() && obj.meta().deletion_timestamp.is_none();
        if orphan && pods::selects(selector, obj.meta().labels.as_ref()) {
            set_controller(&api, &*obj, Some(ds))
                .await
                .map_err(api_error("adopt", describe(&obj)))?;
            claimed.push(obj);
        }
    }
    Ok(claimed)
}

/// Makes sure a revision holds the current template with the highest
/// number, and returns its hash and the old revisions.
async fn construct_history(
    ds: &DaemonSet,
    ctx: &Context,
    revisions: Vec<Arc<ControllerRevision>>,
) -> Result<(String, Vec<Arc<ControllerRevision>>), ReconcileError> {
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let mut labelled = Vec::with_capacity(revisions.len());
    for revision in revisions {
        if revision.labels().contains_key(REVISION_HASH_LABEL) {
            labelled.push(revision);
            continue;
        }
        // The name stands in for a hash, so no collision is possible.
        let name = revision.name_any();
        let patch = json!({"metadata": {"labels": {REVISION_HASH_LABEL: name}}});
        let patched = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("label ControllerRevision", &name))?;
        labelled.push(Arc::new(patched));
    }
    let history = history::sort_history(ds, &labelled);
    let current = match history.current {
        Some(current) => {
            if !history.duplicates.is_empty() {
                drop_duplicates(ds, ctx, &api, &current, &history.duplicates).await?;
            }
            if current.revision.unwrap_or(0) < history.next_revision {
                let patch = json!({"revision": history.next_revision});
                api.patch(
                    &current.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(api_error("renumber ControllerRevision", current.name_any()))?;
            }
            current
        }
        None => create_revision(ds, ctx, &api, history.next_revision).await?,
    };
    let hash = current
        .labels()
        .get(REVISION_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    Ok((hash, history.old))
}

/// Moves pods of duplicate current revisions to the kept one's hash, then
/// deletes the duplicates.
async fn drop_duplicates(
    ds: &DaemonSet,
    ctx: &Context,
    api: &Api<ControllerRevision>,
    keep: &ControllerRevision,
    duplicates: &[Arc<ControllerRevision>],
) -> Result<(), ReconcileError> {
    let hash = keep
        .labels()
        .get(REVISION_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    let pod_api: Api<Pod> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    for pod in ctx.pods.controlled_by(&ds.uid().unwrap_or_default()) {
        if pod.labels().get(REVISION_HASH_LABEL) == Some(&hash) {
            continue;
        }
        let patch = json!({"metadata": {"labels": {REVISION_HASH_LABEL: hash}}});
        match pod_api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(api_error("relabel pod", pod.name_any())(error)),
        }
    }
    for duplicate in duplicates {
        delete_revision(api, duplicate).await?;
    }
    Ok(())
}

async fn delete_revision(
    api: &Api<ControllerRevision>,
    revision: &ControllerRevision,
) -> Result<(), ReconcileError> {
    match api
        .delete(&revision.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(api_error("delete ControllerRevision", revision.name_any())(
            error,
        )),
    }
}

/// Creates the revision of the current template. If its name is taken by
/// another template, raises the collision count and fails, to retry with a
/// new hash.
async fn create_revision(
    ds: &DaemonSet,
    ctx: &Context,
    api: &Api<ControllerRevision>,
    number: i64,
) -> Result<Arc<ControllerRevision>, ReconcileError> {
    let revision = history::snapshot(ds, number);
    let name = revision.name_any();
    let source = match api.create(&PostParams::default(), &revision).await {
        Ok(created) => return Ok(Arc::new(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => kube::Error::Api(status),
        Err(error) => return Err(api_error("create ControllerRevision", name)(error)),
    };
    let existing = api
        .get(&name)
        .await
        .map_err(api_error("get ControllerRevision", &name))?;
    if history::matches(ds, &existing) {
        return Ok(Arc::new(existing));
    }
    tracing::debug!(revision = %name, error = %source, "ControllerRevision name taken by another template");
    let ds_api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let fresh = ds_api
        .get(&ds.name_any())
        .await
        .map_err(api_error("get DaemonSet", ds.name_any()))?;
    let cached_count = ds.status.as_ref().and_then(|s| s.collision_count);
    if fresh.status.as_ref().and_then(|s| s.collision_count) != cached_count {
        return Err(ReconcileError::StaleCollisionCount {
            daemonset: ds.name_any(),
        });
    }
    let count = cached_count.unwrap_or(0) + 1;
    let patch = json!({
        "metadata": {"resourceVersion": fresh.resource_version()},
        "status": {"collisionCount": count},
    });
    ds_api
        .patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(api_error("update collisionCount of", ds.name_any()))?;
    Err(ReconcileError::HashCollision {
        revision: name,
        daemonset: ds.name_any(),
        count,
    })
}

/// Deletes old revisions beyond `revisionHistoryLimit` that no pod uses.
async fn prune_history(
    ds: &DaemonSet,
    ctx: &Context,
    old: &[Arc<ControllerRevision>],
    pods: &[Arc<Pod>],
) -> Result<(), ReconcileError> {
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    for revision in history::revisions_to_prune(ds, old, pods) {
        delete_revision(&api, &revision).await?;
    }
    Ok(())
}

/// Creates a pod for each of `nodes` in slow-start batches (1, 2, 4, …),
/// stopping after a batch with a failure.
async fn create_pods(
    ds: &DaemonSet,
    ctx: &Context,
    api: &Api<Pod>,
    hash: &str,
    nodes: &[String],
) -> Result<(), ReconcileError> {
    let uid = ds.uid().unwrap_or_default();
    let prefix = format!("{}-", ds.name_any());
    let mut remaining = nodes;
    let mut batch = 1;
    while !remaining.is_empty() {
        let (now, later) = remaining.split_at(batch.min(remaining.len()));
        let creates = now.iter().map(|node| {
            let name = generate_name(&prefix);
            ctx.expectations.expect_create(&uid, &name);
            let pod = new_pod(ds, hash, node, name.clone());
            let uid = &uid;
            async move {
                pods::create_owned_pod(api, &ctx.recorder, &ds.object_ref(&()), &pod)
                    .await
                    .map_err(|source| {
                        ctx.expectations.write_failed(uid, &name);
                        api_error("create pod", name)(source)
                    })
            }
        });
        let results = futures::future::join_all(creates).await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
        remaining = later;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pod(
    ds: &DaemonSet,
    ctx: &Context,
    api: &Api<Pod>,
    pod: &Pod,
) -> Result<(), ReconcileError> {
    let uid = ds.uid().unwrap_or_default();
    let name = pod.name_any();
    ctx.expectations.expect_delete(&uid, &name);
    pods::delete_owned_pod(api, &ctx.recorder, &ds.object_ref(&()), pod)
        .await
        .map_err(|source| {
            ctx.expectations.write_failed(&uid, &name);
            api_error("delete pod", name)(source)
        })
}
