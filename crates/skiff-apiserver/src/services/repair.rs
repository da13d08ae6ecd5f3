//! The repair pass: makes the allocation records match the Services.
//!
//! Upstream runs two such controllers in the API server (`repairip` for
//! IPAddresses, the node port repair over its bitmap). This pass does both:
//!
//! - a Service whose cluster IP has no IPAddress gets one (a store written
//!   before IPAddresses existed, or a crash between steps); one whose
//!   IPAddress names another parent that does not hold the address gets it
//!   back; one sharing its address with another Service is only reported;
//! - an IPAddress of the Service allocator whose parent does not hold it is
//!   deleted, and likewise a node port key;
//! - a Service's node port without a key gets one.
//!
//! Records are deleted only once older than [`LEAK_GRACE`]: a Service write
//! reserves before it stores the Service, and a record younger than that may
//! belong to a write still in flight. Every delete is conditional on the
//! revision the pass saw, so a record re-created meanwhile survives.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use skiff_api::registry;
use skiff_store::StoreError;
use tokio_util::sync::CancellationToken;

use super::cluster_ip::{
    self, IpError, MANAGED_BY, MANAGED_BY_LABEL, create_ip_address, ip_address_type,
    service_cidr_type,
};
use super::node_ports::{self, NODE_PORT_RANGE, PortError, PortRecord};
use super::{Owner, ensure_default_service_cidr, held_ips, held_ports};
use crate::cache::object_key;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::Rest;

/// How often the pass runs after the one at start (upstream's repair
/// interval).
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(180);
/// How often the default ServiceCIDR is checked (upstream's 10 s).
const CIDR_INTERVAL: Duration = Duration::from_secs(10);
/// How old a record held by nobody must be before it counts as leaked: the
/// API server's default request timeout, as upstream uses.
pub const LEAK_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// What a pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// IPAddresses created or re-created for Services.
    pub ips_created: usize,
    /// Leaked IPAddresses deleted.
    pub ips_deleted: usize,
    /// Node port keys created or handed back to their Service.
    pub ports_created: usize,
    /// Leaked node port keys deleted.
    pub ports_deleted: usize,
}

impl RepairReport {
    /// Whether the pass changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == RepairReport::default()
    }
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("service allocation repair: {e}"))
}

fn older_than_grace(created: &str, now: Timestamp) -> bool {
    created
        .parse::<Timestamp>()
        .is_ok_and(|t| now.duration_since(t) > LEAK_GRACE)
}

/// [`repair_at`] the current time.
pub async fn repair(rest: &Rest) -> ApiResult<RepairReport> {
    repair_at(rest, Timestamp::now()).await
}

/// One repair pass, judging record ages at `now`.
pub async fn repair_at(rest: &Rest, now: Timestamp) -> ApiResult<RepairReport> {
    rest.cache
        .sync()
        .await
        .map_err(|e| ApiError::timeout(e.to_string()))?;
    let services_rt = registry::by_plural("", "v1", "services").expect("services are served");
    let (services, _) = rest.cache.list(services_rt, None);
    let services: HashMap<Owner, &Value> = services
        .iter()
        .map(|s| (Owner::of(&s.object), &s.object))
        .collect();
    let mut report = RepairReport::default();
    repair_ips(rest, &services, now, &mut report).await?;
    repair_ports(rest, &services, now, &mut report).await?;
    if !report.is_empty() {
        tracing::info!(?report, "repaired Service allocations");
    }
    Ok(report)
}

