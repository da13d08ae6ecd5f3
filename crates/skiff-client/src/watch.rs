//! Watches that feed in-process caches.
//!
//! No controller or scheduler reads managedFields, yet they are about a third
//! of a decoded Pod; upstream's scheduler and controller manager drop them
//! from their informers the same way (`TrimManagedFields`). They are left
//! unset rather than empty: an update sent from a cached copy then keeps the
//! live managedFields, where an empty list would clear them.

use std::fmt::Debug;

use futures::Stream;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Every change of the objects `api` and `config` select, with back-off on
/// errors and without managedFields.
pub fn cache_feed<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, config).default_backoff().modify(trim)
}

fn trim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn managed_fields_are_unset_not_emptied() {
        let mut pod = Pod::default();
        pod.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        pod.metadata.name = Some("web".into());
        super::trim(&mut pod);
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(pod.metadata.name.as_deref(), Some("web"));
    }
}
