use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, PodCondition, PodIP,
    PodSpec, PodStatus, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::subsets::{ANNOTATION_OVER_CAPACITY, MAX_CAPACITY, desired_subsets, plan, truncate};
use super::*;
use crate::endpointslice::endpoint::{ANNOTATION_TRIGGER_TIME, LABEL_HEADLESS};

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

fn port(name: &str, number: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        protocol: Some("TCP".into()),
        target_port: Some(target),
        ..ServicePort::default()
    }
}

fn web() -> Service {
    service(vec![port("http", 80, IntOrString::String("http".into()))])
}

fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Arc<Pod> {
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
                    container_port: http_port,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(Timestamp::from_second(1_000).unwrap())),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    })
}

fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
    list.iter().flatten().map(|a| a.ip.as_str()).collect()
}

fn port_numbers(subset: &EndpointSubset) -> Vec<i32> {
    subset.ports.iter().flatten().map(|p| p.port).collect()
}

#[test]
fn ready_and_not_ready_pods_land_in_their_lists() {
    let subsets = desired_subsets(
        &web(),
        &[
            pod("b", "10.1.0.6", false, 8080),
            pod("a", "10.1.0.5", true, 8080),
        ],
    );
    assert_eq!(subsets.len(), 1);
    let subset = &subsets[0];
    assert_eq!(ips(&subset.addresses), ["10.1.0.5"]);
    assert_eq!(ips(&subset.not_ready_addresses), ["10.1.0.6"]);
    assert_eq!(
        subset.ports,
        Some(vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }])
    );
    let address = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(address.node_name.as_deref(), Some("n1"));
    let target = address.target_ref.as_ref().unwrap();
    assert_eq!(
        (
            target.kind.as_deref(),
            target.name.as_deref(),
            target.uid.as_deref()
        ),
        (Some("Pod"), Some("a"), Some("uid-a"))
    );
}

#[test]
fn pods_resolving_named_ports_differently_get_separate_subsets() {
    let subsets = desired_subsets(
        &web(),
        &[
            pod("a", "10.1.0.5", true, 8080),
            pod("b", "10.1.0.6", true, 9090),
        ],
    );
    let shape: Vec<(Vec<&str>, Vec<i32>)> = subsets
        .iter()
        .map(|s| (ips(&s.addresses), port_numbers(s)))
        .collect();
    assert_eq!(
        shape,
        [
            (vec!["10.1.0.5"], vec![8080]),
            (vec!["10.1.0.6"], vec![9090])
        ]
    );
}

#[test]
fn ports_shared_by_the_same_addresses_share_a_subset() {
    let svc = service(vec![
        port("http", 80, IntOrString::String("http".into())),
        port("admin", 9000, IntOrString::Int(9000)),
    ]);
    let subsets = desired_subsets(
        &svc,
        &[
            pod("a", "10.1.0.5", true, 8080),
            pod("b", "10.1.0.6", true, 8080),
        ],
    );
    assert_eq!(subsets.len(), 1);
    assert_eq!(ips(&subsets[0].addresses), ["10.1.0.5", "10.1.0.6"]);
    assert_eq!(port_numbers(&subsets[0]), [9000, 8080]);
}

#[test]
fn terminating_pods_are_dropped_unless_not_ready_addresses_are_published() {
    let mut leaving = (*pod("a", "10.1.0.5", true, 8080)).clone();
    leaving.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let leaving = Arc::new(leaving);
    assert!(desired_subsets(&web(), &[Arc::clone(&leaving)]).is_empty());
    let mut publishing = web();
    publishing
        .spec
        .as_mut()
        .unwrap()
        .publish_not_ready_addresses = Some(true);
    let unready = pod("b", "10.1.0.6", false, 8080);
    let subsets = desired_subsets(&publishing, &[leaving, unready]);
    assert_eq!(ips(&subsets[0].addresses), ["10.1.0.5", "10.1.0.6"]);
    assert_eq!(subsets[0].not_ready_addresses, None);
}

