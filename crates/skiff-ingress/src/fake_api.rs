//! An in-memory stand-in for the API server, enough for [`crate::run`]:
//! collection GETs answer fixed lists, watches stream what the test pushes,
//! and writes are recorded (a create answers its own body, a status patch an
//! Ingress with that status).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A write the code under test made.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) body: Value,
}

#[derive(Default)]
struct State {
    lists: HashMap<String, Vec<Value>>,
    watches: HashMap<String, broadcast::Sender<Bytes>>,
    writes: Vec<Write>,
    /// Answer POSTs with 409 AlreadyExists.
    conflict_on_create: bool,
}

/// The fake's controls; clones share one state.
#[derive(Clone, Default)]
pub(crate) struct FakeApi {
    state: Arc<Mutex<State>>,
}

type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

impl FakeApi {
    /// A fake listing `items` at each collection path (other collections
    /// list empty).
    pub(crate) fn new(lists: Vec<(&str, Vec<Value>)>) -> Self {
        let api = Self::default();
        api.state.lock().unwrap().lists = lists
            .into_iter()
            .map(|(path, items)| (path.to_owned(), items))
            .collect();
        api
    }

    /// Makes every create answer 409, as when the object exists.
    pub(crate) fn conflict_on_create(&self) {
        self.state.lock().unwrap().conflict_on_create = true;
    }

    /// A client talking to this fake.
    pub(crate) fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// The writes so far.
    pub(crate) fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`) to the watchers
    /// of the collection at `path`; false when nobody watches yet.
    pub(crate) fn push(&self, path: &str, kind: &str, object: Value) -> bool {
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        self.watch(path).send(Bytes::from(line)).is_ok()
    }

    fn watch(&self, path: &str) -> broadcast::Sender<Bytes> {
        self.state
            .lock()
            .unwrap()
            .watches
            .entry(path.to_owned())
            .or_insert_with(|| broadcast::channel(16).0)
            .clone()
    }

    async fn answer(&self, request: Request<Body>) -> Response<FakeBody> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        if parts.uri.query().unwrap_or_default().contains("watch=true") {
            let events = self.watch(&path).subscribe();
            let stream = futures::stream::unfold(events, |mut events| async move {
                let line = events.recv().await.ok()?;
                Some((Ok::<_, Infallible>(Frame::data(line)), events))
            });
            return Response::new(UnsyncBoxBody::new(StreamBody::new(stream)));
        }
        let body = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap();
        let (status, reply) = if parts.method == hyper::Method::GET {
            let items = state.lists.get(&path).cloned().unwrap_or_default();
            (
                StatusCode::OK,
                json!({"metadata": {"resourceVersion": "1"}, "items": items}),
            )
        } else {
            state.writes.push(Write {
                method: parts.method.to_string(),
                path,
                body: body.clone(),
            });
            if parts.method == hyper::Method::POST && state.conflict_on_create {
                (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "reason": "AlreadyExists", "code": 409}),
                )
            } else if parts.method == hyper::Method::POST {
                (StatusCode::CREATED, body)
            } else {
                // The only other write is an Ingress status patch.
                let mut object = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                        "metadata": {}});
                object["status"] = body["status"].clone();
                (StatusCode::OK, object)
            }
        };
        let mut response = Response::new(UnsyncBoxBody::new(Full::new(Bytes::from(
            reply.to_string(),
        ))));
        *response.status_mut() = status;
        response
    }
}
