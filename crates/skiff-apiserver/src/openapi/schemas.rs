//! Schema definitions for the OpenAPI documents, generated once from the registry.
//!
//! k8s-openapi's `schemars` impls already name every type as upstream does
//! (`io.k8s.api.apps.v1.Deployment`) and carry upstream's descriptions and
//! `required` lists, so generation is mostly collecting them. What this module
//! adds is what upstream's documents have and the types do not:
//! - a `...List` definition for every served kind (upstream generates them from
//!   the Go list types, which k8s-openapi models as a generic);
//! - `x-kubernetes-group-version-kind` on every top-level kind, which is how
//!   kubectl `explain` and `apply` find a kind's schema;
//! - the int-or-string shapes of `IntOrString` and `Quantity`, which differ
//!   between the v2 and v3 documents exactly as upstream's do;
//! - `x-kubernetes-patch-strategy`/`-patch-merge-key` and `x-kubernetes-list-type`/
//!   `-list-map-keys` from [`skiff_api::merge_keys`]: kubectl's client-side
//!   `apply` reads them to merge `containers` by name instead of replacing the
//!   list.
//!
//! Definitions are kept in one canonical form, with refs spelled
//! `#/components/schemas/NAME`; the v2 and v3 renderers rewrite from there.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::api::{authentication, autoscaling, core, policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use skiff_api::merge_keys::{self, ListStrategy, PatchStrategy};
use skiff_api::registry;

