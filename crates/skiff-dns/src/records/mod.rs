//! The record model: what the cluster zone answers, precomputed from the
//! Services, EndpointSlices and Namespaces in the caches.
//!
//! Two halves, so that answering never waits for building:
//!
//! - [`Cluster`] holds the inputs (the objects, grouped by Service) and builds
//!   the records of one Service at a time ([`Cluster::service_records`]) or of
//!   everything ([`Cluster::records`], after a relist). It is owned by the one
//!   task that applies watch events.
//! - [`Records`] is the index queries read: owner name → data, IP → PTR
//!   targets. A change to one Service replaces only that Service's names
//!   ([`Records::set_service`]), so an endpoint flapping in a 10k-Service
//!   cluster costs the records of one Service, and a query costs one hash
//!   lookup whatever the cluster's size.
//!
//! Names under `svc.<domain>` live in the index; names whose answer follows
//! from the name itself (pod records `a-b-c-d.<ns>.pod.<domain>`, the zone
//! apex, `dns-version.<domain>`, `ns.dns.<domain>`) are computed per query from
//! the labels, with no lookup beyond the namespace set.
//!
//! Behaviour follows the Kubernetes DNS specification and CoreDNS's kubernetes
//! plugin where the specification is silent:
//!
//! - every Service name resolves to its cluster IPs, a headless one to its
//!   ready endpoints (all endpoints with `publishNotReadyAddresses`); a
//!   headless Service with none is NXDOMAIN;
//! - each endpoint is also `<hostname>.<service>.<ns>.svc.<domain>`, its
//!   hostname being the endpoint's `hostname` or its IP with dashes (as
//!   CoreDNS, for every Service, not only headless ones);
//! - SRV: `_<port>._<proto>.<service>…` for named ports (one per endpoint and
//!   port on a headless Service, targeting the endpoint's name), and the bare
//!   Service or endpoint name lists all its ports; the additional section
//!   carries the targets' addresses;
//! - PTR for cluster IPs (the Service name) and endpoint IPs (the endpoint
//!   name), in the reverse zones of the configured service and pod CIDRs;
//!   other reverse names are not ours and are forwarded;
//! - ExternalName is a CNAME; the server completes it with the target's
//!   records;
//! - a name that does not exist is NXDOMAIN, one that exists without the
//!   asked type NOERROR with no answer (NODATA); both carry the zone's SOA in
//!   the authority section so resolvers can cache the denial. Until the
//!   caches have synced, NXDOMAIN is SERVFAIL instead, as CoreDNS does, so a
//!   restart never caches denials of names that exist.

mod cluster;
mod service;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;

pub use cluster::{Cluster, ServiceKey};
pub use service::ServiceRecords;

/// The schema version `dns-version.<domain>` answers: the version of the
/// Kubernetes DNS specification these records implement.
pub const SCHEMA_VERSION: &str = "1.0.1";

/// The TTL of `dns-version.<domain>`, as in the specification's example.
const SCHEMA_VERSION_TTL: u32 = 28800;

/// The longest chain of in-zone CNAMEs followed for one answer (ExternalName
/// Services pointing at each other).
const MAX_CNAME_CHAIN: usize = 8;

/// SOA timers (refresh, retry, expire), CoreDNS's values. Nothing transfers
/// this zone; they only have to be plausible.
const SOA_TIMERS: (i32, i32, i32) = (7200, 1800, 86400);

/// The zone's fixed parameters.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
    ttl: u32,
    reverse_cidrs: Vec<IpNet>,
    dns_ip: Option<IpAddr>,
    soa_mname: Name,
    soa_rname: Name,
}

/// A zone parameter that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// The cluster domain is not a domain name.
    #[error("cluster domain {domain:?} is not a domain name: {source}")]
    Domain {
        /// The configured domain.
        domain: String,
        /// Why it does not parse.
        #[source]
        source: hickory_proto::ProtoError,
    },
}

