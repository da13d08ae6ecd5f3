use super::*;

fn identity(kind: &str, namespace: &str, name: &str, uid: &str) -> Identity {
    Identity {
        api_version: if kind == "ReplicaSet" {
            "apps/v1"
        } else {
            "v1"
        }
        .into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

fn reference(owner: &Identity, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        block_owner_deletion: block.then_some(true),
        controller: None,
    }
}

fn object(identity: &Identity, owners: Vec<OwnerReference>) -> Observed {
    Observed {
        identity: identity.clone(),
        owners,
        deleting: false,
        finalizers: Vec::new(),
    }
}

fn deleting(identity: &Identity, owners: Vec<OwnerReference>, finalizers: &[&str]) -> Observed {
    Observed {
        deleting: true,
        finalizers: finalizers.iter().map(|f| (*f).to_string()).collect(),
        ..object(identity, owners)
    }
}

fn item(uid: &str, virtual_node: bool) -> Item {
    Item {
        uid: uid.into(),
        virtual_node,
    }
}

fn uids(items: &[Item]) -> Vec<&str> {
    let mut uids: Vec<&str> = items.iter().map(|i| i.uid.as_str()).collect();
    uids.sort_unstable();
    uids
}

fn rs() -> Identity {
    identity("ReplicaSet", "a", "web", "rs-1")
}

fn pod(name: &str) -> Identity {
    identity("Pod", "a", name, &format!("pod-{name}"))
}

#[test]
fn an_owner_not_yet_watched_is_a_virtual_node_queued_for_verification() {
    let mut graph = Graph::default();
    let effects = graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), true)],
    )));
    assert_eq!(effects.attempt_to_delete, vec![item("rs-1", true)]);
    let owner = graph.node("rs-1").expect("virtual owner");
    assert!(!owner.observed);
    assert_eq!(
        owner.identity,
        rs(),
        "coordinates from the reference, in the dependent's namespace"
    );
    assert_eq!(owner.dependents.iter().collect::<Vec<_>>(), ["pod-p"]);

    // The watch then shows it: nothing to do, it is simply observed.
    let effects = graph.apply(Change::Upsert(object(&rs(), vec![])));
    assert_eq!(effects, Effects::default());
    assert!(graph.node("rs-1").unwrap().observed);

    // A second dependent of an observed owner queues nothing.
    let effects = graph.apply(Change::Upsert(object(
        &pod("q"),
        vec![reference(&rs(), false)],
    )));
    assert_eq!(effects, Effects::default());
    assert_eq!(graph.dependents("rs-1").len(), 2);
    assert_eq!(graph.len(), 3);
}

#[test]
fn deleting_an_owner_queues_its_dependents_and_remembers_it_absent() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(&rs(), vec![])));
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), false)],
    )));
    graph.apply(Change::Upsert(object(
        &pod("q"),
        vec![reference(&rs(), false)],
    )));
    let effects = graph.apply(Change::Delete(rs()));
    assert_eq!(uids(&effects.attempt_to_delete), ["pod-p", "pod-q"]);
    assert!(graph.node("rs-1").is_none());
    assert!(graph.is_absent(&rs()));
    assert!(
        graph.node("pod-p").is_some(),
        "dependents stay until the API deletes them"
    );

    // A dependent without owners leaving the graph queues nothing.
    let effects = graph.apply(Change::Delete(pod("p")));
    assert_eq!(effects, Effects::default());
    assert!(!graph.is_absent(&pod("p")), "nothing depended on it");
}

#[test]
fn orphan_deletion_starts_once_per_transition() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(&rs(), vec![])));
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), false)],
    )));
    let effects = graph.apply(Change::Upsert(deleting(&rs(), vec![], &["orphan"])));
    assert_eq!(effects.attempt_to_orphan, ["rs-1"]);
    assert!(effects.attempt_to_delete.is_empty());
    // The same state again (a resync, another field changing): no new work.
    let effects = graph.apply(Change::Upsert(deleting(&rs(), vec![], &["orphan"])));
    assert_eq!(effects, Effects::default());
    assert!(graph.node("rs-1").unwrap().being_deleted);
}

