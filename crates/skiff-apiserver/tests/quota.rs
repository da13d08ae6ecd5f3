//! ResourceQuota admission of updates through the HTTP API, over the
//! in-memory store: claim expansion, service type changes, pod resizes and
//! scope changes are charged their growth, refused past `hard` with
//! upstream's 403, and refunded when the update then fails.
//!
//! No quota controller runs here: each quota's status is written by the test,
//! as the controller would leave it, and then moves only by admission.

mod common;

use common::Api;
use std::sync::Arc;

use axum::http::StatusCode;
use futures::future::join_all;
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/default";
const MERGE: &str = "application/merge-patch+json";

impl Api {
    /// Creates `body` in the collection `plural` of the default namespace.
    async fn create(&self, plural: &str, body: Value) {
        let (code, body) = self
            .call("POST", &format!("{NS}/{plural}"), "application/json", body)
            .await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
    }

    /// Merge-patches `plural/name` (with `/sub` for a subresource).
    async fn patch(&self, path: &str, patch: Value) -> (StatusCode, Value) {
        self.call("PATCH", &format!("{NS}/{path}"), MERGE, patch)
            .await
    }

    /// `status.used` of quota `name`.
    async fn used(&self, name: &str) -> Value {
        let (code, quota) = self
            .call(
                "GET",
                &format!("{NS}/resourcequotas/{name}"),
                "application/json",
                Value::Null,
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{quota}");
        quota["status"]["used"].clone()
    }

    /// A quota as the quota controller leaves it: `status.hard` = `spec.hard`.
    async fn quota(&self, name: &str, spec: Value, used: Value) {
        self.create(
            "resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota",
                   "metadata": {"name": name}, "spec": spec.clone()}),
        )
        .await;
        let (code, body) = self
            .patch(
                &format!("resourcequotas/{name}/status"),
                json!({"status": {"hard": spec["hard"], "used": used}}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }

    /// A claim of `storage` in class `gold`, bound (only bound claims expand,
    /// and only in a class that allows it, which `gold` is made to).
    async fn bound_claim(&self, name: &str, storage: &str) {
        let (code, body) = self
            .call(
                "POST",
                "/apis/storage.k8s.io/v1/storageclasses",
                "application/json",
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                       "metadata": {"name": "gold"}, "provisioner": "rancher.io/local-path",
                       "allowVolumeExpansion": true}),
            )
            .await;
        assert!(
            code == StatusCode::CREATED || code == StatusCode::CONFLICT,
            "{body}"
        );
        self.create(
            "persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": name},
                   "spec": {"storageClassName": "gold", "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": storage}}}}),
        )
        .await;
        let (code, body) = self
            .patch(
                &format!("persistentvolumeclaims/{name}/status"),
                json!({"status": {"phase": "Bound", "capacity": {"storage": storage}}}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }

    async fn expand(&self, claim: &str, storage: &str) -> (StatusCode, Value) {
        self.patch(
            &format!("persistentvolumeclaims/{claim}"),
            json!({"spec": {"resources": {"requests": {"storage": storage}}}}),
        )
        .await
    }

    async fn service(&self, name: &str, spec: Value) {
        self.create(
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }

    async fn pod(&self, name: &str, cpu: &str) {
        self.create(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"containers": [{"name": "app", "image": "nginx",
                       "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]}}),
        )
        .await;
    }

    /// Changes the pod's container cpu (requests and limits), in place
    /// through `pods/resize`, by strategic merge as kubectl patches.
    async fn resize(&self, pod: &str, cpu: &str) -> (StatusCode, Value) {
        self.call(
            "PATCH",
            &format!("{NS}/pods/{pod}/resize"),
            "application/strategic-merge-patch+json",
            json!({"spec": {"containers": [{"name": "app",
                "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]}}),
        )
        .await
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn claim_expansion_is_charged_its_growth_overall_and_per_class() {
    let api = Api::new().await;
    api.quota(
        "storage",
        json!({"hard": {"requests.storage": "10Gi",
                        "gold.storageclass.storage.k8s.io/requests.storage": "3Gi"}}),
        json!({"requests.storage": "0", "gold.storageclass.storage.k8s.io/requests.storage": "0"}),
    )
    .await;
    api.bound_claim("data", "1Gi").await;
    assert_eq!(
        api.used("storage").await,
        json!({"requests.storage": "1Gi", "gold.storageclass.storage.k8s.io/requests.storage": "1Gi"})
    );

    let (code, body) = api.expand("data", "2Gi").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        api.used("storage").await,
        json!({"requests.storage": "2Gi", "gold.storageclass.storage.k8s.io/requests.storage": "2Gi"})
    );

    let (code, body) = api.expand("data", "4Gi").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        message(&body),
        "persistentvolumeclaims \"data\" is forbidden: exceeded quota: storage, \
         requested: gold.storageclass.storage.k8s.io/requests.storage=2Gi, \
         used: gold.storageclass.storage.k8s.io/requests.storage=2Gi, \
         limited: gold.storageclass.storage.k8s.io/requests.storage=3Gi"
    );
    assert_eq!(
        api.used("storage").await["requests.storage"],
        "2Gi",
        "a refused expansion is not charged"
    );

    // A dry run is checked but not charged.
    let (code, body) = api
        .call(
            "PATCH",
            &format!("{NS}/persistentvolumeclaims/data?dryRun=All"),
            MERGE,
            json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(api.used("storage").await["requests.storage"], "2Gi");

    // The resizer recording a larger allocation is charged, even past hard:
    // the storage is taken already (upstream exempts status writes).
    let (code, body) = api
        .patch(
            "persistentvolumeclaims/data/status",
            json!({"status": {"allocatedResources": {"storage": "5Gi"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        api.used("storage").await,
        json!({"requests.storage": "5Gi", "gold.storageclass.storage.k8s.io/requests.storage": "5Gi"})
    );
}

#[tokio::test]
async fn service_type_changes_are_charged_node_ports_and_load_balancers() {
    let api = Api::new().await;
    api.quota(
        "net",
        json!({"hard": {"services.nodeports": "2", "services.loadbalancers": "1"}}),
        json!({"services.nodeports": "0", "services.loadbalancers": "0"}),
    )
    .await;
    let two_ports =
        json!({"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]});
    api.service("a", two_ports.clone()).await;
    api.service("b", json!({"ports": [{"port": 80}]})).await;
    assert_eq!(
        api.used("net").await,
        json!({"services.nodeports": "0", "services.loadbalancers": "0"})
    );

    let (code, body) = api
        .patch("services/a", json!({"spec": {"type": "NodePort"}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(api.used("net").await["services.nodeports"], "2");

    let (code, body) = api
        .patch("services/b", json!({"spec": {"type": "NodePort"}}))
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "services \"b\" is forbidden: exceeded quota: net, requested: services.nodeports=1, \
         used: services.nodeports=2, limited: services.nodeports=2"
    );
    let (_, b) = api
        .call("GET", &format!("{NS}/services/b"), "", Value::Null)
        .await;
    assert_eq!(
        b["spec"]["type"], "ClusterIP",
        "a refused update is not stored"
    );

    // NodePort to LoadBalancer keeps the same node ports: only the balancer
    // is new.
    let (code, body) = api
        .patch("services/a", json!({"spec": {"type": "LoadBalancer"}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        api.used("net").await,
        json!({"services.nodeports": "2", "services.loadbalancers": "1"})
    );
}

#[tokio::test]
async fn an_update_that_fails_after_admission_gives_its_charge_back() {
    let api = Api::new().await;
    api.quota(
        "net",
        json!({"hard": {"services.nodeports": "5"}}),
        json!({"services.nodeports": "0"}),
    )
    .await;
    api.service(
        "taken",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await;
    api.service("late", json!({"ports": [{"port": 80}]})).await;
    assert_eq!(api.used("net").await["services.nodeports"], "1");

    // Quota admits the new node port; allocating it then fails.
    let (code, body) = api
        .patch(
            "services/late",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(api.used("net").await["services.nodeports"], "1");
}

#[tokio::test]
async fn pod_resizes_are_charged_only_what_they_grow() {
    let api = Api::new().await;
    api.quota(
        "compute",
        json!({"hard": {"requests.cpu": "2", "limits.cpu": "2", "pods": "5"}}),
        json!({"requests.cpu": "0", "limits.cpu": "0", "pods": "0"}),
    )
    .await;
    api.pod("web", "500m").await;
    api.pod("db", "500m").await;
    assert_eq!(
        api.used("compute").await,
        json!({"limits.cpu": "1", "pods": "2", "requests.cpu": "1"})
    );

    let (code, body) = api.resize("web", "1").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        api.used("compute").await,
        json!({"limits.cpu": "1500m", "pods": "2", "requests.cpu": "1500m"})
    );

    let (code, body) = api.resize("db", "1500m").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"db\" is forbidden: exceeded quota: compute, requested: limits.cpu=1,requests.cpu=1, \
         used: limits.cpu=1500m,requests.cpu=1500m, limited: limits.cpu=2,requests.cpu=2"
    );

    // Shrinking is free here; the controller's recount gives quota back.
    let (code, body) = api.resize("web", "250m").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(api.used("compute").await["requests.cpu"], "1500m");
}

#[tokio::test]
async fn a_pod_entering_a_scoped_quota_is_charged_in_full() {
    let api = Api::new().await;
    api.quota(
        "deadlines",
        json!({"hard": {"pods": "1"}, "scopes": ["Terminating"]}),
        json!({"pods": "0"}),
    )
    .await;
    api.pod("a", "100m").await;
    api.pod("b", "100m").await;
    assert_eq!(api.used("deadlines").await["pods"], "0");

    let deadline = json!({"spec": {"activeDeadlineSeconds": 600}});
    let (code, body) = api.patch("pods/a", deadline.clone()).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(api.used("deadlines").await["pods"], "1");

    let (code, body) = api.patch("pods/b", deadline).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"b\" is forbidden: exceeded quota: deadlines, requested: pods=1, used: pods=1, limited: pods=1"
    );

    // A pod already in the quota is not charged again for a shorter deadline.
    let (code, body) = api
        .patch("pods/a", json!({"spec": {"activeDeadlineSeconds": 300}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(api.used("deadlines").await["pods"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_expansions_never_overshoot() {
    let api = Arc::new(Api::new().await);
    api.quota(
        "storage",
        json!({"hard": {"requests.storage": "6Gi"}}),
        json!({"requests.storage": "0"}),
    )
    .await;
    for i in 0..4 {
        api.bound_claim(&format!("c{i}"), "1Gi").await;
    }
    assert_eq!(api.used("storage").await["requests.storage"], "4Gi");

    // Four claims each grow by 1Gi into 2Gi of room: exactly two fit.
    let results = join_all((0..4).map(|i| {
        let api = api.clone();
        tokio::spawn(async move { api.expand(&format!("c{i}"), "2Gi").await.0 })
    }))
    .await;
    let codes: Vec<StatusCode> = results.into_iter().map(Result::unwrap).collect();
    let admitted = codes.iter().filter(|c| **c == StatusCode::OK).count();
    let refused = codes
        .iter()
        .filter(|c| **c == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((admitted, refused), (2, 2), "{codes:?}");
    assert_eq!(api.used("storage").await["requests.storage"], "6Gi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_updates_of_one_claim_are_charged_once() {
    let api = Arc::new(Api::new().await);
    api.quota(
        "storage",
        json!({"hard": {"requests.storage": "100Gi"}}),
        json!({"requests.storage": "0"}),
    )
    .await;
    api.bound_claim("data", "1Gi").await;

    // Writers that lose the compare-and-swap on the claim retry on the newer
    // claim; each retry must give back what the lost attempt was charged.
    let results = join_all((2..10).map(|gi| {
        let api = api.clone();
        tokio::spawn(async move { (gi, api.expand("data", &format!("{gi}Gi")).await) })
    }))
    .await;
    let mut stored = Vec::new();
    for result in results {
        let (gi, (code, body)) = result.unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        let revision: u64 = body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        stored.push((revision, gi));
    }
    // Each stored write was charged what it grew over the one before it
    // (a smaller request, allowed down to the bound capacity, frees nothing).
    stored.sort();
    let mut size = 1;
    let mut expected = 1;
    for (_, gi) in stored {
        expected += (gi - size).max(0);
        size = gi;
    }
    assert_eq!(
        api.used("storage").await["requests.storage"],
        format!("{expected}Gi")
    );
}
