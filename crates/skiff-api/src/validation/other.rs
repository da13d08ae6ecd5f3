//! Kinds of the smaller groups: networking, storage, policy, scheduling,
//! coordination, discovery and events.k8s.io.

use std::collections::HashSet;

use serde_json::Value;

use super::field::{
    Path, arr_of, duplicate, forbidden, get, has, immutable, int_of, invalid, invalid_each,
    non_negative, not_supported, one_of, required, same, str_of, too_long, too_many,
};
use super::meta::{validate_int_or_percent, validate_label_selector};
use super::names::{
    cidr_errors, dns1035_label_errors, dns1123_label_errors, dns1123_subdomain_errors,
    port_name_errors, port_num_errors, qualified_name_errors, wildcard_dns1123_subdomain_errors,
};
use super::pod::validate_port_num_or_name;
use crate::registry::FieldError;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
/// Highest priority a user-defined PriorityClass may have.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_SLICE_PORTS: usize = 20000;

/// A host as Ingress rules allow it: a (possibly wildcard) DNS name, never an IP.
fn validate_ingress_host(errs: &mut Vec<FieldError>, host: &str, path: &Path) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        errs.push(invalid(path, host, "must be a DNS name, not an IP address"));
    } else if host.starts_with('*') {
        invalid_each(errs, path, host, wildcard_dns1123_subdomain_errors(host));
    } else {
        invalid_each(errs, path, host, dns1123_subdomain_errors(host));
    }
}

fn validate_ingress_backend(errs: &mut Vec<FieldError>, backend: &Value, path: &Path) {
    let service = get(backend, "service");
    let resource = get(backend, "resource");
    match (service.is_null(), resource.is_null()) {
        (false, false) => errs.push(invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (true, true) => errs.push(invalid(path, "", "resource or service backend is required")),
        (false, true) => {
            let sp = path.child("service");
            let name = str_of(service, "name");
            if name.is_empty() {
                errs.push(required(&sp.child("name"), ""));
            } else {
                invalid_each(errs, &sp.child("name"), name, dns1035_label_errors(name));
            }
            let port = get(service, "port");
            let pp = sp.child("port");
            let port_name = str_of(port, "name");
            match (port_name.is_empty(), int_of(port, "number")) {
                (false, Some(_)) => errs.push(invalid(
                    &pp,
                    port,
                    "cannot set both port name & port number",
                )),
                (true, None) => errs.push(invalid(&pp, port, "port name or number is required")),
                (false, None) => invalid_each(
                    errs,
                    &pp.child("name"),
                    port_name,
                    port_name_errors(port_name),
                ),
                (true, Some(n)) => {
                    for m in port_num_errors(n) {
                        errs.push(invalid(&pp.child("number"), n, &m));
                    }
                }
            }
        }
        (true, false) => {
            let rp = path.child("resource");
            for key in ["kind", "name"] {
                if str_of(resource, key).is_empty() {
                    errs.push(required(&rp.child(key), ""));
                }
            }
        }
    }
}

fn validate_ingress_path(errs: &mut Vec<FieldError>, p: &Value, path: &Path) {
    let value = str_of(p, "path");
    let pp = path.child("path");
    match str_of(p, "pathType") {
        "" => errs.push(required(
            &path.child("pathType"),
            "pathType must be specified",
        )),
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(invalid(&pp, value, "must be an absolute path"));
            }
            if value.contains("//") {
                errs.push(invalid(&pp, value, "must not contain '//'"));
            }
            for seq in ["/./", "/../", "%2f", "%2F"] {
                if value.contains(seq) {
                    errs.push(invalid(&pp, value, &format!("must not contain '{seq}'")));
                }
            }
            for suffix in ["/..", "/."] {
                if value.ends_with(suffix) {
                    errs.push(invalid(&pp, value, &format!("cannot end with '{suffix}'")));
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(invalid(&pp, value, "must be an absolute path"));
            }
        }
        other => errs.push(not_supported(&path.child("pathType"), other, PATH_TYPES)),
    }
    validate_ingress_backend(errs, get(p, "backend"), &path.child("backend"));
}

