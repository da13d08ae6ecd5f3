use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobSpec, JobStatus, JobTemplateSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cronjob(schedule: &str, created: &str) -> CronJob {
    CronJob {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("default".into()),
            uid: Some("cj-uid".into()),
            creation_timestamp: Some(Time(ts(created))),
            ..ObjectMeta::default()
        },
        spec: CronJobSpec {
            schedule: schedule.into(),
            concurrency_policy: Some("Allow".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(1),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("app".to_string(), "hello".to_string())])),
                    annotations: Some(BTreeMap::from([("note".to_string(), "x".to_string())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        },
        status: None,
    }
}

fn status(cj: &mut CronJob) -> &mut CronJobStatus {
    cj.status.get_or_insert_with(Default::default)
}

fn reference(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(name.into()),
        namespace: Some("default".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectReference::default()
    }
}

/// A Job of the CronJob; `finished` is `(condition, start, completion)`.
fn job(name: &str, finished: Option<(&str, &str, &str)>) -> Arc<Job> {
    Arc::new(Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            owner_references: Some(vec![OwnerReference {
                kind: "CronJob".into(),
                uid: "cj-uid".into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(JobStatus {
            start_time: finished.map(|(_, start, _)| Time(ts(start))),
            completion_time: finished
                .filter(|(type_, _, _)| *type_ == "Complete")
                .map(|(_, _, end)| Time(ts(end))),
            conditions: finished.map(|(type_, _, end)| {
                vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(end))),
                    ..JobCondition::default()
                }]
            }),
            ..JobStatus::default()
        }),
    })
}

fn run(cj: &CronJob, jobs: &[Arc<Job>], now: &str) -> Plan {
    let none = HashSet::new();
    let observed = Observed {
        jobs,
        missing: &none,
    };
    plan(cj, &observed, ts(now), &TimeZone::UTC)
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|(_, reason, _)| *reason).collect()
}

fn message(plan: &Plan, reason: &str) -> String {
    plan.events
        .iter()
        .find(|(_, r, _)| *r == reason)
        .map(|(_, _, m)| m.clone())
        .unwrap_or_default()
}

fn deleted(plan: &Plan) -> Vec<(String, bool)> {
    plan.delete
        .iter()
        .map(|d| (d.job.name.clone().unwrap_or_default(), d.replaced))
        .collect()
}

fn active(plan: &Plan) -> Vec<String> {
    plan.status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect()
}

#[test]
fn the_first_due_run_is_created_from_the_template_and_named_by_its_minute() {
    let cj = cronjob("*/5 * * * *", "2024-05-01T10:00:30Z");
    let plan = run(&cj, &[], "2024-05-01T10:05:10Z");
    let run = plan.create.expect("10:05 is due");
    assert_eq!(run.scheduled, ts("2024-05-01T10:05:00Z"));
    let job = run.job;
    // 2024-05-01T10:05:00Z is 1714557900 s, 28575965 minutes.
    assert_eq!(job.name_any(), "hello-28575965");
    assert_eq!(job_name(&cj, ts("2024-05-01T10:05:59Z")), "hello-28575965");
    assert_eq!(job.namespace().as_deref(), Some("default"));
    assert_eq!(job.labels()["app"], "hello");
    assert_eq!(job.annotations()["note"], "x");
    assert_eq!(
        job.annotations()[SCHEDULED_TIMESTAMP],
        "2024-05-01T10:05:00Z"
    );
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("CronJob", "hello", "cj-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(job.spec.unwrap().backoff_limit, Some(2));
    // Woken just after 10:10.
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(4 * 60 + 50) + Duration::from_millis(100))
    );
    assert!(plan.events.is_empty());
}

#[test]
fn nothing_runs_before_the_first_fire_time() {
    let cj = cronjob("*/5 * * * *", "2024-05-01T10:00:30Z");
    let plan = run(&cj, &[], "2024-05-01T10:04:00Z");
    assert!(plan.create.is_none());
    assert_eq!(plan.requeue_after, Some(Duration::from_millis(60_100)));
    // A far fire time is looked at again hourly, in case the clock jumps.
    let yearly = cronjob("@yearly", "2024-05-01T10:00:30Z");
    let plan = run(&yearly, &[], "2024-05-01T10:04:00Z");
    assert!(plan.create.is_none());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(3600)));
}

