//! Field ownership: the field sets behind `metadata.managedFields`.
//!
//! Every write records which *manager* (a client, named by `fieldManager`) set which
//! fields, so that server-side apply can tell a client's own fields from somebody
//! else's. A field set is a tree of path elements, serialized as upstream's `FieldsV1`
//! JSON:
//!
//! ```json
//! {"f:metadata":{"f:labels":{"f:app":{}}},
//!  "f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{}}}}}
//! ```
//!
//! * `f:<name>` is a field of an object;
//! * `k:<json object>` is an item of a list keyed by fields (`containers` by `name`);
//! * `v:<json value>` is an item of a set-like list of scalars (`finalizers`);
//! * `i:<index>` is a position (never produced here, accepted on input);
//! * `{}` marks a leaf, and `.` marks a node that is owned itself *and* has owned children.
//!
//! Children are written in upstream's total order (fields, then keys, then values, then
//! indexes; values ordered numbers < strings < booleans < lists < maps < null), `.` first,
//! so the bytes match what kube-apiserver returns.
//!
//! [`FieldManager::record_update`] tracks ownership for non-apply writes (create, update,
//! patch): a manager silently takes the fields it changed. Server-side apply lives in
//! [`crate::apply`], and uses the same [`FieldManager`].
//!
//! What a list means (atomic, a set, or a map keyed by some fields) comes from a
//! [`Schema`]; without it every list would be atomic and ownership far too coarse.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::merge_keys::{self, ListStrategy};

/// Name of the manager that takes ownership of an object's existing fields when it is
/// first applied to, if nobody owned anything before (upstream's name).
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Name of the entry into which the oldest `Update` entries are folded once there are
/// more than [`MAX_UPDATE_MANAGERS`] of them (upstream's name).
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// Upstream keeps at most this many `Update` entries per object.
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// List and map semantics at a field path, used to build field sets and to merge.
///
/// `path` holds the field names from the object root, list items skipped: the ports
/// of a Deployment's containers are at `["spec", "template", "spec", "containers",
/// "ports"]`.
pub trait Schema: Sync {
    /// How the list at `path` is merged and how its items are identified.
    fn list_strategy(&self, path: &[&str]) -> ListStrategy;

    /// Whether the object at `path` is replaced as a whole (`x-kubernetes-map-type:
    /// atomic`, e.g. a `LabelSelector`), and so is owned as one leaf.
    fn is_atomic_map(&self, path: &[&str]) -> bool {
        let _ = path;
        false
    }

    /// The value a list-map key takes when an item omits it (`protocol` of a port is
    /// `TCP`), so that an applied item matches the defaulted live one.
    fn key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let _ = (path, key);
        None
    }
}

/// The semantics of built-in kinds, from [`crate::merge_keys`]. Kinds it does not
/// know (custom resources) get atomic lists and granular maps, as upstream gives
/// schemas without list-type markers.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinSchema<'a> {
    /// API group (`""` for the core group).
    pub group: &'a str,
    /// Kind.
    pub kind: &'a str,
}

impl Schema for BuiltinSchema<'_> {
    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        merge_keys::list_strategy(self.group, self.kind, path)
    }

    fn is_atomic_map(&self, path: &[&str]) -> bool {
        merge_keys::lookup(self.group, self.kind, path).is_some_and(|f| f.is_atomic())
    }

    /// The only defaulted list-map key among built-in kinds: a port's `protocol`
    /// (`TCP`), in container and service ports alike.
    fn key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let is_map_key = matches!(
            self.list_strategy(path),
            ListStrategy::Map { keys } if keys.contains(&key)
        );
        (is_map_key && key == "protocol" && path.last() == Some(&"ports")).then(|| "TCP".into())
    }
}

/// An object is not shaped the way its schema says, so no field set can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSetError {
    /// An item of a keyed list lacks one of the key fields and the key has no default.
    #[error("{path}: associative list with keys has an element that omits key field {key:?}")]
    MissingKey {
        /// The list.
        path: String,
        /// The missing key field.
        key: String,
    },
    /// An item of a keyed list is not an object.
    #[error("{path}: associative list with keys has an element that is not a map")]
    ItemNotObject {
        /// The list.
        path: String,
    },
    /// An item of a set-like list is not a scalar.
    #[error("{path}: associative list without keys has an element that is not a scalar")]
    ItemNotScalar {
        /// The list.
        path: String,
    },
    /// A `fieldsV1` document is not a valid field set.
    #[error("invalid fieldsV1: {0}")]
    InvalidFieldsV1(String),
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone)]
pub enum PathElement {
    /// A field of an object.
    Field(String),
    /// An item of a keyed list, by its key fields, sorted by name.
    Key(Vec<(String, Value)>),
    /// An item of a set-like list, by its value.
    Value(Value),
    /// An item of a list by position.
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            Self::Field(_) => 0,
            Self::Key(_) => 1,
            Self::Value(_) => 2,
            Self::Index(_) => 3,
        }
    }

    /// The `fieldsV1` key for this element (`f:name`, `k:{"name":"x"}`, `v:"a"`, `i:0`).
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            Self::Field(name) => format!("f:{name}"),
            Self::Key(fields) => {
                let mut out = String::from("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_go_json(&Value::String(name.clone()), &mut out);
                    out.push(':');
                    write_go_json(value, &mut out);
                }
                out.push('}');
                out
            }
            Self::Value(value) => {
                let mut out = String::from("v:");
                write_go_json(value, &mut out);
                out
            }
            Self::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `fieldsV1` key. `Ok(None)` for an unknown prefix, which upstream skips
    /// so that newer formats do not break older readers.
    fn from_fields_v1_key(key: &str) -> Result<Option<Self>, FieldSetError> {
        let bad = || FieldSetError::InvalidFieldsV1(format!("bad path element {key:?}"));
        let (kind, rest) = key.split_at_checked(2).ok_or_else(bad)?;
        let element = match kind {
            "f:" => Self::Field(rest.to_owned()),
            "k:" => {
                let Ok(Value::Object(map)) = serde_json::from_str::<Value>(rest) else {
                    return Err(bad());
                };
                let mut fields: Vec<(String, Value)> = map.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Self::Key(fields)
            }
            "v:" => Self::Value(serde_json::from_str(rest).map_err(|_| bad())?),
            "i:" => Self::Index(rest.parse().map_err(|_| bad())?),
            _ if kind.ends_with(':') => return Ok(None),
            _ => return Err(bad()),
        };
        Ok(Some(element))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Field(a), Self::Field(b)) => a.cmp(b),
            (Self::Key(a), Self::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b) {
                    let c = an.cmp(bn).then_with(|| compare_values(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Self::Value(a), Self::Value(b)) => compare_values(a, b),
            (Self::Index(a), Self::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl fmt::Display for PathElement {
    /// Upstream's human form: `.name`, `[name="nginx"]`, `[="a"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Key(fields) => {
                f.write_str("[")?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={}", display_value(value))?;
                }
                f.write_str("]")
            }
            Self::Value(value) => write!(f, "[={}]", display_value(value)),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path to one field, e.g. `.spec.template.spec.containers[name="nginx"].image`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FieldPath(pub Vec<PathElement>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|pe| write!(f, "{pe}"))
    }
}

