//! PodDisruptionBudget: counts how many of the pods a budget selects are
//! healthy, how many must be, and so how many voluntary disruptions
//! (evictions) it allows now.
//!
//! As upstream's disruption controller. The eviction endpoint of the API
//! server is the other half: it takes one from `status.disruptionsAllowed`
//! for each pod it evicts and records the pod in `status.disruptedPods`;
//! this controller then sees the pod go, counts again, and drops the record
//! (or, if the pod was not deleted within `deletion_timeout`, drops it
//! anyway and warns with a `NotDeleted` event on the pod). A pod recorded
//! there is not counted healthy meanwhile, so two evictions cannot both
//! count the same pod as spare.
//!
//! The arithmetic ([`plan`]): with an integer `minAvailable`, that many pods
//! must be healthy and the pods selected are the expected ones; with a
//! percentage, or with `maxUnavailable`, the expected count is the sum of
//! the scales of the pods' controllers (Deployment, ReplicaSet, StatefulSet;
//! Skiff serves no ReplicationControllers), percentages rounding up. Healthy means Ready and
//! not being deleted. `disruptionsAllowed` is healthy minus desired, never
//! below zero, and zero while no pod is expected. The `DisruptionAllowed`
//! condition says whether any is allowed (`SufficientPods`,
//! `InsufficientPods`); if the expected count cannot be worked out the
//! budget fails safe: no disruption allowed, reason `SyncFailed`.
//!
//! The status is written with the budget's resourceVersion, so a count made
//! before an eviction never erases that eviction's record.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::informer::{Informer, InformerFactory};
use crate::pods;
use crate::runtime::{Clock, SystemClock, run_controller};

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "disruption-controller";

/// How soon a count whose write lost a race with an eviction runs again.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisruptionConfig {
    /// How long a pod recorded as being evicted is not counted healthy
    /// while it has not been marked for deletion (upstream's
    /// `DeletionTimeout`).
    pub deletion_timeout: Duration,
}

impl Default for DisruptionConfig {
    fn default() -> Self {
        Self {
            deletion_timeout: Duration::from_secs(2 * 60),
        }
    }
}

/// Writing a budget's status failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("update status of PodDisruptionBudget {namespace}/{name}")]
pub struct ReconcileError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// An event about the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetEvent {
    /// Normal or Warning.
    pub event_type: EventType,
    /// Upstream's reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// What one count decides.
#[derive(Debug)]
pub struct Plan {
    /// The status the budget should have.
    pub status: PodDisruptionBudgetStatus,
    /// Events about the budget.
    pub events: Vec<BudgetEvent>,
    /// Pods recorded as evicted that were not deleted in time.
    pub not_deleted: Vec<Arc<Pod>>,
    /// When a recorded eviction times out, to count again then.
    pub recheck_after: Option<Duration>,
}

/// Resolves a pod's controller reference to the top controller's UID and
/// scale (`spec.replicas`), or `None` if no supported controller matches.
pub type ScaleOf<'a> = dyn Fn(&str, &OwnerReference) -> Option<(String, i32)> + 'a;

