//! The three patch formats of `PATCH` requests, applied to JSON objects.
//!
//! | Content-Type | format | here |
//! |---|---|---|
//! | `application/json-patch+json` | RFC 6902 operations | [`apply_json_patch`] |
//! | `application/merge-patch+json` | RFC 7396 merge | [`apply_merge_patch`] |
//! | `application/strategic-merge-patch+json` | Kubernetes strategic merge | [`apply_strategic_merge`] |
//!
//! The first two come from the `json-patch` crate. Strategic merge patch is ours
//! ([`strategic`]): it is a merge patch whose lists merge element by element
//! where the API says so (containers by `name`, ports by `containerPort`, ...;
//! the facts live in [`crate::merge_keys`]), plus the directives that
//! `kubectl apply` and `kubectl patch` send.
//!
//! Every error is the client's fault: the API server answers it with a 4xx (422
//! for a patch that does not apply, 400 for a malformed one, 415 for
//! [`PatchError::UnsupportedKind`]).

pub mod strategic;

use serde_json::Value;

pub use strategic::{apply_strategic_merge, strategic_merge};

/// Upstream's API server refuses JSON patches with more operations than this.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The body is not a list of RFC 6902 operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    /// An RFC 6902 operation failed (missing path, failed `test`, ...).
    #[error(transparent)]
    JsonPatch(#[from] json_patch::PatchError),
    /// The JSON patch has more than [`MAX_JSON_PATCH_OPERATIONS`] operations.
    #[error(
        "the JSON patch has {0} operations, which exceeds the limit of {MAX_JSON_PATCH_OPERATIONS}"
    )]
    TooManyOperations(usize),
    /// A merge or strategic merge patch (or the object it applies to) is not a
    /// JSON object.
    #[error("{what} must be a JSON object")]
    NotAnObject {
        /// `the patch` or `the object`.
        what: &'static str,
    },
    /// Strategic merge patch needs merge facts the kind does not have (custom
    /// resources): upstream answers 415 Unsupported Media Type.
    #[error("strategic merge patch is not supported for {kind}.{group}")]
    UnsupportedKind {
        /// API group of the object.
        group: String,
        /// Kind of the object.
        kind: String,
    },
    /// `$patch` has a value other than `replace` or `delete` (or `merge` in a map).
    #[error("{path}: unknown patch type {directive}")]
    UnknownDirective {
        /// Field path of the map or list holding the directive.
        path: String,
        /// The directive's value, as JSON.
        directive: String,
    },
    /// `$patch: merge` as a list element, which upstream does not support either.
    #[error("{path}: merging lists cannot yet be specified in the patch")]
    ListMergeDirective {
        /// Field path of the list.
        path: String,
    },
    /// A list element lacks the list's merge key.
    #[error("{path}: an element does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// Field path of the list.
        path: String,
        /// The merge key.
        key: &'static str,
    },
    /// A list of objects has the merge strategy but no merge key.
    #[error("{path}: cannot merge lists without merge key")]
    NoMergeKey {
        /// Field path of the list.
        path: String,
    },
    /// The elements of a merged list are of different JSON types.
    #[error("{path}: list element types are not identical")]
    MixedList {
        /// Field path of the list.
        path: String,
    },
    /// A merged list holds lists.
    #[error("{path}: lists of lists are not supported")]
    ListOfLists {
        /// Field path of the list.
        path: String,
    },
    /// A value has the wrong JSON type for where it is, e.g. a list element that
    /// must be an object, or a `$setElementOrder` that is not a list.
    #[error("{path}: expected {expected}")]
    WrongType {
        /// Field path of the value.
        path: String,
        /// What was expected, e.g. `a list`.
        expected: &'static str,
    },
    /// `$retainKeys` is not a list, or the patch sets a key it does not list.
    #[error("{path}: invalid patch format of retainKeys")]
    BadRetainKeys {
        /// Field path of the map.
        path: String,
    },
    /// A `$setElementOrder/…` list disagrees with the patch list it orders.
    #[error("{path}: the order in the patch list doesn't match the $setElementOrder list")]
    SetElementOrderMismatch {
        /// Field path of the list.
        path: String,
    },
    /// A `$setElementOrder` or `$deleteFromPrimitiveList` key without `/<field>`.
    #[error("{path}: invalid directive key {key}")]
    BadDirectiveKey {
        /// Field path of the map holding the key.
        path: String,
        /// The key.
        key: String,
    },
}

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`). The patch is
/// applied atomically: on error nothing is returned.
pub fn apply_json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations = match patch {
        Value::Array(ops) if ops.len() > MAX_JSON_PATCH_OPERATIONS => {
            return Err(PatchError::TooManyOperations(ops.len()));
        }
        _ => serde_json::from_value::<json_patch::Patch>(patch.clone())
            .map_err(PatchError::InvalidJsonPatch)?,
    };
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &operations)?;
    Ok(doc)
}

/// Applies an RFC 7396 JSON merge patch (`application/merge-patch+json`):
/// objects merge recursively, `null` deletes, anything else (lists included)
/// replaces. The patch must be an object, since it applies to an API object.
pub fn apply_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::NotAnObject { what: "the patch" });
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn json_patch_applies_operations_in_order() {
        let pod = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {}});
        let patch = json!([
            {"op": "test", "path": "/metadata/name", "value": "a"},
            {"op": "add", "path": "/metadata/labels/y", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/x"},
            {"op": "replace", "path": "/spec", "value": {"nodeName": "n1"}},
        ]);
        let out = apply_json_patch(&pod, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "a", "labels": {"y": "2"}}, "spec": {"nodeName": "n1"}})
        );
    }

    #[test]
    fn json_patch_errors_are_typed() {
        let pod = json!({"metadata": {"name": "a"}});
        let failed_test = json!([{"op": "test", "path": "/metadata/name", "value": "b"}]);
        assert!(matches!(
            apply_json_patch(&pod, &failed_test),
            Err(PatchError::JsonPatch(_))
        ));
        let missing = json!([{"op": "remove", "path": "/spec/x"}]);
        assert!(matches!(
            apply_json_patch(&pod, &missing),
            Err(PatchError::JsonPatch(_))
        ));
        assert!(matches!(
            apply_json_patch(&pod, &json!({"op": "add"})),
            Err(PatchError::InvalidJsonPatch(_))
        ));
        let many = Value::Array(vec![json!({"op": "test", "path": "", "value": 1}); 10_001]);
        assert!(matches!(
            apply_json_patch(&pod, &many),
            Err(PatchError::TooManyOperations(10_001))
        ));
    }

    #[test]
    fn merge_patch_merges_objects_and_replaces_lists() {
        let deploy = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
        });
        let patch = json!({
            "metadata": {"labels": {"a": null, "c": "3"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "d"}]}}},
        });
        let out = apply_merge_patch(&deploy, &patch).unwrap();
        assert_eq!(
            out,
            json!({
                "metadata": {"labels": {"b": "2", "c": "3"}},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "d"}]}}},
            })
        );
        assert!(matches!(
            apply_merge_patch(&deploy, &json!([1])),
            Err(PatchError::NotAnObject { .. })
        ));
    }

    /// A JSON value of bounded size, objects with a few keys.
    pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The RFC 7396 patch that turns `from` into `to`. `to` must hold no nulls
    /// inside objects, since a merge patch cannot express them.
    fn merge_diff(from: &Value, to: &Value) -> Value {
        match (from, to) {
            (Value::Object(f), Value::Object(t)) => {
                let mut patch = serde_json::Map::new();
                for (k, v) in t {
                    match f.get(k) {
                        Some(old) if old == v => {}
                        Some(old) => {
                            patch.insert(k.clone(), merge_diff(old, v));
                        }
                        None => {
                            patch.insert(k.clone(), v.clone());
                        }
                    }
                }
                for k in f.keys().filter(|k| !t.contains_key(*k)) {
                    patch.insert(k.clone(), Value::Null);
                }
                Value::Object(patch)
            }
            _ => to.clone(),
        }
    }

    fn without_object_nulls(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, without_object_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(without_object_nulls).collect())
            }
            other => other,
        }
    }

    proptest! {
        #[test]
        fn merge_patch_of_a_diff_reproduces_the_target(
            from in prop::collection::btree_map("[a-d]", arb_json(), 0..4),
            to in prop::collection::btree_map("[a-d]", arb_json(), 0..4),
        ) {
            let from = Value::Object(from.into_iter().collect());
            let to = without_object_nulls(Value::Object(to.into_iter().collect()));
            let patch = merge_diff(&from, &to);
            prop_assert_eq!(apply_merge_patch(&from, &patch).unwrap(), to);
        }

        #[test]
        fn json_patch_of_a_diff_reproduces_the_target(from in arb_json(), to in arb_json()) {
            let patch = serde_json::to_value(json_patch::diff(&from, &to)).unwrap();
            prop_assert_eq!(apply_json_patch(&from, &patch).unwrap(), to);
        }
    }
}
