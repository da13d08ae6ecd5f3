//! Service address allocation through the HTTP API, over the in-memory store:
//! concurrent writers, restarts, releases, upstream's 422s and type changes;
//! and the DefaultIngressClass plugin.

mod common;

use common::Api;
use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::join_all;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_store::memory::MemoryStore;
use skiff_store::{RangeRequest, Store};
use tower::ServiceExt;

const SVC: &str = "/api/v1/namespaces/default/services";
const IPS: &str = "/apis/networking.k8s.io/v1/ipaddresses";
const CIDRS: &str = "/apis/networking.k8s.io/v1/servicecidrs";

impl Api {
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, "application/json", Value::Null).await
    }

    async fn table(&self, uri: &str) -> Value {
        let request = Request::builder()
            .uri(uri)
            .header(
                header::ACCEPT,
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn create(&self, name: &str, spec: Value) -> (StatusCode, Value) {
        let body = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name}, "spec": spec});
        self.call("POST", SVC, "application/json", body).await
    }

    async fn patch(&self, name: &str, patch: Value) -> (StatusCode, Value) {
        self.call(
            "PATCH",
            &format!("{SVC}/{name}"),
            "application/merge-patch+json",
            patch,
        )
        .await
    }

    async fn delete(&self, name: &str) -> StatusCode {
        self.call(
            "DELETE",
            &format!("{SVC}/{name}"),
            "application/json",
            Value::Null,
        )
        .await
        .0
    }

    /// IPAddress names with their parent Service names.
    async fn addresses(&self) -> Vec<(String, String)> {
        let (status, list) = self.get(IPS).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let mut out: Vec<(String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["metadata"]["name"].as_str().unwrap().to_string(),
                    a["spec"]["parentRef"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new().expect("memory store"))
}

async fn node_port_keys(store: &Arc<dyn Store>) -> Vec<String> {
    let page = store
        .range(RangeRequest::prefix("/registry/ranges/servicenodeports/"))
        .await
        .unwrap();
    page.kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn ip_of(svc: &Value) -> String {
    svc["spec"]["clusterIP"].as_str().unwrap().to_string()
}

fn node_port_of(svc: &Value, i: usize) -> i64 {
    svc["spec"]["ports"][i]["nodePort"].as_i64().unwrap()
}

#[tokio::test]
async fn servicecidrs_and_ipaddresses_print_as_upstream() {
    let api = Api::new().await;
    let (status, _) = api.create("web", json!({"ports": [{"port": 80}]})).await;
    assert_eq!(status, StatusCode::CREATED);

    let table = api.table(CIDRS).await;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "CIDRs", "Age"]);
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(cells[..2], [json!("kubernetes"), json!("10.43.0.0/16")]);

    let table = api.table(IPS).await;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "ParentRef"]);
    let rows: Vec<Value> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"].clone())
        .collect();
    assert!(
        rows.contains(&json!(["10.43.0.1", "services/default/kubernetes"])),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_share_an_address_or_port() {
    let store = memory_store();
    // Two servers over one store, as in a high-availability control plane.
    let servers = [
        Arc::new(Api::on(store.clone()).await),
        Arc::new(Api::on(store.clone()).await),
    ];
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let api = servers[i % 2].clone();
            tokio::spawn(async move {
                api.create(
                    &format!("svc-{i}"),
                    json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
                )
                .await
            })
        })
        .collect();
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for task in join_all(tasks).await {
        let (status, svc) = task.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{svc}");
        assert!(ips.insert(ip_of(&svc)), "{} handed out twice", ip_of(&svc));
        for i in 0..2 {
            assert!(ports.insert(node_port_of(&svc, i)), "port handed out twice");
        }
    }
    assert_eq!(node_port_keys(&store).await.len(), 120);
    // Both servers race for one explicit address and one explicit port:
    // exactly one of each wins.
    for spec in [
        json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}),
        json!({"type": "NodePort", "ports": [{"port": 53, "nodePort": 30053}]}),
    ] {
        let racers: Vec<_> = ["x", "y"]
            .iter()
            .zip(servers.iter().cloned())
            .map(|(name, api)| {
                let spec = spec.clone();
                let name = format!("{name}-{}", spec["ports"][0].get("nodePort").is_some());
                tokio::spawn(async move { api.create(&name, spec).await.0 })
            })
            .collect();
        let statuses: Vec<StatusCode> = join_all(racers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(statuses.contains(&StatusCode::CREATED), "{statuses:?}");
        assert!(
            statuses.contains(&StatusCode::UNPROCESSABLE_ENTITY),
            "{statuses:?}"
        );
    }
    // kubernetes, the 60, kube-dns's winner and the NodePort winner.
    assert_eq!(servers[0].addresses().await.len(), 63);
}

