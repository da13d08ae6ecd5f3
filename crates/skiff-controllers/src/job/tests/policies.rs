//! `podFailurePolicy`, `successPolicy`, `podReplacementPolicy` and
//! `managedBy` through the three planning steps.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule, SuccessPolicy, SuccessPolicyRule,
};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};

use super::*;

fn exit_rule(action: &str, operator: &str, values: &[i32]) -> PodFailurePolicyRule {
    PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: None,
            operator: operator.into(),
            values: values.to_vec(),
        }),
        on_pod_conditions: None,
    }
}

fn disruption_rule(action: &str) -> PodFailurePolicyRule {
    PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: None,
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".into(),
            status: Some("True".into()),
        }]),
    }
}

fn with_policy(mut j: Job, rules: Vec<PodFailurePolicyRule>) -> Job {
    spec(&mut j).pod_failure_policy = Some(PodFailurePolicy { rules });
    spec(&mut j).pod_replacement_policy = Some("Failed".into());
    j
}

/// A pod whose container `pi` exited with `code`, finished long ago.
fn exited(name: &str, code: i32) -> Pod {
    let mut p = pod(name, if code == 0 { "Succeeded" } else { "Failed" });
    p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "pi".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(Time(at(NOW - 60))),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }]);
    p
}

fn disrupted(mut p: Pod) -> Pod {
    p.status
        .as_mut()
        .unwrap()
        .conditions
        .get_or_insert_with(Vec::new)
        .push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("PreemptionByScheduler".into()),
            ..PodCondition::default()
        });
    p
}

fn annotated(mut p: Pod, key: &str, value: &str) -> Pod {
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    p
}

fn next(j: &Job, r: Run) -> Job {
    let mut next = j.clone();
    next.status = Some(r.status);
    next
}

