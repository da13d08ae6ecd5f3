use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSetSpec;
use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::*;

fn labels(app: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([("app".to_string(), app.to_string())]))
}

fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("rs-uid".into()),
            generation: Some(3),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: Some(min_ready),
            selector: LabelSelector {
                match_labels: labels("web"),
                ..LabelSelector::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels("web"),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec::default()),
            }),
        },
        status: None,
    }
}

fn pod(name: &str, app: &str, owner: Option<&str>, ready_at: Option<i64>) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: labels(app),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        }),
    })
}

fn now() -> Timestamp {
    Timestamp::from_second(1_000).unwrap()
}

fn names(pods: &[Arc<Pod>]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

#[test]
fn creates_the_missing_replicas() {
    let pods = [pod("a", "web", Some("rs-uid"), Some(0))];
    let plan = plan(
        &rs(3, 0),
        &pods,
        &InFlight::default(),
        now(),
        &ReplicaSetConfig::default(),
    );
    assert_eq!(plan.create, 2);
    assert!(plan.delete.is_empty());
    assert_eq!(plan.status.replicas, 1);
    assert_eq!(plan.status.ready_replicas, Some(1));
    assert_eq!(plan.status.available_replicas, Some(1));
    assert_eq!(plan.status.observed_generation, Some(3));
}

#[test]
fn pods_in_flight_count_so_nothing_is_created_twice() {
    let in_flight = InFlight {
        creates: vec!["web-x".into(), "web-y".into()],
        deletes: vec![],
    };
    let pods = [pod("a", "web", Some("rs-uid"), None)];
    let plan = plan(
        &rs(3, 0),
        &pods,
        &in_flight,
        now(),
        &ReplicaSetConfig::default(),
    );
    assert_eq!(plan.create, 0);
    assert!(plan.delete.is_empty());
}

#[test]
fn scales_down_unready_pods_first_and_skips_pods_already_being_deleted() {
    let pods = [
        pod("ready", "web", Some("rs-uid"), Some(0)),
        pod("unready", "web", Some("rs-uid"), None),
        pod("going", "web", Some("rs-uid"), Some(0)),
    ];
    let in_flight = InFlight {
        creates: vec![],
        deletes: vec!["going".into()],
    };
    let plan = plan(
        &rs(1, 0),
        &pods,
        &in_flight,
        now(),
        &ReplicaSetConfig::default(),
    );
    assert_eq!(names(&plan.delete), ["unready"]);
}

#[test]
fn adopts_matching_orphans_releases_mismatches_and_ignores_others() {
    let pods = [
        pod("orphan", "web", None, None),
        pod("relabelled", "db", Some("rs-uid"), None),
        pod("someone-elses", "web", Some("other"), None),
    ];
    let plan = plan(
        &rs(1, 0),
        &pods,
        &InFlight::default(),
        now(),
        &ReplicaSetConfig::default(),
    );
    assert_eq!(names(&plan.adopt), ["orphan"]);
    assert_eq!(names(&plan.release), ["relabelled"]);
    assert_eq!(plan.create, 0);
    assert_eq!(plan.status.replicas, 1);
}

#[test]
fn min_ready_seconds_delays_availability_and_asks_for_a_recheck() {
    let pods = [pod("a", "web", Some("rs-uid"), Some(995))];
    let plan = plan(
        &rs(1, 10),
        &pods,
        &InFlight::default(),
        now(),
        &ReplicaSetConfig::default(),
    );
    assert_eq!(plan.status.ready_replicas, Some(1));
    assert_eq!(plan.status.available_replicas, Some(0));
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(5)));
}

#[test]
fn creation_is_capped_by_the_burst_size() {
    let config = ReplicaSetConfig { burst_replicas: 10 };
    let plan = plan(&rs(1000, 0), &[], &InFlight::default(), now(), &config);
    assert_eq!(plan.create, 10);
}

#[test]
fn a_replicaset_being_deleted_neither_creates_nor_adopts() {
    let mut deleting = rs(3, 0);
    deleting.metadata.deletion_timestamp = Some(Time(now()));
    let pods = [pod("orphan", "web", None, None)];
    let plan = plan(
        &deleting,
        &pods,
        &InFlight::default(),
        now(),
        &ReplicaSetConfig::default(),
    );
    assert_eq!(plan.create, 0);
    assert!(plan.adopt.is_empty());
}

#[test]
fn a_failed_create_sets_and_a_success_clears_replica_failure() {
    let mut status = ReplicaSetStatus::default();
    let error = ReconcileError {
        action: "create pod",
        name: "web-x".into(),
        source: kube::Error::Api(Box::new(kube::core::Status::failure(
            "exceeded quota: pods",
            "Forbidden",
        ))),
    };
    set_failure_condition(&mut status, Some(&error), now());
    let condition = &status.conditions.as_ref().unwrap()[0];
    assert_eq!(condition.type_.as_deref(), Some("ReplicaFailure"));
    assert_eq!(condition.message.as_deref(), Some("exceeded quota: pods"));
    set_failure_condition(&mut status, None, now());
    assert!(status.conditions.is_none());
}
