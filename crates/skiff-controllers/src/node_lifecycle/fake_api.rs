//! A small in-memory API server for the controller's IO tests: Nodes, Pods
//! and Leases that can be listed, watched (long-polled: each watch answers
//! with the events it waited for and ends, and the client watches again),
//! patched (JSON merge, and strategic merge with conditions merged by type,
//! both honouring a `metadata.resourceVersion` precondition) and deleted.
//! Events are accepted and their reasons kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

/// An object's place: resource (`nodes`, `pods`, `leases`), namespace, name.
type Key = (String, String, String);

#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    /// The last state of deleted objects.
    deleted: BTreeMap<Key, Value>,
    /// (revision, resource, event type, object).
    log: Vec<(u64, String, &'static str, Value)>,
    event_reasons: Vec<String>,
}

/// The fake server; clones share it.
#[derive(Clone)]
pub(crate) struct FakeApi {
    state: Arc<Mutex<State>>,
    revisions: Arc<watch::Sender<u64>>,
}

fn resource_of(obj: &Value) -> &'static str {
    match obj["kind"].as_str() {
        Some("Node") => "nodes",
        Some("Pod") => "pods",
        Some("Lease") => "leases",
        other => panic!("the fake API does not serve {other:?}"),
    }
}

fn key_of(obj: &Value) -> Key {
    (
        resource_of(obj).to_string(),
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        obj["metadata"]["name"].as_str().expect("named").to_string(),
    )
}

/// RFC 7386 merge, or with `strategic` the `conditions` lists merged by
/// `type` (what the API server's strategic merge does for them).
fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object");
    for (field, value) in fields {
        if value.is_null() {
            map.remove(field);
        } else if strategic && field == "conditions" && value.is_array() {
            let list = map.entry(field.clone()).or_insert_with(|| json!([]));
            for condition in value.as_array().expect("checked") {
                let existing = list
                    .as_array_mut()
                    .expect("conditions are a list")
                    .iter_mut()
                    .find(|c| c["type"] == condition["type"]);
                match existing {
                    Some(existing) => merge(existing, condition, true),
                    None => list.as_array_mut().expect("list").push(condition.clone()),
                }
            }
        } else {
            merge(
                map.entry(field.clone()).or_insert(Value::Null),
                value,
                strategic,
            );
        }
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .expect("valid response")
}

