//! `skiff agent` joins a running server as a second node, with the server's
//! join token: the node registers and its pods run and answer `kubectl logs`
//! through the API server (which checks the agent's CA-signed certificate).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_testing::{TestCluster, eventually, free_port};

/// A `skiff agent` process; on drop it is stopped and its pods removed.
struct JoinedAgent {
    child: Child,
    bin: String,
    dir: tempfile::TempDir,
}

impl Drop for JoinedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(&self.bin)
            .arg("killall")
            .arg("--data-dir")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn an_agent_joins_with_the_node_token_and_runs_pods() {
    let bin = env!("CARGO_BIN_EXE_skiff");
    let cluster = TestCluster::start(bin);
    let token = std::fs::read_to_string(cluster.data_dir().join("node-token")).expect("node-token");
    assert!(token.starts_with("K10"), "{token}");

    let dir = tempfile::Builder::new()
        .prefix("skiff-join-")
        .tempdir()
        .expect("tempdir");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = Command::new(bin)
        .args(["agent", "--server", &cluster.url(), "--token", token.trim()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--bind-address", "127.0.0.1", "--node-ip", "127.0.0.1"])
        .args(["--node-name", "joined-node", "--kubelet-port"])
        .arg(free_port().to_string())
        .args(["--bridge", &format!("skj{}", std::process::id() % 100_000)])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start skiff agent");
    let agent = JoinedAgent {
        child,
        bin: bin.to_string(),
        dir,
    };
    let agent_log =
        || std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap_or_default();

    let mut last = String::new();
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("the joined node Ready", Duration::from_secs(90), || {
            let out = cluster.kubectl(&["get", "node", "joined-node"]);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            last.contains(" Ready ")
        })
    }));
    assert!(
        ready.is_ok(),
        "node not Ready: {last}\nagent log:\n{}",
        agent_log()
    );

    cluster.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: on-joined, namespace: default}
spec:
  containers:
  - {name: main, image: "docker.io/skiff/busybox:1.35", command: [sh, -c, "echo hello from the joined node; exec sleep 3600"]}
"#,
    );
    // The scheduler places it on the only node.
    eventually("the pod Running", Duration::from_secs(90), || {
        let out = cluster.kubectl(&[
            "get",
            "pod",
            "on-joined",
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ]);
        String::from_utf8_lossy(&out.stdout) == "Running joined-node"
    });
    let mut logs = String::new();
    eventually(
        "logs through the API server",
        Duration::from_secs(30),
        || {
            let out = cluster.kubectl(&["logs", "on-joined"]);
            logs = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        },
    );
    assert_eq!(logs, "hello from the joined node\n");
    drop(agent);
}

#[test]
fn a_wrong_ca_hash_is_refused() {
    let bin = env!("CARGO_BIN_EXE_skiff");
    let cluster = TestCluster::start(bin);
    let token = std::fs::read_to_string(cluster.data_dir().join("node-token")).expect("node-token");
    let (_, bearer) = token.trim().split_once("::").expect("K10 token");
    let forged = format!("K10{}::{bearer}", "0".repeat(64));
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(bin)
        .args(["agent", "--server", &cluster.url(), "--token", &forged])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run skiff agent");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not match the token's hash"),
        "{stderr}"
    );
    assert!(!dir.path().join("agent").exists(), "nothing started");
}
