//! The resource types the API serves, from discovery: which ones the
//! collector watches, which ones a namespace's deletion empties, and how an
//! owner reference's `apiVersion` and `kind` map to a resource (upstream's
//! REST mapper).
//!
//! Discovery is re-read periodically, so types added later (custom
//! resources) are covered.

use std::collections::{HashMap, HashSet};

use kube::Client;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

/// A resource type the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Its group, version, kind and plural.
    pub resource: ApiResource,
    /// True for namespaced types.
    pub namespaced: bool,
    /// Its verbs.
    pub verbs: Vec<String>,
}

impl Served {
    /// A served type from its discovery entry.
    pub fn new(resource: ApiResource, capabilities: &ApiCapabilities) -> Self {
        Self {
            resource,
            namespaced: capabilities.scope == Scope::Namespaced,
            verbs: capabilities.operations.clone(),
        }
    }

    /// True if the type supports `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `plural.group` (`pods.` for core types), as upstream names a
    /// resource in messages.
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.resource.plural, self.resource.group)
    }
}

/// One API group as discovery lists it: its versions, the preferred one
/// first, with their resource types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupResources {
    /// `(version, types)`, preferred version first.
    pub versions: Vec<(String, Vec<Served>)>,
}

/// Every served resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedResources {
    /// One entry per `(group, plural)`, at its most preferred version.
    preferred: Vec<Served>,
    /// Every type at every version, by `(apiVersion, kind)`.
    by_kind: HashMap<(String, String), Served>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[error("discovering the served resource types")]
pub struct DiscoveryError(#[source] pub kube::Error);

impl ServedResources {
    /// Asks the API (aggregated discovery when served, else group by group).
    pub async fn discover(client: &Client) -> Result<Self, DiscoveryError> {
        let discovery = match Discovery::new(client.clone()).run_aggregated().await {
            Ok(discovery) => discovery,
            Err(_) => Discovery::new(client.clone())
                .run()
                .await
                .map_err(DiscoveryError)?,
        };
        let groups = discovery.groups().map(|group| {
            let mut versions: Vec<&str> = group.versions().collect();
            let preferred = group.preferred_version_or_latest();
            versions.sort_by_key(|v| *v != preferred);
            GroupResources {
                versions: versions
                    .into_iter()
                    .map(|v| {
                        let served = group
                            .versioned_resources(v)
                            .into_iter()
                            .map(|(resource, caps)| Served::new(resource, &caps))
                            .collect();
                        (v.to_string(), served)
                    })
                    .collect(),
            }
        });
        Ok(Self::new(groups))
    }

    /// The served types of these groups. A type served at several versions
    /// is used at its group's preferred one (or the first other that
    /// serves it), as upstream's preferred-resources discovery does.
    pub fn new(groups: impl IntoIterator<Item = GroupResources>) -> Self {
        let mut served = Self::default();
        for group in groups {
            let mut seen = HashSet::new();
            for (_, types) in group.versions {
                for entry in types {
                    served.by_kind.insert(
                        (
                            entry.resource.api_version.clone(),
                            entry.resource.kind.clone(),
                        ),
                        entry.clone(),
                    );
                    if seen.insert(entry.resource.plural.clone()) {
                        served.preferred.push(entry);
                    }
                }
            }
        }
        served.preferred.sort_by(|a, b| {
            (&a.resource.group, &a.resource.plural).cmp(&(&b.resource.group, &b.resource.plural))
        });
        served
    }

    /// Each type once, at its preferred version.
    pub fn preferred(&self) -> &[Served] {
        &self.preferred
    }

    /// The type an owner reference's `apiVersion` and `kind` name.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<&Served> {
        self.by_kind
            .get(&(api_version.to_string(), kind.to_string()))
    }

    /// The types the collector watches: those that can be listed, watched
    /// and deleted, except `ignored` `(group, plural)`s.
    pub fn collectable<'a>(
        &'a self,
        ignored: &'a [(String, String)],
    ) -> impl Iterator<Item = &'a Served> + 'a {
        self.preferred.iter().filter(move |s| {
            s.supports(verbs::LIST)
                && s.supports(verbs::WATCH)
                && s.supports(verbs::DELETE)
                && !ignored
                    .iter()
                    .any(|(g, p)| *g == s.resource.group && *p == s.resource.plural)
        })
    }

    /// The namespaced types that can be deleted: what a namespace's
    /// deletion must empty.
    pub fn namespaced_deletable(&self) -> impl Iterator<Item = &Served> {
        self.preferred
            .iter()
            .filter(|s| s.namespaced && s.supports(verbs::DELETE))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A served type for tests.
    pub(crate) fn served(
        api_version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        verbs: &[&str],
    ) -> Served {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Served {
            resource: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: api_version.into(),
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced,
            verbs: verbs.iter().map(|v| (*v).to_string()).collect(),
        }
    }

    const ALL: &[&str] = &[
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];

    fn cluster() -> ServedResources {
        ServedResources::new([
            GroupResources {
                versions: vec![(
                    "v1".into(),
                    vec![
                        served("v1", "Pod", "pods", true, ALL),
                        served("v1", "Event", "events", true, ALL),
                        served(
                            "v1",
                            "Namespace",
                            "namespaces",
                            false,
                            &["create", "delete", "get", "list", "watch"],
                        ),
                        served("v1", "Binding", "bindings", true, &["create"]),
                    ],
                )],
            },
            GroupResources {
                versions: vec![
                    (
                        "v2".into(),
                        vec![served("example.com/v2", "Widget", "widgets", true, ALL)],
                    ),
                    (
                        "v1".into(),
                        vec![
                            served("example.com/v1", "Widget", "widgets", true, ALL),
                            served("example.com/v1", "Gadget", "gadgets", false, ALL),
                        ],
                    ),
                ],
            },
        ])
    }

    #[test]
    fn each_type_is_used_at_its_preferred_version_and_resolved_at_every_version() {
        let served = cluster();
        let preferred: Vec<&str> = served
            .preferred()
            .iter()
            .map(|s| s.resource.api_version.as_str())
            .filter(|v| v.starts_with("example.com"))
            .collect();
        assert_eq!(
            preferred,
            ["example.com/v1", "example.com/v2"],
            "gadgets only in v1, widgets at v2"
        );
        assert_eq!(
            served
                .preferred()
                .iter()
                .find(|s| s.resource.plural == "widgets")
                .map(|s| s.resource.version.as_str()),
            Some("v2")
        );
        assert_eq!(
            served
                .resolve("example.com/v1", "Widget")
                .map(|s| s.resource.version.as_str()),
            Some("v1"),
            "an owner reference at an older version still resolves"
        );
        assert!(served.resolve("example.com/v3", "Widget").is_none());
    }

    #[test]
    fn collectable_types_list_watch_and_delete_and_are_not_ignored() {
        let served = cluster();
        let ignored = vec![(String::new(), "events".to_string())];
        let mut names: Vec<String> = served
            .collectable(&ignored)
            .map(Served::group_resource)
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "gadgets.example.com",
                "namespaces.",
                "pods.",
                "widgets.example.com"
            ]
        );
        let mut namespaced: Vec<String> = served
            .namespaced_deletable()
            .map(Served::group_resource)
            .collect();
        namespaced.sort();
        assert_eq!(namespaced, ["events.", "pods.", "widgets.example.com"]);
    }
}
