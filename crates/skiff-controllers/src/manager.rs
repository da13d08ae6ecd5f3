//! The controller manager: every controller of this crate over one set of
//! shared informers, as `kube-controller-manager` runs them.

use futures::FutureExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::daemonset::{self, DaemonSetConfig};
use crate::informer::InformerFactory;
use crate::node_ipam::{self, NodeIpamConfig, NodeIpamError};
use crate::replicaset::{self, ReplicaSetConfig};

/// Every controller's configuration.
#[derive(Debug, Clone, Default)]
pub struct ControllerManagerConfig {
    /// Node IPAM (`--cluster-cidr`).
    pub node_ipam: NodeIpamConfig,
    /// ReplicaSets.
    pub replicaset: ReplicaSetConfig,
    /// DaemonSets.
    pub daemonset: DaemonSetConfig,
}

/// Why the controller manager stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerManagerError {
    /// Node IPAM failed.
    #[error("node IPAM controller")]
    NodeIpam(#[from] NodeIpamError),
}

/// Runs every controller until `shutdown`.
pub async fn run(
    client: Client,
    config: ControllerManagerConfig,
    shutdown: CancellationToken,
) -> Result<(), ControllerManagerError> {
    let mut factory = InformerFactory::new(client.clone());
    let controllers = [
        replicaset::start(
            &mut factory,
            client.clone(),
            config.replicaset,
            shutdown.child_token(),
        )
        .boxed(),
        daemonset::start(
            &mut factory,
            client.clone(),
            config.daemonset,
            shutdown.child_token(),
        )
        .boxed(),
    ];
    let informers = factory.run(shutdown.child_token());
    let ipam = node_ipam::run(client, config.node_ipam, shutdown.child_token());
    let controllers = async {
        tokio::join!(informers, futures::future::join_all(controllers));
    };
    // Node IPAM only returns early on failure, which stops the manager.
    tokio::select! {
        result = ipam => result?,
        () = controllers => {}
    }
    Ok(())
}
