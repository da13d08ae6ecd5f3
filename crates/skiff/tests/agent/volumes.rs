//! Volume plugins and env sources, as a container sees them: memory-backed
//! `emptyDir`, `hostPath`, secret file modes and key selection, the
//! downward API (including live label updates), projected volumes, and
//! `envFrom`/`resourceFieldRef` env vars.

use std::time::Duration;

use skiff_testing::eventually;

use crate::util::{apply, cluster, container_status, event_reasons, pod, wait_running};

/// Runs `args` in the pod's (only) container and returns its stdout.
fn exec(ns: &str, pod: &str, args: &[&str]) -> String {
    let mut full = vec!["exec", "-n", ns, pod, "--"];
    full.extend(args);
    cluster().kubectl_ok(&full)
}

/// The octal permission bits of `path` in the pod, following the symlinks
/// of the atomic writer (`..data/...`) as a reading process would.
fn mode(ns: &str, pod: &str, path: &str) -> String {
    exec(ns, pod, &["stat", "-L", "-c", "%a", path])
        .trim()
        .to_string()
}

#[test]
fn memory_empty_dir_is_a_sized_tmpfs_and_host_path_shares_files() {
    let ns = cluster().namespace("vol-mem");
    let host = tempfile::tempdir().expect("tempdir");
    // DirectoryOrCreate makes the missing directory on the node.
    let shared = host.path().join("shared");
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: mounts}}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "echo from-pod > /host/pod.txt; exec sleep 3600"]
    volumeMounts:
    - {{name: cache, mountPath: /cache}}
    - {{name: host, mountPath: /host}}
  volumes:
  - name: cache
    emptyDir: {{medium: Memory, sizeLimit: 24Mi}}
  - name: host
    hostPath: {{path: {}, type: DirectoryOrCreate}}
