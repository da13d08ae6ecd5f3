//! The Job controller's decisions, with no IO.
//!
//! A reconcile runs three pure steps with writes in between:
//!
//! 1. [`plan`]: the counts as the cache shows them, whether the Job has
//!    succeeded or must fail, and the pods to create or delete;
//! 2. [`Plan::track`], once the pod writes are done: the status to write
//!    before any finalizer is removed (newly finished pods recorded as
//!    uncounted, the interim `SuccessCriteriaMet` / `FailureTarget`
//!    condition) and the pods whose finalizer may go;
//! 3. [`Tracking::finalize`], once the finalizers are removed: the counters
//!    and, when nothing is left to count, `Complete` or `Failed`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use skiff_client::events::EventType;

use super::backoff::{BackoffRecord, finished_at};
use super::failure_policy::{PolicyAction, failure_counts, match_pod_failure_policy};
use super::indexes::Indexes;
use super::success_policy::match_success_policy;
use super::{
    COMPLETION_INDEX, INDEX_FAILURE_COUNT, INDEX_IGNORED_FAILURE_COUNT, JobConfig,
    TRACKING_FINALIZER,
};
use crate::pods::{self, deletion_order};

/// What the reconcile knows besides the Job.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The pods the Job controls, as the cache shows them.
    pub pods: &'a [Arc<Pod>],
    /// Pod creations or deletions the cache does not show yet: the Job
    /// neither creates nor deletes more, nor finishes, until it does.
    pub writes_in_flight: bool,
    /// UIDs of pods whose tracking finalizer was removed but the cache still
    /// shows it; they are counted already.
    pub untracking: &'a HashSet<String>,
    /// Failures since the last success, as last recorded.
    pub backoff: BackoffRecord,
}

/// A pod to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPod {
    /// Its completion index (Indexed Jobs).
    pub index: Option<i32>,
    /// Failures of its index so far (`backoffLimitPerIndex`).
    pub index_failure_count: Option<i32>,
    /// Failures of its index that a pod failure policy ignored, if any.
    pub index_ignored_failure_count: Option<i32>,
}

/// A pod to delete.
#[derive(Debug, Clone)]
pub struct Deletion {
    /// The pod.
    pub pod: Arc<Pod>,
    /// True when a suspended or scaled-down Job deletes the pod: its tracking
    /// finalizer goes first, so it is never counted, and the delete happens
    /// before [`Plan::track`]. False when a finishing Job stops it: the pod
    /// is counted (as failed, if the Job fails) and released by
    /// [`Plan::track`], and deleted after that; a pod deleted while it still
    /// holds the finalizer would linger until the finalizer goes.
    pub untrack: bool,
}

/// How the writes before [`Plan::track`] went.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Pods of [`Plan::create`] that were not created.
    pub failed_creates: usize,
    /// Pods of [`Plan::delete`] with `untrack` that were not deleted.
    pub failed_deletes: Vec<Arc<Pod>>,
}

/// Why a Job finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finish {
    Success { reason: String, message: String },
    Failure { reason: String, message: String },
}

/// The first step's decision.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Pods to create.
    pub create: Vec<NewPod>,
    /// Pods to delete.
    pub delete: Vec<Deletion>,
    /// The failure record to keep once the status is written.
    pub backoff: BackoffRecord,
    /// When to look again (replacement delay, active deadline).
    pub requeue_after: Option<Duration>,
    /// Events to record now (suspension and resumption).
    pub events: Vec<(EventType, &'static str, &'static str)>,
    /// The status with the counts of this reconcile, assuming every pod write
    /// succeeds.
    status: JobStatus,
    /// The decision to finish, if any (held back while writes are in flight).
    finish: Option<Finish>,
    /// Completed indexes: recorded ones plus succeeded pods not yet counted.
    succeeded_indexes: Indexes,
    /// Recorded completed indexes only.
    prev_succeeded_indexes: Indexes,
    /// Failed indexes (`backoffLimitPerIndex`).
    failed_indexes: Option<Indexes>,
    /// Per index, the failed pod kept until its replacement exists.
    delayed: HashMap<i32, Arc<Pod>>,
}

