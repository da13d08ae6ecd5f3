//! What workload controllers need to know about pods, and how they make them:
//! upstream's `controller_utils` (active, ready, available; the ranking of
//! pods to delete first) and pod templates turned into pods.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaLabelSelector, ObjectMeta, OwnerReference,
};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use skiff_api::selector::LabelSelector;
use skiff_client::events::{EventRecorder, EventType};

use crate::runtime::api_message;

/// The characters upstream's `generateName` appends: no vowels, no
/// look-alikes, so generated names never spell words.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `prefix` followed by five random characters, as `generateName` makes.
/// Controllers name pods themselves so that they know the names of the pods
/// they have asked for before the cache shows them.
pub fn generate_name(prefix: &str) -> String {
    let mut random = RandomState::new().hash_one(std::time::SystemTime::now());
    let mut name = String::with_capacity(prefix.len() + 5);
    name.push_str(prefix);
    for _ in 0..5 {
        name.push(NAME_ALPHABET[(random % NAME_ALPHABET.len() as u64) as usize] as char);
        random /= NAME_ALPHABET.len() as u64;
    }
    name
}

/// An owner reference that makes `owner` the managing controller, blocking
/// the owner's foreground deletion until the dependent is gone.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod made from `template`, owned by `owner`, named `name`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: String,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let template_meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates `pod` for its controller `owner`, recording upstream's
/// `SuccessfulCreate` or `FailedCreate` event on the owner. Callers track
/// the create in their expectations.
pub async fn create_owned_pod(
    api: &Api<Pod>,
    recorder: &EventRecorder,
    owner: &ObjectReference,
    pod: &Pod,
) -> Result<(), kube::Error> {
    let name = pod.name_any();
    match api.create(&PostParams::default(), pod).await {
        Ok(_) => {
            let message = format!("Created pod: {name}");
            recorder.record(owner, EventType::Normal, "SuccessfulCreate", &message);
            Ok(())
        }
        Err(error) => {
            let message = format!("Error creating: {}", api_message(&error));
            recorder.record(owner, EventType::Warning, "FailedCreate", &message);
            Err(error)
        }
    }
}

/// Deletes `pod` for its controller `owner`, guarded by the pod's UID (a
/// new pod of the same name is never hit), recording `SuccessfulDelete` or
/// `FailedDelete`. A pod already gone counts as deleted.
pub async fn delete_owned_pod(
    api: &Api<Pod>,
    recorder: &EventRecorder,
    owner: &ObjectReference,
    pod: &Pod,
) -> Result<(), kube::Error> {
    let name = pod.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            let message = format!("Deleted pod: {name}");
            recorder.record(owner, EventType::Normal, "SuccessfulDelete", &message);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => {
            let message = format!("Error deleting: {}", api_message(&error));
            recorder.record(owner, EventType::Warning, "FailedDelete", &message);
            Err(error)
        }
    }
}

/// Converts a `metav1.LabelSelector`; `None` (or an invalid one, which the
/// API server rejects at admission) selects nothing.
pub fn selector(selector: Option<&MetaLabelSelector>) -> LabelSelector {
    selector
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| LabelSelector::from_label_selector(&v).ok())
        .unwrap_or_else(LabelSelector::nothing)
}

/// True if the selector picks an object with `labels`.
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    match labels {
        Some(labels) => selector.matches(labels),
        None => selector.matches(&BTreeMap::new()),
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Not finished and not being deleted: a pod that counts toward replicas.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Being deleted but not finished.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// When the pod's Ready condition last became True, if it is True now.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (ready.status == "True").then(|| ready.last_transition_time.as_ref().map(|t| t.0))
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => now.as_second() - since.as_second() >= i64::from(min_ready_seconds),
    }
}

/// Seconds until a ready pod becomes available, if it is ready but not yet.
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    let since = ready_since(pod)??;
    let left = i64::from(min_ready_seconds) - (now.as_second() - since.as_second());
    (left > 0).then_some(left)
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|s| s.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// Upstream's order of pods to delete when scaling down: the first are the
/// cheapest to lose. Unscheduled before scheduled, pending before running,
/// not ready before ready, recently ready before long ready, more restarts
/// before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| {
            let since = |p: &Pod| ready_since(p).flatten();
            since(b).cmp(&since(a))
        })
        .then_with(|| restart_count(b).cmp(&restart_count(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(at(100))),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(t))),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn generated_names_use_the_prefix_and_five_safe_characters() {
        let name = generate_name("web-7d9f-");
        assert!(name.starts_with("web-7d9f-"));
        assert_eq!(name.len(), "web-7d9f-".len() + 5);
        assert!(name[9..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let p = pod("a", Some("n"), "Running", Some(1000));
        assert!(is_available(&p, 0, at(1000)));
        assert!(!is_available(&p, 10, at(1005)));
        assert_eq!(seconds_until_available(&p, 10, at(1005)), Some(5));
        assert!(is_available(&p, 10, at(1010)));
        assert!(!is_available(
            &pod("b", Some("n"), "Running", None),
            0,
            at(0)
        ));
    }

    #[test]
    fn scale_down_deletes_the_least_valuable_pods_first() {
        let mut pods = [
            pod("ready-old", Some("n"), "Running", Some(10)),
            pod("unscheduled", None, "Pending", None),
            pod("ready-new", Some("n"), "Running", Some(500)),
            pod("pending", Some("n"), "Pending", None),
            pod("running-unready", Some("n"), "Running", None),
        ];
        pods.sort_by(deletion_order);
        let order: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "running-unready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn finished_and_deleting_pods_are_not_active() {
        assert!(is_active(&pod("a", None, "Pending", None)));
        assert!(!is_active(&pod("a", None, "Succeeded", None)));
        let mut deleting = pod("a", None, "Running", None);
        deleting.metadata.deletion_timestamp = Some(Time(at(5)));
        assert!(!is_active(&deleting));
        assert!(is_terminating(&deleting));
    }

    #[test]
    fn a_missing_selector_selects_nothing() {
        assert!(!selects(&selector(None), None));
        let empty = MetaLabelSelector::default();
        assert!(selects(&selector(Some(&empty)), None));
    }
}
