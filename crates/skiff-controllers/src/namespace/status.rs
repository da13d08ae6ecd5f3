//! The pure part of emptying a namespace: what one type's deletion left,
//! the status conditions upstream reports while a namespace terminates, and
//! whether to finalize, wait or retry.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// The `spec.finalizers` entry this controller owns.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// The phase of a namespace being deleted.
pub const TERMINATING: &str = "Terminating";
/// How long content with finalizers is given before looking again (s).
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;

/// True if the namespace still waits for this controller.
pub fn waits_for_content_removal(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        && namespace
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_deref())
            .is_some_and(|f| f.iter().any(|x| x == KUBERNETES_FINALIZER))
}

/// What one type's deletion left in the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remaining {
    /// The type, as `plural.group`.
    pub resource: String,
    /// Objects still listed.
    pub count: usize,
    /// How many of them carry each finalizer.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds until it is worth looking again.
    pub estimate: i64,
}

/// What is left of `resource` in `namespace` after its deletion: `items`
/// still listed, and `grace` the seconds graceful termination may still
/// take (pods). Objects left without a reason (no grace, no finalizer)
/// are an error as well, as upstream has it.
pub fn remaining(
    resource: &str,
    namespace: &str,
    items: &[ObjectMeta],
    grace: i64,
) -> (Remaining, Option<String>) {
    let mut left = Remaining {
        resource: resource.to_string(),
        count: items.len(),
        ..Remaining::default()
    };
    if items.is_empty() {
        return (left, None);
    }
    for finalizer in items.iter().flat_map(|m| m.finalizers.iter().flatten()) {
        *left.finalizers.entry(finalizer.clone()).or_default() += 1;
    }
    if grace > 0 {
        left.estimate = grace;
        return (left, None);
    }
    if !left.finalizers.is_empty() {
        left.estimate = FINALIZER_ESTIMATE_SECONDS;
        return (left, None);
    }
    let error =
        format!("unexpected items still remain in namespace: {namespace} for gvr: {resource}");
    (left, Some(error))
}

/// How long the namespace's pods may still take to terminate: the longest
/// `terminationGracePeriodSeconds` of its pods that are not finished, or 0
/// once that long has passed since the namespace's deletion.
pub fn pod_grace_estimate(pods: &[Pod], deleted_at: Timestamp, now: Timestamp) -> i64 {
    let longest = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .max()
        .unwrap_or(0);
    let elapsed = now.duration_since(deleted_at).as_secs();
    if elapsed >= longest { 0 } else { longest }
}

/// Everything one attempt at emptying a namespace found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentReport {
    /// Why discovery failed, if it did.
    pub discovery_error: Option<String>,
    /// Why deleting some types' content failed.
    pub delete_errors: Vec<String>,
    /// What each type left.
    pub remaining: Vec<Remaining>,
}

impl ContentReport {
    /// Seconds until it is worth looking again.
    pub fn estimate(&self) -> i64 {
        self.remaining.iter().map(|r| r.estimate).max().unwrap_or(0)
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Everything is gone: remove the `kubernetes` finalizer.
    Finalize,
    /// Content remains that is going away: look again after this long.
    Wait(Duration),
    /// Something failed: retry with backoff.
    Retry(Vec<String>),
}

/// Upstream's order: failures retry, remaining content waits half its
/// estimate (plus a second), and an empty namespace is finalized.
pub fn next(report: &ContentReport) -> Next {
    let errors: Vec<String> = report
        .discovery_error
        .iter()
        .chain(&report.delete_errors)
        .cloned()
        .collect();
    if !errors.is_empty() {
        return Next::Retry(errors);
    }
    match report.estimate() {
        0 => Next::Finalize,
        estimate => Next::Wait(Duration::from_secs(estimate.unsigned_abs() / 2 + 1)),
    }
}

const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The condition types the controller maintains, in upstream's order, with
/// the reason and message each has when all is well.
const CONDITIONS: [(&str, &str, &str); 5] = [
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        GROUP_VERSION_PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// The failing `(type, reason, message)`s of a report.
fn failures(report: &ContentReport) -> Vec<(&'static str, &'static str, String)> {
    let mut failing = Vec::new();
    if let Some(error) = &report.discovery_error {
        failing.push((DISCOVERY_FAILURE, "DiscoveryFailed", error.clone()));
    }
    if !report.delete_errors.is_empty() {
        let mut errors = report.delete_errors.clone();
        errors.sort();
        failing.push((
            CONTENT_FAILURE,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                errors.len(),
                errors.join(", ")
            ),
        ));
    }
    let mut resources: Vec<String> = report
        .remaining
        .iter()
        .filter(|r| r.count > 0)
        .map(|r| format!("{} has {} resource instances", r.resource, r.count))
        .collect();
    if !resources.is_empty() {
        resources.sort();
        failing.push((
            CONTENT_REMAINING,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", resources.join(", ")),
        ));
    }
    let mut finalizers: BTreeMap<&str, usize> = BTreeMap::new();
    for (finalizer, count) in report.remaining.iter().flat_map(|r| &r.finalizers) {
        *finalizers.entry(finalizer).or_default() += count;
    }
    if !finalizers.is_empty() {
        let mut listed: Vec<String> = finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        listed.sort();
        failing.push((
            FINALIZERS_REMAINING,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                listed.join(", ")
            ),
        ));
    }
    failing
}

/// The status after `report`: phase Terminating, and each maintained
/// condition True with the failure's reason and message, or False with its
/// all-is-well ones. A condition's `lastTransitionTime` changes only when
/// its status does; other conditions are kept.
pub fn status(
    previous: Option<&NamespaceStatus>,
    report: &ContentReport,
    now: Timestamp,
) -> NamespaceStatus {
    let failing = failures(report);
    let mut conditions = previous
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for (kind, ok_reason, ok_message) in CONDITIONS {
        let (status, reason, message) = match failing.iter().find(|(t, _, _)| *t == kind) {
            Some((_, reason, message)) => ("True", *reason, message.clone()),
            None => ("False", ok_reason, ok_message.to_string()),
        };
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(existing) => {
                if existing.status != status {
                    existing.last_transition_time = Some(Time(now));
                }
                existing.status = status.to_string();
                existing.reason = Some(reason.to_string());
                existing.message = Some(message);
            }
            None => conditions.push(NamespaceCondition {
                type_: kind.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    NamespaceStatus {
        phase: Some(TERMINATING.to_string()),
        conditions: Some(conditions),
    }
}