/// The second step's decision.
#[derive(Debug, Clone)]
pub struct Tracking {
    /// The status to write before removing finalizers.
    pub status: JobStatus,
    /// Pods whose tracking finalizer may be removed once `status` is written.
    pub untrack: Vec<Arc<Pod>>,
    /// UIDs of pods holding the finalizer (not counting removals in flight).
    tracked: HashSet<String>,
    /// `Complete` or `Failed`, to set once nothing is left to count.
    terminal: Option<JobCondition>,
    /// Too many pods to count in one go: the Job is not finished this time.
    capped: bool,
}

/// The longest a reconcile sleeps on a wall-clock deadline: timers run on
/// the monotonic clock, and a wall clock that was stepped (or a deadline
/// years away, beyond what the runtime's timers hold) is looked at again
/// within the hour.
pub(super) const MAX_SLEEP: Duration = Duration::from_secs(60 * 60);

/// Job condition types and reasons.
const COMPLETE: &str = "Complete";
const FAILED: &str = "Failed";
const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
const FAILURE_TARGET: &str = "FailureTarget";
const SUSPENDED: &str = "Suspended";

/// True if the Job has a `Complete` or `Failed` condition that is True.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The Job's `Complete` or `Failed` condition, if True.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| (c.type_ == COMPLETE || c.type_ == FAILED) && c.status == "True")
}

pub(super) fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_deref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// The pod's completion index, from its annotation.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

/// A non-negative count from an annotation (0 when absent or malformed).
fn count_annotation(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
        .filter(|c: &i32| *c >= 0)
        .unwrap_or(0)
}

/// Counted failures of the pod's index before it.
fn index_failure_count(pod: &Pod) -> i32 {
    count_annotation(pod, INDEX_FAILURE_COUNT)
}

/// Ignored failures of the pod's index before it.
fn index_ignored_failure_count(pod: &Pod) -> i32 {
    count_annotation(pod, INDEX_IGNORED_FAILURE_COUNT)
}

/// Every failure of the pod's index before it, counted or ignored: what
/// the per-index replacement delay grows with.
fn index_absolute_failure_count(pod: &Pod) -> i32 {
    index_failure_count(pod).saturating_add(index_ignored_failure_count(pod))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn uid(pod: &Pod) -> String {
    pod.uid().unwrap_or_default()
}

/// The Job's spec read once, with upstream's defaults.
struct Shape {
    indexed: bool,
    completions: Option<i32>,
    parallelism: i32,
    backoff_limit: i32,
    backoff_limit_per_index: Option<i32>,
    max_failed_indexes: Option<i32>,
    suspended: bool,
    /// `podReplacementPolicy: Failed` (implied by a pod failure policy): a
    /// terminating pod is not failed (and not replaced) until it reaches
    /// phase Failed, so that the policy sees its exit codes.
    only_replace_failed: bool,
    failure_policy: Option<PodFailurePolicy>,
    restart_on_failure: bool,
    active_deadline: Option<i64>,
}

impl Shape {
    fn of(spec: &JobSpec) -> Self {
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        Self {
            indexed,
            completions: spec.completions,
            parallelism: spec.parallelism.unwrap_or(1).max(0),
            backoff_limit: spec.backoff_limit.unwrap_or(6),
            backoff_limit_per_index: spec.backoff_limit_per_index.filter(|_| indexed),
            max_failed_indexes: spec.max_failed_indexes,
            suspended: spec.suspend == Some(true),
            only_replace_failed: spec.pod_replacement_policy.as_deref() == Some("Failed")
                || spec.pod_failure_policy.is_some(),
            restart_on_failure: spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("OnFailure"),
            active_deadline: spec.active_deadline_seconds,
            failure_policy: spec.pod_failure_policy.clone(),
        }
    }

    /// False if the failed `pod` matches an `Ignore` rule.
    fn failure_counts(&self, pod: &Pod) -> bool {
        failure_counts(self.failure_policy.as_ref(), pod)
    }

    /// True if the pod's failure fails its index (`backoffLimitPerIndex`):
    /// a `FailIndex` rule matched, or a counted failure used up the index's
    /// retries.
    fn fails_index(&self, pod: &Pod, limit: i32) -> bool {
        if !self.is_failed(pod) {
            return false;
        }
        match match_pod_failure_policy(self.failure_policy.as_ref(), pod) {
            Some(PolicyAction::FailIndex) => true,
            Some(PolicyAction::Ignore) => false,
            _ => index_failure_count(pod) >= limit,
        }
    }

    /// Upstream's message of the first failed pod that matches a `FailJob`
    /// rule.
    fn fail_job_message(&self, pods: &[Arc<Pod>]) -> Option<String> {
        let policy = self.failure_policy.as_ref()?;
        pods.iter().filter(|p| self.is_failed(p)).find_map(|p| {
            match match_pod_failure_policy(Some(policy), p) {
                Some(PolicyAction::FailJob { message }) => Some(message),
                _ => None,
            }
        })
    }

    fn is_failed(&self, pod: &Pod) -> bool {
        let phase = phase(pod);
        phase == "Failed"
            || (!self.only_replace_failed
                && pod.metadata.deletion_timestamp.is_some()
                && phase != "Succeeded")
    }

    /// The index of a pod if it is valid for this Job.
    fn valid_index(&self, pod: &Pod) -> Option<i32> {
        completion_index(pod).filter(|i| *i < self.completions.unwrap_or(0))
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn true_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Sets condition `type_` to `status` (adding it unless it would be added as
/// False); returns whether anything changed.
fn ensure_condition(
    job_status: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let conditions = job_status.conditions.get_or_insert_with(Vec::new);
    let changed = match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let same = existing.status == status
                && existing.reason.as_deref().unwrap_or("") == reason
                && existing.message.as_deref().unwrap_or("") == message;
            if !same {
                *existing = condition(type_, status, reason, message, now);
            }
            !same
        }
        None if status != "False" => {
            conditions.push(condition(type_, status, reason, message, now));
            true
        }
        None => false,
    };
    if conditions.is_empty() {
        job_status.conditions = None;
    }
    changed
}

fn uncounted(status: &JobStatus) -> (Vec<String>, Vec<String>) {
    let lists = status.uncounted_terminated_pods.clone().unwrap_or_default();
    (
        lists.succeeded.unwrap_or_default(),
        lists.failed.unwrap_or_default(),
    )
}

fn set_uncounted(status: &mut JobStatus, succeeded: Vec<String>, failed: Vec<String>) {
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!succeeded.is_empty()).then_some(succeeded),
        failed: (!failed.is_empty()).then_some(failed),
    });
}

