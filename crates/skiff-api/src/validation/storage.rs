//! Storage kinds: PersistentVolume, PersistentVolumeClaim (with the claim spec
//! that StatefulSet templates and ephemeral volumes embed) and StorageClass.
//!
//! Claims are immutable once created so that quota and LimitRanges cannot be
//! gamed: binding may fill in `volumeName` once, a claim without a class may
//! gain one, a bound claim may grow (and shrink back no further than what was
//! really allocated), and `volumeAttributesClassName` may change. A volume's
//! source never changes, so the data a volume names stays the data it names.

use serde_json::Value;

use super::field::{
    Path, arr_of, forbidden, get, has, immutable, invalid, invalid_each, map_of, not_supported,
    one_of, required, same, str_of, too_long,
};
use super::meta::validate_label_selector;
use super::names::{dns1123_subdomain_errors, qualified_name_errors};
use super::pod::{quantity_at, validate_node_selector_terms, validate_volume_source};
use crate::quantity::Quantity;
use crate::registry::FieldError;

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const PV_RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];

/// The sources of a `PersistentVolumeSpec`, in the order upstream checks
/// them: the first one present is validated, any later one is refused.
const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

/// The legacy annotation naming a claim's class, still honoured upstream.
const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Node label keys that a volume's node affinity may move from beta to GA.
const BETA_TO_GA_LABELS: &[(&str, &str)] = &[
    (
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/zone",
    ),
    (
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/region",
    ),
    ("beta.kubernetes.io/os", "kubernetes.io/os"),
    ("beta.kubernetes.io/arch", "kubernetes.io/arch"),
    (
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
    ),
];

const MAX_CLASS_PARAMETERS: usize = 512;
const MAX_CLASS_PARAMETERS_SIZE: usize = 256 * 1024;

/// At least one access mode; `detail` explains the error (claims give one,
/// volumes none).
fn require_access_modes(errs: &mut Vec<FieldError>, spec: &Value, path: &Path, detail: &str) {
    if arr_of(spec, "accessModes").is_empty() {
        errs.push(required(&path.child("accessModes"), detail));
    }
}

/// Each access mode known, and ReadWriteOncePod alone.
fn validate_access_modes(errs: &mut Vec<FieldError>, spec: &Value, path: &Path) {
    let p = path.child("accessModes");
    let (mut once_pod, mut others) = (false, false);
    for mode in arr_of(spec, "accessModes") {
        let mode = mode.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&mode) {
            errs.push(not_supported(&p, mode, ACCESS_MODES));
        } else if mode == "ReadWriteOncePod" {
            once_pod = true;
        } else {
            others = true;
        }
    }
    if once_pod && others {
        errs.push(forbidden(
            &p,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// A string member that, when present at all (even empty), must be one of
/// `allowed`.
fn supported_if_set(
    errs: &mut Vec<FieldError>,
    v: &Value,
    key: &str,
    path: &Path,
    allowed: &[&str],
) {
    if let Some(value) = v.get(key).and_then(Value::as_str)
        && !allowed.contains(&value)
    {
        errs.push(not_supported(&path.child(key), value, allowed));
    }
}

/// A class name (storage or volume attributes class), when non-empty.
fn validate_class_name(errs: &mut Vec<FieldError>, spec: &Value, key: &str, path: &Path) {
    let name = str_of(spec, key);
    if !name.is_empty() {
        invalid_each(errs, &path.child(key), name, dns1123_subdomain_errors(name));
    }
}

/// A quantity that must be above zero.
fn positive(errs: &mut Vec<FieldError>, path: &Path, q: Quantity) {
    if q.is_zero() || q.is_negative() {
        errs.push(invalid(path, q.to_string(), "must be greater than zero"));
    }
}

/// The requested storage of a claim spec; zero when absent or malformed.
fn requested_storage(spec: &Value) -> Quantity {
    storage_in(get(get(spec, "resources"), "requests"))
}

/// The `storage` entry of a resource list; zero when absent or malformed.
fn storage_in(list: &Value) -> Quantity {
    list.get("storage")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Quantity::from_i64(0))
}

/// A path that names `/` once cleaned (`//`, `/.`, `/./`, ...).
fn is_root(path: &str) -> bool {
    path.starts_with('/') && path.split('/').all(|seg| matches!(seg, "" | "." | ".."))
}

/// Whether `path` has a `..` element.
fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|seg| seg == "..")
}

/// A volume's `nodeAffinity`; returns whether one is set.
fn validate_volume_node_affinity(
    errs: &mut Vec<FieldError>,
    affinity: &Value,
    path: &Path,
) -> bool {
    if affinity.is_null() {
        return false;
    }
    let required_path = path.child("required");
    let selector = get(affinity, "required");
    if selector.is_null() {
        errs.push(required(
            &required_path,
            "must specify required node constraints",
        ));
        return true;
    }
    let terms = arr_of(selector, "nodeSelectorTerms");
    let terms_path = required_path.child("nodeSelectorTerms");
    if terms.is_empty() {
        errs.push(required(
            &terms_path,
            "must have at least one node selector term",
        ));
    } else {
        validate_node_selector_terms(errs, terms, &terms_path);
    }
    true
}

