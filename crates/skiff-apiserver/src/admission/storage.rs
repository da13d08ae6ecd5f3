//! The storage admission plugins on create: DefaultStorageClass gives a claim
//! that names no class the cluster's default one, and
//! StorageObjectInUseProtection puts the protection finalizers on every new
//! claim and volume.
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

use serde_json::{Value, json};
use skiff_api::registry::ResourceType;
use skiff_store::RangeRequest;

use crate::cache::object_key;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{self, Rest};

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
                let classes = list_classes(rest).await?;
                set_default_class(obj, &classes);
            }
            add_finalizer(obj, PVC_PROTECTION_FINALIZER);
        }
        ("", "PersistentVolume") => add_finalizer(obj, PV_PROTECTION_FINALIZER),
        _ => {}
    }
    Ok(())
}

/// Every StorageClass, from the store.
async fn list_classes(rest: &Rest) -> ApiResult<Vec<Value>> {
    let rt = super::resource("storage.k8s.io", "storageclasses");
    let page = rest
        .store()
        .range(RangeRequest::prefix(&object_key(rt, None, "")))
        .await
        .map_err(|e| ApiError::internal(format!("listing storageclasses: {e}")))?;
    page.kvs
        .iter()
        .map(|kv| rest::decode(rt, kv).map(|cached| cached.object.clone()))
        .collect()
}

/// Whether `claim` asks for a class (possibly `""`, no class) by field or by
/// the beta annotation.
pub fn claim_has_class(claim: &Value) -> bool {
    let annotated = claim
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_STORAGE_CLASS_ANNOTATION))
        .is_some();
    annotated
        || claim["spec"]
            .get("storageClassName")
            .is_some_and(|c| !c.is_null())
}

/// Whether `class` is annotated as the default.
pub fn is_default_class(class: &Value) -> bool {
    let annotations = &class["metadata"]["annotations"];
    [
        IS_DEFAULT_CLASS_ANNOTATION,
        BETA_IS_DEFAULT_CLASS_ANNOTATION,
    ]
    .iter()
    .any(|key| annotations[*key] == "true")
}

/// The default class among `classes`: the newest of those annotated default,
/// the first by name among equally new ones.
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    let created = |class: &Value| -> jiff::Timestamp {
        class["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(jiff::Timestamp::MIN)
    };
    classes
        .iter()
        .filter(|class| is_default_class(class))
        .min_by(|a, b| {
            created(b)
                .cmp(&created(a))
                .then_with(|| object::name(a).cmp(object::name(b)))
        })
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
