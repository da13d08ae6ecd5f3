//! Is the node's kubelet still alive? Upstream's `tryUpdateNodeHealth`.
//!
//! A node proves it is alive two ways: by renewing its Lease in
//! `kube-node-lease` (every 10 s) and by posting its status (the Ready
//! condition's `lastHeartbeatTime`). The controller never compares those
//! times with its own clock, because the node's clock may be off; it
//! remembers when *it* last saw either of them change (the probe time) and
//! declares the node's status Unknown once `node_monitor_grace_period` has
//! passed since. A node that has never posted a status gets
//! `node_startup_grace_period`, counted from its creation.
//!
//! Worked example (grace 40 s): the Lease renews at 10:00:00 and the
//! controller sees it at 10:00:00.2, so the probe time is 10:00:00.2 and the
//! deadline 10:00:40.2. Renewals at :10, :20, :30 push the deadline on. If
//! they stop after :30, at 10:01:10.2 Ready, MemoryPressure, DiskPressure and
//! PIDPressure become `Unknown` (reason `NodeStatusUnknown`). A restarted
//! controller starts every node's probe time at its own start, so a restart
//! never declares a node dead on old evidence.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::taints::conditions;

/// The conditions the controller turns Unknown when the kubelet is silent.
/// NetworkUnavailable is left alone: the network plugin owns it.
pub const SILENCED_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Reason of a condition the controller turned Unknown.
pub const REASON_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// Message of a condition the controller turned Unknown.
pub const MESSAGE_STATUS_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// Reason of a condition the kubelet never posted.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
/// Message of a condition the kubelet never posted.
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// What the controller last saw of a node's heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRecord {
    /// When, by the controller's clock, a heartbeat last changed.
    pub probe: Timestamp,
    /// The Ready condition's `lastHeartbeatTime` when last seen; `None` if
    /// the node had no Ready condition.
    ready_heartbeat: Option<Option<Timestamp>>,
    /// The Lease's `renewTime` when last seen.
    lease_renewed: Option<Timestamp>,
}

impl HealthRecord {
    /// Remembers a Ready condition the controller wrote itself, so that
    /// seeing it later is not taken for a heartbeat.
    pub fn wrote_ready(&mut self, conditions: &[NodeCondition]) {
        if let Some(ready) = conditions.iter().find(|c| c.type_ == "Ready") {
            self.ready_heartbeat = Some(ready.last_heartbeat_time.as_ref().map(|t| t.0));
        }
    }

    /// Starts the grace period again from `now` (after a full disruption).
    pub fn reset(&mut self, now: Timestamp) {
        self.probe = now;
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    conditions(node).iter().find(|c| c.type_ == "Ready")
}

fn creation(node: &Node, now: Timestamp) -> Timestamp {
    node.metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0)
}

/// Folds what the API shows now into the record of a node: the probe time
/// moves to `now` when the Ready heartbeat or the Lease's renewal changed.
pub fn observe(
    saved: Option<&HealthRecord>,
    node: &Node,
    lease: Option<&Lease>,
    now: Timestamp,
) -> HealthRecord {
    let heartbeat = ready_condition(node).map(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let mut record = match saved {
        None => HealthRecord {
            // Never posted: the startup grace counts from creation.
            probe: if heartbeat.is_some() {
                now
            } else {
                creation(node, now)
            },
            ready_heartbeat: heartbeat,
            lease_renewed: None,
        },
        Some(saved) => {
            let mut record = saved.clone();
            if saved.ready_heartbeat != heartbeat {
                record.probe = now;
                record.ready_heartbeat = heartbeat;
            }
            record
        }
    };
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    if let Some(renewed) = renewed
        && record.lease_renewed.is_none_or(|seen| seen < renewed)
    {
        record.lease_renewed = Some(renewed);
        record.probe = now;
    }
    record
}

/// What the record says about the node at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The conditions the controller must write (only the changed ones).
    pub write: Vec<NodeCondition>,
    /// The node's conditions once `write` is applied.
    pub conditions: Vec<NodeCondition>,
    /// When the node goes silent if nothing is heard from it before.
    pub deadline: Option<Timestamp>,
}

