//! Provisioning and reclaiming against a small in-memory API server behind
//! `kube::Client::new`, with volume directories in a tempdir.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use serde_json::{Value, json};

use super::*;

/// Objects by their API path, the request log, and failures to inject.
#[derive(Default)]
struct FakeApi {
    objects: BTreeMap<String, Value>,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
    /// Bodies of created events, in order.
    events: Vec<Value>,
    /// `(METHOD path, code)`: the next such request fails with `code`.
    fail: Vec<(String, u16)>,
    revision: u64,
}

const CLAIM: &str = "/api/v1/namespaces/ns/persistentvolumeclaims/data";
const VOLUMES: &str = "/api/v1/persistentvolumes";
const VOLUME: &str = "/api/v1/persistentvolumes/pvc-1234";
const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";

impl FakeApi {
    fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let request = format!("{method} {path}");
        self.log.push(request.clone());
        if let Some(i) = self.fail.iter().position(|(r, _)| *r == request) {
            let (_, code) = self.fail.remove(i);
            return (code, status(code));
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match method {
            "POST" => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if self.objects.contains_key(&key) {
                    return (409, status(409));
                }
                if path.ends_with("/events") {
                    self.events.push(body.clone());
                }
                let mut object = body.clone();
                if object["metadata"]["uid"].is_null() {
                    object["metadata"]["uid"] = json!(format!("uid-{name}"));
                }
                self.bump(&mut object);
                self.objects.insert(key, object.clone());
                (201, object)
            }
            "GET" => match self.objects.get(path) {
                Some(object) => (200, object.clone()),
                None => (404, status(404)),
            },
            "PATCH" => {
                // A status patch changes the object it is the status of.
                let path = path.strip_suffix("/status").unwrap_or(path);
                let Some(mut current) = self.objects.get(path).cloned() else {
                    return (404, status(404));
                };
                let wanted = &body["metadata"]["resourceVersion"];
                if !wanted.is_null() && *wanted != current["metadata"]["resourceVersion"] {
                    return (409, status(409));
                }
                merge(&mut current, &body);
                self.bump(&mut current);
                self.objects.insert(path.to_string(), current.clone());
                (200, current)
            }
            "DELETE" => match self.objects.remove(path) {
                Some(object) => (200, object),
                None => (404, status(404)),
            },
            _ => (405, status(405)),
        }
    }

    fn bump(&mut self, object: &mut Value) {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
    }

    fn count(&self, request: &str) -> usize {
        self.log.iter().filter(|r| *r == request).count()
    }

    /// Requests writing events (creates and aggregating patches).
    fn event_writes(&self) -> usize {
        self.log.iter().filter(|r| r.contains("/events")).count()
    }
}

fn status(code: u16) -> Value {
    let reason = match code {
        404 => "NotFound",
        409 => "AlreadyExists",
        _ => "InternalError",
    };
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": code, "message": format!("{reason} ({code})") })
}

/// RFC 7396 merge.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge(&mut target[key.as_str()], value);
        }
    }
}

fn client(api: &Arc<Mutex<FakeApi>>) -> kube::Client {
    let api = api.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let api = api.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.map_err(Box::new)?;
            let (code, value) = api.lock().expect("fake api lock").handle(
                parts.method.as_str(),
                parts.uri.path(),
                &bytes,
            );
            let response = Response::builder()
                .status(StatusCode::from_u16(code).expect("valid status code"))
                .header("content-type", "application/json")
                .body(Body::from(value.to_string().into_bytes()))
                .expect("valid response");
            Ok::<_, Box<kube::Error>>(response)
        }
    });
    kube::Client::new(service, "default")
}

struct Fixture {
    api: Arc<Mutex<FakeApi>>,
    ctx: Context,
    classes: Writer<StorageClass>,
    storage: PathBuf,
    root: tempfile::TempDir,
}

