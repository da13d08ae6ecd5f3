//! The enforcer's world for tests: the collections it watches, served by the
//! shared fake API server, and the objects in them.

use serde_json::{Value, json};
use skiff_testing::FakeApi;

/// The collections the enforcer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Collection {
    Pods,
    Namespaces,
    Policies,
}

impl Collection {
    /// The path of the cluster-wide collection.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Collection::Pods => "/api/v1/pods",
            Collection::Namespaces => "/api/v1/namespaces",
            Collection::Policies => "/apis/networking.k8s.io/v1/networkpolicies",
        }
    }

    fn type_meta(self) -> (&'static str, &'static str) {
        match self {
            Collection::Pods => ("v1", "Pod"),
            Collection::Namespaces => ("v1", "Namespace"),
            Collection::Policies => ("networking.k8s.io/v1", "NetworkPolicy"),
        }
    }

    fn typed(self, mut object: Value) -> Value {
        let (api_version, kind) = self.type_meta();
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        object
    }
}

/// A fake API server listing `objects` (typed here).
pub(crate) fn fake_api(objects: Vec<(Collection, Vec<Value>)>) -> FakeApi {
    let mut lists: Vec<(&str, Vec<Value>)> = Vec::new();
    for (collection, items) in objects {
        let items = items.into_iter().map(|o| collection.typed(o));
        match lists
            .iter_mut()
            .find(|(path, _)| *path == collection.path())
        {
            Some((_, listed)) => listed.extend(items),
            None => lists.push((collection.path(), items.collect())),
        }
    }
    FakeApi::new(lists)
}

/// Sends the watch of `collection` an event (`ADDED`, `MODIFIED`,
/// `DELETED`) of `object` (typed here), once the enforcer watches it.
pub(crate) async fn send(api: &FakeApi, collection: Collection, kind: &str, object: Value) {
    api.send(collection.path(), kind, collection.typed(object))
        .await;
}

/// A running pod on `node` at `ip`.
pub(crate) fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// A namespace with `labels`.
pub(crate) fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

/// A NetworkPolicy with `spec`.
pub(crate) fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}
