//! The binder's decisions: for one claim or one volume and what the caches
//! show, the writes and events upstream's PV controller would make, in order.
//!
//! Binding is a two-sided pointer, `volume.spec.claimRef` and
//! `claim.spec.volumeName`, written without a transaction: the volume first,
//! then its phase, then the claim, then the claim's status. Every step is
//! planned from the objects as first seen (a step never depends on what an
//! earlier one wrote), so a failure anywhere leaves a state from which the
//! next sync of either object finishes the job. The claim's
//! `pv.kubernetes.io/bind-completed` annotation marks that binding once
//! happened, which is what tells a claim whose volume vanished (`Lost`)
//! from one not yet bound (`Pending`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::{Resource, ResourceExt};
use skiff_api::quantity::Quantity;
use skiff_client::events::EventType;

use super::matching::{
    annotation, check_volume_satisfies_claim, claim_class, claim_has_class, default_class,
    find_best_match, is_delay_binding, is_volume_bound_to_claim, volume_mode_mismatch,
    volume_phase,
};
use super::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_MIGRATED_TO, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
use crate::volume_protection::{is_terminated, referenced_claims};

/// A claim's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPhase {
    /// Not bound yet.
    Pending,
    /// Bound to a volume.
    Bound,
    /// Was bound, but its volume is gone or belongs to another claim.
    Lost,
}

impl ClaimPhase {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Bound => "Bound",
            Self::Lost => "Lost",
        }
    }
}

/// A volume's `status.phase` as the binder sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumePhase {
    /// Free (or reserved for a claim that has not bound yet).
    Available,
    /// Bound to a claim.
    Bound,
    /// Its claim is gone; the reclaim policy decides what follows.
    Released,
    /// Reclaiming failed.
    Failed,
}

impl VolumePhase {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::Bound => "Bound",
            Self::Released => "Released",
            Self::Failed => "Failed",
        }
    }
}

/// One write or event, to be carried out in order; a failed write stops the
/// rest.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Point `volume.spec.claimRef` at the claim, and annotate the volume
    /// `bound-by-controller` when the binder (not the volume's creator)
    /// chose the pairing.
    BindVolume {
        /// The volume as seen.
        volume: Arc<PersistentVolume>,
        /// The reference to write.
        claim_ref: ObjectReference,
        /// Add `pv.kubernetes.io/bound-by-controller`.
        bound_by_controller: bool,
    },
    /// Undo a binding whose claim went to another volume: a binding the
    /// binder made is dropped with its annotation; one the volume's creator
    /// made keeps naming the claim and loses only the UID.
    UnbindVolume {
        /// The volume as seen.
        volume: Arc<PersistentVolume>,
        /// The binder made the binding (the volume is annotated so).
        bound_by_controller: bool,
    },
    /// Set the volume's phase (and `status.message`, cleared when `None`).
    VolumePhase {
        /// The volume as seen.
        volume: Arc<PersistentVolume>,
        /// The new phase.
        phase: VolumePhase,
        /// Why, for `Failed`.
        message: Option<String>,
    },
    /// Set the claim's `spec.volumeName` and binding annotations.
    BindClaim {
        /// The volume's name.
        volume_name: String,
        /// Add `pv.kubernetes.io/bound-by-controller`.
        bound_by_controller: bool,
        /// Add `pv.kubernetes.io/bind-completed`.
        bind_completed: bool,
    },
    /// Write the claim's phase, access modes and capacity (absent ones are
    /// cleared).
    ClaimStatus(PersistentVolumeClaimStatus),
    /// Give a claim without a class the default one (upstream's retroactive
    /// default StorageClass assignment).
    AssignClass(String),
    /// Annotate the claim with the provisioner that should create its
    /// volume (both the GA and the beta key).
    SetProvisioner(String),
    /// Record an event.
    Event {
        /// The object the event is about.
        regarding: ObjectReference,
        /// Normal or Warning.
        event_type: EventType,
        /// Upstream's reason.
        reason: &'static str,
        /// Upstream's message.
        message: String,
    },
}

