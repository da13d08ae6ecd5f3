use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;

use k8s_openapi::api::batch::v1::{JobSpec, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::*;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

const NOW: i64 = 10_000;

fn job(completions: Option<i32>, parallelism: i32) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("default".into()),
            uid: Some("job-uid".into()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(6),
            completion_mode: Some("NonIndexed".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([(
                        "batch.kubernetes.io/job-name".to_string(),
                        "pi".to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "pi".into(),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn indexed(completions: i32, parallelism: i32) -> Job {
    let mut job = job(Some(completions), parallelism);
    job.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
    job
}

fn spec(job: &mut Job) -> &mut JobSpec {
    job.spec.as_mut().unwrap()
}

fn status(job: &mut Job) -> &mut JobStatus {
    job.status.get_or_insert_with(Default::default)
}

fn pod(name: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            owner_references: Some(vec![OwnerReference {
                uid: "job-uid".into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            creation_timestamp: Some(Time(at(NOW - 100))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
    }
}

fn with_index(mut pod: Pod, index: i32) -> Pod {
    pod.metadata.annotations = Some(BTreeMap::from([(
        COMPLETION_INDEX.to_string(),
        index.to_string(),
    )]));
    pod
}

fn ready(mut pod: Pod) -> Pod {
    pod.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "True".into(),
        last_transition_time: Some(Time(at(NOW - 50))),
        ..PodCondition::default()
    }]);
    pod
}

fn untracked(mut pod: Pod) -> Pod {
    pod.metadata.finalizers = None;
    pod
}

fn deleting(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(at(NOW - 5)));
    pod
}

fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
    pods.into_iter().map(Arc::new).collect()
}

/// Runs all three steps, assuming every write succeeds.
struct Run {
    plan: Plan,
    tracking: Tracking,
    status: JobStatus,
    finished: Option<JobCondition>,
}

fn run_with(job: &Job, observed: Observed<'_>, config: &JobConfig) -> Run {
    let plan = plan(job, &observed, at(NOW), config);
    let tracking = plan.track(job, &observed, &Outcome::default(), at(NOW), config);
    let removed: HashSet<String> = tracking.untrack.iter().filter_map(|p| p.uid()).collect();
    let (status, finished) = tracking.finalize(&removed, &[], at(NOW));
    Run {
        plan,
        tracking,
        status,
        finished,
    }
}

fn observe<'a>(pods: &'a [Arc<Pod>], untracking: &'a HashSet<String>) -> Observed<'a> {
    Observed {
        pods,
        writes_in_flight: false,
        untracking,
        backoff: BackoffRecord::default(),
    }
}

fn run(job: &Job, pods: &[Arc<Pod>]) -> Run {
    let none = HashSet::new();
    run_with(job, observe(pods, &none), &JobConfig::default())
}

fn uncounted_of(status: &JobStatus) -> (Vec<String>, Vec<String>) {
    let lists = status.uncounted_terminated_pods.clone().unwrap_or_default();
    (
        lists.succeeded.unwrap_or_default(),
        lists.failed.unwrap_or_default(),
    )
}

fn condition_of<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn names(pods: impl IntoIterator<Item = Arc<Pod>>) -> Vec<String> {
    let mut names: Vec<String> = pods.into_iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

#[test]
fn a_new_job_starts_parallelism_pods_and_its_clock() {
    let r = run(&job(Some(5), 2), &[]);
    assert_eq!(r.plan.create.len(), 2);
    assert!(r.plan.create.iter().all(|p| p.index.is_none()));
    assert_eq!(r.status.active, Some(2));
    assert_eq!(r.status.ready, Some(0));
    assert_eq!(r.status.terminating, Some(0));
    assert_eq!(r.status.start_time, Some(Time(at(NOW))));
    assert_eq!(r.status.succeeded, None);
    assert!(r.finished.is_none());
    assert!(r.plan.requeue_after.is_none());
}

#[test]
fn completions_five_parallelism_two_never_runs_more_than_the_remaining_completions() {
    let mut j = job(Some(5), 2);
    status(&mut j).succeeded = Some(4);
    let pods = arcs(vec![pod("a", "Running")]);
    let r = run(&j, &pods);
    // One completion left and one pod running: nothing to add.
    assert!(r.plan.create.is_empty() && r.plan.delete.is_empty());
    assert_eq!(r.status.active, Some(1));

    status(&mut j).succeeded = Some(3);
    let r = run(&j, &pods);
    assert_eq!(r.plan.create.len(), 1);
    assert_eq!(r.status.active, Some(2));
}

#[test]
fn finished_pods_are_recorded_as_uncounted_before_their_finalizers_go() {
    let j = job(Some(5), 2);
    let pods = arcs(vec![
        pod("a", "Succeeded"),
        pod("b", "Succeeded"),
        ready(pod("c", "Running")),
    ]);
    let r = run(&j, &pods);
    // Step 2 writes the UIDs first...
    let (succeeded, failed) = uncounted_of(&r.tracking.status);
    assert_eq!(succeeded, ["uid-a", "uid-b"]);
    assert!(failed.is_empty());
    assert_eq!(names(r.tracking.untrack.clone()), ["a", "b"]);
    // ...step 3 counts them once the finalizers are gone.
    assert_eq!(r.status.succeeded, Some(2));
    assert_eq!(uncounted_of(&r.status), (vec![], vec![]));
    assert_eq!(r.status.ready, Some(1));
    assert_eq!(r.plan.create.len(), 1, "3 left, 1 running, parallelism 2");
}

#[test]
fn a_failed_finalizer_removal_leaves_the_pod_uncounted_until_a_later_pass() {
    let j = job(Some(5), 1);
    let pods = arcs(vec![pod("a", "Succeeded")]);
    let none = HashSet::new();
    let observed = observe(&pods, &none);
    let config = JobConfig::default();
    let plan = plan(&j, &observed, at(NOW), &config);
    let tracking = plan.track(&j, &observed, &Outcome::default(), at(NOW), &config);
    let (status, _) = tracking.finalize(&HashSet::new(), &[], at(NOW));
    assert_eq!(uncounted_of(&status).0, ["uid-a"]);
    assert_eq!(status.succeeded, None);

    // Next pass: the status holds the UID; once the pod has lost its
    // finalizer, the UID becomes a count, exactly once.
    let mut next = j.clone();
    next.status = Some(status);
    let pods = arcs(vec![untracked(pod("a", "Succeeded"))]);
    let r = run(&next, &pods);
    assert_eq!(r.tracking.status.succeeded, Some(1));
    assert_eq!(uncounted_of(&r.status), (vec![], vec![]));
    assert!(r.tracking.untrack.is_empty());
}

#[test]
fn counted_pods_whose_finalizer_removal_the_cache_has_not_seen_are_not_counted_again() {
    let mut j = job(Some(5), 1);
    status(&mut j).succeeded = Some(1);
    let pods = arcs(vec![pod("a", "Succeeded")]);
    let untracking = HashSet::from(["uid-a".to_string()]);
    let r = run_with(&j, observe(&pods, &untracking), &JobConfig::default());
    assert_eq!(r.status.succeeded, Some(1));
    assert!(r.tracking.untrack.is_empty());
    assert_eq!(r.plan.create.len(), 1);
}

#[test]
fn reaching_completions_sets_success_criteria_met_then_complete() {
    let mut j = job(Some(5), 2);
    status(&mut j).succeeded = Some(4);
    status(&mut j).start_time = Some(Time(at(NOW - 60)));
    let pods = arcs(vec![pod("e", "Succeeded")]);
    let r = run(&j, &pods);
    let met = condition_of(&r.tracking.status, "SuccessCriteriaMet").unwrap();
    assert_eq!(met.status, "True");
    assert_eq!(met.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(
        met.message.as_deref(),
        Some("Reached expected number of succeeded pods")
    );
    assert!(condition_of(&r.tracking.status, "Complete").is_none());

    let complete = r.finished.unwrap();
    assert_eq!(complete.type_, "Complete");
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(r.status.succeeded, Some(5));
    assert_eq!(r.status.completion_time, Some(Time(at(NOW))));
    assert_eq!(condition_of(&r.status, "Complete").unwrap().status, "True");
    assert_eq!(r.status.active, None);
    assert!(is_finished(&Job {
        status: Some(r.status),
        ..j
    }));
}

#[test]
fn complete_waits_while_finished_pods_are_still_uncounted() {
    let mut j = job(Some(2), 2);
    status(&mut j).succeeded = Some(1);
    let pods = arcs(vec![pod("b", "Succeeded")]);
    let none = HashSet::new();
    let observed = observe(&pods, &none);
    let config = JobConfig::default();
    let plan = plan(&j, &observed, at(NOW), &config);
    let tracking = plan.track(&j, &observed, &Outcome::default(), at(NOW), &config);
    let (status, finished) = tracking.finalize(&HashSet::new(), &[], at(NOW));
    assert!(finished.is_none());
    assert_eq!(
        condition_of(&status, "SuccessCriteriaMet").unwrap().status,
        "True"
    );
    assert!(condition_of(&status, "Complete").is_none());
}

#[test]
fn a_work_queue_job_runs_parallelism_pods_and_completes_when_one_succeeded_and_all_ended() {
    let j = job(None, 3);
    assert_eq!(run(&j, &[]).plan.create.len(), 3);

    // After the first success, the others finish on their own.
    let pods = arcs(vec![
        pod("a", "Succeeded"),
        pod("b", "Running"),
        pod("c", "Running"),
    ]);
    let r = run(&j, &pods);
    assert!(r.plan.create.is_empty() && r.plan.delete.is_empty());
    assert!(r.finished.is_none());

    let pods = arcs(vec![
        untracked(pod("a", "Succeeded")),
        pod("b", "Succeeded"),
        pod("c", "Succeeded"),
    ]);
    let mut j = j;
    status(&mut j).succeeded = Some(1);
    let r = run(&j, &pods);
    assert_eq!(r.finished.unwrap().type_, "Complete");
    assert_eq!(r.status.succeeded, Some(3));
}

#[test]
fn failed_pods_are_replaced_after_an_exponential_delay() {
    let j = job(Some(3), 1);
    let mut failed = pod("a", "Failed");
    failed.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "False".into(),
        last_transition_time: Some(Time(at(NOW - 4))),
        ..PodCondition::default()
    }]);
    let pods = arcs(vec![failed]);
    let r = run(&j, &pods);
    assert_eq!(r.plan.backoff.failures_after_last_success, 1);
    assert_eq!(r.plan.backoff.last_failure, Some(at(NOW - 4)));
    assert!(r.plan.create.is_empty(), "10 s have not passed");
    assert_eq!(r.plan.requeue_after, Some(Duration::from_secs(6)));
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-a"]);
    assert_eq!(r.status.failed, Some(1));

    // Later the record says one failure 12 s ago: replace now.
    let mut j = j;
    status(&mut j).failed = Some(1);
    let pods = arcs(vec![untracked(pod("a", "Failed"))]);
    let none = HashSet::new();
    let mut observed = observe(&pods, &none);
    observed.backoff = BackoffRecord {
        failures_after_last_success: 1,
        last_failure: Some(at(NOW - 12)),
    };
    let r = run_with(&j, observed, &JobConfig::default());
    assert_eq!(r.plan.create.len(), 1);
    // A third failure in a row waits 40 s.
    observed.backoff = BackoffRecord {
        failures_after_last_success: 3,
        last_failure: Some(at(NOW - 12)),
    };
    let r = run_with(&j, observed, &JobConfig::default());
    assert!(r.plan.create.is_empty());
    assert_eq!(r.plan.requeue_after, Some(Duration::from_secs(28)));
}

#[test]
fn exceeding_the_backoff_limit_fails_the_job_after_its_pods_are_gone() {
    let mut j = job(Some(5), 2);
    spec(&mut j).backoff_limit = Some(1);
    status(&mut j).failed = Some(1);
    status(&mut j).start_time = Some(Time(at(NOW - 60)));
    let pods = arcs(vec![pod("a", "Failed"), ready(pod("b", "Running"))]);
    let r = run(&j, &pods);
    // The running pod is stopped but keeps its finalizer: it counts as failed.
    assert_eq!(r.plan.delete.len(), 1);
    assert_eq!(r.plan.delete[0].pod.name_any(), "b");
    assert!(!r.plan.delete[0].untrack);
    assert!(r.plan.create.is_empty());
    let target = condition_of(&r.tracking.status, "FailureTarget").unwrap();
    assert_eq!(target.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        target.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-a", "uid-b"]);
    assert_eq!(r.status.failed, Some(3));
    assert_eq!(r.status.terminating, Some(1));
    assert_eq!(r.status.active, None);
    assert_eq!(r.status.ready, Some(0));
    // Not Failed while a pod is terminating.
    assert!(r.finished.is_none());

    // Once the pod is gone, the Job fails.
    let mut next = j.clone();
    next.status = Some(r.status);
    let r = run(&next, &[]);
    let failed = r.finished.unwrap();
    assert_eq!(failed.type_, "Failed");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(r.status.completion_time, None);
    assert!(r.plan.create.is_empty());
}

#[test]
fn a_job_that_cannot_stop_a_pod_does_not_finish() {
    let mut j = job(Some(5), 1);
    spec(&mut j).backoff_limit = Some(0);
    let pods = arcs(vec![pod("a", "Failed"), pod("b", "Running")]);
    let none = HashSet::new();
    let observed = observe(&pods, &none);
    let config = JobConfig::default();
    let plan = plan(&j, &observed, at(NOW), &config);
    // The running pod is counted and released first, deleted after.
    let tracking = plan.track(&j, &observed, &Outcome::default(), at(NOW), &config);
    assert_eq!(names(tracking.untrack.clone()), ["a", "b"]);
    let released = HashSet::from(["uid-a".to_string(), "uid-b".to_string()]);
    let (status, finished) = tracking.finalize(&released, &[Arc::clone(&pods[1])], at(NOW));
    assert!(finished.is_none());
    assert_eq!(status.failed, Some(2));
    assert_eq!(status.active, Some(1));
    assert_eq!(status.terminating, Some(0));

    // The next pass tries again without counting it twice, and the Job
    // fails once the pod is gone.
    let mut next = j.clone();
    next.status = Some(status);
    let pods = arcs(vec![
        untracked(pod("a", "Failed")),
        untracked(pod("b", "Running")),
    ]);
    let r = run(&next, &pods);
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["b"]
    );
    assert!(r.finished.is_none());
    assert_eq!(r.status.failed, Some(2));
    let mut last = next.clone();
    last.status = Some(r.status);
    let r = run(&last, &arcs(vec![untracked(pod("a", "Failed"))]));
    assert_eq!(r.finished.unwrap().type_, "Failed");
}

#[test]
fn restarts_count_against_the_backoff_limit_with_restart_policy_on_failure() {
    let mut j = job(Some(1), 1);
    spec(&mut j).backoff_limit = Some(2);
    spec(&mut j).template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    let mut restarting = pod("a", "Running");
    restarting.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        restart_count: 2,
        ..ContainerStatus::default()
    }]);
    let r = run(&j, &arcs(vec![restarting]));
    assert_eq!(
        condition_of(&r.tracking.status, "FailureTarget").and_then(|c| c.reason.as_deref()),
        Some("BackoffLimitExceeded")
    );
}

