//! Which claims this node provisions, and the PersistentVolume it makes for
//! one. No IO: the provisioner's loop feeds these the cached objects.
//!
//! A claim is this node's to provision when it is unbound, not being
//! deleted, of a class whose provisioner is [`PROVISIONER`], and either
//!
//! - names this node in `volume.kubernetes.io/selected-node` (the scheduler
//!   writes it for WaitForFirstConsumer classes, once it has placed the
//!   claim's first pod; this provisioner writes it for Immediate ones), or
//! - has no selected node, is of an Immediate class, carries the PV
//!   controller's `volume.kubernetes.io/storage-provisioner` mark naming this
//!   provisioner (the controller found no existing PV to bind, as upstream's
//!   external provisioners wait for), and this agent is the one that takes
//!   Immediate claims: then it first writes its own node as the selected one
//!   ([`ClaimAction::SelectNode`]), so that only one node ever provisions it.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::PROVISIONER;

/// The node the claim's volume is to be made on.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner the PV controller expects to provision the claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta spelling of [`ANN_STORAGE_PROVISIONER`], still honoured.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The provisioner that made a PV.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The class of a claim, before `spec.storageClassName` existed; it wins
/// over the field, as upstream reads it.
const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The node label a provisioned PV's affinity matches.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// What to do with one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAction {
    /// Not this node's claim, or nothing left to do.
    Ignore,
    /// An Immediate claim this node takes: name this node as selected, then
    /// provision.
    SelectNode,
    /// Provision the claim's volume on this node.
    Provision,
}

/// The name of the claim's StorageClass, if it names one.
pub fn claim_class(claim: &PersistentVolumeClaim) -> Option<&str> {
    let annotated = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS));
    let named = annotated.or_else(|| claim.spec.as_ref()?.storage_class_name.as_ref())?;
    (!named.is_empty()).then_some(named.as_str())
}

fn annotation<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    claim
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether `class` binds only once a pod is scheduled.
fn waits_for_first_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

/// What this node does with `claim`, whose class (looked up by
/// [`claim_class`]) is `class`. `immediate`: whether this agent takes the
/// Immediate claims.
pub fn decide(
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    node_name: &str,
    immediate: bool,
) -> ClaimAction {
    let bound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if bound || claim.metadata.deletion_timestamp.is_some() {
        return ClaimAction::Ignore;
    }
    let Some(class) = class.filter(|c| c.provisioner == PROVISIONER) else {
        return ClaimAction::Ignore;
    };
    match annotation(claim, ANN_SELECTED_NODE) {
        Some(selected) if selected == node_name => ClaimAction::Provision,
        Some(_) => ClaimAction::Ignore,
        None if waits_for_first_consumer(class) || !immediate => ClaimAction::Ignore,
        None => {
            let marked = annotation(claim, ANN_STORAGE_PROVISIONER)
                .or_else(|| annotation(claim, ANN_BETA_STORAGE_PROVISIONER));
            if marked == Some(PROVISIONER) {
                ClaimAction::SelectNode
            } else {
                ClaimAction::Ignore
            }
        }
    }
}

/// The name of the PV provisioned for `claim`: `pvc-<claim uid>`, as
/// upstream names them. Deterministic, so a retry finds the PV it made.
pub fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    let uid = claim.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    Some(format!("pvc-{uid}"))
}

/// Why a claim cannot be provisioned by this provisioner whatever is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// `spec.resources.requests.storage` is missing.
    #[error("the claim does not request any storage")]
    NoStorageRequest,
    /// A label selector: a new volume has no labels to match.
    #[error("claims with a selector cannot be provisioned")]
    Selector,
    /// An access mode a node-local directory cannot honour.
    #[error("access mode {0} is not supported, only ReadWriteOnce and ReadWriteOncePod")]
    AccessMode(String),
    /// `volumeMode: Block`.
    #[error("volumeMode {0} is not supported, only Filesystem")]
    VolumeMode(String),
    /// A data source (clone or snapshot) to fill the volume from.
    #[error("volumes cannot be populated from a data source")]
    DataSource,
}

/// The storage `claim` requests, once it is known to be provisionable.
pub fn check_supported(claim: &PersistentVolumeClaim) -> Result<Quantity, Unsupported> {
    let spec = claim.spec.clone().unwrap_or_default();
    if spec.selector.is_some() {
        return Err(Unsupported::Selector);
    }
    if let Some(mode) = spec
        .access_modes
        .iter()
        .flatten()
        .find(|m| !matches!(m.as_str(), "ReadWriteOnce" | "ReadWriteOncePod"))
    {
        return Err(Unsupported::AccessMode(mode.clone()));
    }
    if let Some(mode) = spec.volume_mode.filter(|m| m != "Filesystem") {
        return Err(Unsupported::VolumeMode(mode));
    }
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return Err(Unsupported::DataSource);
    }
    spec.resources
        .and_then(|r| r.requests)
        .and_then(|mut r| r.remove("storage"))
        .ok_or(Unsupported::NoStorageRequest)
}

