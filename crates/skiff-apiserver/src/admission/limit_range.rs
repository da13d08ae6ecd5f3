//! LimitRanger: the namespace's LimitRanges fill in the requests and limits a
//! new pod's containers leave out (`default`, `defaultRequest`), then bound
//! every container, the pod as a whole, and each claim's storage (`min`,
//! `max`, `maxLimitRequestRatio`). Messages are upstream's.
//!
//! Claims are bounded on update too, as upstream does, but only in what the
//! update changes: a request the stored claim already holds (the same
//! quantity, however spelled) is not checked again. So a LimitRange created
//! after a claim does not lock the claim against every later write (labels,
//! the binder's annotations), while growing it past `max` is refused.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use skiff_api::quota::{Amount, ResourceList, parse_list, pod_container_resources};

/// The annotation recording what LimitRanger filled in.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The `spec.limits` entries of `limit_range` of type `kind`.
fn items<'a>(limit_range: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    limit_range["spec"]["limits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |item| item["type"] == kind)
}

/// Fills in one LimitRange's Container `default` (limits) and
/// `defaultRequest` (requests) where a container does not state them, and
/// records what it set in the `kubernetes.io/limit-ranger` annotation.
pub fn apply_defaults(limit_range: &Value, pod: &mut Value) {
    let mut limits = Map::new();
    let mut requests = Map::new();
    for item in items(limit_range, "Container") {
        for (source, target) in [("default", &mut limits), ("defaultRequest", &mut requests)] {
            if let Some(values) = item[source].as_object() {
                target.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (field, label) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = pod["spec"][field].as_array_mut() else {
            continue;
        };
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_string();
            let set_requests = fill(container, "requests", &requests);
            let set_limits = fill(container, "limits", &limits);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {label} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!(
                    "{} limit for {label} {name}",
                    set_limits.join(", ")
                ));
            }
        }
    }
    if !notes.is_empty() {
        let meta = crate::object::meta_mut(pod);
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Sets each of `defaults` missing from the container's `resources.<field>`;
/// returns the names set, sorted.
fn fill(container: &mut Value, field: &str, defaults: &Map<String, Value>) -> Vec<String> {
    if defaults.is_empty() || !container.is_object() {
        return Vec::new();
    }
    if !container["resources"].is_object() {
        container["resources"] = json!({});
    }
    if !container["resources"][field].is_object() {
        container["resources"][field] = json!({});
    }
    let target = &mut container["resources"][field];
    let mut set = Vec::new();
    for (name, value) in defaults {
        if target.get(name.as_str()).is_none() {
            target[name.as_str()] = value.clone();
            set.push(name.clone());
        }
    }
    set.sort();
    set
}

/// The violations of one LimitRange by a pod: per container (Container
/// entries) and for the pod's total (Pod entries).
pub fn validate_pod(limit_range: &Value, pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items(limit_range, "Container") {
        for field in ["containers", "initContainers"] {
            for container in pod["spec"][field].as_array().into_iter().flatten() {
                let resources = &container["resources"];
                let requests = parse_list(&resources["requests"]);
                let limits = parse_list(&resources["limits"]);
                check_bounds(item, "Container", &requests, &limits, &mut errors);
            }
        }
    }
    for item in items(limit_range, "Pod") {
        let requests = pod_container_resources(pod, "requests");
        let limits = pod_container_resources(pod, "limits");
        check_bounds(item, "Pod", &requests, &limits, &mut errors);
    }
    errors
}

/// The violations of one LimitRange by a claim: its requested storage
/// against PersistentVolumeClaim `min` and `max`. On update, `old` is the
/// stored claim, and a request it holds unchanged is skipped.
pub fn validate_pvc(limit_range: &Value, pvc: &Value, old: Option<&Value>) -> Vec<String> {
    let requests = parse_list(&pvc["spec"]["resources"]["requests"]);
    let old_requests = old.map(|old| parse_list(&old["spec"]["resources"]["requests"]));
    let unchanged = |resource: &str| {
        old_requests
            .as_ref()
            .and_then(|old| old.get(resource))
            .is_some_and(|was| requests.get(resource) == Some(was))
    };
    let mut errors = Vec::new();
    for item in items(limit_range, "PersistentVolumeClaim") {
        for (resource, enforced) in parse_list(&item["min"]) {
            if unchanged(&resource) {
                continue;
            }
            errors.extend(min_constraint(
                "PersistentVolumeClaim",
                &resource,
                enforced,
                &requests,
                &ResourceList::new(),
            ));
        }
        for (resource, enforced) in parse_list(&item["max"]) {
            if unchanged(&resource) {
                continue;
            }
            let kind = "PersistentVolumeClaim";
            errors.extend(match requests.get(&resource) {
                None => Some(format!(
                    "maximum {resource} usage per {kind} is {enforced}.  No request is specified"
                )),
                Some(request) if *request > enforced => Some(format!(
                    "maximum {resource} usage per {kind} is {enforced}, but request is {request}"
                )),
                Some(_) => None,
            });
        }
    }
    errors
}

fn check_bounds(
    item: &Value,
    kind: &str,
    requests: &ResourceList,
    limits: &ResourceList,
    errors: &mut Vec<String>,
) {
    for (resource, enforced) in parse_list(&item["min"]) {
        errors.extend(min_constraint(kind, &resource, enforced, requests, limits));
    }
    for (resource, enforced) in parse_list(&item["max"]) {
        errors.extend(max_constraint(kind, &resource, enforced, requests, limits));
    }
    for (resource, enforced) in parse_list(&item["maxLimitRequestRatio"]) {
        errors.extend(ratio_constraint(
            kind, &resource, enforced, requests, limits,
        ));
    }
}

fn min_constraint(
    kind: &str,
    resource: &str,
    enforced: Amount,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(request) = requests.get(resource) else {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if *request < enforced {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but request is {request}"
        ));
    }
    match limits.get(resource) {
        Some(limit) if *limit < enforced => Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but limit is {limit}"
        )),
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    resource: &str,
    enforced: Amount,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(limit) = limits.get(resource) else {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if *limit > enforced {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but limit is {limit}"
        ));
    }
    match requests.get(resource) {
        Some(request) if *request > enforced => Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but request is {request}"
        )),
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    resource: &str,
    enforced: Amount,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let request = requests.get(resource).filter(|r| !r.is_zero());
    let limit = limits.get(resource).filter(|l| !l.is_zero());
    let Some(request) = request else {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    };
    let Some(limit) = limit else {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    };
    // limit / request > enforced, compared exactly.
    if limit.milli() * 1000 > enforced.milli() * request.milli() {
        let ratio = limit.milli() as f64 / request.milli() as f64;
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but provided ratio is {ratio:.6}"
        ));
    }
    None
}

