//! The rendered table in real nftables, inside private network namespaces.
//!
//! Every test builds its own namespaces (names carry the process id and a
//! counter) and removes them when it ends, even on failure. They need root and
//! `ip netns`; without them they print why and pass.
//!
//! The traffic test wires a node namespace to client, backend and external
//! namespaces with veth pairs, loads the proxy's table into the node and sends
//! TCP and UDP through it with small Python socket scripts, whose replies name
//! the peer address the server saw (so masquerading is visible).

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use skiff_proxy::conntrack::IPPROTO_UDP;
use skiff_proxy::{
    Conntrack, Host, NetlinkConntrack, Proxier, ProxyConfig, SyncMode, SystemHost, render,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    /// A fresh namespace, or the reason there can be none here.
    fn new(role: &str) -> Result<Self, String> {
        let name = format!(
            "skiff-test-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        let ns = Self(name);
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        Ok(ns)
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }

    /// Runs a command in the namespace; panics if it fails.
    fn sh(&self, argv: &[&str]) -> String {
        let out = self.command(argv).output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Creates namespaces, or prints why the test cannot run and returns `None`.
fn namespaces<const N: usize>(roles: [&str; N]) -> Option<[Netns; N]> {
    for tool in ["nft", "python3"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping: {tool} is not installed");
            return None;
        }
    }
    let mut made = Vec::new();
    for role in roles {
        match Netns::new(role) {
            Ok(ns) => made.push(ns),
            Err(reason) => {
                eprintln!("skipping: ip netns is unavailable here ({reason})");
                return None;
            }
        }
    }
    made.try_into().ok()
}

/// Joins `a` and `b` with a veth pair, addressed `a_ip/24` and `b_ip/24`.
fn link(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    a.sh(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.0,
    ]);
    a.sh(&["ip", "addr", "add", &format!("{a_ip}/24"), "dev", a_if]);
    b.sh(&["ip", "addr", "add", &format!("{b_ip}/24"), "dev", b_if]);
    a.sh(&["ip", "link", "set", a_if, "up"]);
    b.sh(&["ip", "link", "set", b_if, "up"]);
}

/// TCP and UDP on one address and port; each reply is `NAME PEER-ADDRESS`.
/// TCP connections are answered, then echoed line by line until closed.
const SERVER: &str = r#"
import socket, sys, threading
name, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def conn(c, peer):
    with c:
        c.sendall(f"{name} {peer}\n".encode())
        for line in c.makefile():
            c.sendall(f"{name} echo {line}".encode())
def tcp(s):
    while True:
        c, a = s.accept()
        threading.Thread(target=conn, args=(c, a[0]), daemon=True).start()
def udp(u):
    while True:
        d, a = u.recvfrom(512)
        u.sendto(f"{name} {a[0]}\n".encode(), a)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((address, port)); s.listen(128)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((address, port))
threading.Thread(target=udp, args=(u,), daemon=True).start()
print("ready", flush=True)
tcp(s)
"#;

/// One request: prints the server's first line, `refused` or `timeout`.
const CLIENT: &str = r#"
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        print(s.makefile().readline().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.connect((host, port)); s.send(b"q"); print(s.recv(512).decode().strip())
except ConnectionRefusedError:
    print("refused")
except (socket.timeout, TimeoutError):
    print("timeout")
"#;

/// A long connection: prints the greeting, then echoes each stdin line over
/// the same connection.
const HOLD: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
f = s.makefile()
print(f.readline().strip(), flush=True)
for line in sys.stdin:
    s.sendall(line.encode()); print(f.readline().strip(), flush=True)
"#;

/// One UDP socket on a fixed local port: sends each stdin line as a
/// datagram and prints the reply, or `timeout` after a second. Unconnected,
/// so an ICMP error is a timeout too.
const UDP_HOLD: &str = r#"
import socket, sys
host, port, local = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(1)
u.bind(("0.0.0.0", local))
for line in sys.stdin:
    u.sendto(line.encode(), (host, port))
    try:
        print(u.recv(512).decode().strip(), flush=True)
    except (socket.timeout, TimeoutError):
        print("timeout", flush=True)
"#;

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(ns: &Netns, name: &str, address: &str, port: u16) -> Process {
    let mut child = ns
        .command(&["python3", "-c", SERVER, name, address, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "server {name} did not start");
    Process(child)
}

/// One request from `ns`; returns the reply and how long it took.
fn request(ns: &Netns, proto: &str, host: &str, port: u16) -> (String, Duration) {
    let started = Instant::now();
    let out = ns.sh(&["python3", "-c", CLIENT, proto, host, &port.to_string()]);
    (out.trim().to_owned(), started.elapsed())
}

fn reply(ns: &Netns, proto: &str, host: &str, port: u16) -> String {
    request(ns, proto, host, port).0
}

fn service(namespace: &str, name: &str, spec: Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name},
            "spec": spec,
        }))
        .unwrap(),
    )
}

