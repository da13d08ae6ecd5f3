//! A pod, translated into the CRI requests that run it.
//!
//! Pure functions over the pod and what the agent knows about the node: the
//! pod worker feeds them the pod, the resolved environment and the volume
//! mounts, and sends what they return to the runtime. The only IO is reading
//! the host's resolv.conf for DNS. Upstream's kubelet rules are the spec
//! (`kuberuntime_sandbox.go`, `kuberuntime_container*.go`, `labels.go`,
//! `network/dns`, `qos/policy.go`, `cm/helpers_linux.go`).
//!
//! - [`sandbox_config`], [`container_config`]: the CRI configs.
//! - [`resolve_env`]: a container's environment (reads ConfigMaps/Secrets,
//!   and Services for the docker-links variables, see [`service_env`]).
//! - [`qos_class`], [`oom_score_adj`], [`dns_config`],
//!   [`hostname_and_domain`], [`etc_hosts`]: the rules they are built from,
//!   for the status and the pod's files.

mod dns;
mod env;
mod hosts;
mod qos;
mod resources;
mod security;
pub mod service_env;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxPodSandboxConfig, Mount, PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};

pub use dns::dns_config;
pub use env::{EnvError, expand, resolve_env};
pub use hosts::{etc_hosts, hostname_and_domain};
pub use qos::{QosClass, qos_class};
pub use resources::{linux_resources, milli_cpu_to_quota, milli_cpu_to_shares, oom_score_adj};

/// Label naming the pod's uid on sandboxes and containers (the agent finds
/// its pods in the runtime by it).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label naming the pod.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label naming the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label naming the container.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Annotation carrying the container's restart count.
pub const RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation carrying the container's `terminationMessagePath`.
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Where a container's termination message is read from when its spec
/// names no `terminationMessagePath` (upstream's default).
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Annotation carrying the container's `terminationMessagePolicy`.
pub const TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation carrying the pod's `terminationGracePeriodSeconds`.
pub const TERMINATION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Annotation carrying the pod's `deletionGracePeriodSeconds`.
pub const DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation carrying the container's preStop handler as JSON.
pub const PRE_STOP_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
/// Annotation carrying the container's ports as JSON.
pub const PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

/// Why a pod cannot be turned into runtime config. The pod worker reports
/// it as `CreateContainerConfigError` (containers) or a failed sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The pod has no metadata.uid (the API server always sets one).
    #[error("pod has no uid")]
    MissingUid,
    /// A resource quantity in the spec does not parse.
    #[error("invalid quantity {value:?} for {resource}")]
    InvalidQuantity {
        /// `cpu`, `memory`...
        resource: String,
        /// The text that failed.
        value: String,
    },
    /// `spec.dnsPolicy` is not one upstream knows.
    #[error("invalid DNSPolicy={0}")]
    InvalidDnsPolicy(String),
    /// The host's resolv.conf could not be read.
    #[error("reading DNS resolver config {}: {message}", path.display())]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The IO error.
        message: String,
    },
    /// The pod's host name, subdomain or FQDN is not valid (upstream's
    /// message).
    #[error("{0}")]
    InvalidHostname(String),
    /// The pod asks for something this agent does not do.
    #[error("{0}")]
    Unsupported(String),
}

/// The cluster DNS service pods use under `dnsPolicy: ClusterFirst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// DNS server addresses (the `kube-dns` Service's ClusterIP).
    pub servers: Vec<String>,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
}

/// What sandbox config needs besides the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxContext {
    /// The node's name.
    pub node_name: String,
    /// Root of the pods' log directories (`DATA/logs`).
    pub log_root: PathBuf,
    /// The cluster DNS, if there is one.
    pub cluster_dns: Option<ClusterDns>,
    /// The host's resolv.conf, the base of every pod's DNS config.
    pub host_resolv_conf: PathBuf,
    /// The cgroup every pod goes under, e.g. `/kubepods`.
    pub cgroup_parent_root: String,
}

impl SandboxContext {
    /// The cluster domain (empty without a cluster DNS, as upstream's
    /// kubelet has it without `--cluster-domain`).
    pub fn cluster_domain(&self) -> &str {
        self.cluster_dns.as_ref().map_or("", |d| d.domain.as_str())
    }
}

/// What container config needs besides the pod and the container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerContext<'a> {
    /// How many times the container was restarted (the CRI `attempt`).
    pub restart_count: u32,
    /// The image id (or reference) to run.
    pub image_ref: &'a str,
    /// The resolved environment ([`resolve_env`]).
    pub env: Vec<KeyValue>,
    /// The volume mounts (and `/etc/hosts`, see [`etc_hosts`]).
    pub mounts: Vec<Mount>,
}

fn uid(pod: &Pod) -> Result<&str, ConfigError> {
    pod.metadata
        .uid
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or(ConfigError::MissingUid)
}

/// The directory of the pod's container logs:
/// `LOG_ROOT/NAMESPACE_NAME_UID`.
pub fn log_directory(log_root: &Path, pod: &Pod) -> Result<PathBuf, ConfigError> {
    Ok(log_root.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
        uid(pod)?
    )))
}

