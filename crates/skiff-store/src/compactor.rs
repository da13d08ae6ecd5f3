//! Periodic compaction for the API server.
//!
//! Upstream's API server asks etcd to compact every five minutes; here the server
//! runs [`spawn_compactor`], which keeps a fixed number of recent revisions so that
//! watches resuming from a slightly old `resourceVersion` still succeed, while the
//! history does not grow without bound.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Revision, Store};

/// Compacts `store` every `interval`, keeping the newest `keep_revisions`
/// revisions readable (everything older than `current - keep_revisions` goes).
///
/// Failures are logged and retried at the next tick. The task stops, finishing any
/// compaction in progress, when `shutdown` is cancelled; await the handle to wait
/// for that.
pub fn spawn_compactor(
    store: Arc<dyn Store>,
    interval: Duration,
    keep_revisions: Revision,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; nothing is worth compacting at start-up.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = compact_once(store.as_ref(), keep_revisions).await {
                tracing::warn!(error = %e, "periodic store compaction failed");
            }
        }
    })
}

/// One compaction pass: compacts to `current - keep_revisions` if that is newer
/// than the last compaction. Returns the revision compacted to, if any.
pub async fn compact_once(
    store: &dyn Store,
    keep_revisions: Revision,
) -> Result<Option<Revision>, crate::StoreError> {
    let target = store.current_revision().await? - keep_revisions.max(0);
    if target <= store.compacted_revision().await? {
        return Ok(None);
    }
    store.compact(target).await?;
    tracing::debug!(revision = target, "store compacted");
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::MemoryStore;

    async fn store_with_revisions(n: i64) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        store.create("/k", Bytes::new()).await.unwrap();
        for expected in 1..n {
            store.update("/k", Bytes::new(), expected).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn compact_once_keeps_the_newest_revisions() {
        let store = store_with_revisions(10).await;
        assert_eq!(compact_once(store.as_ref(), 3).await.unwrap(), Some(7));
        assert_eq!(store.compacted_revision().await.unwrap(), 7);
        // Nothing new to drop.
        assert_eq!(compact_once(store.as_ref(), 3).await.unwrap(), None);
        // Keeping more than there is does nothing.
        assert_eq!(compact_once(store.as_ref(), 100).await.unwrap(), None);
    }

    #[tokio::test]
    async fn spawned_compactor_runs_until_cancelled() {
        let store = store_with_revisions(10).await;
        let shutdown = CancellationToken::new();
        let task = spawn_compactor(
            Arc::clone(&store),
            Duration::from_millis(10),
            2,
            shutdown.clone(),
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.compacted_revision().await.unwrap() != 8 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the compactor never ran");
        shutdown.cancel();
        task.await.unwrap();
    }
}
