//! OpenAPI documents (`/openapi/v2`, `/openapi/v3`), generated from the registry.
//!
//! kubectl needs these to work at all: `apply`, `create -f`, `replace` and helm
//! look a kind's schema up by its `x-kubernetes-group-version-kind`, `explain`
//! renders descriptions from it, and kubectl checks that the kind's PATCH
//! operation lists `fieldValidation` before it asks for strict validation.
//!
//! The documents are upstream-shaped: one OpenAPI 3.0 document per group version
//! (`/openapi/v3/apis/apps/v1`), listed with a content hash by the `/openapi/v3`
//! index so that clients can cache them forever, and one Swagger 2.0 document for
//! everything. Schemas come from the registry rows' `schema` functions
//! (k8s-openapi's schemars impls, see [`schemas`]), operations from the rows'
//! verbs and subresources (see [`paths`]).
//!
//! The registry is static, so each document is built and serialized once, on
//! first use, and served as a cheap clone of its [`Bytes`].

mod paths;
mod quantities;
mod schemas;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};
use skiff_api::registry;

use paths::Route;
pub use quantities::QuantityShape;
use schemas::{Definitions, Dialect, Gvk, STATUS};

/// A serialized document and the hash clients cache it under.
#[derive(Debug, Clone)]
pub struct Document {
    json: Bytes,
    hash: String,
}

impl Document {
    fn new(doc: &Value) -> Document {
        // Serializing a `Value` cannot fail: its map keys are always strings.
        let json = Bytes::from(serde_json::to_vec(doc).unwrap_or_default());
        let hash = content_hash(&json);
        Document { json, hash }
    }

    /// The JSON body.
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// Uppercase hex SHA-512 of the body, as upstream publishes in the v3 index.
    /// A request whose `hash` query parameter equals it may be answered with
    /// `Cache-Control: public, immutable`; the hash also makes a good `ETag`.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// The `/openapi/v3` index: `{"paths": {"apis/apps/v1": {"serverRelativeURL":
/// "/openapi/v3/apis/apps/v1?hash=..."}, ...}}`.
pub fn v3_index() -> Bytes {
    V3.index.clone()
}

/// The OpenAPI 3.0 document of one group version. `path` is what follows
/// `/openapi/v3/`, e.g. `apis/apps/v1` or `api/v1` (a leading `/` is ignored).
pub fn v3_group_version(path: &str) -> Option<&'static Document> {
    V3.documents.get(path.trim_start_matches('/'))
}

/// The Swagger 2.0 document of every served group version (`/openapi/v2`), JSON.
///
/// Clients first ask for it as protobuf
/// (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`); answer such
/// a request with 406 so that they fall back to JSON, as client-go does.
pub fn v2() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(|| {
        let routes: Vec<Route> = registry::all()
            .iter()
            .flat_map(|rt| paths::routes(rt, &DEFS))
            .collect();
        let mut definitions = Map::new();
        for name in DEFS.closure(roots(&routes)) {
            if let Some(def) = DEFS.defs.get(&name) {
                definitions.insert(name.clone(), schemas::render(&name, def, Dialect::Swagger2));
            }
        }
        Document::new(&json!({
            "definitions": definitions,
            "info": info(),
            "paths": path_items(&routes, Dialect::Swagger2),
            "security": [{"BearerToken": []}],
            "securityDefinitions": {"BearerToken": bearer_token()},
            "swagger": "2.0",
        }))
    });
    &DOC
}

/// Every definition, generated once and shared by both dialects.
static DEFS: LazyLock<Definitions> = LazyLock::new(Definitions::build);

/// Where each kind holds quantities, derived once from the definitions.
static QUANTITIES: LazyLock<std::collections::HashMap<Gvk, QuantityShape>> =
    LazyLock::new(|| quantities::shapes(&DEFS));

/// Where objects of a kind hold resource quantities; `None` for kinds without any.
pub fn quantity_shape(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
) -> Option<&'static QuantityShape> {
    QUANTITIES.get(&(group, version, kind))
}

/// The v3 documents by path, and the index that lists them.
struct V3Set {
    documents: BTreeMap<String, Document>,
    index: Bytes,
}

