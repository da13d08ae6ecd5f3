use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeCondition, NodeSpec,
    NodeStatus, ObjectReference, Service, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::events::EventType;

use super::plan::*;

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// A Ready, schedulable node with these `(type, address)` pairs.
fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(type_, address)| NodeAddress {
                        type_: type_.to_string(),
                        address: address.to_string(),
                    })
                    .collect(),
            ),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

fn internal(name: &str, ip: &str) -> Node {
    node(name, &[("InternalIP", ip), ("Hostname", name)])
}

fn with_labels(mut node: Node, pairs: &[(&str, &str)]) -> Node {
    node.metadata.labels = labels(pairs);
    node
}

fn service(type_: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some("10.43.0.20".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus::default()),
            conditions: None,
        }),
    }
}

fn vip(ip: &str) -> LoadBalancerIngress {
    LoadBalancerIngress {
        ip: Some(ip.into()),
        ip_mode: Some("VIP".into()),
        ..LoadBalancerIngress::default()
    }
}

fn showing(mut service: Service, ingress: Vec<LoadBalancerIngress>) -> Service {
    service.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(ingress),
        }),
        conditions: None,
    });
    service
}

fn arcs<T>(items: Vec<T>) -> Vec<Arc<T>> {
    items.into_iter().map(Arc::new).collect()
}

fn ips(update: &StatusUpdate) -> Vec<&str> {
    update
        .ingress
        .iter()
        .map(|i| i.ip.as_deref().unwrap_or_default())
        .collect()
}

#[test]
fn a_load_balancer_gets_every_ready_schedulable_node_sorted() {
    let mut not_ready = internal("n4", "10.0.0.4");
    not_ready
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()[0]
        .status = "Unknown".into();
    let mut cordoned = internal("n5", "10.0.0.5");
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    let excluded = with_labels(internal("n6", "10.0.0.6"), &[(LABEL_EXCLUDE_FROM_LB, "")]);
    let nodes = arcs(vec![
        internal("n10", "10.0.0.10"),
        internal("n9", "10.0.0.9"),
        not_ready,
        cordoned,
        excluded,
        // Two nodes with one address give it once.
        internal("n9b", "10.0.0.9"),
    ]);
    let update = plan(&service("LoadBalancer"), &nodes, &[]).expect("an update");
    assert_eq!(update.ingress, vec![vip("10.0.0.9"), vip("10.0.0.10")]);
    assert_eq!(
        update.event,
        LbEvent::Updated {
            from: vec![],
            to: vec!["10.0.0.9".into(), "10.0.0.10".into()],
        }
    );
    assert_eq!(update.event.event_type(), EventType::Normal);
    assert_eq!(update.event.reason(), "UpdatedLoadBalancer");
    assert_eq!(
        update.event.message(),
        "Updated LoadBalancer with new IPs: [] -> [10.0.0.9 10.0.0.10]"
    );
}

#[test]
fn external_ips_win_over_internal_ones_when_any_node_has_one() {
    let nodes = arcs(vec![
        node(
            "a",
            &[("InternalIP", "10.0.0.1"), ("ExternalIP", "203.0.113.7")],
        ),
        internal("b", "10.0.0.2"),
    ]);
    let update = plan(&service("LoadBalancer"), &nodes, &[]).expect("an update");
    assert_eq!(ips(&update), ["203.0.113.7"]);
}

#[test]
fn an_up_to_date_status_is_not_written() {
    let nodes = arcs(vec![internal("a", "10.0.0.1"), internal("b", "10.0.0.2")]);
    let current = showing(
        service("LoadBalancer"),
        vec![vip("10.0.0.1"), vip("10.0.0.2")],
    );
    assert_eq!(plan(&current, &nodes, &[]), None);
    // No node and nothing shown: still nothing to write.
    assert_eq!(plan(&service("LoadBalancer"), &[], &[]), None);
    // The same addresses without ipMode are rewritten once.
    let bare = LoadBalancerIngress {
        ip: Some("10.0.0.1".into()),
        ..LoadBalancerIngress::default()
    };
    let nodes = arcs(vec![internal("a", "10.0.0.1")]);
    let update = plan(&showing(service("LoadBalancer"), vec![bare]), &nodes, &[]);
    assert_eq!(update.expect("an update").ingress, vec![vip("10.0.0.1")]);
}

#[test]
fn losing_every_node_empties_the_status_with_a_warning() {
    let current = showing(service("LoadBalancer"), vec![vip("10.0.0.1")]);
    let mut gone = internal("a", "10.0.0.1");
    gone.status.as_mut().unwrap().conditions = None;
    let update = plan(&current, &arcs(vec![gone]), &[]).expect("an update");
    assert!(update.ingress.is_empty());
    assert_eq!(update.event, LbEvent::Unavailable);
    assert_eq!(update.event.event_type(), EventType::Warning);
    assert_eq!(update.event.reason(), "UnAvailableLoadBalancer");
    assert_eq!(
        update.event.message(),
        "There are no available nodes for LoadBalancer"
    );
}

