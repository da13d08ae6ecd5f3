//! Real rules on real packets: pods are private network namespaces on a
//! bridge in a "node" namespace (br_netfilter on, as on a Skiff node), the
//! table is applied in the node namespace with the real `nft`, and TCP
//! connects from one pod to another succeed or time out as the policies say.
//!
//! Every name carries the test process id and a per-test tag, and [`Netns`]
//! deletes its namespace on drop, so a failing test leaves nothing behind
//! and parallel tests never meet.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::fixtures::{Collection, fake_api, namespace, pod, policy, send};
use crate::{NetpolConfig, Nft, NftCommand, render, run_with};

const NODE: &str = "node-a";
const TABLE: &str = "skiff-netpol";
/// How long a connect may take before it counts as blocked.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(700);

fn sh(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn add(name: String) -> Netns {
        sh("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// `ip -n <self> <args>`.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    /// Runs `f` on a thread inside this namespace; sockets it creates stay
    /// in the namespace wherever they are used later.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }

    /// A listener on every address of the namespace that accepts and
    /// closes connections (so the backlog never fills) until dropped.
    fn listen(&self, port: u16) -> Listener {
        let listener = self.enter(move || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }

    /// Whether a TCP connect from this namespace completes in time.
    fn connects(&self, to: Ipv4Addr, port: u16) -> bool {
        let addr = SocketAddr::from((to, port));
        self.enter(move || TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
    }
}

/// An accepting listener; dropping it closes the socket.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: the namespace may never have been created.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A node namespace with bridge `br0` (10.42.0.1/24) and one namespace per
/// pod address, each listening on the given ports.
struct Lab {
    /// Dropped first, so the namespaces go as soon as they are deleted.
    _listeners: Vec<Listener>,
    pods: Vec<Netns>,
    node: Netns,
}

impl Lab {
    fn new(tag: &str, pods: &[(&str, &[u16])]) -> Lab {
        let prefix = format!("skiff-test-{}-{tag}", std::process::id());
        let node = Netns::add(format!("{prefix}-node"));
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        node.ip(&["addr", "add", "10.42.0.1/24", "dev", "br0"]);
        node.ip(&["link", "set", "br0", "up"]);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &node.name,
                "sysctl",
                "-qw",
                "net.bridge.bridge-nf-call-iptables=1",
            ],
        );
        let mut lab = Lab {
            _listeners: Vec::new(),
            pods: Vec::new(),
            node,
        };
        for (i, (ip, ports)) in pods.iter().enumerate() {
            let pod = Netns::add(format!("{prefix}-p{i}"));
            let veth = format!("veth{i}");
            lab.node.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ]);
            lab.node.ip(&["link", "set", &veth, "master", "br0", "up"]);
            pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&["route", "add", "default", "via", "10.42.0.1"]);
            for port in *ports {
                lab._listeners.push(pod.listen(*port));
            }
            lab.pods.push(pod);
        }
        lab
    }

    fn nft(&self) -> NftCommand {
        NftCommand::new("nft", Some(self.node.name.clone()))
    }

    /// Whether pod `from` reaches `to:port`.
    fn reaches(&self, from: usize, to: &str, port: u16) -> bool {
        self.pods[from].connects(to.parse().expect("ip"), port)
    }
}

/// API objects, parsed, for [`render`].
#[derive(Default)]
struct Objects {
    pods: Vec<Arc<Pod>>,
    namespaces: Vec<Arc<Namespace>>,
    policies: Vec<Arc<NetworkPolicy>>,
}

impl Objects {
    fn new(pods: &[Value], namespaces: &[Value], policies: &[Value]) -> Objects {
        fn parse<K: serde::de::DeserializeOwned>(values: &[Value]) -> Vec<Arc<K>> {
            values
                .iter()
                .map(|v| Arc::new(serde_json::from_value(v.clone()).expect("object")))
                .collect()
        }
        Objects {
            pods: parse(pods),
            namespaces: parse(namespaces),
            policies: parse(policies),
        }
    }

    fn render(&self) -> String {
        render(TABLE, NODE, &self.pods, &self.namespaces, &self.policies)
    }
}

const WEB: &str = "10.42.0.2";
const FRONT: &str = "10.42.0.3";
const OTHER: &str = "10.42.0.4";

fn pods() -> Vec<Value> {
    vec![
        pod("default", "web", NODE, WEB, json!({"app": "web"})),
        pod("default", "front", NODE, FRONT, json!({"role": "front"})),
        pod("default", "other", NODE, OTHER, json!({})),
    ]
}