/// `Ingress`
pub(crate) fn validate_ingress(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    let rules = arr_of(spec, "rules");
    let default = get(spec, "defaultBackend");
    if rules.is_empty() && default.is_null() {
        errs.push(invalid(
            &sp,
            spec,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if !default.is_null() {
        validate_ingress_backend(errs, default, &sp.child("defaultBackend"));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = sp.child("rules").index(i);
        let host = str_of(rule, "host");
        if !host.is_empty() {
            validate_ingress_host(errs, host, &rp.child("host"));
        }
        let http = get(rule, "http");
        if http.is_null() {
            continue;
        }
        let paths = arr_of(http, "paths");
        let hp = rp.child("http").child("paths");
        if paths.is_empty() {
            errs.push(required(&hp, ""));
        }
        for (j, p) in paths.iter().enumerate() {
            validate_ingress_path(errs, p, &hp.index(j));
        }
    }
    for (i, tls) in arr_of(spec, "tls").iter().enumerate() {
        let tp = sp.child("tls").index(i);
        for (j, host) in arr_of(tls, "hosts").iter().enumerate() {
            let host = host.as_str().unwrap_or("");
            validate_ingress_host(errs, host, &tp.child("hosts").index(j));
        }
        let secret = str_of(tls, "secretName");
        if !secret.is_empty() {
            invalid_each(
                errs,
                &tp.child("secretName"),
                secret,
                dns1123_subdomain_errors(secret),
            );
        }
    }
    let class = str_of(spec, "ingressClassName");
    if !class.is_empty() {
        invalid_each(
            errs,
            &sp.child("ingressClassName"),
            class,
            dns1123_subdomain_errors(class),
        );
    }
}

/// `IngressClass`
pub(crate) fn validate_ingress_class(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    let controller = str_of(spec, "controller");
    let cp = sp.child("controller");
    if controller.is_empty() {
        errs.push(required(&cp, ""));
    } else if controller.len() > 250 {
        errs.push(too_long(&cp, 250));
    } else {
        // A domain-prefixed path: `example.com/ingress-nginx`.
        match controller.split_once('/') {
            Some((domain, rest)) if !rest.is_empty() => {
                invalid_each(errs, &cp, domain, dns1123_subdomain_errors(domain));
                let ok = rest.bytes().all(|c| c.is_ascii_graphic() && c != b'%');
                if !ok {
                    errs.push(invalid(&cp, controller, "path must be a valid HTTP path"));
                }
            }
            _ => errs.push(invalid(
                &cp,
                controller,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            )),
        }
    }
    let params = get(spec, "parameters");
    if !params.is_null() {
        let pp = sp.child("parameters");
        for key in ["kind", "name"] {
            if str_of(params, key).is_empty() {
                errs.push(required(&pp.child(key), ""));
            }
        }
        match (str_of(params, "scope"), str_of(params, "namespace")) {
            ("Namespace", "") => errs.push(required(
                &pp.child("namespace"),
                "`parameters.scope` is set to 'Namespace'",
            )),
            ("Cluster" | "", ns) if !ns.is_empty() => errs.push(forbidden(
                &pp.child("namespace"),
                "`parameters.scope` is set to 'Cluster'",
            )),
            ("Namespace" | "Cluster" | "", _) => {}
            (scope, _) => errs.push(not_supported(
                &pp.child("scope"),
                scope,
                &["Cluster", "Namespace"],
            )),
        }
    }
    if let Some(old) = old {
        immutable(
            errs,
            &cp,
            get(spec, "controller"),
            get(get(old, "spec"), "controller"),
        );
    }
}

fn validate_network_policy_peer(errs: &mut Vec<FieldError>, peer: &Value, path: &Path) {
    let selectors = ["podSelector", "namespaceSelector"]
        .iter()
        .filter(|k| has(peer, k))
        .count();
    let ip_block = get(peer, "ipBlock");
    if !ip_block.is_null() {
        if selectors > 0 {
            errs.push(forbidden(
                path,
                "may not specify both ipBlock and another peer",
            ));
        }
        let bp = path.child("ipBlock");
        let cidr = str_of(ip_block, "cidr");
        if cidr.is_empty() {
            errs.push(required(&bp.child("cidr"), ""));
        } else {
            invalid_each(errs, &bp.child("cidr"), cidr, cidr_errors(cidr));
        }
        for (i, except) in arr_of(ip_block, "except").iter().enumerate() {
            let except = except.as_str().unwrap_or("");
            invalid_each(
                errs,
                &bp.child("except").index(i),
                except,
                cidr_errors(except),
            );
        }
    } else if selectors == 0 {
        errs.push(required(path, "must specify a peer"));
    }
    for key in ["podSelector", "namespaceSelector"] {
        if has(peer, key) {
            validate_label_selector(errs, get(peer, key), &path.child(key));
        }
    }
}

fn validate_network_policy_ports(errs: &mut Vec<FieldError>, ports: &[Value], path: &Path) {
    for (i, port) in ports.iter().enumerate() {
        let pp = path.index(i);
        one_of(errs, port, "protocol", &pp, PROTOCOLS);
        let p = get(port, "port");
        if !p.is_null() {
            validate_port_num_or_name(errs, p, &pp.child("port"));
        }
        if let Some(end) = int_of(port, "endPort") {
            match p.as_i64() {
                None => errs.push(required(
                    &pp.child("port"),
                    "must be specified when endPort is specified",
                )),
                Some(start) if end < start => errs.push(invalid(
                    &pp.child("endPort"),
                    end,
                    "must be greater than or equal to `port`",
                )),
                Some(_) => {}
            }
        }
    }
}

/// `NetworkPolicy`
pub(crate) fn validate_network_policy(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    _old: Option<&Value>,
) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    validate_label_selector(errs, get(spec, "podSelector"), &sp.child("podSelector"));
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr_of(spec, dir).iter().enumerate() {
            let rp = sp.child(dir).index(i);
            validate_network_policy_ports(errs, arr_of(rule, "ports"), &rp.child("ports"));
            for (j, peer) in arr_of(rule, peers).iter().enumerate() {
                validate_network_policy_peer(errs, peer, &rp.child(peers).index(j));
            }
        }
    }
    let types = arr_of(spec, "policyTypes");
    if types.len() > 2 {
        errs.push(invalid(
            &sp.child("policyTypes"),
            get(spec, "policyTypes"),
            "may not specify more than two policyTypes",
        ));
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if !matches!(t, "Ingress" | "Egress") {
            errs.push(not_supported(
                &sp.child("policyTypes").index(i),
                t,
                &["Egress", "Ingress"],
            ));
        }
    }
}

/// `PodDisruptionBudget`
pub(crate) fn validate_pdb(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    let min = get(spec, "minAvailable");
    let max = get(spec, "maxUnavailable");
    if !min.is_null() && !max.is_null() {
        errs.push(invalid(
            &sp,
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    validate_int_or_percent(errs, min, &sp.child("minAvailable"), true);
    validate_int_or_percent(errs, max, &sp.child("maxUnavailable"), true);
    let selector = get(spec, "selector");
    if !selector.is_null() {
        validate_label_selector(errs, selector, &sp.child("selector"));
    }
    one_of(
        errs,
        spec,
        "unhealthyPodEvictionPolicy",
        &sp,
        &["AlwaysAllow", "IfHealthyBudget"],
    );
}

/// `PriorityClass`
pub(crate) fn validate_priority_class(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    old: Option<&Value>,
) {
    let name = str_of(get(obj, "metadata"), "name");
    let value = int_of(obj, "value").unwrap_or(0);
    if name.starts_with("system-") {
        let known = SYSTEM_PRIORITY_CLASSES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v);
        let detail = match known {
            None => Some(format!("{name} is not a known system priority class")),
            Some(v) if v != value => Some(format!("value of {name} PriorityClass must be {v}")),
            Some(_) => None,
        };
        if let Some(detail) = detail {
            errs.push(forbidden(
                &Path::new("metadata").child("name"),
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {detail}"),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        errs.push(forbidden(
            &Path::new("value"),
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    one_of(
        errs,
        obj,
        "preemptionPolicy",
        &Path::default(),
        &["Never", "PreemptLowerPriority"],
    );
    if let Some(old) = old {
        if get(obj, "value") != get(old, "value") {
            errs.push(forbidden(
                &Path::new("value"),
                "may not be changed in an update.",
            ));
        }
        if !same(get(obj, "preemptionPolicy"), get(old, "preemptionPolicy")) {
            errs.push(invalid(
                &Path::new("preemptionPolicy"),
                get(obj, "preemptionPolicy"),
                "field is immutable",
            ));
        }
    }
}

/// `Lease`
pub(crate) fn validate_lease(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    if let Some(d) = int_of(spec, "leaseDurationSeconds")
        && d <= 0
    {
        errs.push(invalid(
            &sp.child("leaseDurationSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    non_negative(errs, spec, "leaseTransitions", &sp);
    let strategy = str_of(spec, "strategy");
    if !strategy.is_empty() && strategy != "OldestEmulationVersion" {
        errs.push(not_supported(
            &sp.child("strategy"),
            strategy,
            &["OldestEmulationVersion"],
        ));
    }
}

/// `EndpointSlice`
pub(crate) fn validate_endpoint_slice(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    old: Option<&Value>,
) {
    const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    let address_type = str_of(obj, "addressType");
    let ap = Path::new("addressType");
    if address_type.is_empty() {
        errs.push(required(&ap, ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.push(not_supported(&ap, address_type, ADDRESS_TYPES));
    }
    let endpoints = arr_of(obj, "endpoints");
    let ep = Path::new("endpoints");
    if endpoints.len() > MAX_ENDPOINTS {
        errs.push(too_many(&ep, endpoints.len(), MAX_ENDPOINTS));
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let p = ep.index(i);
        let addresses = arr_of(endpoint, "addresses");
        let addr_path = p.child("addresses");
        if addresses.is_empty() {
            errs.push(required(&addr_path, "must contain at least 1 address"));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(too_many(&addr_path, addresses.len(), MAX_ADDRESSES));
        }
        for (j, addr) in addresses.iter().enumerate() {
            let addr = addr.as_str().unwrap_or("");
            let path = addr_path.index(j);
            match address_type {
                "IPv4" if addr.parse::<std::net::Ipv4Addr>().is_err() => {
                    errs.push(invalid(&path, addr, "must be a valid IPv4 address"));
                }
                "IPv6" if addr.parse::<std::net::Ipv6Addr>().is_err() => {
                    errs.push(invalid(&path, addr, "must be a valid IPv6 address"));
                }
                "FQDN" => invalid_each(errs, &path, addr, dns1123_subdomain_errors(addr)),
                _ => {}
            }
        }
        let hostname = str_of(endpoint, "hostname");
        if !hostname.is_empty() {
            invalid_each(
                errs,
                &p.child("hostname"),
                hostname,
                dns1123_label_errors(hostname),
            );
        }
        let node = str_of(endpoint, "nodeName");
        if !node.is_empty() {
            invalid_each(
                errs,
                &p.child("nodeName"),
                node,
                dns1123_subdomain_errors(node),
            );
        }
    }
    let ports = arr_of(obj, "ports");
    let pp = Path::new("ports");
    if ports.len() > MAX_SLICE_PORTS {
        errs.push(too_many(&pp, ports.len(), MAX_SLICE_PORTS));
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = pp.index(i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            invalid_each(errs, &p.child("name"), name, dns1123_label_errors(name));
        }
        if !names.insert(name) {
            errs.push(duplicate(&p.child("name"), name));
        }
        one_of(errs, port, "protocol", &p, PROTOCOLS);
        if let Some(n) = int_of(port, "port") {
            for m in port_num_errors(n) {
                errs.push(invalid(&p.child("port"), n, &m));
            }
        }
        let app = str_of(port, "appProtocol");
        if !app.is_empty() {
            invalid_each(
                errs,
                &p.child("appProtocol"),
                app,
                qualified_name_errors(app),
            );
        }
    }
    if let Some(old) = old {
        immutable(errs, &ap, get(obj, "addressType"), get(old, "addressType"));
    }
}

/// `Event` in events.k8s.io/v1.
pub(crate) fn validate_events_event(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    if str_of(obj, "eventTime").is_empty() {
        errs.push(required(&Path::new("eventTime"), ""));
    }
    let namespace = str_of(get(obj, "metadata"), "namespace");
    let regarding_ns = str_of(get(obj, "regarding"), "namespace");
    if !regarding_ns.is_empty() && regarding_ns != namespace {
        errs.push(invalid(
            &Path::new("involvedObject").child("namespace"),
            regarding_ns,
            "does not match event.namespace",
        ));
    }
    super::core::validate_new_event_fields(errs, obj, "reportingController", "note");
    if let Some(series) = obj.get("series").filter(|s| !s.is_null())
        && int_of(series, "count").unwrap_or(0) < 2
    {
        errs.push(invalid(
            &Path::new("series").child("count"),
            int_of(series, "count").unwrap_or(0),
            "should be at least 2",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::field::testing::run;
    use serde_json::json;

    #[test]
    fn ingress_rules() {
        let ok = json!({"spec": {"ingressClassName": "nginx", "rules": [{"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/api", "pathType": "ImplementationSpecific", "backend": {"service": {"name": "api", "port": {"name": "http"}}}}
        ]}}], "tls": [{"hosts": ["a.example.com"], "secretName": "tls"}]}});
        assert!(run(validate_ingress, &ok, None).is_empty());

        let bad = json!({"spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}},
            {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/", "pathType": "Regex", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}});
        assert_eq!(
            run(validate_ingress, &bad, None),
            [
                "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
                "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
                "spec.rules[0].http.paths[0].backend.service.port: Invalid value: {}: port name or number is required",
                "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified",
                "spec.rules[0].http.paths[2].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
            ]
        );
        assert_eq!(run(validate_ingress, &json!({"spec": {}}), None).len(), 1);
    }

    #[test]
    fn network_policy_rules() {
        let ok = json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": "x"}}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}, {"port": "http"}]
        }]}});
        assert!(run(validate_network_policy, &ok, None).is_empty());
        let bad = json!({"spec": {"podSelector": {}, "policyTypes": ["Sideways"], "ingress": [{
            "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, {}]
        }]}});
        assert_eq!(
            run(validate_network_policy, &bad, None),
            [
                "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
                "spec.ingress[0].from[1]: Required value: must specify a peer",
                "spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Egress\", \"Ingress\"",
            ]
        );
    }

    #[test]
    fn pdb_priority_lease_slices() {
        assert_eq!(
            run(
                validate_pdb,
                &json!({"spec": {"minAvailable": 1, "maxUnavailable": "10%"}}),
                None
            ),
            [
                "spec: Invalid value: {\"maxUnavailable\":\"10%\",\"minAvailable\":1}: minAvailable and maxUnavailable cannot be both set"
            ]
        );
        assert!(
            run(
                validate_pdb,
                &json!({"spec": {"minAvailable": "50%", "selector": {"matchLabels": {"a": "b"}}}}),
                None
            )
            .is_empty()
        );

        assert_eq!(
            run(
                validate_priority_class,
                &json!({"metadata": {"name": "high"}, "value": 2_000_000_000i64}),
                None
            ),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert!(
            run(
                validate_priority_class,
                &json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000i64}),
                None
            )
            .is_empty()
        );
        assert_eq!(
            run(
                validate_priority_class,
                &json!({"metadata": {"name": "system-foo"}, "value": 1}),
                None
            )
            .len(),
            1
        );

        assert_eq!(
            run(
                validate_lease,
                &json!({"spec": {"leaseDurationSeconds": 0}}),
                None
            ),
            ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );

        let slice = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        assert!(run(validate_endpoint_slice, &slice, None).is_empty());
        let bad = json!({"addressType": "IPX", "endpoints": [{"addresses": []}]});
        assert_eq!(
            run(validate_endpoint_slice, &bad, None),
            [
                "addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
                "endpoints[0].addresses: Required value: must contain at least 1 address",
            ]
        );
        let many: Vec<Value> = (0..1001)
            .map(|_| json!({"addresses": ["10.0.0.1"]}))
            .collect();
        let f = run(
            validate_endpoint_slice,
            &json!({"addressType": "IPv4", "endpoints": many}),
            None,
        );
        assert_eq!(
            f,
            ["endpoints: Too many: 1001: must have at most 1000 items"]
        );
    }
}
