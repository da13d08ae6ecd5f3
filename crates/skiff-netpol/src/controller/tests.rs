//! The loop against a fake API server and the recording `nft`.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::*;
use crate::fixtures::{Collection, fake_api, namespace, pod, policy, send};
use crate::nft::RecordingNft;

const NODE: &str = "node-a";

fn config() -> NetpolConfig {
    NetpolConfig {
        debounce: Duration::from_millis(50),
        ..NetpolConfig::new(NODE)
    }
}

fn web_from_front() -> Value {
    policy(
        "default",
        "web-from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}],
        }),
    )
}

/// `web` and `front` here, `other` on another node, and `web-from-front`.
fn world() -> Vec<(Collection, Vec<Value>)> {
    vec![
        (
            Collection::Namespaces,
            vec![namespace("default", json!({}))],
        ),
        (
            Collection::Pods,
            vec![
                pod("default", "web", NODE, "10.42.0.2", json!({"app": "web"})),
                pod(
                    "default",
                    "front",
                    NODE,
                    "10.42.0.3",
                    json!({"role": "front"}),
                ),
                pod("default", "other", "node-b", "10.42.1.4", json!({})),
            ],
        ),
        (Collection::Policies, vec![web_from_front()]),
    ]
}

fn parse<K: serde::de::DeserializeOwned>(
    objects: &[(Collection, Vec<Value>)],
    which: Collection,
) -> Vec<Arc<K>> {
    objects
        .iter()
        .filter(|(c, _)| *c == which)
        .flat_map(|(_, items)| items.iter())
        .map(|v| Arc::new(serde_json::from_value(v.clone()).expect("object")))
        .collect()
}

/// The enforcer in a task, stopped when dropped.
struct Running {
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), NetpolError>>>,
}

