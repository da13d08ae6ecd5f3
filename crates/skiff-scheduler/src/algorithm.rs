//! One scheduling decision: filter the nodes, score the feasible ones, pick
//! one; or, when none fits, try preemption, and explain in upstream's words
//! why the pod has to wait.
//!
//! A pod nominated to a node (by an earlier preemption) tries that node
//! first. Pods nominated to a node with at least the incoming pod's priority
//! are counted on it as if placed: the room preemption made for them is not
//! given away. As upstream, a node must pass the filters both with and
//! without them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::filters::{FilterResult, PreFilterState, Rejection, run_filters};
use crate::preemption::{self, Candidate, PostFilter};
use crate::score::{score_nodes, select_host};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// Below this many nodes every node is checked, as upstream.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes to find before scoring, given
/// `percentageOfNodesToScore` (0 = upstream's adaptive default: 50% minus one
/// point per 125 nodes, at least 5%) and the cluster size. Small clusters are
/// always searched fully.
pub fn num_feasible_nodes_to_find(percentage: u32, all_nodes: usize) -> usize {
    if all_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return all_nodes;
    }
    let percentage = match usize::try_from(percentage).unwrap_or(0) {
        0 => 50usize
            .saturating_sub(all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE),
        p => p,
    };
    (all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen node.
    pub node: String,
    /// How many nodes the filters looked at (the next search starts after
    /// them, so every node gets its turn, as upstream rotates).
    pub evaluated: usize,
}

/// Why a pod fits nowhere, printed as upstream's `FailedScheduling` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitError {
    /// The cluster has no nodes at all.
    NoNodes,
    /// Every node refused the pod.
    Unschedulable {
        /// Nodes in the cluster.
        num_all_nodes: usize,
        /// Why the pod was refused before any node was tried; then `reasons`
        /// is empty and the message gives this instead.
        pre_filter: Option<String>,
        /// Each reason with the number of nodes that gave it.
        reasons: BTreeMap<String, usize>,
        /// The preemption part of the message (without the `preemption: `
        /// prefix); empty when preemption made room.
        postfilter: String,
    },
}

/// Counts each reason once per node that gave it.
pub(crate) fn count_reasons<'a>(
    rejections: impl IntoIterator<Item = &'a Rejection>,
) -> BTreeMap<String, usize> {
    let mut reasons = BTreeMap::new();
    for rejection in rejections {
        for reason in &rejection.reasons {
            *reasons.entry(reason.clone()).or_insert(0) += 1;
        }
    }
    reasons
}

