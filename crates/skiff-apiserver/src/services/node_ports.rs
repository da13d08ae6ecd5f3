//! Node ports: one store key per allocated port.
//!
//! Upstream keeps a bitmap of the range at `/registry/ranges/servicenodeports`
//! and rewrites it with compare-and-swap. Here each port is its own key under
//! that prefix, created if absent: concurrent allocations of different ports
//! never contend, two of the same port can never both succeed, and each key
//! names the Service holding it, so a release never frees someone else's port
//! and the repair pass can tell a leak from a port in use. The keys are not API
//! objects; the watch cache passes over them.
//!
//! The range is split as KEP-3668 splits it: the first `min(max(16, n/32), 128)`
//! ports (30000-30085 of 30000-32767) are left to explicit requests until the
//! rest is full.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use skiff_store::{KeyValue, RangeRequest, StoreError};

use super::{Owner, random_below};
use crate::object;
use crate::rest::Rest;

/// Where the port keys live: `/registry/ranges/servicenodeports/{port}`.
pub const NODE_PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// A contiguous port range, `base` and the `size - 1` ports above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The first port.
    pub base: u16,
    /// How many ports.
    pub size: u16,
}

/// `--service-node-port-range`: 30000-32767.
pub const NODE_PORT_RANGE: PortRange = PortRange {
    base: 30000,
    size: 2768,
};

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: i64) -> bool {
        let base = i64::from(self.base);
        (base..base + i64::from(self.size)).contains(&port)
    }

    /// The size of the static band: `min(max(16, n/32), 128)`, none for ranges
    /// of 16 ports or fewer.
    pub fn static_band(&self) -> u16 {
        if self.size <= 16 {
            0
        } else {
            (self.size / 32).clamp(16, 128)
        }
    }

    /// Ports in dynamic-allocation order: the dynamic band from a random start,
    /// wrapping, then the static band the same way.
    pub fn candidates(
        &self,
        upper_start: u64,
        lower_start: u64,
    ) -> impl Iterator<Item = u16> + use<> {
        let band = u64::from(self.static_band());
        let size = u64::from(self.size);
        let base = u64::from(self.base);
        let rotate = move |from: u64, len: u64, start: u64| {
            let start = if len == 0 { 0 } else { start % len };
            (start..len)
                .chain(0..start)
                .filter_map(move |i| u16::try_from(from + i).ok())
        };
        rotate(base + band, size - band, upper_start).chain(rotate(base, band, lower_start))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.base,
            u32::from(self.base) + u32::from(self.size) - 1
        )
    }
}

/// Why a port could not be allocated, in upstream's words.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Outside the node port range.
    #[error("provided port is not in the valid range. The range of valid ports is {0}")]
    NotInRange(PortRange),
    /// Another Service holds the port.
    #[error("provided port is already allocated")]
    Allocated,
    /// Every port is taken.
    #[error("range is full")]
    Full,
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[source] StoreError),
    /// A port key holds something other than a port record.
    #[error("port record {key} is corrupt: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// What a port key holds: who has the port, and since when (a port held by
/// no Service is a leak only once it is older than a write takes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    /// The Service holding the port.
    #[serde(rename = "parentRef")]
    pub owner: Owner,
    /// When the port was allocated (RFC 3339).
    #[serde(rename = "creationTimestamp")]
    pub created: String,
}

/// The store key of `port`.
pub fn key(port: u16) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

/// The port a key stands for.
pub fn port_of(key: &str) -> Option<u16> {
    key.strip_prefix(NODE_PORT_PREFIX)?.parse().ok()
}

/// Decodes a port key.
pub fn decode(kv: &KeyValue) -> Result<PortRecord, PortError> {
    serde_json::from_slice(&kv.value).map_err(|source| PortError::Corrupt {
        key: kv.key.clone(),
        source,
    })
}

/// Every port key, with its record and revision.
pub(crate) async fn list(rest: &Rest) -> Result<Vec<(u16, PortRecord, i64)>, PortError> {
    let page = rest
        .store()
        .range(RangeRequest::prefix(NODE_PORT_PREFIX))
        .await
        .map_err(PortError::Store)?;
    let mut out = Vec::with_capacity(page.kvs.len());
    for kv in &page.kvs {
        let Some(port) = port_of(&kv.key) else {
            continue;
        };
        out.push((port, decode(kv)?, kv.mod_revision));
    }
    Ok(out)
}

/// Node port allocations of one Service write.
pub(crate) struct PortAllocator<'a> {
    rest: &'a Rest,
    owner: &'a Owner,
    dry_run: bool,
    /// Ports known taken, read from the store at the first search.
    taken: Option<HashSet<u16>>,
}

impl<'a> PortAllocator<'a> {
    pub(crate) fn new(rest: &'a Rest, owner: &'a Owner, dry_run: bool) -> Self {
        PortAllocator {
            rest,
            owner,
            dry_run,
            taken: None,
        }
    }

