use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HostAlias, PodDNSConfig, PodDNSConfigOption,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext, Sysctl,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_cri::v1::NamespaceMode;
use skiff_cri::v1::security_profile::ProfileType;

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
    // No cluster DNS: ClusterFirst falls back to the host's resolver.
    let dns = config.dns_config.expect("dns");
    assert_eq!(dns.servers, ["192.0.2.53"]);
    assert_eq!(dns.searches, ["corp.example"]);
    assert_eq!(dns.options, ["edns0"]);
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
    // Burstable; without the node's memory the 128Mi limit stands in.
    assert_eq!(resources.oom_score_adj, 500);
}

#[test]
fn shares_and_quota_follow_upstream_bounds() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
    assert_eq!(milli_cpu_to_quota(0), 0);
    assert_eq!(milli_cpu_to_quota(5), 1000);
    assert_eq!(milli_cpu_to_quota(1500), 150_000);
}

#[test]
fn hostname_is_cut_to_a_dns_label() {
    let mut long = pod(vec![container("c")]);
    long.metadata.name = Some(format!("{}-x", "a".repeat(62)));
    let (name, domain) = hostname_and_domain(&long, "cluster.local").expect("hostname");
    assert_eq!((name, domain), ("a".repeat(62), None));
}

#[test]
fn qos_sums_containers_and_counts_init_containers() {
    let with = |r| Container {
        resources: r,
        ..container("c")
    };
    // Only limits: requests default to them.
    let limits_only = with(resources(&[], &[("cpu", "500m"), ("memory", "64Mi")]));
    let mut init = limits_only.clone();
    init.name = "init".into();
    init.resources = resources(&[("cpu", "100m")], &[]);
    let mut p = pod(vec![limits_only]);
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(vec![init]);
    }
    assert_eq!(
        qos_class(&p),
        QosClass::Burstable,
        "the init container counts"
    );
    // Zero amounts count as unset.
    let zero = with(resources(&[("cpu", "0")], &[("memory", "0")]));
    assert_eq!(qos_class(&pod(vec![zero])), QosClass::BestEffort);
    // Pod-level resources decide when set.
    let mut pod_level = pod(vec![container("c")]);
    if let Some(spec) = pod_level.spec.as_mut() {
        spec.resources = resources(&[], &[("cpu", "1"), ("memory", "1Gi")]);
    }
    assert_eq!(qos_class(&pod_level), QosClass::Guaranteed);
    assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
}

#[test]
fn cgroup_parent_follows_the_qos_layout() {
    let guaranteed = Container {
        resources: resources(&[], &[("cpu", "1"), ("memory", "1Gi")]),
        ..container("c")
    };
    let burstable = Container {
        resources: resources(&[("memory", "1Gi")], &[]),
        ..container("c")
    };
    let parent = |c: Container| cgroup_parent(&pod(vec![c]), "/kubepods/").expect("parent");
    assert_eq!(parent(guaranteed), "/kubepods/pod1234");
    assert_eq!(parent(burstable), "/kubepods/burstable/pod1234");
    assert_eq!(parent(container("c")), "/kubepods/besteffort/pod1234");
    let mut no_uid = pod(vec![container("c")]);
    no_uid.metadata.uid = None;
    assert_eq!(
        cgroup_parent(&no_uid, "/kubepods"),
        Err(ConfigError::MissingUid)
    );
}

