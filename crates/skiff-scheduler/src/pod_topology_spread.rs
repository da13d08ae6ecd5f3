//! `PodTopologySpread`: keep matching pods evenly spread over the values
//! (*domains*) of a node label.
//!
//! For each constraint the *skew* of placing the pod in a domain is
//! `matching pods there + (1 if the pod matches its own selector) − the
//! smallest count of any domain`. Only pods in the pod's namespace count, and
//! pods being deleted do not. A worked example, `maxSkew: 1` over zones:
//!
//! | zone | matching pods | skew if placed here |
//! |---|---|---|
//! | a | 2 | 2 + 1 − 0 = 3 |
//! | b | 1 | 1 + 1 − 0 = 2 |
//! | c | 0 | 0 + 1 − 0 = 1 ✓ |
//!
//! `whenUnsatisfiable: DoNotSchedule` constraints filter: a node without the
//! topology label is refused (eviction cannot help), a skew above `maxSkew`
//! is refused (eviction can). When fewer domains exist than `minDomains`, the
//! smallest count is taken as 0, so pods keep going to new domains.
//!
//! Which nodes are domains follows the inclusion policies: with
//! `nodeAffinityPolicy: Honor` (the default) only nodes matching the pod's
//! node selector and required node affinity count, and with
//! `nodeTaintsPolicy: Honor` (default `Ignore`) only nodes whose
//! `NoSchedule`/`NoExecute` taints the pod tolerates. Nodes must carry every
//! constraint's topology key.
//!
//! `ScheduleAnyway` constraints score: a feasible node scores, per
//! constraint, the matching pods in its domain times `ln(domains + 2)` plus
//! `maxSkew − 1`; fewer is better, so the scores are inverted into 0–100. A
//! feasible node missing a topology key scores 0.
//!
//! `matchLabelKeys` narrows the selector to the pod's own values of those
//! labels. Upstream's cluster-level default constraints (which spread by the
//! pod's owning Service or ReplicaSet) are not applied: only constraints the
//! pod states count.
//!
//! The filter's counts are computed once per pod, and only for pods with
//! `DoNotSchedule` constraints: one pass over the nodes for the domains, and
//! one over the pods the selector may match (from the snapshot's label
//! index) for the counts. They are kept with a count histogram, so the
//! per-node check and the global minimum are O(1) and stay exact when
//! preemption adds and removes pods.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_api::selector::LabelSelector;

use crate::filters::{self, FilterResult, Rejection};
use crate::score::MAX_NODE_SCORE;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot, label_selector, labels_of};

