//! A Job's `podFailurePolicy` and `successPolicy`, as upstream validates them.
//!
//! A pod failure policy needs `restartPolicy: Never` (with `OnFailure` the
//! kubelet restarts failed containers in place, so no pod ever fails for a
//! rule to see) and pods that are only replaced once Failed. A success policy
//! names completion indexes, so it needs an Indexed Job. A pod condition
//! pattern without `status` means `True`, as upstream's defaulting would
//! have made it.

use std::collections::HashSet;

use serde_json::Value;

use super::super::field::{
    Path, arr_of, duplicate, get, has, int_of, invalid, invalid_each, non_negative, not_supported,
    required, str_of, too_long, too_many,
};
use super::super::names::qualified_name_errors;
use crate::registry::FieldError;

const MAX_RULES: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const MAX_CONDITION_PATTERNS: usize = 20;
const MAX_SUCCESS_RULES: usize = 20;
const MAX_SUCCEEDED_INDEXES_LENGTH: usize = 64 * 1024;
const ACTIONS: &[&str] = &["Count", "FailIndex", "FailJob", "Ignore"];
const OPERATORS: &[&str] = &["In", "NotIn"];
const CONDITION_STATUSES: &[&str] = &["False", "True", "Unknown"];

/// `Invalid value: <detail>`, for rules upstream reports without a value.
fn invalid_omitting_value(path: &Path, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: {detail}"),
    }
}

/// Go's `%q` of a list of strings: `["A" "B"]`.
fn quoted_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| Value::String((*v).to_string()).to_string())
        .collect();
    format!("[{}]", quoted.join(" "))
}

