//! `InterPodAffinity`: pods that want (or refuse) to share a topology domain
//! with other pods.
//!
//! A term names the pods it is about (a label selector over a set of
//! namespaces) and a `topologyKey`; a *domain* is one value of that node label.
//! Everything is counted per `(topologyKey, value)` pair, so "is there a
//! matching pod in this node's zone" is one map lookup per term:
//!
//! - required `podAffinity`: the node's domain must already hold a pod that
//!   matches *all* the pod's affinity terms. The first pod of a group that is
//!   affine to itself would wait forever, so when no pod anywhere matches and
//!   the pod matches its own terms, any node with the topology labels will do.
//!   Refusals are not something eviction can fix.
//! - required `podAntiAffinity`: the node's domain must hold no pod that
//!   matches any of the pod's anti-affinity terms.
//! - existing pods' required anti-affinity: no pod already placed may have an
//!   anti-affinity term that matches the incoming pod within the node's
//!   domain. This is why every pod looks up the placed pods whose terms may
//!   select it, even when it has no terms itself.
//!
//! The preferred terms score: for every placed pod, the incoming pod's
//! preferred terms that match it add (or, anti, subtract) their weight to that
//! pod's domain, and so do the placed pod's own preferred terms (and, with
//! weight 1, its required affinity terms) that match the incoming pod. A node
//! scores the sum over its domains, scaled min–max to 0–100. A pod with no
//! preferred terms only needs the pods that have terms; one with preferred
//! terms looks at every pod its terms may select.
//!
//! Both directions use the snapshot's label indexes: the pods an incoming
//! term may select are found by the term's `key=value` requirement, and the
//! placed pods whose terms may select the incoming pod by the pod's own
//! labels, so the work follows the pods that matter rather than the cluster
//! size.
//!
//! An empty `namespaces` list with no `namespaceSelector` means the pod's own
//! namespace; `namespaceSelector: {}` means every namespace. `matchLabelKeys`
//! and `mismatchLabelKeys` add `key in (value)` / `key notin (value)` for the
//! pod's own label values, as the API server does when it admits the pod
//! (applying them twice changes nothing).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use serde_json::json;
use skiff_api::selector::LabelSelector;

use crate::filters::{FilterResult, Rejection};
use crate::score::MAX_NODE_SCORE;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot, label_selector, labels_of};

/// Reason for a node whose domain has no pod the required affinity wants.
pub const ERR_AFFINITY_RULES: &str = "node(s) didn't match pod affinity rules";
/// Reason for a node whose domain has a pod the required anti-affinity
/// refuses.
pub const ERR_ANTI_AFFINITY_RULES: &str = "node(s) didn't match pod anti-affinity rules";
/// Reason for a node whose domain has a pod whose anti-affinity refuses the
/// incoming pod.
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// What a placed pod's required affinity term counts for in scoring
/// (upstream's default `hardPodAffinityWeight`).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// One `PodAffinityTerm`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// Namespaces whose pods the term is about.
    pub namespaces: BTreeSet<String>,
    /// Namespaces (by their labels) whose pods the term is also about; `None`
    /// when the term has no `namespaceSelector`.
    pub namespace_selector: Option<LabelSelector>,
    /// Which pods of those namespaces.
    pub selector: LabelSelector,
    /// The node label whose values are the domains.
    pub topology_key: String,
}

/// A preferred term and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedAffinityTerm {
    /// The term.
    pub term: AffinityTerm,
    /// `1`–`100`.
    pub weight: i64,
}

