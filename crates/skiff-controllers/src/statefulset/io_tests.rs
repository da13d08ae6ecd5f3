//! One reconcile's traffic against a fake API server: the revision, claim,
//! pod, owner and status writes, and the events, in order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::client::Body;
use serde_json::Value;

use super::*;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_second(1_000).expect("valid time")
    }
}

#[derive(Debug, Clone)]
struct Write {
    method: String,
    path: String,
    body: Value,
}

/// Lists fixed objects per collection path, answers GETs of single objects
/// from `objects`, refuses creates at `taken` paths, holds watches open, and
/// records every write. Created objects come back with a UID.
#[derive(Default)]
struct Server {
    lists: HashMap<String, Vec<Value>>,
    objects: HashMap<String, Value>,
    taken: Vec<String>,
    writes: Vec<Write>,
}

fn failure(code: StatusCode, reason: &str) -> (StatusCode, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": reason, "reason": reason, "code": code.as_u16()});
    (code, body)
}

impl Server {
    fn answer(&mut self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        if method == "GET" {
            if let Some(items) = self.lists.get(path) {
                let list = json!({"kind": "List", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": "1"}, "items": items});
                return (StatusCode::OK, list);
            }
            return match self.objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => failure(StatusCode::NOT_FOUND, "NotFound"),
            };
        }
        self.writes.push(Write {
            method: method.to_string(),
            path: path.to_string(),
            body: body.clone(),
        });
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if method == "POST" && self.taken.contains(&format!("{path}/{name}")) {
            return failure(StatusCode::CONFLICT, "AlreadyExists");
        }
        if method == "DELETE" {
            return (
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1",
                                           "status": "Success", "code": 200}),
            );
        }
        let mut reply = body;
        reply["metadata"]["resourceVersion"] = json!("2");
        if method == "POST" {
            reply["metadata"]["uid"] = json!(format!("uid-{name}"));
        }
        (StatusCode::OK, reply)
    }
}

fn client(server: Arc<Mutex<Server>>) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let server = Arc::clone(&server);
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.map_err(Box::new)?;
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let method = parts.method.as_str().to_string();
            if method == "GET" && parts.uri.query().unwrap_or_default().contains("watch=true") {
                futures::future::pending::<()>().await;
            }
            let (code, reply) = server.lock().expect("server").answer(&method, &path, body);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(reply.to_string().into_bytes()))
                .expect("valid response");
            Ok::<_, Box<kube::Error>>(response)
        }
    });
    Client::new(service, "default")
}

const SETS: &str = "/apis/apps/v1/statefulsets";
const REVISIONS: &str = "/apis/apps/v1/controllerrevisions";
const NS_REVISIONS: &str = "/apis/apps/v1/namespaces/default/controllerrevisions";
const NS_CLAIMS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
const NS_PODS: &str = "/api/v1/namespaces/default/pods";
const WEB: &str = "/apis/apps/v1/namespaces/default/statefulsets/web";

fn set(image: &str) -> StatefulSet {
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("set-uid".into()),
            generation: Some(1),
            resource_version: Some("1".into()),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(2),
            service_name: Some("nginx".into()),
            revision_history_limit: Some(0),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "nginx".into(),
                        image: Some(image.into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("www".into()),
                    ..ObjectMeta::default()
                },
                ..PersistentVolumeClaim::default()
            }]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

fn server(set: &StatefulSet, revisions: Vec<Value>) -> Server {
    let mut server = Server::default();
    let set = serde_json::to_value(set).expect("serializable");
    server.lists.insert(SETS.into(), vec![set]);
    server.lists.insert(REVISIONS.into(), revisions);
    server.lists.insert("/api/v1/pods".into(), Vec::new());
    server
        .lists
        .insert("/api/v1/persistentvolumeclaims".into(), Vec::new());
    server
}

/// Runs the controller until it has settled and returns its writes.
async fn run(server: Server) -> Vec<Write> {
    let server = Arc::new(Mutex::new(server));
    let shutdown = CancellationToken::new();
    let client = client(Arc::clone(&server));
    let mut factory = InformerFactory::new(client.clone());
    let controller = start_with_clock(
        &mut factory,
        client,
        StatefulSetConfig::default(),
        Arc::new(FixedClock),
        shutdown.clone(),
    );
    let informers = tokio::spawn(factory.run(shutdown.clone()));
    let controller = tokio::spawn(controller);
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    controller.await.expect("controller");
    informers.await.expect("informers");
    server.lock().expect("server").writes.clone()
}

fn events(writes: &[Write]) -> Vec<(String, String)> {
    writes
        .iter()
        .filter(|w| w.path.ends_with("/events"))
        .map(|w| {
            let text = |key: &str| w.body[key].as_str().unwrap_or_default().to_string();
            (text("reason"), text("message"))
        })
        .collect()
}

