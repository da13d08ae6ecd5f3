//! Hand-built API objects for the tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::records::{Cluster, Records, Zone};

/// How long a test waits for a DNS answer or a condition.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn zone() -> Arc<Zone> {
    Arc::new(
        Zone::new(
            "cluster.local",
            5,
            vec![
                "10.43.0.0/16".parse().unwrap(),
                "10.42.0.0/16".parse().unwrap(),
            ],
            Some("10.43.0.10".parse().unwrap()),
        )
        .unwrap(),
    )
}

pub(crate) fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

pub(crate) fn port(name: &str, number: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.into()),
        port: number,
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    }
}

pub(crate) fn service(
    namespace: &str,
    name: &str,
    cluster_ips: &[&str],
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: cluster_ips.first().map(|ip| ip.to_string()),
            cluster_ips: Some(cluster_ips.iter().map(|ip| ip.to_string()).collect()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(crate) fn headless(namespace: &str, name: &str, ports: Vec<ServicePort>) -> Service {
    service(namespace, name, &["None"], ports)
}

pub(crate) fn external(namespace: &str, name: &str, target: &str) -> Service {
    Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(crate) fn endpoint(ip: &str, hostname: Option<&str>, ready: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        hostname: hostname.map(Into::into),
        conditions: Some(EndpointConditions {
            ready,
            ..EndpointConditions::default()
        }),
        ..Endpoint::default()
    }
}

pub(crate) fn slice_port(name: &str, number: i32, protocol: &str) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: Some(number),
        protocol: Some(protocol.into()),
        ..EndpointPort::default()
    }
}

pub(crate) fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    endpoints: Vec<Endpoint>,
    ports: Vec<EndpointPort>,
) -> EndpointSlice {
    let family = if endpoints
        .first()
        .is_some_and(|e| e.addresses[0].contains(':'))
    {
        "IPv6"
    } else {
        "IPv4"
    };
    EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service.to_string(),
            )])),
            ..meta(namespace, name)
        },
        address_type: family.into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    }
}

pub(crate) fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The records of a cluster holding `services`, `slices` and the namespaces
/// `default`, `db` and `kube-system`, synced.
pub(crate) fn build(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Records {
    let mut cluster = Cluster::new(zone());
    for ns in ["default", "db", "kube-system"] {
        cluster.apply_namespace(&namespace(ns));
    }
    cluster.replace_services(services.into_iter().map(Arc::new));
    cluster.replace_slices(slices.into_iter().map(Arc::new));
    let mut records = cluster.records(100);
    records.set_synced(true);
    records
}

pub(crate) async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(TIMEOUT))
        .build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}

pub(crate) async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) =
        TcpClientStream::new(addr, None, Some(TIMEOUT), TokioRuntimeProvider::default());
    let (client, background) =
        Client::<TokioRuntimeProvider>::new(stream.await.expect("TCP connect"), sender);
    tokio::spawn(background);
    client
}

pub(crate) async fn query(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
) -> Message {
    let response = client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype)
        .await
        .unwrap_or_else(|e| panic!("{name} {qtype}: {e}"));
    response.into_message()
}
