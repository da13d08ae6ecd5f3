use serde_json::{Value, json};

use super::*;
use crate::validation::KindCheck;
use crate::validation::field::testing;

fn run(check: KindCheck, obj: &Value, old: Option<&Value>) -> Vec<String> {
    testing::run(check, obj, old)
}

fn host_path_pv() -> Value {
    json!({"spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem",
        "hostPath": {"path": "/data/pv-1", "type": ""}}})
}

fn local_pv() -> Value {
    json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Delete", "volumeMode": "Filesystem",
        "local": {"path": "/mnt/disks/a"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}})
}

fn claim() -> Value {
    json!({"spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}})
}

/// `claim()` bound to `pv-1` with `capacity` allocated.
fn bound_claim(request: &str, capacity: &str) -> Value {
    let mut c = claim();
    c["spec"]["volumeName"] = json!("pv-1");
    c["spec"]["storageClassName"] = json!("local-path");
    c["spec"]["resources"]["requests"]["storage"] = json!(request);
    c["status"] = json!({"phase": "Bound", "capacity": {"storage": capacity}});
    c
}

#[test]
fn valid_volumes_pass() {
    assert!(run(validate_pv, &host_path_pv(), None).is_empty());
    assert!(run(validate_pv, &local_pv(), None).is_empty());
}

#[test]
fn volume_needs_modes_capacity_and_one_source() {
    assert_eq!(
        run(
            validate_pv,
            &json!({"spec": {"hostPath": {"path": "/d"}}}),
            None
        ),
        [
            "spec.accessModes: Required value",
            "spec.capacity: Required value",
            "spec.capacity: Unsupported value: null: supported values: \"storage\"",
        ]
    );
    let mut pv = host_path_pv();
    pv["spec"]["capacity"] = json!({"storage": "0", "cpu": "1"});
    pv["spec"]["accessModes"] = json!(["ReadWriteOncePod", "ReadOnlyMany", "Sometimes"]);
    assert_eq!(
        run(validate_pv, &pv, None),
        [
            "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
            "spec.capacity: Unsupported value: {\"cpu\":\"1\",\"storage\":\"0\"}: supported values: \"storage\"",
            "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
        ]
    );
    let mut negative = host_path_pv();
    negative["spec"]["capacity"]["storage"] = json!("-1Gi");
    assert_eq!(
        run(validate_pv, &negative, None),
        [
            "spec.capacity[storage]: Invalid value: -1073741824: must be a valid resource quantity",
            "spec.capacity[storage]: Invalid value: \"-1Gi\": must be greater than zero",
        ]
    );
    let mut none = host_path_pv();
    none["spec"].as_object_mut().unwrap().remove("hostPath");
    assert_eq!(
        run(validate_pv, &none, None),
        ["spec: Required value: must specify a volume type"]
    );
    let mut two = local_pv();
    two["spec"]["hostPath"] = json!({"path": "/x"});
    assert_eq!(
        run(validate_pv, &two, None),
        ["spec.local: Forbidden: may not specify more than 1 volume type"]
    );
}

#[test]
fn volume_paths_and_reclaim_policy() {
    let mut pv = host_path_pv();
    pv["spec"]["hostPath"]["path"] = json!("/data/../etc");
    pv["spec"]["persistentVolumeReclaimPolicy"] = json!("Recycled");
    assert_eq!(
        run(validate_pv, &pv, None),
        [
            "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Recycled\": supported values: \"Delete\", \"Recycle\", \"Retain\"",
            "spec.hostPath.path: Invalid value: \"/data/../etc\": must not contain '..'",
        ]
    );
    let mut root = host_path_pv();
    root["spec"]["hostPath"]["path"] = json!("//.");
    root["spec"]["persistentVolumeReclaimPolicy"] = json!("Recycle");
    assert_eq!(
        run(validate_pv, &root, None),
        [
            "spec.persistentVolumeReclaimPolicy: Forbidden: may not be 'recycle' for a hostPath mount of '/'"
        ]
    );
    // Recycle elsewhere is only deprecated, as upstream (a warning, not an error).
    let mut nfs = host_path_pv();
    nfs["spec"]["persistentVolumeReclaimPolicy"] = json!("Recycle");
    assert!(run(validate_pv, &nfs, None).is_empty());

    let mut local = local_pv();
    local["spec"]["local"]["path"] = json!("/mnt/../root");
    local["spec"]
        .as_object_mut()
        .unwrap()
        .remove("nodeAffinity");
    assert_eq!(
        run(validate_pv, &local, None),
        [
            "spec.local.path: Invalid value: \"/mnt/../root\": must not contain '..'",
            "spec.nodeAffinity: Required value: Local volume requires node affinity",
        ]
    );
    let mut empty_affinity = local_pv();
    empty_affinity["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": []}});
    assert_eq!(
        run(validate_pv, &empty_affinity, None),
        [
            "spec.nodeAffinity.required.nodeSelectorTerms: Required value: must have at least one node selector term"
        ]
    );
    empty_affinity["spec"]["nodeAffinity"] = json!({});
    assert_eq!(
        run(validate_pv, &empty_affinity, None),
        ["spec.nodeAffinity.required: Required value: must specify required node constraints"]
    );
}

