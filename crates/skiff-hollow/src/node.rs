//! The Node, its status and its Lease as a hollow node reports them, built
//! with no IO.
//!
//! The conditions are those of a healthy kubelet, with upstream's reasons:
//! no memory, disk or PID pressure, and Ready. `lastHeartbeatTime` is the
//! time of the report; `lastTransitionTime` moves only when a condition's
//! status differs from the one the API last showed (e.g. Ready goes back from
//! Unknown to True after paused heartbeats resume).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use crate::config::{self, HOLLOW_KUBELET_VERSION, HOLLOW_LABEL, HollowConfig};

/// The namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The conditions a hollow node reports: (type, status, reason, message).
const CONDITIONS: [(&str, &str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
    (
        "Ready",
        "True",
        "KubeletReady",
        "kubelet is posting ready status (hollow node: simulated, runs no containers)",
    ),
];

/// The labels of node `index`: the configured ones, then the well-known
/// ones (which the configured ones cannot override) and [`HOLLOW_LABEL`].
pub fn labels(config: &HollowConfig, index: usize) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    for (key, value) in [
        ("kubernetes.io/hostname", config.node_name(index).as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", config.architecture.as_str()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", config.architecture.as_str()),
        (HOLLOW_LABEL, "true"),
    ] {
        labels.insert(key.to_string(), value.to_string());
    }
    labels
}

