//! The downward API: pod fields and container resources as strings, for env
//! vars (`fieldRef`, `resourceFieldRef`) and `downwardAPI` volume files.
//!
//! Both consumers must render values identically (a label map as a volume
//! file and as an env var are the same text), so the rules live here once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HostIP, Pod, PodIP};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity::Quantity as Exact;

/// A downward API reference that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DownwardError {
    /// The field path is not one the downward API offers.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    /// The resource is not one the downward API offers (upstream's wording,
    /// odd space included).
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// The named container is not in the pod.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A quantity (a divisor or a resource value) does not parse.
    #[error("invalid quantity {0:?}")]
    InvalidQuantity(String),
}

/// The node's allocatable resources: the value of a limit a container does
/// not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
}

/// The value of a pod field (`fieldRef.fieldPath`).
pub fn field_value(pod: &Pod, field_path: &str) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    if let Some(key) = subscript(field_path, "metadata.labels") {
        return Ok(lookup(meta.labels.as_ref(), key));
    }
    if let Some(key) = subscript(field_path, "metadata.annotations") {
        return Ok(lookup(meta.annotations.as_ref(), key));
    }
    let joined = |ips: Option<Vec<String>>| ips.unwrap_or_default().join(",");
    let value = match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => Some(joined(status.and_then(|s| {
            s.host_ips
                .as_ref()
                .map(|v| v.iter().map(|i| i.ip.clone()).collect())
        }))),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.podIPs" => Some(joined(status.and_then(|s| {
            s.pod_ips
                .as_ref()
                .map(|v| v.iter().map(|i| i.ip.clone()).collect())
        }))),
        other => return Err(DownwardError::UnsupportedField(other.to_string())),
    };
    Ok(value.unwrap_or_default())
}

/// `metadata.labels['key']` → `key` (either quote style).
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

fn lookup(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
}

/// A map as the downward API renders it: one `key="value"` line per entry,
/// sorted by key, values quoted as Go's `%q` does.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `value` quoted as Go's `%q` does: printable characters as they are,
/// the usual backslash escapes, `\xNN` for other ASCII controls and `\uNNNN`
/// for other control characters.
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a container resource (`resourceFieldRef`), divided by
/// `divisor` (default 1) and rounded up, as upstream does. A limit the
/// container does not set is the node's allocatable amount (upstream's
/// kubelet defaults limits that way for the downward API); a request it does
/// not set is its limit (the API's defaulting), else 0.
pub fn resource_value(
    pod: &Pod,
    container_name: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    node: &NodeAllocatable,
) -> Result<String, DownwardError> {
    let container = find_container(pod, container_name)
        .ok_or_else(|| DownwardError::ContainerNotFound(container_name.to_string()))?;
    let unsupported = || DownwardError::UnsupportedResource(resource.to_string());
    let (kind, name) = resource.split_once('.').ok_or_else(unsupported)?;
    let node_value = match name {
        "cpu" => Some(node.cpu_millis),
        "memory" => Some(node.memory_bytes),
        "ephemeral-storage" => Some(node.ephemeral_storage_bytes),
        _ if name.starts_with("hugepages-") => None,
        _ => return Err(unsupported()),
    };
    let resources = container.resources.as_ref();
    let limit = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|m| m.get(name))
        .map(|q| parse(&q.0))
        .transpose()?;
    let request = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(name))
        .map(|q| parse(&q.0))
        .transpose()?;
    let cpu = name == "cpu";
    // CPU counts in millicores, everything else in units.
    let amount =
        |q: &Exact| u64::try_from(if cpu { q.milli_value() } else { q.value() }).unwrap_or(0);
    let value = match kind {
        "limits" => limit.as_ref().map(amount).or(node_value).unwrap_or(0),
        "requests" => request.or(limit).as_ref().map_or(0, amount),
        _ => return Err(unsupported()),
    };
    let divisor = match divisor {
        Some(q) if !q.0.is_empty() => Some(parse(&q.0)?).filter(|d| !d.is_zero()),
        _ => None,
    };
    let per = match divisor {
        Some(d) => amount(&d).max(1),
        None if cpu => 1000,
        None => 1,
    };
    Ok(value.div_ceil(per).to_string())
}

