//! API discovery documents, generated from the registry.
//!
//! Clients find out what the server serves before they do anything else: kubectl
//! asks `/api` and `/apis` for the aggregated `apidiscovery.k8s.io/v2` lists, and
//! older clients (the Python client, helm's dynamic paths) walk the legacy
//! `APIVersions` / `APIGroupList` / `APIGroup` / `APIResourceList` documents.
//! Both views are derived from the same registry rows, so they can never disagree.
//!
//! The registry is static, so every document except [`core_versions`] (which names
//! the server's address) is built once and kept as serialized [`Bytes`]; serving
//! one is a reference-count bump.
//!
//! Shapes follow upstream's apiserver:
//! - resources of a group version are sorted by name, verbs alphabetically;
//! - a resource's `group`/`version` (legacy) or `responseKind.group`/`version`
//!   (aggregated) is empty when the kind lives in the resource's own group
//!   version, and set when it does not (`deployments/scale` answers
//!   `autoscaling/v1` `Scale`);
//! - `storageVersionHash` is the first 8 bytes of SHA-256 of `group/version/kind`
//!   in standard base64, as upstream computes it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use skiff_api::registry::{self, ResourceType, Subresource};

/// The Content-Type of an aggregated discovery response. kubectl accepts the
/// aggregated form only when the response carries exactly this media type;
/// otherwise it falls back to walking every legacy group version.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The `/api` document (`APIVersions`): the core group's versions, and the address
/// clients should use, which the caller knows and the registry does not.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

/// The `/apis` document (`APIGroupList`): every named group with its versions.
pub fn group_list() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| {
        let groups: Vec<Value> = named_groups().map(Group::api_group).collect();
        to_bytes(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
    });
    DOC.clone()
}

/// The `/apis/{group}` document (`APIGroup`), or `None` if no such group is served.
pub fn group(name: &str) -> Option<Bytes> {
    static DOCS: LazyLock<BTreeMap<&'static str, Bytes>> = LazyLock::new(|| {
        named_groups()
            .map(|g| {
                let mut doc = Map::new();
                doc.insert("kind".into(), "APIGroup".into());
                doc.insert("apiVersion".into(), "v1".into());
                if let Value::Object(body) = g.api_group() {
                    doc.extend(body);
                }
                (g.name, to_bytes(&Value::Object(doc)))
            })
            .collect()
    });
    DOCS.get(name).cloned()
}

/// The `/api/v1` or `/apis/{group}/{version}` document (`APIResourceList`) listing
/// every resource and subresource; `group` is empty for the core group.
pub fn resource_list(group: &str, version: &str) -> Option<Bytes> {
    static DOCS: LazyLock<BTreeMap<(&'static str, &'static str), Bytes>> = LazyLock::new(|| {
        all_groups()
            .iter()
            .flat_map(|g| g.versions.iter().map(move |v| (g.name, v)))
            .map(|(group, v)| {
                let mut doc = Map::new();
                doc.insert("kind".into(), "APIResourceList".into());
                // Upstream's core list carries no apiVersion; named groups' lists do.
                if !group.is_empty() {
                    doc.insert("apiVersion".into(), "v1".into());
                }
                doc.insert("groupVersion".into(), group_version(group, v.name).into());
                let resources: Vec<Value> = v
                    .resources
                    .iter()
                    .flat_map(|rt| legacy_resources(rt))
                    .collect();
                doc.insert("resources".into(), resources.into());
                ((group, v.name), to_bytes(&Value::Object(doc)))
            })
            .collect()
    });
    DOCS.get(&(group, version)).cloned()
}

/// The aggregated `/api` document: one `APIGroupDiscovery` named `""` for the core
/// group. Serve it with [`AGGREGATED_CONTENT_TYPE`].
pub fn aggregated_core() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| {
        let items: Vec<Value> = all_groups()
            .iter()
            .filter(|g| g.name.is_empty())
            .map(Group::aggregated)
            .collect();
        to_bytes(&aggregated_list(items))
    });
    DOC.clone()
}

/// The aggregated `/apis` document: one `APIGroupDiscovery` per named group.
/// Serve it with [`AGGREGATED_CONTENT_TYPE`].
pub fn aggregated_groups() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| {
        let items: Vec<Value> = named_groups().map(Group::aggregated).collect();
        to_bytes(&aggregated_list(items))
    });
    DOC.clone()
}

/// A served API group with its versions, preferred version first.
struct Group {
    name: &'static str,
    versions: Vec<Version>,
}

/// One version of a group with its resources, sorted by plural name.
struct Version {
    name: &'static str,
    resources: Vec<&'static ResourceType>,
}

