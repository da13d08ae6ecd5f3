//! `ingress`: throughput and latency through the ingress proxy against
//! hitting the same backend directly, both measured with Debian's `wrk` in
//! one run so that the machine's state is the same for both.
//!
//! With `--via` and `--direct` it measures a real cluster: `--via` is the
//! node's ingress address (with `--host` naming the Ingress rule's host),
//! `--direct` the pod. Without them it is self-contained: a backend HTTP
//! server on loopback and, in front of it, skiff's ingress proxy fed an
//! Ingress, Service and EndpointSlice directly, with no API server. That
//! measures the proxy itself, and runs anywhere with one command.
//!
//! The self-contained backend is either a no-op keep-alive hyper server in
//! this process (`--backend noop`, the proxy's own cost) or `busybox httpd`
//! serving a small file from a temporary directory (`--backend busybox`),
//! the stand-in for the usual test pod: it forks per connection and closes
//! every connection after one response, so it measures how the proxy copes
//! with backends that do not keep connections alive.
//!
//! The target (issue 5) is ≥ 70% of the direct throughput. `wrk` is installed
//! with apt-get when missing, here only: nothing else needs it.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;
use skiff_ingress::routes::Inputs;
use skiff_ingress::{Proxy, RoutingTable};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::stats::{Table, rate};
use crate::sys::{Killed, free_port};

/// The Host of the self-contained mode's Ingress rule.
const LOCAL_HOST: &str = "bench.skiff.local";
/// What the self-contained backend answers.
const BODY: &[u8] = b"hello from the backend\n";
/// How long each URL is warmed up before it is measured.
const WARM_UP: Duration = Duration::from_secs(1);
/// The default pause between phases against a cluster: a little over
/// Linux's 60 s TIME_WAIT.
const CLUSTER_SETTLE: Duration = Duration::from_secs(65);
/// Throughput through the ingress, as a fraction of direct, to reach.
const TARGET_RATIO: f64 = 0.70;
/// How long `busybox httpd` may take to start listening.
const BUSYBOX_START: Duration = Duration::from_secs(5);

/// The backend of the self-contained mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// An in-process keep-alive HTTP/1.1 server that answers at once.
    Noop,
    /// `busybox httpd` on loopback: one process per connection, which it
    /// closes after each response.
    Busybox,
}

/// What the in-process proxy is put in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// A backend the benchmark starts.
    Start(Backend),
    /// A server that is already running (`--backend-address`).
    Running(SocketAddr),
}

/// Flags of `skiff-bench ingress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// URL through the ingress, e.g. http://NODE-IP/. Needs --direct; without
    /// both, an in-process ingress proxy in front of a local backend is
    /// measured.
    #[arg(long, value_name = "URL", requires = "direct")]
    via: Option<String>,
    /// URL of the backend itself, e.g. http://POD-IP:8080/.
    #[arg(long, value_name = "URL", requires = "via")]
    direct: Option<String>,
    /// Measure an in-process proxy in front of a local backend (the default
    /// without --via/--direct; the flag only makes it explicit).
    #[arg(long, conflicts_with = "via")]
    self_contained: bool,
    /// The local backend of the self-contained mode.
    #[arg(long, value_enum, default_value_t = Backend::Noop, conflicts_with = "via")]
    backend: Backend,
    /// Put the in-process proxy in front of this running HTTP server (e.g. a
    /// pod's IP:PORT) instead of starting a backend.
    #[arg(long, value_name = "IP:PORT", conflicts_with_all = ["via", "backend"])]
    backend_address: Option<SocketAddr>,
    /// Host header of every request (the Ingress rule's host).
    #[arg(long)]
    host: Option<String>,
    /// How long wrk runs against each URL, in whole seconds or minutes
    /// (`10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Open connections (wrk -c).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads (wrk -t).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Pause between the direct and the via phase, in whole seconds or
    /// minutes. A backend that closes every connection leaves a TIME_WAIT
    /// entry per request for the host→backend address pair, which Linux
    /// reuses on loopback only; without the pause the second phase's
    /// connections to the same backend wait for free ports. Defaults to 65 s
    /// with --via/--direct (a cluster), none otherwise.
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let (number, unit) = match value.strip_suffix('s') {
        Some(n) => (n, 1),
        None => match value.strip_suffix('m') {
            Some(n) => (n, 60),
            None => (value, 1),
        },
    };
    let n: u64 = number
        .parse()
        .map_err(|e| format!("{value:?} is not a whole number of seconds or minutes: {e}"))?;
    if n == 0 {
        return Err("the duration must be at least one second".to_owned());
    }
    Ok(Duration::from_secs(n * unit))
}

