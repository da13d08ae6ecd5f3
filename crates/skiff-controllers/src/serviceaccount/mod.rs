//! What every namespace is given: the `default` ServiceAccount (upstream's
//! serviceaccount controller) and the `kube-root-ca.crt` ConfigMap holding
//! the cluster CA (upstream's root CA certificate publisher), so that pods
//! can run as `default` and verify the API server from any namespace.
//!
//! Both are per-namespace reconcilers over the Namespace informer, woken
//! also by changes of the objects they maintain: a deleted `default`
//! ServiceAccount is created again, and a `kube-root-ca.crt` that is
//! deleted or edited is created again or reset. Namespaces that are being
//! deleted are left alone, as nothing can be created in them.
//!
//! [`missing_service_accounts`] and [`root_ca_plan`] are the pure
//! decisions; [`start`] and [`start_root_ca_publisher`] wire the IO.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::endpointslice::api_error;
use crate::informer::{Informer, InformerFactory};
use crate::runtime::run_controller;

#[cfg(test)]
mod tests;

/// The name of the ConfigMap holding the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The key of the CA bundle in [`ROOT_CA_CONFIGMAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";
/// The annotation describing what [`ROOT_CA_CONFIGMAP`] is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's value of [`DESCRIPTION_ANNOTATION`], which clients may show.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
     when using internal endpoints such as the internal service IP or kubernetes.default.svc. \
     No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The name of the ServiceAccount controller.
const SERVICE_ACCOUNT_COMPONENT: &str = "serviceaccount-controller";
/// The name of the root CA publisher.
const ROOT_CA_COMPONENT: &str = "root-ca-cert-publisher";

/// How soon a namespace is looked at again when the cache lags a write.
const CACHE_RECHECK: Duration = Duration::from_secs(1);

/// The ServiceAccounts every namespace gets, as upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountConfig {
    /// Their names.
    pub service_accounts: Vec<String>,
}

impl Default for ServiceAccountConfig {
    fn default() -> Self {
        Self {
            service_accounts: vec!["default".into()],
        }
    }
}

/// The CA the publisher hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCaConfig {
    /// The cluster CA certificate(s), PEM encoded.
    pub ca_pem: String,
}

/// A write to the API that failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {namespace}/{name}: {source}")]
pub struct ServiceAccountError {
    action: &'static str,
    kind: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// The namespace is Active and not being deleted.
pub fn is_active(namespace: &Namespace) -> bool {
    let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref());
    namespace.metadata.deletion_timestamp.is_none() && matches!(phase, None | Some("Active"))
}

/// The ServiceAccounts to create in `namespace`: those of `wanted` for which
/// `exists(name)` is false, none in a namespace that is not active.
pub fn missing_service_accounts(
    namespace: &Namespace,
    wanted: &[String],
    exists: impl Fn(&str) -> bool,
) -> Vec<ServiceAccount> {
    if !is_active(namespace) {
        return Vec::new();
    }
    wanted
        .iter()
        .filter(|name| !exists(name))
        .map(|name| ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.name_any()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        })
        .collect()
}

/// What to write for a namespace's root CA ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub enum RootCaPlan {
    /// It is in place (or the namespace is not active).
    Keep,
    /// It is missing: create this.
    Create(ConfigMap),
    /// It was edited: replace it with this (resourceVersion kept).
    Update(ConfigMap),
}

/// Compares the namespace's `kube-root-ca.crt` with `ca_pem`. Its data must
/// be exactly the CA and the description annotation set; other metadata
/// (labels, other annotations) is the user's and kept.
pub fn root_ca_plan(
    namespace: &Namespace,
    current: Option<&ConfigMap>,
    ca_pem: &str,
) -> RootCaPlan {
    if !is_active(namespace) {
        return RootCaPlan::Keep;
    }
    let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), ca_pem.to_string())]);
    let Some(current) = current else {
        return RootCaPlan::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA_CONFIGMAP.into()),
                namespace: Some(namespace.name_any()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        });
    };
    let described = current
        .annotations()
        .get(DESCRIPTION_ANNOTATION)
        .is_some_and(|d| !d.is_empty());
    if current.data.as_ref() == Some(&data) && described {
        return RootCaPlan::Keep;
    }
    let mut reset = current.clone();
    reset.data = Some(data);
    reset
        .annotations_mut()
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    RootCaPlan::Update(reset)
}

struct ServiceAccountContext {
    client: Client,
    service_accounts: Informer<ServiceAccount>,
    config: ServiceAccountConfig,
}

