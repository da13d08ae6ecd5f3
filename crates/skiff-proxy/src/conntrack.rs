//! Deleting stale UDP conntrack entries, as kube-proxy's conntrack cleaner.
//!
//! NAT is decided on a flow's first packet and kept in its conntrack entry,
//! so a rule change does not move a flow that already exists. TCP notices:
//! a connection to a vanished endpoint is reset or times out and the client
//! reconnects through the new rules. UDP does not: a DNS resolver that keeps
//! its source port keeps sending to an endpoint that is gone (as long as it
//! keeps sending, the entry never expires), and a client that sent to a
//! Service IP before the Service had endpoints keeps its un-NATed entry
//! towards nowhere after they appear. So after a sync the proxy deletes the
//! UDP entries that the new rules would not have made:
//!
//! - [`UdpFrontends`] is the pure part: each UDP frontend of the snapshot (a
//!   ClusterIP, externalIP or LoadBalancer IP with its port, and each
//!   NodePort on any address) with the addresses of its serving endpoints.
//!   As upstream, traffic policies and readiness are ignored: a flow to a
//!   serving endpoint stays whether or not new flows would pick it.
//! - [`UdpFrontends::cleanup`] compares it with what the last cleanup saw
//!   and yields a [`Cleanup`] when anything changed: an entry for one of the
//!   frontends whose reply comes from anywhere but a serving endpoint is
//!   stale. That covers an endpoint that went away (its entries are replied
//!   to by its address), a Service that got its first endpoints (the old
//!   entries were never DNATed, so their reply source is the Service IP
//!   itself), and, unlike upstream's current cleaner but as its earlier one
//!   did, a Service port that lost its last endpoint or was deleted (its
//!   entries are all stale, so the next packet meets the reject rule rather
//!   than a dead address).
//! - [`Conntrack`] is the seam to the kernel: listing and deleting entries.
//!   [`NetlinkConntrack`] talks ctnetlink directly (no `conntrack` binary);
//!   tests use a fake.
//!
//! Only UDP is cleaned, as upstream: TCP and SCTP endpoints that go away end
//! their associations themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::service::{Protocol, ServicePort};

mod netlink;

pub use netlink::NetlinkConntrack;

/// The IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// An IPv4 conntrack entry with ports (TCP, UDP, SCTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// The IP protocol number.
    pub protocol: u8,
    /// The original direction, as the client sent it.
    pub original: Tuple,
    /// The reply direction: after DNAT its source is the endpoint.
    pub reply: Tuple,
    /// The conntrack zone (0 unless a rule set one).
    pub zone: u16,
    /// The kernel's id of the entry, when known: a deletion naming it spares
    /// a newer entry with the same tuple.
    pub id: Option<u32>,
}

/// Where UDP traffic for Services arrives, and which addresses may answer
/// it: the serving endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpFrontends {
    /// ClusterIPs, externalIPs and LoadBalancer IPs with their port.
    ips: BTreeMap<(Ipv4Addr, u16), BTreeSet<Ipv4Addr>>,
    /// NodePorts, on any destination address.
    node_ports: BTreeMap<u16, BTreeSet<Ipv4Addr>>,
}

impl UdpFrontends {
    /// The UDP frontends of the proxied Service ports.
    pub fn new(ports: &[ServicePort]) -> Self {
        let mut out = Self::default();
        for port in ports.iter().filter(|p| p.protocol == Protocol::Udp) {
            let serving: BTreeSet<Ipv4Addr> = port
                .endpoints
                .iter()
                .filter(|e| e.serving)
                .map(|e| e.ip)
                .collect();
            let ips = std::iter::once(&port.cluster_ip)
                .chain(&port.external_ips)
                .chain(&port.load_balancer_ips);
            for ip in ips {
                out.ips
                    .entry((*ip, port.port))
                    .or_default()
                    .extend(&serving);
            }
            if let Some(node_port) = port.node_port {
                out.node_ports
                    .entry(node_port)
                    .or_default()
                    .extend(&serving);
            }
        }
        out
    }

