//! Cluster IPs: ranges from ServiceCIDRs, one IPAddress object per address.
//!
//! Allocating an address is creating the IPAddress named by it: the store's
//! create-if-absent decides between two writers, so two Services (or two API
//! servers) can never hold one address, and the state needs no other record.
//! The watch cache only says which addresses look taken, so a search skips
//! them; a stale cache costs a failed create and a step to the next address.
//!
//! Each range is split as KEP-3070 splits it: the first `min(max(16, n/16), 256)`
//! addresses (n = the CIDR's size) form a static band that dynamic allocation
//! uses only once the rest is full. In 10.43.0.0/16 that is 10.43.0.1 to
//! 10.43.1.0, where the well-known addresses live (`kubernetes` at .1,
//! `kube-dns` at .10): asked for explicitly, they are never taken first by a
//! Service that did not care which address it got.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_api::managed_fields::BuiltinSchema;
use skiff_api::registry::{self, ResourceType};
use skiff_store::StoreError;

use super::{MANAGER, Owner, random_below};
use crate::cache::object_key;
use crate::object;
use crate::rest::{Rest, field_manager};

/// `ipaddress.kubernetes.io/managed-by`, the label naming who allocated an
/// IPAddress.
pub const MANAGED_BY_LABEL: &str = "ipaddress.kubernetes.io/managed-by";
/// The [`MANAGED_BY_LABEL`] value of the Service allocator.
pub const MANAGED_BY: &str = "ipallocator.k8s.io";
/// `ipaddress.kubernetes.io/ip-family`.
pub const IP_FAMILY_LABEL: &str = "ipaddress.kubernetes.io/ip-family";

/// The IPAddress type.
pub(crate) fn ip_address_type() -> &'static ResourceType {
    registry::by_plural("networking.k8s.io", "v1", "ipaddresses").expect("IPAddresses are served")
}

/// The ServiceCIDR type.
pub(crate) fn service_cidr_type() -> &'static ResourceType {
    registry::by_plural("networking.k8s.io", "v1", "servicecidrs").expect("ServiceCIDRs are served")
}

/// An IPv4 subnet of a ServiceCIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Range {
    network: u32,
    bits: u8,
}

impl Ipv4Range {
    /// Parses a subnet in canonical form (`10.43.0.0/16`); IPv6 and
    /// interface-address forms are `None`.
    pub fn parse(cidr: &str) -> Option<Ipv4Range> {
        let (ip, bits) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let bits: u8 = bits.parse().ok().filter(|b| *b <= 32)?;
        let range = Ipv4Range {
            network: u32::from(ip),
            bits,
        };
        (range.network & range.mask() == range.network).then_some(range)
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0)
    }

    /// Addresses in the subnet, network and broadcast included.
    fn cidr_size(&self) -> u64 {
        1u64 << (32 - u32::from(self.bits))
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network
    }

    /// Whether `other` lies inside this subnet.
    fn covers(&self, other: &Ipv4Range) -> bool {
        self.bits <= other.bits && self.contains(Ipv4Addr::from(other.network))
    }

    /// The allocatable addresses, network and broadcast excluded, or `None`
    /// for a /31 or /32.
    fn hosts(&self) -> Option<(u32, u32)> {
        let first = self.network.checked_add(1)?;
        let last = (self.network | !self.mask()).checked_sub(1)?;
        (first <= last).then_some((first, last))
    }

    /// The size of the static band (KEP-3070): `min(max(16, n/16), 256)`,
    /// none for ranges of 16 addresses or fewer.
    pub fn static_band(&self) -> u64 {
        let size = self.cidr_size();
        if size <= 16 {
            0
        } else {
            (size / 16).clamp(16, 256)
        }
    }

    /// Addresses in dynamic-allocation order: the dynamic band from a random
    /// start, wrapping around, then the static band the same way.
    /// `upper_start` and `lower_start` are random numbers.
    pub fn candidates(
        &self,
        upper_start: u64,
        lower_start: u64,
    ) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let (first, last) = self.hosts().unwrap_or((1, 0));
        let hosts = if first <= last {
            u64::from(last - first) + 1
        } else {
            0
        };
        let band = self.static_band().min(hosts);
        let upper = rotated(u64::from(first) + band, hosts - band, upper_start);
        let lower = rotated(u64::from(first), band, lower_start);
        upper.chain(lower)
    }
}

/// `len` addresses from `base`, starting at `start % len` and wrapping.
fn rotated(base: u64, len: u64, start: u64) -> impl Iterator<Item = Ipv4Addr> {
    let start = if len == 0 { 0 } else { start % len };
    (start..len)
        .chain(0..start)
        .filter_map(move |i| u32::try_from(base + i).ok())
        .map(Ipv4Addr::from)
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.bits)
    }
}

/// One IPv4 range of a ServiceCIDR and whether it takes new allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrRange {
    /// The subnet.
    pub range: Ipv4Range,
    /// Ready and not being deleted.
    pub ready: bool,
}

