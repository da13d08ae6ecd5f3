//! Job: runs pods until enough of them succeed, or gives up.
//!
//! As upstream's job controller. A Job keeps `min(parallelism, completions -
//! succeeded)` pods running (all of `parallelism` for a work-queue Job
//! without `completions`), replaces failed pods after an exponential delay,
//! and finishes once `completions` pods succeeded (`Complete`) or when it
//! exceeds `backoffLimit` failures or `activeDeadlineSeconds` (`Failed`). An
//! Indexed Job gives every pod a completion index and completes when each
//! index below `completions` succeeded once.
//!
//! # Counting with finalizers
//!
//! Finished pods may be deleted at any time (by a user, or by pod garbage
//! collection), so counting the pods present would lose finished ones. As
//! upstream does, every pod is created with the
//! [`TRACKING_FINALIZER`], which keeps it in the API until the Job has
//! counted it. Counting takes two status writes so that a crash never counts
//! a pod twice or not at all:
//!
//! 1. the UIDs of newly finished pods go into `status.uncountedTerminatedPods`
//!    (Indexed Jobs record the index in `status.completedIndexes` instead);
//! 2. their finalizers are removed;
//! 3. each UID whose pod lost its finalizer moves from the uncounted lists
//!    into `status.succeeded` / `status.failed`.
//!
//! A Job decides to finish before it is finished: it first records an interim
//! `SuccessCriteriaMet` or `FailureTarget` condition, deletes what still runs,
//! and sets `Complete` or `Failed` only once every pod is counted and none is
//! terminating, which is what `kubectl wait --for=condition=complete` sees.
//!
//! # Policies
//!
//! A `podFailurePolicy` ([`failure_policy`]) classifies each failed pod by
//! exit code or pod condition: `FailJob` fails the Job at once (reason
//! `PodFailurePolicy`), `FailIndex` fails the pod's index, `Ignore` neither
//! counts the failure nor stops replacement, `Count` counts it as usual. With
//! a policy, and with `podReplacementPolicy: Failed`, a terminating pod is
//! replaced only once it reached phase Failed (`status.terminating` counts
//! it meanwhile). A `successPolicy` ([`success_policy`]) lets an Indexed Job
//! succeed once chosen indexes, or enough of them, succeeded (reason
//! `SuccessPolicy`); its remaining pods are stopped and not counted.
//!
//! A Job whose `spec.managedBy` names another controller is left to it.
//!
//! [`plan`], [`Plan::track`] and [`Tracking::finalize`] are the pure
//! decisions of those steps; [`start`] wires the IO. The TTL-after-finished
//! controller, which deletes finished Jobs, is [`ttl`].
//!
//! Not implemented: adoption of orphan pods that match a Job's selector
//! (the selector is generated from the Job's UID unless `manualSelector` is
//! set, so only hand-made pods could match).

mod backoff;
pub mod failure_policy;
mod indexes;
mod plan;
pub mod success_policy;
pub mod ttl;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::informer::{Informer, InformerFactory, controller_uid};
use crate::pods::{self, controller_reference, generate_name};
use crate::runtime::{Clock, SystemClock, run_controller};

pub use backoff::BackoffRecord;
pub use indexes::Indexes;
pub use plan::{
    Deletion, NewPod, Observed, Outcome, Plan, Tracking, completion_index, finished_condition,
    is_finished, plan,
};

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "job-controller";

/// Keeps a Job's pod in the API until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of an Indexed Job's pod (annotation and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// How many pods of an index failed before this one (`backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// How many failures of an index before this pod a pod failure policy ignored.
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
/// The `spec.managedBy` value of Jobs this controller manages (also the default).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// The environment variable that holds an Indexed Job pod's index.
const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// The most pods created or deleted in one reconcile.
    pub burst: usize,
    /// The most finished pods counted in one reconcile, which bounds the size
    /// of `status.uncountedTerminatedPods`.
    pub max_uncounted: usize,
    /// The delay before replacing the first failed pod; it doubles per
    /// further failure.
    pub pod_failure_backoff: Duration,
    /// The longest such delay (the documented six minutes).
    pub max_pod_failure_backoff: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            burst: 500,
            max_uncounted: 500,
            pod_failure_backoff: Duration::from_secs(10),
            max_pod_failure_backoff: Duration::from_secs(6 * 60),
        }
    }
}

/// A write to the API that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {name}: {source}")]
pub struct ReconcileError {
    action: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    /// Pods created (by name) not yet in the cache.
    creates: Expectations,
    /// Pods deleted (by name) the cache still shows alive.
    deletes: Expectations,
    /// Pods (by UID) whose tracking finalizer was removed but the cache
    /// still shows it.
    untracking: Expectations,
    /// Failures since the last success, per Job UID.
    backoff: Mutex<std::collections::HashMap<String, BackoffRecord>>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: JobConfig,
}

