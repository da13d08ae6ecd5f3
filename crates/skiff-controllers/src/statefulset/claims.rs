//! Each member's PersistentVolumeClaims and who owns them.
//!
//! A member's claims are made from the set's volumeClaimTemplates and are
//! never deleted by this controller. What happens to them when the set is
//! deleted or scaled down is decided by `persistentVolumeClaimRetentionPolicy`
//! and carried out by the garbage collector, through owner references that
//! this module keeps in line with the policy:
//!
//! | whenScaled | whenDeleted | owner of a member's claim            |
//! |------------|-------------|--------------------------------------|
//! | Retain     | Retain      | nobody                               |
//! | Retain     | Delete      | the set                              |
//! | Delete     | Retain      | the pod, once it is scaled away      |
//! | Delete     | Delete      | the set; the pod once scaled away    |
//!
//! A claim that names a previous incarnation of the set or pod (same name,
//! other UID) is left alone: the garbage collector is about to act on it.
//! A claim controlled by something else loses our references and gains none.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::identity::claim_name;
use crate::pods::controller_reference;

/// What happens to claims, per upstream's `Retain` and `Delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The claim outlives its pod and set.
    Retain,
    /// The claim is garbage collected with its owner.
    Delete,
}

/// `persistentVolumeClaimRetentionPolicy`, `Retain` where unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// When the set is deleted.
    pub when_deleted: Retention,
    /// When the set is scaled down past the member.
    pub when_scaled: Retention,
}

impl RetentionPolicy {
    /// The set's policy.
    pub fn of(set: &StatefulSet) -> Self {
        let policy = set.spec.persistent_volume_claim_retention_policy.as_ref();
        let parse = |value: Option<&String>| match value.map(String::as_str) {
            Some("Delete") => Retention::Delete,
            _ => Retention::Retain,
        };
        Self {
            when_deleted: parse(policy.and_then(|p| p.when_deleted.as_ref())),
            when_scaled: parse(policy.and_then(|p| p.when_scaled.as_ref())),
        }
    }

    fn retains_all(self) -> bool {
        self.when_deleted == Retention::Retain && self.when_scaled == Retention::Retain
    }
}

/// The claims member `ordinal` mounts, one per template, as they are to be
/// created: the template with the member's name, the set's namespace, and the
/// template's labels plus the selector's `matchLabels`.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = set.name_any();
    let selector_labels = set.spec.selector.match_labels.clone().unwrap_or_default();
    set.spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|template| {
            let template_name = template.metadata.name.as_deref()?;
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(template_name, &set_name, ordinal)),
                    namespace: set.namespace(),
                    labels: (!labels.is_empty()).then_some(labels),
                    annotations: template.metadata.annotations.clone(),
                    finalizers: template.metadata.finalizers.clone(),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            })
        })
        .collect()
}

/// The names of member `ordinal`'s claims.
pub fn claim_names(set: &StatefulSet, ordinal: i32) -> Vec<String> {
    claims_for(set, ordinal)
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

fn pod_reference(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The same kind of object with the same name (any UID).
fn same_object(a: &OwnerReference, b: &OwnerReference) -> bool {
    a.api_version == b.api_version && a.kind == b.kind && a.name == b.name
}

/// A reference to `target`'s name whose UID is not `target`'s.
fn has_stale_reference(claim: &PersistentVolumeClaim, target: &OwnerReference) -> bool {
    claim
        .owner_references()
        .iter()
        .find(|r| same_object(r, target))
        .is_some_and(|r| r.uid != target.uid)
}

fn references(claim: &PersistentVolumeClaim, target: &OwnerReference) -> bool {
    claim.owner_references().iter().any(|r| r.uid == target.uid)
}

/// Under a deleting policy, a controller other than the set and the pod.
fn has_other_controller(
    claim: &PersistentVolumeClaim,
    policy: RetentionPolicy,
    set: &OwnerReference,
    pod: &OwnerReference,
) -> bool {
    if policy.retains_all() {
        return false;
    }
    claim.owner_references().iter().any(|r| {
        if same_object(r, set) {
            r.uid != set.uid
        } else if same_object(r, pod) {
            r.uid != pod.uid
        } else {
            r.controller == Some(true)
        }
    })
}

/// Under a `Delete` scaling policy, a claim that still names an earlier pod of
/// this member: the garbage collector is deleting it, so the member must not
/// be created on it. `pod_name` is the member about to be created.
pub fn is_stale(claim: &PersistentVolumeClaim, policy: RetentionPolicy, pod_name: &str) -> bool {
    policy.when_scaled == Retention::Delete
        && claim
            .owner_references()
            .iter()
            .any(|r| r.api_version == "v1" && r.kind == "Pod" && r.name == pod_name)
}

/// The owner references `claim` of member `pod` should have under the set's
/// policy, or `None` if it has them (or must not be touched). `scaled_down`
/// is true for a member outside the set's ordinal range.
pub fn owner_update(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
    scaled_down: bool,
) -> Option<Vec<OwnerReference>> {
    let policy = RetentionPolicy::of(set);
    let set_ref = controller_reference(set);
    let pod_ref = pod_reference(pod);
    if has_stale_reference(claim, &set_ref) || has_stale_reference(claim, &pod_ref) {
        return None;
    }
    let other_controller = has_other_controller(claim, policy, &set_ref, &pod_ref);
    let ours = |r: &OwnerReference| same_object(r, &set_ref) || same_object(r, &pod_ref);
    let mut wanted: Vec<OwnerReference> = claim
        .owner_references()
        .iter()
        .filter(|r| !ours(r))
        .cloned()
        .collect();
    if !other_controller {
        let (by_set, by_pod) = match (policy.when_scaled, policy.when_deleted) {
            (Retention::Retain, Retention::Retain) => (false, false),
            (Retention::Retain, Retention::Delete) => (true, false),
            (Retention::Delete, Retention::Retain) => (false, scaled_down),
            (Retention::Delete, Retention::Delete) => (!scaled_down, scaled_down),
        };
        if by_set {
            wanted.push(set_ref.clone());
        }
        if by_pod {
            wanted.push(pod_ref.clone());
        }
    }
    let current_ours: BTreeMap<&str, Option<bool>> = claim
        .owner_references()
        .iter()
        .filter(|r| ours(r))
        .map(|r| (r.uid.as_str(), r.controller))
        .collect();
    let wanted_ours: BTreeMap<&str, Option<bool>> = wanted
        .iter()
        .filter(|r| ours(r))
        .map(|r| (r.uid.as_str(), r.controller))
        .collect();
    let up_to_date = if other_controller {
        !references(claim, &set_ref) && !references(claim, &pod_ref)
    } else {
        current_ours == wanted_ours
    };
    (!up_to_date).then_some(wanted)
}
