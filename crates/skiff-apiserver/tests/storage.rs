//! Storage through the HTTP API, over the in-memory store: the
//! DefaultStorageClass and StorageObjectInUseProtection admission plugins,
//! defaulting, upstream's 422s for volumes, claims and classes, the policies
//! (LimitRange, ResourceQuota, PersistentVolumeClaimResize) that refuse a
//! claim or its growth with 403, and the printed columns.

mod common;

use common::Api;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
const PVS: &str = "/api/v1/persistentvolumes";
const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";

impl Api {
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, "application/json", Value::Null).await
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, "application/json", body).await
    }

    async fn patch(&self, uri: &str, patch: Value) -> (StatusCode, Value) {
        self.call("PATCH", uri, "application/merge-patch+json", patch)
            .await
    }

    async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.call("DELETE", uri, "application/json", Value::Null)
            .await
    }

    /// `uri` listed as a `meta.k8s.io/v1` Table, as kubectl asks for it.
    async fn table(&self, uri: &str) -> Value {
        let (code, table) = self
            .request(
                "GET",
                uri,
                "application/json",
                Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
                Value::Null,
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{table}");
        table
    }

    /// Creates `obj` at `uri`, which must succeed.
    async fn created(&self, uri: &str, obj: Value) -> Value {
        let (code, body) = self.post(uri, obj).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        body
    }

    /// Creates `obj` at `uri`, which must be refused with `code`; returns the
    /// Status message.
    async fn refused(&self, uri: &str, obj: Value, code: StatusCode) -> String {
        let (got, body) = self.post(uri, obj).await;
        assert_eq!(got, code, "{body}");
        body["message"].as_str().unwrap_or_default().to_string()
    }
}

fn class(name: &str, default: bool) -> Value {
    let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "rancher.io/local-path"});
    if default {
        sc["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    sc
}

fn claim(name: &str, storage: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}})
}

fn host_path_volume(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": format!("/srv/{name}")}}})
}