/// Builds the Job controller on `factory`'s informers; the returned future
/// runs it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: JobConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: JobConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let jobs = factory.informer::<Job>();
    let pods = factory.informer::<Pod>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        jobs: jobs.clone(),
        pods: pods.clone(),
        creates: Expectations::default(),
        deletes: Expectations::default(),
        untracking: Expectations::default(),
        backoff: Mutex::default(),
        clock,
        config,
    });
    let job_changes = jobs.subscribe();
    let pod_changes = pods.subscribe();
    let orphan_job_changes = jobs.subscribe();
    let orphan_pod_changes = pods.subscribe();
    async move {
        jobs.wait_synced().await;
        pods.wait_synced().await;
        let controller = Controller::for_shared_stream(job_changes, jobs.store())
            .owns_shared_stream(pod_changes);
        let orphans = release_orphans(
            Arc::clone(&ctx),
            orphan_job_changes,
            orphan_pod_changes,
            shutdown.clone(),
        );
        tokio::join!(
            run_controller(COMPONENT, controller, ctx, reconcile, shutdown),
            orphans
        );
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if job.spec.is_none() || !managed_here(&job) {
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = ctx.pods.controlled_by(&uid);
    if is_finished(&job) {
        // Upstream's backup: a finished Job keeps no finalizers on its pods.
        ctx.backoff.lock().expect("backoff poisoned").remove(&uid);
        for pod in owned.iter().filter(|p| plan::has_tracking_finalizer(p)) {
            remove_tracking_finalizer(&pod_api, pod).await?;
        }
        return Ok(Action::await_change());
    }
    let live = |name: &str| {
        ctx.pods
            .get(&namespace, name)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    };
    let creating = ctx
        .creates
        .settle(&uid, |name| ctx.pods.get(&namespace, name).is_some());
    let deleting = ctx.deletes.settle(&uid, live);
    let tracked: HashSet<String> = owned
        .iter()
        .filter(|p| plan::has_tracking_finalizer(p))
        .filter_map(|p| p.uid())
        .collect();
    let untracking: HashSet<String> = ctx
        .untracking
        .settle(&uid, |pod_uid| tracked.contains(pod_uid))
        .deletes
        .into_iter()
        .collect();
    let backoff = ctx
        .backoff
        .lock()
        .expect("backoff poisoned")
        .get(&uid)
        .copied()
        .unwrap_or_default();
    let observed = Observed {
        pods: &owned,
        writes_in_flight: !creating.creates.is_empty() || !deleting.deletes.is_empty(),
        untracking: &untracking,
        backoff,
    };
    let now = ctx.clock.now();
    let plan = plan(&job, &observed, now, &ctx.config);

    let mut outcome = Outcome::default();
    let mut failure = None;
    let (untrack_first, stop_after): (Vec<&Deletion>, Vec<&Deletion>) =
        plan.delete.iter().partition(|d| d.untrack);
    for deletion in untrack_first {
        if let Err(error) = delete_pod(&job, &ctx, &pod_api, deletion).await {
            outcome.failed_deletes.push(Arc::clone(&deletion.pod));
            failure.get_or_insert(error);
        }
    }
    if !plan.create.is_empty() {
        let (failed, error) = create_pods(&job, &ctx, &pod_api, &plan.create).await;
        outcome.failed_creates = failed;
        if let Some(error) = error {
            failure.get_or_insert(error);
        }
    }

    let tracking = plan.track(&job, &observed, &outcome, now, &ctx.config);
    let mut current = (*job).clone();
    if Some(&tracking.status) != job.status.as_ref() {
        match write_status(&ctx.client, &current, &tracking.status).await? {
            Some(written) => current = written,
            None => return Ok(Action::requeue(STALE_RETRY)),
        }
    }
    // The suspension events go with the condition, now recorded.
    for (event_type, reason, message) in &plan.events {
        ctx.recorder
            .record(&job.object_ref(&()), *event_type, reason, message);
    }
    ctx.backoff
        .lock()
        .expect("backoff poisoned")
        .insert(uid.clone(), plan.backoff);
    let mut untracked = HashSet::new();
    for pod in &tracking.untrack {
        let pod_uid = pod.uid().unwrap_or_default();
        ctx.untracking.expect_delete(&uid, &pod_uid);
        match remove_tracking_finalizer(&pod_api, pod).await {
            Ok(()) => {
                untracked.insert(pod_uid);
            }
            Err(error) => {
                ctx.untracking.write_failed(&uid, &pod_uid);
                failure.get_or_insert(error);
            }
        }
    }
    let mut not_stopped = Vec::new();
    for deletion in stop_after {
        if let Err(error) = delete_pod(&job, &ctx, &pod_api, deletion).await {
            not_stopped.push(Arc::clone(&deletion.pod));
            failure.get_or_insert(error);
        }
    }
    let (status, finished) = tracking.finalize(&untracked, &not_stopped, ctx.clock.now());
    if current.status.as_ref() != Some(&status)
        && write_status(&ctx.client, &current, &status)
            .await?
            .is_none()
    {
        return Ok(Action::requeue(STALE_RETRY));
    }
    if let Some(condition) = finished {
        record_finished(&ctx, &job, &status, &condition);
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// True unless `spec.managedBy` names another controller, which then owns
/// the Job's pods and status.
pub fn managed_here(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_none_or(|m| m == MANAGED_BY)
}

fn record_finished(ctx: &Context, job: &Job, status: &JobStatus, condition: &JobCondition) {
    let reference = job.object_ref(&());
    if condition.type_ == "Complete" {
        let completions = job.spec.as_ref().and_then(|s| s.completions);
        if completions.is_some_and(|c| status.succeeded.unwrap_or(0) > c) {
            ctx.recorder.record(
                &reference,
                EventType::Warning,
                "TooManySucceededPods",
                "Too many succeeded pods running after completion count reached",
            );
        }
        ctx.recorder
            .record(&reference, EventType::Normal, "Completed", "Job completed");
    } else {
        ctx.recorder.record(
            &reference,
            EventType::Warning,
            condition.reason.as_deref().unwrap_or_default(),
            condition.message.as_deref().unwrap_or_default(),
        );
    }
}

/// The pod for `new` made from the Job's template: the Job's controller
/// reference, the tracking finalizer and, for an Indexed Job, the index as
/// annotation, label, hostname and `JOB_COMPLETION_INDEX`.
pub fn pod_for(job: &Job, new: &NewPod) -> Option<Pod> {
    let spec = job.spec.as_ref()?;
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.to_string());
    }
    let prefix = pod_name_prefix(&job.name_any(), new.index);
    if let Some(index) = new.index {
        let index = index.to_string();
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.to_string(), index.clone());
        let counts = [
            (INDEX_FAILURE_COUNT, new.index_failure_count),
            (INDEX_IGNORED_FAILURE_COUNT, new.index_ignored_failure_count),
        ];
        for (key, count) in counts {
            if let Some(count) = count {
                meta.annotations
                    .get_or_insert_with(Default::default)
                    .insert(key.to_string(), count.to_string());
            }
        }
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.to_string(), index.clone());
        if let Some(pod_spec) = template.spec.as_mut() {
            pod_spec.hostname = Some(format!("{}-{index}", job.name_any()));
            let containers = pod_spec
                .containers
                .iter_mut()
                .chain(pod_spec.init_containers.iter_mut().flatten());
            for container in containers {
                let env = container.env.get_or_insert_with(Vec::new);
                if !env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                    env.push(EnvVar {
                        name: COMPLETION_INDEX_ENV.to_string(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                            }),
                            ..EnvVarSource::default()
                        }),
                    });
                }
            }
        }
    }
    Some(pods::pod_from_template(
        &template,
        &job.namespace().unwrap_or_default(),
        generate_name(&prefix),
        &prefix,
        controller_reference(job),
    ))
}

