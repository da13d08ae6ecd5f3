use k8s_openapi::api::core::v1::{
    ResourceQuotaSpec, ScopeSelector, ScopedResourceSelectorRequirement,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Quantity((*v).to_string())))
        .collect()
}

fn quota(hard: &[(&str, &str)], used: Option<&[(&str, &str)]>) -> ResourceQuota {
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some("q".into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(hard)),
            ..ResourceQuotaSpec::default()
        }),
        status: used.map(|used| ResourceQuotaStatus {
            hard: Some(quantities(hard)),
            used: Some(quantities(used)),
        }),
    }
}

fn now() -> Timestamp {
    "2024-03-01T12:00:00Z".parse().unwrap()
}

fn pod(name: &str, phase: &str, cpu: &str, memory: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "team"},
           "spec": {"containers": [{"name": "app", "resources": {
               "requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}}]},
           "status": {"phase": phase}})
}

fn used(status: &ResourceQuotaStatus) -> Vec<(String, String)> {
    status
        .used
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn core(plural: &str) -> CountedType {
    (String::new(), plural.to_string())
}

#[test]
fn only_the_types_a_quota_names_are_counted() {
    assert_eq!(
        counted_types(["pods", "requests.memory"]),
        vec![core("pods")]
    );
    assert_eq!(
        counted_types([
            "count/deployments.apps",
            "secrets",
            "services.loadbalancers"
        ]),
        vec![
            core("secrets"),
            core("services"),
            ("apps".to_string(), "deployments".to_string()),
        ]
    );
    assert!(counted_types(["count/events"]).is_empty());
}

#[test]
fn used_is_recounted_from_running_pods_only() {
    let q = quota(
        &[
            ("pods", "10"),
            ("requests.cpu", "4"),
            ("limits.memory", "4Gi"),
        ],
        None,
    );
    let objects = BTreeMap::from([(
        core("pods"),
        vec![
            pod("a", "Running", "500m", "256Mi"),
            pod("b", "Pending", "250m", "256Mi"),
            pod("done", "Succeeded", "2", "1Gi"),
        ],
    )]);
    let status = desired_status(&q, &objects, now());
    assert_eq!(
        status.hard,
        Some(quantities(&[
            ("pods", "10"),
            ("requests.cpu", "4"),
            ("limits.memory", "4Gi")
        ]))
    );
    assert_eq!(
        used(&status),
        [
            ("limits.memory".to_string(), "512Mi".to_string()),
            ("pods".to_string(), "2".to_string()),
            ("requests.cpu".to_string(), "750m".to_string()),
        ]
    );
}

#[test]
fn tracked_resources_without_objects_are_zero_and_untracked_ones_dropped() {
    let q = quota(
        &[("configmaps", "5"), ("count/widgets.example.com", "3")],
        Some(&[
            ("configmaps", "4"),
            ("stale", "1"),
            ("count/widgets.example.com", "2"),
        ]),
    );
    let objects = BTreeMap::from([(core("configmaps"), Vec::new())]);
    let status = desired_status(&q, &objects, now());
    // configmaps recounted to zero; the widgets type is unknown, so its
    // previous usage stays; `stale` is no longer a hard resource.
    assert_eq!(
        used(&status),
        [
            ("configmaps".to_string(), "0".to_string()),
            ("count/widgets.example.com".to_string(), "2".to_string()),
        ]
    );
}

#[test]
fn scoped_quotas_count_only_pods_in_scope() {
    let mut q = quota(&[("pods", "5")], None);
    q.spec.as_mut().unwrap().scope_selector = Some(ScopeSelector {
        match_expressions: Some(vec![ScopedResourceSelectorRequirement {
            scope_name: "PriorityClass".into(),
            operator: "In".into(),
            values: Some(vec!["high".into()]),
        }]),
    });
    let mut high = pod("h", "Running", "1", "1Gi");
    high["spec"]["priorityClassName"] = json!("high");
    let objects = BTreeMap::from([(core("pods"), vec![high, pod("l", "Running", "1", "1Gi")])]);
    let status = desired_status(&q, &objects, now());
    assert_eq!(used(&status), [("pods".to_string(), "1".to_string())]);
}

#[test]
fn a_quota_needs_sync_until_its_status_covers_its_spec() {
    assert!(needs_sync(&quota(&[("pods", "1")], None)));
    let synced = quota(&[("pods", "1")], Some(&[("pods", "0")]));
    assert!(!needs_sync(&synced));
    let mut edited = synced.clone();
    edited.spec.as_mut().unwrap().hard = Some(quantities(&[("pods", "2")]));
    assert!(needs_sync(&edited));
    let partial = quota(&[("pods", "1"), ("secrets", "1")], Some(&[("pods", "0")]));
    assert!(needs_sync(&partial));
}

#[test]
fn statuses_compare_by_amount() {
    let current = quota(&[("memory", "1Gi")], Some(&[("memory", "1024Mi")]));
    let recount = ResourceQuotaStatus {
        hard: Some(quantities(&[("memory", "1Gi")])),
        used: Some(quantities(&[("memory", "1Gi")])),
    };
    assert!(same_status(current.status.as_ref(), &recount));
    let more = ResourceQuotaStatus {
        used: Some(quantities(&[("memory", "2Gi")])),
        ..recount
    };
    assert!(!same_status(current.status.as_ref(), &more));
}