impl Group {
    /// The legacy `APIGroup` body (without `kind`/`apiVersion`).
    fn api_group(&self) -> Value {
        let versions: Vec<Value> = self
            .versions
            .iter()
            .map(|v| json!({"groupVersion": group_version(self.name, v.name), "version": v.name}))
            .collect();
        let preferred = versions.first().cloned().unwrap_or(Value::Null);
        json!({"name": self.name, "versions": versions, "preferredVersion": preferred})
    }

    /// The `APIGroupDiscovery` item.
    fn aggregated(&self) -> Value {
        let versions: Vec<Value> = self
            .versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> = v
                    .resources
                    .iter()
                    .map(|rt| aggregated_resource(rt))
                    .collect();
                json!({"version": v.name, "resources": resources, "freshness": "Current"})
            })
            .collect();
        json!({"metadata": {"name": self.name}, "versions": versions})
    }
}

/// Every served group (core included), in registry order of first appearance.
fn all_groups() -> &'static [Group] {
    static GROUPS: LazyLock<Vec<Group>> = LazyLock::new(|| groups_of(registry::all()));
    &GROUPS
}

/// The named groups, i.e. everything under `/apis`.
fn named_groups() -> impl Iterator<Item = &'static Group> {
    all_groups().iter().filter(|g| !g.name.is_empty())
}

fn groups_of(rows: &'static [ResourceType]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for rt in rows {
        let index = match groups.iter().position(|g| g.name == rt.group) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    name: rt.group,
                    versions: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let versions = &mut groups[index].versions;
        match versions.iter_mut().find(|v| v.name == rt.version) {
            Some(v) => v.resources.push(rt),
            None => versions.push(Version {
                name: rt.version,
                resources: vec![rt],
            }),
        }
    }
    for group in &mut groups {
        group
            .versions
            .sort_by(|a, b| version_priority(a.name, b.name));
        for version in &mut group.versions {
            version.resources.sort_by_key(|rt| rt.plural);
        }
    }
    groups
}

