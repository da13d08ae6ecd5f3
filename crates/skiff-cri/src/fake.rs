//! An in-memory CRI runtime for tests of the agent.
//!
//! [`FakeRuntime`] implements both [`RuntimeService`] and [`ImageService`].
//! Hold it in an `Arc`, hand clones of that `Arc` to the code under test as
//! `Arc<dyn RuntimeService>` / `Arc<dyn ImageService>`, and keep one to drive
//! and inspect it:
//!
//! - State follows containerd's rules where the agent can observe them: a
//!   sandbox is `READY` until stopped; a container goes
//!   `CREATED → RUNNING → EXITED`; creating needs the sandbox and a local
//!   image; stop and remove are idempotent as the CRI contract asks.
//! - Things a real runtime does on its own are test controls:
//!   [`FakeRuntime::exit_container`] makes a process exit (a crash, an OOM
//!   kill), [`FakeRuntime::add_image`] preloads an image (an airgap import).
//! - [`FakeRuntime::calls`] records every call in order, and
//!   [`FakeRuntime::fail_next`] makes the next call of a kind fail with a
//!   chosen gRPC status before it touches any state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tonic::Status;

use crate::v1::{
    Container, ContainerConfig, ContainerMetadata, ContainerResources, ContainerState,
    ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest,
    CreateContainerResponse, ExecSyncRequest, ExecSyncResponse, Image, ImageSpec,
    ImageStatusRequest, ImageStatusResponse, ListContainersRequest, ListContainersResponse,
    ListImagesRequest, ListImagesResponse, ListPodSandboxRequest, ListPodSandboxResponse,
    PodSandbox, PodSandboxConfig, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
    PodSandboxStatusRequest, PodSandboxStatusResponse, PullImageRequest, PullImageResponse,
    RemoveContainerRequest, RemoveContainerResponse, RemoveImageRequest, RemoveImageResponse,
    RemovePodSandboxRequest, RemovePodSandboxResponse, ReopenContainerLogRequest,
    ReopenContainerLogResponse, RunPodSandboxRequest, RunPodSandboxResponse, StartContainerRequest,
    StartContainerResponse, StopContainerRequest, StopContainerResponse, StopPodSandboxRequest,
    StopPodSandboxResponse, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
    VersionRequest, VersionResponse,
};
use crate::{CriError, ImageService, Op, RuntimeService};

/// Exit code of a process killed by SIGKILL (128 + 9), as runc reports it.
pub const EXIT_SIGKILL: i32 = 137;
/// Exit code of a process that exited on SIGTERM (128 + 15).
pub const EXIT_SIGTERM: i32 = 143;

/// One call the fake received: which call and the object it was about (the
/// same `target` a [`CriError`] would carry; empty for lists and version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call.
    pub op: Op,
    /// Sandbox id, container id or image reference; empty when none.
    pub target: String,
}

/// An in-memory CRI runtime. See the [module docs](self).
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Source of ids, so they are unique and ordered by creation.
    next_id: u64,
    sandboxes: BTreeMap<String, FakeSandbox>,
    containers: BTreeMap<String, FakeContainer>,
    /// Keyed by image id.
    images: BTreeMap<String, Image>,
    calls: Vec<Call>,
    failures: HashMap<Op, VecDeque<Status>>,
    exec_responses: VecDeque<ExecSyncResponse>,
    /// Every `ExecSync` request with the client-side deadline it carried.
    exec_requests: Vec<(ExecSyncRequest, Duration)>,
}

#[derive(Debug)]
struct FakeSandbox {
    config: PodSandboxConfig,
    runtime_handler: String,
    state: PodSandboxState,
    created_at: i64,
    ip: String,
}

#[derive(Debug)]
struct FakeContainer {
    sandbox_id: String,
    config: ContainerConfig,
    image_id: String,
    state: ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    log_path: String,
}

/// Nanoseconds since the Unix epoch, the CRI's timestamp unit.
fn now_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// Whether every pair of `selector` is among `labels` (the CRI filter rule).
fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The reason containerd gives an exited container that was not OOM-killed.
fn exit_reason(exit_code: i32) -> &'static str {
    if exit_code == 0 { "Completed" } else { "Error" }
}