async fn repair_ips(
    rest: &Rest,
    services: &HashMap<Owner, &Value>,
    now: Timestamp,
    report: &mut RepairReport,
) -> ApiResult<()> {
    let (cidrs, _) = rest.cache.list(service_cidr_type(), None);
    let cidrs: Vec<Value> = cidrs.iter().map(|c| c.object.clone()).collect();
    let ranges = cluster_ip::ranges_of(&cidrs);
    let (addresses, _) = rest.cache.list(ip_address_type(), None);
    let addresses: HashMap<&str, (&Value, i64)> = addresses
        .iter()
        .map(|a| (object::name(&a.object), (&a.object, a.revision)))
        .collect();
    let holds = |owner: &Owner, ip: Ipv4Addr| {
        services
            .get(owner)
            .is_some_and(|svc| held_ips(svc).contains(&ip))
    };

    let mut owners: Vec<(&Owner, &&Value)> = services.iter().collect();
    owners.sort_by_key(|(owner, _)| *owner);
    for (owner, svc) in owners {
        for ip in held_ips(svc) {
            if !ranges.iter().any(|r| r.range.contains(ip)) {
                tracing::warn!(service = %format!("{}/{}", owner.namespace, owner.name), %ip,
                    "the cluster IP is not within any ServiceCIDR; please recreate the Service");
                continue;
            }
            let name = ip.to_string();
            let Some((address, revision)) = addresses.get(name.as_str()) else {
                tracing::warn!(%ip, service = %owner.name, "cluster IP is not allocated; repairing");
                create_owned(rest, ip, owner, report).await?;
                continue;
            };
            let parent = &address["spec"]["parentRef"];
            let labelled = object::labels(address)
                .get(MANAGED_BY_LABEL)
                .map(String::as_str)
                == Some(MANAGED_BY);
            if owner.is_parent_of(parent) && labelled {
                continue;
            }
            if let Some(other) = Owner::from_parent_ref(parent)
                && other != *owner
                && holds(&other, ip)
            {
                tracing::warn!(%ip, service = %owner.name, holder = %other.name,
                    "cluster IP was assigned to multiple services; please recreate the Service");
                continue;
            }
            tracing::warn!(%ip, service = %owner.name, "IPAddress has a wrong reference; repairing");
            let key = object_key(ip_address_type(), None, &name);
            match rest.store().delete(&key, Some(*revision)).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
            create_owned(rest, ip, owner, report).await?;
        }
    }

    for (name, (address, revision)) in &addresses {
        if object::labels(address)
            .get(MANAGED_BY_LABEL)
            .map(String::as_str)
            != Some(MANAGED_BY)
        {
            continue;
        }
        let Ok(ip) = name.parse::<Ipv4Addr>() else {
            continue;
        };
        let parent = Owner::from_parent_ref(&address["spec"]["parentRef"]);
        let leaked = match &parent {
            // Made by the allocator but no longer naming a Service.
            None => true,
            Some(owner) => {
                !holds(owner, ip)
                    && older_than_grace(object::meta_str(address, "creationTimestamp"), now)
            }
        };
        if !leaked {
            continue;
        }
        tracing::warn!(%ip, "IPAddress appears to have leaked: cleaning up");
        let key = object_key(ip_address_type(), None, name);
        match rest.store().delete(&key, Some(*revision)).await {
            Ok(_) => report.ips_deleted += 1,
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(())
}

async fn create_owned(
    rest: &Rest,
    ip: Ipv4Addr,
    owner: &Owner,
    report: &mut RepairReport,
) -> ApiResult<()> {
    match create_ip_address(rest, ip, owner).await {
        Ok(()) => report.ips_created += 1,
        // Someone allocated it meanwhile; the next pass looks again.
        Err(IpError::Allocated) => {}
        Err(e) => return Err(store_error(e)),
    }
    Ok(())
}

async fn repair_ports(
    rest: &Rest,
    services: &HashMap<Owner, &Value>,
    now: Timestamp,
    report: &mut RepairReport,
) -> ApiResult<()> {
    let records: HashMap<u16, (PortRecord, i64)> = node_ports::list(rest)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|(port, record, revision)| (port, (record, revision)))
        .collect();
    let holds = |owner: &Owner, port: u16| {
        services
            .get(owner)
            .is_some_and(|svc| held_ports(svc).contains(&port))
    };

    let mut owners: Vec<(&Owner, &&Value)> = services.iter().collect();
    owners.sort_by_key(|(owner, _)| *owner);
    for (owner, svc) in owners {
        for port in held_ports(svc) {
            if !NODE_PORT_RANGE.contains(i64::from(port)) {
                tracing::warn!(port, service = %owner.name,
                    "the node port is not within the node port range; please recreate the Service");
                continue;
            }
            match records.get(&port) {
                None => {
                    tracing::warn!(port, service = %owner.name, "node port is not allocated; repairing");
                    match node_ports::create(rest, port, owner).await {
                        Ok(()) => report.ports_created += 1,
                        Err(PortError::Allocated) => {}
                        Err(e) => return Err(store_error(e)),
                    }
                }
                Some((record, _)) if record.owner == *owner => {}
                Some((record, _)) if holds(&record.owner, port) => {
                    tracing::warn!(port, service = %owner.name, holder = %record.owner.name,
                        "node port was assigned to multiple services; please recreate the Service");
                }
                Some((_, revision)) => {
                    let record = PortRecord {
                        owner: owner.clone(),
                        created: object::format_time(now),
                    };
                    let bytes = serde_json::to_vec(&record).expect("a port record serializes");
                    match rest
                        .store()
                        .update(&node_ports::key(port), bytes.into(), *revision)
                        .await
                    {
                        Ok(_) => report.ports_created += 1,
                        Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(store_error(e)),
                    }
                }
            }
        }
    }

    for (port, (record, revision)) in &records {
        if holds(&record.owner, *port) || !older_than_grace(&record.created, now) {
            continue;
        }
        tracing::warn!(port, "node port appears to have leaked: cleaning up");
        match rest
            .store()
            .delete(&node_ports::key(*port), Some(*revision))
            .await
        {
            Ok(_) => report.ports_deleted += 1,
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(())
}

/// Keeps the default ServiceCIDR in place and repairs allocations until
/// `shutdown`; the caller has already done both once.
pub async fn run(rest: Arc<Rest>, shutdown: CancellationToken) {
    let mut cidr_tick = tokio::time::interval(CIDR_INTERVAL);
    let mut repair_tick = tokio::time::interval(REPAIR_INTERVAL);
    cidr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    repair_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first ticks complete at once; start-up did that work.
    cidr_tick.tick().await;
    repair_tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = cidr_tick.tick() => {
                if let Err(e) = ensure_default_service_cidr(&rest).await {
                    tracing::warn!(error = %e, "cannot keep the default ServiceCIDR");
                }
            }
            _ = repair_tick.tick() => {
                if let Err(e) = repair(&rest).await {
                    tracing::warn!(error = %e, "Service allocation repair failed");
                }
            }
        }
    }
}
