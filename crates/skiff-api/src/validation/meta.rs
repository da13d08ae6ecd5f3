//! `metadata`, labels, annotations and label selectors, shared by every type.

use serde_json::{Map, Value};

use super::field::{
    Path, arr_of, bool_of, duplicate, forbidden, int_of, invalid, invalid_each, map_of, required,
    str_of, too_long,
};
use super::names::{
    dns1123_label_errors, dns1123_subdomain_errors, label_value_errors, qualified_name_errors,
};
use crate::registry::FieldError;

/// Total size allowed for all annotations of one object.
pub(crate) const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// How an object's name is checked; `prefix` is true for `generateName`, whose trailing
/// `-` is masked because a random suffix follows it.
pub(crate) type NameCheck = fn(&str, bool) -> Vec<String>;

fn mask_trailing_dash(name: &str) -> &str {
    if name.len() > 1 {
        name.strip_suffix('-').unwrap_or(name)
    } else {
        name
    }
}

/// Name rule of most kinds.
pub(crate) fn name_is_dns_subdomain(name: &str, prefix: bool) -> Vec<String> {
    let name = if prefix {
        mask_trailing_dash(name)
    } else {
        name
    };
    dns1123_subdomain_errors(name)
}

/// Name rule of namespaces and a few others.
pub(crate) fn name_is_dns_label(name: &str, prefix: bool) -> Vec<String> {
    let name = if prefix {
        mask_trailing_dash(name)
    } else {
        name
    };
    dns1123_label_errors(name)
}

/// Name rule of services.
pub(crate) fn name_is_dns1035_label(name: &str, prefix: bool) -> Vec<String> {
    let name = if prefix {
        mask_trailing_dash(name)
    } else {
        name
    };
    super::names::dns1035_label_errors(name)
}

/// Validates `metadata` on create (and, via [`validate_object_meta_update`], on update).
pub(crate) fn validate_object_meta(
    errs: &mut Vec<FieldError>,
    meta: &Value,
    namespaced: bool,
    check_name: NameCheck,
) {
    let path = Path::new("metadata");
    let name = str_of(meta, "name");
    let generate_name = str_of(meta, "generateName");
    if !generate_name.is_empty() {
        invalid_each(
            errs,
            &path.child("generateName"),
            generate_name,
            check_name(generate_name, true),
        );
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        invalid_each(errs, &path.child("name"), name, check_name(name, false));
    }

    let namespace = str_of(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(required(&path.child("namespace"), ""));
        } else {
            invalid_each(
                errs,
                &path.child("namespace"),
                namespace,
                dns1123_label_errors(namespace),
            );
        }
    } else if !namespace.is_empty() {
        errs.push(forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }

    if let Some(generation) = int_of(meta, "generation")
        && generation < 0
    {
        errs.push(invalid(
            &path.child("generation"),
            generation,
            "must be greater than or equal to 0",
        ));
    }
    validate_labels(errs, map_of(meta, "labels"), &path.child("labels"));
    validate_annotations(
        errs,
        map_of(meta, "annotations"),
        &path.child("annotations"),
    );
    validate_owner_references(
        errs,
        arr_of(meta, "ownerReferences"),
        &path.child("ownerReferences"),
    );
    validate_finalizers(errs, arr_of(meta, "finalizers"), &path.child("finalizers"));
}

/// Rules that compare `metadata` with the stored object.
pub(crate) fn validate_object_meta_update(errs: &mut Vec<FieldError>, new: &Value, old: &Value) {
    let path = Path::new("metadata");
    for key in ["name", "namespace", "uid", "creationTimestamp"] {
        let (n, o) = (str_of(new, key), str_of(old, key));
        // The server copies uid and creationTimestamp from the stored object when a
        // client leaves them out, so only a different non-empty value is an error.
        let optional = matches!(key, "uid" | "creationTimestamp");
        if n != o && !(optional && n.is_empty()) {
            errs.push(invalid(&path.child(key), n, "field is immutable"));
        }
    }
}

/// Label keys must be qualified names and values valid label values.
pub(crate) fn validate_labels(
    errs: &mut Vec<FieldError>,
    labels: &Map<String, Value>,
    path: &Path,
) {
    for (key, value) in labels {
        invalid_each(errs, path, key, qualified_name_errors(key));
        let value = value.as_str().unwrap_or("");
        invalid_each(errs, &path.key(key), value, label_value_errors(value));
    }
}

