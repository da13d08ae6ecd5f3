use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::deployment::fixtures::{at, deployment, recreate, rolling, rs, template};
use crate::deployment::progress::{
    AVAILABLE, NEW_RS_AVAILABLE, PAUSED, REPLICA_SET_UPDATED, TIMED_OUT, same_status,
};
use crate::deployment::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, REVISION_HISTORY_ANNOTATION,
};

fn config() -> DeploymentConfig {
    DeploymentConfig::default()
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn annotate(rs: &mut ReplicaSet, desired: i32, max: i32) {
    let annotations = rs.metadata.annotations.get_or_insert_default();
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS_ANNOTATION.into(), max.to_string());
}

fn progressing(status: &DeploymentStatus) -> (Option<&str>, Option<&str>, Option<&str>) {
    let c = condition(status, PROGRESSING);
    (
        c.and_then(|c| c.status.as_deref()),
        c.and_then(|c| c.reason.as_deref()),
        c.and_then(|c| c.message.as_deref()),
    )
}

/// A cluster in miniature: a deployment, its ReplicaSets and their pods,
/// with the plan's writes applied as the API server would.
struct World {
    d: Deployment,
    sets: Vec<ReplicaSet>,
    pods: HashMap<String, Vec<Arc<Pod>>>,
    now: i64,
}

impl World {
    fn new(d: Deployment, sets: Vec<ReplicaSet>) -> Self {
        Self {
            d,
            sets,
            pods: HashMap::new(),
            now: 1000,
        }
    }

    fn plan(&self) -> Plan {
        let sets: Vec<Arc<ReplicaSet>> = self.sets.iter().cloned().map(Arc::new).collect();
        plan(&Input {
            deployment: &self.d,
            replica_sets: &sets,
            pods: &self.pods,
            now: at(self.now),
            config: &config(),
        })
        .expect("valid spec")
    }

    /// Plans once and applies the writes.
    fn step(&mut self) -> Plan {
        let plan = self.plan();
        if let Some(created) = &plan.create {
            let mut created = created.clone();
            created.metadata.uid = Some(format!("{}-uid", created.name_any()));
            created.metadata.creation_timestamp = Some(Time(at(self.now)));
            created.metadata.generation = Some(1);
            self.sets.push(created);
        }
        for updated in &plan.update {
            let slot = self
                .sets
                .iter_mut()
                .find(|rs| rs.name_any() == updated.name_any())
                .expect("updates name existing sets");
            let generation = slot.metadata.generation.unwrap_or(1);
            *slot = updated.clone();
            if slot.spec.replicas != updated.spec.replicas {
                slot.metadata.generation = Some(generation + 1);
            }
        }
        if let Some(revision) = &plan.revision {
            self.d
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(REVISION_ANNOTATION.into(), revision.clone());
        }
        self.sets.retain(|rs| {
            !plan
                .delete
                .iter()
                .any(|gone| gone.name_any() == rs.name_any())
        });
        self.d.status = Some(plan.status.clone());
        plan
    }

    /// The ReplicaSet controller catches up: every ReplicaSet runs its size,
    /// and `available` decides whether the pods of `name` are available.
    fn settle(&mut self, name: &str, available: bool) {
        for rs in &mut self.sets {
            let replicas = rs.spec.replicas.unwrap_or(0);
            let status = rs.status.get_or_insert_default();
            status.replicas = replicas;
            status.observed_generation = rs.metadata.generation;
            let up = if rs.metadata.name.as_deref() == Some(name) && !available {
                0
            } else {
                replicas
            };
            status.ready_replicas = Some(up);
            status.available_replicas = Some(up);
        }
    }

    fn size(&self, name_part: &str) -> i32 {
        self.sets
            .iter()
            .filter(|rs| spec_image(rs) == name_part)
            .map(spec_replicas)
            .sum()
    }

    fn set(&self, image: &str) -> &ReplicaSet {
        self.sets
            .iter()
            .find(|rs| spec_image(rs) == image)
            .expect("a replica set runs the image")
    }

