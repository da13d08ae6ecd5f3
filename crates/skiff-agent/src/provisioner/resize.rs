//! Volume expansion of this provisioner's volumes. No IO: the provisioner's
//! loop feeds these the cached claim and class and the volume it reads.
//!
//! A local-path volume is a plain directory with no quota, so there is
//! nothing to grow on the disk: expansion is bookkeeping. This node acts as
//! upstream's external-resizer for its own volumes and leaves the objects as
//! the resizer leaves a finished expansion that needs no file system resize
//! on the node:
//!
//! 1. the claim's status is marked in progress (`allocatedResources.storage`
//!    is the new size, `allocatedResourceStatuses.storage` is
//!    `ControllerResizeInProgress`, condition `Resizing`), with a `Resizing`
//!    event;
//! 2. the PV's `spec.capacity.storage` becomes the new size;
//! 3. the claim's status is marked finished (`capacity.storage` is the new
//!    size, the storage entry of `allocatedResourceStatuses` and the resize
//!    conditions are gone), with a `VolumeResizeSuccessful` event.
//!
//! Each step is idempotent, so a failure part way retries from the start.
//! A claim is expanded when it is Bound, not being deleted, of a class whose
//! provisioner is [`PROVISIONER`] and that has `allowVolumeExpansion: true`,
//! and requests more than its `status.capacity`; its volume must be one this
//! provisioner made on this node and be bound to this very claim (by uid).
//! The API server already refused growth the class does not allow; checking
//! the class again here keeps a class edited since from being bypassed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Map, Value, json};
use skiff_api::quantity::Quantity as Exact;

use super::PROVISIONER;
use super::claim::{ANN_PROVISIONED_BY, ANN_SELECTED_NODE};
use super::volume::affinity_node;

/// The claim condition while the volume is being resized.
pub const CONDITION_RESIZING: &str = "Resizing";
/// The resource status while the controller resizes the volume.
pub const CONTROLLER_RESIZE_IN_PROGRESS: &str = "ControllerResizeInProgress";
/// Condition types that belong to resizing and are dropped once it is over
/// (upstream's resizer keeps any other condition).
const RESIZE_CONDITIONS: &[&str] = &[
    CONDITION_RESIZING,
    "FileSystemResizePending",
    "ControllerResizeError",
    "NodeResizeError",
];

/// The claim's requested storage, exactly.
fn requested(claim: &PersistentVolumeClaim) -> Option<(Quantity, Exact)> {
    let quantity = claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Some((quantity.clone(), Exact::parse(&quantity.0).ok()?))
}

/// The storage entry of a resource list, exactly; zero when absent.
fn storage_of(list: Option<&BTreeMap<String, Quantity>>) -> Exact {
    list.and_then(|l| l.get("storage"))
        .and_then(|q| Exact::parse(&q.0).ok())
        .unwrap_or_else(|| Exact::from_i64(0))
}

/// The volume to expand for `claim` of `class`, if the claim asks for more
/// than it has and is this provisioner's to expand on `node_name`. Needs no
/// volume, so the provisioner reads the volume only for these claims.
pub fn wanted<'a>(
    claim: &'a PersistentVolumeClaim,
    class: &StorageClass,
    node_name: &str,
) -> Option<&'a str> {
    if class.provisioner != PROVISIONER
        || class.allow_volume_expansion != Some(true)
        || claim.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let status = claim.status.as_ref()?;
    if status.phase.as_deref() != Some("Bound") {
        return None;
    }
    // A claim this provisioner made names the node it lives on.
    let selected = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_SELECTED_NODE));
    if selected.is_some_and(|node| node != node_name) {
        return None;
    }
    let volume = claim
        .spec
        .as_ref()?
        .volume_name
        .as_deref()
        .filter(|v| !v.is_empty())?;
    let (_, request) = requested(claim)?;
    (request > storage_of(status.capacity.as_ref())).then_some(volume)
}

/// One expansion to carry out: the status writes around growing the volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    /// The new size: the claim's request, as the claim spells it.
    pub size: Quantity,
    /// Whether the PV's capacity is still below the new size.
    pub grow_volume: bool,
    /// The claim status merge patch marking the expansion in progress.
    pub started: Value,
    /// The claim status merge patch marking it finished.
    pub finished: Value,
}