/// Orders Kubernetes versions by preference, most preferred first: GA before beta
/// before alpha, higher numbers first, and anything not shaped like `v1beta2`
/// last, alphabetically. This is how upstream picks a group's preferred version.
fn version_priority(a: &str, b: &str) -> Ordering {
    match (parse_version(a), parse_version(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `(stability, major, minor)` where stability is 2 for GA, 1 beta, 0 alpha.
fn parse_version(v: &str) -> Option<(u8, u32, u32)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let major: u32 = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some((2, major, 0));
    }
    let (stability, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n)
    } else {
        return None;
    };
    Some((stability, major, minor.parse().ok()?))
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Verbs sorted alphabetically, as upstream lists them.
fn sorted_verbs(verbs: &[&'static str]) -> Vec<&'static str> {
    let mut verbs = verbs.to_vec();
    verbs.sort_unstable();
    verbs.dedup();
    verbs
}

/// `(group, version)` of a subresource's kind as discovery reports it: empty when
/// it is the parent's own group version.
fn foreign_group_version(rt: &ResourceType, sub: &Subresource) -> (&'static str, &'static str) {
    if sub.group == rt.group && sub.version == rt.version {
        ("", "")
    } else {
        (sub.group, sub.version)
    }
}

/// The legacy `APIResource` entries of one row: the resource, then its
/// subresources as `plural/sub`, sorted by name.
fn legacy_resources(rt: &ResourceType) -> Vec<Value> {
    let mut main = Map::new();
    main.insert("name".into(), rt.plural.into());
    main.insert("singularName".into(), rt.singular.into());
    main.insert("namespaced".into(), rt.namespaced().into());
    main.insert("kind".into(), rt.kind.into());
    main.insert("verbs".into(), sorted_verbs(rt.verbs).into());
    if !rt.short_names.is_empty() {
        main.insert("shortNames".into(), rt.short_names.into());
    }
    if !rt.categories.is_empty() {
        main.insert("categories".into(), rt.categories.into());
    }
    main.insert("storageVersionHash".into(), storage_version_hash(rt).into());

    let mut subs: Vec<&Subresource> = rt.subresources.iter().collect();
    subs.sort_by_key(|s| s.name);
    let mut out = vec![Value::Object(main)];
    for sub in subs {
        let (group, version) = foreign_group_version(rt, sub);
        let mut entry = Map::new();
        entry.insert("name".into(), format!("{}/{}", rt.plural, sub.name).into());
        entry.insert("singularName".into(), "".into());
        entry.insert("namespaced".into(), rt.namespaced().into());
        if !group.is_empty() {
            entry.insert("group".into(), group.into());
        }
        if !version.is_empty() {
            entry.insert("version".into(), version.into());
        }
        entry.insert("kind".into(), sub.kind.into());
        entry.insert("verbs".into(), sorted_verbs(sub.verbs).into());
        out.push(Value::Object(entry));
    }
    out
}

/// The `APIResourceDiscovery` entry of one row, subresources nested.
fn aggregated_resource(rt: &ResourceType) -> Value {
    let mut entry = Map::new();
    entry.insert("resource".into(), rt.plural.into());
    entry.insert(
        "responseKind".into(),
        json!({"group": "", "version": "", "kind": rt.kind}),
    );
    entry.insert("scope".into(), rt.scope.as_str().into());
    entry.insert("singularResource".into(), rt.singular.into());
    entry.insert("verbs".into(), sorted_verbs(rt.verbs).into());
    if !rt.short_names.is_empty() {
        entry.insert("shortNames".into(), rt.short_names.into());
    }
    if !rt.categories.is_empty() {
        entry.insert("categories".into(), rt.categories.into());
    }
    let mut subs: Vec<&Subresource> = rt.subresources.iter().collect();
    subs.sort_by_key(|s| s.name);
    if !subs.is_empty() {
        let subs: Vec<Value> = subs
            .into_iter()
            .map(|sub| {
                let (group, version) = foreign_group_version(rt, sub);
                json!({
                    "subresource": sub.name,
                    "responseKind": {"group": group, "version": version, "kind": sub.kind},
                    "verbs": sorted_verbs(sub.verbs),
                })
            })
            .collect();
        entry.insert("subresources".into(), subs.into());
    }
    Value::Object(entry)
}

fn aggregated_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// Upstream's storage version hash: base64 of the first 8 bytes of
/// SHA-256(`group/version/kind`). Clients treat it as opaque and compare it for
/// equality to notice storage migrations.
fn storage_version_hash(rt: &ResourceType) -> String {
    let digest = Sha256::digest(format!("{}/{}/{}", rt.group, rt.version, rt.kind));
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn to_bytes(doc: &Value) -> Bytes {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    Bytes::from(serde_json::to_vec(doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).expect("discovery documents are JSON")
    }

    fn all_aggregated_resources() -> Vec<Value> {
        let mut out = Vec::new();
        for doc in [aggregated_core(), aggregated_groups()] {
            let doc = parse(&doc);
            assert_eq!(doc["kind"], "APIGroupDiscoveryList");
            assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
            for item in doc["items"].as_array().expect("items") {
                for version in item["versions"].as_array().expect("versions") {
                    assert_eq!(version["freshness"], "Current");
                    out.extend(version["resources"].as_array().expect("resources").clone());
                }
            }
        }
        out
    }

    #[test]
    fn every_aggregated_resource_and_subresource_has_kind_and_scope() {
        let resources = all_aggregated_resources();
        assert_eq!(
            resources.len(),
            registry::all().len(),
            "one aggregated entry per registry row"
        );
        for r in &resources {
            let name = r["resource"].as_str().expect("resource name");
            assert!(
                r["scope"] == "Namespaced" || r["scope"] == "Cluster",
                "{name}: scope {}",
                r["scope"]
            );
            let kind = r["responseKind"]["kind"].as_str().unwrap_or_default();
            assert!(!kind.is_empty(), "{name}: responseKind.kind");
            assert!(
                r["responseKind"]["group"].is_string(),
                "{name}: responseKind.group"
            );
            assert!(
                r["responseKind"]["version"].is_string(),
                "{name}: responseKind.version"
            );
            assert!(
                r["singularResource"].is_string(),
                "{name}: singularResource"
            );
            assert!(
                !r["verbs"].as_array().expect("verbs").is_empty(),
                "{name}: verbs"
            );
            for sub in r["subresources"].as_array().into_iter().flatten() {
                let sub_name = sub["subresource"].as_str().expect("subresource name");
                let kind = sub["responseKind"]["kind"].as_str().unwrap_or_default();
                assert!(!kind.is_empty(), "{name}/{sub_name}: responseKind.kind");
                assert!(sub["responseKind"]["group"].is_string());
                assert!(sub["responseKind"]["version"].is_string());
                assert!(sub["verbs"].is_array(), "{name}/{sub_name}: verbs");
            }
        }
    }

    #[test]
    fn core_group_is_named_empty_in_aggregated_api() {
        let doc = parse(&aggregated_core());
        let items = doc["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "");
        assert_eq!(items[0]["versions"][0]["version"], "v1");
        let pods = items[0]["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "pods")
            .expect("pods are served");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        assert_eq!(pods["singularResource"], "pod");
        assert!(
            pods["shortNames"]
                .as_array()
                .expect("shortNames")
                .contains(&json!("po"))
        );
        let status = pods["subresources"]
            .as_array()
            .expect("pod subresources")
            .iter()
            .find(|s| s["subresource"] == "status")
            .expect("pods/status");
        assert_eq!(
            status["responseKind"],
            json!({"group": "", "version": "", "kind": "Pod"})
        );
    }

    #[test]
    fn deployment_scale_answers_autoscaling_scale() {
        let doc = parse(&aggregated_groups());
        let apps = doc["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .expect("apps group");
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        let scale = deployments["subresources"]
            .as_array()
            .expect("subresources")
            .iter()
            .find(|s| s["subresource"] == "scale")
            .expect("deployments/scale");
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert!(
            deployments["categories"]
                .as_array()
                .expect("categories")
                .contains(&json!("all"))
        );
    }

    #[test]
    fn legacy_resource_list_has_subresources_and_hashes() {
        let doc = parse(&resource_list("apps", "v1").expect("apps/v1 is served"));
        assert_eq!(doc["kind"], "APIResourceList");
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["groupVersion"], "apps/v1");
        let resources = doc["resources"].as_array().expect("resources");
        let by_name = |n: &str| {
            resources
                .iter()
                .find(|r| r["name"] == n)
                .unwrap_or_else(|| panic!("{n} listed"))
        };
        let deployments = by_name("deployments");
        assert_eq!(deployments["kind"], "Deployment");
        assert_eq!(deployments["namespaced"], true);
        assert_eq!(deployments["singularName"], "deployment");
        let hash = deployments["storageVersionHash"].as_str().expect("hash");
        assert_eq!(hash.len(), 12, "8 bytes in base64");
        let verbs: Vec<&str> = deployments["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut sorted = verbs.clone();
        sorted.sort_unstable();
        assert_eq!(verbs, sorted);

        let scale = by_name("deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["singularName"], "");
        let status = by_name("deployments/status");
        assert_eq!(status["kind"], "Deployment");
        assert!(status.get("group").is_none());

        let core = parse(&resource_list("", "v1").expect("core v1 is served"));
        assert_eq!(core["groupVersion"], "v1");
        assert!(core.get("apiVersion").is_none());
        assert!(
            core["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .any(|r| r["name"] == "pods/status")
        );

        assert!(resource_list("apps", "v1alpha9").is_none());
        assert!(resource_list("nonexistent.example.com", "v1").is_none());
    }

    #[test]
    fn legacy_groups_name_a_preferred_version() {
        let list = parse(&group_list());
        assert_eq!(list["kind"], "APIGroupList");
        let groups = list["groups"].as_array().expect("groups");
        assert!(!groups.is_empty());
        assert!(
            groups.iter().all(|g| g["name"] != ""),
            "core is not under /apis"
        );
        for g in groups {
            let preferred = &g["preferredVersion"];
            assert!(
                g["versions"]
                    .as_array()
                    .expect("versions")
                    .contains(preferred)
            );
        }
        let apps = parse(&group("apps").expect("apps group"));
        assert_eq!(apps["kind"], "APIGroup");
        assert_eq!(
            apps["preferredVersion"],
            json!({"groupVersion": "apps/v1", "version": "v1"})
        );
        assert!(group("").is_none());
        assert!(group("nope.example.com").is_none());
    }

    #[test]
    fn core_versions_carries_the_server_address() {
        let doc = core_versions("10.0.0.1:6443");
        assert_eq!(doc["versions"], json!(["v1"]));
        assert_eq!(
            doc["serverAddressByClientCIDRs"][0]["serverAddress"],
            "10.0.0.1:6443"
        );
        assert_eq!(
            doc["serverAddressByClientCIDRs"][0]["clientCIDR"],
            "0.0.0.0/0"
        );
    }

    #[test]
    fn versions_are_ordered_by_kubernetes_priority() {
        let mut versions = vec![
            "v1alpha1", "v1beta1", "v2", "v1", "v2beta2", "v10", "foo", "v1beta2",
        ];
        versions.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            versions,
            [
                "v10", "v2", "v1", "v2beta2", "v1beta2", "v1beta1", "v1alpha1", "foo"
            ]
        );
    }

    #[test]
    fn storage_version_hash_matches_upstream_algorithm() {
        // Upstream publishes this value for apps/v1 Deployment.
        let rt = registry::all()
            .iter()
            .find(|rt| rt.group == "apps" && rt.kind == "Deployment")
            .expect("deployments are served");
        assert_eq!(storage_version_hash(rt), "8aSe+NMegvE=");
    }
}
