//! The planner against hand-built sets, pods and claims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetOrdinals,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetStatus,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::identity::{POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL, new_pod};
use super::plan::{Observed, Plan, Revision, Revisions, Step, plan, status_changed};
use crate::expectations::InFlight;

const NOW: i64 = 10_000;

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "nginx".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn set(replicas: i32) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("set-uid".into()),
            generation: Some(4),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some("nginx".into()),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..LabelSelector::default()
            },
            template: template("nginx:2"),
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

fn with_claims(mut set: StatefulSet) -> StatefulSet {
    set.spec.volume_claim_templates = Some(vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("www".into()),
            labels: Some(BTreeMap::from([("tier".to_string(), "data".to_string())])),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    }]);
    set
}

fn parallel(mut set: StatefulSet) -> StatefulSet {
    set.spec.pod_management_policy = Some("Parallel".into());
    set
}

fn partition(mut set: StatefulSet, partition: i32) -> StatefulSet {
    set.spec.update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy {
            partition: Some(partition),
            max_unavailable: None,
        }),
    });
    set
}

fn on_delete(mut set: StatefulSet) -> StatefulSet {
    set.spec.update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    set
}

fn revisions() -> Revisions {
    Revisions {
        current: Revision {
            name: "web-old".into(),
            template: template("nginx:1"),
        },
        update: Revision {
            name: "web-new".into(),
            template: template("nginx:2"),
        },
        collision_count: 0,
    }
}

/// Both revisions the same (no rollout in progress).
fn settled() -> Revisions {
    let mut r = revisions();
    r.current = r.update.clone();
    r
}

#[derive(Clone, Copy)]
enum State {
    Pending,
    Running,
    /// Running and Ready since this many seconds before now.
    Ready(i64),
    Failed,
    Terminating,
}

fn pod(set: &StatefulSet, ordinal: i32, revision: &str, state: State) -> Arc<Pod> {
    let mut pod = new_pod(set, &template("nginx:x"), revision, ordinal);
    pod.metadata.uid = Some(format!("pod-uid-{ordinal}"));
    let (phase, ready_since) = match state {
        State::Pending => ("Pending", None),
        State::Running | State::Terminating => ("Running", None),
        State::Ready(ago) => ("Running", Some(NOW - ago)),
        State::Failed => ("Failed", None),
    };
    if matches!(state, State::Terminating) {
        pod.metadata.deletion_timestamp = Some(Time(at(NOW)));
    }
    pod.status = Some(PodStatus {
        phase: Some(phase.into()),
        conditions: ready_since.map(|t| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(at(t))),
                ..PodCondition::default()
            }]
        }),
        ..PodStatus::default()
    });
    Arc::new(pod)
}

fn ready(set: &StatefulSet, ordinal: i32, revision: &str) -> Arc<Pod> {
    pod(set, ordinal, revision, State::Ready(600))
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

struct Case {
    pods: Vec<Arc<Pod>>,
    claims: BTreeMap<String, Arc<PersistentVolumeClaim>>,
    in_flight: InFlight,
}

impl Case {
    fn new(pods: Vec<Arc<Pod>>) -> Self {
        Self {
            pods,
            claims: BTreeMap::new(),
            in_flight: InFlight::default(),
        }
    }

    fn claim(mut self, claim: PersistentVolumeClaim) -> Self {
        self.claims.insert(claim.name_any(), Arc::new(claim));
        self
    }

    fn plan(&self, set: &StatefulSet, revisions: &Revisions) -> Plan {
        let observed = Observed {
            candidates: &self.pods,
            claims: &self.claims,
            in_flight: &self.in_flight,
            now: at(NOW),
        };
        plan(set, revisions, &observed)
    }
}

/// Each step as a short string: `create web-1@web-new [www-web-1]`,
/// `delete web-2 (ScaleDown)`, ...
fn steps(plan: &Plan) -> Vec<String> {
    plan.phases
        .iter()
        .flatten()
        .map(|step| match step {
            Step::CreatePod { pod, claims } => {
                let claims: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
                let revision = &pod.metadata.labels.as_ref().unwrap()[REVISION_LABEL];
                format!("create {}@{revision} {claims:?}", pod.name_any())
            }
            Step::CreateClaims { pod, claims } => {
                let claims: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
                format!("claims {} {claims:?}", pod.name_any())
            }
            Step::DeletePod { pod, reason } => format!("delete {} ({reason:?})", pod.name_any()),
            Step::RestoreIdentity { pod, .. } => format!("identity {}", pod.name_any()),
            Step::SetClaimOwners { claim, owners } => {
                let owners: Vec<&str> = owners.iter().map(|o| o.kind.as_str()).collect();
                format!("owners {} {owners:?}", claim.name_any())
            }
        })
        .collect()
}

#[test]
fn ordered_ready_creates_the_first_member_and_waits() {
    let set = set(3);
    let plan = Case::new(vec![]).plan(&set, &settled());
    assert_eq!(steps(&plan), ["create web-0@web-new []"]);
    assert!(!plan.parallel);
    let Step::CreatePod { pod, .. } = &plan.phases[0][0] else {
        panic!("expected a create");
    };
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[POD_NAME_LABEL], "web-0");
    assert_eq!(labels[POD_INDEX_LABEL], "0");
    assert_eq!(
        pod.spec.as_ref().unwrap().subdomain.as_deref(),
        Some("nginx")
    );
}

