//! Hollow nodes against a real `skiff server --disable-agent`: they register
//! Ready Nodes, renew their Leases, and report pods (bound directly or by
//! the scheduler) Running, Succeeded or deleted.
//!
//! The server binary is the workspace's `skiff`, built beforehand with
//! `cargo build -p skiff` (cargo provides `CARGO_BIN_EXE_skiff` only to the
//! `skiff` crate's own tests), or the one `SKIFF_BIN` names.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use skiff_hollow::{HollowCluster, HollowConfig};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The `skiff` binary: `SKIFF_BIN`, else the one beside this test's target
/// directory (`target/debug/skiff` for `target/debug/deps/hollow-*`).
fn skiff_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFF_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("skiff"))
        .expect("the test binary lies in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p skiff` first, or set SKIFF_BIN",
        bin.display()
    );
    bin
}

/// A client of the shared test cluster.
async fn client() -> kube::Client {
    let cluster =
        tokio::task::spawn_blocking(|| skiff_testing::shared(&skiff_bin().to_string_lossy()))
            .await
            .expect("starting the cluster");
    skiff_client::connect::from_kubeconfig(&cluster.kubeconfig())
        .await
        .expect("a client from the admin kubeconfig")
}

/// Polls `check` every 100 ms until it yields a value; panics after
/// [`TIMEOUT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace for one test.
async fn namespace(client: &kube::Client, name: &str) -> Api<Pod> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the namespace");
    Api::namespaced(client.clone(), name)
}