#[test]
fn headless_services_without_ports_list_bare_addresses() {
    let mut svc = service(Vec::new());
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let subsets = desired_subsets(&svc, &[pod("a", "10.1.0.5", true, 8080)]);
    assert_eq!(subsets.len(), 1);
    assert_eq!(ips(&subsets[0].addresses), ["10.1.0.5"]);
    assert_eq!(subsets[0].ports, None);
    // A Service with a cluster IP but no ports has no endpoints.
    assert!(desired_subsets(&service(Vec::new()), &[pod("a", "10.1.0.5", true, 8080)]).is_empty());
}

#[test]
fn addresses_come_from_the_services_primary_family() {
    let mut dual = (*pod("a", "fd00::5", true, 8080)).clone();
    dual.status.as_mut().unwrap().pod_ips = Some(vec![
        PodIP {
            ip: "fd00::5".into(),
        },
        PodIP {
            ip: "10.1.0.5".into(),
        },
    ]);
    let dual = Arc::new(dual);
    assert_eq!(
        ips(&desired_subsets(&web(), &[Arc::clone(&dual)])[0].addresses),
        ["10.1.0.5"]
    );
    let mut v6 = web();
    v6.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    assert_eq!(
        ips(&desired_subsets(&v6, &[dual])[0].addresses),
        ["fd00::5"]
    );
}

#[test]
fn a_new_service_gets_labelled_annotated_endpoints() {
    let EndpointsPlan::Create(endpoints) = plan(
        &web(),
        &[pod("a", "10.1.0.5", true, 8080)],
        None,
        Some(Timestamp::from_second(1_000).unwrap()),
    ) else {
        panic!("expected a create");
    };
    assert_eq!(endpoints.metadata.name.as_deref(), Some("web"));
    assert_eq!(endpoints.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        endpoints.labels(),
        &BTreeMap::from([
            ("tier".to_string(), "front".to_string()),
            (
                "endpoints.kubernetes.io/managed-by".to_string(),
                "endpoint-controller".to_string()
            ),
        ])
    );
    assert_eq!(
        endpoints
            .annotations()
            .get(ANNOTATION_TRIGGER_TIME)
            .map(String::as_str),
        Some("1970-01-01T00:16:40Z")
    );
    assert_eq!(
        ips(&endpoints.subsets.as_ref().unwrap()[0].addresses),
        ["10.1.0.5"]
    );
}

#[test]
fn unchanged_endpoints_are_not_rewritten_and_changes_keep_the_resource_version() {
    let pods = [pod("a", "10.1.0.5", true, 8080)];
    let EndpointsPlan::Create(mut written) = plan(&web(), &pods, None, None) else {
        panic!("expected a create");
    };
    written.metadata.resource_version = Some("7".into());
    assert_eq!(
        plan(&web(), &pods, Some(&written), None),
        EndpointsPlan::UpToDate
    );
    let later = [pod("a", "10.1.0.5", false, 8080)];
    let EndpointsPlan::Update(updated) = plan(&web(), &later, Some(&written), None) else {
        panic!("expected an update");
    };
    assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(
        ips(&updated.subsets.as_ref().unwrap()[0].not_ready_addresses),
        ["10.1.0.5"]
    );
}

#[test]
fn label_changes_and_headlessness_are_reflected() {
    let pods = [pod("a", "10.1.0.5", true, 8080)];
    let EndpointsPlan::Create(written) = plan(&web(), &pods, None, None) else {
        panic!("expected a create");
    };
    let mut relabelled = web();
    relabelled.metadata.labels = Some(BTreeMap::from([("tier".into(), "back".into())]));
    let EndpointsPlan::Update(updated) = plan(&relabelled, &pods, Some(&written), None) else {
        panic!("expected an update");
    };
    assert_eq!(
        updated.labels().get("tier").map(String::as_str),
        Some("back")
    );
    let mut headless = web();
    headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let EndpointsPlan::Create(created) = plan(&headless, &pods, None, None) else {
        panic!("expected a create");
    };
    assert_eq!(
        created.labels().get(LABEL_HEADLESS).map(String::as_str),
        Some("")
    );
}

