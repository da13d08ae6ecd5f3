use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};

use super::prebind::{PreBindError, provision_done, static_binding_done};
use super::*;
use crate::algorithm::{Decision, decide, schedule};
use crate::snapshot::tests::{pod, ready_node};
use crate::snapshot::{PodInfo, Snapshot};

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

pub(crate) fn class(name: &str, mode: &str, provisioner: &str) -> StorageClass {
    object(json!({
        "metadata": {"name": name, "resourceVersion": "1"},
        "provisioner": provisioner,
        "volumeBindingMode": mode,
    }))
}

/// An unbound claim of `class` for `size`, ReadWriteOnce.
pub(crate) fn claim(name: &str, class: &str, size: &str) -> PersistentVolumeClaim {
    object(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "1"},
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
        "status": {"phase": "Pending"},
    }))
}

/// `claim` as the PV controller leaves it once bound to `volume`.
fn bound(mut claim: PersistentVolumeClaim, volume: &str) -> PersistentVolumeClaim {
    claim.spec.as_mut().unwrap().volume_name = Some(volume.into());
    claim
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANN_BIND_COMPLETED.into(), "yes".into());
    claim.status.as_mut().unwrap().phase = Some("Bound".into());
    claim
}

fn annotated(mut claim: PersistentVolumeClaim, key: &str, value: &str) -> PersistentVolumeClaim {
    claim
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    claim
}

/// An Available ReadWriteOnce volume of `class` and `size`, tied to the
/// nodes whose hostname is in `hosts` (any node when empty).
pub(crate) fn volume(name: &str, class: &str, size: &str, hosts: &[&str]) -> PersistentVolume {
    let mut pv: PersistentVolume = object(json!({
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": size},
            "hostPath": {"path": format!("/data/{name}")},
        },
        "status": {"phase": "Available"},
    }));
    if !hosts.is_empty() {
        pv.spec.as_mut().unwrap().node_affinity = Some(object(json!({
            "required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": hosts}
            ]}]}
        })));
    }
    pv
}

fn with_labels_pv(mut pv: PersistentVolume, labels: &[(&str, &str)]) -> PersistentVolume {
    pv.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    pv
}

/// A pod with one `persistentVolumeClaim` volume per claim name.
pub(crate) fn pod_with_claims(name: &str, cpu: &str, claims: &[&str]) -> Pod {
    let mut p = pod(name, cpu, "");
    p.spec.as_mut().unwrap().volumes = Some(
        claims
            .iter()
            .map(|c| {
                object::<Volume>(
                    json!({"name": format!("vol-{c}"), "persistentVolumeClaim": {"claimName": c}}),
                )
            })
            .collect(),
    );
    p
}

/// Three Ready nodes a, b, c with 2 cpus each.
fn cluster() -> Snapshot {
    let mut snap = Snapshot::new();
    for n in ["a", "b", "c"] {
        snap.upsert_node(Arc::new(ready_node(n, "2")));
    }
    snap
}

fn info(p: Pod) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(p)))
}

/// The `FailedScheduling` message of a pod that fits nowhere.
fn failure(snap: &Snapshot, p: &PodInfo) -> String {
    match decide(snap, p, 0, 0, 0, 0) {
        Decision::Wait { fit, .. } => fit.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The nodes the pod may go to.
fn feasible(snap: &Snapshot, p: &Pod) -> Vec<String> {
    let state = FilterState::new(snap.volumes(), p).unwrap().unwrap();
    snap.nodes()
        .filter(|n| state.filter(n.node.as_deref().unwrap()).is_ok())
        .map(|n| n.name().to_string())
        .collect()
}

fn node_object<'a>(snap: &'a Snapshot, name: &str) -> &'a Node {
    snap.node(name).unwrap().node.as_deref().unwrap()
}

const NOT_HELPFUL: &str =
    "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";

