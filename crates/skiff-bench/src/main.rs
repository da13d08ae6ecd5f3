//! `skiff-bench`: control-plane benchmarks that print their figures next to the
//! targets and baselines they are judged against, as markdown ready to paste
//! into `docs/benchmarks.md`.
//!
//! - `api`: the real `skiff server` over HTTPS (create, get, list, watch at 1
//!   and N clients with 10k, optionally 100k, pods stored; full lists as JSON
//!   and Table).
//! - `rss`: the server's resident memory after idling on an empty store.
//! - `pods`: pod startup latency through the node agent against the bare CRI
//!   floor, and the agent's idle memory (needs root: it runs containerd).
//! - `scheduling`: scheduler throughput, server memory and a large
//!   Deployment on simulated ("hollow") nodes, as upstream's kubemark and
//!   scheduler_perf measure them.
//! - `etcd` (feature `etcd`): durable writes of the embedded store against a
//!   real etcd on the same disk.
//! - `dns`: queries per second and latency of the cluster DNS server over
//!   UDP, in process, with synthetic Services.
//! - `ingress`: throughput and p99 through the ingress proxy against the
//!   backend directly, with wrk.
//! - `proxy-sync`: the service proxy's nftables sync at 1k and 10k Services
//!   (needs root: it loads the rules into a private network namespace).
//!
//! Progress goes to stderr, the report to stdout.

mod api;
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
mod http;
mod ingress;
mod pod;
mod pods_startup;
mod proxy;
mod run;
mod scheduling;
mod server;
mod stats;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Control-plane benchmarks for Skiff.
#[derive(Debug, Parser)]
#[command(name = "skiff-bench", version, about)]
struct Cli {
    /// Directory for the data directories of the servers under test; it
    /// decides which disk is measured. Defaults to the system temp directory.
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Service proxy sync time: render and `nft -f` for N Services. Needs
    /// root: it loads the table into a private network namespace.
    ProxySync(ProxySyncArgs),
    /// The skiff API server over HTTPS: create, get, list, watch and full lists.
    Api(ApiArgs),
    /// Resident memory of an idle skiff server with an empty store.
    Rss(RssArgs),
    /// Pod startup through the node agent against the bare CRI floor, and the
    /// agent's idle memory. Needs root: it runs containerd and pods.
    Pods(PodsArgs),
    /// Scheduler throughput, server memory and a large Deployment on hollow
    /// (simulated) nodes.
    Scheduling(SchedulingArgs),
    /// Cluster DNS queries per second and latency over UDP, in process.
    Dns(DnsArgs),
    /// Durable writes: the embedded store against etcd on the same disk.
    #[cfg(feature = "etcd")]
    Etcd(EtcdArgs),
    /// Ingress proxy throughput and p99 against hitting the backend
    /// directly (wrk); self-contained without --via/--direct.
    Ingress(ingress::Args),
}

#[derive(Debug, Args)]
struct SkiffBinary {
    /// The skiff binary [default: $CARGO_TARGET_DIR/release/skiff, else
    /// target/release/skiff].
    #[arg(long, value_name = "PATH")]
    skiff: Option<PathBuf>,
}

impl SkiffBinary {
    fn path(&self) -> PathBuf {
        self.skiff.clone().unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from)
                .join("release/skiff")
        })
    }
}

#[derive(Debug, Args)]
struct ApiArgs {
    #[command(flatten)]
    binary: SkiffBinary,
    /// Also measure with 100k pods stored (about two more minutes, and the
    /// server may need several GiB of memory).
    #[arg(long)]
    large: bool,
    /// Concurrent clients of the concurrent phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Pods stored for the first round of measurements.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Operations of each single-client phase.
    #[arg(long, default_value_t = 500)]
    ops_single: usize,
    /// Operations of each concurrent phase.
    #[arg(long, default_value_t = 4000)]
    ops_concurrent: usize,
    /// Runs of the full list, which is measured at --pods only.
    #[arg(long, default_value_t = 20)]
    list_runs: usize,
    /// Wall-time bound of each phase, in seconds.
    #[arg(long, default_value_t = 30)]
    limit_secs: u64,
}

#[derive(Debug, Args)]
struct RssArgs {
    #[command(flatten)]
    binary: SkiffBinary,
    /// Seconds to stay idle before reading the memory.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

#[derive(Debug, Args)]
struct PodsArgs {
    #[command(flatten)]
    binary: SkiffBinary,
    /// Pods of each mode (one by one, all at once).
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Sandboxes of the CRI floor, run one by one.
    #[arg(long, default_value_t = 20)]
    floor_runs: usize,
    /// Seconds each server stays idle before its memory is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

#[derive(Debug, Args)]
struct SchedulingArgs {
    #[command(flatten)]
    binary: SkiffBinary,
    /// NODES:PODS scales to measure, each on a fresh server.
    #[arg(long = "scale", value_name = "NODES:PODS", value_parser = parse_scale,
          default_values = ["1000:10000", "5000:30000"])]
    scales: Vec<(usize, usize)>,
    /// Concurrent clients creating pods.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Replicas of the Deployment timed after the pods (0 skips it).
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
}

