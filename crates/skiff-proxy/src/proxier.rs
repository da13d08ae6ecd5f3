//! The sync loop: watch Services and EndpointSlices, and keep the table in
//! step with them.
//!
//! [`Proxier::sync`] renders a snapshot and applies the difference from the
//! last applied ruleset (nothing when they are equal). Its first sync, and any
//! sync after a failure, replaces the table whole, which is how rules an
//! earlier run left behind are cleaned up. Once the rules are in place, and
//! if the UDP Services or their endpoints changed since the last cleanup,
//! it deletes the conntrack entries the new rules would not have made (see
//! [`conntrack`](crate::conntrack)); a failed cleanup is logged and tried
//! again on the next sync. [`run`] feeds it from two
//! kube-runtime reflectors: it waits until both have listed (so a restart
//! never installs a table missing the endpoints it has not read yet), then
//! syncs [`ProxyConfig::sync_delay`] after the first change of each burst.
//! On shutdown the rules stay: a restarted proxy takes over the table, and
//! conntrack keeps established connections going meanwhile.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::config::ProxyConfig;
use crate::conntrack::{self, Conntrack, NetlinkConntrack, UdpFrontends};
use crate::host::{Host, HostError, SystemHost};
use crate::render::render_ports;
use crate::ruleset::Ruleset;
use crate::service::service_ports;

/// Sysctls the proxy needs: forwarding (to reach endpoints behind the node)
/// and bridged traffic through the `ip` hooks (pod to Service on one bridge).
const SYSCTLS: [(&str, &str, bool); 2] = [
    ("net.ipv4.ip_forward", "1", true),
    // Absent without br_netfilter; a node without bridges still proxies.
    ("net.bridge.bridge-nf-call-iptables", "1", false),
];

/// Why the proxy stopped or a sync failed. A failed sync is retried after
/// [`ProxyConfig::retry_delay`] with a full replacement; [`run`] returns only
/// on errors it cannot retry.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A required sysctl could not be set.
    #[error("setting sysctl {key}: {source}")]
    Sysctl {
        /// The sysctl.
        key: &'static str,
        /// Why.
        #[source]
        source: HostError,
    },
    /// `nft` refused the table.
    #[error("applying table ip {table} ({mode:?}): {source}")]
    Apply {
        /// The table.
        table: String,
        /// How it was applied.
        mode: SyncMode,
        /// Why (nft's message names the line).
        #[source]
        source: HostError,
    },
    /// A watch stream ended, which kube-runtime's watchers never do.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
    /// The blocking sync task panicked or was cancelled.
    #[error("sync task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How a sync changed the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// The table was replaced whole.
    Full,
    /// Only the differences were applied.
    Incremental,
    /// Nothing had changed; nft was not run.
    Unchanged,
}

/// What one sync did and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// How the table changed.
    pub mode: SyncMode,
    /// Building the ruleset and its script.
    pub render: Duration,
    /// Running nft (zero when unchanged).
    pub apply: Duration,
    /// The size of the script nft loaded.
    pub script_bytes: usize,
    /// Chains in the table.
    pub chains: usize,
    /// Elements of the table's sets and maps.
    pub elements: usize,
    /// Listing and deleting stale conntrack entries (zero when the UDP
    /// frontends had not changed).
    pub conntrack: Duration,
    /// Stale conntrack entries deleted.
    pub conntrack_deleted: usize,
}

/// Keeps one nftables table equal to the rendering of the latest snapshot.
pub struct Proxier {
    config: ProxyConfig,
    host: Arc<dyn Host>,
    /// What the table holds, if known (`None` before the first sync and
    /// after a failed one).
    applied: Option<Ruleset>,
    conntrack: Arc<dyn Conntrack>,
    /// The UDP frontends the last successful conntrack cleanup saw (`None`
    /// before the first).
    cleaned: Option<UdpFrontends>,
}

impl Proxier {
    /// A proxier that has applied nothing yet, cleaning conntrack entries
    /// through ctnetlink in [`ProxyConfig::netns`].
    pub fn new(config: ProxyConfig, host: Arc<dyn Host>) -> Self {
        let conntrack = Arc::new(NetlinkConntrack::new(config.netns.clone()));
        Self {
            config,
            host,
            applied: None,
            conntrack,
            cleaned: None,
        }
    }

    /// Cleans conntrack entries through `conntrack` instead.
    pub fn with_conntrack(mut self, conntrack: Arc<dyn Conntrack>) -> Self {
        self.conntrack = conntrack;
        self
    }

    /// Sets the sysctls the proxy needs.
    pub fn set_sysctls(&self) -> Result<(), ProxyError> {
        for (key, value, required) in SYSCTLS {
            match self.host.set_sysctl(key, value) {
                Ok(()) => {}
                Err(source) if required => return Err(ProxyError::Sysctl { key, source }),
                Err(error) => tracing::warn!(%error, key, "could not set sysctl"),
            }
        }
        Ok(())
    }

