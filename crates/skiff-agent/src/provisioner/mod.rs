//! The built-in dynamic provisioner for node-local volumes, the equivalent
//! of the local-path-provisioner k3s ships (same provisioner name,
//! `rancher.io/local-path`, and the same default `local-path` class, so
//! manifests written for k3s work unchanged).
//!
//! k3s runs it as one Deployment that starts a helper pod on the target node
//! to make or remove each directory. Here every node agent runs its own copy
//! ([`run`]) and touches only its own disk: a local volume lives on one
//! node, so that node's agent is the one that can make and remove it, with
//! no helper pods and no cross-node coordination. What each copy does:
//!
//! - at start, creates the default StorageClass if it is missing
//!   ([`class::ensure_class`]);
//! - provisions the claims [`claim::decide`] gives to this node: the
//!   directory `<storage dir>/<pv>_<namespace>_<claim>` (world-writable, as
//!   the pods' users are not known), then the PV `pvc-<claim uid>` pointing at
//!   it with node affinity to this node and a claimRef the PV controller
//!   binds. The PV's name comes from the claim's uid and an existing one is
//!   reused, so a retry or a second event never makes a second volume;
//! - reclaims what [`volume::decide`] gives to this node (Released, policy
//!   Delete, made by this provisioner for this node): the directory, then the
//!   PV. The directory is removed only after the checks of [`dirs`], so a
//!   crafted PV path can never make the agent delete anything outside its
//!   storage directory; such a PV gets a `VolumeFailedDelete` event and is
//!   left alone;
//! - expands the bound claims [`resize::wanted`] gives to this node (a class
//!   with `allowVolumeExpansion: true` and a request above the claim's
//!   capacity): a directory has no size to change, so this is the
//!   bookkeeping upstream's external-resizer does, the PV's capacity and the
//!   claim's status ending as after a finished online expansion. The default
//!   class stays as k3s ships it, without `allowVolumeExpansion`, so its
//!   claims cannot grow; a class created with it lets them.
//!
//! Events use upstream's reasons (`Provisioning`, `ProvisioningSucceeded`,
//! `ProvisioningFailed`, `VolumeFailedDelete`) from the component
//! `rancher.io/local-path_<node>`, as upstream's provisioner library names
//! itself `<provisioner>_<identity>`; expansion events (`Resizing`,
//! `VolumeResizeSuccessful`, `VolumeResizeFailed`) come from
//! `external-resizer rancher.io/local-path`, as upstream's resizer names
//! itself `external-resizer <driver>`. Failures that a retry can fix (API,
//! disk) are retried per object with exponential backoff; a claim this
//! provisioner cannot serve (see [`claim::Unsupported`]) and a refused path
//! wait for the object to change.

pub mod claim;
pub mod class;
pub mod dirs;
pub mod resize;
pub mod volume;

#[cfg(test)]
mod tests;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use skiff_client::controller::RunPolicy;
use skiff_client::events::{EventRecorder, EventType};
use tokio_util::sync::CancellationToken;

use self::claim::{ANN_SELECTED_NODE, ClaimAction};
use self::dirs::DirError;
use self::volume::VolumeAction;

/// The provisioner's name, as StorageClasses and PVs spell it (k3s's).
pub const PROVISIONER: &str = "rancher.io/local-path";

/// The StorageClass created at start, as k3s names it.
pub const DEFAULT_CLASS: &str = "local-path";

/// Claims or volumes handled at once; each is a few API calls and a mkdir.
const CONCURRENCY: u16 = 4;

/// The first retry delay after a failure; it doubles per failure.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(120);

/// What one node's provisioner is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerConfig {
    /// This node's name: claims selected for it are provisioned here, and
    /// its PVs' node affinity names it.
    pub node_name: String,
    /// Where volume directories are made (`<agent dir>/storage`). Nothing
    /// outside it is ever deleted.
    pub storage_dir: PathBuf,
    /// Whether this node also takes claims of Immediate-binding classes
    /// (true for the server's own node, so exactly one agent does).
    pub immediate: bool,
    /// The StorageClass created at start if missing.
    pub class_name: String,
}

