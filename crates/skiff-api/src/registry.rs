//! The table of served resource types.
//!
//! One static row per type ([`all`]) carries what the API server needs to serve it:
//! discovery names, scope, verbs and subresources, Table printing, field selectors,
//! and the typed codec and schema from k8s-openapi. Lookups are linear scans over
//! about thirty rows, which is cheaper than hashing the key.

mod fields;
mod table;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Whether objects of a type live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/namespaces/{ns}/{plural}/{name}`
    Namespaced,
    /// `/{plural}/{name}`
    Cluster,
}

impl Scope {
    /// The spelling used by discovery: exactly `Namespaced` or `Cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Namespaced => "Namespaced",
            Scope::Cluster => "Cluster",
        }
    }
}

/// A subresource served under `/{plural}/{name}/{subresource}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// Path segment, e.g. `status`, `scale`, `binding`, `eviction`, `log`, `exec`.
    pub name: &'static str,
    /// The kind sent and received, e.g. `Scale` in `autoscaling/v1`.
    pub group: &'static str,
    /// Version of `kind`.
    pub version: &'static str,
    /// Kind of the request/response body.
    pub kind: &'static str,
    /// Verbs allowed on the subresource.
    pub verbs: &'static [&'static str],
}

/// One column of a `meta.k8s.io/v1` Table, as upstream's printers define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Header, e.g. `NAME`-style text such as `Ready`.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: &'static str,
    /// OpenAPI format, e.g. `name` for the name column, or empty.
    pub format: &'static str,
    /// Shown in `-o wide` only when > 0.
    pub priority: i32,
    /// Human description.
    pub description: &'static str,
}

/// A validation failure on one field, rendered as a `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`, ...
    pub reason: &'static str,
    /// JSON path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    /// Human message, upstream style: `Required value`, `Invalid value: "x": ...`.
    pub message: String,
}

/// Normalizes an object through its typed k8s-openapi struct: JSON in, JSON out.
/// Fields the type does not know are dropped, so comparing input and output finds
/// unknown fields; a type mismatch is an error naming the field.
pub type Codec = fn(&Value) -> Result<Value, serde_json::Error>;

/// One served resource type.
#[derive(Debug, Clone, Copy)]
pub struct ResourceType {
    /// API group; empty for core.
    pub group: &'static str,
    /// Version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Kind of the list, e.g. `DeploymentList`.
    pub list_kind: &'static str,
    /// Plural resource name, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular resource name, e.g. `deployment`.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Short names, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Verbs on the main resource.
    pub verbs: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
    /// Table columns, upstream's. Every type starts with `Name` except events,
    /// whose `Name` column is last and wide-only.
    pub columns: &'static [Column],
    /// Cells of one Table row, in `columns` order; `now` is for ages.
    pub row: fn(&Value, jiff::Timestamp) -> Vec<Value>,
    /// The value of a `fieldSelector` field as a string, or `None` if the type
    /// does not support that field (upstream answers 400). Supported fields answer
    /// on any object, with the zero value when unset; `metadata.name` and
    /// `metadata.namespace` are answered too, where upstream accepts them.
    pub field_selector: fn(&Value, &str) -> Option<String>,
    /// Typed round trip used for decoding checks and unknown-field detection.
    pub codec: Codec,
    /// The type's JSON schema (schemars), for OpenAPI.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// True if `.status` is only writable through the `status` subresource and
    /// a change to anything but metadata and status bumps `metadata.generation`.
    pub has_status: bool,
}

impl ResourceType {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the type lives in namespaces.
    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The subresource called `name`, if served.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// Every served type.
pub fn all() -> &'static [ResourceType] {
    table::TYPES
}

/// The type served at `/apis/{group}/{version}/{plural}` (`/api/v1/{plural}` for
/// the core group, whose name is empty).
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    table::TYPES
        .iter()
        .find(|rt| rt.plural == plural && rt.group == group && rt.version == version)
}

/// The type of `kind` in `group` (every served group has the single version `v1`).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    table::TYPES
        .iter()
        .find(|rt| rt.kind == kind && rt.group == group)
}

