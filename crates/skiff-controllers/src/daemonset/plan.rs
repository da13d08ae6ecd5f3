//! The pure decision of one DaemonSet reconcile: which nodes get a pod,
//! which pods go, and what the status says.
//!
//! It follows upstream's `manage` then `rollingUpdate`:
//!
//! - Every node is checked with [`NodeFit`]. A node that should run a pod
//!   and has none gets one. A node that may keep its pod loses failed pods
//!   (rate-limited per node by [`FailedPodBackoff`], since a kubelet that
//!   rejects the pod would otherwise fight the controller in a hot loop),
//!   succeeded pods, and all but the oldest of several. A node that may not
//!   keep its pods loses them all. Unbound pods pinned to nodes that no
//!   longer exist are deleted too, since nothing else ever would.
//! - Only when that leaves nothing to do does the rolling update run: old
//!   pods are deleted while at most `maxUnavailable` nodes lack an available
//!   pod (the manage step then recreates them from the new template), or,
//!   with `maxSurge`, a new pod is started beside an old one and the old one
//!   deleted once the new one is available.
//! - While writes of an earlier reconcile are still unconfirmed by the
//!   cache, only the status is computed, and `observedGeneration` is left
//!   alone because this generation was not acted upon.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use skiff_client::events::EventType;

use super::DaemonSetConfig;
use super::history::{is_pod_updated, template_generation};
use super::nodes::{Eligibility, NodeFit, target_node};
use crate::expectations::InFlight;
use crate::pods;

/// What the reconcile sees.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The DaemonSet.
    pub ds: &'a DaemonSet,
    /// Every node.
    pub nodes: &'a [Arc<Node>],
    /// The pods the DaemonSet controls.
    pub pods: &'a [Arc<Pod>],
    /// The hash of the current revision.
    pub hash: &'a str,
    /// Writes of earlier reconciles the cache does not show yet.
    pub in_flight: &'a InFlight,
    /// The time.
    pub now: Timestamp,
}

/// An event the plan asks to record on the DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub event_type: EventType,
    /// The event reason.
    pub reason: &'static str,
    /// The event message.
    pub message: String,
}

/// The status counters upstream maintains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nodes that should run a daemon pod.
    pub desired: i32,
    /// Of those, nodes that have one.
    pub current: i32,
    /// Nodes that have a daemon pod but should not.
    pub misscheduled: i32,
    /// Nodes whose (oldest) daemon pod is ready.
    pub ready: i32,
    /// Nodes whose (oldest) daemon pod runs the current template.
    pub updated: i32,
    /// Nodes whose (oldest) daemon pod has been ready for `minReadySeconds`.
    pub available: i32,
    /// `desired - available`.
    pub unavailable: i32,
}

/// What one reconcile decides.
#[derive(Debug, Default)]
pub struct Plan {
    /// False while earlier writes are unconfirmed: only `counts` is valid,
    /// and `observedGeneration` must not move.
    pub synced: bool,
    /// Nodes to create a daemon pod for.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<Arc<Pod>>,
    /// Events to record.
    pub notices: Vec<Notice>,
    /// The status the cache shows now.
    pub counts: Counts,
    /// When to look again without a change (a pod becoming available, a
    /// failed pod's backoff ending).
    pub recheck_after: Option<Duration>,
}

impl Plan {
    fn recheck(&mut self, after: Duration) {
        self.recheck_after = Some(self.recheck_after.map_or(after, |r| r.min(after)));
    }
}

/// Per-node backoff for deleting failed daemon pods: the first deletion is
/// immediate, and each further one within the window waits twice as long,
/// up to a maximum; an entry idle for twice the maximum starts over.
#[derive(Debug)]
pub struct FailedPodBackoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, BackoffEntry>,
}

#[derive(Debug, Clone, Copy)]
struct BackoffEntry {
    delay: Duration,
    last: Timestamp,
}