#[tokio::test]
async fn claims_without_a_class_get_the_default_one() {
    let api = Api::new().await;
    let plain = api.created(PVCS, claim("before-any-class", "1Gi")).await;
    assert!(
        plain["spec"].get("storageClassName").is_none(),
        "no default class yet: {plain}"
    );

    api.created(CLASSES, class("slow", false)).await;
    api.created(CLASSES, class("local-path", true)).await;
    let defaulted = api.created(PVCS, claim("data", "1Gi")).await;
    assert_eq!(defaulted["spec"]["storageClassName"], "local-path");
    let (_, stored) = api.get(&format!("{PVCS}/data")).await;
    assert_eq!(stored["spec"]["storageClassName"], "local-path");

    let mut explicit = claim("explicit", "1Gi");
    explicit["spec"]["storageClassName"] = json!("slow");
    let explicit = api.created(PVCS, explicit).await;
    assert_eq!(explicit["spec"]["storageClassName"], "slow");

    // "" asks for a volume of no class: it is not defaulted.
    let mut none = claim("no-class", "1Gi");
    none["spec"]["storageClassName"] = json!("");
    let none = api.created(PVCS, none).await;
    assert_eq!(none["spec"]["storageClassName"], "");

    // Nor is a claim naming its class by the beta annotation.
    let mut beta = claim("beta", "1Gi");
    beta["metadata"]["annotations"] = json!({"volume.beta.kubernetes.io/storage-class": "slow"});
    let beta = api.created(PVCS, beta).await;
    assert!(beta["spec"].get("storageClassName").is_none(), "{beta}");

    // A dry run is defaulted too, and leaves nothing behind.
    let (code, dry) = api
        .post(&format!("{PVCS}?dryRun=All"), claim("dry", "1Gi"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{dry}");
    assert_eq!(dry["spec"]["storageClassName"], "local-path");
    assert_eq!(
        api.get(&format!("{PVCS}/dry")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn of_several_default_classes_the_newest_wins() {
    let api = Api::new().await;
    api.created(CLASSES, class("a-older", true)).await;
    // Creation timestamps have a resolution of one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.created(CLASSES, class("z-newer", true)).await;
    let pvc = api.created(PVCS, claim("data", "1Gi")).await;
    assert_eq!(pvc["spec"]["storageClassName"], "z-newer");

    // Unmarking the newer one hands the role back.
    let (code, body) = api
        .patch(
            &format!("{CLASSES}/z-newer"),
            json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "false"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let pvc = api.created(PVCS, claim("more", "1Gi")).await;
    assert_eq!(pvc["spec"]["storageClassName"], "a-older");
}

#[tokio::test]
async fn claims_and_volumes_are_protected_by_finalizers() {
    let api = Api::new().await;
    let pvc = api.created(PVCS, claim("data", "1Gi")).await;
    assert_eq!(
        pvc["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
    let mut own = host_path_volume("pv-1");
    own["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let pv = api.created(PVS, own).await;
    assert_eq!(
        pv["metadata"]["finalizers"],
        json!(["example.com/keep", "kubernetes.io/pv-protection"])
    );

    // Deleting only marks the claim: the protection controller lets it go.
    let (code, deleting) = api.delete(&format!("{PVCS}/data")).await;
    assert_eq!(code, StatusCode::OK, "{deleting}");
    let (code, held) = api.get(&format!("{PVCS}/data")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let (code, body) = api
        .patch(
            &format!("{PVCS}/data"),
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        api.get(&format!("{PVCS}/data")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn volumes_claims_and_classes_are_defaulted() {
    let api = Api::new().await;
    let pv = api.created(PVS, host_path_volume("pv-1")).await;
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["status"]["phase"], "Pending");

    let pvc = api.created(PVCS, claim("data", "1Gi")).await;
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");

    let sc = api.created(CLASSES, class("local-path", true)).await;
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");
}

#[tokio::test]
async fn bad_claims_are_refused_with_upstreams_422s() {
    let api = Api::new().await;
    let mut modes = claim("modes", "1Gi");
    modes["spec"]["accessModes"] = json!(["ReadWriteSometimes"]);
    assert_eq!(
        api.refused(PVCS, modes, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolumeClaim \"modes\" is invalid: spec.accessModes: Unsupported value: \"ReadWriteSometimes\": \
supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""
    );
    let mut mixed = claim("mixed", "1Gi");
    mixed["spec"]["accessModes"] = json!(["ReadWriteOncePod", "ReadOnlyMany"]);
    assert_eq!(
        api.refused(PVCS, mixed, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolumeClaim \"mixed\" is invalid: spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"
    );
    let mut empty = claim("empty", "0");
    empty["spec"]["accessModes"] = json!([]);
    assert_eq!(
        api.refused(PVCS, empty, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolumeClaim \"empty\" is invalid: [spec.accessModes: Required value: at least 1 access mode is required, \
spec.resources[storage]: Invalid value: \"0\": must be greater than zero]"
    );
    let mut no_size = claim("unsized", "1Gi");
    no_size["spec"]["resources"] = json!({});
    assert_eq!(
        api.refused(PVCS, no_size, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolumeClaim \"unsized\" is invalid: spec.resources[storage]: Required value"
    );
    // Nothing refused was stored, nor does the class default apply first.
    let (_, list) = api.get(PVCS).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_claim_spec_only_grows_once_bound() {
    let api = Api::new().await;
    let mut expandable = class("local-path", true);
    expandable["allowVolumeExpansion"] = json!(true);
    api.created(CLASSES, expandable).await;
    api.created(PVCS, claim("data", "1Gi")).await;
    let uri = format!("{PVCS}/data");

    let (code, refused) = api
        .patch(&uri, json!({"spec": {"accessModes": ["ReadWriteMany"]}}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["message"],
        "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation \
except resources.requests and volumeAttributesClassName for bound claims"
    );
    let (code, _) = api
        .patch(
            &uri,
            json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an unbound claim keeps its request"
    );

    // The binder fills in the volume once and reports the claim bound.
    let (code, body) = api
        .patch(&uri, json!({"spec": {"volumeName": "pv-1"}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api
        .patch(
            &format!("{uri}/status"),
            json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = api
        .patch(&uri, json!({"spec": {"volumeName": "pv-2"}}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    let (code, grown) = api
        .patch(
            &uri,
            json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{grown}");
    assert_eq!(grown["spec"]["resources"]["requests"]["storage"], "5Gi");
    let (code, shrunk) = api
        .patch(
            &uri,
            json!({"spec": {"resources": {"requests": {"storage": "512Mi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{shrunk}");
    assert_eq!(
        shrunk["message"],
        "PersistentVolumeClaim \"data\" is invalid: spec.resources.requests.storage: Forbidden: \
field can not be less than status.capacity"
    );
    // Back down, but not below what was allocated, recovers a failed expansion.
    let (code, body) = api
        .patch(
            &uri,
            json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// Creates `name` requesting `storage` of `class` and reports it bound
/// with `storage` allocated, as the binder would.
async fn bound_claim(api: &Api, name: &str, class: &str, storage: &str) -> String {
    let mut pvc = claim(name, storage);
    pvc["spec"]["storageClassName"] = json!(class);
    api.created(PVCS, pvc).await;
    let uri = format!("{PVCS}/{name}");
    let (code, body) = api
        .patch(&uri, json!({"spec": {"volumeName": format!("pv-{name}")}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api
        .patch(
            &format!("{uri}/status"),
            json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": storage}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    uri
}

fn grow_to(storage: &str) -> Value {
    json!({"spec": {"resources": {"requests": {"storage": storage}}}})
}

#[tokio::test]
async fn only_a_class_that_allows_expansion_lets_a_claim_grow() {
    let api = Api::new().await;
    api.created(CLASSES, class("local-path", true)).await;
    let mut gold = class("gold", false);
    gold["allowVolumeExpansion"] = json!(true);
    api.created(CLASSES, gold).await;

    let fixed = bound_claim(&api, "fixed", "local-path", "1Gi").await;
    let (code, refused) = api.patch(&fixed, grow_to("2Gi")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["reason"], "Forbidden");
    assert_eq!(
        refused["message"],
        "persistentvolumeclaims \"fixed\" is forbidden: only dynamically provisioned pvc can be \
resized and the storageclass that provisions the pvc must support resize"
    );
    // Other writes to the claim are not resizes.
    let (code, body) = api
        .patch(&fixed, json!({"metadata": {"labels": {"app": "db"}}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    let growing = bound_claim(&api, "growing", "gold", "1Gi").await;
    let (code, grown) = api.patch(&growing, grow_to("3Gi")).await;
    assert_eq!(code, StatusCode::OK, "{grown}");
    assert_eq!(grown["spec"]["resources"]["requests"]["storage"], "3Gi");

    // The class is read when the claim grows: made fixed, it refuses.
    let (code, body) = api
        .patch(
            &format!("{CLASSES}/gold"),
            json!({"allowVolumeExpansion": false}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, refused) = api.patch(&growing, grow_to("4Gi")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    // Lowering the request back, not below the capacity, needs no class.
    let (code, body) = api.patch(&growing, grow_to("2Gi")).await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // A class that does not exist allows nothing.
    let lost = bound_claim(&api, "lost", "missing", "1Gi").await;
    let (code, refused) = api.patch(&lost, grow_to("2Gi")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");

    // An unbound claim is refused by validation before admission: 422.
    api.created(PVCS, claim("pending", "1Gi")).await;
    let (code, refused) = api.patch(&format!("{PVCS}/pending"), grow_to("2Gi")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
}

#[tokio::test]
async fn limit_ranges_bound_claim_updates_in_what_they_change() {
    let api = Api::new().await;
    let mut gold = class("gold", true);
    gold["allowVolumeExpansion"] = json!(true);
    api.created(CLASSES, gold).await;
    let uri = bound_claim(&api, "data", "gold", "4Gi").await;
    let old = bound_claim(&api, "old", "gold", "20Gi").await;
    api.created(
        "/api/v1/namespaces/default/limitranges",
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "storage"},
            "spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "10Gi"}}]}}),
    )
    .await;

    let (code, refused) = api.patch(&uri, grow_to("12Gi")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(
        refused["message"],
        "persistentvolumeclaims \"data\" is forbidden: maximum storage usage per \
PersistentVolumeClaim is 10Gi, but request is 12Gi"
    );
    let (code, body) = api.patch(&uri, grow_to("10Gi")).await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // A claim stored before the range keeps working while its request stays.
    let (code, body) = api
        .patch(&old, json!({"metadata": {"labels": {"keep": "yes"}}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api
        .patch(
            &format!("{old}/status"),
            json!({"status": {"capacity": {"storage": "20Gi"}, "allocatedResources": {"storage": "20Gi"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, refused) = api.patch(&old, grow_to("30Gi")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
}

#[tokio::test]
async fn bad_volumes_are_refused_with_upstreams_422s() {
    let api = Api::new().await;
    let mut no_capacity = host_path_volume("no-capacity");
    no_capacity["spec"]
        .as_object_mut()
        .unwrap()
        .remove("capacity");
    assert_eq!(
        api.refused(PVS, no_capacity, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolume \"no-capacity\" is invalid: [spec.capacity: Required value, \
spec.capacity: Unsupported value: null: supported values: \"storage\"]"
    );
    let mut escape = host_path_volume("escape");
    escape["spec"]["hostPath"]["path"] = json!("/srv/../etc");
    assert_eq!(
        api.refused(PVS, escape, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolume \"escape\" is invalid: spec.hostPath.path: Invalid value: \"/srv/../etc\": must not contain '..'"
    );
    let mut two = host_path_volume("two");
    two["spec"]["nfs"] = json!({"server": "nfs.example.com", "path": "/exports"});
    assert_eq!(
        api.refused(PVS, two, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolume \"two\" is invalid: spec.nfs: Forbidden: may not specify more than 1 volume type"
    );
    let mut local = host_path_volume("local");
    local["spec"].as_object_mut().unwrap().remove("hostPath");
    local["spec"]["local"] = json!({"path": "/mnt/disks/a"});
    assert_eq!(
        api.refused(PVS, local.clone(), StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolume \"local\" is invalid: spec.nodeAffinity: Required value: Local volume requires node affinity"
    );
    let mut policy = host_path_volume("policy");
    policy["spec"]["persistentVolumeReclaimPolicy"] = json!("Keep");
    assert_eq!(
        api.refused(PVS, policy, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "PersistentVolume \"policy\" is invalid: spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": \
supported values: \"Delete\", \"Recycle\", \"Retain\""
    );

    // A pinned local volume is fine, and its source and node stay put.
    local["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}});
    api.created(PVS, local).await;
    let (code, refused) = api
        .patch(
            &format!("{PVS}/local"),
            json!({"spec": {"local": {"path": "/"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["message"],
        "PersistentVolume \"local\" is invalid: spec.persistentvolumesource: Forbidden: \
spec.persistentvolumesource is immutable after creation"
    );
    let (code, body) = api
        .patch(
            &format!("{PVS}/local"),
            json!({"spec": {"persistentVolumeReclaimPolicy": "Delete", "claimRef": {"namespace": "default", "name": "data"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn bad_classes_are_refused_and_classes_are_immutable() {
    let api = Api::new().await;
    let mut nameless = class("nameless", false);
    nameless.as_object_mut().unwrap().remove("provisioner");
    nameless["reclaimPolicy"] = json!("Recycle");
    nameless["volumeBindingMode"] = json!("Later");
    assert_eq!(
        api.refused(CLASSES, nameless, StatusCode::UNPROCESSABLE_ENTITY)
            .await,
        "StorageClass.storage.k8s.io \"nameless\" is invalid: [provisioner: Required value, \
reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\", \
volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"]"
    );

    let mut sc = class("local-path", true);
    sc["parameters"] = json!({"nodePath": "/opt"});
    api.created(CLASSES, sc).await;
    let uri = format!("{CLASSES}/local-path");
    let (code, refused) = api
        .patch(
            &uri,
            json!({"provisioner": "example.com/other", "parameters": {"nodePath": "/tmp"}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["message"],
        "StorageClass.storage.k8s.io \"local-path\" is invalid: [parameters: Forbidden: updates to parameters are forbidden., \
provisioner: Forbidden: updates to provisioner are forbidden.]"
    );
    let (code, refused) = api
        .patch(&uri, json!({"volumeBindingMode": "WaitForFirstConsumer"}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (code, body) = api.patch(&uri, json!({"allowVolumeExpansion": true})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_claim_larger_than_the_limit_range_allows_is_forbidden() {
    let api = Api::new().await;
    api.created(
        "/api/v1/namespaces/default/limitranges",
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "storage"},
            "spec": {"limits": [{"type": "PersistentVolumeClaim",
                "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]}}),
    )
    .await;
    assert_eq!(
        api.refused(PVCS, claim("big", "20Gi"), StatusCode::FORBIDDEN)
            .await,
        "persistentvolumeclaims \"big\" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
    );
    assert_eq!(
        api.refused(PVCS, claim("small", "500Mi"), StatusCode::FORBIDDEN)
            .await,
        "persistentvolumeclaims \"small\" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
    );
    api.created(PVCS, claim("fits", "10Gi")).await;
}

#[tokio::test]
async fn storage_quota_charges_the_defaulted_class() {
    let api = Api::new().await;
    api.created(CLASSES, class("local-path", true)).await;
    let quotas = "/api/v1/namespaces/default/resourcequotas";
    let hard = json!({"requests.storage": "10Gi",
        "local-path.storageclass.storage.k8s.io/requests.storage": "3Gi"});
    api.created(
        quotas,
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "storage"},
            "spec": {"hard": hard.clone()}}),
    )
    .await;
    let (code, body) = api
        .patch(
            &format!("{quotas}/storage/status"),
            json!({"status": {"hard": hard, "used": {"requests.storage": "0",
                "local-path.storageclass.storage.k8s.io/requests.storage": "0"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    api.created(PVCS, claim("a", "2Gi")).await;
    // The class came from DefaultStorageClass, before the quota looked.
    assert_eq!(
        api.refused(PVCS, claim("b", "2Gi"), StatusCode::FORBIDDEN)
            .await,
        "persistentvolumeclaims \"b\" is forbidden: exceeded quota: storage, \
requested: local-path.storageclass.storage.k8s.io/requests.storage=2Gi, \
used: local-path.storageclass.storage.k8s.io/requests.storage=2Gi, \
limited: local-path.storageclass.storage.k8s.io/requests.storage=3Gi"
    );
    let mut other = claim("c", "2Gi");
    other["spec"]["storageClassName"] = json!("");
    api.created(PVCS, other).await;
}

#[tokio::test]
async fn kubectl_get_shows_upstreams_columns() {
    let api = Api::new().await;
    api.created(CLASSES, class("local-path", true)).await;
    let mut slow = class("slow", false);
    slow["reclaimPolicy"] = json!("Retain");
    slow["volumeBindingMode"] = json!("WaitForFirstConsumer");
    slow["allowVolumeExpansion"] = json!(true);
    api.created(CLASSES, slow).await;
    let mut pv = host_path_volume("pv-1");
    pv["spec"]["storageClassName"] = json!("local-path");
    pv["spec"]["accessModes"] = json!(["ReadWriteOnce", "ReadOnlyMany"]);
    api.created(PVS, pv).await;
    api.created(PVCS, claim("data", "1Gi")).await;

    let names = |table: &Value| -> Vec<String> {
        table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect()
    };
    let cells = |table: &Value, row: usize| -> Vec<Value> {
        let cells = table["rows"][row]["cells"].as_array().unwrap();
        cells[..cells.len() - 1].to_vec()
    };

    let sc = api.table(CLASSES).await;
    assert_eq!(
        names(&sc),
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ]
    );
    assert_eq!(
        cells(&sc, 0),
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("Immediate"),
            json!(false)
        ]
    );
    assert_eq!(
        cells(&sc, 1),
        [
            json!("slow"),
            json!("rancher.io/local-path"),
            json!("Retain"),
            json!("WaitForFirstConsumer"),
            json!(true)
        ]
    );

    let pvs = api.table(PVS).await;
    assert_eq!(
        names(&pvs),
        [
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    let row = pvs["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        row[..9],
        [
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO,ROX"),
            json!("Retain"),
            json!("Pending"),
            json!(""),
            json!("local-path"),
            json!("<unset>"),
            json!("")
        ]
    );

    let pvcs = api.table(PVCS).await;
    assert_eq!(
        names(&pvcs),
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    let row = pvcs["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        row[..7],
        [
            json!("data"),
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!("local-path"),
            json!("<unset>")
        ]
    );
}

#[tokio::test]
async fn reapplying_a_claim_keeps_what_admission_added() {
    let api = Api::new().await;
    api.created(CLASSES, class("local-path", true)).await;
    let uri = format!("{PVCS}/data?fieldManager=kubectl");
    let apply = |labels: Value| {
        let mut c = claim("data", "1Gi");
        c["metadata"]["labels"] = labels;
        c
    };
    for (labels, code) in [
        (json!({"app": "db"}), StatusCode::CREATED),
        (json!({"app": "db", "tier": "data"}), StatusCode::OK),
    ] {
        let request = Request::builder()
            .method("PATCH")
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/apply-patch+yaml")
            .body(Body::from(apply(labels).to_string()))
            .unwrap();
        let response = api.router.clone().oneshot(request).await.unwrap();
        let got = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got, code, "{body}");
        assert_eq!(body["spec"]["storageClassName"], "local-path");
        assert_eq!(
            body["metadata"]["finalizers"],
            json!(["kubernetes.io/pvc-protection"])
        );
    }
}
