//! Revision bookkeeping on ReplicaSets: which rollout each one served, what
//! of the deployment's annotations it carries (`kubectl rollout history`
//! reads `kubernetes.io/change-cause` from there), the sizes it was scaled
//! for, and which old ones the history limit lets go.
//!
//! Revisions only grow: a ReplicaSet that becomes current again (`kubectl
//! rollout undo` puts an old template back) gets the next revision, and its
//! previous revisions move to `deployment.kubernetes.io/revision-history`.

use std::collections::BTreeMap;
use std::num::ParseIntError;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::replicas::{by_revision, spec_replicas, status_replicas};
use super::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
};

/// kubectl's record of the last applied configuration, never copied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The extensions/v1beta1 rollback request, never copied.
const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";
/// The controller's own annotations, never copied from the deployment.
const CONTROLLER_PREFIX: &str = "deployment.kubernetes.io/";

/// The ReplicaSet's revision; 0 if it has none yet.
pub fn revision(rs: &ReplicaSet) -> Result<i64, ParseIntError> {
    match rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
    {
        Some(value) => value.parse(),
        None => Ok(0),
    }
}

/// The highest revision among `sets`, skipping unreadable ones.
pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter()
        .filter_map(|rs| revision(rs).ok())
        .max()
        .unwrap_or(0)
        .max(0)
}

fn skip_copy(key: &str) -> bool {
    key == LAST_APPLIED_ANNOTATION
        || key == ROLLBACK_TO_ANNOTATION
        || key.starts_with(CONTROLLER_PREFIX)
}

/// Copies the deployment's annotations onto the ReplicaSet (all but
/// kubectl's last-applied configuration and the controller's own); true if
/// any changed. Annotations removed from the deployment stay on the
/// ReplicaSet, as upstream's do.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let Some(source) = d.metadata.annotations.as_ref() else {
        return false;
    };
    let target = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in source {
        if skip_copy(key) || target.get(key) == Some(value) {
            continue;
        }
        target.insert(key.clone(), value.clone());
        changed = true;
    }
    changed
}

/// Brings the current ReplicaSet's annotations up to date for revision
/// `new_revision` (the highest old revision plus one): copies the
/// deployment's annotations, raises the revision (moving the previous one
/// into the revision history, bounded to `history_max_chars`), and on a
/// ReplicaSet about to be created records the sizes. True if anything
/// changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    desired: i32,
    max: i32,
    history_max_chars: usize,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let previous = annotations.get(REVISION_ANNOTATION).cloned();
    let previous_number = match previous.as_deref().map(str::parse::<i64>) {
        None => Some(0),
        Some(Ok(n)) => Some(n),
        // An unreadable revision is left alone, as upstream does.
        Some(Err(_)) => None,
    };
    if let Some(old) = previous_number
        && old < new_revision
    {
        annotations.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(previous) = previous {
            let history = annotations
                .get(REVISION_HISTORY_ANNOTATION)
                .map(String::as_str)
                .unwrap_or_default();
            if let Some(history) = append_history(history, &previous, history_max_chars) {
                annotations.insert(REVISION_HISTORY_ANNOTATION.into(), history);
            }
        }
    }
    if !exists && set_replicas_annotations(rs, desired, max) {
        changed = true;
    }
    changed
}

/// `history` with `previous` appended, dropping the oldest entries to stay
/// within `max_chars`; `None` if even `previous` alone does not fit.
fn append_history(history: &str, previous: &str, max_chars: usize) -> Option<String> {
    if history.is_empty() {
        return Some(previous.to_string());
    }
    let mut entries: Vec<&str> = history.split(',').collect();
    entries.push(previous);
    let mut length = history.len() + 1 + previous.len();
    let mut start = 0;
    while length > max_chars && start < entries.len() - 1 {
        length -= entries[start].len() + 1;
        start += 1;
    }
    (length <= max_chars).then(|| entries[start..].join(","))
}

/// True if the size annotations differ from `desired` and `max`.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    get(DESIRED_REPLICAS_ANNOTATION) != Some(desired.to_string().as_str())
        || get(MAX_REPLICAS_ANNOTATION) != Some(max.to_string().as_str())
}

/// Records the deployment's size and maximum size on the ReplicaSet; true if
/// they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    if !replicas_annotations_need_update(rs, desired, max) {
        return false;
    }
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS_ANNOTATION.into(), max.to_string());
    true
}

