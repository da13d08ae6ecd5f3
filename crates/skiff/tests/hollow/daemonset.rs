//! A DaemonSet restricted by a nodeSelector: one pod on each matching node,
//! following the label as it is added and removed.

use std::collections::BTreeSet;

use crate::fixture::{DAEMONSET, cluster};
use crate::util::{IMAGE, TIMEOUT, apply, live, node_of, running, wait_pods};

/// The label the DaemonSet selects nodes by.
const DAEMON_LABEL: &str = "test.skiff.dev/daemon";

/// Waits until the DaemonSet's pods are exactly one Running pod on each of
/// `nodes`.
fn wait_one_per_node(ns: &str, nodes: &[String]) {
    let want: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    let what = format!("one daemon pod on each of {want:?}");
    wait_pods(ns, "app=daemon", &what, TIMEOUT, |pods| {
        let current = running(pods);
        let on: BTreeSet<&str> = current.iter().map(node_of).collect();
        live(pods).len() == want.len() && current.len() == want.len() && on == want
    });
}

fn rollout_status(ns: &str) {
    let out = cluster().kubectl_ok(&[
        "rollout",
        "status",
        "daemonset/daemon",
        "-n",
        ns,
        "--timeout=40s",
    ]);
    assert!(
        out.contains("daemon set \"daemon\" successfully rolled out"),
        "{out}"
    );
}

#[test]
fn a_daemonset_runs_one_pod_on_each_selected_node() {
    let c = cluster();
    let ns = c.namespace("daemon");
    let ns = ns.name();
    let nodes = DAEMONSET.nodes();
    let (selected, later) = nodes.split_at(nodes.len() - 1);
    let mut args = vec!["label", "nodes"];
    args.extend(selected.iter().map(String::as_str));
    let label = format!("{DAEMON_LABEL}=yes");
    args.push(&label);
    c.kubectl_ok(&args);

    apply(
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: daemon}}
spec:
  selector: {{matchLabels: {{app: daemon}}}}
  template:
    metadata: {{labels: {{app: daemon}}}}
    spec:
      nodeSelector: {{{group}, {DAEMON_LABEL}: "yes"}}
      containers: [{{name: app, image: {IMAGE}}}]
"#,
            group = DAEMONSET.selector()
        ),
    );
    rollout_status(ns);
    wait_one_per_node(ns, selected);
    let ds = c.get_json(&["get", "daemonset", "daemon", "-n", ns]);
    let count = selected.len();
    for field in [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
    ] {
        assert_eq!(ds["status"][field], count, "{field}: {}", ds["status"]);
    }
    assert_eq!(ds["status"]["numberMisscheduled"], 0);

    // A newly labelled node gets a pod.
    c.kubectl_ok(&["label", "node", &later[0], &label]);
    wait_one_per_node(ns, &nodes);
    rollout_status(ns);

    // A node that loses the label loses its pod.
    c.kubectl_ok(&["label", "node", &selected[0], &format!("{DAEMON_LABEL}-")]);
    let remaining: Vec<String> = nodes[1..].to_vec();
    wait_one_per_node(ns, &remaining);
    rollout_status(ns);
}
