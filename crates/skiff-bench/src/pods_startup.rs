//! `skiff-bench pods`: pod startup through the real node agent (issue 3).
//!
//! A `skiff server` with its node agent and private containerd is started on a
//! fresh data directory; once its node is Ready with a pod CIDR, three things
//! are measured in one run:
//!
//! - startup latency of pods running the local busybox image, from the start
//!   of the create request to the watch event that shows the pod running,
//!   for pods created one by one and all at once;
//! - the CRI floor: RunPodSandbox + CreateContainer + StartContainer called
//!   directly on the agent's containerd, with pod networking as the agent asks
//!   for it, so that the agent's and API's overhead shows as the difference;
//! - the agent's idle memory, as the server's RSS with the agent minus that of
//!   a server started with `--disable-agent`.
//!
//! `skiff killall` runs on the data directory whenever the server stops, on
//! success and on error, so that no pod or containerd outlives the run.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use skiff_cri::v1;
use skiff_cri::{CriClient, RuntimeService};
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::http::{Conn, Connector, JSON};
use crate::stats::{Summary, Table, against_ceiling, ms};
use crate::sys::{self, Killed, Memory, mib};

/// Startup p99 must be at most this (issue 3).
const STARTUP_P99_TARGET_MS: f64 = 1000.0;
/// Startup p50 must be at most this many times the CRI floor's p50 (issue 3).
const FLOOR_FACTOR: f64 = 2.0;
/// The agent's idle RSS must be at most this many MiB (issue 3).
const AGENT_RSS_TARGET_MIB: f64 = 25.0;
/// The image every pod runs; the agent imports it at start, so nothing is pulled.
const BUSYBOX_IMAGE: &str = "docker.io/skiff/busybox:1.35";
/// Where the benchmark's pods go.
const NAMESPACE: &str = "default";
/// The label that marks the benchmark's pods (and selects its watch).
const LABEL_KEY: &str = "skiff-bench";
const LABEL_VALUE: &str = "startup";
/// The CRI metadata namespace of the floor's sandboxes.
const FLOOR_NAMESPACE: &str = "skiff-bench-floor";
/// A pod CIDR unlikely to collide with another server's bridge on this machine.
const CLUSTER_CIDR: &str = "10.237.0.0/16";
/// How long the server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the node may take to be Ready with a pod CIDR.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a pod may take to run before the run fails.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// How long deleted pods may take to disappear, sandboxes included.
const GONE_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the readiness and deletion polls look again.
const POLL: Duration = Duration::from_millis(100);

/// Settings of `skiff-bench pods`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The skiff binary.
    pub skiff: PathBuf,
    /// Where the data directories go.
    pub dir: PathBuf,
    /// Pods of each startup mode.
    pub pods: usize,
    /// Sandboxes of the CRI floor.
    pub floor_runs: usize,
    /// How long each server idles before its memory is read.
    pub idle: Duration,
}

/// Run the pod startup benchmark and print its markdown report.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    ensure!(settings.pods > 0, "--pods must be at least 1");
    ensure!(settings.floor_runs > 0, "--floor-runs must be at least 1");
    ensure!(
        std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t"))),
        "skiff-bench pods needs root: the node agent runs containerd and pods"
    );

    // The control plane alone first, so that the agent's share can be told apart.
    eprintln!("measuring an idle server with --disable-agent");
    let bare = {
        let mut server = NodeServer::start(&settings.skiff, &settings.dir, false).await?;
        tokio::time::sleep(settings.idle).await;
        let memory = Memory::of(server.pid());
        server.stop()?;
        memory?
    };

    eprintln!("starting a server with its node agent");
    let mut server = NodeServer::start(&settings.skiff, &settings.dir, true).await?;
    let outcome = measure(&server, settings).await;
    if outcome.is_err() {
        eprintln!("last lines of the server log:\n{}", server.log_tail());
    }
    let stopped = server.stop();
    let measured = outcome?;
    stopped?;
    report(settings, &measured, bare);
    Ok(())
}

/// Everything one run measures with the agent.
struct Measured {
    startup: Duration,
    agent_idle: Memory,
    containerd_idle: Memory,
    /// The floor's sandboxes one by one: what the target is stated against.
    floor: Floor,
    /// As many sandboxes as pods, all at once: how containerd copes with
    /// the "at once" mode without the agent.
    floor_at_once: Floor,
    one_by_one: Startups,
    at_once: Startups,
}

