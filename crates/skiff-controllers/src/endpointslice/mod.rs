//! EndpointSlice: publishes the endpoints of every Service with a selector
//! as `discovery.k8s.io/v1` EndpointSlices, as upstream's endpointslice
//! controller does. kube-proxy's equivalent, DNS and ingress read these.
//!
//! Per Service: slices named `{service}-{5 random}` (`generateName`
//! `{service}-`), owned by the Service (the garbage collector removes them
//! with it), labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`,
//! one address type per IP family of the Service, at most
//! [`EndpointSliceConfig::max_endpoints_per_slice`] endpoints each. Every pod
//! the selector matches that has an IP and is not Succeeded/Failed is an
//! endpoint, terminating ones included, with conditions `ready` (serving and
//! not terminating, or always with `publishNotReadyAddresses`), `serving`
//! (the Ready condition) and `terminating`, its node and the node's zone, a
//! reference to the pod, and its hostname when `spec.hostname` and
//! `spec.subdomain` name this Service. Ports resolve per pod: a named
//! `targetPort` is looked up among the pod's container ports. Services
//! without a selector, ExternalName Services and `default/kubernetes` (the
//! API server keeps its own) are left alone.
//!
//! [`reconciler::plan`] is the pure diff; [`start`] wires the IO. Pod events
//! reach only the Services of the pod's namespace that select it (see
//! `membership`), so a pod change never rescans the cluster.
//!
//! The informer cache may lag the controller's own writes. Creates and
//! deletes are tracked as [`Expectations`] and a Service with writes still
//! invisible waits for them; updates carry the cached resourceVersion, so a
//! stale one is refused (409) and the Service is looked at again.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::informer::{Informer, InformerFactory};
use crate::pods::generate_name;
use crate::runtime::run_controller;

pub(crate) mod api_error;
pub mod endpoint;
pub(crate) mod membership;
pub mod reconciler;

#[cfg(test)]
mod tests;

use endpoint::{
    CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, managed_selector, selects,
    set_trigger_time, trigger_time,
};
use membership::ServiceMembership;
use reconciler::SlicePlan;

/// The component name on events.
const COMPONENT: &str = "endpointslice-controller";

/// How soon a Service is looked at again when the cache lags its writes.
const CACHE_RECHECK: Duration = Duration::from_secs(1);

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSliceConfig {
    /// The most endpoints in one slice (`--max-endpoints-per-slice`).
    pub max_endpoints_per_slice: usize,
    /// How often every Service is recomputed even without events. Upstream
    /// relies on informer resyncs; here it also repairs a Service whose pod
    /// deletion a lagging subscriber missed.
    pub resync_period: Duration,
}

impl Default for EndpointSliceConfig {
    fn default() -> Self {
        Self {
            max_endpoints_per_slice: 100,
            resync_period: Duration::from_secs(10 * 60),
        }
    }
}

/// Why a Service's slices could not be brought up to date. Every variant is
/// retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    /// A write to the API failed.
    #[error("{action} EndpointSlice {slice} for Service {service}: {source}")]
    Write {
        /// `create`, `update` or `delete`.
        action: &'static str,
        /// The slice's name.
        slice: String,
        /// `namespace/name` of the Service.
        service: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Pods run on Nodes the cache does not know; they were left out.
    #[error("skipped pods of Service {service}: Nodes {nodes} not found")]
    NodesNotFound {
        /// `namespace/name` of the Service.
        service: String,
        /// The missing Nodes, comma-separated.
        nodes: String,
    },
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
    expectations: Expectations,
    recorder: EventRecorder,
    config: EndpointSliceConfig,
}

/// Builds the controller on `factory`'s informers (Services, Pods, Nodes,
/// EndpointSlices); the returned future runs it, once the caches have
/// synced, until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: EndpointSliceConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let services = factory.informer::<Service>();
    let pods = factory.informer::<Pod>();
    let nodes = factory.informer::<Node>();
    let slices = factory.informer::<EndpointSlice>();
    let membership = Arc::new(ServiceMembership::new(services.clone(), pods.clone()));
    let resync_period = config.resync_period;
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        pods: pods.clone(),
        nodes: nodes.clone(),
        slices: slices.clone(),
        expectations: Expectations::default(),
        config,
    });
    let service_changes = services.subscribe();
    let pod_changes = pods.subscribe();
    let slice_changes = slices.subscribe();
    async move {
        services.wait_synced().await;
        pods.wait_synced().await;
        nodes.wait_synced().await;
        slices.wait_synced().await;
        let pod_membership = Arc::clone(&membership);
        let controller = Controller::for_shared_stream(service_changes, services.store())
            .watches_shared_stream(pod_changes, move |pod| {
                pod_membership.services_to_sync(&pod)
            })
            .watches_shared_stream(slice_changes, |slice| service_of_slice(&slice));
        tokio::select! {
            () = run_controller(COMPONENT, controller, ctx, reconcile, shutdown) => {}
            () = membership.prune_every(resync_period) => {}
        }
    }
}

