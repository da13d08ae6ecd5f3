//! How each field of a built-in kind merges: the facts behind strategic merge
//! patch (`patchStrategy`/`patchMergeKey`) and server-side apply (`listType`,
//! `listMapKey`, `structType`/`mapType`).
//!
//! Upstream keeps these facts as Go struct tags and `+marker` comments, and
//! publishes them as `x-kubernetes-*` extensions in its OpenAPI. The schemas that
//! k8s-openapi generates carry no such extensions, so the facts live here in a
//! table keyed by *(owning type, field)*, exactly as upstream attaches them. The
//! shape of each kind (which field holds which type, what is a list or a map)
//! comes from the k8s-openapi schemas, so the walk from an object's root to any
//! field needs no hand-written type graph.
//!
//! The table was extracted from the markers in `k8s.io/api` and
//! `k8s.io/apimachinery` (`meta/v1`). Every list field of those packages carries
//! an explicit `+listType`; lists marked `atomic` without a patch strategy are the
//! default and are left out of the table. Facts of types that none of the
//! [`root`] kinds reach are left out too (a test checks that every row names a
//! reachable field).
//!
//! ```
//! use skiff_api::merge_keys::{self, ListStrategy, PatchStrategy};
//!
//! let containers = ["spec", "template", "spec", "containers"];
//! let meta = merge_keys::patch_meta("apps", "Deployment", &containers);
//! assert_eq!(meta.strategy, PatchStrategy::Merge);
//! assert_eq!(meta.merge_key, Some("name"));
//! assert_eq!(
//!     merge_keys::list_strategy("apps", "Deployment", &containers),
//!     ListStrategy::Map { keys: &["name"] },
//! );
//! ```

use std::collections::HashMap;
use std::sync::LazyLock;

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
    scheduling, storage,
};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value};

/// How strategic merge patch combines a field's patch value with the live value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStrategy {
    /// No `patchStrategy` tag: maps merge key by key, lists are replaced whole.
    Default,
    /// `patchStrategy:"merge"`: lists merge (by [`PatchMeta::merge_key`] for lists
    /// of objects, as a set union for lists of scalars).
    Merge,
    /// `patchStrategy:"replace"`: the patch value replaces the live value whole.
    Replace,
}

/// The strategic-merge-patch facts of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// How the field merges.
    pub strategy: PatchStrategy,
    /// Field of the list elements that identifies them (`patchMergeKey`).
    pub merge_key: Option<&'static str>,
    /// The field also has the `retainKeys` strategy: a `$retainKeys` directive in
    /// its patch clears the keys it does not list (discriminated unions such as a
    /// Deployment's `strategy` or a volume's source).
    pub retain_keys: bool,
}

impl PatchMeta {
    /// The facts of a field without tags: maps merge, lists are replaced.
    pub const DEFAULT: PatchMeta = PatchMeta {
        strategy: PatchStrategy::Default,
        merge_key: None,
        retain_keys: false,
    };
}

/// How server-side apply treats a list field (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The list is owned and replaced as a whole.
    Atomic,
    /// A list of unique scalars, merged as a set.
    Set,
    /// A list of objects identified by the values of `keys`
    /// (`x-kubernetes-list-map-keys`).
    Map {
        /// The identifying fields, in upstream's order.
        keys: &'static [&'static str],
    },
}

/// One row of upstream facts: the markers of `field` in the Go type whose
/// OpenAPI name is `ty` (without its `io.k8s.api.`/`io.k8s.apimachinery.pkg.apis.`
/// prefix).
#[derive(Debug)]
struct Fact {
    ty: &'static str,
    field: &'static str,
    patch: PatchMeta,
    /// `+listType` (atomic for fields that are no lists).
    list: ListStrategy,
}

const fn fact(ty: &'static str, field: &'static str, patch: PatchMeta, list: ListStrategy) -> Fact {
    Fact {
        ty,
        field,
        patch,
        list,
    }
}

/// `patchStrategy:"merge"` with `patchMergeKey:"<key>"`.
const fn merge_by(key: &'static str) -> PatchMeta {
    PatchMeta {
        strategy: PatchStrategy::Merge,
        merge_key: Some(key),
        retain_keys: false,
    }
}

