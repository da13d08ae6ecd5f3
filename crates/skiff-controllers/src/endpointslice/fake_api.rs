//! A fake API server for the controllers' IO tests: lists fixed objects per
//! collection path, holds every watch open, and records every write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// One write the controller made.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub(crate) method: String,
    /// The request path.
    pub(crate) path: String,
    /// The request body (`null` when empty).
    pub(crate) body: Value,
}

/// Every write so far, in order.
pub(crate) type Writes = Arc<Mutex<Vec<Write>>>;

/// A client whose server lists `lists` (collection path → items) and
/// records writes, except Events, which it accepts silently.
pub(crate) fn client(lists: Vec<(&str, Vec<Value>)>) -> (kube::Client, Writes) {
    let lists: Arc<HashMap<String, Vec<Value>>> = Arc::new(
        lists
            .into_iter()
            .map(|(path, items)| (path.to_string(), items))
            .collect(),
    );
    let writes = Writes::default();
    let recorded = Arc::clone(&writes);
    let service = tower::service_fn(move |request: Request<Body>| {
        let lists = Arc::clone(&lists);
        let recorded = Arc::clone(&recorded);
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.map_err(Box::new)?;
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or_default();
            let method = parts.method.as_str().to_string();
            let reply = match method.as_str() {
                "GET" if query.contains("watch=true") => {
                    futures::future::pending::<()>().await;
                    Value::Null
                }
                "GET" => json!({
                    "kind": "List", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": lists.get(&path).cloned().unwrap_or_default(),
                }),
                _ if path.ends_with("/events") || path.contains("/events/") => body,
                "DELETE" => {
                    recorded
                        .lock()
                        .expect("writes")
                        .push(Write { method, path, body });
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200})
                }
                _ => {
                    recorded.lock().expect("writes").push(Write {
                        method,
                        path,
                        body: body.clone(),
                    });
                    let mut reply = body;
                    reply["metadata"]["resourceVersion"] = json!("2");
                    reply
                }
            };
            let response = Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(reply.to_string().into_bytes()))
                .expect("valid response");
            Ok::<_, Box<kube::Error>>(response)
        }
    });
    (kube::Client::new(service, "default"), writes)
}
