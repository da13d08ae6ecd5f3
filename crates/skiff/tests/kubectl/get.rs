//! Reading: `get` (server-side Table columns, output formats, label and field
//! selectors, watches) and `describe`.

use std::time::Duration;

use crate::util::{cluster, get_json, table};

const CONFIGMAPS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: web, tier: front}
data: {a: \"1\", b: \"2\"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: db-config
  labels: {app: db, tier: back}
data: {a: \"1\"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: plain
data: {}
";

/// Names in the first column of a table, header excluded.
fn names(out: &str) -> Vec<String> {
    table(out)
        .into_iter()
        .skip(1)
        .map(|row| row[0].clone())
        .collect()
}

#[test]
fn table_columns_for_configmaps() {
    let c = cluster();
    let ns = c.namespace("get-table");
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], CONFIGMAPS);

    let out = c.kubectl_ok(&["get", "configmaps", "-n", ns.name()]);
    let rows = table(&out);
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"], "{out}");
    let web = rows.iter().find(|r| r[0] == "web-config").expect(&out);
    assert_eq!(web[1], "2", "{out}");
    let plain = rows.iter().find(|r| r[0] == "plain").expect(&out);
    assert_eq!(plain[1], "0", "{out}");
    // Rows come sorted by name, as the server lists them.
    // Every namespace also holds the cluster CA, as upstream publishes it.
    assert_eq!(
        names(&out),
        ["db-config", "kube-root-ca.crt", "plain", "web-config"],
        "{out}"
    );

    let out = c.kubectl_ok(&[
        "get",
        "configmap",
        "web-config",
        "-n",
        ns.name(),
        "--show-labels",
    ]);
    let rows = table(&out);
    assert_eq!(rows[0], ["NAME", "DATA", "AGE", "LABELS"], "{out}");
    assert_eq!(rows[1][3], "app=web,tier=front", "{out}");
}

#[test]
fn all_namespaces_adds_a_namespace_column() {
    let c = cluster();
    let ns = c.namespace("get-all-ns");
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], CONFIGMAPS);
    let out = c.kubectl_ok(&["get", "cm", "-A"]);
    let rows = table(&out);
    assert_eq!(rows[0], ["NAMESPACE", "NAME", "DATA", "AGE"], "{out}");
    assert!(
        rows.iter()
            .any(|r| r[0] == ns.name() && r[1] == "web-config"),
        "{out}"
    );
}

#[test]
fn wide_output_adds_priority_columns() {
    let c = cluster();
    let ns = c.namespace("get-wide");
    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "-n",
        ns.name(),
    ]);

    let out = c.kubectl_ok(&["get", "deployments", "-n", ns.name()]);
    let rows = table(&out);
    assert_eq!(
        rows[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(rows[1][0], "web", "{out}");
    assert!(rows[1][1].ends_with("/2"), "READY is ready/desired: {out}");

    let out = c.kubectl_ok(&["get", "deployments", "-n", ns.name(), "-o", "wide"]);
    let rows = table(&out);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{out}"
    );
    assert_eq!(rows[1][5..], ["nginx", "nginx:1.27", "app=web"], "{out}");
}

#[test]
fn pods_table_and_wide_columns() {
    let c = cluster();
    let ns = c.namespace("get-pods");
    c.kubectl_ok(&[
        "run",
        "p1",
        "--image=busybox",
        "--restart=Never",
        "-n",
        ns.name(),
    ]);
    let out = c.kubectl_ok(&["get", "pods", "-n", ns.name()]);
    let rows = table(&out);
    assert_eq!(
        rows[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out}"
    );
    assert_eq!(rows[1][..2], ["p1", "0/1"], "{out}");

    let out = c.kubectl_ok(&["get", "pods", "-n", ns.name(), "-o", "wide"]);
    let header = out.lines().next().unwrap_or_default();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{out}"
    );
}

#[test]
fn yaml_json_name_and_template_outputs() {
    let c = cluster();
    let ns = c.namespace("get-output");
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], CONFIGMAPS);

    let yaml = c.kubectl_ok(&["get", "cm", "web-config", "-n", ns.name(), "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\n"), "{yaml}");
    assert!(yaml.contains("\nkind: ConfigMap\n"), "{yaml}");
    assert!(yaml.contains("  resourceVersion: \""), "{yaml}");
    assert!(
        yaml.contains(&format!("  namespace: {}\n", ns.name())),
        "{yaml}"
    );

    let obj = get_json(&["get", "cm", "web-config", "-n", ns.name()]);
    assert_eq!(obj["kind"], "ConfigMap");
    assert_eq!(obj["data"]["b"], "2");
    assert!(
        obj["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36),
        "{obj}"
    );
    assert!(
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let list = get_json(&["get", "cm", "-n", ns.name()]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(4), "{list}");

    let out = c.kubectl_ok(&["get", "cm", "-n", ns.name(), "-o", "name"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "configmap/db-config",
            "configmap/kube-root-ca.crt",
            "configmap/plain",
            "configmap/web-config"
        ]
    );

    let out = c.kubectl_ok(&[
        "get",
        "cm",
        "web-config",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.metadata.labels.tier}",
    ]);
    assert_eq!(out, "front");

    let out = c.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        ns.name(),
        "-o",
        "custom-columns=N:.metadata.name,A:.data.a",
    ]);
    assert_eq!(
        table(&out),
        [
            vec!["N", "A"],
            vec!["db-config", "1"],
            vec!["kube-root-ca.crt", "<none>"],
            vec!["plain", "<none>"],
            vec!["web-config", "1"]
        ],
        "{out}"
    );
}

