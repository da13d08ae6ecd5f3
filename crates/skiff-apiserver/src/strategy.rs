//! Per-kind behaviour on create and update that is not defaulting or validation:
//! what a fresh object's status looks like, what a status write may touch, and
//! how the `scale` subresource maps onto the object.

use serde_json::{Map, Value, json};
use skiff_api::quantity::Quantity;
use skiff_api::registry::ResourceType;

use crate::error::{ApiError, ApiResult};
use crate::object;

/// Resets fields a client may not set on create, as upstream's PrepareForCreate.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    let root = match obj.as_object_mut() {
        Some(root) => root,
        None => return,
    };
    match (rt.group, rt.kind) {
        // Nodes and namespaces report status from the start; upstream keeps it.
        ("", "Node") => {}
        ("", "Namespace") => {
            root.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "Pod") => {
            let qos = qos_class(&Value::Object(root.clone()));
            root.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => {
            root.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("", "Service") => {
            root.insert("status".into(), json!({"loadBalancer": {}}));
        }
        _ if rt.has_status => {
            root.insert("status".into(), Value::Object(Map::new()));
        }
        _ => {}
    }
    if rt.has_status && root.contains_key("spec") && rt.kind != "Namespace" && rt.kind != "Node" {
        object::meta_mut(obj).insert("generation".into(), json!(1));
    }
    if (rt.group, rt.kind) == ("apps", "DaemonSet") {
        set_template_generation(obj, None);
    }
}

/// Carries over from `old` what a write through `subresource` may not change.
/// A main-resource write keeps the old status; a status write keeps everything
/// but status (metadata included, as upstream's ResetObjectMetaForStatus).
pub fn prepare_update(rt: &ResourceType, subresource: Option<&str>, new: &mut Value, old: &Value) {
    let keep_meta = [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ];
    let old_meta = |key: &str| object::meta(old).and_then(|meta| meta.get(key));
    if is_pod(rt) && subresource == Some("resize") {
        let mut result = old.clone();
        result["spec"] = resized_spec(new, old);
        keep_write_meta(new, &mut result);
        let mut defaulted = result.clone();
        skiff_api::defaults::apply_defaults("", "Pod", &mut defaulted);
        if defaulted["spec"] != old["spec"] {
            let generation = old_meta("generation").and_then(Value::as_i64).unwrap_or(0);
            object::meta_mut(&mut result).insert("generation".into(), json!(generation + 1));
        }
        *new = result;
        return;
    }
    if let Some(paths) = subresource.and_then(subresource_fields) {
        let mut result = old.clone();
        for path in paths {
            copy_path(new, &mut result, path);
        }
        keep_write_meta(new, &mut result);
        *new = result;
        return;
    }
    let meta = object::meta_mut(new);
    for key in keep_meta {
        match old_meta(key) {
            Some(v) => meta.insert(key.into(), v.clone()),
            None => meta.remove(key),
        };
    }
    // Namespace finalizers change only through the finalize subresource.
    if rt.group.is_empty() && rt.kind == "Namespace" && subresource.is_none() {
        match old["spec"].get("finalizers") {
            Some(finalizers) => new["spec"]["finalizers"] = finalizers.clone(),
            None => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    }
    if rt.has_status && rt.kind != "Node" {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(root) = new.as_object_mut() {
                    root.remove("status");
                }
            }
        }
    }
    if (rt.group, rt.kind) == ("apps", "DaemonSet") {
        set_template_generation(new, Some(old));
    }
    if rt.has_status && spec_changed(new, old) {
        let generation = old_meta("generation").and_then(Value::as_i64).unwrap_or(0);
        object::meta_mut(new).insert("generation".into(), json!(generation + 1));
    }
}

/// Moves what a subresource write carries in its metadata (the request's
/// `resourceVersion` precondition and the managed fields recorded for it)
/// from `new` into `result`, the stored object it is built on.
fn keep_write_meta(new: &Value, result: &mut Value) {
    let managed = object::meta(new)
        .and_then(|m| m.get("managedFields"))
        .cloned();
    let rv = object::meta(new)
        .and_then(|m| m.get("resourceVersion"))
        .cloned();
    let meta = object::meta_mut(result);
    match managed {
        Some(m) => meta.insert("managedFields".into(), m),
        None => meta.remove("managedFields"),
    };
    match rv {
        Some(rv) => meta.insert("resourceVersion".into(), rv),
        None => meta.remove("resourceVersion"),
    };
}

fn is_pod(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.kind == "Pod"
}

/// Whether the generic update and patch handlers serve `subresource` of `rt`:
/// those that write a part of the object (`status`, `finalize`, and a pod's
/// `resize`).
pub fn writes_through(rt: &ResourceType, subresource: &str) -> bool {
    subresource_fields(subresource).is_some() || (is_pod(rt) && subresource == "resize")
}

