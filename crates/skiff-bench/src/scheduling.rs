//! Scheduling at scale on hollow (simulated) nodes, as upstream's
//! scheduler_perf and kubemark measure it.
//!
//! For each scale (nodes, pods): a fresh `skiff server --disable-agent`, one
//! `skiff agent --hollow N` process registering N simulated nodes (they run
//! nothing; they heartbeat and report bound pods Running), then:
//!
//! 1. **Throughput**: `clients` concurrent clients create the pods (the
//!    realistic 1.5 KiB pods of [`crate::pod`], 250m CPU each plus a
//!    sidecar) while a watch records when each pod is bound. Throughput is
//!    pods divided by the time from the first create to the last binding;
//!    latency is create-to-bound per pod.
//! 2. **Memory**: the server's RSS with every node and pod in place.
//! 3. **Deployment**: a Deployment of `replicas` on the same nodes, timed
//!    from create until all replicas are available.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::http::{Conn, JSON};
use crate::run::phase;
use crate::server::SkiffServer;
use crate::stats::{Summary, Table, ms, rate};
use crate::sys::{self, Killed, Memory};

/// The bench's namespace for the throughput pods.
const NAMESPACE: &str = "default";
/// How long nodes may take to register, and pods to be bound.
const WAIT: Duration = Duration::from_secs(600);

/// What to measure.
pub struct Settings {
    /// The skiff binary.
    pub skiff: PathBuf,
    /// Where data directories go.
    pub dir: PathBuf,
    /// (nodes, pods) pairs.
    pub scales: Vec<(usize, usize)>,
    /// Concurrent creating clients.
    pub clients: usize,
    /// Replicas of the Deployment phase (0 skips it).
    pub replicas: usize,
}

/// One scale's figures.
struct Outcome {
    nodes: usize,
    pods: usize,
    nodes_ready: Duration,
    create: Summary,
    bound: Summary,
    rss_mib: f64,
    deployment: Option<Duration>,
}

