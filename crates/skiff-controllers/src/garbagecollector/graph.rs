//! The dependency graph: every watched object and every owner they name,
//! keyed by UID, with the edges owner → dependents.
//!
//! The graph is fed only by the watches ([`Change::Upsert`],
//! [`Change::Delete`]) and by the workers' verdict that an owner the watches
//! never showed does not exist ([`Change::VirtualDelete`]). Applying a change
//! updates the graph and returns the work it makes necessary ([`Effects`]):
//! which objects to look at (`attempt_to_delete`), which owners' dependents
//! to orphan (`attempt_to_orphan`), and which references to report as
//! pointing across namespaces. Nothing here does IO; the workers verify every
//! decision against the API before they act, because the graph may lag.
//!
//! # Virtual nodes
//!
//! A dependent may name an owner that no watch has shown (yet, or ever: it
//! was deleted, it lives in a type that is not watched, or the reference is
//! wrong). Such an owner enters the graph as a *virtual* node, with the
//! coordinates the first dependent gives (its apiVersion, kind and name, in
//! the dependent's namespace), and is queued so that a worker asks the API
//! whether it exists. When a watch shows the object, the node becomes
//! observed and takes the observed coordinates; dependents whose reference
//! disagrees (another namespace, kind or name) are queued to be checked, and
//! a namespaced owner referenced from another namespace is reported
//! (`OwnerRefInvalidNamespace`): owner references never cross namespaces, so
//! such a dependent sees its owner as absent.
//!
//! Worked example: pod `p` (namespace `a`) names ReplicaSet `rs` (UID 1)
//! before the ReplicaSet watch has listed it.
//!
//! ```text
//! Upsert p        → node 1 virtual {apps/v1 ReplicaSet a/rs}, queued
//! Upsert rs (a)   → node 1 observed, identity unchanged, nothing queued
//! Delete rs       → node 1 removed, `p` queued: its owner is gone
//! ```

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The finalizer of an owner waiting for its dependents to be deleted.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of an owner waiting for its dependents to be orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// How many owners verified absent are remembered (upstream's default).
const ABSENT_OWNERS_REMEMBERED: usize = 500;

/// Where an object is: its type, namespace (empty when cluster-scoped),
/// name and UID. The order (apiVersion, kind, namespace, name, UID) is only
/// used to pick among alternative coordinates deterministically.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// `group/version`, or `v1` for the core group.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The UID.
    pub uid: String,
}

impl Identity {
    /// The owner `reference` names, assumed to be in `namespace` (a
    /// reference has no namespace of its own: the owner of a namespaced
    /// object is in the same namespace or cluster-scoped).
    pub fn of_reference(reference: &OwnerReference, namespace: &str) -> Self {
        Self {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: namespace.to_string(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        }
    }

    /// True if `reference` names this object by the same apiVersion, kind,
    /// name and UID.
    pub fn matches_reference(&self, reference: &OwnerReference) -> bool {
        self.uid == reference.uid
            && self.name == reference.name
            && self.kind == reference.kind
            && self.api_version == reference.api_version
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}/{}, namespace: {}, name: {}, uid: {}]",
            self.api_version, self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// What a watch showed of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Where it is.
    pub identity: Identity,
    /// Its `metadata.ownerReferences`.
    pub owners: Vec<OwnerReference>,
    /// True once it has a `deletionTimestamp`.
    pub deleting: bool,
    /// Its `metadata.finalizers`.
    pub finalizers: Vec<String>,
}

impl Observed {
    fn waits_for(&self, finalizer: &str) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == finalizer)
    }

    fn waits(&self) -> Waits {
        Waits {
            orphan: self.waits_for(ORPHAN_FINALIZER),
            foreground: self.waits_for(FOREGROUND_FINALIZER),
        }
    }
}

/// Which deletion an observed object was waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waits {
    orphan: bool,
    foreground: bool,
}

