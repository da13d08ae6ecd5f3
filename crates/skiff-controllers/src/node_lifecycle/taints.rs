//! The taints the controller keeps in step with a Node's conditions, and
//! which tolerations tolerate which taints.
//!
//! Two kinds, as upstream:
//!
//! - `NoSchedule` taints mirror the conditions at once (Ready `False` →
//!   `not-ready`, Ready `Unknown` → `unreachable`, MemoryPressure,
//!   DiskPressure, PIDPressure and NetworkUnavailable `True` → their taints,
//!   `spec.unschedulable` → `unschedulable`), so the scheduler stops placing
//!   pods there;
//! - the `NoExecute` `not-ready` / `unreachable` taints, which make the
//!   taint-eviction part delete pods, are added under a rate limit (see
//!   [`super::zones`]) and are mutually exclusive: a node that goes from
//!   `False` to `Unknown` swaps one for the other at once.
//!
//! Taints are compared by key and effect, as upstream's `MatchTaint`.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The taint of a node whose Ready condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node (`spec.unschedulable`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The taint of a node under disk pressure.
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// The taint of a node running out of process IDs.
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// The taint of a node whose network is not configured.
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The effect that only keeps new pods away.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// The effect that also evicts running pods.
pub const NO_EXECUTE: &str = "NoExecute";

/// Which condition status brings which taint (upstream's
/// `nodeConditionToTaintKeyStatusMap`).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    ("MemoryPressure", "True", TAINT_MEMORY_PRESSURE),
    ("DiskPressure", "True", TAINT_DISK_PRESSURE),
    ("NetworkUnavailable", "True", TAINT_NETWORK_UNAVAILABLE),
    ("PIDPressure", "True", TAINT_PID_PRESSURE),
];

/// The status of condition `type_` among `conditions`.
pub fn condition_status<'a>(conditions: &'a [NodeCondition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// The node's conditions (empty before its first status report).
pub fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// The node's taints.
pub fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// True if `taints` holds one with this key and effect.
pub fn has_taint(taints: &[Taint], key: &str, effect: &str) -> bool {
    taints.iter().any(|t| t.key == key && t.effect == effect)
}

/// A taint with this key and effect, added at `now`.
pub fn taint(key: &str, effect: &str, now: Timestamp) -> Taint {
    Taint {
        key: key.to_string(),
        effect: effect.to_string(),
        value: None,
        time_added: Some(Time(now)),
    }
}

/// Taints to add and to remove, matched by key and effect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaintChange {
    /// Taints to add (replacing any with the same key and effect).
    pub add: Vec<Taint>,
    /// Taints to remove, by key and effect.
    pub remove: Vec<Taint>,
}

impl TaintChange {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Adds the changes of `other`.
    pub fn extend(&mut self, other: TaintChange) {
        self.add.extend(other.add);
        self.remove.extend(other.remove);
    }

    /// `taints` with this change applied; the order of kept taints is kept.
    pub fn apply(&self, taints: &[Taint]) -> Vec<Taint> {
        let matches =
            |list: &[Taint], t: &Taint| list.iter().any(|o| o.key == t.key && o.effect == t.effect);
        let mut result: Vec<Taint> = taints
            .iter()
            .filter(|t| !matches(&self.remove, t) && !matches(&self.add, t))
            .cloned()
            .collect();
        // A taint already present keeps its timeAdded.
        for added in &self.add {
            match taints
                .iter()
                .find(|t| t.key == added.key && t.effect == added.effect)
            {
                Some(existing) => result.push(existing.clone()),
                None => result.push(added.clone()),
            }
        }
        result
    }
}

/// The `NoSchedule` taints the conditions and `spec.unschedulable` call for,
/// against those the node carries: upstream's `doNoScheduleTaintingPass`.
pub fn no_schedule_change(
    node: &Node,
    conditions: &[NodeCondition],
    now: Timestamp,
) -> TaintChange {
    let mut wanted: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| condition_status(conditions, type_) == Some(*status))
        .map(|(_, _, key)| *key)
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push(TAINT_UNSCHEDULABLE);
    }
    let current = taints(node);
    let managed = |key: &str| {
        key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == key)
    };
    TaintChange {
        add: wanted
            .iter()
            .filter(|key| !has_taint(current, key, NO_SCHEDULE))
            .map(|key| taint(key, NO_SCHEDULE, now))
            .collect(),
        remove: current
            .iter()
            .filter(|t| t.effect == NO_SCHEDULE && managed(&t.key))
            .filter(|t| !wanted.contains(&t.key.as_str()))
            .cloned()
            .collect(),
    }
}

