//! In-place changes: `label`, `annotate`, `patch` (merge, JSON and strategic)
//! and `scale`.

use crate::util::{cluster, get_json};

#[test]
fn label_and_annotate() {
    let c = cluster();
    let ns = c.namespace("label");
    c.kubectl_ok(&["create", "configmap", "l", "-n", ns.name()]);

    let out = c.kubectl_ok(&["label", "cm", "l", "env=prod", "-n", ns.name()]);
    assert_eq!(out.trim(), "configmap/l labeled");
    let err = c.kubectl_err(&["label", "cm", "l", "env=dev", "-n", ns.name()]);
    assert!(
        err.contains("'env' already has a value (prod), and --overwrite is false"),
        "{err}"
    );
    c.kubectl_ok(&[
        "label",
        "cm",
        "l",
        "env=dev",
        "--overwrite",
        "-n",
        ns.name(),
    ]);
    let obj = get_json(&["get", "cm", "l", "-n", ns.name()]);
    assert_eq!(obj["metadata"]["labels"]["env"], "dev");

    let out = c.kubectl_ok(&["label", "cm", "l", "env-", "-n", ns.name()]);
    assert_eq!(out.trim(), "configmap/l unlabeled");
    let obj = get_json(&["get", "cm", "l", "-n", ns.name()]);
    assert!(obj["metadata"]["labels"]["env"].is_null(), "{obj}");

    let out = c.kubectl_ok(&["annotate", "cm", "l", "note=hello world", "-n", ns.name()]);
    assert_eq!(out.trim(), "configmap/l annotated");
    let obj = get_json(&["get", "cm", "l", "-n", ns.name()]);
    assert_eq!(obj["metadata"]["annotations"]["note"], "hello world");

    let err = c.kubectl_err(&["label", "cm", "l", "bad key=x", "-n", ns.name()]);
    assert!(!err.is_empty());
}

#[test]
fn merge_and_json_patches() {
    let c = cluster();
    let ns = c.namespace("patch");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "p",
        "--from-literal=a=1",
        "--from-literal=b=2",
        "-n",
        ns.name(),
    ]);

    let out = c.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":null,"c":"3"}}"#,
    ]);
    assert_eq!(out.trim(), "configmap/p patched");
    let obj = get_json(&["get", "cm", "p", "-n", ns.name()]);
    assert_eq!(obj["data"], serde_json::json!({"b": "2", "c": "3"}));

    c.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "-n",
        ns.name(),
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/b","value":"20"},{"op":"remove","path":"/data/c"}]"#,
    ]);
    let obj = get_json(&["get", "cm", "p", "-n", ns.name()]);
    assert_eq!(obj["data"], serde_json::json!({"b": "20"}));

    // A JSON patch whose test fails changes nothing and is an error.
    let err = c.kubectl_err(&[
        "patch",
        "cm",
        "p",
        "-n",
        ns.name(),
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/data/b","value":"nope"},{"op":"remove","path":"/data/b"}]"#,
    ]);
    assert!(!err.is_empty());
    assert_eq!(
        get_json(&["get", "cm", "p", "-n", ns.name()])["data"]["b"],
        "20"
    );

    let out = c.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"20"}}"#,
    ]);
    assert_eq!(out.trim(), "configmap/p patched (no change)");
}

#[test]
fn strategic_merge_patch_merges_lists_by_key() {
    let c = cluster();
    let ns = c.namespace("patch-smp");
    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "-n",
        ns.name(),
    ]);
    // `name=image` of each container, sorted: only merging is under test here,
    // not where a new item lands in the list.
    let containers = |c: &str| -> Vec<String> {
        let obj = get_json(&["get", "deployment", c, "-n", ns.name()]);
        let mut found: Vec<String> = obj["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["name"].as_str().unwrap(),
                    c["image"].as_str().unwrap()
                )
            })
            .collect();
        found.sort();
        found
    };

    // Strategic is kubectl's default for built-in types: containers merge by name.
    c.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns.name(),
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}}"#,
    ]);
    assert_eq!(containers("web"), ["nginx=nginx", "sidecar=busybox"]);

    c.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns.name(),
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ]);
    assert_eq!(containers("web"), ["nginx=nginx:1.27", "sidecar=busybox"]);

    c.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns.name(),
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
    ]);
    assert_eq!(containers("web"), ["nginx=nginx:1.27"]);

    // A merge patch replaces the whole list.
    c.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"only","image":"redis"}]}}}}"#,
    ]);
    assert_eq!(containers("web"), ["only=redis"]);
}

#[test]
fn scale_uses_the_scale_subresource() {
    let c = cluster();
    let ns = c.namespace("scale");
    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=1",
        "-n",
        ns.name(),
    ]);
    let out = c.kubectl_ok(&[
        "scale",
        "deployment",
        "web",
        "--replicas=3",
        "-n",
        ns.name(),
    ]);
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    let dep = get_json(&["get", "deployment", "web", "-n", ns.name()]);
    assert_eq!(dep["spec"]["replicas"], 3);

    let path = format!(
        "/apis/apps/v1/namespaces/{}/deployments/web/scale",
        ns.name()
    );
    let scale: serde_json::Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "--raw", &path])).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    let err = c.kubectl_err(&[
        "scale",
        "deployment",
        "web",
        "--current-replicas=1",
        "--replicas=5",
        "-n",
        ns.name(),
    ]);
    assert!(err.contains("replicas"), "{err}");
    assert_eq!(
        get_json(&["get", "deployment", "web", "-n", ns.name()])["spec"]["replicas"],
        3
    );
}
