//! Service networking on real pods and real traffic: ClusterIP, NodePort and
//! LoadBalancer through the nftables proxy, the cluster DNS, Docker-links
//! environment variables, the ingress controller and NetworkPolicies.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_testing::{NODE_NAME, eventually};

use crate::util::{IMAGE, START_TIMEOUT, cluster, wait_node_ready, wait_running};

/// How long a rule, record or route may take to follow an API change.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);

/// A container that exits at once on SIGTERM.
const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]"#;

/// An HTTP server on 8080 answering with `$BODY` (the pod's name when unset),
/// on `/`, `/x/` and `/y/`; ready while /tmp/ready exists.
fn web_container(body: Option<&str>) -> String {
    let body = body.map_or("$(hostname)".to_string(), str::to_string);
    format!(
        r#"{{name: web, image: {IMAGE},
          command: ["sh", "-c", "for d in /www /www/x /www/y; do mkdir -p $d; echo {body} > $d/index.html; done; touch /tmp/ready; exec httpd -f -p 8080 -h /www"],
          ports: [{{containerPort: 8080, name: http}}],
          readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1, failureThreshold: 1}}}}"#
    )
}

/// A Deployment `name` of `replicas` web servers labelled `app=<name>`.
fn web_deployment(name: &str, replicas: u32, body: Option<&str>) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {container}
"#,
        container = web_container(body)
    )
}

/// A pod that only sleeps, for running clients with `kubectl exec`.
fn client_pod(name: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {IMAGE}, command: {SLEEPER}}}
"#
    )
}

fn apply(ns: &str, manifest: &str) {
    cluster().kubectl_stdin_ok(&["apply", "-n", ns, "-f", "-"], manifest);
}

fn rollout(ns: &str, deployment: &str) {
    let target = format!("deployment/{deployment}");
    cluster().kubectl_ok(&["rollout", "status", "-n", ns, &target, "--timeout=90s"]);
}

