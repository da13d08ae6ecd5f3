use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Container, NodeCondition, NodeSpec, NodeStatus, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaLabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::plan::{Plan, plan};
use super::*;
use crate::expectations::InFlight;

const HASH: &str = "newhash";

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn now() -> Timestamp {
    at(10_000)
}

fn app_labels() -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([("app".to_string(), "agent".to_string())]))
}

fn node(name: &str) -> Arc<Node> {
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: None,
    })
}

fn labelled(name: &str, key: &str, value: &str) -> Arc<Node> {
    let mut n = (*node(name)).clone();
    n.metadata.labels = Some(BTreeMap::from([(key.to_string(), value.to_string())]));
    Arc::new(n)
}

fn tainted(name: &str, key: &str, effect: &str) -> Arc<Node> {
    let mut n = (*node(name)).clone();
    n.spec.as_mut().unwrap().taints = Some(vec![Taint {
        key: key.into(),
        effect: effect.into(),
        ..Taint::default()
    }]);
    Arc::new(n)
}

fn daemonset() -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("kube-system".into()),
            uid: Some("ds-uid".into()),
            generation: Some(2),
            ..ObjectMeta::default()
        },
        spec: DaemonSetSpec {
            selector: MetaLabelSelector {
                match_labels: app_labels(),
                ..MetaLabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: app_labels(),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some("agent:2".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            update_strategy: Some(rolling_update(IntOrString::Int(1), IntOrString::Int(0))),
            ..DaemonSetSpec::default()
        },
        status: None,
    }
}

fn rolling_update(max_unavailable: IntOrString, max_surge: IntOrString) -> DaemonSetUpdateStrategy {
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable: Some(max_unavailable),
            max_surge: Some(max_surge),
        }),
    }
}

/// A daemon pod bound to `node`, of revision `hash`, created at `created`,
/// ready since `ready_at` if given.
fn pod(name: &str, node: &str, hash: &str, created: i64, ready_at: Option<i64>) -> Arc<Pod> {
    let mut labels = app_labels().unwrap();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-system".into()),
            labels: Some(labels),
            creation_timestamp: Some(Time(at(created))),
            owner_references: Some(vec![OwnerReference {
                uid: "ds-uid".into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(at(t))),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        }),
    })
}

fn with_phase(pod: Arc<Pod>, phase: &str) -> Arc<Pod> {
    let mut pod = (*pod).clone();
    pod.status.as_mut().unwrap().phase = Some(phase.into());
    Arc::new(pod)
}

fn deleting(pod: Arc<Pod>) -> Arc<Pod> {
    let mut pod = (*pod).clone();
    pod.metadata.deletion_timestamp = Some(Time(now()));
    Arc::new(pod)
}

fn backoff() -> FailedPodBackoff {
    let config = DaemonSetConfig::default();
    FailedPodBackoff::new(config.failed_pod_backoff, config.failed_pod_backoff_max)
}

struct Run<'a> {
    ds: DaemonSet,
    nodes: Vec<Arc<Node>>,
    pods: Vec<Arc<Pod>>,
    in_flight: InFlight,
    now: Timestamp,
    config: DaemonSetConfig,
    backoff: &'a mut FailedPodBackoff,
}

impl<'a> Run<'a> {
    fn new(backoff: &'a mut FailedPodBackoff) -> Self {
        Self {
            ds: daemonset(),
            nodes: Vec::new(),
            pods: Vec::new(),
            in_flight: InFlight::default(),
            now: now(),
            config: DaemonSetConfig::default(),
            backoff,
        }
    }

    fn plan(&mut self) -> Plan {
        let observed = Observed {
            ds: &self.ds,
            nodes: &self.nodes,
            pods: &self.pods,
            hash: HASH,
            in_flight: &self.in_flight,
            now: self.now,
        };
        plan(&observed, self.backoff, &self.config)
    }
}

