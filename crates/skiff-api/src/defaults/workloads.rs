//! Defaults of `apps/v1` and `batch/v1` controllers.

use serde_json::{Map, Value, json};

use super::pod::default_pod_template;
use super::{each_mut, obj_mut, set_if_absent, set_if_empty};

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(template) = spec.get_mut("template") {
        default_pod_template(template);
    }
}

fn strategy_type(strategy: &mut Map<String, Value>) -> String {
    set_if_empty(strategy, "type", "RollingUpdate");
    strategy
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `Deployment`
pub(crate) fn deployment(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_if_absent(spec, "replicas", json!(1));
    if let Some(strategy) = map_entry(spec, "strategy")
        && strategy_type(strategy) == "RollingUpdate"
        && let Some(ru) = map_entry(strategy, "rollingUpdate")
    {
        set_if_absent(ru, "maxUnavailable", json!("25%"));
        set_if_absent(ru, "maxSurge", json!("25%"));
    }
    set_if_absent(spec, "revisionHistoryLimit", json!(10));
    set_if_absent(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

/// `ReplicaSet`
pub(crate) fn replica_set(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_if_absent(spec, "replicas", json!(1));
    default_template(spec);
}

/// `StatefulSet`
pub(crate) fn stateful_set(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_if_empty(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = map_entry(spec, "updateStrategy")
        && strategy_type(strategy) == "RollingUpdate"
        && let Some(ru) = map_entry(strategy, "rollingUpdate")
    {
        set_if_absent(ru, "partition", json!(0));
    }
    if let Some(policy) = map_entry(spec, "persistentVolumeClaimRetentionPolicy") {
        set_if_empty(policy, "whenDeleted", "Retain");
        set_if_empty(policy, "whenScaled", "Retain");
    }
    set_if_absent(spec, "replicas", json!(1));
    set_if_absent(spec, "revisionHistoryLimit", json!(10));
    each_mut(spec, "volumeClaimTemplates", |claim| {
        if let Some(claim_spec) = claim.get_mut("spec").and_then(Value::as_object_mut) {
            set_if_absent(claim_spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = map_entry(claim, "status") {
            set_if_empty(status, "phase", "Pending");
        }
    });
    default_template(spec);
}

/// `DaemonSet`
pub(crate) fn daemon_set(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    if let Some(strategy) = map_entry(spec, "updateStrategy")
        && strategy_type(strategy) == "RollingUpdate"
        && let Some(ru) = map_entry(strategy, "rollingUpdate")
    {
        set_if_absent(ru, "maxUnavailable", json!(1));
        set_if_absent(ru, "maxSurge", json!(0));
    }
    set_if_absent(spec, "revisionHistoryLimit", json!(10));
    default_template(spec);
}

/// `Job`
pub(crate) fn job(obj: &mut Value) {
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned();
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    set_if_absent(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set_if_absent(
        spec,
        "backoffLimit",
        json!(if per_index { i64::from(i32::MAX) } else { 6 }),
    );
    set_if_absent(spec, "completionMode", json!("NonIndexed"));
    set_if_absent(spec, "suspend", json!(false));
    let failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    // A pod condition pattern without a status matches a True condition.
    let patterns = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get_mut("onPodConditions"))
        .filter_map(Value::as_array_mut)
        .flatten()
        .filter_map(Value::as_object_mut);
    for pattern in patterns {
        set_if_absent(pattern, "status", json!("True"));
    }
    set_if_absent(
        spec,
        "podReplacementPolicy",
        json!(if failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    default_template(spec);
    // A job without labels takes its template's.
    if let Some(labels) = template_labels
        && let Some(meta) = obj_mut(obj, "metadata")
        && meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
    {
        meta.insert("labels".into(), Value::Object(labels));
    }
}

/// `CronJob`
pub(crate) fn cron_job(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_if_empty(spec, "concurrencyPolicy", "Allow");
    set_if_absent(spec, "suspend", json!(false));
    set_if_absent(spec, "successfulJobsHistoryLimit", json!(3));
    set_if_absent(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_spec) = spec
        .get_mut("jobTemplate")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        default_template(job_spec);
    }
}

/// The object member `key` of `map`, created empty if absent or null.
fn map_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");

        let mut r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        deployment(&mut r);
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn statefulset_daemonset_defaults() {
        let mut s =
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}});
        stateful_set(&mut s);
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["status"]["phase"],
            "Pending"
        );

        let mut d = json!({"spec": {}});
        daemon_set(&mut d);
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let mut d = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        daemon_set(&mut d);
        assert_eq!(d["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }

    #[test]
    fn job_defaults() {
        let mut j = json!({"metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never"}}}});
        job(&mut j);
        let s = &j["spec"];
        assert_eq!(
            (s["completions"].clone(), s["parallelism"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"a": "b"}));

        let mut p = json!({"spec": {"parallelism": 3, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}, {"type": "X", "status": "False"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}}
        ]}}});
        job(&mut p);
        assert!(p["spec"].get("completions").is_none());
        assert_eq!(p["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            p["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"],
            json!([{"type": "DisruptionTarget", "status": "True"}, {"type": "X", "status": "False"}])
        );
    }

    #[test]
    fn cronjob_defaults() {
        let mut c = json!({"spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        cron_job(&mut c);
        let s = &c["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        assert_eq!(
            s["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
    }
}