"#,
        shared.display()
    );
    apply(ns.name(), &manifest);
    wait_running(ns.name(), "mounts");

    let mounts = exec(ns.name(), "mounts", &["cat", "/proc/mounts"]);
    let cache = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/cache"))
        .unwrap_or_else(|| panic!("/cache is not a mount point:\n{mounts}"));
    let fields: Vec<&str> = cache.split_whitespace().collect();
    assert_eq!(fields[2], "tmpfs", "{cache}");
    // 24Mi = 24576 KiB, which the kernel prints as `size=24576k`.
    assert!(
        fields[3].split(',').any(|o| o == "size=24576k"),
        "tmpfs not sized by sizeLimit: {cache}"
    );
    exec(
        ns.name(),
        "mounts",
        &["sh", "-c", "echo in-memory > /cache/f && cat /cache/f"],
    );

    // The directory was created on the host, and files cross both ways.
    assert!(shared.is_dir(), "{} not created", shared.display());
    eventually(
        "the pod's file on the host",
        Duration::from_secs(20),
        || std::fs::read_to_string(shared.join("pod.txt")).is_ok_and(|s| s == "from-pod\n"),
    );
    std::fs::write(shared.join("host.txt"), "from-host").expect("write host file");
    assert_eq!(
        exec(ns.name(), "mounts", &["cat", "/host/host.txt"]),
        "from-host"
    );

    cluster().kubectl_ok(&[
        "delete",
        "pod",
        "mounts",
        "-n",
        ns.name(),
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    // hostPath data outlives the pod.
    assert!(shared.join("pod.txt").is_file());
}

#[test]
fn secret_volumes_honour_modes_and_items_and_projected_volumes_merge_sources() {
    let ns = cluster().namespace("vol-secret");
    // Modes are given in decimal so no YAML octal rules are involved:
    // 256 = 0400, 384 = 0600, 288 = 0440.
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {user: admin, password: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue, size: large}
---
apiVersion: v1
kind: Pod
metadata: {name: secrets, labels: {app: secrets}}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    volumeMounts:
    - {name: all, mountPath: /etc/all}
    - {name: picked, mountPath: /etc/picked}
    - {name: merged, mountPath: /etc/merged}
  volumes:
  - name: all
    secret: {secretName: creds, defaultMode: 256}
  - name: picked
    secret:
      secretName: creds
      defaultMode: 288
      items:
      - {key: password, path: nested/pw, mode: 384}
  - name: merged
    projected:
      defaultMode: 288
      sources:
      - configMap:
          name: settings
          items: [{key: color, path: config/color}]
      - secret:
          name: creds
          items: [{key: user, path: secret/user}]
      - downwardAPI:
          items:
          - {path: meta/name, fieldRef: {fieldPath: metadata.name}}
          - {path: meta/labels, fieldRef: {fieldPath: metadata.labels}}
"#,
    );
    wait_running(ns.name(), "secrets");
    let (n, p) = (ns.name(), "secrets");

    // Every key, with defaultMode.
    assert_eq!(exec(n, p, &["cat", "/etc/all/user"]), "admin");
    assert_eq!(exec(n, p, &["cat", "/etc/all/password"]), "s3cret");
    assert_eq!(mode(n, p, "/etc/all/user"), "400");
    assert_eq!(mode(n, p, "/etc/all/password"), "400");

    // Only the listed key, at its path, with the item's own mode.
    assert_eq!(exec(n, p, &["cat", "/etc/picked/nested/pw"]), "s3cret");
    assert_eq!(mode(n, p, "/etc/picked/nested/pw"), "600");
    let listed = exec(n, p, &["ls", "/etc/picked"]);
    let visible: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(visible, ["nested"], "unlisted keys leak: {listed}");

    // A projected volume merges its sources into one directory.
    assert_eq!(exec(n, p, &["cat", "/etc/merged/config/color"]), "blue");
    assert_eq!(exec(n, p, &["cat", "/etc/merged/secret/user"]), "admin");
    assert_eq!(exec(n, p, &["cat", "/etc/merged/meta/name"]), "secrets");
    assert_eq!(
        exec(n, p, &["cat", "/etc/merged/meta/labels"]),
        "app=\"secrets\""
    );
    for file in ["config/color", "secret/user", "meta/name"] {
        assert_eq!(
            mode(n, p, &format!("/etc/merged/{file}")),
            "440",
            "mode of {file}"
        );
    }
    let absent = cluster().kubectl(&["exec", "-n", n, p, "--", "cat", "/etc/merged/config/size"]);
    assert!(!absent.status.success(), "unlisted configMap key projected");
}

#[test]
fn downward_api_volume_files_follow_label_changes() {
    let ns = cluster().namespace("vol-downward");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: labelled
  labels: {app: web, tier: bronze}
  annotations: {note: hello}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    resources:
      limits: {cpu: 250m, memory: 48Mi}
    volumeMounts: [{name: info, mountPath: /etc/podinfo}]
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
      - {path: namespace, fieldRef: {fieldPath: metadata.namespace}}
      - path: mem_limit
        resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}
      - path: cpu_limit
        resourceFieldRef: {containerName: main, resource: limits.cpu, divisor: 1m}
"#,
    );
    wait_running(ns.name(), "labelled");
    let read = |file: &str| {
        exec(
            ns.name(),
            "labelled",
            &["cat", &format!("/etc/podinfo/{file}")],
        )
    };
    // One `key="value"` line per label, sorted by key.
    assert_eq!(read("labels"), "app=\"web\"\ntier=\"bronze\"");
    assert!(
        read("annotations").contains("note=\"hello\""),
        "{}",
        read("annotations")
    );
    assert_eq!(read("namespace"), ns.name());
    assert_eq!(read("mem_limit"), "48");
    assert_eq!(read("cpu_limit"), "250");

    cluster().kubectl_ok(&[
        "label",
        "pod",
        "labelled",
        "-n",
        ns.name(),
        "tier=gold",
        "--overwrite",
    ]);
    cluster().kubectl_ok(&["label", "pod", "labelled", "-n", ns.name(), "extra=yes"]);
    let mut last = String::new();
    let expected = "app=\"web\"\nextra=\"yes\"\ntier=\"gold\"";
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("labels file update", Duration::from_secs(40), || {
            let out = cluster().kubectl(&[
                "exec",
                "-n",
                ns.name(),
                "labelled",
                "--",
                "cat",
                "/etc/podinfo/labels",
            ]);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            last == expected
        });
    }));
    assert!(result.is_ok(), "labels file never updated; last: {last:?}");
}

