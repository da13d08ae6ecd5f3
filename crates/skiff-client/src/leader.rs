//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` with a `LeaseLock` does it.
//!
//! Several servers may run the same scheduler and controllers; only the
//! holder of the Lease (`kube-system/kube-scheduler`,
//! `kube-system/kube-controller-manager`) works. A candidate takes the Lease
//! when it is free or its holder has not renewed it for `lease_duration`,
//! renews it every `retry_period`, and stops working as soon as it has failed
//! to renew for `renew_deadline`, before any other candidate may take over.
//! Writes are compare-and-swap on the Lease's resourceVersion, so two
//! candidates never both believe they won. On shutdown the leader releases
//! the Lease so a standby takes over at once instead of after expiry.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Timings, with client-go's defaults for kube-scheduler and
/// kube-controller-manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// The Lease's namespace (`kube-system`).
    pub namespace: String,
    /// The Lease's name, e.g. `kube-scheduler`.
    pub name: String,
    /// Who this candidate is (upstream: `hostname_uuid`).
    pub identity: String,
    /// How long a Lease is honoured after its last renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps working while renewals fail.
    pub renew_deadline: Duration,
    /// How often to renew, and to retry acquiring.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's defaults (15 s, 10 s, 2 s) for the Lease `kube-system/name`.
    pub fn new(name: &str, identity: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why leadership ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    /// The Lease could not be renewed within the renew deadline; the work
    /// was stopped.
    #[error("lost the lease {namespace}/{name}: not renewed within {deadline:?}")]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The renew deadline that passed.
        deadline: Duration,
    },
}

/// Waits to become leader, then runs `work` with a token that is cancelled
/// when leadership is lost or `shutdown` fires. Returns the work's output,
/// `Ok(None)` on shutdown before leadership, or [`LeaderError::Lost`].
pub async fn run_as_leader<F, Fut, T>(
    client: Client,
    config: LeaderElectionConfig,
    shutdown: CancellationToken,
    work: F,
) -> Result<Option<T>, LeaderError>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = T>,
{
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        if try_acquire_or_renew(&leases, &config).await {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(config.retry_period) => {}
        }
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "acquired leadership");
    let working = shutdown.child_token();
    let work = work(working.clone());
    tokio::pin!(work);
    let mut last_renewal = tokio::time::Instant::now();
    let outcome = loop {
        tokio::select! {
            output = &mut work => break Ok(Some(output)),
            () = tokio::time::sleep(config.retry_period) => {
                if try_acquire_or_renew(&leases, &config).await {
                    last_renewal = tokio::time::Instant::now();
                } else if last_renewal.elapsed() >= config.renew_deadline {
                    working.cancel();
                    // Let the work wind down: it was told to stop.
                    let _ = work.await;
                    return Err(LeaderError::Lost {
                        namespace: config.namespace.clone(),
                        name: config.name.clone(),
                        deadline: config.renew_deadline,
                    });
                }
            }
        }
    };
    release(&leases, &config).await;
    outcome
}

/// One attempt: true if this candidate holds the Lease afterwards.
async fn try_acquire_or_renew(leases: &Api<Lease>, config: &LeaderElectionConfig) -> bool {
    let now = Timestamp::now();
    let existing = match leases.get_opt(&config.name).await {
        Ok(existing) => existing,
        Err(error) => {
            tracing::debug!(lease = %config.name, %error, "reading the lease failed");
            return false;
        }
    };
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(held_spec(config, now, now, 0)),
        };
        return leases.create(&PostParams::default(), &lease).await.is_ok();
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    if !ours && held_by_other(&spec, now) {
        return false;
    }
    let (acquired, transitions) = if ours {
        (
            spec.acquire_time.map_or(now, |t| t.0),
            spec.lease_transitions.unwrap_or(0),
        )
    } else {
        (now, spec.lease_transitions.unwrap_or(0) + 1)
    };
    lease.spec = Some(held_spec(config, acquired, now, transitions));
    // The resourceVersion read above makes this a compare-and-swap.
    leases
        .replace(&config.name, &PostParams::default(), &lease)
        .await
        .is_ok()
}

/// True if someone else holds the Lease and renewed it recently enough.
fn held_by_other(spec: &LeaseSpec, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref() else {
        return false;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    now.as_second() < renewed.0.as_second() + duration
}

fn held_spec(
    config: &LeaderElectionConfig,
    acquired: Timestamp,
    now: Timestamp,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(
            config
                .lease_duration
                .as_secs()
                .try_into()
                .unwrap_or(i32::MAX),
        ),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Gives the Lease up so a standby need not wait for it to expire.
async fn release(leases: &Api<Lease>, config: &LeaderElectionConfig) {
    let Ok(Some(mut lease)) = leases.get_opt(&config.name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    lease.spec = Some(spec);
    if let Err(error) = leases
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        tracing::debug!(lease = %config.name, %error, "releasing the lease failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_held_until_its_duration_passes_since_renewal() {
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(held_by_other(&spec("a", 100, 15), at(114)));
        assert!(!held_by_other(&spec("a", 100, 15), at(115)));
        assert!(!held_by_other(&spec("", 100, 15), at(101)));
        assert!(!held_by_other(&LeaseSpec::default(), at(101)));
    }
}
