//! Strategic merge patch cases, written after upstream's documented behaviour
//! and the patches real kubectl sends.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::patch::tests::arb_json;

fn smp(group: &str, kind: &str, original: Value, patch: Value) -> Value {
    apply_strategic_merge(group, kind, &original, &patch).unwrap()
}

fn smp_err(group: &str, kind: &str, original: Value, patch: Value) -> PatchError {
    apply_strategic_merge(group, kind, &original, &patch).unwrap_err()
}

/// A list merged with the merge key `name` and no schema behind its elements.
fn list(key: Option<&'static str>) -> ListContext {
    ListContext {
        key,
        items: Node::unknown(),
        path: "list".to_string(),
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|items| items.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        },
                        {"name": "sidecar", "image": "proxy:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                },
            },
        },
    })
}

#[test]
fn containers_merge_by_name_and_keep_the_rest() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
    ]}}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["app", "sidecar"]);
    assert_eq!(containers[0]["image"], "app:2");
    assert_eq!(containers[0]["args"], json!(["--a", "--b"]));
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    );
    assert_eq!(
        containers[1],
        json!({"name": "sidecar", "image": "proxy:1"})
    );
}

#[test]
fn kubectl_apply_image_change_with_set_element_order() {
    // What `kubectl apply` sends after the image of one container changed.
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"image": "app:2", "name": "app"}],
        }}},
    });
    let out = smp("apps", "Deployment", deployment(), patch);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["app", "sidecar"]);
    assert_eq!(containers[0]["image"], "app:2");
    assert_eq!(containers[0]["env"][0]["name"], "A");
    let keys: Vec<&String> = out["spec"]["template"]["spec"]
        .as_object()
        .map(|spec| spec.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["containers", "volumes", "tolerations"]);
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}"
    );
}

#[test]
fn kubectl_apply_removes_and_reorders_containers() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "init"}, {"name": "app"}],
        "containers": [{"image": "busybox", "name": "init"}, {"$patch": "delete", "name": "sidecar"}],
    }}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["init", "app"]);
    assert_eq!(containers[0], json!({"image": "busybox", "name": "init"}));
}

#[test]
fn kubectl_apply_edits_finalizers_with_parallel_lists() {
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["c", "b"],
        "$deleteFromPrimitiveList/finalizers": ["a"],
        "finalizers": ["c"],
    }});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
}

#[test]
fn primitive_merge_lists_union_in_upstream_order() {
    let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
}

#[test]
fn retain_keys_switches_the_deployment_strategy() {
    // `kubectl apply` after changing the strategy to Recreate.
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let patch = json!({"spec": {"template": {"spec": {"volumes": [
        {"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "data"},
    ]}}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}])
    );
}

#[test]
fn retain_keys_must_list_every_patched_key() {
    let patch =
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}});
    assert!(matches!(
        smp_err("apps", "Deployment", deployment(), patch),
        PatchError::BadRetainKeys { path } if path == "spec.strategy"
    ));
}

#[test]
fn null_deletes_and_scalars_replace() {
    let patch =
        json!({"metadata": {"labels": {"tier": null, "new": "x"}}, "spec": {"replicas": 5}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
    assert_eq!(out["spec"]["replicas"], 5);
}

#[test]
fn lists_without_merge_strategy_are_replaced() {
    let patch = json!({"spec": {"template": {"spec": {
        "tolerations": [{"key": "other", "operator": "Exists"}],
        "containers": [{"name": "app", "args": ["--c"]}],
    }}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "other", "operator": "Exists"}])
    );
    assert_eq!(spec["containers"][0]["args"], json!(["--c"]));
}

#[test]
fn patch_replace_and_delete_directives_on_maps() {
    let patch = json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));

    let patch = json!({"spec": {"strategy": {"$patch": "delete"}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["spec"]["strategy"], json!({}));

    let patch = json!({"spec": {"strategy": {"$patch": "merge"}}});
    assert!(matches!(
        smp_err("apps", "Deployment", deployment(), patch),
        PatchError::UnknownDirective { .. }
    ));
}

#[test]
fn patch_replace_directive_in_a_list_replaces_it() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": "x"},
        {"$patch": "replace"},
    ]}}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}]}}}});
    let out = smp("apps", "Deployment", deployment(), patch);
    assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([]));
}

#[test]
fn patch_delete_in_a_list_removes_every_match() {
    let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "a", "image": "dup"}]}});
    let patch = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
    let out = smp("", "Pod", live, patch);
    assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
}

