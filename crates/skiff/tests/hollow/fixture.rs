//! The cluster every test of this binary shares: one `skiff server` and one
//! `skiff agent --hollow` process per group of nodes, all started before the
//! first test runs.
//!
//! Each test owns one [`Group`] of nodes, labelled [`GROUP_LABEL`]`=<name>`,
//! and restricts its pods to it with a nodeSelector. Every node exists from
//! the start and none is ever deleted, so the node count in the scheduler's
//! `0/N nodes are available` messages is always [`total_nodes`].
//!
//! Tests that taint nodes or stop a node's agent change how *other* tests'
//! pods are refused by those nodes (an untolerated taint is reported before a
//! selector mismatch). They hold [`disturb_nodes`] until they have undone
//! the change; tests that assert a `FailedScheduling` message hold
//! [`steady_nodes`] while they do.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;
use skiff_testing::{TestCluster, TiedCommand, eventually};

/// The node label that names a node's group.
pub const GROUP_LABEL: &str = "test.skiff.dev/group";

/// How long the node lifecycle controller waits for a silent node
/// (`--node-monitor-grace-period`). Hollow nodes renew their Lease every
/// 10 s, as kubelets do; a grace period of one renewal interval declares
/// healthy nodes NotReady whenever a renewal lands a little later than the
/// previous one, so this is two intervals.
pub const GRACE_PERIOD_SECONDS: u64 = 20;

/// One `skiff agent --hollow` process: nodes `{prefix}-0` to
/// `{prefix}-{nodes - 1}`.
#[derive(Debug)]
pub struct Agent {
    /// `--hollow-prefix`.
    pub prefix: &'static str,
    /// `--hollow`.
    pub nodes: usize,
}

/// The nodes one test owns.
#[derive(Debug)]
pub struct Group {
    /// The value of [`GROUP_LABEL`] on its nodes.
    pub name: &'static str,
    /// The processes serving its nodes.
    pub agents: &'static [Agent],
}

impl Group {
    /// The node names, in agent order.
    pub fn nodes(&self) -> Vec<String> {
        self.agents
            .iter()
            .flat_map(|a| (0..a.nodes).map(move |i| format!("{}-{i}", a.prefix)))
            .collect()
    }

    /// `GROUP_LABEL: name`, for a pod's `nodeSelector` in YAML flow style.
    pub fn selector(&self) -> String {
        format!("{GROUP_LABEL}: {}", self.name)
    }
}

const fn group(name: &'static str, agents: &'static [Agent]) -> Group {
    Group { name, agents }
}

const fn agent(prefix: &'static str, nodes: usize) -> Agent {
    Agent { prefix, nodes }
}

/// Tolerations.
pub const TAINTS: Group = group("taints", &[agent("taints", 3)]);
/// nodeSelector and node affinity.
pub const NODE_AFFINITY: Group = group("nodeaff", &[agent("nodeaff", 3)]);
/// Required pod anti-affinity.
pub const ANTI_AFFINITY: Group = group("antiaff", &[agent("antiaff", 3)]);
/// Required pod affinity.
pub const POD_AFFINITY: Group = group("podaff", &[agent("podaff", 3)]);
/// Topology spread over zones: two nodes in each of three zones.
pub const SPREAD: Group = group("spread", &[agent("spread", 6)]);
/// A pod that fits nowhere.
pub const UNSCHEDULABLE: Group = group("unsched", &[agent("unsched", 2)]);
/// Preemption on a single node.
pub const PREEMPTION: Group = group("preempt", &[agent("preempt", 1)]);
/// Node lifecycle: one process per node, so that one node can be stopped.
pub const LIFECYCLE: Group = group(
    "lifecycle",
    &[agent("life-a", 1), agent("life-b", 1), agent("life-c", 1)],
);
/// DaemonSet placement.
pub const DAEMONSET: Group = group("daemon", &[agent("daemon", 4)]);
/// A large Deployment.
pub const SCALE: Group = group("scale", &[agent("scale", 5)]);

const GROUPS: [&Group; 10] = [
    &TAINTS,
    &NODE_AFFINITY,
    &ANTI_AFFINITY,
    &POD_AFFINITY,
    &SPREAD,
    &UNSCHEDULABLE,
    &PREEMPTION,
    &LIFECYCLE,
    &DAEMONSET,
    &SCALE,
];

/// How many nodes the cluster has.
pub fn total_nodes() -> usize {
    GROUPS.iter().map(|g| g.nodes().len()).sum()
}

/// How long the hollow nodes may take to register and become Ready.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared server and its hollow agents.
pub struct Fixture {
    cluster: TestCluster,
    /// The server's join token.
    token: String,
    /// The running agent of each prefix.
    agents: Mutex<HashMap<&'static str, Child>>,
}

