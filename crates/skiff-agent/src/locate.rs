//! Finding a pod's containers on this node, for the streaming and log APIs.
//!
//! The kubelet API (logs, exec, attach, port-forward) addresses pods by
//! namespace and name; the runtime wants container ids, log files and network
//! namespaces. The pod manager knows both and answers through this trait, so
//! the HTTP side can be tested against a fixed table.

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;

/// A pod that has a sandbox on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedPod {
    /// The pod's uid.
    pub uid: String,
    /// The CRI sandbox id.
    pub sandbox_id: String,
    /// The sandbox's network namespace (`/var/run/netns/...`), if it has its
    /// own; `None` for host-network pods.
    pub netns_path: Option<PathBuf>,
    /// The pod's IP, once networking is up.
    pub pod_ip: Option<IpAddr>,
    /// Its containers (init, sidecar and app), in spec order.
    pub containers: Vec<LocatedContainer>,
}

/// One container of a [`LocatedPod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedContainer {
    /// The container's name in the pod spec.
    pub name: String,
    /// The CRI id of its current instance, if one was created.
    pub id: Option<String>,
    /// Whether the current instance is running.
    pub running: bool,
    /// The current instance's log file, if one was created.
    pub log_path: Option<PathBuf>,
    /// The log file of the instance before the current one (`--previous`).
    pub previous_log_path: Option<PathBuf>,
}

/// Looks pods up by namespace and name.
#[async_trait]
pub trait PodLocator: Send + Sync {
    /// The pod `namespace/name`, if it has a sandbox on this node.
    async fn pod(&self, namespace: &str, name: &str) -> Option<LocatedPod>;

    /// Whether the container with this CRI id is still running (log
    /// followers stop when it is not).
    async fn container_running(&self, container_id: &str) -> bool;
}
