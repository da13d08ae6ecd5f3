//! What a hollow node does with a pod bound to it, and the statuses it
//! reports, decided with no IO.
//!
//! A hollow node runs nothing. It reports each new pod Running at once, as a
//! kubelet would once every container started: phase Running, the conditions
//! PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady and
//! Ready all True, every container running and ready with no restarts, init
//! containers completed (sidecars, `restartPolicy: Always`, running), a pod
//! IP from the node's fake `/24`, and the node's fake InternalIP as host IP.
//! Container and image IDs use the `hollow://` scheme, so nobody mistakes
//! them for a runtime's.
//!
//! Pods run until deleted, unless `complete_after` is set: then pods whose
//! `restartPolicy` is Never or OnFailure succeed that long after their
//! `startTime` (containers terminated with exit code 0, reason Completed).
//! A pod whose deletion was requested is deleted with grace period 0, as a
//! kubelet does once its containers stopped.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The facts about a pod a hollow node acts on: a small digest of the Pod,
/// so that 30,000 pods cost little memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// `metadata.uid`.
    pub uid: String,
    /// The index of the hollow node it is bound to.
    pub node: usize,
    /// `restartPolicy` is Never or OnFailure: the pod may complete.
    pub may_complete: bool,
    /// `spec.containers`.
    pub containers: Vec<ContainerView>,
    /// `spec.initContainers`.
    pub init_containers: Vec<ContainerView>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `status.phase`, as the API shows it.
    pub phase: Option<String>,
    /// `status.podIP`, as the API shows it.
    pub pod_ip: Option<String>,
    /// `status.startTime`, as the API shows it.
    pub start_time: Option<Timestamp>,
}

/// A container of a [`PodView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// An init container that keeps running (`restartPolicy: Always`).
    pub sidecar: bool,
}

impl PodView {
    /// The digest of `pod`, bound to hollow node `node`.
    pub fn new(pod: &Pod, node: usize) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let views = |containers: Option<&Vec<Container>>| {
            containers
                .into_iter()
                .flatten()
                .map(|c| ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    sidecar: c.restart_policy.as_deref() == Some("Always"),
                })
                .collect()
        };
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node,
            may_complete: matches!(
                spec.and_then(|s| s.restart_policy.as_deref()),
                Some("Never" | "OnFailure")
            ),
            containers: views(spec.map(|s| &s.containers)),
            init_containers: views(spec.and_then(|s| s.init_containers.as_ref())),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            phase: status.and_then(|s| s.phase.clone()),
            pod_ip: status.and_then(|s| s.pod_ip.clone()),
            start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        }
    }
}

/// What the hollow node last reported for a pod (it may not show in the
/// API yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Running since the given time.
    Running(Timestamp),
    /// Succeeded or Failed.
    Terminal,
    /// Deleted (its deletion was requested, and this node finished it).
    Deleted,
}

/// What to do with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: it runs (forever) or has finished.
    Nothing,
    /// Its deletion was requested: delete it with grace period 0.
    Delete,
    /// Report it Running.
    Run,
    /// Report it Succeeded.
    Complete,
    /// Look again after this long, when it is due to complete.
    CompleteIn(Duration),
}

/// What to do with `pod`, given what this node last `reported` for it and
/// the API's view. A terminal phase in the API is final; otherwise what this
/// node reported wins, as the API may not show it yet.
pub fn decide(
    pod: &PodView,
    reported: Option<Reported>,
    complete_after: Option<Duration>,
    now: Timestamp,
) -> Action {
    if pod.deleting {
        return if reported == Some(Reported::Deleted) {
            Action::Nothing
        } else {
            Action::Delete
        };
    }
    let state = match pod.phase.as_deref() {
        Some("Succeeded" | "Failed") => Some(Reported::Terminal),
        Some("Running") if reported.is_none() && pod.pod_ip.is_some() => {
            Some(Reported::Running(pod.start_time.unwrap_or(now)))
        }
        _ => reported,
    };
    match (state, complete_after) {
        (None, _) => Action::Run,
        (Some(Reported::Running(start)), Some(after)) if pod.may_complete => {
            let ran = Duration::try_from(now.duration_since(start)).unwrap_or(Duration::ZERO);
            match after.checked_sub(ran) {
                Some(left) if !left.is_zero() => Action::CompleteIn(left),
                _ => Action::Complete,
            }
        }
        _ => Action::Nothing,
    }
}

