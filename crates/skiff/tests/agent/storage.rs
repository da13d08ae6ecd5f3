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

/// A container that sleeps and exits at once on SIGTERM.
const SLEEP: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

/// A claim `name` of `class` asking for `size`, and a pod `name` (label
/// `app: name`) running `script` with the claim mounted at /data.
fn claim_and_pod(name: &str, class: &str, size: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  storageClassName: {class}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "{script}"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: {name}}}}}
"#
    )
}

/// StatefulSet `name` (pods labelled `app: name`, started in parallel) of
/// `replicas` running `script`, each with a claim `data` of `size` at /data;
/// `extra` is more of its spec, as indented YAML lines.
fn statefulset(name: &str, replicas: u32, extra: &str, script: &str, size: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  serviceName: {name}
  replicas: {replicas}
  podManagementPolicy: Parallel
{extra}  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: ["sh", "-c", "{script}"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: {size}}}}}
"#
    )
}

/// Creates StorageClass `name` of the local-path provisioner with
/// WaitForFirstConsumer binding, `reclaim` policy and `extra` top-level
/// YAML lines.
fn local_path_class(name: &str, reclaim: &str, extra: &str) {
    cluster().kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\n\
             provisioner: rancher.io/local-path\nreclaimPolicy: {reclaim}\n\
             volumeBindingMode: WaitForFirstConsumer\n{extra}"
        ),
    );
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
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec: {{clusterIP: None, selector: {{app: db}}, ports: [{{port: 80}}]}}\n---\n{}",
            statefulset(
                "db",
                3,
                "",
                &format!("[ -f /data/id ] || hostname > /data/id; {SLEEP}"),
                "64Mi"
            )
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
    local_path_class(&retain_class, "Retain", "");
    let writer = format!("echo payload > /data/file; {SLEEP}");
    apply(ns, &claim_and_pod("gone", "local-path", "8Mi", &writer));
    apply(ns, &claim_and_pod("kept", &retain_class, "8Mi", &writer));
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

#[test]
fn a_crafted_volume_path_outside_the_storage_dir_is_never_deleted() {
    wait_node_ready();
    let ns = cluster().namespace("crafted");
    let ns = ns.name();
    let victim = tempfile::Builder::new()
        .prefix("skiff-test-victim-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(victim.path().join("precious"), "keep").expect("write");
    // A volume dressed as one the local-path provisioner made on this node,
    // Delete on release, but pointing outside the provisioner's directory.
    let pv = format!("pvc-crafted-{ns}");
    cluster().kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {pv}
  annotations: {{pv.kubernetes.io/provisioned-by: rancher.io/local-path}}
spec:
  capacity: {{storage: 8Mi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: local-path
  claimRef: {{namespace: {ns}, name: bait}}
  hostPath: {{path: "{victim}", type: DirectoryOrCreate}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: bait, namespace: {ns}}}
spec:
  storageClassName: local-path
  volumeName: {pv}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 8Mi}}}}
"#,
            victim = victim.path().display(),
            node = skiff_testing::NODE_NAME,
        ),
    );
    eventually("the claim Bound", STORAGE_TIMEOUT, || {
        claim_phase(ns, "bait") == "Bound"
    });
    cluster().kubectl_ok(&["delete", "pvc", "bait", "-n", ns]);
    eventually(
        "a VolumeFailedDelete warning on the volume",
        STORAGE_TIMEOUT,
        || {
            let events = cluster().kubectl_ok(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                &format!("involvedObject.name={pv},reason=VolumeFailedDelete"),
            ]);
            events.contains("refusing to delete")
        },
    );
    assert_eq!(
        std::fs::read_to_string(victim.path().join("precious")).expect("the victim's file"),
        "keep"
    );
    assert!(
        cluster().kubectl(&["get", "pv", &pv]).status.success(),
        "the volume stays for an administrator to look at"
    );
    cluster().kubectl_ok(&["delete", "pv", &pv]);
    assert!(victim.path().join("precious").exists());
}

