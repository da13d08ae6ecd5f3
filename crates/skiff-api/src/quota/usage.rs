//! What an object is charged, per resource type (upstream's quota
//! evaluators): pods are charged their compute requests and limits while they
//! run, services their load balancers and node ports, claims their storage,
//! and every other type one object count.
//!
//! Usage can change after create only where [`Evaluator::charges_update`]
//! says so: a claim's storage grows, a service changes type, a pod is resized
//! in place or gets a deadline. A pod being resized is measured by the
//! largest of what its spec asks, what its node agent admitted and what its
//! containers run with, as upstream does, so quota follows the resize both
//! before and after the node acts on it.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::{Amount, ResourceList, add};

/// The resources a pod is charged, besides the prefixed ones.
const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Quota on these makes every container state them (an old upstream
/// decision it keeps for compatibility, and only for these).
const POD_REQUIRED: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

const SERVICE_RESOURCES: &[&str] = &[
    "count/services",
    "services",
    "services.loadbalancers",
    "services.nodeports",
];

const PVC_RESOURCES: &[&str] = &["persistentvolumeclaims", "requests.storage"];

/// `<class>.storageclass.storage.k8s.io/<resource>` charges a claim's class.
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Types quota never counts (upstream's default ignored resources).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// Legacy quota names counting core objects, besides `count/<plural>`.
fn legacy_alias(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("", "configmaps") => Some("configmaps"),
        ("", "secrets") => Some("secrets"),
        ("", "replicationcontrollers") => Some("replicationcontrollers"),
        ("", "resourcequotas") => Some("resourcequotas"),
        _ => None,
    }
}

/// One `scopes` entry or `scopeSelector` expression of a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequirement {
    /// `Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`,
    /// `PriorityClass`, `CrossNamespacePodAffinity`, ...
    pub scope_name: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    pub values: Vec<String>,
}

/// The scope requirements of a quota: each of `spec.scopes` (as `Exists`)
/// and each expression of `spec.scopeSelector`.
pub fn quota_scopes(quota: &Value) -> Vec<ScopeRequirement> {
    let spec = &quota["spec"];
    let scopes = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|scope| ScopeRequirement {
            scope_name: scope.to_string(),
            operator: "Exists".into(),
            values: Vec::new(),
        });
    let expressions = spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| ScopeRequirement {
            scope_name: e["scopeName"].as_str().unwrap_or_default().to_string(),
            operator: e["operator"].as_str().unwrap_or_default().to_string(),
            values: e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        });
    scopes.chain(expressions).collect()
}

/// How quota measures one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluator {
    /// Pods: compute resources while not terminal, and their count.
    Pods,
    /// Services: count, load balancers and node ports.
    Services,
    /// PersistentVolumeClaims: count and storage, also per storage class.
    PersistentVolumeClaims,
    /// Any other type: one `count/<plural>[.<group>]` per object.
    Count {
        /// `count/<plural>` or `count/<plural>.<group>`.
        name: String,
        /// The legacy name counting the same objects, if any.
        alias: Option<&'static str>,
    },
}

impl Evaluator {
    /// The evaluator of the type served as `plural` in `group`; `None` for
    /// the types quota ignores.
    pub fn for_resource(group: &str, plural: &str) -> Option<Evaluator> {
        if IGNORED.contains(&(group, plural)) {
            return None;
        }
        Some(match (group, plural) {
            ("", "pods") => Evaluator::Pods,
            ("", "services") => Evaluator::Services,
            ("", "persistentvolumeclaims") => Evaluator::PersistentVolumeClaims,
            _ => Evaluator::Count {
                name: count_name(group, plural),
                alias: legacy_alias(group, plural),
            },
        })
    }