impl AffinityTerm {
    /// Parses `term` of a pod in `namespace` with `labels`.
    pub fn new(
        term: &PodAffinityTerm,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> AffinityTerm {
        let keyed = |keys: &Option<Vec<String>>, operator: &str| {
            keys.iter()
                .flatten()
                .filter_map(|key| {
                    let value = labels.get(key)?;
                    Some(json!({"key": key, "operator": operator, "values": [value]}))
                })
                .collect::<Vec<_>>()
        };
        let mut extra = keyed(&term.match_label_keys, "In");
        extra.extend(keyed(&term.mismatch_label_keys, "NotIn"));
        let listed = term.namespaces.as_deref().unwrap_or_default();
        let namespaces = if listed.is_empty() && term.namespace_selector.is_none() {
            BTreeSet::from([namespace.to_string()])
        } else {
            listed.iter().cloned().collect()
        };
        AffinityTerm {
            namespaces,
            namespace_selector: term
                .namespace_selector
                .as_ref()
                .map(|s| label_selector(Some(s), Vec::new())),
            selector: label_selector(term.label_selector.as_ref(), extra),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod`, in a namespace labelled `namespace_labels`, is one of
    /// the pods this term is about.
    pub fn matches(&self, pod: &Pod, namespace_labels: &BTreeMap<String, String>) -> bool {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let in_scope = self.namespaces.contains(namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(namespace_labels));
        in_scope && self.selector.matches(labels_of(&pod.metadata))
    }

    /// The term with its namespace selector turned into the namespaces of
    /// `snapshot` it selects, so matching other pods needs no namespace
    /// lookups. A selector of `{}` stays: it selects every namespace.
    fn resolved(&self, snapshot: &Snapshot) -> AffinityTerm {
        let mut term = self.clone();
        if let Some(selector) = term.namespace_selector.take() {
            if selector.is_everything() {
                term.namespace_selector = Some(selector);
            } else {
                term.namespaces.extend(
                    snapshot
                        .namespaces()
                        .filter(|(_, labels)| selector.matches(*labels))
                        .map(|(name, _)| name.to_string()),
                );
            }
        }
        term
    }
}

/// A pod's inter-pod affinity and anti-affinity terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAffinityTerms {
    /// `podAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_affinity: Vec<AffinityTerm>,
    /// `podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// `podAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// `podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
}

impl PodAffinityTerms {
    /// Parses a pod's terms; `None` when it has none at all.
    pub fn of(pod: &Pod) -> Option<Box<PodAffinityTerms>> {
        let affinity = pod.spec.as_ref()?.affinity.as_ref()?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = labels_of(&pod.metadata);
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(t, namespace, labels))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|t| WeightedAffinityTerm {
                    term: AffinityTerm::new(&t.pod_affinity_term, namespace, labels),
                    weight: i64::from(t.weight),
                })
                .collect::<Vec<_>>()
        };
        let pa = affinity.pod_affinity.as_ref();
        let anti = affinity.pod_anti_affinity.as_ref();
        let terms = PodAffinityTerms {
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        };
        let none = terms.required_affinity.is_empty()
            && terms.required_anti_affinity.is_empty()
            && terms.preferred_affinity.is_empty()
            && terms.preferred_anti_affinity.is_empty();
        (!none).then(|| Box::new(terms))
    }
}

/// Counts per topology domain: `topologyKey → value → count`. Entries that
/// drop to zero are removed, so an empty map means "nothing matched".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    /// Adds `delta` to the domain `node` is in for `key`, if it has the label.
    fn add(&mut self, node: &Node, key: &str, delta: i64) {
        let Some(value) = labels_of(&node.metadata).get(key) else {
            return;
        };
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), HashMap::new());
        }
        let Some(values) = self.0.get_mut(key) else {
            return;
        };
        if !values.contains_key(value) {
            values.insert(value.clone(), 0);
        }
        let Some(count) = values.get_mut(value) else {
            return;
        };
        *count += delta;
        if *count == 0 {
            values.remove(value);
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.0
            .get(key)
            .and_then(|v| v.get(value))
            .copied()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sum over the domains `labels` is in.
    fn total_for(&self, labels: &BTreeMap<String, String>) -> i64 {
        self.0
            .iter()
            .filter_map(|(key, values)| values.get(labels.get(key)?))
            .sum()
    }

    /// Whether any domain `labels` is in has a positive count.
    fn any_positive_for(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().any(|(key, values)| {
            labels
                .get(key)
                .and_then(|v| values.get(v))
                .is_some_and(|&n| n > 0)
        })
    }
}

/// What the filter precomputes for one pod (upstream's PreFilter state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterState {
    /// The incoming pod's required affinity terms, namespaces resolved.
    affinity_terms: Vec<AffinityTerm>,
    /// The incoming pod's required anti-affinity terms, namespaces resolved.
    anti_affinity_terms: Vec<AffinityTerm>,
    /// The incoming pod's namespace labels, for placed pods' terms.
    namespace_labels: BTreeMap<String, String>,
    /// Whether the incoming pod matches all its own affinity terms.
    matches_own_affinity: bool,
    /// Domains holding placed pods whose anti-affinity refuses the pod.
    existing_anti_affinity: TopologyCounts,
    /// Domains holding pods that match all the pod's affinity terms.
    affinity: TopologyCounts,
    /// Domains holding pods that match one of the pod's anti-affinity terms.
    anti_affinity: TopologyCounts,
}

