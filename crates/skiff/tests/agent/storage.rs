//! Persistent storage on real pods and real files: claims bound by the PV
//! controller, volumes made by the built-in `local-path` provisioner where
//! the pod is scheduled, data that outlives pods, and reclaim policies.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use skiff_testing::eventually;

use crate::util::{IMAGE, START_TIMEOUT, cluster, event_reasons, wait_node_ready};

/// How long binding, provisioning and reclaiming may take.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(60);

fn apply(ns: &str, manifest: &str) {
    cluster().kubectl_stdin_ok(&["apply", "-n", ns, "-f", "-"], manifest);
}

fn exec(ns: &str, pod: &str, script: &str) -> String {
    cluster().kubectl_ok(&["exec", "-n", ns, pod, "--", "sh", "-c", script])
}

fn json(args: &[&str]) -> Value {
    cluster().get_json(args)
}

/// Waits until every pod of `app` in `ns` is Running and Ready, `count` of them.
fn wait_ready_pods(ns: &str, app: &str, count: usize) {
    let selector = format!("app={app}");
    let mut last = Value::Null;
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(
            &format!("{count} ready pods of {app}"),
            START_TIMEOUT,
            || {
                last = json(&["get", "pods", "-n", ns, "-l", &selector]);
                let pods = last["items"].as_array().cloned().unwrap_or_default();
                pods.len() == count
                    && pods.iter().all(|p| {
                        p["metadata"]["deletionTimestamp"].is_null()
                            && p["status"]["conditions"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            },
        )
    }));
    if done.is_err() {
        let table = cluster().kubectl(&["get", "pods,pvc,pv", "-n", ns, "-o", "wide"]);
        panic!(
            "{count} ready pods of {app} not reached:\n{}",
            String::from_utf8_lossy(&table.stdout)
        );
    }
}

