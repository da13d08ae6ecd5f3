use k8s_openapi::api::apps::v1::ReplicaSetCondition;

use super::*;
use crate::deployment::fixtures::{at, deployment, rs};

fn params(replicas: i32) -> Params {
    Params::of(&deployment("web", replicas, "v1")).unwrap()
}

fn progressing(reason: &str, status: &str, updated: i64) -> DeploymentCondition {
    DeploymentCondition {
        last_update_time: Some(Time(at(updated))),
        ..new_condition(PROGRESSING, status, reason, "earlier".into(), at(0))
    }
}

fn counts(replicas: i32, updated: i32, ready: i32, available: i32) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        ..DeploymentStatus::default()
    }
}

fn reason(status: &DeploymentStatus, type_: &str) -> Option<String> {
    condition(status, type_).and_then(|c| c.reason.clone())
}

#[test]
fn setting_a_condition_keeps_its_transition_time_while_its_status_holds() {
    let mut status = DeploymentStatus::default();
    set_condition(
        &mut status,
        new_condition(AVAILABLE, "True", "A", "a".into(), at(1)),
    );
    // Same status and reason: nothing changes, not even the update time.
    set_condition(
        &mut status,
        new_condition(AVAILABLE, "True", "A", "b".into(), at(2)),
    );
    let c = condition(&status, AVAILABLE).unwrap();
    assert_eq!(c.message.as_deref(), Some("a"));
    // Same status, new reason: the transition time stays.
    set_condition(
        &mut status,
        new_condition(AVAILABLE, "True", "B", "b".into(), at(3)),
    );
    let c = condition(&status, AVAILABLE).unwrap();
    assert_eq!(c.last_transition_time, Some(Time(at(1))));
    assert_eq!(c.last_update_time, Some(Time(at(3))));
    // New status: a transition.
    set_condition(
        &mut status,
        new_condition(AVAILABLE, "False", "C", "c".into(), at(4)),
    );
    let c = condition(&status, AVAILABLE).unwrap();
    assert_eq!(c.last_transition_time, Some(Time(at(4))));
    assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
}

#[test]
fn counts_sum_over_replica_sets_and_availability_follows_the_budget() {
    // 10 replicas, 25%: at least 8 must be available.
    let p = params(10);
    let mut old = rs("web-old", 6, "v1", 1, 0);
    old.status.get_or_insert_default().terminating_replicas = Some(2);
    let mut new = rs("web-new", 5, "v2", 2, 10);
    new.status.get_or_insert_default().available_replicas = Some(2);
    new.status.get_or_insert_default().ready_replicas = Some(3);
    let previous = DeploymentStatus {
        collision_count: Some(2),
        ..DeploymentStatus::default()
    };
    let status = calculate_status(&[&old, &new], Some(&new), Some(4), &previous, &p, at(0));
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(status.replicas, Some(11));
    assert_eq!(status.updated_replicas, Some(5));
    assert_eq!(status.ready_replicas, Some(9));
    assert_eq!(status.available_replicas, Some(8));
    assert_eq!(status.unavailable_replicas, Some(3));
    assert_eq!(status.terminating_replicas, Some(2));
    assert_eq!(status.collision_count, Some(2));
    let available = condition(&status, AVAILABLE).unwrap();
    assert_eq!(available.status.as_deref(), Some("True"));
    assert_eq!(
        available.reason.as_deref(),
        Some(MINIMUM_REPLICAS_AVAILABLE)
    );
    assert_eq!(
        available.message.as_deref(),
        Some("Deployment has minimum availability.")
    );

    new.status.get_or_insert_default().available_replicas = Some(1);
    let status = calculate_status(&[&old, &new], Some(&new), Some(4), &previous, &p, at(0));
    let unavailable = condition(&status, AVAILABLE).unwrap();
    assert_eq!(unavailable.status.as_deref(), Some("False"));
    assert_eq!(
        unavailable.reason.as_deref(),
        Some(MINIMUM_REPLICAS_UNAVAILABLE)
    );
    assert_eq!(
        unavailable.message.as_deref(),
        Some("Deployment does not have minimum availability.")
    );
}

