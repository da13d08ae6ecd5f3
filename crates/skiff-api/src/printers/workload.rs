//! Rows of the workload controllers (apps, batch) and PodDisruptionBudgets.

use jiff::Timestamp;
use serde_json::Value;

use super::{
    AGE, CONTAINERS, IMAGES, NAME, age, arr_at, bool_ptr, column, container_cells,
    format_label_selector, format_labels, human_duration, i64_at, name, opt_bool_at, opt_i64_at,
    selector_string, since, str_at, wide,
};
use crate::registry::Column;

/// Wide `Selector` column.
const SELECTOR: Column = wide(
    "Selector",
    "string",
    "Label selector of the workload's pods.",
);

/// `spec.replicas`; objects are stored defaulted, so absence means the default, 1.
fn desired_replicas(obj: &Value) -> i64 {
    opt_i64_at(obj, "/spec/replicas").unwrap_or(1)
}

/// The wide cells of a template-bearing workload whose spec is at `spec_ptr` (`/spec`,
/// or `/spec/jobTemplate/spec` for a CronJob): Containers and Images of its pod
/// template, and its selector as upstream's `FormatLabelSelector`.
fn template_cells(obj: &Value, spec_ptr: &str) -> [Value; 3] {
    let spec = obj.pointer(spec_ptr).unwrap_or(&Value::Null);
    let (containers, images) = container_cells(arr_at(spec, "/template/spec/containers"));
    let selector = format_label_selector(spec.get("selector"));
    [containers, images, Value::from(selector)]
}

/// Columns of `kubectl get deployments`.
pub(crate) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Ready pods out of desired pods."),
    column("Up-to-date", "string", "Pods running the current template."),
    column(
        "Available",
        "string",
        "Pods ready for at least minReadySeconds.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// One Deployment row.
pub(crate) fn deployment_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(arr_at(obj, "/spec/template/spec/containers"));
    let selector =
        selector_string(obj.pointer("/spec/selector")).unwrap_or_else(|_| "<invalid>".to_owned());
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            i64_at(obj, "/status/readyReplicas"),
            desired_replicas(obj)
        )),
        Value::from(i64_at(obj, "/status/updatedReplicas")),
        Value::from(i64_at(obj, "/status/availableReplicas")),
        age(obj, now),
        containers,
        images,
        Value::from(selector),
    ]
}

/// Columns of `kubectl get replicasets`.
pub(crate) const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column("Desired", "integer", "Desired number of pods."),
    column("Current", "integer", "Observed number of pods."),
    column("Ready", "integer", "Ready pods."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// One ReplicaSet row.
pub(crate) fn replica_set_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images, selector] = template_cells(obj, "/spec");
    vec![
        name(obj),
        Value::from(desired_replicas(obj)),
        Value::from(i64_at(obj, "/status/replicas")),
        Value::from(i64_at(obj, "/status/readyReplicas")),
        age(obj, now),
        containers,
        images,
        selector,
    ]
}

/// Columns of `kubectl get statefulsets`.
pub(crate) const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Ready pods out of desired pods."),
    AGE,
    CONTAINERS,
    IMAGES,
];

/// One StatefulSet row.
pub(crate) fn stateful_set_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(arr_at(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            i64_at(obj, "/status/readyReplicas"),
            desired_replicas(obj)
        )),
        age(obj, now),
        containers,
        images,
    ]
}

/// Columns of `kubectl get daemonsets`.
pub(crate) const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "Nodes that should run the daemon pod.",
    ),
    column(
        "Current",
        "integer",
        "Nodes that run the daemon pod and should.",
    ),
    column("Ready", "integer", "Nodes whose daemon pod is ready."),
    column(
        "Up-to-date",
        "integer",
        "Nodes that run the current template.",
    ),
    column(
        "Available",
        "integer",
        "Nodes whose daemon pod is available.",
    ),
    column(
        "Node Selector",
        "string",
        "Node labels the daemon pods require.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// One DaemonSet row.
pub(crate) fn daemon_set_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images, selector] = template_cells(obj, "/spec");
    vec![
        name(obj),
        Value::from(i64_at(obj, "/status/desiredNumberScheduled")),
        Value::from(i64_at(obj, "/status/currentNumberScheduled")),
        Value::from(i64_at(obj, "/status/numberReady")),
        Value::from(i64_at(obj, "/status/updatedNumberScheduled")),
        Value::from(i64_at(obj, "/status/numberAvailable")),
        Value::from(format_labels(
            obj.pointer("/spec/template/spec/nodeSelector"),
        )),
        age(obj, now),
        containers,
        images,
        selector,
    ]
}

