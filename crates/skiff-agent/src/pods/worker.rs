//! Syncing one pod: make the runtime match the pod spec, then report status.
//!
//! Each sync is level-triggered: it reads what the runtime holds now, takes
//! at most one step per container (start, restart, kill), and reports the
//! status. It is called again on any change (pod update, container exit,
//! probe result) and on a timer, so a step that fails is simply retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use skiff_client::events::EventType;
use skiff_cri::v1::{
    CreateContainerRequest, ImageSpec, ImageStatusRequest, PodSandboxConfig, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest,
};

use super::Shared;
use super::backoff;
use super::pull::{self, PullPolicy};
use super::resize::{self, Action, CgroupResources, ResizeState};
use super::runtime::{ContainerRecord, PodRuntime};
use super::status::{self, Phase, StatusInput, Waiting, is_sidecar, restart_policy};
use crate::probes::ProbeTarget;

/// How soon to sync again while something is in progress.
const SOON: Duration = Duration::from_secs(1);
/// How often to sync a steady pod (configMap/secret volumes follow updates
/// at this pace).
pub const RESYNC: Duration = Duration::from_secs(10);
/// How long a failed pull is reported as ErrImagePull before
/// ImagePullBackOff (half the first back-off, so both are seen).
const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(5);

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What a sync asks of the worker loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Sync again after this long, or sooner on a change.
    After(Duration),
    /// Everything of the pod is gone; the worker can stop.
    Done,
}

/// Per-pod memory of a worker, lost on agent restart (and rebuilt from the
/// runtime where it matters).
#[derive(Default)]
pub struct PodMemory {
    /// Why containers wait, as last seen.
    waiting: HashMap<String, Waiting>,
    /// The last status sent, to skip identical writes.
    last_status: Option<serde_json::Value>,
    /// Containers killed because a probe failed, by CRI id, so the kill is
    /// done once.
    killed: Vec<String>,
    /// Whether the sandbox's network was reported, for the probe targets.
    probes_registered: HashMap<String, String>,
    /// Why the agent failed the pod itself (`DeadlineExceeded`), with the
    /// message for `status.reason`/`status.message`.
    failed: Option<(&'static str, String)>,
    /// Where an in-place resize stands, as the last sync saw it.
    resize: ResizeState,
}

/// Which list of the spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    App,
}

fn field_path(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Init => format!("spec.initContainers{{{name}}}"),
        Kind::App => format!("spec.containers{{{name}}}"),
    }
}

/// A reference to the pod (or one of its containers) for events.
pub fn pod_reference(pod: &Pod, field: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: field,
    }
}

fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

impl Shared {
    fn event(&self, pod: &Pod, field: Option<String>, kind: EventType, reason: &str, msg: &str) {
        self.recorder
            .record(&pod_reference(pod, field), kind, reason, msg);
    }

