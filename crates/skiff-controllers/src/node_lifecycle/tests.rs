//! Scenarios of [`Tracker::plan`] with a fixed clock: nodes that stop
//! heartbeating, get tainted under the rate limit, lose their pods, and
//! come back.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::{
    NodeCondition, NodeSpec, NodeStatus, PodCondition, PodSpec, PodStatus, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

use super::taints::{NO_EXECUTE, NO_SCHEDULE, TAINT_NOT_READY, TAINT_UNREACHABLE, has_taint};
use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

fn config() -> NodeLifecycleConfig {
    NodeLifecycleConfig::default()
}

fn node(name: &str, ready: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("{name}-uid")),
            resource_version: Some("1".into()),
            creation_timestamp: Some(Time(at(0))),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: Some("KubeletReady".into()),
                last_heartbeat_time: Some(Time(at(0))),
                last_transition_time: Some(Time(at(0))),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

fn lease(renewed: i64) -> Lease {
    Lease {
        metadata: ObjectMeta {
            namespace: Some(NODE_LEASE_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }),
    }
}

fn default_tolerations() -> Vec<Toleration> {
    [TAINT_NOT_READY, TAINT_UNREACHABLE]
        .into_iter()
        .map(|key| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: Some(300),
            ..Toleration::default()
        })
        .collect()
}

fn pod(name: &str, node: &str, tolerations: Vec<Toleration>) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("{name}-uid")),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            tolerations: Some(tolerations),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    })
}