#[test]
fn a_complete_rollout_reports_the_new_replica_set_as_progressed() {
    let p = params(3);
    let new = rs("web-5d4f8", 3, "v2", 2, 10);
    let mut previous = counts(3, 2, 3, 3);
    previous.conditions = Some(vec![progressing(REPLICA_SET_UPDATED, "True", 0)]);
    let status = rollout_status(&[&new], Some(&new), "web", Some(1), &previous, &p, at(30));
    let c = condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.status.as_deref(), Some("True"));
    assert_eq!(c.reason.as_deref(), Some(NEW_RS_AVAILABLE));
    assert_eq!(
        c.message.as_deref(),
        Some(r#"ReplicaSet "web-5d4f8" has successfully progressed."#)
    );
    assert_eq!(c.last_transition_time, Some(Time(at(0))));
    // Without a new ReplicaSet the deployment is named instead.
    let none = rollout_status(&[], None, "web", Some(1), &previous, &params(0), at(30));
    assert_eq!(
        condition(&none, PROGRESSING).unwrap().message.as_deref(),
        Some(r#"Deployment "web" has successfully progressed."#)
    );
}

#[test]
fn progress_refreshes_the_update_time_but_not_the_transition_time() {
    let p = params(3);
    let old = rs("web-old", 2, "v1", 1, 0);
    let new = rs("web-new", 2, "v2", 2, 10);
    let mut previous = counts(4, 1, 4, 4);
    previous.conditions = Some(vec![progressing(REPLICA_SET_UPDATED, "True", 5)]);
    let status = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &previous,
        &p,
        at(50),
    );
    let c = condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(REPLICA_SET_UPDATED));
    assert_eq!(
        c.message.as_deref(),
        Some(r#"ReplicaSet "web-new" is progressing."#)
    );
    assert_eq!(c.last_update_time, Some(Time(at(50))));
    assert_eq!(c.last_transition_time, Some(Time(at(0))));
}

#[test]
fn no_progress_past_the_deadline_times_out() {
    let p = params(3);
    let old = rs("web-old", 3, "v1", 1, 0);
    let mut new = rs("web-new", 1, "v2", 2, 10);
    new.status.get_or_insert_default().available_replicas = Some(0);
    new.status.get_or_insert_default().ready_replicas = Some(0);
    let mut previous = counts(4, 1, 3, 3);
    previous.conditions = Some(vec![progressing(REPLICA_SET_UPDATED, "True", 100)]);
    let at_deadline = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &previous,
        &p,
        at(700),
    );
    assert_eq!(
        reason(&at_deadline, PROGRESSING).as_deref(),
        Some(REPLICA_SET_UPDATED)
    );
    assert_eq!(
        deadline_recheck(&p, Some(1), &at_deadline, at(650)),
        Some(Duration::from_secs(51))
    );
    let late = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &previous,
        &p,
        at(701),
    );
    let c = condition(&late, PROGRESSING).unwrap();
    assert_eq!(c.status.as_deref(), Some("False"));
    assert_eq!(c.reason.as_deref(), Some(TIMED_OUT));
    assert_eq!(
        c.message.as_deref(),
        Some(r#"ReplicaSet "web-new" has timed out progressing."#)
    );
    assert_eq!(deadline_recheck(&p, Some(1), &late, at(701)), None);
}

#[test]
fn without_a_deadline_there_is_no_progressing_condition() {
    let mut d = deployment("web", 3, "v1");
    d.spec.progress_deadline_seconds = Some(i32::MAX);
    let p = Params::of(&d).unwrap();
    let new = rs("web-new", 3, "v1", 1, 0);
    let mut previous = counts(3, 3, 3, 3);
    previous.conditions = Some(vec![progressing(REPLICA_SET_UPDATED, "True", 0)]);
    let status = rollout_status(&[&new], Some(&new), "web", Some(1), &previous, &p, at(10));
    assert!(condition(&status, PROGRESSING).is_none());
    assert_eq!(deadline_recheck(&p, Some(1), &previous, at(10)), None);
}