/// The IPv4 ranges of ServiceCIDR objects. Upstream's allocator counts a
/// ServiceCIDR without a `Ready` condition as ready (the controller setting
/// it may not run yet), and one being deleted as not ready.
pub fn ranges_of(service_cidrs: &[Value]) -> Vec<CidrRange> {
    let mut out = Vec::new();
    for cidr in service_cidrs {
        let ready_condition = cidr["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        let ready =
            !object::is_deleting(cidr) && ready_condition.is_none_or(|c| c["status"] == "True");
        for range in cidr["spec"]["cidrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(Ipv4Range::parse)
        {
            out.push(CidrRange { range, ready });
        }
    }
    out
}

/// Ready ranges not inside another ready range, in address order: where
/// dynamic allocation looks.
pub fn top_level(ranges: &[CidrRange]) -> Vec<Ipv4Range> {
    let ready: Vec<Ipv4Range> = ranges.iter().filter(|r| r.ready).map(|r| r.range).collect();
    let mut top: Vec<Ipv4Range> = ready
        .iter()
        .filter(|r| !ready.iter().any(|o| o != *r && o.covers(r)))
        .copied()
        .collect();
    top.sort();
    top.dedup();
    top
}

/// Why an address could not be allocated, in upstream's words.
#[derive(Debug, thiserror::Error)]
pub enum IpError {
    /// The address is the network or broadcast address of its range.
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    NotInRange {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The range it falls in.
        range: Ipv4Range,
    },
    /// No ready ServiceCIDR contains the address.
    #[error("the provided network does not match the current range")]
    MismatchedNetwork,
    /// Another object holds the address.
    #[error("provided IP is already allocated")]
    Allocated,
    /// Every address of every ready range is taken.
    #[error("range is full")]
    Full,
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[source] StoreError),
}

/// Which range takes an explicitly requested address: the largest ready one
/// containing it.
pub fn range_for(ranges: &[CidrRange], ip: Ipv4Addr) -> Result<Ipv4Range, IpError> {
    let range = ranges
        .iter()
        .filter(|r| r.ready && r.range.contains(ip))
        .map(|r| r.range)
        .min_by_key(|r| r.bits)
        .ok_or(IpError::MismatchedNetwork)?;
    match range.hosts() {
        Some((first, last)) if (first..=last).contains(&u32::from(ip)) => Ok(range),
        _ => Err(IpError::NotInRange { ip, range }),
    }
}

/// Cluster IP allocations of one Service write.
pub(crate) struct IpAllocator<'a> {
    rest: &'a Rest,
    owner: &'a Owner,
    dry_run: bool,
    ranges: Vec<CidrRange>,
    taken: HashSet<Ipv4Addr>,
}

impl<'a> IpAllocator<'a> {
    /// Reads the ServiceCIDRs and the addresses that look taken.
    pub(crate) fn new(rest: &'a Rest, owner: &'a Owner, dry_run: bool) -> Self {
        let (cidrs, _) = rest.cache.list(service_cidr_type(), None);
        let cidrs: Vec<Value> = cidrs.iter().map(|c| c.object.clone()).collect();
        let (addresses, _) = rest.cache.list(ip_address_type(), None);
        let taken = addresses
            .iter()
            .filter_map(|a| object::name(&a.object).parse().ok())
            .collect();
        IpAllocator {
            rest,
            owner,
            dry_run,
            ranges: ranges_of(&cidrs),
            taken,
        }
    }

    /// Reserves `ip` for the owner. A dry run only checks the range, as
    /// upstream's does.
    pub(crate) async fn allocate(&mut self, ip: Ipv4Addr) -> Result<(), IpError> {
        range_for(&self.ranges, ip)?;
        if self.dry_run {
            return Ok(());
        }
        create_ip_address(self.rest, ip, self.owner).await?;
        self.taken.insert(ip);
        Ok(())
    }

