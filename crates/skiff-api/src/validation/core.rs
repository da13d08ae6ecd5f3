//! Core (`v1`) kinds other than the pod spec itself.

use std::collections::HashSet;

use serde_json::Value;

use super::field::{
    Path, arr_of, bool_of, duplicate, forbidden, get, has, immutable, int_of, invalid,
    invalid_each, map_of, not_supported, one_of, required, same, str_of, too_long,
};
use super::meta::{unique_names, validate_labels};
use super::names::{
    cidr_errors, config_map_key_errors, dns1123_label_errors, dns1123_subdomain_errors, ip_errors,
    label_value_errors, port_num_errors, qualified_name_errors,
};
use super::pod::{
    non_negative_quantity, same_quantity, same_resources, validate_pod_spec,
    validate_pod_spec_update, validate_port_num_or_name,
};
use crate::quantity::Quantity;
use crate::registry::FieldError;

/// Largest total size of a ConfigMap's or Secret's data.
const MAX_DATA_SIZE: usize = 1024 * 1024;
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `Pod`
pub(crate) fn validate_pod(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    validate_pod_spec(errs, spec, &Path::new("spec"));
    if let Some(old) = old {
        validate_pod_spec_update(errs, spec, get(old, "spec"));
    }
}

/// The annotation that marks a static pod's mirror.
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The message for a resize that touches anything but cpu and memory.
const RESIZE_ONLY_CPU_MEMORY: &str = "only cpu and memory resources are mutable";

/// A write to `pods/resize`: `obj` is the stored pod with the new containers'
/// `resources` and `resizePolicy` copied in (upstream's `ValidatePodResize`).
/// Metadata was checked by the caller.
pub(crate) fn validate_pod_resize(errs: &mut Vec<FieldError>, obj: &Value, old: &Value) {
    let spec = get(obj, "spec");
    let old_spec = get(old, "spec");
    let mut own = Vec::new();
    validate_pod_spec(&mut own, spec, &Path::new("spec"));
    let root = Path::default();
    let pod_level = |s: &Value| {
        let r = get(s, "resources");
        !map_of(r, "requests").is_empty() || !map_of(r, "limits").is_empty()
    };
    if pod_level(spec) || pod_level(old_spec) {
        errs.push(forbidden(
            &root,
            "pods with pod-level resources cannot be resized",
        ));
        return;
    }
    if map_of(get(old, "metadata"), "annotations").contains_key(MIRROR_POD_ANNOTATION) {
        errs.push(forbidden(&root, "static pods cannot be resized"));
        return;
    }
    if str_of(get(old_spec, "os"), "name") == "windows" {
        errs.push(forbidden(&root, "windows pods cannot be resized"));
        return;
    }
    errs.append(&mut own);
    let path = Path::new("spec");
    let old_qos = match str_of(get(old, "status"), "qosClass") {
        "" => pod_qos_class(old_spec),
        stored => stored,
    };
    if old_qos != pod_qos_class(spec) {
        errs.push(invalid(
            &path,
            str_of(get(obj, "status"), "qosClass"),
            "Pod QOS Class may not change as a result of resizing",
        ));
    }
    if !resize_supported(old) {
        errs.push(forbidden(
            &path,
            "Pod running on node without support for resize",
        ));
    }
    let (new_inits, old_inits) = (
        arr_of(spec, "initContainers"),
        arr_of(old_spec, "initContainers"),
    );
    let (new_apps, old_apps) = (arr_of(spec, "containers"), arr_of(old_spec, "containers"));
    if new_inits.len() != old_inits.len() || new_apps.len() != old_apps.len() {
        errs.push(forbidden(&path, RESIZE_ONLY_CPU_MEMORY));
        return;
    }
    for (i, (new_c, old_c)) in new_inits.iter().zip(old_inits).enumerate() {
        if str_of(old_c, "restartPolicy") == "Always" {
            let p = path.child("initContainers").index(i).child("resources");
            validate_container_resize(errs, new_c, old_c, &p);
        }
    }
    for (i, (new_c, old_c)) in new_apps.iter().zip(old_apps).enumerate() {
        let p = path.child("containers").index(i).child("resources");
        validate_container_resize(errs, new_c, old_c, &p);
    }
    let mut munged = spec.clone();
    if let Some(list) = munged.get_mut("containers").and_then(Value::as_array_mut) {
        for (c, old_c) in list.iter_mut().zip(old_apps) {
            keep_old_cpu_memory(c, old_c);
            if !same(c, old_c) {
                errs.push(forbidden(&path, RESIZE_ONLY_CPU_MEMORY));
            }
        }
    }
    if let Some(list) = munged
        .get_mut("initContainers")
        .and_then(Value::as_array_mut)
    {
        for (c, old_c) in list.iter_mut().zip(old_inits) {
            if str_of(c, "restartPolicy") == "Always" {
                keep_old_cpu_memory(c, old_c);
                if !same(c, old_c) {
                    errs.push(forbidden(
                        &path,
                        "only cpu and memory resources for sidecar containers are mutable",
                    ));
                }
            } else if !same(c, old_c) {
                errs.push(forbidden(
                    &path,
                    "resources for non-sidecar init containers are immutable",
                ));
            }
            // Compared once above; the whole-spec check below is about the rest.
            *c = old_c.clone();
        }
    }
    if errs.is_empty() && !same(&munged, old_spec) {
        errs.push(forbidden(&path, RESIZE_ONLY_CPU_MEMORY));
    }
}

