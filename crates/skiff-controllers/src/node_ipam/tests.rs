use k8s_openapi::api::core::v1::NodeSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn cidr(s: &str) -> Cidr {
    s.parse().expect("valid CIDR in test")
}

fn node(name: &str, pod_cidr: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: pod_cidr.map(Into::into),
            pod_cidrs: pod_cidr.map(|c| vec![c.into()]),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

fn assign(node: &str, c: &str) -> Action {
    Action::Assign {
        node: node.into(),
        cidr: cidr(c),
    }
}

/// A reconciler that has listed `nodes`, with the actions of the list.
fn listed(config: &NodeIpamConfig, nodes: Vec<Node>) -> (Reconciler, Vec<Action>) {
    let mut r = Reconciler::new(config).expect("valid config");
    assert!(r.on_event(Event::Init).is_empty());
    for n in nodes {
        assert!(r.on_event(Event::InitApply(n)).is_empty());
    }
    let actions = r.on_event(Event::InitDone);
    (r, actions)
}

/// Performs `actions` as successful writes.
fn write_all(r: &mut Reconciler, actions: &[Action]) {
    for action in actions {
        if let Action::Assign { node, cidr } = action {
            r.on_assign_outcome(node, *cidr, AssignOutcome::Written);
        }
    }
}

fn small() -> NodeIpamConfig {
    NodeIpamConfig {
        cluster_cidr: cidr("10.42.0.0/23"),
        node_mask_size: 24,
    }
}

#[test]
fn default_config_is_k3s_range() {
    let config = NodeIpamConfig::default();
    assert_eq!(config.cluster_cidr, cidr("10.42.0.0/16"));
    assert_eq!(config.node_mask_size, 24);
}

#[test]
fn initial_list_assigns_only_nodes_without_a_cidr() {
    let (_, actions) = listed(
        &NodeIpamConfig::default(),
        vec![
            node("a", Some("10.42.0.0/24")),
            node("b", None),
            node("c", None),
        ],
    );
    assert_eq!(
        actions,
        vec![assign("b", "10.42.1.0/24"), assign("c", "10.42.2.0/24")]
    );
}

#[test]
fn nothing_is_allocated_before_the_first_complete_list() {
    let mut r = Reconciler::new(&NodeIpamConfig::default()).expect("valid config");
    assert!(r.on_event(Event::Init).is_empty());
    assert!(r.on_event(Event::InitApply(node("b", None))).is_empty());
    // Listed after b, but holds the first subnet.
    assert!(
        r.on_event(Event::InitApply(node("a", Some("10.42.0.0/24"))))
            .is_empty()
    );
    assert_eq!(
        r.on_event(Event::InitDone),
        vec![assign("b", "10.42.1.0/24")]
    );
}

#[test]
fn restart_rebuilds_the_table_from_the_nodes() {
    let config = NodeIpamConfig::default();
    let (mut first, actions) = listed(&config, vec![node("a", None), node("b", None)]);
    write_all(&mut first, &actions);
    // A new controller sees what the first one wrote.
    let (mut second, actions) = listed(
        &config,
        vec![
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.1.0/24")),
            node("c", None),
        ],
    );
    assert_eq!(actions, vec![assign("c", "10.42.2.0/24")]);
    write_all(&mut second, &actions);
    assert_eq!(
        second.on_event(Event::Apply(node("d", None))),
        vec![assign("d", "10.42.3.0/24")]
    );
}

#[test]
fn relist_replaces_the_table() {
    let config = NodeIpamConfig::default();
    let (mut r, _) = listed(&config, vec![node("a", Some("10.42.0.0/24"))]);
    // The watch restarts; meanwhile `a` was deleted and `z` took its range.
    r.on_event(Event::Init);
    r.on_event(Event::InitApply(node("z", Some("10.42.0.0/24"))));
    assert!(r.on_event(Event::InitDone).is_empty());
    assert!(r.allocator().held_by("a").is_empty());
    assert_eq!(r.allocator().held_by("z"), vec![cidr("10.42.0.0/24")]);
}

#[test]
fn new_node_gets_a_cidr_and_its_echo_is_ignored() {
    let (mut r, _) = listed(&NodeIpamConfig::default(), Vec::new());
    let actions = r.on_event(Event::Apply(node("a", None)));
    assert_eq!(actions, vec![assign("a", "10.42.0.0/24")]);
    write_all(&mut r, &actions);
    // An event that predates our write: no second allocation.
    assert!(r.on_event(Event::Apply(node("a", None))).is_empty());
    // Our write coming back.
    assert!(
        r.on_event(Event::Apply(node("a", Some("10.42.0.0/24"))))
            .is_empty()
    );
    assert_eq!(r.allocator().free(), 255);
}

#[test]
fn deletion_frees_the_cidr() {
    let (mut r, _) = listed(
        &small(),
        vec![
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.1.0/24")),
        ],
    );
    assert_eq!(r.allocator().free(), 0);
    assert!(
        r.on_event(Event::Delete(node("a", Some("10.42.0.0/24"))))
            .is_empty()
    );
    assert_eq!(r.allocator().free(), 1);
    assert_eq!(
        r.on_event(Event::Apply(node("c", None))),
        vec![assign("c", "10.42.0.0/24")]
    );
}

#[test]
fn exhaustion_is_reported_once_and_retried_when_a_cidr_is_freed() {
    let (mut r, actions) = listed(
        &small(),
        vec![node("a", None), node("b", None), node("c", None)],
    );
    assert_eq!(
        actions,
        vec![
            assign("a", "10.42.0.0/24"),
            assign("b", "10.42.1.0/24"),
            Action::Exhausted {
                node: "c".into(),
                uid: Some("uid-c".into())
            },
        ]
    );
    write_all(&mut r, &actions);
    assert!(r.has_waiting());
    // Still exhausted: no repeated event.
    assert!(r.retry().is_empty());
    // Freeing b's range hands it to c.
    assert_eq!(
        r.on_event(Event::Delete(node("b", Some("10.42.1.0/24")))),
        vec![assign("c", "10.42.1.0/24")]
    );
    write_all(&mut r, &[assign("c", "10.42.1.0/24")]);
    assert!(!r.has_waiting());
}

#[test]
fn failed_write_frees_the_cidr_and_is_retried() {
    let (mut r, actions) = listed(&NodeIpamConfig::default(), vec![node("a", None)]);
    assert_eq!(actions, vec![assign("a", "10.42.0.0/24")]);
    r.on_assign_outcome("a", cidr("10.42.0.0/24"), AssignOutcome::Failed);
    assert_eq!(r.allocator().free(), 256);
    assert!(r.has_waiting());
    // Round-robin moves on, which is harmless: the write never landed.
    assert_eq!(r.retry(), vec![assign("a", "10.42.1.0/24")]);
}

#[test]
fn vanished_node_is_forgotten() {
    let (mut r, _) = listed(&NodeIpamConfig::default(), vec![node("a", None)]);
    r.on_assign_outcome("a", cidr("10.42.0.0/24"), AssignOutcome::NotFound);
    assert_eq!(r.allocator().free(), 256);
    assert!(!r.has_waiting());
    assert!(r.retry().is_empty());
}

#[test]
fn cidr_set_by_someone_else_replaces_ours() {
    let (mut r, actions) = listed(&NodeIpamConfig::default(), vec![node("a", None)]);
    assert_eq!(actions, vec![assign("a", "10.42.0.0/24")]);
    r.on_assign_outcome("a", cidr("10.42.0.0/24"), AssignOutcome::Failed);
    // Another writer won with a different range.
    assert!(
        r.on_event(Event::Apply(node("a", Some("10.42.7.0/24"))))
            .is_empty()
    );
    assert!(!r.has_waiting());
    assert_eq!(r.allocator().held_by("a"), vec![cidr("10.42.7.0/24")]);
    assert!(r.retry().is_empty());
}

#[test]
fn conflicting_and_foreign_cidrs_are_not_recorded() {
    let (r, actions) = listed(
        &NodeIpamConfig::default(),
        vec![
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.0.0/24")),
            node("c", Some("192.168.0.0/24")),
            node("d", Some("not-a-cidr")),
        ],
    );
    assert!(actions.is_empty());
    assert_eq!(r.allocator().held_by("a"), vec![cidr("10.42.0.0/24")]);
    assert!(r.allocator().held_by("b").is_empty());
    assert!(r.allocator().held_by("c").is_empty());
    assert_eq!(r.allocator().free(), 255);
}

/// The controller's API traffic against a fake API server that lists fixed
/// Nodes, holds every watch open, and records writes.
mod controller {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Default)]
    struct Recorded {
        /// `(path, body)` of every PATCH.
        patches: Vec<(String, Value)>,
        /// Bodies of every created Event.
        events: Vec<Value>,
    }

    fn client(nodes: Vec<Value>, recorded: Arc<Mutex<Recorded>>) -> kube::Client {
        let service = tower::service_fn(move |request: Request<Body>| {
            let nodes = nodes.clone();
            let recorded = recorded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.map_err(Box::new)?;
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let query = parts.uri.query().unwrap_or_default();
                let reply = match parts.method.as_str() {
                    "GET" if query.contains("watch=true") => {
                        // Nothing more happens: hold the watch open.
                        futures::future::pending::<()>().await;
                        Value::Null
                    }
                    "GET" => json!({
                        "kind": "NodeList", "apiVersion": "v1",
                        "metadata": { "resourceVersion": "10" }, "items": nodes,
                    }),
                    "PATCH" => {
                        recorded
                            .lock()
                            .expect("lock")
                            .patches
                            .push((path, body.clone()));
                        body
                    }
                    _ => {
                        recorded.lock().expect("lock").events.push(body.clone());
                        body
                    }
                };
                let response = Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(reply.to_string().into_bytes()))
                    .expect("valid response");
                Ok::<_, Box<kube::Error>>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    fn node_json(name: &str, pod_cidr: Option<&str>) -> Value {
        serde_json::to_value(node(name, pod_cidr)).expect("serializable node")
    }

    #[tokio::test(start_paused = true)]
    async fn assigns_free_cidrs_and_reports_exhaustion() {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let nodes = vec![
            node_json("a", Some("10.42.0.0/24")),
            node_json("b", None),
            node_json("c", None),
        ];
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            client(nodes, recorded.clone()),
            small(),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.cancel();
        task.await
            .expect("controller task")
            .expect("controller run");

        let recorded = recorded.lock().expect("lock");
        assert_eq!(
            recorded.patches,
            vec![(
                "/api/v1/nodes/b".to_string(),
                json!({ "spec": { "podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"] } })
            )]
        );
        let event = recorded.events.first().expect("an exhaustion event");
        assert_eq!(event["reason"], "CIDRNotAvailable");
        assert_eq!(event["message"], "Node c status is now: CIDRNotAvailable");
        assert_eq!(event["involvedObject"]["name"], "c");
        assert_eq!(event["involvedObject"]["kind"], "Node");
    }

    #[tokio::test]
    async fn invalid_config_is_rejected_up_front() {
        let config = NodeIpamConfig {
            cluster_cidr: cidr("10.42.0.0/16"),
            node_mask_size: 8,
        };
        let client = client(Vec::new(), Arc::default());
        assert!(matches!(
            run(client, config, CancellationToken::new()).await,
            Err(NodeIpamError::Config(_))
        ));
    }
}
