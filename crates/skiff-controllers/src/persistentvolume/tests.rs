use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
    PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, PersistentVolumeStatus, PodSpec,
    PodStatus, Volume, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::matching::*;
use super::plan::*;
use super::*;

fn quantities(storage: &str) -> BTreeMap<String, ApiQuantity> {
    BTreeMap::from([("storage".to_string(), ApiQuantity(storage.into()))])
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// An `Available` volume with no claim, of class `class` (`""`: none).
fn pv(name: &str, capacity: &str, modes: &[&str], class: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(quantities(capacity)),
            access_modes: Some(strings(modes)),
            storage_class_name: (!class.is_empty()).then(|| class.to_string()),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Available".into()),
            ..PersistentVolumeStatus::default()
        }),
    }
}

fn with_phase(mut volume: PersistentVolume, phase: &str) -> PersistentVolume {
    volume.status.get_or_insert_default().phase = Some(phase.into());
    volume
}

fn with_claim_ref(
    mut volume: PersistentVolume,
    claim: &str,
    uid: Option<&str>,
) -> PersistentVolume {
    volume.spec.get_or_insert_default().claim_ref = Some(ObjectReference {
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some("default".into()),
        name: Some(claim.into()),
        uid: uid.map(String::from),
        ..ObjectReference::default()
    });
    volume
}

fn with_annotation(mut volume: PersistentVolume, key: &str, value: &str) -> PersistentVolume {
    volume
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(key.into(), value.into());
    volume
}

fn with_policy(mut volume: PersistentVolume, policy: &str) -> PersistentVolume {
    volume
        .spec
        .get_or_insert_default()
        .persistent_volume_reclaim_policy = Some(policy.into());
    volume
}

/// A `Pending` claim in `default`; `class: None` leaves
/// `storageClassName` unset.
fn pvc(name: &str, request: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("9".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(strings(modes)),
            resources: Some(VolumeResourceRequirements {
                requests: Some(quantities(request)),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: class.map(String::from),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..PersistentVolumeClaimStatus::default()
        }),
    }
}

fn claim_annotated(
    mut claim: PersistentVolumeClaim,
    key: &str,
    value: &str,
) -> PersistentVolumeClaim {
    claim
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(key.into(), value.into());
    claim
}

fn naming(mut claim: PersistentVolumeClaim, volume: &str) -> PersistentVolumeClaim {
    claim.spec.get_or_insert_default().volume_name = Some(volume.into());
    claim
}

/// A claim the binder bound to `volume`.
fn bound_claim(name: &str, volume: &str) -> PersistentVolumeClaim {
    let mut claim = naming(pvc(name, "1Gi", &["ReadWriteOnce"], Some("")), volume);
    claim = claim_annotated(claim, ANN_BIND_COMPLETED, "yes");
    claim = claim_annotated(claim, ANN_BOUND_BY_CONTROLLER, "yes");
    claim.status = Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: Some(strings(&["ReadWriteOnce"])),
        capacity: Some(quantities("5Gi")),
        ..PersistentVolumeClaimStatus::default()
    });
    claim
}

/// A volume bound to claim `claim` (by the binder).
fn bound_volume(name: &str, claim: &str) -> PersistentVolume {
    let volume = with_claim_ref(
        pv(name, "5Gi", &["ReadWriteOnce"], ""),
        claim,
        Some(&format!("uid-{claim}")),
    );
    with_annotation(with_phase(volume, "Bound"), ANN_BOUND_BY_CONTROLLER, "yes")
}

fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        provisioner: provisioner.into(),
        volume_binding_mode: Some(mode.into()),
        reclaim_policy: Some("Delete".into()),
        ..StorageClass::default()
    }
}

fn default_class_named(name: &str, created: i64) -> StorageClass {
    let mut class = class(name, "rancher.io/local-path", "WaitForFirstConsumer");
    class.metadata.annotations = Some(BTreeMap::from([(
        ANN_DEFAULT_CLASS.to_string(),
        "true".to_string(),
    )]));
    class.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
    class
}

fn pod_using(name: &str, claim: &str, node: Option<&str>, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(String::from),
            volumes: Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
    }
}

fn arcs<T>(items: Vec<T>) -> Vec<Arc<T>> {
    items.into_iter().map(Arc::new).collect()
}

fn names(volume: Option<&Arc<PersistentVolume>>) -> Option<String> {
    volume.map(|v| v.name_any())
}

struct World {
    volumes: Vec<Arc<PersistentVolume>>,
    classes: Vec<Arc<StorageClass>>,
    pods: Vec<Arc<Pod>>,
    dynamic_provisioning: bool,
}

impl World {
    fn new(volumes: Vec<PersistentVolume>, classes: Vec<StorageClass>) -> Self {
        Self {
            volumes: arcs(volumes),
            classes: arcs(classes),
            pods: Vec::new(),
            dynamic_provisioning: true,
        }
    }

