//! One scheduling decision: filter the nodes, score the feasible ones, pick
//! one; or explain, in upstream's words, why none fits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::filters::{Rejection, run_filters};
use crate::score::{score_nodes, select_host};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// Below this many nodes every node is checked, as upstream.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// The postfilter reason for a node where evicting pods cannot help.
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The postfilter reason for a node with no lower-priority pod to evict.
pub const NO_PREEMPTION_VICTIMS: &str = "No preemption victims found for incoming pod";
/// The postfilter reason for a node where evicting lower-priority pods would
/// make room. Skiff does not preempt yet, so it says so instead of acting.
pub const PREEMPTION_UNSUPPORTED: &str = "Preemption is not supported by this scheduler yet";

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
        /// Each reason with the number of nodes that gave it.
        reasons: BTreeMap<String, usize>,
        /// The preemption part of the message (without the `preemption: `
        /// prefix).
        postfilter: String,
    },
}

/// `0/N nodes are available: 2 Insufficient cpu, 1 X.`: a histogram of
/// reasons, each `count reason`, sorted as strings (so `10 …` sorts before
/// `2 …`, exactly as upstream's `sort.Strings`).
fn histogram_message(num_all_nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
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
                reasons,
                postfilter,
            } => {
                f.write_str(&histogram_message(*num_all_nodes, reasons))?;
                if !postfilter.is_empty() {
                    write!(f, " preemption: {postfilter}")?;
                }
                Ok(())
            }
        }
    }
}

/// Filters, scores and picks a node for `pod`.
///
/// `start` rotates where the search begins (taken modulo the node count);
/// `tie_breaker` picks among equally scored nodes.
pub fn schedule(
    snapshot: &Snapshot,
    pod: &PodInfo,
    percentage_of_nodes_to_score: u32,
    start: usize,
    tie_breaker: u64,
) -> Result<Placement, FitError> {
    let nodes: Vec<&NodeInfo> = snapshot.nodes().collect();
    if nodes.is_empty() {
        return Err(FitError::NoNodes);
    }
    let want = num_feasible_nodes_to_find(percentage_of_nodes_to_score, nodes.len());
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut rejected: Vec<(&NodeInfo, Rejection)> = Vec::new();
    let mut evaluated = 0;
    for i in 0..nodes.len() {
        let node = nodes[(start + i) % nodes.len()];
        evaluated += 1;
        match run_filters(pod, node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(rejection) => rejected.push((node, rejection)),
        }
    }

    if feasible.is_empty() {
        let mut reasons = BTreeMap::new();
        for (_, rejection) in &rejected {
            for reason in &rejection.reasons {
                *reasons.entry(reason.clone()).or_insert(0) += 1;
            }
        }
        return Err(FitError::Unschedulable {
            num_all_nodes: nodes.len(),
            reasons,
            postfilter: postfilter_message(pod, nodes.len(), &rejected),
        });
    }

    let scores = score_nodes(pod, &feasible);
    let best = select_host(&scores, tie_breaker).unwrap_or(0);
    Ok(Placement {
        node: feasible[best].name().to_string(),
        evaluated,
    })
}

/// The preemption half of the message, from a dry run of upstream's default
/// preemption: a node refused for a reason eviction cannot fix is "not
/// helpful"; one with no lower-priority pods has "no victims"; one where even
/// evicting every lower-priority pod leaves the pod unfit keeps the filter's
/// reasons. Nodes where eviction *would* make room are reported as such,
/// because Skiff does not preempt yet.
fn postfilter_message(
    pod: &PodInfo,
    num_all_nodes: usize,
    rejected: &[(&NodeInfo, Rejection)],
) -> String {
    let never = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never");
    if never {
        return "not eligible due to preemptionPolicy=Never.".to_string();
    }
    let mut reasons = BTreeMap::new();
    let mut count = |reason: &str| *reasons.entry(reason.to_string()).or_insert(0) += 1;
    for (node, rejection) in rejected {
        if !rejection.resolvable {
            count(PREEMPTION_NOT_HELPFUL);
            continue;
        }
        let victims: Vec<Arc<PodInfo>> = node
            .pods
            .values()
            .filter(|p| p.priority < pod.priority)
            .cloned()
            .collect();
        if victims.is_empty() {
            count(NO_PREEMPTION_VICTIMS);
            continue;
        }
        let mut without = (*node).clone();
        for victim in &victims {
            without.remove_pod(&victim.key);
        }
        match run_filters(pod, &without) {
            Ok(()) => count(PREEMPTION_UNSUPPORTED),
            Err(still) => still.reasons.iter().for_each(|r| count(r)),
        }
    }
    histogram_message(num_all_nodes, &reasons)
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
        let err = schedule(&snap, &p, 0, 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
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
        let err = schedule(&snap, &info(pod("p", "", "")), 0, 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
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
        let err = schedule(&snap, &info(p), 0, 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn preemption_dry_run_looks_at_lower_priority_pods() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready(node("w1", "2", "1Gi", "110"))));
        snap.upsert_node(Arc::new(ready(node("w2", "2", "1Gi", "110"))));
        // w1: a low-priority pod whose eviction would make room.
        snap.add_pod("w1", info(prioritized(pod("low", "2", ""), 0)));
        // w2: an equal-priority pod: no victims.
        snap.add_pod("w2", info(prioritized(pod("same", "2", ""), 10)));
        let err = schedule(&snap, &info(prioritized(pod("p", "1", ""), 10)), 0, 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: \
                 1 No preemption victims found for incoming pod, 1 {PREEMPTION_UNSUPPORTED}."
            )
        );
        // A pod too big even for an empty node keeps the filter's reason.
        let err =
            schedule(&snap, &info(prioritized(pod("huge", "3", ""), 10)), 0, 0, 0).unwrap_err();
        assert!(err.to_string().ends_with(
            "preemption: 0/2 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod."
        ));
    }

    #[test]
    fn no_nodes() {
        let err = schedule(&Snapshot::new(), &info(pod("p", "", "")), 0, 0, 0).unwrap_err();
        assert_eq!(err, FitError::NoNodes);
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
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
