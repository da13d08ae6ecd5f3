//! Bad input gets upstream's errors: 422 Invalid with field causes, strict
//! field validation, 404 and 409.

use crate::util::cluster;

#[test]
fn invalid_name_is_422_with_the_rule() {
    let c = cluster();
    let ns = c.namespace("invalid-name");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n";
    let err = c.kubectl_stdin_err(&["create", "-n", ns.name(), "-f", "-"], manifest);
    assert!(
        err.contains(r#"The ConfigMap "Bad_Name" is invalid"#),
        "{err}"
    );
    assert!(
        err.contains(r#"metadata.name: Invalid value: "Bad_Name""#),
        "{err}"
    );
    assert!(err.contains("RFC 1123 subdomain"), "{err}");

    // The raw status is a 422 Invalid.
    let out = c.kubectl_stdin(&["create", "-n", ns.name(), "-f", "-", "-v=6"], manifest);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("422 Unprocessable Entity"), "{log}");
}

#[test]
fn missing_required_field_is_invalid() {
    let c = cluster();
    let ns = c.namespace("invalid-field");
    let manifest = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: noselector
spec:
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
      - name: c
        image: nginx
";
    let err = c.kubectl_stdin_err(&["create", "-n", ns.name(), "-f", "-"], manifest);
    assert!(
        err.contains(r#"The Deployment "noselector" is invalid"#),
        "{err}"
    );
    assert!(err.contains("spec.selector: Required value"), "{err}");
}

#[test]
fn unknown_field_is_rejected_under_strict_validation() {
    let c = cluster();
    let ns = c.namespace("strict");
    let manifest = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: typo
data:
  a: \"1\"
dataa:
  b: \"2\"
";
    // kubectl's default is --validate=strict, which it delegates to the server.
    let err = c.kubectl_stdin_err(&["create", "-n", ns.name(), "-f", "-"], manifest);
    assert!(err.contains(r#"unknown field "dataa""#), "{err}");
    assert!(
        !c.kubectl(&["get", "cm", "typo", "-n", ns.name()])
            .status
            .success()
    );

    // Warn: created, with a warning.
    let out = c.kubectl_stdin(
        &["create", "--validate=warn", "-n", ns.name(), "-f", "-"],
        manifest,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(r#"unknown field "dataa""#), "{stderr}");

    // Ignore: silently dropped.
    let manifest = manifest.replace("name: typo", "name: typo2");
    let out = c.kubectl_stdin(
        &["create", "--validate=false", "-n", ns.name(), "-f", "-"],
        &manifest,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

#[test]
fn not_found_and_already_exists() {
    let c = cluster();
    let ns = c.namespace("codes");
    let err = c.kubectl_err(&["get", "cm", "nope", "-n", ns.name()]);
    assert!(
        err.contains(r#"Error from server (NotFound): configmaps "nope" not found"#),
        "{err}"
    );

    c.kubectl_ok(&["create", "configmap", "dup", "-n", ns.name()]);
    let err = c.kubectl_err(&["create", "configmap", "dup", "-n", ns.name()]);
    assert!(err.contains(r#"configmaps "dup" already exists"#), "{err}");

    let err = c.kubectl_err(&["get", "cm", "-n", "no-such-namespace-anywhere", "x"]);
    assert!(err.contains("not found"), "{err}");

    let err = c.kubectl_err(&["get", "widgets"]);
    assert!(
        err.contains(r#"the server doesn't have a resource type "widgets""#),
        "{err}"
    );
}

#[test]
fn create_in_a_missing_namespace_fails() {
    let c = cluster();
    let err = c.kubectl_err(&["create", "configmap", "x", "-n", "no-such-namespace-here"]);
    assert!(
        err.contains(r#"namespaces "no-such-namespace-here" not found"#),
        "{err}"
    );
}
