//! Services and EndpointSlices → the proxy's nftables table.
//!
//! The layout follows kube-proxy's nftables mode, with fewer kernel objects
//! per Service so that 10k Services load well within a second:
//!
//! - **Dispatch.** `nat-prerouting` (traffic from pods and other hosts) and
//!   `nat-output` (host processes) jump to `services`, which looks the
//!   destination up in two verdict maps: `service-ips`, keyed by
//!   `ip daddr . meta l4proto . th dport`, for ClusterIPs, externalIPs and
//!   LoadBalancer ingress IPs; and `service-nodeports`, keyed by protocol and
//!   port, for any local address (`fib daddr type local`, loopback excepted).
//! - **ClusterIPs: no chain per Service.** A ClusterIP whose Service port has
//!   N usable endpoints goes to the shared chain `pick-N`, which DNATs through
//!   the map `endpoints-N`, keyed by the destination and a slot
//!   (`ip daddr . meta l4proto . th dport . numgen random mod N`), whose
//!   values are the N endpoints (`ip . port`): one uniform random choice,
//!   one map element per endpoint. Each map is looked up from one chain only:
//!   the kernel checks a map's elements every time a rule in another chain
//!   starts using it, so a map per Service, or one shared map used from a
//!   chain per Service, makes loading quadratic (measured at 10k Services × 3
//!   endpoints: 5 s with a named map per Service, 13 s with an anonymous
//!   `numgen … map` per Service, whose names the kernel allocates by scanning
//!   every set of the table).
//! - **Other traffic, per Service port.** `ext-<ns>/<name>/<proto>/<port>`
//!   handles NodePort, externalIP and LoadBalancer traffic and hands it to
//!   `svc-…` (the cluster-wide endpoints) or `local-…` (this node's, for the
//!   `Local` traffic policies). Those pick an endpoint with a cascade,
//!   `numgen random mod N == 0 … dnat`, `numgen random mod N-1 == 0 … dnat`,
//!   …, `dnat`, which is uniform and needs no set.
//! - **Session affinity** (`ClientIP`) keeps upstream's shape: ClusterIP
//!   traffic goes to the `svc-…`/`local-…` chain too, which first sends a
//!   client with an entry in an endpoint's timed set (`aff-…`) to that
//!   endpoint's chain `ep-…__<ip>/<port>`, else picks one by the cascade;
//!   the endpoint chain refreshes the client's entry and DNATs.
//! - **Masquerade.** Rules jump to `mark-for-masquerade` (sets the mark bit)
//!   and `nat-postrouting` masquerades marked packets, for: ClusterIP traffic
//!   from outside the pod network (host processes included), and external
//!   traffic under `externalTrafficPolicy: Cluster`. A pod reaching itself
//!   through its Service (hairpin) must see the reply come from the node: as
//!   the endpoint is chosen by a map, this is checked after DNAT, in
//!   postrouting, where a DNATed connection whose source equals its new
//!   destination is an element `ip . ip` of the set `hairpin` (every
//!   endpoint address).
//! - **No endpoints.** `filter-input`, `filter-forward` and `filter-output`
//!   look new connections up in `no-endpoint-services` and
//!   `no-endpoint-nodeports`: a Service with no usable endpoint anywhere is
//!   rejected (TCP reset, ICMP port unreachable) so clients fail at once, and
//!   traffic a `Local` policy has no local endpoint for is dropped.
//!
//! Endpoints on the host (the DNS server's, the API server's) need nothing
//! special: after DNAT in `prerouting` or `output` the kernel routes the
//! packet to the local address and delivers it. A UDP server there must bind
//! the endpoint address, though: bound to 0.0.0.0 it answers a pod from the
//! pod-facing address, which conntrack cannot match to the DNATed request,
//! and the pod drops the reply.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::ProxyConfig;
use crate::ruleset::{Hook, Ruleset};
use crate::service::{Endpoint, ServicePort, service_ports};

/// ClusterIP, externalIP and LoadBalancer IP dispatch.
pub const SERVICE_IPS: &str = "service-ips";
/// NodePort dispatch.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Drop or reject for service IPs without usable endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Drop or reject for NodePorts without usable endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Every endpoint address as `ip . ip`: DNATed connections from an endpoint
/// to itself, masqueraded.
pub const HAIRPIN: &str = "hairpin";
/// The verdict for destinations without any endpoint.
pub const REJECT: &str = "goto reject-chain";

