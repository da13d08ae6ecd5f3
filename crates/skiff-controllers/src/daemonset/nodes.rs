//! Which nodes a DaemonSet's pod belongs on, and how a pod is pinned to one.
//!
//! Upstream asks the same three questions the scheduler would, with the pod
//! the DaemonSet would create: does the template's `nodeName` (if any) name
//! this node, do its `nodeSelector` and required node affinity match the
//! node's labels and name, and does it tolerate every `NoSchedule` and
//! `NoExecute` taint in the node's spec. A node failing only on taints may
//! keep a pod it already has if every `NoExecute` taint is tolerated (a
//! `NoSchedule` taint keeps new pods off but evicts nothing).
//!
//! Daemon pods tolerate node trouble the node lifecycle controller reports as
//! taints (not-ready, unreachable, memory/disk/PID pressure, cordoning, and
//! for host-network pods an unconfigured network), so an agent on a sick or
//! cordoned node keeps running. Only the node's spec taints are consulted,
//! as upstream: a NotReady condition without its taint does not exclude a
//! node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Toleration,
};
use skiff_api::scheduling::{term_matches, tolerated};

/// The field a `matchFields` requirement may name.
const NODE_NAME_FIELD: &str = "metadata.name";

/// Taint keys the node lifecycle controller sets, that daemon pods tolerate.
const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";

fn exists_toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Toleration::default()
    }
}

/// Upstream's tolerations every daemon pod gets, without `tolerationSeconds`
/// so that node trouble never evicts it.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut tolerations = vec![
        exists_toleration(TAINT_NOT_READY, NO_EXECUTE),
        exists_toleration(TAINT_UNREACHABLE, NO_EXECUTE),
        exists_toleration(TAINT_DISK_PRESSURE, NO_SCHEDULE),
        exists_toleration(TAINT_MEMORY_PRESSURE, NO_SCHEDULE),
        exists_toleration(TAINT_PID_PRESSURE, NO_SCHEDULE),
        exists_toleration(TAINT_UNSCHEDULABLE, NO_SCHEDULE),
    ];
    if host_network {
        tolerations.push(exists_toleration(TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE));
    }
    tolerations
}

/// Adds the daemon tolerations to `spec`: one the pod already has with the
/// same key, operator, value and effect is replaced (dropping its
/// `tolerationSeconds`), any other is appended.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for wanted in daemon_tolerations(host_network) {
        let same = |t: &Toleration| {
            t.key == wanted.key
                && t.operator == wanted.operator
                && t.value == wanted.value
                && t.effect == wanted.effect
        };
        match tolerations.iter_mut().find(|t| same(t)) {
            Some(existing) => *existing = wanted,
            None => tolerations.push(wanted),
        }
    }
}

/// Where a daemon pod may run or keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Eligibility {
    /// A new daemon pod belongs on the node.
    pub should_run: bool,
    /// A daemon pod already on the node may stay.
    pub should_continue_running: bool,
}

/// The scheduling constraints of the pod a DaemonSet would create, prepared
/// once and checked against every node.
#[derive(Debug, Clone, Default)]
pub struct NodeFit {
    node_name: Option<String>,
    node_selector: BTreeMap<String, String>,
    required_terms: Option<Vec<NodeSelectorTerm>>,
    tolerations: Vec<Toleration>,
}

impl NodeFit {
    /// The constraints of pods made from `template`, daemon tolerations
    /// included.
    pub fn new(template: &PodTemplateSpec) -> Self {
        let mut spec = template.spec.clone().unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        Self {
            node_name: spec.node_name.filter(|n| !n.is_empty()),
            node_selector: spec.node_selector.unwrap_or_default(),
            required_terms: spec
                .affinity
                .and_then(|a| a.node_affinity)
                .and_then(|na| na.required_during_scheduling_ignored_during_execution)
                .map(|selector| selector.node_selector_terms),
            tolerations: spec.tolerations.unwrap_or_default(),
        }
    }