/// Runs `script` in the pod's first container; the exit status and stdout.
fn exec(ns: &str, pod: &str, script: &str) -> (bool, String) {
    let out = cluster().kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The bodies of `count` GETs of `url` from inside the pod (failed requests
/// give empty lines).
fn get_from_pod(ns: &str, pod: &str, url: &str, count: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq {count}); do timeout 3 wget -qO- {url} || echo; done 2>/dev/null");
    exec(ns, pod, &script)
        .1
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// One HTTP GET from the host with curl; the body, or `None` on failure.
fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "3"])
        .args(args)
        .output()
        .expect("curl runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The HTTP status code of a GET from the host (0 when nothing answered).
fn curl_status(args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The test node's InternalIP.
fn node_ip() -> String {
    let node = cluster().get_json(&["get", "node", NODE_NAME]);
    node["status"]["addresses"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .expect("the node has an InternalIP")
        .to_string()
}

fn pod_names(ns: &str, app: &str) -> BTreeSet<String> {
    let selector = format!("app={app}");
    cluster().get_json(&["get", "pods", "-n", ns, "-l", &selector])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn pod_ip(ns: &str, name: &str) -> String {
    let pod = wait_running(ns, name);
    pod["status"]["podIP"]
        .as_str()
        .expect("a running pod has an IP")
        .to_string()
}

fn service(ns: &str, name: &str) -> Value {
    cluster().get_json(&["get", "service", name, "-n", ns])
}

#[test]
fn services_spread_over_ready_replicas_by_cluster_ip_dns_and_node_port() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("svc");
    let ns = ns.name();
    apply(ns, &web_deployment("web", 3, None));
    apply(
        ns,
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#,
    );
    apply(ns, &client_pod("client", "role: client"));
    rollout(ns, "web");
    wait_running(ns, "client");
    let replicas = pod_names(ns, "web");
    assert_eq!(replicas.len(), 3, "{replicas:?}");

    let svc = service(ns, "web");
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("a ClusterIP");
    assert!(cluster_ip.starts_with("10.43."), "{cluster_ip}");
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("a nodePort");
    assert!((30000..=32767).contains(&node_port), "{node_port}");

    // By ClusterIP and by every DNS form, from a pod: all replicas answer.
    let fqdn = format!("web.{ns}.svc.cluster.local");
    let short_ns = format!("web.{ns}");
    for target in [cluster_ip, "web", short_ns.as_str(), fqdn.as_str()] {
        let url = format!("http://{target}/");
        let mut seen = BTreeSet::new();
        eventually(
            &format!("all replicas behind {url}"),
            FOLLOW_TIMEOUT,
            || {
                seen.extend(
                    get_from_pod(ns, "client", &url, 15)
                        .into_iter()
                        .filter(|b| !b.is_empty()),
                );
                seen == replicas
            },
        );
    }

    // Through the NodePort from the host.
    let node_url = format!("http://{}:{node_port}/", node_ip());
    let mut seen = BTreeSet::new();
    eventually("all replicas behind the NodePort", FOLLOW_TIMEOUT, || {
        seen.extend((0..10).filter_map(|_| curl(&[&node_url])));
        seen == replicas
    });

    // A replica that turns unready stops getting traffic.
    let unready = replicas.iter().next().expect("a replica").clone();
    let (removed, _) = exec(ns, &unready, "rm /tmp/ready");
    assert!(removed, "rm /tmp/ready in {unready}");
    eventually(
        &format!("{unready} out of the rotation"),
        FOLLOW_TIMEOUT,
        || {
            let bodies: Vec<String> = (0..20).filter_map(|_| curl(&[&node_url])).collect();
            bodies.len() == 20 && !bodies.contains(&unready)
        },
    );
}

#[test]
fn dns_resolves_services_headless_pods_statefulset_hostnames_and_external_names() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("dns");
    let ns = ns.name();
    apply(
        ns,
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, name: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 8080, name: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: upstream}}
spec:
  type: ExternalName
  externalName: web.{ns}.svc.cluster.local
---
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
      terminationGracePeriodSeconds: 1
      containers:
      - {container}
"#,
            container = web_container(None)
        ),
    );
    apply(ns, &client_pod("client", "role: client"));
    let web_ip = service(ns, "web")["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string();
    let db0 = pod_ip(ns, "db-0");
    let db1 = pod_ip(ns, "db-1");
    wait_running(ns, "client");

    let lookup = |name: &str| exec(ns, "client", &format!("nslookup {name}"));
    let expect = |name: String, addresses: &[&str]| {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("{name} → {addresses:?}"), FOLLOW_TIMEOUT, || {
                let (ok, out) = lookup(&name);
                last = out;
                ok && addresses.iter().all(|a| last.contains(a))
            })
        }));
        assert!(found.is_ok(), "nslookup {name}:\n{last}");
    };
    expect(format!("web.{ns}.svc.cluster.local"), &[&web_ip]);
    expect(format!("db.{ns}.svc.cluster.local"), &[&db0, &db1]);
    expect(format!("db-0.db.{ns}.svc.cluster.local"), &[&db0]);
    expect(format!("db-1.db.{ns}.svc.cluster.local"), &[&db1]);
    expect(
        format!("upstream.{ns}.svc.cluster.local"),
        &[&format!("web.{ns}.svc.cluster.local"), &web_ip],
    );
    expect(
        "kubernetes.default.svc.cluster.local".to_string(),
        &["10.43.0.1"],
    );

    // A name in the cluster domain that does not exist fails.
    let (ok, out) = lookup(&format!("missing.{ns}.svc.cluster.local"));
    assert!(!ok, "a missing service resolved:\n{out}");

    // The pod's resolver: the cluster DNS, the namespace's search list.
    let (_, resolv) = exec(ns, "client", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains(&format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local"
        )),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:5"), "{resolv}");

    // Services that existed before the pod are in its environment.
    let (_, env) = exec(ns, "client", "env");
    assert!(
        env.contains(&format!("WEB_SERVICE_HOST={web_ip}\n")),
        "{env}"
    );
    assert!(env.contains("WEB_SERVICE_PORT=80\n"), "{env}");
    assert!(
        env.contains(&format!("WEB_PORT_80_TCP=tcp://{web_ip}:80\n")),
        "{env}"
    );
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.43.0.1\n"), "{env}");
}

