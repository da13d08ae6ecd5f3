//! The v1 Endpoints object a Service should have: pure.
//!
//! Subsets are in canonical form, so that a Service whose pods did not
//! change compares equal to what was written before: every address appears
//! once per port, ports that share exactly the same addresses (with the same
//! readiness) form one subset, addresses are sorted by IP then pod UID and
//! ports by name, number and protocol. A headless Service without ports
//! still lists its addresses, in a subset without ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::endpointslice::endpoint::{
    AddressType, LABEL_HEADLESS, find_port, is_service_ip_set, pod_ips, protocol, set_trigger_time,
    should_publish, should_set_hostname,
};
use crate::endpointslice::reconciler::pod_reference;
use crate::pods;

/// The label marking Endpoints this controller manages.
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// This controller's value of [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpoint-controller";
/// Set to `truncated` when addresses beyond [`MAX_CAPACITY`] were dropped.
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses one Endpoints object holds.
pub const MAX_CAPACITY: usize = 1000;

/// What to write for a Service's Endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointsPlan {
    /// The Endpoints already show the pods.
    UpToDate,
    /// No Endpoints exist yet: create this.
    Create(Endpoints),
    /// Replace the existing Endpoints (resourceVersion kept) with this.
    Update(Endpoints),
}

/// An address is one pod's IP: `(ip, pod uid)`.
type AddressKey = (String, String);
/// A port in sort order: `(name, port, protocol, appProtocol)`.
type PortKey = (Option<String>, i32, Option<String>, Option<String>);

/// Plans the Endpoints of `service` given the pods its selector matches,
/// the current Endpoints in the cache, and the time of the last change.
pub fn plan(
    service: &Service,
    pods: &[Arc<Pod>],
    current: Option<&Endpoints>,
    trigger: Option<Timestamp>,
) -> EndpointsPlan {
    let mut subsets = desired_subsets(service, pods);
    let truncated = truncate(&mut subsets, MAX_CAPACITY);
    let labels = endpoints_labels(service);
    if let Some(current) = current {
        let marked = current.annotations().contains_key(ANNOTATION_OVER_CAPACITY);
        if canonical(current.subsets.as_deref().unwrap_or_default()) == subsets
            && current.labels() == &labels
            && marked == truncated
        {
            return EndpointsPlan::UpToDate;
        }
    }
    let mut endpoints = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: Some(service.name_any()),
            namespace: service.namespace(),
            ..ObjectMeta::default()
        },
        subsets: None,
    });
    endpoints.subsets = (!subsets.is_empty()).then_some(subsets);
    endpoints.metadata.labels = Some(labels);
    set_trigger_time(&mut endpoints.metadata, trigger);
    let mut annotations = endpoints.metadata.annotations.take().unwrap_or_default();
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    endpoints.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    match current {
        Some(_) => EndpointsPlan::Update(endpoints),
        None => EndpointsPlan::Create(endpoints),
    }
}

/// The Service's labels, the manager label, and the headless marker when
/// the Service has no cluster IP.
fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.labels().clone();
    labels.remove(LABEL_HEADLESS);
    if !is_service_ip_set(service) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// The canonical subsets for `service`: ready addresses (all of them with