/// Something that happened to the objects the graph mirrors.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A watch showed the object created or changed.
    Upsert(Observed),
    /// A watch showed the object deleted.
    Delete(Identity),
    /// A worker found no object at these coordinates (or one with another
    /// UID).
    VirtualDelete(Identity),
}

/// An object to look at: the UID of a graph node, and whether it was
/// queued as a virtual node (such an entry is stale once a watch shows the
/// object).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Item {
    /// The node's UID.
    pub uid: String,
    /// True if queued while the node was virtual.
    pub virtual_node: bool,
}

impl Item {
    fn of(node: &Node) -> Self {
        Self {
            uid: node.identity.uid.clone(),
            virtual_node: !node.observed,
        }
    }
}

/// A dependent whose owner reference points into another namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOwnerReference {
    /// The dependent.
    pub dependent: Identity,
    /// The owner as the reference names it, in the dependent's namespace.
    pub owner: Identity,
}

/// The work one change makes necessary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Objects to look at now.
    pub attempt_to_delete: Vec<Item>,
    /// Objects to look at again after a backoff.
    pub attempt_to_delete_later: Vec<Item>,
    /// Owners whose dependents must be orphaned (by UID).
    pub attempt_to_orphan: Vec<String>,
    /// References to report.
    pub invalid_namespace: Vec<InvalidOwnerReference>,
}

/// One object of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where it is (for a virtual node: where its first dependent says).
    pub identity: Identity,
    /// Its owner references (empty for virtual nodes).
    pub owners: Vec<OwnerReference>,
    /// The UIDs of the objects naming it as an owner.
    pub dependents: BTreeSet<String>,
    /// False for a virtual node.
    pub observed: bool,
    /// True once a watch showed a `deletionTimestamp`.
    pub being_deleted: bool,
    /// True while it waits, with `foregroundDeletion`, for its dependents.
    pub deleting_dependents: bool,
    /// What the last observation waited on; `None` before the first.
    waits: Option<Waits>,
}

impl Node {
    fn virtual_owner(identity: Identity) -> Self {
        Self {
            identity,
            owners: Vec::new(),
            dependents: BTreeSet::new(),
            observed: false,
            being_deleted: false,
            deleting_dependents: false,
            waits: None,
        }
    }
}

/// Owners the API said do not exist, so that their other dependents need
/// not ask again. Bounded; the oldest entries are forgotten first. Keyed by
/// the full coordinates, since a reference with a wrong namespace or kind
/// proves nothing about the right one.
#[derive(Debug, Default)]
struct AbsentOwners {
    set: HashSet<Identity>,
    order: VecDeque<Identity>,
}

impl AbsentOwners {
    fn insert(&mut self, identity: Identity) {
        if !self.set.insert(identity.clone()) {
            return;
        }
        self.order.push_back(identity);
        if self.order.len() > ABSENT_OWNERS_REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
    }
}

/// The graph. See the module docs.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    absent: AbsentOwners,
}

impl Graph {
    /// The node of `uid`.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many nodes the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the graph holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True if the owner at these coordinates is known not to exist.
    pub fn is_absent(&self, owner: &Identity) -> bool {
        self.absent.set.contains(owner)
    }

    /// Remembers that the owner at these coordinates does not exist.
    pub fn record_absent(&mut self, owner: Identity) {
        self.absent.insert(owner);
    }

