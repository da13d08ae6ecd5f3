//! Node lifecycle: notices nodes that stopped heartbeating, taints unhealthy
//! nodes, and evicts the pods that do not tolerate their `NoExecute` taints.
//!
//! Upstream splits this between the node lifecycle controller
//! (`pkg/controller/nodelifecycle`) and the taint-eviction controller
//! (`pkg/controller/tainteviction`); Skiff runs both as one reconciler per
//! Node, because both need the same node, its pods and the same clock:
//!
//! 1. **Health** ([`health`]): a node whose Lease in `kube-node-lease` and
//!    Ready heartbeat have not changed for `node_monitor_grace_period` gets
//!    its Ready, MemoryPressure, DiskPressure and PIDPressure conditions set
//!    to `Unknown` (reason `NodeStatusUnknown`, message "Kubelet stopped
//!    posting node status."), a `NodeNotReady` event, and its pods' Ready
//!    conditions set to False so endpoints drop them.
//! 2. **Taints** ([`taints`]): `NoSchedule` taints mirror the conditions at
//!    once; the `NoExecute` `not-ready` (Ready False) and `unreachable` (Ready
//!    Unknown) taints are added at most at the zone's rate ([`zones`]: 0.1
//!    nodes/s, slower or never when much of a zone is down, never when all
//!    zones are) and removed when the node is Ready again. Added taints carry
//!    `timeAdded`.
//! 3. **Eviction** ([`eviction`]): a pod that does not tolerate a node's
//!    `NoExecute` taint gets a `DisruptionTarget` condition (reason
//!    `DeletionByTaintManager`) and is deleted at once; one that tolerates it
//!    for `tolerationSeconds` is deleted that long after the taint's
//!    `timeAdded`. Events: `TaintManagerEviction` on the pod.
//!
//! # Timing
//!
//! Nothing polls. A node is reconciled when it, its Lease or (while the node
//! is unhealthy or tainted) one of its pods changes, and otherwise at the
//! exact next moment its state can change: its grace period ending, its
//! zone's next tainting token, or its next pod's eviction deadline. All wall
//! times come from the injected [`Clock`]. A node's deadline is reset by each
//! Lease renewal (every 10 s), so a healthy cluster costs one cheap, IO-free
//! reconcile per renewal.
//!
//! # Memory and restarts
//!
//! The controller keeps, per node, when it last saw a heartbeat, when it
//! first saw each `NoExecute` taint and which evictions are pending
//! ([`plan::Tracker`]). After a restart every node gets a fresh grace period
//! (as upstream), and eviction deadlines, counted from `timeAdded`, are kept.
//! Until every node has been looked at once after a start no `NoExecute`
//! taint is added or removed, since the zone states are not known before.
//!
//! Pods are found by node through [`pod_index`], kept from the shared Pod
//! informer's change feed. Upstream's restart-time `RegisteredNode` events
//! for every existing node are not repeated: `RegisteredNode` is recorded for
//! nodes that appear while the controller runs, `RemovingNode` for nodes
//! deleted.

#[cfg(test)]
mod fake_api;

pub mod eviction;
pub mod health;
pub mod plan;
pub mod pod_index;
pub mod taints;
pub mod zones;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::events::{EventRecorder, EventType};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::informer::{Informer, InformerFactory};
use crate::runtime::{Clock, SystemClock, run_controller};
use eviction::pod_key;
use plan::{NodePlan, Tracker};
use pod_index::{PodsByNode, node_name};
use taints::{NO_EXECUTE, condition_status};
use zones::RateConfig;

/// The component name on node events and the field manager of writes.
const COMPONENT: &str = "node-controller";
/// The component name on eviction events, as upstream's separate controller.
const EVICTION_COMPONENT: &str = "taint-eviction-controller";

/// The namespace of the nodes' heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Pod writes (status patches, deletions) in flight per node.
const POD_WRITES: usize = 8;

/// The condition put on a pod before the controller deletes it.
const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// Its reason.
const REASON_TAINT_EVICTION: &str = "DeletionByTaintManager";

