//! Node IPAM: gives every Node a pod CIDR of its own.
//!
//! The equivalent of upstream's node-ipam controller with the `RangeAllocator`:
//! the cluster CIDR (default `10.42.0.0/16`, k3s's) is cut into subnets of the
//! node mask size (default `/24`), and each Node without `spec.podCIDR` gets
//! the next free one, written as `spec.podCIDR` and `spec.podCIDRs`. The node
//! agent waits for that field before it writes its CNI config.
//!
//! The table of who holds what lives only in memory and is rebuilt from the
//! Nodes themselves: every (re)list of the watch replaces it with the
//! `spec.podCIDRs` the API reports, so a restarted controller never hands out
//! a subnet twice. Deleting a Node frees its subnets. The API server forbids
//! changing `spec.podCIDR` once set, which is what makes the Nodes a safe
//! record: a write can only fill an empty field.
//!
//! When the range is exhausted the Node gets a `CIDRNotAvailable` event, as
//! upstream records, and it is retried when a subnet is freed and every
//! [`RETRY_INTERVAL`].
//!
//! The work is split in two: [`Reconciler`] folds watch events into the table
//! and decides what to write (no IO, unit tested); [`NodeIpamController`]
//! runs the watch and performs the writes.

mod cidr;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

pub use cidr::{
    AllocatorConfigError, Cidr, CidrAllocator, CidrParseError, DEFAULT_CLUSTER_CIDR, Exhausted,
    MAX_SUBNET_BITS, OccupyError,
};

/// How often Nodes still waiting for a CIDR (range exhausted, or a failed
/// write) are retried, besides right after a subnet is freed.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// The field manager of the controller's writes.
const FIELD_MANAGER: &str = "node-ipam-controller";

/// The component name on the controller's events.
const COMPONENT: &str = "node-ipam-controller";

/// What the controller allocates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// The range all pod CIDRs come from (`--cluster-cidr`).
    pub cluster_cidr: Cidr,
    /// The prefix length of each node's pod CIDR (`--node-cidr-mask-size`).
    pub node_mask_size: u8,
}

impl Default for NodeIpamConfig {
    /// `10.42.0.0/16` cut into `/24`s: 256 nodes of 254 pods each.
    fn default() -> Self {
        Self {
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            node_mask_size: 24,
        }
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIpamError {
    /// The cluster CIDR and mask size do not make a valid range.
    #[error(transparent)]
    Config(#[from] AllocatorConfigError),
    /// The Node watch ended, which a backed-off watch never does on its own.
    #[error("the Node watch ended")]
    WatchEnded,
}

/// What the [`Reconciler`] wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `cidr` as the node's `spec.podCIDR` and `spec.podCIDRs`.
    Assign {
        /// The Node.
        node: String,
        /// Its new pod CIDR.
        cidr: Cidr,
    },
    /// The range is exhausted and the node has just started waiting: tell
    /// the user with an event.
    Exhausted {
        /// The Node.
        node: String,
        /// Its uid, for the event's reference.
        uid: Option<String>,
    },
}

/// How a write of an [`Action::Assign`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignOutcome {
    /// The Node now has the CIDR.
    Written,
    /// The Node no longer exists.
    NotFound,
    /// Any other failure; the node is retried.
    Failed,
}

/// Why a node is waiting for a CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Exhausted,
    WriteFailed,
}

/// What the reconciler knows of one Node.
#[derive(Debug, Clone, Default)]
struct NodeEntry {
    uid: Option<String>,
    /// `spec.podCIDRs` (or `spec.podCIDR` when the list is empty).
    pod_cidrs: Vec<String>,
}

impl NodeEntry {
    fn of(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let mut pod_cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if pod_cidrs.is_empty() {
            pod_cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        pod_cidrs.retain(|c| !c.is_empty());
        Self {
            uid: node.metadata.uid.clone(),
            pod_cidrs,
        }
    }
}

/// The allocation table and the Nodes it was built from, updated by watch
/// events. Pure: it returns [`Action`]s and is told how they ended.
#[derive(Debug)]
pub struct Reconciler {
    allocator: CidrAllocator,
    nodes: BTreeMap<String, NodeEntry>,
    /// Nodes listed since the last `Init`, while a (re)list is under way.
    relist: Option<BTreeMap<String, NodeEntry>>,
    /// Whether a complete list has been seen; nothing is allocated before,
    /// since a Node not yet listed may hold any subnet.
    synced: bool,
    waiting: BTreeMap<String, Wait>,
}

impl Reconciler {
    /// A reconciler that has seen no Node yet.
    pub fn new(config: &NodeIpamConfig) -> Result<Self, AllocatorConfigError> {
        Ok(Self {
            allocator: CidrAllocator::new(config.cluster_cidr, config.node_mask_size)?,
            nodes: BTreeMap::new(),
            relist: None,
            synced: false,
            waiting: BTreeMap::new(),
        })
    }

