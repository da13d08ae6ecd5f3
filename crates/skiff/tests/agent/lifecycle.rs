//! Pods start, report upstream's status, share volumes and localhost, follow
//! ConfigMap updates, and are cleaned up on deletion.

use std::time::Duration;

use skiff_testing::{NODE_NAME, eventually};

use crate::util::{
    apply, cluster, condition, container_status, event_reasons, wait_pod, wait_running,
};

#[test]
fn node_registers_ready_with_capacity_and_a_pod_cidr() {
    let c = cluster();
    eventually("node Ready", Duration::from_secs(60), || {
        let out = c.kubectl(&["get", "node", NODE_NAME, "-o", "json"]);
        let Ok(node) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        node["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    let node = c.get_json(&["get", "node", NODE_NAME]);
    for resource in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(
            node["status"]["capacity"][resource].is_string(),
            "capacity.{resource} missing: {}",
            node["status"]
        );
        assert!(node["status"]["allocatable"][resource].is_string());
    }
    let cidr = node["spec"]["podCIDR"].as_str().expect("podCIDR");
    assert!(
        cidr.starts_with("10.42.") && cidr.ends_with("/24"),
        "{cidr}"
    );
    let lease = c.get_json(&["get", "lease", NODE_NAME, "-n", "kube-node-lease"]);
    assert_eq!(lease["spec"]["holderIdentity"], NODE_NAME);
    let table = c.kubectl_ok(&["get", "nodes"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(NODE_NAME) && l.contains(" Ready ")),
        "{table}"
    );
    // The kubelet's own events, as `kubectl describe node` shows them upstream.
    eventually("the kubelet's node events", Duration::from_secs(30), || {
        let reasons = event_reasons("default", NODE_NAME);
        ["Starting", "NodeHasSufficientMemory", "NodeReady"]
            .iter()
            .all(|wanted| reasons.iter().any(|r| r == wanted))
    });
    let described = c.kubectl_ok(&["describe", "node", NODE_NAME]);
    assert!(described.contains("Starting kubelet."), "{described}");
    assert!(
        described.contains(&format!("Node {NODE_NAME} status is now: NodeReady")),
        "{described}"
    );
}

#[test]
fn a_pod_runs_with_status_like_upstream() {
    let ns = cluster().namespace("run");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sleeper, labels: {app: sleeper}}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "echo started; exec sleep 3600"]
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 100m, memory: 32Mi}
"#,
    );
    let pod = wait_running(ns.name(), "sleeper");
    let status = &pod["status"];
    let ip = status["podIP"].as_str().expect("podIP");
    assert!(ip.starts_with("10.42."), "pod IP {ip} outside the pod CIDR");
    assert_eq!(status["podIPs"][0]["ip"], ip);
    assert!(status["hostIP"].is_string());
    assert!(status["startTime"].is_string());
    assert_eq!(status["qosClass"], "Guaranteed");
    let main = container_status(&pod, "main");
    assert_eq!(main["ready"], true);
    assert_eq!(main["restartCount"], 0);
    assert!(main["state"]["running"]["startedAt"].is_string());
    assert!(
        main["containerID"]
            .as_str()
            .unwrap_or_default()
            .starts_with("containerd://")
    );
    assert!(main["imageID"].as_str().is_some_and(|id| !id.is_empty()));
    for cond in [
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodReadyToStartContainers",
    ] {
        assert_eq!(
            condition(&pod, cond).as_deref(),
            Some("True"),
            "condition {cond}"
        );
    }

    let table = cluster().kubectl_ok(&["get", "pods", "-n", ns.name(), "-o", "wide"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("sleeper"))
        .expect("row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["1/1", "Running", "0"], "{table}");
    assert!(row.contains(ip) && row.contains(NODE_NAME), "{table}");

    // Limits are enforced by the container's cgroup (v1 memory and cpu).
    let memory = cluster().kubectl_ok(&[
        "exec",
        "-n",
        ns.name(),
        "sleeper",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(memory.trim(), (32 * 1024 * 1024).to_string());
    let quota = cluster().kubectl_ok(&[
        "exec",
        "-n",
        ns.name(),
        "sleeper",
        "--",
        "cat",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    ]);
    assert_eq!(quota.trim(), "10000");

    let reasons = event_reasons(ns.name(), "sleeper");
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }
    let described = cluster().kubectl_ok(&["describe", "pod", "sleeper", "-n", ns.name()]);
    assert!(described.contains("Started container main"), "{described}");

    // Deleting stops it within the grace period and removes it.
    cluster().kubectl_ok(&[
        "delete",
        "pod",
        "sleeper",
        "-n",
        ns.name(),
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    let gone = cluster().kubectl(&["get", "pod", "sleeper", "-n", ns.name()]);
    assert!(!gone.status.success());
    assert!(
        event_reasons(ns.name(), "sleeper")
            .iter()
            .any(|r| r == "Killing")
    );
}

#[test]
fn init_container_sidecar_shared_volume_config_and_localhost() {
    let ns = cluster().namespace("multi");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {index.html: "hello from configmap"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: multi}
spec:
  nodeName: NODE
  initContainers:
  - name: init
    image: IMAGE
    command: [sh, -c, "echo initialized > /work/init.txt"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: sidecar
    image: IMAGE
    restartPolicy: Always
    command: [httpd, -f, -p, "8080", -h, /www]
    volumeMounts: [{name: content, mountPath: /www}]
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, "cat /work/init.txt; echo password=$PASSWORD; echo pod=$POD_NAME; exec sleep 3600"]
    env:
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: content, mountPath: /config}
    readinessProbe:
      exec: {command: [cat, /work/ready]}
      periodSeconds: 1
  volumes:
  - {name: work, emptyDir: {}}
  - {name: content, configMap: {name: web}}
"#,
    );
    let pod = wait_running(ns.name(), "multi");
    // The readiness probe gates Ready until the file exists.
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed");

    let logs = cluster().kubectl_ok(&["logs", "-n", ns.name(), "multi", "-c", "app"]);
    assert!(logs.contains("initialized"), "init output missing: {logs}");
    assert!(
        logs.contains("password=s3cret"),
        "secret env missing: {logs}"
    );
    assert!(logs.contains("pod=multi"), "fieldRef env missing: {logs}");

    // Containers share the pod's network: the app reaches the sidecar on
    // localhost, which serves the ConfigMap volume.
    let body = cluster().kubectl_ok(&[
        "exec",
        "-n",
        ns.name(),
        "multi",
        "-c",
        "app",
        "--",
        "timeout",
        "10",
        "wget",
        "-qO-",
        "http://localhost:8080/index.html",
    ]);
    assert_eq!(body, "hello from configmap");
    let mounted = cluster().kubectl_ok(&[
        "exec",
        "-n",
        ns.name(),
        "multi",
        "-c",
        "app",
        "--",
        "cat",
        "/config/index.html",
    ]);
    assert_eq!(mounted, "hello from configmap");

    cluster().kubectl_ok(&[
        "exec",
        "-n",
        ns.name(),
        "multi",
        "-c",
        "app",
        "--",
        "touch",
        "/work/ready",
    ]);
    wait_pod(ns.name(), "multi", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    });

    // A ConfigMap change reaches the mounted volume without a restart.
    cluster().kubectl_ok(&[
        "patch",
        "configmap",
        "web",
        "-n",
        ns.name(),
        "--type=merge",
        "-p",
        r#"{"data":{"index.html":"updated"}}"#,
    ]);
    eventually("configMap volume update", Duration::from_secs(60), || {
        let out = cluster().kubectl(&[
            "exec",
            "-n",
            ns.name(),
            "multi",
            "-c",
            "app",
            "--",
            "cat",
            "/config/index.html",
        ]);
        String::from_utf8_lossy(&out.stdout) == "updated"
    });
    assert_eq!(
        container_status(&crate::util::pod(ns.name(), "multi"), "app")["restartCount"],
        0
    );
}

#[test]
fn the_agent_corrects_a_node_status_it_did_not_write() {
    let c = cluster();
    crate::util::wait_node_ready();
    // What the node lifecycle controller writes when heartbeats stop.
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#;
    c.kubectl_ok(&[
        "patch",
        "node",
        NODE_NAME,
        "--subresource=status",
        "--type=strategic",
        "-p",
        patch,
    ]);
    // The next heartbeat (10 s) reports Ready again, not the 60 s report.
    eventually("the node Ready again", Duration::from_secs(25), || {
        let node = c.get_json(&["get", "node", NODE_NAME]);
        node["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
}