const SERVICES_CHAIN: &str = "services";
const ENDPOINTS_CHECK_CHAIN: &str = "endpoints-check";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_CHAIN: &str = "mark-for-masquerade";
const MASQUERADE_CHAIN: &str = "masquerading";
const IP_KEY: &str = "type ipv4_addr . inet_proto . inet_service : verdict";
const PORT_KEY: &str = "type inet_proto . inet_service : verdict";
const HAIRPIN_KEY: &str = "type ipv4_addr . ipv4_addr";
/// `endpoints-N`: ClusterIP destination and slot → endpoint.
const ENDPOINTS_KEY: &str =
    "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport";
/// The protocols a `pick-N` chain DNATs (nft needs the protocol to rewrite
/// a port).
const PROTOCOLS: [&str; 3] = ["tcp", "udp", "sctp"];
/// Local destinations, loopback excepted (upstream does not serve NodePorts on
/// 127.0.0.1: it would need `route_localnet`).
const LOCAL_DESTINATION: &str = "fib daddr type local ip daddr != 127.0.0.0/8";

/// The `svc-` chain of a Service port (its cluster-wide endpoints).
pub fn cluster_chain(port: &ServicePort) -> String {
    format!("svc-{}", port.key())
}

/// The `local-` chain of a Service port (its endpoints on this node).
pub fn local_chain(port: &ServicePort) -> String {
    format!("local-{}", port.key())
}

/// The `ext-` chain of a Service port (NodePort, externalIP, LoadBalancer).
pub fn external_chain(port: &ServicePort) -> String {
    format!("ext-{}", port.key())
}

/// The `ep-` chain that DNATs to one endpoint of a session-affinity Service
/// port.
pub fn endpoint_chain(port: &ServicePort, endpoint: &Endpoint) -> String {
    format!("ep-{}__{}/{}", port.key(), endpoint.ip, endpoint.port)
}

/// The session affinity set of one endpoint of a Service port.
pub fn affinity_set(port: &ServicePort, endpoint: &Endpoint) -> String {
    format!("aff-{}__{}/{}", port.key(), endpoint.ip, endpoint.port)
}

/// The chain that DNATs ClusterIP traffic of Service ports with `n`
/// endpoints.
pub fn pick_chain(n: usize) -> String {
    format!("pick-{n}")
}

/// The map of the endpoints of ClusterIPs with `n` endpoints.
pub fn endpoints_map(n: usize) -> String {
    format!("endpoints-{n}")
}

/// Renders the whole table for a snapshot of Services and EndpointSlices.
pub fn render(
    config: &ProxyConfig,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Ruleset {
    render_ports(config, &service_ports(config, services, slices))
}

/// Renders the whole table for Service ports already read from a snapshot
/// (by [`service_ports`]).
pub fn render_ports(config: &ProxyConfig, ports: &[ServicePort]) -> Ruleset {
    let mut rules = skeleton(config);
    for port in ports {
        add_service_port(&mut rules, config, port);
    }
    rules
}

/// The hooks, dispatch, reject and masquerade plumbing every table has.
fn skeleton(config: &ProxyConfig) -> Ruleset {
    let mut r = Ruleset::new(&config.table);
    let mark = format!("{:#x}", config.masquerade_mark);
    for (name, kind, hook, priority, target) in [
        (
            "nat-prerouting",
            "nat",
            "prerouting",
            -100,
            format!("jump {SERVICES_CHAIN}"),
        ),
        (
            "nat-output",
            "nat",
            "output",
            -100,
            format!("jump {SERVICES_CHAIN}"),
        ),
        (
            "nat-postrouting",
            "nat",
            "postrouting",
            100,
            format!("jump {MASQUERADE_CHAIN}"),
        ),
        // Before DNAT in `output`, after it in `input`/`forward`: only
        // destinations nothing DNATs are in the no-endpoint maps.
        (
            "filter-input",
            "filter",
            "input",
            -110,
            format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}"),
        ),
        (
            "filter-forward",
            "filter",
            "forward",
            -110,
            format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}"),
        ),
        (
            "filter-output",
            "filter",
            "output",
            -110,
            format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}"),
        ),
    ] {
        r.add_base_chain(
            name,
            Hook {
                kind,
                hook,
                priority,
            },
        );
        r.add_rule(name, target);
    }
    for (map, key) in [
        (SERVICE_IPS, IP_KEY),
        (SERVICE_NODEPORTS, PORT_KEY),
        (NO_ENDPOINT_SERVICES, IP_KEY),
        (NO_ENDPOINT_NODEPORTS, PORT_KEY),
    ] {
        r.add_map(map, key);
    }
    r.add_set(HAIRPIN, HAIRPIN_KEY);
    for (chain, ips, nodeports) in [
        (SERVICES_CHAIN, SERVICE_IPS, SERVICE_NODEPORTS),
        (
            ENDPOINTS_CHECK_CHAIN,
            NO_ENDPOINT_SERVICES,
            NO_ENDPOINT_NODEPORTS,
        ),
    ] {
        r.add_rule(
            chain,
            format!("ip daddr . meta l4proto . th dport vmap @{ips}"),
        );
        r.add_rule(
            chain,
            format!("{LOCAL_DESTINATION} meta l4proto . th dport vmap @{nodeports}"),
        );
    }
    r.add_rule(
        REJECT_CHAIN,
        "meta l4proto tcp reject with tcp reset".into(),
    );
    r.add_rule(
        REJECT_CHAIN,
        "reject with icmp type port-unreachable".into(),
    );
    r.add_rule(MARK_CHAIN, format!("meta mark set meta mark or {mark}"));
    // Hairpin: the connection was DNATed to the address it comes from.
    r.add_rule(
        MASQUERADE_CHAIN,
        format!("ct status dnat ip saddr . ip daddr @{HAIRPIN} jump {MARK_CHAIN}"),
    );
    r.add_rule(
        MASQUERADE_CHAIN,
        format!("meta mark and {mark} == 0 return"),
    );
    // Clear the bit so that it does not leak into later decisions.
    r.add_rule(
        MASQUERADE_CHAIN,
        format!("meta mark set meta mark xor {mark}"),
    );
    r.add_rule(MASQUERADE_CHAIN, "masquerade fully-random".into());
    r
}