    /// The allocation table.
    pub fn allocator(&self) -> &CidrAllocator {
        &self.allocator
    }

    /// Folds one watch event in and returns what to write.
    pub fn on_event(&mut self, event: Event<Node>) -> Vec<Action> {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(node) => {
                self.relist
                    .get_or_insert_default()
                    .insert(node.name_any(), NodeEntry::of(&node));
                Vec::new()
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                self.rebuild(listed);
                self.synced = true;
                let missing: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(_, entry)| entry.pod_cidrs.is_empty())
                    .map(|(name, _)| name.clone())
                    .collect();
                missing
                    .into_iter()
                    .filter_map(|name| self.reconcile(&name))
                    .collect()
            }
            Event::Apply(node) => self.on_apply(&node).into_iter().collect(),
            Event::Delete(node) => self.on_delete(&node.name_any()),
        }
    }

    /// Records how an [`Action::Assign`] write ended.
    pub fn on_assign_outcome(&mut self, node: &str, cidr: Cidr, outcome: AssignOutcome) {
        match outcome {
            AssignOutcome::Written => {
                self.waiting.remove(node);
                if let Some(entry) = self.nodes.get_mut(node) {
                    entry.pod_cidrs = vec![cidr.to_string()];
                }
            }
            AssignOutcome::NotFound => {
                self.allocator.release(node);
                self.nodes.remove(node);
                self.waiting.remove(node);
            }
            AssignOutcome::Failed => {
                // The Node's own spec stays the record: free the subnet and
                // let a retry (or the watch, if someone else filled the
                // field) settle it.
                self.allocator.release(node);
                self.waiting.insert(node.to_string(), Wait::WriteFailed);
            }
        }
    }

    /// Retries every node waiting for a CIDR.
    pub fn retry(&mut self) -> Vec<Action> {
        let waiting: Vec<String> = self.waiting.keys().cloned().collect();
        waiting
            .into_iter()
            .filter_map(|name| self.reconcile(&name))
            .collect()
    }

    /// Whether some node waits for a retry.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn rebuild(&mut self, listed: BTreeMap<String, NodeEntry>) {
        self.allocator.clear();
        for (name, entry) in &listed {
            occupy_all(&mut self.allocator, name, &entry.pod_cidrs);
        }
        self.waiting.retain(|name, _| listed.contains_key(name));
        self.nodes = listed;
    }

    fn on_apply(&mut self, node: &Node) -> Option<Action> {
        let name = node.name_any();
        let entry = NodeEntry::of(node);
        let known = self.nodes.get(&name);
        if entry.pod_cidrs.is_empty() && known.is_some_and(|k| !k.pod_cidrs.is_empty()) {
            // `spec.podCIDR` cannot be unset, so this event predates the one
            // that set it (our own write raced it).
            return None;
        }
        if !entry.pod_cidrs.is_empty() {
            let unchanged = known.is_some_and(|k| k.pod_cidrs == entry.pod_cidrs);
            if !unchanged {
                self.allocator.release(&name);
                occupy_all(&mut self.allocator, &name, &entry.pod_cidrs);
            }
            self.waiting.remove(&name);
            self.nodes.insert(name, entry);
            return None;
        }
        self.nodes.insert(name.clone(), entry);
        if self.synced {
            self.reconcile(&name)
        } else {
            None
        }
    }

    fn on_delete(&mut self, name: &str) -> Vec<Action> {
        self.nodes.remove(name);
        self.waiting.remove(name);
        let freed = self.allocator.release(name);
        if freed.is_empty() || !self.synced {
            return Vec::new();
        }
        tracing::info!(
            node = name,
            ?freed,
            "released the pod CIDRs of a deleted node"
        );
        // A freed subnet may be what an exhausted node waits for.
        self.retry()
    }

    /// What to do for `name` if it still lacks a pod CIDR.
    fn reconcile(&mut self, name: &str) -> Option<Action> {
        let Some(entry) = self.nodes.get(name) else {
            self.waiting.remove(name);
            return None;
        };
        if !entry.pod_cidrs.is_empty() {
            self.waiting.remove(name);
            return None;
        }
        let uid = entry.uid.clone();
        match self.allocator.allocate(name) {
            Ok(cidr) => Some(Action::Assign {
                node: name.to_string(),
                cidr,
            }),
            Err(exhausted) => {
                let previous = self.waiting.insert(name.to_string(), Wait::Exhausted);
                if previous == Some(Wait::Exhausted) {
                    return None;
                }
                tracing::warn!(node = name, "{exhausted}");
                Some(Action::Exhausted {
                    node: name.to_string(),
                    uid,
                })
            }
        }
    }
}

