use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::HTTPIngressPath;
use serde_json::{Value, json};

use super::*;

/// An Ingress created at second `age` of 2025-01-01 with the given spec.
fn ingress(namespace: &str, name: &str, age: u32, spec: Value) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "namespace": namespace,
                "name": name,
                "creationTimestamp": format!("2025-01-01T00:00:{age:02}Z"),
            },
            "spec": spec,
        }))
        .unwrap(),
    )
}

/// A host rule with `(path, pathType, service, port)` paths; port numbers
/// are JSON numbers, names JSON strings.
fn rule(host: Option<&str>, paths: &[(&str, &str, &str, Value)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, path_type, service, port)| {
            json!({"path": path, "pathType": path_type, "backend": service_backend(service, port)})
        })
        .collect();
    let mut rule = json!({"http": {"paths": paths}});
    if let Some(host) = host {
        rule["host"] = json!(host);
    }
    rule
}

fn service_backend(service: &str, port: &Value) -> Value {
    let port = if port.is_string() {
        json!({"name": port})
    } else {
        json!({"number": port})
    };
    json!({"service": {"name": service, "port": port}})
}

/// A Service with `(name, port, targetPort)` ports.
fn service(namespace: &str, name: &str, ports: &[(&str, i32)]) -> Arc<Service> {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| {
            let mut p = json!({"port": port, "targetPort": 8080, "protocol": "TCP"});
            if !port_name.is_empty() {
                p["name"] = json!(port_name);
            }
            p
        })
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"ports": ports},
        }))
        .unwrap(),
    )
}

/// An EndpointSlice of `service` with `(name, port)` ports and `(ip, ready)`
/// endpoints (`ready: None` leaves the condition unset).
fn slice(
    namespace: &str,
    service: &str,
    ports: &[(&str, i32)],
    endpoints: &[(&str, Option<bool>)],
) -> Arc<EndpointSlice> {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| match ready {
            Some(ready) => json!({"addresses": [ip], "conditions": {"ready": ready}}),
            None => json!({"addresses": [ip]}),
        })
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "namespace": namespace,
                "name": format!("{service}-{}", endpoints.len()),
                "labels": {SERVICE_NAME_LABEL: service},
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap(),
    )
}

/// Services `web` (port 80 "http" → 8000) and `api` (8080 "grpc" → 8001,
/// 9090 "metrics" → 9001) in `default`, each with one ready endpoint.
struct World {
    ingresses: Vec<Arc<Ingress>>,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

impl World {
    fn new(ingresses: Vec<Arc<Ingress>>) -> Self {
        Self {
            ingresses,
            services: vec![
                service("default", "web", &[("http", 80)]),
                service("default", "api", &[("grpc", 8080), ("metrics", 9090)]),
            ],
            slices: vec![
                slice(
                    "default",
                    "web",
                    &[("http", 8000)],
                    &[("10.42.0.1", Some(true))],
                ),
                slice(
                    "default",
                    "api",
                    &[("grpc", 8001), ("metrics", 9001)],
                    &[("10.42.0.2", Some(true))],
                ),
            ],
        }
    }

    fn table(&self) -> RoutingTable {
        RoutingTable::build(&Inputs {
            ingresses: &self.ingresses,
            services: &self.services,
            endpoint_slices: &self.slices,
        })
    }
}

/// The endpoint a request goes to, `None` for 404; panics if the backend has
/// no endpoints.
fn target(table: &RoutingTable, host: &str, path: &str) -> Option<String> {
    match table.route(host, path) {
        RouteMatch::Backend { backend, .. } => Some(
            backend
                .pick()
                .unwrap_or_else(|| panic!("{} has no endpoint", backend.reference()))
                .to_string(),
        ),
        RouteMatch::NotFound => None,
    }
}

const WEB: &str = "10.42.0.1:8000";
const API: &str = "10.42.0.2:8001";

#[test]
fn prefix_matches_element_wise() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[("/foo", "Prefix", "web", json!(80))])]}),
    )]);
    let table = world.table();
    for path in ["/foo", "/foo/", "/foo/bar", "/foo/bar/"] {
        assert_eq!(target(&table, "x", path).as_deref(), Some(WEB), "{path}");
    }
    for path in ["/foobar", "/", "/fo", "/Foo", "/bar/foo"] {
        assert_eq!(target(&table, "x", path), None, "{path}");
    }
}

