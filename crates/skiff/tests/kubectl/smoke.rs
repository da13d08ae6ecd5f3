//! The first thing a user does: is the server there, and does it look like Kubernetes?

use crate::util::{cluster, table};

#[test]
fn version_reports_server() {
    let out = cluster().kubectl_ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clientVersion"]["major"], "1", "{out}");
    assert_eq!(v["serverVersion"]["major"], "1", "{out}");
    let minor = v["serverVersion"]["minor"].as_str().unwrap_or_default();
    assert!(minor.starts_with("37"), "server minor version: {out}");
}

#[test]
fn built_in_namespaces_exist() {
    let out = cluster().kubectl_ok(&["get", "ns"]);
    let rows = table(&out);
    assert_eq!(rows[0], ["NAME", "STATUS", "AGE"], "{out}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let row = rows
            .iter()
            .find(|r| r[0] == ns)
            .unwrap_or_else(|| panic!("namespace {ns} missing:\n{out}"));
        assert_eq!(row[1], "Active", "{out}");
    }
}
