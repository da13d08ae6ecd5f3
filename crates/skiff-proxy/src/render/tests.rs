use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;

const MASQ: &str = "jump mark-for-masquerade";

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-a".into(),
        node_ips: vec![Ipv4Addr::new(192, 168, 1, 10)],
        ..ProxyConfig::default()
    }
}

fn service(name: &str, spec: Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": spec,
        }))
        .unwrap(),
    )
}

/// An endpoint: address, node, and (ready, serving, terminating).
fn ep(ip: &str, node: &str, conditions: (bool, bool, bool)) -> Value {
    json!({
        "addresses": [ip],
        "nodeName": node,
        "conditions": {"ready": conditions.0, "serving": conditions.1, "terminating": conditions.2},
    })
}

const READY: (bool, bool, bool) = (true, true, false);

fn slice(service: &str, name: &str, ports: Value, endpoints: Vec<Value>) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": name,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap(),
    )
}

/// `web`: ClusterIP 10.43.0.20, port 80 "http" → named target port (8080 in
/// the slice), plus whatever `extra` adds to the spec.
fn web(extra: Value) -> Arc<Service> {
    let mut spec = json!({
        "clusterIP": "10.43.0.20",
        "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service("web", spec)
}

fn web_slice(endpoints: Vec<Value>) -> Arc<EndpointSlice> {
    slice(
        "web",
        "web-abc",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        endpoints,
    )
}

fn rules(r: &Ruleset, chain: &str) -> Vec<String> {
    r.chain(chain)
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .to_vec()
}

fn element(r: &Ruleset, map: &str, key: &str) -> Option<String> {
    r.map(map).unwrap().get(key).cloned()
}

/// The addresses in the hairpin set (each element is `ip . ip`).
fn hairpin(r: &Ruleset) -> Vec<String> {
    r.set(HAIRPIN)
        .unwrap()
        .map(|e| {
            let (a, b) = e.split_once(" . ").unwrap();
            assert_eq!(a, b, "hairpin element {e}");
            a.to_owned()
        })
        .collect()
}

/// The `pick-N` chain: masquerade off-cluster clients, then DNAT through
/// `endpoints-N` for each protocol.
fn pick(n: usize) -> Vec<String> {
    let mut rules = vec!["ip saddr != 10.42.0.0/16 jump mark-for-masquerade".to_owned()];
    for proto in ["tcp", "udp", "sctp"] {
        rules.push(format!(
            "meta l4proto {proto} dnat to ip daddr . meta l4proto . th dport . numgen random mod {n} map @endpoints-{n}"
        ));
    }
    rules
}

/// The elements of `endpoints-N` for one ClusterIP key, in slot order.
fn endpoints(r: &Ruleset, n: usize, key: &str) -> Vec<String> {
    (0..n)
        .map(|slot| {
            element(r, &format!("endpoints-{n}"), &format!("{key} . {slot}"))
                .unwrap_or_else(|| panic!("no slot {slot} for {key}"))
        })
        .collect()
}

fn no_pick_chains(r: &Ruleset) -> bool {
    !r.chain_names().any(|c| c.starts_with("pick-"))
}

const SVC: &str = "svc-default/web/tcp/http";
const LOCAL: &str = "local-default/web/tcp/http";
const EXT: &str = "ext-default/web/tcp/http";
const EP1: &str = "ep-default/web/tcp/http__10.42.1.5/8080";
const EP2: &str = "ep-default/web/tcp/http__10.42.2.6/8080";
const CIP_MASQ: &str =
    "ip daddr 10.43.0.20 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade";

#[test]
fn cluster_ip_balances_over_ready_endpoints_with_the_named_target_port() {
    let r = render(
        &config(),
        &[web(json!({}))],
        &[web_slice(vec![
            ep("10.42.2.6", "node-b", READY),
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.3.7", "node-c", (false, false, false)),
        ])],
    );
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80").as_deref(),
        Some("goto pick-2")
    );
    assert_eq!(rules(&r, "pick-2"), pick(2));
    assert_eq!(
        endpoints(&r, 2, "10.43.0.20 . tcp . 80"),
        ["10.42.1.5 . 8080", "10.42.2.6 . 8080"]
    );
    assert_eq!(r.map("endpoints-2").unwrap().len(), 2);
    // A pod reaching itself through the Service is masqueraded.
    assert_eq!(hairpin(&r), ["10.42.1.5", "10.42.2.6"]);
    assert_eq!(
        rules(&r, "masquerading")[0],
        format!("ct status dnat ip saddr . ip daddr @hairpin {MASQ}")
    );
    assert!(r.map(NO_ENDPOINT_SERVICES).unwrap().is_empty());
    // No chain of its own.
    assert!(r.chain(SVC).is_none() && r.chain(EXT).is_none() && r.chain(LOCAL).is_none());
    assert!(!r.chain_names().any(|c| c.starts_with("ep-")));
}

#[test]
fn cluster_ips_share_the_pick_chain_of_their_endpoint_count() {
    let other = service(
        "other",
        json!({"clusterIP": "10.43.0.21", "ports": [{"name": "p", "port": 81, "protocol": "UDP"}]}),
    );
    let one = service(
        "one",
        json!({"clusterIP": "10.43.0.22", "ports": [{"name": "p", "port": 82}]}),
    );
    let slices = [
        web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
        ]),
        slice(
            "other",
            "other-1",
            json!([{"name": "p", "port": 5353, "protocol": "UDP"}]),
            vec![
                ep("10.42.3.7", "node-c", READY),
                ep("10.42.2.6", "node-b", READY),
            ],
        ),
        slice(
            "one",
            "one-1",
            json!([{"name": "p", "port": 8082}]),
            vec![ep("10.42.3.7", "node-c", READY)],
        ),
    ];
    let r = render(&config(), &[web(json!({})), other, one], &slices);
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.21 . udp . 81").as_deref(),
        Some("goto pick-2")
    );
    assert_eq!(
        endpoints(&r, 2, "10.43.0.21 . udp . 81"),
        ["10.42.2.6 . 5353", "10.42.3.7 . 5353"]
    );
    assert_eq!(r.map("endpoints-2").unwrap().len(), 4);
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.22 . tcp . 82").as_deref(),
        Some("goto pick-1")
    );
    assert_eq!(rules(&r, "pick-1"), pick(1));
    assert_eq!(
        endpoints(&r, 1, "10.43.0.22 . tcp . 82"),
        ["10.42.3.7 . 8082"]
    );
    assert_eq!(
        r.chain_names().filter(|c| c.starts_with("pick-")).count(),
        2
    );
    // Each address once, whatever number of Services it serves.
    assert_eq!(hairpin(&r), ["10.42.1.5", "10.42.2.6", "10.42.3.7"]);
}

