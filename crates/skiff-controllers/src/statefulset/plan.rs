//! The pure decision of one reconcile: which member to create, delete or
//! repair next, given the set, its two revisions, the pods and claims the
//! caches show, and the time.
//!
//! Members live in the ordinal range `[start, start + replicas)`; pods outside
//! it are condemned. Under `OrderedReady` the plan takes one step at a time:
//! it walks the range upward and stops at the first member that is missing
//! (creating it), failed (deleting it, to be recreated next time),
//! terminating, or not yet Running, Ready and available; only with every
//! member healthy does it delete the highest condemned pod, and only then
//! roll one pod to the update revision, highest ordinal first. Under
//! `Parallel` nothing waits: every missing member is created and every
//! condemned pod deleted at once.
//!
//! A rolling update deletes pods at ordinals at or above `partition` whose
//! revision is not the update revision, at most `maxUnavailable` (default 1)
//! unavailable at a time; the member is then recreated from the update
//! revision. Below the partition, recreated members keep the current
//! revision. `OnDelete` never deletes for an update: members get the update
//! revision only when someone deletes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::claims::{RetentionPolicy, claims_for, is_stale, owner_update};
use super::identity::{
    identity_labels, identity_matches, is_member, new_pod, ordinal, parent_and_ordinal, pod_name,
    replicas, revision_of, start_ordinal, storage_matches,
};
use crate::expectations::InFlight;
use crate::informer::controller_uid;
use crate::pods;

/// One revision of the set: its ControllerRevision's name and pod template.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The ControllerRevision's name, which pods carry in their
    /// `controller-revision-hash` label.
    pub name: String,
    /// The pod template it records.
    pub template: PodTemplateSpec,
}

/// The revisions one reconcile works with.
#[derive(Debug, Clone, PartialEq)]
pub struct Revisions {
    /// The revision the set's pods are being rolled from.
    pub current: Revision,
    /// The revision recording the set's template now.
    pub update: Revision,
    /// Name collisions met when creating revisions (`status.collisionCount`).
    pub collision_count: i32,
}

/// What the caches show.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Every pod the set owns, and the orphans in its namespace it could adopt.
    pub candidates: &'a [Arc<Pod>],
    /// The claims in the set's namespace, by name.
    pub claims: &'a BTreeMap<String, Arc<PersistentVolumeClaim>>,
    /// Pod writes the cache does not show yet.
    pub in_flight: &'a InFlight,
    /// The time, for `minReadySeconds`.
    pub now: Timestamp,
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// It failed or finished; it is recreated once gone.
    Finished,
    /// Its ordinal is outside the set's range.
    ScaleDown,
    /// It is not at the update revision; it is recreated at it.
    Update,
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create the missing `claims`, then the pod; then set its claims' owners.
    CreatePod {
        /// The member.
        pod: Box<Pod>,
        /// Its claims that do not exist yet.
        claims: Vec<PersistentVolumeClaim>,
    },
    /// Create claims a pending member is missing.
    CreateClaims {
        /// The member.
        pod: Arc<Pod>,
        /// Its claims that do not exist.
        claims: Vec<PersistentVolumeClaim>,
    },
    /// Delete a pod.
    DeletePod {
        /// The pod.
        pod: Arc<Pod>,
        /// Why.
        reason: DeleteReason,
    },
    /// Put back a member's identity labels.
    RestoreIdentity {
        /// The member.
        pod: Arc<Pod>,
        /// The labels to set.
        labels: BTreeMap<String, String>,
    },
    /// Set a claim's owner references as the retention policy requires.
    SetClaimOwners {
        /// The claim.
        claim: Arc<PersistentVolumeClaim>,
        /// Its new owner references.
        owners: Vec<OwnerReference>,
    },
}

/// What one reconcile decides.
#[derive(Debug, Default)]
pub struct Plan {
    /// Orphan pods to take ownership of.
    pub adopt: Vec<Arc<Pod>>,
    /// Owned pods the selector (or the name) no longer matches.
    pub release: Vec<Arc<Pod>>,
    /// Groups of writes in order. Writes in one group are independent; a
    /// failed write cancels the groups after it.
    pub phases: Vec<Vec<Step>>,
    /// `Parallel` management: a group's writes may run concurrently.
    pub parallel: bool,
    /// The status to write.
    pub status: StatefulSetStatus,
    /// When a ready pod becomes available, to act and count it then.
    pub recheck_after: Option<Duration>,
}