    fn sync(&self, claim: &PersistentVolumeClaim) -> Vec<Step> {
        sync_claim(
            claim,
            &ClaimWorld {
                volumes: &self.volumes,
                classes: &self.classes,
                pods: &self.pods,
                dynamic_provisioning: self.dynamic_provisioning,
            },
        )
    }
}

/// The steps as short strings, for readable assertions.
fn describe(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|step| match step {
            Step::BindVolume {
                volume,
                claim_ref,
                bound_by_controller,
            } => format!(
                "bind volume {} to {}/{} uid {} annotate {bound_by_controller}",
                volume.name_any(),
                claim_ref.namespace.as_deref().unwrap_or(""),
                claim_ref.name.as_deref().unwrap_or(""),
                claim_ref.uid.as_deref().unwrap_or("")
            ),
            Step::UnbindVolume {
                volume,
                bound_by_controller,
            } => format!("unbind volume {} by controller {bound_by_controller}", volume.name_any()),
            Step::VolumePhase {
                volume,
                phase,
                message,
            } => match message {
                Some(message) => format!("volume {} {}: {message}", volume.name_any(), phase.as_str()),
                None => format!("volume {} {}", volume.name_any(), phase.as_str()),
            },
            Step::BindClaim {
                volume_name,
                bound_by_controller,
                bind_completed,
            } => format!(
                "bind claim to {volume_name} bound-by-controller {bound_by_controller} bind-completed {bind_completed}"
            ),
            Step::ClaimStatus(status) => format!(
                "claim {} modes {:?} capacity {:?}",
                status.phase.as_deref().unwrap_or(""),
                status.access_modes.clone().unwrap_or_default(),
                status
                    .capacity
                    .as_ref()
                    .and_then(|c| c.get("storage"))
                    .map(|q| q.0.clone())
            ),
            Step::AssignClass(class) => format!("assign class {class}"),
            Step::SetProvisioner(provisioner) => format!("set provisioner {provisioner}"),
            Step::Event {
                regarding,
                event_type,
                reason,
                message,
            } => format!(
                "{} event on {} {}: {reason}: {message}",
                event_type.as_str(),
                regarding.kind.as_deref().unwrap_or(""),
                regarding.name.as_deref().unwrap_or("")
            ),
        })
        .collect()
}

mod matching_rules {
    use super::*;

    fn best(
        claim: &PersistentVolumeClaim,
        volumes: Vec<PersistentVolume>,
        delay: bool,
    ) -> Option<String> {
        let volumes = arcs(volumes);
        names(find_best_match(claim, &volumes, delay))
    }

    #[test]
    fn the_smallest_available_volume_that_fits_wins() {
        let claim = pvc("data", "2Gi", &["ReadWriteOnce"], Some(""));
        let volumes = vec![
            pv("big", "10Gi", &["ReadWriteOnce"], ""),
            pv("small", "1Gi", &["ReadWriteOnce"], ""),
            pv("fits", "3Gi", &["ReadWriteOnce"], ""),
            pv("exact", "2048Mi", &["ReadWriteOnce"], ""),
        ];
        assert_eq!(best(&claim, volumes, false).as_deref(), Some("exact"));
    }

    #[test]
    fn capacities_compare_across_units() {
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        // 1G (decimal) is less than 1Gi; 1073741824 bytes is exactly 1Gi.
        let volumes = vec![
            pv("decimal", "1G", &["ReadWriteOnce"], ""),
            pv("bytes", "1073741824", &["ReadWriteOnce"], ""),
        ];
        assert_eq!(best(&claim, volumes, false).as_deref(), Some("bytes"));
    }

    #[test]
    fn unusable_volumes_are_skipped() {
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        let mut deleting = pv("deleting", "1Gi", &["ReadWriteOnce"], "");
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut block = pv("block", "1Gi", &["ReadWriteOnce"], "");
        block.spec.get_or_insert_default().volume_mode = Some("Block".into());
        let mut attributes = pv("attributes", "1Gi", &["ReadWriteOnce"], "");
        attributes
            .spec
            .get_or_insert_default()
            .volume_attributes_class_name = Some("gold".into());
        let volumes = vec![
            deleting,
            block,
            attributes,
            pv("classy", "1Gi", &["ReadWriteOnce"], "fast"),
            with_phase(pv("released", "1Gi", &["ReadWriteOnce"], ""), "Released"),
            with_phase(pv("pending", "1Gi", &["ReadWriteOnce"], ""), "Pending"),
            with_claim_ref(
                pv("taken", "1Gi", &["ReadWriteOnce"], ""),
                "other",
                Some("uid-other"),
            ),
            pv("read-only", "1Gi", &["ReadOnlyMany"], ""),
            pv("tiny", "1Mi", &["ReadWriteOnce"], ""),
        ];
        assert_eq!(best(&claim, volumes.clone(), false), None);
        let mut with_good = volumes;
        with_good.push(pv("good", "5Gi", &["ReadWriteOnce"], ""));
        assert_eq!(best(&claim, with_good, false).as_deref(), Some("good"));
    }

