//! The EndpointSlices one Service should have, as a diff against the ones it
//! has: pure, so every decision is unit tested without a server.
//!
//! Slices are grouped by address type and then by port set (pods whose
//! named target ports resolve differently need different slices). Within a
//! group the existing slices keep the endpoints that are still wanted, in
//! place; only then are the remaining endpoints packed, first into slices
//! that change anyway, then into the unchanged slice that fits them most
//! tightly, and only then into new slices. A slice left empty is deleted,
//! but if a new slice is needed at the same time it is rewritten under the
//! old name instead, so a rollout that swaps every pod costs updates, not
//! create/delete pairs. A Service with no endpoints of an address type
//! keeps one empty "placeholder" slice of it, so consumers can tell "no
//! endpoints" from "not processed yet".
//!
//! Example, 100 endpoints per slice, one slice `web-a` holding pods 1–100,
//! pod 7 replaced by pod 101: `web-a` loses pod 7 and so changes anyway;
//! pod 101 joins it, and the plan is one update of `web-a`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::endpoint::{
    AddressType, CONTROLLER_NAME, LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE,
    address_types, find_port, is_service_ip_set, pod_ips, protocol, should_publish,
    should_set_hostname,
};
use crate::pods::{self, controller_reference};

/// What to write so that a Service's EndpointSlices match its pods.
#[derive(Debug, Default)]
pub struct SlicePlan {
    /// New slices, unnamed: `metadata.generateName` holds the prefix.
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new contents (name and resourceVersion kept).
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<Arc<EndpointSlice>>,
    /// Nodes that pods run on but the cache does not know; those pods were
    /// left out (unless the Service publishes not-ready addresses).
    pub missing_nodes: BTreeSet<String>,
}

/// What identifies an endpoint across syncs: its addresses, hostname and
/// pod. Everything else (conditions, node, zone) is updated in place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EndpointKey {
    addresses: Vec<String>,
    hostname: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl EndpointKey {
    fn of(endpoint: &Endpoint) -> Self {
        let mut addresses = endpoint.addresses.clone();
        addresses.sort();
        let target = endpoint.target_ref.as_ref();
        Self {
            addresses,
            hostname: endpoint.hostname.clone(),
            namespace: target.and_then(|t| t.namespace.clone()),
            name: target.and_then(|t| t.name.clone()),
        }
    }
}

/// A port set in canonical (sorted) order, for grouping.
type PortKey = Vec<(Option<String>, Option<i32>, Option<String>, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.port,
                p.protocol.clone(),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// The endpoints wanted for one port set.
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Plans the EndpointSlice writes for `service` given the pods its selector
/// matches, a Node lookup, its existing managed slices (not being deleted),
/// and the slice capacity.
pub fn plan(
    service: &Service,
    pods: &[Arc<Pod>],
    node: &dyn Fn(&str) -> Option<Arc<Node>>,
    existing: &[Arc<EndpointSlice>],
    max_per_slice: usize,
) -> SlicePlan {
    let max_per_slice = max_per_slice.max(1);
    let supported = address_types(service);
    let mut plan = SlicePlan::default();
    let mut existing = existing.to_vec();
    existing.sort_by_key(|s| s.name_any());
    let mut by_type: BTreeMap<AddressType, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        match AddressType::parse(&slice.address_type).filter(|t| supported.contains(t)) {
            Some(t) => by_type.entry(t).or_default().push(slice),
            None => plan.delete.push(slice),
        }
    }
    for address_type in supported {
        let existing = by_type.remove(&address_type).unwrap_or_default();
        plan_address_type(
            service,
            pods,
            node,
            existing,
            address_type,
            max_per_slice,
            &mut plan,
        );
    }
    if service.metadata.deletion_timestamp.is_some() {
        // Creating while the garbage collector deletes would race it.
        plan.create.clear();
    }
    plan
}

