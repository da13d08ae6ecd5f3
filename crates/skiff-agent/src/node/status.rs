//! The Node object the agent reports, computed from host facts with no IO.
//!
//! This follows upstream kubelet's node status setters:
//!
//! - **capacity**: `cpu` (online CPUs), `memory` (`MemTotal`), `pods`
//!   (`maxPods`), `ephemeral-storage` (size of the filesystem holding the data
//!   dir).
//! - **allocatable**: capacity minus the default hard eviction thresholds, as
//!   upstream computes it with no `kubeReserved`/`systemReserved`:
//!   `memory.available<100Mi` and `nodefs.available<10%`. CPU and pods are not
//!   reserved.
//! - **conditions**, in upstream's order: `MemoryPressure` (available memory
//!   under 100Mi), `DiskPressure` (under 10% of the data dir's filesystem, or
//!   under 5% of its inodes, free), `PIDPressure` and `Ready`. Upstream has no
//!   default PID threshold; Skiff reports pressure under 10% of PIDs free, so
//!   a fork bomb shows up on the node. Reasons and messages are upstream's.
//!   `lastHeartbeatTime` is the time of the report; `lastTransitionTime`
//!   moves only when the status flips.
//! - **labels**: `kubernetes.io/hostname`, `kubernetes.io/os`,
//!   `kubernetes.io/arch` and their deprecated `beta.` twins.
//!
//! Memory is available memory as the kernel estimates it (`MemAvailable`),
//! where upstream subtracts the root cgroup's working set from capacity; both
//! measure what new work could still get.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSwapStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::NodeConfig;
use super::host::{MachineInfo, Usage};

/// The version the node reports (`kubectl get nodes` VERSION), matching the
/// API server's `/version` `gitVersion`.
pub const KUBELET_VERSION: &str = concat!("v1.37.0+skiff-", env!("CARGO_PKG_VERSION"));

/// Memory kept back from pods: upstream's default hard eviction threshold
/// `memory.available<100Mi`.
pub const EVICTION_MEMORY_AVAILABLE_BYTES: u64 = 100 << 20;

/// Upstream's default `nodefs.available<10%`.
pub const EVICTION_NODEFS_AVAILABLE_PERCENT: u64 = 10;

/// Upstream's default `nodefs.inodesFree<5%`.
pub const EVICTION_NODEFS_INODES_FREE_PERCENT: u64 = 5;

/// Skiff's `pid.available<10%` (upstream has no default).
pub const EVICTION_PID_AVAILABLE_PERCENT: u64 = 10;

/// Resource amounts of a node, in plain units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeResources {
    /// CPUs, in millicores.
    pub cpu_millis: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage, in bytes.
    pub ephemeral_storage_bytes: u64,
    /// Pods.
    pub pods: u32,
}

impl NodeResources {
    /// The node's capacity.
    pub fn capacity(machine: &MachineInfo, usage: &Usage, max_pods: u32) -> Self {
        Self {
            cpu_millis: u64::from(machine.cpus) * 1000,
            memory_bytes: machine.memory_bytes,
            ephemeral_storage_bytes: usage.fs_capacity_bytes,
            pods: max_pods,
        }
    }

    /// What pods may use: `self` (the capacity) minus the eviction
    /// reservations.
    pub fn allocatable(&self) -> Self {
        Self {
            memory_bytes: self
                .memory_bytes
                .saturating_sub(EVICTION_MEMORY_AVAILABLE_BYTES),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes.saturating_sub(percent_of(
                self.ephemeral_storage_bytes,
                EVICTION_NODEFS_AVAILABLE_PERCENT,
            )),
            ..*self
        }
    }

    /// As a resource list, in upstream's spelling (`memory: 16393524Ki`).
    pub fn to_resource_list(self) -> BTreeMap<String, Quantity> {
        let cpu = if self.cpu_millis.is_multiple_of(1000) {
            (self.cpu_millis / 1000).to_string()
        } else {
            format!("{}m", self.cpu_millis)
        };
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu)),
            (
                "ephemeral-storage".to_string(),
                binary_si(self.ephemeral_storage_bytes),
            ),
            ("memory".to_string(), binary_si(self.memory_bytes)),
            ("pods".to_string(), Quantity(self.pods.to_string())),
        ])
    }
}

