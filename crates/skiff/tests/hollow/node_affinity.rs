//! `nodeSelector` and node affinity: required terms decide where a pod may
//! go, preferred terms where it would rather go.

use crate::fixture::{NODE_AFFINITY, cluster, steady_nodes, total_nodes};
use crate::util::{
    self, IMAGE, NOT_HELPFUL, apply, assert_unschedulable, fit_message, per_node, wait_pod_running,
    wait_running,
};

#[test]
fn node_selector_and_node_affinity_choose_among_labelled_nodes() {
    let c = cluster();
    let ns = c.namespace("nodeaff");
    let ns = ns.name();
    let nodes = NODE_AFFINITY.nodes();
    let (ssd, hdd, bare) = (&nodes[0], &nodes[1], &nodes[2]);
    let selector = NODE_AFFINITY.selector();
    c.kubectl_ok(&["label", "node", ssd, "disktype=ssd"]);
    c.kubectl_ok(&["label", "node", hdd, "disktype=hdd"]);

    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: on-ssd}}
spec:
  nodeSelector: {{{selector}, disktype: ssd}}
  containers: [{{name: app, image: {IMAGE}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: spinning}}
spec:
  nodeSelector: {{{selector}}}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {{key: disktype, operator: In, values: [hdd, tape]}}
  containers: [{{name: app, image: {IMAGE}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: unlabelled}}
spec:
  nodeSelector: {{{selector}}}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {{key: disktype, operator: DoesNotExist}}
  containers: [{{name: app, image: {IMAGE}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: prefers-hdd}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: prefers-hdd}}}}
  template:
    metadata: {{labels: {{app: prefers-hdd}}}}
    spec:
      nodeSelector: {{{selector}}}
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference:
              matchExpressions:
              - {{key: disktype, operator: In, values: [hdd]}}
      containers:
      - name: app
        image: {IMAGE}
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: prefers-tape}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: prefers-tape}}}}
  template:
    metadata: {{labels: {{app: prefers-tape}}}}
    spec:
      nodeSelector: {{{selector}}}
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference:
              matchExpressions:
              - {{key: disktype, operator: In, values: [tape]}}
      containers: [{{name: app, image: {IMAGE}}}]
"#
        ),
    );
    assert_eq!(wait_pod_running(ns, "on-ssd"), *ssd);
    assert_eq!(wait_pod_running(ns, "spinning"), *hdd);
    assert_eq!(wait_pod_running(ns, "unlabelled"), *bare);
    let preferring = wait_running(ns, "app=prefers-hdd", 3);
    assert_eq!(
        per_node(&preferring),
        [(hdd.clone(), 3)].into(),
        "a heavily weighted preference wins over spreading"
    );
    // A preference no node can meet does not keep pods from running.
    let unmet = wait_running(ns, "app=prefers-tape", 2);
    assert!(
        unmet
            .iter()
            .all(|p| nodes.contains(&util::node_of(p).to_string())),
        "{:?}",
        per_node(&unmet)
    );

    // Required affinity nobody meets: Pending until a node gets the label.
    let steady = steady_nodes();
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: tape}}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {{key: {key}, operator: In, values: [{group}]}}
          - {{key: disktype, operator: In, values: [tape]}}
  containers: [{{name: app, image: {IMAGE}}}]
"#,
            key = crate::fixture::GROUP_LABEL,
            group = NODE_AFFINITY.name,
        ),
    );
    let total = total_nodes();
    assert_unschedulable(
        ns,
        "tape",
        &fit_message(&[(total, util::NODE_AFFINITY)], &[(total, NOT_HELPFUL)]),
    );
    drop(steady);
    c.kubectl_ok(&["label", "node", bare, "disktype=tape"]);
    assert_eq!(wait_pod_running(ns, "tape"), *bare);
    // IgnoredDuringExecution: taking the label away again leaves it running.
    c.kubectl_ok(&["label", "node", bare, "disktype-"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let still = util::pod(ns, "tape");
    assert_eq!(still["status"]["phase"], "Running");
    assert!(still["metadata"]["deletionTimestamp"].is_null());
}