impl ProvisionerConfig {
    /// The provisioner of `node_name` making volumes in `storage_dir`, not
    /// taking Immediate claims, ensuring [`DEFAULT_CLASS`].
    pub fn new(node_name: impl Into<String>, storage_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_name: node_name.into(),
            storage_dir: storage_dir.into(),
            immediate: false,
            class_name: DEFAULT_CLASS.to_string(),
        }
    }
}

/// Why provisioning or reclaiming one object failed; all are retried.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    /// An API request failed.
    #[error("{action} {name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The object.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The volume's directory could not be made or removed.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The blocking task doing the directory work panicked.
    #[error("storage directory task failed: {0}")]
    Task(String),
}

fn api_error(action: &'static str, name: &str) -> impl FnOnce(kube::Error) -> ProvisionerError {
    let name = name.to_string();
    move |source| ProvisionerError::Api {
        action,
        name,
        source: Box::new(source),
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Runs this node's provisioner until `shutdown`: ensures the StorageClass
/// `config.class_name`, then provisions and reclaims volumes. Failures are
/// logged and retried, never returned.
pub async fn run(client: kube::Client, config: ProvisionerConfig, shutdown: CancellationToken) {
    if let Err(error) = tokio::fs::create_dir_all(&config.storage_dir).await {
        // Provisioning retries making it, with an event on each claim.
        tracing::warn!(dir = %config.storage_dir.display(), %error, "cannot make the storage directory");
    }
    let (classes, writer) = reflector::store();
    let class_events = reflector::reflector(
        writer,
        watcher::watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects();
    let ctx = Arc::new(Context::new(client.clone(), config, classes));

    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let cached_claims = claims.store();
    // A class appearing or changing re-examines its claims.
    let claims = claims.watches_stream(class_events, move |class: StorageClass| {
        let name = class.name_any();
        cached_claims
            .state()
            .into_iter()
            .filter(|c| claim::claim_class(c) == Some(name.as_str()))
            .map(|c| ObjectRef::from_obj(&*c))
            .collect::<Vec<_>>()
    });
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client),
        watcher::Config::default(),
    );
    tokio::join!(
        ensure_class_until_done(&ctx, &shutdown),
        drive(
            "claims",
            claims,
            ctx.clone(),
            |claim, ctx| async move { ctx.reconcile_claim(&claim).await },
            shutdown.clone(),
        ),
        drive(
            "volumes",
            volumes,
            ctx.clone(),
            |pv, ctx| async move { ctx.reclaim(&pv).await },
            shutdown.clone(),
        ),
    );
}

/// Retries [`class::ensure_class`] with backoff until it succeeds or
/// `shutdown`: the API server may not be ready when the agent starts.
async fn ensure_class_until_done(ctx: &Context, shutdown: &CancellationToken) {
    let name = &ctx.config.class_name;
    let mut delay = RETRY_BASE;
    loop {
        match class::ensure_class(&ctx.client, name).await {
            Ok(created) => {
                if created {
                    tracing::info!(class = %name, "created the default StorageClass");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(class = %name, %error, ?delay, "cannot ensure the default StorageClass; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Runs `controller` with `reconcile` until `shutdown`, retrying each
/// object's failures with exponential backoff.
async fn drive<K, R, Fut>(
    what: &'static str,
    controller: Controller<K>,
    ctx: Arc<Context>,
    mut reconcile: R,
    shutdown: CancellationToken,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<(), ProvisionerError>> + Send + 'static,
{
    let policy = RunPolicy {
        concurrency: CONCURRENCY,
        retry_base: RETRY_BASE,
        retry_max: RETRY_MAX,
    };
    let reconcile = move |obj, ctx| {
        let done = reconcile(obj, ctx);
        async move { done.await.map(|()| Action::await_change()) }
    };
    skiff_client::controller::run(what, controller, ctx, policy, reconcile, shutdown).await;
}

/// Runs directory work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DirError> + Send + 'static,
) -> Result<T, ProvisionerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ProvisionerError::Task(e.to_string()))?
        .map_err(ProvisionerError::from)
}

/// What provisioning and reclaiming share.
struct Context {
    client: kube::Client,
    config: ProvisionerConfig,
    recorder: EventRecorder,
    /// Events of expansions, under the resizer's name.
    resizer: EventRecorder,
    /// Every StorageClass, from one watch.
    classes: Store<StorageClass>,
}

impl Context {
    /// Must be called within a tokio runtime (the event recorder spawns its
    /// writer).
    fn new(client: kube::Client, config: ProvisionerConfig, classes: Store<StorageClass>) -> Self {
        let component = format!("{PROVISIONER}_{}", config.node_name);
        Self {
            recorder: EventRecorder::new(client.clone(), &component, ""),
            resizer: EventRecorder::new(
                client.clone(),
                &format!("external-resizer {PROVISIONER}"),
                "",
            ),
            client,
            config,
            classes,
        }
    }

    /// Provisions `claim` if it is this node's to provision, or expands its
    /// volume if it is bound here and asks for more.
    async fn reconcile_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), ProvisionerError> {
        let class =
            claim::claim_class(claim).and_then(|name| self.classes.get(&ObjectRef::new(name)));
        let Some(class) = class else {
            return Ok(());
        };
        let node = &self.config.node_name;
        if let Some(volume) = resize::wanted(claim, &class, node) {
            return self.expand(claim, volume).await;
        }
        match claim::decide(claim, Some(&class), node, self.config.immediate) {
            ClaimAction::Ignore => Ok(()),
            ClaimAction::Provision => self.provision(claim, &class).await,
            ClaimAction::SelectNode => {
                let selected = self.select_node(claim).await?;
                if claim::decide(&selected, Some(&class), node, self.config.immediate)
                    == ClaimAction::Provision
                {
                    self.provision(&selected, &class).await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Writes this node as the claim's selected node. The claim's
    /// resourceVersion goes with the patch, so if another writer got there
    /// first the patch fails and the claim is looked at afresh.
    async fn select_node(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ProvisionerError> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
        let patch = json!({
            "metadata": {
                "resourceVersion": claim.resource_version(),
                "annotations": { ANN_SELECTED_NODE: self.config.node_name },
            }
        });
        api.patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(api_error(
            "selecting this node for claim",
            &claim_key(claim),
        ))
    }

    /// Makes the directory and the PV for `claim` of `class`, unless the PV
    /// exists already.
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
    ) -> Result<(), ProvisionerError> {
        let checked =
            claim::check_supported(claim).map(|capacity| (capacity, claim::volume_name(claim)));
        let (capacity, pv_name) = match checked {
            Ok((capacity, Some(pv_name))) => (capacity, pv_name),
            // Only claims read from the API reach here, and they have uids.
            Ok((_, None)) => return Ok(()),
            Err(unsupported) => {
                self.provisioning_failed(claim, class, &unsupported.to_string());
                return Ok(());
            }
        };
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let existing = volumes
            .get_opt(&pv_name)
            .await
            .map_err(api_error("reading volume", &pv_name))?;
        if existing.is_some() {
            return Ok(());
        }
        let reference = claim.object_ref(&());
        self.recorder.record(
            &reference,
            EventType::Normal,
            "Provisioning",
            &format!(
                "External provisioner is provisioning volume for claim \"{}\"",
                claim_key(claim)
            ),
        );
        let storage_dir = self.config.storage_dir.clone();
        let folder = dirs::folder_name(
            &pv_name,
            &claim.namespace().unwrap_or_default(),
            &claim.name_any(),
        );
        let (path, created) = blocking(move || dirs::create_volume_dir(&storage_dir, &folder))
            .await
            .inspect_err(|e| self.provisioning_failed(claim, class, &e.to_string()))?;
        let pv = claim::build_volume(claim, class, &self.config.node_name, &path, capacity);
        match volumes.create(&PostParams::default(), &pv).await {
            // Made by an earlier attempt whose answer was lost: the same PV.
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => {
                let error = api_error("creating volume", &pv_name)(e);
                self.provisioning_failed(claim, class, &error.to_string());
                if created && let Err(undo) = blocking(move || dirs::remove_if_empty(&path)).await {
                    tracing::warn!(volume = %pv_name, error = %undo, "cannot remove the unused volume directory");
                }
                return Err(error);
            }
        }
        self.recorder.record(
            &reference,
            EventType::Normal,
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {pv_name}"),
        );
        tracing::info!(claim = %claim_key(claim), volume = %pv_name, "provisioned");
        Ok(())
    }

    /// Expands `claim`'s volume `pv_name` if it is this node's (see
    /// [`resize`]): marks the claim resizing, grows the PV's capacity, marks
    /// the claim resized. Each status write carries the resourceVersion it
    /// was computed from, so a claim changed meanwhile is looked at afresh.
    async fn expand(
        &self,
        claim: &PersistentVolumeClaim,
        pv_name: &str,
    ) -> Result<(), ProvisionerError> {
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let Some(pv) = volumes
            .get_opt(pv_name)
            .await
            .map_err(api_error("reading volume", pv_name))?
        else {
            return Ok(());
        };
        let node = &self.config.node_name;
        let Some(expansion) = resize::plan(claim, &pv, node, jiff::Timestamp::now()) else {
            return Ok(());
        };
        let key = claim_key(claim);
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
        let reference = claim.object_ref(&());
        let started = self
            .patch_claim_status(&claims, claim, &expansion.started)
            .await
            .map_err(api_error("marking claim resizing", &key))?;
        self.resizer.record(
            &reference,
            EventType::Normal,
            "Resizing",
            &format!("External resizer is resizing volume {pv_name}"),
        );
        if expansion.grow_volume {
            let patch = json!({"spec": {"capacity": {"storage": expansion.size}}});
            if let Err(e) = volumes
                .patch(pv_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                let error = api_error("growing volume", pv_name)(e);
                self.resizer.record(
                    &reference,
                    EventType::Warning,
                    "VolumeResizeFailed",
                    &error.to_string(),
                );
                return Err(error);
            }
        }
        self.patch_claim_status(&claims, &started, &expansion.finished)
            .await
            .map_err(api_error("marking claim resized", &key))?;
        self.resizer.record(
            &reference,
            EventType::Normal,
            "VolumeResizeSuccessful",
            "Resize volume succeeded",
        );
        tracing::info!(claim = %key, volume = %pv_name, size = %expansion.size.0, "expanded");
        Ok(())
    }

    /// Merge-patches the status of `claim` with `patch`, pinned to the
    /// claim's resourceVersion.
    async fn patch_claim_status(
        &self,
        claims: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
        patch: &serde_json::Value,
    ) -> Result<PersistentVolumeClaim, kube::Error> {
        let mut patch = patch.clone();
        patch["metadata"] = json!({"resourceVersion": claim.resource_version()});
        claims
            .patch_status(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
    }

    fn provisioning_failed(&self, claim: &PersistentVolumeClaim, class: &StorageClass, why: &str) {
        self.recorder.record(
            &claim.object_ref(&()),
            EventType::Warning,
            "ProvisioningFailed",
            &format!(
                "failed to provision volume with StorageClass \"{}\": {why}",
                class.name_any()
            ),
        );
    }

    /// Deletes the directory and then `pv` itself if it is this node's to
    /// reclaim. A path the safety checks refuse is reported and left alone.
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<(), ProvisionerError> {
        let name = pv.name_any();
        let path = match volume::decide(pv, &self.config.node_name) {
            VolumeAction::Ignore => return Ok(()),
            VolumeAction::NoPath => {
                self.delete_failed(pv, "the volume has no single hostPath or local path");
                return Ok(());
            }
            VolumeAction::Delete { path } => path,
        };
        let storage_dir = self.config.storage_dir.clone();
        let pv_name = name.clone();
        match blocking(move || dirs::remove_volume_dir(&storage_dir, &pv_name, &path)).await {
            Ok(removed) => {
                if removed {
                    tracing::info!(volume = %name, "deleted the volume directory");
                }
            }
            Err(error @ ProvisionerError::Dir(DirError::Refused { .. })) => {
                tracing::warn!(volume = %name, %error, "not deleting");
                self.delete_failed(pv, &error.to_string());
                return Ok(());
            }
            Err(error) => {
                self.delete_failed(pv, &error.to_string());
                return Err(error);
            }
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pv.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match volumes.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_error("deleting volume", &name)(e)),
        }
    }

    fn delete_failed(&self, pv: &PersistentVolume, why: &str) {
        self.recorder.record(
            &pv.object_ref(&()),
            EventType::Warning,
            "VolumeFailedDelete",
            &format!("failed to delete volume {}: {why}", pv.name_any()),
        );
    }
}

/// `namespace/name`, as upstream quotes claims in events.
fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    )
}
