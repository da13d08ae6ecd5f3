//! The Kubernetes REST API served over a [`skiff_store::Store`].
//!
//! [`app`] builds the HTTP router (discovery, OpenAPI, health, and one generic
//! resource endpoint); [`ApiServer`] serves it over TLS with HTTP/1.1 and
//! HTTP/2 (kubectl uses HTTP/2 for requests and HTTP/1.1 for upgrades) and to
//! components in the same process.

pub mod admission;
pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod cache;
pub mod discovery;
pub mod error;
mod handlers;
pub mod list;
pub mod namespaces;
pub mod node_proxy;
pub mod object;
pub mod openapi;
pub mod request;
pub mod rest;
pub mod service_account;
pub mod services;
pub mod strategy;
pub mod views;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;
use skiff_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::WatchCache;
use crate::error::ApiError;
use crate::rest::Rest;

/// What [`ApiServer::start`] needs.
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS settings (certificates, client-certificate verification, ALPN).
    pub tls: Arc<rustls::ServerConfig>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The address other nodes and pods reach this server at (the
    /// `kubernetes` service's endpoint).
    pub advertise: SocketAddr,
    /// Bearer tokens accepted besides client certificates.
    pub bearer_tokens: Vec<String>,
    /// Service account tokens: issued through `serviceaccounts/token`,
    /// accepted as bearer tokens, their issuer published for discovery, and
    /// the ServiceAccount admission plugin on. `None` turns all of it off.
    pub service_accounts: Option<service_account::ServiceAccountOptions>,
    /// Credentials for the node agents' APIs (pod logs, exec, attach,
    /// port-forward); without them those subresources answer 503.
    pub kubelet_client: Option<node_proxy::KubeletClientTls>,
    /// Routes the embedding binary serves beside the API, behind the same
    /// authentication (e.g. how nodes join). Paths listed in
    /// [`auth::PUBLIC_PATHS`] are served without it.
    pub extra_routes: Option<Router>,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store failed while starting.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Listening failed.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bootstrapping the built-in objects failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ApiError),
    /// The kubelet client credentials are unusable.
    #[error(transparent)]
    KubeletClient(#[from] node_proxy::NodeProxyError),
}

/// Starts the API machinery over `store`: the watch cache, the built-in
/// namespaces, the default ServiceCIDR and the `kubernetes` Service, with the
/// Service allocation repair. Returns the REST layer, ready to serve.
pub async fn start(
    store: Arc<dyn Store>,
    advertise: SocketAddr,
    shutdown: CancellationToken,
) -> Result<Arc<Rest>, ServeError> {
    start_with(store, advertise, admission::Plugins::default(), shutdown).await
}

/// [`start`], running the optional admission `plugins`.
pub async fn start_with(
    store: Arc<dyn Store>,
    advertise: SocketAddr,
    plugins: admission::Plugins,
    shutdown: CancellationToken,
) -> Result<Arc<Rest>, ServeError> {
    let cache = WatchCache::start(store, shutdown.clone()).await?;
    let mut rest = Rest::new(cache, advertise);
    rest.admission = plugins;
    let rest = Arc::new(rest);
    namespaces::ensure_built_in(&rest).await?;
    // Existing Services get their IPAddresses back before any new address
    // is handed out, so an upgraded store keeps every Service's address.
    services::ensure_default_service_cidr(&rest).await?;
    services::repair(&rest).await?;
    bootstrap::ensure_api_service(&rest, advertise).await?;
    tokio::spawn(services::run(rest.clone(), shutdown));
    Ok(rest)
}

/// The API server with its REST layer started and its routes built, ready to
/// serve over TLS and to components in the same process.
pub struct ApiServer {
    router: Router,
    listen: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
}

impl ApiServer {
    /// Starts the REST layer (see [`start_with`]) and builds the routes.
    pub async fn start(
        options: ServerOptions,
        shutdown: CancellationToken,
    ) -> Result<ApiServer, ServeError> {
        let node_proxy = options
            .kubelet_client
            .as_ref()
            .map(node_proxy::NodeProxy::new)
            .transpose()?;
        let plugins = admission::Plugins {
            service_account: options.service_accounts.is_some(),
        };
        let rest = start_with(options.store, options.advertise, plugins, shutdown).await?;
        let issuer = options
            .service_accounts
            .map(|o| Arc::new(service_account::TokenIssuer::new(o, options.advertise)));
        let mut router = app(rest.clone());
        if let Some(issuer) = &issuer {
            router = issuer.clone().attach(router);
        }
        if let Some(node_proxy) = node_proxy {
            router = node_proxy.attach(router);
        }
        if let Some(extra) = options.extra_routes {
            router = router.merge(extra);
        }
        let mut authenticator = auth::Authenticator::new(options.bearer_tokens);
        if let Some(issuer) = issuer {
            authenticator = authenticator.with_service_accounts(issuer, rest);
        }
        Ok(ApiServer {
            router: authenticator.layer(router),
            listen: options.listen,
            tls: options.tls,
        })
    }

