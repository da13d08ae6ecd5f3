//! The scheduler's view of the cluster: every node with the running totals of
//! what its pods request and which host ports they hold.
//!
//! It is kept current event by event: a pod that is bound (or that the
//! scheduler has *assumed* onto a node while its binding is in flight) adds its
//! precomputed [`PodInfo`] to its node, and subtracts it again when it goes.
//! Scheduling a pod therefore reads totals and never walks other pods or
//! re-lists anything.
//!
//! Inter-pod affinity and topology spreading do need other pods, so the
//! snapshot also keeps:
//!
//! - each pod's parsed affinity terms and spread constraints, in its
//!   [`PodInfo`] (parsed once, when the pod enters the cache; pods without
//!   them pay one `None` and one empty `Vec`);
//! - two label indexes. Placed pods by label (`app=web → pods`) answer
//!   "which pods may this selector match" with the pods carrying the
//!   selector's first `key=value` (or `key in (…)`) requirement, instead of
//!   every pod. Placed pods with affinity terms, by that same requirement of
//!   each of their terms, answer "whose terms may select this pod" from the
//!   pod's own labels, so a pod without constraints of its own visits only the
//!   few pods whose terms could concern it (upstream walks every pod with
//!   affinity). Selectors without such a requirement fall back to a walk.
//!   The indexes cost one map entry per pod label and per term;
//! - the labels of every namespace, for `namespaceSelector`;
//! - the pods nominated to a node by preemption, which other pods of lower
//!   priority must leave room for;
//! - the PersistentVolumeClaims, PersistentVolumes and StorageClasses, for
//!   pods with claims ([`VolumeObjects`]: a pod without claims never looks
//!   at them);
//! - the PodDisruptionBudgets, parsed, which preemption prefers not to
//!   violate.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as ApiLabelSelector, ObjectMeta,
};
use serde_json::Value;
use skiff_api::selector::{LabelSelector, Operator};

use crate::inter_pod_affinity::PodAffinityTerms;
use crate::pod_topology_spread::{self, SpreadConstraint};
use crate::preemption::DisruptionBudget;
use crate::resources::{self, Resources};
use crate::volume_binding::VolumeObjects;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// What a selector requires that an index can look up.
enum Lookup<'a> {
    /// The selector matches nothing.
    Nothing,
    /// Every match has `key` set to one of `values`.
    Values(&'a str, &'a [String]),
    /// Nothing to look up by (`{}`, or only `notin`/`exists`-style
    /// requirements).
    Walk,
}

fn lookup(selector: &LabelSelector) -> Lookup<'_> {
    if !selector.is_everything() && selector.requirements().is_empty() {
        return Lookup::Nothing;
    }
    selector
        .requirements()
        .iter()
        .find(|r| {
            matches!(
                r.operator(),
                Operator::Equals | Operator::DoubleEquals | Operator::In
            ) && !r.values().is_empty()
        })
        .map_or(Lookup::Walk, |r| Lookup::Values(r.key(), r.values()))
}

/// A placed pod as the indexes hold it: the pod and the slot of its node
/// entry (stable while the pod is placed, since entries with pods are never
/// dropped), so a candidate costs no lookups.
#[derive(Debug, Clone)]
struct Indexed {
    pod: Arc<PodInfo>,
    slot: usize,
}

/// Placed pods by label key and value.
#[derive(Debug, Default)]
struct LabelIndex(HashMap<String, HashMap<String, HashMap<PodKey, Indexed>>>);

impl LabelIndex {
    fn insert(&mut self, key: &str, value: &str, pod: &Indexed) {
        self.0
            .entry(key.to_string())
            .or_default()
            .entry(value.to_string())
            .or_default()
            .insert(pod.pod.key.clone(), pod.clone());
    }

    fn remove(&mut self, key: &str, value: &str, pod: &str) {
        let Some(values) = self.0.get_mut(key) else {
            return;
        };
        if let Some(pods) = values.get_mut(value) {
            pods.remove(pod);
            if pods.is_empty() {
                values.remove(value);
            }
        }
        if values.is_empty() {
            self.0.remove(key);
        }
    }

