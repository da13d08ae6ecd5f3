//! Service address allocation: cluster IPs from ServiceCIDRs and node ports
//! from 30000-32767, as upstream's Service REST storage does.
//!
//! Every allocation is an object in the store created only if absent: an
//! IPAddress named by the address for a cluster IP ([`cluster_ip`]), a key
//! under `/registry/ranges/servicenodeports/` for a node port
//! ([`node_ports`]). The store decides between concurrent writers, so no lock
//! is held and several API servers may share one store; and the allocations
//! survive restarts because they are the stored state itself.
//!
//! A Service write runs in three steps, as upstream's transactions do:
//! 1. [`allocate_create`] / [`allocate_update`] reserve what the new object
//!    needs (failing with upstream's 422 or 500 and keeping nothing) and
//!    return an [`Allocation`];
//! 2. the caller writes the Service;
//! 3. on success [`Allocation::commit`] frees what the old object held and
//!    the new one does not; on failure [`Allocation::revert`] frees what
//!    step 1 reserved. A conflict retry therefore never leaks, and nothing is
//!    freed before the Service that held it is gone.
//!
//! A release deletes only what names the Service as its holder, so a write
//! can never free an address or port another Service holds. Whatever a crash
//! between the steps leaves behind — an address nobody holds, a Service
//! whose address has no IPAddress (a store from before IPAddresses existed)
//! — the [`repair`] pass fixes at start and every few minutes.

mod cluster_ip;
mod default_cidr;
mod node_ports;
mod repair;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use skiff_api::registry::{FieldError, ResourceType};

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::Rest;

pub use cluster_ip::{
    CidrRange, IP_FAMILY_LABEL, IpError, Ipv4Range, MANAGED_BY, MANAGED_BY_LABEL, range_for,
    ranges_of, top_level,
};
pub use default_cidr::{
    DEFAULT_SERVICE_CIDR, DEFAULT_SERVICE_CIDR_NAME, ensure_default_service_cidr,
};
pub use node_ports::{NODE_PORT_PREFIX, NODE_PORT_RANGE, PortError, PortRange, PortRecord};
pub use repair::{REPAIR_INTERVAL, RepairReport, repair, repair_at, run};

/// The `kubernetes` Service's address: the first of the default range.
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);

/// The field manager of objects this module writes.
const MANAGER: &str = "skiff-apiserver";

/// True for the type whose objects get addresses.
pub fn is_service(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.kind == "Service"
}

/// The Service an address or port belongs to (an IPAddress `parentRef`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl Owner {
    /// The Service `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Owner {
        Owner {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The owner of everything `service` holds.
    pub fn of(service: &Value) -> Owner {
        Owner::new(object::namespace(service), object::name(service))
    }

    /// The IPAddress `spec.parentRef` naming this Service.
    pub fn parent_ref(&self) -> Value {
        json!({"group": "", "resource": "services", "namespace": self.namespace, "name": self.name})
    }

    /// Whether an IPAddress `spec.parentRef` names this Service.
    pub fn is_parent_of(&self, parent_ref: &Value) -> bool {
        Owner::from_parent_ref(parent_ref).as_ref() == Some(self)
    }

    /// The Service a `parentRef` names, if it names a Service.
    pub fn from_parent_ref(parent_ref: &Value) -> Option<Owner> {
        let group = parent_ref["group"].as_str().unwrap_or("");
        let resource = parent_ref["resource"].as_str()?;
        (group.is_empty() && resource == "services").then(|| {
            Owner::new(
                parent_ref["namespace"].as_str().unwrap_or(""),
                parent_ref["name"].as_str().unwrap_or(""),
            )
        })
    }
}

/// A random number below `n` (> 0), from the v4 UUID generator's entropy.
fn random_below(n: u64) -> u64 {
    let bits = uuid::Uuid::new_v4().as_u128();
    ((bits >> 64) as u64 ^ bits as u64) % n
}