/// A slice of ready endpoints `(address, node)` for one named port.
fn slice(
    namespace: &str,
    service: &str,
    ports: Value,
    endpoints: &[(&str, &str)],
) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": format!("{service}-x"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap(),
    )
}

fn node_config(ns: &Netns) -> ProxyConfig {
    ProxyConfig {
        node_name: "node-a".into(),
        node_ips: vec![Ipv4Addr::new(192, 168, 77, 1)],
        netns: Some(ns.0.clone()),
        ..ProxyConfig::default()
    }
}

/// Every feature at once: the table nft must accept.
fn everything() -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let mut lb: Service = (*service(
        "default",
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.43.0.60", "externalTrafficPolicy": "Local",
               "externalIPs": ["203.0.113.7"],
               "ports": [{"name": "http", "port": 80, "nodePort": 30090}]}),
    ))
    .clone();
    lb.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.168.77.1"}]}}))
            .unwrap(),
    );
    let services = vec![
        service(
            "default",
            "web",
            json!({"type": "NodePort", "clusterIP": "10.43.0.20",
                   "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080}]}),
        ),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.43.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
        ),
        service(
            "default",
            "sticky",
            json!({"clusterIP": "10.43.0.51", "sessionAffinity": "ClientIP",
                   "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "local",
            json!({"clusterIP": "10.43.0.52", "internalTrafficPolicy": "Local",
                   "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "sctp",
            json!({"clusterIP": "10.43.0.53", "ports": [{"name": "s", "port": 9, "protocol": "SCTP"}]}),
        ),
        service(
            "default",
            "empty",
            json!({"type": "NodePort", "clusterIP": "10.43.0.30",
                   "ports": [{"port": 80, "nodePort": 30099}]}),
        ),
        Arc::new(lb),
    ];
    let http = json!([{"name": "http", "port": 8080}]);
    let slices = vec![
        slice(
            "default",
            "web",
            http.clone(),
            &[("10.42.1.2", "node-a"), ("10.42.9.9", "node-b")],
        ),
        slice(
            "kube-system",
            "kube-dns",
            json!([{"name": "dns", "port": 1053, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 1053, "protocol": "TCP"}]),
            &[("192.168.77.1", "")],
        ),
        slice(
            "default",
            "sticky",
            http.clone(),
            &[("10.42.1.2", "node-a"), ("10.42.9.9", "node-b")],
        ),
        slice("default", "local", http.clone(), &[("10.42.9.9", "node-b")]),
        slice(
            "default",
            "sctp",
            json!([{"name": "s", "port": 9009, "protocol": "SCTP"}]),
            &[("10.42.1.2", "node-a")],
        ),
        slice(
            "default",
            "lb",
            http,
            &[("10.42.1.2", "node-a"), ("10.42.9.9", "node-b")],
        ),
    ];
    (services, slices)
}

/// `nft list table`, lines sorted, for comparing contents regardless of order.
fn listing(ns: &Netns, table: &str) -> Vec<String> {
    let mut lines: Vec<String> = ns
        .sh(&["nft", "list", "table", "ip", table])
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

#[test]
fn nft_accepts_the_full_table_and_incremental_updates_reach_the_same_state() {
    let Some([incremental, full]) = namespaces(["inc", "full"]) else {
        return;
    };
    let config = node_config(&incremental);
    let (services, slices) = everything();
    let rendered = render(&config, &services, &slices);
    let host = SystemHost::new(Some(incremental.0.clone()));
    host.check(&rendered.full_script())
        .expect("nft -c rejected the full table");

    // Load, then change a bit of everything and update incrementally.
    let mut proxier = Proxier::new(config.clone(), Arc::new(host));
    assert_eq!(
        proxier.sync(&services, &slices).unwrap().mode,
        SyncMode::Full
    );
    let mut changed_services = services.clone();
    changed_services.retain(|s| s.metadata.name.as_deref() != Some("sctp"));
    changed_services.push(service(
        "default",
        "new",
        json!({"clusterIP": "10.43.0.70", "sessionAffinity": "ClientIP",
               "ports": [{"name": "p", "port": 81, "protocol": "UDP"}]}),
    ));
    let mut changed_slices = slices.clone();
    changed_slices
        .retain(|s| s.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"] != "sticky");
    changed_slices.push(slice(
        "default",
        "sticky",
        json!([{"name": "http", "port": 8080}]),
        &[("10.42.1.3", "node-a")],
    ));
    changed_slices.push(slice(
        "default",
        "new",
        json!([{"name": "p", "port": 8181, "protocol": "UDP"}]),
        &[("10.42.1.4", "node-a")],
    ));
    let stats = proxier.sync(&changed_services, &changed_slices).unwrap();
    assert_eq!(stats.mode, SyncMode::Incremental);

    // The same desired state loaded whole elsewhere lists identically.
    let desired = render(&node_config(&full), &changed_services, &changed_slices);
    SystemHost::new(Some(full.0.clone()))
        .nft(&desired.full_script())
        .unwrap();
    assert_eq!(
        listing(&incremental, &config.table),
        listing(&full, &config.table)
    );

    // A later run replaces the table whatever is in it, stale chains included.
    incremental.sh(&[
        "nft",
        "add",
        "chain",
        "ip",
        &config.table,
        "svc-stale/left/tcp/over",
    ]);
    let mut restarted = Proxier::new(
        config.clone(),
        Arc::new(SystemHost::new(Some(incremental.0.clone()))),
    );
    assert_eq!(
        restarted
            .sync(&changed_services, &changed_slices)
            .unwrap()
            .mode,
        SyncMode::Full
    );
    assert_eq!(
        listing(&incremental, &config.table),
        listing(&full, &config.table)
    );
}

#[test]
fn endpoint_count_groups_come_and_go_incrementally() {
    let Some([incremental, full]) = namespaces(["grp-inc", "grp-full"]) else {
        return;
    };
    let config = node_config(&incremental);
    let services = vec![
        service(
            "default",
            "a",
            json!({"clusterIP": "10.43.0.80", "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "b",
            json!({"clusterIP": "10.43.0.81", "ports": [{"name": "http", "port": 80, "protocol": "UDP"}]}),
        ),
    ];
    let http = json!([{"name": "http", "port": 8080}]);
    let udp = json!([{"name": "http", "port": 8080, "protocol": "UDP"}]);
    let one_each = vec![
        slice("default", "a", http.clone(), &[("10.42.1.2", "node-a")]),
        slice("default", "b", udp.clone(), &[("10.42.1.3", "node-a")]),
    ];
    let three_each = vec![
        slice(
            "default",
            "a",
            http,
            &[
                ("10.42.1.2", "node-a"),
                ("10.42.1.4", "node-b"),
                ("10.42.1.5", "node-c"),
            ],
        ),
        slice(
            "default",
            "b",
            udp,
            &[
                ("10.42.1.3", "node-a"),
                ("10.42.1.6", "node-b"),
                ("10.42.1.7", "node-c"),
            ],
        ),
    ];
    let mut proxier = Proxier::new(
        config.clone(),
        Arc::new(SystemHost::new(Some(incremental.0.clone()))),
    );
    assert_eq!(
        proxier.sync(&services, &one_each).unwrap().mode,
        SyncMode::Full
    );
    // `pick-1` and its map go, `pick-3` and its map come, in one update; and
    // back again.
    for (slices, present, gone) in [
        (&three_each, "pick-3", "pick-1"),
        (&one_each, "pick-1", "pick-3"),
    ] {
        assert_eq!(
            proxier.sync(&services, slices).unwrap().mode,
            SyncMode::Incremental
        );
        let desired = render(&node_config(&full), &services, slices);
        SystemHost::new(Some(full.0.clone()))
            .nft(&desired.full_script())
            .unwrap();
        let listed = listing(&incremental, &config.table);
        assert_eq!(listed, listing(&full, &config.table));
        assert!(
            listed.contains(&format!("chain {present} {{")),
            "{listed:#?}"
        );
        assert!(!listed.iter().any(|l| l.contains(gone)), "{listed:#?}");
    }
}

#[test]
fn traffic_reaches_endpoints_through_the_proxy() {
    let Some([node, client, backend, external]) = namespaces(["node", "client", "backend", "ext"])
    else {
        return;
    };
    // client 10.42.0.2 and backend 10.42.1.2 are pods behind the node; the
    // node's own address is 192.168.77.1, facing an external host .2.
    // The node routes the hairpin back out of the interface it came in by
    // (a real node bridges it): without this it would also send an ICMP
    // redirect, which spends the per-host ICMP budget (one a second) that
    // the UDP refusal below needs.
    node.sh(&["sysctl", "-q", "-w", "net.ipv4.conf.all.send_redirects=0"]);
    node.sh(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.conf.default.send_redirects=0",
    ]);
    link(
        &node,
        "to-client",
        "10.42.0.1",
        &client,
        "eth0",
        "10.42.0.2",
    );
    link(
        &node,
        "to-backend",
        "10.42.1.1",
        &backend,
        "eth0",
        "10.42.1.2",
    );
    link(
        &node,
        "to-ext",
        "192.168.77.1",
        &external,
        "eth0",
        "192.168.77.2",
    );
    client.sh(&["ip", "route", "add", "default", "via", "10.42.0.1"]);
    backend.sh(&["ip", "route", "add", "default", "via", "10.42.1.1"]);
    external.sh(&["ip", "route", "add", "default", "via", "192.168.77.1"]);
    node.sh(&["ip", "route", "add", "default", "via", "192.168.77.2"]);

    let _web = serve(&backend, "web", "0.0.0.0", 8080);
    let _web2 = serve(&backend, "web2", "0.0.0.0", 8083);
    let _self = serve(&client, "self", "0.0.0.0", 8081);
    // A UDP server on the host must bind the endpoint address: bound to
    // 0.0.0.0, its replies to a pod would leave from the pod-facing address,
    // which conntrack cannot match to the DNATed request.
    let _dns = serve(&node, "dns", "192.168.77.1", 1053);

    let web_port = json!([{"name": "http", "port": 8080}]);
    let services = vec![
        service(
            "default",
            "web",
            json!({"type": "NodePort", "clusterIP": "10.43.0.20",
                   "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080}]}),
        ),
        service(
            "default",
            "web-local",
            json!({"type": "NodePort", "clusterIP": "10.43.0.21", "externalTrafficPolicy": "Local",
                   "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        ),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.43.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
        ),
        service(
            "default",
            "empty",
            json!({"clusterIP": "10.43.0.30", "ports": [
            {"name": "t", "port": 80}, {"name": "u", "port": 80, "protocol": "UDP"}]}),
        ),
        service(
            "default",
            "hairpin",
            json!({"clusterIP": "10.43.0.40", "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "spread",
            json!({"clusterIP": "10.43.0.50", "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "sticky",
            json!({"clusterIP": "10.43.0.51", "sessionAffinity": "ClientIP",
                   "ports": [{"name": "http", "port": 80}]}),
        ),
    ];
    let both = json!([{"name": "http", "port": 8080}]);
    let mut slices = vec![
        slice(
            "default",
            "web",
            web_port.clone(),
            &[("10.42.1.2", "node-a")],
        ),
        slice(
            "default",
            "web-local",
            web_port.clone(),
            &[("10.42.1.2", "node-a")],
        ),
        slice(
            "kube-system",
            "kube-dns",
            json!([{"name": "dns", "port": 1053, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 1053, "protocol": "TCP"}]),
            &[("192.168.77.1", "")],
        ),
        slice(
            "default",
            "hairpin",
            json!([{"name": "http", "port": 8081}]),
            &[("10.42.0.2", "node-a")],
        ),
    ];
    // Two endpoints on different ports of the backend: two slices.
    for name in ["spread", "sticky"] {
        slices.push(slice(
            "default",
            name,
            both.clone(),
            &[("10.42.1.2", "node-a")],
        ));
        let mut second = (*slice(
            "default",
            name,
            json!([{"name": "http", "port": 8083}]),
            &[("10.42.1.2", "node-a")],
        ))
        .clone();
        second.metadata.name = Some(format!("{name}-y"));
        slices.push(Arc::new(second));
    }

    let config = node_config(&node);
    let host = Arc::new(SystemHost::new(Some(node.0.clone())));
    let mut proxier = Proxier::new(config.clone(), host.clone());
    proxier.set_sysctls().unwrap();
    assert_eq!(
        node.sh(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(),
        "1"
    );
    proxier.sync(&services, &slices).unwrap();

    // ClusterIP from a pod: the pod's address is kept.
    assert_eq!(reply(&client, "tcp", "10.43.0.20", 80), "web 10.42.0.2");
    // From the node itself (outside the pod network): masqueraded.
    assert_eq!(reply(&node, "tcp", "10.43.0.20", 80), "web 10.42.1.1");
    // NodePort from outside with Cluster policy: masqueraded.
    assert_eq!(
        reply(&external, "tcp", "192.168.77.1", 30080),
        "web 10.42.1.1"
    );
    // NodePort with Local policy and a local endpoint: the client's address is kept.
    assert_eq!(
        reply(&external, "tcp", "192.168.77.1", 30081),
        "web 192.168.77.2"
    );
    // The DNS server on the host, by ClusterIP, over UDP and TCP, from a pod and from the host.
    assert_eq!(reply(&client, "udp", "10.43.0.10", 53), "dns 10.42.0.2");
    assert_eq!(reply(&client, "tcp", "10.43.0.10", 53), "dns 10.42.0.2");
    assert!(reply(&node, "udp", "10.43.0.10", 53).starts_with("dns "));
    assert!(reply(&node, "tcp", "10.43.0.10", 53).starts_with("dns "));
    // Hairpin: a pod reaching itself sees the node as the peer.
    assert_eq!(reply(&client, "tcp", "10.43.0.40", 80), "self 10.42.0.1");
    // No endpoints: refused at once, over TCP and UDP, from a pod and the host.
    for (ns, proto) in [(&client, "tcp"), (&client, "udp"), (&node, "tcp")] {
        let (answer, took) = request(ns, proto, "10.43.0.30", 80);
        assert_eq!(answer, "refused", "{proto} from {}", ns.0);
        assert!(took < Duration::from_secs(2), "refusal took {took:?}");
    }

    // Random choice spreads; affinity sticks.
    let spread: std::collections::BTreeSet<String> = (0..24)
        .map(|_| reply(&client, "tcp", "10.43.0.50", 80))
        .collect();
    assert_eq!(
        spread.into_iter().collect::<Vec<_>>(),
        ["web 10.42.0.2", "web2 10.42.0.2"]
    );
    let first = reply(&client, "tcp", "10.43.0.51", 80);
    for _ in 0..10 {
        assert_eq!(reply(&client, "tcp", "10.43.0.51", 80), first);
    }

    // An established connection survives an endpoint change and a restart of
    // the proxy (a full replacement of the table).
    let mut hold = Hold::open(&client, "10.43.0.20", 80);
    assert_eq!(hold.next(), "web 10.42.0.2");
    slices[0] = slice(
        "default",
        "web",
        json!([{"name": "http", "port": 8083}]),
        &[("10.42.1.2", "node-a")],
    );
    assert_eq!(
        proxier.sync(&services, &slices).unwrap().mode,
        SyncMode::Incremental
    );
    assert_eq!(reply(&client, "tcp", "10.43.0.20", 80), "web2 10.42.0.2");
    let mut restarted = Proxier::new(config, host);
    assert_eq!(
        restarted.sync(&services, &slices).unwrap().mode,
        SyncMode::Full
    );
    assert_eq!(hold.send("still there"), "web echo still there");
    assert_eq!(reply(&client, "tcp", "10.43.0.20", 80), "web2 10.42.0.2");

    // Endpoints gone: the next sync rejects.
    slices[0] = slice("default", "web", web_port, &[]);
    restarted.sync(&services, &slices).unwrap();
    assert_eq!(reply(&client, "tcp", "10.43.0.20", 80), "refused");
}

/// A long-lived TCP connection driven line by line.
struct Hold {
    _process: Process,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Hold {
    fn open(ns: &Netns, host: &str, port: u16) -> Self {
        Self::spawn(ns, &["python3", "-c", HOLD, host, &port.to_string()])
    }

    /// A UDP client that keeps its source port (so its packets stay in one
    /// conntrack entry), as a DNS resolver does.
    fn udp(ns: &Netns, host: &str, port: u16, local_port: u16) -> Self {
        Self::spawn(
            ns,
            &[
                "python3",
                "-c",
                UDP_HOLD,
                host,
                &port.to_string(),
                &local_port.to_string(),
            ],
        )
    }

    fn spawn(ns: &Netns, argv: &[&str]) -> Self {
        let mut child = ns
            .command(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            _process: Process(child),
            stdin,
            stdout,
        }
    }

    fn next(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn send(&mut self, text: &str) -> String {
        writeln!(self.stdin, "{text}").unwrap();
        self.stdin.flush().unwrap();
        self.next()
    }
}

/// The namespace's conntrack entries as the kernel prints them, one a line.
fn conntrack_lines(ns: &Netns, needle: &str) -> Vec<String> {
    ns.sh(&["cat", "/proc/net/nf_conntrack"])
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn stale_udp_conntrack_entries_are_deleted_when_endpoints_change() {
    let Some([node, client, backend, external]) =
        namespaces(["ct-node", "ct-client", "ct-backend", "ct-ext"])
    else {
        return;
    };
    link(
        &node,
        "to-client",
        "10.42.0.1",
        &client,
        "eth0",
        "10.42.0.2",
    );
    link(
        &node,
        "to-backend",
        "10.42.1.1",
        &backend,
        "eth0",
        "10.42.1.2",
    );
    backend.sh(&["ip", "addr", "add", "10.42.1.3/24", "dev", "eth0"]);
    link(
        &node,
        "to-ext",
        "192.168.77.1",
        &external,
        "eth0",
        "192.168.77.2",
    );
    client.sh(&["ip", "route", "add", "default", "via", "10.42.0.1"]);
    backend.sh(&["ip", "route", "add", "default", "via", "10.42.1.1"]);
    // Traffic to a Service IP without rules leaves towards the external
    // host, which drops it: a flow "cached to nowhere".
    node.sh(&["ip", "route", "add", "default", "via", "192.168.77.2"]);
    // Both endpoints stay up throughout: only conntrack decides which one a
    // client's packets reach.
    let _a = serve(&backend, "a", "10.42.1.2", 5353);
    let _b = serve(&backend, "b", "10.42.1.3", 5353);

    let services = [service(
        "default",
        "dns",
        json!({"clusterIP": "10.43.0.90", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    )];
    let dns_slice = |endpoint: &str| {
        slice(
            "default",
            "dns",
            json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]),
            &[(endpoint, "node-a")],
        )
    };
    let mut proxier = Proxier::new(
        node_config(&node),
        Arc::new(SystemHost::new(Some(node.0.clone()))),
    );
    proxier.set_sysctls().unwrap();
    proxier.sync(&[], &[]).unwrap();

    // Before the Service exists, the client's query goes nowhere, and its
    // entry stays un-NATed.
    let mut resolver = Hold::udp(&client, "10.43.0.90", 53, 40053);
    assert_eq!(resolver.send("q"), "timeout");
    assert_eq!(conntrack_lines(&node, "dst=10.43.0.90").len(), 1);

    // The Service appears with an endpoint: that entry is deleted, so the
    // same socket's next query is DNATed.
    let stats = proxier.sync(&services, &[dns_slice("10.42.1.2")]).unwrap();
    assert_eq!(stats.conntrack_deleted, 1);
    assert_eq!(resolver.send("q"), "a 10.42.0.2");
    // Our own listing sees the DNATed entry the kernel made.
    let listed = NetlinkConntrack::new(Some(node.0.clone()))
        .flows(IPPROTO_UDP)
        .unwrap();
    let ours: Vec<_> = listed
        .iter()
        .filter(|f| f.original.dst == Ipv4Addr::new(10, 43, 0, 90))
        .collect();
    assert_eq!(ours.len(), 1, "{listed:?}");
    assert_eq!(
        (
            ours[0].original.src,
            ours[0].original.src_port,
            ours[0].original.dst_port
        ),
        (Ipv4Addr::new(10, 42, 0, 2), 40053, 53)
    );
    assert_eq!(
        (ours[0].reply.src, ours[0].reply.src_port),
        (Ipv4Addr::new(10, 42, 1, 2), 5353)
    );

    // The endpoint is replaced (its server still answers): the entry to it
    // is deleted, and the client's next query reaches the new one.
    let stats = proxier.sync(&services, &[dns_slice("10.42.1.3")]).unwrap();
    assert_eq!(
        (stats.mode, stats.conntrack_deleted),
        (SyncMode::Incremental, 1)
    );
    assert!(conntrack_lines(&node, "dst=10.43.0.90").is_empty());
    assert_eq!(resolver.send("q"), "b 10.42.0.2");
    let entries = conntrack_lines(&node, "dst=10.43.0.90");
    assert_eq!(entries.len(), 1);
    assert!(entries[0].contains("src=10.42.1.3"), "{entries:?}");

    // Traffic outside any Service, over TCP and UDP, to the old endpoint.
    let _direct = serve(&backend, "direct", "10.42.1.2", 7000);
    assert_eq!(reply(&client, "udp", "10.42.1.2", 7000), "direct 10.42.0.2");
    assert_eq!(reply(&client, "tcp", "10.42.1.2", 7000), "direct 10.42.0.2");
    // The Service is deleted: its entries go, the direct ones stay.
    let stats = proxier.sync(&[], &[]).unwrap();
    assert_eq!(stats.conntrack_deleted, 1);
    assert!(conntrack_lines(&node, "dst=10.43.0.90").is_empty());
    let direct = conntrack_lines(&node, "dport=7000");
    assert_eq!(direct.len(), 2, "{direct:?}");
}
