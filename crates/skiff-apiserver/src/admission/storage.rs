//! The storage admission plugins. On create, DefaultStorageClass gives a
//! claim that names no class the cluster's default one, and
//! StorageObjectInUseProtection puts the protection finalizers on every new
//! claim and volume. On update, PersistentVolumeClaimResize lets a claim ask
//! for more storage only when it is bound and its class (the same before and
//! after) has `allowVolumeExpansion: true` ([`admit_update`]).
//!
//! A claim "names no class" only when `spec.storageClassName` is absent (nil)
//! and the legacy `volume.beta.kubernetes.io/storage-class` annotation is not
//! set: `storageClassName: ""` is a choice, asking for a volume of no class.
//! The default class is the one annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (or the beta
//! annotation); when several are, the newest wins and equal ages go to the
//! name that sorts first, so that installing a second default does not
//! refuse claims. Claims created before any default existed are not touched
//! here: upstream assigns those from a controller.
//!
//! The finalizers are removed by the protection controllers once no pod uses
//! the claim and no claim is bound to the volume; until then deletion only
//! marks the object as terminating.
//!
//! Validation runs first and already refuses any change to the spec of an
//! unbound claim and any shrink to or below `status.capacity` (422); the
//! resize plugin then refuses growth the class does not allow (403). A
//! request lowered back towards the capacity, to recover from a failed
//! expansion, is not growth and passes. Status writes never change the spec,
//! so they never reach the resize check.

use axum::http::StatusCode;
use serde_json::{Value, json};
use skiff_api::quantity::Quantity;
use skiff_api::registry::ResourceType;

use super::default_class;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{ObjectRef, Rest};

/// Holds a claim while a pod uses it.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// Holds a volume while a claim is bound to it.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
/// Marks the default StorageClass.
pub const IS_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta spelling of [`IS_DEFAULT_CLASS_ANNOTATION`], still honoured.
pub const BETA_IS_DEFAULT_CLASS_ANNOTATION: &str =
    "storageclass.beta.kubernetes.io/is-default-class";
/// The legacy annotation naming a claim's class.
pub const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Runs both plugins on a new object of type `rt`; other types pass through.
/// The StorageClasses are read from the store, not the watch cache, so that a
/// claim created right after its default class gets it.
pub async fn admit(rest: &Rest, rt: &'static ResourceType, obj: &mut Value) -> ApiResult<()> {
    match (rt.group, rt.kind) {
        ("", "PersistentVolumeClaim") => {
            if !claim_has_class(obj) {
                let classes = default_class::list(rest, "storage.k8s.io", "storageclasses").await?;
                set_default_class(obj, &classes);
            }
            add_finalizer(obj, PVC_PROTECTION_FINALIZER);
        }
        ("", "PersistentVolume") => add_finalizer(obj, PV_PROTECTION_FINALIZER),
        _ => {}
    }
    Ok(())
}

/// PersistentVolumeClaimResize on an update of `rt` from `old` to `new`:
/// other types, and claims whose storage request does not grow, pass. The
/// class is read from the store, so a class made expandable just before is
/// honoured.
pub async fn admit_update(
    rest: &Rest,
    rt: &'static ResourceType,
    old: &Value,
    new: &Value,
) -> ApiResult<()> {
    if (rt.group, rt.kind) != ("", "PersistentVolumeClaim") {
        return Ok(());
    }
    let refusal = match expansion(old, new) {
        Expansion::None => None,
        Expansion::Refused(why) => Some(why),
        Expansion::NeedsClass(name) => {
            let classes = super::resource("storage.k8s.io", "storageclasses");
            let at = ObjectRef {
                rt: classes,
                namespace: None,
                name,
            };
            let expandable = match rest.get(at).await {
                Ok(class) => allows_expansion(&class.object),
                Err(e) if e.code == StatusCode::NOT_FOUND => false,
                Err(e) => return Err(e),
            };
            (!expandable).then_some(RESIZE_UNSUPPORTED)
        }
    };
    match refusal {
        Some(why) => Err(ApiError::forbidden(rt, object::name(new), why)),
        None => Ok(()),
    }
}

/// Why growth of an unbound claim is refused.
pub const RESIZE_UNBOUND: &str = "Only bound persistent volume claims can be expanded";
/// Why growth is refused when the class does not allow it.
pub const RESIZE_UNSUPPORTED: &str = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";

