//! Watch correctness through the real binary: a watch from revision R sees
//! every later change exactly once and in order, also after a server restart
//! while R is retained, and gets 410 Expired once R is compacted away.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use skiff_testing::TestCluster;

/// History kept by compaction in this test: small, so that it is easy to outrun.
const KEEP_REVISIONS: &str = "20";

async fn configmaps(cluster: &TestCluster) -> Api<ConfigMap> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Api::namespaced(Client::try_from(config).expect("client builds"), "default")
}

async fn set_value(api: &Api<ConfigMap>, value: usize) -> String {
    let patch = serde_json::json!({"data": {"value": value.to_string()}});
    let cm = api
        .patch("watched", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch succeeds");
    cm.metadata.resource_version.expect("resourceVersion")
}

/// A watch of the test's ConfigMap alone: controllers write others in the
/// namespace (the `kube-root-ca.crt` publisher) at any time.
fn only_watched() -> WatchParams {
    WatchParams::default().fields("metadata.name=watched")
}

/// Reads the next `count` events of a watch as (type, value, resourceVersion).
async fn next_events(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
    count: usize,
) -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {seen:?}"))
            .expect("watch error")
            .expect("watch ended");
        let (kind, cm) = match event {
            WatchEvent::Added(cm) => ("ADDED", cm),
            WatchEvent::Modified(cm) => ("MODIFIED", cm),
            WatchEvent::Deleted(cm) => ("DELETED", cm),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error event {e:?}"),
        };
        let value = cm
            .data
            .unwrap_or_default()
            .get("value")
            .cloned()
            .unwrap_or_default();
        seen.push((
            kind.to_string(),
            value,
            cm.metadata.resource_version.unwrap_or_default(),
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_revision_across_restart_and_compaction() {
    let mut cluster = TestCluster::start_with_args(
        env!("CARGO_BIN_EXE_skiff"),
        &[
            "--compaction-interval",
            "1s",
            "--compaction-keep-revisions",
            KEEP_REVISIONS,
        ],
    );
    let api = configmaps(&cluster).await;
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "watched"}, "data": {"value": "0"}
    }))
    .unwrap();
    let start = api.create(&PostParams::default(), &cm).await.unwrap();
    let start_rv = start.metadata.resource_version.unwrap();
    let mut expected = Vec::new();
    for value in 1..=10 {
        let rv = set_value(&api, value).await;
        expected.push(("MODIFIED".to_string(), value.to_string(), rv));
    }

    // The same watch, before and after a restart, replays exactly the changes after R.
    for (round, next_value) in [("before restart", 100), ("after restart", 200)] {
        if round == "after restart" {
            cluster.restart();
        }
        let api = configmaps(&cluster).await;
        let mut stream = api.watch(&only_watched(), &start_rv).await.unwrap().boxed();
        assert_eq!(
            next_events(&mut stream, expected.len()).await,
            expected,
            "{round}"
        );
        // Nothing is repeated: the next event is the next change.
        let rv = set_value(&api, next_value).await;
        let change = ("MODIFIED".to_string(), next_value.to_string(), rv);
        assert_eq!(
            next_events(&mut stream, 1).await,
            std::slice::from_ref(&change),
            "{round}"
        );
        expected.push(change);
    }

    // Outrun the retained history; once compaction passes R, the watch is 410.
    let api = configmaps(&cluster).await;
    for value in 0..60 {
        set_value(&api, 1000 + value).await;
    }
    for _ in 0..30 {
        let mut stream = api.watch(&only_watched(), &start_rv).await.unwrap().boxed();
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Error(e)))) => {
                assert_eq!(e.code, 410, "{e:?}");
                assert_eq!(e.reason, "Expired", "{e:?}");
                return;
            }
            Ok(Ok(Some(_))) => tokio::time::sleep(Duration::from_millis(500)).await,
            other => panic!("unexpected watch result: {other:?}"),
        }
    }
    panic!("revision {start_rv} was never compacted");
}
