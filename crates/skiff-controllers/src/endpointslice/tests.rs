use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::endpoint::{AddressType, LABEL_HEADLESS};
use super::reconciler::{plan, pod_endpoint, slice_labels};
use super::*;

fn service(ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("svc-uid".into()),
            labels: Some(BTreeMap::from([("tier".into(), "front".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn http_port(target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port: 80,
        protocol: Some("TCP".into()),
        target_port: Some(target),
        ..ServicePort::default()
    }
}

fn web() -> Service {
    service(vec![http_port(IntOrString::Int(8080))])
}

fn pod(name: &str, ips: &[&str], ready: bool) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    })
}

fn pods(count: usize) -> Vec<Arc<Pod>> {
    (0..count)
        .map(|i| {
            pod(
                &format!("p{i:03}"),
                &[&format!("10.1.{}.{}", i / 250, i % 250 + 1)],
                true,
            )
        })
        .collect()
}

fn node(name: &str, zone: Option<&str>) -> Arc<Node> {
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: zone
                .map(|z| BTreeMap::from([(endpoint::LABEL_ZONE.to_string(), z.to_string())])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    })
}

fn nodes(name: &str) -> Option<Arc<Node>> {
    (name == "n1").then(|| node("n1", Some("zone-a")))
}

/// Gives the planned creates names, as the API would, so a second plan can
/// run against the first one's result.
fn applied(plan: SlicePlan, existing: &[Arc<EndpointSlice>]) -> Vec<Arc<EndpointSlice>> {
    let mut result: BTreeMap<String, Arc<EndpointSlice>> = existing
        .iter()
        .map(|s| (s.name_any(), Arc::clone(s)))
        .collect();
    for slice in &plan.delete {
        result.remove(&slice.name_any());
    }
    for slice in plan.update {
        result.insert(slice.name_any(), Arc::new(slice));
    }
    for (i, mut slice) in plan.create.into_iter().enumerate() {
        let name = format!("web-new{}-{i}", result.len());
        slice.metadata.name = Some(name.clone());
        result.insert(name, Arc::new(slice));
    }
    result.into_values().collect()
}

fn endpoint_names(slice: &EndpointSlice) -> Vec<String> {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| e.target_ref.as_ref()?.name.clone())
        .collect()
}

#[test]
fn a_ready_pod_becomes_one_endpoint_of_a_new_slice() {
    let svc = service(vec![http_port(IntOrString::String("http".into()))]);
    let plan = plan(&svc, &[pod("a", &["10.1.0.5"], true)], &nodes, &[], 100);
    assert!(plan.update.is_empty() && plan.delete.is_empty());
    let [slice] = plan.create.as_slice() else {
        panic!("one slice, got {:?}", plan.create);
    };
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(slice.metadata.name, None);
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(
        slice.labels(),
        &BTreeMap::from([
            ("tier".to_string(), "front".to_string()),
            ("kubernetes.io/service-name".to_string(), "web".to_string()),
            (
                "endpointslice.kubernetes.io/managed-by".to_string(),
                "endpointslice-controller.k8s.io".to_string()
            ),
        ])
    );
    let owner = &slice.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", "svc-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        slice.ports,
        Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }])
    );
    let endpoints = slice.endpoints.as_deref().unwrap();
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    assert_eq!(endpoint.addresses, ["10.1.0.5"]);
    assert_eq!(
        endpoint.conditions,
        Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        })
    );
    assert_eq!(endpoint.node_name.as_deref(), Some("n1"));
    assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
    let target = endpoint.target_ref.as_ref().unwrap();
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.name.as_deref(), Some("a"));
    assert_eq!(target.uid.as_deref(), Some("uid-a"));
}

