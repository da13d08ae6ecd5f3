//! Pod status as upstream's kubelet reports it, computed from the pod spec,
//! what the runtime holds and what the worker knows (why a container waits,
//! what the probes say). Pure functions: no IO, so every rule has a test.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::runtime::{ContainerRecord, PodRuntime};

/// Why a container has no running instance, as the worker last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `ContainerCreating`, `ErrImagePull`, `CrashLoopBackOff`...
    pub reason: String,
    /// Details, shown by `kubectl describe`.
    pub message: Option<String>,
}

impl Waiting {
    /// A waiting reason with a message.
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: Some(message.into()),
        }
    }
}

/// The pod phases the worker decides on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not all containers started yet.
    Pending,
    /// At least one container runs or restarts.
    Running,
    /// Every container exited 0 and none restarts.
    Succeeded,
    /// Every container exited and one failed, with no restart.
    Failed,
}

impl Phase {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Whether no container will run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Everything the status is computed from.
pub struct StatusInput<'a> {
    /// The pod as the API server has it.
    pub pod: &'a Pod,
    /// The runtime's state of it.
    pub runtime: &'a PodRuntime,
    /// Why containers without a running instance wait, by container name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// Readiness by container name, for containers with a readiness probe.
    pub readiness: &'a dyn Fn(&str) -> bool,
    /// Whether a container's startup probe (if any) has succeeded.
    pub started: &'a dyn Fn(&str) -> bool,
    /// The node's IPs.
    pub host_ips: &'a [IpAddr],
    /// Now, for condition transition times.
    pub now: jiff::Timestamp,
}

/// The pod's restart policy, defaulted as upstream (`Always`).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an init container is a native sidecar.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// The CRI id of an instance in API form.
pub fn container_id(record: &ContainerRecord) -> String {
    format!("containerd://{}", record.id)
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
        .map(Time)
}

fn terminated(record: &ContainerRecord) -> ContainerStateTerminated {
    let reason = if record.reason.is_empty() {
        if record.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        record.reason.clone()
    };
    ContainerStateTerminated {
        exit_code: record.exit_code,
        reason: Some(reason),
        message: (!record.message.is_empty()).then(|| record.message.clone()),
        started_at: time(record.started_at),
        finished_at: time(record.finished_at),
        container_id: Some(container_id(record)),
        signal: None,
    }
}

fn terminated_state(record: &ContainerRecord) -> ContainerState {
    ContainerState {
        terminated: Some(terminated(record)),
        ..ContainerState::default()
    }
}

fn waiting_state(waiting: &Waiting) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(waiting.reason.clone()),
            message: waiting.message.clone(),
        }),
        ..ContainerState::default()
    }
}

/// The status of one container.
fn container_status(
    input: &StatusInput<'_>,
    container: &Container,
    has_readiness_probe: bool,
    default_waiting: &str,
) -> ContainerStatus {
    let name = container.name.as_str();
    let latest = input.runtime.latest_anywhere(name);
    let previous = input.runtime.previous(name);
    let waiting = input.waiting.get(name);
    let mut status = ContainerStatus {
        name: name.to_string(),
        image: container.image.clone().unwrap_or_default(),
        image_id: latest.map(|r| r.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(container_id),
        restart_count: latest.map_or(0, |r| i32::try_from(r.attempt).unwrap_or(i32::MAX)),
        ready: false,
        started: Some(false),
        ..ContainerStatus::default()
    };
    match latest {
        Some(record) if record.running() => {
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(record.started_at),
                }),
                ..ContainerState::default()
            });
            // Without a startup probe a running container has started, even
            // before the probe manager has taken it on.
            let started = container.startup_probe.is_none() || (input.started)(name);
            status.started = Some(started);
            status.ready = started && (!has_readiness_probe || (input.readiness)(name));
            status.last_state = previous.filter(|p| p.exited()).map(terminated_state);
        }
        Some(record) if record.exited() => match waiting {
            // It will be restarted: it waits, and its exit is the last state.
            Some(waiting) => {
                status.state = Some(waiting_state(waiting));
                status.last_state = Some(terminated_state(record));
            }
            None => {
                status.state = Some(terminated_state(record));
                status.last_state = previous.filter(|p| p.exited()).map(terminated_state);
            }
        },
        _ => {
            let reason = waiting.cloned().unwrap_or_else(|| Waiting {
                reason: default_waiting.to_string(),
                message: None,
            });
            status.state = Some(waiting_state(&reason));
            status.last_state = latest
                .filter(|r| r.exited())
                .or(previous)
                .map(terminated_state);
        }
    }
    if status.last_state.is_none() {
        status.last_state = Some(ContainerState::default());
    }
    status
}

