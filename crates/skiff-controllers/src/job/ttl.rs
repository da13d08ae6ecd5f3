//! TTL after finished: deletes a Job `ttlSecondsAfterFinished` seconds after
//! it completed or failed.
//!
//! Upstream runs this as its own controller (`ttl-after-finished-controller`)
//! so it can be switched off separately; so does Skiff. The Job is deleted
//! with `propagationPolicy: Background`, so the garbage collector removes its
//! pods afterwards. Before deleting, the Job is read again from the API
//! server, because a user may have changed or removed the TTL since the
//! cache was filled, and the delete is guarded by that read's
//! resourceVersion.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::plan::{MAX_SLEEP, finished_condition};
use crate::informer::InformerFactory;
use crate::runtime::{Clock, SystemClock, run_controller};

/// The component name of the controller's writes.
const COMPONENT: &str = "ttl-after-finished-controller";

/// What to do with a Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No TTL, not finished, or already being deleted.
    Never,
    /// The TTL runs out after this long.
    In(Duration),
    /// The TTL has run out: delete the Job.
    Now,
}

/// When `job` expires at `now`. The finish time is when its `Complete` or
/// `Failed` condition became True.
pub fn expiry(job: &Job, now: Timestamp) -> Expiry {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Expiry::Never;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Expiry::Never;
    }
    let Some(finished) = finished_condition(job) else {
        return Expiry::Never;
    };
    let Some(finished_at) = finished.last_transition_time.as_ref().map(|t| t.0) else {
        return Expiry::Never;
    };
    let expires = finished_at + jiff::SignedDuration::from_secs(i64::from(ttl));
    if now >= expires {
        Expiry::Now
    } else {
        let left = expires.duration_since(now);
        Expiry::In(Duration::try_from(left).unwrap_or(Duration::ZERO))
    }
}

/// A failed read or delete.
#[derive(Debug, thiserror::Error)]
#[error("{action} job {name}: {source}")]
pub struct TtlError {
    action: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
    clock: Arc<dyn Clock>,
}

/// Builds the TTL-after-finished controller on `factory`'s Job informer; the
/// returned future runs it until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let jobs = factory.informer::<Job>();
    let changes = jobs.subscribe();
    let ctx = Arc::new(Context { client, clock });
    async move {
        jobs.wait_synced().await;
        let controller = Controller::for_shared_stream(changes, jobs.store());
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, TtlError> {
    match expiry(&job, ctx.clock.now()) {
        Expiry::Never => return Ok(Action::await_change()),
        Expiry::In(left) => return Ok(Action::requeue(left.min(MAX_SLEEP))),
        Expiry::Now => {}
    }
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let fresh = match api.get_opt(&name).await {
        Ok(Some(fresh)) if fresh.uid() == job.uid() => fresh,
        Ok(_) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(TtlError {
                action: "read",
                name,
                source,
            });
        }
    };
    match expiry(&fresh, ctx.clock.now()) {
        Expiry::Never => return Ok(Action::await_change()),
        Expiry::In(left) => return Ok(Action::requeue(left.min(MAX_SLEEP))),
        Expiry::Now => {}
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: fresh.resource_version(),
        }),
        ..DeleteParams::default()
    };
    tracing::info!(job = %name, "deleting finished job whose TTL expired");
    match api.delete(&name, &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(TtlError {
            action: "delete",
            name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn job(ttl: Option<i32>, finished: Option<(&str, i64)>) -> Job {
        Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..JobSpec::default()
            }),
            status: Some(JobStatus {
                conditions: finished.map(|(type_, second)| {
                    vec![JobCondition {
                        type_: type_.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(second))),
                        ..JobCondition::default()
                    }]
                }),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn a_finished_job_expires_ttl_seconds_after_its_terminal_condition() {
        let done = job(Some(100), Some(("Complete", 1000)));
        assert_eq!(expiry(&done, at(1040)), Expiry::In(Duration::from_secs(60)));
        assert_eq!(expiry(&done, at(1100)), Expiry::Now);
        assert_eq!(
            expiry(&job(Some(0), Some(("Failed", 1000))), at(1000)),
            Expiry::Now
        );
    }

    #[test]
    fn running_ttl_less_and_deleting_jobs_never_expire() {
        assert_eq!(expiry(&job(Some(5), None), at(9999)), Expiry::Never);
        assert_eq!(
            expiry(&job(None, Some(("Complete", 0))), at(9999)),
            Expiry::Never
        );
        assert_eq!(
            expiry(&job(Some(5), Some(("SuccessCriteriaMet", 0))), at(9999)),
            Expiry::Never
        );
        let mut deleting = job(Some(5), Some(("Complete", 0)));
        deleting.metadata.deletion_timestamp = Some(Time(at(1)));
        assert_eq!(expiry(&deleting, at(9999)), Expiry::Never);
    }
}