#[test]
fn pods_without_claims_skip_the_volume_filters() {
    let snap = cluster();
    assert_eq!(
        FilterState::new(snap.volumes(), &pod("p", "", "")),
        Ok(None)
    );
    let mut p = pod("p", "", "");
    p.spec.as_mut().unwrap().volumes = Some(vec![object(json!({"name": "tmp", "emptyDir": {}}))]);
    assert_eq!(FilterState::new(snap.volumes(), &p), Ok(None));
}

#[test]
fn missing_deleted_and_lost_claims_refuse_the_pod_everywhere() {
    let mut snap = cluster();
    let p = info(pod_with_claims("p", "", &["data"]));
    assert_eq!(
        failure(&snap, &p),
        format!("0/3 nodes are available: persistentvolumeclaim \"data\" not found. {NOT_HELPFUL}")
    );

    let mut deleting = bound(claim("data", "local-path", "1Gi"), "pv-1");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    snap.volumes_mut().upsert_claim(deleting);
    assert_eq!(
        failure(&snap, &p),
        format!(
            "0/3 nodes are available: persistentvolumeclaim \"data\" is being deleted. {NOT_HELPFUL}"
        )
    );

    let mut lost = bound(claim("data", "local-path", "1Gi"), "pv-1");
    lost.metadata.resource_version = Some("2".into());
    lost.status.as_mut().unwrap().phase = Some("Lost".into());
    snap.volumes_mut().upsert_claim(lost);
    assert_eq!(
        FilterState::new(snap.volumes(), &p.pod).unwrap_err(),
        "persistentvolumeclaim \"data\" bound to non-existent persistentvolume \"pv-1\""
    );

    // The first problem in the pod's volume order is the one reported.
    let p = info(pod_with_claims("p", "", &["other", "data"]));
    assert_eq!(
        FilterState::new(snap.volumes(), &p.pod).unwrap_err(),
        "persistentvolumeclaim \"other\" not found"
    );
}

#[test]
fn unbound_immediate_claims_of_each_kind() {
    for class_name in ["fast", "unknown", ""] {
        let mut snap = cluster();
        snap.volumes_mut()
            .upsert_class(class("fast", "Immediate", "example.com/disk"));
        snap.volumes_mut()
            .upsert_claim(claim("data", class_name, "1Gi"));
        let p = info(pod_with_claims("p", "", &["data"]));
        assert_eq!(
            failure(&snap, &p),
            format!("0/3 nodes are available: {ERR_UNBOUND_IMMEDIATE}. {NOT_HELPFUL}"),
            "class {class_name:?}"
        );
    }
    // A claim that names its volume but is not bound yet, even of a
    // WaitForFirstConsumer class, is the PV controller's to finish.
    let mut snap = cluster();
    snap.volumes_mut().upsert_class(class(
        "local-path",
        "WaitForFirstConsumer",
        "rancher.io/local-path",
    ));
    let mut prebound = claim("data", "local-path", "1Gi");
    prebound.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
    snap.volumes_mut().upsert_claim(prebound);
    let p = pod_with_claims("p", "", &["data"]);
    assert_eq!(
        FilterState::new(snap.volumes(), &p).unwrap_err(),
        ERR_UNBOUND_IMMEDIATE
    );
}

