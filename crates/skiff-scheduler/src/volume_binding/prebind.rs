//! PreBind: write a [`VolumePlan`] and wait until the PV controller (and,
//! for provisioned claims, the provisioner) has bound every claim, before the
//! pod itself is bound. As upstream, a pod is never bound to a node where its
//! volumes did not materialise: if a provisioner gives up (it removes the
//! `volume.kubernetes.io/selected-node` annotation), a volume is unbound
//! under us, or nothing happens within the bind timeout, the pod goes back
//! to the queue to be scheduled again.
//!
//! The writes are upstream's: a pre-bound static volume is written whole
//! (`PUT`, so a volume changed since the scheduler saw it is a conflict, not
//! a silent overwrite), and a claim to provision gets a merge patch of the
//! annotation. The wait polls the API every second, as upstream polls its
//! caches, so a missed watch event cannot stall it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::{
    ANN_SELECTED_NODE, VolumePlan, annotation, claim_key, fully_bound, name_of,
    node_affinity_matches, volume_name_of,
};

/// How long upstream waits for a pod's claims to be bound
/// (`bindTimeoutSeconds`).
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the claims are checked while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a pod's volumes were not bound. Every case is retried the same way:
/// the pod is scheduled again after its back-off, from what the watches say
/// by then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreBindError {
    /// Writing a static volume's `claimRef` failed (a conflict means the
    /// volume changed since the scheduler chose it).
    #[error("binding persistentvolume {volume:?} to claim {claim:?}: {source}")]
    BindVolume {
        /// The volume.
        volume: String,
        /// The claim, `namespace/name`.
        claim: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Annotating a claim with the selected node failed.
    #[error("setting the selected node on persistentvolumeclaim {claim:?}: {source}")]
    SelectNode {
        /// The claim, `namespace/name`.
        claim: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading a claim or volume while waiting failed.
    #[error("binding volumes: failed to check {object}: {source}")]
    Check {
        /// What was read, e.g. `persistentvolumeclaim "default/data"`.
        object: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The PV controller dropped the `claimRef` the scheduler wrote.
    #[error("binding volumes: ClaimRef got reset for pv {volume:?}")]
    ClaimRefReset {
        /// The volume.
        volume: String,
    },
    /// The provisioner removed (or changed) the selected node: it could not
    /// provision there.
    #[error("binding volumes: provisioning failed for PVC {claim:?}")]
    ProvisioningFailed {
        /// The claim's name.
        claim: String,
    },
    /// A claim ended up bound to a volume that does not accept the node.
    #[error("binding volumes: pv {volume:?} node affinity doesn't match node {node:?}")]
    NodeAffinity {
        /// The volume.
        volume: String,
        /// The chosen node.
        node: String,
    },
    /// The claims were not bound within the bind timeout.
    #[error("binding volumes: timed out waiting for the condition")]
    Timeout,
    /// The pod went away (or the scheduler is stopping) while waiting.
    #[error("binding volumes: cancelled")]
    Cancelled,
}

/// Writes `plan` and waits, polling every [`POLL_INTERVAL`], until all its
/// claims are bound; gives up after `timeout` or when `cancel` fires.
pub async fn bind_volumes(
    client: &Client,
    plan: &VolumePlan,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), PreBindError> {
    let work = async {
        write(client, plan).await?;
        loop {
            if check(client, plan).await? {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(PreBindError::Cancelled),
        result = tokio::time::timeout(timeout, work) => result.unwrap_or(Err(PreBindError::Timeout)),
    }
}

fn claims_api(client: &Client, claim: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
    Api::namespaced(
        client.clone(),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
    )
}

/// Upstream's `bindAPIUpdate`: pre-binds the static volumes, then annotates
/// the claims to provision. Nothing is rolled back on failure; the next
/// attempt starts from what the API then holds.
async fn write(client: &Client, plan: &VolumePlan) -> Result<(), PreBindError> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for binding in plan.bindings.iter().filter(|b| b.dirty) {
        let name = name_of(binding.volume.as_ref());
        volumes
            .replace(name, &PostParams::default(), &binding.volume)
            .await
            .map_err(|e| PreBindError::BindVolume {
                volume: name.to_string(),
                claim: claim_key(&binding.claim),
                source: Box::new(e),
            })?;
        tracing::info!(volume = name, claim = %claim_key(&binding.claim), node = %plan.node, "pre-bound volume to claim");
    }
    for claim in &plan.provisions {
        let patch = serde_json::json!({
            "metadata": {"annotations": {ANN_SELECTED_NODE: plan.node}}
        });
        claims_api(client, claim)
            .patch(
                name_of(claim.as_ref()),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(|e| PreBindError::SelectNode {
                claim: claim_key(claim),
                source: Box::new(e),
            })?;
        tracing::info!(claim = %claim_key(claim), node = %plan.node, "selected node for claim");
    }
    Ok(())
}

/// Upstream's `checkBindings` against the API: `Ok(true)` once every claim
/// of the plan is fully bound, `Err` when the binding failed for good.
async fn check(client: &Client, plan: &VolumePlan) -> Result<bool, PreBindError> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let read = |object: String| {
        move |e| PreBindError::Check {
            object,
            source: Box::new(e),
        }
    };
    for binding in &plan.bindings {
        let name = name_of(binding.volume.as_ref());
        let volume = volumes
            .get(name)
            .await
            .map_err(read(format!("persistentvolume {name:?}")))?;
        let claim = claims_api(client, &binding.claim)
            .get(name_of(binding.claim.as_ref()))
            .await
            .map_err(read(format!(
                "persistentvolumeclaim {:?}",
                claim_key(&binding.claim)
            )))?;
        if !static_binding_done(&volume, &claim, plan)? {
            return Ok(false);
        }
    }
    for planned in &plan.provisions {
        let claim = claims_api(client, planned)
            .get(name_of(planned.as_ref()))
            .await
            .map_err(read(format!(
                "persistentvolumeclaim {:?}",
                claim_key(planned)
            )))?;
        let bound_to = volume_name_of(&claim);
        let volume = if bound_to.is_empty() {
            None
        } else {
            volumes
                .get_opt(bound_to)
                .await
                .map_err(read(format!("persistentvolume {bound_to:?}")))?
        };
        if !provision_done(&claim, volume.as_ref(), plan)? {
            return Ok(false);
        }
    }
    tracing::debug!(node = %plan.node, "all claims of the pod are bound");
    Ok(true)
}

/// Whether a claim whose static `volume` the scheduler pre-bound is now
/// fully bound; an error if the binding was undone or the volume no longer
/// accepts the node.
pub fn static_binding_done(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    plan: &VolumePlan,
) -> Result<bool, PreBindError> {
    let name = name_of(volume);
    if !node_affinity_matches(volume, &plan.node_labels) {
        return Err(PreBindError::NodeAffinity {
            volume: name.to_string(),
            node: plan.node.clone(),
        });
    }
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if reference.is_none_or(|r| r.uid.as_deref().unwrap_or_default().is_empty()) {
        return Err(PreBindError::ClaimRefReset {
            volume: name.to_string(),
        });
    }
    Ok(fully_bound(claim))
}

/// Whether a claim the scheduler sent to be provisioned is now fully bound
/// (`volume`: the volume it names, if it names one and that exists); an
/// error if the provisioner gave up or the volume does not accept the node.
pub fn provision_done(
    claim: &PersistentVolumeClaim,
    volume: Option<&PersistentVolume>,
    plan: &VolumePlan,
) -> Result<bool, PreBindError> {
    if annotation(claim, ANN_SELECTED_NODE) != Some(plan.node.as_str()) {
        return Err(PreBindError::ProvisioningFailed {
            claim: name_of(claim).to_string(),
        });
    }
    if !volume_name_of(claim).is_empty() {
        // A volume not seen yet may still be on its way.
        let Some(volume) = volume else {
            return Ok(false);
        };
        if !node_affinity_matches(volume, &plan.node_labels) {
            return Err(PreBindError::NodeAffinity {
                volume: name_of(volume).to_string(),
                node: plan.node.clone(),
            });
        }
    }
    Ok(fully_bound(claim))
}