/// The Service a slice managed by this controller belongs to.
fn service_of_slice(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let labels = slice.labels();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let service = labels.get(LABEL_SERVICE_NAME)?;
    Some(ObjectRef::new(service).within(&slice.namespace().unwrap_or_default()))
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, EndpointSliceError> {
    let Some(selector) = managed_selector(&service) else {
        return Ok(Action::await_change());
    };
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let uid = service.uid().unwrap_or_default();
    let in_flight = ctx
        .expectations
        .settle(&uid, |slice| ctx.slices.get(&namespace, slice).is_some());
    if !in_flight.creates.is_empty() || !in_flight.deletes.is_empty() {
        return Ok(Action::requeue(CACHE_RECHECK));
    }
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_namespace(&namespace)
        .into_iter()
        .filter(|pod| selects(selector, pod.metadata.labels.as_ref()))
        .collect();
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .list_namespace(&namespace)
        .into_iter()
        .filter(|slice| {
            let labels = slice.labels();
            labels.get(LABEL_SERVICE_NAME) == Some(&name)
                && labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
                && slice.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let plan = reconciler::plan(
        &service,
        &pods,
        &|node| ctx.nodes.get("", node),
        &existing,
        ctx.config.max_endpoints_per_slice,
    );
    let missing_nodes = plan.missing_nodes.clone();
    let written = write(&service, &ctx, plan, trigger_time(&service, &pods)).await;
    let error = match written {
        Ok(Written::Stale) => return Ok(Action::requeue(CACHE_RECHECK)),
        Ok(Written::Done) if missing_nodes.is_empty() => {
            return Ok(Action::requeue(ctx.config.resync_period));
        }
        Ok(Written::Done) => EndpointSliceError::NodesNotFound {
            service: format!("{namespace}/{name}"),
            nodes: missing_nodes.into_iter().collect::<Vec<_>>().join(", "),
        },
        Err(error) => error,
    };
    let detail = match &error {
        EndpointSliceError::Write { source, .. } => api_error::message(source),
        other => other.to_string(),
    };
    ctx.recorder.record(
        &service.object_ref(&()),
        EventType::Warning,
        "FailedToUpdateEndpointSlices",
        &format!("Error updating Endpoint Slices for Service {namespace}/{name}: {detail}"),
    );
    Err(error)
}

/// How the writes of a plan went.
enum Written {
    /// Everything was written (or nothing more can be, in a namespace being
    /// deleted).
    Done,
    /// A write was refused because the cache is out of date.
    Stale,
}

/// Performs `plan`: creates, then updates, then deletes, as upstream orders
/// them, stopping at the first failure.
async fn write(
    service: &Service,
    ctx: &Context,
    plan: SlicePlan,
    trigger: Option<Timestamp>,
) -> Result<Written, EndpointSliceError> {
    let namespace = service.namespace().unwrap_or_default();
    let uid = service.uid().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let failed = |action, slice: &str, source| EndpointSliceError::Write {
        action,
        slice: slice.to_string(),
        service: format!("{namespace}/{}", service.name_any()),
        source,
    };
    for mut slice in plan.create {
        let prefix = slice.metadata.generate_name.clone().unwrap_or_default();
        let name = generate_name(&prefix);
        slice.metadata.name = Some(name.clone());
        set_trigger_time(&mut slice.metadata, trigger);
        ctx.expectations.expect_create(&uid, &name);
        if let Err(error) = api.create(&PostParams::default(), &slice).await {
            ctx.expectations.write_failed(&uid, &name);
            if api_error::namespace_terminating(&error) {
                return Ok(Written::Done);
            }
            if api_error::is_stale(&error) {
                return Ok(Written::Stale);
            }
            return Err(failed("create", &name, error));
        }
    }
    for mut slice in plan.update {
        let name = slice.name_any();
        set_trigger_time(&mut slice.metadata, trigger);
        if let Err(error) = api.replace(&name, &PostParams::default(), &slice).await {
            if api_error::is_stale(&error) {
                return Ok(Written::Stale);
            }
            return Err(failed("update", &name, error));
        }
    }
    for slice in plan.delete {
        let name = slice.name_any();
        ctx.expectations.expect_delete(&uid, &name);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: slice.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(error) if api_error::has_code(&error, 404) => {}
            Err(error) => {
                ctx.expectations.write_failed(&uid, &name);
                if api_error::is_stale(&error) {
                    return Ok(Written::Stale);
                }
                return Err(failed("delete", &name, error));
            }
        }
    }
    Ok(Written::Done)
}
