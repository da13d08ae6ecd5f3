//! What the proxy reads from Services and EndpointSlices: one
//! [`ServicePort`] per proxied port, with the endpoints its traffic
//! policies allow.
//!
//! As upstream's proxies do:
//! - headless, ExternalName and address-less Services are not proxied, nor are
//!   Services labelled `service.kubernetes.io/service-proxy-name` (another
//!   proxy owns them);
//! - an EndpointSlice belongs to the Service its `kubernetes.io/service-name`
//!   label names; a Service port takes the slice ports of the same name and
//!   protocol, which carry the resolved (possibly named) target port;
//! - an endpoint is the first address of a slice endpoint, deduplicated over
//!   slices; `ready` and `serving` default to true, `terminating` to false;
//! - usable endpoints are the ready ones or, when none is ready, the serving
//!   and terminating ones (so a rolling update never leaves a gap), chosen
//!   separately for the cluster and the node-local sets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::ProxyConfig;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services with this label are handled by another proxy.
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Upstream's default session affinity timeout (three hours).
const DEFAULT_AFFINITY_SECS: u32 = 10_800;

/// A transport protocol a Service port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The nft name (`tcp`, `udp`, `sctp`).
    pub fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One backend address of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The address traffic is DNATed to.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// Whether it runs on this node (by `nodeName` or by address).
    pub local: bool,
    /// The endpoint's `ready` condition.
    pub ready: bool,
    /// The endpoint's `serving` condition.
    pub serving: bool,
    /// The endpoint's `terminating` condition.
    pub terminating: bool,
}

/// One port of a proxied Service, with everything the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a lone unnamed port).
    pub port_name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` of a LoadBalancer Service.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP` with this timeout in seconds.
    pub affinity_secs: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` on a NodePort or LoadBalancer Service.
    pub external_local: bool,
    /// All endpoints from the Service's slices, in address order.
    pub endpoints: Vec<Endpoint>,
}

/// The endpoints one Service port may use, by traffic policy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Endpoints for `Cluster` policy traffic (empty when unused).
    pub cluster: Vec<Endpoint>,
    /// Endpoints on this node for `Local` policy traffic (empty when unused).
    pub local: Vec<Endpoint>,
    /// Whether any endpoint anywhere can take traffic.
    pub any: bool,
}

impl ServicePort {
    /// Whether traffic can arrive other than through the ClusterIP.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// The base of the port's chain and set names: `ns/name/proto/port`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port_name
        )
    }

    /// Splits the endpoints by the traffic policies, preferring ready
    /// endpoints and falling back to serving-and-terminating ones.
    pub fn categorize(&self) -> Categorized {
        let uses_cluster = !self.internal_local || self.externally_accessible();
        let uses_local =
            self.internal_local || (self.external_local && self.externally_accessible());
        let mut out = Categorized::default();
        if uses_cluster {
            out.cluster = usable(self.endpoints.iter());
            out.any = !out.cluster.is_empty();
        }
        if uses_local {
            out.local = usable(self.endpoints.iter().filter(|e| e.local));
            out.any = out.any
                || self
                    .endpoints
                    .iter()
                    .any(|e| e.ready || (e.serving && e.terminating));
        }
        out
    }
}

fn usable<'a>(endpoints: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = endpoints.clone().filter(|e| e.ready).copied().collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .filter(|e| e.serving && e.terminating)
        .copied()
        .collect()
}

/// The proxied Service ports of a snapshot, in the Services' order.
pub fn service_ports(
    config: &ProxyConfig,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service
            && slice.address_type == "IPv4"
        {
            by_service
                .entry((namespace, service))
                .or_default()
                .push(slice);
        }
    }
    let mut ports = Vec::new();
    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let slices = by_service
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        ports.extend(ports_of(config, service, slices));
    }
    ports
}

/// Whether `s` is safe in an nft identifier (chain and set names).
fn nft_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn ports_of(
    config: &ProxyConfig,
    service: &Service,
    slices: &[&EndpointSlice],
) -> Vec<ServicePort> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let other_proxy = service
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    // Headless ("None") and ExternalName Services have no usable ClusterIP.
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let Some(cluster_ip) = cluster_ip else {
        return Vec::new();
    };
    if other_proxy || service_type == "ExternalName" {
        return Vec::new();
    }
    if !nft_safe(&namespace) || !nft_safe(&name) {
        tracing::warn!(%namespace, %name, "not proxying a Service whose name nft cannot carry");
        return Vec::new();
    }
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let load_balancer_ips: Vec<Ipv4Addr> = if service_type == "LoadBalancer" {
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            // An ingress in "Proxy" mode is reached through the load balancer,
            // never directly.
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let affinity_secs = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECS)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = matches!(service_type, "NodePort" | "LoadBalancer")
        && spec.external_traffic_policy.as_deref() == Some("Local");

    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let port_name = port.name.clone().unwrap_or_default();
        let (Some(protocol), Ok(number)) = (
            Protocol::parse(port.protocol.as_deref()),
            u16::try_from(port.port),
        ) else {
            continue;
        };
        if !nft_safe(&port_name) {
            continue;
        }
        out.push(ServicePort {
            namespace: namespace.clone(),
            name: name.clone(),
            endpoints: endpoints_for(config, slices, &port_name, protocol),
            port_name,
            protocol,
            cluster_ip,
            port: number,
            node_port: port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_secs,
            internal_local,
            external_local,
        });
    }
    out
}

/// The endpoints of the slice ports named `port_name` with `protocol`
/// (an unnamed slice port matches an unnamed Service port), deduplicated by
/// address and port (a local copy wins), in address order.
fn endpoints_for(
    config: &ProxyConfig,
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
) -> Vec<Endpoint> {
    let mut found: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find_map(|p| {
            let same = p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol);
            same.then_some(p.port?)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
        });
        let Some(target) = target else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let local = config.node_ips.contains(&ip)
                || (!config.node_name.is_empty()
                    && endpoint.node_name.as_deref() == Some(config.node_name.as_str()));
            let candidate = Endpoint {
                ip,
                port: target,
                local,
                ready: conditions.ready.unwrap_or(true),
                serving: conditions.serving.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
            };
            found
                .entry((ip, target))
                .and_modify(|e| {
                    if local && !e.local {
                        *e = candidate;
                    }
                })
                .or_insert(candidate);
        }
    }
    found.into_values().collect()
}
