//! Workload controllers on real pods: the scheduler places them on the
//! agent's node, containerd runs them, and the controllers keep the counts.

use std::time::Duration;

use serde_json::Value;
use skiff_testing::eventually;

use crate::util::{IMAGE, START_TIMEOUT, cluster, wait_node_ready};

/// A container that exits at once on SIGTERM, so scale-downs are quick.
const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]"#;

/// The pods in `ns` with label `app=<app>`, as JSON.
fn pods(ns: &str, app: &str) -> Vec<Value> {
    let selector = format!("app={app}");
    cluster().get_json(&["get", "pods", "-n", ns, "-l", &selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

fn wait_running_count(ns: &str, app: &str, count: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let what = format!("{count} running pods of app={app}");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(&what, START_TIMEOUT, || {
            last = pods(ns, app);
            running(&last) == count && last.len() == count
        });
    }));
    if result.is_err() {
        let table = cluster().kubectl(&["get", "pods,rs,deploy", "-n", ns, "-o", "wide"]);
        panic!(
            "timed out waiting for {what}:\n{}",
            String::from_utf8_lossy(&table.stdout)
        );
    }
    last
}

#[test]
fn replicaset_keeps_its_replicas_and_scales() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("rs");
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &manifest);
    let first = wait_running_count(ns.name(), "web", 2);
    for pod in &first {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(pod["spec"]["nodeName"].is_string(), "scheduled: {pod}");
    }
    eventually("RS status counts 2 ready", Duration::from_secs(30), || {
        let rs = c.get_json(&["get", "rs", "web", "-n", ns.name()]);
        rs["status"]["readyReplicas"] == 2
            && rs["status"]["availableReplicas"] == 2
            && rs["status"]["observedGeneration"] == rs["metadata"]["generation"]
    });

    // A deleted pod is replaced by a new one.
    let victim = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.kubectl_ok(&["delete", "pod", &victim, "-n", ns.name(), "--wait=false"]);
    eventually("a replacement pod", START_TIMEOUT, || {
        let now = pods(ns.name(), "web");
        running(&now) == 2 && now.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    });

    c.kubectl_ok(&["scale", "rs", "web", "-n", ns.name(), "--replicas=3"]);
    wait_running_count(ns.name(), "web", 3);
    c.kubectl_ok(&["scale", "rs", "web", "-n", ns.name(), "--replicas=1"]);
    wait_running_count(ns.name(), "web", 1);

    let events = c.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns.name(),
        "--field-selector",
        "involvedObject.kind=ReplicaSet",
    ]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"),
        "{events}"
    );
}

#[test]
fn replicaset_adopts_a_matching_orphan_instead_of_creating() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("adopt");
    let orphan = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: stray, labels: {{app: adopt}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &orphan);
    wait_running_count(ns.name(), "adopt", 1);
    let rs = format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: adopter}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: adopt}}}}
  template:
    metadata: {{labels: {{app: adopt}}}}
    spec:
      containers:
      - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &rs);
    eventually("the orphan adopted", Duration::from_secs(30), || {
        let pod = c.get_json(&["get", "pod", "stray", "-n", ns.name()]);
        pod["metadata"]["ownerReferences"][0]["name"] == "adopter"
    });
    // Adopting satisfied the count: no second pod appears.
    std::thread::sleep(Duration::from_secs(2));
    let all = pods(ns.name(), "adopt");
    assert_eq!(all.len(), 1, "{all:?}");
}

fn rollout_status(ns: &str, what: &str) -> String {
    cluster().kubectl_ok(&["rollout", "status", what, "-n", ns, "--timeout=120s"])
}

#[test]
fn daemonset_runs_one_pod_on_every_node_and_rolls() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("ds");
    let n = ns.name();
    let manifest = |value: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {IMAGE}
        command: {SLEEPER}
        env: [{{name: VERSION, value: "{value}"}}]
"#
        )
    };
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest("1"));
    let out = rollout_status(n, "daemonset/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes = c.get_json(&["get", "nodes"])["items"].as_array().map_or(0, Vec::len);
    let first = wait_running_count(n, "agent", nodes);
    let ds = c.get_json(&["get", "ds", "agent", "-n", n]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], nodes, "{}", ds["status"]);
    assert_eq!(ds["status"]["numberReady"], nodes);
    assert_eq!(first[0]["spec"]["nodeName"], skiff_testing::NODE_NAME);

    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest("2"));
    rollout_status(n, "daemonset/agent");
    let rolled = wait_running_count(n, "agent", nodes);
    assert_ne!(
        rolled[0]["metadata"]["name"], first[0]["metadata"]["name"],
        "the template change replaced the pod"
    );
    let revisions = c.get_json(&["get", "controllerrevisions", "-n", n]);
    assert_eq!(revisions["items"].as_array().map_or(0, Vec::len), 2, "{revisions}");
}
