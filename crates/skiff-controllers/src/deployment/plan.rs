//! One reconcile's decisions, with no IO: which ReplicaSets to adopt or
//! release, which to create, scale, re-annotate or delete, and the status.
//!
//! The flow is upstream's `syncDeployment`: a deployment being deleted only
//! reports status; a paused deployment, or one whose size changed, only
//! scales (proportionally, mid-rollout); otherwise its strategy takes one
//! step of the rollout. Upstream performs each write as it decides it and
//! carries on with the result; here the steps run on copies of the cached
//! ReplicaSets, and the [`Plan`] lists the end state of every ReplicaSet
//! that changed. Nothing is lost by this: a write that fails stops the
//! reconcile, and the next one starts again from what the caches show.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::hash::{equal_ignore_hash, pod_template_hash};
use super::progress::{
    FOUND_NEW_RS, NEW_REPLICA_SET, PROGRESSING, calculate_status, check_paused, condition,
    deadline_recheck, deployment_complete, new_condition, rollout_status, set_condition,
};
use super::replicas::{
    Params, SpecError, Strategy, available_replicas, by_creation, by_size_newer, by_size_older,
    desired_replicas_annotation, is_saturated, new_rs_new_replicas, proportion, spec_replicas,
    status_replicas,
};
use super::revision::{
    history_to_delete, max_revision, replicas_annotations_need_update, set_new_rs_annotations,
    set_replicas_annotations,
};
use super::{DeploymentConfig, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};
use crate::informer::controller_uid;
use crate::pods::{self, controller_reference};

/// What a reconcile reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The deployment.
    pub deployment: &'a Deployment,
    /// The ReplicaSets it owns (after [`claim`]).
    pub replica_sets: &'a [Arc<ReplicaSet>],
    /// The pods of each of those ReplicaSets, by ReplicaSet UID.
    pub pods: &'a HashMap<String, Vec<Arc<Pod>>>,
    /// The time.
    pub now: Timestamp,
    /// Tunables.
    pub config: &'a DeploymentConfig,
}

/// What a reconcile decides. Writes go in field order: create, update,
/// the deployment's revision, delete, status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The new ReplicaSet to create.
    pub create: Option<ReplicaSet>,
    /// Existing ReplicaSets as they should be (replicas, annotations,
    /// minReadySeconds changed).
    pub update: Vec<ReplicaSet>,
    /// The value for the deployment's revision annotation, if it changes.
    pub revision: Option<String>,
    /// Old ReplicaSets beyond the revision history limit.
    pub delete: Vec<Arc<ReplicaSet>>,
    /// The deployment's status.
    pub status: DeploymentStatus,
    /// The selector is empty: the deployment would select every pod, so it
    /// does nothing but say so.
    pub selecting_all: bool,
    /// When to look again even if nothing changes (progress deadline,
    /// minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// ReplicaSets a deployment takes or gives up.
#[derive(Debug, Default)]
pub struct Claim {
    /// Every ReplicaSet the deployment manages after the claim.
    pub owned: Vec<Arc<ReplicaSet>>,
    /// Orphans the selector matches, to adopt.
    pub adopt: Vec<Arc<ReplicaSet>>,
    /// Owned ReplicaSets the selector no longer matches, to release.
    pub release: Vec<Arc<ReplicaSet>>,
}

/// True if the selector is empty, which would select every pod.
pub fn selects_everything(d: &Deployment) -> bool {
    pods::selector(Some(&d.spec.selector)).is_everything()
}

