//! The cluster as the rules see it: API objects normalised into pods with one
//! IPv4 address, namespace labels, and policies whose selectors, address
//! blocks and ports are already parsed.
//!
//! Normalising first keeps [`crate::ruleset`] free of `Option` juggling and
//! makes every "invalid input" decision in one place. The rule throughout is
//! *fail closed for allows*: a selector, CIDR or port that cannot be parsed
//! (the API server refuses them at admission, so this only happens with
//! objects written around validation) allows nothing, while the policy still
//! isolates the pods it selects.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaLabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_api::selector::LabelSelector;

/// The label every namespace carries with its own name (set by the API
/// server; added here too so a namespace not yet in the cache still has it).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A transport protocol a policy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Protocol {
    /// TCP, the default.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API spelling; `None` means TCP as upstream defaults it.
    fn parse(protocol: Option<&str>) -> Option<Protocol> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    /// The nftables keyword.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// A set of IPv4 addresses as sorted, disjoint, non-adjacent inclusive
/// ranges, so it renders as an nftables interval set without overlaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IpRanges(Vec<(u32, u32)>);

impl IpRanges {
    /// Parses `a.b.c.d/len`; host bits are masked off as Go's ParseCIDR does.
    /// IPv6 and malformed blocks yield `None`.
    pub(crate) fn parse_cidr(cidr: &str) -> Option<IpRanges> {
        let (addr, len) = cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u32 = len.parse().ok().filter(|len| *len <= 32)?;
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        let start = u32::from(addr) & mask;
        Some(IpRanges(vec![(start, start | !mask)]))
    }

    /// Every IPv4 address.
    pub(crate) fn everything() -> IpRanges {
        IpRanges(vec![(0, u32::MAX)])
    }

    /// The set holding exactly these addresses.
    pub(crate) fn from_addrs(addrs: impl IntoIterator<Item = Ipv4Addr>) -> IpRanges {
        IpRanges::normalise(addrs.into_iter().map(|a| (u32::from(a), u32::from(a))))
    }

    fn normalise(ranges: impl IntoIterator<Item = (u32, u32)>) -> IpRanges {
        let mut ranges: Vec<(u32, u32)> = ranges.into_iter().collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        IpRanges(merged)
    }

    /// Every address in either set.
    pub(crate) fn union(&self, other: &IpRanges) -> IpRanges {
        IpRanges::normalise(self.0.iter().chain(&other.0).copied())
    }

    /// The addresses of `self` that are not in `other`.
    pub(crate) fn subtract(&self, other: &IpRanges) -> IpRanges {
        let mut out = Vec::new();
        for &(start, end) in &self.0 {
            let mut next = Some(start);
            for &(cut_start, cut_end) in &other.0 {
                let Some(from) = next else { break };
                if cut_end < from || cut_start > end {
                    continue;
                }
                if cut_start > from {
                    out.push((from, cut_start - 1));
                }
                next = cut_end.checked_add(1).filter(|n| *n <= end);
            }
            if let Some(from) = next {
                out.push((from, end));
            }
        }
        IpRanges(out)
    }

    /// Whether `addr` is in the set.
    pub(crate) fn contains(&self, addr: Ipv4Addr) -> bool {
        let addr = u32::from(addr);
        let after = self.0.partition_point(|&(start, _)| start <= addr);
        after > 0 && self.0[after - 1].1 >= addr
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges as first and last address.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.0
            .iter()
            .map(|&(start, end)| (Ipv4Addr::from(start), Ipv4Addr::from(end)))
    }
}

/// A container port with a name, which policy ports can refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedPort {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) port: u16,
}

