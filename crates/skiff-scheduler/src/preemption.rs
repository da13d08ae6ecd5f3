//! `DefaultPreemption`: when a pod fits nowhere, find a node where evicting
//! pods of lower priority makes room, and the fewest and least important
//! such pods.
//!
//! The steps are upstream's:
//!
//! 1. **Eligibility.** A pod with `preemptionPolicy: Never` never preempts.
//!    A pod already nominated to a node where a lower-priority pod is still
//!    terminating because of preemption waits for it rather than evicting
//!    more.
//! 2. **Candidates.** Only nodes refused for reasons eviction can fix
//!    (resources, ports, anti-affinity, spread skew) are tried, starting at a
//!    random offset, until `max(10% of them, 100)` candidates are found, at
//!    least one of which violates no PodDisruptionBudget. On each, every
//!    lower-priority pod is removed; if the pod still does not fit, the node
//!    is out. Otherwise the removed pods are put back one by one and each
//!    that can stay without the pod losing its fit is *reprieved*; the rest
//!    are the node's victims. Pods whose eviction would take a budget below
//!    zero (counting the node's evictions in importance order, and not
//!    counting pods the budget already lists as disrupted) are put back
//!    first, so they are the last to go; each of them that still goes is a
//!    *PDB violation*. Within each group the most important pods (higher
//!    priority, then longer running) come first.
//! 3. **Choice.** Among candidates, the one with the fewest PDB violations
//!    wins, then the one whose most important victim has the lowest
//!    priority, then the lowest sum of victim priorities, then the fewest
//!    victims, then the one whose most important victims started latest, then
//!    the first found (candidates without violations are listed first).
//!
//! Budgets only steer the choice: as upstream, the scheduler deletes its
//! victims rather than evicting them, so a candidate that violates budgets
//! is still taken when it is the only one.
//!
//! This module only decides; the scheduler carries it out (DisruptionTarget
//! condition, DELETE, `Preempted` event, `nominatedNodeName`).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use skiff_api::selector::LabelSelector;

use crate::algorithm::{Diagnosis, count_reasons, filter_with_nominated, histogram_message};
use crate::filters::Rejection;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot, label_selector};

/// The postfilter reason for a node where evicting pods cannot help.
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The postfilter reason for a node with no lower-priority pod to evict.
pub const NO_PREEMPTION_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Why a pod with `preemptionPolicy: Never` does not preempt.
pub const NOT_ELIGIBLE_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// Why a pod whose earlier victims are still terminating does not preempt
/// again.
pub const NOT_ELIGIBLE_TERMINATING: &str =
    "not eligible due to a terminating pod on the nominated node.";

/// The `DisruptionTarget` condition reason the scheduler sets on victims.
pub const REASON_PREEMPTION_BY_SCHEDULER: &str = "PreemptionByScheduler";

/// Upstream's default `minCandidateNodesPercentage`.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// Upstream's default `minCandidateNodesAbsolute`.
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// A node where the pod fits once `victims` are gone.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// The pods to evict, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many of the victims a PodDisruptionBudget does not allow to go.
    pub pdb_violations: usize,
}

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionBudget {
    /// The budget's namespace; it only covers pods there.
    pub namespace: String,
    /// `spec.selector`; `None` for a missing or empty selector, which (for
    /// the scheduler, as upstream) selects no pod.
    selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
    /// `status.disruptedPods`: pods whose eviction the API server already
    /// counted against the budget.
    disrupted_pods: HashSet<String>,
}