#[test]
fn bound_volumes_pin_the_pod_to_their_nodes() {
    let mut snap = cluster();
    snap.volumes_mut()
        .upsert_claim(bound(claim("data", "local-path", "1Gi"), "pv-1"));
    let p = info(pod_with_claims("p", "", &["data"]));
    // The volume is not in the cache (yet).
    assert_eq!(
        failure(&snap, &p),
        format!("0/3 nodes are available: persistentvolume \"pv-1\" not found. {NOT_HELPFUL}")
    );
    let mut pv = volume("pv-1", "local-path", "1Gi", &["b"]);
    pv.status.as_mut().unwrap().phase = Some("Bound".into());
    snap.volumes_mut().upsert_volume(pv);
    assert_eq!(feasible(&snap, &p.pod), ["b"]);
    match decide(&snap, &p, 0, 0, 0, 0) {
        Decision::Bind(placement) => assert_eq!(placement.node, "b"),
        other => panic!("{other:?}"),
    }
    // Every claim bound: nothing to do before binding the pod.
    assert_eq!(
        VolumePlan::for_pod(snap.volumes(), &p.pod, node_object(&snap, "b")),
        Ok(None)
    );

    // b is full: the message counts both reasons, and preemption cannot
    // move the volume.
    snap.add_pod("b", info(pod("big", "2", "")));
    let p = info(pod_with_claims("p", "1", &["data"]));
    assert_eq!(
        failure(&snap, &p),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had volume node affinity conflict. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn a_claim_mounted_twice_needs_one_volume() {
    let mut snap = wffc_cluster(NOT_SUPPORTED_PROVISIONER);
    snap.volumes_mut()
        .upsert_volume(volume("pv-a", "local", "1Gi", &["a"]));
    let p = pod_with_claims("p", "", &["data", "data"]);
    assert_eq!(feasible(&snap, &p), ["a"]);
    let plan = VolumePlan::for_pod(snap.volumes(), &p, node_object(&snap, "a"))
        .unwrap()
        .unwrap();
    assert_eq!(plan.bindings.len(), 1);
}

#[test]
fn bound_volumes_without_node_affinity_fit_everywhere() {
    let mut snap = cluster();
    snap.volumes_mut()
        .upsert_claim(bound(claim("data", "nfs", "1Gi"), "pv-1"));
    snap.volumes_mut()
        .upsert_volume(volume("pv-1", "nfs", "1Gi", &[]));
    assert_eq!(
        feasible(&snap, &pod_with_claims("p", "", &["data"])),
        ["a", "b", "c"]
    );
}

fn wffc_cluster(provisioner: &str) -> Snapshot {
    let mut snap = cluster();
    snap.volumes_mut()
        .upsert_class(class("local", "WaitForFirstConsumer", provisioner));
    snap.volumes_mut()
        .upsert_claim(claim("data", "local", "1Gi"));
    snap
}

#[test]
fn wait_for_first_consumer_claims_provision_on_the_chosen_node() {
    let snap = wffc_cluster("rancher.io/local-path");
    let p = info(pod_with_claims("p", "", &["data"]));
    assert_eq!(feasible(&snap, &p.pod), ["a", "b", "c"]);
    let node = match decide(&snap, &p, 0, 0, 0, 0) {
        Decision::Bind(placement) => placement.node,
        other => panic!("{other:?}"),
    };
    let plan = VolumePlan::for_pod(snap.volumes(), &p.pod, node_object(&snap, &node))
        .unwrap()
        .unwrap();
    assert_eq!(plan.node, node);
    assert!(plan.bindings.is_empty());
    assert_eq!(plan.provisions.len(), 1);
    assert_eq!(
        annotation(plan.provisions[0].as_ref(), ANN_SELECTED_NODE),
        Some(node.as_str())
    );
    assert_eq!(plan.node_labels["kubernetes.io/hostname"], node);
}

#[test]
fn without_a_provisioner_a_static_volume_is_needed() {
    let mut snap = wffc_cluster(NOT_SUPPORTED_PROVISIONER);
    let p = info(pod_with_claims("p", "", &["data"]));
    assert_eq!(
        failure(&snap, &p),
        format!(
            "0/3 nodes are available: 3 {ERR_BIND_CONFLICT}. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
        )
    );
    // A volume too small, one of another class, then one that fits on c.
    snap.volumes_mut()
        .upsert_volume(volume("small", "local", "500Mi", &["a"]));
    snap.volumes_mut()
        .upsert_volume(volume("other-class", "slow", "1Gi", &["b"]));
    snap.volumes_mut()
        .upsert_volume(volume("pv-c", "local", "2Gi", &["c"]));
    assert_eq!(feasible(&snap, &p.pod), ["c"]);
    let plan = VolumePlan::for_pod(snap.volumes(), &p.pod, node_object(&snap, "c"))
        .unwrap()
        .unwrap();
    assert!(plan.provisions.is_empty());
    let [binding] = plan.bindings.as_slice() else {
        panic!("{plan:?}")
    };
    assert!(binding.dirty);
    assert_eq!(name_of(binding.volume.as_ref()), "pv-c");
    let reference = binding
        .volume
        .spec
        .as_ref()
        .unwrap()
        .claim_ref
        .as_ref()
        .unwrap();
    assert_eq!(reference.name.as_deref(), Some("data"));
    assert_eq!(reference.namespace.as_deref(), Some("default"));
    assert_eq!(reference.uid.as_deref(), Some("uid-data"));
    assert_eq!(reference.kind.as_deref(), Some("PersistentVolumeClaim"));
    assert_eq!(
        annotation(binding.volume.as_ref(), ANN_BOUND_BY_CONTROLLER),
        Some("yes")
    );
    // Elsewhere the reasons name the claim's problem.
    assert_eq!(
        FilterState::new(snap.volumes(), &p.pod)
            .unwrap()
            .unwrap()
            .filter(node_object(&snap, "a"))
            .unwrap_err()
            .reasons,
        [ERR_BIND_CONFLICT]
    );
}

#[test]
fn static_volumes_are_preferred_to_provisioning() {
    let mut snap = wffc_cluster("rancher.io/local-path");
    snap.volumes_mut()
        .upsert_volume(volume("pv-b", "local", "1Gi", &["b"]));
    let p = pod_with_claims("p", "", &["data"]);
    let on = |node: &str| {
        VolumePlan::for_pod(snap.volumes(), &p, node_object(&snap, node))
            .unwrap()
            .unwrap()
    };
    let plan = on("b");
    assert_eq!(plan.bindings.len(), 1);
    assert!(plan.provisions.is_empty());
    let plan = on("a");
    assert!(plan.bindings.is_empty());
    assert_eq!(plan.provisions.len(), 1);
}

#[test]
fn allowed_topologies_limit_provisioning() {
    let mut snap = cluster();
    let mut restricted = class("zonal", "WaitForFirstConsumer", "example.com/disk");
    restricted.allowed_topologies = Some(vec![object(json!({"matchLabelExpressions": [
        {"key": "kubernetes.io/hostname", "values": ["a", "c"]}
    ]}))]);
    snap.volumes_mut().upsert_class(restricted);
    snap.volumes_mut()
        .upsert_claim(claim("data", "zonal", "1Gi"));
    assert_eq!(
        feasible(&snap, &pod_with_claims("p", "", &["data"])),
        ["a", "c"]
    );
    // A term without requirements admits nothing.
    let mut empty = class("zonal", "WaitForFirstConsumer", "example.com/disk");
    empty.metadata.resource_version = Some("2".into());
    empty.allowed_topologies = Some(vec![object(json!({}))]);
    assert!(snap.volumes_mut().upsert_class(empty));
    assert!(feasible(&snap, &pod_with_claims("p", "", &["data"])).is_empty());
}

#[test]
fn a_selected_node_is_the_only_fit() {
    let mut snap = wffc_cluster("rancher.io/local-path");
    snap.volumes_mut().upsert_claim(annotated(
        claim("data", "local", "1Gi"),
        ANN_SELECTED_NODE,
        "b",
    ));
    assert_eq!(feasible(&snap, &pod_with_claims("p", "", &["data"])), ["b"]);
}

#[test]
fn claims_and_bound_volumes_give_every_reason() {
    let mut snap = wffc_cluster(NOT_SUPPORTED_PROVISIONER);
    let home = bound(claim("home", "local", "1Gi"), "pv-home");
    let (mut pv_home, _) = bind_volume_to_claim(&volume("pv-home", "local", "1Gi", &["a"]), &home);
    pv_home.status.as_mut().unwrap().phase = Some("Bound".into());
    snap.volumes_mut().upsert_claim(home);
    snap.volumes_mut().upsert_volume(pv_home);
    let p = info(pod_with_claims("p", "", &["home", "data"]));
    assert_eq!(
        failure(&snap, &p),
        format!(
            "0/3 nodes are available: 2 {ERR_NODE_CONFLICT}, 3 {ERR_BIND_CONFLICT}. {NOT_HELPFUL}"
        )
    );
}

#[test]
fn each_static_volume_goes_to_one_claim_smallest_claims_first() {
    let mut snap = cluster();
    snap.volumes_mut().upsert_class(class(
        "local",
        "WaitForFirstConsumer",
        NOT_SUPPORTED_PROVISIONER,
    ));
    snap.volumes_mut()
        .upsert_claim(claim("big", "local", "5Gi"));
    snap.volumes_mut()
        .upsert_claim(claim("small", "local", "1Gi"));
    snap.volumes_mut()
        .upsert_volume(volume("pv-5", "local", "5Gi", &["a"]));
    snap.volumes_mut()
        .upsert_volume(volume("pv-10", "local", "10Gi", &["a"]));
    let p = pod_with_claims("p", "", &["big", "small"]);
    let plan = VolumePlan::for_pod(snap.volumes(), &p, node_object(&snap, "a"))
        .unwrap()
        .unwrap();
    let pairs: Vec<(&str, &str)> = plan
        .bindings
        .iter()
        .map(|b| (name_of(b.claim.as_ref()), name_of(b.volume.as_ref())))
        .collect();
    // The small claim takes the smallest volume that fits, leaving the
    // big claim the other one.
    assert_eq!(pairs, [("small", "pv-5"), ("big", "pv-10")]);
    // With one volume, the second claim has nothing left.
    snap.volumes_mut().remove_volume("pv-10");
    assert_eq!(
        VolumePlan::for_pod(snap.volumes(), &p, node_object(&snap, "a")),
        Err(ERR_BIND_CONFLICT.to_string())
    );
}

#[test]
fn volume_matching_follows_upstream() {
    let labels: BTreeMap<String, String> =
        [("kubernetes.io/hostname".to_string(), "a".to_string())].into();
    let c = claim("data", "local", "1Gi");
    let none = HashSet::new();
    let pick = |volumes: Vec<PersistentVolume>, excluded: &HashSet<&str>| {
        let volumes: Vec<Arc<PersistentVolume>> = volumes.into_iter().map(Arc::new).collect();
        find_matching_volume(&c, &volumes, &labels, excluded)
            .map(|v| name_of(v.as_ref()).to_string())
    };
    // The smallest that fits.
    assert_eq!(
        pick(
            vec![
                volume("v3", "local", "3Gi", &[]),
                volume("v2", "local", "2Gi", &[]),
                volume("v05", "local", "512Mi", &[]),
            ],
            &none
        )
        .as_deref(),
        Some("v2")
    );
    // Excluded, not Available, being deleted, claimed by another claim, of
    // another class, another volume mode, missing access modes, off-node.
    let mut released = volume("released", "local", "1Gi", &[]);
    released.status.as_mut().unwrap().phase = Some("Released".into());
    let mut deleting = volume("deleting", "local", "1Gi", &[]);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let mut taken = volume("taken", "local", "1Gi", &[]);
    taken.spec.as_mut().unwrap().claim_ref =
        Some(object(json!({"name": "other", "namespace": "default"})));
    let mut block = volume("block", "local", "1Gi", &[]);
    block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
    let mut rox = volume("rox", "local", "1Gi", &[]);
    rox.spec.as_mut().unwrap().access_modes = Some(vec!["ReadOnlyMany".into()]);
    let excluded: HashSet<&str> = ["excluded"].into();
    assert_eq!(
        pick(
            vec![
                volume("excluded", "local", "1Gi", &[]),
                released,
                deleting,
                taken,
                volume("slow", "slow", "1Gi", &[]),
                block,
                rox,
                volume("elsewhere", "local", "1Gi", &["b"]),
            ],
            &excluded
        ),
        None
    );
    // A volume pre-bound to this claim wins over a smaller Available one,
    // whatever its phase; off-node, it means no match at all.
    let mut mine = volume("mine", "local", "4Gi", &[]);
    mine.spec.as_mut().unwrap().claim_ref =
        Some(object(json!({"name": "data", "namespace": "default"})));
    mine.status.as_mut().unwrap().phase = Some("Pending".into());
    assert_eq!(
        pick(vec![volume("v1", "local", "1Gi", &[]), mine.clone()], &none).as_deref(),
        Some("mine")
    );
    let mut mine_elsewhere = mine.clone();
    mine_elsewhere.spec.as_mut().unwrap().node_affinity = volume("x", "local", "1Gi", &["b"])
        .spec
        .unwrap()
        .node_affinity;
    assert_eq!(
        pick(
            vec![volume("v1", "local", "1Gi", &[]), mine_elsewhere],
            &none
        ),
        None
    );
    // A claim reference with another UID is another claim's.
    let mut stale = mine;
    stale.spec.as_mut().unwrap().claim_ref = Some(object(
        json!({"name": "data", "namespace": "default", "uid": "old"}),
    ));
    assert_eq!(pick(vec![stale], &none), None);
    // The claim's selector must select the volume.
    let mut selective = c.clone();
    selective.spec.as_mut().unwrap().selector =
        Some(object(json!({"matchLabels": {"tier": "gold"}})));
    let vols = vec![
        Arc::new(volume("plain", "local", "1Gi", &[])),
        Arc::new(with_labels_pv(
            volume("gold", "local", "2Gi", &[]),
            &[("tier", "gold")],
        )),
    ];
    assert_eq!(
        find_matching_volume(&selective, &vols, &labels, &none).map(|v| name_of(v.as_ref())),
        Some("gold")
    );
}

#[test]
fn node_affinity_reads_labels_only() {
    let labels: BTreeMap<String, String> = [("zone".to_string(), "x".to_string())].into();
    let mut pv = volume("pv", "local", "1Gi", &[]);
    assert!(node_affinity_matches(&pv, &labels));
    pv.spec.as_mut().unwrap().node_affinity =
        Some(object(json!({"required": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]},
        ]}})));
    assert!(!node_affinity_matches(&pv, &labels));
    pv.spec.as_mut().unwrap().node_affinity =
        Some(object(json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["y"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
        ]}})));
    assert!(node_affinity_matches(&pv, &labels));
    pv.spec.as_mut().unwrap().node_affinity =
        Some(object(json!({"required": {"nodeSelectorTerms": []}})));
    assert!(!node_affinity_matches(&pv, &labels));
}