/// What `wrk` reports for one URL.
#[derive(Debug, Clone, PartialEq)]
struct WrkResult {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
    requests: u64,
    /// Responses that were not 2xx or 3xx.
    non_2xx: u64,
    /// Connect, read, write and timeout errors.
    socket_errors: u64,
}

/// Runs the benchmark and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(ensure_wrk)
        .await
        .context("installing wrk")??;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let cluster = args.via.is_some();
    let settle = args.settle.unwrap_or(if cluster {
        CLUSTER_SETTLE
    } else {
        Duration::ZERO
    });
    let (via, direct, host, mode, _backend) = match (args.via, args.direct) {
        (Some(via), Some(direct)) => (via, direct, args.host, "cluster", None),
        _ => {
            let upstream = args
                .backend_address
                .map_or(Upstream::Start(args.backend), Upstream::Running);
            let local = start_local(upstream, &shutdown).await?;
            let host = args.host.or_else(|| Some(LOCAL_HOST.to_owned()));
            let mode = match upstream {
                Upstream::Start(Backend::Noop) => {
                    "self-contained: in-process proxy, no-op loopback backend"
                }
                Upstream::Start(Backend::Busybox) => {
                    "self-contained: in-process proxy, busybox httpd on loopback"
                }
                Upstream::Running(_) => "in-process proxy in front of a running backend",
            };
            (local.via, local.direct, host, mode, Some(local.backend))
        }
    };

    let measure = |url: String| {
        let host = host.clone();
        let (duration, connections, threads) = (args.duration, args.connections, args.threads);
        async move {
            eprintln!("wrk {url} for {}s", duration.as_secs());
            tokio::task::spawn_blocking(move || {
                wrk(&url, host.as_deref(), WARM_UP, connections, threads)?;
                wrk(&url, host.as_deref(), duration, connections, threads)
            })
            .await
            .context("running wrk")?
        }
    };
    let direct_result = measure(direct.clone()).await?;
    if !settle.is_zero() {
        eprintln!("waiting {}s for TIME_WAIT to drain", settle.as_secs());
        tokio::time::sleep(settle).await;
    }
    let via_result = measure(via.clone()).await?;

    println!("## Ingress throughput ({mode})\n");
    print!("{}", crate::sys::describe_machine(&std::env::temp_dir()));
    println!(
        "- wrk: {} threads, {} connections, {} s per URL after {} s warm-up{}\n",
        args.threads,
        args.connections,
        args.duration.as_secs(),
        WARM_UP.as_secs(),
        host.as_deref()
            .map(|h| format!(", Host: {h}"))
            .unwrap_or_default()
    );
    let mut table = Table::new(["path", "URL", "requests/s", "p50 ms", "p99 ms", "errors"]);
    for (name, url, result) in [
        ("direct", &direct, &direct_result),
        ("via ingress", &via, &via_result),
    ] {
        table.row([
            name.to_owned(),
            url.clone(),
            rate(result.requests_per_second),
            crate::stats::ms(result.p50),
            crate::stats::ms(result.p99),
            format!(
                "{} non-2xx, {} socket",
                result.non_2xx, result.socket_errors
            ),
        ]);
    }
    println!("{table}");
    let ratio = via_result.requests_per_second / direct_result.requests_per_second;
    println!(
        "Via ingress / direct: {:.0}% of the throughput (target ≥ {:.0}%: {}), p99 {} ms against {} ms.",
        ratio * 100.0,
        TARGET_RATIO * 100.0,
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        },
        crate::stats::ms(via_result.p99),
        crate::stats::ms(direct_result.p99),
    );
    for (name, result) in [("direct", &direct_result), ("via ingress", &via_result)] {
        if result.non_2xx > 0 || result.socket_errors > 0 {
            eprintln!(
                "warning: {name}: {} of {} responses were not 2xx/3xx and {} socket errors; the rate counts them",
                result.non_2xx, result.requests, result.socket_errors
            );
        }
    }
    Ok(())
}

/// Installs Debian's wrk unless it is there.
fn ensure_wrk() -> anyhow::Result<()> {
    let quiet = |program: &str, args: &[&str]| -> anyhow::Result<bool> {
        let status = Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {program}"))?;
        Ok(status.success())
    };
    if quiet("dpkg", &["-s", "wrk"])? {
        return Ok(());
    }
    eprintln!("installing wrk with apt-get");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get install")
    };
    if install()?.success() {
        return Ok(());
    }
    // The package lists may be missing or stale.
    ensure!(
        quiet("apt-get", &["update"])?,
        "apt-get update failed; install wrk by hand"
    );
    ensure!(install()?.success(), "apt-get install -y wrk failed");
    Ok(())
}

