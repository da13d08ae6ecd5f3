//! Jobs and CronJobs run real pods to completion on the agent.

use std::time::Duration;

use skiff_testing::eventually;

use crate::util::{IMAGE, cluster, wait_node_ready};

#[test]
fn job_with_completions_and_parallelism_completes() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("job");
    let n = ns.name();
    let manifest = format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: count}}
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {{name: main, image: {IMAGE}, command: ["sh", "-c", "sleep 1; echo done"]}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest);
    // Never more than `parallelism` pods at once.
    let mut most_active = 0;
    eventually("the Job complete", Duration::from_secs(120), || {
        let job = c.get_json(&["get", "job", "count", "-n", n]);
        most_active = most_active.max(job["status"]["active"].as_u64().unwrap_or(0));
        job["status"]["succeeded"] == 5
            && job["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            })
    });
    assert!(most_active <= 2, "parallelism 2, saw {most_active} active");
    let waited = c.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/count",
        "-n",
        n,
        "--timeout=10s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    let table = c.kubectl_ok(&["get", "jobs", "-n", n]);
    assert!(table.contains("5/5"), "{table}");
    let pods = c.get_json(&[
        "get",
        "pods",
        "-n",
        n,
        "-l",
        "batch.kubernetes.io/job-name=count",
    ]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 5, "one pod per completion");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Succeeded"));
    let logs = c.kubectl_ok(&[
        "logs",
        "-n",
        n,
        pods[0]["metadata"]["name"].as_str().unwrap(),
    ]);
    assert_eq!(logs.trim(), "done");
}

#[test]
fn job_that_keeps_failing_stops_at_its_backoff_limit() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("jobfail");
    let n = ns.name();
    let manifest = format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: broken}}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - {{name: main, image: {IMAGE}, command: ["sh", "-c", "exit 3"]}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest);
    eventually("the Job failed", Duration::from_secs(120), || {
        let job = c.get_json(&["get", "job", "broken", "-n", n]);
        job["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Failed"
                    && c["status"] == "True"
                    && c["reason"] == "BackoffLimitExceeded"
            })
        })
    });
    let job = c.get_json(&["get", "job", "broken", "-n", n]);
    assert_eq!(
        job["status"]["failed"], 2,
        "the first try and one retry: {}",
        job["status"]
    );
}

#[test]
fn cronjob_runs_on_schedule_and_keeps_its_history_limit() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("cron");
    let n = ns.name();
    let manifest = format!(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {{name: main, image: {IMAGE}, command: ["true"]}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest);
    // Two schedules pass (at most ~2 minutes): the first Job is then
    // history, beyond the limit of one.
    let mut seen = std::collections::BTreeSet::new();
    eventually(
        "two scheduled Jobs, one kept",
        Duration::from_secs(150),
        || {
            let jobs = c.get_json(&["get", "jobs", "-n", n]);
            let items = jobs["items"].as_array().cloned().unwrap_or_default();
            for job in &items {
                seen.insert(job["metadata"]["name"].as_str().unwrap().to_string());
            }
            let complete = items
                .iter()
                .filter(|j| j["status"]["succeeded"] == 1)
                .count();
            seen.len() >= 2 && items.len() == 1 && complete == 1
        },
    );
    for name in &seen {
        assert!(name.starts_with("tick-"), "{name}");
    }
    let cron = c.get_json(&["get", "cronjob", "tick", "-n", n]);
    assert!(
        cron["status"]["lastScheduleTime"].is_string(),
        "{}",
        cron["status"]
    );
    assert!(
        cron["status"]["lastSuccessfulTime"].is_string(),
        "{}",
        cron["status"]
    );
}

/// `{.status.conditions[?(@.type=="TYPE")].FIELD}` of a Job.
fn job_condition(ns: &str, job: &str, type_: &str, field: &str) -> String {
    let json = cluster().get_json(&["get", "job", job, "-n", ns]);
    json["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c[field].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn pod_failure_and_success_policies_decide_the_job_outcome() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("jobpolicy");
    let n = ns.name();
    let job = |name: &str, extra: &str, script: &str| {
        format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{extra}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: main, image: {IMAGE}, command: ["sh", "-c", "{script}"]}}
---
"#
        )
    };
    let manifest = [
        job(
            "failjob",
            "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - {action: FailJob, onExitCodes: {containerName: main, operator: In, values: [42]}}",
            "exit 42",
        ),
        job(
            "ignored",
            "  backoffLimit: 0\n  podFailurePolicy:\n    rules:\n    - {action: Ignore, onExitCodes: {operator: In, values: [42]}}",
            "exit 42",
        ),
        job(
            "leader",
            "  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n  successPolicy:\n    rules:\n    - {succeededIndexes: \"0\"}",
            "if [ $JOB_COMPLETION_INDEX = 0 ]; then sleep 2; exit 0; fi; trap 'exit 0' TERM; sleep 3600 & wait",
        ),
    ]
    .concat();
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest);

    // FailJob: the first exit 42 fails the Job, with no retry.
    c.kubectl_ok(&[
        "wait",
        "-n",
        n,
        "--for=condition=Failed",
        "job/failjob",
        "--timeout=90s",
    ]);
    assert_eq!(
        job_condition(n, "failjob", "Failed", "reason"),
        "PodFailurePolicy"
    );
    assert_eq!(
        job_condition(n, "failjob", "FailureTarget", "status"),
        "True"
    );
    let pods = c.get_json(&["get", "pods", "-n", n, "-l", "job-name=failjob"]);
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 1, "no retry after FailJob");
    let pod = pods[0]["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(
        job_condition(n, "failjob", "Failed", "message"),
        format!(
            "Container main for pod {n}/{pod} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert_eq!(
        c.get_json(&["get", "job", "failjob", "-n", n])["status"]["failed"],
        1
    );

    // Success policy: index 0 succeeding completes the Job and stops the rest.
    c.kubectl_ok(&[
        "wait",
        "-n",
        n,
        "--for=condition=Complete",
        "job/leader",
        "--timeout=120s",
    ]);
    assert_eq!(
        job_condition(n, "leader", "Complete", "reason"),
        "SuccessPolicy"
    );
    assert_eq!(
        job_condition(n, "leader", "Complete", "message"),
        "Matched rules at index 0"
    );
    assert_eq!(
        job_condition(n, "leader", "SuccessCriteriaMet", "reason"),
        "SuccessPolicy"
    );
    let leader = c.get_json(&["get", "job", "leader", "-n", n])["status"].clone();
    assert_eq!(leader["completedIndexes"], "0", "{leader}");
    assert_eq!(leader["succeeded"], 1, "{leader}");
    assert!(leader["active"].is_null(), "{leader}");

    // Ignore: failures matching the rule never count against backoffLimit 0;
    // the pod is replaced instead.
    eventually(
        "an ignored failure replaced",
        Duration::from_secs(60),
        || {
            let failed = c.get_json(&[
                "get",
                "pods",
                "-n",
                n,
                "-l",
                "job-name=ignored",
                "--field-selector=status.phase=Failed",
            ]);
            failed["items"].as_array().map_or(0, Vec::len) >= 2
        },
    );
    let ignored = c.get_json(&["get", "job", "ignored", "-n", n]);
    assert!(
        ignored["status"]["failed"].is_null(),
        "{}",
        ignored["status"]
    );
    assert_eq!(job_condition(n, "ignored", "Failed", "status"), "");
}
