//! `VolumeBinding` and `VolumeZone`: a pod that uses PersistentVolumeClaims
//! goes only where its volumes are, or can be made.
//!
//! The scheduler keeps the claims, volumes and StorageClasses it watches in
//! [`VolumeObjects`]. For a pod with claims, [`FilterState::new`] (upstream's
//! PreFilter) checks them once per attempt and refuses the pod outright, on
//! every node, when a claim is missing (`persistentvolumeclaim "data" not
//! found`), being deleted, lost, or unbound in an `Immediate` class (the PV
//! controller binds those; the scheduler waits for it: `pod has unbound
//! immediate PersistentVolumeClaims`), or when a bound claim's volume is not
//! there. Then, per node ([`FilterState::filter`]):
//!
//! - a bound claim's volume must accept the node by its
//!   `spec.nodeAffinity`, else `node(s) had volume node affinity conflict`;
//! - an unbound claim of a `WaitForFirstConsumer` class needs either an
//!   `Available` static volume that matches it (class, size, access and
//!   volume modes, selector) and accepts the node, or a class that can
//!   provision (a provisioner other than `kubernetes.io/no-provisioner`)
//!   with `allowedTopologies` that admit the node, else `node(s) didn't find
//!   available persistent volumes to bind`. A claim that already names a
//!   `volume.kubernetes.io/selected-node` fits that node only;
//! - a bound volume labelled with a zone or region must be in the node's
//!   (`VolumeZone`: `node(s) had no available volume zone`).
//!
//! These refusals are all unresolvable: evicting pods cannot move a volume.
//!
//! Once a node is chosen, [`VolumePlan::new`] says what to write before the
//! pod is bound (upstream's Reserve and PreBind): static volumes that match
//! are pre-bound to their claims by the scheduler itself (the PV's
//! `claimRef`, as upstream, since a PV controller never binds a
//! `WaitForFirstConsumer` claim to a volume nobody chose), and claims left to
//! provision get the `volume.kubernetes.io/selected-node` annotation for the
//! provisioner of that node. [`VolumeObjects::assume`] records both at once,
//! so the next pod neither takes the same volume nor sends a shared claim
//! elsewhere; [`prebind`] writes them and waits until the claims are bound.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::Resource;
use skiff_api::quantity::Quantity;

use crate::filters::{FilterResult, Rejection};
use crate::snapshot::label_selector;

pub mod prebind;

/// A node where no static volume fits an unbound claim and none can be
/// provisioned.
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// A node that a bound volume's node affinity excludes.
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// A pod whose claims of `Immediate` classes are not bound yet.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// A node outside the zone or region of a bound volume.
pub const ERR_VOLUME_ZONE: &str = "node(s) had no available volume zone";

/// The node a claim's volume is to be provisioned on.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set by the PV controller once a claim's binding is complete.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Marks a binding made by a controller (or the scheduler), not a user.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The class of a claim or volume before `storageClassName` existed; it wins
/// over the field.
const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner of classes whose volumes are made by hand.
const NOT_SUPPORTED_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The labels `VolumeZone` compares between a volume and a node.
const ZONE_LABELS: [&str; 4] = [
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// `namespace/name` of a claim.
pub fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

fn name_of<T: Resource>(object: &T) -> &str {
    object.meta().name.as_deref().unwrap_or_default()
}

fn annotation<'a, T: Resource>(object: &'a T, key: &str) -> Option<&'a str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A claim's class: the beta annotation, else `spec.storageClassName`, else
/// `""`.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    annotation(claim, ANN_BETA_STORAGE_CLASS)
        .or_else(|| claim.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or_default()
}

