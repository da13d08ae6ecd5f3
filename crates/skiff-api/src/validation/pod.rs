//! Pod spec validation: containers, volumes, probes, resources, scheduling fields,
//! and the narrow set of changes allowed when a pod is updated.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::field::{
    Path, arr_of, bool_of, duplicate, forbidden, get, has, int_of, invalid, invalid_each, map_of,
    non_negative, not_found, not_supported, one_of, required, same, str_of,
};
use super::meta::{unique_names, validate_annotations, validate_label_selector, validate_labels};
use super::names::{
    config_map_key_errors, dns1123_label_errors, dns1123_subdomain_errors, env_var_name_errors,
    ip_errors, port_name_errors, port_num_errors, qualified_name_errors,
};
use crate::quantity::Quantity;
use crate::registry::FieldError;

/// Every volume source key of `core/v1.Volume` (and of a PV's source).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
    "local",
];

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
const RESOURCE_FIELD_REFS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
const MAX_MODE: i64 = 0o777;

/// Where a container sits in the pod; the rules differ a little.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ContainerKind {
    Regular,
    Init,
}

/// Parses a quantity at `path`, reporting upstream's format error.
pub(crate) fn quantity_at(errs: &mut Vec<FieldError>, path: &Path, v: &Value) -> Option<Quantity> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    match text.parse::<Quantity>() {
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(invalid(path, text.as_str(), &e.to_string()));
            None
        }
    }
}

