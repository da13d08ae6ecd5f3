//! The scheduler loop: informers in, bindings and failure reports out.
//!
//! One task owns all state (snapshot, queue, assumed pods), so nothing is
//! locked. It handles watch events first and schedules a pod whenever none are
//! pending, which keeps the snapshot as fresh as the informers allow. The
//! filtering and scoring of one pod is synchronous CPU work over the snapshot;
//! the API calls (binding, status patches, events) run in their own tasks and
//! report back through a channel, so a slow API server never holds up the
//! next pod.
//!
//! A pod is *assumed* onto its node (counted in the snapshot) as soon as it is
//! chosen, before the binding is written; the next pod sees the reservation.
//! The pod watch confirms the binding; a failed binding forgets the
//! assumption and retries the pod after its back-off.
//!
//! A pod that fits nowhere may preempt (see [`crate::preemption`]). It is
//! nominated to the chosen node at once in the snapshot, so pods of lower
//! priority leave that room alone; then, off the loop, each victim gets the
//! `DisruptionTarget` condition, is deleted with its own grace period and
//! gets a `Preempted` event, and the preemptor's `status.nominatedNodeName`
//! is written with its `PodScheduled=False` condition. The preemptor stays
//! parked until a pod deletion (the victims going) releases it; if an API
//! call fails it is retried after its back-off instead.
//!
//! Namespaces are watched too: `namespaceSelector` in affinity terms selects
//! namespaces by their labels. So are PersistentVolumeClaims,
//! PersistentVolumes and StorageClasses (see [`crate::volume_binding`]), whose
//! additions and changes retry parked pods, and PodDisruptionBudgets, which
//! preemption consults.
//!
//! A pod with claims still to bind or provision on its node goes through
//! upstream's PreBind before its binding: in the binding task, the static
//! volumes chosen for it are pre-bound and its other claims get
//! `volume.kubernetes.io/selected-node`, then the task waits (up to the bind
//! timeout, 600 s by default) until the PV controller reports every claim
//! bound. Meanwhile the pod holds its place on the node, and the volumes and
//! claims are assumed in the snapshot so that other pods see them as taken.
//! If that fails or times out, the pod and its volume assumptions are
//! forgotten, a `FailedScheduling` event says why, and the pod is retried
//! after its back-off; a pod deleted meanwhile stops the wait.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use skiff_client::events::{EventRecorder, EventType};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::algorithm::{self, Decision, FitError};
use crate::preemption::{
    Candidate, DisruptionBudget, REASON_PREEMPTION_BY_SCHEDULER, marked_for_preemption,
};
use crate::queue::SchedulingQueue;
use crate::snapshot::{PodInfo, PodKey, Snapshot, pod_key};
use crate::volume_binding::prebind::{self, DEFAULT_BIND_TIMEOUT};
use crate::volume_binding::{VolumePlan, claim_key};

/// The scheduler name pods get when `spec.schedulerName` is empty.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How often pods parked as unschedulable are checked for the five-minute
/// retry.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// Pods scheduled in a row before the watches are served again.
const SCHEDULE_BATCH: usize = 64;

/// How long shutdown waits for bindings already in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the scheduler is and how hard it searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` equals this (or is empty, when this is
    /// `default-scheduler`) are ours. Also the `source.component` of our
    /// events.
    pub scheduler_name: String,
    /// Upstream's `percentageOfNodesToScore`: 0 picks the adaptive default;
    /// clusters under 100 nodes are always searched fully.
    pub percentage_of_nodes_to_score: u32,
    /// How long a pod's claims may take to be bound or provisioned on its
    /// node before the pod is scheduled again (upstream's
    /// `bindTimeoutSeconds`).
    pub bind_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            percentage_of_nodes_to_score: 0,
            bind_timeout: DEFAULT_BIND_TIMEOUT,
        }
    }
}

/// Why [`run`] stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A watch stream ended. kube's watcher retries errors itself, so this
    /// means the client was torn down; restart the scheduler with a new one.
    #[error("the {resource} watch ended unexpectedly")]
    WatchEnded {
        /// The resource, e.g. `nodes` or `persistentvolumeclaims`.
        resource: &'static str,
    },
}

/// Runs the scheduler until `shutdown` is cancelled.
///
/// Watches nodes, pods, namespaces, claims, volumes, StorageClasses and
/// PodDisruptionBudgets, schedules every pending pod that names
/// `config.scheduler_name`, binds its volumes and then binds it through
/// `pods/{name}/binding`, and records `Scheduled` / `FailedScheduling`
/// events; preempts lower-priority pods for pods that fit nowhere. Watch
/// errors are retried with back-off and never end the loop.
pub async fn run(
    client: Client,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let nodes = watch::<Node>(&client);
    let pods = watch::<Pod>(&client);
    let namespaces = watch::<Namespace>(&client);
    let claims = watch::<PersistentVolumeClaim>(&client);
    let volumes = watch::<PersistentVolume>(&client);
    let classes = watch::<StorageClass>(&client);
    let budgets = watch::<PodDisruptionBudget>(&client);
    let recorder = EventRecorder::new(client.clone(), &config.scheduler_name, "");
    let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler {
        client,
        config: config.clone(),
        recorder,
        state: ClusterState::new(config.scheduler_name.clone()),
        next_start: 0,
        random: std::collections::hash_map::RandomState::new(),
        attempts: 0,
        outcomes_tx,
        tasks: TaskTracker::new(),
    };
    let watches = Watches {
        nodes,
        pods,
        namespaces,
        claims,
        volumes,
        classes,
        budgets,
    };
    let result = scheduler.run_loop(watches, outcomes, &shutdown).await;
    scheduler.state.prebinding.cancel();
    scheduler.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, scheduler.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduler shutting down with API calls still in flight");
    }
    result
}

/// The watch of every object of kind `K` in the cluster.
fn watch<K>(client: &Client) -> WatchStream<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + 'static,
{
    skiff_client::watch::cache_feed(Api::<K>::all(client.clone()), watcher::Config::default())
        .boxed()
}

/// Why a chosen pod was not bound.
#[derive(Debug)]
enum BindFailure {
    /// Its volumes were not bound (PreBind).
    Volumes(prebind::PreBindError),
    /// The API refused the binding.
    Binding(String),
}

impl BindFailure {
    /// The `FailedScheduling` message, as upstream words it.
    fn message(&self) -> String {
        match self {
            BindFailure::Volumes(e) => format!("running PreBind plugin \"VolumeBinding\": {e}"),
            BindFailure::Binding(e) => format!("Binding rejected: {e}"),
        }
    }
}