/// The PV for `claim` of `class`, its data in `path` on `node_name`:
/// hostPath (created if missing, as k3s's local-path does), affinity to the
/// node by hostname, the requested capacity and the claim's access modes,
/// the class's reclaim policy (Delete when unset, as upstream defaults it),
/// and a claimRef with the claim's uid so the PV controller binds the pair
/// and nothing else.
pub fn build_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node_name: &str,
    path: &Path,
    capacity: Quantity,
) -> PersistentVolume {
    let class_name = claim_class(claim).map(str::to_string);
    PersistentVolume {
        metadata: ObjectMeta {
            name: volume_name(claim),
            annotations: Some(BTreeMap::from([(
                ANN_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: claim.spec.as_ref().and_then(|s| s.access_modes.clone()),
            capacity: Some(BTreeMap::from([("storage".to_string(), capacity)])),
            host_path: Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node_name.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class_name,
            volume_mode: Some("Filesystem".into()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                field_path: None,
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, TypedLocalObjectReference, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    use super::*;

    fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            ..StorageClass::default()
        }
    }

    fn claim(annotations: &[(&str, &str)]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("ns".into()),
                uid: Some("1234".into()),
                resource_version: Some("7".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("local-path".into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity("2Gi".into()),
                    )])),
                    limits: None,
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    const WFFC: &str = "WaitForFirstConsumer";

    #[test]
    fn the_class_comes_from_the_beta_annotation_first() {
        let mut c = claim(&[]);
        assert_eq!(claim_class(&c), Some("local-path"));
        c.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANN_BETA_STORAGE_CLASS.into(), "fast".into());
        assert_eq!(claim_class(&c), Some("fast"));
        let mut c = claim(&[]);
        c.spec.as_mut().expect("spec").storage_class_name = Some(String::new());
        assert_eq!(claim_class(&c), None);
    }

    #[test]
    fn a_wffc_claim_is_provisioned_by_the_selected_node_only() {
        let ours = class("local-path", PROVISIONER, WFFC);
        let selected_here = claim(&[(ANN_SELECTED_NODE, "node-a")]);
        assert_eq!(
            decide(&selected_here, Some(&ours), "node-a", false),
            ClaimAction::Provision
        );
        assert_eq!(
            decide(&selected_here, Some(&ours), "node-b", true),
            ClaimAction::Ignore
        );
        let unselected = claim(&[(ANN_STORAGE_PROVISIONER, PROVISIONER)]);
        assert_eq!(
            decide(&unselected, Some(&ours), "node-a", true),
            ClaimAction::Ignore,
            "WaitForFirstConsumer waits for the scheduler even on the Immediate node"
        );
    }

    #[test]
    fn an_immediate_claim_is_taken_by_the_immediate_node_once_marked() {
        let ours = class("local-path", PROVISIONER, "Immediate");
        let marked = claim(&[(ANN_STORAGE_PROVISIONER, PROVISIONER)]);
        assert_eq!(
            decide(&marked, Some(&ours), "server", true),
            ClaimAction::SelectNode
        );
        assert_eq!(
            decide(&marked, Some(&ours), "worker", false),
            ClaimAction::Ignore
        );
        let beta = claim(&[(ANN_BETA_STORAGE_PROVISIONER, PROVISIONER)]);
        assert_eq!(
            decide(&beta, Some(&ours), "server", true),
            ClaimAction::SelectNode
        );
        // Not yet marked by the PV controller (it may bind an existing PV).
        assert_eq!(
            decide(&claim(&[]), Some(&ours), "server", true),
            ClaimAction::Ignore
        );
        let other = claim(&[(ANN_STORAGE_PROVISIONER, "example.com/nfs")]);
        assert_eq!(
            decide(&other, Some(&ours), "server", true),
            ClaimAction::Ignore
        );
        // Once selected, the selected node provisions, whoever selected it.
        let selected = claim(&[
            (ANN_STORAGE_PROVISIONER, PROVISIONER),
            (ANN_SELECTED_NODE, "server"),
        ]);
        assert_eq!(
            decide(&selected, Some(&ours), "server", true),
            ClaimAction::Provision
        );
        // A class with no binding mode is Immediate.
        let mut unset = ours.clone();
        unset.volume_binding_mode = None;
        assert_eq!(
            decide(&marked, Some(&unset), "server", true),
            ClaimAction::SelectNode
        );
    }

    #[test]
    fn claims_of_other_provisioners_or_no_class_are_ignored() {
        let selected = claim(&[(ANN_SELECTED_NODE, "node-a")]);
        let theirs = class("nfs", "example.com/nfs", WFFC);
        assert_eq!(
            decide(&selected, Some(&theirs), "node-a", true),
            ClaimAction::Ignore
        );
        assert_eq!(decide(&selected, None, "node-a", true), ClaimAction::Ignore);
    }

    #[test]
    fn bound_and_deleted_claims_are_ignored() {
        let ours = class("local-path", PROVISIONER, WFFC);
        let mut bound = claim(&[(ANN_SELECTED_NODE, "node-a")]);
        bound.spec.as_mut().expect("spec").volume_name = Some("pvc-1234".into());
        assert_eq!(
            decide(&bound, Some(&ours), "node-a", false),
            ClaimAction::Ignore
        );
        let mut deleted = claim(&[(ANN_SELECTED_NODE, "node-a")]);
        deleted.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            decide(&deleted, Some(&ours), "node-a", false),
            ClaimAction::Ignore
        );
    }

    #[test]
    fn volumes_are_named_after_the_claim_uid() {
        assert_eq!(volume_name(&claim(&[])).as_deref(), Some("pvc-1234"));
        let mut c = claim(&[]);
        c.metadata.uid = None;
        assert_eq!(volume_name(&c), None);
    }

    #[test]
    fn unsupported_claims_are_named() {
        assert_eq!(check_supported(&claim(&[])), Ok(Quantity("2Gi".into())));
        let with = |edit: fn(&mut PersistentVolumeClaimSpec)| {
            let mut c = claim(&[]);
            edit(c.spec.as_mut().expect("spec"));
            check_supported(&c)
        };
        assert_eq!(
            with(|s| s.access_modes = Some(vec!["ReadWriteMany".into()])),
            Err(Unsupported::AccessMode("ReadWriteMany".into()))
        );
        assert_eq!(
            with(|s| s.access_modes = Some(vec!["ReadWriteOncePod".into()])),
            Ok(Quantity("2Gi".into()))
        );
        assert_eq!(
            with(|s| s.selector = Some(LabelSelector::default())),
            Err(Unsupported::Selector)
        );
        assert_eq!(
            with(|s| s.volume_mode = Some("Block".into())),
            Err(Unsupported::VolumeMode("Block".into()))
        );
        assert_eq!(
            with(|s| {
                s.data_source = Some(TypedLocalObjectReference {
                    api_group: None,
                    kind: "PersistentVolumeClaim".into(),
                    name: "src".into(),
                })
            }),
            Err(Unsupported::DataSource)
        );
        assert_eq!(
            with(|s| s.resources = None),
            Err(Unsupported::NoStorageRequest)
        );
    }

    #[test]
    fn the_volume_points_at_the_directory_on_this_node_and_at_the_claim() {
        let mut retain = class("local-path", PROVISIONER, WFFC);
        retain.reclaim_policy = Some("Retain".into());
        let c = claim(&[(ANN_SELECTED_NODE, "node-a")]);
        let pv = build_volume(
            &c,
            &retain,
            "node-a",
            Path::new("/data/storage/pvc-1234_ns_data"),
            Quantity("2Gi".into()),
        );
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234"));
        assert_eq!(
            pv.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_PROVISIONED_BY))
                .map(String::as_str),
            Some(PROVISIONER)
        );
        let spec = pv.spec.expect("spec");
        let host_path = spec.host_path.expect("hostPath");
        assert_eq!(host_path.path, "/data/storage/pvc-1234_ns_data");
        assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));
        assert_eq!(
            spec.capacity.expect("capacity").get("storage"),
            Some(&Quantity("2Gi".into()))
        );
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        let term = &spec
            .node_affinity
            .and_then(|a| a.required)
            .expect("required affinity")
            .node_selector_terms[0];
        let requirement = &term.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(requirement.key, HOSTNAME_LABEL);
        assert_eq!(requirement.operator, "In");
        assert_eq!(requirement.values, Some(vec!["node-a".to_string()]));
        let claim_ref = spec.claim_ref.expect("claimRef");
        assert_eq!(claim_ref.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(claim_ref.namespace.as_deref(), Some("ns"));
        assert_eq!(claim_ref.name.as_deref(), Some("data"));
        assert_eq!(claim_ref.uid.as_deref(), Some("1234"));

        let default_policy = build_volume(
            &c,
            &class("local-path", PROVISIONER, WFFC),
            "node-a",
            Path::new("/x"),
            Quantity("1Gi".into()),
        );
        assert_eq!(
            default_policy
                .spec
                .expect("spec")
                .persistent_volume_reclaim_policy
                .as_deref(),
            Some("Delete")
        );
    }
}