#[test]
fn the_random_cascade_is_uniform_over_three_endpoints() {
    let svc = web(json!({"type": "NodePort", "ports": [
        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}
    ]}));
    let r = render(
        &config(),
        &[svc],
        &[web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
            ep("10.42.3.7", "node-c", READY),
        ])],
    );
    // 1/3, then 1/2 of the remaining 2/3, then the rest.
    assert_eq!(
        rules(&r, SVC),
        [
            "numgen random mod 3 == 0 meta l4proto tcp dnat to 10.42.1.5:8080",
            "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.42.2.6:8080",
            "meta l4proto tcp dnat to 10.42.3.7:8080",
        ]
    );
    // The ClusterIP's choice: one slot per endpoint.
    assert_eq!(rules(&r, "pick-3")[1..], pick(3)[1..]);
    assert_eq!(
        endpoints(&r, 3, "10.43.0.20 . tcp . 80"),
        ["10.42.1.5 . 8080", "10.42.2.6 . 8080", "10.42.3.7 . 8080"]
    );
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let slices = [web_slice(vec![
        ep("10.42.1.5", "node-a", (false, true, true)),
        ep("10.42.2.6", "node-b", (false, false, true)),
    ])];
    let r = render(&config(), &[web(json!({}))], &slices);
    assert_eq!(
        endpoints(&r, 1, "10.43.0.20 . tcp . 80"),
        ["10.42.1.5 . 8080"]
    );
    assert_eq!(hairpin(&r), ["10.42.1.5"]);

    // One ready endpoint wins over the terminating one.
    let slices = [web_slice(vec![
        ep("10.42.1.5", "node-a", (false, true, true)),
        ep("10.42.2.6", "node-b", READY),
    ])];
    let r = render(&config(), &[web(json!({}))], &slices);
    assert_eq!(
        endpoints(&r, 1, "10.43.0.20 . tcp . 80"),
        ["10.42.2.6 . 8080"]
    );
    assert_eq!(hairpin(&r), ["10.42.2.6"]);
}