/// The result of an API call made off the loop.
#[derive(Debug)]
enum Outcome {
    Bound {
        key: PodKey,
        node: String,
        result: Result<(), BindFailure>,
    },
    /// Evicting a preemptor's victims failed.
    PreemptionFailed { key: PodKey, error: String },
}

/// What to do with a pod's `status.nominatedNodeName` when reporting it
/// unschedulable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Nomination {
    Keep,
    Set(String),
    Clear,
}

/// The scheduler's state; see the module docs.
struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    recorder: EventRecorder,
    state: ClusterState,
    /// Where the next filter pass starts, so every node gets its turn.
    next_start: usize,
    random: std::collections::hash_map::RandomState,
    attempts: u64,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    tasks: TaskTracker,
}

type WatchStream<K> =
    std::pin::Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

/// The informers' event streams.
struct Watches {
    nodes: WatchStream<Node>,
    pods: WatchStream<Pod>,
    namespaces: WatchStream<Namespace>,
    claims: WatchStream<PersistentVolumeClaim>,
    volumes: WatchStream<PersistentVolume>,
    classes: WatchStream<StorageClass>,
    budgets: WatchStream<PodDisruptionBudget>,
}

impl Scheduler {
    async fn run_loop(
        &mut self,
        watches: Watches,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
        shutdown: &CancellationToken,
    ) -> Result<(), SchedulerError> {
        let Watches {
            mut nodes,
            mut pods,
            mut namespaces,
            mut claims,
            mut volumes,
            mut classes,
            mut budgets,
        } = watches;
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            // Schedule what is ready before waiting again, but a bounded
            // batch, so that a long queue cannot hold up the watches (whose
            // events confirm bindings and free room) for long. Waiting for
            // an idle moment instead would starve scheduling whenever pods
            // are being created faster than events are handled.
            if self.state.synced() {
                for _ in 0..SCHEDULE_BATCH {
                    match self.state.queue.pop(Instant::now()) {
                        Some(pod) => self.schedule_one(pod),
                        None => break,
                    }
                }
            }
            let now = Instant::now();
            let wake = if self.state.synced() {
                self.state.queue.next_ready(now)
            } else {
                None
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                event = nodes.next() => match event {
                    Some(Ok(event)) => self.state.on_node_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "nodes" }),
                },
                event = pods.next() => match event {
                    Some(Ok(event)) => self.state.on_pod_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "pods" }),
                },
                event = namespaces.next() => match event {
                    Some(Ok(event)) => self.state.on_namespace_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "namespaces" }),
                },
                event = claims.next() => match event {
                    Some(Ok(event)) => self.state.on_claim_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "claim watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "persistentvolumeclaims" }),
                },
                event = volumes.next() => match event {
                    Some(Ok(event)) => self.state.on_volume_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "volume watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "persistentvolumes" }),
                },
                event = classes.next() => match event {
                    Some(Ok(event)) => self.state.on_class_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "storage class watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "storageclasses" }),
                },
                event = budgets.next() => match event {
                    Some(Ok(event)) => self.state.on_budget_event(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "disruption budget watch failed; retrying"),
                    None => return Err(SchedulerError::WatchEnded { resource: "poddisruptionbudgets" }),
                },
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                _ = flush.tick() => self.state.queue.flush_unschedulable_leftovers(Instant::now()),
                // A pod's back-off ends: the top of the loop schedules it.
                () = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            }
        }
    }

    // ----- scheduling ------------------------------------------------------

    fn schedule_one(&mut self, pod: Arc<PodInfo>) {
        self.attempts = self.attempts.wrapping_add(1);
        let tie_breaker = self.random.hash_one(self.attempts);
        let offset =
            usize::try_from(self.random.hash_one((self.attempts, "preemption")) % (1 << 31))
                .unwrap_or(0);
        let decision = algorithm::decide(
            &self.state.snapshot,
            &pod,
            self.config.percentage_of_nodes_to_score,
            self.next_start,
            tie_breaker,
            offset,
        );
        match decision {
            Decision::Bind(placement) => {
                let count = self.state.snapshot.node_count().max(1);
                self.next_start = (self.next_start + placement.evaluated) % count;
                let volumes = match self.state.plan_volumes(&pod, &placement.node) {
                    Ok(volumes) => volumes,
                    Err(reason) => {
                        // The node fit a moment ago, in the same snapshot.
                        tracing::warn!(pod = %pod.key, node = %placement.node, %reason, "volumes no longer fit; will retry");
                        self.state.queue.failed(&pod.key, Instant::now());
                        return;
                    }
                };
                tracing::debug!(pod = %pod.key, node = %placement.node, "assuming pod");
                self.state.assume(pod.clone(), &placement.node);
                let cancel = volumes
                    .as_ref()
                    .map(|plan| self.state.assume_volumes(&pod.key, plan.clone()));
                self.spawn_bind(pod, placement.node, volumes.zip(cancel));
            }
            Decision::Wait {
                fit,
                clear_nomination,
            } => {
                tracing::debug!(pod = %pod.key, reason = %fit, "pod is unschedulable");
                self.state.queue.unschedulable(&pod.key, Instant::now());
                let nomination = if clear_nomination {
                    self.state.snapshot.clear_nomination(&pod.key);
                    Nomination::Clear
                } else {
                    Nomination::Keep
                };
                self.report_unschedulable(&pod, &fit, nomination);
            }
            Decision::Preempt { fit, candidate } => {
                tracing::info!(
                    pod = %pod.key,
                    node = %candidate.node,
                    victims = candidate.victims.len(),
                    "preempting lower-priority pods"
                );
                self.state.queue.unschedulable(&pod.key, Instant::now());
                let displaced = self.state.nominate(pod.clone(), &candidate.node);
                for other in &displaced {
                    self.spawn_clear_nomination(other);
                }
                self.report_unschedulable(&pod, &fit, Nomination::Set(candidate.node.clone()));
                self.spawn_preemption(pod, candidate);
            }
        }
    }

    /// Evicts a preemption's victims as upstream does: mark each with the
    /// `DisruptionTarget` condition, delete it (with its own grace period,
    /// and only that incarnation of it), and record `Preempted` on it.
    fn spawn_preemption(&self, preemptor: Arc<PodInfo>, candidate: Candidate) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let tx = self.outcomes_tx.clone();
        let scheduler_name = preemptor
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| self.config.scheduler_name.clone());
        self.tasks.spawn(async move {
            let message = format!(
                "Preempted by pod {} on node {}",
                preemptor.uid(),
                candidate.node
            );
            for victim in &candidate.victims {
                let api: Api<Pod> = Api::namespaced(client.clone(), victim.namespace());
                if let Err(error) = evict(&api, victim, &scheduler_name).await {
                    // The loop may be gone at shutdown; then nobody needs to know.
                    let _ = tx.send(Outcome::PreemptionFailed {
                        key: preemptor.key.clone(),
                        error: format!("preempting {}: {error}", victim.key),
                    });
                    return;
                }
                recorder.record(
                    &object_ref(&victim.pod),
                    EventType::Normal,
                    "Preempted",
                    &message,
                );
            }
        });
    }

    /// Removes a lower-priority pod's nomination from its status: the room it
    /// was promised now goes to a more important pod.
    fn spawn_clear_nomination(&self, pod: &PodInfo) {
        let api = self.pods_api(&pod.pod);
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"status": {"nominatedNodeName": null}});
        self.tasks.spawn(async move {
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "could not clear nominatedNodeName");
            }
        });
    }

    /// Binds the pod, after its volumes (`volumes`: their plan, and what
    /// stops waiting for them) when it has some to bind.
    fn spawn_bind(
        &self,
        pod: Arc<PodInfo>,
        node: String,
        volumes: Option<(VolumePlan, CancellationToken)>,
    ) {
        let client = self.client.clone();
        let bind_timeout = self.config.bind_timeout;
        let api = self.pods_api(&pod.pod);
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: pod.pod.metadata.namespace.clone(),
                uid: pod.pod.metadata.uid.clone(),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..ObjectReference::default()
            },
        };
        let tx = self.outcomes_tx.clone();
        self.tasks.spawn(async move {
            if let Some((plan, cancel)) = volumes
                && let Err(error) =
                    prebind::bind_volumes(&client, &plan, bind_timeout, &cancel).await
            {
                let _ = tx.send(Outcome::Bound {
                    key: pod.key.clone(),
                    node,
                    result: Err(BindFailure::Volumes(error)),
                });
                return;
            }
            let result = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(drop)
                .map_err(|e| BindFailure::Binding(e.to_string()));
            // The loop may be gone at shutdown; then nobody needs to know.
            let _ = tx.send(Outcome::Bound {
                key: pod.key.clone(),
                node,
                result,
            });
        });
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Bound { key, node, result } => {
                let pod = self
                    .state
                    .snapshot
                    .node(&node)
                    .and_then(|n| n.pods.get(&key))
                    .cloned();
                match result {
                    Ok(()) => {
                        self.state.volumes_bound(&key);
                        self.state.queue.done(&key);
                        if let Some(pod) = pod {
                            let message = format!("Successfully assigned {key} to {node}");
                            self.recorder.record(
                                &object_ref(&pod.pod),
                                EventType::Normal,
                                "Scheduled",
                                &message,
                            );
                        }
                    }
                    Err(error) => {
                        let message = error.message();
                        tracing::info!(pod = %key, %node, error = %message, "binding failed; will retry");
                        self.state.forget(&key);
                        if let Some(pod) = pod {
                            self.recorder.record(
                                &object_ref(&pod.pod),
                                EventType::Warning,
                                "FailedScheduling",
                                &message,
                            );
                        }
                    }
                }
            }
            Outcome::PreemptionFailed { key, error } => {
                tracing::warn!(pod = %key, %error, "preemption failed; will retry");
                self.state.queue.failed(&key, Instant::now());
            }
        }
    }

    /// Records `FailedScheduling` and sets `PodScheduled=False` with reason
    /// `Unschedulable`, as upstream does, with the `nominatedNodeName` change
    /// preemption asks for; the status is only written when it changes, so
    /// retries of a stuck pod do not rewrite it.
    fn report_unschedulable(&self, pod: &PodInfo, fit: &FitError, nomination: Nomination) {
        let message = fit.to_string();
        self.recorder.record(
            &object_ref(&pod.pod),
            EventType::Warning,
            "FailedScheduling",
            &message,
        );

        let current = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        let nominated_now = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        let nominated = match &nomination {
            Nomination::Set(node) if nominated_now != Some(node.as_str()) => {
                Some(serde_json::json!(node))
            }
            Nomination::Clear if nominated_now.is_some() => Some(serde_json::Value::Null),
            _ => None,
        };
        let unchanged = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message.as_str())
        });
        if unchanged && nominated.is_none() {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => {
                c.last_transition_time.clone().map(|t| serde_json::json!(t))
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            serde_json::json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now()
            ))
        });
        let mut patch = serde_json::json!({
            "status": {
                "conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": transition,
                }]
            }
        });
        if let Some(nominated) = nominated {
            patch["status"]["nominatedNodeName"] = nominated;
        }
        let api = self.pods_api(&pod.pod);
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        self.tasks.spawn(async move {
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "could not set PodScheduled=False");
            }
        });
    }

    fn pods_api(&self, pod: &Pod) -> Api<Pod> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// Marks one victim as disrupted by preemption and deletes it. A victim
