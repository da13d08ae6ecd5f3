use serde_json::json;

use super::*;
use crate::pods::runtime::ContainerRecord;

/// A pod with one container `c` asking for `cpu`/`memory` (requests half the
/// limits), with `policy` as the memory resize policy when given.
fn pod(cpu_limit: &str, memory_limit: &str, memory_policy: Option<&str>) -> Pod {
    let mut container = json!({"name": "c", "image": "busybox", "resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": cpu_limit, "memory": memory_limit}}});
    if let Some(policy) = memory_policy {
        container["resizePolicy"] = json!([
            {"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "memory", "restartPolicy": policy}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u1", "generation": 2},
        "spec": {"containers": [container]},
    }))
    .expect("pod")
}

fn container(pod: &Pod) -> &Container {
    &pod.spec.as_ref().expect("spec").containers[0]
}

fn desired(pod: &Pod) -> LinuxContainerResources {
    crate::config::linux_resources(pod, container(pod), None).expect("resources")
}

fn applied(pod: &Pod) -> CgroupResources {
    CgroupResources::from(&desired(pod))
}

#[test]
fn a_container_running_what_its_spec_asks_is_kept() {
    let p = pod("200m", "128Mi", None);
    assert_eq!(
        decide(container(&p), &desired(&p), Some(&applied(&p))),
        Action::Keep
    );
    // Nothing is known of what runs: nothing is done.
    assert_eq!(decide(container(&p), &desired(&p), None), Action::Keep);
}

#[test]
fn changed_limits_are_applied_in_place() {
    let before = pod("200m", "128Mi", None);
    let after = pod("500m", "256Mi", None);
    let Action::Update(linux) =
        decide(container(&after), &desired(&after), Some(&applied(&before)))
    else {
        panic!("expected an in-place update");
    };
    assert_eq!(linux.cpu_quota, 50_000, "500m of a 100 ms period");
    assert_eq!(linux.cpu_period, 100_000);
    assert_eq!(linux.cpu_shares, 102, "the 100m request");
    assert_eq!(linux.memory_limit_in_bytes, 256 << 20);
}

#[test]
fn the_resize_policy_decides_on_a_restart() {
    let before = pod("200m", "128Mi", Some("RestartContainer"));
    // Memory changed and memory restarts the container.
    let memory = pod("200m", "256Mi", Some("RestartContainer"));
    assert_eq!(
        decide(
            container(&memory),
            &desired(&memory),
            Some(&applied(&before))
        ),
        Action::Restart
    );
    // Only cpu changed, which needs no restart.
    let cpu = pod("300m", "128Mi", Some("RestartContainer"));
    assert!(matches!(
        decide(container(&cpu), &desired(&cpu), Some(&applied(&before))),
        Action::Update(_)
    ));
}

fn node(cpu_millis: u64, memory_bytes: u64) -> NodeAllocatable {
    NodeAllocatable {
        cpu_millis,
        memory_bytes,
        ephemeral_storage_bytes: 0,
    }
}

#[test]
fn the_node_defers_or_refuses_what_does_not_fit() {
    let wanted = Requests {
        cpu: 1500,
        memory: 1 << 30,
    };
    let others = Requests {
        cpu: 1000,
        memory: 0,
    };
    assert_eq!(
        admit(wanted, Requests::default(), &node(2000, 4 << 30)),
        Ok(())
    );
    assert_eq!(
        admit(wanted, others, &node(2000, 4 << 30)),
        Err(Pending {
            reason: "Deferred",
            message:
                "Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000"
                    .into(),
        })
    );
    assert_eq!(
        admit(wanted, others, &node(1000, 4 << 30)),
        Err(Pending {
            reason: "Infeasible",
            message: "Node didn't have enough capacity: cpu, requested: 1500, capacity: 1000"
                .into(),
        })
    );
    // Memory is checked first.
    let pending = admit(wanted, others, &node(1000, 1 << 20)).expect_err("infeasible");
    assert_eq!(
        pending.message,
        "Node didn't have enough capacity: memory, requested: 1073741824, capacity: 1048576"
    );
}

/// `p` as the agent reported it: `allocatedResources` of its container.
fn with_allocation(mut p: Pod, cpu: &str) -> Pod {
    p.status = Some(
        serde_json::from_value(json!({"phase": "Running", "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
            "allocatedResources": {"cpu": cpu, "memory": "64Mi"}}]}))
        .expect("status"),
    );
    p
}

fn with_request(mut p: Pod, cpu: &str) -> Pod {
    let spec = p.spec.as_mut().expect("spec");
    let resources = spec.containers[0].resources.as_mut().expect("resources");
    resources
        .requests
        .as_mut()
        .expect("requests")
        .insert("cpu".into(), ApiQuantity(cpu.into()));
    resources
        .limits
        .as_mut()
        .expect("limits")
        .insert("cpu".into(), ApiQuantity(cpu.into()));
    p
}

