//! Rows of Services, Endpoints, EndpointSlices, Ingresses, IngressClasses,
//! NetworkPolicies, ServiceCIDRs and IPAddresses.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::{
    AGE, NAME, age, arr_at, column, format_label_selector, format_labels, i64_at, list_with_more,
    name, opt_i64_at, opt_str_at, str_at, wide,
};
use crate::registry::Column;

/// How many addresses, ports or hosts a cell lists before `+ N more...`.
const MAX_LISTED: usize = 3;

/// Columns of `kubectl get services`.
pub(crate) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "ClusterIP, NodePort, LoadBalancer or ExternalName.",
    ),
    column(
        "Cluster-IP",
        "string",
        "Virtual IP of the service in the cluster.",
    ),
    column(
        "External-IP",
        "string",
        "Addresses the service is reachable at from outside.",
    ),
    column(
        "Port(s)",
        "string",
        "Ports, node ports and protocols of the service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Labels of the pods the service routes to.",
    ),
];

/// Load-balancer ingress points (IP, else hostname), sorted and deduplicated.
fn load_balancer_ingress(obj: &Value) -> Vec<&str> {
    let set: BTreeSet<&str> = arr_at(obj, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| opt_str_at(i, "/ip").or_else(|| opt_str_at(i, "/hostname")))
        .collect();
    set.into_iter().collect()
}

/// The External-IP cell, by service type (wide form: never truncated).
fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = arr_at(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, "/spec/type") {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut all = load_balancer_ingress(svc);
            if all.is_empty() && external_ips.is_empty() {
                return "<pending>".to_owned();
            }
            all.extend(external_ips);
            all.join(",")
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// One Service row.
pub(crate) fn service_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = arr_at(obj, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports: Vec<String> = arr_at(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let port = i64_at(p, "/port");
            let protocol = str_at(p, "/protocol");
            match opt_i64_at(p, "/nodePort").filter(|n| *n > 0) {
                Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    };
    vec![
        name(obj),
        Value::from(str_at(obj, "/spec/type")),
        Value::from(cluster_ip),
        Value::from(service_external_ip(obj)),
        Value::from(ports),
        age(obj, now),
        Value::from(format_labels(obj.pointer("/spec/selector"))),
    ]
}

/// Columns of `kubectl get endpoints`.
pub(crate) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Endpoints",
        "string",
        "Addresses and ports behind the service.",
    ),
    AGE,
];

/// One Endpoints row: up to three `ip:port` pairs, then `+ N more...`.
pub(crate) fn endpoints_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let subsets = arr_at(obj, "/subsets");
    let cell = if subsets.is_empty() {
        "<none>".to_owned()
    } else {
        let mut listed: Vec<String> = Vec::new();
        let mut count = 0usize;
        for subset in subsets {
            let addresses: Vec<&str> = arr_at(subset, "/addresses")
                .iter()
                .map(|a| str_at(a, "/ip"))
                .collect();
            let ports = arr_at(subset, "/ports");
            if ports.is_empty() {
                // Headless services may have no ports.
                count += addresses.len();
                listed.extend(addresses.iter().map(|ip| (*ip).to_owned()));
                continue;
            }
            for port in ports {
                count += addresses.len();
                let port = i64_at(port, "/port");
                listed.extend(addresses.iter().map(|ip| join_host_port(ip, port)));
            }
        }
        listed.truncate(MAX_LISTED);
        let shown = listed.join(",");
        if count > MAX_LISTED {
            format!("{shown} + {} more...", count - MAX_LISTED)
        } else {
            shown
        }
    };
    vec![name(obj), Value::from(cell), age(obj, now)]
}

/// `host:port`, with brackets around IPv6 hosts as Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Columns of `kubectl get endpointslices`.
pub(crate) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    column("AddressType", "string", "IPv4, IPv6 or FQDN."),
    column("Ports", "string", "Ports of the endpoints."),
    column("Endpoints", "string", "Addresses of the endpoints."),
    AGE,
];