    /// The dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<&Node> {
        self.nodes
            .get(uid)
            .into_iter()
            .flat_map(|n| &n.dependents)
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }

    /// The dependents of `uid` whose reference to it has
    /// `blockOwnerDeletion: true`: those a foreground deletion waits for.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<&Node> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| {
                d.owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
            })
            .collect()
    }

    /// The observed objects of one type (to find those a relist no longer
    /// shows).
    pub fn observed_of_type(&self, api_version: &str, kind: &str) -> Vec<Identity> {
        self.nodes
            .values()
            .filter(|n| n.observed && n.identity.api_version == api_version)
            .filter(|n| n.identity.kind == kind)
            .map(|n| n.identity.clone())
            .collect()
    }

    /// Applies `change`, returning the work it makes necessary.
    pub fn apply(&mut self, change: Change) -> Effects {
        let mut effects = Effects::default();
        match change {
            Change::Upsert(observed) => self.upsert(observed, &mut effects),
            Change::Delete(identity) => self.delete(&identity, &mut effects),
            Change::VirtualDelete(identity) => self.virtual_delete(identity, &mut effects),
        }
        effects
    }

    fn upsert(&mut self, observed: Observed, effects: &mut Effects) {
        let uid = observed.identity.uid.clone();
        self.observe_virtual(&observed.identity, effects);
        let waits = observed.waits();
        let previous = match self.nodes.get_mut(&uid) {
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: observed.identity.clone(),
                        owners: observed.owners.clone(),
                        dependents: BTreeSet::new(),
                        observed: true,
                        being_deleted: observed.deleting,
                        deleting_dependents: waits.foreground,
                        waits: Some(waits),
                    },
                );
                self.add_dependent_to_owners(&uid, &observed.owners, effects);
                None
            }
            Some(node) => {
                let old_owners = std::mem::replace(&mut node.owners, observed.owners.clone());
                if observed.deleting {
                    node.being_deleted = true;
                }
                let previous = node.waits.replace(waits);
                let diff = reference_diff(&old_owners, &observed.owners);
                for owner in &diff.unblocked {
                    if let Some(owner) = self.nodes.get(owner) {
                        effects.attempt_to_delete.push(Item::of(owner));
                    }
                }
                self.add_dependent_to_owners(&uid, &diff.added, effects);
                for owner in &diff.removed {
                    if let Some(owner) = self.nodes.get_mut(owner) {
                        owner.dependents.remove(&uid);
                    }
                }
                previous
            }
        };
        self.transitions(&uid, previous, waits, effects);
    }

    /// A watch shows an object the graph held as a virtual owner: it takes
    /// the observed coordinates, and dependents that named it otherwise are
    /// queued to be checked (and reported if they name it from another
    /// namespace).
    fn observe_virtual(&mut self, observed: &Identity, effects: &mut Effects) {
        let Some(node) = self.nodes.get(&observed.uid) else {
            return;
        };
        if node.observed {
            return;
        }
        if node.identity != *observed {
            let (_, mismatched) = self.partition_dependents(node, observed);
            for dependent in mismatched {
                if !observed.namespace.is_empty()
                    && dependent.identity.namespace != observed.namespace
                {
                    effects
                        .invalid_namespace
                        .extend(invalid_reference(dependent, &observed.uid));
                }
                effects.attempt_to_delete.push(Item::of(dependent));
            }
        }
        if let Some(node) = self.nodes.get_mut(&observed.uid) {
            node.identity = observed.clone();
            node.observed = true;
        }
    }

    /// Links `uid` under each of `owners`, creating virtual owners (queued
    /// to be verified) for those not in the graph. A dependent whose
    /// reference disagrees with an owner already known is queued too.
    fn add_dependent_to_owners(
        &mut self,
        uid: &str,
        owners: &[OwnerReference],
        effects: &mut Effects,
    ) {
        let Some(dependent) = self.nodes.get(uid).map(|n| n.identity.clone()) else {
            return;
        };
        let mut suspicious = false;
        for reference in owners {
            match self.nodes.get_mut(&reference.uid) {
                None => {
                    let mut owner = Node::virtual_owner(Identity::of_reference(
                        reference,
                        &dependent.namespace,
                    ));
                    owner.dependents.insert(uid.to_string());
                    effects.attempt_to_delete.push(Item::of(&owner));
                    self.nodes.insert(reference.uid.clone(), owner);
                }
                Some(owner) => {
                    owner.dependents.insert(uid.to_string());
                    if suspicious {
                        continue;
                    }
                    let owner_namespaced = !owner.identity.namespace.is_empty();
                    if owner_namespaced && owner.identity.namespace != dependent.namespace {
                        if owner.observed {
                            effects.invalid_namespace.push(InvalidOwnerReference {
                                dependent: dependent.clone(),
                                owner: Identity::of_reference(reference, &dependent.namespace),
                            });
                        }
                        suspicious = true;
                    } else if !owner.identity.matches_reference(reference) {
                        suspicious = true;
                    } else if !owner_namespaced
                        && owner.identity.namespace != dependent.namespace
                        && !owner.observed
                    {
                        // A virtual cluster-scoped guess named from a
                        // namespace: perhaps a namespaced owner referenced
                        // by a cluster-scoped dependent.
                        suspicious = true;
                    }
                }
            }
        }
        if suspicious && let Some(node) = self.nodes.get(uid) {
            effects.attempt_to_delete.push(Item::of(node));
        }
    }

    /// Queues the work a new deletion state starts: orphaning, or deleting
    /// the dependents first.
    fn transitions(
        &mut self,
        uid: &str,
        previous: Option<Waits>,
        now: Waits,
        effects: &mut Effects,
    ) {
        let started = |was: fn(Waits) -> bool, is: bool| is && !previous.is_some_and(was);
        if started(|w| w.orphan, now.orphan) {
            effects.attempt_to_orphan.push(uid.to_string());
            return;
        }
        if started(|w| w.foreground, now.foreground) {
            let Some(node) = self.nodes.get_mut(uid) else {
                return;
            };
            node.deleting_dependents = true;
            let dependents = self.dependents(uid).into_iter().map(Item::of);
            effects.attempt_to_delete.extend(dependents);
            effects.attempt_to_delete.push(Item::of(&self.nodes[uid]));
        }
    }

    fn delete(&mut self, identity: &Identity, effects: &mut Effects) {
        if self.nodes.contains_key(&identity.uid) {
            self.remove(identity, effects);
        }
    }

    /// Removes a node: its dependents are queued (their owner is gone, and
    /// remembered as absent), and owners waiting for their dependents are
    /// queued to see whether they may go.
    fn remove(&mut self, identity: &Identity, effects: &mut Effects) {
        let Some(node) = self.nodes.remove(&identity.uid) else {
            return;
        };
        for owner in &node.owners {
            if let Some(owner) = self.nodes.get_mut(&owner.uid) {
                owner.dependents.remove(&identity.uid);
            }
        }
        if !node.dependents.is_empty() {
            self.absent.insert(identity.clone());
        }
        for dependent in &node.dependents {
            if let Some(dependent) = self.nodes.get(dependent) {
                effects.attempt_to_delete.push(Item::of(dependent));
            }
        }
        for owner in &node.owners {
            if let Some(owner) = self.nodes.get(&owner.uid)
                && owner.deleting_dependents
            {
                effects.attempt_to_delete.push(Item::of(owner));
            }
        }
    }

    /// A worker found nothing at `deleted`. The node goes unless some of its
    /// dependents name it by other coordinates (then only those that named
    /// `deleted` are queued), or a watch showed it elsewhere.
    fn virtual_delete(&mut self, deleted: Identity, effects: &mut Effects) {
        let Some(node) = self.nodes.get(&deleted.uid) else {
            return;
        };
        if node.observed && node.identity == deleted {
            self.remove(&deleted, effects);
            return;
        }
        let (matching, mismatched) = self.partition_dependents(node, &deleted);
        if node.observed || !mismatched.is_empty() {
            let matching: Vec<Item> = matching.into_iter().map(Item::of).collect();
            let replacement = (!node.observed && node.identity == deleted)
                .then(|| alternate_identity(&mismatched, &deleted))
                .flatten();
            if !matching.is_empty() {
                self.absent.insert(deleted);
                effects.attempt_to_delete.extend(matching);
            }
            if let Some(replacement) = replacement
                && let Some(node) = self.nodes.get_mut(&replacement.uid)
            {
                node.identity = replacement;
                effects.attempt_to_delete_later.push(Item::of(node));
            }
            return;
        }
        self.remove(&deleted, effects);
    }

    /// Splits the dependents of `node` into those whose reference matches
    /// `owner` (same namespace unless the owner is cluster-scoped, same
    /// coordinates) and those that do not. One with several references to
    /// the owner may be in both.
    fn partition_dependents<'a>(
        &'a self,
        node: &Node,
        owner: &Identity,
    ) -> (Vec<&'a Node>, Vec<&'a Node>) {
        let mut matching = Vec::new();
        let mut mismatched = Vec::new();
        for dependent in node.dependents.iter().filter_map(|d| self.nodes.get(d)) {
            if !owner.namespace.is_empty() && owner.namespace != dependent.identity.namespace {
                mismatched.push(dependent);
                continue;
            }
            let references = dependent.owners.iter().filter(|o| o.uid == owner.uid);
            let (mut matches, mut mismatches) = (false, false);
            for reference in references {
                if owner.matches_reference(reference) {
                    matches = true;
                } else {
                    mismatches = true;
                }
            }
            if matches {
                matching.push(dependent);
            }
            if mismatches {
                mismatched.push(dependent);
            }
        }
        (matching, mismatched)
    }
}

