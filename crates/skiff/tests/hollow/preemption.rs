//! Preemption: a pod of a higher PriorityClass that fits nowhere evicts a
//! lower-priority pod, is nominated to its node, and runs there.

use std::time::Duration;

use skiff_testing::eventually;

use crate::fixture::{PREEMPTION, cluster, steady_nodes, total_nodes};
use crate::util::{
    IMAGE, INSUFFICIENT_CPU, NODE_AFFINITY, apply, events_of, nodes_available, pod, wait_pod,
    wait_pod_running,
};

#[test]
fn a_higher_priority_pod_preempts_a_lower_priority_one() {
    let c = cluster();
    let ns = c.namespace("preempt");
    let ns = ns.name();
    let node = &PREEMPTION.nodes()[0];
    c.kubectl_ok(&["create", "priorityclass", "hollow-low", "--value=100"]);
    c.kubectl_ok(&["create", "priorityclass", "hollow-high", "--value=1000"]);
    // Each pod takes 3 of the node's 4 CPUs.
    let manifest = |name: &str, class: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  priorityClassName: {class}
  nodeSelector: {{{selector}}}
  containers:
  - name: app
    image: {IMAGE}
    resources: {{requests: {{cpu: "3", memory: 1Gi}}}}
"#,
            selector = PREEMPTION.selector()
        )
    };
    apply(ns, &manifest("low", "hollow-low"));
    assert_eq!(wait_pod_running(ns, "low"), *node);
    let low = pod(ns, "low");
    assert_eq!(
        low["spec"]["priority"], 100,
        "the Priority admission resolves the class: {}",
        low["spec"]
    );

    let mut watch = c.kubectl_watch(&[
        "get",
        "pods",
        "-n",
        ns,
        "--watch",
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name,NOMINATED:.status.nominatedNodeName,NODE:.spec.nodeName",
    ]);
    watch.wait_for(Duration::from_secs(20), |l| l.starts_with("low "));
    let steady = steady_nodes();
    apply(ns, &manifest("high", "hollow-high"));
    let nominated = watch.wait_for(Duration::from_secs(30), |l| {
        let columns: Vec<&str> = l.split_whitespace().collect();
        columns.first() == Some(&"high") && columns.get(1) == Some(&node.as_str())
    });
    assert!(nominated.contains(node.as_str()), "{nominated}");
    wait_pod(ns, "low", "the low-priority pod deleted", |p| p.is_null());
    assert_eq!(wait_pod_running(ns, "high"), *node);

    let high = pod(ns, "high");
    assert_eq!(high["spec"]["priority"], 1000);
    let uid = high["metadata"]["uid"].as_str().expect("a pod has a uid");
    let events = events_of(ns, "low");
    assert!(
        events.iter().any(|e| e["reason"] == "Preempted"
            && e["message"] == format!("Preempted by pod {uid} on node {node}")),
        "no Preempted event on the victim: {events:#?}"
    );
    // Before the victim was gone, the preemptor did not fit: its attempt is
    // recorded with only the filters' reasons, since preemption made room.
    let others = total_nodes() - 1;
    let failed = nodes_available(&[(1, INSUFFICIENT_CPU), (others, NODE_AFFINITY)]);
    let events = events_of(ns, "high");
    drop(steady);
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["message"] == failed),
        "no FailedScheduling {failed:?}: {events:#?}"
    );
    // Events are recorded asynchronously, after the binding.
    let scheduled = format!("Successfully assigned {ns}/high to {node}");
    eventually(
        "the Scheduled event of the preemptor",
        Duration::from_secs(10),
        || {
            events_of(ns, "high")
                .iter()
                .any(|e| e["reason"] == "Scheduled" && e["message"] == scheduled.as_str())
        },
    );
}
