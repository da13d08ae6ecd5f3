//! Two real nodes: the server's own, and a `skiff agent` in a network
//! namespace standing in for a second host on the same link (a veth pair).
//! Pods on different nodes reach each other with their own addresses, a
//! Service spreads over both nodes, and a NetworkPolicy admits a peer on the
//! other node by its labels.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_testing::{NODE_NAME, TestCluster, eventually, free_port};

const IMAGE: &str = "docker.io/skiff/busybox:1.35";
const SECOND_NODE: &str = "node-two";
const SECOND_NODE_IP: &str = "192.168.231.2";
const TIMEOUT: Duration = Duration::from_secs(120);

/// The second host: a network namespace linked to this one by a veth pair
/// (this side 192.168.231.1/24), running `skiff agent`. It enters only the
/// network namespace (`nsenter --net`; `ip netns exec` would also remount
/// /sys and hide the cgroup mounts runc needs). On drop the agent is
/// stopped, its pods removed and the namespace deleted.
struct SecondHost {
    netns: String,
    bin: String,
    agent: Option<Child>,
    dir: tempfile::TempDir,
}

impl SecondHost {
    fn start(bin: &str, cluster: &TestCluster, server_ip: &str) -> Self {
        let netns = format!("skiff-test-{}-n2", std::process::id());
        let link = format!("skn{}", std::process::id() % 100_000);
        let dir = tempfile::Builder::new()
            .prefix("skiff-test-node2-")
            .tempdir()
            .expect("tempdir");
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &netns]);
        let mut host = SecondHost {
            netns: netns.clone(),
            bin: bin.to_string(),
            agent: None,
            dir,
        };
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["addr", "add", "192.168.231.1/24", "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        let cidr = format!("{SECOND_NODE_IP}/24");
        ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            "192.168.231.1",
        ]);

        let token =
            std::fs::read_to_string(cluster.data_dir().join("node-token")).expect("node-token");
        let server = format!("https://{server_ip}:{}", cluster.port());
        let log = std::fs::File::create(host.dir.path().join("agent.log")).expect("log");
        let agent = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["--", bin, "agent"])
            .args(["--server", &server, "--token", token.trim()])
            .arg("--data-dir")
            .arg(host.dir.path())
            .args([
                "--bind-address",
                SECOND_NODE_IP,
                "--node-ip",
                SECOND_NODE_IP,
            ])
            .args(["--node-name", SECOND_NODE, "--kubelet-port"])
            .arg(free_port().to_string())
            .args(["--bridge", &format!("skb{}", std::process::id() % 100_000)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start skiff agent in the second host's namespace");
        host.agent = Some(agent);
        host
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for SecondHost {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["--", &self.bin, "killall"])
            .arg("--data-dir")
            .arg(self.dir.path())
            .status();
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Pod `name` on `node`, serving its client's address (as it sees it) at
/// `/cgi-bin/addr` on port 8080.
fn echo_pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $HOSTNAME $REMOTE_ADDR\\n' > /www/cgi-bin/addr && chmod +x /www/cgi-bin/addr && exec httpd -f -p 0.0.0.0:8080 -h /www"]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
"#
    )
}

fn json(cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
    cluster.get_json(args)
}

fn pod_ip(cluster: &TestCluster, ns: &str, pod: &str) -> String {
    json(cluster, &["get", "pod", pod, "-n", ns, "-o", "json"])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `count` GETs of `url` from inside `pod`; a failed request is an empty line.
fn get_from(cluster: &TestCluster, ns: &str, pod: &str, url: &str, count: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq {count}); do timeout 3 wget -qO- {url} || echo; done 2>/dev/null");
    let out = cluster.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn pods_on_two_nodes_talk_with_their_own_addresses_through_services_and_policies() {
    let bin = env!("CARGO_BIN_EXE_skiff");
    let cluster = TestCluster::start_with_agent(bin);
    eventually("the server's node Ready", TIMEOUT, || {
        let out = cluster.kubectl(&["get", "node", NODE_NAME]);
        String::from_utf8_lossy(&out.stdout).contains(" Ready ")
    });
    let server_ip =
        json(&cluster, &["get", "node", NODE_NAME, "-o", "json"])["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
            .and_then(|a| a["address"].as_str())
            .expect("the server node's InternalIP")
            .to_string();
    let second = SecondHost::start(bin, &cluster, &server_ip);
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("the second node Ready", TIMEOUT, || {
            let out = cluster.kubectl(&["get", "node", SECOND_NODE]);
            String::from_utf8_lossy(&out.stdout).contains(" Ready ")
        })
    }));
    assert!(ready.is_ok(), "agent log:\n{}", second.log());

    let ns = cluster.namespace("nodes");
    let ns = ns.name();
    let manifest = [
        echo_pod("one", NODE_NAME, "app: echo, role: client"),
        echo_pod("two", SECOND_NODE, "app: echo, role: client"),
        echo_pod("stranger", SECOND_NODE, "app: other"),
    ]
    .concat()
        + r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
"#;
    cluster.kubectl_stdin_ok(&["apply", "-n", ns, "-f", "-"], &manifest);
    for pod in ["one", "two", "stranger"] {
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cluster.kubectl_ok(&[
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                "--timeout=120s",
                "pod",
                pod,
            ])
        }));
        assert!(waited.is_ok(), "pod {pod}; agent log:\n{}", second.log());
    }
    let (one, two) = (pod_ip(&cluster, ns, "one"), pod_ip(&cluster, ns, "two"));
    let pod_cidr = |node: &str| {
        json(&cluster, &["get", "node", node, "-o", "json"])["spec"]["podCIDR"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(pod_cidr(NODE_NAME), pod_cidr(SECOND_NODE));

    // Across nodes, in both directions, each side sees the other's pod IP.
    let url = |ip: &str| format!("http://{ip}:8080/cgi-bin/addr");
    assert_eq!(
        get_from(&cluster, ns, "one", &url(&two), 1),
        [format!("two {one}")]
    );
    assert_eq!(
        get_from(&cluster, ns, "two", &url(&one), 1),
        [format!("one {two}")]
    );

    // The Service spreads over the pods of both nodes, from either node.
    for client in ["one", "stranger"] {
        let answers: BTreeSet<String> =
            get_from(&cluster, ns, client, "http://echo/cgi-bin/addr", 30)
                .into_iter()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect();
        assert_eq!(
            answers,
            BTreeSet::from(["one".to_string(), "two".to_string()]),
            "from {client}"
        );
    }

    // A policy on "one" (server node) admits role=client peers only: "two"
    // on the other node by its labels, not "stranger" beside it.
    cluster.kubectl_stdin_ok(
        &["apply", "-n", ns, "-f", "-"],
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients-only}
spec:
  podSelector: {matchLabels: {app: echo}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
"#,
    );
    eventually("the policy enforced", TIMEOUT, || {
        get_from(&cluster, ns, "stranger", &url(&one), 1) == [String::new()]
    });
    assert_eq!(
        get_from(&cluster, ns, "two", &url(&one), 1),
        [format!("one {two}")]
    );
    drop(second);
}
