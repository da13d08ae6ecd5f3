//! Server-side apply (`PATCH` with `application/apply-patch+yaml`).
//!
//! An applied configuration is a partial object: the fields one manager wants to own,
//! with the values it wants them to have. Applying it
//!
//! 1. merges it into the live object (objects merge, keyed lists merge by key, set-like
//!    lists union, atomic lists and scalars are replaced);
//! 2. makes the manager own exactly the fields of the configuration (an `Apply` entry
//!    in `metadata.managedFields`);
//! 3. removes the fields the manager applied last time but no longer specifies, unless
//!    another manager owns them: this is what makes apply declarative;
//! 4. refuses to change a field another manager owns (a *conflict*), unless forced,
//!    in which case ownership moves to the applier. Setting a field to the value it
//!    already has is no conflict: both managers then share it.
//!
//! Worked example: `kubectl apply --server-side` creates a Deployment with
//! `replicas: 3`, the `kubectl` manager owns `.spec.replicas`. `kubectl scale` (an
//! `Update` by `kubectl-scale`) sets 5 and takes `.spec.replicas`. Applying the
//! manifest again with 3 is then a conflict with `"kubectl-scale" using apps/v1`; with
//! `--force-conflicts` the value becomes 3 and `kubectl` owns the field again.

use serde_json::{Map, Value};

use crate::managed_fields::{
    BEFORE_FIRST_APPLY, FieldManager, FieldPath, FieldSet, FieldSetError, ManagedEntry, ManagerId,
    Managers, Operation, PathElement, Schema, compare, decode_managed_fields, field_set,
    item_element, set_managed_fields, strip_managed_fields, untracked_fields,
};
use crate::merge_keys::ListStrategy;

/// One field another manager owns and the applied configuration would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owner of the field.
    pub manager: ManagerId,
    /// The field, e.g. `.spec.replicas`.
    pub path: FieldPath,
}

impl Conflict {
    /// The `message` of the `FieldManagerConflict` status cause: `conflict with
    /// "kubectl-scale" using apps/v1`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager)
    }

    /// The `field` of the status cause: `.spec.replicas`.
    pub fn field(&self) -> String {
        self.path.to_string()
    }
}

/// The annotation kubectl's client-side apply keeps the applied configuration in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager name `kubectl apply --server-side` uses; only it may take over
/// fields from client-side apply.
const KUBECTL_MANAGER: &str = "kubectl";

