//! ResourceQuota admission: a new object is charged to every quota of its
//! namespace that tracks it, and refused if any would go over `hard`.
//!
//! Updates are charged where usage can change after create
//! ([`Evaluator::charges_update`]): a claim's storage expanded, a service
//! turned NodePort or LoadBalancer, a pod resized in place. Such an update is
//! charged only its growth (new usage minus old, resource by resource, never
//! below zero): shrinking frees nothing here, the controller's recount gives
//! it back. A quota the object enters on update (a pod given a deadline
//! joins a `Terminating` quota) is charged the object's whole usage, as
//! upstream does since it began tracking scope changes. A claim's status
//! write (the resizer recording a larger allocation) is charged without the
//! `hard` check, as upstream exempts the status subresource: the storage is
//! already taken.
//!
//! As upstream, the check reads the quota's `status` (written by the quota
//! controller): `status.hard` says what is enforced and `status.used` what is
//! taken. A quota whose status does not yet cover a resource it enforces
//! refuses everything it would charge ("status unknown") until the controller
//! has counted. The charge is written to `status.used` by compare-and-swap
//! before the object is stored, so two concurrent writes never both fit in
//! the last unit; a create or update that then fails to store (a lost
//! compare-and-swap on the object included: its retry is charged afresh)
//! gives its charge back (upstream leaves that to the controller's next full
//! recount).
//!
//! Updates are admitted inside [`Rest::guaranteed_update`], against the
//! stored object each attempt writes over, so every write path (PUT, the
//! patches, apply, subresources, the server's own writes) is covered. The
//! status exemption is told by what changed: a status write leaves the spec
//! alone, and a main-resource write keeps the stored status.

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

/// Whether a charge must fit within `status.hard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Refuse what would exceed `hard` (every client write).
    Enforce,
    /// Record the usage even past `hard` (a status write reporting what is
    /// already taken).
    Record,
}

/// Charges `usage` (without zeros) to `quota`: what it was charged and the
/// new `status.used`, or `None` when the quota tracks none of it. Unless
/// `limit` only records, refuses a charge that would exceed `status.hard`,
/// in upstream's words.
pub fn charge(
    quota: &Value,
    usage: &ResourceList,
    limit: Limit,
) -> Result<Option<(ResourceList, ResourceList)>, String> {
    let hard = q::parse_list(&quota["status"]["hard"]);
    let used = q::parse_list(&quota["status"]["used"]);
    let requested = mask(usage, hard.keys().map(String::as_str));
    if requested.is_empty() {
        return Ok(None);
    }
    let new_used = q::add(&used, &requested);
    if limit == Limit::Record {
        return Ok(Some((requested, new_used)));
    }
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

/// What a create or update was charged, per quota, so that a failed store
/// write can give it back.
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
            // Boxed: quota writes go through the update path that calls
            // quota admission, which makes these futures recursive.
            let result = Box::pin(rest.guaranteed_update(at, |current| {
                let used = q::parse_list(&current["status"]["used"]);
                let mut refunded =
                    q::subtract(&used, &mask(requested, used.keys().map(String::as_str)));
                for amount in refunded.values_mut() {
                    if amount.is_negative() {
                        *amount = q::Amount::zero();
                    }
                }
                Ok(Mutation::Write(with_used(current, &refunded)))
            }))
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
    let Some(evaluator) = Evaluator::for_resource(rt.group, rt.plural) else {
        return Ok(Charge::default());
    };
    if namespace.is_empty() || !rt.namespaced() {
        return Ok(Charge::default());
    }
    let usage = evaluator.usage(obj, jiff::Timestamp::now());
    let request = Request {
        rt,
        evaluator: &evaluator,
        obj,
        namespace: &namespace,
        limit: Limit::Enforce,
    };
    request
        .admit(rest, &usage, dry_run, |_| remove_zeros(&usage))
        .await
}

/// Checks an update of an object of type `rt` from `old` (as stored) to
/// `new` against every quota of its namespace and, unless `dry_run`, charges
/// its growth to them (module docs). Refusals are 403 Forbidden.
pub async fn admit_update(
    rest: &Rest,
    rt: &'static ResourceType,
    old: &Value,
    new: &Value,
    dry_run: bool,
) -> ApiResult<Charge> {
    let namespace = object::namespace(new).to_string();
    let Some(evaluator) = Evaluator::for_resource(rt.group, rt.plural) else {
        return Ok(Charge::default());
    };
    if namespace.is_empty() || !rt.namespaced() || !evaluator.charges_update(old, new) {
        return Ok(Charge::default());
    }
    let now = jiff::Timestamp::now();
    let usage = evaluator.usage(new, now);
    let growth = remove_zeros(&q::subtract_non_negative(
        &usage,
        &evaluator.usage(old, now),
    ));
    // Without growth only a change of scopes can charge anything.
    if growth.is_empty() && !evaluator.scoped() {
        return Ok(Charge::default());
    }
    let request = Request {
        rt,
        evaluator: &evaluator,
        obj: new,
        namespace: &namespace,
        limit: if is_status_write(old, new) {
            Limit::Record
        } else {
            Limit::Enforce
        },
    };
    let whole = remove_zeros(&usage);
    request
        .admit(rest, &usage, dry_run, |quota| {
            if evaluator.matches(quota, old) {
                growth.clone()
            } else {
                whole.clone()
            }
        })
        .await
}