/// `patchStrategy:"merge,retainKeys"` with `patchMergeKey:"<key>"`.
const fn merge_retain_by(key: &'static str) -> PatchMeta {
    PatchMeta {
        retain_keys: true,
        ..merge_by(key)
    }
}

/// `patchStrategy:"merge"` on a list of scalars.
const MERGE: PatchMeta = PatchMeta {
    strategy: PatchStrategy::Merge,
    ..PatchMeta::DEFAULT
};

/// `patchStrategy:"replace"`.
const REPLACE: PatchMeta = PatchMeta {
    strategy: PatchStrategy::Replace,
    ..PatchMeta::DEFAULT
};

/// `patchStrategy:"retainKeys"`.
const RETAIN_KEYS: PatchMeta = PatchMeta {
    retain_keys: true,
    ..PatchMeta::DEFAULT
};

/// No patch strategy.
const NONE: PatchMeta = PatchMeta::DEFAULT;

/// `+listType=set`.
const SET: ListStrategy = ListStrategy::Set;

/// `+listType=atomic`, or no list.
const ATOMIC: ListStrategy = ListStrategy::Atomic;

/// `+listType=map` with these `+listMapKey`s.
const fn map(keys: &'static [&'static str]) -> ListStrategy {
    ListStrategy::Map { keys }
}

/// The shape of a value in a kind's schema.
#[derive(Debug)]
enum Shape {
    /// Nothing is known (an unknown field, or free-form JSON).
    Unknown,
    /// A string, number or boolean (also quantities, times, int-or-string).
    Scalar,
    /// An object with named fields: an index into [`Graph::types`].
    Struct(usize),
    /// A list of the inner shape.
    List(Box<Shape>),
    /// An object with arbitrary keys (labels, resource lists) of the inner shape.
    Map(Box<Shape>),
}

static UNKNOWN: Shape = Shape::Unknown;

#[derive(Debug)]
struct FieldDef {
    shape: Shape,
    fact: Option<&'static Fact>,
    /// A field-level `+mapType`/`+structType` (`true`: atomic).
    atomic: Option<bool>,
}

#[derive(Debug)]
struct TypeDef {
    /// OpenAPI name, e.g. `io.k8s.api.core.v1.PodSpec`.
    name: String,
    /// The name as the fact tables spell it, e.g. `core.v1.PodSpec`.
    short: String,
    fields: HashMap<String, FieldDef>,
    /// The type is `+structType=atomic`.
    atomic: bool,
}

/// Every struct type reachable from the root kinds, and the roots themselves.
#[derive(Debug)]
struct Graph {
    types: Vec<TypeDef>,
    /// `Shape::Struct(i)` at index `i`, so that a root [`Node`] can borrow one.
    struct_shapes: Vec<Shape>,
    roots: HashMap<(&'static str, &'static str), usize>,
}

static GRAPH: LazyLock<Graph> = LazyLock::new(Graph::build);

impl Graph {
    fn build() -> Graph {
        let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
        let mut roots = Vec::new();
        add_root_kinds(&mut generator, &mut roots);
        let defs = generator.definitions();

        // First give every object type an index, so fields can point at any of them.
        let mut index = HashMap::new();
        let mut types = Vec::new();
        for (name, schema) in defs {
            if schema.get("properties").is_some_and(Value::is_object) {
                let short = short_name(name);
                index.insert(name.as_str(), types.len());
                types.push(TypeDef {
                    name: name.clone(),
                    fields: HashMap::new(),
                    atomic: ATOMIC_STRUCTS.contains(&short),
                    short: short.to_string(),
                });
            }
        }
        let mut facts: HashMap<(&str, &str), &'static Fact> = HashMap::new();
        for fact in FACTS {
            facts.insert((fact.ty, fact.field), fact);
        }
        for ty in &mut types {
            let Some(Value::Object(props)) = defs.get(&ty.name).and_then(|d| d.get("properties"))
            else {
                continue;
            };
            for (field, schema) in props {
                let shape = shape_of(schema, defs, &index, 0);
                let key = (ty.short.as_str(), field.as_str());
                let fact = facts.get(&key).copied();
                let atomic = FIELD_ATOMICITY
                    .iter()
                    .find(|(t, f, _)| (*t, *f) == key)
                    .map(|(_, _, atomic)| *atomic);
                ty.fields.insert(
                    field.clone(),
                    FieldDef {
                        shape,
                        fact,
                        atomic,
                    },
                );
            }
        }
        let roots = roots
            .into_iter()
            .filter_map(|(key, name)| index.get(name.as_str()).map(|&i| (key, i)))
            .collect();
        let struct_shapes = (0..types.len()).map(Shape::Struct).collect();
        Graph {
            types,
            struct_shapes,
            roots,
        }
    }
}

