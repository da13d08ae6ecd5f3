//! CronJob: creates a Job each time a cron schedule fires.
//!
//! As upstream's cronjob controller (v2). Each reconcile
//!
//! - notes which of its Jobs finished (dropping them from `status.active`,
//!   recording `lastSuccessfulTime`) and which went missing;
//! - deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit`
//!   and `failedJobsHistoryLimit`;
//! - finds the most recent fire time since the last run (or the CronJob's
//!   creation), no older than `startingDeadlineSeconds`, and starts a Job for
//!   it unless that run exists already, the CronJob is suspended, or
//!   `concurrencyPolicy: Forbid` and a run is active (`Replace` deletes the
//!   active runs first);
//! - asks to be woken just after the next fire time.
//!
//! Only the most recent missed time is started, never a backlog; more than
//! 100 missed times earn a `TooManyMissedTimes` warning, as upstream.
//!
//! A run is named `{cronjob}-{minutes since the epoch}` of its scheduled
//! time, so a controller that crashed between creating a Job and recording
//! it cannot start the same run twice: the create fails with AlreadyExists
//! and the existing Job is recorded instead.
//!
//! Time comes from an injected [`Clock`]; [`plan`] is the pure decision and
//! [`schedule`] the cron arithmetic.

mod plan;
pub mod schedule;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use kube::api::{DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::informer::{Informer, InformerFactory, controller_uid};
use crate::runtime::api_message;
use crate::runtime::{Clock, SystemClock, run_controller};

pub use plan::{
    Deletion, Observed, Plan, Run, job_for, job_name, job_reference, plan, status_may_be_stale,
};

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "cronjob-controller";

/// The annotation on a run that holds its scheduled time (RFC 3339, in the
/// CronJob's `timeZone`).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJobConfig {
    /// The zone of schedules without `timeZone` (upstream: the controller
    /// manager's local zone).
    pub default_time_zone: TimeZone,
}

impl Default for CronJobConfig {
    fn default() -> Self {
        Self {
            default_time_zone: TimeZone::system(),
        }
    }
}

/// A read or write that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// An API call failed.
    #[error("{action} {name}: {source}")]
    Api {
        /// What was attempted.
        action: &'static str,
        /// The object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A running Job could not be replaced, so the new run was not started.
    #[error("could not replace job {name}")]
    Replace {
        /// The Job that is still running.
        name: String,
        /// Why it could not be deleted.
        #[source]
        source: kube::Error,
    },
}

fn api_error(
    action: &'static str,
    name: impl Into<String>,
) -> impl FnOnce(kube::Error) -> ReconcileError {
    let name = name.into();
    move |source| ReconcileError::Api {
        action,
        name,
        source,
    }
}

struct Context {
    client: Client,
    jobs: Informer<Job>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: CronJobConfig,
}

/// Builds the CronJob controller on `factory`'s informers; the returned
/// future runs it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: CronJobConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: CronJobConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let cronjobs = factory.informer::<CronJob>();
    let jobs = factory.informer::<Job>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        jobs: jobs.clone(),
        clock,
        config,
    });
    let cronjob_changes = cronjobs.subscribe();
    let job_changes = jobs.subscribe();
    async move {
        cronjobs.wait_synced().await;
        jobs.wait_synced().await;
        let controller = Controller::for_shared_stream(cronjob_changes, cronjobs.store())
            .owns_shared_stream(job_changes);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

async fn reconcile(cached: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = cached.namespace().unwrap_or_default();
    let uid = cached.uid().unwrap_or_default();
    let cronjob_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs = ctx.jobs.controlled_by(&uid);
    let cronjob = if status_may_be_stale(&cached, &jobs) {
        match cronjob_api
            .get_opt(&cached.name_any())
            .await
            .map_err(api_error("read cronjob", cached.name_any()))?
        {
            Some(fresh) if fresh.uid() == cached.uid() => fresh,
            _ => return Ok(Action::await_change()),
        }
    } else {
        (*cached).clone()
    };

    let cached_uids: HashSet<String> = jobs.iter().filter_map(|j| j.uid()).collect();
    let mut missing = HashSet::new();
    let active = cronjob.status.as_ref().and_then(|s| s.active.as_ref());
    for reference in active.into_iter().flatten() {
        let Some(job_uid) = reference.uid.as_ref() else {
            continue;
        };
        if cached_uids.contains(job_uid) {
            continue;
        }
        let name = reference.name.clone().unwrap_or_default();
        let found = job_api
            .get_opt(&name)
            .await
            .map_err(api_error("read job", name.as_str()))?;
        if found.and_then(|j| j.uid()).as_ref() != Some(job_uid) {
            missing.insert(job_uid.clone());
        }
    }

    let observed = Observed {
        jobs: &jobs,
        missing: &missing,
    };
    let plan = plan(
        &cronjob,
        &observed,
        ctx.clock.now(),
        &ctx.config.default_time_zone,
    );
    let reference = cronjob.object_ref(&());
    for (event_type, reason, message) in &plan.events {
        ctx.recorder
            .record(&reference, *event_type, reason, message);
    }

    let mut status = plan.status.clone();
    let mut failure = None;
    for deletion in &plan.delete {
        if let Err(error) = delete_job(&ctx, &job_api, &cronjob, deletion).await {
            if deletion.replaced {
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(deletion.job.clone());
                failure = Some(ReconcileError::Replace {
                    name: deletion.job.name.clone().unwrap_or_default(),
                    source: error,
                });
            } else {
                tracing::warn!(%error, "deleting a finished job of a cronjob failed");
            }
        }
    }
    if let Some(run) = plan.create.as_ref().filter(|_| failure.is_none())
        && let Err(error) = start_run(&ctx, &job_api, &cronjob, run, &mut status).await
    {
        failure = Some(error);
    }
    if cronjob.status.clone().unwrap_or_default() != status {
        write_status(&cronjob_api, &cronjob, status).await?;
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(plan
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue)),
    }
}