fn names(pods: &[Arc<Pod>]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

#[test]
fn every_eligible_node_without_a_pod_gets_one() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.template.spec.as_mut().unwrap().node_selector =
        Some(BTreeMap::from([("role".into(), "edge".into())]));
    run.nodes = vec![
        labelled("a", "role", "edge"),
        labelled("b", "role", "core"),
        labelled("c", "role", "edge"),
        labelled("d", "role", "edge"),
    ];
    run.pods = vec![pod("agent-d", "d", HASH, 1, Some(1))];
    let plan = run.plan();
    assert!(plan.synced);
    assert_eq!(plan.create, ["a", "c"]);
    assert!(plan.delete.is_empty());
    assert_eq!(
        plan.counts,
        Counts {
            desired: 3,
            current: 1,
            misscheduled: 0,
            ready: 1,
            updated: 1,
            available: 1,
            unavailable: 2,
        }
    );
}

#[test]
fn cordoned_and_troubled_nodes_still_get_pods_but_foreign_taints_do_not() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    let mut cordoned = (*node("cordoned")).clone();
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    run.nodes = vec![
        Arc::new(cordoned),
        tainted(
            "unschedulable",
            "node.kubernetes.io/unschedulable",
            "NoSchedule",
        ),
        tainted(
            "pressured",
            "node.kubernetes.io/memory-pressure",
            "NoSchedule",
        ),
        tainted("gpu", "nvidia.com/gpu", "NoSchedule"),
    ];
    let plan = run.plan();
    assert_eq!(plan.create, ["cordoned", "unschedulable", "pressured"]);
    assert_eq!(plan.counts.desired, 3);
}

#[test]
fn no_schedule_taints_keep_existing_pods_and_no_execute_taints_evict_them() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![
        tainted("soft", "dedicated", "NoSchedule"),
        tainted("hard", "dedicated", "NoExecute"),
    ];
    run.pods = vec![
        pod("on-soft", "soft", HASH, 1, Some(1)),
        pod("on-hard", "hard", HASH, 1, Some(1)),
    ];
    let plan = run.plan();
    assert!(plan.create.is_empty());
    assert_eq!(names(&plan.delete), ["on-hard"]);
    assert_eq!(plan.counts.desired, 0);
    assert_eq!(plan.counts.misscheduled, 2);
}

#[test]
fn tolerations_in_the_template_admit_tainted_nodes() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.template.spec.as_mut().unwrap().tolerations =
        Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
    run.nodes = vec![tainted("hard", "dedicated", "NoExecute")];
    assert_eq!(run.plan().create, ["hard"]);
}

#[test]
fn pods_on_nodes_that_stopped_matching_are_deleted() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.template.spec.as_mut().unwrap().node_selector =
        Some(BTreeMap::from([("role".into(), "edge".into())]));
    run.nodes = vec![labelled("a", "role", "core")];
    run.pods = vec![
        pod("stale", "a", HASH, 1, Some(1)),
        deleting(pod("going", "a", HASH, 1, Some(1))),
    ];
    let plan = run.plan();
    assert_eq!(names(&plan.delete), ["stale"]);
    assert_eq!(plan.counts.misscheduled, 1);
}

#[test]
fn extra_pods_on_a_node_are_deleted_keeping_the_oldest() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a")];
    run.pods = vec![
        pod("newer", "a", HASH, 20, Some(20)),
        pod("oldest", "a", HASH, 5, Some(5)),
        pod("newest", "a", HASH, 30, None),
    ];
    let plan = run.plan();
    assert!(plan.create.is_empty());
    assert_eq!(names(&plan.delete), ["newer", "newest"]);
    assert_eq!(plan.counts.current, 1);
    assert_eq!(plan.counts.ready, 1);
}

#[test]
fn a_terminating_pod_blocks_its_replacement_until_it_is_gone() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a"), node("b")];
    run.pods = vec![
        deleting(pod("stopping", "a", HASH, 1, Some(1))),
        deleting(with_phase(pod("finished", "b", HASH, 1, None), "Failed")),
    ];
    let plan = run.plan();
    // A finished pod being deleted no longer counts; a running one does.
    assert_eq!(plan.create, ["b"]);
    assert!(plan.delete.is_empty());
}