/// Columns of `kubectl get jobs`.
pub(crate) const JOB_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Status",
        "string",
        "Complete, Failed, Terminating, Suspended, Running, or an interim condition.",
    ),
    column(
        "Completions",
        "string",
        "Succeeded pods out of required completions.",
    ),
    column("Duration", "string", "How long the job ran."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// True if the job has condition `type_` with status `True`.
fn job_condition(job: &Value, type_: &str) -> bool {
    arr_at(job, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == type_)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

/// One Job row.
pub(crate) fn job_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = i64_at(obj, "/status/succeeded");
    let completions = match opt_i64_at(obj, "/spec/completions") {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match i64_at(obj, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time = |ptr| {
        obj.pointer(ptr)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok())
    };
    let duration = match (time("/status/startTime"), time("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    let deleting = obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let status = if job_condition(obj, "Complete") {
        "Complete"
    } else if job_condition(obj, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if job_condition(obj, "Suspended") {
        "Suspended"
    } else if job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else if job_condition(obj, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let [containers, images, selector] = template_cells(obj, "/spec");
    vec![
        name(obj),
        Value::from(status),
        Value::from(completions),
        Value::from(duration),
        age(obj, now),
        containers,
        images,
        selector,
    ]
}

/// Columns of `kubectl get cronjobs`.
pub(crate) const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    column("Schedule", "string", "Cron schedule."),
    column("Timezone", "string", "Time zone of the schedule."),
    column("Suspend", "boolean", "Whether new runs are suspended."),
    column("Active", "integer", "Number of running jobs."),
    column(
        "Last Schedule",
        "string",
        "Time since the last scheduled run.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// One CronJob row.
pub(crate) fn cron_job_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match obj
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
    {
        Some(t) => since(t, now),
        None => "<none>".to_owned(),
    };
    let time_zone = obj
        .pointer("/spec/timeZone")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let [containers, images, selector] = template_cells(obj, "/spec/jobTemplate/spec");
    vec![
        name(obj),
        Value::from(str_at(obj, "/spec/schedule")),
        Value::from(time_zone),
        Value::from(bool_ptr(opt_bool_at(obj, "/spec/suspend"))),
        Value::from(arr_at(obj, "/status/active").len()),
        Value::from(last_schedule),
        age(obj, now),
        containers,
        images,
        selector,
    ]
}

/// Columns of `kubectl get poddisruptionbudgets`.
pub(crate) const POD_DISRUPTION_BUDGET_COLUMNS: &[Column] = &[
    NAME,
    column("Min Available", "string", "Pods that must stay available."),
    column("Max Unavailable", "string", "Pods that may be unavailable."),
    column(
        "Allowed Disruptions",
        "integer",
        "Pods that may be disrupted now.",
    ),
    AGE,
];

/// An int-or-string as text, or `N/A` when unset.
fn int_or_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_owned(),
    }
}

/// One PodDisruptionBudget row.
pub(crate) fn pod_disruption_budget_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(int_or_string(obj.pointer("/spec/minAvailable"))),
        Value::from(int_or_string(obj.pointer("/spec/maxUnavailable"))),
        Value::from(i64_at(obj, "/status/disruptionsAllowed")),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::fixtures::{self, now};
    use serde_json::json;

    fn meta() -> Value {
        fixtures::meta("web", "2024-05-01T10:00:00Z")
    }

    #[test]
    fn deployment_row_matches_kubectl() {
        let d = json!({
            "metadata": meta(),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            deployment_row(&d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("120m"),
                json!("nginx,log"),
                json!("nginx:1.25,busybox"),
                json!("app=web")
            ]
        );
        // A fresh deployment has no status yet.
        let fresh = json!({"metadata": meta(), "spec": {"replicas": 1}});
        assert_eq!(
            deployment_row(&fresh, now())[1..4],
            [json!("0/1"), json!(0), json!(0)]
        );
    }

    #[test]
    fn job_status_completions_and_duration() {
        let job = json!({
            "metadata": meta(),
            "spec": {"completions": 3, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}},
            "status": {"succeeded": 3, "startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        });
        let row = job_row(&job, now());
        assert_eq!(row[1..4], [json!("Complete"), json!("3/3"), json!("42s")]);
        assert_eq!(row[7], json!("batch.kubernetes.io/controller-uid=u1"));

        let running = json!({"metadata": meta(), "spec": {"parallelism": 2},
            "status": {"startTime": "2024-05-01T11:59:00Z", "active": 2}});
        assert_eq!(
            job_row(&running, now())[1..4],
            [json!("Running"), json!("0/1 of 2"), json!("60s")]
        );

        let new = json!({"metadata": meta(), "spec": {}});
        assert_eq!(
            job_row(&new, now())[1..4],
            [json!("Running"), json!("0/1"), json!("")]
        );

        let failed = json!({"metadata": meta(), "spec": {"completions": 1},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}});
        assert_eq!(job_row(&failed, now())[1], json!("Failed"));

        let mut met = new.clone();
        met["status"] = json!({"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]});
        assert_eq!(job_row(&met, now())[1], json!("SuccessCriteriaMet"));
        met["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:00:00Z");
        assert_eq!(job_row(&met, now())[1], json!("Terminating"));
    }

    #[test]
    fn cron_job_row_placeholders() {
        let cj = json!({"metadata": meta(), "spec": {"schedule": "*/5 * * * *", "suspend": false,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"lastScheduleTime": "2024-05-01T11:55:00Z", "active": [{"name": "j1"}]}});
        assert_eq!(
            cron_job_row(&cj, now()),
            vec![
                json!("web"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("120m"),
                json!("c"),
                json!("busybox"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn daemon_set_and_pdb_rows() {
        let ds = json!({"metadata": meta(), "spec": {"selector": {"matchLabels": {"k": "v"}},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": []}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1}});
        let row = daemon_set_row(&ds, now());
        assert_eq!(
            row[1..7],
            [
                json!(2),
                json!(2),
                json!(1),
                json!(0),
                json!(0),
                json!("kubernetes.io/os=linux")
            ]
        );
        let pdb = json!({"metadata": meta(), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            pod_disruption_budget_row(&pdb, now())[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );
    }
}
