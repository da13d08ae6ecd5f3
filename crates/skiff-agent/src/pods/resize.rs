//! In-place pod resize on the node: upstream's allocation manager and
//! resize actuation, without their checkpoint.
//!
//! A resize arrives as a change of `spec.containers[*].resources` (through
//! the API server's `pods/resize`). The agent first decides whether the node
//! can take it ([`admit`]): a pod asking for more than the node's allocatable
//! is `Infeasible`, one that fits only once other pods leave is `Deferred`;
//! either is reported as the `PodResizePending` condition and nothing is
//! changed. An admitted resize becomes the pod's allocation, reported as
//! `allocatedResources`, and is actuated container by container
//! ([`decide`]): the cgroup values the runtime reports are compared with the
//! ones the spec asks for, and a difference is applied in place through CRI
//! `UpdateContainerResources`, or by restarting the container when its
//! `resizePolicy` says `RestartContainer` for a resource that changed. Until
//! the runtime reports the new values the pod has `PodResizeInProgress`.
//!
//! The record of what was admitted is the pod's own status
//! (`allocatedResources`), the record of what is applied is the runtime's:
//! a restarted agent picks a resize up where it was.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Pod, PodCondition, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_api::quantity::Quantity;
use skiff_cri::v1::LinuxContainerResources;

use super::runtime::PodRuntime;
use super::status::is_sidecar;
use crate::config::milli_cpu_to_shares;
use crate::downward::NodeAllocatable;

/// The condition of a resize the node has not admitted.
pub const POD_RESIZE_PENDING: &str = "PodResizePending";
/// The condition of an admitted resize not yet applied.
pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
/// Smallest CPU shares value; a container without a cpu request gets it.
const MIN_SHARES: i64 = 2;

/// The cgroup values of one container that a resize changes, as CRI
/// reports and sets them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupResources {
    /// `cpu.shares`, from the cpu request.
    pub cpu_shares: i64,
    /// CFS quota in µs per period, from the cpu limit; 0 without one.
    pub cpu_quota: i64,
    /// CFS period in µs.
    pub cpu_period: i64,
    /// Memory limit in bytes; 0 without one.
    pub memory_limit: i64,
}

impl From<&LinuxContainerResources> for CgroupResources {
    fn from(r: &LinuxContainerResources) -> Self {
        Self {
            cpu_shares: r.cpu_shares,
            cpu_quota: r.cpu_quota,
            cpu_period: r.cpu_period,
            memory_limit: r.memory_limit_in_bytes,
        }
    }
}

impl CgroupResources {
    fn cpu_differs(&self, other: &Self) -> bool {
        self.cpu_shares != other.cpu_shares
            || self.cpu_quota != other.cpu_quota
            // A runtime that does not report the period keeps its default.
            || (self.cpu_period != 0 && other.cpu_period != 0 && self.cpu_period != other.cpu_period)
    }

    fn memory_differs(&self, other: &Self) -> bool {
        self.memory_limit != other.memory_limit
    }
}

/// What to do with one running container.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// It runs with what its spec asks.
    Keep,
    /// Apply these resources in place.
    Update(LinuxContainerResources),
    /// A resource whose `resizePolicy` is `RestartContainer` changed.
    Restart,
}

/// The restart policy of `resource` (`cpu`, `memory`) in the container's
/// `resizePolicy`; `NotRequired` when unset.
fn restart_policy<'a>(container: &'a Container, resource: &str) -> &'a str {
    container
        .resize_policy
        .iter()
        .flatten()
        .find(|p| p.resource_name == resource)
        .map_or("NotRequired", |p| p.restart_policy.as_str())
}

/// What a running container needs so that its cgroups match `desired` (from
/// its spec): nothing, an in-place update, or a restart. Without `applied`
/// values from the runtime nothing can be compared, and nothing is done.
pub fn decide(
    container: &Container,
    desired: &LinuxContainerResources,
    applied: Option<&CgroupResources>,
) -> Action {
    let Some(applied) = applied else {
        return Action::Keep;
    };
    let wanted = CgroupResources::from(desired);
    let cpu = wanted.cpu_differs(applied);
    let memory = wanted.memory_differs(applied);
    if !cpu && !memory {
        return Action::Keep;
    }
    let restart = (cpu && restart_policy(container, "cpu") == "RestartContainer")
        || (memory && restart_policy(container, "memory") == "RestartContainer");
    if restart {
        return Action::Restart;
    }
    Action::Update(LinuxContainerResources {
        cpu_shares: wanted.cpu_shares,
        cpu_quota: wanted.cpu_quota,
        cpu_period: wanted.cpu_period,
        memory_limit_in_bytes: wanted.memory_limit,
        ..desired.clone()
    })
}

/// Why the node does not take a resize now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// `Infeasible` or `Deferred`.
    pub reason: &'static str,
    /// Upstream's message, naming the resource and the amounts.
    pub message: String,
}

/// Cpu (millicores) and memory (bytes) requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
}

impl std::ops::Add for Requests {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }
}

impl Requests {
    fn max(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }

    fn of(list: Option<&BTreeMap<String, ApiQuantity>>) -> Self {
        let amount = |name: &str, scale: fn(&Quantity) -> i64| {
            list.and_then(|l| l.get(name))
                .and_then(|q| Quantity::parse(&q.0).ok())
                .map_or(0, |q| scale(&q))
        };
        Self {
            cpu: amount("cpu", Quantity::milli_value),
            memory: amount("memory", Quantity::value),
        }
    }
}

/// Whether the node takes a pod asking for `wanted`, with `others` requested
/// by the other pods on it (upstream checks memory before cpu).
pub fn admit(wanted: Requests, others: Requests, node: &NodeAllocatable) -> Result<(), Pending> {
    let capacity = Requests {
        cpu: i64::try_from(node.cpu_millis).unwrap_or(i64::MAX),
        memory: i64::try_from(node.memory_bytes).unwrap_or(i64::MAX),
    };
    let over = |pick: fn(&Requests) -> i64| pick(&wanted) > pick(&capacity);
    if over(|r| r.memory) || over(|r| r.cpu) {
        let (name, requested, cap) = if over(|r| r.memory) {
            ("memory", wanted.memory, capacity.memory)
        } else {
            ("cpu", wanted.cpu, capacity.cpu)
        };
        return Err(Pending {
            reason: "Infeasible",
            message: format!(
                "Node didn't have enough capacity: {name}, requested: {requested}, capacity: {cap}"
            ),
        });
    }
    let total = wanted + others;
    for (name, requested, used, cap) in [
        ("memory", wanted.memory, others.memory, capacity.memory),
        ("cpu", wanted.cpu, others.cpu, capacity.cpu),
    ] {
        let sum = if name == "cpu" {
            total.cpu
        } else {
            total.memory
        };
        if sum > cap {
            return Err(Pending {
                reason: "Deferred",
                message: format!(
                    "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {cap}"
                ),
            });
        }
    }
    Ok(())
}

/// The requests the pod is allocated per container name: what its status
/// reports as `allocatedResources`, or its spec before the first report.
fn allocated(pod: &Pod) -> BTreeMap<String, BTreeMap<String, ApiQuantity>> {
    let status = pod.status.as_ref();
    let reported = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|s| Some((s.name.clone(), s.allocated_resources.clone()?)));
    let mut out: BTreeMap<_, _> = spec_requests(pod).collect();
    out.extend(reported);
    out
}

fn spec_requests(pod: &Pod) -> impl Iterator<Item = (String, BTreeMap<String, ApiQuantity>)> + '_ {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| {
            let requests = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .unwrap_or_default();
            (c.name.clone(), requests)
        })
}

/// The pod's effective requests (upstream's `GetResourceRequest`): its app
/// containers and sidecars together, or its largest regular init container
/// (with the sidecars started before it) if that is more.
fn pod_requests(pod: &Pod, requests: &BTreeMap<String, BTreeMap<String, ApiQuantity>>) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::default();
    };
    let of = |c: &Container| Requests::of(requests.get(&c.name));
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            sidecars = sidecars + of(c);
        } else {
            init_peak = init_peak.max(of(c) + sidecars);
        }
    }
    let running = spec.containers.iter().fold(sidecars, |sum, c| sum + of(c));
    running.max(init_peak)
}

/// Whether a pod still holds its allocation on the node.
fn is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The resize state of `pod` on a node with `node` allocatable and `others`
/// (the other pods bound to it): `Ok` when what the spec asks is (now) the
/// allocation, the reason otherwise.
pub fn admission(pod: &Pod, others: &[&Pod], node: &NodeAllocatable) -> Result<(), Pending> {
    let current = allocated(pod);
    let wanted: BTreeMap<_, _> = spec_requests(pod).collect();
    let same = wanted.iter().all(|(name, list)| {
        current
            .get(name)
            .is_some_and(|a| Requests::of(Some(a)) == Requests::of(Some(list)))
    });
    if same {
        return Ok(());
    }
    let used = others
        .iter()
        .filter(|p| p.metadata.uid != pod.metadata.uid && is_active(p))
        .fold(Requests::default(), |sum, p| {
            sum + pod_requests(p, &allocated(p))
        });
    admit(pod_requests(pod, &wanted), used, node)
}

/// What the worker saw of a resize in its last sync, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResizeState {
    /// The node did not take the resize.
    pub pending: Option<Pending>,
    /// Containers whose applied resources differ from their spec.
    pub in_progress: bool,
    /// The runtime refused an update, with its message.
    pub error: Option<String>,
}

/// The amount `name` in `list`, as text.
fn amount<'a>(
    list: Option<&'a BTreeMap<String, ApiQuantity>>,
    name: &str,
) -> Option<&'a ApiQuantity> {
    list.and_then(|l| l.get(name))
}