impl Fixture {
    fn new(immediate: bool) -> Self {
        let api = Arc::new(Mutex::new(FakeApi::default()));
        let root = tempfile::tempdir().expect("tempdir");
        let storage = root.path().join("storage");
        let mut config = ProvisionerConfig::new("node-a", &storage);
        config.immediate = immediate;
        let (reader, classes) = reflector::store();
        let ctx = Context::new(client(&api), config, reader);
        Self {
            api,
            ctx,
            classes,
            storage,
            root,
        }
    }

    fn api(&self) -> std::sync::MutexGuard<'_, FakeApi> {
        self.api.lock().expect("fake api lock")
    }

    fn store(&self, path: &str, object: Value) {
        self.api().objects.insert(path.to_string(), object);
    }

    fn add_class(&mut self, class: &StorageClass) {
        self.classes
            .apply_watcher_event(&watcher::Event::Apply(class.clone()));
    }

    /// Waits until `n` events were created, then a little longer to catch
    /// any extra one, and returns `(type, reason, message)` of each.
    async fn events(&self, n: usize) -> Vec<(String, String, String)> {
        for _ in 0..500 {
            if self.api().events.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.api()
            .events
            .iter()
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (field("type"), field("reason"), field("message"))
            })
            .collect()
    }

    fn volume_dir(&self) -> PathBuf {
        self.storage.join("pvc-1234_ns_data")
    }
}

fn class(mode: &str, reclaim: &str) -> StorageClass {
    serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": { "name": "local-path" },
        "provisioner": PROVISIONER,
        "reclaimPolicy": reclaim,
        "volumeBindingMode": mode,
    }))
    .expect("class")
}

fn claim_json(annotations: Value, access_mode: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "data", "namespace": "ns", "uid": "1234", "resourceVersion": "1",
            "annotations": annotations,
        },
        "spec": {
            "storageClassName": "local-path",
            "accessModes": [access_mode],
            "resources": { "requests": { "storage": "1Gi" } },
        },
    })
}

fn claim(annotations: Value) -> PersistentVolumeClaim {
    serde_json::from_value(claim_json(annotations, "ReadWriteOnce")).expect("claim")
}

fn selected() -> PersistentVolumeClaim {
    claim(json!({ ANN_SELECTED_NODE: "node-a" }))
}

/// A Released volume this provisioner made on node-a, at `path`.
fn released(path: &Path, reclaim: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": "pvc-1234", "uid": "pv-uid",
            "annotations": { "pv.kubernetes.io/provisioned-by": PROVISIONER },
        },
        "spec": {
            "hostPath": { "path": path, "type": "DirectoryOrCreate" },
            "persistentVolumeReclaimPolicy": reclaim,
            "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"] },
            ]}]}},
        },
        "status": { "phase": "Released" },
    }))
    .expect("volume")
}

