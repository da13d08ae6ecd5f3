//! Field selectors: which fields each type can be filtered on, and their values.
//!
//! Upstream accepts a fixed set of field labels per kind (its field label conversion
//! functions) and answers 400 for any other. Each function here returns the value of
//! a supported field as upstream's `GetAttrs` renders it (booleans `true`/`false`,
//! integers in decimal) and `None` for an unsupported one. A supported field has a
//! value on every object, the Go zero value when it is unset, so that the API server
//! can probe support on an empty object.

use serde_json::Value;

/// The string at `ptr`, or `""`.
fn text(obj: &Value, ptr: &str) -> String {
    obj.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// The boolean at `ptr` as `true`/`false` (unset is `false`).
fn flag(obj: &Value, ptr: &str) -> String {
    obj.pointer(ptr)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The integer at `ptr` in decimal (unset is `0`).
fn number(obj: &Value, ptr: &str) -> String {
    obj.pointer(ptr)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// `metadata.name` and `metadata.namespace`, which every namespaced kind supports.
pub(super) fn namespaced(obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(text(obj, "/metadata/name")),
        "metadata.namespace" => Some(text(obj, "/metadata/namespace")),
        _ => None,
    }
}

/// Cluster-scoped kinds without a conversion function of their own accept
/// `metadata.namespace` too; it is always empty.
pub(super) fn cluster(obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(text(obj, "/metadata/name")),
        "metadata.namespace" => Some(String::new()),
        _ => None,
    }
}

/// Pods: where they run, how, and their phase and addresses.
pub(super) fn pod(obj: &Value, field: &str) -> Option<String> {
    Some(match field {
        // `spec.host` is what very old clients send for `spec.nodeName`.
        "spec.nodeName" | "spec.host" => text(obj, "/spec/nodeName"),
        "spec.restartPolicy" => text(obj, "/spec/restartPolicy"),
        "spec.schedulerName" => text(obj, "/spec/schedulerName"),
        "spec.serviceAccountName" => text(obj, "/spec/serviceAccountName"),
        "spec.hostNetwork" => flag(obj, "/spec/hostNetwork"),
        "status.phase" => text(obj, "/status/phase"),
        "status.podIP" => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .map_or_else(|| text(obj, "/status/podIP"), str::to_owned),
        // Accepted upstream but absent from the pod's field set, so it never
        // equals a non-empty value.
        "status.podIPs" => String::new(),
        "status.nominatedNodeName" => text(obj, "/status/nominatedNodeName"),
        _ => return namespaced(obj, field),
    })
}

/// Nodes: name and schedulability (no `metadata.namespace`, as upstream).
pub(super) fn node(obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(text(obj, "/metadata/name")),
        "spec.unschedulable" => Some(flag(obj, "/spec/unschedulable")),
        _ => None,
    }
}

/// Namespaces: name and phase (no `metadata.namespace`, as upstream).
pub(super) fn namespace(obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(text(obj, "/metadata/name")),
        "status.phase" => Some(text(obj, "/status/phase")),
        _ => None,
    }
}

/// Secrets: their type.
pub(super) fn secret(obj: &Value, field: &str) -> Option<String> {
    match field {
        "type" => Some(text(obj, "/type")),
        _ => namespaced(obj, field),
    }
}

/// Services: cluster IP and type.
pub(super) fn service(obj: &Value, field: &str) -> Option<String> {
    match field {
        "spec.clusterIP" => Some(text(obj, "/spec/clusterIP")),
        "spec.type" => Some(text(obj, "/spec/type")),
        _ => namespaced(obj, field),
    }
}

/// `v1` Events: the involved object, reason, source and type.
pub(super) fn core_event(obj: &Value, field: &str) -> Option<String> {
    let involved = |name: &str| Some(text(obj, &format!("/involvedObject/{name}")));
    match field {
        "involvedObject.kind" => involved("kind"),
        "involvedObject.namespace" => involved("namespace"),
        "involvedObject.name" => involved("name"),
        "involvedObject.uid" => involved("uid"),
        "involvedObject.apiVersion" => involved("apiVersion"),
        "involvedObject.resourceVersion" => involved("resourceVersion"),
        "involvedObject.fieldPath" => involved("fieldPath"),
        "reason" => Some(text(obj, "/reason")),
        "reportingComponent" => Some(text(obj, "/reportingController")),
        "source" => Some(event_source(obj, "/source/component")),
        "type" => Some(text(obj, "/type")),
        _ => namespaced(obj, field),
    }
}

