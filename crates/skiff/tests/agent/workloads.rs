//! Workload controllers on real pods: the scheduler places them on the
//! agent's node, containerd runs them, and the controllers keep the counts.

use std::time::Duration;

use serde_json::Value;
use skiff_testing::eventually;

use crate::util::{IMAGE, START_TIMEOUT, cluster, wait_node_ready};

/// A container that exits at once on SIGTERM, so scale-downs are quick.
const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]"#;

/// The pods in `ns` with label `app=<app>`, as JSON.
fn pods(ns: &str, app: &str) -> Vec<Value> {
    let selector = format!("app={app}");
    cluster().get_json(&["get", "pods", "-n", ns, "-l", &selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

fn wait_running_count(ns: &str, app: &str, count: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let what = format!("{count} running pods of app={app}");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(&what, START_TIMEOUT, || {
            last = pods(ns, app);
            running(&last) == count && last.len() == count
        });
    }));
    if result.is_err() {
        let table = cluster().kubectl(&["get", "pods,rs,deploy", "-n", ns, "-o", "wide"]);
        panic!(
            "timed out waiting for {what}:\n{}",
            String::from_utf8_lossy(&table.stdout)
        );
    }
    last
}

#[test]
fn replicaset_keeps_its_replicas_and_scales() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("rs");
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &manifest);
    let first = wait_running_count(ns.name(), "web", 2);
    for pod in &first {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(pod["spec"]["nodeName"].is_string(), "scheduled: {pod}");
    }
    // Each writer is named as upstream names it: the controller manager
    // created the pod, the node agent wrote its status as the kubelet does.
    let name = first[0]["metadata"]["name"].as_str().unwrap();
    let pod = c.get_json(&["get", "pod", name, "-n", ns.name(), "--show-managed-fields"]);
    let managers: Vec<(&str, &str)> = pod["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or(""),
                m["subresource"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        managers.contains(&("kube-controller-manager", "")),
        "{managers:?}"
    );
    assert!(managers.contains(&("kubelet", "status")), "{managers:?}");
    eventually("RS status counts 2 ready", Duration::from_secs(30), || {
        let rs = c.get_json(&["get", "rs", "web", "-n", ns.name()]);
        rs["status"]["readyReplicas"] == 2
            && rs["status"]["availableReplicas"] == 2
            && rs["status"]["observedGeneration"] == rs["metadata"]["generation"]
    });

    // A deleted pod is replaced by a new one.
    let victim = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.kubectl_ok(&["delete", "pod", &victim, "-n", ns.name(), "--wait=false"]);
    eventually("a replacement pod", START_TIMEOUT, || {
        let now = pods(ns.name(), "web");
        running(&now) == 2 && now.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    });

    c.kubectl_ok(&["scale", "rs", "web", "-n", ns.name(), "--replicas=3"]);
    wait_running_count(ns.name(), "web", 3);
    c.kubectl_ok(&["scale", "rs", "web", "-n", ns.name(), "--replicas=1"]);
    wait_running_count(ns.name(), "web", 1);

    let events = c.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns.name(),
        "--field-selector",
        "involvedObject.kind=ReplicaSet",
    ]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"),
        "{events}"
    );
}

#[test]
fn replicaset_adopts_a_matching_orphan_instead_of_creating() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("adopt");
    let orphan = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: stray, labels: {{app: adopt}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &orphan);
    wait_running_count(ns.name(), "adopt", 1);
    let rs = format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: adopter}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: adopt}}}}
  template:
    metadata: {{labels: {{app: adopt}}}}
    spec:
      containers:
      - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", ns.name(), "-f", "-"], &rs);
    eventually("the orphan adopted", Duration::from_secs(30), || {
        let pod = c.get_json(&["get", "pod", "stray", "-n", ns.name()]);
        pod["metadata"]["ownerReferences"][0]["name"] == "adopter"
    });
    // Adopting satisfied the count: no second pod appears.
    std::thread::sleep(Duration::from_secs(2));
    let all = pods(ns.name(), "adopt");
    assert_eq!(all.len(), 1, "{all:?}");
}

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, annotations: {{kubernetes.io/change-cause: first}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {image}
        imagePullPolicy: IfNotPresent
        command: {SLEEPER}
        readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
"#
    )
}

fn rollout_status(ns: &str, what: &str) -> String {
    cluster().kubectl_ok(&["rollout", "status", what, "-n", ns, "--timeout=120s"])
}