#[tokio::test]
async fn allocations_survive_a_restart() {
    let store = memory_store();
    let api = Api::on(store.clone()).await;
    let (_, web) = api
        .create("web", json!({"type": "NodePort", "ports": [{"port": 80}]}))
        .await;
    let before = api.addresses().await;
    drop(api);

    let api = Api::on(store.clone()).await;
    assert_eq!(api.addresses().await, before);
    let (_, again) = api.get(&format!("{SVC}/web")).await;
    assert_eq!(ip_of(&again), ip_of(&web));
    // The address and port stay taken across the restart.
    let (status, err) = api
        .create(
            "copy",
            json!({"type": "NodePort", "clusterIP": ip_of(&web),
            "ports": [{"port": 80}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let (status, err) = api
        .create(
            "copy",
            json!({"type": "NodePort",
            "ports": [{"port": 80, "nodePort": node_port_of(&web, 0)}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .ends_with("provided port is already allocated")
    );
}

#[tokio::test]
async fn a_store_without_ipaddresses_gets_them_at_start() {
    let store = memory_store();
    let api = Api::on(store.clone()).await;
    let (_, web) = api
        .create("web", json!({"type": "NodePort", "ports": [{"port": 80}]}))
        .await;
    drop(api);
    // What an older server left: the Service, but no allocation records.
    let ip = ip_of(&web);
    store
        .delete(
            &format!("/registry/networking.k8s.io/ipaddresses/{ip}"),
            None,
        )
        .await
        .unwrap();
    store
        .delete(
            &format!(
                "/registry/ranges/servicenodeports/{}",
                node_port_of(&web, 0)
            ),
            None,
        )
        .await
        .unwrap();

    let api = Api::on(store.clone()).await;
    assert!(
        api.addresses()
            .await
            .contains(&(ip.clone(), "web".to_string()))
    );
    assert_eq!(node_port_keys(&store).await.len(), 1);
    let (status, _) = api
        .create("copy", json!({"clusterIP": ip, "ports": [{"port": 80}]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn delete_releases_the_address_and_ports() {
    let store = memory_store();
    let api = Api::on(store.clone()).await;
    let (status, web) = api
        .create(
            "web",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "clusterIP": "10.43.0.50", "ports": [{"port": 80, "nodePort": 30080}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{web}");
    assert!(web["spec"]["healthCheckNodePort"].as_i64().is_some());
    assert_eq!(node_port_keys(&store).await.len(), 2);
    assert_eq!(api.delete("web").await, StatusCode::OK);
    assert_eq!(api.addresses().await.len(), 1, "only kubernetes");
    assert!(node_port_keys(&store).await.is_empty());
    // The same address and port can be asked for again.
    let (status, again) = api
        .create(
            "web2",
            json!({"type": "NodePort", "clusterIP": "10.43.0.50",
            "ports": [{"port": 80, "nodePort": 30080}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
}

#[tokio::test]
async fn invalid_requests_get_upstreams_422s() {
    let api = Api::new().await;
    let (_, dns) = api
        .create(
            "kube-dns",
            json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}),
        )
        .await;
    let cases = [
        (
            json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}),
            "spec.clusterIPs: Invalid value: [\"10.43.0.10\"]: failed to allocate IP 10.43.0.10: provided IP is already allocated",
        ),
        (
            json!({"clusterIP": "10.43.0.0", "ports": [{"port": 53}]}),
            "spec.clusterIPs: Invalid value: [\"10.43.0.0\"]: failed to allocate IP 10.43.0.0: the provided IP (10.43.0.0) is not in the valid range. The range of valid IPs is 10.43.0.0/16",
        ),
        (
            json!({"clusterIP": "192.168.0.1", "ports": [{"port": 53}]}),
            "spec.clusterIPs: Invalid value: [\"192.168.0.1\"]: failed to allocate IP 192.168.0.1: the provided network does not match the current range",
        ),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 29999}]}),
            "spec.ports[0].nodePort: Invalid value: 29999: provided port is not in the valid range. The range of valid ports is 30000-32767",
        ),
        (
            json!({"type": "ExternalName", "externalName": "db.example", "clusterIP": "10.43.0.11"}),
            "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
        ),
    ];
    for (spec, message) in cases {
        let (status, err) = api.create("bad", spec).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["reason"], "Invalid");
        assert_eq!(
            err["message"],
            format!("Service \"bad\" is invalid: {message}")
        );
    }

    // clusterIP may not change once set.
    let (status, err) = api
        .patch("kube-dns", json!({"spec": {"clusterIP": "10.43.0.11"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(
        err["message"],
        "Service \"kube-dns\" is invalid: spec.clusterIPs[0]: Invalid value: [\"10.43.0.11\"]: may not change once set"
    );
    let (_, now) = api.get(&format!("{SVC}/kube-dns")).await;
    assert_eq!(ip_of(&now), ip_of(&dns));
    // Only kubernetes and kube-dns hold addresses: nothing leaked.
    assert_eq!(api.addresses().await.len(), 2);

    // A dry run checks without reserving.
    let (status, dry) = api
        .call(
            "POST",
            &format!("{SVC}?dryRun=All"),
            "application/json",
            json!({"metadata": {"name": "dry"}, "spec": {"clusterIP": "10.43.0.99", "ports": [{"port": 80}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dry}");
    assert_eq!(api.addresses().await.len(), 2);
}

#[tokio::test]
async fn type_changes_allocate_and_release() {
    let store = memory_store();
    let api = Api::on(store.clone()).await;
    let (_, web) = api.create("web", json!({"ports": [{"port": 80}]})).await;
    let ip = ip_of(&web);

    // ClusterIP -> NodePort gets a node port, same address.
    let (status, np) = api
        .patch("web", json!({"spec": {"type": "NodePort"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{np}");
    assert_eq!(ip_of(&np), ip);
    let port = node_port_of(&np, 0);
    assert_eq!(
        node_port_keys(&store).await,
        [format!("/registry/ranges/servicenodeports/{port}")]
    );

    // NodePort -> LoadBalancer with local traffic keeps the port and adds a
    // health check port.
    let (status, lb) = api
        .patch(
            "web",
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lb}");
    assert_eq!(node_port_of(&lb, 0), port);
    let health = lb["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert_eq!(node_port_keys(&store).await.len(), 2);

    // A failing update keeps what the Service had and leaks nothing.
    let (_, other) = api
        .create(
            "other",
            json!({"type": "NodePort", "ports": [{"port": 80}]}),
        )
        .await;
    let taken = node_port_of(&other, 0);
    let (status, err) = api
        .patch(
            "web",
            json!({"spec": {"ports": [
            {"name": "a", "port": 80, "nodePort": port},
            {"name": "b", "port": 81},
            {"name": "c", "port": 82, "nodePort": taken}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(
        err["message"],
        format!(
            "Service \"web\" is invalid: spec.ports[2].nodePort: Invalid value: {taken}: provided port is already allocated"
        )
    );
    assert_eq!(
        node_port_keys(&store).await.len(),
        3,
        "web's two, other's one"
    );

    // LoadBalancer -> ClusterIP frees the node port and the health check port.
    let (status, cluster) = api
        .patch("web", json!({"spec": {"type": "ClusterIP"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    assert_eq!(cluster["spec"]["ports"][0].get("nodePort"), None);
    assert_eq!(cluster["spec"].get("healthCheckNodePort"), None);
    let keys = node_port_keys(&store).await;
    assert_eq!(keys, [format!("/registry/ranges/servicenodeports/{taken}")]);
    assert!(!keys.iter().any(|k| k.ends_with(&health.to_string())));

    // -> ExternalName frees the address; back to ClusterIP gets a new one.
    let (status, ext) = api
        .patch(
            "web",
            json!({"spec": {"type": "ExternalName", "externalName": "db.example"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ext}");
    assert_eq!(ext["spec"].get("clusterIP"), None);
    assert!(!api.addresses().await.iter().any(|(a, _)| *a == ip));
    let (status, back) = api
        .patch(
            "web",
            json!({"spec": {"type": "ClusterIP", "externalName": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    let new_ip = ip_of(&back);
    assert!(api.addresses().await.contains(&(new_ip, "web".to_string())));
}

#[tokio::test]
async fn ingresses_without_a_class_get_the_default_ingress_class() {
    const INGRESSES: &str = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    let api = Api::new().await;
    let ingress = |name: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}})
    };
    let (code, before) = api
        .call("POST", INGRESSES, "application/json", ingress("before"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{before}");
    assert!(before["spec"].get("ingressClassName").is_none(), "{before}");

    let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "skiff",
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "skiff.dev/ingress"}});
    let (code, body) = api
        .call(
            "POST",
            "/apis/networking.k8s.io/v1/ingressclasses",
            "application/json",
            class,
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, defaulted) = api
        .call("POST", INGRESSES, "application/json", ingress("after"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{defaulted}");
    assert_eq!(defaulted["spec"]["ingressClassName"], "skiff");

    let mut legacy = ingress("legacy");
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "nginx"});
    let (code, kept) = api
        .call("POST", INGRESSES, "application/json", legacy)
        .await;
    assert_eq!(code, StatusCode::CREATED, "{kept}");
    assert!(kept["spec"].get("ingressClassName").is_none(), "{kept}");
}
