//! Which volume a claim may have: upstream's matching rules.
//!
//! A volume fits a claim when its `storage` capacity covers the request, its
//! volumeMode and volumeAttributesClassName are the claim's, it is not being
//! deleted, and either it is already reserved for this claim (its `claimRef`
//! names the claim) or it is `Available`, of the claim's class (`""` meaning
//! "no class"), and carries the labels the claim's selector asks for.
//!
//! Volumes are searched as upstream's ordered index does: grouped by their
//! set of access modes, keeping only the sets that contain every mode the
//! claim asks for, fewest modes first, so a `ReadWriteOnce` claim gets a
//! `ReadWriteOnce` volume before a `ReadWriteOnce,ReadWriteMany` one even if
//! the latter is smaller. Within a group, a volume reserved for the claim
//! wins at once; otherwise the smallest fitting volume does (ties go to the
//! name that sorts first, where upstream's choice is arbitrary).
//!
//! Under `WaitForFirstConsumer` the binder only takes volumes reserved for
//! the claim: picking a free one is the scheduler's job, once it knows the
//! node.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use skiff_api::quantity::Quantity;

use crate::pods;

/// A claim or volume's class in the annotation that predates
/// `storageClassName`; it wins over the field when present.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The annotation that makes a StorageClass the default.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta spelling of [`ANN_DEFAULT_CLASS`], still honoured upstream.
pub const ANN_BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// `volumeBindingMode` that delays binding until a pod is scheduled.
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// The value of annotation `key`, if present.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The class a claim asks for; `""` means no class.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS)
        .or_else(|| claim.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// Whether the claim names a class at all (`storageClassName: ""` does; an
/// absent field does not, and is what a default class fills in).
pub fn claim_has_class(claim: &PersistentVolumeClaim) -> bool {
    annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS).is_some()
        || claim
            .spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// The class a volume belongs to; `""` means no class.
pub fn volume_class(volume: &PersistentVolume) -> &str {
    annotation(&volume.metadata, ANN_BETA_STORAGE_CLASS)
        .or_else(|| volume.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

fn quantity(list: Option<&BTreeMap<String, ApiQuantity>>) -> Quantity {
    list.and_then(|l| l.get("storage"))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .unwrap_or_else(|| Quantity::from_i64(0))
}

/// The claim's `resources.requests.storage` (zero when absent).
pub fn requested_storage(claim: &PersistentVolumeClaim) -> Quantity {
    quantity(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

/// The volume's `capacity.storage` (zero when absent).
pub fn volume_capacity(volume: &PersistentVolume) -> Quantity {
    quantity(volume.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

fn claim_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

fn volume_modes(volume: &PersistentVolume) -> &[String] {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

/// Whether the volume offers every access mode the claim asks for.
pub fn access_modes_satisfied(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let offered = volume_modes(volume);
    claim_modes(claim).iter().all(|mode| offered.contains(mode))
}

/// Whether claim and volume disagree on `volumeMode` (absent is
/// `Filesystem` on both sides).
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let claim_mode = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let volume_mode = volume.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    claim_mode.unwrap_or("Filesystem") != volume_mode.unwrap_or("Filesystem")
}

fn attributes_class_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let claim_vac = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref());
    let volume_vac = volume
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref());
    claim_vac.unwrap_or("") != volume_vac.unwrap_or("")
}

/// Whether the volume's `claimRef` names this claim (by namespace and name,
/// and by UID when the reference carries one: a volume pre-bound by its
/// creator has none yet).
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if claim_ref.name.as_deref() != Some(claim.name_any().as_str())
        || claim_ref.namespace.as_deref() != claim.metadata.namespace.as_deref()
    {
        return false;
    }
    match claim_ref.uid.as_deref() {
        None | Some("") => true,
        Some(uid) => claim.metadata.uid.as_deref() == Some(uid),
    }
}

/// The volume's phase (`""` before the API server or binder set one).
pub fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The best volume for `claim` among `volumes`, as described in the module
/// docs. `delay_binding` (a `WaitForFirstConsumer` class) keeps only the
/// volumes reserved for the claim.
pub fn find_best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [Arc<PersistentVolume>],
    delay_binding: bool,
) -> Option<&'a Arc<PersistentVolume>> {
    let wanted = claim_modes(claim);
    let mut groups: BTreeMap<(usize, Vec<&str>), Vec<&'a Arc<PersistentVolume>>> = BTreeMap::new();
    for volume in volumes {
        let mut modes: Vec<&str> = volume_modes(volume).iter().map(String::as_str).collect();
        modes.sort_unstable();
        modes.dedup();
        if wanted.iter().all(|w| modes.contains(&w.as_str())) {
            groups.entry((modes.len(), modes)).or_default().push(volume);
        }
    }
    groups.into_values().find_map(|mut group| {
        group.sort_by_key(|v| v.name_any());
        best_in_group(claim, &group, delay_binding)
    })
}

/// Upstream's `FindMatchingVolume` without a node (the binder's path).
fn best_in_group<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &[&'a Arc<PersistentVolume>],
    delay_binding: bool,
) -> Option<&'a Arc<PersistentVolume>> {
    let requested = requested_storage(claim);
    let class = claim_class(claim);
    let selector = claim
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(|s| pods::selector(Some(s)));
    let mut smallest: Option<(&'a Arc<PersistentVolume>, Quantity)> = None;
    for &volume in volumes {
        let claimed = volume.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
        let reserved = is_volume_bound_to_claim(volume, claim);
        if claimed && !reserved {
            continue;
        }
        let capacity = volume_capacity(volume);
        if capacity < requested
            || volume_mode_mismatch(claim, volume)
            || attributes_class_mismatch(claim, volume)
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if reserved {
            return Some(volume);
        }
        if delay_binding
            || volume_phase(volume) != "Available"
            || selector
                .as_ref()
                .is_some_and(|s| !pods::selects(s, volume.metadata.labels.as_ref()))
            || volume_class(volume) != class
        {
            continue;
        }
        if smallest.as_ref().is_none_or(|(_, best)| capacity < *best) {
            smallest = Some((volume, capacity));
        }
    }
    smallest.map(|(volume, _)| volume)
}

/// Why `volume`, which a claim names in `spec.volumeName`, cannot serve it;
/// the reasons are upstream's.
pub fn check_volume_satisfies_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "the volume is marked for deletion \"{}\"",
            volume.name_any()
        ));
    }
    if volume_capacity(volume) < requested_storage(claim) {
        return Err("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode_mismatch(claim, volume) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_satisfied(claim, volume) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

fn is_default_class(class: &StorageClass) -> bool {
    annotation(&class.metadata, ANN_DEFAULT_CLASS) == Some("true")
        || annotation(&class.metadata, ANN_BETA_DEFAULT_CLASS) == Some("true")
}

/// The default StorageClass: of those annotated default, the newest, and of
/// equally new ones the name that sorts first.
pub fn default_class(classes: &[Arc<StorageClass>]) -> Option<&Arc<StorageClass>> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .min_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b)
                .cmp(&created(a))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

/// Whether the class delays binding until a pod using the claim is
/// scheduled. A class without a mode is `Immediate` (the API server
/// defaults it).
pub fn is_delay_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some(WAIT_FOR_FIRST_CONSUMER)
}
