//! The whole decision for one node, with no IO: [`Tracker::plan`] folds the
//! node, its Lease and its pods into the controller's memory and returns the
//! writes to make and when to look again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use kube::ResourceExt;

use super::NodeLifecycleConfig;
use super::eviction::{self, ActiveTaint, PodKey, pod_key};
use super::health::{self, HealthRecord};
use super::taints::{
    self, NO_EXECUTE, TaintChange, condition_status, has_taint, no_execute_for, no_schedule_change,
    remove_no_execute, taint,
};
use super::zones::{ZoneChange, Zones, excluded, zone_key};

/// What to do about one node.
#[derive(Debug, Default)]
pub struct NodePlan {
    /// First seen since the controller warmed up: a `RegisteredNode` event.
    pub registered: bool,
    /// Conditions to write to the node's status (merged by type).
    pub write_conditions: Vec<NodeCondition>,
    /// The controller is turning a Ready node Unknown: a `NodeNotReady` event.
    pub became_not_ready: bool,
    /// Taints to add and remove.
    pub taints: TaintChange,
    /// Pods whose Ready condition must become False.
    pub mark_not_ready: Vec<Arc<Pod>>,
    /// Pods to evict now.
    pub evict: Vec<Arc<Pod>>,
    /// Pods whose scheduled eviction was called off.
    pub cancelled: Vec<PodKey>,
    /// Zone states changed: every node must be looked at again.
    pub reconcile_all: bool,
    /// When to look at this node again if nothing changes before.
    pub next: Option<Timestamp>,
}

/// A `NoExecute` taint's identity: key, value and effect.
type TaintId = (String, Option<String>, String);

fn taint_id(taint: &Taint) -> TaintId {
    (taint.key.clone(), taint.value.clone(), taint.effect.clone())
}

/// What the controller remembers between reconciles. Lost on restart, and
/// rebuilt from the API (see [`super::health`] for why that is safe).
#[derive(Debug)]
pub struct Tracker {
    health: HashMap<String, HealthRecord>,
    zones: Zones,
    /// When each `NoExecute` taint of a node was first seen.
    taints_seen: HashMap<String, HashMap<TaintId, Timestamp>>,
    /// Pending evictions per node, for the cancellation events.
    scheduled: HashMap<String, BTreeMap<PodKey, Timestamp>>,
    /// UIDs of pods deleted by the controller that the cache still shows
    /// alive, per node, so a quick re-trigger does not delete them twice.
    evicting: HashMap<String, HashSet<String>>,
    /// Every node present at start has been planned once. Until then no
    /// `NoExecute` taint is added or removed, since the zone states are not
    /// known yet.
    warm: bool,
}

impl Tracker {
    /// An empty memory, for a controller that has just started.
    pub fn new(config: &NodeLifecycleConfig) -> Self {
        Self {
            health: HashMap::new(),
            zones: Zones::new(config.rates()),
            taints_seen: HashMap::new(),
            scheduled: HashMap::new(),
            evicting: HashMap::new(),
            warm: false,
        }
    }

    /// True once every node present at start has been planned.
    pub fn is_warm(&self) -> bool {
        self.warm
    }