impl State {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        // 64 hex digits, like containerd's ids.
        format!("{:064x}", self.next_id)
    }

    /// Looks an image up by id, by one of its tags, or by a tag with the
    /// implicit `:latest`, as containerd resolves local references.
    fn find_image(&self, reference: &str) -> Option<&Image> {
        if let Some(image) = self.images.get(reference) {
            return Some(image);
        }
        let latest = format!("{reference}:latest");
        self.images
            .values()
            .find(|i| i.repo_tags.iter().any(|t| *t == reference || *t == latest))
    }

    /// Stores an image under `reference` unless it resolves already, and
    /// returns its id.
    fn add_image(&mut self, reference: &str) -> String {
        if let Some(image) = self.find_image(reference) {
            return image.id.clone();
        }
        let id = format!("sha256:{}", self.new_id());
        let image = Image {
            id: id.clone(),
            repo_tags: vec![reference.to_owned()],
            size: 1 << 20,
            spec: Some(ImageSpec {
                image: id.clone(),
                ..ImageSpec::default()
            }),
            ..Image::default()
        };
        self.images.insert(id.clone(), image);
        id
    }

    fn sandbox(&self, id: &str) -> Result<&FakeSandbox, Status> {
        self.sandboxes
            .get(id)
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut FakeContainer, Status> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }
}

impl FakeContainer {
    /// A running container's process ends with `exit_code`.
    fn exit(&mut self, exit_code: i32, reason: &str) {
        self.state = ContainerState::ContainerExited;
        self.finished_at = now_nanos();
        self.exit_code = exit_code;
        self.reason = reason.to_owned();
    }

    fn status(&self, id: &str) -> ContainerStatus {
        ContainerStatus {
            id: id.to_owned(),
            metadata: self.config.metadata.clone(),
            state: self.state.into(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: self.config.image.clone(),
            image_ref: self.image_id.clone(),
            image_id: self.image_id.clone(),
            reason: self.reason.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            // As containerd: the resources the container was created or
            // last updated with.
            resources: self
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|linux| ContainerResources {
                    linux: Some(linux),
                    windows: None,
                }),
            ..ContainerStatus::default()
        }
    }
}

impl FakeRuntime {
    /// An empty runtime: no sandboxes, containers or images.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked mid-call leaves consistent enough state for
        // the assertions that follow; don't turn one failure into many.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next call of kind `op` fail with `status` (queued: call it
    /// twice to fail the next two). The failing call changes no state.
    pub fn fail_next(&self, op: Op, status: Status) {
        self.lock()
            .failures
            .entry(op)
            .or_default()
            .push_back(status);
    }

    /// Every call received so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of kind `op` were received.
    pub fn call_count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// Puts an image in the local store, as an airgap import would, and
    /// returns its id.
    pub fn add_image(&self, reference: &str) -> String {
        self.lock().add_image(reference)
    }

    /// The container's process exits on its own with `exit_code` (a crash, a
    /// completed job). A no-op unless the container is running.
    pub fn exit_container(&self, id: &str, exit_code: i32) -> Result<(), Status> {
        self.exit_with(id, exit_code, exit_reason(exit_code))
    }

    /// The kernel OOM-kills the container's process.
    pub fn oom_kill_container(&self, id: &str) -> Result<(), Status> {
        self.exit_with(id, EXIT_SIGKILL, "OOMKilled")
    }

    fn exit_with(&self, id: &str, exit_code: i32, reason: &str) -> Result<(), Status> {
        let mut state = self.lock();
        let container = state.container_mut(id)?;
        if container.state == ContainerState::ContainerRunning {
            container.exit(exit_code, reason);
        }
        Ok(())
    }

    /// Queues the answer of a future `ExecSync`; without one, an exec
    /// succeeds with exit code 0 and no output.
    pub fn push_exec_response(&self, response: ExecSyncResponse) {
        self.lock().exec_responses.push_back(response);
    }

    /// Every `ExecSync` request received so far (failed ones included), with
    /// the client-side deadline the caller passed, oldest first.
    pub fn exec_requests(&self) -> Vec<(ExecSyncRequest, Duration)> {
        self.lock().exec_requests.clone()
    }

    /// Records the call, then applies `f` to the state unless a failure was
    /// queued for `op`. One lock for the whole call keeps calls atomic.
    fn call<T>(
        &self,
        op: Op,
        target: &str,
        f: impl FnOnce(&mut State) -> Result<T, Status>,
    ) -> Result<T, CriError> {
        let mut state = self.lock();
        state.calls.push(Call {
            op,
            target: target.to_owned(),
        });
        let injected = state.failures.get_mut(&op).and_then(VecDeque::pop_front);
        let result = match injected {
            Some(status) => Err(status),
            None => f(&mut state),
        };
        result.map_err(|status| CriError::rpc(op, target, status))
    }
}

/// The stream flags containerd accepts for `Exec` and `Attach`: at least one
/// stream, and no separate stderr on a terminal.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    Ok(())
}