#[test]
fn a_service_without_endpoints_is_rejected_not_dropped() {
    let svc = web(json!({"type": "NodePort", "ports": [
        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}
    ]}));
    let not_ready = web_slice(vec![ep("10.42.1.5", "node-a", (false, false, false))]);
    for slices in [vec![], vec![not_ready]] {
        let r = render(&config(), std::slice::from_ref(&svc), &slices);
        assert_eq!(
            element(&r, NO_ENDPOINT_SERVICES, "10.43.0.20 . tcp . 80").as_deref(),
            Some(REJECT)
        );
        assert_eq!(
            element(&r, NO_ENDPOINT_NODEPORTS, "tcp . 30080").as_deref(),
            Some(REJECT)
        );
        assert!(r.map(SERVICE_IPS).unwrap().is_empty());
        assert!(r.map(SERVICE_NODEPORTS).unwrap().is_empty());
        assert!(r.chain(SVC).is_none() && r.chain(EXT).is_none());
        assert!(no_pick_chains(&r) && hairpin(&r).is_empty());
    }
    let r = render(&config(), &[svc], &[]);
    assert_eq!(
        rules(&r, "reject-chain"),
        [
            "meta l4proto tcp reject with tcp reset",
            "reject with icmp type port-unreachable"
        ]
    );
    for hook in ["filter-input", "filter-forward", "filter-output"] {
        assert_eq!(rules(&r, hook), ["ct state new jump endpoints-check"]);
    }
}

