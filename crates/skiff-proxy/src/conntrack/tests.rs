use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::fake::FakeConntrack;
use super::*;
use crate::config::ProxyConfig;
use crate::service::service_ports;

const TCP: u8 = 6;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// `dns`: UDP 53 ("dns") and TCP 53 ("dns-tcp") on ClusterIP 10.43.0.10,
/// externalIP 203.0.113.7, NodePort 30053, LoadBalancer IP 192.0.2.9.
fn dns() -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "kube-system", "name": "dns"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.43.0.10",
                "externalIPs": ["203.0.113.7"],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054},
                ],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}},
        }))
        .unwrap(),
    )
}

/// `other`: UDP 53 on ClusterIP 10.43.0.11.
fn other() -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "other"},
            "spec": {"clusterIP": "10.43.0.11",
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
        }))
        .unwrap(),
    )
}

/// An endpoint: address and (ready, serving, terminating).
fn ep(address: &str, conditions: (bool, bool, bool)) -> Value {
    json!({
        "addresses": [address],
        "conditions": {"ready": conditions.0, "serving": conditions.1, "terminating": conditions.2},
    })
}

const READY: (bool, bool, bool) = (true, true, false);

fn slice(namespace: &str, service: &str, endpoints: Vec<Value>) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": format!("{service}-1"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 5353, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap(),
    )
}

fn frontends(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> UdpFrontends {
    UdpFrontends::new(&service_ports(&ProxyConfig::default(), services, slices))
}

/// A UDP (or `protocol`) entry from 10.42.0.2:40000 to `dst:dst_port`,
/// answered by `reply_src` (the endpoint after DNAT, `dst` without).
fn flow(protocol: u8, dst: &str, dst_port: u16, reply_src: &str, reply_port: u16) -> Flow {
    let client = ip("10.42.0.2");
    Flow {
        protocol,
        original: Tuple {
            src: client,
            dst: ip(dst),
            src_port: 40000,
            dst_port,
        },
        reply: Tuple {
            src: ip(reply_src),
            dst: client,
            src_port: reply_port,
            dst_port: 40000,
        },
        zone: 0,
        id: Some(1),
    }
}

fn udp(dst: &str, dst_port: u16, reply_src: &str) -> Flow {
    let reply_port = if dst == reply_src { dst_port } else { 5353 };
    flow(IPPROTO_UDP, dst, dst_port, reply_src, reply_port)
}

#[test]
fn frontends_are_the_udp_addresses_and_node_ports_with_serving_endpoints() {
    let slices = [slice(
        "kube-system",
        "dns",
        vec![
            ep("10.42.1.2", READY),
            // Serving while terminating: still allowed to answer.
            ep("10.42.1.3", (false, true, true)),
            // Neither ready nor serving.
            ep("10.42.1.4", (false, false, false)),
        ],
    )];
    let got = frontends(&[dns()], &slices);
    let serving: BTreeSet<Ipv4Addr> = [ip("10.42.1.2"), ip("10.42.1.3")].into();
    assert_eq!(
        got.ips,
        BTreeMap::from([
            ((ip("10.43.0.10"), 53), serving.clone()),
            ((ip("192.0.2.9"), 53), serving.clone()),
            ((ip("203.0.113.7"), 53), serving.clone()),
        ])
    );
    // The TCP port's NodePort is not a UDP frontend.
    assert_eq!(got.node_ports, BTreeMap::from([(30053, serving)]));
    // A TCP-only snapshot has none.
    let tcp_only: Arc<Service> = Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 80}]},
        }))
        .unwrap(),
    );
    assert!(frontends(&[tcp_only], &[]).is_empty());
}

#[test]
fn a_removed_endpoint_makes_the_entries_it_answers_stale() {
    let before = frontends(
        &[dns(), other()],
        &[
            slice(
                "kube-system",
                "dns",
                vec![ep("10.42.1.2", READY), ep("10.42.1.3", READY)],
            ),
            slice("default", "other", vec![ep("10.42.1.2", READY)]),
        ],
    );
    let after = frontends(
        &[dns(), other()],
        &[
            slice("kube-system", "dns", vec![ep("10.42.1.3", READY)]),
            slice("default", "other", vec![ep("10.42.1.2", READY)]),
        ],
    );
    let cleanup = after.cleanup(Some(&before)).expect("endpoints changed");
    let stale = [
        udp("10.43.0.10", 53, "10.42.1.2"),
        udp("203.0.113.7", 53, "10.42.1.2"),
        udp("192.0.2.9", 53, "10.42.1.2"),
        // A NodePort on any of the node's addresses.
        udp("192.168.1.10", 30053, "10.42.1.2"),
        udp("127.0.0.1", 30053, "10.42.1.2"),
    ];
    let kept = [
        // The remaining endpoint.
        udp("10.43.0.10", 53, "10.42.1.3"),
        udp("192.168.1.10", 30053, "10.42.1.3"),
        // The same endpoint behind another Service that still has it.
        udp("10.43.0.11", 53, "10.42.1.2"),
        // TCP is never touched.
        flow(TCP, "10.43.0.10", 53, "10.42.1.2", 5353),
        // Another port of the same address, and unrelated traffic.
        udp("10.43.0.10", 54, "10.42.1.2"),
        udp("10.0.0.1", 53, "10.0.0.1"),
    ];
    for f in &stale {
        assert!(cleanup.is_stale(f), "{f:?} should be stale");
    }
    for f in &kept {
        assert!(!cleanup.is_stale(f), "{f:?} should be kept");
    }
    let all: Vec<Flow> = kept.iter().chain(&stale).copied().collect();
    assert_eq!(cleanup.stale(&all), stale);
}