/// A set of field paths, stored as a tree.
///
/// A path is *in* the set when its last element is a member of the node its prefix
/// leads to; a node may also have children without being a member itself (owning
/// `.spec.replicas` does not mean owning all of `.spec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    /// Never holds an empty set.
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no path is in the set.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path`; the empty path is ignored (the root is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// The paths below `element`, relative to it.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Every path of `self` or `other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other.clone());
        out
    }

    /// Adds every path of `other`, moving its nodes rather than copying them.
    pub fn union_with(&mut self, other: FieldSet) {
        self.members.extend(other.members);
        for (pe, child) in other.children {
            match self.children.entry(pe) {
                std::collections::btree_map::Entry::Occupied(mut mine) => {
                    mine.get_mut().union_with(child)
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(child);
                }
            }
        }
    }

    /// Removes every path of `other` in place ([`difference`](Self::difference)
    /// without copying what stays).
    pub fn subtract(&mut self, other: &FieldSet) {
        if !other.members.is_empty() {
            self.members.retain(|pe| !other.members.contains(pe));
        }
        if !other.children.is_empty() {
            self.children
                .retain(|pe, mine| match other.children.get(pe) {
                    Some(theirs) => {
                        mine.subtract(theirs);
                        !mine.is_empty()
                    }
                    None => true,
                });
        }
    }

    /// Every path of `self` that is also in `other`.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, mine)| {
                let common = mine.intersection(other.children.get(pe)?);
                (!common.is_empty()).then(|| (pe.clone(), common))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Every path of `self` not in `other`. Paths below a removed path stay.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, mine)| {
                let rest = match other.children.get(pe) {
                    Some(theirs) => mine.difference(theirs),
                    None => mine.clone(),
                };
                (!rest.is_empty()).then(|| (pe.clone(), rest))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Every path of `self` that neither is in `other` nor lies below a path of it.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter(|(pe, _)| !other.members.contains(pe))
            .filter_map(|(pe, mine)| {
                let rest = match other.children.get(pe) {
                    Some(theirs) => mine.recursive_difference(theirs),
                    None => mine.clone(),
                };
                (!rest.is_empty()).then(|| (pe.clone(), rest))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Makes every object field that has children a member too, so that removing the
    /// set's paths from an object removes emptied objects as well as their leaves.
    pub(crate) fn with_named_fields_as_members(&self) -> FieldSet {
        let mut out = self.clone();
        for (pe, child) in &self.children {
            if matches!(pe, PathElement::Field(_)) {
                out.members.insert(pe.clone());
            }
            out.children
                .insert(pe.clone(), child.with_named_fields_as_members());
        }
        out
    }

    /// Every path in the set, in upstream's order (a node before its children).
    pub fn paths(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<FieldPath>) {
        let mut members = self.members.iter().peekable();
        for (pe, child) in &self.children {
            while let Some(m) = members.next_if(|m| *m <= pe) {
                out.push(FieldPath(
                    [prefix.as_slice(), std::slice::from_ref(m)].concat(),
                ));
            }
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
        for m in members {
            out.push(FieldPath(
                [prefix.as_slice(), std::slice::from_ref(m)].concat(),
            ));
        }
    }

    /// The set as a `fieldsV1` document, byte-for-byte as upstream writes it.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.fields_v1_contents(false))
    }

    fn fields_v1_contents(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".to_owned(), Value::Object(Map::new()));
        }
        let mut members = self.members.iter().peekable();
        for (pe, child) in &self.children {
            while let Some(m) = members.next_if(|m| *m < pe) {
                out.insert(m.to_fields_v1_key(), Value::Object(Map::new()));
            }
            let is_member = members.next_if(|m| *m == pe).is_some();
            out.insert(
                pe.to_fields_v1_key(),
                Value::Object(child.fields_v1_contents(is_member)),
            );
        }
        for m in members {
            out.insert(m.to_fields_v1_key(), Value::Object(Map::new()));
        }
        out
    }

    /// Reads a `fieldsV1` document.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldSetError> {
        let Value::Object(map) = value else {
            return Err(FieldSetError::InvalidFieldsV1("not an object".to_owned()));
        };
        let mut set = FieldSet::new();
        for (key, child) in map {
            if key == "." {
                continue;
            }
            let Some(pe) = PathElement::from_fields_v1_key(key)? else {
                continue;
            };
            let Value::Object(grand) = child else {
                return Err(FieldSetError::InvalidFieldsV1(format!(
                    "{key:?} is not an object"
                )));
            };
            let children = FieldSet::from_fields_v1(child)?;
            if grand.is_empty() || grand.contains_key(".") {
                set.members.insert(pe.clone());
            }
            if !children.is_empty() {
                set.children.insert(pe, children);
            }
        }
        Ok(set)
    }
}