/// Moves uncounted UIDs whose pods lost the finalizer into the counters.
fn count_untracked(status: &mut JobStatus, tracked: &HashSet<String>) {
    let (succeeded, failed) = uncounted(status);
    let (still_s, done_s): (Vec<String>, Vec<String>) =
        succeeded.into_iter().partition(|u| tracked.contains(u));
    let (still_f, done_f): (Vec<String>, Vec<String>) =
        failed.into_iter().partition(|u| tracked.contains(u));
    status.succeeded = Some(status.succeeded.unwrap_or(0) + done_s.len() as i32);
    status.failed = Some(status.failed.unwrap_or(0) + done_f.len() as i32);
    set_uncounted(status, still_s, still_f);
}

/// Upstream's representation: zero counters are omitted, `ready` and
/// `terminating` are always present.
fn normalize(status: &mut JobStatus) {
    for counter in [
        &mut status.active,
        &mut status.succeeded,
        &mut status.failed,
    ] {
        if *counter == Some(0) {
            *counter = None;
        }
    }
    if status.completed_indexes.as_deref() == Some("") {
        status.completed_indexes = None;
    }
    status
        .uncounted_terminated_pods
        .get_or_insert_with(Default::default);
}

/// Decides what to do for `job` (the first step).
pub fn plan(job: &Job, observed: &Observed<'_>, now: Timestamp, config: &JobConfig) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let shape = Shape::of(&spec);
    let mut status = job.status.clone().unwrap_or_default();
    let (uncounted_s, uncounted_f) = uncounted(&status);
    let uncounted_all: HashSet<&String> = uncounted_s.iter().chain(&uncounted_f).collect();

    // Finished pods not counted in any form yet.
    let fresh = |pod: &&Arc<Pod>| {
        let uid = uid(pod);
        has_tracking_finalizer(pod)
            && !uncounted_all.contains(&uid)
            && !observed.untracking.contains(&uid)
            && (!shape.indexed || shape.valid_index(pod).is_some())
    };
    let new_succeeded: Vec<&Pod> = observed
        .pods
        .iter()
        .filter(fresh)
        .filter(|p| phase(p) == "Succeeded")
        .map(|p| &**p)
        .collect();
    let new_failed: Vec<&Pod> = observed
        .pods
        .iter()
        .filter(fresh)
        .filter(|p| shape.is_failed(p))
        .map(|p| &**p)
        .collect();
    let mut succeeded =
        status.succeeded.unwrap_or(0) + new_succeeded.len() as i32 + uncounted_s.len() as i32;
    // Failures an `Ignore` rule matched count nowhere.
    let new_failed_counted = new_failed
        .iter()
        .filter(|p| shape.failure_counts(p))
        .count() as i32;
    let failed = status.failed.unwrap_or(0) + new_failed_counted + uncounted_f.len() as i32;

    let mut active_pods: Vec<Arc<Pod>> = observed
        .pods
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let mut active = active_pods.len() as i32;
    let mut ready = active_pods.iter().filter(|p| pods::is_ready(p)).count() as i32;
    let mut terminating = observed
        .pods
        .iter()
        .filter(|p| pods::is_terminating(p))
        .count() as i32;

    if status.start_time.is_none() && !shape.suspended {
        status.start_time = Some(Time(now));
    }
    let backoff = observed.backoff.after(&new_succeeded, &new_failed);
    let mut requeue_after = None;

    let mut finish = if let Some(met) = true_condition(&status, SUCCESS_CRITERIA_MET) {
        Some(Finish::Success {
            reason: met.reason.clone().unwrap_or_default(),
            message: met.message.clone().unwrap_or_default(),
        })
    } else if let Some(target) = true_condition(&status, FAILURE_TARGET) {
        Some(Finish::Failure {
            reason: target.reason.clone().unwrap_or_default(),
            message: target.message.clone().unwrap_or_default(),
        })
    } else if let Some(message) = shape.fail_job_message(observed.pods) {
        Some(Finish::Failure {
            reason: "PodFailurePolicy".into(),
            message,
        })
    } else if failed > shape.backoff_limit || past_backoff_limit_on_failure(&shape, observed.pods) {
        Some(Finish::Failure {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        })
    } else if let Some(left) = deadline_left(&shape, &status, now) {
        if left.is_zero() {
            Some(Finish::Failure {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            })
        } else {
            requeue_after = Some(left);
            None
        }
    } else {
        None
    };

    let completions = shape.completions.unwrap_or(0);
    let prev_succeeded_indexes = if shape.indexed {
        Indexes::parse(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        )
    } else {
        Indexes::default()
    };
    let mut succeeded_indexes = Indexes::default();
    let mut failed_indexes = None;
    let mut delayed = HashMap::new();
    if shape.indexed {
        succeeded_indexes = prev_succeeded_indexes.with(
            observed
                .pods
                .iter()
                .filter(|p| phase(p) == "Succeeded" && has_tracking_finalizer(p))
                .filter_map(|p| shape.valid_index(p)),
        );
        succeeded = succeeded_indexes.total();
        if let Some(limit) = shape.backoff_limit_per_index {
            let prev = Indexes::parse(status.failed_indexes.as_deref().unwrap_or(""), completions);
            let failed_now = prev.with(
                observed
                    .pods
                    .iter()
                    .filter(|p| has_tracking_finalizer(p) && shape.fails_index(p, limit))
                    .filter_map(|p| shape.valid_index(p)),
            );
            if finish.is_none() {
                if shape
                    .max_failed_indexes
                    .is_some_and(|m| failed_now.total() > m)
                {
                    finish = Some(Finish::Failure {
                        reason: "MaxFailedIndexesExceeded".into(),
                        message: "Job has exceeded the specified maximal number of failed indexes"
                            .into(),
                    });
                } else if failed_now.total() > 0
                    && failed_now.total() + succeeded_indexes.total() >= completions
                {
                    finish = Some(Finish::Failure {
                        reason: "FailedIndexes".into(),
                        message: "Job has failed indexes".into(),
                    });
                }
            }
            delayed = delayed_deletions(
                &shape,
                observed,
                &active_pods,
                &succeeded_indexes,
                &failed_now,
            );
            failed_indexes = Some(failed_now);
        }
        if finish.is_none()
            && let Some(message) = match_success_policy(
                spec.success_policy.as_ref(),
                completions,
                &succeeded_indexes,
            )
        {
            finish = Some(Finish::Success {
                reason: "SuccessPolicy".into(),
                message,
            });
        }
    }

    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut events = Vec::new();
    if finish.is_some() {
        // A finishing Job stops what still runs: the pods are counted (as
        // failed, if the Job fails), released, then deleted.
        let deleted_ready = active_pods.iter().filter(|p| pods::is_ready(p)).count() as i32;
        delete = active_pods
            .drain(..)
            .map(|pod| Deletion {
                pod,
                untrack: false,
            })
            .collect();
        terminating += active;
        active = 0;
        ready -= deleted_ready;
        if observed.writes_in_flight {
            finish = None;
        }
    } else {
        let manage = !observed.writes_in_flight && job.metadata.deletion_timestamp.is_none();
        if manage {
            let managed = Manage {
                shape: &shape,
                observed,
                active_pods: &active_pods,
                succeeded,
                terminating,
                succeeded_indexes: &succeeded_indexes,
                failed_indexes: failed_indexes.as_ref(),
                delayed: &delayed,
                backoff: &backoff,
                now,
                config,
            }
            .run();
            if !managed.delete.is_empty() {
                let removed = managed.delete.len() as i32;
                let removed_ready = managed
                    .delete
                    .iter()
                    .filter(|d| pods::is_ready(&d.pod))
                    .count();
                active -= removed;
                terminating += removed;
                ready -= removed_ready as i32;
            }
            active += managed.create.len() as i32;
            if let Some(wait) = managed.requeue_after {
                requeue_after = Some(requeue_after.map_or(wait, |r: Duration| r.min(wait)));
            }
            create = managed.create;
            delete = managed.delete;
        }
        let complete = match shape.completions {
            None => succeeded > 0 && active == 0,
            Some(c) => succeeded >= c && active == 0,
        };
        if complete {
            finish = Some(Finish::Success {
                reason: "CompletionsReached".into(),
                message: "Reached expected number of succeeded pods".into(),
            });
        } else if manage {
            if shape.suspended {
                if ensure_condition(
                    &mut status,
                    SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                ) {
                    events.push((EventType::Normal, "Suspended", "Job suspended"));
                }
            } else if ensure_condition(
                &mut status,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                events.push((EventType::Normal, "Resumed", "Job resumed"));
                // activeDeadlineSeconds counts time spent running.
                status.start_time = Some(Time(now));
            }
        }
    }

    status.active = Some(active);
    status.ready = Some(ready);
    status.terminating = Some(terminating);
    Plan {
        create,
        delete,
        backoff,
        requeue_after: requeue_after.map(|r| r.min(MAX_SLEEP)),
        events,
        status,
        finish,
        succeeded_indexes,
        prev_succeeded_indexes,
        failed_indexes,
        delayed,
    }
}

