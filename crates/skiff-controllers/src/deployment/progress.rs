//! The deployment's status: counts summed over its ReplicaSets, and the
//! `Available` and `Progressing` conditions that `kubectl rollout status`
//! waits on, with upstream's reasons and messages.
//!
//! `Progressing` moves through `NewReplicaSetCreated` or
//! `FoundNewReplicaSet` (a rollout started), `ReplicaSetUpdated` (each time
//! pods move forward, refreshing `lastUpdateTime`), and finally
//! `NewReplicaSetAvailable`; if `progressDeadlineSeconds` pass after the last
//! update without progress it turns False with `ProgressDeadlineExceeded`.
//! Pausing and resuming set it Unknown so the pause never counts against
//! the deadline.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::replicas::{
    Params, available_replicas, ready_replicas, spec_replicas, status_replicas,
    terminating_replicas,
};

/// Condition types.
pub const AVAILABLE: &str = "Available";
/// The rollout's progress.
pub const PROGRESSING: &str = "Progressing";
/// Pod creation failures, copied from the ReplicaSets.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// A ReplicaSet of the deployment was scaled during the rollout.
pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
/// The new ReplicaSet could not be created.
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
/// The deployment created its new ReplicaSet.
pub const NEW_REPLICA_SET: &str = "NewReplicaSetCreated";
/// The deployment found its new ReplicaSet already there.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// The new ReplicaSet is fully available: the rollout is done.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// No progress within `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// The deployment is paused.
pub const PAUSED: &str = "DeploymentPaused";
/// The deployment was resumed.
pub const RESUMED: &str = "DeploymentResumed";
/// Enough pods are available.
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
/// Too few pods are available.
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// A condition stamped `now` for both its update and its transition.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of `type_`, if present.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

fn reason_of(status: &DeploymentStatus, type_: &str) -> Option<String> {
    condition(status, type_).and_then(|c| c.reason.clone())
}

/// Sets `new`, unless a condition of its type already has its status and
/// reason. A condition whose status stays keeps its transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut new: DeploymentCondition) {
    if let Some(current) = condition(status, new.type_.as_deref().unwrap_or_default()) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, new.type_.as_deref().unwrap_or_default());
    status.conditions.get_or_insert_default().push(new);
}

/// Removes the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

/// The status the ReplicaSets show: counts summed over `all`, updated pods
/// from `new`, the `Available` condition, and everything else (other
/// conditions, the collision count) carried over from `previous`.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    generation: Option<i64>,
    previous: &DeploymentStatus,
    params: &Params,
    now: Timestamp,
) -> DeploymentStatus {
    let sum = |f: fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let available = sum(available_replicas);
    let unavailable = (sum(spec_replicas) - available).max(0);
    let mut status = DeploymentStatus {
        observed_generation: generation,
        replicas: Some(sum(status_replicas)),
        updated_replicas: Some(new.map_or(0, status_replicas)),
        ready_replicas: Some(sum(ready_replicas)),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        terminating_replicas: Some(sum(terminating_replicas)),
        collision_count: previous.collision_count,
        conditions: previous.conditions.clone(),
    };
    let availability = if available >= params.replicas - params.max_unavailable {
        new_condition(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, availability);
    status
}

/// Every pod runs the new template, all available, and the controller has
/// seen the latest spec.
pub fn deployment_complete(
    params: &Params,
    generation: Option<i64>,
    status: &DeploymentStatus,
) -> bool {
    status.updated_replicas.unwrap_or(0) == params.replicas
        && status.replicas.unwrap_or(0) == params.replicas
        && status.available_replicas.unwrap_or(0) == params.replicas
        && status.observed_generation.unwrap_or(0) >= generation.unwrap_or(0)
}

/// Pods moved forward between `old` and `new`: more updated, ready or
/// available pods, or fewer old ones.
pub fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let count = |v: Option<i32>| v.unwrap_or(0);
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// The last progress (or rollout start, or resume) is more than the
/// deadline ago. A finished rollout never times out.
pub fn deployment_timed_out(params: &Params, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = params.progress_deadline else {
        return false;
    };
    let Some(progressing) = condition(status, PROGRESSING) else {
        return false;
    };
    match progressing.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => progressing
            .last_update_time
            .as_ref()
            .is_some_and(|from| from.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// The status after a rollout step: [`calculate_status`], then the
/// `Progressing` condition advanced by what changed since `previous`, and
/// the ReplicaSets' pod creation failures. `new_name` names the new
/// ReplicaSet in messages.
pub fn rollout_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    deployment: &str,
    generation: Option<i64>,
    previous: &DeploymentStatus,
    params: &Params,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(all, new, generation, previous, params, now);
    if params.progress_deadline.is_none() {
        remove_condition(&mut status, PROGRESSING);
    }
    let current = condition(previous, PROGRESSING);
    let finished = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    let subject = match new.and_then(|rs| rs.metadata.name.as_deref()) {
        Some(name) => format!("ReplicaSet {name:?}"),
        None => format!("Deployment {deployment:?}"),
    };
    if params.progress_deadline.is_some() && !finished {
        if deployment_complete(params, generation, &status) {
            let message = format!("{subject} has successfully progressed.");
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now),
            );
        } else if deployment_progressing(previous, &status) {
            // Progress refreshes lastUpdateTime even when the reason stays.
            let message = format!("{subject} is progressing.");
            let mut progressing =
                new_condition(PROGRESSING, "True", REPLICA_SET_UPDATED, message, now);
            if let Some(current) = current
                && current.status.as_deref() == Some("True")
            {
                progressing.last_transition_time = current.last_transition_time.clone();
            }
            remove_condition(&mut status, PROGRESSING);
            set_condition(&mut status, progressing);
        } else if deployment_timed_out(params, &status, now) {
            let message = format!("{subject} has timed out progressing.");
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "False", TIMED_OUT, message, now),
            );
        }
    }
    match replica_failure(all, new) {
        Some(failure) => set_condition(&mut status, failure),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    status
}