#[test]
fn ordered_ready_waits_for_web_0_to_be_ready_before_web_1() {
    let set = set(3);
    for state in [State::Pending, State::Running, State::Terminating] {
        let plan = Case::new(vec![pod(&set, 0, "web-new", state)]).plan(&set, &settled());
        assert!(steps(&plan).is_empty(), "nothing while web-0 is not ready");
    }
    let plan = Case::new(vec![ready(&set, 0, "web-new")]).plan(&set, &settled());
    assert_eq!(steps(&plan), ["create web-1@web-new []"]);
}

#[test]
fn ordered_ready_waits_out_min_ready_seconds_and_asks_for_a_recheck() {
    let mut set = set(2);
    set.spec.min_ready_seconds = Some(30);
    let plan = Case::new(vec![pod(&set, 0, "web-new", State::Ready(10))]).plan(&set, &settled());
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(20)));
    assert_eq!(plan.status.ready_replicas, Some(1));
    assert_eq!(plan.status.available_replicas, Some(0));
    let plan = Case::new(vec![pod(&set, 0, "web-new", State::Ready(30))]).plan(&set, &settled());
    assert_eq!(steps(&plan), ["create web-1@web-new []"]);
}

#[test]
fn a_pod_being_created_holds_back_the_next_one() {
    let set = set(3);
    let mut case = Case::new(vec![]);
    case.in_flight.creates = vec!["web-0".into()];
    assert!(steps(&case.plan(&set, &settled())).is_empty());
}

#[test]
fn a_deleted_member_is_recreated_with_its_name() {
    let set = set(3);
    let case = Case::new(vec![ready(&set, 0, "web-new"), ready(&set, 2, "web-new")]);
    assert_eq!(
        steps(&case.plan(&set, &settled())),
        ["create web-1@web-new []"]
    );
}

#[test]
fn a_failed_member_is_deleted_then_recreated() {
    let set = set(2);
    let case = Case::new(vec![
        pod(&set, 0, "web-new", State::Failed),
        ready(&set, 1, "web-new"),
    ]);
    assert_eq!(
        steps(&case.plan(&set, &settled())),
        ["delete web-0 (Finished)"]
    );
    let mut case = case;
    case.in_flight.deletes = vec!["web-0".into()];
    assert!(
        steps(&case.plan(&set, &settled())).is_empty(),
        "not deleted twice"
    );
}

#[test]
fn ordinals_start_at_spec_ordinals_start() {
    let mut set = set(2);
    set.spec.ordinals = Some(StatefulSetOrdinals { start: Some(5) });
    let plan = Case::new(vec![]).plan(&set, &settled());
    assert_eq!(steps(&plan), ["create web-5@web-new []"]);
    let case = Case::new(vec![
        ready(&set, 5, "web-new"),
        ready(&set, 6, "web-new"),
        ready(&set, 0, "web-new"),
    ]);
    assert_eq!(
        steps(&case.plan(&set, &settled())),
        ["delete web-0 (ScaleDown)"]
    );
}

#[test]
fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let set = set(1);
    let pods: Vec<_> = (0..3).map(|i| ready(&set, i, "web-new")).collect();
    let plan = Case::new(pods.clone()).plan(&set, &settled());
    assert_eq!(steps(&plan), ["delete web-2 (ScaleDown)"]);
    assert_eq!(plan.status.replicas, 3);

    let mut terminating = pods.clone();
    terminating[2] = pod(&set, 2, "web-new", State::Terminating);
    let plan = Case::new(terminating).plan(&set, &settled());
    assert!(steps(&plan).is_empty(), "waits for web-2 to go");
}