/// Creates the run's Job and records it in `status`. A Job of that name
/// that this CronJob controls already is recorded instead (a previous
/// attempt created it but did not record it).
async fn start_run(
    ctx: &Context,
    api: &Api<Job>,
    cronjob: &CronJob,
    run: &Run,
    status: &mut CronJobStatus,
) -> Result<(), ReconcileError> {
    let name = run.job.name_any();
    let reference = cronjob.object_ref(&());
    let created = match api.create(&PostParams::default(), &run.job).await {
        Ok(job) => {
            ctx.recorder.record(
                &reference,
                EventType::Normal,
                "SuccessfulCreate",
                &format!("Created job {name}"),
            );
            job
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api
                .get_opt(&name)
                .await
                .map_err(api_error("read job", name.as_str()))?;
            match existing {
                Some(job) if controller_uid(&job) == cronjob.uid().as_deref() => job,
                _ => return Ok(()),
            }
        }
        Err(source) => {
            ctx.recorder.record(
                &reference,
                EventType::Warning,
                "FailedCreate",
                &format!("Error creating job: {}", api_message(&source)),
            );
            return Err(ReconcileError::Api {
                action: "create job",
                name,
                source,
            });
        }
    };
    let active = status.active.get_or_insert_with(Vec::new);
    if !active.iter().any(|r| r.uid == created.metadata.uid) {
        active.push(job_reference(&created));
    }
    status.last_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        run.scheduled,
    ));
    Ok(())
}

/// Deletes a Job in the background (the garbage collector removes its
/// pods), guarded by its UID.
async fn delete_job(
    ctx: &Context,
    api: &Api<Job>,
    cronjob: &CronJob,
    deletion: &Deletion,
) -> Result<(), kube::Error> {
    let name = deletion.job.name.clone().unwrap_or_default();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: deletion.job.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let reference = cronjob.object_ref(&());
    match api.delete(&name, &params).await {
        Ok(_) => {
            ctx.recorder.record(
                &reference,
                EventType::Normal,
                "SuccessfulDelete",
                &format!("Deleted job {name}"),
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => {
            ctx.recorder.record(
                &reference,
                EventType::Warning,
                "FailedDelete",
                &format!("Deleted job: {}", api_message(&error)),
            );
            Err(error)
        }
    }
}

/// Replaces the status, guarded by the CronJob's resourceVersion, so a
/// status planned from a stale cache never drops an active run.
async fn write_status(
    api: &Api<CronJob>,
    cronjob: &CronJob,
    status: CronJobStatus,
) -> Result<(), ReconcileError> {
    let mut updated = cronjob.clone();
    updated.status = Some(status);
    match api
        .replace_status(&cronjob.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError::Api {
            action: "update status of cronjob",
            name: cronjob.name_any(),
            source,
        }),
    }
}