/// `events.k8s.io/v1` Events: the same fields under their new names.
pub(super) fn events_v1_event(obj: &Value, field: &str) -> Option<String> {
    let regarding = |name: &str| Some(text(obj, &format!("/regarding/{name}")));
    match field {
        "regarding.kind" => regarding("kind"),
        "regarding.namespace" => regarding("namespace"),
        "regarding.name" => regarding("name"),
        "regarding.uid" => regarding("uid"),
        "regarding.apiVersion" => regarding("apiVersion"),
        "regarding.resourceVersion" => regarding("resourceVersion"),
        "regarding.fieldPath" => regarding("fieldPath"),
        "reason" => Some(text(obj, "/reason")),
        "reportingController" => Some(text(obj, "/reportingController")),
        "source" => Some(event_source(obj, "/deprecatedSource/component")),
        "type" => Some(text(obj, "/type")),
        _ => namespaced(obj, field),
    }
}

/// An event's `source` field: the legacy source component, else the reporting
/// controller.
fn event_source(obj: &Value, component: &str) -> String {
    match text(obj, component) {
        c if c.is_empty() => text(obj, "/reportingController"),
        c => c,
    }
}

/// ReplicaSets: the observed replica count.
pub(super) fn replica_set(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.replicas" => Some(number(obj, "/status/replicas")),
        _ => namespaced(obj, field),
    }
}

/// Jobs: the number of succeeded pods.
pub(super) fn job(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.successful" => Some(number(obj, "/status/succeeded")),
        _ => namespaced(obj, field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_fields() {
        let obj = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "restartPolicy": "Always",
                "schedulerName": "default-scheduler", "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}
        });
        assert_eq!(pod_field(&obj, "spec.nodeName"), "n1");
        assert_eq!(pod_field(&obj, "spec.host"), "n1");
        assert_eq!(pod_field(&obj, "spec.hostNetwork"), "true");
        assert_eq!(pod_field(&obj, "status.phase"), "Running");
        assert_eq!(pod_field(&obj, "status.podIP"), "10.0.0.1");
        assert_eq!(pod_field(&obj, "status.nominatedNodeName"), "");
        assert_eq!(pod_field(&obj, "metadata.namespace"), "ns");
        assert_eq!(pod(&obj, "spec.containers"), None);
        assert_eq!(pod(&obj, "status.hostIP"), None);
    }

    fn pod_field(obj: &Value, field: &str) -> String {
        pod(obj, field).unwrap_or_else(|| panic!("{field} should be supported"))
    }

    #[test]
    fn supported_fields_answer_on_empty_objects() {
        let empty = json!({});
        assert_eq!(pod(&empty, "spec.hostNetwork").as_deref(), Some("false"));
        assert_eq!(node(&empty, "spec.unschedulable").as_deref(), Some("false"));
        assert_eq!(job(&empty, "status.successful").as_deref(), Some("0"));
        assert_eq!(replica_set(&empty, "status.replicas").as_deref(), Some("0"));
        assert_eq!(secret(&empty, "type").as_deref(), Some(""));
        assert_eq!(cluster(&empty, "metadata.namespace").as_deref(), Some(""));
        assert_eq!(node(&empty, "metadata.namespace"), None);
        assert_eq!(namespace(&empty, "metadata.namespace"), None);
        assert_eq!(namespaced(&empty, "spec.anything"), None);
    }

    #[test]
    fn event_fields_in_both_shapes() {
        let core = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "uid": "u1", "namespace": "default"},
            "reason": "Killing", "type": "Normal", "reportingController": "kubelet"
        });
        assert_eq!(
            core_event(&core, "involvedObject.uid").as_deref(),
            Some("u1")
        );
        assert_eq!(
            core_event(&core, "involvedObject.name").as_deref(),
            Some("web")
        );
        assert_eq!(core_event(&core, "source").as_deref(), Some("kubelet"));
        assert_eq!(
            core_event(&core, "reportingComponent").as_deref(),
            Some("kubelet")
        );
        assert_eq!(core_event(&core, "regarding.name"), None);

        let v1 = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web"},
            "deprecatedSource": {"component": "scheduler"},
            "reportingController": "default-scheduler", "type": "Warning"
        });
        assert_eq!(
            events_v1_event(&v1, "regarding.kind").as_deref(),
            Some("Pod")
        );
        assert_eq!(events_v1_event(&v1, "source").as_deref(), Some("scheduler"));
        assert_eq!(
            events_v1_event(&v1, "reportingController").as_deref(),
            Some("default-scheduler")
        );
        assert_eq!(events_v1_event(&v1, "involvedObject.name"), None);
    }

    #[test]
    fn service_and_namespace_fields() {
        let svc = json!({"spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP"}});
        assert_eq!(
            service(&svc, "spec.clusterIP").as_deref(),
            Some("10.96.0.1")
        );
        assert_eq!(service(&svc, "spec.ports"), None);
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}});
        assert_eq!(namespace(&ns, "status.phase").as_deref(), Some("Active"));
        assert_eq!(
            namespace(&ns, "metadata.name").as_deref(),
            Some("kube-system")
        );
    }
}