#[test]
fn more_than_a_thousand_addresses_are_truncated_and_annotated() {
    let pods: Vec<Arc<Pod>> = (0..1200)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.1.{}.{}", i / 250, i % 250 + 1),
                i % 2 == 0,
                8080,
            )
        })
        .collect();
    let EndpointsPlan::Create(endpoints) = plan(&web(), &pods, None, None) else {
        panic!("expected a create");
    };
    let subset = &endpoints.subsets.as_ref().unwrap()[0];
    // All 600 ready addresses stay; not-ready ones fill the rest.
    assert_eq!(subset.addresses.as_ref().unwrap().len(), 600);
    assert_eq!(
        subset.not_ready_addresses.as_ref().unwrap().len(),
        MAX_CAPACITY - 600
    );
    assert_eq!(
        endpoints
            .annotations()
            .get(ANNOTATION_OVER_CAPACITY)
            .map(String::as_str),
        Some("truncated")
    );
    // The truncated object is up to date with the same pods.
    assert_eq!(
        plan(&web(), &pods, Some(&endpoints), None),
        EndpointsPlan::UpToDate
    );
}

#[test]
fn truncation_shares_ready_addresses_proportionally() {
    let address = |i: usize| EndpointAddress {
        ip: format!("10.0.{}.{}", i / 250, i % 250),
        ..EndpointAddress::default()
    };
    let subset = |range: std::ops::Range<usize>| EndpointSubset {
        addresses: Some(range.clone().map(address).collect()),
        not_ready_addresses: Some(range.map(address).collect()),
        ports: None,
    };
    let mut subsets = vec![subset(0..900), subset(900..1200)];
    assert!(truncate(&mut subsets, 1000));
    assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 750);
    assert_eq!(subsets[1].addresses.as_ref().unwrap().len(), 250);
    assert!(subsets.iter().all(|s| s.not_ready_addresses.is_none()));
    let mut small = vec![subset(0..10)];
    assert!(!truncate(&mut small, 1000));
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
    async fn creates_endpoints_and_deletes_orphans() {
        let managed_orphan = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "gone", "namespace": "default", "uid": "e1",
                "labels": {"endpoints.kubernetes.io/managed-by": "endpoint-controller"}},
        });
        let manual = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "manual", "namespace": "default", "uid": "e2"},
        });
        let api_endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": "e3",
                "labels": {"endpoints.kubernetes.io/managed-by": "endpoint-controller"}},
        });
        let api_service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": "s0"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]},
        });
        let api = FakeApi::new(vec![
            ("/api/v1/services", vec![to_json(web()), api_service]),
            (
                "/api/v1/pods",
                vec![to_json(&*pod("a", "10.1.0.5", true, 8080))],
            ),
            (
                "/api/v1/endpoints",
                vec![managed_orphan, manual, api_endpoints],
            ),
        ]);
        let client = api.client();
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(client.clone());
        let controller = start(
            &mut factory,
            client,
            EndpointsConfig::default(),
            shutdown.clone(),
        );
        let informers = tokio::spawn(factory.run(shutdown.clone()));
        let controller = tokio::spawn(controller);
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.cancel();
        controller.await.expect("controller");
        informers.await.expect("informers");

        let writes = api.writes();
        let mut summary: Vec<(String, String)> = writes
            .iter()
            .map(|w| (w.method.clone(), w.path.clone()))
            .collect();
        summary.sort();
        assert_eq!(
            summary,
            [
                (
                    "DELETE".to_string(),
                    "/api/v1/namespaces/default/endpoints/gone".to_string()
                ),
                (
                    "POST".to_string(),
                    "/api/v1/namespaces/default/endpoints".to_string()
                ),
            ],
            "{writes:#?}"
        );
        let created = &writes
            .iter()
            .find(|w| w.method == "POST")
            .expect("a create")
            .body;
        assert_eq!(created["metadata"]["name"], "web");
        assert_eq!(created["subsets"][0]["addresses"][0]["ip"], "10.1.0.5");
        assert_eq!(created["subsets"][0]["ports"][0]["port"], 8080);
    }
}