/// The spec a `pods/resize` write leaves: the stored one, with each
/// container's `resources` and `resizePolicy` from the request (upstream's
/// `dropNonResizeUpdates`). Added, removed, reordered or renamed containers
/// keep the request's spec whole, for validation to refuse.
fn resized_spec(new: &Value, old: &Value) -> Value {
    let mut spec = old["spec"].clone();
    for key in ["containers", "initContainers"] {
        let requested = new["spec"][key].as_array().cloned().unwrap_or_default();
        let stored = old["spec"][key].as_array().cloned().unwrap_or_default();
        let renamed = requested.len() != stored.len()
            || requested
                .iter()
                .zip(&stored)
                .any(|(n, o)| n["name"] != o["name"]);
        if renamed {
            return new["spec"].clone();
        }
        if stored.is_empty() {
            continue;
        }
        let merged: Vec<Value> = stored
            .into_iter()
            .zip(&requested)
            .map(|(mut container, request)| {
                for field in ["resources", "resizePolicy"] {
                    if field == "resources" && same_amounts(&request[field], &container[field]) {
                        continue;
                    }
                    match (request.get(field), container.as_object_mut()) {
                        (Some(value), Some(map)) => {
                            map.insert(field.to_string(), value.clone());
                        }
                        (None, Some(map)) => {
                            map.remove(field);
                        }
                        (_, None) => {}
                    }
                }
                container
            })
            .collect();
        spec[key] = Value::Array(merged);
    }
    spec
}

/// Whether two `ResourceRequirements` ask for the same amounts (`300m` and
/// `0.3` are the same), so that restating them changes nothing.
fn same_amounts(a: &Value, b: &Value) -> bool {
    let amounts = |v: &Value, key: &str| -> Option<Vec<(String, Quantity)>> {
        let mut out = Vec::new();
        for (name, q) in v[key].as_object().into_iter().flatten() {
            out.push((name.clone(), q.as_str()?.parse::<Quantity>().ok()?));
        }
        out.sort();
        Some(out)
    };
    let others = |v: &Value| {
        let mut rest = v.as_object().cloned().unwrap_or_default();
        rest.remove("limits");
        rest.remove("requests");
        rest
    };
    ["limits", "requests"].iter().all(|key| {
        let (x, y) = (amounts(a, key), amounts(b, key));
        x.is_some() && x == y
    }) && others(a) == others(b)
}

/// Where `apps/v1` keeps a DaemonSet's template generation (upstream's
/// internal `spec.templateGeneration`), which its controller stamps on pods.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// A DaemonSet's template generation, as upstream's strategy keeps it: at
/// least 1 on create; on update the stored one, plus one when
/// `spec.template` changed. Clients cannot set it otherwise.
fn set_template_generation(new: &mut Value, old: Option<&Value>) {
    let read = |obj: &Value| {
        obj["metadata"]["annotations"][TEMPLATE_GENERATION_ANNOTATION]
            .as_str()
            .and_then(|g| g.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let generation = match old {
        None => read(new).max(1),
        Some(old) => {
            // Compare with the template as it will be stored (defaulted).
            let mut defaulted = new.clone();
            skiff_api::defaults::apply_defaults("apps", "DaemonSet", &mut defaulted);
            if defaulted["spec"]["template"] == old["spec"]["template"] {
                read(old)
            } else {
                read(old) + 1
            }
        }
    };
    let meta = object::meta_mut(new);
    if generation <= 0 {
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(TEMPLATE_GENERATION_ANNOTATION);
        }
        return;
    }
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations[TEMPLATE_GENERATION_ANNOTATION] = json!(generation.to_string());
}

/// The fields a write through `subresource` may change; everything else
/// keeps its stored value (upstream's status and finalize strategies).
pub fn subresource_fields(subresource: &str) -> Option<&'static [&'static [&'static str]]> {
    match subresource {
        "status" => Some(&[&["status"]]),
        "finalize" => Some(&[&["spec", "finalizers"]]),
        _ => None,
    }
}

/// Copies the value at `path` from `from` into `to`, removing it from `to`
/// when `from` lacks it.
fn copy_path(from: &Value, to: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let source = parents
        .iter()
        .try_fold(from, |v, p| v.get(*p))
        .and_then(|v| v.get(*last));
    let mut target = to;
    for part in parents {
        if !target.get(*part).is_some_and(Value::is_object) {
            if source.is_none() {
                return;
            }
            target[*part] = Value::Object(Map::new());
        }
        target = &mut target[*part];
    }
    match (source, target.as_object_mut()) {
        (Some(value), Some(map)) => {
            map.insert((*last).to_string(), value.clone());
        }
        (None, Some(map)) => {
            map.remove(*last);
        }
        (_, None) => {}
    }
}

/// True once a deleting object has nothing left to wait for: no finalizers,
/// no grace period (pods), and for namespaces no spec finalizers either.
pub fn ready_to_remove(rt: &ResourceType, obj: &Value) -> bool {
    if !object::is_deleting(obj) || !object::finalizers(obj).is_empty() {
        return false;
    }
    let meta_grace = object::meta(obj)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if meta_grace > 0 {
        return false;
    }
    !(rt.group.is_empty()
        && rt.kind == "Namespace"
        && obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty()))
}