/// Registers `T` with the generator and remembers it as the root of its kind.
fn add_root<T: JsonSchema + k8s_openapi::Resource>(
    generator: &mut SchemaGenerator,
    roots: &mut Vec<((&'static str, &'static str), String)>,
) {
    let schema = generator.subschema_for::<T>();
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(ref_name)
    {
        roots.push(((T::GROUP, T::KIND), name.to_string()));
    }
}

/// The kinds whose strategic merge patches Skiff can apply. A kind served by
/// the registry but missing here gets 415 for strategic merge patch, as upstream
/// answers for custom resources.
fn add_root_kinds(
    generator: &mut SchemaGenerator,
    roots: &mut Vec<((&'static str, &'static str), String)>,
) {
    macro_rules! roots {
        ($($ty:ty),* $(,)?) => { $( add_root::<$ty>(generator, roots); )* };
    }
    roots!(
        core::v1::Pod,
        core::v1::PodTemplate,
        core::v1::ReplicationController,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::Node,
        core::v1::Event,
        core::v1::ServiceAccount,
        core::v1::PersistentVolume,
        core::v1::PersistentVolumeClaim,
        core::v1::ResourceQuota,
        core::v1::LimitRange,
        core::v1::Namespace,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::StatefulSet,
        apps::v1::DaemonSet,
        apps::v1::ControllerRevision,
        batch::v1::Job,
        batch::v1::CronJob,
        networking::v1::Ingress,
        networking::v1::IngressClass,
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        policy::v1::Eviction,
        discovery::v1::EndpointSlice,
        coordination::v1::Lease,
        storage::v1::StorageClass,
        storage::v1::CSIDriver,
        storage::v1::CSINode,
        storage::v1::VolumeAttachment,
        scheduling::v1::PriorityClass,
        events::v1::Event,
        rbac::v1::Role,
        rbac::v1::ClusterRole,
        rbac::v1::RoleBinding,
        rbac::v1::ClusterRoleBinding,
        // One version per group and kind: v2 is a superset of v1's fields.
        autoscaling::v2::HorizontalPodAutoscaler,
        autoscaling::v1::Scale,
    );
}

/// `io.k8s.api.core.v1.Pod` → `core.v1.Pod`, the spelling of the fact tables.
fn short_name(name: &str) -> &str {
    name.strip_prefix("io.k8s.api.")
        .or_else(|| name.strip_prefix("io.k8s.apimachinery.pkg.apis."))
        .unwrap_or(name)
}

/// `#/$defs/io.k8s.api.core.v1.Pod` → `io.k8s.api.core.v1.Pod`.
fn ref_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

