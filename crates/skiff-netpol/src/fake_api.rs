//! A fake API server behind `kube::Client::new` for the IO tests: it lists
//! fixed objects per collection and streams the watch events a test pushes.
//!
//! Only the first watch of each collection gets the pushed events (the
//! watcher opens one at a time, and a test never runs long enough for the
//! server-side timeout); later ones stay open and silent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{StreamExt, stream};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The collections the enforcer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Collection {
    Pods,
    Namespaces,
    Policies,
}

impl Collection {
    const ALL: [Collection; 3] = [
        Collection::Pods,
        Collection::Namespaces,
        Collection::Policies,
    ];

    fn path(self) -> &'static str {
        match self {
            Collection::Pods => "/api/v1/pods",
            Collection::Namespaces => "/api/v1/namespaces",
            Collection::Policies => "/apis/networking.k8s.io/v1/networkpolicies",
        }
    }

    fn type_meta(self) -> (&'static str, &'static str) {
        match self {
            Collection::Pods => ("v1", "Pod"),
            Collection::Namespaces => ("v1", "Namespace"),
            Collection::Policies => ("networking.k8s.io/v1", "NetworkPolicy"),
        }
    }

    fn typed(self, mut object: Value) -> Value {
        let (api_version, kind) = self.type_meta();
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        object
    }
}

type Watches = HashMap<&'static str, Mutex<Option<mpsc::UnboundedReceiver<Value>>>>;

/// The test's handle on the fake server.
pub(crate) struct FakeApi {
    senders: HashMap<Collection, mpsc::UnboundedSender<Value>>,
    gate: watch::Sender<bool>,
}

impl FakeApi {
    /// A client whose server lists `objects` (typed here); lists of
    /// namespaces wait until [`FakeApi::open_namespaces`] when `gated`.
    pub(crate) fn start(
        objects: Vec<(Collection, Vec<Value>)>,
        gated: bool,
    ) -> (kube::Client, FakeApi) {
        let mut lists: HashMap<&'static str, Vec<Value>> = HashMap::new();
        for (collection, items) in objects {
            lists
                .entry(collection.path())
                .or_default()
                .extend(items.into_iter().map(|o| collection.typed(o)));
        }
        let mut senders = HashMap::new();
        let mut watches = Watches::new();
        for collection in Collection::ALL {
            let (tx, rx) = mpsc::unbounded();
            senders.insert(collection, tx);
            watches.insert(collection.path(), Mutex::new(Some(rx)));
        }
        let (gate, gate_rx) = watch::channel(!gated);
        let lists = Arc::new(lists);
        let watches = Arc::new(watches);
        let service = tower::service_fn(move |request: Request<Body>| {
            let lists = Arc::clone(&lists);
            let watches = Arc::clone(&watches);
            let mut gate = gate_rx.clone();
            async move {
                let path = request.uri().path().to_string();
                let watching = request
                    .uri()
                    .query()
                    .unwrap_or_default()
                    .contains("watch=true");
                let body: UnsyncBoxBody<Bytes, Infallible> = if watching {
                    let events = watches
                        .get(path.as_str())
                        .and_then(|w| w.lock().expect("watches").take());
                    match events {
                        Some(events) => StreamBody::new(events.map(|event| {
                            Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{event}\n"))))
                        }))
                        .boxed_unsync(),
                        None => {
                            StreamBody::new(stream::pending::<Result<Frame<Bytes>, Infallible>>())
                                .boxed_unsync()
                        }
                    }
                } else {
                    if path == Collection::Namespaces.path() {
                        // The gate's sender lives as long as the test.
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    let list = json!({
                        "kind": "List", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": lists.get(path.as_str()).cloned().unwrap_or_default(),
                    });
                    Full::new(Bytes::from(list.to_string())).boxed_unsync()
                };
                let response = Response::builder()
                    .header("content-type", "application/json")
                    .body(body)
                    .expect("valid response");
                Ok::<_, Infallible>(response)
            }
        });
        (
            kube::Client::new(service, "default"),
            FakeApi { senders, gate },
        )
    }

    /// Pushes a watch event (`ADDED`, `MODIFIED`, `DELETED`).
    pub(crate) fn push(&self, collection: Collection, kind: &str, mut object: Value) {
        // The watcher refuses events without a resource version.
        object["metadata"]["resourceVersion"] = json!("2");
        self.senders[&collection]
            .unbounded_send(json!({"type": kind, "object": collection.typed(object)}))
            .expect("watch open");
    }

    /// Lets namespace lists through.
    pub(crate) fn open_namespaces(&self) {
        self.gate.send_replace(true);
    }
}

/// A running pod on `node` at `ip`.
pub(crate) fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// A namespace with `labels`.
pub(crate) fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

/// A NetworkPolicy with `spec`.
pub(crate) fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}
