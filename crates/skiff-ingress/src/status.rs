//! `status.loadBalancer` of the Ingresses we serve: the node's addresses.
//!
//! [`desired`] and [`needs_update`] are pure; [`update`] writes one status
//! with a merge patch of the `status` subresource. Writing only when the
//! addresses differ matters: each write is an Ingress watch event, which
//! rebuilds the routing table once more, and an unconditional write would
//! loop.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// The field manager of status writes.
const FIELD_MANAGER: &str = "skiff-ingress";

/// The load balancer status for `addresses`, in a stable order.
pub fn desired(addresses: &[IpAddr]) -> IngressLoadBalancerStatus {
    let mut sorted = addresses.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    IngressLoadBalancerStatus {
        ingress: Some(
            sorted
                .into_iter()
                .map(|ip| IngressLoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ..IngressLoadBalancerIngress::default()
                })
                .collect(),
        ),
    }
}

/// Whether `ingress` shows other load balancer entries than `desired`
/// (in any order).
pub fn needs_update(ingress: &Ingress, desired: &IngressLoadBalancerStatus) -> bool {
    let current = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref());
    addresses_of(current) != addresses_of(Some(desired))
}

/// The (ip, hostname) pairs of a status, sorted.
fn addresses_of(status: Option<&IngressLoadBalancerStatus>) -> Vec<(Option<&str>, Option<&str>)> {
    let mut entries: Vec<(Option<&str>, Option<&str>)> = status
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|e| (e.ip.as_deref(), e.hostname.as_deref()))
        .collect();
    entries.sort_unstable();
    entries
}

/// Writes `desired` into the status of `ingress`.
pub async fn update(
    client: &Client,
    ingress: &Ingress,
    desired: &IngressLoadBalancerStatus,
) -> Result<(), kube::Error> {
    let api: Api<Ingress> =
        Api::namespaced(client.clone(), &ingress.namespace().unwrap_or_default());
    let patch = json!({"status": {"loadBalancer": desired}});
    api.patch_status(
        &ingress.name_any(),
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn ingress(status: Value) -> Ingress {
        serde_json::from_value(json!({"metadata": {"name": "i"}, "status": status})).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn desired_is_sorted_and_deduplicated() {
        let status = desired(&ips(&["192.168.1.2", "10.0.0.1", "192.168.1.2"]));
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"ingress": [{"ip": "10.0.0.1"}, {"ip": "192.168.1.2"}]})
        );
    }

    #[test]
    fn update_only_when_addresses_differ() {
        let want = desired(&ips(&["10.0.0.1", "10.0.0.2"]));
        assert!(needs_update(&ingress(json!({})), &want));
        assert!(needs_update(
            &ingress(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}})),
            &want
        ));
        assert!(needs_update(
            &ingress(json!({"loadBalancer": {"ingress": [
                {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"hostname": "lb.example.com"}
            ]}})),
            &want
        ));
        assert!(!needs_update(
            &ingress(
                json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1"}]}})
            ),
            &want
        ));
    }
}