/// Reason for a node where placing the pod would exceed `maxSkew`.
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// Reason for a node without a constraint's topology label.
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// The hostname label; spreading over it counts per node.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// One `topologySpreadConstraint`, parsed, with upstream's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    /// `maxSkew`.
    pub max_skew: i32,
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// `whenUnsatisfiable: DoNotSchedule` (else `ScheduleAnyway`).
    pub hard: bool,
    /// Which pods count (with `matchLabelKeys` merged in).
    pub selector: LabelSelector,
    /// `minDomains`, 1 when unset.
    pub min_domains: i32,
    /// `nodeAffinityPolicy` is `Honor` (the default).
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy` is `Honor` (default `Ignore`).
    pub honor_node_taints: bool,
}

/// Parses a pod's `topologySpreadConstraints`. Constraints with an unknown
/// `whenUnsatisfiable` are ignored.
pub fn constraints_of(pod: &Pod) -> Vec<SpreadConstraint> {
    let Some(constraints) = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
    else {
        return Vec::new();
    };
    let labels = labels_of(&pod.metadata);
    constraints
        .iter()
        .filter_map(|c| {
            let hard = match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => true,
                "ScheduleAnyway" => false,
                _ => return None,
            };
            let extra = c
                .match_label_keys
                .iter()
                .flatten()
                .filter_map(|key| {
                    let value = labels.get(key)?;
                    Some(json!({"key": key, "operator": "In", "values": [value]}))
                })
                .collect();
            Some(SpreadConstraint {
                max_skew: c.max_skew,
                topology_key: c.topology_key.clone(),
                hard,
                selector: label_selector(c.label_selector.as_ref(), extra),
                min_domains: c.min_domains.unwrap_or(1),
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            })
        })
        .collect()
}

impl SpreadConstraint {
    /// Whether `other` is a pod this constraint counts for a pod in
    /// `namespace`. An empty selector counts none, as upstream.
    fn counts(&self, other: &PodInfo, namespace: &str) -> bool {
        !self.selector.is_everything()
            && !other.terminating()
            && other.namespace() == namespace
            && self.selector.matches(other.labels())
    }

    /// Whether `node` is one of this constraint's domains for `pod`.
    fn includes(&self, pod: &PodInfo, node: &Node) -> bool {
        (!self.honor_node_affinity || filters::node_affinity(pod, node).is_ok())
            && (!self.honor_node_taints || !filters::has_untolerated_hard_taint(pod, node))
    }

    /// How many pods on `node` this constraint counts for a pod in
    /// `namespace`. An empty selector counts none, as upstream.
    fn count_on(&self, node: &NodeInfo, namespace: &str) -> i64 {
        node.pods
            .values()
            .filter(|p| self.counts(p, namespace))
            .count() as i64
    }
}

/// Whether `labels` has every constraint's topology key.
fn has_all_keys<'a>(
    labels: &BTreeMap<String, String>,
    mut constraints: impl Iterator<Item = &'a SpreadConstraint>,
) -> bool {
    constraints.all(|c| labels.contains_key(&c.topology_key))
}

/// Matching-pod counts per domain of one constraint, with a histogram of the
/// counts so the minimum is always at hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Domains {
    counts: HashMap<String, i64>,
    /// `count → how many domains have it`.
    histogram: BTreeMap<i64, usize>,
    /// How many domains there were when the state was computed (upstream
    /// keeps this fixed while preemption adds and removes pods).
    len: usize,
}

impl Domains {
    /// Makes `value` a domain (with no pods yet) if it is not one already.
    fn ensure(&mut self, value: &str) {
        if !self.counts.contains_key(value) {
            self.counts.insert(value.to_string(), 0);
            *self.histogram.entry(0).or_default() += 1;
        }
    }

    fn add(&mut self, value: &str, delta: i64) {
        self.ensure(value);
        let Some(count) = self.counts.get_mut(value) else {
            return;
        };
        if let Some(n) = self.histogram.get_mut(count) {
            *n -= 1;
            if *n == 0 {
                self.histogram.remove(count);
            }
        }
        *count += delta;
        *self.histogram.entry(*count).or_default() += 1;
    }

    fn min(&self) -> Option<i64> {
        self.histogram.keys().next().copied()
    }

    fn get(&self, value: &str) -> i64 {
        self.counts.get(value).copied().unwrap_or(0)
    }
}

/// What the filter precomputes for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterState {
    constraints: Vec<SpreadConstraint>,
    domains: Vec<Domains>,
}

impl FilterState {
    /// Counts matching pods per domain for the pod's `DoNotSchedule`
    /// constraints; `None` when it has none.
    pub fn new(snapshot: &Snapshot, pod: &PodInfo) -> Option<FilterState> {
        let constraints: Vec<SpreadConstraint> =
            pod.spread.iter().filter(|c| c.hard).cloned().collect();
        if constraints.is_empty() {
            return None;
        }
        let mut domains = vec![Domains::default(); constraints.len()];
        for info in snapshot.nodes() {
            let Some(node) = info.node.as_deref() else {
                continue;
            };
            let labels = labels_of(&node.metadata);
            if !has_all_keys(labels, constraints.iter()) {
                continue;
            }
            for (c, d) in constraints.iter().zip(domains.iter_mut()) {
                if c.includes(pod, node) {
                    d.ensure(&labels[&c.topology_key]);
                }
            }
        }
        for (c, d) in constraints.iter().zip(domains.iter_mut()) {
            d.len = d.counts.len();
            if c.selector.is_everything() {
                continue;
            }
            for (other, node) in snapshot.pods_maybe_matching(&c.selector) {
                let labels = labels_of(&node.metadata);
                if c.counts(other, pod.namespace())
                    && has_all_keys(labels, constraints.iter())
                    && c.includes(pod, node)
                {
                    d.add(&labels[&c.topology_key], 1);
                }
            }
        }
        Some(FilterState {
            constraints,
            domains,
        })
    }

    /// Counts `other` as placed on `node` (`delta` 1) or gone from it (-1).
    pub fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node, delta: i64) {
        let labels = labels_of(&node.metadata);
        if other.namespace() != pod.namespace() || !has_all_keys(labels, self.constraints.iter()) {
            return;
        }
        for (c, d) in self.constraints.iter().zip(self.domains.iter_mut()) {
            if !c.selector.is_everything()
                && c.selector.matches(other.labels())
                && c.includes(pod, node)
            {
                d.add(&labels[&c.topology_key], delta);
            }
        }
    }

    /// The filter.
    pub fn filter(&self, pod: &PodInfo, node: &Node) -> FilterResult {
        let labels = labels_of(&node.metadata);
        for (c, d) in self.constraints.iter().zip(&self.domains) {
            let Some(value) = labels.get(&c.topology_key) else {
                return Err(Rejection::unresolvable(ERR_MISSING_LABEL));
            };
            let min = if d.len < usize::try_from(c.min_domains).unwrap_or(0) {
                0
            } else {
                d.min().unwrap_or(0)
            };
            let own = i64::from(c.selector.matches(pod.labels()));
            if d.get(value) + own - min > i64::from(c.max_skew) {
                return Err(Rejection::resolvable(ERR_CONSTRAINTS));
            }
        }
        Ok(())
    }
}

/// The `ScheduleAnyway` score of each of `nodes` (scaled to 0–100, higher
/// is better), or `None` when the pod has no such constraints.
pub fn score(snapshot: &Snapshot, pod: &PodInfo, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
    let constraints: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
    if constraints.is_empty() {
        return None;
    }
    let ignored: Vec<bool> = nodes
        .iter()
        .map(|n| !has_all_keys(n.labels(), constraints.iter().copied()))
        .collect();
    let scored = ignored.iter().filter(|&&i| !i).count();
    // The domains of the feasible nodes, per constraint; hostname domains are
    // counted node by node below.
    let mut counts: Vec<HashMap<&str, i64>> = vec![HashMap::new(); constraints.len()];
    for (n, _) in nodes.iter().zip(&ignored).filter(|(_, i)| !**i) {
        for (c, domain) in constraints.iter().zip(counts.iter_mut()) {
            if c.topology_key != LABEL_HOSTNAME {
                domain
                    .entry(n.labels()[&c.topology_key].as_str())
                    .or_default();
            }
        }
    }
    let weights: Vec<f64> = constraints
        .iter()
        .zip(&counts)
        .map(|(c, domain)| {
            let size = if c.topology_key == LABEL_HOSTNAME {
                scored
            } else {
                domain.len()
            };
            (size as f64 + 2.0).ln()
        })
        .collect();
    for (c, domain) in constraints.iter().zip(counts.iter_mut()) {
        if c.topology_key == LABEL_HOSTNAME || c.selector.is_everything() {
            continue;
        }
        for (other, node) in snapshot.pods_maybe_matching(&c.selector) {
            let labels = labels_of(&node.metadata);
            if !c.counts(other, pod.namespace())
                || !has_all_keys(labels, constraints.iter().copied())
                || !c.includes(pod, node)
            {
                continue;
            }
            if let Some(count) = domain.get_mut(labels[&c.topology_key].as_str()) {
                *count += 1;
            }
        }
    }
    let raw: Vec<Option<i64>> = nodes
        .iter()
        .zip(&ignored)
        .map(|(n, &ignore)| {
            if ignore {
                return None;
            }
            let labels = n.labels();
            let total: f64 = constraints
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let value = labels.get(&c.topology_key)?;
                    let count = if c.topology_key == LABEL_HOSTNAME {
                        c.count_on(n, pod.namespace())
                    } else {
                        counts[i].get(value.as_str()).copied().unwrap_or(0)
                    };
                    Some(count as f64 * weights[i] + f64::from(c.max_skew - 1))
                })
                .sum();
            Some(total.round() as i64)
        })
        .collect();
    Some(normalize_inverted(&raw))
}

/// Upstream's spread normalization: fewer matching pods is better, so
/// `100 * (max + min - s) / max`; ignored nodes (`None`) score 0, and when
/// every node scores 0 they all get 100.
fn normalize_inverted(raw: &[Option<i64>]) -> Vec<i64> {
    let present = raw.iter().flatten();
    let min = present.clone().copied().min().unwrap_or(0);
    let max = present.copied().max().unwrap_or(0).max(0);
    raw.iter()
        .map(|s| match *s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{NodeSpec, Taint, Toleration, TopologySpreadConstraint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as ApiSelector, Time};

    use super::*;
    use crate::snapshot::tests::{labelled_node, pod, with_labels};

    fn constraint(key: &str, max_skew: i32, when: &str) -> TopologySpreadConstraint {
        TopologySpreadConstraint {
            label_selector: Some(ApiSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            ..Default::default()
        }
    }

    fn spreading(name: &str, constraints: Vec<TopologySpreadConstraint>) -> Arc<PodInfo> {
        let mut p = with_labels(pod(name, "", ""), &[("app", "web")]);
        p.spec.as_mut().unwrap().topology_spread_constraints = Some(constraints);
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn web(name: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(with_labels(
            pod(name, "", ""),
            &[("app", "web")],
        ))))
    }

    /// Zones a (a1, a2), b (b1) and c (c1).
    fn zones() -> Snapshot {
        let mut snap = Snapshot::new();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            snap.upsert_node(Arc::new(labelled_node(
                name,
                &[("zone", zone), (LABEL_HOSTNAME, name)],
            )));
        }
        snap
    }

    fn check(snap: &Snapshot, p: &PodInfo, node: &str) -> FilterResult {
        let state = FilterState::new(snap, p).expect("hard constraints");
        state.filter(p, snap.node(node).unwrap().node.as_deref().unwrap())
    }

    #[test]
    fn defaults_follow_upstream() {
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        let c = &p.spread[0];
        assert!(c.hard);
        assert_eq!(c.min_domains, 1);
        assert!(c.honor_node_affinity);
        assert!(!c.honor_node_taints);
        let p = spreading("p", vec![constraint("zone", 1, "Sometimes")]);
        assert!(p.spread.is_empty());
    }

    #[test]
    fn skew_decides_the_zone() {
        // The module docs' example: a has 2, b has 1, c has 0.
        let mut snap = zones();
        snap.add_pod("a1", web("w0"));
        snap.add_pod("a2", web("w1"));
        snap.add_pod("b1", web("w2"));
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        let err = check(&snap, &p, "a1").unwrap_err();
        assert_eq!(err.reasons, [ERR_CONSTRAINTS]);
        assert!(err.resolvable);
        assert!(check(&snap, &p, "b1").is_err());
        assert!(check(&snap, &p, "c1").is_ok());
        // maxSkew 2 also allows zone b.
        let p = spreading("p", vec![constraint("zone", 2, "DoNotSchedule")]);
        assert!(check(&snap, &p, "b1").is_ok());
        assert!(check(&snap, &p, "a2").is_err());
    }

    #[test]
    fn other_namespaces_terminating_pods_and_non_matching_pods_do_not_count() {
        let mut snap = zones();
        let mut elsewhere = with_labels(pod("x", "", ""), &[("app", "web")]);
        elsewhere.metadata.namespace = Some("other".into());
        snap.add_pod("a1", Arc::new(PodInfo::new(Arc::new(elsewhere))));
        let mut dying = with_labels(pod("y", "", ""), &[("app", "web")]);
        dying.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        snap.add_pod("a1", Arc::new(PodInfo::new(Arc::new(dying))));
        snap.add_pod("a1", Arc::new(PodInfo::new(Arc::new(pod("z", "", "")))));
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        assert!(check(&snap, &p, "a1").is_ok());
    }

    #[test]
    fn nodes_without_the_key_are_refused_and_not_domains() {
        let mut snap = zones();
        snap.upsert_node(Arc::new(labelled_node("bare", &[])));
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        let err = check(&snap, &p, "bare").unwrap_err();
        assert_eq!(err.reasons, [ERR_MISSING_LABEL]);
        assert!(!err.resolvable);
    }

    #[test]
    fn min_domains_treats_the_minimum_as_zero() {
        let mut snap = Snapshot::new();
        for (name, zone) in [("a1", "a"), ("b1", "b")] {
            snap.upsert_node(Arc::new(labelled_node(name, &[("zone", zone)])));
        }
        snap.add_pod("a1", web("w0"));
        snap.add_pod("b1", web("w1"));
        // Two domains, each with one pod: skew 1 + 1 - 1 = 1 fits.
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        assert!(check(&snap, &p, "a1").is_ok());
        // minDomains 3 with only two domains: the minimum counts as 0.
        let mut c = constraint("zone", 1, "DoNotSchedule");
        c.min_domains = Some(3);
        let p = spreading("p", vec![c]);
        assert_eq!(
            check(&snap, &p, "a1").unwrap_err().reasons,
            [ERR_CONSTRAINTS]
        );
    }

    #[test]
    fn node_affinity_policy_limits_the_domains() {
        let mut snap = zones();
        snap.add_pod("a1", web("w0"));
        snap.add_pod("b1", web("w1"));
        // Zone c has no pods, but the pod's nodeSelector excludes it.
        let mut p = with_labels(pod("p", "", ""), &[("app", "web")]);
        let spec = p.spec.as_mut().unwrap();
        spec.topology_spread_constraints = Some(vec![constraint("zone", 1, "DoNotSchedule")]);
        spec.node_selector = Some([("zone".to_string(), "a".to_string())].into());
        let mut ignore = p.clone();
        let honoring = PodInfo::new(Arc::new(p));
        // Honor: domains are a and b (1 each), minimum 1: zone a takes it.
        assert!(check(&snap, &honoring, "a2").is_ok());
        // Ignore: zone c (0) is a domain, so zone a would be skew 2.
        ignore
            .spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .node_affinity_policy = Some("Ignore".into());
        let ignoring = PodInfo::new(Arc::new(ignore));
        assert!(check(&snap, &ignoring, "a2").is_err());
    }

    #[test]
    fn node_taints_policy_limits_the_domains() {
        let mut snap = zones();
        let mut c1 = labelled_node("c1", &[("zone", "c"), (LABEL_HOSTNAME, "c1")]);
        c1.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "dedicated".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        snap.upsert_node(Arc::new(c1));
        snap.add_pod("a1", web("w0"));
        snap.add_pod("b1", web("w1"));
        let mut honor = constraint("zone", 1, "DoNotSchedule");
        honor.node_taints_policy = Some("Honor".into());
        // Ignore (default): tainted zone c with 0 pods is the minimum.
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        assert!(check(&snap, &p, "a2").is_err());
        // Honor: zone c is not a domain; the minimum is 1.
        let p = spreading("p", vec![honor.clone()]);
        assert!(check(&snap, &p, "a2").is_ok());
        // Honor with a toleration: zone c counts again.
        let mut tolerant = with_labels(pod("p", "", ""), &[("app", "web")]);
        let spec = tolerant.spec.as_mut().unwrap();
        spec.topology_spread_constraints = Some(vec![honor]);
        spec.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(check(&snap, &PodInfo::new(Arc::new(tolerant)), "a2").is_err());
    }

    #[test]
    fn updates_keep_the_minimum_exact() {
        let mut snap = zones();
        let w0 = web("w0");
        snap.add_pod("a1", w0.clone());
        snap.add_pod("b1", web("w1"));
        snap.add_pod("c1", web("w2"));
        let p = spreading("p", vec![constraint("zone", 1, "DoNotSchedule")]);
        let mut state = FilterState::new(&snap, &p).unwrap();
        let node = |n: &str| snap.node(n).unwrap().node.clone().unwrap();
        // All zones at 1: anywhere fits.
        assert!(state.filter(&p, &node("a2")).is_ok());
        state.update(&p, &web("extra"), &node("b1"), 1);
        assert!(state.filter(&p, &node("b1")).is_err(), "b now has 2");
        state.update(&p, &w0, &node("a1"), -1);
        // Minimum dropped to 0 (zone a): only zone a fits now.
        assert!(state.filter(&p, &node("c1")).is_err());
        assert!(state.filter(&p, &node("a2")).is_ok());
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let mut snap = zones();
        snap.add_pod("a1", web("w0"));
        snap.add_pod("a2", web("w1"));
        snap.add_pod("b1", web("w2"));
        let p = spreading("p", vec![constraint("zone", 1, "ScheduleAnyway")]);
        assert!(
            FilterState::new(&snap, &p).is_none(),
            "soft constraints do not filter"
        );
        let nodes: Vec<&NodeInfo> = snap.nodes().collect();
        // Three domains: weight ln(5) = 1.609. Raw: a = round(2 * 1.609) = 3,
        // b = round(1.609) = 2, c = 0. Normalized: 100 * (3 + 0 - s) / 3.
        let scores = score(&snap, &p, &nodes).unwrap();
        assert_eq!(scores, [0, 0, 33, 100]);
    }

    #[test]
    fn hostname_spreading_scores_per_node() {
        let mut snap = zones();
        snap.add_pod("a1", web("w0"));
        snap.add_pod("a1", web("w1"));
        snap.add_pod("b1", web("w2"));
        let p = spreading("p", vec![constraint(LABEL_HOSTNAME, 1, "ScheduleAnyway")]);
        let nodes: Vec<&NodeInfo> = snap.nodes().collect();
        // Four nodes: weight ln(6) = 1.79. Raw: a1 = round(3.58) = 4,
        // a2 = 0, b1 = 2, c1 = 0 → 100 * (4 - s) / 4.
        assert_eq!(score(&snap, &p, &nodes).unwrap(), [0, 100, 50, 100]);
    }

    #[test]
    fn nodes_missing_a_key_score_zero() {
        let mut snap = zones();
        snap.upsert_node(Arc::new(labelled_node("bare", &[])));
        snap.add_pod("a1", web("w0"));
        let p = spreading("p", vec![constraint("zone", 1, "ScheduleAnyway")]);
        let nodes: Vec<&NodeInfo> = snap.nodes().collect();
        let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["a1", "a2", "b1", "bare", "c1"]);
        // a = round(ln 5) = 2, others 0 → a: 0, b/c: 100, bare: 0.
        assert_eq!(score(&snap, &p, &nodes).unwrap(), [0, 0, 100, 0, 100]);
    }

    #[test]
    fn max_skew_softens_the_score() {
        let raw = [Some(0), Some(0)];
        assert_eq!(normalize_inverted(&raw), [100, 100]);
        assert_eq!(normalize_inverted(&[Some(6), Some(2), None]), [33, 100, 0]);
        // With maxSkew 5 every node gets +4, which flattens the differences.
        let p = spreading("p", vec![constraint("zone", 5, "ScheduleAnyway")]);
        let mut snap = zones();
        snap.add_pod("a1", web("w0"));
        let nodes: Vec<&NodeInfo> = snap.nodes().collect();
        // a = round(1.609 + 4) = 6, others 4 → 100 * (6 + 4 - s) / 6.
        assert_eq!(score(&snap, &p, &nodes).unwrap(), [66, 66, 100, 100]);
    }
}