    /// One sync of `pod`; `None` when the pod is gone from the API and only
    /// its leftovers in the runtime remain (`last` is its last known state).
    pub async fn sync_pod(
        &self,
        pod: Option<&Pod>,
        last: Option<&Pod>,
        pod_uid: &str,
        memory: &mut PodMemory,
    ) -> Next {
        match self.try_sync(pod, last, pod_uid, memory).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(pod = pod_uid, error = %e, "pod sync failed; retrying");
                Next::After(Duration::from_secs(2))
            }
        }
    }

    async fn try_sync(
        &self,
        pod: Option<&Pod>,
        last: Option<&Pod>,
        pod_uid: &str,
        memory: &mut PodMemory,
    ) -> Result<Next, SyncError> {
        let runtime = self.view.pod(pod_uid).await?;
        let Some(pod) = pod else {
            // Gone from the API (force-deleted, or left over from before a
            // restart): stop and remove everything.
            let grace = last.map_or(0, grace_seconds);
            self.kill_pod(last, &runtime, grace).await?;
            self.remove_pod_runtime(pod_uid, &runtime).await?;
            return Ok(Next::Done);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(pod, &runtime, memory).await;
        }
        let evicted = super::lock(&self.evicted).get(pod_uid).cloned();
        if let Some(message) = evicted {
            // The eviction manager posted the event; fail and stop the pod,
            // and free the disk its volumes hold, as upstream tears down
            // the volumes of a terminated pod.
            memory.failed = Some((crate::eviction::REASON, message));
            self.kill_pod(Some(pod), &runtime, crate::eviction::GRACE_PERIOD_SECONDS)
                .await?;
            self.volumes
                .cleanup(pod_uid)
                .await
                .map_err(|e| SyncError::Config(e.to_string()))?;
            self.report(pod, memory, true).await?;
            return Ok(Next::After(RESYNC));
        }
        let current_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(current_phase, Some("Succeeded" | "Failed")) {
            // Terminal pods run nothing. Their status is still reported: a
            // container's exit reason can settle after the exit (OOMKilled).
            if runtime.any_running() {
                self.kill_pod(Some(pod), &runtime, grace_seconds(pod))
                    .await?;
            }
            self.report(pod, memory, true).await?;
            return Ok(Next::After(RESYNC));
        }
        let deadline_left = active_deadline_left(pod, jiff::Timestamp::now());
        if deadline_left.is_some_and(|left| left.is_zero()) {
            let message = "Pod was active on the node longer than the specified deadline";
            self.event(pod, None, EventType::Normal, "DeadlineExceeded", message);
            memory.failed = Some(("DeadlineExceeded", message.to_string()));
            self.kill_pod(Some(pod), &runtime, grace_seconds(pod))
                .await?;
            self.report(pod, memory, true).await?;
            return Ok(Next::After(RESYNC));
        }

        let mut progressing = false;
        let sandbox = match runtime.ready_sandbox() {
            Some(sandbox) => sandbox.clone(),
            None => {
                if self.sandbox_finished(pod, &runtime) {
                    return self.report(pod, memory, true).await;
                }
                self.recreate_sandbox(pod, &runtime).await?;
                return Ok(Next::After(Duration::ZERO));
            }
        };
        let sandbox_config = self.sandbox_config(pod, sandbox.attempt)?;

        let volumes = match self
            .volumes
            .prepare(pod, self.objects.as_ref(), &self.config.node_allocatable)
            .await
        {
            Ok(volumes) => volumes,
            Err(e) => {
                for message in e.event_messages() {
                    self.event(pod, None, EventType::Warning, "FailedMount", &message);
                }
                let _ = self.report(pod, memory, false).await;
                return Ok(Next::After(Duration::from_secs(5)));
            }
        };

        let hosts_file = self.write_etc_hosts(pod, sandbox.ip).await?;
        let run = SandboxRun {
            config: &sandbox_config,
            id: &sandbox.id,
            ip: sandbox.ip,
            volumes: &volumes,
            hosts_file: hosts_file.as_deref(),
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(pod).to_string();
        memory.resize = self.resize_admission(pod);

        // Init containers, in order: each must finish (or, for a sidecar,
        // start) before the next one runs.
        let mut init_blocked = false;
        // A regular init container that succeeded never runs again; one that
        // failed is retried unless the pod never restarts. Sidecars always
        // restart.
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        for container in spec.init_containers.as_deref().unwrap_or_default() {
            let latest = runtime.latest(&sandbox.id, &container.name);
            let sidecar = is_sidecar(container);
            let step = self
                .step_container(
                    pod,
                    container,
                    Kind::Init,
                    latest,
                    &run,
                    memory,
                    if sidecar { "Always" } else { init_policy },
                )
                .await?;
            progressing |= step.progressing;
            let done = if sidecar {
                step.running && self.probes.started(pod_uid, &container.name)
            } else {
                latest.is_some_and(|c| c.exited() && c.exit_code == 0)
            };
            if !done {
                init_blocked = true;
                break;
            }
        }
        if !init_blocked {
            for container in &spec.containers {
                let latest = runtime.latest(&sandbox.id, &container.name);
                let step = self
                    .step_container(pod, container, Kind::App, latest, &run, memory, &policy)
                    .await?;
                progressing |= step.progressing;
            }
        }
        self.report(pod, memory, false).await?;
        let next = if progressing { SOON } else { RESYNC };
        // Wake up when the active deadline passes, not a resync later.
        Ok(Next::After(
            deadline_left.map_or(next, |left| next.min(left)),
        ))
    }

    /// Whether a pod whose sandbox is gone should stay down: every app
    /// container ran and none restarts under the policy.
    fn sandbox_finished(&self, pod: &Pod, runtime: &PodRuntime) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(pod);
        !runtime.sandboxes.is_empty()
            && policy != "Always"
            && spec.containers.iter().all(|c| {
                runtime
                    .latest_anywhere(&c.name)
                    .is_some_and(|r| r.exited() && (policy == "Never" || r.exit_code == 0))
            })
    }

    fn sandbox_config(&self, pod: &Pod, attempt: u32) -> Result<PodSandboxConfig, SyncError> {
        crate::config::sandbox_config(pod, attempt, &self.config.sandbox)
            .map_err(|e| SyncError::Config(e.to_string()))
    }

    async fn recreate_sandbox(&self, pod: &Pod, runtime: &PodRuntime) -> Result<(), SyncError> {
        // Whatever is left of earlier sandboxes goes first.
        self.kill_pod(Some(pod), runtime, 0).await?;
        for sandbox in &runtime.sandboxes {
            self.runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                })
                .await?;
        }
        let attempt = runtime.sandboxes.first().map_or(0, |s| s.attempt + 1);
        if attempt > 0 {
            self.event(
                pod,
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            );
        }
        let config = self.sandbox_config(pod, attempt)?;
        if let Err(e) = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        {
            let message = format!("Failed to create pod sandbox: {e}");
            self.event(
                pod,
                None,
                EventType::Warning,
                "FailedCreatePodSandBox",
                &message,
            );
            return Err(e.into());
        }
        Ok(())
    }

    /// One step for one container: start it, restart it, kill it after a
    /// failed liveness probe, or leave it.
    #[allow(clippy::too_many_arguments)]
    async fn step_container(
        &self,
        pod: &Pod,
        container: &Container,
        kind: Kind,
        latest: Option<&ContainerRecord>,
        run: &SandboxRun<'_>,
        memory: &mut PodMemory,
        policy: &str,
    ) -> Result<Step, SyncError> {
        let pod_uid = uid(pod);
        let name = container.name.as_str();
        let key = format!("{pod_uid}/{name}");
        if let Some(record) = latest.filter(|r| r.running()) {
            memory.waiting.remove(name);
            if memory.probes_registered.get(name) != Some(&record.id) {
                let target = ProbeTarget {
                    pod_ip: run.ip,
                    container_id: record.id.clone(),
                };
                self.probes.add_container(pod_uid, container, target);
                memory
                    .probes_registered
                    .insert(name.to_string(), record.id.clone());
            }
            if self.liveness_failed(&record.id) && !memory.killed.contains(&record.id) {
                memory.killed.push(record.id.clone());
                let message = format!("Container {name} failed liveness probe, will be restarted");
                self.kill_container(pod, container, kind, &record.id, &message)
                    .await?;
                return Ok(Step::progressing());
            }
            return self
                .resize_container(pod, container, kind, record, run, memory)
                .await;
        }
        if let Some(record) = latest.filter(|r| r.exited()) {
            let restart = match policy {
                "Always" => true,
                "OnFailure" => record.exit_code != 0,
                _ => false,
            };
            if !restart {
                memory.waiting.remove(name);
                return Ok(Step::idle());
            }
            let finished = SystemTime::UNIX_EPOCH
                + Duration::from_nanos(u64::try_from(record.finished_at).unwrap_or(0));
            let now = SystemTime::now();
            let remaining = self.backoff().remaining(&key, finished, now);
            if let Some(remaining) = remaining {
                let delay = self.backoff().delay(&key).unwrap_or(backoff::INITIAL);
                let message = format!(
                    "back-off {} restarting failed container={name} pod={}",
                    humanize(delay),
                    pod_label(pod)
                );
                if memory.waiting.get(name).map(|w| w.reason.as_str()) != Some("CrashLoopBackOff") {
                    let event = format!(
                        "Back-off restarting failed container {name} in pod {}",
                        pod_label(pod)
                    );
                    self.event(
                        pod,
                        Some(field_path(kind, name)),
                        EventType::Warning,
                        "BackOff",
                        &event,
                    );
                }
                memory
                    .waiting
                    .insert(name.to_string(), Waiting::new("CrashLoopBackOff", message));
                return Ok(Step::waiting_for(remaining));
            }
            self.backoff().step(&key, now);
            self.start_container(pod, container, kind, record.attempt + 1, run, memory)
                .await?;
            return Ok(Step::progressing());
        }
        // Never started in this sandbox (or only created).
        let attempt = latest.map_or(0, |r| r.attempt + 1);
        if let Some(created) = latest {
            // Created but never started (the agent died in between): replace it.
            self.runtime
                .remove_container(RemoveContainerRequest {
                    container_id: created.id.clone(),
                })
                .await?;
        }
        self.start_container(pod, container, kind, attempt, run, memory)
            .await?;
        Ok(Step::progressing())
    }

    /// Whether the node takes what the pod's spec asks now, against the
    /// other pods bound to it (see [`resize::admission`]).
    fn resize_admission(&self, pod: &Pod) -> ResizeState {
        let pods: Vec<Arc<Pod>> = super::lock(&self.pods).values().cloned().collect();
        let others: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
        ResizeState {
            pending: resize::admission(pod, &others, &self.config.node_allocatable).err(),
            ..ResizeState::default()
        }
    }

    /// Makes a running container's cgroups match its spec after an admitted
    /// resize: in place, or by a restart its `resizePolicy` asks for.
    #[allow(clippy::too_many_arguments)]
    async fn resize_container(
        &self,
        pod: &Pod,
        container: &Container,
        kind: Kind,
        record: &ContainerRecord,
        run: &SandboxRun<'_>,
        memory: &mut PodMemory,
    ) -> Result<Step, SyncError> {
        if memory.resize.pending.is_some() {
            return Ok(Step::running());
        }
        let desired = crate::config::linux_resources(pod, container, None)
            .map_err(|e| SyncError::Config(e.to_string()))?;
        match resize::decide(container, &desired, record.resources.as_ref()) {
            Action::Keep => Ok(Step::running()),
            Action::Update(linux) => {
                memory.resize.in_progress = true;
                let request = UpdateContainerResourcesRequest {
                    container_id: record.id.clone(),
                    linux: Some(linux),
                    ..UpdateContainerResourcesRequest::default()
                };
                match self.runtime.update_container_resources(request).await {
                    Ok(_) => self.view.forget_container(&record.id),
                    Err(e) => memory.resize.error = Some(e.message()),
                }
                Ok(Step {
                    progressing: true,
                    running: true,
                })
            }
            Action::Restart => {
                memory.resize.in_progress = true;
                let name = &container.name;
                let message = format!("Container {name} resize requires restart");
                self.kill_container(pod, container, kind, &record.id, &message)
                    .await?;
                self.start_container(pod, container, kind, record.attempt + 1, run, memory)
                    .await?;
                Ok(Step::progressing())
            }
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, super::backoff::Backoff> {
        super::lock(&self.backoff)
    }

    /// Pulls (per policy), creates and starts one container instance. A
    /// failure is recorded as the container's waiting reason, with an event,
    /// and is not an error of the sync.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        kind: Kind,
        attempt: u32,
        run: &SandboxRun<'_>,
        memory: &mut PodMemory,
    ) -> Result<(), SyncError> {
        let (sandbox_config, sandbox_id, volumes) = (run.config, run.id, run.volumes);
        let name = container.name.as_str();
        let field = Some(field_path(kind, name));
        let image_ref = match self
            .ensure_image(pod, container, kind, sandbox_config)
            .await
        {
            Ok(image_ref) => image_ref,
            Err(waiting) => {
                memory.waiting.insert(name.to_string(), waiting);
                return Ok(());
            }
        };
        // Downward API IPs come from the sandbox and the node: the pod's
        // status may not carry them yet.
        let pod_ips: Vec<String> = run.ip.iter().map(ToString::to_string).collect();
        let host_ips: Vec<String> = self
            .config
            .host_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        let runtime_pod = crate::downward::with_runtime_ips(pod, &pod_ips, &host_ips);
        let env = match crate::config::resolve_env(
            &runtime_pod,
            container,
            self.objects.as_ref(),
            &self.config.node_allocatable,
        )
        .await
        {
            Ok(env) => env,
            Err(e) => {
                let message = format!("Error: {e}");
                self.event(pod, field, EventType::Warning, "Failed", &message);
                memory.waiting.insert(
                    name.to_string(),
                    Waiting::new("CreateContainerConfigError", e.to_string()),
                );
                return Ok(());
            }
        };
        let mounts = match volumes.mounts_for(container, &env) {
            Ok(mut mounts) => {
                if let Some(hosts) = run.hosts_file
                    && !mounts.iter().any(|m| m.container_path == "/etc/hosts")
                {
                    mounts.push(skiff_cri::v1::Mount {
                        container_path: "/etc/hosts".into(),
                        host_path: hosts.to_string_lossy().into_owned(),
                        selinux_relabel: true,
                        ..skiff_cri::v1::Mount::default()
                    });
                }
                if let Some(mount) = self.termination_log(pod, container, attempt).await?
                    && !mounts
                        .iter()
                        .any(|m| m.container_path == mount.container_path)
                {
                    mounts.push(mount);
                }
                mounts
            }
            Err(e) => {
                let message = format!("Error: {e}");
                self.event(pod, field, EventType::Warning, "Failed", &message);
                memory.waiting.insert(
                    name.to_string(),
                    Waiting::new("CreateContainerConfigError", e.to_string()),
                );
                return Ok(());
            }
        };
        let context = crate::config::ContainerContext {
            restart_count: attempt,
            image_ref: &image_ref,
            env,
            mounts,
        };
        let config = crate::config::container_config(pod, container, &context)
            .map_err(|e| SyncError::Config(e.to_string()))?;
        let created = match self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
        {
            Ok(created) => created.container_id,
            Err(e) => {
                let message = format!("Error: {}", e.message());
                self.event(pod, field, EventType::Warning, "Failed", &message);
                memory.waiting.insert(
                    name.to_string(),
                    Waiting::new("CreateContainerError", e.message()),
                );
                return Ok(());
            }
        };
        let message = format!("Created container: {name}");
        self.event(pod, field.clone(), EventType::Normal, "Created", &message);
        if let Err(e) = self
            .runtime
            .start_container(StartContainerRequest {
                container_id: created.clone(),
            })
            .await
        {
            let message = format!("Error: {}", e.message());
            self.event(pod, field, EventType::Warning, "Failed", &message);
            memory.waiting.insert(
                name.to_string(),
                Waiting::new("RunContainerError", e.message()),
            );
            return Ok(());
        }
        memory.waiting.remove(name);
        let message = format!("Started container {name}");
        self.event(pod, field.clone(), EventType::Normal, "Started", &message);
        if let Some(post_start) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        {
            let target = ProbeTarget {
                pod_ip: run.ip,
                container_id: created.clone(),
            };
            let timeout = Duration::from_secs(u64::try_from(grace_seconds(pod)).unwrap_or(30));
            if let Err(e) = crate::probes::run_hook(
                post_start,
                container,
                &target,
                self.runtime.as_ref(),
                timeout,
            )
            .await
            {
                let message = e.event_message(post_start, name, pod);
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "FailedPostStartHook",
                    &message,
                );
                self.stop_container(pod, container, &created, 0).await?;
            }
        }
        Ok(())
    }

    /// Makes sure the container's image is on the node; `Err` is the
    /// waiting reason to report.
    async fn ensure_image(
        &self,
        pod: &Pod,
        container: &Container,
        kind: Kind,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String, Waiting> {
        let image = container.image.clone().unwrap_or_default();
        let field = Some(field_path(kind, &container.name));
        let policy = pull::pull_policy(container.image_pull_policy.as_deref(), &image);
        let present = self
            .images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..ImageSpec::default()
                }),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|s| s.image);
        match (policy, present) {
            (PullPolicy::IfNotPresent | PullPolicy::Never, Some(found)) => {
                let message = format!("Container image \"{image}\" already present on machine");
                self.event(pod, field, EventType::Normal, "Pulled", &message);
                return Ok(found.id);
            }
            (PullPolicy::Never, None) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "ErrImageNeverPull",
                    &message,
                );
                return Err(Waiting::new("ErrImageNeverPull", message));
            }
            _ => {}
        }
        let key = format!("{}/pull/{image}", uid(pod));
        let now = SystemTime::now();
        let last_failure = self.pull_failures().get(&key).cloned();
        if let Some((failed_at, failure)) = last_failure
            && self.backoff().remaining(&key, failed_at, now).is_some()
        {
            // A failed pull shows as ErrImagePull for a while before the
            // back-off does, as upstream's pod worker (which retries a failed
            // sync after 10 s) shows it, not for one 1 s resync only.
            if now.duration_since(failed_at).unwrap_or_default() < ERR_IMAGE_PULL_SHOWN {
                return Err(Waiting::new("ErrImagePull", failure));
            }
            let message = format!("Back-off pulling image \"{image}\"");
            self.event(pod, field, EventType::Normal, "BackOff", &message);
            return Err(Waiting::new("ImagePullBackOff", message));
        }
        self.backoff().step(&key, now);
        let message = format!("Pulling image \"{image}\"");
        self.event(pod, field.clone(), EventType::Normal, "Pulling", &message);
        let secrets = self.pull_secrets(pod).await;
        let secret_refs: Vec<&Secret> = secrets.iter().map(AsRef::as_ref).collect();
        let started = std::time::Instant::now();
        match self
            .images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..ImageSpec::default()
                }),
                auth: pull::credentials(&image, &secret_refs),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
        {
            Ok(pulled) => {
                self.pull_failures().remove(&key);
                let took = started.elapsed();
                let message = format!(
                    "Successfully pulled image \"{image}\" in {took:.3?} ({took:.3?} including waiting)"
                );
                self.event(pod, field, EventType::Normal, "Pulled", &message);
                Ok(pulled.image_ref)
            }
            Err(e) => {
                let message = format!("Failed to pull image \"{image}\": {}", e.message());
                self.pull_failures()
                    .insert(key, (SystemTime::now(), message.clone()));
                self.event(pod, field.clone(), EventType::Warning, "Failed", &message);
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull",
                );
                Err(Waiting::new("ErrImagePull", message))
            }
        }
    }

    fn pull_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SystemTime, String)>> {
        super::lock(&self.pull_failures)
    }

    async fn pull_secrets(&self, pod: &Pod) -> Vec<Arc<Secret>> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut out = Vec::new();
        let refs = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for reference in refs {
            if let Ok(Some(secret)) = self.objects.secret(namespace, &reference.name).await {
                out.push(secret);
            }
        }
        out
    }

    /// Writes the pod's managed `/etc/hosts` (`PODS/UID/etc-hosts`) once the
    /// pod has an IP or uses the host network, as upstream does; `None`
    /// until then. Rewritten only when its content changes.
    /// The mount of a fresh, empty host file at the container's
    /// `terminationMessagePath`, as upstream's kubelet gives every container
    /// instance: what the app writes there becomes the message of its
    /// terminated state (read back in [`super::runtime`]). The file is
    /// `PODS/<uid>/containers/<name>/<attempt>`, so each instance starts empty.
    async fn termination_log(
        &self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
    ) -> Result<Option<skiff_cri::v1::Mount>, SyncError> {
        let container_path = container
            .termination_message_path
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_TERMINATION_MESSAGE_PATH);
        if container_path.is_empty() {
            return Ok(None);
        }
        let dir = self
            .config
            .pods_dir
            .join(uid(pod))
            .join("containers")
            .join(&container.name);
        let path = dir.join(attempt.to_string());
        let create = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&path, b"").await
        };
        create
            .await
            .map_err(|e| SyncError::Config(format!("creating {}: {e}", path.display())))?;
        Ok(Some(skiff_cri::v1::Mount {
            container_path: container_path.to_string(),
            host_path: path.to_string_lossy().into_owned(),
            selinux_relabel: true,
            ..skiff_cri::v1::Mount::default()
        }))
    }

    async fn write_etc_hosts(
        &self,
        pod: &Pod,
        ip: Option<std::net::IpAddr>,
    ) -> Result<Option<std::path::PathBuf>, SyncError> {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if ip.is_none() && !host_network {
            return Ok(None);
        }
        let pod_ips: Vec<String> = ip.iter().map(ToString::to_string).collect();
        let node_hosts = if host_network {
            tokio::fs::read_to_string("/etc/hosts")
                .await
                .unwrap_or_default()
        } else {
            String::new()
        };
        let domain = self.config.sandbox.cluster_domain().to_string();
        let content = crate::config::etc_hosts(pod, &pod_ips, &domain, &node_hosts)
            .map_err(|e| SyncError::Config(e.to_string()))?;
        let path = self.config.pods_dir.join(uid(pod)).join("etc-hosts");
        if tokio::fs::read_to_string(&path).await.ok().as_deref() != Some(content.as_str()) {
            let write = async {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let temp = path.with_extension("tmp");
                tokio::fs::write(&temp, content.as_bytes()).await?;
                tokio::fs::rename(&temp, &path).await
            };
            write
                .await
                .map_err(|e| SyncError::Config(format!("writing {}: {e}", path.display())))?;
        }
        Ok(Some(path))
    }

    /// Stops a running container to restart it, with a `Killing` event saying
    /// why, within the pod's grace period.
    async fn kill_container(
        &self,
        pod: &Pod,
        container: &Container,
        kind: Kind,
        container_id: &str,
        why: &str,
    ) -> Result<(), SyncError> {
        let field = Some(field_path(kind, &container.name));
        self.event(pod, field, EventType::Normal, "Killing", why);
        self.stop_container(pod, container, container_id, grace_seconds(pod))
            .await
    }

    /// Stops one container: preStop hook, then the stop signal and SIGKILL
    /// after what is left of `grace` seconds.
    async fn stop_container(
        &self,
        pod: &Pod,
        container: &Container,
        container_id: &str,
        grace: i64,
    ) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        if let Some(pre_stop) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            && grace > 0
        {
            let target = ProbeTarget {
                pod_ip: None,
                container_id: container_id.to_string(),
            };
            let timeout = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            if let Err(e) = crate::probes::run_hook(
                pre_stop,
                container,
                &target,
                self.runtime.as_ref(),
                timeout,
            )
            .await
                && !matches!(e, crate::probes::HookError::TimedOut { .. })
            {
                // Upstream only logs a preStop hook that runs out of time.
                let message = e.event_message(pre_stop, &container.name, pod);
                let field = Some(format!("spec.containers{{{}}}", container.name));
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "FailedPreStopHook",
                    &message,
                );
            }
        }
        let left = grace - i64::try_from(started.elapsed().as_secs()).unwrap_or(0);
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: container_id.to_string(),
                timeout: left.max(if grace > 0 { 2 } else { 0 }),
            })
            .await?;
        Ok(())
    }

    /// Stops every running container of the pod (in parallel, each with the
    /// grace period) and its sandboxes.
    async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        runtime: &PodRuntime,
        grace: i64,
    ) -> Result<(), SyncError> {
        let spec = pod.and_then(|p| p.spec.clone()).unwrap_or_default();
        let all: Vec<Container> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .cloned()
            .collect();
        let stops = runtime
            .containers
            .iter()
            .filter(|c| c.running())
            .map(|record| {
                let container = all.iter().find(|c| c.name == record.name);
                async move {
                    if let (Some(pod), Some(container)) = (pod, container) {
                        let message = format!("Stopping container {}", container.name);
                        let field = Some(format!("spec.containers{{{}}}", container.name));
                        self.event(pod, field, EventType::Normal, "Killing", &message);
                        self.stop_container(pod, container, &record.id, grace).await
                    } else {
                        self.runtime
                            .stop_container(StopContainerRequest {
                                container_id: record.id.clone(),
                                timeout: grace,
                            })
                            .await
                            .map(|_| ())
                            .map_err(SyncError::from)
                    }
                }
            });
        for result in futures::future::join_all(stops).await {
            result?;
        }
        for sandbox in runtime.sandboxes.iter().filter(|s| s.ready) {
            self.runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                })
                .await?;
        }
        Ok(())
    }

    async fn remove_pod_runtime(
        &self,
        pod_uid: &str,
        runtime: &PodRuntime,
    ) -> Result<(), SyncError> {
        // Forget liveness failures of the pod's containers: they are gone.
        super::lock(&self.unhealthy).retain(|id| !runtime.containers.iter().any(|c| &c.id == id));
        for sandbox in &runtime.sandboxes {
            self.runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                })
                .await?;
        }
        self.probes.remove_pod(pod_uid);
        self.backoff().forget_prefix(&format!("{pod_uid}/"));
        if let Err(e) = super::cgroups::remove_pod_cgroups(
            std::path::Path::new(CGROUP_ROOT),
            &self.config.sandbox.cgroup_parent_root,
            pod_uid,
        ) {
            // Logged, not retried: the pod is otherwise gone, and a busy
            // cgroup empties when its last process exits.
            tracing::warn!(pod = pod_uid, error = %e, "removing the pod's cgroups");
        }
        self.volumes
            .cleanup(pod_uid)
            .await
            .map_err(|e| SyncError::Config(e.to_string()))?;
        Ok(())
    }

    /// A pod being deleted: kill it within its grace period, report the
    /// final status, then remove it from the API (grace 0, as the kubelet
    /// confirms a deletion) and clean up.
    async fn terminate(
        &self,
        pod: &Pod,
        runtime: &PodRuntime,
        memory: &mut PodMemory,
    ) -> Result<Next, SyncError> {
        self.kill_pod(Some(pod), runtime, grace_seconds(pod))
            .await?;
        memory.waiting.clear();
        let _ = self.report(pod, memory, true).await;
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(e) => return Err(SyncError::Api(Box::new(e))),
        }
        let runtime = self.view.pod(uid(pod)).await?;
        self.remove_pod_runtime(uid(pod), &runtime).await?;
        Ok(Next::Done)
    }

    /// Computes the status and writes it if it changed. `stopped` means the
    /// pod's containers are all down on purpose (terminal or deleted).
    async fn report(
        &self,
        pod: &Pod,
        memory: &mut PodMemory,
        stopped: bool,
    ) -> Result<Next, SyncError> {
        let runtime = self.view.pod(uid(pod)).await?;
        let pod_uid = uid(pod).to_string();
        // The input borrows closures that are not `Send`: end it before
        // the next await.
        let mut computed = {
            let readiness = |name: &str| self.probes.readiness(&pod_uid, name);
            let started = |name: &str| self.probes.started(&pod_uid, name);
            let input = StatusInput {
                pod,
                runtime: &runtime,
                waiting: &memory.waiting,
                readiness: &readiness,
                started: &started,
                host_ips: &self.config.host_ips,
                now: jiff::Timestamp::now(),
            };
            status::pod_status(&input)
        };
        let desired = |c: &Container| {
            crate::config::linux_resources(pod, c, None)
                .ok()
                .map(|r| CgroupResources::from(&r))
        };
        resize::report(
            &mut computed,
            pod,
            &runtime,
            &memory.resize,
            &desired,
            jiff::Timestamp::now(),
        );
        if let Some((reason, message)) = &memory.failed {
            computed.phase = Some(Phase::Failed.as_str().to_string());
            computed.reason = Some((*reason).to_string());
            computed.message = Some(message.clone());
        } else if stopped {
            let phase = computed.phase.as_deref().unwrap_or("Pending");
            if !matches!(phase, "Succeeded" | "Failed") {
                let failed = computed.container_statuses.iter().flatten().any(|s| {
                    s.state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .is_some_and(|t| t.exit_code != 0)
                });
                let terminal = if failed || pod.metadata.deletion_timestamp.is_some() {
                    Phase::Failed
                } else {
                    Phase::Succeeded
                };
                computed.phase = Some(terminal.as_str().to_string());
            }
        }
        let value =
            serde_json::to_value(&computed).map_err(|e| SyncError::Config(e.to_string()))?;
        let mut comparable = value.clone();
        strip_times(&mut comparable);
        if memory.last_status.as_ref() == Some(&comparable)
            && !status::overwritten(pod.status.as_ref(), &computed)
        {
            return Ok(Next::After(RESYNC));
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = serde_json::json!({ "status": value });
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| SyncError::Api(Box::new(e)))?;
        memory.last_status = Some(comparable);
        Ok(Next::After(RESYNC))
    }
}