/// Tunables, with upstream's defaults (`kube-controller-manager` flags of the
/// same names).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLifecycleConfig {
    /// Silence after which a node's status becomes Unknown (40 s).
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never posted a status, from its creation
    /// (60 s).
    pub node_startup_grace_period: Duration,
    /// Nodes given a `NoExecute` taint per second in a healthy zone (0.1).
    pub eviction_limiter_qps: f64,
    /// The same in a large zone that is partially down (0.01).
    pub secondary_eviction_limiter_qps: f64,
    /// Zones with more nodes than this are large (50).
    pub large_cluster_size_threshold: usize,
    /// Share of not-Ready nodes (with more than 2) at which a zone is
    /// partially down (0.55).
    pub unhealthy_zone_threshold: f64,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            eviction_limiter_qps: 0.1,
            secondary_eviction_limiter_qps: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
        }
    }
}

impl NodeLifecycleConfig {
    fn rates(&self) -> RateConfig {
        RateConfig {
            eviction_limiter_qps: self.eviction_limiter_qps,
            secondary_eviction_limiter_qps: self.secondary_eviction_limiter_qps,
            large_cluster_size_threshold: self.large_cluster_size_threshold,
            unhealthy_zone_threshold: self.unhealthy_zone_threshold,
        }
    }
}

/// A write to the API that failed; the node is reconciled again with
/// backoff, and a conflict (409) is retried against the fresher cache.
#[derive(Debug, thiserror::Error)]
#[error("{action} {name}: {source}")]
pub struct ReconcileError {
    action: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    index: PodsByNode,
    tracker: Mutex<Tracker>,
    /// Wakes the reconcile of every node (zone states changed); coalesces.
    reconcile_all: Notify,
    node_events: EventRecorder,
    eviction_events: EventRecorder,
    clock: Arc<dyn Clock>,
    config: NodeLifecycleConfig,
}

impl Context {
    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker
            .lock()
            .expect("node lifecycle tracker poisoned")
    }

    /// A node changed or went: forget a deleted one.
    fn node_changed(&self, node: &Node) {
        let name = node.name_any();
        if self.nodes.get("", &name).is_some() {
            return;
        }
        let (known, reconcile_all) = self.tracker().node_deleted(&name, self.clock.now());
        if known {
            self.node_events.record(
                &node.object_ref(&()),
                EventType::Normal,
                "RemovingNode",
                &format!("Node {name} event: Removing Node {name} from Controller"),
            );
        }
        if reconcile_all {
            self.reconcile_all.notify_one();
        }
    }

    /// The pods the cache shows bound to `node`.
    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.index
            .on_node(node)
            .into_iter()
            .filter_map(|(ns, name)| self.pods.get(&ns, &name))
            .filter(|p| node_name(p) == Some(node))
            .collect()
    }
}

/// True if the node's pods need the controller: it is not Ready or carries a
/// `NoExecute` taint. Pod changes elsewhere trigger nothing.
fn watches_pods(node: &Node) -> bool {
    let ready = condition_status(taints::conditions(node), "Ready");
    ready.is_some_and(|r| r != "True")
        || taints::taints(node).iter().any(|t| t.effect == NO_EXECUTE)
}

