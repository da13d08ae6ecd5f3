//! A container's cgroup settings from its requests and limits, by upstream's
//! rules (`cm/helpers_linux.go`, `kuberuntime_container_linux.go`,
//! `qos/policy.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use skiff_api::quantity::Quantity;
use skiff_cri::v1::LinuxContainerResources;

use super::ConfigError;
use super::qos::{QosClass, qos_class};

/// CFS period, as upstream's kubelet sets it (100 ms).
const CPU_PERIOD_US: i64 = 100_000;
/// Smallest CFS quota upstream sets (1 ms).
const MIN_QUOTA_US: i64 = 1000;
/// Smallest CPU shares value the kernel accepts.
const MIN_SHARES: i64 = 2;
/// Largest CPU shares value the kernel accepts.
const MAX_SHARES: i64 = 262_144;
/// Shares of one whole CPU.
const SHARES_PER_CPU: i64 = 1024;
/// Upstream's OOM score adjustment of Guaranteed and node-critical pods.
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// Upstream's OOM score adjustment of BestEffort pods.
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Priority from which a pod is critical (upstream's `SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// CPU shares for a CPU request in millicores, as upstream computes them:
/// 1024 per CPU, within the kernel's `[2, 262144]`.
pub fn milli_cpu_to_shares(millis: i64) -> i64 {
    if millis <= 0 {
        return MIN_SHARES;
    }
    (millis.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// The CFS quota (µs per 100 ms period) for a CPU limit in millicores; 0
/// (no quota) without a limit, at least 1 ms with one.
pub fn milli_cpu_to_quota(millis: i64) -> i64 {
    if millis <= 0 {
        return 0;
    }
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US)
}

/// The amount of `resource` in `map`, if set and valid.
fn quantity(
    map: Option<&BTreeMap<String, ApiQuantity>>,
    resource: &str,
) -> Result<Option<Quantity>, ConfigError> {
    map.and_then(|m| m.get(resource))
        .map(|q| {
            Quantity::parse(&q.0).map_err(|_| ConfigError::InvalidQuantity {
                resource: resource.to_string(),
                value: q.0.clone(),
            })
        })
        .transpose()
}

/// The container's memory request in bytes (its limit when it sets no
/// request, as API defaulting does); 0 without either.
fn memory_request(container: &Container) -> i64 {
    let resources = container.resources.as_ref();
    let get = |map: Option<&BTreeMap<String, ApiQuantity>>| {
        quantity(map, "memory").ok().flatten().map(|q| q.value())
    };
    get(resources.and_then(|r| r.requests.as_ref()))
        .or_else(|| get(resources.and_then(|r| r.limits.as_ref())))
        .unwrap_or(0)
}

/// Whether upstream counts the pod as node-critical: a critical priority and
/// the `system-node-critical` class.
fn node_critical(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical")
        && spec.and_then(|s| s.priority).unwrap_or(0) >= SYSTEM_CRITICAL_PRIORITY
}

/// The container's `oom_score_adj`, upstream's policy clamped at 0.
///
/// Upstream gives Guaranteed and node-critical pods -997, BestEffort 1000,
/// and Burstable containers `1000 - 1000 * memory request / node memory`
/// within `[3, 999]` (a sidecar no higher than the pod's smallest regular
/// container). Lowering a score below 0 needs `CAP_SYS_RESOURCE`, which the
/// agent does not have (containerd runs with `restrict_oom_score_adj`), so the
/// negative case becomes 0: those pods still rank below every other.
pub fn oom_score_adj(pod: &Pod, container: &Container, memory_capacity_bytes: u64) -> i64 {
    if node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ.max(0);
    }
    match qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ.max(0),
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let capacity = i128::from(memory_capacity_bytes.max(1));
    let score = |request: i64| 1000 - 1000 * i128::from(request) / capacity;
    let mut adj = score(memory_request(container));
    let spec = pod.spec.as_ref();
    let sidecar = container.restart_policy.as_deref() == Some("Always")
        && spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|inits| inits.iter().any(|c| c.name == container.name));
    if sidecar {
        let smallest = spec
            .and_then(|s| s.containers.iter().map(memory_request).min())
            .unwrap_or(0);
        adj = adj.min(score(smallest));
    }
    let floor = 1000 + i128::from(GUARANTEED_OOM_SCORE_ADJ);
    let adj = if adj < floor {
        floor
    } else if adj == i128::from(BEST_EFFORT_OOM_SCORE_ADJ) {
        adj - 1
    } else {
        adj
    };
    i64::try_from(adj).unwrap_or(BEST_EFFORT_OOM_SCORE_ADJ - 1)
}

/// The container's Linux resources: shares from the CPU request (the limit
/// when there is no request), the CFS quota from the CPU limit over upstream's
/// 100 ms period, the memory limit, and the OOM score adjustment.
///
/// The OOM score of a Burstable container depends on the node's memory
/// (`memory_capacity_bytes`). Without it, the container's memory limit stands
/// in (the most it can use), and without a limit the score is 999.
pub fn linux_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity_bytes: Option<u64>,
) -> Result<LinuxContainerResources, ConfigError> {
    let resources = container.resources.clone().unwrap_or_default();
    let requests = resources.requests.as_ref();
    let limits = resources.limits.as_ref();
    let cpu_limit = quantity(limits, "cpu")?.map_or(0, |q| q.milli_value());
    let cpu_request = quantity(requests, "cpu")?.map_or(0, |q| q.milli_value());
    let memory_limit = quantity(limits, "memory")?.map_or(0, |q| q.value());
    let capacity = memory_capacity_bytes.unwrap_or(match u64::try_from(memory_limit) {
        Ok(limit) if limit > 0 => limit,
        _ => u64::MAX,
    });
    let shares_from = if cpu_request == 0 && cpu_limit != 0 {
        cpu_limit
    } else {
        cpu_request
    };
    Ok(LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(shares_from),
        cpu_period: CPU_PERIOD_US,
        cpu_quota: milli_cpu_to_quota(cpu_limit),
        memory_limit_in_bytes: memory_limit.max(0),
        oom_score_adj: oom_score_adj(pod, container, capacity),
        ..LinuxContainerResources::default()
    })
}
