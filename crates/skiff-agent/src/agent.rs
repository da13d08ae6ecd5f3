//! The whole node agent: runtime, node registration, pod network, pods and
//! the kubelet API, started in that order and stopped together.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::NodeAddress;
use skiff_client::events::EventRecorder;
use skiff_cri::{CriClient, RuntimeService};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterDns, SandboxContext};
use crate::containerd::{Binaries, Containerd, ContainerdConfig};
use crate::downward::NodeAllocatable;
use crate::logs::{LogRotator, RotationPolicy};
use crate::network::PodNetwork;
use crate::node::{HostInfo, LinuxHost, NodeAgent, NodeConfig};
use crate::pods::{PodManager, PodManagerConfig};
use crate::server::KubeletServerConfig;
use crate::volumes::{LinuxMounter, TokenManager, VolumeManager};

/// Pods per node, upstream's default.
const MAX_PODS: u32 = 110;

/// How often container logs are checked for rotation (upstream: 10 s).
const LOG_ROTATION_PERIOD: Duration = Duration::from_secs(10);

/// How long containerd may take to open its socket.
const CONTAINERD_READY: Duration = Duration::from_secs(30);

/// Everything the agent is told at start.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The agent's own directory (`DATA/agent`): containerd, pods, logs,
    /// airgap images.
    pub dir: PathBuf,
    /// The node's name.
    pub node_name: String,
    /// The node's address, reported as InternalIP and used as `hostIP`.
    pub node_ip: IpAddr,
    /// An existing CRI socket to use instead of a private containerd.
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Where the kubelet API listens.
    pub kubelet_listen: SocketAddr,
    /// PEM: the kubelet API's serving certificate, its key, and the CA its
    /// clients (the API server) must be signed by.
    pub kubelet_cert_pem: String,
    /// See `kubelet_cert_pem`.
    pub kubelet_key_pem: String,
    /// See `kubelet_cert_pem`.
    pub client_ca_pem: String,
    /// Node labels beyond the well-known ones.
    pub labels: BTreeMap<String, String>,
    /// The cluster DNS service, when there is one.
    pub cluster_dns: Option<ClusterDns>,
    /// Linux bridge for pod networking.
    pub bridge: String,
    /// The whole cluster's pod network (`--cluster-cidr`): traffic inside it
    /// keeps pod addresses, and other nodes' pod subnets are routed.
    pub cluster_cidr: ipnet::Ipv4Net,
    /// Whether this node's local-path provisioner also takes claims of
    /// Immediate-binding classes (the server's own node only).
    pub provision_immediate: bool,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The private containerd failed.
    #[error(transparent)]
    Containerd(#[from] crate::containerd::ContainerdError),
    /// The airgap images could not be written.
    #[error(transparent)]
    Images(#[from] crate::images::ImageError),
    /// CRI failed.
    #[error(transparent)]
    Cri(#[from] skiff_cri::CriError),
    /// Node registration or heartbeat failed for good.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// The kubelet API could not be served.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// The pod egress masquerade could not be programmed.
    #[error(transparent)]
    Egress(#[from] crate::network::egress::EgressError),
    /// The routes to other nodes' pods could not be removed.
    #[error("removing the pod routes: {0}")]
    Routes(#[from] crate::network::routes::RouteError),
    /// A file or directory of the agent could not be written.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("agent task failed: {0}")]
    Task(String),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

/// Runs the agent until `shutdown`. Pods keep running after it returns.
pub async fn run(
    options: AgentOptions,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let (socket, containerd) = match &options.container_runtime_endpoint {
        Some(socket) => (socket.clone(), None),
        None => {
            prepare_netns_dir()?;
            let containerd = start_containerd(&options.dir).await?;
            (containerd.address().to_path_buf(), Some(containerd))
        }
    };
    let cri = Arc::new(CriClient::connect(&socket).await?);
    let version = wait_for_cri(cri.as_ref()).await?;
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);

    let host: Arc<dyn HostInfo> = Arc::new(LinuxHost::new(options.dir.clone()));
    let node_config = NodeConfig {
        name: options.node_name.clone(),
        addresses: vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: options.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: options.node_name.clone(),
            },
        ],
        kubelet_port: options.kubelet_listen.port(),
        labels: options.labels.clone(),
        taints: Vec::new(),
        data_dir: options.dir.clone(),
        max_pods: MAX_PODS,
        runtime_version,
        lease_duration_seconds: 40,
        heartbeat_interval: Duration::from_secs(10),
    };
    let node = NodeAgent::new(client.clone(), node_config, host.clone());
    let node_task = tokio::spawn(node.run(shutdown.child_token()));

    let pod_cidr = match NodeAgent::wait_for_pod_cidr(&client, &options.node_name, &shutdown).await
    {
        Ok(cidr) => cidr,
        // Stopped before the node got a pod CIDR: nothing to run yet.
        Err(crate::node::NodeError::Cancelled { .. }) => {
            node_task
                .await
                .map_err(|e| AgentError::Task(e.to_string()))??;
            return stop_containerd(containerd).await;
        }
        Err(e) => return Err(e.into()),
    };
    let network = PodNetwork {
        pod_cidr: pod_cidr.to_string(),
        bridge: options.bridge.clone(),
        ipam_dir: options.dir.join("cni/ipam"),
    };
    let cni_conf_dir = containerd.as_ref().map_or_else(
        || PathBuf::from("/etc/cni/net.d"),
        |c| c.config().cni_conf_dir.clone(),
    );
    network.install(&cni_conf_dir).map_err(io_error(format!(
        "writing the CNI config in {}",
        cni_conf_dir.display()
    )))?;
    crate::network::egress::install(options.cluster_cidr)?;
    let pod_routes = crate::network::routes::run(
        client.clone(),
        options.node_name.clone(),
        options.node_ip,
        Arc::new(crate::network::routes::IpRouteCommand::default()),
        shutdown.child_token(),
    );

    let recorder = EventRecorder::new(client.clone(), "kubelet", &options.node_name);
    let client_for_static_pods = client.clone();
    let provisioner = crate::provisioner::run(
        client.clone(),
        crate::provisioner::ProvisionerConfig {
            immediate: options.provision_immediate,
            ..crate::provisioner::ProvisionerConfig::new(
                options.node_name.clone(),
                options.dir.join("storage"),
            )
        },
        shutdown.child_token(),
    );
    let volumes = VolumeManager::new(options.dir.join("pods"), Arc::new(LinuxMounter))
        .with_tokens(TokenManager::new(client.clone()));
    let manager_config = PodManagerConfig {
        node_name: options.node_name.clone(),
        host_ips: vec![options.node_ip],
        sandbox: SandboxContext {
            node_name: options.node_name.clone(),
            log_root: options.dir.join("logs"),
            cluster_dns: options.cluster_dns.clone(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            cgroup_parent_root: "/kubepods".into(),
        },
        node_allocatable: node_allocatable(host.as_ref())?,
        pods_dir: options.dir.join("pods"),
    };
    let runtime: Arc<dyn RuntimeService> = cri.clone();
    let runtime_for_logs = runtime.clone();
    let manager = PodManager::new(
        manager_config,
        client,
        runtime.clone(),
        cri,
        volumes,
        recorder,
    );
    let locator = manager.locator();
    let server = crate::server::serve(
        KubeletServerConfig {
            listen: options.kubelet_listen,
            serving_cert_pem: options.kubelet_cert_pem.clone(),
            serving_key_pem: options.kubelet_key_pem.clone(),
            client_ca_pem: options.client_ca_pem.clone(),
        },
        locator.clone(),
        crate::streaming::router(locator, runtime),
        shutdown.child_token(),
    );
    let static_pods = crate::static_pods::StaticPods::new(
        client_for_static_pods,
        options.node_name.clone(),
        options.dir.join("pod-manifests"),
    )
    .run(shutdown.child_token());
    let pods = manager.run(shutdown.child_token());
    let rotator = LogRotator::new(runtime_for_logs, RotationPolicy::default());
    let rotation = rotator.run(LOG_ROTATION_PERIOD, shutdown.child_token());
    let (served, (), (), (), (), (), node) = tokio::join!(
        server,
        pods,
        rotation,
        static_pods,
        provisioner,
        pod_routes,
        node_task
    );
    shutdown.cancel();
    stop_containerd(containerd).await?;
    served?;
    node.map_err(|e| AgentError::Task(e.to_string()))??;
    Ok(())
}

/// The node's allocatable resources, for downward API values of containers
/// without limits.
fn node_allocatable(host: &dyn HostInfo) -> Result<NodeAllocatable, AgentError> {
    let (_, allocatable) = crate::node::resources(host, MAX_PODS)
        .map_err(|e| AgentError::Node(crate::node::NodeError::Host(e)))?;
    Ok(NodeAllocatable {
        cpu_millis: allocatable.cpu_millis,
        memory_bytes: allocatable.memory_bytes,
        ephemeral_storage_bytes: allocatable.ephemeral_storage_bytes,
    })
}

async fn stop_containerd(containerd: Option<Containerd>) -> Result<(), AgentError> {
    if let Some(containerd) = containerd {
        tokio::task::spawn_blocking(move || {
            containerd.shutdown(crate::containerd::DEFAULT_STOP_TIMEOUT)
        })
        .await
        .map_err(|e| AgentError::Task(e.to_string()))??;
    }
    Ok(())
}

/// Waits until the runtime's CRI service answers: containerd accepts
/// connections before its CRI plugin has initialized, and answers
/// `Unknown: server is not initialized yet` until then.
async fn wait_for_cri(
    cri: &CriClient,
) -> Result<skiff_cri::v1::VersionResponse, skiff_cri::CriError> {
    let deadline = tokio::time::Instant::now() + CONTAINERD_READY;
    loop {
        match cri.version(skiff_cri::v1::VersionRequest::default()).await {
            Ok(version) => return Ok(version),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "waiting for the CRI service");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Makes `/run/netns` removal-safe before the private containerd mounts pod
/// network namespaces there (see [`crate::network::netns_dir`]).
fn prepare_netns_dir() -> Result<(), AgentError> {
    use crate::network::netns_dir::{NETNS_DIR, Preparation, prepare};

    match prepare(Path::new(NETNS_DIR)).map_err(io_error(format!("preparing {NETNS_DIR}")))? {
        Preparation::LeftAlone { mounted } => tracing::warn!(
            mounted,
            "{NETNS_DIR} is not a mount point but holds network namespaces; a later \
             `ip netns add` would make their pods impossible to remove"
        ),
        Preparation::Mounted => tracing::debug!("{NETNS_DIR} made a shared mount point"),
        Preparation::AlreadyMountPoint => {}
    }
    Ok(())
}

/// Writes the built-in images into the airgap dir, starts the private
/// containerd and imports every tarball there.
async fn start_containerd(dir: &Path) -> Result<Containerd, AgentError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let images = dir.join("images");
        crate::images::write_airgap_images(&images, &crate::images::HostTools::default())?;
        let config = ContainerdConfig::new(&dir.join("containerd"));
        let containerd = Containerd::start(config, &Binaries::default(), CONTAINERD_READY)?;
        containerd.import_dir(&images)?;
        Ok(containerd)
    })
    .await
    .map_err(|e| AgentError::Task(e.to_string()))?
}

/// Stops and removes every pod the agent in `dir` started, then stops its
/// containerd, unmounts what it mounted and deletes its bridge, as k3s's
/// `killall` script does. For uninstalling, and for tests cleaning up after
/// themselves. Idempotent.
pub async fn killall(dir: &Path) -> Result<(), AgentError> {
    let containerd = if dir.join("containerd").exists() {
        let dir = dir.to_path_buf();
        let started = tokio::task::spawn_blocking(move || {
            let config = ContainerdConfig::new(&dir.join("containerd"));
            Containerd::start(config, &Binaries::default(), CONTAINERD_READY)
        })
        .await
        .map_err(|e| AgentError::Task(e.to_string()))??;
        Some(started)
    } else {
        None
    };
    // Every sandbox is tried and the rest of the cleanup still runs when one
    // fails; the first failure is reported at the end.
    let removed = match &containerd {
        Some(containerd) => remove_sandboxes(containerd.address()).await,
        None => Ok(()),
    };
    stop_containerd(containerd).await?;
    unmount_below(dir)?;
    crate::network::egress::remove()?;
    crate::network::routes::remove_all(&crate::network::routes::IpRouteCommand::default())?;
    if let Some(bridge) = installed_bridge(dir) {
        // Gone already is fine; anything else is worth a warning only.
        let status = std::process::Command::new("ip")
            .args(["link", "delete", &bridge])
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(e) = status {
            tracing::warn!(bridge, error = %e, "cannot run `ip link delete`");
        }
    }
    removed
}

/// Stops and removes every pod sandbox of the runtime at `socket`, going on
/// past failures; returns the first.
async fn remove_sandboxes(socket: &Path) -> Result<(), AgentError> {
    let cri = CriClient::connect(socket).await?;
    wait_for_cri(&cri).await?;
    let sandboxes = cri
        .list_pod_sandbox(skiff_cri::v1::ListPodSandboxRequest::default())
        .await?
        .items;
    let mut first_failure = None;
    for sandbox in sandboxes {
        let id = sandbox.id;
        let removed = async {
            cri.stop_pod_sandbox(skiff_cri::v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            cri.remove_pod_sandbox(skiff_cri::v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .map(drop)
        }
        .await;
        if let Err(error) = removed {
            tracing::warn!(sandbox = id, %error, "cannot remove a pod sandbox");
            first_failure.get_or_insert(error);
        }
    }
    first_failure.map_or(Ok(()), |e| Err(e.into()))
}

/// The bridge named in the agent's installed CNI config, if any.
fn installed_bridge(dir: &Path) -> Option<String> {
    let conf_dir = ContainerdConfig::new(&dir.join("containerd")).cni_conf_dir;
    let text = std::fs::read_to_string(conf_dir.join(crate::network::CONFLIST_NAME)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .pointer("/plugins/0/bridge")
        .and_then(|b| b.as_str())
        .map(str::to_string)
}

/// Unmounts every mount point at or below `dir`, deepest first.
fn unmount_below(dir: &Path) -> Result<(), AgentError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_error("reading /proc/self/mountinfo"))?;
    let mut targets: Vec<PathBuf> = crate::volumes::mount::mount_points(&mountinfo)
        .filter(|target| target.starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.components().count()));
    for target in targets {
        if let Err(e) = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(target = %target.display(), error = %e, "unmount failed");
        }
    }
    Ok(())
}