/// Declares the node's status Unknown if nothing was heard within its grace
/// period: `startup_grace` before its first Ready condition, `monitor_grace`
/// after.
pub fn assess(
    node: &Node,
    record: &HealthRecord,
    now: Timestamp,
    monitor_grace: Duration,
    startup_grace: Duration,
) -> Assessment {
    let mut current = conditions(node).to_vec();
    let grace = if ready_condition(node).is_some() {
        monitor_grace
    } else {
        startup_grace
    };
    let deadline = record
        .probe
        .saturating_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    if now < deadline {
        return Assessment {
            write: Vec::new(),
            conditions: current,
            deadline: Some(deadline),
        };
    }
    let mut write = Vec::new();
    for type_ in SILENCED_CONDITIONS {
        match current.iter_mut().find(|c| c.type_ == type_) {
            Some(condition) if condition.status == "Unknown" => {}
            Some(condition) => {
                condition.status = "Unknown".into();
                condition.reason = Some(REASON_STATUS_UNKNOWN.into());
                condition.message = Some(MESSAGE_STATUS_UNKNOWN.into());
                condition.last_transition_time = Some(Time(now));
                write.push(condition.clone());
            }
            None => {
                let condition = NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: Some(Time(creation(node, now))),
                    last_transition_time: Some(Time(now)),
                };
                current.push(condition.clone());
                write.push(condition);
            }
        }
    }
    Assessment {
        write,
        conditions: current,
        deadline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    const GRACE: Duration = Duration::from_secs(40);
    const STARTUP: Duration = Duration::from_secs(60);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn node(ready: Option<(&str, i64)>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(Time(at(100))),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                conditions: ready.map(|(status, heartbeat)| {
                    vec![
                        NodeCondition {
                            type_: "Ready".into(),
                            status: status.into(),
                            reason: Some("KubeletReady".into()),
                            last_heartbeat_time: Some(Time(at(heartbeat))),
                            last_transition_time: Some(Time(at(0))),
                            ..NodeCondition::default()
                        },
                        NodeCondition {
                            type_: "MemoryPressure".into(),
                            status: "False".into(),
                            last_heartbeat_time: Some(Time(at(heartbeat))),
                            ..NodeCondition::default()
                        },
                    ]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn lease(renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(at(renewed))),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_first_sighting_starts_the_grace_period_at_the_controllers_now() {
        // The heartbeat is old by the node's clock, but that is not evidence.
        let record = observe(None, &node(Some(("True", 5))), None, at(1_000));
        assert_eq!(record.probe, at(1_000));
        let assessment = assess(&node(Some(("True", 5))), &record, at(1_039), GRACE, STARTUP);
        assert!(assessment.write.is_empty());
        assert_eq!(assessment.deadline, Some(at(1_040)));
    }

    #[test]
    fn lease_renewals_and_new_heartbeats_move_the_probe_time_and_repeats_do_not() {
        let n = node(Some(("True", 5)));
        let first = observe(None, &n, Some(&lease(990)), at(1_000));
        let same = observe(Some(&first), &n, Some(&lease(990)), at(1_020));
        assert_eq!(same.probe, at(1_000));
        let renewed = observe(Some(&same), &n, Some(&lease(1_010)), at(1_021));
        assert_eq!(renewed.probe, at(1_021));
        let heartbeat = observe(
            Some(&renewed),
            &node(Some(("True", 1_030))),
            Some(&lease(1_010)),
            at(1_031),
        );
        assert_eq!(heartbeat.probe, at(1_031));
        // A lease going back in time is not a renewal.
        let older = observe(
            Some(&heartbeat),
            &node(Some(("True", 1_030))),
            Some(&lease(900)),
            at(1_050),
        );
        assert_eq!(older.probe, at(1_031));
    }

    #[test]
    fn silence_past_the_grace_period_turns_the_conditions_unknown() {
        let n = node(Some(("True", 5)));
        let record = observe(None, &n, Some(&lease(990)), at(1_000));
        let assessment = assess(&n, &record, at(1_040), GRACE, STARTUP);
        assert_eq!(assessment.deadline, None);
        let written: Vec<(&str, &str, Option<&str>)> = assessment
            .write
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()))
            .collect();
        assert_eq!(
            written,
            [
                ("Ready", "Unknown", Some(REASON_STATUS_UNKNOWN)),
                ("MemoryPressure", "Unknown", Some(REASON_STATUS_UNKNOWN)),
                ("DiskPressure", "Unknown", Some(REASON_NEVER_UPDATED)),
                ("PIDPressure", "Unknown", Some(REASON_NEVER_UPDATED)),
            ]
        );
        let ready = &assessment.write[0];
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_STATUS_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(Time(at(1_040))));
        // The heartbeat stays the kubelet's.
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(5))));
        assert_eq!(assessment.write[2].last_heartbeat_time, Some(Time(at(100))));
        assert_eq!(assessment.conditions.len(), 4);
    }

    #[test]
    fn conditions_already_unknown_are_not_written_again() {
        let mut n = node(Some(("Unknown", 5)));
        let mut record = observe(None, &n, None, at(1_000));
        let first = assess(&n, &record, at(1_100), GRACE, STARTUP);
        n.status.as_mut().unwrap().conditions = Some(first.conditions.clone());
        record.wrote_ready(&first.write);
        let record = observe(Some(&record), &n, None, at(1_101));
        assert_eq!(record.probe, at(1_000), "our own write is no heartbeat");
        let again = assess(&n, &record, at(1_101), GRACE, STARTUP);
        assert!(again.write.is_empty());
    }

    #[test]
    fn a_node_that_never_posted_gets_the_startup_grace_from_its_creation() {
        let n = node(None);
        let record = observe(None, &n, None, at(120));
        assert_eq!(record.probe, at(100));
        let early = assess(&n, &record, at(159), GRACE, STARTUP);
        assert_eq!(early.deadline, Some(at(160)));
        let late = assess(&n, &record, at(160), GRACE, STARTUP);
        assert_eq!(late.write.len(), 4);
        assert!(
            late.write
                .iter()
                .all(|c| c.reason.as_deref() == Some(REASON_NEVER_UPDATED))
        );
    }
}