#[test]
fn env_from_with_prefixes_and_resource_field_refs() {
    let ns = cluster().namespace("vol-env");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {MODE: fast, LEVEL: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {TOKEN: abc123}
---
apiVersion: v1
kind: Pod
metadata: {name: envy}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    resources:
      requests: {memory: 16Mi, cpu: 100m}
      limits: {memory: 64Mi, cpu: 500m}
    envFrom:
    - prefix: CFG_
      configMapRef: {name: app-config}
    - prefix: SEC_
      secretRef: {name: app-secret}
    env:
    # An explicit env var wins over one from envFrom.
    - {name: CFG_MODE, value: explicit}
    - name: MEM_LIMIT_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: MEM_REQUEST
      valueFrom: {resourceFieldRef: {resource: requests.memory}}
    - name: CPU_LIMIT_MILLIS
      valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
    - name: CPU_LIMIT
      valueFrom: {resourceFieldRef: {resource: limits.cpu}}
"#,
    );
    wait_running(ns.name(), "envy");
    let env = exec(ns.name(), "envy", &["env"]);
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not set; env:\n{env}"))
            .to_string()
    };
    assert_eq!(var("CFG_MODE"), "explicit");
    assert_eq!(var("CFG_LEVEL"), "3");
    assert_eq!(var("SEC_TOKEN"), "abc123");
    assert!(
        !env.lines()
            .any(|l| l.starts_with("MODE=") || l.starts_with("TOKEN=")),
        "unprefixed envFrom keys: {env}"
    );
    assert_eq!(var("MEM_LIMIT_MI"), "64");
    assert_eq!(var("MEM_REQUEST"), (16 * 1024 * 1024).to_string());
    assert_eq!(var("CPU_LIMIT_MILLIS"), "500");
    // Without a divisor (1), CPU rounds up to whole cores.
    assert_eq!(var("CPU_LIMIT"), "1");
}

#[test]
fn read_only_mounts_sub_paths_and_default_modes() {
    let ns = cluster().namespace("vol-subpath");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: files}
data: {app.conf: "key=value", other: "x"}
---
apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {token: t0k3n}
---
apiVersion: v1
kind: Pod
metadata: {name: layered}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "mkdir -p /data/sub && echo inner > /data/sub/file; exec sleep 3600"]
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: data, mountPath: /view, subPath: sub, readOnly: true}
    - {name: files, mountPath: /etc/app/app.conf, subPath: app.conf}
    - {name: files, mountPath: /etc/files}
    - {name: token, mountPath: /etc/token}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: files, configMap: {name: files}}
  - {name: token, secret: {secretName: token}}
"#,
    );
    wait_running(ns.name(), "layered");
    let (n, p) = (ns.name(), "layered");
    eventually("the subPath file", Duration::from_secs(20), || {
        let out = cluster().kubectl(&["exec", "-n", n, p, "--", "cat", "/view/file"]);
        String::from_utf8_lossy(&out.stdout) == "inner\n"
    });
    let write = cluster().kubectl(&["exec", "-n", n, p, "--", "touch", "/view/new"]);
    assert!(!write.status.success(), "a readOnly mount was writable");
    let err = String::from_utf8_lossy(&write.stderr);
    assert!(err.contains("Read-only file system"), "{err}");

    // A subPath of a configMap volume is a single file at the mount path.
    assert_eq!(exec(n, p, &["cat", "/etc/app/app.conf"]), "key=value");
    // Upstream's defaults: 0644 for configMap and secret files.
    assert_eq!(mode(n, p, "/etc/files/other"), "644");
    assert_eq!(mode(n, p, "/etc/token/token"), "644");
    // ConfigMap and secret volumes are read-only for the container.
    let write = cluster().kubectl(&["exec", "-n", n, p, "--", "touch", "/etc/files/new"]);
    assert!(!write.status.success(), "a configMap volume was writable");
}