#[test]
fn volume_zone_matches_zone_labels() {
    let zoned = |name: &str, labels: &[(&str, &str)]| {
        let mut n = ready_node(name, "2");
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        n
    };
    let mut snap = Snapshot::new();
    snap.upsert_node(Arc::new(zoned(
        "east",
        &[("topology.kubernetes.io/zone", "east")],
    )));
    snap.upsert_node(Arc::new(zoned(
        "west",
        &[("topology.kubernetes.io/zone", "west")],
    )));
    snap.upsert_node(Arc::new(zoned("plain", &[])));
    snap.upsert_node(Arc::new(zoned(
        "north",
        &[("topology.kubernetes.io/region", "north")],
    )));
    snap.volumes_mut()
        .upsert_claim(bound(claim("data", "ebs", "1Gi"), "pv-1"));
    snap.volumes_mut().upsert_volume(with_labels_pv(
        volume("pv-1", "ebs", "1Gi", &[]),
        &[("failure-domain.beta.kubernetes.io/zone", "east__south")],
    ));
    let p = pod_with_claims("p", "", &["data"]);
    // The beta label on the volume matches the GA label on the node; a node
    // without zone labels takes anything; one with only a region lacks the
    // zone.
    assert_eq!(feasible(&snap, &p), ["east", "plain"]);
    let state = FilterState::new(snap.volumes(), &p).unwrap().unwrap();
    assert_eq!(
        state
            .filter(node_object(&snap, "west"))
            .unwrap_err()
            .reasons,
        [ERR_VOLUME_ZONE]
    );
}