    fn get(&self, key: &str, value: &str) -> impl Iterator<Item = &Indexed> {
        self.0
            .get(key)
            .and_then(|v| v.get(value))
            .into_iter()
            .flat_map(HashMap::values)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A pod's or node's labels, empty when it has none.
pub fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// Parses a `metav1.LabelSelector` as upstream's `LabelSelectorAsSelector`:
/// `None` selects nothing and `{}` everything. `extra` requirements
/// (`matchExpressions` entries, as JSON) are added to a present selector, which
/// is how `matchLabelKeys` and `mismatchLabelKeys` narrow one. A selector the
/// API server should have refused selects nothing.
pub(crate) fn label_selector(
    selector: Option<&ApiLabelSelector>,
    extra: Vec<Value>,
) -> LabelSelector {
    let Some(selector) = selector else {
        return LabelSelector::nothing();
    };
    let mut value = match serde_json::to_value(selector) {
        Ok(value) => value,
        Err(e) => {
            tracing::debug!(error = %e, "unserializable label selector; it selects nothing");
            return LabelSelector::nothing();
        }
    };
    if !extra.is_empty()
        && let Value::Object(object) = &mut value
    {
        let expressions = object
            .entry("matchExpressions")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = expressions {
            list.extend(extra);
        } else {
            *expressions = Value::Array(extra);
        }
    }
    LabelSelector::from_label_selector(&value).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "invalid label selector; it selects nothing");
        LabelSelector::nothing()
    })
}

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
    /// The pod's inter-pod (anti-)affinity terms, parsed; `None` when it has
    /// none.
    pub affinity: Option<Box<PodAffinityTerms>>,
    /// The pod's `topologySpreadConstraints`, parsed.
    pub spread: Vec<SpreadConstraint>,
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
        let affinity = PodAffinityTerms::of(&pod);
        let spread = pod_topology_spread::constraints_of(&pod);
        PodInfo {
            key,
            pod,
            priority,
            requests,
            non_zero_requests,
            host_ports,
            affinity,
            spread,
        }
    }

    /// The pod's UID, empty if unset.
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }

    /// The pod's namespace, empty if unset.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        labels_of(&self.pod.metadata)
    }

    /// Whether the pod is being deleted.
    pub fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// The label selectors of all the pod's affinity terms.
    fn term_selectors(&self) -> impl Iterator<Item = &LabelSelector> {
        self.affinity.iter().flat_map(|t| {
            t.required_affinity
                .iter()
                .chain(&t.required_anti_affinity)
                .chain(t.preferred_affinity.iter().map(|w| &w.term))
                .chain(t.preferred_anti_affinity.iter().map(|w| &w.term))
                .map(|t| &t.selector)
        })
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

    /// The node's labels, empty for an entry without a node object.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node
            .as_deref()
            .map_or(&NO_LABELS, |n| labels_of(&n.metadata))
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

/// Node entries in slots: found by name in O(1) (placed pods look up their
/// node for every candidate an index yields), iterated in name order (so
/// scheduling is deterministic).
#[derive(Debug, Default)]
struct NodeTable {
    slots: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    order: BTreeMap<String, usize>,
    free: Vec<usize>,
}

impl NodeTable {
    fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.slots[i])
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        self.by_name.get(name).map(|&i| &mut self.slots[i])
    }

    /// The slot of the entry for `name`, created empty if missing.
    fn slot(&mut self, name: &str) -> usize {
        match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.slots.push(NodeInfo::default());
                        self.slots.len() - 1
                    }
                };
                self.by_name.insert(name.to_string(), i);
                self.order.insert(name.to_string(), i);
                i
            }
        }
    }

    /// The entry for `name`, created empty if missing.
    fn entry(&mut self, name: &str) -> &mut NodeInfo {
        let slot = self.slot(name);
        &mut self.slots[slot]
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = self.by_name.remove(name) {
            self.order.remove(name);
            self.slots[i] = NodeInfo::default();
            self.free.push(i);
        }
    }

    fn values(&self) -> impl Iterator<Item = &NodeInfo> {
        self.order.values().map(|&i| &self.slots[i])
    }
}