/// The set of fields an object (or a partial object, for apply) specifies: every
/// scalar, atomic list and atomic map, every item of a keyed or set-like list, and
/// every field that is `null` or an empty object. Objects themselves are not members.
pub fn field_set(schema: &dyn Schema, object: &Value) -> Result<FieldSet, FieldSetError> {
    let mut names = Vec::new();
    match object {
        Value::Object(map) => object_set(schema, map, &mut names),
        _ => Ok(FieldSet::new()),
    }
}

fn object_set<'v>(
    schema: &dyn Schema,
    map: &'v Map<String, Value>,
    names: &mut Vec<&'v str>,
) -> Result<FieldSet, FieldSetError> {
    let mut set = FieldSet::new();
    for (name, value) in map {
        let pe = PathElement::Field(name.clone());
        names.push(name);
        let child = value_set(schema, value, names)?;
        names.pop();
        match child {
            Some(child) if !child.is_empty() => {
                set.children.insert(pe, child);
            }
            Some(_) => {}
            None => {
                set.members.insert(pe);
            }
        }
    }
    Ok(set)
}

/// The set below a value; `None` when the value is a leaf (owned as one piece).
fn value_set<'v>(
    schema: &dyn Schema,
    value: &'v Value,
    names: &mut Vec<&'v str>,
) -> Result<Option<FieldSet>, FieldSetError> {
    match value {
        Value::Object(map) if !map.is_empty() && !schema.is_atomic_map(names) => {
            object_set(schema, map, names).map(Some)
        }
        Value::Array(items) => match schema.list_strategy(names) {
            ListStrategy::Atomic => Ok(None),
            strategy => {
                let mut set = FieldSet::new();
                for item in items {
                    let pe = item_element(schema, &strategy, item, names)?;
                    if let Value::Object(fields) = item {
                        let child = object_set(schema, fields, names)?;
                        if !child.is_empty() {
                            set.children.insert(pe.clone(), child);
                        }
                    }
                    set.members.insert(pe);
                }
                Ok(Some(set))
            }
        },
        _ => Ok(None),
    }
}

/// Identifies an item of a non-atomic list.
pub(crate) fn item_element(
    schema: &dyn Schema,
    strategy: &ListStrategy,
    item: &Value,
    names: &[&str],
) -> Result<PathElement, FieldSetError> {
    let path = || names.iter().map(|n| format!(".{n}")).collect::<String>();
    match strategy {
        ListStrategy::Map { keys } => {
            let Value::Object(fields) = item else {
                return Err(FieldSetError::ItemNotObject { path: path() });
            };
            let mut key = Vec::with_capacity(keys.len());
            for name in keys.iter() {
                let value = match fields.get(*name) {
                    Some(v) if !v.is_null() => v.clone(),
                    _ => schema.key_default(names, name).ok_or_else(|| {
                        FieldSetError::MissingKey {
                            path: path(),
                            key: name.to_string(),
                        }
                    })?,
                };
                key.push((name.to_string(), value));
            }
            key.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(key))
        }
        _ if item.is_object() || item.is_array() => {
            Err(FieldSetError::ItemNotScalar { path: path() })
        }
        _ => Ok(PathElement::Value(item.clone())),
    }
}

/// What changed between two versions of an object, as field sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Paths present only in the new object.
    pub added: FieldSet,
    /// Leaves present in both whose values differ.
    pub modified: FieldSet,
    /// Paths present only in the old object, including the roots of removed subtrees.
    pub removed: FieldSet,
}

impl Comparison {
    /// Whether the objects are the same.
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares two objects field by field.
pub fn compare(schema: &dyn Schema, old: &Value, new: &Value) -> Result<Comparison, FieldSetError> {
    let mut cmp = Comparison::default();
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    Walk {
        schema,
        out: &mut cmp,
    }
    .objects(old, new, &mut Vec::new(), &mut Vec::new())?;
    Ok(cmp)
}

struct Walk<'s, 'c> {
    schema: &'s dyn Schema,
    out: &'c mut Comparison,
}

impl Walk<'_, '_> {
    fn objects<'v>(
        &mut self,
        old: &'v Map<String, Value>,
        new: &'v Map<String, Value>,
        names: &mut Vec<&'v str>,
        path: &mut Vec<PathElement>,
    ) -> Result<(), FieldSetError> {
        for (name, old_value) in old {
            path.push(PathElement::Field(name.clone()));
            names.push(name);
            match new.get(name) {
                Some(new_value) => self.values(old_value, new_value, names, path)?,
                None => self.subtree(old_value, names, path, false)?,
            }
            names.pop();
            path.pop();
        }
        for (name, new_value) in new {
            if !old.contains_key(name) {
                path.push(PathElement::Field(name.clone()));
                names.push(name);
                self.subtree(new_value, names, path, true)?;
                names.pop();
                path.pop();
            }
        }
        Ok(())
    }