/// Decides the status of `pdb` from the pods of its namespace (`pods`), the
/// pods' controllers' scales and the time.
pub fn plan(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale_of: &ScaleOf<'_>,
    now: Timestamp,
    config: &DisruptionConfig,
) -> Plan {
    let spec = pdb.spec.clone().unwrap_or_default();
    let selector = pods::selector(spec.selector.as_ref());
    let selected: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| pods::selects(&selector, p.metadata.labels.as_ref()))
        .collect();
    let previous = pdb.status.clone().unwrap_or_default();
    let mut plan = Plan {
        status: previous.clone(),
        events: Vec::new(),
        not_deleted: Vec::new(),
        recheck_after: None,
    };
    if selected.is_empty() {
        plan.events.push(BudgetEvent {
            event_type: EventType::Normal,
            reason: "NoPods",
            message: "No matching pods found".into(),
        });
    }
    let (expected, desired, unmanaged) = match expected_count(&spec, &selected, scale_of) {
        Ok(counts) => counts,
        Err(error) => {
            plan.events.push(BudgetEvent {
                event_type: EventType::Warning,
                reason: "CalculateExpectedPodCountFailed",
                message: format!("Failed to calculate the number of expected pods: {error}"),
            });
            // Fail safe: whatever else is known, allow no disruption.
            plan.status.disruptions_allowed = Some(0);
            let observed = plan.status.observed_generation;
            set_condition(
                &mut plan.status,
                ("False", "SyncFailed", error),
                observed,
                now,
            );
            return plan;
        }
    };
    if !unmanaged.is_empty() {
        plan.events.push(BudgetEvent {
            event_type: EventType::Warning,
            reason: "UnmanagedPods",
            message: format!(
                "Pods selected by this PodDisruptionBudget (selector: {selector}) have no controller, \
so its status cannot be calculated correctly; set .spec.minAvailable to an integer value to account for them: {}",
                unmanaged.join(", ")
            ),
        });
    }
    let timeout = SignedDuration::try_from(config.deletion_timeout).unwrap_or(SignedDuration::MAX);
    let recorded = previous.disrupted_pods.clone().unwrap_or_default();
    let mut disrupted = BTreeMap::new();
    for pod in &selected {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(at) = recorded.get(&name) else {
            continue;
        };
        let expires = at.0.saturating_add(timeout).unwrap_or(at.0);
        if expires < now {
            plan.not_deleted.push(Arc::clone(pod));
        } else {
            let wait = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
            plan.recheck_after = Some(plan.recheck_after.map_or(wait, |w| w.min(wait)));
            disrupted.insert(name, at.clone());
        }
    }
    let healthy = selected
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| pods::is_ready(p))
        .count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    plan.status.current_healthy = Some(healthy);
    plan.status.desired_healthy = Some(desired);
    plan.status.expected_pods = Some(expected);
    plan.status.disruptions_allowed = Some(allowed);
    plan.status.disrupted_pods = (!disrupted.is_empty()).then_some(disrupted);
    plan.status.observed_generation = pdb.meta().generation;
    let condition = if allowed > 0 {
        ("True", "SufficientPods", String::new())
    } else {
        ("False", "InsufficientPods", String::new())
    };
    set_condition(&mut plan.status, condition, pdb.meta().generation, now);
    plan
}

/// `(expected, desired healthy, unmanaged pods)` as upstream counts them.
fn expected_count(
    spec: &k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec,
    selected: &[&Arc<Pod>],
    scale_of: &ScaleOf<'_>,
) -> Result<(i32, i32, Vec<String>), String> {
    if let Some(max_unavailable) = &spec.max_unavailable {
        let (expected, unmanaged) = expected_scale(selected, scale_of)?;
        let unavailable = scaled(max_unavailable, expected)?;
        return Ok((expected, (expected - unavailable).max(0), unmanaged));
    }
    match &spec.min_available {
        Some(IntOrString::Int(min)) => Ok((
            i32::try_from(selected.len()).unwrap_or(i32::MAX),
            *min,
            Vec::new(),
        )),
        Some(percent) => {
            let (expected, unmanaged) = expected_scale(selected, scale_of)?;
            Ok((expected, scaled(percent, expected)?, unmanaged))
        }
        None => Ok((0, 0, Vec::new())),
    }
}

/// The sum of the scales of the selected pods' controllers, each counted
/// once; pods without a controller are returned by name.
fn expected_scale(
    selected: &[&Arc<Pod>],
    scale_of: &ScaleOf<'_>,
) -> Result<(i32, Vec<String>), String> {
    let mut scales: BTreeMap<String, i32> = BTreeMap::new();
    let mut unmanaged = Vec::new();
    for pod in selected {
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let Some(owner) = owner else {
            unmanaged.push(pod.name_any());
            continue;
        };
        let namespace = pod.namespace().unwrap_or_default();
        match scale_of(&namespace, owner) {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => return Err(format!("found no controllers for pod {:?}", pod.name_any())),
        }
    }
    Ok((scales.values().sum(), unmanaged))
}

/// An integer, or a percentage of `total` rounded up.
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .ok_or_else(|| {
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .to_string()
                })?
                .parse()
                .map_err(|e| format!("invalid value for IntOrString: invalid value {s:?}: {e}"))?;
            let value = (i64::from(total) * percent + 99).div_euclid(100);
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// Sets the `DisruptionAllowed` condition as upstream's `SetStatusCondition`:
/// the transition time moves only when the status does.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    (value, reason, message): (&str, &str, String),
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let updated = Condition {
        type_: "DisruptionAllowed".into(),
        status: value.into(),
        reason: reason.into(),
        message,
        observed_generation,
        last_transition_time: Time(now),
    };
    match conditions
        .iter_mut()
        .find(|c| c.type_ == "DisruptionAllowed")
    {
        Some(existing) => {
            let since = if existing.status == updated.status {
                existing.last_transition_time.clone()
            } else {
                updated.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time: since,
                ..updated
            };
        }
        None => conditions.push(updated),
    }
}