/// A member's place in the ordinal range.
enum Slot {
    /// No pod, none being created.
    Missing,
    /// Created by an earlier reconcile, not in the cache yet.
    Creating,
    /// The pod.
    Pod(Arc<Pod>),
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The status differs in what it reports; an unset count or revision
/// equals zero or empty, as in upstream's comparison.
pub fn status_changed(old: Option<&StatefulSetStatus>, new: &StatefulSetStatus) -> bool {
    let old = old.cloned().unwrap_or_default();
    let count = |v: Option<i32>| v.unwrap_or(0);
    let name = |v: &Option<String>| v.clone().unwrap_or_default();
    old.observed_generation.unwrap_or(0) != new.observed_generation.unwrap_or(0)
        || old.replicas != new.replicas
        || count(old.ready_replicas) != count(new.ready_replicas)
        || count(old.available_replicas) != count(new.available_replicas)
        || count(old.current_replicas) != count(new.current_replicas)
        || count(old.updated_replicas) != count(new.updated_replicas)
        || count(old.collision_count) != count(new.collision_count)
        || name(&old.current_revision) != name(&new.current_revision)
        || name(&old.update_revision) != name(&new.update_revision)
        || old.conditions != new.conditions
}

/// Decides what to do for `set`.
pub fn plan(set: &StatefulSet, revisions: &Revisions, observed: &Observed<'_>) -> Plan {
    Planner::new(set, revisions, observed).run()
}

struct Planner<'a> {
    set: &'a StatefulSet,
    revisions: &'a Revisions,
    observed: &'a Observed<'a>,
    policy: RetentionPolicy,
    min_ready: i32,
    start: i32,
    monotonic: bool,
}

impl<'a> Planner<'a> {
    fn new(set: &'a StatefulSet, revisions: &'a Revisions, observed: &'a Observed<'a>) -> Self {
        Self {
            set,
            revisions,
            observed,
            policy: RetentionPolicy::of(set),
            min_ready: set.spec.min_ready_seconds.unwrap_or(0),
            start: start_ordinal(set),
            monotonic: set.spec.pod_management_policy.as_deref() != Some("Parallel"),
        }
    }

    fn terminating(&self, pod: &Pod) -> bool {
        pod.metadata.deletion_timestamp.is_some()
            || self.observed.in_flight.deletes.contains(&pod.name_any())
    }

    fn running_and_ready(pod: &Pod) -> bool {
        phase(pod) == "Running" && pods::is_ready(pod)
    }

    fn available(&self, pod: &Pod) -> bool {
        Self::running_and_ready(pod) && pods::is_available(pod, self.min_ready, self.observed.now)
    }

    fn healthy(&self, pod: &Pod) -> bool {
        Self::running_and_ready(pod) && !self.terminating(pod)
    }

    fn run(self) -> Plan {
        let mut plan = Plan {
            parallel: !self.monotonic,
            ..Plan::default()
        };
        let owned = self.claim_pods(&mut plan);
        plan.status = self.status(&owned);
        plan.recheck_after = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .filter_map(|p| pods::seconds_until_available(p, self.min_ready, self.observed.now))
            .min()
            .map(|s| Duration::from_secs(s.unsigned_abs()));
        if self.set.metadata.deletion_timestamp.is_some() {
            return self.finish(plan);
        }
        let (slots, condemned) = self.slots(owned);
        if self.members(&slots, &mut plan) {
            return self.finish(plan);
        }
        if self.condemned(&slots, &condemned, &mut plan) {
            return self.finish(plan);
        }
        if self.strategy() == "RollingUpdate" {
            self.roll(&slots, &mut plan);
        }
        self.finish(plan)
    }

    fn finish(&self, mut plan: Plan) -> Plan {
        plan.phases.retain(|phase| !phase.is_empty());
        let count = replicas(self.set);
        let status = &mut plan.status;
        if self.strategy() == "RollingUpdate"
            && status.updated_replicas == Some(count)
            && status.ready_replicas == Some(count)
            && status.replicas == count
        {
            status.current_replicas = status.updated_replicas;
            status.current_revision = status.update_revision.clone();
        }
        plan
    }