/// A pod that takes part in policy: it has an IPv4 address, has not
/// finished, and is not on the host network.
#[derive(Debug, Clone)]
pub(crate) struct PodInfo<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) ip: Ipv4Addr,
    pub(crate) labels: &'a BTreeMap<String, String>,
    /// Whether the pod runs on this node (and so is policed here).
    pub(crate) local: bool,
    pub(crate) ports: Vec<NamedPort>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> PodInfo<'a> {
    /// The pod as policy sees it, or `None` when policy ignores it: no
    /// IPv4 address yet, finished (its address may already be reused), or
    /// on the host network (its address is the node's).
    pub(crate) fn from_pod(pod: &'a Pod, node_name: &str) -> Option<PodInfo<'a>> {
        let spec = pod.spec.as_ref()?;
        let status = pod.status.as_ref()?;
        if spec.host_network == Some(true)
            || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            return None;
        }
        let ip = status
            .pod_ip
            .iter()
            .chain(status.pod_ips.iter().flatten().map(|p| &p.ip))
            .find_map(|ip| ip.parse::<Ipv4Addr>().ok())?;
        let ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        Some(PodInfo {
            namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            ip,
            labels: pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
            local: spec.node_name.as_deref() == Some(node_name),
            ports,
        })
    }

    /// The container port named `name` for `protocol`, if the pod has one.
    pub(crate) fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// Namespace labels by namespace name.
#[derive(Debug, Default)]
pub(crate) struct NamespaceLabels(BTreeMap<String, BTreeMap<String, String>>);

impl NamespaceLabels {
    pub(crate) fn new(namespaces: &[Arc<Namespace>]) -> NamespaceLabels {
        let mut map = BTreeMap::new();
        for ns in namespaces {
            let Some(name) = ns.metadata.name.clone() else {
                continue;
            };
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels
                .entry(NAMESPACE_NAME_LABEL.to_string())
                .or_insert_with(|| name.clone());
            map.insert(name, labels);
        }
        NamespaceLabels(map)
    }

    /// Whether `selector` picks namespace `name`. A namespace the cache has
    /// not seen yet carries only its name label.
    pub(crate) fn selects(&self, selector: &LabelSelector, name: &str) -> bool {
        match self.0.get(name) {
            Some(labels) => selector.matches(labels),
            None => selector.matches(&BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
        }
    }
}

/// One entry of a rule's `from` or `to`.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// Any address (an empty peer).
    All,
    /// Pods picked by labels.
    Pods {
        /// Namespaces to look in; `None` is the policy's own namespace.
        namespaces: Option<LabelSelector>,
        pods: LabelSelector,
    },
    /// Addresses in a CIDR, minus its exceptions.
    Block(IpRanges),
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortMatch {
    /// Every port of a protocol.
    Protocol(Protocol),
    /// `port` to `endPort` (or just `port`), inclusive.
    Range(Protocol, u16, u16),
    /// A container port name, resolved against the destination pod.
    Named(Protocol, String),
}

/// One ingress or egress rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// `None`: every peer (missing or empty `from`/`to`). Entries that could
    /// not be parsed are left out, so `Some(empty)` matches nothing.
    pub(crate) peers: Option<Vec<Peer>>,
    /// `None`: every port and protocol (missing or empty `ports`). Entries
    /// that could not be parsed are left out, so `Some(empty)` matches
    /// nothing.
    pub(crate) ports: Option<Vec<PortMatch>>,
}

/// A NetworkPolicy, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) selector: LabelSelector,
    /// `Some` when the policy isolates selected pods for ingress; the rules
    /// that let traffic in (empty: none).
    pub(crate) ingress: Option<Vec<Rule>>,
    /// Likewise for egress.
    pub(crate) egress: Option<Vec<Rule>>,
}

/// Traffic direction, as seen from the policed pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Direction {
    Ingress,
    Egress,
}

impl Policy {
    pub(crate) fn from_api(policy: &NetworkPolicy) -> Policy {
        let default_spec = NetworkPolicySpec::default();
        let spec = policy.spec.as_ref().unwrap_or(&default_spec);
        let has_egress_rules = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        let (ingress_type, egress_type) = match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            ),
            _ => (true, has_egress_rules),
        };
        let ingress = ingress_type.then(|| {
            spec.ingress
                .iter()
                .flatten()
                .map(|r| Rule::from_api(r.from.as_deref(), r.ports.as_deref()))
                .collect()
        });
        let egress = egress_type.then(|| {
            spec.egress
                .iter()
                .flatten()
                .map(|r| Rule::from_api(r.to.as_deref(), r.ports.as_deref()))
                .collect()
        });
        Policy {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            name: policy.metadata.name.clone().unwrap_or_default(),
            // A missing podSelector selects every pod, like `{}`.
            selector: match &spec.pod_selector {
                Some(s) => selector(s),
                None => LabelSelector::everything(),
            },
            ingress,
            egress,
        }
    }

    /// The rules for one direction, if the policy isolates it.
    pub(crate) fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether the policy applies to `pod`.
    pub(crate) fn selects(&self, pod: &PodInfo<'_>) -> bool {
        pod.namespace == self.namespace && self.selector.matches(pod.labels)
    }

    /// Whether `peer` (as written in this policy) picks `pod`.
    pub(crate) fn peer_selects(
        &self,
        peer: &Peer,
        pod: &PodInfo<'_>,
        namespaces: &NamespaceLabels,
    ) -> bool {
        match peer {
            Peer::All => true,
            Peer::Block(ranges) => ranges.contains(pod.ip),
            Peer::Pods {
                namespaces: ns_selector,
                pods,
            } => {
                let in_namespace = match ns_selector {
                    None => pod.namespace == self.namespace,
                    Some(s) => namespaces.selects(s, pod.namespace),
                };
                in_namespace && pods.matches(pod.labels)
            }
        }
    }
}