/// Runs wrk against `url` and parses its report.
fn wrk(
    url: &str,
    host: Option<&str>,
    duration: Duration,
    connections: usize,
    threads: usize,
) -> anyhow::Result<WrkResult> {
    let mut command = Command::new("wrk");
    command.args([
        "--latency",
        "-t",
        &threads.to_string(),
        "-c",
        &connections.max(threads).to_string(),
        "-d",
        &format!("{}s", duration.as_secs().max(1)),
    ]);
    if let Some(host) = host {
        command.args(["-H", &format!("Host: {host}")]);
    }
    let output = command.arg(url).output().context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk {url} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&stdout).with_context(|| format!("unexpected wrk output:\n{stdout}"))
}

fn parse_wrk(output: &str) -> anyhow::Result<WrkResult> {
    let mut requests_per_second = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    for line in output.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            requests_per_second = Some(value.trim().parse::<f64>()?);
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = Some(parse_wrk_time(value.trim())?);
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(parse_wrk_time(value.trim())?);
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = value.trim().parse()?;
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 1, write 0, timeout 2"
            for part in value.split(',') {
                let count = part.split_whitespace().nth(1).unwrap_or("0");
                socket_errors += count.parse::<u64>()?;
            }
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(count.trim().parse()?);
        }
    }
    Ok(WrkResult {
        requests_per_second: requests_per_second.context("no Requests/sec line")?,
        p50: p50.context("no 50% line (was --latency passed?)")?,
        p99: p99.context("no 99% line")?,
        requests: requests.context("no request count")?,
        non_2xx,
        socket_errors,
    })
}

/// A wrk time such as `812.00us`, `1.23ms` or `2.00s`.
fn parse_wrk_time(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("{text:?} has no unit"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => bail!("unknown unit {other:?} in {text:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// The self-contained setup: where to send requests, and what keeps the
/// backend alive.
struct Local {
    via: String,
    direct: String,
    backend: LocalBackend,
}

/// Dropping it stops a backend the benchmark started and removes its files.
enum LocalBackend {
    /// Stops with the benchmark's cancellation token, or is not ours.
    InProcess,
    /// The `busybox httpd` process and its document root.
    Busybox {
        _process: Killed,
        _root: tempfile::TempDir,
    },
}

/// Starts a backend and the ingress proxy in front of it on loopback.
async fn start_local(upstream: Upstream, shutdown: &CancellationToken) -> anyhow::Result<Local> {
    let (backend_address, backend) = match upstream {
        Upstream::Start(Backend::Noop) => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("binding the backend")?;
            let address = listener.local_addr()?;
            tokio::spawn(serve_backend(listener, shutdown.clone()));
            (address, LocalBackend::InProcess)
        }
        Upstream::Start(Backend::Busybox) => start_busybox().await?,
        Upstream::Running(address) => (address, LocalBackend::InProcess),
    };

    let (_, routes) = watch::channel(Arc::new(local_table(backend_address)?));
    let proxy = Proxy::new(routes);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the proxy")?;
    let proxy_address = listener.local_addr()?;
    let token = shutdown.clone();
    tokio::spawn(async move { proxy.serve_http(listener, token).await });
    Ok(Local {
        via: format!("http://{proxy_address}/"),
        direct: format!("http://{backend_address}/"),
        backend,
    })
}

/// Starts `busybox httpd` on a free loopback port serving [`BODY`] as
/// `index.html`, and waits until it accepts connections.
async fn start_busybox() -> anyhow::Result<(SocketAddr, LocalBackend)> {
    let root = tempfile::tempdir().context("creating the document root")?;
    std::fs::write(root.path().join("index.html"), BODY).context("writing index.html")?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let child = Command::new("busybox")
        .args(["httpd", "-f", "-p", &address.to_string(), "-h"])
        .arg(root.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting busybox httpd (is busybox installed?)")?;
    let mut process = Killed(child);
    let deadline = tokio::time::Instant::now() + BUSYBOX_START;
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            break;
        }
        if let Some(status) = process.0.try_wait().context("waiting for busybox httpd")? {
            bail!("busybox httpd exited at start with {status}");
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "busybox httpd did not listen on {address} within {BUSYBOX_START:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((
        address,
        LocalBackend::Busybox {
            _process: process,
            _root: root,
        },
    ))
}

/// The routing table of one Ingress `bench.skiff.local /` → Service `web`
/// port 80, whose EndpointSlice points at `backend`.
fn local_table(backend: SocketAddr) -> anyhow::Result<RoutingTable> {
    let ingress: Ingress = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": "web"},
        "spec": {"rules": [{"host": LOCAL_HOST, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}},
        }]}}]},
    }))?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": "web-1",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port()}],
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}],
    }))?;
    Ok(RoutingTable::build(&Inputs {
        ingresses: &[Arc::new(ingress)],
        services: &[Arc::new(service)],
        endpoint_slices: &[Arc::new(slice)],
    }))
}

