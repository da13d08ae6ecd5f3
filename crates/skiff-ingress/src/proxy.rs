//! The reverse proxy: HTTP and HTTPS listeners in front of the routing table.
//!
//! Clients speak HTTP/1.1 or HTTP/2 (ALPN `h2` over TLS, prior knowledge in
//! clear text); backends are spoken to in HTTP/1.1 over a pooled client,
//! so keep-alive connections to pods are reused across requests and
//! clients. Bodies stream in both directions, never buffered.
//!
//! Every request reads the current [`RoutingTable`] from a watch channel.
//! Publishing a new table swaps one `Arc`: requests already routed finish
//! against the table they started with, the next request on the same
//! keep-alive connection sees the new one, and listeners never restart.
//!
//! What the backend sees: the client's `Host` (an HTTP/2 `:authority` is
//! turned into `Host`), `X-Forwarded-For` with the client address appended,
//! `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! `X-Forwarded-Port`; hop-by-hop headers (RFC 9110 §7.6.1) are dropped in
//! both directions. An HTTP/1.1 `Upgrade` (WebSocket) is passed through:
//! after the backend's `101 Switching Protocols`, bytes are copied both
//! ways until either side closes.
//!
//! Backends that close connections (busybox `httpd` answers
//! `Connection: close` to everything) simply cost one new connection per
//! request; both sockets of every exchange have `TCP_NODELAY`, so small
//! answers never wait for delayed ACKs.
//!
//! A pooled connection can be closed by the backend just as a request is
//! written to it (its idle timeout and ours race). As upstream proxies do,
//! such a request is sent again once, on another connection, when
//! replaying it is safe: its method is idempotent (RFC 9110 §9.2.2) and it
//! has no body. Anything else gets the 502.
//!
//! Answers of the proxy itself: 404 when no rule and no default backend
//! match, 503 when the backend has no ready endpoint, 502 when the endpoint
//! cannot be reached.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routes::{RouteMatch, RoutingTable};

