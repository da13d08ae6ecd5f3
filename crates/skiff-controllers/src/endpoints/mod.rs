//! Endpoints: the legacy v1 Endpoints object of every Service with a
//! selector, as upstream's endpoint controller keeps it. EndpointSlices
//! superseded it, but `kubectl describe service` still prints its
//! "Endpoints:" line from it, and older clients read it.
//!
//! One object per Service, named like it, listing the addresses of the pods
//! the selector matches (terminal pods and pods without an IP excluded) in
//! the Service's primary IP family: ready pods under `addresses`, the others
//! under `notReadyAddresses` (all under `addresses` with
//! `publishNotReadyAddresses`, which also keeps terminating pods), with the
//! ports each pod resolves. It carries the Service's labels plus
//! `endpoints.kubernetes.io/managed-by: endpoint-controller`, the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation, and at
//! most 1000 addresses: beyond that it is truncated, ready addresses first,
//! and annotated `endpoints.kubernetes.io/over-capacity: truncated`.
//!
//! Endpoints have no owner reference (upstream never set one), so this
//! controller deletes them itself: a second, small controller over the
//! Endpoints deletes one whose Service is gone if it saw the Service go, or
//! if it carries the managed-by label (which also clears leftovers from a
//! time the controller was down). `default/kubernetes` belongs to the API
//! server and is never touched.
//!
//! [`subsets::plan`] is the pure decision; [`start`] wires the IO.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::endpointslice::api_error;
use crate::endpointslice::endpoint::{managed_selector, selects, trigger_time};
use crate::endpointslice::membership::ServiceMembership;
use crate::informer::{Informer, InformerFactory};
use crate::runtime::run_controller;

pub mod subsets;

#[cfg(test)]
mod tests;

use subsets::{CONTROLLER_NAME, EndpointsPlan, LABEL_MANAGED_BY};

/// The component name on events.
const COMPONENT: &str = "endpoint-controller";

/// How soon a Service is looked at again when the cache lags a write.
const CACHE_RECHECK: Duration = Duration::from_secs(1);

/// Tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointsConfig {
    /// How often every Service is recomputed even without events (see
    /// [`crate::endpointslice::EndpointSliceConfig::resync_period`]).
    pub resync_period: Duration,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self {
            resync_period: Duration::from_secs(10 * 60),
        }
    }
}

/// A write to the API that failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{action} Endpoints {namespace}/{name}: {source}")]
pub struct EndpointsError {
    action: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    /// Services seen deleted whose Endpoints are still cached.
    deleted: Mutex<HashSet<(String, String)>>,
    recorder: EventRecorder,
    config: EndpointsConfig,
}

impl Context {
    /// Notes a Service change; for a deleted Service whose Endpoints remain,
    /// returns them for cleanup.
    fn service_changed(&self, service: &Service) -> Option<ObjectRef<Endpoints>> {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let mut deleted = self.deleted.lock().expect("deleted services poisoned");
        let key = (namespace, name);
        if self.services.get(&key.0, &key.1).is_some() {
            deleted.remove(&key);
            return None;
        }
        self.endpoints.get(&key.0, &key.1)?;
        let target = ObjectRef::new(&key.1).within(&key.0);
        deleted.insert(key);
        Some(target)
    }
}

