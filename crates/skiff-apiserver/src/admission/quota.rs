//! ResourceQuota admission: a new object is charged to every quota of its
//! namespace that tracks it, and refused if any would go over `hard`.
//!
//! As upstream, the check reads the quota's `status` (written by the quota
//! controller): `status.hard` says what is enforced and `status.used` what is
//! taken. A quota whose status does not yet cover a resource it enforces
//! refuses everything it would charge ("status unknown") until the controller
//! has counted. The charge is written to `status.used` by compare-and-swap
//! before the object is stored, so two concurrent creates never both fit in
//! the last unit; a create that then fails to store gives its charge back
//! (upstream leaves that to the controller's next full recount).

use serde_json::{Value, json};
use skiff_api::quota::{
    self as q, Evaluator, ResourceList, exceeded, mask, pretty_print, remove_zeros,
};
use skiff_api::registry::ResourceType;

use super::{list_current, resource};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{Mutation, ObjectRef, Rest};

/// The resources `quota` enforces for an object of `evaluator`'s type, or
/// `None` when the quota does not apply to `obj`. Refuses (with upstream's
/// message) a pod missing requests the quota needs, and a quota whose usage
/// is not yet known.
pub fn precheck(
    quota: &Value,
    evaluator: &Evaluator,
    obj: &Value,
) -> Result<Option<Vec<String>>, String> {
    if !evaluator.matches(quota, obj) {
        return Ok(None);
    }
    let name = object::name(quota);
    let hard = q::parse_list(&quota["status"]["hard"]);
    let restricted = evaluator.matching_resources(hard.keys().map(String::as_str));
    evaluator
        .constraints(&restricted, obj)
        .map_err(|e| format!("failed quota: {name}: {e}"))?;
    let used = quota["status"]["used"].as_object();
    if restricted
        .iter()
        .any(|r| !used.is_some_and(|u| u.contains_key(r)))
    {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            restricted.join(",")
        ));
    }
    Ok(Some(restricted))
}

/// Charges `usage` (without zeros) to `quota`: the new `status.used`, or
/// `None` when the quota tracks none of it. Refuses a charge that would
/// exceed `status.hard`, in upstream's words.
pub fn charge(
    quota: &Value,
    usage: &ResourceList,
) -> Result<Option<(ResourceList, ResourceList)>, String> {
    let hard = q::parse_list(&quota["status"]["hard"]);
    let used = q::parse_list(&quota["status"]["used"]);
    let requested = mask(usage, hard.keys().map(String::as_str));
    if requested.is_empty() {
        return Ok(None);
    }
    let new_used = q::add(&used, &requested);
    let over = exceeded(
        &mask(&new_used, requested.keys().map(String::as_str)),
        &hard,
    );
    if !over.is_empty() {
        let names = || over.iter().map(String::as_str);
        return Err(format!(
            "exceeded quota: {}, requested: {}, used: {}, limited: {}",
            object::name(quota),
            pretty_print(&mask(&requested, names())),
            pretty_print(&mask(&used, names())),
            pretty_print(&mask(&hard, names())),
        ));
    }
    Ok(Some((requested, new_used)))
}

/// What a create was charged, per quota, so that a failed store write can
/// give it back.
#[derive(Debug, Default)]
#[must_use = "a charge must be refunded if the object is not stored"]
pub struct Charge {
    namespace: String,
    charged: Vec<(String, ResourceList)>,
}

