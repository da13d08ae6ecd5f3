//! Registering the hollow Nodes and keeping them alive: the node half of a
//! kubelet, for thousands of nodes in one process.
//!
//! Each node, at each heartbeat:
//!
//! 1. registers its Node if it is not known to exist (at start, or after
//!    someone deleted it), adopting one that already exists;
//! 2. renews its Lease in `kube-node-lease` (one PUT of the Lease as last
//!    written; a GET only after a conflict, as upstream's lease controller);
//! 3. reports its status when due: every `status_report_interval`, or
//!    sooner when the Node as the API shows it says something else (say the
//!    node lifecycle controller set Ready=Unknown while heartbeats were
//!    paused). One watch of all hollow Nodes tells.
//!
//! # Spreading the load
//!
//! 5,000 nodes renewing every 10 s is 500 writes a second; done at once it
//! would be a burst of 5,000 every 10 s. The interval is cut into up to
//! [`MAX_SLOTS`] slots and each node renews in its own slot
//! ([`heartbeat_slots`]), with at most `heartbeat_concurrency` writes in
//! flight. A node whose previous heartbeat is still in flight skips a turn
//! rather than piling up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HOLLOW_LABEL, HollowConfig};
use crate::node::{self, NODE_LEASE_NAMESPACE};
use crate::{FIELD_MANAGER, HollowError};

/// The most slots one heartbeat interval is cut into (every 100 ms at the
/// default 10 s).
pub const MAX_SLOTS: usize = 100;

/// The slots of one heartbeat interval: how long each lasts, and which
/// nodes renew in each. Node `i` of `nodes` is in slot `i * slots / nodes`,
/// so slots differ by at most one node.
pub fn heartbeat_slots(nodes: usize, interval: Duration) -> (Duration, Vec<Vec<usize>>) {
    let slots = nodes.clamp(1, MAX_SLOTS);
    let mut table = vec![Vec::new(); slots];
    for index in 0..nodes {
        table[index * slots / nodes].push(index);
    }
    let count = u32::try_from(slots).expect("at most MAX_SLOTS");
    (interval / count, table)
}

/// The hollow nodes of one set.
pub struct Nodes {
    pub(crate) config: HollowConfig,
    /// Pods each node admits (its allocatable `pods`).
    pub(crate) pods_per_node: u32,
    nodes: Vec<HollowNode>,
    by_name: HashMap<String, usize>,
    api: Api<Node>,
    leases: Api<Lease>,
    /// Bounds node writes in flight.
    writes: Semaphore,
}

/// One hollow node.
struct HollowNode {
    name: String,
    /// Heartbeats stopped by a test.
    paused: AtomicBool,
    /// A heartbeat is in flight.
    busy: AtomicBool,
    state: Mutex<NodeState>,
}

/// What a node knows of its API objects. Never locked across an await.
#[derive(Default)]
struct NodeState {
    /// The Node's uid; `None` until registered, and again once the Node is
    /// gone.
    uid: Option<String>,
    /// The Lease as last written.
    lease: Option<Lease>,
    /// The Node's conditions as last seen, for transition times.
    conditions: Vec<NodeCondition>,
    /// Report the status at the next heartbeat, whether due or not.
    report_now: bool,
    /// When the status was last reported.
    last_report: Option<Instant>,
}

