//! `POST pods/{name}/eviction`: a pod deletion that respects the
//! PodDisruptionBudget covering the pod (upstream's eviction REST).
//!
//! A pod that is not running yet, has finished, or is already being deleted
//! disrupts nothing and is deleted at once. Otherwise the one budget that
//! selects it must allow a disruption: the eviction takes one from
//! `status.disruptionsAllowed` and records the pod in `status.disruptedPods`
//! by compare-and-swap on the budget, then deletes the pod, so two
//! concurrent evictions never both take the last allowed disruption. The
//! disruption controller gives the disruption back once the pod is gone (or
//! after two minutes if it never goes). A refusal is 429 TooManyRequests,
//! which `kubectl drain` retries.

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use skiff_api::selector::LabelSelector;

use super::{list_current, resource};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{DeleteOptions, Mutation, ObjectRef, Rest};

/// Upstream refuses evictions once this many are recorded and not yet seen
/// by the disruption controller.
const MAX_DISRUPTED_PODS: usize = 2000;

/// How many times an eviction retries a pod that changed under it.
const RETRIES: usize = 20;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// 429 with a `DisruptionBudget` cause, as upstream words it.
fn too_many_requests(cause: String, retry_after_seconds: i64) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after_seconds > 0 {
        details["retryAfterSeconds"] = json!(retry_after_seconds);
    }
    ApiError {
        code: StatusCode::TOO_MANY_REQUESTS,
        reason: "TooManyRequests",
        message: REFUSED.into(),
        details: Some(details),
    }
}

/// The budget has changed since the disruption controller last counted it.
fn still_processing(pdb: &str) -> ApiError {
    too_many_requests(
        format!("The disruption budget {pdb} is still being processed by the server."),
        10,
    )
}

fn budget_forbidden(pdb: &str, why: &str) -> ApiError {
    ApiError {
        code: StatusCode::FORBIDDEN,
        reason: "Forbidden",
        message: format!("poddisruptionbudget.policy \"{pdb}\" is forbidden: {why}"),
        details: Some(json!({"name": pdb, "group": "policy", "kind": "poddisruptionbudget"})),
    }
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Pods that disrupt nothing by going: not started, finished, or going.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || object::is_deleting(pod)
}

/// Deleting these must not race the pod becoming ready: pin its version.
fn pins_version(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !object::is_deleting(pod)
}

/// Whether the budget's selector picks the pod; an empty or invalid
/// selector picks nothing.
fn selects(pdb: &Value, pod: &Value) -> bool {
    let selector = &pdb["spec"]["selector"];
    if selector.is_null() {
        return false;
    }
    match LabelSelector::from_label_selector(selector) {
        Ok(s) => !s.is_everything() && s.matches(&pod["metadata"]["labels"]),
        Err(_) => false,
    }
}

/// Sets a `metav1.Condition` as upstream's `SetStatusCondition`: the
/// transition time moves only when the status changes.
fn set_condition(status: &mut Value, condition: Value, now: Timestamp) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let time = json!(object::format_time(now));
    match conditions
        .iter_mut()
        .find(|c| c["type"] == condition["type"])
    {
        Some(existing) => {
            if existing["status"] != condition["status"] {
                existing["lastTransitionTime"] = time;
            }
            for field in ["status", "reason", "message", "observedGeneration"] {
                existing[field] = condition[field].clone();
            }
        }
        None => {
            let mut condition = condition;
            condition["lastTransitionTime"] = time;
            conditions.push(condition);
        }
    }
}

/// Upstream's check-and-decrement of a budget for evicting `pod_name`: the
/// budget as it must be written, or the refusal.
pub fn check_and_decrement(
    pdb: &Value,
    pod_name: &str,
    now: Timestamp,
    dry_run: bool,
) -> ApiResult<Value> {
    let name = object::name(pdb);
    let status = &pdb["status"];
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Err(still_processing(name));
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(budget_forbidden(
            name,
            "pdb disruptions allowed is negative",
        ));
    }
    if status["disruptedPods"]
        .as_object()
        .is_some_and(|m| m.len() > MAX_DISRUPTED_PODS)
    {
        return Err(budget_forbidden(
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                status["desiredHealthy"].as_i64().unwrap_or(0),
                status["currentHealthy"].as_i64().unwrap_or(0),
            ),
            0,
        ));
    }
    let mut new = object::without_resource_version(pdb);
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    let status = &mut new["status"];
    status["disruptionsAllowed"] = json!(allowed - 1);
    if allowed == 1 {
        let condition = json!({
            "type": "DisruptionAllowed",
            "status": "False",
            "reason": "InsufficientPods",
            "message": "",
            "observedGeneration": observed,
        });
        set_condition(status, condition, now);
    }
    if !dry_run {
        if !status["disruptedPods"].is_object() {
            status["disruptedPods"] = Value::Object(Map::new());
        }
        status["disruptedPods"][pod_name] = json!(object::format_time(now));
    }
    Ok(new)
}