/// A streaming URL for a running container (`kind` is `exec` or `attach`).
/// Nothing listens there: the fake only proves the agent asked correctly.
fn streaming_url(state: &mut State, id: &str, kind: &str) -> Result<String, Status> {
    let container = state.container_mut(id)?;
    if container.state != ContainerState::ContainerRunning {
        return Err(Status::failed_precondition(format!(
            "container {id:?} is not running"
        )));
    }
    let token = state.new_id();
    Ok(format!("http://streaming.fake.invalid/{kind}/{token}"))
}

fn image_target(spec: Option<&ImageSpec>) -> &str {
    spec.map(|s| s.image.as_str()).unwrap_or_default()
}

#[async_trait]
impl RuntimeService for FakeRuntime {
    async fn version(&self, _req: VersionRequest) -> Result<VersionResponse, CriError> {
        self.call(Op::Version, "", |_| {
            Ok(VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "fake".into(),
                runtime_version: "0.1.0".into(),
                runtime_api_version: "v1".into(),
            })
        })
    }

    async fn run_pod_sandbox(
        &self,
        req: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, CriError> {
        let metadata = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.clone())
            .unwrap_or_default();
        let target = format!("{}/{}", metadata.namespace, metadata.name);
        self.call(Op::RunPodSandbox, &target, |state| {
            let config = req
                .config
                .ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
            if metadata.name.is_empty() || metadata.namespace.is_empty() || metadata.uid.is_empty()
            {
                return Err(Status::invalid_argument(
                    "sandbox metadata needs name, namespace and uid",
                ));
            }
            // containerd reserves one name per (name, namespace, uid, attempt).
            let taken = state
                .sandboxes
                .values()
                .any(|s| s.config.metadata.as_ref() == Some(&metadata));
            if taken {
                return Err(Status::already_exists(format!(
                    "sandbox name {target} attempt {} is reserved",
                    metadata.attempt
                )));
            }
            let id = state.new_id();
            let host_network = config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref())
                .is_some_and(|n| n.network == crate::v1::NamespaceMode::Node as i32);
            let ip = if host_network {
                String::new()
            } else {
                // One address per sandbox from 10.88.0.0/16, like the
                // default CNI bridge network.
                let n = state.next_id;
                format!("10.88.{}.{}", (n / 250) % 256, n % 250 + 2)
            };
            state.sandboxes.insert(
                id.clone(),
                FakeSandbox {
                    config,
                    runtime_handler: req.runtime_handler,
                    state: PodSandboxState::SandboxReady,
                    created_at: now_nanos(),
                    ip,
                },
            );
            Ok(RunPodSandboxResponse { pod_sandbox_id: id })
        })
    }

    async fn stop_pod_sandbox(
        &self,
        req: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, CriError> {
        let id = req.pod_sandbox_id;
        self.call(Op::StopPodSandbox, &id, |state| {
            let sandbox = state
                .sandboxes
                .get_mut(&id)
                .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))?;
            sandbox.state = PodSandboxState::SandboxNotready;
            // Containers left running are killed with the sandbox.
            let running = state
                .containers
                .values_mut()
                .filter(|c| c.sandbox_id == id && c.state == ContainerState::ContainerRunning);
            for container in running {
                container.exit(EXIT_SIGKILL, "Error");
            }
            Ok(StopPodSandboxResponse {})
        })
    }

    async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, CriError> {
        let id = req.pod_sandbox_id;
        self.call(Op::RemovePodSandbox, &id, |state| {
            state.containers.retain(|_, c| c.sandbox_id != id);
            state.sandboxes.remove(&id);
            Ok(RemovePodSandboxResponse {})
        })
    }

    async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        let id = req.pod_sandbox_id;
        self.call(Op::PodSandboxStatus, &id, |state| {
            let sandbox = state.sandbox(&id)?;
            let network = (!sandbox.ip.is_empty()).then(|| PodSandboxNetworkStatus {
                ip: sandbox.ip.clone(),
                additional_ips: Vec::new(),
            });
            Ok(PodSandboxStatusResponse {
                status: Some(PodSandboxStatus {
                    id: id.clone(),
                    metadata: sandbox.config.metadata.clone(),
                    state: sandbox.state.into(),
                    created_at: sandbox.created_at,
                    network,
                    labels: sandbox.config.labels.clone(),
                    annotations: sandbox.config.annotations.clone(),
                    runtime_handler: sandbox.runtime_handler.clone(),
                    ..PodSandboxStatus::default()
                }),
                timestamp: now_nanos(),
                ..PodSandboxStatusResponse::default()
            })
        })
    }

    async fn list_pod_sandbox(
        &self,
        req: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, CriError> {
        self.call(Op::ListPodSandbox, "", |state| {
            let filter = req.filter.unwrap_or_default();
            let items = state
                .sandboxes
                .iter()
                .filter(|(id, s)| {
                    (filter.id.is_empty() || **id == filter.id)
                        && filter
                            .state
                            .as_ref()
                            .is_none_or(|want| want.state == i32::from(s.state))
                        && labels_match(&filter.label_selector, &s.config.labels)
                })
                .map(|(id, s)| PodSandbox {
                    id: id.clone(),
                    metadata: s.config.metadata.clone(),
                    state: s.state.into(),
                    created_at: s.created_at,
                    labels: s.config.labels.clone(),
                    annotations: s.config.annotations.clone(),
                    runtime_handler: s.runtime_handler.clone(),
                })
                .collect();
            Ok(ListPodSandboxResponse { items })
        })
    }

    async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, CriError> {
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let target = format!("{}/{name}", req.pod_sandbox_id);
        self.call(Op::CreateContainer, &target, |state| {
            let config = req
                .config
                .ok_or_else(|| Status::invalid_argument("container config is required"))?;
            let metadata: ContainerMetadata = config
                .metadata
                .clone()
                .filter(|m| !m.name.is_empty())
                .ok_or_else(|| Status::invalid_argument("container metadata needs a name"))?;
            let sandbox = state.sandbox(&req.pod_sandbox_id)?;
            if sandbox.state != PodSandboxState::SandboxReady {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {:?} is not ready",
                    req.pod_sandbox_id
                )));
            }
            let log_dir = sandbox.config.log_directory.clone();
            let reference = image_target(config.image.as_ref());
            let image_id = state
                .find_image(reference)
                .map(|i| i.id.clone())
                .ok_or_else(|| Status::not_found(format!("image {reference:?} not found")))?;
            let taken = state.containers.values().any(|c| {
                c.sandbox_id == req.pod_sandbox_id && c.config.metadata.as_ref() == Some(&metadata)
            });
            if taken {
                return Err(Status::already_exists(format!(
                    "container name {name:?} attempt {} is reserved",
                    metadata.attempt
                )));
            }
            let log_path = if log_dir.is_empty() || config.log_path.is_empty() {
                String::new()
            } else {
                format!("{log_dir}/{}", config.log_path)
            };
            let id = state.new_id();
            state.containers.insert(
                id.clone(),
                FakeContainer {
                    sandbox_id: req.pod_sandbox_id,
                    config,
                    image_id,
                    state: ContainerState::ContainerCreated,
                    created_at: now_nanos(),
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                    log_path,
                },
            );
            Ok(CreateContainerResponse { container_id: id })
        })
    }

    async fn start_container(
        &self,
        req: StartContainerRequest,
    ) -> Result<StartContainerResponse, CriError> {
        let id = req.container_id;
        self.call(Op::StartContainer, &id, |state| {
            let container = state.container_mut(&id)?;
            if container.state != ContainerState::ContainerCreated {
                return Err(Status::failed_precondition(format!(
                    "container {id:?} is in {} state",
                    container.state.as_str_name()
                )));
            }
            container.state = ContainerState::ContainerRunning;
            container.started_at = now_nanos();
            Ok(StartContainerResponse {})
        })
    }

    async fn stop_container(
        &self,
        req: StopContainerRequest,
    ) -> Result<StopContainerResponse, CriError> {
        let id = req.container_id;
        self.call(Op::StopContainer, &id, |state| {
            let container = state.container_mut(&id)?;
            if container.state == ContainerState::ContainerRunning {
                // With a grace period the process is taken to exit on the stop
                // signal; with none it is killed outright.
                let code = if req.timeout > 0 {
                    EXIT_SIGTERM
                } else {
                    EXIT_SIGKILL
                };
                container.exit(code, "Error");
            }
            Ok(StopContainerResponse {})
        })
    }

    async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, CriError> {
        let id = req.container_id;
        self.call(Op::RemoveContainer, &id, |state| {
            state.containers.remove(&id);
            Ok(RemoveContainerResponse {})
        })
    }

    async fn list_containers(
        &self,
        req: ListContainersRequest,
    ) -> Result<ListContainersResponse, CriError> {
        self.call(Op::ListContainers, "", |state| {
            let filter = req.filter.unwrap_or_default();
            let containers = state
                .containers
                .iter()
                .filter(|(id, c)| {
                    (filter.id.is_empty() || **id == filter.id)
                        && (filter.pod_sandbox_id.is_empty()
                            || c.sandbox_id == filter.pod_sandbox_id)
                        && filter
                            .state
                            .as_ref()
                            .is_none_or(|want| want.state == i32::from(c.state))
                        && labels_match(&filter.label_selector, &c.config.labels)
                })
                .map(|(id, c)| Container {
                    id: id.clone(),
                    pod_sandbox_id: c.sandbox_id.clone(),
                    metadata: c.config.metadata.clone(),
                    image: c.config.image.clone(),
                    image_ref: c.image_id.clone(),
                    image_id: c.image_id.clone(),
                    state: c.state.into(),
                    created_at: c.created_at,
                    labels: c.config.labels.clone(),
                    annotations: c.config.annotations.clone(),
                })
                .collect();
            Ok(ListContainersResponse { containers })
        })
    }

    async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, CriError> {
        let id = req.container_id;
        self.call(Op::UpdateContainerResources, &id, |state| {
            let container = state.container_mut(&id)?;
            if !matches!(
                container.state,
                ContainerState::ContainerCreated | ContainerState::ContainerRunning
            ) {
                return Err(Status::failed_precondition(format!(
                    "container {id:?} is in {} state",
                    container.state.as_str_name()
                )));
            }
            if let Some(linux) = req.linux {
                container.config.linux.get_or_insert_default().resources = Some(linux);
            }
            Ok(UpdateContainerResourcesResponse {})
        })
    }

    async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, CriError> {
        let id = req.container_id;
        self.call(Op::ContainerStatus, &id, |state| {
            let container = state.container_mut(&id)?;
            Ok(ContainerStatusResponse {
                status: Some(container.status(&id)),
                ..ContainerStatusResponse::default()
            })
        })
    }

    async fn exec_sync(
        &self,
        req: ExecSyncRequest,
        deadline: Duration,
    ) -> Result<ExecSyncResponse, CriError> {
        self.lock().exec_requests.push((req.clone(), deadline));
        let id = req.container_id;
        self.call(Op::ExecSync, &id, |state| {
            let container = state.container_mut(&id)?;
            if container.state != ContainerState::ContainerRunning {
                return Err(Status::failed_precondition(format!(
                    "container {id:?} is not running"
                )));
            }
            Ok(state.exec_responses.pop_front().unwrap_or_default())
        })
    }

    async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, CriError> {
        let id = req.container_id;
        self.call(Op::ReopenContainerLog, &id, |state| {
            let container = state.container_mut(&id)?;
            if container.state != ContainerState::ContainerRunning {
                return Err(Status::failed_precondition(format!(
                    "container {id:?} is not running"
                )));
            }
            // As containerd does: a fresh file at the log path, which the
            // agent has just renamed away.
            if !container.log_path.is_empty() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&container.log_path)
                    .map_err(|e| Status::internal(format!("reopening the log: {e}")))?;
            }
            Ok(ReopenContainerLogResponse {})
        })
    }

    async fn exec(&self, req: crate::v1::ExecRequest) -> Result<crate::v1::ExecResponse, CriError> {
        let id = req.container_id;
        self.call(Op::Exec, &id, |state| {
            if req.cmd.is_empty() {
                return Err(Status::invalid_argument("cmd must not be empty"));
            }
            check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
            streaming_url(state, &id, "exec")
        })
        .map(|url| crate::v1::ExecResponse { url })
    }

    async fn attach(
        &self,
        req: crate::v1::AttachRequest,
    ) -> Result<crate::v1::AttachResponse, CriError> {
        let id = req.container_id;
        self.call(Op::Attach, &id, |state| {
            check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
            streaming_url(state, &id, "attach")
        })
        .map(|url| crate::v1::AttachResponse { url })
    }
}