    fn values<'v>(
        &mut self,
        old: &'v Value,
        new: &'v Value,
        names: &mut Vec<&'v str>,
        path: &mut Vec<PathElement>,
    ) -> Result<(), FieldSetError> {
        // Equal values hold no change (the common case: a status write leaves
        // the spec as it was); only differing ones need a field-by-field walk.
        if old == new {
            return Ok(());
        }
        let old_leaf = is_leaf(self.schema, old, names);
        let new_leaf = is_leaf(self.schema, new, names);
        match (old, new) {
            _ if old_leaf && new_leaf => {
                if compare_values(old, new) != Ordering::Equal {
                    self.out.modified.insert(path);
                }
                Ok(())
            }
            (Value::Object(o), Value::Object(n)) => self.objects(o, n, names, path),
            (Value::Array(o), Value::Array(n)) => self.lists(o, n, names, path),
            _ => {
                self.subtree(old, names, path, false)?;
                self.subtree(new, names, path, true)
            }
        }
    }

    fn lists<'v>(
        &mut self,
        old: &'v [Value],
        new: &'v [Value],
        names: &mut Vec<&'v str>,
        path: &mut Vec<PathElement>,
    ) -> Result<(), FieldSetError> {
        let strategy = self.schema.list_strategy(names);
        let index =
            |items: &'v [Value]| -> Result<BTreeMap<PathElement, &'v Value>, FieldSetError> {
                let mut map = BTreeMap::new();
                for item in items {
                    let pe = item_element(self.schema, &strategy, item, names)?;
                    map.entry(pe).or_insert(item);
                }
                Ok(map)
            };
        let old_items = index(old)?;
        let new_items = index(new)?;
        for (pe, old_item) in &old_items {
            path.push(pe.clone());
            match new_items.get(pe) {
                Some(new_item) if old_item == new_item => {}
                Some(new_item) => {
                    if let (Value::Object(o), Value::Object(n)) = (old_item, new_item) {
                        self.objects(o, n, names, path)?;
                    }
                }
                None => self.subtree(old_item, names, path, false)?,
            }
            path.pop();
        }
        for (pe, new_item) in &new_items {
            if !old_items.contains_key(pe) {
                path.push(pe.clone());
                self.subtree(new_item, names, path, true)?;
                path.pop();
            }
        }
        Ok(())
    }

    /// Records a whole value at `path` as added or removed.
    fn subtree<'v>(
        &mut self,
        value: &'v Value,
        names: &mut Vec<&'v str>,
        path: &[PathElement],
        added: bool,
    ) -> Result<(), FieldSetError> {
        let below = value_set(self.schema, value, names)?;
        let set = if added {
            &mut self.out.added
        } else {
            &mut self.out.removed
        };
        // Leaves and list items are owned themselves. A removed object is recorded too,
        // so that ownership of it in any form (upstream writes `.` for some objects)
        // is dropped with it.
        let is_item = !matches!(path.last(), Some(PathElement::Field(_)));
        if below.is_none() || is_item || !added {
            set.insert(path);
        }
        if let Some(below) = below.filter(|b| !b.is_empty()) {
            graft(set, path, below);
        }
        Ok(())
    }
}

/// Whether a value is owned as one piece at `names` (scalars, null, empty objects,
/// atomic lists and maps).
fn is_leaf(schema: &dyn Schema, value: &Value, names: &[&str]) -> bool {
    match value {
        Value::Object(map) => map.is_empty() || schema.is_atomic_map(names),
        Value::Array(_) => matches!(schema.list_strategy(names), ListStrategy::Atomic),
        _ => true,
    }
}

/// Puts `set` below `path` in `root`.
fn graft(root: &mut FieldSet, path: &[PathElement], set: FieldSet) {
    match path {
        [] => root.union_with(set),
        [first, rest @ ..] => graft(root.children.entry(first.clone()).or_default(), rest, set),
    }
}

/// Upstream's total order on values: numbers (ints and floats compared numerically) <
/// strings < booleans < lists < maps < null.
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| compare_values(x, y))
            .find(|c| c.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|a, b| a.0.cmp(b.0));
            ys.sort_by(|a, b| a.0.cmp(b.0));
            xs.iter()
                .zip(&ys)
                .map(|((xk, xv), (yk, yv))| xk.cmp(yk).then_with(|| compare_values(xv, yv)))
                .find(|c| c.is_ne())
                .unwrap_or_else(|| xs.len().cmp(&ys.len()))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Writes JSON as Go's `encoding/json` does: object keys sorted, and `<`, `>`, `&`,
/// U+2028 and U+2029 escaped. Key and value path elements must match upstream's bytes.
fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(&Value::String(k.clone()), out);
                out.push(':');
                write_go_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(v, out);
            }
            out.push(']');
        }
        Value::String(s) => {
            for c in Value::String(s.clone()).to_string().chars() {
                match c {
                    '<' => out.push_str("\\u003c"),
                    '>' => out.push_str("\\u003e"),
                    '&' => out.push_str("\\u0026"),
                    '\u{2028}' => out.push_str("\\u2028"),
                    '\u{2029}' => out.push_str("\\u2029"),
                    c => out.push(c),
                }
            }
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Upstream's human form of a value in a path or manager name: strings quoted, the
/// rest as JSON.
fn display_value(value: &Value) -> String {
    value.to_string()
}

/// The operation that produced a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write: create, update, patch.
    Update,
}

