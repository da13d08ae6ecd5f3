//! The queue of pods waiting for a node.
//!
//! Like upstream's scheduling queue it has three parts:
//!
//! - **active**: ready to be tried, highest `spec.priority` first, then in the
//!   order they became ready;
//! - **backoff**: failed recently and waiting out their back-off (1 s,
//!   doubling per attempt, at most 10 s);
//! - **unschedulable**: fit nowhere last time. They stay parked until the
//!   cluster changes in a way that may help (a node added or updated, a pod
//!   deleted: [`SchedulingQueue::move_all_unschedulable`]), the pod's own spec
//!   changes, or five minutes pass; then they go to backoff or active.
//!
//! A popped pod is *in flight* until the scheduler reports the outcome, and
//! watch updates meanwhile only refresh the stored object.
//!
//! Both heaps are lazy: an entry carries the generation it was pushed with,
//! and stale entries are skipped on pop, so moving a pod is O(log n).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::snapshot::{PodInfo, PodKey};

/// Back-off after the first failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Back-off never grows past this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is retried after this long even without a cluster
/// event (upstream's `podMaxInUnschedulablePodsDuration`).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// The back-off after `attempts` failed attempts.
pub fn backoff_for(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    state: State,
    attempts: u32,
    backoff_until: Option<Instant>,
    unschedulable_since: Option<Instant>,
    /// Bumped on every move; heap items with another value are stale.
    generation: u64,
}