impl FilterState {
    /// Counts what the filter needs for `pod`; `None` when the filter has
    /// nothing to check (no terms, and no placed anti-affinity against it).
    pub fn new(snapshot: &Snapshot, pod: &PodInfo) -> Option<FilterState> {
        let namespace_labels = snapshot.namespace_labels(pod.namespace());
        let mut existing_anti_affinity = TopologyCounts::default();
        for (placed, node) in snapshot.pods_with_terms_maybe_selecting(pod.labels()) {
            count_existing_anti_affinity(
                &mut existing_anti_affinity,
                placed,
                pod,
                namespace_labels,
                node,
                1,
            );
        }
        let (affinity_terms, anti_affinity_terms) = match pod.affinity.as_deref() {
            Some(terms) => (
                resolve_all(&terms.required_affinity, snapshot),
                resolve_all(&terms.required_anti_affinity, snapshot),
            ),
            None => (Vec::new(), Vec::new()),
        };
        if existing_anti_affinity.is_empty()
            && affinity_terms.is_empty()
            && anti_affinity_terms.is_empty()
        {
            return None;
        }
        let matches_own_affinity = !affinity_terms.is_empty()
            && affinity_terms
                .iter()
                .all(|t| t.matches(&pod.pod, &NO_LABELS));
        let mut state = FilterState {
            affinity_terms,
            anti_affinity_terms,
            namespace_labels: namespace_labels.clone(),
            matches_own_affinity,
            existing_anti_affinity,
            affinity: TopologyCounts::default(),
            anti_affinity: TopologyCounts::default(),
        };
        // A pod counts for affinity when it matches every term, so the first
        // term's candidates are all there is to check.
        if let Some(first) = state.affinity_terms.first() {
            for (other, node) in snapshot.pods_maybe_matching(&first.selector) {
                if state
                    .affinity_terms
                    .iter()
                    .all(|t| t.matches(&other.pod, &NO_LABELS))
                {
                    for t in &state.affinity_terms {
                        state.affinity.add(node, &t.topology_key, 1);
                    }
                }
            }
        }
        for t in &state.anti_affinity_terms {
            for (other, node) in snapshot.pods_maybe_matching(&t.selector) {
                if t.matches(&other.pod, &NO_LABELS) {
                    state.anti_affinity.add(node, &t.topology_key, 1);
                }
            }
        }
        Some(state)
    }

    fn count_incoming_terms(&mut self, other: &PodInfo, node: &Node, delta: i64) {
        if !self.affinity_terms.is_empty()
            && self
                .affinity_terms
                .iter()
                .all(|t| t.matches(&other.pod, &NO_LABELS))
        {
            for t in &self.affinity_terms {
                self.affinity.add(node, &t.topology_key, delta);
            }
        }
        for t in &self.anti_affinity_terms {
            if t.matches(&other.pod, &NO_LABELS) {
                self.anti_affinity.add(node, &t.topology_key, delta);
            }
        }
    }

    /// Counts `other` as placed on `node` (`delta` 1) or as gone from it
    /// (`delta` -1), for nominated pods and preemption's what-ifs.
    pub fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node, delta: i64) {
        count_existing_anti_affinity(
            &mut self.existing_anti_affinity,
            other,
            pod,
            &self.namespace_labels,
            node,
            delta,
        );
        self.count_incoming_terms(other, node, delta);
    }

    /// The filter: affinity, then anti-affinity, then placed pods'
    /// anti-affinity, each with upstream's reason.
    pub fn filter(&self, node: &Node) -> FilterResult {
        let labels = labels_of(&node.metadata);
        let mut pods_exist = true;
        for t in &self.affinity_terms {
            match labels.get(&t.topology_key) {
                Some(value) => {
                    if self.affinity.get(&t.topology_key, value) <= 0 {
                        pods_exist = false;
                    }
                }
                None => return Err(Rejection::unresolvable(ERR_AFFINITY_RULES)),
            }
        }
        if !(pods_exist || self.affinity.is_empty() && self.matches_own_affinity) {
            return Err(Rejection::unresolvable(ERR_AFFINITY_RULES));
        }
        if !self.anti_affinity.is_empty() {
            let refused = self.anti_affinity_terms.iter().any(|t| {
                labels
                    .get(&t.topology_key)
                    .is_some_and(|v| self.anti_affinity.get(&t.topology_key, v) > 0)
            });
            if refused {
                return Err(Rejection::resolvable(ERR_ANTI_AFFINITY_RULES));
            }
        }
        if self.existing_anti_affinity.any_positive_for(labels) {
            return Err(Rejection::resolvable(ERR_EXISTING_ANTI_AFFINITY));
        }
        Ok(())
    }
}

