//! What a worker does with one object once it has the object's live
//! metadata and the live state of each owner: the pure part of upstream's
//! `attemptToDeleteItem`.
//!
//! Each owner reference is classified:
//!
//! - **solid**: the owner exists and is not being deleted in the foreground;
//! - **dangling**: the owner does not exist (or another object has its name);
//! - **waiting**: the owner exists, is being deleted, and carries
//!   `foregroundDeletion`, so it waits for this object to go.
//!
//! Then ([`decide`]):
//!
//! | references | decision |
//! |---|---|
//! | some solid, none dangling or waiting | keep |
//! | some solid, others dangling or waiting | remove the dangling and waiting references |
//! | none solid, some waiting, and the object has dependents | delete it in the foreground (its own dependents first), unblocking its references first if a dependent is itself deleting in the foreground, so two foreground deletions never wait on each other |
//! | otherwise | delete it, with the policy its own finalizers ask for (orphan, foreground) or in the background |

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Value, json};

use super::graph::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// The state of one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// The owner exists and keeps its dependents.
    Solid,
    /// The owner does not exist.
    Dangling,
    /// The owner is being deleted and waits for its dependents.
    Waiting,
}

/// Classifies a reference from the owner the API returned for it (`None`
/// when there is none, or only an object with another UID).
pub fn classify(owner: Option<&ObjectMeta>) -> Reference {
    match owner {
        None => Reference::Dangling,
        Some(meta) if meta.deletion_timestamp.is_some() && has(meta, FOREGROUND_FINALIZER) => {
            Reference::Waiting
        }
        Some(_) => Reference::Solid,
    }
}

/// True if the object carries `finalizer`.
pub fn has(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_deref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// The deletion propagation policy of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are collected after the owner is gone.
    Background,
    /// Dependents are deleted before the owner.
    Foreground,
    /// Dependents lose their reference to the owner.
    Orphan,
}

/// What to do with an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: an owner still holds it.
    Keep,
    /// Remove the references to these owner UIDs.
    RemoveReferences(Vec<String>),
    /// Delete it in the foreground; first set `blockOwnerDeletion: false` on
    /// its references if `unblock` is true.
    DeleteInForeground {
        /// Unblock its own owners first.
        unblock: bool,
    },
    /// Delete it with this policy.
    Delete(Propagation),
}