    /// Changes the template, as `kubectl set image` does.
    fn roll_to(&mut self, image: &str) {
        self.d.spec.template = template(image);
        self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(1) + 1);
    }
}

fn spec_image(rs: &ReplicaSet) -> &str {
    rs.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers[0].image.as_deref())
        .unwrap_or_default()
}

/// A settled deployment of `replicas` pods of `v1` at revision 1.
fn steady(replicas: i32) -> World {
    let d = deployment("web", replicas, "v1");
    let mut world = World::new(d, Vec::new());
    world.step();
    world.settle("", true);
    world.step();
    world
}

fn pod(rs_uid: &str, phase: &str, ready_since: Option<i64>, deleting: bool) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(format!("{rs_uid}-pod")),
            deletion_timestamp: deleting.then(|| Time(at(0))),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
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
        }),
    })
}

#[test]
fn a_new_deployment_creates_its_replica_set_at_full_size() {
    let d = deployment("web", 3, "v1");
    let world = World::new(d.clone(), Vec::new());
    let plan = world.plan();
    let created = plan.create.as_ref().expect("a new replica set");
    let hash = pod_template_hash(&d.spec.template, None);
    assert_eq!(
        created.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(created.spec.replicas, Some(3));
    let hash_label = |labels: Option<&BTreeMap<String, String>>| {
        labels.and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL)).cloned()
    };
    assert_eq!(
        hash_label(created.metadata.labels.as_ref()),
        Some(hash.clone())
    );
    assert_eq!(
        hash_label(created.spec.selector.match_labels.as_ref()),
        Some(hash.clone())
    );
    let template_labels = created
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref());
    assert_eq!(
        hash_label(template_labels.and_then(|m| m.labels.as_ref())),
        Some(hash)
    );
    let owner = &created.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.uid.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        ("Deployment", "d-uid", Some(true), Some(true))
    );
    assert_eq!(annotation(created, REVISION_ANNOTATION), Some("1"));
    assert_eq!(annotation(created, DESIRED_REPLICAS_ANNOTATION), Some("3"));
    assert_eq!(annotation(created, MAX_REPLICAS_ANNOTATION), Some("4"));
    assert_eq!(plan.revision.as_deref(), Some("1"));
    let message = format!("Created new replica set {:?}", created.name_any());
    assert_eq!(
        progressing(&plan.status),
        (Some("True"), Some(NEW_REPLICA_SET), Some(message.as_str()))
    );
    assert_eq!(plan.status.observed_generation, Some(1));
    assert!(plan.update.is_empty() && plan.delete.is_empty());
}

#[test]
fn a_settled_deployment_reports_success_and_stops() {
    let mut world = steady(3);
    let rs_name = world.sets[0].name_any();
    let status = world.d.status.clone().unwrap();
    let message = format!("ReplicaSet {rs_name:?} has successfully progressed.");
    assert_eq!(
        progressing(&status),
        (Some("True"), Some(NEW_RS_AVAILABLE), Some(message.as_str()))
    );
    assert_eq!(
        condition(&status, AVAILABLE).and_then(|c| c.reason.as_deref()),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.available_replicas
        ),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(status.unavailable_replicas, Some(0));
    let again = world.step();
    assert!(again.create.is_none() && again.update.is_empty() && again.revision.is_none());
    assert!(same_status(Some(&status), &again.status));
    assert_eq!(again.requeue_after, None);
}

#[test]
fn a_rolling_update_of_ten_moves_within_surge_and_unavailability() {
    // 25% of 10: up to 13 pods, at least 8 available.
    let mut world = steady(10);
    world.roll_to("v2");
    let mut steps = Vec::new();
    for _ in 0..10 {
        let plan = world.step();
        let total: i32 = world.sets.iter().map(spec_replicas).sum();
        assert!(total <= 13, "{total} pods exceed the surge");
        if plan.create.is_some() || !plan.update.is_empty() {
            steps.push((world.size("v2"), world.size("v1")));
        }
        world.settle("", true);
        let available: i32 = world.sets.iter().map(available_replicas).sum();
        assert!(available >= 8, "only {available} available");
    }
    assert_eq!(steps, [(3, 8), (5, 8), (5, 3), (10, 3), (10, 0)]);
    let status = world.d.status.clone().unwrap();
    assert_eq!(progressing(&status).1, Some(NEW_RS_AVAILABLE));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(
        world.d.metadata.annotations.as_ref().unwrap()[REVISION_ANNOTATION],
        "2"
    );
    assert_eq!(annotation(world.set("v2"), REVISION_ANNOTATION), Some("2"));
    assert_eq!(annotation(world.set("v1"), REVISION_ANNOTATION), Some("1"));
}