#[test]
fn failed_pods_are_deleted_with_backoff_per_node() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a")];
    run.pods = vec![with_phase(pod("crashed", "a", HASH, 1, None), "Failed")];
    let first = run.plan();
    assert_eq!(names(&first.delete), ["crashed"]);
    assert!(
        first.create.is_empty(),
        "the replacement waits for the deletion"
    );
    assert_eq!(first.notices.len(), 1);
    assert_eq!(first.notices[0].reason, "FailedDaemonPod");
    assert_eq!(first.notices[0].event_type, EventType::Warning);
    assert_eq!(
        first.notices[0].message,
        "Found failed daemon pod kube-system/crashed on node a, will try to kill it"
    );

    // The replacement fails too, half a second later: it must wait.
    run.pods = vec![with_phase(
        pod("crashed-again", "a", HASH, 2, None),
        "Failed",
    )];
    run.now = now() + Duration::from_millis(500);
    let second = run.plan();
    assert!(second.delete.is_empty());
    assert!(second.notices.is_empty());
    assert_eq!(second.recheck_after, Some(Duration::from_millis(500)));

    run.now = now() + Duration::from_secs(1);
    let third = run.plan();
    assert_eq!(names(&third.delete), ["crashed-again"]);
}

#[test]
fn succeeded_pods_are_deleted_with_a_normal_event() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a")];
    run.pods = vec![with_phase(pod("done", "a", HASH, 1, None), "Succeeded")];
    let plan = run.plan();
    assert_eq!(names(&plan.delete), ["done"]);
    assert_eq!(plan.notices[0].reason, "SucceededDaemonPod");
    assert_eq!(plan.notices[0].event_type, EventType::Normal);
}

#[test]
fn unbound_pods_for_vanished_nodes_are_deleted_bound_ones_left_to_pod_gc() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a")];
    let mut pending = (*pod("pending", "gone", HASH, 1, None)).clone();
    let spec = pending.spec.as_mut().unwrap();
    spec.node_name = None;
    nodes::bind_to_node(spec, "gone");
    run.pods = vec![
        pod("on-a", "a", HASH, 1, Some(1)),
        Arc::new(pending),
        pod("bound", "gone-too", HASH, 1, Some(1)),
    ];
    let plan = run.plan();
    assert_eq!(names(&plan.delete), ["pending"]);
}

#[test]
fn unconfirmed_writes_leave_only_the_status() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a"), node("b")];
    run.in_flight = InFlight {
        creates: vec!["agent-xyz".into()],
        deletes: vec![],
    };
    let plan = run.plan();
    assert!(!plan.synced);
    assert!(plan.create.is_empty());
    assert_eq!(plan.counts.desired, 2);
}

#[test]
fn creates_and_deletes_are_capped_by_the_burst() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.config.burst_replicas = 2;
    run.nodes = (0..5).map(|i| node(&format!("n{i}"))).collect();
    assert_eq!(run.plan().create, ["n0", "n1"]);
}

fn old_pods_on(nodes: &[&str]) -> Vec<Arc<Pod>> {
    nodes
        .iter()
        .map(|n| pod(&format!("old-{n}"), n, "oldhash", 1, Some(1)))
        .collect()
}

#[test]
fn rolling_update_replaces_max_unavailable_pods_at_a_time() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a"), node("b"), node("c")];
    run.pods = old_pods_on(&["a", "b", "c"]);
    let plan = run.plan();
    assert!(plan.create.is_empty());
    assert_eq!(names(&plan.delete), ["old-a"]);
    assert_eq!(plan.counts.updated, 0);

    // a's replacement runs but is not ready: it uses up the budget.
    run.pods = old_pods_on(&["b", "c"]);
    run.pods.push(pod("new-a", "a", HASH, 50, None));
    assert!(run.plan().delete.is_empty());

    // Once it is available, the next old pod goes.
    run.pods.pop();
    run.pods.push(pod("new-a", "a", HASH, 50, Some(60)));
    let plan = run.plan();
    assert_eq!(names(&plan.delete), ["old-b"]);
    assert_eq!(plan.counts.updated, 1);
}

#[test]
fn max_unavailable_as_a_percentage_rounds_up() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.update_strategy = Some(rolling_update(
        IntOrString::String("50%".into()),
        IntOrString::Int(0),
    ));
    run.nodes = vec![node("a"), node("b"), node("c")];
    run.pods = old_pods_on(&["a", "b", "c"]);
    assert_eq!(names(&run.plan().delete), ["old-a", "old-b"]);
}