fn parse_scale(value: &str) -> Result<(usize, usize), String> {
    let (nodes, pods) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} is not NODES:PODS"))?;
    let number = |s: &str| s.parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
    Ok((number(nodes)?, number(pods)?))
}

#[derive(Debug, Args)]
struct ProxySyncArgs {
    /// Service counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10_000])]
    services: Vec<usize>,
    /// Ready endpoints per Service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// One-Service changes to time (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[derive(Debug, Args)]
struct DnsArgs {
    /// Synthetic Services (one in ten headless).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Wall time of each phase (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = dns::parse_duration)]
    duration: Duration,
    /// Concurrent clients, one query in flight each.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[cfg(feature = "etcd")]
#[derive(Debug, Args)]
struct EtcdArgs {
    /// The etcd binary (Debian's etcd-server).
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    etcd: PathBuf,
    /// Concurrent clients of the concurrent phase.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Writes of the single-client phase.
    #[arg(long, default_value_t = 3000)]
    ops_single: usize,
    /// Writes of the concurrent phase.
    #[arg(long, default_value_t = 30_000)]
    ops_concurrent: usize,
    /// Wall-time bound of each phase, in seconds.
    #[arg(long, default_value_t = 30)]
    limit_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; a backtrace helps nobody here.
            eprintln!("skiff-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.dir.unwrap_or_else(std::env::temp_dir);
    match cli.command {
        Command::ProxySync(args) => {
            proxy::run(proxy::Settings {
                services: args.services,
                endpoints: args.endpoints,
                runs: args.runs,
            })
            .await
        }
        Command::Api(args) => {
            let mut sizes = vec![args.pods];
            if args.large && args.pods < 100_000 {
                sizes.push(100_000);
            }
            let settings = api::Settings {
                skiff: args.binary.path(),
                dir,
                clients: args.clients,
                sizes,
                ops_single: args.ops_single,
                ops_concurrent: args.ops_concurrent,
                list_runs: args.list_runs,
                limit: Duration::from_secs(args.limit_secs),
            };
            api::run(&settings).await
        }
        Command::Rss(args) => {
            api::rss(
                &args.binary.path(),
                &dir,
                Duration::from_secs(args.idle_secs),
            )
            .await
        }
        Command::Pods(args) => {
            let settings = pods_startup::Settings {
                skiff: args.binary.path(),
                dir,
                pods: args.pods,
                floor_runs: args.floor_runs,
                idle: Duration::from_secs(args.idle_secs),
            };
            pods_startup::run(&settings).await
        }
        Command::Scheduling(args) => {
            let settings = scheduling::Settings {
                skiff: args.binary.path(),
                dir,
                scales: args.scales,
                clients: args.clients,
                replicas: args.replicas,
            };
            scheduling::run(&settings).await
        }
        Command::Dns(args) => {
            let settings = dns::Settings {
                services: args.services,
                duration: args.duration,
                concurrency: args.concurrency,
                dir,
            };
            dns::run(&settings).await
        }
        #[cfg(feature = "etcd")]
        Command::Etcd(args) => {
            let settings = etcd::Settings {
                etcd: args.etcd,
                dir,
                clients: args.clients,
                ops_single: args.ops_single,
                ops_concurrent: args.ops_concurrent,
                limit: Duration::from_secs(args.limit_secs),
            };
            etcd::run(&settings).await
        }
        Command::Ingress(args) => ingress::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from(["skiff-bench", "api", "--large", "--dir", "/x"]).unwrap();
        assert_eq!(cli.dir, Some(PathBuf::from("/x")));
        let Command::Api(args) = cli.command else {
            panic!("not api");
        };
        assert!(args.large);
        assert_eq!(args.clients, 32);
        let explicit = SkiffBinary {
            skiff: Some("/bin/skiff".into()),
        };
        assert_eq!(explicit.path(), PathBuf::from("/bin/skiff"));

        let cli = Cli::try_parse_from(["skiff-bench", "scheduling", "--scale", "10:200"]).unwrap();
        let Command::Scheduling(args) = cli.command else {
            panic!("not scheduling");
        };
        assert_eq!(args.scales, [(10, 200)]);
        assert!(parse_scale("10").is_err());

        let cli = Cli::try_parse_from(["skiff-bench", "pods", "--pods", "5"]).unwrap();
        let Command::Pods(args) = cli.command else {
            panic!("not pods");
        };
        assert_eq!((args.pods, args.floor_runs, args.idle_secs), (5, 20, 10));

        let cli =
            Cli::try_parse_from(["skiff-bench", "proxy-sync", "--services", "10,20"]).unwrap();
        let Command::ProxySync(args) = cli.command else {
            panic!("not proxy-sync");
        };
        assert_eq!((args.services, args.endpoints), (vec![10, 20], 3));
    }
}