#[test]
fn ingress_routes_hosts_and_paths_over_http_and_https_and_follows_updates() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("ing");
    let ns = ns.name();
    let ports = c.agent_ports().expect("an agent cluster");
    apply(ns, &web_deployment("alpha", 1, Some("alpha")));
    apply(ns, &web_deployment("beta", 1, Some("beta")));
    apply(
        ns,
        r#"
apiVersion: v1
kind: Service
metadata: {name: alpha}
spec: {selector: {app: alpha}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: beta}
spec: {selector: {app: beta}, ports: [{port: 8000, targetPort: 8080, name: web}]}
"#,
    );

    // A certificate for a.example.test, served from a Secret.
    let dir = tempfile::tempdir().expect("a temp dir");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let openssl = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=a.example.test"])
        .args(["-addext", "subjectAltName=DNS:a.example.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    c.kubectl_ok(&[
        "create",
        "secret",
        "tls",
        "a-tls",
        "-n",
        ns,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let ingress = |y_backend: &str| {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: routes}}
spec:
  tls: [{{hosts: [a.example.test], secretName: a-tls}}]
  rules:
  - host: a.example.test
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: alpha, port: {{number: 80}}}}}}}}]
  - host: b.example.test
    http:
      paths:
      - {{path: /x, pathType: Prefix, backend: {{service: {{name: alpha, port: {{number: 80}}}}}}}}
      - {{path: /y/, pathType: Exact, backend: {{service: {{name: {y_backend}}}}}}}
"#
        )
    };
    apply(ns, &ingress("beta, port: {name: web}"));
    rollout(ns, "alpha");
    rollout(ns, "beta");

    let ip = node_ip();
    let http = |host: &str, path: &str| {
        let resolve = format!("{host}:{}:{ip}", ports.ingress_http);
        let url = format!("http://{host}:{}{path}", ports.ingress_http);
        curl(&["--resolve", &resolve, &url])
    };
    let https = |host: &str, path: &str| {
        let resolve = format!("{host}:{}:{ip}", ports.ingress_https);
        let url = format!("https://{host}:{}{path}", ports.ingress_https);
        curl(&[
            "--cacert",
            cert.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ])
    };
    eventually("the ingress routes", FOLLOW_TIMEOUT, || {
        http("a.example.test", "/").as_deref() == Some("alpha")
            && http("b.example.test", "/x/").as_deref() == Some("alpha")
            && http("b.example.test", "/y/").as_deref() == Some("beta")
    });
    assert_eq!(https("a.example.test", "/x/").as_deref(), Some("alpha"));
    // No rule for the host, or the path: 404 from the controller.
    let status = |host: &str, path: &str| {
        let resolve = format!("{host}:{}:{ip}", ports.ingress_http);
        let url = format!("http://{host}:{}{path}", ports.ingress_http);
        curl_status(&["--resolve", &resolve, &url])
    };
    assert_eq!(status("c.example.test", "/"), 404);
    assert_eq!(status("b.example.test", "/z/"), 404);

    // The load balancer address is the node's.
    eventually("the ingress status address", FOLLOW_TIMEOUT, || {
        let ing = c.get_json(&["get", "ingress", "routes", "-n", ns]);
        ing["status"]["loadBalancer"]["ingress"][0]["ip"] == ip.as_str()
    });

    // An update takes effect without a restart.
    apply(ns, &ingress("alpha, port: {number: 80}"));
    eventually("the updated route", FOLLOW_TIMEOUT, || {
        http("b.example.test", "/y/").as_deref() == Some("alpha")
    });
}