/// The body of proxied responses: the backend's, streamed, or a short text
/// of the proxy's own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The body of requests to backends: the client's, streamed, or nothing
/// (bodiless requests, which can be sent again).
type BackendBody = Either<Incoming, Empty<Bytes>>;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to an endpoint may take before the client gets 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unused backend connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long in-flight requests may run after shutdown before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (file descriptors exhausted, …).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Headers that describe one connection and are never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The scheme a listener serves, reported in `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Clear-text HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

/// Where a connection comes from and arrives.
#[derive(Debug, Clone, Copy)]
struct Peer {
    client: SocketAddr,
    scheme: Scheme,
    port: u16,
}

/// The proxy: cheap to clone, one backend connection pool shared by all
/// listeners.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    routes: watch::Receiver<Arc<RoutingTable>>,
    client: Client<HttpConnector, BackendBody>,
    server: auto::Builder<TokioExecutor>,
    /// Connection and tunnel tasks, waited for (up to [`DRAIN_TIMEOUT`]) at
    /// shutdown.
    tasks: TaskTracker,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy routing by whatever table `routes` holds at each request.
    pub fn new(routes: watch::Receiver<Arc<RoutingTable>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let mut server = auto::Builder::new(TokioExecutor::new());
        server.http1().timer(TokioTimer::new());
        Self {
            inner: Arc::new(Inner {
                routes,
                client,
                server,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Serves clear-text HTTP on `listener` until `shutdown`, then lets
    /// in-flight requests finish (for a bounded time).
    pub async fn serve_http(&self, listener: TcpListener, shutdown: CancellationToken) {
        self.accept_loop(listener, None, shutdown).await;
    }

    /// Serves HTTPS on `listener` with `tls` (see
    /// [`crate::tls::server_config`]) until `shutdown`, then lets in-flight
    /// requests finish (for a bounded time).
    pub async fn serve_https(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) {
        self.accept_loop(listener, Some(TlsAcceptor::from(tls)), shutdown)
            .await;
    }

    async fn accept_loop(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        let port = listener.local_addr().map_or(0, |a| a.port());
        let scheme = if tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        loop {
            let (stream, client) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, port, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            // Small responses must not wait for Nagle.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, %client, "setting TCP_NODELAY failed");
            }
            let peer = Peer {
                client,
                scheme,
                port,
            };
            let proxy = self.clone();
            let shutdown = shutdown.clone();
            let tls = tls.clone();
            self.inner.tasks.spawn(async move {
                match tls {
                    None => {
                        proxy
                            .serve_connection(TokioIo::new(stream), peer, shutdown)
                            .await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                proxy
                                    .serve_connection(TokioIo::new(stream), peer, shutdown)
                                    .await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %client, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        self.inner.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(port, "connections still open after the drain timeout");
        }
    }

    async fn serve_connection<I>(&self, io: I, peer: Peer, shutdown: CancellationToken)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
        });
        let connection = self
            .inner
            .server
            .serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(error, client = %peer.client, "client connection ended with an error");
        }
    }

    /// Routes and forwards one request.
    async fn handle(&self, mut req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let Some(host) = request_host(&req) else {
            return text(StatusCode::BAD_REQUEST, "invalid Host header\n");
        };
        let table = Arc::clone(&self.inner.routes.borrow());
        let endpoint = match table.route(&host, req.uri().path()) {
            RouteMatch::NotFound => {
                return text(StatusCode::NOT_FOUND, "no Ingress rule matches\n");
            }
            RouteMatch::Backend { backend, .. } => match backend.pick() {
                Some(endpoint) => endpoint,
                None => {
                    tracing::debug!(
                        backend = %backend.reference(),
                        problem = ?backend.problem(),
                        "no endpoint to send to"
                    );
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the backend has no ready endpoints\n",
                    );
                }
            },
        };
        drop(table);

        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        if let Err(error) = prepare_request(&mut req, endpoint, peer, host, upgrade) {
            tracing::debug!(%error, "request cannot be forwarded");
            return text(StatusCode::BAD_REQUEST, "invalid request target\n");
        }
        let mut response = match self.forward(req).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, %endpoint, "forwarding failed");
                return text(StatusCode::BAD_GATEWAY, "the backend cannot be reached\n");
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client_upgrade) => {
                    let backend_upgrade = hyper::upgrade::on(&mut response);
                    self.inner
                        .tasks
                        .spawn(tunnel(client_upgrade, backend_upgrade, endpoint));
                }
                None => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        "the backend switched protocols unasked\n",
                    );
                }
            }
        } else {
            strip_hop_by_hop(response.headers_mut());
        }
        response.map(Either::Left)
    }

    /// Sends a prepared request to its backend; a replayable request (see
    /// [`replayable`]) that loses its connection before any answer is sent
    /// once more.
    async fn forward(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if !replayable(&req) {
            return self.inner.client.request(req.map(Either::Left)).await;
        }
        let (parts, _) = req.into_parts();
        let again = Request::from_parts(parts.clone(), Either::Right(Empty::new()));
        match self
            .inner
            .client
            .request(Request::from_parts(parts, Either::Right(Empty::new())))
            .await
        {
            Err(error) if closed_before_answer(&error) => {
                tracing::debug!(%error, "backend connection closed before answering; retrying once");
                self.inner.client.request(again).await
            }
            result => result,
        }
    }
}

/// Whether a request may be sent to the backend a second time: idempotent
/// method, no body, no protocol upgrade.
fn replayable<B: hyper::body::Body>(req: &Request<B>) -> bool {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && req.body().is_end_stream() && !req.headers().contains_key(header::UPGRADE)
}

/// Whether forwarding failed because an established backend connection
/// closed before any response arrived (not a failed connect, not a timeout
/// or a malformed answer).
fn closed_before_answer(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<hyper::Error>())
        .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
}

/// The request's host: the `Host` header, or the HTTP/2 `:authority`.
/// `None` when the header is not text.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(host) => host.to_str().ok().map(str::to_owned),
        None => Some(
            req.uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
        ),
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to, if it does.
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// The comma-separated tokens of every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Rewrites a client request into the request to `endpoint`.
fn prepare_request<B>(
    req: &mut Request<B>,
    endpoint: SocketAddr,
    peer: Peer,
    host: String,
    upgrade: Option<HeaderValue>,
) -> Result<(), hyper::http::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(endpoint.to_string())
        .path_and_query(path)
        .build()?;
    *req.version_mut() = Version::HTTP_11;

    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let host = HeaderValue::try_from(host)?;
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }

    let client_ip = peer.client.ip().to_string();
    let forwarded_for = {
        let earlier: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if earlier.is_empty() {
            client_ip.clone()
        } else {
            format!("{}, {client_ip}", earlier.join(", "))
        }
    };
    headers.insert(X_FORWARDED_FOR, HeaderValue::try_from(forwarded_for)?);
    headers.insert(X_REAL_IP, HeaderValue::try_from(client_ip)?);
    headers.insert(X_FORWARDED_PROTO, peer.scheme.header_value());
    headers.insert(X_FORWARDED_HOST, host);
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(peer.port));
    Ok(())
}

/// Copies bytes between an upgraded client connection and the backend's.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    endpoint: SocketAddr,
) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, %endpoint, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        tracing::debug!(%error, %endpoint, "upgraded connection ended with an error");
    }
}

/// A short plain-text answer of the proxy itself.
fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;
