//! Replica arithmetic: the deployment's parameters with upstream's defaults,
//! surge and unavailability budgets, counts over ReplicaSets, and the orders
//! in which ReplicaSets are scaled.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION};
use crate::deployment::revision::revision;

/// Upstream's default `maxSurge` and `maxUnavailable`.
const DEFAULT_BUDGET: &str = "25%";
/// `progressDeadlineSeconds` when unset (the API server defaults it).
const DEFAULT_PROGRESS_DEADLINE: i32 = 600;
/// `revisionHistoryLimit` when unset (the API server defaults it).
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// A deployment spec the controller cannot act on. Validation rejects these
/// at admission, so one only appears if validation was bypassed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// `maxSurge` or `maxUnavailable` is neither an integer nor a percentage.
    #[error("invalid value {value:?} for {field}: must be an integer or a percentage")]
    InvalidBudget {
        /// `maxSurge` or `maxUnavailable`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// `strategy.type` is neither `RollingUpdate` nor `Recreate`.
    #[error("unexpected deployment strategy type: {0}")]
    UnknownStrategy(String),
}

/// How old pods are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Replace pods gradually within the surge and unavailability budgets.
    RollingUpdate,
    /// Remove every old pod before creating new ones.
    Recreate,
}

/// The numbers a deployment's spec sets, with defaults applied and the
/// budgets resolved against `replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `spec.replicas`.
    pub replicas: i32,
    /// The replacement strategy.
    pub strategy: Strategy,
    /// Pods allowed above `replicas` (0 for Recreate).
    pub max_surge: i32,
    /// Pods allowed to be unavailable (0 for Recreate or no replicas).
    pub max_unavailable: i32,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// `spec.progressDeadlineSeconds`; `None` when disabled (`MaxInt32`).
    pub progress_deadline: Option<i32>,
    /// `spec.revisionHistoryLimit`.
    pub revision_history_limit: i32,
    /// `spec.paused`.
    pub paused: bool,
}

impl Params {
    /// Reads `d`'s spec.
    pub fn of(d: &Deployment) -> Result<Self, SpecError> {
        let spec = &d.spec;
        let replicas = spec.replicas.unwrap_or(1);
        let strategy = match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
            None | Some("RollingUpdate") => Strategy::RollingUpdate,
            Some("Recreate") => Strategy::Recreate,
            Some(other) => return Err(SpecError::UnknownStrategy(other.to_string())),
        };
        let (max_surge, max_unavailable) = match strategy {
            Strategy::Recreate => (0, 0),
            Strategy::RollingUpdate => {
                let rolling = spec
                    .strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref());
                let (surge, unavailable) = resolve_fenceposts(
                    rolling.and_then(|r| r.max_surge.as_ref()),
                    rolling.and_then(|r| r.max_unavailable.as_ref()),
                    replicas,
                )?;
                (
                    surge,
                    if replicas == 0 {
                        0
                    } else {
                        unavailable.min(replicas)
                    },
                )
            }
        };
        let progress_deadline = match spec.progress_deadline_seconds {
            Some(i32::MAX) => None,
            Some(seconds) => Some(seconds),
            None => Some(DEFAULT_PROGRESS_DEADLINE),
        };
        Ok(Self {
            replicas,
            strategy,
            max_surge,
            max_unavailable,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            progress_deadline,
            revision_history_limit: spec
                .revision_history_limit
                .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT),
            paused: spec.paused.unwrap_or(false),
        })
    }

    /// The most pods the deployment may have during a rollout.
    pub fn max_replicas(&self) -> i32 {
        self.replicas + self.max_surge
    }
}

/// `value` (an integer, or a percentage of `total`) as a count; percentages
/// round up for surge and down for unavailability.
pub fn scaled_value(
    field: &'static str,
    value: &IntOrString,
    total: i32,
    round_up: bool,
) -> Result<i32, SpecError> {
    let invalid = || SpecError::InvalidBudget {
        field,
        value: match value {
            IntOrString::Int(i) => i.to_string(),
            IntOrString::String(s) => s.clone(),
        },
    };
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(invalid)?;
            let scaled = percent * i64::from(total);
            let rounded = if round_up {
                -(-scaled).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(rounded).map_err(|_| invalid())
        }
    }
}

