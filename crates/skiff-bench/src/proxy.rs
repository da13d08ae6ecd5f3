//! Service proxy sync time: rendering the nftables table for N Services and
//! loading it with `nft -f`, as kube-proxy's sync-duration metric measures.
//!
//! For each size: N ClusterIP Services with E ready endpoints each (one
//! EndpointSlice per Service), loaded into a private network namespace so the
//! host's tables are untouched (needs root and `ip netns`). Measured:
//!
//! 1. **Full sync**: the table rendered and loaded whole into an empty
//!    namespace (a fresh node), then again over itself (a proxy restart,
//!    which replaces the table).
//! 2. **One-Service change**: one Service's endpoints replaced, the common
//!    case; the proxy renders everything and applies only the difference.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_proxy::{Proxier, ProxyConfig, SyncMode, SyncStats, SystemHost};

use crate::stats::{Table, against_ceiling, ms};
use crate::sys;

/// The target for a sync at 10k Services.
const TARGET: Duration = Duration::from_secs(1);

/// What to measure.
pub struct Settings {
    /// Service counts.
    pub services: Vec<usize>,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// Repetitions of the one-Service change (the median is reported).
    pub runs: usize,
}

/// One size's figures.
struct Outcome {
    services: usize,
    chains: usize,
    elements: usize,
    first: SyncStats,
    replace: SyncStats,
    change: SyncStats,
}

/// Measures every size and prints the report.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let outcomes = tokio::task::spawn_blocking(move || {
        let outcomes: anyhow::Result<Vec<Outcome>> = settings
            .services
            .iter()
            .map(|&n| measure(n, settings.endpoints, settings.runs))
            .collect();
        outcomes.map(|o| (o, settings))
    })
    .await??;
    let (outcomes, settings) = outcomes;
    println!("## Service proxy sync (nftables)\n");
    println!("{}", sys::describe_machine(&std::env::temp_dir()));
    println!(
        "ClusterIP Services with {} ready endpoints each, loaded with `nft -f` into a \
         private network namespace. Times in ms; total = render + apply.\n",
        settings.endpoints
    );
    let mut table = Table::new([
        "services",
        "chains",
        "set elements",
        "full: render",
        "full: apply",
        "full: total",
        "restart (replace): total",
        "one-Service change: render",
        "one-Service change: apply",
        "one-Service change: total",
    ]);
    for o in &outcomes {
        table.row([
            o.services.to_string(),
            o.chains.to_string(),
            o.elements.to_string(),
            ms(o.first.render),
            ms(o.first.apply),
            ms(total(&o.first)),
            ms(total(&o.replace)),
            ms(o.change.render),
            ms(o.change.apply),
            ms(total(&o.change)),
        ]);
    }
    println!("{table}");
    if let Some(largest) = outcomes.iter().max_by_key(|o| o.services) {
        let seconds = |s: &SyncStats| total(s).as_secs_f64();
        println!(
            "Target ≤ {} s at {} Services: one-Service change {}; full sync {}.",
            TARGET.as_secs(),
            largest.services,
            against_ceiling(seconds(&largest.change), TARGET.as_secs_f64(), "s"),
            against_ceiling(seconds(&largest.first), TARGET.as_secs_f64(), "s"),
        );
    }
    Ok(())
}

fn total(stats: &SyncStats) -> Duration {
    stats.render + stats.apply
}