/// A volume's class, read as [`claim_class`] reads a claim's.
pub fn volume_class(volume: &PersistentVolume) -> &str {
    annotation(volume, ANN_BETA_STORAGE_CLASS)
        .or_else(|| volume.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or_default()
}

fn volume_name_of(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

/// Whether the PV controller has finished binding the claim: it names its
/// volume and carries `pv.kubernetes.io/bind-completed`.
pub fn fully_bound(claim: &PersistentVolumeClaim) -> bool {
    !volume_name_of(claim).is_empty() && annotation(claim, ANN_BIND_COMPLETED).is_some()
}

/// Whether a volume's `claimRef` names this claim (and, when it has a UID,
/// this incarnation of it).
pub fn bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    let uid = reference.uid.as_deref().unwrap_or_default();
    reference.name.as_deref() == claim.metadata.name.as_deref()
        && reference.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && (uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
}

/// Whether a volume's `spec.nodeAffinity` admits a node with `labels`. As
/// upstream, only labels count (a `matchFields` term never matches), and a
/// `required` selector without terms admits nothing.
pub fn node_affinity_matches(volume: &PersistentVolume, labels: &BTreeMap<String, String>) -> bool {
    let required = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    required.is_none_or(|selector| {
        selector
            .node_selector_terms
            .iter()
            .any(|t| skiff_api::scheduling::term_matches(t, labels, ""))
    })
}

/// Whether a class's `allowedTopologies` admit a node with `labels`: no
/// terms admit every node; otherwise some term must have every label it
/// names set to one of its values (a term without requirements admits none).
pub fn allowed_topology(class: &StorageClass, labels: &BTreeMap<String, String>) -> bool {
    let terms = class.allowed_topologies.as_deref().unwrap_or_default();
    terms.is_empty()
        || terms.iter().any(|term| {
            let requirements = term.match_label_expressions.as_deref().unwrap_or_default();
            !requirements.is_empty()
                && requirements
                    .iter()
                    .all(|r| labels.get(&r.key).is_some_and(|v| r.values.contains(v)))
        })
}

fn storage_quantity(resources: Option<&BTreeMap<String, ApiQuantity>>) -> Quantity {
    resources
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .unwrap_or_else(|| Quantity::from_i64(0))
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Quantity {
    storage_quantity(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

fn capacity(volume: &PersistentVolume) -> Quantity {
    storage_quantity(volume.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

/// One kind of cached object, with the changes the scheduler made ahead of
/// the API (upstream's assume cache). An assumed object hides the listed one
/// until the watch delivers a newer version of it, or the scheduler gives the
/// assumption up.
#[derive(Debug)]
struct AssumeCache<T> {
    listed: std::collections::HashMap<String, Arc<T>>,
    /// Assumed objects, with the resource version of the listed object each
    /// was based on.
    assumed: std::collections::HashMap<String, (Arc<T>, Option<String>)>,
}

impl<T> Default for AssumeCache<T> {
    fn default() -> Self {
        AssumeCache {
            listed: Default::default(),
            assumed: Default::default(),
        }
    }
}

impl<T: Resource> AssumeCache<T> {
    fn get(&self, key: &str) -> Option<&Arc<T>> {
        self.assumed
            .get(key)
            .map(|(object, _)| object)
            .or_else(|| self.listed.get(key))
    }

    /// Stores what the watch delivered; `true` unless it is the version
    /// already held.
    fn upsert(&mut self, key: String, object: T) -> bool {
        let version = object.meta().resource_version.clone();
        let changed = self
            .listed
            .get(&key)
            .is_none_or(|old| version.is_none() || old.meta().resource_version != version);
        if changed
            && self
                .assumed
                .get(&key)
                .is_some_and(|(_, base)| *base != version)
        {
            self.assumed.remove(&key);
        }
        self.listed.insert(key, Arc::new(object));
        changed
    }

    fn remove(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        self.listed.remove(key).is_some()
    }

    fn assume(&mut self, key: String, object: Arc<T>) {
        let base = self
            .listed
            .get(&key)
            .and_then(|o| o.meta().resource_version.clone());
        self.assumed.insert(key, (object, base));
    }

    fn restore(&mut self, key: &str) {
        self.assumed.remove(key);
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.listed.keys().map(String::as_str)
    }

    fn values(&self) -> impl Iterator<Item = &Arc<T>> {
        self.listed.keys().filter_map(|k| self.get(k))
    }
}

/// The claims, volumes and StorageClasses the scheduler has seen, with what
/// it has assumed about pods still being bound.
#[derive(Debug, Default)]
pub struct VolumeObjects {
    claims: AssumeCache<PersistentVolumeClaim>,
    volumes: AssumeCache<PersistentVolume>,
    classes: std::collections::HashMap<String, Arc<StorageClass>>,
}

impl VolumeObjects {
    /// Stores a claim from the watch; `true` if it is new or changed.
    pub fn upsert_claim(&mut self, claim: PersistentVolumeClaim) -> bool {
        self.claims.upsert(claim_key(&claim), claim)
    }

    /// Forgets the claim with key `namespace/name`; `true` if it was known.
    pub fn remove_claim(&mut self, key: &str) -> bool {
        self.claims.remove(key)
    }

    /// A claim, as assumed if it is.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.get(&format!("{namespace}/{name}"))
    }

    /// Keys (`namespace/name`) of every claim from the watch.
    pub fn claim_keys(&self) -> impl Iterator<Item = &str> {
        self.claims.keys()
    }

    /// Stores a volume from the watch; `true` if it is new or changed.
    pub fn upsert_volume(&mut self, volume: PersistentVolume) -> bool {
        let name = name_of(&volume).to_string();
        self.volumes.upsert(name, volume)
    }

    /// Forgets a volume; `true` if it was known.
    pub fn remove_volume(&mut self, name: &str) -> bool {
        self.volumes.remove(name)
    }

    /// A volume, as assumed if it is.
    pub fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.volumes.get(name)
    }

    /// Names of every volume from the watch.
    pub fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.volumes.keys()
    }

    /// Stores a StorageClass; `true` if it is new or its `allowedTopologies`
    /// changed (the only update that can make a pod fit: the binding mode
    /// and provisioner are immutable).
    pub fn upsert_class(&mut self, class: StorageClass) -> bool {
        let name = name_of(&class).to_string();
        let changed = self
            .classes
            .get(&name)
            .is_none_or(|old| old.allowed_topologies != class.allowed_topologies);
        self.classes.insert(name, Arc::new(class));
        changed
    }

    /// Forgets a StorageClass.
    pub fn remove_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    /// A StorageClass by name.
    pub fn class(&self, name: &str) -> Option<&Arc<StorageClass>> {
        self.classes.get(name)
    }

    /// Names of every StorageClass.
    pub fn class_names(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }

    /// Records a plan's writes ahead of the API: its volumes as pre-bound and
    /// its claims as annotated with the node.
    pub fn assume(&mut self, plan: &VolumePlan) {
        for binding in plan.bindings.iter().filter(|b| b.dirty) {
            self.volumes.assume(
                name_of(binding.volume.as_ref()).to_string(),
                binding.volume.clone(),
            );
        }
        for claim in &plan.provisions {
            self.claims.assume(claim_key(claim), claim.clone());
        }
    }

    /// Gives up a plan's assumptions (its pod was not bound).
    pub fn restore(&mut self, plan: &VolumePlan) {
        for binding in plan.bindings.iter().filter(|b| b.dirty) {
            self.volumes.restore(name_of(binding.volume.as_ref()));
        }
        for claim in &plan.provisions {
            self.claims.restore(&claim_key(claim));
        }
    }

    /// The class of a claim that waits for its first consumer: one that
    /// exists and says `WaitForFirstConsumer`. A claim without a class, or of
    /// a class not (yet) known, binds immediately.
    fn delay_binding_class(&self, claim: &PersistentVolumeClaim) -> Option<&Arc<StorageClass>> {
        let class = claim_class(claim);
        if class.is_empty() {
            return None;
        }
        self.class(class)
            .filter(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
    }
}

/// A claim the pod names, and whether it is a generic ephemeral volume's.
struct PodClaim {
    name: String,
    ephemeral: bool,
}

fn pod_claims(pod: &Pod) -> Vec<PodClaim> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(source) = &v.persistent_volume_claim {
                Some(PodClaim {
                    name: source.claim_name.clone(),
                    ephemeral: false,
                })
            } else {
                v.ephemeral.as_ref().map(|_| PodClaim {
                    name: format!("{pod_name}-{}", v.name),
                    ephemeral: true,
                })
            }
        })
        .collect()
}

/// Whether the pod is the claim's controlling owner (a generic ephemeral
/// volume's claim must be).
fn owned_by(claim: &PersistentVolumeClaim, pod: &Pod) -> bool {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// An unbound claim of a `WaitForFirstConsumer` class, with what it may
/// bind to.
#[derive(Debug, Clone, PartialEq)]
struct UnboundClaim {
    claim: Arc<PersistentVolumeClaim>,
    class: Arc<StorageClass>,
    /// The volumes of its class, by name.
    candidates: Vec<Arc<PersistentVolume>>,
}

/// A zone or region label of a bound volume: the node must carry one of the
/// values.
#[derive(Debug, Clone, PartialEq)]
struct ZoneRequirement {
    key: &'static str,
    values: Vec<String>,
}

/// What the volume filters precompute for a pod with claims.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterState {
    /// The volumes of the fully bound claims.
    bound: Vec<Arc<PersistentVolume>>,
    /// Unbound claims of `WaitForFirstConsumer` classes.
    unbound: Vec<UnboundClaim>,
    /// The zone labels of the bound volumes.
    zones: Vec<ZoneRequirement>,
}

/// The volumes a pod gets on one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodVolumes {
    /// Unbound claims and the static volume each is to be bound to.
    pub bindings: Vec<(Arc<PersistentVolumeClaim>, Arc<PersistentVolume>)>,
    /// Unbound claims whose volume is to be provisioned on the node.
    pub provisions: Vec<Arc<PersistentVolumeClaim>>,
}

impl FilterState {
    /// Checks a pod's claims (upstream's `VolumeBinding` and `VolumeZone`
    /// PreFilter). `Ok(None)`: the pod has no claims and nothing to check.
    /// `Err`: the pod fits no node until its claims change; the message is
    /// upstream's.
    pub fn new(objects: &VolumeObjects, pod: &Pod) -> Result<Option<FilterState>, String> {
        let wanted = pod_claims(pod);
        if wanted.is_empty() {
            return Ok(None);
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let mut claims = Vec::with_capacity(wanted.len());
        let mut seen = HashSet::new();
        // Two volumes of the pod may mount the same claim.
        for want in wanted.iter().filter(|w| seen.insert(w.name.as_str())) {
            let Some(claim) = objects.claim(namespace, &want.name) else {
                return Err(if want.ephemeral {
                    format!(
                        "waiting for ephemeral volume controller to create the persistentvolumeclaim {:?}",
                        want.name
                    )
                } else {
                    format!("persistentvolumeclaim {:?} not found", want.name)
                });
            };
            let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Lost") {
                return Err(format!(
                    "persistentvolumeclaim {:?} bound to non-existent persistentvolume {:?}",
                    want.name,
                    volume_name_of(claim)
                ));
            }
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!(
                    "persistentvolumeclaim {:?} is being deleted",
                    want.name
                ));
            }
            if want.ephemeral && !owned_by(claim, pod) {
                return Err(format!(
                    "PVC {namespace}/{} was not created for pod {namespace}/{} (pod is not owner)",
                    want.name,
                    pod.metadata.name.as_deref().unwrap_or_default()
                ));
            }
            claims.push(claim.clone());
        }

        let mut bound = Vec::new();
        let mut unbound = Vec::new();
        let mut immediate = false;
        for claim in claims {
            if fully_bound(&claim) {
                bound.push(claim);
                continue;
            }
            // A claim naming its volume but not bound yet is the PV
            // controller's to finish, like an Immediate one.
            let delayed = objects
                .delay_binding_class(&claim)
                .filter(|_| volume_name_of(&claim).is_empty());
            let Some(class) = delayed.cloned() else {
                immediate = true;
                continue;
            };
            let class_name = claim_class(&claim);
            let mut candidates: Vec<Arc<PersistentVolume>> = objects
                .volumes
                .values()
                .filter(|v| volume_class(v) == class_name)
                .cloned()
                .collect();
            candidates.sort_by(|a, b| name_of(a.as_ref()).cmp(name_of(b.as_ref())));
            unbound.push(UnboundClaim {
                claim,
                class,
                candidates,
            });
        }
        if immediate {
            return Err(ERR_UNBOUND_IMMEDIATE.to_string());
        }

        // VolumeZone's PreFilter: every bound claim's volume must exist.
        let mut with_volumes = Vec::with_capacity(bound.len());
        let mut zones = Vec::new();
        for claim in bound {
            let name = volume_name_of(&claim);
            let Some(volume) = objects.volume(name).cloned() else {
                return Err(format!("persistentvolume {name:?} not found"));
            };
            let labels = volume.metadata.labels.as_ref();
            for key in ZONE_LABELS {
                if let Some(value) = labels.and_then(|l| l.get(key)) {
                    zones.push(ZoneRequirement {
                        key,
                        values: value.split("__").map(str::to_string).collect(),
                    });
                }
            }
            with_volumes.push(volume);
        }
        Ok(Some(FilterState {
            bound: with_volumes,
            unbound,
            zones,
        }))
    }

    /// Whether every claim is bound already (nothing to do before binding
    /// the pod).
    pub fn all_bound(&self) -> bool {
        self.unbound.is_empty()
    }

    /// `VolumeBinding` then `VolumeZone` on one node.
    pub fn filter(&self, node: &Node) -> FilterResult {
        self.find(node)?;
        self.volume_zone(node)
    }

    /// Upstream's `FindPodVolumes`: the volumes the pod gets on `node`, or
    /// every reason it gets none.
    pub fn find(&self, node: &Node) -> Result<PodVolumes, Rejection> {
        let labels = crate::snapshot::labels_of(&node.metadata);
        let node_name = node.metadata.name.as_deref().unwrap_or_default();
        let bound_ok = self
            .bound
            .iter()
            .all(|volume| node_affinity_matches(volume, labels));
        let (unbound_ok, volumes) = self.find_unbound(node_name, labels);
        let mut reasons = Vec::new();
        if !bound_ok {
            reasons.push(ERR_NODE_CONFLICT.to_string());
        }
        if !unbound_ok {
            reasons.push(ERR_BIND_CONFLICT.to_string());
        }
        if reasons.is_empty() {
            Ok(volumes)
        } else {
            Err(Rejection {
                resolvable: false,
                reasons,
            })
        }
    }

    /// Matches the unbound claims on one node: static volumes first
    /// (smallest claims first, each volume once), then provisioning for the
    /// rest.
    fn find_unbound(
        &self,
        node_name: &str,
        labels: &BTreeMap<String, String>,
    ) -> (bool, PodVolumes) {
        let mut volumes = PodVolumes::default();
        let mut to_match: Vec<&UnboundClaim> = Vec::new();
        let mut to_provision: Vec<&UnboundClaim> = Vec::new();
        for unbound in &self.unbound {
            match annotation(unbound.claim.as_ref(), ANN_SELECTED_NODE) {
                Some(selected) if selected != node_name => return (false, PodVolumes::default()),
                Some(_) => to_provision.push(unbound),
                None => to_match.push(unbound),
            }
        }
        to_match.sort_by_key(|u| requested_storage(&u.claim));
        let mut satisfied = true;
        let mut chosen: HashSet<&str> = HashSet::new();
        for unbound in to_match {
            match find_matching_volume(&unbound.claim, &unbound.candidates, labels, &chosen) {
                Some(volume) => {
                    chosen.insert(name_of(volume.as_ref()));
                    volumes
                        .bindings
                        .push((unbound.claim.clone(), volume.clone()));
                }
                None => {
                    satisfied = false;
                    to_provision.push(unbound);
                }
            }
        }
        if !to_provision.is_empty() {
            let provisionable = to_provision.iter().all(|u| {
                let provisioner = u.class.provisioner.as_str();
                !provisioner.is_empty()
                    && provisioner != NOT_SUPPORTED_PROVISIONER
                    && allowed_topology(&u.class, labels)
            });
            if !provisionable {
                return (false, volumes);
            }
            satisfied = true;
            volumes
                .provisions
                .extend(to_provision.iter().map(|u| u.claim.clone()));
        }
        (satisfied, volumes)
    }

    /// `VolumeZone`: a node with zone or region labels must match those of
    /// every bound volume (a beta label on the volume also matches the GA
    /// label on the node). A node without any such label takes any volume.
    fn volume_zone(&self, node: &Node) -> FilterResult {
        let labels = crate::snapshot::labels_of(&node.metadata);
        if self.zones.is_empty() || !ZONE_LABELS.iter().any(|k| labels.contains_key(*k)) {
            return Ok(());
        }
        let fits = self.zones.iter().all(|zone| {
            let value = labels.get(zone.key).or_else(|| {
                let ga = match zone.key {
                    "failure-domain.beta.kubernetes.io/zone" => "topology.kubernetes.io/zone",
                    "failure-domain.beta.kubernetes.io/region" => "topology.kubernetes.io/region",
                    other => other,
                };
                labels.get(ga)
            });
            value.is_some_and(|v| zone.values.contains(v))
        });
        if fits {
            Ok(())
        } else {
            Err(Rejection::unresolvable(ERR_VOLUME_ZONE))
        }
    }
}

