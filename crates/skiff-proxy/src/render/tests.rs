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
        Some("goto svc-default/web/tcp/http")
    );
    assert_eq!(
        rules(&r, SVC),
        [
            CIP_MASQ.to_owned(),
            format!("numgen random mod 2 == 0 goto {EP1}"),
            format!("goto {EP2}"),
        ]
    );
    assert_eq!(
        rules(&r, EP1),
        [
            format!("ip saddr 10.42.1.5 {MASQ}"),
            "meta l4proto tcp dnat to 10.42.1.5:8080".to_owned(),
        ]
    );
    assert!(r.chain("ep-default/web/tcp/http__10.42.3.7/8080").is_none());
    assert!(r.map(NO_ENDPOINT_SERVICES).unwrap().is_empty());
    assert!(r.chain(EXT).is_none() && r.chain(LOCAL).is_none());
}

#[test]
fn the_random_cascade_is_uniform_over_three_endpoints() {
    let r = render(
        &config(),
        &[web(json!({}))],
        &[web_slice(vec![
            ep("10.42.1.5", "node-a", READY),
            ep("10.42.2.6", "node-b", READY),
            ep("10.42.3.7", "node-c", READY),
        ])],
    );
    assert_eq!(
        rules(&r, SVC)[1..],
        [
            format!("numgen random mod 3 == 0 goto {EP1}"),
            format!("numgen random mod 2 == 0 goto {EP2}"),
            "goto ep-default/web/tcp/http__10.42.3.7/8080".to_owned(),
        ]
    );
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let slices = [web_slice(vec![
        ep("10.42.1.5", "node-a", (false, true, true)),
        ep("10.42.2.6", "node-b", (false, false, true)),
    ])];
    let r = render(&config(), &[web(json!({}))], &slices);
    assert_eq!(rules(&r, SVC), [CIP_MASQ.to_owned(), format!("goto {EP1}")]);
    assert!(r.chain(EP2).is_none());

    // One ready endpoint wins over the terminating one.
    let slices = [web_slice(vec![
        ep("10.42.1.5", "node-a", (false, true, true)),
        ep("10.42.2.6", "node-b", READY),
    ])];
    let r = render(&config(), &[web(json!({}))], &slices);
    assert_eq!(rules(&r, SVC), [CIP_MASQ.to_owned(), format!("goto {EP2}")]);
    assert!(r.chain(EP1).is_none());
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
    assert_eq!(rules(&r, LOCAL), [format!("goto {EP1}")]);
    // Internal traffic still uses every endpoint.
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80"),
        Some(format!("goto {SVC}"))
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
        element(&r, SERVICE_IPS, "10.43.0.20 . tcp . 80"),
        Some(format!("goto {LOCAL}"))
    );
    assert_eq!(
        rules(&r, LOCAL),
        [CIP_MASQ.to_owned(), format!("goto {EP1}")]
    );
    assert!(r.chain(SVC).is_none() && r.chain(EP2).is_none());

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
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.10 . udp . 53").as_deref(),
        Some("goto local-kube-system/kube-dns/udp/dns")
    );
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.10 . tcp . 53").as_deref(),
        Some("goto local-kube-system/kube-dns/tcp/dns-tcp")
    );
    assert_eq!(
        rules(&r, "ep-kube-system/kube-dns/udp/dns__192.168.1.10/1053"),
        [
            format!("ip saddr 192.168.1.10 {MASQ}"),
            "meta l4proto udp dnat to 192.168.1.10:1053".to_owned(),
        ]
    );
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
            format!("ip saddr 10.42.1.5 {MASQ}"),
            format!("update @{aff1} {{ ip saddr }}"),
            "meta l4proto tcp dnat to 10.42.1.5:8080".to_owned(),
        ]
    );
    assert_eq!(r.affinity_timeout(aff1), Some(60));
    assert_eq!(r.affinity_timeout(aff2), Some(60));

    let default_timeout = web(json!({"sessionAffinity": "ClientIP"}));
    let r = render(&config(), &[default_timeout], &slices);
    assert_eq!(r.affinity_timeout(aff1), Some(10_800));

    let r = render(&config(), &[web(json!({}))], &slices);
    assert_eq!(r.set_names().count(), 0);
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
        rules(&r, "svc-default/multi/tcp/a")[1..],
        [
            "numgen random mod 2 == 0 goto ep-default/multi/tcp/a__10.42.1.5/8080",
            "goto ep-default/multi/tcp/a__10.42.1.6/8080",
        ]
    );
    assert_eq!(
        rules(&r, "svc-default/multi/udp/a-udp")[1..],
        ["goto ep-default/multi/udp/a-udp__10.42.1.5/8081"]
    );
    assert_eq!(
        rules(&r, "ep-default/multi/sctp/s__10.42.1.5/9009")[1],
        "meta l4proto sctp dnat to 10.42.1.5:9009"
    );
    assert_eq!(
        element(&r, SERVICE_IPS, "10.43.0.40 . sctp . 9").as_deref(),
        Some("goto svc-default/multi/sctp/s")
    );
    assert!(
        !r.chain_names()
            .any(|c| c.contains("10.42.9.9") || c.contains("10.42.8.8"))
    );
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
        Some("goto svc-default/plain/tcp/")
    );
    assert_eq!(
        rules(&r, "svc-default/plain/tcp/")[1],
        "goto ep-default/plain/tcp/__10.42.1.5/8080"
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
    let before = render(&config(), &[web(json!({})), other], &slices);
    let after = render(&config(), &[web(json!({}))], &slices);
    let script = after.update_script(&before).unwrap();
    assert_eq!(
        script,
        "flush chain ip skiff-proxy ep-default/other/tcp/p__10.42.2.6/8181\n\
         flush chain ip skiff-proxy svc-default/other/tcp/p\n\
         delete element ip skiff-proxy service-ips { 10.43.0.60 . tcp . 81 }\n\
         delete chain ip skiff-proxy ep-default/other/tcp/p__10.42.2.6/8181\n\
         delete chain ip skiff-proxy svc-default/other/tcp/p\n"
    );
    assert!(after.chain("svc-default/other/tcp/p").is_none());
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