/// Node `index` as first created: labels, taints and its fake pod CIDR. The
/// status follows in a separate write, as the status subresource owns it.
pub fn node(config: &HollowConfig, index: usize) -> Node {
    let cidr = config::pod_cidr(index);
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name(index)),
            labels: Some(labels(config, index)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.clone()),
            pod_cidrs: Some(vec![cidr]),
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// Node `index`'s status at `now`, keeping each condition's
/// `lastTransitionTime` from `previous` (what the API last showed) when its
/// status is unchanged.
pub fn status(
    config: &HollowConfig,
    index: usize,
    previous: &[NodeCondition],
    now: Timestamp,
) -> NodeStatus {
    let name = config.node_name(index);
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: config::node_ip(index).to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.clone(),
            },
        ]),
        capacity: Some(config.capacity.clone()),
        allocatable: Some(config.allocatable.clone()),
        conditions: Some(conditions(previous, now)),
        node_info: Some(NodeSystemInfo {
            architecture: config.architecture.clone(),
            boot_id: format!("hollow-boot-{name}"),
            container_runtime_version: "hollow://simulated".into(),
            kernel_version: "hollow".into(),
            kube_proxy_version: String::new(),
            kubelet_version: HOLLOW_KUBELET_VERSION.into(),
            machine_id: format!("hollow-machine-{name}"),
            operating_system: "linux".into(),
            os_image: "Skiff hollow node (simulated)".into(),
            system_uuid: format!("hollow-{name}"),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// The four conditions at `now`.
fn conditions(previous: &[NodeCondition], now: Timestamp) -> Vec<NodeCondition> {
    CONDITIONS
        .iter()
        .map(|&(type_, status, reason, message)| {
            let transition = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// Whether `observed` (the Node's conditions as the API shows them) already
/// says what a hollow node reports; if not, it must report again.
pub fn conditions_current(observed: &[NodeCondition]) -> bool {
    CONDITIONS.iter().all(|&(type_, status, ..)| {
        observed
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
    })
}

/// `lease` held by `node`, renewed at `now`, and owned by the Node (`owner`)
/// so that it goes when the Node does.
pub fn renewed_lease(
    mut lease: Lease,
    node: &str,
    duration_seconds: i32,
    owner: Option<&OwnerReference>,
    now: Timestamp,
) -> Lease {
    lease.metadata.name = Some(node.to_string());
    lease.metadata.namespace = Some(NODE_LEASE_NAMESPACE.to_string());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node.to_string());
    spec.lease_duration_seconds = Some(duration_seconds);
    spec.renew_time = Some(MicroTime(now));
    if let Some(owner) = owner {
        let owners = lease.metadata.owner_references.get_or_insert_default();
        if !owners.iter().any(|o| o.uid == owner.uid) {
            owners.push(owner.clone());
        }
    }
    lease
}

/// The owner reference that ties a Lease to the Node `name` with `uid`.
pub fn node_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.to_string(),
        uid: uid.to_string(),
        ..OwnerReference::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid timestamp")
    }

    fn config() -> HollowConfig {
        HollowConfig {
            nodes: 10,
            name_prefix: "hn".into(),
            architecture: "arm64".into(),
            labels: BTreeMap::from([
                ("topology.kubernetes.io/zone".to_string(), "z1".to_string()),
                // Cannot override the well-known labels.
                ("kubernetes.io/os".to_string(), "windows".to_string()),
            ]),
            ..HollowConfig::default()
        }
    }

    #[test]
    fn node_carries_labels_and_pod_cidr() {
        let node = node(&config(), 3);
        assert_eq!(node.metadata.name.as_deref(), Some("hn-3"));
        let labels = node.metadata.labels.expect("labels");
        for (key, value) in [
            ("kubernetes.io/hostname", "hn-3"),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "arm64"),
            ("skiff.dev/hollow", "true"),
            ("topology.kubernetes.io/zone", "z1"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
        let spec = node.spec.expect("spec");
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.128.3.0/24"));
        assert_eq!(spec.pod_cidrs, Some(vec!["10.128.3.0/24".to_string()]));
        assert_eq!(spec.taints, None);
        assert!(node.status.is_none());
    }

    #[test]
    fn status_reports_a_ready_node() {
        let mut config = config();
        config
            .allocatable
            .insert("cpu".into(), Quantity("3500m".into()));
        let status = status(&config, 1, &[], at(0));
        assert_eq!(
            status.addresses,
            Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "10.255.0.2".into()
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "hn-1".into()
                },
            ])
        );
        assert_eq!(status.capacity.as_ref().expect("capacity")["cpu"].0, "4");
        assert_eq!(status.capacity.as_ref().expect("capacity")["pods"].0, "110");
        assert_eq!(
            status.allocatable.as_ref().expect("allocatable")["cpu"].0,
            "3500m"
        );
        let info = status.node_info.expect("nodeInfo");
        assert_eq!(info.kubelet_version, "v1.37.0-skiff-hollow");
        assert_eq!(info.architecture, "arm64");
        assert_eq!(info.operating_system, "linux");
        let conditions = status.conditions.expect("conditions");
        let summary: Vec<_> = conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True"),
            ]
        );
        for c in &conditions {
            assert_eq!(c.last_heartbeat_time, Some(Time(at(0))));
            assert_eq!(c.last_transition_time, Some(Time(at(0))));
        }
        assert!(conditions_current(&conditions));
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let config = config();
        let first = status(&config, 0, &[], at(0))
            .conditions
            .expect("conditions");
        let mut observed = first.clone();
        // The node lifecycle controller marked the node Unknown at 50 s.
        let ready = observed
            .iter_mut()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        ready.status = "Unknown".into();
        ready.last_transition_time = Some(Time(at(50)));
        assert!(!conditions_current(&observed));
        let again = status(&config, 0, &observed, at(100))
            .conditions
            .expect("conditions");
        for c in &again {
            assert_eq!(c.last_heartbeat_time, Some(Time(at(100))));
            let expected = if c.type_ == "Ready" { at(100) } else { at(0) };
            assert_eq!(c.last_transition_time, Some(Time(expected)), "{}", c.type_);
        }
        assert!(!conditions_current(&[]));
    }

    #[test]
    fn lease_is_held_renewed_and_owned() {
        let owner = node_owner("hn-0", "uid-1");
        let lease = renewed_lease(Lease::default(), "hn-0", 40, Some(&owner), at(10));
        assert_eq!(lease.metadata.name.as_deref(), Some("hn-0"));
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let spec = lease.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("hn-0"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(at(10))));
        // Renewing again moves renewTime and does not duplicate the owner.
        let lease = renewed_lease(lease, "hn-0", 40, Some(&owner), at(20));
        assert_eq!(
            lease.spec.expect("spec").renew_time,
            Some(MicroTime(at(20)))
        );
        assert_eq!(lease.metadata.owner_references, Some(vec![owner]));
    }
}
