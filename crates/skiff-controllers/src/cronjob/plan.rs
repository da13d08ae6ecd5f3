//! The CronJob controller's decision, with no IO.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use skiff_client::events::EventType;

use super::SCHEDULED_TIMESTAMP;
use super::schedule::{Schedule, time_zone};
use crate::job::finished_condition;
use crate::pods::controller_reference;

/// Upstream's limit on counting missed start times.
const MAX_MISSED: usize = 100;
/// Requeues aim this far past the next fire time, so a clock a little
/// behind still finds it due.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// The longest sleep: the schedule is measured on the wall clock but slept
/// on the monotonic one, so a CronJob looks again at least hourly in case
/// the wall clock was stepped.
const MAX_SLEEP: Duration = Duration::from_secs(60 * 60);

/// What the reconcile knows besides the CronJob.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The Jobs the CronJob controls, as the cache shows them.
    pub jobs: &'a [Arc<Job>],
    /// UIDs of Jobs in `status.active` that the API server no longer has.
    pub missing: &'a HashSet<String>,
}

/// A Job to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    /// The Job (namespace, name and UID).
    pub job: ObjectReference,
    /// True when it is replaced by a new run (`concurrencyPolicy: Replace`):
    /// the new run is not started unless this delete succeeds.
    pub replaced: bool,
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct Run {
    /// The Job to create.
    pub job: Job,
    /// The schedule time it is for.
    pub scheduled: Timestamp,
}

/// One reconcile's decision.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The status after the deletions, before the new run is added.
    pub status: CronJobStatus,
    /// Jobs to delete: finished ones beyond the history limits, then
    /// running ones being replaced.
    pub delete: Vec<Deletion>,
    /// The run to start, if one is due.
    pub create: Option<Run>,
    /// Events to record.
    pub events: Vec<(EventType, &'static str, String)>,
    /// When the next run is due.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    fn event(&mut self, event_type: EventType, reason: &'static str, message: String) {
        self.events.push((event_type, reason, message));
    }
}

/// `Complete` or `Failed`, if the Job finished.
fn finish_type(job: &Job) -> Option<&str> {
    finished_condition(job).map(|c| c.type_.as_str())
}

/// True if an unfinished Job the CronJob controls is not in
/// `status.active`: the cached CronJob may be older than the Job, so the
/// caller should read it afresh before planning.
pub fn status_may_be_stale(cronjob: &CronJob, jobs: &[Arc<Job>]) -> bool {
    let active = active_uids(cronjob);
    jobs.iter()
        .any(|j| finish_type(j).is_none() && !active.contains(&j.uid().unwrap_or_default()))
}

fn active_uids(cronjob: &CronJob) -> HashSet<String> {
    cronjob
        .status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.uid.clone())
        .collect()
}

/// The name of the run for `scheduled`: the CronJob's name and the minutes
/// since the epoch, so a run is never created twice.
pub fn job_name(cronjob: &CronJob, scheduled: Timestamp) -> String {
    format!(
        "{}-{}",
        cronjob.name_any(),
        scheduled.as_second().div_euclid(60)
    )
}

/// An RFC 3339 time with `Z` for UTC, as Go formats it.
fn rfc3339(at: Timestamp, tz: &TimeZone) -> String {
    let zoned = at.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for the run at `scheduled`: the template's labels, annotations
/// and spec, owned by the CronJob, with the scheduled time annotated in the
/// CronJob's time zone.
pub fn job_for(cronjob: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = &cronjob.spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.to_string(), rfc3339(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cronjob, scheduled)),
            namespace: cronjob.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(cronjob)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// A reference to `job` for `status.active`.
pub fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some(Job::api_version(&()).into_owned()),
        kind: Some(Job::kind(&()).into_owned()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Decides what to do for `cronjob` at `now`. `default_tz` is the zone of
/// schedules that name none (upstream: the controller manager's zone).
pub fn plan(
    cronjob: &CronJob,
    observed: &Observed<'_>,
    now: Timestamp,
    default_tz: &TimeZone,
) -> Plan {
    let mut plan = Plan {
        status: cronjob.status.clone().unwrap_or_default(),
        ..Plan::default()
    };
    let mut active = plan.status.active.take().unwrap_or_default();
    let active_uids = active_uids(cronjob);

    for job in observed.jobs {
        let uid = job.uid().unwrap_or_default();
        let listed = active_uids.contains(&uid);
        match finish_type(job) {
            None if !listed => plan.event(
                EventType::Warning,
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    job.name_any()
                ),
            ),
            None => {}
            Some(finished) => {
                if listed {
                    active.retain(|r| r.uid.as_deref() != Some(&uid));
                    plan.event(
                        EventType::Normal,
                        "SawCompletedJob",
                        format!("Saw completed job: {}, status: {finished}", job.name_any()),
                    );
                }
                let completed = job.status.as_ref().and_then(|s| s.completion_time.as_ref());
                if finished == "Complete"
                    && let Some(completed) = completed
                    && plan
                        .status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| t.0 < completed.0)
                {
                    plan.status.last_successful_time = Some(completed.clone());
                }
            }
        }
    }
    let present: HashSet<String> = observed.jobs.iter().filter_map(|j| j.uid()).collect();
    active.retain(|r| {
        let uid = r.uid.clone().unwrap_or_default();
        let gone = !present.contains(&uid) && observed.missing.contains(&uid);
        if gone {
            plan.events.push((
                EventType::Normal,
                "MissingJob",
                format!(
                    "Active job went missing: {}",
                    r.name.as_deref().unwrap_or_default()
                ),
            ));
        }
        !gone
    });
    plan.delete = history_cleanup(cronjob, observed.jobs);
    let deleted: HashSet<&str> = plan
        .delete
        .iter()
        .filter_map(|d| d.job.uid.as_deref())
        .collect();
    active.retain(|r| !r.uid.as_deref().is_some_and(|u| deleted.contains(u)));

    decide(&mut plan, cronjob, &active, now, default_tz);
    if plan.create.is_some() && cronjob.spec.concurrency_policy.as_deref() == Some("Replace") {
        plan.delete.extend(active.drain(..).map(|job| Deletion {
            job,
            replaced: true,
        }));
    }
    plan.status.active = (!active.is_empty()).then_some(active);
    plan
}