/// The shape a property schema describes. `depth` bounds the chasing of
/// references to non-object definitions.
fn shape_of(
    schema: &Value,
    defs: &Map<String, Value>,
    index: &HashMap<&str, usize>,
    depth: u8,
) -> Shape {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(ref_name)
    {
        if let Some(&i) = index.get(name) {
            return Shape::Struct(i);
        }
        return match defs.get(name) {
            Some(def) if depth < 4 => shape_of(def, defs, index, depth + 1),
            _ => Shape::Unknown,
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => match schema.get("items") {
            Some(items) => Shape::List(Box::new(shape_of(items, defs, index, depth))),
            None => Shape::List(Box::new(Shape::Unknown)),
        },
        Some("object") => match schema.get("additionalProperties") {
            Some(values) if values.is_object() => {
                Shape::Map(Box::new(shape_of(values, defs, index, depth)))
            }
            _ => Shape::Unknown,
        },
        Some("string" | "integer" | "number" | "boolean") => Shape::Scalar,
        _ => Shape::Unknown,
    }
}

/// A position in a kind's schema. Descend with [`Node::field`]; list elements
/// are transparent (a list node's fields are its elements' fields).
#[derive(Debug, Clone, Copy)]
pub struct Node {
    shape: &'static Shape,
}

/// A field reached from a [`Node`]: its merge facts and the node of its value.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    node: Node,
    fact: Option<&'static Fact>,
    atomic: Option<bool>,
}

/// The root node of a kind, or `None` if Skiff has no merge facts for it
/// (custom resources, or a built-in kind missing from the table).
pub fn root(group: &str, kind: &str) -> Option<Node> {
    let graph = &*GRAPH;
    let i = *graph.roots.get(&(group, kind))?;
    graph.struct_shapes.get(i).map(|shape| Node { shape })
}

/// Whether strategic merge patch is possible for a kind.
pub fn is_known_kind(group: &str, kind: &str) -> bool {
    root(group, kind).is_some()
}

/// The field at `path` (field names from the object root; map-valued fields such
/// as `labels` take one segment for the key). `None` for an unknown kind.
pub fn lookup(group: &str, kind: &str, path: &[&str]) -> Option<Field> {
    let mut node = root(group, kind)?;
    let mut field = None;
    for name in path {
        let next = node.field(name);
        node = next.value();
        field = Some(next);
    }
    field
}

/// Strategic-merge-patch facts of the field at `path`; the default facts for
/// unknown kinds and fields.
pub fn patch_meta(group: &str, kind: &str, path: &[&str]) -> PatchMeta {
    lookup(group, kind, path).map_or(PatchMeta::DEFAULT, |f| f.patch_meta())
}

/// Server-side-apply list type of the field at `path`; [`ListStrategy::Atomic`]
/// for unknown kinds and fields, as for any list without a list type.
pub fn list_strategy(group: &str, kind: &str, path: &[&str]) -> ListStrategy {
    lookup(group, kind, path).map_or(ListStrategy::Atomic, |f| f.list_strategy())
}

impl Node {
    /// A node about which nothing is known: every field has default facts.
    pub fn unknown() -> Node {
        Node { shape: &UNKNOWN }
    }

    /// The field `name` of this node's objects. For a map-valued node (labels,
    /// resource lists) `name` is a key and the field is the map's value.
    pub fn field(self, name: &str) -> Field {
        let graph = &*GRAPH;
        match self.shape {
            Shape::Struct(i) => match graph.types.get(*i).and_then(|t| t.fields.get(name)) {
                Some(def) => Field {
                    node: Node { shape: &def.shape },
                    fact: def.fact,
                    atomic: def.atomic,
                },
                None => Field::unknown(),
            },
            Shape::Map(values) => Field {
                node: Node { shape: values },
                fact: None,
                atomic: None,
            },
            Shape::List(items) => Node { shape: items }.field(name),
            Shape::Unknown | Shape::Scalar => Field::unknown(),
        }
    }

    /// The node of this list's elements; the node itself if it is no list.
    pub fn items(self) -> Node {
        match self.shape {
            Shape::List(items) => Node { shape: items },
            _ => self,
        }
    }

    /// Whether the node's value is a list.
    pub fn is_list(self) -> bool {
        matches!(self.shape, Shape::List(_))
    }

    /// Whether the node's object type (its elements' type, for a list) is
    /// `+structType=atomic`: server-side apply owns such objects whole.
    pub fn is_atomic_struct(self) -> bool {
        match self.items().shape {
            Shape::Struct(i) => GRAPH.types.get(*i).is_some_and(|t| t.atomic),
            _ => false,
        }
    }

