//! Docker-links Service variables, as upstream's kubelet injects them
//! (`getServiceEnvVarMap` and `envvars.FromServices`).
//!
//! A pod sees the Services of its own namespace (unless
//! `spec.enableServiceLinks` is false) and, always, the master Service
//! `default/kubernetes`, which in-cluster clients find through
//! `KUBERNETES_SERVICE_HOST`/`_PORT`. A Service of the pod's namespace with the
//! master Service's name shadows it. Only Services with a cluster IP count:
//! headless (`clusterIP: None`) and ExternalName Services (no cluster IP) give
//! no variables.
//!
//! For a Service `web-api` at 10.43.0.7 with ports `http` 80/TCP and 53/UDP:
//!
//! ```text
//! WEB_API_SERVICE_HOST=10.43.0.7
//! WEB_API_SERVICE_PORT=80                 (the first port)
//! WEB_API_SERVICE_PORT_HTTP=80            (every named port)
//! WEB_API_PORT=tcp://10.43.0.7:80         (the first port, Docker's link)
//! WEB_API_PORT_80_TCP=tcp://10.43.0.7:80  (then, for every port:)
//! WEB_API_PORT_80_TCP_PROTO=tcp
//! WEB_API_PORT_80_TCP_PORT=80
//! WEB_API_PORT_80_TCP_ADDR=10.43.0.7
//! WEB_API_PORT_53_UDP=udp://10.43.0.7:53
//! ...
//! ```
//!
//! Upstream emits the variables in Go map order; here Services are sorted by
//! name and each one's variables come in the order above, so a container's
//! environment is the same on every start.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

/// The namespace of the master Service.
pub const MASTER_SERVICE_NAMESPACE: &str = "default";
/// The master Service, whose variables every pod gets.
pub const MASTER_SERVICE_NAME: &str = "kubernetes";

/// Whether the pod wants variables for the Services of its namespace
/// (`spec.enableServiceLinks`, true unless set to false: the API server
/// defaults it to true).
pub fn service_links_enabled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true)
}

/// The Service variables of `pod`, chosen from `services` (any namespaces;
/// those the pod does not see are ignored), in a stable order.
pub fn service_env(pod: &Pod, services: &[Arc<Service>]) -> Vec<(String, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = service_links_enabled(pod);
    let mut seen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        if cluster_ip(service).is_none() {
            continue;
        }
        let Some(name) = service.metadata.name.as_deref() else {
            continue;
        };
        let service_ns = service.metadata.namespace.as_deref().unwrap_or_default();
        if service_ns == MASTER_SERVICE_NAMESPACE && name == MASTER_SERVICE_NAME {
            seen.entry(name).or_insert(service);
        } else if service_ns == namespace && links {
            seen.insert(name, service);
        }
    }
    let mut env = Vec::new();
    for (name, service) in seen {
        variables(name, service, &mut env);
    }
    env
}