impl Rule {
    fn from_api(peers: Option<&[NetworkPolicyPeer]>, ports: Option<&[NetworkPolicyPort]>) -> Rule {
        Rule {
            peers: peers
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().filter_map(peer).collect()),
            ports: ports
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().filter_map(port).collect()),
        }
    }
}

/// Converts a `metav1.LabelSelector`; one that does not parse selects
/// nothing.
fn selector(selector: &MetaLabelSelector) -> LabelSelector {
    serde_json::to_value(selector)
        .ok()
        .and_then(|v| LabelSelector::from_label_selector(&v).ok())
        .unwrap_or_else(LabelSelector::nothing)
}

fn peer(peer: &NetworkPolicyPeer) -> Option<Peer> {
    match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
        (Some(block), _, _) => ip_block(block).map(Peer::Block),
        (None, None, None) => Some(Peer::All),
        (None, namespaces, pods) => Some(Peer::Pods {
            namespaces: namespaces.as_ref().map(selector),
            pods: pods
                .as_ref()
                .map_or_else(LabelSelector::everything, selector),
        }),
    }
}

fn ip_block(block: &IPBlock) -> Option<IpRanges> {
    let mut ranges = IpRanges::parse_cidr(&block.cidr)?;
    for except in block.except.iter().flatten() {
        // An exception that does not parse makes the whole block unusable:
        // allowing more than the author meant is worse than allowing less.
        ranges = ranges.subtract(&IpRanges::parse_cidr(except)?);
    }
    Some(ranges)
}