#[test]
fn ephemeral_volumes_use_the_pods_own_claim() {
    let mut snap = wffc_cluster("rancher.io/local-path");
    let mut p = pod("web", "", "");
    p.spec.as_mut().unwrap().volumes = Some(vec![object(json!({
        "name": "scratch",
        "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}},
    }))]);
    assert_eq!(
        FilterState::new(snap.volumes(), &p).unwrap_err(),
        "waiting for ephemeral volume controller to create the persistentvolumeclaim \"web-scratch\""
    );
    snap.volumes_mut()
        .upsert_claim(claim("web-scratch", "local", "1Gi"));
    assert_eq!(
        FilterState::new(snap.volumes(), &p).unwrap_err(),
        "PVC default/web-scratch was not created for pod default/web (pod is not owner)"
    );
    let mut owned = claim("web-scratch", "local", "1Gi");
    owned.metadata.resource_version = Some("2".into());
    owned.metadata.owner_references = Some(vec![object(json!({
        "apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "uid-web", "controller": true,
    }))]);
    snap.volumes_mut().upsert_claim(owned);
    assert_eq!(feasible(&snap, &p), ["a", "b", "c"]);
}

#[test]
fn assumed_volumes_are_taken_until_restored_or_superseded() {
    let mut snap = wffc_cluster(NOT_SUPPORTED_PROVISIONER);
    snap.volumes_mut()
        .upsert_volume(volume("pv-a", "local", "1Gi", &["a"]));
    snap.volumes_mut()
        .upsert_claim(claim("other", "local", "1Gi"));
    let first = pod_with_claims("first", "", &["data"]);
    let second = pod_with_claims("second", "", &["other"]);
    let plan = VolumePlan::for_pod(snap.volumes(), &first, node_object(&snap, "a"))
        .unwrap()
        .unwrap();
    snap.volumes_mut().assume(&plan);
    // The volume is pre-bound to "data" now: no room for "other" ...
    assert!(feasible(&snap, &second).is_empty());
    // ... while a second pod sharing "data" still finds it.
    assert_eq!(
        feasible(&snap, &pod_with_claims("sharer", "", &["data"])),
        ["a"]
    );
    snap.volumes_mut().restore(&plan);
    assert_eq!(feasible(&snap, &second), ["a"]);

    // A newer version from the watch replaces the assumption; the same
    // version (a re-list) does not.
    snap.volumes_mut().assume(&plan);
    assert!(
        !snap
            .volumes_mut()
            .upsert_volume(volume("pv-a", "local", "1Gi", &["a"]))
    );
    assert!(feasible(&snap, &second).is_empty());
    let mut newer = volume("pv-a", "local", "1Gi", &["a"]);
    newer.metadata.resource_version = Some("2".into());
    assert!(snap.volumes_mut().upsert_volume(newer));
    assert_eq!(feasible(&snap, &second), ["a"]);
}

