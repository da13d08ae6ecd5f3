//! CIDR arithmetic and the per-node subnet allocator, with no IO.
//!
//! The cluster CIDR is cut into equal subnets of the node mask size; subnet
//! `i` starts at `cluster base + i * subnet size`. The allocator remembers
//! which node holds which subnet, so that a node's deletion frees exactly its
//! own subnets and a restart can rebuild the whole table from the nodes'
//! `spec.podCIDRs`.
//!
//! As upstream's `cidrset`, allocation goes round-robin from the subnet after
//! the last one handed out rather than from the lowest free one: a subnet
//! freed by a deleted node is reused last, which gives the routes and
//! conntrack entries of the old node's pods time to go away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Upstream's limit on `node mask - cluster mask` (`clusterSubnetMaxDiff`):
/// at most 65536 subnets, so the table stays small.
pub const MAX_SUBNET_BITS: u8 = 16;

/// The default cluster CIDR, k3s's: `10.42.0.0/16`.
pub const DEFAULT_CLUSTER_CIDR: Cidr = Cidr {
    network: IpAddr::V4(Ipv4Addr::new(10, 42, 0, 0)),
    prefix: 16,
};

/// An IPv4 or IPv6 network: an address with its host bits cleared, and a
/// prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrParseError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// The network of `addr/prefix`; host bits of `addr` are cleared, as Go's
    /// `net.ParseCIDR` does. `None` when the prefix is longer than the
    /// address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        if prefix > bits(addr) {
            return None;
        }
        let network = from_u128(addr, to_u128(addr) & mask(bits(addr), prefix));
        Some(Self { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether both are the same address family.
    fn same_family(&self, other: &Cidr) -> bool {
        self.network.is_ipv4() == other.network.is_ipv4()
    }

    fn first(&self) -> u128 {
        to_u128(self.network)
    }

    fn last(&self) -> u128 {
        self.first() | (!mask(bits(self.network), self.prefix) & family_max(self.network))
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| CidrParseError {
            input: s.to_string(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| error("no '/'"))?;
        let addr: IpAddr = addr.parse().map_err(|_| error("bad address"))?;
        // Only plain decimal digits: `u8::from_str` would accept "+24".
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error("bad prefix length"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| error("bad prefix length"))?;
        Cidr::new(addr, prefix).ok_or_else(|| error("prefix length too long"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn family_max(addr: IpAddr) -> u128 {
    if addr.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

/// The network mask of `prefix` in an address of `bits` bits.
fn mask(bits: u8, prefix: u8) -> u128 {
    let host_bits = u32::from(bits - prefix);
    let all = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    all.checked_shl(host_bits).map_or(0, |m| m & all)
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `value` as an address of `like`'s family; `value` fits by construction.
fn from_u128(like: IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(value & u128::from(u32::MAX)).unwrap_or(u32::MAX),
        )),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Why an allocator cannot be built for a cluster CIDR and node mask size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocatorConfigError {
    /// The node mask is shorter than the cluster's or longer than an address.
    #[error("node mask size /{node_mask} does not fit in cluster CIDR {cluster}")]
    MaskOutOfRange {
        /// The cluster CIDR.
        cluster: Cidr,
        /// The node mask size.
        node_mask: u8,
    },
    /// More than 2^16 subnets, upstream's limit.
    #[error(
        "node mask size /{node_mask} cuts cluster CIDR {cluster} into more than 2^{MAX_SUBNET_BITS} subnets"
    )]
    TooManySubnets {
        /// The cluster CIDR.
        cluster: Cidr,
        /// The node mask size.
        node_mask: u8,
    },
}

/// Why a node's existing CIDR could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OccupyError {
    /// The CIDR lies outside the cluster CIDR (or is the other family), so
    /// this allocator does not manage it.
    #[error("{cidr} is outside the cluster CIDR {cluster}")]
    OutsideCluster {
        /// The node's CIDR.
        cidr: Cidr,
        /// The cluster CIDR.
        cluster: Cidr,
    },
    /// Part of the CIDR is already held by another node.
    #[error("{cidr} overlaps {other}'s pod CIDR")]
    Conflict {
        /// The node's CIDR.
        cidr: Cidr,
        /// The node holding an overlapping subnet.
        other: String,
    },
}

/// Every subnet of the cluster CIDR is held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free /{node_mask} left in cluster CIDR {cluster}")]
pub struct Exhausted {
    /// The cluster CIDR.
    pub cluster: Cidr,
    /// The node mask size.
    pub node_mask: u8,
}

/// Which node holds which subnet of the cluster CIDR.
#[derive(Debug, Clone)]
pub struct CidrAllocator {
    cluster: Cidr,
    node_mask: u8,
    /// Number of subnets: `2^(node_mask - cluster prefix)`.
    subnets: u32,
    /// Subnet index → holder.
    owners: BTreeMap<u32, String>,
    /// Holder → its subnet indexes (the inverse of `owners`).
    held: HashMap<String, BTreeSet<u32>>,
    /// Where the next round-robin search starts.
    next_candidate: u32,
}

impl CidrAllocator {
    /// An empty allocator cutting `cluster` into `/node_mask` subnets.
    pub fn new(cluster: Cidr, node_mask: u8) -> Result<Self, AllocatorConfigError> {
        if node_mask < cluster.prefix || node_mask > bits(cluster.network) {
            return Err(AllocatorConfigError::MaskOutOfRange { cluster, node_mask });
        }
        let subnet_bits = node_mask - cluster.prefix;
        if subnet_bits > MAX_SUBNET_BITS {
            return Err(AllocatorConfigError::TooManySubnets { cluster, node_mask });
        }
        Ok(Self {
            cluster,
            node_mask,
            subnets: 1 << subnet_bits,
            owners: BTreeMap::new(),
            held: HashMap::new(),
            next_candidate: 0,
        })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> Cidr {
        self.cluster
    }

    /// The node mask size.
    pub fn node_mask(&self) -> u8 {
        self.node_mask
    }

    /// How many subnets are free.
    pub fn free(&self) -> usize {
        self.subnets as usize - self.owners.len()
    }

    /// The subnets `node` holds, lowest first.
    pub fn held_by(&self, node: &str) -> Vec<Cidr> {
        self.held
            .get(node)
            .map(|set| set.iter().map(|&i| self.subnet(i)).collect())
            .unwrap_or_default()
    }

    /// Hands `node` the next free subnet. A node that already holds subnets
    /// gets its lowest one back instead, so that retrying a failed write
    /// never leaks a subnet.
    pub fn allocate(&mut self, node: &str) -> Result<Cidr, Exhausted> {
        if let Some(&index) = self.held.get(node).and_then(|set| set.first()) {
            return Ok(self.subnet(index));
        }
        let free = (0..self.subnets)
            .map(|offset| (self.next_candidate + offset) % self.subnets)
            .find(|index| !self.owners.contains_key(index))
            .ok_or(Exhausted {
                cluster: self.cluster,
                node_mask: self.node_mask,
            })?;
        self.next_candidate = (free + 1) % self.subnets;
        self.take(node, free);
        Ok(self.subnet(free))
    }

    /// Records that `node` holds `cidr` (read from its `spec.podCIDRs`).
    /// Every subnet the CIDR overlaps becomes the node's; on a conflict
    /// nothing changes. Recording a CIDR the node already holds is a no-op.
    pub fn occupy(&mut self, node: &str, cidr: Cidr) -> Result<(), OccupyError> {
        let indexes = self.covered(cidr).ok_or(OccupyError::OutsideCluster {
            cidr,
            cluster: self.cluster,
        })?;
        if let Some(other) = indexes
            .clone()
            .filter_map(|i| self.owners.get(&i))
            .find(|owner| owner.as_str() != node)
        {
            return Err(OccupyError::Conflict {
                cidr,
                other: other.clone(),
            });
        }
        for index in indexes {
            self.take(node, index);
        }
        Ok(())
    }

    /// Forgets every holder, as before a rebuild from a fresh list.
    pub fn clear(&mut self) {
        self.owners.clear();
        self.held.clear();
        self.next_candidate = 0;
    }

    /// Frees every subnet `node` holds and returns them.
    pub fn release(&mut self, node: &str) -> Vec<Cidr> {
        let Some(set) = self.held.remove(node) else {
            return Vec::new();
        };
        for index in &set {
            self.owners.remove(index);
        }
        set.into_iter().map(|i| self.subnet(i)).collect()
    }

    fn take(&mut self, node: &str, index: u32) {
        self.owners.insert(index, node.to_string());
        self.held.entry(node.to_string()).or_default().insert(index);
    }

    /// Subnet `index` as a CIDR.
    fn subnet(&self, index: u32) -> Cidr {
        let host_bits = u32::from(bits(self.cluster.network) - self.node_mask);
        let offset = u128::from(index).checked_shl(host_bits).unwrap_or(0);
        Cidr {
            network: from_u128(self.cluster.network, self.cluster.first() + offset),
            prefix: self.node_mask,
        }
    }

    /// The subnet indexes `cidr` overlaps, or `None` when it lies outside
    /// the cluster CIDR.
    fn covered(&self, cidr: Cidr) -> Option<std::ops::RangeInclusive<u32>> {
        if !self.cluster.same_family(&cidr) {
            return None;
        }
        let first = cidr.first().max(self.cluster.first());
        let last = cidr.last().min(self.cluster.last());
        if first > last {
            return None;
        }
        let host_bits = u32::from(bits(self.cluster.network) - self.node_mask);
        let index = |addr: u128| {
            let shifted = (addr - self.cluster.first())
                .checked_shr(host_bits)
                .unwrap_or(0);
            // Fewer than 2^16 subnets, so the index fits.
            u32::try_from(shifted).unwrap_or(u32::MAX)
        };
        Some(index(first)..=index(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("valid CIDR in test")
    }

    fn allocator(cluster: &str, mask: u8) -> CidrAllocator {
        CidrAllocator::new(cidr(cluster), mask).expect("valid allocator config")
    }

    #[test]
    fn parses_and_masks_host_bits() {
        assert_eq!(cidr("10.42.3.7/16").to_string(), "10.42.0.0/16");
        assert_eq!(cidr("fd00:1::5/64").to_string(), "fd00:1::/64");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in [
            "10.42.0.0",
            "10.42.0.0/33",
            "10.42.0.0/+8",
            "10.42.0/16",
            "x/8",
            "/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn rejects_bad_mask_sizes() {
        assert!(matches!(
            CidrAllocator::new(cidr("10.42.0.0/16"), 8),
            Err(AllocatorConfigError::MaskOutOfRange { .. })
        ));
        assert!(matches!(
            CidrAllocator::new(cidr("10.42.0.0/16"), 33),
            Err(AllocatorConfigError::MaskOutOfRange { .. })
        ));
        assert!(matches!(
            CidrAllocator::new(cidr("10.0.0.0/8"), 26),
            Err(AllocatorConfigError::TooManySubnets { .. })
        ));
        assert!(CidrAllocator::new(cidr("10.0.0.0/8"), 24).is_ok());
    }

    #[test]
    fn allocates_consecutive_subnets() {
        let mut a = allocator("10.42.0.0/16", 24);
        assert_eq!(a.allocate("n1"), Ok(cidr("10.42.0.0/24")));
        assert_eq!(a.allocate("n2"), Ok(cidr("10.42.1.0/24")));
        assert_eq!(a.allocate("n3"), Ok(cidr("10.42.2.0/24")));
        assert_eq!(a.free(), 253);
    }

    #[test]
    fn allocating_twice_for_one_node_returns_the_same_subnet() {
        let mut a = allocator("10.42.0.0/16", 24);
        let first = a.allocate("n1");
        assert_eq!(a.allocate("n1"), first);
        assert_eq!(a.free(), 255);
    }

    #[test]
    fn exhaustion_and_reuse_after_release() {
        let mut a = allocator("10.42.0.0/30", 31);
        assert_eq!(a.allocate("n1"), Ok(cidr("10.42.0.0/31")));
        assert_eq!(a.allocate("n2"), Ok(cidr("10.42.0.2/31")));
        let exhausted = a.allocate("n3").expect_err("range is full");
        assert_eq!(exhausted.cluster, cidr("10.42.0.0/30"));
        assert_eq!(a.release("n1"), vec![cidr("10.42.0.0/31")]);
        assert_eq!(a.allocate("n3"), Ok(cidr("10.42.0.0/31")));
        assert!(a.allocate("n4").is_err());
    }

    #[test]
    fn freed_subnets_are_reused_last() {
        let mut a = allocator("10.42.0.0/16", 24);
        a.allocate("n1").expect("free");
        a.allocate("n2").expect("free");
        a.release("n1");
        // Round-robin: the search continues after n2, not at the freed .0.
        assert_eq!(a.allocate("n3"), Ok(cidr("10.42.2.0/24")));
    }

    #[test]
    fn rebuild_after_restart_never_hands_out_a_held_subnet() {
        // A previous run assigned these; the new allocator starts from zero.
        let mut a = allocator("10.42.0.0/16", 24);
        for (node, held) in [
            ("n1", "10.42.0.0/24"),
            ("n2", "10.42.1.0/24"),
            ("n4", "10.42.3.0/24"),
        ] {
            a.occupy(node, cidr(held)).expect("no conflict");
        }
        assert_eq!(a.allocate("n3"), Ok(cidr("10.42.2.0/24")));
        assert_eq!(a.allocate("n5"), Ok(cidr("10.42.4.0/24")));
        assert_eq!(a.held_by("n4"), vec![cidr("10.42.3.0/24")]);
    }

    #[test]
    fn occupy_is_idempotent_and_detects_conflicts() {
        let mut a = allocator("10.42.0.0/16", 24);
        a.occupy("n1", cidr("10.42.5.0/24")).expect("free");
        a.occupy("n1", cidr("10.42.5.0/24")).expect("same holder");
        assert_eq!(
            a.occupy("n2", cidr("10.42.5.0/24")),
            Err(OccupyError::Conflict {
                cidr: cidr("10.42.5.0/24"),
                other: "n1".into()
            })
        );
        assert!(a.held_by("n2").is_empty());
        assert_eq!(a.free(), 255);
    }

    #[test]
    fn occupy_marks_every_subnet_a_larger_cidr_overlaps() {
        let mut a = allocator("10.42.0.0/16", 24);
        a.occupy("big", cidr("10.42.0.0/22")).expect("free");
        assert_eq!(a.free(), 252);
        assert_eq!(a.allocate("n1"), Ok(cidr("10.42.4.0/24")));
        assert_eq!(a.release("big").len(), 4);
    }

    #[test]
    fn occupy_ignores_cidrs_outside_the_cluster() {
        let mut a = allocator("10.42.0.0/16", 24);
        assert!(matches!(
            a.occupy("n1", cidr("10.43.0.0/24")),
            Err(OccupyError::OutsideCluster { .. })
        ));
        assert!(matches!(
            a.occupy("n1", cidr("fd00::/64")),
            Err(OccupyError::OutsideCluster { .. })
        ));
        assert_eq!(a.free(), 256);
    }

    #[test]
    fn clear_forgets_every_holder() {
        let mut a = allocator("10.42.0.0/16", 24);
        a.allocate("n1").expect("free");
        a.allocate("n2").expect("free");
        a.clear();
        assert_eq!(a.free(), 256);
        assert!(a.held_by("n1").is_empty());
        assert_eq!(a.allocate("n3"), Ok(cidr("10.42.0.0/24")));
    }

    #[test]
    fn release_frees_only_the_nodes_own_subnets() {
        let mut a = allocator("10.42.0.0/16", 24);
        a.allocate("n1").expect("free");
        a.allocate("n2").expect("free");
        assert_eq!(a.release("n1"), vec![cidr("10.42.0.0/24")]);
        assert!(a.release("n1").is_empty());
        assert_eq!(a.held_by("n2"), vec![cidr("10.42.1.0/24")]);
    }

    #[test]
    fn ipv6_subnets() {
        let mut a = allocator("fd00:42::/56", 64);
        assert_eq!(a.allocate("n1"), Ok(cidr("fd00:42::/64")));
        assert_eq!(a.allocate("n2"), Ok(cidr("fd00:42:0:1::/64")));
        assert_eq!(a.free(), 254);
    }

    #[test]
    fn whole_address_space_cluster() {
        let mut a = allocator("0.0.0.0/0", 16);
        assert_eq!(a.allocate("n1"), Ok(cidr("0.0.0.0/16")));
        a.occupy("n2", cidr("255.255.0.0/16")).expect("free");
        assert_eq!(a.free(), 65534);
    }
}
