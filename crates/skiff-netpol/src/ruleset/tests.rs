//! The planner, judged by what it lets through: [`Ruleset::allows`] walks
//! the planned table the way the kernel walks the rendered one (the
//! netns tests check that the two agree on real packets).

use serde_json::{Value, json};

use super::*;

const NODE: &str = "node-a";

/// A new connection through the planned table, as the `forward` chain
/// judges its first packet.
impl Ruleset {
    fn allows(&self, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
        let src: Ipv4Addr = src.parse().expect("src");
        let dst: Ipv4Addr = dst.parse().expect("dst");
        let passes = |map: &BTreeMap<Ipv4Addr, String>, pod: Ipv4Addr, other: Ipv4Addr| {
            let Some(chain) = map.get(&pod) else {
                return true;
            };
            let chain = self
                .chains
                .iter()
                .find(|c| &c.name == chain)
                .expect("mapped chain exists");
            chain.rules.iter().any(|rule| {
                let peer_ok = rule.peers.as_ref().is_none_or(|set| match self.set(set) {
                    SetElements::Addrs(addrs) => addrs.contains(other),
                    SetElements::Ports(_) => panic!("peer set {set} holds ports"),
                });
                let port_ok = match &rule.ports {
                    PortCond::Any => true,
                    PortCond::Protocol(p) => *p == proto,
                    PortCond::Ports(p, ranges) => {
                        *p == proto && ranges.iter().any(|&(a, b)| (a..=b).contains(&port))
                    }
                    PortCond::Named(set) => match self.set(set) {
                        SetElements::Ports(ports) => ports.contains(&(dst, proto, port)),
                        SetElements::Addrs(_) => panic!("port set {set} holds addresses"),
                    },
                };
                peer_ok && port_ok
            })
        };
        passes(&self.egress, src, dst) && passes(&self.ingress, dst, src)
    }

    fn set(&self, name: &str) -> &SetElements {
        &self
            .sets
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("set {name} is defined"))
            .elements
    }

    fn tcp(&self, src: &str, dst: &str, port: u16) -> bool {
        self.allows(src, dst, Protocol::Tcp, port)
    }
}

/// The cluster a test builds, planned for [`NODE`].
#[derive(Default, Clone)]
struct World {
    pods: Vec<Arc<Pod>>,
    namespaces: Vec<Arc<Namespace>>,
    policies: Vec<Arc<NetworkPolicy>>,
}

impl World {
    fn new() -> World {
        let mut world = World::default();
        world.namespace("default", json!({}));
        world
    }

    fn namespace(&mut self, name: &str, labels: Value) -> &mut World {
        self.namespaces
            .retain(|n| n.metadata.name.as_deref() != Some(name));
        self.namespaces.push(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("namespace"),
        ));
        self
    }

    /// A running pod on `node` with `labels`, at `ip`.
    fn pod_on(&mut self, node: &str, ns: &str, name: &str, ip: &str, labels: Value) -> &mut World {
        self.pod_json(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }))
    }

    fn pod(&mut self, ns: &str, name: &str, ip: &str, labels: Value) -> &mut World {
        self.pod_on(NODE, ns, name, ip, labels)
    }

    fn pod_json(&mut self, pod: Value) -> &mut World {
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods.retain(|p| {
            (&p.metadata.namespace, &p.metadata.name)
                != (&pod.metadata.namespace, &pod.metadata.name)
        });
        self.pods.push(Arc::new(pod));
        self
    }

    fn policy(&mut self, ns: &str, name: &str, spec: Value) -> &mut World {
        self.policies.retain(|p| {
            (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()) != (Some(ns), Some(name))
        });
        self.policies.push(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": spec,
            }))
            .expect("policy"),
        ));
        self
    }

    fn remove_policy(&mut self, ns: &str, name: &str) -> &mut World {
        self.policies.retain(|p| {
            (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()) != (Some(ns), Some(name))
        });
        self
    }

    fn plan(&self) -> Ruleset {
        Ruleset::plan(NODE, &self.pods, &self.namespaces, &self.policies)
    }
}

/// `web` (10.42.0.2, app=web), `front` (10.42.0.3, role=front) and `other`
/// (10.42.0.4) in `default`, all on this node.
fn three_pods() -> World {
    let mut w = World::new();
    w.pod("default", "web", "10.42.0.2", json!({"app": "web"}))
        .pod("default", "front", "10.42.0.3", json!({"role": "front"}))
        .pod("default", "other", "10.42.0.4", json!({}));
    w
}