/// How much of `spec.activeDeadlineSeconds` is left, counted from
/// `status.startTime` as upstream does; `None` without a deadline or start.
fn active_deadline_left(pod: &Pod, now: jiff::Timestamp) -> Option<Duration> {
    let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
    let started = pod.status.as_ref()?.start_time.as_ref()?.0;
    let ends = started
        .checked_add(jiff::SignedDuration::from_secs(deadline))
        .ok()?;
    let left = now.duration_until(ends);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Condition timestamps change with every computation; they must not make
/// an otherwise identical status look new.
fn strip_times(status: &mut serde_json::Value) {
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions {
            if let Some(object) = condition.as_object_mut() {
                object.remove("lastTransitionTime");
                object.remove("lastProbeTime");
            }
        }
    }
    if let Some(object) = status.as_object_mut() {
        object.remove("startTime");
    }
}

/// `10s`, `1m20s`, `5m0s`, as Go prints durations in back-off messages.
fn humanize(delay: Duration) -> String {
    let secs = delay.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// The running sandbox a sync starts containers in.
struct SandboxRun<'a> {
    config: &'a PodSandboxConfig,
    id: &'a str,
    ip: Option<std::net::IpAddr>,
    volumes: &'a crate::volumes::PodVolumes,
    /// The pod's managed `/etc/hosts`, once it can be written.
    hosts_file: Option<&'a std::path::Path>,
}