/// The `NoExecute` taint a Ready status calls for: `not-ready` for `False`,
/// `unreachable` for `Unknown`, none for `True`; and its opposite.
pub fn no_execute_for(ready: &str) -> Option<(&'static str, &'static str)> {
    match ready {
        "False" => Some((TAINT_NOT_READY, TAINT_UNREACHABLE)),
        "Unknown" => Some((TAINT_UNREACHABLE, TAINT_NOT_READY)),
        _ => None,
    }
}

/// Removes both controller `NoExecute` taints, if present.
pub fn remove_no_execute(taints: &[Taint]) -> TaintChange {
    TaintChange {
        add: Vec::new(),
        remove: taints
            .iter()
            .filter(|t| t.effect == NO_EXECUTE)
            .filter(|t| t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn condition(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            ..NodeCondition::default()
        }
    }

    fn node(taints: Vec<Taint>, unschedulable: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(taints),
                unschedulable: Some(unschedulable),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus::default()),
            ..Node::default()
        }
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn no_schedule_taints_follow_the_conditions_and_cordoning() {
        let conditions = [
            condition("Ready", "Unknown"),
            condition("MemoryPressure", "True"),
            condition("DiskPressure", "False"),
        ];
        let stale = taint(TAINT_NOT_READY, NO_SCHEDULE, at(1));
        let foreign = taint("example.com/gpu", NO_SCHEDULE, at(1));
        let change = no_schedule_change(&node(vec![stale, foreign], true), &conditions, at(50));
        assert_eq!(
            keys(&change.add),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
            ]
        );
        assert!(
            change
                .add
                .iter()
                .all(|t| t.time_added == Some(Time(at(50))))
        );
        assert_eq!(
            keys(&change.remove),
            ["node.kubernetes.io/not-ready:NoSchedule"]
        );
    }

    #[test]
    fn a_ready_node_with_its_taints_in_place_needs_no_change() {
        let conditions = [condition("Ready", "True")];
        assert!(no_schedule_change(&node(vec![], false), &conditions, at(0)).is_empty());
        let cordoned = node(vec![taint(TAINT_UNSCHEDULABLE, NO_SCHEDULE, at(0))], true);
        assert!(no_schedule_change(&cordoned, &conditions, at(9)).is_empty());
    }

    #[test]
    fn applying_a_change_keeps_other_taints_and_existing_time_added() {
        let existing = vec![
            taint("a", NO_EXECUTE, at(1)),
            taint(TAINT_NOT_READY, NO_EXECUTE, at(2)),
            taint(TAINT_UNREACHABLE, NO_SCHEDULE, at(3)),
        ];
        let change = TaintChange {
            add: vec![
                taint(TAINT_UNREACHABLE, NO_EXECUTE, at(10)),
                taint(TAINT_UNREACHABLE, NO_SCHEDULE, at(10)),
            ],
            remove: vec![taint(TAINT_NOT_READY, NO_EXECUTE, at(0))],
        };
        let result = change.apply(&existing);
        assert_eq!(
            keys(&result),
            [
                "a:NoExecute",
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
            ]
        );
        assert_eq!(result[1].time_added, Some(Time(at(10))));
        assert_eq!(result[2].time_added, Some(Time(at(3))));
    }

    #[test]
    fn no_execute_taints_are_opposites() {
        assert_eq!(
            no_execute_for("False"),
            Some((TAINT_NOT_READY, TAINT_UNREACHABLE))
        );
        assert_eq!(
            no_execute_for("Unknown"),
            Some((TAINT_UNREACHABLE, TAINT_NOT_READY))
        );
        assert_eq!(no_execute_for("True"), None);
        let taints = [
            taint(TAINT_UNREACHABLE, NO_EXECUTE, at(0)),
            taint(TAINT_UNREACHABLE, NO_SCHEDULE, at(0)),
            taint("other", NO_EXECUTE, at(0)),
        ];
        assert_eq!(
            keys(&remove_no_execute(&taints).remove),
            ["node.kubernetes.io/unreachable:NoExecute"]
        );
    }
}
