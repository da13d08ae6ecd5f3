//! Table printers: the columns and cells `kubectl get` shows for each served type.
//!
//! kubectl asks the server for a `meta.k8s.io/v1` Table and prints it as is, so the
//! columns, their order, their priorities and the text of every cell are the server's
//! job. Upstream's printers are the spec (`pkg/printers/internalversion`): same
//! headers, same `<none>`/`<unknown>` placeholders, same status logic for pods.
//!
//! Upstream's API server always generates the wide form and lets kubectl hide the
//! columns with priority 1, so every row here has exactly one cell per column.
//! Printers read the stored JSON (`serde_json::Value`) rather than typed structs:
//! a Table request may list thousands of objects and they are already JSON.

mod cluster;
mod config;
mod event;
mod network;
mod pod;
mod workload;

pub(crate) use cluster::{
    NAMESPACE_COLUMNS, NODE_COLUMNS, PERSISTENT_VOLUME_COLUMNS, PRIORITY_CLASS_COLUMNS,
    STORAGE_CLASS_COLUMNS, namespace_row, node_row, persistent_volume_row, priority_class_row,
    storage_class_row,
};
pub(crate) use config::{
    CONFIG_MAP_COLUMNS, CONTROLLER_REVISION_COLUMNS, DEFAULT_COLUMNS, LEASE_COLUMNS,
    PERSISTENT_VOLUME_CLAIM_COLUMNS, RESOURCE_QUOTA_COLUMNS, SECRET_COLUMNS,
    SERVICE_ACCOUNT_COLUMNS, config_map_row, controller_revision_row, default_row, lease_row,
    persistent_volume_claim_row, resource_quota_row, secret_row, service_account_row,
};
pub(crate) use event::{EVENT_COLUMNS, core_event_row, events_v1_event_row};
pub(crate) use network::{
    ENDPOINT_SLICE_COLUMNS, ENDPOINTS_COLUMNS, INGRESS_CLASS_COLUMNS, INGRESS_COLUMNS,
    IP_ADDRESS_COLUMNS, NETWORK_POLICY_COLUMNS, SERVICE_CIDR_COLUMNS, SERVICE_COLUMNS,
    endpoint_slice_row, endpoints_row, ingress_class_row, ingress_row, ip_address_row,
    network_policy_row, service_cidr_row, service_row,
};
pub(crate) use pod::{POD_COLUMNS, pod_row};
pub(crate) use workload::{
    CRON_JOB_COLUMNS, DAEMON_SET_COLUMNS, DEPLOYMENT_COLUMNS, JOB_COLUMNS,
    POD_DISRUPTION_BUDGET_COLUMNS, REPLICA_SET_COLUMNS, STATEFUL_SET_COLUMNS, cron_job_row,
    daemon_set_row, deployment_row, job_row, pod_disruption_budget_row, replica_set_row,
    stateful_set_row,
};

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::registry::Column;

/// Formats a duration the way upstream's `HumanDuration` does: at most two units,
/// more precision for short spans (`45s`, `3m20s`, `10m`, `5h30m`, `2d3h`, `400d`, `3y20d`).
/// A span more than a second into the future is `<invalid>`; a smaller skew is `0s`.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// How long ago `timestamp` (RFC 3339) was, or `<unknown>` if it is missing or
/// unparsable, as upstream's `translateTimestampSince`.
pub(crate) fn since(timestamp: &str, now: Timestamp) -> String {
    match timestamp.parse::<Timestamp>() {
        Ok(t) => human_duration(now.duration_since(t)),
        Err(_) => "<unknown>".to_owned(),
    }
}

/// The Age cell: time since `metadata.creationTimestamp`.
pub(crate) fn age(obj: &Value, now: Timestamp) -> Value {
    Value::String(since(str_at(obj, "/metadata/creationTimestamp"), now))
}

/// The Name cell.
pub(crate) fn name(obj: &Value) -> Value {
    Value::String(str_at(obj, "/metadata/name").to_owned())
}

/// The string at JSON pointer `ptr`, or `""` when absent or not a string (the Go
/// zero value upstream's printers see).
pub(crate) fn str_at<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The string at `ptr` if present and not empty.
pub(crate) fn opt_str_at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    Some(str_at(obj, ptr)).filter(|s| !s.is_empty())
}

/// The integer at `ptr`, if present.
pub(crate) fn opt_i64_at(obj: &Value, ptr: &str) -> Option<i64> {
    obj.pointer(ptr).and_then(Value::as_i64)
}

/// The integer at `ptr`, or 0.
pub(crate) fn i64_at(obj: &Value, ptr: &str) -> i64 {
    opt_i64_at(obj, ptr).unwrap_or(0)
}

/// The boolean at `ptr`, if present.
pub(crate) fn opt_bool_at(obj: &Value, ptr: &str) -> Option<bool> {
    obj.pointer(ptr).and_then(Value::as_bool)
}

