//! Inter-pod affinity and anti-affinity over `kubernetes.io/hostname`: pods
//! that must share a node with others, and pods that must not.

use std::collections::BTreeSet;

use crate::fixture::{ANTI_AFFINITY, POD_AFFINITY, cluster, steady_nodes, total_nodes};
use crate::util::{
    IMAGE, NO_VICTIMS, NODE_AFFINITY, NOT_HELPFUL, POD_ANTI_AFFINITY, TIMEOUT, apply,
    assert_unschedulable, fit_message, live, name_of, node_of, per_node, wait_pod_running,
    wait_pods, wait_running,
};

#[test]
fn required_anti_affinity_puts_one_replica_per_node_and_leaves_the_rest_pending() {
    let c = cluster();
    let ns = c.namespace("antiaff");
    let ns = ns.name();
    let nodes = ANTI_AFFINITY.nodes();
    apply(
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: solo}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: solo}}}}
  template:
    metadata: {{labels: {{app: solo}}}}
    spec:
      nodeSelector: {{{selector}}}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {{matchLabels: {{app: solo}}}}
            topologyKey: kubernetes.io/hostname
      containers: [{{name: app, image: {IMAGE}}}]
"#,
            selector = ANTI_AFFINITY.selector()
        ),
    );
    let placed = wait_running(ns, "app=solo", 3);
    let used: BTreeSet<String> = placed.iter().map(|p| node_of(p).to_string()).collect();
    assert_eq!(
        used,
        nodes.iter().cloned().collect(),
        "one replica on each node: {:?}",
        per_node(&placed)
    );

    let steady = steady_nodes();
    c.kubectl_ok(&["scale", "deployment", "solo", "-n", ns, "--replicas=4"]);
    let all = wait_pods(ns, "app=solo", "a fourth replica", TIMEOUT, |p| {
        live(p).len() == 4
    });
    let pending = all
        .iter()
        .find(|p| node_of(p).is_empty())
        .unwrap_or_else(|| panic!("the fourth replica was bound: {:?}", per_node(&all)));
    let others = total_nodes() - nodes.len();
    assert_unschedulable(
        ns,
        name_of(pending),
        &fit_message(
            &[(nodes.len(), POD_ANTI_AFFINITY), (others, NODE_AFFINITY)],
            &[(nodes.len(), NO_VICTIMS), (others, NOT_HELPFUL)],
        ),
    );
    drop(steady);

    // Scaling down removes the replica that never got a node first.
    c.kubectl_ok(&["scale", "deployment", "solo", "-n", ns, "--replicas=3"]);
    let left = wait_pods(ns, "app=solo", "three replicas again", TIMEOUT, |p| {
        p.len() == 3
    });
    assert!(
        left.iter().all(|p| !node_of(p).is_empty()),
        "the pending replica is the one removed: {:?}",
        per_node(&left)
    );
}

#[test]
fn required_affinity_follows_the_pods_it_names() {
    let c = cluster();
    let ns = c.namespace("podaff");
    let ns = ns.name();
    let nodes = POD_AFFINITY.nodes();
    let selector = POD_AFFINITY.selector();
    let affine = |app: &str, to: &str, kind: &str| {
        format!(
            r#"
      nodeSelector: {{{selector}}}
      affinity:
        {kind}:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {{matchLabels: {{app: {to}}}}}
            topologyKey: kubernetes.io/hostname
      containers: [{{name: {app}, image: {IMAGE}}}]"#
        )
    };
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: cache, labels: {{app: cache}}}}
spec:
  nodeSelector: {{{selector}}}
  containers: [{{name: cache, image: {IMAGE}}}]
"#
        ),
    );
    let cache_node = wait_pod_running(ns, "cache");
    assert!(nodes.contains(&cache_node), "{cache_node}");

    apply(
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:{web}
---
apiVersion: v1
kind: Pod
metadata: {{name: away, labels: {{app: away}}}}
spec:{away}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: herd}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: herd}}}}
  template:
    metadata: {{labels: {{app: herd}}}}
    spec:{herd}
"#,
            web = affine("web", "cache", "podAffinity"),
            away = affine("away", "cache", "podAntiAffinity").replace("\n    ", "\n"),
            herd = affine("herd", "herd", "podAffinity"),
        ),
    );
    let web = wait_running(ns, "app=web", 3);
    assert_eq!(
        per_node(&web),
        [(cache_node.clone(), 3)].into(),
        "every replica joins the cache's node"
    );
    let away = wait_pod_running(ns, "away");
    assert!(
        away != cache_node && nodes.contains(&away),
        "anti-affinity keeps it off {cache_node}: {away}"
    );
    // The first pod of a group affine to itself may go anywhere; the others
    // follow it.
    let herd = wait_running(ns, "app=herd", 3);
    assert_eq!(per_node(&herd).len(), 1, "{:?}", per_node(&herd));

    // Affinity to pods that do not exist: Pending until one appears.
    let steady = steady_nodes();
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: lonely, labels: {{app: lonely}}}}
spec:{lonely}
"#,
            lonely = affine("lonely", "friend", "podAffinity").replace("\n    ", "\n"),
        ),
    );
    let others = total_nodes() - nodes.len();
    assert_unschedulable(
        ns,
        "lonely",
        &fit_message(
            &[
                (nodes.len(), crate::util::POD_AFFINITY),
                (others, NODE_AFFINITY),
            ],
            &[(total_nodes(), NOT_HELPFUL)],
        ),
    );
    drop(steady);
    let friend_node = nodes.last().expect("the group has nodes");
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: friend, labels: {{app: friend}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {friend_node}}}
  containers: [{{name: friend, image: {IMAGE}}}]
"#
        ),
    );
    assert_eq!(wait_pod_running(ns, "friend"), *friend_node);
    assert_eq!(wait_pod_running(ns, "lonely"), *friend_node);
}
