//! What a Service's endpoints are made of, pod by pod: which pods count,
//! which of their addresses, which ports. Shared by the EndpointSlice and the
//! (legacy) Endpoints controllers, which must agree on all of it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

/// The label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the endpoints of a Service without a cluster IP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// When the change that caused the last write happened.
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The Node label holding its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// The protocol of a port that does not name one.
const DEFAULT_PROTOCOL: &str = "TCP";

/// An EndpointSlice's `addressType`; Skiff never writes the deprecated `FQDN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressType {
    /// IPv4 addresses.
    IPv4,
    /// IPv6 addresses.
    IPv6,
}

impl AddressType {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
        }
    }

    /// The address type of an API spelling (`IPv4`, `IPv6`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(Self::IPv4),
            "IPv6" => Some(Self::IPv6),
            _ => None,
        }
    }

    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::IPv4,
            IpAddr::V6(_) => Self::IPv6,
        }
    }
}

/// The selector of a Service whose endpoints the controllers maintain, or
/// `None` for the ones they leave alone: Services without a selector (their
/// endpoints are written by whoever runs them), ExternalName Services, and
/// `default/kubernetes`, which the API server keeps itself.
pub fn managed_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    if is_api_service(service) {
        return None;
    }
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // An empty selector is stored as none at all, as upstream's storage does.
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// `default/kubernetes`, whose endpoints the API server maintains.
pub fn is_api_service(service: &Service) -> bool {
    service.name_any() == "kubernetes" && service.namespace().as_deref() == Some("default")
}

/// Whether a Service's `selector` map matches `labels`.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The Service has a cluster IP (it is not headless).
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// The address types the Service's endpoints come in: its IP families; for
/// a Service without them, the family of its cluster IP, or both for a
/// headless one.
pub fn address_types(service: &Service) -> BTreeSet<AddressType> {
    let spec = service.spec.as_ref();
    let families: BTreeSet<AddressType> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| AddressType::parse(f))
        .collect();
    if !families.is_empty() {
        return families;
    }
    if is_service_ip_set(service) {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        let family = ip
            .parse::<IpAddr>()
            .map_or(AddressType::IPv4, |ip| AddressType::of(&ip));
        return BTreeSet::from([family]);
    }
    BTreeSet::from([AddressType::IPv4, AddressType::IPv6])
}

/// The pod is Succeeded or Failed: its containers are gone for good.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod belongs in a Service's endpoints at all: it has an IP, is
/// not terminal, and is not being deleted unless `include_terminating`.
pub fn should_publish(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod asked for a DNS name under this Service: `spec.hostname` is set
/// and `spec.subdomain` names the Service.
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let hostname = spec.hostname.as_deref().unwrap_or("");
    !hostname.is_empty()
        && spec.subdomain.as_deref() == Some(service.name_any().as_str())
        && pod.namespace() == service.namespace()
}

/// The pod's IPs in order (`status.podIPs`, or `status.podIP` when the list
/// is empty), parsed; unparseable entries are skipped.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .into_iter()
        .collect()
}

/// The protocol of a Service or container port (TCP unless named).
pub fn protocol(protocol: Option<&String>) -> &str {
    protocol.map_or(DEFAULT_PROTOCOL, String::as_str)
}

/// The pod port a Service port sends to: a numeric `targetPort` as is (an
/// unset one means `port`), a named one looked up among the pod's container
/// ports of the same protocol, sidecars included. `None` when the name is
/// not found.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        None => return Some(port.port),
        Some(IntOrString::Int(0)) => return Some(port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let wanted = protocol(port.protocol.as_ref());
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c: &Container| c.ports.iter().flatten())
        .find(|p| p.name.as_ref() == Some(name) && protocol(p.protocol.as_ref()) == wanted)
        .map(|p| p.container_port)
}

/// When the last change that shaped these endpoints happened: the latest of
/// the Service's creation and, per pod, its Ready condition's last
/// transition (its creation when it has none). `None` without any time.
pub fn trigger_time(service: &Service, pods: &[Arc<Pod>]) -> Option<Timestamp> {
    let created = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
    pods.iter()
        .filter_map(|pod| pod_trigger_time(pod))
        .chain(created)
        .max()
}

