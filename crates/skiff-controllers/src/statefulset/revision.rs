//! The set's history as ControllerRevisions.
//!
//! Every distinct pod template the set has had is recorded in a
//! ControllerRevision (apps/v1) named `{set}-{hash}`, whose `data` is a
//! strategic merge patch replacing `spec.template`, as upstream records it:
//! `kubectl rollout history` lists these and `kubectl rollout undo` applies
//! one back onto the set. Pods carry the name of the revision they were made
//! from in their `controller-revision-hash` label.
//!
//! The update revision is the one recording the set's template now. When the
//! template returns to an older revision's (a rollback), that revision is
//! renumbered to the newest instead of being recorded twice. The hash is
//! FNV-1 (32-bit) of the recorded data and the set's `collisionCount`, spelled
//! with the consonants-and-digits alphabet of generated names; a name taken
//! by a revision with other data bumps `collisionCount` and hashes again.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::pods::controller_reference;

/// The label holding a revision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Upstream's `revisionHistoryLimit` default.
const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// The longest name prefix, so that `{prefix}-{hash}` fits in 253 bytes.
const MAX_PREFIX: usize = 223;

/// The characters a hash is spelled with (no vowels, no look-alikes).
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// What a revision of `set` records: a patch that replaces the pod template.
pub fn patch_of(set: &StatefulSet) -> Value {
    let mut template = serde_json::to_value(&set.spec.template).unwrap_or_else(|_| json!({}));
    if let Some(fields) = template.as_object_mut() {
        fields.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The pod template a revision records, if it is a StatefulSet revision.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.0.get("spec")?.get("template")?.clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

fn fnv1_32(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |hash: u32, byte| {
        hash.wrapping_mul(0x0100_0193) ^ u32::from(byte)
    })
}

/// The hash naming a revision that records `data`.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    let sum = fnv1_32(
        bytes
            .into_iter()
            .chain(collision_count.to_string().into_bytes()),
    );
    sum.to_string()
        .bytes()
        .map(|b| HASH_ALPHABET[usize::from(b) % HASH_ALPHABET.len()] as char)
        .collect()
}

/// `{prefix}-{hash}`, the prefix cut to fit a name.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix = prefix.get(..MAX_PREFIX).unwrap_or(prefix);
    format!("{prefix}-{hash}")
}

/// A new revision of `set` numbered `number`: the template patch, the
/// template's labels plus the hash, the set's annotations (so
/// `kubernetes.io/change-cause` shows in `kubectl rollout history`), owned
/// by the set.
pub fn new_revision(set: &StatefulSet, number: i64, collision_count: i32) -> ControllerRevision {
    let data = patch_of(set);
    let hash = hash(&data, collision_count);
    let mut labels: BTreeMap<String, String> = set
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&set.name_any(), &hash)),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![controller_reference(set)]),
            ..ObjectMeta::default()
        },
        data: RawExtension(data),
        revision: Some(number),
    }
}

