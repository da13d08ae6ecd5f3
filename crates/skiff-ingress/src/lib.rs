//! Ingress controller: HTTP and HTTPS (SNI) reverse proxy for Ingress rules
//! of the skiff IngressClass.
//!
//! The controller is built in two halves, as the rest of Skiff is:
//!
//! - pure parts that turn API objects into what the proxy needs:
//!   [`class`] decides which Ingresses are ours, [`routes`] builds the
//!   host/path [`RoutingTable`] with resolved endpoints, [`tls`] maps TLS
//!   hosts to certificates, [`status`] decides the load balancer status;
//! - IO parts: [`proxy`] serves HTTP and HTTPS from whatever table and
//!   certificates are current, and the controller loop behind [`run`]
//!   watches the API, rebuilds, publishes and writes status.
//!
//! The two halves meet in two `tokio::sync::watch` channels (one for the
//! routing table, one for certificates): a rebuild swaps an `Arc`, so a
//! change takes effect on the next request, and neither listeners nor open
//! connections are touched. Tests and benchmarks feed the channels
//! directly, without an API server.
#![warn(missing_docs)]

pub mod class;
mod controller;
pub mod proxy;
pub mod routes;
pub mod status;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use proxy::Proxy;
pub use routes::RoutingTable;
pub use tls::CertStore;

/// Names in the self-signed certificate served for unknown server names.
const FALLBACK_CERT_NAMES: [&str; 1] = ["skiff-ingress-default"];

/// What [`run`] serves and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// The clear-text HTTP listener.
    pub http_address: SocketAddr,
    /// The HTTPS listener.
    pub https_address: SocketAddr,
    /// Addresses written to `status.loadBalancer.ingress` of the Ingresses
    /// we serve (normally the node's IPs); empty leaves the status alone.
    pub status_addresses: Vec<IpAddr>,
    /// The name of our IngressClass, created (as the default class) if
    /// missing.
    pub class_name: String,
}

impl Default for IngressConfig {
    /// `0.0.0.0:80`, `0.0.0.0:443`, no status addresses, class `skiff`.
    fn default() -> Self {
        Self {
            http_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
            https_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443),
            status_addresses: Vec::new(),
            class_name: "skiff".to_owned(),
        }
    }
}

/// Why the ingress controller cannot run. None is retryable by calling
/// [`run`] again unchanged: they are configuration or host problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngressError {
    /// A listener address cannot be bound.
    #[error("binding {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The self-signed fallback certificate cannot be generated.
    #[error("generating the default certificate: {0}")]
    DefaultCertificate(#[source] rcgen::Error),
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The proxy's thread or its runtime cannot be started.
    #[error("starting the proxy's thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs the ingress controller until `shutdown`: ensures the IngressClass,
/// binds both listeners, waits for the caches, then serves and keeps the
/// routes, certificates and status up to date. In-flight requests get a
/// bounded time to finish after `shutdown`.
pub async fn run(
    client: kube::Client,
    config: IngressConfig,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(bind_error(address))
    };
    let http = bind(config.http_address).await?;
    let https = bind(config.https_address).await?;
    let (routes_tx, routes_rx) = watch::channel(Arc::new(RoutingTable::default()));
    let (certs_tx, certs_rx) = watch::channel(Arc::new(CertStore::default()));
    let resolver = tls::SniResolver::new(certs_rx, tls::self_signed(&FALLBACK_CERT_NAMES)?);
    let tls_config = tls::server_config(Arc::new(resolver))?;

    controller::ensure_class(&client, &config.class_name, &shutdown).await;
    let caches = controller::Caches::start(&client, &shutdown);
    if !caches.ready().await || shutdown.is_cancelled() {
        return Ok(());
    }
    tracing::info!(
        http = %config.http_address,
        https = %config.https_address,
        class = %config.class_name,
        "ingress controller serving"
    );
    let publisher = controller::Publisher {
        routes: routes_tx,
        certs: certs_tx,
        class_name: config.class_name,
        status_addresses: config.status_addresses,
    };
    let listeners = Listeners {
        http: http.into_std().map_err(bind_error(config.http_address))?,
        https: https.into_std().map_err(bind_error(config.https_address))?,
    };
    let served = serve_on_own_thread(routes_rx, listeners, tls_config, shutdown.clone());
    let ((), served) = tokio::join!(
        controller::sync_loop(client, caches, publisher, shutdown.clone()),
        served,
    );
    served
}

fn bind_error(address: SocketAddr) -> impl FnOnce(std::io::Error) -> IngressError {
    move |source| IngressError::Bind { address, source }
}

/// The bound listeners, handed to the proxy's thread.
struct Listeners {
    http: std::net::TcpListener,
    https: std::net::TcpListener,
}

/// Serves both listeners until `shutdown` on a thread of their own, with a
/// single-threaded runtime: every request hops between the client socket,
/// the backend socket and the pool's connection task, and on the server's
/// shared multi-threaded runtime each hop could wake another worker thread.
/// Profiles under load put those wake-ups and context switches at about a
/// quarter of the server's CPU; one event loop per proxy, as nginx has per
/// worker, avoids them.
async fn serve_on_own_thread(
    routes: watch::Receiver<Arc<RoutingTable>>,
    listeners: Listeners,
    tls_config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ingress-proxy".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(IngressError::Runtime)
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let http =
                            TcpListener::from_std(listeners.http).map_err(IngressError::Runtime)?;
                        let https = TcpListener::from_std(listeners.https)
                            .map_err(IngressError::Runtime)?;
                        let proxy = Proxy::new(routes);
                        tokio::join!(
                            proxy.serve_http(http, shutdown.clone()),
                            proxy.serve_https(https, tls_config, shutdown),
                        );
                        Ok(())
                    })
                });
            // The receiver only goes away when `run` itself was dropped.
            let _ = done_tx.send(served);
        })
        .map_err(IngressError::Runtime)?;
    done_rx.await.unwrap_or_else(|_| {
        Err(IngressError::Runtime(std::io::Error::other(
            "proxy thread died",
        )))
    })
}
