//! The IO part: caches of NetworkPolicies, Pods and Namespaces, and a loop
//! that re-renders the table when any of them changes and applies the text
//! when it differs from what was applied last.
//!
//! Changes are batched: the first event after a quiet spell opens a window
//! of [`NetpolConfig::debounce`], and everything that arrives in it goes
//! into one render. A rollout touching a hundred pods costs one `nft` run,
//! and no change waits longer than the window plus one render.
//!
//! Nothing is applied before all three caches have listed once: a table
//! rendered from half a picture would open isolated pods (policies missing)
//! or cut them off (peers missing). Until then whatever an earlier agent
//! left keeps enforcing; the first apply replaces it whole. On shutdown the
//! table stays, so pods are not left open while the agent restarts.

use std::path::PathBuf;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nft::{Nft, NftCommand, NftError};
use crate::ruleset::Ruleset;

/// Longest wait between retries of a failed apply.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How the enforcer runs on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetpolConfig {
    /// The node whose pods are policed (`spec.nodeName`).
    pub node_name: String,
    /// The nftables table (family `ip`) owned by the enforcer.
    pub table: String,
    /// The `nft` binary: a path, or a name looked up in `PATH`.
    pub nft_path: PathBuf,
    /// Network namespace (an `ip netns` name) to apply the table in, by
    /// running `ip netns exec <netns> nft`; `None` is the agent's own.
    pub netns: Option<String>,
    /// How long changes are gathered before one render.
    pub debounce: Duration,
}

impl NetpolConfig {
    /// The defaults for node `node_name`: table `skiff-netpol`, `nft` from
    /// `PATH`, the agent's own namespace, a 100 ms window.
    pub fn new(node_name: impl Into<String>) -> NetpolConfig {
        NetpolConfig {
            node_name: node_name.into(),
            table: "skiff-netpol".into(),
            nft_path: PathBuf::from("nft"),
            netns: None,
            debounce: Duration::from_millis(100),
        }
    }

    fn validate(&self) -> Result<(), NetpolError> {
        if self.node_name.is_empty() {
            return Err(NetpolError::EmptyNodeName);
        }
        let mut chars = self.table.chars();
        let valid = self.table.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(NetpolError::InvalidTable(self.table.clone()));
        }
        Ok(())
    }
}

/// Why the enforcer stopped. Watch errors and refused scripts are not
/// here: they are logged and retried with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetpolError {
    /// [`NetpolConfig::node_name`] is empty.
    #[error("netpol: the node name is empty")]
    EmptyNodeName,
    /// [`NetpolConfig::table`] is not a name nftables accepts here (a
    /// letter, then letters, digits, `-` or `_`; at most 64 bytes).
    #[error("netpol: invalid nftables table name {0:?}")]
    InvalidTable(String),
    /// `nft` could not be run at all.
    #[error("netpol: {0}")]
    Nft(#[source] NftError),
}

/// Enforces NetworkPolicy for the pods on `config.node_name` with the real
/// `nft` until `shutdown` is cancelled.
///
/// The client must be allowed to list and watch pods, namespaces and
/// networkpolicies in every namespace; the process must be allowed to run
/// `nft` (root or CAP_NET_ADMIN). Returns `Ok` on shutdown and an error
/// only for a bad config or an `nft` that cannot be started; watch
/// failures and refused scripts are logged and retried.
pub async fn run(
    client: Client,
    config: NetpolConfig,
    shutdown: CancellationToken,
) -> Result<(), NetpolError> {
    let nft = NftCommand::new(config.nft_path.clone(), config.netns.clone());
    run_with(client, config, nft, shutdown).await
}

/// One cache event, reduced to what the loop needs.
enum Update {
    /// A cache finished a (re)list; its index in the synced flags.
    Synced(usize),
    /// An object changed.
    Changed,
    /// The watch failed; it is retried with backoff.
    Failed(watcher::Error),
}

