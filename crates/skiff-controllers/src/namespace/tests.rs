use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Namespace, NamespaceCondition, NamespaceSpec, NamespaceStatus, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::status::*;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + second).unwrap()
}

fn meta(finalizers: &[&str]) -> ObjectMeta {
    ObjectMeta {
        finalizers: (!finalizers.is_empty())
            .then(|| finalizers.iter().map(|f| (*f).to_string()).collect()),
        ..ObjectMeta::default()
    }
}

fn pod(grace: Option<i64>, phase: &str) -> Pod {
    Pod {
        spec: Some(PodSpec {
            termination_grace_period_seconds: grace,
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

fn condition<'a>(status: &'a NamespaceStatus, kind: &str) -> &'a NamespaceCondition {
    status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == kind))
        .unwrap_or_else(|| panic!("{kind} missing"))
}

#[test]
fn only_a_deleted_namespace_holding_the_kubernetes_finalizer_is_emptied() {
    let mut namespace = Namespace {
        spec: Some(NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        }),
        ..Namespace::default()
    };
    assert!(!waits_for_content_removal(&namespace), "not deleted");
    namespace.metadata.deletion_timestamp = Some(Time(at(0)));
    assert!(waits_for_content_removal(&namespace));
    namespace.spec = Some(NamespaceSpec {
        finalizers: Some(vec!["example.com/other".into()]),
    });
    assert!(
        !waits_for_content_removal(&namespace),
        "already finalized by us"
    );
}

#[test]
fn content_gone_leaves_nothing() {
    let (left, error) = remaining("configmaps.", "ns", &[], 0);
    assert_eq!(left.count, 0);
    assert_eq!(left.estimate, 0);
    assert_eq!(error, None);
}

#[test]
fn content_held_by_finalizers_is_waited_for_and_counted() {
    let items = [
        meta(&["example.com/hold"]),
        meta(&["example.com/hold", "other"]),
    ];
    let (left, error) = remaining("widgets.example.com", "ns", &items, 0);
    assert_eq!(error, None);
    assert_eq!(left.count, 2);
    assert_eq!(left.estimate, 15);
    assert_eq!(
        left.finalizers,
        BTreeMap::from([
            ("example.com/hold".to_string(), 2),
            ("other".to_string(), 1)
        ])
    );
}

#[test]
fn terminating_pods_are_waited_for_their_grace_period() {
    let (left, error) = remaining("pods.", "ns", &[meta(&[])], 30);
    assert_eq!(error, None);
    assert_eq!(left.estimate, 30);
}

#[test]
fn content_left_without_a_reason_is_an_error() {
    let (left, error) = remaining("configmaps.", "ns", &[meta(&[])], 0);
    assert_eq!(left.count, 1);
    assert_eq!(
        error.as_deref(),
        Some("unexpected items still remain in namespace: ns for gvr: configmaps.")
    );
}

#[test]
fn the_pod_estimate_is_the_longest_grace_of_unfinished_pods_until_it_has_passed() {
    let pods = [
        pod(Some(30), "Running"),
        pod(Some(90), "Succeeded"),
        pod(Some(10), "Pending"),
        pod(None, "Running"),
    ];
    assert_eq!(pod_grace_estimate(&pods, at(0), at(5)), 30);
    assert_eq!(
        pod_grace_estimate(&pods, at(0), at(30)),
        0,
        "the grace period has passed"
    );
    assert_eq!(pod_grace_estimate(&[], at(0), at(0)), 0);
}

#[test]
fn next_step_retries_failures_waits_half_the_estimate_and_finalizes_when_empty() {
    let mut report = ContentReport::default();
    assert_eq!(next(&report), Next::Finalize);
    report.remaining.push(Remaining {
        resource: "pods.".into(),
        count: 2,
        estimate: 30,
        ..Remaining::default()
    });
    assert_eq!(next(&report), Next::Wait(Duration::from_secs(16)));
    report.delete_errors.push("secrets.: forbidden".into());
    assert_eq!(
        next(&report),
        Next::Retry(vec!["secrets.: forbidden".into()])
    );
    let failed = ContentReport {
        discovery_error: Some("connection refused".into()),
        ..ContentReport::default()
    };
    assert_eq!(
        next(&failed),
        Next::Retry(vec!["connection refused".into()])
    );
}

