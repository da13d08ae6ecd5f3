//! Upstream's validation of API objects, with upstream's field paths, reasons and
//! messages, so that kubectl, helm and client libraries show the errors they would
//! get from a real cluster.
//!
//! [`validate`] expects an object that already decoded into its k8s-openapi type and
//! went through [`crate::defaults::apply_defaults`], as upstream validates after
//! defaulting. Rules follow `pkg/apis/*/validation` for the served types; a type
//! without rules here (a custom resource, say) gets no errors, and the name checks in
//! [`names`] are public for the API server's own checks on path names and
//! `generateName`.
//!
//! Above all, a valid object must never be refused: where upstream's rule depends on
//! feature gates or on state this crate cannot see, the rule here is the lenient one.

mod addresses;
mod apps;
mod batch;
mod core;
pub mod cron;
mod field;
mod meta;
pub mod names;
mod other;
mod pod;
mod storage;

use serde_json::Value;

use crate::registry::FieldError;
use field::get;
use meta::{
    NameCheck, name_is_dns_label, name_is_dns_subdomain, name_is_dns1035_label,
    validate_object_meta, validate_object_meta_update,
};
pub use names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value,
};

type KindCheck = fn(&mut Vec<FieldError>, &Value, Option<&Value>);

/// How one kind is validated: scope, name rule and the kind's own rules.
struct Rule {
    namespaced: bool,
    name: NameCheck,
    check: KindCheck,
}

fn rule(namespaced: bool, name: NameCheck, check: KindCheck) -> Option<Rule> {
    Some(Rule {
        namespaced,
        name,
        check,
    })
}

fn rule_for(group: &str, kind: &str) -> Option<Rule> {
    const NS: bool = true;
    const CLUSTER: bool = false;
    let sub = name_is_dns_subdomain;
    match (group, kind) {
        ("", "Namespace") => rule(CLUSTER, name_is_dns_label, core::validate_namespace),
        ("", "Pod") => rule(NS, sub, core::validate_pod),
        ("", "Service") => rule(NS, name_is_dns1035_label, core::validate_service),
        ("", "Endpoints") => rule(NS, sub, core::validate_endpoints),
        ("", "ConfigMap") => rule(NS, sub, core::validate_config_map),
        ("", "Secret") => rule(NS, sub, core::validate_secret),
        ("", "Node") => rule(CLUSTER, sub, core::validate_node),
        ("", "Event") => rule(NS, sub, core::validate_core_event),
        ("", "ServiceAccount") => rule(NS, sub, core::validate_service_account),
        ("", "PersistentVolume") => rule(CLUSTER, sub, storage::validate_pv),
        ("", "PersistentVolumeClaim") => rule(NS, sub, storage::validate_pvc),
        ("", "ResourceQuota") => rule(NS, sub, core::validate_resource_quota),
        ("", "LimitRange") => rule(NS, sub, core::validate_limit_range),
        ("events.k8s.io", "Event") => rule(NS, sub, other::validate_events_event),
        ("apps", "Deployment") => rule(NS, sub, apps::validate_deployment),
        ("apps", "ReplicaSet") => rule(NS, sub, apps::validate_replica_set),
        ("apps", "StatefulSet") => rule(NS, sub, apps::validate_stateful_set),
        ("apps", "DaemonSet") => rule(NS, sub, apps::validate_daemon_set),
        ("apps", "ControllerRevision") => rule(NS, sub, apps::validate_controller_revision),
        ("batch", "Job") => rule(NS, sub, batch::validate_job),
        ("batch", "CronJob") => rule(NS, sub, batch::validate_cron_job),
        ("coordination.k8s.io", "Lease") => rule(NS, sub, other::validate_lease),
        ("discovery.k8s.io", "EndpointSlice") => rule(NS, sub, other::validate_endpoint_slice),
        ("networking.k8s.io", "Ingress") => rule(NS, sub, other::validate_ingress),
        ("networking.k8s.io", "IngressClass") => rule(CLUSTER, sub, other::validate_ingress_class),
        ("networking.k8s.io", "NetworkPolicy") => rule(NS, sub, other::validate_network_policy),
        ("networking.k8s.io", "ServiceCIDR") => {
            rule(CLUSTER, sub, addresses::validate_service_cidr)
        }
        ("networking.k8s.io", "IPAddress") => rule(
            CLUSTER,
            addresses::name_is_ip_address,
            addresses::validate_ip_address,
        ),
        ("storage.k8s.io", "StorageClass") => rule(CLUSTER, sub, storage::validate_storage_class),
        ("policy", "PodDisruptionBudget") => rule(NS, sub, other::validate_pdb),
        ("scheduling.k8s.io", "PriorityClass") => {
            rule(CLUSTER, sub, other::validate_priority_class)
        }
        _ => None,
    }
}

/// Validates `obj` of kind `(group, kind)`; `old` is the stored object on update.
///
/// Returns every violation found (empty when valid), each with upstream's reason,
/// JSON field path and message. The caller renders them as a 422 `Status` whose
/// message is `<Kind>.<group> "<name>" is invalid: <field>: <message>, ...`.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let Some(rule) = rule_for(group, kind) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let meta = get(obj, "metadata");
    validate_object_meta(&mut errs, meta, rule.namespaced, rule.name);
    if let Some(old) = old {
        validate_object_meta_update(&mut errs, meta, get(old, "metadata"));
    }
    (rule.check)(&mut errs, obj, old);
    errs
}

/// Validates an update written through `subresource` (`None` for the object
/// itself). Most subresources keep everything they may not change, so the
/// object's own update rules apply; `pods/resize` has its own
/// (upstream's `ValidatePodResize`), since it is the one way to change
/// container resources.
pub fn validate_update(
    group: &str,
    kind: &str,
    subresource: Option<&str>,
    obj: &Value,
    old: &Value,
) -> Vec<FieldError> {
    if (group, kind, subresource) != ("", "Pod", Some("resize")) {
        return validate(group, kind, obj, Some(old));
    }
    let mut errs = Vec::new();
    let meta = get(obj, "metadata");
    validate_object_meta(&mut errs, meta, true, name_is_dns_subdomain);
    validate_object_meta_update(&mut errs, meta, get(old, "metadata"));
    core::validate_pod_resize(&mut errs, obj, old);
    errs
}

/// Whether [`validate`] knows rules for `(group, kind)`.
pub fn has_rules(group: &str, kind: &str) -> bool {
    rule_for(group, kind).is_some()
}

#[cfg(test)]
mod tests;