#[tokio::test]
async fn the_default_class_is_created_once_and_user_edits_are_kept() {
    let f = Fixture::new(false);
    assert!(
        class::ensure_class(&f.ctx.client, "local-path")
            .await
            .expect("ensure")
    );
    let key = format!("{CLASSES}/local-path");
    let created = f.api().objects[&key].clone();
    assert_eq!(created["provisioner"], "rancher.io/local-path");
    assert_eq!(created["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(created["reclaimPolicy"], "Delete");
    assert_eq!(
        created["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );

    // The user makes it Retain and not the default.
    let mut edited = created;
    edited["reclaimPolicy"] = json!("Retain");
    edited["metadata"]["annotations"] = json!({});
    f.store(&key, edited.clone());
    assert!(
        !class::ensure_class(&f.ctx.client, "local-path")
            .await
            .expect("ensure")
    );
    let api = f.api();
    assert_eq!(api.objects[&key], edited);
    assert_eq!(api.count(&format!("POST {CLASSES}")), 1);
    assert!(
        !api.log
            .iter()
            .any(|r| r.starts_with("PUT") || r.starts_with("PATCH")),
        "{:?}",
        api.log
    );
}

#[tokio::test]
async fn a_class_created_by_another_agent_meanwhile_is_fine() {
    let f = Fixture::new(false);
    f.api().fail.push((format!("POST {CLASSES}"), 409));
    assert!(
        !class::ensure_class(&f.ctx.client, "local-path")
            .await
            .expect("ensure")
    );
}

#[tokio::test]
async fn a_claim_selected_for_this_node_gets_a_directory_and_a_volume() {
    let f = Fixture::new(false);
    let retain = class("WaitForFirstConsumer", "Retain");
    f.ctx
        .provision(&selected(), &retain)
        .await
        .expect("provision");

    let dir = f.volume_dir();
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o777);

    let pv = f.api().objects[VOLUME].clone();
    assert_eq!(pv["spec"]["hostPath"]["path"], json!(dir));
    assert_eq!(pv["spec"]["hostPath"]["type"], "DirectoryOrCreate");
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["claimRef"]["uid"], "1234");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "ns");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["node-a"])
    );
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        PROVISIONER
    );

    let events = f.events(2).await;
    assert_eq!(
        events,
        vec![
            (
                "Normal".to_string(),
                "Provisioning".to_string(),
                "External provisioner is provisioning volume for claim \"ns/data\"".to_string()
            ),
            (
                "Normal".to_string(),
                "ProvisioningSucceeded".to_string(),
                "Successfully provisioned volume pvc-1234".to_string()
            ),
        ]
    );
    let event = f.api().events[0].clone();
    assert_eq!(event["involvedObject"]["kind"], "PersistentVolumeClaim");
    assert_eq!(event["involvedObject"]["uid"], "1234");
    assert_eq!(event["source"]["component"], "rancher.io/local-path_node-a");

    // Seen again (the claim is not bound yet): the volume is not duplicated.
    let writes = f.api().event_writes();
    f.ctx.provision(&selected(), &retain).await.expect("again");
    f.events(2).await;
    let api = f.api();
    assert_eq!(api.count(&format!("POST {VOLUMES}")), 1);
    assert_eq!(api.event_writes(), writes);
}

#[tokio::test]
async fn a_volume_saved_by_a_lost_attempt_is_reused() {
    let f = Fixture::new(false);
    let wffc = class("WaitForFirstConsumer", "Delete");
    f.ctx.provision(&selected(), &wffc).await.expect("first");
    // The cache did not show it: the create finds it and that is success.
    f.api().fail.push((format!("GET {VOLUME}"), 404));
    f.ctx.provision(&selected(), &wffc).await.expect("second");
    // Repeats of the same event are aggregated, not created again.
    let events = f.events(2).await;
    assert!(
        events.iter().all(|(kind, _, _)| kind == "Normal"),
        "{events:?}"
    );
    assert_eq!(f.api().count(&format!("POST {VOLUMES}")), 2);
    assert!(f.volume_dir().is_dir());
}

#[tokio::test]
async fn a_failed_save_is_reported_undone_and_then_retried() {
    let f = Fixture::new(false);
    let wffc = class("WaitForFirstConsumer", "Delete");
    f.api().fail.push((format!("POST {VOLUMES}"), 500));
    let error = f.ctx.provision(&selected(), &wffc).await;
    assert!(
        matches!(error, Err(ProvisionerError::Api { .. })),
        "{error:?}"
    );
    assert!(!f.volume_dir().exists(), "the empty directory is undone");
    let events = f.events(2).await;
    assert_eq!(events[1].0, "Warning");
    assert_eq!(events[1].1, "ProvisioningFailed");
    assert!(
        events[1]
            .2
            .starts_with("failed to provision volume with StorageClass \"local-path\": "),
        "{}",
        events[1].2
    );

    f.ctx.provision(&selected(), &wffc).await.expect("retry");
    assert!(f.volume_dir().is_dir());
    assert!(f.api().objects.contains_key(VOLUME));
}