#[test]
fn assumed_selected_nodes_keep_shared_claims_together() {
    let mut snap = wffc_cluster("rancher.io/local-path");
    let first = pod_with_claims("first", "", &["data"]);
    let plan = VolumePlan::for_pod(snap.volumes(), &first, node_object(&snap, "b"))
        .unwrap()
        .unwrap();
    snap.volumes_mut().assume(&plan);
    assert_eq!(
        feasible(&snap, &pod_with_claims("second", "", &["data"])),
        ["b"]
    );
    snap.volumes_mut().restore(&plan);
    assert_eq!(
        feasible(&snap, &pod_with_claims("second", "", &["data"])),
        ["a", "b", "c"]
    );
}

#[test]
fn binding_a_volume_to_a_claim() {
    let c = claim("data", "local", "1Gi");
    let (pv, dirty) = bind_volume_to_claim(&volume("pv", "local", "1Gi", &[]), &c);
    assert!(dirty);
    assert_eq!(annotation(&pv, ANN_BOUND_BY_CONTROLLER), Some("yes"));
    assert!(bound_to_claim(&pv, &c));
    // Already bound: nothing to write.
    let (again, dirty) = bind_volume_to_claim(&pv, &c);
    assert!(!dirty);
    assert_eq!(again, pv);
    // Pre-bound by a user (no UID): the UID is filled in, and the binding
    // stays the user's.
    let mut user = volume("pv", "local", "1Gi", &[]);
    user.spec.as_mut().unwrap().claim_ref =
        Some(object(json!({"name": "data", "namespace": "default"})));
    let (pv, dirty) = bind_volume_to_claim(&user, &c);
    assert!(dirty);
    assert_eq!(annotation(&pv, ANN_BOUND_BY_CONTROLLER), None);
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().uid.as_deref(),
        Some("uid-data")
    );
}

