//! A pod's QoS class, by upstream's rules (`v1/helper/qos.ComputePodQOS`).
//!
//! Only positive CPU and memory amounts count. Requests and limits are summed
//! over app and init containers (or taken from `spec.resources` when the pod
//! sets pod-level resources). No amount at all is BestEffort. Guaranteed
//! needs every container to limit both CPU and memory, and the summed
//! requests to equal the summed limits. Anything else is Burstable. A request
//! a container leaves out defaults to its limit, as API defaulting would have
//! made it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use skiff_api::quantity::Quantity;

/// The three QoS classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Limits equal requests for CPU and memory in every container.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The API spelling (`status.qosClass`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

const COMPUTE: [&str; 2] = ["cpu", "memory"];

/// A positive amount of `resource` in `map`, in thousandths (exact enough to
/// compare sums; a quantity that does not parse counts as absent, as the API
/// would have rejected it).
fn amount(map: Option<&BTreeMap<String, ApiQuantity>>, resource: &str) -> Option<i128> {
    map.and_then(|m| m.get(resource))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .map(|q| i128::from(q.milli_value()))
        .filter(|v| *v > 0)
}

/// Summed requests and limits, and whether every part limited both CPU
/// and memory.
#[derive(Default)]
struct Totals {
    requests: BTreeMap<&'static str, i128>,
    limits: BTreeMap<&'static str, i128>,
    all_limited: bool,
}

impl Totals {
    fn add(&mut self, resources: Option<&ResourceRequirements>) {
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        for resource in COMPUTE {
            let limit = amount(limits, resource);
            if let Some(request) = amount(requests, resource).or(limit) {
                *self.requests.entry(resource).or_default() += request;
            }
            match limit {
                Some(limit) => *self.limits.entry(resource).or_default() += limit,
                None => self.all_limited = false,
            }
        }
    }

    fn class(&self) -> QosClass {
        if self.requests.is_empty() && self.limits.is_empty() {
            QosClass::BestEffort
        } else if self.all_limited && self.requests == self.limits {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        }
    }
}

/// The pod's QoS class (what `status.qosClass` reports, and what picks the
/// pod's cgroup and its containers' OOM score).
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let mut totals = Totals {
        all_limited: true,
        ..Totals::default()
    };
    let pod_level = spec.resources.as_ref().filter(|r| {
        COMPUTE.iter().any(|res| {
            amount(r.requests.as_ref(), res).is_some() || amount(r.limits.as_ref(), res).is_some()
        })
    });
    match pod_level {
        Some(resources) => totals.add(Some(resources)),
        None => {
            for container in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                totals.add(container.resources.as_ref());
            }
        }
    }
    totals.class()
}