#[test]
fn node_port_with_cluster_policy_masquerades_and_uses_all_endpoints() {
    let svc = web(json!({"type": "NodePort", "ports": [
        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}
    ]}));
    let r = render(
        &config(),
        &[svc],
        &[web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
        ])],
    );
    assert_eq!(
        element(&r, SERVICE_NODEPORTS, "tcp . 30080").as_deref(),
        Some("goto ext-default/web/tcp/http")
    );
    assert_eq!(rules(&r, EXT), [MASQ.to_owned(), format!("goto {SVC}")]);
    assert_eq!(
        rules(&r, SVC),
        [
            "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.42.1.5:8080",
            "meta l4proto tcp dnat to 10.42.2.6:8080",
        ]
    );
    // The ClusterIP still resolves through the map.
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80").as_deref(),
        Some("goto pick-2")
    );
    assert_eq!(
        rules(&r, "services"),
        [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    assert!(r.map(NO_ENDPOINT_NODEPORTS).unwrap().is_empty());
}

#[test]
fn external_policy_local_keeps_the_source_and_uses_local_endpoints() {
    let svc = web(json!({
        "type": "LoadBalancer",
        "externalTrafficPolicy": "Local",
        "externalIPs": ["203.0.113.7"],
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
    }));
    let mut svc = Arc::unwrap_or_clone(svc);
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [
            {"ip": "192.168.1.10"}, {"ip": "198.51.100.9", "ipMode": "Proxy"}, {"hostname": "lb.example"}
        ]}}))
        .unwrap(),
    );
    let svc = Arc::new(svc);
    let r = render(
        &config(),
        std::slice::from_ref(&svc),
        &[web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
        ])],
    );
    for key in ["203.0.113.7 . tcp . 80", "192.168.1.10 . tcp . 80"] {
        assert_eq!(
            element(&r, SERVICE_IPS, key),
            Some(format!("goto {EXT}")),
            "{key}"
        );
    }
    assert_eq!(element(&r, SERVICE_IPS, "198.51.100.9 . tcp . 80"), None);
    assert_eq!(
        element(&r, SERVICE_NODEPORTS, "tcp . 30080"),
        Some(format!("goto {EXT}"))
    );
    assert_eq!(
        rules(&r, EXT),
        [
            format!("ip saddr 10.42.0.0/16 goto {SVC}"),
            format!("fib saddr type local {MASQ}"),
            format!("fib saddr type local goto {SVC}"),
            format!("goto {LOCAL}"),
        ]
    );
    assert_eq!(
        rules(&r, LOCAL),
        ["meta l4proto tcp dnat to 10.42.1.5:8080"]
    );
    // Internal traffic still uses every endpoint.
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80").as_deref(),
        Some("goto pick-2")
    );
    assert_eq!(
        endpoints(&r, 2, "10.43.0.20 . tcp . 80"),
        ["10.42.1.5 . 8080", "10.42.2.6 . 8080"]
    );
    assert_eq!(
        rules(&r, SVC),
        [
            "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.42.1.5:8080",
            "meta l4proto tcp dnat to 10.42.2.6:8080",
        ]
    );
    assert!(r.map(NO_ENDPOINT_SERVICES).unwrap().is_empty());

    // Without a local endpoint, external traffic is dropped but pods and the
    // node still reach the remote ones.
    let r = render(
        &config(),
        &[svc],
        &[web_slice(vec![ep("10.42.2.6", "node-b", READY)])],
    );
    assert_eq!(
        rules(&r, EXT),
        [
            format!("ip saddr 10.42.0.0/16 goto {SVC}"),
            format!("fib saddr type local {MASQ}"),
            format!("fib saddr type local goto {SVC}"),
        ]
    );
    assert!(r.chain(LOCAL).is_none());
    assert_eq!(
        element(&r, SERVICE_NODEPORTS, "tcp . 30080"),
        Some(format!("goto {EXT}"))
    );
    assert_eq!(
        element(&r, NO_ENDPOINT_NODEPORTS, "tcp . 30080").as_deref(),
        Some("drop")
    );
    for key in ["203.0.113.7 . tcp . 80", "192.168.1.10 . tcp . 80"] {
        assert_eq!(
            element(&r, NO_ENDPOINT_SERVICES, key).as_deref(),
            Some("drop"),
            "{key}"
        );
    }
}

#[test]
fn internal_policy_local_uses_only_this_nodes_endpoints() {
    let svc = web(json!({"internalTrafficPolicy": "Local"}));
    let r = render(
        &config(),
        std::slice::from_ref(&svc),
        &[web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
        ])],
    );
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80").as_deref(),
        Some("goto pick-1")
    );
    assert_eq!(
        endpoints(&r, 1, "10.43.0.20 . tcp . 80"),
        ["10.42.1.5 . 8080"]
    );
    assert!(r.chain(SVC).is_none() && r.chain(LOCAL).is_none());
    assert_eq!(hairpin(&r), ["10.42.1.5"]);

    // None here: dropped (there are endpoints elsewhere, so not rejected).
    let r = render(
        &config(),
        &[svc],
        &[web_slice(vec![ep("10.42.2.6", "node-b", READY)])],
    );
    assert_eq!(element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80"), None);
    assert_eq!(
        element(&r, NO_ENDPOINT_SERVICES, "10.43.0.20 . tcp . 80").as_deref(),
        Some("drop")
    );
    assert!(r.chain(LOCAL).is_none() && r.chain(SVC).is_none());
    assert!(no_pick_chains(&r));
}