/// How canonical definitions spell a reference.
pub(super) const REF_PREFIX: &str = "#/components/schemas/";
/// `metav1.Status`, returned by deletes.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
/// `metav1.DeleteOptions`, the body of deletes.
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
/// `metav1.Patch`, the body of patches.
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
/// `metav1.WatchEvent`, one event of a watch stream.
pub(super) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub(super) const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// A `(group, version, kind)` triple.
pub(super) type Gvk = (&'static str, &'static str, &'static str);

/// Every definition the documents can reference, and which one serves each kind.
pub(super) struct Definitions {
    /// Definitions by upstream name, refs in canonical form.
    pub(super) defs: Map<String, Value>,
    /// The definition of each served kind, including subresource kinds such as
    /// `autoscaling/v1 Scale`.
    kinds: HashMap<Gvk, String>,
    /// The definition of each served kind's list, by the item kind.
    lists: HashMap<Gvk, String>,
}

impl Definitions {
    /// Generates every definition reachable from the registry's rows.
    pub(super) fn build() -> Definitions {
        let mut generator = SchemaSettings::openapi3()
            .with(|s| {
                // Transforms are applied per output format when rendering.
                s.transforms.clear();
                s.meta_schema = None;
            })
            .into_generator();
        let mut kinds = HashMap::new();
        let mut inline = Vec::new();
        for rt in registry::all() {
            let schema = (rt.schema)(&mut generator).to_value();
            let name = match ref_target(&schema) {
                Some(name) => name.to_string(),
                None => {
                    let name = definition_name(rt.group, rt.version, rt.kind);
                    inline.push((name.clone(), schema));
                    name
                }
            };
            kinds.insert((rt.group, rt.version, rt.kind), name);
        }
        // Kinds that only appear as subresource bodies, and the meta types every
        // route uses. A registry row for the same kind wins.
        let mut extra = |gvk: Gvk, name: Option<String>| {
            if let Some(name) = name {
                kinds.entry(gvk).or_insert(name);
            }
        };
        extra(
            ("autoscaling", "v1", "Scale"),
            named::<autoscaling::v1::Scale>(&mut generator),
        );
        extra(
            ("policy", "v1", "Eviction"),
            named::<policy::v1::Eviction>(&mut generator),
        );
        extra(
            ("authentication.k8s.io", "v1", "TokenRequest"),
            named::<authentication::v1::TokenRequest>(&mut generator),
        );
        extra(
            ("", "v1", "Binding"),
            named::<core::v1::Binding>(&mut generator),
        );
        extra(("", "v1", "Status"), named::<meta::Status>(&mut generator));
        named::<meta::DeleteOptions>(&mut generator);
        named::<meta::Patch>(&mut generator);
        named::<meta::WatchEvent<Value>>(&mut generator);
        named::<meta::ListMeta>(&mut generator);

        let mut defs = generator.take_definitions(false);
        for (name, schema) in inline {
            defs.entry(name).or_insert(schema);
        }

        let mut lists = HashMap::new();
        for rt in registry::all() {
            let Some(item) = kinds.get(&(rt.group, rt.version, rt.kind)) else {
                continue;
            };
            let name = sibling_name(item, rt.list_kind);
            if !defs.contains_key(&name) {
                let list = list_schema(&defs, item, rt.kind, rt.list_kind);
                defs.insert(name.clone(), list);
            }
            lists.insert((rt.group, rt.version, rt.kind), name);
        }

        let mut out = Definitions { defs, kinds, lists };
        out.tag_kinds();
        out.annotate_merge_facts();
        out
    }

    /// Every kind and the name of its definition.
    pub(super) fn kinds(&self) -> impl Iterator<Item = (Gvk, &str)> {
        self.kinds.iter().map(|(gvk, name)| (*gvk, name.as_str()))
    }

    /// The definition of a kind, if it is served.
    pub(super) fn kind(&self, gvk: Gvk) -> Option<&str> {
        self.kinds.get(&gvk).map(String::as_str)
    }

    /// The list definition of a served kind.
    pub(super) fn list(&self, gvk: Gvk) -> Option<&str> {
        self.lists.get(&gvk).map(String::as_str)
    }

    /// Adds `x-kubernetes-group-version-kind` to every definition that is the body
    /// of a served kind, and to the meta kinds every group version shares.
    fn tag_kinds(&mut self) {
        let mut tags: Vec<(String, Gvk)> = Vec::new();
        for (gvk, name) in &self.kinds {
            tags.push((name.clone(), *gvk));
        }
        let mut group_versions: BTreeSet<(&'static str, &'static str)> = BTreeSet::new();
        group_versions.insert(("", "v1"));
        for rt in registry::all() {
            group_versions.insert((rt.group, rt.version));
            if let Some(list) = self.lists.get(&(rt.group, rt.version, rt.kind)) {
                tags.push((list.clone(), (rt.group, rt.version, rt.list_kind)));
            }
        }
        for (group, version) in group_versions {
            tags.push((DELETE_OPTIONS.into(), (group, version, "DeleteOptions")));
            tags.push((WATCH_EVENT.into(), (group, version, "WatchEvent")));
        }
        // Sorted so that the documents, and therefore their hashes, are stable.
        tags.sort();
        tags.dedup();
        for (name, (group, version, kind)) in tags {
            let Some(Value::Object(def)) = self.defs.get_mut(&name) else {
                continue;
            };
            let entry = def
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(json!({"group": group, "kind": kind, "version": version}));
            }
        }
    }

    /// Adds upstream's patch and list extensions to the properties of every
    /// definition reachable from a kind the merge facts know, walking the facts'
    /// type graph alongside the definitions.
    fn annotate_merge_facts(&mut self) {
        let mut pending: Vec<merge_keys::Node> = registry::all()
            .iter()
            .filter_map(|rt| merge_keys::root(rt.group, rt.kind))
            .collect();
        let mut visited: HashSet<&'static str> = HashSet::new();
        while let Some(node) = pending.pop() {
            let Some(name) = node.type_name() else {
                continue;
            };
            if !visited.insert(name) {
                continue;
            }
            let Some(Value::Object(properties)) = self
                .defs
                .get_mut(name)
                .and_then(|def| def.get_mut("properties"))
            else {
                continue;
            };
            for (property, schema) in properties.iter_mut() {
                let field = node.field(property);
                pending.push(field.value());
                if let Value::Object(schema) = schema {
                    for (key, value) in merge_extensions(field, schema) {
                        schema.entry(key).or_insert(value);
                    }
                }
            }
        }
    }

    /// The names of every definition reachable from `roots`, roots included.
    pub(super) fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<String> = roots.into_iter().map(str::to_string).collect();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(def) = self.defs.get(&name) {
                collect_refs(def, &mut |target| {
                    if !seen.contains(target) {
                        pending.push(target.to_string());
                    }
                });
            }
        }
        seen
    }
}

/// The `x-kubernetes-*` merge extensions of one property, as upstream writes them.
fn merge_extensions(field: merge_keys::Field, schema: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let meta = field.patch_meta();
    let strategy = match (meta.strategy, meta.retain_keys) {
        (PatchStrategy::Merge, true) => Some("merge,retainKeys"),
        (PatchStrategy::Merge, false) => Some("merge"),
        (PatchStrategy::Replace, _) => Some("replace"),
        (PatchStrategy::Default, true) => Some("retainKeys"),
        (PatchStrategy::Default, false) => None,
    };
    if let Some(strategy) = strategy {
        out.push(("x-kubernetes-patch-strategy".into(), strategy.into()));
    }
    if let Some(key) = meta.merge_key {
        out.push(("x-kubernetes-patch-merge-key".into(), key.into()));
    }
    if schema.get("type").and_then(Value::as_str) == Some("array") {
        match field.list_strategy() {
            ListStrategy::Atomic => out.push(("x-kubernetes-list-type".into(), "atomic".into())),
            ListStrategy::Set => out.push(("x-kubernetes-list-type".into(), "set".into())),
            ListStrategy::Map { keys } => {
                out.push(("x-kubernetes-list-type".into(), "map".into()));
                out.push(("x-kubernetes-list-map-keys".into(), keys.into()));
            }
        }
    }
    out
}