    /// Renders the snapshot and brings the table in line with it.
    pub fn sync(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Result<SyncStats, ProxyError> {
        let started = Instant::now();
        let ports = service_ports(&self.config, services, slices);
        let desired = render_ports(&self.config, &ports);
        let frontends = UdpFrontends::new(&ports);
        let update = self
            .applied
            .as_ref()
            .and_then(|applied| desired.update_script(applied));
        let (mode, script) = match update {
            Some(script) if script.is_empty() => (SyncMode::Unchanged, script),
            Some(script) => (SyncMode::Incremental, script),
            None => (SyncMode::Full, desired.full_script()),
        };
        let render_time = started.elapsed();
        let chains = desired.chain_names().count();
        let elements = desired.element_count();
        if mode == SyncMode::Unchanged {
            let (conntrack, conntrack_deleted) = self.clean_conntrack(&frontends);
            return Ok(SyncStats {
                mode,
                render: render_time,
                apply: Duration::ZERO,
                script_bytes: 0,
                chains,
                elements,
                conntrack,
                conntrack_deleted,
            });
        }
        let applying = Instant::now();
        let result = match self.host.nft(&script) {
            Ok(()) => Ok((mode, script.len())),
            Err(error) if mode == SyncMode::Incremental => {
                // The table may not be what we believe (someone edited it):
                // replace it whole.
                tracing::warn!(%error, "incremental nftables update failed; replacing the table");
                let full = desired.full_script();
                match self.host.nft(&full) {
                    Ok(()) => Ok((SyncMode::Full, full.len())),
                    Err(error) => Err((SyncMode::Full, error)),
                }
            }
            Err(error) => Err((mode, error)),
        };
        let apply = applying.elapsed();
        match result {
            Ok((mode, script_bytes)) => {
                self.applied = Some(desired);
                let (conntrack, conntrack_deleted) = self.clean_conntrack(&frontends);
                Ok(SyncStats {
                    mode,
                    render: render_time,
                    apply,
                    script_bytes,
                    chains,
                    elements,
                    conntrack,
                    conntrack_deleted,
                })
            }
            Err((mode, source)) => {
                self.applied = None;
                Err(ProxyError::Apply {
                    table: self.config.table.clone(),
                    mode,
                    source,
                })
            }
        }
    }

    /// Deletes the conntrack entries that became stale since the last
    /// cleanup, now that the rules for `frontends` are in place; returns how
    /// long it took and how many went. A failure is logged, and the next sync
    /// tries again (the last cleanup's frontends are kept).
    fn clean_conntrack(&mut self, frontends: &UdpFrontends) -> (Duration, usize) {
        let Some(cleanup) = frontends.cleanup(self.cleaned.as_ref()) else {
            return (Duration::ZERO, 0);
        };
        let started = Instant::now();
        let deleted = match conntrack::clean(self.conntrack.as_ref(), &cleanup) {
            Ok(deleted) => {
                self.cleaned = Some(frontends.clone());
                deleted
            }
            Err(error) => {
                tracing::warn!(%error, "could not delete stale UDP conntrack entries");
                0
            }
        };
        (started.elapsed(), deleted)
    }
}

/// Runs the service proxy on this node until `shutdown`, leaving the rules in
/// place when it stops.
pub async fn run(
    client: Client,
    config: ProxyConfig,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let host: Arc<dyn Host> = Arc::new(SystemHost::new(config.netns.clone()));
    let (services, services_writer) = reflector::store();
    let service_events = reflector::reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let (slices, slices_writer) = reflector::store();
    let slice_events = reflector::reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default().labels("kubernetes.io/service-name"),
        )
        .default_backoff(),
    );
    serve(
        Proxier::new(config, host),
        (services, service_events),
        (slices, slice_events),
        shutdown,
    )
    .await
}

/// A reflector's store and its event stream.
type Feed<K, S> = (Store<K>, S);

/// Sets the sysctls, then syncs on every change the two feeds report.
async fn serve<S1, S2>(
    mut proxier: Proxier,
    (services, service_events): Feed<Service, S1>,
    (slices, slice_events): Feed<EndpointSlice, S2>,
    shutdown: CancellationToken,
) -> Result<(), ProxyError>
where
    S1: Stream<Item = watcher::Result<watcher::Event<Service>>>,
    S2: Stream<Item = watcher::Result<watcher::Event<EndpointSlice>>>,
{
    proxier.set_sysctls()?;
    let sync_delay = proxier.config.sync_delay;
    let retry_delay = proxier.config.retry_delay;
    let mut service_events = pin!(service_events);
    let mut slice_events = pin!(slice_events);
    let (mut services_listed, mut slices_listed) = (false, false);
    // When the pending changes are due to be synced.
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let deadline =
            due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            event = service_events.next() => {
                let event = event.ok_or(ProxyError::WatchEnded("Service"))?;
                if changed(event, "Service", &mut services_listed) {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + sync_delay);
                }
            }
            event = slice_events.next() => {
                let event = event.ok_or(ProxyError::WatchEnded("EndpointSlice"))?;
                if changed(event, "EndpointSlice", &mut slices_listed) {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + sync_delay);
                }
            }
            () = tokio::time::sleep_until(deadline), if due.is_some() && services_listed && slices_listed => {
                let snapshot = (services.state(), slices.state());
                let (back, result) = tokio::task::spawn_blocking(move || {
                    let result = proxier.sync(&snapshot.0, &snapshot.1);
                    (proxier, result)
                })
                .await?;
                proxier = back;
                match result {
                    Ok(stats) => {
                        due = None;
                        tracing::debug!(
                            mode = ?stats.mode,
                            render_ms = stats.render.as_secs_f64() * 1e3,
                            apply_ms = stats.apply.as_secs_f64() * 1e3,
                            chains = stats.chains,
                            elements = stats.elements,
                            conntrack_deleted = stats.conntrack_deleted,
                            "synced service rules"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, "service rules sync failed; retrying");
                        due = Some(tokio::time::Instant::now() + retry_delay);
                    }
                }
            }
        }
    }
}

/// Whether a watch event changed the store (the reflector applies a relist
/// at its end), noting when the first list completes.
fn changed<K>(event: watcher::Result<watcher::Event<K>>, kind: &str, listed: &mut bool) -> bool {
    match event {
        Ok(watcher::Event::InitDone) => {
            *listed = true;
            true
        }
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => true,
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => false,
        Err(error) => {
            tracing::warn!(%error, kind, "watch failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests;
