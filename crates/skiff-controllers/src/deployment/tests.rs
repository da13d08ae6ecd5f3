//! The controller's traffic against a fake API server: what it creates,
//! patches and reports for a few starting states.

use std::collections::HashMap;
use std::sync::Mutex;

use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use kube::client::Body;
use serde_json::{Value, json};

use super::fixtures::{at, deployment, rs, template};
use super::*;

struct FixedClock(Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// One request that was not a read.
#[derive(Debug, Clone)]
struct Write {
    method: String,
    path: String,
    body: Value,
}

/// Lists fixed objects per collection, answers GETs and PATCHes of single
/// objects from `objects`, refuses creates at `taken` paths with 409, holds
/// watches open, and records every write (events included).
#[derive(Default)]
struct Server {
    lists: HashMap<String, Vec<Value>>,
    objects: HashMap<String, Value>,
    taken: Vec<String>,
    writes: Vec<Write>,
}

fn client(server: Arc<Mutex<Server>>) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let server = Arc::clone(&server);
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.map_err(Box::new)?;
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or_default();
            let method = parts.method.as_str().to_string();
            if method == "GET" && query.contains("watch=true") {
                futures::future::pending::<()>().await;
            }
            let (code, reply) = {
                let mut server = server.lock().expect("server");
                match method.as_str() {
                    "GET" => match server.lists.get(&path) {
                        Some(items) => (
                            StatusCode::OK,
                            json!({"kind": "List", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": "1"}, "items": items}),
                        ),
                        None => match server.objects.get(&path) {
                            Some(object) => (StatusCode::OK, object.clone()),
                            None => (
                                StatusCode::NOT_FOUND,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "message": "not found", "reason": "NotFound", "code": 404}),
                            ),
                        },
                    },
                    _ => {
                        server.writes.push(Write {
                            method: method.clone(),
                            path: path.clone(),
                            body: body.clone(),
                        });
                        if method == "POST" && server.taken.contains(&path) {
                            (
                                StatusCode::CONFLICT,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "message": "already exists", "reason": "AlreadyExists",
                                       "code": 409}),
                            )
                        } else {
                            let object = path
                                .strip_suffix("/status")
                                .and_then(|p| server.objects.get(p))
                                .or_else(|| server.objects.get(&path))
                                .cloned();
                            let mut reply = object.unwrap_or(body);
                            reply["metadata"]["resourceVersion"] = json!("2");
                            (StatusCode::OK, reply)
                        }
                    }
                }
            };
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

const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const REPLICASETS: &str = "/apis/apps/v1/replicasets";
const WEB: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const NAMESPACED_REPLICASETS: &str = "/apis/apps/v1/namespaces/default/replicasets";

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    let mut value = serde_json::to_value(value).expect("serializable");
    value["metadata"]["resourceVersion"] = json!("1");
    value
}

fn server(d: &Deployment, sets: &[ReplicaSet]) -> Arc<Mutex<Server>> {
    let mut server = Server::default();
    server.lists.insert(DEPLOYMENTS.into(), vec![to_json(d)]);
    server
        .lists
        .insert(REPLICASETS.into(), sets.iter().map(to_json).collect());
    server.lists.insert("/api/v1/pods".into(), Vec::new());
    server.objects.insert(WEB.into(), to_json(d));
    Arc::new(Mutex::new(server))
}

