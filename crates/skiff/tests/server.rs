//! The `skiff server` process itself: its data directory, restarts, crashes and
//! authentication. Each test runs its own server, since it stops or inspects it.

use std::os::unix::fs::PermissionsExt;

use skiff_testing::{DEFAULT_TIMEOUT, TestCluster, output_with_timeout, tools};

fn start() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

#[test]
fn data_directory_is_private() {
    let cluster = start();
    let dir = cluster.data_dir();
    for file in [
        "tls/ca.key",
        "tls/server.key",
        "tls/admin.key",
        "token",
        "kubeconfig",
    ] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    for file in [
        "tls/ca.crt",
        "tls/server.crt",
        "tls/admin.crt",
        "db/skiff.redb",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    let (id, secret) = token.trim().split_once('.').expect("id.secret");
    assert_eq!((id.len(), secret.len()), (6, 16));
    assert!(cluster.log().contains(&format!(
        "export KUBECONFIG={}",
        cluster.kubeconfig().display()
    )));
}

#[test]
fn restart_keeps_pki_and_objects() {
    let mut cluster = start();
    let ca = std::fs::read(cluster.data_dir().join("tls/ca.crt")).unwrap();
    let token = std::fs::read(cluster.data_dir().join("token")).unwrap();
    cluster.kubectl_ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    let rv = cluster.kubectl_ok(&[
        "get",
        "cm",
        "kept",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);

    cluster.restart();
    assert_eq!(
        std::fs::read(cluster.data_dir().join("tls/ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read(cluster.data_dir().join("token")).unwrap(),
        token
    );
    let after = cluster.kubectl_ok(&[
        "get",
        "cm",
        "kept",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(after, rv);
    assert!(cluster.log().contains("shutting down"), "{}", cluster.log());
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut cluster = start();
    for i in 0..20 {
        cluster.kubectl_ok(&[
            "create",
            "configmap",
            &format!("c{i}"),
            "--from-literal=i={i}",
        ]);
    }
    cluster.kill9();
    cluster.restart();
    let names = cluster.kubectl_ok(&["get", "cm", "-o", "name"]);
    for i in 0..20 {
        assert!(
            names.lines().any(|l| l == format!("configmap/c{i}")),
            "c{i} lost:\n{names}"
        );
    }
    // And the server still accepts writes after the crash.
    cluster.kubectl_ok(&["create", "configmap", "after-crash"]);
}

/// GETs a protected and a public path without credentials; prints `path status`.
const ANONYMOUS_PROBE: &str = r#"
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), context=ctx)
for path in ("/api/v1/namespaces", "/readyz"):
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    print(path, response.status)
"#;

#[test]
fn clients_without_credentials_are_refused_and_the_token_is_accepted() {
    let cluster = start();
    let ca = cluster.data_dir().join("tls/ca.crt");

    // Anonymous: TLS without a client certificate is let in, the API refuses
    // the request. (kubectl would prompt for a password here, so use Python.)
    let mut command = std::process::Command::new(&tools().python);
    command
        .arg("-c")
        .arg(ANONYMOUS_PROBE)
        .arg(&ca)
        .arg(cluster.port().to_string());
    let out = output_with_timeout(command, None, DEFAULT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "/api/v1/namespaces 401\n/readyz 200\n");

    let dir = tempfile::tempdir().unwrap();
    let kubectl_with_token = |token: &str| {
        let mut command = std::process::Command::new(&tools().kubectl);
        command
            .env("KUBECONFIG", dir.path().join("none"))
            .args(["--server", &cluster.url(), "--certificate-authority"])
            .arg(&ca)
            .args(["--token", token, "get", "namespaces", "-o", "name"]);
        output_with_timeout(command, None, DEFAULT_TIMEOUT)
    };
    let token = std::fs::read_to_string(cluster.data_dir().join("token")).unwrap();
    let accepted = kubectl_with_token(token.trim());
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(stdout.lines().any(|l| l == "namespace/default"), "{stdout}");

    let refused = kubectl_with_token("abcdef.0123456789abcdef");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}