#[test]
fn conditions_follow_readiness_termination_and_publish_not_ready() {
    let mut svc = web();
    let unready = pod("u", &["10.1.0.6"], false);
    let mut terminating = (*pod("t", &["10.1.0.7"], true)).clone();
    terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let conditions = |svc: &Service, p: &Pod| {
        let c = pod_endpoint(p, None, svc, AddressType::IPv4)
            .conditions
            .unwrap();
        (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
    };
    assert_eq!(conditions(&svc, &unready), (false, false, false));
    assert_eq!(conditions(&svc, &terminating), (false, true, true));
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    assert_eq!(conditions(&svc, &unready), (true, false, false));
    assert_eq!(conditions(&svc, &terminating), (true, true, true));
}

#[test]
fn hostname_is_published_only_for_the_named_subdomain() {
    let svc = web();
    let mut p = (*pod("a", &["10.1.0.5"], true)).clone();
    let spec = p.spec.as_mut().unwrap();
    spec.hostname = Some("a-0".into());
    spec.subdomain = Some("web".into());
    assert_eq!(
        pod_endpoint(&p, None, &svc, AddressType::IPv4)
            .hostname
            .as_deref(),
        Some("a-0")
    );
    p.spec.as_mut().unwrap().subdomain = Some("other".into());
    assert_eq!(
        pod_endpoint(&p, None, &svc, AddressType::IPv4).hostname,
        None
    );
}

#[test]
fn pods_without_ip_terminal_pods_and_missing_named_ports_are_handled() {
    let svc = service(vec![
        http_port(IntOrString::String("http".into())),
        ServicePort {
            name: Some("admin".into()),
            port: 9000,
            protocol: Some("TCP".into()),
            target_port: Some(IntOrString::String("admin".into())),
            ..ServicePort::default()
        },
    ]);
    let mut done = (*pod("done", &["10.1.0.9"], false)).clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let plan = plan(
        &svc,
        &[
            pod("a", &["10.1.0.5"], true),
            pod("no-ip", &[], false),
            Arc::new(done),
        ],
        &nodes,
        &[],
        100,
    );
    assert_eq!(plan.create.len(), 1);
    let slice = &plan.create[0];
    assert_eq!(endpoint_names(slice), ["a"]);
    // "admin" is not a port of the pod: only "http" is published.
    let ports: Vec<_> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| p.name.clone().unwrap())
        .collect();
    assert_eq!(ports, ["http"]);
}

#[test]
fn pods_whose_named_ports_differ_get_separate_slices() {
    let svc = service(vec![http_port(IntOrString::String("http".into()))]);
    let mut other = (*pod("b", &["10.1.0.6"], true)).clone();
    other.spec.as_mut().unwrap().containers[0]
        .ports
        .as_mut()
        .unwrap()[0]
        .container_port = 9090;
    let plan = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], true), Arc::new(other)],
        &nodes,
        &[],
        100,
    );
    let mut by_port: Vec<(i32, Vec<String>)> = plan
        .create
        .iter()
        .map(|s| {
            (
                s.ports.as_ref().unwrap()[0].port.unwrap(),
                endpoint_names(s),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        [(8080, vec!["a".to_string()]), (9090, vec!["b".to_string()])]
    );
}

#[test]
fn dual_stack_services_get_a_slice_per_family() {
    let mut svc = web();
    svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let plan = plan(
        &svc,
        &[pod("a", &["10.1.0.5", "fd00::5"], true)],
        &nodes,
        &[],
        100,
    );
    let mut families: Vec<(String, Vec<String>)> = plan
        .create
        .iter()
        .map(|s| {
            (
                s.address_type.clone(),
                s.endpoints.as_ref().unwrap()[0].addresses.clone(),
            )
        })
        .collect();
    families.sort();
    assert_eq!(
        families,
        [
            ("IPv4".to_string(), vec!["10.1.0.5".to_string()]),
            ("IPv6".to_string(), vec!["fd00::5".to_string()]),
        ]
    );
}

#[test]
fn endpoints_are_split_at_the_slice_capacity() {
    let plan = plan(&web(), &pods(250), &nodes, &[], 100);
    let mut sizes: Vec<usize> = plan
        .create
        .iter()
        .map(|s| s.endpoints.as_ref().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
}

#[test]
fn an_unchanged_service_needs_no_writes() {
    let svc = web();
    let all = pods(150);
    let existing = applied(plan(&svc, &all, &nodes, &[], 100), &[]);
    let again = plan(&svc, &all, &nodes, &existing, 100);
    assert!(again.create.is_empty(), "{:?}", again.create);
    assert!(again.update.is_empty(), "{:?}", again.update);
    assert!(again.delete.is_empty(), "{:?}", again.delete);
}

#[test]
fn a_replaced_pod_is_one_update_of_the_slice_that_held_it() {
    let svc = web();
    let mut all = pods(150);
    let existing = applied(plan(&svc, &all, &nodes, &[], 100), &[]);
    let holder = existing
        .iter()
        .find(|s| endpoint_names(s).contains(&"p007".to_string()))
        .unwrap()
        .name_any();
    all.retain(|p| p.name_any() != "p007");
    all.push(pod("p999", &["10.9.9.9"], true));
    let next = plan(&svc, &all, &nodes, &existing, 100);
    assert!(next.create.is_empty() && next.delete.is_empty());
    let [updated] = next.update.as_slice() else {
        panic!("one update, got {:?}", next.update);
    };
    assert_eq!(updated.name_any(), holder);
    let names = endpoint_names(updated);
    assert!(names.contains(&"p999".to_string()));
    assert!(!names.contains(&"p007".to_string()));
}

#[test]
fn a_readiness_change_updates_the_endpoint_in_place() {
    let svc = web();
    let existing = applied(
        plan(&svc, &[pod("a", &["10.1.0.5"], true)], &nodes, &[], 100),
        &[],
    );
    let next = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], false)],
        &nodes,
        &existing,
        100,
    );
    assert!(next.create.is_empty() && next.delete.is_empty());
    assert_eq!(next.update.len(), 1);
    assert_eq!(next.update[0].name_any(), existing[0].name_any());
    let conditions = next.update[0].endpoints.as_ref().unwrap()[0]
        .conditions
        .clone()
        .unwrap();
    assert_eq!(conditions.ready, Some(false));
}