fn plan_address_type(
    service: &Service,
    pods: &[Arc<Pod>],
    node: &dyn Fn(&str) -> Option<Arc<Node>>,
    existing: Vec<Arc<EndpointSlice>>,
    address_type: AddressType,
    max_per_slice: usize,
    plan: &mut SlicePlan,
) {
    let existing_count = existing.len();
    let mut delete = Vec::new();
    let mut existing_by_ports: BTreeMap<PortKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        if owned_by(&slice, service) {
            let key = port_key(slice.ports.as_deref().unwrap_or_default());
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            delete.push(slice);
        }
    }

    let publish_not_ready = publish_not_ready(service);
    let mut groups: BTreeMap<PortKey, Group> = BTreeMap::new();
    for pod in pods {
        if !should_publish(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let group = groups.entry(port_key(&ports)).or_insert_with(|| Group {
            ports,
            endpoints: BTreeMap::new(),
        });
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        let node = if node_name.is_empty() {
            None
        } else {
            let found = node(node_name);
            if found.is_none() && !publish_not_ready {
                plan.missing_nodes.insert(node_name.to_string());
                continue;
            }
            found
        };
        let endpoint = pod_endpoint(pod, node.as_deref(), service, address_type);
        if !endpoint.addresses.is_empty() {
            group.endpoints.insert(EndpointKey::of(&endpoint), endpoint);
        }
    }

    let mut create = Vec::new();
    let mut update = Vec::new();
    for (key, group) in groups {
        let existing = existing_by_ports.remove(&key).unwrap_or_default();
        let changes = plan_port_group(service, existing, group, address_type, max_per_slice);
        create.extend(changes.create);
        update.extend(changes.update);
        delete.extend(changes.delete);
    }
    delete.extend(existing_by_ports.into_values().flatten());

    if existing_count == delete.len() && create.is_empty() {
        let placeholder = new_slice(service, &[], address_type);
        if delete.len() == 1 && is_placeholder(&delete[0], &placeholder) {
            delete.clear();
        } else {
            create.push(placeholder);
        }
    }
    reuse_names(service, &mut create, &mut update, &mut delete);
    plan.create.extend(create);
    plan.update.extend(update);
    plan.delete.extend(delete);
}

/// The writes for one port set.
struct GroupChanges {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<Arc<EndpointSlice>>,
}

fn plan_port_group(
    service: &Service,
    existing: Vec<Arc<EndpointSlice>>,
    group: Group,
    address_type: AddressType,
    max_per_slice: usize,
) -> GroupChanges {
    let labels = slice_labels(service);
    let mut wanted = group.endpoints;
    let mut changes = GroupChanges {
        create: Vec::new(),
        update: Vec::new(),
        delete: Vec::new(),
    };
    let mut unchanged: Vec<Arc<EndpointSlice>> = Vec::new();

    // 1. Keep the wanted endpoints where they are, refreshed.
    for slice in existing {
        let old = slice.endpoints.as_deref().unwrap_or_default();
        let mut kept = Vec::with_capacity(old.len());
        let mut refreshed = false;
        for endpoint in old {
            if let Some(want) = wanted.remove(&EndpointKey::of(endpoint)) {
                refreshed |= !same_beyond_key(endpoint, &want);
                kept.push(want);
            }
        }
        if refreshed || kept.len() != old.len() {
            if kept.is_empty() {
                changes.delete.push(slice);
            } else {
                let mut slice = (*slice).clone();
                slice.endpoints = Some(kept);
                slice.metadata.labels = Some(labels.clone());
                changes.update.push(slice);
            }
        } else if labels_changed(&slice, service) {
            let mut slice = (*slice).clone();
            slice.metadata.labels = Some(labels.clone());
            changes.update.push(slice);
        } else {
            unchanged.push(slice);
        }
    }

    // 2. Top up the slices that are written anyway, fullest first.
    if !wanted.is_empty() {
        changes
            .update
            .sort_by_key(|s| std::cmp::Reverse(endpoint_count(s)));
        for slice in &mut changes.update {
            fill(slice, &mut wanted, max_per_slice);
        }
    }

    // 3. Put the rest into the tightest unchanged slice, or new ones.
    while !wanted.is_empty() {
        let target = (wanted.len() < max_per_slice)
            .then(|| tightest_fit(&unchanged, wanted.len(), max_per_slice))
            .flatten();
        let mut slice = match target {
            Some(index) => (*unchanged.remove(index)).clone(),
            None => new_slice(service, &group.ports, address_type),
        };
        fill(&mut slice, &mut wanted, max_per_slice);
        if slice.metadata.name.is_some() {
            changes.update.push(slice);
        } else {
            changes.create.push(slice);
        }
    }
    changes
}

fn endpoint_count(slice: &EndpointSlice) -> usize {
    slice.endpoints.as_ref().map_or(0, Vec::len)
}

