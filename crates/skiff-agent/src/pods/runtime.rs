//! What the container runtime holds for each pod, read back through CRI.
//!
//! The agent keeps no state of its own about containers: after a restart
//! (or a `kill -9`) it finds every sandbox and container again by the labels
//! it put on them, as upstream's kubelet does. [`RuntimeView`] reads that
//! state, caching `ContainerStatus` answers per container id and state so a
//! relist costs two list calls plus one status call per container that
//! changed.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::lock;

use skiff_cri::v1::{
    ContainerFilter, ContainerState, ContainerStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStatusRequest,
};
use skiff_cri::{CriError, RuntimeService};

/// How long after an exit a container's status is re-read rather than
/// cached (see [`ContainerRecord::state_may_change`]).
const EXIT_SETTLE_NANOS: i64 = 30_000_000_000;

/// Label on sandboxes and containers naming the pod's uid.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// One sandbox of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    /// CRI id.
    pub id: String,
    /// How many sandboxes were created for the pod before this one.
    pub attempt: u32,
    /// Whether it is `SANDBOX_READY`.
    pub ready: bool,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// The pod IP the CNI plugin gave it.
    pub ip: Option<IpAddr>,
    /// Its network namespace, when it has one.
    pub netns: Option<PathBuf>,
}

/// One container instance (a restart makes a new instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// CRI id.
    pub id: String,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// The restart count this instance was created with.
    pub attempt: u32,
    /// CRI state.
    pub state: ContainerState,
    /// Nanoseconds since the epoch; 0 when not yet.
    pub created_at: i64,
    /// Nanoseconds since the epoch; 0 when not yet.
    pub started_at: i64,
    /// Nanoseconds since the epoch; 0 when not yet.
    pub finished_at: i64,
    /// Exit code, once exited.
    pub exit_code: i32,
    /// The runtime's reason for the exit (`OOMKilled`, `Completed`, `Error`).
    pub reason: String,
    /// The runtime's message about the exit.
    pub message: String,
    /// The image as the pod spec names it.
    pub image: String,
    /// The resolved image id.
    pub image_ref: String,
    /// Its log file.
    pub log_path: String,
    /// The cgroup values the runtime reports for it (created with, or last
    /// updated to); `None` when the runtime does not say.
    pub resources: Option<super::resize::CgroupResources>,
}

impl ContainerRecord {
    /// Whether the instance is running.
    pub fn running(&self) -> bool {
        self.state == ContainerState::ContainerRunning
    }

    /// Whether the instance has exited (or can no longer be known).
    pub fn exited(&self) -> bool {
        matches!(
            self.state,
            ContainerState::ContainerExited | ContainerState::ContainerUnknown
        )
    }
}

/// Everything the runtime holds for one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntime {
    /// Its sandboxes, newest first.
    pub sandboxes: Vec<SandboxRecord>,
    /// Its container instances, newest first.
    pub containers: Vec<ContainerRecord>,
}

impl PodRuntime {
    /// The newest sandbox, if it is ready.
    pub fn ready_sandbox(&self) -> Option<&SandboxRecord> {
        self.sandboxes.first().filter(|s| s.ready)
    }

    /// The newest instance of container `name` in sandbox `sandbox_id`.
    pub fn latest(&self, sandbox_id: &str, name: &str) -> Option<&ContainerRecord> {
        self.containers
            .iter()
            .find(|c| c.sandbox_id == sandbox_id && c.name == name)
    }

    /// The newest instance of `name` in any sandbox (for status after the
    /// sandbox is gone).
    pub fn latest_anywhere(&self, name: &str) -> Option<&ContainerRecord> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The instance before the newest one of `name` in the same sandbox.
    pub fn previous(&self, name: &str) -> Option<&ContainerRecord> {
        self.containers.iter().filter(|c| c.name == name).nth(1)
    }

    /// Whether anything runs.
    pub fn any_running(&self) -> bool {
        self.containers.iter().any(ContainerRecord::running)
            || self.sandboxes.iter().any(|s| s.ready)
    }
}

