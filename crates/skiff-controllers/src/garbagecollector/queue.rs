//! The collector's work queues, with client-go's workqueue guarantees: an
//! item queued twice is handed out once, an item is never handed to two
//! workers at once (added while in work, it comes back after
//! [`WorkQueue::done`]), and a failing item comes back after a delay that
//! doubles per failure until [`WorkQueue::forget`].
//!
//! The collector's items are graph nodes of every type, not objects of one
//! kube type, so kube-runtime's `Controller` (and [`crate::runtime`]) cannot
//! carry them. Delays live in the queue itself (a deadline per item, the
//! earliest kept), so nothing is left sleeping after shutdown. The queue
//! holds at most one entry per item, so it is bounded by the graph.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::pin::pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry delay of a failing item; it doubles per failure.
const RETRY_BASE: Duration = Duration::from_millis(5);
/// The longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Items waiting for a worker. See the module docs.
pub struct WorkQueue<T> {
    inner: Mutex<Inner<T>>,
    /// Woken when an item is queued or a new earliest deadline is set.
    ready: Notify,
}

struct Inner<T> {
    /// Items ready, in order; the same items as `queued`.
    order: VecDeque<T>,
    queued: HashSet<T>,
    /// Items handed out and not yet done.
    active: HashSet<T>,
    /// Active items added again, to queue when done.
    dirty: HashSet<T>,
    /// Delayed items by deadline (with a sequence number to keep keys
    /// unique), and each delayed item's key.
    delayed: BTreeMap<(Instant, u64), T>,
    delayed_at: HashMap<T, (Instant, u64)>,
    sequence: u64,
    /// Consecutive failures per item.
    failures: HashMap<T, u32>,
}

impl<T> Default for WorkQueue<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                order: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                delayed_at: HashMap::new(),
                sequence: 0,
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Inner<T> {
    /// Queues `item` unless it is queued; an active item is marked dirty.
    /// True if it became ready.
    fn push(&mut self, item: T) -> bool {
        if self.active.contains(&item) {
            self.dirty.insert(item);
            false
        } else if self.queued.insert(item.clone()) {
            self.order.push_back(item);
            true
        } else {
            false
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let item = entry.remove();
            self.delayed_at.remove(&item);
            self.push(item);
        }
    }
}

impl<T: Hash + Eq + Clone> WorkQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().expect("work queue poisoned")
    }

    /// Queues `item` now.
    pub fn add(&self, item: T) {
        if self.lock().push(item) {
            self.ready.notify_one();
        }
    }

    /// Queues `item` after `delay`, unless it is already due sooner.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let at = Instant::now() + delay;
        let mut inner = self.lock();
        if let Some(&(existing, sequence)) = inner.delayed_at.get(&item) {
            if existing <= at {
                return;
            }
            inner.delayed.remove(&(existing, sequence));
        }
        inner.sequence += 1;
        let key = (at, inner.sequence);
        inner.delayed.insert(key, item.clone());
        inner.delayed_at.insert(item, key);
        let earliest = inner.delayed.first_key_value().map(|(k, _)| *k) == Some(key);
        drop(inner);
        if earliest {
            self.ready.notify_one();
        }
    }

    /// Queues `item` after its backoff: 5 ms doubled per failure since the
    /// last [`forget`](Self::forget), at most a minute.
    pub fn add_rate_limited(&self, item: T) {
        let delay = {
            let mut inner = self.lock();
            let failures = inner.failures.entry(item.clone()).or_default();
            let delay = RETRY_BASE.saturating_mul(1 << (*failures).min(20));
            *failures += 1;
            delay.min(RETRY_MAX)
        };
        self.add_after(item, delay);
    }

    /// Resets the backoff of `item`.
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// The next ready item, waiting for one. The caller must call
    /// [`done`](Self::done) with it when finished.
    pub async fn get(&self) -> T {
        loop {
            let mut notified = pin!(self.ready.notified());
            // Registered before looking, so an `add` in between wakes us.
            notified.as_mut().enable();
            let deadline = {
                let mut inner = self.lock();
                inner.promote_due(Instant::now());
                if let Some(item) = inner.order.pop_front() {
                    inner.queued.remove(&item);
                    inner.active.insert(item.clone());
                    let more = !inner.order.is_empty();
                    drop(inner);
                    if more {
                        self.ready.notify_one();
                    }
                    return item;
                }
                inner.delayed.first_key_value().map(|((at, _), _)| *at)
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `item` finished; if it was added meanwhile, it is queued again.
    pub fn done(&self, item: &T) {
        let mut inner = self.lock();
        inner.active.remove(item);
        if inner.dirty.remove(item) && inner.push(item.clone()) {
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// How many items are ready or delayed.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.order.len() + inner.delayed.len()
    }

    /// True if no item is ready or delayed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_queued_twice_is_handed_out_once_and_never_to_two_workers() {
        let queue = WorkQueue::default();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.get().await, "a");
        // Added while in work: not handed out again until done.
        queue.add("a");
        assert_eq!(queue.get().await, "b");
        assert!(queue.is_empty());
        queue.done(&"a");
        assert_eq!(queue.get().await, "a");
        queue.done(&"a");
        queue.done(&"b");
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_items_come_back_at_their_deadline_and_the_earliest_wins() {
        let queue = WorkQueue::default();
        let start = Instant::now();
        queue.add_after("late", Duration::from_secs(10));
        queue.add_after("soon", Duration::from_secs(3));
        queue.add_after("soon", Duration::from_secs(8));
        assert_eq!(queue.get().await, "soon");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        queue.add_after("late", Duration::from_secs(1));
        assert_eq!(queue.get().await, "late");
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        assert!(queue.is_empty(), "the later deadline of `late` was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_until_forgotten() {
        let queue = WorkQueue::default();
        let mut delays = Vec::new();
        for _ in 0..4 {
            let start = Instant::now();
            queue.add_rate_limited("x");
            let item = queue.get().await;
            delays.push(start.elapsed());
            queue.done(&item);
        }
        let ms = Duration::from_millis;
        assert_eq!(delays, [ms(5), ms(10), ms(20), ms(40)]);
        queue.forget(&"x");
        let start = Instant::now();
        queue.add_rate_limited("x");
        queue.get().await;
        assert_eq!(start.elapsed(), ms(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_add_wakes_a_worker_waiting_on_a_later_deadline() {
        let queue = std::sync::Arc::new(WorkQueue::default());
        queue.add_after("later", Duration::from_secs(30));
        let waiting = tokio::spawn({
            let queue = std::sync::Arc::clone(&queue);
            async move { queue.get().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.add("now");
        assert_eq!(waiting.await.unwrap(), "now");
    }
}