impl Zone {
    /// The zone of `domain` (e.g. `cluster.local`), answering with `ttl` and
    /// authoritative for the reverse names of `reverse_cidrs` (the service
    /// and pod CIDRs). `dns_ip`, the cluster DNS Service's IP, is the address
    /// of the zone's name server `ns.dns.<domain>`.
    pub fn new(
        domain: &str,
        ttl: u32,
        reverse_cidrs: Vec<IpNet>,
        dns_ip: Option<IpAddr>,
    ) -> Result<Zone, ZoneError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let parse = |text: &str| {
            Name::from_ascii(text).map_err(|source| ZoneError::Domain {
                domain: domain.to_string(),
                source,
            })
        };
        let domain_name = parse(&fqdn)?;
        if domain_name.is_root() {
            return Err(ZoneError::Domain {
                domain: domain.to_string(),
                source: "the root is not a cluster domain".into(),
            });
        }
        Ok(Zone {
            soa_mname: parse(&format!("ns.dns.{fqdn}"))?,
            soa_rname: parse(&format!("hostmaster.{fqdn}"))?,
            domain: domain_name.to_lowercase(),
            ttl,
            reverse_cidrs: reverse_cidrs.into_iter().map(|c| c.trunc()).collect(),
            dns_ip,
        })
    }

    /// The cluster domain as an absolute name (`cluster.local.`).
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The TTL of every answer.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// `<labels>.<domain>`, e.g. `web.default.svc` → `web.default.svc.cluster.local.`.
    fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(format!("{relative}.{}", self.domain)).ok()
    }

    /// The configured CIDR (and its reverse zone's apex) a reverse `net`
    /// falls in, if any.
    fn reverse_zone(&self, net: &IpNet) -> Option<Name> {
        let cidr = self.reverse_cidrs.iter().find(|c| c.contains(net))?;
        // The apex is the longest reverse name that still covers the whole
        // CIDR: whole octets (in-addr.arpa) or nibbles (ip6.arpa).
        let (unit, base) = match cidr {
            IpNet::V4(_) => (8, 2),
            IpNet::V6(_) => (4, 2),
        };
        let keep = base + usize::from(cidr.prefix_len()) / unit;
        let apex = Name::from(cidr.network());
        Some(apex.trim_to(keep))
    }
}

/// Data at one owner name. Empty for empty non-terminals (`_tcp.web.…`),
/// which exist (NODATA) without records of their own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// A and AAAA data, sorted, without duplicates.
    addrs: Vec<IpAddr>,
    /// SRV data, sorted, without duplicates.
    srv: Vec<SrvData>,
    /// The target of an ExternalName Service.
    cname: Option<Name>,
}

/// One SRV record's data; priority and weight are given when answering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SrvData {
    target: Name,
    port: u16,
}

/// A name a PTR query for an IP answers with.
#[derive(Debug, Clone)]
struct PtrEntry {
    service: ServiceKey,
    target: Name,
    /// The IP is the Service's cluster IP (these win over endpoint names).
    cluster_ip: bool,
}

/// What one Service put into the index, to take out when it changes.
#[derive(Debug, Default)]
struct Contribution {
    names: Vec<Name>,
    ptrs: Vec<IpAddr>,
}

/// How a query is to be answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The name is in the cluster zone or one of its reverse zones: this is
    /// the answer.
    Answer(Response),
    /// Not ours: ask the upstream servers.
    Forward,
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// NOERROR (with or without answers), NXDOMAIN, SERVFAIL (not yet
    /// synced) or REFUSED (zone transfers).
    pub code: ResponseCode,
    /// The answer section, owner names spelled as asked.
    pub answers: Vec<Record>,
    /// The authority section: the zone's SOA on NXDOMAIN and NODATA.
    pub authorities: Vec<Record>,
    /// The additional section: addresses of SRV and NS targets.
    pub additionals: Vec<Record>,
    /// A CNAME target outside the cluster zone: the answer ends with a CNAME
    /// to it, and the server completes it with the target's records for the
    /// same type, from upstream.
    pub chase: Option<Name>,
}

impl Response {
    fn new(code: ResponseCode) -> Response {
        Response {
            code,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            chase: None,
        }
    }
}

/// What a name in the cluster zone is.
enum Owner<'a> {
    /// No such name.
    Missing,
    /// The name exists without records (empty non-terminals, namespaces).
    Empty,
    /// The zone apex: SOA and NS.
    Apex,
    /// An indexed name.
    Node(&'a Node),
    /// `dns-version.<domain>`.
    Version,
    /// A name whose address follows from the name (pod records, the name
    /// server).
    Address(IpAddr),
}