#[test]
fn all_is_well_sets_every_condition_false_with_upstreams_reasons() {
    let status = status(None, &ContentReport::default(), at(0));
    assert_eq!(status.phase.as_deref(), Some("Terminating"));
    let expected = [
        ("NamespaceDeletionDiscoveryFailure", "ResourcesDiscovered"),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "ParsedGroupVersions",
        ),
        ("NamespaceDeletionContentFailure", "ContentDeleted"),
        ("NamespaceContentRemaining", "ContentRemoved"),
        ("NamespaceFinalizersRemaining", "ContentHasNoFinalizers"),
    ];
    let conditions = status.conditions.as_ref().unwrap();
    assert_eq!(conditions.len(), 5);
    for ((kind, reason), c) in expected.iter().zip(conditions) {
        assert_eq!((c.type_.as_str(), c.status.as_str()), (*kind, "False"));
        assert_eq!(c.reason.as_deref(), Some(*reason));
        assert_eq!(c.last_transition_time, Some(Time(at(0))));
    }
    assert_eq!(
        condition(&status, "NamespaceFinalizersRemaining")
            .message
            .as_deref(),
        Some("All content-preserving finalizers finished")
    );
}

#[test]
fn remaining_content_and_failures_are_reported() {
    let report = ContentReport {
        discovery_error: None,
        delete_errors: vec!["secrets.: boom".into(), "configmaps.: bang".into()],
        remaining: vec![
            Remaining {
                resource: "pods.".into(),
                count: 2,
                finalizers: BTreeMap::from([("example.com/hold".to_string(), 1)]),
                estimate: 30,
            },
            Remaining {
                resource: "widgets.example.com".into(),
                count: 1,
                finalizers: BTreeMap::from([("example.com/hold".to_string(), 1)]),
                estimate: 15,
            },
            Remaining {
                resource: "configmaps.".into(),
                ..Remaining::default()
            },
        ],
    };
    let status = status(None, &report, at(0));
    let remaining = condition(&status, "NamespaceContentRemaining");
    assert_eq!(remaining.status, "True");
    assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
    assert_eq!(
        remaining.message.as_deref(),
        Some(
            "Some resources are remaining: pods. has 2 resource instances, widgets.example.com has 1 resource instances"
        )
    );
    let finalizers = condition(&status, "NamespaceFinalizersRemaining");
    assert_eq!(finalizers.reason.as_deref(), Some("SomeFinalizersRemain"));
    assert_eq!(
        finalizers.message.as_deref(),
        Some(
            "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances"
        )
    );
    let failure = condition(&status, "NamespaceDeletionContentFailure");
    assert_eq!(failure.reason.as_deref(), Some("ContentDeletionFailed"));
    assert_eq!(
        failure.message.as_deref(),
        Some("Failed to delete all resource types, 2 remaining: configmaps.: bang, secrets.: boom")
    );
    assert_eq!(
        condition(&status, "NamespaceDeletionDiscoveryFailure").status,
        "False"
    );
}

#[test]
fn transition_times_move_only_when_a_status_changes_and_other_conditions_stay() {
    let foreign = NamespaceCondition {
        type_: "example.com/Custom".into(),
        status: "True".into(),
        ..NamespaceCondition::default()
    };
    let before = NamespaceStatus {
        phase: Some("Active".into()),
        conditions: Some(vec![foreign.clone()]),
    };
    let waiting = ContentReport {
        remaining: vec![Remaining {
            resource: "pods.".into(),
            count: 1,
            estimate: 30,
            ..Remaining::default()
        }],
        ..ContentReport::default()
    };
    let first = status(Some(&before), &waiting, at(0));
    assert_eq!(first.conditions.as_ref().unwrap()[0], foreign);
    let again = status(Some(&first), &waiting, at(10));
    assert_eq!(again, first, "nothing changed: the status is written once");
    let done = status(Some(&again), &ContentReport::default(), at(20));
    let remaining = condition(&done, "NamespaceContentRemaining");
    assert_eq!(remaining.status, "False");
    assert_eq!(remaining.last_transition_time, Some(Time(at(20))));
    assert_eq!(
        condition(&done, "NamespaceDeletionDiscoveryFailure").last_transition_time,
        Some(Time(at(0))),
        "unchanged conditions keep their time"
    );
}

#[test]
fn a_discovery_failure_is_reported() {
    let report = ContentReport {
        discovery_error: Some("the server is unavailable".into()),
        ..ContentReport::default()
    };
    let status = status(None, &report, at(0));
    let failure = condition(&status, "NamespaceDeletionDiscoveryFailure");
    assert_eq!(failure.status, "True");
    assert_eq!(failure.reason.as_deref(), Some("DiscoveryFailed"));
    assert_eq!(
        failure.message.as_deref(),
        Some("the server is unavailable")
    );
}