/// The Service's cluster IP, if it has a real one (not `None`, not empty).
fn cluster_ip(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// A Service or port name as a variable name: upper case, `-` as `_`.
fn variable_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Appends one Service's variables. A Service without ports (which
/// validation forbids for a Service with a cluster IP) gives none.
fn variables(name: &str, service: &Service, env: &mut Vec<(String, String)>) {
    let Some(ip) = cluster_ip(service) else {
        return;
    };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let Some(first) = ports.first() else {
        return;
    };
    let prefix = variable_name(name);
    env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
    env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    for port in ports {
        if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            env.push((
                format!("{prefix}_SERVICE_PORT_{}", variable_name(port_name)),
                port.port.to_string(),
            ));
        }
    }
    // An IPv6 address is bracketed in a URL.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    for (index, port) in ports.iter().enumerate() {
        let protocol = port
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let scheme = protocol.to_ascii_lowercase();
        let url = format!("{scheme}://{host}:{}", port.port);
        if index == 0 {
            env.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!(
            "{prefix}_PORT_{}_{}",
            port.port,
            protocol.to_ascii_uppercase()
        );
        env.push((port_prefix.clone(), url));
        env.push((format!("{port_prefix}_PROTO"), scheme));
        env.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        env.push((format!("{port_prefix}_ADDR"), ip.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn port(name: Option<&str>, port: i32, protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port,
            protocol: protocol.map(Into::into),
            ..ServicePort::default()
        }
    }

    fn service(
        namespace: &str,
        name: &str,
        ip: Option<&str>,
        ports: Vec<ServicePort>,
    ) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: ip.map(Into::into),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    fn pod(namespace: &str, links: Option<bool>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("client".into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                enable_service_links: links,
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn master() -> Arc<Service> {
        service(
            "default",
            "kubernetes",
            Some("10.43.0.1"),
            vec![port(Some("https"), 443, Some("TCP"))],
        )
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MASTER_ENV: &[(&str, &str)] = &[
        ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
    ];

    #[test]
    fn every_port_gives_docker_link_variables() {
        let web = service(
            "shop",
            "web-api",
            Some("10.43.0.7"),
            vec![
                port(Some("http"), 80, None),
                port(Some("dns-udp"), 53, Some("UDP")),
            ],
        );
        let env = service_env(&pod("shop", None), &[web]);
        assert_eq!(
            env,
            pairs(&[
                ("WEB_API_SERVICE_HOST", "10.43.0.7"),
                ("WEB_API_SERVICE_PORT", "80"),
                ("WEB_API_SERVICE_PORT_HTTP", "80"),
                ("WEB_API_SERVICE_PORT_DNS_UDP", "53"),
                ("WEB_API_PORT", "tcp://10.43.0.7:80"),
                ("WEB_API_PORT_80_TCP", "tcp://10.43.0.7:80"),
                ("WEB_API_PORT_80_TCP_PROTO", "tcp"),
                ("WEB_API_PORT_80_TCP_PORT", "80"),
                ("WEB_API_PORT_80_TCP_ADDR", "10.43.0.7"),
                ("WEB_API_PORT_53_UDP", "udp://10.43.0.7:53"),
                ("WEB_API_PORT_53_UDP_PROTO", "udp"),
                ("WEB_API_PORT_53_UDP_PORT", "53"),
                ("WEB_API_PORT_53_UDP_ADDR", "10.43.0.7"),
            ])
        );
    }

    #[test]
    fn an_unnamed_single_port_and_an_ipv6_address() {
        let db = service("shop", "db", Some("fd00::5"), vec![port(None, 5432, None)]);
        let env = service_env(&pod("shop", None), &[db]);
        assert_eq!(
            env,
            pairs(&[
                ("DB_SERVICE_HOST", "fd00::5"),
                ("DB_SERVICE_PORT", "5432"),
                ("DB_PORT", "tcp://[fd00::5]:5432"),
                ("DB_PORT_5432_TCP", "tcp://[fd00::5]:5432"),
                ("DB_PORT_5432_TCP_PROTO", "tcp"),
                ("DB_PORT_5432_TCP_PORT", "5432"),
                ("DB_PORT_5432_TCP_ADDR", "fd00::5"),
            ])
        );
    }

    #[test]
    fn the_master_service_reaches_every_namespace_even_without_links() {
        let other = service("shop", "web", Some("10.43.0.8"), vec![port(None, 80, None)]);
        let services = [other, master()];
        assert_eq!(
            service_env(&pod("shop", Some(false)), &services),
            pairs(MASTER_ENV)
        );
        assert_eq!(
            service_env(&pod("elsewhere", None), &services),
            pairs(MASTER_ENV)
        );
        let shop = service_env(&pod("shop", Some(true)), &services);
        assert_eq!(shop.len(), MASTER_ENV.len() + 7);
        assert_eq!(&shop[..MASTER_ENV.len()], pairs(MASTER_ENV).as_slice());
        assert_eq!(
            shop[MASTER_ENV.len()],
            ("WEB_SERVICE_HOST".into(), "10.43.0.8".into())
        );
    }

    #[test]
    fn services_without_a_cluster_ip_and_other_namespaces_give_nothing() {
        let services = [
            service("shop", "headless", Some("None"), vec![port(None, 80, None)]),
            service("shop", "external", None, vec![port(None, 80, None)]),
            service("shop", "empty", Some(""), vec![port(None, 80, None)]),
            service("shop", "portless", Some("10.43.0.9"), vec![]),
            service(
                "default",
                "web",
                Some("10.43.0.10"),
                vec![port(None, 80, None)],
            ),
        ];
        assert!(service_env(&pod("shop", None), &services).is_empty());
        // A headless master Service gives nothing either.
        let headless_master = service(
            "default",
            "kubernetes",
            Some("None"),
            vec![port(Some("https"), 443, None)],
        );
        assert!(service_env(&pod("shop", None), &[headless_master]).is_empty());
    }

    #[test]
    fn a_same_named_service_of_the_namespace_shadows_the_master() {
        let own = service(
            "shop",
            "kubernetes",
            Some("10.43.0.99"),
            vec![port(None, 8443, None)],
        );
        for services in [[master(), own.clone()], [own.clone(), master()]] {
            let env = service_env(&pod("shop", None), &services);
            assert_eq!(
                env[0],
                ("KUBERNETES_SERVICE_HOST".into(), "10.43.0.99".into())
            );
            assert_eq!(env.len(), 7);
        }
        // Without links the master stays.
        let env = service_env(&pod("shop", Some(false)), &[own, master()]);
        assert_eq!(env, pairs(MASTER_ENV));
    }

    #[test]
    fn default_namespace_pods_see_the_master_once_and_their_services_sorted() {
        let services = [
            service(
                "default",
                "zeta",
                Some("10.43.1.2"),
                vec![port(None, 2, None)],
            ),
            master(),
            service(
                "default",
                "alpha",
                Some("10.43.1.1"),
                vec![port(None, 1, Some("SCTP"))],
            ),
        ];
        let env = service_env(&pod("default", None), &services);
        let hosts: Vec<&str> = env
            .iter()
            .filter(|(k, _)| k.ends_with("_SERVICE_HOST"))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            hosts,
            [
                "ALPHA_SERVICE_HOST",
                "KUBERNETES_SERVICE_HOST",
                "ZETA_SERVICE_HOST"
            ]
        );
        assert!(env.contains(&("ALPHA_PORT".into(), "sctp://10.43.1.1:1".into())));
        assert!(env.contains(&("ALPHA_PORT_1_SCTP_PROTO".into(), "sctp".into())));
    }
}
