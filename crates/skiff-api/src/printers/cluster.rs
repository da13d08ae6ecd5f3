//! Rows of cluster-scoped types: Namespaces, Nodes, PersistentVolumes,
//! StorageClasses and PriorityClasses.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::{
    AGE, NAME, age, arr_at, column, name, opt_bool_at, opt_str_at, quantity, str_at, wide,
};
use crate::registry::Column;

/// Columns of `kubectl get namespaces`.
pub(crate) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Status",
        "string",
        "Whether the namespace is active or terminating.",
    ),
    AGE,
];

/// One Namespace row.
pub(crate) fn namespace_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, "/status/phase")),
        age(obj, now),
    ]
}

/// Columns of `kubectl get nodes`.
pub(crate) const NODE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Status",
        "string",
        "Readiness of the node, and whether scheduling is disabled.",
    ),
    column("Roles", "string", "Roles named by the node's role labels."),
    AGE,
    column("Version", "string", "Kubelet version the node reports."),
    wide(
        "Internal-IP",
        "string",
        "First internal address of the node.",
    ),
    wide(
        "External-IP",
        "string",
        "First external address of the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "Operating system image the node reports.",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel version the node reports.",
    ),
    wide(
        "Container-Runtime",
        "string",
        "Container runtime and version the node reports.",
    ),
];

/// Label prefix whose suffix names a node role.
const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// Older label whose value names a node role.
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

/// One Node row.
pub(crate) fn node_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    if let Some(ready) = arr_at(obj, "/status/conditions")
        .iter()
        .rfind(|c| str_at(c, "/type") == "Ready")
    {
        status.push(if str_at(ready, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    } else {
        status.push("Unknown");
    }
    if opt_bool_at(obj, "/spec/unschedulable") == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix(NODE_ROLE_PREFIX).filter(|r| !r.is_empty()) {
                roles.insert(role);
            } else if key == NODE_ROLE_LABEL {
                roles.extend(value.as_str().filter(|v| !v.is_empty()));
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |type_: &str| {
        arr_at(obj, "/status/addresses")
            .iter()
            .find(|a| str_at(a, "/type") == type_)
            .map_or("<none>", |a| str_at(a, "/address"))
    };
    let info =
        |field: &str| opt_str_at(obj, &format!("/status/nodeInfo/{field}")).unwrap_or("<unknown>");
    vec![
        name(obj),
        Value::from(status.join(",")),
        Value::from(roles),
        age(obj, now),
        Value::from(str_at(obj, "/status/nodeInfo/kubeletVersion")),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        Value::from(info("osImage")),
        Value::from(info("kernelVersion")),
        Value::from(info("containerRuntimeVersion")),
    ]
}

/// Access modes abbreviated in upstream's fixed order (`RWO,ROX,RWX,RWOP`).
pub(super) fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a PV or PVC: the beta annotation wins over the field.
pub(super) fn storage_class(obj: &Value) -> &str {
    obj.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(obj, "/spec/storageClassName"))
}

/// The VolumeAttributesClass cell of a PV or PVC.
pub(super) fn volume_attributes_class(obj: &Value) -> &str {
    obj.pointer("/spec/volumeAttributesClassName")
        .and_then(Value::as_str)
        .unwrap_or("<unset>")
}

/// The VolumeMode cell of a PV or PVC.
pub(super) fn volume_mode(obj: &Value) -> &str {
    obj.pointer("/spec/volumeMode")
        .and_then(Value::as_str)
        .unwrap_or("<unset>")
}

/// The phase of a PV or PVC, `Terminating` once deletion started.
pub(super) fn volume_phase(obj: &Value) -> &str {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        "Terminating"
    } else {
        str_at(obj, "/status/phase")
    }
}

/// Columns of `kubectl get persistentvolumes`.
pub(crate) const PERSISTENT_VOLUME_COLUMNS: &[Column] = &[
    NAME,
    column("Capacity", "string", "Storage capacity of the volume."),
    column("Access Modes", "string", "Access modes of the volume."),
    column(
        "Reclaim Policy",
        "string",
        "What becomes of the volume once its claim is gone.",
    ),
    column("Status", "string", "Lifecycle phase of the volume."),
    column(
        "Claim",
        "string",
        "Namespace and name of the claim bound to the volume.",
    ),
    column("StorageClass", "string", "Storage class of the volume."),
    column(
        "VolumeAttributesClass",
        "string",
        "Volume attributes class of the volume.",
    ),
    column("Reason", "string", "Reason for the volume's phase."),
    AGE,
    wide("VolumeMode", "string", "Filesystem or Block."),
];

