//! Cluster DNS: queries per second and latency of the built-in DNS server.
//!
//! The server runs in this process on 127.0.0.1 with the records of
//! `services` synthetic Services (as the watch would build them: nine in ten
//! with a cluster IP, one in ten headless with three StatefulSet-style
//! endpoints, each with two named ports and three endpoints). `concurrency`
//! clients, each with its own UDP socket, send one query at a time and wait
//! for the answer, for `duration` per phase:
//!
//! 1. **A**: `svc.ns.svc.cluster.local` of random ClusterIP Services — what
//!    almost every lookup from a pod is;
//! 2. **mixed**: A of Services and of headless endpoint hostnames, SRV,
//!    PTR of cluster IPs, and names that do not exist (NXDOMAIN with SOA).
//!
//! Every answer is checked (ID, response code, a non-empty answer where one
//! is expected); a lost or wrong answer fails the run. The time to build the
//! whole index from the objects is reported too: it is what a relist costs.
//! Clients and server share the machine's cores, so the figures are a floor
//! for the server alone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_dns::forward::Forwarder;
use skiff_dns::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use skiff_dns::proto::rr::{Name, RecordType};
use skiff_dns::records::{Cluster, Zone};
use skiff_dns::server::Server;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::stats::{Summary, Table, ms, rate};
use crate::sys;

/// Namespaces the Services are spread over.
const NAMESPACES: usize = 20;
/// Every n-th Service is headless.
const HEADLESS_EVERY: usize = 10;
/// Endpoints per Service.
const ENDPOINTS: usize = 3;
/// How long one query may take before the run fails.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What to measure.
pub struct Settings {
    /// Synthetic Services.
    pub services: usize,
    /// Wall time of each phase.
    pub duration: Duration,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Directory whose disk the machine description names.
    pub dir: std::path::PathBuf,
}

/// A query to send and what its answer must be.
struct Probe {
    wire: Vec<u8>,
    code: ResponseCode,
}

/// `10.43.x.y` for Service `i` (from 10.43.0.11 on, clear of kube-dns).
fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i).unwrap_or(u32::MAX) + 11;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 0)) + n)
}

/// `10.42.x.y` for endpoint `k` of Service `i`.
fn pod_ip(i: usize, k: usize) -> Ipv4Addr {
    let n = u32::try_from(i * ENDPOINTS + k).unwrap_or(u32::MAX) + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + n)
}

fn namespace_of(i: usize) -> String {
    format!("ns-{}", i % NAMESPACES)
}

fn headless(i: usize) -> bool {
    i.is_multiple_of(HEADLESS_EVERY)
}

