//! `kubectl wait`, which watches with `sendInitialEvents` (streaming lists).

use std::time::Duration;

use crate::util::cluster;

#[test]
fn wait_for_jsonpath_value() {
    let c = cluster();
    let ns = c.namespace("wait-jsonpath");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "w",
        "--from-literal=ready=no",
        "-n",
        ns.name(),
    ]);

    let mut waiting = c.kubectl_watch(&[
        "wait",
        "cm/w",
        "--for=jsonpath={.data.ready}=yes",
        "--timeout=30s",
        "-n",
        ns.name(),
    ]);
    // Give kubectl time to start watching before the change.
    std::thread::sleep(Duration::from_millis(500));
    c.kubectl_ok(&[
        "patch",
        "cm",
        "w",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        r#"{"data":{"ready":"yes"}}"#,
    ]);
    let line = waiting.wait_for(Duration::from_secs(30), |l| l.contains("condition met"));
    assert_eq!(line, "configmap/w condition met");
}

#[test]
fn wait_returns_at_once_when_already_true() {
    let c = cluster();
    let ns = c.namespace("wait-now");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "w",
        "--from-literal=ready=yes",
        "-n",
        ns.name(),
    ]);
    let out = c.kubectl_ok(&[
        "wait",
        "cm/w",
        "--for=jsonpath={.data.ready}=yes",
        "--timeout=10s",
        "-n",
        ns.name(),
    ]);
    assert_eq!(out.trim(), "configmap/w condition met");
}

#[test]
fn wait_for_delete() {
    let c = cluster();
    let ns = c.namespace("wait-delete");
    c.kubectl_ok(&["create", "configmap", "d", "-n", ns.name()]);
    let mut waiting = c.kubectl_watch(&[
        "wait",
        "cm/d",
        "--for=delete",
        "--timeout=30s",
        "-n",
        ns.name(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    c.kubectl_ok(&["delete", "cm", "d", "-n", ns.name(), "--wait=false"]);
    let line = waiting.wait_for(Duration::from_secs(30), |l| l.contains("condition met"));
    assert_eq!(line, "configmap/d condition met");
}

#[test]
fn wait_times_out() {
    let c = cluster();
    let ns = c.namespace("wait-timeout");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "t",
        "--from-literal=ready=no",
        "-n",
        ns.name(),
    ]);
    let err = c.kubectl_err(&[
        "wait",
        "cm/t",
        "--for=jsonpath={.data.ready}=yes",
        "--timeout=2s",
        "-n",
        ns.name(),
    ]);
    assert!(err.contains("timed out waiting for the condition"), "{err}");
}
