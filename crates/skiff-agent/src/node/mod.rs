//! The node's registration, heartbeat and status: what upstream's kubelet
//! does in `kubelet_node_status.go` and its node lease controller.
//!
//! [`NodeAgent::run`] registers the Node (or adopts an existing one, keeping
//! what others set on it, such as `spec.podCIDR`), then every
//! `heartbeat_interval`:
//!
//! - renews the Lease `kube-node-lease/<node>`, the cheap heartbeat the node
//!   lifecycle controller watches (`holderIdentity` = node name,
//!   `leaseDurationSeconds`, `renewTime`, owned by the Node so it goes with
//!   it);
//! - computes the status ([`status`]) and patches it when it changed, when
//!   the API shows other conditions (the node lifecycle controller marks a
//!   silent node Unknown), or at least every [`STATUS_REPORT_INTERVAL`]. Upstream's
//!   `nodeStatusReportFrequency` is 5 minutes; Skiff reports every minute so
//!   that `lastHeartbeatTime` in `kubectl describe node` stays recent.
//!
//! API errors in the loop are logged, and a failed or hung renewal (given
//! [`RENEW_TIMEOUT`]) is retried after a back-off from 200 ms to 7 s instead
//! of a whole interval, as upstream's lease controller does: four missed
//! renewals make the node Unknown. A node agent must outlive an API server
//! restart.

pub mod host;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, ObjectReference, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use skiff_client::events::{EventRecorder, EventType};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use host::{FakeHost, HostError, HostInfo, LinuxHost, MachineInfo, Usage};
pub use status::{KUBELET_VERSION, NodeResources};

/// The namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The longest a status may go unreported when nothing changes.
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// The field manager of the agent's writes, upstream's.
const FIELD_MANAGER: &str = "kubelet";

/// Registration retries back off from this...
const REGISTER_BACKOFF_START: Duration = Duration::from_millis(100);
/// ...to this, as upstream's kubelet does.
const REGISTER_BACKOFF_MAX: Duration = Duration::from_secs(7);

/// The longest one Lease renewal may take before it counts as failed.
pub const RENEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed renewals are retried after this...
const RENEW_RETRY_START: Duration = Duration::from_millis(200);
/// ...doubling up to this.
const RENEW_RETRY_MAX: Duration = Duration::from_secs(7);

/// What the agent reports about its node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name (and `kubernetes.io/hostname`).
    pub name: String,
    /// `status.addresses`, e.g. InternalIP and Hostname.
    pub addresses: Vec<NodeAddress>,
    /// The kubelet API port, reported as `daemonEndpoints.kubeletEndpoint`.
    pub kubelet_port: u16,
    /// Labels beyond the well-known ones, e.g.
    /// `node-role.kubernetes.io/control-plane`.
    pub labels: BTreeMap<String, String>,
    /// Taints the Node is registered with (only when it is created, as
    /// upstream's `--register-with-taints`).
    pub taints: Vec<Taint>,
    /// The agent's data dir; its filesystem is the node's ephemeral storage.
    pub data_dir: PathBuf,
    /// Capacity `pods`.
    pub max_pods: u32,
    /// `nodeInfo.containerRuntimeVersion`, e.g. `containerd://1.6.20`.
    pub runtime_version: String,
    /// The Lease's `leaseDurationSeconds` (upstream: 40).
    pub lease_duration_seconds: i32,
    /// How often the Lease is renewed and the status computed (upstream: 10 s).
    pub heartbeat_interval: Duration,
}

/// Why the node agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The host's facts could not be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Shutdown was requested before the wait ended.
    #[error("shut down while waiting for {what}")]
    Cancelled {
        /// What was awaited.
        what: &'static str,
    },
    /// A watch ended, which a backed-off watch never does on its own.
    #[error("the watch of Node {node} ended")]
    WatchEnded {
        /// The Node.
        node: String,
    },
}

/// The node's capacity and allocatable resources as the agent reports them;
/// pods see allocatable as the default of their `resourceFieldRef` limits.
pub fn resources(
    host: &dyn HostInfo,
    max_pods: u32,
) -> Result<(NodeResources, NodeResources), HostError> {
    let capacity = NodeResources::capacity(&host.machine()?, &host.usage()?, max_pods);
    Ok((capacity, capacity.allocatable()))
}

/// Registers the node and keeps its Lease and status current.
pub struct NodeAgent {
    client: kube::Client,
    config: NodeConfig,
    host: Arc<dyn HostInfo>,
}

impl NodeAgent {
    /// An agent reporting `host` as the Node `config.name`.
    pub fn new(client: kube::Client, config: NodeConfig, host: Arc<dyn HostInfo>) -> Self {
        Self {
            client,
            config,
            host,
        }
    }

