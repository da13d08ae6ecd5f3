//! What a pod asks for and what a node offers, as integers the filters and
//! scores can add up.
//!
//! A pod's request is computed once, when the pod enters the scheduler's
//! caches, and then only added to or subtracted from a node's totals, so a
//! node's `requested` never needs a walk over its pods.
//!
//! The rule for a pod is upstream's (`PodRequests` in component-helpers):
//! app containers and native sidecars (init containers with
//! `restartPolicy: Always`) run together and are summed; a regular init
//! container runs alone beside the sidecars started before it; the pod needs
//! the larger of the two, plus its `overhead`. Pod-level `spec.resources`
//! requests, where set, replace the container aggregate for that resource.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity::Quantity as ExactQuantity;

/// CPU assumed for a container that requests none, for scoring only (upstream's
/// `DefaultMilliCPURequest`), so that best-effort pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;

/// Memory assumed for a container that requests none, for scoring only
/// (upstream's `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Node `allocatable.pods` when the node does not say (the kubelet default).
pub const DEFAULT_ALLOWED_PODS: i64 = 110;

/// A set of resource amounts: CPU in millicores, memory and ephemeral storage
/// in bytes, and any other (extended, hugepages) resource in its units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...) by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parses a `ResourceList`. Unparseable quantities count as zero: the API
    /// server validated them, and a scheduler must not stop on one odd value.
    /// `pods` is not a request and is skipped.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            let Some(q) = parse(name, q) else { continue };
            match name.as_str() {
                "cpu" => r.milli_cpu = r.milli_cpu.saturating_add(q.milli_value()),
                "memory" => r.memory = r.memory.saturating_add(q.value()),
                "ephemeral-storage" => {
                    r.ephemeral_storage = r.ephemeral_storage.saturating_add(q.value())
                }
                "pods" => {}
                other => {
                    let slot = r.scalar.entry(other.to_string()).or_default();
                    *slot = slot.saturating_add(q.value());
                }
            }
        }
        r
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let slot = self.scalar.entry(name.clone()).or_default();
            *slot = slot.saturating_add(*v);
        }
    }

    /// Subtracts `other` from `self` (used when a pod leaves a node).
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let slot = self.scalar.entry(name.clone()).or_default();
            *slot = slot.saturating_sub(*v);
            if *slot == 0 {
                self.scalar.remove(name);
            }
        }
    }

    /// Raises each amount of `self` to at least that of `other`.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let slot = self.scalar.entry(name.clone()).or_default();
            *slot = (*slot).max(*v);
        }
    }

    /// The amount of a scalar resource, zero when absent.
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

fn parse(name: &str, q: &Quantity) -> Option<ExactQuantity> {
    match ExactQuantity::parse(&q.0) {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::debug!(resource = name, quantity = %q.0, error = %e, "ignoring unparseable quantity");
            None
        }
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A container's requests; with `non_zero`, CPU and memory that are not
/// mentioned at all take the scoring defaults (an explicit `0` stays zero, as
/// upstream).
fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let empty = BTreeMap::new();
    let list = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .unwrap_or(&empty);
    let mut r = Resources::from_list(list);
    if non_zero {
        if !list.contains_key("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !list.contains_key("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn aggregate(spec: &PodSpec, non_zero: bool) -> Resources {
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c, non_zero);
        let during = if is_sidecar(c) {
            total.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut during = own;
            during.add(&sidecars);
            during
        };
        init_peak.max_with(&during);
    }
    total.max_with(&init_peak);

    // Pod-level requests win for the resources they name (cpu and memory are
    // the ones the API allows there).
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let parsed = Resources::from_list(pod_level);
        if pod_level.contains_key("cpu") {
            total.milli_cpu = parsed.milli_cpu;
        }
        if pod_level.contains_key("memory") {
            total.memory = parsed.memory;
        }
    }
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::from_list(overhead));
    }
    total
}

/// What a pod reserves on its node: the amount the fit filter checks.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    aggregate(spec, false)
}

/// A pod's requests with the per-container CPU and memory defaults filled in:
/// what the least-allocated score counts, so that pods without requests are
/// not free.
pub fn pod_non_zero_requests(spec: &PodSpec) -> Resources {
    aggregate(spec, true)
}