impl DisruptionBudget {
    /// Reads a `policy/v1` PodDisruptionBudget.
    pub fn new(pdb: &PodDisruptionBudget) -> DisruptionBudget {
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| {
                s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            })
            .map(|s| label_selector(Some(s), Vec::new()));
        let status = pdb.status.as_ref();
        DisruptionBudget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            disruptions_allowed: status.and_then(|s| s.disruptions_allowed).unwrap_or(0),
            disrupted_pods: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Whether the budget covers `pod` and has not counted it as disrupted
    /// yet, i.e. evicting it uses up one allowed disruption.
    fn charges(&self, pod: &PodInfo) -> bool {
        let name = pod.pod.metadata.name.as_deref().unwrap_or_default();
        self.namespace == pod.namespace()
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(pod.labels()))
            && !self.disrupted_pods.contains(name)
    }
}

/// Splits `pods` (in order) into those whose eviction, together with the
/// earlier ones', would take some budget below zero, and the rest (upstream's
/// `filterPodsWithPDBViolation`). Both keep the order of `pods`.
pub fn split_by_budget_violation<'a>(
    pods: Vec<Arc<PodInfo>>,
    budgets: impl IntoIterator<Item = &'a DisruptionBudget>,
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let budgets: Vec<&DisruptionBudget> = budgets.into_iter().collect();
    let mut allowed: Vec<i64> = budgets
        .iter()
        .map(|b| i64::from(b.disruptions_allowed))
        .collect();
    let (mut violating, mut other) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        // A pod without labels matches no budget.
        if !pod.labels().is_empty() {
            for (budget, left) in budgets.iter().zip(allowed.iter_mut()) {
                if budget.charges(&pod) {
                    *left -= 1;
                    violates |= *left < 0;
                }
            }
        }
        if violates {
            violating.push(pod);
        } else {
            other.push(pod);
        }
    }
    (violating, other)
}

/// What preemption concluded.
#[derive(Debug, Clone)]
pub enum PostFilter {
    /// The pod may not preempt now; the message says why.
    NotEligible(String),
    /// No node would fit even after evictions; the message is the per-node
    /// histogram, as upstream prints it.
    NoCandidate(String),
    /// Evict the victims and nominate the pod to the node.
    Candidate(Candidate),
}

/// How many candidates to look for among `potential` nodes.
pub fn num_candidates(potential: usize) -> usize {
    (potential * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(potential)
}

/// Whether a pod carries the `DisruptionTarget` condition the scheduler sets
/// on its victims.
pub fn marked_for_preemption(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
        .is_some_and(|c| {
            c.status == "True" && c.reason.as_deref() == Some(REASON_PREEMPTION_BY_SCHEDULER)
        })
}

/// Whether a pod is terminating because the scheduler preempted it.
pub fn terminating_by_preemption(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && marked_for_preemption(pod)
}

/// A pod's start time in nanoseconds; a pod that has not started counts as
/// starting now, i.e. after every pod that has.
fn start_time(pod: &PodInfo) -> i128 {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(i128::MAX, |t| t.0.as_nanosecond())
}

/// Upstream's `MoreImportantPod` as an ordering (`Less` = more important):
/// higher priority first, then the one that started earlier. Keys break the
/// remaining ties so the order is deterministic.
pub fn more_important_first(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| start_time(a).cmp(&start_time(b)))
        .then_with(|| a.key.cmp(&b.key))
}