    /// Registers the Node, then renews its Lease and reports its status
    /// until `shutdown`. Fails only when the host cannot be read at start.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), NodeError> {
        let machine = self.host.machine()?;
        let Some(node) = self.register(&machine, &shutdown).await else {
            return Ok(());
        };
        tracing::info!(node = self.config.name, "node registered");
        let events = NodeEvents::new(&self.client, &self.config.name);
        events.record("Starting", "Starting kubelet.");
        let mut lease = LeaseKeeper::new(&self.client, &self.config, node_owner(&node));
        let mut reporter = StatusReporter {
            nodes: Api::all(self.client.clone()),
            previous: node.status.and_then(|s| s.conditions).unwrap_or_default(),
            last_report: None,
            events,
        };
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = RENEW_RETRY_START;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let now = Timestamp::now();
            let failure = match tokio::time::timeout(RENEW_TIMEOUT, lease.renew(now)).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no answer within {RENEW_TIMEOUT:?}")),
            };
            match failure {
                None => retry = RENEW_RETRY_START,
                Some(error) => {
                    tracing::warn!(node = self.config.name, %error, ?retry, "renewing the node lease");
                    tick.reset_after(retry.min(self.config.heartbeat_interval));
                    retry = (retry * 2).min(RENEW_RETRY_MAX);
                }
            }
            match self.host.usage() {
                Ok(usage) => {
                    let status = status::node_status(
                        &self.config,
                        &machine,
                        &usage,
                        &reporter.previous,
                        now,
                    );
                    reporter.report(&self.config.name, status).await;
                }
                Err(error) => {
                    tracing::warn!(node = self.config.name, %error, "reading host usage");
                }
            }
        }
    }

    /// Waits until the Node has `spec.podCIDR` (set by the node IPAM
    /// controller) and returns it, e.g. `10.42.3.0/24`.
    pub async fn wait_for_pod_cidr(
        client: &kube::Client,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Result<String, NodeError> {
        let nodes: Api<Node> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher::watcher(nodes, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    return Err(NodeError::Cancelled { what: "the node's pod CIDR" });
                }
                event = events.next() => match event {
                    None => return Err(NodeError::WatchEnded { node: name.to_string() }),
                    Some(Err(error)) => tracing::warn!(node = name, %error, "watching the node"),
                    Some(Ok(node)) => {
                        if let Some(cidr) = pod_cidr(&node) {
                            return Ok(cidr);
                        }
                    }
                },
            }
        }
    }

    /// Creates the Node or adopts an existing one, retrying with backoff;
    /// `None` when shut down first.
    async fn register(&self, machine: &MachineInfo, shutdown: &CancellationToken) -> Option<Node> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let labels = status::labels(&self.config, &machine.architecture);
        let mut backoff = REGISTER_BACKOFF_START;
        loop {
            match register_once(&nodes, &self.config, &labels).await {
                Ok(node) => return Some(node),
                Err(error) => {
                    tracing::warn!(node = self.config.name, %error, "registering the node");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(REGISTER_BACKOFF_MAX);
        }
    }
}

/// The Node's `spec.podCIDR`, when set.
fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

/// One registration attempt: create, or on `AlreadyExists` adopt.
async fn register_once(
    nodes: &Api<Node>,
    config: &NodeConfig,
    labels: &BTreeMap<String, String>,
) -> Result<Node, kube::Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match nodes.create(&params, &initial_node(config, labels)).await {
        Err(kube::Error::Api(status)) if status.code == 409 => adopt(nodes, config, labels).await,
        other => other,
    }
}

