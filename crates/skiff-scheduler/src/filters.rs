//! Filters: may this pod run on this node at all?
//!
//! Each filter is a pure function of the pod and one [`NodeInfo`] (plus, for
//! the filters that look beyond the node, a [`PreFilterState`] computed once
//! per pod), so it can be tested alone and run over nodes in any order. They
//! run in upstream's order (`NodeUnschedulable`, `TaintToleration`,
//! `NodeAffinity`, `NodePorts`, `NodeResourcesFit`, `VolumeBinding`,
//! `VolumeZone`, `PodTopologySpread`, `InterPodAffinity`) and the first
//! rejection wins, which decides the reason that the `FailedScheduling`
//! message counts for a node. The reasons are upstream's strings, since
//! people grep for them.
//!
//! Computing the [`PreFilterState`] may refuse the pod before any node is
//! tried (upstream's PreFilter): a claim that does not exist, say. Then the
//! message names that one reason instead of counting nodes.
//!
//! Upstream's scheduler does not read node conditions: the node lifecycle
//! controller turns a node that is not Ready into a
//! `node.kubernetes.io/not-ready` (or `unreachable`) `NoSchedule` taint. Skiff
//! reads the condition here and treats the node as carrying that taint unless
//! it already does, so the outcome (and the tolerations that override it) is
//! the same whether or not such a controller runs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, Taint, Toleration};

pub use skiff_api::scheduling::{tolerated, tolerates};

use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::{inter_pod_affinity, pod_topology_spread, volume_binding};

/// Reason for a cordoned node.
pub const ERR_NODE_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason for a `NoSchedule`/`NoExecute` taint the pod does not tolerate.
/// Since 1.34 upstream no longer names the taint in the message.
pub const ERR_UNTOLERATED_TAINT: &str = "node(s) had untolerated taint(s)";
/// Reason for a failed `nodeSelector` or required node affinity.
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason for a host port already in use on the node.
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
/// Reason for a node at its `allocatable.pods`.
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";

/// The taint the API puts on cordoned nodes; tolerating it overrides
/// `spec.unschedulable`.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint for a node whose Ready condition is `False` (or missing).
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint for a node whose Ready condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Why a node was refused, and whether evicting pods could change that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `true` when removing pods from the node could make room (resources,
    /// ports): upstream's `Unschedulable`, as opposed to
    /// `UnschedulableAndUnresolvable`. Decides the preemption message.
    pub resolvable: bool,
    /// The reasons, each counted once in the failure message.
    pub reasons: Vec<String>,
}

impl Rejection {
    /// A refusal that evicting pods cannot change.
    pub fn unresolvable(reason: &str) -> Rejection {
        Rejection {
            resolvable: false,
            reasons: vec![reason.to_string()],
        }
    }

    /// A refusal that evicting pods may lift.
    pub fn resolvable(reason: &str) -> Rejection {
        Rejection {
            resolvable: true,
            reasons: vec![reason.to_string()],
        }
    }
}

/// What a filter says about one node.
pub type FilterResult = Result<(), Rejection>;

/// What the filters that look beyond one node precompute for a pod, once per
/// scheduling attempt (upstream's PreFilter). Each part is `None` when its
/// filter has nothing to check, which is the common case and costs nothing.
///
/// Preemption and nominated pods ask "what if this pod were (not) here";
/// [`add_pod`](Self::add_pod) and [`remove_pod`](Self::remove_pod) answer by
/// adjusting the counts in place, and are exact inverses of each other. (The
/// volume part does not depend on other pods.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreFilterState {
    volumes: Option<Box<volume_binding::FilterState>>,
    affinity: Option<Box<inter_pod_affinity::FilterState>>,
    spread: Option<Box<pod_topology_spread::FilterState>>,
}