/// With `restartPolicy: OnFailure`, failures are container restarts in
/// running pods; their sum counts against `backoffLimit`.
fn past_backoff_limit_on_failure(shape: &Shape, pods: &[Arc<Pod>]) -> bool {
    if !shape.restart_on_failure {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if shape.backoff_limit == 0 {
        restarts > 0
    } else {
        restarts >= shape.backoff_limit
    }
}

/// Time left before `activeDeadlineSeconds` (zero when past), if it applies.
fn deadline_left(shape: &Shape, status: &JobStatus, now: Timestamp) -> Option<Duration> {
    let deadline = shape.active_deadline?;
    if shape.suspended {
        return None;
    }
    let start = status.start_time.as_ref()?.0;
    let elapsed = now.duration_since(start).as_secs_f64().max(0.0);
    let left = (deadline as f64 - elapsed).max(0.0);
    Some(Duration::from_secs_f64(left))
}

/// Per index, the last failed pod that waits for its replacement: it carries
/// the index's failure count and time, which the replacement inherits.
fn delayed_deletions(
    shape: &Shape,
    observed: &Observed<'_>,
    active_pods: &[Arc<Pod>],
    succeeded: &Indexes,
    failed: &Indexes,
) -> HashMap<i32, Arc<Pod>> {
    let active: HashSet<i32> = active_pods
        .iter()
        .filter_map(|p| completion_index(p))
        .collect();
    let mut delayed: HashMap<i32, Arc<Pod>> = HashMap::new();
    for pod in observed.pods {
        if !has_tracking_finalizer(pod)
            || observed.untracking.contains(&uid(pod))
            || !shape.is_failed(pod)
        {
            continue;
        }
        let Some(index) = shape.valid_index(pod) else {
            continue;
        };
        if succeeded.contains(index) || failed.contains(index) || active.contains(&index) {
            continue;
        }
        let replace = delayed.get(&index).is_none_or(|kept| {
            index_absolute_failure_count(kept) <= index_absolute_failure_count(pod)
                && finished_at(pod) >= finished_at(kept)
        });
        if replace {
            delayed.insert(index, Arc::clone(pod));
        }
    }
    delayed
}

/// Keeping the number of running pods right (upstream's `manageJob`).
struct Manage<'a> {
    shape: &'a Shape,
    observed: &'a Observed<'a>,
    active_pods: &'a [Arc<Pod>],
    succeeded: i32,
    terminating: i32,
    succeeded_indexes: &'a Indexes,
    failed_indexes: Option<&'a Indexes>,
    delayed: &'a HashMap<i32, Arc<Pod>>,
    backoff: &'a BackoffRecord,
    now: Timestamp,
    config: &'a JobConfig,
}