/// `PersistentVolume`
pub(crate) fn validate_pv(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    require_access_modes(errs, spec, &sp, "");
    validate_access_modes(errs, spec, &sp);

    let capacity_path = sp.child("capacity");
    let capacity = map_of(spec, "capacity");
    if capacity.is_empty() {
        errs.push(required(&capacity_path, ""));
    }
    if !capacity.contains_key("storage") || capacity.len() > 1 {
        errs.push(not_supported(
            &capacity_path,
            get(spec, "capacity"),
            &["storage"],
        ));
    }
    for (name, v) in capacity {
        let p = capacity_path.key(name);
        if let Some(q) = quantity_at(errs, &p, v) {
            if q.is_negative() {
                errs.push(invalid(&p, q.value(), "must be a valid resource quantity"));
            }
            positive(errs, &p, q);
        }
    }
    one_of(
        errs,
        spec,
        "persistentVolumeReclaimPolicy",
        &sp,
        PV_RECLAIM_POLICIES,
    );
    let has_affinity =
        validate_volume_node_affinity(errs, get(spec, "nodeAffinity"), &sp.child("nodeAffinity"));

    validate_volume_source(errs, spec, &sp);
    if PV_SOURCES.iter().find(|key| has(spec, key)) == Some(&"local") {
        let path = str_of(get(spec, "local"), "path");
        if has_backsteps(path) {
            errs.push(invalid(
                &sp.child("local").child("path"),
                path,
                "must not contain '..'",
            ));
        }
        if !has_affinity {
            errs.push(required(
                &sp.child("nodeAffinity"),
                "Local volume requires node affinity",
            ));
        }
    }
    if has(spec, "hostPath")
        && is_root(str_of(get(spec, "hostPath"), "path"))
        && str_of(spec, "persistentVolumeReclaimPolicy") == "Recycle"
    {
        errs.push(forbidden(
            &sp.child("persistentVolumeReclaimPolicy"),
            "may not be 'recycle' for a hostPath mount of '/'",
        ));
    }
    validate_class_name(errs, spec, "storageClassName", &sp);
    supported_if_set(errs, spec, "volumeMode", &sp, VOLUME_MODES);
    if let Some(class) = spec
        .get("volumeAttributesClassName")
        .and_then(Value::as_str)
    {
        if class.is_empty() {
            errs.push(required(
                &sp.child("volumeAttributesClassName"),
                "an empty string is disallowed",
            ));
        } else {
            validate_class_name(errs, spec, "volumeAttributesClassName", &sp);
        }
        if !has(spec, "csi") {
            errs.push(required(
                &sp.child("csi"),
                "has to be specified when using volumeAttributesClassName",
            ));
        }
    }
    if let Some(old) = old {
        validate_pv_update(errs, spec, get(old, "spec"));
    }
}