fn fill(slice: &mut EndpointSlice, wanted: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    let endpoints = slice.endpoints.get_or_insert_with(Vec::new);
    while endpoints.len() < max {
        let Some((_, endpoint)) = wanted.pop_first() else {
            break;
        };
        endpoints.push(endpoint);
    }
}

/// The slice that `count` more endpoints fill most completely, if any fits.
fn tightest_fit(slices: &[Arc<EndpointSlice>], count: usize, max: usize) -> Option<usize> {
    slices
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            max.checked_sub(count + endpoint_count(s))
                .map(|room| (room, i))
        })
        .min()
        .map(|(_, i)| i)
}

/// Turns create/delete pairs into updates of the slice being deleted.
fn reuse_names(
    service: &Service,
    create: &mut Vec<EndpointSlice>,
    update: &mut Vec<EndpointSlice>,
    delete: &mut Vec<Arc<EndpointSlice>>,
) {
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        if !owned_by(&delete[i], service) {
            i += 1;
            continue;
        }
        let old = delete.remove(i);
        let mut slice = create.pop().expect("checked non-empty");
        slice.metadata = ObjectMeta {
            labels: slice.metadata.labels.take(),
            ..old.metadata.clone()
        };
        update.push(slice);
    }
}

/// A new, unnamed slice for `service`.
fn new_slice(
    service: &Service,
    ports: &[EndpointPort],
    address_type: AddressType,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", service.name_any())),
            namespace: service.namespace(),
            labels: Some(slice_labels(service)),
            owner_references: Some(vec![controller_reference(service)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.as_str().to_string(),
        endpoints: Some(Vec::new()),
        ports: Some(ports.to_vec()),
    }
}

fn is_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.address_type == placeholder.address_type
        && slice.endpoints.as_deref().unwrap_or_default().is_empty()
        && slice.ports.as_deref().unwrap_or_default().is_empty()
        && slice.metadata.namespace == placeholder.metadata.namespace
        && slice.metadata.labels.clone().unwrap_or_default()
            == placeholder.metadata.labels.clone().unwrap_or_default()
        && slice.metadata.owner_references == placeholder.metadata.owner_references
}

/// The slice is owned by this very Service (not an older one of the same
/// name whose slices the garbage collector has yet to delete).
fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.uid().unwrap_or_default();
    slice
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

fn is_reserved_label(key: &str) -> bool {
    key == LABEL_SERVICE_NAME || key == LABEL_MANAGED_BY || key == LABEL_HEADLESS
}

/// A slice's labels: the Service's (less the reserved ones), the headless
/// marker when it has no cluster IP, and the service name and manager.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .labels()
        .iter()
        .filter(|(k, _)| !is_reserved_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !is_service_ip_set(service) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.into(), service.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// The Service's own labels differ from those the slice mirrors.
fn labels_changed(slice: &EndpointSlice, service: &Service) -> bool {
    let unreserved = |labels: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        labels
            .iter()
            .filter(|(k, _)| !is_reserved_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    unreserved(slice.labels()) != unreserved(service.labels())
}

fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The Service's ports as this pod serves them; ports whose named target
/// the pod lacks are left out.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|port| {
            find_port(pod, port).map(|number| EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(protocol(port.protocol.as_ref()).to_string()),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// The endpoint of `pod` for addresses of `address_type`. Ready means
/// serving and not terminating, or anything when the Service publishes
/// not-ready addresses.
pub fn pod_endpoint(
    pod: &Pod,
    node: Option<&Node>,
    service: &Service,
    address_type: AddressType,
) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish_not_ready(service) || (serving && !terminating);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let zone = node
        .and_then(|n| n.labels().get(LABEL_ZONE))
        .filter(|z| !z.is_empty())
        .cloned();
    Endpoint {
        addresses: pod_ips(pod)
            .iter()
            .filter(|ip| AddressType::of(ip) == address_type)
            .map(ToString::to_string)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: should_set_hostname(pod, service)
            .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
            .flatten(),
        node_name,
        zone,
        target_ref: Some(pod_reference(pod)),
        ..Endpoint::default()
    }
}

/// A reference to the pod (kind, namespace, name, uid).
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..ObjectReference::default()
    }
}

/// Two endpoints with the same key agree on everything this controller
/// writes (a pod's resourceVersion in the reference does not count).
fn same_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| e.conditions.clone().unwrap_or_default();
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut t| {
            t.resource_version = None;
            t
        })
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && target(a) == target(b)
}