#[test]
fn prefix_with_trailing_slash_matches_without_it() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[("/aaa/bbb/", "Prefix", "web", json!(80))])]}),
    )]);
    let table = world.table();
    for path in ["/aaa/bbb", "/aaa/bbb/", "/aaa/bbb/ccc"] {
        assert_eq!(target(&table, "x", path).as_deref(), Some(WEB), "{path}");
    }
    assert_eq!(target(&table, "x", "/aaa/bbbxyz"), None);
    assert_eq!(target(&table, "x", "/aaa"), None);
}

#[test]
fn root_prefix_and_implementation_specific_match_everything() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [
            rule(Some("a.example.com"), &[("/", "Prefix", "web", json!(80))]),
            rule(Some("b.example.com"), &[("/", "ImplementationSpecific", "api", json!(8080))]),
        ]}),
    )]);
    let table = world.table();
    for path in ["/", "/x", "/x/y"] {
        assert_eq!(target(&table, "a.example.com", path).as_deref(), Some(WEB));
        assert_eq!(target(&table, "b.example.com", path).as_deref(), Some(API));
    }
}

#[test]
fn implementation_specific_is_prefix() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[("/docs", "ImplementationSpecific", "web", json!(80))])]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "x", "/docs/a").as_deref(), Some(WEB));
    assert_eq!(target(&table, "x", "/docsa"), None);
}

#[test]
fn exact_matches_only_the_whole_path() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[("/foo", "Exact", "web", json!(80))])]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "x", "/foo").as_deref(), Some(WEB));
    for path in ["/foo/", "/foo/bar", "/FOO", "/fo"] {
        assert_eq!(target(&table, "x", path), None, "{path}");
    }
}

#[test]
fn longest_path_wins_and_exact_beats_prefix_at_equal_length() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[
            ("/", "Prefix", "web", json!(80)),
            ("/aaa", "Prefix", "api", json!(8080)),
            ("/aaa/bbb", "Prefix", "web", json!(80)),
            ("/ccc/", "Prefix", "web", json!(80)),
            ("/ccc", "Exact", "api", json!(8080)),
        ])]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "x", "/aaa/ccc").as_deref(), Some(API));
    assert_eq!(target(&table, "x", "/aaa/bbb").as_deref(), Some(WEB));
    assert_eq!(target(&table, "x", "/aaa/bbb/c").as_deref(), Some(WEB));
    assert_eq!(target(&table, "x", "/zzz").as_deref(), Some(WEB));
    // `/ccc/` (Prefix) and `/ccc` (Exact) have the same length once the
    // trailing slash is dropped: Exact wins for `/ccc`, Prefix for the rest.
    assert_eq!(target(&table, "x", "/ccc").as_deref(), Some(API));
    assert_eq!(target(&table, "x", "/ccc/").as_deref(), Some(WEB));
    assert_eq!(target(&table, "x", "/ccc/d").as_deref(), Some(WEB));
}

#[test]
fn exact_wins_over_prefix_regardless_of_declaration_order() {
    for order in [["Prefix", "Exact"], ["Exact", "Prefix"]] {
        let paths: Vec<(&str, &str, &str, Value)> = order
            .iter()
            .map(|t| {
                let (svc, port) = if *t == "Exact" {
                    ("api", json!(8080))
                } else {
                    ("web", json!(80))
                };
                ("/foo", *t, svc, port)
            })
            .collect();
        let world = World::new(vec![ingress(
            "default",
            "a",
            0,
            json!({"rules": [rule(None, &paths)]}),
        )]);
        let table = world.table();
        assert_eq!(target(&table, "x", "/foo").as_deref(), Some(API));
        assert_eq!(target(&table, "x", "/foo/x").as_deref(), Some(WEB));
    }
}

#[test]
fn hosts_match_exactly_or_by_one_wildcard_label() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [
            rule(Some("foo.example.com"), &[("/", "Prefix", "web", json!(80))]),
            rule(Some("*.example.com"), &[("/", "Prefix", "api", json!(8080))]),
        ]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "foo.example.com", "/").as_deref(), Some(WEB));
    assert_eq!(target(&table, "bar.example.com", "/").as_deref(), Some(API));
    assert_eq!(target(&table, "example.com", "/"), None);
    assert_eq!(target(&table, "a.b.example.com", "/"), None);
    assert_eq!(target(&table, ".example.com", "/"), None);
    assert_eq!(target(&table, "foo.example.org", "/"), None);
}

#[test]
fn host_comparison_ignores_case_port_and_trailing_dot() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(Some("Foo.Example.com"), &[("/", "Prefix", "web", json!(80))])]}),
    )]);
    let table = world.table();
    for host in [
        "foo.example.com",
        "FOO.example.COM",
        "foo.example.com:8443",
        "foo.example.com.",
        "foo.example.com.:80",
    ] {
        assert_eq!(target(&table, host, "/").as_deref(), Some(WEB), "{host}");
    }
}

