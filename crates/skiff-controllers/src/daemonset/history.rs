//! A DaemonSet's revisions: one ControllerRevision per pod template it has
//! had, so that `kubectl rollout history` can list them and `rollout undo`
//! can patch an old template back.
//!
//! A revision's `data` is a strategic merge patch that replaces
//! `spec.template` wholesale; a revision is *current* when its data equals
//! the patch of the DaemonSet's template now. It is named `{ds}-{hash}`,
//! where the hash covers the template and `status.collisionCount` (bumped
//! when that name is taken by a revision of another template), and carries
//! the hash in its `controller-revision-hash` label, which new pods copy so
//! the controller can tell updated pods from old ones. The current revision
//! always holds the highest revision number: rolling back to an old
//! template renumbers that revision instead of creating a copy.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::pods::controller_reference;

/// The label naming the revision a pod (or revision) belongs to.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label carrying the template generation a pod was made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where `apps/v1` keeps a DaemonSet's template generation.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The characters a hash is spelled with (no vowels, so no words).
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The template generation of `ds`, if its annotation holds a number.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.annotations()
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .and_then(|g| g.parse().ok())
}

/// Whether `pod` was made from the current template: its hash label equals
/// `hash`, or its generation label equals the template generation.
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.labels();
    let hash_matches =
        !hash.is_empty() && labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash);
    let generation_matches =
        generation.is_some_and(|g| labels.get(TEMPLATE_GENERATION_LABEL) == Some(&g.to_string()));
    hash_matches || generation_matches
}

/// The revision data for the template of `ds`: a patch replacing
/// `spec.template`.
pub fn revision_data(ds: &DaemonSet) -> Value {
    let mut template = serde_json::to_value(&ds.spec.template).unwrap_or_else(|_| json!({}));
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Whether `revision` holds the current template of `ds`.
pub fn matches(ds: &DaemonSet, revision: &ControllerRevision) -> bool {
    revision.data.0 == revision_data(ds)
}

/// FNV-1a, 32 bits.
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut hash: u32) -> u32 {
    for byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// The hash naming the revision of `template`: FNV-1a over the template's
/// JSON and the collision count, its decimal digits spelled in
/// [`HASH_ALPHABET`] as upstream spells them.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv1a(json, 2_166_136_261);
    if let Some(count) = collision_count {
        hash = fnv1a(count.to_le_bytes(), hash);
    }
    hash.to_string()
        .bytes()
        .map(|digit| HASH_ALPHABET[usize::from(digit) % HASH_ALPHABET.len()] as char)
        .collect()
}

/// The revision to create when no revision holds the current template.
pub fn snapshot(ds: &DaemonSet, revision: i64) -> ControllerRevision {
    let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = compute_hash(&ds.spec.template, collision_count);
    let mut labels = ds
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.to_string(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![controller_reference(ds)]),
            ..ObjectMeta::default()
        },
        data: RawExtension(revision_data(ds)),
        revision: Some(revision),
    }
}

/// The revisions of a DaemonSet, sorted out.
#[derive(Debug, Default)]
pub struct History {
    /// The revision of the current template to keep (the highest numbered
    /// one if there are several), if any.
    pub current: Option<Arc<ControllerRevision>>,
    /// Other revisions of the current template, to delete once their pods
    /// carry the kept revision's hash.
    pub duplicates: Vec<Arc<ControllerRevision>>,
    /// Revisions of other templates, oldest first.
    pub old: Vec<Arc<ControllerRevision>>,
    /// The number the current revision must have: one above every old one.
    pub next_revision: i64,
}

fn number(revision: &ControllerRevision) -> i64 {
    revision.revision.unwrap_or(0)
}

/// Sorts the revisions `ds` controls into current, duplicate and old.
pub fn sort_history(ds: &DaemonSet, revisions: &[Arc<ControllerRevision>]) -> History {
    let (mut current, mut old): (Vec<_>, Vec<_>) =
        revisions.iter().cloned().partition(|r| matches(ds, r));
    old.sort_by_key(|r| number(r));
    current.sort_by_key(|r| number(r));
    let next_revision = old.last().map_or(0, |r| number(r)) + 1;
    let kept = current.pop();
    History {
        current: kept,
        duplicates: current,
        old,
        next_revision,
    }
}