impl PreFilterState {
    /// Computes the state for scheduling `pod` into `snapshot`, or the
    /// reason the pod fits no node at all (upstream's PreFilter rejection,
    /// e.g. `persistentvolumeclaim "data" not found`).
    pub fn new(snapshot: &Snapshot, pod: &PodInfo) -> Result<PreFilterState, String> {
        let volumes = volume_binding::FilterState::new(snapshot.volumes(), &pod.pod)?;
        Ok(PreFilterState {
            volumes: volumes.map(Box::new),
            affinity: inter_pod_affinity::FilterState::new(snapshot, pod).map(Box::new),
            spread: pod_topology_spread::FilterState::new(snapshot, pod).map(Box::new),
        })
    }

    /// Counts `other` as placed on `node` while scheduling `pod`.
    pub fn add_pod(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node) {
        self.update(pod, other, node, 1);
    }

    /// Stops counting `other` on `node` while scheduling `pod`.
    pub fn remove_pod(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node) {
        self.update(pod, other, node, -1);
    }

    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node, delta: i64) {
        if let Some(spread) = self.spread.as_mut() {
            spread.update(pod, other, node, delta);
        }
        if let Some(affinity) = self.affinity.as_mut() {
            affinity.update(pod, other, node, delta);
        }
    }
}

/// Runs every filter in upstream's order and returns the first rejection.
pub fn run_filters(pod: &PodInfo, node: &NodeInfo, state: &PreFilterState) -> FilterResult {
    let Some(n) = node.node.as_deref() else {
        return Err(Rejection::unresolvable("node not found"));
    };
    node_unschedulable(pod, n)?;
    taint_toleration(pod, n)?;
    node_affinity(pod, n)?;
    node_ports(pod, node)?;
    node_resources_fit(pod, node)?;
    if let Some(volumes) = &state.volumes {
        volumes.filter(n)?;
    }
    if let Some(spread) = &state.spread {
        spread.filter(pod, n)?;
    }
    if let Some(affinity) = &state.affinity {
        affinity.filter(n)?;
    }
    Ok(())
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// `NodeUnschedulable`: a cordoned node takes only pods that tolerate the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
pub fn node_unschedulable(pod: &PodInfo, node: &Node) -> FilterResult {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.to_string(),
        effect: "NoSchedule".to_string(),
        ..Taint::default()
    };
    if tolerated(tolerations(pod), &taint) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(ERR_NODE_UNSCHEDULABLE))
    }
}

/// The taint a node's Ready condition stands for, if the node is not Ready.
pub fn readiness_taint(node: &Node) -> Option<Taint> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let key = match ready {
        Some("True") => return None,
        Some("Unknown") => TAINT_UNREACHABLE,
        _ => TAINT_NOT_READY,
    };
    Some(Taint {
        key: key.to_string(),
        effect: "NoSchedule".to_string(),
        ..Taint::default()
    })
}

fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn blocks(tolerations: &[Toleration], taint: &Taint) -> bool {
    (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !tolerated(tolerations, taint)
}

/// Whether the node has a `NoSchedule` or `NoExecute` taint in its spec that
/// the pod does not tolerate (the Ready condition is not consulted).
pub fn has_untolerated_hard_taint(pod: &PodInfo, node: &Node) -> bool {
    let tolerations = tolerations(pod);
    node_taints(node).iter().any(|t| blocks(tolerations, t))
}

/// `TaintToleration`: every `NoSchedule` and `NoExecute` taint must be
/// tolerated. `PreferNoSchedule` only lowers the score.
pub fn taint_toleration(pod: &PodInfo, node: &Node) -> FilterResult {
    let tolerations = tolerations(pod);
    let taints = node_taints(node);
    if has_untolerated_hard_taint(pod, node) {
        return Err(Rejection::unresolvable(ERR_UNTOLERATED_TAINT));
    }
    if let Some(implicit) = readiness_taint(node) {
        let already = taints.iter().any(|t| t.key == implicit.key);
        if !already && blocks(tolerations, &implicit) {
            return Err(Rejection::unresolvable(ERR_UNTOLERATED_TAINT));
        }
    }
    Ok(())
}

fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether a node selector term matches: all of its requirements hold. An
/// empty term matches nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    skiff_api::scheduling::term_matches(term, node_labels(node), name)
}

