//! A fake Kubernetes API server for unit tests of code that takes a
//! `kube::Client`: a tower service behind `kube::Client::new`, no sockets.
//!
//! It is deliberately not a small API server. A test decides what the code
//! under test sees, and the fake reports what that code did:
//!
//! - **Lists are fixed.** [`FakeApi::new`] gives the items listed at each
//!   collection path; writes never change them, and other collections list
//!   empty. [`FakeApi::hold_lists`] keeps one collection's lists waiting.
//! - **Watches carry only what the test sends** ([`FakeApi::send`]); otherwise
//!   they stay open and silent. Writes produce no events, so a controller never
//!   reacts to its own writes unless the test says so.
//! - **Single objects are stored.** Listed items are stored at their object
//!   paths, [`FakeApi::store`] adds more, and writes change the store: a create
//!   stores (409 when the object exists), an update replaces, a JSON merge
//!   patch merges (the `status` subresource patches the object), a delete
//!   removes; reads, patches and deletes of a missing object answer 404.
//!   A POST to an object's subresource (`.../serviceaccounts/x/token`) is
//!   answered with what the test stored at that path (404 when nothing).
//! - **Every write is recorded** ([`FakeApi::writes`]) with its method, path
//!   and body, failed ones too. Events are kept apart ([`FakeApi::events`]) so
//!   that a test's write log does not depend on what the code reports.
//!
//! Resource versions come from one counter: lists are at version `1`, and
//! every sent event and stored write takes the next number from 10 up.
//!
//! ```ignore
//! let api = FakeApi::new(vec![("/api/v1/services", vec![service])]);
//! tokio::spawn(run(api.client()));
//! api.send("/api/v1/services", "DELETED", service).await;
//! assert_eq!(api.writes()[0].method, "POST");
//! ```

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// How long [`FakeApi::send`] waits for a watch to open.
const WATCH_WAIT: Duration = Duration::from_secs(5);

/// The version every list reports.
const LIST_VERSION: &str = "1";

/// Events one watch may fall behind by before it is closed.
const WATCH_BUFFER: usize = 256;

/// One write the code under test made.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The request body (`null` when empty).
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// Collection path → the items its lists show.
    lists: HashMap<String, Vec<Value>>,
    /// Object path → the stored object.
    objects: HashMap<String, Value>,
    writes: Vec<Write>,
    events: Vec<Value>,
    /// Collection path → the open watches' feed.
    watches: HashMap<String, broadcast::Sender<Bytes>>,
    /// The last resource version handed out.
    version: u64,
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn watch(&mut self, path: &str) -> broadcast::Sender<Bytes> {
        self.watches
            .entry(path.to_owned())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .clone()
    }
}

/// The fake server's controls; clones share one server.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// Collection paths whose lists wait (see [`FakeApi::hold_lists`]).
    held: Arc<watch::Sender<HashSet<String>>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::new(Vec::new())
    }
}

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

impl FakeApi {
    /// A fake whose collection at each path lists `items`; the items are
    /// stored at their object paths too.
    pub fn new(lists: Vec<(&str, Vec<Value>)>) -> FakeApi {
        let mut state = State {
            version: 9,
            ..State::default()
        };
        for (path, items) in lists {
            for item in &items {
                if let Some(object_path) = item_path(path, item) {
                    state.objects.insert(object_path, item.clone());
                }
            }
            state.lists.insert(path.to_owned(), items);
        }
        FakeApi {
            state: Arc::new(Mutex::new(state)),
            held: Arc::new(watch::channel(HashSet::new()).0),
        }
    }

    /// A client of this server (namespace `default`).
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Every write so far, in order (Events aside).
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// The bodies of the Events created so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// The object stored at `path`.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Stores `object` at `path` without listing it or recording a write, as
    /// if someone else had created it.
    pub fn store(&self, path: &str, object: Value) {
        self.lock().objects.insert(path.to_owned(), object);
    }

    /// Makes lists of the collection at `path` wait until
    /// [`FakeApi::release_lists`].
    pub fn hold_lists(&self, path: &str) {
        self.held.send_modify(|held| {
            held.insert(path.to_owned());
        });
    }

