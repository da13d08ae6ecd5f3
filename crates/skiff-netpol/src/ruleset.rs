//! The pure part: cluster state in, one nftables table out.
//!
//! [`Ruleset::plan`] decides, [`Ruleset::to_nft`] spells the decision in
//! `nft -f` syntax. The shape keeps the rule count proportional to the
//! policies, not to pods × pods:
//!
//! - every rule of every policy that selects a local pod gets one *peer set*
//!   (`np3-in0-peers`: the addresses of the pods its selectors pick anywhere
//!   in the cluster, plus its ipBlocks minus their exceptions, merged into
//!   disjoint intervals) and, when it names ports, one *port set*
//!   (`np3-in0-ports`: destination address . protocol . port, the named
//!   ports resolved against the destination pods);
//! - local pods selected by the same policies share one chain
//!   (`ingress-0`, `egress-0`) holding those policies' rules, each ending in
//!   `return` when the packet matches and the chain in `drop`;
//! - the base chain dispatches on the pod address through two verdict maps
//!   (`egress-pods` on the source, `ingress-pods` on the destination), so a
//!   packet costs two hash lookups plus the rules of its own pods' policies.
//!
//! Worked example: `web` (10.42.0.2) in `shop` is selected by `allow-front`
//! (ingress from pods `role=front` on TCP 80), `front-1` (10.42.0.3) has
//! `role=front`:
//!
//! ```text
//! set np0-in0-peers { type ipv4_addr; flags interval; elements = { 10.42.0.3 } }
//! map ingress-pods { type ipv4_addr : verdict; elements = { 10.42.0.2 : jump ingress-0 } }
//! chain ingress-0 {
//!     ip saddr @np0-in0-peers meta l4proto tcp th dport { 80 } return
//!     drop
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::model::{
    Direction, IpRanges, NamespaceLabels, Peer, PodInfo, Policy, PortMatch, Protocol, Rule,
};

/// Longest rule comment nftables keeps.
const MAX_COMMENT: usize = 128;

/// The contents of a named set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SetElements {
    /// Peer addresses, as an interval set.
    Addrs(IpRanges),
    /// Destination address . protocol . port, for named ports.
    Ports(BTreeSet<(Ipv4Addr, Protocol, u16)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NftSet {
    name: String,
    elements: SetElements,
}

/// What a rule requires of the transport header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PortCond {
    /// Any packet.
    Any,
    /// Any port of one protocol.
    Protocol(Protocol),
    /// Destination ports of one protocol, as inclusive ranges.
    Ports(Protocol, Vec<(u16, u16)>),
    /// Destination address . protocol . port in a port set.
    Named(String),
}

/// One `... return` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NftRule {
    /// Peer set the other end's address must be in; `None`: any.
    peers: Option<String>,
    ports: PortCond,
    comment: String,
}

/// The chain shared by the local pods that the same policies select.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chain {
    name: String,
    direction: Direction,
    /// `namespace/name` of the policies, for the reader of `nft list`.
    policies: Vec<String>,
    rules: Vec<NftRule>,
}

/// The desired table, before it is spelled as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ruleset {
    sets: Vec<NftSet>,
    chains: Vec<Chain>,
    /// Local pods isolated for ingress: address → chain.
    ingress: BTreeMap<Ipv4Addr, String>,
    /// Local pods isolated for egress: address → chain.
    egress: BTreeMap<Ipv4Addr, String>,
}

/// Everything [`Ruleset::plan`] looks things up in.
struct Cluster<'a> {
    pods: Vec<PodInfo<'a>>,
    namespaces: NamespaceLabels,
    policies: Vec<Policy>,
}