/// Records every CIDR of a node in `allocator`. Overlaps need an operator
/// and are warned about; a range outside the cluster CIDR was assigned by
/// someone else (hollow nodes bring their own) and is merely not managed.
fn occupy_all(allocator: &mut CidrAllocator, node: &str, pod_cidrs: &[String]) {
    for raw in pod_cidrs {
        let cidr = match raw.parse::<Cidr>() {
            Ok(cidr) => cidr,
            Err(error) => {
                tracing::warn!(node, pod_cidr = %raw, %error, "not recording a node's pod CIDR");
                continue;
            }
        };
        match allocator.occupy(node, cidr) {
            Ok(()) => {}
            Err(error @ OccupyError::OutsideCluster { .. }) => {
                tracing::debug!(node, %error, "not managing a node's pod CIDR");
            }
            Err(error) => {
                tracing::warn!(node, %error, "not recording a node's pod CIDR");
            }
        }
    }
}

/// The node IPAM controller: a watch of Nodes feeding a [`Reconciler`], and
/// the writes it asks for.
pub struct NodeIpamController {
    client: Client,
    reconciler: Reconciler,
}

impl NodeIpamController {
    /// A controller allocating from `config` through `client`.
    pub fn new(client: Client, config: &NodeIpamConfig) -> Result<Self, NodeIpamError> {
        Ok(Self {
            client,
            reconciler: Reconciler::new(config)?,
        })
    }

    /// Runs until `shutdown` is cancelled. Watch errors are retried with
    /// client-go's default backoff; failed writes are retried every
    /// [`RETRY_INTERVAL`].
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), NodeIpamError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let recorder = EventRecorder::new(self.client.clone(), COMPONENT, "");
        let mut events =
            skiff_client::watch::cache_feed(nodes.clone(), watcher::Config::default()).boxed();
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            cluster_cidr = %self.reconciler.allocator().cluster(),
            node_mask_size = self.reconciler.allocator().node_mask(),
            "node IPAM controller started"
        );
        loop {
            let actions = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                event = events.next() => match event {
                    None => return Err(NodeIpamError::WatchEnded),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "watching Nodes");
                        continue;
                    }
                    Some(Ok(event)) => self.reconciler.on_event(event),
                },
                _ = retry.tick(), if self.reconciler.has_waiting() => self.reconciler.retry(),
            };
            for action in actions {
                self.perform(&nodes, &recorder, action).await;
            }
        }
    }

    async fn perform(&mut self, nodes: &Api<Node>, recorder: &EventRecorder, action: Action) {
        match action {
            Action::Assign { node, cidr } => {
                let outcome = assign(nodes, &node, cidr).await;
                match outcome {
                    AssignOutcome::Written => {
                        tracing::info!(node, %cidr, "assigned pod CIDR");
                    }
                    AssignOutcome::NotFound => {}
                    AssignOutcome::Failed => {
                        let uid = self.reconciler.nodes.get(&node).and_then(|e| e.uid.clone());
                        recorder.record(
                            &node_reference(&node, uid),
                            EventType::Normal,
                            "CIDRAssignmentFailed",
                            &format!("Node {node} status is now: CIDRAssignmentFailed"),
                        );
                    }
                }
                self.reconciler.on_assign_outcome(&node, cidr, outcome);
            }
            Action::Exhausted { node, uid } => recorder.record(
                &node_reference(&node, uid),
                EventType::Normal,
                "CIDRNotAvailable",
                &format!("Node {node} status is now: CIDRNotAvailable"),
            ),
        }
    }
}

/// Writes `cidr` into the Node's spec. A merge patch: the fields are empty
/// before, and the API server rejects a change of a set `spec.podCIDR`, so
/// this can never move a node's range.
async fn assign(nodes: &Api<Node>, node: &str, cidr: Cidr) -> AssignOutcome {
    let patch = serde_json::json!({
        "spec": { "podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()] }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match nodes.patch(node, &params, &Patch::Merge(&patch)).await {
        Ok(_) => AssignOutcome::Written,
        Err(kube::Error::Api(status)) if status.code == 404 => AssignOutcome::NotFound,
        Err(error) => {
            tracing::warn!(node, %cidr, %error, "writing a node's pod CIDR");
            AssignOutcome::Failed
        }
    }
}

/// The reference an event about Node `name` points at.
fn node_reference(name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.to_string()),
        uid,
        ..ObjectReference::default()
    }
}

/// Runs the node IPAM controller until `shutdown` is cancelled; see
/// [`NodeIpamController`].
pub async fn run(
    client: Client,
    config: NodeIpamConfig,
    shutdown: CancellationToken,
) -> Result<(), NodeIpamError> {
    NodeIpamController::new(client, &config)?
        .run(shutdown)
        .await
}

#[cfg(test)]
mod tests;