    #[test]
    fn classes_must_be_equal_and_empty_means_no_class() {
        let volumes = vec![
            pv("none", "1Gi", &["ReadWriteOnce"], ""),
            pv("fast", "1Gi", &["ReadWriteOnce"], "fast"),
        ];
        let no_class = pvc("a", "1Gi", &["ReadWriteOnce"], Some(""));
        let unset = pvc("b", "1Gi", &["ReadWriteOnce"], None);
        let fast = pvc("c", "1Gi", &["ReadWriteOnce"], Some("fast"));
        let slow = pvc("d", "1Gi", &["ReadWriteOnce"], Some("slow"));
        assert_eq!(
            best(&no_class, volumes.clone(), false).as_deref(),
            Some("none")
        );
        assert_eq!(
            best(&unset, volumes.clone(), false).as_deref(),
            Some("none")
        );
        assert_eq!(best(&fast, volumes.clone(), false).as_deref(), Some("fast"));
        assert_eq!(best(&slow, volumes, false), None);
        // The beta annotation wins over the field.
        let annotated = claim_annotated(
            pvc("e", "1Gi", &["ReadWriteOnce"], Some("")),
            ANN_BETA_STORAGE_CLASS,
            "fast",
        );
        assert_eq!(claim_class(&annotated), "fast");
        assert!(claim_has_class(&annotated));
        assert!(!claim_has_class(&unset));
        assert!(claim_has_class(&no_class));
    }

    #[test]
    fn access_modes_must_be_a_superset_and_fewest_modes_come_first() {
        let volumes = vec![
            pv(
                "rwo-rwx-small",
                "1Gi",
                &["ReadWriteOnce", "ReadWriteMany"],
                "",
            ),
            pv("rwo-big", "10Gi", &["ReadWriteOnce"], ""),
            pv("rox", "1Gi", &["ReadOnlyMany"], ""),
        ];
        let rwo = pvc("a", "1Gi", &["ReadWriteOnce"], Some(""));
        let rwx = pvc("b", "1Gi", &["ReadWriteMany"], Some(""));
        let both = pvc("c", "1Gi", &["ReadWriteMany", "ReadWriteOnce"], Some(""));
        let rwop = pvc("d", "1Gi", &["ReadWriteOncePod"], Some(""));
        // The single-mode volume is preferred over a smaller one offering more.
        assert_eq!(
            best(&rwo, volumes.clone(), false).as_deref(),
            Some("rwo-big")
        );
        assert_eq!(
            best(&rwx, volumes.clone(), false).as_deref(),
            Some("rwo-rwx-small")
        );
        assert_eq!(
            best(&both, volumes.clone(), false).as_deref(),
            Some("rwo-rwx-small")
        );
        assert_eq!(best(&rwop, volumes, false), None);
    }