/// Builds the controller on `factory`'s informers (Services, Pods,
/// Endpoints); the returned future runs it, once the caches have synced,
/// until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: EndpointsConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let services = factory.informer::<Service>();
    let pods = factory.informer::<Pod>();
    let endpoints = factory.informer::<Endpoints>();
    let membership = Arc::new(ServiceMembership::new(services.clone(), pods.clone()));
    let resync_period = config.resync_period;
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        services: services.clone(),
        pods: pods.clone(),
        endpoints: endpoints.clone(),
        deleted: Mutex::default(),
        config,
    });
    let service_changes = services.subscribe();
    let pod_changes = pods.subscribe();
    let endpoints_changes = endpoints.subscribe();
    let cleanup_service_changes = services.subscribe();
    let cleanup_endpoints_changes = endpoints.subscribe();
    async move {
        services.wait_synced().await;
        pods.wait_synced().await;
        endpoints.wait_synced().await;
        let pod_membership = Arc::clone(&membership);
        let sync = Controller::for_shared_stream(service_changes, services.store())
            .watches_shared_stream(pod_changes, move |pod| {
                pod_membership.services_to_sync(&pod)
            })
            .watches_shared_stream(endpoints_changes, |endpoints| {
                Some(
                    ObjectRef::<Service>::new(&endpoints.name_any())
                        .within(&endpoints.namespace().unwrap_or_default()),
                )
            });
        let cleanup_ctx = Arc::clone(&ctx);
        let cleanup = Controller::for_shared_stream(cleanup_endpoints_changes, endpoints.store())
            .watches_shared_stream(cleanup_service_changes, move |service| {
                cleanup_ctx.service_changed(&service)
            });
        let controllers = async {
            tokio::join!(
                run_controller(
                    COMPONENT,
                    sync,
                    Arc::clone(&ctx),
                    reconcile,
                    shutdown.clone()
                ),
                run_controller(COMPONENT, cleanup, Arc::clone(&ctx), clean_up, shutdown),
            );
        };
        tokio::select! {
            () = controllers => {}
            () = membership.prune_every(resync_period) => {}
        }
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, EndpointsError> {
    let Some(selector) = managed_selector(&service) else {
        return Ok(Action::await_change());
    };
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_namespace(&namespace)
        .into_iter()
        .filter(|pod| selects(selector, pod.metadata.labels.as_ref()))
        .collect();
    let current = ctx.endpoints.get(&namespace, &name);
    let plan = subsets::plan(
        &service,
        &pods,
        current.as_deref(),
        trigger_time(&service, &pods),
    );
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let (action, endpoints, result) = match plan {
        EndpointsPlan::UpToDate => return Ok(Action::requeue(ctx.config.resync_period)),
        EndpointsPlan::Create(endpoints) => {
            let result = api.create(&PostParams::default(), &endpoints).await;
            ("create", endpoints, result)
        }
        EndpointsPlan::Update(endpoints) => {
            let result = api.replace(&name, &PostParams::default(), &endpoints).await;
            ("update", endpoints, result)
        }
    };
    let Err(source) = result else {
        return Ok(Action::requeue(ctx.config.resync_period));
    };
    if api_error::namespace_terminating(&source) {
        return Ok(Action::await_change());
    }
    if api_error::is_stale(&source) {
        return Ok(Action::requeue(CACHE_RECHECK));
    }
    let detail = api_error::message(&source);
    let (reason, message) = if action == "create" {
        (
            "FailedToCreateEndpoint",
            format!("Failed to create endpoint for service {namespace}/{name}: {detail}"),
        )
    } else {
        (
            "FailedToUpdateEndpoint",
            format!("Failed to update endpoint {namespace}/{name}: {detail}"),
        )
    };
    ctx.recorder.record(
        &endpoints.object_ref(&()),
        EventType::Warning,
        reason,
        &message,
    );
    Err(EndpointsError {
        action,
        namespace,
        name,
        source,
    })
}

/// Deletes Endpoints whose Service is gone (see the module docs for which).
async fn clean_up(endpoints: Arc<Endpoints>, ctx: Arc<Context>) -> Result<Action, EndpointsError> {
    let namespace = endpoints.namespace().unwrap_or_default();
    let name = endpoints.name_any();
    let key = (namespace, name);
    if (key.0.as_str(), key.1.as_str()) == ("default", "kubernetes")
        || ctx.services.get(&key.0, &key.1).is_some()
    {
        return Ok(Action::await_change());
    }
    let seen_deleted = ctx
        .deleted
        .lock()
        .expect("deleted services poisoned")
        .contains(&key);
    let managed =
        endpoints.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME);
    if !seen_deleted && !managed {
        return Ok(Action::await_change());
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.0);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: endpoints.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&key.1, &params).await {
        Ok(_) => {}
        Err(error) if api_error::is_stale(&error) => {}
        Err(source) => {
            return Err(EndpointsError {
                action: "delete",
                namespace: key.0,
                name: key.1,
                source,
            });
        }
    }
    ctx.deleted
        .lock()
        .expect("deleted services poisoned")
        .remove(&key);
    Ok(Action::await_change())
}