/// The surge and unavailability budgets for `desired` replicas. Both zero
/// would deadlock a rollout, so unavailability then becomes 1.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), SpecError> {
    let default = IntOrString::String(DEFAULT_BUDGET.into());
    let surge = scaled_value("maxSurge", max_surge.unwrap_or(&default), desired, true)?;
    let unavailable = scaled_value(
        "maxUnavailable",
        max_unavailable.unwrap_or(&default),
        desired,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// `spec.replicas` of a ReplicaSet.
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

/// Pods the ReplicaSet's status counts (non-terminating).
pub fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// Ready pods of the ReplicaSet.
pub fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Available pods of the ReplicaSet.
pub fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Terminating pods of the ReplicaSet.
pub fn terminating_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.terminating_replicas)
        .unwrap_or(0)
}

fn annotation_int(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The deployment size recorded on the ReplicaSet at its last scaling.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_int(rs, DESIRED_REPLICAS_ANNOTATION)
}

/// The deployment's maximum size recorded on the ReplicaSet.
pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_int(rs, MAX_REPLICAS_ANNOTATION)
}

/// Oldest first; equal times by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Largest first; equal sizes newest first (where scale-ups go first).
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Largest first; equal sizes oldest first (where scale-downs go first).
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Lowest revision first; equal revisions oldest first.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let rev = |rs: &ReplicaSet| revision(rs).unwrap_or(0);
    rev(a).cmp(&rev(b)).then_with(|| by_creation(a, b))
}

/// The size a new ReplicaSet may grow to now: for a rolling update, as far
/// as the surge budget and the deployment's size allow; for Recreate, the
/// full size (old pods are gone by then).
pub fn new_rs_new_replicas(params: &Params, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let current = spec_replicas(new);
    match params.strategy {
        Strategy::Recreate => params.replicas,
        Strategy::RollingUpdate => {
            let total: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
            if total >= params.max_replicas() {
                return current;
            }
            let up = (params.max_replicas() - total).min(params.replicas - current);
            current + up
        }
    }
}

/// The new ReplicaSet runs the deployment's full size, all available, and
/// was last scaled for this size: old ReplicaSets may go to zero.
pub fn is_saturated(params: &Params, rs: &ReplicaSet) -> bool {
    spec_replicas(rs) == params.replicas
        && desired_replicas_annotation(rs) == Some(params.replicas)
        && available_replicas(rs) == params.replicas
}

/// How many replicas `rs` gains (or loses, if negative) when the deployment
/// resizes: its share of the new maximum, by the maximum it was sized for.
fn replica_set_fraction(params: &Params, rs: &ReplicaSet, status_replicas: i32) -> i32 {
    if params.replicas == 0 {
        return -spec_replicas(rs);
    }
    let annotated = max_replicas_annotation(rs).unwrap_or(status_replicas);
    if annotated == 0 {
        return 0;
    }
    let size =
        f64::from(spec_replicas(rs)) * f64::from(params.max_replicas()) / f64::from(annotated);
    size.round() as i32 - spec_replicas(rs)
}