/// A write that changed the status and left the spec alone: only a status
/// subresource write can (a main-resource write keeps the stored status).
fn is_status_write(old: &Value, new: &Value) -> bool {
    old.get("spec") == new.get("spec") && old.get("status") != new.get("status")
}

/// One object to admit against its namespace's quotas.
struct Request<'a> {
    rt: &'static ResourceType,
    evaluator: &'a Evaluator,
    /// The object as it will be stored.
    obj: &'a Value,
    namespace: &'a str,
    limit: Limit,
}

impl Request<'_> {
    fn forbidden(&self, why: String) -> ApiError {
        ApiError::forbidden(self.rt, object::name(self.obj), &why)
    }

    /// Refuses the object if a quota it falls under cannot take it, then
    /// (unless `dry_run`) charges each such quota what `asked` says for it,
    /// by compare-and-swap on the quota's status. `usage` is the object's
    /// whole usage, checked for negative amounts.
    async fn admit(
        &self,
        rest: &Rest,
        usage: &ResourceList,
        dry_run: bool,
        asked: impl Fn(&Value) -> ResourceList,
    ) -> ApiResult<Charge> {
        let mut taken = Charge {
            namespace: self.namespace.to_string(),
            charged: Vec::new(),
        };
        let quota_rt = resource("", "resourcequotas");
        let quotas = list_current(rest, quota_rt, self.namespace).await?;
        if quotas.is_empty() {
            return Ok(taken);
        }
        let mut applying = Vec::new();
        for quota in &quotas {
            if precheck(quota, self.evaluator, self.obj)
                .map_err(|why| self.forbidden(why))?
                .is_some()
            {
                applying.push(quota);
            }
        }
        let negative = q::negative(usage);
        if !negative.is_empty() {
            return Err(self.forbidden(format!(
                "quota usage is negative for resource(s): {}",
                negative.join(",")
            )));
        }
        if dry_run {
            for quota in applying {
                charge(quota, &asked(quota), self.limit).map_err(|why| self.forbidden(why))?;
            }
            return Ok(taken);
        }
        for quota in applying {
            let quota_name = object::name(quota).to_string();
            if asked(quota).is_empty() {
                continue;
            }
            let at = ObjectRef {
                rt: quota_rt,
                namespace: Some(self.namespace),
                name: &quota_name,
            };
            let mut requested = None;
            // Boxed: this write goes through the update path that calls
            // quota admission, which makes these futures recursive.
            let result = Box::pin(rest.guaranteed_update(at, |current| {
                requested = None;
                if !self.evaluator.matches(current, self.obj) {
                    return Ok(Mutation::Unchanged);
                }
                match charge(current, &asked(current), self.limit)
                    .map_err(|why| self.forbidden(why))?
                {
                    None => Ok(Mutation::Unchanged),
                    Some((charged, new_used)) => {
                        requested = Some(charged);
                        Ok(Mutation::Write(with_used(current, &new_used)))
                    }
                }
            }))
            .await;
            match result {
                Ok(_) => {
                    if let Some(charged) = requested {
                        taken.charged.push((quota_name, charged));
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
        let (requested, used) = charge(&q, &usage(&pod(Some("1"))), Limit::Enforce)
            .unwrap()
            .unwrap();
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
            charge(&q, &usage(&pod(Some("1"))), Limit::Enforce).unwrap_err(),
            "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        );
    }

    #[test]
    fn a_recorded_charge_may_pass_hard() {
        let q = quota(
            json!({"requests.storage": "2Gi"}),
            json!({"requests.storage": "2Gi"}),
        );
        let grown = q::parse_list(&json!({"requests.storage": "1Gi"}));
        assert_eq!(
            charge(&q, &grown, Limit::Enforce).unwrap_err(),
            "exceeded quota: compute, requested: requests.storage=1Gi, \
             used: requests.storage=2Gi, limited: requests.storage=2Gi"
        );
        let (requested, used) = charge(&q, &grown, Limit::Record).unwrap().unwrap();
        assert_eq!(pretty_print(&requested), "requests.storage=1Gi");
        assert_eq!(pretty_print(&used), "requests.storage=3Gi");
    }

    #[test]
    fn status_writes_are_told_apart_by_what_changed() {
        let claim = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}},
                           "status": {"phase": "Bound"}});
        let mut allocated = claim.clone();
        allocated["status"]["allocatedResources"] = json!({"storage": "2Gi"});
        let mut expanded = claim.clone();
        expanded["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut relabelled = claim.clone();
        relabelled["metadata"] = json!({"labels": {"a": "b"}});
        assert!(is_status_write(&claim, &allocated));
        assert!(!is_status_write(&claim, &expanded));
        assert!(!is_status_write(&claim, &relabelled));
    }

    #[test]
    fn a_quota_tracking_nothing_of_the_object_charges_nothing() {
        let q = quota(json!({"configmaps": "1"}), json!({"configmaps": "0"}));
        assert!(
            charge(&q, &usage(&pod(None)), Limit::Enforce)
                .unwrap()
                .is_none()
        );
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