#[derive(Default)]
struct Managed {
    create: Vec<NewPod>,
    delete: Vec<Deletion>,
    requeue_after: Option<Duration>,
}

impl Manage<'_> {
    fn run(self) -> Managed {
        let shape = self.shape;
        let active = self.active_pods.len() as i32;
        let untrack = |pod: Arc<Pod>| Deletion { pod, untrack: true };
        if shape.suspended {
            let mut pods = self.active_pods.to_vec();
            pods.sort_by(|a, b| deletion_order(a, b));
            return Managed {
                delete: pods.into_iter().map(untrack).collect(),
                ..Managed::default()
            };
        }
        let want = match shape.completions {
            None if self.succeeded > 0 => active,
            None => shape.parallelism,
            Some(c) => (c - self.succeeded).clamp(0, shape.parallelism),
        };
        let excess = usize::try_from(active - want).unwrap_or(0);
        let mut surplus = self.for_removal(excess);
        surplus.truncate(self.config.burst);
        if !surplus.is_empty() {
            // Deletions and creations never mix in one reconcile.
            return Managed {
                delete: surplus.into_iter().map(untrack).collect(),
                ..Managed::default()
            };
        }
        let terminating = if shape.only_replace_failed {
            self.terminating
        } else {
            0
        };
        let missing = usize::try_from(want - terminating - active).unwrap_or(0);
        if missing == 0 {
            return Managed::default();
        }
        let min_wait = Duration::from_secs(1);
        if shape.backoff_limit_per_index.is_none() {
            let wait = self.backoff.remaining(
                self.now,
                self.config.pod_failure_backoff,
                self.config.max_pod_failure_backoff,
            );
            if !wait.is_zero() {
                return Managed {
                    requeue_after: Some(wait.max(min_wait)),
                    ..Managed::default()
                };
            }
        }
        let count = missing.min(self.config.burst);
        if !shape.indexed {
            let create = (0..count)
                .map(|_| NewPod {
                    index: None,
                    index_failure_count: None,
                    index_ignored_failure_count: None,
                })
                .collect();
            return Managed {
                create,
                ..Managed::default()
            };
        }
        let mut taken = self
            .succeeded_indexes
            .with(self.active_pods.iter().filter_map(|p| completion_index(p)));
        if shape.only_replace_failed {
            taken = taken.with(
                self.observed
                    .pods
                    .iter()
                    .filter(|p| pods::is_terminating(p))
                    .filter_map(|p| completion_index(p)),
            );
        }
        if let Some(failed) = self.failed_indexes {
            taken = taken.union(failed);
        }
        let indexes = taken.first_missing(count, shape.completions.unwrap_or(0));
        if shape.backoff_limit_per_index.is_none() {
            let create = indexes
                .into_iter()
                .map(|index| NewPod {
                    index: Some(index),
                    index_failure_count: None,
                    index_ignored_failure_count: None,
                })
                .collect();
            return Managed {
                create,
                ..Managed::default()
            };
        }
        // Each index waits out its own failures.
        let mut create = Vec::new();
        let mut shortest: Option<Duration> = None;
        for index in indexes {
            let previous = self.delayed.get(&index);
            let wait = previous.map_or(Duration::ZERO, |pod| {
                BackoffRecord {
                    failures_after_last_success: index_absolute_failure_count(pod) as u32 + 1,
                    last_failure: Some(finished_at(pod)),
                }
                .remaining(
                    self.now,
                    self.config.pod_failure_backoff,
                    self.config.max_pod_failure_backoff,
                )
            });
            if wait.is_zero() {
                // The replacement inherits the index's failures, the one it
                // replaces included.
                let (mut failures, mut ignored) = previous.map_or((0, 0), |p| {
                    (index_failure_count(p), index_ignored_failure_count(p))
                });
                match previous {
                    Some(p) if !shape.failure_counts(p) => ignored += 1,
                    Some(_) => failures += 1,
                    None => {}
                }
                create.push(NewPod {
                    index: Some(index),
                    index_failure_count: Some(failures),
                    index_ignored_failure_count: (ignored > 0).then_some(ignored),
                });
            } else {
                shortest = Some(shortest.map_or(wait, |s| s.min(wait)));
            }
        }
        let requeue_after = if create.is_empty() {
            shortest.map(|s| s.max(min_wait))
        } else {
            None
        };
        Managed {
            create,
            requeue_after,
            ..Managed::default()
        }
    }

    /// Active pods to delete: for an Indexed Job, every pod without a valid
    /// index and all but the best pod of a repeated index; then the cheapest
    /// pods until `at_least` are chosen.
    fn for_removal(&self, at_least: usize) -> Vec<Arc<Pod>> {
        let mut remove = Vec::new();
        let mut keep: Vec<Arc<Pod>> = Vec::new();
        if self.shape.indexed {
            let mut by_index: HashMap<i32, Vec<Arc<Pod>>> = HashMap::new();
            for pod in self.active_pods {
                match self.shape.valid_index(pod) {
                    Some(index) => by_index.entry(index).or_default().push(Arc::clone(pod)),
                    None => remove.push(Arc::clone(pod)),
                }
            }
            for (_, mut same) in by_index {
                same.sort_by(|a, b| deletion_order(a, b));
                let best = same.pop().expect("groups are never empty");
                remove.extend(same);
                keep.push(best);
            }
        } else {
            keep = self.active_pods.to_vec();
        }
        if remove.len() < at_least {
            keep.sort_by(|a, b| deletion_order(a, b));
            let more = at_least - remove.len();
            remove.extend(keep.into_iter().take(more));
        }
        remove
    }
}

