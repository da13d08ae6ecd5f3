//! Writes from generators and whole objects: `create <generator>` (kubectl
//! sends these as protobuf), `create -f`, `replace` and `edit`.

use std::os::unix::fs::PermissionsExt;

use skiff_testing::{DEFAULT_TIMEOUT, output_with_timeout, tools};

use crate::util::{cluster, get_json};

#[test]
fn create_deployment_applies_defaults() {
    let c = cluster();
    let ns = c.namespace("create-deploy");
    let out = c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
        "-n",
        ns.name(),
    ]);
    assert_eq!(out.trim(), "deployment.apps/web created");

    let dep = get_json(&["get", "deployment", "web", "-n", ns.name()]);
    assert_eq!(dep["apiVersion"], "apps/v1");
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(dep["spec"]["template"]["metadata"]["labels"]["app"], "web");
    // Upstream's defaults.
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(dep["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(dep["spec"]["progressDeadlineSeconds"], 600);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["schedulerName"], "default-scheduler");
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "nginx");
    assert_eq!(container["image"], "nginx");
    assert_eq!(
        container["imagePullPolicy"], "Always",
        "untagged image means :latest"
    );
    assert_eq!(container["terminationMessagePath"], "/dev/termination-log");

    let err = c.kubectl_err(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "-n",
        ns.name(),
    ]);
    assert!(
        err.contains(r#"deployments.apps "web" already exists"#),
        "{err}"
    );
}

#[test]
fn create_configmap_secret_and_namespace() {
    let c = cluster();
    let ns = c.namespace("create-gen");
    let out = c.kubectl_ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
        "-n",
        ns.name(),
    ]);
    assert_eq!(out.trim(), "configmap/cfg created");
    let cm = get_json(&["get", "cm", "cfg", "-n", ns.name()]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "two"}));

    let out = c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
        "-n",
        ns.name(),
    ]);
    assert_eq!(out.trim(), "secret/creds created");
    let secret = get_json(&["get", "secret", "creds", "-n", ns.name()]);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["data"]["password"], "aHVudGVyMg==",
        "base64 of hunter2"
    );

    let name = format!("{}-extra", ns.name());
    let out = c.kubectl_ok(&["create", "namespace", &name]);
    assert_eq!(out.trim(), format!("namespace/{name} created"));
    let created = get_json(&["get", "namespace", &name]);
    assert_eq!(created["status"]["phase"], "Active");
    assert_eq!(
        created["metadata"]["labels"]["kubernetes.io/metadata.name"],
        name.as_str()
    );
    c.kubectl_ok(&["delete", "namespace", &name, "--wait=false"]);
}

#[test]
fn create_from_file_and_replace() {
    let c = cluster();
    let ns = c.namespace("replace");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: r\ndata:\n  k: one\n";
    let out = c.kubectl_stdin_ok(&["create", "-n", ns.name(), "-f", "-"], cm);
    assert_eq!(out.trim(), "configmap/r created");

    let stale = c.kubectl_ok(&["get", "cm", "r", "-n", ns.name(), "-o", "yaml"]);
    let replaced = stale.replace("k: one", "k: two");
    let out = c.kubectl_stdin_ok(&["replace", "-f", "-"], &replaced);
    assert_eq!(out.trim(), "configmap/r replaced");
    assert_eq!(
        get_json(&["get", "cm", "r", "-n", ns.name()])["data"]["k"],
        "two"
    );

    // The same resourceVersion again: optimistic concurrency refuses it.
    let conflicting = stale.replace("k: one", "k: three");
    let err = c.kubectl_stdin_err(&["replace", "-f", "-"], &conflicting);
    assert!(
        err.contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{err}"
    );

    // Without a resourceVersion, replace is unconditional.
    let out = c.kubectl_stdin_ok(
        &["replace", "-n", ns.name(), "-f", "-"],
        &cm.replace("one", "four"),
    );
    assert_eq!(out.trim(), "configmap/r replaced");
    assert_eq!(
        get_json(&["get", "cm", "r", "-n", ns.name()])["data"]["k"],
        "four"
    );

    let err = c.kubectl_stdin_err(
        &["replace", "-n", ns.name(), "-f", "-"],
        &cm.replace("name: r", "name: missing"),
    );
    assert!(err.contains(r#"configmaps "missing" not found"#), "{err}");
}

#[test]
fn edit_with_an_editor_script() {
    let c = cluster();
    let ns = c.namespace("edit");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "e",
        "--from-literal=mode=slow",
        "-n",
        ns.name(),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/mode: slow/mode: fast/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut command = c.command(&tools().kubectl);
    command
        .args(["edit", "cm", "e", "-n", ns.name()])
        .env("KUBE_EDITOR", &editor);
    let output = output_with_timeout(command, None, DEFAULT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl edit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "configmap/e edited");
    assert_eq!(
        get_json(&["get", "cm", "e", "-n", ns.name()])["data"]["mode"],
        "fast"
    );
}

#[test]
fn create_job_cronjob_services_and_pod() {
    let c = cluster();
    let ns = c.namespace("create-more");
    let n = ns.name();
    c.kubectl_ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "-n",
        n,
        "--",
        "echo",
        "hi",
    ]);
    let job = get_json(&["get", "job", "once", "-n", n]);
    // The Job strategy labels the template with the job's uid and selects on it.
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "once"
    );
    assert_eq!(job["spec"]["backoffLimit"], 6);

    c.kubectl_ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "-n",
        n,
        "--",
        "date",
    ]);
    let cron = get_json(&["get", "cronjob", "tick", "-n", n]);
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow");

    c.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
        "-n",
        n,
    ]);
    c.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "edge",
        "--tcp=80:8080",
        "-n",
        n,
    ]);
    let web = get_json(&["get", "service", "web", "-n", n]);
    let ip = web["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.43."), "{ip}");
    assert_eq!(web["spec"]["clusterIPs"][0], ip);
    let edge = get_json(&["get", "service", "edge", "-n", n]);
    let node_port = edge["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    assert_ne!(edge["spec"]["clusterIP"], web["spec"]["clusterIP"]);

    c.kubectl_ok(&["run", "solo", "--image=busybox", "-n", n]);
    let pod = get_json(&["get", "pod", "solo", "-n", n]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let table = c.kubectl_ok(&["get", "pod", "solo", "-n", n]);
    assert!(table.contains("solo   0/1     Pending"), "{table}");
}