#[test]
fn foreground_deletion_queues_every_dependent_and_the_owner() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(&rs(), vec![])));
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), true)],
    )));
    graph.apply(Change::Upsert(object(
        &pod("q"),
        vec![reference(&rs(), false)],
    )));
    let effects = graph.apply(Change::Upsert(deleting(
        &rs(),
        vec![],
        &["foregroundDeletion"],
    )));
    assert_eq!(uids(&effects.attempt_to_delete), ["pod-p", "pod-q", "rs-1"]);
    assert!(graph.node("rs-1").unwrap().deleting_dependents);
    // Only the dependent with blockOwnerDeletion holds the owner.
    let blocking: Vec<&str> = graph
        .blocking_dependents("rs-1")
        .iter()
        .map(|n| n.identity.name.as_str())
        .collect();
    assert_eq!(blocking, ["p"]);

    // A dependent going away queues the owner waiting for it.
    let effects = graph.apply(Change::Delete(pod("q")));
    assert_eq!(effects.attempt_to_delete, vec![item("rs-1", false)]);
}

#[test]
fn an_object_first_seen_deleting_in_the_foreground_starts_at_once() {
    let mut graph = Graph::default();
    let effects = graph.apply(Change::Upsert(deleting(
        &rs(),
        vec![],
        &["foregroundDeletion"],
    )));
    assert_eq!(effects.attempt_to_delete, vec![item("rs-1", false)]);
    assert!(graph.node("rs-1").unwrap().deleting_dependents);
}

#[test]
fn unblocking_or_dropping_a_blocking_reference_queues_the_owner() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(&rs(), vec![])));
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), true)],
    )));
    let effects = graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), false)],
    )));
    assert_eq!(effects.attempt_to_delete, vec![item("rs-1", false)]);
    assert_eq!(graph.dependents("rs-1").len(), 1, "still a dependent");

    // Dropping a non-blocking reference unlinks without queueing.
    let effects = graph.apply(Change::Upsert(object(&pod("p"), vec![])));
    assert_eq!(effects, Effects::default());
    assert!(graph.dependents("rs-1").is_empty());

    // Adding a reference to a known owner links it.
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), true)],
    )));
    let effects = graph.apply(Change::Upsert(object(&pod("p"), vec![])));
    assert_eq!(effects.attempt_to_delete, vec![item("rs-1", false)]);
}

#[test]
fn a_virtual_owner_verified_absent_goes_and_its_dependents_are_queued() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), false)],
    )));
    let effects = graph.apply(Change::VirtualDelete(rs()));
    assert_eq!(effects.attempt_to_delete, vec![item("pod-p", false)]);
    assert!(graph.node("rs-1").is_none());
    assert!(graph.is_absent(&rs()));
}

#[test]
fn a_virtual_delete_never_removes_an_observed_object_seen_elsewhere() {
    let mut graph = Graph::default();
    let elsewhere = identity("ReplicaSet", "b", "web", "rs-1");
    graph.apply(Change::Upsert(object(&elsewhere, vec![])));
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), false)],
    )));
    // A worker looked `rs-1` up in namespace a, where the pod says it is.
    let effects = graph.apply(Change::VirtualDelete(rs()));
    assert_eq!(effects.attempt_to_delete, vec![item("pod-p", false)]);
    assert!(
        graph.node("rs-1").unwrap().observed,
        "the real object stays"
    );
    assert!(graph.is_absent(&rs()), "but it is absent from namespace a");
}

#[test]
fn a_namespaced_owner_named_from_another_namespace_is_reported() {
    let mut graph = Graph::default();
    let owner = identity("ConfigMap", "b", "owner", "cm-1");
    graph.apply(Change::Upsert(object(&owner, vec![])));
    let dependent = identity("ConfigMap", "a", "child", "cm-2");
    let effects = graph.apply(Change::Upsert(object(
        &dependent,
        vec![reference(&owner, false)],
    )));
    assert_eq!(
        effects.invalid_namespace,
        vec![InvalidOwnerReference {
            dependent: dependent.clone(),
            owner: identity("ConfigMap", "a", "owner", "cm-1"),
        }]
    );
    assert_eq!(
        effects.attempt_to_delete,
        vec![item("cm-2", false)],
        "checked live"
    );
    assert_eq!(
        identity("ConfigMap", "a", "owner", "cm-1").to_string(),
        "[v1/ConfigMap, namespace: a, name: owner, uid: cm-1]"
    );
}

#[test]
fn observing_a_virtual_owner_in_another_namespace_reports_its_dependents() {
    let mut graph = Graph::default();
    let dependent = identity("ConfigMap", "a", "child", "cm-2");
    let guessed = identity("ConfigMap", "a", "owner", "cm-1");
    graph.apply(Change::Upsert(object(
        &dependent,
        vec![reference(&guessed, false)],
    )));
    let actual = identity("ConfigMap", "b", "owner", "cm-1");
    let effects = graph.apply(Change::Upsert(object(&actual, vec![])));
    assert_eq!(effects.invalid_namespace.len(), 1);
    assert_eq!(effects.invalid_namespace[0].dependent, dependent);
    assert_eq!(effects.attempt_to_delete, vec![item("cm-2", false)]);
    assert_eq!(graph.node("cm-1").unwrap().identity, actual);
}