impl Running {
    fn start(client: Client, config: NetpolConfig, nft: RecordingNft) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_with(client, config, nft, shutdown.clone()));
        Running {
            shutdown,
            task: Some(task),
        }
    }

    async fn stop(mut self) -> Result<(), NetpolError> {
        self.shutdown.cancel();
        self.task.take().expect("running").await.expect("task")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (up to 5 s) until `nft` holds `count` scripts.
async fn applied(nft: &RecordingNft, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let applied = nft.applied();
        if applied.len() >= count {
            return applied;
        }
        assert!(
            Instant::now() < deadline,
            "{count} applies expected, got {}",
            applied.len()
        );
        sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn applies_the_rendered_table_once_everything_is_listed() {
    let objects = world();
    let client = fake_api(objects.clone()).client();
    let nft = RecordingNft::new();
    let running = Running::start(client, config(), nft.clone());
    let first = applied(&nft, 1).await;
    let expected = crate::render(
        "skiff-netpol",
        NODE,
        &parse(&objects, Collection::Pods),
        &parse(&objects, Collection::Namespaces),
        &parse(&objects, Collection::Policies),
    );
    assert_eq!(first[0], expected);
    assert!(expected.contains("10.42.0.2 : jump ingress-0"));
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn label_change_reapplies_within_a_second_and_no_op_changes_do_not() {
    let api = fake_api(world());
    let client = api.client();
    let nft = RecordingNft::new();
    let _running = Running::start(client, config(), nft.clone());
    let first = applied(&nft, 1).await;
    assert!(!first[0].contains("10.42.1.4"));

    // The remote pod becomes a front: it joins the peer set.
    let pushed = Instant::now();
    send(
        &api,
        Collection::Pods,
        "MODIFIED",
        pod(
            "default",
            "other",
            "node-b",
            "10.42.1.4",
            json!({"role": "front"}),
        ),
    )
    .await;
    let second = applied(&nft, 2).await;
    assert!(
        pushed.elapsed() < Duration::from_secs(1),
        "took {:?}",
        pushed.elapsed()
    );
    assert!(second[1].contains("\t\t\t10.42.1.4,\n"), "{}", second[1]);

    // A change the rules do not read renders the same text: nothing runs.
    send(
        &api,
        Collection::Namespaces,
        "MODIFIED",
        namespace("default", json!({})),
    )
    .await;
    send(
        &api,
        Collection::Pods,
        "MODIFIED",
        pod(
            "default",
            "other",
            "node-b",
            "10.42.1.4",
            json!({"role": "front"}),
        ),
    )
    .await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(nft.applied().len(), 2);

    // Deleting the policy leaves nobody isolated.
    send(&api, Collection::Policies, "DELETED", web_from_front()).await;
    let third = applied(&nft, 3).await;
    assert!(!third[2].contains("jump"), "{}", third[2]);
}

#[tokio::test]
async fn bursts_of_changes_are_applied_together() {
    let api = fake_api(world());
    let client = api.client();
    let nft = RecordingNft::new();
    let config = NetpolConfig {
        debounce: Duration::from_millis(200),
        ..config()
    };
    let _running = Running::start(client, config, nft.clone());
    applied(&nft, 1).await;
    for i in 0..20 {
        send(
            &api,
            Collection::Pods,
            "ADDED",
            pod(
                "default",
                &format!("f{i}"),
                "node-b",
                &format!("10.42.2.{i}"),
                json!({"role": "front"}),
            ),
        )
        .await;
    }
    let scripts = applied(&nft, 2).await;
    sleep(Duration::from_millis(400)).await;
    assert_eq!(nft.applied().len(), 2, "one apply for the whole burst");
    assert!(
        scripts[1].contains("10.42.2.0-10.42.2.19"),
        "{}",
        scripts[1]
    );
}

#[tokio::test]
async fn nothing_is_applied_until_every_cache_has_listed() {
    let api = fake_api(world());
    api.hold_lists(Collection::Namespaces.path());
    let client = api.client();
    let nft = RecordingNft::new();
    let _running = Running::start(client, config(), nft.clone());
    sleep(Duration::from_millis(300)).await;
    assert!(nft.applied().is_empty(), "namespaces are not listed yet");
    api.release_lists(Collection::Namespaces.path());
    applied(&nft, 1).await;
}

#[tokio::test]
async fn refused_scripts_are_retried() {
    let client = fake_api(world()).client();
    let nft = RecordingNft::new();
    nft.fail_next(2);
    let _running = Running::start(client, config(), nft.clone());
    let scripts = applied(&nft, 1).await;
    assert!(scripts[0].contains("jump ingress-0"));
}

#[tokio::test]
async fn shutdown_stops_the_loop() {
    let client = fake_api(world()).client();
    let nft = RecordingNft::new();
    let running = Running::start(client, config(), nft.clone());
    applied(&nft, 1).await;
    running.stop().await.expect("Ok on shutdown");
}

#[tokio::test]
async fn bad_config_is_refused_before_watching() {
    let client = fake_api(world()).client();
    for (config, expected) in [
        (NetpolConfig::new(""), "node name is empty"),
        (
            NetpolConfig {
                table: "bad table;".into(),
                ..NetpolConfig::new(NODE)
            },
            "invalid nftables table name",
        ),
        (
            NetpolConfig {
                table: "9lives".into(),
                ..NetpolConfig::new(NODE)
            },
            "invalid nftables table name",
        ),
    ] {
        let error = run_with(
            client.clone(),
            config,
            RecordingNft::new(),
            CancellationToken::new(),
        )
        .await
        .expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[tokio::test]
async fn a_missing_nft_binary_stops_run_with_an_error() {
    let client = fake_api(world()).client();
    let config = NetpolConfig {
        nft_path: "/nonexistent/skiff-test/nft".into(),
        ..config()
    };
    let error = tokio::time::timeout(
        Duration::from_secs(5),
        run(client, config, CancellationToken::new()),
    )
    .await
    .expect("stops by itself")
    .expect_err("no nft");
    assert!(
        matches!(&error, NetpolError::Nft(NftError::Spawn { .. })),
        "{error:?}"
    );
}

#[test]
fn retry_delay_doubles_up_to_the_cap() {
    assert_eq!(retry_delay(1), Duration::from_millis(100));
    assert_eq!(retry_delay(2), Duration::from_millis(200));
    assert_eq!(retry_delay(4), Duration::from_millis(800));
    assert_eq!(retry_delay(20), MAX_RETRY);
    assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
}
