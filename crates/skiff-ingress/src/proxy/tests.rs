//! The proxy on loopback: real listeners and backends, routing tables fed
//! directly through the watch channel.

use std::collections::BTreeMap;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::*;
use crate::routes::Inputs;
use crate::tls::{CertStore, SECRET_TYPE_TLS, SniResolver, self_signed, server_config};

/// A backend on loopback that answers JSON describing the request it got,
/// echoes the body of `/echo` as it streams in, and echoes bytes after an
/// `Upgrade`.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service =
                    service_fn(
                        move |req| async move { Ok::<_, Infallible>(backend_answer(name, req)) },
                    );
                // Errors are the client's doing (closed connections).
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    address
}

fn backend_answer(name: &str, mut req: Request<Incoming>) -> Response<ProxyBody> {
    if req.uri().path() == "/echo" {
        return Response::new(Either::Left(req.into_body()));
    }
    if req.headers().contains_key(header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                io.write_all(&buf[..n]).await.unwrap();
            }
        });
        let mut response = Response::new(Either::Right(Full::default()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("echo"));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return response;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let body = json!({
        "backend": name,
        "path": req.uri().path_and_query().map(|p| p.as_str()),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut response = Response::new(Either::Right(Full::from(body.to_string())));
    // A hop-by-hop header the proxy must not pass on.
    response
        .headers_mut()
        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    response
}

/// An Ingress at second `age` with the given spec.
fn ingress(name: &str, age: u32, spec: Value) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": name,
                "creationTimestamp": format!("2025-01-01T00:00:{age:02}Z"),
            },
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn path(path: &str, service: &str) -> Value {
    json!({"path": path, "pathType": "Prefix",
           "backend": {"service": {"name": service, "port": {"number": 80}}}})
}

/// Service `name` (port 80 "http") with one EndpointSlice per endpoint, so
/// endpoints may listen on different ports.
#[derive(Default)]
struct Cluster {
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

impl Cluster {
    fn service(mut self, name: &str, endpoints: &[(SocketAddr, bool)]) -> Self {
        self.services.push(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }))
            .unwrap(),
        ));
        for (i, (address, ready)) in endpoints.iter().enumerate() {
            self.slices.push(Arc::new(
                serde_json::from_value(json!({
                    "metadata": {
                        "namespace": "default",
                        "name": format!("{name}-{i}"),
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": address.port()}],
                    "endpoints": [{"addresses": [address.ip().to_string()],
                                   "conditions": {"ready": ready}}],
                }))
                .unwrap(),
            ));
        }
        self
    }

    fn table(&self, ingresses: &[Arc<Ingress>]) -> Arc<RoutingTable> {
        Arc::new(RoutingTable::build(&Inputs {
            ingresses,
            services: &self.services,
            endpoint_slices: &self.slices,
        }))
    }
}

/// A proxy serving HTTP on loopback with `table`; the sender swaps tables.
struct Running {
    http: SocketAddr,
    routes: watch::Sender<Arc<RoutingTable>>,
    proxy: Proxy,
    shutdown: CancellationToken,
}