/// already gone counts as evicted.
async fn evict(api: &Api<Pod>, victim: &PodInfo, scheduler_name: &str) -> Result<(), kube::Error> {
    let name = victim.pod.metadata.name.clone().unwrap_or_default();
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    if !marked_for_preemption(&victim.pod) {
        let patch = serde_json::json!({
            "status": {
                "conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": REASON_PREEMPTION_BY_SCHEDULER,
                    "message": format!("{scheduler_name}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::now()
                    ),
                }]
            }
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let mut params = DeleteParams::default().preconditions(Preconditions {
        uid: victim.pod.metadata.uid.clone(),
        resource_version: None,
    });
    if let Some(grace) = victim
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .and_then(|g| u32::try_from(g).ok())
    {
        params = params.grace_period(grace);
    }
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the informers have told the scheduler: the snapshot, the queue and
/// the pods assumed onto nodes. No I/O, so the event handling is testable.
#[derive(Debug)]
struct ClusterState {
    scheduler_name: String,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    /// Pods placed in the snapshot whose binding is not yet confirmed by the
    /// watch, with their node.
    assumed: HashMap<PodKey, String>,
    nodes: Relist<Node>,
    pods: Relist<Pod>,
    namespaces: Relist<Namespace>,
    claims: Relist<PersistentVolumeClaim>,
    volumes: Relist<PersistentVolume>,
    classes: Relist<StorageClass>,
    budgets: Relist<PodDisruptionBudget>,
    /// The volume plans of assumed pods whose volumes are being bound, with
    /// what stops the wait for them.
    volume_plans: HashMap<PodKey, (VolumePlan, CancellationToken)>,
    /// The parent of those tokens, cancelled when the scheduler stops.
    prebinding: CancellationToken,
}

/// What a watch event asks of a cache.
#[derive(Debug)]
enum Change<K> {
    Apply(K),
    Delete(K),
    /// A re-list finished: these are all the objects there are.
    Replace(Vec<K>),
}

/// The re-list bookkeeping of one watch: objects of a re-list in progress
/// (between `Init` and `InitDone`), and whether it has listed once.
#[derive(Debug)]
struct Relist<K> {
    pending: Option<Vec<K>>,
    synced: bool,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Relist {
            pending: None,
            synced: false,
        }
    }
}

impl<K> Relist<K> {
    fn on_event(&mut self, event: Event<K>) -> Option<Change<K>> {
        match event {
            Event::Apply(object) => Some(Change::Apply(object)),
            Event::Delete(object) => Some(Change::Delete(object)),
            Event::Init => {
                self.pending = Some(Vec::new());
                None
            }
            Event::InitApply(object) => {
                self.pending.get_or_insert_with(Vec::new).push(object);
                None
            }
            Event::InitDone => {
                self.synced = true;
                Some(Change::Replace(self.pending.take().unwrap_or_default()))
            }
        }
    }
}

/// The keys in `known` that a finished re-list (`listed`) no longer holds.
fn unlisted<'a>(
    known: impl Iterator<Item = &'a str>,
    listed: impl Iterator<Item = String>,
) -> Vec<String> {
    let listed: HashSet<String> = listed.collect();
    known
        .filter(|key| !listed.contains(*key))
        .map(str::to_string)
        .collect()
}