/// Reads pod state from the runtime, with a status cache.
pub struct RuntimeView {
    runtime: Arc<dyn RuntimeService>,
    /// `ContainerStatus` answers by container id, with the state they were
    /// read in: reused until the listed state differs.
    container_cache: Mutex<HashMap<String, ContainerRecord>>,
    /// Sandbox IPs and netns by sandbox id, with readiness.
    sandbox_cache: Mutex<HashMap<String, SandboxRecord>>,
}

impl RuntimeView {
    /// A view over `runtime`.
    pub fn new(runtime: Arc<dyn RuntimeService>) -> Self {
        Self {
            runtime,
            container_cache: Mutex::new(HashMap::new()),
            sandbox_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime state of the pod with `uid`.
    pub async fn pod(&self, uid: &str) -> Result<PodRuntime, CriError> {
        let labels = HashMap::from([(POD_UID_LABEL.to_string(), uid.to_string())]);
        let sandboxes = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: labels.clone(),
                    ..PodSandboxFilter::default()
                }),
            })
            .await?
            .items;
        let containers = self
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: labels,
                    ..ContainerFilter::default()
                }),
            })
            .await?
            .containers;
        let mut pod = PodRuntime::default();
        for sandbox in sandboxes {
            let ready = sandbox.state == PodSandboxState::SandboxReady as i32;
            pod.sandboxes
                .push(self.sandbox_record(&sandbox.id, ready).await?);
        }
        for container in containers {
            let listed = (container.state, container.pod_sandbox_id.as_str());
            if let Some(record) = self.container_record(&container.id, listed).await? {
                pod.containers.push(record);
            }
        }
        pod.sandboxes
            .sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
        pod.containers
            .sort_by_key(|c| std::cmp::Reverse((c.created_at, c.attempt)));
        Ok(pod)
    }

    /// Every pod uid the runtime holds something for, with a fingerprint of
    /// its containers' states: a relist compares fingerprints to find the pods
    /// whose containers changed.
    pub async fn fingerprints(&self) -> Result<HashMap<String, Vec<(String, i32)>>, CriError> {
        let containers = self
            .runtime
            .list_containers(ListContainersRequest::default())
            .await?
            .containers;
        let sandboxes = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .items;
        let mut out: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for sandbox in sandboxes {
            if let Some(uid) = sandbox.labels.get(POD_UID_LABEL) {
                out.entry(uid.clone())
                    .or_default()
                    .push((sandbox.id, sandbox.state));
            }
        }
        for container in containers {
            if let Some(uid) = container.labels.get(POD_UID_LABEL) {
                out.entry(uid.clone())
                    .or_default()
                    .push((container.id, container.state));
            }
        }
        for states in out.values_mut() {
            states.sort();
        }
        let live: HashSet<&String> = out.values().flatten().map(|(id, _)| id).collect();
        lock(&self.container_cache).retain(|id, _| live.contains(id));
        lock(&self.sandbox_cache).retain(|id, _| live.contains(id));
        Ok(out)
    }

    /// Drops what is cached of container `id`, after changing it in a way
    /// its listed state does not show (its resources).
    pub fn forget_container(&self, id: &str) {
        lock(&self.container_cache).remove(id);
    }

    async fn sandbox_record(&self, id: &str, ready: bool) -> Result<SandboxRecord, CriError> {
        if let Some(cached) = lock(&self.sandbox_cache).get(id)
            && cached.ready == ready
        {
            return Ok(cached.clone());
        }
        let response = self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await?;
        let status = response.status.unwrap_or_default();
        let ip = status
            .network
            .as_ref()
            .and_then(|n| n.ip.parse::<IpAddr>().ok());
        let record = SandboxRecord {
            id: id.to_string(),
            attempt: status.metadata.as_ref().map_or(0, |m| m.attempt),
            ready,
            created_at: status.created_at,
            ip,
            netns: response.info.get("info").and_then(|info| netns_path(info)),
        };
        lock(&self.sandbox_cache).insert(id.to_string(), record.clone());
        Ok(record)
    }

    async fn container_record(
        &self,
        id: &str,
        (listed_state, sandbox_id): (i32, &str),
    ) -> Result<Option<ContainerRecord>, CriError> {
        if let Some(cached) = lock(&self.container_cache).get(id)
            && cached.state as i32 == listed_state
            && !cached.state_may_change()
        {
            return Ok(Some(cached.clone()));
        }
        let status = match self
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(response) => response.status.unwrap_or_default(),
            // Removed between the list and the status call.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let written = termination_message(&status).await;
        let message = match (status.message.is_empty(), written.is_empty()) {
            (_, true) => status.message,
            (true, false) => written,
            (false, false) => format!("{}: {written}", status.message),
        };
        let record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            name: status
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            attempt: status.metadata.as_ref().map_or(0, |m| m.attempt),
            state: ContainerState::try_from(status.state)
                .unwrap_or(ContainerState::ContainerUnknown),
            created_at: status.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason: status.reason,
            message,
            image: status.image.map(|i| i.image).unwrap_or_default(),
            image_ref: status.image_ref,
            log_path: status.log_path,
            resources: status
                .resources
                .as_ref()
                .and_then(|r| r.linux.as_ref())
                .map(super::resize::CgroupResources::from),
        };
        lock(&self.container_cache).insert(id.to_string(), record.clone());
        Ok(Some(record))
    }
}