#[test]
fn normalize_host_handles_ipv6_literals() {
    assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    assert_eq!(normalize_host("[::1]"), "[::1]");
    assert_eq!(normalize_host("10.0.0.1:80"), "10.0.0.1");
    assert_eq!(normalize_host("a.b"), "a.b");
    assert!(matches!(normalize_host("a.b:1"), Cow::Borrowed("a.b")));
}

#[test]
fn more_specific_host_is_tried_first_then_falls_through() {
    // The worked example of the module docs.
    let world = World::new(vec![
        ingress(
            "default",
            "a",
            0,
            json!({"rules": [
                rule(Some("a.example.com"), &[("/api", "Prefix", "api", json!(8080))]),
                rule(Some("*.example.com"), &[("/", "Prefix", "web", json!(80))]),
            ]}),
        ),
        ingress(
            "default",
            "b",
            1,
            json!({
                "defaultBackend": service_backend("api", &json!("metrics")),
                "rules": [rule(None, &[("/static", "Exact", "api", json!(8080))])],
            }),
        ),
    ]);
    let table = world.table();
    assert_eq!(
        target(&table, "a.example.com", "/api/v1").as_deref(),
        Some(API)
    );
    assert_eq!(target(&table, "a.example.com", "/").as_deref(), Some(WEB));
    assert_eq!(
        target(&table, "b.example.com", "/static").as_deref(),
        Some(WEB)
    );
    assert_eq!(target(&table, "other.org", "/static").as_deref(), Some(API));
    assert_eq!(
        target(&table, "other.org", "/x").as_deref(),
        Some("10.42.0.2:9001")
    );
}

#[test]
fn exact_host_beats_wildcard_even_with_a_shorter_path() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [
            rule(Some("*.example.com"), &[("/long/path", "Prefix", "api", json!(8080))]),
            rule(Some("a.example.com"), &[("/", "Prefix", "web", json!(80))]),
        ]}),
    )]);
    let table = world.table();
    assert_eq!(
        target(&table, "a.example.com", "/long/path").as_deref(),
        Some(WEB)
    );
    assert_eq!(
        target(&table, "b.example.com", "/long/path").as_deref(),
        Some(API)
    );
}

#[test]
fn nothing_matching_and_no_default_backend_is_not_found() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(Some("a.example.com"), &[("/app", "Prefix", "web", json!(80))])]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "a.example.com", "/other"), None);
    assert_eq!(target(&table, "b.example.com", "/app"), None);
    assert!(matches!(
        RoutingTable::default().route("x", "/"),
        RouteMatch::NotFound
    ));
}

#[test]
fn default_backend_alone_takes_everything() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"defaultBackend": service_backend("web", &json!("http"))}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "any", "/any/path").as_deref(), Some(WEB));
}

#[test]
fn oldest_ingress_wins_conflicts_whatever_the_input_order() {
    let old = ingress(
        "team-b",
        "old",
        1,
        json!({
            "defaultBackend": service_backend("web", &json!(80)),
            "rules": [rule(Some("a.example.com"), &[("/x", "Prefix", "web", json!(80))])],
        }),
    );
    let new = ingress(
        "team-a",
        "new",
        2,
        json!({
            "defaultBackend": service_backend("web", &json!(80)),
            "rules": [rule(Some("a.example.com"), &[
                ("/x/", "Prefix", "web", json!(80)),
                ("/y", "Prefix", "web", json!(80)),
            ])],
        }),
    );
    for ingresses in [
        vec![old.clone(), new.clone()],
        vec![new.clone(), old.clone()],
    ] {
        let mut world = World::new(ingresses);
        for ns in ["team-a", "team-b"] {
            world.services.push(service(ns, "web", &[("http", 80)]));
            let ip = if ns == "team-a" {
                "10.42.1.1"
            } else {
                "10.42.2.2"
            };
            world
                .slices
                .push(slice(ns, "web", &[("http", 8000)], &[(ip, Some(true))]));
        }
        let table = world.table();
        let old_ref = IngressRef {
            namespace: "team-b".into(),
            name: "old".into(),
        };
        let new_ref = IngressRef {
            namespace: "team-a".into(),
            name: "new".into(),
        };
        // `/x/` and `/x` are the same Prefix path: the older Ingress keeps it.
        assert_eq!(
            target(&table, "a.example.com", "/x/1").as_deref(),
            Some("10.42.2.2:8000")
        );
        assert_eq!(
            target(&table, "a.example.com", "/y").as_deref(),
            Some("10.42.1.1:8000")
        );
        assert_eq!(
            target(&table, "zzz", "/").as_deref(),
            Some("10.42.2.2:8000")
        );
        assert_eq!(
            table.conflicts(),
            [
                Conflict {
                    route: None,
                    kept: old_ref.clone(),
                    dropped: new_ref.clone(),
                },
                Conflict {
                    route: Some(("a.example.com".into(), "/x".into(), PathMatch::Prefix)),
                    kept: old_ref,
                    dropped: new_ref,
                },
            ]
        );
    }
}

