//! Rows of namespaced configuration and bookkeeping types: ConfigMaps, Secrets,
//! ServiceAccounts, PersistentVolumeClaims, ResourceQuotas, Leases,
//! ControllerRevisions, and the default two-column table for types upstream has no
//! printer for (LimitRanges, and create-only Bindings).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

use super::cluster::{
    access_modes, storage_class, volume_attributes_class, volume_mode, volume_phase,
};
use super::{AGE, NAME, age, arr_at, column, len_at, name, quantity, str_at, wide};
use crate::registry::Column;

/// Columns of upstream's default table: the name and the RFC 3339 creation time.
pub(crate) const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Created At",
        "date",
        "When the object was created, by the server's clock.",
    ),
];

/// One row of the default table.
pub(crate) fn default_row(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let created = str_at(obj, "/metadata/creationTimestamp")
        .parse::<Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".to_owned());
    vec![name(obj), Value::from(created)]
}

/// Columns of `kubectl get configmaps`.
pub(crate) const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    column("Data", "string", "Number of keys in data and binaryData."),
    AGE,
];

/// One ConfigMap row.
pub(crate) fn config_map_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(len_at(obj, "/data") + len_at(obj, "/binaryData")),
        age(obj, now),
    ]
}

/// Columns of `kubectl get secrets`.
pub(crate) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    column("Type", "string", "Type of the secret."),
    column("Data", "string", "Number of keys in data."),
    AGE,
];

/// One Secret row.
pub(crate) fn secret_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, "/type")),
        Value::from(len_at(obj, "/data")),
        age(obj, now),
    ]
}

/// Columns of `kubectl get serviceaccounts`.
pub(crate) const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        "string",
        "Number of secrets the service account lists.",
    ),
    AGE,
];

/// One ServiceAccount row.
pub(crate) fn service_account_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(len_at(obj, "/secrets")),
        age(obj, now),
    ]
}

/// Columns of `kubectl get persistentvolumeclaims`.
pub(crate) const PERSISTENT_VOLUME_CLAIM_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "Lifecycle phase of the claim."),
    column("Volume", "string", "Volume bound to the claim."),
    column("Capacity", "string", "Capacity of the bound volume."),
    column(
        "Access Modes",
        "string",
        "Access modes of the bound volume.",
    ),
    column("StorageClass", "string", "Storage class of the claim."),
    column(
        "VolumeAttributesClass",
        "string",
        "Volume attributes class of the claim.",
    ),
    AGE,
    wide("VolumeMode", "string", "Filesystem or Block."),
];

/// One PersistentVolumeClaim row; capacity and access modes show once bound.
pub(crate) fn persistent_volume_claim_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let volume = str_at(obj, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(
                obj.pointer("/status/capacity/storage")
                    .and_then(Value::as_str),
            ),
            access_modes(arr_at(obj, "/status/accessModes")),
        )
    };
    vec![
        name(obj),
        Value::from(volume_phase(obj)),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class(obj)),
        Value::from(volume_attributes_class(obj)),
        age(obj, now),
        Value::from(volume_mode(obj)),
    ]
}

/// Columns of `kubectl get resourcequotas`.
pub(crate) const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    column(
        "Request",
        "string",
        "Used and hard amounts of every quota resource but limits.",
    ),
    column(
        "Limit",
        "string",
        "Used and hard amounts of the limits.* quota resources.",
    ),
];

/// One ResourceQuota row: `resource: used/hard` per hard limit, `limits.*` in the
/// Limit column and everything else in Request.
pub(crate) fn resource_quota_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let hard: BTreeMap<&str, &Value> = obj
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (resource, hard_value) in hard {
        let used = obj
            .pointer("/status/used")
            .and_then(|u| u.get(resource))
            .and_then(Value::as_str);
        let text = format!(
            "{resource}: {}/{}",
            quantity(used),
            quantity(hard_value.as_str())
        );
        if resource.starts_with("limits.") {
            limits.push(text);
        } else {
            requests.push(text);
        }
    }
    vec![
        name(obj),
        age(obj, now),
        Value::from(requests.join(", ")),
        Value::from(limits.join(", ")),
    ]
}

