//! What kubectl learns about the API: `api-resources`, `api-versions` and
//! `explain` (discovery and OpenAPI v3).

use crate::util::{cluster, table};

#[test]
fn api_resources_lists_built_in_types() {
    let out = cluster().kubectl_ok(&["api-resources"]);
    let rows = table(&out);
    assert_eq!(
        rows[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{out}"
    );
    let expect = [
        ["pods", "po", "v1", "true", "Pod"],
        ["configmaps", "cm", "v1", "true", "ConfigMap"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
        ["services", "svc", "v1", "true", "Service"],
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
    ];
    for row in expect {
        assert!(rows.iter().any(|r| r == &row), "missing {row:?} in:\n{out}");
    }
    // A resource without short names.
    assert!(
        rows.iter()
            .any(|r| r == &["secrets", "v1", "true", "Secret"]),
        "{out}"
    );

    let out = cluster().kubectl_ok(&["api-resources", "--namespaced=false", "-o", "name"]);
    let names: Vec<&str> = out.lines().collect();
    assert!(names.contains(&"namespaces"), "{out}");
    assert!(!names.contains(&"pods"), "{out}");

    let out = cluster().kubectl_ok(&["api-resources", "--api-group=apps", "-o", "wide"]);
    let rows = table(&out);
    assert_eq!(
        rows[0][..5],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(rows[0].contains(&"VERBS".to_string()), "{out}");
    let verbs_at = rows[0]
        .iter()
        .position(|c| c == "VERBS")
        .expect("VERBS column");
    let deployments = rows.iter().find(|r| r[0] == "deployments").expect(&out);
    let verbs: Vec<&str> = deployments[verbs_at].split(',').collect();
    for verb in [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ] {
        assert!(verbs.contains(&verb), "{verb} missing:\n{out}");
    }
}

#[test]
fn api_versions() {
    let out = cluster().kubectl_ok(&["api-versions"]);
    let versions: Vec<&str> = out.lines().collect();
    for v in ["v1", "apps/v1"] {
        assert!(versions.contains(&v), "{v} missing:\n{out}");
    }
}

#[test]
fn explain_reads_the_openapi_schema() {
    let out = cluster().kubectl_ok(&["explain", "deployment.spec"]);
    let header = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
    };
    assert_eq!(header("GROUP:"), "apps");
    assert_eq!(header("KIND:"), "Deployment");
    assert_eq!(header("VERSION:"), "v1");
    assert_eq!(header("FIELD:"), "spec <DeploymentSpec>");
    assert!(out.contains("DESCRIPTION:"), "{out}");
    for field in [
        "replicas\t<integer>",
        "selector\t<LabelSelector> -required-",
        "template\t<PodTemplateSpec> -required-",
    ] {
        assert!(out.contains(field), "missing {field:?} in:\n{out}");
    }

    let out = cluster().kubectl_ok(&["explain", "pods.spec.containers.image"]);
    assert!(out.contains("FIELD: image <string>"), "{out}");

    let err = cluster().kubectl_err(&["explain", "deployment.spec.nonexistent"]);
    assert!(err.contains("nonexistent"), "{err}");
}