#[test]
fn a_fail_job_rule_fails_the_job_with_the_policy_reason_and_message() {
    let mut j = with_policy(
        job(Some(3), 2),
        vec![
            exit_rule("Ignore", "In", &[1]),
            exit_rule("FailJob", "In", &[42]),
        ],
    );
    spec(&mut j).backoff_limit = Some(6);
    let pods = arcs(vec![exited("a", 42), ready(pod("b", "Running"))]);
    let r = run(&j, &pods);
    let message = "Container pi for pod default/a failed with exit code 42 \
                   matching FailJob rule at index 1";
    let target = condition_of(&r.tracking.status, "FailureTarget").unwrap();
    assert_eq!(target.status, "True");
    assert_eq!(target.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(target.message.as_deref(), Some(message));
    // The running pod is stopped and, the Job failing, counted as failed.
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["b"]
    );
    assert!(!r.plan.delete[0].untrack);
    assert!(r.plan.create.is_empty());
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-a", "uid-b"]);
    assert_eq!(r.status.failed, Some(2));
    assert_eq!(r.status.terminating, Some(1));
    assert!(r.finished.is_none(), "not Failed while a pod terminates");

    // The stopped pod is gone: Failed, with the FailureTarget's words.
    let r = run(&next(&j, r), &arcs(vec![untracked(exited("a", 42))]));
    let failed = r.finished.unwrap();
    assert_eq!(failed.type_, "Failed");
    assert_eq!(failed.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(failed.message.as_deref(), Some(message));
    let failed_condition = condition_of(&r.status, "Failed").unwrap();
    assert_eq!(failed_condition.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(r.status.failed, Some(2));
    assert!(r.plan.create.is_empty());
}

#[test]
fn a_fail_job_rule_on_a_disruption_condition_names_the_condition() {
    let j = with_policy(job(Some(1), 1), vec![disruption_rule("FailJob")]);
    let pods = arcs(vec![disrupted(exited("a", 137))]);
    let r = run(&j, &pods);
    let failed = r.finished.unwrap();
    assert_eq!(failed.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Pod default/a has condition DisruptionTarget matching FailJob rule at index 0")
    );
    assert_eq!(
        condition_of(&r.status, "FailureTarget")
            .unwrap()
            .reason
            .as_deref(),
        Some("PodFailurePolicy")
    );
}

#[test]
fn ignored_failures_do_not_count_against_the_backoff_limit() {
    let mut j = with_policy(
        job(Some(1), 1),
        vec![disruption_rule("Ignore"), exit_rule("Ignore", "In", &[42])],
    );
    spec(&mut j).backoff_limit = Some(0);
    let pods = arcs(vec![exited("a", 42), disrupted(exited("b", 137))]);
    let r = run(&j, &pods);
    assert!(r.finished.is_none());
    assert!(condition_of(&r.status, "FailureTarget").is_none());
    // Released without being counted anywhere.
    assert_eq!(names(r.tracking.untrack.clone()), ["a", "b"]);
    assert_eq!(uncounted_of(&r.tracking.status), (vec![], vec![]));
    assert_eq!(r.status.failed, None);
    // Replaced once the failure delay (two failures: 20 s) has passed; they
    // finished 60 s ago.
    assert_eq!(r.plan.create.len(), 1);
    assert_eq!(r.status.active, Some(1));
}

#[test]
fn count_rules_and_unmatched_failures_count_as_usual() {
    let mut j = with_policy(
        job(Some(2), 2),
        vec![
            exit_rule("Count", "In", &[1]),
            exit_rule("Ignore", "In", &[42]),
        ],
    );
    spec(&mut j).backoff_limit = Some(1);
    status(&mut j).start_time = Some(Time(at(NOW - 100)));
    // Exit 1 matches Count, exit 3 nothing: two counted failures > 1.
    let pods = arcs(vec![exited("a", 1), exited("b", 3), exited("c", 42)]);
    let r = run(&j, &pods);
    let target = condition_of(&r.tracking.status, "FailureTarget").unwrap();
    assert_eq!(target.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-a", "uid-b"]);
    assert_eq!(r.status.failed, Some(2));
    assert_eq!(r.finished.unwrap().type_, "Failed");
}

#[test]
fn with_a_policy_terminating_pods_are_neither_failed_nor_replaced() {
    let j = with_policy(job(Some(1), 1), vec![exit_rule("Ignore", "In", &[42])]);
    let pods = arcs(vec![deleting(pod("a", "Running"))]);
    let r = run(&j, &pods);
    assert_eq!(r.status.terminating, Some(1));
    assert_eq!(r.status.failed, None);
    assert!(r.tracking.untrack.is_empty(), "kept until it is Failed");
    assert!(r.plan.create.is_empty(), "waits for the terminating pod");

    // Once it failed (killed: exit 137), it counts and is replaced.
    let mut killed = deleting(exited("a", 137));
    killed.metadata.deletion_timestamp = Some(Time(at(NOW - 60)));
    let r = run(&j, &arcs(vec![killed]));
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-a"]);
    assert_eq!(r.status.failed, Some(1));
    assert_eq!(r.plan.create.len(), 1);
}

#[test]
fn pod_replacement_policy_terminating_or_failed_replaces_at_once() {
    let mut j = job(Some(1), 1);
    spec(&mut j).pod_replacement_policy = Some("TerminatingOrFailed".into());
    let mut going = deleting(pod("a", "Running"));
    going.metadata.deletion_timestamp = Some(Time(at(NOW - 60)));
    let r = run(&j, &arcs(vec![going]));
    assert_eq!(r.status.terminating, Some(1));
    assert_eq!(r.status.failed, Some(1));
    assert_eq!(r.plan.create.len(), 1);
}

#[test]
fn a_fail_index_rule_fails_only_that_index() {
    let mut j = with_policy(indexed(3, 3), vec![exit_rule("FailIndex", "In", &[42])]);
    spec(&mut j).backoff_limit_per_index = Some(2);
    spec(&mut j).backoff_limit = Some(i32::MAX);
    let pods = arcs(vec![
        with_index(pod("pi-0", "Running"), 0),
        with_index(exited("pi-1", 42), 1),
        with_index(pod("pi-2", "Running"), 2),
    ]);
    let r = run(&j, &pods);
    // Retries were left (limit 2) but the rule fails the index now.
    assert_eq!(r.status.failed_indexes.as_deref(), Some("1"));
    assert!(r.plan.create.is_empty(), "a failed index is not retried");
    assert_eq!(names(r.tracking.untrack.clone()), ["pi-1"]);
    assert_eq!(r.status.failed, Some(1));
    assert!(r.finished.is_none());

    // The other indexes succeed: the Job fails for its failed index.
    let done = arcs(vec![
        with_index(exited("pi-0", 0), 0),
        untracked(with_index(exited("pi-1", 42), 1)),
        with_index(exited("pi-2", 0), 2),
    ]);
    let r = run(&next(&j, r), &done);
    assert_eq!(r.status.completed_indexes.as_deref(), Some("0,2"));
    assert_eq!(r.status.failed_indexes.as_deref(), Some("1"));
    let failed = r.finished.unwrap();
    assert_eq!(failed.reason.as_deref(), Some("FailedIndexes"));
    assert_eq!(failed.message.as_deref(), Some("Job has failed indexes"));
}

#[test]
fn ignored_failures_of_an_index_are_tracked_apart_and_never_fail_it() {
    let mut j = with_policy(indexed(2, 2), vec![disruption_rule("Ignore")]);
    spec(&mut j).backoff_limit_per_index = Some(0);
    spec(&mut j).backoff_limit = Some(i32::MAX);
    let previous = annotated(
        annotated(
            with_index(disrupted(exited("pi-1-a", 137)), 1),
            INDEX_FAILURE_COUNT,
            "0",
        ),
        INDEX_IGNORED_FAILURE_COUNT,
        "1",
    );
    let pods = arcs(vec![with_index(pod("pi-0", "Running"), 0), previous]);
    let r = run(&j, &pods);
    assert_eq!(r.status.failed_indexes.as_deref(), Some(""));
    assert_eq!(r.status.failed, None);
    // Two failures of the index so far: 20 s delay, and 60 s have passed.
    assert_eq!(
        r.plan.create,
        [NewPod {
            index: Some(1),
            index_failure_count: Some(0),
            index_ignored_failure_count: Some(2),
        }]
    );
    let replacement = pod_for(&j, &r.plan.create[0]).unwrap();
    let annotations = replacement.metadata.annotations.unwrap();
    assert_eq!(annotations[INDEX_FAILURE_COUNT], "0");
    assert_eq!(annotations[INDEX_IGNORED_FAILURE_COUNT], "2");

    // A counted failure with no retries left fails the index.
    let counted = with_index(exited("pi-1-b", 1), 1);
    let r = run(
        &j,
        &arcs(vec![with_index(pod("pi-0", "Running"), 0), counted]),
    );
    assert_eq!(r.status.failed_indexes.as_deref(), Some("1"));
    assert!(r.plan.create.is_empty());
}

fn with_success_policy(mut j: Job, rules: Vec<SuccessPolicyRule>) -> Job {
    spec(&mut j).success_policy = Some(SuccessPolicy { rules });
    j
}

fn leader_rule() -> SuccessPolicyRule {
    SuccessPolicyRule {
        succeeded_indexes: Some("0".into()),
        succeeded_count: None,
    }
}

#[test]
fn a_met_success_policy_stops_the_rest_and_completes() {
    let j = with_success_policy(indexed(3, 3), vec![leader_rule()]);
    let pods = arcs(vec![
        with_index(exited("pi-0", 0), 0),
        ready(with_index(pod("pi-1", "Running"), 1)),
        with_index(exited("pi-2", 1), 2),
    ]);
    let r = run(&j, &pods);
    let met = condition_of(&r.tracking.status, "SuccessCriteriaMet").unwrap();
    assert_eq!(met.status, "True");
    assert_eq!(met.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(met.message.as_deref(), Some("Matched rules at index 0"));
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["pi-1"]
    );
    assert!(r.plan.create.is_empty(), "the failed index is not retried");
    // The stopped pod is not counted; the pod that had failed is.
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-pi-2"]);
    assert_eq!(r.status.failed, Some(1));
    assert_eq!(r.status.succeeded, Some(1));
    assert_eq!(r.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(r.status.terminating, Some(1));
    assert_eq!(r.status.ready, Some(0));
    assert!(r.finished.is_none(), "not Complete while a pod terminates");

    // Still terminating (finalizer gone): still waiting.
    let mut going = untracked(with_index(pod("pi-1", "Running"), 1));
    going.metadata.deletion_timestamp = Some(Time(at(NOW)));
    let j = next(&j, r);
    let r = run(&j, &arcs(vec![going]));
    assert!(r.finished.is_none());
    assert_eq!(r.status.terminating, Some(1));
    assert!(r.plan.create.is_empty());

    let r = run(&next(&j, r), &[]);
    let complete = r.finished.unwrap();
    assert_eq!(complete.type_, "Complete");
    assert_eq!(complete.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(
        complete.message.as_deref(),
        Some("Matched rules at index 0")
    );
    assert_eq!(r.status.completion_time, Some(Time(at(NOW))));
    assert_eq!(r.status.succeeded, Some(1));
    assert_eq!(r.status.failed, Some(1));
}

#[test]
fn an_unmet_success_policy_changes_nothing() {
    let j = with_success_policy(
        indexed(3, 3),
        vec![SuccessPolicyRule {
            succeeded_indexes: None,
            succeeded_count: Some(2),
        }],
    );
    let pods = arcs(vec![
        with_index(exited("pi-0", 0), 0),
        with_index(pod("pi-1", "Running"), 1),
        with_index(pod("pi-2", "Running"), 2),
    ]);
    let r = run(&j, &pods);
    assert!(condition_of(&r.tracking.status, "SuccessCriteriaMet").is_none());
    assert!(r.plan.delete.is_empty() && r.plan.create.is_empty());

    // Two indexes done: met, by count.
    let pods = arcs(vec![
        with_index(exited("pi-0", 0), 0),
        with_index(exited("pi-1", 0), 1),
        with_index(pod("pi-2", "Running"), 2),
    ]);
    let r = run(&j, &pods);
    let met = condition_of(&r.tracking.status, "SuccessCriteriaMet").unwrap();
    assert_eq!(met.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["pi-2"]
    );
}

#[test]
fn a_job_failing_by_policy_is_not_rescued_by_its_success_policy() {
    let mut j = with_policy(indexed(2, 2), vec![exit_rule("FailJob", "In", &[42])]);
    j = with_success_policy(j, vec![leader_rule()]);
    let pods = arcs(vec![
        with_index(exited("pi-0", 0), 0),
        with_index(exited("pi-1", 42), 1),
    ]);
    let r = run(&j, &pods);
    assert_eq!(
        r.finished.unwrap().reason.as_deref(),
        Some("PodFailurePolicy")
    );
    assert!(condition_of(&r.status, "SuccessCriteriaMet").is_none());
}

#[test]
fn jobs_managed_by_another_controller_are_left_alone() {
    let mut j = job(Some(1), 1);
    assert!(managed_here(&j));
    spec(&mut j).managed_by = Some(MANAGED_BY.into());
    assert!(managed_here(&j));
    spec(&mut j).managed_by = Some("example.com/multikueue".into());
    assert!(!managed_here(&j));
}