/// A container's resources as its cgroups have them (upstream reports these
/// in `containerStatuses[].resources`): the spec's amounts where the
/// cgroups match what the spec asks, amounts derived from the cgroups where
/// they do not (a resize not yet applied), and the allocated memory request,
/// which no cgroup value shows.
fn actual_resources(
    container: &Container,
    desired: &CgroupResources,
    applied: &CgroupResources,
    allocated: &BTreeMap<String, ApiQuantity>,
) -> ResourceRequirements {
    let spec = container.resources.clone().unwrap_or_default();
    let mut limits = spec.limits.clone().unwrap_or_default();
    let mut requests = spec.requests.clone().unwrap_or_default();
    for (name, q) in allocated {
        requests.insert(name.clone(), q.clone());
    }
    if applied.cpu_quota != desired.cpu_quota || applied.cpu_period != desired.cpu_period {
        if applied.cpu_quota > 0 && applied.cpu_period > 0 {
            let millis = applied.cpu_quota * 1000 / applied.cpu_period;
            limits.insert("cpu".into(), ApiQuantity(format!("{millis}m")));
        } else {
            limits.remove("cpu");
        }
    }
    let allocated_cpu = amount(Some(allocated), "cpu")
        .and_then(|q| Quantity::parse(&q.0).ok())
        .map(|q| q.milli_value());
    if applied.cpu_shares != desired.cpu_shares {
        match allocated_cpu {
            // The shares of the allocated request: report it as written.
            Some(millis) if milli_cpu_to_shares(millis) == applied.cpu_shares => {}
            None if applied.cpu_shares <= MIN_SHARES => {
                requests.remove("cpu");
            }
            _ => {
                let millis = (applied.cpu_shares * 1000 + 1023) / 1024;
                requests.insert("cpu".into(), ApiQuantity(format!("{millis}m")));
            }
        }
    }
    if applied.memory_limit != desired.memory_limit {
        if applied.memory_limit > 0 {
            limits.insert(
                "memory".into(),
                ApiQuantity(applied.memory_limit.to_string()),
            );
        } else {
            limits.remove("memory");
        }
    }
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        claims: None,
    }
}

/// Fills in what the status says about resizes: each container's
/// `allocatedResources` and (running ones) `resources`, the
/// `PodResizePending` and `PodResizeInProgress` conditions, and the
/// generation the status was computed for (`observedGeneration`).
///
/// `desired` gives a container's cgroup values as its spec asks them.
pub fn report(
    status: &mut PodStatus,
    pod: &Pod,
    runtime: &PodRuntime,
    state: &ResizeState,
    desired: &dyn Fn(&Container) -> Option<CgroupResources>,
    now: jiff::Timestamp,
) {
    let generation = pod.metadata.generation;
    let allocation = if state.pending.is_some() {
        allocated(pod)
    } else {
        spec_requests(pod).collect()
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let fill = |statuses: &mut Option<Vec<ContainerStatus>>, containers: &[Container]| {
        for cs in statuses.iter_mut().flatten() {
            let Some(container) = containers.iter().find(|c| c.name == cs.name) else {
                continue;
            };
            let allocated = allocation.get(&cs.name).cloned().unwrap_or_default();
            cs.allocated_resources = (!allocated.is_empty()).then(|| allocated.clone());
            let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
            let record = runtime.latest_anywhere(&cs.name).filter(|r| r.running());
            cs.resources = match (
                running,
                record.and_then(|r| r.resources),
                desired(container),
            ) {
                (false, _, _) => None,
                (true, Some(applied), Some(wanted)) => {
                    Some(actual_resources(container, &wanted, &applied, &allocated))
                }
                // The runtime does not say: what was allocated.
                (true, _, _) => Some(ResourceRequirements {
                    requests: cs.allocated_resources.clone(),
                    limits: container.resources.as_ref().and_then(|r| r.limits.clone()),
                    claims: None,
                }),
            };
        }
    };
    fill(&mut status.container_statuses, &spec.containers);
    fill(
        &mut status.init_container_statuses,
        spec.init_containers.as_deref().unwrap_or_default(),
    );

    let old: Vec<PodCondition> = status.conditions.clone().unwrap_or_default();
    let transition = |type_: &str, reason: Option<&str>| {
        old.iter()
            .find(|c| c.type_ == type_ && c.status == "True" && c.reason.as_deref() == reason)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now))
    };
    let condition =
        |type_: &str, reason: Option<&'static str>, message: Option<String>| PodCondition {
            type_: type_.to_string(),
            status: "True".into(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: Some(transition(type_, reason)),
            last_probe_time: Some(Time(now)),
            observed_generation: generation,
        };
    let mut conditions: Vec<PodCondition> = old
        .iter()
        .filter(|c| c.type_ != POD_RESIZE_PENDING && c.type_ != POD_RESIZE_IN_PROGRESS)
        .cloned()
        .collect();
    if let Some(pending) = &state.pending {
        conditions.push(condition(
            POD_RESIZE_PENDING,
            Some(pending.reason),
            Some(pending.message.clone()),
        ));
    }
    if let Some(error) = &state.error {
        conditions.push(condition(
            POD_RESIZE_IN_PROGRESS,
            Some("Error"),
            Some(error.clone()),
        ));
    } else if state.in_progress {
        conditions.push(condition(POD_RESIZE_IN_PROGRESS, None, None));
    }
    status.conditions = Some(conditions);
    if generation.is_some() {
        status.observed_generation = generation;
    }
}

#[cfg(test)]
mod tests;