/// `0/N nodes are available: 2 Insufficient cpu, 1 X.`: a histogram of
/// reasons, each `count reason`, sorted as strings (so `10 …` sorts before
/// `2 …`, exactly as upstream's `sort.Strings`).
pub(crate) fn histogram_message(num_all_nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitError::NoNodes => f.write_str("no nodes available to schedule pods"),
            FitError::Unschedulable {
                num_all_nodes,
                pre_filter,
                reasons,
                postfilter,
            } => {
                match pre_filter {
                    Some(message) => {
                        write!(f, "0/{num_all_nodes} nodes are available: {message}.")?;
                    }
                    None => f.write_str(&histogram_message(*num_all_nodes, reasons))?,
                }
                if !postfilter.is_empty() {
                    write!(f, " preemption: {postfilter}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why no node fits: every node's rejection, and the filters' precomputed
/// state, which preemption reuses.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// Nodes in the cluster.
    pub num_all_nodes: usize,
    /// Why the pod fits no node before any was tried (upstream's PreFilter
    /// rejection); then no node is in `rejections`, and preemption, which
    /// only tries the nodes refused for reasons eviction may lift, finds that
    /// it cannot help.
    pub pre_filter: Option<String>,
    /// Each node (by name) and why it refused the pod, in the order tried.
    pub rejections: Vec<(String, Rejection)>,
    /// What the filters computed for the pod.
    pub state: PreFilterState,
}

impl Diagnosis {
    /// The failure message, with `postfilter` as its preemption part.
    pub fn fit_error(&self, postfilter: String) -> FitError {
        if self.num_all_nodes == 0 {
            return FitError::NoNodes;
        }
        FitError::Unschedulable {
            num_all_nodes: self.num_all_nodes,
            pre_filter: self.pre_filter.clone(),
            reasons: count_reasons(self.rejections.iter().map(|(_, r)| r)),
            postfilter,
        }
    }

    /// The rejection of the node called `name`, if it was tried.
    pub fn rejection(&self, name: &str) -> Option<&Rejection> {
        self.rejections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
    }
}

/// Runs the filters on `node`, counting the pods nominated to it with at
/// least `pod`'s priority as placed there (then, if it passes, without them
/// too, as either may be what happens).
pub fn filter_with_nominated(
    snapshot: &Snapshot,
    pod: &PodInfo,
    node: &NodeInfo,
    state: &mut PreFilterState,
) -> FilterResult {
    let nominated: Vec<Arc<PodInfo>> = if snapshot.has_nominations() {
        snapshot
            .nominated_pods(node.name())
            .filter(|p| p.key != pod.key && p.priority >= pod.priority)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let Some(node_object) = node.node.as_deref().filter(|_| !nominated.is_empty()) else {
        return run_filters(pod, node, state);
    };
    let mut with = node.clone();
    for p in &nominated {
        with.add_pod(p.clone());
        state.add_pod(pod, p, node_object);
    }
    let result = run_filters(pod, &with, state);
    for p in &nominated {
        state.remove_pod(pod, p, node_object);
    }
    result?;
    run_filters(pod, node, state)
}

/// Filters, scores and picks a node for `pod`, or says why none fits.
///
/// `start` rotates where the search begins (taken modulo the node count);
/// `tie_breaker` picks among equally scored nodes.
pub fn schedule(
    snapshot: &Snapshot,
    pod: &PodInfo,
    percentage_of_nodes_to_score: u32,
    start: usize,
    tie_breaker: u64,
) -> Result<Placement, Diagnosis> {
    let nodes: Vec<&NodeInfo> = snapshot.nodes().collect();
    let refused = |pre_filter: Option<String>| Diagnosis {
        num_all_nodes: nodes.len(),
        pre_filter,
        rejections: Vec::new(),
        state: PreFilterState::default(),
    };
    if nodes.is_empty() {
        return Err(refused(None));
    }
    let mut state = PreFilterState::new(snapshot, pod).map_err(|message| refused(Some(message)))?;
    // The node preemption made room on is most likely the one that fits.
    if let Some(nominated) = snapshot.nomination(&pod.key)
        && let Some(node) = snapshot.node(nominated).filter(|n| n.node.is_some())
        && filter_with_nominated(snapshot, pod, node, &mut state).is_ok()
    {
        return Ok(Placement {
            node: nominated.to_string(),
            evaluated: 0,
        });
    }
    let want = num_feasible_nodes_to_find(percentage_of_nodes_to_score, nodes.len());
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut rejections: Vec<(String, Rejection)> = Vec::new();
    let mut evaluated = 0;
    for i in 0..nodes.len() {
        let node = nodes[(start + i) % nodes.len()];
        evaluated += 1;
        match filter_with_nominated(snapshot, pod, node, &mut state) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(rejection) => rejections.push((node.name().to_string(), rejection)),
        }
    }

    if feasible.is_empty() {
        return Err(Diagnosis {
            num_all_nodes: nodes.len(),
            pre_filter: None,
            rejections,
            state,
        });
    }

    let scores = score_nodes(pod, &feasible, snapshot);
    let best = select_host(&scores, tie_breaker).unwrap_or(0);
    Ok(Placement {
        node: feasible[best].name().to_string(),
        evaluated,
    })
}

/// What to do with a pod after one scheduling attempt.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Bind it.
    Bind(Placement),
    /// It fits nowhere, but evicting `candidate.victims` makes room on
    /// `candidate.node`: evict them, nominate the pod there and retry it once
    /// they are gone.
    Preempt {
        /// The failure to report for this attempt.
        fit: FitError,
        /// Where, and whom to evict.
        candidate: Candidate,
    },
    /// It fits nowhere and preemption cannot help now.
    Wait {
        /// The failure to report.
        fit: FitError,
        /// Whether the pod's nomination no longer holds and must be cleared.
        clear_nomination: bool,
    },
}

/// One scheduling attempt: [`schedule`], then, if no node fits, upstream's
/// default preemption. `preemption_offset` picks where the candidate search
/// starts (the scheduler passes a random number, as upstream does).
pub fn decide(
    snapshot: &Snapshot,
    pod: &PodInfo,
    percentage_of_nodes_to_score: u32,
    start: usize,
    tie_breaker: u64,
    preemption_offset: usize,
) -> Decision {
    let mut diagnosis = match schedule(
        snapshot,
        pod,
        percentage_of_nodes_to_score,
        start,
        tie_breaker,
    ) {
        Ok(placement) => return Decision::Bind(placement),
        Err(diagnosis) => diagnosis,
    };
    if diagnosis.num_all_nodes == 0 {
        return Decision::Wait {
            fit: FitError::NoNodes,
            clear_nomination: false,
        };
    }
    match preemption::preempt(snapshot, pod, &mut diagnosis, preemption_offset) {
        PostFilter::NotEligible(message) => Decision::Wait {
            fit: diagnosis.fit_error(message),
            clear_nomination: false,
        },
        PostFilter::NoCandidate(message) => Decision::Wait {
            fit: diagnosis.fit_error(message),
            clear_nomination: true,
        },
        PostFilter::Candidate(candidate) => Decision::Preempt {
            fit: diagnosis.fit_error(String::new()),
            candidate,
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, Taint};

    use super::*;
    use crate::filters::ERR_UNTOLERATED_TAINT;
    use crate::snapshot::tests::{node, pod};

    fn ready(mut n: Node) -> Node {
        n.status.get_or_insert_with(NodeStatus::default).conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        n
    }

    fn control_plane(name: &str) -> Node {
        let mut n = ready(node(name, "8", "8Gi", "110"));
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    fn info(p: Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn prioritized(mut p: Pod, priority: i32) -> Pod {
        p.spec.as_mut().unwrap().priority = Some(priority);
        p
    }

    /// The failure message of a pod that fits nowhere and cannot preempt.
    fn failure(snap: &Snapshot, p: &PodInfo) -> String {
        match decide(snap, p, 0, 0, 0, 0) {
            Decision::Wait { fit, .. } => fit.to_string(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn feasible_node_count_follows_upstream() {
        assert_eq!(num_feasible_nodes_to_find(0, 10), 10);
        assert_eq!(num_feasible_nodes_to_find(50, 99), 99);
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420); // 50 - 8 = 42%
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300); // floor at 5%
        assert_eq!(num_feasible_nodes_to_find(10, 500), 100); // floor at 100 nodes
        assert_eq!(num_feasible_nodes_to_find(30, 1000), 300);
        assert_eq!(num_feasible_nodes_to_find(100, 1000), 1000);
    }

    #[test]
    fn message_matches_upstream_format() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(control_plane("cp")));
        for name in ["w1", "w2"] {
            snap.upsert_node(Arc::new(ready(node(name, "1", "1Gi", "110"))));
        }
        let p = info(pod("big", "2", ""));
        assert_eq!(
            failure(&snap, &p),
            format!(
                "0/3 nodes are available: 1 {ERR_UNTOLERATED_TAINT}, 2 Insufficient cpu. \
                 preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
                 2 No preemption victims found for incoming pod."
            )
        );
    }

    #[test]
    fn reasons_sort_as_strings_and_count_every_reason() {
        let mut reasons = BTreeMap::new();
        reasons.insert("Insufficient cpu".to_string(), 10);
        reasons.insert("Insufficient memory".to_string(), 2);
        reasons.insert("Too many pods".to_string(), 1);
        assert_eq!(
            histogram_message(12, &reasons),
            "0/12 nodes are available: 1 Too many pods, 10 Insufficient cpu, 2 Insufficient memory."
        );
        assert_eq!(
            histogram_message(0, &BTreeMap::new()),
            "0/0 nodes are available:"
        );
    }

    #[test]
    fn only_unresolvable_reasons_say_preemption_is_not_helpful() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(control_plane("cp1")));
        snap.upsert_node(Arc::new(control_plane("cp2")));
        assert_eq!(
            failure(&snap, &info(pod("p", "", ""))),
            format!(
                "0/2 nodes are available: 2 {ERR_UNTOLERATED_TAINT}. preemption: 0/2 nodes are \
                 available: 2 Preemption is not helpful for scheduling."
            )
        );
    }

    #[test]
    fn preemption_policy_never() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready(node("w", "1", "1Gi", "110"))));
        let mut p = pod("p", "2", "");
        p.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            failure(&snap, &info(p)),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn preemption_looks_at_lower_priority_pods() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready(node("w1", "2", "1Gi", "110"))));
        snap.upsert_node(Arc::new(ready(node("w2", "2", "1Gi", "110"))));
        // w1: a low-priority pod whose eviction would make room.
        snap.add_pod("w1", info(prioritized(pod("low", "2", ""), 0)));
        // w2: an equal-priority pod: no victims.
        snap.add_pod("w2", info(prioritized(pod("same", "2", ""), 10)));
        match decide(&snap, &info(prioritized(pod("p", "1", ""), 10)), 0, 0, 0, 0) {
            Decision::Preempt { fit, candidate } => {
                assert_eq!(
                    fit.to_string(),
                    "0/2 nodes are available: 2 Insufficient cpu."
                );
                assert_eq!(candidate.node, "w1");
                assert_eq!(candidate.victims.len(), 1);
                assert_eq!(candidate.victims[0].key, "default/low");
            }
            other => panic!("{other:?}"),
        }
        // A pod too big even for an empty node keeps the filter's reason.
        assert!(failure(&snap, &info(prioritized(pod("huge", "3", ""), 10))).ends_with(
            "preemption: 0/2 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod."
        ));
    }

    /// Schedules `pods` one after another, assuming each onto its node as the
    /// scheduler does, and returns where each went (or its failure).
    fn place_all(snap: &mut Snapshot, pods: Vec<Pod>) -> Vec<String> {
        pods.into_iter()
            .enumerate()
            .map(|(i, p)| {
                let p = info(p);
                match decide(snap, &p, 0, i, i as u64, 0) {
                    Decision::Bind(placement) => {
                        snap.add_pod(&placement.node, p);
                        placement.node
                    }
                    Decision::Wait { fit, .. } => fit.to_string(),
                    Decision::Preempt { candidate, .. } => format!("preempt on {}", candidate.node),
                }
            })
            .collect()
    }

    #[test]
    fn anti_affine_replicas_take_one_node_each() {
        use crate::inter_pod_affinity::tests::{affinity, term};
        use crate::snapshot::tests::{ready_node, with_labels};
        let mut snap = Snapshot::new();
        for n in ["n1", "n2", "n3"] {
            snap.upsert_node(Arc::new(ready_node(n, "8")));
        }
        let replica = |i: usize| {
            affinity(
                with_labels(pod(&format!("web-{i}"), "", ""), &[("app", "web")]),
                vec![],
                vec![term("app", "web", "kubernetes.io/hostname")],
            )
        };
        let mut placed = place_all(&mut snap, (0..4).map(replica).collect());
        let last = placed.pop().unwrap();
        placed.sort();
        assert_eq!(placed, ["n1", "n2", "n3"]);
        assert_eq!(
            last,
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
             preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
        // An unrelated pod is refused by none of them.
        let other = info(pod("other", "", ""));
        assert!(matches!(
            decide(&snap, &other, 0, 0, 0, 0),
            Decision::Bind(_)
        ));
        // A web pod without terms of its own is refused by theirs.
        let plain = info(with_labels(pod("plain", "", ""), &[("app", "web")]));
        match decide(&snap, &plain, 0, 0, 0, 0) {
            Decision::Wait { fit, .. } => assert!(fit.to_string().starts_with(
                "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
            )),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hard_spread_fills_zones_evenly() {
        use crate::snapshot::tests::{labelled_node, with_labels};
        use k8s_openapi::api::core::v1::TopologySpreadConstraint;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let mut snap = Snapshot::new();
        // Zone a has three nodes, b and c one each: without spreading,
        // least-allocated scoring would not care about zones.
        for (name, zone) in [
            ("a1", "a"),
            ("a2", "a"),
            ("a3", "a"),
            ("b1", "b"),
            ("c1", "c"),
        ] {
            snap.upsert_node(Arc::new(labelled_node(name, &[("zone", zone)])));
        }
        let replica = |i: usize| {
            let mut p = with_labels(pod(&format!("web-{i}"), "", ""), &[("app", "web")]);
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
            p
        };
        let placed = place_all(&mut snap, (0..6).map(replica).collect());
        let mut per_zone = BTreeMap::new();
        for node in &placed {
            *per_zone.entry(&node[..1]).or_insert(0) += 1;
        }
        assert_eq!(per_zone, BTreeMap::from([("a", 2), ("b", 2), ("c", 2)]));
    }

    #[test]
    fn the_nominated_node_is_tried_first() {
        let mut snap = Snapshot::new();
        for name in ["w1", "w2", "w3"] {
            snap.upsert_node(Arc::new(ready(node(name, "4", "4Gi", "110"))));
        }
        // w3 is the busiest node, so scoring alone would never pick it.
        snap.add_pod("w3", info(pod("busy", "3", "3Gi")));
        let p = info(pod("p", "500m", ""));
        snap.nominate("w3", p.clone());
        for start in 0..3 {
            assert_eq!(
                schedule(&snap, &p, 0, start, 0).unwrap(),
                Placement {
                    node: "w3".into(),
                    evaluated: 0
                }
            );
        }
        // When it no longer fits there, the search goes on as usual.
        let big = info(pod("big", "2", ""));
        snap.nominate("w3", big.clone());
        assert_ne!(schedule(&snap, &big, 0, 0, 0).unwrap().node, "w3");
    }

    #[test]
    fn no_nodes() {
        let diagnosis = schedule(&Snapshot::new(), &info(pod("p", "", "")), 0, 0, 0).unwrap_err();
        assert_eq!(diagnosis.fit_error(String::new()), FitError::NoNodes);
        assert_eq!(
            failure(&Snapshot::new(), &info(pod("p", "", ""))),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn picks_a_feasible_node_and_sees_reservations() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(control_plane("cp")));
        snap.upsert_node(Arc::new(ready(node("w1", "2", "2Gi", "110"))));
        snap.upsert_node(Arc::new(ready(node("w2", "2", "2Gi", "110"))));
        let first = info(pod("a", "1500m", "1Gi"));
        let placed = schedule(&snap, &first, 0, 0, 0).unwrap();
        assert_ne!(placed.node, "cp");
        assert_eq!(placed.evaluated, 3);
        // Assume it, as the scheduler does; the next one must go elsewhere.
        snap.add_pod(&placed.node, first);
        for tie in 0..4 {
            let second = info(pod("b", "1", "1Gi"));
            let other = schedule(&snap, &second, 0, 0, tie).unwrap();
            assert_ne!(other.node, placed.node);
            assert_ne!(other.node, "cp");
        }
    }

    #[test]
    fn start_index_rotates_and_bounds_the_search() {
        let mut snap = Snapshot::new();
        for i in 0..150 {
            snap.upsert_node(Arc::new(ready(node(
                &format!("n{i:03}"),
                "1",
                "1Gi",
                "110",
            ))));
        }
        let p = info(pod("p", "100m", ""));
        let placed = schedule(&snap, &p, 10, 140, 0).unwrap();
        assert_eq!(
            placed.evaluated, 100,
            "stops once enough feasible nodes are found"
        );
    }
}
