//! Image pulls from a real registry: Debian's distribution registry on
//! loopback over plain HTTP, holding the busybox image pushed with skopeo.
//! imagePullPolicy decides whether the node pulls; a registry that wants a
//! login is reached with the pod's imagePullSecrets.

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

/// The login of the authenticated registry, and its bcrypt hash in the
/// registry's htpasswd file (the only hash format the registry accepts).
const REGISTRY_USER: &str = "skiff";
const REGISTRY_PASSWORD: &str = "s3cret";
const REGISTRY_HTPASSWD: &str =
    "skiff:$2b$04$h6Nzsiez.32hlj9UwnHGbu/oJjLAtk1Ayfjd/xiHPgcdDIMX0TnFa";

/// Starts a registry; with `login`, every request needs HTTP basic auth as
/// REGISTRY_USER.
fn start_registry(login: bool) -> Registry {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = skiff_testing::free_port();
    let config = dir.path().join("config.yml");
    let mut text = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    );
    if login {
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{REGISTRY_HTPASSWD}\n")).expect("htpasswd");
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    std::fs::write(&config, text).expect("registry config");
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

/// Pushes the test image (the busybox archive the agent imports) to the
/// registry as `image`.
fn push_busybox(image: &str, creds: Option<&str>) {
    let archive = cluster().data_dir().join("agent/images/skiff-busybox.tar");
    let mut skopeo = Command::new("skopeo");
    skopeo.args(["copy", "--dest-tls-verify=false", "--quiet"]);
    if let Some(creds) = creds {
        skopeo.arg("--dest-creds").arg(creds);
    }
    let pushed = skopeo
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{image}"))
        .output()
        .expect("run skopeo");
    assert!(
        pushed.status.success(),
        "skopeo push failed: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
}

#[test]
fn pods_pull_from_a_plain_http_registry_per_pull_policy() {
    let registry = start_registry(false);
    wait_node_ready();
    let image = format!("127.0.0.1:{}/test/busybox:v1", registry.port);
    push_busybox(&image, None);

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

#[test]
fn image_pull_secrets_log_in_to_a_registry_that_wants_one() {
    let registry = start_registry(true);
    wait_node_ready();
    let server = format!("127.0.0.1:{}", registry.port);
    let image = format!("{server}/private/busybox:v1");
    push_busybox(
        &image,
        Some(&format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}")),
    );

    let ns = cluster().namespace("regauth");
    cluster().kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "-n",
        ns.name(),
        &format!("--docker-server={server}"),
        &format!("--docker-username={REGISTRY_USER}"),
        &format!("--docker-password={REGISTRY_PASSWORD}"),
    ]);
    cluster().kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "wrongcred",
        "-n",
        ns.name(),
        &format!("--docker-server={server}"),
        &format!("--docker-username={REGISTRY_USER}"),
        "--docker-password=not-the-password",
    ]);
    let pod = |name: &str, secret: Option<&str>| {
        let secrets = secret
            .map(|s| format!("  imagePullSecrets: [{{name: {s}}}]\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: NODE\n{secrets}  containers:\n  - {{name: main, image: \"{image}\", imagePullPolicy: Always, command: [sleep, \"3600\"]}}\n"
        )
    };
    apply(
        ns.name(),
        &[
            pod("with-secret", Some("regcred")),
            pod("anonymous", None),
            pod("wrong-password", Some("wrongcred")),
        ]
        .join("---\n"),
    );

    let pulled = wait_running(ns.name(), "with-secret");
    assert!(
        container_status(&pulled, "main")["imageID"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{pulled}"
    );
    for refused in ["anonymous", "wrong-password"] {
        let pod = wait_pod(ns.name(), refused, "ImagePullBackOff", |p| {
            container_status(p, "main")["state"]["waiting"]["reason"] == "ImagePullBackOff"
        });
        assert_eq!(pod["status"]["phase"], "Pending");
        let reasons = event_reasons(ns.name(), refused);
        assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r == "BackOff"), "{reasons:?}");
    }
}