/// How one kind of object is kept in the snapshot.
struct CacheOps<K> {
    /// The object's key in the cache.
    key: fn(&K) -> String,
    /// Every key in the cache.
    keys: fn(&Snapshot) -> Vec<String>,
    remove: fn(&mut Snapshot, &str),
    /// Stores an object; `true` if that may let a parked pod fit.
    apply: fn(&mut Snapshot, K) -> bool,
}

impl<K> CacheOps<K> {
    /// Applies a watch change; `true` if it may let a parked pod fit.
    fn change(&self, snapshot: &mut Snapshot, change: Change<K>) -> bool {
        match change {
            Change::Apply(object) => (self.apply)(snapshot, object),
            Change::Delete(object) => {
                (self.remove)(snapshot, &(self.key)(&object));
                false
            }
            Change::Replace(listed) => {
                let known = (self.keys)(snapshot);
                let gone = unlisted(
                    known.iter().map(String::as_str),
                    listed.iter().map(self.key),
                );
                for key in gone {
                    (self.remove)(snapshot, &key);
                }
                listed
                    .into_iter()
                    .fold(false, |any, object| (self.apply)(snapshot, object) | any)
            }
        }
    }
}

fn object_key<K: kube::Resource>(object: &K) -> String {
    let meta = object.meta();
    match meta.namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

const CLAIMS: CacheOps<PersistentVolumeClaim> = CacheOps {
    key: claim_key,
    keys: |s| s.volumes().claim_keys().map(str::to_string).collect(),
    remove: |s, key| {
        s.volumes_mut().remove_claim(key);
    },
    apply: |s, claim| s.volumes_mut().upsert_claim(claim),
};

const VOLUMES: CacheOps<PersistentVolume> = CacheOps {
    key: object_key,
    keys: |s| s.volumes().volume_names().map(str::to_string).collect(),
    remove: |s, name| {
        s.volumes_mut().remove_volume(name);
    },
    apply: |s, volume| s.volumes_mut().upsert_volume(volume),
};

const CLASSES: CacheOps<StorageClass> = CacheOps {
    key: object_key,
    keys: |s| s.volumes().class_names().map(str::to_string).collect(),
    remove: |s, name| s.volumes_mut().remove_class(name),
    apply: |s, class| s.volumes_mut().upsert_class(class),
};

const BUDGETS: CacheOps<PodDisruptionBudget> = CacheOps {
    key: object_key,
    keys: |s| s.budget_keys().map(str::to_string).collect(),
    remove: |s, key| s.remove_budget(key),
    // Budgets only steer preemption; a change never makes a pod fit.
    apply: |s, pdb| {
        s.upsert_budget(object_key(&pdb), DisruptionBudget::new(&pdb));
        false
    },
};

impl ClusterState {
    fn new(scheduler_name: String) -> ClusterState {
        ClusterState {
            scheduler_name,
            snapshot: Snapshot::new(),
            queue: SchedulingQueue::new(),
            assumed: HashMap::new(),
            nodes: Relist::default(),
            pods: Relist::default(),
            namespaces: Relist::default(),
            claims: Relist::default(),
            volumes: Relist::default(),
            classes: Relist::default(),
            budgets: Relist::default(),
            volume_plans: HashMap::new(),
            prebinding: CancellationToken::new(),
        }
    }

    /// Whether every informer has listed once, so decisions see the cluster.
    fn synced(&self) -> bool {
        self.nodes.synced
            && self.pods.synced
            && self.namespaces.synced
            && self.claims.synced
            && self.volumes.synced
            && self.classes.synced
            && self.budgets.synced
    }

    /// Applies a change to a cache and retries parked pods if it may help
    /// them.
    fn cache_event<K>(&mut self, ops: &CacheOps<K>, change: Option<Change<K>>) {
        if let Some(change) = change
            && ops.change(&mut self.snapshot, change)
        {
            self.queue.move_all_unschedulable(Instant::now());
        }
    }

    fn on_claim_event(&mut self, event: Event<PersistentVolumeClaim>) {
        let change = self.claims.on_event(event);
        self.cache_event(&CLAIMS, change);
    }

    fn on_volume_event(&mut self, event: Event<PersistentVolume>) {
        let change = self.volumes.on_event(event);
        self.cache_event(&VOLUMES, change);
    }

    fn on_class_event(&mut self, event: Event<StorageClass>) {
        let change = self.classes.on_event(event);
        self.cache_event(&CLASSES, change);
    }

    fn on_budget_event(&mut self, event: Event<PodDisruptionBudget>) {
        let change = self.budgets.on_event(event);
        self.cache_event(&BUDGETS, change);
    }

    /// What to write for `pod`'s claims before binding it to `node`:
    /// `Ok(None)` when nothing (every claim bound, or none).
    fn plan_volumes(&self, pod: &PodInfo, node: &str) -> Result<Option<VolumePlan>, String> {
        let Some(node) = self.snapshot.node(node).and_then(|n| n.node.as_deref()) else {
            return Err(format!("node {node:?} not found"));
        };
        VolumePlan::for_pod(self.snapshot.volumes(), &pod.pod, node)
    }

    /// Counts a plan's volumes and claims as taken while the pod's volumes
    /// are bound; returns what stops that wait.
    fn assume_volumes(&mut self, key: &str, plan: VolumePlan) -> CancellationToken {
        self.snapshot.volumes_mut().assume(&plan);
        let cancel = self.prebinding.child_token();
        self.volume_plans
            .insert(key.to_string(), (plan, cancel.clone()));
        cancel
    }

    /// The pod is bound: its volume assumptions stay until the watches
    /// deliver the objects as written.
    fn volumes_bound(&mut self, key: &str) {
        self.volume_plans.remove(key);
    }

    /// Counts a chosen pod on its node before the binding is written, so the
    /// next pod sees the reservation.
    fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.snapshot.clear_nomination(&pod.key);
        self.assumed.insert(pod.key.clone(), node.to_string());
        self.snapshot.add_pod(node, pod);
    }

    /// Nominates a preemptor to `node`, and takes the nomination away from
    /// pods of lower priority nominated there (returned, so their status can
    /// be cleared too): the room they were promised goes to the preemptor.
    fn nominate(&mut self, pod: Arc<PodInfo>, node: &str) -> Vec<Arc<PodInfo>> {
        let displaced: Vec<Arc<PodInfo>> = self
            .snapshot
            .nominated_pods(node)
            .filter(|p| p.priority < pod.priority && p.key != pod.key)
            .cloned()
            .collect();
        for other in &displaced {
            self.snapshot.clear_nomination(&other.key);
            self.queue.release_parked(&other.key, Instant::now());
        }
        self.snapshot.nominate(node, pod);
        displaced
    }

    fn on_namespace_event(&mut self, event: Event<Namespace>) {
        match self.namespaces.on_event(event) {
            Some(Change::Apply(ns)) => self.apply_namespace(ns),
            Some(Change::Delete(ns)) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    self.snapshot.remove_namespace(name);
                }
            }
            Some(Change::Replace(listed)) => {
                let names = listed.iter().filter_map(|n| n.metadata.name.clone());
                for name in unlisted(self.snapshot.namespace_names(), names) {
                    self.snapshot.remove_namespace(&name);
                }
                for ns in listed {
                    self.apply_namespace(ns);
                }
            }
            None => {}
        }
    }

    /// Records a namespace's labels; a change may let a pod whose affinity
    /// selects namespaces fit, so parked pods are retried.
    fn apply_namespace(&mut self, ns: Namespace) {
        let Some(name) = ns.metadata.name else {
            return;
        };
        let labels = ns.metadata.labels.unwrap_or_default();
        let known = self.snapshot.namespaces().any(|(n, _)| n == name);
        if known && self.snapshot.namespace_labels(&name) == &labels {
            return;
        }
        self.snapshot.upsert_namespace(&name, labels);
        if known {
            self.queue.move_all_unschedulable(Instant::now());
        }
    }

    /// The binding failed: free the reservation (and the volumes assumed for
    /// it) and retry after back-off.
    fn forget(&mut self, key: &str) {
        if let Some((plan, _)) = self.volume_plans.remove(key) {
            self.snapshot.volumes_mut().restore(&plan);
        }
        if self.assumed.remove(key).is_some() {
            self.snapshot.remove_pod(key);
            self.queue.move_all_unschedulable(Instant::now());
        }
        self.queue.failed(key, Instant::now());
    }

    fn on_node_event(&mut self, event: Event<Node>) {
        match self.nodes.on_event(event) {
            Some(Change::Apply(node)) => self.apply_node(node),
            Some(Change::Delete(node)) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    self.snapshot.remove_node(name);
                }
            }
            Some(Change::Replace(listed)) => {
                let names = listed.iter().filter_map(|n| n.metadata.name.clone());
                for name in unlisted(self.snapshot.node_names(), names) {
                    self.snapshot.remove_node(&name);
                }
                for node in listed {
                    self.apply_node(node);
                }
            }
            None => {}
        }
    }

    fn apply_node(&mut self, node: Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let changed = self
            .snapshot
            .node(&name)
            .and_then(|n| n.node.as_deref())
            .is_none_or(|old| scheduling_relevant_change(old, &node));
        self.snapshot.upsert_node(Arc::new(node));
        if changed {
            self.queue.move_all_unschedulable(Instant::now());
        }
    }

    fn on_pod_event(&mut self, event: Event<Pod>) {
        match self.pods.on_event(event) {
            Some(Change::Apply(pod)) => self.apply_pod(pod),
            Some(Change::Delete(pod)) => self.delete_pod(&pod_key(&pod)),
            Some(Change::Replace(listed)) => {
                let known = self.snapshot.placed_keys().chain(self.queue.keys());
                let gone = unlisted(known.map(String::as_str), listed.iter().map(pod_key));
                for key in gone {
                    self.delete_pod(&key);
                }
                for pod in listed {
                    self.apply_pod(pod);
                }
            }
            None => {}
        }
    }

    fn apply_pod(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        if is_terminal(&pod) {
            // Finished pods hold no resources and need no node.
            self.delete_pod(&key);
            return;
        }
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        match bound_node(&info.pod) {
            Some(node) => {
                self.queue.remove(&key);
                self.assumed.remove(&key);
                self.snapshot.clear_nomination(&key);
                self.snapshot.add_pod(&node, info);
            }
            None if self.assumed.contains_key(&key) => {
                // Our binding is in flight (or done) and this update
                // predates it: keep the object fresh, never queue it again.
                self.queue.refresh(info);
            }
            None => {
                if self.snapshot.remove_pod(&key).is_some() {
                    self.queue.move_all_unschedulable(Instant::now());
                }
                if is_ours(&info.pod, &self.scheduler_name) {
                    self.refresh_nomination(&info);
                    self.queue.add_or_update(info, Instant::now());
                } else {
                    self.snapshot.clear_nomination(&key);
                    self.queue.remove(&key);
                }
            }
        }
    }

    /// Follows a pending pod's `status.nominatedNodeName`. An update without
    /// one keeps the nomination the scheduler made itself: it may predate our
    /// status write.
    fn refresh_nomination(&mut self, info: &Arc<PodInfo>) {
        let stated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        let node = stated
            .or(self.snapshot.nomination(&info.key))
            .map(str::to_string);
        if let Some(node) = node {
            self.snapshot.nominate(&node, info.clone());
        }
    }

    fn delete_pod(&mut self, key: &str) {
        if let Some((_, cancel)) = self.volume_plans.get(key) {
            // The binding task reports back, and that forgets the plan.
            cancel.cancel();
        }
        self.queue.remove(key);
        self.assumed.remove(key);
        self.snapshot.clear_nomination(key);
        if self.snapshot.remove_pod(key).is_some() {
            self.queue.move_all_unschedulable(Instant::now());
        }
    }
}