/// A node's `status.allocatable` and how many pods it may hold.
pub fn node_allocatable(node: &Node) -> (Resources, i64) {
    let empty = BTreeMap::new();
    let list = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .unwrap_or(&empty);
    let pods = match list.get("pods").and_then(|q| parse("pods", q)) {
        Some(q) => q.value(),
        None => DEFAULT_ALLOWED_PODS,
    };
    (Resources::from_list(list), pods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    fn container(requests: &[(&str, &str)], sidecar: bool) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: (!requests.is_empty()).then(|| list(requests)),
                ..Default::default()
            }),
            restart_policy: sidecar.then(|| "Always".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn parses_units() {
        let r = Resources::from_list(&list(&[
            ("cpu", "1500m"),
            ("memory", "1Gi"),
            ("ephemeral-storage", "2G"),
            ("example.com/gpu", "2"),
            ("pods", "10"),
        ]));
        assert_eq!(r.milli_cpu, 1500);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.ephemeral_storage, 2_000_000_000);
        assert_eq!(r.scalar("example.com/gpu"), 2);
        assert_eq!(r.scalar("pods"), 0);
    }

    #[test]
    fn bad_quantity_counts_as_zero() {
        let r = Resources::from_list(&list(&[("cpu", "lots"), ("memory", "1Ki")]));
        assert_eq!(r.milli_cpu, 0);
        assert_eq!(r.memory, 1024);
    }

    #[test]
    fn app_containers_sum_and_init_containers_peak() {
        let spec = PodSpec {
            containers: vec![
                container(&[("cpu", "100m"), ("memory", "100Mi")], false),
                container(&[("cpu", "200m")], false),
            ],
            init_containers: Some(vec![
                container(&[("cpu", "500m")], false),
                container(&[("memory", "50Mi")], false),
            ]),
            ..Default::default()
        };
        let r = pod_requests(&spec);
        assert_eq!(
            r.milli_cpu, 500,
            "the init container's 500m beats the 300m sum"
        );
        assert_eq!(r.memory, 100 << 20);
    }

    #[test]
    fn sidecars_add_to_the_app_and_to_later_init_containers() {
        // Upstream's worked example: sidecar 1 CPU, then an init container of
        // 2 CPU runs beside it (3), app containers 1 CPU run beside the
        // sidecar (2). Peak 3.
        let spec = PodSpec {
            containers: vec![container(&[("cpu", "1")], false)],
            init_containers: Some(vec![
                container(&[("cpu", "1")], true),
                container(&[("cpu", "2")], false),
            ]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).milli_cpu, 3000);

        // An init container *before* the sidecar does not overlap it.
        let spec = PodSpec {
            containers: vec![container(&[("cpu", "1")], false)],
            init_containers: Some(vec![
                container(&[("cpu", "2")], false),
                container(&[("cpu", "1")], true),
            ]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).milli_cpu, 2000);
    }

    #[test]
    fn overhead_and_pod_level_requests() {
        let spec = PodSpec {
            containers: vec![container(&[("cpu", "100m"), ("memory", "10Mi")], false)],
            overhead: Some(list(&[("cpu", "50m")])),
            resources: Some(ResourceRequirements {
                requests: Some(list(&[("memory", "1Gi")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&spec);
        assert_eq!(r.milli_cpu, 150);
        assert_eq!(r.memory, 1 << 30);
    }

    #[test]
    fn non_zero_defaults_apply_per_container_only_when_unset() {
        let spec = PodSpec {
            containers: vec![
                container(&[], false),
                container(&[("cpu", "0"), ("memory", "1Mi")], false),
            ],
            ..Default::default()
        };
        let r = pod_non_zero_requests(&spec);
        assert_eq!(r.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.memory, DEFAULT_MEMORY_REQUEST + (1 << 20));
        assert_eq!(pod_requests(&spec).milli_cpu, 0);
    }

    #[test]
    fn add_and_sub_round_trip() {
        let mut total = Resources::default();
        let a = Resources::from_list(&list(&[("cpu", "1"), ("example.com/gpu", "1")]));
        total.add(&a);
        total.add(&a);
        total.sub(&a);
        assert_eq!(total, a);
        total.sub(&a);
        assert_eq!(total, Resources::default());
    }

    #[test]
    fn node_allocatable_defaults_pods() {
        let node = Node::default();
        let (r, pods) = node_allocatable(&node);
        assert_eq!(r, Resources::default());
        assert_eq!(pods, DEFAULT_ALLOWED_PODS);
    }
}