/// `spec.type`, `ClusterIP` when unset (the default).
fn service_type(svc: &Value) -> &str {
    match svc["spec"]["type"].as_str() {
        None | Some("") => "ClusterIP",
        Some(t) => t,
    }
}

/// Every type but ExternalName has cluster IPs (or `None`).
fn needs_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName"
}

fn needs_node_port(svc: &Value) -> bool {
    matches!(service_type(svc), "NodePort" | "LoadBalancer")
}

/// A LoadBalancer with `externalTrafficPolicy: Local` gets a health check port.
fn needs_health_check(svc: &Value) -> bool {
    service_type(svc) == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"] == "Local"
}

/// Whether ports without a node port get one: NodePorts always,
/// LoadBalancers unless `allocateLoadBalancerNodePorts` is false.
fn should_allocate_node_ports(svc: &Value) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc["spec"]["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

fn cluster_ip(svc: &Value) -> &str {
    svc["spec"]["clusterIP"].as_str().unwrap_or("")
}

fn cluster_ips(svc: &Value) -> Vec<&str> {
    svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn is_headless(svc: &Value) -> bool {
    cluster_ip(svc) == "None" || cluster_ips(svc).first() == Some(&"None")
}

/// The IPv4 cluster IPs `svc` holds.
fn held_ips(svc: &Value) -> Vec<Ipv4Addr> {
    if !needs_cluster_ip(svc) {
        return Vec::new();
    }
    let mut ips: Vec<Ipv4Addr> = cluster_ips(svc)
        .into_iter()
        .chain(Some(cluster_ip(svc)))
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn ports(svc: &Value) -> &[Value] {
    svc["spec"]["ports"].as_array().map_or(&[], Vec::as_slice)
}

fn node_port(port: &Value) -> i64 {
    port["nodePort"].as_i64().unwrap_or(0)
}

/// The non-zero node ports of `svc`'s ports (upstream's
/// `collectServiceNodePorts`).
fn node_ports_of(svc: &Value) -> Vec<i64> {
    ports(svc)
        .iter()
        .map(node_port)
        .filter(|p| *p != 0)
        .collect()
}

fn health_check_node_port(svc: &Value) -> i64 {
    svc["spec"]["healthCheckNodePort"].as_i64().unwrap_or(0)
}

/// Every node port `svc` holds: its ports' and its health check port.
fn held_ports(svc: &Value) -> Vec<u16> {
    let mut held: Vec<u16> = node_ports_of(svc)
        .into_iter()
        .chain(Some(health_check_node_port(svc)).filter(|p| *p != 0))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    held.sort_unstable();
    held.dedup();
    held
}

/// Absent, `null`, `""`, `[]` and `{}` alike, as Go's zero values are.
fn zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn same_field(a: &Value, b: &Value, field: &str) -> bool {
    let (x, y) = (&a["spec"][field], &b["spec"][field]);
    (zero(x) && zero(y)) || x == y
}

fn spec_mut(svc: &mut Value) -> Option<&mut Map<String, Value>> {
    svc.get_mut("spec").and_then(Value::as_object_mut)
}

/// Makes `clusterIP` and `clusterIPs` agree, as upstream's
/// `NormalizeClusterIPs` guesses what a client meant that set only one.
fn normalize_cluster_ips(new: &mut Value, old: Option<&Value>) {
    let ip = cluster_ip(new).to_string();
    let ips: Vec<String> = cluster_ips(new).into_iter().map(String::from).collect();
    let Some(spec) = spec_mut(new) else {
        return;
    };
    let Some(old) = old else {
        if !ip.is_empty() && ips.is_empty() {
            spec.insert("clusterIPs".into(), json!([ip]));
        } else if ip.is_empty() && !ips.is_empty() {
            spec.insert("clusterIP".into(), json!(ips[0]));
        }
        return;
    };
    let old_ip = cluster_ip(old);
    let old_ips = cluster_ips(old);
    let mut ips = ips;
    // An old client patching something else sent clusterIP but no clusterIPs.
    if !old_ips.is_empty() && ips.is_empty() && old_ip == ip {
        ips = old_ips.iter().map(|s| s.to_string()).collect();
        spec.insert("clusterIPs".into(), json!(ips));
    }
    if old_ip != ip {
        if !old_ip.is_empty() && ip.is_empty() {
            // Clearing one clears both.
            spec.remove("clusterIPs");
        } else if !ip.is_empty() && ips.is_empty() {
            spec.insert("clusterIPs".into(), json!([ip]));
        } else if !ip.is_empty() && old_ips == ips {
            // Only the singular changed: the plural follows it.
            ips[0] = ip;
            spec.insert("clusterIPs".into(), json!(ips));
        }
    }
}

/// Wipes what the new type has no use for, if the client left it as it was
/// (upstream's `dropTypeDependentFields`): the addresses and ports are then
/// freed once the update is stored.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let wipe_ips = needs_cluster_ip(old) && !needs_cluster_ip(new);
    let same_ips = same_field(old, new, "clusterIPs");
    let same_families = same_field(old, new, "ipFamilies");
    let same_policy = same_field(old, new, "ipFamilyPolicy");
    let nodeports_superset = {
        let old_ports: HashSet<i64> = node_ports_of(old).into_iter().collect();
        node_ports_of(new).iter().all(|p| old_ports.contains(p))
    };
    let wipe_node_ports = needs_node_port(old) && !needs_node_port(new) && nodeports_superset;
    let wipe_health = needs_health_check(old)
        && !needs_health_check(new)
        && health_check_node_port(old) == health_check_node_port(new);
    let leaving_lb = service_type(old) == "LoadBalancer" && service_type(new) != "LoadBalancer";
    let same_allocate = leaving_lb
        && !old["spec"]["allocateLoadBalancerNodePorts"].is_null()
        && same_field(old, new, "allocateLoadBalancerNodePorts");
    let same_lb_class = leaving_lb
        && !old["spec"]["loadBalancerClass"].is_null()
        && same_field(old, new, "loadBalancerClass");
    let wipe_etp = needs_node_port(old)
        && !needs_node_port(new)
        && same_field(old, new, "externalTrafficPolicy");
    let wipe_itp = needs_cluster_ip(old)
        && !needs_cluster_ip(new)
        && !old["spec"]["internalTrafficPolicy"].is_null()
        && same_field(old, new, "internalTrafficPolicy");
    let not_lb = service_type(new) != "LoadBalancer";
    let Some(spec) = spec_mut(new) else {
        return;
    };
    if wipe_ips {
        if same_ips {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        if same_families {
            spec.remove("ipFamilies");
        }
        if same_policy {
            spec.remove("ipFamilyPolicy");
        }
    }
    if wipe_node_ports && let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.remove("nodePort");
        }
    }
    if wipe_health {
        spec.remove("healthCheckNodePort");
    }
    if same_allocate {
        spec.remove("allocateLoadBalancerNodePorts");
    }
    if same_lb_class {
        spec.remove("loadBalancerClass");
    }
    if wipe_etp {
        spec.remove("externalTrafficPolicy");
    }
    if wipe_itp {
        spec.remove("internalTrafficPolicy");
    }
    if not_lb && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut) {
        status.insert("loadBalancer".into(), json!({}));
    }
}