fn is_running(status: &ContainerStatus) -> bool {
    status.state.as_ref().is_some_and(|s| s.running.is_some())
}

fn terminated_of(status: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    status.state.as_ref().and_then(|s| s.terminated.as_ref())
}

/// Whether every init container has done its part: regular ones exited 0,
/// sidecars started.
fn initialized(pod: &Pod, init_statuses: &[ContainerStatus]) -> (bool, Vec<String>) {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let mut incomplete = Vec::new();
    for (container, status) in init.iter().zip(init_statuses) {
        let done = if is_sidecar(container) {
            status.started == Some(true)
        } else {
            terminated_of(status).is_some_and(|t| t.exit_code == 0)
        };
        if !done {
            incomplete.push(container.name.clone());
        }
    }
    (incomplete.is_empty(), incomplete)
}

/// The pod phase, by upstream's rules (`getPhase`).
pub fn phase(pod: &Pod, init: &[ContainerStatus], app: &[ContainerStatus]) -> Phase {
    let policy = restart_policy(pod);
    let init_specs = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let (init_done, _) = initialized(pod, init);
    if !init_done {
        let init_failed = init_specs
            .iter()
            .zip(init)
            .any(|(c, s)| !is_sidecar(c) && terminated_of(s).is_some_and(|t| t.exit_code != 0));
        if init_failed && policy == "Never" {
            return Phase::Failed;
        }
        return Phase::Pending;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in app {
        if is_running(status) {
            running += 1;
        } else if let Some(t) = terminated_of(status) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if status
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
        {
            // Waiting to restart after an exit.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        Phase::Pending
    } else if running > 0 {
        Phase::Running
    } else if stopped > 0 {
        match policy {
            "Always" => Phase::Running,
            _ if stopped == succeeded => Phase::Succeeded,
            "Never" => Phase::Failed,
            _ => Phase::Running,
        }
    } else {
        Phase::Pending
    }
}

/// A condition, keeping the previous transition time when the status did not
/// change.
fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: jiff::Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let transition = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: (!ok).then(|| reason.map(str::to_string)).flatten(),
        message: (!ok).then_some(message).flatten(),
        last_transition_time: Some(transition),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The phase to report when the API shows `api_phase`: a pod the API has as
/// terminal (finished, or failed by an eviction) stays so, whatever its
/// containers say now; upstream refuses that transition the same way.
fn keep_terminal(api_phase: Option<&str>, computed: Phase) -> Phase {
    match api_phase {
        Some("Failed") => Phase::Failed,
        Some("Succeeded") => Phase::Succeeded,
        _ => computed,
    }
}

/// The whole pod status.
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();

    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let init: Vec<ContainerStatus> = init_specs
        .iter()
        .map(|c| container_status(input, c, c.readiness_probe.is_some(), "PodInitializing"))
        .collect();
    let (init_done, incomplete) = initialized(pod, &init);
    let app_waiting = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(input, c, c.readiness_probe.is_some(), app_waiting))
        .collect();
    let phase = keep_terminal(old.phase.as_deref(), phase(pod, &init, &app));

    let mut unready: Vec<String> = spec
        .containers
        .iter()
        .zip(&app)
        .filter(|(_, s)| !s.ready)
        .map(|(c, _)| c.name.clone())
        .collect();
    unready.extend(
        init_specs
            .iter()
            .zip(&init)
            .filter(|(c, s)| is_sidecar(c) && !s.ready)
            .map(|(c, _)| c.name.clone()),
    );
    let containers_ready = unready.is_empty();
    let (ready_reason, ready_message) = if phase.is_terminal() {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let sandbox_ready = input.runtime.ready_sandbox().is_some();
    let now = input.now;
    let mut conditions = vec![
        condition(
            &old_conditions,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            None,
            now,
        ),
        condition(
            &old_conditions,
            "Initialized",
            init_done || (phase.is_terminal() && init_specs.is_empty()),
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
            now,
        ),
        condition(
            &old_conditions,
            "Ready",
            containers_ready && !phase.is_terminal(),
            Some(ready_reason),
            ready_message.clone(),
            now,
        ),
        condition(
            &old_conditions,
            "ContainersReady",
            containers_ready && !phase.is_terminal(),
            Some(ready_reason),
            ready_message,
            now,
        ),
    ];
    // Conditions owned by others (PodScheduled, DisruptionTarget...) stay.
    let ours = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ];
    conditions.extend(
        old_conditions
            .iter()
            .filter(|c| !ours.contains(&c.type_.as_str()))
            .cloned(),
    );

    // A stopped pod keeps the IP it had, as upstream reports it.
    let pod_ip = input
        .runtime
        .ready_sandbox()
        .and_then(|s| s.ip)
        .or_else(|| old.pod_ip.as_deref().and_then(|ip| ip.parse().ok()));
    let host_ip = input.host_ips.first().map(ToString::to_string);
    PodStatus {
        phase: Some(phase.as_str().to_string()),
        conditions: Some(conditions),
        host_ip: host_ip.clone(),
        host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
        pod_ip: pod_ip.map(|ip| ip.to_string()),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: old.start_time.or(Some(Time(now))),
        qos_class: Some(crate::config::qos_class(pod).as_str().to_string()),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(app),
        ..old
    }
}