#[test]
fn a_rollout_whose_pods_never_become_available_stops_at_the_budget_then_times_out() {
    let mut world = steady(10);
    world.roll_to("v2");
    for _ in 0..5 {
        world.step();
        world.settle("", true);
        // The new pods never become available.
        let name = world.set("v2").name_any();
        world.settle(&name, false);
    }
    assert_eq!((world.size("v2"), world.size("v1")), (5, 8));
    let status = world.d.status.clone().unwrap();
    assert_eq!(progressing(&status).1, Some(REPLICA_SET_UPDATED));
    let updated = condition(&status, PROGRESSING)
        .and_then(|c| c.last_update_time.clone())
        .unwrap()
        .0
        .as_second();
    let plan = world.plan();
    let deadline = updated + 600 - at(world.now).as_second();
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(deadline.unsigned_abs() + 1))
    );

    world.now += 601;
    let plan = world.step();
    let name = world.set("v2").name_any();
    let message = format!("ReplicaSet {name:?} has timed out progressing.");
    assert_eq!(
        progressing(&plan.status),
        (Some("False"), Some(TIMED_OUT), Some(message.as_str()))
    );
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn recreate_scales_old_pods_away_and_waits_until_they_are_gone() {
    let mut d = deployment("web", 3, "v1");
    recreate(&mut d);
    let mut world = World::new(d, Vec::new());
    world.step();
    world.settle("", true);
    world.step();
    world.roll_to("v2");
    let old_uid = world.set("v1").metadata.uid.clone().unwrap();

    let plan = world.step();
    assert!(plan.create.is_none());
    assert_eq!(world.size("v1"), 0);
    // The ReplicaSet still reports its pods.
    assert!(world.step().create.is_none());
    // It reports none, but a pod is still terminating.
    world.settle("", true);
    world.pods.insert(
        old_uid.clone(),
        vec![pod(&old_uid, "Running", Some(0), true)],
    );
    assert!(world.step().create.is_none());
    // A finished pod does not hold the rollout back.
    world.pods.insert(
        old_uid.clone(),
        vec![pod(&old_uid, "Succeeded", None, true)],
    );
    let plan = world.step();
    let created = plan
        .create
        .expect("the new replica set once old pods are gone");
    assert_eq!(created.spec.replicas, Some(3));
    assert_eq!(annotation(&created, REVISION_ANNOTATION), Some("2"));
}

#[test]
fn scaling_mid_rollout_shares_the_change_in_proportion() {
    // Upstream's example: 10 replicas, maxSurge 3, maxUnavailable 2, stuck
    // with 8 old and 5 new pods; scaled to 15, the 5 extra pods go 3 to the
    // old ReplicaSet and 2 to the new.
    let mut d = deployment("web", 15, "v2");
    rolling(&mut d, IntOrString::Int(3), IntOrString::Int(2));
    d.status = Some(DeploymentStatus {
        replicas: Some(13),
        ..DeploymentStatus::default()
    });
    let mut old = rs("web-old", 8, "v1", 1, 0);
    annotate(&mut old, 10, 13);
    let mut new = rs("web-new", 5, "v2", 2, 10);
    annotate(&mut new, 10, 13);
    new.status.get_or_insert_default().available_replicas = Some(0);
    let mut world = World::new(d, vec![old, new]);
    let plan = world.step();
    assert!(plan.create.is_none());
    assert_eq!((world.size("v2"), world.size("v1")), (7, 11));
    for rs in &world.sets {
        assert_eq!(annotation(rs, DESIRED_REPLICAS_ANNOTATION), Some("15"));
        assert_eq!(annotation(rs, MAX_REPLICAS_ANNOTATION), Some("18"));
    }
    // And back down to 10.
    world.d.spec.replicas = Some(10);
    world.d.status.get_or_insert_default().replicas = Some(18);
    world.step();
    assert_eq!((world.size("v2"), world.size("v1")), (5, 8));
}