/// Fills in what the client left out but the Service already holds
/// (upstream's `patchAllocatedValues`), so that re-applying a manifest without
/// addresses or node ports keeps them instead of changing them.
fn patch_allocated_values(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let old_ip = old["spec"]["clusterIP"].clone();
        let old_ips = old["spec"]["clusterIPs"].clone();
        let fill_ip = cluster_ip(new).is_empty();
        let fill_ips = cluster_ips(new).is_empty() && !cluster_ips(old).is_empty();
        if let Some(spec) = spec_mut(new) {
            if fill_ip && !zero(&old_ip) {
                spec.insert("clusterIP".into(), old_ip);
            }
            if fill_ips {
                spec.insert("clusterIPs".into(), old_ips);
            }
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let new_set: HashSet<i64> = node_ports_of(new).into_iter().collect();
        // Node ports both objects name cannot be handed to another port.
        let used: HashSet<i64> = node_ports_of(old)
            .into_iter()
            .filter(|p| new_set.contains(p))
            .collect();
        let by_name: HashMap<String, i64> = ports(old)
            .iter()
            .map(|p| (p["name"].as_str().unwrap_or("").to_string(), node_port(p)))
            .collect();
        if let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") {
            for port in ports.iter_mut() {
                if node_port(port) != 0 {
                    continue;
                }
                let name = port["name"].as_str().unwrap_or("");
                if let Some(&old_port) = by_name.get(name)
                    && old_port != 0
                    && !used.contains(&old_port)
                    && let Some(p) = port.as_object_mut()
                {
                    p.insert("nodePort".into(), json!(old_port));
                }
            }
        }
    }
    if needs_health_check(old) && needs_health_check(new) && health_check_node_port(new) == 0 {
        let old_port = health_check_node_port(old);
        if old_port != 0
            && let Some(spec) = spec_mut(new)
        {
            spec.insert("healthCheckNodePort".into(), json!(old_port));
        }
    }
}