    #[test]
    fn the_selector_filters_on_volume_labels() {
        let mut claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        claim.spec.get_or_insert_default().selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".to_string(), "db".to_string())])),
            ..LabelSelector::default()
        });
        let mut labelled = pv("labelled", "5Gi", &["ReadWriteOnce"], "");
        labelled.metadata.labels = Some(BTreeMap::from([("tier".to_string(), "db".to_string())]));
        let volumes = vec![pv("plain", "1Gi", &["ReadWriteOnce"], ""), labelled];
        assert_eq!(best(&claim, volumes, false).as_deref(), Some("labelled"));
    }

    #[test]
    fn a_volume_reserved_for_the_claim_wins_over_a_smaller_free_one() {
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        // Reserved by its creator (no UID yet), even in another class and
        // not yet Available.
        let reserved = with_phase(
            with_claim_ref(
                pv("reserved", "5Gi", &["ReadWriteOnce"], "manual"),
                "data",
                None,
            ),
            "Pending",
        );
        let volumes = vec![pv("free", "1Gi", &["ReadWriteOnce"], ""), reserved];
        assert_eq!(best(&claim, volumes, false).as_deref(), Some("reserved"));
        // Reserved for a claim of the same name that was deleted (other UID).
        let stale = with_claim_ref(
            pv("stale", "5Gi", &["ReadWriteOnce"], ""),
            "data",
            Some("old"),
        );
        assert_eq!(best(&claim, vec![stale], false), None);
        // A reserved volume too small for the claim is no match.
        let small = with_claim_ref(pv("small", "1Mi", &["ReadWriteOnce"], ""), "data", None);
        assert_eq!(best(&claim, vec![small], false), None);
    }

    #[test]
    fn delayed_binding_only_takes_volumes_reserved_for_the_claim() {
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("local"));
        let free = pv("free", "1Gi", &["ReadWriteOnce"], "local");
        assert_eq!(best(&claim, vec![free.clone()], true), None);
        let provisioned = with_claim_ref(
            with_phase(pv("pvc-1", "1Gi", &["ReadWriteOnce"], "local"), "Pending"),
            "data",
            Some("uid-data"),
        );
        assert_eq!(
            best(&claim, vec![free, provisioned], true).as_deref(),
            Some("pvc-1")
        );
    }

    #[test]
    fn a_requested_volume_is_checked_with_upstream_reasons() {
        let claim = pvc("data", "2Gi", &["ReadWriteOnce"], Some(""));
        let ok = pv("ok", "2Gi", &["ReadWriteOnce", "ReadOnlyMany"], "");
        assert_eq!(check_volume_satisfies_claim(&ok, &claim), Ok(()));
        let small = pv("small", "1Gi", &["ReadWriteOnce"], "");
        assert_eq!(
            check_volume_satisfies_claim(&small, &claim),
            Err("requested PV is too small".into())
        );
        let classy = pv("classy", "2Gi", &["ReadWriteOnce"], "fast");
        assert_eq!(
            check_volume_satisfies_claim(&classy, &claim),
            Err("storageClassName does not match".into())
        );
        let modes = pv("modes", "2Gi", &["ReadOnlyMany"], "");
        assert_eq!(
            check_volume_satisfies_claim(&modes, &claim),
            Err("incompatible accessMode".into())
        );
        let mut block = pv("block", "2Gi", &["ReadWriteOnce"], "");
        block.spec.get_or_insert_default().volume_mode = Some("Block".into());
        assert_eq!(
            check_volume_satisfies_claim(&block, &claim),
            Err("incompatible volumeMode".into())
        );
        let mut deleting = pv("deleting", "2Gi", &["ReadWriteOnce"], "");
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            check_volume_satisfies_claim(&deleting, &claim),
            Err("the volume is marked for deletion \"deleting\"".into())
        );
    }

    #[test]
    fn the_default_class_is_the_newest_annotated_one() {
        let mut beta = class("beta", "x", "Immediate");
        beta.metadata.annotations = Some(BTreeMap::from([(
            ANN_BETA_DEFAULT_CLASS.to_string(),
            "true".to_string(),
        )]));
        beta.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(50).unwrap()));
        let classes = arcs(vec![
            class("plain", "x", "Immediate"),
            default_class_named("old", 10),
            default_class_named("b-new", 100),
            default_class_named("a-new", 100),
            beta,
        ]);
        assert_eq!(
            default_class(&classes).map(|c| c.name_any()).as_deref(),
            Some("a-new")
        );
        assert!(default_class(&arcs(vec![class("plain", "x", "Immediate")])).is_none());
    }
}

mod claims {
    use super::*;