/// Runs every scale and prints the report.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    for &(nodes, pods) in &settings.scales {
        eprintln!("scheduling: {nodes} hollow nodes, {pods} pods");
        outcomes.push(measure(settings, nodes, pods).await?);
    }
    println!("## Scheduling on hollow nodes\n");
    println!("{}\n", sys::describe_machine(&settings.dir));
    let mut table = Table::new([
        "nodes",
        "pods",
        "nodes registered",
        "create pods/s",
        "bound pods/s",
        "create→bound p50 (ms)",
        "create→bound p99 (ms)",
        "server RSS",
        "deployment all available",
    ]);
    for o in &outcomes {
        table.row([
            o.nodes.to_string(),
            o.pods.to_string(),
            format!("{:.1} s", o.nodes_ready.as_secs_f64()),
            rate(o.create.per_second()),
            rate(o.bound.per_second()),
            ms(o.bound.p50),
            ms(o.bound.p99),
            format!("{:.0} MiB", o.rss_mib),
            o.deployment.map_or_else(
                || "-".into(),
                |d| format!("{:.1} s ({} replicas)", d.as_secs_f64(), settings.replicas),
            ),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn measure(settings: &Settings, nodes: usize, pods: usize) -> anyhow::Result<Outcome> {
    let server =
        SkiffServer::start_with_args(&settings.skiff, &settings.dir, &["--disable-agent"]).await?;
    let hollow = start_hollow(&settings.skiff, &server, nodes)?;
    let conn = server.connector().connect().await?;
    let started = Instant::now();
    wait_nodes_ready(&conn, nodes)
        .await
        .with_context(|| format!("hollow nodes:\n{}", server.log_tail()))?;
    let nodes_ready = started.elapsed();
    eprintln!("  {nodes} nodes ready in {nodes_ready:?}");

    let (create, bound) = create_and_bind(&server, settings.clients, pods).await?;
    eprintln!(
        "  created at {:.0}/s, bound at {:.0}/s",
        create.per_second(),
        bound.per_second()
    );
    let rss_mib = sys::mib(Memory::of(server.pid())?.rss_kib);
    let deployment = match settings.replicas {
        0 => None,
        replicas => Some(deployment_available(&conn, replicas).await?),
    };
    drop(hollow);
    Ok(Outcome {
        nodes,
        pods,
        nodes_ready,
        create,
        bound,
        rss_mib,
        deployment,
    })
}

/// `skiff agent --hollow N` joined to `server` with its node token.
fn start_hollow(skiff: &Path, server: &SkiffServer, nodes: usize) -> anyhow::Result<Killed> {
    let token = std::fs::read_to_string(server.data_dir().join("node-token"))
        .context("reading the server's node-token")?;
    let url = server.connector().url();
    let data_dir = server.data_dir().join("hollow");
    let log = std::fs::File::create(server.data_dir().join("hollow.log"))?;
    let child = Command::new(skiff)
        .args(["agent", "--hollow", &nodes.to_string(), "--server", &url])
        .args(["--token", token.trim()])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting skiff agent --hollow")?;
    Ok(Killed(child))
}

async fn wait_nodes_ready(conn: &Conn, nodes: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let list: Value = serde_json::from_slice(&conn.get("/api/v1/nodes", JSON).await?)?;
        let ready = list["items"]
            .as_array()
            .map(|items| items.iter().filter(|n| is_ready(n)).count())
            .unwrap_or(0);
        if ready >= nodes {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {nodes} nodes Ready after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Creates `pods` pods over `clients` clients while a watch times each
/// binding. Returns the create phase and the create-to-bound summary.
async fn create_and_bind(
    server: &SkiffServer,
    clients: usize,
    pods: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let watcher = server.connector().connect().await?;
    crate::api::create_service_account(&watcher, NAMESPACE).await?;
    let list: Value = serde_json::from_slice(
        &watcher
            .get(
                &format!("/api/v1/namespaces/{NAMESPACE}/pods?limit=1"),
                JSON,
            )
            .await?,
    )?;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound = tokio::spawn(watch_bindings(watcher, from, pods));

    let connector = server.connector().clone();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connector.connect().await?);
    }
    let conns = Arc::new(conns);
    let first_create = Instant::now();
    let stamps = Arc::clone(&created_at);
    let create = phase(clients, pods, WAIT, move |client, index| {
        let conns = Arc::clone(&conns);
        let stamps = Arc::clone(&stamps);
        async move {
            let name = format!("sched-{index}");
            let body = crate::pod::pod(NAMESPACE, &name, index);
            let start = Instant::now();
            stamps.lock().expect("stamps").insert(name, start);
            conns[client]
                .create(&format!("/api/v1/namespaces/{NAMESPACE}/pods"), body)
                .await?;
            Ok(start.elapsed())
        }
    })
    .await?;
    let bound_at = bound.await.context("binding watch panicked")??;
    let created_at = created_at.lock().expect("stamps");
    let mut latencies = Vec::with_capacity(pods);
    let mut last = first_create;
    for (name, at) in &bound_at {
        if let Some(created) = created_at.get(name) {
            latencies.push(at.saturating_duration_since(*created));
            last = last.max(*at);
        }
    }
    let bound = Summary::new(latencies, last - first_create).context("no pod was bound")?;
    Ok((create, bound))
}

/// Follows pod events from `from` until `pods` bench pods have a node.
async fn watch_bindings(
    conn: Conn,
    from: String,
    pods: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let path = format!(
        "/api/v1/namespaces/{NAMESPACE}/pods?watch=true&resourceVersion={from}&allowWatchBookmarks=false"
    );
    let mut lines = conn.watch(&path).await?;
    let mut bound = HashMap::with_capacity(pods);
    let deadline = Instant::now() + WAIT;
    while bound.len() < pods {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .with_context(|| format!("only {} of {pods} pods bound after {WAIT:?}", bound.len()))??
            .context("the watch ended")?;
        let event: PodEvent = serde_json::from_slice(&line)?;
        if event.object.spec.node_name.is_some() {
            bound
                .entry(event.object.metadata.name)
                .or_insert_with(Instant::now);
        }
    }
    Ok(bound)
}

/// The fields of a pod watch event the bench reads; the rest is skipped
/// without being built, so the load generator takes less of the machine.
#[derive(serde::Deserialize)]
struct PodEvent {
    object: BoundPod,
}

#[derive(serde::Deserialize)]
struct BoundPod {
    metadata: PodName,
    #[serde(default)]
    spec: PodNode,
}

#[derive(serde::Deserialize)]
struct PodName {
    name: String,
}

#[derive(serde::Deserialize, Default)]
struct PodNode {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

/// Creates a Deployment of `replicas` and times it until all are available.
async fn deployment_available(conn: &Conn, replicas: usize) -> anyhow::Result<Duration> {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "registry.example.com/bench:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }]},
            },
        },
    });
    let start = Instant::now();
    conn.create(
        "/apis/apps/v1/namespaces/default/deployments",
        Bytes::from(serde_json::to_vec(&deployment)?),
    )
    .await?;
    loop {
        let current: Value = serde_json::from_slice(
            &conn
                .get("/apis/apps/v1/namespaces/default/deployments/bench", JSON)
                .await?,
        )?;
        if current["status"]["availableReplicas"].as_u64() == Some(replicas as u64) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > WAIT {
            bail!(
                "deployment not available after {WAIT:?}: {}",
                current["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