/// `NodeAffinity`: `spec.nodeSelector` (every label equal) and the required
/// node affinity (any term matches).
pub fn node_affinity(pod: &PodInfo, node: &Node) -> FilterResult {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return Ok(());
    };
    let labels = node_labels(node);
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok = required.is_none_or(|sel| {
        sel.node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    });
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        Err(Rejection::unresolvable(ERR_NODE_AFFINITY))
    }
}

/// `NodePorts`: no requested host port may collide with one in use.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let conflict = pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.keys().any(|used| want.conflicts(used)));
    if conflict {
        Err(Rejection::resolvable(ERR_NODE_PORTS))
    } else {
        Ok(())
    }
}

/// `NodeResourcesFit`: the pod's requests must fit in allocatable minus what
/// the node's pods already request. Every shortfall is a reason.
pub fn node_resources_fit(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let mut reasons = Vec::new();
    if i64::try_from(node.pod_count())
        .unwrap_or(i64::MAX)
        .saturating_add(1)
        > node.allowed_pods
    {
        reasons.push(ERR_TOO_MANY_PODS.to_string());
    }
    let want = &pod.requests;
    let (alloc, used) = (&node.allocatable, &node.requested);
    let short = |want: i64, alloc: i64, used: i64| want > 0 && want > alloc.saturating_sub(used);
    if short(want.milli_cpu, alloc.milli_cpu, used.milli_cpu) {
        reasons.push("Insufficient cpu".to_string());
    }
    if short(want.memory, alloc.memory, used.memory) {
        reasons.push("Insufficient memory".to_string());
    }
    if short(
        want.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    ) {
        reasons.push("Insufficient ephemeral-storage".to_string());
    }
    for (name, &amount) in &want.scalar {
        if short(amount, alloc.scalar(name), used.scalar(name)) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            resolvable: true,
            reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeCondition, NodeSelector, NodeSelectorRequirement, NodeSpec,
        NodeStatus, Pod,
    };

    use super::*;
    use crate::snapshot::tests::{node, pod, with_host_port};

    fn ready(mut n: Node, status: &str) -> Node {
        n.status.get_or_insert_with(NodeStatus::default).conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            ..Default::default()
        }]);
        n
    }

    fn info(p: Pod) -> PodInfo {
        PodInfo::new(Arc::new(p))
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            ..Default::default()
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tolerating(mut p: Pod, ts: Vec<Toleration>) -> Pod {
        p.spec.as_mut().unwrap().tolerations = Some(ts);
        p
    }

    fn tainted(mut n: Node, ts: Vec<Taint>) -> Node {
        n.spec.get_or_insert_with(NodeSpec::default).taints = Some(ts);
        n
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(
            tolerates(&toleration("dedicated", "", "gpu", ""), &t),
            "no operator is Equal, no effect is any"
        );
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoExecute"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &t));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "empty key + Exists tolerates everything"
        );
        assert!(!tolerates(&toleration("", "Exists", "", "NoExecute"), &t));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
        assert!(!tolerates(&toleration("dedicated", "Bogus", "gpu", ""), &t));
        // An empty taint value equals an empty toleration value.
        let empty = taint("node-role.kubernetes.io/control-plane", "", "NoSchedule");
        assert!(tolerates(
            &toleration("node-role.kubernetes.io/control-plane", "Equal", "", ""),
            &empty
        ));
    }

    #[test]
    fn cordoned_nodes_refuse_unless_tolerated() {
        let mut n = ready(node("n", "1", "1Gi", "10"), "True");
        n.spec.get_or_insert_with(NodeSpec::default).unschedulable = Some(true);
        let plain = info(pod("p", "", ""));
        assert_eq!(
            node_unschedulable(&plain, &n).unwrap_err().reasons,
            [ERR_NODE_UNSCHEDULABLE]
        );
        let ok = info(tolerating(
            pod("p", "", ""),
            vec![toleration(TAINT_UNSCHEDULABLE, "Exists", "", "NoSchedule")],
        ));
        assert!(node_unschedulable(&ok, &n).is_ok());
        assert!(node_unschedulable(&plain, &ready(node("m", "1", "1Gi", "10"), "True")).is_ok());
    }

    #[test]
    fn taints_block_no_schedule_and_no_execute_only() {
        let p = info(pod("p", "", ""));
        let soft = tainted(
            ready(node("n", "1", "1Gi", "10"), "True"),
            vec![taint("a", "b", "PreferNoSchedule")],
        );
        assert!(taint_toleration(&p, &soft).is_ok());
        for effect in ["NoSchedule", "NoExecute"] {
            let hard = tainted(
                ready(node("n", "1", "1Gi", "10"), "True"),
                vec![taint("a", "b", effect)],
            );
            let err = taint_toleration(&p, &hard).unwrap_err();
            assert_eq!(err.reasons, [ERR_UNTOLERATED_TAINT]);
            assert!(!err.resolvable);
            let tol = info(tolerating(
                pod("p", "", ""),
                vec![toleration("a", "Equal", "b", effect)],
            ));
            assert!(taint_toleration(&tol, &hard).is_ok());
        }
    }

    #[test]
    fn not_ready_nodes_act_as_tainted() {
        let p = info(pod("p", "", ""));
        assert!(taint_toleration(&p, &ready(node("n", "1", "1Gi", "10"), "True")).is_ok());
        for (status, key) in [("False", TAINT_NOT_READY), ("Unknown", TAINT_UNREACHABLE)] {
            let n = ready(node("n", "1", "1Gi", "10"), status);
            assert_eq!(readiness_taint(&n).unwrap().key, key);
            assert!(taint_toleration(&p, &n).is_err());
            let tol = info(tolerating(
                pod("p", "", ""),
                vec![toleration(key, "Exists", "", "NoSchedule")],
            ));
            assert!(taint_toleration(&tol, &n).is_ok());
            // A NoExecute-only toleration (what DaemonSets carry) is not enough.
            let ds = info(tolerating(
                pod("p", "", ""),
                vec![toleration(key, "Exists", "", "NoExecute")],
            ));
            assert!(taint_toleration(&ds, &n).is_err());
        }
        // No conditions at all: not ready yet.
        assert!(taint_toleration(&p, &node("n", "1", "1Gi", "10")).is_err());
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn labelled(name: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = ready(node(name, "1", "1Gi", "10"), "True");
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    fn term(
        exprs: Vec<NodeSelectorRequirement>,
        fields: Vec<NodeSelectorRequirement>,
    ) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: (!exprs.is_empty()).then_some(exprs),
            match_fields: (!fields.is_empty()).then_some(fields),
        }
    }

    #[test]
    fn selector_term_operators() {
        let n = labelled("n1", &[("zone", "a"), ("cores", "8")]);
        let m = |e| term_matches(&term(vec![e], vec![]), &n);
        assert!(m(expr("zone", "In", &["a", "b"])));
        assert!(!m(expr("zone", "In", &["b"])));
        assert!(!m(expr("missing", "In", &["a"])));
        assert!(m(expr("zone", "NotIn", &["b"])));
        assert!(
            m(expr("missing", "NotIn", &["b"])),
            "NotIn holds for an absent label"
        );
        assert!(!m(expr("zone", "NotIn", &["a"])));
        assert!(m(expr("zone", "Exists", &[])));
        assert!(!m(expr("missing", "Exists", &[])));
        assert!(m(expr("missing", "DoesNotExist", &[])));
        assert!(!m(expr("zone", "DoesNotExist", &[])));
        assert!(m(expr("cores", "Gt", &["4"])));
        assert!(!m(expr("cores", "Gt", &["8"])));
        assert!(m(expr("cores", "Lt", &["16"])));
        assert!(
            !m(expr("zone", "Gt", &["1"])),
            "a non-numeric label never compares"
        );
        assert!(
            !m(expr("cores", "Gt", &["1", "2"])),
            "Gt needs exactly one value"
        );
        assert!(!m(expr("missing", "Lt", &["100"])));
        assert!(!m(expr("zone", "Bogus", &["a"])));
        // All requirements of a term must hold.
        assert!(!term_matches(
            &term(
                vec![expr("zone", "In", &["a"]), expr("cores", "Lt", &["2"])],
                vec![]
            ),
            &n
        ));
        // An empty term matches nothing.
        assert!(!term_matches(&term(vec![], vec![]), &n));
    }

    #[test]
    fn match_fields_name_only() {
        let n = labelled("n1", &[]);
        let f = |e| term_matches(&term(vec![], vec![e]), &n);
        assert!(f(expr("metadata.name", "In", &["n1"])));
        assert!(!f(expr("metadata.name", "In", &["n2"])));
        assert!(f(expr("metadata.name", "NotIn", &["n2"])));
        assert!(!f(expr("metadata.uid", "In", &["n1"])));
        assert!(!f(expr("metadata.name", "Exists", &[])));
    }

    fn with_required(mut p: Pod, terms: Vec<NodeSelectorTerm>) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let n = labelled("n1", &[("disk", "ssd"), ("zone", "a")]);
        let mut p = pod("p", "", "");
        p.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        assert!(node_affinity(&info(p.clone()), &n).is_ok());
        p.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "hdd".to_string())].into());
        let err = node_affinity(&info(p), &n).unwrap_err();
        assert_eq!(err.reasons, [ERR_NODE_AFFINITY]);

        // Terms are ORed.
        let p = with_required(
            pod("p", "", ""),
            vec![
                term(vec![expr("zone", "In", &["b"])], vec![]),
                term(vec![expr("zone", "In", &["a"])], vec![]),
            ],
        );
        assert!(node_affinity(&info(p), &n).is_ok());
        let p = with_required(
            pod("p", "", ""),
            vec![term(vec![expr("zone", "In", &["b"])], vec![])],
        );
        assert!(node_affinity(&info(p), &n).is_err());
        // No terms: nothing matches.
        let p = with_required(pod("p", "", ""), vec![]);
        assert!(node_affinity(&info(p), &n).is_err());
        // Both nodeSelector and affinity must hold.
        let mut p = with_required(
            pod("p", "", ""),
            vec![term(vec![expr("zone", "In", &["a"])], vec![])],
        );
        p.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "hdd".to_string())].into());
        assert!(node_affinity(&info(p), &n).is_err());
    }

    #[test]
    fn host_ports_conflict_with_placed_pods() {
        let mut n = NodeInfo::new(Arc::new(ready(node("n", "4", "4Gi", "10"), "True")));
        n.add_pod(Arc::new(info(with_host_port(
            pod("a", "", ""),
            8080,
            Some("10.0.0.1"),
        ))));
        let same = info(with_host_port(pod("b", "", ""), 8080, None));
        let err = node_ports(&same, &n).unwrap_err();
        assert_eq!(err.reasons, [ERR_NODE_PORTS]);
        assert!(err.resolvable);
        let other_ip = info(with_host_port(pod("b", "", ""), 8080, Some("10.0.0.2")));
        assert!(node_ports(&other_ip, &n).is_ok());
        let other_port = info(with_host_port(pod("b", "", ""), 8081, None));
        assert!(node_ports(&other_port, &n).is_ok());
    }

    #[test]
    fn resources_fit_counts_requests_of_placed_pods() {
        let mut n = NodeInfo::new(Arc::new(ready(node("n", "2", "4Gi", "2"), "True")));
        n.add_pod(Arc::new(info(pod("a", "1500m", "3Gi"))));
        assert!(node_resources_fit(&info(pod("b", "500m", "1Gi")), &n).is_ok());
        let err = node_resources_fit(&info(pod("b", "600m", "2Gi")), &n).unwrap_err();
        assert_eq!(err.reasons, ["Insufficient cpu", "Insufficient memory"]);
        assert!(err.resolvable);
        n.add_pod(Arc::new(info(pod("c", "", ""))));
        let err = node_resources_fit(&info(pod("d", "", "")), &n).unwrap_err();
        assert_eq!(
            err.reasons,
            [ERR_TOO_MANY_PODS],
            "a zero-request pod is still counted"
        );
    }

    #[test]
    fn resources_fit_extended_and_ephemeral() {
        let mut raw = node("n", "2", "4Gi", "10");
        let alloc = raw.status.as_mut().unwrap().allocatable.as_mut().unwrap();
        alloc.insert(
            "ephemeral-storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        );
        let n = NodeInfo::new(Arc::new(raw));
        let mut p = pod("p", "", "");
        let req = p.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap();
        req.insert(
            "ephemeral-storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into()),
        );
        req.insert(
            "example.com/gpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
        );
        let err = node_resources_fit(&info(p), &n).unwrap_err();
        assert_eq!(
            err.reasons,
            [
                "Insufficient ephemeral-storage",
                "Insufficient example.com/gpu"
            ]
        );
    }

    #[test]
    fn spread_runs_after_resources_and_before_inter_pod_affinity() {
        use crate::inter_pod_affinity::tests::{affinity, term};
        use crate::snapshot::tests::{labelled_node, with_labels};
        use k8s_openapi::api::core::v1::TopologySpreadConstraint;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(labelled_node("a1", &[("zone", "a")])));
        snap.upsert_node(Arc::new(labelled_node("b1", &[("zone", "b")])));
        let web = |name: &str| Arc::new(info(with_labels(pod(name, "", ""), &[("app", "web")])));
        snap.add_pod("a1", web("w0"));
        snap.add_pod("a1", web("w1"));
        // Too big, skewed, and anti-affine to the web pods in zone a.
        let mut p = affinity(
            with_labels(pod("p", "100", ""), &[("app", "web")]),
            vec![],
            vec![term("app", "web", "zone")],
        );
        p.spec.as_mut().unwrap().topology_spread_constraints =
            Some(vec![TopologySpreadConstraint {
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                max_skew: 1,
                topology_key: "zone".into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                ..Default::default()
            }]);
        let big = info(p.clone());
        let state = PreFilterState::new(&snap, &big).unwrap();
        let a1 = snap.node("a1").unwrap();
        assert_eq!(
            run_filters(&big, a1, &state).unwrap_err().reasons,
            ["Insufficient cpu"]
        );
        p.spec.as_mut().unwrap().containers[0].resources = None;
        let small = info(p);
        let state = PreFilterState::new(&snap, &small).unwrap();
        assert_eq!(
            run_filters(&small, a1, &state).unwrap_err().reasons,
            [crate::pod_topology_spread::ERR_CONSTRAINTS]
        );
        assert!(run_filters(&small, snap.node("b1").unwrap(), &state).is_ok());
    }

    #[test]
    fn run_filters_stops_at_the_first_rejection() {
        let mut n = tainted(
            ready(node("n", "1", "1Gi", "10"), "True"),
            vec![taint("a", "", "NoSchedule")],
        );
        n.spec.get_or_insert_with(NodeSpec::default).unschedulable = Some(true);
        let n = NodeInfo::new(Arc::new(n));
        let none = PreFilterState::default();
        let err = run_filters(&info(pod("p", "4", "")), &n, &none).unwrap_err();
        assert_eq!(err.reasons, [ERR_NODE_UNSCHEDULABLE]);
        assert!(run_filters(&info(pod("p", "", "")), &NodeInfo::default(), &none).is_err());
    }
}