impl Operation {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// Who owns a set: one managedFields entry per identity.
///
/// For `Update` the API version is part of the identity (upstream keeps one entry per
/// version written); for `Apply` it is not, so re-applying at another version replaces
/// the applier's set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagerId {
    /// The `fieldManager` name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// Part of the identity for `Update` only; empty for `Apply`.
    pub api_version: String,
    /// `""` for the main resource, else e.g. `status` or `scale`.
    pub subresource: String,
}

impl fmt::Display for ManagerId {
    /// Upstream's form in conflict messages: `"kubectl"`, `"kube-controller-manager"
    /// using apps/v1`, `"x" with subresource "status" using v1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", display_value(&Value::String(self.manager.clone())))?;
        if !self.subresource.is_empty() {
            write!(
                f,
                " with subresource {}",
                display_value(&Value::String(self.subresource.clone()))
            )?;
        }
        if self.operation == Operation::Update {
            write!(f, " using {}", self.api_version)?;
        }
        Ok(())
    }
}

/// One managedFields entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    /// The API version the set was recorded at.
    pub api_version: String,
    /// When the manager last changed the object; absent when it never did.
    pub time: Option<Timestamp>,
    /// The fields owned.
    pub set: FieldSet,
}

/// All the managedFields entries of an object, by owner.
pub type Managers = BTreeMap<ManagerId, ManagedEntry>;

/// `metadata.managedFields` could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedFieldsError {
    /// An entry is malformed.
    #[error("invalid managedFields entry {index}: {reason}")]
    InvalidEntry {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An object does not fit its schema.
    #[error(transparent)]
    FieldSet(#[from] FieldSetError),
}

/// Decodes `metadata.managedFields` of an object. A missing or null list is empty.
pub fn decode_managed_fields(object: &Value) -> Result<Managers, ManagedFieldsError> {
    let Some(list) = object
        .pointer("/metadata/managedFields")
        .filter(|v| !v.is_null())
    else {
        return Ok(Managers::new());
    };
    let bad = |index: usize, reason: &str| ManagedFieldsError::InvalidEntry {
        index,
        reason: reason.to_owned(),
    };
    let Value::Array(entries) = list else {
        return Err(bad(0, "managedFields is not a list"));
    };
    let mut managers = Managers::new();
    for (index, entry) in entries.iter().enumerate() {
        let text = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or_default();
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err(bad(index, "operation must be `Apply` or `Update`")),
        };
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            return Err(bad(index, "apiVersion must not be empty"));
        }
        let time = match entry.get("time").and_then(Value::as_str) {
            Some(t) => Some(
                t.parse::<Timestamp>()
                    .map_err(|e| bad(index, &format!("invalid time: {e}")))?,
            ),
            None => None,
        };
        let set = match entry.get("fieldsV1") {
            Some(fields) if !fields.is_null() => FieldSet::from_fields_v1(fields)?,
            _ => FieldSet::new(),
        };
        let id = ManagerId {
            manager: text("manager").to_owned(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => api_version.to_owned(),
            },
            subresource: text("subresource").to_owned(),
        };
        let entry = ManagedEntry {
            api_version: api_version.to_owned(),
            time,
            set,
        };
        managers.insert(id, entry);
    }
    Ok(managers)
}

