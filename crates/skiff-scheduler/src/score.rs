//! Scores: of the nodes that pass the filters, which is best?
//!
//! The plugins and weights are upstream's defaults for the ones Skiff has:
//!
//! | plugin | weight | prefers |
//! |---|---|---|
//! | `NodeResourcesFit` (LeastAllocated, cpu and memory) | 1 | emptier nodes |
//! | `NodeResourcesBalancedAllocation` | 1 | nodes whose cpu and memory use stay level |
//! | `NodeAffinity` (preferred terms) | 2 | nodes matching the pod's preferences |
//! | `TaintToleration` (`PreferNoSchedule`) | 3 | nodes with fewer untolerated soft taints |
//! | `PodTopologySpread` (`ScheduleAnyway`) | 2 | domains with fewer matching pods |
//! | `InterPodAffinity` (preferred terms) | 2 | domains the pod's and placed pods' preferences favour |
//!
//! Each plugin scores 0–100; the node with the highest weighted sum wins.
//! `ImageLocality` is not here: Skiff's scheduler does not track node images.
//! The last two score from other pods (see [`pod_topology_spread`] and
//! [`inter_pod_affinity`]) and cost nothing for a pod without spread
//! constraints or preferred terms while no placed pod has affinity terms.
//!
//! [`pod_topology_spread`]: crate::pod_topology_spread
//! [`inter_pod_affinity`]: crate::inter_pod_affinity

use k8s_openapi::api::core::v1::{Node, Toleration};

use crate::filters::{term_matches, tolerated};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::{inter_pod_affinity, pod_topology_spread};

/// The highest score a plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

const WEIGHT_FIT: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TAINT_TOLERATION: i64 = 3;
const WEIGHT_POD_TOPOLOGY_SPREAD: i64 = 2;
const WEIGHT_INTER_POD_AFFINITY: i64 = 2;

/// `(allocatable - requested) * 100 / allocatable`, 0 when over-committed.
fn least_requested(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested) * MAX_NODE_SCORE / allocatable
}

/// LeastAllocated: the mean over cpu and memory of the free share left after
/// placing the pod, counting pods without requests at the scoring defaults.
/// Resources the node has none of are left out.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.non_zero_requested
                .milli_cpu
                .saturating_add(pod.non_zero_requests.milli_cpu),
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_requested
                .memory
                .saturating_add(pod.non_zero_requests.memory),
            node.allocatable.memory,
        ),
    ];
    let (mut sum, mut weights) = (0, 0);
    for (requested, allocatable) in pairs {
        if allocatable == 0 {
            continue;
        }
        sum += least_requested(requested, allocatable);
        weights += 1;
    }
    if weights == 0 { 0 } else { sum / weights }
}

/// BalancedAllocation: `(1 - std) * 100` over the cpu and memory fractions
/// (actual requests, capped at 1) after placing the pod; for two resources
/// the standard deviation is half their difference.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.requested
                .milli_cpu
                .saturating_add(pod.requests.milli_cpu),
            node.allocatable.milli_cpu,
        ),
        (
            node.requested.memory.saturating_add(pod.requests.memory),
            node.allocatable.memory,
        ),
    ];
    let fractions: Vec<f64> = pairs
        .iter()
        .filter(|(_, alloc)| *alloc > 0)
        .map(|&(req, alloc)| (req as f64 / alloc as f64).min(1.0))
        .collect();
    let std = match fractions.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// The raw preferred-node-affinity score: the sum of the weights of the
/// preferred terms the node matches.
pub fn node_affinity_raw(pod: &PodInfo, node: &Node) -> i64 {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| t.weight != 0 && term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// The raw taint score: how many `PreferNoSchedule` taints of the node the
/// pod does not tolerate (only tolerations with that effect, or none, count).
pub fn intolerable_prefer_no_schedule(pod: &PodInfo, node: &Node) -> i64 {
    let soft: Vec<Toleration> = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&soft, t))
        .count() as i64
}