#[test]
fn label_selectors() {
    let c = cluster();
    let ns = c.namespace("get-labels");
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], CONFIGMAPS);
    let get =
        |selector: &str| names(&c.kubectl_ok(&["get", "cm", "-n", ns.name(), "-l", selector]));

    assert_eq!(get("app=web"), ["web-config"]);
    assert_eq!(get("app!=web"), ["db-config", "kube-root-ca.crt", "plain"]);
    assert_eq!(get("tier in (front,back)"), ["db-config", "web-config"]);
    assert_eq!(
        get("tier notin (front)"),
        ["db-config", "kube-root-ca.crt", "plain"]
    );
    assert_eq!(get("app"), ["db-config", "web-config"]);
    assert_eq!(get("!app"), ["kube-root-ca.crt", "plain"]);
    assert_eq!(get("app=db,tier=back"), ["db-config"]);

    let out = c.kubectl_ok(&["get", "cm", "-n", ns.name(), "-l", "app=nothing"]);
    assert_eq!(out, "", "no rows and no header on stdout");
    let err = String::from_utf8_lossy(
        &c.kubectl(&["get", "cm", "-n", ns.name(), "-l", "app=nothing"])
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains(&format!("No resources found in {} namespace.", ns.name())),
        "{err}"
    );
}

#[test]
fn field_selectors() {
    let c = cluster();
    let ns = c.namespace("get-fields");
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], CONFIGMAPS);
    let out = c.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        ns.name(),
        "--field-selector",
        "metadata.name=plain",
    ]);
    assert_eq!(names(&out), ["plain"]);
    let out = c.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        ns.name(),
        "--field-selector",
        "metadata.name!=plain",
    ]);
    assert_eq!(names(&out), ["db-config", "kube-root-ca.crt", "web-config"]);

    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "opaque",
        "--from-literal=k=v",
        "-n",
        ns.name(),
    ]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
        "-n",
        ns.name(),
    ]);
    let out = c.kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        ns.name(),
        "--field-selector",
        "type=Opaque",
    ]);
    assert_eq!(names(&out), ["opaque"], "{out}");

    let err = c.kubectl_err(&["get", "cm", "-n", ns.name(), "--field-selector", "data.a=1"]);
    assert!(err.contains("field label not supported: data.a"), "{err}");
}

#[test]
fn watch_sees_live_changes() {
    let c = cluster();
    let ns = c.namespace("get-watch");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "before",
        "--from-literal=k=v",
        "-n",
        ns.name(),
    ]);

    let mut watch = c.kubectl_watch(&["get", "cm", "-n", ns.name(), "-w", "--output-watch-events"]);
    let timeout = Duration::from_secs(20);
    let header = watch.wait_for(timeout, |l| l.starts_with("EVENT"));
    assert_eq!(table(&header)[0], ["EVENT", "NAME", "DATA", "AGE"]);
    watch.wait_for(timeout, |l| l.starts_with("ADDED") && l.contains("before"));

    c.kubectl_ok(&[
        "create",
        "configmap",
        "during",
        "--from-literal=k=v",
        "-n",
        ns.name(),
    ]);
    let added = watch.wait_for(timeout, |l| l.contains("during"));
    assert_eq!(table(&added)[0][..3], ["ADDED", "during", "1"]);

    c.kubectl_ok(&[
        "patch",
        "cm",
        "during",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        r#"{"data":{"k2":"v2"}}"#,
    ]);
    let modified = watch.wait_for(timeout, |l| l.starts_with("MODIFIED"));
    assert_eq!(table(&modified)[0][..3], ["MODIFIED", "during", "2"]);

    c.kubectl_ok(&["delete", "cm", "during", "-n", ns.name()]);
    watch.wait_for(timeout, |l| {
        l.starts_with("DELETED") && l.contains("during")
    });
}

#[test]
fn watch_of_one_object_in_json() {
    let c = cluster();
    let ns = c.namespace("get-watch-json");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "one",
        "--from-literal=k=v",
        "-n",
        ns.name(),
    ]);
    let mut watch = c.kubectl_watch(&["get", "cm", "one", "-n", ns.name(), "-w", "-o", "json"]);
    let timeout = Duration::from_secs(20);
    // kubectl pretty-prints each object; its top-level lines start in column 0.
    watch.wait_for(timeout, |l| l == "}");
    c.kubectl_ok(&["label", "cm", "one", "seen=yes", "-n", ns.name()]);
    watch.wait_for(timeout, |l| l.contains(r#""seen": "yes""#));
}

#[test]
fn describe_configmap_and_deployment() {
    let c = cluster();
    let ns = c.namespace("describe");
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], CONFIGMAPS);

    let out = c.kubectl_ok(&["describe", "cm", "web-config", "-n", ns.name()]);
    let field = |out: &str, name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
    };
    assert_eq!(field(&out, "Name:"), "web-config");
    assert_eq!(field(&out, "Namespace:"), ns.name());
    assert_eq!(field(&out, "Labels:"), "app=web");
    assert!(out.contains("\nData\n====\n"), "{out}");
    assert!(out.contains("\na:\n----\n1\n"), "{out}");
    assert!(out.contains("Events:"), "{out}");

    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
        "-n",
        ns.name(),
    ]);
    let out = c.kubectl_ok(&["describe", "deployment", "web", "-n", ns.name()]);
    assert_eq!(field(&out, "Name:"), "web");
    assert_eq!(field(&out, "Selector:"), "app=web");
    assert!(field(&out, "Replicas:").starts_with("2 desired"), "{out}");
    assert_eq!(field(&out, "StrategyType:"), "RollingUpdate");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("Image:") && l.ends_with(" nginx")),
        "{out}"
    );
}