fn plan_on(node: &str) -> VolumePlan {
    VolumePlan {
        node: node.into(),
        node_labels: [("kubernetes.io/hostname".to_string(), node.to_string())].into(),
        bindings: Vec::new(),
        provisions: Vec::new(),
    }
}

#[test]
fn prebind_waits_for_provisioned_claims() {
    let plan = plan_on("b");
    let selected = annotated(claim("data", "local", "1Gi"), ANN_SELECTED_NODE, "b");
    // Not provisioned yet.
    assert!(!provision_done(&selected, None, &plan).unwrap());
    // Named its volume, which has not arrived yet.
    let mut naming = selected.clone();
    naming.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
    assert!(!provision_done(&naming, None, &plan).unwrap());
    // Bound to a volume on the node, but the PV controller is not done.
    let on_b = volume("pv-1", "local", "1Gi", &["b"]);
    assert!(!provision_done(&naming, Some(&on_b), &plan).unwrap());
    assert!(provision_done(&bound(selected.clone(), "pv-1"), Some(&on_b), &plan).unwrap());
    // Bound to a volume elsewhere.
    let on_a = volume("pv-1", "local", "1Gi", &["a"]);
    assert!(matches!(
        provision_done(&bound(selected, "pv-1"), Some(&on_a), &plan),
        Err(PreBindError::NodeAffinity { .. })
    ));
    // The provisioner gave up and removed the annotation.
    let err = provision_done(&claim("data", "local", "1Gi"), None, &plan).unwrap_err();
    assert_eq!(
        format!("running PreBind plugin \"VolumeBinding\": {err}"),
        "running PreBind plugin \"VolumeBinding\": binding volumes: provisioning failed for PVC \"data\""
    );
}

