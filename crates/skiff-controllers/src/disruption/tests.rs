use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn labels() -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([("app".to_string(), "web".to_string())]))
}

fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            generation: Some(2),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            selector: Some(LabelSelector {
                match_labels: labels(),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

fn pod(name: &str, ready: bool, owner: Option<(&str, &str)>) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: labels(),
            owner_references: owner.map(|(kind, uid)| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: "owner".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    })
}

/// Every controller has scale 5, keyed by its UID.
fn five(_: &str, owner: &OwnerReference) -> Option<(String, i32)> {
    Some((owner.uid.clone(), 5))
}

fn none(_: &str, _: &OwnerReference) -> Option<(String, i32)> {
    None
}

fn counts(plan: &Plan) -> (i32, i32, i32, i32) {
    let s = &plan.status;
    (
        s.current_healthy.unwrap(),
        s.desired_healthy.unwrap(),
        s.expected_pods.unwrap(),
        s.disruptions_allowed.unwrap(),
    )
}

fn condition(plan: &Plan) -> &Condition {
    &plan.status.conditions.as_ref().unwrap()[0]
}

#[test]
fn integer_min_available_counts_the_selected_pods() {
    let pods = [
        pod("a", true, None),
        pod("b", true, None),
        pod("c", false, None),
    ];
    let plan = plan(
        &budget(Some(IntOrString::Int(1)), None),
        &pods,
        &none,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(counts(&plan), (2, 1, 3, 1));
    assert_eq!(plan.status.observed_generation, Some(2));
    let c = condition(&plan);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "SufficientPods")
    );
    assert_eq!(c.observed_generation, Some(2));
    assert!(plan.events.is_empty());
}