/// The array at `ptr`, or an empty slice.
pub(crate) fn arr_at<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The number of entries of the map or list at `ptr` (0 when absent).
pub(crate) fn len_at(obj: &Value, ptr: &str) -> i64 {
    let len = match obj.pointer(ptr) {
        Some(Value::Object(map)) => map.len(),
        Some(Value::Array(list)) => list.len(),
        _ => 0,
    };
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// `True`, `False` or `<unset>`, as upstream's `printBoolPtr`.
pub(crate) fn bool_ptr(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

/// A string map as `k1=v1,k2=v2` sorted by key, or `<none>` (upstream's
/// `labels.FormatLabels`).
pub(crate) fn format_labels(map: Option<&Value>) -> String {
    let sorted: BTreeMap<&str, &str> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if sorted.is_empty() {
        return "<none>".to_owned();
    }
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a `LabelSelector` has no selector string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidSelector;

/// A `metav1.LabelSelector` in selector syntax (`app=web,tier in (a,b),!legacy`),
/// requirements sorted by key as upstream's `LabelSelectorAsSelector(..).String()`.
/// An absent or empty selector is `""`.
pub(crate) fn selector_string(selector: Option<&Value>) -> Result<String, InvalidSelector> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().ok_or(InvalidSelector)?;
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let key = expr
            .get("key")
            .and_then(Value::as_str)
            .ok_or(InvalidSelector)?;
        let mut values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        let text = match (
            expr.get("operator").and_then(Value::as_str),
            values.is_empty(),
        ) {
            (Some("In"), false) => format!("{key} in ({})", values.join(",")),
            (Some("NotIn"), false) => format!("{key} notin ({})", values.join(",")),
            (Some("Exists"), true) => key.to_owned(),
            (Some("DoesNotExist"), true) => format!("!{key}"),
            _ => return Err(InvalidSelector),
        };
        requirements.push((key.to_owned(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(","))
}

/// A `LabelSelector` as upstream's `metav1.FormatLabelSelector`: `<none>` when
/// empty, `<error>` when invalid.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_owned(),
        Ok(s) => s,
        Err(InvalidSelector) => "<error>".to_owned(),
    }
}

/// The Containers and Images cells of a pod template: names and images joined by
/// commas.
pub(crate) fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// A resource quantity in upstream's canonical form (`1024Mi` prints as `1Gi`);
/// an absent quantity is `0`, an unparsable one is printed as stored.
pub(crate) fn quantity(raw: Option<&str>) -> String {
    match raw {
        None => "0".to_owned(),
        Some(raw) => raw
            .parse::<crate::quantity::Quantity>()
            .map_or_else(|_| raw.to_owned(), |q| q.to_string()),
    }
}

/// Up to `max` items joined by commas, then ` + N more...`; `<unset>` when empty
/// (upstream's `listWithMoreString`).
pub(crate) fn list_with_more(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<unset>".to_owned();
    }
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else {
        shown
    }
}

/// The `Name` column every type but events starts with.
pub(crate) const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    priority: 0,
    description: "The object's name.",
};

/// The `Age` column: time since creation.
pub(crate) const AGE: Column = column(
    "Age",
    "string",
    "When the object was created, by the server's clock.",
);

/// A column shown by default.
pub(crate) const fn column(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        priority: 0,
        description,
    }
}

/// A column shown only by `-o wide`.
pub(crate) const fn wide(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        priority: 1,
        description,
    }
}

/// Wide `Containers` column of template-bearing workloads.
pub(crate) const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of the containers in the pod template.",
);

/// Wide `Images` column of template-bearing workloads.
pub(crate) const IMAGES: Column = wide(
    "Images",
    "string",
    "Images of the containers in the pod template.",
);

/// Fixtures the printer modules' tests share.
#[cfg(test)]
mod fixtures {
    use jiff::Timestamp;
    use serde_json::{Value, json};

    /// The server clock of the printer tests: 2024-05-01 12:00 UTC.
    pub(super) fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// `metadata` of an object `name` in namespace `default`, created at `created`.
    pub(super) fn meta(name: &str, created: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": created})
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::now;
    use super::*;
    use serde_json::json;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn human_duration_matches_upstream_thresholds() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (400 * 86400, "400d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (input, want) in cases {
            assert_eq!(human_duration(secs(input)), want, "{input}s");
        }
        // Sub-second parts are dropped, as Go's int(d.Seconds()).
        assert_eq!(human_duration(SignedDuration::from_millis(1999)), "1s");
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
    }

    #[test]
    fn since_handles_missing_and_bad_timestamps() {
        assert_eq!(since("2024-05-01T11:59:30Z", now()), "30s");
        assert_eq!(since("", now()), "<unknown>");
        assert_eq!(since("yesterday", now()), "<unknown>");
    }

    #[test]
    fn selector_strings_sort_by_key_and_validate() {
        let sel = json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "zone", "operator": "NotIn", "values": ["b"]},
                {"key": "canary", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        });
        assert_eq!(
            selector_string(Some(&sel)).unwrap(),
            "app=shop,canary,env in (dev,prod),!legacy,tier=web,zone notin (b)"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "In"}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Maybe", "values": ["x"]}]});
        assert_eq!(selector_string(Some(&bad)), Err(InvalidSelector));
    }

    #[test]
    fn labels_and_lists_format_like_upstream() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");
        let items: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(list_with_more(&items, 3), "a,b,c + 2 more...");
        assert_eq!(list_with_more(&items[..2], 3), "a,b");
        assert_eq!(list_with_more(&[], 3), "<unset>");
    }

    #[test]
    fn quantities_print_canonically() {
        assert_eq!(quantity(Some("1Gi")), "1Gi");
        assert_eq!(quantity(Some("1000m")), "1");
        assert_eq!(quantity(None), "0");
        assert_eq!(quantity(Some("lots")), "lots");
    }
}