#[test]
fn unavailable_old_pods_are_replaced_regardless_of_the_budget() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a"), node("b"), node("c")];
    run.pods = vec![
        pod("old-a", "a", "oldhash", 1, None),
        pod("old-b", "b", "oldhash", 1, None),
        pod("old-c", "c", "oldhash", 1, Some(1)),
    ];
    assert_eq!(names(&run.plan().delete), ["old-a", "old-b"]);
}

#[test]
fn on_delete_never_replaces_old_pods() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    run.nodes = vec![node("a"), node("b")];
    run.pods = old_pods_on(&["a", "b"]);
    let plan = run.plan();
    assert!(plan.delete.is_empty());
    assert!(plan.create.is_empty());
    // A pod deleted by hand is recreated from the new template.
    run.pods = old_pods_on(&["b"]);
    assert_eq!(run.plan().create, ["a"]);
}

#[test]
fn the_rolling_update_waits_for_missing_pods_to_be_created() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.nodes = vec![node("a"), node("b"), node("c")];
    run.pods = old_pods_on(&["b", "c"]);
    let plan = run.plan();
    assert_eq!(plan.create, ["a"]);
    assert!(plan.delete.is_empty());
}

#[test]
fn surging_starts_the_new_pod_before_deleting_the_old() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.update_strategy = Some(rolling_update(IntOrString::Int(0), IntOrString::Int(1)));
    run.nodes = vec![node("a"), node("b")];
    run.pods = old_pods_on(&["a", "b"]);
    let plan = run.plan();
    assert_eq!(plan.create, ["a"]);
    assert!(plan.delete.is_empty());

    // The surge pod is not available yet: keep both, start nothing else.
    run.pods.push(pod("new-a", "a", HASH, 50, None));
    let plan = run.plan();
    assert!(plan.create.is_empty());
    assert!(plan.delete.is_empty());
    assert_eq!(plan.counts.updated, 0, "the oldest pod on a counts");

    // Available: the old pod on a goes.
    run.pods.pop();
    run.pods.push(pod("new-a", "a", HASH, 50, Some(60)));
    let plan = run.plan();
    assert_eq!(names(&plan.delete), ["old-a"]);
    assert!(plan.create.is_empty());
}

#[test]
fn surging_deletes_pods_on_nodes_they_must_leave_only_while_enough_are_available() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.update_strategy = Some(rolling_update(IntOrString::Int(0), IntOrString::Int(1)));
    run.nodes = vec![node("a"), tainted("b", "dedicated", "NoSchedule")];
    run.pods = old_pods_on(&["a", "b"]);
    let plan = run.plan();
    assert_eq!(plan.create, ["a"]);
    // Two pods are available and one node wants a pod: b's may go.
    assert_eq!(names(&plan.delete), ["old-b"]);
    assert_eq!(plan.counts.misscheduled, 1);

    // With a's pod unavailable, b's pod is all that serves: it stays.
    run.pods = vec![
        pod("old-a", "a", "oldhash", 1, None),
        pod("old-b", "b", "oldhash", 1, Some(1)),
    ];
    let plan = run.plan();
    assert_eq!(plan.create, ["a"]);
    assert!(plan.delete.is_empty());
}

#[test]
fn min_ready_seconds_delays_availability_and_asks_for_a_recheck() {
    let mut b = backoff();
    let mut run = Run::new(&mut b);
    run.ds.spec.min_ready_seconds = Some(30);
    run.nodes = vec![node("a")];
    run.pods = vec![pod("p", "a", HASH, 1, Some(9_990))];
    let plan = run.plan();
    assert_eq!(plan.counts.ready, 1);
    assert_eq!(plan.counts.available, 0);
    assert_eq!(plan.counts.unavailable, 1);
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(20)));
}

#[test]
fn backoff_doubles_caps_and_expires() {
    let mut b = FailedPodBackoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let t = |s: i64| at(s);
    assert_eq!(b.remaining("k", t(0)), None);
    b.next("k", t(0));
    assert_eq!(b.remaining("k", t(0)), Some(Duration::from_secs(1)));
    b.next("k", t(1));
    assert_eq!(b.remaining("k", t(1)), Some(Duration::from_secs(2)));
    b.next("k", t(3));
    b.next("k", t(7));
    assert_eq!(
        b.remaining("k", t(7)),
        Some(Duration::from_secs(4)),
        "capped"
    );
    // Idle for more than twice the cap: starts over.
    b.next("k", t(100));
    assert_eq!(b.remaining("k", t(100)), Some(Duration::from_secs(1)));
    b.gc(t(100), Some("k"));
    assert_eq!(b.remaining("k", t(100)), None);
}