fn add_service_port(r: &mut Ruleset, config: &ProxyConfig, port: &ServicePort) {
    let eps = port.categorize();
    let proto = port.protocol.nft();
    let cluster = cluster_chain(port);
    let local = local_chain(port);
    let external = external_chain(port);
    let affinity = port.affinity_secs.is_some();

    let (internal_chain, internal_eps) = if port.internal_local {
        (&local, &eps.local)
    } else {
        (&cluster, &eps.cluster)
    };
    let external_policy_chain = if port.external_local {
        &local
    } else {
        &cluster
    };
    let has_external = eps.any && (!port.external_local || !eps.local.is_empty());
    // A `Local` policy without local endpoints drops; no endpoint anywhere
    // rejects.
    let no_endpoint = if eps.any { "drop" } else { REJECT };
    let key = |ip: std::net::Ipv4Addr, number: u16| format!("{ip} . {proto} . {number}");

    // The ClusterIP.
    if internal_eps.is_empty() {
        r.add_element(
            NO_ENDPOINT_SERVICES,
            key(port.cluster_ip, port.port),
            no_endpoint.to_owned(),
        );
    } else if affinity {
        r.add_element(
            SERVICE_IPS,
            key(port.cluster_ip, port.port),
            format!("goto {internal_chain}"),
        );
        // Off-cluster clients (host processes included) are masqueraded so
        // that replies come back through this node. The chain may serve
        // external traffic too, hence the destination match.
        r.add_rule(
            internal_chain,
            format!(
                "ip daddr {} {proto} dport {} ip saddr != {} jump {MARK_CHAIN}",
                port.cluster_ip, port.port, config.cluster_cidr
            ),
        );
    } else {
        let n = internal_eps.len();
        add_pick(r, config, n);
        let map = endpoints_map(n);
        for (slot, endpoint) in internal_eps.iter().enumerate() {
            r.add_element(
                &map,
                format!("{} . {slot}", key(port.cluster_ip, port.port)),
                format!("{} . {}", endpoint.ip, endpoint.port),
            );
        }
        r.add_element(
            SERVICE_IPS,
            key(port.cluster_ip, port.port),
            format!("goto {}", pick_chain(n)),
        );
    }

    // externalIPs, LoadBalancer IPs and the NodePort.
    for ip in port.external_ips.iter().chain(&port.load_balancer_ips) {
        if eps.any {
            r.add_element(SERVICE_IPS, key(*ip, port.port), format!("goto {external}"));
        }
        if !has_external {
            r.add_element(
                NO_ENDPOINT_SERVICES,
                key(*ip, port.port),
                no_endpoint.to_owned(),
            );
        }
    }
    if let Some(node_port) = port.node_port {
        let key = format!("{proto} . {node_port}");
        if eps.any {
            r.add_element(SERVICE_NODEPORTS, key.clone(), format!("goto {external}"));
        }
        if !has_external {
            r.add_element(NO_ENDPOINT_NODEPORTS, key, no_endpoint.to_owned());
        }
    }
    let external_access = eps.any && port.externally_accessible();
    if external_access {
        if port.external_local {
            // Pods and the node itself are not subject to the external policy
            // (as if they went out to a load balancer and came back); the
            // node's own traffic has a local source address and needs
            // masquerading to get replies.
            r.add_rule(
                &external,
                format!("ip saddr {} goto {cluster}", config.cluster_cidr),
            );
            r.add_rule(&external, format!("fib saddr type local jump {MARK_CHAIN}"));
            r.add_rule(&external, format!("fib saddr type local goto {cluster}"));
        } else {
            // Endpoints may be on other nodes: masquerade so replies return.
            r.add_rule(&external, format!("jump {MARK_CHAIN}"));
        }
        if has_external {
            r.add_rule(&external, format!("goto {external_policy_chain}"));
        }
    }

    // The endpoint choice chains the dispatch above refers to: the external
    // chain's, and the ClusterIP's under session affinity.
    let cluster_used = external_access || (affinity && !port.internal_local);
    let local_used = (external_access && port.external_local) || (affinity && port.internal_local);
    if cluster_used && !eps.cluster.is_empty() {
        pick_endpoint(r, port, &cluster, &eps.cluster);
    }
    if local_used && !eps.local.is_empty() {
        pick_endpoint(r, port, &local, &eps.local);
    }
    let mut reachable: Vec<&Endpoint> = eps.cluster.iter().chain(&eps.local).collect();
    reachable.sort_by_key(|e| (e.ip, e.port));
    reachable.dedup_by_key(|e| (e.ip, e.port));
    for endpoint in reachable {
        r.add_set_element(HAIRPIN, format!("{0} . {0}", endpoint.ip));
        if let Some(timeout) = port.affinity_secs {
            let chain = endpoint_chain(port, endpoint);
            let set = affinity_set(port, endpoint);
            r.add_rule(&chain, format!("update @{set} {{ ip saddr }}"));
            r.add_rule(&chain, dnat(proto, endpoint));
            r.add_affinity_set(set, timeout);
        }
    }
}

