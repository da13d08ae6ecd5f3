//! Small accessors for `metadata` of objects held as JSON.

use serde_json::{Map, Value};
use skiff_store::Revision;

/// `metadata`, if present and an object.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// `metadata`, created if missing (replacing a non-object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(obj);
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    ensure_object(meta)
}

fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// A string field of `metadata`, or "".
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.name`
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.uid`
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

/// `metadata.resourceVersion`, or "".
pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    meta_mut(obj).insert(
        "resourceVersion".to_string(),
        Value::String(revision.to_string()),
    );
}

/// A copy of `obj` without `metadata.resourceVersion`: the starting point of
/// a mutation that must not pin the revision it read.
pub fn without_resource_version(obj: &Value) -> Value {
    let mut obj = obj.clone();
    meta_mut(&mut obj).remove("resourceVersion");
    obj
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.finalizers`, removing the field when empty.
pub fn set_finalizers(obj: &mut Value, finalizers: &[String]) {
    let meta = meta_mut(obj);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert(
            "finalizers".to_string(),
            Value::Array(finalizers.iter().cloned().map(Value::String).collect()),
        );
    }
}

/// True if `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|v| !v.is_null()))
}

/// `metadata.labels` as a map (empty if absent).
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A timestamp in Kubernetes' `Time` format (RFC 3339, seconds precision, UTC).
pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A JSON path lookup: `spec.nodeName` → the value there.
pub fn lookup<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_accessors() {
        let mut obj = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        assert_eq!(name(&obj), "a");
        assert_eq!(namespace(&obj), "");
        set_resource_version(&mut obj, 42);
        assert_eq!(resource_version(&obj), "42");
        assert_eq!(finalizers(&obj), vec!["x".to_string()]);
        set_finalizers(&mut obj, &[]);
        assert!(obj["metadata"].get("finalizers").is_none());
        let mut bare = json!("not an object");
        meta_mut(&mut bare).insert("name".into(), json!("b"));
        assert_eq!(name(&bare), "b");
    }

    #[test]
    fn time_format_is_seconds_utc() {
        let ts: jiff::Timestamp = "2024-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(format_time(ts), "2024-01-02T03:04:05Z");
    }
}
