//! Service accounts on real pods: every pod gets its account's token, the
//! cluster CA and its namespace at the well-known path, and the token
//! authenticates kubectl and the Python client as the account until its pod
//! is gone.

use std::time::Duration;

use skiff_testing::eventually;

use crate::util::{IMAGE, apply, cluster, wait_node_ready, wait_running};

const ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn exec(ns: &str, pod: &str, script: &str) -> String {
    cluster().kubectl_ok(&["exec", "-n", ns, pod, "--", "sh", "-c", script])
}

/// kubectl with nothing but the server, the cluster CA and `token`.
fn kubectl_as(token: &str, args: &[&str]) -> std::process::Output {
    let ca = cluster().data_dir().join("tls/ca.crt");
    let mut command = std::process::Command::new(&skiff_testing::tools().kubectl);
    command
        .args(["--kubeconfig", "/dev/null", "--server", &cluster().url()])
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(args);
    skiff_testing::output_with_timeout(command, None, Duration::from_secs(30))
}

fn whoami(token: &str) -> Result<String, String> {
    let out = kubectl_as(
        token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn sleeper(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
{extra}
  containers:
  - {{name: main, image: {IMAGE}, command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}}
---
"#
    )
}

#[test]
fn pods_get_their_account_token_which_authenticates_until_the_pod_is_gone() {
    wait_node_ready();
    let ns = cluster().namespace("accounts");
    let ns = ns.name();
    apply(ns, &sleeper("reader", ""));
    let pod = wait_running(ns, "reader");
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        volumes.iter().any(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
                && v["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token"
        }),
        "{volumes:?}"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "default");

    let files = exec(ns, "reader", &format!("ls {ACCOUNT_DIR}"));
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>(),
        ["ca.crt", "namespace", "token"]
    );
    assert_eq!(
        exec(ns, "reader", &format!("cat {ACCOUNT_DIR}/namespace")),
        ns
    );
    let root_ca = cluster().get_json(&["get", "configmap", "kube-root-ca.crt", "-n", ns]);
    assert_eq!(
        exec(ns, "reader", &format!("cat {ACCOUNT_DIR}/ca.crt")),
        root_ca["data"]["ca.crt"].as_str().expect("ca.crt")
    );

    let token = exec(ns, "reader", &format!("cat {ACCOUNT_DIR}/token"));
    assert_eq!(
        whoami(&token).as_deref(),
        Ok(format!("system:serviceaccount:{ns}:default").as_str())
    );
    let listed = kubectl_as(&token, &["get", "configmaps", "-n", ns, "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("configmap/kube-root-ca.crt"),
        "{listed:?}"
    );

    // The Python client, configured with nothing but the token and the CA.
    let script = format!(
        r#"
import sys
from kubernetes import client
c = client.Configuration()
c.host = "{url}"
c.ssl_ca_cert = "{ca}"
c.api_key = {{"authorization": "Bearer " + sys.stdin.read().strip()}}
api = client.ApiClient(c)
review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
names = [m.metadata.name for m in client.CoreV1Api(api).list_namespaced_config_map("{ns}").items]
print(review.status.user_info.username, "kube-root-ca.crt" in names)
"#,
        url = cluster().url(),
        ca = cluster().data_dir().join("tls/ca.crt").display(),
    );
    let mut python = std::process::Command::new(&skiff_testing::tools().python);
    python.args(["-c", &script]);
    let out =
        skiff_testing::output_with_timeout(python, Some(token.as_bytes()), Duration::from_secs(60));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("system:serviceaccount:{ns}:default True"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The token is bound to its pod: gone with it.
    cluster().kubectl_ok(&["delete", "pod", "reader", "-n", ns]);
    eventually(
        "the pod-bound token refused",
        Duration::from_secs(30),
        || whoami(&token).is_err_and(|e| e.contains("Unauthorized")),
    );
}

#[test]
fn tokens_on_request_and_account_settings_for_pods() {
    wait_node_ready();
    let ns = cluster().namespace("tokens");
    let ns = ns.name();
    let short =
        cluster().kubectl_err(&["create", "token", "default", "-n", ns, "--duration", "5m"]);
    assert!(
        short.contains("may not specify a duration less than 10 minutes"),
        "{short}"
    );
    let token = cluster().kubectl_ok(&["create", "token", "default", "-n", ns]);
    assert_eq!(
        whoami(token.trim()).as_deref(),
        Ok(format!("system:serviceaccount:{ns}:default").as_str())
    );
    let other_audience = cluster().kubectl_ok(&[
        "create",
        "token",
        "default",
        "-n",
        ns,
        "--audience",
        "vault",
    ]);
    assert!(
        whoami(other_audience.trim()).is_err(),
        "a token for another audience"
    );

    let refused = cluster().kubectl_stdin_err(
        &["apply", "-n", ns, "-f", "-"],
        &sleeper("ghostly", "  serviceAccountName: ghost"),
    );
    assert!(
        refused.contains(&format!(
            "error looking up service account {ns}/ghost: serviceaccount \"ghost\" not found"
        )),
        "{refused}"
    );

    cluster().kubectl_stdin_ok(
        &["apply", "-n", ns, "-f", "-"],
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: puller}
automountServiceAccountToken: false
imagePullSecrets: [{name: regcred}]
"#,
    );
    apply(ns, &sleeper("pulling", "  serviceAccountName: puller"));
    let pod = wait_running(ns, "pulling");
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !volumes.iter().any(|v| v["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))),
        "automountServiceAccountToken: false on the account: {volumes:?}"
    );
}