#[test]
fn deployment_rolls_out_undoes_scales_and_cascades() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("deploy");
    let n = ns.name();
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &deployment("web", 3, IMAGE));
    let out = rollout_status(n, "deployment/web");
    assert!(out.contains("successfully rolled out"), "{out}");
    let first = wait_running_count(n, "web", 3);
    let hash = first[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("pod-template-hash label")
        .to_string();
    let rs_name = format!("web-{hash}");
    let rs = c.get_json(&["get", "rs", &rs_name, "-n", n]);
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");

    // An image that cannot be pulled: with maxUnavailable 0 the old pods all
    // stay, one surge pod is tried, and the rollout does not finish.
    c.kubectl_ok(&[
        "set",
        "image",
        "deployment/web",
        "main=docker.io/skiff/absent:0",
        "-n",
        n,
    ]);
    eventually("a surge pod of the new template", START_TIMEOUT, || {
        let all = pods(n, "web");
        all.len() == 4 && running(&all) >= 3
    });
    std::thread::sleep(Duration::from_secs(3));
    let all = pods(n, "web");
    assert_eq!(all.len(), 4, "maxSurge 1 allows one extra pod: {all:?}");
    let old_running = all
        .iter()
        .filter(|p| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
        .filter(|p| p["status"]["phase"] == "Running")
        .count();
    assert_eq!(old_running, 3, "maxUnavailable 0 keeps every old pod");

    // Undo goes back to revision 1's template, which becomes revision 3.
    c.kubectl_ok(&["rollout", "undo", "deployment/web", "-n", n]);
    rollout_status(n, "deployment/web");
    let after = wait_running_count(n, "web", 3);
    assert!(
        after
            .iter()
            .all(|p| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str()),
        "undo reuses the first ReplicaSet"
    );
    let rs = c.get_json(&["get", "rs", &rs_name, "-n", n]);
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let history = c.kubectl_ok(&["rollout", "history", "deployment/web", "-n", n]);
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // A restart rolls every pod to a new ReplicaSet.
    c.kubectl_ok(&["rollout", "restart", "deployment/web", "-n", n]);
    rollout_status(n, "deployment/web");
    let restarted = wait_running_count(n, "web", 3);
    assert!(
        restarted
            .iter()
            .all(|p| p["metadata"]["labels"]["pod-template-hash"] != hash.as_str()),
        "restart replaces the pods"
    );

    c.kubectl_ok(&["scale", "deployment/web", "-n", n, "--replicas=5"]);
    rollout_status(n, "deployment/web");
    wait_running_count(n, "web", 5);
    c.kubectl_ok(&["scale", "deployment/web", "-n", n, "--replicas=2"]);
    wait_running_count(n, "web", 2);
    let status = c.get_json(&["get", "deployment", "web", "-n", n]);
    assert_eq!(status["status"]["replicas"], 2, "{}", status["status"]);
    assert_eq!(status["status"]["updatedReplicas"], 2);
    assert_eq!(status["status"]["availableReplicas"], 2);

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    c.kubectl_ok(&["delete", "deployment", "web", "-n", n]);
    eventually("the ReplicaSets and pods gone", START_TIMEOUT, || {
        let rs = c.get_json(&["get", "rs", "-n", n]);
        rs["items"].as_array().is_some_and(Vec::is_empty) && pods(n, "web").is_empty()
    });
}

#[test]
fn orphan_cascade_leaves_the_pods_running() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("orphan");
    let n = ns.name();
    c.kubectl_stdin_ok(
        &["apply", "-n", n, "-f", "-"],
        &deployment("keep", 2, IMAGE),
    );
    rollout_status(n, "deployment/keep");
    let before = wait_running_count(n, "keep", 2);
    c.kubectl_ok(&["delete", "deployment", "keep", "-n", n, "--cascade=orphan"]);
    eventually("the Deployment gone", Duration::from_secs(30), || {
        !c.kubectl(&["get", "deployment", "keep", "-n", n])
            .status
            .success()
    });
    std::thread::sleep(Duration::from_secs(3));
    let after = pods(n, "keep");
    assert_eq!(running(&after), 2, "{after:?}");
    let names = |ps: &[Value]| {
        let mut v: Vec<String> = ps
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&before), names(&after));
    let rs = c.get_json(&["get", "rs", "-n", n]);
    let owners = &rs["items"][0]["metadata"]["ownerReferences"];
    assert!(
        owners.is_null() || owners.as_array().is_some_and(Vec::is_empty),
        "{owners}"
    );
}

#[test]
fn daemonset_runs_one_pod_on_every_node_and_rolls() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("ds");
    let n = ns.name();
    let manifest = |value: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {IMAGE}
        command: {SLEEPER}
        env: [{{name: VERSION, value: "{value}"}}]
"#
        )
    };
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest("1"));
    let out = rollout_status(n, "daemonset/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes = c.get_json(&["get", "nodes"])["items"]
        .as_array()
        .map_or(0, Vec::len);
    let first = wait_running_count(n, "agent", nodes);
    let ds = c.get_json(&["get", "ds", "agent", "-n", n]);
    assert_eq!(
        ds["status"]["desiredNumberScheduled"], nodes,
        "{}",
        ds["status"]
    );
    assert_eq!(ds["status"]["numberReady"], nodes);
    assert_eq!(first[0]["spec"]["nodeName"], skiff_testing::NODE_NAME);

    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest("2"));
    rollout_status(n, "daemonset/agent");
    let rolled = wait_running_count(n, "agent", nodes);
    assert_ne!(
        rolled[0]["metadata"]["name"], first[0]["metadata"]["name"],
        "the template change replaced the pod"
    );
    let revisions = c.get_json(&["get", "controllerrevisions", "-n", n]);
    assert_eq!(
        revisions["items"].as_array().map_or(0, Vec::len),
        2,
        "{revisions}"
    );
}

