//! The API router in process, over the in-memory store: the generic REST
//! semantics without TLS or a real client. The real-kubectl suite lives in the
//! `skiff` crate.

mod common;

use common::Api;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

impl Api {
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, "application/json", Value::Null).await
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, "application/json", body).await
    }
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

const CM: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn create_get_and_conflict() {
    let api = Api::new().await;
    let (status, created) = api.post(CM, configmap("a", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!created["metadata"]["uid"].as_str().unwrap().is_empty());
    assert!(created["metadata"]["creationTimestamp"].is_string());

    let (status, again) = api.post(CM, configmap("a", json!({}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(again["kind"], "Status");

    let (status, got) = api.get(&format!("{CM}/a")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["metadata"]["resourceVersion"], rv.as_str());

    // A write with a stale resourceVersion is refused; a current one succeeds.
    let mut update = got.clone();
    update["data"]["k"] = json!("v2");
    let (status, updated) = api
        .call(
            "PUT",
            &format!("{CM}/a"),
            "application/json",
            update.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_ne!(updated["metadata"]["resourceVersion"], rv.as_str());
    let (status, stale) = api
        .call("PUT", &format!("{CM}/a"), "application/json", update)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(stale["reason"], "Conflict");
}

#[tokio::test]
async fn bad_input_gets_status_errors() {
    let api = Api::new().await;
    let (status, err) = api
        .call("POST", CM, "application/json", json!("not an object"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let request = Request::builder()
        .method("POST")
        .uri(CM)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"metadata\": "))
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, err) = api
        .call("POST", CM, "text/csv", configmap("b", json!({})))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{err}");

    let (status, err) = api.post(CM, configmap("Not_Valid", json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["reason"], "Invalid");
    assert_eq!(err["details"]["causes"][0]["field"], "metadata.name");

    let huge = "x".repeat(4 * 1024 * 1024);
    let (status, err) = api
        .post(
            CM,
            json!({"metadata": {"name": "big"}, "data": {"k": huge}}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");

    let (status, _) = api
        .post(
            "/api/v1/namespaces/default/widgets",
            configmap("w", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, err) = api
        .post(
            "/api/v1/namespaces/nope/configmaps",
            configmap("c", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    let strict = format!("{CM}?fieldValidation=Strict");
    let mut unknown = configmap("d", json!({}));
    unknown["bogus"] = json!(1);
    let (status, err) = api.post(&strict, unknown.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"bogus\""),
        "{err}"
    );
    let (status, _) = api
        .post(&format!("{CM}?fieldValidation=Ignore"), unknown)
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // A malformed quantity fails decoding, as upstream's strict Quantity does.
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |cpu: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
               "spec": {"containers": [{"name": "a", "image": "x",
                        "resources": {"requests": {"cpu": cpu}}}]}})
    };
    let (status, err) = api.post(pods, pod(json!("lots"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["reason"], "BadRequest");
    assert_eq!(
        err["message"],
        "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular \
         expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
    let (status, err) = api.post(pods, pod(json!(0.5))).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a bare number is a quantity: {err}"
    );
    let (status, err) = api
        .call(
            "PATCH",
            &format!("{pods}/q"),
            "application/merge-patch+json",
            json!({"spec": {"overhead": {"memory": "1.2.3"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .ends_with("cannot be handled as a Pod: unable to parse quantity's numeric value"),
        "{err}"
    );
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let api = Api::new().await;
    for (name, tier) in [("p1", "web"), ("p2", "db"), ("p3", "web"), ("p4", "cache")] {
        let (status, body) = api.post(CM, configmap(name, json!({"tier": tier}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, list) = api.get(&format!("{CM}?labelSelector=tier%3Dweb")).await;
    assert_eq!(names(&list), ["p1", "p3"]);
    assert_eq!(list["kind"], "ConfigMapList");
    let (_, list) = api
        .get(&format!("{CM}?labelSelector=tier%20notin%20(web,db)"))
        .await;
    assert_eq!(names(&list), ["p4"]);
    let (_, list) = api
        .get(&format!("{CM}?fieldSelector=metadata.name%3Dp2"))
        .await;
    assert_eq!(names(&list), ["p2"]);
    let (status, _) = api.get(&format!("{CM}?fieldSelector=spec.nope%3Dx")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, page1) = api.get(&format!("{CM}?limit=3")).await;
    assert_eq!(names(&page1), ["p1", "p2", "p3"]);
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let (_, page2) = api.get(&format!("{CM}?limit=3&continue={token}")).await;
    assert_eq!(names(&page2), ["p4"]);
    assert!(page2["metadata"].get("continue").is_none());
}

#[tokio::test]
async fn patches_of_every_type() {
    let api = Api::new().await;
    api.post(CM, configmap("pt", json!({"a": "1"}))).await;
    let uri = format!("{CM}/pt");
    let (status, body) = api
        .call(
            "PATCH",
            &uri,
            "application/merge-patch+json",
            json!({"data": {"m": "merge"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["m"], "merge");
    let (status, body) = api
        .call(
            "PATCH",
            &uri,
            "application/json-patch+json",
            json!([{"op": "add", "path": "/data/j", "value": "json"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["j"], "json");
    let (status, body) = api
        .call(
            "PATCH",
            &uri,
            "application/strategic-merge-patch+json",
            json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["labels"], json!({"b": "2"}));
    assert_eq!(body["data"]["k"], "v");
}

#[tokio::test]
async fn watch_sees_changes_in_order() {
    let api = Api::new().await;
    let (_, created) = api.post(CM, configmap("w1", json!({}))).await;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let request = Request::builder()
        .uri(format!("{CM}?watch=true&resourceVersion={rv}"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    api.post(CM, configmap("w2", json!({}))).await;
    api.call(
        "DELETE",
        &format!("{CM}/w1"),
        "application/json",
        Value::Null,
    )
    .await;
    let mut seen = Vec::new();
    let mut buffer = Vec::new();
    while seen.len() < 2 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .unwrap();
        buffer.extend_from_slice(&chunk);
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            let event: Value = serde_json::from_slice(&line).unwrap();
            seen.push((
                event["type"].as_str().unwrap().to_string(),
                event["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED".to_string(), "w2".to_string()),
            ("DELETED".to_string(), "w1".to_string())
        ]
    );
}

#[tokio::test]
async fn namespaces_exist_and_terminate() {
    let api = Api::new().await;
    let (_, list) = api.get("/api/v1/namespaces").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&ns), "{names:?}");
    }
    let (status, _) = api
        .call(
            "DELETE",
            "/api/v1/namespaces/default",
            "application/json",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    api.post(
        "/api/v1/namespaces",
        json!({"metadata": {"name": "doomed"}}),
    )
    .await;
    api.post(
        "/api/v1/namespaces/doomed/configmaps",
        configmap("x", json!({})),
    )
    .await;
    let (status, ns) = api
        .call(
            "DELETE",
            "/api/v1/namespaces/doomed",
            "application/json",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (status, err) = api
        .post(
            "/api/v1/namespaces/doomed/configmaps",
            configmap("y", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    // Emptying it is the namespace controller's work (in the controller
    // manager): the API server keeps it while `kubernetes` is in
    // spec.finalizers, and deletes it once the finalize subresource has
    // removed every finalizer.
    let (status, terminating) = api.get("/api/v1/namespaces/doomed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(terminating["spec"]["finalizers"], json!(["kubernetes"]));
    let mut finalized = terminating.clone();
    finalized["spec"]["finalizers"] = json!([]);
    let (status, body) = api
        .call(
            "PUT",
            "/api/v1/namespaces/doomed/finalize",
            "application/json",
            finalized,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api.get("/api/v1/namespaces/doomed").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "gone with its last finalizer"
    );

    // A propagation policy adds its finalizer, as for any object.
    api.post("/api/v1/namespaces", json!({"metadata": {"name": "kept"}}))
        .await;
    let (status, ns) = api
        .call(
            "DELETE",
            "/api/v1/namespaces/kept",
            "application/json",
            json!({"propagationPolicy": "Orphan"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ns}");
    assert_eq!(ns["metadata"]["finalizers"], json!(["orphan"]));
    assert_eq!(ns["status"]["phase"], "Terminating");
}

#[tokio::test]
async fn malformed_bodies_leave_stored_data_unchanged() {
    let api = Api::new().await;
    let (_, created) = api.post(CM, configmap("keep", json!({"a": "1"}))).await;
    let uri = format!("{CM}/keep");
    for (method, content_type, body) in [
        ("PUT", "application/json", "{\"data\": "),
        (
            "PUT",
            "application/vnd.kubernetes.protobuf",
            "k8s\0\u{ff}\u{ff}garbage",
        ),
        ("PATCH", "application/merge-patch+json", "[1,"),
        ("PATCH", "application/json-patch+json", "{\"op\": \"add\"}"),
        ("PATCH", "application/strategic-merge-patch+json", "\"x\""),
        ("PATCH", "application/apply-patch+yaml", "a: [b"),
        ("POST", "application/vnd.kubernetes.protobuf", "k8s\0\u{1}"),
    ] {
        let target = if method == "POST" {
            CM.to_string()
        } else {
            uri.clone()
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{target}?fieldManager=test"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = api.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let error: Value = serde_json::from_slice(&bytes).expect("a Status body");
        assert!(
            status.is_client_error(),
            "{method} {content_type}: {status} {error}"
        );
        assert_eq!(error["kind"], "Status", "{method} {content_type}");
    }
    let (_, after) = api.get(&uri).await;
    assert_eq!(after, created);
}

#[tokio::test]
async fn bound_pods_terminate_gracefully() {
    let api = Api::new().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-a",
        "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "busybox"}]}});
    let (status, body) = api.post(pods, pod).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["phase"], "Pending");
    let (status, terminating) = api
        .call(
            "DELETE",
            &format!("{pods}/p"),
            "application/json",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "{terminating}"
    );
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
    let (status, _) = api.get(&format!("{pods}/p")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "still there while the node shuts it down"
    );
    let (status, _) = api
        .call(
            "DELETE",
            &format!("{pods}/p?gracePeriodSeconds=0"),
            "application/json",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get(&format!("{pods}/p")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn events_are_one_set_of_objects_through_both_apis() {
    let api = Api::new().await;
    let core = "/api/v1/namespaces/default/events";
    let events = "/apis/events.k8s.io/v1/namespaces/default/events";
    let (status, body) = api
        .post(
            events,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "pulled"},
                "eventTime": "2026-11-23T20:00:00.000000Z",
                "reportingController": "skiff/agent", "reportingInstance": "node-a",
                "action": "Pull", "reason": "Pulled", "type": "Normal", "note": "image pulled",
                "regarding": {"kind": "Pod", "namespace": "default", "name": "web"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["note"], "image pulled");

    let (status, stored) = api.get(&format!("{core}/pulled")).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["apiVersion"], "v1");
    assert_eq!(stored["message"], "image pulled");
    assert_eq!(stored["involvedObject"]["name"], "web");
    assert_eq!(stored["reportingComponent"], "skiff/agent");
    assert_eq!(stored["metadata"]["uid"], body["metadata"]["uid"]);

    let (_, list) = api
        .get(&format!("{core}?fieldSelector=involvedObject.name%3Dweb"))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = api
        .get(&format!("{events}?fieldSelector=regarding.name%3Dweb"))
        .await;
    assert_eq!(list["items"][0]["regarding"]["name"], "web", "{list}");
    assert_eq!(list["kind"], "EventList");

    let (status, body) = api
        .call(
            "DELETE",
            &format!("{events}/pulled"),
            "application/json",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api.get(&format!("{core}/pulled")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn generation_status_and_dry_run() {
    let api = Api::new().await;
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"replicas": 99}});
    let (status, dry) = api
        .post(&format!("{deployments}?dryRun=All"), deployment.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dry}");
    let (status, _) = api.get(&format!("{deployments}/d")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a dry run stores nothing");

    let (_, created) = api.post(deployments, deployment).await;
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(
        created["status"],
        json!({}),
        "status is not settable on create"
    );
    let uri = format!("{deployments}/d");
    let merge = "application/merge-patch+json";

    let (_, labelled) = api
        .call(
            "PATCH",
            &uri,
            merge,
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(
        labelled["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );
    let (_, scaled) = api
        .call("PATCH", &uri, merge, json!({"spec": {"replicas": 3}}))
        .await;
    assert_eq!(scaled["metadata"]["generation"], 2, "spec changes bump it");
    let (_, ignored) = api
        .call("PATCH", &uri, merge, json!({"status": {"replicas": 5}}))
        .await;
    assert!(
        ignored["status"].get("replicas").is_none(),
        "main resource cannot write status"
    );

    let mut with_status = scaled.clone();
    with_status["status"] = json!({"replicas": 3, "readyReplicas": 2});
    with_status["spec"]["replicas"] = json!(7);
    let (status, updated) = api
        .call(
            "PUT",
            &format!("{uri}/status"),
            "application/json",
            with_status,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["status"]["readyReplicas"], 2);
    assert_eq!(
        updated["spec"]["replicas"], 3,
        "the status subresource cannot write spec"
    );
    assert_eq!(updated["metadata"]["generation"], 2);

    let (status, dry) = api
        .call(
            "PATCH",
            &format!("{uri}?dryRun=All"),
            merge,
            json!({"spec": {"replicas": 9}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dry["spec"]["replicas"], 9);
    let (status, _) = api
        .call(
            "DELETE",
            &format!("{uri}?dryRun=All"),
            "application/json",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, stored) = api.get(&uri).await;
    assert_eq!(stored["spec"]["replicas"], 3, "dry runs change nothing");
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        updated["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let api = Api::new().await;
    let mut cm = configmap("held", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.post(CM, cm).await;
    let uri = format!("{CM}/held");
    let (status, deleting) = api
        .call("DELETE", &uri, "application/json", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "{deleting}"
    );
    let (status, still) = api.get(&uri).await;
    assert_eq!(status, StatusCode::OK);
    let patch = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}});
    let (status, _) = api
        .call("PATCH", &uri, "application/merge-patch+json", patch)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no new finalizers while deleting"
    );
    let patch = json!({"metadata": {"finalizers": null}});
    let (status, body) = api
        .call("PATCH", &uri, "application/merge-patch+json", patch)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api.get(&uri).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "removing the last finalizer deletes: {still}"
    );
}

#[tokio::test]
async fn a_second_delete_may_shorten_the_grace_period_of_a_held_pod() {
    let api = Api::new().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
    });
    api.post(pods, pod).await;
    let uri = format!("{pods}/held");
    let (status, deleting) = api
        .call("DELETE", &uri, "application/json", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleting}");
    assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 30);
    let now = json!({"gracePeriodSeconds": 0});
    let (status, shortened) = api.call("DELETE", &uri, "application/json", now).await;
    assert_eq!(status, StatusCode::OK, "{shortened}");
    assert_eq!(shortened["metadata"]["deletionGracePeriodSeconds"], 0);
    let longer = json!({"gracePeriodSeconds": 60});
    let (_, kept) = api.call("DELETE", &uri, "application/json", longer).await;
    assert_eq!(
        kept["metadata"]["deletionGracePeriodSeconds"], 0,
        "never lengthened"
    );
    let patch = json!({"metadata": {"finalizers": null}});
    let (status, body) = api
        .call("PATCH", &uri, "application/merge-patch+json", patch)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api.get(&uri).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "gone once the finalizer is");
}

#[tokio::test]
async fn watches_end_after_timeout_seconds() {
    let api = Api::new().await;
    let request = Request::builder()
        .uri(format!("{CM}?watch=true&timeoutSeconds=1"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        response.into_body().collect(),
    )
    .await
    .expect("the watch ends by itself")
    .unwrap();
    assert!(body.to_bytes().is_empty(), "no changes, no events");
}