#[test]
fn the_active_deadline_fails_the_job_and_is_rechecked_in_time() {
    let mut j = job(Some(5), 2);
    spec(&mut j).active_deadline_seconds = Some(30);
    status(&mut j).start_time = Some(Time(at(NOW - 20)));
    let pods = arcs(vec![pod("a", "Running"), pod("b", "Running")]);
    let r = run(&j, &pods);
    assert_eq!(r.plan.requeue_after, Some(Duration::from_secs(10)));
    assert!(r.plan.delete.is_empty());
    // A deadline far away is looked at again within the hour.
    spec(&mut j).active_deadline_seconds = Some(10 * 365 * 24 * 3600);
    assert_eq!(
        run(&j, &pods).plan.requeue_after,
        Some(Duration::from_secs(3600))
    );
    spec(&mut j).active_deadline_seconds = Some(30);

    status(&mut j).start_time = Some(Time(at(NOW - 30)));
    let r = run(&j, &pods);
    assert_eq!(r.plan.delete.len(), 2);
    let target = condition_of(&r.tracking.status, "FailureTarget").unwrap();
    assert_eq!(target.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        target.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    assert!(r.finished.is_none(), "its pods are terminating");
}

#[test]
fn suspending_deletes_running_pods_without_counting_them() {
    let mut j = job(Some(5), 2);
    spec(&mut j).suspend = Some(true);
    status(&mut j).start_time = Some(Time(at(NOW - 60)));
    let pods = arcs(vec![pod("a", "Running"), ready(pod("b", "Running"))]);
    let r = run(&j, &pods);
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["a", "b"]
    );
    assert!(r.plan.delete.iter().all(|d| d.untrack));
    assert_eq!(
        r.plan.events,
        [(EventType::Normal, "Suspended", "Job suspended")]
    );
    let suspended = condition_of(&r.status, "Suspended").unwrap();
    assert_eq!(
        (suspended.status.as_str(), suspended.reason.as_deref()),
        ("True", Some("JobSuspended"))
    );
    assert_eq!(r.status.active, None);
    assert_eq!(r.status.terminating, Some(2));
    assert_eq!(r.status.failed, None);

    // A Job created suspended does not start its clock.
    let mut fresh = job(Some(5), 2);
    spec(&mut fresh).suspend = Some(true);
    let r = run(&fresh, &[]);
    assert!(r.status.start_time.is_none());
    assert!(r.plan.create.is_empty());
}

