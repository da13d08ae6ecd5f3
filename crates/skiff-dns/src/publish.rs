//! Publishing the server as the `kube-system/kube-dns` Service.
//!
//! Pods are given the Service's cluster IP as their nameserver; the service
//! proxy sends that to the Service's endpoints. The server runs on the host,
//! not in a pod, so the Service has no selector and its one EndpointSlice is
//! written here: the node IP and the server's host port, with the port names
//! (`dns`, `dns-tcp`) of the Service's ports. The slice's
//! `endpointslice.kubernetes.io/managed-by` is [`MANAGED_BY`], so the
//! EndpointSlice controller (which also skips selector-less Services) leaves
//! it alone.
//!
//! [`publish`] makes the objects match, creating or correcting them;
//! `maintain` repeats it, retrying with backoff until the API is up and then
//! every [`RECHECK`] to repair deletions and edits.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The Service's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The Service's name.
pub const SERVICE_NAME: &str = "kube-dns";
/// The name of the EndpointSlice written here.
pub const SLICE_NAME: &str = "kube-dns-skiff";
/// This writer's value of `endpointslice.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "dns.skiff.dev";
/// The UDP port's name, as upstream's kube-dns Service has it.
pub const PORT_DNS: &str = "dns";
/// The TCP port's name.
pub const PORT_DNS_TCP: &str = "dns-tcp";

const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// How often published objects are checked again once they are right.
pub const RECHECK: Duration = Duration::from_secs(60);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where pods reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The Service's cluster IP (10.43.0.10).
    pub service_ip: IpAddr,
    /// The endpoint address: the node IP the server listens on.
    pub node_ip: IpAddr,
    /// The server's host port (UDP and TCP).
    pub port: u16,
    /// The endpoint's `nodeName`.
    pub node_name: Option<String>,
}

/// A write or read of a published object failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {object}: {source}")]
pub struct PublishError {
    /// What was being done (`create`, `patch`...).
    pub action: &'static str,
    /// `kind namespace/name`.
    pub object: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// The labels upstream's kube-dns Service carries (tools such as `kubectl
/// cluster-info` and dashboards find cluster DNS by them).
fn service_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("k8s-app".to_string(), "kube-dns".to_string()),
        (
            "kubernetes.io/cluster-service".to_string(),
            "true".to_string(),
        ),
        ("kubernetes.io/name".to_string(), "CoreDNS".to_string()),
    ])
}

fn service_ports() -> Vec<ServicePort> {
    [(PORT_DNS, "UDP"), (PORT_DNS_TCP, "TCP")]
        .into_iter()
        .map(|(name, protocol)| ServicePort {
            name: Some(name.into()),
            port: 53,
            protocol: Some(protocol.into()),
            target_port: Some(IntOrString::Int(53)),
            ..ServicePort::default()
        })
        .collect()
}

