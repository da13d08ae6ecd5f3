//! Running an object-at-a-time controller: kube-runtime's `Controller` (a
//! deduplicating work queue that never runs one key twice at once) with
//! upstream's per-item exponential retry after a failed reconcile.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::ObjectRef;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// How a controller runs: reconciles at once, and the retry delays.
#[derive(Debug, Clone, Copy)]
pub struct RunPolicy {
    /// Reconciles running at once.
    pub concurrency: u16,
    /// The first retry delay after a failure; it doubles per failure.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
}

/// Per-object failure counts, for exponential retry delays.
#[derive(Debug)]
struct Retries {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
    /// Delays from `base`, doubling per failure, capped at `max`.
    fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key`; returns how long to wait before retrying.
    fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_string()).or_default();
        let delay = self.base.saturating_mul(1 << (*count).min(20));
        *count += 1;
        delay.min(self.max)
    }

    /// Forgets `key`'s failures: its next failure waits `base` again.
    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Runs `controller` with `reconcile` until `shutdown`, retrying each
/// object's failures with exponential backoff. `name` labels the logs.
pub async fn run<K, Ctx, R, Fut, E>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<Ctx>,
    policy: RunPolicy,
    mut reconcile: R,
    shutdown: CancellationToken,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let retries = Arc::new(Retries::new(policy.retry_base, policy.retry_max));
    let on_error = Arc::clone(&retries);
    controller
        .with_config(Config::default().concurrency(policy.concurrency))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            move |obj: Arc<K>, ctx| {
                let key = ObjectRef::from_obj(&*obj).to_string();
                let retries = Arc::clone(&retries);
                let fut = reconcile(obj, ctx);
                async move {
                    let result = fut.await;
                    if result.is_ok() {
                        retries.succeeded(&key);
                    }
                    result
                }
            },
            move |obj: Arc<K>, error: &E, _| {
                let key = ObjectRef::from_obj(&*obj).to_string();
                let delay = on_error.failed(&key);
                tracing::warn!(controller = name, object = %key, error = %error, ?delay, "reconcile failed; retrying");
                Action::requeue(delay)
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_per_failure_up_to_the_cap_and_reset_on_success() {
        let max = Duration::from_secs(60);
        let retries = Retries::new(Duration::from_millis(5), max);
        assert_eq!(retries.failed("a"), Duration::from_millis(5));
        assert_eq!(retries.failed("a"), Duration::from_millis(10));
        assert_eq!(retries.failed("a"), Duration::from_millis(20));
        assert_eq!(retries.failed("b"), Duration::from_millis(5));
        retries.succeeded("a");
        assert_eq!(retries.failed("a"), Duration::from_millis(5));
        for _ in 0..40 {
            retries.failed("c");
        }
        assert_eq!(retries.failed("c"), max);
    }
}