/// The old ReplicaSets beyond `limit` that may be deleted: of the live old
/// ReplicaSets, the lowest revisions past the limit, skipping any that still
/// want or have pods or whose latest spec the ReplicaSet controller has not
/// yet seen.
pub fn history_to_delete<'a>(old: &[&'a ReplicaSet], limit: i32) -> Vec<&'a ReplicaSet> {
    let mut alive: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = alive.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    alive.sort_by(|a, b| by_revision(a, b));
    alive
        .into_iter()
        .take(excess as usize)
        .filter(|rs| {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
            status_replicas(rs) == 0
                && spec_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed.unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::fixtures::{deployment, rs};

    fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    #[test]
    fn revisions_default_to_zero_and_unreadable_ones_are_skipped() {
        let mut bad = rs("bad", 0, "v0", 0, 0);
        bad.metadata
            .annotations
            .get_or_insert_default()
            .insert(REVISION_ANNOTATION.into(), "x".into());
        let sets = [rs("a", 0, "v1", 3, 0), rs("b", 0, "v2", 7, 1), bad];
        assert_eq!(max_revision(&sets), 7);
        assert_eq!(max_revision(&[]), 0);
        assert_eq!(revision(&rs("none", 0, "v1", 0, 0)), Ok(0));
    }

    #[test]
    fn a_created_replica_set_gets_the_revision_sizes_and_copied_annotations() {
        let mut d = deployment("web", 10, "v2");
        d.metadata.annotations = Some(BTreeMap::from([
            ("kubernetes.io/change-cause".into(), "image v2".into()),
            (LAST_APPLIED_ANNOTATION.into(), "{}".into()),
            (REVISION_ANNOTATION.into(), "1".into()),
        ]));
        let mut new = rs("web-new", 3, "v2", 0, 0);
        new.metadata.annotations = None;
        assert!(set_new_rs_annotations(&d, &mut new, 2, false, 10, 13, 2000));
        assert_eq!(annotation(&new, REVISION_ANNOTATION), Some("2"));
        assert_eq!(
            annotation(&new, "kubernetes.io/change-cause"),
            Some("image v2")
        );
        assert_eq!(annotation(&new, LAST_APPLIED_ANNOTATION), None);
        assert_eq!(annotation(&new, DESIRED_REPLICAS_ANNOTATION), Some("10"));
        assert_eq!(annotation(&new, MAX_REPLICAS_ANNOTATION), Some("13"));
        assert_eq!(annotation(&new, REVISION_HISTORY_ANNOTATION), None);
        // Nothing more to do the second time.
        assert!(!set_new_rs_annotations(&d, &mut new, 2, true, 10, 13, 2000));
    }

    #[test]
    fn a_replica_set_that_becomes_current_again_keeps_its_old_revisions() {
        let d = deployment("web", 3, "v1");
        let mut back = rs("web-v1", 0, "v1", 1, 0);
        assert!(set_new_rs_annotations(&d, &mut back, 3, true, 3, 4, 2000));
        assert_eq!(annotation(&back, REVISION_ANNOTATION), Some("3"));
        assert_eq!(annotation(&back, REVISION_HISTORY_ANNOTATION), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut back, 5, true, 3, 4, 2000));
        assert_eq!(annotation(&back, REVISION_ANNOTATION), Some("5"));
        assert_eq!(annotation(&back, REVISION_HISTORY_ANNOTATION), Some("1,3"));
        // An existing ReplicaSet's sizes are left to scaling.
        assert_eq!(annotation(&back, DESIRED_REPLICAS_ANNOTATION), None);
        // A revision never goes down.
        assert!(!set_new_rs_annotations(&d, &mut back, 4, true, 3, 4, 2000));
        assert_eq!(annotation(&back, REVISION_ANNOTATION), Some("5"));
    }

    #[test]
    fn the_revision_history_drops_its_oldest_entries_to_fit() {
        assert_eq!(append_history("", "1", 5).as_deref(), Some("1"));
        assert_eq!(append_history("1,3", "5", 5).as_deref(), Some("1,3,5"));
        assert_eq!(append_history("1,3", "15", 5).as_deref(), Some("3,15"));
        assert_eq!(append_history("1", "123456", 5), None);
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_revision_first() {
        let mut sets: Vec<ReplicaSet> = (1..=5)
            .map(|r| rs(&format!("web-{r}"), 0, &format!("v{r}"), r, r))
            .collect();
        // Revision 2 still has a pod; revision 3 is being deleted already.
        sets[1].status.get_or_insert_default().replicas = 1;
        sets[2].metadata.deletion_timestamp = sets[2].metadata.creation_timestamp.clone();
        let refs: Vec<&ReplicaSet> = sets.iter().collect();
        let names = |v: Vec<&ReplicaSet>| -> Vec<String> {
            v.iter()
                .map(|rs| rs.metadata.name.clone().unwrap())
                .collect()
        };
        // Four live old ReplicaSets, limit 1: the three lowest revisions are
        // candidates, and revision 2 is kept for its pod.
        assert_eq!(names(history_to_delete(&refs, 1)), ["web-1", "web-4"]);
        assert_eq!(
            names(history_to_delete(&refs, 0)),
            ["web-1", "web-4", "web-5"]
        );
        assert!(history_to_delete(&refs, 10).is_empty());
    }
}
