//! Static pods: a manifest file in the agent's `pod-manifests` directory runs
//! as a pod, mirrored in the API as `<name>-<node>`.

use std::time::Duration;

use skiff_testing::{NODE_NAME, eventually};

use crate::util::{IMAGE, cluster, wait_pod};

#[test]
fn a_manifest_file_runs_as_a_mirrored_pod() {
    let dir = cluster().data_dir().join("agent/pod-manifests");
    std::fs::create_dir_all(&dir).expect("manifest dir");
    let file = dir.join("static-web.yaml");
    let manifest = |greeting: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  namespace: default\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [sh, -c, \"echo {greeting}; exec sleep 3600\"]\n"
        )
    };
    std::fs::write(&file, manifest("first")).expect("write manifest");
    let mirror = format!("static-web-{NODE_NAME}");
    let pod = wait_pod("default", &mirror, "the mirror pod Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_eq!(
        annotations["kubernetes.io/config.mirror"],
        annotations["kubernetes.io/config.hash"]
    );
    let uid = pod["metadata"]["uid"].clone();

    // Deleted through the API, the mirror pod comes back.
    cluster().kubectl_ok(&["delete", "pod", &mirror, "--wait=true", "--timeout=60s"]);
    let back = wait_pod("default", &mirror, "the mirror pod recreated", |p| {
        p["metadata"]["uid"] != uid && p["status"]["phase"] == "Running"
    });

    // A changed manifest replaces the pod.
    std::fs::write(&file, manifest("second")).expect("rewrite manifest");
    wait_pod(
        "default",
        &mirror,
        "the pod replaced with the new spec",
        |p| {
            p["metadata"]["uid"] != back["metadata"]["uid"]
                && p["status"]["phase"] == "Running"
                && p["spec"]["containers"][0]["command"][2]
                    .as_str()
                    .is_some_and(|c| c.contains("second"))
        },
    );
    eventually("the new pod's logs", Duration::from_secs(30), || {
        let out = cluster().kubectl(&["logs", &mirror]);
        String::from_utf8_lossy(&out.stdout) == "second\n"
    });

    // Removing the file removes the pod.
    std::fs::remove_file(&file).expect("remove manifest");
    eventually("the mirror pod gone", Duration::from_secs(60), || {
        !cluster().kubectl(&["get", "pod", &mirror]).status.success()
    });
}