/// Encodes entries as `metadata.managedFields`, sorted as upstream sorts them (Apply
/// before Update, then by time, manager, API version, subresource).
pub fn encode_managed_fields(managers: &Managers) -> Value {
    let mut entries: Vec<_> = managers.iter().filter(|(_, e)| !e.set.is_empty()).collect();
    entries.sort_by_key(|(id, e)| {
        (
            id.operation,
            e.time.map_or(0, |t| t.as_second()),
            &id.manager,
            &e.api_version,
            &id.subresource,
        )
    });
    Value::Array(
        entries
            .into_iter()
            .map(|(id, e)| {
                let mut m = Map::new();
                m.insert("manager".into(), id.manager.clone().into());
                m.insert("operation".into(), id.operation.as_str().into());
                m.insert("apiVersion".into(), e.api_version.clone().into());
                if let Some(t) = e.time {
                    m.insert("time".into(), format_time(t).into());
                }
                m.insert("fieldsType".into(), "FieldsV1".into());
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !id.subresource.is_empty() {
                    m.insert("subresource".into(), id.subresource.clone().into());
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// RFC 3339 at second precision, as `metav1.Time` serializes.
fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Replaces (or, for no entries, removes) `metadata.managedFields`.
pub(crate) fn set_managed_fields(object: &mut Value, managers: &Managers) {
    let encoded = encode_managed_fields(managers);
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match encoded {
        Value::Array(list) if list.is_empty() => {
            meta.remove("managedFields");
        }
        encoded => {
            meta.insert("managedFields".into(), encoded);
        }
    }
}

/// Removes `metadata.managedFields`, returning whether it was present (even as null).
pub(crate) fn strip_managed_fields(object: &mut Value) -> Option<Value> {
    object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("managedFields"))
}

/// Fields never tracked: identity and server-set metadata (upstream's strip list).
pub(crate) fn untracked_fields() -> FieldSet {
    let mut set = FieldSet::new();
    let f = |s: &str| PathElement::Field(s.to_owned());
    set.insert(&[f("apiVersion")]);
    set.insert(&[f("kind")]);
    set.insert(&[f("metadata")]);
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[f("metadata"), f(name)]);
    }
    set
}

/// Tracks field ownership for one write: who writes, at which version, when.
///
/// Build one per request; [`FieldManager::record_update`] serves create, update and
/// patch, [`FieldManager::apply`](crate::apply) serves server-side apply.
pub struct FieldManager<'a> {
    /// List and map semantics of the object's type.
    pub schema: &'a dyn Schema,
    /// `group/version` (or `v1`) the request was made at.
    pub api_version: &'a str,
    /// Kind of the object; an applied configuration must name the same.
    pub kind: &'a str,
    /// The request's `fieldManager`.
    pub manager: &'a str,
    /// `""` for the main resource, else `status`, `scale`…
    pub subresource: &'a str,
    /// Fields the write cannot change (the strategy's reset fields, e.g. `status` on the
    /// main resource); they are never owned through this write.
    pub ignored: FieldSet,
    /// Wall time of the write.
    pub now: Timestamp,
}

impl<'a> FieldManager<'a> {
    /// A field manager with nothing ignored.
    pub fn new(
        schema: &'a dyn Schema,
        api_version: &'a str,
        kind: &'a str,
        manager: &'a str,
        subresource: &'a str,
        now: Timestamp,
    ) -> Self {
        Self {
            schema,
            api_version,
            kind,
            manager,
            subresource,
            ignored: FieldSet::new(),
            now,
        }
    }

    pub(crate) fn id(&self, operation: Operation) -> ManagerId {
        ManagerId {
            manager: self.manager.to_owned(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => self.api_version.to_owned(),
            },
            subresource: self.subresource.to_owned(),
        }
    }

    /// Records a non-apply write (create: `old` is `None`; update and patch: `old` is the
    /// stored object) in `new`'s `metadata.managedFields`.
    ///
    /// Fields that changed or appeared become owned by this manager with operation
    /// `Update`, and are taken from every other manager without conflict. Managers left
    /// with nothing are dropped. The request may rewrite managedFields itself; a list
    /// holding one empty entry (or an empty list) clears them. On the main resource an
    /// absent list keeps the stored one; a subresource write always keeps it. As
    /// upstream, an object that has no managedFields at all is not tracked by updates.
    ///
    /// On error `new` is left without managedFields (upstream's behaviour: garbage is
    /// never stored); the write itself can proceed.
    pub fn record_update(
        &self,
        old: Option<&Value>,
        new: &mut Value,
    ) -> Result<(), ManagedFieldsError> {
        let result = self.try_record_update(old, new);
        if result.is_err() {
            strip_managed_fields(new);
        }
        result
    }

    fn try_record_update(
        &self,
        old: Option<&Value>,
        new: &mut Value,
    ) -> Result<(), ManagedFieldsError> {
        let live_managers = || decode_managed_fields(old?).ok();
        let requested = strip_managed_fields(new);
        let managers = if !self.subresource.is_empty() {
            live_managers()
        } else {
            match &requested {
                Some(Value::Array(list))
                    if list.is_empty()
                        || (list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty)) =>
                {
                    Some(Managers::new())
                }
                Some(list) => {
                    let mut wrapper = Value::Object(Map::new());
                    wrapper["metadata"] = Value::Object(Map::new());
                    wrapper["metadata"]["managedFields"] = list.clone();
                    decode_managed_fields(&wrapper)
                        .ok()
                        .filter(|m| !m.is_empty())
                        .or_else(live_managers)
                }
                None => live_managers(),
            }
        };
        let mut managers = managers.unwrap_or_default();
        if managers.is_empty() && old.is_some() {
            return Ok(());
        }
        let mut old_obj = old.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        strip_managed_fields(&mut old_obj);
        self.update_managers(&old_obj, new, &mut managers, self.id(Operation::Update))?;
        cap_update_managers(&mut managers);
        set_managed_fields(new, &managers);
        Ok(())
    }

    /// Moves ownership of what changed between `old` and `new` to `owner`, as one
    /// `Update` operation. Both objects are without managedFields.
    pub(crate) fn update_managers(
        &self,
        old: &Value,
        new: &Value,
        managers: &mut Managers,
        owner: ManagerId,
    ) -> Result<(), FieldSetError> {
        let Comparison {
            added,
            mut modified,
            removed,
        } = compare(self.schema, old, new)?;
        modified.union_with(added);
        let changed = if self.ignored.is_empty() {
            modified
        } else {
            modified.recursive_difference(&self.ignored)
        };
        for entry in managers.values_mut() {
            entry.set.subtract(&changed);
            entry.set.subtract(&removed);
        }
        let mut taken = changed;
        taken.subtract(&untracked_fields());
        if !taken.is_empty() {
            let entry = managers.entry(owner).or_insert_with(|| ManagedEntry {
                api_version: self.api_version.to_owned(),
                time: None,
                set: FieldSet::new(),
            });
            entry.set.union_with(taken);
            entry.api_version = self.api_version.to_owned();
            entry.time = Some(self.now);
        }
        managers.retain(|_, e| !e.set.is_empty());
        Ok(())
    }
}