#[test]
fn a_run_already_made_for_the_time_is_not_made_again() {
    let mut cj = cronjob("*/5 * * * *", "2024-05-01T09:00:00Z");
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:05:00Z")));
    assert!(run(&cj, &[], "2024-05-01T10:06:00Z").create.is_none());

    // Or when the run is active under its deterministic name.
    let mut cj = cronjob("*/5 * * * *", "2024-05-01T09:00:00Z");
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:00:00Z")));
    status(&mut cj).active = Some(vec![reference("hello-28575965")]);
    let jobs = [job("hello-28575965", None)];
    let plan = run(&cj, &jobs, "2024-05-01T10:06:00Z");
    assert!(plan.create.is_none());
    assert_eq!(active(&plan), ["hello-28575965"]);
}

#[test]
fn only_the_most_recent_missed_time_runs_and_many_misses_warn() {
    let cj = cronjob("* * * * *", "2024-05-01T00:00:00Z");
    let plan = run(&cj, &[], "2024-05-03T12:34:56Z");
    assert_eq!(
        plan.create.as_ref().unwrap().scheduled,
        ts("2024-05-03T12:34:00Z")
    );
    assert_eq!(reasons(&plan), ["TooManyMissedTimes"]);
    assert_eq!(
        message(&plan, "TooManyMissedTimes"),
        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
    );

    // A few missed times run once, quietly.
    let plan = run(&cj, &[], "2024-05-01T00:30:10Z");
    assert_eq!(
        plan.create.as_ref().unwrap().scheduled,
        ts("2024-05-01T00:30:00Z")
    );
    assert!(plan.events.is_empty());
}

#[test]
fn the_starting_deadline_skips_runs_that_are_too_late() {
    let mut cj = cronjob("*/5 * * * *", "2024-05-01T09:00:00Z");
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:00:00Z")));
    cj.spec.starting_deadline_seconds = Some(60);
    let plan = run(&cj, &[], "2024-05-01T10:07:30Z");
    assert!(plan.create.is_none());
    assert_eq!(reasons(&plan), ["MissSchedule"]);
    assert_eq!(
        message(&plan, "MissSchedule"),
        "Missed scheduled time to start a job: Wed, 01 May 2024 10:05:00 +0000"
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_millis(150_100)));

    cj.spec.starting_deadline_seconds = Some(200);
    let plan = run(&cj, &[], "2024-05-01T10:07:30Z");
    assert_eq!(
        plan.create.as_ref().unwrap().scheduled,
        ts("2024-05-01T10:05:00Z")
    );
    assert!(plan.events.is_empty());
}

