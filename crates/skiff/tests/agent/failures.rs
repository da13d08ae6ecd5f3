//! Containers that fail: crash loops with growing back-off, liveness
//! restarts, OOM kills, missing images and bad commands, each with upstream's
//! reasons and events.

use serde_json::Value;

use crate::util::{apply, cluster, container_status, event_reasons, wait_pod};

fn restart_count(pod: &Value, name: &str) -> i64 {
    container_status(pod, name)["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn a_crashing_container_restarts_with_growing_back_off() {
    let ns = cluster().namespace("crash");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  nodeName: NODE
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, "echo crashing; exit 3"]}
"#,
    );
    // Between restarts the container waits in CrashLoopBackOff, and the
    // wait grows: 10 s after the second exit, 20 s after the third.
    let mut messages: Vec<String> = Vec::new();
    let pod = wait_pod(ns.name(), "crasher", "a 20 s back-off", |p| {
        let waiting = &container_status(p, "main")["state"]["waiting"];
        if waiting["reason"] == "CrashLoopBackOff" {
            let message = waiting["message"].as_str().unwrap_or_default().to_string();
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        messages.iter().any(|m| m.starts_with("back-off 20s"))
    });
    let first = messages.first().cloned().unwrap_or_default();
    assert!(
        first.starts_with("back-off 10s "),
        "first back-off: {messages:?}"
    );
    assert!(
        first.contains("restarting failed container=main pod=crasher_"),
        "{first}"
    );
    let main = container_status(&pod, "main");
    assert!(restart_count(&pod, "main") >= 2);
    assert_eq!(main["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(main["lastState"]["terminated"]["reason"], "Error");
    let reasons = event_reasons(ns.name(), "crasher");
    assert!(
        reasons.iter().any(|r| r == "BackOff"),
        "no BackOff event: {reasons:?}"
    );

    let table = cluster().kubectl_ok(&["get", "pod", "crasher", "-n", ns.name()]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(
        matches!(row.get(2), Some(&"CrashLoopBackOff" | &"Error")),
        "STATUS column: {table}"
    );
    let restarts: i64 = row.get(3).and_then(|r| r.parse().ok()).unwrap_or(-1);
    assert!(restarts >= 2, "RESTARTS column: {table}");
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let ns = cluster().namespace("liveness");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "touch /tmp/healthy; sleep 3; rm /tmp/healthy; exec sleep 3600"]
    livenessProbe:
      exec: {command: [cat, /tmp/healthy]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    wait_pod(ns.name(), "flaky", "a liveness restart", |p| {
        restart_count(p, "main") >= 1
    });
    let reasons = event_reasons(ns.name(), "flaky");
    assert!(reasons.iter().any(|r| r == "Unhealthy"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
    let described = cluster().kubectl_ok(&["describe", "pod", "flaky", "-n", ns.name()]);
    assert!(described.contains("Liveness probe failed"), "{described}");
}

#[test]
fn exceeding_the_memory_limit_is_oom_killed() {
    let ns = cluster().namespace("oom");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "x=a; while true; do x=$x$x; done"]
    resources:
      limits: {memory: 16Mi}
"#,
    );
    // containerd delivers the OOM and exit events separately; the reason
    // settles to OOMKilled once both are in.
    let pod = wait_pod(
        ns.name(),
        "hog",
        "phase Failed with reason OOMKilled",
        |p| {
            p["status"]["phase"] == "Failed"
                && container_status(p, "main")["state"]["terminated"]["reason"] == "OOMKilled"
        },
    );
    let terminated = &container_status(&pod, "main")["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{terminated}");
    assert_eq!(terminated["exitCode"], 137);
    let table = cluster().kubectl_ok(&["get", "pod", "hog", "-n", ns.name()]);
    assert!(table.contains("OOMKilled"), "{table}");
}

#[test]
fn a_missing_image_backs_off_with_events() {
    let ns = cluster().namespace("pull");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: nope}
spec:
  nodeName: NODE
  containers:
  - {name: main, image: "127.0.0.1:1/missing/image:v1"}
"#,
    );
    let mut seen = Vec::new();
    wait_pod(ns.name(), "nope", "ImagePullBackOff", |p| {
        let reason = container_status(p, "main")["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !seen.contains(&reason) {
            seen.push(reason.clone());
        }
        reason == "ImagePullBackOff"
    });
    assert!(
        seen.iter().any(|r| r == "ErrImagePull"),
        "reasons seen: {seen:?}"
    );
    let reasons = event_reasons(ns.name(), "nope");
    for reason in ["Pulling", "Failed", "BackOff"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} in {reasons:?}"
        );
    }
    let pod = cluster().get_json(&["get", "pod", "nope", "-n", ns.name()]);
    assert_eq!(pod["status"]["phase"], "Pending");
}

#[test]
fn a_bad_command_reports_a_clear_reason() {
    let ns = cluster().namespace("badcmd");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - {name: main, image: IMAGE, command: [/bin/no-such-binary]}
"#,
    );
    let pod = wait_pod(ns.name(), "typo", "a failure reason", |p| {
        let state = &container_status(p, "main")["state"];
        state["waiting"]["reason"].is_string() && state["waiting"]["reason"] != "ContainerCreating"
            || state["terminated"]["reason"].is_string()
    });
    let state = &container_status(&pod, "main")["state"];
    let text = state.to_string();
    assert!(
        text.contains("no-such-binary"),
        "the message names the command: {text}"
    );
    let described = cluster().kubectl_ok(&["describe", "pod", "typo", "-n", ns.name()]);
    assert!(described.contains("no-such-binary"), "{described}");
}

/// A gRPC health responder on port 9000 answering SERVING (`\010\001`) once
/// per connection: the HTTP/2 frames of one `grpc.health.v1.Health/Check`
/// reply, served by busybox `nc`.
const GRPC_SERVING: &str = r#"
      cat > /tmp/serve.sh <<'EOF'
      #!/bin/sh
      printf '\000\000\000\004\000\000\000\000\000'
      sleep 1
      printf '\000\000\000\004\001\000\000\000\000'
      printf '\000\000\024\001\004\000\000\000\001\210\017\020\020application/grpc'
      printf '\000\000\007\000\000\000\000\000\001\000\000\000\000\002\010\001'
      printf '\000\000\017\001\005\000\000\000\001\000\013grpc-status\001\060'
      sleep 1
      EOF
      chmod +x /tmp/serve.sh
      exec nc -ll -p 9000 -e /tmp/serve.sh"#;

#[test]
fn grpc_probes_gate_readiness_and_restart_on_failure() {
    let ns = cluster().namespace("grpc");
    apply(
        ns.name(),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: serving}}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c]
    args:
    - |{GRPC_SERVING}
    readinessProbe:
      grpc: {{port: 9000}}
      timeoutSeconds: 3
      periodSeconds: 5
---
apiVersion: v1
kind: Pod
metadata: {{name: silent}}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "exec sleep 3600"]
    livenessProbe:
      grpc: {{port: 9000}}
      periodSeconds: 2
      failureThreshold: 2
"#
        ),
    );
    wait_pod(ns.name(), "serving", "Ready through the gRPC probe", |p| {
        container_status(p, "main")["ready"] == true
    });
    wait_pod(ns.name(), "silent", "a gRPC liveness restart", |p| {
        restart_count(p, "main") >= 1
    });
    let described = cluster().kubectl_ok(&["describe", "pod", "silent", "-n", ns.name()]);
    assert!(
        described.contains("Liveness probe failed: timeout: failed to connect service"),
        "{described}"
    );
}