#[test]
fn an_endpoint_at_a_node_address_is_local_and_dnats_to_the_host() {
    // The cluster DNS: selector-less, its slice names the node by address only.
    let dns = Arc::new(
        serde_json::from_value::<Service>(json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {
                "clusterIP": "10.43.0.10",
                "internalTrafficPolicy": "Local",
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        }))
        .unwrap(),
    );
    let slice = Arc::new(
        serde_json::from_value::<EndpointSlice>(json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns",
                         "labels": {"kubernetes.io/service-name": "kube-dns"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 1053, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 1053, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["192.168.1.10"]}],
        }))
        .unwrap(),
    );
    let r = render(&config(), &[dns], &[slice]);
    for proto in ["udp", "tcp"] {
        let key = format!("10.43.0.10 . {proto} . 53");
        assert_eq!(
            element(&r, SERVICE_IPS, &key).as_deref(),
            Some("goto pick-1")
        );
        assert_eq!(endpoints(&r, 1, &key), ["192.168.1.10 . 1053"]);
    }
    assert_eq!(hairpin(&r), ["192.168.1.10"]);
}

#[test]
fn client_ip_affinity_pins_clients_with_timed_sets() {
    let svc = web(json!({"sessionAffinity": "ClientIP",
                         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
    let slices = [web_slice(vec![
        ep("10.42.1.5", "node-a", READY),
        ep("10.42.2.6", "node-b", READY),
    ])];
    let r = render(&config(), &[svc], &slices);
    let aff1 = "aff-default/web/tcp/http__10.42.1.5/8080";
    let aff2 = "aff-default/web/tcp/http__10.42.2.6/8080";
    assert_eq!(
        rules(&r, SVC),
        [
            CIP_MASQ.to_owned(),
            format!("ip saddr @{aff1} goto {EP1}"),
            format!("ip saddr @{aff2} goto {EP2}"),
            format!("numgen random mod 2 == 0 goto {EP1}"),
            format!("goto {EP2}"),
        ]
    );
    assert_eq!(
        rules(&r, EP1),
        [
            format!("update @{aff1} {{ ip saddr }}"),
            "meta l4proto tcp dnat to 10.42.1.5:8080".to_owned(),
        ]
    );
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80"),
        Some(format!("goto {SVC}"))
    );
    assert!(no_pick_chains(&r));
    assert_eq!(hairpin(&r), ["10.42.1.5", "10.42.2.6"]);
    assert_eq!(r.affinity_timeout(aff1), Some(60));
    assert_eq!(r.affinity_timeout(aff2), Some(60));

    let default_timeout = web(json!({"sessionAffinity": "ClientIP"}));
    let r = render(&config(), &[default_timeout], &slices);
    assert_eq!(r.affinity_timeout(aff1), Some(10_800));

    let r = render(&config(), &[web(json!({}))], &slices);
    assert!(!r.set_names().any(|s| s.starts_with("aff-")));
    assert!(!r.chain_names().any(|c| c.starts_with("ep-")));
}

#[test]
fn affinity_with_a_node_port_shares_the_endpoint_chains() {
    let svc = web(json!({"type": "NodePort", "sessionAffinity": "ClientIP",
                         "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}));
    let r = render(
        &config(),
        &[svc],
        &[web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
        ])],
    );
    let aff1 = "aff-default/web/tcp/http__10.42.1.5/8080";
    let aff2 = "aff-default/web/tcp/http__10.42.2.6/8080";
    // The ClusterIP uses the local endpoints, so does external traffic.
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80"),
        Some(format!("goto {LOCAL}"))
    );
    assert_eq!(
        rules(&r, LOCAL),
        [
            CIP_MASQ.to_owned(),
            format!("ip saddr @{aff1} goto {EP1}"),
            format!("goto {EP1}"),
        ]
    );
    assert_eq!(rules(&r, EXT).last(), Some(&format!("goto {LOCAL}")));
    // Pods and the node reach every endpoint.
    assert_eq!(
        rules(&r, SVC),
        [
            format!("ip saddr @{aff1} goto {EP1}"),
            format!("ip saddr @{aff2} goto {EP2}"),
            format!("numgen random mod 2 == 0 goto {EP1}"),
            format!("goto {EP2}"),
        ]
    );
    assert_eq!(rules(&r, EP2)[0], format!("update @{aff2} {{ ip saddr }}"));
    assert!(no_pick_chains(&r));
}

#[test]
fn the_masquerade_plumbing_marks_and_clears() {
    let r = render(&config(), &[], &[]);
    assert_eq!(
        rules(&r, "mark-for-masquerade"),
        ["meta mark set meta mark or 0x4000"]
    );
    assert_eq!(
        rules(&r, "masquerading"),
        [
            "ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade",
            "meta mark and 0x4000 == 0 return",
            "meta mark set meta mark xor 0x4000",
            "masquerade fully-random",
        ]
    );
    assert_eq!(rules(&r, "nat-postrouting"), ["jump masquerading"]);
    assert_eq!(rules(&r, "nat-prerouting"), ["jump services"]);
    assert_eq!(rules(&r, "nat-output"), ["jump services"]);
}

#[test]
fn headless_external_name_and_foreign_services_get_no_rules() {
    let headless = service(
        "headless",
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
    );
    let external = service(
        "ext",
        json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}),
    );
    let mut foreign = Arc::unwrap_or_clone(service(
        "foreign",
        json!({"clusterIP": "10.43.0.30", "ports": [{"port": 80}]}),
    ));
    foreign.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".to_owned(),
            "other".to_owned(),
        )]
        .into(),
    );
    let slices: Vec<_> = ["headless", "ext", "foreign"]
        .into_iter()
        .map(|name| {
            slice(
                name,
                name,
                json!([{"port": 80}]),
                vec![ep("10.42.1.5", "node-a", READY)],
            )
        })
        .collect();
    let r = render(&config(), &[headless, external, Arc::new(foreign)], &slices);
    assert_eq!(r, render(&config(), &[], &[]));
}