/// The fixture, started on first use: the server, every group's agents, and
/// every node Ready and labelled with its group.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::start)
}

/// The shared cluster.
pub fn cluster() -> &'static TestCluster {
    &fixture().cluster
}

/// Whether tests change nodes other tests' pods are refused by.
static NODE_STATE: RwLock<()> = RwLock::new(());

/// Held while asserting a message that counts every node of the cluster: no
/// other test has a node tainted or stopped meanwhile.
pub fn steady_nodes() -> RwLockReadGuard<'static, ()> {
    NODE_STATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held from tainting or stopping a node until it is undone.
pub fn disturb_nodes() -> RwLockWriteGuard<'static, ()> {
    NODE_STATE.write().unwrap_or_else(|e| e.into_inner())
}

impl Fixture {
    fn start() -> Fixture {
        let grace = GRACE_PERIOD_SECONDS.to_string();
        let cluster = TestCluster::start_with_args(
            env!("CARGO_BIN_EXE_skiff"),
            &["--node-monitor-grace-period", &grace],
        );
        let token = std::fs::read_to_string(cluster.data_dir().join("node-token"))
            .expect("the server writes DATA_DIR/node-token")
            .trim()
            .to_string();
        let fixture = Fixture {
            cluster,
            token,
            agents: Mutex::new(HashMap::new()),
        };
        for agent in GROUPS.iter().flat_map(|g| g.agents) {
            fixture.start_agent(agent.prefix);
        }
        let all: Vec<String> = GROUPS.iter().flat_map(|g| g.nodes()).collect();
        fixture.wait_ready(&all);
        for group in GROUPS {
            let mut args = vec!["label".to_string(), "nodes".to_string()];
            args.extend(group.nodes());
            args.push(format!("{GROUP_LABEL}={}", group.name));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fixture.cluster.kubectl_ok(&args);
        }
        fixture
    }

    fn agent_config(prefix: &str) -> &'static Agent {
        GROUPS
            .iter()
            .flat_map(|g| g.agents)
            .find(|a| a.prefix == prefix)
            .unwrap_or_else(|| panic!("no hollow agent has prefix {prefix}"))
    }

    fn agent_dir(&self, prefix: &str) -> PathBuf {
        self.cluster.data_dir().join(format!("hollow-{prefix}"))
    }

    /// Starts (or restarts) the agent serving the nodes of `prefix`.
    pub fn start_agent(&self, prefix: &str) {
        let config = Self::agent_config(prefix);
        let log_path = self.cluster.data_dir().join(format!("hollow-{prefix}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let err_log = log.try_clone().expect("cannot duplicate the log handle");
        let mut command = TiedCommand::new(env!("CARGO_BIN_EXE_skiff"));
        command
            .arg("agent")
            .args(["--hollow", &config.nodes.to_string()])
            .args(["--hollow-prefix", prefix])
            .args(["--server", &self.cluster.url()])
            .args(["--token", &self.token])
            .arg("--data-dir")
            .arg(self.agent_dir(prefix))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the hollow agent {prefix}: {e}"));
        let previous = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(config.prefix, child);
        assert!(
            previous.is_none(),
            "the hollow agent {prefix} is already running"
        );
    }

    /// Kills the agent serving the nodes of `prefix` with SIGKILL, as a
    /// crashed machine stops: its nodes stay in the API and go silent.
    pub fn kill_agent(&self, prefix: &str) {
        let mut child = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(prefix)
            .unwrap_or_else(|| panic!("the hollow agent {prefix} is not running"));
        child.kill().expect("cannot kill the hollow agent");
        child.wait().expect("cannot reap the hollow agent");
    }

    /// Waits until every node in `names` exists and is Ready.
    pub fn wait_ready(&self, names: &[String]) {
        let mut last = String::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually("hollow nodes Ready", NODES_READY_TIMEOUT, || {
                let nodes = self.cluster.get_json(&["get", "nodes"]);
                let ready: Vec<&str> = nodes["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| condition(n, "Ready") == Some("True"))
                    .filter_map(|n| n["metadata"]["name"].as_str())
                    .collect();
                last = ready.join(" ");
                names.iter().all(|n| ready.contains(&n.as_str()))
            });
        }));
        if result.is_err() {
            let logs: String = self
                .agents
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .map(|prefix| {
                    let path = self.cluster.data_dir().join(format!("hollow-{prefix}.log"));
                    format!(
                        "--- {prefix}:\n{}\n",
                        std::fs::read_to_string(path).unwrap_or_default()
                    )
                })
                .collect();
            panic!("nodes not Ready: want {names:?}, Ready: {last}\nagent logs:\n{logs}");
        }
    }
}

/// The status (`True`, `False`, `Unknown`) of condition `type_` of a node or
/// pod.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
}