/// Builds the controller on `factory`'s informers (Nodes, Leases, Pods); the
/// returned future runs it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: NodeLifecycleConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: NodeLifecycleConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let nodes = factory.informer::<Node>();
    let leases = factory.informer::<Lease>();
    let pods = factory.informer::<Pod>();
    let ctx = Arc::new(Context {
        node_events: EventRecorder::new(client.clone(), COMPONENT, ""),
        eviction_events: EventRecorder::new(client.clone(), EVICTION_COMPONENT, ""),
        client,
        nodes: nodes.clone(),
        leases: leases.clone(),
        pods: pods.clone(),
        index: PodsByNode::default(),
        tracker: Mutex::new(Tracker::new(&config)),
        reconcile_all: Notify::new(),
        clock,
        config,
    });
    let node_changes = nodes.subscribe();
    let lease_changes = leases.subscribe();
    let pod_changes = pods.subscribe();
    async move {
        nodes.wait_synced().await;
        leases.wait_synced().await;
        pods.wait_synced().await;
        for pod in pods.list() {
            ctx.index.insert(&pod);
        }
        if nodes.store().is_empty() {
            // A new cluster: nothing to wait for, every node is news.
            ctx.tracker().finish_warm_up(std::iter::empty());
        }
        let node_changes = {
            let ctx = Arc::clone(&ctx);
            node_changes.inspect(move |node| ctx.node_changed(node))
        };
        // The index learns of a pod before the pod triggers its node.
        let pod_changes = {
            let ctx = Arc::clone(&ctx);
            pod_changes.inspect(move |pod| {
                let key = pod_key(pod);
                let current = ctx.pods.get(&key.0, &key.1);
                ctx.index.update(key, current.as_deref());
            })
        };
        let pod_node = {
            let nodes = nodes.clone();
            move |pod: Arc<Pod>| {
                node_name(&pod)
                    .filter(|n| nodes.get("", n).is_some_and(|node| watches_pods(&node)))
                    .map(ObjectRef::new)
            }
        };
        let lease_node = |lease: Arc<Lease>| {
            (lease.namespace().as_deref() == Some(NODE_LEASE_NAMESPACE))
                .then(|| ObjectRef::new(&lease.name_any()))
        };
        let everything = {
            let ctx = Arc::clone(&ctx);
            futures::stream::unfold(ctx, |ctx| async move {
                ctx.reconcile_all.notified().await;
                Some(((), ctx))
            })
        };
        let controller = Controller::for_shared_stream(node_changes, nodes.store())
            .watches_shared_stream(lease_changes, lease_node)
            .watches_shared_stream(pod_changes, pod_node)
            .reconcile_all_on(everything);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = node.name_any();
    let lease = ctx.leases.get(NODE_LEASE_NAMESPACE, &name);
    let node_pods = ctx.pods_on(&name);
    let plan = {
        let mut tracker = ctx.tracker();
        let plan = tracker.plan(
            &node,
            lease.as_deref(),
            &node_pods,
            ctx.clock.now(),
            &ctx.config,
        );
        if !tracker.is_warm() && tracker.known_nodes() >= ctx.nodes.store().len() {
            let all = ctx.nodes.list();
            if tracker.finish_warm_up(all.iter().map(|n| n.metadata.name.as_deref().unwrap_or("")))
            {
                ctx.reconcile_all.notify_one();
            }
        }
        plan
    };
    if plan.reconcile_all {
        ctx.reconcile_all.notify_one();
    }
    if plan.registered {
        ctx.node_events.record(
            &node.object_ref(&()),
            EventType::Normal,
            "RegisteredNode",
            &format!("Node {name} event: Registered Node {name} in Controller"),
        );
    }
    if !write_node(&ctx, &node, &plan).await? {
        // The node is gone; its deletion is handled from the watch.
        return Ok(Action::await_change());
    }
    let marked = mark_pods_not_ready(&ctx, &plan.mark_not_ready);
    let evicted = evict_pods(&ctx, &name, &plan.evict);
    let (marked, evicted) = futures::join!(marked, evicted);
    for (ns, pod) in &plan.cancelled {
        ctx.eviction_events.record(
            &pod_reference(ns, pod),
            EventType::Normal,
            "TaintManagerEviction",
            &format!("Cancelling deletion of Pod {ns}/{pod}"),
        );
    }
    marked?;
    evicted?;
    Ok(match plan.next {
        Some(at) => {
            let wait = at.duration_since(ctx.clock.now());
            let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
            Action::requeue(wait.max(Duration::from_millis(1)))
        }
        None => Action::await_change(),
    })
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(COMPONENT.into()),
        ..PatchParams::default()
    }
}

