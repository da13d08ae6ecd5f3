//! The built-in admission plugins that depend on other objects: Priority,
//! LimitRanger, ServiceAccount ([`service_account`]), ResourceQuota,
//! DefaultStorageClass with
//! StorageObjectInUseProtection and PersistentVolumeClaimResize
//! ([`storage`]), DefaultIngressClass ([`ingress_class`]), and the
//! PodDisruptionBudget check of pod eviction.
//!
//! Defaulting and validation look at one object alone; these look at the
//! namespace around it, so they run inside [`Rest::create`] at upstream's
//! points: LimitRanger after defaulting and before validation (it fills in
//! requests and limits that validation and quota then see), quota after
//! validation, immediately before the store write. On update,
//! [`admit_update`] runs the validating ones (LimitRanger on claims, then
//! PersistentVolumeClaimResize) after validation and before quota.
//!
//! The objects consulted (LimitRanges, ResourceQuotas, PodDisruptionBudgets)
//! are read from the store, not the watch cache: a client that creates a
//! LimitRange and then a pod expects the pod to be limited, and the cache may
//! trail the store by the one write that matters. Quota usage and eviction
//! budgets are then changed by compare-and-swap on the quota or budget
//! itself, so concurrent creates cannot both take the last unit of quota and
//! concurrent evictions cannot both take the last allowed disruption.

pub mod default_class;
pub mod eviction;
pub mod ingress_class;
pub mod limit_range;
pub mod priority;
pub mod quota;
pub mod service_account;
pub mod storage;

#[cfg(test)]
mod tests;

use serde_json::Value;
use skiff_api::registry::{self, ResourceType};
use skiff_store::RangeRequest;

use crate::cache::object_key;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{self, Rest};
use crate::strategy;

/// Plugins that can be switched off, as kube-apiserver's
/// `--disable-admission-plugins`. [`Default`] has them off: that is what the
/// in-process API of the tests runs, where no controller makes the
/// `default` ServiceAccounts (upstream's integration tests likewise disable
/// `ServiceAccount`); [`crate::ApiServer::start`] turns them on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plugins {
    /// `ServiceAccount`: default and check the pod's account, mount its
    /// API access volume.
    pub service_account: bool,
}

/// The served type `plural` of `group` (each group serves one version, `v1`).
fn resource(group: &str, plural: &str) -> &'static ResourceType {
    registry::by_plural(group, "v1", plural).expect("built-in types are served")
}

/// The current objects of `rt` in `namespace`, read from the store.
async fn list_current(
    rest: &Rest,
    rt: &'static ResourceType,
    namespace: &str,
) -> ApiResult<Vec<Value>> {
    let prefix = object_key(rt, Some(namespace), "");
    let page = rest
        .store()
        .range(RangeRequest::prefix(&prefix))
        .await
        .map_err(|e| ApiError::internal(format!("listing {}: {e}", rt.plural)))?;
    page.kvs
        .iter()
        .map(|kv| rest::decode(rt, kv).map(|cached| cached.object.clone()))
        .collect()
}

/// Priority on a new pod: its PriorityClass, read from the store.
pub async fn priority(
    rest: &Rest,
    rt: &'static ResourceType,
    name: &str,
    obj: &mut Value,
) -> ApiResult<()> {
    if (rt.group, rt.kind) != ("", "Pod") {
        return Ok(());
    }
    let classes = resource("scheduling.k8s.io", "priorityclasses");
    let prefix = object_key(classes, None, "");
    let page = rest
        .store()
        .range(RangeRequest::prefix(&prefix))
        .await
        .map_err(|e| ApiError::internal(format!("listing priorityclasses: {e}")))?;
    let classes: Vec<Value> = page
        .kvs
        .iter()
        .map(|kv| rest::decode(classes, kv).map(|cached| cached.object.clone()))
        .collect::<ApiResult<_>>()?;
    priority::admit(rt, name, obj, &classes)
}

/// LimitRanger on a new object: fills in a pod's container defaults from
/// every LimitRange of its namespace, then checks the pod's (or a claim's)
/// bounds. A violation is 403 Forbidden naming the first violated range's
/// problems.
pub async fn limit_ranges(
    rest: &Rest,
    rt: &'static ResourceType,
    obj: &mut Value,
) -> ApiResult<()> {
    let is_pod = (rt.group, rt.kind) == ("", "Pod");
    if !is_pod && (rt.group, rt.kind) != ("", "PersistentVolumeClaim") {
        return Ok(());
    }
    let namespace = object::namespace(obj).to_string();
    let ranges = list_current(rest, resource("", "limitranges"), &namespace).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    if is_pod {
        for range in &ranges {
            limit_range::apply_defaults(range, obj);
        }
        // The QoS class was derived before the defaults were filled in.
        if obj["status"].is_object() {
            obj["status"]["qosClass"] = Value::from(strategy::qos_class(obj));
        }
    }
    for range in &ranges {
        let errors = if is_pod {
            limit_range::validate_pod(range, obj)
        } else {
            limit_range::validate_pvc(range, obj, None)
        };
        if !errors.is_empty() {
            return Err(ApiError::forbidden(
                rt,
                object::name(obj),
                &limit_range::aggregate(&errors),
            ));
        }
    }
    Ok(())
}

/// The validating plugins on an update of `rt` from `old` to `new` (the
/// object as it will be stored), in upstream's order: LimitRanger bounds a
/// claim's changed requests, then PersistentVolumeClaimResize checks growth
/// against the claim's class. Each refusal is 403 Forbidden. Pods are not
/// limited on update (their containers' resources do not change here), and
/// an object being deleted is not limited, as upstream.
pub async fn admit_update(
    rest: &Rest,
    rt: &'static ResourceType,
    old: &Value,
    new: &Value,
) -> ApiResult<()> {
    if (rt.group, rt.kind) != ("", "PersistentVolumeClaim") {
        return Ok(());
    }
    if !object::is_deleting(old) {
        let namespace = object::namespace(new);
        for range in list_current(rest, resource("", "limitranges"), namespace).await? {
            let errors = limit_range::validate_pvc(&range, new, Some(old));
            if !errors.is_empty() {
                return Err(ApiError::forbidden(
                    rt,
                    object::name(new),
                    &limit_range::aggregate(&errors),
                ));
            }
        }
    }
    storage::admit_update(rest, rt, old, new).await
}
