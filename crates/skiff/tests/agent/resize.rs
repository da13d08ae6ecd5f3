//! In-place pod resize: `kubectl patch --subresource resize` changes a
//! running container's cgroup limits without a restart (or with one, when
//! its resizePolicy asks), plain pod updates may not touch resources, and a
//! resize that cannot fit the node stays pending as Infeasible.

use std::time::Duration;

use serde_json::Value;
use skiff_testing::eventually;

use crate::util::{IMAGE, apply, cluster, container_status, pod, wait_node_ready, wait_running};

const FOLLOW: Duration = Duration::from_secs(30);

fn cgroup(ns: &str, name: &str, file: &str) -> String {
    cluster()
        .kubectl_ok(&[
            "exec",
            "-n",
            ns,
            name,
            "--",
            "cat",
            &format!("/sys/fs/cgroup/{file}"),
        ])
        .trim()
        .to_string()
}

fn resize(ns: &str, name: &str, resources: &str) -> std::process::Output {
    cluster().kubectl(&[
        "patch",
        "pod",
        name,
        "-n",
        ns,
        "--subresource",
        "resize",
        "-p",
        &format!(r#"{{"spec":{{"containers":[{{"name":"main","resources":{resources}}}]}}}}"#),
    ])
}

fn resize_condition(pod: &Value, type_: &str) -> Option<Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

#[test]
fn running_containers_are_resized_in_place_through_the_resize_subresource() {
    wait_node_ready();
    let ns = cluster().namespace("resize");
    let ns = ns.name();
    let manifest = |name: &str, policy: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{cpu: 200m, memory: 128Mi}}}}
{policy}
---
"#
        )
    };
    apply(
        ns,
        &(manifest("inplace", "")
            + &manifest(
                "restarted",
                "    resizePolicy: [{resourceName: memory, restartPolicy: RestartContainer}]",
            )),
    );
    wait_running(ns, "inplace");
    wait_running(ns, "restarted");
    assert_eq!(
        cgroup(ns, "inplace", "memory/memory.limit_in_bytes"),
        "134217728"
    );

    // Plain updates may not change resources.
    let plain = cluster().kubectl(&[
        "patch",
        "pod",
        "inplace",
        "-n",
        ns,
        "-p",
        r#"{"spec":{"containers":[{"name":"main","resources":{"limits":{"cpu":"400m"}}}]}}"#,
    ]);
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("pod updates may not change fields"),
        "{plain:?}"
    );

    let grown = resize(
        ns,
        "inplace",
        r#"{"requests":{"cpu":"150m"},"limits":{"cpu":"300m","memory":"256Mi"}}"#,
    );
    assert!(grown.status.success(), "{grown:?}");
    eventually("the new limits in the cgroup", FOLLOW, || {
        cgroup(ns, "inplace", "memory/memory.limit_in_bytes") == "268435456"
            && cgroup(ns, "inplace", "cpu/cpu.cfs_quota_us") == "30000"
    });
    eventually("the resize reported", FOLLOW, || {
        let p = pod(ns, "inplace");
        container_status(&p, "main")["resources"]["limits"]["memory"] == "256Mi"
            && p["status"]["observedGeneration"] == p["metadata"]["generation"]
            && resize_condition(&p, "PodResizeInProgress").is_none()
    });
    let p = pod(ns, "inplace");
    assert_eq!(container_status(&p, "main")["restartCount"], 0);
    assert_eq!(
        container_status(&p, "main")["allocatedResources"]["cpu"],
        "150m"
    );

    let lowered = resize(
        ns,
        "inplace",
        r#"{"limits":{"cpu":"300m","memory":"100Mi"}}"#,
    );
    assert!(
        String::from_utf8_lossy(&lowered.stderr)
            .contains("memory limits cannot be decreased unless resizePolicy is RestartContainer"),
        "{lowered:?}"
    );

    let huge = resize(
        ns,
        "inplace",
        r#"{"requests":{"cpu":"1000"},"limits":{"cpu":"1000","memory":"256Mi"}}"#,
    );
    assert!(huge.status.success(), "{huge:?}");
    eventually("the impossible resize pending", FOLLOW, || {
        resize_condition(&pod(ns, "inplace"), "PodResizePending")
            .is_some_and(|c| c["reason"] == "Infeasible")
    });
    assert_eq!(cgroup(ns, "inplace", "cpu/cpu.cfs_quota_us"), "30000");

    let restarted = resize(
        ns,
        "restarted",
        r#"{"limits":{"cpu":"200m","memory":"96Mi"}}"#,
    );
    assert!(restarted.status.success(), "{restarted:?}");
    eventually("the container restarted with the new limit", FOLLOW, || {
        container_status(&pod(ns, "restarted"), "main")["restartCount"] == 1
            && cgroup(ns, "restarted", "memory/memory.limit_in_bytes") == "100663296"
    });
}