const WEB: &str = "10.42.0.2";
const FRONT: &str = "10.42.0.3";
const OTHER: &str = "10.42.0.4";

#[test]
fn without_policies_everything_passes_and_nothing_is_mapped() {
    let plan = three_pods().plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert!(plan.tcp(WEB, "8.8.8.8", 443));
    assert_eq!(plan.isolated(), (0, 0));
    assert!(plan.chains.is_empty());
}

#[test]
fn default_deny_ingress_isolates_every_pod_of_the_namespace_only() {
    let mut w = three_pods();
    w.namespace("prod", json!({}))
        .pod("prod", "db", "10.42.0.9", json!({}))
        .policy(
            "default",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        );
    let plan = w.plan();
    assert!(!plan.tcp(FRONT, WEB, 80));
    assert!(!plan.tcp(WEB, OTHER, 22));
    assert!(!plan.allows("1.2.3.4", WEB, Protocol::Udp, 53));
    // Egress is not isolated, and `prod` has no policy.
    assert!(plan.tcp(WEB, "10.42.0.9", 5432));
    assert_eq!(plan.isolated(), (3, 0));
}

#[test]
fn allow_by_pod_label_lets_only_the_chosen_pods_in() {
    let mut w = three_pods();
    w.policy(
        "default",
        "web-from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert!(
        plan.allows(FRONT, WEB, Protocol::Udp, 9999),
        "no ports: every port and protocol"
    );
    assert!(!plan.tcp(OTHER, WEB, 80));
    assert!(!plan.tcp("192.168.1.1", WEB, 80));
    // Only web is isolated.
    assert!(plan.tcp(OTHER, FRONT, 80));
    assert_eq!(plan.isolated(), (1, 0));
}

#[test]
fn pod_selector_peers_stay_in_the_policy_namespace() {
    let mut w = three_pods();
    w.namespace("other-ns", json!({}))
        .pod("other-ns", "front", "10.42.0.20", json!({"role": "front"}))
        .policy(
            "default",
            "web-from-front",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}],
            }),
        );
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert!(!plan.tcp("10.42.0.20", WEB, 80));
}

#[test]
fn allow_by_namespace_label_admits_every_pod_there() {
    let mut w = three_pods();
    w.namespace("monitoring", json!({"team": "ops"}))
        .namespace("dev", json!({"team": "dev"}))
        .pod("monitoring", "prom", "10.42.1.5", json!({}))
        .pod_on(
            "node-b",
            "monitoring",
            "agent",
            "10.42.2.7",
            json!({"x": "y"}),
        )
        .pod("dev", "tool", "10.42.1.6", json!({}))
        .policy(
            "default",
            "from-ops",
            json!({
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}],
            }),
        );
    let plan = w.plan();
    assert!(plan.tcp("10.42.1.5", WEB, 80));
    assert!(
        plan.tcp("10.42.2.7", WEB, 80),
        "pods on other nodes are peers too"
    );
    assert!(!plan.tcp("10.42.1.6", WEB, 80));
    assert!(
        !plan.tcp(FRONT, WEB, 80),
        "not even the policy's own namespace"
    );
}

#[test]
fn namespace_name_label_is_always_there() {
    let mut w = three_pods();
    w.pod("unlisted", "x", "10.42.1.8", json!({})).policy(
        "default",
        "by-name",
        json!({
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "unlisted"}}}]}],
        }),
    );
    assert!(w.plan().tcp("10.42.1.8", WEB, 80));
}

#[test]
fn combined_selectors_need_both_namespace_and_pod_to_match() {
    let mut w = three_pods();
    w.namespace("monitoring", json!({"team": "ops"}))
        .pod("monitoring", "prom", "10.42.1.5", json!({"app": "prom"}))
        .pod(
            "monitoring",
            "grafana",
            "10.42.1.6",
            json!({"app": "grafana"}),
        )
        .pod("default", "prom", "10.42.0.7", json!({"app": "prom"}))
        .policy(
            "default",
            "from-ops-prom",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchLabels": {"team": "ops"}},
                    "podSelector": {"matchLabels": {"app": "prom"}},
                }]}],
            }),
        );
    let plan = w.plan();
    assert!(plan.tcp("10.42.1.5", WEB, 9090));
    assert!(
        !plan.tcp("10.42.1.6", WEB, 9090),
        "right namespace, wrong pod"
    );
    assert!(
        !plan.tcp("10.42.0.7", WEB, 9090),
        "right pod, wrong namespace"
    );
}

