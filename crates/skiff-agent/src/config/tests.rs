use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodDNSConfig, PodDNSConfigOption, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Option<ResourceRequirements> {
    let map = |pairs: &[(&str, &str)]| {
        (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    Some(ResourceRequirements {
        requests: map(requests),
        limits: map(limits),
        ..ResourceRequirements::default()
    })
}

fn pod(containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("1234".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        ..Container::default()
    }
}

fn context(dir: &Path, dns: Option<ClusterDns>) -> SandboxContext {
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n",
    )
    .expect("write resolv.conf");
    SandboxContext {
        node_name: "node-1".into(),
        log_root: "/data/agent/logs".into(),
        cluster_dns: dns,
        host_resolv_conf: resolv,
        cgroup_parent_root: "/kubepods".into(),
    }
}

fn cluster_dns() -> ClusterDns {
    ClusterDns {
        servers: vec!["10.43.0.10".into()],
        domain: "cluster.local".into(),
    }
}

#[test]
fn qos_classes() {
    let with = |r| Container {
        resources: r,
        ..container("c")
    };
    assert_eq!(qos_class(&pod(vec![container("c")])), QosClass::BestEffort);
    let guaranteed = with(resources(&[], &[("cpu", "1"), ("memory", "1Gi")]));
    assert_eq!(
        qos_class(&pod(vec![guaranteed.clone()])),
        QosClass::Guaranteed
    );
    let equal = with(resources(
        &[("cpu", "1000m"), ("memory", "1Gi")],
        &[("cpu", "1"), ("memory", "1024Mi")],
    ));
    assert_eq!(qos_class(&pod(vec![equal])), QosClass::Guaranteed);
    let burstable = with(resources(&[("cpu", "100m")], &[]));
    assert_eq!(
        qos_class(&pod(vec![burstable.clone()])),
        QosClass::Burstable
    );
    assert_eq!(
        qos_class(&pod(vec![guaranteed, container("other")])),
        QosClass::Burstable,
        "one container without limits makes the pod Burstable"
    );
}

#[test]
fn sandbox_carries_identity_logs_ports_and_cgroup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut web = container("web");
    web.ports = Some(vec![
        ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
        ContainerPort {
            container_port: 53,
            protocol: Some("UDP".into()),
            ..ContainerPort::default()
        },
    ]);
    let config = sandbox_config(&pod(vec![web]), 2, &context(dir.path(), None)).expect("config");
    let meta = config.metadata.expect("metadata");
    assert_eq!(
        (meta.name.as_str(), meta.uid.as_str(), meta.attempt),
        ("web-0", "1234", 2)
    );
    assert_eq!(config.hostname, "web-0");
    assert_eq!(config.log_directory, "/data/agent/logs/shop_web-0_1234");
    assert_eq!(config.labels[POD_UID_LABEL], "1234");
    assert_eq!(config.labels["app"], "web");
    assert_eq!(
        config.port_mappings.len(),
        1,
        "only ports with a hostPort are mapped"
    );
    assert_eq!(config.port_mappings[0].host_port, 8080);
    let linux = config.linux.expect("linux");
    assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/pod1234");
    let ns = linux
        .security_context
        .and_then(|s| s.namespace_options)
        .expect("ns");
    assert_eq!(ns.network, NamespaceMode::Pod as i32);
    assert_eq!(ns.pid, NamespaceMode::Container as i32);
    // No cluster DNS and no dnsConfig: the runtime's default resolv.conf.
    assert_eq!(config.dns_config, None);
}

#[test]
fn cluster_first_dns_uses_the_cluster_search_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), Some(cluster_dns()));
    let dns = dns_config(&pod(vec![container("c")]), &ctx).expect("dns");
    assert_eq!(dns.servers, ["10.43.0.10"]);
    assert_eq!(
        dns.searches,
        [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example"
        ]
    );
    assert_eq!(dns.options, ["ndots:5"]);

    let mut custom = pod(vec![container("c")]);
    if let Some(spec) = custom.spec.as_mut() {
        spec.dns_policy = Some("None".into());
        spec.dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into()]),
            searches: Some(vec!["example.org".into()]),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".into()),
                value: Some("2".into()),
            }]),
        });
    }
    let dns = dns_config(&custom, &ctx).expect("dns");
    assert_eq!(dns.servers, ["1.1.1.1"]);
    assert_eq!(dns.searches, ["example.org"]);
    assert_eq!(dns.options, ["ndots:2"]);

    let mut default = pod(vec![container("c")]);
    if let Some(spec) = default.spec.as_mut() {
        spec.dns_policy = Some("Default".into());
        spec.dns_config = Some(PodDNSConfig {
            searches: Some(vec!["extra.example".into()]),
            ..PodDNSConfig::default()
        });
    }
    let dns = dns_config(&default, &ctx).expect("dns");
    assert_eq!(dns.servers, ["192.0.2.53"]);
    assert_eq!(dns.searches, ["corp.example", "extra.example"]);
}

#[test]
fn container_resources_become_cgroup_settings() {
    let mut c = container("app");
    c.resources = resources(
        &[("cpu", "250m"), ("memory", "64Mi")],
        &[("cpu", "500m"), ("memory", "128Mi")],
    );
    c.command = Some(vec!["sh".into(), "-c".into()]);
    c.args = Some(vec!["echo $(GREETING) $$(GREETING)".into()]);
    let pod = pod(vec![c.clone()]);
    let ctx = ContainerContext {
        restart_count: 3,
        image_ref: "sha256:abc",
        env: vec![KeyValue {
            key: "GREETING".into(),
            value: b"hi".to_vec(),
        }],
        mounts: Vec::new(),
    };
    let config = container_config(&pod, &c, &ctx).expect("config");
    assert_eq!(config.log_path, "app/3.log");
    assert_eq!(config.metadata.as_ref().map(|m| m.attempt), Some(3));
    assert_eq!(config.command, ["sh", "-c"]);
    assert_eq!(config.args, ["echo hi $(GREETING)"]);
    assert_eq!(config.labels[CONTAINER_NAME_LABEL], "app");
    assert_eq!(config.labels[POD_UID_LABEL], "1234");
    let resources = config.linux.and_then(|l| l.resources).expect("resources");
    assert_eq!(resources.cpu_shares, 256);
    assert_eq!(resources.cpu_period, 100_000);
    assert_eq!(resources.cpu_quota, 50_000);
    assert_eq!(resources.memory_limit_in_bytes, 128 << 20);
    assert_eq!(resources.oom_score_adj, 500);
    assert!(resources.oom_score_adj >= 0, "never negative on this host");
}

#[test]
fn shares_and_quota_follow_upstream_bounds() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_quota(0), 0);
    assert_eq!(milli_cpu_to_quota(5), 1000);
    assert_eq!(milli_cpu_to_quota(1500), 150_000);
}

#[test]
fn hostname_is_cut_to_a_dns_label() {
    let mut long = pod(vec![container("c")]);
    long.metadata.name = Some(format!("{}-x", "a".repeat(62)));
    assert_eq!(hostname(&long), "a".repeat(62));
}