/// Old revisions to delete so at most `revisionHistoryLimit` remain (oldest
/// first), sparing any whose hash a pod of the DaemonSet still carries.
pub fn revisions_to_prune(
    ds: &DaemonSet,
    old: &[Arc<ControllerRevision>],
    pods: &[Arc<Pod>],
) -> Vec<Arc<ControllerRevision>> {
    let limit = usize::try_from(ds.spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
    let Some(mut excess) = old.len().checked_sub(limit).filter(|n| *n > 0) else {
        return Vec::new();
    };
    let live: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p.labels().get(REVISION_HASH_LABEL))
        .map(String::as_str)
        .collect();
    let mut prune = Vec::new();
    for revision in old {
        if excess == 0 {
            break;
        }
        let in_use = revision
            .labels()
            .get(REVISION_HASH_LABEL)
            .is_some_and(|h| live.contains(h.as_str()));
        if !in_use {
            prune.push(Arc::clone(revision));
            excess -= 1;
        }
    }
    prune
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn ds(image: &str) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("ds-uid".into()),
                ..ObjectMeta::default()
            },
            spec: DaemonSetSpec {
                selector: LabelSelector::default(),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "agent".into())])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                revision_history_limit: Some(1),
                ..DaemonSetSpec::default()
            },
            status: None,
        }
    }

    fn revision_of(ds: &DaemonSet, number: i64) -> Arc<ControllerRevision> {
        Arc::new(snapshot(ds, number))
    }

    fn pod_with_hash(hash: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([(REVISION_HASH_LABEL.into(), hash.into())])),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    #[test]
    fn the_hash_depends_on_the_template_and_collision_count_only() {
        let a = ds("nginx:1");
        let hash = compute_hash(&a.spec.template, None);
        assert!(!hash.is_empty());
        assert!(hash.bytes().all(|b| HASH_ALPHABET.contains(&b)));
        assert_eq!(hash, compute_hash(&ds("nginx:1").spec.template, None));
        assert_ne!(hash, compute_hash(&ds("nginx:2").spec.template, None));
        assert_ne!(hash, compute_hash(&a.spec.template, Some(1)));
    }

    #[test]
    fn a_snapshot_is_named_labelled_owned_and_matches_its_template() {
        let mut a = ds("nginx:1");
        a.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/change-cause".into(),
            "first".into(),
        )]));
        let revision = snapshot(&a, 3);
        let hash = compute_hash(&a.spec.template, None);
        assert_eq!(revision.name_any(), format!("agent-{hash}"));
        assert_eq!(revision.labels().get(REVISION_HASH_LABEL), Some(&hash));
        assert_eq!(
            revision.labels().get("app").map(String::as_str),
            Some("agent")
        );
        assert_eq!(revision.revision, Some(3));
        assert_eq!(
            revision
                .annotations()
                .get("kubernetes.io/change-cause")
                .map(String::as_str),
            Some("first")
        );
        assert_eq!(revision.owner_references()[0].uid, "ds-uid");
        assert_eq!(revision.data.0["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            revision.data.0["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1"
        );
        assert!(matches(&a, &revision));
        assert!(!matches(&ds("nginx:2"), &revision));
    }

    #[test]
    fn collisions_change_the_snapshot_name() {
        let mut a = ds("nginx:1");
        let first = snapshot(&a, 1).name_any();
        a.status = Some(DaemonSetStatus {
            collision_count: Some(1),
            ..DaemonSetStatus::default()
        });
        assert_ne!(snapshot(&a, 1).name_any(), first);
    }

    #[test]
    fn history_keeps_the_newest_current_revision_and_numbers_after_the_old() {
        let current = ds("nginx:2");
        let revisions = [
            revision_of(&ds("nginx:1"), 4),
            revision_of(&current, 2),
            revision_of(&current, 5),
            revision_of(&ds("nginx:0"), 1),
        ];
        let history = sort_history(&current, &revisions);
        assert_eq!(history.current.as_ref().and_then(|r| r.revision), Some(5));
        assert_eq!(history.duplicates.len(), 1);
        assert_eq!(history.duplicates[0].revision, Some(2));
        let old: Vec<_> = history.old.iter().map(|r| r.revision).collect();
        assert_eq!(old, [Some(1), Some(4)]);
        assert_eq!(history.next_revision, 5);
    }

    #[test]
    fn rolling_back_renumbers_the_old_revision() {
        let v1 = ds("nginx:1");
        let revisions = [revision_of(&v1, 1), revision_of(&ds("nginx:2"), 2)];
        let history = sort_history(&v1, &revisions);
        assert_eq!(history.current.as_ref().and_then(|r| r.revision), Some(1));
        assert_eq!(history.next_revision, 3);
        assert!(sort_history(&ds("nginx:9"), &revisions).current.is_none());
    }

    #[test]
    fn pruning_keeps_the_limit_and_revisions_pods_still_use() {
        let a = ds("nginx:9");
        let old = [
            revision_of(&ds("nginx:1"), 1),
            revision_of(&ds("nginx:2"), 2),
            revision_of(&ds("nginx:3"), 3),
        ];
        let in_use = compute_hash(&ds("nginx:1").spec.template, None);
        let pruned = revisions_to_prune(&a, &old, &[pod_with_hash(&in_use)]);
        let numbers: Vec<_> = pruned.iter().map(|r| r.revision).collect();
        assert_eq!(numbers, [Some(2), Some(3)]);
        let mut roomy = a.clone();
        roomy.spec.revision_history_limit = Some(10);
        assert!(revisions_to_prune(&roomy, &old, &[]).is_empty());
    }

    #[test]
    fn pods_are_updated_by_hash_or_template_generation() {
        let mut pod = (*pod_with_hash("abc")).clone();
        assert!(is_pod_updated(&pod, "abc", None));
        assert!(!is_pod_updated(&pod, "xyz", None));
        assert!(!is_pod_updated(&pod, "", None));
        pod.labels_mut()
            .insert(TEMPLATE_GENERATION_LABEL.into(), "4".into());
        assert!(is_pod_updated(&pod, "xyz", Some(4)));
        assert!(!is_pod_updated(&pod, "xyz", Some(5)));
        let mut a = ds("x");
        a.annotations_mut()
            .insert(TEMPLATE_GENERATION_ANNOTATION.into(), "4".into());
        assert_eq!(template_generation(&a), Some(4));
        assert_eq!(template_generation(&ds("x")), None);
    }
}