#[test]
fn volume_class_mode_and_attributes_class() {
    let mut pv = host_path_pv();
    pv["spec"]["storageClassName"] = json!("Fast_Disks");
    pv["spec"]["volumeMode"] = json!("Raw");
    pv["spec"]["volumeAttributesClassName"] = json!("");
    let errs = run(validate_pv, &pv, None);
    assert!(errs[0].starts_with("spec.storageClassName: Invalid value: \"Fast_Disks\""));
    assert_eq!(
        errs[1..],
        [
            "spec.volumeMode: Unsupported value: \"Raw\": supported values: \"Block\", \"Filesystem\"",
            "spec.volumeAttributesClassName: Required value: an empty string is disallowed",
            "spec.csi: Required value: has to be specified when using volumeAttributesClassName",
        ]
    );
}

#[test]
fn volume_source_mode_and_affinity_are_immutable() {
    let old = local_pv();
    let mut moved = old.clone();
    moved["spec"]["local"]["path"] = json!("/mnt/disks/b");
    moved["spec"]["volumeMode"] = json!("Block");
    assert_eq!(
        run(validate_pv, &moved, Some(&old)),
        [
            "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
            "volumeMode: Invalid value: \"Block\": field is immutable",
        ]
    );
    let mut rehomed = old.clone();
    rehomed["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] =
        json!(["n2"]);
    let errs = run(validate_pv, &rehomed, Some(&old));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("nodeAffinity: Invalid value: "));
    assert!(errs[0].ends_with(": field is immutable, except for updating from beta label to GA"));

    // Retargeting a beta label key to its GA name is the one change allowed.
    let mut beta = old.clone();
    beta["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] =
        json!("failure-domain.beta.kubernetes.io/zone");
    let mut ga = beta.clone();
    ga["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] =
        json!("topology.kubernetes.io/zone");
    assert!(run(validate_pv, &ga, Some(&beta)).is_empty());

    // Everything else may change: policy, class, claimRef, capacity.
    let mut edited = old.clone();
    edited["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
    edited["spec"]["capacity"]["storage"] = json!("2Gi");
    edited["spec"]["claimRef"] = json!({"namespace": "default", "name": "data"});
    assert!(run(validate_pv, &edited, Some(&old)).is_empty());

    // A volume without affinity may gain one.
    let bare = host_path_pv();
    let mut pinned = bare.clone();
    pinned["spec"]["nodeAffinity"] = old["spec"]["nodeAffinity"].clone();
    assert!(run(validate_pv, &pinned, Some(&bare)).is_empty());
}

#[test]
fn csi_volume_may_gain_an_expansion_secret_and_keeps_its_attributes_class() {
    let old = json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "csi": {"driver": "d.example.com", "volumeHandle": "h"},
        "volumeAttributesClassName": "gold"}});
    let mut new = old.clone();
    new["spec"]["csi"]["controllerExpandSecretRef"] = json!({"name": "s", "namespace": "ns"});
    assert!(run(validate_pv, &new, Some(&old)).is_empty());
    new["spec"]
        .as_object_mut()
        .unwrap()
        .remove("volumeAttributesClassName");
    assert_eq!(
        run(validate_pv, &new, Some(&old)),
        [
            "spec.volumeAttributesClassName: Forbidden: update from non-nil value to nil is forbidden"
        ]
    );
}

