//! A pod, translated into the CRI requests that run it.
//!
//! Pure functions, no IO: the pod worker feeds them the pod, the resolved
//! environment and the volume mounts, and sends what they return to the
//! runtime. Upstream's kubelet rules are the spec (`kuberuntime_sandbox.go`,
//! `kuberuntime_container_linux.go`, `qos/policy.go`, `cm/helpers_linux.go`).

mod env;
mod qos;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_api::quantity::Quantity;
use skiff_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};

pub use env::{EnvError, resolve_env};
pub use qos::{QosClass, qos_class};

/// Label naming the pod's uid on sandboxes and containers (the agent finds
/// its pods in the runtime by it).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label naming the pod.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label naming the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label naming the container.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// CFS period, as upstream's kubelet sets it (100 ms).
const CPU_PERIOD_US: i64 = 100_000;
/// Smallest CPU shares value the kernel accepts.
const MIN_SHARES: i64 = 2;
/// Shares of one whole CPU.
const SHARES_PER_CPU: i64 = 1024;
/// The cluster DNS search depth, upstream's `ndots:5`.
const NDOTS: &str = "ndots:5";

/// Why a pod cannot be turned into runtime config.
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
    /// Root of the pods' log directories (`DATA/agent/logs`).
    pub log_root: PathBuf,
    /// The cluster DNS, if there is one.
    pub cluster_dns: Option<ClusterDns>,
    /// The host's resolv.conf (`dnsPolicy: Default`).
    pub host_resolv_conf: PathBuf,
    /// The cgroup every pod goes under, e.g. `/kubepods`.
    pub cgroup_parent_root: String,
}

/// What container config needs besides the pod and the container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerContext<'a> {
    /// How many times the container was restarted (the CRI `attempt`).
    pub restart_count: u32,
    /// The image id (or reference) to run.
    pub image_ref: &'a str,
    /// The resolved environment.
    pub env: Vec<KeyValue>,
    /// The volume mounts.
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

fn pod_labels(pod: &Pod) -> Result<HashMap<String, String>, ConfigError> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(POD_UID_LABEL.into(), uid(pod)?.to_string());
    labels.insert(
        POD_NAME_LABEL.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_NAMESPACE_LABEL.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    Ok(labels)
}

/// The pod's host name: `spec.hostname`, else the pod name cut to the 63
/// bytes of a DNS label (without a trailing `-` or `.`).
pub fn hostname(pod: &Pod) -> String {
    let spec_hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
    let name = spec_hostname.unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn namespace_options(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |host: Option<bool>, otherwise: NamespaceMode| {
        if host.unwrap_or(false) {
            NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid_otherwise = if spec.share_process_namespace.unwrap_or(false) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    NamespaceOption {
        network: mode(spec.host_network, NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid_otherwise),
        ipc: mode(spec.host_ipc, NamespaceMode::Pod),
        ..NamespaceOption::default()
    }
}

/// The pod's DNS config per `dnsPolicy`, or `None` to leave the runtime's
/// default (the host's resolv.conf).
pub fn dns_config(pod: &Pod, ctx: &SandboxContext) -> Option<DnsConfig> {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network(pod),
        _ => false,
    };
    let mut config = match (policy, cluster, &ctx.cluster_dns) {
        ("None", _, _) => DnsConfig::default(),
        (_, true, Some(dns)) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut searches = vec![
                format!("{ns}.svc.{}", dns.domain),
                format!("svc.{}", dns.domain),
                dns.domain.clone(),
            ];
            searches.extend(host_searches(&ctx.host_resolv_conf));
            DnsConfig {
                servers: dns.servers.clone(),
                searches,
                options: vec![NDOTS.to_string()],
            }
        }
        // Default, or ClusterFirst without a cluster DNS (upstream's kubelet
        // falls back to the host's resolver then).
        _ => {
            spec.dns_config.as_ref()?;
            host_dns(&ctx.host_resolv_conf)
        }
    };
    if let Some(extra) = spec.dns_config {
        for server in extra.nameservers.unwrap_or_default() {
            if !config.servers.contains(&server) {
                config.servers.push(server);
            }
        }
        for search in extra.searches.unwrap_or_default() {
            if !config.searches.contains(&search) {
                config.searches.push(search);
            }
        }
        for option in extra.options.unwrap_or_default() {
            let name = option.name.unwrap_or_default();
            let rendered = match option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.clone(),
            };
            config
                .options
                .retain(|o| o.split(':').next() != Some(name.as_str()));
            config.options.push(rendered);
        }
    }
    Some(config)
}

fn read_resolv_conf(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn host_searches(path: &Path) -> Vec<String> {
    read_resolv_conf(path)
        .lines()
        .filter_map(|l| l.strip_prefix("search"))
        .flat_map(|rest| rest.split_whitespace().map(str::to_string))
        .collect()
}

fn host_dns(path: &Path) -> DnsConfig {
    let text = read_resolv_conf(path);
    let mut config = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => config.servers.extend(words.map(str::to_string)),
            Some("search") => config.searches.extend(words.map(str::to_string)),
            Some("options") => config.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    config
}

/// The sandbox config of the pod's `attempt`-th sandbox.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    ctx: &SandboxContext,
) -> Result<PodSandboxConfig, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let qos = qos_class(pod);
    let pod_uid = uid(pod)?;
    let cgroup_parent = match qos {
        QosClass::Guaranteed => format!("{}/pod{pod_uid}", ctx.cgroup_parent_root),
        other => format!(
            "{}/{}/pod{pod_uid}",
            ctx.cgroup_parent_root,
            other.as_str().to_lowercase()
        ),
    };
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
    let security = spec.security_context.clone().unwrap_or_default();
    let sysctls = security
        .sysctls
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod_uid.to_string(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: log_directory(&ctx.log_root, pod)?
            .to_string_lossy()
            .into_owned(),
        dns_config: dns_config(pod, ctx),
        port_mappings,
        labels: pod_labels(pod)?,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: security.run_as_user.map(|value| Int64Value { value }),
                run_as_group: security.run_as_group.map(|value| Int64Value { value }),
                supplemental_groups: security.supplemental_groups.unwrap_or_default(),
                ..LinuxSandboxSecurityContext::default()
            }),
            sysctls,
            ..LinuxPodSandboxConfig::default()
        }),
        windows: None,
    })
}