/// The `deleteOptions` of an Eviction body.
fn delete_options(eviction: &Value) -> ApiResult<(DeleteOptions, bool)> {
    let raw = &eviction["deleteOptions"];
    let options = DeleteOptions {
        grace_period_seconds: raw["gracePeriodSeconds"].as_i64(),
        propagation_policy: raw["propagationPolicy"].as_str().map(String::from),
        precondition_uid: raw["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: raw["preconditions"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
            .map(String::from),
    };
    if let Some(policy) = &options.propagation_policy
        && !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy must be one of Orphan, Background, Foreground; got {policy:?}"
        )));
    }
    let dry_run = raw["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok((options, dry_run))
}

/// Evicts the pod at `at` as the Eviction `eviction` asks.
pub async fn evict(
    rest: &Rest,
    at: ObjectRef<'_>,
    eviction: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    if object::name(eviction) != at.name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let (options, body_dry_run) = delete_options(eviction)?;
    let dry_run = dry_run || body_dry_run;
    let client_pinned = options.precondition_rv.is_some();
    let mut pod = None;
    for _ in 0..RETRIES {
        let current = rest.get(at).await?;
        if !can_ignore_budget(&current.object) {
            pod = Some(current);
            break;
        }
        let mut delete = options.clone();
        if pins_version(&current.object) && !client_pinned {
            delete.precondition_rv = Some(current.revision.to_string());
        }
        match delete_with_condition(rest, at, delete, dry_run).await {
            Err(e) if e.code == StatusCode::CONFLICT && !client_pinned => continue,
            other => return other,
        }
    }
    let Some(pod) = pod else {
        return Err(ApiError::conflict(
            at.rt,
            at.name,
            "the pod kept changing; please retry the eviction",
        ));
    };
    let namespace = object::namespace(&pod.object).to_string();
    let budgets: Vec<Value> =
        list_current(rest, resource("policy", "poddisruptionbudgets"), &namespace)
            .await?
            .into_iter()
            .filter(|pdb| selects(pdb, &pod.object))
            .collect();
    let pdb = match budgets.as_slice() {
        [] => return delete_with_condition(rest, at, options, dry_run).await,
        [one] => one,
        _ => {
            return Err(ApiError {
                code: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "",
                message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
                details: None,
            });
        }
    };
    let pdb_name = object::name(pdb).to_string();
    let status = &pdb["status"];
    let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
    let healthy = status["currentHealthy"].as_i64().unwrap_or(0);
    let always_allow = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
    if !is_ready(&pod.object) && (always_allow || (healthy >= desired && desired > 0)) {
        // An unready pod is not counted healthy: taking it changes nothing,
        // as long as it does not become ready meanwhile.
        let mut delete = options.clone();
        delete.precondition_rv = Some(pod.revision.to_string());
        return match delete_with_condition(rest, at, delete, dry_run).await {
            Err(e) if e.code == StatusCode::CONFLICT && !client_pinned => {
                Err(still_processing(&pdb_name))
            }
            other => other,
        };
    }
    let pdb_at = ObjectRef {
        rt: resource("policy", "poddisruptionbudgets"),
        namespace: Some(&namespace),
        name: &pdb_name,
    };
    let now = Timestamp::now();
    rest.guaranteed_update(pdb_at, |current| {
        let new = check_and_decrement(current, at.name, now, dry_run)?;
        Ok(if dry_run {
            Mutation::DryRun(new)
        } else {
            Mutation::Write(new)
        })
    })
    .await?;
    delete_with_condition(rest, at, options, dry_run).await
}