/// Runs upstream's default preemption for `pod`, which fit nowhere for the
/// reasons in `diagnosis`. `offset` picks where the candidate search starts.
pub fn preempt(
    snapshot: &Snapshot,
    pod: &PodInfo,
    diagnosis: &mut Diagnosis,
    offset: usize,
) -> PostFilter {
    if let Some(reason) = not_eligible(snapshot, pod, diagnosis) {
        return PostFilter::NotEligible(reason.to_string());
    }
    let potential: Vec<&NodeInfo> = diagnosis
        .rejections
        .iter()
        .filter(|(_, r)| r.resolvable)
        .filter_map(|(name, _)| snapshot.node(name))
        .filter(|n| n.node.is_some())
        .collect();
    let mut refused: Vec<Rejection> = Vec::new();
    let mut candidates = Vec::new();
    let mut violating = Vec::new();
    if !potential.is_empty() {
        let wanted = num_candidates(potential.len());
        for i in 0..potential.len() {
            let node = potential[(offset + i) % potential.len()];
            match select_victims_on_node(snapshot, pod, node, &mut diagnosis.state) {
                Ok(candidate) if !candidate.victims.is_empty() => {
                    if candidate.pdb_violations == 0 {
                        candidates.push(candidate);
                    } else {
                        violating.push(candidate);
                    }
                    if !candidates.is_empty() && candidates.len() + violating.len() >= wanted {
                        break;
                    }
                }
                Ok(_) => {}
                Err(rejection) => refused.push(rejection),
            }
        }
    }
    candidates.append(&mut violating);
    if let Some(best) = pick_one_candidate(candidates) {
        return PostFilter::Candidate(best);
    }
    let mut reasons = count_reasons(&refused);
    let not_helpful = diagnosis.num_all_nodes.saturating_sub(refused.len());
    if not_helpful > 0 {
        reasons.insert(PREEMPTION_NOT_HELPFUL.to_string(), not_helpful);
    }
    PostFilter::NoCandidate(histogram_message(diagnosis.num_all_nodes, &reasons))
}

fn not_eligible(snapshot: &Snapshot, pod: &PodInfo, diagnosis: &Diagnosis) -> Option<&'static str> {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Some(NOT_ELIGIBLE_NEVER);
    }
    let nominated = snapshot.nomination(&pod.key)?;
    // A nominated node that can never take the pod frees it to look again.
    if !diagnosis.rejection(nominated).is_some_and(|r| r.resolvable) {
        return None;
    }
    let waiting = snapshot
        .node(nominated)?
        .pods
        .values()
        .any(|p| p.priority < pod.priority && terminating_by_preemption(&p.pod));
    waiting.then_some(NOT_ELIGIBLE_TERMINATING)
}

/// The fewest, least important pods on `node` whose eviction lets `pod` fit,
/// keeping those a PodDisruptionBudget protects if it can, or why there are
/// none. `state` is adjusted while trying and restored before returning.
pub fn select_victims_on_node(
    snapshot: &Snapshot,
    pod: &PodInfo,
    node: &NodeInfo,
    state: &mut crate::filters::PreFilterState,
) -> Result<Candidate, Rejection> {
    let Some(node_object) = node.node.as_deref() else {
        return Err(Rejection::unresolvable(PREEMPTION_NOT_HELPFUL));
    };
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Rejection::unresolvable(NO_PREEMPTION_VICTIMS));
    }
    let mut trial = node.clone();
    for victim in &potential {
        trial.remove_pod(&victim.key);
        state.remove_pod(pod, victim, node_object);
    }
    if let Err(rejection) = filter_with_nominated(snapshot, pod, &trial, state) {
        for victim in &potential {
            state.add_pod(pod, victim, node_object);
        }
        return Err(rejection);
    }
    potential.sort_by(|a, b| more_important_first(a, b));
    let (violating, other) = split_by_budget_violation(potential, snapshot.budgets());
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (protected, candidate) in violating
        .into_iter()
        .map(|p| (true, p))
        .chain(other.into_iter().map(|p| (false, p)))
    {
        trial.add_pod(candidate.clone());
        state.add_pod(pod, &candidate, node_object);
        if filter_with_nominated(snapshot, pod, &trial, state).is_err() {
            trial.remove_pod(&candidate.key);
            state.remove_pod(pod, &candidate, node_object);
            victims.push(candidate);
            pdb_violations += usize::from(protected);
        }
    }
    for victim in &victims {
        state.add_pod(pod, victim, node_object);
    }
    victims.sort_by(|a, b| more_important_first(a, b));
    Ok(Candidate {
        node: node.name().to_string(),
        victims,
        pdb_violations,
    })
}