/// Nodes by name (sorted, so iteration is deterministic) and the placed pods.
#[derive(Debug, Default)]
pub struct Snapshot {
    nodes: NodeTable,
    /// Which node each placed pod is on.
    placed: HashMap<PodKey, String>,
    /// Placed pods by label.
    by_label: LabelIndex,
    /// Placed pods with affinity terms, by the label requirement of each term
    /// (see the module docs).
    by_term: LabelIndex,
    /// Placed pods with a term the index cannot look up.
    unindexed_terms: HashMap<PodKey, Indexed>,
    /// Namespace labels by namespace name.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Pending pods nominated to a node by preemption, by node name.
    nominated: HashMap<String, HashMap<PodKey, Arc<PodInfo>>>,
    /// The node each nominated pod is nominated to.
    nominations: HashMap<PodKey, String>,
    /// Claims, volumes and StorageClasses.
    volumes: VolumeObjects,
    /// PodDisruptionBudgets by `namespace/name`.
    budgets: BTreeMap<String, Arc<DisruptionBudget>>,
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
        self.nodes.entry(&name).set_node(node);
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
        let slot = self.nodes.slot(node);
        self.index(&pod, Some(slot));
        self.nodes.slots[slot].add_pod(pod);
    }

    /// Adds a pod on the node entry in `slot` to the label indexes, or with
    /// `None` removes it.
    fn index(&mut self, pod: &Arc<PodInfo>, slot: Option<usize>) {
        let entry = slot.map(|slot| Indexed {
            pod: pod.clone(),
            slot,
        });
        let apply = |index: &mut LabelIndex, key: &str, value: &str| match &entry {
            Some(entry) => index.insert(key, value, entry),
            None => index.remove(key, value, &pod.key),
        };
        for (key, value) in pod.labels() {
            apply(&mut self.by_label, key, value);
        }
        for selector in pod.term_selectors() {
            match lookup(selector) {
                Lookup::Nothing => {}
                Lookup::Values(key, values) => {
                    for value in values {
                        apply(&mut self.by_term, key, value);
                    }
                }
                Lookup::Walk => match &entry {
                    Some(entry) => {
                        self.unindexed_terms.insert(pod.key.clone(), entry.clone());
                    }
                    None => {
                        self.unindexed_terms.remove(&pod.key);
                    }
                },
            }
        }
    }

    /// Removes a placed pod; returns the node it was on.
    pub fn remove_pod(&mut self, key: &str) -> Option<String> {
        let node = self.placed.remove(key)?;
        if let Some(pod) = self.nodes.get(&node).and_then(|n| n.pods.get(key)).cloned() {
            self.index(&pod, None);
        }
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

    /// An indexed pod with the node object it is on, if that node is known.
    fn resolve<'a>(&'a self, entry: &'a Indexed) -> Option<(&'a PodInfo, &'a Node)> {
        Some((
            entry.pod.as_ref(),
            self.nodes.slots[entry.slot].node.as_deref()?,
        ))
    }

    /// Every placed pod on a known node, with its node.
    fn all_placed(&self) -> impl Iterator<Item = (&PodInfo, &Node)> {
        self.nodes
            .values()
            .filter_map(|info| Some((info, info.node.as_deref()?)))
            .flat_map(|(info, node)| info.pods.values().map(move |p| (p.as_ref(), node)))
    }

    /// Placed pods (with their nodes) that `selector` may match: all that it
    /// does, and possibly others, so callers still match each.
    pub fn pods_maybe_matching(&self, selector: &LabelSelector) -> Vec<(&PodInfo, &Node)> {
        match lookup(selector) {
            Lookup::Nothing => Vec::new(),
            Lookup::Values(key, values) => values
                .iter()
                .flat_map(|v| self.by_label.get(key, v))
                .filter_map(|e| self.resolve(e))
                .collect(),
            Lookup::Walk => self.all_placed().collect(),
        }
    }

    /// Placed pods (with their nodes) with an affinity term that may select a
    /// pod labelled `labels`: every such pod, each once, and possibly others.
    pub fn pods_with_terms_maybe_selecting(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Vec<(&PodInfo, &Node)> {
        let mut seen: HashSet<*const PodInfo> = HashSet::new();
        self.unindexed_terms
            .values()
            .chain(labels.iter().flat_map(|(k, v)| self.by_term.get(k, v)))
            .filter(|e| seen.insert(Arc::as_ptr(&e.pod)))
            .filter_map(|e| self.resolve(e))
            .collect()
    }

    /// Whether any placed pod has an inter-pod affinity term.
    pub fn has_pods_with_affinity(&self) -> bool {
        !self.by_term.is_empty() || !self.unindexed_terms.is_empty()
    }

    /// Records a namespace's labels.
    pub fn upsert_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name.to_string(), labels);
    }

    /// Forgets a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Names of every known namespace.
    pub fn namespace_names(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Every known namespace with its labels.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &BTreeMap<String, String>)> {
        self.namespaces.iter().map(|(n, l)| (n.as_str(), l))
    }

    /// A namespace's labels; an unknown namespace has none.
    pub fn namespace_labels(&self, name: &str) -> &BTreeMap<String, String> {
        self.namespaces.get(name).unwrap_or(&NO_LABELS)
    }

    /// Nominates a pending pod to `node` (preemption made room for it there),
    /// replacing an earlier nomination of the same pod.
    pub fn nominate(&mut self, node: &str, pod: Arc<PodInfo>) {
        self.clear_nomination(&pod.key);
        self.nominations.insert(pod.key.clone(), node.to_string());
        self.nominated
            .entry(node.to_string())
            .or_default()
            .insert(pod.key.clone(), pod);
    }

    /// Drops a pod's nomination; returns the node it was nominated to.
    pub fn clear_nomination(&mut self, key: &str) -> Option<String> {
        let node = self.nominations.remove(key)?;
        if let Some(pods) = self.nominated.get_mut(&node) {
            pods.remove(key);
            if pods.is_empty() {
                self.nominated.remove(&node);
            }
        }
        Some(node)
    }

    /// The node a pod is nominated to, if any.
    pub fn nomination(&self, key: &str) -> Option<&str> {
        self.nominations.get(key).map(String::as_str)
    }

    /// Whether any pod is nominated anywhere.
    pub fn has_nominations(&self) -> bool {
        !self.nominations.is_empty()
    }

    /// The pods nominated to `node`.
    pub fn nominated_pods(&self, node: &str) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.nominated
            .get(node)
            .into_iter()
            .flat_map(HashMap::values)
    }

    /// The claims, volumes and StorageClasses.
    pub fn volumes(&self) -> &VolumeObjects {
        &self.volumes
    }

    /// The claims, volumes and StorageClasses, to update.
    pub fn volumes_mut(&mut self) -> &mut VolumeObjects {
        &mut self.volumes
    }

    /// Adds or replaces the PodDisruptionBudget with key `namespace/name`.
    pub fn upsert_budget(&mut self, key: String, budget: DisruptionBudget) {
        self.budgets.insert(key, Arc::new(budget));
    }

    /// Forgets a PodDisruptionBudget.
    pub fn remove_budget(&mut self, key: &str) {
        self.budgets.remove(key);
    }

    /// Keys (`namespace/name`) of every PodDisruptionBudget.
    pub fn budget_keys(&self) -> impl Iterator<Item = &str> {
        self.budgets.keys().map(String::as_str)
    }

    /// Every PodDisruptionBudget, by key.
    pub fn budgets(&self) -> impl Iterator<Item = &DisruptionBudget> {
        self.budgets.values().map(Arc::as_ref)
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

    /// A Ready node with room for anything and `labels`.
    pub(crate) fn labelled_node(name: &str, labels: &[(&str, &str)]) -> Node {
        sized_node(name, "64", labels)
    }

    /// A Ready node with `cpu` cores and a hostname label.
    pub(crate) fn ready_node(name: &str, cpu: &str) -> Node {
        sized_node(name, cpu, &[("kubernetes.io/hostname", name)])
    }

    fn sized_node(name: &str, cpu: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = node(name, cpu, "256Gi", "110");
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if let Some(status) = n.status.as_mut() {
            status.conditions = Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]);
        }
        n
    }

    pub(crate) fn with_labels(mut p: Pod, labels: &[(&str, &str)]) -> Pod {
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    pub(crate) fn with_priority(mut p: Pod, priority: i32) -> Pod {
        if let Some(spec) = p.spec.as_mut() {
            spec.priority = Some(priority);
        }
        p
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

    fn keys(found: Vec<(&PodInfo, &Node)>) -> Vec<String> {
        let mut k: Vec<String> = found.into_iter().map(|(p, _)| p.key.clone()).collect();
        k.sort();
        k
    }

    fn selector(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        label_selector(
            Some(&ApiLabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: key.into(),
                        operator: op.into(),
                        values: Some(values.iter().map(|v| v.to_string()).collect()),
                    },
                ]),
                ..Default::default()
            }),
            Vec::new(),
        )
    }

    #[test]
    fn label_index_finds_the_pods_a_selector_may_match() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "4")));
        for (name, app) in [("a", "web"), ("b", "db"), ("c", "cache")] {
            let p = with_labels(pod(name, "", ""), &[("app", app)]);
            snap.add_pod("n1", Arc::new(PodInfo::new(Arc::new(p))));
        }
        snap.add_pod("n1", Arc::new(PodInfo::new(Arc::new(pod("d", "", "")))));
        assert_eq!(
            keys(snap.pods_maybe_matching(&selector("app", "In", &["web", "db"]))),
            ["default/a", "default/b"]
        );
        // Nothing to look up by: every pod is a candidate.
        assert_eq!(
            snap.pods_maybe_matching(&selector("app", "NotIn", &["web"]))
                .len(),
            4
        );
        assert!(
            snap.pods_maybe_matching(&LabelSelector::nothing())
                .is_empty()
        );
        snap.remove_pod("default/a");
        assert_eq!(
            keys(snap.pods_maybe_matching(&selector("app", "In", &["web", "db"]))),
            ["default/b"]
        );
    }

    #[test]
    fn term_index_finds_the_pods_whose_terms_may_select_a_pod() {
        use crate::inter_pod_affinity::tests::{affinity, term};
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "4")));
        let with_terms = |name: &str, app: &str| {
            Arc::new(PodInfo::new(Arc::new(affinity(
                pod(name, "", ""),
                vec![term("app", app, "zone")],
                vec![term("tier", "front", "zone")],
            ))))
        };
        snap.add_pod("n1", with_terms("x", "web"));
        snap.add_pod("n1", with_terms("y", "db"));
        snap.add_pod("n1", Arc::new(PodInfo::new(Arc::new(pod("plain", "", "")))));
        assert!(snap.has_pods_with_affinity());
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            keys(snap.pods_with_terms_maybe_selecting(&labels(&[("app", "web")]))),
            ["default/x"]
        );
        // Selected by both of x's terms: still listed once.
        assert_eq!(
            keys(
                snap.pods_with_terms_maybe_selecting(&labels(&[("app", "web"), ("tier", "front")]))
            ),
            ["default/x", "default/y"]
        );
        assert!(
            snap.pods_with_terms_maybe_selecting(&labels(&[("app", "other")]))
                .is_empty()
        );
        snap.remove_pod("default/x");
        snap.remove_pod("default/y");
        assert!(!snap.has_pods_with_affinity());
    }

    #[test]
    fn nominations_move_and_clear() {
        let mut snap = Snapshot::new();
        let p = Arc::new(PodInfo::new(Arc::new(pod("p", "", ""))));
        assert!(!snap.has_nominations());
        snap.nominate("n1", p.clone());
        snap.nominate("n2", p.clone());
        assert_eq!(snap.nomination("default/p"), Some("n2"));
        assert_eq!(snap.nominated_pods("n1").count(), 0);
        assert_eq!(snap.nominated_pods("n2").count(), 1);
        assert_eq!(snap.clear_nomination("default/p").as_deref(), Some("n2"));
        assert!(!snap.has_nominations());
        assert_eq!(snap.clear_nomination("default/p"), None);
    }

    #[test]
    fn namespace_labels_default_to_none() {
        let mut snap = Snapshot::new();
        assert!(snap.namespace_labels("team").is_empty());
        snap.upsert_namespace("team", [("tier".to_string(), "gold".to_string())].into());
        assert_eq!(snap.namespace_labels("team")["tier"], "gold");
        snap.remove_namespace("team");
        assert!(snap.namespace_labels("team").is_empty());
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