#[test]
fn network_policies_deny_by_default_allow_by_label_and_block_egress() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("netpol");
    let ns = ns.name();
    for (name, labels) in [("db", "app: db"), ("other-server", "app: other")] {
        apply(
            ns,
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {container}
"#,
                container = web_container(Some(name))
            ),
        );
    }
    apply(ns, &client_pod("frontend", "role: frontend"));
    apply(ns, &client_pod("intruder", "role: intruder"));
    let db = pod_ip(ns, "db");
    let other = pod_ip(ns, "other-server");
    wait_running(ns, "frontend");
    wait_running(ns, "intruder");
    let reaches = |from: &str, ip: &str| {
        let script = format!("timeout 3 wget -qO- http://{ip}:8080/");
        exec(ns, from, &script).0
    };
    let wait_for = |what: &str, expected: &[(&str, &str, bool)]| {
        eventually(what, FOLLOW_TIMEOUT, || {
            expected
                .iter()
                .all(|(from, to, allowed)| reaches(from, to) == *allowed)
        });
    };
    wait_for(
        "open traffic before any policy",
        &[("frontend", &db, true), ("intruder", &db, true)],
    );

    apply(
        ns,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
"#,
    );
    wait_for(
        "default deny",
        &[
            ("frontend", &db, false),
            ("intruder", &db, false),
            ("intruder", &other, true),
        ],
    );

    apply(
        ns,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-frontend}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}]
    ports: [{port: http}]
"#,
    );
    wait_for(
        "only the frontend allowed in",
        &[("frontend", &db, true), ("intruder", &db, false)],
    );

    // Relabelling the intruder lets it in too.
    c.kubectl_ok(&[
        "label",
        "pod",
        "intruder",
        "role=frontend",
        "--overwrite",
        "-n",
        ns,
    ]);
    wait_for("the relabelled pod allowed in", &[("intruder", &db, true)]);

    let egress = format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: frontend-egress}}
spec:
  podSelector: {{matchLabels: {{role: frontend}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [{other}/32]}}}}]
"#
    );
    apply(ns, &egress);
    wait_for(
        "egress to other-server blocked",
        &[("frontend", &other, false), ("frontend", &db, true)],
    );
}

#[test]
fn service_addresses_are_validated_and_never_shared() {
    let c = cluster();
    let ns = c.namespace("alloc");
    let ns = ns.name();
    let create = |name: &str, spec: &str| {
        let manifest =
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {spec}\n");
        c.kubectl_stdin(&["create", "-n", ns, "-f", "-"], &manifest)
    };
    let out = create("outside", "{clusterIP: 10.99.0.1, ports: [{port: 80}]}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is invalid"), "{stderr}");
    assert!(
        stderr.contains("does not match the current range"),
        "{stderr}"
    );

    assert!(
        create("first", "{clusterIP: 10.43.200.7, ports: [{port: 80}]}")
            .status
            .success()
    );
    let out = create("second", "{clusterIP: 10.43.200.7, ports: [{port: 80}]}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("already allocated"), "{stderr}");

    let node_port = "{type: NodePort, ports: [{port: 80, nodePort: 31777}]}";
    assert!(create("np1", node_port).status.success());
    let out = create("np2", node_port);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("already allocated"), "{stderr}");
    let out = create(
        "np3",
        "{type: NodePort, ports: [{port: 80, nodePort: 29999}]}",
    );
    assert!(!out.status.success());

    // The cluster DNS has its well-known address.
    let dns = c.get_json(&["get", "service", "kube-dns", "-n", "kube-system"]);
    assert_eq!(dns["spec"]["clusterIP"], "10.43.0.10");
}