    /// Whether a daemon pod should run, or may keep running, on `node`.
    pub fn eligibility(&self, node: &Node) -> Eligibility {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if self.node_name.as_deref().is_some_and(|n| n != name) || !self.affinity_matches(node) {
            return Eligibility::default();
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        let untolerated = |effects: &[&str]| {
            taints.iter().any(|taint| {
                effects.contains(&taint.effect.as_str()) && !tolerated(&self.tolerations, taint)
            })
        };
        if untolerated(&[NO_SCHEDULE, NO_EXECUTE]) {
            Eligibility {
                should_run: false,
                should_continue_running: !untolerated(&[NO_EXECUTE]),
            }
        } else {
            Eligibility {
                should_run: true,
                should_continue_running: true,
            }
        }
    }

    /// `nodeSelector` (every label equal) and required node affinity (any
    /// term matches).
    fn affinity_matches(&self, node: &Node) -> bool {
        let empty = BTreeMap::new();
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let selector_ok = self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        let name = node.metadata.name.as_deref().unwrap_or_default();
        selector_ok
            && self
                .required_terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| term_matches(t, labels, name)))
    }
}

/// Pins `spec` to `node` the way upstream does since the default scheduler
/// binds daemon pods: the required node affinity becomes the single term
/// `metadata.name In [node]`. The template's own required terms were already
/// checked against the node, so dropping them loses nothing.
pub fn bind_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: NODE_NAME_FIELD.to_string(),
            operator: "In".to_string(),
            values: Some(vec![node.to_string()]),
        }]),
        ..NodeSelectorTerm::default()
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod is for: where it is bound, or else the single node
/// its required affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NODE_NAME_FIELD && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([only]) => Some(only.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            effect: effect.to_string(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn template(spec: PodSpec) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(spec),
        }
    }

    fn requirement(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        }
    }

    const RUN: Eligibility = Eligibility {
        should_run: true,
        should_continue_running: true,
    };
    const NEVER: Eligibility = Eligibility {
        should_run: false,
        should_continue_running: false,
    };
    const KEEP_ONLY: Eligibility = Eligibility {
        should_run: false,
        should_continue_running: true,
    };

    #[test]
    fn node_selector_must_match_every_label() {
        let fit = NodeFit::new(&template(PodSpec {
            node_selector: Some(BTreeMap::from([("disk".into(), "ssd".into())])),
            ..PodSpec::default()
        }));
        assert_eq!(fit.eligibility(&node("a", &[("disk", "ssd")], &[])), RUN);
        assert_eq!(fit.eligibility(&node("b", &[("disk", "hdd")], &[])), NEVER);
        assert_eq!(fit.eligibility(&node("c", &[], &[])), NEVER);
    }

    #[test]
    fn required_affinity_needs_one_matching_term() {
        let fit = NodeFit::new(&template(with_required(vec![
            NodeSelectorTerm {
                match_expressions: Some(vec![requirement("zone", "In", &["a", "b"])]),
                ..NodeSelectorTerm::default()
            },
            NodeSelectorTerm {
                match_fields: Some(vec![requirement("metadata.name", "In", &["special"])]),
                ..NodeSelectorTerm::default()
            },
        ])));
        assert_eq!(fit.eligibility(&node("n1", &[("zone", "b")], &[])), RUN);
        assert_eq!(fit.eligibility(&node("n2", &[("zone", "c")], &[])), NEVER);
        assert_eq!(fit.eligibility(&node("special", &[], &[])), RUN);
    }

    #[test]
    fn a_template_node_name_limits_the_set_to_that_node() {
        let fit = NodeFit::new(&template(PodSpec {
            node_name: Some("only".into()),
            ..PodSpec::default()
        }));
        assert_eq!(fit.eligibility(&node("only", &[], &[])), RUN);
        assert_eq!(fit.eligibility(&node("other", &[], &[])), NEVER);
    }

    #[test]
    fn taints_block_new_pods_and_no_execute_evicts_running_ones() {
        let fit = NodeFit::new(&template(PodSpec::default()));
        assert_eq!(
            fit.eligibility(&node("a", &[], &[("dedicated", "NoSchedule")])),
            KEEP_ONLY
        );
        assert_eq!(
            fit.eligibility(&node("b", &[], &[("dedicated", "NoExecute")])),
            NEVER
        );
        assert_eq!(
            fit.eligibility(&node("c", &[], &[("dedicated", "PreferNoSchedule")])),
            RUN
        );
    }

    #[test]
    fn user_tolerations_admit_tainted_nodes() {
        let fit = NodeFit::new(&template(PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }]),
            ..PodSpec::default()
        }));
        assert_eq!(
            fit.eligibility(&node("a", &[], &[("dedicated", "NoExecute")])),
            RUN
        );
        let everything = NodeFit::new(&template(PodSpec {
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Toleration::default()
            }]),
            ..PodSpec::default()
        }));
        assert_eq!(
            everything.eligibility(&node("b", &[], &[("x", "NoSchedule")])),
            RUN
        );
    }

    #[test]
    fn node_trouble_and_cordoning_are_tolerated() {
        let fit = NodeFit::new(&template(PodSpec::default()));
        for taint in [
            (TAINT_NOT_READY, NO_EXECUTE),
            (TAINT_UNREACHABLE, NO_EXECUTE),
            (TAINT_DISK_PRESSURE, NO_SCHEDULE),
            (TAINT_MEMORY_PRESSURE, NO_SCHEDULE),
            (TAINT_PID_PRESSURE, NO_SCHEDULE),
            (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
        ] {
            assert_eq!(fit.eligibility(&node("a", &[], &[taint])), RUN, "{taint:?}");
        }
        // The not-ready NoSchedule taint is not tolerated: no new pods there.
        assert_eq!(
            fit.eligibility(&node("b", &[], &[(TAINT_NOT_READY, NO_SCHEDULE)])),
            KEEP_ONLY
        );
        let mut cordoned = node("c", &[], &[]);
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        assert_eq!(fit.eligibility(&cordoned), RUN);
    }

    #[test]
    fn network_unavailable_is_tolerated_by_host_network_pods_only() {
        let tainted = node("a", &[], &[(TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE)]);
        let pod_network = NodeFit::new(&template(PodSpec::default()));
        assert_eq!(pod_network.eligibility(&tainted), KEEP_ONLY);
        let host_network = NodeFit::new(&template(PodSpec {
            host_network: Some(true),
            ..PodSpec::default()
        }));
        assert_eq!(host_network.eligibility(&tainted), RUN);
    }

    #[test]
    fn daemon_tolerations_replace_equal_ones_and_keep_others() {
        let mut spec = PodSpec {
            tolerations: Some(vec![
                Toleration {
                    toleration_seconds: Some(30),
                    ..exists_toleration(TAINT_NOT_READY, NO_EXECUTE)
                },
                exists_toleration("mine", NO_SCHEDULE),
            ]),
            ..PodSpec::default()
        };
        add_daemon_tolerations(&mut spec);
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), 7);
        assert_eq!(
            tolerations[0],
            exists_toleration(TAINT_NOT_READY, NO_EXECUTE)
        );
        assert_eq!(tolerations[1], exists_toleration("mine", NO_SCHEDULE));
        assert!(
            !tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some(TAINT_NETWORK_UNAVAILABLE))
        );
    }

    #[test]
    fn binding_replaces_required_terms_and_target_node_reads_them_back() {
        let mut spec = with_required(vec![NodeSelectorTerm {
            match_expressions: Some(vec![requirement("zone", "In", &["a"])]),
            ..NodeSelectorTerm::default()
        }]);
        bind_to_node(&mut spec, "n7");
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].match_expressions, None);
        let mut pod = Pod {
            spec: Some(spec),
            ..Pod::default()
        };
        assert_eq!(target_node(&pod), Some("n7"));
        pod.spec.as_mut().unwrap().node_name = Some("bound".into());
        assert_eq!(target_node(&pod), Some("bound"));
        assert_eq!(target_node(&Pod::default()), None);
    }
}