impl Plan {
    /// The second step: what to record before finalizers are removed, and
    /// which pods to release, given how the pod writes went.
    pub fn track(
        &self,
        job: &Job,
        observed: &Observed<'_>,
        outcome: &Outcome,
        now: Timestamp,
        config: &JobConfig,
    ) -> Tracking {
        let spec = job.spec.clone().unwrap_or_default();
        let shape = Shape::of(&spec);
        let mut status = self.status.clone();
        let not_deleted = outcome.failed_deletes.len() as i32;
        let not_deleted_ready = outcome
            .failed_deletes
            .iter()
            .filter(|p| pods::is_ready(p))
            .count();
        status.active =
            Some(status.active.unwrap_or(0) + not_deleted - outcome.failed_creates as i32);
        status.terminating = Some(status.terminating.unwrap_or(0) - not_deleted);
        status.ready = Some(status.ready.unwrap_or(0) + not_deleted_ready as i32);
        let finish = self.finish.clone();
        let failing = matches!(finish, Some(Finish::Failure { .. }));

        let (orig_s, orig_f) = uncounted(&status);
        let orig_s: HashSet<String> = orig_s.into_iter().collect();
        let orig_f: HashSet<String> = orig_f.into_iter().collect();
        let tracked: HashSet<String> = observed
            .pods
            .iter()
            .filter(|p| has_tracking_finalizer(p))
            .map(|p| uid(p))
            .filter(|u| !observed.untracking.contains(u))
            .collect();
        count_untracked(&mut status, &tracked);
        let (mut new_s, mut new_f) = uncounted(&status);

        let mut pods: Vec<&Arc<Pod>> = observed
            .pods
            .iter()
            .filter(|p| tracked.contains(&uid(p)))
            .collect();
        if shape.indexed {
            pods.sort_by_key(|p| completion_index(p).unwrap_or(i32::MAX));
        }
        let deleting = job.metadata.deletion_timestamp.is_some();
        let mut untrack = Vec::new();
        let mut new_indexes = Vec::new();
        let mut capped = false;
        for pod in pods {
            let pod_uid = uid(pod);
            let failed = shape.is_failed(pod);
            let succeeded = phase(pod) == "Succeeded";
            let waiting = completion_index(pod)
                .and_then(|i| self.delayed.get(&i))
                .is_some_and(|kept| kept.uid() == pod.uid());
            let releasable = deleting || finish.is_some() || succeeded || (failed && !waiting);
            if !releasable {
                continue;
            }
            untrack.push(Arc::clone(pod));
            if succeeded && !orig_f.contains(&pod_uid) {
                if shape.indexed {
                    if let Some(index) = shape.valid_index(pod)
                        && !self.prev_succeeded_indexes.contains(index)
                    {
                        new_indexes.push(index);
                    }
                } else if !orig_s.contains(&pod_uid) {
                    new_s.push(pod_uid);
                }
            } else if (failed || failing)
                && !orig_f.contains(&pod_uid)
                && (!shape.indexed || shape.valid_index(pod).is_some())
                && shape.failure_counts(pod)
            {
                new_f.push(pod_uid);
            }
            if new_indexes.len() + new_s.len() + new_f.len() >= config.max_uncounted {
                capped = true;
                break;
            }
        }
        set_uncounted(&mut status, new_s, new_f);
        if shape.indexed {
            let done = self.succeeded_indexes.with(new_indexes);
            status.succeeded = Some(done.total());
            status.completed_indexes = Some(done.to_string());
            status.failed_indexes = self.failed_indexes.as_ref().map(ToString::to_string);
        }

        let terminal = match finish {
            Some(Finish::Failure { reason, message }) => {
                if true_condition(&status, FAILURE_TARGET).is_none() {
                    ensure_condition(&mut status, FAILURE_TARGET, "True", &reason, &message, now);
                }
                Some(condition(FAILED, "True", &reason, &message, now))
            }
            Some(Finish::Success { reason, message }) => {
                if true_condition(&status, SUCCESS_CRITERIA_MET).is_none() {
                    ensure_condition(
                        &mut status,
                        SUCCESS_CRITERIA_MET,
                        "True",
                        &reason,
                        &message,
                        now,
                    );
                }
                Some(condition(COMPLETE, "True", &reason, &message, now))
            }
            None => None,
        };
        normalize(&mut status);
        Tracking {
            status,
            untrack,
            tracked,
            terminal,
            capped,
        }
    }
}