/// Folds the oldest `Update` entries into one [`ANCIENT_CHANGES`] entry per API version
/// once there are more than [`MAX_UPDATE_MANAGERS`].
fn cap_update_managers(managers: &mut Managers) {
    let mut updaters: Vec<(Option<Timestamp>, ManagerId)> = managers
        .iter()
        .filter(|(id, _)| id.operation == Operation::Update)
        .map(|(id, e)| (e.time, id.clone()))
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by_key(|(time, id)| (time.map_or(0, |t| t.as_second()), id.clone()));
    let mut remaining = updaters.len();
    let mut first_by_version: BTreeMap<String, ManagerId> = BTreeMap::new();
    for (_, id) in updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(entry) = managers.get(&id).cloned() else {
            continue;
        };
        let Some(first) = first_by_version.get(&entry.api_version).cloned() else {
            first_by_version.insert(entry.api_version.clone(), id);
            continue;
        };
        let bucket = ManagerId {
            manager: ANCIENT_CHANGES.to_owned(),
            operation: Operation::Update,
            api_version: entry.api_version.clone(),
            subresource: String::new(),
        };
        if !managers.contains_key(&bucket)
            && let Some(first_entry) = managers.remove(&first)
        {
            managers.insert(bucket.clone(), first_entry);
        }
        managers.remove(&id);
        if let Some(b) = managers.get_mut(&bucket) {
            b.set = b.set.union(&entry.set);
            b.time = entry.time;
        }
        remaining -= 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A small fixed schema for tests, independent of the real table.
    pub(crate) struct TestSchema;

    impl Schema for TestSchema {
        fn list_strategy(&self, path: &[&str]) -> ListStrategy {
            let keys = |keys: &'static [&'static str]| ListStrategy::Map { keys };
            match path.last().copied() {
                Some("containers" | "initContainers" | "env" | "volumes") => keys(&["name"]),
                Some("ports") => keys(&["containerPort", "protocol"]),
                Some("conditions") => keys(&["type"]),
                Some("finalizers") => ListStrategy::Set,
                _ => ListStrategy::Atomic,
            }
        }

        fn is_atomic_map(&self, path: &[&str]) -> bool {
            path.ends_with(&["spec", "selector"])
        }

        fn key_default(&self, path: &[&str], key: &str) -> Option<Value> {
            (path.last() == Some(&"ports") && key == "protocol").then(|| json!("TCP"))
        }
    }

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_owned())
    }

    #[test]
    fn fields_v1_matches_upstream_bytes() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
            "spec": {
                "containers": [{
                    "name": "nginx",
                    "image": "nginx:1.27",
                    "args": ["-g", "daemon off;"],
                    "ports": [{"containerPort": 80}],
                    "resources": {}
                }],
                "finalizers": ["b", "a"]
            }
        });
        let set = field_set(&TestSchema, &pod).unwrap();
        let set = set.difference(&untracked_fields());
        let expected = concat!(
            r#"{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"#,
            r#""f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:args":{},"#,
            r#""f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":"#,
            r#"{".":{},"f:containerPort":{}}},"f:resources":{}}},"#,
            r#""f:finalizers":{"v:\"a\"":{},"v:\"b\"":{}}}}"#
        );
        assert_eq!(
            serde_json::to_string(&set.to_fields_v1()).unwrap(),
            expected
        );
        let back = FieldSet::from_fields_v1(&serde_json::from_str(expected).unwrap()).unwrap();
        assert_eq!(back, set);
    }

    fn arb_object() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z<&]{0,4}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::btree_map("[a-z]{1,3}", inner.clone(), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                prop::collection::vec("[a-z]{1,3}", 0..4).prop_map(|v| json!({ "finalizers": v })),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3).prop_map(|m| {
                    let items: Vec<Value> = m
                        .into_iter()
                        .map(|(name, v)| json!({"name": name, "value": v}))
                        .collect();
                    json!({ "env": items })
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn fields_v1_round_trips(object in arb_object()) {
            let set = field_set(&TestSchema, &object).unwrap();
            let text = serde_json::to_string(&set.to_fields_v1()).unwrap();
            let back = FieldSet::from_fields_v1(&serde_json::from_str(&text).unwrap()).unwrap();
            proptest::prop_assert_eq!(&back, &set);
            // Comparing an object with itself finds nothing; with nothing, everything.
            proptest::prop_assert!(compare(&TestSchema, &object, &object).unwrap().is_same());
            let created = compare(&TestSchema, &json!({}), &object).unwrap();
            proptest::prop_assert_eq!(created.added, set);
        }
    }

    #[test]
    fn value_order_is_upstreams() {
        let mut s = FieldSet::new();
        for v in [json!(null), json!(true), json!("a"), json!(2), json!(1.5)] {
            s.insert(&[PathElement::Value(v)]);
        }
        s.insert(&[PathElement::Index(0)]);
        s.insert(&[f("z")]);
        let keys: Vec<String> = s
            .to_fields_v1()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            ["f:z", "v:1.5", "v:2", "v:\"a\"", "v:true", "v:null", "i:0"]
        );
    }

    #[test]
    fn go_escaping_in_keys() {
        let pe = PathElement::Key(vec![("name".into(), json!("a<b>&c"))]);
        assert_eq!(
            pe.to_fields_v1_key(),
            r#"k:{"name":"a\u003cb\u003e\u0026c"}"#
        );
    }

    #[test]
    fn path_display() {
        let path = FieldPath(vec![
            f("spec"),
            f("containers"),
            PathElement::Key(vec![("name".into(), json!("nginx"))]),
            f("ports"),
            PathElement::Key(vec![
                ("containerPort".into(), json!(80)),
                ("protocol".into(), json!("TCP")),
            ]),
            f("finalizers"),
            PathElement::Value(json!("x")),
        ]);
        assert_eq!(
            path.to_string(),
            r#".spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"].finalizers[="x"]"#
        );
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("a")]);
        assert_eq!(a.intersection(&b).paths().len(), 1);
        assert_eq!(a.union(&b).paths().len(), 3);
        let mut owned = a.clone();
        owned.union_with(b.clone());
        assert_eq!(owned, a.union(&b));
        let mut subtracted = a.clone();
        subtracted.subtract(&b);
        assert_eq!(subtracted, a.difference(&b));
        subtracted = owned.clone();
        subtracted.subtract(&a);
        assert_eq!(subtracted, owned.difference(&a));
        assert!(a.difference(&b).contains(&[f("spec"), f("paused")]));
        assert!(!a.difference(&b).contains(&[f("spec"), f("replicas")]));
        let mut spec = FieldSet::new();
        spec.insert(&[f("spec")]);
        assert!(a.recursive_difference(&spec).is_empty());
        assert_eq!(a.difference(&spec), a);
    }

    #[test]
    fn selector_is_one_leaf_and_empty_list_owns_nothing() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "x"}},
                                "template": {"spec": {"containers": []}}}});
        let set = field_set(&TestSchema, &d).unwrap();
        assert_eq!(
            serde_json::to_string(&set.to_fields_v1()).unwrap(),
            r#"{"f:spec":{"f:selector":{}}}"#
        );
    }

    #[test]
    fn missing_key_is_an_error() {
        let d = json!({"spec": {"containers": [{"image": "x"}]}});
        assert!(matches!(
            field_set(&TestSchema, &d),
            Err(FieldSetError::MissingKey { key, .. }) if key == "name"
        ));
    }

    fn now() -> Timestamp {
        "2026-01-02T03:04:05.678Z".parse().unwrap()
    }

    #[test]
    fn comparison_reports_only_what_changed_below_equal_subtrees() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}});
        let mut new = old.clone();
        new["status"]["phase"] = json!("Running");
        new["status"]["podIP"] = json!("10.0.0.1");
        new["spec"]["containers"][1]["image"] = json!("z");
        let cmp = compare(&TestSchema, &old, &new).unwrap();
        let paths = |set: &FieldSet| -> Vec<String> {
            set.paths().iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            paths(&cmp.modified),
            [
                r#".spec.containers[name="b"].image"#.to_string(),
                ".status.phase".to_string()
            ]
        );
        assert_eq!(paths(&cmp.added), [".status.podIP".to_string()]);
        assert!(cmp.removed.is_empty());
        assert!(compare(&TestSchema, &old, &old.clone()).unwrap().is_same());
    }

    #[test]
    fn create_then_update_moves_ownership() {
        let fm = FieldManager::new(&TestSchema, "v1", "ConfigMap", "kubectl-create", "", now());
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v", "q": "w"}});
        fm.record_update(None, &mut cm).unwrap();
        let mf = &cm["metadata"]["managedFields"];
        assert_eq!(
            mf,
            &json!([{
                "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:k": {}, "f:q": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}
            }])
        );

        // Another client edits one key, without sending managedFields.
        let mut edited = cm.clone();
        strip_managed_fields(&mut edited);
        edited["data"]["k"] = json!("changed");
        let edit = FieldManager::new(&TestSchema, "v1", "ConfigMap", "kubectl-edit", "", now());
        edit.record_update(Some(&cm), &mut edited).unwrap();
        let managers = decode_managed_fields(&edited).unwrap();
        let owners: Vec<(&str, Vec<String>)> = managers
            .iter()
            .map(|(id, e)| {
                (
                    id.manager.as_str(),
                    e.set.paths().iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            owners,
            [
                (
                    "kubectl-create",
                    vec![".data.q".into(), ".metadata.labels.a".into()]
                ),
                ("kubectl-edit", vec![".data.k".to_string()]),
            ]
        );

        // Removing a key drops ownership; a manager left with nothing disappears.
        let mut removed = edited.clone();
        removed["data"].as_object_mut().unwrap().remove("k");
        let other = FieldManager::new(&TestSchema, "v1", "ConfigMap", "other", "", now());
        other.record_update(Some(&edited), &mut removed).unwrap();
        let managers = decode_managed_fields(&removed).unwrap();
        assert_eq!(managers.len(), 1);
    }

    #[test]
    fn no_change_adds_no_entry_and_reset_clears() {
        let fm = FieldManager::new(&TestSchema, "v1", "ConfigMap", "a", "", now());
        let mut cm = json!({"metadata": {"name": "c"}, "data": {"k": "v"}});
        fm.record_update(None, &mut cm).unwrap();
        let mut same = cm.clone();
        FieldManager::new(&TestSchema, "v1", "ConfigMap", "b", "", now())
            .record_update(Some(&cm), &mut same)
            .unwrap();
        assert_eq!(same, cm);

        let mut reset = cm.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        fm.record_update(Some(&cm), &mut reset).unwrap();
        assert!(reset["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn update_entries_are_capped() {
        let mut obj = json!({"metadata": {"name": "c"}, "data": {}});
        for i in 0..12 {
            let mut next = obj.clone();
            next["data"][format!("k{i}")] = json!("v");
            let t = now() + jiff::SignedDuration::from_secs(i);
            let name = format!("m{i:02}");
            FieldManager::new(&TestSchema, "v1", "ConfigMap", &name, "", t)
                .record_update(Some(&obj).filter(|_| i > 0), &mut next)
                .unwrap();
            obj = next;
        }
        let managers = decode_managed_fields(&obj).unwrap();
        assert_eq!(managers.len(), MAX_UPDATE_MANAGERS);
        let ancient = managers
            .iter()
            .find(|(id, _)| id.manager == ANCIENT_CHANGES)
            .map(|(_, e)| e.set.paths().len());
        assert_eq!(ancient, Some(3));
    }
}