/// Upstream's `DefaultNormalizeScore`: scales scores to 0–100 against the
/// highest; `reverse` turns "more is worse" into a score.
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            scores.fill(MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// The weighted total score of each feasible node, in the order given;
/// `snapshot` supplies the other pods for spreading and inter-pod affinity.
pub fn score_nodes(pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot) -> Vec<i64> {
    let node_objects: Vec<Option<&Node>> = nodes.iter().map(|n| n.node.as_deref()).collect();
    let mut affinity: Vec<i64> = node_objects
        .iter()
        .map(|n| n.map_or(0, |n| node_affinity_raw(pod, n)))
        .collect();
    normalize(&mut affinity, false);
    let mut taints: Vec<i64> = node_objects
        .iter()
        .map(|n| n.map_or(0, |n| intolerable_prefer_no_schedule(pod, n)))
        .collect();
    normalize(&mut taints, true);
    let spread = pod_topology_spread::score(snapshot, pod, nodes);
    let pod_affinity = inter_pod_affinity::score(snapshot, pod, nodes);
    let at = |scores: &Option<Vec<i64>>, i: usize| {
        scores.as_ref().and_then(|s| s.get(i)).copied().unwrap_or(0)
    };
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            WEIGHT_FIT * least_allocated(pod, n)
                + WEIGHT_BALANCED * balanced_allocation(pod, n)
                + WEIGHT_NODE_AFFINITY * affinity[i]
                + WEIGHT_TAINT_TOLERATION * taints[i]
                + WEIGHT_POD_TOPOLOGY_SPREAD * at(&spread, i)
                + WEIGHT_INTER_POD_AFFINITY * at(&pod_affinity, i)
        })
        .collect()
}

