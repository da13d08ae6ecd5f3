//! How containers start and end: lifecycle hooks, graceful termination and
//! its SIGKILL deadline, startup probes, restart policies and completion,
//! host ports, and the pod's resolv.conf per `dnsPolicy`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use skiff_testing::eventually;

use crate::util::{
    apply, cluster, condition, container_status, event_reasons, wait_pod, wait_running,
};

/// Runs `args` in the pod's (only) container and returns its stdout.
fn exec(ns: &str, pod: &str, args: &[&str]) -> String {
    let mut full = vec!["exec", "-n", ns, pod, "--"];
    full.extend(args);
    cluster().kubectl_ok(&full)
}

/// Deletes the pod with kubectl's defaults (the pod's own grace period) and
/// waits until it is gone; returns how long that took.
fn delete_and_time(ns: &str, pod: &str) -> Duration {
    let started = Instant::now();
    cluster().kubectl_ok(&[
        "delete",
        "pod",
        pod,
        "-n",
        ns,
        "--wait=true",
        "--timeout=55s",
    ]);
    started.elapsed()
}

#[test]
fn pre_stop_hook_runs_before_sigterm() {
    let ns = cluster().namespace("prestop");
    let host = tempfile::tempdir().expect("tempdir");
    // The hook and the TERM trap append to one host file, so the order they
    // ran in survives the pod.
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: polite}}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "trap 'echo term >> /host/order; exit 0' TERM; echo started > /host/order; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "echo prestop >> /host/order; sleep 1"]}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
  - name: host
    hostPath: {{path: {}, type: Directory}}
"#,
        host.path().display()
    );
    apply(ns.name(), &manifest);
    wait_running(ns.name(), "polite");
    let order = host.path().join("order");
    eventually("the app to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&order).is_ok_and(|s| s == "started\n")
    });
    let took = delete_and_time(ns.name(), "polite");
    assert_eq!(
        std::fs::read_to_string(&order).expect("order file"),
        "started\nprestop\nterm\n",
        "preStop must finish before SIGTERM"
    );
    // The app exits on TERM, well within the 20 s grace period.
    assert!(took < Duration::from_secs(15), "deletion took {took:?}");
}

#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let ns = cluster().namespace("stubborn");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 6
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "trap 'echo ignoring TERM' TERM; while true; do sleep 0.2; done"]
"#,
    );
    wait_running(ns.name(), "stubborn");
    let took = delete_and_time(ns.name(), "stubborn");
    assert!(
        took >= Duration::from_millis(5500),
        "killed before the 6 s grace period ended: {took:?}"
    );
    assert!(
        took < Duration::from_secs(25),
        "not killed soon after the grace period: {took:?}"
    );
    let reasons = event_reasons(ns.name(), "stubborn");
    assert!(reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
}

#[test]
fn post_start_hook_effects_are_visible() {
    let ns = cluster().namespace("poststart");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "echo from-post-start > /tmp/hook"]}
"#,
    );
    wait_pod(ns.name(), "hooked", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    });
    assert_eq!(
        exec(ns.name(), "hooked", &["cat", "/tmp/hook"]),
        "from-post-start\n"
    );
    let pod = crate::util::pod(ns.name(), "hooked");
    assert_eq!(container_status(&pod, "main")["restartCount"], 0);
}

#[test]
fn a_failing_post_start_hook_kills_the_container() {
    let ns = cluster().namespace("poststart-fail");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: badhook}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "exit 7"]}
"#,
    );
    wait_pod(ns.name(), "badhook", "a restart", |p| {
        container_status(p, "main")["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let reasons = event_reasons(ns.name(), "badhook");
    assert!(
        reasons.iter().any(|r| r == "FailedPostStartHook"),
        "{reasons:?}"
    );
}

#[test]
fn a_startup_probe_gates_liveness_and_readiness() {
    let ns = cluster().namespace("startup");
    // The liveness probe would kill the container at once if it ran before
    // the startup probe succeeded.
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slowstart}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "sleep 6; touch /tmp/started; exec sleep 3600"]
    startupProbe:
      exec: {command: [cat, /tmp/started]}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      exec: {command: [cat, /tmp/started]}
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#,
    );
    let running = wait_pod(ns.name(), "slowstart", "container running", |p| {
        container_status(p, "main")["state"]["running"].is_object()
    });
    let main = container_status(&running, "main");
    let file = cluster().kubectl(&[
        "exec",
        "-n",
        ns.name(),
        "slowstart",
        "--",
        "cat",
        "/tmp/started",
    ]);
    if !file.status.success() {
        // Not started yet: neither started nor ready, whatever readiness says.
        assert_eq!(main["started"], false, "{main}");
        assert_eq!(main["ready"], false, "{main}");
        assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));
    }
    let pod = wait_pod(ns.name(), "slowstart", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    });
    let main = container_status(&pod, "main");
    assert_eq!(main["started"], true, "{main}");
    assert_eq!(main["ready"], true, "{main}");
    assert_eq!(
        main["restartCount"], 0,
        "liveness ran during startup: {main}"
    );
    exec(ns.name(), "slowstart", &["cat", "/tmp/started"]);
}

