//! Watches over the watch cache: a watcher that falls behind catches up.

mod common;

use common::Api;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const CM: &str = "/api/v1/namespaces/default/configmaps";

/// More changes than the cache's live buffer holds per type, fewer than its
/// history.
const CHANGES: usize = 1500;

#[tokio::test]
async fn a_watcher_that_stops_reading_catches_up_from_history() {
    let api = Api::new().await;
    let (status, first) = api
        .call(
            "POST",
            CM,
            "application/json",
            json!({"metadata": {"name": "start"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap();
    let request = Request::builder()
        .uri(format!("{CM}?watch=true&resourceVersion={rv}"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Nothing reads the watch while every change is made.
    for i in 0..CHANGES {
        let (status, body) = api
            .call(
                "POST",
                CM,
                "application/json",
                json!({"metadata": {"name": format!("cm-{i}")}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut stream = response.into_body().into_data_stream();
    let mut names = Vec::new();
    let mut revisions = Vec::new();
    let mut buffer = Vec::new();
    while names.len() < CHANGES {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("the watch stays open")
            .unwrap();
        buffer.extend_from_slice(&chunk);
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            let event: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(event["type"], "ADDED", "{event}");
            let meta = &event["object"]["metadata"];
            names.push(meta["name"].as_str().unwrap().to_string());
            revisions.push(
                meta["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
    }
    let expected: Vec<String> = (0..CHANGES).map(|i| format!("cm-{i}")).collect();
    assert_eq!(names, expected, "every change once, in order");
    assert!(revisions.windows(2).all(|w| w[0] < w[1]));
}