impl Ruleset {
    /// Decides the rules for the pods on `node_name`. Pods on other nodes
    /// matter only as peers.
    pub(crate) fn plan(
        node_name: &str,
        pods: &[Arc<Pod>],
        namespaces: &[Arc<Namespace>],
        policies: &[Arc<NetworkPolicy>],
    ) -> Ruleset {
        let mut pods: Vec<PodInfo<'_>> = pods
            .iter()
            .filter_map(|p| PodInfo::from_pod(p, node_name))
            .collect();
        pods.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
        let mut policies: Vec<Policy> = policies.iter().map(|p| Policy::from_api(p)).collect();
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let cluster = Cluster {
            pods,
            namespaces: NamespaceLabels::new(namespaces),
            policies,
        };

        let mut ruleset = Ruleset::default();
        // Compiled rules per (policy, direction), built on first use.
        let mut compiled: BTreeMap<(usize, Direction), Vec<NftRule>> = BTreeMap::new();
        for direction in [Direction::Ingress, Direction::Egress] {
            // Policy indices → addresses of the local pods they isolate.
            let mut groups: BTreeMap<Vec<usize>, Vec<Ipv4Addr>> = BTreeMap::new();
            let mut seen = BTreeSet::new();
            for pod in cluster.pods.iter().filter(|p| p.local) {
                // Two live pods never share an address; a stale status can
                // say so for a moment, and the map may hold a key once.
                if !seen.insert(pod.ip) {
                    continue;
                }
                let selecting: Vec<usize> = cluster
                    .policies
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.rules(direction).is_some() && p.selects(pod))
                    .map(|(i, _)| i)
                    .collect();
                if !selecting.is_empty() {
                    groups.entry(selecting).or_default().push(pod.ip);
                }
            }
            for (index, (policy_ids, addrs)) in groups.into_iter().enumerate() {
                let name = format!("{}-{index}", direction_word(direction));
                let mut rules = Vec::new();
                for &id in &policy_ids {
                    let policy_rules = compiled
                        .entry((id, direction))
                        .or_insert_with(|| ruleset.compile_policy(&cluster, id, direction));
                    rules.extend(policy_rules.iter().cloned());
                }
                let map = match direction {
                    Direction::Ingress => &mut ruleset.ingress,
                    Direction::Egress => &mut ruleset.egress,
                };
                map.extend(addrs.into_iter().map(|a| (a, name.clone())));
                ruleset.chains.push(Chain {
                    name,
                    direction,
                    policies: policy_ids
                        .iter()
                        .map(|&id| {
                            let p = &cluster.policies[id];
                            format!("{}/{}", p.namespace, p.name)
                        })
                        .collect(),
                    rules,
                });
            }
        }
        ruleset
    }

    /// The rules of one direction of one policy, adding the sets they use.
    fn compile_policy(
        &mut self,
        cluster: &Cluster<'_>,
        id: usize,
        direction: Direction,
    ) -> Vec<NftRule> {
        let policy = &cluster.policies[id];
        let mut out = Vec::new();
        for (index, rule) in policy
            .rules(direction)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let prefix = format!("np{id}-{}{index}", short_word(direction));
            let comment = truncate(format!(
                "{}/{} {} rule {index}",
                policy.namespace,
                policy.name,
                direction_word(direction)
            ));
            out.extend(self.compile_rule(cluster, policy, direction, rule, &prefix, &comment));
        }
        out
    }

    fn compile_rule(
        &mut self,
        cluster: &Cluster<'_>,
        policy: &Policy,
        direction: Direction,
        rule: &Rule,
        prefix: &str,
        comment: &str,
    ) -> Vec<NftRule> {
        // The addresses at the other end, or `None` for any address.
        let peer_addrs = rule.peers.as_ref().map(|peers| {
            peers
                .iter()
                .fold(IpRanges::default(), |acc, peer| match peer {
                    Peer::All => IpRanges::everything(),
                    Peer::Block(block) => acc.union(block),
                    Peer::Pods { .. } => acc.union(&IpRanges::from_addrs(
                        cluster
                            .pods
                            .iter()
                            .filter(|pod| policy.peer_selects(peer, pod, &cluster.namespaces))
                            .map(|pod| pod.ip),
                    )),
                })
        });
        let peer_set = match peer_addrs {
            None => None,
            Some(addrs) if addrs.is_empty() => return Vec::new(),
            // Every address (an empty peer, or 0.0.0.0/0) needs no lookup.
            Some(addrs) if addrs == IpRanges::everything() => None,
            Some(addrs) => {
                let name = format!("{prefix}-peers");
                self.sets.push(NftSet {
                    name: name.clone(),
                    elements: SetElements::Addrs(addrs),
                });
                Some(name)
            }
        };
        let conds = match &rule.ports {
            None => vec![PortCond::Any],
            Some(ports) => self.port_conds(cluster, policy, direction, rule, ports, prefix),
        };
        conds
            .into_iter()
            .map(|ports| NftRule {
                peers: peer_set.clone(),
                ports,
                comment: comment.to_string(),
            })
            .collect()
    }

    /// The transport conditions for a rule's ports: one per protocol with
    /// numeric ports, plus one port set for the named ports.
    fn port_conds(
        &mut self,
        cluster: &Cluster<'_>,
        policy: &Policy,
        direction: Direction,
        rule: &Rule,
        ports: &[PortMatch],
        prefix: &str,
    ) -> Vec<PortCond> {
        let mut numeric: BTreeMap<Protocol, Option<Vec<(u16, u16)>>> = BTreeMap::new();
        let mut named = Vec::new();
        for port in ports {
            match port {
                PortMatch::Protocol(proto) => {
                    numeric.insert(*proto, None);
                }
                PortMatch::Range(proto, first, last) => {
                    if let Some(ranges) = numeric.entry(*proto).or_insert_with(|| Some(Vec::new()))
                    {
                        ranges.push((*first, *last));
                    }
                }
                PortMatch::Named(proto, name) => named.push((*proto, name.as_str())),
            }
        }
        let mut conds: Vec<PortCond> = numeric
            .into_iter()
            .map(|(proto, ranges)| match ranges {
                None => PortCond::Protocol(proto),
                Some(ranges) => PortCond::Ports(proto, merge_ports(ranges)),
            })
            .collect();
        if !named.is_empty() {
            // Named ports belong to the destination: for ingress the policed
            // (local, selected) pod, for egress the peer pods.
            let destinations = cluster.pods.iter().filter(|pod| match direction {
                Direction::Ingress => pod.local && policy.selects(pod),
                Direction::Egress => rule.peers.as_ref().is_none_or(|peers| {
                    peers
                        .iter()
                        .any(|peer| policy.peer_selects(peer, pod, &cluster.namespaces))
                }),
            });
            let mut elements = BTreeSet::new();
            for pod in destinations {
                for (proto, name) in &named {
                    if let Some(port) = pod.named_port(name, *proto) {
                        elements.insert((pod.ip, *proto, port));
                    }
                }
            }
            if !elements.is_empty() {
                let name = format!("{prefix}-ports");
                self.sets.push(NftSet {
                    name: name.clone(),
                    elements: SetElements::Ports(elements),
                });
                conds.push(PortCond::Named(name));
            }
        }
        conds
    }

    /// How many local pods are isolated for ingress and for egress.
    pub(crate) fn isolated(&self) -> (usize, usize) {
        (self.ingress.len(), self.egress.len())
    }

    /// The `nft -f` text that replaces table `ip <table>` in one
    /// transaction: the `table` + `delete table` pair removes whatever was
    /// there (or nothing), and the definition follows.
    pub(crate) fn to_nft(&self, table: &str) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_nft(&mut out, table);
        out
    }

    fn write_nft(&self, out: &mut String, table: &str) -> std::fmt::Result {
        writeln!(out, "table ip {table}")?;
        writeln!(out, "delete table ip {table}")?;
        writeln!(out, "table ip {table} {{")?;
        for set in &self.sets {
            writeln!(out, "\tset {} {{", set.name)?;
            let elements: Vec<String> = match &set.elements {
                SetElements::Addrs(addrs) => {
                    writeln!(out, "\t\ttype ipv4_addr")?;
                    writeln!(out, "\t\tflags interval")?;
                    addrs
                        .ranges()
                        .map(|(first, last)| {
                            if first == last {
                                first.to_string()
                            } else {
                                format!("{first}-{last}")
                            }
                        })
                        .collect()
                }
                SetElements::Ports(ports) => {
                    writeln!(out, "\t\ttype ipv4_addr . inet_proto . inet_service")?;
                    ports
                        .iter()
                        .map(|(addr, proto, port)| format!("{addr} . {proto} . {port}"))
                        .collect()
                }
            };
            write_elements(out, &elements)?;
            writeln!(out, "\t}}")?;
        }
        for (name, map) in [
            ("ingress-pods", &self.ingress),
            ("egress-pods", &self.egress),
        ] {
            writeln!(out, "\tmap {name} {{")?;
            writeln!(out, "\t\ttype ipv4_addr : verdict")?;
            let elements: Vec<String> = map
                .iter()
                .map(|(addr, chain)| format!("{addr} : jump {chain}"))
                .collect();
            write_elements(out, &elements)?;
            writeln!(out, "\t}}")?;
        }
        for chain in &self.chains {
            writeln!(out, "\tchain {} {{", chain.name)?;
            writeln!(out, "\t\t# {}", chain.policies.join(", "))?;
            let peer_field = match chain.direction {
                Direction::Ingress => "saddr",
                Direction::Egress => "daddr",
            };
            for rule in &chain.rules {
                out.push_str("\t\t");
                if let Some(set) = &rule.peers {
                    write!(out, "ip {peer_field} @{set} ")?;
                }
                match &rule.ports {
                    PortCond::Any => {}
                    PortCond::Protocol(proto) => write!(out, "meta l4proto {proto} ")?,
                    PortCond::Ports(proto, ranges) => {
                        let ports: Vec<String> = ranges
                            .iter()
                            .map(|&(first, last)| {
                                if first == last {
                                    first.to_string()
                                } else {
                                    format!("{first}-{last}")
                                }
                            })
                            .collect();
                        write!(
                            out,
                            "meta l4proto {proto} th dport {{ {} }} ",
                            ports.join(", ")
                        )?;
                    }
                    PortCond::Named(set) => {
                        write!(out, "ip daddr . meta l4proto . th dport @{set} ")?;
                    }
                }
                writeln!(out, "return comment \"{}\"", rule.comment)?;
            }
            writeln!(out, "\t\tdrop")?;
            writeln!(out, "\t}}")?;
        }
        writeln!(out, "\tchain forward {{")?;
        writeln!(
            out,
            "\t\ttype filter hook forward priority filter; policy accept;"
        )?;
        writeln!(out, "\t\tct state established,related accept")?;
        writeln!(out, "\t\tip saddr vmap @egress-pods")?;
        writeln!(out, "\t\tip daddr vmap @ingress-pods")?;
        writeln!(out, "\t}}")?;
        writeln!(out, "}}")
    }
}

fn write_elements(out: &mut String, elements: &[String]) -> std::fmt::Result {
    if elements.is_empty() {
        return Ok(());
    }
    writeln!(out, "\t\telements = {{")?;
    for element in elements {
        writeln!(out, "\t\t\t{element},")?;
    }
    writeln!(out, "\t\t}}")
}

/// Sorts port ranges and merges overlapping or adjacent ones (an anonymous
/// interval set refuses overlaps).
fn merge_ports(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

fn direction_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn short_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    }
}

/// Object names are DNS labels and subdomains, so the comment holds no
/// quotes; it only has to fit.
fn truncate(mut comment: String) -> String {
    if comment.len() > MAX_COMMENT {
        let mut end = MAX_COMMENT;
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        comment.truncate(end);
    }
    comment
}

#[cfg(test)]
mod tests;