fn web_from_front_on_80() -> Value {
    policy(
        "default",
        "web-from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}],
                         "ports": [{"port": 80}]}],
        }),
    )
}

#[tokio::test]
async fn every_feature_renders_a_table_nft_accepts_and_replaces() {
    let lab = Lab::new("check", &[]);
    let mut named = pod("default", "web", NODE, WEB, json!({"app": "web"}));
    named["spec"]["containers"][0]["ports"] = json!([
        {"name": "http", "containerPort": 8080},
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "sig", "containerPort": 3868, "protocol": "SCTP"},
    ]);
    let objects = Objects::new(
        &[
            named,
            pod("default", "front", NODE, FRONT, json!({"role": "front"})),
            pod("prod", "db", "node-b", "10.42.1.9", json!({"app": "db"})),
        ],
        &[
            namespace("default", json!({})),
            namespace("prod", json!({"env": "prod"})),
        ],
        &[
            policy(
                "default",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ),
            policy(
                "default",
                "web",
                json!({
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"role": "front"}}},
                                  {"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.5.0/24", "172.20.0.0/16"]}}],
                         "ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"},
                                   {"protocol": "SCTP", "port": "sig"}, {"port": 9000, "endPort": 9100},
                                   {"port": 9050}, {"protocol": "UDP"}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}},
                                   "podSelector": {"matchLabels": {"app": "db"}}}]},
                    ],
                    "egress": [
                        {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]},
                        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]},
                        {"to": [{"podSelector": {}}]},
                    ],
                }),
            ),
        ],
    );
    let text = objects.render();
    let nft = lab.nft();
    nft.check(&text)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Applying twice proves the script replaces a table that exists.
    nft.apply(&text).await.expect("first apply");
    nft.apply(&text).await.expect("second apply");
    let listed = nft
        .run(&["list", "table", "ip", TABLE], None)
        .await
        .expect("list");
    assert!(listed.contains("10.42.0.2 : jump ingress-"), "{listed}");
    assert!(listed.contains("10.42.0.2 . tcp . 8080"), "{listed}");
    assert!(listed.contains("172.16.0.0-172.16.4.255"), "{listed}");

    // No policies: an empty table is valid too, and replaces the full one.
    let empty = Objects::new(&[], &[], &[]).render();
    nft.apply(&empty).await.expect("empty apply");
    let listed = nft
        .run(&["list", "table", "ip", TABLE], None)
        .await
        .expect("list");
    assert!(!listed.contains("jump"), "{listed}");
}