/// The node as the API shows it after the plan's writes.
fn applied(node: &Node, plan: &NodePlan) -> Node {
    let mut next = node.clone();
    let status = next.status.get_or_insert_with(NodeStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    for written in &plan.write_conditions {
        conditions.retain(|c| c.type_ != written.type_);
        conditions.push(written.clone());
    }
    let taints = plan.taints.apply(taints::taints(node));
    next.spec.get_or_insert_with(NodeSpec::default).taints = Some(taints);
    next
}

fn names(pods: &[Arc<Pod>]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

fn taint_keys(taints: &[Taint]) -> Vec<String> {
    taints
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

/// A tracker that has seen `nodes` (renewing their Leases) and warmed up at
/// `now`.
fn warm_tracker(nodes: &[&Node], now: Timestamp) -> Tracker {
    let mut tracker = Tracker::new(&config());
    for n in nodes {
        tracker.plan(n, Some(&lease(now.as_second())), &[], now, &config());
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    assert!(tracker.finish_warm_up(names.iter().map(String::as_str)));
    tracker
}

#[test]
fn a_healthy_node_needs_nothing_and_is_looked_at_when_its_grace_ends() {
    let n1 = node("n1", "True");
    let mut tracker = warm_tracker(&[&n1], at(1_000));
    let plan = tracker.plan(&n1, Some(&lease(1_010)), &[], at(1_010), &config());
    assert!(plan.write_conditions.is_empty());
    assert!(plan.taints.is_empty());
    assert_eq!(plan.next, Some(at(1_050)));
    // The same lease seen again is no heartbeat.
    let plan = tracker.plan(&n1, Some(&lease(1_010)), &[], at(1_030), &config());
    assert_eq!(plan.next, Some(at(1_050)));
}

#[test]
fn a_silent_node_goes_unknown_tainted_and_its_pods_unready_then_evicted() {
    let healthy = node("healthy", "True");
    let silent = node("silent", "True");
    let mut tracker = warm_tracker(&[&healthy, &silent], at(1_000));
    let pods = [
        pod("web", "silent", default_tolerations()),
        pod("intolerant", "silent", vec![]),
    ];

    // 39 s of silence: still fine.
    let plan = tracker.plan(&silent, Some(&lease(1_000)), &pods, at(1_039), &config());
    assert!(plan.write_conditions.is_empty());
    assert_eq!(plan.next, Some(at(1_040)));

    // 40 s: Unknown, both unreachable taints, pods marked not ready.
    let plan = tracker.plan(&silent, Some(&lease(1_000)), &pods, at(1_040), &config());
    let ready = &plan.write_conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "Unknown")
    );
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    assert!(plan.became_not_ready);
    assert_eq!(
        taint_keys(&plan.taints.add),
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute",
        ]
    );
    assert!(
        plan.taints
            .add
            .iter()
            .all(|t| t.time_added == Some(Time(at(1_040))))
    );
    assert_eq!(names(&plan.mark_not_ready), ["web", "intolerant"]);
    assert!(plan.evict.is_empty(), "the taint is not in the API yet");
    tracker.status_written("silent", &plan.write_conditions);

    // The tainted node comes back from the watch: evict the intolerant pod
    // now and the tolerant one 300 s after the taint was added.
    let tainted = applied(&silent, &plan);
    let plan = tracker.plan(&tainted, Some(&lease(1_000)), &pods, at(1_041), &config());
    assert!(plan.write_conditions.is_empty());
    assert!(plan.taints.is_empty());
    assert_eq!(names(&plan.evict), ["intolerant"]);
    assert_eq!(plan.next, Some(at(1_340)));

    // The cache still shows the intolerant pod: it is not deleted twice.
    let plan = tracker.plan(&tainted, Some(&lease(1_000)), &pods, at(1_100), &config());
    assert!(plan.evict.is_empty());

    let plan = tracker.plan(&tainted, Some(&lease(1_000)), &pods, at(1_340), &config());
    assert_eq!(names(&plan.evict), ["web"]);
    assert_eq!(plan.next, None);
}

#[test]
fn a_node_ready_again_loses_its_taints_and_pending_evictions_are_cancelled() {
    let healthy = node("healthy", "True");
    let silent = node("silent", "True");
    let mut tracker = warm_tracker(&[&healthy, &silent], at(1_000));
    let pods = [pod("web", "silent", default_tolerations())];
    let plan = tracker.plan(&silent, Some(&lease(1_000)), &pods, at(1_040), &config());
    let tainted = applied(&silent, &plan);
    let plan = tracker.plan(&tainted, Some(&lease(1_000)), &pods, at(1_041), &config());
    assert!(plan.evict.is_empty());
    assert_eq!(plan.next, Some(at(1_340)));

    // The kubelet is back: Ready True with a new heartbeat.
    let mut back = tainted.clone();
    for c in back.status.as_mut().unwrap().conditions.as_mut().unwrap() {
        if c.type_ == "Ready" {
            c.status = "True".into();
            c.last_heartbeat_time = Some(Time(at(1_100)));
        }
    }
    let plan = tracker.plan(&back, Some(&lease(1_100)), &pods, at(1_100), &config());
    assert!(plan.taints.add.is_empty());
    assert_eq!(
        taint_keys(&plan.taints.remove),
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute",
        ]
    );
    // Taints are still on the node in this snapshot, so the eviction stays
    // scheduled until the untainted node is seen.
    let untainted = applied(&back, &plan);
    let plan = tracker.plan(&untainted, Some(&lease(1_100)), &pods, at(1_101), &config());
    assert_eq!(plan.cancelled, [("default".to_string(), "web".to_string())]);
    assert!(plan.evict.is_empty());
    assert_eq!(plan.next, Some(at(1_140)));
}

#[test]
fn tainting_is_rate_limited_per_zone() {
    let nodes: Vec<Node> = (0..10).map(|i| node(&format!("n{i}"), "True")).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let mut tracker = warm_tracker(&refs, at(1_000));
    let first = tracker.plan(&nodes[0], Some(&lease(1_000)), &[], at(1_040), &config());
    assert!(has_taint(&first.taints.add, TAINT_UNREACHABLE, NO_EXECUTE));
    let second = tracker.plan(&nodes[1], Some(&lease(1_000)), &[], at(1_041), &config());
    assert!(!has_taint(
        &second.taints.add,
        TAINT_UNREACHABLE,
        NO_EXECUTE
    ));
    // NoSchedule is not rate limited.
    assert!(has_taint(
        &second.taints.add,
        TAINT_UNREACHABLE,
        NO_SCHEDULE
    ));
    assert_eq!(second.next, Some(at(1_050)));
    let unknown = applied(&nodes[1], &second);
    let later = tracker.plan(&unknown, Some(&lease(1_000)), &[], at(1_050), &config());
    assert!(has_taint(&later.taints.add, TAINT_UNREACHABLE, NO_EXECUTE));
}