/// Marks the pod `DisruptionTarget` (reason `EvictionByEvictionAPI`) and
/// deletes it; a client's preconditions are checked on the marking write
/// and the deletion is then pinned to the marked version.
async fn delete_with_condition(
    rest: &Rest,
    at: ObjectRef<'_>,
    mut options: DeleteOptions,
    dry_run: bool,
) -> ApiResult<()> {
    if !dry_run {
        let marked = rest
            .guaranteed_update(at, |current| {
                check_preconditions(at, current, &options)?;
                let mut new = object::without_resource_version(current);
                if !new["status"].is_object() {
                    new["status"] = json!({});
                }
                let condition = json!({
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting",
                    "lastProbeTime": null,
                });
                set_condition(&mut new["status"], condition, Timestamp::now());
                Ok(Mutation::Write(new))
            })
            .await?;
        if options.precondition_rv.is_some() {
            options.precondition_rv = Some(object::resource_version(&marked).to_string());
        }
    }
    rest.delete(at, &options, dry_run).await.map(|_| ())
}

fn check_preconditions(at: ObjectRef<'_>, pod: &Value, options: &DeleteOptions) -> ApiResult<()> {
    if let Some(uid) = &options.precondition_uid
        && uid != object::uid(pod)
    {
        return Err(ApiError::conflict(
            at.rt,
            at.name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                object::uid(pod)
            ),
        ));
    }
    if let Some(rv) = &options.precondition_rv
        && rv != object::resource_version(pod)
    {
        return Err(ApiError::conflict(
            at.rt,
            at.name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                object::resource_version(pod)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T10:00:00Z".parse().unwrap()
    }

    fn pdb(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": generation, "resourceVersion": "7"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}},
               "status": {"disruptionsAllowed": allowed, "desiredHealthy": 2, "currentHealthy": 2 + allowed,
                          "expectedPods": 3, "observedGeneration": observed,
                          "conditions": [{"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods",
                                          "message": "", "observedGeneration": observed,
                                          "lastTransitionTime": "2024-05-01T09:00:00Z"}]}})
    }

    #[test]
    fn an_eviction_takes_one_disruption_and_records_the_pod() {
        let new = check_and_decrement(&pdb(2, 1, 1), "web-1", now(), false).unwrap();
        assert_eq!(new["status"]["disruptionsAllowed"], 1);
        assert_eq!(
            new["status"]["disruptedPods"]["web-1"],
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(new["status"]["conditions"][0]["status"], "True");
        assert!(new["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn the_last_disruption_flips_the_condition_and_dry_runs_record_nothing() {
        let new = check_and_decrement(&pdb(1, 1, 1), "web-1", now(), true).unwrap();
        assert_eq!(new["status"]["disruptionsAllowed"], 0);
        let condition = &new["status"]["conditions"][0];
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "InsufficientPods");
        assert_eq!(condition["lastTransitionTime"], "2024-05-01T10:00:00Z");
        assert!(new["status"].get("disruptedPods").is_none());
    }

    #[test]
    fn no_disruption_left_is_429_with_the_budget_cause() {
        let err = check_and_decrement(&pdb(0, 1, 1), "web-1", now(), false).unwrap_err();
        assert_eq!(err.code, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.message, REFUSED);
        assert_eq!(
            err.status()["details"],
            json!({"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]})
        );
        let stale = check_and_decrement(&pdb(3, 2, 1), "web-1", now(), false).unwrap_err();
        assert_eq!(stale.code, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(stale.status()["details"]["retryAfterSeconds"], 10);
        let negative = check_and_decrement(&pdb(-1, 1, 1), "web-1", now(), false).unwrap_err();
        assert_eq!(
            negative.message,
            "poddisruptionbudget.policy \"web\" is forbidden: pdb disruptions allowed is negative"
        );
    }

    #[test]
    fn budgets_with_empty_selectors_cover_nothing() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(selects(&pdb(1, 1, 1), &pod));
        assert!(!selects(&json!({"spec": {"selector": {}}}), &pod));
        assert!(!selects(&json!({"spec": {}}), &pod));
        let other = json!({"metadata": {"labels": {"app": "db"}}});
        assert!(!selects(&pdb(1, 1, 1), &other));
    }

    #[test]
    fn only_running_pods_need_a_budget() {
        let pod = |phase: &str| json!({"status": {"phase": phase}});
        assert!(can_ignore_budget(&pod("Pending")));
        assert!(can_ignore_budget(&pod("Succeeded")));
        assert!(!can_ignore_budget(&pod("Running")));
        assert!(!can_ignore_budget(&pod("Unknown")));
        let deleting = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running"}});
        assert!(can_ignore_budget(&deleting));
        assert!(!pins_version(&deleting));
        assert!(pins_version(&pod("Pending")));
    }
}