impl FailedPodBackoff {
    /// A backoff starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn since(last: Timestamp, now: Timestamp) -> Duration {
        Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO)
    }

    /// How long `key` must still wait, if it is backing off at `now`.
    pub fn remaining(&self, key: &str, now: Timestamp) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        entry
            .delay
            .checked_sub(Self::since(entry.last, now))
            .filter(|left| !left.is_zero())
    }

    /// Records an attempt for `key` at `now`, lengthening its backoff.
    pub fn next(&mut self, key: &str, now: Timestamp) {
        let (initial, max) = (self.initial, self.max);
        let entry = self.entries.entry(key.to_string()).or_insert(BackoffEntry {
            delay: Duration::ZERO,
            last: now,
        });
        let expired = Self::since(entry.last, now) > max.saturating_mul(2);
        entry.delay = if entry.delay.is_zero() || expired {
            initial
        } else {
            entry.delay.saturating_mul(2).min(max)
        };
        entry.last = now;
    }

    /// Forgets entries idle long enough to have expired, and every entry of a
    /// DaemonSet with `uid_prefix` if given.
    pub fn gc(&mut self, now: Timestamp, uid_prefix: Option<&str>) {
        let max = self.max;
        self.entries.retain(|key, entry| {
            Self::since(entry.last, now) <= max.saturating_mul(2)
                && uid_prefix.is_none_or(|p| !key.starts_with(p))
        });
    }
}

/// The backoff key of failed pods of `ds` on `node`.
fn backoff_key(ds: &DaemonSet, node: &str) -> String {
    let generation = ds
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    format!("{}/{generation}/{node}", ds.uid().unwrap_or_default())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

fn is_deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Upstream's order on one node's pods: bound before unbound, then oldest
/// first, then by name.
fn oldest_first(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let unbound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    unbound(a)
        .cmp(&unbound(b))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// The pods per target node, oldest first, leaving out pods that are both
/// finished and being deleted: nothing is left to do with those.
fn pods_by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods {
        if is_terminal(pod) && is_deleting(pod) {
            continue;
        }
        if let Some(node) = target_node(pod) {
            by_node
                .entry(node.to_string())
                .or_default()
                .push(Arc::clone(pod));
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by(oldest_first);
    }
    by_node
}

/// An int-or-percent of `total`, percentages rounded up. Values the API
/// server would have rejected count as zero.
fn scaled(value: Option<&IntOrString>, total: i32) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |percent| {
                let scaled = (percent.max(0) * i64::from(total) + 99) / 100;
                i32::try_from(scaled).unwrap_or(i32::MAX)
            }),
    }
}

/// The rolling-update parameters, if the strategy is RollingUpdate (the
/// default).
fn rolling(ds: &DaemonSet) -> Option<(Option<&IntOrString>, Option<&IntOrString>)> {
    let strategy = ds.spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    let params = strategy.and_then(|s| s.rolling_update.as_ref());
    Some((
        params.and_then(|p| p.max_unavailable.as_ref()),
        params.and_then(|p| p.max_surge.as_ref()),
    ))
}

/// `maxSurge` of `desired` nodes (zero under OnDelete).
fn surge_count(ds: &DaemonSet, desired: i32) -> i32 {
    rolling(ds).map_or(0, |(_, surge)| scaled(surge, desired))
}

/// A node's live pods of the current and of an older template.
#[derive(Default)]
struct OnNode<'p> {
    new: Option<&'p Arc<Pod>>,
    old: Option<&'p Arc<Pod>>,
}

struct Planner<'a> {
    observed: &'a Observed<'a>,
    eligibility: BTreeMap<String, Eligibility>,
    by_node: BTreeMap<String, Vec<Arc<Pod>>>,
    generation: Option<i64>,
    min_ready: i32,
}