impl Nodes {
    /// The nodes of a validated `config`, each admitting `pods_per_node`.
    pub fn new(client: &kube::Client, config: HollowConfig, pods_per_node: u32) -> Self {
        let nodes: Vec<HollowNode> = (0..config.nodes)
            .map(|index| HollowNode {
                name: config.node_name(index),
                paused: AtomicBool::new(false),
                busy: AtomicBool::new(false),
                state: Mutex::new(NodeState::default()),
            })
            .collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.name.clone(), index))
            .collect();
        Self {
            writes: Semaphore::new(config.heartbeat_concurrency),
            config,
            pods_per_node,
            nodes,
            by_name,
            api: Api::all(client.clone()),
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        }
    }

    /// The index of the node called `name`, if it is one of ours.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The node names, in index order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// Stops or resumes the heartbeats (Lease and status) of node `name`;
    /// false if there is no such node. A heartbeat already in flight still
    /// lands. Resuming reports the status at the next heartbeat.
    pub fn set_paused(&self, name: &str, paused: bool) -> bool {
        let Some(index) = self.index(name) else {
            return false;
        };
        let node = &self.nodes[index];
        node.paused.store(paused, Ordering::SeqCst);
        if !paused {
            node.lock().report_now = true;
        }
        true
    }

    /// Beats every node once at once (registering them), then each in its
    /// slot of every heartbeat interval, until `shutdown`. Beats run on
    /// `tracker`.
    pub async fn heartbeats(
        self: Arc<Self>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), HollowError> {
        for index in 0..self.nodes.len() {
            self.spawn_beat(index, &tracker);
        }
        let (period, slots) = heartbeat_slots(self.nodes.len(), self.config.heartbeat_interval);
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for slot in slots.iter().cycle() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            for &index in slot {
                self.spawn_beat(index, &tracker);
            }
        }
        Ok(())
    }

    /// Starts a heartbeat of node `index`, unless it is paused or its last
    /// one is still in flight.
    fn spawn_beat(self: &Arc<Self>, index: usize, tracker: &TaskTracker) {
        let node = &self.nodes[index];
        if node.paused.load(Ordering::SeqCst) || node.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let nodes = Arc::clone(self);
        tracker.spawn(async move {
            nodes.beat(index).await;
            nodes.nodes[index].busy.store(false, Ordering::SeqCst);
        });
    }

    /// One heartbeat of node `index`. Errors are logged; the next heartbeat
    /// retries.
    async fn beat(&self, index: usize) {
        let Ok(_permit) = self.writes.acquire().await else {
            return;
        };
        let node = &self.nodes[index];
        let registered = node.lock().uid.is_some();
        if !registered && let Err(error) = self.register(index).await {
            tracing::warn!(node = node.name, %error, "registering a hollow node");
            return;
        }
        if let Err(error) = self.renew_lease(index).await {
            tracing::warn!(node = node.name, %error, "renewing a hollow node's lease");
        }
        let due = {
            let state = node.lock();
            state.report_now
                || state
                    .last_report
                    .is_none_or(|at| at.elapsed() >= self.config.status_report_interval)
        };
        if due && let Err(error) = self.report_status(index).await {
            tracing::warn!(node = node.name, %error, "reporting a hollow node's status");
        }
    }

    /// Creates Node `index`, or adopts an existing one (adding any missing
    /// label; its spec stays as others set it).
    async fn register(&self, index: usize) -> Result<(), kube::Error> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let wanted = node::node(&self.config, index);
        let registered = match self.api.create(&params, &wanted).await {
            Err(kube::Error::Api(status)) if status.code == 409 => self.adopt(&wanted).await?,
            other => other?,
        };
        let mut state = self.nodes[index].lock();
        if state.uid != registered.metadata.uid {
            // A new Node: the old Lease's owner is gone.
            state.lease = None;
        }
        state.uid = registered.metadata.uid;
        state.conditions = conditions_of(registered.status.as_ref());
        state.report_now = true;
        tracing::debug!(node = self.nodes[index].name, "hollow node registered");
        Ok(())
    }

    async fn adopt(&self, wanted: &Node) -> Result<Node, kube::Error> {
        let name = wanted.metadata.name.as_deref().unwrap_or_default();
        let existing = self.api.get(name).await?;
        let have = existing.metadata.labels.clone().unwrap_or_default();
        let missing: serde_json::Map<String, serde_json::Value> = wanted
            .metadata
            .labels
            .iter()
            .flatten()
            .filter(|(key, value)| have.get(*key) != Some(*value))
            .map(|(key, value)| (key.clone(), value.clone().into()))
            .collect();
        if missing.is_empty() {
            return Ok(existing);
        }
        let patch = serde_json::json!({ "metadata": { "labels": missing } });
        self.api
            .patch(name, &self.patch_params(), &Patch::Merge(&patch))
            .await
    }

    /// Renews node `index`'s Lease, creating it if missing.
    async fn renew_lease(&self, index: usize) -> Result<(), kube::Error> {
        let node = &self.nodes[index];
        let (cached, owner) = {
            let mut state = node.lock();
            let owner = state
                .uid
                .as_deref()
                .map(|uid| node::node_owner(&node.name, uid));
            (state.lease.take(), owner)
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let renewed = |lease| {
            node::renewed_lease(
                lease,
                &node.name,
                self.config.lease_duration_seconds,
                owner.as_ref(),
                Timestamp::now(),
            )
        };
        let mut written = None;
        if let Some(cached) = cached {
            match self
                .leases
                .replace(&node.name, &params, &renewed(cached))
                .await
            {
                Ok(lease) => written = Some(lease),
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(error) => return Err(error),
            }
        }
        let lease = match written {
            Some(lease) => lease,
            None => match self.leases.get_opt(&node.name).await? {
                Some(existing) => {
                    self.leases
                        .replace(&node.name, &params, &renewed(existing))
                        .await?
                }
                None => {
                    self.leases
                        .create(&params, &renewed(Lease::default()))
                        .await?
                }
            },
        };
        node.lock().lease = Some(lease);
        Ok(())
    }

    /// Reports node `index`'s status (strategic merge: conditions others
    /// own survive). A missing Node is registered at the next heartbeat.
    async fn report_status(&self, index: usize) -> Result<(), kube::Error> {
        let node = &self.nodes[index];
        let previous = node.lock().conditions.clone();
        let status = node::status(&self.config, index, &previous, Timestamp::now());
        let patch = serde_json::json!({ "status": status });
        match self
            .api
            .patch_status(&node.name, &self.patch_params(), &Patch::Strategic(&patch))
            .await
        {
            Ok(written) => {
                let mut state = node.lock();
                state.conditions = conditions_of(written.status.as_ref());
                state.report_now = false;
                state.last_report = Some(Instant::now());
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                node.lock().uid = None;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn patch_params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        }
    }

    /// Watches the hollow Nodes (of every set: they share the label) until
    /// `shutdown`, noting Nodes that were deleted or whose conditions
    /// differ from what their node reports. A Node deleted while the watch
    /// was down is found by its next status report (a 404).
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), HollowError> {
        let config = watcher::Config::default().labels(&format!("{HOLLOW_LABEL}=true"));
        let mut events = skiff_client::watch::cache_feed(self.api.clone(), config).boxed();
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                event = events.next() => event,
            };
            match event {
                None => return Err(HollowError::WatchEnded { resource: "nodes" }),
                Some(Err(error)) => tracing::warn!(%error, "watching hollow nodes"),
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Ok(Event::InitApply(node) | Event::Apply(node))) => self.observe(&node),
                Some(Ok(Event::Delete(node))) => {
                    let index = node.metadata.name.as_deref().and_then(|n| self.index(n));
                    if let Some(index) = index {
                        let mut state = self.nodes[index].lock();
                        if state.uid == node.metadata.uid {
                            state.uid = None;
                        }
                    }
                }
            }
        }
    }

    /// Notes what the API shows of one of our Nodes.
    fn observe(&self, observed: &Node) {
        let Some(index) = observed
            .metadata
            .name
            .as_deref()
            .and_then(|n| self.index(n))
        else {
            return;
        };
        let conditions = conditions_of(observed.status.as_ref());
        let mut state = self.nodes[index].lock();
        if state.uid.is_some() && state.uid != observed.metadata.uid {
            // Recreated by someone else: ours now, with a new Lease owner.
            state.uid.clone_from(&observed.metadata.uid);
            state.lease = None;
        }
        if !node::conditions_current(&conditions) {
            state.report_now = true;
        }
        state.conditions = conditions;
    }
}