static V3: LazyLock<V3Set> = LazyLock::new(|| {
    let mut by_path: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    for rt in registry::all() {
        by_path
            .entry(group_version_path(rt.group, rt.version))
            .or_default()
            .extend(paths::routes(rt, &DEFS));
    }
    let documents: BTreeMap<String, Document> = by_path
        .into_iter()
        .map(|(path, routes)| (path, Document::new(&v3_document(&routes))))
        .collect();
    let index: Map<String, Value> = documents
        .iter()
        .map(|(path, doc)| {
            let url = format!("/openapi/v3/{path}?hash={}", doc.hash);
            (path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    let index = Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default());
    V3Set { documents, index }
});

/// `api/v1` or `apis/{group}/{version}`: the document's key in the index.
fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn v3_document(routes: &[Route]) -> Value {
    let mut schemas = Map::new();
    for name in DEFS.closure(roots(routes)) {
        if let Some(def) = DEFS.defs.get(&name) {
            schemas.insert(name.clone(), schemas::render(&name, def, Dialect::OpenApi3));
        }
    }
    json!({
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": bearer_token()},
        },
        "info": info(),
        "openapi": "3.0.0",
        "paths": path_items(routes, Dialect::OpenApi3),
    })
}

/// Definitions the routes reference directly; `Status` always, since every
/// error body is one.
fn roots(routes: &[Route]) -> impl Iterator<Item = &str> {
    routes.iter().flat_map(Route::definitions).chain([STATUS])
}

/// Paths sorted, each with its operations keyed by method.
fn path_items(routes: &[Route], dialect: Dialect) -> Map<String, Value> {
    let mut items: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in routes {
        items
            .entry(&route.path)
            .or_default()
            .insert(route.method.into(), route.render(dialect));
    }
    items
        .into_iter()
        .map(|(path, ops)| (path.to_string(), Value::Object(ops)))
        .collect()
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": "unversioned"})
}

fn bearer_token() -> Value {
    json!({
        "description": "Bearer Token authentication",
        "in": "header",
        "name": "authorization",
        "type": "apiKey",
    })
}

fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02X}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).expect("OpenAPI documents are JSON")
    }

    fn v3(path: &str) -> Value {
        parse(
            &v3_group_version(path)
                .unwrap_or_else(|| panic!("{path} is served"))
                .json(),
        )
    }

    /// Every `$ref` string in `value`.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("$ref", Value::String(target)) => out.push(target.clone()),
                        _ => refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
            _ => {}
        }
    }

    /// Asserts that every `$ref` in `doc` starts with `prefix` and names a
    /// definition present in `definitions`.
    fn assert_refs_resolve(
        doc: &Value,
        prefix: &str,
        definitions: &Map<String, Value>,
        label: &str,
    ) {
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(!found.is_empty(), "{label}: no refs at all");
        for target in found {
            let name = target
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{label}: ref {target} outside {prefix}"));
            assert!(
                definitions.contains_key(name),
                "{label}: dangling ref {target}"
            );
        }
    }

    fn gvk_tags(def: &Value) -> Vec<(String, String, String)> {
        def["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                (s("group"), s("version"), s("kind"))
            })
            .collect()
    }

    #[test]
    fn index_lists_every_group_version_with_its_hash() {
        let index = parse(&v3_index());
        let paths = index["paths"].as_object().expect("paths");
        let expected: BTreeSet<String> = registry::all()
            .iter()
            .map(|rt| group_version_path(rt.group, rt.version))
            .collect();
        assert_eq!(paths.keys().cloned().collect::<BTreeSet<_>>(), expected);
        for (path, entry) in paths {
            let doc = v3_group_version(path).expect("listed documents are served");
            let url = entry["serverRelativeURL"].as_str().expect("url");
            assert_eq!(url, format!("/openapi/v3/{path}?hash={}", doc.hash()));
            assert_eq!(doc.hash().len(), 128);
            assert!(
                doc.hash()
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            );
            assert_eq!(
                doc.hash(),
                content_hash(&doc.json()),
                "hash is of the served bytes"
            );
        }
        assert!(
            v3_group_version("/apis/apps/v1").is_some(),
            "leading slash is ignored"
        );
        assert!(v3_group_version("apis/apps/v9").is_none());
        assert!(v3_group_version("").is_none());
    }

    #[test]
    fn every_served_kind_has_a_gvk_tagged_schema_in_its_document() {
        for rt in registry::all() {
            let doc = v3(&group_version_path(rt.group, rt.version));
            assert_eq!(doc["openapi"], "3.0.0");
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            let want = (
                rt.group.to_string(),
                rt.version.to_string(),
                rt.kind.to_string(),
            );
            let tagged = schemas
                .values()
                .filter(|d| gvk_tags(d).contains(&want))
                .count();
            assert_eq!(
                tagged, 1,
                "{}/{} {}: one tagged schema",
                rt.group, rt.version, rt.kind
            );
            let want_list = (
                rt.group.to_string(),
                rt.version.to_string(),
                rt.list_kind.to_string(),
            );
            if rt.verbs.contains(&"list") {
                assert!(
                    schemas.values().any(|d| gvk_tags(d).contains(&want_list)),
                    "{} is tagged",
                    rt.list_kind
                );
            }
        }
    }

    #[test]
    fn v3_refs_resolve_within_each_document() {
        let index = parse(&v3_index());
        for path in index["paths"].as_object().expect("paths").keys() {
            let doc = v3(path);
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            assert_refs_resolve(&doc, "#/components/schemas/", schemas, path);
        }
    }

    #[test]
    fn v2_refs_resolve() {
        let doc = parse(&v2().json());
        assert_eq!(doc["swagger"], "2.0");
        let definitions = doc["definitions"].as_object().expect("definitions");
        assert_refs_resolve(&doc, "#/definitions/", definitions, "v2");
        let pod = &definitions["io.k8s.api.core.v1.Pod"];
        assert_eq!(gvk_tags(pod), [("".into(), "v1".into(), "Pod".into())]);
        assert_eq!(
            pod["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"].is_object());
    }

    #[test]
    fn explain_deployment_spec_finds_described_fields() {
        let doc = v3("apis/apps/v1");
        let schemas = &doc["components"]["schemas"];
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert_eq!(
            deployment["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let spec = &schemas["io.k8s.api.apps.v1.DeploymentSpec"];
        assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(spec["required"], json!(["selector", "template"]));
        let properties = spec["properties"].as_object().expect("properties");
        assert!(properties.contains_key("replicas"));
        for (name, property) in properties {
            assert!(
                property["description"].is_string(),
                "spec.{name} has a description"
            );
        }
        let pod_spec = &schemas["io.k8s.api.core.v1.PodSpec"];
        assert!(pod_spec["properties"]["containers"]["description"].is_string());
        let int_or_string = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["format"], "int-or-string");
    }

    #[test]
    fn deployment_routes_carry_actions_kinds_and_params() {
        let doc = v3("apis/apps/v1");
        let paths = &doc["paths"];
        let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        for (method, action) in [
            ("get", "get"),
            ("put", "put"),
            ("patch", "patch"),
            ("delete", "delete"),
        ] {
            let op = &item[method];
            assert_eq!(op["x-kubernetes-action"], action, "{method}");
            assert_eq!(
                op["x-kubernetes-group-version-kind"],
                json!({"group": "apps", "kind": "Deployment", "version": "v1"})
            );
        }
        assert_eq!(item["get"]["operationId"], "readAppsV1NamespacedDeployment");
        let patch = &item["patch"];
        let content = patch["requestBody"]["content"]
            .as_object()
            .expect("patch content");
        for ct in paths::PATCH_TYPES {
            assert_eq!(
                content[*ct]["schema"]["$ref"],
                "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
            );
        }
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for want in ["dryRun", "fieldManager", "fieldValidation", "force"] {
            assert!(names.contains(&want), "patch takes {want}");
        }
        assert_eq!(
            item["put"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );

        let collection = &paths["/apis/apps/v1/namespaces/{namespace}/deployments"];
        assert_eq!(collection["get"]["x-kubernetes-action"], "list");
        assert_eq!(
            collection["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
        );
        assert_eq!(collection["post"]["x-kubernetes-action"], "post");
        assert_eq!(
            collection["delete"]["x-kubernetes-action"],
            "deletecollection"
        );
        assert_eq!(
            paths["/apis/apps/v1/deployments"]["get"]["operationId"],
            "listAppsV1DeploymentForAllNamespaces"
        );

        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
        );
        assert_eq!(
            scale["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        );
        let status = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"];
        assert_eq!(
            status["put"]["operationId"],
            "replaceAppsV1NamespacedDeploymentStatus"
        );
    }

    #[test]
    fn every_patch_operation_accepts_field_validation() {
        // kubectl decides whether the server validates fields by finding a PATCH
        // operation tagged with the kind and looking for this parameter on it.
        let index = parse(&v3_index());
        for path in index["paths"].as_object().expect("paths").keys() {
            let doc = v3(path);
            for (route, item) in doc["paths"].as_object().expect("paths") {
                for (method, op) in item.as_object().expect("path item") {
                    assert!(
                        op["x-kubernetes-action"].is_string(),
                        "{method} {route}: action"
                    );
                    assert!(
                        op["x-kubernetes-group-version-kind"]["kind"].is_string(),
                        "{method} {route}: gvk"
                    );
                    if op["x-kubernetes-action"] == "patch" {
                        let has = op["parameters"]
                            .as_array()
                            .expect("parameters")
                            .iter()
                            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
                        assert!(has, "PATCH {route} lists fieldValidation");
                    }
                }
            }
        }
    }

    #[test]
    fn documents_are_built_once() {
        let a = v3_group_version("api/v1").expect("core");
        let b = v3_group_version("api/v1").expect("core");
        assert!(std::ptr::eq(a, b));
        assert_eq!(
            a.json().as_ptr(),
            b.json().as_ptr(),
            "served bytes are shared, not copied"
        );
        assert_eq!(v2().json().as_ptr(), v2().json().as_ptr());
    }
}
