//! Shared informers: one watch and one cache per resource type, for all
//! controllers.
//!
//! Upstream's controller manager runs a single `SharedInformerFactory`: every
//! controller that needs Pods reads the same cache, fed by one watch. Skiff
//! does the same, because Pods dominate both memory and watch traffic (a
//! cluster of 30k pods would otherwise hold one copy per controller).
//!
//! kube-runtime's shared reflector is close but does not forward deletions to
//! subscribers, and a ReplicaSet must see its pod deleted to replace it. So an
//! [`Informer`] applies the watch events to a kube-runtime [`Store`] itself
//! (the controllers' runtime reads objects from there), keeps two secondary
//! indexes that hold keys only (by namespace and by controller owner UID), and
//! broadcasts every changed object, deleted ones included, to its
//! subscribers. A subscriber that falls behind the broadcast buffer is given
//! every cached object again, which is safe because controllers are
//! level-triggered.
//!
//! ```no_run
//! # async fn example(client: kube::Client) {
//! use k8s_openapi::api::core::v1::Pod;
//! use skiff_controllers::informer::InformerFactory;
//! use tokio_util::sync::CancellationToken;
//!
//! let mut factory = InformerFactory::new(client);
//! let pods = factory.informer::<Pod>();
//! let drivers = factory.run(CancellationToken::new());
//! # drop((pods, drivers));
//! # }
//! ```

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How many changes a subscriber may lag behind before it is resynced.
const BROADCAST_CAPACITY: usize = 4096;

/// The bounds every informed type meets (all `k8s-openapi` types do).
pub trait Informed:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Informed for K where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}

/// A cache of one resource type, fed by one watch, with indexes and a
/// change feed. Cloning is cheap; all clones share the cache.
pub struct Informer<K: Informed> {
    shared: Arc<Shared<K>>,
}

impl<K: Informed> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<K: Informed> {
    store: Store<K>,
    /// Keys only; objects are read from `store`.
    index: RwLock<Index<K>>,
    changes: broadcast::Sender<Arc<K>>,
}

struct Index<K: Informed> {
    by_namespace: HashMap<String, HashSet<ObjectRef<K>>>,
    by_controller: HashMap<String, HashSet<ObjectRef<K>>>,
}

impl<K: Informed> Default for Index<K> {
    fn default() -> Self {
        Self {
            by_namespace: HashMap::new(),
            by_controller: HashMap::new(),
        }
    }
}

impl<K: Informed> Index<K> {
    fn insert(&mut self, obj: &K) {
        let key = ObjectRef::from_obj(obj);
        if let Some(ns) = obj.namespace() {
            self.by_namespace.entry(ns).or_default().insert(key.clone());
        }
        if let Some(uid) = controller_uid(obj) {
            self.by_controller
                .entry(uid.to_string())
                .or_default()
                .insert(key);
        }
    }

    fn remove(&mut self, obj: &K) {
        let key = ObjectRef::from_obj(obj);
        if let Some(ns) = obj.namespace() {
            remove_key(&mut self.by_namespace, &ns, &key);
        }
        if let Some(uid) = controller_uid(obj) {
            remove_key(&mut self.by_controller, uid, &key);
        }
    }
}

fn remove_key<K: Informed>(
    map: &mut HashMap<String, HashSet<ObjectRef<K>>>,
    at: &str,
    key: &ObjectRef<K>,
) {
    if let Some(keys) = map.get_mut(at) {
        keys.remove(key);
        if keys.is_empty() {
            map.remove(at);
        }
    }
}

/// The UID of the object's managing controller (the owner reference with
/// `controller: true`).
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .as_deref()?
        .iter()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.as_str())
}

impl<K: Informed> Informer<K> {
    /// The kube-runtime store behind the cache, for `Controller`s.
    pub fn store(&self) -> Store<K> {
        self.shared.store.clone()
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_synced(&self) {
        // Only fails if the driver is dropped, which means shutdown.
        let _ = self.shared.store.wait_until_ready().await;
    }

    /// One object by namespace (empty for cluster-scoped) and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let ns = (!namespace.is_empty()).then_some(namespace);
        let mut key = ObjectRef::new(name);
        if let Some(ns) = ns {
            key = key.within(ns);
        }
        self.shared.store.get(&key)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.shared.store.state()
    }