/// Service-specific preparation of an update of the main resource, before
/// defaulting and validation.
pub fn prepare_update(new: &mut Value, old: &Value) {
    normalize_cluster_ips(new, Some(old));
    drop_type_dependent_fields(new, old);
    patch_allocated_values(new, old);
}

/// What one Service write reserved, and what it frees once stored.
#[must_use = "an allocation must be committed once the Service is stored, or reverted"]
#[derive(Debug, Default)]
pub struct Allocation {
    owner: Option<Owner>,
    allocated_ips: Vec<Ipv4Addr>,
    allocated_ports: Vec<u16>,
    released_ips: Vec<Ipv4Addr>,
    released_ports: Vec<u16>,
}

impl Allocation {
    /// Nothing reserved, nothing to free.
    pub fn none() -> Allocation {
        Allocation::default()
    }

    /// Whether the write reserved or frees anything.
    pub fn is_empty(&self) -> bool {
        self.allocated_ips.is_empty()
            && self.allocated_ports.is_empty()
            && self.released_ips.is_empty()
            && self.released_ports.is_empty()
    }

    /// The Service was stored: frees what the old object held and the new
    /// one does not.
    pub async fn commit(self, rest: &Rest) {
        let Some(owner) = &self.owner else {
            return;
        };
        for ip in &self.released_ips {
            cluster_ip::release(rest, *ip, owner).await;
        }
        for port in &self.released_ports {
            node_ports::release(rest, *port, owner).await;
        }
    }

    /// The Service was not stored: frees what this write reserved.
    pub async fn revert(self, rest: &Rest) {
        let Some(owner) = &self.owner else {
            return;
        };
        for ip in &self.allocated_ips {
            cluster_ip::release(rest, *ip, owner).await;
        }
        for port in &self.allocated_ports {
            node_ports::release(rest, *port, owner).await;
        }
    }
}

/// One Service write's allocations in progress.
struct Op<'a> {
    rest: &'a Rest,
    rt: &'static ResourceType,
    owner: Owner,
    dry_run: bool,
    done: Allocation,
}