/// One EndpointSlice row.
pub(crate) fn endpoint_slice_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = arr_at(obj, "/ports")
        .iter()
        .map(|p| match opt_i64_at(p, "/port") {
            Some(port) => port.to_string(),
            None => p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_owned(),
        })
        .collect();
    let addresses: Vec<String> = arr_at(obj, "/endpoints")
        .iter()
        .flat_map(|e| arr_at(e, "/addresses"))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    vec![
        name(obj),
        Value::from(str_at(obj, "/addressType")),
        Value::from(list_with_more(&ports, MAX_LISTED)),
        Value::from(list_with_more(&addresses, MAX_LISTED)),
        age(obj, now),
    ]
}

/// Columns of `kubectl get ingresses`.
pub(crate) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    column("Class", "string", "Ingress class that handles the ingress."),
    column("Hosts", "string", "Host names the rules match."),
    column(
        "Address",
        "string",
        "Load-balancer addresses of the ingress.",
    ),
    column("Ports", "string", "Ports the ingress serves on."),
    AGE,
];

/// One Ingress row.
pub(crate) fn ingress_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let class = obj
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let rules = arr_at(obj, "/spec/rules");
    // Hosts of the rules that have one, up to three; rules beyond that are counted
    // (all of them, hostless or not) as upstream does.
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX_LISTED {
            more = true;
            break;
        }
        hosts.extend(opt_str_at(rule, "/host"));
    }
    let hosts = if hosts.is_empty() {
        "*".to_owned()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX_LISTED)
    } else {
        hosts.join(",")
    };
    let ports = if arr_at(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        Value::from(class),
        Value::from(hosts),
        Value::from(load_balancer_ingress(obj).join(",")),
        Value::from(ports),
        age(obj, now),
    ]
}

/// Columns of `kubectl get ingressclasses`.
pub(crate) const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Controller",
        "string",
        "Controller that implements the class.",
    ),
    column(
        "Parameters",
        "string",
        "Resource holding the class's parameters.",
    ),
    AGE,
];

/// One IngressClass row.
pub(crate) fn ingress_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let parameters = match obj.pointer("/spec/parameters").filter(|p| p.is_object()) {
        Some(p) => {
            let mut kind = str_at(p, "/kind").to_owned();
            if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
                kind = format!("{kind}.{group}");
            }
            format!("{kind}/{}", str_at(p, "/name"))
        }
        None => "<none>".to_owned(),
    };
    vec![
        name(obj),
        Value::from(str_at(obj, "/spec/controller")),
        Value::from(parameters),
        age(obj, now),
    ]
}

/// Columns of `kubectl get networkpolicies`.
pub(crate) const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Pod-Selector",
        "string",
        "Labels of the pods the policy applies to.",
    ),
    AGE,
];

/// One NetworkPolicy row.
pub(crate) fn network_policy_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(format_label_selector(obj.pointer("/spec/podSelector"))),
        age(obj, now),
    ]
}

/// Columns of `kubectl get servicecidrs`.
pub(crate) const SERVICE_CIDR_COLUMNS: &[Column] = &[
    NAME,
    column(
        "CIDRs",
        "string",
        "Ranges the Service cluster IPs are allocated from.",
    ),
    AGE,
];

/// One ServiceCIDR row: the ranges joined with commas.
pub(crate) fn service_cidr_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let cidrs: Vec<&str> = arr_at(obj, "/spec/cidrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![name(obj), Value::from(cidrs.join(",")), age(obj, now)]
}

/// Columns of `kubectl get ipaddresses`: upstream declares no Age column (its
/// row builder computes one that kubectl never shows).
pub(crate) const IP_ADDRESS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "ParentRef",
        "string",
        "The object the address is allocated to.",
    ),
];

