//! A pod that fits on no node: Pending, with upstream's explanation of why
//! each node refused it.

use crate::fixture::{UNSCHEDULABLE, cluster, steady_nodes, total_nodes};
use crate::util::{
    IMAGE, INSUFFICIENT_CPU, NO_VICTIMS, NODE_AFFINITY, NOT_HELPFUL, apply, assert_unschedulable,
    fit_message, wait_pod_running,
};

#[test]
fn a_pod_larger_than_any_node_stays_pending_with_the_reasons() {
    let c = cluster();
    let ns = c.namespace("unsched");
    let ns = ns.name();
    let nodes = UNSCHEDULABLE.nodes();
    let manifest = |name: &str, cpu: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeSelector: {{{selector}}}
  containers:
  - name: app
    image: {IMAGE}
    resources: {{requests: {{cpu: "{cpu}", memory: 1Gi}}}}
"#,
            selector = UNSCHEDULABLE.selector()
        )
    };

    let steady = steady_nodes();
    apply(ns, &manifest("huge", "100"));
    // Its own nodes lack CPU (and, having no lower-priority pods, nothing to
    // preempt); every other node fails the selector.
    let others = total_nodes() - nodes.len();
    assert_unschedulable(
        ns,
        "huge",
        &fit_message(
            &[(nodes.len(), INSUFFICIENT_CPU), (others, NODE_AFFINITY)],
            &[(nodes.len(), NO_VICTIMS), (others, NOT_HELPFUL)],
        ),
    );
    drop(steady);

    // The same pod at a size a node has is placed.
    apply(ns, &manifest("fits", "3500m"));
    let node = wait_pod_running(ns, "fits");
    assert!(nodes.contains(&node), "{node}");
}