/// The expansion of `claim` (for which [`wanted`] named `pv`) at `now`, or
/// `None` when `pv` is not this provisioner's volume on `node_name` bound to
/// this claim.
pub fn plan(
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    node_name: &str,
    now: jiff::Timestamp,
) -> Option<Expansion> {
    let provisioned_by = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_PROVISIONED_BY));
    let spec = pv.spec.as_ref()?;
    let bound_here = spec.claim_ref.as_ref().is_some_and(|r| {
        r.uid.is_some() && r.uid == claim.metadata.uid && r.namespace == claim.metadata.namespace
    });
    if provisioned_by.map(String::as_str) != Some(PROVISIONER)
        || affinity_node(pv) != Some(node_name)
        || pv.metadata.deletion_timestamp.is_some()
        || !bound_here
    {
        return None;
    }
    let (size, exact) = requested(claim)?;
    let grow_volume = storage_of(spec.capacity.as_ref()) < exact;
    let status = claim
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or_default();
    let size_json = json!(size.0);

    let mut allocated = object(&status["allocatedResources"]);
    allocated.insert("storage".into(), size_json.clone());
    let mut in_progress = object(&status["allocatedResourceStatuses"]);
    in_progress.insert("storage".into(), json!(CONTROLLER_RESIZE_IN_PROGRESS));
    let kept = other_conditions(&status);
    let mut resizing = kept.clone();
    resizing.push(resizing_condition(&status, now));
    let started = json!({
        "status": {
            "allocatedResources": allocated,
            "allocatedResourceStatuses": in_progress,
            "conditions": resizing,
        }
    });

    let mut capacity = object(&status["capacity"]);
    capacity.insert("storage".into(), size_json);
    let mut statuses = object(&status["allocatedResourceStatuses"]);
    statuses.remove("storage");
    // A merge patch removes what is null; an emptied map goes altogether,
    // as upstream leaves it unset.
    let statuses = if statuses.is_empty() {
        Value::Null
    } else {
        let mut patch: Map<String, Value> = statuses;
        patch.insert("storage".into(), Value::Null);
        Value::Object(patch)
    };
    let conditions = if kept.is_empty() {
        Value::Null
    } else {
        Value::Array(kept)
    };
    let finished = json!({
        "status": {
            "capacity": capacity,
            "allocatedResources": allocated,
            "allocatedResourceStatuses": statuses,
            "conditions": conditions,
        }
    });
    Some(Expansion {
        size,
        grow_volume,
        started,
        finished,
    })
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The claim's conditions that are not about resizing, in order.
fn other_conditions(status: &Value) -> Vec<Value> {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            !c["type"]
                .as_str()
                .is_some_and(|t| RESIZE_CONDITIONS.contains(&t))
        })
        .cloned()
        .collect()
}

