//! How every object-at-a-time controller runs: kube-runtime's `Controller`
//! (a deduplicating work queue, never one key twice at once) over the shared
//! informers, with upstream's per-item exponential retry and a wall clock
//! that tests can set.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::ObjectRef;

use crate::informer::Informed;

/// Reconciles running at once per controller (upstream's `--concurrent-*-syncs`
/// default to 5; reconciles here mostly wait on the API server).
pub const CONCURRENCY: u16 = 8;

/// The first retry delay after a failed reconcile; it doubles per failure.
const RETRY_BASE: Duration = Duration::from_millis(5);
/// The longest retry delay (upstream's item rate limiter caps at 1000 s; a
/// small cluster is better served by a minute).
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Wall time, injected so tests can place "now" (CronJob schedules, minReadySeconds, lease expiry).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The message of an API error as events and conditions quote it: the
/// Status message for API refusals, the error itself otherwise.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Per-object failure counts, for exponential retry delays.
#[derive(Debug, Default)]
struct Retries {
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
    fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("retries poisoned");
        let count = failures.entry(key.to_string()).or_default();
        let delay = RETRY_BASE.saturating_mul(1 << (*count).min(20));
        *count += 1;
        delay.min(RETRY_MAX)
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("retries poisoned").remove(key);
    }
}

/// Runs `controller` with `reconcile` until `shutdown`, retrying failures
/// with exponential backoff per object. `name` labels the logs.
pub async fn run_controller<K, Ctx, R, Fut, E>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<Ctx>,
    mut reconcile: R,
    shutdown: tokio_util::sync::CancellationToken,
) where
    K: Informed,
    Ctx: Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let retries = Arc::new(Retries::default());
    let on_error = Arc::clone(&retries);
    controller
        .with_config(Config::default().concurrency(CONCURRENCY))
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
        let retries = Retries::default();
        assert_eq!(retries.failed("a"), Duration::from_millis(5));
        assert_eq!(retries.failed("a"), Duration::from_millis(10));
        assert_eq!(retries.failed("a"), Duration::from_millis(20));
        assert_eq!(retries.failed("b"), Duration::from_millis(5));
        retries.succeeded("a");
        assert_eq!(retries.failed("a"), Duration::from_millis(5));
        for _ in 0..40 {
            retries.failed("c");
        }
        assert_eq!(retries.failed("c"), RETRY_MAX);
    }
}