async fn measure(server: &NodeServer, settings: &Settings) -> anyhow::Result<Measured> {
    let conn = server.connector.connect().await?;
    eprintln!(
        "waiting for node {} to be Ready with a pod CIDR",
        server.node
    );
    wait_node_ready(&conn, &server.node).await?;
    eprintln!("idle for {} s", settings.idle.as_secs());
    tokio::time::sleep(settings.idle).await;
    let agent_idle = Memory::of(server.pid())?;
    let containerd_idle = Memory::of(server.containerd_pid()?)?;

    let cri = CriClient::connect(server.containerd_socket())
        .await
        .context("connecting to the agent's containerd")?;
    let floor_logs = server.data_dir().join("agent/bench-floor-logs");
    eprintln!("CRI floor: {} sandboxes one by one", settings.floor_runs);
    let floor = cri_floor(&cri, &floor_logs, settings.floor_runs, false).await?;
    eprintln!("CRI floor: {} sandboxes at once", settings.pods);
    let floor_at_once = cri_floor(&cri, &floor_logs, settings.pods, true).await?;

    let tracker = Tracker::watch(&conn).await?;
    eprintln!("{} pods one by one", settings.pods);
    let one_by_one = one_by_one(&conn, &tracker, settings.pods).await?;
    delete_all(&conn, &cri, settings.pods, "one").await?;
    eprintln!("{} pods at once", settings.pods);
    let at_once = at_once(&conn, &tracker, settings.pods).await?;
    delete_all(&conn, &cri, settings.pods, "once").await?;
    Ok(Measured {
        startup: server.startup,
        agent_idle,
        containerd_idle,
        floor,
        floor_at_once,
        one_by_one,
        at_once,
    })
}

/// A `skiff server` on loopback with fresh ports, node name and bridge,
/// ready to serve.
struct NodeServer {
    process: Process,
    node: String,
    connector: Connector,
    /// Time from spawning the process to the first successful `/readyz`.
    startup: Duration,
}

impl NodeServer {
    async fn start(skiff: &Path, base: &Path, agent: bool) -> anyhow::Result<NodeServer> {
        if !skiff.is_file() {
            bail!(
                "no skiff binary at {} (build it with `cargo build --release -p skiff`, or pass --skiff)",
                skiff.display()
            );
        }
        let data_dir = tempfile::Builder::new()
            .prefix("skiff-bench-pods-")
            .tempdir_in(base)
            .with_context(|| format!("creating a data directory in {}", base.display()))?;
        let (node, bridge) = node_names(std::process::id());
        let log =
            File::create(data_dir.path().join("server.log")).context("creating the server log")?;
        let mut command = Command::new(skiff);
        command
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--bind-address", "127.0.0.1", "--https-port"])
            .arg(sys::free_port()?.to_string())
            .args(["--node-name", &node, "--bridge", &bridge])
            .args(["--cluster-cidr", CLUSTER_CIDR, "--kubelet-port"])
            .arg(sys::free_port()?.to_string());
        if !agent {
            command.arg("--disable-agent");
        }
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("opening the server log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", skiff.display()))?;
        // From here on, dropping `process` cleans up, also if start fails.
        let mut process = Process {
            child: Some(Killed(child)),
            skiff: skiff.to_path_buf(),
            agent,
            data_dir,
        };
        let connector = process.wait_ready(started).await?;
        Ok(NodeServer {
            process,
            node,
            connector,
            startup: started.elapsed(),
        })
    }

    fn pid(&self) -> u32 {
        self.process.child.as_ref().map_or(0, |c| c.0.id())
    }

    fn data_dir(&self) -> &Path {
        self.process.data_dir.path()
    }

    fn containerd_socket(&self) -> PathBuf {
        self.data_dir().join("agent/containerd/containerd.sock")
    }

    /// The agent's containerd, from the pid file it keeps beside its config.
    fn containerd_pid(&self) -> anyhow::Result<u32> {
        let path = self.data_dir().join("agent/containerd/containerd.pid");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds no pid", path.display()))
    }

    fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop()
    }
}

/// The server process and its data directory. Stopping it (or dropping it)
/// kills the server, then stops the agent's pods and containerd with `skiff
/// killall` when it ran an agent.
struct Process {
    child: Option<Killed>,
    skiff: PathBuf,
    agent: bool,
    data_dir: TempDir,
}