/// Upstream's `pickOneNodeForPreemption`: each criterion keeps the best
/// candidates, the next one breaks their tie, and the first remaining
/// candidate wins. Victims must be sorted most important first.
pub fn pick_one_candidate(candidates: Vec<Candidate>) -> Option<Candidate> {
    if let Some(free) = candidates.iter().position(|c| c.victims.is_empty()) {
        return candidates.into_iter().nth(free);
    }
    let criteria: [fn(&Candidate) -> i128; 5] = [
        // The fewest PodDisruptionBudget violations.
        |c| -(c.pdb_violations as i128),
        // The lowest "most important victim" priority.
        |c| -i128::from(c.victims[0].priority),
        // The lowest sum of priorities, each shifted to be non-negative.
        |c| {
            -c.victims
                .iter()
                .map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1)
                .sum::<i128>()
        },
        // The fewest victims.
        |c| -(c.victims.len() as i128),
        // The latest start among the most important victims.
        |c| {
            let top = c.victims[0].priority;
            c.victims
                .iter()
                .filter(|v| v.priority == top)
                .map(|v| start_time(v))
                .min()
                .unwrap_or(i128::MAX)
        },
    ];
    let mut remaining = candidates;
    for criterion in criteria {
        if remaining.len() <= 1 {
            break;
        }
        let best = remaining.iter().map(criterion).max()?;
        remaining.retain(|c| criterion(c) == best);
    }
    remaining.into_iter().next()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::algorithm::{Decision, decide, schedule};
    use crate::filters::PreFilterState;
    use crate::inter_pod_affinity::tests::{affinity, term};
    use crate::snapshot::tests::{pod, ready_node, with_labels, with_priority};

    fn info(p: Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn started(mut p: Pod, seconds: i64) -> Pod {
        p.status.get_or_insert_with(PodStatus::default).start_time =
            Some(Time(jiff::Timestamp::from_second(seconds).unwrap()));
        p
    }

    fn victims_of(decision: Decision) -> (String, Vec<String>) {
        match decision {
            Decision::Preempt { candidate, fit } => {
                assert!(
                    !fit.to_string().contains("preemption:"),
                    "a successful preemption adds no postfilter message: {fit}"
                );
                (
                    candidate.node,
                    candidate.victims.iter().map(|v| v.key.clone()).collect(),
                )
            }
            other => panic!("expected preemption, got {other:?}"),
        }
    }

    #[test]
    fn candidate_count_follows_upstream() {
        assert_eq!(num_candidates(5), 5);
        assert_eq!(num_candidates(100), 100);
        assert_eq!(num_candidates(500), 100);
        assert_eq!(num_candidates(5000), 500);
    }

    #[test]
    fn evicts_only_lower_priority_pods_and_reprieves_what_it_can() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "4")));
        // 4 cpu in use: two 1-cpu pods at priority 1 and 2, one 2-cpu pod at
        // priority 100 (not evictable by a priority-50 pod).
        snap.add_pod("n1", info(with_priority(pod("low", "1", ""), 1)));
        snap.add_pod("n1", info(with_priority(pod("mid", "1", ""), 2)));
        snap.add_pod("n1", info(with_priority(pod("high", "2", ""), 100)));
        // Needs 1 cpu: evicting "low" alone is enough; "mid" is reprieved.
        let p = info(with_priority(pod("p", "1", ""), 50));
        assert_eq!(
            victims_of(decide(&snap, &p, 0, 0, 0, 0)),
            ("n1".to_string(), vec!["default/low".to_string()])
        );
        // Needs 2 cpu: both low pods go, the high one stays.
        let p = info(with_priority(pod("p", "2", ""), 50));
        assert_eq!(
            victims_of(decide(&snap, &p, 0, 0, 0, 0)).1,
            ["default/mid", "default/low"]
        );
        // Needs 3 cpu: even without both low pods it does not fit.
        let p = info(with_priority(pod("p", "3", ""), 50));
        match decide(&snap, &p, 0, 0, 0, 0) {
            Decision::Wait {
                fit,
                clear_nomination,
            } => {
                assert!(clear_nomination);
                assert_eq!(
                    fit.to_string(),
                    "0/1 nodes are available: 1 Insufficient cpu. preemption: \
                     0/1 nodes are available: 1 Insufficient cpu."
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equal_priority_is_never_a_victim() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "1")));
        snap.add_pod("n1", info(with_priority(pod("peer", "1", ""), 5)));
        let p = info(with_priority(pod("p", "1", ""), 5));
        match decide(&snap, &p, 0, 0, 0, 0) {
            Decision::Wait { fit, .. } => assert!(fit.to_string().ends_with(
                "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
            )),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn picks_the_node_with_the_least_important_victims() {
        let mut snap = Snapshot::new();
        for n in ["a", "b", "c"] {
            snap.upsert_node(Arc::new(ready_node(n, "2")));
        }
        // The pod needs a whole node. a: one victim of priority 10; b: two of
        // priority 1; c: one of priority 1 (same top priority as b, lower
        // sum).
        snap.add_pod("a", info(with_priority(pod("a1", "2", ""), 10)));
        snap.add_pod("b", info(with_priority(pod("b1", "1", ""), 1)));
        snap.add_pod("b", info(with_priority(pod("b2", "1", ""), 1)));
        snap.add_pod("c", info(with_priority(pod("c1", "2", ""), 1)));
        let p = info(with_priority(pod("p", "2", ""), 50));
        // Every offset finds the same best candidate.
        for offset in 0..3 {
            assert_eq!(
                victims_of(decide(&snap, &p, 0, 0, 0, offset)),
                ("c".to_string(), vec!["default/c1".to_string()])
            );
        }
    }

    fn candidate(node: &str, victims: Vec<Pod>) -> Candidate {
        let mut victims: Vec<Arc<PodInfo>> = victims.into_iter().map(info).collect();
        victims.sort_by(|a, b| more_important_first(a, b));
        Candidate {
            node: node.into(),
            victims,
            pdb_violations: 0,
        }
    }

    #[test]
    fn candidate_choice_criteria_in_order() {
        let p = |name: &str, priority| with_priority(pod(name, "", ""), priority);
        // Lowest highest priority.
        let picked = pick_one_candidate(vec![
            candidate("x", vec![p("x1", 5)]),
            candidate("y", vec![p("y1", 3), p("y2", 3), p("y3", 3)]),
        ]);
        assert_eq!(picked.unwrap().node, "y");
        // Same top priority: lowest sum.
        let picked = pick_one_candidate(vec![
            candidate("x", vec![p("x1", 5), p("x2", 4)]),
            candidate("y", vec![p("y1", 5), p("y2", 1)]),
        ]);
        assert_eq!(picked.unwrap().node, "y");
        // Negative priorities are shifted, so fewer pods still sum lower.
        let picked = pick_one_candidate(vec![
            candidate("x", vec![p("x1", -5), p("x2", -5)]),
            candidate("y", vec![p("y1", -5)]),
        ]);
        assert_eq!(picked.unwrap().node, "y");
        // Same sums and counts: the latest-started top victims win.
        let picked = pick_one_candidate(vec![
            candidate("x", vec![started(p("x1", 5), 100)]),
            candidate("y", vec![started(p("y1", 5), 200)]),
            candidate("z", vec![started(p("z1", 5), 150)]),
        ]);
        assert_eq!(picked.unwrap().node, "y");
        // A pod that has not started counts as the latest.
        let picked = pick_one_candidate(vec![
            candidate("x", vec![started(p("x1", 5), 100)]),
            candidate("y", vec![p("y1", 5)]),
        ]);
        assert_eq!(picked.unwrap().node, "y");
        // Complete ties: the first found.
        let picked = pick_one_candidate(vec![
            candidate("x", vec![p("x1", 5)]),
            candidate("y", vec![p("y1", 5)]),
        ]);
        assert_eq!(picked.unwrap().node, "x");
        assert!(pick_one_candidate(Vec::new()).is_none());
    }

    #[test]
    fn longer_running_pods_are_more_important() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "2")));
        snap.add_pod(
            "n1",
            info(started(with_priority(pod("old", "1", ""), 1), 10)),
        );
        snap.add_pod(
            "n1",
            info(started(with_priority(pod("new", "1", ""), 1), 20)),
        );
        let p = info(with_priority(pod("p", "1", ""), 50));
        assert_eq!(victims_of(decide(&snap, &p, 0, 0, 0, 0)).1, ["default/new"]);
    }

    #[test]
    fn preemption_resolves_anti_affinity() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "8")));
        snap.add_pod(
            "n1",
            info(with_priority(
                with_labels(pod("web-0", "", ""), &[("app", "web")]),
                1,
            )),
        );
        snap.add_pod("n1", info(with_priority(pod("other", "", ""), 1)));
        let p = affinity(
            with_priority(with_labels(pod("web-1", "", ""), &[("app", "web")]), 10),
            vec![],
            vec![term("app", "web", "kubernetes.io/hostname")],
        );
        let p = info(p);
        // Only web-0 stands in the way; "other" is reprieved.
        assert_eq!(
            victims_of(decide(&snap, &p, 0, 0, 0, 0)),
            ("n1".to_string(), vec!["default/web-0".to_string()])
        );
    }

    #[test]
    fn affinity_failures_are_not_helped_by_preemption() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "1")));
        snap.add_pod("n1", info(with_priority(pod("low", "1", ""), 1)));
        let p = affinity(
            with_priority(pod("p", "", ""), 10),
            vec![term("app", "db", "zone")],
            vec![],
        );
        match decide(&snap, &info(p), 0, 0, 0, 0) {
            Decision::Wait { fit, .. } => assert_eq!(
                fit.to_string(),
                "0/1 nodes are available: 1 node(s) didn't match pod affinity rules. \
                 preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn victim_selection_restores_the_filter_state() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "8")));
        snap.add_pod(
            "n1",
            info(with_priority(
                with_labels(pod("web-0", "", ""), &[("app", "web")]),
                1,
            )),
        );
        let p = info(affinity(
            with_priority(with_labels(pod("web-1", "", ""), &[("app", "web")]), 10),
            vec![],
            vec![term("app", "web", "kubernetes.io/hostname")],
        ));
        let mut state = PreFilterState::new(&snap, &p).unwrap();
        let before = state.clone();
        let candidate =
            select_victims_on_node(&snap, &p, snap.node("n1").unwrap(), &mut state).unwrap();
        assert_eq!(candidate.victims.len(), 1);
        assert_eq!(state, before);
    }

    fn terminating_victim(name: &str, priority: i32) -> Pod {
        let mut p = with_priority(pod(name, "1", ""), priority);
        p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(REASON_PREEMPTION_BY_SCHEDULER.into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn a_nominated_pod_waits_for_its_victims() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "1")));
        snap.upsert_node(Arc::new(ready_node("n2", "1")));
        snap.add_pod("n1", info(terminating_victim("victim", 1)));
        snap.add_pod("n2", info(with_priority(pod("low", "1", ""), 1)));
        let p = info(with_priority(pod("p", "1", ""), 10));
        snap.nominate("n1", p.clone());
        match decide(&snap, &p, 0, 0, 0, 0) {
            Decision::Wait {
                fit,
                clear_nomination,
            } => {
                assert!(!clear_nomination);
                assert_eq!(
                    fit.to_string(),
                    format!(
                        "0/2 nodes are available: 2 Insufficient cpu. preemption: {NOT_ELIGIBLE_TERMINATING}"
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        // Once the victim is gone the nominated node takes the pod.
        snap.remove_pod("default/victim");
        match decide(&snap, &p, 0, 0, 0, 0) {
            Decision::Bind(placement) => assert_eq!(placement.node, "n1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nominated_pods_hold_their_room_against_lower_priority_pods() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "1")));
        let preemptor = info(with_priority(pod("preemptor", "1", ""), 10));
        snap.nominate("n1", preemptor.clone());
        let low = info(with_priority(pod("low", "1", ""), 1));
        let err = schedule(&snap, &low, 0, 0, 0).unwrap_err();
        assert_eq!(err.rejections[0].1.reasons, ["Insufficient cpu"]);
        // A pod of higher priority than the nominated one ignores it.
        let high = info(with_priority(pod("high", "1", ""), 100));
        assert_eq!(schedule(&snap, &high, 0, 0, 0).unwrap().node, "n1");
        // The nominated pod itself does not count against itself.
        assert_eq!(schedule(&snap, &preemptor, 0, 0, 0).unwrap().node, "n1");
    }

    #[test]
    fn never_policy_and_terminating_detection() {
        let mut p = with_priority(pod("p", "", ""), 5);
        assert!(!terminating_by_preemption(&p));
        p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(
            !terminating_by_preemption(&p),
            "deleted, but not by preemption"
        );
        assert!(terminating_by_preemption(&terminating_victim("v", 1)));
    }

    fn budget(name: &str, app: &str, allowed: i32, disrupted: &[&str]) -> DisruptionBudget {
        let disrupted: serde_json::Map<String, serde_json::Value> = disrupted
            .iter()
            .map(|p| (p.to_string(), serde_json::json!("2024-01-01T00:00:00Z")))
            .collect();
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "disruptedPods": disrupted},
        }))
        .unwrap();
        DisruptionBudget::new(&pdb)
    }

    fn app(name: &str, app: &str, cpu: &str, priority: i32) -> Arc<PodInfo> {
        info(with_priority(
            with_labels(pod(name, cpu, ""), &[("app", app)]),
            priority,
        ))
    }

    fn keys(pods: &[Arc<PodInfo>]) -> Vec<&str> {
        pods.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn budgets_split_victims_in_order() {
        let db = budget("db", "db", 1, &[]);
        let pods = vec![
            app("db-0", "db", "", 1),
            app("web-0", "web", "", 1),
            app("db-1", "db", "", 1),
            app("db-2", "db", "", 1),
        ];
        // One disruption allowed: the first db pod uses it up.
        let (violating, other) = split_by_budget_violation(pods.clone(), [&db]);
        assert_eq!(keys(&violating), ["default/db-1", "default/db-2"]);
        assert_eq!(keys(&other), ["default/db-0", "default/web-0"]);
        // A pod the budget already counts as disrupted costs nothing.
        let db = budget("db", "db", 1, &["db-0"]);
        let (violating, _) = split_by_budget_violation(pods.clone(), [&db]);
        assert_eq!(keys(&violating), ["default/db-2"]);
        // Every budget that covers a pod is charged.
        let (violating, _) = split_by_budget_violation(
            pods.clone(),
            [&budget("a", "db", 5, &[]), &budget("b", "db", 0, &[])],
        );
        assert_eq!(violating.len(), 3);
        // Other namespaces, empty selectors and unlabelled pods are not
        // covered.
        let mut elsewhere = budget("db", "db", 0, &[]);
        elsewhere.namespace = "other".into();
        let empty = DisruptionBudget::new(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "all", "namespace": "default"},
                "spec": {"selector": {}},
                "status": {"disruptionsAllowed": 0},
            }))
            .unwrap(),
        );
        let mut unlabelled = pods;
        unlabelled.push(info(with_priority(pod("bare", "", ""), 1)));
        let (violating, other) = split_by_budget_violation(unlabelled, [&elsewhere, &empty]);
        assert!(violating.is_empty());
        assert_eq!(other.len(), 5);
    }

    #[test]
    fn protected_pods_are_the_last_victims_on_a_node() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("n1", "2")));
        // Same priority; "free" sorts first, so it is the more important of
        // the two and would be kept without a budget.
        snap.add_pod("n1", app("free", "web", "1", 1));
        snap.add_pod("n1", app("guarded", "db", "1", 1));
        let p = info(with_priority(pod("p", "1", ""), 10));
        assert_eq!(
            victims_of(decide(&snap, &p, 0, 0, 0, 0)).1,
            ["default/guarded"]
        );
        snap.upsert_budget("default/db".into(), budget("db", "db", 0, &[]));
        assert_eq!(
            victims_of(decide(&snap, &p, 0, 0, 0, 0)).1,
            ["default/free"]
        );
        // When both must go, the violation is counted, and the victims stay
        // in importance order.
        let p = info(with_priority(pod("p", "2", ""), 10));
        let mut state = PreFilterState::new(&snap, &p).unwrap();
        let candidate =
            select_victims_on_node(&snap, &p, snap.node("n1").unwrap(), &mut state).unwrap();
        assert_eq!(
            keys(&candidate.victims),
            ["default/free", "default/guarded"]
        );
        assert_eq!(candidate.pdb_violations, 1);
    }

    #[test]
    fn fewer_budget_violations_beat_less_important_victims() {
        let mut snap = Snapshot::new();
        snap.upsert_node(Arc::new(ready_node("x", "1")));
        snap.upsert_node(Arc::new(ready_node("y", "1")));
        snap.add_pod("x", app("db-0", "db", "1", 1));
        snap.add_pod("y", app("web-0", "web", "1", 5));
        let p = info(with_priority(pod("p", "1", ""), 10));
        assert_eq!(victims_of(decide(&snap, &p, 0, 0, 0, 0)).0, "x");
        snap.upsert_budget("default/db".into(), budget("db", "db", 0, &[]));
        for offset in 0..2 {
            assert_eq!(victims_of(decide(&snap, &p, 0, 0, 0, offset)).0, "y");
        }
        // A budget with room left is no obstacle.
        snap.upsert_budget("default/db".into(), budget("db", "db", 1, &[]));
        assert_eq!(victims_of(decide(&snap, &p, 0, 0, 0, 0)).0, "x");
        // Budgets steer, they do not forbid: with no other node, x it is.
        snap.upsert_budget("default/db".into(), budget("db", "db", 0, &[]));
        snap.remove_node("y");
        snap.remove_pod("default/web-0");
        assert_eq!(victims_of(decide(&snap, &p, 0, 0, 0, 0)).0, "x");
    }

    #[test]
    fn the_search_goes_on_until_a_candidate_violates_no_budget() {
        let mut snap = Snapshot::new();
        snap.upsert_budget("default/db".into(), budget("db", "db", 0, &[]));
        // 120 nodes: enough candidates (100) are found long before the only
        // node whose victim no budget protects.
        for i in 0..120 {
            let name = format!("n{i:03}");
            snap.upsert_node(Arc::new(ready_node(&name, "1")));
            let label = if i == 119 { "web" } else { "db" };
            snap.add_pod(&name, app(&format!("p{i:03}"), label, "1", 1));
        }
        let p = info(with_priority(pod("p", "1", ""), 10));
        assert_eq!(victims_of(decide(&snap, &p, 0, 0, 0, 0)).0, "n119");
    }

    #[test]
    fn budget_violations_come_first_when_picking() {
        let p = |name: &str, priority| with_priority(pod(name, "", ""), priority);
        let mut x = candidate("x", vec![p("x1", 1)]);
        x.pdb_violations = 1;
        let y = candidate("y", vec![p("y1", 100), p("y2", 100)]);
        assert_eq!(pick_one_candidate(vec![x.clone(), y]).unwrap().node, "y");
        let mut z = candidate("z", vec![p("z1", 0)]);
        z.pdb_violations = 1;
        assert_eq!(pick_one_candidate(vec![x, z]).unwrap().node, "z");
    }
}