/// Builds the ServiceAccount controller on `factory`'s informers
/// (Namespaces, ServiceAccounts); the returned future runs it, once the
/// caches have synced, until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: ServiceAccountConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let namespaces = factory.informer::<Namespace>();
    let service_accounts = factory.informer::<ServiceAccount>();
    let wanted = config.service_accounts.clone();
    let ctx = Arc::new(ServiceAccountContext {
        client,
        service_accounts: service_accounts.clone(),
        config,
    });
    let namespace_changes = namespaces.subscribe();
    let account_changes = service_accounts.subscribe();
    async move {
        namespaces.wait_synced().await;
        service_accounts.wait_synced().await;
        let controller = Controller::for_shared_stream(namespace_changes, namespaces.store())
            .watches_shared_stream(account_changes, move |account| {
                wanted
                    .contains(&account.name_any())
                    .then(|| namespace_of(&*account))
            });
        run_controller(
            SERVICE_ACCOUNT_COMPONENT,
            controller,
            ctx,
            reconcile_service_accounts,
            shutdown,
        )
        .await;
    }
}

fn namespace_of<K: ResourceExt>(obj: &K) -> ObjectRef<Namespace> {
    ObjectRef::new(&obj.namespace().unwrap_or_default())
}

/// A create that the namespace's state made pointless: the object exists
/// already, or the namespace is gone or going.
fn needless_create(error: &kube::Error) -> bool {
    api_error::has_code(error, 409)
        || api_error::has_code(error, 404)
        || api_error::namespace_terminating(error)
}

async fn reconcile_service_accounts(
    namespace: Arc<Namespace>,
    ctx: Arc<ServiceAccountContext>,
) -> Result<Action, ServiceAccountError> {
    let name = namespace.name_any();
    let missing = missing_service_accounts(&namespace, &ctx.config.service_accounts, |account| {
        ctx.service_accounts.get(&name, account).is_some()
    });
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let mut failure = None;
    for account in missing {
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(error) if needless_create(&error) => {}
            Err(source) => {
                failure.get_or_insert(ServiceAccountError {
                    action: "create",
                    kind: "ServiceAccount",
                    namespace: name.clone(),
                    name: account.name_any(),
                    source,
                });
            }
        }
    }
    failure.map_or(Ok(Action::await_change()), Err)
}

struct RootCaContext {
    client: Client,
    config_maps: Informer<ConfigMap>,
    config: RootCaConfig,
}

/// Builds the root CA publisher on `factory`'s informers (Namespaces,
/// ConfigMaps); the returned future runs it, once the caches have synced,
/// until `shutdown`.
pub fn start_root_ca_publisher(
    factory: &mut InformerFactory,
    client: Client,
    config: RootCaConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let namespaces = factory.informer::<Namespace>();
    let config_maps = factory.informer::<ConfigMap>();
    let ctx = Arc::new(RootCaContext {
        client,
        config_maps: config_maps.clone(),
        config,
    });
    let namespace_changes = namespaces.subscribe();
    let config_map_changes = config_maps.subscribe();
    async move {
        namespaces.wait_synced().await;
        config_maps.wait_synced().await;
        let controller = Controller::for_shared_stream(namespace_changes, namespaces.store())
            .watches_shared_stream(config_map_changes, |config_map| {
                (config_map.name_any() == ROOT_CA_CONFIGMAP).then(|| namespace_of(&*config_map))
            });
        run_controller(
            ROOT_CA_COMPONENT,
            controller,
            ctx,
            reconcile_root_ca,
            shutdown,
        )
        .await;
    }
}

async fn reconcile_root_ca(
    namespace: Arc<Namespace>,
    ctx: Arc<RootCaContext>,
) -> Result<Action, ServiceAccountError> {
    let name = namespace.name_any();
    let current = ctx.config_maps.get(&name, ROOT_CA_CONFIGMAP);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let (action, result) = match root_ca_plan(&namespace, current.as_deref(), &ctx.config.ca_pem) {
        RootCaPlan::Keep => return Ok(Action::await_change()),
        RootCaPlan::Create(config_map) => {
            let result = api.create(&PostParams::default(), &config_map).await;
            match result {
                Err(error) if api_error::has_code(&error, 409) => {
                    return Ok(Action::requeue(CACHE_RECHECK));
                }
                Err(error) if needless_create(&error) => return Ok(Action::await_change()),
                other => ("create", other),
            }
        }
        RootCaPlan::Update(config_map) => {
            let result = api
                .replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &config_map)
                .await;
            match result {
                Err(error) if api_error::is_stale(&error) => {
                    return Ok(Action::requeue(CACHE_RECHECK));
                }
                other => ("update", other),
            }
        }
    };
    match result {
        Ok(_) => Ok(Action::await_change()),
        Err(source) => Err(ServiceAccountError {
            action,
            kind: "ConfigMap",
            namespace: name,
            name: ROOT_CA_CONFIGMAP.into(),
            source,
        }),
    }
}