/// Declares `pick-N` and `endpoints-N` once.
fn add_pick(r: &mut Ruleset, config: &ProxyConfig, n: usize) {
    let chain = pick_chain(n);
    if r.chain(&chain).is_some() {
        return;
    }
    let map = endpoints_map(n);
    r.add_map(&map, ENDPOINTS_KEY);
    // Only ClusterIP traffic comes here: off-cluster clients (host processes
    // included) are masqueraded so that replies come back through this node.
    r.add_rule(
        &chain,
        format!("ip saddr != {} jump {MARK_CHAIN}", config.cluster_cidr),
    );
    for proto in PROTOCOLS {
        r.add_rule(
            &chain,
            format!(
                "meta l4proto {proto} dnat to ip daddr . meta l4proto . th dport . numgen random mod {n} map @{map}"
            ),
        );
    }
}

fn dnat(proto: &str, endpoint: &Endpoint) -> String {
    format!(
        "meta l4proto {proto} dnat to {}:{}",
        endpoint.ip, endpoint.port
    )
}

/// Appends to `chain` the rules that send a connection to one of `endpoints`:
/// the client's affinity endpoint if it has one, else one at random.
fn pick_endpoint(r: &mut Ruleset, port: &ServicePort, chain: &str, endpoints: &[Endpoint]) {
    let proto = port.protocol.nft();
    let affinity = port.affinity_secs.is_some();
    // Without affinity each choice DNATs at once; with it, the endpoint
    // chain records the client first.
    let target = |endpoint: &Endpoint| {
        if affinity {
            format!("goto {}", endpoint_chain(port, endpoint))
        } else {
            dnat(proto, endpoint)
        }
    };
    if affinity {
        for endpoint in endpoints {
            r.add_rule(
                chain,
                format!(
                    "ip saddr @{} goto {}",
                    affinity_set(port, endpoint),
                    endpoint_chain(port, endpoint)
                ),
            );
        }
    }
    let Some((last, rest)) = endpoints.split_last() else {
        return;
    };
    for (i, endpoint) in rest.iter().enumerate() {
        r.add_rule(
            chain,
            format!(
                "numgen random mod {} == 0 {}",
                endpoints.len() - i,
                target(endpoint)
            ),
        );
    }
    r.add_rule(chain, target(last));
}

#[cfg(test)]
mod tests;