/// The kube-dns Service: fixed cluster IP, `dns`/`dns-tcp` on port 53, no
/// selector.
pub fn desired_service(service_ip: IpAddr) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(SERVICE_NAME.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(service_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(service_ip.to_string()),
            cluster_ips: Some(vec![service_ip.to_string()]),
            ports: Some(service_ports()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The merge patch that brings `existing` to the labels, ports and (absent)
/// selector of the desired Service; `None` when it already has them. The
/// cluster IP cannot be changed and is left as it is.
pub fn service_patch(existing: &Service) -> Option<serde_json::Value> {
    let labels = existing.metadata.labels.clone().unwrap_or_default();
    let labels_ok = service_labels()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let spec = existing.spec.clone().unwrap_or_default();
    let key = |p: &ServicePort| {
        (
            p.name.clone(),
            p.port,
            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        )
    };
    let mut have: Vec<_> = spec.ports.iter().flatten().map(key).collect();
    let mut want: Vec<_> = service_ports().iter().map(key).collect();
    have.sort();
    want.sort();
    let selector_ok = spec.selector.as_ref().is_none_or(BTreeMap::is_empty);
    if labels_ok && have == want && selector_ok {
        return None;
    }
    Some(json!({
        "metadata": {"labels": service_labels()},
        "spec": {"ports": service_ports(), "selector": null},
    }))
}

/// The EndpointSlice pointing the Service at the server, owned by the
/// Service (`service_uid`) so that it goes when the Service does.
pub fn desired_slice(publication: &Publication, service_uid: &str) -> EndpointSlice {
    let address_type = if publication.node_ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(SLICE_NAME.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (LABEL_SERVICE_NAME.to_string(), SERVICE_NAME.to_string()),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: SERVICE_NAME.into(),
                uid: service_uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![publication.node_ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: publication.node_name.clone(),
            ..Endpoint::default()
        }]),
        ports: Some(
            [(PORT_DNS, "UDP"), (PORT_DNS_TCP, "TCP")]
                .into_iter()
                .map(|(name, protocol)| EndpointPort {
                    name: Some(name.into()),
                    port: Some(i32::from(publication.port)),
                    protocol: Some(protocol.into()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

/// Whether `existing` carries everything `desired` sets (labels, owner,
/// endpoints, ports); the server fills in other fields.
pub fn slice_matches(existing: &EndpointSlice, desired: &EndpointSlice) -> bool {
    let labels = existing.metadata.labels.clone().unwrap_or_default();
    let labels_ok = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let owners = |slice: &EndpointSlice| {
        slice
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect::<Vec<_>>()
    };
    labels_ok
        && owners(existing) == owners(desired)
        && existing.address_type == desired.address_type
        && existing.endpoints == desired.endpoints
        && existing.ports == desired.ports
}

/// Make the kube-dns Service and its EndpointSlice match `publication`.
pub async fn publish(client: &Client, publication: &Publication) -> Result<(), PublishError> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let service_object = format!("Service {NAMESPACE}/{SERVICE_NAME}");
    let failed = |action, object: &str| {
        let object = object.to_string();
        move |source| PublishError {
            action,
            object,
            source,
        }
    };
    let service = match services
        .get_opt(SERVICE_NAME)
        .await
        .map_err(failed("get", &service_object))?
    {
        Some(existing) => {
            let wanted = publication.service_ip.to_string();
            let ip = existing.spec.as_ref().and_then(|s| s.cluster_ip.clone());
            if ip.as_deref() != Some(wanted.as_str()) {
                tracing::warn!(
                    cluster_ip = ?ip,
                    expected = %wanted,
                    "the kube-dns Service has another cluster IP; pods configured with {wanted} will not reach DNS"
                );
            }
            match service_patch(&existing) {
                Some(patch) => services
                    .patch(SERVICE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(failed("patch", &service_object))?,
                None => existing,
            }
        }
        None => services
            .create(
                &PostParams::default(),
                &desired_service(publication.service_ip),
            )
            .await
            .map_err(failed("create", &service_object))?,
    };
    let uid = service.metadata.uid.clone().unwrap_or_default();
    let desired = desired_slice(publication, &uid);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let slice_object = format!("EndpointSlice {NAMESPACE}/{SLICE_NAME}");
    match slices
        .get_opt(SLICE_NAME)
        .await
        .map_err(failed("get", &slice_object))?
    {
        Some(existing) if slice_matches(&existing, &desired) => {}
        // The address type is immutable: a new node IP family means a new
        // slice.
        Some(existing) if existing.address_type != desired.address_type => {
            slices
                .delete(SLICE_NAME, &DeleteParams::default())
                .await
                .map_err(failed("delete", &slice_object))?;
            slices
                .create(&PostParams::default(), &desired)
                .await
                .map_err(failed("create", &slice_object))?;
        }
        Some(existing) => {
            let mut replacement = desired;
            replacement.metadata.resource_version = existing.metadata.resource_version;
            slices
                .replace(SLICE_NAME, &PostParams::default(), &replacement)
                .await
                .map_err(failed("update", &slice_object))?;
        }
        None => {
            slices
                .create(&PostParams::default(), &desired)
                .await
                .map_err(failed("create", &slice_object))?;
        }
    }
    Ok(())
}

/// [`publish`] until `shutdown`: with backoff until it succeeds, then every
/// [`RECHECK`].
pub(crate) async fn maintain(
    client: Client,
    publication: Publication,
    shutdown: CancellationToken,
) {
    let mut retry = RETRY_MIN;
    let mut published = false;
    loop {
        let wait = match publish(&client, &publication).await {
            Ok(()) => {
                if !published {
                    tracing::info!(
                        service_ip = %publication.service_ip,
                        endpoint = %std::net::SocketAddr::new(publication.node_ip, publication.port),
                        "published the kube-dns Service"
                    );
                    published = true;
                }
                retry = RETRY_MIN;
                RECHECK
            }
            Err(error) => {
                tracing::warn!(%error, "publishing the kube-dns Service failed; retrying");
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication() -> Publication {
        Publication {
            service_ip: "10.43.0.10".parse().unwrap(),
            node_ip: "192.0.2.7".parse().unwrap(),
            port: 10053,
            node_name: Some("node-1".into()),
        }
    }

    #[test]
    fn service_is_selectorless_with_upstream_ports_and_labels() {
        let service = desired_service("10.43.0.10".parse().unwrap());
        let value = serde_json::to_value(&service).unwrap();
        assert_eq!(value["metadata"]["labels"]["k8s-app"], "kube-dns");
        assert_eq!(value["spec"]["clusterIP"], "10.43.0.10");
        assert!(value["spec"].get("selector").is_none());
        assert_eq!(
            value["spec"]["ports"],
            json!([
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ])
        );
        // Already right: nothing to patch.
        assert_eq!(service_patch(&service), None);
    }

    #[test]
    fn a_changed_service_is_patched_back() {
        let mut service = desired_service("10.43.0.10".parse().unwrap());
        let spec = service.spec.as_mut().unwrap();
        spec.selector = Some(BTreeMap::from([("k8s-app".into(), "kube-dns".into())]));
        let patch = service_patch(&service).unwrap();
        assert_eq!(patch["spec"]["selector"], serde_json::Value::Null);
        let mut service = desired_service("10.43.0.10".parse().unwrap());
        service.spec.as_mut().unwrap().ports.as_mut().unwrap().pop();
        assert!(service_patch(&service).is_some());
        let mut service = desired_service("10.43.0.10".parse().unwrap());
        service.metadata.labels = None;
        assert!(service_patch(&service).is_some());
        // Extra labels of someone else's are fine.
        let mut service = desired_service("10.43.0.10".parse().unwrap());
        service
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        assert_eq!(service_patch(&service), None);
    }

    #[test]
    fn slice_points_at_the_node_port_and_is_not_the_controllers() {
        let slice = desired_slice(&publication(), "uid-1");
        let value = serde_json::to_value(&slice).unwrap();
        assert_eq!(
            value["metadata"]["labels"],
            json!({
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "dns.skiff.dev",
            })
        );
        assert_ne!(MANAGED_BY, "endpointslice-controller.k8s.io");
        assert_eq!(value["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(value["addressType"], "IPv4");
        assert_eq!(
            value["endpoints"],
            json!([{
                "addresses": ["192.0.2.7"],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-1",
            }])
        );
        assert_eq!(
            value["ports"],
            json!([
                {"name": "dns", "port": 10053, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 10053, "protocol": "TCP"},
            ])
        );
        let mut v6 = publication();
        v6.node_ip = "2001:db8::7".parse().unwrap();
        assert_eq!(desired_slice(&v6, "uid-1").address_type, "IPv6");
    }

    #[test]
    fn slice_comparison_ignores_server_fields() {
        let desired = desired_slice(&publication(), "uid-1");
        let mut stored = desired.clone();
        stored.metadata.resource_version = Some("42".into());
        stored.metadata.uid = Some("slice-uid".into());
        assert!(slice_matches(&stored, &desired));
        let mut moved = publication();
        moved.port = 10054;
        assert!(!slice_matches(&stored, &desired_slice(&moved, "uid-1")));
        assert!(!slice_matches(
            &stored,
            &desired_slice(&publication(), "uid-2")
        ));
        stored.metadata.labels = None;
        assert!(!slice_matches(&stored, &desired));
    }
}
