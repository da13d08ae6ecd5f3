//! Service address allocation: cluster IPs from the service CIDR and node
//! ports from 30000-32767, as upstream's service REST storage does.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_api::registry::ResourceType;

use crate::cache::WatchCache;
use crate::error::{ApiError, ApiResult};

/// The service CIDR (k3s' default): 10.43.0.0/16.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);
/// The `kubernetes` service always gets the first address.
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// True for objects that need allocation on create.
pub fn is_service(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.kind == "Service"
}

/// Fills in `spec.clusterIP(s)` and node ports that the client left empty.
/// The caller serializes allocations (one at a time) so two services never
/// get the same address.
pub fn allocate(
    cache: &WatchCache,
    rt: &'static ResourceType,
    service: &mut Value,
) -> ApiResult<()> {
    let (existing, _) = cache.list(rt, None);
    let spec = &mut service["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let requested = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    if requested.is_empty() {
        let used: HashSet<Ipv4Addr> = existing
            .iter()
            .filter_map(|s| s.object["spec"]["clusterIP"].as_str()?.parse().ok())
            .collect();
        let ip = free_ip(&used)
            .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
        spec["clusterIP"] = json!(ip.to_string());
        spec["clusterIPs"] = json!([ip.to_string()]);
    } else if spec["clusterIPs"].as_array().is_none_or(|a| a.is_empty()) {
        spec["clusterIPs"] = json!([requested]);
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        let mut used: HashSet<i64> = existing
            .iter()
            .filter_map(|s| s.object["spec"]["ports"].as_array().cloned())
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        if let Some(ports) = spec["ports"].as_array_mut() {
            for port in ports {
                if port["nodePort"].as_i64().is_some_and(|p| p != 0) {
                    continue;
                }
                let free = NODE_PORTS
                    .clone()
                    .find(|p| !used.contains(p))
                    .ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                used.insert(free);
                port["nodePort"] = json!(free);
            }
        }
    }
    Ok(())
}

/// Carries allocated addresses over an update that left them empty.
pub fn keep_allocations(new: &mut Value, old: &Value) {
    for field in ["clusterIP", "clusterIPs"] {
        let empty = match &new["spec"][field] {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if empty && !old["spec"][field].is_null() {
            new["spec"][field] = old["spec"][field].clone();
        }
    }
}

fn free_ip(used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (base, prefix) = SERVICE_CIDR;
    let base = u32::from(base);
    let size = 1u32 << (32 - prefix);
    // Skip the network address, the API service address, and broadcast.
    (2..size - 1)
        .map(|offset| Ipv4Addr::from(base + offset))
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_address_skips_reserved_and_used() {
        let mut used = HashSet::new();
        assert_eq!(free_ip(&used), Some(Ipv4Addr::new(10, 43, 0, 2)));
        used.insert(Ipv4Addr::new(10, 43, 0, 2));
        assert_eq!(free_ip(&used), Some(Ipv4Addr::new(10, 43, 0, 3)));
    }

    #[test]
    fn updates_keep_allocated_addresses() {
        let old = json!({"spec": {"clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"]}});
        let mut new = json!({"spec": {"clusterIP": ""}});
        keep_allocations(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.9"]));
    }
}
