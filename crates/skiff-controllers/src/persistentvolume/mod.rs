//! PersistentVolume binder: pairs claims with volumes, as upstream's
//! `persistentvolume-controller` (pkg/controller/volume/persistentvolume).
//!
//! Two reconcilers share one context. The claim side ([`plan::sync_claim`])
//! binds a `Pending` claim to the best matching volume ([`matching`]): the
//! one its `spec.volumeName` names, one whose `claimRef` already names the
//! claim (pre-bound by its creator, or made for it by a provisioner), or
//! the smallest `Available` volume of its class that satisfies its access
//! modes, size and selector. When nothing fits it hands the claim to its
//! class's provisioner by annotating it with
//! `volume.kubernetes.io/storage-provisioner` (and the beta key), at once
//! for `Immediate` classes and, for `WaitForFirstConsumer` ones, once the
//! scheduler has chosen a node (`volume.kubernetes.io/selected-node`).
//! Skiff provisions nothing itself: every provisioner is external (the
//! node agent's `rancher.io/local-path` one creates the volume, with a
//! `claimRef` to the claim, which the next sync binds).
//!
//! The volume side ([`plan::sync_volume`]) keeps each volume's phase:
//! `Available` while unused or only reserved, `Bound` while its claim points
//! back, and `Released` once the claim is gone, after which the reclaim
//! policy applies: `Retain` keeps the volume (and its data) as is; `Delete`
//! is left to the provisioner that made the volume; a volume with no deleter
//! (static volumes: Skiff has no in-tree volume plugins) becomes `Failed`.
//!
//! Both sides act on caches that may lag: every spec and status write pins
//! the resourceVersion the decision was made from, so two claims racing for
//! one volume cannot both win (the loser gets a conflict and retries on
//! fresher caches), and before a volume is released for a claim the cache
//! does not show, the claim is read from the API server. Besides the
//! changes that concern them (a claim change wakes its volume, a volume
//! change its claim, a new free volume or StorageClass the claims that may
//! want it), everything is re-synced every `sync_period`, as upstream does.

pub mod matching;
pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use skiff_client::events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::informer::{Informer, InformerFactory};
use crate::runtime::{Clock, SystemClock, run_controller};
use matching::{annotation, claim_class, claim_has_class, default_class, volume_class};
use plan::{ClaimWorld, Step, sync_claim, sync_volume};

/// The component name on events.
const COMPONENT: &str = "persistentvolume-controller";

/// On a claim: binding has happened at least once.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the binder, not the object's creator, made the
/// binding.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: the provisioner that made it (and deletes it).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim: the provisioner that should make its volume.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta spelling of [`ANN_STORAGE_PROVISIONER`], still written.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a claim: the node the scheduler chose for a `WaitForFirstConsumer`
/// volume.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a claim or volume: the CSI driver an in-tree plugin migrated to; the
/// binder then leaves reclaiming alone.
pub const ANN_MIGRATED_TO: &str = "pv.kubernetes.io/migrated-to";

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentVolumeConfig {
    /// Run the binder.
    pub enabled: bool,
    /// How often every claim and volume is re-synced
    /// (`--pvclaimbinder-sync-period`, 15 s).
    pub sync_period: Duration,
    /// Hand unmatched claims of a class to its provisioner
    /// (`--enable-dynamic-provisioning`, on).
    pub dynamic_provisioning: bool,
}

impl Default for PersistentVolumeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sync_period: Duration::from_secs(15),
            dynamic_provisioning: true,
        }
    }
}

/// An API call that failed; the object is re-synced with backoff.
/// Conflicts are routine (another writer, or a cache that lagged) and are
/// retried the same way.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {name}: {source}")]
pub struct BinderError {
    action: &'static str,
    kind: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    pods: Informer<Pod>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
    config: PersistentVolumeConfig,
}