/// What the caches show around a claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimWorld<'a> {
    /// Every volume (a volume the claim names but the cache lacks may be
    /// added from a live read).
    pub volumes: &'a [Arc<PersistentVolume>],
    /// Every StorageClass.
    pub classes: &'a [Arc<StorageClass>],
    /// The pods of the claim's namespace.
    pub pods: &'a [Arc<Pod>],
    /// `--enable-dynamic-provisioning`.
    pub dynamic_provisioning: bool,
}

impl ClaimWorld<'_> {
    fn class(&self, name: &str) -> Option<&StorageClass> {
        self.classes
            .iter()
            .find(|c| c.name_any() == name)
            .map(|c| &**c)
    }

    fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.volumes.iter().find(|v| v.name_any() == name)
    }
}

fn event(
    regarding: ObjectReference,
    event_type: EventType,
    reason: &'static str,
    message: impl Into<String>,
) -> Step {
    Step::Event {
        regarding,
        event_type,
        reason,
        message: message.into(),
    }
}

fn claim_ref(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

fn volume_name_of(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// What to do for `claim` (upstream's `syncClaim`).
pub fn sync_claim(claim: &PersistentVolumeClaim, world: &ClaimWorld<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    if annotation(&claim.metadata, ANN_BIND_COMPLETED).is_none() {
        sync_unbound_claim(claim, world, &mut steps);
    } else {
        sync_bound_claim(claim, world, &mut steps);
    }
    steps
}

fn sync_unbound_claim(
    claim: &PersistentVolumeClaim,
    world: &ClaimWorld<'_>,
    steps: &mut Vec<Step>,
) {
    let requested = volume_name_of(claim);
    if requested.is_empty() {
        let class_name = claim_class(claim);
        let class = (!class_name.is_empty())
            .then(|| world.class(class_name))
            .flatten();
        let delay_binding = is_delay_binding(class);
        if let Some(volume) = find_best_match(claim, world.volumes, delay_binding) {
            bind(volume, claim, steps);
            return;
        }
        if !claim_has_class(claim)
            && let Some(default) = default_class(world.classes)
        {
            steps.push(Step::AssignClass(default.name_any()));
            return;
        }
        if delay_binding && annotation(&claim.metadata, ANN_SELECTED_NODE).is_none() {
            steps.push(wait_for_consumer_event(claim, world.pods));
        } else if !class_name.is_empty() {
            if world.dynamic_provisioning {
                provision(claim, class_name, class, steps);
            }
        } else {
            steps.push(event(
                claim.object_ref(&()),
                EventType::Normal,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            ));
        }
        steps.extend(claim_status(claim, ClaimPhase::Pending, None));
        return;
    }
    match world.volume(requested) {
        None => steps.extend(claim_status(claim, ClaimPhase::Pending, None)),
        Some(volume) if volume.spec.as_ref().is_none_or(|s| s.claim_ref.is_none()) => {
            match check_volume_satisfies_claim(volume, claim) {
                Ok(()) => bind(volume, claim, steps),
                Err(reason) => {
                    steps.push(event(
                        claim.object_ref(&()),
                        EventType::Warning,
                        "VolumeMismatch",
                        format!("Cannot bind to requested volume \"{requested}\": {reason}"),
                    ));
                    steps.extend(claim_status(claim, ClaimPhase::Pending, None));
                }
            }
        }
        Some(volume) if is_volume_bound_to_claim(volume, claim) => bind(volume, claim, steps),
        Some(_) => {
            steps.push(event(
                claim.object_ref(&()),
                EventType::Warning,
                "FailedBinding",
                format!("volume \"{requested}\" already bound to a different claim."),
            ));
            // A claim the binder itself pointed here "can never" lose the
            // race (upstream); leave its status alone and let a later sync
            // sort it out.
            if annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER).is_none() {
                steps.extend(claim_status(claim, ClaimPhase::Pending, None));
            }
        }
    }
}

fn sync_bound_claim(claim: &PersistentVolumeClaim, world: &ClaimWorld<'_>, steps: &mut Vec<Step>) {
    let name = volume_name_of(claim);
    if name.is_empty() {
        lost(
            claim,
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            steps,
        );
        return;
    }
    let Some(volume) = world.volume(name) else {
        lost(
            claim,
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            steps,
        );
        return;
    };
    match volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        None => bind(volume, claim, steps),
        Some(r)
            if r.uid.as_deref().unwrap_or("") == claim.metadata.uid.as_deref().unwrap_or("") =>
        {
            bind(volume, claim, steps);
        }
        Some(_) => lost(
            claim,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
            steps,
        ),
    }
}

