//! Pod `log` and `exec` through the API server to a node agent: a real
//! (plain TCP) API server in process, a fake kubelet behind TLS that demands
//! the API server's client certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use skiff_apiserver::node_proxy::{KubeletClientTls, NodeProxy};
use skiff_store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Pki {
    ca: String,
    kubelet: (String, String),
    apiserver_client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sans: Vec<String>, usage| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        kubelet: leaf(
            vec!["127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        apiserver_client: leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth),
        ca,
    }
}

/// What the fake kubelet saw, and the feed of its log stream.
#[derive(Default)]
struct Kubelet {
    requests: Mutex<Vec<String>>,
    log_feed: Mutex<Option<mpsc::Receiver<&'static str>>>,
}

type KubeletBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: &'static str) -> Response<KubeletBody> {
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

impl Kubelet {
    fn answer(&self, mut request: Request<hyper::body::Incoming>) -> Response<KubeletBody> {
        let uri = request.uri().to_string();
        self.requests.lock().expect("lock").push(uri);
        match request.uri().path() {
            "/containerLogs/default/web/app" => {
                let Some(feed) = self.log_feed.lock().expect("lock").take() else {
                    return text(StatusCode::OK, "");
                };
                let stream = futures::stream::unfold(feed, |mut feed| async move {
                    let line = feed.recv().await?;
                    Some((Ok(Frame::data(Bytes::from_static(line.as_bytes()))), feed))
                });
                Response::new(StreamBody::new(stream).boxed())
            }
            "/containerLogs/default/web/side" => text(
                StatusCode::BAD_REQUEST,
                "container \"side\" in pod \"web\" is waiting to start",
            ),
            "/exec/default/web/side" => {
                let protocol = request
                    .headers()
                    .get("sec-websocket-protocol")
                    .cloned()
                    .expect("protocol forwarded");
                assert!(request.headers().contains_key("sec-websocket-key"));
                let upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let mut io = TokioIo::new(upgrade.await.expect("upgrade"));
                    let mut buf = [0; 64];
                    loop {
                        let n = io.read(&mut buf).await.expect("read");
                        if n == 0 {
                            break;
                        }
                        io.write_all(&buf[..n]).await.expect("echo");
                    }
                });
                let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
                let headers = response.headers_mut();
                headers.insert(header::UPGRADE, "websocket".parse().expect("value"));
                headers.insert(header::CONNECTION, "Upgrade".parse().expect("value"));
                headers.insert("sec-websocket-accept", "accepted".parse().expect("value"));
                headers.insert("sec-websocket-protocol", protocol);
                response
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }
}

async fn start_kubelet(pki: &Pki) -> (SocketAddr, Arc<Kubelet>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).expect("ca"))
        .expect("add");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.kubelet.0.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(pki.kubelet.1.as_bytes()).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let kubelet = Arc::new(Kubelet::default());
    let state = Arc::clone(&kubelet);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let response = state.answer(request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, kubelet)
}

/// The API router served over plain TCP (TLS is not what is under test),
/// with upgrades, as `skiff_apiserver::ApiServer::serve` serves it.
async fn start_api(pki: &Pki, shutdown: &CancellationToken) -> SocketAddr {
    let store = Arc::new(MemoryStore::new().expect("memory store"));
    let rest = skiff_apiserver::start(
        store,
        "127.0.0.1:6443".parse().expect("addr"),
        shutdown.clone(),
    )
    .await
    .expect("api starts");
    let proxy = NodeProxy::new(&KubeletClientTls {
        ca_pem: pki.ca.clone(),
        cert_pem: pki.apiserver_client.0.clone(),
        key_pem: pki.apiserver_client.1.clone(),
    })
    .expect("proxy");
    let router = proxy.attach(skiff_apiserver::app(rest));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let router = router.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        tower::ServiceExt::oneshot(router.clone(), request.map(Body::new))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn send(
    api: SocketAddr,
    request: Request<Body>,
) -> (Response<hyper::body::Incoming>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(api).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let response = sender.send_request(request).await.expect("response");
    (response, driver)
}

async fn call(api: SocketAddr, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "api")
        .header(header::CONTENT_TYPE, "application/json")
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .expect("request");
    let (response, _driver) = send(api, request).await;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn setup(pki: &Pki, kubelet: SocketAddr, shutdown: &CancellationToken) -> SocketAddr {
    let api = start_api(pki, shutdown).await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (status, created) = call(api, "POST", "/api/v1/nodes", node).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let mut with_status = created.clone();
    with_status["status"] = json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port()}},
    });
    let (status, updated) = call(api, "PUT", "/api/v1/nodes/n1/status", with_status).await;
    assert_eq!(status, StatusCode::OK, "{updated}");

    for (name, node) in [
        ("web", Some("n1")),
        ("pending", None),
        ("lost", Some("gone")),
    ] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "x"}, {"name": "side", "image": "x"}]}});
        let (status, created) = call(api, "POST", PODS, pod).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        if let Some(node) = node {
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
            let (status, bound) =
                call(api, "POST", &format!("{PODS}/{name}/binding"), binding).await;
            assert_eq!(status, StatusCode::CREATED, "{bound}");
        }
    }
    api
}