    /// Lets lists of the collection at `path` through.
    pub fn release_lists(&self, path: &str) {
        self.held.send_modify(|held| {
            held.remove(path);
        });
    }

    /// Waits until a watch of the collection at `path` is open, then sends
    /// it `kind` (`ADDED`, `MODIFIED`, `DELETED`) of `object`, stamped with
    /// a new resource version.
    ///
    /// # Panics
    ///
    /// When nobody watches within five seconds.
    pub async fn send(&self, path: &str, kind: &str, mut object: Value) {
        let sender = {
            let mut state = self.lock();
            object["metadata"]["resourceVersion"] = json!(state.next_version());
            state.watch(path)
        };
        let deadline = tokio::time::Instant::now() + WATCH_WAIT;
        while sender.receiver_count() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nobody watches {path}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let event = json!({"type": kind, "object": object});
        sender
            .send(Bytes::from(format!("{event}\n")))
            .expect("a watcher");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake API state")
    }

    async fn handle(&self, request: Request<Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let method = parts.method.as_str().to_owned();
        if method == "GET" && parts.uri.query().unwrap_or_default().contains("watch=true") {
            let events = self.lock().watch(&path).subscribe();
            let stream = futures::stream::unfold(events, |mut events| async move {
                let line = events.recv().await.ok()?;
                Some((Ok::<_, Infallible>(Frame::data(line)), events))
            });
            return Response::builder()
                .header("content-type", "application/json")
                .body(UnsyncBoxBody::new(StreamBody::new(stream)))
                .expect("valid response");
        }
        let (status, reply) = if method == "GET" {
            self.get(&path).await
        } else {
            let body = body.collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.write(method, path, body)
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(UnsyncBoxBody::new(
                Full::new(Bytes::from(reply.to_string())).map_err(|never| match never {}),
            ))
            .expect("valid response")
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let mut held = self.held.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = held.wait_for(|held| !held.contains(path)).await;
        let state = self.lock();
        if let Some(items) = state.lists.get(path) {
            return (StatusCode::OK, list(items));
        }
        match route(path) {
            Some(Route::Collection { .. }) => (StatusCode::OK, list(&[])),
            Some(Route::Object { path, .. }) => match state.objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => not_found(),
            },
            None => not_found(),
        }
    }

