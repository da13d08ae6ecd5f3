//! The node-placement rules the scheduler and the controllers both apply:
//! whether a toleration tolerates a taint (upstream's `ToleratesTaint`), and
//! whether a node selector term matches a node (upstream's
//! `nodeaffinity.NodeSelector`). One definition, so a DaemonSet, the taint
//! eviction of the node lifecycle controller and the scheduler never
//! disagree about a node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

/// The only field a `matchFields` requirement may name.
const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether `toleration` tolerates `taint`: an empty effect matches every
/// effect, an empty key every key, `Exists` every value and `Equal` (the
/// default operator) an equal value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "Exists" => true,
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Whether a node selector term matches the node with `labels` and `name`:
/// all of its requirements hold. An empty term matches nothing.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| label_requirement_matches(r, labels))
        && fields.iter().all(|r| field_requirement_matches(r, name))
}

/// One `matchExpressions` requirement against node labels.
fn label_requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let label = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => label.is_some_and(|v| values.contains(v)),
        "NotIn" => label.is_none_or(|v| !values.contains(v)),
        "Exists" => label.is_some(),
        "DoesNotExist" => label.is_none(),
        op @ ("Gt" | "Lt") => {
            let [bound] = values else { return false };
            let (Ok(bound), Some(Ok(have))) =
                (bound.parse::<i64>(), label.map(|v| v.parse::<i64>()))
            else {
                return false;
            };
            if op == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// One `matchFields` requirement; only `metadata.name` with `In`/`NotIn` is
/// valid, anything else matches nothing.
fn field_requirement_matches(req: &NodeSelectorRequirement, name: &str) -> bool {
    if req.key != NODE_NAME_FIELD {
        return false;
    }
    let listed = req.values.iter().flatten().any(|v| v == name);
    match req.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn toleration(key: &str, operator: &str, value: Option<&str>, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(operator.into()),
            value: value.map(Into::into),
            effect: (!effect.is_empty()).then(|| effect.into()),
            ..Toleration::default()
        }
    }

    #[test]
    fn tolerations_match_by_key_value_and_effect() {
        let gpu = taint("gpu", Some("a100"), "NoSchedule");
        assert!(tolerates(&toleration("", "Exists", None, ""), &gpu));
        assert!(tolerates(
            &toleration("gpu", "Exists", None, "NoSchedule"),
            &gpu
        ));
        assert!(tolerates(
            &toleration("gpu", "Equal", Some("a100"), ""),
            &gpu
        ));
        assert!(!tolerates(
            &toleration("gpu", "Equal", Some("t4"), ""),
            &gpu
        ));
        assert!(!tolerates(
            &toleration("gpu", "Exists", None, "NoExecute"),
            &gpu
        ));
        assert!(!tolerates(&toleration("disk", "Exists", None, ""), &gpu));
        let no_operator = Toleration {
            key: Some("gpu".into()),
            value: Some("a100".into()),
            ..Toleration::default()
        };
        assert!(
            tolerates(&no_operator, &gpu),
            "Equal is the default operator"
        );
        assert!(tolerated(
            &[
                toleration("disk", "Exists", None, ""),
                toleration("gpu", "Exists", None, "")
            ],
            &gpu
        ));
    }

    #[test]
    fn terms_need_every_requirement_and_empty_terms_match_nothing() {
        let labels = BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("cores".to_string(), "8".to_string()),
        ]);
        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        assert!(!term_matches(&NodeSelectorTerm::default(), &labels, "n1"));
        let holds = |r| term_matches(&term(vec![r], vec![]), &labels, "n1");
        assert!(holds(req("gpu", "NotIn", &["x"])));
        assert!(holds(req("cores", "Exists", &[])));
        assert!(
            !holds(req("cores", "Gt", &["x"])),
            "a bound that is no number"
        );
        assert!(
            !holds(req("zone", "Gt", &["1"])),
            "a label that is no number"
        );
        assert!(term_matches(
            &term(
                vec![req("zone", "In", &["a", "b"]), req("cores", "Gt", &["4"])],
                vec![]
            ),
            &labels,
            "n1"
        ));
        assert!(!term_matches(
            &term(
                vec![req("zone", "In", &["a"]), req("cores", "Lt", &["4"])],
                vec![]
            ),
            &labels,
            "n1"
        ));
        assert!(term_matches(
            &term(vec![req("gpu", "DoesNotExist", &[])], vec![]),
            &labels,
            "n1"
        ));
        assert!(term_matches(
            &term(vec![], vec![req("metadata.name", "In", &["n1"])]),
            &labels,
            "n1"
        ));
        assert!(!term_matches(
            &term(vec![], vec![req("metadata.name", "In", &["n1"])]),
            &labels,
            "n2"
        ));
        assert!(!term_matches(
            &term(vec![], vec![req("metadata.uid", "In", &["n1"])]),
            &labels,
            "n1"
        ));
    }
}