/// Upstream's `FindMatchingVolume` on the scheduler's path: a volume already
/// pre-bound to the claim if it accepts the node (and none if it does not),
/// else the smallest `Available` volume that is big enough, of the claim's
/// class, volume mode and access modes, selected by the claim's selector,
/// not being deleted, not in `excluded`, and accepting the node.
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [Arc<PersistentVolume>],
    labels: &BTreeMap<String, String>,
    excluded: &HashSet<&str>,
) -> Option<&'a Arc<PersistentVolume>> {
    let spec = claim.spec.as_ref();
    let requested = requested_storage(claim);
    let class = claim_class(claim);
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_string();
    let claim_mode = mode(spec.and_then(|s| s.volume_mode.as_ref()));
    let claim_access = spec
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    let selector = spec
        .and_then(|s| s.selector.as_ref())
        .map(|s| label_selector(Some(s), Vec::new()));
    let mut smallest: Option<(&'a Arc<PersistentVolume>, Quantity)> = None;
    for volume in volumes {
        let name = name_of(volume.as_ref());
        let Some(volume_spec) = volume.spec.as_ref() else {
            continue;
        };
        if excluded.contains(name)
            || (volume_spec.claim_ref.is_some() && !bound_to_claim(volume, claim))
        {
            continue;
        }
        let size = capacity(volume);
        if size < requested
            || mode(volume_spec.volume_mode.as_ref()) != claim_mode
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let affinity_ok = node_affinity_matches(volume, labels);
        if bound_to_claim(volume, claim) {
            return affinity_ok.then_some(volume);
        }
        let available =
            volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available");
        let selected = selector
            .as_ref()
            .is_none_or(|s| s.matches(crate::snapshot::labels_of(&volume.metadata)));
        let modes = volume_spec.access_modes.as_deref().unwrap_or_default();
        if !available
            || !selected
            || volume_class(volume) != class
            || !affinity_ok
            || !claim_access.iter().all(|m| modes.contains(m))
        {
            continue;
        }
        if smallest.as_ref().is_none_or(|(_, s)| *s > size) {
            smallest = Some((volume, size));
        }
    }
    smallest.map(|(volume, _)| volume)
}