#[test]
fn scaling_a_settled_deployment_resizes_its_only_replica_set() {
    let mut world = steady(3);
    world.d.spec.replicas = Some(5);
    let plan = world.step();
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].spec.replicas, Some(5));
    assert_eq!(
        annotation(&plan.update[0], DESIRED_REPLICAS_ANNOTATION),
        Some("5")
    );
    assert_eq!(
        annotation(&plan.update[0], MAX_REPLICAS_ANNOTATION),
        Some("7")
    );
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out() {
    let mut world = steady(3);
    world.d.spec.paused = Some(true);
    world.roll_to("v2");
    world.d.spec.replicas = Some(4);
    let plan = world.step();
    assert!(plan.create.is_none());
    assert_eq!(world.size("v1"), 4);
    assert_eq!(
        progressing(&plan.status),
        (Some("Unknown"), Some(PAUSED), Some("Deployment is paused"))
    );
    // Resumed, the rollout starts.
    world.d.spec.paused = Some(false);
    let plan = world.step();
    assert!(plan.create.is_some());
    assert_eq!(progressing(&plan.status).1, Some(NEW_REPLICA_SET));
}

#[test]
fn undo_reuses_the_old_replica_set_with_the_next_revision() {
    let mut world = steady(3);
    world.roll_to("v2");
    for _ in 0..6 {
        world.step();
        world.settle("", true);
    }
    assert_eq!((world.size("v2"), world.size("v1")), (3, 0));
    let old_name = world.set("v1").name_any();

    // kubectl rollout undo: the template of revision 1 comes back.
    world.roll_to("v1");
    let plan = world.step();
    assert!(plan.create.is_none());
    assert_eq!(plan.revision.as_deref(), Some("3"));
    let back = plan
        .update
        .iter()
        .find(|rs| rs.name_any() == old_name)
        .expect("the old replica set is updated");
    assert_eq!(annotation(back, REVISION_ANNOTATION), Some("3"));
    assert_eq!(annotation(back, REVISION_HISTORY_ANNOTATION), Some("1"));
    // It grows within the surge (25% of 3 rounds up to 1).
    assert_eq!(back.spec.replicas, Some(1));
    for _ in 0..6 {
        world.step();
        world.settle("", true);
    }
    assert_eq!((world.size("v1"), world.size("v2")), (3, 0));
    assert_eq!(world.sets.len(), 2);
}

#[test]
fn a_restart_annotation_rolls_out_a_new_replica_set() {
    let mut world = steady(2);
    let mut restarted = template("v1");
    restarted.metadata.as_mut().unwrap().annotations = Some(BTreeMap::from([(
        "kubectl.kubernetes.io/restartedAt".into(),
        "2025-06-01T10:00:00Z".into(),
    )]));
    world.d.spec.template = restarted;
    world.d.metadata.generation = Some(2);
    let plan = world.step();
    let created = plan.create.expect("a restart makes a new replica set");
    assert_ne!(created.name_any(), world.sets[0].name_any());
    assert_eq!(annotation(&created, REVISION_ANNOTATION), Some("2"));
}

#[test]
fn the_deployment_annotations_reach_the_new_replica_set() {
    let mut d = deployment("web", 1, "v1");
    d.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/change-cause".to_string(),
        "kubectl apply --record".to_string(),
    )]));
    let world = World::new(d, Vec::new());
    let plan = world.plan();
    assert_eq!(
        annotation(plan.create.as_ref().unwrap(), "kubernetes.io/change-cause"),
        Some("kubectl apply --record")
    );
}

