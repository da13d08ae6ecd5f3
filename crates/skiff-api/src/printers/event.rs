//! Event rows, for both `v1` and `events.k8s.io/v1` Events.
//!
//! Upstream stores both as one internal type and prints them with one printer, so
//! the two JSON shapes are read through field names of their own and printed alike.

use jiff::Timestamp;
use serde_json::Value;

use super::{NAME, column, i64_at, opt_str_at, since, str_at, wide};
use crate::registry::Column;

/// Columns of `kubectl get events`. Unlike every other type, Name comes last and
/// only in the wide form.
pub(crate) const EVENT_COLUMNS: &[Column] = &[
    column("Last Seen", "string", "Time since the latest occurrence."),
    column("Type", "string", "Normal or Warning."),
    column("Reason", "string", "Short machine-readable cause."),
    column(
        "Object",
        "string",
        "Kind and name of the object the event is about.",
    ),
    wide(
        "Subobject",
        "string",
        "Part of the object, such as a container.",
    ),
    wide(
        "Source",
        "string",
        "Component and host that reported the event.",
    ),
    column("Message", "string", "Human-readable description."),
    wide("First Seen", "string", "Time since the first occurrence."),
    wide("Count", "string", "How often the event occurred."),
    Column {
        priority: 1,
        ..NAME
    },
];

/// JSON field names of one Event shape.
struct Shape {
    involved: &'static str,
    message: &'static str,
    source: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
}

/// `v1` Event field names.
const CORE: Shape = Shape {
    involved: "/involvedObject",
    message: "/message",
    source: "/source",
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
};

/// `events.k8s.io/v1` Event field names.
const EVENTS_V1: Shape = Shape {
    involved: "/regarding",
    message: "/note",
    source: "/deprecatedSource",
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
};

/// One `v1` Event row.
pub(crate) fn core_event_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    event_row(obj, &CORE, now)
}

/// One `events.k8s.io/v1` Event row.
pub(crate) fn events_v1_event_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    event_row(obj, &EVENTS_V1, now)
}

fn event_row(obj: &Value, shape: &Shape, now: Timestamp) -> Vec<Value> {
    let first_seen = match opt_str_at(obj, shape.first) {
        Some(t) => since(t, now),
        None => since(str_at(obj, "/eventTime"), now),
    };
    let mut last_seen = match opt_str_at(obj, shape.last) {
        Some(t) => since(t, now),
        None => first_seen.clone(),
    };
    let mut count = i64_at(obj, shape.count);
    if let Some(series) = obj.get("series").filter(|s| s.is_object()) {
        last_seen = since(str_at(series, "/lastObservedTime"), now);
        count = i64_at(series, "/count");
    } else if count == 0 {
        // Events of the new API happen once unless they have a series.
        count = 1;
    }

    let involved = obj.pointer(shape.involved).unwrap_or(&Value::Null);
    let kind = str_at(involved, "/kind").to_lowercase();
    let object = match opt_str_at(involved, "/name") {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };

    let component = opt_str_at(obj, &format!("{}/component", shape.source))
        .unwrap_or_else(|| str_at(obj, "/reportingController"));
    let host = opt_str_at(obj, &format!("{}/host", shape.source))
        .unwrap_or_else(|| str_at(obj, "/reportingInstance"));
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };

    vec![
        Value::from(last_seen),
        Value::from(str_at(obj, "/type")),
        Value::from(str_at(obj, "/reason")),
        Value::from(object),
        Value::from(str_at(involved, "/fieldPath")),
        Value::from(source),
        Value::from(str_at(obj, shape.message).trim()),
        Value::from(first_seen),
        Value::from(count),
        Value::from(str_at(obj, "/metadata/name")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::fixtures::now;
    use serde_json::json;

    #[test]
    fn core_event_with_legacy_timestamps() {
        let ev = json!({
            "metadata": {"name": "web-1.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Container image \"nginx\" already present\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2024-05-01T11:50:00Z", "lastTimestamp": "2024-05-01T11:59:00Z", "count": 4
        });
        assert_eq!(
            core_event_row(&ev, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Container image \"nginx\" already present"),
                json!("10m"),
                json!(4),
                json!("web-1.17c")
            ]
        );
    }

    #[test]
    fn new_style_events_use_event_time_and_series() {
        let ev = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "reason": "Starting", "type": "Normal",
            "eventTime": "2024-05-01T11:56:59.500000Z",
            "reportingController": "skiff-agent", "reportingInstance": "node-a"
        });
        let row = core_event_row(&ev, now());
        assert_eq!(row[0], json!("3m"));
        assert_eq!(row[3], json!("node"));
        assert_eq!(row[5], json!("skiff-agent, node-a"));
        assert_eq!(row[8], json!(1));

        let v1 = json!({
            "metadata": {"name": "e2"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "reason": "ScalingReplicaSet", "type": "Normal", "note": "Scaled up",
            "eventTime": "2024-05-01T11:00:00.000000Z", "reportingController": "deployment-controller",
            "series": {"count": 7, "lastObservedTime": "2024-05-01T11:59:30.000000Z"}
        });
        let row = events_v1_event_row(&v1, now());
        assert_eq!(row[0], json!("30s"));
        assert_eq!(row[3], json!("deployment/web"));
        assert_eq!(row[5], json!("deployment-controller"));
        assert_eq!(row[6], json!("Scaled up"));
        assert_eq!(row[7], json!("60m"));
        assert_eq!(row[8], json!(7));
    }
}
