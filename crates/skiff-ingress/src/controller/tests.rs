//! [`crate::run`] against the fake API server: the class is ensured, the
//! caches feed the proxy, changes apply live, status is written once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use skiff_testing::FakeApi;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::class::{CONTROLLER, DEFAULT_CLASS_ANNOTATION};
use crate::{IngressConfig, run};

const INGRESSES: &str = "/apis/networking.k8s.io/v1/ingresses";
const CLASSES: &str = "/apis/networking.k8s.io/v1/ingressclasses";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// A backend on loopback answering its name.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |_| async move {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    Bytes::from(name),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

/// A port free a moment ago.
async fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn ingress(name: &str, class: Option<&str>, service: &str) -> Value {
    let mut value = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "default", "name": name, "resourceVersion": "2",
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": format!("{name}.example.com"), "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}},
        }]}}]},
    });
    if let Some(class) = class {
        value["spec"]["ingressClassName"] = json!(class);
    }
    value
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"namespace": "default", "name": name},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

fn slice(service: &str, endpoint: SocketAddr) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"namespace": "default", "name": format!("{service}-1"),
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": endpoint.port()}],
           "endpoints": [{"addresses": [endpoint.ip().to_string()],
                          "conditions": {"ready": true}}]})
}

/// `GET /` with `Host: host`: the status and body.
async fn get(address: SocketAddr, host: &str) -> Option<(StatusCode, String)> {
    let stream = TcpStream::connect(address).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` every 20 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn serves_owned_ingresses_reloads_live_and_writes_status() {
    let (a, b) = (backend("a").await, backend("b").await);
    let api = FakeApi::new(vec![
        (
            INGRESSES,
            vec![
                ingress("web", None, "svc-a"),
                ingress("theirs", Some("nginx"), "svc-a"),
            ],
        ),
        (SERVICES, vec![service("svc-a"), service("svc-b")]),
        (SLICES, vec![slice("svc-a", a), slice("svc-b", b)]),
    ]);
    let config = IngressConfig {
        http_address: free_port().await,
        https_address: free_port().await,
        status_addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))],
        class_name: "skiff".to_owned(),
    };
    let http = config.http_address;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(api.client(), config, shutdown.clone()));

    // The class is created as the default, with our controller.
    eventually("the IngressClass create", || async {
        api.writes().iter().any(|w| w.method == "POST")
    })
    .await;
    let create = api
        .writes()
        .into_iter()
        .find(|w| w.method == "POST")
        .unwrap();
    assert_eq!(create.path, CLASSES);
    assert_eq!(create.body["metadata"]["name"], "skiff");
    assert_eq!(create.body["spec"]["controller"], CONTROLLER);
    assert_eq!(
        create.body["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION],
        "true"
    );
    // The watch shows it; then the class-less Ingress is ours.
    api.send(CLASSES, "ADDED", create.body.clone()).await;
    eventually("routing to svc-a", || async {
        get(http, "web.example.com").await == Some((StatusCode::OK, "a".to_owned()))
    })
    .await;
    // Another class's Ingress is not served.
    assert_eq!(
        get(http, "theirs.example.com").await.map(|(s, _)| s),
        Some(StatusCode::NOT_FOUND)
    );

    // Status: written for ours only, once.
    eventually("the status write", || async {
        api.writes().iter().any(|w| w.method == "PATCH")
    })
    .await;
    let patches: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0].path,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status"
    );
    assert_eq!(
        patches[0].body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.5"}]}}})
    );

    // An update (with the status now shown) moves the route without a
    // status write, and the open listener serves it.
    let mut moved = ingress("web", None, "svc-b");
    moved["status"] = patches[0].body["status"].clone();
    api.send(INGRESSES, "MODIFIED", moved).await;
    eventually("routing to svc-b", || async {
        get(http, "web.example.com").await == Some((StatusCode::OK, "b".to_owned()))
    })
    .await;
    let methods: BTreeMap<String, usize> = api.writes().iter().fold(BTreeMap::new(), |mut m, w| {
        *m.entry(w.method.clone()).or_default() += 1;
        m
    });
    assert_eq!(
        methods,
        BTreeMap::from([("PATCH".to_owned(), 1), ("POST".to_owned(), 1)])
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_existing_class_is_left_alone() {
    let config = IngressConfig {
        http_address: free_port().await,
        https_address: free_port().await,
        ..IngressConfig::default()
    };
    // Created by someone else, so the create answers 409 AlreadyExists.
    let api = FakeApi::new(Vec::new());
    api.store(
        &format!("{CLASSES}/{}", config.class_name),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": config.class_name},
            "spec": {"controller": CONTROLLER},
        }),
    );
    let http = config.http_address;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(api.client(), config, shutdown.clone()));
    eventually("serving", || async {
        get(http, "any").await.map(|(s, _)| s) == Some(StatusCode::NOT_FOUND)
    })
    .await;
    assert_eq!(api.writes().len(), 1, "one create attempt, no retry");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_taken_port_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = IngressConfig {
        http_address: taken.local_addr().unwrap(),
        https_address: free_port().await,
        ..IngressConfig::default()
    };
    let error = run(
        FakeApi::default().client(),
        config,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("binding {}", taken.local_addr().unwrap())),
        "{error}"
    );
}
