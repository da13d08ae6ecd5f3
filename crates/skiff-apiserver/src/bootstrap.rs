//! Objects the API server keeps in place itself: the `kubernetes` Service in
//! `default` (at the first address of the default ServiceCIDR, reserved like
//! any other Service's), with Endpoints and an EndpointSlice pointing at this
//! server.

use std::net::SocketAddr;

use axum::http::StatusCode;
use serde_json::{Value, json};
use skiff_api::registry;

use crate::error::ApiResult;
use crate::rest::{ObjectRef, Rest, WriteContext};
use crate::services::API_SERVICE_IP;

const MANAGER: &str = "skiff-apiserver";

/// Creates or refreshes the `kubernetes` service objects for `advertise`.
pub async fn ensure_api_service(rest: &Rest, advertise: SocketAddr) -> ApiResult<()> {
    let ip = advertise.ip().to_string();
    let port = advertise.port();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": API_SERVICE_IP.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
        },
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": if advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    ensure(rest, "", "services", service, false).await?;
    ensure(rest, "", "endpoints", endpoints, true).await?;
    ensure(rest, "discovery.k8s.io", "endpointslices", slice, true).await
}

/// Creates `desired` if absent; with `refresh`, overwrites a stale copy.
///
/// Looks before creating: a create of the existing Service would reserve its
/// address again first and fail with "already allocated", as upstream's does.
async fn ensure(
    rest: &Rest,
    group: &str,
    plural: &str,
    desired: Value,
    refresh: bool,
) -> ApiResult<()> {
    let rt = registry::by_plural(group, "v1", plural).expect("bootstrap types are served");
    let at = ObjectRef {
        rt,
        namespace: Some("default"),
        name: "kubernetes",
    };
    let mut ctx = WriteContext::internal(MANAGER);
    match rest.get(at).await {
        Ok(_) if !refresh => return Ok(()),
        Ok(_) => {}
        Err(e) if e.code == StatusCode::NOT_FOUND => match rest
            .create(rt, Some("default"), desired.clone(), &mut ctx)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.reason == "AlreadyExists" && refresh => {}
            Err(e) if e.reason == "AlreadyExists" => return Ok(()),
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    }
    rest.guaranteed_update(at, |current| {
        let mut new = desired.clone();
        new["metadata"] = current["metadata"].clone();
        crate::object::meta_mut(&mut new).remove("resourceVersion");
        rest.admit_update(at, None, current, new, &mut WriteContext::internal(MANAGER))
    })
    .await
    .map(|_| ())
}
