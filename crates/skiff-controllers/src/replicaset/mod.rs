//! ReplicaSet: keeps `spec.replicas` pods matching the selector alive.
//!
//! As upstream's replicaset controller: pods the selector matches and that
//! have no controller are adopted, owned pods that stop matching are
//! released, missing pods are created from the template in slow-start
//! batches (1, 2, 4, … so a failing template costs one error, not hundreds),
//! surplus pods are deleted cheapest first ([`crate::pods::deletion_order`]),
//! and the status counts replicas, fully labelled, ready, available and
//! terminating pods. Writes not yet visible in the cache are tracked by
//! [`Expectations`], so a reconcile never double-creates.
//!
//! [`plan`] is the pure decision; [`start`] wires the IO.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::expectations::{Expectations, InFlight};
use crate::informer::{Informer, InformerFactory, controller_uid};
use crate::ownership::set_controller;
use crate::pods::{self, controller_reference, deletion_order, generate_name};
use crate::runtime::api_message;
use crate::runtime::{Clock, SystemClock, run_controller};

#[cfg(test)]
mod tests;

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "replicaset-controller";

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetConfig {
    /// The most pods created or deleted in one reconcile.
    pub burst_replicas: usize,
}

impl Default for ReplicaSetConfig {
    fn default() -> Self {
        Self {
            burst_replicas: 500,
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

/// What one reconcile decides.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to take ownership of.
    pub adopt: Vec<Arc<Pod>>,
    /// Owned pods the selector no longer matches.
    pub release: Vec<Arc<Pod>>,
    /// How many pods to create.
    pub create: usize,
    /// Pods to delete.
    pub delete: Vec<Arc<Pod>>,
    /// The status the cache shows now.
    pub status: ReplicaSetStatus,
    /// When a ready pod becomes available, to count it then.
    pub recheck_after: Option<Duration>,
}

/// Decides what to do for `rs`, given every pod it owns or could adopt
/// (`candidates`), the writes still in flight, and the time.
pub fn plan(
    rs: &ReplicaSet,
    candidates: &[Arc<Pod>],
    in_flight: &InFlight,
    now: Timestamp,
    config: &ReplicaSetConfig,
) -> Plan {
    let spec = &rs.spec;
    let selector = pods::selector(Some(&spec.selector));
    let uid = rs.uid().unwrap_or_default();
    let deleting = rs.meta().deletion_timestamp.is_some();
    let mut plan = Plan::default();
    let mut owned = Vec::new();
    for pod in candidates {
        let matches = pods::selects(&selector, pod.metadata.labels.as_ref());
        match controller_uid(&**pod) {
            Some(owner) if owner == uid => {
                if matches || deleting {
                    owned.push(Arc::clone(pod));
                } else {
                    plan.release.push(Arc::clone(pod));
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && pod.metadata.deletion_timestamp.is_none() {
                    plan.adopt.push(Arc::clone(pod));
                    owned.push(Arc::clone(pod));
                }
            }
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    plan.status = status(rs, &owned, now, min_ready);
    plan.recheck_after = owned
        .iter()
        .filter(|p| pods::is_active(p))
        .filter_map(|p| pods::seconds_until_available(p, min_ready, now))
        .min()
        .map(|s| Duration::from_secs(s.unsigned_abs()));
    if deleting {
        return plan;
    }
    let mut active: Vec<Arc<Pod>> = owned
        .into_iter()
        .filter(|p| pods::is_active(p) && !in_flight.deletes.contains(&p.name_any()))
        .collect();
    let wanted = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let have = active.len() + in_flight.creates.len();
    if have < wanted {
        plan.create = (wanted - have).min(config.burst_replicas);
    } else if have > wanted {
        let surplus = (have - wanted).min(config.burst_replicas).min(active.len());
        active.sort_by(|a, b| deletion_order(a, b));
        plan.delete = active.into_iter().take(surplus).collect();
    }
    plan
}

/// The status of `rs` as its owned pods show it.
fn status(rs: &ReplicaSet, owned: &[Arc<Pod>], now: Timestamp, min_ready: i32) -> ReplicaSetStatus {
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let previous = rs.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })),
        ready_replicas: Some(count(&pods::is_ready)),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        terminating_replicas: Some(owned.iter().filter(|p| pods::is_terminating(p)).count() as i32),
        observed_generation: rs.meta().generation,
        conditions: previous.conditions,
    }
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    expectations: Expectations,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: ReplicaSetConfig,
}

/// Builds the controller on `factory`'s informers; the returned future runs
/// it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: ReplicaSetConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: ReplicaSetConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let replicasets = factory.informer::<ReplicaSet>();
    let pods = factory.informer::<Pod>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        pods: pods.clone(),
        expectations: Expectations::default(),
        clock,
        config,
    });
    let rs_changes = replicasets.subscribe();
    let pod_changes = pods.subscribe();
    async move {
        replicasets.wait_synced().await;
        pods.wait_synced().await;
        let controller = Controller::for_shared_stream(rs_changes, replicasets.store())
            .owns_shared_stream(pod_changes);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let mut candidates = ctx.pods.controlled_by(&uid);
    candidates.extend(
        ctx.pods
            .list_namespace(&namespace)
            .into_iter()
            .filter(|p| controller_uid(&**p).is_none()),
    );
    let in_flight = ctx.expectations.settle(&uid, |name| {
        ctx.pods
            .get(&namespace, name)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    });
    let plan = plan(&rs, &candidates, &in_flight, ctx.clock.now(), &ctx.config);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    for (pods, owner) in [(&plan.adopt, Some(&*rs)), (&plan.release, None)] {
        for pod in pods {
            set_controller(&api, &**pod, owner)
                .await
                .map_err(|source| ReconcileError {
                    action: if owner.is_some() {
                        "adopt pod"
                    } else {
                        "release pod"
                    },
                    name: pod.name_any(),
                    source,
                })?;
        }
    }
    let mut failure = None;
    if plan.create > 0 {
        failure = create_pods(&rs, &ctx, &api, plan.create).await.err();
    }
    for pod in &plan.delete {
        delete_pod(&rs, &ctx, &api, pod).await?;
    }
    let mut status = plan.status;
    set_failure_condition(&mut status, failure.as_ref(), ctx.clock.now());
    if rs.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &rs, &status).await?;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(plan
        .recheck_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Creates `count` pods in slow-start batches, stopping at the first failure.
async fn create_pods(
    rs: &ReplicaSet,
    ctx: &Context,
    api: &Api<Pod>,
    count: usize,
) -> Result<(), ReconcileError> {
    let Some(template) = rs.spec.template.as_ref() else {
        return Ok(());
    };
    let uid = rs.uid().unwrap_or_default();
    let prefix = format!("{}-", rs.name_any());
    let owner = controller_reference(rs);
    let namespace = rs.namespace().unwrap_or_default();
    let mut remaining = count;
    let mut batch = 1;
    while remaining > 0 {
        let size = batch.min(remaining);
        let creates = (0..size).map(|_| {
            let name = generate_name(&prefix);
            ctx.expectations.expect_create(&uid, &name);
            let pod = pods::pod_from_template(template, &namespace, name, &prefix, owner.clone());
            let uid = &uid;
            async move {
                pods::create_owned_pod(api, &ctx.recorder, &rs.object_ref(&()), &pod)
                    .await
                    .map_err(|source| {
                        ctx.expectations.write_failed(uid, &pod.name_any());
                        ReconcileError {
                            action: "create pod",
                            name: pod.name_any(),
                            source,
                        }
                    })
            }
        });
        let results = futures::future::join_all(creates).await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
        remaining -= size;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pod(
    rs: &ReplicaSet,
    ctx: &Context,
    api: &Api<Pod>,
    pod: &Pod,
) -> Result<(), ReconcileError> {
    let uid = rs.uid().unwrap_or_default();
    let name = pod.name_any();
    ctx.expectations.expect_delete(&uid, &name);
    pods::delete_owned_pod(api, &ctx.recorder, &rs.object_ref(&()), pod)
        .await
        .map_err(|source| {
            ctx.expectations.write_failed(&uid, &name);
            ReconcileError {
                action: "delete pod",
                name,
                source,
            }
        })
}

/// Upstream keeps a `ReplicaFailure` condition while pods cannot be created.
fn set_failure_condition(
    status: &mut ReplicaSetStatus,
    failure: Option<&ReconcileError>,
    now: Timestamp,
) {
    let mut conditions = status.conditions.take().unwrap_or_default();
    conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure") || failure.is_some());
    if let Some(error) = failure {
        let message = api_message(&error.source);
        match conditions
            .iter_mut()
            .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
        {
            Some(existing) => existing.message = Some(message),
            None => conditions.push(ReplicaSetCondition {
                type_: Some("ReplicaFailure".into()),
                status: Some("True".into()),
                reason: Some("FailedCreate".into()),
                message: Some(message),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
}

async fn write_status(
    client: &Client,
    rs: &ReplicaSet,
    status: &ReplicaSetStatus,
) -> Result<(), ReconcileError> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &rs.namespace().unwrap_or_default());
    let mut patch = json!({"status": status});
    if status.conditions.is_none() {
        // A merge patch keeps what it omits: clear the conditions explicitly.
        patch["status"]["conditions"] = serde_json::Value::Null;
    }
    match api
        .patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError {
            action: "update status of",
            name: rs.name_any(),
            source,
        }),
    }
}
