//! Durability through the real binary: SIGKILL in the middle of a burst of
//! writes loses no acknowledged write. `SKIFF_DURABILITY_ROUNDS` repeats it
//! (the soak in the README runs 100 rounds).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use skiff_testing::TestCluster;

const WRITERS: usize = 16;

async fn client(cluster: &TestCluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    config.read_timeout = Some(Duration::from_secs(5));
    config.write_timeout = Some(Duration::from_secs(5));
    Client::try_from(config).expect("client builds")
}

/// One round: burst, kill, restart, verify. Returns how many writes were acknowledged.
async fn round(cluster: &mut TestCluster, round: usize) -> usize {
    let api: Api<ConfigMap> = Api::namespaced(client(cluster).await, "default");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let api = api.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("r{round}-w{writer}-{i}");
                let value = format!("{name}-payload-{}", "x".repeat(i % 200));
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name}, "data": {"value": value}
                }))
                .unwrap();
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => acknowledged.lock().unwrap().push((name, value)),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    cluster.restart();
    let api: Api<ConfigMap> = Api::namespaced(client(cluster).await, "default");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged before the kill"
    );
    for (name, value) in &acknowledged {
        let cm = api
            .get_opt(name)
            .await
            .expect("server answers after restart")
            .unwrap_or_else(|| panic!("acknowledged write {name} lost in round {round}"));
        assert_eq!(
            cm.data.unwrap_or_default().get("value"),
            Some(value),
            "{name} corrupted"
        );
    }
    acknowledged.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let rounds: usize = std::env::var("SKIFF_DURABILITY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_skiff"));
    let mut total = 0;
    for r in 0..rounds {
        total += round(&mut cluster, r).await;
    }
    eprintln!("durability: {rounds} rounds, {total} acknowledged writes, 0 lost");
}