    /// OpenAPI name of the node's object type (list elements for a list), if it
    /// is a known object type.
    pub fn type_name(self) -> Option<&'static str> {
        match self.items().shape {
            Shape::Struct(i) => GRAPH.types.get(*i).map(|t| t.name.as_str()),
            _ => None,
        }
    }
}

impl Field {
    fn unknown() -> Field {
        Field {
            node: Node::unknown(),
            fact: None,
            atomic: None,
        }
    }

    /// The node of the field's value.
    pub fn value(self) -> Node {
        self.node
    }

    /// Strategic-merge-patch facts of the field.
    pub fn patch_meta(self) -> PatchMeta {
        self.fact.map_or(PatchMeta::DEFAULT, |f| f.patch)
    }

    /// Server-side-apply list type of the field (meaningful for lists).
    pub fn list_strategy(self) -> ListStrategy {
        self.fact.map_or(ListStrategy::Atomic, |f| f.list)
    }

    /// Whether server-side apply treats the field's (non-list) value as one
    /// atomic unit: `+mapType=atomic`/`+structType=atomic` on the field, else
    /// `+structType=atomic` on its type.
    pub fn is_atomic(self) -> bool {
        match self.atomic {
            Some(atomic) => atomic,
            None => !self.node.is_list() && self.node.is_atomic_struct(),
        }
    }
}