fn pod(name: &str, node: Option<&str>, restart_policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(Into::into),
            restart_policy: Some(restart_policy.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn hollow(prefix: &str, nodes: usize) -> HollowConfig {
    HollowConfig {
        nodes,
        name_prefix: prefix.into(),
        heartbeat_interval: Duration::from_millis(500),
        pod_concurrency: 4,
        heartbeat_concurrency: 4,
        ..HollowConfig::default()
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    let found = conditions.iter().find(|c| c.type_ == type_)?;
    Some(found.status.as_str())
}

/// Sets Ready=Unknown on `node`, as the node lifecycle controller does when
/// a node's Lease expires.
async fn mark_unknown(nodes: &Api<Node>, node: &str) {
    let patch = serde_json::json!({ "status": { "conditions": [{
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
    }]}});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("marking the node Unknown");
}

async fn renew_time(leases: &Api<Lease>, node: &str) -> Option<MicroTime> {
    leases.get_opt(node).await.ok()??.spec?.renew_time
}

/// The pod once its phase is `phase`.
async fn pod_in_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    eventually(&format!("pod {name} {phase}"), || async {
        let pod = pods.get_opt(name).await.ok()??;
        let current = pod.status.as_ref()?.phase.as_deref()?;
        (current == phase).then_some(pod)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_register_ready_and_renew_their_leases() {
    let client = client().await;
    let cluster = HollowCluster::start(client.clone(), hollow("hreg", 3), CancellationToken::new())
        .expect("valid config");
    assert_eq!(
        cluster.node_names().collect::<Vec<_>>(),
        ["hreg-0", "hreg-1", "hreg-2"]
    );
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["hreg-0", "hreg-1", "hreg-2"] {
        let node = eventually(&format!("{name} Ready"), || async {
            let node = nodes.get_opt(name).await.ok()??;
            (condition(&node, "Ready") == Some("True")).then_some(node)
        })
        .await;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["kubernetes.io/hostname"], name);
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["skiff.dev/hollow"], "true");
        for pressure in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(condition(&node, pressure), Some("False"), "{pressure}");
        }
        let status = node.status.expect("status");
        assert_eq!(status.capacity.expect("capacity")["memory"].0, "16Gi");
        assert_eq!(status.allocatable.expect("allocatable")["pods"].0, "110");
        assert_eq!(
            status.node_info.expect("nodeInfo").kubelet_version,
            "v1.37.0-skiff-hollow"
        );
        let internal = status
            .addresses
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .expect("an InternalIP");
        assert!(internal.address.starts_with("10.255.0."), "{internal:?}");
        let index = &name["hreg-".len()..];
        let spec = node.spec.expect("spec");
        assert_eq!(spec.pod_cidr, Some(format!("10.128.{index}.0/24")));
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = eventually("hreg-1's Lease", || async {
        leases.get_opt("hreg-1").await.ok()?
    })
    .await;
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("hreg-1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let first = spec.renew_time.expect("renewTime");
    eventually("hreg-1's Lease renewed", || async {
        let renewed = renew_time(&leases, "hreg-1").await?;
        (renewed.0 > first.0).then_some(())
    })
    .await;

    // A node whose heartbeats stop keeps its last renewTime while the
    // others go on, and leaves a Ready=Unknown (as the node lifecycle
    // controller sets it) alone; resumed, it renews and reports Ready again.
    assert!(cluster.stop_heartbeat("hreg-0"));
    assert!(!cluster.stop_heartbeat("no-such-node"));
    // Let a heartbeat already in flight land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = renew_time(&leases, "hreg-0").await.expect("hreg-0's Lease");
    let other = renew_time(&leases, "hreg-2").await.expect("hreg-2's Lease");
    mark_unknown(&nodes, "hreg-0").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(renew_time(&leases, "hreg-0").await, Some(stopped.clone()));
    let later = renew_time(&leases, "hreg-2").await.expect("hreg-2's Lease");
    assert!(later.0 > other.0, "hreg-2 went on renewing");
    let node = nodes.get("hreg-0").await.expect("hreg-0");
    assert_eq!(condition(&node, "Ready"), Some("Unknown"));

    assert!(cluster.resume_heartbeat("hreg-0"));
    eventually("hreg-0's Lease renewed after resuming", || async {
        let renewed = renew_time(&leases, "hreg-0").await?;
        (renewed.0 > stopped.0).then_some(())
    })
    .await;
    eventually("hreg-0 Ready again", || async {
        let node = nodes.get_opt("hreg-0").await.ok()??;
        (condition(&node, "Ready") == Some("True")).then_some(())
    })
    .await;

    // A running node corrects a status it did not report at its next
    // heartbeat, not minutes later.
    mark_unknown(&nodes, "hreg-2").await;
    eventually("hreg-2 Ready again", || async {
        let node = nodes.get_opt("hreg-2").await.ok()??;
        (condition(&node, "Ready") == Some("True")).then_some(())
    })
    .await;

    cluster.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_run_on_hollow_nodes_and_deletions_finish() {
    let client = client().await;
    let cluster = HollowCluster::start(client.clone(), hollow("hpod", 3), CancellationToken::new())
        .expect("valid config");
    let pods = namespace(&client, "hollow-pods").await;

    // Bound directly.
    pods.create(
        &PostParams::default(),
        &pod("direct", Some("hpod-1"), "Always"),
    )
    .await
    .expect("creating the pod");
    let running = pod_in_phase(&pods, "direct", "Running").await;
    let status = running.status.expect("status");
    let pod_ip = status.pod_ip.expect("a pod IP");
    assert!(
        pod_ip.starts_with("10.128.1."),
        "{pod_ip} in hpod-1's range"
    );
    assert_eq!(status.host_ip.as_deref(), Some("10.255.0.2"));
    assert!(status.start_time.is_some());
    let conditions = status.conditions.unwrap_or_default();
    for type_ in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let found = conditions.iter().find(|c| c.type_ == type_);
        assert_eq!(found.map(|c| c.status.as_str()), Some("True"), "{type_}");
    }
    let containers = status.container_statuses.expect("containerStatuses");
    assert_eq!(containers.len(), 1);
    assert!(containers[0].ready);
    assert_eq!(containers[0].restart_count, 0);
    assert!(
        containers[0]
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("hollow://")),
        "{:?}",
        containers[0].container_id
    );
    assert!(
        containers[0]
            .state
            .as_ref()
            .is_some_and(|s| s.running.is_some())
    );

    // Bound by the scheduler.
    let mut scheduled = pod("scheduled", None, "Always");
    let spec = scheduled.spec.as_mut().expect("spec");
    spec.node_selector = Some([("kubernetes.io/hostname".into(), "hpod-2".into())].into());
    pods.create(&PostParams::default(), &scheduled)
        .await
        .expect("creating the pod");
    let running = pod_in_phase(&pods, "scheduled", "Running").await;
    assert_eq!(
        running.spec.and_then(|s| s.node_name).as_deref(),
        Some("hpod-2")
    );
    let pod_ip = running.status.and_then(|s| s.pod_ip).expect("a pod IP");
    assert!(
        pod_ip.starts_with("10.128.2."),
        "{pod_ip} in hpod-2's range"
    );

    // A graceful deletion is finished by the node at once.
    pods.delete("direct", &DeleteParams::default())
        .await
        .expect("deleting the pod");
    eventually("the deleted pod gone", || async {
        pods.get_opt("direct")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;

    cluster.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_that_may_complete_succeed_after_the_delay() {
    let client = client().await;
    let config = HollowConfig {
        complete_after: Some(Duration::from_secs(1)),
        ..hollow("hjob", 1)
    };
    let cluster = HollowCluster::start(client.clone(), config, CancellationToken::new())
        .expect("valid config");
    let pods = namespace(&client, "hollow-jobs").await;
    pods.create(&PostParams::default(), &pod("job", Some("hjob-0"), "Never"))
        .await
        .expect("creating the pod");
    pods.create(
        &PostParams::default(),
        &pod("server", Some("hjob-0"), "Always"),
    )
    .await
    .expect("creating the pod");

    pod_in_phase(&pods, "job", "Running").await;
    let done = pod_in_phase(&pods, "job", "Succeeded").await;
    let status = done.status.expect("status");
    let container = &status.container_statuses.expect("containerStatuses")[0];
    assert!(!container.ready);
    let state = container.state.as_ref().expect("state");
    assert!(state.running.is_none(), "{state:?}");
    let terminated = state.terminated.as_ref().expect("terminated");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "False");

    // restartPolicy Always runs on.
    let server = pods.get("server").await.expect("the server pod");
    assert_eq!(
        server.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );

    cluster.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_pods_on_a_hundred_nodes() {
    use futures::{StreamExt, TryStreamExt};

    const NODES: usize = 100;
    const PODS: usize = 600;
    let client = client().await;
    let config = HollowConfig {
        heartbeat_interval: Duration::from_secs(2),
        ..HollowConfig {
            nodes: NODES,
            name_prefix: "hmany".into(),
            ..HollowConfig::default()
        }
    };
    let cluster = HollowCluster::start(client.clone(), config, CancellationToken::new())
        .expect("valid config");
    let pods = namespace(&client, "hollow-many").await;
    let started = std::time::Instant::now();
    futures::stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let node = format!("hmany-{}", i % NODES);
                pods.create(
                    &PostParams::default(),
                    &pod(&format!("p{i}"), Some(&node), "Always"),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("creating the pods");
    let created = started.elapsed();
    let ips = eventually("every pod Running", || async {
        let list = pods.list(&Default::default()).await.ok()?;
        let running: Vec<String> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.status?.pod_ip)
            .collect();
        (running.len() == PODS).then_some(running)
    })
    .await;
    eprintln!(
        "{PODS} pods created in {created:?}, all Running after {:?}",
        started.elapsed()
    );
    let unique: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), PODS, "pod IPs are unique");
    cluster.shutdown().await.expect("clean shutdown");
}