/// What may not change in a volume's spec.
fn validate_pv_update(errs: &mut Vec<FieldError>, spec: &Value, old_spec: &Value) {
    let source = |spec: &Value| -> Value {
        PV_SOURCES
            .iter()
            .filter(|key| has(spec, key))
            .map(|key| (key.to_string(), spec[*key].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut new_source = source(spec);
    let old_source = source(old_spec);
    // A CSI volume may gain an expansion secret it was created without.
    if has(&old_source, "csi")
        && !has(&old_source["csi"], "controllerExpandSecretRef")
        && let Some(csi) = new_source.get_mut("csi").and_then(Value::as_object_mut)
    {
        csi.remove("controllerExpandSecretRef");
    }
    if !same(&new_source, &old_source) {
        errs.push(forbidden(
            &Path::new("spec").child("persistentvolumesource"),
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    // Upstream reports these two at the bare field name, without `spec.`.
    immutable(
        errs,
        &Path::new("volumeMode"),
        get(spec, "volumeMode"),
        get(old_spec, "volumeMode"),
    );
    let old_affinity = get(old_spec, "nodeAffinity");
    let new_affinity = get(spec, "nodeAffinity");
    if !old_affinity.is_null() && !same(new_affinity, &ga_labelled(old_affinity, new_affinity)) {
        errs.push(invalid(
            &Path::new("nodeAffinity"),
            new_affinity,
            "field is immutable, except for updating from beta label to GA",
        ));
    }
    if has(old_spec, "volumeAttributesClassName") && !has(spec, "volumeAttributesClassName") {
        errs.push(forbidden(
            &Path::new("spec").child("volumeAttributesClassName"),
            "update from non-nil value to nil is forbidden",
        ));
    }
}

/// `old` volume node affinity with each requirement key renamed to its GA
/// label where `new` renamed it so: the one change allowed to a set affinity.
fn ga_labelled(old: &Value, new: &Value) -> Value {
    let mut masked = old.clone();
    let terms_ptr = "/required/nodeSelectorTerms";
    let Some(terms) = masked.pointer_mut(terms_ptr).and_then(Value::as_array_mut) else {
        return masked;
    };
    for (i, term) in terms.iter_mut().enumerate() {
        let Some(exprs) = term
            .get_mut("matchExpressions")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for (j, expr) in exprs.iter_mut().enumerate() {
            let new_key = new
                .pointer(&format!("{terms_ptr}/{i}/matchExpressions/{j}/key"))
                .and_then(Value::as_str);
            let old_key = str_of(expr, "key");
            if let Some(new_key) = new_key
                && BETA_TO_GA_LABELS.contains(&(old_key, new_key))
            {
                expr["key"] = Value::from(new_key);
            }
        }
    }
    masked
}

/// Validates a `PersistentVolumeClaimSpec` (claims, StatefulSet claim
/// templates and ephemeral volumes).
pub(crate) fn validate_pvc_spec(errs: &mut Vec<FieldError>, spec: &Value, path: &Path) {
    require_access_modes(errs, spec, path, "at least 1 access mode is required");
    let selector = get(spec, "selector");
    if !selector.is_null() {
        validate_label_selector(errs, selector, &path.child("selector"));
    }
    validate_access_modes(errs, spec, path);
    let storage_path = path.child("resources").key("storage");
    match get(get(spec, "resources"), "requests").get("storage") {
        None => errs.push(required(&storage_path, "")),
        Some(v) => {
            if let Some(q) = quantity_at(errs, &storage_path, v) {
                positive(errs, &storage_path, q);
            }
        }
    }
    validate_class_name(errs, spec, "storageClassName", path);
    supported_if_set(errs, spec, "volumeMode", path, VOLUME_MODES);
    validate_class_name(errs, spec, "volumeAttributesClassName", path);
}

/// `PersistentVolumeClaim`
pub(crate) fn validate_pvc(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    validate_pvc_spec(errs, get(obj, "spec"), &Path::new("spec"));
    if let Some(old) = old {
        validate_pvc_update(errs, obj, old);
    }
}

/// The claim's beta storage-class annotation, if set.
fn beta_class(obj: &Value) -> Option<&str> {
    get(get(obj, "metadata"), "annotations")
        .get(BETA_STORAGE_CLASS_ANNOTATION)
        .and_then(Value::as_str)
}

/// The claim's `spec.storageClassName`; `None` is upstream's nil, distinct
/// from an explicit `""` (which asks for no class at all).
fn class_field(spec: &Value) -> Option<&str> {
    spec.get("storageClassName").and_then(Value::as_str)
}

/// What may change in a claim's spec: see the module docs.
fn validate_pvc_update(errs: &mut Vec<FieldError>, obj: &Value, old: &Value) {
    let spec = get(obj, "spec");
    let old_spec = get(old, "spec");
    let mut new_masked = spec.clone();
    let mut old_masked = old_spec.clone();
    let set = |v: &mut Value, key: &str, value: Option<&Value>| {
        if let Some(m) = v.as_object_mut() {
            match value {
                Some(value) => m.insert(key.to_string(), value.clone()),
                None => m.remove(key),
            };
        }
    };

    // Binding fills in the volume name once.
    if str_of(old_spec, "volumeName").is_empty() {
        set(&mut old_masked, "volumeName", spec.get("volumeName"));
    }

    let (old_ann, new_ann) = (beta_class(old), beta_class(obj));
    let (old_class, new_class) = (class_field(old_spec), class_field(spec));
    let from_annotation = old_ann.is_some()
        && old_class.is_none()
        && new_class.is_some()
        && new_class == old_ann
        && (new_ann.is_none() || new_ann == old_ann);
    if from_annotation {
        set(&mut new_masked, "storageClassName", None);
    } else {
        if new_ann != old_ann {
            errs.push(invalid(
                &Path::new("metadata")
                    .child("annotations")
                    .child(BETA_STORAGE_CLASS_ANNOTATION),
                new_ann.unwrap_or(""),
                "field is immutable",
            ));
        }
        // A claim created without a class may be given one.
        let from_nil = old_class.is_none()
            && new_class.is_some()
            && (old_ann.is_none() || new_class == old_ann);
        if from_nil {
            set(&mut new_masked, "storageClassName", None);
        }
    }

    // A bound claim may change its request (expansion); the status is the
    // stored one on a spec write.
    if str_of(get(obj, "status"), "phase") == "Bound"
        && let Some(requests) = new_masked
            .get_mut("resources")
            .and_then(|r| r.get_mut("requests"))
    {
        let old_storage = get(get(old_spec, "resources"), "requests").get("storage");
        set(requests, "storage", old_storage);
    }
    let old_attributes = old_spec.get("volumeAttributesClassName");
    set(&mut new_masked, "volumeAttributesClassName", old_attributes);
    same_quantities_as(&mut new_masked, &old_masked);

    if !same(&new_masked, &old_masked) {
        errs.push(forbidden(
            &Path::new("spec"),
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }

    // Shrinking is allowed only back towards what was really allocated, to
    // recover from a failed expansion.
    let new_size = requested_storage(spec);
    let old_size = requested_storage(old_spec);
    let allocated = storage_in(get(get(old, "status"), "capacity"));
    if new_size < old_size && new_size <= allocated {
        errs.push(forbidden(
            &Path::new("spec")
                .child("resources")
                .child("requests")
                .child("storage"),
            "field can not be less than status.capacity",
        ));
    }

    immutable(
        errs,
        &Path::new("volumeMode"),
        get(spec, "volumeMode"),
        get(old_spec, "volumeMode"),
    );

    if has(old_spec, "volumeAttributesClassName") {
        let path = Path::new("spec").child("volumeAttributesClassName");
        match spec
            .get("volumeAttributesClassName")
            .and_then(Value::as_str)
        {
            None => errs.push(forbidden(
                &path,
                "update from non-nil value to nil is forbidden",
            )),
            Some("") => errs.push(forbidden(
                &path,
                "update from non-nil value to an empty string is forbidden",
            )),
            Some(_) => {}
        }
    }
}

/// Spells each quantity of `spec`'s resource requests and limits as `old`
/// does where the two are equal in value, so that `1Gi` and `1024Mi` are no
/// change (upstream compares quantities by value).
fn same_quantities_as(spec: &mut Value, old: &Value) {
    for list in ["requests", "limits"] {
        let Some(entries) = spec
            .get_mut("resources")
            .and_then(|r| r.get_mut(list))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (name, value) in entries.iter_mut() {
            let was = get(get(get(old, "resources"), list), name);
            let parse = |v: &Value| v.as_str().and_then(|s| s.parse::<Quantity>().ok());
            if let (Some(is), Some(was_q)) = (parse(value), parse(was))
                && is == was_q
            {
                *value = was.clone();
            }
        }
    }
}

/// `StorageClass`
pub(crate) fn validate_storage_class(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let provisioner = str_of(obj, "provisioner");
    let pp = Path::new("provisioner");
    if provisioner.is_empty() {
        errs.push(required(&pp, ""));
    } else {
        invalid_each(
            errs,
            &pp,
            provisioner,
            qualified_name_errors(&provisioner.to_lowercase()),
        );
    }
    validate_class_parameters(errs, map_of(obj, "parameters"));
    one_of(
        errs,
        obj,
        "reclaimPolicy",
        &Path::default(),
        CLASS_RECLAIM_POLICIES,
    );
    match obj.get("volumeBindingMode").and_then(Value::as_str) {
        None => errs.push(required(&Path::new("volumeBindingMode"), "")),
        Some(mode) if !BINDING_MODES.contains(&mode) => errs.push(not_supported(
            &Path::new("volumeBindingMode"),
            mode,
            BINDING_MODES,
        )),
        Some(_) => {}
    }
    if let Some(old) = old {
        for (key, msg) in [
            ("parameters", "updates to parameters are forbidden."),
            ("provisioner", "updates to provisioner are forbidden."),
            ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
        ] {
            if !same(get(obj, key), get(old, key)) {
                errs.push(forbidden(&Path::new(key), msg));
            }
        }
        immutable(
            errs,
            &Path::new("volumeBindingMode"),
            get(obj, "volumeBindingMode"),
            get(old, "volumeBindingMode"),
        );
    }
}

/// A class's provisioner parameters: at most 512 of them, 256 KiB in all,
/// no empty key.
fn validate_class_parameters(errs: &mut Vec<FieldError>, params: &serde_json::Map<String, Value>) {
    let path = Path::new("parameters");
    if params.len() > MAX_CLASS_PARAMETERS {
        errs.push(too_long(&path, MAX_CLASS_PARAMETERS));
        return;
    }
    let mut size = 0;
    for (key, value) in params {
        if key.is_empty() {
            errs.push(invalid(&path, key.as_str(), "field can not be empty."));
        }
        size += key.len() + value.as_str().map_or(0, str::len);
    }
    if size > MAX_CLASS_PARAMETERS_SIZE {
        errs.push(too_long(&path, MAX_CLASS_PARAMETERS_SIZE));
    }
}

#[cfg(test)]
mod tests;