/// An active-heap item: higher priority first, then lower sequence.
#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    key: PodKey,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Pods waiting to be scheduled; see the module docs.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<PodKey, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, PodKey)>>,
    next_seq: u64,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    /// How many pods the queue holds, in flight included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue holds no pods.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the queue holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Keys of every queued pod.
    pub fn keys(&self) -> impl Iterator<Item = &PodKey> {
        self.entries.keys()
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn push_active(&mut self, key: &str) {
        let seq = self.seq();
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Active;
            e.generation = seq;
            e.unschedulable_since = None;
            self.active.push(ActiveItem {
                priority: e.pod.priority,
                seq,
                key: key.to_string(),
            });
        }
    }

    fn push_backoff(&mut self, key: &str, until: Instant) {
        let seq = self.seq();
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Backoff;
            e.generation = seq;
            e.unschedulable_since = None;
            self.backoff.push(Reverse((until, seq, key.to_string())));
        }
    }

    /// Moves a parked pod on: to backoff while its back-off lasts, else to
    /// active.
    fn release(&mut self, key: &str, now: Instant) {
        let until = self.entries.get(key).and_then(|e| e.backoff_until);
        match until {
            Some(until) if until > now => self.push_backoff(key, until),
            _ => self.push_active(key),
        }
    }

    /// Adds a pod that needs a node, or refreshes the object of one already
    /// queued. A parked pod whose spec or labels changed is released, since
    /// the change may make it fit; status-only updates (like our own
    /// `PodScheduled` condition) leave it parked.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        let Some(entry) = self.entries.get_mut(&key) else {
            self.entries.insert(
                key.clone(),
                Entry {
                    pod,
                    state: State::Active,
                    attempts: 0,
                    backoff_until: None,
                    unschedulable_since: None,
                    generation: 0,
                },
            );
            self.push_active(&key);
            return;
        };
        let changed = entry.pod.pod.spec != pod.pod.spec
            || entry.pod.pod.metadata.labels != pod.pod.metadata.labels;
        let priority_changed = entry.pod.priority != pod.priority;
        entry.pod = pod;
        match entry.state {
            State::Unschedulable if changed => self.release(&key, now),
            State::Active if priority_changed => self.push_active(&key),
            _ => {}
        }
    }

    /// Refreshes the stored object of a queued pod without moving it; a pod
    /// the queue does not hold stays out.
    pub fn refresh(&mut self, pod: Arc<PodInfo>) {
        if let Some(entry) = self.entries.get_mut(&pod.key) {
            entry.pod = pod;
        }
    }

    /// Forgets a pod (deleted, bound by someone else, or no longer ours).
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Moves pods whose back-off has passed to active.
    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((until, generation, key))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            let live = self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == State::Backoff && e.generation == generation);
            if live {
                self.push_active(&key);
            }
        }
    }

    /// Takes the next pod to try, if one is ready at `now`; it is in flight
    /// until [`done`](Self::done), [`unschedulable`](Self::unschedulable) or
    /// [`failed`](Self::failed).
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        self.flush_backoff(now);
        while let Some(item) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&item.key) else {
                continue;
            };
            if e.state != State::Active || e.generation != item.seq {
                continue;
            }
            e.state = State::InFlight;
            return Some(e.pod.clone());
        }
        None
    }

    /// Drops stale items from the tops of both heaps, so that a peek sees a
    /// live entry.
    fn drop_stale_tops(&mut self) {
        while let Some(item) = self.active.peek() {
            let live = self
                .entries
                .get(&item.key)
                .is_some_and(|e| e.state == State::Active && e.generation == item.seq);
            if live {
                break;
            }
            self.active.pop();
        }
        while let Some(Reverse((_, generation, key))) = self.backoff.peek() {
            let live = self
                .entries
                .get(key)
                .is_some_and(|e| e.state == State::Backoff && e.generation == *generation);
            if live {
                break;
            }
            self.backoff.pop();
        }
    }

    /// When the next pod will be ready to pop: `now` if one is, else when the
    /// earliest back-off ends, or `None` when nothing is waiting to be tried.
    pub fn next_ready(&mut self, now: Instant) -> Option<Instant> {
        self.flush_backoff(now);
        self.drop_stale_tops();
        if !self.active.is_empty() {
            return Some(now);
        }
        self.backoff.peek().map(|Reverse((until, _, _))| *until)
    }

    /// The in-flight pod was scheduled: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.state == State::InFlight)
        {
            self.entries.remove(key);
        }
    }

    fn record_failure(&mut self, key: &str, now: Instant) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        e.attempts = e.attempts.saturating_add(1);
        e.backoff_until = Some(now + backoff_for(e.attempts));
        true
    }

    /// The in-flight pod fits nowhere: park it until something changes.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        if self.record_failure(key, now)
            && let Some(e) = self.entries.get_mut(key)
        {
            e.state = State::Unschedulable;
            e.unschedulable_since = Some(now);
        }
    }

    /// The in-flight pod hit an error (binding failed, API trouble): retry
    /// after its back-off.
    pub fn failed(&mut self, key: &str, now: Instant) {
        if self.record_failure(key, now) {
            let until = self.entries.get(key).and_then(|e| e.backoff_until);
            self.push_backoff(key, until.unwrap_or(now));
        }
    }

    /// Releases one parked pod (to backoff or active); a pod in any other
    /// state is left alone.
    pub fn release_parked(&mut self, key: &str, now: Instant) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.state == State::Unschedulable)
        {
            self.release(key, now);
        }
    }

    /// A cluster event may have made parked pods fit: release them all.
    pub fn move_all_unschedulable(&mut self, now: Instant) {
        let parked: Vec<PodKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for key in parked {
            self.release(&key, now);
        }
    }

    /// Releases pods parked for longer than [`MAX_UNSCHEDULABLE`].
    pub fn flush_unschedulable_leftovers(&mut self, now: Instant) {
        let stale: Vec<PodKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.state == State::Unschedulable
                    && e.unschedulable_since
                        .is_some_and(|since| now.duration_since(since) >= MAX_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.release(&key, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::pod;

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        let mut p = pod(name, "", "");
        p.spec.as_mut().unwrap().priority = Some(priority);
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn names(q: &mut SchedulingQueue, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| q.pop(now).map(|p| p.key.clone())).collect()
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let secs: Vec<u64> = (1..=6).map(|a| backoff_for(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff_for(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn priority_then_arrival_order() {
        let mut q = SchedulingQueue::new();
        let now = Instant::now();
        q.add_or_update(info("low-1", 0), now);
        q.add_or_update(info("high", 100), now);
        q.add_or_update(info("low-2", 0), now);
        q.add_or_update(info("mid", 50), now);
        assert_eq!(
            names(&mut q, now),
            [
                "default/high",
                "default/mid",
                "default/low-1",
                "default/low-2"
            ]
        );
        assert!(q.pop(now).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_pods_back_off_and_double() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("p", 0), Instant::now());
        let p = q.pop(Instant::now()).unwrap();
        q.failed(&p.key, Instant::now());
        assert!(q.pop(Instant::now()).is_none(), "backing off");
        let due = Instant::now() + Duration::from_secs(1);
        assert_eq!(q.next_ready(Instant::now()), Some(due));

        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(q.next_ready(Instant::now()), Some(due));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(q.next_ready(Instant::now()), Some(Instant::now()));
        let p = q.pop(Instant::now()).unwrap();

        q.failed(&p.key, Instant::now());
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(q.pop(Instant::now()).is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(q.pop(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_cluster_event() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("p", 0), Instant::now());
        let p = q.pop(Instant::now()).unwrap();
        q.unschedulable(&p.key, Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            q.pop(Instant::now()).is_none(),
            "parked, not merely backing off"
        );
        assert_eq!(q.next_ready(Instant::now()), None);

        q.move_all_unschedulable(Instant::now());
        assert_eq!(names(&mut q, Instant::now()), ["default/p"]);
    }

    #[tokio::test(start_paused = true)]
    async fn released_pods_still_serve_their_backoff() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("p", 0), Instant::now());
        let p = q.pop(Instant::now()).unwrap();
        q.unschedulable(&p.key, Instant::now());
        q.move_all_unschedulable(Instant::now());
        assert!(q.pop(Instant::now()).is_none(), "1 s back-off first");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(q.pop(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn spec_changes_release_but_status_updates_do_not() {
        let mut q = SchedulingQueue::new();
        let original = info("p", 0);
        q.add_or_update(original.clone(), Instant::now());
        q.pop(Instant::now()).unwrap();
        q.unschedulable(&original.key, Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;

        let mut status_only = (*original.pod).clone();
        status_only.status = Some(Default::default());
        q.add_or_update(
            Arc::new(PodInfo::new(Arc::new(status_only))),
            Instant::now(),
        );
        assert!(q.pop(Instant::now()).is_none());

        let mut relabelled = (*original.pod).clone();
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        q.add_or_update(Arc::new(PodInfo::new(Arc::new(relabelled))), Instant::now());
        assert!(q.pop(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_are_retried_after_five_minutes() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("p", 0), Instant::now());
        let p = q.pop(Instant::now()).unwrap();
        q.unschedulable(&p.key, Instant::now());
        tokio::time::advance(MAX_UNSCHEDULABLE - Duration::from_secs(1)).await;
        q.flush_unschedulable_leftovers(Instant::now());
        assert!(q.pop(Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        q.flush_unschedulable_leftovers(Instant::now());
        assert!(q.pop(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_pods_are_not_popped_twice_and_removal_wins() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("p", 0), Instant::now());
        let p = q.pop(Instant::now()).unwrap();
        // A watch update while in flight does not requeue it.
        q.add_or_update(info("p", 0), Instant::now());
        assert!(q.pop(Instant::now()).is_none());
        q.done(&p.key);
        assert!(q.is_empty());

        q.refresh(info("p", 0));
        assert!(q.is_empty(), "refresh never adds");

        q.add_or_update(info("gone", 0), Instant::now());
        q.remove("default/gone");
        assert!(q.pop(Instant::now()).is_none());
        // Outcomes for a removed pod are ignored.
        q.failed("default/gone", Instant::now());
        q.unschedulable("default/gone", Instant::now());
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn release_parked_only_moves_parked_pods() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("parked", 0), Instant::now());
        q.add_or_update(info("busy", 0), Instant::now());
        let parked = q.pop(Instant::now()).unwrap();
        let busy = q.pop(Instant::now()).unwrap();
        q.unschedulable(&parked.key, Instant::now());
        q.release_parked(&busy.key, Instant::now());
        q.release_parked(&parked.key, Instant::now());
        tokio::time::advance(INITIAL_BACKOFF).await;
        assert_eq!(names(&mut q, Instant::now()), ["default/parked"]);
        assert!(
            q.pop(Instant::now()).is_none(),
            "the in-flight pod stays in flight"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn priority_change_reorders_an_active_pod() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(info("a", 0), Instant::now());
        q.add_or_update(info("b", 0), Instant::now());
        q.add_or_update(info("b", 10), Instant::now());
        assert_eq!(names(&mut q, Instant::now()), ["default/b", "default/a"]);
    }
}
