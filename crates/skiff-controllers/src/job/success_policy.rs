//! `spec.successPolicy`: when an Indexed Job has succeeded before every
//! index did.
//!
//! A leader/worker Job, say, is done once its leader (index 0) succeeded,
//! whatever the workers do. Each rule names `succeededIndexes` (in the
//! `completedIndexes` form, `"0-2,5"`), a `succeededCount`, or both:
//!
//! - indexes only: every listed index succeeded;
//! - count only: at least that many indexes succeeded;
//! - both: at least `succeededCount` of the listed indexes succeeded.
//!
//! The first rule met wins; the Job then records `SuccessCriteriaMet` with
//! reason `SuccessPolicy`, stops its remaining pods and ends `Complete`. A
//! rule whose indexes all lie at or above `completions` can never be met and
//! is skipped, as upstream.

use k8s_openapi::api::batch::v1::SuccessPolicy;

use super::indexes::Indexes;

/// The condition message naming the first rule that `succeeded` meets, if
/// any does.
pub fn match_success_policy(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &Indexes,
) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    let met = policy.rules.iter().position(|rule| {
        match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(text), count) => {
                let required = Indexes::parse(text, completions);
                if required.is_empty() {
                    return false;
                }
                let done = required.common(succeeded);
                done == required.total() || count.is_some_and(|c| done >= c)
            }
            (None, Some(count)) => succeeded.total() >= count,
            (None, None) => false,
        }
    })?;
    Some(format!("Matched rules at index {met}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::SuccessPolicyRule;

    fn rule(indexes: Option<&str>, count: Option<i32>) -> SuccessPolicyRule {
        SuccessPolicyRule {
            succeeded_indexes: indexes.map(Into::into),
            succeeded_count: count,
        }
    }

    fn check(rules: Vec<SuccessPolicyRule>, succeeded: &str) -> Option<String> {
        let policy = SuccessPolicy { rules };
        match_success_policy(Some(&policy), 10, &Indexes::parse(succeeded, 10))
    }

    #[test]
    fn listed_indexes_must_all_succeed() {
        let rules = || vec![rule(Some("0,2-4"), None)];
        assert_eq!(check(rules(), "0-3"), None);
        assert_eq!(
            check(rules(), "0,2-5"),
            Some("Matched rules at index 0".into())
        );
    }

    #[test]
    fn a_count_alone_counts_every_succeeded_index() {
        let rules = || vec![rule(None, Some(3))];
        assert_eq!(check(rules(), "1,7"), None);
        assert_eq!(
            check(rules(), "1,7,9"),
            Some("Matched rules at index 0".into())
        );
    }

    #[test]
    fn indexes_with_a_count_need_that_many_of_the_listed_indexes() {
        let rules = || vec![rule(Some("0-4"), Some(2))];
        assert_eq!(check(rules(), "3,5-9"), None, "only 3 is listed");
        assert_eq!(
            check(rules(), "3,4"),
            Some("Matched rules at index 0".into())
        );
    }

    #[test]
    fn the_first_rule_met_is_named_and_unreachable_rules_are_skipped() {
        let rules = vec![
            rule(Some("12-15"), None),
            rule(Some("0"), None),
            rule(None, Some(1)),
        ];
        assert_eq!(check(rules, "0"), Some("Matched rules at index 1".into()));
        assert_eq!(check(vec![rule(Some("12-15"), None)], "0-9"), None);
    }

    #[test]
    fn nothing_is_met_without_a_policy_or_a_succeeded_index() {
        assert_eq!(check(vec![rule(None, Some(0))], ""), None);
        assert_eq!(
            match_success_policy(None, 3, &Indexes::parse("0-2", 3)),
            None
        );
    }
}