#[tokio::test]
async fn an_unsupported_claim_gets_an_event_and_nothing_else() {
    let f = Fixture::new(false);
    let rwx: PersistentVolumeClaim = serde_json::from_value(claim_json(
        json!({ ANN_SELECTED_NODE: "node-a" }),
        "ReadWriteMany",
    ))
    .expect("claim");
    f.ctx
        .provision(&rwx, &class("WaitForFirstConsumer", "Delete"))
        .await
        .expect("provision");
    let events = f.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "ProvisioningFailed");
    assert!(events[0].2.contains("ReadWriteMany"), "{}", events[0].2);
    assert!(!f.storage.join("pvc-1234_ns_data").exists());
    assert_eq!(f.api().count(&format!("POST {VOLUMES}")), 0);
}

#[tokio::test]
async fn the_immediate_node_selects_itself_then_provisions() {
    let mut f = Fixture::new(true);
    f.add_class(&class("Immediate", "Delete"));
    let marked = claim(json!({ claim::ANN_STORAGE_PROVISIONER: PROVISIONER }));
    f.store(CLAIM, serde_json::to_value(&marked).expect("json"));
    f.ctx.reconcile_claim(&marked).await.expect("reconcile");
    let api = f.api();
    assert_eq!(
        api.objects[CLAIM]["metadata"]["annotations"][ANN_SELECTED_NODE],
        "node-a"
    );
    assert_eq!(api.objects[VOLUME]["spec"]["claimRef"]["uid"], "1234");
    drop(api);
    assert!(f.volume_dir().is_dir());
}

#[tokio::test]
async fn a_claim_changed_meanwhile_is_not_selected_by_a_stale_patch() {
    let mut f = Fixture::new(true);
    f.add_class(&class("Immediate", "Delete"));
    let marked = claim(json!({ claim::ANN_STORAGE_PROVISIONER: PROVISIONER }));
    let mut newer = serde_json::to_value(&marked).expect("json");
    newer["metadata"]["resourceVersion"] = json!("2");
    f.store(CLAIM, newer);
    let error = f.ctx.reconcile_claim(&marked).await;
    assert!(
        matches!(error, Err(ProvisionerError::Api { .. })),
        "{error:?}"
    );
    assert!(!f.api().objects.contains_key(VOLUME));
    assert!(!f.volume_dir().exists());
}

#[tokio::test]
async fn other_nodes_and_unknown_classes_do_nothing() {
    let mut f = Fixture::new(false);
    // No class in the cache yet.
    f.ctx.reconcile_claim(&selected()).await.expect("reconcile");
    f.add_class(&class("Immediate", "Delete"));
    let marked = claim(json!({ claim::ANN_STORAGE_PROVISIONER: PROVISIONER }));
    f.ctx.reconcile_claim(&marked).await.expect("reconcile");
    let elsewhere = claim(json!({ ANN_SELECTED_NODE: "node-b" }));
    f.ctx.reconcile_claim(&elsewhere).await.expect("reconcile");
    assert!(f.api().log.is_empty(), "{:?}", f.api().log);
    assert!(!f.storage.join("pvc-1234_ns_data").exists());
}

#[tokio::test]
async fn a_released_delete_volume_loses_its_directory_then_its_object() {
    let f = Fixture::new(false);
    let wffc = class("WaitForFirstConsumer", "Delete");
    f.ctx
        .provision(&selected(), &wffc)
        .await
        .expect("provision");
    let dir = f.volume_dir();
    std::fs::write(dir.join("counter"), "3").expect("write");
    let sibling = f.storage.join("pvc-5678_ns_other");
    std::fs::create_dir(&sibling).expect("sibling");

    f.ctx
        .reclaim(&released(&dir, "Delete"))
        .await
        .expect("reclaim");
    assert!(!dir.exists());
    assert!(sibling.exists());
    assert!(!f.api().objects.contains_key(VOLUME));
    assert_eq!(f.api().count(&format!("DELETE {VOLUME}")), 1);

    // Seen again before the object disappears from the cache: no error.
    f.ctx
        .reclaim(&released(&dir, "Delete"))
        .await
        .expect("again");
}