#[test]
fn ip_block_except_cuts_holes_but_other_peers_still_count() {
    let mut w = three_pods();
    w.policy(
        "default",
        "block",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [
                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"podSelector": {"matchLabels": {"role": "front"}}},
            ]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp("172.17.0.9", WEB, 80));
    assert!(plan.tcp("172.17.255.1", WEB, 80));
    assert!(!plan.tcp("172.17.1.9", WEB, 80));
    assert!(!plan.tcp("172.18.0.1", WEB, 80));
    assert!(plan.tcp(FRONT, WEB, 80));
}

#[test]
fn numeric_ports_and_ranges_per_protocol() {
    let mut w = three_pods();
    w.policy(
        "default",
        "ports",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [
                {"port": 80},
                {"protocol": "TCP", "port": 8000, "endPort": 8100},
                {"protocol": "UDP", "port": 53},
                {"protocol": "SCTP"},
            ]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp(OTHER, WEB, 80));
    assert!(plan.tcp(OTHER, WEB, 8000));
    assert!(plan.tcp(OTHER, WEB, 8050));
    assert!(plan.tcp(OTHER, WEB, 8100));
    assert!(!plan.tcp(OTHER, WEB, 8101));
    assert!(!plan.tcp(OTHER, WEB, 53));
    assert!(plan.allows(OTHER, WEB, Protocol::Udp, 53));
    assert!(!plan.allows(OTHER, WEB, Protocol::Udp, 80));
    assert!(plan.allows(OTHER, WEB, Protocol::Sctp, 1234));
}

#[test]
fn named_ingress_port_resolves_against_each_selected_pod() {
    let mut w = World::new();
    for (name, ip, port) in [("web-1", "10.42.0.2", 8080), ("web-2", "10.42.0.3", 9090)] {
        w.pod_json(json!({
            "metadata": {"namespace": "default", "name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": port},
                          {"name": "metrics", "containerPort": 9100, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }));
    }
    w.pod("default", "client", "10.42.0.9", json!({}));
    w.policy(
        "default",
        "named",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"port": "http"}, {"port": "metrics"}]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp("10.42.0.9", "10.42.0.2", 8080));
    assert!(
        !plan.tcp("10.42.0.9", "10.42.0.2", 9090),
        "web-1's http is 8080"
    );
    assert!(plan.tcp("10.42.0.9", "10.42.0.3", 9090));
    assert!(!plan.tcp("10.42.0.9", "10.42.0.3", 8080));
    // `metrics` is UDP on the pods, the policy asks for TCP: no match.
    assert!(!plan.tcp("10.42.0.9", "10.42.0.2", 9100));
    assert!(!plan.allows("10.42.0.9", "10.42.0.2", Protocol::Udp, 9100));
}