#[test]
fn first_endpoints_make_the_entries_that_were_never_dnated_stale() {
    let before = frontends(&[dns()], &[]);
    let after = frontends(
        &[dns()],
        &[slice("kube-system", "dns", vec![ep("10.42.1.2", READY)])],
    );
    let cleanup = after.cleanup(Some(&before)).expect("endpoints appeared");
    // Sent before there was anything to DNAT to: the reply would come from
    // the destination itself.
    for f in [
        udp("10.43.0.10", 53, "10.43.0.10"),
        udp("203.0.113.7", 53, "203.0.113.7"),
        udp("192.0.2.9", 53, "192.0.2.9"),
        udp("192.168.1.10", 30053, "192.168.1.10"),
    ] {
        assert!(cleanup.is_stale(&f), "{f:?} should be stale");
    }
    assert!(!cleanup.is_stale(&udp("10.43.0.10", 53, "10.42.1.2")));
}

#[test]
fn a_port_losing_its_last_endpoint_or_its_service_loses_all_its_entries() {
    let with = frontends(
        &[dns(), other()],
        &[
            slice("kube-system", "dns", vec![ep("10.42.1.2", READY)]),
            slice("default", "other", vec![ep("10.42.1.5", READY)]),
        ],
    );
    // dns loses its endpoints, other is deleted.
    let without = frontends(&[dns()], &[]);
    let cleanup = without.cleanup(Some(&with)).expect("changed");
    for f in [
        udp("10.43.0.10", 53, "10.42.1.2"),
        udp("192.168.1.10", 30053, "10.42.1.2"),
        udp("10.43.0.11", 53, "10.42.1.5"),
    ] {
        assert!(cleanup.is_stale(&f), "{f:?} should be stale");
    }
    // Removing every UDP Service still cleans up after them.
    assert!(UdpFrontends::default().cleanup(Some(&with)).is_some());
}

#[test]
fn nothing_is_scanned_when_nothing_changed() {
    let current = frontends(
        &[dns()],
        &[slice("kube-system", "dns", vec![ep("10.42.1.2", READY)])],
    );
    assert_eq!(current.cleanup(Some(&current.clone())), None);
    // Nothing to clean for a table without UDP Services, before or after.
    assert_eq!(UdpFrontends::default().cleanup(None), None);
    assert_eq!(
        UdpFrontends::default().cleanup(Some(&UdpFrontends::default())),
        None
    );
    // The first cleanup (after a restart) checks everything.
    let first = current.cleanup(None).expect("first cleanup");
    assert!(first.is_stale(&udp("10.43.0.10", 53, "10.42.1.9")));
    assert!(!first.is_stale(&udp("10.43.0.10", 53, "10.42.1.2")));
}

#[test]
fn clean_deletes_only_the_stale_udp_entries() {
    let conntrack = FakeConntrack::default();
    let stale = udp("10.43.0.10", 53, "10.42.1.2");
    let live = udp("10.43.0.10", 53, "10.42.1.3");
    let tcp = flow(TCP, "10.43.0.10", 53, "10.42.1.2", 5353);
    *conntrack.table.lock().unwrap() = vec![stale, live, tcp];
    let cleanup = frontends(
        &[dns()],
        &[slice("kube-system", "dns", vec![ep("10.42.1.3", READY)])],
    )
    .cleanup(None)
    .unwrap();
    assert_eq!(clean(&conntrack, &cleanup).unwrap(), 1);
    assert_eq!(conntrack.deleted(), [stale]);
    assert_eq!(*conntrack.table.lock().unwrap(), [live, tcp]);
    // Nothing stale: nothing is deleted.
    assert_eq!(clean(&conntrack, &cleanup).unwrap(), 0);
    assert_eq!(conntrack.deleted().len(), 1);
}
