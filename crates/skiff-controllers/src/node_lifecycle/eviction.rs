//! Which pods a node's `NoExecute` taints evict, and when: upstream's
//! taint-eviction controller.
//!
//! For each pod on the node (not already being deleted), every `NoExecute`
//! taint must be tolerated, else the pod is deleted at once. A tolerating
//! toleration without `tolerationSeconds` tolerates forever; with it, the
//! pod may stay that many seconds after the taint appeared (its `timeAdded`,
//! or when the controller first saw it if that is earlier or missing). The
//! pod's deadline is the earliest over its taints. The API server gives
//! every pod 300 s tolerations of the `not-ready` and `unreachable` taints
//! (`DefaultTolerationSeconds`), so a dead node's pods go after five minutes.
//!
//! Upstream counts from when its timer was set rather than from `timeAdded`;
//! counting from the taint makes a restarted controller keep the original
//! deadline instead of granting the full toleration again.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use kube::ResourceExt;

use crate::pods;
use skiff_api::scheduling::tolerates;

/// A pod by namespace and name.
pub type PodKey = (String, String);

/// The namespace and name of `pod`.
pub fn pod_key(pod: &Pod) -> PodKey {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// A `NoExecute` taint and when its toleration period started.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveTaint {
    /// The taint.
    pub taint: Taint,
    /// When it was added (or first seen).
    pub since: Timestamp,
}

/// The decision for the pods of one node.
#[derive(Debug, Default)]
pub struct EvictionPlan {
    /// Pods to delete now.
    pub now: Vec<Arc<Pod>>,
    /// Pods to delete later, with their deadlines.
    pub scheduled: BTreeMap<PodKey, Timestamp>,
}

impl EvictionPlan {
    /// The earliest scheduled deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.scheduled.values().min().copied()
    }
}

/// When `pod` must go, given the node's `NoExecute` taints: `Some(now or
/// earlier)` at once, `Some(later)` then, `None` never.
pub fn deadline(pod: &Pod, taints: &[ActiveTaint]) -> Option<Timestamp> {
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut earliest: Option<Timestamp> = None;
    for active in taints {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, &active.taint)) else {
            return Some(Timestamp::MIN);
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        let until = active
            .since
            .saturating_add(SignedDuration::from_secs(seconds.max(0)))
            .unwrap_or(Timestamp::MAX);
        earliest = Some(earliest.map_or(until, |e| e.min(until)));
    }
    earliest
}

/// Decides, at `now`, which of the node's pods to delete now and which
/// later. Pods already being deleted are left alone.
pub fn plan(taints: &[ActiveTaint], node_pods: &[Arc<Pod>], now: Timestamp) -> EvictionPlan {
    let mut plan = EvictionPlan::default();
    if taints.is_empty() {
        return plan;
    }
    for pod in node_pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match deadline(pod, taints) {
            Some(at) if at <= now => plan.now.push(Arc::clone(pod)),
            Some(at) => {
                plan.scheduled.insert(pod_key(pod), at);
            }
            None => {}
        }
    }
    plan
}

/// The pods on an unreachable node whose Ready condition is still True:
/// upstream's `MarkPodsNotReady`, so Services stop sending them traffic.
pub fn to_mark_not_ready(node_pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    node_pods
        .iter()
        .filter(|p| pods::is_ready(p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_lifecycle::taints::{NO_EXECUTE, TAINT_NOT_READY, TAINT_UNREACHABLE, taint};
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: seconds,
            ..Toleration::default()
        }
    }

    fn pod(name: &str, tolerations: Vec<Toleration>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn active(key: &str, since: i64) -> ActiveTaint {
        ActiveTaint {
            taint: taint(key, NO_EXECUTE, at(since)),
            since: at(since),
        }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn intolerant_pods_go_at_once_and_tolerant_ones_after_their_seconds() {
        let pods = [
            pod("intolerant", vec![]),
            pod("default", vec![toleration(TAINT_UNREACHABLE, Some(300))]),
            pod("forever", vec![toleration(TAINT_UNREACHABLE, None)]),
            pod("zero", vec![toleration(TAINT_UNREACHABLE, Some(0))]),
        ];
        let plan = plan(&[active(TAINT_UNREACHABLE, 1_000)], &pods, at(1_010));
        assert_eq!(names(&plan.now), ["intolerant", "zero"]);
        assert_eq!(
            plan.scheduled,
            BTreeMap::from([(("default".into(), "default".into()), at(1_300))])
        );
        assert_eq!(plan.next(), Some(at(1_300)));
        let later = super::plan(&[active(TAINT_UNREACHABLE, 1_000)], &pods, at(1_300));
        assert_eq!(names(&later.now), ["intolerant", "default", "zero"]);
        assert!(later.scheduled.is_empty());
    }

    #[test]
    fn every_taint_must_be_tolerated_and_the_earliest_deadline_wins() {
        let both = pod(
            "both",
            vec![
                toleration(TAINT_UNREACHABLE, Some(300)),
                toleration(TAINT_NOT_READY, Some(60)),
            ],
        );
        let one = pod("one", vec![toleration(TAINT_UNREACHABLE, None)]);
        let taints = [
            active(TAINT_UNREACHABLE, 1_000),
            active(TAINT_NOT_READY, 1_100),
        ];
        assert_eq!(deadline(&both, &taints), Some(at(1_160)));
        assert_eq!(deadline(&one, &taints), Some(Timestamp::MIN));
        assert_eq!(deadline(&one, &taints[..1]), None);
    }

    #[test]
    fn pods_being_deleted_are_left_alone_and_no_taints_means_no_plan() {
        let mut deleting = (*pod("deleting", vec![])).clone();
        deleting.metadata.deletion_timestamp = Some(Time(at(5)));
        let pods = [Arc::new(deleting), pod("other", vec![])];
        let plan = plan(&[active(TAINT_UNREACHABLE, 0)], &pods, at(10));
        assert_eq!(names(&plan.now), ["other"]);
        assert!(super::plan(&[], &pods, at(10)).now.is_empty());
    }

    #[test]
    fn only_ready_pods_are_marked_not_ready() {
        let mut unready = (*pod("unready", vec![])).clone();
        unready.status = None;
        let pods = [pod("ready", vec![]), Arc::new(unready)];
        assert_eq!(names(&to_mark_not_ready(&pods)), ["ready"]);
    }
}