#[test]
fn slices_match_by_service_label_port_name_and_protocol() {
    let svc = service(
        "multi",
        json!({"clusterIP": "10.43.0.40", "ports": [
            {"name": "a", "port": 80, "protocol": "TCP"},
            {"name": "a-udp", "port": 80, "protocol": "UDP"},
            {"name": "s", "port": 9, "protocol": "SCTP"},
        ]}),
    );
    let slices = [
        slice(
            "multi",
            "multi-1",
            json!([{"name": "a", "port": 8080}, {"name": "a-udp", "port": 8081, "protocol": "UDP"},
                   {"name": "s", "port": 9009, "protocol": "SCTP"}]),
            vec![ep("10.42.1.5", "node-a", READY)],
        ),
        // The same endpoint again in another slice, and one more.
        slice(
            "multi",
            "multi-2",
            json!([{"name": "a", "port": 8080}]),
            vec![
                ep("10.42.1.5", "node-a", READY),
                ep("10.42.1.6", "node-a", READY),
            ],
        ),
        // Another Service's slice, and a slice port of another protocol.
        slice(
            "other",
            "other-1",
            json!([{"name": "a", "port": 7070}]),
            vec![ep("10.42.9.9", "node-a", READY)],
        ),
        slice(
            "multi",
            "multi-3",
            json!([{"name": "a", "port": 6060, "protocol": "UDP"}]),
            vec![ep("10.42.8.8", "node-a", READY)],
        ),
    ];
    let r = render(&config(), &[svc], &slices);
    assert_eq!(
        endpoints(&r, 2, "10.43.0.40 . tcp . 80"),
        ["10.42.1.5 . 8080", "10.42.1.6 . 8080"]
    );
    assert_eq!(
        endpoints(&r, 1, "10.43.0.40 . udp . 80"),
        ["10.42.1.5 . 8081"]
    );
    assert_eq!(
        endpoints(&r, 1, "10.43.0.40 . sctp . 9"),
        ["10.42.1.5 . 9009"]
    );
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.40 . sctp . 9").as_deref(),
        Some("goto pick-1")
    );
    assert_eq!(r.map("endpoints-1").unwrap().len(), 2);
    assert_eq!(hairpin(&r), ["10.42.1.5", "10.42.1.6"]);
}