#[test]
fn named_egress_port_resolves_against_the_destination_pods() {
    let mut w = World::new();
    w.pod("default", "client", "10.42.0.9", json!({"app": "client"}));
    for (name, ip, node, port) in [
        ("db-1", "10.42.0.5", NODE, 5432),
        ("db-2", "10.42.3.5", "node-b", 6432),
    ] {
        w.pod_json(json!({
            "metadata": {"namespace": "default", "name": name, "labels": {"app": "db"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "pg", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }));
    }
    w.policy(
        "default",
        "client-to-db",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                        "ports": [{"port": "pg"}]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp("10.42.0.9", "10.42.0.5", 5432));
    assert!(
        plan.tcp("10.42.0.9", "10.42.3.5", 6432),
        "remote destination's own port"
    );
    assert!(!plan.tcp("10.42.0.9", "10.42.0.5", 6432));
    assert!(!plan.tcp("10.42.0.9", "8.8.8.8", 5432));
}

#[test]
fn egress_policy_blocks_a_destination_and_replies_are_not_judged_here() {
    let mut w = three_pods();
    w.policy(
        "default",
        "front-egress",
        json!({
            "podSelector": {"matchLabels": {"role": "front"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.0.2/32"]}}]}],
        }),
    );
    let plan = w.plan();
    assert!(!plan.tcp(FRONT, WEB, 80));
    assert!(plan.tcp(FRONT, OTHER, 80));
    assert!(!plan.tcp(FRONT, "1.1.1.1", 443));
    // Ingress to front is not isolated.
    assert!(plan.tcp(WEB, FRONT, 80));
    assert_eq!(plan.isolated(), (0, 1));
    // Replies pass the conntrack rule ahead of the maps.
    let text = plan.to_nft("t");
    let forward = text.split("chain forward").nth(1).expect("forward chain");
    let established = forward
        .find("ct state established,related accept")
        .expect("ct rule");
    assert!(established < forward.find("vmap @egress-pods").expect("egress dispatch"));
}

#[test]
fn egress_deny_all_with_empty_rule_list() {
    let mut w = three_pods();
    w.policy(
        "default",
        "no-egress",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": []}),
    );
    let plan = w.plan();
    assert!(!plan.tcp(WEB, FRONT, 80));
    assert!(!plan.tcp(WEB, "8.8.8.8", 53));
    assert!(plan.tcp(FRONT, WEB, 80));
}

#[test]
fn both_ends_must_agree() {
    let mut w = three_pods();
    w.policy(
        "default",
        "web-in",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}],
        }),
    )
    .policy(
        "default",
        "front-out",
        json!({"podSelector": {"matchLabels": {"role": "front"}}, "policyTypes": ["Egress"]}),
    );
    let plan = w.plan();
    assert!(
        !plan.tcp(FRONT, WEB, 80),
        "web's ingress allows it, front's egress does not"
    );
    w.policy(
        "default",
        "front-out",
        json!({
            "podSelector": {"matchLabels": {"role": "front"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 80}]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert!(!plan.tcp(FRONT, WEB, 81));
}

#[test]
fn policies_add_up() {
    let mut w = three_pods();
    w.policy(
        "default",
        "a",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}]}),
    )
    .policy(
        "default",
        "b",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 443}]}]}),
    );
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80), "from policy a");
    assert!(plan.tcp(OTHER, WEB, 443), "from policy b");
    assert!(!plan.tcp(OTHER, WEB, 80));
    assert!(plan.tcp(WEB, OTHER, 443));
    assert!(!plan.tcp(WEB, OTHER, 80));
}

#[test]
fn removing_the_policy_opens_the_pod_again() {
    let mut w = three_pods();
    w.policy("default", "deny", json!({"podSelector": {}}));
    assert!(!w.plan().tcp(FRONT, WEB, 80));
    w.remove_policy("default", "deny");
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert_eq!(plan, three_pods().plan());
}

#[test]
fn label_changes_move_pods_in_and_out_of_selection_and_peer_sets() {
    let mut w = three_pods();
    w.policy(
        "default",
        "web-from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}],
        }),
    );
    assert!(!w.plan().tcp(OTHER, WEB, 80));
    // `other` becomes a front: now a peer.
    w.pod("default", "other", OTHER, json!({"role": "front"}));
    assert!(w.plan().tcp(OTHER, WEB, 80));
    // `front` loses its label: no longer a peer.
    w.pod("default", "front", FRONT, json!({}));
    assert!(!w.plan().tcp(FRONT, WEB, 80));
    // `web` loses its label: no longer selected, open to all.
    w.pod("default", "web", WEB, json!({"app": "old"}));
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert_eq!(plan.isolated(), (0, 0));
}