#[test]
fn prebind_waits_for_pre_bound_volumes() {
    let plan = plan_on("a");
    let c = claim("data", "local", "1Gi");
    let (pv, _) = bind_volume_to_claim(&volume("pv", "local", "1Gi", &["a"]), &c);
    assert!(!static_binding_done(&pv, &c, &plan).unwrap());
    assert!(static_binding_done(&pv, &bound(c.clone(), "pv"), &plan).unwrap());
    // The PV controller undid the binding.
    let unbound = volume("pv", "local", "1Gi", &["a"]);
    assert!(matches!(
        static_binding_done(&unbound, &c, &plan),
        Err(PreBindError::ClaimRefReset { .. })
    ));
    let elsewhere = bind_volume_to_claim(&volume("pv", "local", "1Gi", &["b"]), &c).0;
    assert!(matches!(
        static_binding_done(&elsewhere, &c, &plan),
        Err(PreBindError::NodeAffinity { .. })
    ));
}

#[test]
fn schedule_reports_the_pre_filter_rejection_once() {
    let snap = cluster();
    let p = info(pod_with_claims("p", "", &["data"]));
    let diagnosis = schedule(&snap, &p, 0, 0, 0).unwrap_err();
    assert_eq!(
        diagnosis.pre_filter.as_deref(),
        Some("persistentvolumeclaim \"data\" not found")
    );
    assert!(diagnosis.rejections.is_empty());
    assert_eq!(diagnosis.num_all_nodes, 3);
}