/// Builds the binder on `factory`'s informers; the returned future runs it
/// (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: PersistentVolumeConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock (for volumes'
/// `status.lastPhaseTransitionTime`).
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: PersistentVolumeConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        claims: factory.informer(),
        volumes: factory.informer(),
        classes: factory.informer(),
        pods: factory.informer(),
        clock,
        config,
    });
    let claim_changes = ctx.claims.subscribe();
    let claim_changes_for_volumes = ctx.claims.subscribe();
    let volume_changes = ctx.volumes.subscribe();
    let volume_changes_for_claims = ctx.volumes.subscribe();
    let class_changes = ctx.classes.subscribe();
    async move {
        ctx.claims.wait_synced().await;
        ctx.volumes.wait_synced().await;
        ctx.classes.wait_synced().await;
        ctx.pods.wait_synced().await;
        let period = ctx.config.sync_period;
        let claims = Controller::for_shared_stream(claim_changes, ctx.claims.store())
            .watches_shared_stream(volume_changes_for_claims, claims_wanting_volume(&ctx))
            .watches_shared_stream(class_changes, claims_wanting_class(&ctx))
            .reconcile_all_on(ticks(period));
        let volumes = Controller::for_shared_stream(volume_changes, ctx.volumes.store())
            .watches_shared_stream(claim_changes_for_volumes, volumes_of_claim(&ctx))
            .reconcile_all_on(ticks(period));
        let claims = run_controller(
            "persistentvolume-claims",
            claims,
            Arc::clone(&ctx),
            reconcile_claim,
            shutdown.clone(),
        );
        let volumes = run_controller(
            "persistentvolume-volumes",
            volumes,
            ctx,
            reconcile_volume,
            shutdown,
        );
        tokio::join!(claims, volumes);
    }
}

/// A tick every `period` (the first one after a period: the caches have
/// just been synced and every object reconciled once).
fn ticks(period: Duration) -> impl futures::Stream<Item = ()> + Send + use<> {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut interval| async move {
            interval.tick().await;
            Some(((), interval))
        },
    )
}

fn is_unbound(claim: &PersistentVolumeClaim) -> bool {
    annotation(&claim.metadata, ANN_BIND_COMPLETED).is_none()
}

/// A changed volume wakes the claim its `claimRef` names; a free one wakes
/// the unbound claims of its class, which may want it.
fn claims_wanting_volume(
    ctx: &Arc<Context>,
) -> impl Fn(Arc<PersistentVolume>) -> Vec<ObjectRef<PersistentVolumeClaim>>
+ Send
+ Sync
+ 'static
+ use<> {
    let claims = ctx.claims.clone();
    move |volume| match volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        Some(r) => {
            let name = r.name.clone().unwrap_or_default();
            let namespace = r.namespace.clone().unwrap_or_default();
            vec![ObjectRef::new(&name).within(&namespace)]
        }
        None => claims
            .list()
            .iter()
            .filter(|c| is_unbound(c) && claim_class(c) == volume_class(&volume))
            .map(|c| ObjectRef::from_obj(&**c))
            .collect(),
    }
}

/// A changed StorageClass wakes the unbound claims of that class, and, when
/// it is the default, the unbound claims without a class.
fn claims_wanting_class(
    ctx: &Arc<Context>,
) -> impl Fn(Arc<StorageClass>) -> Vec<ObjectRef<PersistentVolumeClaim>> + Send + Sync + 'static + use<>
{
    let (claims, classes) = (ctx.claims.clone(), ctx.classes.clone());
    move |class| {
        let name = class.name_any();
        let is_default = default_class(&classes.list()).is_some_and(|d| d.name_any() == name);
        claims
            .list()
            .iter()
            .filter(|c| is_unbound(c))
            .filter(|c| claim_class(c) == name || (is_default && !claim_has_class(c)))
            .map(|c| ObjectRef::from_obj(&**c))
            .collect()
    }
}

/// A changed (or deleted) claim wakes the volume it names and the volumes
/// whose `claimRef` names it.
fn volumes_of_claim(
    ctx: &Arc<Context>,
) -> impl Fn(Arc<PersistentVolumeClaim>) -> Vec<ObjectRef<PersistentVolume>>
+ Send
+ Sync
+ 'static
+ use<> {
    let volumes = ctx.volumes.clone();
    move |claim| {
        let mut refs: Vec<ObjectRef<PersistentVolume>> = volumes
            .list()
            .iter()
            .filter(|v| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| {
                        r.name == claim.metadata.name && r.namespace == claim.metadata.namespace
                    })
            })
            .map(|v| ObjectRef::from_obj(&**v))
            .collect();
        if let Some(name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
            && !name.is_empty()
        {
            refs.push(ObjectRef::new(name));
        }
        refs
    }
}

