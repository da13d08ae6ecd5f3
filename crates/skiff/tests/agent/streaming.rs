//! `kubectl logs`, `exec` and `port-forward` reach containers through the
//! API server and the node's kubelet API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use skiff_testing::eventually;

use crate::util::{apply, cluster, wait_pod, wait_running};

#[test]
fn logs_with_options_and_previous() {
    // containerd copies stdout and stderr on separate goroutines, so the
    // stderr line waits a moment to land after the stdout ones in the file.
    let ns = cluster().namespace("logs");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "for i in 1 2 3 4 5; do echo line$i; done; sleep 1; echo oops >&2; sleep 2; exit 1"]
"#,
    );
    wait_pod(ns.name(), "talker", "one restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let logs = |args: &[&str]| {
        let mut full = vec!["logs", "-n", ns.name(), "talker"];
        full.extend(args);
        cluster().kubectl_ok(&full)
    };
    let previous = logs(&["--previous"]);
    assert_eq!(previous, "line1\nline2\nline3\nline4\nline5\noops\n");
    assert_eq!(logs(&["--previous", "--tail=2"]), "line5\noops\n");
    let stamped = logs(&["--previous", "--timestamps", "--tail=1"]);
    let (stamp, text) = stamped.trim_end().split_once(' ').expect("timestamp");
    assert!(
        stamp.parse::<jiff::Timestamp>().is_ok(),
        "bad timestamp {stamp:?}"
    );
    assert_eq!(text, "oops");
    assert_eq!(logs(&["--previous", "--limit-bytes=8"]), "line1\nli");
    assert!(logs(&["--previous", "--since=1h"]).contains("line3"));
    let err = cluster().kubectl_err(&["logs", "-n", ns.name(), "talker", "-c", "nope"]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn logs_follow_streams_new_lines() {
    let ns = cluster().namespace("follow");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  nodeName: NODE
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done"]}
"#,
    );
    wait_running(ns.name(), "ticker");
    let mut follow = cluster().kubectl_watch(&["logs", "-f", "-n", ns.name(), "ticker"]);
    follow.wait_for(Duration::from_secs(30), |line| line == "tick1");
    follow.wait_for(Duration::from_secs(30), |line| line == "tick20");
}

#[test]
fn exec_runs_commands_with_stdin_and_exit_codes() {
    let ns = cluster().namespace("exec");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  nodeName: NODE
  containers:
  - {name: main, image: IMAGE, command: [sleep, "3600"]}
"#,
    );
    wait_running(ns.name(), "shell");
    let out = cluster().kubectl_ok(&[
        "exec",
        "-n",
        ns.name(),
        "shell",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out, "out\n");
    let echoed = cluster().kubectl_stdin_ok(
        &["exec", "-i", "-n", ns.name(), "shell", "--", "cat"],
        "piped input\n",
    );
    assert_eq!(echoed, "piped input\n");
    let failed = cluster().kubectl(&["exec", "-n", ns.name(), "shell", "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        failed.status.code(),
        Some(7),
        "kubectl exits with the command's code"
    );
    let missing = cluster().kubectl_err(&["exec", "-n", ns.name(), "shell", "--", "/no/such/cmd"]);
    assert!(missing.contains("no/such/cmd"), "{missing}");
}

#[test]
fn port_forward_reaches_a_pod_port() {
    let ns = cluster().namespace("pf");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "mkdir /www; echo forwarded > /www/index.html; exec httpd -f -p 127.0.0.1:8080 -h /www"]
"#,
    );
    wait_running(ns.name(), "web");
    let mut forward =
        cluster().kubectl_watch(&["port-forward", "-n", ns.name(), "pod/web", ":8080"]);
    let line = forward.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("Forwarding from 127.0.0.1:")
    });
    let port: u16 = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("local port");
    // The server binds 127.0.0.1 inside the pod: only a forward that enters
    // the pod's network namespace reaches it.
    for _ in 0..3 {
        let mut body = String::new();
        eventually(
            "an HTTP answer through the forward",
            Duration::from_secs(20),
            || {
                body.clear();
                let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
                    return false;
                };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let request = "GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n";
                conn.write_all(request.as_bytes()).is_ok() && conn.read_to_string(&mut body).is_ok()
            },
        );
        let status = body.lines().next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.") && status.contains(" 200 "),
            "{body}"
        );
        assert!(body.ends_with("forwarded\n"), "{body}");
    }

    // The Python client speaks the WebSocket channel protocol instead.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agent/portforward.py");
    let mut python = cluster().command(&skiff_testing::tools().python);
    python.arg(script).args([ns.name(), "web", "8080"]);
    let output = skiff_testing::output_with_timeout(python, None, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python port-forward: ok"),
        "portforward.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