/// Upstream refuses resizes of pods on nodes that predate in-place resize:
/// a running container whose status reports no `resources`. A pod with no
/// running container is assumed to be on a capable node.
fn resize_supported(pod: &Value) -> bool {
    arr_of(get(pod, "status"), "containerStatuses")
        .iter()
        .find(|s| get(get(s, "state"), "running").is_object())
        .is_none_or(|s| get(s, "resources").is_object())
}

/// The rules for one container's new `resources`: nothing removed, and a
/// memory limit only lowered (or added) when memory changes restart the
/// container.
fn validate_container_resize(errs: &mut Vec<FieldError>, new: &Value, old: &Value, path: &Path) {
    let (new_res, old_res) = (get(new, "resources"), get(old, "resources"));
    let removed = |key: &str| {
        let now = map_of(new_res, key);
        map_of(old_res, key).keys().any(|k| !now.contains_key(k))
    };
    if removed("requests") {
        errs.push(forbidden(
            &path.child("requests"),
            "resource requests cannot be removed",
        ));
    }
    if removed("limits") {
        errs.push(forbidden(
            &path.child("limits"),
            "resource limits cannot be removed",
        ));
    }
    let memory_policy = arr_of(new, "resizePolicy")
        .iter()
        .find(|p| str_of(p, "resourceName") == "memory")
        .map_or("", |p| str_of(p, "restartPolicy"));
    if !matches!(memory_policy, "" | "NotRequired") {
        return;
    }
    let parse = |res: &Value| {
        get(get(res, "limits"), "memory")
            .as_str()
            .and_then(|q| q.parse::<Quantity>().ok())
    };
    let limit_path = path.child("limits").key("memory");
    let has_old = !get(get(old_res, "limits"), "memory").is_null();
    match (parse(new_res), parse(old_res)) {
        (Some(new_limit), Some(old_limit)) if new_limit < old_limit => {
            errs.push(forbidden(
                &limit_path,
                "memory limits cannot be decreased unless resizePolicy is RestartContainer",
            ));
        }
        (Some(_), None) if !has_old => errs.push(forbidden(
            &limit_path,
            "memory limits cannot be added unless resizePolicy is RestartContainer",
        )),
        _ => {}
    }
}

/// Puts the old container's cpu and memory amounts into `c`'s resources (and
/// drops its new ones), so that what is left to compare is everything a
/// resize may not change.
fn keep_old_cpu_memory(c: &mut Value, old: &Value) {
    let old_res = get(old, "resources");
    let mut res = get(c, "resources").clone();
    for key in ["limits", "requests"] {
        let old_list = map_of(old_res, key);
        if get(old_res, key).is_null() {
            if let Some(m) = res.as_object_mut() {
                m.remove(key);
            }
            continue;
        }
        let mut list = map_of(&res, key).clone();
        for name in ["cpu", "memory"] {
            match old_list.get(name) {
                Some(q) => list.insert(name.to_string(), q.clone()),
                None => list.remove(name),
            };
        }
        res[key] = Value::Object(list);
    }
    if same_resources(&res, old_res) {
        res = old_res.clone();
    }
    c["resources"] = res;
}