/// A minimal keep-alive HTTP/1.1 server answering [`BODY`], standing in for
/// a pod.
async fn serve_backend(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_: Request<hyper::body::Incoming>| async {
                let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, Infallible>(response)
            });
            // A client closing its connection is the normal end.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   80.00%
    Req/Sec    25.00k     1.00k   30.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.40ms
     90%    1.80ms
     99%    3.25ms
  499500 requests in 10.00s, 60.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:  49950.00
Transfer/sec:      6.00MB
";

    #[test]
    fn parses_wrk_output() {
        let result = parse_wrk(OUTPUT).unwrap();
        assert_eq!(
            result,
            WrkResult {
                requests_per_second: 49950.0,
                p50: Duration::from_micros(812),
                p99: Duration::from_micros(3250),
                requests: 499_500,
                non_2xx: 12,
                socket_errors: 5,
            }
        );
        assert!(parse_wrk("Requests/sec: 1\n").is_err());
    }

    #[test]
    fn parses_times_and_durations() {
        assert_eq!(parse_wrk_time("2.00s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_wrk_time("1.50m").unwrap(), Duration::from_secs(90));
        assert!(parse_wrk_time("12").is_err());
        assert!(parse_wrk_time("1.0xs").is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1.5s").is_err());
    }

    #[test]
    fn flags_pair_via_with_direct() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = Cli::try_parse_from(["ingress"]).unwrap();
        assert_eq!(cli.args.via, None);
        assert_eq!(cli.args.duration, Duration::from_secs(10));
        assert_eq!((cli.args.connections, cli.args.threads), (64, 2));
        let cli = Cli::try_parse_from([
            "ingress",
            "--via",
            "http://a/",
            "--direct",
            "http://b/",
            "--host",
            "h",
            "--duration",
            "3s",
            "--connections",
            "8",
        ])
        .unwrap();
        assert_eq!(cli.args.direct.as_deref(), Some("http://b/"));
        assert_eq!(cli.args.duration, Duration::from_secs(3));
        assert!(Cli::try_parse_from(["ingress", "--via", "http://a/"]).is_err());
        assert_eq!(cli.args.backend, Backend::Noop);
        let cli =
            Cli::try_parse_from(["ingress", "--self-contained", "--backend", "busybox"]).unwrap();
        assert_eq!(cli.args.backend, Backend::Busybox);
        assert!(
            Cli::try_parse_from([
                "ingress",
                "--via",
                "http://a/",
                "--direct",
                "http://b/",
                "--backend",
                "busybox"
            ])
            .is_err()
        );
    }

    #[tokio::test]
    async fn self_contained_setup_routes_through_the_proxy() {
        check_local(Backend::Noop).await;
    }

    #[tokio::test]
    async fn busybox_setup_routes_through_the_proxy() {
        if Command::new("busybox").arg("true").status().is_err() {
            eprintln!("busybox is not installed; skipping");
            return;
        }
        check_local(Backend::Busybox).await;
    }

    /// Both URLs of the self-contained setup answer [`BODY`], twice each (the
    /// second request shows a backend that closed its connection is no
    /// problem for the proxy).
    async fn check_local(kind: Backend) {
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let local = start_local(Upstream::Start(kind), &shutdown).await.unwrap();
        for (url, host) in [(&local.via, LOCAL_HOST), (&local.direct, "anything")] {
            let address: SocketAddr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .unwrap();
            for _ in 0..2 {
                let stream = tokio::net::TcpStream::connect(address).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let request = Request::get("/")
                    .header(hyper::header::HOST, host)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200, "{kind:?} {url}");
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                assert_eq!(&body[..], BODY, "{kind:?} {url}");
            }
        }
    }
}
