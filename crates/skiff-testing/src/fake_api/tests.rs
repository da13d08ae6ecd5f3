//! The fake through a real `kube::Client`.

use futures::TryStreamExt;
use kube::core::WatchEvent;

use super::*;

const PODS: &str = "/api/v1/pods";
const POD_A: &str = "/api/v1/namespaces/a/pods/p";

fn pod(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name}})
}

async fn call(api: &FakeApi, method: &str, path: &str, body: Value) -> Result<Value, u16> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/merge-patch+json")
        .body(if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        })
        .unwrap();
    match api.client().request::<Value>(request).await {
        Ok(value) => Ok(value),
        Err(kube::Error::Api(status)) => Err(status.code),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn lists_are_fixed_and_their_items_stored() {
    let api = FakeApi::new(vec![(PODS, vec![pod("a", "p")])]);
    let listed = call(&api, "GET", PODS, Value::Null).await.unwrap();
    assert_eq!(listed["items"], json!([pod("a", "p")]));
    assert_eq!(listed["metadata"]["resourceVersion"], "1");
    assert_eq!(
        call(&api, "GET", POD_A, Value::Null).await,
        Ok(pod("a", "p"))
    );
    // Another collection lists empty; a missing object is 404.
    let other = call(&api, "GET", "/api/v1/namespaces/a/services", Value::Null).await;
    assert_eq!(other.unwrap()["items"], json!([]));
    assert_eq!(
        call(&api, "GET", "/api/v1/namespaces/a/pods/q", Value::Null).await,
        Err(404)
    );
    // A delete removes the stored object, not the listed one.
    call(&api, "DELETE", POD_A, Value::Null).await.unwrap();
    assert_eq!(api.object(POD_A), None);
    let listed = call(&api, "GET", PODS, Value::Null).await.unwrap();
    assert_eq!(listed["items"], json!([pod("a", "p")]));
    assert_eq!(call(&api, "DELETE", POD_A, Value::Null).await, Err(404));
}

#[tokio::test]
async fn writes_change_the_store_and_are_recorded() {
    let api = FakeApi::default();
    let created = call(&api, "POST", "/api/v1/namespaces/a/pods", pod("a", "p"))
        .await
        .unwrap();
    assert_eq!(created["metadata"]["uid"], "uid-10");
    assert_eq!(created["metadata"]["resourceVersion"], "10");
    assert_eq!(api.object(POD_A), Some(created));
    assert_eq!(
        call(&api, "POST", "/api/v1/namespaces/a/pods", pod("a", "p")).await,
        Err(409)
    );
    // A status patch merges into the object.
    let patch = json!({"status": {"phase": "Running"}});
    let patched = call(&api, "PATCH", &format!("{POD_A}/status"), patch.clone())
        .await
        .unwrap();
    assert_eq!(patched["status"]["phase"], "Running");
    assert_eq!(patched["metadata"]["name"], "p");
    assert_eq!(patched["metadata"]["resourceVersion"], "12");
    // A merge patch's null removes the field.
    let unlabel = json!({"status": null});
    call(&api, "PATCH", POD_A, unlabel.clone()).await.unwrap();
    assert_eq!(api.object(POD_A).unwrap().get("status"), None);
    // An update replaces; a patch of a missing object is 404.
    let mut replaced = pod("a", "p");
    replaced["spec"] = json!({"nodeName": "n"});
    call(&api, "PUT", POD_A, replaced).await.unwrap();
    assert_eq!(api.object(POD_A).unwrap()["spec"]["nodeName"], "n");
    let missing = "/api/v1/namespaces/a/pods/q";
    assert_eq!(call(&api, "PATCH", missing, patch.clone()).await, Err(404));

    let summary: Vec<(String, String)> = api
        .writes()
        .into_iter()
        .map(|w| (w.method, w.path))
        .collect();
    let expected = [
        ("POST", "/api/v1/namespaces/a/pods"),
        ("POST", "/api/v1/namespaces/a/pods"),
        ("PATCH", "/api/v1/namespaces/a/pods/p/status"),
        ("PATCH", POD_A),
        ("PUT", POD_A),
        ("PATCH", missing),
    ]
    .map(|(m, p)| (m.to_owned(), p.to_owned()));
    assert_eq!(summary, expected);
    assert_eq!(api.writes()[3].body, unlabel);
}

#[tokio::test]
async fn generated_names_events_and_seeded_objects() {
    let api = FakeApi::default();
    let generated = json!({"metadata": {"generateName": "web-", "namespace": "a"}});
    let created = call(&api, "POST", "/api/v1/namespaces/a/pods", generated)
        .await
        .unwrap();
    assert_eq!(created["metadata"]["name"], "web-10");
    assert!(api.object("/api/v1/namespaces/a/pods/web-10").is_some());

    let event = json!({"metadata": {"name": "e"}, "reason": "Started"});
    call(&api, "POST", "/api/v1/namespaces/a/events", event.clone())
        .await
        .unwrap();
    assert_eq!(api.events(), [event]);
    assert_eq!(api.writes().len(), 1, "events are not writes");

    api.store(POD_A, pod("a", "p"));
    assert_eq!(
        call(&api, "POST", "/api/v1/namespaces/a/pods", pod("a", "p")).await,
        Err(409)
    );
    assert_eq!(api.writes().len(), 2);
}

#[tokio::test]
async fn subresource_posts_answer_what_the_test_stored() {
    let api = FakeApi::default();
    let token = "/api/v1/namespaces/a/serviceaccounts/sa/token";
    let request = json!({"spec": {"expirationSeconds": 600}});
    assert_eq!(call(&api, "POST", token, request.clone()).await, Err(404));
    let reply = json!({"status": {"token": "t1"}});
    api.store(token, reply.clone());
    assert_eq!(call(&api, "POST", token, request.clone()).await, Ok(reply));
    let posts: Vec<_> = api.writes().into_iter().map(|w| (w.path, w.body)).collect();
    assert_eq!(
        posts,
        [
            (token.to_owned(), request.clone()),
            (token.to_owned(), request)
        ]
    );
    // Nothing was created under the ServiceAccount's path.
    assert_eq!(api.object("/api/v1/namespaces/a/serviceaccounts/sa"), None);
}

#[tokio::test]
async fn watches_carry_what_the_test_sends() {
    let api = FakeApi::default();
    let request = Request::builder()
        .uri(format!("{PODS}?watch=true&resourceVersion=1"))
        .body(Vec::new())
        .unwrap();
    let events = api.client().request_events::<Value>(request).await.unwrap();
    let sent = tokio::spawn({
        let api = api.clone();
        async move { api.send(PODS, "ADDED", pod("a", "p")).await }
    });
    futures::pin_mut!(events);
    let Some(WatchEvent::Added(object)) = events.try_next().await.unwrap() else {
        panic!("an ADDED event");
    };
    sent.await.unwrap();
    assert_eq!(object["metadata"]["name"], "p");
    assert_eq!(object["metadata"]["resourceVersion"], "10");
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "nobody watches /api/v1/pods")]
async fn sending_without_a_watch_fails() {
    FakeApi::default().send(PODS, "ADDED", pod("a", "p")).await;
}