#[test]
fn list_element_directive_errors() {
    let patch = json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}});
    let live = json!({"spec": {"containers": [{"name": "a"}]}});
    assert!(matches!(
        smp_err("", "Pod", live.clone(), patch),
        PatchError::ListMergeDirective { .. }
    ));
    let patch = json!({"spec": {"containers": [{"image": "no-name"}]}});
    assert!(matches!(
        smp_err("", "Pod", live.clone(), patch),
        PatchError::MissingMergeKey { key: "name", .. }
    ));
    let patch = json!({"spec": {"containers": [{"$patch": "delete"}]}});
    assert!(matches!(
        smp_err("", "Pod", live.clone(), patch),
        PatchError::MissingMergeKey { .. }
    ));
    let patch = json!({"spec": {"containers": ["x"]}});
    assert!(matches!(
        smp_err("", "Pod", live, patch),
        PatchError::MixedList { .. }
    ));
}

#[test]
fn set_element_order_must_agree_with_the_patch() {
    let live = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
        "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}],
    }});
    assert!(matches!(
        smp_err("", "Pod", live, patch),
        PatchError::SetElementOrderMismatch { path } if path == "spec.containers"
    ));
    let patch = json!({"spec": {"$setElementOrder/containers": {"name": "1"}}});
    assert!(matches!(
        smp_err("", "Pod", json!({"spec": {}}), patch),
        PatchError::WrongType { .. }
    ));
    let patch = json!({"spec": {"$setElementOrder": []}});
    assert!(matches!(
        smp_err("", "Pod", json!({"spec": {}}), patch),
        PatchError::BadDirectiveKey { .. }
    ));
}

#[test]
fn set_element_order_with_server_only_items() {
    // Live elements the patch never mentions stay after their live predecessor.
    let live = json!({"spec": {"containers": [
        {"name": "1", "other": "a"}, {"name": "2", "value": "2"}, {"name": "7"}, {"name": "9"},
        {"name": "8"}, {"name": "3", "value": "3"}, {"name": "4", "value": "4"},
    ]}});
    let patch = json!({"spec": {"$setElementOrder/containers": [
        {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"},
    ]}});
    let out = smp("", "Pod", live, patch);
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["2", "1", "7", "9", "8", "4", "3"]
    );
    assert_eq!(out["spec"]["containers"][1]["other"], "a");
}

#[test]
fn set_element_order_names_items_missing_from_the_live_list() {
    let live = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
        "containers": [{"name": "3", "value": 3}, {"name": "1", "value": 1}],
    }});
    let out = smp("", "Pod", live, patch);
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "3", "value": 3}, {"name": "1", "value": 1}])
    );
}

#[test]
fn merged_list_order_without_set_element_order() {
    let ctx = list(Some("name"));
    let live = || json!([{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]);
    let merge = |patch: Value| {
        let (Value::Array(live), Value::Array(patch)) = (live(), patch) else {
            unreachable!("test inputs are lists")
        };
        Value::Array(ctx.merge(live, patch, false).unwrap())
    };
    // Patch order wins for the elements it names.
    let out = merge(
        json!([{"name": "3", "value": "c"}, {"name": "1", "value": "a"}, {"name": "2", "other": "x"}]),
    );
    assert_eq!(names(&out), ["3", "1", "2"]);
    assert_eq!(out[2], json!({"name": "2", "value": "b", "other": "x"}));
    // Unmentioned live elements keep their place relative to live order.
    let out = merge(json!([{"name": "3", "value": "c"}, {"name": "1", "value": "a"}]));
    assert_eq!(names(&out), ["2", "3", "1"]);
    // A patch of only new elements puts them first.
    assert_eq!(names(&merge(json!([{"name": "4"}]))), ["4", "1", "2", "3"]);
    // A new element follows its patch predecessor.
    assert_eq!(
        names(&merge(json!([{"name": "2"}, {"name": "4"}]))),
        ["1", "2", "4", "3"]
    );
}

#[test]
fn scalar_list_order_follows_the_patch() {
    let ctx = list(None);
    let merge = |live: Value, patch: Value| {
        let (Value::Array(live), Value::Array(patch)) = (live, patch) else {
            unreachable!("test inputs are lists")
        };
        Value::Array(ctx.merge(live, patch, false).unwrap())
    };
    assert_eq!(merge(json!([1, 2, 3]), json!([3, 1, 2])), json!([3, 1, 2]));
    assert_eq!(merge(json!([1, 2, 3]), json!([3, 1])), json!([2, 3, 1]));
    assert_eq!(merge(json!([1, 2]), json!([2, 3])), json!([1, 2, 3]));
}

#[test]
fn delete_from_primitive_list_edge_cases() {
    let live = json!({"metadata": {"finalizers": ["a", "b", "c"]}, "spec": {"podCIDRs": ["x"]}});
    // Also on a list without merge strategy, and for items that are absent.
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "z"]}});
    let out = smp("", "Node", live.clone(), patch);
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
    let patch = json!({"spec": {"$deleteFromPrimitiveList/taints": ["x"]}});
    let out = smp("", "Node", live.clone(), patch);
    assert_eq!(out["spec"], json!({"podCIDRs": ["x"]}));
    let patch = json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}});
    assert!(matches!(
        smp_err("", "Node", live, patch),
        PatchError::BadDirectiveKey { .. }
    ));
}