/// Sets [`ANNOTATION_TRIGGER_TIME`] to `at`, or removes it without a time.
pub fn set_trigger_time(meta: &mut ObjectMeta, at: Option<Timestamp>) {
    let mut annotations = meta.annotations.take().unwrap_or_default();
    match at {
        Some(at) => annotations.insert(ANNOTATION_TRIGGER_TIME.into(), at.to_string()),
        None => annotations.remove(ANNOTATION_TRIGGER_TIME),
    };
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
}

fn pod_trigger_time(pod: &Pod) -> Option<Timestamp> {
    let ready_changed = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    ready_changed.or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn service(cluster_ip: &str, families: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ip_families: Some(families.iter().map(|f| f.to_string()).collect()),
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn pod_with_ports(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn container(ports: &[(&str, i32, &str)], restart: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            restart_policy: restart.map(Into::into),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port, proto)| ContainerPort {
                        name: Some(name.to_string()),
                        container_port: *port,
                        protocol: Some(proto.to_string()),
                        ..ContainerPort::default()
                    })
                    .collect(),
            ),
            ..Container::default()
        }
    }

    fn service_port(target: Option<IntOrString>, protocol: &str) -> ServicePort {
        ServicePort {
            port: 80,
            protocol: Some(protocol.into()),
            target_port: target,
            ..ServicePort::default()
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_protocol() {
        let pod = pod_with_ports(
            vec![container(
                &[("http", 8080, "TCP"), ("dns", 53, "UDP")],
                None,
            )],
            vec![
                container(&[("metrics", 9090, "TCP")], Some("Always")),
                container(&[("setup", 7000, "TCP")], None),
            ],
        );
        let named = |name: &str, proto| service_port(Some(IntOrString::String(name.into())), proto);
        assert_eq!(find_port(&pod, &named("http", "TCP")), Some(8080));
        assert_eq!(find_port(&pod, &named("dns", "UDP")), Some(53));
        assert_eq!(find_port(&pod, &named("dns", "TCP")), None);
        assert_eq!(find_port(&pod, &named("metrics", "TCP")), Some(9090));
        assert_eq!(find_port(&pod, &named("setup", "TCP")), None);
        assert_eq!(
            find_port(&pod, &service_port(Some(IntOrString::Int(81)), "TCP")),
            Some(81)
        );
        assert_eq!(find_port(&pod, &service_port(None, "TCP")), Some(80));
    }

    #[test]
    fn address_types_follow_ip_families_then_the_cluster_ip() {
        assert_eq!(
            address_types(&service("10.0.0.1", &["IPv4", "IPv6"])),
            BTreeSet::from([AddressType::IPv4, AddressType::IPv6])
        );
        assert_eq!(
            address_types(&service("fd00::1", &[])),
            BTreeSet::from([AddressType::IPv6])
        );
        assert_eq!(
            address_types(&service("None", &[])),
            BTreeSet::from([AddressType::IPv4, AddressType::IPv6])
        );
    }

    #[test]
    fn the_api_service_external_names_and_selectorless_services_are_not_managed() {
        let mut svc = service("10.0.0.1", &["IPv4"]);
        assert!(managed_selector(&svc).is_some());
        svc.metadata.name = Some("kubernetes".into());
        assert!(managed_selector(&svc).is_none());
        let mut external = service("", &[]);
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(managed_selector(&external).is_none());
        let mut empty = service("10.0.0.1", &["IPv4"]);
        empty.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(managed_selector(&empty).is_none());
    }

    #[test]
    fn only_live_pods_with_an_ip_are_published() {
        let mut pod = Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ips: Some(vec![PodIP {
                    ip: "10.1.0.5".into(),
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(should_publish(&pod, false));
        pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!should_publish(&pod, false));
        assert!(should_publish(&pod, true));
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_publish(&pod, true));
        assert!(!should_publish(&Pod::default(), true));
    }

    #[test]
    fn the_trigger_time_is_the_latest_ready_change_or_creation() {
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        let mut svc = service("10.0.0.1", &["IPv4"]);
        svc.metadata.creation_timestamp = Some(at(100));
        let created = Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(at(150)),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let became_ready = Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(at(120)),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(at(200)),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(trigger_time(&svc, &[]), Some(at(100).0));
        let created = Arc::new(created);
        let became_ready = Arc::new(became_ready);
        assert_eq!(
            trigger_time(&svc, std::slice::from_ref(&created)),
            Some(at(150).0)
        );
        assert_eq!(
            trigger_time(&svc, &[created, became_ready]),
            Some(at(200).0)
        );
    }
}