/// The change proportional scaling gives `rs`, bounded by what is left of
/// `to_add` after `added` was handed out.
pub fn proportion(
    params: &Params,
    rs: &ReplicaSet,
    status_replicas: i32,
    to_add: i32,
    added: i32,
) -> i32 {
    if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(params, rs, status_replicas);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentStrategy, RollingUpdateDeployment};

    use super::*;
    use crate::deployment::fixtures::{deployment, rs};

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn rolling(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Params {
        let mut d = deployment("web", replicas, "v1");
        d.spec.strategy = Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(surge),
                max_unavailable: Some(unavailable),
            }),
        });
        Params::of(&d).unwrap()
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        assert_eq!(scaled_value("maxSurge", &pct("25%"), 10, true), Ok(3));
        assert_eq!(
            scaled_value("maxUnavailable", &pct("25%"), 10, false),
            Ok(2)
        );
        assert_eq!(scaled_value("maxSurge", &pct("25%"), 1, true), Ok(1));
        assert_eq!(scaled_value("maxUnavailable", &pct("25%"), 1, false), Ok(0));
        assert_eq!(
            scaled_value("maxSurge", &IntOrString::Int(4), 10, true),
            Ok(4)
        );
        assert!(scaled_value("maxSurge", &pct("lots"), 10, true).is_err());
        assert!(scaled_value("maxSurge", &pct("25"), 10, true).is_err());
    }

    #[test]
    fn zero_budgets_leave_one_unavailable() {
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("0%")), 10),
            Ok((0, 1))
        );
        assert_eq!(resolve_fenceposts(None, None, 1), Ok((1, 0)));
        assert_eq!(resolve_fenceposts(None, None, 10), Ok((3, 2)));
    }

    #[test]
    fn params_apply_upstream_defaults() {
        let d = deployment("web", 10, "v1");
        let p = Params::of(&d).unwrap();
        assert_eq!(p.strategy, Strategy::RollingUpdate);
        assert_eq!((p.max_surge, p.max_unavailable), (3, 2));
        assert_eq!(p.progress_deadline, Some(600));
        assert_eq!(p.revision_history_limit, 10);
        let mut forever = d.clone();
        forever.spec.progress_deadline_seconds = Some(i32::MAX);
        assert_eq!(Params::of(&forever).unwrap().progress_deadline, None);
        let mut recreate = d.clone();
        recreate.spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let p = Params::of(&recreate).unwrap();
        assert_eq!((p.max_surge, p.max_unavailable), (0, 0));
        let mut odd = d;
        odd.spec.strategy = Some(DeploymentStrategy {
            type_: Some("BlueGreen".into()),
            rolling_update: None,
        });
        assert_eq!(
            Params::of(&odd),
            Err(SpecError::UnknownStrategy("BlueGreen".into()))
        );
    }

    #[test]
    fn unavailability_never_exceeds_the_size() {
        let p = rolling(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(p.max_unavailable, 2);
        let p = rolling(0, IntOrString::Int(1), IntOrString::Int(1));
        assert_eq!(p.max_unavailable, 0);
    }

    #[test]
    fn a_new_replica_set_grows_within_the_surge() {
        let p = rolling(10, pct("25%"), pct("25%"));
        let old = rs("web-old", 10, "v1", 1, 0);
        let new = rs("web-new", 0, "v2", 2, 10);
        assert_eq!(new_rs_new_replicas(&p, &[&old, &new], &new), 3);
        let old = rs("web-old", 8, "v1", 1, 0);
        let new = rs("web-new", 5, "v2", 2, 10);
        // 13 of 13 allowed: no room.
        assert_eq!(new_rs_new_replicas(&p, &[&old, &new], &new), 5);
        // Never beyond the deployment's size.
        let old = rs("web-old", 0, "v1", 1, 0);
        let new = rs("web-new", 9, "v2", 2, 10);
        assert_eq!(new_rs_new_replicas(&p, &[&old, &new], &new), 10);
    }

    #[test]
    fn saturation_needs_size_annotation_and_availability() {
        let p = rolling(3, pct("25%"), pct("25%"));
        let mut new = rs("web-new", 3, "v2", 2, 10);
        new.status.get_or_insert_default().available_replicas = Some(2);
        assert!(!is_saturated(&p, &new));
        new.metadata
            .annotations
            .get_or_insert_default()
            .insert(DESIRED_REPLICAS_ANNOTATION.into(), "3".into());
        assert!(!is_saturated(&p, &new));
        new.status.get_or_insert_default().available_replicas = Some(3);
        assert!(is_saturated(&p, &new));
    }

    #[test]
    fn size_orders_break_ties_by_age() {
        let a = rs("a", 3, "v1", 1, 0);
        let b = rs("b", 3, "v2", 2, 10);
        let c = rs("c", 5, "v3", 3, 20);
        let mut sets = [&a, &b, &c];
        sets.sort_by(|x, y| by_size_newer(x, y));
        assert_eq!(
            sets.map(|s| s.metadata.name.clone().unwrap()),
            ["c", "b", "a"]
        );
        sets.sort_by(|x, y| by_size_older(x, y));
        assert_eq!(
            sets.map(|s| s.metadata.name.clone().unwrap()),
            ["c", "a", "b"]
        );
    }

    #[test]
    fn proportions_follow_the_recorded_maximum() {
        // Scaling 10 (max 13) to 20 (max 25): a ReplicaSet holding 8 of 13
        // gets round(8 * 25 / 13) - 8 = 7 more.
        let p = rolling(20, pct("25%"), pct("25%"));
        let mut old = rs("web-old", 8, "v1", 1, 0);
        old.metadata
            .annotations
            .get_or_insert_default()
            .insert(MAX_REPLICAS_ANNOTATION.into(), "13".into());
        assert_eq!(proportion(&p, &old, 13, 12, 0), 7);
        // Capped by what is left to hand out.
        assert_eq!(proportion(&p, &old, 13, 12, 10), 2);
        // Empty ReplicaSets never grow proportionally.
        let empty = rs("web-empty", 0, "v0", 0, 0);
        assert_eq!(proportion(&p, &empty, 13, 12, 0), 0);
        // Scaling to zero takes everything.
        let zero = rolling(0, pct("25%"), pct("25%"));
        assert_eq!(proportion(&zero, &old, 13, -8, 0), -8);
    }
}
