//! Durable write throughput and latency of the embedded store.
//!
//! ```text
//! cargo run --release -p skiff-store --example store_bench -- --clients 32 --ops 20000 --dir /tmp/x
//! ```
//!
//! Runs the same create workload twice on fresh files: with one writer (every write
//! pays its own fsync: the baseline) and with `--clients` concurrent writers (group
//! commit shares fsyncs). Every write is acknowledged only after it is durable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::{EmbeddedStore, Store};

struct Args {
    clients: usize,
    ops: usize,
    value_size: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: 32,
        ops: 20_000,
        value_size: 256,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--clients" => args.clients = number(value()?)?.max(1),
            "--ops" => args.ops = number(value()?)?.max(1),
            "--value-size" => args.value_size = number(value()?)?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--help" | "-h" => {
                return Err(
                    "usage: store_bench [--clients N] [--ops N] [--value-size BYTES] [--dir DIR]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

struct Outcome {
    writers: usize,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

async fn run(path: &std::path::Path, writers: usize, ops: usize, value: Bytes) -> Outcome {
    let _ = std::fs::remove_file(path);
    let store = Arc::new(EmbeddedStore::open(path).expect("open store"));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = Arc::clone(&store);
        let value = value.clone();
        // Spread the ops evenly; the first writers take the remainder.
        let share = ops / writers + usize::from(w < ops % writers);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for i in 0..share {
                let key = format!("/registry/bench/w{w}/{i:08}");
                let t = Instant::now();
                store.create(&key, value.clone()).await.expect("create");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(ops);
    for task in tasks {
        latencies.extend(task.await.expect("writer task"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Outcome {
        writers,
        ops,
        elapsed,
        latencies,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let scratch;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("create --dir");
            dir.clone()
        }
        None => {
            scratch = tempfile::tempdir().expect("tempdir");
            scratch.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let path = dir.join("store_bench.redb");
    println!(
        "store_bench: durable creates (fsync before ack), {} B values, file {}",
        args.value_size,
        path.display()
    );
    println!(
        "{:>8} {:>8} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "writers", "ops", "seconds", "writes/s", "p50 ms", "p99 ms", "max ms"
    );
    let mut results = Vec::new();
    for writers in [1, args.clients] {
        let outcome = runtime.block_on(run(&path, writers, args.ops, value.clone()));
        println!(
            "{:>8} {:>8} {:>10.2} {:>12.0} {:>10.3} {:>10.3} {:>10.3}",
            outcome.writers,
            outcome.ops,
            outcome.elapsed.as_secs_f64(),
            outcome.per_second(),
            outcome.percentile(0.50).as_secs_f64() * 1e3,
            outcome.percentile(0.99).as_secs_f64() * 1e3,
            outcome.percentile(1.0).as_secs_f64() * 1e3,
        );
        results.push(outcome);
    }
    let _ = std::fs::remove_file(&path);
    if let [single, many] = &results[..] {
        println!(
            "baseline: 1 writer = one fsync per write. {} writers with group commit: {:.1}x the baseline's writes/s",
            many.writers,
            many.per_second() / single.per_second()
        );
    }
}