impl Process {
    /// Wait for the kubeconfig, then for `/readyz` to answer through it.
    async fn wait_ready(&mut self, started: Instant) -> anyhow::Result<Connector> {
        let kubeconfig = self.data_dir.path().join("kubeconfig");
        let mut last_error = None;
        while started.elapsed() < READY_TIMEOUT {
            if let Some(child) = &mut self.child
                && let Some(status) = child.0.try_wait().context("waiting for skiff server")?
            {
                bail!("skiff server exited with {status}:\n{}", self.log_tail());
            }
            if kubeconfig.is_file() {
                let probe = async {
                    let connector = Connector::from_kubeconfig(&kubeconfig)?;
                    connector.connect().await?.get("/readyz", JSON).await?;
                    anyhow::Ok(connector)
                };
                match probe.await {
                    Ok(connector) => return Ok(connector),
                    Err(e) => last_error = Some(e),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(anyhow!(
            "skiff server not ready after {READY_TIMEOUT:?} (last error: {}):\n{}",
            last_error.map_or_else(|| "no kubeconfig written".into(), |e| format!("{e:#}")),
            self.log_tail()
        ))
    }

    /// The last lines of the server's log.
    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kill the server, then run `skiff killall` on its data directory if it
    /// ran an agent. Idempotent.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        drop(child);
        if !self.agent {
            return Ok(());
        }
        let output = Command::new(&self.skiff)
            .arg("killall")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} killall", self.skiff.display()))?;
        ensure!(
            output.status.success(),
            "skiff killall --data-dir {} failed with {}: {}",
            self.data_dir.path().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("skiff-bench: {e:#}");
        }
    }
}

/// A node name and a bridge name (at most 15 bytes, the kernel's limit) unique
/// to this process, so that parallel runs and other servers do not collide.
fn node_names(pid: u32) -> (String, String) {
    (format!("bench-pods-{pid}"), format!("skb{pid}"))
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    spec: NodeSpec,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Deserialize, Default)]
struct NodeSpec {
    #[serde(rename = "podCIDR", default)]
    pod_cidr: Option<String>,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

/// Whether a Node object is Ready and has its pod CIDR.
fn node_ready(body: &[u8]) -> bool {
    serde_json::from_slice::<Node>(body).is_ok_and(|node| {
        node.spec.pod_cidr.is_some_and(|c| !c.is_empty())
            && node
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True")
    })
}

async fn wait_node_ready(conn: &Conn, node: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/nodes/{node}");
    let deadline = Instant::now() + NODE_TIMEOUT;
    loop {
        let (status, body) = conn.request(Method::GET, &path, JSON, None).await?;
        if status == StatusCode::OK && node_ready(&body) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "node {node} not Ready with a pod CIDR after {NODE_TIMEOUT:?} (last answer {status}: {})",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        tokio::time::sleep(POLL).await;
    }
}

/// When the watch first showed a pod bound to a node, and running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    scheduled: Option<Instant>,
    running: Option<Instant>,
}

/// What one watch event says about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: String,
    scheduled: bool,
    running: bool,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: PodObject,
}

#[derive(Deserialize)]
struct PodObject {
    metadata: PodMeta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize)]
struct PodMeta {
    name: String,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(rename = "containerStatuses", default)]
    container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
struct ContainerStatus {
    #[serde(default)]
    state: ContainerState,
}

#[derive(Deserialize, Default)]
struct ContainerState {
    #[serde(default)]
    running: Option<IgnoredAny>,
}

/// Parse an ADDED or MODIFIED event line; a pod is running when its phase is
/// Running or every one of its containers reports a running state.
fn parse_event(line: &[u8]) -> Option<Seen> {
    let event: WatchEvent = serde_json::from_slice(line).ok()?;
    if event.kind != "ADDED" && event.kind != "MODIFIED" {
        return None;
    }
    let pod = event.object;
    let statuses = &pod.status.container_statuses;
    let all_running = !statuses.is_empty() && statuses.iter().all(|s| s.state.running.is_some());
    Some(Seen {
        name: pod.metadata.name,
        scheduled: pod.spec.node_name.is_some_and(|n| !n.is_empty()),
        running: pod.status.phase.as_deref() == Some("Running") || all_running,
    })
}

/// Watches the benchmark's pods and records when each was first seen bound
/// and running. The watch starts before any pod is created.
struct Tracker {
    seen: Mutex<HashMap<String, Progress>>,
    changed: Notify,
    ended: AtomicBool,
    reader: tokio::task::AbortHandle,
}