#[async_trait]
impl ImageService for FakeRuntime {
    async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse, CriError> {
        self.call(Op::ListImages, "", |state| {
            let wanted = req.filter.and_then(|f| f.image).map(|s| s.image);
            let images = match wanted.as_deref() {
                Some(reference) if !reference.is_empty() => {
                    state.find_image(reference).cloned().into_iter().collect()
                }
                _ => state.images.values().cloned().collect(),
            };
            Ok(ListImagesResponse { images })
        })
    }

    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse, CriError> {
        let reference = image_target(req.image.as_ref()).to_owned();
        self.call(Op::ImageStatus, &reference, |state| {
            Ok(ImageStatusResponse {
                image: state.find_image(&reference).cloned(),
                ..ImageStatusResponse::default()
            })
        })
    }

    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse, CriError> {
        let reference = image_target(req.image.as_ref()).to_owned();
        self.call(Op::PullImage, &reference, |state| {
            if reference.is_empty() {
                return Err(Status::invalid_argument("image reference is required"));
            }
            Ok(PullImageResponse {
                image_ref: state.add_image(&reference),
            })
        })
    }

    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse, CriError> {
        let reference = image_target(req.image.as_ref()).to_owned();
        self.call(Op::RemoveImage, &reference, |state| {
            if let Some(id) = state.find_image(&reference).map(|i| i.id.clone()) {
                state.images.remove(&id);
            }
            Ok(RemoveImageResponse {})
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::*;
    use crate::v1::{ContainerFilter, ContainerStateValue, PodSandboxFilter, PodSandboxStateValue};

    const IMAGE: &str = "docker.io/library/busybox:1.36";

    fn sandbox_config(name: &str, attempt: u32) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(crate::v1::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt,
            }),
            log_directory: format!("/var/log/pods/default_{name}"),
            labels: [("pod".to_owned(), name.to_owned())].into(),
            ..PodSandboxConfig::default()
        }
    }