/// `spec.podFailurePolicy`, and what it asks of the rest of the spec.
pub(super) fn validate_pod_failure_policy(errs: &mut Vec<FieldError>, spec: &Value, sp: &Path) {
    if !has(spec, "podFailurePolicy") {
        return;
    }
    let pp = sp.child("podFailurePolicy");
    let rules = arr_of(get(spec, "podFailurePolicy"), "rules");
    let rules_path = pp.child("rules");
    if rules.len() > MAX_RULES {
        errs.push(too_many(&rules_path, rules.len(), MAX_RULES));
    }
    let pod_spec = get(get(spec, "template"), "spec");
    let containers: HashSet<&str> = arr_of(pod_spec, "containers")
        .iter()
        .chain(arr_of(pod_spec, "initContainers"))
        .map(|c| str_of(c, "name"))
        .collect();
    let per_index = has(spec, "backoffLimitPerIndex");
    for (i, rule) in rules.iter().enumerate() {
        validate_rule(errs, rule, &rules_path.index(i), &containers, per_index);
    }

    // Values that are not policies at all are reported with the field.
    let replacement = str_of(spec, "podReplacementPolicy");
    if replacement == "TerminatingOrFailed" {
        errs.push(not_supported(
            &sp.child("podReplacementPolicy"),
            replacement,
            &["Failed"],
        ));
    }
    // Other values than Never and OnFailure are reported with the template.
    if str_of(pod_spec, "restartPolicy") == "OnFailure" {
        errs.push(invalid(
            &sp.child("template").child("spec").child("restartPolicy"),
            "OnFailure",
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

fn validate_rule(
    errs: &mut Vec<FieldError>,
    rule: &Value,
    rp: &Path,
    containers: &HashSet<&str>,
    per_index: bool,
) {
    let action_path = rp.child("action");
    match str_of(rule, "action") {
        "" => errs.push(required(
            &action_path,
            &format!("valid values: {}", quoted_list(ACTIONS)),
        )),
        "FailIndex" if !per_index => errs.push(invalid(
            &action_path,
            "FailIndex",
            "requires the backoffLimitPerIndex to be set",
        )),
        a if !ACTIONS.contains(&a) => errs.push(not_supported(&action_path, a, ACTIONS)),
        _ => {}
    }
    let on_exit_codes = has(rule, "onExitCodes");
    let on_conditions = !arr_of(rule, "onPodConditions").is_empty();
    if on_exit_codes {
        validate_exit_codes(
            errs,
            get(rule, "onExitCodes"),
            &rp.child("onExitCodes"),
            containers,
        );
    }
    if on_conditions {
        validate_conditions(
            errs,
            arr_of(rule, "onPodConditions"),
            &rp.child("onPodConditions"),
        );
    }
    if on_exit_codes && on_conditions {
        errs.push(invalid_omitting_value(
            rp,
            "specifying both OnExitCodes and OnPodConditions is not supported",
        ));
    }
    if !on_exit_codes && !on_conditions {
        errs.push(invalid_omitting_value(
            rp,
            "specifying one of OnExitCodes and OnPodConditions is required",
        ));
    }
}

fn validate_exit_codes(
    errs: &mut Vec<FieldError>,
    requirement: &Value,
    path: &Path,
    containers: &HashSet<&str>,
) {
    let operator = str_of(requirement, "operator");
    let operator_path = path.child("operator");
    if operator.is_empty() {
        errs.push(required(
            &operator_path,
            &format!("valid values: {}", quoted_list(OPERATORS)),
        ));
    } else if !OPERATORS.contains(&operator) {
        errs.push(not_supported(&operator_path, operator, OPERATORS));
    }
    if let Some(name) = requirement.get("containerName").and_then(Value::as_str)
        && !containers.contains(name)
    {
        errs.push(invalid(
            &path.child("containerName"),
            name,
            "must be one of the container or initContainer names in the pod template",
        ));
    }
    let values_path = path.child("values");
    let values = get(requirement, "values");
    let codes: Vec<i64> = arr_of(requirement, "values")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    if codes.is_empty() {
        errs.push(invalid(
            &values_path,
            &Value::Array(Vec::new()),
            "at least one value is required",
        ));
    } else if codes.len() > MAX_EXIT_CODES {
        errs.push(too_many(&values_path, codes.len(), MAX_EXIT_CODES));
    }
    let mut seen = HashSet::new();
    for (j, &code) in codes.iter().enumerate() {
        let value_path = values_path.index(j);
        if operator == "In" && code == 0 {
            errs.push(invalid(
                &value_path,
                code,
                "must not be 0 for the In operator",
            ));
        }
        if !seen.insert(code) {
            errs.push(duplicate(&value_path, code));
        }
    }
    if codes.windows(2).any(|pair| pair[0] > pair[1]) {
        errs.push(invalid(&values_path, values, "must be ordered"));
    }
}

fn validate_conditions(errs: &mut Vec<FieldError>, patterns: &[Value], path: &Path) {
    if patterns.len() > MAX_CONDITION_PATTERNS {
        errs.push(too_many(path, patterns.len(), MAX_CONDITION_PATTERNS));
    }
    for (j, pattern) in patterns.iter().enumerate() {
        let pattern_path = path.index(j);
        let type_ = str_of(pattern, "type");
        invalid_each(
            errs,
            &pattern_path.child("type"),
            type_,
            qualified_name_errors(type_),
        );
        let status = str_of(pattern, "status");
        if !status.is_empty() && !CONDITION_STATUSES.contains(&status) {
            errs.push(not_supported(
                &pattern_path.child("status"),
                status,
                CONDITION_STATUSES,
            ));
        }
    }
}

/// `spec.successPolicy`.
pub(super) fn validate_success_policy(errs: &mut Vec<FieldError>, spec: &Value, sp: &Path) {
    if !has(spec, "successPolicy") {
        return;
    }
    let policy = get(spec, "successPolicy");
    let pp = sp.child("successPolicy");
    if str_of(spec, "completionMode") != "Indexed" {
        errs.push(invalid(&pp, policy, "requires indexed completion mode"));
        return;
    }
    let rules = arr_of(policy, "rules");
    let rules_path = pp.child("rules");
    if rules.is_empty() {
        errs.push(required(
            &rules_path,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_SUCCESS_RULES {
        errs.push(too_many(&rules_path, rules.len(), MAX_SUCCESS_RULES));
    }
    // Indexed Jobs without completions are reported with completions.
    let completions = int_of(spec, "completions");
    for (i, rule) in rules.iter().enumerate() {
        let rp = rules_path.index(i);
        let indexes = rule.get("succeededIndexes").and_then(Value::as_str);
        if indexes.is_none() && !has(rule, "succeededCount") {
            errs.push(required(
                &rp,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut listed = 0;
        if let Some(text) = indexes {
            let path = rp.child("succeededIndexes");
            if text.len() > MAX_SUCCEEDED_INDEXES_LENGTH {
                errs.push(too_long(&path, MAX_SUCCEEDED_INDEXES_LENGTH));
            }
            if let Some(completions) = completions {
                match count_indexes(text, completions) {
                    Ok(total) => listed = total,
                    Err(e) => errs.push(invalid(
                        &path,
                        text,
                        &format!("error parsing succeededIndexes: {e}"),
                    )),
                }
            }
        }
        non_negative(errs, rule, "succeededCount", &rp);
        if let (Some(count), Some(completions)) = (int_of(rule, "succeededCount"), completions) {
            let path = rp.child("succeededCount");
            if count > completions {
                errs.push(invalid(
                    &path,
                    count,
                    &format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if indexes.is_some() && count > listed {
                errs.push(invalid(
                    &path,
                    count,
                    &format!(
                        "must be less than or equal to {listed} (the number of indexes in the specified succeededIndexes field)"
                    ),
                ));
            }
        }
    }
}

/// How many indexes `text` (`"0-2,5"`) lists, if it is well formed: ordered,
/// non-overlapping intervals of indexes below `completions`.
fn count_indexes(text: &str, completions: i64) -> Result<i64, String> {
    if text.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for interval in text.split(',') {
        let (first, end) = parse_interval(interval, completions)?;
        if let Some(previous) = last
            && previous >= first
        {
            return Err(format!(
                "non-increasing order, previous: {previous}, current: {first}"
            ));
        }
        total += end - first + 1;
        last = Some(end);
    }
    Ok(total)
}

fn parse_interval(interval: &str, completions: i64) -> Result<(i64, i64), String> {
    let limits: Vec<&str> = interval.split('-').collect();
    if limits.len() > 2 {
        return Err(format!(
            "the fragment {} violates the requirement that an index interval can have at most two parts separated by '-'",
            Value::String(interval.to_string())
        ));
    }
    let index = |text: &str| -> Result<i64, String> {
        let quoted = Value::String(text.to_string());
        let value: i64 = text
            .parse()
            .map_err(|_| format!("cannot convert string to integer for index: {quoted}"))?;
        if value >= completions {
            return Err(format!("too large index: {quoted}"));
        }
        Ok(value)
    };
    let first = index(limits[0])?;
    match limits.get(1) {
        Some(text) => {
            let end = index(text)?;
            if first >= end {
                return Err(format!(
                    "non-increasing order, previous: {first}, current: {end}"
                ));
            }
            Ok((first, end))
        }
        None => Ok((first, first)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate_job;
    use super::*;
    use crate::validation::field::testing::run;
    use serde_json::json;

    fn job(extra: Value) -> Value {
        let mut j = json!({"metadata": {"name": "pi"}, "spec": {
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "spec": {
                    "containers": [{"name": "main", "image": "busybox"}],
                    "initContainers": [{"name": "setup", "image": "busybox"}],
                    "restartPolicy": "Never"
                }
            },
            "parallelism": 2, "completions": 4, "backoffLimit": 6
        }});
        for (k, v) in extra.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        j
    }

    fn failure_policy(rules: Value) -> Value {
        job(json!({"podFailurePolicy": {"rules": rules}, "podReplacementPolicy": "Failed"}))
    }

    #[test]
    fn well_formed_pod_failure_policies_pass() {
        let j = failure_policy(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1, 42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [0]}},
            {"action": "Count", "onPodConditions": [{"type": "example.com/Custom", "status": "False"}]}
        ]));
        assert!(run(validate_job, &j, None).is_empty());
    }

    #[test]
    fn pod_failure_policy_rules_are_checked_like_upstream() {
        let j = failure_policy(json!([
            {"action": "Retry", "onExitCodes": {"containerName": "other", "operator": "Between", "values": [3, 0, 3]}},
            {"action": "", "onExitCodes": {"operator": "In", "values": [0]}, "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]},
            {"action": "FailIndex"},
            {"action": "Ignore", "onExitCodes": {"operator": "", "values": []}}
        ]));
        assert_eq!(
            run(validate_job, &j, None),
            [
                "spec.podFailurePolicy.rules[0].action: Unsupported value: \"Retry\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                "spec.podFailurePolicy.rules[0].onExitCodes.operator: Unsupported value: \"Between\": supported values: \"In\", \"NotIn\"",
                "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"other\": must be one of the container or initContainer names in the pod template",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: [3,0,3]: must be ordered",
                "spec.podFailurePolicy.rules[1].action: Required value: valid values: [\"Count\" \"FailIndex\" \"FailJob\" \"Ignore\"]",
                "spec.podFailurePolicy.rules[1].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[1].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
                "spec.podFailurePolicy.rules[1]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
                "spec.podFailurePolicy.rules[2].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
                "spec.podFailurePolicy.rules[2]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
                "spec.podFailurePolicy.rules[3].onExitCodes.operator: Required value: valid values: [\"In\" \"NotIn\"]",
                "spec.podFailurePolicy.rules[3].onExitCodes.values: Invalid value: []: at least one value is required",
            ]
        );
    }

    #[test]
    fn a_pod_failure_policy_needs_restart_never_and_failed_replacement() {
        let mut j = failure_policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        ]));
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        j["spec"]["podReplacementPolicy"] = json!("TerminatingOrFailed");
        assert_eq!(
            run(validate_job, &j, None),
            [
                "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
                "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
            ]
        );
        let mut many = failure_policy(json!([]));
        many["spec"]["podFailurePolicy"]["rules"] = Value::Array(vec![
            json!({"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [0]}});
            21
        ]);
        assert_eq!(
            run(validate_job, &many, None),
            ["spec.podFailurePolicy.rules: Too many: 21: must have at most 20 items"]
        );
    }

    #[test]
    fn fail_index_is_allowed_with_a_backoff_limit_per_index() {
        let mut j = failure_policy(json!([
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}
        ]));
        j["spec"]["completionMode"] = json!("Indexed");
        j["spec"]["backoffLimitPerIndex"] = json!(1);
        assert!(run(validate_job, &j, None).is_empty());
    }

    fn success_policy(rules: Value) -> Value {
        job(json!({"completionMode": "Indexed", "successPolicy": {"rules": rules}}))
    }

    #[test]
    fn well_formed_success_policies_pass() {
        let j = success_policy(json!([
            {"succeededIndexes": "0"},
            {"succeededIndexes": "0,2-3", "succeededCount": 2},
            {"succeededCount": 4}
        ]));
        assert!(run(validate_job, &j, None).is_empty());
    }

    #[test]
    fn success_policy_rules_are_checked_like_upstream() {
        let j = success_policy(json!([
            {},
            {"succeededIndexes": "0-2,1"},
            {"succeededIndexes": "1-4"},
            {"succeededIndexes": "0,2", "succeededCount": 3},
            {"succeededCount": 5},
            {"succeededIndexes": "1-2-3"},
            {"succeededIndexes": "x"},
            {"succeededCount": -1}
        ]));
        assert_eq!(
            run(validate_job, &j, None),
            [
                "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
                "spec.successPolicy.rules[1].succeededIndexes: Invalid value: \"0-2,1\": error parsing succeededIndexes: non-increasing order, previous: 2, current: 1",
                "spec.successPolicy.rules[2].succeededIndexes: Invalid value: \"1-4\": error parsing succeededIndexes: too large index: \"4\"",
                "spec.successPolicy.rules[3].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                "spec.successPolicy.rules[4].succeededCount: Invalid value: 5: must be less than or equal to 4 (the number of specified completions)",
                "spec.successPolicy.rules[5].succeededIndexes: Invalid value: \"1-2-3\": error parsing succeededIndexes: the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts separated by '-'",
                "spec.successPolicy.rules[6].succeededIndexes: Invalid value: \"x\": error parsing succeededIndexes: cannot convert string to integer for index: \"x\"",
                "spec.successPolicy.rules[7].succeededCount: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let empty = success_policy(json!([]));
        assert_eq!(
            run(validate_job, &empty, None),
            [
                "spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified"
            ]
        );
    }

    #[test]
    fn a_success_policy_needs_an_indexed_job() {
        let j = job(json!({"successPolicy": {"rules": [{"succeededCount": 1}]}}));
        assert_eq!(
            run(validate_job, &j, None),
            [
                "spec.successPolicy: Invalid value: {\"rules\":[{\"succeededCount\":1}]}: requires indexed completion mode"
            ]
        );
    }
}