fn lost(claim: &PersistentVolumeClaim, reason: &'static str, message: &str, steps: &mut Vec<Step>) {
    if claim_phase(claim) == ClaimPhase::Lost.as_str() {
        return;
    }
    steps.extend(claim_status(claim, ClaimPhase::Lost, None));
    steps.push(event(
        claim.object_ref(&()),
        EventType::Warning,
        reason,
        message,
    ));
}

/// `WaitForFirstConsumer`, or `WaitForPodScheduled` naming the pods that
/// use the claim but are not scheduled yet.
fn wait_for_consumer_event(claim: &PersistentVolumeClaim, pods: &[Arc<Pod>]) -> Step {
    let name = claim.name_any();
    let mut waiting: Vec<String> = pods
        .iter()
        .filter(|p| !is_terminated(p))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("")
                .is_empty()
        })
        .filter(|p| referenced_claims(p).contains(&name))
        .map(|p| p.name_any())
        .collect();
    waiting.sort();
    let (reason, message) = match waiting.as_slice() {
        [] => (
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".to_string(),
        ),
        [one] => (
            "WaitForPodScheduled",
            format!("waiting for pod {one} to be scheduled"),
        ),
        many => (
            "WaitForPodScheduled",
            format!("waiting for pods {} to be scheduled", many.join(",")),
        ),
    };
    event(claim.object_ref(&()), EventType::Normal, reason, message)
}

/// Hands the claim to its class's provisioner: external provisioners
/// (anything outside `kubernetes.io/`) are told through annotations; Skiff
/// has no in-tree ones, so a `kubernetes.io/` provisioner fails as
/// upstream's plugin lookup does.
fn provision(
    claim: &PersistentVolumeClaim,
    class_name: &str,
    class: Option<&StorageClass>,
    steps: &mut Vec<Step>,
) {
    let regarding = claim.object_ref(&());
    let Some(class) = class else {
        steps.push(event(
            regarding,
            EventType::Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        ));
        return;
    };
    let provisioner = class.provisioner.as_str();
    if provisioner.starts_with("kubernetes.io/") {
        steps.push(event(
            regarding,
            EventType::Warning,
            "ProvisioningFailed",
            format!("no volume plugin matched name: {provisioner}"),
        ));
        return;
    }
    if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner) {
        steps.push(Step::SetProvisioner(provisioner.to_string()));
    }
    steps.push(event(
        regarding,
        EventType::Normal,
        "ExternalProvisioning",
        format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
             or manually by the system administrator. If volume creation is delayed, please verify \
             that the provisioner is running and correctly registered."
        ),
    ));
}