/// Generates `T` and returns the name it was stored under.
fn named<T: JsonSchema>(generator: &mut SchemaGenerator) -> Option<String> {
    let schema = generator.subschema_for::<T>();
    ref_target(schema.as_value()).map(str::to_string)
}

/// The definition a `{"$ref": "#/components/schemas/NAME"}` schema points at.
pub(super) fn ref_target(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix(REF_PREFIX)
}

/// Calls `found` with the target of every canonical `$ref` in `value`.
///
/// A `$ref` whose value is not a string is a property that happens to be named
/// `$ref` (as in `JSONSchemaProps`), not a reference.
pub(super) fn collect_refs(value: &Value, found: &mut impl FnMut(&str)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix(REF_PREFIX) {
                            found(name);
                        }
                    }
                    _ => collect_refs(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}

/// Upstream's definition name of a kind: the Go package path reversed into a
/// dotted prefix, e.g. `rbac.authorization.k8s.io/v1 Role` is
/// `io.k8s.api.rbac.v1.Role`. Only needed for rows whose schema is inline
/// rather than a reference to a named k8s-openapi type.
pub(super) fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let package = match group {
        "" => "io.k8s.api.core".to_string(),
        "apiextensions.k8s.io" => "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions".into(),
        "apiregistration.k8s.io" => "io.k8s.kube-aggregator.pkg.apis.apiregistration".into(),
        "internal.apiserver.k8s.io" => "io.k8s.api.apiserverinternal".into(),
        _ => {
            let first = group.split('.').next().unwrap_or(group);
            format!("io.k8s.api.{first}")
        }
    };
    format!("{package}.{version}.{kind}")
}

/// `io.k8s.api.apps.v1.Deployment` + `DeploymentList` → `io.k8s.api.apps.v1.DeploymentList`.
fn sibling_name(name: &str, kind: &str) -> String {
    match name.rsplit_once('.') {
        Some((package, _)) => format!("{package}.{kind}"),
        None => kind.to_string(),
    }
}

/// The schema of `{list_kind}`: `apiVersion`, `kind`, list `metadata` and `items`.
fn list_schema(defs: &Map<String, Value>, item: &str, kind: &str, list_kind: &str) -> Value {
    // The item's own `apiVersion`/`kind` property schemas are upstream's, with their
    // descriptions; lists share them.
    let item_property = |name: &str| {
        defs.get(item)
            .and_then(|def| def.pointer(&format!("/properties/{name}")))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{list_kind} is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": item_property("apiVersion"),
            "items": {
                "description": format!("The {kind} objects in the list."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item}")},
            },
            "kind": item_property("kind"),
            "metadata": {
                "$ref": format!("{REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata: resourceVersion, continue token and remaining item count.",
            },
        },
        "required": ["items"],
    })
}

/// Output format of a rendered definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Swagger 2.0: refs to `#/definitions/`, `$ref` may have siblings.
    Swagger2,
    /// OpenAPI 3.0: refs to `#/components/schemas/`, a `$ref` with siblings is
    /// wrapped in `allOf`, since OpenAPI 3.0 ignores a `$ref`'s siblings.
    OpenApi3,
}

/// Renders one canonical definition for `dialect`.
pub(super) fn render(name: &str, def: &Value, dialect: Dialect) -> Value {
    let mut def = def.clone();
    match dialect {
        Dialect::Swagger2 => rewrite_refs(&mut def, "#/definitions/"),
        Dialect::OpenApi3 => wrap_ref_siblings(&mut def),
    }
    if let Value::Object(map) = &mut def {
        int_or_string_shape(name, map, dialect);
    }
    def
}

/// Gives `IntOrString` and `Quantity` upstream's type information: in v2 a string
/// (with format `int-or-string` for IntOrString), in v3 a `oneOf` of the accepted
/// JSON types.
fn int_or_string_shape(name: &str, def: &mut Map<String, Value>, dialect: Dialect) {
    let (v2_format, v3_types) = match name {
        INT_OR_STRING => (Some("int-or-string"), ["integer", "string"]),
        QUANTITY => (None, ["string", "number"]),
        _ => return,
    };
    if let Some(format) = v2_format {
        def.insert("format".into(), format.into());
    }
    match dialect {
        Dialect::Swagger2 => {
            def.insert("type".into(), "string".into());
        }
        Dialect::OpenApi3 => {
            let one_of: Vec<Value> = v3_types.iter().map(|t| json!({"type": t})).collect();
            def.insert("oneOf".into(), one_of.into());
        }
    }
}

/// Points canonical refs at `prefix` instead.
pub(super) fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix(REF_PREFIX) {
                            *target = format!("{prefix}{name}");
                        }
                    }
                    (_, child) => rewrite_refs(child, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_refs(item, prefix)),
        _ => {}
    }
}