    #[test]
    fn a_pending_claim_binds_volume_first_then_claim() {
        let world = World::new(vec![pv("pv1", "5Gi", &["ReadWriteOnce"], "")], vec![]);
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "bind volume pv1 to default/data uid uid-data annotate true",
                "volume pv1 Bound",
                "bind claim to pv1 bound-by-controller true bind-completed true",
                "claim Bound modes [\"ReadWriteOnce\"] capacity Some(\"5Gi\")",
            ]
        );
        let steps = world.sync(&claim);
        let Step::BindVolume { claim_ref, .. } = &steps[0] else {
            panic!("expected the volume to be bound first");
        };
        assert_eq!(claim_ref.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(claim_ref.api_version.as_deref(), Some("v1"));
        assert_eq!(claim_ref.resource_version.as_deref(), Some("9"));
    }

    #[test]
    fn a_volume_pre_bound_by_its_creator_is_not_marked_bound_by_controller() {
        let reserved = with_claim_ref(pv("pv1", "5Gi", &["ReadWriteOnce"], ""), "data", None);
        let world = World::new(vec![reserved], vec![]);
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        assert_eq!(
            describe(&world.sync(&claim))[0],
            "bind volume pv1 to default/data uid uid-data annotate false"
        );
    }

    #[test]
    fn a_provisioned_volume_only_needs_its_phase_and_the_claim() {
        let provisioned = with_annotation(
            with_phase(
                with_claim_ref(
                    pv("pvc-1", "1Gi", &["ReadWriteOnce"], "local-path"),
                    "data",
                    Some("uid-data"),
                ),
                "Pending",
            ),
            ANN_PROVISIONED_BY,
            "rancher.io/local-path",
        );
        let world = World::new(
            vec![provisioned],
            vec![class(
                "local-path",
                "rancher.io/local-path",
                "WaitForFirstConsumer",
            )],
        );
        let claim = claim_annotated(
            pvc("data", "1Gi", &["ReadWriteOnce"], Some("local-path")),
            ANN_SELECTED_NODE,
            "node-1",
        );
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "volume pvc-1 Bound",
                "bind claim to pvc-1 bound-by-controller true bind-completed true",
                "claim Bound modes [\"ReadWriteOnce\"] capacity Some(\"1Gi\")",
            ]
        );
    }

    #[test]
    fn a_claim_naming_a_free_volume_binds_it_without_bound_by_controller() {
        let world = World::new(vec![pv("pv1", "5Gi", &["ReadWriteOnce"], "")], vec![]);
        let claim = naming(pvc("data", "1Gi", &["ReadWriteOnce"], Some("")), "pv1");
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "bind volume pv1 to default/data uid uid-data annotate true",
                "volume pv1 Bound",
                "bind claim to pv1 bound-by-controller false bind-completed true",
                "claim Bound modes [\"ReadWriteOnce\"] capacity Some(\"5Gi\")",
            ]
        );
    }

    #[test]
    fn a_claim_naming_an_unfit_volume_stays_pending_with_a_mismatch_event() {
        let world = World::new(vec![pv("pv1", "1Gi", &["ReadWriteOnce"], "")], vec![]);
        let claim = naming(pvc("data", "2Gi", &["ReadWriteOnce"], Some("")), "pv1");
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "Warning event on PersistentVolumeClaim data: VolumeMismatch: Cannot bind to requested volume \"pv1\": requested PV is too small"
            ]
        );
    }

    #[test]
    fn a_claim_naming_a_missing_or_taken_volume_waits() {
        let claim = naming(pvc("data", "1Gi", &["ReadWriteOnce"], Some("")), "pv1");
        assert!(World::new(vec![], vec![]).sync(&claim).is_empty());
        let taken = bound_volume("pv1", "other");
        assert_eq!(
            describe(&World::new(vec![taken], vec![]).sync(&claim)),
            [
                "Warning event on PersistentVolumeClaim data: FailedBinding: volume \"pv1\" already bound to a different claim."
            ]
        );
        // A claim that was Bound before is set back to Pending.
        let mut was_bound = claim.clone();
        was_bound.status.get_or_insert_default().phase = Some("Bound".into());
        let world = World::new(vec![], vec![]);
        assert_eq!(
            describe(&world.sync(&was_bound)),
            ["claim Pending modes [] capacity None"]
        );
    }

    #[test]
    fn without_a_volume_or_class_the_claim_waits_with_an_event() {
        let world = World::new(vec![pv("small", "1Mi", &["ReadWriteOnce"], "")], vec![]);
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "Normal event on PersistentVolumeClaim data: FailedBinding: no persistent volumes available for this claim and no storage class is set"
            ]
        );
    }

    #[test]
    fn a_claim_without_a_class_gets_the_default_one_when_nothing_matches() {
        let world = World::new(vec![], vec![default_class_named("local-path", 1)]);
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], None);
        assert_eq!(describe(&world.sync(&claim)), ["assign class local-path"]);
        // An explicit "" opts out of classes.
        let none = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        assert_eq!(world.sync(&none).len(), 1);
        assert!(describe(&world.sync(&none))[0].contains("FailedBinding"));
        // A matching classless volume is taken first.
        let world = World::new(
            vec![pv("pv1", "1Gi", &["ReadWriteOnce"], "")],
            vec![default_class_named("local-path", 1)],
        );
        assert!(describe(&world.sync(&claim))[0].starts_with("bind volume pv1"));
    }

    #[test]
    fn an_immediate_claim_is_handed_to_its_provisioner() {
        let world = World::new(
            vec![],
            vec![class("fast", "rancher.io/local-path", "Immediate")],
        );
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("fast"));
        let message = "Waiting for a volume to be created either by the external provisioner \
                       'rancher.io/local-path' or manually by the system administrator. If volume \
                       creation is delayed, please verify that the provisioner is running and \
                       correctly registered.";
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "set provisioner rancher.io/local-path".to_string(),
                format!(
                    "Normal event on PersistentVolumeClaim data: ExternalProvisioning: {message}"
                ),
            ]
        );
        // Once annotated, only the event repeats.
        let annotated = claim_annotated(claim, ANN_STORAGE_PROVISIONER, "rancher.io/local-path");
        assert_eq!(
            describe(&world.sync(&annotated)),
            [format!(
                "Normal event on PersistentVolumeClaim data: ExternalProvisioning: {message}"
            )]
        );
    }

    #[test]
    fn a_wait_for_first_consumer_claim_waits_for_the_scheduler() {
        let mut world = World::new(
            vec![pv("free", "5Gi", &["ReadWriteOnce"], "local-path")],
            vec![class(
                "local-path",
                "rancher.io/local-path",
                "WaitForFirstConsumer",
            )],
        );
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("local-path"));
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "Normal event on PersistentVolumeClaim data: WaitForFirstConsumer: waiting for first consumer to be created before binding"
            ]
        );
        // A pod that uses the claim but is not scheduled yet is named.
        world.pods = arcs(vec![
            pod_using("web-0", "data", None, "Pending"),
            pod_using("done", "data", None, "Succeeded"),
            pod_using("placed", "data", Some("node-1"), "Running"),
            pod_using("other", "logs", None, "Pending"),
        ]);
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "Normal event on PersistentVolumeClaim data: WaitForPodScheduled: waiting for pod web-0 to be scheduled"
            ]
        );
        world
            .pods
            .push(Arc::new(pod_using("web-1", "data", None, "Pending")));
        assert!(
            describe(&world.sync(&claim))[0]
                .ends_with("waiting for pods web-0,web-1 to be scheduled")
        );
        // Once the scheduler picked a node, the provisioner is told.
        let selected = claim_annotated(claim, ANN_SELECTED_NODE, "node-1");
        let steps = describe(&world.sync(&selected));
        assert_eq!(steps[0], "set provisioner rancher.io/local-path");
        assert!(steps[1].contains("ExternalProvisioning"));
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn a_claim_of_a_missing_class_stays_pending_with_provisioning_failed() {
        let world = World::new(vec![], vec![]);
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("fast"));
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "Warning event on PersistentVolumeClaim data: ProvisioningFailed: storageclass.storage.k8s.io \"fast\" not found"
            ]
        );
    }

    #[test]
    fn in_tree_provisioners_do_not_exist() {
        let world = World::new(
            vec![],
            vec![class("local", "kubernetes.io/no-provisioner", "Immediate")],
        );
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("local"));
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "Warning event on PersistentVolumeClaim data: ProvisioningFailed: no volume plugin matched name: kubernetes.io/no-provisioner"
            ]
        );
    }

    #[test]
    fn without_dynamic_provisioning_a_class_claim_just_waits() {
        let mut world = World::new(
            vec![],
            vec![class("fast", "rancher.io/local-path", "Immediate")],
        );
        world.dynamic_provisioning = false;
        assert!(
            world
                .sync(&pvc("data", "1Gi", &["ReadWriteOnce"], Some("fast")))
                .is_empty()
        );
    }

    #[test]
    fn a_fully_bound_claim_needs_nothing() {
        let world = World::new(vec![bound_volume("pv1", "data")], vec![]);
        assert!(world.sync(&bound_claim("data", "pv1")).is_empty());
    }

    #[test]
    fn a_bound_claim_keeps_its_recorded_capacity() {
        let world = World::new(vec![bound_volume("pv1", "data")], vec![]);
        let mut claim = bound_claim("data", "pv1");
        claim.status.get_or_insert_default().capacity = Some(quantities("4Gi"));
        assert!(world.sync(&claim).is_empty());
        // But its access modes follow the volume's.
        claim.status.get_or_insert_default().access_modes = Some(strings(&["ReadOnlyMany"]));
        assert_eq!(
            describe(&world.sync(&claim)),
            ["claim Bound modes [\"ReadWriteOnce\"] capacity Some(\"4Gi\")"]
        );
    }

    #[test]
    fn a_bound_claim_whose_volume_lost_its_claim_ref_rebinds_it() {
        let unbound = with_phase(pv("pv1", "5Gi", &["ReadWriteOnce"], ""), "Available");
        let world = World::new(vec![unbound], vec![]);
        assert_eq!(
            describe(&world.sync(&bound_claim("data", "pv1"))),
            [
                "bind volume pv1 to default/data uid uid-data annotate true",
                "volume pv1 Bound",
            ]
        );
    }

    #[test]
    fn a_bound_claim_without_its_volume_is_lost_once() {
        let world = World::new(vec![], vec![]);
        let claim = bound_claim("data", "pv1");
        assert_eq!(
            describe(&world.sync(&claim)),
            [
                "claim Lost modes [] capacity None",
                "Warning event on PersistentVolumeClaim data: ClaimLost: Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            ]
        );
        let mut lost = claim;
        lost.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Lost".into()),
            ..PersistentVolumeClaimStatus::default()
        });
        assert!(world.sync(&lost).is_empty());
    }

    #[test]
    fn a_bound_claim_without_a_volume_name_is_lost() {
        let mut claim = bound_claim("data", "pv1");
        claim.spec.get_or_insert_default().volume_name = None;
        assert_eq!(
            describe(&World::new(vec![], vec![]).sync(&claim))[1],
            "Warning event on PersistentVolumeClaim data: ClaimLost: Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
        );
    }

    #[test]
    fn a_bound_claim_whose_volume_serves_another_claim_is_misbound() {
        let world = World::new(vec![bound_volume("pv1", "other")], vec![]);
        assert_eq!(
            describe(&world.sync(&bound_claim("data", "pv1"))),
            [
                "claim Lost modes [] capacity None",
                "Warning event on PersistentVolumeClaim data: ClaimMisbound: Two claims are bound to the same volume, this one is bound incorrectly",
            ]
        );
    }
}

