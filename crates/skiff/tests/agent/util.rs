//! Helpers shared by the agent tests.

use std::time::Duration;

use serde_json::Value;
use skiff_testing::{NODE_NAME, TestCluster, eventually};

/// How long a pod may take to start (image local, containerd warm).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The image every test pod runs: busybox, built locally by the agent.
pub const IMAGE: &str = "docker.io/skiff/busybox:1.35";

/// The server (with its node agent) every test in this binary shares.
pub fn cluster() -> &'static TestCluster {
    skiff_testing::shared_with_agent(env!("CARGO_BIN_EXE_skiff"))
}

/// Applies a manifest in namespace `ns`. Pods in it may set
/// `nodeName: NODE` (replaced here by the test node's name) to skip the
/// scheduler; `IMAGE` becomes the local busybox image.
pub fn apply(ns: &str, manifest: &str) {
    let manifest = manifest.replace("NODE", NODE_NAME).replace("IMAGE", IMAGE);
    cluster().kubectl_stdin_ok(&["apply", "-n", ns, "-f", "-"], &manifest);
}

/// The pod as JSON, or `Null` while it does not exist.
pub fn pod(ns: &str, name: &str) -> Value {
    let out = cluster().kubectl(&["get", "pod", name, "-n", ns, "-o", "json"]);
    if !out.status.success() {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Waits until `check` holds for the pod; panics with the pod's last state.
pub fn wait_pod(ns: &str, name: &str, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let timeout = START_TIMEOUT;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, timeout, || {
            last = pod(ns, name);
            check(&last)
        });
    }));
    if result.is_err() {
        let describe = cluster().kubectl(&["describe", "pod", name, "-n", ns]);
        panic!(
            "pod {ns}/{name}: timed out waiting for {what}; last status:\n{}\ndescribe:\n{}",
            serde_json::to_string_pretty(&last["status"]).unwrap_or_default(),
            String::from_utf8_lossy(&describe.stdout)
        );
    }
    last
}

/// Waits for the pod's phase to be `Running`.
pub fn wait_running(ns: &str, name: &str) -> Value {
    wait_pod(ns, name, "phase Running", |p| {
        p["status"]["phase"] == "Running"
    })
}

/// The status of container `name` in the pod JSON (app containers).
pub fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The condition `type_` of the pod (`"True"`/`"False"`), if present.
pub fn condition(pod: &Value, type_: &str) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

/// The reasons of the events about pod `name`.
pub fn event_reasons(ns: &str, name: &str) -> Vec<String> {
    let selector = format!("involvedObject.name={name}");
    let events = cluster().get_json(&["get", "events", "-n", ns, "--field-selector", &selector]);
    events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| e["reason"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the test node is Ready (the agent has started containerd,
/// imported its images and registered).
pub fn wait_node_ready() {
    eventually("the node Ready", START_TIMEOUT, || {
        let out = cluster().kubectl(&["get", "node", skiff_testing::NODE_NAME]);
        String::from_utf8_lossy(&out.stdout).contains(" Ready ")
    });
}