fn api_error(
    action: &'static str,
    kind: &'static str,
    name: &str,
    source: kube::Error,
) -> BinderError {
    BinderError {
        action,
        kind,
        name: name.to_string(),
        source,
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, BinderError> {
    let mut volumes = ctx.volumes.list();
    if let Some(name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
        && !name.is_empty()
        && ctx.volumes.get("", name).is_none()
    {
        // Never call a claim Lost, nor its volume missing, on a lagging
        // cache alone.
        let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
        let live = api
            .get_opt(name)
            .await
            .map_err(|e| api_error("get", "PersistentVolume", name, e))?;
        volumes.extend(live.map(Arc::new));
    }
    let classes = ctx.classes.list();
    let pods = ctx
        .pods
        .list_namespace(&claim.namespace().unwrap_or_default());
    let world = ClaimWorld {
        volumes: &volumes,
        classes: &classes,
        pods: &pods,
        dynamic_provisioning: ctx.config.dynamic_provisioning,
    };
    let steps = sync_claim(&claim, &world);
    Writer::new(&ctx, Some(&claim)).run(steps).await?;
    Ok(Action::await_change())
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> Result<Action, BinderError> {
    let claim = claim_of(&ctx, &volume).await?;
    let steps = sync_volume(&volume, claim.as_deref());
    Writer::new(&ctx, claim.as_deref()).run(steps).await?;
    Ok(Action::await_change())
}

/// The claim the volume's `claimRef` names, from the cache or, when the
/// cache does not show it (or shows another claim of that name) and the
/// volume is not already released, from the API server: a claim created by
/// a provisioner or binder elsewhere may not have reached the cache yet, and
/// releasing its volume would be wrong.
async fn claim_of(
    ctx: &Context,
    volume: &PersistentVolume,
) -> Result<Option<Arc<PersistentVolumeClaim>>, BinderError> {
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Ok(None);
    };
    let uid = claim_ref.uid.as_deref().unwrap_or("");
    if uid.is_empty() {
        return Ok(None);
    }
    let namespace = claim_ref.namespace.as_deref().unwrap_or("");
    let name = claim_ref.name.as_deref().unwrap_or("");
    let cached = ctx.claims.get(namespace, name);
    match cached {
        Some(claim) if claim.metadata.uid.as_deref() == Some(uid) => return Ok(Some(claim)),
        Some(_) => {}
        None => {
            let phase = matching::volume_phase(volume);
            if phase == "Released" || phase == "Failed" {
                return Ok(None);
            }
        }
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map(|claim| claim.map(Arc::new))
        .map_err(|e| api_error("get", "PersistentVolumeClaim", name, e))
}

/// Carries out a plan's steps in order, pinning each write to the
/// resourceVersion the plan saw (or the one the previous write returned).
struct Writer<'a> {
    ctx: &'a Context,
    claim: Option<&'a PersistentVolumeClaim>,
    claim_version: Option<String>,
    volume_versions: HashMap<String, String>,
}

/// What a write found.
enum Outcome {
    Done,
    /// The object is gone; the rest of the plan is moot.
    Gone,
}

impl<'a> Writer<'a> {
    fn new(ctx: &'a Context, claim: Option<&'a PersistentVolumeClaim>) -> Self {
        Self {
            ctx,
            claim,
            claim_version: claim.and_then(|c| c.metadata.resource_version.clone()),
            volume_versions: HashMap::new(),
        }
    }

    async fn run(mut self, steps: Vec<Step>) -> Result<(), BinderError> {
        for step in steps {
            if let Outcome::Gone = self.step(step).await? {
                break;
            }
        }
        Ok(())
    }

    fn volume_version(&self, volume: &PersistentVolume) -> Option<String> {
        self.volume_versions
            .get(&volume.name_any())
            .cloned()
            .or_else(|| volume.metadata.resource_version.clone())
    }

    async fn step(&mut self, step: Step) -> Result<Outcome, BinderError> {
        match step {
            Step::BindVolume {
                volume,
                claim_ref,
                bound_by_controller,
            } => {
                let mut patch = json!({
                    "metadata": {"resourceVersion": self.volume_version(&volume)},
                    "spec": {"claimRef": claim_ref},
                });
                if bound_by_controller {
                    patch["metadata"]["annotations"] = json!({ANN_BOUND_BY_CONTROLLER: "yes"});
                }
                self.patch_volume("bind", &volume, patch, false).await
            }
            Step::UnbindVolume {
                volume,
                bound_by_controller,
            } => {
                let patch = if bound_by_controller {
                    json!({
                        "metadata": {
                            "resourceVersion": self.volume_version(&volume),
                            "annotations": {ANN_BOUND_BY_CONTROLLER: null},
                        },
                        "spec": {"claimRef": null},
                    })
                } else {
                    json!({
                        "metadata": {"resourceVersion": self.volume_version(&volume)},
                        "spec": {"claimRef": {"uid": null}},
                    })
                };
                self.patch_volume("unbind", &volume, patch, false).await
            }
            Step::VolumePhase {
                volume,
                phase,
                message,
            } => {
                let patch = json!({
                    "metadata": {"resourceVersion": self.volume_version(&volume)},
                    "status": {
                        "phase": phase.as_str(),
                        "message": message,
                        "lastPhaseTransitionTime": Time(self.ctx.clock.now()),
                    },
                });
                self.patch_volume("update phase of", &volume, patch, true)
                    .await
            }
            Step::BindClaim {
                volume_name,
                bound_by_controller,
                bind_completed,
            } => {
                let mut annotations = serde_json::Map::new();
                if bound_by_controller {
                    annotations.insert(ANN_BOUND_BY_CONTROLLER.into(), json!("yes"));
                }
                if bind_completed {
                    annotations.insert(ANN_BIND_COMPLETED.into(), json!("yes"));
                }
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"volumeName": volume_name},
                });
                self.patch_claim("bind", patch, false).await
            }
            Step::ClaimStatus(status) => {
                let patch = json!({"status": {
                    "phase": status.phase,
                    "accessModes": status.access_modes,
                    "capacity": status.capacity,
                }});
                self.patch_claim("update status of", patch, true).await
            }
            Step::AssignClass(class) => {
                let patch = json!({"spec": {"storageClassName": class}});
                self.patch_claim("assign the default class to", patch, false)
                    .await
            }
            Step::SetProvisioner(provisioner) => {
                let patch = json!({"metadata": {"annotations": {
                    ANN_BETA_STORAGE_PROVISIONER: provisioner,
                    ANN_STORAGE_PROVISIONER: provisioner,
                }}});
                self.patch_claim("set the provisioner of", patch, false)
                    .await
            }
            Step::Event {
                regarding,
                event_type,
                reason,
                message,
            } => {
                self.ctx
                    .recorder
                    .record(&regarding, event_type, reason, &message);
                Ok(Outcome::Done)
            }
        }
    }

    async fn patch_volume(
        &mut self,
        action: &'static str,
        volume: &PersistentVolume,
        patch: Value,
        status: bool,
    ) -> Result<Outcome, BinderError> {
        let api: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
        let name = volume.name_any();
        let params = PatchParams::default();
        let result = if status {
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
        } else {
            api.patch(&name, &params, &Patch::Merge(&patch)).await
        };
        match result {
            Ok(written) => {
                if let Some(version) = written.metadata.resource_version {
                    self.volume_versions.insert(name, version);
                }
                Ok(Outcome::Done)
            }
            Err(e) if is_not_found(&e) => Ok(Outcome::Gone),
            Err(e) => Err(api_error(action, "PersistentVolume", &name, e)),
        }
    }

    async fn patch_claim(
        &mut self,
        action: &'static str,
        mut patch: Value,
        status: bool,
    ) -> Result<Outcome, BinderError> {
        let Some(claim) = self.claim else {
            return Ok(Outcome::Done);
        };
        patch["metadata"]["resourceVersion"] = json!(self.claim_version);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.ctx.client.clone(),
            &claim.namespace().unwrap_or_default(),
        );
        let name = claim.name_any();
        let params = PatchParams::default();
        let result = if status {
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
        } else {
            api.patch(&name, &params, &Patch::Merge(&patch)).await
        };
        match result {
            Ok(written) => {
                self.claim_version = written.metadata.resource_version;
                Ok(Outcome::Done)
            }
            Err(e) if is_not_found(&e) => Ok(Outcome::Gone),
            Err(e) => Err(api_error(action, "PersistentVolumeClaim", &name, e)),
        }
    }
}