/// What an update asks of the resize plugin, before the class is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Expansion<'a> {
    /// The request does not grow.
    None,
    /// The request grows and this is why it may not.
    Refused(&'static str),
    /// The request of a bound claim grows: allowed if this class is
    /// expandable.
    NeedsClass(&'a str),
}

/// Whether the claim's storage request grows from `old` to `new`, and if so
/// what decides it: the claim must be bound (in the stored object) and name
/// the same non-empty class before and after.
pub fn expansion<'a>(old: &Value, new: &'a Value) -> Expansion<'a> {
    let request = |claim: &Value| -> Option<Quantity> {
        claim
            .pointer("/spec/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(|s| Quantity::parse(s).ok())
    };
    let zero = Quantity::from_i64(0);
    if request(new).unwrap_or(zero) <= request(old).unwrap_or(zero) {
        return Expansion::None;
    }
    if old["status"]["phase"] != "Bound" {
        return Expansion::Refused(RESIZE_UNBOUND);
    }
    match (claim_class_name(old), claim_class_name(new)) {
        (Some(was), Some(is)) if was == is => Expansion::NeedsClass(is),
        _ => Expansion::Refused(RESIZE_UNSUPPORTED),
    }
}

/// The claim's class as upstream reads it: the beta annotation first, then
/// `spec.storageClassName`; `None` when empty or unset.
pub fn claim_class_name(claim: &Value) -> Option<&str> {
    let annotated = claim
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_STORAGE_CLASS_ANNOTATION))
        .and_then(Value::as_str);
    annotated
        .or_else(|| claim["spec"]["storageClassName"].as_str())
        .filter(|name| !name.is_empty())
}

/// Whether `class` has `allowVolumeExpansion: true`.
pub fn allows_expansion(class: &Value) -> bool {
    class["allowVolumeExpansion"] == true
}

/// Whether `claim` asks for a class (possibly `""`, no class) by field or by
/// the beta annotation.
pub fn claim_has_class(claim: &Value) -> bool {
    default_class::names_class(claim, BETA_STORAGE_CLASS_ANNOTATION, "storageClassName")
}

/// The default StorageClass among `classes`.
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    default_class::choose(
        classes,
        &[
            IS_DEFAULT_CLASS_ANNOTATION,
            BETA_IS_DEFAULT_CLASS_ANNOTATION,
        ],
    )
}

/// Sets `spec.storageClassName` of `claim` to the default class, if there is
/// one; returns the class given.
pub fn set_default_class(claim: &mut Value, classes: &[Value]) -> Option<String> {
    let name = object::name(default_class(classes)?).to_string();
    if !claim["spec"].is_object() {
        claim["spec"] = json!({});
    }
    claim["spec"]["storageClassName"] = json!(name);
    Some(name)
}