    async fn run_sandbox(fake: &FakeRuntime, name: &str) -> String {
        fake.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config(name, 0)),
            runtime_handler: String::new(),
        })
        .await
        .expect("run sandbox")
        .pod_sandbox_id
    }

    fn container_request(sandbox_id: &str, name: &str, image: &str) -> CreateContainerRequest {
        CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..ImageSpec::default()
                }),
                log_path: format!("{name}/0.log"),
                ..ContainerConfig::default()
            }),
            sandbox_config: None,
        }
    }

    async fn create(fake: &FakeRuntime, sandbox_id: &str, name: &str) -> String {
        fake.create_container(container_request(sandbox_id, name, IMAGE))
            .await
            .expect("create container")
            .container_id
    }

    async fn start(fake: &FakeRuntime, id: &str) -> Result<StartContainerResponse, CriError> {
        fake.start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
    }

    async fn status(fake: &FakeRuntime, id: &str) -> ContainerStatus {
        fake.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("container status")
        .status
        .expect("status present")
    }

    fn state_of(status: &ContainerStatus) -> ContainerState {
        ContainerState::try_from(status.state).expect("known state")
    }

    #[tokio::test]
    async fn resources_update_in_place_and_show_in_the_status() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let sandbox = run_sandbox(&fake, "web").await;
        let id = create(&fake, &sandbox, "app").await;
        start(&fake, &id).await.expect("start");
        assert_eq!(status(&fake, &id).await.resources, None);
        let linux = crate::v1::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 256 << 20,
            ..crate::v1::LinuxContainerResources::default()
        };
        fake.update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(linux.clone()),
            ..UpdateContainerResourcesRequest::default()
        })
        .await
        .expect("update");
        let reported = status(&fake, &id).await.resources.and_then(|r| r.linux);
        assert_eq!(reported, Some(linux));
        assert_eq!(fake.call_count(Op::UpdateContainerResources), 1);

        // An exited container cannot be updated.
        fake.exit_container(&id, 0).expect("exit");
        let err = fake
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id,
                ..UpdateContainerResourcesRequest::default()
            })
            .await
            .expect_err("exited");
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn container_goes_created_running_exited() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let sandbox = run_sandbox(&fake, "web").await;
        let id = create(&fake, &sandbox, "app").await;

        let created = status(&fake, &id).await;
        assert_eq!(state_of(&created), ContainerState::ContainerCreated);
        assert_eq!(created.started_at, 0);
        assert_eq!(created.log_path, "/var/log/pods/default_web/app/0.log");

        start(&fake, &id).await.expect("start");
        let running = status(&fake, &id).await;
        assert_eq!(state_of(&running), ContainerState::ContainerRunning);
        assert!(running.started_at >= running.created_at);

        fake.exit_container(&id, 3).expect("exit");
        let exited = status(&fake, &id).await;
        assert_eq!(state_of(&exited), ContainerState::ContainerExited);
        assert_eq!(exited.exit_code, 3);
        assert_eq!(exited.reason, "Error");
        assert!(exited.finished_at >= exited.started_at);

        // An exited container cannot be started again; a new attempt is a
        // new container.
        let err = start(&fake, &id).await.expect_err("restart refused");
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn stop_uses_the_grace_period_and_is_idempotent() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let sandbox = run_sandbox(&fake, "web").await;
        let graceful = create(&fake, &sandbox, "graceful").await;
        let killed = create(&fake, &sandbox, "killed").await;
        start(&fake, &graceful).await.expect("start");
        start(&fake, &killed).await.expect("start");

        for (id, timeout) in [(&graceful, 30), (&killed, 0), (&killed, 0)] {
            fake.stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout,
            })
            .await
            .expect("stop");
        }
        assert_eq!(status(&fake, &graceful).await.exit_code, EXIT_SIGTERM);
        assert_eq!(status(&fake, &killed).await.exit_code, EXIT_SIGKILL);

        let err = fake
            .stop_container(StopContainerRequest {
                container_id: "missing".into(),
                timeout: 0,
            })
            .await
            .expect_err("unknown container");
        assert!(err.is_not_found());
    }

    #[tokio::test]
    async fn create_needs_a_ready_sandbox_a_local_image_and_a_free_name() {
        let fake = FakeRuntime::new();
        let sandbox = run_sandbox(&fake, "web").await;

        let err = fake
            .create_container(container_request(&sandbox, "app", IMAGE))
            .await
            .expect_err("image not pulled");
        assert!(err.is_not_found());

        fake.add_image(IMAGE);
        create(&fake, &sandbox, "app").await;
        let err = fake
            .create_container(container_request(&sandbox, "app", IMAGE))
            .await
            .expect_err("same name and attempt");
        assert_eq!(err.code(), Code::AlreadyExists);

        let err = fake
            .create_container(container_request("no-such-sandbox", "app", IMAGE))
            .await
            .expect_err("unknown sandbox");
        assert!(err.is_not_found());

        fake.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .expect("stop sandbox");
        let err = fake
            .create_container(container_request(&sandbox, "late", IMAGE))
            .await
            .expect_err("sandbox stopped");
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn sandbox_stop_kills_its_containers_and_remove_clears_them() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let web = run_sandbox(&fake, "web").await;
        let db = run_sandbox(&fake, "db").await;
        let app = create(&fake, &web, "app").await;
        let other = create(&fake, &db, "postgres").await;
        start(&fake, &app).await.expect("start");
        start(&fake, &other).await.expect("start");

        let err = fake
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config("web", 0)),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("name reserved");
        assert_eq!(err.code(), Code::AlreadyExists);

        fake.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: web.clone(),
        })
        .await
        .expect("stop");
        assert_eq!(
            state_of(&status(&fake, &app).await),
            ContainerState::ContainerExited
        );
        assert_eq!(
            state_of(&status(&fake, &other).await),
            ContainerState::ContainerRunning
        );

        let not_ready = fake
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    state: Some(PodSandboxStateValue {
                        state: PodSandboxState::SandboxNotready.into(),
                    }),
                    ..PodSandboxFilter::default()
                }),
            })
            .await
            .expect("list")
            .items;
        assert_eq!(not_ready.len(), 1);
        assert_eq!(not_ready[0].id, web);

        for _ in 0..2 {
            fake.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: web.clone(),
            })
            .await
            .expect("remove is idempotent");
        }
        let left = fake
            .list_containers(ListContainersRequest::default())
            .await
            .expect("list")
            .containers;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, other);
        let err = fake
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: web,
                verbose: false,
            })
            .await
            .expect_err("removed");
        assert!(err.is_not_found());
    }

    #[tokio::test]
    async fn list_containers_filters_by_sandbox_state_and_labels() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let web = run_sandbox(&fake, "web").await;
        let db = run_sandbox(&fake, "db").await;
        let mut labelled = container_request(&web, "app", IMAGE);
        if let Some(config) = labelled.config.as_mut() {
            config.labels = [("tier".to_owned(), "front".to_owned())].into();
        }
        let app = fake
            .create_container(labelled)
            .await
            .expect("create")
            .container_id;
        let sidecar = create(&fake, &web, "sidecar").await;
        create(&fake, &db, "postgres").await;
        start(&fake, &sidecar).await.expect("start");

        let list = |filter: ContainerFilter| {
            let fake = &fake;
            async move {
                let mut ids: Vec<String> = fake
                    .list_containers(ListContainersRequest {
                        filter: Some(filter),
                    })
                    .await
                    .expect("list")
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        let mut in_web = vec![app.clone(), sidecar.clone()];
        in_web.sort();
        assert_eq!(
            list(ContainerFilter {
                pod_sandbox_id: web.clone(),
                ..ContainerFilter::default()
            })
            .await,
            in_web
        );
        assert_eq!(
            list(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning.into(),
                }),
                ..ContainerFilter::default()
            })
            .await,
            vec![sidecar]
        );
        assert_eq!(
            list(ContainerFilter {
                label_selector: [("tier".to_owned(), "front".to_owned())].into(),
                ..ContainerFilter::default()
            })
            .await,
            vec![app]
        );
    }

    #[tokio::test]
    async fn injected_failure_hits_only_the_next_call_and_changes_nothing() {
        let fake = Arc::new(FakeRuntime::new());
        let runtime: Arc<dyn RuntimeService> = fake.clone();
        fake.fail_next(Op::RunPodSandbox, Status::unknown("cni plugin failed"));

        let err = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config("web", 0)),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("injected");
        assert_eq!(err.code(), Code::Unknown);
        let listed = runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("list");
        assert!(listed.items.is_empty());

        run_sandbox(&fake, "web").await;
        assert_eq!(fake.call_count(Op::RunPodSandbox), 2);
        let ops: Vec<Op> = fake.calls().into_iter().map(|c| c.op).collect();
        assert_eq!(
            ops,
            [Op::RunPodSandbox, Op::ListPodSandbox, Op::RunPodSandbox]
        );
        assert_eq!(fake.calls()[0].target, "default/web");
    }

    #[tokio::test]
    async fn oom_kill_and_exec_on_exited_container() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let sandbox = run_sandbox(&fake, "web").await;
        let id = create(&fake, &sandbox, "app").await;
        start(&fake, &id).await.expect("start");

        let exec = ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            timeout: 1,
        };
        let ok = fake
            .exec_sync(exec.clone(), Duration::from_secs(1))
            .await
            .expect("exec in running container");
        assert_eq!(ok.exit_code, 0);

        fake.oom_kill_container(&id).expect("oom");
        let oom = status(&fake, &id).await;
        assert_eq!(oom.reason, "OOMKilled");
        assert_eq!(oom.exit_code, EXIT_SIGKILL);

        let err = fake
            .exec_sync(exec, Duration::from_secs(1))
            .await
            .expect_err("not running");
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn images_pull_resolve_and_remove() {
        let fake = FakeRuntime::new();
        let image_status = |reference: &str| {
            let fake = &fake;
            let request = ImageStatusRequest {
                image: Some(ImageSpec {
                    image: reference.into(),
                    ..ImageSpec::default()
                }),
                verbose: false,
            };
            async move {
                fake.image_status(request)
                    .await
                    .expect("image status")
                    .image
            }
        };
        assert!(image_status("busybox").await.is_none());

        let pulled = fake
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: "busybox:latest".into(),
                    ..ImageSpec::default()
                }),
                ..PullImageRequest::default()
            })
            .await
            .expect("pull")
            .image_ref;
        // By tag, by the implicit `:latest`, and by id.
        for reference in ["busybox:latest", "busybox", pulled.as_str()] {
            let found = image_status(reference).await.expect("present");
            assert_eq!(found.id, pulled);
        }
        // Pulling again keeps one image.
        assert_eq!(fake.add_image("busybox:latest"), pulled);
        let all = fake
            .list_images(ListImagesRequest::default())
            .await
            .expect("list");
        assert_eq!(all.images.len(), 1);

        for _ in 0..2 {
            fake.remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: "busybox".into(),
                    ..ImageSpec::default()
                }),
            })
            .await
            .expect("remove is idempotent");
        }
        assert!(image_status("busybox").await.is_none());
    }

    #[tokio::test]
    async fn exec_and_attach_hand_out_urls_for_running_containers_only() {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        let sandbox = run_sandbox(&fake, "web").await;
        let id = create(&fake, &sandbox, "app").await;
        let exec = crate::v1::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into()],
            stdin: true,
            stdout: true,
            tty: true,
            ..crate::v1::ExecRequest::default()
        };
        let err = fake.exec(exec.clone()).await.expect_err("not started");
        assert_eq!(err.code(), Code::FailedPrecondition);

        start(&fake, &id).await.expect("start");
        let url = fake.exec(exec.clone()).await.expect("exec").url;
        assert!(
            url.starts_with("http://") && url.contains("/exec/"),
            "{url}"
        );
        let again = fake.exec(exec.clone()).await.expect("exec").url;
        assert_ne!(url, again, "each session gets its own URL");

        // containerd's rules: a terminal has no separate stderr, and some
        // stream must be asked for.
        let err = fake
            .exec(crate::v1::ExecRequest {
                stderr: true,
                ..exec.clone()
            })
            .await
            .expect_err("tty and stderr");
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = fake
            .attach(crate::v1::AttachRequest {
                container_id: id.clone(),
                ..crate::v1::AttachRequest::default()
            })
            .await
            .expect_err("no streams");
        assert_eq!(err.code(), Code::InvalidArgument);

        let url = fake
            .attach(crate::v1::AttachRequest {
                container_id: id.clone(),
                stdout: true,
                ..crate::v1::AttachRequest::default()
            })
            .await
            .expect("attach")
            .url;
        assert!(url.contains("/attach/"), "{url}");
        assert_eq!(fake.call_count(Op::Exec), 4);
        assert_eq!(fake.call_count(Op::Attach), 2);
    }
}