fn measure(services: usize, endpoints: usize, runs: usize) -> anyhow::Result<Outcome> {
    eprintln!("proxy-sync: {services} Services × {endpoints} endpoints");
    let netns = Netns::new(services)?;
    let config = ProxyConfig {
        node_name: "bench-node".into(),
        netns: Some(netns.0.clone()),
        ..ProxyConfig::default()
    };
    let host = Arc::new(SystemHost::new(Some(netns.0.clone())));
    let objects: Vec<Arc<Service>> = (0..services).map(|i| Arc::new(service(i))).collect();
    let mut slices: Vec<Arc<EndpointSlice>> = (0..services)
        .map(|i| Arc::new(slice(i, endpoints, 0)))
        .collect();

    let mut proxier = Proxier::new(config.clone(), host.clone());
    let first = proxier.sync(&objects, &slices).context("full sync")?;
    expect(&first, SyncMode::Full)?;
    eprintln!(
        "  full sync {:?} ({} chains, {} set elements)",
        total(&first),
        first.chains,
        first.elements
    );
    let replace = Proxier::new(config, host)
        .sync(&objects, &slices)
        .context("restart sync")?;
    expect(&replace, SyncMode::Full)?;

    // `proxier` still holds what the table has (the restart loaded the same).
    let mut changes = Vec::new();
    for run in 0..runs.max(1) {
        let which = run * 7919 % services.max(1);
        slices[which] = Arc::new(slice(which, endpoints, run + 1));
        let stats = proxier
            .sync(&objects, &slices)
            .context("one-Service change")?;
        expect(&stats, SyncMode::Incremental)?;
        changes.push(stats);
    }
    changes.sort_by_key(total);
    let change = changes[changes.len() / 2];
    eprintln!(
        "  one-Service change {:?} (median of {})",
        total(&change),
        changes.len()
    );
    Ok(Outcome {
        services,
        chains: first.chains,
        elements: first.elements,
        first,
        replace,
        change,
    })
}

fn expect(stats: &SyncStats, mode: SyncMode) -> anyhow::Result<()> {
    if stats.mode != mode {
        bail!("expected a {mode:?} sync, got {:?}", stats.mode);
    }
    Ok(())
}

/// Service `i`: `bench/svc-i`, ClusterIP 10.43.x.y, port 80 "http".
fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}")),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(nth_address(Ipv4Addr::new(10, 43, 0, 0), i + 1).to_string()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Service `i`'s slice: `endpoints` ready pod addresses on port 8080;
/// `generation` shifts the addresses so that a new one differs.
fn slice(i: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    let base = (i * endpoints + generation * 101) % (1 << 16);
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}-abcde")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                format!("svc-{i}"),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            (0..endpoints)
                .map(|e| Endpoint {
                    addresses: vec![
                        nth_address(Ipv4Addr::new(10, 42, 0, 0), base + e + 2).to_string(),
                    ],
                    node_name: Some(format!("node-{}", e % 3)),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

/// The `n`-th address after `base` (wrapping inside its /16).
fn nth_address(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    let offset = u32::try_from(n % (1 << 16)).unwrap_or(0);
    Ipv4Addr::from(u32::from(base) + offset)
}

/// A private network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(size: usize) -> anyhow::Result<Self> {
        let name = format!("skiff-bench-{}-{size}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .context("running ip netns add")?;
        if !out.status.success() {
            bail!(
                "ip netns add {name} (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_objects_render_map_elements_not_chains() {
        let services: Vec<_> = (0..3).map(|i| Arc::new(service(i))).collect();
        let slices: Vec<_> = (0..3).map(|i| Arc::new(slice(i, 3, 0))).collect();
        let rules = skiff_proxy::render(&ProxyConfig::default(), &services, &slices);
        let per_service = rules
            .chain_names()
            .filter(|c| c.starts_with("svc-") || c.starts_with("ep-"))
            .count();
        assert_eq!(per_service, 0);
        assert!(rules.chain("pick-3").is_some());
        // Per Service: its ClusterIP and three endpoints; each endpoint's
        // address once in the hairpin set.
        assert_eq!(rules.map("endpoints-3").map(|m| m.len()), Some(9));
        assert_eq!(rules.element_count(), 3 * (1 + 3) + 9);
        assert_eq!(
            service(0).spec.unwrap().cluster_ip.as_deref(),
            Some("10.43.0.1")
        );
        assert_ne!(slice(5, 3, 0), slice(5, 3, 1));
        assert_eq!(
            nth_address(Ipv4Addr::new(10, 42, 0, 0), 258),
            Ipv4Addr::new(10, 42, 1, 2)
        );
    }
}