    /// Reserves `port`. A dry run checks the range and whether it is free.
    pub(crate) async fn allocate(&mut self, port: i64) -> Result<u16, PortError> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| NODE_PORT_RANGE.contains(i64::from(*p)))
            .ok_or(PortError::NotInRange(NODE_PORT_RANGE))?;
        if self.dry_run {
            let taken_here = self.taken.as_ref().is_some_and(|t| t.contains(&port));
            let stored = self
                .rest
                .store()
                .get(&key(port))
                .await
                .map_err(PortError::Store)?;
            if taken_here || stored.is_some() {
                return Err(PortError::Allocated);
            }
            self.taken.get_or_insert_with(HashSet::new).insert(port);
            return Ok(port);
        }
        create(self.rest, port, self.owner).await?;
        if let Some(taken) = &mut self.taken {
            taken.insert(port);
        }
        Ok(port)
    }

    /// Reserves a free port, the dynamic band first. A dry run names a free
    /// port without reserving it.
    pub(crate) async fn allocate_next(&mut self) -> Result<u16, PortError> {
        if self.taken.is_none() {
            let stored = list(self.rest).await?;
            self.taken = Some(stored.into_iter().map(|(port, _, _)| port).collect());
        }
        let taken = self.taken.get_or_insert_with(HashSet::new);
        let candidates = NODE_PORT_RANGE.candidates(random_below(u64::MAX), random_below(u64::MAX));
        for port in candidates {
            if taken.contains(&port) {
                continue;
            }
            if self.dry_run {
                taken.insert(port);
                return Ok(port);
            }
            match create(self.rest, port, self.owner).await {
                Ok(()) => {
                    taken.insert(port);
                    return Ok(port);
                }
                Err(PortError::Allocated) => {
                    taken.insert(port);
                }
                Err(e) => return Err(e),
            }
        }
        Err(PortError::Full)
    }
}

/// Creates the key of `port` for `owner`; `Allocated` if it exists.
pub(crate) async fn create(rest: &Rest, port: u16, owner: &Owner) -> Result<(), PortError> {
    let record = PortRecord {
        owner: owner.clone(),
        created: object::format_time(jiff::Timestamp::now()),
    };
    let bytes = serde_json::to_vec(&record).expect("a port record always serializes");
    match rest.store().create(&key(port), bytes.into()).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists(_)) => Err(PortError::Allocated),
        Err(e) => Err(PortError::Store(e)),
    }
}

/// Frees `port` if `owner` holds it. Failures are logged: the repair pass
/// retries.
pub(crate) async fn release(rest: &Rest, port: u16, owner: &Owner) {
    let key = key(port);
    let current = match rest.store().get(&key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(port, error = %e, "cannot read node port to release it");
            return;
        }
    };
    if !decode(&current).is_ok_and(|r| r.owner == *owner) {
        return;
    }
    match rest.store().delete(&key, Some(current.mod_revision)).await {
        Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
        Err(e) => tracing::warn!(port, error = %e, "cannot release node port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_bands() {
        assert_eq!(NODE_PORT_RANGE.to_string(), "30000-32767");
        assert!(NODE_PORT_RANGE.contains(30000) && NODE_PORT_RANGE.contains(32767));
        assert!(!NODE_PORT_RANGE.contains(29999) && !NODE_PORT_RANGE.contains(32768));
        assert_eq!(NODE_PORT_RANGE.static_band(), 86);
        let small = PortRange {
            base: 100,
            size: 16,
        };
        assert_eq!(small.static_band(), 0);
        let big = PortRange {
            base: 1,
            size: 60000,
        };
        assert_eq!(big.static_band(), 128);
    }

    #[test]
    fn dynamic_order_leaves_the_static_band_for_last() {
        let all: Vec<u16> = NODE_PORT_RANGE.candidates(5, 3).collect();
        assert_eq!(all.len(), 2768);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 2768);
        assert_eq!(all[0], 30091);
        assert!(all[..2682].iter().all(|p| *p >= 30086));
        assert_eq!(all[2682], 30003);
        assert!(all[2682..].iter().all(|p| *p < 30086));
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(key(30080), "/registry/ranges/servicenodeports/30080");
        assert_eq!(port_of(&key(30080)), Some(30080));
        assert_eq!(port_of("/registry/ranges/servicenodeports/x"), None);
        let record = PortRecord {
            owner: Owner::new("default", "web"),
            created: "2024-05-01T11:00:00Z".into(),
        };
        let kv = KeyValue {
            key: key(30080),
            value: serde_json::to_vec(&record).unwrap().into(),
            create_revision: 1,
            mod_revision: 1,
        };
        assert_eq!(decode(&kv).unwrap(), record);
    }
}
