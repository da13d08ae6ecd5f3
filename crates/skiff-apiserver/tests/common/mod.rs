//! The API router in process over a store, shared by the integration tests:
//! requests go through the real handlers without TLS or a network.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use skiff_store::Store;
use skiff_store::memory::MemoryStore;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

/// One API server; dropping it stops its background tasks.
pub struct Api {
    pub router: axum::Router,
    _shutdown: DropGuard,
}

impl Api {
    /// A server over a fresh in-memory store.
    pub async fn new() -> Api {
        Api::on(Arc::new(MemoryStore::new().expect("memory store"))).await
    }

    /// A server over `store` (several may share one).
    pub async fn on(store: Arc<dyn Store>) -> Api {
        let shutdown = CancellationToken::new();
        let rest =
            skiff_apiserver::start(store, "127.0.0.1:6443".parse().unwrap(), shutdown.clone())
                .await
                .expect("api starts");
        Api {
            router: skiff_apiserver::app(rest),
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Sends `body` (none when null) with `content_type`, asking for
    /// `accept` when given; the status and the JSON answer (null if none).
    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        accept: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// [`request`](Self::request) asking for JSON.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.request(method, uri, content_type, Some("application/json"), body)
            .await
    }
}