/// The first `ReplicaFailure` condition of the new ReplicaSet, else of any.
fn replica_failure(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_.as_deref() == Some(REPLICA_FAILURE))
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new.and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// Marks a pause or a resume on the `Progressing` condition (Unknown, so the
/// time paused never counts toward the deadline). A timed-out rollout keeps
/// its condition.
pub fn check_paused(status: &mut DeploymentStatus, params: &Params, now: Timestamp) {
    if params.progress_deadline.is_none() {
        return;
    }
    let reason = reason_of(status, PROGRESSING);
    if reason.as_deref() == Some(TIMED_OUT) {
        return;
    }
    let marked = reason.as_deref() == Some(PAUSED);
    if params.paused && !marked {
        let paused = new_condition(
            PROGRESSING,
            "Unknown",
            PAUSED,
            "Deployment is paused".into(),
            now,
        );
        set_condition(status, paused);
    } else if !params.paused && marked {
        let resumed = new_condition(
            PROGRESSING,
            "Unknown",
            RESUMED,
            "Deployment is resumed".into(),
            now,
        );
        set_condition(status, resumed);
    }
}

/// The `Progressing` condition after the new ReplicaSet could not be created.
pub fn create_failed(
    status: &mut DeploymentStatus,
    params: &Params,
    rs: &str,
    error: &str,
    now: Timestamp,
) {
    if params.progress_deadline.is_some() {
        let message = format!("Failed to create new replica set {rs:?}: {error}");
        set_condition(
            status,
            new_condition(PROGRESSING, "False", FAILED_RS_CREATE, message, now),
        );
    }
}

/// When to look again for a rollout that may time out: one second past its
/// deadline, so a stuck rollout reports `ProgressDeadlineExceeded` without
/// waiting for another change.
pub fn deadline_recheck(
    params: &Params,
    generation: Option<i64>,
    status: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = params.progress_deadline?;
    let progressing = condition(status, PROGRESSING)?;
    let settled = matches!(
        progressing.reason.as_deref(),
        Some(TIMED_OUT | NEW_RS_AVAILABLE)
    );
    if params.paused || settled || deployment_complete(params, generation, status) {
        return None;
    }
    let updated = progressing.last_update_time.as_ref()?.0.as_second();
    let left = updated + i64::from(deadline) - now.as_second();
    Some(Duration::from_secs(left.max(0).unsigned_abs() + 1))
}

/// True if `a` and `b` say the same, counting absent numbers as zero and no
/// conditions as an empty list (how the API may round-trip them).
pub fn same_status(a: Option<&DeploymentStatus>, b: &DeploymentStatus) -> bool {
    fn normal(s: &DeploymentStatus) -> DeploymentStatus {
        let zero = |v: Option<i32>| v.filter(|n| *n != 0);
        DeploymentStatus {
            available_replicas: zero(s.available_replicas),
            collision_count: s.collision_count,
            conditions: s.conditions.clone().filter(|c| !c.is_empty()),
            observed_generation: s.observed_generation.filter(|g| *g != 0),
            ready_replicas: zero(s.ready_replicas),
            replicas: zero(s.replicas),
            terminating_replicas: zero(s.terminating_replicas),
            unavailable_replicas: zero(s.unavailable_replicas),
            updated_replicas: zero(s.updated_replicas),
        }
    }
    normal(&a.cloned().unwrap_or_default()) == normal(b)
}

#[cfg(test)]
mod tests;