fn parse(text: &str) -> Result<Exact, DownwardError> {
    Exact::parse(text).map_err(|_| DownwardError::InvalidQuantity(text.to_string()))
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// The pod with the addresses the agent knows filled into its status: the
/// sandbox's IPs (first one primary) and the node's IPs.
///
/// Upstream's kubelet resolves `status.podIP(s)` and `status.hostIP(s)` from
/// the sandbox and the node, not from the pod object, because the API status
/// lags: containers are created before the status carrying the new sandbox's
/// IP is written. Resolve env vars and downward API files against this copy.
/// Empty slices leave the corresponding fields as they are.
pub fn with_runtime_ips(pod: &Pod, pod_ips: &[String], host_ips: &[String]) -> Pod {
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(Default::default);
    if let Some(first) = pod_ips.first() {
        status.pod_ip = Some(first.clone());
        status.pod_ips = Some(pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
    }
    if let Some(first) = host_ips.first() {
        status.host_ip = Some(first.clone());
        status.host_ips = Some(
            host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        );
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        let q = |s: &str| Quantity(s.to_string());
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "front \"end\"".into()),
                ])),
                annotations: Some(BTreeMap::from([("note".into(), "a\nb".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("builder".into()),
                containers: vec![Container {
                    name: "main".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".into(), q("250m")),
                            ("memory".into(), q("64Mi")),
                        ])),
                        limits: Some(BTreeMap::from([("cpu".into(), q("1500m"))])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.42.0.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.42.0.7".into(),
                    },
                    PodIP {
                        ip: "fd00::7".into(),
                    },
                ]),
                host_ip: Some("192.168.1.5".into()),
                ..PodStatus::default()
            }),
        }
    }

    const NODE: NodeAllocatable = NodeAllocatable {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        ephemeral_storage_bytes: 100 << 30,
    };

    #[test]
    fn pod_fields() {
        let pod = pod();
        let field = |path| field_value(&pod, path).expect(path);
        assert_eq!(field("metadata.name"), "web");
        assert_eq!(field("metadata.namespace"), "prod");
        assert_eq!(field("metadata.uid"), "u-1");
        assert_eq!(field("spec.nodeName"), "node-1");
        assert_eq!(field("spec.serviceAccountName"), "builder");
        assert_eq!(field("status.podIP"), "10.42.0.7");
        assert_eq!(field("status.podIPs"), "10.42.0.7,fd00::7");
        assert_eq!(field("status.hostIP"), "192.168.1.5");
        assert_eq!(field("metadata.labels['app']"), "web");
        assert_eq!(field("metadata.labels['missing']"), "");
        assert_eq!(field("metadata.annotations[\"note\"]"), "a\nb");
        assert_eq!(
            field("metadata.labels"),
            "app=\"web\"\ntier=\"front \\\"end\\\"\""
        );
        assert_eq!(field("metadata.annotations"), "note=\"a\\nb\"");
        assert_eq!(
            field_value(&pod, "spec.containers"),
            Err(DownwardError::UnsupportedField("spec.containers".into()))
        );
    }

    #[test]
    fn resources_round_up_and_fall_back_to_the_node() {
        let pod = pod();
        let value = |resource, divisor: Option<&str>| {
            let divisor = divisor.map(|d| Quantity(d.to_string()));
            resource_value(&pod, "main", resource, divisor.as_ref(), &NODE).expect(resource)
        };
        assert_eq!(value("limits.cpu", None), "2");
        assert_eq!(value("limits.cpu", Some("1m")), "1500");
        assert_eq!(value("requests.cpu", Some("1m")), "250");
        assert_eq!(value("requests.cpu", None), "1");
        assert_eq!(value("requests.memory", None), (64u64 << 20).to_string());
        assert_eq!(value("requests.memory", Some("1Mi")), "64");
        // No memory limit: the node's allocatable memory.
        assert_eq!(value("limits.memory", Some("1Gi")), "8");
        assert_eq!(value("limits.ephemeral-storage", Some("1Gi")), "100");
        assert_eq!(value("requests.ephemeral-storage", None), "0");
        assert!(matches!(
            resource_value(&pod, "nope", "limits.cpu", None, &NODE),
            Err(DownwardError::ContainerNotFound(_))
        ));
        assert!(matches!(
            resource_value(&pod, "main", "limits.gpu", None, &NODE),
            Err(DownwardError::UnsupportedResource(_))
        ));
    }

    #[test]
    fn requests_default_to_limits() {
        let mut pod = pod();
        // The limit of 1500m stands in for the missing request, as API
        // defaulting would have made it.
        if let Some(resources) = pod
            .spec
            .as_mut()
            .and_then(|s| s.containers[0].resources.as_mut())
        {
            resources.requests = None;
        }
        let millis = Quantity("1m".into());
        assert_eq!(
            resource_value(&pod, "main", "requests.cpu", Some(&millis), &NODE),
            Ok("1500".to_string())
        );
        assert_eq!(
            resource_value(&pod, "main", "requests.memory", None, &NODE),
            Ok("0".to_string())
        );
        assert_eq!(
            resource_value(&pod, "main", "limits.hugepages-2Mi", None, &NODE),
            Ok("0".to_string())
        );
        assert_eq!(
            resource_value(
                &pod,
                "main",
                "limits.cpu",
                Some(&Quantity("0.5x".into())),
                &NODE
            ),
            Err(DownwardError::InvalidQuantity("0.5x".into()))
        );
    }

    #[test]
    fn maps_quote_values_as_go_does() {
        let map = BTreeMap::from([
            ("b".to_string(), "tab\there\u{7}\u{1}\u{85}é".to_string()),
            ("a".to_string(), "back\\slash".to_string()),
        ]);
        assert_eq!(
            format_map(Some(&map)),
            "a=\"back\\\\slash\"\nb=\"tab\\there\\a\\x01\\u0085é\""
        );
        assert_eq!(format_map(None), "");
    }

    #[test]
    fn runtime_ips_override_a_lagging_status() {
        let mut pod = pod();
        pod.status = None;
        assert_eq!(field_value(&pod, "status.podIP"), Ok(String::new()));
        let pod = with_runtime_ips(
            &pod,
            &["10.42.0.9".into(), "fd00::9".into()],
            &["192.168.1.5".into()],
        );
        assert_eq!(field_value(&pod, "status.podIP"), Ok("10.42.0.9".into()));
        assert_eq!(
            field_value(&pod, "status.podIPs"),
            Ok("10.42.0.9,fd00::9".into())
        );
        assert_eq!(field_value(&pod, "status.hostIP"), Ok("192.168.1.5".into()));
        assert_eq!(
            field_value(&pod, "status.hostIPs"),
            Ok("192.168.1.5".into())
        );
    }
}