impl Tracker {
    async fn watch(conn: &Conn) -> anyhow::Result<Arc<Tracker>> {
        let selector = format!("labelSelector={LABEL_KEY}%3D{LABEL_VALUE}");
        let collection = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        let list = conn.get(&format!("{collection}?{selector}"), JSON).await?;
        let list: serde_json::Value =
            serde_json::from_slice(&list).context("parsing a pod list")?;
        let revision = list["metadata"]["resourceVersion"]
            .as_str()
            .context("the pod list has no resourceVersion")?;
        let mut lines = conn
            .watch(&format!(
                "{collection}?watch=true&{selector}&resourceVersion={revision}"
            ))
            .await?;
        Ok(Arc::new_cyclic(|weak: &std::sync::Weak<Tracker>| {
            let weak = weak.clone();
            let reader = tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let arrived = Instant::now();
                    let Some(tracker) = weak.upgrade() else {
                        return;
                    };
                    if let Some(seen) = parse_event(&line) {
                        tracker.record(&seen, arrived);
                    }
                }
                if let Some(tracker) = weak.upgrade() {
                    tracker.ended.store(true, Ordering::SeqCst);
                    tracker.changed.notify_waiters();
                }
            });
            Tracker {
                seen: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                ended: AtomicBool::new(false),
                reader: reader.abort_handle(),
            }
        }))
    }

    fn record(&self, seen: &Seen, arrived: Instant) {
        {
            let mut all = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let progress = all.entry(seen.name.clone()).or_default();
            if seen.scheduled && progress.scheduled.is_none() {
                progress.scheduled = Some(arrived);
            }
            if seen.running && progress.running.is_none() {
                progress.running = Some(arrived);
            }
        }
        self.changed.notify_waiters();
    }

    /// Wait until the watch has shown `name` running.
    async fn running(&self, name: &str) -> anyhow::Result<Progress> {
        let deadline = tokio::time::Instant::now() + RUNNING_TIMEOUT;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let progress = self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .copied();
            if let Some(progress) = progress
                && progress.running.is_some()
            {
                return Ok(progress);
            }
            ensure!(
                !self.ended.load(Ordering::SeqCst),
                "the pod watch ended before {name} ran"
            );
            tokio::time::timeout_at(deadline, notified)
                .await
                .map_err(|_| anyhow!("pod {name} not running after {RUNNING_TIMEOUT:?}"))?;
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One pod's startup: from the start of its create request to the watch
/// event that showed it bound to the node, and running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Startup {
    scheduled: Duration,
    running: Duration,
}

impl Startup {
    fn new(created: Instant, progress: Progress) -> anyhow::Result<Startup> {
        let running = progress.running.context("pod not running")?;
        // A watch may coalesce binding and running into one event, or skip
        // the binding: then the binding counts as seen when running.
        let scheduled = progress.scheduled.unwrap_or(running);
        Ok(Startup {
            scheduled: scheduled.saturating_duration_since(created),
            running: running.saturating_duration_since(created),
        })
    }
}

/// The startups of one mode and its wall time.
struct Startups {
    pods: Vec<Startup>,
    elapsed: Duration,
}

impl Startups {
    fn total(&self) -> anyhow::Result<Summary> {
        Summary::new(self.pods.iter().map(|s| s.running).collect(), self.elapsed)
            .context("no pod started")
    }

    fn to_bound(&self) -> anyhow::Result<Summary> {
        Summary::new(
            self.pods.iter().map(|s| s.scheduled).collect(),
            self.elapsed,
        )
        .context("no pod started")
    }

    fn bound_to_running(&self) -> anyhow::Result<Summary> {
        Summary::new(
            self.pods
                .iter()
                .map(|s| s.running.saturating_sub(s.scheduled))
                .collect(),
            self.elapsed,
        )
        .context("no pod started")
    }
}

/// The JSON body of a benchmark pod: busybox sleeping, the image local.
fn pod_body(name: &str) -> Bytes {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {LABEL_KEY: LABEL_VALUE},
        },
        "spec": {
            // busybox `sleep` as pid 1 ignores SIGTERM: keep deletion short.
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    });
    Bytes::from(pod.to_string())
}

/// Create pod `name` and wait until the watch shows it running.
async fn start_pod(conn: Conn, tracker: Arc<Tracker>, name: String) -> anyhow::Result<Startup> {
    let created = Instant::now();
    conn.create(
        &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
        pod_body(&name),
    )
    .await?;
    let progress = tracker.running(&name).await?;
    Startup::new(created, progress)
}

async fn one_by_one(conn: &Conn, tracker: &Arc<Tracker>, pods: usize) -> anyhow::Result<Startups> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(pods);
    for i in 0..pods {
        let name = format!("one-{i:03}");
        out.push(start_pod(conn.clone(), Arc::clone(tracker), name).await?);
    }
    Ok(Startups {
        pods: out,
        elapsed: started.elapsed(),
    })
}