/// Whether a pod without a node is the scheduler `scheduler_name`'s to place
/// now: it names us (an empty name means `default-scheduler`), is not being
/// deleted and has no scheduling gates left.
fn is_ours(pod: &Pod, scheduler_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let name = spec
        .scheduler_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    name == scheduler_name
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
}

/// `spec.nodeName`, when set.
fn bound_node(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Succeeded and Failed pods are done.
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a node update may let a parked pod fit: its spec (taints,
/// cordon), labels, allocatable or Ready condition changed. Heartbeats do not
/// count, or every kubelet status update would retry every stuck pod.
fn scheduling_relevant_change(old: &Node, new: &Node) -> bool {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    let allocatable = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || allocatable(old) != allocatable(new)
        || ready(old) != ready(new)
}

fn object_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus};

    use super::*;
    use crate::snapshot::tests::{node, pod};
    use crate::volume_binding::tests::{claim, class, pod_with_claims, volume};

    #[test]
    fn heartbeats_are_not_relevant_changes() {
        let mut old = node("n", "1", "1Gi", "10");
        old.status
            .get_or_insert_with(NodeStatus::default)
            .conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        let mut beat = old.clone();
        beat.metadata.resource_version = Some("2".into());
        if let Some(c) = beat
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.first_mut())
        {
            c.message = Some("kubelet is posting ready status".into());
        }
        assert!(!scheduling_relevant_change(&old, &beat));

        let mut cordoned = old.clone();
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert!(scheduling_relevant_change(&old, &cordoned));

        let mut not_ready = old.clone();
        if let Some(c) = not_ready
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.first_mut())
        {
            c.status = "False".into();
        }
        assert!(scheduling_relevant_change(&old, &not_ready));

        let bigger = node("n", "2", "1Gi", "10");
        assert!(scheduling_relevant_change(
            &node("n", "1", "1Gi", "10"),
            &bigger
        ));
    }

    #[test]
    fn terminal_and_bound_pods() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                node_name: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(bound_node(&pod), None, "an empty nodeName is unbound");
        pod.spec.as_mut().unwrap().node_name = Some("n1".into());
        assert_eq!(bound_node(&pod).as_deref(), Some("n1"));
        assert!(!is_terminal(&pod));
        for phase in ["Succeeded", "Failed"] {
            pod.status = Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            assert!(is_terminal(&pod));
        }
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert!(!is_terminal(&pod));
    }

    #[test]
    fn which_pods_are_ours() {
        let mut pod = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        assert!(
            is_ours(&pod, "default-scheduler"),
            "an empty name is the default"
        );
        assert!(!is_ours(&pod, "other"));
        pod.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        assert!(is_ours(&pod, "other"));
        assert!(!is_ours(&pod, "default-scheduler"));
        pod.spec.as_mut().unwrap().scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "wait".into(),
            }]);
        assert!(!is_ours(&pod, "other"), "gated pods wait");
        pod.spec.as_mut().unwrap().scheduling_gates = Some(vec![]);
        assert!(is_ours(&pod, "other"));
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(
            !is_ours(&pod, "other"),
            "terminating pods are not scheduled"
        );
        assert!(!is_ours(&Pod::default(), "default-scheduler"));
    }

    fn ready_node(name: &str, cpu: &str) -> Node {
        let mut n = node(name, cpu, "4Gi", "110");
        n.status.get_or_insert_with(NodeStatus::default).conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        n
    }

    fn bound(mut p: Pod, node: &str) -> Pod {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p
    }

    fn synced(nodes: Vec<Node>, pods: Vec<Pod>) -> ClusterState {
        let mut state = ClusterState::new(DEFAULT_SCHEDULER_NAME.into());
        state.on_node_event(Event::Init);
        for n in nodes {
            state.on_node_event(Event::InitApply(n));
        }
        state.on_node_event(Event::InitDone);
        state.on_pod_event(Event::Init);
        for p in pods {
            state.on_pod_event(Event::InitApply(p));
        }
        state.on_pod_event(Event::InitDone);
        state.on_claim_event(Event::InitDone);
        state.on_volume_event(Event::InitDone);
        state.on_class_event(Event::InitDone);
        state.on_budget_event(Event::InitDone);
        state
    }

    #[tokio::test(start_paused = true)]
    async fn informers_fill_the_snapshot_and_the_queue() {
        let mut state = synced(
            vec![ready_node("n1", "2")],
            vec![
                bound(pod("running", "1", ""), "n1"),
                pod("pending", "1", ""),
            ],
        );
        assert!(state.nodes.synced && state.pods.synced);
        assert_eq!(state.snapshot.node("n1").unwrap().requested.milli_cpu, 1000);
        assert!(state.queue.contains("default/pending"));
        assert!(!state.queue.contains("default/running"));

        // A pod finishing frees its resources.
        let mut done = bound(pod("running", "1", ""), "n1");
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        state.on_pod_event(Event::Apply(done));
        assert_eq!(state.snapshot.node("n1").unwrap().requested.milli_cpu, 0);

        // Someone else binding the pending pod takes it out of the queue.
        state.on_pod_event(Event::Apply(bound(pod("pending", "1", ""), "n1")));
        assert!(!state.queue.contains("default/pending"));
        assert_eq!(state.snapshot.placement("default/pending"), Some("n1"));
    }

    #[tokio::test(start_paused = true)]
    async fn relist_drops_what_disappeared() {
        let mut state = synced(
            vec![ready_node("n1", "2"), ready_node("n2", "2")],
            vec![bound(pod("a", "1", ""), "n1"), pod("q", "", "")],
        );
        state.on_node_event(Event::Init);
        state.on_node_event(Event::InitApply(ready_node("n2", "2")));
        state.on_node_event(Event::InitDone);
        assert_eq!(state.snapshot.node_count(), 1);
        state.on_pod_event(Event::Init);
        state.on_pod_event(Event::InitDone);
        assert!(state.snapshot.placement("default/a").is_none());
        assert!(!state.queue.contains("default/q"));
    }

    #[tokio::test(start_paused = true)]
    async fn assumed_pods_are_not_queued_again_and_failures_free_them() {
        let mut state = synced(vec![ready_node("n1", "2")], vec![pod("p", "1", "")]);
        let p = state.queue.pop(Instant::now()).unwrap();
        state.assume(p.clone(), "n1");
        assert_eq!(state.snapshot.node("n1").unwrap().requested.milli_cpu, 1000);

        // A stale update without nodeName while the binding is in flight.
        state.queue.done(&p.key);
        state.on_pod_event(Event::Apply(pod("p", "1", "")));
        assert!(!state.queue.contains("default/p"), "not scheduled twice");

        // The watch confirms the binding.
        state.on_pod_event(Event::Apply(bound(pod("p", "1", ""), "n1")));
        assert!(state.assumed.is_empty());
        assert_eq!(state.snapshot.node("n1").unwrap().requested.milli_cpu, 1000);

        // A failed binding frees the reservation and retries after back-off.
        let mut state = synced(vec![ready_node("n1", "2")], vec![pod("p", "1", "")]);
        let p = state.queue.pop(Instant::now()).unwrap();
        state.assume(p.clone(), "n1");
        state.forget(&p.key);
        assert_eq!(state.snapshot.node("n1").unwrap().requested.milli_cpu, 0);
        assert!(state.queue.pop(Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(state.queue.pop(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn node_changes_and_pod_deletions_release_parked_pods() {
        let mut state = synced(
            vec![ready_node("n1", "1")],
            vec![bound(pod("big", "1", ""), "n1"), pod("p", "1", "")],
        );
        let p = state.queue.pop(Instant::now()).unwrap();
        state.queue.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;

        // A heartbeat does not release it.
        let mut beat = ready_node("n1", "1");
        beat.metadata.resource_version = Some("9".into());
        state.on_node_event(Event::Apply(beat));
        assert!(state.queue.pop(Instant::now()).is_none());

        // Deleting the pod that holds the cpu does.
        state.on_pod_event(Event::Delete(bound(pod("big", "1", ""), "n1")));
        assert!(state.queue.pop(Instant::now()).is_some());
        state.queue.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;

        // So does a new node.
        state.on_node_event(Event::Apply(ready_node("n2", "4")));
        assert!(state.queue.pop(Instant::now()).is_some());
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn namespaces_are_synced_and_label_changes_release_parked_pods() {
        let mut state = synced(vec![ready_node("n1", "1")], vec![pod("p", "2", "")]);
        assert!(!state.synced(), "namespaces not listed yet");
        state.on_namespace_event(Event::Init);
        state.on_namespace_event(Event::InitApply(namespace("team", &[("tier", "gold")])));
        state.on_namespace_event(Event::InitDone);
        assert!(state.synced());
        assert_eq!(state.snapshot.namespace_labels("team")["tier"], "gold");

        let p = state.queue.pop(Instant::now()).unwrap();
        state.queue.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        // Re-applying the same labels changes nothing.
        state.on_namespace_event(Event::Apply(namespace("team", &[("tier", "gold")])));
        assert!(state.queue.pop(Instant::now()).is_none());
        state.on_namespace_event(Event::Apply(namespace("team", &[("tier", "silver")])));
        assert!(state.queue.pop(Instant::now()).is_some());

        // A re-list drops namespaces that are gone.
        state.on_namespace_event(Event::Init);
        state.on_namespace_event(Event::InitDone);
        assert!(state.snapshot.namespace_labels("team").is_empty());
    }

    fn nominated(mut p: Pod, node: &str) -> Pod {
        p.status
            .get_or_insert_with(PodStatus::default)
            .nominated_node_name = Some(node.into());
        p
    }

    #[tokio::test(start_paused = true)]
    async fn nominations_follow_the_pod_status_and_end_with_binding() {
        let mut state = synced(
            vec![ready_node("n1", "2")],
            vec![nominated(pod("p", "1", ""), "n1")],
        );
        assert_eq!(state.snapshot.nomination("default/p"), Some("n1"));
        // An update without the field (e.g. one that predates our write)
        // keeps it.
        state.on_pod_event(Event::Apply(pod("p", "1", "")));
        assert_eq!(state.snapshot.nomination("default/p"), Some("n1"));
        // Binding ends it.
        state.on_pod_event(Event::Apply(bound(pod("p", "1", ""), "n1")));
        assert_eq!(state.snapshot.nomination("default/p"), None);

        // So does assuming it, and deleting it.
        let mut state = synced(
            vec![ready_node("n1", "2")],
            vec![
                nominated(pod("a", "1", ""), "n1"),
                nominated(pod("b", "1", ""), "n1"),
            ],
        );
        let a = state
            .snapshot
            .nominated_pods("n1")
            .find(|p| p.key == "default/a")
            .cloned();
        state.assume(a.unwrap(), "n1");
        assert_eq!(state.snapshot.nomination("default/a"), None);
        state.on_pod_event(Event::Delete(pod("b", "1", "")));
        assert!(!state.snapshot.has_nominations());
    }

    #[tokio::test(start_paused = true)]
    async fn a_preemptor_displaces_lower_priority_nominations() {
        let low = |name: &str, priority| {
            let mut p = nominated(pod(name, "1", ""), "n1");
            p.spec.as_mut().unwrap().priority = Some(priority);
            p
        };
        let mut state = synced(
            vec![ready_node("n1", "2")],
            vec![low("low", 1), low("peer", 10), low("preemptor", 10)],
        );
        // "low" was parked waiting for its own victims.
        while let Some(p) = state.queue.pop(Instant::now()) {
            state.queue.unschedulable(&p.key, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let preemptor = state
            .snapshot
            .nominated_pods("n1")
            .find(|p| p.key == "default/preemptor")
            .cloned()
            .unwrap();
        let displaced = state.nominate(preemptor, "n1");
        let keys: Vec<&str> = displaced.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["default/low"], "equal priority keeps its nomination");
        assert_eq!(state.snapshot.nomination("default/low"), None);
        assert_eq!(state.snapshot.nomination("default/peer"), Some("n1"));
        // The displaced pod is released to look elsewhere.
        let next = state.queue.pop(Instant::now()).unwrap();
        assert_eq!(next.key, "default/low");
        assert!(state.queue.pop(Instant::now()).is_none());
    }

    #[test]
    fn default_config() {
        let c = SchedulerConfig::default();
        assert_eq!(c.scheduler_name, "default-scheduler");
        assert_eq!(c.percentage_of_nodes_to_score, 0);
        assert_eq!(c.bind_timeout, Duration::from_secs(600));
    }

    #[test]
    fn every_watch_must_list_before_scheduling() {
        let mut state = ClusterState::new(DEFAULT_SCHEDULER_NAME.into());
        state.on_node_event(Event::InitDone);
        state.on_pod_event(Event::InitDone);
        state.on_namespace_event(Event::InitDone);
        state.on_claim_event(Event::InitDone);
        state.on_volume_event(Event::InitDone);
        state.on_class_event(Event::InitDone);
        assert!(!state.synced(), "budgets not listed yet");
        state.on_budget_event(Event::InitDone);
        assert!(state.synced());
    }

    /// A parked pod that uses claim `data`.
    async fn parked_claim_user() -> ClusterState {
        let mut state = synced(
            vec![ready_node("n1", "2")],
            vec![pod_with_claims("p", "", &["data"])],
        );
        let p = state.queue.pop(Instant::now()).unwrap();
        state.queue.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        state
    }

    #[tokio::test(start_paused = true)]
    async fn storage_changes_release_parked_pods() {
        // A claim appearing, and changing.
        let mut state = parked_claim_user().await;
        state.on_claim_event(Event::Apply(claim("data", "local", "1Gi")));
        assert!(state.snapshot.volumes().claim("default", "data").is_some());
        let p = state.queue.pop(Instant::now()).unwrap();
        state.queue.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        // The same version again (a re-list) changes nothing.
        state.on_claim_event(Event::Apply(claim("data", "local", "1Gi")));
        assert!(state.queue.pop(Instant::now()).is_none());

        // A volume appearing.
        let mut state = parked_claim_user().await;
        state.on_volume_event(Event::Apply(volume("pv-1", "local", "1Gi", &[])));
        assert!(state.queue.pop(Instant::now()).is_some());

        // A StorageClass appearing; an update that keeps its topology does
        // not count.
        let mut state = parked_claim_user().await;
        state.on_class_event(Event::Apply(class("local", "WaitForFirstConsumer", "x")));
        let p = state.queue.pop(Instant::now()).unwrap();
        state.queue.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut relabelled = class("local", "WaitForFirstConsumer", "x");
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        state.on_class_event(Event::Apply(relabelled));
        assert!(state.queue.pop(Instant::now()).is_none());

        // Budgets never make a pod fit.
        let mut state = parked_claim_user().await;
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": 1},
        }))
        .unwrap();
        state.on_budget_event(Event::Apply(pdb));
        assert_eq!(state.snapshot.budgets().count(), 1);
        assert!(state.queue.pop(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn relists_drop_vanished_storage_objects_and_budgets() {
        let mut state = synced(vec![ready_node("n1", "2")], vec![]);
        state.on_claim_event(Event::Apply(claim("gone", "local", "1Gi")));
        state.on_volume_event(Event::Apply(volume("pv-gone", "local", "1Gi", &[])));
        state.on_class_event(Event::Apply(class("gone", "Immediate", "x")));
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gone", "namespace": "default"},
        }))
        .unwrap();
        state.on_budget_event(Event::Apply(pdb));

        state.on_claim_event(Event::Init);
        state.on_claim_event(Event::InitApply(claim("kept", "local", "1Gi")));
        state.on_claim_event(Event::InitDone);
        state.on_volume_event(Event::Init);
        state.on_volume_event(Event::InitDone);
        state.on_class_event(Event::Init);
        state.on_class_event(Event::InitDone);
        state.on_budget_event(Event::Init);
        state.on_budget_event(Event::InitDone);
        let volumes = state.snapshot.volumes();
        assert_eq!(volumes.claim_keys().collect::<Vec<_>>(), ["default/kept"]);
        assert_eq!(volumes.volume_names().count(), 0);
        assert_eq!(volumes.class_names().count(), 0);
        assert_eq!(state.snapshot.budget_keys().count(), 0);

        // Deletions drop single objects.
        state.on_claim_event(Event::Delete(claim("kept", "local", "1Gi")));
        assert!(state.snapshot.volumes().claim("default", "kept").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_volume_binding_frees_the_volume_and_deletion_stops_the_wait() {
        let mut state = synced(
            vec![ready_node("n1", "2")],
            vec![
                pod_with_claims("first", "", &["data"]),
                pod_with_claims("second", "", &["other"]),
            ],
        );
        state.on_class_event(Event::Apply(class(
            "local",
            "WaitForFirstConsumer",
            "kubernetes.io/no-provisioner",
        )));
        state.on_claim_event(Event::Apply(claim("data", "local", "1Gi")));
        state.on_claim_event(Event::Apply(claim("other", "local", "1Gi")));
        state.on_volume_event(Event::Apply(volume("pv-1", "local", "1Gi", &[])));

        let pop = |state: &mut ClusterState, name: &str| loop {
            let p = state.queue.pop(Instant::now()).unwrap();
            if p.key == format!("default/{name}") {
                break p;
            }
            state.queue.unschedulable(&p.key, Instant::now());
        };
        let p = pop(&mut state, "first");
        let plan = state.plan_volumes(&p, "n1").unwrap().unwrap();
        assert_eq!(plan.bindings.len(), 1);
        state.assume(p.clone(), "n1");
        let cancel = state.assume_volumes(&p.key, plan);
        // The only volume is taken while "first" is being bound.
        let second = pop(&mut state, "second");
        assert_eq!(
            state.plan_volumes(&second, "n1"),
            Err(crate::volume_binding::ERR_BIND_CONFLICT.to_string())
        );
        state.forget(&p.key);
        assert!(state.plan_volumes(&second, "n1").unwrap().is_some());
        assert!(!cancel.is_cancelled());

        // Deleting a pod whose volumes are being bound stops the wait.
        let plan = state.plan_volumes(&second, "n1").unwrap().unwrap();
        state.assume(second.clone(), "n1");
        let cancel = state.assume_volumes(&second.key, plan);
        state.on_pod_event(Event::Delete(pod_with_claims("second", "", &["other"])));
        assert!(cancel.is_cancelled());
        // Its binding task then reports the failure, which frees the volume.
        state.forget(&second.key);
        // Stopping the scheduler stops every wait.
        let plan = state.plan_volumes(&p, "n1").unwrap().unwrap();
        let cancel = state.assume_volumes(&p.key, plan);
        state.prebinding.cancel();
        assert!(cancel.is_cancelled());
    }
}