#[test]
fn percentages_scale_with_the_controllers_and_round_up() {
    let pods = [
        pod("a", true, Some(("ReplicaSet", "rs-1"))),
        pod("b", true, Some(("ReplicaSet", "rs-1"))),
        pod("c", true, Some(("ReplicaSet", "rs-1"))),
    ];
    // 5 expected (one controller, counted once); 50% of 5 rounds up to 3.
    let min = plan(
        &budget(Some(IntOrString::String("50%".into())), None),
        &pods,
        &five,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(counts(&min), (3, 3, 5, 0));
    assert_eq!(condition(&min).reason, "InsufficientPods");
    // maxUnavailable 30% of 5 rounds up to 2: 3 must stay healthy.
    let max = plan(
        &budget(None, Some(IntOrString::String("30%".into()))),
        &pods,
        &five,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(counts(&max), (3, 3, 5, 0));
    let max = plan(
        &budget(None, Some(IntOrString::Int(1))),
        &pods[..],
        &|_: &str, o: &OwnerReference| Some((o.uid.clone(), 3)),
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(counts(&max), (3, 2, 3, 1));
}

#[test]
fn no_expected_pods_allows_no_disruption() {
    let plan = plan(
        &budget(Some(IntOrString::Int(0)), None),
        &[],
        &none,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(counts(&plan), (0, 0, 0, 0));
    assert_eq!(plan.events[0].reason, "NoPods");
    assert_eq!(plan.events[0].message, "No matching pods found");
}

#[test]
fn a_pod_without_a_known_controller_fails_safe() {
    let mut pdb = budget(None, Some(IntOrString::Int(1)));
    pdb.status = Some(PodDisruptionBudgetStatus {
        disruptions_allowed: Some(2),
        current_healthy: Some(3),
        ..PodDisruptionBudgetStatus::default()
    });
    let pods = [pod("a", true, Some(("DaemonSet", "ds-1")))];
    let plan = plan(&pdb, &pods, &none, at(0), &DisruptionConfig::default());
    assert_eq!(plan.status.disruptions_allowed, Some(0));
    assert_eq!(plan.status.current_healthy, Some(3));
    let c = condition(&plan);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "SyncFailed")
    );
    assert_eq!(c.message, "found no controllers for pod \"a\"");
    assert_eq!(plan.events[0].reason, "CalculateExpectedPodCountFailed");
}

#[test]
fn unmanaged_pods_are_reported_under_percentages() {
    let pods = [
        pod("a", true, Some(("ReplicaSet", "rs"))),
        pod("loose", true, None),
    ];
    let plan = plan(
        &budget(Some(IntOrString::String("100%".into())), None),
        &pods,
        &five,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(counts(&plan), (2, 5, 5, 0));
    assert_eq!(plan.events[0].reason, "UnmanagedPods");
    assert!(plan.events[0].message.ends_with("loose"));
}

#[test]
fn evicted_pods_are_not_healthy_until_their_record_expires() {
    let mut pdb = budget(Some(IntOrString::Int(1)), None);
    pdb.status = Some(PodDisruptionBudgetStatus {
        disrupted_pods: Some(BTreeMap::from([
            ("a".to_string(), Time(at(0))),
            ("old".to_string(), Time(at(-500))),
            ("gone".to_string(), Time(at(0))),
        ])),
        ..PodDisruptionBudgetStatus::default()
    });
    let pods = [
        pod("a", true, None),
        pod("b", true, None),
        pod("old", true, None),
    ];
    let plan = plan(&pdb, &pods, &none, at(30), &DisruptionConfig::default());
    // "a" is still expected to go; "old" timed out and counts again; "gone" is gone.
    assert_eq!(
        plan.status.disrupted_pods,
        Some(BTreeMap::from([("a".to_string(), Time(at(0)))]))
    );
    assert_eq!(counts(&plan), (2, 1, 3, 1));
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(90)));
    assert_eq!(plan.not_deleted.len(), 1);
    assert_eq!(plan.not_deleted[0].name_any(), "old");
}

#[test]
fn deleting_pods_are_not_healthy_and_leave_the_record() {
    let mut deleting = (*pod("a", true, None)).clone();
    deleting.metadata.deletion_timestamp = Some(Time(at(0)));
    let mut pdb = budget(Some(IntOrString::Int(1)), None);
    pdb.status = Some(PodDisruptionBudgetStatus {
        disrupted_pods: Some(BTreeMap::from([("a".to_string(), Time(at(0)))])),
        ..PodDisruptionBudgetStatus::default()
    });
    let plan = plan(
        &pdb,
        &[Arc::new(deleting), pod("b", true, None)],
        &none,
        at(5),
        &DisruptionConfig::default(),
    );
    assert_eq!(plan.status.disrupted_pods, None);
    assert_eq!(counts(&plan), (1, 1, 2, 0));
}

#[test]
fn the_condition_keeps_its_transition_time_while_unchanged() {
    let pods = [pod("a", true, None), pod("b", true, None)];
    let pdb = budget(Some(IntOrString::Int(1)), None);
    let first = plan(&pdb, &pods, &none, at(0), &DisruptionConfig::default());
    let mut counted = pdb.clone();
    counted.status = Some(first.status.clone());
    let again = plan(&counted, &pods, &none, at(60), &DisruptionConfig::default());
    assert_eq!(again.status, first.status, "a steady count writes nothing");
    let fewer = plan(
        &counted,
        &pods[..1],
        &none,
        at(90),
        &DisruptionConfig::default(),
    );
    assert_eq!(condition(&fewer).status, "False");
    assert_eq!(condition(&fewer).last_transition_time, Time(at(90)));
}

#[test]
fn an_empty_selector_selects_every_pod_and_a_missing_one_none() {
    let mut everything = budget(Some(IntOrString::Int(0)), None);
    everything.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
    let pods = [pod("a", true, None)];
    let plan_all = plan(
        &everything,
        &pods,
        &none,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(plan_all.status.expected_pods, Some(1));
    everything.spec.as_mut().unwrap().selector = None;
    let plan_none = plan(
        &everything,
        &pods,
        &none,
        at(0),
        &DisruptionConfig::default(),
    );
    assert_eq!(plan_none.status.expected_pods, Some(0));
}

#[test]
fn owner_groups_come_from_the_api_version() {
    let owner = |api_version: &str| OwnerReference {
        api_version: api_version.into(),
        ..OwnerReference::default()
    };
    assert_eq!(group_of(&owner("apps/v1")), "apps");
    assert_eq!(group_of(&owner("v1")), "");
    assert_eq!(
        scaled(&IntOrString::String("ten".into()), 4).unwrap_err(),
        "invalid value for IntOrString: invalid type: string is not a percentage"
    );
}