/// Decides for an object with these `finalizers` and classified owner
/// `references` (UID and state), given whether it has dependents and
/// whether one of them is itself deleting in the foreground.
pub fn decide(
    finalizers: &[String],
    references: &[(String, Reference)],
    has_dependents: bool,
    dependent_deleting_in_foreground: bool,
) -> Decision {
    let any = |state: Reference| references.iter().any(|(_, s)| *s == state);
    if any(Reference::Solid) {
        let stale: Vec<String> = references
            .iter()
            .filter(|(_, s)| *s != Reference::Solid)
            .map(|(uid, _)| uid.clone())
            .collect();
        return if stale.is_empty() {
            Decision::Keep
        } else {
            Decision::RemoveReferences(stale)
        };
    }
    if any(Reference::Waiting) && has_dependents {
        return Decision::DeleteInForeground {
            unblock: dependent_deleting_in_foreground,
        };
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Decision::Delete(if has(ORPHAN_FINALIZER) {
        Propagation::Orphan
    } else if has(FOREGROUND_FINALIZER) {
        Propagation::Foreground
    } else {
        Propagation::Background
    })
}

/// `references` without those to the `owners` UIDs; `None` if none of
/// them is referenced.
pub fn without_owners(
    references: &[OwnerReference],
    owners: &[String],
) -> Option<Vec<OwnerReference>> {
    let kept: Vec<OwnerReference> = references
        .iter()
        .filter(|r| !owners.contains(&r.uid))
        .cloned()
        .collect();
    (kept.len() != references.len()).then_some(kept)
}

/// `references` with every `blockOwnerDeletion: true` turned false; `None`
/// if none blocks.
pub fn unblocked(references: &[OwnerReference]) -> Option<Vec<OwnerReference>> {
    if !references
        .iter()
        .any(|r| r.block_owner_deletion == Some(true))
    {
        return None;
    }
    Some(
        references
            .iter()
            .map(|r| OwnerReference {
                block_owner_deletion: r.block_owner_deletion.map(|_| false),
                ..r.clone()
            })
            .collect(),
    )
}

/// `finalizers` without `finalizer`; `None` if it is not there.
pub fn without_finalizer(finalizers: &[String], finalizer: &str) -> Option<Vec<String>> {
    let kept: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    (kept.len() != finalizers.len()).then_some(kept)
}

/// A JSON merge patch setting `metadata.<field>` to `list` (removing the
/// field when the list is empty), guarded by the `resource_version` it was
/// computed from.
pub fn metadata_patch<T: serde::Serialize>(
    field: &str,
    list: &[T],
    resource_version: &str,
) -> Value {
    let value = if list.is_empty() {
        Value::Null
    } else {
        json!(list)
    };
    json!({"metadata": {field: value, "resourceVersion": resource_version}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn refs(states: &[(&str, Reference)]) -> Vec<(String, Reference)> {
        states.iter().map(|(u, s)| ((*u).to_string(), *s)).collect()
    }

    fn reference(uid: &str, block: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("owner-{uid}"),
            uid: uid.into(),
            block_owner_deletion: block,
            controller: None,
        }
    }

    #[test]
    fn owners_are_classified_by_existence_and_foreground_deletion() {
        assert_eq!(classify(None), Reference::Dangling);
        let mut owner = ObjectMeta::default();
        assert_eq!(classify(Some(&owner)), Reference::Solid);
        owner.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            classify(Some(&owner)),
            Reference::Solid,
            "a background or orphan deletion keeps its dependents' reference solid"
        );
        owner.finalizers = Some(vec![FOREGROUND_FINALIZER.into()]);
        assert_eq!(classify(Some(&owner)), Reference::Waiting);
    }

    #[test]
    fn a_solid_owner_keeps_the_object_and_stale_references_are_removed() {
        let solid = refs(&[("a", Reference::Solid)]);
        assert_eq!(decide(&[], &solid, false, false), Decision::Keep);
        let mixed = refs(&[
            ("a", Reference::Solid),
            ("b", Reference::Dangling),
            ("c", Reference::Waiting),
        ]);
        assert_eq!(
            decide(&[], &mixed, true, false),
            Decision::RemoveReferences(vec!["b".into(), "c".into()])
        );
    }

    #[test]
    fn an_object_whose_owners_are_all_gone_is_deleted_with_its_own_policy() {
        let gone = refs(&[("a", Reference::Dangling), ("b", Reference::Dangling)]);
        assert_eq!(
            decide(&[], &gone, true, false),
            Decision::Delete(Propagation::Background)
        );
        assert_eq!(
            decide(&["orphan".into()], &gone, false, false),
            Decision::Delete(Propagation::Orphan)
        );
        assert_eq!(
            decide(&["foregroundDeletion".into()], &gone, false, false),
            Decision::Delete(Propagation::Foreground)
        );
    }

    #[test]
    fn a_foreground_owner_takes_dependents_with_dependents_in_the_foreground() {
        let waiting = refs(&[("a", Reference::Waiting), ("b", Reference::Dangling)]);
        assert_eq!(
            decide(&[], &waiting, true, false),
            Decision::DeleteInForeground { unblock: false }
        );
        assert_eq!(
            decide(&[], &waiting, true, true),
            Decision::DeleteInForeground { unblock: true },
            "a dependent deleting in the foreground must not wait on us while we wait on it"
        );
        assert_eq!(
            decide(&[], &waiting, false, false),
            Decision::Delete(Propagation::Background),
            "a leaf is simply deleted"
        );
    }

    #[test]
    fn references_are_removed_and_unblocked() {
        let all = vec![reference("a", Some(true)), reference("b", None)];
        assert_eq!(
            without_owners(&all, &["a".into()]),
            Some(vec![reference("b", None)])
        );
        assert_eq!(without_owners(&all, &["z".into()]), None);
        assert_eq!(
            unblocked(&all),
            Some(vec![reference("a", Some(false)), reference("b", None)])
        );
        assert_eq!(unblocked(&[reference("b", Some(false))]), None);
    }

    #[test]
    fn finalizers_and_patches() {
        let finalizers = vec!["orphan".to_string(), "example.com/x".to_string()];
        assert_eq!(
            without_finalizer(&finalizers, "orphan"),
            Some(vec!["example.com/x".to_string()])
        );
        assert_eq!(without_finalizer(&finalizers, "foregroundDeletion"), None);
        assert_eq!(
            metadata_patch::<String>("finalizers", &[], "7"),
            json!({"metadata": {"finalizers": null, "resourceVersion": "7"}})
        );
        assert_eq!(
            metadata_patch("ownerReferences", &[reference("b", None)], "8"),
            json!({"metadata": {"resourceVersion": "8", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-b", "uid": "b"}
            ]}})
        );
    }
}