#[test]
fn new_pods_carry_revision_labels_daemon_tolerations_and_node_affinity() {
    let mut ds = daemonset();
    ds.annotations_mut()
        .insert(history::TEMPLATE_GENERATION_ANNOTATION.into(), "3".into());
    let pod = new_pod(&ds, "abc", "node-1", "agent-x2x4z".into());
    assert_eq!(pod.name_any(), "agent-x2x4z");
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    assert_eq!(pod.namespace().as_deref(), Some("kube-system"));
    let labels = pod.labels();
    assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
    assert_eq!(
        labels.get(REVISION_HASH_LABEL).map(String::as_str),
        Some("abc")
    );
    assert_eq!(
        labels.get(TEMPLATE_GENERATION_LABEL).map(String::as_str),
        Some("3")
    );
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("DaemonSet", "ds-uid")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name, None, "the scheduler binds it");
    assert_eq!(nodes::target_node(&pod), Some("node-1"));
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert!(tolerations.iter().any(|t| {
        t.key.as_deref() == Some("node.kubernetes.io/unschedulable")
            && t.effect.as_deref() == Some("NoSchedule")
    }));
    assert!(tolerations.iter().all(|t| t.toleration_seconds.is_none()));
}

#[test]
fn status_is_written_only_when_it_changed_and_observed_generation_when_synced() {
    let mut ds = daemonset();
    let counts = Counts {
        desired: 2,
        current: 2,
        misscheduled: 0,
        ready: 1,
        updated: 2,
        available: 1,
        unavailable: 1,
    };
    let patch = status_patch(&ds, &counts, true).unwrap();
    assert_eq!(patch["status"]["observedGeneration"], 2);
    assert_eq!(patch["status"]["numberUnavailable"], 1);
    assert_eq!(patch["status"]["desiredNumberScheduled"], 2);
    let unsynced = status_patch(&ds, &counts, false).unwrap();
    assert!(unsynced["status"].get("observedGeneration").is_none());

    ds.status = Some(DaemonSetStatus {
        desired_number_scheduled: 2,
        current_number_scheduled: 2,
        number_ready: 1,
        updated_number_scheduled: Some(2),
        number_available: Some(1),
        number_unavailable: Some(1),
        observed_generation: Some(2),
        ..DaemonSetStatus::default()
    });
    assert!(status_patch(&ds, &counts, true).is_none());
    ds.metadata.generation = Some(3);
    assert!(status_patch(&ds, &counts, false).is_none());
    assert_eq!(
        status_patch(&ds, &counts, true).unwrap()["status"]["observedGeneration"],
        3
    );
}

#[test]
fn node_heartbeats_do_not_count_as_changes() {
    let condition = |type_: &str, status: &str, beat: i64| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        last_heartbeat_time: Some(Time(at(beat))),
        ..NodeCondition::default()
    };
    let mut a = (*labelled("n", "zone", "a")).clone();
    a.status = Some(NodeStatus {
        conditions: Some(vec![condition("Ready", "True", 1)]),
        ..NodeStatus::default()
    });
    let mut beat = a.clone();
    beat.status = Some(NodeStatus {
        conditions: Some(vec![condition("Ready", "True", 2)]),
        ..NodeStatus::default()
    });
    assert_eq!(NodeShape::of(&a), NodeShape::of(&beat));
    let mut not_ready = a.clone();
    not_ready.status = Some(NodeStatus {
        conditions: Some(vec![condition("Ready", "False", 2)]),
        ..NodeStatus::default()
    });
    assert_ne!(NodeShape::of(&a), NodeShape::of(&not_ready));
    let relabelled = labelled("n", "zone", "b");
    assert_ne!(NodeShape::of(&a).labels, NodeShape::of(&relabelled).labels);
}

#[test]
fn an_empty_selector_is_refused() {
    let mut ds = daemonset();
    assert!(!selects_everything(&ds));
    ds.spec.selector = MetaLabelSelector::default();
    assert!(selects_everything(&ds));
}