/// Turns `{"$ref": R, "description": D}` into `{"allOf": [{"$ref": R}], "description": D}`.
fn wrap_ref_siblings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(wrap_ref_siblings);
            let is_ref = matches!(map.get("$ref"), Some(Value::String(_)));
            if is_ref
                && map.len() > 1
                && let Some(target) = map.remove("$ref")
            {
                map.insert("allOf".into(), json!([{"$ref": target}]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(wrap_ref_siblings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_names_follow_go_packages() {
        assert_eq!(definition_name("", "v1", "Pod"), "io.k8s.api.core.v1.Pod");
        assert_eq!(
            definition_name("apps", "v1", "Deployment"),
            "io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            definition_name("rbac.authorization.k8s.io", "v1", "Role"),
            "io.k8s.api.rbac.v1.Role"
        );
        assert_eq!(
            definition_name("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        );
        assert_eq!(
            definition_name("internal.apiserver.k8s.io", "v1alpha1", "StorageVersion"),
            "io.k8s.api.apiserverinternal.v1alpha1.StorageVersion"
        );
    }

    #[test]
    fn rendered_names_match_k8s_openapi_names() {
        // The fallback naming agrees with the names the typed schemas carry.
        let defs = Definitions::build();
        for rt in registry::all() {
            let name = defs
                .kind((rt.group, rt.version, rt.kind))
                .expect("every row has a schema");
            assert_eq!(
                name,
                definition_name(rt.group, rt.version, rt.kind),
                "{}",
                rt.kind
            );
        }
    }

    #[test]
    fn ref_siblings_are_wrapped_for_v3_only() {
        let def = json!({
            "properties": {
                "metadata": {"$ref": "#/components/schemas/M", "description": "d"},
                "plain": {"$ref": "#/components/schemas/P"},
                "$ref": {"type": "string"},
            }
        });
        let v3 = render("X", &def, Dialect::OpenApi3);
        assert_eq!(
            v3["properties"]["metadata"],
            json!({"allOf": [{"$ref": "#/components/schemas/M"}], "description": "d"})
        );
        assert_eq!(
            v3["properties"]["plain"],
            json!({"$ref": "#/components/schemas/P"})
        );
        assert_eq!(v3["properties"]["$ref"], json!({"type": "string"}));

        let v2 = render("X", &def, Dialect::Swagger2);
        assert_eq!(
            v2["properties"]["metadata"],
            json!({"$ref": "#/definitions/M", "description": "d"})
        );
    }

    #[test]
    fn int_or_string_has_upstream_shapes() {
        let defs = Definitions::build();
        let def = defs
            .defs
            .get(INT_OR_STRING)
            .expect("deployments reference IntOrString");
        let v2 = render(INT_OR_STRING, def, Dialect::Swagger2);
        assert_eq!(v2["type"], "string");
        assert_eq!(v2["format"], "int-or-string");
        assert_eq!(v2["x-kubernetes-int-or-string"], true);
        let v3 = render(INT_OR_STRING, def, Dialect::OpenApi3);
        assert_eq!(v3["format"], "int-or-string");
        assert_eq!(
            v3["oneOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        let quantity = defs.defs.get(QUANTITY).expect("pods reference Quantity");
        assert_eq!(
            render(QUANTITY, quantity, Dialect::Swagger2)["type"],
            "string"
        );
    }

    #[test]
    fn list_fields_carry_merge_facts() {
        let defs = Definitions::build();
        let containers = &defs.defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let ports = &defs.defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        let strategy = &defs.defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        let volumes = &defs.defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let args = &defs.defs["io.k8s.api.core.v1.Container"]["properties"]["args"];
        assert_eq!(args["x-kubernetes-list-type"], "atomic");
        assert!(args.get("x-kubernetes-patch-strategy").is_none());
    }

    #[test]
    fn kinds_and_lists_are_tagged() {
        let defs = Definitions::build();
        let gvk = |name: &str| defs.defs[name]["x-kubernetes-group-version-kind"].clone();
        assert_eq!(
            gvk("io.k8s.api.apps.v1.Deployment"),
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(
            gvk("io.k8s.api.apps.v1.DeploymentList"),
            json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
        );
        assert_eq!(
            gvk("io.k8s.api.autoscaling.v1.Scale"),
            json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
        );
        let delete_options = gvk(DELETE_OPTIONS);
        assert!(
            delete_options
                .as_array()
                .expect("tags")
                .contains(&json!({"group": "apps", "kind": "DeleteOptions", "version": "v1"}))
        );
        let list = &defs.defs["io.k8s.api.apps.v1.DeploymentList"];
        assert_eq!(list["required"], json!(["items"]));
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );
    }
}