/// A pod's QoS class from its spec (upstream's `ComputePodQOS`): only cpu and
/// memory count, zero requests do not.
pub(crate) fn pod_qos_class(spec: &Value) -> &'static str {
    let containers = arr_of(spec, "containers")
        .iter()
        .chain(arr_of(spec, "initContainers"));
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let res = get(c, "resources");
        let (requests, limits) = (map_of(res, "requests"), map_of(res, "limits"));
        for name in ["cpu", "memory"] {
            let positive = |q: &Value| {
                q.as_str()
                    .and_then(|s| s.parse::<Quantity>().ok())
                    .is_some_and(|q| !q.is_zero() && !q.is_negative())
            };
            let request = requests.get(name).filter(|q| positive(q));
            let limit = limits.get(name);
            any |= request.is_some() || limit.is_some();
            match (request, limit) {
                (Some(r), Some(l)) if same_quantity(r, l) => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// `Namespace`
pub(crate) fn validate_namespace(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let p = Path::new("spec").child("finalizers");
    for f in arr_of(get(obj, "spec"), "finalizers") {
        let name = f.as_str().unwrap_or("");
        let msgs = qualified_name_errors(name);
        if !msgs.is_empty() {
            invalid_each(errs, &p, name, msgs);
        } else if !name.contains('/') && name != "kubernetes" {
            errs.push(invalid(
                &p,
                name,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    one_of(
        errs,
        get(obj, "status"),
        "phase",
        &Path::new("status"),
        &["Active", "Terminating"],
    );
}

/// Data keys and total size of a ConfigMap or Secret. Each map is named with
/// whether its values are base64 (sized decoded). A key in two maps is an error for
/// ConfigMaps (`data`/`binaryData`), but not for Secrets, whose `stringData`
/// deliberately overrides `data`.
fn validate_data_maps(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    maps: &[(&str, bool)],
    reject_duplicates: bool,
) -> usize {
    let mut total = 0usize;
    let mut seen = HashSet::new();
    for (map, base64) in maps {
        for (key, value) in map_of(obj, map) {
            let p = Path::new(map).key(key);
            invalid_each(errs, &p, key, config_map_key_errors(key));
            if !seen.insert(key.as_str()) && reject_duplicates {
                errs.push(invalid(
                    &p,
                    key.as_str(),
                    "duplicate of key present in data",
                ));
            }
            let s = value.as_str().unwrap_or("");
            total += if *base64 {
                base64_decoded_len(s)
            } else {
                s.len()
            };
        }
    }
    total
}

/// The decoded size of standard base64 text, without decoding it.
fn base64_decoded_len(s: &str) -> usize {
    let padding = s.bytes().rev().take_while(|&c| c == b'=').count().min(2);
    (s.len() / 4 * 3 + (s.len() % 4).saturating_sub(1)).saturating_sub(padding)
}

/// `immutable: true` freezes data and cannot be undone.
fn validate_immutable_data(errs: &mut Vec<FieldError>, obj: &Value, old: &Value, maps: &[&str]) {
    if !bool_of(old, "immutable") {
        return;
    }
    if !bool_of(obj, "immutable") {
        errs.push(forbidden(
            &Path::new("immutable"),
            "field is immutable when `immutable` is set",
        ));
    }
    for map in maps {
        if !same(get(obj, map), get(old, map)) {
            errs.push(forbidden(
                &Path::new(map),
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

/// `ConfigMap`
pub(crate) fn validate_config_map(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let total = validate_data_maps(errs, obj, &[("data", false), ("binaryData", true)], true);
    if total > MAX_DATA_SIZE {
        errs.push(too_long(&Path::default(), MAX_DATA_SIZE));
    }
    if let Some(old) = old {
        validate_immutable_data(errs, obj, old, &["data", "binaryData"]);
    }
}

/// `Secret`
pub(crate) fn validate_secret(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let total = validate_data_maps(errs, obj, &[("data", true), ("stringData", false)], false);
    if total > MAX_DATA_SIZE {
        errs.push(too_long(&Path::new("data"), MAX_DATA_SIZE));
    }
    let has_key =
        |k: &str| map_of(obj, "data").contains_key(k) || map_of(obj, "stringData").contains_key(k);
    let data = Path::new("data");
    match str_of(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let ann = map_of(get(obj, "metadata"), "annotations");
            if ann
                .get("kubernetes.io/service-account.name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push(required(
                    &Path::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !has_key(".dockercfg") => {
            errs.push(required(&data.key(".dockercfg"), ""));
        }
        "kubernetes.io/dockerconfigjson" if !has_key(".dockerconfigjson") => {
            errs.push(required(&data.key(".dockerconfigjson"), ""));
        }
        "kubernetes.io/basic-auth" if !has_key("username") && !has_key("password") => {
            errs.push(required(&data.key("username"), ""));
            errs.push(required(&data.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if !has_key("ssh-privatekey") => {
            errs.push(required(&data.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has_key(key) {
                    errs.push(required(&data.key(key), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        immutable(errs, &Path::new("type"), get(obj, "type"), get(old, "type"));
        validate_immutable_data(errs, obj, old, &["data"]);
    }
}

/// `Service`
pub(crate) fn validate_service(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    let ty = str_of(spec, "type");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !ty.is_empty() && !TYPES.contains(&ty) {
        errs.push(not_supported(&sp.child("type"), ty, TYPES));
    }
    let cluster_ip = str_of(spec, "clusterIP");
    let headless = cluster_ip == "None";
    let ports = arr_of(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(required(&sp.child("ports"), ""));
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = sp.child("ports").index(i);
        let name = str_of(port, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(required(&p.child("name"), ""));
            }
        } else {
            let msgs = dns1123_label_errors(name);
            if !msgs.is_empty() {
                invalid_each(errs, &p.child("name"), name, msgs);
            } else if !names.insert(name) {
                errs.push(duplicate(&p.child("name"), name));
            }
        }
        let number = int_of(port, "port").unwrap_or(0);
        for m in port_num_errors(number) {
            errs.push(invalid(&p.child("port"), number, &m));
        }
        one_of(errs, port, "protocol", &p, PROTOCOLS);
        if has(port, "targetPort") {
            validate_port_num_or_name(errs, get(port, "targetPort"), &p.child("targetPort"));
        }
        if let Some(node_port) = int_of(port, "nodePort").filter(|&n| n != 0) {
            if ty == "ClusterIP" || ty.is_empty() {
                errs.push(forbidden(
                    &p.child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                for m in port_num_errors(node_port) {
                    errs.push(invalid(&p.child("nodePort"), node_port, &m));
                }
            }
        }
        let key = (number, str_of(port, "protocol").to_string());
        if !keys.insert(key) {
            errs.push(duplicate(&p, port));
        }
    }

    if ty == "ExternalName" {
        if !cluster_ip.is_empty() || !arr_of(spec, "clusterIPs").is_empty() {
            errs.push(forbidden(
                &sp.child("clusterIPs"),
                "may not be set for ExternalName services",
            ));
        }
        let name = str_of(spec, "externalName").trim_end_matches('.');
        if name.is_empty() {
            errs.push(required(&sp.child("externalName"), ""));
        } else {
            invalid_each(
                errs,
                &sp.child("externalName"),
                str_of(spec, "externalName"),
                dns1123_subdomain_errors(name),
            );
        }
    } else if headless && matches!(ty, "NodePort" | "LoadBalancer") {
        errs.push(invalid(
            &sp.child("clusterIPs").index(0),
            cluster_ip,
            &format!("may not be set to 'None' for {ty} services"),
        ));
    } else if !cluster_ip.is_empty() && !headless {
        invalid_each(
            errs,
            &sp.child("clusterIPs").index(0),
            cluster_ip,
            ip_errors(cluster_ip),
        );
    }
    // Only a LoadBalancer with local external traffic gets a health check
    // port. Its absence there is not an error here: the API server allocates
    // one after validation.
    let local_lb = ty == "LoadBalancer" && str_of(spec, "externalTrafficPolicy") == "Local";
    if let Some(port) = int_of(spec, "healthCheckNodePort").filter(|&p| p != 0) {
        if local_lb {
            for m in port_num_errors(port) {
                errs.push(invalid(&sp.child("healthCheckNodePort"), port, &m));
            }
        } else {
            errs.push(invalid(
                &sp.child("healthCheckNodePort"),
                port,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    }
    for (i, ip) in arr_of(spec, "clusterIPs").iter().enumerate().skip(1) {
        let ip = ip.as_str().unwrap_or("");
        if ip != "None" {
            invalid_each(errs, &sp.child("clusterIPs").index(i), ip, ip_errors(ip));
        }
    }
    for (i, ip) in arr_of(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        invalid_each(errs, &sp.child("externalIPs").index(i), ip, ip_errors(ip));
    }
    for (i, cidr) in arr_of(spec, "loadBalancerSourceRanges").iter().enumerate() {
        let cidr = cidr.as_str().unwrap_or("");
        invalid_each(
            errs,
            &sp.child("loadBalancerSourceRanges").index(i),
            cidr,
            cidr_errors(cidr),
        );
    }
    one_of(errs, spec, "sessionAffinity", &sp, &["ClientIP", "None"]);
    if let Some(timeout) = int_of(
        get(get(spec, "sessionAffinityConfig"), "clientIP"),
        "timeoutSeconds",
    ) && !(1..=86400).contains(&timeout)
    {
        errs.push(invalid(
            &sp.child("sessionAffinityConfig")
                .child("clientIP")
                .child("timeoutSeconds"),
            timeout,
            "must be greater than 0 and less than 86400",
        ));
    }
    one_of(
        errs,
        spec,
        "externalTrafficPolicy",
        &sp,
        &["Cluster", "Local"],
    );
    one_of(
        errs,
        spec,
        "internalTrafficPolicy",
        &sp,
        &["Cluster", "Local"],
    );
    one_of(
        errs,
        spec,
        "ipFamilyPolicy",
        &sp,
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
    );
    let families = arr_of(spec, "ipFamilies");
    let mut seen = HashSet::new();
    for (i, f) in families.iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        let p = sp.child("ipFamilies").index(i);
        if !matches!(f, "IPv4" | "IPv6") {
            errs.push(not_supported(&p, f, &["IPv4", "IPv6"]));
        } else if !seen.insert(f) {
            errs.push(duplicate(&p, f));
        }
    }
    validate_labels(errs, map_of(spec, "selector"), &sp.child("selector"));

    if let Some(old) = old {
        let old_spec = get(old, "spec");
        let old_ip = str_of(old_spec, "clusterIP");
        let old_ty = str_of(old_spec, "type");
        if old_ty != "ExternalName" && ty != "ExternalName" && !old_ip.is_empty() {
            let p = sp.child("clusterIPs").index(0);
            if cluster_ip.is_empty() {
                errs.push(invalid(
                    &p,
                    get(spec, "clusterIPs"),
                    "primary clusterIP can not be unset",
                ));
            } else if cluster_ip != old_ip {
                errs.push(invalid(
                    &p,
                    get(spec, "clusterIPs"),
                    "may not change once set",
                ));
            }
        }
    }
}

/// `Endpoints`
pub(crate) fn validate_endpoints(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    for (i, subset) in arr_of(obj, "subsets").iter().enumerate() {
        let p = Path::new("subsets").index(i);
        for key in ["addresses", "notReadyAddresses"] {
            for (j, addr) in arr_of(subset, key).iter().enumerate() {
                let ip = str_of(addr, "ip");
                invalid_each(errs, &p.child(key).index(j).child("ip"), ip, ip_errors(ip));
                let host = str_of(addr, "hostname");
                if !host.is_empty() {
                    invalid_each(
                        errs,
                        &p.child(key).index(j).child("hostname"),
                        host,
                        dns1123_label_errors(host),
                    );
                }
            }
        }
        let ports = arr_of(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = p.child("ports").index(j);
            let name = str_of(port, "name");
            if !name.is_empty() {
                invalid_each(errs, &pp.child("name"), name, dns1123_label_errors(name));
            } else if ports.len() > 1 {
                errs.push(required(&pp.child("name"), ""));
            }
            let number = int_of(port, "port").unwrap_or(0);
            for m in port_num_errors(number) {
                errs.push(invalid(&pp.child("port"), number, &m));
            }
            one_of(errs, port, "protocol", &pp, PROTOCOLS);
        }
        unique_names(errs, ports, "name", &p.child("ports"));
    }
}

/// `Node`
pub(crate) fn validate_node(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    let cidrs = arr_of(spec, "podCIDRs");
    for (i, cidr) in cidrs.iter().enumerate() {
        let cidr = cidr.as_str().unwrap_or("");
        invalid_each(
            errs,
            &sp.child("podCIDRs").index(i),
            cidr,
            cidr_errors(cidr),
        );
    }
    let mut seen = HashSet::new();
    for (i, taint) in arr_of(spec, "taints").iter().enumerate() {
        let p = sp.child("taints").index(i);
        let key = str_of(taint, "key");
        if key.is_empty() {
            errs.push(required(&p.child("key"), ""));
        } else {
            invalid_each(errs, &p.child("key"), key, qualified_name_errors(key));
        }
        let value = str_of(taint, "value");
        invalid_each(errs, &p.child("value"), value, label_value_errors(value));
        let effect = str_of(taint, "effect");
        const EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
        if effect.is_empty() {
            errs.push(required(&p.child("effect"), ""));
        } else if !EFFECTS.contains(&effect) {
            errs.push(not_supported(&p.child("effect"), effect, EFFECTS));
        }
        if !seen.insert((key, effect)) {
            errs.push(duplicate(&p, format!("{key}={value}:{effect}")));
        }
    }
    for key in ["capacity", "allocatable"] {
        for (name, v) in map_of(get(obj, "status"), key) {
            non_negative_quantity(errs, &Path::new("status").child(key).key(name), v);
        }
    }
    if let Some(old) = old {
        let old_spec = get(old, "spec");
        for key in ["podCIDR", "providerID"] {
            let was = str_of(old_spec, key);
            if !was.is_empty() && str_of(spec, key) != was {
                errs.push(forbidden(
                    &sp.child(key),
                    &format!("node updates may not change {key} except from \"\" to valid"),
                ));
            }
        }
    }
}

/// `Event` (core/v1)
pub(crate) fn validate_core_event(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let namespace = str_of(get(obj, "metadata"), "namespace");
    let involved_ns = str_of(get(obj, "involvedObject"), "namespace");
    let p = Path::new("involvedObject").child("namespace");
    let event_time = str_of(obj, "eventTime");
    if event_time.is_empty() {
        if involved_ns.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                errs.push(invalid(&p, involved_ns, "does not match event.namespace"));
            }
        } else if namespace != involved_ns {
            errs.push(invalid(&p, involved_ns, "does not match event.namespace"));
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            errs.push(invalid(&p, involved_ns, "does not match event.namespace"));
        }
        validate_new_event_fields(errs, obj, "reportingComponent", "message");
    }
}

/// Fields required of events that carry `eventTime` (the events.k8s.io shape).
pub(crate) fn validate_new_event_fields(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    controller_key: &str,
    note_key: &str,
) {
    let controller = str_of(obj, controller_key);
    let cp = Path::new(controller_key);
    if controller.is_empty() {
        errs.push(required(&cp, ""));
    } else {
        invalid_each(errs, &cp, controller, qualified_name_errors(controller));
    }
    for key in ["reportingInstance", "action", "reason"] {
        let v = str_of(obj, key);
        if v.is_empty() {
            errs.push(required(&Path::new(key), ""));
        } else if v.len() > 128 {
            errs.push(invalid(
                &Path::new(key),
                "",
                "can have at most 128 characters",
            ));
        }
    }
    if str_of(obj, note_key).len() > 1024 {
        errs.push(invalid(
            &Path::new(note_key),
            "",
            "can have at most 1024 characters",
        ));
    }
}

/// `ServiceAccount`
pub(crate) fn validate_service_account(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    _old: Option<&Value>,
) {
    for key in ["secrets", "imagePullSecrets"] {
        for (i, s) in arr_of(obj, key).iter().enumerate() {
            let name = str_of(s, "name");
            if !name.is_empty() {
                invalid_each(
                    errs,
                    &Path::new(key).index(i).child("name"),
                    name,
                    dns1123_subdomain_errors(name),
                );
            }
        }
    }
}

/// Standard resource names a quota may limit, beyond qualified extended names.
fn validate_quota_resource_name(errs: &mut Vec<FieldError>, name: &str, path: &Path) {
    invalid_each(errs, path, name, qualified_name_errors(name));
}

/// `ResourceQuota`
pub(crate) fn validate_resource_quota(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    _old: Option<&Value>,
) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    for (name, v) in map_of(spec, "hard") {
        let p = sp.child("hard").key(name);
        validate_quota_resource_name(errs, name, &p);
        non_negative_quantity(errs, &p, v);
    }
    const SCOPES: &[&str] = &[
        "BestEffort",
        "CrossNamespacePodAffinity",
        "NotBestEffort",
        "NotTerminating",
        "PriorityClass",
        "Terminating",
        "VolumeAttributesClass",
    ];
    for (i, scope) in arr_of(spec, "scopes").iter().enumerate() {
        let s = scope.as_str().unwrap_or("");
        if !SCOPES.contains(&s) {
            errs.push(not_supported(&sp.child("scopes").index(i), s, SCOPES));
        }
    }
    for key in ["hard", "used"] {
        for (name, v) in map_of(get(obj, "status"), key) {
            non_negative_quantity(errs, &Path::new("status").child(key).key(name), v);
        }
    }
}

/// `LimitRange`
pub(crate) fn validate_limit_range(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let limits = arr_of(get(obj, "spec"), "limits");
    for (i, item) in limits.iter().enumerate() {
        let p = Path::new("spec").child("limits").index(i);
        let ty = str_of(item, "type");
        const TYPES: &[&str] = &["Container", "PersistentVolumeClaim", "Pod"];
        if ty.is_empty() {
            errs.push(required(&p.child("type"), ""));
        } else if !TYPES.contains(&ty) {
            errs.push(not_supported(&p.child("type"), ty, TYPES));
        }
        if ty == "Pod" {
            for key in ["default", "defaultRequest"] {
                if !map_of(item, key).is_empty() {
                    errs.push(forbidden(
                        &p.child(key),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        let mut parsed = std::collections::HashMap::new();
        for key in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (name, v) in map_of(item, key) {
                if let Some(q) = non_negative_quantity(errs, &p.child(key).key(name), v) {
                    parsed.insert((key, name.as_str()), q);
                }
            }
        }
        let mut names: Vec<&str> = parsed.keys().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let q = |k: &str| parsed.get(&(k, name)).copied();
            let (max, min, def, def_req, ratio) = (
                q("max"),
                q("min"),
                q("default"),
                q("defaultRequest"),
                q("maxLimitRequestRatio"),
            );
            // (reported field, smaller, larger, message); the reported field's own
            // value is shown, as upstream does for most of these.
            let rules = [
                (
                    "min",
                    min,
                    max,
                    "min value {s} is greater than max value {l}",
                ),
                (
                    "defaultRequest",
                    min,
                    def_req,
                    "min value {s} is greater than default request value {l}",
                ),
                (
                    "defaultRequest",
                    def_req,
                    max,
                    "default request value {s} is greater than max value {l}",
                ),
                (
                    "defaultRequest",
                    def_req,
                    def,
                    "default request value {s} is greater than default limit value {l}",
                ),
                (
                    "default",
                    min,
                    def,
                    "min value {s} is greater than default value {l}",
                ),
                (
                    "default",
                    def,
                    max,
                    "default value {s} is greater than max value {l}",
                ),
            ];
            for (key, small, large, msg) in rules {
                if let (Some(s), Some(l)) = (small, large)
                    && s > l
                {
                    let shown = q(key).unwrap_or(s);
                    errs.push(invalid(
                        &p.child(key).key(name),
                        shown.to_string(),
                        &msg.replace("{s}", &s.to_string())
                            .replace("{l}", &l.to_string()),
                    ));
                }
            }
            if let Some(r) = ratio
                && r < crate::quantity::Quantity::from_i64(1)
            {
                errs.push(invalid(
                    &p.child("maxLimitRequestRatio").key(name),
                    r.to_string(),
                    &format!("ratio {r} is less than 1"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::KindCheck;
    use crate::validation::field::testing;
    use serde_json::json;

    /// [`testing::run`] taking the values, so the `json!` literals below need no `&`.
    fn run(check: KindCheck, obj: Value, old: Option<Value>) -> Vec<String> {
        testing::run(check, &obj, old.as_ref())
    }

    #[test]
    fn service_rules() {
        let f = run(
            validate_service,
            json!({"spec": {"type": "ClusterIP"}}),
            None,
        );
        assert_eq!(f, ["spec.ports: Required value"]);
        assert!(
            run(
                validate_service,
                json!({"spec": {"clusterIP": "None"}}),
                None
            )
            .is_empty()
        );
        assert!(
            run(
                validate_service,
                json!({"spec": {"type": "ExternalName", "externalName": "example.com."}}),
                None
            )
            .is_empty()
        );

        let f = run(
            validate_service,
            json!({"spec": {"type": "Foo", "ports": [
                {"port": 80, "protocol": "TCP"},
                {"name": "b", "port": 0, "protocol": "TCP", "nodePort": 30000}
            ]}}),
            None,
        );
        assert_eq!(
            f,
            [
                "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[0].name: Required value",
                "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]
        );
        let f = run(
            validate_service,
            json!({"spec": {"ports": [{"port": 80, "nodePort": 30000}]}}),
            None,
        );
        assert_eq!(
            f,
            ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
    }

    #[test]
    fn service_type_dependent_fields() {
        let f = run(
            validate_service,
            json!({"spec": {"type": "ExternalName", "externalName": "db.example",
                "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"]}}),
            None,
        );
        assert_eq!(
            f,
            ["spec.clusterIPs: Forbidden: may not be set for ExternalName services"]
        );
        let f = run(
            validate_service,
            json!({"spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}}),
            None,
        );
        assert_eq!(
            f,
            [
                "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
            ]
        );
        let f = run(
            validate_service,
            json!({"spec": {"type": "NodePort", "healthCheckNodePort": 30100, "ports": [{"port": 80}]}}),
            None,
        );
        assert_eq!(
            f,
            [
                "spec.healthCheckNodePort: Invalid value: 30100: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
            ]
        );
        assert!(
            run(
                validate_service,
                json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                    "healthCheckNodePort": 30100, "ports": [{"port": 80}]}}),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn service_cluster_ip_immutable() {
        let old = json!({"spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}});
        let new = json!({"spec": {"clusterIP": "10.0.0.2", "clusterIPs": ["10.0.0.2"], "ports": [{"port": 80}]}});
        let f = run(validate_service, new, Some(old.clone()));
        assert_eq!(
            f,
            ["spec.clusterIPs[0]: Invalid value: [\"10.0.0.2\"]: may not change once set"]
        );
        assert!(run(validate_service, old.clone(), Some(old)).is_empty());
    }

    #[test]
    fn config_map_and_secret() {
        let f = run(
            validate_config_map,
            json!({"data": {"a/b": "x", "ok.key": "y"}}),
            None,
        );
        assert_eq!(f.len(), 1);
        assert!(f[0].starts_with("data[a/b]: Invalid value: \"a/b\": a valid config key"));
        let big = "x".repeat(MAX_DATA_SIZE + 1);
        let f = run(validate_config_map, json!({"data": {"k": big}}), None);
        assert_eq!(f, [": Too long: may not be more than 1048576 bytes"]);

        let old = json!({"immutable": true, "data": {"a": "1"}});
        let f = run(
            validate_config_map,
            json!({"immutable": true, "data": {"a": "2"}}),
            Some(old.clone()),
        );
        assert_eq!(
            f,
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
        assert!(run(validate_config_map, old.clone(), Some(old)).is_empty());

        let f = run(
            validate_secret,
            json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}),
            None,
        );
        assert_eq!(f, ["data[tls.key]: Required value"]);
        assert!(
            run(
                validate_secret,
                json!({"type": "helm.sh/release.v1", "data": {"release": "YQ=="}}),
                None
            )
            .is_empty()
        );
        let f = run(
            validate_secret,
            json!({"type": "Opaque"}),
            Some(json!({"type": "kubernetes.io/tls"})),
        );
        assert_eq!(f, ["type: Invalid value: \"Opaque\": field is immutable"]);
        assert!(
            run(
                validate_secret,
                json!({"data": {"k": "YQ=="}, "stringData": {"k": "b"}}),
                None
            )
            .is_empty(),
            "stringData overrides data"
        );
        let f = run(
            validate_config_map,
            json!({"data": {"k": "a"}, "binaryData": {"k": "YQ=="}}),
            None,
        );
        assert_eq!(
            f,
            ["binaryData[k]: Invalid value: \"k\": duplicate of key present in data"]
        );
        assert_eq!(base64_decoded_len("YQ=="), 1);
        assert_eq!(base64_decoded_len("YWJj"), 3);
    }

    #[test]
    fn limit_range_ordering() {
        let f = run(
            validate_limit_range,
            json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "2"}}]}}),
            None,
        );
        assert_eq!(
            f,
            [
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"
            ]
        );
        let ok = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"cpu": "100m"}, "default": {"cpu": "1"}, "defaultRequest": {"cpu": "500m"}}]}});
        assert!(run(validate_limit_range, ok, None).is_empty());
    }

    #[test]
    fn events_and_nodes() {
        let f = run(
            validate_core_event,
            json!({"metadata": {"namespace": "a"}, "involvedObject": {"namespace": "b"}}),
            None,
        );
        assert_eq!(
            f,
            ["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]
        );
        assert!(
            run(
                validate_core_event,
                json!({"metadata": {"namespace": "a"}, "involvedObject": {"namespace": "a"}}),
                None
            )
            .is_empty()
        );

        let f = run(
            validate_node,
            json!({"spec": {"taints": [{"key": "k", "effect": "Sometimes"}, {"effect": "NoSchedule"}]}}),
            None,
        );
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(run(validate_node, json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}), None).is_empty());
    }
}