/// The `hollow://` container ID of `container` in pod `uid`.
fn container_id(uid: &str, container: &str) -> String {
    format!("hollow://{uid}/{container}")
}

/// A container status in `state`.
fn container_status(
    pod: &PodView,
    container: &ContainerView,
    state: ContainerState,
    ready: bool,
) -> ContainerStatus {
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone(),
        image_id: format!("hollow://{}", container.image),
        container_id: Some(container_id(&pod.uid, &container.name)),
        ready,
        started: Some(ready),
        restart_count: 0,
        state: Some(state),
        ..ContainerStatus::default()
    }
}

/// A running container, started at `start`.
fn running(start: Timestamp) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(start)),
        }),
        ..ContainerState::default()
    }
}

/// A container that ran from `start` to `end` and exited 0.
fn completed(pod: &PodView, container: &str, start: Timestamp, end: Timestamp) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 0,
            reason: Some("Completed".into()),
            started_at: Some(Time(start)),
            finished_at: Some(Time(end)),
            container_id: Some(container_id(&pod.uid, container)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// A pod condition that changed at `at`.
fn condition(type_: &str, status: bool, reason: Option<&str>, at: Timestamp) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        last_transition_time: Some(Time(at)),
        ..PodCondition::default()
    }
}

/// The addresses of a pod on host `host_ip` with `pod_ip`.
fn addresses(status: &mut PodStatus, host_ip: &str, pod_ip: &str) {
    status.host_ip = Some(host_ip.into());
    status.host_ips = Some(vec![HostIP { ip: host_ip.into() }]);
    status.pod_ip = Some(pod_ip.into());
    status.pod_ips = Some(vec![PodIP { ip: pod_ip.into() }]);
}

/// `pod` running on the node at `host_ip` with `pod_ip` since `start`.
pub fn running_status(pod: &PodView, host_ip: &str, pod_ip: &str, start: Timestamp) -> PodStatus {
    let mut status = PodStatus {
        phase: Some("Running".into()),
        start_time: Some(Time(start)),
        conditions: Some(
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            ]
            .into_iter()
            .map(|type_| condition(type_, true, None, start))
            .collect(),
        ),
        container_statuses: Some(
            pod.containers
                .iter()
                .map(|c| container_status(pod, c, running(start), true))
                .collect(),
        ),
        ..PodStatus::default()
    };
    if !pod.init_containers.is_empty() {
        status.init_container_statuses = Some(
            pod.init_containers
                .iter()
                .map(|c| {
                    if c.sidecar {
                        container_status(pod, c, running(start), true)
                    } else {
                        let state = completed(pod, &c.name, start, start);
                        container_status(pod, c, state, false)
                    }
                })
                .collect(),
        );
    }
    addresses(&mut status, host_ip, pod_ip);
    status
}

/// The strategic merge patch of `pods/status` reporting `pod` Succeeded at
/// `now`, having run since `start`. Each container state drops `running`
/// (a strategic merge would otherwise keep it beside `terminated`).
pub fn succeeded_patch(pod: &PodView, start: Timestamp, now: Timestamp) -> serde_json::Value {
    let terminated = |c: &ContainerView| {
        let state = completed(pod, &c.name, start, now);
        container_status(pod, c, state, false)
    };
    let status = PodStatus {
        phase: Some("Succeeded".into()),
        conditions: Some(vec![
            condition("Ready", false, Some("PodCompleted"), now),
            condition("ContainersReady", false, Some("PodCompleted"), now),
            condition("PodReadyToStartContainers", false, None, now),
        ]),
        container_statuses: Some(pod.containers.iter().map(terminated).collect()),
        init_container_statuses: (!pod.init_containers.is_empty())
            .then(|| pod.init_containers.iter().map(terminated).collect()),
        ..PodStatus::default()
    };
    let mut patch = serde_json::json!({ "status": status });
    for list in ["containerStatuses", "initContainerStatuses"] {
        let statuses = patch["status"][list].as_array_mut().into_iter().flatten();
        for container in statuses {
            container["state"]["running"] = serde_json::Value::Null;
        }
    }
    patch
}