impl Planner<'_> {
    fn available(&self, pod: &Pod) -> bool {
        pods::is_available(pod, self.min_ready, self.observed.now)
    }

    fn updated(&self, pod: &Pod) -> bool {
        is_pod_updated(pod, self.observed.hash, self.generation)
    }

    fn should_run(&self, node: &str) -> bool {
        self.eligibility.get(node).is_some_and(|e| e.should_run)
    }

    /// The single new and single old live pod on a node, or `None` if there
    /// are several of either (the manage step prunes those first).
    fn split_updated<'p>(&self, pods: &'p [Arc<Pod>]) -> Option<OnNode<'p>> {
        let mut on_node = OnNode::default();
        for pod in pods.iter().filter(|p| !is_deleting(p)) {
            let slot = if self.updated(pod) {
                &mut on_node.new
            } else {
                &mut on_node.old
            };
            if slot.replace(pod).is_some() {
                return None;
            }
        }
        Some(on_node)
    }

    fn counts(&self, plan: &mut Plan) -> Counts {
        let mut counts = Counts::default();
        for node in self.observed.nodes {
            let name = node.name_any();
            let pods = self
                .by_node
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if !self.should_run(&name) {
                counts.misscheduled += i32::from(!pods.is_empty());
                continue;
            }
            counts.desired += 1;
            let Some(pod) = pods.first() else {
                continue;
            };
            counts.current += 1;
            if pods::is_ready(pod) {
                counts.ready += 1;
                if self.available(pod) {
                    counts.available += 1;
                } else if let Some(left) =
                    pods::seconds_until_available(pod, self.min_ready, self.observed.now)
                {
                    plan.recheck(Duration::from_secs(left.unsigned_abs()));
                } else {
                    plan.recheck(Duration::from_secs(u64::from(
                        self.min_ready.unsigned_abs(),
                    )));
                }
            }
            counts.updated += i32::from(self.updated(pod));
        }
        counts.unavailable = counts.desired - counts.available;
        counts
    }

    /// Upstream's `manage`: create where missing, prune where wrong.
    fn manage(&self, backoff: &mut FailedPodBackoff, plan: &mut Plan) {
        let allows_surge = surge_count(self.observed.ds, 1) > 0;
        for node in self.observed.nodes {
            let name = node.name_any();
            let eligibility = self.eligibility.get(&name).copied().unwrap_or_default();
            let pods = self.by_node.get(&name);
            match pods {
                None if eligibility.should_run => plan.create.push(name),
                Some(pods) if eligibility.should_continue_running => {
                    let running = self.prune_finished(&name, pods, backoff, plan);
                    self.prune_extra(&name, running, eligibility, allows_surge, plan);
                }
                Some(pods) if !eligibility.should_continue_running => plan
                    .delete
                    .extend(pods.iter().filter(|p| !is_deleting(p)).cloned()),
                _ => {}
            }
        }
        let existing: std::collections::HashSet<String> =
            self.observed.nodes.iter().map(|n| n.name_any()).collect();
        for (node, pods) in &self.by_node {
            if existing.contains(node) {
                continue;
            }
            plan.delete.extend(
                pods.iter()
                    .filter(|p| {
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .is_none_or(str::is_empty)
                    })
                    .cloned(),
            );
        }
    }

    /// Deletes failed (subject to backoff) and succeeded pods; returns the
    /// rest that are not being deleted, oldest first.
    fn prune_finished(
        &self,
        node: &str,
        pods: &[Arc<Pod>],
        backoff: &mut FailedPodBackoff,
        plan: &mut Plan,
    ) -> Vec<Arc<Pod>> {
        let ds = self.observed.ds;
        let now = self.observed.now;
        let mut running = Vec::new();
        for pod in pods.iter().filter(|p| !is_deleting(p)) {
            let pod_ref = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            match phase(pod) {
                "Failed" => {
                    let key = backoff_key(ds, node);
                    if let Some(left) = backoff.remaining(&key, now) {
                        plan.recheck(left);
                        continue;
                    }
                    backoff.next(&key, now);
                    plan.notices.push(Notice {
                        event_type: EventType::Warning,
                        reason: "FailedDaemonPod",
                        message: format!(
                            "Found failed daemon pod {pod_ref} on node {node}, will try to kill it"
                        ),
                    });
                    plan.delete.push(Arc::clone(pod));
                }
                "Succeeded" => {
                    plan.notices.push(Notice {
                        event_type: EventType::Normal,
                        reason: "SucceededDaemonPod",
                        message: format!(
                            "Found succeeded daemon pod {pod_ref} on node {node}, will try to delete it"
                        ),
                    });
                    plan.delete.push(Arc::clone(pod));
                }
                _ => running.push(Arc::clone(pod)),
            }
        }
        running
    }

    /// Keeps one pod per node; while surging, an old pod may stay beside a
    /// new one until the new one is available.
    fn prune_extra(
        &self,
        node: &str,
        running: Vec<Arc<Pod>>,
        eligibility: Eligibility,
        allows_surge: bool,
        plan: &mut Plan,
    ) {
        if !allows_surge {
            plan.delete.extend(running.into_iter().skip(1));
            return;
        }
        if running.is_empty() {
            if eligibility.should_run {
                plan.create.push(node.to_string());
            }
            return;
        }
        let mut oldest_new: Option<Arc<Pod>> = None;
        let mut oldest_old: Option<Arc<Pod>> = None;
        for pod in running {
            let slot = if self.updated(&pod) {
                &mut oldest_new
            } else {
                &mut oldest_old
            };
            if slot.is_none() {
                *slot = Some(pod);
            } else {
                plan.delete.push(pod);
            }
        }
        if let (Some(new), Some(old)) = (oldest_new, oldest_old)
            && (!pods::is_ready(&old) || self.available(&new))
        {
            plan.delete.push(old);
        }
    }

    /// Upstream's `rollingUpdate`, run only when `manage` had nothing to do.
    fn rolling_update(&self, desired: i32, plan: &mut Plan) {
        let Some((max_unavailable, max_surge)) = rolling(self.observed.ds) else {
            return;
        };
        let max_surge = scaled(max_surge, desired);
        let mut max_unavailable = scaled(max_unavailable, desired);
        if desired > 0 && max_unavailable == 0 && max_surge == 0 {
            max_unavailable = 1;
        }
        let mut nodes: BTreeMap<&str, &[Arc<Pod>]> = self
            .by_node
            .iter()
            .map(|(node, pods)| (node.as_str(), pods.as_slice()))
            .collect();
        for (node, eligibility) in &self.eligibility {
            if eligibility.should_run {
                nodes.entry(node.as_str()).or_insert(&[]);
            }
        }
        if max_surge == 0 {
            self.replace_within_unavailability(&nodes, max_unavailable, plan);
        } else {
            self.replace_by_surging(&nodes, max_surge, desired, plan);
        }
    }

    fn replace_within_unavailability(
        &self,
        nodes: &BTreeMap<&str, &[Arc<Pod>]>,
        max_unavailable: i32,
        plan: &mut Plan,
    ) {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for pods in nodes.values() {
            let Some(OnNode { new, old }) = self.split_updated(pods) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => unavailable += i32::from(!self.available(new)),
                (None, Some(old)) => {
                    if !self.available(old) {
                        replace.push(Arc::clone(old));
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(Arc::clone(old));
                    }
                }
            }
        }
        let room = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
        plan.delete.extend(replace);
        plan.delete.extend(candidates.into_iter().take(room));
    }

    fn replace_by_surging(
        &self,
        nodes: &BTreeMap<&str, &[Arc<Pod>]>,
        max_surge: i32,
        desired: i32,
        plan: &mut Plan,
    ) {
        let mut surging = 0;
        let mut available = 0;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        let mut leaving = Vec::new();
        for (&node, pods) in nodes {
            let Some(OnNode { new, old }) = self.split_updated(pods) else {
                surging += 1;
                continue;
            };
            if let Some(counted) = old.or(new) {
                available += i32::from(self.available(counted));
            }
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    let should_run = self.should_run(node);
                    if !self.available(old) {
                        if should_run {
                            replace_now.push(node.to_string());
                        } else {
                            plan.delete.push(Arc::clone(old));
                        }
                    } else if !should_run {
                        leaving.push(Arc::clone(old));
                    } else if surging < max_surge {
                        candidates.push(node.to_string());
                    }
                }
                (Some(new), Some(old)) => {
                    if self.available(new) {
                        plan.delete.push(Arc::clone(old));
                    } else {
                        surging += 1;
                    }
                }
            }
        }
        // Pods on nodes they must leave go only once as many pods elsewhere
        // are available, so the set never drops below full availability.
        let deletable = usize::try_from(available - desired).unwrap_or(0);
        plan.delete.extend(leaving.into_iter().take(deletable));
        let room = usize::try_from(max_surge - surging).unwrap_or(0);
        plan.create.extend(replace_now);
        plan.create.extend(candidates.into_iter().take(room));
    }
}

/// Decides what to do for `observed.ds`. `backoff` is the controller's
/// memory of failed-pod deletions; the plan records the ones it asks for.
pub fn plan(
    observed: &Observed<'_>,
    backoff: &mut FailedPodBackoff,
    config: &DaemonSetConfig,
) -> Plan {
    let ds = observed.ds;
    let fit = NodeFit::new(&ds.spec.template);
    let eligibility = observed
        .nodes
        .iter()
        .map(|n| (n.name_any(), fit.eligibility(n)))
        .collect();
    let planner = Planner {
        observed,
        eligibility,
        by_node: pods_by_node(observed.pods),
        generation: template_generation(ds),
        min_ready: ds.spec.min_ready_seconds.unwrap_or(0),
    };
    let mut plan = Plan::default();
    plan.counts = planner.counts(&mut plan);
    if !observed.in_flight.creates.is_empty() || !observed.in_flight.deletes.is_empty() {
        return plan;
    }
    plan.synced = true;
    planner.manage(backoff, &mut plan);
    if plan.create.is_empty() && plan.delete.is_empty() {
        planner.rolling_update(plan.counts.desired, &mut plan);
    }
    plan.create.truncate(config.burst_replicas);
    plan.delete.truncate(config.burst_replicas);
    plan
}