/// A [`Codec`]: decodes `value` as the k8s-openapi type `K` and encodes it back.
///
/// The result has k8s-openapi's field order (`apiVersion`, `kind`, `metadata`,
/// `spec`, `status`), drops unknown fields and `null`s, keeps empty strings, zeros
/// and empty lists and maps, and normalizes timestamps to RFC 3339 UTC with
/// seconds precision as upstream does. Missing required fields decode to their
/// zero values (`""`, `0`, `[]`, `{}`) and are written out, as Go's decoder does;
/// validation rejects them, not decoding. A wrong `apiVersion` or `kind`, or a value
/// of the wrong type (a float for an integer, a `null` inside a string map), is an
/// error whose message starts with the path of the offending field
/// (`spec.replicas: invalid type: ...`).
pub fn roundtrip<K: DeserializeOwned + Serialize>(
    value: &Value,
) -> Result<Value, serde_json::Error> {
    let typed: K = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner
        } else {
            <serde_json::Error as serde::de::Error>::custom(format!("{path}: {inner}"))
        }
    })?;
    serde_json::to_value(typed)
}

/// A type's schema from `generator`: a reference to the definition named as
/// upstream names it (`io.k8s.api.core.v1.Pod`), which the generator records.
pub fn schema_of<K: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<K>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
    use serde_json::json;

    /// A realistic object of each served kind, keyed by `(group, kind)`.
    fn sample(rt: &ResourceType) -> Value {
        let mut obj = json!({
            "apiVersion": rt.api_version(),
            "kind": rt.kind,
            "metadata": {"name": "sample", "creationTimestamp": "2024-05-01T11:00:00Z",
                "labels": {"app": "sample"}},
        });
        if rt.namespaced() {
            obj["metadata"]["namespace"] = json!("default");
        }
        let template = json!({
            "metadata": {"labels": {"app": "sample"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
        });
        let selector = json!({"matchLabels": {"app": "sample"}});
        let body = match (rt.group, rt.kind) {
            ("", "Binding") => json!({"target": {"kind": "Node", "name": "node-a"}}),
            ("", "ConfigMap") => json!({"data": {"a": "1"}}),
            ("", "Endpoints") => {
                json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})
            }
            ("", "Event") => {
                json!({"involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Started",
                "type": "Normal", "message": "Started container", "count": 1,
                "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:00:00Z"})
            }
            ("", "LimitRange") => {
                json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}})
            }
            ("", "Namespace") => {
                json!({"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
            }
            ("", "Node") => json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"kubeletVersion": "v1.37.0", "machineID": "", "systemUUID": "", "bootID": "",
                    "kernelVersion": "6.1", "osImage": "Debian", "containerRuntimeVersion": "containerd://1.6",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}}),
            ("", "PersistentVolumeClaim") => json!({"spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}}),
            ("", "PersistentVolume") => json!({"spec": {"capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}, "status": {"phase": "Available"}}),
            ("", "Pod") => json!({"spec": template["spec"], "status": {"phase": "Running"}}),
            ("", "ResourceQuota") => json!({"spec": {"hard": {"pods": "10"}},
                "status": {"hard": {"pods": "10"}, "used": {"pods": "1"}}}),
            ("", "Secret") => json!({"type": "Opaque", "data": {"k": "dg=="}}),
            ("", "ServiceAccount") => json!({}),
            ("", "Service") => json!({"spec": {"type": "ClusterIP", "clusterIPs": ["10.96.0.2"],
                "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "sample"}}}),
            ("apps", "ControllerRevision") => json!({"revision": 1}),
            ("apps", "DaemonSet") => json!({"spec": {"selector": selector, "template": template}}),
            ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
                json!({"spec": {"replicas": 2, "selector": selector, "template": template}})
            }
            ("batch", "CronJob") => json!({"spec": {"schedule": "@hourly",
                "jobTemplate": {"spec": {"template": template}}}}),
            ("batch", "Job") => json!({"spec": {"template": template}}),
            ("coordination.k8s.io", "Lease") => json!({"spec": {"holderIdentity": "node-a"}}),
            ("discovery.k8s.io", "EndpointSlice") => json!({"addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}),
            ("events.k8s.io", "Event") => json!({"eventTime": "2024-05-01T11:00:00.000000Z",
                "regarding": {"kind": "Pod", "name": "web"}, "reason": "Started", "type": "Normal",
                "reportingController": "kubelet", "reportingInstance": "node-a", "action": "Start"}),
            ("networking.k8s.io", "IngressClass") => {
                json!({"spec": {"controller": "example.com/ingress"}})
            }
            ("networking.k8s.io", "Ingress") => {
                json!({"spec": {"rules": [{"host": "example.com"}]}})
            }
            ("networking.k8s.io", "NetworkPolicy") => json!({"spec": {"podSelector": selector}}),
            ("networking.k8s.io", "ServiceCIDR") => json!({"spec": {"cidrs": ["10.43.0.0/16"]},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "",
                    "message": "Kubernetes default Service CIDR is ready",
                    "lastTransitionTime": "2024-05-01T11:00:00Z"}]}}),
            ("networking.k8s.io", "IPAddress") => json!({"spec": {"parentRef": {
                "group": "", "resource": "services", "namespace": "default", "name": "sample"}}}),
            ("policy", "PodDisruptionBudget") => {
                json!({"spec": {"minAvailable": 1, "selector": selector}})
            }
            ("scheduling.k8s.io", "PriorityClass") => json!({"value": 1000}),
            ("storage.k8s.io", "StorageClass") => json!({"provisioner": "example.com/local"}),
            other => panic!("no sample for {other:?}"),
        };
        for (key, value) in body.as_object().unwrap() {
            obj[key] = value.clone();
        }
        obj
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        let now: jiff::Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        for rt in all() {
            let obj = sample(rt);
            let cells = (rt.row)(&obj, now);
            assert_eq!(cells.len(), rt.columns.len(), "{} row", rt.kind);
            assert_eq!(
                (rt.row)(&json!({}), now).len(),
                rt.columns.len(),
                "{} empty row",
                rt.kind
            );
            // Every sample is a valid object of its type.
            (rt.codec)(&obj).unwrap_or_else(|e| panic!("{} sample: {e}", rt.kind));
            let names: Vec<&str> = rt
                .columns
                .iter()
                .filter(|c| c.format == "name")
                .map(|c| c.name)
                .collect();
            assert_eq!(names, ["Name"], "{} has one name column", rt.kind);
            assert!(
                rt.columns
                    .iter()
                    .all(|c| c.priority == 0 || c.priority == 1)
            );
        }
    }

    #[test]
    fn rows_are_unique_and_consistent() {
        let mut keys = std::collections::HashSet::new();
        for rt in all() {
            assert!(
                keys.insert((rt.group, rt.plural)),
                "duplicate {}",
                rt.plural
            );
            assert_eq!(rt.version, "v1");
            assert_eq!(rt.list_kind, format!("{}List", rt.kind));
            assert_eq!(
                rt.has_status,
                rt.subresource("status").is_some(),
                "{}",
                rt.plural
            );
            for sub in rt.subresources {
                assert!(
                    !sub.verbs.is_empty() && !sub.kind.is_empty(),
                    "{}/{}",
                    rt.plural,
                    sub.name
                );
            }
        }
        assert_eq!(all().len(), 32);
    }

    #[test]
    fn lookups() {
        let pods = by_plural("", "v1", "pods").unwrap();
        assert_eq!(
            (pods.kind, pods.short_names, pods.categories),
            ("Pod", &["po"][..], &["all"][..])
        );
        assert_eq!(pods.scope.as_str(), "Namespaced");
        let deploy = by_kind("apps", "Deployment").unwrap();
        assert_eq!(deploy.plural, "deployments");
        assert_eq!(deploy.api_version(), "apps/v1");
        let scale = deploy.subresource("scale").unwrap();
        assert_eq!(
            (scale.group, scale.version, scale.kind),
            ("autoscaling", "v1", "Scale")
        );
        assert_eq!(by_kind("", "Event").unwrap().group, "");
        assert_eq!(by_kind("events.k8s.io", "Event").unwrap().plural, "events");
        assert!(by_plural("apps", "v1", "pods").is_none());
        assert!(by_plural("", "v2", "pods").is_none());
        assert!(by_kind("", "Deployment").is_none());

        let ns = by_plural("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced());
        assert!(!ns.verbs.contains(&"deletecollection"));
        assert_eq!(ns.subresource("finalize").unwrap().verbs, ["update"]);
        let eviction = pods.subresource("eviction").unwrap();
        assert_eq!(
            (eviction.group, eviction.kind, eviction.verbs),
            ("policy", "Eviction", &["create"][..])
        );
        assert_eq!(pods.subresource("exec").unwrap().kind, "PodExecOptions");
        assert_eq!(pods.subresource("binding").unwrap().verbs, ["create"]);
        let token = by_plural("", "v1", "serviceaccounts")
            .unwrap()
            .subresource("token")
            .unwrap();
        assert_eq!(
            (token.group, token.kind),
            ("authentication.k8s.io", "TokenRequest")
        );
        assert_eq!(by_plural("", "v1", "bindings").unwrap().verbs, ["create"]);
        assert!(!by_plural("", "v1", "configmaps").unwrap().has_status);
    }

    #[test]
    fn field_selectors_through_rows() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n"}});
        assert_eq!(
            (pods.field_selector)(&pod, "spec.nodeName").as_deref(),
            Some("n")
        );
        assert_eq!(
            (pods.field_selector)(&pod, "metadata.name").as_deref(),
            Some("p")
        );
        assert_eq!((pods.field_selector)(&pod, "spec.bogus"), None);
        let cms = by_plural("", "v1", "configmaps").unwrap();
        assert_eq!(
            (cms.field_selector)(&pod, "metadata.namespace").as_deref(),
            Some("ns")
        );
        assert_eq!((cms.field_selector)(&pod, "data"), None);
        let jobs = by_plural("batch", "v1", "jobs").unwrap();
        assert_eq!(
            (jobs.field_selector)(&json!({"status": {"succeeded": 2}}), "status.successful")
                .as_deref(),
            Some("2")
        );
        let sc = by_plural("storage.k8s.io", "v1", "storageclasses").unwrap();
        assert_eq!(
            (sc.field_selector)(&json!({}), "metadata.namespace").as_deref(),
            Some("")
        );
    }

    #[test]
    fn codec_drops_unknown_fields_and_nulls_and_keeps_zero_values() {
        let input = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "", "labels": {}, "creationTimestamp": null, "bogus": 1},
            "spec": {
                "replicas": 0,
                "paused": false,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "", "args": [], "extra": "x"}]}
                },
                "unknownSpecField": {"a": 1}
            },
            "status": {}
        });
        let out = roundtrip::<Deployment>(&input).unwrap();
        assert_eq!(
            out,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"labels": {}, "name": "web", "namespace": ""},
                "spec": {
                    "paused": false,
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"args": [], "image": "", "name": "app"}]}
                    }
                },
                "status": {}
            })
        );
    }

    #[test]
    fn codec_normalizes_times_and_keeps_quantities_verbatim() {
        let input = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "creationTimestamp": "2024-05-01T14:00:00.75+02:00"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}}}]}
        });
        let out = roundtrip::<Pod>(&input).unwrap();
        assert_eq!(
            out["metadata"]["creationTimestamp"],
            json!("2024-05-01T12:00:00Z")
        );
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            json!("1000m")
        );
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["requests"]["memory"],
            json!("1024Mi")
        );
        // apiVersion and kind are written even when the input lacks them.
        let bare =
            roundtrip::<Pod>(&json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
                .unwrap();
        assert_eq!(
            (bare["apiVersion"].as_str(), bare["kind"].as_str()),
            (Some("v1"), Some("Pod"))
        );
    }

    #[test]
    fn codec_errors_name_the_field() {
        let wrong_type = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": "three", "selector": {}, "template": {}}});
        let err = roundtrip::<Deployment>(&wrong_type)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.replicas: invalid type: string \"three\""),
            "{err}"
        );

        let wrong_kind = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "p"}, "spec": {"containers": []}});
        let err = roundtrip::<Pod>(&wrong_kind).unwrap_err().to_string();
        assert!(err.contains("Service") && err.contains("Pod"), "{err}");

        let float = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [], "activeDeadlineSeconds": 1.5}});
        let err = roundtrip::<Pod>(&float).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.activeDeadlineSeconds: invalid type: floating point"),
            "{err}"
        );

        let bad_base64 = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "!!"}});
        let secrets = by_plural("", "v1", "secrets").unwrap();
        assert!((secrets.codec)(&bad_base64).is_err());

        assert!(roundtrip::<Pod>(&json!([1, 2])).is_err());
    }

    #[test]
    fn codec_fills_missing_required_fields_with_zero_values() {
        // As Go's decoder does; validation, not decoding, rejects these objects.
        let out = roundtrip::<Pod>(&json!({"spec": {"containers": [{"ports": [{}]}]}})).unwrap();
        assert_eq!(out["metadata"], json!({}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "", "ports": [{"containerPort": 0}]}])
        );
        let out = roundtrip::<Pod>(&json!({"spec": {}})).unwrap();
        assert_eq!(out["spec"]["containers"], json!([]));
    }

    #[test]
    fn schemas_are_named_references() {
        let mut generator = SchemaGenerator::default();
        for rt in all() {
            let schema = (rt.schema)(&mut generator).to_value();
            let reference = schema["$ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {schema}", rt.kind));
            assert!(
                reference.ends_with(&format!(".{}", rt.kind)),
                "{}: {reference}",
                rt.kind
            );
        }
        let defs = generator.take_definitions(false);
        assert!(defs.contains_key("io.k8s.api.core.v1.Pod"));
        assert!(defs.contains_key("io.k8s.api.events.v1.Event"));
        assert!(defs["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"].is_object());
    }
}