/// Upstream's aggregate error text: one message alone, several (distinct)
/// in brackets.
pub fn aggregate(errors: &[String]) -> String {
    let mut seen = BTreeSet::new();
    let distinct: Vec<&str> = errors
        .iter()
        .filter(|e| seen.insert(e.as_str()))
        .map(String::as_str)
        .collect();
    match distinct.as_slice() {
        [one] => (*one).to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit_range(limits: Value) -> Value {
        json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}})
    }

    #[test]
    fn defaults_fill_only_what_containers_leave_out() {
        let lr = limit_range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
        "initContainers": [{"name": "setup"}],
        "containers": [
            {"name": "app", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}},
        ]}});
        apply_defaults(&lr, &mut pod);
        let app = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(app["limits"], json!({"cpu": "1", "memory": "256Mi"}));
        assert_eq!(app["requests"], json!({"cpu": "1", "memory": "128Mi"}));
        let setup = &pod["spec"]["initContainers"][0]["resources"];
        assert_eq!(setup["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: memory request for container app; memory limit for container app; \
cpu, memory request for init container setup; cpu, memory limit for init container setup"
        );
    }

    #[test]
    fn a_range_without_defaults_changes_nothing() {
        let lr = limit_range(json!([{"type": "Container", "max": {"cpu": "1"}}]));
        let mut pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let before = pod.clone();
        apply_defaults(&lr, &mut pod);
        assert_eq!(pod, before);
    }

    #[test]
    fn container_bounds_report_upstream_messages() {
        let lr = limit_range(json!([{"type": "Container",
            "max": {"cpu": "500m"}, "min": {"memory": "64Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}}]));
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "1", "memory": "32Mi"},
            "requests": {"cpu": "250m", "memory": "32Mi"}}}]}});
        let errors = validate_pod(&lr, &pod);
        assert_eq!(
            errors,
            [
                "minimum memory usage per Container is 64Mi, but request is 32Mi",
                "maximum cpu usage per Container is 500m, but limit is 1",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        assert_eq!(
            aggregate(&errors[1..2]),
            "maximum cpu usage per Container is 500m, but limit is 1"
        );
        assert!(aggregate(&errors).starts_with("[minimum memory"));
        assert!(aggregate(&errors).ends_with("4.000000]"));
        let unbounded = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            validate_pod(&lr, &unbounded),
            [
                "minimum memory usage per Container is 64Mi.  No request is specified",
                "maximum cpu usage per Container is 500m.  No limit is specified",
                "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0",
            ]
        );
    }

    #[test]
    fn pod_bounds_apply_to_the_sum_of_containers() {
        let lr = limit_range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]));
        let container = |m: &str| json!({"name": m, "resources": {"limits": {"memory": "600Mi"}}});
        let pod = json!({"spec": {"containers": [container("a"), container("b")]}});
        assert_eq!(
            validate_pod(&lr, &pod),
            ["maximum memory usage per Pod is 1Gi, but limit is 1200Mi"]
        );
        let single = json!({"spec": {"containers": [container("a")]}});
        assert!(validate_pod(&lr, &single).is_empty());
    }

    #[test]
    fn claims_are_bounded_by_their_storage_request() {
        let lr = limit_range(json!([{"type": "PersistentVolumeClaim",
            "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
        let pvc = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert_eq!(
            validate_pvc(&lr, &pvc("20Gi"), None),
            ["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
        );
        assert_eq!(
            validate_pvc(&lr, &pvc("500Mi"), None),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        assert!(validate_pvc(&lr, &pvc("5Gi"), None).is_empty());
    }

    #[test]
    fn claim_updates_are_bounded_only_in_what_they_change() {
        let lr = limit_range(json!([{"type": "PersistentVolumeClaim",
            "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
        let pvc = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        // Stored before the range existed: writes that keep the request pass,
        // however the same quantity is spelled.
        let big = pvc("20Gi");
        assert!(validate_pvc(&lr, &big, Some(&big)).is_empty());
        assert!(validate_pvc(&lr, &pvc("20480Mi"), Some(&big)).is_empty());
        let small = pvc("500Mi");
        assert!(validate_pvc(&lr, &small, Some(&small)).is_empty());
        // Growing is checked as on create.
        assert_eq!(
            validate_pvc(&lr, &pvc("12Gi"), Some(&pvc("5Gi"))),
            ["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 12Gi"]
        );
        assert_eq!(
            validate_pvc(&lr, &pvc("25Gi"), Some(&big)),
            ["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 25Gi"]
        );
        assert!(validate_pvc(&lr, &pvc("8Gi"), Some(&pvc("5Gi"))).is_empty());
        assert_eq!(
            validate_pvc(&lr, &pvc("800Mi"), Some(&small)),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 800Mi"]
        );
        // A request the stored claim did not have is new, so it is checked.
        let none = json!({"spec": {"resources": {}}});
        assert_eq!(
            validate_pvc(&lr, &none, Some(&none)),
            [
                "minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified",
                "maximum storage usage per PersistentVolumeClaim is 10Gi.  No request is specified",
            ]
        );
    }
}