#[test]
fn scale_down_waits_while_another_pod_is_unhealthy() {
    let set = set(1);
    // web-2 is not ready and web-1 below it is not either: wait.
    let pods = vec![
        ready(&set, 0, "web-new"),
        pod(&set, 1, "web-new", State::Running),
        pod(&set, 2, "web-new", State::Running),
    ];
    assert!(steps(&Case::new(pods).plan(&set, &settled())).is_empty());

    // The unhealthy pod itself may go once it is the highest.
    let pods = vec![
        ready(&set, 0, "web-new"),
        pod(&set, 1, "web-new", State::Running),
    ];
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &settled())),
        ["delete web-1 (ScaleDown)"]
    );

    // A member that is not ready holds back every scale down.
    let pods = vec![
        pod(&set, 0, "web-new", State::Running),
        ready(&set, 1, "web-new"),
    ];
    assert!(steps(&Case::new(pods).plan(&set, &settled())).is_empty());
}

#[test]
fn parallel_creates_and_deletes_everything_at_once() {
    let set = parallel(set(3));
    let plan = Case::new(vec![]).plan(&set, &settled());
    assert!(plan.parallel);
    assert_eq!(
        steps(&plan),
        [
            "create web-0@web-new []",
            "create web-1@web-new []",
            "create web-2@web-new []"
        ]
    );

    let set = parallel(self::set(1));
    let pods = vec![
        pod(&set, 0, "web-new", State::Pending),
        pod(&set, 1, "web-new", State::Running),
        ready(&set, 2, "web-new"),
    ];
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &settled())),
        ["delete web-2 (ScaleDown)", "delete web-1 (ScaleDown)"]
    );
}

#[test]
fn rolling_update_replaces_the_highest_ordinal_first_waiting_for_ready() {
    let set = set(3);
    let pods: Vec<_> = (0..3).map(|i| ready(&set, i, "web-old")).collect();
    let plan = Case::new(pods).plan(&set, &revisions());
    assert_eq!(steps(&plan), ["delete web-2 (Update)"]);
    assert_eq!(
        plan.status.current_replicas,
        Some(2),
        "the deleted pod no longer counts"
    );
    assert_eq!(plan.status.updated_replicas, Some(0));

    // web-2 is recreated from the update revision...
    let pods = vec![ready(&set, 0, "web-old"), ready(&set, 1, "web-old")];
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &revisions())),
        ["create web-2@web-new []"]
    );

    // ...and nothing moves until it is ready.
    let pods = vec![
        ready(&set, 0, "web-old"),
        ready(&set, 1, "web-old"),
        pod(&set, 2, "web-new", State::Running),
    ];
    assert!(steps(&Case::new(pods).plan(&set, &revisions())).is_empty());

    let pods = vec![
        ready(&set, 0, "web-old"),
        ready(&set, 1, "web-old"),
        ready(&set, 2, "web-new"),
    ];
    let plan = Case::new(pods).plan(&set, &revisions());
    assert_eq!(steps(&plan), ["delete web-1 (Update)"]);
    assert_eq!(plan.status.updated_replicas, Some(1));
}

#[test]
fn a_finished_rollout_makes_the_update_revision_current() {
    let set = set(2);
    let pods = vec![ready(&set, 0, "web-new"), ready(&set, 1, "web-new")];
    let plan = Case::new(pods).plan(&set, &revisions());
    assert!(steps(&plan).is_empty());
    let status = &plan.status;
    assert_eq!(status.current_revision.as_deref(), Some("web-new"));
    assert_eq!(status.update_revision.as_deref(), Some("web-new"));
    assert_eq!(status.current_replicas, Some(2));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(status.collision_count, Some(0));
}

#[test]
fn partition_keeps_lower_ordinals_at_the_current_revision() {
    let set = partition(set(3), 2);
    let pods = vec![
        ready(&set, 0, "web-old"),
        ready(&set, 1, "web-old"),
        ready(&set, 2, "web-new"),
    ];
    let plan = Case::new(pods).plan(&set, &revisions());
    assert!(
        steps(&plan).is_empty(),
        "web-0 and web-1 are below the partition"
    );
    assert_eq!(plan.status.current_revision.as_deref(), Some("web-old"));

    // A member below the partition is recreated at the current revision,
    // one at or above it at the update revision.
    let pods = vec![ready(&set, 0, "web-old"), ready(&set, 2, "web-new")];
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &revisions())),
        ["create web-1@web-old []"]
    );
    let pods = vec![ready(&set, 0, "web-old"), ready(&set, 1, "web-old")];
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &revisions())),
        ["create web-2@web-new []"]
    );
}