#[test]
fn when_every_node_is_down_no_node_is_given_noexecute() {
    let only = node("only", "True");
    let mut tracker = warm_tracker(&[&only], at(1_000));
    let plan = tracker.plan(&only, Some(&lease(1_000)), &[], at(1_040), &config());
    assert!(plan.reconcile_all, "the zone state changed");
    assert_eq!(
        taint_keys(&plan.taints.add),
        ["node.kubernetes.io/unreachable:NoSchedule"]
    );
}

#[test]
fn taints_placed_before_a_full_outage_come_off() {
    let a = node("a", "True");
    let b = node("b", "True");
    let mut tracker = warm_tracker(&[&a, &b], at(1_000));
    let plan_a = tracker.plan(&a, Some(&lease(1_000)), &[], at(1_040), &config());
    assert!(has_taint(&plan_a.taints.add, TAINT_UNREACHABLE, NO_EXECUTE));
    let tainted_a = applied(&a, &plan_a);
    let plan_b = tracker.plan(&b, Some(&lease(1_000)), &[], at(1_041), &config());
    assert!(plan_b.reconcile_all);
    assert!(!has_taint(
        &plan_b.taints.add,
        TAINT_UNREACHABLE,
        NO_EXECUTE
    ));
    let plan_a = tracker.plan(&tainted_a, Some(&lease(1_000)), &[], at(1_042), &config());
    assert_eq!(
        taint_keys(&plan_a.taints.remove),
        ["node.kubernetes.io/unreachable:NoExecute"]
    );
}

#[test]
fn leaving_a_full_outage_restarts_every_grace_period() {
    let a = node("a", "True");
    let b = node("b", "True");
    let mut tracker = warm_tracker(&[&a, &b], at(1_000));
    let down_a = applied(
        &a,
        &tracker.plan(&a, Some(&lease(1_000)), &[], at(1_040), &config()),
    );
    let down_b = applied(
        &b,
        &tracker.plan(&b, Some(&lease(1_000)), &[], at(1_040), &config()),
    );
    // a is back; b's old silence must not count against it.
    let mut back = down_a.clone();
    let ready = back.status.as_mut().unwrap().conditions.as_mut().unwrap();
    ready[0].status = "True".into();
    ready[0].last_heartbeat_time = Some(Time(at(1_200)));
    let plan = tracker.plan(&back, Some(&lease(1_200)), &[], at(1_200), &config());
    assert!(plan.reconcile_all);
    let plan = tracker.plan(&down_b, Some(&lease(1_000)), &[], at(1_201), &config());
    assert!(plan.write_conditions.is_empty());
    assert_eq!(plan.next, Some(at(1_240)));
}

#[test]
fn not_ready_and_unreachable_swap_at_once() {
    let healthy = node("healthy", "True");
    let mut n = node("n", "False");
    n.spec = Some(NodeSpec {
        taints: Some(vec![taints::taint(TAINT_NOT_READY, NO_EXECUTE, at(900))]),
        ..NodeSpec::default()
    });
    let mut tracker = warm_tracker(&[&healthy, &n], at(1_000));
    // Use up the zone's token: the swap must not need one.
    let other = node("other", "False");
    tracker.plan(&other, Some(&lease(1_000)), &[], at(1_000), &config());
    let plan = tracker.plan(&n, Some(&lease(1_000)), &[], at(1_040), &config());
    assert_eq!(
        taint_keys(&plan.taints.add),
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute",
        ]
    );
    assert_eq!(
        taint_keys(&plan.taints.remove),
        ["node.kubernetes.io/not-ready:NoExecute"]
    );
}

#[test]
fn nothing_noexecute_happens_before_every_node_was_seen() {
    let a = node("a", "False");
    let b = node("b", "True");
    let mut tracker = Tracker::new(&config());
    let plan = tracker.plan(&a, Some(&lease(1_000)), &[], at(1_000), &config());
    assert_eq!(
        taint_keys(&plan.taints.add),
        ["node.kubernetes.io/not-ready:NoSchedule"]
    );
    assert!(!plan.reconcile_all);
    assert!(!tracker.finish_warm_up(["a", "b"].into_iter()));
    let plan = tracker.plan(&b, Some(&lease(1_000)), &[], at(1_000), &config());
    assert!(!plan.registered, "nodes present at start are not announced");
    assert!(tracker.finish_warm_up(["a", "b"].into_iter()));
    let plan = tracker.plan(&a, Some(&lease(1_000)), &[], at(1_001), &config());
    assert!(has_taint(&plan.taints.add, TAINT_NOT_READY, NO_EXECUTE));
    let plan = tracker.plan(
        &node("c", "True"),
        Some(&lease(1_000)),
        &[],
        at(1_002),
        &config(),
    );
    assert!(plan.registered);
}