/// The index queries read. See the module docs.
#[derive(Debug)]
pub struct Records {
    zone: Arc<Zone>,
    synced: bool,
    serial: u32,
    names: HashMap<Name, Node>,
    ptrs: HashMap<IpAddr, Vec<PtrEntry>>,
    contributions: HashMap<ServiceKey, Contribution>,
    /// Namespaces that exist (lowercase, as API names always are).
    namespaces: HashSet<String>,
    /// Services per namespace: a namespace with Services exists even if its
    /// Namespace object has not been seen yet.
    service_namespaces: HashMap<String, usize>,
}

impl Records {
    /// An empty index, not yet synced, whose SOA serial starts at `serial`.
    pub fn new(zone: Arc<Zone>, serial: u32) -> Records {
        Records {
            zone,
            synced: false,
            serial,
            names: HashMap::new(),
            ptrs: HashMap::new(),
            contributions: HashMap::new(),
            namespaces: HashSet::new(),
            service_namespaces: HashMap::new(),
        }
    }

    /// The zone answered.
    pub fn zone(&self) -> &Arc<Zone> {
        &self.zone
    }

    /// The SOA serial; it grows with every change.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Mark the caches synced or not (before they are, NXDOMAIN is
    /// SERVFAIL).
    pub fn set_synced(&mut self, synced: bool) {
        self.synced = synced;
    }

    /// Replace the records of Service `key` with `records` (`None`: the
    /// Service is gone or has no records).
    pub fn set_service(&mut self, key: &ServiceKey, records: Option<ServiceRecords>) {
        if let Some(old) = self.contributions.remove(key) {
            for name in &old.names {
                self.names.remove(name);
            }
            for ip in &old.ptrs {
                if let Some(entries) = self.ptrs.get_mut(ip) {
                    entries.retain(|e| &e.service != key);
                    if entries.is_empty() {
                        self.ptrs.remove(ip);
                    }
                }
            }
            self.count_namespace(&key.namespace, false);
        }
        if let Some(records) = records {
            let mut contribution = Contribution::default();
            for (name, node) in records.nodes {
                contribution.names.push(name.clone());
                self.names.insert(name, node);
            }
            for (ip, target, cluster_ip) in records.ptrs {
                contribution.ptrs.push(ip);
                let entries = self.ptrs.entry(ip).or_default();
                entries.push(PtrEntry {
                    service: key.clone(),
                    target,
                    cluster_ip,
                });
                // Deterministic answers: cluster IPs first, then by name.
                entries.sort_by(|a, b| {
                    b.cluster_ip
                        .cmp(&a.cluster_ip)
                        .then_with(|| a.target.cmp(&b.target))
                });
            }
            contribution.ptrs.sort_unstable();
            contribution.ptrs.dedup();
            self.contributions.insert(key.clone(), contribution);
            self.count_namespace(&key.namespace, true);
        }
        self.serial = self.serial.wrapping_add(1);
    }

    /// Replace the set of existing namespaces.
    pub fn set_namespaces(&mut self, namespaces: HashSet<String>) {
        self.namespaces = namespaces;
        self.serial = self.serial.wrapping_add(1);
    }

    fn count_namespace(&mut self, namespace: &str, add: bool) {
        if add {
            *self
                .service_namespaces
                .entry(namespace.to_string())
                .or_default() += 1;
        } else if let Some(count) = self.service_namespaces.get_mut(namespace) {
            *count -= 1;
            if *count == 0 {
                self.service_namespaces.remove(namespace);
            }
        }
    }

    fn namespace_exists(&self, label: &[u8]) -> bool {
        let Ok(label) = std::str::from_utf8(label) else {
            return false;
        };
        let label = label.to_ascii_lowercase();
        self.namespaces.contains(&label) || self.service_namespaces.contains_key(&label)
    }

