//! `spec.podFailurePolicy`: what a failed pod means for its Job.
//!
//! Without a policy every failed pod counts against `backoffLimit`. A policy
//! is a list of rules, each matching failed pods by the exit code of a
//! terminated container (`onExitCodes`) or by a pod condition
//! (`onPodConditions`, typically `DisruptionTarget` set by eviction or
//! preemption). The first rule that matches decides, as upstream:
//!
//! | action      | counts against `backoffLimit` | effect                              |
//! |-------------|-------------------------------|-------------------------------------|
//! | `FailJob`   | yes                           | the whole Job fails at once         |
//! | `FailIndex` | yes                           | the pod's index fails (per index)   |
//! | `Ignore`    | no                            | the pod is replaced, nothing counts |
//! | `Count`     | yes                           | as if no rule matched               |
//!
//! Only exit codes other than 0 match, init containers are looked at after
//! the regular containers, and a rule with an action this controller does
//! not know is skipped. Rules are only ever evaluated on failed pods; the
//! caller decides which pods those are.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use kube::ResourceExt;

/// The decision of the first matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Fail the Job, with upstream's message naming the pod and the rule.
    FailJob {
        /// The Job's `FailureTarget` / `Failed` condition message.
        message: String,
    },
    /// Fail the pod's index (Jobs with `backoffLimitPerIndex`).
    FailIndex,
    /// Do not count the failure; replace the pod.
    Ignore,
    /// Count the failure as usual.
    Count,
}

impl PolicyAction {
    /// False only for `Ignore`: the failure does not count against
    /// `backoffLimit` (nor `backoffLimitPerIndex`).
    pub fn counts(&self) -> bool {
        *self != Self::Ignore
    }
}

/// The action of the first rule of `policy` that matches the failed `pod`,
/// if any does.
pub fn match_pod_failure_policy(
    policy: Option<&PodFailurePolicy>,
    pod: &Pod,
) -> Option<PolicyAction> {
    let policy = policy?;
    let status = pod.status.as_ref()?;
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(on_exit_codes) = &rule.on_exit_codes {
            let containers = status.container_statuses.iter().flatten();
            let init = status.init_container_statuses.iter().flatten();
            let Some((container, code)) = containers
                .chain(init)
                .find_map(|c| exit_code_matching(c, on_exit_codes))
            else {
                continue;
            };
            Matched::ExitCode { container, code }
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let Some(condition) = status
                .conditions
                .iter()
                .flatten()
                .find(|c| patterns.iter().any(|p| condition_matches(c, p)))
            else {
                continue;
            };
            Matched::Condition(&condition.type_)
        } else {
            continue;
        };
        match rule.action.as_str() {
            "FailJob" => {
                let message = matched.fail_job_message(pod, index);
                return Some(PolicyAction::FailJob { message });
            }
            "FailIndex" => return Some(PolicyAction::FailIndex),
            "Ignore" => return Some(PolicyAction::Ignore),
            "Count" => return Some(PolicyAction::Count),
            _ => {}
        }
    }
    None
}

/// True unless the failed `pod` matches an `Ignore` rule.
pub fn failure_counts(policy: Option<&PodFailurePolicy>, pod: &Pod) -> bool {
    match_pod_failure_policy(policy, pod).is_none_or(|a| a.counts())
}

/// What a rule matched on.
enum Matched<'a> {
    ExitCode { container: &'a str, code: i32 },
    Condition(&'a str),
}

impl Matched<'_> {
    /// Upstream's message for a `FailJob` match of rule number `index`.
    fn fail_job_message(&self, pod: &Pod, index: usize) -> String {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        match self {
            Self::ExitCode { container, code } => format!(
                "Container {container} for pod {namespace}/{name} failed with exit code {code} \
                 matching FailJob rule at index {index}"
            ),
            Self::Condition(type_) => format!(
                "Pod {namespace}/{name} has condition {type_} matching FailJob rule at index {index}"
            ),
        }
    }
}

/// The container's name and non-zero exit code, if it terminated with one
/// the requirement matches.
fn exit_code_matching<'a>(
    container: &'a ContainerStatus,
    requirement: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(&'a str, i32)> {
    let terminated = container.state.as_ref()?.terminated.as_ref()?;
    if requirement
        .container_name
        .as_deref()
        .is_some_and(|name| name != container.name)
    {
        return None;
    }
    let code = terminated.exit_code;
    if code == 0 {
        return None;
    }
    let listed = requirement.values.contains(&code);
    let matches = match requirement.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    };
    matches.then_some((container.name.as_str(), code))
}