/// True if anything outside metadata and status differs.
fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(new) != strip(old)
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod["spec"][f].as_array())
        .flatten();
    let mut any = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = &container["resources"];
        let requests = resources["requests"].as_object();
        let limits = resources["limits"].as_object();
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Where a type keeps its replica count and label selector, for `scale`.
fn scale_paths(rt: &ResourceType) -> Option<(&'static str, &'static str)> {
    match (rt.group, rt.kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => Some(("replicas", "selector")),
        ("", "ReplicationController") => Some(("replicas", "selector")),
        _ => None,
    }
}

/// The `autoscaling/v1` Scale view of an object.
pub fn scale_of(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    if scale_paths(rt).is_none() {
        return Err(ApiError::no_route("scale"));
    }
    let meta = object::meta(obj).cloned().unwrap_or_default();
    let mut scale_meta = Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(key) {
            scale_meta.insert(key.into(), v.clone());
        }
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"]),
        },
    }))
}

/// Writes a Scale's `spec.replicas` into the object; keeps its
/// `resourceVersion` as the precondition.
pub fn apply_scale(obj: &mut Value, scale: &Value) -> ApiResult<()> {
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::bad_request("Scale.spec.replicas must be an integer"))?;
    obj["spec"]["replicas"] = json!(replicas);
    let rv = object::resource_version(scale).to_string();
    let meta = object::meta_mut(obj);
    if rv.is_empty() {
        meta.remove("resourceVersion");
    } else {
        meta.insert("resourceVersion".into(), json!(rv));
    }
    Ok(())
}

/// A label selector in its string form (`a=b,c in (d)`): either a
/// `metav1.LabelSelector` or, for ReplicationControllers, a plain map.
pub fn selector_string(selector: &Value) -> String {
    let Some(map) = selector.as_object() else {
        return String::new();
    };
    let structured = map.contains_key("matchLabels") || map.contains_key("matchExpressions");
    let labels = if structured {
        selector["matchLabels"].as_object()
    } else {
        Some(map)
    };
    let mut parts: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for expr in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expr["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expr["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match expr["operator"].as_str().unwrap_or_default() {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subresource_writes_touch_only_their_fields() {
        let rt = skiff_api::registry::by_plural("", "v1", "namespaces").unwrap();
        let old = json!({"metadata": {"name": "n", "labels": {"a": "1"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}});
        let mut new = json!({"metadata": {"name": "n", "labels": {"a": "2"}},
            "spec": {"finalizers": []}, "status": {"phase": "Active"}});
        prepare_update(rt, Some("finalize"), &mut new, &old);
        assert_eq!(new["spec"]["finalizers"], json!([]));
        assert_eq!(new["status"]["phase"], "Terminating");
        assert_eq!(new["metadata"]["labels"]["a"], "1");
        let mut new = json!({"metadata": {"name": "n"}, "spec": {}, "status": {"phase": "Active"}});
        prepare_update(rt, Some("status"), &mut new, &old);
        assert_eq!(new["status"]["phase"], "Active");
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
    }

    #[test]
    fn daemon_set_template_generation_follows_template_changes() {
        let rt = skiff_api::registry::by_plural("apps", "v1", "daemonsets").unwrap();
        let template = |image: &str| {
            json!({"metadata": {"labels": {"app": "d"}},
                   "spec": {"containers": [{"name": "c", "image": image}]}})
        };
        let mut created = json!({"metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template("a:1")}});
        prepare_create(rt, &mut created);
        let generation =
            |obj: &Value| obj["metadata"]["annotations"][TEMPLATE_GENERATION_ANNOTATION].clone();
        assert_eq!(generation(&created), "1");
        skiff_api::defaults::apply_defaults("apps", "DaemonSet", &mut created);

        // Same template (as the client sends it, undefaulted), a forged
        // annotation: the stored generation stays.
        let mut same = json!({"metadata": {"name": "d", "labels": {"x": "y"},
            "annotations": {TEMPLATE_GENERATION_ANNOTATION: "9"}},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template("a:1")}});
        prepare_update(rt, None, &mut same, &created);
        assert_eq!(generation(&same), "1");

        let mut changed = json!({"metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template("a:2")}});
        prepare_update(rt, None, &mut changed, &created);
        assert_eq!(generation(&changed), "2");
    }

    #[test]
    fn qos_classes() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burstable = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&burstable), "Burstable");
    }

    #[test]
    fn selectors_render_like_kubectl() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "x", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!x");
    }
}
