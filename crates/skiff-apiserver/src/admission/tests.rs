//! The admission plugins through the HTTP router, over the in-memory store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_store::memory::MemoryStore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    _shutdown: tokio_util::sync::DropGuard,
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const QUOTAS: &str = "/api/v1/namespaces/default/resourcequotas";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

impl Api {
    async fn new() -> Api {
        let shutdown = CancellationToken::new();
        let store = Arc::new(MemoryStore::new().expect("memory store"));
        let rest = crate::start(store, "127.0.0.1:6443".parse().unwrap(), shutdown.clone())
            .await
            .expect("api starts");
        Api {
            router: crate::app(rest),
            _shutdown: shutdown.drop_guard(),
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, "application/json", Value::Null).await
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, "application/json", body).await
    }

    /// Writes `status` through the status subresource, as a controller would.
    async fn set_status(&self, uri: &str, status: Value) {
        let (code, body) = self
            .call(
                "PATCH",
                &format!("{uri}/status"),
                "application/merge-patch+json",
                json!({"status": status}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
}

fn pod(name: &str, labels: Value, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "nginx", "resources": resources}]}})
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
}

/// A quota as the quota controller leaves it: status.hard = spec.hard.
async fn counted_quota(api: &Api, name: &str, hard: Value, used: Value) {
    let (code, body) = api
        .post(
            QUOTAS,
            json!({"apiVersion": "v1", "kind": "ResourceQuota",
                   "metadata": {"name": name}, "spec": {"hard": hard.clone()}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    api.set_status(
        &format!("{QUOTAS}/{name}"),
        json!({"hard": hard, "used": used}),
    )
    .await;
}

#[tokio::test]
async fn limit_ranges_default_and_bound_pods() {
    let api = Api::new().await;
    let (code, body) = api
        .post(
            "/api/v1/namespaces/default/limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "cpu"},
                   "spec": {"limits": [{"type": "Container", "max": {"cpu": "500m"},
                                        "default": {"cpu": "200m"}, "defaultRequest": {"cpu": "100m"}}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    let (code, created) = api.post(PODS, pod("plain", json!({}), json!({}))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let resources = &created["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["cpu"], "200m");
    assert_eq!(resources["requests"]["cpu"], "100m");
    assert_eq!(created["status"]["qosClass"], "Burstable");
    assert_eq!(
        created["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu request for container app; cpu limit for container app"
    );

    let (code, refused) = api
        .post(PODS, pod("big", json!({}), json!({"limits": {"cpu": "1"}})))
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["reason"], "Forbidden");
    assert_eq!(
        refused["message"],
        "pods \"big\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"
    );
    let (code, _) = api.get(&format!("{PODS}/big")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn quota_charges_creates_and_refuses_past_hard() {
    let api = Api::new().await;
    counted_quota(&api, "pods", json!({"pods": "1"}), json!({"pods": "0"})).await;

    let (code, body) = api
        .post(
            &format!("{PODS}?dryRun=All"),
            pod("dry", json!({}), json!({})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (_, quota) = api.get(&format!("{QUOTAS}/pods")).await;
    assert_eq!(
        quota["status"]["used"]["pods"], "0",
        "dry runs are not charged"
    );

    let (code, body) = api.post(PODS, pod("a", json!({}), json!({}))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (_, quota) = api.get(&format!("{QUOTAS}/pods")).await;
    assert_eq!(quota["status"]["used"]["pods"], "1");

    let (code, refused) = api.post(PODS, pod("b", json!({}), json!({}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        refused["message"],
        "pods \"b\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"
    );
}

#[tokio::test]
async fn compute_quota_requires_requests_and_known_usage() {
    let api = Api::new().await;
    let (code, _) = api
        .post(
            QUOTAS,
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "fresh"},
                   "spec": {"hard": {"pods": "5"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    api.set_status(&format!("{QUOTAS}/fresh"), json!({"hard": {"pods": "5"}}))
        .await;
    let (code, refused) = api.post(PODS, pod("a", json!({}), json!({}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        refused["message"],
        "pods \"a\" is forbidden: status unknown for quota: fresh, resources: pods"
    );

    let api = Api::new().await;
    counted_quota(
        &api,
        "compute",
        json!({"requests.cpu": "1", "limits.memory": "1Gi"}),
        json!({"requests.cpu": "0", "limits.memory": "0"}),
    )
    .await;
    let (code, refused) = api.post(PODS, pod("a", json!({}), json!({}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        refused["message"],
        "pods \"a\" is forbidden: failed quota: compute: must specify limits.memory for: app; requests.cpu for: app"
    );
    let sized = json!({"requests": {"cpu": "600m"}, "limits": {"memory": "512Mi"}});
    let (code, body) = api.post(PODS, pod("a", json!({}), sized.clone())).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (_, quota) = api.get(&format!("{QUOTAS}/compute")).await;
    assert_eq!(
        quota["status"]["used"],
        json!({"limits.memory": "512Mi", "requests.cpu": "600m"})
    );
    let (code, refused) = api.post(PODS, pod("b", json!({}), sized)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        refused["message"],
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
}

#[tokio::test]
async fn concurrent_creates_never_overshoot_and_failed_creates_are_refunded() {
    let api = Arc::new(Api::new().await);
    counted_quota(
        &api,
        "objects",
        json!({"count/configmaps": "3"}),
        json!({"count/configmaps": "0"}),
    )
    .await;
    let creates = (0..10).map(|i| {
        let api = api.clone();
        tokio::spawn(async move { api.post(CONFIGMAPS, configmap(&format!("cm-{i}"))).await.0 })
    });
    let codes: Vec<StatusCode> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == StatusCode::CREATED).count(),
        3
    );
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == StatusCode::FORBIDDEN)
            .count(),
        7
    );
    let (_, quota) = api.get(&format!("{QUOTAS}/objects")).await;
    assert_eq!(quota["status"]["used"]["count/configmaps"], "3");

    let api = Api::new().await;
    counted_quota(
        &api,
        "objects",
        json!({"configmaps": "2"}),
        json!({"configmaps": "0"}),
    )
    .await;
    assert_eq!(
        api.post(CONFIGMAPS, configmap("x")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.post(CONFIGMAPS, configmap("x")).await.0,
        StatusCode::CONFLICT
    );
    let (_, quota) = api.get(&format!("{QUOTAS}/objects")).await;
    assert_eq!(quota["status"]["used"]["configmaps"], "1");
}

async fn running_pod(api: &Api, name: &str, ready: bool) {
    let (code, body) = api
        .post(PODS, pod(name, json!({"app": "web"}), json!({})))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let status = if ready { "True" } else { "False" };
    api.set_status(
        &format!("{PODS}/{name}"),
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}),
    )
    .await;
}

async fn budget(api: &Api, name: &str, allowed: i64) {
    let (code, body) = api
        .post(
            PDBS,
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    api.set_status(
        &format!("{PDBS}/{name}"),
        json!({"disruptionsAllowed": allowed, "currentHealthy": 1 + allowed, "desiredHealthy": 1,
               "expectedPods": 1 + allowed, "observedGeneration": 1}),
    )
    .await;
}

fn eviction(name: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}})
}

#[tokio::test]
async fn evictions_respect_the_disruption_budget() {
    let api = Api::new().await;
    running_pod(&api, "web-1", true).await;
    running_pod(&api, "web-2", true).await;
    budget(&api, "web", 1).await;

    let (code, body) = api
        .post(&format!("{PODS}/web-1/eviction"), eviction("web-1"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "Success");
    assert_eq!(
        api.get(&format!("{PODS}/web-1")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, pdb) = api.get(&format!("{PDBS}/web")).await;
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert!(pdb["status"]["disruptedPods"]["web-1"].is_string());
    assert_eq!(pdb["status"]["conditions"][0]["reason"], "InsufficientPods");

    let (code, refused) = api
        .post(&format!("{PODS}/web-2/eviction"), eviction("web-2"))
        .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(
        refused["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        refused["details"]["causes"][0],
        json!({"reason": "DisruptionBudget",
               "message": "The disruption budget web needs 1 healthy pods and has 2 currently"})
    );
    // The disruption controller has not yet counted web-1 gone.
    assert_eq!(api.get(&format!("{PODS}/web-2")).await.0, StatusCode::OK);

    let (code, _) = api
        .post(&format!("{PODS}/web-2/eviction"), eviction("other"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pending_and_unready_pods_are_evicted_without_a_disruption() {
    let api = Api::new().await;
    let (code, _) = api
        .post(PODS, pod("pending", json!({"app": "web"}), json!({})))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    running_pod(&api, "unready", false).await;
    running_pod(&api, "ready", true).await;
    budget(&api, "web", 0).await;
    // currentHealthy (1) >= desiredHealthy (1): the unready pod may go.
    for name in ["pending", "unready"] {
        let (code, body) = api
            .post(&format!("{PODS}/{name}/eviction"), eviction(name))
            .await;
        assert_eq!(code, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(
            api.get(&format!("{PODS}/{name}")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let (_, pdb) = api.get(&format!("{PDBS}/web")).await;
    assert!(pdb["status"].get("disruptedPods").is_none());
}

#[tokio::test]
async fn a_pod_under_two_budgets_cannot_be_evicted() {
    let api = Api::new().await;
    running_pod(&api, "web-1", true).await;
    budget(&api, "one", 1).await;
    budget(&api, "two", 1).await;
    let (code, body) = api
        .post(&format!("{PODS}/web-1/eviction"), eviction("web-1"))
        .await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    assert_eq!(api.get(&format!("{PODS}/web-1")).await.0, StatusCode::OK);
}