mod volumes {
    use super::*;

    fn sync(volume: PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> Vec<String> {
        describe(&sync_volume(&Arc::new(volume), claim))
    }

    fn deleted_claim_volume(policy: &str) -> PersistentVolume {
        with_policy(bound_volume("pv1", "data"), policy)
    }

    #[test]
    fn an_unused_volume_becomes_available() {
        let new = with_phase(pv("pv1", "1Gi", &["ReadWriteOnce"], ""), "Pending");
        assert_eq!(sync(new, None), ["volume pv1 Available"]);
        assert!(sync(pv("pv1", "1Gi", &["ReadWriteOnce"], ""), None).is_empty());
        let reserved = with_phase(
            with_claim_ref(pv("pv1", "1Gi", &["ReadWriteOnce"], ""), "data", None),
            "Pending",
        );
        assert_eq!(sync(reserved, None), ["volume pv1 Available"]);
    }

    #[test]
    fn a_volume_whose_claim_points_back_is_bound() {
        let volume = with_phase(bound_volume("pv1", "data"), "Available");
        let claim = bound_claim("data", "pv1");
        assert_eq!(sync(volume, Some(&claim)), ["volume pv1 Bound"]);
        assert!(sync(bound_volume("pv1", "data"), Some(&claim)).is_empty());
    }

    #[test]
    fn a_volume_whose_claim_has_not_bound_yet_waits_for_the_claim() {
        let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
        assert!(sync(bound_volume("pv1", "data"), Some(&claim)).is_empty());
        // Unless the claim can never take it.
        let mut block = claim.clone();
        block.spec.get_or_insert_default().volume_mode = Some("Block".into());
        assert_eq!(
            sync(bound_volume("pv1", "data"), Some(&block)),
            [
                "Warning event on PersistentVolume pv1: VolumeMismatch: Cannot bind PersistentVolume to requested PersistentVolumeClaim \"data\" due to incompatible volumeMode.",
                "Warning event on PersistentVolumeClaim data: VolumeMismatch: Cannot bind PersistentVolume \"pv1\" to requested PersistentVolumeClaim due to incompatible volumeMode.",
            ]
        );
    }

    #[test]
    fn retain_keeps_a_released_volume() {
        assert_eq!(
            sync(deleted_claim_volume("Retain"), None),
            ["volume pv1 Released"]
        );
        let released = with_phase(deleted_claim_volume("Retain"), "Released");
        assert!(sync(released, None).is_empty());
    }

    #[test]
    fn a_claim_recreated_under_the_same_name_does_not_hold_the_volume() {
        let mut newer = bound_claim("data", "pv1");
        newer.metadata.uid = Some("uid-newer".into());
        assert_eq!(
            sync(deleted_claim_volume("Retain"), Some(&newer)),
            ["volume pv1 Released"]
        );
    }

    #[test]
    fn delete_is_left_to_the_external_provisioner_that_made_the_volume() {
        let provisioned = with_annotation(
            deleted_claim_volume("Delete"),
            ANN_PROVISIONED_BY,
            "rancher.io/local-path",
        );
        assert_eq!(sync(provisioned, None), ["volume pv1 Released"]);
        let mut csi = deleted_claim_volume("Delete");
        csi.spec.get_or_insert_default().csi = Some(Default::default());
        assert_eq!(sync(csi, None), ["volume pv1 Released"]);
    }

    #[test]
    fn delete_without_a_deleter_fails_once_with_an_event() {
        let message = "error getting deleter volume plugin for volume \"pv1\": no deletable volume plugin matched";
        assert_eq!(
            sync(deleted_claim_volume("Delete"), None),
            [
                "volume pv1 Released".to_string(),
                format!("volume pv1 Failed: {message}"),
                format!("Warning event on PersistentVolume pv1: VolumeFailedDelete: {message}"),
            ]
        );
        let in_tree = with_annotation(
            with_phase(deleted_claim_volume("Delete"), "Released"),
            ANN_PROVISIONED_BY,
            "kubernetes.io/host-path",
        );
        assert_eq!(sync(in_tree, None).len(), 2);
        let failed = with_phase(deleted_claim_volume("Delete"), "Failed");
        assert!(sync(failed, None).is_empty());
    }

    #[test]
    fn recycle_and_unknown_policies_fail() {
        assert_eq!(
            sync(deleted_claim_volume("Recycle"), None)[2],
            "Warning event on PersistentVolume pv1: VolumeFailedRecycle: No recycler plugin found for the volume!"
        );
        assert_eq!(
            sync(deleted_claim_volume("Sometimes"), None)[2],
            "Warning event on PersistentVolume pv1: VolumeUnknownReclaimPolicy: Volume has unrecognized PersistentVolumeReclaimPolicy"
        );
    }

    #[test]
    fn a_volume_whose_claim_bound_elsewhere_is_unbound_or_released() {
        let elsewhere = bound_claim("data", "pv2");
        assert_eq!(
            sync(bound_volume("pv1", "data"), Some(&elsewhere)),
            [
                "unbind volume pv1 by controller true",
                "volume pv1 Available"
            ]
        );
        let mut by_user = bound_volume("pv1", "data");
        by_user.metadata.annotations = None;
        assert_eq!(
            sync(by_user, Some(&elsewhere)),
            [
                "unbind volume pv1 by controller false",
                "volume pv1 Available"
            ]
        );
        let provisioned = with_annotation(
            deleted_claim_volume("Delete"),
            ANN_PROVISIONED_BY,
            "rancher.io/local-path",
        );
        assert_eq!(sync(provisioned, Some(&elsewhere)), ["volume pv1 Released"]);
    }
}

/// The binder's traffic against a fake API server.
mod controller {
    use serde_json::{Value, json};
    use skiff_testing::FakeApi;
    use tokio_util::sync::CancellationToken;