impl HollowNode {
    fn lock(&self) -> MutexGuard<'_, NodeState> {
        // Never poisoned: nothing panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The conditions of a Node's status.
fn conditions_of(status: Option<&k8s_openapi::api::core::v1::NodeStatus>) -> Vec<NodeCondition> {
    status
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_spread_over_the_interval() {
        let interval = Duration::from_secs(10);
        let (period, slots) = heartbeat_slots(5_000, interval);
        assert_eq!(slots.len(), MAX_SLOTS);
        assert_eq!(period, Duration::from_millis(100));
        assert!(slots.iter().all(|s| s.len() == 50));
        // Every node once, in index order.
        let all: Vec<usize> = slots.concat();
        assert_eq!(all, (0..5_000).collect::<Vec<_>>());
    }

    #[test]
    fn uneven_counts_differ_by_at_most_one() {
        let (_, slots) = heartbeat_slots(1_234, Duration::from_secs(10));
        let sizes: Vec<usize> = slots.iter().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert_eq!((min, max), (Some(&12), Some(&13)));
        assert_eq!(sizes.iter().sum::<usize>(), 1_234);
        assert_eq!(slots.concat(), (0..1_234).collect::<Vec<_>>());
    }

    #[test]
    fn few_nodes_get_a_slot_each() {
        let (period, slots) = heartbeat_slots(3, Duration::from_secs(9));
        assert_eq!(period, Duration::from_secs(3));
        assert_eq!(slots, [vec![0], vec![1], vec![2]]);
        let (period, slots) = heartbeat_slots(1, Duration::from_secs(10));
        assert_eq!(period, Duration::from_secs(10));
        assert_eq!(slots, [vec![0]]);
    }
}
