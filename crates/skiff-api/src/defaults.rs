//! Upstream's defaulting (`SetDefaults_*` and declarative defaults), applied to
//! objects in their JSON form before validation, so that stored objects read back
//! exactly as a real cluster would return them (`kubectl get -o yaml`, `diff`,
//! server-side apply all see the same fields).
//!
//! Defaulting never fails and never removes what the client set; values of the
//! wrong JSON type are left alone for validation to report.
//!
//! [`admission_defaults`] adds what upstream's admission plugins add on create
//! (default tolerations, priority); [`generate_job_selector`] is the Job strategy's
//! selector generation, which needs the object's uid.

mod pod;
mod workloads;

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Seconds a pod tolerates a not-ready or unreachable node before eviction.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Applies upstream's defaults for `(group, kind)` in place. Unknown kinds are
/// left untouched.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => pod::default_pod(obj),
        ("", "PodTemplate") => {
            if let Some(template) = obj.get_mut("template") {
                pod::default_pod_template(template);
            }
        }
        ("", "Service") => service(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Secret") => {
            if let Some(o) = obj.as_object_mut() {
                set_if_empty(o, "type", "Opaque");
                merge_string_data(o);
            }
        }
        ("", "Node") => node(obj),
        ("", "Endpoints") => {
            if let Some(o) = obj.as_object_mut() {
                each_mut(o, "subsets", |s| {
                    each_mut(s, "ports", |p| set_if_empty(p, "protocol", "TCP"));
                });
            }
        }
        ("", "PersistentVolume") => persistent_volume(obj),
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_if_absent(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_if_empty(status, "phase", "Pending");
            }
        }
        ("", "LimitRange") => limit_range(obj),
        ("apps", "Deployment") => workloads::deployment(obj),
        ("apps", "ReplicaSet") => workloads::replica_set(obj),
        ("apps", "StatefulSet") => workloads::stateful_set(obj),
        ("apps", "DaemonSet") => workloads::daemon_set(obj),
        ("batch", "Job") => workloads::job(obj),
        ("batch", "CronJob") => workloads::cron_job(obj),
        ("discovery.k8s.io", "EndpointSlice") => {
            if let Some(o) = obj.as_object_mut() {
                each_mut(o, "ports", |p| {
                    set_if_absent(p, "protocol", json!("TCP"));
                    set_if_absent(p, "name", json!(""));
                });
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("networking.k8s.io", "IngressClass") => {
            if let Some(spec) = obj_mut(obj, "spec")
                && let Some(params) = spec.get_mut("parameters").and_then(Value::as_object_mut)
            {
                set_if_absent(params, "scope", json!("Cluster"));
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            if let Some(o) = obj.as_object_mut() {
                set_if_absent(o, "reclaimPolicy", json!("Delete"));
                set_if_absent(o, "volumeBindingMode", json!("Immediate"));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(o) = obj.as_object_mut() {
                set_if_absent(o, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        _ => {}
    }
}

/// What upstream's default admission plugins add to a new object:
/// for Pods, `DefaultTolerationSeconds` (tolerate not-ready/unreachable nodes for
/// 300 s), `Priority` for pods without a class or with a built-in system class, and
/// `ServiceAccount`'s default `serviceAccountName`. Pods naming another
/// PriorityClass are left for the API server, which must look the class up.
pub fn admission_defaults(group: &str, kind: &str, obj: &mut Value) {
    if (group, kind) != ("", "Pod") {
        return;
    }
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    add_default_tolerations(spec);
    let class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let priority = match class {
        "" => Some(0),
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    };
    if let Some(priority) = priority {
        set_if_absent(spec, "priority", json!(priority));
        set_if_absent(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
    set_if_empty(spec, "serviceAccountName", "default");
    let account = spec
        .get("serviceAccountName")
        .cloned()
        .unwrap_or(Value::Null);
    set_if_empty(
        spec,
        "serviceAccount",
        account.as_str().unwrap_or("default"),
    );
}

fn add_default_tolerations(spec: &mut Map<String, Value>) {
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerations = spec
            .entry("tolerations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if tolerations.is_null() {
            *tolerations = Value::Array(Vec::new());
        }
        let Some(list) = tolerations.as_array_mut() else {
            return;
        };
        let covered = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        });
        if !covered {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

/// The Job strategy's selector generation: unless `spec.manualSelector` is true,
/// labels the template with the job's uid and name and selects on the uid. Call it
/// on create, after the uid is assigned and before [`crate::validation::validate`].
pub fn generate_job_selector(obj: &mut Value) {
    let meta = obj.get("metadata");
    let uid = meta
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let manual = obj
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manual || uid.is_empty() {
        return;
    }
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    if let Some(template) = spec.get_mut("template")
        && let Some(meta) = obj_mut(template, "metadata")
        && let Some(labels) = obj_mut_in(meta, "labels")
    {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels
                .entry(key)
                .or_insert_with(|| Value::String(value.clone()));
        }
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
}

fn service(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_if_empty(spec, "sessionAffinity", "None");
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    set_if_empty(spec, "type", "ClusterIP");
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    each_mut(spec, "ports", |p| {
        set_if_empty(p, "protocol", "TCP");
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if target_unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    });
    let external = matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        || spec
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if external {
        set_if_empty(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set_if_absent(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_if_absent(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        // A single-stack IPv4 cluster unless the client asked for IPv6 addresses.
        set_if_absent(spec, "ipFamilyPolicy", json!("SingleStack"));
        let ipv6 = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_some_and(|ip| ip.contains(':'));
        let family = if ipv6 { "IPv6" } else { "IPv4" };
        let empty = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty {
            spec.insert("ipFamilies".into(), json!([family]));
        }
    }
}

fn namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty()
        && let Some(meta) = obj_mut(obj, "metadata")
        && let Some(labels) = obj_mut_in(meta, "labels")
    {
        labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
    }
    if let Some(spec) = obj_mut(obj, "spec") {
        set_if_absent(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = obj_mut(obj, "status") {
        set_if_empty(status, "phase", "Active");
    }
}

fn node(obj: &mut Value) {
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    if status.get("allocatable").is_none_or(Value::is_null)
        && let Some(capacity) = status.get("capacity").filter(|c| !c.is_null()).cloned()
    {
        status.insert("allocatable".into(), capacity);
    }
}

fn persistent_volume(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        set_if_empty(spec, "persistentVolumeReclaimPolicy", "Retain");
        set_if_absent(spec, "volumeMode", json!("Filesystem"));
        if let Some(host_path) = spec.get_mut("hostPath").and_then(Value::as_object_mut) {
            set_if_absent(host_path, "type", json!(""));
        }
    }
    if let Some(status) = obj_mut(obj, "status") {
        set_if_empty(status, "phase", "Pending");
    }
}

fn limit_range(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    each_mut(spec, "limits", |item| {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            return;
        }
        let get = |item: &Map<String, Value>, key: &str| {
            item.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let max = get(item, "max");
        let min = get(item, "min");
        let mut default = get(item, "default");
        let mut default_request = get(item, "defaultRequest");
        for (k, v) in &max {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in default.iter().chain(&min) {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        if !default.is_empty() {
            item.insert("default".into(), Value::Object(default));
        }
        if !default_request.is_empty() {
            item.insert("defaultRequest".into(), Value::Object(default_request));
        }
    });
}

fn network_policy(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    for dir in ["ingress", "egress"] {
        each_mut(spec, dir, |rule| {
            each_mut(rule, "ports", |p| set_if_empty(p, "protocol", "TCP"));
        });
    }
    let has_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !has_types {
        let egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

/// The object member `key` of `v`, created if absent or null; `None` if `v` is not
/// an object or the member has another type.
pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    obj_mut_in(v.as_object_mut()?, key)
}

/// Like [`obj_mut`], on a map.
pub(crate) fn obj_mut_in<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Sets `key` when absent or null (Go: a nil pointer).
pub(crate) fn set_if_absent(map: &mut Map<String, Value>, key: &str, value: Value) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = value;
    }
}

/// Sets a string `key` when absent, null or empty (Go: the zero string).
pub(crate) fn set_if_empty(map: &mut Map<String, Value>, key: &str, value: &str) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() || slot.as_str() == Some("") {
        *slot = Value::String(value.to_string());
    }
}

/// Runs `f` on every object in the array member `key`.
pub(crate) fn each_mut(
    map: &mut Map<String, Value>,
    key: &str,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    if let Some(list) = map.get_mut(key).and_then(Value::as_array_mut) {
        for item in list.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

/// Folds a Secret's write-only `stringData` into `data` (base64), with
/// `stringData` winning, as upstream's conversion does: `stringData` is never
/// stored or returned. Left alone when it holds a non-string, so validation
/// reports the bad value.
fn merge_string_data(secret: &mut Map<String, Value>) {
    let Some(Value::Object(strings)) = secret.get("stringData") else {
        return;
    };
    if !strings.values().all(Value::is_string) {
        return;
    }
    let encoded: Vec<(String, Value)> = strings
        .iter()
        .map(|(k, v)| {
            let text = v.as_str().unwrap_or_default();
            let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            (k.clone(), Value::String(b64))
        })
        .collect();
    secret.remove("stringData");
    let data = secret
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        data.extend(encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut secret = json!({
            "data": {"a": "b2xk", "keep": "eA=="},
            "stringData": {"a": "new", "plain": "s3cret"},
        });
        apply_defaults("", "Secret", &mut secret);
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none());
        assert_eq!(
            secret["data"],
            json!({"a": "bmV3", "keep": "eA==", "plain": "czNjcmV0"})
        );
        let mut bad = json!({"stringData": {"n": 1}});
        apply_defaults("", "Secret", &mut bad);
        assert_eq!(bad["stringData"]["n"], 1, "left for validation to report");
    }

    #[test]
    fn service_defaults() {
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}});
        apply_defaults("", "Service", &mut svc);
        let s = &svc["spec"];
        assert_eq!(s["type"], "ClusterIP");
        assert_eq!(s["sessionAffinity"], "None");
        assert_eq!(
            s["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["ports"][1]["targetPort"], "https");
        assert_eq!(s["internalTrafficPolicy"], "Cluster");
        assert_eq!(s["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        assert!(s.get("externalTrafficPolicy").is_none());

        let mut lb = json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}});
        apply_defaults("", "Service", &mut lb);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            lb["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );

        let mut ext = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        apply_defaults("", "Service", &mut ext);
        assert!(ext["spec"].get("ipFamilyPolicy").is_none());
        assert!(ext["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn small_kind_defaults() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        apply_defaults("", "Namespace", &mut ns);
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");

        let mut secret = json!({"data": {}});
        apply_defaults("", "Secret", &mut secret);
        assert_eq!(secret["type"], "Opaque");

        let mut pv = json!({"spec": {"hostPath": {"path": "/d"}}});
        apply_defaults("", "PersistentVolume", &mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["spec"]["hostPath"]["type"], "");
        assert_eq!(pv["status"]["phase"], "Pending");

        let mut pvc = json!({"spec": {}});
        apply_defaults("", "PersistentVolumeClaim", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");

        let mut sc = json!({"provisioner": "x.io/y"});
        apply_defaults("storage.k8s.io", "StorageClass", &mut sc);
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");

        let mut pc = json!({"value": 1});
        apply_defaults("scheduling.k8s.io", "PriorityClass", &mut pc);
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");

        let mut node = json!({"status": {"capacity": {"cpu": "4"}}});
        apply_defaults("", "Node", &mut node);
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));

        let mut slice = json!({"ports": [{"port": 80}]});
        apply_defaults("discovery.k8s.io", "EndpointSlice", &mut slice);
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "protocol": "TCP", "name": ""})
        );

        let mut unknown = json!({"spec": {}});
        apply_defaults("example.com", "Widget", &mut unknown);
        assert_eq!(unknown, json!({"spec": {}}));
    }

    #[test]
    fn network_policy_and_limit_range() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        apply_defaults("networking.k8s.io", "NetworkPolicy", &mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");

        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}});
        apply_defaults("", "LimitRange", &mut lr);
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
    }

    #[test]
    fn admission() {
        let mut pod = json!({"spec": {"containers": [], "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}});
        admission_defaults("", "Pod", &mut pod);
        let t = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
        assert_eq!(pod["spec"]["priority"], 0);
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");

        let mut critical = json!({"spec": {"priorityClassName": "system-node-critical"}});
        admission_defaults("", "Pod", &mut critical);
        assert_eq!(critical["spec"]["priority"], 2_000_001_000);
        let mut custom = json!({"spec": {"priorityClassName": "high"}});
        admission_defaults("", "Pod", &mut custom);
        assert!(custom["spec"].get("priority").is_none());
    }

    #[test]
    fn job_selector_generation() {
        let mut job =
            json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {}}}});
        generate_job_selector(&mut job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        let mut manual =
            json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"manualSelector": true}});
        generate_job_selector(&mut manual);
        assert!(manual["spec"].get("selector").is_none());
    }
}
