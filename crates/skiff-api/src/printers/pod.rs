//! The pod row: the one printer with real logic, because the Status column is
//! derived from container states the way users know from `kubectl get pods`
//! (`ContainerCreating`, `CrashLoopBackOff`, `Init:1/2`, `Completed`, `Terminating`).

use jiff::Timestamp;
use serde_json::Value;

use super::{AGE, NAME, age, arr_at, column, human_duration, name, opt_str_at, str_at, wide};
use crate::registry::Column;

/// Columns of `kubectl get pods`.
pub(crate) const POD_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Ready containers out of all containers."),
    column(
        "Status",
        "string",
        "Phase or the most telling container state.",
    ),
    column(
        "Restarts",
        "string",
        "Container restarts, and how long ago the last one was.",
    ),
    AGE,
    wide("IP", "string", "IP address of the pod."),
    wide("Node", "string", "Node the pod runs on."),
    wide(
        "Nominated Node",
        "string",
        "Node nominated for the pod by preemption.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "Satisfied readiness gates out of all gates.",
    ),
];

/// The reason upstream shows for a pod being deleted while its node is gone.
const NODE_LOST: &str = "NodeLost";

/// Restart count and the latest restart time of a set of container statuses.
#[derive(Default)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += status
            .get("restartCount")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let finished = status
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok());
        if let Some(finished) = finished
            && self.last.is_none_or(|last| last < finished)
        {
            self.last = Some(finished);
        }
    }
}

