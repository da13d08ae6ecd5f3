//! `batch/v1` Job and CronJob.

use serde_json::Value;

use super::apps::{validate_selector_for_template, validate_selector_matches_template};
use super::field::{
    Path, bool_of, get, has, immutable, int_of, invalid, non_negative, not_supported, one_of,
    required, str_of,
};
use super::meta::validate_label_selector;
use super::pod::validate_pod_template;
use crate::registry::FieldError;

mod policies;

/// Upper bound on completions and parallelism of Indexed jobs.
const MAX_INDEXED_COMPLETIONS: i64 = 100_000;
/// CronJob names get an 11-character suffix for their Jobs, which must stay ≤ 63.
const MAX_CRONJOB_NAME: usize = 52;

/// Rules shared by a Job's spec and a CronJob's job template spec.
fn validate_job_spec_common(errs: &mut Vec<FieldError>, spec: &Value, sp: &Path) {
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(errs, spec, key, sp);
    }
    match str_of(spec, "completionMode") {
        "" | "NonIndexed" => {}
        "Indexed" => {
            match int_of(spec, "completions") {
                None => errs.push(required(
                    &sp.child("completions"),
                    "when completion mode is Indexed",
                )),
                Some(c) if c > MAX_INDEXED_COMPLETIONS && !has(spec, "backoffLimitPerIndex") => {
                    errs.push(invalid(
                        &sp.child("completions"),
                        c,
                        "must be less than or equal to 100000 when completion mode is Indexed",
                    ));
                }
                Some(_) => {}
            }
            if let Some(p) = int_of(spec, "parallelism")
                && p > MAX_INDEXED_COMPLETIONS
            {
                errs.push(invalid(
                    &sp.child("parallelism"),
                    p,
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
        other => errs.push(not_supported(
            &sp.child("completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    one_of(
        errs,
        spec,
        "podReplacementPolicy",
        sp,
        &["TerminatingOrFailed", "Failed"],
    );
    policies::validate_pod_failure_policy(errs, spec, sp);
    policies::validate_success_policy(errs, spec, sp);

    let template = get(spec, "template");
    let tp = sp.child("template");
    validate_pod_template(errs, template, &tp);
    let restart = str_of(get(template, "spec"), "restartPolicy");
    if restart != "OnFailure" && restart != "Never" {
        let p = tp.child("spec").child("restartPolicy");
        if restart.is_empty() {
            errs.push(required(&p, "valid values: \"OnFailure\", \"Never\""));
        } else {
            errs.push(not_supported(&p, restart, &["OnFailure", "Never"]));
        }
    }
}

/// `Job`. The selector must be present: the API server generates it (from the
/// object's uid) before validation unless `manualSelector` is true.
pub(crate) fn validate_job(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    validate_job_spec_common(errs, spec, &sp);
    validate_selector_for_template(errs, spec, &sp, None);
    if let Some(old) = old {
        let old_spec = get(old, "spec");
        immutable(
            errs,
            &sp.child("selector"),
            get(spec, "selector"),
            get(old_spec, "selector"),
        );
        immutable(
            errs,
            &sp.child("completionMode"),
            get(spec, "completionMode"),
            get(old_spec, "completionMode"),
        );
        // Indexed jobs may scale completions together with parallelism.
        let elastic = str_of(spec, "completionMode") == "Indexed"
            && int_of(spec, "completions") == int_of(spec, "parallelism");
        if !elastic {
            immutable(
                errs,
                &sp.child("completions"),
                get(spec, "completions"),
                get(old_spec, "completions"),
            );
        }
        // A suspended job's template may still be adjusted before it starts.
        if !bool_of(old_spec, "suspend") {
            immutable(
                errs,
                &sp.child("template"),
                get(spec, "template"),
                get(old_spec, "template"),
            );
        }
    }
}

/// `CronJob`
pub(crate) fn validate_cron_job(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let name = str_of(get(obj, "metadata"), "name");
    if name.len() > MAX_CRONJOB_NAME {
        errs.push(invalid(
            &Path::new("metadata").child("name"),
            name,
            "must be no more than 52 characters",
        ));
    }
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    let schedule = str_of(spec, "schedule");
    if schedule.is_empty() {
        errs.push(required(&sp.child("schedule"), ""));
    } else if schedule.contains("TZ") {
        errs.push(invalid(
            &sp.child("schedule"),
            schedule,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    } else if let Err(e) = super::cron::parse(schedule) {
        errs.push(invalid(&sp.child("schedule"), schedule, &e));
    }
    if let Some(tz) = spec.get("timeZone").and_then(Value::as_str)
        && (tz.is_empty() || tz.contains(char::is_whitespace))
    {
        errs.push(invalid(&sp.child("timeZone"), tz, "unknown time zone"));
    }
    match str_of(spec, "concurrencyPolicy") {
        "" | "Allow" | "Forbid" | "Replace" => {}
        other => errs.push(not_supported(
            &sp.child("concurrencyPolicy"),
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(errs, spec, key, &sp);
    }
    let job_template = get(spec, "jobTemplate");
    let jp = sp.child("jobTemplate");
    let job_spec = get(job_template, "spec");
    let jsp = jp.child("spec");
    validate_job_spec_common(errs, job_spec, &jsp);
    if bool_of(job_spec, "manualSelector") {
        errs.push(not_supported(
            &jsp.child("manualSelector"),
            "true",
            &["nil", "false"],
        ));
    }
    let selector = get(job_spec, "selector");
    if !selector.is_null() {
        validate_label_selector(errs, selector, &jsp.child("selector"));
        validate_selector_matches_template(errs, selector, job_spec, &jsp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::field::testing::run;
    use serde_json::json;

    fn job() -> Value {
        json!({"metadata": {"name": "pi"}, "spec": {
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1", "job-name": "pi"}},
                "spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}
            },
            "parallelism": 1, "completions": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": false
        }})
    }

    #[test]
    fn job_rules() {
        assert!(run(validate_job, &job(), None).is_empty());
        let mut j = job();
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        j["spec"]["parallelism"] = json!(-1);
        assert_eq!(
            run(validate_job, &j, None),
            [
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ]
        );
        let mut j = job();
        j["spec"]["completionMode"] = json!("Indexed");
        j["spec"].as_object_mut().map(|s| s.remove("completions"));
        assert_eq!(
            run(validate_job, &j, None),
            ["spec.completions: Required value: when completion mode is Indexed"]
        );
    }

    #[test]
    fn job_update_rules() {
        let old = job();
        let mut j = job();
        j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        let f = run(validate_job, &j, Some(&old));
        assert_eq!(f.len(), 1);
        assert!(f[0].starts_with("spec.template: Invalid value: {"), "{f:?}");
        assert!(f[0].ends_with("field is immutable"));

        let mut suspended = job();
        suspended["spec"]["suspend"] = json!(true);
        let mut j = suspended.clone();
        j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        assert!(run(validate_job, &j, Some(&suspended)).is_empty());
    }

    #[test]
    fn cronjob_rules() {
        let cj = json!({"metadata": {"name": "hello"}, "spec": {
            "schedule": "*/1 * * * *",
            "concurrencyPolicy": "Allow",
            "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "hello", "image": "busybox"}],
                "restartPolicy": "OnFailure"
            }}}}
        }});
        assert!(run(validate_cron_job, &cj, None).is_empty());
        let mut bad = cj.clone();
        bad["spec"]["schedule"] = json!("not a cron");
        bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
        assert_eq!(
            run(validate_cron_job, &bad, None),
            [
                "spec.schedule: Invalid value: \"not a cron\": expected exactly 5 fields, found 3: [not a cron]",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ]
        );
        let mut tz = cj.clone();
        tz["spec"]["schedule"] = json!("CRON_TZ=UTC 0 * * * *");
        assert_eq!(run(validate_cron_job, &tz, None).len(), 1);
        let mut hourly = cj.clone();
        hourly["spec"]["schedule"] = json!("@hourly");
        assert!(run(validate_cron_job, &hourly, None).is_empty());
    }

    #[test]
    fn cronjob_selector_must_match_job_template() {
        let cj = |selector: Value| {
            json!({"metadata": {"name": "hello"}, "spec": {
                "schedule": "@hourly",
                "jobTemplate": {"spec": {"selector": selector, "template": {
                    "metadata": {"labels": {"app": "hello"}},
                    "spec": {"containers": [{"name": "hello", "image": "busybox"}], "restartPolicy": "OnFailure"}
                }}}
            }})
        };
        let matching = cj(json!({"matchLabels": {"app": "hello"}}));
        assert!(run(validate_cron_job, &matching, None).is_empty());
        assert!(run(validate_cron_job, &cj(json!({})), None).is_empty());
        assert_eq!(
            run(
                validate_cron_job,
                &cj(json!({"matchLabels": {"app": "other"}})),
                None
            ),
            [
                "spec.jobTemplate.spec.template.metadata.labels: Invalid value: {\"app\":\"hello\"}: `selector` does not match template `labels`"
            ]
        );
    }
}
