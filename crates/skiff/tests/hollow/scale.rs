//! A Deployment of 100 replicas over five nodes: scheduled, reported
//! available, rolled out, and scaled down again.

use std::time::Duration;

use crate::fixture::{SCALE, cluster};
use crate::util::{IMAGE, per_node, running, wait_pods};

#[test]
fn a_hundred_replicas_roll_out_and_scale_down() {
    let c = cluster();
    let ns = c.namespace("scale");
    let ns = ns.name();
    let nodes = SCALE.nodes();
    c.kubectl_stdin_ok(
        &["apply", "-n", ns, "-f", "-"],
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: big}}
spec:
  replicas: 100
  selector: {{matchLabels: {{app: big}}}}
  template:
    metadata: {{labels: {{app: big}}}}
    spec:
      nodeSelector: {{{selector}}}
      containers:
      - name: app
        image: {IMAGE}
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"#,
            selector = SCALE.selector()
        ),
    );
    let out = c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/big",
        "-n",
        ns,
        "--timeout=55s",
    ]);
    assert!(
        out.contains("deployment \"big\" successfully rolled out"),
        "{out}"
    );
    let deployment = c.get_json(&["get", "deployment", "big", "-n", ns]);
    for field in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(
            deployment["status"][field], 100,
            "{field}: {}",
            deployment["status"]
        );
    }
    let pods = running(&crate::util::pods(ns, "app=big"));
    assert_eq!(pods.len(), 100);
    let counts = per_node(&pods);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        nodes,
        "every node of the group, and only those, runs replicas"
    );
    // Scoring favours the least allocated node, so the replicas spread.
    assert!(
        counts.values().all(|&n| (10..=30).contains(&n)),
        "{counts:?}"
    );

    c.kubectl_ok(&["scale", "deployment", "big", "-n", ns, "--replicas=10"]);
    wait_pods(
        ns,
        "app=big",
        "ten replicas left",
        Duration::from_secs(45),
        |pods| pods.len() == 10 && running(pods).len() == 10,
    );
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/big",
        "-n",
        ns,
        "--timeout=30s",
    ]);
    let deployment = c.get_json(&["get", "deployment", "big", "-n", ns]);
    assert_eq!(deployment["spec"]["replicas"], 10);
    assert_eq!(deployment["status"]["availableReplicas"], 10);
}
