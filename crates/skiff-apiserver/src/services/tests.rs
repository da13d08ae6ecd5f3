//! The pure update rules, and allocation against an in-memory store.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::{MemoryStore, RangeRequest};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cache::object_key;
use crate::rest::{ObjectRef, WriteContext};

fn svc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

#[test]
fn clusterip_alone_fills_clusterips_on_create() {
    let mut new = svc(json!({"clusterIP": "10.43.0.10"}));
    normalize_cluster_ips(&mut new, None);
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.10"]));
    let mut headless = svc(json!({"clusterIP": "None"}));
    normalize_cluster_ips(&mut headless, None);
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
}

#[test]
fn updates_keep_what_the_client_left_out() {
    let old = svc(
        json!({"type": "NodePort", "clusterIP": "10.43.9.9", "clusterIPs": ["10.43.9.9"],
        "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                  {"name": "https", "port": 443, "nodePort": 30443}]}),
    );
    // `kubectl apply` of the original manifest: no addresses, no node ports.
    let mut new = svc(json!({"type": "NodePort",
        "ports": [{"name": "https", "port": 443}, {"name": "http", "port": 80}]}));
    prepare_update(&mut new, &old);
    assert_eq!(new["spec"]["clusterIP"], "10.43.9.9");
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.9.9"]));
    assert_eq!(new["spec"]["ports"][0]["nodePort"], 30443);
    assert_eq!(new["spec"]["ports"][1]["nodePort"], 30080);

    // A node port the client moved to another port is not handed back.
    let mut moved = svc(json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30443}, {"name": "https", "port": 443}]}));
    prepare_update(&mut moved, &old);
    assert_eq!(moved["spec"]["ports"][1].get("nodePort"), None);
}

#[test]
fn clusterip_only_changes_carry_to_clusterips() {
    let old = svc(json!({"clusterIP": "10.43.9.9", "clusterIPs": ["10.43.9.9"]}));
    let mut new = svc(json!({"clusterIP": "10.43.9.10", "clusterIPs": ["10.43.9.9"]}));
    prepare_update(&mut new, &old);
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.9.10"]));
    // An old client that sends only the singular keeps the plural.
    let mut singular = svc(json!({"clusterIP": "10.43.9.9"}));
    prepare_update(&mut singular, &old);
    assert_eq!(singular["spec"]["clusterIPs"], json!(["10.43.9.9"]));
}

#[test]
fn type_changes_drop_unchanged_type_dependent_fields() {
    let old = svc(json!({"type": "LoadBalancer", "clusterIP": "10.43.9.9",
        "clusterIPs": ["10.43.9.9"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "externalTrafficPolicy": "Local", "healthCheckNodePort": 30500,
        "allocateLoadBalancerNodePorts": true, "internalTrafficPolicy": "Cluster",
        "ports": [{"port": 80, "nodePort": 30080}]}));
    let mut external = old.clone();
    external["spec"]["type"] = json!("ExternalName");
    external["spec"]["externalName"] = json!("db.example");
    external["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}});
    prepare_update(&mut external, &old);
    let spec = &external["spec"];
    for gone in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "externalTrafficPolicy",
        "healthCheckNodePort",
        "allocateLoadBalancerNodePorts",
        "internalTrafficPolicy",
    ] {
        assert!(spec.get(gone).is_none(), "{gone} kept: {spec}");
    }
    assert_eq!(spec["ports"][0].get("nodePort"), None);
    assert_eq!(external["status"]["loadBalancer"], json!({}));

    // A new node port the client asks for while leaving NodePort stays, for
    // validation to refuse.
    let mut cluster = old.clone();
    cluster["spec"]["type"] = json!("ClusterIP");
    cluster["spec"]["ports"][0]["nodePort"] = json!(31000);
    prepare_update(&mut cluster, &old);
    assert_eq!(cluster["spec"]["ports"][0]["nodePort"], 31000);
    assert_eq!(cluster["spec"]["clusterIP"], "10.43.9.9");
}

#[test]
fn held_addresses_and_ports() {
    let lb = svc(json!({"type": "LoadBalancer", "clusterIP": "10.43.9.9",
        "clusterIPs": ["10.43.9.9"], "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 30500,
        "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053},
                  {"port": 53, "protocol": "TCP", "nodePort": 30053}]}));
    assert_eq!(held_ips(&lb), vec![Ipv4Addr::new(10, 43, 9, 9)]);
    assert_eq!(held_ports(&lb), vec![30053, 30500]);
    assert!(needs_health_check(&lb) && should_allocate_node_ports(&lb));
    let headless = svc(json!({"clusterIP": "None", "clusterIPs": ["None"]}));
    assert!(held_ips(&headless).is_empty() && is_headless(&headless));
    let mut no_ports = lb.clone();
    no_ports["spec"]["allocateLoadBalancerNodePorts"] = json!(false);
    assert!(!should_allocate_node_ports(&no_ports));
    let owner = Owner::of(&lb);
    assert!(owner.is_parent_of(&owner.parent_ref()));
    assert!(
        !owner.is_parent_of(&json!({"group": "gateway.networking.k8s.io",
        "resource": "services", "namespace": "default", "name": "web"}))
    );
}

