//! `skiff-bench etcd`: durable writes of the embedded store against a real etcd
//! on the same disk, in the same run.
//!
//! Both sides do what the API server does for a create: a create-if-absent of
//! a pod-sized value (for etcd, a transaction comparing the key's
//! `create_revision` with 0, as kube-apiserver sends). Both acknowledge only
//! after an fsync: etcd through its raft WAL, the embedded store through group
//! commit. etcd is additionally reached over gRPC on loopback, which is what a
//! Kubernetes API server in front of it pays too; the embedded store is called
//! in-process, which is the point of embedding it.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use skiff_store::{EmbeddedStore, Store};

use crate::pod;
use crate::run::{phase, timed};
use crate::stats::{Summary, Table, ms, rate};
use crate::sys::{self, Killed};

/// Samples of the raw fsync probe.
const FSYNC_SAMPLES: usize = 500;
/// How long etcd may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one comparison.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The etcd binary.
    pub etcd: PathBuf,
    /// Where both data directories go (the disk under test).
    pub dir: PathBuf,
    /// Clients of the concurrent phase.
    pub clients: usize,
    /// Writes in the single-client phase.
    pub ops_single: usize,
    /// Writes in the concurrent phase.
    pub ops_concurrent: usize,
    /// Wall-time bound of each phase.
    pub limit: Duration,
}

/// Run the comparison and print its markdown report.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-bench-etcd-")
        .tempdir_in(&settings.dir)
        .with_context(|| format!("creating a directory in {}", settings.dir.display()))?;
    let version = etcd_version(&settings.etcd)?;
    let disk = fsync_latency(scratch.path(), FSYNC_SAMPLES)?;
    let etcd = Etcd::start(&settings.etcd, scratch.path()).await?;
    let store = Arc::new(EmbeddedStore::open(&scratch.path().join("skiff.redb"))?);
    let value = pod::pod("bench", "etcd-bench-pod", 0);

    println!("## skiff-bench etcd: durable create-if-absent, embedded store vs etcd\n");
    print!("{}", sys::describe_machine(&settings.dir));
    println!(
        "- etcd: {version}, default flags (WAL fsync before acknowledging), gRPC on 127.0.0.1"
    );
    println!(
        "- disk: a 4 KiB append + fdatasync takes p50 {} ms, p99 {} ms ({} samples)",
        ms(disk.p50),
        ms(disk.p99),
        disk.ops
    );
    println!(
        "- value: a pod JSON of {} bytes; one connection per etcd client; the embedded store in-process\n",
        value.len()
    );

    let mut table = Table::new([
        "clients",
        "etcd writes/s",
        "etcd p50 ms",
        "etcd p99 ms",
        "skiff writes/s",
        "skiff p50 ms",
        "skiff p99 ms",
        "writes/s skiff/etcd",
        "p99 skiff/etcd",
    ]);
    let mut verdicts = Vec::new();
    for (clients, ops) in [
        (1, settings.ops_single),
        (settings.clients, settings.ops_concurrent),
    ] {
        eprintln!("etcd: {clients} client(s), {ops} writes");
        let etcd_summary = etcd_phase(&etcd, clients, ops, settings.limit, value.clone()).await?;
        eprintln!("skiff store: {clients} client(s), {ops} writes");
        let skiff_summary =
            store_phase(&store, clients, ops, settings.limit, value.clone()).await?;
        let ratio = skiff_summary.per_second() / etcd_summary.per_second();
        let p99_ratio = skiff_summary.p99.as_secs_f64() / etcd_summary.p99.as_secs_f64();
        table.row([
            clients.to_string(),
            rate(etcd_summary.per_second()),
            ms(etcd_summary.p50),
            ms(etcd_summary.p99),
            rate(skiff_summary.per_second()),
            ms(skiff_summary.p50),
            ms(skiff_summary.p99),
            format!("{ratio:.2}×"),
            format!("{p99_ratio:.2}×"),
        ]);
        verdicts.push(verdict(clients, ratio));
    }
    println!("{table}");
    for line in verdicts {
        println!("- {line}");
    }
    println!();
    Ok(())
}

