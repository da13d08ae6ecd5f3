//! Command-line flags. Parsing does no IO; `server::run` turns the flags into a
//! running server.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Skiff: a Kubernetes-compatible container orchestrator in one binary.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: the Kubernetes API server over the embedded store.
    Server(ServerArgs),
    /// Join a cluster as a node: run the node agent against a remote server.
    Agent(AgentCommandArgs),
    /// Stop every pod the node agent started, its containerd, mounts and
    /// bridge (to uninstall, or to clean a machine up).
    Killall(KillallArgs),
}

/// Flags of `skiff agent`.
#[derive(Debug, Args)]
pub struct AgentCommandArgs {
    /// The API server to join, e.g. `https://10.0.0.1:6443`.
    #[arg(long, value_name = "URL")]
    pub server: String,

    /// The join token: the server's `DATA_DIR/node-token` (`K10<ca hash>::<token>`),
    /// or the bare bootstrap token together with `--ca-file`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SKIFF_TOKEN",
        hide_env_values = true
    )]
    pub token: String,

    /// The cluster CA, when the token carries no CA hash.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Where the agent keeps containerd, pods and logs.
    #[arg(long, default_value = "/var/lib/skiff-agent", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Address the kubelet API listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind_address: IpAddr,

    /// Pod CIDR of the whole cluster (as the server's `--cluster-cidr`):
    /// traffic to Services from outside it is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub cluster_cidr: String,

    /// Register this many simulated ("hollow") nodes instead of a real one,
    /// as upstream's kubemark does: they heartbeat and report bound pods
    /// Running without running anything. For scale benchmarks and scheduler
    /// tests only.
    #[arg(long, value_name = "N")]
    pub hollow: Option<usize>,

    /// The name prefix of hollow nodes (`PREFIX-0`, `PREFIX-1`, ...).
    #[arg(
        long,
        default_value = "hollow-node",
        value_name = "PREFIX",
        requires = "hollow"
    )]
    pub hollow_prefix: String,

    /// Node agent flags.
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Flags of `skiff killall`.
#[derive(Debug, Args)]
pub struct KillallArgs {
    /// The data dir of the server or agent whose pods to stop.
    #[arg(long, default_value = "/var/lib/skiff", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Flags of `skiff server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where the database, PKI, token and admin kubeconfig live.
    #[arg(long, default_value = "/var/lib/skiff", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind_address: IpAddr,

    /// Port the API server listens on (HTTPS).
    #[arg(long, default_value_t = 6443, value_name = "PORT")]
    pub https_port: u16,

    /// Address other machines and pods reach this server at (the endpoint of
    /// the `kubernetes` service). Defaults to the bind address, or to the
    /// host's first non-loopback address when binding to all addresses. Added
    /// to the serving certificate when that is first generated.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<IpAddr>,

    /// How often to compact the store's history (e.g. `30s`, `5m`, `1h30m`;
    /// `0` turns compaction off).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub compaction_interval: Duration,

    /// How many revisions of history to keep when compacting; watches may
    /// resume from any retained revision.
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(i64).range(0..))]
    pub compaction_keep_revisions: i64,

    /// Run only the control plane, with no node agent on this machine.
    #[arg(long)]
    pub disable_agent: bool,

    /// Pod CIDR of the whole cluster; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub cluster_cidr: String,

    /// How long a node may go without a heartbeat before it is marked
    /// NotReady (Unknown) and tainted unreachable, in seconds.
    #[arg(long, default_value_t = 40, value_name = "SECONDS")]
    pub node_monitor_grace_period: u64,

    /// Built-in components not to run (comma-separated): `dns` (the cluster
    /// DNS server), `ingress` (the ingress controller), `servicelb` (node
    /// addresses for LoadBalancer Services).
    #[arg(long, value_delimiter = ',', value_enum, value_name = "COMPONENT")]
    pub disable: Vec<Component>,

    /// Host port of the cluster DNS server, which pods reach through the
    /// `kube-dns` Service; 0 picks a free port (the Service's endpoints
    /// follow it).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub cluster_dns_port: u16,

    /// Port the ingress controller serves HTTP on.
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    pub ingress_http_port: u16,

    /// Port the ingress controller serves HTTPS on.
    #[arg(long, default_value_t = 443, value_name = "PORT")]
    pub ingress_https_port: u16,

    /// The local node agent.
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// A built-in server component that `--disable` turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// The cluster DNS server.
    Dns,
    /// The ingress controller.
    Ingress,
    /// Node addresses for LoadBalancer Services.
    Servicelb,
}