fn resolve_all(terms: &[AffinityTerm], snapshot: &Snapshot) -> Vec<AffinityTerm> {
    terms.iter().map(|t| t.resolved(snapshot)).collect()
}

/// Counts the domains where `placed`'s required anti-affinity refuses `pod`.
fn count_existing_anti_affinity(
    counts: &mut TopologyCounts,
    placed: &PodInfo,
    pod: &PodInfo,
    namespace_labels: &BTreeMap<String, String>,
    node: &Node,
    delta: i64,
) {
    let Some(terms) = placed.affinity.as_deref() else {
        return;
    };
    for t in &terms.required_anti_affinity {
        if t.matches(&pod.pod, namespace_labels) {
            counts.add(node, &t.topology_key, delta);
        }
    }
}

/// The preferred-terms score of each of `nodes` (already scaled to 0–100),
/// or `None` when no term says anything about any domain (all score 0).
pub fn score(snapshot: &Snapshot, pod: &PodInfo, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
    let own = pod.affinity.as_deref();
    let has_preferred = own
        .is_some_and(|t| !t.preferred_affinity.is_empty() || !t.preferred_anti_affinity.is_empty());
    if !has_preferred && !snapshot.has_pods_with_affinity() {
        return None;
    }
    let resolve = |terms: &[WeightedAffinityTerm]| -> Vec<WeightedAffinityTerm> {
        terms
            .iter()
            .map(|t| WeightedAffinityTerm {
                term: t.term.resolved(snapshot),
                weight: t.weight,
            })
            .collect()
    };
    let (preferred, preferred_anti) = match own {
        Some(t) if has_preferred => (
            resolve(&t.preferred_affinity),
            resolve(&t.preferred_anti_affinity),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    let namespace_labels = snapshot.namespace_labels(pod.namespace());
    let mut domains = TopologyCounts::default();
    // The pod's preferences about the placed pods...
    for (terms, sign) in [(&preferred, 1), (&preferred_anti, -1)] {
        for t in terms {
            for (placed, node) in snapshot.pods_maybe_matching(&t.term.selector) {
                if t.term.matches(&placed.pod, &NO_LABELS) {
                    domains.add(node, &t.term.topology_key, sign * t.weight);
                }
            }
        }
    }
    // ...and the placed pods' terms about the pod.
    for (placed, node) in snapshot.pods_with_terms_maybe_selecting(pod.labels()) {
        let Some(theirs) = placed.affinity.as_deref() else {
            continue;
        };
        for t in &theirs.required_affinity {
            if t.matches(&pod.pod, namespace_labels) {
                domains.add(node, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
            }
        }
        for (terms, sign) in [
            (&theirs.preferred_affinity, 1),
            (&theirs.preferred_anti_affinity, -1),
        ] {
            for t in terms {
                if t.term.matches(&pod.pod, namespace_labels) {
                    domains.add(node, &t.term.topology_key, sign * t.weight);
                }
            }
        }
    }
    if domains.is_empty() {
        return None;
    }
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| domains.total_for(n.labels()))
        .collect();
    normalize_min_max(&mut scores);
    Some(scores)
}

/// Scales scores to 0–100 between their minimum and maximum (negative raw
/// scores included); all equal scores become 0. Float arithmetic, truncated,
/// as upstream.
fn normalize_min_max(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    let spread = max - min;
    for s in scores.iter_mut() {
        *s = if spread > 0 {
            (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / spread as f64)) as i64
        } else {
            0
        };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Affinity, PodAffinity, PodAntiAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;

    use super::*;
    use crate::snapshot::tests::{labelled_node, pod, with_labels};

    pub(crate) fn term(key: &str, value: &str, topology: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(ApiSelector {
                match_labels: Some([(key.to_string(), value.to_string())].into()),
                ..Default::default()
            }),
            topology_key: topology.to_string(),
            ..Default::default()
        }
    }

    pub(crate) fn affinity(
        mut p: Pod,
        required: Vec<PodAffinityTerm>,
        anti: Vec<PodAffinityTerm>,
    ) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_affinity: (!required.is_empty()).then(|| PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(required),
                ..Default::default()
            }),
            pod_anti_affinity: (!anti.is_empty()).then(|| PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(anti),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn preferring(
        mut p: Pod,
        preferred: Vec<(i32, PodAffinityTerm)>,
        anti: Vec<(i32, PodAffinityTerm)>,
    ) -> Pod {
        let weighted = |terms: Vec<(i32, PodAffinityTerm)>| {
            terms
                .into_iter()
                .map(|(weight, pod_affinity_term)| WeightedPodAffinityTerm {
                    weight,
                    pod_affinity_term,
                })
                .collect::<Vec<_>>()
        };
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(weighted(preferred)),
                ..Default::default()
            }),
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(weighted(anti)),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn info(p: Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    /// Nodes a1, a2 in zone a and b1 in zone b.
    fn zones() -> Snapshot {
        let mut snap = Snapshot::new();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            snap.upsert_node(Arc::new(labelled_node(
                name,
                &[("zone", zone), ("kubernetes.io/hostname", name)],
            )));
        }
        snap
    }

    fn filter_on(snap: &Snapshot, p: &PodInfo, node: &str) -> FilterResult {
        match FilterState::new(snap, p) {
            Some(state) => state.filter(snap.node(node).unwrap().node.as_deref().unwrap()),
            None => Ok(()),
        }
    }

    #[test]
    fn terms_default_to_the_pods_namespace() {
        let p = with_labels(pod("p", "", ""), &[("app", "web")]);
        let t = AffinityTerm::new(
            &term("app", "db", "zone"),
            "default",
            labels_of(&p.metadata),
        );
        assert_eq!(t.namespaces, BTreeSet::from(["default".to_string()]));
        assert!(t.namespace_selector.is_none());
        let db = with_labels(pod("db", "", ""), &[("app", "db")]);
        assert!(t.matches(&db, &NO_LABELS));
        let mut elsewhere = db.clone();
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!t.matches(&elsewhere, &NO_LABELS));

        // namespaceSelector {} covers every namespace.
        let mut all = term("app", "db", "zone");
        all.namespace_selector = Some(ApiSelector::default());
        let t = AffinityTerm::new(&all, "default", &NO_LABELS);
        assert!(t.namespaces.is_empty());
        assert!(t.matches(&elsewhere, &NO_LABELS));

        // A null labelSelector selects nothing.
        let mut none = term("app", "db", "zone");
        none.label_selector = None;
        assert!(!AffinityTerm::new(&none, "default", &NO_LABELS).matches(&db, &NO_LABELS));
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_values() {
        let owner = with_labels(pod("p", "", ""), &[("app", "web"), ("rev", "2")]);
        let mut t = term("app", "web", "zone");
        t.match_label_keys = Some(vec!["rev".into(), "absent".into()]);
        let t = AffinityTerm::new(&t, "default", labels_of(&owner.metadata));
        let same_rev = with_labels(pod("a", "", ""), &[("app", "web"), ("rev", "2")]);
        let old_rev = with_labels(pod("b", "", ""), &[("app", "web"), ("rev", "1")]);
        assert!(t.matches(&same_rev, &NO_LABELS));
        assert!(!t.matches(&old_rev, &NO_LABELS));

        let mut t = term("app", "web", "zone");
        t.mismatch_label_keys = Some(vec!["rev".into()]);
        let t = AffinityTerm::new(&t, "default", labels_of(&owner.metadata));
        assert!(!t.matches(&same_rev, &NO_LABELS));
        assert!(t.matches(&old_rev, &NO_LABELS));
    }

    #[test]
    fn namespace_selectors_resolve_against_namespace_labels() {
        let mut snap = zones();
        snap.upsert_namespace("team-a", [("team".to_string(), "a".to_string())].into());
        snap.upsert_namespace("team-b", [("team".to_string(), "b".to_string())].into());
        let mut db = with_labels(pod("db", "", ""), &[("app", "db")]);
        db.metadata.namespace = Some("team-a".into());
        snap.add_pod("b1", info(db));
        let mut t = term("app", "db", "zone");
        t.namespace_selector = Some(ApiSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            ..Default::default()
        });
        let p = info(affinity(pod("p", "", ""), vec![t.clone()], vec![]));
        assert!(filter_on(&snap, &p, "b1").is_ok());
        assert_eq!(
            filter_on(&snap, &p, "a1").unwrap_err().reasons,
            [ERR_AFFINITY_RULES]
        );
        // Selecting the other team finds nothing; the pod does not match its
        // own term, so nothing fits.
        t.namespace_selector = Some(ApiSelector {
            match_labels: Some([("team".to_string(), "b".to_string())].into()),
            ..Default::default()
        });
        let p = info(affinity(pod("p", "", ""), vec![t], vec![]));
        assert!(filter_on(&snap, &p, "b1").is_err());
    }

    #[test]
    fn required_affinity_follows_the_domain() {
        let mut snap = zones();
        snap.add_pod("a2", info(with_labels(pod("db", "", ""), &[("app", "db")])));
        let p = info(affinity(
            pod("p", "", ""),
            vec![term("app", "db", "zone")],
            vec![],
        ));
        // a1 shares zone a with the db pod on a2.
        assert!(filter_on(&snap, &p, "a1").is_ok());
        assert!(filter_on(&snap, &p, "a2").is_ok());
        let err = filter_on(&snap, &p, "b1").unwrap_err();
        assert_eq!(err.reasons, [ERR_AFFINITY_RULES]);
        assert!(!err.resolvable, "eviction cannot create a matching pod");

        // A node without the topology label never fits.
        snap.upsert_node(Arc::new(labelled_node("bare", &[])));
        assert!(filter_on(&snap, &p, "bare").is_err());
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
        let snap = zones();
        let web = with_labels(pod("web-0", "", ""), &[("app", "web")]);
        let p = info(affinity(web, vec![term("app", "web", "zone")], vec![]));
        for node in ["a1", "a2", "b1"] {
            assert!(filter_on(&snap, &p, node).is_ok(), "{node}");
        }
        // Not self-matching: it must wait for a db pod.
        let p = info(affinity(
            pod("p", "", ""),
            vec![term("app", "db", "zone")],
            vec![],
        ));
        assert!(filter_on(&snap, &p, "a1").is_err());
    }

    #[test]
    fn required_anti_affinity_keeps_the_domain_free() {
        let mut snap = zones();
        snap.add_pod(
            "a1",
            info(with_labels(pod("web-0", "", ""), &[("app", "web")])),
        );
        let web = with_labels(pod("web-1", "", ""), &[("app", "web")]);
        let p = info(affinity(web, vec![], vec![term("app", "web", "zone")]));
        let err = filter_on(&snap, &p, "a2").unwrap_err();
        assert_eq!(err.reasons, [ERR_ANTI_AFFINITY_RULES]);
        assert!(err.resolvable);
        assert!(filter_on(&snap, &p, "b1").is_ok());

        // Per host instead of per zone: only a1 is taken.
        let web = with_labels(pod("web-1", "", ""), &[("app", "web")]);
        let p = info(affinity(
            web,
            vec![],
            vec![term("app", "web", "kubernetes.io/hostname")],
        ));
        assert!(filter_on(&snap, &p, "a1").is_err());
        assert!(filter_on(&snap, &p, "a2").is_ok());
    }

    #[test]
    fn placed_pods_anti_affinity_refuses_the_incoming_pod() {
        let mut snap = zones();
        let loner = affinity(
            pod("loner", "", ""),
            vec![],
            vec![term("app", "noisy", "zone")],
        );
        snap.add_pod("b1", info(loner));
        let noisy = info(with_labels(pod("noisy", "", ""), &[("app", "noisy")]));
        let err = filter_on(&snap, &noisy, "b1").unwrap_err();
        assert_eq!(err.reasons, [ERR_EXISTING_ANTI_AFFINITY]);
        assert!(err.resolvable);
        assert!(filter_on(&snap, &noisy, "a1").is_ok());
        // A pod the term does not select is not affected, and the filter has
        // nothing to do for it.
        let quiet = info(with_labels(pod("quiet", "", ""), &[("app", "quiet")]));
        assert!(FilterState::new(&snap, &quiet).is_none());
    }

    #[test]
    fn updates_count_added_and_removed_pods() {
        let mut snap = zones();
        let web0 = info(with_labels(pod("web-0", "", ""), &[("app", "web")]));
        snap.add_pod("a1", web0.clone());
        let web = with_labels(pod("web-1", "", ""), &[("app", "web")]);
        let p = info(affinity(web, vec![], vec![term("app", "web", "zone")]));
        let mut state = FilterState::new(&snap, &p).unwrap();
        let a2 = snap.node("a2").unwrap().node.clone().unwrap();
        let a1 = snap.node("a1").unwrap().node.clone().unwrap();
        assert!(state.filter(&a2).is_err());
        state.update(&p, &web0, &a1, -1);
        assert!(state.filter(&a2).is_ok(), "without web-0 zone a is free");
        state.update(&p, &web0, &a1, 1);
        assert!(state.filter(&a2).is_err());
    }

    fn node_infos(snap: &Snapshot) -> Vec<&NodeInfo> {
        snap.nodes().collect()
    }

    #[test]
    fn preferred_terms_score_domains_min_max() {
        let mut snap = zones();
        snap.add_pod(
            "a1",
            info(with_labels(pod("cache", "", ""), &[("app", "cache")])),
        );
        snap.add_pod(
            "b1",
            info(with_labels(pod("batch", "", ""), &[("app", "batch")])),
        );
        let p = info(preferring(
            pod("p", "", ""),
            vec![(10, term("app", "cache", "zone"))],
            vec![(5, term("app", "batch", "zone"))],
        ));
        // Raw: a1 = a2 = +10 (zone a), b1 = -5; min-max → 100, 100, 0.
        let scores = score(&snap, &p, &node_infos(&snap)).unwrap();
        assert_eq!(scores, [100, 100, 0]);
    }

    #[test]
    fn placed_pods_terms_score_the_incoming_pod() {
        let mut snap = zones();
        // A placed pod that requires (weight 1) and prefers (weight 4) pods
        // labelled app=web in its zone, and one that avoids them (weight 5).
        let mut fan = affinity(pod("fan", "", ""), vec![term("app", "web", "zone")], vec![]);
        let spec_affinity = fan.spec.as_mut().unwrap().affinity.as_mut().unwrap();
        spec_affinity
            .pod_affinity
            .as_mut()
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution =
            Some(vec![WeightedPodAffinityTerm {
                weight: 4,
                pod_affinity_term: term("app", "web", "zone"),
            }]);
        snap.add_pod("a1", info(fan));
        let hater = preferring(
            pod("hater", "", ""),
            vec![],
            vec![(5, term("app", "web", "zone"))],
        );
        snap.add_pod("b1", info(hater));
        let web = info(with_labels(pod("web", "", ""), &[("app", "web")]));
        // Raw: zone a +5, zone b -5 → 100, 100, 0.
        assert_eq!(
            score(&snap, &web, &node_infos(&snap)).unwrap(),
            [100, 100, 0]
        );
        // A pod none of the terms select scores nothing.
        let other = info(pod("other", "", ""));
        assert_eq!(score(&snap, &other, &node_infos(&snap)), None);
    }

    #[test]
    fn no_terms_anywhere_skips_scoring() {
        let mut snap = zones();
        snap.add_pod("a1", info(pod("plain", "", "")));
        assert_eq!(
            score(&snap, &info(pod("p", "", "")), &node_infos(&snap)),
            None
        );
    }

    #[test]
    fn min_max_normalization_truncates_like_upstream() {
        let mut s = [-5, 0, 12, 12];
        normalize_min_max(&mut s);
        // (0 - -5) / 17 * 100 = 29.41 → 29.
        assert_eq!(s, [0, 29, 100, 100]);
        let mut s = [3, 3];
        normalize_min_max(&mut s);
        assert_eq!(s, [0, 0]);
    }
}