#[test]
fn new_fields_drop_nulls_and_directives() {
    let live = json!({"spec": {}});
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"name": "a", "image": null, "env": [{"name": "X", "$patch": "delete"}]}],
        "dnsConfig": {"$patch": "delete"},
    }}}});
    let out = smp("apps", "Deployment", live, patch);
    assert_eq!(
        out,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": []}]}}}})
    );
}

#[test]
fn type_changes_replace_the_live_value() {
    let live = json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
    let patch = json!({"spec": {"selector": "weird", "ports": {"port": 81}}});
    let out = smp("", "Service", live, patch);
    assert_eq!(
        out["spec"],
        json!({"selector": "weird", "ports": {"port": 81}})
    );
}

#[test]
fn service_ports_and_status_conditions_merge() {
    let live = json!({
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    });
    let patch = json!({
        "spec": {"ports": [{"port": 443, "targetPort": 9443}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}]},
    });
    let out = smp("", "Service", live, patch);
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443}])
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}])
    );
}

#[test]
fn pdb_selector_is_replaced_whole() {
    let live = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let patch = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}});
    let out = smp("policy", "PodDisruptionBudget", live, patch);
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
}

#[test]
fn unsupported_kinds_and_non_objects() {
    assert!(matches!(
        smp_err("example.com", "Widget", json!({}), json!({})),
        PatchError::UnsupportedKind { .. }
    ));
    assert!(matches!(
        smp_err("", "Pod", json!({}), json!([])),
        PatchError::NotAnObject { what: "the patch" }
    ));
    assert!(matches!(
        smp_err("", "Pod", json!(1), json!({})),
        PatchError::NotAnObject { what: "the object" }
    ));
}

/// No null values in objects that sit inside lists (merge patch keeps them).
fn has_null_in_listed_object(v: &Value, in_list: bool) -> bool {
    match v {
        Value::Object(m) => m
            .values()
            .any(|v| (in_list && v.is_null()) || has_null_in_listed_object(v, in_list)),
        Value::Array(items) => items.iter().any(|v| has_null_in_listed_object(v, true)),
        _ => false,
    }
}

fn object(entries: std::collections::BTreeMap<String, Value>) -> Value {
    Value::Object(entries.into_iter().collect())
}

proptest! {
    #[test]
    fn empty_patch_is_identity(
        entries in prop::collection::btree_map("[a-d]|spec|metadata", arb_json(), 0..5),
    ) {
        let original = object(entries);
        for (group, kind) in [("", "Pod"), ("apps", "Deployment")] {
            let out = apply_strategic_merge(group, kind, &original, &json!({})).unwrap();
            prop_assert_eq!(&out, &original);
        }
    }

    #[test]
    fn without_merge_facts_it_is_a_merge_patch(
        original in prop::collection::btree_map("[a-d]", arb_json(), 0..5),
        patch in prop::collection::btree_map("[a-d]", arb_json(), 0..5),
    ) {
        let (original, patch) = (object(original), object(patch));
        prop_assume!(!has_null_in_listed_object(&patch, false));
        let expected = crate::patch::apply_merge_patch(&original, &patch).unwrap();
        let out = strategic_merge(Node::unknown(), &original, &patch).unwrap();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn patching_containers_with_themselves_is_identity(
        images in prop::collection::btree_map("[a-z]{1,6}", "[a-z]{1,4}:[0-9]", 0..6),
        ports in prop::collection::vec(1u16..5, 0..3),
    ) {
        let containers: Vec<Value> = images
            .iter()
            .map(|(name, image)| {
                let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p})).collect();
                json!({"name": name, "image": image, "ports": ports})
            })
            .collect();
        let pod = json!({"spec": {"containers": containers}});
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assume!(unique.len() == ports.len());
        prop_assert_eq!(smp("", "Pod", pod.clone(), pod.clone()), pod);
    }

    #[test]
    fn arbitrary_patches_never_panic(original in arb_json(), patch in arb_json()) {
        let _ = strategic_merge(Node::unknown(), &original, &patch);
        if let Some(node) = merge_keys::root("apps", "Deployment") {
            let wrapped = json!({"spec": {"template": {"spec": {"containers": patch}}}});
            let live = json!({"spec": {"template": {"spec": {"containers": original}}}});
            let _ = strategic_merge(node, &live, &wrapped);
        }
    }
}