fn port(port: &NetworkPolicyPort) -> Option<PortMatch> {
    let protocol = Protocol::parse(port.protocol.as_deref())?;
    match &port.port {
        None => Some(PortMatch::Protocol(protocol)),
        Some(IntOrString::String(name)) => Some(PortMatch::Named(protocol, name.clone())),
        Some(IntOrString::Int(first)) => {
            let first = u16::try_from(*first).ok().filter(|p| *p > 0)?;
            let last = match port.end_port {
                None => first,
                Some(end) => u16::try_from(end).ok().filter(|end| *end >= first)?,
            };
            Some(PortMatch::Range(protocol, first, last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(text: &[&str]) -> IpRanges {
        text.iter().fold(IpRanges::default(), |acc, cidr| {
            acc.union(&IpRanges::parse_cidr(cidr).expect("cidr"))
        })
    }

    fn shown(r: &IpRanges) -> Vec<String> {
        r.ranges().map(|(a, b)| format!("{a}-{b}")).collect()
    }

    #[test]
    fn cidr_masks_host_bits_and_refuses_garbage() {
        let r = IpRanges::parse_cidr("10.0.0.7/24").expect("parses");
        assert_eq!(shown(&r), ["10.0.0.0-10.0.0.255"]);
        assert_eq!(
            shown(&IpRanges::parse_cidr("0.0.0.0/0").expect("parses")),
            ["0.0.0.0-255.255.255.255"]
        );
        assert!(IpRanges::parse_cidr("10.0.0.0/33").is_none());
        assert!(IpRanges::parse_cidr("fd00::/8").is_none());
        assert!(IpRanges::parse_cidr("10.0.0.0").is_none());
    }

    #[test]
    fn union_merges_overlapping_and_adjacent_ranges() {
        let r = ranges(&[
            "10.0.0.0/25",
            "10.0.0.128/25",
            "10.0.0.64/26",
            "10.9.0.0/16",
        ]);
        assert_eq!(shown(&r), ["10.0.0.0-10.0.0.255", "10.9.0.0-10.9.255.255"]);
    }

    #[test]
    fn subtract_cuts_holes_and_edges() {
        let block = ranges(&["10.0.0.0/24"]);
        let cut = block.subtract(&ranges(&["10.0.0.0/30", "10.0.0.128/25", "10.0.0.64/32"]));
        assert_eq!(shown(&cut), ["10.0.0.4-10.0.0.63", "10.0.0.65-10.0.0.127"]);
        assert!(cut.contains("10.0.0.4".parse().expect("ip")));
        assert!(!cut.contains("10.0.0.64".parse().expect("ip")));
        assert!(!cut.contains("10.0.0.200".parse().expect("ip")));
        let everything = ranges(&["0.0.0.0/0"]);
        assert!(everything.subtract(&everything).is_empty());
        let top = everything.subtract(&ranges(&["0.0.0.0/1"]));
        assert_eq!(shown(&top), ["128.0.0.0-255.255.255.255"]);
    }

    #[test]
    fn ports_default_to_tcp_and_refuse_bad_ranges() {
        let p = |proto: Option<&str>, port: Option<IntOrString>, end: Option<i32>| {
            super::port(&NetworkPolicyPort {
                protocol: proto.map(str::to_string),
                port,
                end_port: end,
            })
        };
        assert_eq!(
            p(None, Some(IntOrString::Int(80)), None),
            Some(PortMatch::Range(Protocol::Tcp, 80, 80))
        );
        assert_eq!(
            p(Some("UDP"), Some(IntOrString::Int(1000)), Some(2000)),
            Some(PortMatch::Range(Protocol::Udp, 1000, 2000))
        );
        assert_eq!(
            p(Some("SCTP"), None, None),
            Some(PortMatch::Protocol(Protocol::Sctp))
        );
        assert_eq!(
            p(None, Some(IntOrString::String("http".into())), None),
            Some(PortMatch::Named(Protocol::Tcp, "http".into()))
        );
        assert_eq!(p(None, Some(IntOrString::Int(90)), Some(80)), None);
        assert_eq!(p(None, Some(IntOrString::Int(70000)), None), None);
        assert_eq!(p(Some("ICMP"), None, None), None);
    }

    #[test]
    fn policy_types_default_from_egress_rules() {
        let mut policy = NetworkPolicy {
            spec: Some(NetworkPolicySpec {
                egress: Some(vec![Default::default()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let parsed = Policy::from_api(&policy);
        assert_eq!(parsed.ingress.as_ref().map(Vec::len), Some(0));
        assert_eq!(parsed.egress.as_ref().map(Vec::len), Some(1));

        policy.spec = Some(NetworkPolicySpec::default());
        let parsed = Policy::from_api(&policy);
        assert!(parsed.ingress.is_some());
        assert!(parsed.egress.is_none());
        assert!(parsed.selector.is_everything());

        policy.spec = Some(NetworkPolicySpec {
            policy_types: Some(vec!["Egress".into()]),
            ingress: Some(vec![Default::default()]),
            ..Default::default()
        });
        let parsed = Policy::from_api(&policy);
        assert!(parsed.ingress.is_none());
        assert_eq!(parsed.egress.as_ref().map(Vec::len), Some(0));
    }

    #[test]
    fn empty_lists_mean_everything_and_bad_entries_nothing() {
        let rule = Rule::from_api(Some(&[]), Some(&[]));
        assert!(rule.peers.is_none());
        assert!(rule.ports.is_none());
        let bad_block = NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: "10.0.0.0/8".into(),
                except: Some(vec!["nonsense".into()]),
            }),
            ..Default::default()
        };
        let bad_port = NetworkPolicyPort {
            protocol: Some("ICMP".into()),
            ..Default::default()
        };
        let rule = Rule::from_api(Some(&[bad_block]), Some(&[bad_port]));
        assert_eq!(rule.peers.map(|p| p.len()), Some(0));
        assert_eq!(rule.ports, Some(vec![]));
    }
}