/// A non-negative quantity at `path`.
pub(crate) fn non_negative_quantity(
    errs: &mut Vec<FieldError>,
    path: &Path,
    v: &Value,
) -> Option<Quantity> {
    let q = quantity_at(errs, path, v)?;
    if q.is_negative() {
        errs.push(invalid(
            path,
            q.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    Some(q)
}

/// Validates a pod template (`spec.template` of workloads).
pub(crate) fn validate_pod_template(errs: &mut Vec<FieldError>, template: &Value, path: &Path) {
    let meta = get(template, "metadata");
    validate_labels(errs, map_of(meta, "labels"), &path.child("labels"));
    validate_annotations(
        errs,
        map_of(meta, "annotations"),
        &path.child("annotations"),
    );
    validate_pod_spec(errs, get(template, "spec"), &path.child("spec"));
}

/// Validates a `core/v1.PodSpec`.
pub(crate) fn validate_pod_spec(errs: &mut Vec<FieldError>, spec: &Value, path: &Path) {
    let volumes = arr_of(spec, "volumes");
    let volume_names = validate_volumes(errs, volumes, &path.child("volumes"));

    let containers = arr_of(spec, "containers");
    let init_containers = arr_of(spec, "initContainers");
    let host_network = bool_of(spec, "hostNetwork");
    if containers.is_empty() {
        errs.push(required(&path.child("containers"), ""));
    }
    let mut all_names = HashSet::new();
    for (i, c) in init_containers.iter().enumerate() {
        let p = path.child("initContainers").index(i);
        validate_container(
            errs,
            c,
            &p,
            ContainerKind::Init,
            &volume_names,
            host_network,
        );
        check_unique_container_name(errs, c, &p, &mut all_names);
    }
    for (i, c) in containers.iter().enumerate() {
        let p = path.child("containers").index(i);
        validate_container(
            errs,
            c,
            &p,
            ContainerKind::Regular,
            &volume_names,
            host_network,
        );
        check_unique_container_name(errs, c, &p, &mut all_names);
    }

    one_of(errs, spec, "restartPolicy", path, RESTART_POLICIES);
    one_of(errs, spec, "dnsPolicy", path, DNS_POLICIES);
    if str_of(spec, "dnsPolicy") == "None"
        && arr_of(get(spec, "dnsConfig"), "nameservers").is_empty()
    {
        errs.push(required(
            &path.child("dnsConfig"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    for (i, ns) in arr_of(get(spec, "dnsConfig"), "nameservers")
        .iter()
        .enumerate()
    {
        let ns = ns.as_str().unwrap_or("");
        invalid_each(
            errs,
            &path.child("dnsConfig").child("nameservers").index(i),
            ns,
            ip_errors(ns),
        );
    }
    one_of(
        errs,
        spec,
        "preemptionPolicy",
        path,
        &["Never", "PreemptLowerPriority"],
    );
    validate_labels(
        errs,
        map_of(spec, "nodeSelector"),
        &path.child("nodeSelector"),
    );

    for key in ["serviceAccountName", "nodeName"] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            invalid_each(errs, &path.child(key), v, dns1123_subdomain_errors(v));
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            invalid_each(errs, &path.child(key), v, dns1123_label_errors(v));
        }
    }
    if let Some(ads) = int_of(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        errs.push(invalid(
            &path.child("activeDeadlineSeconds"),
            ads,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    for (i, alias) in arr_of(spec, "hostAliases").iter().enumerate() {
        let ip = str_of(alias, "ip");
        invalid_each(
            errs,
            &path.child("hostAliases").index(i).child("ip"),
            ip,
            ip_errors(ip),
        );
    }
    validate_tolerations(
        errs,
        arr_of(spec, "tolerations"),
        &path.child("tolerations"),
    );
    validate_affinity(errs, get(spec, "affinity"), &path.child("affinity"));
    validate_topology_spread(
        errs,
        arr_of(spec, "topologySpreadConstraints"),
        &path.child("topologySpreadConstraints"),
    );
    let gates = arr_of(spec, "schedulingGates");
    for (i, gate) in gates.iter().enumerate() {
        let name = str_of(gate, "name");
        invalid_each(
            errs,
            &path.child("schedulingGates").index(i).child("name"),
            name,
            qualified_name_errors(name),
        );
    }
    unique_names(errs, gates, "name", &path.child("schedulingGates"));
    let sc = get(spec, "securityContext");
    one_of(
        errs,
        sc,
        "fsGroupChangePolicy",
        &path.child("securityContext"),
        &["Always", "OnRootMismatch"],
    );
}

fn check_unique_container_name<'a>(
    errs: &mut Vec<FieldError>,
    c: &'a Value,
    path: &Path,
    seen: &mut HashSet<&'a str>,
) {
    let name = str_of(c, "name");
    if !name.is_empty() && !seen.insert(name) {
        errs.push(duplicate(&path.child("name"), name));
    }
}

fn validate_container(
    errs: &mut Vec<FieldError>,
    c: &Value,
    path: &Path,
    kind: ContainerKind,
    volumes: &HashSet<String>,
    host_network: bool,
) {
    let name = str_of(c, "name");
    if name.is_empty() {
        errs.push(required(&path.child("name"), ""));
    } else {
        invalid_each(errs, &path.child("name"), name, dns1123_label_errors(name));
    }
    let image = str_of(c, "image");
    if image.is_empty() {
        errs.push(required(&path.child("image"), ""));
    } else if image.trim() != image {
        errs.push(invalid(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    one_of(errs, c, "imagePullPolicy", path, PULL_POLICIES);
    one_of(
        errs,
        c,
        "terminationMessagePolicy",
        path,
        &["File", "FallbackToLogsOnError"],
    );
    one_of(errs, c, "restartPolicy", path, RESTART_POLICIES);

    validate_container_ports(errs, arr_of(c, "ports"), &path.child("ports"), host_network);
    validate_env(errs, arr_of(c, "env"), &path.child("env"));
    for (i, from) in arr_of(c, "envFrom").iter().enumerate() {
        let p = path.child("envFrom").index(i);
        let sources = ["configMapRef", "secretRef"]
            .iter()
            .filter(|k| has(from, k))
            .count();
        if sources == 0 {
            errs.push(invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        for key in ["configMapRef", "secretRef"] {
            if has(from, key) && str_of(get(from, key), "name").is_empty() {
                errs.push(required(&p.child(key).child("name"), ""));
            }
        }
    }
    validate_volume_mounts(
        errs,
        arr_of(c, "volumeMounts"),
        &path.child("volumeMounts"),
        volumes,
    );
    validate_resources(errs, get(c, "resources"), &path.child("resources"));

    let sidecar = kind == ContainerKind::Init && str_of(c, "restartPolicy") == "Always";
    for (key, probe_kind) in [
        ("livenessProbe", ProbeKind::Liveness),
        ("readinessProbe", ProbeKind::Readiness),
        ("startupProbe", ProbeKind::Startup),
    ] {
        let probe = get(c, key);
        if probe.is_null() {
            continue;
        }
        if kind == ContainerKind::Init && !sidecar {
            errs.push(forbidden(
                &path.child(key),
                "may not be set for init containers without restartPolicy=Always",
            ));
        } else {
            validate_probe(errs, probe, &path.child(key), probe_kind);
        }
    }
    let lifecycle = get(c, "lifecycle");
    if !lifecycle.is_null() {
        if kind == ContainerKind::Init && !sidecar {
            errs.push(forbidden(
                &path.child("lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
        } else {
            for key in ["postStart", "preStop"] {
                let handler = get(lifecycle, key);
                if !handler.is_null() {
                    validate_handler(
                        errs,
                        handler,
                        &path.child("lifecycle").child(key),
                        &["exec", "httpGet", "tcpSocket", "sleep"],
                    );
                }
            }
        }
    }
    let sc = get(c, "securityContext");
    if sc.get("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false)
        && bool_of(sc, "privileged")
    {
        errs.push(invalid(
            &path.child("securityContext"),
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
}

fn validate_container_ports(
    errs: &mut Vec<FieldError>,
    ports: &[Value],
    path: &Path,
    host_network: bool,
) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                invalid_each(errs, &p.child("name"), name, msgs);
            } else if !names.insert(name) {
                errs.push(duplicate(&p.child("name"), name));
            }
        }
        let container_port = int_of(port, "containerPort").unwrap_or(0);
        if container_port == 0 {
            errs.push(required(&p.child("containerPort"), ""));
        } else {
            for m in port_num_errors(container_port) {
                errs.push(invalid(&p.child("containerPort"), container_port, &m));
            }
        }
        let host_port = int_of(port, "hostPort").unwrap_or(0);
        if host_port != 0 {
            for m in port_num_errors(host_port) {
                errs.push(invalid(&p.child("hostPort"), host_port, &m));
            }
            if host_network && host_port != container_port {
                errs.push(invalid(
                    &p.child("hostPort"),
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        one_of(errs, port, "protocol", &p, PROTOCOLS);
        let host_ip = str_of(port, "hostIP");
        if !host_ip.is_empty() {
            invalid_each(errs, &p.child("hostIP"), host_ip, ip_errors(host_ip));
        }
    }
}

fn validate_env(errs: &mut Vec<FieldError>, env: &[Value], path: &Path) {
    for (i, var) in env.iter().enumerate() {
        let p = path.index(i);
        let name = str_of(var, "name");
        if name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else {
            invalid_each(errs, &p.child("name"), name, env_var_name_errors(name));
        }
        let from = get(var, "valueFrom");
        if from.is_null() {
            continue;
        }
        let vp = p.child("valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
            "fileKeyRef",
        ]
        .into_iter()
        .filter(|k| has(from, k))
        .collect();
        if sources.is_empty() {
            errs.push(invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if sources.len() > 1 {
            errs.push(invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if !str_of(var, "value").is_empty() {
            errs.push(invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        if has(from, "fieldRef") {
            validate_field_ref(
                errs,
                get(from, "fieldRef"),
                &vp.child("fieldRef"),
                ENV_FIELD_PATHS,
            );
        }
        if has(from, "resourceFieldRef") {
            validate_resource_field_ref(
                errs,
                get(from, "resourceFieldRef"),
                &vp.child("resourceFieldRef"),
            );
        }
        for key in ["configMapKeyRef", "secretKeyRef"] {
            if has(from, key) {
                let r = get(from, key);
                let rp = vp.child(key);
                if str_of(r, "name").is_empty() {
                    errs.push(required(&rp.child("name"), ""));
                }
                let k = str_of(r, "key");
                if k.is_empty() {
                    errs.push(required(&rp.child("key"), ""));
                } else {
                    invalid_each(errs, &rp.child("key"), k, config_map_key_errors(k));
                }
            }
        }
    }
}

/// `fieldRef` of an env var or of a downward API volume item; both also accept
/// `metadata.labels['key']` and `metadata.annotations['key']`.
fn validate_field_ref(errs: &mut Vec<FieldError>, r: &Value, path: &Path, supported: &[&str]) {
    let field_path = str_of(r, "fieldPath");
    if field_path.is_empty() {
        errs.push(required(&path.child("fieldPath"), ""));
        return;
    }
    let subscripted = ["metadata.labels", "metadata.annotations"]
        .iter()
        .any(|prefix| {
            field_path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|key| !key.is_empty())
        });
    if !supported.contains(&field_path) && !subscripted {
        errs.push(not_supported(
            &path.child("fieldPath"),
            field_path,
            supported,
        ));
    }
}

fn validate_resource_field_ref(errs: &mut Vec<FieldError>, r: &Value, path: &Path) {
    let resource = str_of(r, "resource");
    if resource.is_empty() {
        errs.push(required(&path.child("resource"), ""));
    } else if !RESOURCE_FIELD_REFS.contains(&resource)
        && !resource.starts_with("limits.hugepages-")
        && !resource.starts_with("requests.hugepages-")
    {
        errs.push(not_supported(
            &path.child("resource"),
            resource,
            RESOURCE_FIELD_REFS,
        ));
    }
    if has(r, "divisor") {
        quantity_at(errs, &path.child("divisor"), get(r, "divisor"));
    }
}

fn validate_volume_mounts(
    errs: &mut Vec<FieldError>,
    mounts: &[Value],
    path: &Path,
    volumes: &HashSet<String>,
) {
    let mut mount_paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = path.index(i);
        let name = str_of(m, "name");
        if name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else if !volumes.contains(name) {
            errs.push(not_found(&p.child("name"), name));
        }
        let mount_path = str_of(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(required(&p.child("mountPath"), ""));
        } else if !mount_paths.insert(mount_path) {
            errs.push(invalid(&p.child("mountPath"), mount_path, "must be unique"));
        }
        let sub_path = str_of(m, "subPath");
        if !sub_path.is_empty() {
            validate_local_descending_path(errs, sub_path, &p.child("subPath"));
        }
        if !sub_path.is_empty() && !str_of(m, "subPathExpr").is_empty() {
            errs.push(invalid(
                &p.child("subPathExpr"),
                str_of(m, "subPathExpr"),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        one_of(
            errs,
            m,
            "mountPropagation",
            &p,
            &["Bidirectional", "HostToContainer", "None"],
        );
        one_of(
            errs,
            m,
            "recursiveReadOnly",
            &p,
            &["Disabled", "Enabled", "IfPossible"],
        );
    }
}

/// A path that must stay inside its volume: relative and without `..` segments.
fn validate_local_descending_path(errs: &mut Vec<FieldError>, p: &str, path: &Path) {
    if p.starts_with('/') {
        errs.push(invalid(path, p, "must be a relative path"));
    }
    if p.split(['/', '\\']).any(|seg| seg == "..") {
        errs.push(invalid(path, p, "must not contain '..'"));
    }
}

/// Validates `resources` of a container: quantities, names, and requests ≤ limits.
pub(crate) fn validate_resources(errs: &mut Vec<FieldError>, res: &Value, path: &Path) {
    let limits = map_of(res, "limits");
    let requests = map_of(res, "requests");
    let mut parsed_limits = Vec::new();
    for (name, v) in limits {
        let p = path.child("limits").key(name);
        validate_container_resource_name(errs, name, &p);
        if let Some(q) = non_negative_quantity(errs, &p, v) {
            parsed_limits.push((name.as_str(), q));
        }
    }
    for (name, v) in requests {
        let p = path.child("requests").key(name);
        validate_container_resource_name(errs, name, &p);
        let Some(request) = non_negative_quantity(errs, &p, v) else {
            continue;
        };
        let limit = parsed_limits
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, q)| q);
        let overcommit = overcommit_allowed(name);
        match limit {
            Some(limit) if overcommit && request > *limit => errs.push(invalid(
                &p,
                request.to_string(),
                &format!("must be less than or equal to {name} limit of {limit}"),
            )),
            Some(limit) if !overcommit && request != *limit => errs.push(invalid(
                &p,
                request.to_string(),
                &format!("must be equal to {name} limit of {limit}"),
            )),
            None if !overcommit => errs.push(forbidden(
                &path.child("limits"),
                "Limit must be set for non overcommitable resources",
            )),
            _ => {}
        }
    }
}

/// Native resources (`cpu`, `kubernetes.io/...`) may be overcommitted; extended
/// resources and huge pages may not.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

fn validate_container_resource_name(errs: &mut Vec<FieldError>, name: &str, path: &Path) {
    let msgs = qualified_name_errors(name);
    if !msgs.is_empty() {
        invalid_each(errs, path, name, msgs);
    } else if !name.contains('/')
        && !matches!(name, "cpu" | "memory" | "ephemeral-storage")
        && !name.starts_with("hugepages-")
    {
        errs.push(invalid(
            path,
            name,
            "must be a standard resource type or fully qualified",
        ));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn validate_probe(errs: &mut Vec<FieldError>, probe: &Value, path: &Path, kind: ProbeKind) {
    validate_handler(errs, probe, path, &["exec", "httpGet", "tcpSocket", "grpc"]);
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(errs, probe, key, path);
    }
    if kind != ProbeKind::Readiness
        && let Some(n) = int_of(probe, "successThreshold")
        && n != 1
    {
        errs.push(invalid(&path.child("successThreshold"), n, "must be 1"));
    }
    if let Some(n) = int_of(probe, "terminationGracePeriodSeconds") {
        if kind == ProbeKind::Readiness {
            errs.push(invalid(
                &path.child("terminationGracePeriodSeconds"),
                n,
                "must not be set for readinessProbes",
            ));
        } else if n <= 0 {
            errs.push(invalid(
                &path.child("terminationGracePeriodSeconds"),
                n,
                "must be greater than 0",
            ));
        }
    }
}

/// Exactly one handler of `kinds` must be set; each is then checked.
fn validate_handler(errs: &mut Vec<FieldError>, handler: &Value, path: &Path, kinds: &[&str]) {
    let mut count = 0;
    for kind in kinds {
        if !has(handler, kind) {
            continue;
        }
        count += 1;
        let p = path.child(kind);
        if count > 1 {
            errs.push(forbidden(&p, "may not specify more than 1 handler type"));
            continue;
        }
        let h = get(handler, kind);
        match *kind {
            "exec" if arr_of(h, "command").is_empty() => {
                errs.push(required(&p.child("command"), ""));
            }
            "httpGet" => {
                validate_port_num_or_name(errs, get(h, "port"), &p.child("port"));
                one_of(errs, h, "scheme", &p, &["HTTP", "HTTPS"]);
            }
            "tcpSocket" => validate_port_num_or_name(errs, get(h, "port"), &p.child("port")),
            "grpc" => {
                let port = int_of(h, "port").unwrap_or(0);
                for m in port_num_errors(port) {
                    errs.push(invalid(&p.child("port"), port, &m));
                }
            }
            "sleep" => non_negative(errs, h, "seconds", &p),
            _ => {}
        }
    }
    if count == 0 {
        errs.push(required(path, "must specify a handler type"));
    }
}

/// An int-or-string port: a number in 1..=65535 or an IANA service name.
pub(crate) fn validate_port_num_or_name(errs: &mut Vec<FieldError>, port: &Value, path: &Path) {
    match port {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            for m in port_num_errors(n) {
                errs.push(invalid(path, n, &m));
            }
        }
        Value::String(s) if s.is_empty() => errs.push(required(path, "")),
        Value::String(s) => invalid_each(errs, path, s, port_name_errors(s)),
        _ => errs.push(required(path, "")),
    }
}

/// Validates volumes and returns their names, which mounts must refer to.
fn validate_volumes(errs: &mut Vec<FieldError>, volumes: &[Value], path: &Path) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = path.index(i);
        let name = str_of(vol, "name");
        if name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else {
            let msgs = dns1123_label_errors(name);
            if !msgs.is_empty() {
                invalid_each(errs, &p.child("name"), name, msgs);
            } else if !names.insert(name.to_string()) {
                errs.push(duplicate(&p.child("name"), name));
            }
        }
        validate_volume_source(errs, vol, &p);
    }
    names
}

/// Checks that exactly one volume source is set and validates it; also used for a
/// PersistentVolume's spec, whose sources are a subset.
pub(crate) fn validate_volume_source(errs: &mut Vec<FieldError>, vol: &Value, path: &Path) {
    let mut count = 0;
    for key in VOLUME_SOURCES {
        if !has(vol, key) {
            continue;
        }
        count += 1;
        let p = path.child(key);
        if count > 1 {
            errs.push(forbidden(&p, "may not specify more than 1 volume type"));
            continue;
        }
        let src = get(vol, key);
        match *key {
            "hostPath" => {
                let hp = str_of(src, "path");
                if hp.is_empty() {
                    errs.push(required(&p.child("path"), ""));
                } else if hp.split('/').any(|seg| seg == "..") {
                    errs.push(invalid(&p.child("path"), hp, "must not contain '..'"));
                }
                if let Some(t) = src.get("type").and_then(Value::as_str)
                    && !HOST_PATH_TYPES.contains(&t)
                {
                    errs.push(not_supported(&p.child("type"), t, HOST_PATH_TYPES));
                }
            }
            "emptyDir" if has(src, "sizeLimit") => {
                non_negative_quantity(errs, &p.child("sizeLimit"), get(src, "sizeLimit"));
            }
            "secret" => {
                if str_of(src, "secretName").is_empty() {
                    errs.push(required(&p.child("secretName"), ""));
                }
                validate_mode(errs, src, "defaultMode", &p);
                validate_key_to_paths(errs, arr_of(src, "items"), &p.child("items"));
            }
            "configMap" => {
                if str_of(src, "name").is_empty() {
                    errs.push(required(&p.child("name"), ""));
                }
                validate_mode(errs, src, "defaultMode", &p);
                validate_key_to_paths(errs, arr_of(src, "items"), &p.child("items"));
            }
            "persistentVolumeClaim" if str_of(src, "claimName").is_empty() => {
                errs.push(required(&p.child("claimName"), ""));
            }
            "downwardAPI" => {
                validate_mode(errs, src, "defaultMode", &p);
                validate_downward_api_items(errs, arr_of(src, "items"), &p.child("items"));
            }
            "projected" => {
                validate_mode(errs, src, "defaultMode", &p);
                validate_projections(errs, arr_of(src, "sources"), &p.child("sources"));
            }
            "nfs" => {
                if str_of(src, "server").is_empty() {
                    errs.push(required(&p.child("server"), ""));
                }
                let np = str_of(src, "path");
                if np.is_empty() {
                    errs.push(required(&p.child("path"), ""));
                } else if !np.starts_with('/') {
                    errs.push(invalid(&p.child("path"), np, "must be an absolute path"));
                }
            }
            "csi" if str_of(src, "driver").is_empty() => {
                errs.push(required(&p.child("driver"), ""));
            }
            "local" if str_of(src, "path").is_empty() => {
                errs.push(required(&p.child("path"), ""));
            }
            "ephemeral" => {
                let template = get(src, "volumeClaimTemplate");
                if template.is_null() {
                    errs.push(required(&p.child("volumeClaimTemplate"), ""));
                } else {
                    super::storage::validate_pvc_spec(
                        errs,
                        get(template, "spec"),
                        &p.child("volumeClaimTemplate").child("spec"),
                    );
                }
            }
            "image" => {
                one_of(errs, src, "pullPolicy", &p, PULL_POLICIES);
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(required(path, "must specify a volume type"));
    }
}

fn validate_mode(errs: &mut Vec<FieldError>, src: &Value, key: &str, path: &Path) {
    if let Some(mode) = int_of(src, key)
        && !(0..=MAX_MODE).contains(&mode)
    {
        errs.push(invalid(
            &path.child(key),
            mode,
            "must be a number between 0 and 0777 (octal), both inclusive",
        ));
    }
}

fn validate_item_path(errs: &mut Vec<FieldError>, item: &Value, path: &Path) {
    let p = str_of(item, "path");
    if p.is_empty() {
        errs.push(required(&path.child("path"), ""));
    } else {
        validate_local_descending_path(errs, p, &path.child("path"));
    }
    validate_mode(errs, item, "mode", path);
}

fn validate_key_to_paths(errs: &mut Vec<FieldError>, items: &[Value], path: &Path) {
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        if str_of(item, "key").is_empty() {
            errs.push(required(&p.child("key"), ""));
        }
        validate_item_path(errs, item, &p);
    }
}

fn validate_downward_api_items(errs: &mut Vec<FieldError>, items: &[Value], path: &Path) {
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        validate_item_path(errs, item, &p);
        match (has(item, "fieldRef"), has(item, "resourceFieldRef")) {
            (true, true) => errs.push(invalid(
                &p,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (false, false) => errs.push(required(
                &p,
                "one of fieldRef and resourceFieldRef is required",
            )),
            (true, false) => validate_field_ref(
                errs,
                get(item, "fieldRef"),
                &p.child("fieldRef"),
                VOLUME_FIELD_PATHS,
            ),
            (false, true) => validate_resource_field_ref(
                errs,
                get(item, "resourceFieldRef"),
                &p.child("resourceFieldRef"),
            ),
        }
    }
}

fn validate_projections(errs: &mut Vec<FieldError>, sources: &[Value], path: &Path) {
    const KINDS: &[&str] = &[
        "secret",
        "configMap",
        "downwardAPI",
        "serviceAccountToken",
        "clusterTrustBundle",
        "podCertificate",
    ];
    for (i, source) in sources.iter().enumerate() {
        let p = path.index(i);
        let set: Vec<&&str> = KINDS.iter().filter(|k| has(source, k)).collect();
        if set.len() > 1 {
            errs.push(forbidden(
                &p,
                "may not specify more than 1 volume type per source",
            ));
        }
        for kind in set {
            let src = get(source, kind);
            let sp = p.child(kind);
            match *kind {
                "secret" | "configMap" => {
                    validate_key_to_paths(errs, arr_of(src, "items"), &sp.child("items"))
                }
                "downwardAPI" => {
                    validate_downward_api_items(errs, arr_of(src, "items"), &sp.child("items"))
                }
                "serviceAccountToken" => {
                    if str_of(src, "path").is_empty() {
                        errs.push(required(&sp.child("path"), ""));
                    }
                    if let Some(exp) = int_of(src, "expirationSeconds") {
                        if exp < 600 {
                            errs.push(invalid(
                                &sp.child("expirationSeconds"),
                                exp,
                                "may not specify a duration less than 10 minutes",
                            ));
                        } else if exp > 1 << 32 {
                            errs.push(invalid(
                                &sp.child("expirationSeconds"),
                                exp,
                                "may not specify a duration larger than 2^32 seconds",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Validates tolerations (pods) and is reused for nothing else.
fn validate_tolerations(errs: &mut Vec<FieldError>, tolerations: &[Value], path: &Path) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = str_of(t, "key");
        if !key.is_empty() {
            invalid_each(errs, &p.child("key"), key, qualified_name_errors(key));
        }
        let operator = str_of(t, "operator");
        if key.is_empty() && operator != "Exists" {
            errs.push(invalid(
                &p.child("operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if has(t, "tolerationSeconds") && str_of(t, "effect") != "NoExecute" {
            errs.push(invalid(
                &p.child("effect"),
                str_of(t, "effect"),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = str_of(t, "value");
        match operator {
            "" | "Equal" => {
                invalid_each(
                    errs,
                    &p.child("value"),
                    value,
                    super::names::label_value_errors(value),
                );
            }
            "Exists" if !value.is_empty() => {
                errs.push(invalid(
                    &p.child("operator"),
                    value,
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
            "Exists" => {}
            other => errs.push(not_supported(
                &p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        one_of(errs, t, "effect", &p, TAINT_EFFECTS);
    }
}

pub(crate) fn validate_node_selector_terms(
    errs: &mut Vec<FieldError>,
    terms: &[Value],
    path: &Path,
) {
    for (i, term) in terms.iter().enumerate() {
        let p = path.index(i);
        for (key, allow_values) in [("matchExpressions", true), ("matchFields", true)] {
            for (j, req) in arr_of(term, key).iter().enumerate() {
                let rp = p.child(key).index(j);
                let values = arr_of(req, "values");
                match str_of(req, "operator") {
                    "In" | "NotIn" if values.is_empty() && allow_values => errs.push(required(
                        &rp.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    )),
                    "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(forbidden(
                        &rp.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )),
                    "Gt" | "Lt" if values.len() != 1 => errs.push(required(
                        &rp.child("values"),
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    )),
                    "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                    op => errs.push(invalid(
                        &rp.child("operator"),
                        op,
                        "not a valid selector operator",
                    )),
                }
                if key == "matchExpressions" {
                    let k = str_of(req, "key");
                    invalid_each(errs, &rp.child("key"), k, qualified_name_errors(k));
                }
            }
        }
    }
}

fn validate_affinity(errs: &mut Vec<FieldError>, affinity: &Value, path: &Path) {
    let node = get(affinity, "nodeAffinity");
    let required_ns = get(node, "requiredDuringSchedulingIgnoredDuringExecution");
    if !required_ns.is_null() {
        let p = path
            .child("nodeAffinity")
            .child("requiredDuringSchedulingIgnoredDuringExecution");
        let terms = arr_of(required_ns, "nodeSelectorTerms");
        if terms.is_empty() {
            errs.push(required(
                &p.child("nodeSelectorTerms"),
                "must have at least one node selector term",
            ));
        }
        validate_node_selector_terms(errs, terms, &p.child("nodeSelectorTerms"));
    }
    for (i, pref) in arr_of(node, "preferredDuringSchedulingIgnoredDuringExecution")
        .iter()
        .enumerate()
    {
        let p = path
            .child("nodeAffinity")
            .child("preferredDuringSchedulingIgnoredDuringExecution")
            .index(i);
        validate_weight(errs, pref, &p);
        validate_node_selector_terms(
            errs,
            std::slice::from_ref(get(pref, "preference")),
            &p.child("preference"),
        );
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let a = get(affinity, kind);
        let p = path.child(kind);
        for (i, term) in arr_of(a, "requiredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            validate_pod_affinity_term(
                errs,
                term,
                &p.child("requiredDuringSchedulingIgnoredDuringExecution")
                    .index(i),
            );
        }
        for (i, w) in arr_of(a, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            let wp = p
                .child("preferredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            validate_weight(errs, w, &wp);
            validate_pod_affinity_term(
                errs,
                get(w, "podAffinityTerm"),
                &wp.child("podAffinityTerm"),
            );
        }
    }
}

fn validate_weight(errs: &mut Vec<FieldError>, v: &Value, path: &Path) {
    let weight = int_of(v, "weight").unwrap_or(0);
    if !(1..=100).contains(&weight) {
        errs.push(invalid(
            &path.child("weight"),
            weight,
            "must be in the range 1-100",
        ));
    }
}

fn validate_pod_affinity_term(errs: &mut Vec<FieldError>, term: &Value, path: &Path) {
    for key in ["labelSelector", "namespaceSelector"] {
        let sel = get(term, key);
        if !sel.is_null() {
            validate_label_selector(errs, sel, &path.child(key));
        }
    }
    let topology_key = str_of(term, "topologyKey");
    if topology_key.is_empty() {
        errs.push(required(&path.child("topologyKey"), "can not be empty"));
    } else {
        invalid_each(
            errs,
            &path.child("topologyKey"),
            topology_key,
            qualified_name_errors(topology_key),
        );
    }
}

fn validate_topology_spread(errs: &mut Vec<FieldError>, constraints: &[Value], path: &Path) {
    for (i, c) in constraints.iter().enumerate() {
        let p = path.index(i);
        let skew = int_of(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(invalid(
                &p.child("maxSkew"),
                skew,
                "must be greater than zero",
            ));
        }
        let key = str_of(c, "topologyKey");
        if key.is_empty() {
            errs.push(required(&p.child("topologyKey"), "can not be empty"));
        } else {
            invalid_each(
                errs,
                &p.child("topologyKey"),
                key,
                qualified_name_errors(key),
            );
        }
        match str_of(c, "whenUnsatisfiable") {
            "DoNotSchedule" | "ScheduleAnyway" => {}
            "" => errs.push(required(&p.child("whenUnsatisfiable"), "")),
            other => errs.push(not_supported(
                &p.child("whenUnsatisfiable"),
                other,
                &["DoNotSchedule", "ScheduleAnyway"],
            )),
        }
        if let Some(min) = int_of(c, "minDomains")
            && min <= 0
        {
            errs.push(invalid(
                &p.child("minDomains"),
                min,
                "must be greater than 0",
            ));
        }
        let sel = get(c, "labelSelector");
        if !sel.is_null() {
            validate_label_selector(errs, sel, &p.child("labelSelector"));
        }
    }
}

/// The message upstream gives when a pod update touches a field that may not change.
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Rules for updating a pod's spec: only images, a shorter deadline, added
/// tolerations, removed scheduling gates and a few more may change. Container
/// resources change only through the `resize` subresource
/// ([`super::core::validate_pod_resize`]).
pub(crate) fn validate_pod_spec_update(errs: &mut Vec<FieldError>, new: &Value, old: &Value) {
    let path = Path::new("spec");
    for key in ["containers", "initContainers"] {
        let (new_list, old_list) = (arr_of(new, key), arr_of(old, key));
        // Images (required, no surrounding blanks) are checked as on create.
        if new_list.len() != old_list.len() {
            errs.push(forbidden(
                &path.child(key),
                "pod updates may not add or remove containers",
            ));
            return;
        }
    }
    let new_ads = int_of(new, "activeDeadlineSeconds");
    let old_ads = int_of(old, "activeDeadlineSeconds");
    let ads_path = path.child("activeDeadlineSeconds");
    match (old_ads, new_ads) {
        (_, Some(n)) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(invalid(
                &ads_path,
                n,
                &format!("must be between 0 and {}, inclusive", i32::MAX),
            ));
            return;
        }
        (Some(o), Some(n)) if n > o => {
            errs.push(invalid(
                &ads_path,
                n,
                "must be less than or equal to previous value",
            ));
            return;
        }
        (Some(_), None) => errs.push(invalid(
            &ads_path,
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    let old_tolerations = arr_of(old, "tolerations");
    let new_tolerations = arr_of(new, "tolerations");
    for t in old_tolerations {
        let kept = new_tolerations.iter().any(|n| {
            let mut a = n.clone();
            let mut b = t.clone();
            if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object_mut()) {
                a.remove("tolerationSeconds");
                b.remove("tolerationSeconds");
            }
            same(&a, &b)
        });
        if !kept {
            errs.push(forbidden(
                &path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    let old_gates = arr_of(old, "schedulingGates");
    for gate in arr_of(new, "schedulingGates") {
        if !old_gates.contains(gate) {
            errs.push(forbidden(
                &path.child("schedulingGates"),
                "only deletion is allowed, but found new scheduling gate",
            ));
            break;
        }
    }

    let mut a = new.clone();
    let mut b = old.clone();
    neutralize_mutable(&mut a, old);
    neutralize_mutable(&mut b, old);
    if !same(&a, &b) {
        errs.push(forbidden(&path, POD_UPDATE_FORBIDDEN));
    }
}

/// Overwrites, in `spec`, the fields a pod update may change with their old
/// values. Container resources count as unchanged when they are equal as
/// quantities (`500m` and `0.5`), as upstream compares them semantically.
fn neutralize_mutable(spec: &mut Value, old: &Value) {
    let Some(obj) = spec.as_object_mut() else {
        return;
    };
    for key in [
        "activeDeadlineSeconds",
        "tolerations",
        "schedulingGates",
        "ephemeralContainers",
    ] {
        obj.remove(key);
    }
    // A negative grace period may become 1; any other change is forbidden.
    if int_of(old, "terminationGracePeriodSeconds").is_some_and(|g| g < 0)
        && obj
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(1)
    {
        obj.insert(
            "terminationGracePeriodSeconds".into(),
            get(old, "terminationGracePeriodSeconds").clone(),
        );
    }
    // While the pod is gated, scheduling constraints may be tightened; comparing
    // them exactly would refuse what upstream accepts.
    if !arr_of(old, "schedulingGates").is_empty() {
        obj.remove("nodeSelector");
        obj.remove("affinity");
    }
    for key in ["containers", "initContainers"] {
        let old_list = arr_of(old, key);
        if let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) {
            for (i, c) in list.iter_mut().enumerate() {
                let old_resources = old_list.get(i).map(|o| get(o, "resources"));
                let Some(c) = c.as_object_mut() else {
                    continue;
                };
                c.remove("image");
                if let Some(old_resources) = old_resources
                    && same_resources(c.get("resources").unwrap_or(&Value::Null), old_resources)
                {
                    c.insert("resources".into(), old_resources.clone());
                }
            }
        }
    }
}

/// Whether two `ResourceRequirements` are equal, comparing quantities by
/// value (an absent map equals an empty one).
pub(crate) fn same_resources(a: &Value, b: &Value) -> bool {
    let same_list = |key: &str| {
        let (x, y) = (map_of(a, key), map_of(b, key));
        x.len() == y.len()
            && x.iter()
                .all(|(name, q)| y.get(name).is_some_and(|other| same_quantity(q, other)))
    };
    let rest = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("limits");
            m.remove("requests");
        }
        v
    };
    same_list("limits") && same_list("requests") && same(&rest(a), &rest(b))
}

/// Whether two quantities in JSON are equal by value (by text when either
/// does not parse).
pub(crate) fn same_quantity(a: &Value, b: &Value) -> bool {
    let parse = |v: &Value| v.as_str().and_then(|s| s.parse::<Quantity>().ok());
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Extracts the labels of a template, empty when absent.
pub(crate) fn template_labels(template: &Value) -> &Map<String, Value> {
    map_of(get(template, "metadata"), "labels")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::field::testing::lines;
    use serde_json::json;

    fn spec_errs(spec: Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_spec(&mut errs, &spec, &Path::new("spec"));
        errs
    }

    #[test]
    fn containers_required() {
        assert_eq!(
            lines(&spec_errs(json!({}))),
            ["spec.containers: Required value"]
        );
    }

    #[test]
    fn container_rules() {
        let errs = spec_errs(json!({
            "containers": [
                {"name": "web", "image": "nginx"},
                {"name": "web", "image": ""},
                {"name": "Bad_Name", "image": "x", "imagePullPolicy": "Sometimes"}
            ]
        }));
        let f = lines(&errs);
        assert!(
            f.contains(&"spec.containers[1].image: Required value".to_string()),
            "{f:?}"
        );
        assert!(
            f.contains(&"spec.containers[1].name: Duplicate value: \"web\"".to_string()),
            "{f:?}"
        );
        assert!(f.iter().any(|e| e.starts_with(
            "spec.containers[2].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
        )));
        assert!(f.contains(&"spec.containers[2].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"".to_string()), "{f:?}");
    }

    #[test]
    fn ports_and_env() {
        let errs = spec_errs(json!({
            "containers": [{
                "name": "c", "image": "x",
                "ports": [
                    {"containerPort": 0},
                    {"containerPort": 70000, "name": "HTTP"},
                    {"containerPort": 80, "name": "http", "protocol": "ICMP"},
                    {"containerPort": 81, "name": "http"}
                ],
                "env": [
                    {"name": "A=B"},
                    {"name": "OK", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "BAD", "valueFrom": {"fieldRef": {"fieldPath": "spec.foo"}}}
                ]
            }]
        }));
        let f = lines(&errs);
        let expect = [
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[3].name: Duplicate value: \"http\"",
            "spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
        ];
        for e in expect {
            assert!(f.contains(&e.to_string()), "missing {e}: {f:?}");
        }
        assert!(f.iter().any(|e| e.starts_with("spec.containers[0].ports[1].name: Invalid value: \"HTTP\"")));
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.containers[0].env[0].name: Invalid value: \"A=B\""))
        );
        assert!(f.iter().any(|e| e.starts_with("spec.containers[0].env[3].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.foo\"")));
        assert!(!f.iter().any(|e| e.contains("env[2]")), "{f:?}");
    }

    #[test]
    fn resources() {
        let errs = spec_errs(json!({
            "containers": [{
                "name": "c", "image": "x",
                "resources": {
                    "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
                    "requests": {"cpu": "2", "memory": "512Mi", "nvidia.com/gpu": "1"}
                }
            }, {
                "name": "d", "image": "x",
                "resources": {"requests": {"cpu": "abc", "memory": "-1", "foo": "1"}}
            }]
        }));
        let f = lines(&errs);
        assert_eq!(
            f,
            [
                "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
                "spec.containers[1].resources.requests[cpu]: Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "spec.containers[1].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.containers[1].resources.requests[foo]: Invalid value: \"foo\": must be a standard resource type or fully qualified",
            ]
        );
    }

    #[test]
    fn volumes_and_mounts() {
        let errs = spec_errs(json!({
            "volumes": [
                {"name": "a", "emptyDir": {}},
                {"name": "a", "configMap": {"name": "cm", "defaultMode": 1000}},
                {"name": "b"},
                {"name": "c", "emptyDir": {}, "hostPath": {"path": "/x"}}
            ],
            "containers": [{
                "name": "c", "image": "x",
                "volumeMounts": [
                    {"name": "a", "mountPath": "/a"},
                    {"name": "missing", "mountPath": "/a", "subPath": "../x"}
                ]
            }]
        }));
        let f = lines(&errs);
        let expect = [
            "spec.volumes[1].name: Duplicate value: \"a\"",
            "spec.volumes[1].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
            "spec.volumes[2]: Required value: must specify a volume type",
            "spec.volumes[3].emptyDir: Forbidden: may not specify more than 1 volume type",
            "spec.containers[0].volumeMounts[1].name: Not found: \"missing\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
            "spec.containers[0].volumeMounts[1].subPath: Invalid value: \"../x\": must not contain '..'",
        ];
        for e in expect {
            assert!(f.contains(&e.to_string()), "missing {e}: {f:?}");
        }
        assert_eq!(f.len(), expect.len(), "{f:?}");
    }

    #[test]
    fn probes() {
        let errs = spec_errs(json!({
            "containers": [{
                "name": "c", "image": "x",
                "livenessProbe": {"successThreshold": 2, "httpGet": {"port": 8080}, "tcpSocket": {"port": 1}},
                "readinessProbe": {"periodSeconds": 10},
                "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": -1}
            }],
            "initContainers": [{"name": "i", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}]
        }));
        let f = lines(&errs);
        assert_eq!(
            f,
            [
                "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].readinessProbe: Required value: must specify a handler type",
                "spec.containers[0].startupProbe.failureThreshold: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn scheduling_fields() {
        let errs = spec_errs(json!({
            "containers": [{"name": "c", "image": "x"}],
            "restartPolicy": "Sometimes",
            "activeDeadlineSeconds": 0,
            "tolerations": [
                {"operator": "Equal", "value": "x"},
                {"key": "k", "operator": "Exists", "value": "v"},
                {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}
            ],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "x"}}}
            ]}},
            "topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]
        }));
        let f = lines(&errs);
        let expect = [
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
            "spec.tolerations[2].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty",
            "spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero",
        ];
        for e in expect {
            assert!(f.contains(&e.to_string()), "missing {e}: {f:?}");
        }
        assert_eq!(f.len(), expect.len(), "{f:?}");
    }

    #[test]
    fn pod_update_rules() {
        let old = json!({
            "containers": [{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "activeDeadlineSeconds": 100
        });
        let mut ok = old.clone();
        ok["containers"][0]["image"] = json!("nginx:2");
        ok["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]);
        ok["activeDeadlineSeconds"] = json!(50);
        let mut errs = Vec::new();
        validate_pod_spec_update(&mut errs, &ok, &old);
        assert!(errs.is_empty(), "{errs:?}");

        let mut bad = old.clone();
        bad["containers"][0]["ports"][0]["containerPort"] = json!(81);
        bad["tolerations"] = json!([]);
        let mut errs = Vec::new();
        validate_pod_spec_update(&mut errs, &bad, &old);
        let f = lines(&errs);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[1], format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}"));

        // A longer deadline is reported alone, as upstream stops there.
        bad["activeDeadlineSeconds"] = json!(200);
        let mut errs = Vec::new();
        validate_pod_spec_update(&mut errs, &bad, &old);
        assert_eq!(
            lines(&errs),
            [
                "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
            ]
        );
    }
}