impl ContainerRecord {
    /// Whether a cached record may be stale although the listed state is
    /// the same: a created container may start at any moment, and a
    /// container that just exited may still get its OOM verdict (containerd
    /// handles the OOM event and the exit event separately, in either
    /// order, and updates the reason to `OOMKilled` when the OOM event comes
    /// second). A running container changes only in ways that do not matter.
    fn state_may_change(&self) -> bool {
        match self.state {
            ContainerState::ContainerCreated => true,
            ContainerState::ContainerExited => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
                now.saturating_sub(self.finished_at) < EXIT_SETTLE_NANOS
            }
            _ => false,
        }
    }
}

/// The network namespace path in containerd's verbose sandbox info (the
/// runtime spec's `linux.namespaces[type=network].path`).
/// How much of a termination message file is read, as upstream.
const MAX_TERMINATION_MESSAGE_BYTES: u64 = 4096;
/// The log fallback reads this many lines from the end...
const FALLBACK_LOG_LINES: u64 = 80;
/// ...and keeps at most this many bytes of their end.
const FALLBACK_LOG_BYTES: usize = 2048;

/// The termination message of an exited container, as upstream's kubelet
/// finds it: the file mounted at the `terminationMessagePath` (named by the
/// container's annotations), or, with `FallbackToLogsOnError` and a failed
/// exit, the end of its log when the file is empty. Unreadable sources give
/// an empty message: it is informational and must not fail a relist.
async fn termination_message(status: &skiff_cri::v1::ContainerStatus) -> String {
    use crate::config::{
        TERMINATION_MESSAGE_PATH_ANNOTATION, TERMINATION_MESSAGE_POLICY_ANNOTATION,
    };
    if status.state != ContainerState::ContainerExited as i32 {
        return String::new();
    }
    let fallback = status
        .annotations
        .get(TERMINATION_MESSAGE_POLICY_ANNOTATION)
        .is_some_and(|p| p == "FallbackToLogsOnError")
        && status.exit_code != 0
        && status.reason != "ContainerCannotRun";
    let file = status
        .annotations
        .get(TERMINATION_MESSAGE_PATH_ANNOTATION)
        .filter(|path| !path.is_empty())
        .and_then(|path| status.mounts.iter().find(|m| &m.container_path == path));
    if let Some(mount) = file {
        let written = read_capped(std::path::Path::new(&mount.host_path)).await;
        if !written.is_empty() {
            return written;
        }
    }
    if fallback && !status.log_path.is_empty() {
        return log_tail(std::path::Path::new(&status.log_path)).await;
    }
    String::new()
}

