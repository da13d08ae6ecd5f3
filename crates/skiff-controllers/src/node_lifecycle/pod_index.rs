//! The pods bound to each node, by key: upstream's `spec.nodeName` index.
//!
//! The shared Pod informer indexes by namespace and owner only, so the
//! controller keeps this index itself, fed by the informer's change feed
//! before the changes trigger reconciles: a reconcile triggered by a pod
//! therefore always finds that pod in the index. It holds keys only (a few
//! dozen bytes per pod); the pods themselves are read from the informer.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Pod;

use super::eviction::{PodKey, pod_key};

/// The node a pod is bound to, if any.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

#[derive(Debug, Default)]
struct Inner {
    by_node: HashMap<String, HashSet<PodKey>>,
    node_of: HashMap<PodKey, String>,
}

/// Pod keys by node name.
#[derive(Debug, Default)]
pub struct PodsByNode {
    inner: RwLock<Inner>,
}

impl PodsByNode {
    /// Records where the pod with `key` is now: `current` is the cache's
    /// object (`None` once deleted).
    pub fn update(&self, key: PodKey, current: Option<&Pod>) {
        let mut inner = self.inner.write().expect("pod index poisoned");
        let node = current.and_then(node_name);
        if inner.node_of.get(&key).map(String::as_str) == node {
            return;
        }
        if let Some(old) = inner.node_of.remove(&key)
            && let Some(keys) = inner.by_node.get_mut(&old)
        {
            keys.remove(&key);
            if keys.is_empty() {
                inner.by_node.remove(&old);
            }
        }
        if let Some(node) = node {
            inner
                .by_node
                .entry(node.to_string())
                .or_default()
                .insert(key.clone());
            inner.node_of.insert(key, node.to_string());
        }
    }

    /// Records a pod as the cache shows it.
    pub fn insert(&self, pod: &Pod) {
        self.update(pod_key(pod), Some(pod));
    }

    /// The keys of the pods bound to `node`.
    pub fn on_node(&self, node: &str) -> Vec<PodKey> {
        let inner = self.inner.read().expect("pod index poisoned");
        inner
            .by_node
            .get(node)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn sorted(mut keys: Vec<PodKey>) -> Vec<String> {
        keys.sort();
        keys.into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn pods_follow_binding_recreation_and_deletion() {
        let index = PodsByNode::default();
        index.insert(&pod("a", None));
        assert!(index.on_node("n1").is_empty());
        index.insert(&pod("a", Some("n1")));
        index.insert(&pod("b", Some("n1")));
        assert_eq!(sorted(index.on_node("n1")), ["a", "b"]);
        // Deleted and recreated under the same name on another node.
        index.insert(&pod("a", Some("n2")));
        assert_eq!(sorted(index.on_node("n1")), ["b"]);
        assert_eq!(sorted(index.on_node("n2")), ["a"]);
        index.update(("ns".into(), "b".into()), None);
        assert!(index.on_node("n1").is_empty());
    }
}
