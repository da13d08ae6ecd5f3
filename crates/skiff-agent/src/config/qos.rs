//! A pod's QoS class, by upstream's rules: Guaranteed when every container
//! has CPU and memory limits equal to its requests, BestEffort when none has
//! any request or limit, Burstable otherwise. Init containers count.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
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
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

const COMPUTE: [&str; 2] = ["cpu", "memory"];

fn parsed(map: Option<&BTreeMap<String, ApiQuantity>>, resource: &str) -> Option<Quantity> {
    map.and_then(|m| m.get(resource))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .filter(|q| !q.is_zero())
}

/// The pod's QoS class (what `status.qosClass` reports).
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any_set = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = container.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        for resource in COMPUTE {
            let request = parsed(requests, resource);
            let limit = parsed(limits, resource);
            any_set |= request.is_some() || limit.is_some();
            match (request, limit) {
                // A request defaults to the limit.
                (None, Some(_)) => {}
                (Some(request), Some(limit)) if request == limit => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any_set, guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}