/// The schedule part of the plan: whether a run is due (then
/// [`Plan::create`] is set), and when to look again.
fn decide(
    plan: &mut Plan,
    cronjob: &CronJob,
    active: &[ObjectReference],
    now: Timestamp,
    default_tz: &TimeZone,
) {
    let spec = &cronjob.spec;
    if cronjob.metadata.deletion_timestamp.is_some() {
        return;
    }
    let zone_name = spec.time_zone.as_deref();
    let tz = match zone_name.map(time_zone) {
        None => default_tz.clone(),
        Some(Ok(tz)) => tz,
        Some(Err(error)) => {
            plan.event(
                EventType::Warning,
                "UnknownTimeZone",
                format!(
                    "invalid timeZone: {:?}: {error}",
                    zone_name.unwrap_or_default()
                ),
            );
            return;
        }
    };
    if spec.suspend == Some(true) {
        return;
    }
    if spec.schedule.contains("TZ") {
        plan.event(
            EventType::Warning,
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        );
    }
    let schedule = match Schedule::parse(&spec.schedule, tz) {
        Ok(schedule) => schedule,
        Err(error) => {
            plan.event(
                EventType::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {error}", spec.schedule),
            );
            return;
        }
    };
    let created = cronjob
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let last = plan.status.last_schedule_time.as_ref().map(|t| t.0);
    let earliest = last.unwrap_or(created);
    let deadline = spec
        .starting_deadline_seconds
        .map(|s| now - jiff::SignedDuration::from_secs(s));
    let window_start = deadline.map_or(earliest, |d| d.max(earliest));

    let Some(first) = schedule.next_after(window_start) else {
        plan.event(
            EventType::Warning,
            "InvalidSchedule",
            format!(
                "invalid schedule: {} : the schedule never fires",
                spec.schedule
            ),
        );
        return;
    };
    plan.requeue_after = schedule.next_after(now.max(earliest)).map(|next| {
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
        (wait + NEXT_SCHEDULE_DELTA).min(MAX_SLEEP)
    });
    if first > now {
        // Nothing due in the window; say so if a run fell before it.
        if let Some(deadline) = deadline
            && let Some(missed) = schedule.last_at_or_before(deadline, earliest)
        {
            plan.event(
                EventType::Warning,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    missed.strftime("%a, %d %b %Y %H:%M:%S +0000")
                ),
            );
        }
        return;
    }
    let scheduled = schedule
        .last_at_or_before(now, window_start)
        .unwrap_or(first);
    if count_fires(&schedule, window_start, now, MAX_MISSED + 1) > MAX_MISSED {
        plan.event(
            EventType::Warning,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".to_string(),
        );
    }
    let name = job_name(cronjob, scheduled);
    if active.iter().any(|r| r.name.as_deref() == Some(&name)) || last == Some(scheduled) {
        return;
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        plan.event(
            EventType::Normal,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .to_string(),
        );
        return;
    }
    let zone = spec
        .time_zone
        .as_deref()
        .and_then(|z| time_zone(z).ok())
        .unwrap_or(TimeZone::UTC);
    plan.create = Some(Run {
        job: job_for(cronjob, scheduled, &zone),
        scheduled,
    });
}

/// How many fire times fall in `(after, until]`, counting at most `cap`.
fn count_fires(schedule: &Schedule, after: Timestamp, until: Timestamp, cap: usize) -> usize {
    let mut count = 0;
    let mut at = after;
    while count < cap {
        match schedule.next_after(at) {
            Some(next) if next <= until => {
                count += 1;
                at = next;
            }
            _ => break,
        }
    }
    count
}

/// Finished Jobs beyond `successfulJobsHistoryLimit` /
/// `failedJobsHistoryLimit`, oldest first (by start time, then name; Jobs
/// that never started count as newest).
fn history_cleanup(cronjob: &CronJob, jobs: &[Arc<Job>]) -> Vec<Deletion> {
    let spec = &cronjob.spec;
    let mut deletions = Vec::new();
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else {
            continue;
        };
        let mut finished: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finish_type(j) == Some(kind))
            .collect();
        let excess = finished
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if excess == 0 {
            continue;
        }
        finished.sort_by(|a, b| {
            let started = |j: &Job| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0)
            };
            match (started(a), started(b)) {
                (Some(x), Some(y)) if x != y => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => a.name_any().cmp(&b.name_any()),
            }
        });
        deletions.extend(finished.into_iter().take(excess).map(|j| Deletion {
            job: job_reference(j),
            replaced: false,
        }));
    }
    deletions
}