#[test]
fn missing_volume_sources_block_the_pod_unless_optional() {
    let ns = cluster().namespace("vol-missing");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: blocked}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    volumeMounts: [{name: s, mountPath: /s}]
  volumes:
  - {name: s, secret: {secretName: not-yet}}
---
apiVersion: v1
kind: Pod
metadata: {name: optional}
spec:
  nodeName: NODE
  containers:
  - name: main
    image: IMAGE
    command: [sleep, "3600"]
    volumeMounts: [{name: s, mountPath: /s}, {name: c, mountPath: /c}]
  volumes:
  - {name: s, secret: {secretName: absent, optional: true}}
  - {name: c, configMap: {name: absent, optional: true}}
"#,
    );
    wait_running(ns.name(), "optional");
    // Optional and missing: an empty directory.
    for dir in ["/s", "/c"] {
        assert_eq!(exec(ns.name(), "optional", &["ls", dir]), "", "{dir}");
    }

    eventually("a FailedMount event", Duration::from_secs(30), || {
        event_reasons(ns.name(), "blocked")
            .iter()
            .any(|r| r == "FailedMount")
    });
    let pod = pod(ns.name(), "blocked");
    assert_eq!(pod["status"]["phase"], "Pending", "{}", pod["status"]);
    let waiting = &container_status(&pod, "main")["state"]["waiting"];
    assert_eq!(waiting["reason"], "ContainerCreating", "{}", pod["status"]);

    // Once the secret exists, the pod starts.
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Secret
metadata: {name: not-yet}
stringData: {k: v}
"#,
    );
    wait_running(ns.name(), "blocked");
    assert_eq!(exec(ns.name(), "blocked", &["cat", "/s/k"]), "v");
}

#[test]
fn fs_group_owns_written_volumes_and_joins_the_container_groups() {
    let ns = cluster().namespace("vol-fsgroup");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: grouped}
spec:
  nodeName: NODE
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "echo hi > /data/by-app; exec sleep 3600"]
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: creds, mountPath: /creds}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: creds, secret: {secretName: creds, defaultMode: 0400}}
"#,
    );
    wait_running(ns.name(), "grouped");
    let groups = exec(ns.name(), "grouped", &["id", "-G"]);
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"2000") && groups.contains(&"4000"),
        "{groups:?}"
    );
    let stat = |path: &str| {
        exec(
            ns.name(),
            "grouped",
            &["stat", "-L", "-c", "%a %u %g", path],
        )
        .trim()
        .to_string()
    };
    assert_eq!(stat("/data"), "2777 0 2000");
    eventually("the app's file", Duration::from_secs(10), || {
        stat("/data/by-app") == "644 1000 2000"
    });
    assert_eq!(stat("/creds/token"), "440 0 2000");
    // Readable through the group alone.
    assert_eq!(
        exec(ns.name(), "grouped", &["cat", "/creds/token"]),
        "s3cret"
    );
}

#[test]
fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
    let ns = cluster().namespace("vol-evict");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "dd if=/dev/zero of=/scratch/big bs=1M count=20 && exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - {name: scratch, emptyDir: {sizeLimit: 10Mi}}
"#,
    );
    let mut last = serde_json::Value::Null;
    let evicted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("the pod evicted", Duration::from_secs(60), || {
            last = pod(ns.name(), "hog");
            last["status"]["phase"] == "Failed"
        })
    }));
    assert!(evicted.is_ok(), "{:#}", last["status"]);
    assert_eq!(last["status"]["reason"], "Evicted");
    assert_eq!(
        last["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"10Mi\". "
    );
    assert!(event_reasons(ns.name(), "hog").contains(&"Evicted".to_string()));
    // Killed, not restarted.
    assert_eq!(container_status(&last, "main")["restartCount"], 0);
}
