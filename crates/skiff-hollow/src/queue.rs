//! A work queue of keys, with client-go's workqueue guarantees: a key
//! queued twice is handed out once, and a key is never handed to two
//! workers at once (added while in work, it comes back after
//! [`WorkQueue::done`]).
//!
//! It holds at most one entry per key, so it is bounded by the number of
//! pods, and adding never waits: the watch that feeds it is never held up
//! by slow writes.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::pin::pin;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Keys waiting for a worker.
pub struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    /// One wake-up per added key.
    ready: Notify,
}

struct Inner<K> {
    /// Keys waiting, in order; the same keys as `queued`.
    order: VecDeque<K>,
    queued: HashSet<K>,
    /// Keys handed out and not yet done.
    active: HashSet<K>,
    /// Active keys added again, to queue when done.
    dirty: HashSet<K>,
}

impl<K: Hash + Eq + Clone> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                order: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
            }),
            ready: Notify::new(),
        }
    }

    /// Queues `key`, unless it is queued already.
    pub fn add(&self, key: K) {
        let mut inner = self.lock();
        if inner.active.contains(&key) {
            inner.dirty.insert(key);
        } else if inner.queued.insert(key.clone()) {
            inner.order.push_back(key);
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// The next key, waiting for one. The caller must call
    /// [`done`](Self::done) with it when finished.
    pub async fn next(&self) -> K {
        loop {
            let mut notified = pin!(self.ready.notified());
            // Registered before looking, so an `add` in between wakes us.
            notified.as_mut().enable();
            if let Some(key) = self.try_next() {
                return key;
            }
            notified.await;
        }
    }

    fn try_next(&self) -> Option<K> {
        let mut inner = self.lock();
        let key = inner.order.pop_front()?;
        inner.queued.remove(&key);
        inner.active.insert(key.clone());
        Some(key)
    }

    /// Marks `key` finished; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut inner = self.lock();
        inner.active.remove(key);
        if inner.dirty.remove(key) {
            drop(inner);
            self.add(key.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // Never poisoned: nothing panics while holding it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// The next key, or `None` if none comes within a moment.
    async fn poll(queue: &WorkQueue<&'static str>) -> Option<&'static str> {
        tokio::time::timeout(Duration::from_millis(50), queue.next())
            .await
            .ok()
    }

    #[tokio::test]
    async fn keys_are_deduplicated_in_order() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(poll(&queue).await, Some("a"));
        assert_eq!(poll(&queue).await, Some("b"));
        assert_eq!(poll(&queue).await, None);
    }

    #[tokio::test]
    async fn an_active_key_waits_until_done() {
        let queue = WorkQueue::new();
        queue.add("a");
        assert_eq!(poll(&queue).await, Some("a"));
        queue.add("a");
        queue.add("a");
        // Not handed to a second worker while the first has it...
        assert_eq!(poll(&queue).await, None);
        queue.done(&"a");
        // ...but once, after.
        assert_eq!(poll(&queue).await, Some("a"));
        queue.done(&"a");
        assert_eq!(poll(&queue).await, None);
    }

    #[tokio::test]
    async fn waiting_workers_wake_on_add() {
        let queue = Arc::new(WorkQueue::new());
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move { queue.next().await })
            })
            .collect();
        tokio::task::yield_now().await;
        for key in ["a", "b", "c"] {
            queue.add(key);
        }
        let mut got = Vec::new();
        for worker in workers {
            got.push(
                tokio::time::timeout(Duration::from_secs(5), worker)
                    .await
                    .expect("every worker gets a key")
                    .expect("worker"),
            );
        }
        got.sort_unstable();
        assert_eq!(got, ["a", "b", "c"]);
    }
}