/// The report for a dependent's reference to `owner_uid`.
fn invalid_reference(dependent: &Node, owner_uid: &str) -> Option<InvalidOwnerReference> {
    let reference = dependent.owners.iter().find(|o| o.uid == owner_uid)?;
    Some(InvalidOwnerReference {
        dependent: dependent.identity.clone(),
        owner: Identity::of_reference(reference, &dependent.identity.namespace),
    })
}

/// Other coordinates dependents give an owner verified absent at `absent`:
/// the first after `absent` in order, else the first, so that repeated
/// verifications go through every candidate.
fn alternate_identity(dependents: &[&Node], absent: &Identity) -> Option<Identity> {
    let cluster_scoped = absent.namespace.is_empty();
    let mut candidates = BTreeSet::new();
    for dependent in dependents {
        for reference in dependent.owners.iter().filter(|o| o.uid == absent.uid) {
            let mut candidate = Identity::of_reference(reference, &dependent.identity.namespace);
            if cluster_scoped
                && candidate.api_version == absent.api_version
                && candidate.kind == absent.kind
            {
                // That apiVersion and kind were looked up cluster-scoped.
                candidate.namespace.clear();
            }
            if candidate != *absent {
                candidates.insert(candidate);
            }
        }
    }
    candidates
        .iter()
        .find(|c| *c > absent)
        .or_else(|| candidates.iter().next())
        .cloned()
}

