//! `apps/v1` workloads: Deployment, ReplicaSet, StatefulSet, DaemonSet and
//! ControllerRevision.

use serde_json::Value;

use super::field::{
    Path, forbidden, get, has, immutable, int_of, invalid, invalid_each, non_negative,
    not_supported, one_of, required, same, str_of,
};
use super::meta::{
    int_or_percent_is_zero, selector_is_empty, selector_matches, validate_int_or_percent,
    validate_label_selector,
};
use super::names::dns1123_subdomain_errors;
use super::pod::{template_labels, validate_pod_template};
use super::storage::validate_pvc_spec;
use crate::registry::FieldError;

/// The selector rules every controller shares: required, valid, non-empty and
/// matching the template's labels.
pub(crate) fn validate_selector_for_template(
    errs: &mut Vec<FieldError>,
    spec: &Value,
    sp: &Path,
    empty_message: Option<&str>,
) {
    let selector = get(spec, "selector");
    if selector.is_null() {
        errs.push(required(&sp.child("selector"), ""));
        return;
    }
    validate_label_selector(errs, selector, &sp.child("selector"));
    if selector_is_empty(selector) {
        if let Some(msg) = empty_message {
            errs.push(invalid(&sp.child("selector"), selector, msg));
        }
        return;
    }
    validate_selector_matches_template(errs, selector, spec, sp);
}

/// The pod template in `spec` must carry labels that `selector` selects.
pub(crate) fn validate_selector_matches_template(
    errs: &mut Vec<FieldError>,
    selector: &Value,
    spec: &Value,
    sp: &Path,
) {
    let template = get(spec, "template");
    if !selector_matches(selector, template_labels(template)) {
        errs.push(invalid(
            &sp.child("template").child("metadata").child("labels"),
            get(get(template, "metadata"), "labels"),
            "`selector` does not match template `labels`",
        ));
    }
}

