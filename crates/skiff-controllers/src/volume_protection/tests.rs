use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, EphemeralVolumeSource,
    PersistentVolumeClaimVolumeSource, PersistentVolumeStatus, PodSpec, PodStatus, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::*;

fn deleted() -> Option<Time> {
    Some(Time(jiff::Timestamp::UNIX_EPOCH))
}

fn claim(name: &str, finalizers: &[&str], deleting: bool) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("5".into()),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            deletion_timestamp: deleting.then(deleted).flatten(),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    }
}

fn claim_volume(claim: &str) -> Volume {
    Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: None,
        }),
        ..Volume::default()
    }
}

fn ephemeral_volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ephemeral: Some(EphemeralVolumeSource::default()),
        ..Volume::default()
    }
}

fn pod(name: &str, volumes: Vec<Volume>, node: Option<&str>, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(String::from),
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
    }
}

fn running(name: &str, claim: &str) -> Pod {
    pod(name, vec![claim_volume(claim)], Some("node-1"), "Running")
}

fn volume(finalizers: &[&str], deleting: bool, phase: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv1".into()),
            resource_version: Some("3".into()),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            deletion_timestamp: deleting.then(deleted).flatten(),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..PersistentVolumeStatus::default()
        }),
    }
}

#[test]
fn deletion_candidates_and_missing_finalizers() {
    let live = claim("data", &[PVC_PROTECTION_FINALIZER], false);
    assert!(!is_deletion_candidate(
        &live.metadata,
        PVC_PROTECTION_FINALIZER
    ));
    assert!(!needs_finalizer(&live.metadata, PVC_PROTECTION_FINALIZER));
    let bare = claim("data", &[], false);
    assert!(needs_finalizer(&bare.metadata, PVC_PROTECTION_FINALIZER));
    let deleting = claim("data", &["other", PVC_PROTECTION_FINALIZER], true);
    assert!(is_deletion_candidate(
        &deleting.metadata,
        PVC_PROTECTION_FINALIZER
    ));
    // A deleted object never gets the finalizer back.
    let released = claim("data", &["other"], true);
    assert!(!needs_finalizer(
        &released.metadata,
        PVC_PROTECTION_FINALIZER
    ));
    assert!(!is_deletion_candidate(
        &released.metadata,
        PVC_PROTECTION_FINALIZER
    ));
}

#[test]
fn a_scheduled_running_pod_mounting_the_claim_uses_it() {
    let data = claim("data", &[PVC_PROTECTION_FINALIZER], true);
    assert!(pod_uses_claim(&running("web", "data"), &data));
    assert!(!pod_uses_claim(&running("web", "logs"), &data));
    // Unscheduled pods cannot start on a claim being deleted.
    assert!(!pod_uses_claim(
        &pod("web", vec![claim_volume("data")], None, "Pending"),
        &data
    ));
    assert!(pod_uses_claim(
        &pod("web", vec![claim_volume("data")], Some("node-1"), "Pending"),
        &data
    ));
    // Another namespace's pod with the same claim name does not count.
    let mut elsewhere = running("web", "data");
    elsewhere.metadata.namespace = Some("other".into());
    assert!(!pod_uses_claim(&elsewhere, &data));
}

#[test]
fn finished_and_force_deleted_pods_do_not_hold_the_claim() {
    let data = claim("data", &[PVC_PROTECTION_FINALIZER], true);
    for phase in ["Succeeded", "Failed"] {
        let done = pod("job", vec![claim_volume("data")], Some("node-1"), phase);
        assert!(!pod_uses_claim(&done, &data), "{phase}");
    }
    // Deleted but still running: holds it.
    let mut stopping = running("web", "data");
    stopping.metadata.deletion_timestamp = deleted();
    stopping.metadata.deletion_grace_period_seconds = Some(30);
    stopping.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
        name: "app".into(),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }]);
    assert!(pod_uses_claim(&stopping, &data));
    // Deleted with every container terminated: done with it.
    let mut stopped = stopping.clone();
    stopped.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
        name: "app".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated::default()),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }]);
    assert!(!pod_uses_claim(&stopped, &data));
    // Force-deleted (zero grace period): done with it too.
    let mut forced = stopping;
    forced.metadata.deletion_grace_period_seconds = Some(0);
    assert!(!pod_uses_claim(&forced, &data));
}

