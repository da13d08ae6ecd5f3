//! ResourceQuota: keeps each quota's `status.hard` equal to its `spec.hard`
//! and its `status.used` equal to what the namespace's objects really use.
//!
//! As upstream's resourcequota controller. The API server's quota admission
//! charges every create to `status.used` as it admits it, so the totals are
//! current between recounts; this controller recounts from the objects
//! themselves ([`desired_status`], measured with the same
//! [`skiff_api::quota`] evaluators admission uses), which is what gives quota
//! back: a deleted pod, or one that finished, stops being charged only when a
//! recount sees it gone. It also fills in the status of a new quota, which
//! admission needs before it enforces anything ("status unknown").
//!
//! A quota is recounted when its `spec.hard` differs from its `status.hard`
//! (new or edited), when an object it counts is deleted or a pod finishes,
//! and every `resync_period` (upstream's `--resource-quota-sync-period`,
//! 5 minutes). It is not recounted when admission charges it: a recount then
//! could miss an object admitted but not yet visible in the caches and hand
//! its charge back, letting the next create overshoot. The status is written
//! with the quota's resourceVersion, so a recount never overwrites a charge
//! it has not seen; it retries on the newer quota instead.
//!
//! Pods, services, claims, config maps, secrets and quotas are read from the shared informers; other `count/<resource>.<group>`
//! objects are listed (metadata only) at each recount, and their deletions
//! are noticed at the next resync.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;
use skiff_api::quota::{self as q, Evaluator, ResourceList};
use tokio_util::sync::CancellationToken;

use crate::informer::{Informed, Informer, InformerFactory};
use crate::runtime::{Clock, SystemClock, run_controller};

/// The component name in logs and the field manager of writes.
const COMPONENT: &str = "resourcequota-controller";

/// How soon a recount whose write lost a race with admission runs again.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);

/// Core types counted from the shared informers.
const INFORMED: &[&str] = &[
    "pods",
    "services",
    "persistentvolumeclaims",
    "configmaps",
    "secrets",
    "resourcequotas",
];

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceQuotaConfig {
    /// How often every quota is recounted regardless of events.
    pub resync_period: Duration,
}