#[test]
fn a_node_change_moves_the_addresses() {
    let current = showing(service("LoadBalancer"), vec![vip("10.0.0.1")]);
    let nodes = arcs(vec![internal("a", "10.0.0.1"), internal("b", "10.0.0.2")]);
    let update = plan(&current, &nodes, &[]).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        update.event.message(),
        "Updated LoadBalancer with new IPs: [10.0.0.1] -> [10.0.0.1 10.0.0.2]"
    );
}

#[test]
fn a_service_that_stops_being_a_load_balancer_is_cleared() {
    let nodes = arcs(vec![internal("a", "10.0.0.1")]);
    for type_ in ["ClusterIP", "NodePort"] {
        let current = showing(service(type_), vec![vip("10.0.0.1")]);
        let update = plan(&current, &nodes, &[]).expect("a clearing update");
        assert!(update.ingress.is_empty());
        assert_eq!(update.event, LbEvent::Deleted);
        assert_eq!(update.event.reason(), "DeletedLoadBalancer");
        // Nothing shown, nothing to clear.
        assert_eq!(plan(&service(type_), &nodes, &[]), None);
    }
}

#[test]
fn another_implementations_load_balancer_is_left_alone() {
    let nodes = arcs(vec![internal("a", "10.0.0.1")]);
    let mut classed = showing(service("LoadBalancer"), vec![vip("198.51.100.1")]);
    classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
    assert!(!wants_load_balancer(&classed));
    assert_eq!(plan(&classed, &nodes, &[]), None);
}

#[test]
fn addresses_follow_the_service_ip_families() {
    let nodes = arcs(vec![
        node(
            "a",
            &[("InternalIP", "10.0.0.2"), ("InternalIP", "fd00::2")],
        ),
        node(
            "b",
            &[("InternalIP", "fd00::1"), ("InternalIP", "10.0.0.1")],
        ),
    ]);
    let mut dual = service("LoadBalancer");
    dual.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
    let update = plan(&dual, &nodes, &[]).expect("an update");
    assert_eq!(ips(&update), ["fd00::1", "fd00::2", "10.0.0.1", "10.0.0.2"]);

    let update = plan(&service("LoadBalancer"), &nodes, &[]).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn enablelb_labels_select_nodes_and_pools() {
    let nodes = arcs(vec![
        with_labels(
            internal("a", "10.0.0.1"),
            &[(LABEL_ENABLE_LB, "true"), (LABEL_LB_POOL, "blue")],
        ),
        with_labels(
            internal("b", "10.0.0.2"),
            &[(LABEL_ENABLE_LB, "true"), (LABEL_LB_POOL, "green")],
        ),
        with_labels(internal("c", "10.0.0.3"), &[(LABEL_ENABLE_LB, "false")]),
        internal("d", "10.0.0.4"),
    ]);
    let update = plan(&service("LoadBalancer"), &nodes, &[]).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.1", "10.0.0.2"]);

    let mut pooled = service("LoadBalancer");
    pooled.metadata.labels = labels(&[(LABEL_LB_POOL, "green")]);
    let update = plan(&pooled, &nodes, &[]).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.2"]);

    // Without any enablelb label the pool label selects nothing.
    let plain = arcs(vec![internal("a", "10.0.0.1"), internal("b", "10.0.0.2")]);
    let update = plan(&pooled, &plain, &[]).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.1", "10.0.0.2"]);
}

fn endpoint(node: &str, ready: bool, kind: &str) -> Endpoint {
    Endpoint {
        addresses: vec!["10.42.0.5".into()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        node_name: Some(node.into()),
        target_ref: Some(ObjectReference {
            kind: Some(kind.into()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

#[test]
fn local_traffic_uses_only_nodes_with_ready_pods() {
    let nodes = arcs(vec![
        internal("a", "10.0.0.1"),
        internal("b", "10.0.0.2"),
        internal("c", "10.0.0.3"),
    ]);
    let slices = arcs(vec![EndpointSlice {
        endpoints: Some(vec![
            endpoint("b", true, "Pod"),
            endpoint("a", false, "Pod"),
            endpoint("c", true, "Node"),
        ]),
        ..EndpointSlice::default()
    }]);
    let mut local = service("LoadBalancer");
    local.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    assert!(requests_only_local_traffic(&local));
    let update = plan(&local, &nodes, &slices).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.2"]);

    // Cluster policy ignores the endpoints.
    let update = plan(&service("LoadBalancer"), &nodes, &slices).expect("an update");
    assert_eq!(ips(&update), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
}