fn verdict(clients: usize, ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{clients} client(s): the embedded store beats etcd, {ratio:.2}× its writes/s")
    } else {
        format!(
            "{clients} client(s): the embedded store is SLOWER than etcd, {ratio:.2}× its writes/s"
        )
    }
}

/// The latency of the disk's cheapest durable write: append 4 KiB to a file
/// and `fdatasync` it. A single writer cannot beat one of these per write.
fn fsync_latency(dir: &Path, samples: usize) -> anyhow::Result<Summary> {
    let path = dir.join("fsync-probe");
    let mut file = File::create(&path)?;
    let block = [0x5a_u8; 4096];
    let mut latencies = Vec::with_capacity(samples);
    let start = Instant::now();
    for _ in 0..samples {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(started.elapsed());
    }
    let summary = Summary::new(latencies, start.elapsed()).context("no fsync sample")?;
    std::fs::remove_file(&path)?;
    Ok(summary)
}

/// The first line of `etcd --version`.
fn etcd_version(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} (install Debian's etcd-server, see scripts/bench.sh, or pass --etcd)",
                binary.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .trim()
        .to_string())
}

async fn etcd_phase(
    etcd: &Etcd,
    clients: usize,
    ops: usize,
    limit: Duration,
    value: Bytes,
) -> anyhow::Result<Summary> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(etcd.connect().await?);
    }
    let connections = Arc::new(connections);
    phase(clients, ops, limit, move |client, index| {
        let mut kv = connections[client].kv_client();
        let key = format!("/registry/pods/bench/etcd-c{clients}-{index:08}");
        let value = value.clone();
        async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value.to_vec(), None)]);
            let start = Instant::now();
            let response = kv.txn(txn).await.context("etcd txn")?;
            let latency = start.elapsed();
            anyhow::ensure!(response.succeeded(), "etcd: key {key} already existed");
            Ok(latency)
        }
    })
    .await
}

async fn store_phase(
    store: &Arc<EmbeddedStore>,
    clients: usize,
    ops: usize,
    limit: Duration,
    value: Bytes,
) -> anyhow::Result<Summary> {
    let store = Arc::clone(store);
    phase(clients, ops, limit, move |_, index| {
        let store = Arc::clone(&store);
        let key = format!("/registry/pods/bench/skiff-c{clients}-{index:08}");
        let value = value.clone();
        async move { timed(async { Ok(store.create(&key, value).await?) }).await }
    })
    .await
}

/// A throwaway single-member etcd on loopback ports.
struct Etcd {
    _process: Killed,
    endpoint: String,
}

impl Etcd {
    async fn start(binary: &Path, dir: &Path) -> anyhow::Result<Etcd> {
        let client_port = sys::free_port()?;
        let peer_port = sys::free_port()?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = File::create(dir.join("etcd.log"))?;
        let child = Command::new(binary)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut process = Killed(child);
        let started = Instant::now();
        loop {
            if let Some(status) = process.0.try_wait()? {
                let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
                bail!("etcd exited with {status}:\n{log}");
            }
            let probe = async {
                let mut client = Client::connect([endpoint.as_str()], None).await?;
                client.status().await
            };
            match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(Ok(_)) => break,
                _ if started.elapsed() > READY_TIMEOUT => {
                    bail!("etcd not ready after {READY_TIMEOUT:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(Etcd {
            _process: process,
            endpoint,
        })
    }

    /// A new client with its own connection.
    async fn connect(&self) -> anyhow::Result<Client> {
        Client::connect([self.endpoint.as_str()], None)
            .await
            .context("connecting to etcd")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_says_who_wins() {
        assert!(verdict(32, 1.5).contains("beats etcd, 1.50×"));
        assert!(verdict(1, 0.8).contains("SLOWER than etcd, 0.80×"));
    }
}