/// A reflector over every object of `K`, as a stream of [`Update`]s.
fn reflect<K>(api: Api<K>, index: usize) -> (Store<K>, BoxStream<'static, Update>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    // The rules never read annotations; dropping them (and managedFields)
    // keeps the caches small.
    let events = skiff_client::watch::cache_feed(api, watcher::Config::default())
        .modify(|object: &mut K| object.annotations_mut().clear());
    let updates = reflector::reflector(writer, events).map(move |event| match event {
        Ok(watcher::Event::InitDone) => Update::Synced(index),
        Ok(_) => Update::Changed,
        Err(error) => Update::Failed(error),
    });
    (reader, updates.boxed())
}

/// As [`run`], with `nft` as the way to the host (a fake in tests).
pub async fn run_with<N: Nft>(
    client: Client,
    config: NetpolConfig,
    nft: N,
    shutdown: CancellationToken,
) -> Result<(), NetpolError> {
    config.validate()?;
    let (policies, policy_updates) = reflect(Api::<NetworkPolicy>::all(client.clone()), 0);
    let (pods, pod_updates) = reflect(Api::<Pod>::all(client.clone()), 1);
    let (namespaces, namespace_updates) = reflect(Api::<Namespace>::all(client), 2);
    let updates = stream::select_all([policy_updates, pod_updates, namespace_updates]);
    let caches = Caches {
        policies,
        pods,
        namespaces,
    };
    Enforcer {
        config,
        nft,
        caches,
        applied: None,
        failures: 0,
    }
    .run(updates, shutdown)
    .await
}

struct Caches {
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
}

struct Enforcer<N> {
    config: NetpolConfig,
    nft: N,
    caches: Caches,
    /// The text applied last; `None` until the first apply, so that one
    /// always runs and replaces any leftover table.
    applied: Option<String>,
    /// Failed applies in a row, for the retry backoff.
    failures: u32,
}

impl<N: Nft> Enforcer<N> {
    async fn run(
        mut self,
        mut updates: impl Stream<Item = Update> + Unpin,
        shutdown: CancellationToken,
    ) -> Result<(), NetpolError> {
        let mut synced = [false; 3];
        let mut deadline: Option<Instant> = None;
        loop {
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                update = updates.next() => {
                    match update {
                        // The watchers retry forever; their end means the
                        // client is gone.
                        None => return Ok(()),
                        Some(Update::Failed(error)) => {
                            tracing::warn!(%error, "netpol: watch failed; retrying");
                            continue;
                        }
                        Some(Update::Synced(index)) => synced[index] = true,
                        Some(Update::Changed) => {}
                    }
                    deadline.get_or_insert_with(|| Instant::now() + self.config.debounce);
                }
                () = wake => {
                    deadline = None;
                    if synced.iter().all(|s| *s)
                        && let Some(retry) = self.sync().await?
                    {
                        deadline = Some(Instant::now() + retry);
                    }
                }
            }
        }
    }

    /// Renders and applies if the text changed. Returns when to try again
    /// after a retryable failure.
    async fn sync(&mut self) -> Result<Option<Duration>, NetpolError> {
        let ruleset = Ruleset::plan(
            &self.config.node_name,
            &self.caches.pods.state(),
            &self.caches.namespaces.state(),
            &self.caches.policies.state(),
        );
        let text = ruleset.to_nft(&self.config.table);
        if self.applied.as_ref() == Some(&text) {
            return Ok(None);
        }
        match self.nft.apply(&text).await {
            Ok(()) => {
                let (ingress, egress) = ruleset.isolated();
                tracing::info!(
                    table = %self.config.table,
                    ingress_isolated = ingress,
                    egress_isolated = egress,
                    bytes = text.len(),
                    "netpol: applied rules"
                );
                self.applied = Some(text);
                self.failures = 0;
                Ok(None)
            }
            Err(error) if error.is_retryable() => {
                self.failures = self.failures.saturating_add(1);
                let retry = retry_delay(self.failures);
                tracing::warn!(%error, ?retry, "netpol: applying rules failed; retrying");
                Ok(Some(retry))
            }
            Err(error) => Err(NetpolError::Nft(error)),
        }
    }
}

/// 100 ms after the first failure, doubling up to [`MAX_RETRY`].
fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (Duration::from_millis(100) * factor).min(MAX_RETRY)
}

#[cfg(test)]
mod tests;