    /// Reserves a free address: the dynamic bands of the ready ranges first,
    /// their static bands only when those are full. A dry run names a free
    /// address without reserving it.
    pub(crate) async fn allocate_next(&mut self) -> Result<Ipv4Addr, IpError> {
        for range in top_level(&self.ranges) {
            let upper = random_below(u64::MAX);
            let lower = random_below(u64::MAX);
            for ip in range.candidates(upper, lower) {
                if self.taken.contains(&ip) {
                    continue;
                }
                if self.dry_run {
                    return Ok(ip);
                }
                match create_ip_address(self.rest, ip, self.owner).await {
                    Ok(()) => {
                        self.taken.insert(ip);
                        return Ok(ip);
                    }
                    // Taken since the cache last looked: try the next one.
                    Err(IpError::Allocated) => {
                        self.taken.insert(ip);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(IpError::Full)
    }
}

/// The IPAddress object that reserves `ip` for `owner`.
pub(crate) fn ip_address_object(ip: Ipv4Addr, owner: &Owner) -> Value {
    let rt = ip_address_type();
    let mut obj = json!({
        "apiVersion": rt.api_version(),
        "kind": rt.kind,
        "metadata": {
            "name": ip.to_string(),
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": object::format_time(jiff::Timestamp::now()),
            "labels": {IP_FAMILY_LABEL: "IPv4", MANAGED_BY_LABEL: MANAGED_BY},
        },
        "spec": {"parentRef": owner.parent_ref()},
    });
    let schema = BuiltinSchema {
        group: rt.group,
        kind: rt.kind,
    };
    let api_version = rt.api_version();
    let manager = field_manager(&schema, rt, &api_version, MANAGER, None);
    if let Err(e) = manager.record_update(None, &mut obj) {
        tracing::warn!(%ip, error = %e, "managedFields of an IPAddress not recorded");
    }
    obj
}

/// Creates the IPAddress for `ip`; `Allocated` if one exists.
pub(crate) async fn create_ip_address(
    rest: &Rest,
    ip: Ipv4Addr,
    owner: &Owner,
) -> Result<(), IpError> {
    let key = object_key(ip_address_type(), None, &ip.to_string());
    let bytes =
        serde_json::to_vec(&ip_address_object(ip, owner)).expect("a JSON value always serializes");
    match rest.store().create(&key, bytes.into()).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists(_)) => Err(IpError::Allocated),
        Err(e) => Err(IpError::Store(e)),
    }
}

/// Deletes the IPAddress for `ip` if `owner` holds it; someone else's
/// address is never touched. Failures are logged: the repair pass retries.
pub(crate) async fn release(rest: &Rest, ip: Ipv4Addr, owner: &Owner) {
    let key = object_key(ip_address_type(), None, &ip.to_string());
    let current = match rest.store().get(&key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%ip, error = %e, "cannot read IPAddress to release it");
            return;
        }
    };
    let held = serde_json::from_slice::<Value>(&current.value)
        .is_ok_and(|obj| owner.is_parent_of(&obj["spec"]["parentRef"]));
    if !held {
        return;
    }
    match rest.store().delete(&key, Some(current.mod_revision)).await {
        Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
        Err(e) => tracing::warn!(%ip, error = %e, "cannot release cluster IP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(cidr: &str) -> Ipv4Range {
        Ipv4Range::parse(cidr).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_canonical_ipv4_subnets_only() {
        assert_eq!(range("10.43.0.0/16").to_string(), "10.43.0.0/16");
        assert!(Ipv4Range::parse("10.43.0.1/16").is_none());
        assert!(Ipv4Range::parse("fd00::/64").is_none());
        assert!(Ipv4Range::parse("10.43.0.0/33").is_none());
        assert!(range("10.43.0.0/16").contains(ip("10.43.255.255")));
        assert!(!range("10.43.0.0/16").contains(ip("10.44.0.0")));
    }

    #[test]
    fn static_band_follows_kep_3070() {
        assert_eq!(range("10.43.0.0/16").static_band(), 256);
        assert_eq!(range("10.0.0.0/8").static_band(), 256);
        assert_eq!(range("10.43.0.0/24").static_band(), 16);
        assert_eq!(range("10.43.0.0/20").static_band(), 256);
        assert_eq!(range("10.43.0.0/21").static_band(), 128);
        assert_eq!(range("10.43.0.0/28").static_band(), 0);
    }

    #[test]
    fn dynamic_order_avoids_the_static_band_until_the_rest_is_full() {
        let r = range("10.43.0.0/16");
        let all: Vec<Ipv4Addr> = r.candidates(12_345, 77).collect();
        // Every host address once: 65,536 minus network and broadcast.
        assert_eq!(all.len(), 65_534);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 65_534);
        let upper = 65_534 - 256;
        assert!(all[..upper].iter().all(|a| *a >= ip("10.43.1.1")));
        assert_eq!(all[0], Ipv4Addr::from(u32::from(ip("10.43.1.1")) + 12_345));
        assert!(all[upper..].iter().all(|a| *a <= ip("10.43.1.0")));
        assert_eq!(all[upper], ip("10.43.0.78"));
        assert!(!all.contains(&ip("10.43.0.0")) && !all.contains(&ip("10.43.255.255")));
        assert_eq!(range("10.43.0.0/31").candidates(1, 1).count(), 0);
    }

    #[test]
    fn requested_addresses_need_a_ready_range() {
        let ranges = ranges_of(&[
            json!({"spec": {"cidrs": ["10.43.0.0/16", "fd00::/108"]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"spec": {"cidrs": ["10.50.0.0/24"]},
                "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"cidrs": ["10.60.0.0/24"]}}),
            json!({"spec": {"cidrs": ["10.43.7.0/24"]}}),
        ]);
        assert_eq!(ranges.len(), 4);
        assert_eq!(
            range_for(&ranges, ip("10.43.7.5")).unwrap(),
            range("10.43.0.0/16")
        );
        assert!(matches!(
            range_for(&ranges, ip("10.50.0.5")),
            Err(IpError::MismatchedNetwork)
        ));
        assert!(matches!(
            range_for(&ranges, ip("10.60.0.5")),
            Err(IpError::MismatchedNetwork)
        ));
        let err = range_for(&ranges, ip("10.43.255.255")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the provided IP (10.43.255.255) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
        );
        assert_eq!(top_level(&ranges), vec![range("10.43.0.0/16")]);
    }
}
