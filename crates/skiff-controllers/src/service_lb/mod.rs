//! ServiceLB: an address for every `type: LoadBalancer` Service, from the
//! nodes themselves, as k3s's servicelb gives one (so that such a Service
//! does not stay `<pending>` forever on a cluster without a cloud).
//!
//! This controller only publishes the addresses. Carrying the traffic is
//! the service proxy's job: as kube-proxy does for `ipMode: VIP`, it answers
//! a LoadBalancer Service's ingress IPs on the Service's ports (and its
//! NodePorts) on every node, so no per-Service pods are needed where k3s
//! runs a `svclb-*` DaemonSet of port forwarders.
//!
//! A Service is served when it is `type: LoadBalancer` without a
//! `loadBalancerClass` (a class names another implementation, which is left
//! alone). Its ingress lists, with `ipMode: VIP`, the addresses of every
//! node that is Ready and schedulable and not labelled
//! `node.kubernetes.io/exclude-from-external-load-balancers`: their
//! ExternalIPs if any such node has one, else their InternalIPs, in the
//! order of the Service's `ipFamilies` and sorted within each. As in k3s:
//!
//! - once any node carries `svccontroller.k3s.cattle.io/enablelb`, only the
//!   nodes where it is `true` serve, and a Service labelled
//!   `svccontroller.k3s.cattle.io/lbpool=<pool>` only the nodes of that pool;
//! - with `externalTrafficPolicy: Local`, only nodes hosting a ready Pod
//!   endpoint serve (the others drop the traffic).
//!
//! A Service that stops being a LoadBalancer has its addresses removed. The
//! status is patched only when it changes, with k3s's events
//! (`UpdatedLoadBalancer`, `UnAvailableLoadBalancer`) and upstream's
//! `DeletedLoadBalancer`. No finalizer is added: nothing outside the
//! Service needs cleaning up when it goes.
//!
//! [`plan::plan`] is the pure decision; [`start`] wires the IO.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::endpointslice::endpoint::LABEL_SERVICE_NAME;
use crate::informer::{Informer, InformerFactory};
use crate::runtime::run_controller;

pub mod plan;

#[cfg(test)]
mod tests;

use plan::{StatusUpdate, requests_only_local_traffic};

/// The component name on events and the field manager of writes.
const COMPONENT: &str = "service-lb-controller";

/// Whether the controller runs (k3s's `--disable=servicelb` turns it off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLbConfig {
    /// Run the controller.
    pub enabled: bool,
}

impl Default for ServiceLbConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A status write that failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("update load balancer status of Service {namespace}/{name}: {source}")]
pub struct ServiceLbError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
    recorder: EventRecorder,
}

/// Builds the controller on `factory`'s informers (Services, Nodes,
/// EndpointSlices); the returned future runs it, once the caches have
/// synced, until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let services = factory.informer::<Service>();
    let nodes = factory.informer::<Node>();
    let slices = factory.informer::<EndpointSlice>();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        nodes: nodes.clone(),
        slices: slices.clone(),
    });
    let service_changes = services.subscribe();
    let node_changes = nodes.subscribe();
    let slice_changes = slices.subscribe();
    async move {
        services.wait_synced().await;
        nodes.wait_synced().await;
        slices.wait_synced().await;
        // Any node change may move every LoadBalancer's addresses.
        let all_services = services.clone();
        let local_services = services.clone();
        let controller = Controller::for_shared_stream(service_changes, services.store())
            .watches_shared_stream(node_changes, move |_node| {
                all_services
                    .list()
                    .into_iter()
                    .filter(|s| plan::wants_load_balancer(s))
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            })
            .watches_shared_stream(slice_changes, move |slice| {
                local_service_of(&local_services, &slice)
            });
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

/// The LoadBalancer Service with `externalTrafficPolicy: Local` the slice
/// belongs to, if any (only those read EndpointSlices).
fn local_service_of(
    services: &Informer<Service>,
    slice: &EndpointSlice,
) -> Option<ObjectRef<Service>> {
    let namespace = slice.namespace()?;
    let name = slice.labels().get(LABEL_SERVICE_NAME)?;
    let service = services.get(&namespace, name)?;
    (plan::wants_load_balancer(&service) && requests_only_local_traffic(&service))
        .then(|| ObjectRef::from_obj(&*service))
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ServiceLbError> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let slices: Vec<Arc<EndpointSlice>> = if requests_only_local_traffic(&service) {
        ctx.slices
            .list_namespace(&namespace)
            .into_iter()
            .filter(|s| s.labels().get(LABEL_SERVICE_NAME) == Some(&name))
            .collect()
    } else {
        Vec::new()
    };
    let Some(update) = plan::plan(&service, &ctx.nodes.list(), &slices) else {
        return Ok(Action::await_change());
    };
    if !write_status(&ctx.client, &namespace, &name, &update).await? {
        return Ok(Action::await_change());
    }
    ctx.recorder.record(
        &service.object_ref(&()),
        update.event.event_type(),
        update.event.reason(),
        &update.event.message(),
    );
    Ok(Action::await_change())
}

/// Patches the Service's ingress; `false` if the Service is gone.
async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    update: &StatusUpdate,
) -> Result<bool, ServiceLbError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    // A merge patch replaces the list whole; null removes it.
    let ingress = if update.ingress.is_empty() {
        serde_json::Value::Null
    } else {
        json!(update.ingress)
    };
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    let params = PatchParams {
        field_manager: Some(COMPONENT.into()),
        ..PatchParams::default()
    };
    match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(ServiceLbError {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}