    /// Ends the warm-up once every node in `names` (the cache's nodes) has
    /// been planned; true at that moment, when every node must be planned
    /// again with the zone states known.
    pub fn finish_warm_up<'a>(&mut self, mut names: impl Iterator<Item = &'a str>) -> bool {
        if self.warm || !names.all(|n| self.health.contains_key(n)) {
            return false;
        }
        self.warm = true;
        true
    }

    /// How many nodes have been planned (and not deleted since).
    pub fn known_nodes(&self) -> usize {
        self.health.len()
    }

    /// Decides what to do about `node` at `now`.
    pub fn plan(
        &mut self,
        node: &Node,
        lease: Option<&Lease>,
        node_pods: &[Arc<Pod>],
        now: Timestamp,
        config: &NodeLifecycleConfig,
    ) -> NodePlan {
        let name = node.name_any();
        let mut plan = NodePlan {
            registered: self.warm && !self.health.contains_key(&name),
            ..NodePlan::default()
        };

        let record = health::observe(self.health.get(&name), node, lease, now);
        let assessment = health::assess(
            node,
            &record,
            now,
            config.node_monitor_grace_period,
            config.node_startup_grace_period,
        );
        self.health.insert(name.clone(), record);
        let ready = condition_status(&assessment.conditions, "Ready").map(str::to_string);
        plan.became_not_ready = condition_status(taints::conditions(node), "Ready") == Some("True")
            && ready.as_deref() != Some("True");
        plan.write_conditions = assessment.write;
        let mut next = assessment.deadline;

        let zone = zone_key(node);
        let counted = (!excluded(node)).then_some(ready.as_deref() == Some("True"));
        let change = self.zones.set_node(&name, zone.clone(), counted);
        plan.reconcile_all = self.zones_changed(change, now);

        plan.taints = no_schedule_change(node, &assessment.conditions, now);
        let current = taints::taints(node);
        if self.warm
            && let Some(ready) = ready.as_deref()
        {
            let (change, wait) = self.no_execute_change(current, ready, &zone, now);
            plan.taints.extend(change);
            next = earliest(next, wait);
        }

        let active = self.active_taints(&name, current, now);
        let eviction_next = self.plan_pods(&name, &active, node_pods, now, &mut plan);
        if ready.as_deref() == Some("Unknown") {
            plan.mark_not_ready = eviction::to_mark_not_ready(node_pods)
                .into_iter()
                .filter(|p| !plan.evict.iter().any(|e| Arc::ptr_eq(e, p)))
                .collect();
        }
        plan.next = earliest(next, eviction_next);
        plan
    }

    /// The `NoExecute` change a Ready status calls for, and when to ask for
    /// a tainting token again if none was free.
    fn no_execute_change(
        &mut self,
        current: &[Taint],
        ready: &str,
        zone: &str,
        now: Timestamp,
    ) -> (TaintChange, Option<Timestamp>) {
        if self.zones.all_disrupted() {
            return (remove_no_execute(current), None);
        }
        let Some((wanted, opposite)) = no_execute_for(ready) else {
            return (remove_no_execute(current), None);
        };
        let remove_opposite = || -> Vec<Taint> {
            current
                .iter()
                .filter(|t| t.key == opposite && t.effect == NO_EXECUTE)
                .cloned()
                .collect()
        };
        if has_taint(current, wanted, NO_EXECUTE) {
            let change = TaintChange {
                add: Vec::new(),
                remove: remove_opposite(),
            };
            return (change, None);
        }
        // Swapping one for the other is no new eviction: no token needed.
        if has_taint(current, opposite, NO_EXECUTE) {
            let change = TaintChange {
                add: vec![taint(wanted, NO_EXECUTE, now)],
                remove: remove_opposite(),
            };
            return (change, None);
        }
        match self.zones.take_token(zone, now) {
            Ok(()) => {
                let change = TaintChange {
                    add: vec![taint(wanted, NO_EXECUTE, now)],
                    remove: Vec::new(),
                };
                (change, None)
            }
            Err(wait) => (TaintChange::default(), wait),
        }
    }

    /// The node's `NoExecute` taints with the start of their toleration
    /// periods: `timeAdded`, or first sighting if earlier or missing.
    fn active_taints(&mut self, name: &str, current: &[Taint], now: Timestamp) -> Vec<ActiveTaint> {
        let seen = self.taints_seen.entry(name.to_string()).or_default();
        let present: Vec<&Taint> = current.iter().filter(|t| t.effect == NO_EXECUTE).collect();
        seen.retain(|id, _| present.iter().any(|t| taint_id(t) == *id));
        present
            .into_iter()
            .map(|t| {
                let first = *seen.entry(taint_id(t)).or_insert(now);
                let since = t
                    .time_added
                    .as_ref()
                    .map_or(first, |added| added.0.min(first));
                ActiveTaint {
                    taint: t.clone(),
                    since,
                }
            })
            .collect()
    }

    /// Fills in the evictions and cancellations of the node's pods; returns
    /// the next eviction deadline.
    fn plan_pods(
        &mut self,
        name: &str,
        active: &[ActiveTaint],
        node_pods: &[Arc<Pod>],
        now: Timestamp,
        plan: &mut NodePlan,
    ) -> Option<Timestamp> {
        let alive: HashMap<PodKey, &Arc<Pod>> = node_pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (pod_key(p), p))
            .collect();
        let evicting = self.evicting.entry(name.to_string()).or_default();
        evicting.retain(|uid| alive.values().any(|p| p.uid().as_deref() == Some(uid)));
        let candidates: Vec<Arc<Pod>> = alive
            .values()
            .filter(|p| p.uid().is_none_or(|uid| !evicting.contains(&uid)))
            .map(|p| Arc::clone(p))
            .collect();
        let decided = eviction::plan(active, &candidates, now);
        for pod in &decided.now {
            if let Some(uid) = pod.uid() {
                evicting.insert(uid);
            }
        }
        let evicted: HashSet<PodKey> = decided.now.iter().map(|p| pod_key(p)).collect();
        let previous = self.scheduled.remove(name).unwrap_or_default();
        plan.cancelled = previous
            .into_keys()
            .filter(|key| !decided.scheduled.contains_key(key))
            .filter(|key| !evicted.contains(key))
            .filter(|key| alive.contains_key(key))
            .filter(|key| {
                // A pod the controller is already deleting was not spared.
                alive[key].uid().is_none_or(|uid| !evicting.contains(&uid))
            })
            .collect();
        let next = decided.next();
        if !decided.scheduled.is_empty() {
            self.scheduled.insert(name.to_string(), decided.scheduled);
        }
        plan.evict = decided.now;
        next
    }

    /// Applies a zone change: restarts every grace period when the cluster
    /// left full disruption, and says whether every node needs a new look.
    fn zones_changed(&mut self, change: ZoneChange, now: Timestamp) -> bool {
        if !self.warm {
            return false;
        }
        if change.left_full_disruption {
            for record in self.health.values_mut() {
                record.reset(now);
            }
        }
        change.states_changed
    }

    /// The controller wrote these conditions to the node's status.
    pub fn status_written(&mut self, name: &str, written: &[NodeCondition]) {
        if let Some(record) = self.health.get_mut(name) {
            record.wrote_ready(written);
        }
    }

    /// Deleting this pod failed: it may be chosen again.
    pub fn eviction_failed(&mut self, node: &str, uid: &str) {
        if let Some(evicting) = self.evicting.get_mut(node) {
            evicting.remove(uid);
        }
    }

    /// Forgets a deleted node. Returns whether it was known (a
    /// `RemovingNode` event) and whether every node needs a new look.
    pub fn node_deleted(&mut self, name: &str, now: Timestamp) -> (bool, bool) {
        let known = self.health.remove(name).is_some();
        self.taints_seen.remove(name);
        self.scheduled.remove(name);
        self.evicting.remove(name);
        let change = self.zones.remove_node(name);
        (known, self.zones_changed(change, now))
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