/// Appends `finalizer` to the object's finalizers unless already there.
pub fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let mut finalizers = object::finalizers(obj);
    if !finalizers.iter().any(|f| f == finalizer) {
        finalizers.push(finalizer.to_string());
        object::set_finalizers(obj, &finalizers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created},
            "provisioner": "rancher.io/local-path"});
        if let Some(value) = default {
            c["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS_ANNOTATION: value});
        }
        c
    }

    fn claim(spec: Value) -> Value {
        json!({"metadata": {"name": "data", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn only_a_nil_class_counts_as_unset() {
        assert!(!claim_has_class(&claim(json!({}))));
        assert!(!claim_has_class(&claim(json!({"storageClassName": null}))));
        assert!(claim_has_class(&claim(json!({"storageClassName": ""}))));
        assert!(claim_has_class(&claim(json!({"storageClassName": "fast"}))));
        let mut annotated = claim(json!({}));
        annotated["metadata"]["annotations"] = json!({BETA_STORAGE_CLASS_ANNOTATION: "slow"});
        assert!(claim_has_class(&annotated));
    }

    #[test]
    fn the_newest_default_wins_then_the_first_name() {
        let classes = [
            class("old-default", "2024-01-01T00:00:00Z", Some("true")),
            class("newest-plain", "2024-06-01T00:00:00Z", None),
            class("new-default-b", "2024-03-01T00:00:00Z", Some("true")),
            class("new-default-a", "2024-03-01T00:00:00Z", Some("true")),
            class("not-quite", "2024-05-01T00:00:00Z", Some("yes")),
        ];
        assert_eq!(
            default_class(&classes).map(object::name),
            Some("new-default-a")
        );
        let mut beta = class("beta", "2025-01-01T00:00:00Z", None);
        beta["metadata"]["annotations"] = json!({BETA_IS_DEFAULT_CLASS_ANNOTATION: "true"});
        let mut with_beta = classes.to_vec();
        with_beta.push(beta);
        assert_eq!(default_class(&with_beta).map(object::name), Some("beta"));
        assert_eq!(default_class(&classes[1..2]), None);
    }

    #[test]
    fn a_claim_without_class_gets_the_default() {
        let classes = [class("local-path", "2024-01-01T00:00:00Z", Some("true"))];
        let mut pvc = claim(json!({"accessModes": ["ReadWriteOnce"]}));
        assert_eq!(
            set_default_class(&mut pvc, &classes).as_deref(),
            Some("local-path")
        );
        assert_eq!(pvc["spec"]["storageClassName"], "local-path");
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        let mut untouched = claim(json!({}));
        assert_eq!(set_default_class(&mut untouched, &classes[..0]), None);
        assert_eq!(untouched, claim(json!({})));
    }

    /// A claim of `class` requesting `request`, in `phase`.
    fn sized(class: Option<&str>, request: &str, phase: &str) -> Value {
        let mut c = claim(json!({"resources": {"requests": {"storage": request}}}));
        if let Some(class) = class {
            c["spec"]["storageClassName"] = json!(class);
        }
        c["status"] = json!({"phase": phase, "capacity": {"storage": "1Gi"}});
        c
    }

    #[test]
    fn only_growth_of_a_bound_claim_of_one_class_asks_the_class() {
        let bound = sized(Some("gold"), "1Gi", "Bound");
        assert_eq!(
            expansion(&bound, &sized(Some("gold"), "2Gi", "Bound")),
            Expansion::NeedsClass("gold")
        );
        // Not growth: the same size however spelled, or smaller.
        assert_eq!(
            expansion(&bound, &sized(Some("gold"), "1024Mi", "Bound")),
            Expansion::None
        );
        assert_eq!(
            expansion(
                &sized(Some("gold"), "5Gi", "Bound"),
                &sized(Some("gold"), "2Gi", "Bound")
            ),
            Expansion::None
        );
        // Upstream reads the phase of the stored claim.
        assert_eq!(
            expansion(
                &sized(Some("gold"), "1Gi", "Pending"),
                &sized(Some("gold"), "2Gi", "Bound")
            ),
            Expansion::Refused(RESIZE_UNBOUND)
        );
        // No class, or a class changed on the way, cannot be expanded.
        assert_eq!(
            expansion(&sized(None, "1Gi", "Bound"), &sized(None, "2Gi", "Bound")),
            Expansion::Refused(RESIZE_UNSUPPORTED)
        );
        assert_eq!(
            expansion(
                &sized(Some(""), "1Gi", "Bound"),
                &sized(Some(""), "2Gi", "Bound")
            ),
            Expansion::Refused(RESIZE_UNSUPPORTED)
        );
        assert_eq!(
            expansion(&bound, &sized(Some("silver"), "2Gi", "Bound")),
            Expansion::Refused(RESIZE_UNSUPPORTED)
        );
        // The beta annotation names the class first.
        let mut annotated = sized(Some("gold"), "1Gi", "Bound");
        annotated["metadata"]["annotations"] = json!({BETA_STORAGE_CLASS_ANNOTATION: "beta"});
        let mut grown = annotated.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("3Gi");
        assert_eq!(expansion(&annotated, &grown), Expansion::NeedsClass("beta"));
    }

    #[test]
    fn only_an_explicit_true_allows_expansion() {
        let mut c = class("gold", "2024-01-01T00:00:00Z", None);
        assert!(!allows_expansion(&c));
        c["allowVolumeExpansion"] = json!(false);
        assert!(!allows_expansion(&c));
        c["allowVolumeExpansion"] = json!(true);
        assert!(allows_expansion(&c));
    }

    #[test]
    fn finalizers_are_added_once_after_existing_ones() {
        let mut pv = json!({"metadata": {"name": "pv", "finalizers": ["example.com/keep"]}});
        add_finalizer(&mut pv, PV_PROTECTION_FINALIZER);
        add_finalizer(&mut pv, PV_PROTECTION_FINALIZER);
        assert_eq!(
            object::finalizers(&pv),
            ["example.com/keep", PV_PROTECTION_FINALIZER]
        );
        let mut pvc = claim(json!({}));
        add_finalizer(&mut pvc, PVC_PROTECTION_FINALIZER);
        assert_eq!(object::finalizers(&pvc), [PVC_PROTECTION_FINALIZER]);
    }
}