/// Picks the index of a highest score. Ties are broken by `tie_breaker`
/// (the scheduler passes a fresh random number per pod, as upstream picks
/// uniformly among equal nodes), so equal nodes share the load instead of the
/// first by name taking every pod.
pub fn select_host(scores: &[i64], tie_breaker: u64) -> Option<usize> {
    let best = *scores.iter().max()?;
    let ties: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] == best).collect();
    let pick = usize::try_from(tie_breaker % ties.len() as u64).unwrap_or(0);
    ties.get(pick).copied()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec,
        PreferredSchedulingTerm, Taint,
    };

    use super::*;
    use crate::snapshot::tests::{node, pod};

    fn info(p: k8s_openapi::api::core::v1::Pod) -> PodInfo {
        PodInfo::new(Arc::new(p))
    }

    #[test]
    fn least_allocated_matches_upstream_arithmetic() {
        // Upstream's example: node 4000m / 10000 bytes with 3000m / 5000
        // requested after the pod: cpu (4000-3000)*100/4000 = 25,
        // memory (10000-5000)*100/10000 = 50, mean 37.
        let mut n = NodeInfo::new(Arc::new(node("n", "4", "10000", "110")));
        n.add_pod(Arc::new(info(pod("a", "2", "3000"))));
        let p = info(pod("p", "1", "2000"));
        assert_eq!(least_allocated(&p, &n), 37);
        // Over-committed resources score 0.
        let big = info(pod("p", "8", "2000"));
        assert_eq!(least_allocated(&big, &n), 25);
    }

    #[test]
    fn least_allocated_counts_requestless_pods_at_defaults() {
        let n = NodeInfo::new(Arc::new(node("n", "1", "1Gi", "110")));
        let p = info(pod("p", "", ""));
        // cpu: (1000-100)*100/1000 = 90; memory: (1024-200)*100/1024 = 80.
        assert_eq!(least_allocated(&p, &n), 85);
    }

    #[test]
    fn balanced_allocation_prefers_level_use() {
        let n = NodeInfo::new(Arc::new(node("n", "4", "4Gi", "110")));
        // Half the cpu and half the memory: perfectly balanced.
        assert_eq!(balanced_allocation(&info(pod("p", "2", "2Gi")), &n), 100);
        // 3/4 cpu, 1/4 memory: std 0.25 → 75.
        assert_eq!(balanced_allocation(&info(pod("p", "3", "1Gi")), &n), 75);
        // Fractions cap at 1.
        assert_eq!(balanced_allocation(&info(pod("p", "8", "0")), &n), 50);
    }

    #[test]
    fn normalize_scales_and_reverses() {
        let mut s = [0, 5, 10];
        normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 1, 2];
        normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        let mut s = [0, 0];
        normalize(&mut s, false);
        assert_eq!(s, [0, 0]);
    }

    #[test]
    fn preferred_affinity_and_soft_taints_steer_the_choice() {
        let mut a = node("a", "4", "4Gi", "110");
        a.metadata.labels = Some([("zone".to_string(), "x".to_string())].into());
        let mut b = node("b", "4", "4Gi", "110");
        b.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "k".into(),
                effect: "PreferNoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let c = node("c", "4", "4Gi", "110");
        let mut p = pod("p", "1", "1Gi");
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "zone".into(),
                                operator: "In".into(),
                                values: Some(vec!["x".into()]),
                            }]),
                            match_fields: None,
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = info(p);
        assert_eq!(node_affinity_raw(&p, &a), 10);
        assert_eq!(intolerable_prefer_no_schedule(&p, &b), 1);
        let infos: Vec<NodeInfo> = [a, b, c]
            .into_iter()
            .map(|n| NodeInfo::new(Arc::new(n)))
            .collect();
        let refs: Vec<&NodeInfo> = infos.iter().collect();
        let scores = score_nodes(&p, &refs, &Snapshot::new());
        assert!(scores[0] > scores[2], "preferred node wins: {scores:?}");
        assert!(scores[2] > scores[1], "soft-tainted node loses: {scores:?}");
        assert_eq!(scores[0] - scores[2], 2 * MAX_NODE_SCORE);
        assert_eq!(scores[2] - scores[1], 3 * MAX_NODE_SCORE);
    }

    #[test]
    fn inter_pod_affinity_and_spread_carry_weight_two() {
        use crate::inter_pod_affinity::tests::term;
        use crate::snapshot::tests::{labelled_node, with_labels};
        use k8s_openapi::api::core::v1::{
            PodAffinity, TopologySpreadConstraint, WeightedPodAffinityTerm,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

        let mut snap = Snapshot::new();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            snap.upsert_node(Arc::new(labelled_node(name, &[("zone", zone)])));
        }
        // The only other pod sits on a2, so a1 and b1 differ by zone alone.
        snap.add_pod(
            "a2",
            Arc::new(info(with_labels(pod("cache", "", ""), &[("app", "cache")]))),
        );
        let mut p = with_labels(pod("p", "", ""), &[("app", "cache")]);
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 1,
                        pod_affinity_term: term("app", "cache", "zone"),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let feasible = |snap: &Snapshot| -> Vec<NodeInfo> {
            ["a1", "b1"]
                .iter()
                .map(|n| snap.node(n).unwrap().clone())
                .collect()
        };
        let nodes = feasible(&snap);
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let scores = score_nodes(&info(p.clone()), &refs, &snap);
        assert_eq!(
            scores[0] - scores[1],
            2 * MAX_NODE_SCORE,
            "affinity pulls to zone a"
        );

        // Spreading the same pods over zones pushes the other way, equally hard.
        p.spec.as_mut().unwrap().topology_spread_constraints =
            Some(vec![TopologySpreadConstraint {
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "cache".to_string())].into()),
                    ..Default::default()
                }),
                max_skew: 1,
                topology_key: "zone".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                ..Default::default()
            }]);
        let scores = score_nodes(&info(p), &refs, &snap);
        assert_eq!(scores[0], scores[1]);
    }

    #[test]
    fn emptier_node_wins() {
        let mut busy = NodeInfo::new(Arc::new(node("busy", "4", "4Gi", "110")));
        busy.add_pod(Arc::new(info(pod("x", "2", "2Gi"))));
        let idle = NodeInfo::new(Arc::new(node("idle", "4", "4Gi", "110")));
        let p = info(pod("p", "1", "1Gi"));
        let scores = score_nodes(&p, &[&busy, &idle], &Snapshot::new());
        assert_eq!(select_host(&scores, 0), Some(1));
    }

    #[test]
    fn ties_are_broken_by_the_tie_breaker() {
        let scores = [5, 9, 1, 9, 9];
        assert_eq!(select_host(&scores, 0), Some(1));
        assert_eq!(select_host(&scores, 1), Some(3));
        assert_eq!(select_host(&scores, 2), Some(4));
        assert_eq!(select_host(&scores, 3), Some(1));
        assert_eq!(select_host(&[], 0), None);
    }
}