    /// The routes as components in this process call them: without TCP,
    /// TLS or HTTP framing (the encryption and parsing of every request
    /// and watch event were a sixth of the server's CPU), authenticated as
    /// [`auth::PeerIdentity::loopback`] like upstream's loopback client.
    pub fn local_router(&self) -> Router {
        self.router
            .clone()
            .layer(axum::Extension(auth::PeerIdentity::loopback()))
    }

    /// Serves over TLS until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let ApiServer {
            router,
            listen,
            tls,
        } = self;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: listen,
                source,
            })?;
        tracing::info!(address = %listen, "API server listening");
        skiff_https::serve(listener, tls, router, shutdown, |tls| {
            auth::PeerIdentity::from_certificates(tls.peer_certificates())
        })
        .await;
        Ok(())
    }
}

/// The HTTP router of the API server.
pub fn app(rest: Arc<Rest>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/api", get(core_discovery))
        .route("/apis", get(groups_discovery))
        .route("/api/v1", get(|| async { resource_list("", "v1") }))
        .route("/apis/{group}", get(group_discovery))
        .route("/apis/{group}/{version}", get(group_version_discovery))
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(auth::self_subject_review),
        )
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .fallback(resources)
        .with_state(rest)
}

async fn resources(State(rest): State<Arc<Rest>>, request: Request) -> Response {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    assert_send(handlers::serve(rest, request)).await
}

fn json_bytes(body: Bytes, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn json_value(value: &serde_json::Value) -> Response {
    json_bytes(Bytes::from(value.to_string()), "application/json")
}

async fn version() -> Response {
    json_value(&json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "gitVersion": concat!("v1.37.0+skiff-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    }))
}

/// The architecture as Go names it, which is what clients print.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn health(State(rest): State<Arc<Rest>>) -> Response {
    match rest.cache.sync().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ok",
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not ready: {e}"),
        )
            .into_response(),
    }
}

/// True if the client asked for aggregated discovery (`as=APIGroupDiscoveryList`).
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|range| {
                range.contains("as=APIGroupDiscoveryList")
                    && range.contains("v=v2")
                    && !range.contains("v=v2beta1")
            })
        })
}

async fn core_discovery(State(rest): State<Arc<Rest>>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        json_bytes(
            discovery::aggregated_core(),
            discovery::AGGREGATED_CONTENT_TYPE,
        )
    } else {
        json_value(&discovery::core_versions(&rest.advertise().to_string()))
    }
}

async fn groups_discovery(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        json_bytes(
            discovery::aggregated_groups(),
            discovery::AGGREGATED_CONTENT_TYPE,
        )
    } else {
        json_bytes(discovery::group_list(), "application/json")
    }
}

async fn group_discovery(Path(group): Path<String>) -> Response {
    match discovery::group(&group) {
        Some(doc) => json_bytes(doc, "application/json"),
        None => ApiError::no_route(&format!("/apis/{group}")).into_response(),
    }
}

async fn group_version_discovery(Path((group, version)): Path<(String, String)>) -> Response {
    resource_list(&group, &version)
}

fn resource_list(group: &str, version: &str) -> Response {
    match discovery::resource_list(group, version) {
        Some(doc) => json_bytes(doc, "application/json"),
        None => ApiError::no_route(&format!("/apis/{group}/{version}")).into_response(),
    }
}

/// `/openapi/v2` is JSON only: client-go asks for protobuf first and falls
/// back to JSON on 406.
async fn openapi_v2(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json_ok = accept.is_empty()
        || accept.split(',').any(|r| {
            let media = r.split(';').next().unwrap_or_default().trim();
            matches!(media, "application/json" | "*/*" | "application/*")
        });
    if !json_ok {
        return ApiError::not_acceptable("only application/json is served for /openapi/v2")
            .into_response();
    }
    json_bytes(openapi::v2().json(), "application/json")
}

async fn openapi_v3_index() -> Response {
    json_bytes(openapi::v3_index(), "application/json")
}

async fn openapi_v3(Path(path): Path<String>, request: Request) -> Response {
    let Some(doc) = openapi::v3_group_version(&path) else {
        return ApiError::no_route(&format!("/openapi/v3/{path}")).into_response();
    };
    let pinned = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("hash=")))
        .is_some_and(|hash| hash == doc.hash());
    let mut response = json_bytes(doc.json(), "application/json");
    if pinned {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
    }
    response
}