/// Columns of `kubectl get leases`.
pub(crate) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    column("Holder", "string", "Who holds the lease."),
    AGE,
];

/// One Lease row.
pub(crate) fn lease_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, "/spec/holderIdentity")),
        age(obj, now),
    ]
}

/// Columns of `kubectl get controllerrevisions`.
pub(crate) const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Controller",
        "string",
        "Kind and name of the controlling owner.",
    ),
    column("Revision", "string", "Revision number of the stored state."),
    AGE,
];

/// One ControllerRevision row; the controller is `kind.group/name` in lower case.
pub(crate) fn controller_revision_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let controller = arr_at(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(
            || "<none>".to_owned(),
            |owner| {
                let kind = str_at(owner, "/kind");
                let group = str_at(owner, "/apiVersion")
                    .rsplit_once('/')
                    .map_or("", |(group, _)| group);
                let group_kind = match (kind, group) {
                    ("", _) => String::new(),
                    (kind, "") => kind.to_owned(),
                    (kind, group) => format!("{kind}.{group}"),
                };
                if group_kind.is_empty() {
                    str_at(owner, "/name").to_owned()
                } else {
                    format!("{}/{}", group_kind.to_lowercase(), str_at(owner, "/name"))
                }
            },
        );
    vec![
        name(obj),
        Value::from(controller),
        Value::from(super::i64_at(obj, "/revision")),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::fixtures::{self, now};
    use serde_json::json;

    fn meta() -> Value {
        fixtures::meta("x", "2024-05-01T11:59:50Z")
    }

    #[test]
    fn counts_of_data() {
        let cm =
            json!({"metadata": meta(), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            config_map_row(&cm, now()),
            vec![json!("x"), json!(3), json!("10s")]
        );
        let secret = json!({"metadata": meta(), "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            secret_row(&secret, now()),
            vec![json!("x"), json!("Opaque"), json!(1), json!("10s")]
        );
        let sa = json!({"metadata": meta()});
        assert_eq!(
            service_account_row(&sa, now()),
            vec![json!("x"), json!(0), json!("10s")]
        );
    }

    #[test]
    fn claim_row_before_and_after_binding() {
        let pending = json!({"metadata": meta(), "spec": {"storageClassName": "local",
            "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}});
        assert_eq!(
            persistent_volume_claim_row(&pending, now())[1..],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("local"),
                json!("<unset>"),
                json!("10s"),
                json!("<unset>")
            ]
        );
        let bound = json!({"metadata": meta(), "spec": {"volumeName": "pv1", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            persistent_volume_claim_row(&bound, now())[1..5],
            [json!("Bound"), json!("pv1"), json!("2Gi"), json!("RWO")]
        );
    }

    #[test]
    fn quota_splits_requests_and_limits() {
        let quota = json!({"metadata": meta(), "status": {
            "hard": {"pods": "10", "limits.memory": "2Gi", "requests.cpu": "1", "limits.cpu": "2"},
            "used": {"pods": "3", "requests.cpu": "500m"}}});
        assert_eq!(
            resource_quota_row(&quota, now()),
            vec![
                json!("x"),
                json!("10s"),
                json!("pods: 3/10, requests.cpu: 500m/1"),
                json!("limits.cpu: 0/2, limits.memory: 0/2Gi")
            ]
        );
    }

    #[test]
    fn lease_revision_and_default_rows() {
        let lease = json!({"metadata": meta(), "spec": {"holderIdentity": "node-a"}});
        assert_eq!(lease_row(&lease, now())[1], json!("node-a"));
        let rev = json!({"metadata": {"name": "web-7d9f", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
            "revision": 2});
        assert_eq!(
            controller_revision_row(&rev, now())[1..3],
            [json!("statefulset.apps/web"), json!(2)]
        );
        let lr =
            json!({"metadata": {"name": "limits", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(
            default_row(&lr, now()),
            vec![json!("limits"), json!("2024-05-01T11:00:00Z")]
        );
    }
}