#[tokio::test]
async fn logs_stream_from_the_kubelet_and_errors_are_statuses() {
    let pki = pki();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let (kubelet_addr, kubelet) = start_kubelet(&pki).await;
    let api = setup(&pki, kubelet_addr, &shutdown).await;

    // Streaming: the first line arrives before the kubelet sends the second.
    let (feed, rx) = mpsc::channel(4);
    *kubelet.log_feed.lock().expect("lock") = Some(rx);
    feed.send("one\n").await.expect("feed");
    let request = Request::get(format!(
        "{PODS}/web/log?container=app&follow=true&tailLines=5"
    ))
    .header(header::HOST, "api")
    .body(Body::empty())
    .expect("request");
    let (response, _driver) = send(api, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert_eq!(first, "one\n");
    feed.send("two\n").await.expect("feed");
    drop(feed);
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, "two\n");
    assert_eq!(
        kubelet.requests.lock().expect("lock")[0],
        "/containerLogs/default/web/app?container=app&follow=true&tailLines=5"
    );

    // The kubelet's own refusal comes back as a Status with its code.
    let (status, err) = call(
        api,
        "GET",
        &format!("{PODS}/web/log?container=side"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["kind"], "Status");
    assert_eq!(err["reason"], "BadRequest");
    assert_eq!(
        err["message"],
        "container \"side\" in pod \"web\" is waiting to start"
    );

    let expect = async |uri: &str, code: StatusCode, message: &str| {
        let (status, err) = call(api, "GET", uri, Value::Null).await;
        assert_eq!(status, code, "{uri}: {err}");
        assert_eq!(err["kind"], "Status", "{uri}");
        let text = err["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{uri}: {text}");
    };
    expect(
        &format!("{PODS}/web/log"),
        StatusCode::BAD_REQUEST,
        "a container name must be specified for pod web, choose one of: [app side]",
    )
    .await;
    expect(
        &format!("{PODS}/web/log?container=nope"),
        StatusCode::BAD_REQUEST,
        "container nope is not valid for pod web",
    )
    .await;
    expect(
        &format!("{PODS}/absent/log"),
        StatusCode::NOT_FOUND,
        "pods \"absent\" not found",
    )
    .await;
    expect(
        &format!("{PODS}/pending/log?container=app"),
        StatusCode::BAD_REQUEST,
        "pod pending does not have a host assigned",
    )
    .await;
    expect(
        &format!("{PODS}/lost/log?container=app"),
        StatusCode::NOT_FOUND,
        "nodes \"gone\" not found",
    )
    .await;

    // A kubelet that does not answer.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (_, mut node) = call(api, "GET", "/api/v1/nodes/n1", Value::Null).await;
    node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = json!(dead_port);
    let (status, _) = call(api, "PUT", "/api/v1/nodes/n1/status", node).await;
    assert_eq!(status, StatusCode::OK);
    expect(
        &format!("{PODS}/web/log?container=app"),
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("Get \"https://127.0.0.1:{dead_port}/containerLogs/default/web/app?container=app\": dial tcp"),
    )
    .await;
}

#[tokio::test]
async fn exec_upgrades_are_spliced_to_the_kubelet() {
    let pki = pki();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let (kubelet_addr, kubelet) = start_kubelet(&pki).await;
    let api = setup(&pki, kubelet_addr, &shutdown).await;

    let request = Request::get(format!(
        "{PODS}/web/exec?container=side&command=sh&stdin=true&stdout=true"
    ))
    .header(header::HOST, "api")
    .header(header::UPGRADE, "websocket")
    .header(header::CONNECTION, "Upgrade")
    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    .header("sec-websocket-version", "13")
    .header("sec-websocket-protocol", "v5.channel.k8s.io")
    .body(Body::empty())
    .expect("request");
    let (mut response, _driver) = send(api, request).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    assert_eq!(response.headers()["sec-websocket-accept"], "accepted");
    let upgraded = hyper::upgrade::on(&mut response).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping").await.expect("write");
    let mut buf = [0; 4];
    io.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");
    assert_eq!(
        kubelet.requests.lock().expect("lock")[0],
        "/exec/default/web/side?container=side&command=sh&stdin=true&stdout=true"
    );
}
