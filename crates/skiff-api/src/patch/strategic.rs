//! Strategic merge patch, with upstream's semantics (`strategicpatch` in
//! apimachinery, as the API server applies it).
//!
//! A strategic merge patch is a merge patch with three differences:
//!
//! - A list whose field has `patchStrategy: merge` merges instead of being
//!   replaced: lists of objects element by element, matched on the merge key
//!   (`containers` by `name`); lists of scalars as a set union.
//! - Directives steer the merge:
//!   - `"$patch": "replace"` in a map replaces the live map; as a list element it
//!     replaces the live list with the patch's other elements.
//!   - `"$patch": "delete"` in a map empties it; as a list element it removes the
//!     live elements with that element's merge key.
//!   - `"$retainKeys": [...]` clears the live keys it does not list (unions such
//!     as a Deployment's `strategy` or a volume's source).
//!   - `"$setElementOrder/<field>": [...]` gives the order of the merged list.
//!   - `"$deleteFromPrimitiveList/<field>": [...]` removes scalars from a list.
//! - Order of merged lists follows upstream: `$setElementOrder` when given, else
//!   patch elements in patch order, woven into the live elements that the patch
//!   does not mention, which keep their live order. A new element (one the live
//!   list lacks) therefore goes before the live elements that follow its
//!   predecessor in the patch, and a patch naming only new elements puts them
//!   first.
//!
//! ```
//! use serde_json::json;
//! use skiff_api::patch::apply_strategic_merge;
//!
//! let live = json!({"spec": {"containers": [
//!     {"name": "app", "image": "app:1"},
//!     {"name": "sidecar", "image": "proxy:1"},
//! ]}});
//! let patch = json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}});
//! let out = apply_strategic_merge("", "Pod", &live, &patch).unwrap();
//! assert_eq!(out["spec"]["containers"][0]["image"], "app:2");
//! assert_eq!(out["spec"]["containers"][1]["image"], "proxy:1");
//! ```
//!
//! Where upstream copies a patch value into the result verbatim (a new field, a
//! replaced list, a `$patch: replace` map), we also drop the nulls and
//! directives inside it, as upstream does for new fields: the typed decode that
//! follows upstream's merge would drop the nulls anyway, and a directive left
//! in an object is never wanted.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::PatchError;
use crate::merge_keys::{self, Node, PatchStrategy};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Applies a strategic merge patch to an object of a built-in kind (`group` is
/// empty for the core group). Kinds without merge facts (custom resources) get
/// [`PatchError::UnsupportedKind`], as upstream refuses them.
pub fn apply_strategic_merge(
    group: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let node = merge_keys::root(group, kind).ok_or_else(|| PatchError::UnsupportedKind {
        group: group.to_string(),
        kind: kind.to_string(),
    })?;
    strategic_merge(node, original, patch)
}

/// Applies a strategic merge patch with the merge facts below `node`; with
/// [`Node::unknown`] every list is replaced and the patch acts as a merge patch
/// that understands the map directives.
pub fn strategic_merge(node: Node, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(original) = original else {
        return Err(PatchError::NotAnObject { what: "the object" });
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject { what: "the patch" });
    };
    merge_map(original.clone(), patch.clone(), node, "").map(Value::Object)
}

/// `parent.key`, for error messages.
fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The field named by a `<prefix>/<field>` directive key.
fn directive_field<'k>(key: &'k str, prefix: &str, path: &str) -> Result<&'k str, PatchError> {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| PatchError::BadDirectiveKey {
            path: path.to_string(),
            key: key.to_string(),
        })
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    node: Node,
    path: &str,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => Ok(clean_map(patch)),
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::UnknownDirective {
                path: path.to_string(),
                directive: directive.to_string(),
            }),
        };
    }
    if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
        retain_keys(&mut original, &patch, &retain, path)?;
    }

    let orders: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in orders {
        let field = directive_field(&key, SET_ELEMENT_ORDER, path)?;
        if let Some(order) = patch.shift_remove(&key) {
            set_element_order(&mut original, &mut patch, field, order, node, path)?;
        }
    }

    for (key, value) in patch {
        let (field, delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (
                directive_field(&key, DELETE_FROM_PRIMITIVE_LIST, path)?,
                true,
            )
        } else {
            (key.as_str(), false)
        };
        if value.is_null() {
            original.shift_remove(field);
            continue;
        }
        let Some(current) = original.get_mut(field) else {
            if !delete_list && let Some(value) = clean(value) {
                original.insert(field.to_string(), value);
            }
            continue;
        };
        if std::mem::discriminant(current) != std::mem::discriminant(&value) {
            if !delete_list {
                replace_or_remove(&mut original, field, value);
            }
            continue;
        }
        let info = node.field(field);
        let meta = info.patch_meta();
        let merged = match (current.take(), value) {
            (Value::Object(live), Value::Object(value)) => {
                if meta.strategy == PatchStrategy::Replace {
                    Value::Object(clean_map(value))
                } else {
                    let sub = child_path(path, field);
                    Value::Object(merge_map(live, value, info.value(), &sub)?)
                }
            }
            (Value::Array(live), Value::Array(value)) => {
                if meta.strategy == PatchStrategy::Merge || delete_list {
                    let list = ListContext {
                        key: meta.merge_key,
                        items: info.value().items(),
                        path: child_path(path, field),
                    };
                    Value::Array(list.merge(live, value, delete_list)?)
                } else {
                    Value::Array(clean_list(value))
                }
            }
            (_, scalar) => scalar,
        };
        *current = merged;
    }
    Ok(original)
}