/// The longest `generateName` prefix: a name is at most 63 characters and
/// five are random.
const MAX_PREFIX: usize = 58;

/// `{job}-` or `{job}-{index}-`, shortening the Job's name so that the
/// prefix fits.
pub fn pod_name_prefix(job_name: &str, index: Option<i32>) -> String {
    let suffix = match index {
        Some(index) => format!("-{index}-"),
        None => "-".to_string(),
    };
    let room = MAX_PREFIX.saturating_sub(suffix.len());
    let mut end = job_name.len().min(room);
    while !job_name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &job_name[..end])
}

/// Creates pods in slow-start batches (1, 2, 4, ...), stopping at the first
/// failed batch. Returns how many pods were not created, and the first error.
async fn create_pods(
    job: &Job,
    ctx: &Context,
    api: &Api<Pod>,
    new_pods: &[NewPod],
) -> (usize, Option<ReconcileError>) {
    let uid = job.uid().unwrap_or_default();
    let mut remaining = new_pods;
    let mut batch = 1;
    while !remaining.is_empty() {
        let (now, later) = remaining.split_at(batch.min(remaining.len()));
        let creates = now.iter().filter_map(|new| pod_for(job, new)).map(|pod| {
            let name = pod.name_any();
            ctx.creates.expect_create(&uid, &name);
            let uid = &uid;
            async move {
                pods::create_owned_pod(api, &ctx.recorder, &job.object_ref(&()), &pod)
                    .await
                    .map_err(|source| {
                        ctx.creates.write_failed(uid, &name);
                        ReconcileError {
                            action: "create pod",
                            name,
                            source,
                        }
                    })
            }
        });
        let results = futures::future::join_all(creates).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return (failed + later.len(), Some(error));
        }
        remaining = later;
        batch *= 2;
    }
    (0, None)
}