    /// Whether there is no UDP frontend.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.node_ports.is_empty()
    }

    /// What to clean now that the frontends are `self`, given those the last
    /// cleanup saw (`None` if there was none, as after a restart): nothing
    /// when they are the same. Frontends that disappeared stay in the cleanup
    /// with no endpoint, so all their entries go.
    pub fn cleanup(&self, previous: Option<&UdpFrontends>) -> Option<Cleanup> {
        if previous == Some(self) {
            return None;
        }
        let mut frontends = self.clone();
        if let Some(previous) = previous {
            for key in previous.ips.keys() {
                frontends.ips.entry(*key).or_default();
            }
            for key in previous.node_ports.keys() {
                frontends.node_ports.entry(*key).or_default();
            }
        }
        (!frontends.is_empty()).then_some(Cleanup { frontends })
    }
}

/// The frontends a cleanup checks, each with the only addresses allowed to
/// answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    frontends: UdpFrontends,
}

impl Cleanup {
    /// Whether `flow` is a UDP entry for one of the frontends whose replies
    /// do not come from one of its serving endpoints.
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.protocol != IPPROTO_UDP {
            return false;
        }
        let answered_by_other = |serving: &BTreeSet<Ipv4Addr>| !serving.contains(&flow.reply.src);
        let by_ip = self
            .frontends
            .ips
            .get(&(flow.original.dst, flow.original.dst_port))
            .is_some_and(answered_by_other);
        let by_node_port = self
            .frontends
            .node_ports
            .get(&flow.original.dst_port)
            .is_some_and(answered_by_other);
        by_ip || by_node_port
    }

    /// The stale entries among `flows`.
    pub fn stale(&self, flows: &[Flow]) -> Vec<Flow> {
        flows.iter().filter(|f| self.is_stale(f)).copied().collect()
    }
}

/// Listing and deleting conntrack entries.
///
/// Both calls block; async callers run them on the blocking pool.
pub trait Conntrack: Send + Sync {
    /// The IPv4 entries of IP protocol `protocol`.
    fn flows(&self, protocol: u8) -> Result<Vec<Flow>, ConntrackError>;
    /// Deletes `flows` and returns how many of them were still there.
    fn delete(&self, flows: &[Flow]) -> Result<usize, ConntrackError>;
}

/// Deletes the entries `cleanup` finds stale and returns how many went.
pub fn clean(conntrack: &dyn Conntrack, cleanup: &Cleanup) -> Result<usize, ConntrackError> {
    let stale = cleanup.stale(&conntrack.flows(IPPROTO_UDP)?);
    if stale.is_empty() {
        return Ok(0);
    }
    conntrack.delete(&stale)
}

/// Talking to the kernel's connection tracking failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The network namespace could not be entered.
    #[error("entering network namespace {path}: {source}")]
    Netns {
        /// Its `/run/netns` file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The netlink socket could not be opened or used.
    #[error("{action} on the ctnetlink socket: {source}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a request.
    #[error("the kernel refused to {request} conntrack entries: {source}")]
    Refused {
        /// `list` or `delete`.
        request: &'static str,
        /// The error number it answered with.
        #[source]
        source: std::io::Error,
    },
    /// A reply could not be parsed.
    #[error("malformed ctnetlink reply: {0}")]
    Malformed(&'static str),
}

#[cfg(test)]
pub(crate) mod fake {
    //! A [`Conntrack`] over an in-memory table, failing on request.

    use std::sync::Mutex;

    use super::{Conntrack, ConntrackError, Flow};

    /// A table of entries; `fail_next` makes the next listings fail.
    #[derive(Debug, Default)]
    pub struct FakeConntrack {
        pub table: Mutex<Vec<Flow>>,
        pub deleted: Mutex<Vec<Flow>>,
        pub listings: Mutex<usize>,
        pub fail_next: Mutex<usize>,
    }

    impl FakeConntrack {
        pub fn deleted(&self) -> Vec<Flow> {
            self.deleted.lock().unwrap().clone()
        }

        pub fn listings(&self) -> usize {
            *self.listings.lock().unwrap()
        }
    }

    impl Conntrack for FakeConntrack {
        fn flows(&self, protocol: u8) -> Result<Vec<Flow>, ConntrackError> {
            *self.listings.lock().unwrap() += 1;
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(ConntrackError::Malformed("injected failure"));
            }
            let table = self.table.lock().unwrap();
            Ok(table
                .iter()
                .filter(|f| f.protocol == protocol)
                .copied()
                .collect())
        }

        fn delete(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
            let mut table = self.table.lock().unwrap();
            let before = table.len();
            table.retain(|f| !flows.contains(f));
            self.deleted.lock().unwrap().extend_from_slice(flows);
            Ok(before - table.len())
        }
    }
}

#[cfg(test)]
mod tests;