#[test]
fn max_unavailable_replaces_several_pods_at_once() {
    let mut set = set(4);
    set.spec.update_strategy.as_mut().unwrap().rolling_update =
        Some(RollingUpdateStatefulSetStrategy {
            partition: Some(0),
            max_unavailable: Some(IntOrString::String("50%".into())),
        });
    let pods: Vec<_> = (0..4).map(|i| ready(&set, i, "web-old")).collect();
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &revisions())),
        ["delete web-3 (Update)", "delete web-2 (Update)"]
    );
}

#[test]
fn parallel_rollouts_replace_broken_old_pods_beyond_the_budget() {
    let set = parallel(set(3));
    let pods = vec![
        pod(&set, 0, "web-old", State::Running),
        ready(&set, 1, "web-old"),
        ready(&set, 2, "web-old"),
    ];
    // web-0 already counts against maxUnavailable=1: it is replaced, and no
    // healthy pod is taken down with it.
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &revisions())),
        ["delete web-0 (Update)"]
    );
}

#[test]
fn on_delete_never_deletes_for_an_update_but_recreates_at_the_update_revision() {
    let set = on_delete(set(2));
    let pods = vec![ready(&set, 0, "web-old"), ready(&set, 1, "web-old")];
    let plan = Case::new(pods).plan(&set, &revisions());
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.status.current_revision.as_deref(), Some("web-old"));
    let pods = vec![ready(&set, 0, "web-old")];
    assert_eq!(
        steps(&Case::new(pods).plan(&set, &revisions())),
        ["create web-1@web-new []"]
    );
}

#[test]
fn claims_are_created_before_the_pod_from_the_templates() {
    let set = with_claims(set(1));
    let plan = Case::new(vec![]).plan(&set, &settled());
    assert_eq!(steps(&plan), [r#"create web-0@web-new ["www-web-0"]"#]);
    let Step::CreatePod { pod, claims } = &plan.phases[0][0] else {
        panic!("expected a create");
    };
    let claim_labels = claims[0].metadata.labels.as_ref().unwrap();
    assert_eq!(claim_labels["tier"], "data");
    assert_eq!(claim_labels["app"], "web");
    let volume = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    assert_eq!(volume.name, "www");
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        "www-web-0"
    );

    // An existing claim is reused.
    let existing = claims[0].clone();
    let plan = Case::new(vec![]).claim(existing).plan(&set, &settled());
    assert_eq!(steps(&plan), ["create web-0@web-new []"]);
}

#[test]
fn a_pending_member_gets_its_missing_claims() {
    let set = with_claims(set(2));
    let plan = Case::new(vec![pod(&set, 0, "web-new", State::Pending)]).plan(&set, &settled());
    assert_eq!(steps(&plan), [r#"claims web-0 ["www-web-0"]"#]);
}

fn claim(name: &str, owners: Vec<OwnerReference>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            owner_references: (!owners.is_empty()).then_some(owners),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    }
}

fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn retention(set: StatefulSet, when_deleted: &str, when_scaled: &str) -> StatefulSet {
    let mut set = with_claims(set);
    set.spec.persistent_volume_claim_retention_policy =
        Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some(when_deleted.into()),
            when_scaled: Some(when_scaled.into()),
        });
    set
}

