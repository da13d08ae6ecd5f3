//! The scheduler's view of the cluster: every node with the running totals of
//! what its pods request and which host ports they hold.
//!
//! It is kept current event by event: a pod that is bound (or that the
//! scheduler has *assumed* onto a node while its binding is in flight) adds its
//! precomputed [`PodInfo`] to its node, and subtracts it again when it goes.
//! Scheduling a pod therefore reads totals and never walks other pods or
//! re-lists anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{self, Resources};

/// `namespace/name`, how pods are told apart in the queue and the snapshot.
pub type PodKey = String;

/// The key of a pod object.
pub fn pod_key(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A host port a container asks for; conflicts are per protocol and port, and
/// `0.0.0.0` overlaps every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The host IP, `0.0.0.0` when unset.
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`; `TCP` when unset.
    pub protocol: String,
    /// The port number.
    pub port: i32,
}

const ANY_IP: &str = "0.0.0.0";

impl HostPort {
    /// Whether two host ports cannot both be bound on one node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY_IP || other.ip == ANY_IP)
    }
}

/// A pod with everything the filters and scores need computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: PodKey,
    /// The pod itself.
    pub pod: Arc<Pod>,
    /// `spec.priority`, 0 when unset.
    pub priority: i32,
    /// What the pod reserves (the fit filter's figure).
    pub requests: Resources,
    /// Requests with scoring defaults for unset CPU and memory.
    pub non_zero_requests: Resources,
    /// Host ports of the pod's containers (and native sidecars).
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    /// Computes a pod's scheduling facts.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let key = pod_key(&pod);
        let (priority, requests, non_zero_requests, host_ports) = match &pod.spec {
            Some(spec) => {
                let ports = spec
                    .containers
                    .iter()
                    .chain(
                        spec.init_containers
                            .iter()
                            .flatten()
                            .filter(|c| c.restart_policy.as_deref() == Some("Always")),
                    )
                    .flat_map(|c| c.ports.iter().flatten())
                    .filter_map(|p| {
                        let port = p.host_port.filter(|&hp| hp > 0)?;
                        Some(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|ip| !ip.is_empty())
                                .unwrap_or_else(|| ANY_IP.to_string()),
                            protocol: p
                                .protocol
                                .clone()
                                .filter(|p| !p.is_empty())
                                .unwrap_or_else(|| "TCP".to_string()),
                            port,
                        })
                    })
                    .collect();
                (
                    spec.priority.unwrap_or(0),
                    resources::pod_requests(spec),
                    resources::pod_non_zero_requests(spec),
                    ports,
                )
            }
            None => (0, Resources::default(), Resources::default(), Vec::new()),
        };
        PodInfo {
            key,
            pod,
            priority,
            requests,
            non_zero_requests,
            host_ports,
        }
    }

    /// The pod's UID, empty if unset.
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// One node and the totals of the pods placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node object; `None` while pods name a node the cache has not seen
    /// (or no longer has). Such entries are never candidates.
    pub node: Option<Arc<Node>>,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// `allocatable.pods`.
    pub allowed_pods: i64,
    /// Sum of the requests of the pods placed here.
    pub requested: Resources,
    /// Sum of the non-zero requests of the pods placed here (for scoring).
    pub non_zero_requested: Resources,
    /// The pods placed here.
    pub pods: HashMap<PodKey, Arc<PodInfo>>,
    /// Host ports in use, with how many pods hold each.
    pub used_ports: HashMap<HostPort, usize>,
}

impl NodeInfo {
    /// A node with no pods, for tests and for new nodes.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo::default();
        info.set_node(node);
        info
    }

    fn set_node(&mut self, node: Arc<Node>) {
        let (allocatable, allowed_pods) = resources::node_allocatable(&node);
        self.allocatable = allocatable;
        self.allowed_pods = allowed_pods;
        self.node = Some(node);
    }

    /// The node's name, empty for an entry without a node object.
    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or_default()
    }

    /// How many pods are placed here.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Counts `pod` against this node, replacing an earlier pod of its key.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.remove_pod(&pod.key);
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero_requests);
        for port in &pod.host_ports {
            *self.used_ports.entry(port.clone()).or_default() += 1;
        }
        self.pods.insert(pod.key.clone(), pod);
    }

    /// Stops counting the pod with `key` against this node.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(pod) = self.pods.remove(key) else {
            return;
        };
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero_requests);
        for port in &pod.host_ports {
            if let Some(n) = self.used_ports.get_mut(port) {
                *n -= 1;
                if *n == 0 {
                    self.used_ports.remove(port);
                }
            }
        }
    }
}

/// Nodes by name (sorted, so iteration is deterministic) and the placed pods.
#[derive(Debug, Default)]
pub struct Snapshot {
    nodes: BTreeMap<String, NodeInfo>,
    /// Which node each placed pod is on.
    placed: HashMap<PodKey, String>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Adds or replaces a node object, keeping its pods' totals.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        self.nodes.entry(name).or_default().set_node(node);
    }

    /// Forgets a node object. Its pods stay counted until they go, as the
    /// node may come back.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Places `pod` on `node`, replacing any earlier placement of the same key.
    pub fn add_pod(&mut self, node: &str, pod: Arc<PodInfo>) {
        self.remove_pod(&pod.key);
        self.placed.insert(pod.key.clone(), node.to_string());
        self.nodes.entry(node.to_string()).or_default().add_pod(pod);
    }

    /// Removes a placed pod; returns the node it was on.
    pub fn remove_pod(&mut self, key: &str) -> Option<String> {
        let node = self.placed.remove(key)?;
        if let Some(info) = self.nodes.get_mut(&node) {
            info.remove_pod(key);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&node);
            }
        }
        Some(node)
    }

    /// Where a pod is placed, if it is.
    pub fn placement(&self, key: &str) -> Option<&str> {
        self.placed.get(key).map(String::as_str)
    }

    /// Keys of every placed pod.
    pub fn placed_keys(&self) -> impl Iterator<Item = &PodKey> {
        self.placed.keys()
    }

    /// Names of every node object.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes().map(NodeInfo::name)
    }

    /// Nodes that can take pods (those with a node object), in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some())
    }

    /// One node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// How many nodes can take pods.
    pub fn node_count(&self) -> usize {
        self.nodes().count()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, NodeStatus, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn node(name: &str, cpu: &str, memory: &str, pods: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                allocatable: Some(
                    [("cpu", cpu), ("memory", memory), ("pods", pods)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
        let requests: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn with_host_port(mut pod: Pod, port: i32, ip: Option<&str>) -> Pod {
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers[0]
                .ports
                .get_or_insert_with(Vec::new)
                .push(ContainerPort {
                    container_port: 80,
                    host_port: Some(port),
                    host_ip: ip.map(str::to_string),
                    ..Default::default()
                });
        }
        pod
    }

    #[test]
    fn add_and_remove_pods_keep_totals() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(node("n1", "4", "8Gi", "110")));
        let a = Arc::new(PodInfo::new(Arc::new(with_host_port(
            pod("a", "1", "1Gi"),
            8080,
            None,
        ))));
        let b = Arc::new(PodInfo::new(Arc::new(pod("b", "500m", ""))));
        snap.add_pod("n1", a.clone());
        snap.add_pod("n1", b.clone());
        let n1 = snap.node("n1").unwrap();
        assert_eq!(n1.requested.milli_cpu, 1500);
        assert_eq!(n1.requested.memory, 1 << 30);
        assert_eq!(n1.pod_count(), 2);
        assert_eq!(n1.used_ports.len(), 1);

        // Re-adding the same key replaces, it does not double count.
        snap.add_pod("n1", a.clone());
        assert_eq!(snap.node("n1").unwrap().requested.milli_cpu, 1500);

        assert_eq!(snap.remove_pod("default/a").as_deref(), Some("n1"));
        let n1 = snap.node("n1").unwrap();
        assert_eq!(n1.requested.milli_cpu, 500);
        assert!(n1.used_ports.is_empty());
        assert_eq!(snap.remove_pod("default/a"), None);
    }

    #[test]
    fn pods_on_unknown_nodes_are_kept_but_not_candidates() {
        let mut snap = Snapshot::new();
        let a = Arc::new(PodInfo::new(Arc::new(pod("a", "1", ""))));
        snap.add_pod("later", a);
        assert_eq!(snap.node_count(), 0);
        snap.upsert_node(Arc::new(node("later", "2", "1Gi", "10")));
        assert_eq!(snap.node_count(), 1);
        assert_eq!(snap.node("later").unwrap().requested.milli_cpu, 1000);
        snap.remove_node("later");
        assert_eq!(snap.node_count(), 0);
        assert!(snap.node("later").is_some(), "its pod is still counted");
        snap.remove_pod("default/a");
        assert!(snap.node("later").is_none());
    }

    #[test]
    fn host_port_conflicts() {
        let any = HostPort {
            ip: "0.0.0.0".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let one = HostPort {
            ip: "10.0.0.1".into(),
            ..any.clone()
        };
        let two = HostPort {
            ip: "10.0.0.2".into(),
            ..any.clone()
        };
        let udp = HostPort {
            protocol: "UDP".into(),
            ..any.clone()
        };
        assert!(any.conflicts(&one));
        assert!(one.conflicts(&any));
        assert!(!one.conflicts(&two));
        assert!(!any.conflicts(&udp));
        assert!(one.conflicts(&one.clone()));
    }
}