#[test]
fn claims_need_modes_and_positive_storage() {
    assert!(run(validate_pvc, &claim(), None).is_empty());
    assert_eq!(
        run(
            validate_pvc,
            &json!({"spec": {"accessModes": [], "resources": {"requests": {"cpu": "1"}}}}),
            None
        ),
        [
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value",
        ]
    );
    let mut c = claim();
    c["spec"]["accessModes"] = json!(["ReadWriteMany", "ReadWriteOncePod"]);
    c["spec"]["resources"]["requests"]["storage"] = json!("0");
    assert_eq!(
        run(validate_pvc, &c, None),
        [
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
            "spec.resources[storage]: Invalid value: \"0\": must be greater than zero",
        ]
    );
    c["spec"]["accessModes"] = json!(["Sometimes"]);
    c["spec"]["resources"]["requests"]["storage"] = json!("-1Gi");
    assert_eq!(
        run(validate_pvc, &c, None),
        [
            "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
            "spec.resources[storage]: Invalid value: \"-1Gi\": must be greater than zero",
        ]
    );
    c["spec"]["accessModes"] = json!(["ReadWriteOncePod"]);
    c["spec"]["resources"]["requests"]["storage"] = json!("lots");
    let errs = run(validate_pvc, &c, None);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("spec.resources[storage]: Invalid value: \"lots\": "));
}