impl Charge {
    /// Returns the charge to the quotas (best effort: a quota that cannot
    /// be written is corrected by the controller's next recount).
    pub async fn refund(self, rest: &Rest) {
        let rt = resource("", "resourcequotas");
        for (name, requested) in &self.charged {
            let at = ObjectRef {
                rt,
                namespace: Some(&self.namespace),
                name,
            };
            let result = rest
                .guaranteed_update(at, |current| {
                    let used = q::parse_list(&current["status"]["used"]);
                    let mut refunded =
                        q::subtract(&used, &mask(requested, used.keys().map(String::as_str)));
                    for amount in refunded.values_mut() {
                        if amount.is_negative() {
                            *amount = q::Amount::zero();
                        }
                    }
                    Ok(Mutation::Write(with_used(current, &refunded)))
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(quota = %name, namespace = %self.namespace, error = %e, "quota refund failed");
            }
        }
    }
}

fn with_used(quota: &Value, used: &ResourceList) -> Value {
    let mut new = object::without_resource_version(quota);
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    new["status"]["used"] = q::to_json(used);
    new
}

/// Checks a new object of type `rt` against every quota of its namespace
/// and, unless `dry_run`, charges it to them. Refusals are 403 Forbidden.
pub async fn admit_create(
    rest: &Rest,
    rt: &'static ResourceType,
    obj: &Value,
    dry_run: bool,
) -> ApiResult<Charge> {
    let namespace = object::namespace(obj).to_string();
    let mut taken = Charge {
        namespace: namespace.clone(),
        charged: Vec::new(),
    };
    let Some(evaluator) = Evaluator::for_resource(rt.group, rt.plural) else {
        return Ok(taken);
    };
    if namespace.is_empty() || !rt.namespaced() {
        return Ok(taken);
    }
    let quota_rt = resource("", "resourcequotas");
    let quotas = list_current(rest, quota_rt, &namespace).await?;
    if quotas.is_empty() {
        return Ok(taken);
    }
    let name = object::name(obj);
    let forbidden = |why: String| ApiError::forbidden(rt, name, &why);
    let mut applying = Vec::new();
    for quota in &quotas {
        if precheck(quota, &evaluator, obj)
            .map_err(forbidden)?
            .is_some()
        {
            applying.push(object::name(quota).to_string());
        }
    }
    let usage = evaluator.usage(obj, jiff::Timestamp::now());
    let negative = q::negative(&usage);
    if !negative.is_empty() {
        return Err(forbidden(format!(
            "quota usage is negative for resource(s): {}",
            negative.join(",")
        )));
    }
    let usage = remove_zeros(&usage);
    if applying.is_empty() || usage.is_empty() {
        return Ok(taken);
    }
    if dry_run {
        for quota in quotas
            .iter()
            .filter(|q| applying.iter().any(|a| a == object::name(q)))
        {
            charge(quota, &usage).map_err(forbidden)?;
        }
        return Ok(taken);
    }
    for quota_name in applying {
        let at = ObjectRef {
            rt: quota_rt,
            namespace: Some(&namespace),
            name: &quota_name,
        };
        let mut requested = None;
        let result = rest
            .guaranteed_update(at, |current| {
                requested = None;
                if !evaluator.matches(current, obj) {
                    return Ok(Mutation::Unchanged);
                }
                match charge(current, &usage).map_err(forbidden)? {
                    None => Ok(Mutation::Unchanged),
                    Some((asked, new_used)) => {
                        requested = Some(asked);
                        Ok(Mutation::Write(with_used(current, &new_used)))
                    }
                }
            })
            .await;
        match result {
            Ok(_) => {
                if let Some(asked) = requested {
                    taken.charged.push((quota_name, asked));
                }
            }
            // Deleted since it was listed: nothing to charge.
            Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {}
            Err(e) => {
                taken.refund(rest).await;
                return Err(e);
            }
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "compute"}, "spec": {"hard": hard.clone()},
               "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> Value {
        let resources = match cpu {
            Some(c) => json!({"requests": {"cpu": c}, "limits": {"cpu": c}}),
            None => json!({}),
        };
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "resources": resources}]}})
    }

    fn usage(obj: &Value) -> ResourceList {
        remove_zeros(&Evaluator::Pods.usage(obj, jiff::Timestamp::now()))
    }

    #[test]
    fn a_charge_within_hard_adds_to_used() {
        let q = quota(
            json!({"pods": "3", "requests.cpu": "2"}),
            json!({"pods": "1", "requests.cpu": "500m"}),
        );
        let (requested, used) = charge(&q, &usage(&pod(Some("1")))).unwrap().unwrap();
        assert_eq!(pretty_print(&requested), "pods=1,requests.cpu=1");
        assert_eq!(pretty_print(&used), "pods=2,requests.cpu=1500m");
    }

    #[test]
    fn an_exceeding_charge_names_only_the_exceeded_resources() {
        let q = quota(
            json!({"pods": "2", "requests.cpu": "4"}),
            json!({"pods": "2", "requests.cpu": "1"}),
        );
        assert_eq!(
            charge(&q, &usage(&pod(Some("1")))).unwrap_err(),
            "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        );
    }

    #[test]
    fn a_quota_tracking_nothing_of_the_object_charges_nothing() {
        let q = quota(json!({"configmaps": "1"}), json!({"configmaps": "0"}));
        assert!(charge(&q, &usage(&pod(None))).unwrap().is_none());
        assert!(
            precheck(&q, &Evaluator::Pods, &pod(None))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn compute_quota_needs_requests_and_known_usage() {
        let q = quota(
            json!({"requests.cpu": "1", "pods": "5"}),
            json!({"requests.cpu": "0", "pods": "0"}),
        );
        assert_eq!(
            precheck(&q, &Evaluator::Pods, &pod(None)).unwrap_err(),
            "failed quota: compute: must specify requests.cpu for: app"
        );
        assert_eq!(
            precheck(&q, &Evaluator::Pods, &pod(Some("1"))).unwrap(),
            Some(vec!["pods".to_string(), "requests.cpu".to_string()])
        );
        let unknown = quota(json!({"pods": "5"}), json!({}));
        assert_eq!(
            precheck(&unknown, &Evaluator::Pods, &pod(None)).unwrap_err(),
            "status unknown for quota: compute, resources: pods"
        );
        let uncounted = json!({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "1"}}});
        assert!(
            precheck(&uncounted, &Evaluator::Pods, &pod(None))
                .unwrap()
                .is_none()
        );
    }
}