#[test]
fn the_toleration_period_counts_from_time_added_across_restarts() {
    let healthy = node("healthy", "True");
    let mut n = node("n", "Unknown");
    n.spec = Some(NodeSpec {
        taints: Some(vec![taints::taint(TAINT_UNREACHABLE, NO_EXECUTE, at(800))]),
        ..NodeSpec::default()
    });
    // A controller started at 1000 sees a taint added at 800.
    let mut tracker = warm_tracker(&[&healthy, &n], at(1_000));
    let pods = [pod("web", "n", default_tolerations())];
    let plan = tracker.plan(&n, Some(&lease(1_000)), &pods, at(1_001), &config());
    assert_eq!(plan.next, Some(at(1_040)), "the grace period ends first");
    assert_eq!(
        tracker.plan(&n, None, &pods, at(1_099), &config()).next,
        Some(at(1_100))
    );
    assert_eq!(
        names(&tracker.plan(&n, None, &pods, at(1_100), &config()).evict),
        ["web"]
    );
}

#[test]
fn a_taint_without_time_added_counts_from_when_it_was_first_seen() {
    let healthy = node("healthy", "True");
    let mut n = node("n", "True");
    n.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: "example.com/maintenance".into(),
            effect: NO_EXECUTE.into(),
            ..Taint::default()
        }]),
        ..NodeSpec::default()
    });
    let tolerant = pod(
        "tolerant",
        "n",
        vec![Toleration {
            key: Some("example.com/maintenance".into()),
            operator: Some("Exists".into()),
            toleration_seconds: Some(60),
            ..Toleration::default()
        }],
    );
    let pods = [tolerant, pod("other", "n", vec![])];
    let mut tracker = warm_tracker(&[&healthy], at(1_000));
    let plan = tracker.plan(&n, Some(&lease(1_000)), &pods, at(1_000), &config());
    assert_eq!(names(&plan.evict), ["other"]);
    assert_eq!(plan.next, Some(at(1_040)));
    let plan = tracker.plan(&n, Some(&lease(1_030)), &pods, at(1_030), &config());
    assert_eq!(plan.next, Some(at(1_060)));
    assert!(plan.mark_not_ready.is_empty(), "the node is Ready");
}

#[test]
fn a_deleted_node_is_forgotten() {
    let a = node("a", "True");
    let b = node("b", "True");
    let mut tracker = warm_tracker(&[&a, &b], at(1_000));
    assert_eq!(tracker.node_deleted("a", at(1_001)), (true, false));
    assert_eq!(tracker.known_nodes(), 1);
    assert_eq!(tracker.node_deleted("a", at(1_002)), (false, false));
    let plan = tracker.plan(&a, Some(&lease(1_000)), &[], at(1_003), &config());
    assert!(plan.registered);
}

#[test]
fn pods_on_a_tainted_node_trigger_it_and_pods_elsewhere_do_not() {
    let mut tainted = node("n", "True");
    tainted.spec = Some(NodeSpec {
        taints: Some(vec![taints::taint("x", NO_EXECUTE, at(0))]),
        ..NodeSpec::default()
    });
    assert!(watches_pods(&tainted));
    assert!(watches_pods(&node("n", "Unknown")));
    assert!(!watches_pods(&node("n", "True")));
    let mut fresh = node("n", "True");
    fresh.status = None;
    assert!(!watches_pods(&fresh));
}

/// The controller against an in-memory API server, in paused tokio time.
mod io {
    use std::time::Duration;

    use serde_json::Value;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::informer::InformerFactory;
    use crate::node_lifecycle::fake_api::FakeApi;

    /// Wall time that moves with tokio's (paused) clock.
    struct TestClock {
        base: Timestamp,
        start: tokio::time::Instant,
    }

    impl Clock for TestClock {
        fn now(&self) -> Timestamp {
            self.base.checked_add(self.start.elapsed()).unwrap()
        }
    }