    /// How to answer `qname`/`qtype` (class IN).
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        if self.zone.domain.zone_of(qname) {
            return Resolution::Answer(self.answer_cluster(qname, qtype));
        }
        let Ok(net) = qname.parse_arpa_name() else {
            return Resolution::Forward;
        };
        match self.zone.reverse_zone(&net) {
            Some(apex) => Resolution::Answer(self.answer_reverse(qname, qtype, &net, apex)),
            None => Resolution::Forward,
        }
    }

    fn answer_cluster(&self, qname: &Name, qtype: RecordType) -> Response {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Response::new(ResponseCode::Refused);
        }
        let mut response = Response::new(ResponseCode::NoError);
        let mut name = qname.clone();
        let mut seen = 0;
        loop {
            let owner = self.owner(&name);
            let next = self.add_answers(&mut response, &name, &owner, qtype);
            match next {
                Some(target) if self.zone.domain.zone_of(&target) => {
                    seen += 1;
                    if seen > MAX_CNAME_CHAIN {
                        break;
                    }
                    name = target;
                }
                Some(target) => {
                    response.chase = Some(target);
                    break;
                }
                None => {
                    if matches!(owner, Owner::Missing) {
                        response.code = if self.synced {
                            ResponseCode::NXDomain
                        } else {
                            ResponseCode::ServFail
                        };
                    }
                    break;
                }
            }
        }
        if response.answers.is_empty() && response.code != ResponseCode::ServFail {
            response
                .authorities
                .push(self.soa(self.zone.domain.clone()));
        }
        response
    }

    fn answer_reverse(&self, qname: &Name, qtype: RecordType, net: &IpNet, apex: Name) -> Response {
        let mut response = Response::new(ResponseCode::NoError);
        let host = net.prefix_len() == net.max_prefix_len();
        match self.ptrs.get(&net.addr()).filter(|_| host) {
            Some(entries) => {
                if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    // A cluster IP names its Service alone; an endpoint IP
                    // names every Service endpoint it is.
                    let targets: Vec<&Name> = match entries.first() {
                        Some(first) if first.cluster_ip => vec![&first.target],
                        _ => entries.iter().map(|e| &e.target).collect(),
                    };
                    let mut last: Option<&Name> = None;
                    for target in targets {
                        if last == Some(target) {
                            continue;
                        }
                        last = Some(target);
                        response.answers.push(self.record(
                            qname,
                            RData::PTR(PTR(target.clone())),
                            self.zone.ttl,
                        ));
                    }
                }
            }
            // Addresses without a Service are names that do not exist; the
            // network names above them are empty non-terminals.
            None if host => {
                response.code = if self.synced {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::ServFail
                };
            }
            None => {}
        }
        if response.answers.is_empty() && response.code != ResponseCode::ServFail {
            response.authorities.push(self.soa(apex));
        }
        response
    }

    /// Classify `name`, which is in the cluster zone.
    fn owner(&self, name: &Name) -> Owner<'_> {
        let relative = usize::from(name.num_labels() - self.zone.domain.num_labels());
        let labels: Vec<&[u8]> = name.iter().take(relative).collect();
        let Some(top) = labels.last() else {
            return Owner::Apex;
        };
        let top = top.to_ascii_lowercase();
        match (top.as_slice(), relative) {
            (b"svc", 1) | (b"pod", 1) | (b"dns", 1) => Owner::Empty,
            (b"svc" | b"pod", 2) => {
                if self.namespace_exists(labels[0]) {
                    Owner::Empty
                } else {
                    Owner::Missing
                }
            }
            (b"svc", _) => match self.names.get(name) {
                Some(node) => Owner::Node(node),
                None => Owner::Missing,
            },
            (b"pod", 3) => match pod_ip(labels[0]).filter(|_| self.namespace_exists(labels[1])) {
                Some(ip) => Owner::Address(ip),
                None => Owner::Missing,
            },
            (b"dns", 2) if labels[0].eq_ignore_ascii_case(b"ns") => match self.zone.dns_ip {
                Some(ip) => Owner::Address(ip),
                None => Owner::Empty,
            },
            (b"dns-version", 1) => Owner::Version,
            _ => Owner::Missing,
        }
    }

    /// Add the records of `owner` (at `name`) for `qtype`; returns the CNAME
    /// target to continue with, if the owner is an alias.
    fn add_answers(
        &self,
        response: &mut Response,
        name: &Name,
        owner: &Owner<'_>,
        qtype: RecordType,
    ) -> Option<Name> {
        let ttl = self.zone.ttl;
        let any = qtype == RecordType::ANY;
        match owner {
            Owner::Missing | Owner::Empty => {}
            Owner::Apex => {
                if qtype == RecordType::SOA || any {
                    response.answers.push(self.soa(name.clone()));
                }
                if qtype == RecordType::NS || any {
                    response.answers.push(self.record(
                        name,
                        RData::NS(NS(self.zone.soa_mname.clone())),
                        ttl,
                    ));
                    if let Some(ip) = self.zone.dns_ip {
                        response.additionals.push(self.record(
                            &self.zone.soa_mname,
                            address(ip),
                            ttl,
                        ));
                    }
                }
            }
            Owner::Version => {
                if qtype == RecordType::TXT || any {
                    response.answers.push(self.record(
                        name,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                        SCHEMA_VERSION_TTL,
                    ));
                }
            }
            Owner::Address(ip) => {
                if wants_address(qtype, ip) {
                    response.answers.push(self.record(name, address(*ip), ttl));
                }
            }
            Owner::Node(node) => {
                if let Some(target) = &node.cname {
                    response.answers.push(self.record(
                        name,
                        RData::CNAME(CNAME(target.clone())),
                        ttl,
                    ));
                    let chase = !matches!(qtype, RecordType::CNAME | RecordType::ANY);
                    return chase.then(|| target.clone());
                }
                for ip in node.addrs.iter().filter(|ip| wants_address(qtype, ip)) {
                    response.answers.push(self.record(name, address(*ip), ttl));
                }
                if qtype == RecordType::SRV || any {
                    self.add_srv(response, name, node);
                }
            }
        }
        None
    }

    fn add_srv(&self, response: &mut Response, name: &Name, node: &Node) {
        let ttl = self.zone.ttl;
        let count = u16::try_from(node.srv.len()).unwrap_or(u16::MAX).max(1);
        let weight = (100 / count).max(1);
        let mut targets: Vec<&Name> = Vec::new();
        for srv in &node.srv {
            response.answers.push(self.record(
                name,
                RData::SRV(SRV::new(0, weight, srv.port, srv.target.clone())),
                ttl,
            ));
            if !targets.contains(&&srv.target) {
                targets.push(&srv.target);
            }
        }
        for target in targets {
            if let Some(node) = self.names.get(target) {
                for ip in &node.addrs {
                    response
                        .additionals
                        .push(self.record(target, address(*ip), ttl));
                }
            }
        }
    }

    fn record(&self, name: &Name, data: RData, ttl: u32) -> Record {
        Record::from_rdata(name.clone(), ttl, data)
    }

    /// The SOA of the zone whose apex is `apex`, with the negative-caching
    /// TTL of CoreDNS (the record TTL, at most 300 s).
    fn soa(&self, apex: Name) -> Record {
        let (refresh, retry, expire) = SOA_TIMERS;
        let ttl = self.zone.ttl;
        Record::from_rdata(
            apex,
            ttl.min(300),
            RData::SOA(SOA::new(
                self.zone.soa_mname.clone(),
                self.zone.soa_rname.clone(),
                self.serial,
                refresh,
                retry,
                expire,
                ttl,
            )),
        )
    }
}

/// A or AAAA data for `ip`.
fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// Whether a query of `qtype` wants the address `ip`.
fn wants_address(qtype: RecordType, ip: &IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// The IP a pod-record label spells: `10-42-0-5` or, for IPv6, the address
/// with `-` for `:` (`fd00--5`), as CoreDNS reads them.
fn pod_ip(label: &[u8]) -> Option<IpAddr> {
    let label = std::str::from_utf8(label).ok()?;
    let dashes = label.bytes().filter(|&b| b == b'-').count();
    if dashes == 3 && !label.contains("--") {
        label.replace('-', ".").parse().ok().filter(IpAddr::is_ipv4)
    } else {
        label.replace('-', ":").parse().ok().filter(IpAddr::is_ipv6)
    }
}
