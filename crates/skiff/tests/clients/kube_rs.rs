//! kube-rs against a Skiff server: a watcher sees every change, in order,
//! with both initial-list strategies (list-then-watch and streaming lists).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event, InitialListStrategy};
use kube::{Client, Config};

use super::cluster;

async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(cluster().kubeconfig()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client builds")
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"test": "kube-rs"}},
        "data": {"value": value},
    }))
    .unwrap()
}

/// Drives creates, updates and deletes while a watcher runs, and checks the
/// watcher saw each change exactly once and in order.
async fn watcher_sees_every_change(strategy: InitialListStrategy) {
    let ns = cluster().namespace("kube-rs");
    let api: Api<ConfigMap> = Api::namespaced(client().await, ns.name());
    api.create(&PostParams::default(), &configmap("pre-existing", "0"))
        .await
        .unwrap();
    // Only this test's ConfigMaps: the namespace also gets kube-root-ca.crt
    // from the root CA publisher, at a moment of its choosing.
    let config = watcher::Config {
        initial_list_strategy: strategy,
        label_selector: Some("test=kube-rs".into()),
        ..Default::default()
    };
    let mut events = watcher::watcher(api.clone(), config).boxed();

    // The initial state arrives first, ending with InitDone.
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.try_next()).await {
            Ok(Ok(Some(Event::Init))) => {}
            Ok(Ok(Some(Event::InitApply(cm)))) => initial.push(cm.metadata.name.unwrap()),
            Ok(Ok(Some(Event::InitDone))) => break,
            other => panic!("unexpected before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, ["pre-existing"]);

    let mut expected = Vec::new();
    for i in 0..10 {
        let name = format!("cm-{i}");
        api.create(&PostParams::default(), &configmap(&name, "1"))
            .await
            .unwrap();
        expected.push(format!("apply {name} 1"));
        let patch = serde_json::json!({"data": {"value": "2"}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        expected.push(format!("apply {name} 2"));
    }
    for i in 0..10 {
        let name = format!("cm-{i}");
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        expected.push(format!("delete {name}"));
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {seen:?}"))
            .expect("watch error")
            .expect("watch ended");
        match event {
            Event::Apply(cm) => seen.push(format!(
                "apply {} {}",
                cm.metadata.name.unwrap(),
                cm.data.unwrap_or_default()["value"]
            )),
            Event::Delete(cm) => seen.push(format!("delete {}", cm.metadata.name.unwrap())),
            other => panic!("unexpected event {other:?} after {seen:?}"),
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn watcher_with_list_then_watch() {
    watcher_sees_every_change(InitialListStrategy::ListWatch).await;
}

#[tokio::test]
async fn watcher_with_streaming_list() {
    watcher_sees_every_change(InitialListStrategy::StreamingList).await;
}
