//! [`run`] and [`publish::publish`] against a fake API server: the watch
//! feeds the index, the server answers on loopback, and the kube-dns Service
//! and EndpointSlice are written with the port actually bound.

use std::future::Future;
use std::io::Write as _;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use skiff_testing::FakeApi;

use super::*;
use crate::testing::*;

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NAMESPACES: &str = "/api/v1/namespaces";
const KUBE_DNS: &str = "/api/v1/namespaces/kube-system/services/kube-dns";
const KUBE_DNS_SLICE: &str =
    "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-skiff";

/// Poll `check` until it returns `Some`, for at most [`TIMEOUT`].
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn to_json<T: k8s_openapi::serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

fn test_config() -> DnsConfig {
    DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: Upstreams::Servers(vec![]),
        publish: Some(PublishEndpoint {
            node_ip: "127.0.0.1".parse().unwrap(),
            node_name: Some("node-1".into()),
        }),
        ..DnsConfig::default()
    }
}

#[tokio::test]
async fn run_answers_from_the_watch_and_publishes_its_port() {
    let web = service(
        "default",
        "web",
        &["10.43.0.20"],
        vec![port("http", 80, "TCP")],
    );
    let api = FakeApi::new(vec![
        (SERVICES, vec![to_json(&web)]),
        (SLICES, vec![]),
        (NAMESPACES, vec![to_json(&namespace("default"))]),
    ]);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(api.client(), test_config(), shutdown.clone()));

    // The published slice carries the port the server bound.
    let slice = eventually("the EndpointSlice", || async { api.object(KUBE_DNS_SLICE) }).await;
    let service = api.object(KUBE_DNS).expect("the kube-dns Service");
    assert_eq!(service["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["uid"],
        service["metadata"]["uid"]
    );
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["127.0.0.1"]));
    let bound = u16::try_from(slice["ports"][0]["port"].as_u64().unwrap()).unwrap();
    assert_eq!(slice["ports"][1]["port"], slice["ports"][0]["port"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], bound));
    let client = udp_client(addr).await;

    let name = "web.default.svc.cluster.local.";
    let answer = eventually("the listed Service", || {
        let mut client = client.clone();
        async move {
            let response = query(&mut client, name, RecordType::A).await;
            (!response.answers.is_empty()).then_some(response)
        }
    })
    .await;
    assert_eq!(answer.answers[0].data.to_string(), "10.43.0.20");

    // Watch events: a headless Service and its endpoints appear…
    let db = headless("default", "db", vec![port("pg", 5432, "TCP")]);
    let db_slice = slice_of_db();
    api.send(SERVICES, "ADDED", to_json(&db)).await;
    api.send(SLICES, "ADDED", to_json(&db_slice)).await;
    let hostname = "db-0.db.default.svc.cluster.local.";
    eventually("the watched endpoint", || {
        let mut client = client.clone();
        async move {
            let response = query(&mut client, hostname, RecordType::A).await;
            (response.answers.len() == 1).then_some(())
        }
    })
    .await;
    // …and a deleted Service is gone.
    api.send(SERVICES, "DELETED", to_json(&web)).await;
    eventually("the deletion", || {
        let mut client = client.clone();
        async move {
            let response = query(&mut client, name, RecordType::A).await;
            (response.metadata.response_code == ResponseCode::NXDomain).then_some(())
        }
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("run stops")
        .unwrap()
        .unwrap();
}

fn slice_of_db() -> k8s_openapi::api::discovery::v1::EndpointSlice {
    slice(
        "default",
        "db-1",
        "db",
        vec![endpoint("10.42.0.10", Some("db-0"), Some(true))],
        vec![slice_port("pg", 5432, "TCP")],
    )
}

#[tokio::test]
async fn a_wildcard_listen_serves_on_the_published_node_ip_only() {
    let api = FakeApi::new(vec![
        (SERVICES, vec![]),
        (SLICES, vec![]),
        (NAMESPACES, vec![]),
    ]);
    let config = DnsConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..test_config()
    };
    assert_eq!(config.listen_address().ip().to_string(), "127.0.0.1");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(api.client(), config, shutdown.clone()));
    let slice = eventually("the EndpointSlice", || async { api.object(KUBE_DNS_SLICE) }).await;
    let bound = u16::try_from(slice["ports"][0]["port"].as_u64().unwrap()).unwrap();
    let mut client = udp_client(SocketAddr::from(([127, 0, 0, 1], bound))).await;
    let response = query(&mut client, "dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(response.answers.len(), 1);
    // Another local address is not served: nothing listens there.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(("127.0.0.2", bound)).await.unwrap();
    socket.send(&[0; 12]).await.unwrap();
    let mut buffer = [0; 512];
    let refused = tokio::time::timeout(TIMEOUT, socket.recv(&mut buffer))
        .await
        .expect("an ICMP error, not silence");
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn publish_corrects_what_others_changed_and_leaves_what_is_right() {
    let publication = Publication {
        service_ip: "10.43.0.10".parse().unwrap(),
        node_ip: "192.0.2.7".parse().unwrap(),
        port: 10053,
        node_name: None,
    };
    // Someone gave the Service a selector, and the slice an old port.
    let mut service = to_json(&publish::desired_service(publication.service_ip));
    service["metadata"]["uid"] = json!("svc-uid");
    service["spec"]["selector"] = json!({"k8s-app": "kube-dns"});
    let mut old = publication.clone();
    old.port = 9999;
    let slice = to_json(&publish::desired_slice(&old, "svc-uid"));
    let api = FakeApi::new(vec![]);
    {
        // Seed the stored objects through the API, as their creator did.
        let client = api.client();
        let services: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(client.clone(), "kube-system");
        services
            .create(
                &Default::default(),
                &serde_json::from_value(service).unwrap(),
            )
            .await
            .unwrap();
        let slices: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            kube::Api::namespaced(client, "kube-system");
        slices
            .create(&Default::default(), &serde_json::from_value(slice).unwrap())
            .await
            .unwrap();
    }
    let seeded = api.writes().len();
    let stored_version = api.object(KUBE_DNS_SLICE).unwrap()["metadata"]["resourceVersion"].clone();
    publish::publish(&api.client(), &publication).await.unwrap();
    let writes = api.writes()[seeded..].to_vec();
    let summary: Vec<(&str, &str)> = writes
        .iter()
        .map(|w| (w.method.as_str(), w.path.as_str()))
        .collect();
    assert_eq!(summary, [("PATCH", KUBE_DNS), ("PUT", KUBE_DNS_SLICE)]);
    assert_eq!(writes[0].body["spec"]["selector"], Value::Null);
    assert!(
        api.object(KUBE_DNS).unwrap()["spec"]
            .get("selector")
            .is_none()
    );
    let stored = api.object(KUBE_DNS_SLICE).unwrap();
    assert_eq!(stored["ports"][0]["port"], 10053);
    // The update is conditional on the version read.
    assert_eq!(
        writes[1].body["metadata"]["resourceVersion"],
        stored_version
    );
    // Right now: nothing more to write.
    let before = api.writes().len();
    publish::publish(&api.client(), &publication).await.unwrap();
    assert_eq!(api.writes().len(), before);
}

#[tokio::test]
async fn upstreams_come_from_resolv_conf_without_this_server() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "nameserver 10.43.0.10\nnameserver 127.0.0.1\nnameserver 192.0.2.53"
    )
    .unwrap();
    let config = DnsConfig {
        upstreams: Upstreams::ResolvConf(file.path().into()),
        ..test_config()
    };
    let upstreams = config
        .upstream_servers("0.0.0.0:53".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(upstreams, ["192.0.2.53:53".parse().unwrap()]);
    let missing = DnsConfig {
        upstreams: Upstreams::ResolvConf("/nonexistent/resolv.conf".into()),
        ..test_config()
    };
    let error = missing
        .upstream_servers("0.0.0.0:53".parse().unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("/nonexistent/resolv.conf"));
}

#[tokio::test]
async fn run_refuses_a_bad_domain_and_a_taken_port() {
    let api = FakeApi::new(vec![]);
    let config = DnsConfig {
        cluster_domain: "bad..domain".into(),
        ..test_config()
    };
    let error = run(api.client(), config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::Zone(_)), "{error}");
    let taken = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = DnsConfig {
        listen: taken.local_addr().unwrap(),
        ..test_config()
    };
    let error = run(api.client(), config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::Bind { .. }), "{error}");
}

#[test]
fn default_config_is_the_skiff_cluster() {
    let config = DnsConfig::default();
    let zone = config.zone().unwrap();
    assert_eq!(zone.domain().to_string(), "cluster.local.");
    assert_eq!(zone.ttl(), 5);
    assert_eq!(config.service_ip.to_string(), "10.43.0.10");
    assert_eq!(config.service_cidrs[0].to_string(), "10.43.0.0/16");
    assert_eq!(config.pod_cidrs[0].to_string(), "10.42.0.0/16");
}