impl Running {
    async fn start(table: Arc<RoutingTable>) -> Self {
        let (routes, rx) = watch::channel(table);
        let proxy = Proxy::new(rx);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let serving = proxy.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { serving.serve_http(listener, token).await });
        Self {
            http,
            routes,
            proxy,
            shutdown,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One HTTP/1.1 connection to the proxy.
async fn connect(address: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// Sends `GET path` with `Host: host` on `sender`; the status and, for a
/// backend's answer, its JSON.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (StatusCode, Option<Value>, HeaderMap) {
    let request = Request::get(path)
        .header(header::HOST, host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).ok(), headers)
}

/// `GET` on a fresh connection: the status and the answering backend.
async fn get(address: SocketAddr, host: &str, path: &str) -> (StatusCode, Option<String>) {
    let (status, body, _) = get_on(&mut connect(address).await, host, path).await;
    let name = body.map(|b| b["backend"].as_str().unwrap().to_owned());
    (status, name)
}

#[tokio::test]
async fn routes_by_host_and_path() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cluster = Cluster::default()
        .service("svc-a", &[(a, true)])
        .service("svc-b", &[(b, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [
            {"host": "one.example.com", "http": {"paths": [path("/", "svc-a"), path("/b", "svc-b")]}},
            {"host": "two.example.com", "http": {"paths": [path("/", "svc-b")]}},
        ]}),
    )]);
    let proxy = Running::start(table).await;
    let cases = [
        ("one.example.com", "/", "a"),
        ("one.example.com", "/b/c", "b"),
        ("one.example.com", "/bc", "a"),
        ("ONE.example.com:80", "/x", "a"),
        ("two.example.com", "/", "b"),
    ];
    for (host, path, want) in cases {
        assert_eq!(
            get(proxy.http, host, path).await,
            (StatusCode::OK, Some(want.to_owned())),
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn unmatched_is_404_and_unready_is_503_and_unreachable_is_502() {
    let a = backend("a").await;
    // A port nothing listens on: bind, note it, close.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let cluster = Cluster::default()
        .service("up", &[(a, true)])
        .service("down", &[(a, false)])
        .service("gone", &[(closed, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [{"host": "x.example.com", "http": {"paths": [
            path("/up", "up"), path("/down", "down"), path("/gone", "gone"), path("/missing", "nope"),
        ]}}]}),
    )]);
    let proxy = Running::start(table).await;
    let status = |(s, _): (StatusCode, Option<String>)| s;
    assert_eq!(
        status(get(proxy.http, "x.example.com", "/up").await),
        StatusCode::OK
    );
    assert_eq!(
        status(get(proxy.http, "x.example.com", "/elsewhere").await),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(get(proxy.http, "y.example.com", "/up").await),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(get(proxy.http, "x.example.com", "/down").await),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status(get(proxy.http, "x.example.com", "/missing").await),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status(get(proxy.http, "x.example.com", "/gone").await),
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn default_backend_takes_what_no_rule_matches() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cluster = Cluster::default()
        .service("svc-a", &[(a, true)])
        .service("svc-b", &[(b, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({
            "defaultBackend": {"service": {"name": "svc-b", "port": {"name": "http"}}},
            "rules": [{"host": "a.example.com", "http": {"paths": [path("/", "svc-a")]}}],
        }),
    )]);
    let proxy = Running::start(table).await;
    assert_eq!(
        get(proxy.http, "a.example.com", "/").await.1.as_deref(),
        Some("a")
    );
    assert_eq!(get(proxy.http, "other", "/x").await.1.as_deref(), Some("b"));
}

#[tokio::test]
async fn requests_spread_over_ready_endpoints() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let cluster = Cluster::default().service("svc", &[(a, true), (b, true), (c, false)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [{"http": {"paths": [path("/", "svc")]}}]}),
    )]);
    let proxy = Running::start(table).await;
    let mut sender = connect(proxy.http).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let (status, body, _) = get_on(&mut sender, "any", "/").await;
        assert_eq!(status, StatusCode::OK);
        *counts
            .entry(body.unwrap()["backend"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 10)])
    );
}

#[tokio::test]
async fn forwarded_headers_and_host_reach_the_backend() {
    let a = backend("a").await;
    let cluster = Cluster::default().service("svc", &[(a, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [{"http": {"paths": [path("/", "svc")]}}]}),
    )]);
    let proxy = Running::start(table).await;
    let mut sender = connect(proxy.http).await;
    let request = Request::get("/p?q=1")
        .header(header::HOST, "Site.example.com:8080")
        .header("x-forwarded-for", "203.0.113.7")
        .header(header::CONNECTION, "x-private")
        .header("x-private", "secret")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("keep-alive"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/p?q=1");
    assert_eq!(seen["version"], "HTTP/1.1");
    let headers = &seen["headers"];
    assert_eq!(headers["host"], "Site.example.com:8080");
    assert_eq!(headers["x-forwarded-host"], "Site.example.com:8080");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-port"], proxy.http.port().to_string());
    assert_eq!(headers.get("x-private"), None);
}