#[test]
fn claims_grow_only_in_classes_that_allow_it_and_within_limit_ranges() {
    wait_node_ready();
    let ns = cluster().namespace("expand");
    let ns = ns.name();
    let class = format!("grow-{ns}");
    local_path_class(&class, "Delete", "allowVolumeExpansion: true\n");
    apply(
        ns,
        &[
            claim_and_pod("fixed", "local-path", "1Gi", SLEEP),
            claim_and_pod("growing", &class, "1Gi", SLEEP),
        ]
        .join("---\n"),
    );
    wait_ready_pods(ns, "fixed", 1);
    wait_ready_pods(ns, "growing", 1);
    let grow = |claim: &str, size: &str| {
        cluster().kubectl(&[
            "patch",
            "pvc",
            claim,
            "-n",
            ns,
            "-p",
            &format!(r#"{{"spec":{{"resources":{{"requests":{{"storage":"{size}"}}}}}}}}"#),
        ])
    };
    let stderr = |out: std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let refused = grow("fixed", "2Gi");
    assert!(!refused.status.success());
    assert!(
        stderr(refused).contains(
            "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
        )
    );

    exec(ns, "growing", "echo kept > /data/f");
    assert!(grow("growing", "3Gi").status.success());
    eventually("the claim expanded", STORAGE_TIMEOUT, || {
        json(&["get", "pvc", "growing", "-n", ns])["status"]["capacity"]["storage"] == "3Gi"
    });
    let claim = json(&["get", "pvc", "growing", "-n", ns]);
    let volume = claim["spec"]["volumeName"].as_str().expect("bound");
    assert_eq!(
        json(&["get", "pv", volume])["spec"]["capacity"]["storage"],
        "3Gi"
    );
    assert!(
        claim["status"]["allocatedResourceStatuses"].is_null(),
        "no resize left in progress: {}",
        claim["status"]
    );
    let reasons = event_reasons(ns, "growing");
    assert!(
        reasons.iter().any(|r| r == "VolumeResizeSuccessful"),
        "{reasons:?}"
    );
    assert_eq!(exec(ns, "growing", "cat /data/f"), "kept\n");
    let shrink = grow("growing", "2Gi");
    assert!(stderr(shrink).contains(
        "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
    ));

    apply(
        ns,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: storage}\nspec: {limits: [{type: PersistentVolumeClaim, max: {storage: 2Gi}}]}\n",
    );
    cluster().kubectl_ok(&["label", "pvc", "growing", "-n", ns, "tier=db"]);
    let over = grow("growing", "4Gi");
    assert!(
        stderr(over)
            .contains("maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 4Gi")
    );
    cluster().kubectl_ok(&["delete", "pod", "fixed", "growing", "-n", ns]);
    cluster().kubectl_ok(&["delete", "pvc", "fixed", "growing", "-n", ns]);
    cluster().kubectl_ok(&["delete", "storageclass", &class]);
}

#[test]
fn statefulset_retention_policy_delete_removes_claims_on_scale_down_and_deletion() {
    wait_node_ready();
    let ns = cluster().namespace("sts-retention");
    let ns = ns.name();
    apply(
        ns,
        &statefulset(
            "cache",
            2,
            "  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}\n",
            SLEEP,
            "8Mi",
        ),
    );
    wait_ready_pods(ns, "cache", 2);
    let (_, second_dir) = volume_dir(ns, "data-cache-1");
    assert!(second_dir.is_dir());
    let claim_exists = |name: &str| {
        cluster()
            .kubectl(&["get", "pvc", name, "-n", ns])
            .status
            .success()
    };

    cluster().kubectl_ok(&["scale", "statefulset", "cache", "-n", ns, "--replicas=1"]);
    eventually(
        "the scaled-away claim and its data gone",
        STORAGE_TIMEOUT,
        || !claim_exists("data-cache-1") && !second_dir.exists(),
    );
    assert!(
        claim_exists("data-cache-0"),
        "the remaining replica keeps its claim"
    );

    let (_, first_dir) = volume_dir(ns, "data-cache-0");
    cluster().kubectl_ok(&["delete", "statefulset", "cache", "-n", ns]);
    eventually("the set's claims gone with it", STORAGE_TIMEOUT, || {
        !claim_exists("data-cache-0") && !first_dir.exists()
    });
}