#[test]
fn load_balancer_services_get_the_node_address() {
    wait_node_ready();
    let c = cluster();
    let ns = c.namespace("lb");
    let ns = ns.name();
    apply(ns, &web_deployment("web", 1, Some("balanced")));
    apply(
        ns,
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 18080, targetPort: 8080}]
"#,
    );
    let ip = node_ip();
    eventually("the LoadBalancer address", START_TIMEOUT, || {
        let table = c.kubectl_ok(&["get", "service", "web", "-n", ns]);
        table.contains(&ip)
    });
    rollout(ns, "web");
    let url = format!("http://{ip}:18080/");
    eventually(
        "traffic through the LoadBalancer address",
        FOLLOW_TIMEOUT,
        || curl(&[&url]).as_deref() == Some("balanced"),
    );
}

/// A host outside the cluster: a network namespace behind a veth pair, the
/// node's end on 198.51.100.1/30, serving `/cgi-bin/addr` (the client's
/// address as it sees it) with busybox httpd on 198.51.100.2:8080. Removed
/// on drop.
struct OutsideHost {
    netns: String,
    server: std::process::Child,
    _www: tempfile::TempDir,
}

impl OutsideHost {
    fn start() -> Self {
        let netns = format!("skiff-test-{}-out", std::process::id());
        let link = format!("skout{}", std::process::id() % 100_000);
        let www = tempfile::tempdir().expect("tempdir");
        let cgi = www.path().join("cgi-bin/addr");
        std::fs::create_dir_all(cgi.parent().expect("parent")).expect("cgi-bin");
        std::fs::write(
            &cgi,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
        )
        .expect("cgi script");
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        run(&["netns", "add", &netns]);
        let mut host = OutsideHost {
            netns: netns.clone(),
            server: Command::new("true").spawn().expect("placeholder"),
            _www: www,
        };
        run(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        run(&["addr", "add", "198.51.100.1/30", "dev", &link]);
        run(&["link", "set", &link, "up"]);
        run(&[
            "-n",
            &netns,
            "addr",
            "add",
            "198.51.100.2/30",
            "dev",
            "eth0",
        ]);
        run(&["-n", &netns, "link", "set", "eth0", "up"]);
        std::process::Command::new("chmod")
            .args(["+x"])
            .arg(&cgi)
            .status()
            .expect("chmod");
        host.server = Command::new("ip")
            .args(["netns", "exec", &netns, "busybox", "httpd", "-f"])
            .args(["-p", "198.51.100.2:8080", "-h"])
            .arg(host._www.path())
            .spawn()
            .expect("start busybox httpd in the outside namespace");
        let address = std::net::SocketAddr::from(([198, 51, 100, 2], 8080));
        eventually("the outside server listening", FOLLOW_TIMEOUT, || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
        });
        host
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn pods_reach_outside_hosts_through_the_node_address_and_keep_theirs_inside() {
    wait_node_ready();
    let outside = OutsideHost::start();
    let ns = cluster().namespace("egress");
    let ns = ns.name();
    let echo_server = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: echo}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/addr && chmod +x /www/cgi-bin/addr && exec httpd -f -p 0.0.0.0:8080 -h /www"]
"#
    );
    apply(
        ns,
        &format!("{echo_server}---{}", client_pod("client", "app: client")),
    );
    wait_running(ns, "echo");
    wait_running(ns, "client");

    let seen_outside = get_from_pod(ns, "client", "http://198.51.100.2:8080/cgi-bin/addr", 1);
    assert_eq!(
        seen_outside,
        ["198.51.100.1"],
        "the outside host sees the node's address on its link"
    );
    let echo = format!("http://{}:8080/cgi-bin/addr", pod_ip(ns, "echo"));
    assert_eq!(
        get_from_pod(ns, "client", &echo, 1),
        [pod_ip(ns, "client")],
        "a pod sees another pod's own address"
    );
    drop(outside);
}