#[test]
fn only_live_local_pods_with_an_address_are_policed() {
    let mut w = World::new();
    w.policy(
        "default",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    w.pod_on("node-b", "default", "remote", "10.42.3.2", json!({}));
    w.pod_json(json!({
        "metadata": {"namespace": "default", "name": "host"},
        "spec": {"nodeName": NODE, "hostNetwork": true, "containers": []},
        "status": {"phase": "Running", "podIP": "192.168.0.10"},
    }));
    w.pod_json(json!({
        "metadata": {"namespace": "default", "name": "done"},
        "spec": {"nodeName": NODE, "containers": []},
        "status": {"phase": "Succeeded", "podIP": "10.42.0.30"},
    }));
    w.pod_json(json!({
        "metadata": {"namespace": "default", "name": "pending"},
        "spec": {"nodeName": NODE, "containers": []},
        "status": {"phase": "Pending"},
    }));
    w.pod("default", "live", "10.42.0.31", json!({}));
    let plan = w.plan();
    assert_eq!(plan.isolated(), (1, 1));
    assert!(
        plan.ingress
            .contains_key(&"10.42.0.31".parse().expect("ip"))
    );
    assert!(
        plan.tcp("10.42.3.2", "192.168.0.10", 22),
        "host network is not policed"
    );
    assert!(
        plan.tcp("1.2.3.4", "10.42.0.30", 80),
        "finished pods are not policed"
    );
}

#[test]
fn finished_and_host_network_pods_are_not_peers() {
    let mut w = three_pods();
    w.pod_json(json!({
        "metadata": {"namespace": "default", "name": "done", "labels": {"role": "front"}},
        "spec": {"nodeName": NODE, "containers": []},
        "status": {"phase": "Failed", "podIP": "10.42.0.30"},
    }))
    .pod_json(json!({
        "metadata": {"namespace": "default", "name": "host", "labels": {"role": "front"}},
        "spec": {"nodeName": "node-b", "hostNetwork": true, "containers": []},
        "status": {"phase": "Running", "podIP": "192.168.0.11"},
    }))
    .policy(
        "default",
        "web-from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp(FRONT, WEB, 80));
    assert!(!plan.tcp("10.42.0.30", WEB, 80));
    assert!(!plan.tcp("192.168.0.11", WEB, 80));
}

#[test]
fn peers_matching_nothing_allow_nothing_but_still_isolate() {
    let mut w = three_pods();
    w.policy(
        "default",
        "nobody",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "ghost"}}}]}],
        }),
    );
    let plan = w.plan();
    assert!(!plan.tcp(FRONT, WEB, 80));
    assert!(plan.sets.is_empty(), "no empty peer set is rendered");
}

#[test]
fn empty_peer_and_whole_space_need_no_set() {
    let mut w = three_pods();
    w.policy(
        "default",
        "any",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 80}]}],
        }),
    );
    let plan = w.plan();
    assert!(plan.tcp("203.0.113.9", WEB, 80));
    assert!(!plan.tcp("203.0.113.9", WEB, 81));
    assert!(plan.sets.is_empty());
}

#[test]
fn pods_selected_by_the_same_policies_share_one_chain() {
    let mut w = World::new();
    w.policy("default", "web", json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]}],
    }));
    for i in 0..200u32 {
        let ip = format!("10.42.{}.{}", i / 100, i % 100 + 2);
        let app = if i % 2 == 0 { "web" } else { "client" };
        w.pod("default", &format!("p{i}"), &ip, json!({"app": app}));
    }
    let plan = w.plan();
    assert_eq!(plan.isolated(), (100, 0));
    assert_eq!(plan.chains.len(), 1);
    assert_eq!(plan.chains[0].rules.len(), 1);
    assert_eq!(plan.sets.len(), 1);
    assert!(plan.tcp("10.42.0.3", "10.42.0.2", 80));
    assert!(!plan.tcp("10.42.0.4", "10.42.0.2", 80));
    let text = plan.to_nft("skiff-netpol");
    assert_eq!(text.matches(" return comment").count(), 1);
}

#[test]
fn rendering_is_deterministic_whatever_the_input_order() {
    let mut w = three_pods();
    w.namespace("x", json!({"a": "b"}))
        .policy(
            "default",
            "p1",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 1}]}]}),
        )
        .policy(
            "x",
            "p2",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        )
        .policy(
            "default",
            "p0",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "egress": [{"to": [{"namespaceSelector": {}}]}]}),
        );
    let text = w.plan().to_nft("skiff-netpol");
    let mut reversed = w.clone();
    reversed.pods.reverse();
    reversed.policies.reverse();
    reversed.namespaces.reverse();
    assert_eq!(reversed.plan().to_nft("skiff-netpol"), text);
}

#[test]
fn text_replaces_the_table_in_one_transaction() {
    let mut w = three_pods();
    w.policy(
        "default",
        "web-from-front",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "front"}}}],
                         "ports": [{"port": 80}, {"port": 8000, "endPort": 8080}]}],
        }),
    );
    let text = w.plan().to_nft("my-table");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "table ip my-table",
            "delete table ip my-table",
            "table ip my-table {"
        ]
    );
    assert!(text.contains("\t\ttype filter hook forward priority filter; policy accept;\n"));
    assert!(text.contains("\t\t\t10.42.0.2 : jump ingress-0,\n"));
    assert!(text.contains(
        "ip saddr @np0-in0-peers meta l4proto tcp th dport { 80, 8000-8080 } return comment \"default/web-from-front ingress rule 0\"\n"
    ));
    assert!(text.contains("\t\t# default/web-from-front\n"));
    assert!(text.ends_with("}\n"));
}