/// A static volume the scheduler pre-binds to a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticBinding {
    /// The claim.
    pub claim: Arc<PersistentVolumeClaim>,
    /// The volume with its `claimRef` naming the claim, as it is to be
    /// written.
    pub volume: Arc<PersistentVolume>,
    /// Whether that differs from the volume as it was (it may already have
    /// been pre-bound to the claim).
    pub dirty: bool,
}

/// What to write for a pod's unbound claims once its node is chosen, before
/// the pod is bound.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan {
    /// The chosen node.
    pub node: String,
    /// Its labels, to re-check the node affinity of the volumes that end up
    /// bound.
    pub node_labels: BTreeMap<String, String>,
    /// Static volumes to pre-bind.
    pub bindings: Vec<StaticBinding>,
    /// Claims to provision on the node, annotated with
    /// `volume.kubernetes.io/selected-node`.
    pub provisions: Vec<Arc<PersistentVolumeClaim>>,
}

impl VolumePlan {
    /// The writes that give `volumes` to a pod on `node` (upstream's
    /// `AssumePodVolumes`).
    pub fn new(node: &Node, volumes: PodVolumes) -> VolumePlan {
        let name = node.metadata.name.clone().unwrap_or_default();
        let bindings = volumes
            .bindings
            .into_iter()
            .map(|(claim, volume)| {
                let (volume, dirty) = bind_volume_to_claim(&volume, &claim);
                StaticBinding {
                    claim,
                    volume: Arc::new(volume),
                    dirty,
                }
            })
            .collect();
        let provisions = volumes
            .provisions
            .into_iter()
            .map(|claim| {
                let mut annotated = (*claim).clone();
                annotated
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ANN_SELECTED_NODE.to_string(), name.clone());
                Arc::new(annotated)
            })
            .collect();
        VolumePlan {
            node: name,
            node_labels: crate::snapshot::labels_of(&node.metadata).clone(),
            bindings,
            provisions,
        }
    }

    /// Plans the volumes of `pod` on the node called `node`: `Ok(None)` when
    /// every claim is bound (or it has none), `Err` with the reasons when the
    /// node does not fit them.
    pub fn for_pod(
        objects: &VolumeObjects,
        pod: &Pod,
        node: &Node,
    ) -> Result<Option<VolumePlan>, String> {
        let Some(state) = FilterState::new(objects, pod)? else {
            return Ok(None);
        };
        if state.all_bound() {
            return Ok(None);
        }
        state
            .find(node)
            .map(|volumes| Some(VolumePlan::new(node, volumes)))
            .map_err(|r| r.reasons.join(", "))
    }
}

/// The volume pre-bound to the claim (upstream's `GetBindVolumeToClaim`): its
/// `claimRef` names the claim, and `pv.kubernetes.io/bound-by-controller` is
/// set unless a user had pre-bound it. Also whether anything changed.
pub fn bind_volume_to_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> (PersistentVolume, bool) {
    let mut bound = volume.clone();
    let mut dirty = false;
    let by_user = bound_to_claim(volume, claim);
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let same = reference.is_some_and(|r| {
        r.name == claim.metadata.name
            && r.namespace == claim.metadata.namespace
            && r.uid == claim.metadata.uid
    });
    if !same {
        bound.spec.get_or_insert_with(Default::default).claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: claim.metadata.name.clone(),
            namespace: claim.metadata.namespace.clone(),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            ..ObjectReference::default()
        });
        dirty = true;
    }
    let annotations = bound.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if !by_user && !annotations.contains_key(ANN_BOUND_BY_CONTROLLER) {
        annotations.insert(ANN_BOUND_BY_CONTROLLER.to_string(), "yes".to_string());
        dirty = true;
    }
    if annotations.is_empty() {
        bound.metadata.annotations = None;
    }
    (bound, dirty)
}

#[cfg(test)]
pub(crate) mod tests;