/// Why a container terminated: its reason, else `Signal:N` or `ExitCode:N`.
fn terminated_reason(terminated: &Value) -> String {
    if let Some(reason) = opt_str_at(terminated, "/reason") {
        return reason.to_owned();
    }
    match terminated
        .get("signal")
        .and_then(Value::as_i64)
        .unwrap_or(0)
    {
        0 => format!(
            "ExitCode:{}",
            terminated
                .get("exitCode")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
        signal => format!("Signal:{signal}"),
    }
}

/// One row of `kubectl get pods -o wide`.
pub(crate) fn pod_row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let phase = str_at(pod, "/status/phase");
    let mut reason = opt_str_at(pod, "/status/reason")
        .unwrap_or(phase)
        .to_owned();
    let conditions = arr_at(pod, "/status/conditions");
    if conditions
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }

    // Sidecars (init containers with restartPolicy Always) count as containers.
    let init_specs = arr_at(pod, "/spec/initContainers");
    let is_sidecar = |container_name: &str| {
        init_specs.iter().any(|c| {
            str_at(c, "/name") == container_name && str_at(c, "/restartPolicy") == "Always"
        })
    };
    let sidecars = init_specs
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .count();
    let total = arr_at(pod, "/spec/containers").len() + sidecars;
    let mut ready = 0usize;

    let mut restarts = Restarts::default();
    let mut sidecar_restarts = Restarts::default();
    let mut initializing = false;
    for (i, status) in arr_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts.add(status);
        let sidecar = is_sidecar(str_at(status, "/name"));
        if sidecar {
            sidecar_restarts.add(status);
        }
        let terminated = status.pointer("/state/terminated");
        let waiting_reason = opt_str_at(status, "/state/waiting/reason");
        match terminated {
            Some(t) if t.get("exitCode").and_then(Value::as_i64) == Some(0) => continue,
            _ if sidecar && status.get("started").and_then(Value::as_bool) == Some(true) => {
                if status.get("ready").and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            Some(t) => reason = format!("Init:{}", terminated_reason(t)),
            None => match waiting_reason {
                Some(r) if r != "PodInitializing" => reason = format!("Init:{r}"),
                _ => reason = format!("Init:{i}/{}", init_specs.len()),
            },
        }
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| str_at(c, "/type") == "Initialized" && str_at(c, "/status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        let mut has_running = false;
        for status in arr_at(pod, "/status/containerStatuses").iter().rev() {
            restarts.add(status);
            if let Some(r) = opt_str_at(status, "/state/waiting/reason") {
                reason = r.to_owned();
            } else if let Some(t) = status.pointer("/state/terminated") {
                reason = terminated_reason(t);
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but others still run is not done.
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }

    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        if str_at(pod, "/status/reason") == NODE_LOST {
            reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_owned();
        }
    }

    let restarts_cell = match restarts.last {
        Some(last) if restarts.count != 0 => {
            format!(
                "{} ({} ago)",
                restarts.count,
                human_duration(now.duration_since(last))
            )
        }
        _ => restarts.count.to_string(),
    };

    let ip = arr_at(pod, "/status/podIPs")
        .first()
        .and_then(|ip| opt_str_at(ip, "/ip"))
        .unwrap_or("<none>");
    let node = opt_str_at(pod, "/spec/nodeName").unwrap_or("<none>");
    let nominated = opt_str_at(pod, "/status/nominatedNodeName").unwrap_or("<none>");
    let gates = arr_at(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let satisfied = gates
            .iter()
            .filter(|gate| {
                let wanted = str_at(gate, "/conditionType");
                conditions
                    .iter()
                    .find(|c| str_at(c, "/type") == wanted)
                    .is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{satisfied}/{}", gates.len())
    };

    vec![
        name(pod),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts_cell),
        age(pod, now),
        Value::from(ip),
        Value::from(node),
        Value::from(nominated),
        Value::from(readiness_gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::fixtures::{meta, now};
    use serde_json::json;

    fn cells(pod: &Value) -> Vec<String> {
        pod_row(pod, now())
            .into_iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    fn base(spec: Value, status: Value) -> Value {
        json!({
            "metadata": meta("web-1", "2024-05-01T11:55:00Z"),
            "spec": spec,
            "status": status,
        })
    }

    #[test]
    fn running_pod_with_restart() {
        let pod = base(
            json!({"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "log"}]}),
            json!({
                "phase": "Running",
                "podIPs": [{"ip": "10.0.0.7"}],
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 3, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:58:00Z"}}},
                    {"name": "log", "ready": false, "restartCount": 0, "state": {"running": {}}}
                ]
            }),
        );
        assert_eq!(
            cells(&pod),
            [
                "web-1",
                "1/2",
                "Running",
                "3 (2m ago)",
                "5m",
                "10.0.0.7",
                "node-a",
                "<none>",
                "<none>"
            ]
        );
    }

    #[test]
    fn pending_pod_without_status() {
        let pod = base(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Pending"}),
        );
        assert_eq!(
            cells(&pod),
            [
                "web-1", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"
            ]
        );
    }

    #[test]
    fn waiting_reasons_win() {
        let pod = base(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Pending", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]}),
        );
        assert_eq!(cells(&pod)[2], "ContainerCreating");
        let pod = base(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T10:00:00Z"}}}
            ]}),
        );
        let row = cells(&pod);
        assert_eq!(row[1], "0/1");
        assert_eq!(row[2], "CrashLoopBackOff");
        assert_eq!(row[3], "5 (120m ago)");
    }

    #[test]
    fn completed_and_failed_containers() {
        let pod = base(
            json!({"containers": [{"name": "job"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "job", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]}),
        );
        assert_eq!(cells(&pod)[2], "Completed");
        let pod = base(
            json!({"containers": [{"name": "job"}]}),
            json!({"phase": "Failed", "containerStatuses": [
                {"name": "job", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 2}}}
            ]}),
        );
        assert_eq!(cells(&pod)[2], "ExitCode:2");
        let pod = base(
            json!({"containers": [{"name": "job"}]}),
            json!({"phase": "Failed", "containerStatuses": [
                {"name": "job", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137, "signal": 9}}}
            ]}),
        );
        assert_eq!(cells(&pod)[2], "Signal:9");
    }

    #[test]
    fn completed_container_with_running_sibling_is_running() {
        let status = |ready: &str| {
            json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]})
        };
        let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(cells(&base(spec.clone(), status("True")))[2], "Running");
        assert_eq!(cells(&base(spec, status("False")))[2], "NotReady");
    }

    #[test]
    fn init_containers_progress_and_failures() {
        let spec = json!({
            "initContainers": [{"name": "i1"}, {"name": "i2"}],
            "containers": [{"name": "app"}]
        });
        let pod = base(
            spec.clone(),
            json!({"phase": "Pending",
            "initContainerStatuses": [
                {"name": "i1", "ready": true, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "ready": false, "restartCount": 0, "state": {"running": {}}}
            ],
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
            ]}),
        );
        assert_eq!(cells(&pod)[1..3], ["0/1", "Init:1/2"]);
        let pod = base(
            spec.clone(),
            json!({"phase": "Pending",
            "initContainerStatuses": [
                {"name": "i1", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}),
        );
        assert_eq!(cells(&pod)[2..4], ["Init:CrashLoopBackOff", "2"]);
        let pod = base(
            spec,
            json!({"phase": "Pending",
            "initContainerStatuses": [
                {"name": "i1", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}
            ]}),
        );
        assert_eq!(cells(&pod)[2], "Init:ExitCode:3");
    }

    #[test]
    fn sidecars_count_as_containers() {
        let pod = base(
            json!({
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]
            }),
            json!({"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [
                {"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}
            ],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}
            ]}),
        );
        let row = cells(&pod);
        assert_eq!(row[1..4], ["2/2", "Running", "1"]);
    }

    #[test]
    fn terminating_scheduling_gated_and_gates() {
        let mut pod = base(
            json!({"containers": [{"name": "app"}], "readinessGates": [{"conditionType": "lb/ready"}, {"conditionType": "x"}]}),
            json!({"phase": "Running", "conditions": [{"type": "lb/ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        let row = cells(&pod);
        assert_eq!(row[2], "Terminating");
        assert_eq!(row[8], "1/2");

        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(&pod)[2], "Unknown");

        let gated = base(
            json!({"containers": [{"name": "app"}], "schedulingGates": [{"name": "g"}]}),
            json!({"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(cells(&gated)[2], "SchedulingGated");

        // A finished pod being deleted keeps its final status.
        let mut done = base(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        done["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(cells(&done)[2], "Completed");
    }

    #[test]
    fn evicted_pod_shows_status_reason() {
        let pod = base(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Failed", "reason": "Evicted"}),
        );
        assert_eq!(cells(&pod)[2], "Evicted");
    }
}