/// Writes the node's conditions, then its taints, each guarded by the
/// resourceVersion it was computed from. False if the node is gone.
async fn write_node(
    ctx: &Context,
    node: &Arc<Node>,
    plan: &NodePlan,
) -> Result<bool, ReconcileError> {
    let name = node.name_any();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let fail = |action, source| ReconcileError {
        action,
        name: name.clone(),
        source,
    };
    let mut current = Arc::clone(node);
    if !plan.write_conditions.is_empty() {
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": plan.write_conditions},
        });
        match api
            .patch_status(&name, &params(), &Patch::Strategic(&patch))
            .await
        {
            Ok(updated) => current = Arc::new(updated),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(source) => return Err(fail("mark status unknown of node", source)),
        }
        ctx.tracker().status_written(&name, &plan.write_conditions);
        tracing::info!(node = name, "node stopped posting status; marked Unknown");
        if plan.became_not_ready {
            ctx.node_events.record(
                &node.object_ref(&()),
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            );
        }
    }
    if plan.taints.is_empty() {
        return Ok(true);
    }
    let existing = taints::taints(&current);
    let wanted = plan.taints.apply(existing);
    if wanted == existing {
        return Ok(true);
    }
    let taints = if wanted.is_empty() {
        serde_json::Value::Null
    } else {
        json!(wanted)
    };
    let patch = json!({
        "metadata": {"resourceVersion": current.resource_version()},
        "spec": {"taints": taints},
    });
    match api.patch(&name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(
                node = name,
                added = ?plan.taints.add.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(),
                removed = ?plan.taints.remove.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(),
                "updated node taints"
            );
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(fail("update taints of node", source)),
    }
}

fn pod_reference(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

fn pod_error(action: &'static str, pod: &Pod, source: kube::Error) -> ReconcileError {
    let (ns, name) = pod_key(pod);
    ReconcileError {
        action,
        name: format!("{ns}/{name}"),
        source,
    }
}

/// Runs `write` for each pod, a few at a time; the first error, after all
/// were tried.
async fn for_each_pod<F, Fut>(pods: &[Arc<Pod>], write: F) -> Result<(), ReconcileError>
where
    F: Fn(Arc<Pod>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ReconcileError>>,
{
    let results: Vec<Result<(), ReconcileError>> = futures::stream::iter(pods.to_vec())
        .map(write)
        .buffer_unordered(POD_WRITES)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Sets the Ready condition of pods on an unreachable node to False.
async fn mark_pods_not_ready(ctx: &Context, pods: &[Arc<Pod>]) -> Result<(), ReconcileError> {
    for_each_pod(pods, |pod| async move {
        let (ns, name) = pod_key(&pod);
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "False",
            "lastTransitionTime": Time(ctx.clock.now()),
        }]}});
        match api
            .patch_status(&name, &params(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                ctx.node_events.record(
                    &pod.object_ref(&()),
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                );
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(pod_error("mark not ready pod", &pod, source)),
        }
    })
    .await
}

fn has_disruption_target(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.type_ == DISRUPTION_TARGET
                    && c.status == "True"
                    && c.reason.as_deref() == Some(REASON_TAINT_EVICTION)
            })
        })
}

/// Marks each pod a disruption target, then deletes it (only that pod: the
/// deletion is guarded by its UID).
async fn evict_pods(ctx: &Context, node: &str, pods: &[Arc<Pod>]) -> Result<(), ReconcileError> {
    for_each_pod(pods, |pod| async move {
        let result = evict_pod(ctx, &pod).await;
        if result.is_err()
            && let Some(uid) = pod.uid()
        {
            ctx.tracker().eviction_failed(node, &uid);
        }
        result
    })
    .await
}

async fn evict_pod(ctx: &Context, pod: &Pod) -> Result<(), ReconcileError> {
    let (ns, name) = pod_key(pod);
    ctx.eviction_events.record(
        &pod.object_ref(&()),
        EventType::Normal,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{name}"),
    );
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if !has_disruption_target(pod) {
        let patch = json!({"status": {"conditions": [{
            "type": DISRUPTION_TARGET,
            "status": "True",
            "reason": REASON_TAINT_EVICTION,
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(ctx.clock.now()),
        }]}});
        match api
            .patch_status(&name, &params(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(source) => return Err(pod_error("mark disruption target pod", pod, source)),
        }
    }
    let delete = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &delete).await {
        Ok(_) => {
            tracing::info!(
                pod = format!("{ns}/{name}"),
                "evicted pod from tainted node"
            );
            Ok(())
        }
        // Gone, or replaced by another pod of the same name.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(source) => Err(pod_error("delete pod", pod, source)),
    }
}

#[cfg(test)]
mod tests;