#[test]
fn same_age_conflicts_go_to_namespace_then_name_order() {
    let spec = json!({"rules": [rule(None, &[("/", "Prefix", "web", json!(80))])]});
    let b = ingress("default", "b", 5, spec.clone());
    let a = ingress("default", "a", 5, spec);
    let world = World::new(vec![b, a]);
    let table = world.table();
    match table.route("x", "/") {
        RouteMatch::Backend { source, .. } => assert_eq!(source.name, "a"),
        RouteMatch::NotFound => panic!("no route"),
    }
    assert_eq!(table.conflicts()[0].dropped.name, "b");
}

#[test]
fn duplicate_paths_in_one_ingress_keep_the_first_without_a_conflict() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[
            ("/p", "Prefix", "web", json!(80)),
            ("/p", "Prefix", "api", json!(8080)),
        ])]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "x", "/p").as_deref(), Some(WEB));
    assert!(table.conflicts().is_empty());
}

#[test]
fn service_port_by_name_resolves_to_the_slice_port_of_that_name() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[
            ("/grpc", "Prefix", "api", json!("grpc")),
            ("/metrics", "Prefix", "api", json!("metrics")),
            ("/by-number", "Prefix", "api", json!(9090)),
        ])]}),
    )]);
    let table = world.table();
    assert_eq!(target(&table, "x", "/grpc").as_deref(), Some(API));
    assert_eq!(
        target(&table, "x", "/metrics").as_deref(),
        Some("10.42.0.2:9001")
    );
    assert_eq!(
        target(&table, "x", "/by-number").as_deref(),
        Some("10.42.0.2:9001")
    );
}

#[test]
fn unnamed_service_port_matches_the_unnamed_slice_port() {
    let mut world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[("/", "Prefix", "solo", json!(80))])]}),
    )]);
    world.services.push(service("default", "solo", &[("", 80)]));
    world.slices.push(slice(
        "default",
        "solo",
        &[("", 3000)],
        &[("10.42.0.9", Some(true))],
    ));
    assert_eq!(
        target(&world.table(), "x", "/").as_deref(),
        Some("10.42.0.9:3000")
    );
}

fn backend_of<'a>(table: &'a RoutingTable, path: &str) -> &'a Arc<Backend> {
    match table.route("x", path) {
        RouteMatch::Backend { backend, .. } => backend,
        RouteMatch::NotFound => panic!("no route for {path}"),
    }
}

#[test]
fn only_ready_endpoints_across_slices_are_used() {
    let mut world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[("/", "Prefix", "multi", json!(80))])]}),
    )]);
    world
        .services
        .push(service("default", "multi", &[("http", 80)]));
    world.slices.push(slice(
        "default",
        "multi",
        &[("http", 8000)],
        &[
            ("10.42.0.3", Some(true)),
            ("10.42.0.4", Some(false)),
            ("10.42.0.5", None),
        ],
    ));
    world.slices.push(slice(
        "default",
        "multi",
        &[("http", 8000)],
        &[("10.42.1.6", Some(true)), ("10.42.0.3", Some(true))],
    ));
    // A slice of the same name in another namespace must not count.
    world.slices.push(slice(
        "other",
        "multi",
        &[("http", 8000)],
        &[("10.42.9.9", Some(true))],
    ));
    let table = world.table();
    let backend = backend_of(&table, "/");
    let expected: Vec<SocketAddr> = ["10.42.0.3:8000", "10.42.0.5:8000", "10.42.1.6:8000"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(backend.endpoints(), expected);
    assert_eq!(backend.problem(), None);
}