#[test]
fn restart_policy_on_failure_and_never() {
    let ns = cluster().namespace("policy");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: onfailure-ok}
spec:
  nodeName: NODE
  restartPolicy: OnFailure
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, "echo done; exit 0"]}
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure-bad}
spec:
  nodeName: NODE
  restartPolicy: OnFailure
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, "sleep 1; exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: job}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, "echo finished; exit 0"]}
"#,
    );
    for name in ["onfailure-ok", "job"] {
        let pod = wait_pod(ns.name(), name, "phase Succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        });
        let main = container_status(&pod, "main");
        let terminated = &main["state"]["terminated"];
        assert_eq!(terminated["reason"], "Completed", "{name}: {main}");
        assert_eq!(terminated["exitCode"], 0, "{name}: {main}");
        assert!(terminated["finishedAt"].is_string(), "{name}: {main}");
        assert_eq!(main["restartCount"], 0, "{name}: {main}");
        assert_eq!(main["ready"], false, "{name}: {main}");
        let ready = pod["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(ready["status"], "False", "{name}: {ready}");
        assert_eq!(ready["reason"], "PodCompleted", "{name}: {ready}");
        let table = cluster().kubectl_ok(&["get", "pod", name, "-n", ns.name()]);
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            row.get(1..4),
            Some(&["0/1", "Completed", "0"][..]),
            "{table}"
        );
    }
    let logs = cluster().kubectl_ok(&["logs", "-n", ns.name(), "job"]);
    assert_eq!(logs, "finished\n");

    // A failing container restarts under OnFailure, and the pod never fails.
    let pod = wait_pod(ns.name(), "onfailure-bad", "a restart", |p| {
        container_status(p, "main")["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let main = container_status(&pod, "main");
    assert_eq!(main["lastState"]["terminated"]["exitCode"], 1, "{main}");
    assert_eq!(main["lastState"]["terminated"]["reason"], "Error", "{main}");
    assert_ne!(pod["status"]["phase"], "Failed");
    assert_ne!(pod["status"]["phase"], "Succeeded");
}

/// A port that is free on the host right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends a plain HTTP GET for `path` to `addr` and returns the response,
/// or `None` if the connection fails.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn a_host_port_answers_on_the_node() {
    let ns = cluster().namespace("hostport");
    let port = free_port();
    apply(
        ns.name(),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "mkdir -p /www && echo hello-hostport > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
    - {{containerPort: 8080, hostPort: {port}, protocol: TCP}}
"#
        ),
    );
    let pod = wait_running(ns.name(), "web");
    let host_ip = pod["status"]["hostIP"]
        .as_str()
        .expect("hostIP")
        .to_string();
    // Traffic to the node's own address is DNATed by portmap.
    let addr = format!("{host_ip}:{port}");
    let mut last = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("the host port to answer", Duration::from_secs(20), || {
            last = http_get(&addr, "/index.html");
            last.as_deref()
                .is_some_and(|r| r.contains("hello-hostport"))
        });
    }));
    assert!(result.is_ok(), "{addr}: last response {last:?}");
    // And so is traffic to loopback (portmap's route_localnet + SNAT).
    let local = format!("127.0.0.1:{port}");
    let response = http_get(&local, "/index.html");
    assert!(
        response
            .as_deref()
            .is_some_and(|r| r.contains("hello-hostport")),
        "{local}: {response:?}"
    );
    // And on the node's outbound address, if it has one besides loopback.
    if let Some(ip) = outbound_ip() {
        let outside = format!("{ip}:{port}");
        let response = http_get(&outside, "/index.html");
        assert!(
            response
                .as_deref()
                .is_some_and(|r| r.contains("hello-hostport")),
            "{outside}: {response:?}"
        );
    }
}

/// The local address of the default route, found without sending anything.
fn outbound_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The `nameserver` lines of a resolv.conf.
fn nameservers(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn resolv_conf_follows_dns_policy() {
    let ns = cluster().namespace("dns");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: default-dns}
spec:
  nodeName: NODE
  dnsPolicy: Default
  containers:
  - {name: main, image: IMAGE, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: custom-dns}
spec:
  nodeName: NODE
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53, 198.51.100.53]
    searches: [my.search.example, other.example]
    options:
    - {name: ndots, value: "2"}
    - {name: edns0}
  containers:
  - {name: main, image: IMAGE, command: [sleep, "3600"]}
