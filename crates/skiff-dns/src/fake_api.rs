//! A fake API server for the IO tests: lists fixed objects per collection
//! path, streams watch events the test sends, serves and stores single
//! objects (404 until written), and records every write.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One write the code under test made.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub(crate) method: String,
    /// The request path.
    pub(crate) path: String,
    /// The request body (`null` when empty).
    pub(crate) body: Value,
}

#[derive(Default)]
struct State {
    lists: HashMap<String, Vec<Value>>,
    objects: HashMap<String, Value>,
    writes: Vec<Write>,
    watches: HashMap<String, broadcast::Sender<String>>,
    next_version: u64,
}

/// The fake server's controls.
#[derive(Clone, Default)]
pub(crate) struct FakeApi {
    state: Arc<Mutex<State>>,
}

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

impl FakeApi {
    /// A fake whose collections at `path` list `items`.
    pub(crate) fn new(lists: Vec<(&str, Vec<Value>)>) -> FakeApi {
        let api = FakeApi::default();
        {
            let mut state = api.state.lock().unwrap();
            for (path, items) in lists {
                state.lists.insert(path.to_string(), items);
            }
            state.next_version = 10;
        }
        api
    }

    /// A client of this server.
    pub(crate) fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Every write so far, in order.
    pub(crate) fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The stored object at `path`.
    pub(crate) fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Wait until a watch of `path` is open, then send it `kind` (`ADDED`,
    /// `MODIFIED`, `DELETED`) of `object`, with a new resourceVersion.
    pub(crate) async fn send(&self, path: &str, kind: &str, mut object: Value) {
        let version = {
            let mut state = self.state.lock().unwrap();
            state.next_version += 1;
            state.next_version.to_string()
        };
        object["metadata"]["resourceVersion"] = json!(version);
        let sender = self.watch_sender(path);
        for _ in 0..500 {
            if sender.receiver_count() > 0 {
                let event = json!({"type": kind, "object": object});
                sender.send(format!("{event}\n")).expect("a watcher");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nobody watches {path}");
    }

    fn watch_sender(&self, path: &str) -> broadcast::Sender<String> {
        let mut state = self.state.lock().unwrap();
        state
            .watches
            .entry(path.to_string())
            .or_insert_with(|| broadcast::channel(64).0)
            .clone()
    }

    async fn handle(&self, request: Request<Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default();
        let method = parts.method.as_str().to_string();
        if method == "GET" && query.contains("watch=true") {
            let events = self.watch_sender(&path).subscribe();
            let stream = futures::stream::unfold(events, |mut events| async move {
                let line = events.recv().await.ok()?;
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), events))
            });
            return Response::builder()
                .header("content-type", "application/json")
                .body(UnsyncBoxBody::new(StreamBody::new(stream)))
                .expect("valid response");
        }
        let mut state = self.state.lock().unwrap();
        let (status, reply) = match method.as_str() {
            "GET" => match (state.lists.get(&path), state.objects.get(&path)) {
                (Some(items), _) => (
                    StatusCode::OK,
                    json!({
                        "kind": "List", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    }),
                ),
                (None, Some(object)) => (StatusCode::OK, object.clone()),
                (None, None) => not_found(),
            },
            _ => {
                state.writes.push(Write {
                    method: method.clone(),
                    path: path.clone(),
                    body: body.clone(),
                });
                state.next_version += 1;
                let version = state.next_version.to_string();
                match method.as_str() {
                    "POST" => {
                        let name = body["metadata"]["name"].as_str().unwrap_or_default();
                        let mut object = body.clone();
                        object["metadata"]["uid"] = json!(format!("uid-{version}"));
                        object["metadata"]["resourceVersion"] = json!(version);
                        state
                            .objects
                            .insert(format!("{path}/{name}"), object.clone());
                        (StatusCode::CREATED, object)
                    }
                    "PUT" => {
                        let mut object = body.clone();
                        object["metadata"]["resourceVersion"] = json!(version);
                        state.objects.insert(path, object.clone());
                        (StatusCode::OK, object)
                    }
                    "PATCH" => match state.objects.get_mut(&path) {
                        Some(object) => {
                            merge(object, &body);
                            object["metadata"]["resourceVersion"] = json!(version);
                            (StatusCode::OK, object.clone())
                        }
                        None => not_found(),
                    },
                    _ => match state.objects.remove(&path) {
                        Some(_) => (
                            StatusCode::OK,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
                        ),
                        None => not_found(),
                    },
                }
            }
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(UnsyncBoxBody::new(
                Full::new(Bytes::from(reply.to_string())).map_err(|never| match never {}),
            ))
            .expect("valid response")
    }
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "not found",
        }),
    )
}

/// A JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