    fn write(&self, method: String, path: String, body: Value) -> (StatusCode, Value) {
        let mut state = self.lock();
        let route = route(&path);
        if route
            .as_ref()
            .is_some_and(|route| route.resource() == "events")
        {
            state.events.push(body.clone());
            return (StatusCode::CREATED, body);
        }
        state.writes.push(Write {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        match (method.as_str(), route) {
            ("POST", Some(Route::Collection { .. })) => {
                let version = state.next_version();
                let mut object = body;
                let name = match object["metadata"]["name"].as_str() {
                    Some(name) if !name.is_empty() => name.to_owned(),
                    _ => {
                        let prefix = object["metadata"]["generateName"].as_str().unwrap_or("");
                        let name = format!("{prefix}{version}");
                        object["metadata"]["name"] = json!(name);
                        name
                    }
                };
                let object_path = format!("{path}/{name}");
                if state.objects.contains_key(&object_path) {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                object["metadata"]["uid"] = json!(format!("uid-{version}"));
                object["metadata"]["resourceVersion"] = json!(version);
                state.objects.insert(object_path, object.clone());
                (StatusCode::CREATED, object)
            }
            (
                "PUT",
                Some(Route::Object {
                    path, subresource, ..
                }),
            ) => {
                let version = state.next_version();
                let mut object = match subresource {
                    None => body,
                    Some(field) => match state.objects.get(&path) {
                        Some(stored) => {
                            let mut object = stored.clone();
                            object[field.as_str()] = body[field.as_str()].clone();
                            object
                        }
                        None => return not_found(),
                    },
                };
                object["metadata"]["resourceVersion"] = json!(version);
                state.objects.insert(path, object.clone());
                (StatusCode::OK, object)
            }
            ("PATCH", Some(Route::Object { path, .. })) => {
                let version = state.next_version();
                match state.objects.get_mut(&path) {
                    Some(object) => {
                        merge(object, &body);
                        object["metadata"]["resourceVersion"] = json!(version);
                        (StatusCode::OK, object.clone())
                    }
                    None => not_found(),
                }
            }
            (
                "POST",
                Some(Route::Object {
                    subresource: Some(_),
                    ..
                }),
            ) => match state.objects.get(&path) {
                Some(reply) => (StatusCode::CREATED, reply.clone()),
                None => not_found(),
            },
            ("DELETE", Some(Route::Object { path, .. })) => match state.objects.remove(&path) {
                Some(_) => (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success", "code": 200}),
                ),
                None => not_found(),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }
}

/// What a request path names.
#[derive(Debug, PartialEq)]
enum Route {
    /// A collection of `resource` (`/api/v1/pods`, `/api/v1/namespaces/a/pods`).
    Collection { resource: String },
    /// One object of `resource`, stored at `path`; the request may be for
    /// its `subresource` (`status`).
    Object {
        resource: String,
        path: String,
        subresource: Option<String>,
    },
}

impl Route {
    fn resource(&self) -> &str {
        match self {
            Route::Collection { resource } | Route::Object { resource, .. } => resource,
        }
    }
}

/// Splits `path` after its group-version prefix (`/api/v1`,
/// `/apis/<group>/<version>`): the prefix and the segments after it.
fn split(path: &str) -> Option<(&str, Vec<&str>)> {
    let prefix_len = if path.starts_with("/api/v1/") {
        "/api/v1".len()
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        let mut parts = rest.splitn(3, '/');
        let (group, version) = (parts.next()?, parts.next()?);
        "/apis/".len() + group.len() + 1 + version.len()
    } else {
        return None;
    };
    let (prefix, rest) = path.split_at(prefix_len);
    Some((prefix, rest.trim_start_matches('/').split('/').collect()))
}

/// A namespace's own subresources, told apart from namespaced collections.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

fn route(path: &str) -> Option<Route> {
    let (prefix, segments) = split(path)?;
    let object = |resource: &str, object: String, subresource: Option<&&str>| Route::Object {
        resource: resource.to_owned(),
        path: format!("{prefix}/{object}"),
        subresource: subresource.map(|s| (*s).to_owned()),
    };
    let collection = |resource: &str| Route::Collection {
        resource: resource.to_owned(),
    };
    Some(match segments.as_slice() {
        [resource] => collection(resource),
        ["namespaces", ns, sub] if NAMESPACE_SUBRESOURCES.contains(sub) => {
            object("namespaces", format!("namespaces/{ns}"), Some(sub))
        }
        ["namespaces", _, resource] => collection(resource),
        ["namespaces", ns, resource, name, rest @ ..] if rest.len() <= 1 => object(
            resource,
            format!("namespaces/{ns}/{resource}/{name}"),
            rest.first(),
        ),
        [resource, name, rest @ ..] if rest.len() <= 1 => {
            object(resource, format!("{resource}/{name}"), rest.first())
        }
        _ => return None,
    })
}

/// Where an item listed at `collection` is stored: under its namespace when
/// the collection spans all of them.
fn item_path(collection: &str, item: &Value) -> Option<String> {
    let name = item["metadata"]["name"].as_str()?;
    let (prefix, segments) = split(collection)?;
    match (segments.as_slice(), item["metadata"]["namespace"].as_str()) {
        ([resource], Some(ns)) => Some(format!("{prefix}/namespaces/{ns}/{resource}/{name}")),
        _ => Some(format!("{collection}/{name}")),
    }
}

fn list(items: &[Value]) -> Value {
    json!({
        "kind": "List", "apiVersion": "v1",
        "metadata": {"resourceVersion": LIST_VERSION},
        "items": items,
    })
}

fn status(code: StatusCode, reason: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "code": code.as_u16(),
            "message": reason,
        }),
    )
}

fn not_found() -> (StatusCode, Value) {
    status(StatusCode::NOT_FOUND, "NotFound")
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

#[cfg(test)]
mod tests;