/// A pattern's status defaults to `True`, as the API server defaults it.
fn condition_matches(
    condition: &PodCondition,
    pattern: &PodFailurePolicyOnPodConditionsPattern,
) -> bool {
    condition.type_ == pattern.type_
        && condition.status == pattern.status.as_deref().unwrap_or("True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::PodFailurePolicyRule;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn terminated(name: &str, exit_code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn running(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState::default()),
            ..ContainerStatus::default()
        }
    }

    fn failed_pod(containers: Vec<ContainerStatus>, init: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("pi-abcde".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(containers),
                init_container_statuses: (!init.is_empty()).then_some(init),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn with_condition(mut pod: Pod, type_: &str, status: &str) -> Pod {
        pod.status
            .as_mut()
            .unwrap()
            .conditions
            .get_or_insert_with(Vec::new)
            .push(PodCondition {
                type_: type_.into(),
                status: status.into(),
                ..PodCondition::default()
            });
        pod
    }

    fn on_exit_codes(
        action: &str,
        container: Option<&str>,
        operator: &str,
        values: &[i32],
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(Into::into),
                operator: operator.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    fn on_condition(action: &str, type_: &str, status: Option<&str>) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: type_.into(),
                status: status.map(Into::into),
            }]),
        }
    }

    fn policy(rules: Vec<PodFailurePolicyRule>) -> PodFailurePolicy {
        PodFailurePolicy { rules }
    }

    #[test]
    fn fail_job_on_an_exit_code_names_the_container_pod_and_rule() {
        let p = policy(vec![
            on_exit_codes("Ignore", None, "In", &[1]),
            on_exit_codes("FailJob", Some("main"), "In", &[42, 43]),
        ]);
        let pod = failed_pod(vec![terminated("side", 42), terminated("main", 42)], vec![]);
        assert_eq!(
            match_pod_failure_policy(Some(&p), &pod),
            Some(PolicyAction::FailJob {
                message: "Container main for pod ns/pi-abcde failed with exit code 42 \
                          matching FailJob rule at index 1"
                    .into()
            })
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let p = policy(vec![
            on_exit_codes("Count", None, "In", &[42]),
            on_exit_codes("FailJob", None, "NotIn", &[0]),
        ]);
        let pod = failed_pod(vec![terminated("main", 42)], vec![]);
        assert_eq!(
            match_pod_failure_policy(Some(&p), &pod),
            Some(PolicyAction::Count)
        );
        let other = failed_pod(vec![terminated("main", 7)], vec![]);
        assert!(matches!(
            match_pod_failure_policy(Some(&p), &other),
            Some(PolicyAction::FailJob { .. })
        ));
    }

    #[test]
    fn exit_code_zero_and_running_containers_never_match() {
        let p = policy(vec![on_exit_codes("FailJob", None, "NotIn", &[1])]);
        let pod = failed_pod(vec![terminated("a", 0), running("b")], vec![]);
        assert_eq!(match_pod_failure_policy(Some(&p), &pod), None);
        assert!(failure_counts(Some(&p), &pod));
    }

    #[test]
    fn a_container_name_restricts_the_match_and_init_containers_are_checked_last() {
        let p = policy(vec![on_exit_codes("Ignore", Some("setup"), "In", &[3])]);
        let main_only = failed_pod(vec![terminated("main", 3)], vec![]);
        assert_eq!(match_pod_failure_policy(Some(&p), &main_only), None);
        let init = failed_pod(vec![running("main")], vec![terminated("setup", 3)]);
        assert_eq!(
            match_pod_failure_policy(Some(&p), &init),
            Some(PolicyAction::Ignore)
        );
        assert!(!failure_counts(Some(&p), &init));

        let any = policy(vec![on_exit_codes("FailJob", None, "In", &[3, 4])]);
        let both = failed_pod(vec![terminated("main", 4)], vec![terminated("setup", 3)]);
        let Some(PolicyAction::FailJob { message }) = match_pod_failure_policy(Some(&any), &both)
        else {
            panic!("expected FailJob");
        };
        assert!(message.starts_with("Container main for pod ns/pi-abcde failed with exit code 4"));
    }

    #[test]
    fn pod_conditions_match_on_type_and_status_which_defaults_to_true() {
        let p = policy(vec![
            on_condition("Ignore", "DisruptionTarget", None),
            on_condition("FailJob", "ConfigIssue", Some("False")),
        ]);
        let evicted = with_condition(
            failed_pod(vec![terminated("main", 137)], vec![]),
            "DisruptionTarget",
            "True",
        );
        assert_eq!(
            match_pod_failure_policy(Some(&p), &evicted),
            Some(PolicyAction::Ignore)
        );
        let not_evicted = with_condition(
            failed_pod(vec![terminated("main", 137)], vec![]),
            "DisruptionTarget",
            "False",
        );
        assert_eq!(match_pod_failure_policy(Some(&p), &not_evicted), None);
        let config = with_condition(failed_pod(vec![], vec![]), "ConfigIssue", "False");
        assert_eq!(
            match_pod_failure_policy(Some(&p), &config),
            Some(PolicyAction::FailJob {
                message:
                    "Pod ns/pi-abcde has condition ConfigIssue matching FailJob rule at index 1"
                        .into()
            })
        );
    }

    #[test]
    fn a_rule_with_exit_codes_ignores_its_conditions_and_unknown_actions_are_skipped() {
        let mut both = on_exit_codes("FailJob", None, "In", &[9]);
        both.on_pod_conditions = Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".into(),
            status: None,
        }]);
        let p = policy(vec![
            both,
            on_exit_codes("Retry", None, "In", &[1]),
            on_exit_codes("FailIndex", None, "In", &[1]),
        ]);
        let evicted = with_condition(
            failed_pod(vec![terminated("main", 1)], vec![]),
            "DisruptionTarget",
            "True",
        );
        assert_eq!(
            match_pod_failure_policy(Some(&p), &evicted),
            Some(PolicyAction::FailIndex)
        );
        assert!(failure_counts(Some(&p), &evicted));
        assert_eq!(
            match_pod_failure_policy(None, &evicted),
            None,
            "no policy, no match"
        );
    }
}