async fn at_once(conn: &Conn, tracker: &Arc<Tracker>, pods: usize) -> anyhow::Result<Startups> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..pods {
        let name = format!("once-{i:03}");
        tasks.spawn(start_pod(conn.clone(), Arc::clone(tracker), name));
    }
    let mut out = Vec::with_capacity(pods);
    while let Some(result) = tasks.join_next().await {
        out.push(result.context("a pod task panicked")??);
    }
    Ok(Startups {
        pods: out,
        elapsed: started.elapsed(),
    })
}

/// Delete pods `{prefix}-000`.. and wait until the API has none of the
/// benchmark's pods and containerd no ready sandbox, so that the teardown
/// does not overlap the next measurement.
async fn delete_all(conn: &Conn, cri: &CriClient, pods: usize, prefix: &str) -> anyhow::Result<()> {
    eprintln!("deleting the {prefix}-* pods");
    for i in 0..pods {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{prefix}-{i:03}");
        let (status, body) = conn.request(Method::DELETE, &path, JSON, None).await?;
        ensure!(
            matches!(
                status,
                StatusCode::OK | StatusCode::ACCEPTED | StatusCode::NOT_FOUND
            ),
            "DELETE {path}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
    }
    let list =
        format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={LABEL_KEY}%3D{LABEL_VALUE}");
    let deadline = Instant::now() + GONE_TIMEOUT;
    loop {
        let body = conn.get(&list, JSON).await?;
        let items = serde_json::from_slice::<serde_json::Value>(&body)
            .context("parsing a pod list")?["items"]
            .as_array()
            .map_or(0, Vec::len);
        let ready = cri
            .list_pod_sandbox(v1::ListPodSandboxRequest::default())
            .await?
            .items
            .iter()
            .filter(|s| s.state == v1::PodSandboxState::SandboxReady as i32)
            .count();
        if items == 0 && ready == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{items} pods and {ready} ready sandboxes left {GONE_TIMEOUT:?} after deleting"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The CRI floor: the three calls of each sandbox, and their sum.
#[derive(Debug, Default)]
struct Floor {
    sandbox: Vec<Duration>,
    create: Vec<Duration>,
    start: Vec<Duration>,
    elapsed: Duration,
}

impl Floor {
    fn push(&mut self, [sandbox, create, start]: [Duration; 3]) {
        self.sandbox.push(sandbox);
        self.create.push(create);
        self.start.push(start);
    }

    fn total(&self) -> Vec<Duration> {
        self.sandbox
            .iter()
            .zip(&self.create)
            .zip(&self.start)
            .map(|((a, b), c)| *a + *b + *c)
            .collect()
    }
}

/// The sandbox config of floor sandbox `name`: what the agent sends for a
/// BestEffort pod with pod networking (metadata, hostname, log directory,
/// cgroup parent, namespace modes, pod labels), except the pod-uid label,
/// whose unknown uid would make the agent clean the sandbox up as a leftover.
fn floor_sandbox_config(name: &str, log_root: &Path) -> v1::PodSandboxConfig {
    let uid = format!("skiff-bench-{}-{name}", std::process::id());
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: FLOOR_NAMESPACE.into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_root
            .join(format!("{FLOOR_NAMESPACE}_{name}_{uid}"))
            .display()
            .to_string(),
        labels: floor_labels(name),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Pod as i32,
                    pid: v1::NamespaceMode::Container as i32,
                    ipc: v1::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn floor_labels(name: &str) -> HashMap<String, String> {
    HashMap::from([
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            FLOOR_NAMESPACE.to_string(),
        ),
    ])
}

/// The busybox container of a floor sandbox, as the agent configures the
/// benchmark pod's container (BestEffort: minimum CPU shares, OOM score 1000).
fn floor_container_config(name: &str) -> v1::ContainerConfig {
    let mut labels = floor_labels(name);
    labels.insert("io.kubernetes.container.name".into(), "main".into());
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: BUSYBOX_IMAGE.into(),
            user_specified_image: BUSYBOX_IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        labels,
        log_path: "main/0.log".into(),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(v1::LinuxContainerResources {
                cpu_shares: 2,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            security_context: Some(v1::LinuxContainerSecurityContext::default()),
        }),
        ..Default::default()
    }
}

/// Run `runs` floor sandboxes, each with one container started, timing the
/// three calls: one by one, or all at once (then each is timed from its own
/// start, as a pod of the "at once" mode is). Then stop and remove every
/// floor sandbox, also after a failure.
async fn cri_floor(
    cri: &CriClient,
    log_root: &Path,
    runs: usize,
    at_once: bool,
) -> anyhow::Result<Floor> {
    let started = Instant::now();
    let measured = async {
        let mut floor = Floor::default();
        if at_once {
            let mut tasks = JoinSet::new();
            for i in 0..runs {
                let (cri, log_root) = (cri.clone(), log_root.to_path_buf());
                tasks.spawn(async move {
                    floor_sandbox(&cri, &log_root, &format!("once-{i:03}")).await
                });
            }
            while let Some(result) = tasks.join_next().await {
                floor.push(result.context("a floor task panicked")??);
            }
        } else {
            for i in 0..runs {
                floor.push(floor_sandbox(cri, log_root, &format!("one-{i:03}")).await?);
            }
        }
        floor.elapsed = started.elapsed();
        anyhow::Ok(floor)
    }
    .await;
    let cleanup = remove_floor_sandboxes(cri).await;
    let floor = measured?;
    cleanup?;
    Ok(floor)
}

/// One floor sandbox: RunPodSandbox, CreateContainer, StartContainer, timed.
async fn floor_sandbox(
    cri: &CriClient,
    log_root: &Path,
    name: &str,
) -> anyhow::Result<[Duration; 3]> {
    let config = floor_sandbox_config(name, log_root);
    // The agent makes the pod's log directory before RunPodSandbox too.
    std::fs::create_dir_all(&config.log_directory)
        .with_context(|| format!("creating {}", config.log_directory))?;

    let at = Instant::now();
    let id = cri
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .pod_sandbox_id;
    let sandbox = at.elapsed();

    let at = Instant::now();
    let container = cri
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: id,
            config: Some(floor_container_config(name)),
            sandbox_config: Some(config),
        })
        .await
        .context("CreateContainer")?
        .container_id;
    let create = at.elapsed();

    let at = Instant::now();
    cri.start_container(v1::StartContainerRequest {
        container_id: container,
    })
    .await
    .context("StartContainer")?;
    Ok([sandbox, create, at.elapsed()])
}