/// The labels that tie a sandbox or container to its pod.
fn identity_labels(pod: &Pod) -> Result<HashMap<String, String>, ConfigError> {
    Ok(HashMap::from([
        (POD_UID_LABEL.to_string(), uid(pod)?.to_string()),
        (
            POD_NAME_LABEL.to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        (
            POD_NAMESPACE_LABEL.to_string(),
            pod.metadata.namespace.clone().unwrap_or_default(),
        ),
    ]))
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's cgroup: Guaranteed pods directly under the root, the others
/// under `burstable/` or `besteffort/` (upstream's cgroupfs layout).
pub fn cgroup_parent(pod: &Pod, root: &str) -> Result<String, ConfigError> {
    let uid = uid(pod)?;
    let root = root.trim_end_matches('/');
    Ok(match qos_class(pod) {
        QosClass::Guaranteed => format!("{root}/pod{uid}"),
        QosClass::Burstable => format!("{root}/burstable/pod{uid}"),
        QosClass::BestEffort => format!("{root}/besteffort/pod{uid}"),
    })
}

fn protocol(name: Option<&str>) -> Protocol {
    match name {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// The sandbox config of the pod's `attempt`-th sandbox.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    ctx: &SandboxContext,
) -> Result<PodSandboxConfig, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    // Only ports with a host port need the runtime (the portmap plugin).
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| PortMapping {
            protocol: protocol(p.protocol.as_deref()) as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(identity_labels(pod)?);
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid(pod)?.to_string(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hosts::kernel_hostname(pod, ctx.cluster_domain())?
        },
        log_directory: log_directory(&ctx.log_root, pod)?
            .to_string_lossy()
            .into_owned(),
        dns_config: Some(dns_config(pod, ctx)?),
        port_mappings,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(pod, &ctx.cgroup_parent_root)?,
            security_context: Some(security::sandbox_security(pod)?),
            sysctls,
            ..LinuxPodSandboxConfig::default()
        }),
        windows: None,
    })
}

/// `command`/`args` with `$(VAR)` references expanded from the container's
/// environment (the last definition of a name wins), as upstream does.
fn expand_all(words: Option<&[String]>, env: &[KeyValue]) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|kv| kv.key == name)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    };
    words
        .unwrap_or_default()
        .iter()
        .map(|word| expand(word, &lookup))
        .collect()
}

/// Upstream's container annotations: restart count, termination message
/// settings, grace periods, and the preStop handler and ports as JSON.
fn container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut annotations = HashMap::from([
        (
            RESTART_COUNT_ANNOTATION.to_string(),
            restart_count.to_string(),
        ),
        (
            TERMINATION_MESSAGE_PATH_ANNOTATION.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into()),
        ),
        (
            TERMINATION_MESSAGE_POLICY_ANNOTATION.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
    ]);
    if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(DELETION_GRACE_PERIOD_ANNOTATION.into(), grace.to_string());
    }
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(
            TERMINATION_GRACE_PERIOD_ANNOTATION.into(),
            grace.to_string(),
        );
    }
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    if let Some(json) = pre_stop.and_then(|h| serde_json::to_string(h).ok()) {
        annotations.insert(PRE_STOP_ANNOTATION.into(), json);
    }
    let ports = container.ports.as_ref().filter(|p| !p.is_empty());
    if let Some(json) = ports.and_then(|p| serde_json::to_string(p).ok()) {
        annotations.insert(PORTS_ANNOTATION.into(), json);
    }
    annotations
}

/// The config of one container instance.
///
/// The runtime merges `command`/`args` with the image's entrypoint and cmd,
/// and provides `/etc/resolv.conf` and the host name from the sandbox. Logs go
/// to `NAME/RESTART_COUNT.log` under the sandbox's log directory. A Burstable
/// container's OOM score needs the node's memory, which this context lacks;
/// the memory limit stands in (see [`oom_score_adj`] for the exact value).
pub fn container_config(
    pod: &Pod,
    container: &Container,
    ctx: &ContainerContext<'_>,
) -> Result<ContainerConfig, ConfigError> {
    let mut labels = identity_labels(pod)?;
    labels.insert(CONTAINER_NAME_LABEL.into(), container.name.clone());
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: ctx.restart_count,
        }),
        image: Some(ImageSpec {
            image: ctx.image_ref.to_string(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..ImageSpec::default()
        }),
        command: expand_all(container.command.as_deref(), &ctx.env),
        args: expand_all(container.args.as_deref(), &ctx.env),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: ctx.env.clone(),
        mounts: ctx.mounts.clone(),
        labels,
        annotations: container_annotations(pod, container, ctx.restart_count),
        log_path: format!("{}/{}.log", container.name, ctx.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources::linux_resources(pod, container, None)?),
            security_context: Some(security::container_security(pod, container)?),
        }),
        ..ContainerConfig::default()
    })
}

#[cfg(test)]
mod tests;