#[tokio::test]
async fn default_deny_then_allow_by_label_then_egress_block_on_real_traffic() {
    let lab = Lab::new(
        "traffic",
        &[(WEB, &[80, 81]), (FRONT, &[80]), (OTHER, &[80])],
    );
    let nft = lab.nft();
    let (web, front, other) = (0, 1, 2);
    let namespaces = [namespace("default", json!({}))];

    // No policy: everyone reaches everyone.
    nft.apply(&Objects::new(&pods(), &namespaces, &[]).render())
        .await
        .expect("apply");
    assert!(lab.reaches(front, WEB, 80));
    assert!(lab.reaches(other, WEB, 80));

    // Default deny for ingress: nothing reaches web, but the node does.
    let deny = policy(
        "default",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    nft.apply(&Objects::new(&pods(), &namespaces, std::slice::from_ref(&deny)).render())
        .await
        .expect("apply");
    assert!(!lab.reaches(front, WEB, 80));
    assert!(!lab.reaches(other, WEB, 80));
    assert!(!lab.reaches(web, FRONT, 80));
    assert!(
        lab.node.connects(WEB.parse().expect("ip"), 80),
        "node traffic always passes"
    );

    // Allow web from fronts on port 80 only.
    nft.apply(&Objects::new(&pods(), &namespaces, &[deny, web_from_front_on_80()]).render())
        .await
        .expect("apply");
    assert!(lab.reaches(front, WEB, 80));
    assert!(!lab.reaches(front, WEB, 81));
    assert!(!lab.reaches(other, WEB, 80));

    // Only an egress policy: front may reach the pod network except web.
    let front_egress = policy(
        "default",
        "front-egress",
        json!({
            "podSelector": {"matchLabels": {"role": "front"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.0.2/32"]}}]}],
        }),
    );
    nft.apply(&Objects::new(&pods(), &namespaces, &[front_egress]).render())
        .await
        .expect("apply");
    assert!(!lab.reaches(front, WEB, 80));
    assert!(lab.reaches(front, OTHER, 80));
    assert!(lab.reaches(other, WEB, 80));
    // web → front: front's replies go to web, which its egress excludes;
    // they pass as part of an allowed connection.
    assert!(lab.reaches(web, FRONT, 80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_follows_label_changes_on_real_traffic() {
    let lab = Lab::new("loop", &[(WEB, &[80]), (FRONT, &[]), (OTHER, &[])]);
    let api = fake_api(vec![
        (
            Collection::Namespaces,
            vec![namespace("default", json!({}))],
        ),
        (Collection::Pods, pods()),
        (Collection::Policies, vec![web_from_front_on_80()]),
    ]);
    let client = api.client();
    let config = NetpolConfig {
        netns: Some(lab.node.name.clone()),
        debounce: Duration::from_millis(50),
        ..NetpolConfig::new(NODE)
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let task = tokio::spawn(run_with(client, config, lab.nft(), shutdown.clone()));

    let (front, other) = (1, 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.reaches(other, WEB, 80) {
        assert!(Instant::now() < deadline, "the policy never took effect");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lab.reaches(front, WEB, 80));

    let changed = Instant::now();
    send(
        &api,
        Collection::Pods,
        "MODIFIED",
        pod("default", "other", NODE, OTHER, json!({"role": "front"})),
    )
    .await;
    while !lab.reaches(other, WEB, 80) {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "the label change never took effect"
        );
    }
    // Within a second of the change, give or take one blocked connect.
    assert!(
        changed.elapsed() < Duration::from_secs(1) + CONNECT_TIMEOUT,
        "took {:?}",
        changed.elapsed()
    );
    shutdown.cancel();
    task.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn refused_scripts_report_nft_stderr_as_retryable() {
    let lab = Lab::new("refuse", &[]);
    let error = lab
        .nft()
        .apply("table ip skiff-netpol { chain c { nonsense } }\n")
        .await
        .expect_err("refused");
    assert!(error.is_retryable());
    assert!(error.to_string().contains("Error"), "{error}");
    let error = NftCommand::new("/nonexistent/skiff-test/nft", None)
        .check("")
        .await
        .expect_err("no binary");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_large_cluster_renders_and_applies_quickly() {
    let lab = Lab::new("large", &[]);
    let mut pods = Vec::new();
    for i in 0..10_000u32 {
        // 250 pods here, the rest spread over other nodes.
        let (node, ip) = if i < 250 {
            (NODE.to_string(), format!("10.42.0.{}", i + 2))
        } else {
            (
                format!("node-{}", i / 250),
                format!("10.42.{}.{}", i / 250, i % 250 + 2),
            )
        };
        let labels = json!({"app": format!("app{}", i % 20), "tier": if i % 2 == 0 { "front" } else { "back" }});
        pods.push(pod(
            &format!("ns{}", i % 10),
            &format!("p{i}"),
            &node,
            &ip,
            labels,
        ));
    }
    let namespaces: Vec<Value> = (0..10)
        .map(|n| namespace(&format!("ns{n}"), json!({"team": format!("t{}", n % 3)})))
        .collect();
    let mut policies = Vec::new();
    for n in 0..10 {
        for a in 0..10 {
            policies.push(policy(
                &format!("ns{n}"),
                &format!("app{a}"),
                json!({
                    "podSelector": {"matchLabels": {"app": format!("app{a}")}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"tier": "front"}}}], "ports": [{"port": 8080}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}]},
                    ],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": [format!("10.42.{a}.0/24")]}}]}],
                }),
            ));
        }
    }
    let objects = Objects::new(&pods, &namespaces, &policies);
    let started = Instant::now();
    let text = objects.render();
    let rendered = started.elapsed();
    let nft = lab.nft();
    let started = Instant::now();
    nft.apply(&text).await.expect("apply");
    let applied = started.elapsed();
    eprintln!(
        "10k pods, 100 policies: {} bytes, render {rendered:?}, nft apply {applied:?}",
        text.len()
    );
    let listed = nft
        .run(&["list", "map", "ip", TABLE, "ingress-pods"], None)
        .await
        .expect("list");
    // Policies exist for app0..app9: half of the local pods are selected.
    let selected = (0..250).filter(|i| i % 20 < 10).count();
    assert_eq!(
        listed.matches(": jump ingress-").count(),
        selected,
        "{listed}"
    );
    assert!(
        rendered + applied < Duration::from_secs(5),
        "render {rendered:?}, apply {applied:?}"
    );
}