/// Flags of the node agent (in `skiff server`, for its local agent).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node's name. Defaults to the host name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The node's IP, reported as its InternalIP. Defaults to the advertised
    /// address.
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,

    /// Use this CRI socket instead of starting a private containerd.
    #[arg(long, value_name = "SOCKET")]
    pub container_runtime_endpoint: Option<PathBuf>,

    /// Port of the node's kubelet API (HTTPS: logs, exec, port-forward).
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    pub kubelet_port: u16,

    /// The cluster DNS server address pods are given (the `kube-dns`
    /// Service's ClusterIP).
    #[arg(long, default_value = "10.43.0.10", value_name = "IP")]
    pub cluster_dns: IpAddr,

    /// The cluster domain.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,

    /// Do not run the service proxy on this node.
    #[arg(long)]
    pub disable_kube_proxy: bool,

    /// Do not enforce NetworkPolicies on this node.
    #[arg(long)]
    pub disable_network_policy: bool,

    /// Linux bridge the pods of this node attach to.
    #[arg(long, default_value = "skiff0", value_parser = parse_interface_name, value_name = "NAME")]
    pub bridge: String,
}

/// A Linux interface name: 1 to 15 bytes, no `/`, whitespace or NUL.
fn parse_interface_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 15
        && text != "."
        && text != ".."
        && !text
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if valid {
        Ok(text.to_string())
    } else {
        Err("an interface name has 1 to 15 characters and no '/' or spaces".into())
    }
}

/// Parse a duration written as Go and Kubernetes flags write them: one or more
/// `<integer><unit>` terms with units `h`, `m`, `s`, `ms` (e.g. `1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            "" => return Err(format!("invalid duration {text:?}: missing unit")),
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        let term = u32::try_from(value)
            .ok()
            .and_then(|v| unit.checked_mul(v))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
        total = total
            .checked_add(term)
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m30s250ms"),
            Ok(Duration::from_millis(90_250))
        );
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "m", "5x", "1.5h", "-5m", "5m3", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn server_defaults() {
        let cli = Cli::try_parse_from(["skiff", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected the server command")
        };
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/skiff"));
        assert_eq!(args.bind_address.to_string(), "0.0.0.0");
        assert_eq!(args.https_port, 6443);
        assert_eq!(args.advertise_address, None);
        assert_eq!(args.compaction_interval, Duration::from_secs(300));
        assert!(!args.disable_agent);
        assert_eq!(args.cluster_cidr, "10.42.0.0/16");
        assert_eq!(args.agent.kubelet_port, 10250);
        assert_eq!(args.agent.bridge, "skiff0");
        assert_eq!(args.agent.node_name, None);
    }

    #[test]
    fn server_flags() {
        let cli = Cli::try_parse_from([
            "skiff",
            "server",
            "--data-dir",
            "/tmp/x",
            "--bind-address",
            "::1",
            "--https-port",
            "7443",
            "--advertise-address",
            "10.0.0.5",
            "--compaction-interval",
            "30s",
            "--compaction-keep-revisions",
            "50",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected the server command")
        };
        assert_eq!(args.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(args.bind_address.to_string(), "::1");
        assert_eq!(args.https_port, 7443);
        assert_eq!(args.advertise_address.unwrap().to_string(), "10.0.0.5");
        assert_eq!(args.compaction_interval, Duration::from_secs(30));
        assert_eq!(args.compaction_keep_revisions, 50);
    }

    #[test]
    fn bridge_names_must_fit_the_kernel_limit() {
        assert_eq!(parse_interface_name("skiff0"), Ok("skiff0".into()));
        for bad in ["", "a-name-longer-than-15", "a/b", "a b", ".."] {
            assert!(
                parse_interface_name(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn negative_keep_revisions_is_rejected() {
        let parsed = Cli::try_parse_from(["skiff", "server", "--compaction-keep-revisions", "-1"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