#[test]
fn history_beyond_the_limit_is_deleted_once_the_rollout_completes() {
    let mut world = steady(1);
    world.d.spec.revision_history_limit = Some(2);
    for version in 2..=5 {
        world.roll_to(&format!("v{version}"));
        for _ in 0..6 {
            world.step();
            world.settle("", true);
        }
    }
    // Revision 5 runs; the two before it are kept.
    let mut revisions: Vec<String> = world
        .sets
        .iter()
        .map(|rs| annotation(rs, REVISION_ANNOTATION).unwrap().to_string())
        .collect();
    revisions.sort();
    assert_eq!(revisions, ["3", "4", "5"]);
}

#[test]
fn a_hash_collision_count_renames_the_new_replica_set() {
    let mut d = deployment("web", 1, "v1");
    let plain = World::new(d.clone(), Vec::new()).plan().create.unwrap();
    d.status = Some(DeploymentStatus {
        collision_count: Some(1),
        ..DeploymentStatus::default()
    });
    let renamed = World::new(d, Vec::new()).plan().create.unwrap();
    assert_ne!(plain.name_any(), renamed.name_any());
    assert!(renamed.name_any().starts_with("web-"));
}

#[test]
fn a_deployment_being_deleted_only_reports_status() {
    let mut world = steady(2);
    world.roll_to("v2");
    world.d.metadata.deletion_timestamp = Some(Time(at(5)));
    let plan = world.step();
    assert!(plan.create.is_none() && plan.update.is_empty());
    assert_eq!(plan.status.replicas, Some(2));
    assert_eq!(plan.status.updated_replicas, Some(0));
}

#[test]
fn an_empty_selector_is_refused() {
    let mut d = deployment("web", 2, "v1");
    d.spec.selector = LabelSelector::default();
    d.metadata.generation = Some(4);
    let plan = World::new(d, Vec::new()).plan();
    assert!(plan.selecting_all);
    assert!(plan.create.is_none());
    assert_eq!(plan.status.observed_generation, Some(4));
}

#[test]
fn min_ready_seconds_asks_for_a_recheck_when_pods_become_available() {
    let mut world = steady(1);
    world.d.spec.min_ready_seconds = Some(10);
    let uid = world.sets[0].metadata.uid.clone().unwrap();
    world.pods.insert(
        uid.clone(),
        vec![pod(&uid, "Running", Some(world.now - 3), false)],
    );
    let plan = world.step();
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(7)));
    // The new minReadySeconds is passed on to the ReplicaSet.
    assert_eq!(plan.update[0].spec.min_ready_seconds, Some(10));
}

#[test]
fn invalid_budgets_are_reported() {
    let mut d = deployment("web", 2, "v1");
    rolling(
        &mut d,
        IntOrString::String("half".into()),
        IntOrString::Int(0),
    );
    let pods = HashMap::new();
    let result = plan(&Input {
        deployment: &d,
        replica_sets: &[],
        pods: &pods,
        now: at(0),
        config: &config(),
    });
    assert!(matches!(
        result,
        Err(SpecError::InvalidBudget {
            field: "maxSurge",
            ..
        })
    ));
}

#[test]
fn claim_adopts_matching_orphans_and_releases_what_no_longer_matches() {
    let d = deployment("web", 1, "v1");
    let owned = rs("web-a", 1, "v1", 1, 0);
    let mut relabelled = rs("web-b", 1, "v1", 1, 0);
    relabelled.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
    let mut orphan = rs("web-c", 1, "v1", 0, 0);
    orphan.metadata.owner_references = None;
    let mut foreign = rs("web-d", 1, "v1", 0, 0);
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let candidates: Vec<Arc<ReplicaSet>> = [owned, relabelled, orphan, foreign]
        .into_iter()
        .map(Arc::new)
        .collect();
    let claim = claim(&d, &candidates);
    let names = |v: &[Arc<ReplicaSet>]| v.iter().map(|rs| rs.name_any()).collect::<Vec<_>>();
    assert_eq!(names(&claim.owned), ["web-a", "web-c"]);
    assert_eq!(names(&claim.adopt), ["web-c"]);
    assert_eq!(names(&claim.release), ["web-b"]);
}