    /// Of the resource names `names`, those this type is charged for.
    pub fn matching_resources<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names
            .into_iter()
            .filter(|name| self.tracks(name))
            .map(String::from)
            .collect()
    }

    fn tracks(&self, name: &str) -> bool {
        match self {
            Evaluator::Pods => {
                POD_RESOURCES.contains(&name)
                    || name.starts_with("hugepages-")
                    || name.starts_with("requests.hugepages-")
                    || (name.starts_with("requests.") && !is_native(name))
            }
            Evaluator::Services => SERVICE_RESOURCES.contains(&name),
            Evaluator::PersistentVolumeClaims => {
                name == "count/persistentvolumeclaims"
                    || PVC_RESOURCES.contains(&name)
                    || PVC_RESOURCES
                        .iter()
                        .any(|r| name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}{r}")))
            }
            Evaluator::Count { name: count, alias } => {
                name == count || alias.is_some_and(|a| a == name)
            }
        }
    }

    /// Whether objects of this type can be in quota scopes. Only pods can;
    /// a quota with scopes never applies to other types.
    pub fn scoped(&self) -> bool {
        *self == Evaluator::Pods
    }

    /// Whether an object of this type meets every scope requirement (no
    /// requirements: always). Only pods have scopes; other types meet none.
    pub fn matches_scopes(&self, scopes: &[ScopeRequirement], obj: &Value) -> bool {
        scopes
            .iter()
            .all(|scope| self.scoped() && pod_matches_scope(scope, obj))
    }

    /// Whether quota looks at an update from `old` to `new` at all
    /// (upstream's evaluators' `Handles` for updates). Claims and services
    /// always: storage grows and service types change. Pods only when their
    /// resources change (an in-place resize) or they enter or leave the
    /// Terminating scope. Other types never: they are counted once, at create.
    pub fn charges_update(&self, old: &Value, new: &Value) -> bool {
        match self {
            Evaluator::Services | Evaluator::PersistentVolumeClaims => true,
            Evaluator::Pods => {
                resource_fields(old) != resource_fields(new)
                    || is_terminating(old) != is_terminating(new)
            }
            Evaluator::Count { .. } => false,
        }
    }

    /// Whether `quota` applies to `obj`: its `status.hard` names a resource
    /// this type is charged for and `obj` is in all its scopes.
    pub fn matches(&self, quota: &Value, obj: &Value) -> bool {
        let hard = quota["status"]["hard"].as_object();
        let names = hard.into_iter().flatten().map(|(k, _)| k.as_str());
        !self.matching_resources(names).is_empty() && self.matches_scopes(&quota_scopes(quota), obj)
    }

    /// What `obj` is charged at `now`.
    pub fn usage(&self, obj: &Value, now: Timestamp) -> ResourceList {
        match self {
            Evaluator::Pods => pod_usage(obj, now),
            Evaluator::Services => service_usage(obj),
            Evaluator::PersistentVolumeClaims => pvc_usage(obj),
            Evaluator::Count { name, alias } => {
                let mut usage = ResourceList::new();
                usage.insert(name.clone(), Amount::from_int(1));
                if let Some(alias) = alias {
                    usage.insert((*alias).to_string(), Amount::from_int(1));
                }
                usage
            }
        }
    }

    /// Refuses a pod whose containers leave out a request or limit that the
    /// quota's `required` resources make mandatory, in upstream's words
    /// (`must specify limits.cpu for: app; requests.memory for: app,side`).
    pub fn constraints(&self, required: &[String], obj: &Value) -> Result<(), String> {
        if *self != Evaluator::Pods {
            return Ok(());
        }
        let required: BTreeSet<&str> = required
            .iter()
            .map(String::as_str)
            .filter(|r| POD_REQUIRED.contains(r))
            .collect();
        let mut missing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for container in containers(obj, "containers").chain(containers(obj, "initContainers")) {
            let resources = &container["resources"];
            let usage = compute_usage(
                &super::parse_list(&resources["requests"]),
                &super::parse_list(&resources["limits"]),
            );
            for resource in &required {
                if !usage.contains_key(*resource) {
                    missing
                        .entry(resource)
                        .or_default()
                        .insert(container["name"].as_str().unwrap_or_default());
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = missing
            .iter()
            .map(|(resource, names)| {
                let names: Vec<&str> = names.iter().copied().collect();
                format!("{resource} for: {}", names.join(","))
            })
            .collect();
        Err(format!("must specify {}", parts.join("; ")))
    }
}

/// The object-count quota name of a type: `count/secrets`,
/// `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Native resources have no domain or the `kubernetes.io` one.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Extended resources: domain-qualified, outside `kubernetes.io`, and not
/// already a quota name.
fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with("requests.")
}

fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    pod["spec"][field].as_array().into_iter().flatten()
}