/// The steps that bind `volume` and `claim` together, skipping what is
/// already in place.
fn bind(volume: &Arc<PersistentVolume>, claim: &PersistentVolumeClaim, steps: &mut Vec<Step>) {
    let current = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let points_here = current.is_some_and(|r| {
        r.name == claim.metadata.name
            && r.namespace == claim.metadata.namespace
            && r.uid == claim.metadata.uid
    });
    if !points_here {
        steps.push(Step::BindVolume {
            volume: Arc::clone(volume),
            claim_ref: claim_ref(claim),
            bound_by_controller: !is_volume_bound_to_claim(volume, claim)
                && annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER).is_none(),
        });
    }
    if volume_phase(volume) != VolumePhase::Bound.as_str() {
        steps.push(Step::VolumePhase {
            volume: Arc::clone(volume),
            phase: VolumePhase::Bound,
            message: None,
        });
    }
    let volume_name = volume.name_any();
    let rename = volume_name_of(claim) != volume_name;
    let bound_by_controller =
        rename && annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER).is_none();
    let bind_completed = annotation(&claim.metadata, ANN_BIND_COMPLETED).is_none();
    if rename || bind_completed {
        steps.push(Step::BindClaim {
            volume_name,
            bound_by_controller,
            bind_completed,
        });
    }
    steps.extend(claim_status(claim, ClaimPhase::Bound, Some(volume)));
}

fn same_storage(a: Option<&ApiQuantity>, b: &ApiQuantity) -> bool {
    let parse = |q: &ApiQuantity| Quantity::parse(&q.0).ok();
    a.and_then(parse).is_some_and(|a| Some(a) == parse(b))
}

/// The claim status upstream's `updateClaimStatus` would write, if it
/// differs from the current one: the phase, the volume's access modes, and
/// the volume's capacity when the claim becomes bound (a bound claim's
/// capacity may deliberately differ and is kept). Without a volume, access
/// modes and capacity are cleared.
fn claim_status(
    claim: &PersistentVolumeClaim,
    phase: ClaimPhase,
    volume: Option<&PersistentVolume>,
) -> Option<Step> {
    let current = claim.status.clone().unwrap_or_default();
    let changes_phase = current.phase.as_deref() != Some(phase.as_str());
    let mut dirty = changes_phase;
    let mut next = PersistentVolumeClaimStatus {
        phase: Some(phase.as_str().to_string()),
        access_modes: None,
        capacity: None,
        ..current.clone()
    };
    match volume.and_then(|v| v.spec.as_ref()) {
        None => dirty |= current.access_modes.is_some() || current.capacity.is_some(),
        Some(spec) => {
            next.access_modes = spec.access_modes.clone();
            dirty |= current.access_modes != spec.access_modes;
            next.capacity = current.capacity.clone();
            let volume_storage = spec.capacity.as_ref().and_then(|c| c.get("storage"));
            if changes_phase
                && let Some(volume_storage) = volume_storage
                && !same_storage(
                    current.capacity.as_ref().and_then(|c| c.get("storage")),
                    volume_storage,
                )
            {
                next.capacity = spec.capacity.clone();
                dirty = true;
            }
        }
    }
    dirty.then_some(Step::ClaimStatus(next))
}

/// Plans a volume's phase changes, tracking the phase the earlier steps
/// leave behind.
struct VolumeSteps<'a> {
    volume: &'a Arc<PersistentVolume>,
    phase: String,
    steps: Vec<Step>,
}

impl<'a> VolumeSteps<'a> {
    fn new(volume: &'a Arc<PersistentVolume>) -> Self {
        Self {
            volume,
            phase: volume_phase(volume).to_string(),
            steps: Vec::new(),
        }
    }

    fn set_phase(&mut self, phase: VolumePhase, message: Option<String>) -> bool {
        if self.phase == phase.as_str() {
            return false;
        }
        self.phase = phase.as_str().to_string();
        self.steps.push(Step::VolumePhase {
            volume: Arc::clone(self.volume),
            phase,
            message,
        });
        true
    }

    /// Upstream's `updateVolumePhaseWithEvent`: the event only on a change.
    fn fail(&mut self, reason: &'static str, message: String) {
        if self.set_phase(VolumePhase::Failed, Some(message.clone())) {
            self.steps.push(event(
                self.volume.object_ref(&()),
                EventType::Warning,
                reason,
                message,
            ));
        }
    }

