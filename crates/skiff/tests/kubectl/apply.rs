//! `apply`: client-side (three-way strategic merge through the
//! last-applied-configuration annotation) and server-side (field managers).

use crate::util::{cluster, get_json};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn manifests(replicas: u32, image: &str, data: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
{data}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 80
        env:
        - name: MODE
          value: fast
"
    )
}

#[test]
fn apply_multi_document_file_then_update() {
    let c = cluster();
    let ns = c.namespace("apply");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    let file_arg = file.to_str().unwrap();

    std::fs::write(&file, manifests(1, "nginx:1.26", "  a: \"1\"\n  b: \"2\"")).unwrap();
    let out = c.kubectl_ok(&["apply", "-n", ns.name(), "-f", file_arg]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["configmap/settings created", "deployment.apps/web created"]
    );
    let dep = get_json(&["get", "deployment", "web", "-n", ns.name()]);
    assert!(
        dep["metadata"]["annotations"][LAST_APPLIED].is_string(),
        "{dep}"
    );
    assert_eq!(dep["metadata"]["generation"], 1);

    // Unchanged input: nothing to do.
    let out = c.kubectl_ok(&["apply", "-n", ns.name(), "-f", file_arg]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/settings unchanged",
            "deployment.apps/web unchanged"
        ]
    );

    // Someone else adds a label and an env var; apply must keep what it does not own.
    c.kubectl_ok(&["label", "deployment", "web", "-n", ns.name(), "team=blue"]);
    c.kubectl_ok(&["set", "env", "deployment/web", "-n", ns.name(), "EXTRA=1"]);

    // The file changes: new image and replicas, key b removed, key c added.
    std::fs::write(&file, manifests(3, "nginx:1.27", "  a: \"1\"\n  c: \"3\"")).unwrap();
    let out = c.kubectl_ok(&["apply", "-n", ns.name(), "-f", file_arg]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/settings configured",
            "deployment.apps/web configured"
        ]
    );

    let cm = get_json(&["get", "cm", "settings", "-n", ns.name()]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "c": "3"}), "{cm}");

    let dep = get_json(&["get", "deployment", "web", "-n", ns.name()]);
    assert_eq!(dep["spec"]["replicas"], 3);
    assert_eq!(
        dep["metadata"]["labels"]["team"], "blue",
        "foreign label kept: {dep}"
    );
    let containers = &dep["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "{dep}");
    assert_eq!(containers[0]["image"], "nginx:1.27");
    let env: Vec<&str> = containers[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["MODE", "EXTRA"], "env merged by name: {dep}");
    assert_eq!(
        dep["metadata"]["generation"], 3,
        "label is metadata; set env and apply bump it"
    );
}

#[test]
fn apply_from_stdin_with_dry_run_changes_nothing() {
    let c = cluster();
    let ns = c.namespace("apply-dry");
    let input = manifests(1, "nginx", "  a: \"1\"");
    let out = c.kubectl_stdin_ok(
        &["apply", "-n", ns.name(), "-f", "-", "--dry-run=server"],
        &input,
    );
    assert!(
        out.contains("configmap/settings created (server dry run)"),
        "{out}"
    );
    let err = c.kubectl_err(&["get", "cm", "settings", "-n", ns.name()]);
    assert!(err.contains(r#"configmaps "settings" not found"#), "{err}");
}

#[test]
fn server_side_apply_tracks_managers_and_conflicts() {
    let c = cluster();
    let ns = c.namespace("apply-ssa");
    let cm = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  owned: \"{value}\"\n"
        )
    };

    let out = c.kubectl_stdin_ok(
        &["apply", "--server-side", "-n", ns.name(), "-f", "-"],
        &cm("1"),
    );
    assert_eq!(out.trim(), "configmap/ssa serverside-applied");
    let obj = get_json(&["get", "cm", "ssa", "-n", ns.name(), "--show-managed-fields"]);
    let managers = obj["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields");
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
        "{obj}"
    );
    assert!(
        obj["metadata"]["annotations"][LAST_APPLIED].is_null(),
        "server-side apply writes no annotation: {obj}"
    );

    // Applying it again with a new value by the same manager is an update.
    c.kubectl_stdin_ok(
        &["apply", "--server-side", "-n", ns.name(), "-f", "-"],
        &cm("2"),
    );
    assert_eq!(
        get_json(&["get", "cm", "ssa", "-n", ns.name()])["data"]["owned"],
        "2"
    );

    // Another manager setting the same field conflicts...
    let err = c.kubectl_stdin_err(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-n",
            ns.name(),
            "-f",
            "-",
        ],
        &cm("3"),
    );
    assert!(err.contains("conflict"), "{err}");
    assert!(err.contains(r#"conflict with "kubectl""#), "{err}");
    assert!(err.contains(".data.owned"), "{err}");

    // ...unless it forces, which takes ownership.
    c.kubectl_stdin_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=other",
            "-n",
            ns.name(),
            "-f",
            "-",
        ],
        &cm("3"),
    );
    let obj = get_json(&["get", "cm", "ssa", "-n", ns.name(), "--show-managed-fields"]);
    assert_eq!(obj["data"]["owned"], "3");
    assert!(
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "other" && m["operation"] == "Apply"),
        "{obj}"
    );
}

#[test]
fn server_side_apply_removes_fields_no_longer_applied() {
    let c = cluster();
    let ns = c.namespace("apply-ssa-prune");
    let two =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let one = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\ndata:\n  a: \"1\"\n";
    c.kubectl_stdin_ok(&["apply", "--server-side", "-n", ns.name(), "-f", "-"], two);
    c.kubectl_stdin_ok(&["apply", "--server-side", "-n", ns.name(), "-f", "-"], one);
    let obj = get_json(&["get", "cm", "p", "-n", ns.name()]);
    assert_eq!(obj["data"], serde_json::json!({"a": "1"}), "{obj}");
}

#[test]
fn server_side_apply_takes_over_from_client_side_apply() {
    let c = cluster();
    let ns = c.namespace("apply-upgrade");
    let cm = |value: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: up\ndata:\n  k: \"{value}\"\n")
    };
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &cm("1"));
    // Upstream migrates ownership from kubectl's client-side apply without a conflict.
    c.kubectl_stdin_ok(
        &["apply", "--server-side", "-n", ns.name(), "-f", "-"],
        &cm("2"),
    );
    assert_eq!(
        get_json(&["get", "cm", "up", "-n", ns.name()])["data"]["k"],
        "2"
    );
}