/// Runs the controller for a while and returns its writes.
async fn run(server: Arc<Mutex<Server>>) -> Vec<Write> {
    let shutdown = CancellationToken::new();
    let client = client(Arc::clone(&server));
    let mut factory = InformerFactory::new(client.clone());
    let controller = start_with_clock(
        &mut factory,
        client,
        DeploymentConfig::default(),
        Arc::new(FixedClock(at(100))),
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
        .filter(|w| w.path.ends_with("/events") && w.method == "POST")
        .map(|w| {
            let text = |key: &str| w.body[key].as_str().unwrap_or_default().to_string();
            (text("reason"), text("message"))
        })
        .collect()
}

fn non_events(writes: &[Write]) -> Vec<Write> {
    writes
        .iter()
        .filter(|w| !w.path.contains("/events"))
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_deployment_gets_its_replica_set_revision_and_status() {
    let d = deployment("web", 3, "v1");
    let writes = run(server(&d, &[])).await;
    let hash = hash::pod_template_hash(&d.spec.template, None);
    let rs_name = format!("web-{hash}");
    let [create, revision, status] = non_events(&writes).try_into().unwrap_or_else(|w| {
        panic!("create, revision and status expected, got {w:#?}");
    });
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", NAMESPACED_REPLICASETS)
    );
    assert_eq!(create.body["metadata"]["name"], json!(rs_name));
    assert_eq!(create.body["spec"]["replicas"], 3);
    assert_eq!(
        create.body["spec"]["selector"]["matchLabels"][POD_TEMPLATE_HASH_LABEL],
        json!(hash)
    );
    assert_eq!(
        create.body["metadata"]["annotations"][REVISION_ANNOTATION],
        "1"
    );
    assert_eq!(
        create.body["metadata"]["ownerReferences"][0]["uid"],
        "d-uid"
    );

    assert_eq!(
        (revision.method.as_str(), revision.path.as_str()),
        ("PATCH", WEB)
    );
    assert_eq!(
        revision.body["metadata"]["annotations"][REVISION_ANNOTATION],
        "1"
    );

    assert_eq!(status.path, format!("{WEB}/status"));
    // Pinned to the version the revision patch returned.
    assert_eq!(status.body["metadata"]["resourceVersion"], "2");
    let status = &status.body["status"];
    assert_eq!(status["observedGeneration"], 1);
    let progressing = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
        .expect("a Progressing condition");
    assert_eq!(progressing["reason"], "NewReplicaSetCreated");
    assert_eq!(
        progressing["message"],
        json!(format!("Created new replica set \"{rs_name}\""))
    );
    assert_eq!(
        events(&writes),
        [(
            "ScalingReplicaSet".to_string(),
            format!("Scaled up replica set {rs_name} from 0 to 3")
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn scaling_down_patches_the_replica_set_and_says_so() {
    let mut d = deployment("web", 2, "v1");
    let hash = hash::pod_template_hash(&d.spec.template, None);
    let mut current = rs(&format!("web-{hash}"), 3, "v1", 1, 0);
    let annotations = current.metadata.annotations.get_or_insert_default();
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), "3".into());
    annotations.insert(MAX_REPLICAS_ANNOTATION.into(), "4".into());
    d.metadata.annotations = Some([(REVISION_ANNOTATION.to_string(), "1".to_string())].into());
    let writes = run(server(&d, &[current])).await;
    let patch = writes
        .iter()
        .find(|w| w.path == format!("{NAMESPACED_REPLICASETS}/web-{hash}"))
        .expect("the replica set is patched");
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.body["spec"]["replicas"], 2);
    assert_eq!(patch.body["metadata"]["resourceVersion"], "1");
    assert_eq!(
        patch.body["metadata"]["annotations"][DESIRED_REPLICAS_ANNOTATION],
        "2"
    );
    assert_eq!(
        patch.body["metadata"]["annotations"][MAX_REPLICAS_ANNOTATION],
        "3"
    );
    assert_eq!(
        events(&writes),
        [(
            "ScalingReplicaSet".to_string(),
            format!("Scaled down replica set web-{hash} from 3 to 2")
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_name_taken_by_another_template_bumps_the_collision_count() {
    let d = deployment("web", 1, "v1");
    let hash = hash::pod_template_hash(&d.spec.template, None);
    let server = server(&d, &[]);
    {
        let mut stranger = rs(&format!("web-{hash}"), 1, "other", 0, 0);
        stranger.spec.template = Some(template("something-else"));
        stranger.metadata.owner_references = None;
        let mut server = server.lock().expect("server");
        server.taken.push(NAMESPACED_REPLICASETS.into());
        server.objects.insert(
            format!("{NAMESPACED_REPLICASETS}/web-{hash}"),
            to_json(&stranger),
        );
    }
    let writes = non_events(&run(server).await);
    let bump = writes
        .iter()
        .find(|w| w.path == format!("{WEB}/status"))
        .expect("a status write");
    assert_eq!(bump.body["status"]["collisionCount"], 1);
    assert_eq!(bump.body["metadata"]["resourceVersion"], "1");
    // The create was tried again a second later under the same stale view.
    assert!(writes.iter().filter(|w| w.method == "POST").count() >= 1);
}

#[test]
fn scaling_messages_use_upstreams_wording() {
    assert_eq!(
        scaling_message("web-5d4f8", 0, 3),
        "Scaled up replica set web-5d4f8 from 0 to 3"
    );
    assert_eq!(
        scaling_message("web-5d4f8", 3, 2),
        "Scaled down replica set web-5d4f8 from 3 to 2"
    );
}