/// Whether the API holds a different phase or condition status than the
/// agent's `computed` one: another writer changed it (the node lifecycle
/// controller marks pods not Ready while their node is silent), and the
/// agent's view has to be written again even though it did not change.
pub fn overwritten(api: Option<&PodStatus>, computed: &PodStatus) -> bool {
    let Some(api) = api else {
        return true;
    };
    if api.phase != computed.phase {
        return true;
    }
    let api_conditions = api.conditions.as_deref().unwrap_or_default();
    computed.conditions.iter().flatten().any(|ours| {
        api_conditions
            .iter()
            .find(|c| c.type_ == ours.type_)
            .is_none_or(|theirs| theirs.status != ours.status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &str) -> PodStatus {
        PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: status.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn a_condition_changed_by_another_writer_is_overwritten() {
        assert!(overwritten(Some(&ready("False")), &ready("True")));
        assert!(overwritten(None, &ready("True")));
        let mut other_phase = ready("True");
        other_phase.phase = Some("Pending".into());
        assert!(overwritten(Some(&other_phase), &ready("True")));
    }

    #[test]
    fn conditions_of_other_writers_alone_are_no_change() {
        let mut api = ready("True");
        api.conditions.get_or_insert_default().push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        });
        assert!(!overwritten(Some(&api), &ready("True")));
    }

    #[test]
    fn a_terminal_phase_in_the_api_is_kept() {
        assert_eq!(
            keep_terminal(Some("Failed"), Phase::Succeeded),
            Phase::Failed
        );
        assert_eq!(keep_terminal(Some("Failed"), Phase::Running), Phase::Failed);
        assert_eq!(
            keep_terminal(Some("Succeeded"), Phase::Running),
            Phase::Succeeded
        );
        assert_eq!(
            keep_terminal(Some("Running"), Phase::Succeeded),
            Phase::Succeeded
        );
        assert_eq!(keep_terminal(None, Phase::Pending), Phase::Pending);
    }
}