fn claim_phase(ns: &str, name: &str) -> String {
    let out = cluster().kubectl(&["get", "pvc", name, "-n", ns, "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|c| c["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The host directory behind the volume bound to claim `ns/name`.
fn volume_dir(ns: &str, name: &str) -> (String, PathBuf) {
    let claim = json(&["get", "pvc", name, "-n", ns]);
    let pv = claim["spec"]["volumeName"]
        .as_str()
        .expect("a bound claim names its volume")
        .to_string();
    let volume = json(&["get", "pv", &pv]);
    let path = volume["spec"]["hostPath"]["path"]
        .as_str()
        .or(volume["spec"]["local"]["path"].as_str())
        .expect("a local-path volume has a path");
    (pv, PathBuf::from(path))
}

#[test]
fn statefulset_claims_keep_each_replicas_data_across_deletion_and_scaling() {
    wait_node_ready();
    let ns = cluster().namespace("sts-data");
    let ns = ns.name();
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec: {{clusterIP: None, selector: {{app: db}}, ports: [{{port: 80}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: ["sh", "-c", "[ -f /data/id ] || hostname > /data/id; trap 'exit 0' TERM; sleep 3600 & wait"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#
        ),
    );
    wait_ready_pods(ns, "db", 3);
    for i in 0..3 {
        let claim = format!("data-db-{i}");
        assert_eq!(claim_phase(ns, &claim), "Bound", "{claim}");
        let pod = format!("db-{i}");
        assert_eq!(exec(ns, &pod, "cat /data/id").trim(), pod);
    }
    let pvc = json(&["get", "pvc", "data-db-0", "-n", ns]);
    assert_eq!(pvc["spec"]["storageClassName"], "local-path");
    assert!(
        pvc["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "kubernetes.io/pvc-protection")),
        "{pvc}"
    );

    // Replacements of deleted pods read back the same ids.
    cluster().kubectl_ok(&["delete", "pods", "-n", ns, "-l", "app=db", "--wait=false"]);
    eventually("the old pods gone", START_TIMEOUT, || {
        let pods = json(&["get", "pods", "-n", ns, "-l", "app=db"]);
        pods["items"].as_array().is_some_and(|p| {
            p.iter()
                .all(|p| p["metadata"]["deletionTimestamp"].is_null())
        })
    });
    wait_ready_pods(ns, "db", 3);
    for i in 0..3 {
        let pod = format!("db-{i}");
        assert_eq!(exec(ns, &pod, "cat /data/id").trim(), pod);
    }

    // Scaling down keeps the claims (whenScaled: Retain), and db-2 gets its
    // data back.
    exec(ns, "db-2", "echo kept > /data/extra");
    cluster().kubectl_ok(&["scale", "statefulset", "db", "-n", ns, "--replicas=1"]);
    wait_ready_pods(ns, "db", 1);
    assert_eq!(claim_phase(ns, "data-db-2"), "Bound");
    cluster().kubectl_ok(&["scale", "statefulset", "db", "-n", ns, "--replicas=3"]);
    wait_ready_pods(ns, "db", 3);
    assert_eq!(exec(ns, "db-2", "cat /data/id /data/extra"), "db-2\nkept\n");
}

#[test]
fn a_deployment_claim_keeps_its_counter_across_a_rollout_restart() {
    wait_node_ready();
    let ns = cluster().namespace("deploy-data");
    let ns = ns.name();
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: counter}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 16Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: counter}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: counter}}}}
  template:
    metadata: {{labels: {{app: counter}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: ["sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); echo $((n+1)) > /data/n; trap 'exit 0' TERM; sleep 3600 & wait"]
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes:
      - {{name: data, persistentVolumeClaim: {{claimName: counter}}}}
"#
        ),
    );
    // WaitForFirstConsumer: the claim binds once its pod is scheduled.
    wait_ready_pods(ns, "counter", 1);
    let count = || {
        let pods = json(&["get", "pods", "-n", ns, "-l", "app=counter"]);
        let pod = pods["items"][0]["metadata"]["name"]
            .as_str()
            .expect("a pod")
            .to_string();
        exec(ns, &pod, "cat /data/n").trim().to_string()
    };
    assert_eq!(count(), "1");
    cluster().kubectl_ok(&["rollout", "restart", "deployment/counter", "-n", ns]);
    cluster().kubectl_ok(&[
        "rollout",
        "status",
        "deployment/counter",
        "-n",
        ns,
        "--timeout=90s",
    ]);
    wait_ready_pods(ns, "counter", 1);
    assert_eq!(count(), "2");
}

#[test]
fn reclaim_policies_delete_or_keep_the_data() {
    wait_node_ready();
    let ns = cluster().namespace("reclaim");
    let ns = ns.name();
    let retain_class = format!("retain-{ns}");
    cluster().kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {retain_class}}}
provisioner: rancher.io/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
"#
        ),
    );
    let claim_and_pod = |name: &str, class: &str| {
        format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  storageClassName: {class}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 8Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo payload > /data/file; trap 'exit 0' TERM; sleep 3600 & wait"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: {name}}}}}
"#
        )
    };
    apply(ns, &claim_and_pod("gone", "local-path"));
    apply(ns, &claim_and_pod("kept", &retain_class));
    wait_ready_pods(ns, "gone", 1);
    wait_ready_pods(ns, "kept", 1);
    let (gone_pv, gone_dir) = volume_dir(ns, "gone");
    let (kept_pv, kept_dir) = volume_dir(ns, "kept");
    eventually("the files on the host", STORAGE_TIMEOUT, || {
        gone_dir.join("file").exists() && kept_dir.join("file").exists()
    });

    // A claim in use is protected: deleting it waits for its pod.
    cluster().kubectl_ok(&["delete", "pvc", "gone", "kept", "-n", ns, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(claim_phase(ns, "gone"), "Bound");
    cluster().kubectl_ok(&["delete", "pod", "gone", "kept", "-n", ns]);

    eventually(
        "the Delete volume and its directory removed",
        STORAGE_TIMEOUT,
        || !cluster().kubectl(&["get", "pv", &gone_pv]).status.success() && !gone_dir.exists(),
    );
    eventually("the Retain volume Released", STORAGE_TIMEOUT, || {
        json(&["get", "pv", &kept_pv])["status"]["phase"] == "Released"
    });
    assert_eq!(
        std::fs::read_to_string(kept_dir.join("file")).expect("the kept data"),
        "payload\n"
    );
    cluster().kubectl_ok(&["delete", "pv", &kept_pv]);
    cluster().kubectl_ok(&["delete", "storageclass", &retain_class]);
    let _ = std::fs::remove_dir_all(&kept_dir);
}

#[test]
fn claims_are_validated_defaulted_and_printed_like_upstream() {
    // The node's provisioner creates the default class.
    wait_node_ready();
    eventually("the default StorageClass", STORAGE_TIMEOUT, || {
        cluster()
            .kubectl(&["get", "storageclass", "local-path"])
            .status
            .success()
    });
    let ns = cluster().namespace("pvc-api");
    let ns = ns.name();
    let out = cluster().kubectl_stdin(
        &["create", "-n", ns, "-f", "-"],
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: bad}
spec:
  accessModes: [ReadWriteSometimes]
  resources: {requests: {storage: 1Gi}}
"#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is invalid"), "{stderr}");
    assert!(stderr.contains("spec.accessModes"), "{stderr}");

    // No class: the default one is filled in. An unknown class stays Pending.
    apply(
        ns,
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: plain}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nowhere}
spec:
  storageClassName: no-such-class
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
"#,
    );
    assert_eq!(
        json(&["get", "pvc", "plain", "-n", ns])["spec"]["storageClassName"],
        "local-path"
    );
    eventually("an event on the unknown class", STORAGE_TIMEOUT, || {
        event_reasons(ns, "nowhere").contains(&"ProvisioningFailed".to_string())
    });
    assert_eq!(claim_phase(ns, "nowhere"), "Pending");

    let classes = cluster().kubectl_ok(&["get", "storageclass"]);
    let header = classes.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "PROVISIONER",
        "RECLAIMPOLICY",
        "VOLUMEBINDINGMODE",
        "ALLOWVOLUMEEXPANSION",
        "AGE",
    ] {
        assert!(header.contains(column), "{classes}");
    }
    assert!(
        classes.contains("local-path (default)")
            && classes.contains("rancher.io/local-path")
            && classes.contains("WaitForFirstConsumer"),
        "{classes}"
    );
    let claims = cluster().kubectl_ok(&["get", "pvc", "-n", ns]);
    let header = claims.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS MODES",
        "STORAGECLASS",
        "AGE",
    ] {
        assert!(header.contains(column), "{claims}");
    }

    // A static volume binds to the claim that fits it.
    let pv = format!("static-{ns}");
    let dir = tempfile::tempdir().expect("a temp dir");
    cluster().kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv}}}
spec:
  storageClassName: manual-{ns}
  capacity: {{storage: 2Mi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {path}}}
"#,
            path = dir.path().display()
        ),
    );
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: static}}
spec:
  storageClassName: manual-{ns}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Mi}}}}
"#
        ),
    );
    eventually("the static volume bound", STORAGE_TIMEOUT, || {
        claim_phase(ns, "static") == "Bound"
    });
    let volume = json(&["get", "pv", &pv]);
    assert_eq!(volume["status"]["phase"], "Bound");
    assert_eq!(volume["spec"]["claimRef"]["name"], "static");
    assert_eq!(volume["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let volumes = cluster().kubectl_ok(&["get", "pv", &pv]);
    let header = volumes.lines().next().unwrap_or_default();
    for column in [
        "CAPACITY",
        "ACCESS MODES",
        "RECLAIM POLICY",
        "STATUS",
        "CLAIM",
        "STORAGECLASS",
    ] {
        assert!(header.contains(column), "{volumes}");
    }
    assert!(volumes.contains(&format!("{ns}/static")), "{volumes}");
    cluster().kubectl_ok(&["delete", "pvc", "static", "-n", ns]);
    cluster().kubectl_ok(&["delete", "pv", &pv]);
}