    /// The objects in one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let index = self.shared.index.read().expect("informer index poisoned");
        self.resolve(index.by_namespace.get(namespace))
    }

    /// The objects whose managing controller has this UID.
    pub fn controlled_by(&self, owner_uid: &str) -> Vec<Arc<K>> {
        let index = self.shared.index.read().expect("informer index poisoned");
        self.resolve(index.by_controller.get(owner_uid))
    }

    fn resolve(&self, keys: Option<&HashSet<ObjectRef<K>>>) -> Vec<Arc<K>> {
        keys.into_iter()
            .flatten()
            .filter_map(|key| self.shared.store.get(key))
            .collect()
    }

    /// Every change from now on: the new object, or the last state of a
    /// deleted one. After falling behind, every cached object once more.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        let state = (
            self.shared.changes.subscribe(),
            self.store(),
            VecDeque::new(),
        );
        futures::stream::unfold(state, |(mut changes, store, mut backlog)| async move {
            loop {
                if let Some(obj) = backlog.pop_front() {
                    return Some((obj, (changes, store, backlog)));
                }
                match changes.recv().await {
                    Ok(obj) => return Some((obj, (changes, store, backlog))),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "informer subscriber lagged; resyncing");
                        backlog.extend(store.state());
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

/// Feeds watch events into an informer's cache, indexes and change feed.
struct Driver<K: Informed> {
    writer: Writer<K>,
    shared: Arc<Shared<K>>,
}

impl<K: Informed> Driver<K> {
    fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Apply(obj) => {
                let key = ObjectRef::from_obj(&obj);
                let previous = self.shared.store.get(&key);
                self.writer.apply_watcher_event(&Event::Apply(obj));
                let current = self.shared.store.get(&key);
                {
                    let mut index = self.shared.index.write().expect("informer index poisoned");
                    if let Some(previous) = &previous {
                        index.remove(previous);
                    }
                    if let Some(current) = &current {
                        index.insert(current);
                    }
                }
                if let Some(current) = current {
                    self.publish(current);
                }
            }
            Event::Delete(obj) => {
                self.writer.apply_watcher_event(&Event::Delete(obj.clone()));
                self.shared
                    .index
                    .write()
                    .expect("informer index poisoned")
                    .remove(&obj);
                self.publish(Arc::new(obj));
            }
            Event::Init => self.writer.apply_watcher_event(&Event::Init),
            Event::InitApply(obj) => self.writer.apply_watcher_event(&Event::InitApply(obj)),
            Event::InitDone => {
                let before = self.shared.store.state();
                self.writer.apply_watcher_event(&Event::InitDone);
                let after = self.shared.store.state();
                let mut index = Index::default();
                for obj in &after {
                    index.insert(&**obj);
                }
                *self.shared.index.write().expect("informer index poisoned") = index;
                let present: HashSet<ObjectRef<K>> = after
                    .iter()
                    .map(|obj| ObjectRef::from_obj(&**obj))
                    .collect();
                let gone = before
                    .into_iter()
                    .filter(|obj| !present.contains(&ObjectRef::from_obj(&**obj)));
                for obj in gone.chain(after) {
                    self.publish(obj);
                }
            }
        }
    }

    fn publish(&self, obj: Arc<K>) {
        // No subscribers is fine: the cache is still read directly.
        let _ = self.shared.changes.send(obj);
    }
}

/// Builds one [`Informer`] per type on request, then drives them all.
pub struct InformerFactory {
    client: Client,
    informers: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    drivers: Vec<BoxFuture<'static, ()>>,
}

impl InformerFactory {
    /// A factory whose watches go through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            informers: HashMap::new(),
            drivers: Vec::new(),
        }
    }

    /// The informer of `K`, created on first request.
    pub fn informer<K: Informed>(&mut self) -> Informer<K> {
        if let Some(existing) = self.informers.get(&TypeId::of::<K>()) {
            return existing
                .downcast_ref::<Informer<K>>()
                .expect("informers are keyed by their type")
                .clone();
        }
        let writer = Writer::<K>::new(());
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            store: writer.as_reader(),
            index: RwLock::new(Index::default()),
            changes,
        });
        let informer = Informer {
            shared: Arc::clone(&shared),
        };
        let mut driver = Driver { writer, shared };
        let api: Api<K> = Api::all(self.client.clone());
        self.drivers.push(Box::pin(async move {
            let mut events =
                skiff_client::watch::cache_feed(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => driver.apply(event),
                    Err(error) => tracing::warn!(
                        kind = %K::kind(&()),
                        %error,
                        "informer watch failed; retrying"
                    ),
                }
            }
        }));
        self.informers
            .insert(TypeId::of::<K>(), Box::new(informer.clone()));
        informer
    }

    /// Drives every informer's watch until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let all = futures::future::join_all(self.drivers);
        tokio::select! {
            _ = all => {}
            () = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn driver() -> (Driver<Pod>, Informer<Pod>) {
        let writer = Writer::<Pod>::new(());
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            store: writer.as_reader(),
            index: RwLock::new(Index::default()),
            changes,
        });
        let informer = Informer {
            shared: Arc::clone(&shared),
        };
        (Driver { writer, shared }, informer)
    }

    fn names(mut pods: Vec<Arc<Pod>>) -> Vec<String> {
        pods.sort_by_key(|p| p.name_any());
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[tokio::test]
    async fn indexes_follow_applies_and_deletes_and_deletions_are_published() {
        let (mut driver, informer) = driver();
        let mut changes = Box::pin(informer.subscribe());
        driver.apply(Event::Init);
        driver.apply(Event::InitApply(pod("a", "p1", Some("rs1"))));
        driver.apply(Event::InitDone);
        driver.apply(Event::Apply(pod("a", "p2", Some("rs1"))));
        driver.apply(Event::Apply(pod("b", "p3", None)));
        assert_eq!(names(informer.controlled_by("rs1")), ["p1", "p2"]);
        assert_eq!(names(informer.list_namespace("b")), ["p3"]);

        // Orphaning moves the pod out of the owner's index.
        driver.apply(Event::Apply(pod("a", "p2", None)));
        assert_eq!(names(informer.controlled_by("rs1")), ["p1"]);
        driver.apply(Event::Delete(pod("a", "p1", Some("rs1"))));
        assert!(informer.controlled_by("rs1").is_empty());
        assert_eq!(names(informer.list_namespace("a")), ["p2"]);

        let seen: Vec<String> = (&mut changes).take(5).map(|p| p.name_any()).collect().await;
        assert_eq!(seen, ["p1", "p2", "p3", "p2", "p1"]);
    }

    #[tokio::test]
    async fn a_relist_publishes_objects_deleted_while_disconnected() {
        let (mut driver, informer) = driver();
        driver.apply(Event::Init);
        driver.apply(Event::InitApply(pod("a", "kept", None)));
        driver.apply(Event::InitApply(pod("a", "gone", Some("rs"))));
        driver.apply(Event::InitDone);
        let mut changes = Box::pin(informer.subscribe());
        driver.apply(Event::Init);
        driver.apply(Event::InitApply(pod("a", "kept", None)));
        driver.apply(Event::InitDone);
        let seen: Vec<String> = (&mut changes).take(2).map(|p| p.name_any()).collect().await;
        assert_eq!(seen, ["gone", "kept"]);
        assert!(informer.controlled_by("rs").is_empty());
        assert!(informer.get("a", "gone").is_none());
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_everything_again() {
        let (mut driver, informer) = driver();
        driver.apply(Event::Init);
        driver.apply(Event::InitDone);
        let mut changes = Box::pin(informer.subscribe());
        for i in 0..BROADCAST_CAPACITY + 10 {
            driver.apply(Event::Apply(pod("a", &format!("p{i}"), None)));
        }
        let resynced: Vec<_> = (&mut changes).take(BROADCAST_CAPACITY + 10).collect().await;
        assert_eq!(resynced.len(), BROADCAST_CAPACITY + 10);
        let distinct: HashSet<String> = resynced.iter().map(|p| p.name_any()).collect();
        assert_eq!(distinct.len(), BROADCAST_CAPACITY + 10);
    }
}
