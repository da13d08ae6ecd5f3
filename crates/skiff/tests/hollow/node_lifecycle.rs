//! Node lifecycle: a node whose agent dies goes NotReady (Ready Unknown) after
//! the grace period, is tainted unreachable, its pods are evicted once their
//! toleration runs out, and their Deployment replaces them elsewhere. When
//! the agent comes back the node is Ready again and the taints go.
//!
//! The node lifecycle controller taints nodes of a zone at 0.1 nodes/s only
//! while fewer than 55% of the zone's nodes (if more than 2) are down. The
//! nodes of this test carry no zone label, so their zone is shared with every
//! other unlabelled node of the cluster (all but the spread test's six), and
//! one of them going down leaves it healthy.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use skiff_testing::eventually;

use crate::fixture::{GRACE_PERIOD_SECONDS, LIFECYCLE, cluster, disturb_nodes, fixture};
use crate::util::{
    IMAGE, apply, events_of, live, name_of, node_of, node_ready_is, running, wait_pods,
};

/// How long the pods tolerate an unreachable (or not-ready) node.
const TOLERATION_SECONDS: i64 = 5;
/// The pods' termination grace period, which their deletion timestamp adds.
const TERMINATION_GRACE_SECONDS: i64 = 30;

fn node(name: &str) -> Value {
    cluster().get_json(&["get", "node", name])
}

fn taint<'a>(node: &'a Value, key: &str, effect: &str) -> Option<&'a Value> {
    node["spec"]["taints"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key && t["effect"] == effect)
}

fn timestamp(value: &Value) -> Timestamp {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

/// Polls node `name` until `check` holds; panics with the node after `timeout`.
fn wait_node(name: &str, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, timeout, || {
            last = node(name);
            check(&last)
        });
    }));
    if result.is_err() {
        panic!(
            "node {name}: timed out after {timeout:?} waiting for {what}:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
    }
    last
}

#[test]
fn pods_of_a_lost_node_are_evicted_and_replaced() {
    let c = cluster();
    let ns = c.namespace("lifecycle");
    let ns = ns.name();
    apply(
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: resilient}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: resilient}}}}
  template:
    metadata: {{labels: {{app: resilient}}}}
    spec:
      nodeSelector: {{{selector}}}
      terminationGracePeriodSeconds: {TERMINATION_GRACE_SECONDS}
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: {TOLERATION_SECONDS}}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: {TOLERATION_SECONDS}}}
      containers: [{{name: app, image: {IMAGE}}}]
"#,
            selector = LIFECYCLE.selector()
        ),
    );
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/resilient",
        "-n",
        ns,
        "--timeout=45s",
    ]);
    let before = running(&crate::util::pods(ns, "app=resilient"));
    assert_eq!(before.len(), 2);
    let lost_pod = name_of(&before[0]).to_string();
    let lost = node_of(&before[0]).to_string();
    let prefix = lost
        .strip_suffix("-0")
        .unwrap_or_else(|| panic!("{lost} is not the only node of its agent"));

    // Until the node is back, other tests' pods are refused by it for its
    // taints rather than their selector.
    let _disturbing = disturb_nodes();
    fixture().kill_agent(prefix);
    let killed = Instant::now();

    let grace = Duration::from_secs(GRACE_PERIOD_SECONDS);
    let unknown = wait_node(
        &lost,
        "Ready Unknown",
        grace + Duration::from_secs(15),
        |n| node_ready_is(n, "Unknown"),
    );
    let silent_for = killed.elapsed();
    let ready = unknown["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .expect("the node has a Ready condition");
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    // The last heartbeat came at most one renewal interval before the kill.
    assert!(
        silent_for + Duration::from_secs(10) >= grace,
        "declared Unknown {silent_for:?} after the agent died, grace {grace:?}"
    );
    let table = c.kubectl_ok(&["get", "node", &lost, "--no-headers"]);
    assert_eq!(table.split_whitespace().nth(1), Some("NotReady"), "{table}");

    let tainted = wait_node(&lost, "the unreachable taints", crate::util::TIMEOUT, |n| {
        taint(n, "node.kubernetes.io/unreachable", "NoSchedule").is_some()
            && taint(n, "node.kubernetes.io/unreachable", "NoExecute").is_some()
    });
    let added = timestamp(
        &taint(&tainted, "node.kubernetes.io/unreachable", "NoExecute").expect("checked")["timeAdded"],
    );
    let events = events_of("default", &lost);
    assert!(
        events.iter().any(|e| e["reason"] == "NodeNotReady"
            && e["message"] == format!("Node {lost} status is now: NodeNotReady")),
        "{events:#?}"
    );

    // The pod is evicted once its toleration is over, and replaced on the
    // nodes that are left.
    let after = wait_pods(
        ns,
        "app=resilient",
        "the lost pod replaced",
        crate::util::TIMEOUT,
        |pods| {
            let current = running(pods);
            current.len() == 2 && current.iter().all(|p| node_of(p) != lost)
        },
    );
    // Nothing finishes the evicted pod's deletion while its node is down, so
    // it stays Terminating; the deletion was asked for no earlier than the
    // toleration allowed.
    let evicted = after
        .iter()
        .find(|p| name_of(p) == lost_pod)
        .unwrap_or_else(|| panic!("{lost_pod} is gone although its node is down"));
    let deletion = timestamp(&evicted["metadata"]["deletionTimestamp"]);
    let requested = deletion - SignedDuration::from_secs(TERMINATION_GRACE_SECONDS);
    assert!(
        requested >= added + SignedDuration::from_secs(TOLERATION_SECONDS - 1),
        "evicted at {requested}, tainted at {added}"
    );
    let events = events_of(ns, &lost_pod);
    assert!(
        events.iter().any(|e| e["reason"] == "TaintManagerEviction"
            && e["message"] == format!("Marking for deletion Pod {ns}/{lost_pod}")),
        "{events:#?}"
    );
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/resilient",
        "-n",
        ns,
        "--timeout=30s",
    ]);
    let deployment = c.get_json(&["get", "deployment", "resilient", "-n", ns]);
    assert_eq!(deployment["status"]["availableReplicas"], 2);

    // The agent comes back: Ready again, untainted, and the evicted pod's
    // deletion finishes.
    fixture().start_agent(prefix);
    wait_node(&lost, "Ready and untainted", crate::util::TIMEOUT, |n| {
        node_ready_is(n, "True")
            && taint(n, "node.kubernetes.io/unreachable", "NoSchedule").is_none()
            && taint(n, "node.kubernetes.io/unreachable", "NoExecute").is_none()
    });
    wait_pods(
        ns,
        "app=resilient",
        "the evicted pod gone",
        crate::util::TIMEOUT,
        |pods| pods.len() == 2 && live(pods).len() == 2,
    );
}
