//! The downward API: pod fields and container resources as strings, for env
//! vars (`fieldRef`, `resourceFieldRef`) and `downwardAPI` volume files.
//!
//! Both consumers must render values identically (a label map as a volume
//! file and as an env var are the same text), so the rules live here once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity::Quantity as Exact;

/// A downward API reference that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DownwardError {
    /// The field path is not one the downward API offers.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    /// The resource is not one the downward API offers.
    #[error("unsupported container resource: {0}")]
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

fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a container resource (`resourceFieldRef`), divided by
/// `divisor` (default 1) and rounded up, as upstream does. A limit the
/// container does not set is the node's allocatable amount.
pub fn resource_value(
    pod: &Pod,
    container_name: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    node: &NodeAllocatable,
) -> Result<String, DownwardError> {
    let container = find_container(pod, container_name)
        .ok_or_else(|| DownwardError::ContainerNotFound(container_name.to_string()))?;
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| DownwardError::UnsupportedResource(resource.to_string()))?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    }
    .and_then(|m| m.get(name))
    .map(|q| parse(&q.0))
    .transpose()?;
    let divisor = match divisor {
        Some(q) if !q.0.is_empty() => Some(parse(&q.0)?).filter(|d| !d.is_zero()),
        _ => None,
    };
    let fallback = |node_value: u64| (kind == "limits").then_some(node_value);
    match name {
        "cpu" => {
            let millis = match set {
                Some(q) => u64::try_from(q.milli_value()).unwrap_or(0),
                None => fallback(node.cpu_millis).unwrap_or(0),
            };
            let per = divisor.map_or(1000, |d| u64::try_from(d.milli_value()).unwrap_or(1).max(1));
            Ok(millis.div_ceil(per).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let node_value = if name == "memory" {
                node.memory_bytes
            } else {
                node.ephemeral_storage_bytes
            };
            let bytes = match set {
                Some(q) => u64::try_from(q.value()).unwrap_or(0),
                None => fallback(node_value).unwrap_or(0),
            };
            let per = divisor.map_or(1, |d| u64::try_from(d.value()).unwrap_or(1).max(1));
            Ok(bytes.div_ceil(per).to_string())
        }
        _ if name.starts_with("hugepages-") => {
            let bytes = set.map_or(0, |q| u64::try_from(q.value()).unwrap_or(0));
            let per = divisor.map_or(1, |d| u64::try_from(d.value()).unwrap_or(1).max(1));
            Ok(bytes.div_ceil(per).to_string())
        }
        _ => Err(DownwardError::UnsupportedResource(resource.to_string())),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus, ResourceRequirements};
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
}