"#,
    );
    wait_running(ns.name(), "default-dns");
    wait_running(ns.name(), "custom-dns");

    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let pod = exec(ns.name(), "default-dns", &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        nameservers(&pod),
        nameservers(&host),
        "Default uses the node's resolvers; pod:\n{pod}\nhost:\n{host}"
    );

    let custom = exec(ns.name(), "custom-dns", &["cat", "/etc/resolv.conf"]);
    let lines: Vec<&str> = custom
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        nameservers(&custom),
        ["192.0.2.53", "198.51.100.53"],
        "{custom}"
    );
    assert!(
        lines.contains(&"search my.search.example other.example"),
        "{custom}"
    );
    let options: Vec<&str> = lines
        .iter()
        .find_map(|l| l.strip_prefix("options "))
        .map(|o| o.split_whitespace().collect())
        .unwrap_or_default();
    assert!(
        options.contains(&"ndots:2") && options.contains(&"edns0"),
        "{custom}"
    );
    assert!(
        !nameservers(&custom)
            .iter()
            .any(|s| nameservers(&host).contains(s)),
        "None must not inherit the node's resolvers: {custom}"
    );
}

#[test]
fn a_pre_stop_hook_cannot_outlast_the_grace_period() {
    let ns = cluster().namespace("prestop-slow");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slowhook}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 4
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    lifecycle:
      preStop:
        exec: {command: [sleep, "120"]}
"#,
    );
    wait_running(ns.name(), "slowhook");
    let took = delete_and_time(ns.name(), "slowhook");
    // The hook gets the grace period (upstream adds at most 2 s for the
    // container to stop), not its own 120 s.
    assert!(
        took >= Duration::from_millis(3500),
        "the hook was cut short: {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "the hook outlasted the grace period: {took:?}"
    );
}

#[test]
fn termination_messages_come_from_the_file_or_the_logs() {
    let ns = cluster().namespace("termmsg");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: from-file}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "echo -n 'written to the file' > /dev/termination-log; echo noise; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {name: from-logs}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, "echo first; echo last words; exit 2"]
---
apiVersion: v1
kind: Pod
metadata: {name: custom-path}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    terminationMessagePath: /tmp/why
    command: [sh, -c, "echo -n 'custom path' > /tmp/why"]
"#,
    );
    let cases = [
        ("from-file", "written to the file", 3, "Error"),
        ("from-logs", "first\nlast words\n", 2, "Error"),
        ("custom-path", "custom path", 0, "Completed"),
    ];
    for (name, message, code, reason) in cases {
        let pod = wait_pod(ns.name(), name, "the container to terminate", |p| {
            container_status(p, "main")["state"]["terminated"].is_object()
        });
        let terminated = &container_status(&pod, "main")["state"]["terminated"];
        assert_eq!(terminated["message"], message, "{name}: {terminated}");
        assert_eq!(terminated["exitCode"], code, "{name}: {terminated}");
        assert_eq!(terminated["reason"], reason, "{name}: {terminated}");
    }
}

#[test]
fn failures_under_restart_policy_never_fail_the_pod() {
    let ns = cluster().namespace("never");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: app-fails}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, "exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  nodeName: NODE
  restartPolicy: Never
  initContainers:
  - {name: init, image: IMAGE, command: [sh, -c, "exit 4"]}
  containers:
  - {name: main, image: IMAGE, command: [sleep, "3600"]}
"#,
    );
    let pod = wait_pod(ns.name(), "app-fails", "phase Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let main = container_status(&pod, "main");
    assert_eq!(main["state"]["terminated"]["reason"], "Error", "{main}");
    assert_eq!(main["restartCount"], 0, "{main}");
    let table = cluster().kubectl_ok(&["get", "pod", "app-fails", "-n", ns.name()]);
    assert!(table.contains(" Error "), "{table}");

    let pod = wait_pod(ns.name(), "init-fails", "phase Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["exitCode"], 4, "{init}");
    assert_eq!(init["restartCount"], 0, "{init}");
    // The app container never started.
    let main = container_status(&pod, "main");
    assert!(main["state"]["running"].is_null(), "{main}");
    assert!(main["containerID"].is_null(), "{main}");
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("False"));
    let table = cluster().kubectl_ok(&["get", "pod", "init-fails", "-n", ns.name()]);
    assert!(table.contains("Init:Error"), "{table}");
}

#[test]
fn active_deadline_seconds_fails_the_pod() {
    let ns = cluster().namespace("deadline");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: bounded}
spec:
  nodeName: NODE
  activeDeadlineSeconds: 4
  containers:
  - {name: main, image: IMAGE, command: [sleep, "3600"]}
"#,
    );
    wait_running(ns.name(), "bounded");
    let pod = wait_pod(ns.name(), "bounded", "phase Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        pod["status"]["reason"], "DeadlineExceeded",
        "{}",
        pod["status"]
    );
    let main = container_status(&pod, "main");
    assert!(main["state"]["terminated"].is_object(), "{main}");
    let reasons = event_reasons(ns.name(), "bounded");
    assert!(
        reasons.iter().any(|r| r == "DeadlineExceeded"),
        "{reasons:?}"
    );
}