impl Tracking {
    /// The third step: the status once the finalizers of the pods with UIDs
    /// in `untracked` are gone and the pods a finishing Job stops were
    /// deleted (but for `not_stopped`), and the terminal condition if the Job
    /// finished with it.
    pub fn finalize(
        &self,
        untracked: &HashSet<String>,
        not_stopped: &[Arc<Pod>],
        now: Timestamp,
    ) -> (JobStatus, Option<JobCondition>) {
        let mut status = self.status.clone();
        let running = not_stopped.len() as i32;
        let running_ready = not_stopped.iter().filter(|p| pods::is_ready(p)).count() as i32;
        status.active = Some(status.active.unwrap_or(0) + running);
        status.terminating = Some(status.terminating.unwrap_or(0) - running);
        status.ready = Some(status.ready.unwrap_or(0) + running_ready);
        let still: HashSet<String> = self.tracked.difference(untracked).cloned().collect();
        count_untracked(&mut status, &still);
        let (s, f) = uncounted(&status);
        let mut finished = None;
        if let Some(terminal) = &self.terminal
            && !self.capped
            && s.is_empty()
            && f.is_empty()
            && status.terminating.unwrap_or(0) == 0
            && status.active.unwrap_or(0) == 0
        {
            ensure_condition(
                &mut status,
                &terminal.type_,
                "True",
                terminal.reason.as_deref().unwrap_or(""),
                terminal.message.as_deref().unwrap_or(""),
                now,
            );
            if terminal.type_ == COMPLETE {
                status.completion_time = Some(Time(now));
            }
            finished = Some(terminal.clone());
        }
        normalize(&mut status);
        (status, finished)
    }
}