/// The selector and template of a controller of long-running pods: the shared
/// selector rules (`empty_selector` being the message for an empty one), then a pod
/// template with `restartPolicy: Always` and no deadline.
fn validate_long_running_template(
    errs: &mut Vec<FieldError>,
    spec: &Value,
    sp: &Path,
    kind: &str,
    empty_selector: &str,
) {
    validate_selector_for_template(errs, spec, sp, Some(empty_selector));
    let template = get(spec, "template");
    let tp = sp.child("template");
    validate_pod_template(errs, template, &tp);
    let pod_spec = get(template, "spec");
    let restart = str_of(pod_spec, "restartPolicy");
    if !restart.is_empty() && restart != "Always" {
        errs.push(not_supported(
            &tp.child("spec").child("restartPolicy"),
            restart,
            &["Always"],
        ));
    }
    if has(pod_spec, "activeDeadlineSeconds") {
        errs.push(forbidden(
            &tp.child("spec").child("activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// `spec.selector` may not change on update (Deployments, ReplicaSets, DaemonSets).
fn validate_selector_unchanged(
    errs: &mut Vec<FieldError>,
    spec: &Value,
    sp: &Path,
    old: Option<&Value>,
) {
    if let Some(old) = old {
        immutable(
            errs,
            &sp.child("selector"),
            get(spec, "selector"),
            get(get(old, "spec"), "selector"),
        );
    }
}

/// `maxUnavailable`/`maxSurge` of Deployments and DaemonSets.
fn validate_rolling_update(errs: &mut Vec<FieldError>, ru: &Value, path: &Path) {
    let unavailable = get(ru, "maxUnavailable");
    let surge = get(ru, "maxSurge");
    validate_int_or_percent(errs, unavailable, &path.child("maxUnavailable"), true);
    validate_int_or_percent(errs, surge, &path.child("maxSurge"), false);
    let zero = |v: &Value| v.is_null() || int_or_percent_is_zero(v);
    if zero(unavailable) && zero(surge) && !(unavailable.is_null() && surge.is_null()) {
        errs.push(invalid(
            &path.child("maxUnavailable"),
            unavailable,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

/// `Deployment`
pub(crate) fn validate_deployment(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    for key in [
        "replicas",
        "minReadySeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
    ] {
        non_negative(errs, spec, key, &sp);
    }
    validate_long_running_template(
        errs,
        spec,
        &sp,
        "Deployment",
        "empty selector is invalid for deployment",
    );

    let strategy = get(spec, "strategy");
    let stp = sp.child("strategy");
    match str_of(strategy, "type") {
        "Recreate" => {
            if has(strategy, "rollingUpdate") {
                errs.push(forbidden(
                    &stp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" | "" => {
            validate_rolling_update(
                errs,
                get(strategy, "rollingUpdate"),
                &stp.child("rollingUpdate"),
            );
        }
        _ => errs.push(not_supported(
            &stp,
            strategy,
            &["Recreate", "RollingUpdate"],
        )),
    }
    if let Some(deadline) = int_of(spec, "progressDeadlineSeconds")
        && deadline <= int_of(spec, "minReadySeconds").unwrap_or(0)
    {
        errs.push(invalid(
            &sp.child("progressDeadlineSeconds"),
            deadline,
            "must be greater than minReadySeconds",
        ));
    }
    validate_selector_unchanged(errs, spec, &sp, old);
}

/// `ReplicaSet`
pub(crate) fn validate_replica_set(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    non_negative(errs, spec, "replicas", &sp);
    non_negative(errs, spec, "minReadySeconds", &sp);
    validate_long_running_template(
        errs,
        spec,
        &sp,
        "ReplicaSet",
        "empty selector is invalid for deployment",
    );
    validate_selector_unchanged(errs, spec, &sp, old);
}

/// Fields of a StatefulSet spec that may change after creation.
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// A copy of a StatefulSet spec whose pod template also lists a volume per
/// `volumeClaimTemplates` entry, as the controller adds them to each pod.
fn with_claim_volumes(spec: &Value) -> Value {
    let mut spec = spec.clone();
    let claims: Vec<String> = super::field::arr_of(&spec, "volumeClaimTemplates")
        .iter()
        .map(|claim| str_of(get(claim, "metadata"), "name").to_string())
        .filter(|name| !name.is_empty())
        .collect();
    if let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        let volumes = pod
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(volumes) = volumes.as_array_mut() {
            for name in claims {
                if !volumes.iter().any(|v| v["name"] == name.as_str()) {
                    volumes.push(serde_json::json!({
                        "name": name,
                        "persistentVolumeClaim": {"claimName": name},
                    }));
                }
            }
        }
    }
    spec
}

/// `StatefulSet`
pub(crate) fn validate_stateful_set(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    for key in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        non_negative(errs, spec, key, &sp);
    }
    non_negative(errs, get(spec, "ordinals"), "start", &sp.child("ordinals"));
    one_of(
        errs,
        spec,
        "podManagementPolicy",
        &sp,
        &["OrderedReady", "Parallel"],
    );

    let strategy = get(spec, "updateStrategy");
    let stp = sp.child("updateStrategy");
    match str_of(strategy, "type") {
        "OnDelete" => {
            if has(strategy, "rollingUpdate") {
                errs.push(invalid(
                    &stp.child("rollingUpdate"),
                    get(strategy, "rollingUpdate"),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" | "" => {
            let ru = get(strategy, "rollingUpdate");
            non_negative(errs, ru, "partition", &stp.child("rollingUpdate"));
            let max = get(ru, "maxUnavailable");
            let mp = stp.child("rollingUpdate").child("maxUnavailable");
            validate_int_or_percent(errs, max, &mp, true);
            if int_or_percent_is_zero(max) {
                errs.push(invalid(&mp, max, "must be greater than 0"));
            }
        }
        other => errs.push(not_supported(
            &stp.child("type"),
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    let retention = get(spec, "persistentVolumeClaimRetentionPolicy");
    for key in ["whenDeleted", "whenScaled"] {
        one_of(
            errs,
            retention,
            key,
            &sp.child("persistentVolumeClaimRetentionPolicy"),
            &["Retain", "Delete"],
        );
    }
    // Claim templates become the pods' volumes, so mounts may name them.
    let spec_with_claims = with_claim_volumes(spec);
    validate_long_running_template(
        errs,
        &spec_with_claims,
        &sp,
        "StatefulSet",
        "empty selector is invalid for statefulset",
    );
    for (i, claim) in super::field::arr_of(spec, "volumeClaimTemplates")
        .iter()
        .enumerate()
    {
        let cp = sp.child("volumeClaimTemplates").index(i);
        let name = str_of(get(claim, "metadata"), "name");
        if name.is_empty() {
            errs.push(required(&cp.child("metadata").child("name"), ""));
        } else {
            invalid_each(
                errs,
                &cp.child("metadata").child("name"),
                name,
                dns1123_subdomain_errors(name),
            );
        }
        validate_pvc_spec(errs, get(claim, "spec"), &cp.child("spec"));
    }

    if let Some(old) = old {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                for key in STATEFULSET_MUTABLE {
                    m.remove(*key);
                }
            }
            v
        };
        if !same(&strip(spec), &strip(get(old, "spec"))) {
            errs.push(forbidden(
                &sp,
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

/// `DaemonSet`
pub(crate) fn validate_daemon_set(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let sp = Path::new("spec");
    for key in [
        "minReadySeconds",
        "revisionHistoryLimit",
        "templateGeneration",
    ] {
        non_negative(errs, spec, key, &sp);
    }
    validate_long_running_template(
        errs,
        spec,
        &sp,
        "DaemonSet",
        "empty selector is invalid for daemonset",
    );
    let strategy = get(spec, "updateStrategy");
    let stp = sp.child("updateStrategy");
    match str_of(strategy, "type") {
        "OnDelete" | "" => {}
        "RollingUpdate" => {
            validate_rolling_update(
                errs,
                get(strategy, "rollingUpdate"),
                &stp.child("rollingUpdate"),
            );
        }
        other => errs.push(not_supported(
            &stp.child("type"),
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    validate_selector_unchanged(errs, spec, &sp, old);
}

/// `ControllerRevision`
pub(crate) fn validate_controller_revision(
    errs: &mut Vec<FieldError>,
    obj: &Value,
    old: Option<&Value>,
) {
    if let Some(rev) = int_of(obj, "revision")
        && rev < 0
    {
        errs.push(invalid(
            &Path::new("revision"),
            rev,
            "must be greater than or equal to 0",
        ));
    }
    if get(obj, "data").is_null() {
        errs.push(required(&Path::new("data"), "data is mandatory"));
    }
    if let Some(old) = old {
        immutable(errs, &Path::new("data"), get(obj, "data"), get(old, "data"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::field::testing::run;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}], "restartPolicy": "Always"}
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600
        }})
    }

    #[test]
    fn deployment_selector_rules() {
        assert!(run(validate_deployment, &deployment(), None).is_empty());

        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(
            run(validate_deployment, &d, None),
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`"
            ]
        );

        let mut d = deployment();
        d["spec"].as_object_mut().map(|s| s.remove("selector"));
        assert_eq!(
            run(validate_deployment, &d, None),
            ["spec.selector: Required value"]
        );

        let mut d = deployment();
        d["spec"]["selector"] = json!({});
        assert_eq!(
            run(validate_deployment, &d, None),
            ["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
        );

        let old = deployment();
        let mut d = deployment();
        d["spec"]["selector"]["matchLabels"]["tier"] = json!("fe");
        d["spec"]["template"]["metadata"]["labels"]["tier"] = json!("fe");
        assert_eq!(
            run(validate_deployment, &d, Some(&old)),
            [
                "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"tier\":\"fe\"}}: field is immutable"
            ]
        );
    }

    #[test]
    fn deployment_strategy_and_counts() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        assert_eq!(
            run(validate_deployment, &d, None),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ]
        );
        let mut d = deployment();
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
        assert_eq!(
            run(validate_deployment, &d, None),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
            ]
        );
    }

    #[test]
    fn statefulset_update_forbidden_fields() {
        let sts = json!({"spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres"}]}},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }});
        assert!(run(validate_stateful_set, &sts, None).is_empty());
        let mut scaled = sts.clone();
        scaled["spec"]["replicas"] = json!(3);
        assert!(run(validate_stateful_set, &scaled, Some(&sts)).is_empty());
        let mut renamed = sts.clone();
        renamed["spec"]["serviceName"] = json!("other");
        let f = run(validate_stateful_set, &renamed, Some(&sts));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].starts_with("spec: Forbidden: updates to statefulset spec for fields other than")
        );
    }

    #[test]
    fn daemonset_and_revision() {
        let ds = json!({"spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}},
            "updateStrategy": {"type": "Sometimes"}
        }});
        assert_eq!(
            run(validate_daemon_set, &ds, None),
            [
                "spec.updateStrategy.type: Unsupported value: \"Sometimes\": supported values: \"OnDelete\", \"RollingUpdate\""
            ]
        );
        assert_eq!(
            run(validate_controller_revision, &json!({"revision": -1}), None),
            [
                "revision: Invalid value: -1: must be greater than or equal to 0",
                "data: Required value: data is mandatory",
            ]
        );
    }
}