/// `percent`% of `total`, rounded down.
fn percent_of(total: u64, percent: u64) -> u64 {
    u64::try_from(u128::from(total) * u128::from(percent) / 100).unwrap_or(u64::MAX)
}

/// A byte count in canonical binary-SI form: the largest power-of-1024
/// suffix that divides it exactly, else a plain number (as apimachinery
/// prints `resource.NewQuantity(n, BinarySI)`).
fn binary_si(bytes: u64) -> Quantity {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes >= 1024 {
        for (suffix, shift) in SUFFIXES {
            if bytes.trailing_zeros() >= shift {
                return Quantity(format!("{}{suffix}", bytes >> shift));
            }
        }
    }
    Quantity(bytes.to_string())
}

/// Which eviction signals are over their threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Available memory under [`EVICTION_MEMORY_AVAILABLE_BYTES`].
    pub memory: bool,
    /// Free space or inodes of the data dir's filesystem under threshold.
    pub disk: bool,
    /// Free PIDs under [`EVICTION_PID_AVAILABLE_PERCENT`].
    pub pid: bool,
}

impl Pressure {
    /// The pressures `usage` shows.
    pub fn of(usage: &Usage) -> Self {
        let under = |available: u64, total: u64, percent: u64| {
            total > 0 && available < percent_of(total, percent)
        };
        Self {
            memory: usage.memory_available_bytes < EVICTION_MEMORY_AVAILABLE_BYTES,
            disk: under(
                usage.fs_available_bytes,
                usage.fs_capacity_bytes,
                EVICTION_NODEFS_AVAILABLE_PERCENT,
            ) || under(
                usage.fs_inodes_free,
                usage.fs_inodes,
                EVICTION_NODEFS_INODES_FREE_PERCENT,
            ),
            pid: under(
                usage.pid_max.saturating_sub(usage.pids_in_use),
                usage.pid_max,
                EVICTION_PID_AVAILABLE_PERCENT,
            ),
        }
    }
}