/// Sets `field` to the cleaned `value`, or removes it if the value was a
/// directive-only map.
fn replace_or_remove(map: &mut Map<String, Value>, field: &str, value: Value) {
    match clean(value) {
        Some(value) => {
            map.insert(field.to_string(), value);
        }
        None => {
            map.shift_remove(field);
        }
    }
}

/// Applies `$retainKeys`: every key the patch sets must be listed, and live keys
/// not listed are cleared.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
    path: &str,
) -> Result<(), PatchError> {
    let bad = || PatchError::BadRetainKeys {
        path: path.to_string(),
    };
    let Value::Array(retain) = retain else {
        return Err(bad());
    };
    let listed = |key: &str| retain.iter().any(|k| k.as_str() == Some(key));
    for (key, value) in patch {
        let directive =
            key.starts_with(DELETE_FROM_PRIMITIVE_LIST) || key.starts_with(SET_ELEMENT_ORDER);
        if !value.is_null() && !directive && !listed(key) {
            return Err(bad());
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// Merges the list `field` (if the patch has it) and orders the result by the
/// `$setElementOrder/<field>` list `order`.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    field: &str,
    order: Value,
    node: Node,
    path: &str,
) -> Result<(), PatchError> {
    let list_path = child_path(path, field);
    let wrong = |expected| PatchError::WrongType {
        path: list_path.clone(),
        expected,
    };
    let Value::Array(order) = order else {
        return Err(wrong("a list in $setElementOrder"));
    };
    // Taken in place, so the field keeps its position among the object's keys.
    let live = match original.get_mut(field) {
        Some(Value::Array(live)) => Some(std::mem::take(live)),
        None | Some(Value::Null) => None,
        Some(_) => return Err(wrong("a list")),
    };
    let patched = match patch.shift_remove(field) {
        Some(Value::Array(patched)) => Some(patched),
        None => None,
        Some(_) => return Err(wrong("a list")),
    };
    let info = node.field(field);
    let meta = info.patch_meta();
    let list = ListContext {
        key: meta.merge_key,
        items: info.value().items(),
        path: list_path.clone(),
    };
    if let Some(patched) = &patched {
        list.check_order(patched, &order)?;
    }
    let live_order = match &live {
        Some(live) => list.idents(live),
        None => Vec::new(),
    };
    let merged = match (live, patched) {
        (Some(live), None) => live,
        (None, Some(patched)) => clean_list(patched),
        (Some(live), Some(patched)) if meta.strategy == PatchStrategy::Merge => {
            list.merge(live, patched, false)?
        }
        (Some(_), Some(patched)) => clean_list(patched),
        (None, None) => return Ok(()),
    };
    let order = list.idents(&order);
    let ordered = list.order(merged, &order, &live_order)?;
    original.insert(field.to_string(), Value::Array(ordered));
    Ok(())
}

/// What a list merge needs to know about the list.
struct ListContext {
    /// The merge key, for lists of objects.
    key: Option<&'static str>,
    /// Schema node of the elements.
    items: Node,
    /// Field path, for errors.
    path: String,
}

/// The JSON type of a list's elements.
#[derive(PartialEq, Eq)]
enum ElementKind {
    Scalar(std::mem::Discriminant<Value>),
    Object,
}

impl ListContext {
    /// Merges `patch` into `live`. With `delete_list` the patch lists scalars to
    /// remove (`$deleteFromPrimitiveList`).
    fn merge(
        &self,
        live: Vec<Value>,
        patch: Vec<Value>,
        delete_list: bool,
    ) -> Result<Vec<Value>, PatchError> {
        if live.is_empty() && patch.is_empty() {
            return Ok(live);
        }
        if self.element_kind(&live, &patch)? != ElementKind::Object {
            return Ok(self.merge_scalars(live, patch, delete_list));
        }
        let key = self.key.ok_or_else(|| PatchError::NoMergeKey {
            path: self.path.clone(),
        })?;

        // Directive elements first: deletions and whole-list replacement.
        let mut live = live;
        let mut replace = false;
        let mut plain = Vec::with_capacity(patch.len());
        for item in patch {
            let Some(directive) = item.get(DIRECTIVE) else {
                plain.push(item);
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let doomed = ident(item.get(key).ok_or_else(|| self.missing_key(key))?);
                    live.retain(|v| ident(v.get(key).unwrap_or(&Value::Null)) != doomed);
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(PatchError::ListMergeDirective {
                        path: self.path.clone(),
                    });
                }
                _ => {
                    return Err(PatchError::UnknownDirective {
                        path: self.path.clone(),
                        directive: directive.to_string(),
                    });
                }
            }
        }
        let (mut merged, patch) = if replace {
            (clean_list(plain), Vec::new())
        } else {
            (live, plain)
        };
        let live_order = self.idents(&merged);
        let patch_order = self.idents(&patch);

        // Merge each patch element into the first live element with its key.
        let mut position: HashMap<String, usize> = HashMap::new();
        for (i, id) in live_order.iter().enumerate() {
            position.entry(id.clone()).or_insert(i);
        }
        for (item, id) in patch.into_iter().zip(&patch_order) {
            let Value::Object(item) = item else {
                return Err(self.wrong_type());
            };
            if !item.contains_key(key) {
                return Err(self.missing_key(key));
            }
            match position.get(id).and_then(|&i| merged.get_mut(i)) {
                Some(slot) => {
                    let Value::Object(live) = slot.take() else {
                        return Err(self.wrong_type());
                    };
                    *slot = Value::Object(merge_map(live, item, self.items, &self.path)?);
                }
                None => {
                    if let Some(item) = clean(Value::Object(item)) {
                        position.insert(id.clone(), merged.len());
                        merged.push(item);
                    }
                }
            }
        }
        self.order(merged, &patch_order, &live_order)
    }

    /// Set union (or, for a delete list, difference) of two scalar lists.
    fn merge_scalars(&self, live: Vec<Value>, patch: Vec<Value>, delete_list: bool) -> Vec<Value> {
        if delete_list {
            let doomed: HashSet<String> = patch.iter().map(ident).collect();
            return live
                .into_iter()
                .filter(|v| !doomed.contains(&ident(v)))
                .collect();
        }
        let live_order: Vec<String> = live.iter().map(ident).collect();
        let patch_order: Vec<String> = patch.iter().map(ident).collect();
        let mut seen = HashSet::new();
        let merged = live
            .into_iter()
            .chain(patch)
            .filter(|v| seen.insert(ident(v)))
            .collect();
        order_by(merged, ident, &patch_order, &live_order)
    }

    /// Orders a merged list: elements named in `first` (the patch or the
    /// `$setElementOrder` list) in that order, woven into the others, which keep
    /// their order in `live`.
    fn order(
        &self,
        merged: Vec<Value>,
        first: &[String],
        live: &[String],
    ) -> Result<Vec<Value>, PatchError> {
        if let Some(key) = self.key
            && merged.iter().any(|v| v.get(key).is_none())
        {
            return Err(self.missing_key(key));
        }
        Ok(order_by(merged, |v| self.ident_of(v), first, live))
    }

    /// Checks that the patch list's elements appear in the `$setElementOrder`
    /// list, in the same relative order.
    fn check_order(&self, patch: &[Value], order: &[Value]) -> Result<(), PatchError> {
        if patch.is_empty() || order.is_empty() {
            return Ok(());
        }
        let mut wanted = Vec::with_capacity(patch.len());
        for item in patch {
            if self.key.is_some() && !item.is_object() {
                return Err(self.wrong_type());
            }
            if item.get(DIRECTIVE).is_none() {
                wanted.push(self.checked_ident(item)?);
            }
        }
        let mut next = 0;
        for item in order {
            if next == wanted.len() {
                break;
            }
            if self.checked_ident(item)? == wanted[next] {
                next += 1;
            }
        }
        if next < wanted.len() {
            return Err(PatchError::SetElementOrderMismatch {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Element kind shared by both lists.
    fn element_kind(&self, live: &[Value], patch: &[Value]) -> Result<ElementKind, PatchError> {
        let mut kind = None;
        for item in live.iter().chain(patch) {
            let this = match item {
                Value::Array(_) => {
                    return Err(PatchError::ListOfLists {
                        path: self.path.clone(),
                    });
                }
                Value::Object(_) => ElementKind::Object,
                scalar => ElementKind::Scalar(std::mem::discriminant(scalar)),
            };
            match &kind {
                None => kind = Some(this),
                Some(seen) if *seen != this => {
                    return Err(PatchError::MixedList {
                        path: self.path.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(kind.unwrap_or(ElementKind::Object))
    }

    /// Identities of a list's elements: merge-key values, or the scalars.
    fn idents(&self, list: &[Value]) -> Vec<String> {
        list.iter().map(|v| self.ident_of(v)).collect()
    }

    fn ident_of(&self, item: &Value) -> String {
        match self.key {
            Some(key) => ident(item.get(key).unwrap_or(&Value::Null)),
            None => ident(item),
        }
    }

    /// Identity of an element that must carry the merge key.
    fn checked_ident(&self, item: &Value) -> Result<String, PatchError> {
        match self.key {
            Some(key) => match item {
                Value::Object(map) => map.get(key).map(ident).ok_or_else(|| self.missing_key(key)),
                _ => Err(self.wrong_type()),
            },
            None => Ok(ident(item)),
        }
    }

    fn missing_key(&self, key: &'static str) -> PatchError {
        PatchError::MissingMergeKey {
            path: self.path.clone(),
            key,
        }
    }

    fn wrong_type(&self) -> PatchError {
        PatchError::WrongType {
            path: self.path.clone(),
            expected: "objects as list elements",
        }
    }
}

/// Position of each identity's first occurrence in `order`.
fn first_positions(order: &[String]) -> HashMap<&str, usize> {
    let mut at = HashMap::new();
    for (i, id) in order.iter().enumerate() {
        at.entry(id.as_str()).or_insert(i);
    }
    at
}

/// A hashable identity for a JSON value (its compact serialization).
fn ident(value: &Value) -> String {
    value.to_string()
}

/// Upstream's list order: elements named in `first` sorted by it, the rest
/// sorted by `live`, then woven: a remaining element is taken before the next
/// `first` element when both are in `live` and it comes earlier there.
fn order_by(
    merged: Vec<Value>,
    id: impl Fn(&Value) -> String,
    first: &[String],
    live: &[String],
) -> Vec<Value> {
    let first_at = first_positions(first);
    let live_at = first_positions(live);
    let mut named = Vec::new();
    let mut rest = Vec::new();
    for item in merged {
        let id = id(&item);
        let live_pos = live_at.get(id.as_str()).copied();
        match first_at.get(id.as_str()) {
            Some(&pos) => named.push((pos, live_pos, item)),
            None => rest.push((live_pos.unwrap_or(usize::MAX), live_pos, item)),
        }
    }
    named.sort_by_key(|(pos, _, _)| *pos);
    rest.sort_by_key(|(pos, _, _)| *pos);

    let mut out = Vec::with_capacity(named.len() + rest.len());
    let mut named = named.into_iter().peekable();
    let mut rest = rest.into_iter().peekable();
    loop {
        let take_rest = match (rest.peek(), named.peek()) {
            (Some((_, Some(r), _)), Some((_, Some(n), _))) => r < n,
            (Some(_), None) => true,
            (None, None) => break,
            _ => false,
        };
        let next = if take_rest { rest.next() } else { named.next() };
        if let Some((_, _, item)) = next {
            out.push(item);
        }
    }
    out
}

/// A patch value as it enters the result: maps carrying `$patch` vanish, nulls
/// in maps and the other directives are dropped. `None` if the value vanishes.
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(clean_map(map))),
        Value::Array(items) => Some(Value::Array(clean_list(items))),
        scalar => Some(scalar),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, v)| {
            !v.is_null()
                && k != DIRECTIVE
                && k != RETAIN_KEYS
                && !k.starts_with(SET_ELEMENT_ORDER)
                && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        })
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(items: Vec<Value>) -> Vec<Value> {
    items.into_iter().filter_map(clean).collect()
}

#[cfg(test)]
mod tests;