#[test]
fn retention_policy_delete_on_set_deletion_makes_the_set_own_the_claims() {
    let set = retention(set(1), "Delete", "Retain");
    let case = Case::new(vec![ready(&set, 0, "web-new")]).claim(claim("www-web-0", vec![]));
    assert_eq!(
        steps(&case.plan(&set, &settled())),
        [r#"owners www-web-0 ["StatefulSet"]"#]
    );
    let case = Case::new(vec![ready(&set, 0, "web-new")]).claim(claim(
        "www-web-0",
        vec![owner("StatefulSet", "web", "set-uid")],
    ));
    assert!(
        steps(&case.plan(&set, &settled())).is_empty(),
        "already owned"
    );
}

#[test]
fn retention_policy_delete_on_scale_down_hands_the_claim_to_the_condemned_pod() {
    let set = retention(set(1), "Delete", "Delete");
    let case = Case::new(vec![ready(&set, 0, "web-new"), ready(&set, 1, "web-new")])
        .claim(claim(
            "www-web-0",
            vec![owner("StatefulSet", "web", "set-uid")],
        ))
        .claim(claim(
            "www-web-1",
            vec![owner("StatefulSet", "web", "set-uid")],
        ));
    assert_eq!(
        steps(&case.plan(&set, &settled())),
        [r#"owners www-web-1 ["Pod"]"#, "delete web-1 (ScaleDown)"]
    );
}

#[test]
fn retain_removes_our_references_but_leaves_other_owners() {
    let set = retention(set(1), "Retain", "Retain");
    let other = OwnerReference {
        controller: None,
        ..owner("ConfigMap", "x", "cm-uid")
    };
    let case = Case::new(vec![ready(&set, 0, "web-new")]).claim(claim(
        "www-web-0",
        vec![other.clone(), owner("StatefulSet", "web", "set-uid")],
    ));
    let plan = case.plan(&set, &settled());
    let Some(Step::SetClaimOwners { owners, .. }) = plan.phases.iter().flatten().next() else {
        panic!("expected an owner update");
    };
    assert_eq!(owners, &vec![other]);
}

#[test]
fn a_claim_still_owned_by_an_earlier_pod_blocks_recreating_it() {
    let set = retention(set(1), "Retain", "Delete");
    let case = Case::new(vec![]).claim(claim(
        "www-web-0",
        vec![owner("Pod", "web-0", "old-pod-uid")],
    ));
    assert!(steps(&case.plan(&set, &settled())).is_empty());
}

#[test]
fn a_claim_with_another_controller_is_left_alone() {
    let set = retention(set(1), "Delete", "Delete");
    let case = Case::new(vec![ready(&set, 0, "web-new")])
        .claim(claim("www-web-0", vec![owner("Thing", "t", "thing-uid")]));
    assert!(steps(&case.plan(&set, &settled())).is_empty());
}

#[test]
fn a_member_missing_its_pod_name_label_gets_it_back() {
    let set = set(1);
    let mut broken = (*ready(&set, 0, "web-new")).clone();
    broken
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove(POD_NAME_LABEL);
    let plan = Case::new(vec![Arc::new(broken)]).plan(&set, &settled());
    assert_eq!(steps(&plan), ["identity web-0"]);
}

#[test]
fn orphans_are_adopted_only_if_named_as_members() {
    let set = set(1);
    let mut orphan = (*ready(&set, 0, "web-new")).clone();
    orphan.metadata.owner_references = None;
    let mut stranger = orphan.clone();
    stranger.metadata.name = Some("other-0".into());
    let plan = Case::new(vec![Arc::new(orphan), Arc::new(stranger)]).plan(&set, &settled());
    let adopted: Vec<String> = plan.adopt.iter().map(|p| p.name_any()).collect();
    assert_eq!(adopted, ["web-0"]);
    assert!(steps(&plan).is_empty());

    let mut relabelled = (*ready(&set, 0, "web-new")).clone();
    relabelled.metadata.labels = Some(BTreeMap::new());
    let plan = Case::new(vec![Arc::new(relabelled)]).plan(&set, &settled());
    assert_eq!(plan.release.len(), 1);
    assert_eq!(steps(&plan), ["create web-0@web-new []"]);
}

#[test]
fn a_deleted_set_only_reports_status() {
    let mut set = set(3);
    set.metadata.deletion_timestamp = Some(Time(at(NOW)));
    let plan = Case::new(vec![ready(&set, 0, "web-new")]).plan(&set, &settled());
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.status.replicas, 1);
}

#[test]
fn status_counts_what_kubectl_rollout_status_reads() {
    let mut set = set(3);
    set.status = Some(StatefulSetStatus {
        collision_count: Some(2),
        ..StatefulSetStatus::default()
    });
    let mut revisions = revisions();
    revisions.collision_count = 2;
    let pods = vec![
        ready(&set, 0, "web-old"),
        pod(&set, 1, "web-old", State::Terminating),
        pod(&set, 2, "web-new", State::Pending),
    ];
    let status = Case::new(pods).plan(&set, &revisions).status;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(status.available_replicas, Some(1));
    assert_eq!(
        status.current_replicas,
        Some(1),
        "terminating pods are not current"
    );
    assert_eq!(status.updated_replicas, Some(1));
    assert_eq!(status.current_revision.as_deref(), Some("web-old"));
    assert_eq!(status.update_revision.as_deref(), Some("web-new"));
    assert_eq!(status.collision_count, Some(2));
}

#[test]
fn unset_counts_equal_zero_when_deciding_to_write_the_status() {
    let set = set(1);
    let status = Case::new(vec![]).plan(&set, &settled()).status;
    assert!(status_changed(None, &status));
    let stored = StatefulSetStatus {
        ready_replicas: None,
        available_replicas: None,
        current_replicas: None,
        updated_replicas: None,
        ..status.clone()
    };
    assert!(!status_changed(Some(&stored), &status));
    let older = StatefulSetStatus {
        observed_generation: Some(3),
        ..status.clone()
    };
    assert!(status_changed(Some(&older), &status));
}