/// Every `resources` of a pod's spec: its containers', then the pod's own.
fn resource_fields(pod: &Value) -> Vec<&Value> {
    containers(pod, "containers")
        .chain(containers(pod, "initContainers"))
        .map(|c| &c["resources"])
        .chain(std::iter::once(&pod["spec"]["resources"]))
        .collect()
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

/// Whether a pod is charged its compute resources: not finished, and not
/// stuck terminating past its grace period (a lost node must not pin quota).
fn pod_charged(pod: &Value, now: Timestamp) -> bool {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    let meta = &pod["metadata"];
    let deletion = meta["deletionTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok());
    match (deletion, meta["deletionGracePeriodSeconds"].as_i64()) {
        (Some(at), Some(grace)) => now <= at + SignedDuration::from_secs(grace),
        _ => true,
    }
}

fn pod_usage(pod: &Value, now: Timestamp) -> ResourceList {
    let mut usage = ResourceList::new();
    usage.insert("count/pods".into(), Amount::from_int(1));
    if !pod_charged(pod, now) {
        return usage;
    }
    add(&usage, &compute_usage(&pod_requests(pod), &pod_limits(pod)))
}

/// The quota resources of one set of requests and limits.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut result = ResourceList::new();
    result.insert("pods".into(), Amount::from_int(1));
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(request) = requests.get(resource) {
            result.insert(resource.into(), *request);
            result.insert(format!("requests.{resource}"), *request);
        }
        if let Some(limit) = limits.get(resource) {
            result.insert(format!("limits.{resource}"), *limit);
        }
    }
    for (name, request) in requests {
        if name.starts_with("hugepages-") {
            result.insert(name.clone(), *request);
            result.insert(format!("requests.{name}"), *request);
        } else if is_extended(name) {
            result.insert(format!("requests.{name}"), *request);
        }
    }
    result
}

fn add_into(total: &mut ResourceList, more: &ResourceList) {
    *total = add(total, more);
}

fn max_into(total: &mut ResourceList, other: &ResourceList) {
    for (name, amount) in other {
        let entry = total.entry(name.clone()).or_insert(*amount);
        if amount > entry {
            *entry = *amount;
        }
    }
}

/// What a pod's containers ask for (`field = "requests"`) or are limited to
/// (`"limits"`), as upstream adds them up: the containers' sum; init
/// containers run one at a time, so each counts alone (plus the sidecars
/// started before it) and the pod needs the larger of the two; sidecars
/// (restartable init containers) run throughout and add to the sum.
pub fn pod_container_resources(pod: &Value, field: &str) -> ResourceList {
    aggregate(pod, |c| super::parse_list(&c["resources"][field]))
}

/// The pod-wide sum of `list` over its containers, by the rule of
/// [`pod_container_resources`].
fn aggregate(pod: &Value, list: impl Fn(&Value) -> ResourceList) -> ResourceList {
    let mut total = ResourceList::new();
    for container in containers(pod, "containers") {
        add_into(&mut total, &list(container));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for container in containers(pod, "initContainers") {
        let own = list(container);
        let running = if container["restartPolicy"] == "Always" {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        max_into(&mut init_peak, &running);
    }
    max_into(&mut total, &init_peak);
    total
}

/// Which account of a container's resources to read.
#[derive(Clone, Copy)]
enum Account {
    /// What the spec asks for.
    Spec,
    /// What the node agent has admitted (`allocatedResources`, requests only).
    Allocated,
    /// What the container runs with (`status...resources`).
    Actuated,
}

/// One account of `field` for `container`, whose status is `status`. An
/// account the agent has not reported falls back to the spec, unless the
/// pending resize is infeasible: then the spec is not what runs.
fn account(
    container: &Value,
    status: Option<&Value>,
    field: &str,
    which: Account,
    infeasible: bool,
) -> ResourceList {
    let spec = || {
        if infeasible {
            ResourceList::new()
        } else {
            super::parse_list(&container["resources"][field])
        }
    };
    let reported = |v: &Value| v.is_object().then(|| super::parse_list(v));
    let allocated = status
        .filter(|_| field == "requests")
        .and_then(|s| reported(&s["allocatedResources"]));
    match which {
        Account::Spec => super::parse_list(&container["resources"][field]),
        Account::Allocated => allocated.unwrap_or_else(spec),
        Account::Actuated => status
            .and_then(|s| reported(&s["resources"][field]))
            .or(allocated)
            .unwrap_or_else(spec),
    }
}

/// The reported status of the container (or init container) `name`.
fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|field| pod["status"][*field].as_array().into_iter().flatten())
        .find(|s| s["name"].as_str() == Some(name))
}