    fn named_lease(name: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NODE_LEASE_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
        obj["status"]["conditions"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["type"] == type_))
            .unwrap_or(&Value::Null)
    }

    fn taint_list(node: &Value) -> Vec<String> {
        node["spec"]["taints"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|t| {
                        format!(
                            "{}:{}",
                            t["key"].as_str().unwrap(),
                            t["effect"].as_str().unwrap()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn until(clock: &TestClock, second: u64) {
        let target = clock.start + Duration::from_secs(second);
        tokio::time::sleep_until(target).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_stops_heartbeating_is_tainted_and_loses_its_pods() {
        let api = FakeApi::new();
        let clock = Arc::new(TestClock {
            base: at(1_000_000),
            start: tokio::time::Instant::now(),
        });
        api.put(&node("healthy", "True"));
        api.put(&node("silent", "True"));
        api.put(&named_lease("healthy", clock.now()));
        api.put(&named_lease("silent", clock.now()));
        api.put(&*pod("web", "silent", default_tolerations()));
        api.put(&*pod("batch", "silent", vec![]));
        api.put(&*pod("other", "healthy", vec![]));

        let client = api.client();
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(client.clone());
        let controller = start_with_clock(
            &mut factory,
            client,
            NodeLifecycleConfig::default(),
            clock.clone(),
            shutdown.clone(),
        );
        let informers = factory.run(shutdown.clone());
        let running = tokio::spawn(async move {
            tokio::join!(informers, controller);
        });
        // Only the healthy node's kubelet renews its Lease.
        let renewer = {
            let api = api.clone();
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    api.put(&named_lease("healthy", clock.now()));
                }
            })
        };

        until(&clock, 39).await;
        let silent = api.get("nodes", "", "silent").unwrap();
        assert_eq!(condition(&silent, "Ready")["status"], "True");
        assert!(taint_list(&silent).is_empty());

        until(&clock, 45).await;
        let silent = api.get("nodes", "", "silent").unwrap();
        let ready = condition(&silent, "Ready");
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["message"], "Kubelet stopped posting node status.");
        assert_eq!(condition(&silent, "PIDPressure")["status"], "Unknown");
        assert_eq!(
            taint_list(&silent),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute",
            ]
        );
        let added = Time(at(1_000_040));
        assert_eq!(
            silent["spec"]["taints"][1]["timeAdded"],
            serde_json::to_value(&added).unwrap()
        );
        // The intolerant pod was marked a disruption target and deleted.
        assert!(api.get("pods", "default", "batch").is_none());
        let batch = api.deleted("pods", "default", "batch").unwrap();
        assert_eq!(
            condition(&batch, "DisruptionTarget")["reason"],
            "DeletionByTaintManager"
        );
        // The tolerant one stays for now, no longer Ready.
        let web = api.get("pods", "default", "web").unwrap();
        assert_eq!(condition(&web, "Ready")["status"], "False");
        // The healthy node and its pod are untouched.
        let healthy = api.get("nodes", "", "healthy").unwrap();
        assert_eq!(condition(&healthy, "Ready")["status"], "True");
        assert!(taint_list(&healthy).is_empty());
        let other = api.get("pods", "default", "other").unwrap();
        assert_eq!(condition(&other, "Ready")["status"], "True");
        let reasons = api.event_reasons();
        for reason in ["NodeNotReady", "TaintManagerEviction"] {
            assert!(
                reasons.iter().any(|r| r == reason),
                "{reason} in {reasons:?}"
            );
        }

        // 300 s after the taint, the default toleration runs out.
        until(&clock, 339).await;
        assert!(api.get("pods", "default", "web").is_some());
        until(&clock, 341).await;
        assert!(api.get("pods", "default", "web").is_none());

        // The kubelet is back: Ready again, so the taints come off.
        let mut back = api.get("nodes", "", "silent").unwrap();
        let conditions = back["status"]["conditions"].as_array_mut().unwrap();
        let ready = conditions
            .iter_mut()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        ready["status"] = "True".into();
        ready["lastHeartbeatTime"] = serde_json::to_value(Time(clock.now())).unwrap();
        api.put(&back);
        api.put(&named_lease("silent", clock.now()));
        until(&clock, 342).await;
        let silent = api.get("nodes", "", "silent").unwrap();
        assert!(taint_list(&silent).is_empty(), "{:?}", taint_list(&silent));

        renewer.abort();
        shutdown.cancel();
        running.await.unwrap();
    }
}
