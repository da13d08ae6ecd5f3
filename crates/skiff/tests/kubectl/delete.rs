//! `delete` and its cascading policies, driven through ownerReferences between
//! ConfigMaps so that no controller other than the garbage collector is involved.

use std::time::Duration;

use crate::util::{cluster, eventually, get_json};

/// Create `owner` and a `child` owned by it; returns the owner's uid.
fn owner_and_child(ns: &str, owner: &str, child: &str) -> String {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", owner, "-n", ns]);
    let uid = get_json(&["get", "cm", owner, "-n", ns])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let manifest = format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {child}
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: {owner}
    uid: {uid}
"
    );
    c.kubectl_stdin_ok(&["create", "-n", ns, "-f", "-"], &manifest);
    uid
}

fn exists(ns: &str, name: &str) -> bool {
    cluster()
        .kubectl(&["get", "cm", name, "-n", ns])
        .status
        .success()
}

const GC_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn plain_delete_and_not_found() {
    let c = cluster();
    let ns = c.namespace("delete");
    c.kubectl_ok(&["create", "configmap", "gone", "-n", ns.name()]);
    let out = c.kubectl_ok(&["delete", "cm", "gone", "-n", ns.name()]);
    assert!(out.starts_with(r#"configmap "gone" deleted"#), "{out}");
    let err = c.kubectl_err(&["delete", "cm", "gone", "-n", ns.name()]);
    assert!(err.contains(r#"configmaps "gone" not found"#), "{err}");
    let out = c.kubectl_ok(&[
        "delete",
        "cm",
        "gone",
        "-n",
        ns.name(),
        "--ignore-not-found",
    ]);
    assert_eq!(out, "");
}

#[test]
fn delete_by_label_selector() {
    let c = cluster();
    let ns = c.namespace("delete-selector");
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        c.kubectl_ok(&["create", "configmap", name, "-n", ns.name()]);
        c.kubectl_ok(&["label", "cm", name, &format!("app={app}"), "-n", ns.name()]);
    }
    c.kubectl_ok(&["delete", "cm", "-l", "app=x", "-n", ns.name()]);
    assert!(!exists(ns.name(), "a"));
    assert!(!exists(ns.name(), "b"));
    assert!(exists(ns.name(), "c"));
}

#[test]
fn cascade_orphan_keeps_dependents() {
    let c = cluster();
    let ns = c.namespace("cascade-orphan");
    owner_and_child(ns.name(), "owner", "child");
    c.kubectl_ok(&["delete", "cm", "owner", "--cascade=orphan", "-n", ns.name()]);
    assert!(!exists(ns.name(), "owner"));
    // The garbage collector strips the dangling reference from the orphan.
    eventually("the orphan to lose its ownerReference", GC_TIMEOUT, || {
        get_json(&["get", "cm", "child", "-n", ns.name()])["metadata"]["ownerReferences"].is_null()
    });
    assert!(exists(ns.name(), "child"));
}

#[test]
fn cascade_background_deletes_dependents_afterwards() {
    let c = cluster();
    let ns = c.namespace("cascade-background");
    owner_and_child(ns.name(), "owner", "child");
    c.kubectl_ok(&[
        "delete",
        "cm",
        "owner",
        "--cascade=background",
        "-n",
        ns.name(),
    ]);
    assert!(!exists(ns.name(), "owner"));
    eventually("the dependent to be collected", GC_TIMEOUT, || {
        !exists(ns.name(), "child")
    });
}

#[test]
fn cascade_foreground_deletes_dependents_first() {
    let c = cluster();
    let ns = c.namespace("cascade-foreground");
    owner_and_child(ns.name(), "owner", "child");
    // Also a dependent that blocks the owner's deletion until it is gone.
    let uid = get_json(&["get", "cm", "owner", "-n", ns.name()])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let blocking = format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: blocking-child
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: owner
    uid: {uid}
    blockOwnerDeletion: true
"
    );
    c.kubectl_stdin_ok(&["create", "-n", ns.name(), "-f", "-"], &blocking);

    // kubectl waits for the owner to disappear, which happens only after its
    // dependents are gone.
    c.kubectl_ok(&[
        "delete",
        "cm",
        "owner",
        "--cascade=foreground",
        "-n",
        ns.name(),
    ]);
    assert!(!exists(ns.name(), "owner"));
    assert!(!exists(ns.name(), "blocking-child"));
    eventually("the dependent to be collected", GC_TIMEOUT, || {
        !exists(ns.name(), "child")
    });
}

#[test]
fn foreground_deletion_is_visible_while_in_progress() {
    let c = cluster();
    let ns = c.namespace("cascade-fg-visible");
    let uid = owner_and_child(ns.name(), "owner", "child");
    // A finalizer on the child holds the foreground deletion open: the
    // child blocks its owner's deletion (only such dependents do, as
    // upstream's garbage collector has it).
    let hold = format!(
        r#"{{"metadata":{{"finalizers":["example.com/hold"],"ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"{uid}","blockOwnerDeletion":true}}]}}}}"#
    );
    c.kubectl_ok(&[
        "patch",
        "cm",
        "child",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        &hold,
    ]);
    c.kubectl_ok(&[
        "delete",
        "cm",
        "owner",
        "--cascade=foreground",
        "--wait=false",
        "-n",
        ns.name(),
    ]);
    let owner = get_json(&["get", "cm", "owner", "-n", ns.name()]);
    assert!(
        owner["metadata"]["deletionTimestamp"].is_string(),
        "{owner}"
    );
    assert_eq!(
        owner["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"])
    );

    eventually("the child to be marked for deletion", GC_TIMEOUT, || {
        get_json(&["get", "cm", "child", "-n", ns.name()])["metadata"]["deletionTimestamp"]
            .is_string()
    });
    assert!(
        exists(ns.name(), "owner"),
        "the held child blocks its owner"
    );
    c.kubectl_ok(&[
        "patch",
        "cm",
        "child",
        "-n",
        ns.name(),
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    eventually("owner and child to be gone", GC_TIMEOUT, || {
        !exists(ns.name(), "child") && !exists(ns.name(), "owner")
    });
}