/// One PersistentVolume row.
pub(crate) fn persistent_volume_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match obj.pointer("/spec/claimRef").filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", str_at(c, "/namespace"), str_at(c, "/name")),
        None => String::new(),
    };
    vec![
        name(obj),
        Value::from(quantity(
            obj.pointer("/spec/capacity/storage")
                .and_then(Value::as_str),
        )),
        Value::from(access_modes(arr_at(obj, "/spec/accessModes"))),
        Value::from(str_at(obj, "/spec/persistentVolumeReclaimPolicy")),
        Value::from(volume_phase(obj)),
        Value::from(claim),
        Value::from(storage_class(obj)),
        Value::from(volume_attributes_class(obj)),
        Value::from(str_at(obj, "/status/reason")),
        age(obj, now),
        Value::from(volume_mode(obj)),
    ]
}

/// Columns of `kubectl get storageclasses`.
pub(crate) const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Provisioner",
        "string",
        "Provisioner that creates volumes of this class.",
    ),
    column(
        "ReclaimPolicy",
        "string",
        "Reclaim policy of provisioned volumes.",
    ),
    column(
        "VolumeBindingMode",
        "string",
        "When provisioning and binding happen.",
    ),
    column(
        "AllowVolumeExpansion",
        "string",
        "Whether claims of this class may grow.",
    ),
    AGE,
];

/// Annotations that mark the default StorageClass.
const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
    "/metadata/annotations/storageclass.beta.kubernetes.io~1is-default-class",
];

/// One StorageClass row; the default class is named `NAME (default)`.
pub(crate) fn storage_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut display = str_at(obj, "/metadata/name").to_owned();
    if DEFAULT_CLASS_ANNOTATIONS
        .iter()
        .any(|ptr| str_at(obj, ptr) == "true")
    {
        display.push_str(" (default)");
    }
    vec![
        Value::from(display),
        Value::from(str_at(obj, "/provisioner")),
        Value::from(opt_str_at(obj, "/reclaimPolicy").unwrap_or("Delete")),
        Value::from(opt_str_at(obj, "/volumeBindingMode").unwrap_or("Immediate")),
        Value::from(opt_bool_at(obj, "/allowVolumeExpansion").unwrap_or(false)),
        age(obj, now),
    ]
}

/// Columns of `kubectl get priorityclasses`.
pub(crate) const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column("Value", "integer", "Priority given to pods of this class."),
    column(
        "Global-Default",
        "boolean",
        "Whether pods without a class get this one.",
    ),
    AGE,
];

/// One PriorityClass row.
pub(crate) fn priority_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(super::i64_at(obj, "/value")),
        Value::from(opt_bool_at(obj, "/globalDefault").unwrap_or(false)),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-10T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn node_row_status_roles_and_addresses() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-05-01T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge",
                    "node-role.kubernetes.io/": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.5"}],
                "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                    "containerRuntimeVersion": "containerd://1.6.20"}
            }
        });
        assert_eq!(
            node_row(&node, now()),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge"),
                json!("9d"),
                json!("v1.37.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("containerd://1.6.20")
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}});
        assert_eq!(
            node_row(&bare, now())[1..],
            [
                json!("Unknown"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
    }

    #[test]
    fn persistent_volume_row_fields() {
        let pv = json!({"metadata": {"name": "pv1", "creationTimestamp": "2024-05-10T11:00:00Z"},
            "spec": {"capacity": {"storage": "1024Mi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            persistent_volume_row(&pv, now()),
            vec![
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("60m"),
                json!("Filesystem")
            ]
        );
    }

    #[test]
    fn storage_and_priority_class_rows() {
        let sc = json!({"metadata": {"name": "local", "creationTimestamp": "2024-05-10T11:59:00Z",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            storage_class_row(&sc, now()),
            vec![
                json!("local (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false),
                json!("60s")
            ]
        );
        let pc = json!({"metadata": {"name": "high"}, "value": 1000000, "globalDefault": true});
        assert_eq!(
            priority_class_row(&pc, now()),
            vec![
                json!("high"),
                json!(1000000),
                json!(true),
                json!("<unknown>")
            ]
        );
    }
}