#[test]
fn an_ephemeral_volume_uses_the_claim_made_for_the_pod() {
    let web = pod(
        "web",
        vec![ephemeral_volume("scratch")],
        Some("node-1"),
        "Running",
    );
    assert_eq!(referenced_claims(&web), ["web-scratch"]);
    let mut owned = claim("web-scratch", &[PVC_PROTECTION_FINALIZER], true);
    assert!(!pod_uses_claim(&web, &owned), "not the pod's own claim");
    owned.metadata.owner_references = Some(vec![OwnerReference {
        kind: "Pod".into(),
        name: "web".into(),
        uid: "uid-web".into(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    assert!(pod_uses_claim(&web, &owned));
}

#[test]
fn a_claim_is_in_use_while_any_pod_uses_it() {
    let data = claim("data", &[PVC_PROTECTION_FINALIZER], true);
    let pods = [
        running("a", "logs"),
        pod("b", vec![claim_volume("data")], Some("node-1"), "Succeeded"),
    ];
    assert!(!claim_in_use(&data, &pods));
    let pods = [running("a", "logs"), running("c", "data")];
    assert!(claim_in_use(&data, &pods));
}

#[test]
fn a_volume_keeps_its_finalizer_while_bound() {
    let live = volume(&[PV_PROTECTION_FINALIZER], false, "Bound");
    assert_eq!(volume_action(&live), FinalizerAction::Keep);
    assert_eq!(
        volume_action(&volume(&[], false, "Available")),
        FinalizerAction::Add
    );
    let bound = volume(&[PV_PROTECTION_FINALIZER], true, "Bound");
    assert_eq!(volume_action(&bound), FinalizerAction::Keep);
    for phase in ["Available", "Released", "Failed", "Pending"] {
        let gone = volume(&[PV_PROTECTION_FINALIZER], true, phase);
        assert_eq!(volume_action(&gone), FinalizerAction::Remove, "{phase}");
    }
    assert_eq!(
        volume_action(&volume(&["other"], true, "Released")),
        FinalizerAction::Keep
    );
}

#[test]
fn finalizer_lists_keep_other_finalizers() {
    let meta = claim("data", &["a", PVC_PROTECTION_FINALIZER, "b"], true).metadata;
    assert_eq!(
        finalizers_after(&meta, PVC_PROTECTION_FINALIZER, FinalizerAction::Remove),
        ["a", "b"]
    );
    let meta = claim("data", &["a"], false).metadata;
    assert_eq!(
        finalizers_after(&meta, PVC_PROTECTION_FINALIZER, FinalizerAction::Add),
        ["a", PVC_PROTECTION_FINALIZER]
    );
}

/// The controllers' traffic against a fake API server.
mod controller {
    use std::time::Duration;

    use serde_json::{Value, json};
    use skiff_testing::FakeApi;

    use super::*;

    fn to_json<T: serde::Serialize>(value: T) -> Value {
        serde_json::to_value(value).expect("serializable")
    }

    fn in_namespace(mut claim: PersistentVolumeClaim, namespace: &str) -> PersistentVolumeClaim {
        claim.metadata.namespace = Some(namespace.into());
        claim
    }

    fn named(mut volume: PersistentVolume, name: &str) -> PersistentVolume {
        volume.metadata.name = Some(name.into());
        volume
    }

    #[tokio::test(start_paused = true)]
    async fn finalizers_come_off_only_what_nothing_uses() {
        // The informer shows no pods; the live list of namespace `a` shows
        // one using its claim, which must therefore stay.
        let mut user = running("web", "data");
        user.metadata.namespace = Some("a".into());
        let api = FakeApi::new(vec![
            (
                "/api/v1/persistentvolumeclaims",
                vec![
                    to_json(in_namespace(
                        claim("data", &[PVC_PROTECTION_FINALIZER], true),
                        "a",
                    )),
                    to_json(in_namespace(
                        claim("data", &["keep", PVC_PROTECTION_FINALIZER], true),
                        "b",
                    )),
                    to_json(in_namespace(claim("old", &[], false), "b")),
                ],
            ),
            ("/api/v1/namespaces/a/pods", vec![to_json(user)]),
            (
                "/api/v1/persistentvolumes",
                vec![
                    to_json(named(
                        volume(&[PV_PROTECTION_FINALIZER], true, "Bound"),
                        "bound",
                    )),
                    to_json(named(
                        volume(&[PV_PROTECTION_FINALIZER], true, "Released"),
                        "released",
                    )),
                ],
            ),
        ]);
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(api.client());
        let controllers = start(
            &mut factory,
            api.client(),
            VolumeProtectionConfig::default(),
            shutdown.clone(),
        );
        let informers = tokio::spawn(factory.run(shutdown.clone()));
        let controllers = tokio::spawn(controllers);
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.cancel();
        controllers.await.expect("controllers");
        informers.await.expect("informers");

        let mut written: Vec<(String, Value)> = api
            .writes()
            .iter()
            .map(|w| {
                (
                    format!("{} {}", w.method, w.path),
                    w.body["metadata"].clone(),
                )
            })
            .collect();
        written.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            written,
            [
                (
                    "PATCH /api/v1/namespaces/b/persistentvolumeclaims/data".to_string(),
                    json!({"resourceVersion": "5", "finalizers": ["keep"]}),
                ),
                (
                    "PATCH /api/v1/namespaces/b/persistentvolumeclaims/old".to_string(),
                    json!({"resourceVersion": "5", "finalizers": [PVC_PROTECTION_FINALIZER]}),
                ),
                (
                    "PATCH /api/v1/persistentvolumes/released".to_string(),
                    json!({"resourceVersion": "3", "finalizers": []}),
                ),
            ]
        );
    }
}