#[test]
fn resuming_restarts_the_clock_and_creates_pods() {
    let mut j = job(Some(5), 2);
    status(&mut j).start_time = Some(Time(at(NOW - 600)));
    status(&mut j).conditions = Some(vec![JobCondition {
        type_: "Suspended".into(),
        status: "True".into(),
        reason: Some("JobSuspended".into()),
        message: Some("Job suspended".into()),
        ..JobCondition::default()
    }]);
    let r = run(&j, &[]);
    assert_eq!(r.plan.create.len(), 2);
    assert_eq!(
        r.plan.events,
        [(EventType::Normal, "Resumed", "Job resumed")]
    );
    let resumed = condition_of(&r.status, "Suspended").unwrap();
    assert_eq!(
        (resumed.status.as_str(), resumed.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    assert_eq!(r.status.start_time, Some(Time(at(NOW))));
    // Without a Suspended condition, nothing is added.
    let r = run(&job(Some(5), 2), &[]);
    assert!(r.status.conditions.is_none());
    assert!(r.plan.events.is_empty());
}

#[test]
fn lowering_parallelism_deletes_the_cheapest_pods_uncounted() {
    let j = job(Some(10), 1);
    let pods = arcs(vec![
        ready(pod("a", "Running")),
        pod("b", "Pending"),
        pod("c", "Running"),
    ]);
    let r = run(&j, &pods);
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["b", "c"]
    );
    assert!(r.plan.delete.iter().all(|d| d.untrack));
    assert!(r.plan.create.is_empty());
    assert_eq!(r.status.active, Some(1));
}

#[test]
fn nothing_is_created_or_finished_while_pod_writes_are_in_flight() {
    let j = job(Some(5), 2);
    let none = HashSet::new();
    let mut observed = observe(&[], &none);
    observed.writes_in_flight = true;
    let r = run_with(&j, observed, &JobConfig::default());
    assert!(r.plan.create.is_empty());
    assert_eq!(r.status.active, None);
}

#[test]
fn pods_that_were_not_created_are_not_active() {
    let j = job(Some(5), 3);
    let none = HashSet::new();
    let observed = observe(&[], &none);
    let config = JobConfig::default();
    let plan = plan(&j, &observed, at(NOW), &config);
    assert_eq!(plan.create.len(), 3);
    let outcome = Outcome {
        failed_creates: 2,
        failed_deletes: vec![],
    };
    let tracking = plan.track(&j, &observed, &outcome, at(NOW), &config);
    assert_eq!(tracking.status.active, Some(1));
}

#[test]
fn deleted_pods_count_as_failed_unless_only_failed_pods_are_replaced() {
    let j = job(Some(2), 2);
    let pods = arcs(vec![deleting(pod("a", "Running")), pod("b", "Running")]);
    let r = run(&j, &pods);
    assert_eq!(uncounted_of(&r.tracking.status).1, ["uid-a"]);
    assert_eq!(r.status.failed, Some(1));
    assert_eq!(r.status.terminating, Some(1));
    // Its replacement waits out the failure delay, counted from the deletion.
    assert!(r.plan.create.is_empty());
    assert_eq!(r.plan.requeue_after, Some(Duration::from_secs(5)));

    let mut only_failed = j.clone();
    spec(&mut only_failed).pod_replacement_policy = Some("Failed".into());
    let r = run(&only_failed, &pods);
    assert!(r.tracking.untrack.is_empty());
    assert_eq!(r.status.failed, None);
    assert!(r.plan.create.is_empty(), "waits for the terminating pod");
    assert!(r.plan.requeue_after.is_none());
}

#[test]
fn counting_is_capped_per_reconcile_and_the_job_does_not_finish_meanwhile() {
    let j = job(Some(3), 3);
    let pods = arcs(vec![
        pod("a", "Succeeded"),
        pod("b", "Succeeded"),
        pod("c", "Succeeded"),
    ]);
    let none = HashSet::new();
    let config = JobConfig {
        max_uncounted: 2,
        ..JobConfig::default()
    };
    let r = run_with(&j, observe(&pods, &none), &config);
    assert_eq!(r.tracking.untrack.len(), 2);
    assert_eq!(r.status.succeeded, Some(2));
    assert!(r.finished.is_none());
}

#[test]
fn indexed_jobs_create_the_lowest_missing_indexes() {
    let j = indexed(5, 2);
    let r = run(&j, &[]);
    let indexes: Vec<_> = r.plan.create.iter().map(|p| p.index).collect();
    assert_eq!(indexes, [Some(0), Some(1)]);

    let pods = arcs(vec![
        with_index(pod("pi-0", "Succeeded"), 0),
        with_index(pod("pi-1", "Running"), 1),
    ]);
    let r = run(&j, &pods);
    let indexes: Vec<_> = r.plan.create.iter().map(|p| p.index).collect();
    assert_eq!(indexes, [Some(2)]);
    assert_eq!(r.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(r.status.succeeded, Some(1));
    // Indexes need no UIDs in the uncounted lists.
    assert_eq!(uncounted_of(&r.tracking.status), (vec![], vec![]));
}

#[test]
fn indexed_completion_is_recorded_as_intervals() {
    let mut j = indexed(6, 3);
    status(&mut j).completed_indexes = Some("0,1".into());
    status(&mut j).succeeded = Some(2);
    let pods = arcs(vec![
        with_index(pod("pi-2", "Succeeded"), 2),
        with_index(pod("pi-4", "Succeeded"), 4),
        // Already counted (no finalizer): must not count again.
        untracked(with_index(pod("pi-1", "Succeeded"), 1)),
        with_index(pod("pi-3", "Running"), 3),
    ]);
    let r = run(&j, &pods);
    assert_eq!(r.status.completed_indexes.as_deref(), Some("0-2,4"));
    assert_eq!(r.status.succeeded, Some(4));
    let indexes: Vec<_> = r.plan.create.iter().map(|p| p.index).collect();
    assert_eq!(indexes, [Some(5)]);

    // All six done: complete.
    status(&mut j).completed_indexes = Some("0-4".into());
    status(&mut j).succeeded = Some(5);
    let r = run(&j, &arcs(vec![with_index(pod("pi-5", "Succeeded"), 5)]));
    assert_eq!(r.status.completed_indexes.as_deref(), Some("0-5"));
    assert_eq!(r.finished.unwrap().type_, "Complete");
}

#[test]
fn indexed_jobs_delete_duplicates_and_pods_without_a_valid_index() {
    let j = indexed(3, 3);
    let pods = arcs(vec![
        ready(with_index(pod("pi-1-a", "Running"), 1)),
        with_index(pod("pi-1-b", "Pending"), 1),
        with_index(pod("pi-7", "Running"), 7),
        pod("stray", "Running"),
        with_index(pod("pi-0", "Running"), 0),
    ]);
    let r = run(&j, &pods);
    assert_eq!(
        names(r.plan.delete.iter().map(|d| Arc::clone(&d.pod))),
        ["pi-1-b", "pi-7", "stray"]
    );
    assert!(r.plan.create.is_empty(), "deletions first");
}

#[test]
fn backoff_limit_per_index_retries_an_index_then_marks_it_failed() {
    let mut j = indexed(3, 3);
    spec(&mut j).backoff_limit_per_index = Some(1);
    spec(&mut j).backoff_limit = Some(i32::MAX);
    let mut first = with_index(pod("pi-1-a", "Failed"), 1);
    first
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(INDEX_FAILURE_COUNT.into(), "0".into());
    first.metadata.deletion_timestamp = None;
    first.metadata.creation_timestamp = Some(Time(at(NOW - 20)));
    let pods = arcs(vec![
        with_index(pod("pi-0", "Running"), 0),
        first,
        with_index(pod("pi-2", "Running"), 2),
    ]);
    let r = run(&j, &pods);
    // The failed pod (created 20 s ago, so finished then) waits for its
    // replacement, which inherits the failure count; 10 s have passed.
    assert!(r.tracking.untrack.is_empty());
    assert_eq!(
        r.plan.create,
        [NewPod {
            index: Some(1),
            index_failure_count: Some(1),
            index_ignored_failure_count: None,
        }]
    );
    assert_eq!(r.status.failed_indexes.as_deref(), Some(""));

    // The replacement fails too: index 1 has failed for good.
    let mut second = with_index(pod("pi-1-b", "Failed"), 1);
    second
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(INDEX_FAILURE_COUNT.into(), "1".into());
    let pods = arcs(vec![
        with_index(pod("pi-0", "Running"), 0),
        untracked(with_index(pod("pi-1-a", "Failed"), 1)),
        second,
        with_index(pod("pi-2", "Running"), 2),
    ]);
    let r = run(&j, &pods);
    assert!(r.plan.create.is_empty());
    assert_eq!(r.status.failed_indexes.as_deref(), Some("1"));
    assert_eq!(names(r.tracking.untrack.clone()), ["pi-1-b"]);
}

#[test]
fn failed_indexes_fail_the_job_once_every_index_is_decided() {
    let mut j = indexed(2, 2);
    spec(&mut j).backoff_limit_per_index = Some(0);
    status(&mut j).completed_indexes = Some("0".into());
    status(&mut j).succeeded = Some(1);
    let pods = arcs(vec![with_index(pod("pi-1", "Failed"), 1)]);
    let r = run(&j, &pods);
    let target = condition_of(&r.tracking.status, "FailureTarget").unwrap();
    assert_eq!(target.reason.as_deref(), Some("FailedIndexes"));
    assert_eq!(r.finished.unwrap().type_, "Failed");
    assert_eq!(r.status.failed_indexes.as_deref(), Some("1"));
}

#[test]
fn pods_carry_the_finalizer_owner_and_for_indexed_jobs_their_index() {
    let j = indexed(3, 1);
    let new = NewPod {
        index: Some(2),
        index_failure_count: None,
        index_ignored_failure_count: None,
    };
    let p = pod_for(&j, &new).unwrap();
    assert!(p.name_any().starts_with("pi-2-"));
    assert_eq!(p.name_any().len(), "pi-2-".len() + 5);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
    assert_eq!(
        p.metadata.finalizers,
        Some(vec![TRACKING_FINALIZER.to_string()])
    );
    assert_eq!(
        p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
        "2"
    );
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[COMPLETION_INDEX], "2");
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", "job-uid")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
    let env = spec.containers[0].env.as_ref().unwrap();
    assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
    assert_eq!(
        env[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.labels['batch.kubernetes.io/job-completion-index']"
    );

    let plain = pod_for(
        &job(Some(1), 1),
        &NewPod {
            index: None,
            index_failure_count: None,
            index_ignored_failure_count: None,
        },
    )
    .unwrap();
    assert!(plain.name_any().starts_with("pi-"));
    assert!(plain.metadata.annotations.is_none());
    assert!(plain.spec.unwrap().hostname.is_none());
}

#[test]
fn long_job_names_are_shortened_to_fit_the_pod_name() {
    let long = "j".repeat(63);
    assert_eq!(pod_name_prefix(&long, None).len(), 58);
    let indexed = pod_name_prefix(&long, Some(12));
    assert_eq!(indexed.len(), 58);
    assert!(indexed.ends_with("-12-"));
    assert_eq!(pod_name_prefix("pi", Some(3)), "pi-3-");
}

#[test]
fn a_finished_job_is_left_alone() {
    let mut j = job(Some(1), 1);
    status(&mut j).conditions = Some(vec![JobCondition {
        type_: "Complete".into(),
        status: "True".into(),
        ..JobCondition::default()
    }]);
    assert!(is_finished(&j));
    status(&mut j).conditions.as_mut().unwrap()[0].status = "False".into();
    assert!(!is_finished(&j));
    assert_eq!(
        completion_index(&with_index(pod("x", "Running"), 4)),
        Some(4)
    );
    assert_eq!(completion_index(&pod("x", "Running")), None);
}

#[test]
fn an_existing_uncounted_list_is_kept_in_upstreams_shape() {
    let mut j = job(Some(3), 1);
    status(&mut j).uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(vec!["uid-gone".into()]),
        failed: None,
    });
    // The pod of that UID is gone: it is counted.
    let r = run(&j, &[]);
    assert_eq!(r.tracking.status.succeeded, Some(1));
    assert_eq!(
        r.status.uncounted_terminated_pods,
        Some(UncountedTerminatedPods::default())
    );
}

mod policies;