#[test]
fn only_a_changed_request_is_admitted_again() {
    let mut neighbour = with_allocation(with_request(pod("1", "128Mi", None), "1500m"), "1500m");
    neighbour.metadata.uid = Some("u2".into());
    let small = node(2000, 4 << 30);

    // Allocated as asked: nothing to admit, even on a full node.
    let steady = with_allocation(with_request(pod("1", "128Mi", None), "1"), "1");
    assert_eq!(admission(&steady, &[&neighbour, &steady], &small), Ok(()));

    // Growing from 500m to 1 does not fit beside the neighbour's 1500m.
    let grown = with_allocation(with_request(pod("1", "128Mi", None), "1"), "500m");
    let pending = admission(&grown, &[&neighbour, &grown], &small).expect_err("deferred");
    assert_eq!(pending.reason, "Deferred");
    assert_eq!(
        pending.message,
        "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
    );

    // A finished neighbour holds nothing.
    let mut done = neighbour.clone();
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    assert_eq!(admission(&grown, &[&done, &grown], &small), Ok(()));
}

fn running_record(resources: CgroupResources) -> PodRuntime {
    PodRuntime {
        sandboxes: Vec::new(),
        containers: vec![ContainerRecord {
            id: "c1".into(),
            sandbox_id: "s1".into(),
            name: "c".into(),
            attempt: 0,
            state: skiff_cri::v1::ContainerState::ContainerRunning,
            created_at: 1,
            started_at: 1,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: "busybox".into(),
            image_ref: "sha256:1".into(),
            log_path: String::new(),
            resources: Some(resources),
        }],
    }
}

fn running_status() -> PodStatus {
    serde_json::from_value(json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}}}]}))
    .expect("status")
}

fn desired_of(pod: &Pod) -> impl Fn(&Container) -> Option<CgroupResources> + '_ {
    move |c| {
        crate::config::linux_resources(pod, c, None)
            .ok()
            .map(|r| CgroupResources::from(&r))
    }
}

#[test]
fn a_pending_resize_reports_the_old_allocation_and_what_runs() {
    let old = pod("200m", "128Mi", None);
    let new = with_allocation(with_request(pod("200m", "128Mi", None), "150m"), "100m");
    let mut status = running_status();
    let state = ResizeState {
        pending: Some(Pending {
            reason: "Infeasible",
            message: "Node didn't have enough capacity: cpu, requested: 150, capacity: 100".into(),
        }),
        ..ResizeState::default()
    };
    let now = jiff::Timestamp::UNIX_EPOCH;
    report(
        &mut status,
        &new,
        &running_record(applied(&old)),
        &state,
        &desired_of(&new),
        now,
    );
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    let allocated = container.allocated_resources.as_ref().expect("allocated");
    assert_eq!(allocated["cpu"].0, "100m", "the old allocation stays");
    let resources = container.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("requests");
    let limits = resources.limits.as_ref().expect("limits");
    assert_eq!(requests["cpu"].0, "100m", "from the shares still applied");
    assert_eq!(limits["cpu"].0, "200m");
    assert_eq!(limits["memory"].0, "128Mi");
    let conditions = status.conditions.as_ref().expect("conditions");
    let pending = conditions
        .iter()
        .find(|c| c.type_ == POD_RESIZE_PENDING)
        .expect("pending condition");
    assert_eq!(pending.reason.as_deref(), Some("Infeasible"));
    assert_eq!(pending.observed_generation, Some(2));
    assert!(conditions.iter().any(|c| c.type_ == "Ready"), "others stay");
    assert_eq!(status.observed_generation, Some(2));
}

#[test]
fn an_admitted_resize_is_in_progress_until_the_cgroups_follow() {
    let old = pod("200m", "128Mi", None);
    let new = pod("500m", "256Mi", None);
    let mut status = running_status();
    status
        .conditions
        .get_or_insert_default()
        .push(PodCondition {
            type_: POD_RESIZE_PENDING.into(),
            status: "True".into(),
            reason: Some("Deferred".into()),
            ..PodCondition::default()
        });
    let state = ResizeState {
        in_progress: true,
        ..ResizeState::default()
    };
    let now = jiff::Timestamp::UNIX_EPOCH;
    report(
        &mut status,
        &new,
        &running_record(applied(&old)),
        &state,
        &desired_of(&new),
        now,
    );
    let types: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types, ["Ready", POD_RESIZE_IN_PROGRESS]);
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["cpu"].0, "200m", "what the cgroup still has");
    assert_eq!(limits["memory"].0, (128u64 << 20).to_string());

    // Applied: the spec's own amounts, and no condition.
    let mut status = running_status();
    report(
        &mut status,
        &new,
        &running_record(applied(&new)),
        &ResizeState::default(),
        &desired_of(&new),
        now,
    );
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    let resources = container.resources.as_ref().expect("resources");
    assert_eq!(
        resources.limits.as_ref().expect("limits")["memory"].0,
        "256Mi"
    );
    assert_eq!(
        container.allocated_resources.as_ref().expect("allocated")["cpu"].0,
        "100m"
    );
    assert_eq!(
        status.conditions.as_ref().map(Vec::len),
        Some(1),
        "only Ready is left"
    );
}
