//! Hollow nodes: simulated nodes that run nothing, like upstream's kubemark
//! hollow kubelet.
//!
//! **A simulation.** Hollow nodes exist only for scale benchmarks and for
//! scheduler and controller tests. They register real Node objects, renew
//! real Leases and report pods Running, but no container, image, volume,
//! network or probe exists behind any of it. Never use them where a test
//! asserts that containers really run: use the node agent (`skiff-agent`)
//! there.
//!
//! # What one process simulates
//!
//! [`HollowCluster::start`] (or [`run`], for a binary) registers
//! [`HollowConfig::nodes`] Nodes named `{prefix}-0`, `{prefix}-1`, ... and
//! then, like a kubelet per node:
//!
//! - registers the Node: labels `kubernetes.io/hostname`,
//!   `kubernetes.io/os=linux`, `kubernetes.io/arch` and
//!   [`HOLLOW_LABEL`]`=true`; the configured capacity and allocatable;
//!   conditions MemoryPressure, DiskPressure and PIDPressure False and Ready
//!   True; a fake InternalIP; `nodeInfo.kubeletVersion`
//!   [`HOLLOW_KUBELET_VERSION`] (see [`node`]);
//! - renews its Lease in `kube-node-lease` every `heartbeat_interval`
//!   (10 s), spread over the interval, and reports its status every
//!   `status_report_interval` (5 minutes) or when the API shows another;
//! - reports every pod bound to it Running at once, with a fake pod IP;
//!   completes Never/OnFailure pods after `complete_after` when set; and
//!   finishes the deletion of pods being deleted.
//!
//! The addresses are fake and route nowhere (see [`config`]); `kubectl
//! logs`, `exec` and port-forward cannot work, since no kubelet API serves
//! them.
//!
//! # Scale
//!
//! One process serves thousands of nodes and tens of thousands of pods:
//! one watch of all bound pods and one of all hollow Nodes (never one per
//! node), heartbeats spread over the interval, and bounded concurrency for
//! node writes (`heartbeat_concurrency`) and pod writes (`pod_concurrency`),
//! so a burst of bindings never holds up a Lease renewal and slow writes
//! never hold up the watches.
//!
//! # Tests
//!
//! A test keeps the [`HollowCluster`] handle to stop one node's heartbeats
//! ([`HollowCluster::stop_heartbeat`]) and watch the node lifecycle
//! controller declare it NotReady:
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), skiff_hollow::HollowError> {
//! use skiff_hollow::{HollowCluster, HollowConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = HollowConfig { nodes: 3, ..HollowConfig::default() };
//! let cluster = HollowCluster::start(client, config, CancellationToken::new())?;
//! cluster.stop_heartbeat("hollow-node-1");
//! // ... assert hollow-node-1 becomes NotReady ...
//! cluster.shutdown().await
//! # }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod node;
mod nodes;
mod pods;
mod queue;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

pub use config::{
    ConfigError, HOLLOW_KUBELET_VERSION, HOLLOW_LABEL, HollowConfig, MAX_NODES, default_resources,
};

/// The field manager of every hollow node write, as a kubelet's.
const FIELD_MANAGER: &str = "hollow-kubelet";

/// Why hollow nodes could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HollowError {
    /// The config is invalid; nothing was started.
    #[error("invalid hollow node config")]
    Config(#[from] ConfigError),
    /// A watch ended, which a backed-off watch never does on its own.
    #[error("the watch of {resource} ended")]
    WatchEnded {
        /// `pods` or `nodes`.
        resource: &'static str,
    },
    /// One of the tasks panicked.
    #[error("a hollow node task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs hollow nodes as `config` describes until `shutdown`. API errors are
/// logged and retried; what ends the run early is an invalid config or a
/// failed task.
pub async fn run(
    client: kube::Client,
    config: HollowConfig,
    shutdown: CancellationToken,
) -> Result<(), HollowError> {
    HollowCluster::start(client, config, shutdown)?.wait().await
}

/// Running hollow nodes. They stop when `shutdown` (given to
/// [`start`](Self::start)) is cancelled, on [`shutdown`](Self::shutdown), or
/// when the handle is dropped. Nodes and Leases stay in the API, as a
/// stopped kubelet's do.
pub struct HollowCluster {
    nodes: Arc<nodes::Nodes>,
    /// The heartbeat loop and the two watches.
    tasks: Vec<JoinHandle<Result<(), HollowError>>>,
    /// Heartbeats, pod workers and timers.
    tracker: TaskTracker,
    cancel: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl HollowCluster {
    /// Starts the nodes: registration, heartbeats and the pod watch begin at
    /// once, in the background. Fails only on an invalid config. Must be
    /// called within a Tokio runtime.
    pub fn start(
        client: kube::Client,
        config: HollowConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, HollowError> {
        let pods_per_node = config.validate()?;
        let cancel = shutdown.child_token();
        let tracker = TaskTracker::new();
        let nodes = Arc::new(nodes::Nodes::new(&client, config, pods_per_node));
        let pods = Arc::new(pods::Pods::new(
            client,
            Arc::clone(&nodes),
            tracker.clone(),
            cancel.clone(),
        ));
        tracing::info!(
            nodes = nodes.config.nodes,
            prefix = nodes.config.name_prefix,
            "starting hollow (simulated) nodes"
        );
        let tasks = vec![
            tokio::spawn(Arc::clone(&nodes).heartbeats(tracker.clone(), cancel.clone())),
            tokio::spawn(Arc::clone(&nodes).watch(cancel.clone())),
            tokio::spawn(pods.run()),
        ];
        Ok(Self {
            nodes,
            tasks,
            tracker,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
        })
    }

    /// The node names, `{prefix}-0` first.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.names()
    }

    /// Stops node `name`'s heartbeats (Lease renewals and status reports),
    /// as if its kubelet hung; false if there is no such node. A heartbeat
    /// already in flight still lands.
    pub fn stop_heartbeat(&self, name: &str) -> bool {
        self.nodes.set_paused(name, true)
    }

    /// Resumes node `name`'s heartbeats; its status is reported at the next
    /// one. False if there is no such node.
    pub fn resume_heartbeat(&self, name: &str) -> bool {
        self.nodes.set_paused(name, false)
    }

    /// Waits until the nodes stop: at shutdown, or when a task fails (which
    /// stops the others).
    pub async fn wait(self) -> Result<(), HollowError> {
        let cancel = self.cancel.clone();
        let results = futures::future::join_all(self.tasks.into_iter().map(|task| {
            let cancel = cancel.clone();
            async move {
                let result = task.await.map_err(HollowError::Task).and_then(|r| r);
                if result.is_err() {
                    cancel.cancel();
                }
                result
            }
        }))
        .await;
        self.tracker.close();
        self.tracker.wait().await;
        results.into_iter().collect()
    }

    /// Stops the nodes and waits for their tasks to end.
    pub async fn shutdown(self) -> Result<(), HollowError> {
        self.cancel.cancel();
        self.wait().await
    }
}