/// What one container step did.
#[derive(Debug, Clone, Copy)]
struct Step {
    progressing: bool,
    running: bool,
}

impl Step {
    fn progressing() -> Self {
        Self {
            progressing: true,
            running: false,
        }
    }
    fn running() -> Self {
        Self {
            progressing: false,
            running: true,
        }
    }
    fn idle() -> Self {
        Self {
            progressing: false,
            running: false,
        }
    }
    fn waiting_for(_remaining: Duration) -> Self {
        // Back-off ends are found by the periodic sync (every second while
        // progressing), which is fine-grained enough for 10 s steps.
        Self::progressing()
    }
}

/// Why a sync step failed; the sync is retried.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The container runtime failed.
    #[error(transparent)]
    Cri(#[from] skiff_cri::CriError),
    /// The API server failed.
    #[error("API request failed")]
    Api(#[source] Box<kube::Error>),
    /// The pod could not be turned into runtime config.
    #[error("{0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_deadline_counts_from_the_start_time() {
        let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [], "activeDeadlineSeconds": 30},
            "status": {"startTime": "2026-01-01T00:00:00Z"},
        }))
        .expect("pod");
        let at = |secs| start + jiff::SignedDuration::from_secs(secs);
        assert_eq!(
            active_deadline_left(&pod, at(10)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(active_deadline_left(&pod, at(45)), Some(Duration::ZERO));
        pod.spec.as_mut().expect("spec").active_deadline_seconds = None;
        assert_eq!(active_deadline_left(&pod, at(45)), None);
    }

    #[test]
    fn back_off_delays_print_like_go() {
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
        assert_eq!(humanize(Duration::from_secs(80)), "1m20s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn status_comparison_ignores_timestamps() {
        let mut a = serde_json::json!({"phase":"Running","startTime":"x",
            "conditions":[{"type":"Ready","status":"True","lastTransitionTime":"t1"}]});
        let mut b = serde_json::json!({"phase":"Running","startTime":"y",
            "conditions":[{"type":"Ready","status":"True","lastTransitionTime":"t2"}]});
        strip_times(&mut a);
        strip_times(&mut b);
        assert_eq!(a, b);
    }
}
