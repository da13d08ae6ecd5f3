//! Types served as a view over another type's storage, as upstream serves
//! `events.k8s.io/v1` Events from the same objects as core `v1` Events: an
//! event written through either API is read through both.
//!
//! The view's objects are converted on the way in (before the store write) and
//! out (after the read); admission (codec, defaults, validation) runs on the
//! view's own form, so each API keeps its own rules.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use skiff_api::registry::{self, ResourceType};

use crate::cache::Cached;

/// `events.k8s.io/v1` field names and the core `v1` fields they are stored as.
/// Fields not listed (reason, type, action, related, reportingInstance,
/// eventTime, series, metadata) have the same name in both.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// True if `rt` is stored as another type.
pub fn is_view(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.kind == "Event"
}

/// The type whose storage holds `rt`'s objects (`rt` itself for most types).
pub fn storage(rt: &'static ResourceType) -> &'static ResourceType {
    if is_view(rt) {
        registry::by_kind("", "Event").expect("core events are served")
    } else {
        rt
    }
}

/// Converts a view object into its stored form.
pub fn to_storage(rt: &'static ResourceType, obj: Value) -> Value {
    if !is_view(rt) {
        return obj;
    }
    rename(
        obj,
        storage(rt),
        EVENT_FIELDS.iter().map(|(view, stored)| (*view, *stored)),
    )
}

/// Converts a stored object into the form `rt` serves.
pub fn from_storage_value(rt: &'static ResourceType, obj: Value) -> Value {
    if !is_view(rt) {
        return obj;
    }
    rename(
        obj,
        rt,
        EVENT_FIELDS.iter().map(|(view, stored)| (*stored, *view)),
    )
}

/// [`from_storage_value`] for a cached object; the same `Arc` when `rt` is
/// not a view.
pub fn present(rt: &'static ResourceType, cached: Arc<Cached>) -> Arc<Cached> {
    if !is_view(rt) {
        return cached;
    }
    let object = from_storage_value(rt, cached.object.clone());
    Arc::new(Cached::new(cached.key.clone(), object, cached.revision))
}

fn rename<'a>(
    obj: Value,
    target: &ResourceType,
    renames: impl Iterator<Item = (&'a str, &'a str)>,
) -> Value {
    let Value::Object(mut fields) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(target.api_version()));
    out.insert("kind".into(), json!(target.kind));
    fields.remove("apiVersion");
    fields.remove("kind");
    for (from, to) in renames {
        if let Some(value) = fields.remove(from) {
            out.insert(to.to_string(), value);
        }
    }
    out.extend(fields);
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_convert_both_ways() {
        let view = registry::by_kind("events.k8s.io", "Event").unwrap();
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled",
            "reason": "Pulled", "type": "Normal", "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "skiff", "reportingInstance": "node-a",
            "deprecatedCount": 2,
        });
        let stored = to_storage(view, event.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "pulled");
        assert_eq!(stored["reportingComponent"], "skiff");
        assert_eq!(stored["count"], 2);
        assert!(stored.get("regarding").is_none());
        assert_eq!(from_storage_value(view, stored), event);
    }

    #[test]
    fn other_types_are_untouched() {
        let pods = registry::by_plural("", "v1", "pods").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "message": "x"});
        assert!(!is_view(pods));
        assert_eq!(to_storage(pods, pod.clone()), pod);
        assert!(std::ptr::eq(storage(pods), pods));
    }
}
