//! Which Services a pod change concerns.
//!
//! A pod event must wake every Service that selects the pod now and every
//! one that selected it before (its labels may have just changed), but the
//! informer's change feed carries only the new state. So the tracker keeps,
//! per pod, its labels and a fingerprint of the fields endpoints are made
//! of. That also filters the bulk of pod updates (container statuses,
//! annotations, conditions other than Ready) that leave endpoints as they
//! are: with 30k pods these are most of the traffic, and each would
//! otherwise recompute a whole Service. Matching selectors looks only at the
//! Services of the pod's namespace.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::endpoint::{is_terminal, managed_selector, pod_ips, selects};
use crate::informer::Informer;
use crate::pods;

type Labels = BTreeMap<String, String>;

/// What was last seen of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    labels: Labels,
    fingerprint: u64,
}

/// The last seen labels and endpoint fingerprint of every pod.
#[derive(Debug, Default)]
pub(crate) struct PodTracker {
    seen: HashMap<(String, String), Seen>,
}

impl PodTracker {
    /// Records a change of `event`'s pod, whose cached state is now
    /// `current` (`None` once deleted), and returns the label sets whose
    /// selecting Services must sync: none when nothing that endpoints show
    /// changed.
    pub(crate) fn observe(&mut self, event: &Pod, current: Option<&Pod>) -> Vec<Labels> {
        let key = (event.namespace().unwrap_or_default(), event.name_any());
        let mut sets = Vec::new();
        match current {
            None => {
                sets.push(event.labels().clone());
                if let Some(previous) = self.seen.remove(&key) {
                    sets.push(previous.labels);
                }
            }
            Some(current) => {
                if event.uid() != current.uid() {
                    // The event is about an earlier pod of the same name.
                    sets.push(event.labels().clone());
                }
                let now = Seen {
                    labels: current.labels().clone(),
                    fingerprint: fingerprint(current),
                };
                match self.seen.insert(key, now.clone()) {
                    Some(previous) if previous == now => {}
                    Some(previous) => {
                        sets.push(previous.labels);
                        sets.push(now.labels);
                    }
                    None => sets.push(now.labels),
                }
            }
        }
        sets.sort();
        sets.dedup();
        sets
    }

    /// Forgets pods for which `live(namespace, name)` is false.
    fn retain(&mut self, live: impl Fn(&str, &str) -> bool) {
        self.seen.retain(|(ns, name), _| live(ns, name));
    }
}

/// A hash of everything in a pod that its endpoints are made of (its labels
/// are compared separately).
pub(crate) fn fingerprint(pod: &Pod) -> u64 {
    let mut hasher = DefaultHasher::new();
    pod.uid().hash(&mut hasher);
    pod.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    is_terminal(pod).hash(&mut hasher);
    pods::is_ready(pod).hash(&mut hasher);
    pod_ips(pod).hash(&mut hasher);
    if let Some(spec) = &pod.spec {
        spec.node_name.hash(&mut hasher);
        spec.hostname.hash(&mut hasher);
        spec.subdomain.hash(&mut hasher);
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            container.restart_policy.hash(&mut hasher);
            for port in container.ports.iter().flatten() {
                (&port.name, port.container_port, &port.protocol).hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

/// The managed Services among `services` that select any of `label_sets`.
pub(crate) fn selecting(
    services: &[Arc<Service>],
    label_sets: &[Labels],
) -> Vec<ObjectRef<Service>> {
    services
        .iter()
        .filter(|service| {
            managed_selector(service)
                .is_some_and(|selector| label_sets.iter().any(|l| selects(selector, Some(l))))
        })
        .map(|service| ObjectRef::from_obj(&**service))
        .collect()
}

/// Maps pod changes to the Services whose endpoints they change.
pub(crate) struct ServiceMembership {
    services: Informer<Service>,
    pods: Informer<Pod>,
    tracker: Mutex<PodTracker>,
}

impl ServiceMembership {
    pub(crate) fn new(services: Informer<Service>, pods: Informer<Pod>) -> Self {
        Self {
            services,
            pods,
            tracker: Mutex::new(PodTracker::default()),
        }
    }

    /// The Services to sync after a change of `pod`.
    pub(crate) fn services_to_sync(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let namespace = pod.namespace().unwrap_or_default();
        let current = self.pods.get(&namespace, &pod.name_any());
        let sets = self
            .tracker
            .lock()
            .expect("pod tracker poisoned")
            .observe(pod, current.as_deref());
        if sets.is_empty() {
            return Vec::new();
        }
        selecting(&self.services.list_namespace(&namespace), &sets)
    }

    /// Forgets pods that left the cache unseen (a lagging subscriber is
    /// resent the live pods only, never the deleted ones).
    fn prune(&self) {
        self.tracker
            .lock()
            .expect("pod tracker poisoned")
            .retain(|ns, name| self.pods.get(ns, name).is_some());
    }

    /// Prunes every `period`, forever.
    pub(crate) async fn prune_every(&self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.prune();
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodIP, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn labels(app: &str) -> Labels {
        BTreeMap::from([("app".to_string(), app.to_string())])
    }

    fn pod(uid: &str, app: &str, ip: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                labels: Some(labels(app)),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
                ..PodStatus::default()
            }),
        }
    }

    fn service(name: &str, selector: Option<&str>) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.map(labels),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    #[test]
    fn unchanged_endpoint_fields_wake_nobody() {
        let mut tracker = PodTracker::default();
        let p = pod("u1", "web", Some("10.0.0.1"));
        assert_eq!(tracker.observe(&p, Some(&p)), [labels("web")]);
        let mut annotated = p.clone();
        annotated.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        assert!(tracker.observe(&annotated, Some(&annotated)).is_empty());
        let moved = pod("u1", "web", Some("10.0.0.2"));
        assert_eq!(tracker.observe(&moved, Some(&moved)), [labels("web")]);
    }

    #[test]
    fn relabelling_wakes_the_old_and_the_new_selectors() {
        let mut tracker = PodTracker::default();
        let p = pod("u1", "web", None);
        tracker.observe(&p, Some(&p));
        let relabelled = pod("u1", "db", None);
        assert_eq!(
            tracker.observe(&relabelled, Some(&relabelled)),
            [labels("db"), labels("web")]
        );
    }

    #[test]
    fn deletion_wakes_the_last_selectors_and_forgets_the_pod() {
        let mut tracker = PodTracker::default();
        let p = pod("u1", "web", None);
        tracker.observe(&p, Some(&p));
        assert_eq!(tracker.observe(&p, None), [labels("web")]);
        assert!(tracker.seen.is_empty());
    }

    #[test]
    fn a_recreated_pod_of_the_same_name_wakes_both() {
        let mut tracker = PodTracker::default();
        let old = pod("u1", "web", None);
        tracker.observe(&old, Some(&old));
        let new = pod("u2", "db", None);
        // The old pod's deletion arrives after the new pod is cached.
        assert_eq!(
            tracker.observe(&old, Some(&new)),
            [labels("db"), labels("web")]
        );
    }

    #[test]
    fn only_managed_services_selecting_the_labels_are_woken() {
        let services = [
            service("web", Some("web")),
            service("db", Some("db")),
            service("manual", None),
        ];
        let woken = selecting(&services, &[labels("web")]);
        assert_eq!(woken, [ObjectRef::new("web").within("ns")]);
        let mut tracker = PodTracker::default();
        tracker.seen.insert(
            ("ns".into(), "gone".into()),
            Seen {
                labels: labels("web"),
                fingerprint: 0,
            },
        );
        tracker.retain(|_, name| name != "gone");
        assert!(tracker.seen.is_empty());
    }
}