/// The message of the 409 Conflict status, worded as upstream's.
///
/// One conflict: `Apply failed with 1 conflict: conflict with "kubectl-scale" using
/// apps/v1: .spec.replicas`. Several: grouped by manager, one `- path` line each.
pub fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.path
        );
    }
    let mut by_manager: Vec<(&ManagerId, Vec<&FieldPath>)> = Vec::new();
    for c in conflicts {
        match by_manager.iter_mut().find(|(m, _)| *m == &c.manager) {
            Some((_, paths)) => paths.push(&c.path),
            None => by_manager.push((&c.manager, vec![&c.path])),
        }
    }
    by_manager.sort_by(|a, b| a.0.cmp(b.0));
    let mut lines = Vec::new();
    for (manager, paths) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(paths.into_iter().map(|p| format!("- {p}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Why an apply was refused. The server maps [`ApplyError::Conflicts`] to 409
/// `Conflict` (one `FieldManagerConflict` cause per conflict), the rest to 400
/// `BadRequest`, except [`ApplyError::InvalidObject`], which is 422 `Invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration is not a JSON/YAML object.
    #[error("apply patch must be an object")]
    NotAnObject,
    /// `apiVersion`/`kind` are missing or name another type than the request's.
    #[error("invalid object type: {0}")]
    InvalidObjectType(String),
    /// `metadata.name` is missing.
    #[error("metadata.name: Required value: name is required")]
    MissingName,
    /// The configuration carries `metadata.managedFields`.
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsNotNil,
    /// The configuration (or the live object) does not fit the type's list semantics.
    #[error(transparent)]
    InvalidObject(#[from] FieldSetError),
    /// Fields owned by other managers would change; retry with `force` to take them.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// The `metadata.resourceVersion` of an applied configuration, if it carries one: the
/// server must then refuse the apply (409) unless it equals the live object's.
pub fn applied_resource_version(applied: &Value) -> Option<&str> {
    applied
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
}

impl FieldManager<'_> {
    /// Applies `applied` on behalf of this manager and returns the new object, with
    /// its `metadata.managedFields` updated. `live` is `None` when the object does not
    /// exist yet: the apply creates it.
    ///
    /// The result is neither defaulted nor validated: the server does that next, as for
    /// any write. When nothing changes, the result equals `live` but for managedFields.
    pub fn apply(
        &self,
        live: Option<&Value>,
        applied: &Value,
        force: bool,
    ) -> Result<Value, ApplyError> {
        match self.apply_once(live, applied, force) {
            Err(ApplyError::Conflicts(conflicts)) if self.manager == KUBECTL_MANAGER => {
                self.upgrade_from_client_side_apply(live, applied, conflicts)
            }
            other => other,
        }
    }

    /// kubectl's first server-side apply over an object it managed with
    /// client-side apply: conflicts on fields whose live value still equals the
    /// last-applied configuration are overridden, as upstream's lastAppliedManager
    /// does; any other conflict stands.
    fn upgrade_from_client_side_apply(
        &self,
        live: Option<&Value>,
        applied: &Value,
        conflicts: Vec<Conflict>,
    ) -> Result<Value, ApplyError> {
        let last_applied = live
            .and_then(|l| l["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str())
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let (Some(live), Some(last_applied)) = (live, last_applied) else {
            return Err(ApplyError::Conflicts(conflicts));
        };
        let allowed = match (
            field_set(self.schema, &last_applied),
            compare(self.schema, live, &last_applied),
        ) {
            (Ok(fields), Ok(changed)) => fields.difference(&changed.modified),
            _ => return Err(ApplyError::Conflicts(conflicts)),
        };
        if conflicts.iter().all(|c| allowed.contains(&c.path.0)) {
            self.apply_once(Some(live), applied, true)
        } else {
            Err(ApplyError::Conflicts(
                conflicts
                    .into_iter()
                    .filter(|c| !allowed.contains(&c.path.0))
                    .collect(),
            ))
        }
    }

    fn apply_once(
        &self,
        live: Option<&Value>,
        applied: &Value,
        force: bool,
    ) -> Result<Value, ApplyError> {
        let config = self.check_applied(applied)?;
        let schema = self.schema;

        let mut live_obj = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        // Undecodable managedFields are dropped rather than failing every write.
        let mut managers = live
            .and_then(|l| decode_managed_fields(l).ok())
            .unwrap_or_default();
        strip_managed_fields(&mut live_obj);
        if managers.is_empty() && live.is_some() {
            // Fields set before anybody tracked ownership belong to a stand-in manager,
            // so that applying over them is a conflict rather than a silent overwrite.
            let before = ManagerId {
                manager: BEFORE_FIRST_APPLY.to_owned(),
                ..self.id(Operation::Update)
            };
            let empty = Value::Object(Map::new());
            self.update_managers(&empty, &live_obj, &mut managers, before)?;
        }

        let merged = merge(schema, &live_obj, &config, &mut Vec::new())?;
        let applier = self.id(Operation::Apply);
        let set = field_set(schema, &config)?
            .difference(&untracked_fields())
            .recursive_difference(&self.ignored);
        let previous = managers.insert(
            applier.clone(),
            ManagedEntry {
                api_version: self.api_version.to_owned(),
                time: None,
                set,
            },
        );
        let mut object = match &previous {
            Some(last) if !last.set.is_empty() => prune(schema, merged, &managers, &last.set)?,
            _ => merged,
        };

        let cmp = compare(schema, &live_obj, &object)?;
        let changed = cmp
            .modified
            .union(&cmp.added)
            .recursive_difference(&self.ignored);
        let mut conflicts: Vec<Conflict> = managers
            .iter()
            .filter(|(id, _)| **id != applier)
            .flat_map(|(id, entry)| {
                entry
                    .set
                    .intersection(&changed)
                    .paths()
                    .into_iter()
                    .map(|path| Conflict {
                        manager: id.clone(),
                        path,
                    })
            })
            .collect();
        if !force && !conflicts.is_empty() {
            conflicts.sort_by(|a, b| a.manager.cmp(&b.manager).then(a.path.cmp(&b.path)));
            return Err(ApplyError::Conflicts(conflicts));
        }
        for (id, entry) in managers.iter_mut() {
            if *id != applier {
                entry.set = entry.set.difference(&changed).difference(&cmp.removed);
            }
        }
        if let Some(entry) = managers.get_mut(&applier) {
            // The time says when the manager last changed the object.
            entry.time = if cmp.is_same() {
                previous.and_then(|p| p.time)
            } else {
                Some(self.now)
            };
        }
        managers.retain(|_, e| !e.set.is_empty());
        set_managed_fields(&mut object, &managers);
        Ok(object)
    }

    /// Checks the configuration's identity and returns it without managedFields.
    fn check_applied(&self, applied: &Value) -> Result<Value, ApplyError> {
        let Value::Object(map) = applied else {
            return Err(ApplyError::NotAnObject);
        };
        let text = |name: &str| map.get(name).and_then(Value::as_str).unwrap_or_default();
        if text("apiVersion") != self.api_version || text("kind") != self.kind {
            let (group, version) = text("apiVersion")
                .rsplit_once('/')
                .unwrap_or(("", text("apiVersion")));
            return Err(ApplyError::InvalidObjectType(format!(
                "{group}/{version}, Kind={}",
                text("kind")
            )));
        }
        let meta = map.get("metadata").and_then(Value::as_object);
        if meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApplyError::MissingName);
        }
        if meta
            .and_then(|m| m.get("managedFields"))
            .is_some_and(|mf| !mf.is_null())
        {
            return Err(ApplyError::ManagedFieldsNotNil);
        }
        let mut config = applied.clone();
        strip_managed_fields(&mut config);
        Ok(config)
    }
}

/// Removes from `merged` what the applier owned last time (`last`) and nobody owns now,
/// following upstream's three steps: drop everything last owned, add back what anybody
/// owns, and add back what was never the applier's (fields nobody tracks).
fn prune(
    schema: &dyn Schema,
    merged: Value,
    managers: &Managers,
    last: &FieldSet,
) -> Result<Value, FieldSetError> {
    let last = last.with_named_fields_as_members();
    let merged_set = field_set(schema, &merged)?.with_named_fields_as_members();

    let mut pruned = merged.clone();
    remove_items(schema, &mut pruned, &last, &mut Vec::new());
    let pruned_set = field_set(schema, &pruned)?.with_named_fields_as_members();

    let owned = managers
        .values()
        .fold(FieldSet::new(), |acc, e| acc.union(&e.set))
        .with_named_fields_as_members();
    let unowned = merged_set.difference(&pruned_set.union(&owned));
    let mut kept = merged.clone();
    remove_items(schema, &mut kept, &unowned, &mut Vec::new());
    let kept_set = field_set(schema, &kept)?.with_named_fields_as_members();

    let mut out = merged;
    let gone = merged_set.difference(&kept_set).intersection(&last);
    remove_items(schema, &mut out, &gone, &mut Vec::new());
    Ok(out)
}

fn refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// Removes the paths of `set` (with everything below them) from `value`.
fn remove_items(schema: &dyn Schema, value: &mut Value, set: &FieldSet, names: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let pe = PathElement::Field(key.clone());
                if set.contains(std::slice::from_ref(&pe)) {
                    map.remove(&key);
                } else if let (Some(child), Some(v)) = (set.child(&pe), map.get_mut(&key)) {
                    names.push(key);
                    remove_items(schema, v, child, names);
                    names.pop();
                }
            }
        }
        Value::Array(items) => {
            let path = refs(names);
            let list_type = schema.list_strategy(&path);
            if list_type == ListStrategy::Atomic {
                return;
            }
            // Items that cannot be identified are left alone.
            let ids: Vec<Option<PathElement>> = items
                .iter()
                .map(|item| item_element(schema, &list_type, item, &path).ok())
                .collect();
            let mut kept = Vec::with_capacity(items.len());
            for (mut item, id) in std::mem::take(items).into_iter().zip(ids) {
                if let Some(pe) = id {
                    if set.contains(std::slice::from_ref(&pe)) {
                        continue;
                    }
                    if let Some(child) = set.child(&pe) {
                        remove_items(schema, &mut item, child, names);
                    }
                }
                kept.push(item);
            }
            *items = kept;
        }
        _ => {}
    }
}