#[test]
fn a_cluster_scoped_owner_may_be_named_from_any_namespace() {
    let mut graph = Graph::default();
    let node = identity("Node", "", "n1", "node-1");
    graph.apply(Change::Upsert(object(&node, vec![])));
    let effects = graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&node, false)],
    )));
    assert_eq!(effects, Effects::default());
    let cluster_scoped = identity("Namespace", "", "ns", "ns-1");
    let effects = graph.apply(Change::Upsert(object(
        &cluster_scoped,
        vec![reference(&node, false)],
    )));
    assert_eq!(effects, Effects::default());
}

#[test]
fn a_reference_with_other_coordinates_than_the_observed_owner_is_checked() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(&rs(), vec![])));
    let mut wrong = reference(&rs(), false);
    wrong.kind = "Deployment".into();
    let effects = graph.apply(Change::Upsert(object(&pod("p"), vec![wrong])));
    assert_eq!(effects.attempt_to_delete, vec![item("pod-p", false)]);
    assert!(effects.invalid_namespace.is_empty());
}

#[test]
fn dependents_disagreeing_on_a_virtual_owner_are_verified_one_guess_at_a_time() {
    let mut graph = Graph::default();
    let node_in_a = identity("Node", "a", "n1", "node-1");
    let in_a = pod("p");
    let in_b = identity("Pod", "b", "q", "pod-q");
    graph.apply(Change::Upsert(object(
        &in_a,
        vec![reference(&node_in_a, false)],
    )));
    graph.apply(Change::Upsert(object(
        &in_b,
        vec![reference(&node_in_a, false)],
    )));
    // Looked up where the first dependent's guess put it: not found.
    let effects = graph.apply(Change::VirtualDelete(node_in_a.clone()));
    assert_eq!(effects.attempt_to_delete, vec![item("pod-p", false)]);
    assert_eq!(effects.attempt_to_delete_later, vec![item("node-1", true)]);
    assert_eq!(
        graph.node("node-1").unwrap().identity,
        identity("Node", "b", "n1", "node-1"),
        "the other dependent's coordinates are tried next"
    );
    // Not found there either: the pod naming it so is queued, and the
    // guess goes back to the first coordinates while both pods remain.
    let node_in_b = identity("Node", "b", "n1", "node-1");
    let effects = graph.apply(Change::VirtualDelete(node_in_b.clone()));
    assert_eq!(effects.attempt_to_delete, vec![item("pod-q", false)]);
    assert_eq!(effects.attempt_to_delete_later, vec![item("node-1", true)]);
    assert!(graph.is_absent(&node_in_b));
    // Once the dependents are collected, the guess leaves the graph.
    graph.apply(Change::Delete(in_a));
    graph.apply(Change::Delete(in_b));
    let effects = graph.apply(Change::VirtualDelete(node_in_a));
    assert_eq!(effects, Effects::default());
    assert!(graph.node("node-1").is_none());
}

#[test]
fn a_relist_finds_the_observed_objects_of_one_type() {
    let mut graph = Graph::default();
    graph.apply(Change::Upsert(object(&rs(), vec![])));
    graph.apply(Change::Upsert(object(
        &pod("p"),
        vec![reference(&rs(), false)],
    )));
    graph.apply(Change::Upsert(object(
        &pod("q"),
        vec![reference(
            &identity("ReplicaSet", "a", "gone", "rs-2"),
            false,
        )],
    )));
    assert_eq!(graph.observed_of_type("v1", "Pod").len(), 2);
    assert_eq!(
        graph.observed_of_type("apps/v1", "ReplicaSet"),
        vec![rs()],
        "virtual owners excluded"
    );
}

#[test]
fn the_absent_owner_cache_is_bounded() {
    let mut graph = Graph::default();
    for i in 0..=ABSENT_OWNERS_REMEMBERED {
        graph.record_absent(identity("Pod", "a", "p", &i.to_string()));
    }
    assert!(
        !graph.is_absent(&identity("Pod", "a", "p", "0")),
        "the oldest is forgotten"
    );
    assert!(graph.is_absent(&identity("Pod", "a", "p", "1")));
    assert!(graph.is_absent(&identity(
        "Pod",
        "a",
        "p",
        &ABSENT_OWNERS_REMEMBERED.to_string()
    )));
}