/// The Node as first created: labels and taints, no status (the first
/// report follows at once).
fn initial_node(config: &NodeConfig, labels: &BTreeMap<String, String>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// Takes over an existing Node of this name. Only labels are reconciled
/// (added or corrected, never removed); the spec, with `podCIDR`, taints and
/// `unschedulable` that others may have set, is left alone.
async fn adopt(
    nodes: &Api<Node>,
    config: &NodeConfig,
    labels: &BTreeMap<String, String>,
) -> Result<Node, kube::Error> {
    let existing = nodes.get(&config.name).await?;
    let missing = missing_labels(existing.metadata.labels.as_ref(), labels);
    if missing.is_empty() {
        return Ok(existing);
    }
    let patch = serde_json::json!({ "metadata": { "labels": missing } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    nodes
        .patch(&config.name, &params, &Patch::Merge(&patch))
        .await
}

/// The entries of `wanted` that `existing` lacks or holds another value for.
fn missing_labels(
    existing: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    wanted
        .iter()
        .filter(|(k, v)| existing.and_then(|e| e.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The owner reference that ties the node's Lease to the Node.
fn node_owner(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// Patches the Node's status when it carries news.
struct StatusReporter {
    nodes: Api<Node>,
    /// The conditions last reported, for transition times.
    previous: Vec<NodeCondition>,
    /// The last report without heartbeat times, and when it was made.
    last_report: Option<(NodeStatus, Instant)>,
    /// Where condition changes are told, as upstream's kubelet tells them.
    events: NodeEvents,
}

/// Events about this Node, under the kubelet's name.
struct NodeEvents {
    recorder: EventRecorder,
    node: ObjectReference,
}

impl NodeEvents {
    fn new(client: &kube::Client, name: &str) -> Self {
        Self {
            recorder: EventRecorder::new(client.clone(), "kubelet", name),
            // Upstream's kubelet names its Node with the node name as UID.
            node: ObjectReference {
                kind: Some("Node".into()),
                name: Some(name.into()),
                uid: Some(name.into()),
                ..ObjectReference::default()
            },
        }
    }

    fn record(&self, reason: &str, message: &str) {
        self.recorder
            .record(&self.node, EventType::Normal, reason, message);
    }
}

impl StatusReporter {
    async fn report(&mut self, name: &str, status: NodeStatus) {
        let news = status::without_heartbeats(&status);
        let due = self
            .last_report
            .as_ref()
            .is_none_or(|(last, at)| *last != news || at.elapsed() >= STATUS_REPORT_INTERVAL);
        if !due && self.api_agrees(name, &status).await {
            return;
        }
        // Strategic merge: conditions and addresses merge by `type`, so
        // conditions other components own (NetworkUnavailable, ...) survive.
        let patch = serde_json::json!({ "status": status });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match self
            .nodes
            .patch_status(name, &params, &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                let conditions = status.conditions.unwrap_or_default();
                for reason in status::transition_events(&self.previous, &conditions) {
                    self.events
                        .record(reason, &format!("Node {name} status is now: {reason}"));
                }
                self.previous = conditions;
                self.last_report = Some((news, Instant::now()));
            }
            Err(error) => tracing::warn!(node = name, %error, "reporting node status"),
        }
    }
}

impl StatusReporter {
    /// True unless the API shows conditions other than ours, as after the
    /// node lifecycle controller marked the node Unknown while it was cut
    /// off; upstream's kubelet compares with the API on every sync, too.
    async fn api_agrees(&self, name: &str, status: &NodeStatus) -> bool {
        let Ok(node) = self.nodes.get_status(name).await else {
            // Unreadable: the next report is still due by the interval.
            return true;
        };
        let shown = node.status.and_then(|s| s.conditions).unwrap_or_default();
        status::conditions_agree(status.conditions.as_deref().unwrap_or_default(), &shown)
    }
}

/// Renews the node's Lease, creating it when missing.
struct LeaseKeeper {
    leases: Api<Lease>,
    node: String,
    duration_seconds: i32,
    owner: Option<OwnerReference>,
    /// The Lease as last written: renewing it is one PUT, with a GET only
    /// after a conflict (as upstream's lease controller does).
    cached: Option<Lease>,
}

impl LeaseKeeper {
    fn new(client: &kube::Client, config: &NodeConfig, owner: Option<OwnerReference>) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            node: config.name.clone(),
            duration_seconds: config.lease_duration_seconds,
            owner,
            cached: None,
        }
    }

    async fn renew(&mut self, now: Timestamp) -> Result<(), kube::Error> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        if let Some(cached) = self.cached.take() {
            match self
                .leases
                .replace(&self.node, &params, &self.renewed(cached, now))
                .await
            {
                Ok(lease) => {
                    self.cached = Some(lease);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(error) => return Err(error),
            }
        }
        let lease = match self.leases.get_opt(&self.node).await? {
            Some(existing) => {
                self.leases
                    .replace(&self.node, &params, &self.renewed(existing, now))
                    .await?
            }
            None => {
                let fresh = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.node.clone()),
                        namespace: Some(NODE_LEASE_NAMESPACE.into()),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                };
                self.leases
                    .create(&params, &self.renewed(fresh, now))
                    .await?
            }
        };
        self.cached = Some(lease);
        Ok(())
    }

    /// `lease` held by this node and renewed at `now`.
    fn renewed(&self, mut lease: Lease, now: Timestamp) -> Lease {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.node.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        if let Some(owner) = &self.owner {
            let owners = lease.metadata.owner_references.get_or_insert_default();
            if !owners.iter().any(|o| o.uid == owner.uid) {
                owners.push(owner.clone());
            }
        }
        lease
    }
}

#[cfg(test)]
mod tests;