/// One condition as upstream words it: (type, status, reason, message).
fn condition_facts(pressure: Pressure) -> [(&'static str, bool, &'static str, &'static str); 4] {
    let pick = |on: bool, yes, no| if on { yes } else { no };
    [
        (
            "MemoryPressure",
            pressure.memory,
            pick(
                pressure.memory,
                "KubeletHasInsufficientMemory",
                "KubeletHasSufficientMemory",
            ),
            pick(
                pressure.memory,
                "kubelet has insufficient memory available",
                "kubelet has sufficient memory available",
            ),
        ),
        (
            "DiskPressure",
            pressure.disk,
            pick(
                pressure.disk,
                "KubeletHasDiskPressure",
                "KubeletHasNoDiskPressure",
            ),
            pick(
                pressure.disk,
                "kubelet has disk pressure",
                "kubelet has no disk pressure",
            ),
        ),
        (
            "PIDPressure",
            pressure.pid,
            pick(
                pressure.pid,
                "KubeletHasInsufficientPID",
                "KubeletHasSufficientPID",
            ),
            pick(
                pressure.pid,
                "kubelet has insufficient PID available",
                "kubelet has sufficient PID available",
            ),
        ),
        (
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The agent's four conditions at `now`, keeping each one's
/// `lastTransitionTime` from `previous` when its status did not change.
pub fn conditions(
    previous: &[NodeCondition],
    pressure: Pressure,
    now: Timestamp,
) -> Vec<NodeCondition> {
    condition_facts(pressure)
        .into_iter()
        .map(|(type_, on, reason, message)| {
            let status = if on { "True" } else { "False" };
            let transition = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// The well-known labels the agent sets on its Node, plus the configured
/// ones (which may add roles such as `node-role.kubernetes.io/control-plane`
/// but not override these).
pub fn labels(config: &NodeConfig, architecture: &str) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    for (key, value) in [
        ("kubernetes.io/hostname", config.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", architecture),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", architecture),
    ] {
        labels.insert(key.to_string(), value.to_string());
    }
    labels
}

/// The status the agent reports at `now`, given the conditions it reported
/// before (for transition times).
pub fn node_status(
    config: &NodeConfig,
    machine: &MachineInfo,
    usage: &Usage,
    previous: &[NodeCondition],
    now: Timestamp,
) -> NodeStatus {
    let capacity = NodeResources::capacity(machine, usage, config.max_pods);
    NodeStatus {
        addresses: Some(config.addresses.clone()),
        allocatable: Some(capacity.allocatable().to_resource_list()),
        capacity: Some(capacity.to_resource_list()),
        conditions: Some(conditions(previous, Pressure::of(usage), now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: machine.architecture.clone(),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: config.runtime_version.clone(),
            kernel_version: machine.kernel_version.clone(),
            // Deprecated; upstream kubelets leave it empty since 1.31.
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: machine.machine_id.clone(),
            operating_system: "linux".to_string(),
            os_image: machine.os_image.clone(),
            system_uuid: machine.system_uuid.clone(),
            swap: Some(NodeSwapStatus {
                capacity: i64::try_from(machine.swap_bytes).ok(),
            }),
            running_in_user_namespace: None,
        }),
        ..NodeStatus::default()
    }
}

/// `status` with the heartbeat times removed: what decides whether a report
/// carries news.
pub fn without_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut status = status.clone();
    for condition in status.conditions.iter_mut().flatten() {
        condition.last_heartbeat_time = None;
    }
    status
}

/// The events upstream's kubelet records when its conditions change: one
/// reason per condition whose status differs from `previous` (or that is
/// new), e.g. `NodeHasSufficientMemory` or `NodeReady`.
pub fn transition_events(
    previous: &[NodeCondition],
    current: &[NodeCondition],
) -> Vec<&'static str> {
    current
        .iter()
        .filter(|c| {
            !previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status)
        })
        .filter_map(|c| {
            let on = c.status == "True";
            Some(match (c.type_.as_str(), on) {
                ("MemoryPressure", true) => "NodeHasInsufficientMemory",
                ("MemoryPressure", false) => "NodeHasSufficientMemory",
                ("DiskPressure", true) => "NodeHasDiskPressure",
                ("DiskPressure", false) => "NodeHasNoDiskPressure",
                ("PIDPressure", true) => "NodeHasInsufficientPID",
                ("PIDPressure", false) => "NodeHasSufficientPID",
                ("Ready", true) => "NodeReady",
                ("Ready", false) => "NodeNotReady",
                _ => return None,
            })
        })
        .collect()
}

/// True if every condition the agent reports has the same status in what
/// the API shows (conditions owned by others are not compared).
pub fn conditions_agree(ours: &[NodeCondition], shown: &[NodeCondition]) -> bool {
    ours.iter().all(|mine| {
        shown
            .iter()
            .any(|theirs| theirs.type_ == mine.type_ && theirs.status == mine.status)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::NodeAddress;

    use super::*;
    use crate::node::host::{FakeHost, HostInfo};

    fn condition(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            ..NodeCondition::default()
        }
    }

    #[test]
    fn condition_changes_become_upstreams_node_events() {
        let first = [
            condition("MemoryPressure", "False"),
            condition("DiskPressure", "False"),
            condition("PIDPressure", "False"),
            condition("Ready", "True"),
        ];
        assert_eq!(
            transition_events(&[], &first),
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID",
                "NodeReady"
            ]
        );
        assert!(transition_events(&first, &first).is_empty());
        let mut later = first.clone();
        later[1] = condition("DiskPressure", "True");
        later[3] = condition("Ready", "False");
        assert_eq!(
            transition_events(&first, &later),
            ["NodeHasDiskPressure", "NodeNotReady"]
        );
        let unknown = [condition("Ready", "Unknown"), condition("Other", "True")];
        assert_eq!(transition_events(&unknown, &first[3..]), ["NodeReady"]);
    }

    fn config() -> NodeConfig {
        NodeConfig {
            name: "node-a".into(),
            addresses: vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "10.0.0.5".into(),
            }],
            kubelet_port: 10250,
            labels: BTreeMap::from([(
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            )]),
            taints: Vec::new(),
            data_dir: PathBuf::from("/var/lib/skiff/agent"),
            max_pods: 110,
            runtime_version: "containerd://1.6.20".into(),
            lease_duration_seconds: 40,
            heartbeat_interval: Duration::from_secs(10),
        }
    }

    fn fake() -> (MachineInfo, Usage) {
        let host = FakeHost::new();
        (host.machine().expect("fake"), host.usage().expect("fake"))
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid timestamp")
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn capacity_and_allocatable() {
        let (machine, usage) = fake();
        let status = node_status(&config(), &machine, &usage, &[], at(0));
        let capacity = status.capacity.expect("capacity");
        assert_eq!(capacity["cpu"], q("4"));
        assert_eq!(capacity["memory"], q("8Gi"));
        assert_eq!(capacity["pods"], q("110"));
        assert_eq!(capacity["ephemeral-storage"], q("100Gi"));
        let allocatable = status.allocatable.expect("allocatable");
        assert_eq!(allocatable["cpu"], q("4"));
        // 8Gi - 100Mi.
        assert_eq!(allocatable["memory"], q("8092Mi"));
        assert_eq!(allocatable["pods"], q("110"));
        assert_eq!(allocatable["ephemeral-storage"], q("90Gi"));
    }

    #[test]
    fn quantities_use_upstream_spelling() {
        assert_eq!(binary_si(16_393_524 * 1024), q("16393524Ki"));
        assert_eq!(binary_si(100 << 20), q("100Mi"));
        assert_eq!(binary_si(1 << 40), q("1Ti"));
        assert_eq!(binary_si(1023), q("1023"));
        assert_eq!(binary_si(1025), q("1025"));
        assert_eq!(binary_si(0), q("0"));
        // 90% of a disk is seldom a whole number of KiB: plain bytes.
        let disk = NodeResources {
            cpu_millis: 1000,
            memory_bytes: 0,
            ephemeral_storage_bytes: 1_000_001 * 1024,
            pods: 1,
        };
        assert_eq!(
            disk.allocatable().to_resource_list()["ephemeral-storage"],
            q("921600922")
        );
        let odd = NodeResources {
            cpu_millis: 1500,
            memory_bytes: 0,
            ephemeral_storage_bytes: 0,
            pods: 0,
        };
        assert_eq!(odd.to_resource_list()["cpu"], q("1500m"));
    }

    #[test]
    fn allocatable_never_underflows() {
        let tiny = NodeResources {
            cpu_millis: 1000,
            memory_bytes: 1 << 20,
            ephemeral_storage_bytes: 0,
            pods: 1,
        };
        assert_eq!(tiny.allocatable().memory_bytes, 0);
    }

    #[test]
    fn healthy_node_conditions() {
        let (machine, usage) = fake();
        let status = node_status(&config(), &machine, &usage, &[], at(0));
        let conditions = status.conditions.expect("conditions");
        let summary: Vec<(&str, &str, &str)> = conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID"),
                ("Ready", "True", "KubeletReady"),
            ]
        );
        let ready = &conditions[3];
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(0))));
        assert_eq!(ready.last_transition_time, Some(Time(at(0))));
    }

    #[test]
    fn pressure_thresholds() {
        let (_, usage) = fake();
        assert_eq!(Pressure::of(&usage), Pressure::default());
        let low_memory = Usage {
            memory_available_bytes: (100 << 20) - 1,
            ..usage
        };
        assert!(Pressure::of(&low_memory).memory);
        let at_memory_threshold = Usage {
            memory_available_bytes: 100 << 20,
            ..usage
        };
        assert!(!Pressure::of(&at_memory_threshold).memory);
        let low_disk = Usage {
            fs_available_bytes: (10 << 30) - 1,
            ..usage
        };
        assert!(Pressure::of(&low_disk).disk);
        let low_inodes = Usage {
            fs_inodes_free: 100,
            ..usage
        };
        assert!(Pressure::of(&low_inodes).disk);
        let no_inode_table = Usage {
            fs_inodes: 0,
            fs_inodes_free: 0,
            ..usage
        };
        assert!(!Pressure::of(&no_inode_table).disk);
        let many_pids = Usage {
            pid_max: 1000,
            pids_in_use: 950,
            ..usage
        };
        assert!(Pressure::of(&many_pids).pid);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let (machine, usage) = fake();
        let first = node_status(&config(), &machine, &usage, &[], at(0));
        let first = first.conditions.expect("conditions");
        // Same status later: heartbeat moves, transition stays.
        let second = conditions(&first, Pressure::default(), at(10));
        assert!(
            second
                .iter()
                .all(|c| c.last_heartbeat_time == Some(Time(at(10))))
        );
        assert!(
            second
                .iter()
                .all(|c| c.last_transition_time == Some(Time(at(0))))
        );
        // Memory pressure starts: only that condition transitions.
        let pressured = Pressure {
            memory: true,
            ..Pressure::default()
        };
        let third = conditions(&second, pressured, at(20));
        let memory = &third[0];
        assert_eq!(memory.status, "True");
        assert_eq!(
            memory.reason.as_deref(),
            Some("KubeletHasInsufficientMemory")
        );
        assert_eq!(
            memory.message.as_deref(),
            Some("kubelet has insufficient memory available")
        );
        assert_eq!(memory.last_transition_time, Some(Time(at(20))));
        assert_eq!(third[1].last_transition_time, Some(Time(at(0))));
        assert_eq!(third[3].last_transition_time, Some(Time(at(0))));
    }

    #[test]
    fn labels_are_upstreams_plus_configured() {
        let labels = labels(&config(), "arm64");
        assert_eq!(labels["kubernetes.io/hostname"], "node-a");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "arm64");
        assert_eq!(labels["beta.kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/arch"], "arm64");
        assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
        assert_eq!(labels.len(), 6);
    }

    #[test]
    fn configured_labels_cannot_override_well_known_ones() {
        let mut config = config();
        config
            .labels
            .insert("kubernetes.io/hostname".into(), "spoofed".into());
        assert_eq!(labels(&config, "amd64")["kubernetes.io/hostname"], "node-a");
    }

    #[test]
    fn node_info_and_endpoints() {
        let (machine, usage) = fake();
        let status = node_status(&config(), &machine, &usage, &[], at(0));
        let info = status.node_info.expect("node info");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert!(info.kubelet_version.starts_with("v1.37.0+skiff-"));
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.architecture, "amd64");
        assert_eq!(info.os_image, "Skiff Test Linux");
        assert_eq!(info.machine_id, machine.machine_id);
        assert_eq!(info.boot_id, machine.boot_id);
        let port = status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        assert_eq!(port, Some(10250));
        assert_eq!(status.addresses.expect("addresses")[0].address, "10.0.0.5");
    }

    #[test]
    fn heartbeat_only_reports_carry_no_news() {
        let (machine, usage) = fake();
        let first = node_status(&config(), &machine, &usage, &[], at(0));
        let previous = first.conditions.clone().unwrap_or_default();
        let second = node_status(&config(), &machine, &usage, &previous, at(10));
        assert_ne!(first, second);
        assert_eq!(without_heartbeats(&first), without_heartbeats(&second));
        let pressured = Usage {
            memory_available_bytes: 0,
            ..usage
        };
        let third = node_status(&config(), &machine, &pressured, &previous, at(20));
        assert_ne!(without_heartbeats(&first), without_heartbeats(&third));
    }

    #[test]
    fn conditions_disagree_when_the_api_shows_another_status() {
        let condition = |type_: &str, status: &str| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            ..NodeCondition::default()
        };
        let ours = [
            condition("Ready", "True"),
            condition("DiskPressure", "False"),
        ];
        let same = [
            condition("DiskPressure", "False"),
            condition("Ready", "True"),
            condition("NetworkUnavailable", "False"),
        ];
        assert!(conditions_agree(&ours, &same));
        let unknown = [
            condition("Ready", "Unknown"),
            condition("DiskPressure", "False"),
        ];
        assert!(!conditions_agree(&ours, &unknown));
        assert!(!conditions_agree(&ours, &[condition("Ready", "True")]));
    }
}