/// A running API machinery over a fresh in-memory store.
struct Server {
    rest: Arc<Rest>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn server() -> Server {
    let shutdown = CancellationToken::new();
    let store = Arc::new(MemoryStore::new().expect("memory store"));
    let rest = crate::start(store, "127.0.0.1:6443".parse().unwrap(), shutdown.clone())
        .await
        .expect("api starts");
    Server {
        rest,
        _shutdown: shutdown.drop_guard(),
    }
}

fn services_rt() -> &'static ResourceType {
    registry::by_plural("", "v1", "services").unwrap()
}

async fn create(rest: &Rest, name: &str, spec: Value) -> ApiResult<Value> {
    let body = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    rest.create(
        services_rt(),
        Some("default"),
        body,
        &mut WriteContext::internal("test"),
    )
    .await
}

async fn stored_ports(rest: &Rest) -> Vec<u16> {
    let page = rest
        .store()
        .range(RangeRequest::prefix(NODE_PORT_PREFIX))
        .await
        .unwrap();
    page.kvs
        .iter()
        .filter_map(|kv| node_ports::port_of(&kv.key))
        .collect()
}

/// How many IPAddresses exist, once the cache has caught up.
async fn address_count(rest: &Rest) -> usize {
    rest.cache.sync().await.unwrap();
    rest.cache.list(cluster_ip::ip_address_type(), None).0.len()
}

