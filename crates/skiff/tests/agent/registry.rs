//! Image pulls from a real registry: Debian's distribution registry on
//! loopback over plain HTTP, holding the busybox image pushed with skopeo.
//! imagePullPolicy decides whether the node pulls.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_testing::eventually;

use crate::util::{
    apply, cluster, container_status, event_reasons, wait_node_ready, wait_pod, wait_running,
};

/// A registry process on 127.0.0.1, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Registry {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = skiff_testing::free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry (scripts/install-test-tools.sh installs it)");
    let registry = Registry {
        child,
        port,
        _dir: dir,
    };
    eventually("the registry listening", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    registry
}

#[test]
fn pods_pull_from_a_plain_http_registry_per_pull_policy() {
    let registry = start_registry();
    wait_node_ready();
    let archive = cluster().data_dir().join("agent/images/skiff-busybox.tar");
    let image = format!("127.0.0.1:{}/test/busybox:v1", registry.port);
    let pushed = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{image}"))
        .output()
        .expect("run skopeo");
    assert!(
        pushed.status.success(),
        "skopeo push failed: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let ns = cluster().namespace("registry");
    apply(
        ns.name(),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: pulled}}
spec:
  nodeName: NODE
  containers:
  - {{name: main, image: "{image}", imagePullPolicy: Always, command: [sleep, "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  nodeName: NODE
  containers:
  - {{name: main, image: "127.0.0.1:{port}/test/absent:v1", imagePullPolicy: Never, command: [sleep, "3600"]}}
"#,
            port = registry.port
        ),
    );
    let pod = wait_running(ns.name(), "pulled");
    let status = container_status(&pod, "main");
    assert!(
        status["imageID"].as_str().is_some_and(|id| !id.is_empty()),
        "{status}"
    );
    let events = cluster().kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns.name(),
        "--field-selector",
        "involvedObject.name=pulled",
    ]);
    assert!(events.contains("Successfully pulled image"), "{events}");
    assert!(
        event_reasons(ns.name(), "pulled")
            .iter()
            .any(|r| r == "Pulling")
    );

    let never = wait_pod(ns.name(), "never", "ErrImageNeverPull", |p| {
        container_status(p, "main")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(never["status"]["phase"], "Pending");
}