impl Default for ResourceQuotaConfig {
    fn default() -> Self {
        Self {
            resync_period: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a recount failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Listing objects of a counted type failed.
    #[error("list {resource} in {namespace}")]
    List {
        /// `plural.group` of the type.
        resource: String,
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Writing the quota's status failed.
    #[error("update status of quota {namespace}/{name}")]
    WriteStatus {
        /// The namespace.
        namespace: String,
        /// The quota.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// A type whose objects count toward quota: `(group, plural)`.
pub type CountedType = (String, String);

/// The types a quota with these hard resources counts: those whose
/// evaluator tracks at least one of them. `count/<plural>.<group>` names
/// any served type; the core types are also counted under their own names
/// (`pods`, `requests.cpu`, `services.nodeports`, `configmaps`, ...).
pub fn counted_types<'a>(hard: impl IntoIterator<Item = &'a str>) -> Vec<CountedType> {
    let hard: Vec<&str> = hard.into_iter().collect();
    let mut candidates: BTreeSet<CountedType> = INFORMED
        .iter()
        .map(|plural| (String::new(), (*plural).to_string()))
        .collect();
    for name in &hard {
        if let Some(resource) = name.strip_prefix("count/") {
            let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
            candidates.insert((group.to_string(), plural.to_string()));
        }
    }
    candidates
        .into_iter()
        .filter(|(group, plural)| {
            Evaluator::for_resource(group, plural)
                .is_some_and(|e| !e.matching_resources(hard.iter().copied()).is_empty())
        })
        .collect()
}

/// The status `quota` should have: `hard` from its spec, and `used`
/// recounted from `objects` (the JSON objects of each counted type in its
/// namespace; types missing from the map keep their previous usage), limited
/// to the hard resources.
pub fn desired_status(
    quota: &ResourceQuota,
    objects: &BTreeMap<CountedType, Vec<Value>>,
    now: Timestamp,
) -> ResourceQuotaStatus {
    let spec = quota.spec.clone().unwrap_or_default();
    let hard_quantities = spec.hard.clone().unwrap_or_default();
    let hard: Vec<&str> = hard_quantities.keys().map(String::as_str).collect();
    let scopes = serde_json::to_value(quota)
        .map(|v| q::quota_scopes(&v))
        .unwrap_or_default();
    let previous = quota
        .status
        .as_ref()
        .and_then(|s| s.used.as_ref())
        .map(quantities_to_list)
        .unwrap_or_default();
    let mut recounted = ResourceList::new();
    for ((group, plural), items) in objects {
        let Some(evaluator) = Evaluator::for_resource(group, plural) else {
            continue;
        };
        let tracked = evaluator.matching_resources(hard.iter().copied());
        if tracked.is_empty() {
            continue;
        }
        let mut usage: ResourceList = tracked
            .iter()
            .map(|name| (name.clone(), q::Amount::zero()))
            .collect();
        for item in items
            .iter()
            .filter(|item| evaluator.matches_scopes(&scopes, item))
        {
            usage = q::add(&usage, &evaluator.usage(item, now));
        }
        recounted = q::add(
            &recounted,
            &q::mask(&usage, tracked.iter().map(String::as_str)),
        );
    }
    let mut used = previous;
    used.extend(recounted);
    let used = q::mask(&used, hard.iter().copied());
    ResourceQuotaStatus {
        hard: spec.hard,
        used: Some(list_to_quantities(&used)),
    }
}

/// Whether `quota` needs a recount before admission can rely on it: its
/// status is missing or its `status.hard` is not its `spec.hard`.
pub fn needs_sync(quota: &ResourceQuota) -> bool {
    let spec_hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
    match &quota.status {
        None => true,
        Some(status) => {
            status.used.is_none() || status.hard.as_ref() != spec_hard || {
                let used = status.used.as_ref();
                spec_hard
                    .into_iter()
                    .flatten()
                    .any(|(name, _)| !used.is_some_and(|u| u.contains_key(name)))
            }
        }
    }
}

/// Whether two statuses agree, comparing amounts by value.
fn same_status(a: Option<&ResourceQuotaStatus>, b: &ResourceQuotaStatus) -> bool {
    let Some(a) = a else { return false };
    let used = |s: &ResourceQuotaStatus| s.used.as_ref().map(quantities_to_list);
    a.hard == b.hard && used(a) == used(b)
}

fn quantities_to_list(map: &BTreeMap<String, Quantity>) -> ResourceList {
    map.iter()
        .filter_map(|(k, v)| q::Amount::parse(&v.0).map(|a| (k.clone(), a)))
        .collect()
}

fn list_to_quantities(list: &ResourceList) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(k, v)| (k.clone(), Quantity(v.to_string())))
        .collect()
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    services: Informer<Service>,
    claims: Informer<PersistentVolumeClaim>,
    config_maps: Informer<ConfigMap>,
    secrets: Informer<Secret>,
    quotas: Informer<ResourceQuota>,
    clock: Arc<dyn Clock>,
}

fn as_json<K: Serialize>(items: Vec<Arc<K>>) -> Vec<Value> {
    items
        .iter()
        .filter_map(|item| serde_json::to_value(&**item).ok())
        .collect()
}

impl Context {
    /// The objects of one counted type in `namespace`, or `None` if the
    /// type is not served.
    async fn objects(
        &self,
        (group, plural): &CountedType,
        namespace: &str,
    ) -> Result<Option<Vec<Value>>, ReconcileError> {
        if group.is_empty() {
            let informed = match plural.as_str() {
                "pods" => Some(as_json(self.pods.list_namespace(namespace))),
                "services" => Some(as_json(self.services.list_namespace(namespace))),
                "persistentvolumeclaims" => Some(as_json(self.claims.list_namespace(namespace))),
                "configmaps" => Some(as_json(self.config_maps.list_namespace(namespace))),
                "secrets" => Some(as_json(self.secrets.list_namespace(namespace))),
                "resourcequotas" => Some(as_json(self.quotas.list_namespace(namespace))),
                _ => None,
            };
            if informed.is_some() {
                return Ok(informed);
            }
        }
        let Some(rt) = skiff_api::registry::all()
            .iter()
            .find(|rt| rt.group == group && rt.plural == plural && rt.namespaced())
        else {
            return Ok(None);
        };
        let resource = ApiResource {
            group: rt.group.to_string(),
            version: rt.version.to_string(),
            api_version: rt.api_version(),
            kind: rt.kind.to_string(),
            plural: rt.plural.to_string(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let list = api
            .list_metadata(&ListParams::default())
            .await
            .map_err(|source| ReconcileError::List {
                resource: format!("{plural}.{group}"),
                namespace: namespace.to_string(),
                source,
            })?;
        Ok(Some(
            list.items
                .iter()
                .filter_map(|item| serde_json::to_value(item).ok())
                .collect(),
        ))
    }
}

/// Builds the controller on `factory`'s informers; the returned future runs
/// it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: ResourceQuotaConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock (pods stuck terminating stop being
/// charged once their grace period has passed).
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: ResourceQuotaConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let ctx = Arc::new(Context {
        client,
        pods: factory.informer(),
        services: factory.informer(),
        claims: factory.informer(),
        config_maps: factory.informer(),
        secrets: factory.informer(),
        quotas: factory.informer(),
        clock,
    });
    let quota_changes = ctx.quotas.subscribe();
    let pod_changes = ctx.pods.subscribe();
    let service_changes = ctx.services.subscribe();
    let claim_changes = ctx.claims.subscribe();
    let config_map_changes = ctx.config_maps.subscribe();
    let secret_changes = ctx.secrets.subscribe();
    async move {
        ctx.pods.wait_synced().await;
        ctx.services.wait_synced().await;
        ctx.claims.wait_synced().await;
        ctx.config_maps.wait_synced().await;
        ctx.secrets.wait_synced().await;
        ctx.quotas.wait_synced().await;
        let quota_changes = quota_changes.filter(|quota| futures::future::ready(needs_sync(quota)));
        let pod_gone = {
            let (pods, quotas) = (ctx.pods.clone(), ctx.quotas.clone());
            move |pod: Arc<Pod>| {
                let finished = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                if finished || is_gone(&pods, &*pod) {
                    quotas_of(&quotas, &*pod)
                } else {
                    Vec::new()
                }
            }
        };
        let resync = {
            let period = config.resync_period;
            futures::stream::unfold(tokio::time::interval(period), |mut ticks| async move {
                ticks.tick().await;
                Some(((), ticks))
            })
        };
        let controller = Controller::for_shared_stream(quota_changes, ctx.quotas.store())
            .watches_shared_stream(pod_changes, pod_gone)
            .watches_shared_stream(service_changes, deleted(&ctx.services, &ctx.quotas))
            .watches_shared_stream(claim_changes, deleted(&ctx.claims, &ctx.quotas))
            .watches_shared_stream(config_map_changes, deleted(&ctx.config_maps, &ctx.quotas))
            .watches_shared_stream(secret_changes, deleted(&ctx.secrets, &ctx.quotas))
            .reconcile_all_on(resync);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

/// Whether the informer no longer holds `obj` (the change was a deletion).
fn is_gone<K: Informed>(informer: &Informer<K>, obj: &K) -> bool {
    informer
        .get(&obj.namespace().unwrap_or_default(), &obj.name_any())
        .is_none_or(|current| current.uid() != obj.uid())
}

/// The quotas of the object's namespace.
fn quotas_of<K: Informed>(
    quotas: &Informer<ResourceQuota>,
    obj: &K,
) -> Vec<ObjectRef<ResourceQuota>> {
    quotas
        .list_namespace(&obj.namespace().unwrap_or_default())
        .iter()
        .map(|quota| ObjectRef::from_obj(&**quota))
        .collect()
}

/// Maps a deletion of an object to the quotas of its namespace.
fn deleted<K: Informed>(
    informer: &Informer<K>,
    quotas: &Informer<ResourceQuota>,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<ResourceQuota>> + Send + Sync + 'static + use<K> {
    let (informer, quotas) = (informer.clone(), quotas.clone());
    move |obj| {
        if is_gone(&informer, &*obj) {
            quotas_of(&quotas, &*obj)
        } else {
            Vec::new()
        }
    }
}

async fn reconcile(quota: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if quota.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = quota.namespace().unwrap_or_default();
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .map(|h| h.keys().map(String::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut objects = BTreeMap::new();
    for counted in counted_types(hard) {
        if let Some(items) = ctx.objects(&counted, &namespace).await? {
            objects.insert(counted, items);
        }
    }
    let status = desired_status(&quota, &objects, ctx.clock.now());
    if same_status(quota.status.as_ref(), &status) {
        return Ok(Action::await_change());
    }
    let mut updated = (*quota).clone();
    updated.status = Some(status);
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(COMPONENT.into()),
        ..PostParams::default()
    };
    match api
        .replace_status(&quota.name_any(), &params, &updated)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        // Admission charged the quota meanwhile: recount on the newer one.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Action::requeue(CONFLICT_RETRY)),
        Err(source) => Err(ReconcileError::WriteStatus {
            namespace,
            name: quota.name_any(),
            source,
        }),
    }
}