/// Deletes a pod; a suspended or scaled-down Job first removes the tracking
/// finalizer so the pod is not counted as failed.
async fn delete_pod(
    job: &Job,
    ctx: &Context,
    api: &Api<Pod>,
    deletion: &Deletion,
) -> Result<(), ReconcileError> {
    let uid = job.uid().unwrap_or_default();
    let pod = &deletion.pod;
    let name = pod.name_any();
    if deletion.untrack {
        remove_tracking_finalizer(api, pod).await?;
        ctx.deletes.expect_delete(&uid, &name);
    }
    pods::delete_owned_pod(api, &ctx.recorder, &job.object_ref(&()), pod)
        .await
        .map_err(|source| {
            ctx.deletes.write_failed(&uid, &name);
            ReconcileError {
                action: "delete pod",
                name,
                source,
            }
        })
}

/// Removes the tracking finalizer with a strategic merge patch, which
/// leaves every other finalizer alone. A pod that is gone needs nothing.
async fn remove_tracking_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), ReconcileError> {
    if !plan::has_tracking_finalizer(pod) {
        return Ok(());
    }
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError {
            action: "remove the tracking finalizer of pod",
            name: pod.name_any(),
            source,
        }),
    }
}

/// How soon to look again at a Job whose cached copy was stale.
const STALE_RETRY: Duration = Duration::from_millis(100);

/// Replaces the status, guarded by the Job's resourceVersion: a status
/// computed from a stale cache must not overwrite counted pods. `None` when
/// the Job changed since it was cached (usually by this controller's own
/// previous write): the reconcile starts over once the cache catches up.
async fn write_status(
    client: &Client,
    job: &Job,
    status: &JobStatus,
) -> Result<Option<Job>, ReconcileError> {
    let api: Api<Job> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let mut updated = job.clone();
    updated.status = Some(status.clone());
    match api
        .replace_status(&job.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(job = %job.name_any(), "job changed since cached; retrying");
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(source) => Err(ReconcileError {
            action: "update status of job",
            name: job.name_any(),
            source,
        }),
    }
}

/// Removes the tracking finalizer from pods whose Job is gone or finished,
/// and from pods that no longer have a controller: nothing else would,
/// and they would never be deleted.
async fn release_orphans(
    ctx: Arc<Context>,
    job_changes: impl futures::Stream<Item = Arc<Job>> + Send,
    pod_changes: impl futures::Stream<Item = Arc<Pod>> + Send,
    shutdown: CancellationToken,
) {
    enum Change {
        Job(Arc<Job>),
        Pod(Arc<Pod>),
    }
    let changes =
        futures::stream::select(job_changes.map(Change::Job), pod_changes.map(Change::Pod));
    let mut changes = std::pin::pin!(changes.take_until(shutdown.cancelled_owned()));
    while let Some(change) = changes.next().await {
        let candidates = match change {
            Change::Job(job) => {
                let alive = ctx
                    .jobs
                    .get(&job.namespace().unwrap_or_default(), &job.name_any())
                    .is_some_and(|current| current.uid() == job.uid());
                if alive {
                    continue;
                }
                ctx.pods.controlled_by(&job.uid().unwrap_or_default())
            }
            Change::Pod(pod) => vec![pod],
        };
        for pod in candidates {
            if !plan::has_tracking_finalizer(&pod) || !orphaned(&ctx.jobs, &pod) {
                continue;
            }
            let api: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
            if let Err(error) = remove_tracking_finalizer(&api, &pod).await {
                tracing::warn!(%error, "releasing an orphaned job pod failed");
            }
        }
    }
}

/// True if no live, unfinished Job controls `pod`.
fn orphaned(jobs: &Informer<Job>, pod: &Pod) -> bool {
    let Some(owner) = pod
        .metadata
        .owner_references
        .as_deref()
        .and_then(|refs| refs.iter().find(|o| o.controller == Some(true)))
    else {
        return true;
    };
    if owner.kind != "Job" || owner.api_version != "batch/v1" {
        return false;
    }
    match jobs.get(&pod.namespace().unwrap_or_default(), &owner.name) {
        Some(job) if job.uid().as_deref() == controller_uid(pod) => is_finished(&job),
        _ => true,
    }
}