/// Stop and remove every sandbox in the floor's CRI namespace.
async fn remove_floor_sandboxes(cri: &CriClient) -> anyhow::Result<()> {
    let sandboxes = cri
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .context("listing the floor sandboxes")?
        .items;
    for sandbox in sandboxes {
        if sandbox.metadata.as_ref().map(|m| m.namespace.as_str()) != Some(FLOOR_NAMESPACE) {
            continue;
        }
        let id = sandbox.id;
        cri.stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .with_context(|| format!("stopping floor sandbox {id}"))?;
        cri.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .with_context(|| format!("removing floor sandbox {id}"))?;
    }
    Ok(())
}

fn summary(latencies: Vec<Duration>, elapsed: Duration) -> anyhow::Result<Summary> {
    Summary::new(latencies, elapsed).context("nothing measured")
}

fn report(settings: &Settings, measured: &Measured, bare: Memory) {
    println!("## skiff-bench pods: pod startup through the node agent\n");
    print!("{}", sys::describe_machine(&settings.dir));
    println!(
        "- server: {} with its node agent and private containerd (runc, CNI bridge), ready {} ms after spawn",
        settings.skiff.display(),
        measured.startup.as_millis()
    );
    println!(
        "- pods: `{BUSYBOX_IMAGE}` (imported at agent start, never pulled) running `sleep 3600`, \
         BestEffort, created over one HTTP/2 connection with the admin certificate\n"
    );
    if let Err(e) = print_tables(settings, measured, bare) {
        println!("report incomplete: {e:#}\n");
    }
}