/// Both revisions record the same pod template.
pub fn same_template(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    match (template_of(a), template_of(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Oldest first: by number, then creation time, then name.
pub fn sort(revisions: &mut [Arc<ControllerRevision>]) {
    revisions.sort_by(|a, b| compare(a, b));
}

fn compare(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    let created = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    a.revision
        .unwrap_or(0)
        .cmp(&b.revision.unwrap_or(0))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The number after the newest of `sorted`.
pub fn next_number(sorted: &[Arc<ControllerRevision>]) -> i64 {
    sorted.last().map_or(1, |r| r.revision.unwrap_or(0) + 1)
}

/// How the revision recording the set's template is found or made.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateRevision {
    /// The newest revision (at this index) already records it.
    Latest(usize),
    /// An older revision (at this index) records it: it becomes the newest
    /// by taking this number (a rollback).
    Renumber(usize, i64),
    /// No revision records it: create this one.
    Create(Box<ControllerRevision>),
}

/// Finds the revision recording `set`'s template among `sorted` (oldest
/// first), or makes one.
pub fn resolve_update(
    set: &StatefulSet,
    sorted: &[Arc<ControllerRevision>],
    collision_count: i32,
) -> UpdateRevision {
    let number = next_number(sorted);
    let wanted = new_revision(set, number, collision_count);
    match sorted.iter().rposition(|r| same_template(r, &wanted)) {
        Some(index) if index + 1 == sorted.len() => UpdateRevision::Latest(index),
        Some(index) => UpdateRevision::Renumber(index, number),
        None => UpdateRevision::Create(Box::new(wanted)),
    }
}

/// The revisions to delete to keep `revisionHistoryLimit` of those that are
/// not live (`live` names the current and update revisions and every
/// revision a pod was made from), oldest first.
pub fn excess_history<'a>(
    set: &StatefulSet,
    sorted: &'a [Arc<ControllerRevision>],
    live: &BTreeSet<&str>,
) -> Vec<&'a Arc<ControllerRevision>> {
    let limit = usize::try_from(
        set.spec
            .revision_history_limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT),
    )
    .unwrap_or(0);
    let history: Vec<_> = sorted
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    let excess = history.len().saturating_sub(limit);
    history.into_iter().take(excess).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn set(image: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("set-uid".into()),
                annotations: Some(BTreeMap::from([(
                    "kubernetes.io/change-cause".into(),
                    format!("image {image}"),
                )])),
                ..ObjectMeta::default()
            },
            spec: StatefulSetSpec {
                revision_history_limit: Some(1),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "web".into())])),
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
                ..StatefulSetSpec::default()
            },
            status: None,
        }
    }

    fn stored(set: &StatefulSet, number: i64) -> Arc<ControllerRevision> {
        Arc::new(new_revision(set, number, 0))
    }

    #[test]
    fn fnv1_matches_the_published_test_vectors() {
        assert_eq!(fnv1_32(*b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(*b"a"), 0x050c_5d7e);
        assert_eq!(fnv1_32(*b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn a_revision_records_the_template_as_a_replacing_patch() {
        let set = set("nginx:1");
        let revision = new_revision(&set, 3, 0);
        let hash = hash(&patch_of(&set), 0);
        assert_eq!(
            revision.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert!(hash.bytes().all(|b| HASH_ALPHABET.contains(&b)));
        assert_eq!(revision.data.0["spec"]["template"]["$patch"], "replace");
        assert_eq!(revision.revision, Some(3));
        let labels = revision.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[HASH_LABEL], hash);
        assert_eq!(
            revision.metadata.annotations.as_ref().unwrap()["kubernetes.io/change-cause"],
            "image nginx:1"
        );
        assert_eq!(template_of(&revision).as_ref(), Some(&set.spec.template));
        assert_ne!(super::hash(&patch_of(&set), 1), hash, "collisions rename");
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let name = revision_name(&"a".repeat(300), "xyz");
        assert_eq!(name.len(), MAX_PREFIX + 4);
    }

    #[test]
    fn an_unchanged_template_keeps_the_latest_revision() {
        let revisions = vec![stored(&set("nginx:1"), 1), stored(&set("nginx:2"), 2)];
        assert_eq!(
            resolve_update(&set("nginx:2"), &revisions, 0),
            UpdateRevision::Latest(1)
        );
    }

    #[test]
    fn a_rollback_renumbers_the_older_revision() {
        let revisions = vec![stored(&set("nginx:1"), 1), stored(&set("nginx:2"), 2)];
        assert_eq!(
            resolve_update(&set("nginx:1"), &revisions, 0),
            UpdateRevision::Renumber(0, 3)
        );
    }

    #[test]
    fn a_new_template_creates_the_next_revision() {
        let revisions = vec![stored(&set("nginx:1"), 1)];
        let UpdateRevision::Create(created) = resolve_update(&set("nginx:3"), &revisions, 0) else {
            panic!("expected a new revision");
        };
        assert_eq!(created.revision, Some(2));
        assert_eq!(
            resolve_update(&set("nginx:3"), &[], 0),
            UpdateRevision::Create(Box::new(new_revision(&set("nginx:3"), 1, 0)))
        );
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_oldest_first_sparing_live_revisions() {
        let mut revisions = vec![
            stored(&set("nginx:3"), 3),
            stored(&set("nginx:1"), 1),
            stored(&set("nginx:4"), 4),
            stored(&set("nginx:2"), 2),
        ];
        sort(&mut revisions);
        let numbers: Vec<_> = revisions.iter().map(|r| r.revision.unwrap()).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        let name = |i: usize| revisions[i].metadata.name.clone().unwrap();
        let (live_old, current) = (name(0), name(3));
        let live = BTreeSet::from([live_old.as_str(), current.as_str()]);
        let doomed: Vec<_> = excess_history(&set("x"), &revisions, &live)
            .into_iter()
            .map(|r| r.revision.unwrap())
            .collect();
        assert_eq!(doomed, [2], "limit 1 keeps revision 3; live 1 and 4 stay");
    }
}