#[test]
fn statefulset_starts_in_order_and_scales_down_in_reverse() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("sts");
    let n = ns.name();
    let manifest = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {IMAGE}
        command: {SLEEPER}
        readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest);
    rollout_status(n, "statefulset/web");
    let pods = wait_running_count(n, "web", 3);
    let created = |name: &str| -> String {
        pods.iter()
            .find(|p| p["metadata"]["name"] == name)
            .map(|p| {
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no pod {name}"))
    };
    assert!(created("web-0") <= created("web-1") && created("web-1") <= created("web-2"));
    // OrderedReady: each pod was created only once its predecessor was Ready.
    let ready_at = |name: &str| -> String {
        let pod = c.get_json(&["get", "pod", name, "-n", n]);
        pod["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["lastTransitionTime"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(ready_at("web-0") <= created("web-1"));
    assert!(ready_at("web-1") <= created("web-2"));
    let pod = c.get_json(&["get", "pod", "web-1", "-n", n]);
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(pod["spec"]["hostname"], "web-1");
    assert_eq!(pod["spec"]["subdomain"], "web");

    // A deleted member comes back under its name.
    c.kubectl_ok(&["delete", "pod", "web-1", "-n", n, "--wait=false"]);
    eventually("web-1 recreated", START_TIMEOUT, || {
        let pod = c.get_json(&["get", "pods", "-n", n, "-l", "app=web"]);
        pod["items"].as_array().is_some_and(|items| {
            items.iter().any(|p| {
                p["metadata"]["name"] == "web-1"
                    && p["metadata"]["uid"] != pods[1]["metadata"]["uid"]
                    && p["status"]["phase"] == "Running"
            })
        })
    });
    rollout_status(n, "statefulset/web");

    c.kubectl_ok(&["scale", "sts", "web", "-n", n, "--replicas=1"]);
    let left = wait_running_count(n, "web", 1);
    assert_eq!(left[0]["metadata"]["name"], "web-0");
}

#[test]
fn statefulset_claims_come_from_its_volume_claim_templates() {
    let c = cluster();
    let ns = c.namespace("stspvc");
    let n = ns.name();
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - {{name: main, image: {IMAGE}, command: {SLEEPER}, volumeMounts: [{{name: data, mountPath: /data}}]}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"#
    );
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &manifest);
    eventually("a claim per replica", Duration::from_secs(30), || {
        let pvcs = c.get_json(&["get", "pvc", "-n", n]);
        let mut names: Vec<String> = pvcs["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names == ["data-db-0", "data-db-1"]
    });
    let pod = c.get_json(&["get", "pod", "db-0", "-n", n]);
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["name"] == "data" && v["persistentVolumeClaim"]["claimName"] == "data-db-0"),
        "{volumes:?}"
    );
}

#[test]
fn services_get_endpoints_and_slices_of_their_ready_pods() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("eps");
    let n = ns.name();
    c.kubectl_stdin_ok(&["apply", "-n", n, "-f", "-"], &deployment("api", 2, IMAGE));
    c.kubectl_ok(&[
        "expose",
        "deployment",
        "api",
        "-n",
        n,
        "--port=80",
        "--target-port=8080",
    ]);
    rollout_status(n, "deployment/api");
    let pods = wait_running_count(n, "api", 2);
    let mut ips: Vec<String> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    eventually(
        "an EndpointSlice with both pods",
        Duration::from_secs(30),
        || {
            let slices = c.get_json(&[
                "get",
                "endpointslices",
                "-n",
                n,
                "-l",
                "kubernetes.io/service-name=api",
            ]);
            let Some([slice]) = slices["items"].as_array().map(Vec::as_slice) else {
                return false;
            };
            let mut seen: Vec<String> = slice["endpoints"]
                .as_array()
                .map(|eps| {
                    eps.iter()
                        .filter(|e| e["conditions"]["ready"] == true)
                        .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            seen.sort();
            seen == ips && slice["ports"][0]["port"] == 8080
        },
    );
    eventually("Endpoints with both pods", Duration::from_secs(30), || {
        let eps = c.get_json(&["get", "endpoints", "api", "-n", n]);
        let mut seen: Vec<String> = eps["subsets"][0]["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["ip"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        seen.sort();
        seen == ips
    });
    let sa = c.get_json(&["get", "serviceaccount", "default", "-n", n]);
    assert_eq!(sa["metadata"]["name"], "default");
    let ca = c.get_json(&["get", "configmap", "kube-root-ca.crt", "-n", n]);
    assert!(
        ca["data"]["ca.crt"]
            .as_str()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")),
        "{ca}"
    );
}