/// Sorts `candidates` (the ReplicaSets `d` controls and the orphans of its
/// namespace) as upstream's ReplicaSet claim does: owned ones the selector
/// matches stay, owned ones it no longer matches are released, orphans it
/// matches are adopted. A deployment being deleted only keeps what it has.
pub fn claim(d: &Deployment, candidates: &[Arc<ReplicaSet>]) -> Claim {
    let uid = d.uid().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let everything = selects_everything(d);
    let selector = pods::selector(Some(&d.spec.selector));
    let mut claim = Claim::default();
    for rs in candidates {
        let matches = !everything && pods::selects(&selector, rs.metadata.labels.as_ref());
        match controller_uid(&**rs) {
            Some(owner) if owner == uid => {
                if matches || everything {
                    claim.owned.push(Arc::clone(rs));
                } else if !deleting {
                    claim.release.push(Arc::clone(rs));
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && rs.metadata.deletion_timestamp.is_none() {
                    claim.adopt.push(Arc::clone(rs));
                    claim.owned.push(Arc::clone(rs));
                }
            }
        }
    }
    claim
}

/// Decides one reconcile of `input.deployment`.
pub fn plan(input: &Input<'_>) -> Result<Plan, SpecError> {
    let d = input.deployment;
    // Conditions carry whole seconds, as the API stores them.
    let now = Timestamp::from_second(input.now.as_second()).unwrap_or(input.now);
    let previous = d.status.clone().unwrap_or_default();
    if selects_everything(d) {
        let mut status = previous;
        if status.observed_generation < d.metadata.generation {
            status.observed_generation = d.metadata.generation;
        }
        return Ok(Plan {
            status,
            selecting_all: true,
            ..Plan::default()
        });
    }
    let params = Params::of(d)?;
    let mut planner = Planner::new(input, params, now);
    if d.metadata.deletion_timestamp.is_some() {
        planner.sync_revision(false);
        return Ok(planner.finish(Finish::Counts));
    }
    check_paused(&mut planner.status, &planner.params, now);
    planner.sync_revision(false);
    if planner.params.paused {
        planner.scale();
        planner.cleanup();
        return Ok(planner.finish(Finish::Counts));
    }
    if planner.is_scaling_event() {
        planner.scale();
        return Ok(planner.finish(Finish::Counts));
    }
    match planner.params.strategy {
        Strategy::RollingUpdate => planner.rolling(),
        Strategy::Recreate => planner.recreate(),
    }
    Ok(planner.finish(Finish::Rollout))
}

/// Which status a path ends with: counts and availability only (scaling,
/// pausing, deletion), or a rollout step's progress as well.
enum Finish {
    Counts,
    Rollout,
}

/// The working state of one reconcile.
struct Planner<'a> {
    d: &'a Deployment,
    input: &'a Input<'a>,
    params: Params,
    now: Timestamp,
    /// The cached ReplicaSets, oldest first.
    cached: Vec<Arc<ReplicaSet>>,
    /// Working copies of `cached` (same order), then the one to create.
    sets: Vec<ReplicaSet>,
    /// Index in `sets` of the ReplicaSet running the deployment's template.
    new: Option<usize>,
    /// The deployment's status as the steps so far left it.
    status: DeploymentStatus,
    revision: Option<String>,
    delete: Vec<Arc<ReplicaSet>>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a Input<'a>, params: Params, now: Timestamp) -> Self {
        let d = input.deployment;
        let mut cached = input.replica_sets.to_vec();
        cached.sort_by(|a, b| by_creation(a, b));
        let sets: Vec<ReplicaSet> = cached.iter().map(|rs| (**rs).clone()).collect();
        // The oldest ReplicaSet with the template is the current one.
        let new = sets.iter().position(|rs| {
            rs.spec
                .template
                .as_ref()
                .is_some_and(|t| equal_ignore_hash(t, &d.spec.template))
        });
        Self {
            d,
            input,
            params,
            now,
            cached,
            sets,
            new,
            status: d.status.clone().unwrap_or_default(),
            revision: None,
            delete: Vec::new(),
        }
    }

    fn old(&self) -> Vec<usize> {
        (0..self.sets.len())
            .filter(|i| Some(*i) != self.new)
            .collect()
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .copied()
            .filter(|i| spec_replicas(&self.sets[*i]) > 0)
            .collect()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.sets.len()).collect()
    }

    fn refs(&self, indices: &[usize]) -> Vec<&ReplicaSet> {
        indices.iter().map(|i| &self.sets[*i]).collect()
    }

    fn sorted(
        &self,
        mut indices: Vec<usize>,
        order: fn(&ReplicaSet, &ReplicaSet) -> std::cmp::Ordering,
    ) -> Vec<usize> {
        indices.sort_by(|a, b| order(&self.sets[*a], &self.sets[*b]));
        indices
    }

    fn creating(&self) -> bool {
        self.new.is_some_and(|i| i >= self.cached.len())
    }

    fn set_deployment_revision(&mut self, revision: String) {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION));
        self.revision = (current != Some(&revision)).then_some(revision);
    }

    /// Brings the current ReplicaSet's revision and annotations up to date,
    /// or with `create`, makes it when there is none.
    fn sync_revision(&mut self, create: bool) {
        let next = max_revision(self.refs(&self.old())) + 1;
        let (desired, max) = (self.params.replicas, self.params.max_replicas());
        let chars = self.input.config.revision_history_max_chars;
        if let Some(i) = self.new {
            let exists = !self.creating();
            let rs = &mut self.sets[i];
            set_new_rs_annotations(self.d, rs, next, exists, desired, max, chars);
            if rs.spec.min_ready_seconds.unwrap_or(0) != self.params.min_ready_seconds {
                rs.spec.min_ready_seconds = Some(self.params.min_ready_seconds);
            }
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            let name = rs.name_any();
            self.set_deployment_revision(revision);
            if self.params.progress_deadline.is_some()
                && condition(&self.status, PROGRESSING).is_none()
            {
                let message = format!("Found new replica set {name:?}");
                let found = new_condition(PROGRESSING, "True", FOUND_NEW_RS, message, self.now);
                set_condition(&mut self.status, found);
            }
            return;
        }
        if !create {
            return;
        }
        let mut rs = self.new_replica_set();
        let all: Vec<&ReplicaSet> = self.sets.iter().chain([&rs]).collect();
        let replicas = new_rs_new_replicas(&self.params, &all, &rs);
        rs.spec.replicas = Some(replicas);
        set_new_rs_annotations(self.d, &mut rs, next, false, desired, max, chars);
        let message = format!("Created new replica set {:?}", rs.name_any());
        self.sets.push(rs);
        self.new = Some(self.sets.len() - 1);
        self.set_deployment_revision(next.to_string());
        if self.params.progress_deadline.is_some() {
            let created = new_condition(PROGRESSING, "True", NEW_REPLICA_SET, message, self.now);
            set_condition(&mut self.status, created);
        }
    }

    /// A ReplicaSet for the deployment's template, named and labelled with
    /// its hash, owned by the deployment, at zero replicas.
    fn new_replica_set(&self) -> ReplicaSet {
        let d = self.d;
        let hash = pod_template_hash(&d.spec.template, self.status.collision_count);
        let mut template = d.spec.template.clone();
        let labels = template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default();
        labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let labels = labels.clone();
        let mut selector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: d.namespace(),
                labels: Some(labels),
                owner_references: Some(vec![controller_reference(d)]),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        }
    }

    /// Sets a ReplicaSet's size, refreshing its size annotations whenever
    /// it is written; true if the size changed.
    fn scale_rs(&mut self, i: usize, to: i32) -> bool {
        let (desired, max) = (self.params.replicas, self.params.max_replicas());
        let rs = &mut self.sets[i];
        let resize = spec_replicas(rs) != to;
        if resize || replicas_annotations_need_update(rs, desired, max) {
            rs.spec.replicas = Some(to);
            set_replicas_annotations(rs, desired, max);
        }
        resize
    }

    /// [`Self::scale_rs`], only if the size changes.
    fn scale_to(&mut self, i: usize, to: i32) -> bool {
        spec_replicas(&self.sets[i]) != to && self.scale_rs(i, to)
    }

    /// Some active ReplicaSet was last sized for another deployment size.
    fn is_scaling_event(&self) -> bool {
        self.active(&self.all()).iter().any(|i| {
            desired_replicas_annotation(&self.sets[*i]).is_some_and(|d| d != self.params.replicas)
        })
    }

    /// Resizes the ReplicaSets to the deployment's size: the only active one
    /// (or the newest) takes it all; a saturated new one lets old ones go to
    /// zero; otherwise a rolling deployment shares the change out in
    /// proportion to each ReplicaSet's size, leftovers to the largest.
    fn scale(&mut self) {
        let old = self.sorted(self.old(), by_creation);
        let mut candidates: Vec<usize> = old.iter().rev().copied().collect();
        candidates.extend(self.new);
        let active = self.active(&candidates);
        let target = match active.len() {
            0 => self.new.or_else(|| candidates.first().copied()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            self.scale_to(i, self.params.replicas);
            return;
        }
        if self
            .new
            .is_some_and(|i| is_saturated(&self.params, &self.sets[i]))
        {
            for i in self.active(&old) {
                self.scale_to(i, 0);
            }
            return;
        }
        if self.params.strategy != Strategy::RollingUpdate {
            return;
        }
        let total: i32 = active.iter().map(|i| spec_replicas(&self.sets[*i])).sum();
        let allowed = if self.params.replicas > 0 {
            self.params.max_replicas()
        } else {
            0
        };
        let to_add = allowed - total;
        let active = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => self.sorted(active, by_size_newer),
            std::cmp::Ordering::Less => self.sorted(active, by_size_older),
            std::cmp::Ordering::Equal => active,
        };
        let observed = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut added = 0;
        let mut sizes: Vec<i32> = active
            .iter()
            .map(|i| {
                let rs = &self.sets[*i];
                let change = proportion(&self.params, rs, observed, to_add, added);
                added += change;
                spec_replicas(rs) + change
            })
            .collect();
        if let Some(largest) = sizes.first_mut() {
            *largest = (*largest + to_add - added).max(0);
        }
        for (i, size) in active.into_iter().zip(sizes) {
            self.scale_rs(i, size);
        }
    }

    /// One step of a rolling update: create or grow the new ReplicaSet
    /// within the surge, else shrink old ones within the unavailability
    /// budget (unhealthy pods first), else, once complete, trim history.
    fn rolling(&mut self) {
        self.sync_revision(true);
        if self.reconcile_new() {
            return;
        }
        let active_old = self.active(&self.old());
        if self.reconcile_old(active_old) {
            return;
        }
        if deployment_complete(&self.params, self.d.metadata.generation, &self.previous()) {
            self.cleanup();
        }
    }

    fn previous(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    fn reconcile_new(&mut self) -> bool {
        let Some(new) = self.new else {
            return false;
        };
        let current = spec_replicas(&self.sets[new]);
        if current == self.params.replicas {
            return false;
        }
        if current > self.params.replicas {
            return self.scale_to(new, self.params.replicas);
        }
        let count = new_rs_new_replicas(&self.params, &self.refs(&self.all()), &self.sets[new]);
        self.scale_to(new, count)
    }

    fn reconcile_old(&mut self, active_old: Vec<usize>) -> bool {
        let Some(new) = self.new else {
            return false;
        };
        let old_pods: i32 = active_old
            .iter()
            .map(|i| spec_replicas(&self.sets[*i]))
            .sum();
        if old_pods == 0 {
            return false;
        }
        let all_pods: i32 = self.sets.iter().map(spec_replicas).sum();
        let min_available = self.params.replicas - self.params.max_unavailable;
        let new_rs = &self.sets[new];
        let new_unavailable = spec_replicas(new_rs) - available_replicas(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let active_old = self.sorted(active_old, by_creation);
        let cleaned = self.cleanup_unhealthy(&active_old, max_scaled_down);
        let scaled = self.scale_down_old(&active_old, new);
        cleaned + scaled > 0
    }

    /// Scales unavailable pods out of old ReplicaSets (oldest first), up to
    /// `limit`: they serve nothing, so losing them costs no availability.
    fn cleanup_unhealthy(&mut self, old: &[usize], limit: i32) -> i32 {
        let mut total = 0;
        for &i in old {
            if total >= limit {
                break;
            }
            let rs = &self.sets[i];
            let (replicas, available) = (spec_replicas(rs), available_replicas(rs));
            if replicas == 0 || available >= replicas {
                continue;
            }
            let count = (limit - total).min(replicas - available);
            self.scale_to(i, replicas - count);
            total += count;
        }
        total
    }

    /// Scales old ReplicaSets down (oldest first) as far as the available
    /// pods exceed the minimum availability.
    fn scale_down_old(&mut self, old: &[usize], new: usize) -> i32 {
        let min_available = self.params.replicas - self.params.max_unavailable;
        let available: i32 = old
            .iter()
            .chain([&new])
            .map(|i| available_replicas(&self.sets[*i]))
            .sum();
        if available <= min_available {
            return 0;
        }
        let budget = available - min_available;
        let mut total = 0;
        for &i in old {
            if total >= budget {
                break;
            }
            let replicas = spec_replicas(&self.sets[i]);
            if replicas == 0 {
                continue;
            }
            let count = replicas.min(budget - total);
            self.scale_to(i, replicas - count);
            total += count;
        }
        total
    }

    /// One step of a Recreate rollout: scale every old ReplicaSet to zero,
    /// wait until their pods are gone, then run the new one at full size.
    fn recreate(&mut self) {
        let mut scaled = false;
        for i in self.active(&self.old()) {
            scaled |= self.scale_to(i, 0);
        }
        if scaled || self.old_pods_running() {
            return;
        }
        if self.new.is_none() {
            self.sync_revision(true);
        }
        if let Some(new) = self.new {
            self.scale_to(new, self.params.replicas);
        }
        if deployment_complete(&self.params, self.d.metadata.generation, &self.previous()) {
            self.cleanup();
        }
    }

    /// Old ReplicaSets still report pods, or some pod of theirs has not
    /// finished (terminating pods included).
    fn old_pods_running(&self) -> bool {
        let old = self.old();
        if old
            .iter()
            .map(|i| status_replicas(&self.sets[*i]))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        let new_uid = self.new.and_then(|i| self.sets[i].metadata.uid.as_deref());
        self.input.pods.iter().any(|(rs, pods)| {
            Some(rs.as_str()) != new_uid
                && pods.iter().any(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    !matches!(phase, Some("Succeeded" | "Failed"))
                })
        })
    }

    /// Deletes old ReplicaSets beyond the revision history limit.
    fn cleanup(&mut self) {
        let old = self.old();
        let doomed: Vec<String> =
            history_to_delete(&self.refs(&old), self.params.revision_history_limit)
                .into_iter()
                .map(ResourceExt::name_any)
                .collect();
        self.delete = self
            .cached
            .iter()
            .filter(|rs| doomed.contains(&rs.name_any()))
            .cloned()
            .collect();
    }

    fn finish(self, finish: Finish) -> Plan {
        let all = self.refs(&self.all());
        let new = self.new.map(|i| &self.sets[i]);
        let generation = self.d.metadata.generation;
        let status = match finish {
            Finish::Counts => {
                calculate_status(&all, new, generation, &self.status, &self.params, self.now)
            }
            Finish::Rollout => rollout_status(
                &all,
                new,
                &self.d.name_any(),
                generation,
                &self.status,
                &self.params,
                self.now,
            ),
        };
        let availability = self
            .input
            .pods
            .values()
            .flatten()
            .filter(|p| pods::is_active(p))
            .filter_map(|p| {
                pods::seconds_until_available(p, self.params.min_ready_seconds, self.now)
            })
            .min()
            .map(|s| Duration::from_secs(s.unsigned_abs()));
        let deadline = deadline_recheck(&self.params, generation, &status, self.now);
        let requeue_after = [availability, deadline].into_iter().flatten().min();
        let update = self
            .cached
            .iter()
            .zip(&self.sets)
            .filter(|(before, after)| {
                before.spec.replicas != after.spec.replicas
                    || before.spec.min_ready_seconds != after.spec.min_ready_seconds
                    || before.metadata.annotations != after.metadata.annotations
            })
            .map(|(_, after)| after.clone())
            .collect();
        let create = self
            .creating()
            .then(|| self.sets[self.sets.len() - 1].clone());
        Plan {
            create,
            update,
            revision: self.revision,
            delete: self.delete,
            status,
            selecting_all: false,
            requeue_after,
        }
    }
}

#[cfg(test)]
mod tests;