fn service(i: usize) -> Service {
    let ports = [("http", 80), ("metrics", 9090)]
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        })
        .collect();
    let ip = if headless(i) {
        "None".to_string()
    } else {
        cluster_ip(i).to_string()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}")),
            namespace: Some(namespace_of(i)),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn slice(i: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}-abcde")),
            namespace: Some(namespace_of(i)),
            labels: Some([("kubernetes.io/service-name".to_string(), format!("svc-{i}"))].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            (0..ENDPOINTS)
                .map(|k| Endpoint {
                    addresses: vec![pod_ip(i, k).to_string()],
                    hostname: headless(i).then(|| format!("svc-{i}-{k}")),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(
            [("http", 8080), ("metrics", 9090)]
                .into_iter()
                .map(|(name, port)| EndpointPort {
                    name: Some(name.into()),
                    port: Some(port),
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

fn probe(name: &str, qtype: RecordType, code: ResponseCode) -> anyhow::Result<Probe> {
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, qtype));
    Ok(Probe {
        wire: message.to_vec()?,
        code,
    })
}

/// A queries for the ClusterIP Services.
fn a_probes(services: usize) -> anyhow::Result<Vec<Probe>> {
    (0..services)
        .filter(|i| !headless(*i))
        .map(|i| {
            let name = format!("svc-{i}.{}.svc.cluster.local.", namespace_of(i));
            probe(&name, RecordType::A, ResponseCode::NoError)
        })
        .collect()
}

/// The mixed workload, a few queries per Service.
fn mixed_probes(services: usize) -> anyhow::Result<Vec<Probe>> {
    let mut probes = Vec::new();
    for i in 0..services {
        let ns = namespace_of(i);
        let service = format!("svc-{i}.{ns}.svc.cluster.local.");
        probes.push(probe(&service, RecordType::A, ResponseCode::NoError)?);
        probes.push(probe(
            &format!("_http._tcp.{service}"),
            RecordType::SRV,
            ResponseCode::NoError,
        )?);
        if headless(i) {
            probes.push(probe(
                &format!("svc-{i}-1.{service}"),
                RecordType::A,
                ResponseCode::NoError,
            )?);
        } else {
            let ptr = Name::from(IpAddr::V4(cluster_ip(i))).to_ascii();
            probes.push(probe(&ptr, RecordType::PTR, ResponseCode::NoError)?);
        }
        probes.push(probe(
            &format!("missing-{i}.{ns}.svc.cluster.local."),
            RecordType::A,
            ResponseCode::NXDomain,
        )?);
    }
    Ok(probes)
}

/// Send `probe` (with ID `id`) on `socket` and check the answer.
async fn ask(socket: &UdpSocket, probe: &Probe, id: u16) -> anyhow::Result<Duration> {
    let mut wire = probe.wire.clone();
    wire[..2].copy_from_slice(&id.to_be_bytes());
    let mut buffer = [0u8; 2048];
    let started = Instant::now();
    socket.send(&wire).await?;
    let len = tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buffer))
        .await
        .context("no answer in time")??;
    let latency = started.elapsed();
    let response = Message::from_vec(&buffer[..len])?;
    ensure!(response.metadata.id == id, "answer to another query");
    let code = response.metadata.response_code;
    if code != probe.code {
        bail!("expected {}, got {code}", probe.code);
    }
    ensure!(
        code != ResponseCode::NoError || !response.answers.is_empty(),
        "empty answer"
    );
    Ok(latency)
}

/// Query `probes` (spread by a multiplicative hash of a per-client counter)
/// from `concurrency` sockets, one query in flight each, for `duration`.
async fn measure(
    server: SocketAddr,
    probes: Vec<Probe>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let probes = Arc::new(probes);
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = Vec::with_capacity(concurrency);
    for client in 0..concurrency {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server).await?;
        let probes = Arc::clone(&probes);
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sent: usize = client;
            while Instant::now() < deadline {
                let pick = sent.wrapping_mul(2_654_435_761) % probes.len();
                let id = u16::try_from(sent % usize::from(u16::MAX)).unwrap_or(0);
                latencies.push(ask(&socket, &probes[pick], id).await?);
                sent += concurrency;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.context("client task panicked")??);
    }
    Summary::new(latencies, start.elapsed()).context("no query completed in time")
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    ensure!(settings.services > 0, "--services must be at least 1");
    ensure!(settings.concurrency > 0, "--concurrency must be at least 1");
    eprintln!(
        "dns: {} services, {} clients, {:?} per phase",
        settings.services, settings.concurrency, settings.duration
    );
    let zone = Arc::new(Zone::new(
        "cluster.local",
        5,
        vec!["10.43.0.0/16".parse()?, "10.42.0.0/16".parse()?],
        Some(IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10))),
    )?);
    let mut cluster = Cluster::new(Arc::clone(&zone));
    for n in 0..NAMESPACES {
        cluster.apply_namespace(&Namespace {
            metadata: ObjectMeta {
                name: Some(format!("ns-{n}")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
    }
    cluster.replace_services((0..settings.services).map(|i| Arc::new(service(i))));
    cluster.replace_slices((0..settings.services).map(|i| Arc::new(slice(i))));
    let started = Instant::now();
    let mut records = cluster.records(1);
    let build = started.elapsed();
    records.set_synced(true);
    eprintln!(
        "  index of {} services built in {build:?}",
        settings.services
    );

    let records = Arc::new(RwLock::new(records));
    let server = Server::bind(
        "127.0.0.1:0".parse()?,
        records,
        Forwarder::new(Vec::new(), QUERY_TIMEOUT),
    )
    .await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.serve(shutdown.clone()));

    let phases = [
        ("A (ClusterIP Service)", a_probes(settings.services)?),
        (
            "mixed (A, endpoint A, SRV, PTR, NXDOMAIN)",
            mixed_probes(settings.services)?,
        ),
    ];
    let mut results = Vec::new();
    for (label, probes) in phases {
        eprintln!("  {label}: {} distinct queries", probes.len());
        let summary = measure(addr, probes, settings.concurrency, settings.duration)
            .await
            .with_context(|| format!("phase {label}"))?;
        eprintln!(
            "  {label}: {} q/s, p99 {} ms",
            rate(summary.per_second()),
            ms(summary.p99)
        );
        results.push((label, summary));
    }
    shutdown.cancel();
    serving.await.context("server task")??;

    println!("## Cluster DNS\n");
    println!("{}", sys::describe_machine(&settings.dir));
    println!(
        "In-process server on 127.0.0.1 (UDP), {} Services ({} headless), {} concurrent clients \
         sharing the cores with it, {:?} per phase. Full index build: {:.1} ms.\n",
        settings.services,
        settings.services.div_ceil(HEADLESS_EVERY),
        settings.concurrency,
        settings.duration,
        build.as_secs_f64() * 1e3
    );
    let mut table = Table::new(["queries", "answered", "q/s", "p50 ms", "p99 ms", "max ms"]);
    for (label, summary) in &results {
        table.row([
            label.to_string(),
            summary.ops.to_string(),
            rate(summary.per_second()),
            ms(summary.p50),
            ms(summary.p99),
            ms(summary.max),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// A duration such as `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn synthetic_addresses_stay_in_their_cidrs_and_apart() {
        assert_eq!(cluster_ip(0), Ipv4Addr::new(10, 43, 0, 11));
        assert_eq!(cluster_ip(300), Ipv4Addr::new(10, 43, 1, 55));
        assert_eq!(pod_ip(0, 0), Ipv4Addr::new(10, 42, 0, 2));
        assert_ne!(pod_ip(0, 2), pod_ip(1, 0));
        assert!(headless(0) && !headless(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_probe_is_answered_as_expected() {
        let settings = Settings {
            services: 25,
            duration: Duration::from_millis(300),
            concurrency: 4,
            dir: std::env::temp_dir(),
        };
        run(&settings).await.unwrap();
    }
}