    fn strategy(&self) -> &str {
        self.set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
    }

    /// Owned pods (adopting matching orphans, releasing mismatches).
    fn claim_pods(&self, plan: &mut Plan) -> Vec<Arc<Pod>> {
        let selector = pods::selector(Some(&self.set.spec.selector));
        let uid = self.set.uid().unwrap_or_default();
        let deleting = self.set.metadata.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for pod in self.observed.candidates {
            let matches =
                pods::selects(&selector, pod.metadata.labels.as_ref()) && is_member(self.set, pod);
            match controller_uid(&**pod) {
                Some(owner) if owner == uid => {
                    if matches || deleting {
                        owned.push(Arc::clone(pod));
                    } else {
                        plan.release.push(Arc::clone(pod));
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !deleting && pod.metadata.deletion_timestamp.is_none() {
                        plan.adopt.push(Arc::clone(pod));
                        owned.push(Arc::clone(pod));
                    }
                }
            }
        }
        owned
    }

    /// The members by ordinal, and the condemned pods, highest ordinal first.
    fn slots(&self, owned: Vec<Arc<Pod>>) -> (Vec<Slot>, Vec<Arc<Pod>>) {
        let count = replicas(self.set);
        let index = |ordinal: i32| {
            (ordinal >= self.start && ordinal - self.start < count)
                .then(|| usize::try_from(ordinal - self.start).ok())
                .flatten()
        };
        let mut slots: Vec<Slot> = (0..count).map(|_| Slot::Missing).collect();
        let mut condemned = Vec::new();
        for pod in owned {
            let Some(ordinal) = ordinal(&pod) else {
                continue;
            };
            match index(ordinal) {
                Some(i) => slots[i] = Slot::Pod(pod),
                None => condemned.push(pod),
            }
        }
        let set_name = self.set.name_any();
        for name in &self.observed.in_flight.creates {
            if let Some((parent, ordinal)) = parent_and_ordinal(name)
                && parent == set_name
                && let Some(i) = index(ordinal)
                && matches!(slots[i], Slot::Missing)
            {
                slots[i] = Slot::Creating;
            }
        }
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));
        (slots, condemned)
    }

    /// The revision a recreated member at `index` gets.
    fn revision_for(&self, index: usize) -> &'a Revision {
        let strategy = self.set.spec.update_strategy.as_ref();
        let below = |bound: i32| i32::try_from(index).is_ok_and(|i| i < bound);
        let current = match strategy.and_then(|s| s.rolling_update.as_ref()) {
            Some(rolling) => below(rolling.partition.unwrap_or(0)),
            None => {
                self.strategy() == "RollingUpdate"
                    && below(
                        self.set
                            .status
                            .as_ref()
                            .and_then(|s| s.current_replicas)
                            .unwrap_or(0),
                    )
            }
        };
        if current {
            &self.revisions.current
        } else {
            &self.revisions.update
        }
    }

    /// Claims of a member that do not exist yet.
    fn missing_claims(&self, ordinal: i32) -> Vec<PersistentVolumeClaim> {
        claims_for(self.set, ordinal)
            .into_iter()
            .filter(|c| !self.observed.claims.contains_key(&c.name_any()))
            .collect()
    }

    /// Owner updates the retention policy wants on an existing pod's claims.
    fn retention_steps(&self, pod: &Pod, ordinal: i32, scaled_down: bool) -> Vec<Step> {
        claims_for(self.set, ordinal)
            .iter()
            .filter_map(|c| self.observed.claims.get(&c.name_any()))
            .filter_map(|claim| {
                owner_update(claim, self.set, pod, scaled_down).map(|owners| Step::SetClaimOwners {
                    claim: Arc::clone(claim),
                    owners,
                })
            })
            .collect()
    }

    /// A claim the member must not be created on yet: being deleted, or
    /// still owned by an earlier pod of the member that the garbage
    /// collector is deleting.
    fn claims_block(&self, ordinal: i32) -> bool {
        let name = pod_name(&self.set.name_any(), ordinal);
        claims_for(self.set, ordinal)
            .iter()
            .filter_map(|c| self.observed.claims.get(&c.name_any()))
            .any(|c| c.metadata.deletion_timestamp.is_some() || is_stale(c, self.policy, &name))
    }

    /// Walks the members upward. True if a monotonic set must wait.
    fn members(&self, slots: &[Slot], plan: &mut Plan) -> bool {
        let mut steps = Vec::new();
        let mut wait = false;
        for (index, slot) in slots.iter().enumerate() {
            let ordinal = self.start + i32::try_from(index).unwrap_or(i32::MAX);
            let blocked = match slot {
                Slot::Missing => {
                    if !self.claims_block(ordinal) {
                        let revision = self.revision_for(index);
                        steps.push(Step::CreatePod {
                            pod: Box::new(new_pod(
                                self.set,
                                &revision.template,
                                &revision.name,
                                ordinal,
                            )),
                            claims: self.missing_claims(ordinal),
                        });
                    }
                    true
                }
                Slot::Creating => true,
                Slot::Pod(pod) => self.member(pod, ordinal, &mut steps),
            };
            if blocked && self.monotonic {
                wait = true;
                break;
            }
        }
        plan.phases.push(steps);
        wait
    }

    /// One existing member. True if it holds back the members after it.
    fn member(&self, pod: &Arc<Pod>, ordinal: i32, steps: &mut Vec<Step>) -> bool {
        if matches!(phase(pod), "Failed" | "Succeeded") {
            if !self.terminating(pod) {
                steps.push(Step::DeletePod {
                    pod: Arc::clone(pod),
                    reason: DeleteReason::Finished,
                });
            }
            return true;
        }
        let mut retention_done = false;
        if phase(pod) == "Pending" {
            let claims = self.missing_claims(ordinal);
            if !claims.is_empty() {
                steps.push(Step::CreateClaims {
                    pod: Arc::clone(pod),
                    claims,
                });
            }
            steps.extend(self.retention_steps(pod, ordinal, false));
            retention_done = true;
        }
        let waiting = self.terminating(pod) || !self.available(pod);
        if waiting && self.monotonic {
            return true;
        }
        if !identity_matches(self.set, pod) {
            steps.push(Step::RestoreIdentity {
                pod: Arc::clone(pod),
                labels: identity_labels(self.set, ordinal),
            });
        }
        if !storage_matches(self.set, pod) && !retention_done {
            let claims = self.missing_claims(ordinal);
            if !claims.is_empty() {
                steps.push(Step::CreateClaims {
                    pod: Arc::clone(pod),
                    claims,
                });
            }
        }
        if !retention_done {
            steps.extend(self.retention_steps(pod, ordinal, false));
        }
        waiting
    }

    /// The first member (or else condemned pod, lowest ordinal first) that
    /// is missing, not Running and Ready, or terminating.
    fn first_unhealthy(&self, slots: &[Slot], condemned: &[Arc<Pod>]) -> Option<String> {
        let set_name = self.set.name_any();
        let member = slots
            .iter()
            .enumerate()
            .find_map(|(index, slot)| match slot {
                Slot::Pod(pod) if self.healthy(pod) => None,
                Slot::Pod(pod) => Some(pod.name_any()),
                Slot::Missing | Slot::Creating => Some(pod_name(
                    &set_name,
                    self.start + i32::try_from(index).unwrap_or(i32::MAX),
                )),
            });
        member.or_else(|| {
            condemned
                .iter()
                .rev()
                .find(|p| !self.healthy(p))
                .map(|p| p.name_any())
        })
    }

    /// Fixes condemned pods' claims, then deletes condemned pods. True if
    /// a monotonic set must wait.
    fn condemned(&self, slots: &[Slot], condemned: &[Arc<Pod>], plan: &mut Plan) -> bool {
        plan.phases.push(
            condemned
                .iter()
                .flat_map(|pod| self.retention_steps(pod, ordinal(pod).unwrap_or(0), true))
                .collect(),
        );
        let first_unhealthy = self.first_unhealthy(slots, condemned);
        let mut steps = Vec::new();
        let mut wait = false;
        for pod in condemned {
            if self.terminating(pod) {
                if self.monotonic {
                    wait = true;
                    break;
                }
                continue;
            }
            let is_first_unhealthy = first_unhealthy.as_deref() == Some(pod.name_any().as_str());
            if self.monotonic && !self.available(pod) && !is_first_unhealthy {
                wait = true;
                break;
            }
            steps.push(Step::DeletePod {
                pod: Arc::clone(pod),
                reason: DeleteReason::ScaleDown,
            });
            if self.monotonic {
                wait = true;
                break;
            }
        }
        plan.phases.push(steps);
        wait
    }

    fn max_unavailable(&self) -> i32 {
        let count = replicas(self.set);
        let value = self
            .set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref());
        let resolved = match value {
            None => 1,
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(s)) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .map_or(1, |percent| {
                    i32::try_from(percent * i64::from(count) / 100).unwrap_or(i32::MAX)
                }),
        };
        resolved.max(1)
    }

    /// Deletes members not at the update revision, from the highest ordinal
    /// down to the partition, within `maxUnavailable`.
    fn roll(&self, slots: &[Slot], plan: &mut Plan) {
        fn pod_at(slot: &Slot) -> Option<&Arc<Pod>> {
            match slot {
                Slot::Pod(pod) => Some(pod),
                Slot::Missing | Slot::Creating => None,
            }
        }
        let update = self.revisions.update.name.as_str();
        let partition = self
            .set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let max_unavailable = self.max_unavailable();
        let outdated = |pod: &Pod| revision_of(pod) != update && !self.terminating(pod);
        let unavailable = slots
            .iter()
            .filter(|slot| pod_at(slot).is_none_or(|p| !self.available(p) || self.terminating(p)))
            .count();
        let unavailable = i32::try_from(unavailable).unwrap_or(i32::MAX);
        let stuck_outdated = slots
            .iter()
            .filter_map(pod_at)
            .filter(|p| !self.monotonic && outdated(p) && !self.available(p))
            .count();
        if unavailable >= max_unavailable && stuck_outdated == 0 {
            return;
        }
        let targets: Vec<&Arc<Pod>> = slots
            .iter()
            .enumerate()
            .rev()
            .filter(|(index, _)| i32::try_from(*index).is_ok_and(|i| i >= partition))
            .filter_map(|(_, slot)| pod_at(slot))
            .filter(|p| outdated(p))
            .collect();
        let mut budget = max_unavailable - unavailable;
        let mut doomed: Vec<&Arc<Pod>> = Vec::new();
        if !self.monotonic {
            // Pods already unavailable cost nothing more to replace.
            doomed.extend(targets.iter().filter(|p| !self.available(p)));
        }
        for pod in targets {
            if budget <= 0 {
                break;
            }
            if self.monotonic || self.available(pod) {
                doomed.push(pod);
                budget -= 1;
            }
        }
        if let Some(current) = plan.status.current_replicas.as_mut() {
            *current -= i32::try_from(doomed.len()).unwrap_or(0);
        }
        plan.phases.push(
            doomed
                .into_iter()
                .map(|pod| Step::DeletePod {
                    pod: Arc::clone(pod),
                    reason: DeleteReason::Update,
                })
                .collect(),
        );
    }

    fn status(&self, owned: &[Arc<Pod>]) -> StatefulSetStatus {
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let created = |p: &Pod| !phase(p).is_empty();
        let at = |revision: &str| {
            count(&|p: &Pod| {
                created(p) && p.metadata.deletion_timestamp.is_none() && revision_of(p) == revision
            })
        };
        StatefulSetStatus {
            observed_generation: self.set.metadata.generation,
            replicas: count(&created),
            ready_replicas: Some(count(&Self::running_and_ready)),
            available_replicas: Some(count(&|p| self.available(p))),
            current_replicas: Some(at(&self.revisions.current.name)),
            updated_replicas: Some(at(&self.revisions.update.name)),
            current_revision: Some(self.revisions.current.name.clone()),
            update_revision: Some(self.revisions.update.name.clone()),
            collision_count: Some(self.revisions.collision_count),
            conditions: self.set.status.as_ref().and_then(|s| s.conditions.clone()),
        }
    }
}