// Facts extracted from upstream markers (see the module docs). Lists without a
// row are atomic and replaced whole by strategic merge patch.
#[rustfmt::skip]
static FACTS: &[Fact] = &[
    fact("apps.v1.DaemonSetStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("apps.v1.DeploymentSpec", "strategy", RETAIN_KEYS, ATOMIC),
    fact("apps.v1.DeploymentStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("apps.v1.ReplicaSetStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("apps.v1.StatefulSetStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("batch.v1.JobSchedulingConfiguration", "resourceClaims", merge_by("name"), map(&["name"])),
    fact("batch.v1.JobStatus", "conditions", merge_by("type"), ATOMIC),
    fact("batch.v1.PodFailurePolicyOnExitCodesRequirement", "values", NONE, SET),
    fact("batch.v1.UncountedTerminatedPods", "failed", NONE, SET),
    fact("batch.v1.UncountedTerminatedPods", "succeeded", NONE, SET),
    fact("core.v1.Container", "env", merge_by("name"), map(&["name"])),
    fact("core.v1.Container", "ports", merge_by("containerPort"), map(&["containerPort", "protocol"])),
    fact("core.v1.Container", "volumeDevices", merge_by("devicePath"), map(&["devicePath"])),
    fact("core.v1.Container", "volumeMounts", merge_by("mountPath"), map(&["mountPath"])),
    fact("core.v1.ContainerRestartRuleOnExitCodes", "values", NONE, SET),
    fact("core.v1.ContainerStatus", "allocatedResourcesStatus", merge_by("name"), map(&["name"])),
    fact("core.v1.ContainerStatus", "volumeMounts", merge_by("mountPath"), map(&["mountPath"])),
    fact("core.v1.EphemeralContainer", "env", merge_by("name"), map(&["name"])),
    fact("core.v1.EphemeralContainer", "ports", merge_by("containerPort"), map(&["containerPort", "protocol"])),
    fact("core.v1.EphemeralContainer", "volumeDevices", merge_by("devicePath"), map(&["devicePath"])),
    fact("core.v1.EphemeralContainer", "volumeMounts", merge_by("mountPath"), map(&["mountPath"])),
    fact("core.v1.NamespaceStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("core.v1.NodeAllocatableResourceClaimStatus", "containers", NONE, SET),
    fact("core.v1.NodeAllocatableResourceClaimStatus", "mapping", merge_by("name"), map(&["name"])),
    fact("core.v1.NodeAllocatableResourceClaimStatus", "overhead", merge_by("name"), map(&["name"])),
    fact("core.v1.NodePodPreemptionPolicy", "disableResizePreemption", NONE, SET),
    fact("core.v1.NodeSpec", "podCIDRs", MERGE, SET),
    fact("core.v1.NodeStatus", "addresses", merge_by("type"), map(&["type"])),
    fact("core.v1.NodeStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("core.v1.PersistentVolumeClaimStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("core.v1.PodSpec", "containers", merge_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "ephemeralContainers", merge_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "evictionResponders", merge_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "hostAliases", merge_by("ip"), map(&["ip"])),
    fact("core.v1.PodSpec", "imagePullSecrets", merge_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "initContainers", merge_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "resourceClaims", merge_retain_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "schedulingGates", merge_by("name"), map(&["name"])),
    fact("core.v1.PodSpec", "topologySpreadConstraints", merge_by("topologyKey"), map(&["topologyKey", "whenUnsatisfiable"])),
    fact("core.v1.PodSpec", "volumes", merge_retain_by("name"), map(&["name"])),
    fact("core.v1.PodStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("core.v1.PodStatus", "hostIPs", merge_by("ip"), ATOMIC),
    fact("core.v1.PodStatus", "nodeAllocatableResourceClaimStatuses", merge_by("resourceClaimName"), map(&["resourceClaimName"])),
    fact("core.v1.PodStatus", "podIPs", merge_by("ip"), map(&["ip"])),
    fact("core.v1.PodStatus", "resourceClaimStatuses", merge_retain_by("name"), map(&["name"])),
    fact("core.v1.PodStatus", "volumeHealth", PatchMeta::DEFAULT, map(&["name"])),
    fact("core.v1.PodVolumeHealth", "healthConditions", merge_by("status"), map(&["status", "reason"])),
    fact("core.v1.ReplicationControllerStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("core.v1.ResourceRequirements", "claims", PatchMeta::DEFAULT, map(&["name"])),
    fact("core.v1.ResourceStatus", "resources", PatchMeta::DEFAULT, map(&["resourceID"])),
    fact("core.v1.ServiceAccount", "secrets", merge_by("name"), map(&["name"])),
    fact("core.v1.ServiceSpec", "ports", merge_by("port"), map(&["port", "protocol"])),
    fact("core.v1.ServiceStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("core.v1.VolumeHealthStatus", "healthConditions", merge_by("status"), map(&["status", "reason"])),
    fact("core.v1.VolumeMount", "bindMountOptions", NONE, SET),
    fact("discovery.v1.Endpoint", "addresses", NONE, SET),
    fact("policy.v1.PodDisruptionBudgetSpec", "selector", REPLACE, ATOMIC),
    fact("policy.v1.PodDisruptionBudgetStatus", "conditions", merge_by("type"), map(&["type"])),
    fact("storage.v1.CSIDriverSpec", "volumeLifecycleModes", NONE, SET),
    fact("storage.v1.CSINodeSpec", "drivers", merge_by("name"), map(&["name"])),
    fact("storage.v1.CSINodeStatus", "storageHealth", merge_by("name"), map(&["name"])),
    fact("meta.v1.ObjectMeta", "finalizers", MERGE, SET),
    fact("meta.v1.ObjectMeta", "ownerReferences", merge_by("uid"), map(&["uid"])),
];

/// Field-level `+mapType`/`+structType`: `true` for atomic, `false` for granular.
#[rustfmt::skip]
static FIELD_ATOMICITY: &[(&str, &str, bool)] = &[
    ("core.v1.PersistentVolumeClaimStatus", "allocatedResourceStatuses", false),
    ("core.v1.PersistentVolumeSpec", "claimRef", false),
    ("core.v1.PodSpec", "nodeSelector", true),
    ("core.v1.ReplicationControllerSpec", "selector", true),
    ("core.v1.ServiceSpec", "selector", true),
];

/// Types marked `+structType=atomic`.
static ATOMIC_STRUCTS: &[&str] = &[
    "core.v1.ConfigMapKeySelector",
    "core.v1.EndpointAddress",
    "core.v1.EndpointPort",
    "core.v1.EvictionResponder",
    "core.v1.FileKeySelector",
    "core.v1.LocalObjectReference",
    "core.v1.NodeSelector",
    "core.v1.NodeSelectorTerm",
    "core.v1.ObjectFieldSelector",
    "core.v1.ObjectReference",
    "core.v1.ResourceFieldSelector",
    "core.v1.ScopeSelector",
    "core.v1.SecretKeySelector",
    "core.v1.SecretReference",
    "core.v1.TopologySelectorTerm",
    "core.v1.TypedLocalObjectReference",
    "discovery.v1.EndpointPort",
    "networking.v1.ServiceBackendPort",
    "rbac.v1.RoleRef",
    "rbac.v1.Subject",
    "meta.v1.LabelSelector",
    "meta.v1.OwnerReference",
];

#[cfg(test)]
mod tests {
    use super::*;

    const POD_SPEC: [&str; 3] = ["spec", "template", "spec"];

    fn deploy(rest: &[&str]) -> (PatchMeta, ListStrategy) {
        let path: Vec<&str> = POD_SPEC.iter().chain(rest).copied().collect();
        (
            patch_meta("apps", "Deployment", &path),
            list_strategy("apps", "Deployment", &path),
        )
    }

    fn merge_by(key: &'static str) -> PatchMeta {
        PatchMeta {
            strategy: PatchStrategy::Merge,
            merge_key: Some(key),
            retain_keys: false,
        }
    }

    #[test]
    fn every_fact_names_a_reachable_field() {
        let graph = &*GRAPH;
        let mut missing = Vec::new();
        for fact in FACTS {
            let found = graph
                .types
                .iter()
                .find(|t| t.short == fact.ty)
                .is_some_and(|t| t.fields.contains_key(fact.field));
            if !found {
                missing.push(format!("{}.{}", fact.ty, fact.field));
            }
        }
        for (ty, field, _) in FIELD_ATOMICITY {
            let found = graph
                .types
                .iter()
                .any(|t| t.short == *ty && t.fields.contains_key(*field));
            if !found {
                missing.push(format!("{ty}.{field}"));
            }
        }
        for name in ATOMIC_STRUCTS {
            if !graph.types.iter().any(|t| t.short == *name) {
                missing.push((*name).to_string());
            }
        }
        assert!(missing.is_empty(), "unreachable facts: {missing:#?}");
    }

    #[test]
    fn every_root_kind_resolves() {
        let graph = &*GRAPH;
        assert_eq!(graph.roots.len(), 41);
        for kind in ["Pod", "Service", "Node", "Namespace", "Secret", "Event"] {
            assert!(is_known_kind("", kind), "{kind}");
        }
        assert!(is_known_kind("apps", "Deployment"));
        assert!(is_known_kind("events.k8s.io", "Event"));
        assert!(!is_known_kind("example.com", "Widget"));
        assert!(!is_known_kind("apps", "Pod"));
    }

    #[test]
    fn pod_template_lists_merge_by_their_keys() {
        assert_eq!(
            deploy(&["containers"]),
            (merge_by("name"), ListStrategy::Map { keys: &["name"] })
        );
        assert_eq!(deploy(&["initContainers"]).0, merge_by("name"));
        assert_eq!(
            deploy(&["containers", "ports"]),
            (
                merge_by("containerPort"),
                ListStrategy::Map {
                    keys: &["containerPort", "protocol"]
                }
            )
        );
        assert_eq!(deploy(&["containers", "env"]).0, merge_by("name"));
        assert_eq!(
            deploy(&["containers", "volumeMounts"]).0,
            merge_by("mountPath")
        );
        assert_eq!(
            deploy(&["containers", "command"]),
            (PatchMeta::DEFAULT, ListStrategy::Atomic)
        );
        assert_eq!(deploy(&["imagePullSecrets"]).0, merge_by("name"));
        assert_eq!(deploy(&["hostAliases"]).0, merge_by("ip"));
        assert_eq!(
            deploy(&["tolerations"]),
            (PatchMeta::DEFAULT, ListStrategy::Atomic)
        );
        let volumes = deploy(&["volumes"]).0;
        assert_eq!(volumes.merge_key, Some("name"));
        assert!(volumes.retain_keys);
        assert_eq!(
            deploy(&["topologySpreadConstraints"]).1,
            ListStrategy::Map {
                keys: &["topologyKey", "whenUnsatisfiable"]
            }
        );
    }

    #[test]
    fn every_pod_template_owner_reaches_containers() {
        let cases: [(&str, &str, &[&str]); 7] = [
            ("", "Pod", &["spec", "containers"]),
            ("", "PodTemplate", &["template", "spec", "containers"]),
            (
                "",
                "ReplicationController",
                &["spec", "template", "spec", "containers"],
            ),
            (
                "apps",
                "StatefulSet",
                &["spec", "template", "spec", "containers"],
            ),
            (
                "apps",
                "DaemonSet",
                &["spec", "template", "spec", "containers"],
            ),
            ("batch", "Job", &["spec", "template", "spec", "containers"]),
            (
                "batch",
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                ],
            ),
        ];
        for (group, kind, path) in cases {
            assert_eq!(patch_meta(group, kind, path), merge_by("name"), "{kind}");
        }
        let ephemeral = ["spec", "ephemeralContainers", "env"];
        assert_eq!(patch_meta("", "Pod", &ephemeral), merge_by("name"));
    }

    #[test]
    fn metadata_and_status_facts() {
        let finalizers = patch_meta("", "Namespace", &["metadata", "finalizers"]);
        assert_eq!(finalizers.strategy, PatchStrategy::Merge);
        assert_eq!(finalizers.merge_key, None);
        assert_eq!(
            list_strategy("", "ConfigMap", &["metadata", "finalizers"]),
            ListStrategy::Set
        );
        assert_eq!(
            patch_meta("apps", "ReplicaSet", &["metadata", "ownerReferences"]),
            merge_by("uid")
        );
        assert_eq!(
            patch_meta("", "Pod", &["status", "conditions"]),
            merge_by("type")
        );
        assert_eq!(
            patch_meta("", "Service", &["spec", "ports"]),
            merge_by("port")
        );
        assert_eq!(
            patch_meta("", "Node", &["status", "addresses"]),
            merge_by("type")
        );
        let strategy = patch_meta("apps", "Deployment", &["spec", "strategy"]);
        assert!(strategy.retain_keys);
        assert_eq!(
            patch_meta("policy", "PodDisruptionBudget", &["spec", "selector"]).strategy,
            PatchStrategy::Replace
        );
        assert_eq!(
            list_strategy("", "Endpoints", &["subsets"]),
            ListStrategy::Atomic
        );
    }

    #[test]
    fn map_keys_and_unknown_fields_have_default_facts() {
        let label = lookup("", "Pod", &["metadata", "labels", "app"]);
        assert_eq!(label.map(Field::patch_meta), Some(PatchMeta::DEFAULT));
        let limits = ["spec", "containers", "resources", "limits", "cpu"];
        assert_eq!(patch_meta("", "Pod", &limits), PatchMeta::DEFAULT);
        assert_eq!(
            patch_meta("", "Pod", &["spec", "nope", "x"]),
            PatchMeta::DEFAULT
        );
        assert!(lookup("example.com", "Widget", &["spec"]).is_none());
        assert_eq!(
            list_strategy("example.com", "Widget", &["spec", "items"]),
            ListStrategy::Atomic
        );
    }

    #[test]
    fn atomic_structs_and_maps() {
        let selector = lookup("apps", "Deployment", &["spec", "selector"]);
        assert_eq!(selector.map(Field::is_atomic), Some(true));
        let node_selector = lookup("", "Pod", &["spec", "nodeSelector"]);
        assert_eq!(node_selector.map(Field::is_atomic), Some(true));
        let labels = lookup("", "Pod", &["metadata", "labels"]);
        assert_eq!(labels.map(Field::is_atomic), Some(false));
        let owners = lookup("", "Pod", &["metadata", "ownerReferences"]);
        assert_eq!(owners.map(Field::is_atomic), Some(false));
        assert_eq!(
            owners.map(|f| f.value().items().is_atomic_struct()),
            Some(true)
        );
        let node = root("", "Pod").map(|n| n.field("spec").value());
        assert_eq!(
            node.and_then(Node::type_name),
            Some("io.k8s.api.core.v1.PodSpec")
        );
    }
}