/// Annotation keys must be qualified names (compared lowercased) and all annotations
/// together at most 256 KiB.
pub(crate) fn validate_annotations(
    errs: &mut Vec<FieldError>,
    annotations: &Map<String, Value>,
    path: &Path,
) {
    let mut total = 0usize;
    for (key, value) in annotations {
        invalid_each(errs, path, key, qualified_name_errors(&key.to_lowercase()));
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE));
    }
}

fn validate_owner_references(errs: &mut Vec<FieldError>, refs: &[Value], path: &Path) {
    let mut controllers = Vec::new();
    for r in refs {
        for key in ["apiVersion", "kind", "name", "uid"] {
            if str_of(r, key).is_empty() {
                errs.push(required(
                    &path.child(key),
                    &format!("{key} must not be empty"),
                ));
            }
        }
        if bool_of(r, "controller") {
            controllers.push(format!("{}/{}", str_of(r, "kind"), str_of(r, "name")));
        }
    }
    if controllers.len() > 1 {
        errs.push(invalid(
            path,
            &Value::Array(refs.to_vec()),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
}

/// Finalizers must be qualified names. Upstream also refuses unprefixed names other
/// than the standard ones on some built-in types; that rule is left out because
/// controllers commonly use such names and refusing them breaks real workloads.
fn validate_finalizers(errs: &mut Vec<FieldError>, finalizers: &[Value], path: &Path) {
    for f in finalizers {
        let name = f.as_str().unwrap_or("");
        invalid_each(errs, path, name, qualified_name_errors(name));
    }
}

/// Validates a `metav1.LabelSelector`.
pub(crate) fn validate_label_selector(errs: &mut Vec<FieldError>, selector: &Value, path: &Path) {
    validate_labels(
        errs,
        map_of(selector, "matchLabels"),
        &path.child("matchLabels"),
    );
    for (i, expr) in arr_of(selector, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = arr_of(expr, "values");
        match str_of(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = str_of(expr, "key");
        invalid_each(errs, &p.child("key"), key, qualified_name_errors(key));
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            invalid_each(errs, &p.child("values").index(j), v, label_value_errors(v));
        }
    }
}

/// Whether a label selector selects nothing in particular (no requirements).
pub(crate) fn selector_is_empty(selector: &Value) -> bool {
    map_of(selector, "matchLabels").is_empty() && arr_of(selector, "matchExpressions").is_empty()
}

/// Whether `labels` satisfy a `metav1.LabelSelector`. An invalid operator matches nothing.
pub(crate) fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = map_of(selector, "matchLabels")
        .iter()
        .all(|(k, v)| label(k).is_some_and(|l| Some(l) == v.as_str()));
    labels_ok
        && arr_of(selector, "matchExpressions").iter().all(|expr| {
            let key = str_of(expr, "key");
            let in_values = |l: &str| arr_of(expr, "values").iter().any(|v| v.as_str() == Some(l));
            match str_of(expr, "operator") {
                "In" => label(key).is_some_and(in_values),
                "NotIn" => !label(key).is_some_and(in_values),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        })
}

/// Checks that names in a list are unique, reporting `Duplicate value` at `path[i].key`.
pub(crate) fn unique_names(errs: &mut Vec<FieldError>, items: &[Value], key: &str, path: &Path) {
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let name = str_of(item, key);
        if !name.is_empty() && !seen.insert(name) {
            errs.push(duplicate(&path.index(i).child(key), name));
        }
    }
}

/// Validates an int-or-percent value (`maxUnavailable`, `minAvailable`, ...): a
/// non-negative integer or a `N%` string.
pub(crate) fn validate_int_or_percent(
    errs: &mut Vec<FieldError>,
    v: &Value,
    path: &Path,
    at_most_100_percent: bool,
) {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => {
            errs.push(invalid(path, v, "must be greater than or equal to 0"));
        }
        Value::String(s) => {
            let msgs = super::names::percent_errors(s);
            if !msgs.is_empty() {
                invalid_each(errs, path, s, msgs);
            } else if at_most_100_percent && percent_value(s).is_some_and(|p| p > 100) {
                errs.push(invalid(path, s.as_str(), "must not be greater than 100%"));
            }
        }
        _ => {}
    }
}

/// The number in a valid `N%` string.
pub(crate) fn percent_value(s: &str) -> Option<u64> {
    s.strip_suffix('%')?.parse().ok()
}

/// Whether an int-or-percent value is zero (`0` or `0%`).
pub(crate) fn int_or_percent_is_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => percent_value(s) == Some(0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta_errs(meta: Value, namespaced: bool) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_object_meta(&mut errs, &meta, namespaced, name_is_dns_subdomain);
        errs
    }

    #[test]
    fn name_required_unless_generate_name() {
        let errs = meta_errs(json!({"namespace": "default"}), true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(
            errs[0].message,
            "Required value: name or generateName is required"
        );
        assert!(
            meta_errs(
                json!({"generateName": "web-", "namespace": "default"}),
                true
            )
            .is_empty()
        );
    }

    #[test]
    fn invalid_name_message() {
        let errs = meta_errs(json!({"name": "Foo_Bar", "namespace": "default"}), true);
        assert_eq!(errs[0].reason, "FieldValueInvalid");
        assert!(errs[0].message.starts_with(
            "Invalid value: \"Foo_Bar\": a lowercase RFC 1123 subdomain must consist of"
        ));
    }

    #[test]
    fn namespace_rules() {
        assert_eq!(
            meta_errs(json!({"name": "a"}), true)[0].field,
            "metadata.namespace"
        );
        let errs = meta_errs(json!({"name": "a", "namespace": "x"}), false);
        assert_eq!(errs[0].message, "Forbidden: not allowed on this type");
    }

    #[test]
    fn labels_annotations_finalizers() {
        let errs = meta_errs(
            json!({"name": "a", "labels": {"app": "-bad", "bad key!": "x", "app.kubernetes.io/name": "ok"}}),
            false,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.labels[app]", "metadata.labels"]);

        let big = "x".repeat(TOTAL_ANNOTATION_SIZE);
        let errs = meta_errs(json!({"name": "a", "annotations": {"k": big}}), false);
        assert_eq!(errs[0].reason, "FieldValueTooLong");
        assert_eq!(errs[0].field, "metadata.annotations");

        let errs = meta_errs(
            json!({"name": "a", "finalizers": [
                "kubernetes",
                "example.com/x",
                "resources-finalizer.argocd.argoproj.io",
                "bad/x/y"
            ]}),
            false,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.finalizers");
        assert!(errs[0].message.starts_with("Invalid value: \"bad/x/y\""));
    }

    #[test]
    fn update_immutables() {
        let mut errs = Vec::new();
        validate_object_meta_update(
            &mut errs,
            &json!({"name": "b", "namespace": "ns"}),
            &json!({"name": "a", "namespace": "ns", "uid": "u"}),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].message, "Invalid value: \"b\": field is immutable");
    }

    #[test]
    fn selectors() {
        let labels = json!({"app": "web", "tier": "fe"});
        let labels = labels.as_object().cloned().unwrap_or_default();
        assert!(selector_matches(
            &json!({"matchLabels": {"app": "web"}}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"app": "db"}}),
            &labels
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "x", "operator": "DoesNotExist"},
                {"key": "app", "operator": "NotIn", "values": ["db"]}
            ]}),
            &labels
        ));
        let mut errs = Vec::new();
        validate_label_selector(
            &mut errs,
            &json!({"matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Foo"}
            ]}),
            &Path::new("spec.selector"),
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator"
            ]
        );
    }

    #[test]
    fn int_or_percent() {
        let mut errs = Vec::new();
        let p = Path::new("x");
        validate_int_or_percent(&mut errs, &json!(1), &p, true);
        validate_int_or_percent(&mut errs, &json!("25%"), &p, true);
        assert!(errs.is_empty());
        validate_int_or_percent(&mut errs, &json!(-1), &p, true);
        validate_int_or_percent(&mut errs, &json!("110%"), &p, true);
        validate_int_or_percent(&mut errs, &json!("abc"), &p, true);
        assert_eq!(errs.len(), 3);
        assert_eq!(
            errs[1].message,
            "Invalid value: \"110%\": must not be greater than 100%"
        );
    }
}
