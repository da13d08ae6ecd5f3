//! Services and EndpointSlices → the proxy's nftables table.
//!
//! The layout follows kube-proxy's nftables mode:
//!
//! - **Dispatch.** `nat-prerouting` (traffic from pods and other hosts) and
//!   `nat-output` (host processes) jump to `services`, which looks the
//!   destination up in two verdict maps: `service-ips`, keyed by
//!   `ip daddr . meta l4proto . th dport`, for ClusterIPs, externalIPs and
//!   LoadBalancer ingress IPs; and `service-nodeports`, keyed by protocol and
//!   port, for any local address (`fib daddr type local`, loopback excepted).
//! - **Per Service port.** `svc-<ns>/<name>/<proto>/<port>` picks one of
//!   the cluster-wide endpoints at random, `local-…` one of this node's
//!   endpoints (the `Local` traffic policies), and `ext-…` handles NodePort,
//!   externalIP and LoadBalancer traffic before handing it to one of the two.
//!   Each endpoint has a chain `ep-…__<ip>/<port>` that DNATs.
//! - **Random choice.** A cascade `numgen random mod N == 0 goto ep-1`,
//!   `numgen random mod N-1 == 0 goto ep-2`, …, `goto ep-N`, which is uniform.
//!   kube-proxy uses one anonymous `numgen … vmap { … }` per Service instead,
//!   but the kernel names each anonymous set by scanning every set of the
//!   table, which makes loading 10k Services quadratic (measured with 3
//!   endpoints each: 12 s to load the rules with per-Service maps, under 1 s
//!   without; named maps took 6.7 s for the whole table).
//! - **Session affinity** (`ClientIP`): a timed set per endpoint
//!   (`aff-…`) that the endpoint chain refreshes with the client address,
//!   checked before the random choice.
//! - **Masquerade.** Rules jump to `mark-for-masquerade` (sets the mark bit)
//!   and `nat-postrouting` masquerades marked packets, for: a pod reaching
//!   itself through its Service (hairpin: source == endpoint), ClusterIP
//!   traffic from outside the pod network (host processes included), and
//!   external traffic under `externalTrafficPolicy: Cluster`.
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
/// The verdict for destinations without any endpoint.
pub const REJECT: &str = "goto reject-chain";

const SERVICES_CHAIN: &str = "services";
const ENDPOINTS_CHECK_CHAIN: &str = "endpoints-check";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_CHAIN: &str = "mark-for-masquerade";
const MASQUERADE_CHAIN: &str = "masquerading";
const IP_KEY: &str = "ipv4_addr . inet_proto . inet_service";
const PORT_KEY: &str = "inet_proto . inet_service";
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

/// The `ep-` chain that DNATs to one endpoint of a Service port.
pub fn endpoint_chain(port: &ServicePort, endpoint: &Endpoint) -> String {
    format!("ep-{}__{}/{}", port.key(), endpoint.ip, endpoint.port)
}

/// The session affinity set of one endpoint of a Service port.
pub fn affinity_set(port: &ServicePort, endpoint: &Endpoint) -> String {
    format!("aff-{}__{}/{}", port.key(), endpoint.ip, endpoint.port)
}

/// Renders the whole table for a snapshot of Services and EndpointSlices.
pub fn render(
    config: &ProxyConfig,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Ruleset {
    let mut rules = skeleton(config);
    for port in service_ports(config, services, slices) {
        add_service_port(&mut rules, config, &port);
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

    let internal_chain = if port.internal_local {
        &local
    } else {
        &cluster
    };
    let has_internal = eps.any && (!port.internal_local || !eps.local.is_empty());
    let external_policy_chain = if port.external_local {
        &local
    } else {
        &cluster
    };
    let has_external = eps.any && (!port.external_local || !eps.local.is_empty());
    let (internal_verdict, external_verdict) = if eps.any {
        ("drop", "drop")
    } else {
        (REJECT, REJECT)
    };
    let key = |ip: std::net::Ipv4Addr, number: u16| format!("{ip} . {proto} . {number}");

    // The ClusterIP.
    if has_internal {
        r.add_element(
            SERVICE_IPS,
            key(port.cluster_ip, port.port),
            format!("goto {internal_chain}"),
        );
        // Off-cluster clients (host processes included) are masqueraded so
        // that replies come back through this node.
        r.add_rule(
            internal_chain,
            format!(
                "ip daddr {} {proto} dport {} ip saddr != {} jump {MARK_CHAIN}",
                port.cluster_ip, port.port, config.cluster_cidr
            ),
        );
    } else {
        r.add_element(
            NO_ENDPOINT_SERVICES,
            key(port.cluster_ip, port.port),
            internal_verdict.to_owned(),
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
                external_verdict.to_owned(),
            );
        }
    }
    if let Some(node_port) = port.node_port {
        let key = format!("{proto} . {node_port}");
        if eps.any {
            r.add_element(SERVICE_NODEPORTS, key.clone(), format!("goto {external}"));
        }
        if !has_external {
            r.add_element(NO_ENDPOINT_NODEPORTS, key, external_verdict.to_owned());
        }
    }
    if eps.any && port.externally_accessible() {
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

    // Endpoint choice and the endpoint chains.
    if !eps.cluster.is_empty() {
        pick_endpoint(r, port, &cluster, &eps.cluster);
    }
    if !eps.local.is_empty() {
        pick_endpoint(r, port, &local, &eps.local);
    }
    let mut reachable: Vec<&Endpoint> = eps.cluster.iter().chain(&eps.local).collect();
    reachable.sort_by_key(|e| (e.ip, e.port));
    reachable.dedup_by_key(|e| (e.ip, e.port));
    for endpoint in reachable {
        let chain = endpoint_chain(port, endpoint);
        // Hairpin: a pod reaching itself must see the reply come from the
        // node, not from itself.
        r.add_rule(
            &chain,
            format!("ip saddr {} jump {MARK_CHAIN}", endpoint.ip),
        );
        if let Some(timeout) = port.affinity_secs {
            let set = affinity_set(port, endpoint);
            r.add_rule(&chain, format!("update @{set} {{ ip saddr }}"));
            r.add_affinity_set(set, timeout);
        }
        r.add_rule(
            &chain,
            format!(
                "meta l4proto {proto} dnat to {}:{}",
                endpoint.ip, endpoint.port
            ),
        );
    }
}

/// Appends to `chain` the rules that send a connection to one of `endpoints`:
/// the client's affinity endpoint if it has one, else one at random.
fn pick_endpoint(r: &mut Ruleset, port: &ServicePort, chain: &str, endpoints: &[Endpoint]) {
    if port.affinity_secs.is_some() {
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
                "numgen random mod {} == 0 goto {}",
                endpoints.len() - i,
                endpoint_chain(port, endpoint)
            ),
        );
    }
    r.add_rule(chain, format!("goto {}", endpoint_chain(port, last)));
}

#[cfg(test)]
mod tests;