/// `publishNotReadyAddresses`) and not-ready ones, terminating pods only
/// when not-ready addresses are published.
pub fn desired_subsets(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = service.spec.clone().unwrap_or_default();
    let tolerate = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_ports = spec.ports.unwrap_or_default();
    let portless = service_ports.is_empty() && !is_service_ip_set(service);
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, (EndpointPort, BTreeMap<AddressKey, bool>)> =
        BTreeMap::new();
    let mut without_ports: BTreeMap<AddressKey, bool> = BTreeMap::new();
    for pod in pods {
        if !should_publish(pod, tolerate) {
            continue;
        }
        let Some(address) = endpoint_address(service, pod) else {
            continue;
        };
        let key: AddressKey = (address.ip.clone(), pod.uid().unwrap_or_default());
        let ready = tolerate || pods::is_ready(pod);
        let mut listed = false;
        if portless {
            merge_readiness(&mut without_ports, key.clone(), ready);
            listed = true;
        }
        for service_port in &service_ports {
            let Some(number) = find_port(pod, service_port) else {
                continue;
            };
            let port = EndpointPort {
                name: service_port.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(protocol(service_port.protocol.as_ref()).to_string()),
                app_protocol: service_port.app_protocol.clone(),
            };
            let port_key = (
                port.name.clone(),
                port.port,
                port.protocol.clone(),
                port.app_protocol.clone(),
            );
            let entry = by_port
                .entry(port_key)
                .or_insert_with(|| (port, BTreeMap::new()));
            merge_readiness(&mut entry.1, key.clone(), ready);
            listed = true;
        }
        if listed {
            addresses.entry(key).or_insert(address);
        }
    }
    // Ports offered by exactly the same addresses share a subset.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (port, members) in by_port.into_values() {
        groups
            .entry(members.into_iter().collect())
            .or_default()
            .push(port);
    }
    let subset = |members: Vec<(AddressKey, bool)>, ports: Vec<EndpointPort>| {
        let pick = |want: bool| -> Option<Vec<EndpointAddress>> {
            let list: Vec<EndpointAddress> = members
                .iter()
                .filter(|(_, ready)| *ready == want)
                .map(|(key, _)| addresses[key].clone())
                .collect();
            (!list.is_empty()).then_some(list)
        };
        EndpointSubset {
            addresses: pick(true),
            not_ready_addresses: pick(false),
            ports: (!ports.is_empty()).then_some(ports),
        }
    };
    let mut subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(members, ports)| subset(members, ports))
        .collect();
    if !without_ports.is_empty() {
        subsets.push(subset(without_ports.into_iter().collect(), Vec::new()));
    }
    subsets
}

/// An address that is not ready on one port is not ready on it at all.
fn merge_readiness(members: &mut BTreeMap<AddressKey, bool>, key: AddressKey, ready: bool) {
    let entry = members.entry(key).or_insert(ready);
    *entry = *entry && ready;
}

/// The pod's address in the Service's primary IP family: its first family,
/// else that of its cluster IP, else (headless) that of the pod's first IP.
fn endpoint_address(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let spec = service.spec.as_ref();
    let ips = pod_ips(pod);
    let family = spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .and_then(|f| AddressType::parse(f))
        .or_else(|| {
            is_service_ip_set(service)
                .then(|| spec?.cluster_ip.as_deref()?.parse().ok())
                .flatten()
                .map(|ip| AddressType::of(&ip))
        })
        .or_else(|| ips.first().map(AddressType::of))?;
    let ip = ips.iter().find(|ip| AddressType::of(ip) == family)?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        hostname: should_set_hostname(pod, service)
            .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
            .flatten(),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
    })
}

/// Keeps at most `max` addresses, ready ones first, each subset keeping a
/// share proportional to its size (rounded up, so the last ones may get
/// less). Returns whether anything was dropped.
pub fn truncate(subsets: &mut [EndpointSubset], max: usize) -> bool {
    let count = |list: &Option<Vec<EndpointAddress>>| list.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= max {
        return false;
    }
    let truncate_ready = ready > max;
    let (budget, total) = if truncate_ready {
        (max, ready)
    } else {
        (max - ready, not_ready)
    };
    let mut left = budget;
    for subset in subsets.iter_mut() {
        let list = if truncate_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let size = count(list);
        let share = (size * budget).div_ceil(total).min(left);
        if let Some(addresses) = list.as_mut() {
            addresses.truncate(share);
        }
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
        left -= share.min(size);
    }
    true
}

/// `subsets` as this controller would have written them: empty lists
/// absent, and no resourceVersion in pod references.
fn canonical(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let clean = |list: &Option<Vec<EndpointAddress>>| -> Option<Vec<EndpointAddress>> {
        let list: Vec<EndpointAddress> = list
            .iter()
            .flatten()
            .cloned()
            .map(|mut address| {
                if let Some(target) = address.target_ref.as_mut() {
                    target.resource_version = None;
                }
                address
            })
            .collect();
        (!list.is_empty()).then_some(list)
    };
    subsets
        .iter()
        .map(|s| EndpointSubset {
            addresses: clean(&s.addresses),
            not_ready_addresses: clean(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect()
}