/// `pod` rejected because its node has no room left: `allocatable` pods
/// already run there (upstream's kubelet admission, reason OutOfpods).
pub fn rejected_status(allocatable: u32) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some("OutOfpods".into()),
        message: Some(format!(
            "Pod was rejected: Node didn't have enough resource: pods, capacity: {allocatable}"
        )),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid timestamp")
    }

    fn pod(restart_policy: &str) -> Pod {
        let container = |name: &str, image: &str, restart: Option<&str>| Container {
            name: name.into(),
            image: Some(image.into()),
            restart_policy: restart.map(Into::into),
            ..Container::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("hollow-node-2".into()),
                restart_policy: Some(restart_policy.into()),
                containers: vec![
                    container("app", "nginx:1", None),
                    container("log", "busybox", None),
                ],
                init_containers: Some(vec![
                    container("setup", "busybox", None),
                    container("proxy", "envoy", Some("Always")),
                ]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn view_digests_the_pod() {
        let view = PodView::new(&pod("OnFailure"), 2);
        assert_eq!(view.uid, "uid-1");
        assert_eq!(view.node, 2);
        assert!(view.may_complete);
        assert!(!view.deleting);
        assert_eq!(view.phase, None);
        let names: Vec<_> = view.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "log"]);
        assert_eq!(view.containers[0].image, "nginx:1");
        let sidecars: Vec<_> = view.init_containers.iter().map(|c| c.sidecar).collect();
        assert_eq!(sidecars, [false, true]);
        assert!(!PodView::new(&pod("Always"), 2).may_complete);
    }

    #[test]
    fn new_pods_run_and_running_pods_stay() {
        let view = PodView::new(&pod("Always"), 2);
        assert_eq!(decide(&view, None, None, at(0)), Action::Run);
        let running = Some(Reported::Running(at(0)));
        assert_eq!(decide(&view, running, None, at(5)), Action::Nothing);
        // `complete_after` applies only to pods that may complete.
        let after = Some(Duration::from_secs(3));
        assert_eq!(decide(&view, running, after, at(5)), Action::Nothing);
        // A pod the API already shows running (say after a restart of the
        // hollow nodes) is adopted, not reported again.
        let adopted = PodView {
            phase: Some("Running".into()),
            pod_ip: Some("10.128.2.9".into()),
            ..view.clone()
        };
        assert_eq!(decide(&adopted, None, None, at(5)), Action::Nothing);
        // Running without an IP is not ours: report it.
        let foreign = PodView {
            phase: Some("Running".into()),
            ..view
        };
        assert_eq!(decide(&foreign, None, None, at(5)), Action::Run);
    }

    #[test]
    fn completion_waits_for_its_time() {
        let view = PodView::new(&pod("Never"), 2);
        let after = Some(Duration::from_secs(30));
        let running = Some(Reported::Running(at(0)));
        assert_eq!(
            decide(&view, running, after, at(10)),
            Action::CompleteIn(Duration::from_secs(20))
        );
        assert_eq!(decide(&view, running, after, at(30)), Action::Complete);
        assert_eq!(decide(&view, running, after, at(99)), Action::Complete);
        // The API's startTime counts for adopted pods.
        let adopted = PodView {
            phase: Some("Running".into()),
            pod_ip: Some("10.128.2.9".into()),
            start_time: Some(at(-25)),
            ..view.clone()
        };
        assert_eq!(
            decide(&adopted, None, after, at(0)),
            Action::CompleteIn(Duration::from_secs(5))
        );
        let done = Some(Reported::Terminal);
        assert_eq!(decide(&view, done, after, at(99)), Action::Nothing);
        let succeeded = PodView {
            phase: Some("Succeeded".into()),
            ..view.clone()
        };
        assert_eq!(decide(&succeeded, None, after, at(99)), Action::Nothing);
    }

    #[test]
    fn deletion_wins() {
        let view = PodView {
            deleting: true,
            phase: Some("Succeeded".into()),
            ..PodView::new(&pod("Never"), 2)
        };
        assert_eq!(decide(&view, None, None, at(0)), Action::Delete);
        assert_eq!(
            decide(&view, Some(Reported::Terminal), None, at(0)),
            Action::Delete
        );
        // Once: a pod held by finalizers stays a while after the delete.
        assert_eq!(
            decide(&view, Some(Reported::Deleted), None, at(0)),
            Action::Nothing
        );
    }

    #[test]
    fn a_terminal_phase_in_the_api_is_final() {
        let failed = PodView {
            phase: Some("Failed".into()),
            ..PodView::new(&pod("Never"), 2)
        };
        let running = Some(Reported::Running(at(0)));
        let after = Some(Duration::from_secs(1));
        assert_eq!(decide(&failed, running, after, at(99)), Action::Nothing);
        assert_eq!(decide(&failed, None, None, at(99)), Action::Nothing);
    }

    #[test]
    fn running_status_reports_every_container_ready() {
        let view = PodView::new(&pod("Always"), 2);
        let status = running_status(&view, "10.255.0.3", "10.128.2.1", at(7));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.start_time, Some(Time(at(7))));
        assert_eq!(status.host_ip.as_deref(), Some("10.255.0.3"));
        assert_eq!(
            status.host_ips,
            Some(vec![HostIP {
                ip: "10.255.0.3".into()
            }])
        );
        assert_eq!(status.pod_ip.as_deref(), Some("10.128.2.1"));
        assert_eq!(
            status.pod_ips,
            Some(vec![PodIP {
                ip: "10.128.2.1".into()
            }])
        );
        let conditions = status.conditions.expect("conditions");
        for type_ in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            let c = conditions
                .iter()
                .find(|c| c.type_ == type_)
                .unwrap_or_else(|| panic!("no {type_}"));
            assert_eq!(c.status, "True", "{type_}");
        }
        let containers = status.container_statuses.expect("containerStatuses");
        assert_eq!(containers.len(), 2);
        let app = &containers[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.image, "nginx:1");
        assert_eq!(app.image_id, "hollow://nginx:1");
        assert_eq!(app.container_id.as_deref(), Some("hollow://uid-1/app"));
        assert!(app.ready);
        assert_eq!(app.started, Some(true));
        assert_eq!(app.restart_count, 0);
        let state = app.state.as_ref().expect("state");
        assert_eq!(
            state.running.as_ref().and_then(|r| r.started_at.clone()),
            Some(Time(at(7)))
        );
        let init = status
            .init_container_statuses
            .expect("initContainerStatuses");
        let setup = init[0].state.as_ref().expect("state");
        let terminated = setup.terminated.as_ref().expect("setup terminated");
        assert_eq!(terminated.exit_code, 0);
        assert_eq!(terminated.reason.as_deref(), Some("Completed"));
        assert!(init[1].state.as_ref().expect("state").running.is_some());
        assert!(init[1].ready);
    }

    #[test]
    fn succeeded_patch_terminates_containers() {
        let view = PodView::new(&pod("Never"), 2);
        let patch = succeeded_patch(&view, at(0), at(30));
        let status = &patch["status"];
        assert_eq!(status["phase"], "Succeeded");
        let ready = status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "PodCompleted");
        for list in ["containerStatuses", "initContainerStatuses"] {
            for container in status[list].as_array().expect(list) {
                let state = container["state"].as_object().expect("state");
                assert_eq!(state["running"], serde_json::Value::Null);
                assert_eq!(state["terminated"]["exitCode"], 0);
                assert_eq!(state["terminated"]["reason"], "Completed");
                assert_eq!(container["ready"], false);
            }
        }
        assert_eq!(
            status["containerStatuses"][0]["state"]["terminated"]["finishedAt"],
            serde_json::to_value(Time(at(30))).expect("time")
        );
    }

    #[test]
    fn rejection_is_out_of_pods() {
        let status = rejected_status(110);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("OutOfpods"));
        assert!(status.message.expect("message").contains("110"));
    }
}
