//! How every object-at-a-time controller runs (`skiff_client::controller`
//! with this crate's retry policy) and a wall clock that tests can set.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use skiff_client::controller::RunPolicy;

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

/// How every controller here runs.
const POLICY: RunPolicy = RunPolicy {
    concurrency: CONCURRENCY,
    retry_base: RETRY_BASE,
    retry_max: RETRY_MAX,
};

/// Runs `controller` with `reconcile` until `shutdown`, retrying failures
/// with exponential backoff per object. `name` labels the logs.
pub async fn run_controller<K, Ctx, R, Fut, E>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<Ctx>,
    reconcile: R,
    shutdown: tokio_util::sync::CancellationToken,
) where
    K: Informed,
    Ctx: Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    skiff_client::controller::run(name, controller, ctx, POLICY, reconcile, shutdown).await;
}