/// The first [`MAX_TERMINATION_MESSAGE_BYTES`] of `path`, or nothing.
async fn read_capped(path: &std::path::Path) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = async {
        let file = tokio::fs::File::open(path).await?;
        file.take(MAX_TERMINATION_MESSAGE_BYTES)
            .read_to_end(&mut bytes)
            .await
    };
    match read.await {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The container's output at the end of its log file, for
/// `FallbackToLogsOnError`.
async fn log_tail(path: &std::path::Path) -> String {
    let options = crate::logs::LogOptions {
        tail_lines: Some(FALLBACK_LOG_LINES),
        ..crate::logs::LogOptions::default()
    };
    let mut out = Vec::new();
    let not_running = || -> futures::future::BoxFuture<'static, bool> { Box::pin(async { false }) };
    if crate::logs::write_logs(path, &options, not_running, &mut out)
        .await
        .is_err()
    {
        return String::new();
    }
    let start = out.len().saturating_sub(FALLBACK_LOG_BYTES);
    String::from_utf8_lossy(&out[start..]).into_owned()
}

fn netns_path(info: &str) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(info).ok()?;
    info.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_comes_from_the_runtime_spec() {
        let info = r#"{"pid":7,"runtimeSpec":{"linux":{"namespaces":[
            {"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#;
        assert_eq!(
            netns_path(info),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        let host_network = r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}"#;
        assert_eq!(netns_path(host_network), None);
        assert_eq!(netns_path("not json"), None);
    }

    /// An exited container whose termination message path is backed by
    /// `file` and whose log is `log`, with `policy`, exit `code`.
    fn exited(
        file: &std::path::Path,
        log: &std::path::Path,
        policy: &str,
        code: i32,
    ) -> skiff_cri::v1::ContainerStatus {
        use crate::config::{
            TERMINATION_MESSAGE_PATH_ANNOTATION, TERMINATION_MESSAGE_POLICY_ANNOTATION,
        };
        skiff_cri::v1::ContainerStatus {
            state: ContainerState::ContainerExited as i32,
            exit_code: code,
            annotations: HashMap::from([
                (
                    TERMINATION_MESSAGE_PATH_ANNOTATION.to_string(),
                    "/dev/termination-log".to_string(),
                ),
                (
                    TERMINATION_MESSAGE_POLICY_ANNOTATION.to_string(),
                    policy.to_string(),
                ),
            ]),
            mounts: vec![skiff_cri::v1::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: file.to_string_lossy().into_owned(),
                ..skiff_cri::v1::Mount::default()
            }],
            log_path: log.to_string_lossy().into_owned(),
            ..skiff_cri::v1::ContainerStatus::default()
        }
    }

    #[tokio::test]
    async fn termination_message_comes_from_the_file_then_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("msg");
        let log = dir.path().join("0.log");
        std::fs::write(
            &log,
            "2024-01-01T00:00:00.000000000Z stdout F first\n\
             2024-01-01T00:00:00.000000001Z stderr F last words\n",
        )
        .expect("log");

        std::fs::write(&file, "x".repeat(5000)).expect("file");
        let capped = termination_message(&exited(&file, &log, "File", 1)).await;
        assert_eq!(capped.len(), 4096, "the file is read up to 4 KiB");

        std::fs::write(&file, "").expect("file");
        let fallback = exited(&file, &log, "FallbackToLogsOnError", 2);
        assert_eq!(termination_message(&fallback).await, "first\nlast words\n");
        // No fallback for the File policy, nor for a successful exit.
        assert_eq!(
            termination_message(&exited(&file, &log, "File", 2)).await,
            ""
        );
        let succeeded = exited(&file, &log, "FallbackToLogsOnError", 0);
        assert_eq!(termination_message(&succeeded).await, "");
        // A running container has no termination message yet.
        let mut running = exited(&file, &log, "FallbackToLogsOnError", 2);
        running.state = ContainerState::ContainerRunning as i32;
        assert_eq!(termination_message(&running).await, "");
    }
}
