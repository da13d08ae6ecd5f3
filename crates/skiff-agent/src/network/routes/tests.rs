use std::process::Command;

use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
use kube::api::ObjectMeta;

use super::*;

fn node(name: &str, pod_cidr: Option<&str>, internal_ip: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: pod_cidr.map(str::to_string),
            pod_cidrs: pod_cidr.map(|c| vec![c.to_string()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(
                internal_ip
                    .into_iter()
                    .map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    })
                    .chain([NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    }])
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}

fn route(cidr: &str, via: &str) -> PodRoute {
    PodRoute {
        cidr: cidr.parse().expect("cidr"),
        via: via.parse().expect("ip"),
    }
}

#[test]
fn every_other_node_with_a_subnet_and_an_address_gets_a_route() {
    let nodes = [
        node("self", Some("10.42.0.0/24"), Some("192.0.2.2")),
        node("b", Some("10.42.1.0/24"), Some("192.0.2.3")),
        node("no-cidr-yet", None, Some("192.0.2.4")),
        node("no-address", Some("10.42.3.0/24"), None),
        node("same-host", Some("10.42.4.0/24"), Some("192.0.2.2")),
        node("v6", Some("fd00:42::/64"), Some("192.0.2.6")),
    ];
    let desired = desired_routes(&nodes, "self", Some("192.0.2.2".parse().expect("ip")));
    assert_eq!(
        desired.into_iter().collect::<Vec<_>>(),
        [route("10.42.1.0/24", "192.0.2.3")]
    );
}

#[test]
fn plan_adds_moves_and_drops_routes() {
    let current = BTreeSet::from([
        route("10.42.1.0/24", "192.0.2.3"),
        route("10.42.2.0/24", "192.0.2.4"),
        route("10.42.9.0/24", "192.0.2.9"),
    ]);
    let desired = BTreeSet::from([
        route("10.42.1.0/24", "192.0.2.3"),
        route("10.42.2.0/24", "192.0.2.14"),
        route("10.42.5.0/24", "192.0.2.5"),
    ]);
    assert_eq!(
        plan(&current, &desired),
        RoutePlan {
            replace: vec![
                route("10.42.2.0/24", "192.0.2.14"),
                route("10.42.5.0/24", "192.0.2.5"),
            ],
            delete: vec![route("10.42.9.0/24", "192.0.2.9")],
        }
    );
    assert_eq!(plan(&desired, &desired), RoutePlan::default());
}

/// A network namespace with a veth pair, one end on 192.168.77.1/24 (this
/// kernel has no dummy links), removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let name = format!("skiff-test-{}-routes", std::process::id());
        let netns = Netns(name.clone());
        for args in [
            vec!["netns", "add", &name],
            vec![
                "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            ],
            vec!["-n", &name, "addr", "add", "192.168.77.1/24", "dev", "eth0"],
            vec!["-n", &name, "link", "set", "peer0", "up"],
            vec!["-n", &name, "link", "set", "eth0", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        }
        Some(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn routes_are_programmed_in_a_private_network_namespace() {
    let Some(netns) = Netns::new() else { return };
    let table = IpRouteCommand {
        netns: Some(netns.0.clone()),
    };
    assert!(
        table
            .local_networks()
            .expect("addresses")
            .contains(&"192.168.77.0/24".parse().expect("cidr"))
    );
    let first = BTreeSet::from([
        route("10.42.1.0/24", "192.168.77.2"),
        route("10.42.2.0/24", "192.168.77.3"),
    ]);
    let failures = apply(&table, &plan(&table.list().expect("list"), &first));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(table.list().expect("list"), first);

    let moved = BTreeSet::from([
        route("10.42.2.0/24", "192.168.77.4"),
        route("10.42.3.0/24", "10.99.0.1"),
    ]);
    let failures = apply(&table, &plan(&table.list().expect("list"), &moved));
    assert_eq!(
        failures.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
        [route("10.42.3.0/24", "10.99.0.1")],
        "a gateway off every local link is refused"
    );
    assert_eq!(
        table.list().expect("list"),
        BTreeSet::from([route("10.42.2.0/24", "192.168.77.4")])
    );

    let other = Command::new("ip")
        .args([
            "-n",
            &netns.0,
            "route",
            "add",
            "10.50.0.0/24",
            "via",
            "192.168.77.9",
        ])
        .status()
        .expect("ip");
    assert!(other.success());
    remove_all(&table).expect("remove");
    assert!(table.list().expect("list").is_empty());
    let left = Command::new("ip")
        .args(["-n", &netns.0, "-4", "route", "show", "10.50.0.0/24"])
        .output()
        .expect("ip");
    assert!(
        String::from_utf8_lossy(&left.stdout).contains("via 192.168.77.9"),
        "routes the agent did not make stay"
    );
}