/// The node agent found the pending resize impossible on its node.
fn resize_infeasible(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodResizePending")
        .is_some_and(|c| c["reason"] == "Infeasible")
}

/// The containers' `field` as quota charges it while an in-place resize may
/// be under way: the largest of what the spec asks, what the agent admitted
/// and what runs, so that neither shrinking the spec before the containers
/// shrink nor growing it frees or hides quota. An infeasible resize is
/// charged what runs, not what was asked.
fn charged_container_resources(pod: &Value, field: &str) -> ResourceList {
    let infeasible = resize_infeasible(pod);
    let sum = |which: Account| {
        aggregate(pod, |c| {
            let status = c["name"].as_str().and_then(|n| container_status(pod, n));
            account(c, status, field, which, infeasible)
        })
    };
    let mut total = if infeasible {
        ResourceList::new()
    } else {
        sum(Account::Spec)
    };
    max_into(&mut total, &sum(Account::Actuated));
    if field == "requests" {
        max_into(&mut total, &sum(Account::Allocated));
    }
    total
}

/// [`charged_container_resources`] plus the pod overhead; pod-level
/// resources, when set, win.
fn pod_resources(pod: &Value, field: &str) -> ResourceList {
    let mut total = charged_container_resources(pod, field);
    let overhead = super::parse_list(&pod["spec"]["overhead"]);
    for (name, amount) in &overhead {
        if field == "requests" || total.contains_key(name) {
            add_into(&mut total, &ResourceList::from([(name.clone(), *amount)]));
        }
    }
    for (name, amount) in super::parse_list(&pod["spec"]["resources"][field]) {
        if matches!(name.as_str(), "cpu" | "memory") {
            total.insert(name, amount);
        }
    }
    total
}

fn pod_requests(pod: &Value) -> ResourceList {
    pod_resources(pod, "requests")
}

fn pod_limits(pod: &Value) -> ResourceList {
    pod_resources(pod, "limits")
}

/// BestEffort: no container (nor the pod) asks for or limits cpu or memory.
fn is_best_effort(pod: &Value) -> bool {
    let sets = containers(pod, "containers")
        .chain(containers(pod, "initContainers"))
        .map(|c| &c["resources"])
        .chain(std::iter::once(&pod["spec"]["resources"]));
    !sets.into_iter().any(|resources| {
        ["requests", "limits"].iter().any(|field| {
            resources[*field]
                .as_object()
                .is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"))
        })
    })
}

fn is_terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0)
}

fn uses_cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = &pod["spec"]["affinity"];
    let cross = |term: &Value| {
        term["namespaces"].as_array().is_some_and(|n| !n.is_empty())
            || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = &affinity[*kind];
        let required = a["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .any(cross);
        let preferred = a["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| cross(&w["podAffinityTerm"]));
        required || preferred
    })
}

fn pod_matches_scope(scope: &ScopeRequirement, pod: &Value) -> bool {
    match scope.scope_name.as_str() {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(pod),
        "PriorityClass" => {
            let class = pod["spec"]["priorityClassName"]
                .as_str()
                .filter(|c| !c.is_empty());
            match scope.operator.as_str() {
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                "In" => class.is_some_and(|c| scope.values.iter().any(|v| v == c)),
                "NotIn" => !class.is_some_and(|c| scope.values.iter().any(|v| v == c)),
                _ => false,
            }
        }
        _ => false,
    }
}