fn others(writes: &[Write]) -> Vec<Write> {
    writes
        .iter()
        .filter(|w| !w.path.contains("/events"))
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_set_records_its_revision_then_creates_web_0_on_its_claim() {
    let set = set("nginx:1");
    let writes = run(server(&set, Vec::new())).await;
    let revision_name = format!("web-{}", revision::hash(&revision::patch_of(&set), 0));
    let [revision, claim, pod, owners, status] = others(&writes).try_into().unwrap_or_else(|w| {
        panic!("revision, claim, pod, owners and status expected, got {w:#?}");
    });

    assert_eq!(
        (revision.method.as_str(), revision.path.as_str()),
        ("POST", NS_REVISIONS)
    );
    assert_eq!(revision.body["metadata"]["name"], json!(revision_name));
    assert_eq!(revision.body["revision"], 1);
    assert_eq!(
        revision.body["data"]["spec"]["template"]["$patch"],
        "replace"
    );
    assert_eq!(
        revision.body["metadata"]["ownerReferences"][0]["uid"],
        "set-uid"
    );

    assert_eq!(
        (claim.method.as_str(), claim.path.as_str()),
        ("POST", NS_CLAIMS)
    );
    assert_eq!(claim.body["metadata"]["name"], "www-web-0");
    assert_eq!(claim.body["metadata"]["labels"]["app"], "web");

    assert_eq!((pod.method.as_str(), pod.path.as_str()), ("POST", NS_PODS));
    assert_eq!(pod.body["metadata"]["name"], "web-0");
    let labels = &pod.body["metadata"]["labels"];
    assert_eq!(labels["controller-revision-hash"], json!(revision_name));
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    assert_eq!(pod.body["spec"]["hostname"], "web-0");
    assert_eq!(pod.body["spec"]["subdomain"], "nginx");
    assert_eq!(
        pod.body["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "www-web-0"
    );

    // whenDeleted: Delete makes the set the claim's owner.
    assert_eq!(
        (owners.method.as_str(), owners.path.as_str()),
        ("PATCH", format!("{NS_CLAIMS}/www-web-0").as_str())
    );
    let refs = &owners.body["metadata"]["ownerReferences"];
    assert_eq!(refs.as_array().map(Vec::len), Some(1));
    assert_eq!(refs[0]["kind"], "StatefulSet");
    assert_eq!(refs[0]["uid"], "set-uid");

    assert_eq!(status.path, format!("{WEB}/status"));
    let status = &status.body["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["replicas"], 0);
    assert_eq!(status["currentRevision"], json!(revision_name));
    assert_eq!(status["updateRevision"], json!(revision_name));
    assert_eq!(status["collisionCount"], 0);

    assert_eq!(
        events(&writes),
        [
            (
                "SuccessfulCreate".to_string(),
                "create Claim www-web-0 Pod web-0 in StatefulSet web success".to_string()
            ),
            (
                "SuccessfulCreate".to_string(),
                "create Pod web-0 in StatefulSet web successful".to_string()
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_taken_revision_name_bumps_the_collision_count() {
    let set = set("nginx:1");
    let first = revision::new_revision(&set, 1, 0);
    let first_name = first.name_any();
    let mut server = server(&set, Vec::new());
    server.taken.push(format!("{NS_REVISIONS}/{first_name}"));
    // Someone else's revision, with another template, holds the name.
    let squatter = revision::new_revision(&self::set("busybox"), 1, 0);
    let mut squatter = serde_json::to_value(&squatter).expect("serializable");
    squatter["metadata"]["name"] = json!(first_name);
    server
        .objects
        .insert(format!("{NS_REVISIONS}/{first_name}"), squatter);
    let writes = others(&run(server).await);

    let second_name = revision::new_revision(&set, 1, 1).name_any();
    assert_ne!(first_name, second_name);
    assert_eq!(writes[0].body["metadata"]["name"], json!(first_name));
    assert_eq!(writes[1].body["metadata"]["name"], json!(second_name));
    let status = writes.last().expect("a status write");
    assert_eq!(status.body["status"]["collisionCount"], 1);
    assert_eq!(status.body["status"]["updateRevision"], json!(second_name));
}

#[tokio::test(start_paused = true)]
async fn a_new_template_records_revision_2_and_prunes_dead_history() {
    let old_set = set("nginx:1");
    let mut old = revision::new_revision(&old_set, 1, 0);
    old.metadata.resource_version = Some("1".into());
    let old_name = old.name_any();
    let set = set("nginx:2");
    let writes = others(
        &run(server(
            &set,
            vec![serde_json::to_value(&old).expect("json")],
        ))
        .await,
    );

    let created = &writes[0];
    assert_eq!(created.path, NS_REVISIONS);
    assert_eq!(created.body["revision"], 2);
    // revisionHistoryLimit 0: the old revision is neither current, update,
    // nor any pod's, so it goes after the status is written.
    let last = writes.last().expect("writes");
    assert_eq!(
        (last.method.as_str(), last.path.clone()),
        ("DELETE", format!("{NS_REVISIONS}/{old_name}"))
    );
}