#[tokio::test(start_paused = true)]
async fn held_lists_wait_for_release() {
    let api = FakeApi::new(vec![(PODS, vec![pod("a", "p")])]);
    api.hold_lists(PODS);
    let listing = tokio::spawn({
        let api = api.clone();
        async move { call(&api, "GET", PODS, Value::Null).await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!listing.is_finished());
    // Other paths are not held.
    assert!(call(&api, "GET", POD_A, Value::Null).await.is_ok());
    api.release_lists(PODS);
    let listed = listing.await.unwrap().unwrap();
    assert_eq!(listed["items"], json!([pod("a", "p")]));
}

#[test]
fn routes() {
    let object = |resource: &str, path: &str, sub: Option<&str>| {
        Some(Route::Object {
            resource: resource.to_owned(),
            path: path.to_owned(),
            subresource: sub.map(str::to_owned),
        })
    };
    let collection = |resource: &str| {
        Some(Route::Collection {
            resource: resource.to_owned(),
        })
    };
    assert_eq!(route("/api/v1/namespaces"), collection("namespaces"));
    assert_eq!(
        route("/api/v1/namespaces/a"),
        object("namespaces", "/api/v1/namespaces/a", None)
    );
    assert_eq!(
        route("/api/v1/namespaces/a/finalize"),
        object("namespaces", "/api/v1/namespaces/a", Some("finalize"))
    );
    assert_eq!(route("/api/v1/namespaces/a/pods"), collection("pods"));
    assert_eq!(
        route("/apis/networking.k8s.io/v1/namespaces/a/ingresses/w/status"),
        object(
            "ingresses",
            "/apis/networking.k8s.io/v1/namespaces/a/ingresses/w",
            Some("status")
        )
    );
    assert_eq!(
        route("/api/v1/nodes/n/status"),
        object("nodes", "/api/v1/nodes/n", Some("status"))
    );
    assert_eq!(route("/version"), None);
    assert_eq!(
        item_path("/apis/apps/v1/deployments", &pod("a", "d")).as_deref(),
        Some("/apis/apps/v1/namespaces/a/deployments/d")
    );
    assert_eq!(
        item_path("/api/v1/nodes", &json!({"metadata": {"name": "n"}})).as_deref(),
        Some("/api/v1/nodes/n")
    );
}