    use super::*;

    const VOLUMES: &str = "/api/v1/persistentvolumes";
    const CLAIMS: &str = "/api/v1/persistentvolumeclaims";

    fn to_json<T: serde::Serialize>(value: T) -> Value {
        serde_json::to_value(value).expect("serializable")
    }

    /// Runs the binder against `api` while `act` runs, then a little longer.
    async fn run_binder<F: Future<Output = ()>>(api: &FakeApi, act: F) {
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(api.client());
        let binder = start(
            &mut factory,
            api.client(),
            PersistentVolumeConfig::default(),
            shutdown.clone(),
        );
        let informers = tokio::spawn(factory.run(shutdown.clone()));
        let binder = tokio::spawn(binder);
        tokio::time::sleep(Duration::from_secs(1)).await;
        act.await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.cancel();
        binder.await.expect("binder");
        informers.await.expect("informers");
    }

    #[tokio::test(start_paused = true)]
    async fn binding_writes_the_volume_then_the_claim_pinned_to_what_was_seen() {
        let api = FakeApi::new(vec![
            (
                VOLUMES,
                vec![to_json(pv("pv1", "5Gi", &["ReadWriteOnce"], ""))],
            ),
            (
                CLAIMS,
                vec![to_json(pvc("data", "1Gi", &["ReadWriteOnce"], Some("")))],
            ),
        ]);
        run_binder(&api, async {}).await;

        let writes = api.writes();
        let paths: Vec<(&str, &str)> = writes
            .iter()
            .map(|w| (w.method.as_str(), w.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("PATCH", "/api/v1/persistentvolumes/pv1"),
                ("PATCH", "/api/v1/persistentvolumes/pv1/status"),
                (
                    "PATCH",
                    "/api/v1/namespaces/default/persistentvolumeclaims/data"
                ),
                (
                    "PATCH",
                    "/api/v1/namespaces/default/persistentvolumeclaims/data/status"
                ),
            ]
        );
        let volume = &writes[0].body;
        assert_eq!(volume["metadata"]["resourceVersion"], "7");
        assert_eq!(
            volume["metadata"]["annotations"][ANN_BOUND_BY_CONTROLLER],
            "yes"
        );
        assert_eq!(volume["spec"]["claimRef"]["name"], "data");
        assert_eq!(volume["spec"]["claimRef"]["uid"], "uid-data");
        // Each later write of an object is pinned to the version the
        // previous one returned (the fake numbers writes from 10).
        let phase = &writes[1].body;
        assert_eq!(phase["metadata"]["resourceVersion"], "10");
        assert_eq!(phase["status"]["phase"], "Bound");
        assert!(phase["status"]["lastPhaseTransitionTime"].is_string());
        let claim = &writes[2].body;
        assert_eq!(claim["metadata"]["resourceVersion"], "9");
        assert_eq!(claim["spec"]["volumeName"], "pv1");
        assert_eq!(claim["metadata"]["annotations"][ANN_BIND_COMPLETED], "yes");
        assert_eq!(
            claim["metadata"]["annotations"][ANN_BOUND_BY_CONTROLLER],
            "yes"
        );
        let status = &writes[3].body;
        assert_eq!(status["metadata"]["resourceVersion"], "12");
        assert_eq!(
            status["status"],
            json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "5Gi"}})
        );
        let stored = api
            .object("/api/v1/namespaces/default/persistentvolumeclaims/data")
            .expect("claim");
        assert_eq!(stored["status"]["phase"], "Bound");
        assert_eq!(
            api.object("/api/v1/persistentvolumes/pv1").expect("volume")["status"]["phase"],
            "Bound"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deleting_the_claim_releases_its_volume() {
        let claim = bound_claim("data", "pv1");
        let api = FakeApi::new(vec![
            (VOLUMES, vec![to_json(bound_volume("pv1", "data"))]),
            (CLAIMS, vec![to_json(&claim)]),
        ]);
        let gone = async {
            // The API server no longer has it when the watch says so.
            let claim_path = "/api/v1/namespaces/default/persistentvolumeclaims/data";
            api.client()
                .request::<Value>(
                    http::Request::delete(claim_path)
                        .body(Vec::new())
                        .expect("request"),
                )
                .await
                .expect("delete");
            api.send(CLAIMS, "DELETED", to_json(&claim)).await;
        };
        run_binder(&api, gone).await;
        let binder_writes: Vec<(String, Value)> = api
            .writes()
            .into_iter()
            .filter(|w| w.method == "PATCH")
            .map(|w| (w.path, w.body["status"].clone()))
            .collect();
        assert_eq!(binder_writes.len(), 1, "{binder_writes:?}");
        assert_eq!(binder_writes[0].0, "/api/v1/persistentvolumes/pv1/status");
        assert_eq!(binder_writes[0].1["phase"], "Released");
    }
}
