//! Helpers shared by the tests: applying manifests, waiting for pods, and
//! upstream's `FailedScheduling` message.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use skiff_testing::eventually;

use crate::fixture::{cluster, condition, total_nodes};

/// How long the scheduler and controllers may take to act on a change.
pub const TIMEOUT: Duration = Duration::from_secs(45);

/// The image of every pod: hollow nodes never pull it.
pub const IMAGE: &str = "registry.example.com/hollow/app:1";

/// Upstream's filter reasons, as the scheduler words them.
pub const NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// A `NoSchedule`/`NoExecute` taint the pod does not tolerate.
pub const UNTOLERATED_TAINT: &str = "node(s) had untolerated taint(s)";
/// Required pod affinity with no matching pod in the node's domain.
pub const POD_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Required pod anti-affinity with a matching pod in the node's domain.
pub const POD_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Not enough allocatable CPU.
pub const INSUFFICIENT_CPU: &str = "Insufficient cpu";
/// Preemption: the node has no lower-priority pod to evict.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Preemption: evicting pods cannot fix why the node refused the pod.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// Applies `manifest` in namespace `ns`.
pub fn apply(ns: &str, manifest: &str) {
    cluster().kubectl_stdin_ok(&["apply", "-n", ns, "-f", "-"], manifest);
}

/// The pods of `ns` matching label selector `selector`, as JSON.
pub fn pods(ns: &str, selector: &str) -> Vec<Value> {
    cluster().get_json(&["get", "pods", "-n", ns, "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The pod as JSON, or `Null` while it does not exist.
pub fn pod(ns: &str, name: &str) -> Value {
    let out = cluster().kubectl(&["get", "pod", name, "-n", ns, "-o", "json"]);
    if !out.status.success() {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The pod's node, empty while it is not bound.
pub fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

/// The pod's name.
pub fn name_of(pod: &Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap_or_default()
}

/// Pods not being deleted.
pub fn live(pods: &[Value]) -> Vec<Value> {
    pods.iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Live pods that are Running on a node.
pub fn running(pods: &[Value]) -> Vec<Value> {
    live(pods)
        .into_iter()
        .filter(|p| p["status"]["phase"] == "Running" && !node_of(p).is_empty())
        .collect()
}

/// How many of `pods` each node holds.
pub fn per_node(pods: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for pod in pods {
        *counts.entry(node_of(pod).to_string()).or_insert(0) += 1;
    }
    counts
}

/// Polls the pods of `ns` matching `selector` until `check` holds for them
/// and returns them; panics with the namespace's pods and events if it does
/// not within `timeout`.
pub fn wait_pods(
    ns: &str,
    selector: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, timeout, || {
            last = pods(ns, selector);
            check(&last)
        });
    }));
    if result.is_err() {
        panic!("timed out waiting for {what}\n{}", diagnostics(ns));
    }
    last
}

/// Waits until exactly `count` pods matching `selector` exist, all Running
/// and none being deleted; returns them.
pub fn wait_running(ns: &str, selector: &str, count: usize) -> Vec<Value> {
    let what = format!("{count} Running pods of {selector} in {ns}");
    wait_pods(ns, selector, &what, TIMEOUT, |pods| {
        pods.len() == count && running(pods).len() == count
    })
}

/// Polls pod `name` until `check` holds and returns it; panics with the
/// namespace's pods and events if it does not within [`TIMEOUT`].
pub fn wait_pod(ns: &str, name: &str, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, TIMEOUT, || {
            last = pod(ns, name);
            check(&last)
        });
    }));
    if result.is_err() {
        panic!(
            "pod {ns}/{name}: timed out waiting for {what}; last status:\n{}\n{}",
            serde_json::to_string_pretty(&last["status"]).unwrap_or_default(),
            diagnostics(ns)
        );
    }
    last
}

/// Waits until pod `name` is Running and returns its node.
pub fn wait_pod_running(ns: &str, name: &str) -> String {
    let pod = wait_pod(ns, name, "phase Running", |p| {
        p["status"]["phase"] == "Running"
    });
    node_of(&pod).to_string()
}

/// `kubectl get pods -o wide` and the events of `ns`, for failure messages.
pub fn diagnostics(ns: &str) -> String {
    let text = |args: &[&str]| {
        let out = cluster().kubectl(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    format!(
        "pods:\n{}\nevents:\n{}",
        text(&["get", "pods", "-n", ns, "-o", "wide"]),
        text(&["get", "events", "-n", ns])
    )
}

/// The events of `ns` about the object called `name`, as JSON.
pub fn events_of(ns: &str, name: &str) -> Vec<Value> {
    cluster().get_json(&["get", "events", "-n", ns])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name)
        .cloned()
        .collect()
}

/// Upstream's `0/N nodes are available: ` followed by a histogram of
/// reasons: `count reason`, sorted bytewise (Go's `sort.Strings`), joined by
/// `, `, ending in `.`. `N` is every node of the cluster.
pub fn nodes_available(reasons: &[(usize, &str)]) -> String {
    let mut parts: Vec<String> = reasons
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, reason)| format!("{count} {reason}"))
        .collect();
    parts.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    format!(
        "0/{} nodes are available: {}.",
        total_nodes(),
        parts.join(", ")
    )
}

/// Upstream's `FitError` message when preemption found no room: the
/// filters' histogram, then ` preemption: ` and preemption's.
pub fn fit_message(filters: &[(usize, &str)], preemption: &[(usize, &str)]) -> String {
    format!(
        "{} preemption: {}",
        nodes_available(filters),
        nodes_available(preemption)
    )
}

/// Asserts that pod `name` stays Pending as unschedulable with `message`:
/// its `PodScheduled` condition is False with reason `Unschedulable`, a
/// `FailedScheduling` warning from the default scheduler says so, and
/// `kubectl describe` shows it.
pub fn assert_unschedulable(ns: &str, name: &str, message: &str) {
    let pod = wait_pod(ns, name, "PodScheduled=False with the message", |p| {
        scheduled_condition(p).is_some_and(|c| c["message"] == message)
    });
    let scheduled = scheduled_condition(&pod).expect("checked above");
    assert_eq!(scheduled["status"], "False", "{scheduled}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{scheduled}");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(node_of(&pod).is_empty(), "bound to {}", node_of(&pod));

    let events = events_of(ns, name);
    assert!(
        events.iter().any(|e| e["reason"] == "FailedScheduling"
            && e["type"] == "Warning"
            && e["message"] == message
            && e["source"]["component"] == "default-scheduler"),
        "no FailedScheduling event saying {message:?}: {events:#?}"
    );
    let describe = cluster().kubectl_ok(&["describe", "pod", name, "-n", ns]);
    let line = describe
        .lines()
        .find(|l| l.contains("FailedScheduling") && l.contains(message))
        .unwrap_or_else(|| panic!("describe shows no FailedScheduling {message:?}:\n{describe}"));
    assert!(
        line.trim_start().starts_with("Warning") && line.contains("default-scheduler"),
        "{line}"
    );
}

fn scheduled_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
}

/// Whether the node's Ready condition is `status`.
pub fn node_ready_is(node: &Value, status: &str) -> bool {
    condition(node, "Ready") == Some(status)
}
