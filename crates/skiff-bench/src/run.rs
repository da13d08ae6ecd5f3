//! Running one measured phase: N concurrent clients share a fixed number of
//! operations, bounded in wall time so that a slow server cannot make a run
//! last forever.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stats::Summary;

/// Run up to `total` operations over `clients` concurrent tasks, stopping
/// early once `limit` has passed. `op(client, index)` performs operation
/// `index` (unique across clients) as client `client` and returns the latency
/// to record. The first failing operation fails the phase.
pub async fn phase<F, Fut>(
    clients: usize,
    total: usize,
    limit: Duration,
    op: F,
) -> anyhow::Result<Summary>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|client| {
            let op = Arc::clone(&op);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total || Instant::now() >= deadline {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    latencies.push(op(client, index).await?);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let mut failure = None;
    for task in tasks {
        match task.await.context("client task panicked")? {
            Ok(mine) => latencies.extend(mine),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    Summary::new(latencies, elapsed).context("no operation completed in time")
}

/// Await `future` and return how long it took.
pub async fn timed<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    future.await?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn every_index_runs_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let summary = phase(4, 50, Duration::from_secs(30), move |client, index| {
            let record = Arc::clone(&record);
            async move {
                assert!(client < 4);
                record.lock().unwrap().push(index);
                Ok(Duration::from_millis(index as u64))
            }
        })
        .await
        .unwrap();
        assert_eq!(summary.ops, 50);
        assert_eq!(summary.max, Duration::from_millis(49));
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failure_fails_the_phase() {
        let result = phase(2, 10, Duration::from_secs(30), |_, index| async move {
            anyhow::ensure!(index != 3, "op 3 failed");
            Ok(Duration::ZERO)
        })
        .await;
        assert!(result.is_err());
    }
}