fn protocol(name: Option<&str>) -> Protocol {
    match name {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

fn quantity(
    map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    resource: &str,
) -> Result<Option<Quantity>, ConfigError> {
    map.and_then(|m| m.get(resource))
        .map(|q| {
            Quantity::parse(&q.0).map_err(|_| ConfigError::InvalidQuantity {
                resource: resource.to_string(),
                value: q.0.clone(),
            })
        })
        .transpose()
}

/// CPU shares for a CPU request in millicores, as upstream computes them.
pub fn milli_cpu_to_shares(millis: i64) -> i64 {
    if millis <= 0 {
        return MIN_SHARES;
    }
    (millis * SHARES_PER_CPU / 1000).max(MIN_SHARES)
}

/// The CFS quota (µs per period) for a CPU limit in millicores.
pub fn milli_cpu_to_quota(millis: i64) -> i64 {
    if millis <= 0 {
        return 0;
    }
    // Upstream's floor: 1 ms per period.
    (millis * CPU_PERIOD_US / 1000).max(1000)
}

/// The container's Linux resources: shares from the CPU request (limit if
/// only that is set), quota from the CPU limit, the memory limit, and an
/// `oom_score_adj` by QoS class. Root here cannot lower an OOM score below
/// zero (no `CAP_SYS_RESOURCE`), so Guaranteed and critical pods get 0
/// rather than upstream's -997.
fn linux_resources(
    pod: &Pod,
    container: &Container,
) -> Result<LinuxContainerResources, ConfigError> {
    let resources = container.resources.clone().unwrap_or_default();
    let requests = resources.requests.as_ref();
    let limits = resources.limits.as_ref();
    let cpu_limit = quantity(limits, "cpu")?;
    let cpu_request = quantity(requests, "cpu")?.or(cpu_limit);
    let memory_limit = quantity(limits, "memory")?;
    let memory_request = quantity(requests, "memory")?.or(memory_limit);
    let mut out = LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(cpu_request.map_or(0, |q| q.milli_value())),
        ..LinuxContainerResources::default()
    };
    if let Some(limit) = cpu_limit {
        out.cpu_period = CPU_PERIOD_US;
        out.cpu_quota = milli_cpu_to_quota(limit.milli_value());
    }
    if let Some(limit) = memory_limit {
        out.memory_limit_in_bytes = limit.value();
    }
    out.oom_score_adj = match qos_class(pod) {
        QosClass::Guaranteed => 0,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            // Upstream: 1000 - 1000 * request / node memory, within [3, 999].
            // Without the node's capacity here, scale by the limit when set.
            let request = memory_request.map_or(0, |q| q.value());
            let basis = memory_limit.map_or(0, |q| q.value());
            if basis > 0 {
                (1000 - 1000 * request / basis).clamp(3, 999)
            } else {
                999
            }
        }
    };
    Ok(out)
}

fn security_context(pod: &Pod, container: &Container) -> LinuxContainerSecurityContext {
    let pod_security = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let security = container.security_context.clone().unwrap_or_default();
    let capabilities = security.capabilities.clone().map(|c| Capability {
        add_capabilities: c.add.unwrap_or_default(),
        drop_capabilities: c.drop.unwrap_or_default(),
        ..Capability::default()
    });
    let privileged = security.privileged.unwrap_or(false);
    LinuxContainerSecurityContext {
        capabilities,
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: security
            .run_as_user
            .or(pod_security.run_as_user)
            .map(|value| Int64Value { value }),
        run_as_group: security
            .run_as_group
            .or(pod_security.run_as_group)
            .map(|value| Int64Value { value }),
        readonly_rootfs: security.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: pod_security.supplemental_groups.unwrap_or_default(),
        no_new_privs: !privileged && security.allow_privilege_escalation == Some(false),
        ..LinuxContainerSecurityContext::default()
    }
}

/// `command`/`args` with `$(VAR)` references expanded from the container's
/// environment, as upstream does.
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
        .map(|word| env::expand(word, &lookup))
        .collect()
}

/// The config of one container instance.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    ctx: &ContainerContext<'_>,
) -> Result<ContainerConfig, ConfigError> {
    let mut labels = pod_labels(pod)?;
    labels.retain(|k, _| k.starts_with("io.kubernetes."));
    labels.insert(CONTAINER_NAME_LABEL.into(), container.name.clone());
    let annotations = HashMap::from([
        (
            "io.kubernetes.container.restartCount".to_string(),
            ctx.restart_count.to_string(),
        ),
        (
            "io.kubernetes.container.terminationMessagePath".to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
    ]);
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
        annotations,
        log_path: format!("{}/{}.log", container.name, ctx.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(linux_resources(pod, container)?),
            security_context: Some(security_context(pod, container)),
        }),
        ..ContainerConfig::default()
    })
}

#[cfg(test)]
mod tests;