/// The API group of an owner reference's `apiVersion`.
fn group_of(owner: &OwnerReference) -> &str {
    owner
        .api_version
        .split_once('/')
        .map_or("", |(group, _)| group)
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    replica_sets: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    stateful_sets: Informer<StatefulSet>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: DisruptionConfig,
}

impl Context {
    /// Upstream's controller finders, over the caches (Skiff serves no
    /// ReplicationControllers): a ReplicaSet's Deployment, a ReplicaSet not owned by a Deployment, a
    /// StatefulSet. Other kinds are not supported.
    fn scale_of(&self, namespace: &str, owner: &OwnerReference) -> Option<(String, i32)> {
        let matching = |uid: Option<String>| uid.as_deref() == Some(owner.uid.as_str());
        match (owner.kind.as_str(), group_of(owner)) {
            ("ReplicaSet", "apps" | "extensions") => {
                let rs = self.replica_sets.get(namespace, &owner.name)?;
                if !matching(rs.uid()) {
                    return None;
                }
                let parent = rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true));
                match parent {
                    Some(parent) if parent.kind == "Deployment" => {
                        let deployment = self.deployments.get(namespace, &parent.name)?;
                        (deployment.uid().as_deref() == Some(parent.uid.as_str()))
                            .then(|| (parent.uid.clone(), deployment.spec.replicas.unwrap_or(1)))
                    }
                    _ => Some((owner.uid.clone(), rs.spec.replicas.unwrap_or(1))),
                }
            }
            ("StatefulSet", "apps") => {
                let set = self.stateful_sets.get(namespace, &owner.name)?;
                matching(set.uid()).then(|| (owner.uid.clone(), set.spec.replicas.unwrap_or(1)))
            }
            _ => None,
        }
    }
}

/// Builds the controller on `factory`'s informers; the returned future runs
/// it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: DisruptionConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: DisruptionConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let budgets = factory.informer::<PodDisruptionBudget>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        pods: factory.informer(),
        replica_sets: factory.informer(),
        deployments: factory.informer(),
        stateful_sets: factory.informer(),
        clock,
        config,
    });
    let budget_changes = budgets.subscribe();
    let pod_changes = ctx.pods.subscribe();
    async move {
        budgets.wait_synced().await;
        ctx.pods.wait_synced().await;
        ctx.replica_sets.wait_synced().await;
        ctx.deployments.wait_synced().await;
        ctx.stateful_sets.wait_synced().await;
        let budgets_of_pod = {
            let budgets = budgets.clone();
            move |pod: Arc<Pod>| budgets_selecting(&budgets, &pod)
        };
        let controller = Controller::for_shared_stream(budget_changes, budgets.store())
            .watches_shared_stream(pod_changes, budgets_of_pod);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

/// The budgets of the pod's namespace whose selector picks it.
fn budgets_selecting(
    budgets: &Informer<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    budgets
        .list_namespace(&pod.namespace().unwrap_or_default())
        .iter()
        .filter(|pdb| {
            let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
            pods::selects(&pods::selector(selector), pod.metadata.labels.as_ref())
        })
        .map(|pdb| ObjectRef::from_obj(&**pdb))
        .collect()
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = pdb.namespace().unwrap_or_default();
    let pods = ctx.pods.list_namespace(&namespace);
    let scale_of = |ns: &str, owner: &OwnerReference| ctx.scale_of(ns, owner);
    let plan = plan(&pdb, &pods, &scale_of, ctx.clock.now(), &ctx.config);
    let reference = pdb.object_ref(&());
    for event in &plan.events {
        ctx.recorder
            .record(&reference, event.event_type, event.reason, &event.message);
    }
    for pod in &plan.not_deleted {
        ctx.recorder.record(
            &pod.object_ref(&()),
            EventType::Warning,
            "NotDeleted",
            &format!(
                "Pod was expected by PDB {namespace}/{} to be deleted but it wasn't",
                pdb.name_any()
            ),
        );
    }
    let done = plan
        .recheck_after
        .map_or_else(Action::await_change, Action::requeue);
    if pdb.status.as_ref() == Some(&plan.status) {
        return Ok(done);
    }
    let mut updated = (*pdb).clone();
    updated.status = Some(plan.status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(COMPONENT.into()),
        ..PostParams::default()
    };
    match api.replace_status(&pdb.name_any(), &params, &updated).await {
        Ok(_) => Ok(done),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        // An eviction took a disruption meanwhile: count on the newer budget.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Action::requeue(CONFLICT_RETRY)),
        Err(source) => Err(ReconcileError {
            namespace,
            name: pdb.name_any(),
            source,
        }),
    }
}