async fn ip_address(rest: &Rest, ip: &str) -> Option<Value> {
    let key = object_key(cluster_ip::ip_address_type(), None, ip);
    let kv = rest.store().get(&key).await.unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

#[tokio::test]
async fn start_reserves_the_default_range_and_the_api_service_address() {
    let s = server().await;
    let cidr = s
        .rest
        .get(ObjectRef {
            rt: cluster_ip::service_cidr_type(),
            namespace: None,
            name: DEFAULT_SERVICE_CIDR_NAME,
        })
        .await
        .unwrap();
    assert_eq!(cidr.object["spec"]["cidrs"], json!(["10.43.0.0/16"]));
    let ready = &cidr.object["status"]["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"]),
        (&json!("Ready"), &json!("True"))
    );
    let address = ip_address(&s.rest, "10.43.0.1")
        .await
        .expect("kubernetes has its IPAddress");
    assert_eq!(
        address["spec"]["parentRef"],
        json!({"group": "", "resource": "services", "namespace": "default", "name": "kubernetes"})
    );
    assert_eq!(address["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(address["metadata"]["labels"][IP_FAMILY_LABEL], "IPv4");
    assert!(address["metadata"]["managedFields"].is_array());
}

#[tokio::test]
async fn dynamic_addresses_avoid_the_static_band() {
    let s = server().await;
    let mut seen = HashSet::new();
    for i in 0..20 {
        let created = create(
            &s.rest,
            &format!("svc-{i}"),
            json!({"ports": [{"port": 80}]}),
        )
        .await
        .unwrap();
        let ip: Ipv4Addr = created["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(created["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert!(
            ip >= Ipv4Addr::new(10, 43, 1, 1),
            "{ip} is in the static band"
        );
        assert!(seen.insert(ip));
        let address = ip_address(&s.rest, &ip.to_string()).await.unwrap();
        assert_eq!(address["spec"]["parentRef"]["name"], format!("svc-{i}"));
    }
}

#[tokio::test]
async fn requested_addresses_and_their_errors() {
    let s = server().await;
    let dns = create(
        &s.rest,
        "kube-dns",
        json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}),
    )
    .await
    .unwrap();
    assert_eq!(dns["spec"]["clusterIPs"], json!(["10.43.0.10"]));

    let taken = create(
        &s.rest,
        "other",
        json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(taken.code, 422);
    assert_eq!(
        taken.message,
        "Service \"other\" is invalid: spec.clusterIPs: Invalid value: [\"10.43.0.10\"]: failed to allocate IP 10.43.0.10: provided IP is already allocated"
    );
    let outside = create(
        &s.rest,
        "other",
        json!({"clusterIP": "10.44.0.5", "ports": [{"port": 80}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        outside.message,
        "Service \"other\" is invalid: spec.clusterIPs: Invalid value: [\"10.44.0.5\"]: failed to allocate IP 10.44.0.5: the provided network does not match the current range"
    );
    let broadcast = create(
        &s.rest,
        "other",
        json!({"clusterIP": "10.43.255.255", "ports": [{"port": 80}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        broadcast.message,
        "Service \"other\" is invalid: spec.clusterIPs: Invalid value: [\"10.43.255.255\"]: failed to allocate IP 10.43.255.255: the provided IP (10.43.255.255) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
    );
    let dual = create(
        &s.rest,
        "other",
        json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        dual.message,
        "Service \"other\" is invalid: spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"
    );
    // None of the refused writes left anything behind.
    assert_eq!(
        address_count(&s.rest).await,
        2,
        "kubernetes and kube-dns only"
    );
}

#[tokio::test]
async fn node_ports_headless_and_external_names() {
    let s = server().await;
    let dns = create(
        &s.rest,
        "dns",
        json!({"type": "NodePort", "ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "metrics", "port": 9153, "protocol": "TCP", "nodePort": 30053}]}),
    )
    .await
    .unwrap();
    let ports = &dns["spec"]["ports"];
    let shared = ports[0]["nodePort"].as_i64().unwrap();
    assert_eq!(
        ports[1]["nodePort"], shared,
        "one node port for 53/UDP and 53/TCP"
    );
    assert!(
        (30086..=32767).contains(&shared),
        "{shared} is in the static band"
    );
    assert_eq!(ports[2]["nodePort"], 30053);
    let mut stored = stored_ports(&s.rest).await;
    stored.sort_unstable();
    let mut expected = vec![30053, u16::try_from(shared).unwrap()];
    expected.sort_unstable();
    assert_eq!(stored, expected);

    let clash = create(
        &s.rest,
        "clash",
        json!({"type": "NodePort", "ports": [
        {"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30053}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        clash.message,
        "Service \"clash\" is invalid: spec.ports[1].nodePort: Invalid value: 30053: provided port is already allocated"
    );
    let outside = create(
        &s.rest,
        "clash",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        outside.message,
        "Service \"clash\" is invalid: spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
    // The dynamic port of the refused Service was given back, and its
    // cluster IP too.
    assert_eq!(stored_ports(&s.rest).await.len(), 2);
    assert_eq!(address_count(&s.rest).await, 2, "kubernetes and dns");

    let lb = create(
        &s.rest,
        "lb",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
        "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}),
    )
    .await
    .unwrap();
    assert_eq!(lb["spec"]["ports"][0].get("nodePort"), None);
    let health = lb["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert!(
        stored_ports(&s.rest)
            .await
            .contains(&u16::try_from(health).unwrap())
    );

    let headless = create(
        &s.rest,
        "db",
        json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
    )
    .await
    .unwrap();
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let external = create(
        &s.rest,
        "ext",
        json!({"type": "ExternalName", "externalName": "db.example"}),
    )
    .await
    .unwrap();
    assert_eq!(external["spec"].get("clusterIP"), None);
    assert_eq!(address_count(&s.rest).await, 3, "kubernetes, dns and lb");
}

#[tokio::test]
async fn allocations_are_freed_on_revert_commit_and_delete() {
    let s = server().await;
    let rest = &s.rest;
    let web = create(
        rest,
        "web",
        json!({"type": "NodePort", "ports": [{"port": 80}]}),
    )
    .await
    .unwrap();
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    let port = u16::try_from(web["spec"]["ports"][0]["nodePort"].as_i64().unwrap()).unwrap();

    // An update that is not stored gives back what it reserved.
    let mut bigger = web.clone();
    bigger["spec"]["ports"] = json!([{"name": "a", "port": 80, "nodePort": port},
        {"name": "b", "port": 81}]);
    let allocation = allocate_update(rest, services_rt(), &web, &mut bigger, false)
        .await
        .unwrap();
    let added = u16::try_from(bigger["spec"]["ports"][1]["nodePort"].as_i64().unwrap()).unwrap();
    assert!(stored_ports(rest).await.contains(&added));
    allocation.revert(rest).await;
    assert_eq!(stored_ports(rest).await, vec![port]);

    // A stored switch to ClusterIP frees the node port at commit only.
    let mut cluster = web.clone();
    cluster["spec"]["type"] = json!("ClusterIP");
    prepare_update(&mut cluster, &web);
    let allocation = allocate_update(rest, services_rt(), &web, &mut cluster, false)
        .await
        .unwrap();
    assert_eq!(stored_ports(rest).await, vec![port]);
    allocation.commit(rest).await;
    assert!(stored_ports(rest).await.is_empty());

    // Releasing on behalf of another Service frees nothing.
    let impostor = svc(json!({"clusterIP": ip, "clusterIPs": [ip]}));
    let mut impostor = impostor;
    impostor["metadata"]["name"] = json!("impostor");
    release(rest, services_rt(), &impostor).await;
    assert!(ip_address(rest, &ip).await.is_some());
    release(rest, services_rt(), &web).await;
    assert!(ip_address(rest, &ip).await.is_none());
}

#[tokio::test]
async fn repair_restores_missing_records_and_removes_leaks() {
    let s = server().await;
    let rest = &s.rest;
    let web = create(
        rest,
        "web",
        json!({"type": "NodePort", "ports": [{"port": 80}]}),
    )
    .await
    .unwrap();
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    let port = u16::try_from(web["spec"]["ports"][0]["nodePort"].as_i64().unwrap()).unwrap();
    assert!(repair(rest).await.unwrap().is_empty());

    // Records lost (a store from before IPAddresses) come back.
    let key = object_key(cluster_ip::ip_address_type(), None, &ip);
    rest.store().delete(&key, None).await.unwrap();
    rest.store()
        .delete(&node_ports::key(port), None)
        .await
        .unwrap();
    let report = repair(rest).await.unwrap();
    assert_eq!((report.ips_created, report.ports_created), (1, 1));
    assert!(ip_address(rest, &ip).await.is_some());
    assert_eq!(stored_ports(rest).await, vec![port]);

    // Records nobody holds go, but only once older than a write takes.
    let ghost = Owner::new("default", "ghost");
    cluster_ip::create_ip_address(rest, Ipv4Addr::new(10, 43, 7, 7), &ghost)
        .await
        .unwrap();
    node_ports::create(rest, 31999, &ghost).await.unwrap();
    assert!(repair(rest).await.unwrap().is_empty(), "young records stay");
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
    let report = repair_at(rest, later).await.unwrap();
    assert_eq!((report.ips_deleted, report.ports_deleted), (1, 1));
    assert!(ip_address(rest, "10.43.7.7").await.is_none());
    assert_eq!(stored_ports(rest).await, vec![port]);
    // What Services hold is never a leak.
    assert!(repair_at(rest, later).await.unwrap().is_empty());
    assert!(ip_address(rest, &ip).await.is_some());
    assert!(ip_address(rest, "10.43.0.1").await.is_some());
}

#[tokio::test]
async fn a_search_steps_over_addresses_taken_behind_the_cache() {
    let s = server().await;
    let rest = &s.rest;
    // One small range only: 10.99.0.0/28 has 14 hosts and no static band.
    let cidrs = cluster_ip::service_cidr_type();
    let body = json!({"metadata": {"name": "small"}, "spec": {"cidrs": ["10.99.0.0/28"]}});
    rest.create(cidrs, None, body, &mut WriteContext::internal("test"))
        .await
        .unwrap();
    let default = ObjectRef {
        rt: cidrs,
        namespace: None,
        name: DEFAULT_SERVICE_CIDR_NAME,
    };
    rest.delete(default, &Default::default(), false)
        .await
        .unwrap();
    rest.cache.sync().await.unwrap();

    let owner = Owner::new("default", "web");
    let mut allocator = cluster_ip::IpAllocator::new(rest, &owner, false);
    // Another writer takes all but one address after the allocator looked.
    let other = Owner::new("default", "other");
    let hosts: Vec<Ipv4Addr> = (1..=14).map(|i| Ipv4Addr::new(10, 99, 0, i)).collect();
    for ip in &hosts[..13] {
        cluster_ip::create_ip_address(rest, *ip, &other)
            .await
            .unwrap();
    }
    assert_eq!(allocator.allocate_next().await.unwrap(), hosts[13]);
    assert!(matches!(
        allocator.allocate_next().await,
        Err(IpError::Full)
    ));
    let full = create(rest, "late", json!({"ports": [{"port": 80}]}))
        .await
        .unwrap_err();
    assert_eq!(full.code, 500);
    assert_eq!(
        full.message,
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    );
}