/// Merges an applied configuration (`rhs`) into a live object (`lhs`). A `null` in the
/// configuration removes the field.
fn merge(
    schema: &dyn Schema,
    lhs: &Value,
    rhs: &Value,
    names: &mut Vec<String>,
) -> Result<Value, FieldSetError> {
    match (lhs, rhs) {
        (Value::Object(l), Value::Object(r)) if !schema.is_atomic_map(&refs(names)) => {
            let mut out = l.clone();
            for (key, rv) in r {
                if rv.is_null() {
                    out.remove(key);
                    continue;
                }
                let merged = match l.get(key) {
                    Some(lv) => {
                        names.push(key.clone());
                        let merged = merge(schema, lv, rv, names);
                        names.pop();
                        merged?
                    }
                    None => without_nulls(rv),
                };
                out.insert(key.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Value::Array(l), Value::Array(r)) => {
            let list_type = schema.list_strategy(&refs(names));
            if list_type == ListStrategy::Atomic {
                return Ok(without_nulls(rhs));
            }
            merge_lists(schema, &list_type, l, r, names).map(Value::Array)
        }
        _ => Ok(without_nulls(rhs)),
    }
}

/// Merges two keyed or set-like lists as upstream orders them: items only in `lhs` keep
/// their place, items of `rhs` come in `rhs`'s order, and new items go just before the
/// next item both lists share (or at the end).
fn merge_lists(
    schema: &dyn Schema,
    list_type: &ListStrategy,
    lhs: &[Value],
    rhs: &[Value],
    names: &mut Vec<String>,
) -> Result<Vec<Value>, FieldSetError> {
    let identify = |items: &[Value]| -> Result<Vec<PathElement>, FieldSetError> {
        let path = refs(names);
        items
            .iter()
            .map(|item| item_element(schema, list_type, item, &path))
            .collect()
    };
    let lhs_ids = identify(lhs)?;
    let rhs_ids = identify(rhs)?;
    let lhs_index = |pe: &PathElement| lhs_ids.iter().position(|l| l == pe);
    // A key given twice in the configuration counts once.
    let duplicate: Vec<bool> = (0..rhs_ids.len())
        .map(|i| rhs_ids[..i].contains(&rhs_ids[i]))
        .collect();

    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let mut next = 0;
    // Emits the configuration's items up to and including the next shared one.
    let emit_until_shared = |next: &mut usize,
                             out: &mut Vec<Value>,
                             names: &mut Vec<String>|
     -> Result<(), FieldSetError> {
        while *next < rhs.len() {
            let i = *next;
            *next += 1;
            if duplicate[i] {
                continue;
            }
            match lhs_index(&rhs_ids[i]) {
                Some(li) => {
                    out.push(merge(schema, &lhs[li], &rhs[i], names)?);
                    return Ok(());
                }
                None => out.push(without_nulls(&rhs[i])),
            }
        }
        Ok(())
    };
    for (li, pe) in lhs_ids.iter().enumerate() {
        if !rhs_ids.contains(pe) {
            out.push(lhs[li].clone());
            continue;
        }
        // A shared item takes its place in the configuration's order: it is emitted
        // when the live list reaches the next shared item the configuration expects.
        let next_shared = (next..rhs.len())
            .find(|&i| !duplicate[i] && lhs_index(&rhs_ids[i]).is_some())
            .map(|i| &rhs_ids[i]);
        if next_shared == Some(pe) {
            emit_until_shared(&mut next, &mut out, names)?;
        }
    }
    while next < rhs.len() {
        emit_until_shared(&mut next, &mut out, names)?;
    }
    Ok(out)
}

/// `value` without `null` object fields, at any depth.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed_fields::tests::TestSchema;
    use jiff::Timestamp;
    use serde_json::json;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap()
    }

    fn fm<'a>(manager: &'a str, now: Timestamp) -> FieldManager<'a> {
        FieldManager::new(&TestSchema, "apps/v1", "Deployment", manager, "", now)
    }

    fn deployment(replicas: i64, labels: Value, containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers}
                }
            }
        })
    }

    fn nginx() -> Value {
        json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}])
    }

    /// What the store would hold: the applied object plus server-set fields.
    fn stored(mut object: Value) -> Value {
        object["metadata"]["uid"] = json!("6f1c");
        object["metadata"]["resourceVersion"] = json!("7");
        object["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
            json!("/dev/termination-log");
        object
    }

    fn owners(object: &Value) -> Vec<(String, Vec<String>)> {
        decode_managed_fields(object)
            .unwrap()
            .into_iter()
            .map(|(id, e)| {
                let name = format!("{}/{}", id.manager, id.operation.as_str());
                (
                    name,
                    e.set.paths().iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    }

    fn paths_of(object: &Value, manager: &str) -> Vec<String> {
        owners(object)
            .into_iter()
            .find(|(m, _)| m == manager)
            .map(|(_, p)| p)
            .unwrap_or_default()
    }

    #[test]
    fn create_records_the_applied_fields() {
        let config = deployment(3, json!({"app": "web", "tier": "fe"}), nginx());
        let created = fm("kubectl", at(0)).apply(None, &config, false).unwrap();

        let mut without_mf = created.clone();
        strip_managed_fields(&mut without_mf);
        assert_eq!(without_mf, config);
        let expected = json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}
                            }}
                        }}}
                    }
                }
            }
        }]);
        assert_eq!(created["metadata"]["managedFields"], expected);
        // The key order of fieldsV1 is part of the format.
        let text = serde_json::to_string(&created["metadata"]["managedFields"]).unwrap();
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn builtin_schema_gives_the_same_fields_as_the_fixture() {
        let schema = crate::managed_fields::BuiltinSchema {
            group: "apps",
            kind: "Deployment",
        };
        let config = deployment(3, json!({"app": "web"}), nginx());
        let builtin = FieldManager::new(&schema, "apps/v1", "Deployment", "kubectl", "", at(0))
            .apply(None, &config, false)
            .unwrap();
        let fixture = fm("kubectl", at(0)).apply(None, &config, false).unwrap();
        assert_eq!(builtin, fixture);
        let fields = &builtin["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
        assert_eq!(fields["f:selector"], json!({}));
    }

    #[test]
    fn reapply_without_a_label_removes_it() {
        let first = deployment(3, json!({"app": "web", "tier": "fe"}), nginx());
        let live = stored(fm("kubectl", at(0)).apply(None, &first, false).unwrap());
        let second = deployment(3, json!({"app": "web"}), nginx());
        let out = fm("kubectl", at(60))
            .apply(Some(&live), &second, false)
            .unwrap();

        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert!(!paths_of(&out, "kubectl/Apply").contains(&".metadata.labels.tier".into()));
        // Server-set fields nobody applied survive.
        assert_eq!(out["metadata"]["uid"], "6f1c");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
    }

    #[test]
    fn unchanged_reapply_keeps_the_time() {
        let config = deployment(3, json!({"app": "web"}), nginx());
        let live = stored(fm("kubectl", at(0)).apply(None, &config, false).unwrap());
        let out = fm("kubectl", at(600))
            .apply(Some(&live), &config, false)
            .unwrap();
        assert_eq!(out, live);
    }

    #[test]
    fn update_then_apply_conflicts_then_force_moves_ownership() {
        let config = deployment(3, json!({"app": "web"}), nginx());
        let live = stored(fm("kubectl", at(0)).apply(None, &config, false).unwrap());

        // kubectl scale: an Update by another manager.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        fm("kubectl-scale", at(30))
            .record_update(Some(&live), &mut scaled)
            .unwrap();
        assert_eq!(
            paths_of(&scaled, "kubectl-scale/Update"),
            [".spec.replicas"]
        );
        assert!(!paths_of(&scaled, "kubectl/Apply").contains(&".spec.replicas".into()));

        let err = fm("kubectl", at(60))
            .apply(Some(&scaled), &config, false)
            .unwrap_err();
        let ApplyError::Conflicts(conflicts) = &err else {
            panic!("expected a conflict, got {err:?}");
        };
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].manager.manager, "kubectl-scale");
        assert_eq!(conflicts[0].field(), ".spec.replicas");
        assert_eq!(
            conflicts[0].cause_message(),
            r#"conflict with "kubectl-scale" using apps/v1"#
        );
        assert_eq!(
            err.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas"#
        );

        let forced = fm("kubectl", at(60))
            .apply(Some(&scaled), &config, true)
            .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert!(paths_of(&forced, "kubectl/Apply").contains(&".spec.replicas".into()));
        // kubectl-scale owned nothing else, so its entry is gone.
        assert_eq!(owners(&forced).len(), 1);
    }

    #[test]
    fn same_value_is_shared_without_conflict() {
        let config = deployment(3, json!({"app": "web"}), nginx());
        let live = stored(fm("kubectl", at(0)).apply(None, &config, false).unwrap());
        let other = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 3}
        });
        let shared = fm("gitops", at(10))
            .apply(Some(&live), &other, false)
            .unwrap();
        assert_eq!(paths_of(&shared, "gitops/Apply"), [".spec.replicas"]);
        assert!(paths_of(&shared, "kubectl/Apply").contains(&".spec.replicas".into()));

        // kubectl stops specifying replicas: gitops still owns it, so it stays.
        let mut without = config.clone();
        without["spec"].as_object_mut().unwrap().remove("replicas");
        let out = fm("kubectl", at(20))
            .apply(Some(&shared), &without, false)
            .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert!(!paths_of(&out, "kubectl/Apply").contains(&".spec.replicas".into()));

        // Then gitops drops it too, and nobody owns it any more: it is removed.
        let empty =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let out = fm("gitops", at(30))
            .apply(Some(&out), &empty, false)
            .unwrap();
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(owners(&out).len(), 1);
    }

    #[test]
    fn containers_merge_by_name() {
        let config = deployment(3, json!({"app": "web"}), nginx());
        let live = stored(fm("kubectl", at(0)).apply(None, &config, false).unwrap());
        let sidecar = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "envoy", "image": "envoy:1.31"}
            ]}}}
        });
        let out = fm("mesh", at(10))
            .apply(Some(&live), &sidecar, false)
            .unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["nginx", "envoy"]);
        assert_eq!(
            paths_of(&out, "mesh/Apply"),
            [
                r#".spec.template.spec.containers[name="envoy"]"#,
                r#".spec.template.spec.containers[name="envoy"].image"#,
                r#".spec.template.spec.containers[name="envoy"].name"#,
            ]
        );

        // kubectl changes its own container's image: no conflict, sidecar untouched.
        let mut bumped = config.clone();
        bumped["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        let out = fm("kubectl", at(20))
            .apply(Some(&out), &bumped, false)
            .unwrap();
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1.28");
        assert_eq!(
            containers[0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(containers[1]["name"], "envoy");

        // mesh withdraws its sidecar: the whole item goes.
        let withdraw =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let out = fm("mesh", at(30))
            .apply(Some(&out), &withdraw, false)
            .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn object_without_managed_fields_is_owned_before_first_apply() {
        let mut live = stored(deployment(3, json!({"app": "web"}), nginx()));
        live["spec"]["replicas"] = json!(2);
        let config = deployment(3, json!({"app": "web"}), nginx());
        let err = fm("kubectl", at(0))
            .apply(Some(&live), &config, false)
            .unwrap_err();
        let ApplyError::Conflicts(conflicts) = err else {
            panic!("expected a conflict");
        };
        assert_eq!(conflicts[0].manager.manager, BEFORE_FIRST_APPLY);
        assert_eq!(conflicts[0].field(), ".spec.replicas");
    }

    #[test]
    fn list_merge_order() {
        let ids = |v: &[Value]| v.iter().map(|x| x["name"].clone()).collect::<Vec<_>>();
        let item = |n: &str| json!({"name": n});
        let list_type = ListStrategy::Map { keys: &["name"] };
        let lhs = [item("a"), item("b"), item("c")];
        let rhs = [item("c"), item("x"), item("a")];
        let out = merge_lists(&TestSchema, &list_type, &lhs, &rhs, &mut Vec::new()).unwrap();
        assert_eq!(ids(&out), [json!("b"), json!("c"), json!("x"), json!("a")]);
    }

    #[test]
    fn bad_configurations() {
        let manager = fm("kubectl", at(0));
        let mut config = deployment(1, json!({}), nginx());
        config["kind"] = json!("StatefulSet");
        assert_eq!(
            manager.apply(None, &config, false),
            Err(ApplyError::InvalidObjectType(
                "apps/v1, Kind=StatefulSet".into()
            ))
        );
        let mut config = deployment(1, json!({}), nginx());
        config["metadata"].as_object_mut().unwrap().remove("name");
        assert_eq!(
            manager.apply(None, &config, false),
            Err(ApplyError::MissingName)
        );
        let mut config = deployment(1, json!({}), nginx());
        config["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            manager.apply(None, &config, false),
            Err(ApplyError::ManagedFieldsNotNil)
        );
        let config = deployment(1, json!({}), json!([{"image": "x"}]));
        assert!(matches!(
            manager.apply(None, &config, false),
            Err(ApplyError::InvalidObject(FieldSetError::MissingKey { .. }))
        ));
        assert_eq!(
            manager.apply(None, &json!([]), false),
            Err(ApplyError::NotAnObject)
        );
    }

    #[test]
    fn resource_version_is_exposed() {
        let mut config = deployment(1, json!({}), nginx());
        assert_eq!(applied_resource_version(&config), None);
        config["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(applied_resource_version(&config), Some("42"));
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let id = |m: &str| ManagerId {
            manager: m.into(),
            operation: Operation::Update,
            api_version: "apps/v1".into(),
            subresource: String::new(),
        };
        let path = |f: &str| {
            FieldPath(vec![
                PathElement::Field("spec".into()),
                PathElement::Field(f.into()),
            ])
        };
        let conflicts = [
            Conflict {
                manager: id("b"),
                path: path("replicas"),
            },
            Conflict {
                manager: id("a"),
                path: path("paused"),
            },
            Conflict {
                manager: id("b"),
                path: path("strategy"),
            },
        ];
        assert_eq!(
            conflicts_message(&conflicts),
            "Apply failed with 3 conflicts: conflicts with \"a\" using apps/v1:\n- .spec.paused\n\
             conflicts with \"b\" using apps/v1:\n- .spec.replicas\n- .spec.strategy"
        );
    }

    #[test]
    fn kubectl_takes_over_fields_from_client_side_apply() {
        let mut live = deployment(2, json!({"app": "web"}), nginx());
        let last_applied = live.clone();
        live["metadata"]["annotations"] =
            json!({LAST_APPLIED_ANNOTATION: last_applied.to_string()});
        let mut live = stored(live);
        fm("kubectl-client-side-apply", at(0))
            .record_update(None, &mut live)
            .unwrap();
        let config = deployment(3, json!({"app": "web"}), nginx());

        // Another manager conflicts with the client-side owner as usual...
        let err = fm("deployer", at(1))
            .apply(Some(&live), &config, false)
            .unwrap_err();
        assert!(
            matches!(err, ApplyError::Conflicts(c) if c.iter().any(|c| c.field() == ".spec.replicas"))
        );
        // ...but kubectl takes over fields still equal to its last-applied configuration.
        let upgraded = fm(KUBECTL_MANAGER, at(1))
            .apply(Some(&live), &config, false)
            .unwrap();
        assert_eq!(upgraded["spec"]["replicas"], 3);

        // A field changed since the last client-side apply still conflicts.
        let mut drifted = live.clone();
        fm("kubectl-scale", at(2))
            .record_update(Some(&live), {
                drifted["spec"]["replicas"] = json!(5);
                &mut drifted
            })
            .unwrap();
        let err = fm(KUBECTL_MANAGER, at(3))
            .apply(Some(&drifted), &config, false)
            .unwrap_err();
        assert!(
            matches!(err, ApplyError::Conflicts(c) if c.len() == 1 && c[0].field() == ".spec.replicas")
        );
    }
}