#[test]
fn new_endpoints_fill_the_tightest_unchanged_slice() {
    let svc = web();
    let existing = [
        Arc::new(slice_with(
            "web-big",
            (0..90).map(|i| ep_for(&format!("p{i:03}"))).collect(),
        )),
        Arc::new(slice_with(
            "web-small",
            (90..95).map(|i| ep_for(&format!("p{i:03}"))).collect(),
        )),
    ];
    let mut all = pods(95);
    all.extend((0..8).map(|i| pod(&format!("q{i}"), &[&format!("10.2.0.{}", i + 1)], true)));
    let next = plan(&svc, &all, &nodes, &existing, 100);
    assert!(next.create.is_empty() && next.delete.is_empty());
    let [updated] = next.update.as_slice() else {
        panic!("one update, got {:?}", next.update);
    };
    assert_eq!(updated.name_any(), "web-big");
    assert_eq!(updated.endpoints.as_ref().unwrap().len(), 98);
}

#[test]
fn a_rollout_rewrites_slices_under_their_old_names() {
    let svc = web();
    let existing = applied(plan(&svc, &pods(3), &nodes, &[], 100), &[]);
    let replacements: Vec<Arc<Pod>> = (0..3)
        .map(|i| pod(&format!("new{i}"), &[&format!("10.3.0.{}", i + 1)], true))
        .collect();
    let next = plan(&svc, &replacements, &nodes, &existing, 100);
    assert!(next.create.is_empty() && next.delete.is_empty(), "{next:?}");
    assert_eq!(next.update.len(), 1);
    assert_eq!(next.update[0].name_any(), existing[0].name_any());
    assert_eq!(endpoint_names(&next.update[0]), ["new0", "new1", "new2"]);
}

#[test]
fn a_service_without_endpoints_keeps_one_placeholder() {
    let svc = web();
    let first = plan(&svc, &[], &nodes, &[], 100);
    assert_eq!(first.create.len(), 1);
    assert!(first.create[0].endpoints.as_ref().unwrap().is_empty());
    assert!(first.create[0].ports.as_ref().unwrap().is_empty());
    let existing = applied(first, &[]);
    let again = plan(&svc, &[], &nodes, &existing, 100);
    assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    // Once endpoints appear, the placeholder is reused for them.
    let next = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], true)],
        &nodes,
        &existing,
        100,
    );
    assert!(next.create.is_empty() && next.delete.is_empty(), "{next:?}");
    assert_eq!(next.update[0].name_any(), existing[0].name_any());
    assert_eq!(endpoint_names(&next.update[0]), ["a"]);
}

#[test]
fn slices_of_an_older_service_of_the_same_name_are_replaced() {
    let svc = web();
    let mut stale = slice_with("web-old", vec![ep_for("a")]);
    stale.metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
    let next = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], true)],
        &nodes,
        &[Arc::new(stale)],
        100,
    );
    assert_eq!(next.create.len(), 1);
    assert_eq!(next.delete.len(), 1);
    assert_eq!(next.delete[0].name_any(), "web-old");
}

#[test]
fn a_service_label_change_relabels_its_slices() {
    let mut svc = web();
    let existing = applied(
        plan(&svc, &[pod("a", &["10.1.0.5"], true)], &nodes, &[], 100),
        &[],
    );
    svc.metadata.labels = Some(BTreeMap::from([("tier".into(), "back".into())]));
    let next = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], true)],
        &nodes,
        &existing,
        100,
    );
    assert_eq!(next.update.len(), 1);
    assert_eq!(
        next.update[0].labels().get("tier").map(String::as_str),
        Some("back")
    );
}

#[test]
fn headless_services_mark_their_slices() {
    let mut svc = web();
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    assert_eq!(
        slice_labels(&svc).get(LABEL_HEADLESS).map(String::as_str),
        Some("")
    );
    assert!(!slice_labels(&web()).contains_key(LABEL_HEADLESS));
}

