//! Which PersistentVolumes this node reclaims. No IO.
//!
//! A volume is this node's to delete when this provisioner made it (its
//! `pv.kubernetes.io/provisioned-by` names [`PROVISIONER`]), its required
//! node affinity names this node by hostname, its claim is gone (phase
//! `Released`), its reclaim policy is `Delete`, and it is not already being
//! deleted. Retained volumes keep their data: nothing here touches them.
//! Whether its path may be removed is decided on the disk, by
//! [`super::dirs::volume_dir_to_remove`].

use std::path::PathBuf;

use k8s_openapi::api::core::v1::PersistentVolume;

use super::PROVISIONER;
use super::claim::{ANN_PROVISIONED_BY, HOSTNAME_LABEL};

/// What to do with one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    /// Not this node's to reclaim (yet).
    Ignore,
    /// Remove the directory at `path`, then the PV.
    Delete {
        /// The PV's hostPath or local path.
        path: PathBuf,
    },
    /// Ours to reclaim, but there is no single path to remove.
    NoPath,
}

/// The node named by the volume's required node affinity: the first `In`
/// requirement on [`HOSTNAME_LABEL`], if it has exactly one value.
pub fn affinity_node(pv: &PersistentVolume) -> Option<&str> {
    let required = pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?;
    let requirement = required
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|r| r.key == HOSTNAME_LABEL && r.operator == "In")?;
    match requirement.values.as_deref() {
        Some([node]) => Some(node),
        _ => None,
    }
}

/// What this node does with `pv`.
pub fn decide(pv: &PersistentVolume, node_name: &str) -> VolumeAction {
    let provisioned_by = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_PROVISIONED_BY));
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let Some(spec) = pv.spec.as_ref() else {
        return VolumeAction::Ignore;
    };
    let delete = spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete");
    if provisioned_by.map(String::as_str) != Some(PROVISIONER)
        || affinity_node(pv) != Some(node_name)
        || pv.metadata.deletion_timestamp.is_some()
        || !released
        || !delete
    {
        return VolumeAction::Ignore;
    }
    match (&spec.host_path, &spec.local) {
        (Some(host_path), None) => VolumeAction::Delete {
            path: PathBuf::from(&host_path.path),
        },
        (None, Some(local)) => VolumeAction::Delete {
            path: PathBuf::from(&local.path),
        },
        _ => VolumeAction::NoPath,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, LocalVolumeSource, NodeSelector, NodeSelectorRequirement,
        NodeSelectorTerm, PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn affinity(key: &str, values: &[&str]) -> VolumeNodeAffinity {
        VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: key.into(),
                        operator: "In".into(),
                        values: Some(values.iter().map(|v| v.to_string()).collect()),
                    }]),
                    match_fields: None,
                }],
            }),
        }
    }

    /// A Released Delete volume this provisioner made on node-a.
    fn released() -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".into()),
                annotations: Some(BTreeMap::from([(
                    ANN_PROVISIONED_BY.to_string(),
                    PROVISIONER.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                host_path: Some(HostPathVolumeSource {
                    path: "/storage/pvc-1_ns_data".into(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                node_affinity: Some(affinity(HOSTNAME_LABEL, &["node-a"])),
                persistent_volume_reclaim_policy: Some("Delete".into()),
                ..PersistentVolumeSpec::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Released".into()),
                ..PersistentVolumeStatus::default()
            }),
        }
    }

    fn delete(path: &str) -> VolumeAction {
        VolumeAction::Delete {
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn a_released_delete_volume_of_this_node_is_deleted() {
        assert_eq!(
            decide(&released(), "node-a"),
            delete("/storage/pvc-1_ns_data")
        );
        let mut local = released();
        let spec = local.spec.as_mut().expect("spec");
        spec.host_path = None;
        spec.local = Some(LocalVolumeSource {
            path: "/storage/pvc-1_ns_data".into(),
            fs_type: None,
        });
        assert_eq!(decide(&local, "node-a"), delete("/storage/pvc-1_ns_data"));
    }

    #[test]
    fn other_nodes_leave_it_alone() {
        assert_eq!(decide(&released(), "node-b"), VolumeAction::Ignore);
        let mut two_nodes = released();
        two_nodes.spec.as_mut().expect("spec").node_affinity =
            Some(affinity(HOSTNAME_LABEL, &["node-a", "node-b"]));
        assert_eq!(decide(&two_nodes, "node-a"), VolumeAction::Ignore);
        let mut other_key = released();
        other_key.spec.as_mut().expect("spec").node_affinity =
            Some(affinity("topology.kubernetes.io/zone", &["node-a"]));
        assert_eq!(decide(&other_key, "node-a"), VolumeAction::Ignore);
        let mut no_affinity = released();
        no_affinity.spec.as_mut().expect("spec").node_affinity = None;
        assert_eq!(decide(&no_affinity, "node-a"), VolumeAction::Ignore);
    }

    #[test]
    fn retained_bound_foreign_and_deleting_volumes_are_left_alone() {
        let mut retain = released();
        retain
            .spec
            .as_mut()
            .expect("spec")
            .persistent_volume_reclaim_policy = Some("Retain".into());
        assert_eq!(decide(&retain, "node-a"), VolumeAction::Ignore);

        let mut bound = released();
        bound.status.as_mut().expect("status").phase = Some("Bound".into());
        assert_eq!(decide(&bound, "node-a"), VolumeAction::Ignore);

        let mut static_pv = released();
        static_pv.metadata.annotations = None;
        assert_eq!(decide(&static_pv, "node-a"), VolumeAction::Ignore);

        let mut foreign = released();
        foreign.metadata.annotations = Some(BTreeMap::from([(
            ANN_PROVISIONED_BY.to_string(),
            "example.com/nfs".to_string(),
        )]));
        assert_eq!(decide(&foreign, "node-a"), VolumeAction::Ignore);

        let mut deleting = released();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(decide(&deleting, "node-a"), VolumeAction::Ignore);
    }

    #[test]
    fn a_volume_without_one_path_is_reported() {
        let mut none = released();
        none.spec.as_mut().expect("spec").host_path = None;
        assert_eq!(decide(&none, "node-a"), VolumeAction::NoPath);
        let mut both = released();
        both.spec.as_mut().expect("spec").local = Some(LocalVolumeSource {
            path: "/elsewhere".into(),
            fs_type: None,
        });
        assert_eq!(decide(&both, "node-a"), VolumeAction::NoPath);
    }
}