#[tokio::test]
async fn a_retained_volume_keeps_its_data() {
    let f = Fixture::new(false);
    let (dir, _) = dirs::create_volume_dir(&f.storage, "pvc-1234_ns_data").expect("create");
    std::fs::write(dir.join("counter"), "3").expect("write");
    f.ctx
        .reclaim(&released(&dir, "Retain"))
        .await
        .expect("reclaim");
    assert!(dir.join("counter").exists());
    assert!(f.api().log.is_empty(), "{:?}", f.api().log);
}

#[tokio::test]
async fn a_crafted_path_is_reported_and_nothing_is_deleted() {
    let f = Fixture::new(false);
    std::fs::create_dir_all(&f.storage).expect("storage");
    let outside = f.root.path().join("pvc-1234_ns_data");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("precious"), "keep").expect("write");
    let escaping = f.storage.join("..").join("pvc-1234_ns_data");

    for path in [outside.clone(), escaping, PathBuf::from("/")] {
        f.ctx
            .reclaim(&released(&path, "Delete"))
            .await
            .expect("reclaim");
    }
    assert!(outside.join("precious").exists());
    let events = f.events(3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    for (kind, reason, message) in &events {
        assert_eq!(kind, "Warning");
        assert_eq!(reason, "VolumeFailedDelete");
        assert!(
            message.starts_with("failed to delete volume pvc-1234: refusing to delete "),
            "{message}"
        );
    }
    let api = f.api();
    assert_eq!(api.count(&format!("DELETE {VOLUME}")), 0);
    assert_eq!(
        api.events[0]["involvedObject"]["kind"], "PersistentVolume",
        "the event is about the volume"
    );
}

/// A class of this provisioner that lets claims grow.
fn expandable() -> StorageClass {
    let mut grow = class("WaitForFirstConsumer", "Delete");
    grow.allow_volume_expansion = Some(true);
    grow
}

/// The claim bound to `pvc-1234` with 1Gi, now requesting `request`.
fn growing(request: &str) -> PersistentVolumeClaim {
    let mut c = claim_json(json!({ ANN_SELECTED_NODE: "node-a" }), "ReadWriteOnce");
    c["spec"]["volumeName"] = json!("pvc-1234");
    c["spec"]["resources"]["requests"]["storage"] = json!(request);
    c["status"] = json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"],
        "capacity": {"storage": "1Gi"}});
    serde_json::from_value(c).expect("claim")
}

/// Provisions the 1Gi volume of the claim and stores the claim as `claim`.
async fn provisioned(f: &Fixture, claim: &PersistentVolumeClaim) {
    f.ctx
        .provision(&selected(), &expandable())
        .await
        .expect("provision");
    f.events(2).await;
    f.api().events.clear();
    f.store(CLAIM, serde_json::to_value(claim).expect("json"));
}