    /// `Released` (unless already Released or Failed), then the reclaim
    /// policy.
    fn release(&mut self) {
        if self.phase != VolumePhase::Released.as_str()
            && self.phase != VolumePhase::Failed.as_str()
        {
            self.set_phase(VolumePhase::Released, None);
        }
        self.reclaim();
    }

    fn reclaim(&mut self) {
        let volume = self.volume;
        if annotation(&volume.metadata, ANN_MIGRATED_TO).is_some_and(|d| !d.is_empty()) {
            return;
        }
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Retain" => {}
            "Delete" if has_external_deleter(volume) => {}
            "Delete" => self.fail(
                "VolumeFailedDelete",
                format!(
                    "error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                    volume.name_any()
                ),
            ),
            "Recycle" => self.fail(
                "VolumeFailedRecycle",
                "No recycler plugin found for the volume!".into(),
            ),
            _ => self.fail(
                "VolumeUnknownReclaimPolicy",
                "Volume has unrecognized PersistentVolumeReclaimPolicy".into(),
            ),
        }
    }
}

/// Whether deleting the volume is someone else's job: it was made by an
/// external provisioner (which deletes it when it is Released), or it is a
/// CSI volume.
fn has_external_deleter(volume: &PersistentVolume) -> bool {
    let external_provisioner = annotation(&volume.metadata, ANN_PROVISIONED_BY)
        .is_some_and(|p| !p.is_empty() && !p.starts_with("kubernetes.io/"));
    external_provisioner || volume.spec.as_ref().is_some_and(|s| s.csi.is_some())
}

/// What to do for `volume` (upstream's `syncVolume`), given the claim its
/// `claimRef` names as the caches (or a live read) show it: `None` when no
/// claim of that name exists.
pub fn sync_volume(
    volume: &Arc<PersistentVolume>,
    claim: Option<&PersistentVolumeClaim>,
) -> Vec<Step> {
    let mut plan = VolumeSteps::new(volume);
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let Some(claim_ref) = claim_ref.filter(|r| r.uid.as_deref().is_some_and(|u| !u.is_empty()))
    else {
        // Unused, or reserved for a claim that has not bound yet.
        plan.set_phase(VolumePhase::Available, None);
        return plan.steps;
    };
    let claim = claim.filter(|c| c.metadata.uid == claim_ref.uid);
    let Some(claim) = claim else {
        plan.release();
        return plan.steps;
    };
    let bound_to = volume_name_of(claim);
    if bound_to.is_empty() {
        // The claim's sync finishes the binding; only a volumeMode
        // mismatch, which keeps the matcher from ever picking this volume,
        // is worth telling.
        if volume_mode_mismatch(claim, volume) {
            plan.steps.push(event(
                volume.object_ref(&()),
                EventType::Warning,
                "VolumeMismatch",
                format!(
                    "Cannot bind PersistentVolume to requested PersistentVolumeClaim \"{}\" due to incompatible volumeMode.",
                    claim.name_any()
                ),
            ));
            plan.steps.push(event(
                claim.object_ref(&()),
                EventType::Warning,
                "VolumeMismatch",
                format!(
                    "Cannot bind PersistentVolume \"{}\" to requested PersistentVolumeClaim due to incompatible volumeMode.",
                    volume.name_any()
                ),
            ));
        }
    } else if bound_to == volume.name_any() {
        plan.set_phase(VolumePhase::Bound, None);
    } else if annotation(&volume.metadata, ANN_PROVISIONED_BY).is_some()
        && volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Delete")
    {
        // Provisioned for this claim, which went elsewhere: not needed.
        plan.release();
    } else {
        plan.steps.push(Step::UnbindVolume {
            volume: Arc::clone(volume),
            bound_by_controller: annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER).is_some(),
        });
        plan.set_phase(VolumePhase::Available, None);
    }
    plan.steps
}