#[test]
fn claim_spec_is_immutable_but_for_binding_and_class() {
    let old = claim();
    let mut modes = old.clone();
    modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_eq!(
        run(validate_pvc, &modes, Some(&old)),
        [
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
        ]
    );
    // The binder sets volumeName once; a class-less claim may get a class.
    let mut bound = old.clone();
    bound["spec"]["volumeName"] = json!("pv-1");
    bound["spec"]["storageClassName"] = json!("local-path");
    assert!(run(validate_pvc, &bound, Some(&old)).is_empty());
    let mut rebound = bound.clone();
    rebound["spec"]["volumeName"] = json!("pv-2");
    assert_eq!(run(validate_pvc, &rebound, Some(&bound)).len(), 1);
    let mut reclassed = bound.clone();
    reclassed["spec"]["storageClassName"] = json!("other");
    assert_eq!(run(validate_pvc, &reclassed, Some(&bound)).len(), 1);
    // An explicit "" is a class choice (no class), not nil.
    let mut no_class = old.clone();
    no_class["spec"]["storageClassName"] = json!("");
    let mut later = no_class.clone();
    later["spec"]["storageClassName"] = json!("local-path");
    assert_eq!(run(validate_pvc, &later, Some(&no_class)).len(), 1);
    // An unbound claim may not change its request, but may spell it anew.
    let mut bigger = old.clone();
    bigger["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert_eq!(run(validate_pvc, &bigger, Some(&old)).len(), 1);
    let mut respelled = old.clone();
    respelled["spec"]["resources"]["requests"]["storage"] = json!("1024Mi");
    assert!(run(validate_pvc, &respelled, Some(&old)).is_empty());
    respelled["spec"]["resources"]["requests"]["storage"] = json!("1073741824");
    assert!(run(validate_pvc, &respelled, Some(&old)).is_empty());
    let mut limited = old.clone();
    limited["spec"]["resources"]["limits"] = json!({"storage": "2Gi"});
    assert_eq!(
        run(validate_pvc, &limited, Some(&old)),
        [
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
        ]
    );
    let mut block = old.clone();
    block["spec"]["volumeMode"] = json!("Block");
    assert_eq!(
        run(validate_pvc, &block, Some(&old)),
        [
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            "volumeMode: Invalid value: \"Block\": field is immutable",
        ]
    );
}

#[test]
fn beta_class_annotation_may_become_the_field() {
    let mut old = claim();
    old["metadata"] = json!({"annotations": {BETA_STORAGE_CLASS_ANNOTATION: "gold"}});
    let mut new = old.clone();
    new["spec"]["storageClassName"] = json!("gold");
    assert!(run(validate_pvc, &new, Some(&old)).is_empty());
    new["spec"]["storageClassName"] = json!("silver");
    assert_eq!(run(validate_pvc, &new, Some(&old)).len(), 1);
    let mut dropped = old.clone();
    dropped["metadata"] = json!({});
    assert_eq!(
        run(validate_pvc, &dropped, Some(&old)),
        [
            "metadata.annotations.volume.beta.kubernetes.io/storage-class: Invalid value: \"\": field is immutable"
        ]
    );
}

#[test]
fn bound_claims_grow_and_shrink_only_to_their_capacity() {
    let old = bound_claim("1Gi", "1Gi");
    assert!(run(validate_pvc, &bound_claim("5Gi", "1Gi"), Some(&old)).is_empty());
    // Only the storage request may change: other requests and limits may not.
    let mut other = bound_claim("5Gi", "1Gi");
    other["spec"]["resources"]["limits"] = json!({"storage": "5Gi"});
    assert_eq!(
        run(validate_pvc, &other, Some(&old)),
        [
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
        ]
    );
    // The same size spelled otherwise is neither growth nor shrinking.
    assert!(run(validate_pvc, &bound_claim("1024Mi", "1Gi"), Some(&old)).is_empty());
    assert_eq!(
        run(validate_pvc, &bound_claim("500Mi", "1Gi"), Some(&old)),
        ["spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"]
    );
    // After a failed expansion to 10Gi, going back down above the capacity
    // recovers the claim.
    let failed = bound_claim("10Gi", "1Gi");
    assert!(run(validate_pvc, &bound_claim("2Gi", "1Gi"), Some(&failed)).is_empty());
    assert_eq!(
        run(validate_pvc, &bound_claim("1Gi", "1Gi"), Some(&failed)),
        ["spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"]
    );
}

#[test]
fn attributes_class_may_change_but_not_go_away() {
    let mut old = bound_claim("1Gi", "1Gi");
    old["spec"]["volumeAttributesClassName"] = json!("silver");
    let mut gold = old.clone();
    gold["spec"]["volumeAttributesClassName"] = json!("gold");
    assert!(run(validate_pvc, &gold, Some(&old)).is_empty());
    let mut empty = old.clone();
    empty["spec"]["volumeAttributesClassName"] = json!("");
    assert_eq!(
        run(validate_pvc, &empty, Some(&old)),
        [
            "spec.volumeAttributesClassName: Forbidden: update from non-nil value to an empty string is forbidden"
        ]
    );
    let mut gone = old.clone();
    gone["spec"]
        .as_object_mut()
        .unwrap()
        .remove("volumeAttributesClassName");
    assert_eq!(
        run(validate_pvc, &gone, Some(&old)),
        [
            "spec.volumeAttributesClassName: Forbidden: update from non-nil value to nil is forbidden"
        ]
    );
}

#[test]
fn storage_class_rules() {
    let sc = json!({"provisioner": "rancher.io/local-path", "parameters": {"a": "b"},
        "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
    assert!(run(validate_storage_class, &sc, None).is_empty());
    assert_eq!(
        run(validate_storage_class, &json!({}), None),
        [
            "provisioner: Required value",
            "volumeBindingMode: Required value"
        ]
    );
    let bad = json!({"provisioner": "rancher.io/local path", "parameters": {"": "x"},
        "reclaimPolicy": "Recycle", "volumeBindingMode": "Later"});
    let errs = run(validate_storage_class, &bad, None);
    assert!(errs[0].starts_with("provisioner: Invalid value: \"rancher.io/local path\""));
    assert_eq!(
        errs[1..],
        [
            "parameters: Invalid value: \"\": field can not be empty.",
            "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
            "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
        ]
    );
    let many: serde_json::Map<String, Value> =
        (0..513).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(
        run(
            validate_storage_class,
            &json!({"provisioner": "p.io/x", "parameters": many, "volumeBindingMode": "Immediate"}),
            None
        ),
        ["parameters: Too long: may not be more than 512 bytes"]
    );

    let mut changed = sc.clone();
    changed["parameters"]["a"] = json!("c");
    changed["provisioner"] = json!("example.com/other");
    changed["reclaimPolicy"] = json!("Retain");
    changed["volumeBindingMode"] = json!("Immediate");
    assert_eq!(
        run(validate_storage_class, &changed, Some(&sc)),
        [
            "parameters: Forbidden: updates to parameters are forbidden.",
            "provisioner: Forbidden: updates to provisioner are forbidden.",
            "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
            "volumeBindingMode: Invalid value: \"Immediate\": field is immutable",
        ]
    );
    let mut expandable = sc.clone();
    expandable["allowVolumeExpansion"] = json!(true);
    assert!(run(validate_storage_class, &expandable, Some(&sc)).is_empty());
}

#[test]
fn claim_templates_share_the_claim_spec_rules() {
    let mut errs = Vec::new();
    validate_pvc_spec(
        &mut errs,
        &json!({"accessModes": ["ReadWriteOnce"]}),
        &Path::new("spec")
            .child("volumeClaimTemplates")
            .index(0)
            .child("spec"),
    );
    assert_eq!(
        testing::lines(&errs),
        ["spec.volumeClaimTemplates[0].spec.resources[storage]: Required value"]
    );
}