#[test]
fn oom_scores_follow_upstream_policy_without_going_negative() {
    const GI: u64 = 1 << 30;
    let guaranteed = Container {
        resources: resources(&[], &[("cpu", "1"), ("memory", "1Gi")]),
        ..container("c")
    };
    let p = pod(vec![guaranteed.clone()]);
    assert_eq!(oom_score_adj(&p, &guaranteed, 8 * GI), 0, "-997, clamped");
    let best_effort = container("c");
    let p = pod(vec![best_effort.clone()]);
    assert_eq!(oom_score_adj(&p, &best_effort, 8 * GI), 1000);

    let burstable = |memory: &str| Container {
        resources: resources(&[("memory", memory)], &[]),
        ..container("c")
    };
    let score = |c: Container| oom_score_adj(&pod(vec![c.clone()]), &c, 8 * GI);
    assert_eq!(score(burstable("1Gi")), 875);
    assert_eq!(score(burstable("8Gi")), 3, "at least 3");
    assert_eq!(score(burstable("1")), 999, "below BestEffort's 1000");

    // A sidecar scores no higher than the smallest regular container.
    let mut sidecar = burstable("64Mi");
    sidecar.name = "proxy".into();
    sidecar.restart_policy = Some("Always".into());
    let mut p = pod(vec![burstable("4Gi")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(vec![sidecar.clone()]);
    }
    assert_eq!(oom_score_adj(&p, &sidecar, 8 * GI), 500);

    // Node-critical pods are never below 0 either.
    let mut critical = pod(vec![best_effort.clone()]);
    if let Some(spec) = critical.spec.as_mut() {
        spec.priority_class_name = Some("system-node-critical".into());
        spec.priority = Some(2_000_001_000);
    }
    assert_eq!(oom_score_adj(&critical, &best_effort, 8 * GI), 0);
}

#[test]
fn cpu_limit_without_request_sets_shares_and_every_container_gets_a_period() {
    let mut c = container("app");
    c.resources = resources(&[], &[("cpu", "2")]);
    let p = pod(vec![c.clone()]);
    let ctx = ContainerContext {
        restart_count: 0,
        image_ref: "sha256:abc",
        env: Vec::new(),
        mounts: Vec::new(),
    };
    let config = container_config(&p, &c, &ctx).expect("config");
    let r = config.linux.and_then(|l| l.resources).expect("resources");
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (2048, 200_000, 100_000)
    );
    assert_eq!(r.memory_limit_in_bytes, 0);

    let plain = container("plain");
    let config = container_config(&pod(vec![plain.clone()]), &plain, &ctx).expect("config");
    let r = config.linux.and_then(|l| l.resources).expect("resources");
    assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (2, 0, 100_000));
    assert_eq!(r.oom_score_adj, 1000);

    let mut bad = container("bad");
    bad.resources = resources(&[("cpu", "lots")], &[]);
    assert!(matches!(
        container_config(&pod(vec![bad.clone()]), &bad, &ctx),
        Err(ConfigError::InvalidQuantity { .. })
    ));
}

