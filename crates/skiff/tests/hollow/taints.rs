//! Taints set with `kubectl taint`: `NoSchedule` keeps pods that do not
//! tolerate it away, `NoExecute` also evicts the ones already there (at once,
//! or after their `tolerationSeconds`).

use crate::fixture::{TAINTS, cluster, disturb_nodes, total_nodes};
use crate::util::{
    IMAGE, NODE_AFFINITY, NOT_HELPFUL, TIMEOUT, UNTOLERATED_TAINT, apply, assert_unschedulable,
    events_of, fit_message, node_of, per_node, pod, wait_pod, wait_pod_running, wait_pods,
    wait_running,
};

#[test]
fn taints_keep_away_and_evict_pods_that_do_not_tolerate_them() {
    let c = cluster();
    let ns = c.namespace("taints");
    let ns = ns.name();
    let nodes = TAINTS.nodes();
    let (gpu0, gpu1, plain) = (&nodes[0], &nodes[1], &nodes[2]);
    let selector = TAINTS.selector();

    // Other tests' pods are refused by these nodes for their taints until
    // the taints are removed again.
    let _disturbing = disturb_nodes();
    let tainted = c.kubectl_ok(&["taint", "nodes", gpu0, gpu1, "dedicated=gpu:NoSchedule"]);
    assert!(
        tainted.contains(&format!("node/{gpu0} tainted")),
        "{tainted}"
    );
    let node = c.get_json(&["get", "node", gpu0]);
    assert_eq!(
        node["spec"]["taints"][0],
        serde_json::json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})
    );

    apply(
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: plain}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: plain}}}}
  template:
    metadata: {{labels: {{app: plain}}}}
    spec:
      nodeSelector: {{{selector}}}
      containers: [{{name: app, image: {IMAGE}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: gpu}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: gpu}}}}
  template:
    metadata: {{labels: {{app: gpu}}}}
    spec:
      tolerations:
      - {{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {{key: kubernetes.io/hostname, operator: In, values: [{gpu0}, {gpu1}]}}
      containers: [{{name: app, image: {IMAGE}}}]
"#
        ),
    );
    let without = wait_running(ns, "app=plain", 3);
    assert_eq!(
        per_node(&without),
        [(plain.clone(), 3)].into(),
        "pods without a toleration avoid the tainted nodes"
    );
    let with = wait_running(ns, "app=gpu", 4);
    assert!(
        with.iter()
            .all(|p| [gpu0, gpu1].contains(&&node_of(p).to_string())),
        "tolerating pods land on the tainted nodes: {:?}",
        per_node(&with)
    );

    // A pod that may only go to a tainted node waits; each tainted node is
    // counted for its taint, which the scheduler checks before the selector.
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: pinned}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {gpu0}}}
  containers: [{{name: app, image: {IMAGE}}}]
"#
        ),
    );
    let total = total_nodes();
    assert_unschedulable(
        ns,
        "pinned",
        &fit_message(
            &[(2, UNTOLERATED_TAINT), (total - 2, NODE_AFFINITY)],
            &[(total, NOT_HELPFUL)],
        ),
    );
    // Removing the taint lets it in.
    c.kubectl_ok(&["taint", "nodes", gpu0, "dedicated=gpu:NoSchedule-"]);
    assert_eq!(wait_pod_running(ns, "pinned"), *gpu0);

    // NoExecute: the pods without a toleration are evicted at once, the one
    // tolerating it for 5 s after that, the one tolerating it forever stays.
    c.kubectl_ok(&["delete", "deployment", "plain", "-n", ns]);
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: victim}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {plain}}}
  containers: [{{name: app, image: {IMAGE}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: leaver}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {plain}}}
  tolerations:
  - {{key: maintenance, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
  containers: [{{name: app, image: {IMAGE}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: stayer}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {plain}}}
  tolerations:
  - {{key: maintenance, operator: Exists, effect: NoExecute}}
  containers: [{{name: app, image: {IMAGE}}}]
"#
        ),
    );
    for name in ["victim", "leaver", "stayer"] {
        assert_eq!(wait_pod_running(ns, name), *plain);
    }
    wait_pods(ns, "app=plain", "the plain pods gone", TIMEOUT, |p| {
        p.is_empty()
    });
    c.kubectl_ok(&["taint", "nodes", plain, "maintenance=now:NoExecute"]);
    let node = c.get_json(&["get", "node", plain]);
    let taint = &node["spec"]["taints"][0];
    assert_eq!(taint["key"], "maintenance");
    assert_eq!(taint["effect"], "NoExecute");

    wait_pod(ns, "victim", "the victim evicted", |p| {
        p.is_null() || !p["metadata"]["deletionTimestamp"].is_null()
    });
    let leaver = pod(ns, "leaver");
    assert!(
        !leaver.is_null() && leaver["metadata"]["deletionTimestamp"].is_null(),
        "the 5 s toleration is not over yet: {leaver}"
    );
    wait_pod(ns, "leaver", "the 5 s toleration over", |p| {
        p.is_null() || !p["metadata"]["deletionTimestamp"].is_null()
    });
    for name in ["victim", "leaver"] {
        let events = events_of(ns, name);
        assert!(
            events.iter().any(|e| e["reason"] == "TaintManagerEviction"
                && e["message"] == format!("Marking for deletion Pod {ns}/{name}")),
            "no TaintManagerEviction event for {name}: {events:#?}"
        );
    }
    let stayer = pod(ns, "stayer");
    assert_eq!(stayer["status"]["phase"], "Running");
    assert!(stayer["metadata"]["deletionTimestamp"].is_null());

    c.kubectl_ok(&["taint", "nodes", gpu1, "dedicated-"]);
    c.kubectl_ok(&["taint", "nodes", plain, "maintenance-"]);
    for name in &nodes {
        let node = c.get_json(&["get", "node", name]);
        assert!(node["spec"]["taints"].is_null(), "{name}: {}", node["spec"]);
    }
}
