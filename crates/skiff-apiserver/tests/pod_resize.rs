//! In-place pod resize through the HTTP API: a plain pod update may not
//! change container resources (upstream's 422), the `pods/resize`
//! subresource may, taking nothing but `resources` and `resizePolicy` from
//! the request and bumping the generation; discovery lists it for kubectl.

mod common;

use axum::http::StatusCode;
use common::Api;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const SMP: &str = "application/strategic-merge-patch+json";

async fn create_pod(api: &Api) -> Value {
    let (code, body) = api
        .call(
            "POST",
            PODS,
            "application/json",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "c", "image": "busybox",
                       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                     "limits": {"cpu": "200m", "memory": "128Mi"}}}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    body
}

fn resources(cpu: &str, memory: &str) -> Value {
    json!({"spec": {"containers": [{"name": "c", "resources": {
        "requests": {"cpu": cpu, "memory": "64Mi"},
        "limits": {"cpu": cpu, "memory": memory}}}]}})
}

#[tokio::test]
async fn plain_updates_may_not_change_resources() {
    let api = Api::new().await;
    create_pod(&api).await;
    let (code, body) = api
        .call(
            "PATCH",
            &format!("{PODS}/web"),
            SMP,
            resources("300m", "128Mi"),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "spec");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn resize_changes_only_resources_and_bumps_the_generation() {
    let api = Api::new().await;
    let created = create_pod(&api).await;
    assert_eq!(created["metadata"]["generation"], 1);

    // kubectl reads the subresource first.
    let (code, got) = api
        .call("GET", &format!("{PODS}/web/resize"), "", Value::Null)
        .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(got["kind"], "Pod");

    // Everything but resources and resizePolicy is dropped from the request.
    let mut patch = resources("300m", "256Mi");
    patch["metadata"] = json!({"labels": {"app": "other"}});
    patch["spec"]["containers"][0]["image"] = json!("nginx");
    patch["spec"]["activeDeadlineSeconds"] = json!(30);
    let (code, resized) = api
        .call("PATCH", &format!("{PODS}/web/resize"), SMP, patch)
        .await;
    assert_eq!(code, StatusCode::OK, "{resized}");
    let container = &resized["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["cpu"], "300m");
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(container["image"], "busybox");
    assert_eq!(resized["metadata"]["labels"]["app"], "web");
    assert!(resized["spec"]["activeDeadlineSeconds"].is_null());
    assert_eq!(resized["metadata"]["generation"], 2);
    assert_eq!(resized["status"]["qosClass"], "Burstable");

    // The same amounts again change nothing, not even the generation.
    let (code, again) = api
        .call(
            "PATCH",
            &format!("{PODS}/web/resize"),
            SMP,
            resources("0.3", "256Mi"),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["metadata"]["generation"], 2);
}

#[tokio::test]
async fn resize_is_validated_as_upstream() {
    let api = Api::new().await;
    create_pod(&api).await;
    let resize = |patch: Value| {
        let api = &api;
        async move {
            api.call("PATCH", &format!("{PODS}/web/resize"), SMP, patch)
                .await
        }
    };

    let (code, body) = resize(resources("150m", "100Mi")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "Pod \"web\" is invalid: spec.containers[0].resources.limits[memory]: Forbidden: \
         memory limits cannot be decreased unless resizePolicy is RestartContainer"
    );

    // Limits equal to requests everywhere would make the pod Guaranteed.
    let (code, body) = resize(json!({"spec": {"containers": [{"name": "c", "resources": {
        "requests": {"cpu": "200m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"}}}]}}))
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "Pod \"web\" is invalid: spec: Invalid value: \"Burstable\": \
         Pod QOS Class may not change as a result of resizing"
    );

    let (code, body) = resize(json!({"spec": {"containers": [{"name": "c", "resources": {
        "requests": {"cpu": "500m"}}}]}}))
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "spec.containers[0].resources.requests[cpu]"
    );

    let (code, body) = resize(json!({"spec": {"containers": [{"name": "c", "resources": {
        "limits": {"ephemeral-storage": "1Gi"}}}]}}))
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "Pod \"web\" is invalid: spec: Forbidden: only cpu and memory resources are mutable"
    );
}

#[tokio::test]
async fn discovery_lists_pods_resize() {
    let api = Api::new().await;
    let (code, body) = api.call("GET", "/api/v1", "", Value::Null).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let resize = body["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "pods/resize")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(resize["kind"], "Pod");
    assert_eq!(resize["verbs"], json!(["get", "patch", "update"]));
}