#[test]
fn container_labels_and_annotations_are_upstreams() {
    let mut c = container("app");
    c.ports = Some(vec![ContainerPort {
        container_port: 8080,
        name: Some("http".into()),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    let mut p = pod(vec![c.clone()]);
    if let Some(spec) = p.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(30);
    }
    let ctx = ContainerContext {
        restart_count: 2,
        image_ref: "sha256:abc",
        env: Vec::new(),
        mounts: Vec::new(),
    };
    let config = container_config(&p, &c, &ctx).expect("config");
    assert_eq!(config.labels.len(), 4, "{:?}", config.labels);
    assert_eq!(config.labels[POD_NAME_LABEL], "web-0");
    assert_eq!(config.labels[POD_NAMESPACE_LABEL], "shop");
    assert!(
        !config.labels.contains_key("app"),
        "pod labels stay on the sandbox"
    );
    let a = &config.annotations;
    assert_eq!(a[RESTART_COUNT_ANNOTATION], "2");
    assert_eq!(
        a[TERMINATION_MESSAGE_PATH_ANNOTATION],
        "/dev/termination-log"
    );
    assert_eq!(a[TERMINATION_MESSAGE_POLICY_ANNOTATION], "File");
    assert_eq!(a[TERMINATION_GRACE_PERIOD_ANNOTATION], "30");
    assert_eq!(
        a[PORTS_ANNOTATION],
        r#"[{"containerPort":8080,"name":"http","protocol":"TCP"}]"#
    );
    assert!(!a.contains_key(PRE_STOP_ANNOTATION));
}

#[test]
fn security_context_merges_pod_and_container() {
    let mut c = container("app");
    c.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: Some(vec!["NET_ADMIN".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        ..SecurityContext::default()
    });
    let mut p = pod(vec![c.clone()]);
    if let Some(spec) = p.spec.as_mut() {
        spec.security_context = Some(PodSecurityContext {
            run_as_user: Some(1),
            run_as_group: Some(2000),
            fs_group: Some(3000),
            supplemental_groups: Some(vec![4000]),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            sysctls: Some(vec![Sysctl {
                name: "net.ipv4.ip_unprivileged_port_start".into(),
                value: "0".into(),
            }]),
            ..PodSecurityContext::default()
        });
    }
    let ctx = ContainerContext {
        restart_count: 0,
        image_ref: "sha256:abc",
        env: Vec::new(),
        mounts: Vec::new(),
    };
    let config = container_config(&p, &c, &ctx).expect("config");
    let sc = config
        .linux
        .and_then(|l| l.security_context)
        .expect("security context");
    assert_eq!(
        sc.run_as_user.map(|v| v.value),
        Some(1000),
        "container wins"
    );
    assert_eq!(sc.run_as_group.map(|v| v.value), Some(2000), "pod fills in");
    assert_eq!(sc.supplemental_groups, [3000, 4000], "fsGroup first");
    assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(ProfileType::RuntimeDefault as i32)
    );
    assert!(sc.masked_paths.iter().any(|p| p == "/proc/kcore"));
    assert!(sc.readonly_paths.iter().any(|p| p == "/proc/sys"));

    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = sandbox_config(&p, 0, &context(dir.path(), None)).expect("sandbox");
    let linux = sandbox.linux.expect("linux");
    assert_eq!(linux.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
    let sandbox_sc = linux.security_context.expect("security context");
    assert_eq!(sandbox_sc.run_as_user.map(|v| v.value), Some(1));
    assert_eq!(sandbox_sc.supplemental_groups, [3000, 4000]);
    assert!(!sandbox_sc.privileged);
    assert_eq!(
        sandbox_sc.seccomp.map(|s| s.profile_type),
        Some(ProfileType::RuntimeDefault as i32),
        "the pause container runs under the runtime default"
    );
}

#[test]
fn privileged_containers_make_a_privileged_sandbox() {
    let mut c = container("app");
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..SecurityContext::default()
    });
    let p = pod(vec![container("plain"), c.clone()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = sandbox_config(&p, 0, &context(dir.path(), None)).expect("sandbox");
    let sandbox_sc = sandbox.linux.and_then(|l| l.security_context).expect("sc");
    assert!(sandbox_sc.privileged);
    let ctx = ContainerContext {
        restart_count: 0,
        image_ref: "sha256:abc",
        env: Vec::new(),
        mounts: Vec::new(),
    };
    let sc = container_config(&p, &c, &ctx)
        .expect("config")
        .linux
        .and_then(|l| l.security_context)
        .expect("sc");
    assert!(sc.privileged && sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(ProfileType::Unconfined as i32)
    );

    let mut localhost = container("local");
    localhost.security_context = Some(SecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some("audit.json".into()),
        }),
        ..SecurityContext::default()
    });
    assert!(matches!(
        container_config(&pod(vec![localhost.clone()]), &localhost, &ctx),
        Err(ConfigError::Unsupported(_))
    ));
}

#[test]
fn host_namespaces() {
    let mut p = pod(vec![container("c")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.host_network = Some(true);
        spec.host_pid = Some(true);
        spec.share_process_namespace = Some(true);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sandbox_config(&p, 0, &context(dir.path(), Some(cluster_dns()))).expect("config");
    assert_eq!(
        config.hostname, "",
        "host network pods keep the node's name"
    );
    let ns = config
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options)
        .expect("ns");
    assert_eq!(ns.network, NamespaceMode::Node as i32);
    assert_eq!(ns.pid, NamespaceMode::Node as i32);
    assert_eq!(ns.ipc, NamespaceMode::Pod as i32);
    // ClusterFirst on the host network uses the host's resolver.
    let dns = config.dns_config.expect("dns");
    assert_eq!(dns.servers, ["192.0.2.53"]);

    if let Some(spec) = p.spec.as_mut() {
        spec.host_pid = None;
        spec.dns_policy = Some("ClusterFirstWithHostNet".into());
    }
    let config = sandbox_config(&p, 0, &context(dir.path(), Some(cluster_dns()))).expect("config");
    let ns = config
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options)
        .expect("ns");
    assert_eq!(ns.pid, NamespaceMode::Pod as i32, "shareProcessNamespace");
    assert_eq!(config.dns_config.expect("dns").servers, ["10.43.0.10"]);
}