#[test]
fn round_robin_spreads_evenly_and_routes_share_a_backend() {
    let mut world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[
            ("/a", "Prefix", "multi", json!(80)),
            ("/b", "Prefix", "multi", json!("http")),
            ("/c", "Prefix", "multi", json!(80)),
        ])]}),
    )]);
    world
        .services
        .push(service("default", "multi", &[("http", 80)]));
    world.slices.push(slice(
        "default",
        "multi",
        &[("http", 8000)],
        &[("10.42.0.3", Some(true)), ("10.42.0.4", Some(true))],
    ));
    let table = world.table();
    assert!(Arc::ptr_eq(
        backend_of(&table, "/a"),
        backend_of(&table, "/c")
    ));
    let mut counts: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for i in 0..100 {
        let path = if i % 2 == 0 { "/a" } else { "/c" };
        *counts
            .entry(backend_of(&table, path).pick().unwrap())
            .or_default() += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [50, 50]);
}

#[test]
fn unavailable_backends_say_why() {
    let mut world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({"rules": [rule(None, &[
            ("/missing", "Prefix", "nope", json!(80)),
            ("/bad-port", "Prefix", "web", json!(81)),
            ("/bad-name", "Prefix", "web", json!("grpc")),
            ("/unready", "Prefix", "sleepy", json!(80)),
            ("/external", "Prefix", "ext", json!(80)),
            ("/empty", "Prefix", "empty", json!(80)),
        ])]}),
    )]);
    world
        .services
        .push(service("default", "sleepy", &[("http", 80)]));
    world.slices.push(slice(
        "default",
        "sleepy",
        &[("http", 8000)],
        &[("10.42.0.7", Some(false))],
    ));
    world
        .services
        .push(service("default", "empty", &[("http", 80)]));
    world.services.push(Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.org", "ports": [{"port": 80}]},
        }))
        .unwrap(),
    ));
    let table = world.table();
    for (path, problem) in [
        ("/missing", BackendProblem::NoService),
        ("/bad-port", BackendProblem::NoServicePort),
        ("/bad-name", BackendProblem::NoServicePort),
        ("/unready", BackendProblem::NoReadyEndpoints),
        ("/external", BackendProblem::ExternalName),
        ("/empty", BackendProblem::NoReadyEndpoints),
    ] {
        let backend = backend_of(&table, path);
        assert_eq!(backend.problem(), Some(problem), "{path}");
        assert_eq!(backend.pick(), None, "{path}");
    }
}

#[test]
fn resource_and_portless_backends_are_unsupported() {
    let mut spec = json!({
        "defaultBackend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}},
        "rules": [rule(None, &[("/x", "Prefix", "web", json!(80))])],
    });
    spec["rules"][0]["http"]["paths"][0]["backend"] = json!({"service": {"name": "web"}});
    let world = World::new(vec![ingress("default", "a", 0, spec)]);
    let table = world.table();
    let resource = backend_of(&table, "/other");
    assert_eq!(resource.problem(), Some(BackendProblem::Unsupported));
    assert_eq!(
        resource.reference().to_string(),
        "resource default/Bucket/b"
    );
    assert_eq!(
        backend_of(&table, "/x").problem(),
        Some(BackendProblem::Unsupported)
    );
}

#[test]
fn backends_of_other_namespaces_are_not_reachable() {
    let world = World::new(vec![ingress(
        "elsewhere",
        "a",
        0,
        json!({"rules": [rule(None, &[("/", "Prefix", "web", json!(80))])]}),
    )]);
    let table = world.table();
    assert_eq!(
        backend_of(&table, "/").problem(),
        Some(BackendProblem::NoService)
    );
}

#[test]
fn rules_without_http_and_paths_without_a_path_are_handled() {
    let mut spec = json!({"rules": [
        {"host": "nohttp.example.com"},
        rule(Some("a.example.com"), &[("/", "ImplementationSpecific", "web", json!(80))]),
    ]});
    let path: &mut Value = &mut spec["rules"][1]["http"]["paths"][0];
    path.as_object_mut().unwrap().remove("path");
    let parsed: HTTPIngressPath = serde_json::from_value(path.clone()).unwrap();
    assert_eq!(parsed.path, None);
    let world = World::new(vec![ingress("default", "a", 0, spec)]);
    let table = world.table();
    assert_eq!(
        target(&table, "a.example.com", "/any").as_deref(),
        Some(WEB)
    );
    assert_eq!(target(&table, "nohttp.example.com", "/"), None);
}

#[test]
fn backends_lists_each_backend_once() {
    let world = World::new(vec![ingress(
        "default",
        "a",
        0,
        json!({
            "defaultBackend": service_backend("web", &json!(80)),
            "rules": [
                rule(Some("a.example.com"), &[("/", "Prefix", "web", json!(80))]),
                rule(None, &[("/", "Prefix", "api", json!(8080))]),
            ],
        }),
    )]);
    let mut names: Vec<String> = world
        .table()
        .backends()
        .map(|b| b.reference().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["service default/api:8080", "service default/web:80"]
    );
}