#[test]
fn an_unnamed_port_matches_an_unnamed_slice_port() {
    let svc = service(
        "plain",
        json!({"clusterIP": "10.43.0.50", "ports": [{"port": 80}]}),
    );
    let slices = [slice(
        "plain",
        "plain-1",
        json!([{"port": 8080}]),
        vec![ep("10.42.1.5", "node-a", READY)],
    )];
    let r = render(&config(), &[svc], &slices);
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.50 . tcp . 80").as_deref(),
        Some("goto pick-1")
    );
    assert_eq!(
        endpoints(&r, 1, "10.43.0.50 . tcp . 80"),
        ["10.42.1.5 . 8080"]
    );
}

#[test]
fn a_removed_service_disappears_from_the_update() {
    let other = service(
        "other",
        json!({"clusterIP": "10.43.0.60", "ports": [{"name": "p", "port": 81}]}),
    );
    let slices = [
        web_slice(vec![ep("10.42.1.5", "node-a", READY)]),
        slice(
            "other",
            "other-1",
            json!([{"name": "p", "port": 8181}]),
            vec![ep("10.42.2.6", "node-b", READY)],
        ),
    ];
    let before = render(&config(), &[web(json!({})), other.clone()], &slices);
    let after = render(&config(), &[web(json!({}))], &slices);
    let script = after.update_script(&before).unwrap();
    assert_eq!(
        script,
        "delete element ip skiff-proxy endpoints-1 { 10.43.0.60 . tcp . 81 . 0 }\n\
         delete element ip skiff-proxy hairpin { 10.42.2.6 . 10.42.2.6 }\n\
         delete element ip skiff-proxy service-ips { 10.43.0.60 . tcp . 81 }\n"
    );

    // The last Service with one endpoint gone: so are its chain and map.
    let two = [web_slice(vec![
        ep("10.42.1.5", "node-a", READY),
        ep("10.42.2.6", "node-b", READY),
    ])];
    let after = render(&config(), &[web(json!({}))], &two);
    let script = after.update_script(&before).unwrap();
    assert_eq!(
        script.lines().collect::<Vec<_>>(),
        [
            "add chain ip skiff-proxy pick-2",
            "add map ip skiff-proxy endpoints-2 {",
            "\ttypeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport",
            "}",
            "flush chain ip skiff-proxy pick-1",
            "add rule ip skiff-proxy pick-2 ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
            "add rule ip skiff-proxy pick-2 meta l4proto tcp dnat to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints-2",
            "add rule ip skiff-proxy pick-2 meta l4proto udp dnat to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints-2",
            "add rule ip skiff-proxy pick-2 meta l4proto sctp dnat to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints-2",
            "add element ip skiff-proxy endpoints-2 { 10.43.0.20 . tcp . 80 . 0 : 10.42.1.5 . 8080, 10.43.0.20 . tcp . 80 . 1 : 10.42.2.6 . 8080 }",
            "delete element ip skiff-proxy service-ips { 10.43.0.20 . tcp . 80, 10.43.0.60 . tcp . 81 }",
            "add element ip skiff-proxy service-ips { 10.43.0.20 . tcp . 80 : goto pick-2 }",
            "delete chain ip skiff-proxy pick-1",
            "delete map ip skiff-proxy endpoints-1",
        ]
    );
    assert!(after.chain("pick-1").is_none() && after.map("endpoints-1").is_none());
}

#[test]
fn the_table_name_and_mark_come_from_the_config() {
    let config = ProxyConfig {
        table: "custom".into(),
        masquerade_mark: 0x10,
        ..config()
    };
    let r = render(&config, &[], &[]);
    assert_eq!(r.table(), "custom");
    assert_eq!(
        rules(&r, "mark-for-masquerade"),
        ["meta mark set meta mark or 0x10"]
    );
    assert!(
        r.full_script()
            .starts_with("add table ip custom\ndelete table ip custom\n")
    );
}