#[tokio::test]
async fn table_swap_applies_to_the_next_request_on_an_open_connection() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cluster = Cluster::default()
        .service("svc-a", &[(a, true)])
        .service("svc-b", &[(b, true)]);
    let to = |service: &str| {
        cluster.table(&[ingress(
            "i",
            0,
            json!({"rules": [{"host": "app.example.com", "http": {"paths": [path("/", service)]}}]}),
        )])
    };
    let proxy = Running::start(to("svc-a")).await;
    let mut sender = connect(proxy.http).await;
    let (_, body, _) = get_on(&mut sender, "app.example.com", "/").await;
    assert_eq!(body.unwrap()["backend"], "a");

    proxy.routes.send_replace(to("svc-b"));
    let (_, body, _) = get_on(&mut sender, "app.example.com", "/").await;
    assert_eq!(body.unwrap()["backend"], "b");

    // An Ingress removed: the same connection now gets 404, then back.
    proxy.routes.send_replace(cluster.table(&[]));
    let (status, _, _) = get_on(&mut sender, "app.example.com", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    proxy.routes.send_replace(to("svc-a"));
    let (_, body, _) = get_on(&mut sender, "app.example.com", "/").await;
    assert_eq!(body.unwrap()["backend"], "a");
    assert!(!sender.is_closed());
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let a = backend("a").await;
    let cluster = Cluster::default().service("svc", &[(a, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [{"http": {"paths": [path("/", "svc")]}}]}),
    )]);
    let proxy = Running::start(table).await;
    let stream = TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let (chunks, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(tokio_stream_from(rx));
    let request = Request::post("/echo")
        .header(header::HOST, "x")
        .body(body)
        .unwrap();
    chunks
        .send(Ok(Frame::data(Bytes::from_static(b"first"))))
        .await
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let mut body = response.into_body();
    // The first chunk comes back while the request is still open.
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    chunks
        .send(Ok(Frame::data(Bytes::from_static(b"second"))))
        .await
        .unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "second");
    drop(chunks);
    assert!(body.frame().await.is_none());
}

/// A stream of what `rx` receives.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Unpin {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[tokio::test]
async fn upgrades_are_passed_through() {
    let a = backend("a").await;
    let cluster = Cluster::default().service("svc", &[(a, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [{"http": {"paths": [path("/", "svc")]}}]}),
    )]);
    let proxy = Running::start(table).await;
    let stream = TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection.with_upgrades());
    let request = Request::get("/ws")
        .header(header::HOST, "x")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()[header::UPGRADE], "echo");
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    for message in [&b"ping"[..], b"pong pong"] {
        io.write_all(message).await.unwrap();
        let mut buf = vec![0; message.len()];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, message);
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let (_routes, rx) = watch::channel(Arc::new(RoutingTable::default()));
    let proxy = Proxy::new(rx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { proxy.serve_http(listener, shutdown).await }
    });
    assert_eq!(get(address, "x", "/").await.0, StatusCode::NOT_FOUND);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(address).await.is_err());
}