/// How a node's owner references changed.
#[derive(Debug, Default, PartialEq)]
struct ReferenceDiff {
    /// References to new owners.
    added: Vec<OwnerReference>,
    /// UIDs of owners no longer referenced.
    removed: Vec<String>,
    /// UIDs of owners whose deletion this object no longer blocks: the
    /// reference had `blockOwnerDeletion: true` and was removed or stopped
    /// blocking.
    unblocked: Vec<String>,
}

fn reference_diff(old: &[OwnerReference], new: &[OwnerReference]) -> ReferenceDiff {
    let blocks = |r: &OwnerReference| r.block_owner_deletion == Some(true);
    let old_by_uid: HashMap<&str, &OwnerReference> =
        old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let new_uids: HashSet<&str> = new.iter().map(|r| r.uid.as_str()).collect();
    let mut diff = ReferenceDiff::default();
    for reference in new {
        match old_by_uid.get(reference.uid.as_str()) {
            None => diff.added.push(reference.clone()),
            Some(before) if blocks(before) && !blocks(reference) => {
                diff.unblocked.push(reference.uid.clone());
            }
            Some(_) => {}
        }
    }
    for reference in old.iter().filter(|r| !new_uids.contains(r.uid.as_str())) {
        diff.removed.push(reference.uid.clone());
        if blocks(reference) {
            diff.unblocked.push(reference.uid.clone());
        }
    }
    diff
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