#[test]
fn replica_failures_of_the_new_replica_set_come_first() {
    let p = params(3);
    let failure = |message: &str| ReplicaSetCondition {
        type_: Some(REPLICA_FAILURE.into()),
        status: Some("True".into()),
        reason: Some("FailedCreate".into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(at(3))),
    };
    let mut old = rs("web-old", 2, "v1", 1, 0);
    old.status.get_or_insert_default().conditions = Some(vec![failure("old quota")]);
    let mut new = rs("web-new", 1, "v2", 2, 10);
    let status = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &counts(3, 1, 3, 3),
        &p,
        at(10),
    );
    let c = condition(&status, REPLICA_FAILURE).unwrap();
    assert_eq!(c.message.as_deref(), Some("old quota"));
    // An existing failure with the same reason is kept as it is, as upstream
    // keeps it; from scratch the new ReplicaSet's failure wins.
    new.status.get_or_insert_default().conditions = Some(vec![failure("new quota")]);
    let kept = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &status,
        &p,
        at(10),
    );
    assert_eq!(
        condition(&kept, REPLICA_FAILURE)
            .unwrap()
            .message
            .as_deref(),
        Some("old quota")
    );
    let status = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &counts(3, 1, 3, 3),
        &p,
        at(10),
    );
    assert_eq!(
        condition(&status, REPLICA_FAILURE)
            .unwrap()
            .message
            .as_deref(),
        Some("new quota")
    );
    old.status.get_or_insert_default().conditions = None;
    new.status.get_or_insert_default().conditions = None;
    let status = rollout_status(
        &[&old, &new],
        Some(&new),
        "web",
        Some(1),
        &status,
        &p,
        at(10),
    );
    assert!(condition(&status, REPLICA_FAILURE).is_none());
}

#[test]
fn pausing_and_resuming_mark_progress_unknown() {
    let mut d = deployment("web", 3, "v1");
    d.spec.paused = Some(true);
    let paused = Params::of(&d).unwrap();
    let mut status = DeploymentStatus {
        conditions: Some(vec![progressing(REPLICA_SET_UPDATED, "True", 0)]),
        ..DeploymentStatus::default()
    };
    check_paused(&mut status, &paused, at(5));
    let c = condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.status.as_deref(), Some("Unknown"));
    assert_eq!(c.reason.as_deref(), Some(PAUSED));
    assert_eq!(c.message.as_deref(), Some("Deployment is paused"));
    assert_eq!(deadline_recheck(&paused, Some(1), &status, at(5)), None);

    check_paused(&mut status, &params(3), at(9));
    let c = condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(RESUMED));
    assert_eq!(c.message.as_deref(), Some("Deployment is resumed"));
    assert_eq!(c.last_update_time, Some(Time(at(9))));

    let mut timed_out = DeploymentStatus {
        conditions: Some(vec![progressing(TIMED_OUT, "False", 0)]),
        ..DeploymentStatus::default()
    };
    check_paused(&mut timed_out, &paused, at(5));
    assert_eq!(reason(&timed_out, PROGRESSING).as_deref(), Some(TIMED_OUT));
}

#[test]
fn a_failed_create_is_reported_on_progressing() {
    let mut status = DeploymentStatus::default();
    create_failed(&mut status, &params(3), "web-abc", "quota exceeded", at(1));
    let c = condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.status.as_deref(), Some("False"));
    assert_eq!(c.reason.as_deref(), Some(FAILED_RS_CREATE));
    assert_eq!(
        c.message.as_deref(),
        Some(r#"Failed to create new replica set "web-abc": quota exceeded"#)
    );
}

#[test]
fn zero_counts_equal_absent_ones() {
    let written = DeploymentStatus {
        replicas: Some(0),
        updated_replicas: Some(0),
        conditions: Some(vec![]),
        ..DeploymentStatus::default()
    };
    assert!(same_status(None, &written));
    assert!(same_status(Some(&DeploymentStatus::default()), &written));
    let more = DeploymentStatus {
        replicas: Some(1),
        ..written.clone()
    };
    assert!(!same_status(Some(&written), &more));
}