/// A CA and leaf certificates it signs.
struct TestCa {
    certificate: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "skiff test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Self {
            certificate,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A `kubernetes.io/tls` Secret for `hosts`, and the leaf's DER.
    fn secret(&self, name: &str, hosts: &[&str]) -> (Arc<Secret>, Vec<u8>) {
        let params = rcgen::CertificateParams::new(
            hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let mut secret: Secret = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name},
            "type": SECRET_TYPE_TLS,
        }))
        .unwrap();
        secret.data = Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(leaf.pem().into_bytes())),
            (
                "tls.key".to_owned(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
        ]));
        (Arc::new(secret), leaf.der().to_vec())
    }

    /// A client trusting only this CA, offering `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_and_speaks_both_http_versions() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cluster = Cluster::default()
        .service("svc-a", &[(a, true)])
        .service("svc-b", &[(b, true)]);
    let ca = TestCa::new();
    let (secret_a, leaf_a) = ca.secret("cert-a", &["a.example.com"]);
    let (secret_w, leaf_w) = ca.secret("cert-w", &["*.example.com"]);
    let ingresses = [ingress(
        "i",
        0,
        json!({
            "tls": [
                {"hosts": ["a.example.com"], "secretName": "cert-a"},
                {"hosts": ["*.example.com"], "secretName": "cert-w"},
            ],
            "rules": [
                {"host": "a.example.com", "http": {"paths": [path("/", "svc-a")]}},
                {"host": "*.example.com", "http": {"paths": [path("/", "svc-b")]}},
            ],
        }),
    )];
    let certs = CertStore::build(&ingresses, &[secret_a, secret_w]);
    assert!(certs.problems().is_empty());
    let (_certs, certs_rx) = watch::channel(Arc::new(certs));
    let resolver = SniResolver::new(certs_rx, self_signed(&["fallback"]).unwrap());
    let tls = server_config(Arc::new(resolver)).unwrap();
    let proxy = Running::start(cluster.table(&ingresses)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = listener.local_addr().unwrap();
    let serving = proxy.proxy.clone();
    let token = proxy.shutdown.clone();
    tokio::spawn(async move { serving.serve_https(listener, tls, token).await });

    // HTTP/1.1 (ALPN http/1.1) to the exact host.
    let connector = ca.connector(&[b"http/1.1"]);
    let stream = TcpStream::connect(https).await.unwrap();
    let name = ServerName::try_from("a.example.com").unwrap();
    let tls_stream = connector.connect(name, stream).await.unwrap();
    assert_eq!(
        tls_stream.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        leaf_a
    );
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls_stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/")
        .header(header::HOST, "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let seen: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["backend"], "a");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    // HTTP/2 (ALPN h2) to a host under the wildcard: `:authority` routes.
    let connector = ca.connector(&[b"h2"]);
    let stream = TcpStream::connect(https).await.unwrap();
    let name = ServerName::try_from("b.example.com").unwrap();
    let tls_stream = connector.connect(name, stream).await.unwrap();
    assert_eq!(tls_stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls_stream.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        leaf_w
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls_stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        let request = Request::get("https://b.example.com/h2")
            .version(Version::HTTP_2)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        let seen: Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        assert_eq!(seen["backend"], "b");
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["headers"]["host"], "b.example.com");
    }

    // A name no Secret covers gets the self-signed fallback, which this
    // client does not trust.
    let stream = TcpStream::connect(https).await.unwrap();
    let name = ServerName::try_from("other.org").unwrap();
    assert!(
        ca.connector(&[b"http/1.1"])
            .connect(name, stream)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn certificate_swap_applies_to_new_handshakes() {
    let ca = TestCa::new();
    let (old_secret, old_leaf) = ca.secret("cert", &["a.example.com"]);
    let (new_secret, new_leaf) = ca.secret("cert", &["a.example.com"]);
    let ingresses = [ingress(
        "i",
        0,
        json!({"tls": [{"hosts": ["a.example.com"], "secretName": "cert"}]}),
    )];
    let (certs, certs_rx) = watch::channel(Arc::new(CertStore::build(&ingresses, &[old_secret])));
    let resolver = SniResolver::new(certs_rx, self_signed(&["fallback"]).unwrap());
    let tls = server_config(Arc::new(resolver)).unwrap();
    let proxy = Running::start(Arc::new(RoutingTable::default())).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = listener.local_addr().unwrap();
    let serving = proxy.proxy.clone();
    let token = proxy.shutdown.clone();
    tokio::spawn(async move { serving.serve_https(listener, tls, token).await });

    let leaf = |connector: TlsConnector| async move {
        let stream = TcpStream::connect(https).await.unwrap();
        let name = ServerName::try_from("a.example.com").unwrap();
        let tls = connector.connect(name, stream).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    assert_eq!(leaf(ca.connector(&[])).await, old_leaf);
    certs.send_replace(Arc::new(CertStore::build(&ingresses, &[new_secret])));
    assert_eq!(leaf(ca.connector(&[])).await, new_leaf);
}

#[test]
fn hop_by_hop_headers_are_stripped_with_those_connection_names() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("close, X-Trace"),
    );
    headers.insert("x-trace", HeaderValue::from_static("1"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    strip_hop_by_hop(&mut headers);
    assert_eq!(
        headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["content-type"]
    );
}

#[test]
fn upgrade_needs_http11_and_the_connection_token() {
    let request = |version, connection: &str| {
        Request::get("/")
            .version(version)
            .header(header::CONNECTION, connection)
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap()
    };
    assert_eq!(
        upgrade_protocol(&request(Version::HTTP_11, "keep-alive, Upgrade")),
        Some(HeaderValue::from_static("websocket"))
    );
    assert_eq!(
        upgrade_protocol(&request(Version::HTTP_11, "keep-alive")),
        None
    );
    assert_eq!(
        upgrade_protocol(&request(Version::HTTP_10, "upgrade")),
        None
    );
}

/// How a [`raw_backend`] treats the requests on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawMode {
    /// Answers every request and keeps the connection open.
    KeepAlive,
    /// Answers one request with `Connection: close`, then closes (busybox
    /// `httpd`).
    CloseEach,
    /// On the first connection only: answers the first request, then reads
    /// the second and closes without answering, as a backend whose idle
    /// timeout fires just as the request arrives. Later connections keep
    /// alive.
    DropSecond,
}

/// A hand-written HTTP/1.1 backend on loopback answering `ok`; the counter
/// holds the connections it accepted so far.
async fn raw_backend(mode: RawMode) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let mut served = 0;
                while read_request(&mut stream).await {
                    if mode == RawMode::DropSecond && first && served == 1 {
                        return;
                    }
                    let close = mode == RawMode::CloseEach;
                    let answer = if close {
                        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    served += 1;
                    if close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (address, accepted)
}

/// Reads one whole request (head and `Content-Length` body); false at the
/// end of the connection.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0; 1024];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while data.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A proxy whose only route, `raw.example.com/`, goes to `backend`.
async fn raw_proxy(backend: SocketAddr) -> Running {
    let cluster = Cluster::default().service("raw", &[(backend, true)]);
    let table = cluster.table(&[ingress(
        "i",
        0,
        json!({"rules": [{"host": "raw.example.com", "http": {"paths": [path("/", "raw")]}}]}),
    )]);
    Running::start(table).await
}

/// Sends `method /` with `body` on `sender`: the status and the body.
async fn send_raw(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: Method,
    body: &'static str,
) -> (StatusCode, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri("/")
        .header(header::HOST, "raw.example.com")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

async fn connect_full(address: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

#[tokio::test]
async fn keep_alive_backend_connections_are_reused() {
    let (backend, accepted) = raw_backend(RawMode::KeepAlive).await;
    let proxy = raw_proxy(backend).await;
    // Separate client connections share the pooled backend connection.
    for _ in 0..5 {
        let mut sender = connect_full(proxy.http).await;
        let answer = send_raw(&mut sender, Method::GET, "").await;
        assert_eq!(answer, (StatusCode::OK, Bytes::from_static(b"ok")));
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn backends_closing_every_connection_get_a_new_one_per_request() {
    let (backend, accepted) = raw_backend(RawMode::CloseEach).await;
    let proxy = raw_proxy(backend).await;
    let mut sender = connect_full(proxy.http).await;
    for method in [Method::GET, Method::POST, Method::GET] {
        let body = if method == Method::POST { "data" } else { "" };
        let (status, answer) = send_raw(&mut sender, method.clone(), body).await;
        assert_eq!(
            (status, &answer[..]),
            (StatusCode::OK, &b"ok"[..]),
            "{method}"
        );
    }
    // The client's own connection stays open: the backend's
    // `Connection: close` is hop-by-hop.
    assert!(!sender.is_closed());
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idempotent_request_on_a_connection_closed_under_it_is_sent_again() {
    let (backend, accepted) = raw_backend(RawMode::DropSecond).await;
    let proxy = raw_proxy(backend).await;
    let mut sender = connect_full(proxy.http).await;
    assert_eq!(
        send_raw(&mut sender, Method::GET, "").await.0,
        StatusCode::OK
    );
    // Sent on the pooled connection, which closes without answering; the
    // proxy repeats it on a new one.
    let answer = send_raw(&mut sender, Method::GET, "").await;
    assert_eq!(answer, (StatusCode::OK, Bytes::from_static(b"ok")));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn request_with_a_body_is_not_sent_again() {
    let (backend, accepted) = raw_backend(RawMode::DropSecond).await;
    let proxy = raw_proxy(backend).await;
    let mut sender = connect_full(proxy.http).await;
    assert_eq!(
        send_raw(&mut sender, Method::GET, "").await.0,
        StatusCode::OK
    );
    // The backend may have acted on it: the client decides, on a 502.
    let (status, _) = send_raw(&mut sender, Method::POST, "data").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The next request gets a fresh connection.
    assert_eq!(
        send_raw(&mut sender, Method::GET, "").await.0,
        StatusCode::OK
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn only_bodiless_idempotent_requests_are_replayable() {
    let request = |method: Method, body: &'static str| {
        Request::builder()
            .method(method)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    assert!(replayable(&request(Method::GET, "")));
    assert!(replayable(&request(Method::HEAD, "")));
    assert!(replayable(&request(Method::DELETE, "")));
    assert!(!replayable(&request(Method::POST, "")));
    assert!(!replayable(&request(Method::PATCH, "")));
    assert!(!replayable(&request(Method::PUT, "data")));
    let mut upgrade = request(Method::GET, "");
    upgrade
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert!(!replayable(&upgrade));
}