#[test]
fn forbid_skips_a_run_while_another_is_active() {
    let mut cj = cronjob("*/5 * * * *", "2024-05-01T09:00:00Z");
    cj.spec.concurrency_policy = Some("Forbid".into());
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:00:00Z")));
    status(&mut cj).active = Some(vec![reference("hello-28575960")]);
    let jobs = [job("hello-28575960", None)];
    let plan = run(&cj, &jobs, "2024-05-01T10:05:01Z");
    assert!(plan.create.is_none());
    assert_eq!(reasons(&plan), ["JobAlreadyActive"]);
    assert_eq!(
        message(&plan, "JobAlreadyActive"),
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    assert!(plan.requeue_after.is_some());
}

#[test]
fn replace_deletes_the_active_run_before_starting_the_next() {
    let mut cj = cronjob("*/5 * * * *", "2024-05-01T09:00:00Z");
    cj.spec.concurrency_policy = Some("Replace".into());
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:00:00Z")));
    status(&mut cj).active = Some(vec![reference("hello-28575960")]);
    let jobs = [job("hello-28575960", None)];
    let plan = run(&cj, &jobs, "2024-05-01T10:05:01Z");
    assert_eq!(deleted(&plan), [("hello-28575960".to_string(), true)]);
    assert!(active(&plan).is_empty());
    assert!(plan.create.is_some());

    // Allow runs them side by side.
    cj.spec.concurrency_policy = Some("Allow".into());
    let plan = run(&cj, &jobs, "2024-05-01T10:05:01Z");
    assert!(plan.delete.is_empty());
    assert_eq!(active(&plan), ["hello-28575960"]);
    assert!(plan.create.is_some());
}

#[test]
fn a_suspended_or_deleted_cronjob_starts_nothing_and_sleeps() {
    let mut cj = cronjob("* * * * *", "2024-05-01T09:00:00Z");
    cj.spec.suspend = Some(true);
    let plan = run(&cj, &[], "2024-05-01T10:00:00Z");
    assert!(plan.create.is_none());
    assert!(plan.requeue_after.is_none());

    let mut cj = cronjob("* * * * *", "2024-05-01T09:00:00Z");
    cj.metadata.deletion_timestamp = Some(Time(ts("2024-05-01T09:59:00Z")));
    let plan = run(&cj, &[], "2024-05-01T10:00:00Z");
    assert!(plan.create.is_none());
    assert!(plan.requeue_after.is_none());
}

#[test]
fn finished_runs_leave_the_active_list_and_record_the_last_success() {
    let mut cj = cronjob("0 * * * *", "2024-05-01T00:00:00Z");
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:00:00Z")));
    status(&mut cj).active = Some(vec![reference("done"), reference("running")]);
    let jobs = [
        job(
            "done",
            Some(("Complete", "2024-05-01T10:00:01Z", "2024-05-01T10:00:09Z")),
        ),
        job("running", None),
        job(
            "old",
            Some(("Complete", "2024-05-01T09:00:01Z", "2024-05-01T09:00:05Z")),
        ),
    ];
    let plan = run(&cj, &jobs, "2024-05-01T10:30:00Z");
    assert_eq!(active(&plan), ["running"]);
    assert_eq!(reasons(&plan), ["SawCompletedJob"]);
    assert_eq!(
        message(&plan, "SawCompletedJob"),
        "Saw completed job: done, status: Complete"
    );
    assert_eq!(
        plan.status.last_successful_time,
        Some(Time(ts("2024-05-01T10:00:09Z")))
    );
    assert!(plan.create.is_none());
}

#[test]
fn history_limits_delete_the_oldest_finished_runs() {
    let cj = cronjob("0 * * * *", "2024-05-01T00:00:00Z");
    let complete = |name: &str, hour: u8| {
        let start = format!("2024-05-01T{hour:02}:00:01Z");
        let end = format!("2024-05-01T{hour:02}:00:05Z");
        job(name, Some(("Complete", start.as_str(), end.as_str())))
    };
    let failed = |name: &str, hour: u8| {
        let start = format!("2024-05-01T{hour:02}:00:01Z");
        job(name, Some(("Failed", start.as_str(), start.as_str())))
    };
    let jobs = [
        complete("c5", 5),
        complete("c1", 1),
        complete("c4", 4),
        complete("c2", 2),
        complete("c3", 3),
        failed("f7", 7),
        failed("f6", 6),
        job("running", None),
    ];
    let mut cj = cj;
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T08:00:00Z")));
    status(&mut cj).active = Some(vec![reference("running")]);
    let plan = run(&cj, &jobs, "2024-05-01T08:10:00Z");
    assert_eq!(
        deleted(&plan),
        [
            ("c1".to_string(), false),
            ("c2".to_string(), false),
            ("f6".to_string(), false)
        ]
    );
    assert_eq!(active(&plan), ["running"]);
}

#[test]
fn active_runs_that_vanished_are_dropped() {
    let mut cj = cronjob("0 * * * *", "2024-05-01T00:00:00Z");
    status(&mut cj).last_schedule_time = Some(Time(ts("2024-05-01T10:00:00Z")));
    status(&mut cj).active = Some(vec![reference("gone"), reference("lagging")]);
    let missing = HashSet::from(["uid-gone".to_string()]);
    let observed = Observed {
        jobs: &[],
        missing: &missing,
    };
    let plan = plan(&cj, &observed, ts("2024-05-01T10:30:00Z"), &TimeZone::UTC);
    // "lagging" exists in the API but not yet in the cache: kept.
    assert_eq!(active(&plan), ["lagging"]);
    assert_eq!(reasons(&plan), ["MissingJob"]);
    assert_eq!(
        message(&plan, "MissingJob"),
        "Active job went missing: gone"
    );
}

#[test]
fn an_unlisted_running_job_is_reported_and_marks_the_status_stale() {
    let cj = cronjob("0 * * * *", "2024-05-01T00:00:00Z");
    let jobs = [job("stray", None)];
    assert!(status_may_be_stale(&cj, &jobs));
    let plan = run(&cj, &jobs, "2024-05-01T00:30:00Z");
    assert_eq!(reasons(&plan), ["UnexpectedJob"]);
    assert_eq!(
        message(&plan, "UnexpectedJob"),
        "Saw a job that the controller did not create or forgot: stray"
    );
    let finished = [job(
        "done",
        Some(("Failed", "2024-05-01T00:00:00Z", "2024-05-01T00:01:00Z")),
    )];
    assert!(!status_may_be_stale(&cj, &finished));
}

#[test]
fn time_zones_shift_the_schedule_and_the_scheduled_timestamp() {
    let mut cj = cronjob("0 9 * * *", "2024-05-01T00:00:00Z");
    cj.spec.time_zone = Some("Asia/Tokyo".into());
    // 09:00 in Tokyo is 00:00 UTC.
    let plan = run(&cj, &[], "2024-05-02T00:00:30Z");
    let first = plan.create.unwrap();
    assert_eq!(first.scheduled, ts("2024-05-02T00:00:00Z"));
    assert_eq!(
        first.job.annotations()[SCHEDULED_TIMESTAMP],
        "2024-05-02T09:00:00+09:00"
    );

    cj.spec.time_zone = Some("Mars/Olympus".into());
    let plan = run(&cj, &[], "2024-05-02T00:00:30Z");
    assert!(plan.create.is_none());
    assert_eq!(reasons(&plan), ["UnknownTimeZone"]);
    assert!(message(&plan, "UnknownTimeZone").starts_with("invalid timeZone: \"Mars/Olympus\": "));
}

#[test]
fn schedules_with_a_zone_prefix_warn_and_still_run() {
    let cj = cronjob("CRON_TZ=Asia/Tokyo 0 9 * * *", "2024-05-01T00:00:00Z");
    let plan = run(&cj, &[], "2024-05-02T00:00:30Z");
    assert_eq!(
        plan.create.as_ref().unwrap().scheduled,
        ts("2024-05-02T00:00:00Z")
    );
    assert_eq!(reasons(&plan), ["UnsupportedSchedule"]);
}

#[test]
fn bad_schedules_are_reported_and_not_retried() {
    let plan = run(
        &cronjob("not a cron", "2024-05-01T00:00:00Z"),
        &[],
        "2024-05-02T00:00:00Z",
    );
    assert_eq!(reasons(&plan), ["UnparseableSchedule"]);
    assert!(plan.requeue_after.is_none());
    let plan = run(
        &cronjob("0 0 30 2 *", "2024-05-01T00:00:00Z"),
        &[],
        "2024-05-02T00:00:00Z",
    );
    assert_eq!(reasons(&plan), ["InvalidSchedule"]);
    assert!(plan.create.is_none());
}

#[test]
fn the_default_time_zone_applies_without_time_zone() {
    let cj = cronjob("0 9 * * *", "2024-05-01T00:00:00Z");
    let none = HashSet::new();
    let observed = Observed {
        jobs: &[],
        missing: &none,
    };
    let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
    let plan = plan(&cj, &observed, ts("2024-05-02T00:00:30Z"), &tokyo);
    let run = plan.create.unwrap();
    assert_eq!(run.scheduled, ts("2024-05-02T00:00:00Z"));
    // Without spec.timeZone the annotation is in UTC, as upstream.
    assert_eq!(
        run.job.annotations()[SCHEDULED_TIMESTAMP],
        "2024-05-02T00:00:00Z"
    );
}
