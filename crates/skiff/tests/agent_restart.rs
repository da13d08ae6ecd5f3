//! Killing the server (and its node agent) with SIGKILL does not kill or
//! duplicate running pods: after a restart the agent finds them in the
//! runtime and reports them as they are.

use std::time::Duration;

use skiff_testing::{NODE_NAME, TestCluster, eventually};

#[test]
fn pods_survive_an_agent_kill_and_are_adopted() {
    let mut cluster = TestCluster::start_with_agent(env!("CARGO_BIN_EXE_skiff"));
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: survivor, namespace: default}}
spec:
  nodeName: {NODE_NAME}
  containers:
  - {{name: main, image: "docker.io/skiff/busybox:1.35", command: [sleep, "3600"]}}
"#
    );
    cluster.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    let running = |c: &TestCluster| {
        let out = c.kubectl(&["get", "pod", "survivor", "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .filter(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
    };
    eventually("the pod running", Duration::from_secs(90), || {
        running(&cluster).is_some()
    });
    let before = running(&cluster).expect("running");
    let id_before = before["status"]["containerStatuses"][0]["containerID"].clone();
    let ip_before = before["status"]["podIP"].clone();

    cluster.kill9();
    cluster.restart();
    // The agent comes back (its kubelet API answers exec) and reports the
    // pod with the same container, never restarted or duplicated.
    let mut cmdline = String::new();
    eventually(
        "exec through the restarted agent",
        Duration::from_secs(90),
        || {
            let out = cluster.kubectl(&["exec", "survivor", "--", "cat", "/proc/1/cmdline"]);
            cmdline = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        },
    );
    assert!(cmdline.starts_with("sleep"), "{cmdline}");
    // Give the agent a few relists to act wrongly, if it would.
    std::thread::sleep(Duration::from_secs(3));
    let after = running(&cluster).expect("still running");
    let status = &after["status"]["containerStatuses"][0];
    assert_eq!(
        status["containerID"], id_before,
        "the container was replaced"
    );
    assert_eq!(status["restartCount"], 0);
    assert_eq!(after["status"]["podIP"], ip_before);

    let socket = cluster.data_dir().join("agent/containerd/containerd.sock");
    let mut ctr = cluster.command("ctr");
    ctr.arg("--address")
        .arg(&socket)
        .args(["-n", "k8s.io", "containers", "ls", "-q"]);
    let listed = skiff_testing::output_with_timeout(ctr, None, Duration::from_secs(30));
    let containers = String::from_utf8_lossy(&listed.stdout).lines().count();
    assert_eq!(
        containers, 2,
        "one sandbox and one app container, nothing duplicated"
    );
}