/// `Resizing: True`, keeping its transition time if it is already so.
fn resizing_condition(status: &Value, now: jiff::Timestamp) -> Value {
    let current = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == CONDITION_RESIZING && c["status"] == "True");
    match current {
        Some(condition) => condition.clone(),
        None => json!({
            "type": CONDITION_RESIZING,
            "status": "True",
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(expandable: Option<bool>) -> StorageClass {
        let mut class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "grow"}, "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer",
        }))
        .expect("class");
        class.allow_volume_expansion = expandable;
        class
    }

    fn claim(request: &str, status: Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "1234",
                "annotations": {ANN_SELECTED_NODE: "node-a"}},
            "spec": {"storageClassName": "grow", "volumeName": "pvc-1234",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": request}}},
            "status": status,
        }))
        .expect("claim")
    }

    fn bound(capacity: &str) -> Value {
        json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": capacity}})
    }

    fn volume(capacity: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-1234",
                "annotations": {ANN_PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": capacity},
                "hostPath": {"path": "/data/storage/pvc-1234_ns_data"},
                "claimRef": {"namespace": "ns", "name": "data", "uid": "1234"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]},
                ]}]}},
            },
        }))
        .expect("volume")
    }

    fn now() -> jiff::Timestamp {
        "2026-10-01T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn a_bound_claim_asking_for_more_of_an_expandable_class_is_wanted() {
        let grow = class(Some(true));
        let c = claim("3Gi", bound("1Gi"));
        assert_eq!(wanted(&c, &grow, "node-a"), Some("pvc-1234"));
        // The same size however spelled, or less, is nothing to do.
        assert_eq!(
            wanted(&claim("1024Mi", bound("1Gi")), &grow, "node-a"),
            None
        );
        assert_eq!(wanted(&claim("1Gi", bound("2Gi")), &grow, "node-a"), None);
        // The class must allow it, explicitly, and be this provisioner's.
        assert_eq!(wanted(&c, &class(None), "node-a"), None);
        assert_eq!(wanted(&c, &class(Some(false)), "node-a"), None);
        let mut theirs = grow.clone();
        theirs.provisioner = "example.com/nfs".into();
        assert_eq!(wanted(&c, &theirs, "node-a"), None);
        // Another node's claim, an unbound or a deleted claim: not here.
        assert_eq!(wanted(&c, &grow, "node-b"), None);
        let pending = claim("3Gi", json!({"phase": "Pending"}));
        assert_eq!(wanted(&pending, &grow, "node-a"), None);
        let mut deleted = c.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert_eq!(wanted(&deleted, &grow, "node-a"), None);
        // A statically bound claim names no node: the volume decides.
        let mut static_claim = c.clone();
        static_claim.metadata.annotations = None;
        assert_eq!(wanted(&static_claim, &grow, "node-b"), Some("pvc-1234"));
    }

    #[test]
    fn the_expansion_ends_as_upstreams_finished_online_resize() {
        let mut status = bound("1Gi");
        status["conditions"] = json!([{"type": "ModifyingVolume", "status": "True"}]);
        let c = claim("3Gi", status);
        let expansion = plan(&c, &volume("1Gi"), "node-a", now()).expect("planned");
        assert_eq!(expansion.size, Quantity("3Gi".into()));
        assert!(expansion.grow_volume);
        assert_eq!(
            expansion.started,
            json!({"status": {
                "allocatedResources": {"storage": "3Gi"},
                "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"},
                "conditions": [
                    {"type": "ModifyingVolume", "status": "True"},
                    {"type": "Resizing", "status": "True",
                        "lastTransitionTime": "2026-10-01T12:00:00Z"},
                ],
            }})
        );
        assert_eq!(
            expansion.finished,
            json!({"status": {
                "capacity": {"storage": "3Gi"},
                "allocatedResources": {"storage": "3Gi"},
                "allocatedResourceStatuses": null,
                "conditions": [{"type": "ModifyingVolume", "status": "True"}],
            }})
        );
    }

    #[test]
    fn a_retried_expansion_keeps_its_progress_and_other_resources() {
        let mut status = bound("1Gi");
        status["allocatedResources"] = json!({"storage": "3Gi", "example.com/iops": "100"});
        status["allocatedResourceStatuses"] = json!({"storage": "ControllerResizeInProgress",
            "example.com/iops": "ControllerResizeInProgress"});
        status["conditions"] = json!([{"type": "Resizing", "status": "True",
            "lastTransitionTime": "2026-09-30T08:00:00Z"}]);
        let c = claim("3Gi", status);
        // The volume grew before the claim's status was written.
        let expansion = plan(&c, &volume("3Gi"), "node-a", now()).expect("planned");
        assert!(!expansion.grow_volume);
        assert_eq!(
            expansion.started["status"]["conditions"],
            json!([{"type": "Resizing", "status": "True",
                "lastTransitionTime": "2026-09-30T08:00:00Z"}])
        );
        assert_eq!(
            expansion.finished,
            json!({"status": {
                "capacity": {"storage": "3Gi"},
                "allocatedResources": {"storage": "3Gi", "example.com/iops": "100"},
                "allocatedResourceStatuses": {"storage": null,
                    "example.com/iops": "ControllerResizeInProgress"},
                "conditions": null,
            }})
        );
    }

    #[test]
    fn only_this_provisioners_volume_on_this_node_bound_to_the_claim_is_grown() {
        let c = claim("3Gi", bound("1Gi"));
        assert!(plan(&c, &volume("1Gi"), "node-b", now()).is_none());
        let mut foreign = volume("1Gi");
        foreign.metadata.annotations = None;
        assert!(plan(&c, &foreign, "node-a", now()).is_none());
        let mut rebound = volume("1Gi");
        rebound
            .spec
            .as_mut()
            .and_then(|s| s.claim_ref.as_mut())
            .expect("claimRef")
            .uid = Some("other".into());
        assert!(plan(&c, &rebound, "node-a", now()).is_none());
        let mut unbound = volume("1Gi");
        unbound.spec.as_mut().expect("spec").claim_ref = None;
        assert!(plan(&c, &unbound, "node-a", now()).is_none());
    }
}