impl Op<'_> {
    fn invalid(&self, field: String, value: String, detail: String) -> ApiError {
        ApiError::invalid(
            self.rt,
            &self.owner.name,
            &[FieldError {
                reason: "FieldValueInvalid",
                field,
                message: format!("Invalid value: {value}: {detail}"),
            }],
        )
    }

    /// Upstream refuses what this single-stack IPv4 cluster cannot give
    /// (`initIPFamilyFields`).
    fn check_families(&self, svc: &Value) -> ApiResult<()> {
        if svc["spec"]["ipFamilyPolicy"] == "RequireDualStack" {
            return Err(self.invalid(
                "spec.ipFamilyPolicy".into(),
                "\"RequireDualStack\"".into(),
                "this cluster is not configured for dual-stack services".into(),
            ));
        }
        let families = svc["spec"]["ipFamilies"].as_array().into_iter().flatten();
        for (i, family) in families.enumerate() {
            let family = family.as_str().unwrap_or("");
            if family != "IPv4" {
                return Err(self.invalid(
                    format!("spec.ipFamilies[{i}]"),
                    json!(family).to_string(),
                    "not configured on this cluster".into(),
                ));
            }
        }
        Ok(())
    }

    /// Gives a headful, non-ExternalName Service its cluster IP: the one it
    /// asks for, or a free one.
    async fn cluster_ips(&mut self, svc: &mut Value) -> ApiResult<()> {
        if !needs_cluster_ip(svc) || is_headless(svc) {
            return Ok(());
        }
        self.check_families(svc)?;
        // The ranges and the taken addresses come from the cache: let it
        // catch up with the store, so a ServiceCIDR created a moment ago
        // counts and the search skips what was allocated before this write.
        self.rest
            .cache
            .sync()
            .await
            .map_err(|e| ApiError::timeout(e.to_string()))?;
        let requested = cluster_ip(svc).to_string();
        let mut ips = cluster_ip::IpAllocator::new(self.rest, &self.owner, self.dry_run);
        if requested.is_empty() {
            let ip = ips.allocate_next().await.map_err(|e| {
                ApiError::internal(format!(
                    "Internal error occurred: failed to allocate a serviceIP: {e}"
                ))
            })?;
            if !self.dry_run {
                self.done.allocated_ips.push(ip);
            }
            if let Some(spec) = spec_mut(svc) {
                spec.insert("clusterIP".into(), json!(ip.to_string()));
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
            }
            return Ok(());
        }
        let result = match requested.parse::<Ipv4Addr>() {
            Ok(ip) => ips.allocate(ip).await.map(|()| ip),
            Err(_) => Err(IpError::MismatchedNetwork),
        };
        match result {
            Ok(ip) => {
                if !self.dry_run {
                    self.done.allocated_ips.push(ip);
                }
                Ok(())
            }
            Err(IpError::Store(e)) => Err(ApiError::internal(format!(
                "Internal error occurred: failed to allocate IP {requested}: {e}"
            ))),
            Err(e) => Err(self.invalid(
                "spec.clusterIPs".into(),
                svc["spec"]["clusterIPs"].to_string(),
                format!("failed to allocate IP {requested}: {e}"),
            )),
        }
    }

    fn port_error(&self, index: usize, port: i64, e: PortError) -> ApiError {
        match e {
            PortError::NotInRange(_) | PortError::Allocated => self.invalid(
                format!("spec.ports[{index}].nodePort"),
                port.to_string(),
                e.to_string(),
            ),
            other => ApiError::internal(format!(
                "Internal error occurred: failed to allocate node port {port}: {other}"
            )),
        }
    }

    fn next_port_error(e: PortError) -> ApiError {
        ApiError::internal(format!(
            "Internal error occurred: failed to allocate a nodePort: {e}"
        ))
    }

    fn set_node_port(svc: &mut Value, index: usize, port: i64) {
        if let Some(p) = svc
            .pointer_mut(&format!("/spec/ports/{index}"))
            .and_then(Value::as_object_mut)
        {
            p.insert("nodePort".into(), json!(port));
        }
    }

    fn record_port(&mut self, port: u16) {
        if !self.dry_run {
            self.done.allocated_ports.push(port);
        }
    }

    /// Node ports of a new NodePort or LoadBalancer Service (upstream's
    /// `initNodePorts`): ports sharing a number (53/UDP and 53/TCP) share a
    /// node port.
    async fn init_node_ports(
        &mut self,
        svc: &mut Value,
        allocator: &mut node_ports::PortAllocator<'_>,
    ) -> ApiResult<()> {
        let should = should_allocate_node_ports(svc);
        let snapshot: Vec<Value> = ports(svc).to_vec();
        let mut by_number: HashMap<i64, i64> = HashMap::new();
        for (i, port) in snapshot.iter().enumerate() {
            let number = port["port"].as_i64().unwrap_or(0);
            let requested = node_port(port);
            if requested == 0 && !should {
                continue;
            }
            match by_number.get(&number).copied() {
                None => {
                    let asked = snapshot
                        .iter()
                        .find(|p| p["port"].as_i64() == Some(number) && node_port(p) != 0)
                        .map_or(0, node_port);
                    let got = if asked != 0 {
                        let p = allocator
                            .allocate(asked)
                            .await
                            .map_err(|e| self.port_error(i, asked, e))?;
                        self.record_port(p);
                        asked
                    } else {
                        let p = allocator
                            .allocate_next()
                            .await
                            .map_err(Self::next_port_error)?;
                        self.record_port(p);
                        i64::from(p)
                    };
                    Self::set_node_port(svc, i, got);
                    by_number.insert(number, got);
                }
                Some(shared) if requested != shared => {
                    if requested == 0 {
                        Self::set_node_port(svc, i, shared);
                    } else {
                        let p = allocator
                            .allocate(requested)
                            .await
                            .map_err(|e| self.port_error(i, requested, e))?;
                        self.record_port(p);
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Node ports of an updated NodePort or LoadBalancer Service (upstream's
    /// `updateNodePorts`): new ones are reserved, dropped ones freed later.
    async fn update_node_ports(
        &mut self,
        svc: &mut Value,
        old: &Value,
        allocator: &mut node_ports::PortAllocator<'_>,
    ) -> ApiResult<()> {
        let old_ports: HashSet<i64> = node_ports_of(old).into_iter().collect();
        let should = should_allocate_node_ports(svc);
        let mut reserved: HashSet<i64> = HashSet::new();
        let snapshot: Vec<Value> = ports(svc).to_vec();
        for (i, port) in snapshot.iter().enumerate() {
            let requested = node_port(port);
            if requested == 0 && !should {
                continue;
            }
            if requested != 0 {
                if !old_ports.contains(&requested) && !reserved.contains(&requested) {
                    let p = allocator
                        .allocate(requested)
                        .await
                        .map_err(|e| self.port_error(i, requested, e))?;
                    self.record_port(p);
                    reserved.insert(requested);
                }
            } else {
                let p = allocator
                    .allocate_next()
                    .await
                    .map_err(Self::next_port_error)?;
                self.record_port(p);
                Self::set_node_port(svc, i, i64::from(p));
            }
        }
        let new_ports: HashSet<i64> = node_ports_of(svc).into_iter().collect();
        self.release_ports(old_ports.difference(&new_ports).copied());
        Ok(())
    }

    /// Reserves the health check port of a LoadBalancer with local traffic.
    async fn health_check_port(
        &mut self,
        svc: &mut Value,
        allocator: &mut node_ports::PortAllocator<'_>,
    ) -> ApiResult<()> {
        let requested = health_check_node_port(svc);
        if requested != 0 {
            let p = allocator.allocate(requested).await.map_err(|e| {
                ApiError::internal(format!(
                    "Internal error occurred: failed to allocate requested HealthCheck NodePort {requested}: {e}"
                ))
            })?;
            self.record_port(p);
            return Ok(());
        }
        let p = allocator.allocate_next().await.map_err(|e| {
            ApiError::internal(format!(
                "Internal error occurred: failed to allocate a HealthCheck NodePort: {e}"
            ))
        })?;
        self.record_port(p);
        if let Some(spec) = spec_mut(svc) {
            spec.insert("healthCheckNodePort".into(), json!(p));
        }
        Ok(())
    }

    fn release_ports(&mut self, ports: impl IntoIterator<Item = i64>) {
        if self.dry_run {
            return;
        }
        self.done
            .released_ports
            .extend(ports.into_iter().filter_map(|p| u16::try_from(p).ok()));
    }

    /// Everything a new Service needs.
    async fn create(&mut self, svc: &mut Value) -> ApiResult<()> {
        self.cluster_ips(svc).await?;
        let rest = self.rest;
        let owner = self.owner.clone();
        let mut allocator = node_ports::PortAllocator::new(rest, &owner, self.dry_run);
        if needs_node_port(svc) {
            self.init_node_ports(svc, &mut allocator).await?;
        }
        if needs_health_check(svc) {
            self.health_check_port(svc, &mut allocator).await?;
        }
        Ok(())
    }

    /// What an update from `old` to `svc` reserves and frees (upstream's
    /// `allocateUpdate`).
    async fn update(&mut self, svc: &mut Value, old: &Value) -> ApiResult<()> {
        if !needs_cluster_ip(old) && needs_cluster_ip(svc) {
            normalize_cluster_ips(svc, None);
            self.cluster_ips(svc).await?;
        } else if needs_cluster_ip(old)
            && !is_headless(old)
            && !needs_cluster_ip(svc)
            && !self.dry_run
        {
            self.done.released_ips.extend(held_ips(old));
        }
        let rest = self.rest;
        let owner = self.owner.clone();
        let mut allocator = node_ports::PortAllocator::new(rest, &owner, self.dry_run);
        if needs_node_port(old) && !needs_node_port(svc) {
            self.release_ports(node_ports_of(old));
        }
        if needs_node_port(svc) {
            self.update_node_ports(svc, old, &mut allocator).await?;
        }
        match (needs_health_check(old), needs_health_check(svc)) {
            (false, true) => self.health_check_port(svc, &mut allocator).await?,
            (true, false) => {
                let old_port = health_check_node_port(old);
                if old_port != 0 {
                    self.release_ports([old_port]);
                }
            }
            _ => {}
        }
        // Never free what the stored object will still hold.
        let keep_ips = held_ips(svc);
        let keep_ports = held_ports(svc);
        self.done.released_ips.retain(|ip| !keep_ips.contains(ip));
        self.done.released_ports.retain(|p| !keep_ports.contains(p));
        Ok(())
    }
}

/// Reserves the cluster IP and node ports a new Service needs, filling them
/// into `svc`. On error nothing stays reserved. A dry run checks and fills
/// in values without reserving anything.
pub async fn allocate_create(
    rest: &Rest,
    rt: &'static ResourceType,
    svc: &mut Value,
    dry_run: bool,
) -> ApiResult<Allocation> {
    if !is_service(rt) {
        return Ok(Allocation::none());
    }
    normalize_cluster_ips(svc, None);
    let owner = Owner::of(svc);
    let mut op = Op {
        rest,
        rt,
        owner: owner.clone(),
        dry_run,
        done: Allocation {
            owner: Some(owner),
            ..Allocation::default()
        },
    };
    match op.create(svc).await {
        Ok(()) => Ok(op.done),
        Err(e) => {
            op.done.revert(rest).await;
            Err(e)
        }
    }
}

/// Reserves what an update from `old` to `svc` adds (a type change, new
/// node ports) and notes what it drops, for [`Allocation::commit`] to free.
/// On error nothing stays reserved and nothing is freed.
pub async fn allocate_update(
    rest: &Rest,
    rt: &'static ResourceType,
    old: &Value,
    svc: &mut Value,
    dry_run: bool,
) -> ApiResult<Allocation> {
    if !is_service(rt) {
        return Ok(Allocation::none());
    }
    let owner = Owner::of(old);
    let mut op = Op {
        rest,
        rt,
        owner: owner.clone(),
        dry_run,
        done: Allocation {
            owner: Some(owner),
            ..Allocation::default()
        },
    };
    match op.update(svc, old).await {
        Ok(()) => Ok(op.done),
        Err(e) => {
            op.done.revert(rest).await;
            Err(e)
        }
    }
}

/// Frees everything a deleted Service held.
pub async fn release(rest: &Rest, rt: &ResourceType, svc: &Value) {
    if !is_service(rt) {
        return;
    }
    let owner = Owner::of(svc);
    for ip in held_ips(svc) {
        cluster_ip::release(rest, ip, &owner).await;
    }
    for port in held_ports(svc) {
        node_ports::release(rest, port, &owner).await;
    }
}

#[cfg(test)]
mod tests;
