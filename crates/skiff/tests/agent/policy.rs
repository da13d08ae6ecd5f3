//! Admission and disruption policy: ResourceQuota, LimitRange, and
//! PodDisruptionBudgets honoured by the eviction subresource.

use std::time::Duration;

use skiff_testing::eventually;

use crate::util::{IMAGE, START_TIMEOUT, cluster, wait_node_ready};

fn pod(name: &str, app: &str, cpu: Option<&str>) -> String {
    let resources = cpu.map_or_else(String::new, |cpu| {
        format!(", resources: {{requests: {{cpu: {cpu}}}, limits: {{cpu: {cpu}}}}}")
    });
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {IMAGE}, command: ["sleep", "3600"]{resources}}}
"#
    )
}

#[test]
fn resource_quota_refuses_what_exceeds_it_and_frees_on_delete() {
    let c = cluster();
    let ns = c.namespace("quota");
    let n = ns.name();
    c.kubectl_ok(&[
        "create",
        "quota",
        "q",
        "-n",
        n,
        "--hard=pods=2,requests.cpu=1",
    ]);
    eventually("the quota counted", Duration::from_secs(30), || {
        let q = c.get_json(&["get", "quota", "q", "-n", n]);
        q["status"]["used"]["pods"] == "0"
    });
    for name in ["a", "b"] {
        c.kubectl_stdin_ok(
            &["apply", "-n", n, "-f", "-"],
            &pod(name, "q", Some("100m")),
        );
    }
    let refused = c.kubectl_stdin_err(&["apply", "-n", n, "-f", "-"], &pod("c", "q", Some("100m")));
    assert!(
        refused.contains("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"),
        "{refused}"
    );
    let no_requests = c.kubectl_stdin_err(&["apply", "-n", n, "-f", "-"], &pod("d", "q", None));
    assert!(no_requests.contains("forbidden"), "{no_requests}");
    let described = c.kubectl_ok(&["describe", "quota", "q", "-n", n]);
    assert!(
        described.contains("pods") && described.contains("200m"),
        "{described}"
    );
    c.kubectl_ok(&["delete", "pod", "a", "-n", n, "--grace-period=0", "--force"]);
    eventually("the quota freed", Duration::from_secs(60), || {
        let q = c.get_json(&["get", "quota", "q", "-n", n]);
        q["status"]["used"]["pods"] == "1"
    });
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &pod("c", "q", Some("100m")));
}

#[test]
fn limit_range_defaults_and_bounds_containers() {
    let c = cluster();
    let ns = c.namespace("limits");
    let n = ns.name();
    let range = r#"
apiVersion: v1
kind: LimitRange
metadata: {name: cpu}
spec:
  limits:
  - type: Container
    max: {cpu: 500m}
    default: {cpu: 200m}
    defaultRequest: {cpu: 100m}
"#;
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], range);
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &pod("plain", "l", None));
    let plain = c.get_json(&["get", "pod", "plain", "-n", n]);
    let resources = &plain["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["cpu"], "200m", "{resources}");
    assert_eq!(resources["requests"]["cpu"], "100m", "{resources}");
    assert_eq!(plain["status"]["qosClass"], "Burstable");
    let refused = c.kubectl_stdin_err(&["apply", "-n", n, "-f", "-"], &pod("big", "l", Some("1")));
    assert!(
        refused.contains("maximum cpu usage per Container is 500m, but limit is 1"),
        "{refused}"
    );
}

#[test]
fn eviction_respects_the_pod_disruption_budget() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("pdb");
    let n = ns.name();
    for name in ["p1", "p2"] {
        c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &pod(name, "guarded", None));
    }
    c.kubectl_ok(&[
        "create",
        "pdb",
        "guard",
        "-n",
        n,
        "--selector=app=guarded",
        "--min-available=1",
    ]);
    eventually(
        "both pods running and one disruption allowed",
        START_TIMEOUT,
        || {
            let pdb = c.get_json(&["get", "pdb", "guard", "-n", n]);
            pdb["status"]["currentHealthy"] == 2 && pdb["status"]["disruptionsAllowed"] == 1
        },
    );
    let evict = |name: &str| {
        let body = format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}","namespace":"{n}"}}}}"#
        );
        let path = format!("/api/v1/namespaces/{n}/pods/{name}/eviction");
        c.kubectl_stdin(&["create", "--raw", &path, "-f", "-"], &body)
    };
    let first = evict("p1");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = evict("p2");
    assert!(
        !second.status.success(),
        "the budget must refuse the second eviction"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("disruption budget"), "{stderr}");
    let p2 = c.get_json(&["get", "pod", "p2", "-n", n]);
    assert!(
        p2["metadata"]["deletionTimestamp"].is_null(),
        "p2 must stay"
    );
}
