//! The controller manager: every controller of this crate over one set of
//! shared informers, as `kube-controller-manager` runs them.

use futures::FutureExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::cronjob::{self, CronJobConfig};
use crate::daemonset::{self, DaemonSetConfig};
use crate::deployment::{self, DeploymentConfig};
use crate::disruption::{self, DisruptionConfig};
use crate::endpoints::{self, EndpointsConfig};
use crate::endpointslice::{self, EndpointSliceConfig};
use crate::garbagecollector::{self, GarbageCollectorConfig};
use crate::informer::InformerFactory;
use crate::job::{self, JobConfig};
use crate::namespace::{self, NamespaceConfig};
use crate::node_ipam::{self, NodeIpamConfig, NodeIpamError};
use crate::node_lifecycle::{self, NodeLifecycleConfig};
use crate::persistentvolume::{self, PersistentVolumeConfig};
use crate::replicaset::{self, ReplicaSetConfig};
use crate::resourcequota::{self, ResourceQuotaConfig};
use crate::service_lb::{self, ServiceLbConfig};
use crate::serviceaccount::{self, RootCaConfig, ServiceAccountConfig};
use crate::statefulset::{self, StatefulSetConfig};
use crate::volume_protection::{self, VolumeProtectionConfig};

/// Every controller's configuration.
#[derive(Debug, Clone, Default)]
pub struct ControllerManagerConfig {
    /// Node IPAM (`--cluster-cidr`).
    pub node_ipam: NodeIpamConfig,
    /// Node health, taints and taint-based eviction.
    pub node_lifecycle: NodeLifecycleConfig,
    /// ReplicaSets.
    pub replicaset: ReplicaSetConfig,
    /// DaemonSets.
    pub daemonset: DaemonSetConfig,
    /// Deployments.
    pub deployment: DeploymentConfig,
    /// StatefulSets.
    pub statefulset: StatefulSetConfig,
    /// Jobs.
    pub job: JobConfig,
    /// CronJobs.
    pub cronjob: CronJobConfig,
    /// ResourceQuota usage.
    pub resourcequota: ResourceQuotaConfig,
    /// PodDisruptionBudget status.
    pub disruption: DisruptionConfig,
    /// EndpointSlices of Services.
    pub endpointslice: EndpointSliceConfig,
    /// Legacy Endpoints of Services.
    pub endpoints: EndpointsConfig,
    /// ServiceAccounts every namespace gets.
    pub serviceaccount: ServiceAccountConfig,
    /// Node addresses for LoadBalancer Services (k3s's servicelb).
    pub service_lb: ServiceLbConfig,
    /// The cluster CA published as `kube-root-ca.crt` in every namespace;
    /// `None` publishes nothing.
    pub root_ca: Option<RootCaConfig>,
    /// The garbage collector (ownerReferences); `enabled: false` turns it
    /// off.
    pub garbage_collector: GarbageCollectorConfig,
    /// Emptying deleted namespaces.
    pub namespace: NamespaceConfig,
    /// Binding PersistentVolumeClaims to PersistentVolumes.
    pub persistentvolume: PersistentVolumeConfig,
    /// The `pvc-protection` and `pv-protection` finalizers.
    pub volume_protection: VolumeProtectionConfig,
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
    let mut controllers = vec![
        node_lifecycle::start(
            &mut factory,
            client.clone(),
            config.node_lifecycle,
            shutdown.child_token(),
        )
        .boxed(),
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
        deployment::start(
            &mut factory,
            client.clone(),
            config.deployment,
            shutdown.child_token(),
        )
        .boxed(),
        statefulset::start(
            &mut factory,
            client.clone(),
            config.statefulset,
            shutdown.child_token(),
        )
        .boxed(),
        job::start(
            &mut factory,
            client.clone(),
            config.job,
            shutdown.child_token(),
        )
        .boxed(),
        job::ttl::start(&mut factory, client.clone(), shutdown.child_token()).boxed(),
        cronjob::start(
            &mut factory,
            client.clone(),
            config.cronjob,
            shutdown.child_token(),
        )
        .boxed(),
        resourcequota::start(
            &mut factory,
            client.clone(),
            config.resourcequota,
            shutdown.child_token(),
        )
        .boxed(),
        disruption::start(
            &mut factory,
            client.clone(),
            config.disruption,
            shutdown.child_token(),
        )
        .boxed(),
        endpointslice::start(
            &mut factory,
            client.clone(),
            config.endpointslice,
            shutdown.child_token(),
        )
        .boxed(),
        endpoints::start(
            &mut factory,
            client.clone(),
            config.endpoints,
            shutdown.child_token(),
        )
        .boxed(),
        serviceaccount::start(
            &mut factory,
            client.clone(),
            config.serviceaccount,
            shutdown.child_token(),
        )
        .boxed(),
        garbagecollector::start(
            client.clone(),
            config.garbage_collector,
            shutdown.child_token(),
        )
        .boxed(),
        namespace::start(
            &mut factory,
            client.clone(),
            config.namespace,
            shutdown.child_token(),
        )
        .boxed(),
    ];
    if let Some(root_ca) = config.root_ca {
        controllers.push(
            serviceaccount::start_root_ca_publisher(
                &mut factory,
                client.clone(),
                root_ca,
                shutdown.child_token(),
            )
            .boxed(),
        );
    }
    if config.persistentvolume.enabled {
        controllers.push(
            persistentvolume::start(
                &mut factory,
                client.clone(),
                config.persistentvolume,
                shutdown.child_token(),
            )
            .boxed(),
        );
    }
    controllers.push(
        volume_protection::start(
            &mut factory,
            client.clone(),
            config.volume_protection,
            shutdown.child_token(),
        )
        .boxed(),
    );
    if config.service_lb.enabled {
        controllers
            .push(service_lb::start(&mut factory, client.clone(), shutdown.child_token()).boxed());
    }
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