#[test]
fn pods_on_unknown_nodes_are_skipped_and_reported() {
    let svc = web();
    let mut lost = (*pod("lost", &["10.1.0.8"], true)).clone();
    lost.spec.as_mut().unwrap().node_name = Some("gone".into());
    let lost = Arc::new(lost);
    let next = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], true), Arc::clone(&lost)],
        &nodes,
        &[],
        100,
    );
    assert_eq!(endpoint_names(&next.create[0]), ["a"]);
    assert_eq!(next.missing_nodes.iter().collect::<Vec<_>>(), ["gone"]);
    // Publishing not-ready addresses keeps them, without a zone.
    let mut publishing = web();
    publishing
        .spec
        .as_mut()
        .unwrap()
        .publish_not_ready_addresses = Some(true);
    let next = plan(&publishing, &[lost], &nodes, &[], 100);
    assert!(next.missing_nodes.is_empty());
    assert_eq!(endpoint_names(&next.create[0]), ["lost"]);
    assert_eq!(next.create[0].endpoints.as_ref().unwrap()[0].zone, None);
}

#[test]
fn unsupported_address_types_are_deleted_and_nothing_is_created_while_deleting() {
    let mut svc = web();
    let mut v6 = slice_with("web-v6", vec![]);
    v6.address_type = "IPv6".into();
    let next = plan(
        &svc,
        &[pod("a", &["10.1.0.5"], true)],
        &nodes,
        &[Arc::new(v6)],
        100,
    );
    assert_eq!(
        next.delete.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["web-v6"]
    );
    assert_eq!(next.create.len(), 1);
    svc.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let deleting = plan(&svc, &[pod("a", &["10.1.0.5"], true)], &nodes, &[], 100);
    assert!(deleting.create.is_empty());
}

#[test]
fn slices_of_other_managers_do_not_map_to_services() {
    let mine = slice_with("web-a", vec![]);
    assert_eq!(
        service_of_slice(&mine),
        Some(ObjectRef::new("web").within("default"))
    );
    let mut theirs = mine.clone();
    theirs
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_MANAGED_BY.into(), "someone-else".into());
    assert_eq!(service_of_slice(&theirs), None);
}

fn ep_for(name: &str) -> Endpoint {
    let p = pods(150)
        .into_iter()
        .find(|p| p.name_any() == name)
        .unwrap_or_else(|| pod(name, &["10.1.0.5"], true));
    pod_endpoint(
        &p,
        Some(&node("n1", Some("zone-a"))),
        &web(),
        AddressType::IPv4,
    )
}

fn slice_with(name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let svc = web();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(slice_labels(&svc)),
            owner_references: Some(vec![crate::pods::controller_reference(&svc)]),
            resource_version: Some("5".into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

/// The controller's traffic against a fake API server.
mod controller {
    use serde_json::{Value, json};
    use skiff_testing::FakeApi;

    use super::*;

    fn to_json<T: serde::Serialize>(value: T) -> Value {
        serde_json::to_value(value).expect("serializable")
    }

    #[tokio::test(start_paused = true)]
    async fn creates_one_slice_and_waits_for_the_cache_before_more() {
        let api_service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": "s0"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]},
        });
        let api_slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.168.1.1"], "conditions": {"ready": true}}],
        });
        let api = FakeApi::new(vec![
            ("/api/v1/services", vec![to_json(web()), api_service]),
            (
                "/api/v1/pods",
                vec![to_json(&*pod("a", &["10.1.0.5"], true))],
            ),
            ("/api/v1/nodes", vec![to_json(&*node("n1", Some("zone-a")))]),
            ("/apis/discovery.k8s.io/v1/endpointslices", vec![api_slice]),
        ]);
        let client = api.client();
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(client.clone());
        // Resyncing every second: each resync would create again if the
        // controller did not wait for its first create to reach the cache.
        let config = EndpointSliceConfig {
            resync_period: Duration::from_secs(1),
            ..EndpointSliceConfig::default()
        };
        let controller = start(&mut factory, client, config, shutdown.clone());
        let informers = tokio::spawn(factory.run(shutdown.clone()));
        let controller = tokio::spawn(controller);
        tokio::time::sleep(Duration::from_secs(5)).await;
        shutdown.cancel();
        controller.await.expect("controller");
        informers.await.expect("informers");

        let writes = api.writes();
        let [write] = writes.as_slice() else {
            panic!("one write expected, got {writes:#?}");
        };
        assert_eq!(write.method, "POST");
        assert_eq!(
            write.path,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        );
        let slice = &write.body;
        let name = slice["metadata"]["name"].as_str().expect("a name");
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        assert_eq!(slice["metadata"]["generateName"], "web-");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.1.0.5"]));
        assert_eq!(slice["endpoints"][0]["zone"], "zone-a");
        assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "a");
        assert_eq!(slice["ports"][0]["port"], 8080);
    }
}
