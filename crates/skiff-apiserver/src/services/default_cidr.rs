//! The default ServiceCIDR `kubernetes`, kept in place by the API server as
//! upstream's `kubernetes-service-cidr-controller` does: created from the
//! configured range if missing, and marked Ready once if its ranges are the
//! configured ones. A ServiceCIDR someone changed or marked not Ready is left
//! alone (and logged), never overwritten.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::cluster_ip::service_cidr_type;
use crate::error::ApiResult;
use crate::object;
use crate::rest::{ObjectRef, Rest, WriteContext};

/// The range Service cluster IPs come from (k3s's default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// The name of the ServiceCIDR holding [`DEFAULT_SERVICE_CIDR`].
pub const DEFAULT_SERVICE_CIDR_NAME: &str = "kubernetes";
/// The field manager upstream's controller writes with.
const CONTROLLER: &str = "kubernetes-service-cidr-controller";

/// The `Ready` condition of a ServiceCIDR, if it has one.
fn ready_condition(cidr: &Value) -> Option<&Value> {
    cidr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Creates the default ServiceCIDR if it is missing and marks it Ready.
pub async fn ensure_default_service_cidr(rest: &Rest) -> ApiResult<()> {
    let rt = service_cidr_type();
    let at = ObjectRef {
        rt,
        namespace: None,
        name: DEFAULT_SERVICE_CIDR_NAME,
    };
    let current = match rest.get(at).await {
        Ok(current) => current.object.clone(),
        Err(e) if e.code == StatusCode::NOT_FOUND => {
            let body = json!({
                "apiVersion": rt.api_version(), "kind": rt.kind,
                "metadata": {"name": DEFAULT_SERVICE_CIDR_NAME},
                "spec": {"cidrs": [DEFAULT_SERVICE_CIDR]},
            });
            tracing::info!(
                cidr = DEFAULT_SERVICE_CIDR,
                "creating the default ServiceCIDR"
            );
            match rest
                .create(rt, None, body, &mut WriteContext::internal(CONTROLLER))
                .await
            {
                Ok(created) => created,
                Err(e) if e.reason == "AlreadyExists" => rest.get(at).await?.object.clone(),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if object::is_deleting(&current) {
        return Ok(());
    }
    match ready_condition(&current).map(|c| c["status"].as_str().unwrap_or("")) {
        Some("True") => return Ok(()),
        Some("Unknown") | None => {}
        Some(status) => {
            tracing::warn!(
                status,
                "the default ServiceCIDR's Ready condition is not True; leaving it"
            );
            return Ok(());
        }
    }
    if current["spec"]["cidrs"] != json!([DEFAULT_SERVICE_CIDR]) {
        tracing::warn!(
            cidrs = %current["spec"]["cidrs"],
            "the default ServiceCIDR does not hold the configured range; not marking it Ready"
        );
        return Ok(());
    }
    let ready = json!({
        "type": "Ready",
        "status": "True",
        "reason": "",
        "message": "Kubernetes default Service CIDR is ready",
        "lastTransitionTime": object::format_time(jiff::Timestamp::now()),
    });
    let mut ctx = WriteContext::internal(CONTROLLER);
    rest.guaranteed_update(at, |current| {
        let mut new = object::without_resource_version(current);
        let mut conditions: Vec<Value> = current["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "Ready");
        conditions.push(ready.clone());
        new["status"] = json!({"conditions": conditions});
        rest.admit_update(at, Some("status"), current, new, &mut ctx)
    })
    .await
    .map(|_| ())
}