#[tokio::test]
async fn a_claim_of_an_expandable_class_grows_its_volume_and_status() {
    let mut f = Fixture::new(false);
    f.add_class(&expandable());
    let claim = growing("3Gi");
    provisioned(&f, &claim).await;

    f.ctx.reconcile_claim(&claim).await.expect("expand");
    {
        let api = f.api();
        assert_eq!(api.objects[VOLUME]["spec"]["capacity"]["storage"], "3Gi");
        assert_eq!(
            api.objects[CLAIM]["status"],
            json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "3Gi"}, "allocatedResources": {"storage": "3Gi"}})
        );
        assert_eq!(api.count(&format!("PATCH {CLAIM}/status")), 2);
    }
    assert!(f.volume_dir().is_dir(), "the data stays where it was");
    let events = f.events(2).await;
    assert_eq!(
        events,
        vec![
            (
                "Normal".to_string(),
                "Resizing".to_string(),
                "External resizer is resizing volume pvc-1234".to_string()
            ),
            (
                "Normal".to_string(),
                "VolumeResizeSuccessful".to_string(),
                "Resize volume succeeded".to_string()
            ),
        ]
    );
    let event = f.api().events[0].clone();
    assert_eq!(event["involvedObject"]["kind"], "PersistentVolumeClaim");
    assert_eq!(
        event["source"]["component"],
        "external-resizer rancher.io/local-path"
    );

    // Seen again with its new status: nothing left to do.
    let resized: PersistentVolumeClaim =
        serde_json::from_value(f.api().objects[CLAIM].clone()).expect("claim");
    let writes = f.api().log.len();
    f.ctx.reconcile_claim(&resized).await.expect("again");
    assert_eq!(f.api().log.len(), writes);
}

#[tokio::test]
async fn a_failed_volume_update_is_reported_and_retried() {
    let mut f = Fixture::new(false);
    f.add_class(&expandable());
    let claim = growing("2Gi");
    provisioned(&f, &claim).await;
    f.api().fail.push((format!("PATCH {VOLUME}"), 500));

    let error = f.ctx.reconcile_claim(&claim).await;
    assert!(
        matches!(error, Err(ProvisionerError::Api { .. })),
        "{error:?}"
    );
    let events = f.events(2).await;
    assert_eq!(events[1].0, "Warning");
    assert_eq!(events[1].1, "VolumeResizeFailed");
    let in_progress = f.api().objects[CLAIM]["status"].clone();
    assert_eq!(
        in_progress["allocatedResourceStatuses"],
        json!({"storage": "ControllerResizeInProgress"})
    );
    assert_eq!(in_progress["conditions"][0]["type"], "Resizing");
    assert_eq!(in_progress["capacity"]["storage"], "1Gi");

    // The retry starts from the claim as it now is.
    let current: PersistentVolumeClaim =
        serde_json::from_value(f.api().objects[CLAIM].clone()).expect("claim");
    f.ctx.reconcile_claim(&current).await.expect("retry");
    let api = f.api();
    assert_eq!(api.objects[VOLUME]["spec"]["capacity"]["storage"], "2Gi");
    let status = &api.objects[CLAIM]["status"];
    assert_eq!(status["capacity"]["storage"], "2Gi");
    assert!(
        status.get("allocatedResourceStatuses").is_none(),
        "{status}"
    );
    assert!(status.get("conditions").is_none(), "{status}");
}

#[tokio::test]
async fn claims_of_a_class_without_expansion_are_not_grown() {
    let mut f = Fixture::new(false);
    f.add_class(&class("WaitForFirstConsumer", "Delete"));
    let claim = growing("3Gi");
    provisioned(&f, &claim).await;
    let requests = f.api().log.len();
    f.ctx.reconcile_claim(&claim).await.expect("reconcile");
    let api = f.api();
    assert_eq!(api.log.len(), requests, "{:?}", api.log);
    assert_eq!(api.objects[VOLUME]["spec"]["capacity"]["storage"], "1Gi");
}

#[tokio::test]
async fn a_stale_claim_is_not_marked_resizing() {
    let mut f = Fixture::new(false);
    f.add_class(&expandable());
    let claim = growing("3Gi");
    provisioned(&f, &claim).await;
    let mut newer = serde_json::to_value(&claim).expect("json");
    newer["metadata"]["resourceVersion"] = json!("99");
    f.store(CLAIM, newer);
    let error = f.ctx.reconcile_claim(&claim).await;
    assert!(
        matches!(error, Err(ProvisionerError::Api { .. })),
        "{error:?}"
    );
    assert_eq!(
        f.api().objects[VOLUME]["spec"]["capacity"]["storage"],
        "1Gi"
    );
}