/// One IPAddress row: the parent as `resource[.group][/namespace]/name`,
/// lower-cased as upstream prints a GroupResource.
pub(crate) fn ip_address_row(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let parent = match obj.pointer("/spec/parentRef").filter(|p| p.is_object()) {
        Some(p) => {
            let mut text = match opt_str_at(p, "/group") {
                Some(group) => format!("{}.{group}", str_at(p, "/resource")),
                None => str_at(p, "/resource").to_owned(),
            }
            .to_lowercase();
            if let Some(ns) = opt_str_at(p, "/namespace") {
                text = format!("{text}/{ns}");
            }
            format!("{text}/{}", str_at(p, "/name"))
        }
        None => "<none>".to_owned(),
    };
    vec![name(obj), Value::from(parent)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::fixtures::{self, now};
    use serde_json::json;

    fn meta() -> Value {
        fixtures::meta("web", "2024-05-01T11:00:00Z")
    }

    #[test]
    fn service_rows_by_type() {
        let svc = json!({"metadata": meta(), "spec": {
            "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web"},
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(
            service_row(&svc, now()),
            vec![
                json!("web"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,53/UDP"),
                json!("60m"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": meta(), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"],
            "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}});
        let row = service_row(&lb, now());
        assert_eq!(row[3..5], [json!("<pending>"), json!("443:31443/TCP")]);
        assert_eq!(row[6], json!("<none>"));
        let mut ready = lb.clone();
        ready["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example"}]}});
        assert_eq!(
            service_row(&ready, now())[3],
            json!("203.0.113.9,lb.example")
        );
        let headless =
            json!({"metadata": meta(), "spec": {"type": "ClusterIP", "clusterIPs": ["None"]}});
        assert_eq!(
            service_row(&headless, now())[2..5],
            [json!("None"), json!("<none>"), json!("<none>")]
        );
        let ext = json!({"metadata": meta(), "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(
            service_row(&ext, now())[2..4],
            [json!("<none>"), json!("db.example.com")]
        );
    }

    #[test]
    fn endpoints_list_three_then_count() {
        let ep = json!({"metadata": meta(), "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 8080}]}]});
        assert_eq!(
            endpoints_row(&ep, now())[1],
            json!("10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more...")
        );
        let empty = json!({"metadata": meta()});
        assert_eq!(endpoints_row(&empty, now())[1], json!("<none>"));
    }

    #[test]
    fn endpoint_slice_and_ingress_rows() {
        let slice = json!({"metadata": meta(), "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            endpoint_slice_row(&slice, now())[1..4],
            [
                json!("IPv4"),
                json!("80,metrics"),
                json!("10.0.0.1,10.0.0.2")
            ]
        );
        let bare = json!({"metadata": meta(), "addressType": "IPv4"});
        assert_eq!(
            endpoint_slice_row(&bare, now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );

        let ing = json!({"metadata": meta(), "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.example"}, {"host": "b.example"}, {}, {"host": "d.example"}],
            "tls": [{"hosts": ["a.example"]}]}});
        assert_eq!(
            ingress_row(&ing, now())[1..5],
            [
                json!("nginx"),
                json!("a.example,b.example,d.example"),
                json!(""),
                json!("80, 443")
            ]
        );
        let many = json!({"metadata": meta(), "spec": {"rules": [
            {"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {"host": "e"}]}});
        assert_eq!(
            ingress_row(&many, now())[1..3],
            [json!("<none>"), json!("a,b,c + 2 more...")]
        );
        let class = json!({"metadata": meta(), "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            ingress_class_row(&class, now())[1..3],
            [
                json!("k8s.io/ingress-nginx"),
                json!("IngressParameters.k8s.example.com/p")
            ]
        );
    }

    #[test]
    fn service_cidr_and_ip_address_rows() {
        let cidr =
            json!({"metadata": meta(), "spec": {"cidrs": ["10.43.0.0/16", "fd00:43::/112"]}});
        assert_eq!(
            service_cidr_row(&cidr, now()),
            vec![
                json!("web"),
                json!("10.43.0.0/16,fd00:43::/112"),
                json!("60m")
            ]
        );
        let ip = json!({"metadata": {"name": "10.43.0.1"}, "spec": {"parentRef": {
            "group": "", "resource": "services", "namespace": "default", "name": "kubernetes"}}});
        assert_eq!(
            ip_address_row(&ip, now()),
            vec![json!("10.43.0.1"), json!("services/default/kubernetes")]
        );
        let gateway = json!({"metadata": {"name": "10.0.0.9"}, "spec": {"parentRef": {
            "group": "Gateway.Networking.k8s.io", "resource": "Gateways", "name": "gw"}}});
        assert_eq!(
            ip_address_row(&gateway, now())[1],
            json!("gateways.gateway.networking.k8s.io/gw")
        );
        assert_eq!(ip_address_row(&json!({}), now())[1], json!("<none>"));
    }
}