#[test]
fn dns_policy_edge_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), Some(cluster_dns()));
    let mut p = pod(vec![container("c")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.dns_policy = Some("Sometimes".into());
    }
    assert_eq!(
        dns_config(&p, &ctx),
        Err(ConfigError::InvalidDnsPolicy("Sometimes".into()))
    );

    // dnsConfig merges: duplicates dropped, options replaced by name, at most
    // three servers.
    if let Some(spec) = p.spec.as_mut() {
        spec.dns_policy = Some("ClusterFirst".into());
        spec.dns_config = Some(PodDNSConfig {
            nameservers: Some(vec![
                "10.43.0.10".into(),
                "1.1.1.1".into(),
                "8.8.8.8".into(),
                "9.9.9.9".into(),
            ]),
            searches: Some(vec!["cluster.local".into(), "extra.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("single-request".into()),
                    value: None,
                },
            ]),
        });
    }
    let dns = dns_config(&p, &ctx).expect("dns");
    assert_eq!(dns.servers, ["10.43.0.10", "1.1.1.1", "8.8.8.8"]);
    assert_eq!(
        dns.searches,
        [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example",
            "extra.example"
        ]
    );
    assert_eq!(dns.options, ["ndots:2", "single-request"]);

    // Search lists are cut to the resolver's limits.
    if let Some(spec) = p.spec.as_mut() {
        spec.dns_policy = Some("None".into());
        spec.dns_config = Some(PodDNSConfig {
            searches: Some((0..40).map(|i| format!("{i}.{}", "d".repeat(80))).collect()),
            ..PodDNSConfig::default()
        });
    }
    let dns = dns_config(&p, &ctx).expect("dns");
    assert!(dns.searches.len() <= 32);
    assert!(dns.searches.join(" ").len() <= 2048);
    assert_eq!(dns.searches[0], format!("0.{}", "d".repeat(80)));
}

#[test]
fn resolv_conf_parsing_follows_the_resolver() {
    let config = dns::parse_resolv_conf(
        "# comment\nnameserver 10.0.0.1 ; trailing\nnameserver not-an-ip\n\
         search old.example\nsearch a.example. . b.example\n\
         options ndots:1 edns0\noptions ndots:3\n",
    );
    assert_eq!(config.servers, ["10.0.0.1"]);
    assert_eq!(config.searches, ["a.example", "b.example"]);
    assert_eq!(config.options, ["ndots:3", "edns0"]);
}

#[test]
fn hostnames_subdomains_and_fqdn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path(), Some(cluster_dns()));
    let mut p = pod(vec![container("c")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.hostname = Some("db-0".into());
        spec.subdomain = Some("db".into());
    }
    assert_eq!(
        hostname_and_domain(&p, "cluster.local"),
        Ok(("db-0".into(), Some("db.shop.svc.cluster.local".into())))
    );
    assert_eq!(
        sandbox_config(&p, 0, &ctx).expect("config").hostname,
        "db-0"
    );
    if let Some(spec) = p.spec.as_mut() {
        spec.set_hostname_as_fqdn = Some(true);
    }
    assert_eq!(
        sandbox_config(&p, 0, &ctx).expect("config").hostname,
        "db-0.db.shop.svc.cluster.local"
    );
    if let Some(spec) = p.spec.as_mut() {
        spec.hostname = Some("h".repeat(40));
    }
    assert!(matches!(
        sandbox_config(&p, 0, &ctx),
        Err(ConfigError::InvalidHostname(m)) if m.contains("too long")
    ));
    if let Some(spec) = p.spec.as_mut() {
        spec.hostname = Some("Not_A_Label".into());
    }
    assert!(matches!(
        hostname_and_domain(&p, "cluster.local"),
        Err(ConfigError::InvalidHostname(_))
    ));
}

#[test]
fn etc_hosts_names_the_pod_and_its_aliases() {
    let mut p = pod(vec![container("c")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.subdomain = Some("web".into());
        spec.host_aliases = Some(vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
        }]);
    }
    let hosts = etc_hosts(&p, &["10.42.0.5".into()], "cluster.local", "unused").expect("hosts");
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    assert!(hosts.contains("\n10.42.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
    assert!(hosts.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"));

    if let Some(spec) = p.spec.as_mut() {
        spec.host_network = Some(true);
        spec.host_aliases = None;
    }
    let hosts = etc_hosts(&p, &[], "cluster.local", "127.0.0.1 localhost\n").expect("hosts");
    assert_eq!(
        hosts,
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
    );
}