fn service_usage(svc: &Value) -> ResourceList {
    let spec = &svc["spec"];
    let ports = spec["ports"].as_array().map_or(0, Vec::len);
    let mut node_ports = 0;
    let mut load_balancers = 0;
    match spec["type"].as_str() {
        Some("NodePort") => node_ports = ports,
        Some("LoadBalancer") => {
            load_balancers = 1;
            // Without allocation only explicitly requested node ports count.
            node_ports = if spec["allocateLoadBalancerNodePorts"] == false {
                spec["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["nodePort"].as_i64().is_some_and(|n| n != 0))
                    .count()
            } else {
                ports
            };
        }
        _ => {}
    }
    let count = |n: usize| Amount::from_int(i64::try_from(n).unwrap_or(i64::MAX));
    ResourceList::from([
        ("count/services".to_string(), Amount::from_int(1)),
        ("services".to_string(), Amount::from_int(1)),
        ("services.loadbalancers".to_string(), count(load_balancers)),
        ("services.nodeports".to_string(), count(node_ports)),
    ])
}

/// The claim's storage class: the beta annotation wins over the field.
fn storage_class(pvc: &Value) -> Option<&str> {
    pvc["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]
        .as_str()
        .or_else(|| pvc["spec"]["storageClassName"].as_str())
        .filter(|c| !c.is_empty())
}

fn pvc_usage(pvc: &Value) -> ResourceList {
    let mut usage = ResourceList::from([
        ("persistentvolumeclaims".to_string(), Amount::from_int(1)),
        (
            "count/persistentvolumeclaims".to_string(),
            Amount::from_int(1),
        ),
    ]);
    let class = storage_class(pvc);
    if let Some(class) = class {
        usage.insert(
            format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
            Amount::from_int(1),
        );
    }
    let requested = super::parse_list(&pvc["spec"]["resources"]["requests"])
        .get("storage")
        .map(|a| a.round_up());
    let allocated = super::parse_list(&pvc["status"]["allocatedResources"])
        .get("storage")
        .map(|a| a.round_up());
    // A resize in progress is charged the larger of asked and allocated.
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) if a > r => Some(a),
        (r, _) => r,
    };
    if let Some(storage) = storage {
        usage.insert("requests.storage".into(), storage);
        if let Some(class) = class {
            usage.insert(
                format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"),
                storage,
            );
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::super::{pretty_print, to_json};
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-01-01T00:00:00Z".parse().unwrap()
    }

    fn container(name: &str, requests: Value, limits: Value) -> Value {
        json!({"name": name, "resources": {"requests": requests, "limits": limits}})
    }

    #[test]
    fn pods_are_charged_requests_and_limits_while_running() {
        let pod = json!({"spec": {"containers": [
            container("a", json!({"cpu": "250m", "memory": "64Mi"}), json!({"cpu": "500m"})),
            container("b", json!({"cpu": "250m", "memory": "64Mi"}), json!({"cpu": "1"})),
        ]}, "status": {"phase": "Running"}});
        let usage = Evaluator::Pods.usage(&pod, now());
        assert_eq!(
            to_json(&usage),
            json!({"count/pods": "1", "cpu": "500m", "limits.cpu": "1500m", "memory": "128Mi",
                   "pods": "1", "requests.cpu": "500m", "requests.memory": "128Mi"})
        );
        let mut done = pod.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            pretty_print(&Evaluator::Pods.usage(&done, now())),
            "count/pods=1"
        );
    }

    #[test]
    fn pods_stuck_terminating_past_their_grace_are_not_charged() {
        let pod = |deadline: &str| {
            json!({"metadata": {"deletionTimestamp": deadline, "deletionGracePeriodSeconds": 30},
                   "spec": {"containers": [container("a", json!({"cpu": "1"}), json!({}))]}})
        };
        let usage = Evaluator::Pods.usage(&pod("2023-12-31T23:59:50Z"), now());
        assert!(usage.contains_key("requests.cpu"));
        let usage = Evaluator::Pods.usage(&pod("2023-12-31T23:00:00Z"), now());
        assert!(!usage.contains_key("pods"));
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_throughout() {
        let pod = json!({"spec": {
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "init", "resources": {"requests": {"cpu": "2"}}},
            ],
            "containers": [container("app", json!({"cpu": "1"}), json!({}))],
            "overhead": {"cpu": "50m"},
        }});
        // max(app 1 + side 100m, init 2 + side 100m) + overhead 50m
        assert_eq!(pod_requests(&pod)["cpu"].to_string(), "2150m");
    }

    #[test]
    fn extended_and_hugepage_requests_get_quota_names() {
        let pod = json!({"spec": {"containers": [container("a",
            json!({"example.com/gpu": "2", "hugepages-2Mi": "4Mi"}), json!({}))]}});
        let usage = Evaluator::Pods.usage(&pod, now());
        assert_eq!(usage["requests.example.com/gpu"], Amount::from_int(2));
        assert!(usage.contains_key("hugepages-2Mi"));
        assert!(usage.contains_key("requests.hugepages-2Mi"));
        assert_eq!(
            Evaluator::Pods.matching_resources([
                "requests.example.com/gpu",
                "limits.example.com/gpu",
                "requests.cpu",
                "services"
            ]),
            ["requests.example.com/gpu", "requests.cpu"]
        );
    }

    #[test]
    fn missing_requests_under_compute_quota_are_named_per_container() {
        let pod = json!({"spec": {"containers": [
            container("app", json!({"cpu": "1"}), json!({})),
            container("side", json!({}), json!({})),
        ]}});
        let required = vec![
            "requests.cpu".to_string(),
            "limits.memory".to_string(),
            "pods".to_string(),
        ];
        assert_eq!(
            Evaluator::Pods.constraints(&required, &pod).unwrap_err(),
            "must specify limits.memory for: app,side; requests.cpu for: side"
        );
        assert!(
            Evaluator::Pods
                .constraints(&["pods".to_string()], &pod)
                .is_ok()
        );
    }

    #[test]
    fn scopes_select_pods_by_deadline_qos_and_priority() {
        let best_effort =
            json!({"spec": {"containers": [{"name": "a"}], "priorityClassName": "high"}});
        let burstable = json!({"spec": {"activeDeadlineSeconds": 10,
            "containers": [container("a", json!({"cpu": "1"}), json!({}))]}});
        let quota = |scopes: Value, selector: Value| json!({"spec": {"scopes": scopes, "scopeSelector": {"matchExpressions": selector}}});
        let be = quota_scopes(&quota(json!(["BestEffort", "NotTerminating"]), json!([])));
        assert!(Evaluator::Pods.matches_scopes(&be, &best_effort));
        assert!(!Evaluator::Pods.matches_scopes(&be, &burstable));
        let high = quota_scopes(&quota(
            json!([]),
            json!([{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]),
        ));
        assert!(Evaluator::Pods.matches_scopes(&high, &best_effort));
        assert!(!Evaluator::Pods.matches_scopes(&high, &burstable));
        let terminating = quota_scopes(&quota(json!(["Terminating"]), json!([])));
        assert!(Evaluator::Pods.matches_scopes(&terminating, &burstable));
        let counts = Evaluator::for_resource("", "configmaps").unwrap();
        assert!(!counts.matches_scopes(&terminating, &json!({})));
        assert!(counts.matches_scopes(&[], &json!({})));
    }

    #[test]
    fn a_resize_is_charged_the_largest_of_asked_admitted_and_running() {
        let pod = |status: Value| {
            json!({"spec": {"containers": [
                    container("app", json!({"cpu": "500m"}), json!({"cpu": "1"}))]},
                   "status": status})
        };
        // Shrunk in the spec, still running large: the large figures count.
        let shrinking = pod(json!({"containerStatuses": [{"name": "app",
            "allocatedResources": {"cpu": "500m"},
            "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}}]}));
        let usage = Evaluator::Pods.usage(&shrinking, now());
        assert_eq!(usage["requests.cpu"].to_string(), "2");
        assert_eq!(usage["limits.cpu"].to_string(), "2");
        // Admitted larger than both spec and what runs: the admitted request.
        let admitted = pod(json!({"containerStatuses": [{"name": "app",
            "allocatedResources": {"cpu": "750m"}}]}));
        assert_eq!(
            Evaluator::Pods.usage(&admitted, now())["requests.cpu"].to_string(),
            "750m"
        );
        // An infeasible resize is charged what runs, not the spec.
        let infeasible = json!({"spec": {"containers": [
                container("app", json!({"cpu": "8"}), json!({"cpu": "8"}))]},
            "status": {"conditions": [{"type": "PodResizePending", "reason": "Infeasible"}],
                "containerStatuses": [{"name": "app", "allocatedResources": {"cpu": "1"},
                    "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}]}});
        let usage = Evaluator::Pods.usage(&infeasible, now());
        assert_eq!(usage["requests.cpu"].to_string(), "1");
        assert_eq!(usage["limits.cpu"].to_string(), "1");
        // Nothing reported yet: the spec.
        let usage = Evaluator::Pods.usage(&pod(json!({})), now());
        assert_eq!(usage["requests.cpu"].to_string(), "500m");
        assert_eq!(usage["limits.cpu"].to_string(), "1");
    }

    #[test]
    fn updates_are_charged_for_resizes_deadlines_claims_and_services() {
        let pod = json!({"spec": {"containers": [
            container("app", json!({"cpu": "1"}), json!({}))]}});
        let mut resized = pod.clone();
        resized["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("2");
        let mut relabelled = pod.clone();
        relabelled["metadata"] = json!({"labels": {"a": "b"}});
        relabelled["status"] = json!({"phase": "Running"});
        let mut deadline = pod.clone();
        deadline["spec"]["activeDeadlineSeconds"] = json!(30);
        assert!(Evaluator::Pods.charges_update(&pod, &resized));
        assert!(Evaluator::Pods.charges_update(&pod, &deadline));
        assert!(!Evaluator::Pods.charges_update(&pod, &relabelled));
        assert!(Evaluator::Services.charges_update(&json!({}), &json!({})));
        assert!(Evaluator::PersistentVolumeClaims.charges_update(&json!({}), &json!({})));
        let secrets = Evaluator::for_resource("", "secrets").unwrap();
        assert!(!secrets.charges_update(&json!({}), &json!({"data": {}})));
    }

    #[test]
    fn quotas_apply_by_their_status_hard() {
        let quota =
            json!({"spec": {"hard": {"pods": "1"}}, "status": {"hard": {"configmaps": "1"}}});
        assert!(!Evaluator::Pods.matches(&quota, &json!({})));
        let cm = Evaluator::for_resource("", "configmaps").unwrap();
        assert!(cm.matches(&quota, &json!({})));
    }

    #[test]
    fn services_count_load_balancers_and_node_ports() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            pretty_print(&Evaluator::Services.usage(&svc, now())),
            "count/services=1,services=1,services.loadbalancers=1,services.nodeports=2"
        );
        let svc = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]}});
        assert_eq!(
            Evaluator::Services.usage(&svc, now())["services.nodeports"],
            Amount::from_int(1)
        );
        let cluster_ip = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(Evaluator::Services.usage(&cluster_ip, now())["services.nodeports"].is_zero());
    }

    #[test]
    fn claims_are_charged_storage_per_class() {
        let pvc = json!({"spec": {"storageClassName": "gold",
            "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"allocatedResources": {"storage": "2Gi"}}});
        let usage = Evaluator::PersistentVolumeClaims.usage(&pvc, now());
        assert_eq!(
            pretty_print(&usage),
            "count/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/persistentvolumeclaims=1,\
gold.storageclass.storage.k8s.io/requests.storage=2Gi,persistentvolumeclaims=1,requests.storage=2Gi"
        );
        assert_eq!(
            Evaluator::PersistentVolumeClaims.matching_resources([
                "bronze.storageclass.storage.k8s.io/requests.storage",
                "requests.storage",
                "pods"
            ]),
            [
                "bronze.storageclass.storage.k8s.io/requests.storage",
                "requests.storage"
            ]
        );
    }

    #[test]
    fn other_types_are_counted_under_count_and_legacy_names() {
        let secrets = Evaluator::for_resource("", "secrets").unwrap();
        assert_eq!(
            pretty_print(&secrets.usage(&json!({}), now())),
            "count/secrets=1,secrets=1"
        );
        let deployments = Evaluator::for_resource("apps", "deployments").unwrap();
        assert_eq!(
            deployments.matching_resources(["count/deployments.apps", "count/deployments"]),
            ["count/deployments.apps"]
        );
        assert!(Evaluator::for_resource("", "events").is_none());
    }
}
