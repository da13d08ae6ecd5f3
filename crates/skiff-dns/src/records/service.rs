//! The records of one Service, from the Service and its EndpointSlices.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};

use super::{Node, SrvData, Zone};

/// Everything one Service contributes to the index: its owner names with
/// their data, and the PTR targets of its IPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRecords {
    pub(super) nodes: Vec<(Name, Node)>,
    /// (IP, name it points back to, whether the IP is a cluster IP).
    pub(super) ptrs: Vec<(IpAddr, Name, bool)>,
}

/// One ready endpoint address with the ports of its slice.
struct Endpoint<'a> {
    /// `<hostname>.<service>.<ns>.svc.<domain>`.
    name: Name,
    ip: IpAddr,
    ports: &'a [EndpointPort],
}

/// The records of `service` (its `namespace` and `name` already known) with
/// the endpoints of `slices`; `None` when it has none (a headless Service
/// without ready endpoints, an ExternalName pointing at an IP).
pub(super) fn build<'a>(
    zone: &Zone,
    namespace: &str,
    name: &str,
    service: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice>,
) -> Option<ServiceRecords> {
    let spec = service.spec.as_ref()?;
    let service_name = zone.name(&format!("{name}.{namespace}.svc"))?;
    let mut nodes: BTreeMap<Name, Node> = BTreeMap::new();
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref()?.trim_end_matches('.');
        // An IP is not a name to alias; CoreDNS serves nothing for it.
        if target.is_empty() || target.parse::<IpAddr>().is_ok() {
            return None;
        }
        let target = Name::from_ascii(format!("{target}.")).ok()?;
        nodes.insert(
            service_name,
            Node {
                cname: Some(target),
                ..Node::default()
            },
        );
        return Some(finish(nodes, Vec::new()));
    }

    let cluster_ips = cluster_ips(service);
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let endpoints: Vec<Endpoint<'_>> = slices
        .filter(|slice| matches!(slice.address_type.as_str(), "IPv4" | "IPv6"))
        .flat_map(|slice| {
            let ports = slice.ports.as_deref().unwrap_or_default();
            slice.endpoints.iter().flatten().flat_map(move |endpoint| {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let addresses = if ready || publish_not_ready {
                    endpoint.addresses.as_slice()
                } else {
                    &[]
                };
                addresses.iter().filter_map(move |address| {
                    let ip: IpAddr = address.parse().ok()?;
                    let host = match endpoint.hostname.as_deref() {
                        Some(hostname) if !hostname.is_empty() => hostname.to_string(),
                        _ => dashed(ip),
                    };
                    Some((host, ip, ports))
                })
            })
        })
        .filter_map(|(host, ip, ports)| {
            Some(Endpoint {
                name: Name::from_ascii(format!("{host}.{service_name}")).ok()?,
                ip,
                ports,
            })
        })
        .collect();

    let mut ptrs = Vec::new();
    if cluster_ips.is_empty() {
        // Headless: the Service name is its endpoints, and is no name at all
        // without them.
        if endpoints.is_empty() {
            return None;
        }
        let node = nodes.entry(service_name.clone()).or_default();
        for endpoint in &endpoints {
            node.addrs.push(endpoint.ip);
            node.srv.extend(srv_of(&endpoint.name, endpoint.ports));
        }
        for endpoint in &endpoints {
            for port in endpoint.ports {
                if let Some(owner) = port_name(&service_name, port.name.as_deref(), &port.protocol)
                {
                    let node = nodes.entry(owner).or_default();
                    node.addrs.push(endpoint.ip);
                    node.srv
                        .extend(srv_of(&endpoint.name, std::slice::from_ref(port)));
                }
            }
        }
    } else {
        let ports = spec.ports.as_deref().unwrap_or_default();
        let node = nodes.entry(service_name.clone()).or_default();
        node.addrs.extend(&cluster_ips);
        for port in ports {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            node.srv.push(SrvData {
                target: service_name.clone(),
                port: number,
            });
        }
        for port in ports {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            if let Some(owner) = port_name(&service_name, port.name.as_deref(), &port.protocol) {
                let node = nodes.entry(owner).or_default();
                node.addrs.extend(&cluster_ips);
                node.srv.push(SrvData {
                    target: service_name.clone(),
                    port: number,
                });
            }
        }
        ptrs.extend(
            cluster_ips
                .iter()
                .map(|ip| (*ip, service_name.clone(), true)),
        );
    }
    // Every endpoint answers by its own name, on headless and ClusterIP
    // Services alike (as CoreDNS does), and its IP points back at that name.
    for endpoint in &endpoints {
        let node = nodes.entry(endpoint.name.clone()).or_default();
        node.addrs.push(endpoint.ip);
        node.srv.extend(srv_of(&endpoint.name, endpoint.ports));
        ptrs.push((endpoint.ip, endpoint.name.clone(), false));
    }
    // `_<proto>.<service>` exists as the parent of `_<port>._<proto>.…`.
    let parents: Vec<Name> = nodes
        .keys()
        .filter(|owner| owner.num_labels() == service_name.num_labels() + 2)
        .filter(|owner| owner.iter().next().is_some_and(|l| l.starts_with(b"_")))
        .map(Name::base_name)
        .collect();
    for parent in parents {
        nodes.entry(parent).or_default();
    }
    ptrs.sort();
    ptrs.dedup();
    Some(finish(nodes, ptrs))
}

/// Sort and deduplicate each node's data.
fn finish(nodes: BTreeMap<Name, Node>, ptrs: Vec<(IpAddr, Name, bool)>) -> ServiceRecords {
    let nodes = nodes
        .into_iter()
        .map(|(name, mut node)| {
            node.addrs.sort_unstable();
            node.addrs.dedup();
            node.srv.sort_unstable();
            node.srv.dedup();
            (name, node)
        })
        .collect();
    ServiceRecords { nodes, ptrs }
}

/// The Service's cluster IPs (none when headless or ExternalName).
pub(super) fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let listed = spec.cluster_ips.as_deref().unwrap_or_default();
    let ips: Vec<&String> = if listed.is_empty() {
        spec.cluster_ip.iter().collect()
    } else {
        listed.iter().collect()
    };
    ips.into_iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// SRV data for each numbered port, pointing at `target`.
fn srv_of<'a>(target: &'a Name, ports: &'a [EndpointPort]) -> impl Iterator<Item = SrvData> + 'a {
    ports.iter().filter_map(move |port| {
        Some(SrvData {
            target: target.clone(),
            port: u16::try_from(port.port?).ok()?,
        })
    })
}

/// `_<port>._<proto>.<service>` for a named port.
fn port_name(service_name: &Name, port: Option<&str>, protocol: &Option<String>) -> Option<Name> {
    let port = port.filter(|p| !p.is_empty())?;
    let protocol = protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
    Name::from_ascii(format!("_{port}._{protocol}.{service_name}")).ok()
}

/// An endpoint's name when it has no hostname: its IP with dashes, as CoreDNS
/// spells it (`10-42-0-5`, `fd00--5`).
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut label = v6.to_string().replace(':', "-");
            if label.ends_with('-') {
                label.push('0');
            }
            label
        }
    }
}