fn print_tables(settings: &Settings, measured: &Measured, bare: Memory) -> anyhow::Result<()> {
    let floor = &measured.floor;
    let floor_total = summary(floor.total(), floor.elapsed)?;

    let mut startup = Table::new(["mode", "pods", "wall s", "p50 ms", "p99 ms", "max ms"]);
    let mut breakdown = Table::new([
        "mode",
        "create → bound p50 ms",
        "p99 ms",
        "bound → running p50 ms",
        "p99 ms",
    ]);
    let modes = [
        ("one by one", &measured.one_by_one),
        ("all at once", &measured.at_once),
    ];
    let mut totals = Vec::new();
    for (mode, startups) in modes {
        let total = startups.total()?;
        let bound = startups.to_bound()?;
        let rest = startups.bound_to_running()?;
        startup.row([
            mode.to_string(),
            total.ops.to_string(),
            format!("{:.1}", total.elapsed.as_secs_f64()),
            ms(total.p50),
            ms(total.p99),
            ms(total.max),
        ]);
        breakdown.row([
            mode.to_string(),
            ms(bound.p50),
            ms(bound.p99),
            ms(rest.p50),
            ms(rest.p99),
        ]);
        totals.push((mode, total));
    }
    println!("### Startup: create request → Running on a watch\n");
    println!("{startup}");
    println!(
        "Where the time goes: \"bound\" is the first watch event with `spec.nodeName` set \
         (scheduler), \"running\" the first with phase Running (node agent: sandbox, \
         container, status write).\n"
    );
    println!("{breakdown}");

    let mut cri = Table::new(["mode", "CRI call", "runs", "p50 ms", "p99 ms", "max ms"]);
    for (mode, floor) in [
        ("one by one", floor),
        ("all at once", &measured.floor_at_once),
    ] {
        for (call, latencies) in [
            (
                "RunPodSandbox (pod network, CNI bridge)",
                floor.sandbox.clone(),
            ),
            ("CreateContainer", floor.create.clone()),
            ("StartContainer", floor.start.clone()),
            ("the three together", floor.total()),
        ] {
            let s = summary(latencies, floor.elapsed)?;
            cri.row([
                mode.to_string(),
                call.to_string(),
                s.ops.to_string(),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
            ]);
        }
    }
    println!("### CRI floor: the agent's containerd called directly\n");
    println!("{cri}");
    println!(
        "The floor is the sum of the three calls for one sandbox. The target compares with \
         the floor one by one; the floor all at once ({} sandboxes started together, each \
         timed from its own start) shows what containerd alone does under the load of the \
         \"all at once\" mode.\n",
        measured.floor_at_once.sandbox.len()
    );

    let agent_kib = measured.agent_idle.rss_kib.saturating_sub(bare.rss_kib);
    let mut memory = Table::new(["process", "VmRSS MiB", "VmHWM MiB"]);
    memory.row([
        "skiff server with the agent, node Ready, no pods".to_string(),
        format!("{:.1}", mib(measured.agent_idle.rss_kib)),
        format!("{:.1}", mib(measured.agent_idle.peak_kib)),
    ]);
    memory.row([
        "skiff server --disable-agent".to_string(),
        format!("{:.1}", mib(bare.rss_kib)),
        format!("{:.1}", mib(bare.peak_kib)),
    ]);
    memory.row([
        "agent's share (the difference)".to_string(),
        format!("{:.1}", mib(agent_kib)),
        String::new(),
    ]);
    memory.row([
        "containerd (separate process, for information)".to_string(),
        format!("{:.1}", mib(measured.containerd_idle.rss_kib)),
        format!("{:.1}", mib(measured.containerd_idle.peak_kib)),
    ]);
    println!(
        "### Idle memory after {} s, empty store\n",
        settings.idle.as_secs()
    );
    println!("{memory}");
    println!(
        "The agent runs inside `skiff server`, so its RSS is measured as the server's with \
         the agent minus a server started with `--disable-agent` on an equally empty store; \
         containerd is not counted.\n"
    );

    let ms_f = |d: Duration| d.as_secs_f64() * 1e3;
    let floor_ceiling = FLOOR_FACTOR * ms_f(floor_total.p50);
    let mut targets = Table::new(["target", "measured", "verdict"]);
    for (mode, total) in &totals {
        targets.row([
            format!("p99 ≤ 1 s ({mode})"),
            format!("p99 {} ms", ms(total.p99)),
            against_ceiling(ms_f(total.p99), STARTUP_P99_TARGET_MS, "ms"),
        ]);
    }
    for (mode, total) in &totals {
        targets.row([
            format!("p50 ≤ 2× CRI floor p50 ({mode})"),
            format!(
                "p50 {} ms, floor p50 {} ms ({:.2}× the floor)",
                ms(total.p50),
                ms(floor_total.p50),
                ms_f(total.p50) / ms_f(floor_total.p50).max(f64::MIN_POSITIVE)
            ),
            against_ceiling(ms_f(total.p50), floor_ceiling, "ms"),
        ]);
    }
    targets.row([
        format!("agent idle RSS ≤ {AGENT_RSS_TARGET_MIB:.0} MiB"),
        format!("{:.1} MiB (server with agent − without)", mib(agent_kib)),
        against_ceiling(mib(agent_kib), AGENT_RSS_TARGET_MIB, "MiB"),
    ]);
    println!("### Targets (issue 3)\n");
    println!("{targets}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_fit_the_kernel() {
        let (node, bridge) = node_names(4_194_304);
        assert_eq!(node, "bench-pods-4194304");
        assert!(bridge.len() <= 15, "{bridge}");
        assert_ne!(node_names(1).1, node_names(2).1);
    }

    #[test]
    fn node_is_ready_only_with_a_cidr_and_the_condition() {
        let ready = br#"{"spec":{"podCIDR":"10.237.0.0/24"},"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}}"#;
        assert!(node_ready(ready));
        let no_cidr = br#"{"spec":{},"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
        assert!(!node_ready(no_cidr));
        let not_ready = br#"{"spec":{"podCIDR":"10.237.0.0/24"},"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#;
        assert!(!node_ready(not_ready));
        assert!(!node_ready(b"not json"));
    }

    #[test]
    fn events_show_binding_and_running() {
        let pending = br#"{"type":"ADDED","object":{"metadata":{"name":"a"},"spec":{},"status":{"phase":"Pending"}}}"#;
        assert_eq!(
            parse_event(pending),
            Some(Seen {
                name: "a".into(),
                scheduled: false,
                running: false
            })
        );
        let bound = br#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"spec":{"nodeName":"n"},"status":{"phase":"Pending","containerStatuses":[{"state":{"waiting":{"reason":"ContainerCreating"}}}]}}}"#;
        let seen = parse_event(bound).unwrap();
        assert!(seen.scheduled && !seen.running);
        let running = br#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"spec":{"nodeName":"n"},"status":{"phase":"Pending","containerStatuses":[{"state":{"running":{"startedAt":"2026-01-01T00:00:00Z"}}}]}}}"#;
        assert!(parse_event(running).unwrap().running);
        let phase = br#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"spec":{"nodeName":"n"},"status":{"phase":"Running"}}}"#;
        assert!(parse_event(phase).unwrap().running);
        let deleted = br#"{"type":"DELETED","object":{"metadata":{"name":"a"},"status":{"phase":"Running"}}}"#;
        assert_eq!(parse_event(deleted), None);
        assert_eq!(parse_event(br#"{"type":"BOOKMARK","object":{}}"#), None);
    }

    #[tokio::test]
    async fn tracker_keeps_the_first_sighting() {
        let reader = tokio::spawn(async {}).abort_handle();
        let tracker = Tracker {
            seen: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            ended: AtomicBool::new(false),
            reader,
        };
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let t2 = t0 + Duration::from_millis(9);
        let bound = |running| Seen {
            name: "a".into(),
            scheduled: true,
            running,
        };
        tracker.record(&bound(false), t0);
        tracker.record(&bound(true), t1);
        tracker.record(&bound(true), t2);
        let progress = tracker.running("a").await.unwrap();
        assert_eq!(progress.scheduled, Some(t0));
        assert_eq!(progress.running, Some(t1));

        let created = t0 - Duration::from_millis(10);
        let startup = Startup::new(created, progress).unwrap();
        assert_eq!(startup.scheduled, Duration::from_millis(10));
        assert_eq!(startup.running, Duration::from_millis(15));
        tracker.ended.store(true, Ordering::SeqCst);
        assert!(tracker.running("missing").await.is_err());
    }

    #[test]
    fn pod_body_runs_the_local_image() {
        let body: serde_json::Value = serde_json::from_slice(&pod_body("one-007")).unwrap();
        assert_eq!(body["metadata"]["name"], "one-007");
        assert_eq!(body["metadata"]["labels"][LABEL_KEY], LABEL_VALUE);
        let container = &body["spec"]["containers"][0];
        assert_eq!(container["image"], BUSYBOX_IMAGE);
        assert_eq!(container["command"], serde_json::json!(["sleep", "3600"]));
    }

    #[test]
    fn floor_sandboxes_use_pod_networking_and_no_pod_uid_label() {
        let config = floor_sandbox_config("one-003", Path::new("/logs"));
        let linux = config.linux.unwrap();
        let namespaces = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(namespaces.network, v1::NamespaceMode::Pod as i32);
        assert!(linux.cgroup_parent.starts_with("/kubepods/besteffort/pod"));
        assert!(
            config
                .log_directory
                .starts_with("/logs/skiff-bench-floor_one-003_")
        );
        assert!(!config.labels.contains_key("io.kubernetes.pod.uid"));
        let container = floor_container_config("one-003");
        assert_eq!(container.command, ["sleep", "3600"]);
        assert_eq!(container.image.unwrap().image, BUSYBOX_IMAGE);
    }

    #[test]
    fn floor_total_sums_the_three_calls() {
        let d = Duration::from_millis;
        let mut floor = Floor::default();
        floor.push([d(200), d(30), d(50)]);
        floor.push([d(100), d(20), d(40)]);
        assert_eq!(floor.sandbox, [d(200), d(100)]);
        assert_eq!(floor.total(), [d(280), d(160)]);
    }
}
