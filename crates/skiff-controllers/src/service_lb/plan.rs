//! The pure decision: which addresses a LoadBalancer Service should show.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_client::events::EventType;

/// Upstream's Node label that keeps a node out of every load balancer.
pub const LABEL_EXCLUDE_FROM_LB: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// k3s's Node label: once any node carries it, only nodes where it is
/// `true` serve LoadBalancer Services.
pub const LABEL_ENABLE_LB: &str = "svccontroller.k3s.cattle.io/enablelb";
/// k3s's pool label: with [`LABEL_ENABLE_LB`] in use, a Service carrying it
/// is served only by the nodes with the same value.
pub const LABEL_LB_POOL: &str = "svccontroller.k3s.cattle.io/lbpool";
/// The `ipMode` written on every ingress point: traffic to the address is
/// for the Service (the service proxy may short-circuit it).
pub const IP_MODE_VIP: &str = "VIP";

/// Why the status changes, as the event recorded with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbEvent {
    /// The Service now shows a different, non-empty set of addresses.
    Updated {
        /// The addresses it showed before.
        from: Vec<String>,
        /// The addresses it shows now.
        to: Vec<String>,
    },
    /// No node may serve the Service, so it shows no address.
    Unavailable,
    /// The Service is no longer a LoadBalancer; its addresses are removed.
    Deleted,
}

impl LbEvent {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            Self::Unavailable => EventType::Warning,
            Self::Updated { .. } | Self::Deleted => EventType::Normal,
        }
    }

    /// The event's reason (k3s's and the upstream service controller's).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Updated { .. } => "UpdatedLoadBalancer",
            Self::Unavailable => "UnAvailableLoadBalancer",
            Self::Deleted => "DeletedLoadBalancer",
        }
    }

    /// The event's message.
    pub fn message(&self) -> String {
        match self {
            Self::Updated { from, to } => format!(
                "Updated LoadBalancer with new IPs: [{}] -> [{}]",
                from.join(" "),
                to.join(" ")
            ),
            Self::Unavailable => "There are no available nodes for LoadBalancer".into(),
            Self::Deleted => "Deleted load balancer".into(),
        }
    }
}

/// A status write: the new `status.loadBalancer.ingress` (empty clears it)
/// and the event that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The ingress points to write.
    pub ingress: Vec<LoadBalancerIngress>,
    /// The event to record once written.
    pub event: LbEvent,
}

/// Whether this controller serves the Service: `type: LoadBalancer` with no
/// `loadBalancerClass` (a class names another implementation).
pub fn wants_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
    })
}

/// Whether the Service sends external traffic only to endpoints on the node
/// it arrives at (`externalTrafficPolicy: Local`).
pub fn requests_only_local_traffic(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        matches!(spec.type_.as_deref(), Some("LoadBalancer" | "NodePort"))
            && spec.external_traffic_policy.as_deref() == Some("Local")
    })
}

/// Decides the Service's status. `nodes` are all the cluster's Nodes;
/// `slices` the Service's EndpointSlices (read only for
/// `externalTrafficPolicy: Local`). `None` when the status is already right
/// or is not this controller's to write.
pub fn plan(
    service: &Service,
    nodes: &[Arc<Node>],
    slices: &[Arc<EndpointSlice>],
) -> Option<StatusUpdate> {
    let current = current_ingress(service);
    if !wants_load_balancer(service) {
        // Another implementation's LoadBalancer is left alone; anything
        // else that still shows addresses stopped being a LoadBalancer.
        let is_load_balancer = service
            .spec
            .as_ref()
            .is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"));
        return (!is_load_balancer && !current.is_empty()).then(|| StatusUpdate {
            ingress: Vec::new(),
            event: LbEvent::Deleted,
        });
    }
    let ingress: Vec<LoadBalancerIngress> = addresses(service, nodes, slices)
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some(IP_MODE_VIP.into()),
            ..LoadBalancerIngress::default()
        })
        .collect();
    if ingress == current {
        return None;
    }
    let event = if ingress.is_empty() {
        LbEvent::Unavailable
    } else {
        LbEvent::Updated {
            from: ingress_strings(&current),
            to: ingress_strings(&ingress),
        }
    };
    Some(StatusUpdate { ingress, event })
}

fn current_ingress(service: &Service) -> Vec<LoadBalancerIngress> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

/// Each ingress point as its IP, or its host name if it has no IP.
fn ingress_strings(ingress: &[LoadBalancerIngress]) -> Vec<String> {
    ingress
        .iter()
        .map(|i| {
            i.ip.clone()
                .or_else(|| i.hostname.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The addresses of the nodes serving the Service: their ExternalIPs if any
/// of them has one, else their InternalIPs; in the order of the Service's
/// `ipFamilies`, each family sorted.
fn addresses(service: &Service, nodes: &[Arc<Node>], slices: &[Arc<EndpointSlice>]) -> Vec<IpAddr> {
    let local_nodes = requests_only_local_traffic(service).then(|| nodes_with_ready_pods(slices));
    let pool = service
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_LB_POOL))
        .filter(|p| !p.is_empty());
    let node_selection = nodes.iter().any(|n| label(n, LABEL_ENABLE_LB).is_some());
    let mut external = BTreeSet::new();
    let mut internal = BTreeSet::new();
    for node in nodes {
        if !is_ready(node)
            || node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
            || label(node, LABEL_EXCLUDE_FROM_LB).is_some()
        {
            continue;
        }
        if node_selection
            && (label(node, LABEL_ENABLE_LB) != Some("true")
                || pool.is_some_and(|p| label(node, LABEL_LB_POOL) != Some(p.as_str())))
        {
            continue;
        }
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if local_nodes
            .as_ref()
            .is_some_and(|local| !local.contains(name))
        {
            continue;
        }
        let node_addresses = node.status.as_ref().and_then(|s| s.addresses.as_deref());
        for address in node_addresses.unwrap_or_default() {
            let Ok(ip) = address.address.parse::<IpAddr>() else {
                continue;
            };
            match address.type_.as_str() {
                "ExternalIP" => external.insert(ip),
                "InternalIP" => internal.insert(ip),
                _ => false,
            };
        }
    }
    let chosen = if external.is_empty() {
        internal
    } else {
        external
    };
    let families = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .filter(|f| !f.is_empty())
        // The API server always sets the families; IPv4 is its default.
        .unwrap_or_else(|| vec!["IPv4".into()]);
    let mut result = Vec::new();
    for family in families {
        let v4 = match family.as_str() {
            "IPv4" => true,
            "IPv6" => false,
            _ => continue,
        };
        result.extend(chosen.iter().filter(|ip| ip.is_ipv4() == v4));
    }
    result
}

/// The nodes hosting a ready Pod endpoint among `slices`.
fn nodes_with_ready_pods(slices: &[Arc<EndpointSlice>]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.target_ref.as_ref().and_then(|t| t.kind.as_deref()) == Some("Pod"))
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}
