//! helm 4 against a Skiff server: install, upgrade and uninstall of a small
//! local chart. Release records are Secrets that helm writes as protobuf.

use std::path::Path;

use skiff_testing::tools;

use super::cluster;

fn helm(ns: &str, args: &[&str]) -> String {
    let mut command = cluster().command(&tools().helm);
    command.args(args).args(["--namespace", ns]);
    let output = skiff_testing::output_with_timeout(command, None, skiff_testing::DEFAULT_TIMEOUT);
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The greeting the chart's ConfigMap holds.
fn chart_greeting(ns: &str) -> String {
    cluster().kubectl_ok(&[
        "get",
        "configmap",
        "demo-config",
        "-n",
        ns,
        "-o",
        "jsonpath={.data.greeting}",
    ])
}

#[test]
fn install_upgrade_uninstall() {
    let cluster = cluster();
    let ns = cluster.namespace("helm");
    let ns = ns.name();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chart");
    let chart = chart.to_str().unwrap();

    helm(ns, &["install", "demo", chart]);
    let greeting = chart_greeting(ns);
    assert_eq!(greeting, "hello");
    let release = cluster.kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        ns,
        "-l",
        "owner=helm,name=demo",
        "-o",
        "jsonpath={.items[*].metadata.labels.status}",
    ]);
    assert_eq!(release, "deployed");
    let listed = helm(ns, &["list", "-o", "json"]);
    assert!(
        listed.contains("\"name\":\"demo\"") && listed.contains("\"revision\":\"1\""),
        "{listed}"
    );

    helm(
        ns,
        &[
            "upgrade",
            "demo",
            chart,
            "--set",
            "greeting=bonjour",
            "--set",
            "replicas=3",
        ],
    );
    let greeting = chart_greeting(ns);
    assert_eq!(greeting, "bonjour");
    let replicas = cluster.kubectl_ok(&[
        "get",
        "deployment",
        "demo-web",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "3");
    let history = helm(ns, &["history", "demo", "-o", "json"]);
    assert!(history.contains("\"revision\":2"), "{history}");

    helm(ns, &["uninstall", "demo"]);
    let left = cluster.kubectl_ok(&[
        "get",
        "configmaps,services,deployments,secrets",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/instance=demo",
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "objects left after uninstall");
    let releases =
        cluster.kubectl_ok(&["get", "secrets", "-n", ns, "-l", "owner=helm", "-o", "name"]);
    assert_eq!(releases.trim(), "", "release records left after uninstall");
}