fn status(code: u16, reason: &str) -> Response<Body> {
    respond(
        StatusCode::from_u16(code).expect("valid code"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": reason, "message": reason, "code": code}),
    )
}

impl FakeApi {
    pub(crate) fn new() -> Self {
        Self {
            state: Arc::default(),
            revisions: Arc::new(watch::channel(0).0),
        }
    }

    /// Creates or replaces an object (serialized from a k8s-openapi type).
    pub(crate) fn put(&self, obj: &impl serde::Serialize) {
        let mut obj = serde_json::to_value(obj).expect("serializable");
        let key = key_of(&obj);
        let mut state = self.state.lock().expect("fake api");
        state.revision += 1;
        let revision = state.revision;
        obj["metadata"]["resourceVersion"] = json!(revision.to_string());
        let kind = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.objects.insert(key.clone(), obj.clone());
        state.log.push((revision, key.0, kind, obj));
        drop(state);
        self.revisions.send_replace(revision);
    }

    /// The object as stored now.
    pub(crate) fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (resource.into(), namespace.into(), name.into());
        self.state
            .lock()
            .expect("fake api")
            .objects
            .get(&key)
            .cloned()
    }

    /// The last state of a deleted object.
    pub(crate) fn deleted(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (resource.into(), namespace.into(), name.into());
        self.state
            .lock()
            .expect("fake api")
            .deleted
            .get(&key)
            .cloned()
    }

    /// The reasons of the events recorded so far.
    pub(crate) fn event_reasons(&self) -> Vec<String> {
        self.state.lock().expect("fake api").event_reasons.clone()
    }

    /// A client of this server.
    pub(crate) fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.map_err(Box::new)?;
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let content_type = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let response = api
                    .serve(
                        parts.method.as_str(),
                        parts.uri.path(),
                        parts.uri.query().unwrap_or(""),
                        &content_type,
                        body,
                    )
                    .await;
                Ok::<_, Box<kube::Error>>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    async fn serve(
        &self,
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> Response<Body> {
        let rest = path
            .strip_prefix("/api/v1/")
            .or_else(|| path.strip_prefix("/apis/coordination.k8s.io/v1/"))
            .unwrap_or(path);
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.contains(&"events") {
            if let Some(reason) = body["reason"].as_str() {
                let mut state = self.state.lock().expect("fake api");
                state.event_reasons.push(reason.to_string());
            }
            return respond(StatusCode::CREATED, &body);
        }
        // A subresource (`status`) patches the object itself here.
        let (resource, namespace, name) = match segments.as_slice() {
            [resource] => (*resource, "", None),
            [resource, name] | [resource, name, _] if *resource != "namespaces" => {
                (*resource, "", Some(*name))
            }
            ["namespaces", ns, resource, name] | ["namespaces", ns, resource, name, _] => {
                (*resource, *ns, Some(*name))
            }
            _ => return status(404, "NotFound"),
        };
        match (method, name) {
            ("GET", None) if query.contains("watch=true") => {
                let since = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("resourceVersion="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.watch(resource, since).await
            }
            ("GET", None) => {
                let state = self.state.lock().expect("fake api");
                let items: Vec<&Value> = state
                    .objects
                    .iter()
                    .filter(|(key, _)| key.0 == resource)
                    .map(|(_, obj)| obj)
                    .collect();
                respond(
                    StatusCode::OK,
                    &json!({"kind": "List", "apiVersion": "v1",
                            "metadata": {"resourceVersion": state.revision.to_string()},
                            "items": items}),
                )
            }
            ("PATCH", Some(name)) => {
                let key = (
                    resource.to_string(),
                    namespace.to_string(),
                    name.to_string(),
                );
                let strategic = content_type.contains("strategic");
                self.patch(key, &body, strategic)
            }
            ("DELETE", Some(name)) => {
                let key = (
                    resource.to_string(),
                    namespace.to_string(),
                    name.to_string(),
                );
                self.delete(key, &body)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }

    async fn watch(&self, resource: &str, since: u64) -> Response<Body> {
        let mut revisions = self.revisions.subscribe();
        loop {
            let lines: Vec<String> = {
                let state = self.state.lock().expect("fake api");
                state
                    .log
                    .iter()
                    .filter(|(revision, r, _, _)| *revision > since && r == resource)
                    .map(|(_, _, kind, obj)| json!({"type": kind, "object": obj}).to_string())
                    .collect()
            };
            if !lines.is_empty() {
                let body = lines.join("\n") + "\n";
                return Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(body.into_bytes()))
                    .expect("valid response");
            }
            if revisions.changed().await.is_err() {
                return status(500, "ShuttingDown");
            }
        }
    }

    fn patch(&self, key: Key, patch: &Value, strategic: bool) -> Response<Body> {
        let mut state = self.state.lock().expect("fake api");
        let Some(mut obj) = state.objects.get(&key).cloned() else {
            return status(404, "NotFound");
        };
        if let Some(precondition) = patch["metadata"]["resourceVersion"].as_str()
            && Some(precondition) != obj["metadata"]["resourceVersion"].as_str()
        {
            return status(409, "Conflict");
        }
        merge(&mut obj, patch, strategic);
        state.revision += 1;
        let revision = state.revision;
        obj["metadata"]["resourceVersion"] = json!(revision.to_string());
        state.objects.insert(key.clone(), obj.clone());
        state.log.push((revision, key.0, "MODIFIED", obj.clone()));
        drop(state);
        self.revisions.send_replace(revision);
        respond(StatusCode::OK, &obj)
    }

    fn delete(&self, key: Key, options: &Value) -> Response<Body> {
        let mut state = self.state.lock().expect("fake api");
        let Some(mut obj) = state.objects.get(&key).cloned() else {
            return status(404, "NotFound");
        };
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && Some(uid) != obj["metadata"]["uid"].as_str()
        {
            return status(409, "Conflict");
        }
        state.objects.remove(&key);
        state.revision += 1;
        let revision = state.revision;
        // As the API server: the deletion event carries its own revision.
        obj["metadata"]["resourceVersion"] = json!(revision.to_string());
        state.deleted.insert(key.clone(), obj.clone());
        state.log.push((revision, key.0, "DELETED", obj.clone()));
        drop(state);
        self.revisions.send_replace(revision);
        respond(StatusCode::OK, &obj)
    }
}
