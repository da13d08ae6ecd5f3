//! Garbage collector: deletes objects whose owners are gone, and carries out
//! the foreground and orphan deletions the API server starts.
//!
//! As upstream's (`pkg/controller/garbagecollector`), it watches the
//! metadata (ownerReferences, finalizers, deletionTimestamp) of every type
//! discovery lists that can be listed, watched and deleted ([`discovery`];
//! Events are ignored), re-reading discovery every
//! [`GarbageCollectorConfig::discovery_period`] so that types added later are
//! covered. The watches feed one task that keeps the owner → dependents
//! [`graph`], keyed by UID, and queues the work each change makes necessary:
//!
//! - **Background** (the default): when an owner is deleted, each dependent
//!   is looked at; one whose owners are all gone is deleted, with its own
//!   policy. A dependent is never deleted on the graph's word: the worker
//!   reads the dependent and each owner live from the API (by name, then
//!   comparing the UID), because caches lag ([`plan`]).
//! - **Foreground**: an owner the API server gave `foregroundDeletion` and a
//!   `deletionTimestamp` gets its dependents deleted (those that have
//!   dependents of their own in the foreground too); the finalizer is
//!   removed once no dependent with `blockOwnerDeletion: true` remains, and
//!   the API server then deletes the owner.
//! - **Orphan**: an owner with the `orphan` finalizer has its reference
//!   removed from every dependent, then loses the finalizer.
//!
//! Owner references never cross namespaces: the owner of a namespaced
//! object is looked up in its namespace (or cluster-scoped). A reference to
//! a namespaced owner seen in another namespace is reported with a
//! `OwnerRefInvalidNamespace` Warning on the dependent and treated as
//! dangling there; a cluster-scoped object naming a namespaced owner is
//! never collected.
//!
//! Workers start only once every watch has listed its type, so that an
//! orphaning never misses a dependent that exists; they pause again while a
//! newly discovered type is first listed.

pub mod discovery;
pub mod graph;
pub mod plan;
pub mod queue;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use skiff_client::events::{EventRecorder, EventType};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use discovery::{DiscoveryError, ServedResources};
use graph::{Change, Effects, Graph, Identity, Item, Observed};
use queue::WorkQueue;

/// The component name on events.
const COMPONENT: &str = "garbage-collector-controller";

/// How many watch events may wait for the graph before the watches wait.
const GRAPH_CHANGES_BUFFER: usize = 1024;

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarbageCollectorConfig {
    /// Runs the collector at all (`--enable-garbage-collector`).
    pub enabled: bool,
    /// Workers per queue (`--concurrent-gc-syncs`, 20).
    pub concurrent_syncs: usize,
    /// How often discovery is re-read for new or removed types (30 s).
    pub discovery_period: Duration,
    /// `(group, plural)` of types never collected nor watched: core and
    /// `events.k8s.io` Events.
    pub ignored_resources: Vec<(String, String)>,
}

impl Default for GarbageCollectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrent_syncs: 20,
            discovery_period: Duration::from_secs(30),
            ignored_resources: vec![
                (String::new(), "events".into()),
                ("events.k8s.io".into(), "events".into()),
            ],
        }
    }
}

/// Why one item could not be processed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GarbageCollectorError {
    /// No served type has this apiVersion and kind (a type not discovered
    /// yet, or a wrong reference); retried.
    #[error("no served resource type is {api_version} {kind}")]
    UnknownType {
        /// The apiVersion.
        api_version: String,
        /// The kind.
        kind: String,
    },
    /// A cluster-scoped object names a namespaced owner, which can never
    /// resolve; not retried.
    #[error("{dependent} is cluster-scoped but names a namespaced owner {api_version} {kind}")]
    NamespacedOwnerOfClusterScopedObject {
        /// The dependent.
        dependent: Box<Identity>,
        /// The owner's apiVersion.
        api_version: String,
        /// The owner's kind.
        kind: String,
    },
    /// An API request failed; retried.
    #[error("{action} {object}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// To which object.
        object: Box<Identity>,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A write kept conflicting with other writers; retried.
    #[error("{action} {object}: the object kept changing")]
    Contended {
        /// What was being done.
        action: &'static str,
        /// To which object.
        object: Box<Identity>,
    },
}

impl GarbageCollectorError {
    /// False for errors that retrying cannot fix.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::NamespacedOwnerOfClusterScopedObject { .. })
    }
}

/// What the graph task receives.
enum GraphEvent {
    /// A watch event of one type.
    Watched {
        resource: Arc<ApiResource>,
        event: Box<Event<PartialObjectMeta<DynamicObject>>>,
    },
    /// A watch of this type starts: workers wait for its first list.
    Started(ApiResource),
    /// The type is no longer served.
    Stopped(ApiResource),
    /// A worker found nothing at these coordinates.
    VirtualDelete(Identity),
}

/// State shared by the graph task, the discovery loop and the workers.
struct Collector {
    client: Client,
    /// Locked briefly, never across an await.
    graph: Mutex<Graph>,
    /// The latest discovery, for resolving references.
    served: RwLock<Arc<ServedResources>>,
    attempt_to_delete: WorkQueue<Item>,
    attempt_to_orphan: WorkQueue<String>,
    changes: mpsc::Sender<GraphEvent>,
    recorder: EventRecorder,
}

/// Runs the collector until `shutdown` (at once returns if it is disabled).
/// It reads its own metadata-only watches of every type rather than the
/// shared informers, which hold full objects of a few types.
pub async fn start(client: Client, config: GarbageCollectorConfig, shutdown: CancellationToken) {
    if !config.enabled {
        return;
    }
    let (changes, graph_events) = mpsc::channel(GRAPH_CHANGES_BUFFER);
    let collector = Arc::new(Collector {
        recorder: EventRecorder::new(client.clone(), COMPONENT, ""),
        client,
        graph: Mutex::new(Graph::default()),
        served: RwLock::new(Arc::new(ServedResources::default())),
        attempt_to_delete: WorkQueue::default(),
        attempt_to_orphan: WorkQueue::default(),
        changes,
    });
    let (synced, synced_rx) = watch::channel(false);
    let workers = (0..config.concurrent_syncs.max(1)).flat_map(|_| {
        [
            futures::future::Either::Left(delete_worker(
                Arc::clone(&collector),
                synced_rx.clone(),
                shutdown.clone(),
            )),
            futures::future::Either::Right(orphan_worker(
                Arc::clone(&collector),
                synced_rx.clone(),
                shutdown.clone(),
            )),
        ]
    });
    tokio::join!(
        build_graph(&collector, graph_events, synced, shutdown.clone()),
        sync_monitors(&collector, &config, shutdown.clone()),
        futures::future::join_all(workers),
    );
}

/// Keeps one metadata watch per collectable type, re-reading discovery
/// every period.
async fn sync_monitors(
    collector: &Collector,
    config: &GarbageCollectorConfig,
    shutdown: CancellationToken,
) {
    let mut monitors: HashMap<ApiResource, CancellationToken> = HashMap::new();
    loop {
        match ServedResources::discover(&collector.client).await {
            Ok(served) => {
                let wanted: HashSet<ApiResource> = served
                    .collectable(&config.ignored_resources)
                    .map(|s| s.resource.clone())
                    .collect();
                *collector.served.write().expect("discovery poisoned") = Arc::new(served);
                let gone: Vec<ApiResource> = monitors
                    .keys()
                    .filter(|r| !wanted.contains(*r))
                    .cloned()
                    .collect();
                for resource in gone {
                    if let Some(stop) = monitors.remove(&resource) {
                        stop.cancel();
                    }
                    tracing::info!(resource = %resource.plural, group = %resource.group, "garbage collector stops watching");
                    let _ = collector.changes.send(GraphEvent::Stopped(resource)).await;
                }
                for resource in wanted {
                    if monitors.contains_key(&resource) {
                        continue;
                    }
                    let stop = shutdown.child_token();
                    if collector
                        .changes
                        .send(GraphEvent::Started(resource.clone()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::spawn(monitor(
                        collector.client.clone(),
                        resource.clone(),
                        collector.changes.clone(),
                        stop.clone(),
                    ));
                    monitors.insert(resource, stop);
                }
            }
            Err(DiscoveryError(error)) => {
                tracing::warn!(%error, "garbage collector discovery failed; keeping the current watches");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.discovery_period) => {}
        }
    }
}

/// Forwards the metadata watch events of one type to the graph task.
async fn monitor(
    client: Client,
    resource: ApiResource,
    changes: mpsc::Sender<GraphEvent>,
    stop: CancellationToken,
) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &resource);
    let resource = Arc::new(resource);
    let mut events = skiff_client::watch::cache_feed(api, watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Ok(event)) => {
                let watched = GraphEvent::Watched {
                    resource: Arc::clone(&resource),
                    event: Box::new(event),
                };
                if changes.send(watched).await.is_err() {
                    return;
                }
            }
            Some(Err(error)) => tracing::warn!(
                resource = %resource.plural,
                group = %resource.group,
                %error,
                "garbage collector watch failed; retrying"
            ),
        }
    }
}

/// What a watch showed of an object of `resource`.
fn observed(resource: &ApiResource, object: PartialObjectMeta<DynamicObject>) -> Observed {
    let meta = object.metadata;
    Observed {
        identity: Identity {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            uid: meta.uid.unwrap_or_default(),
        },
        owners: meta.owner_references.unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.unwrap_or_default(),
    }
}

/// The single task that applies every change to the graph, in order, and
/// tells the workers when every watched type has been listed.
async fn build_graph(
    collector: &Collector,
    mut events: mpsc::Receiver<GraphEvent>,
    synced: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    // UIDs seen by each type's relist in progress.
    let mut relists: HashMap<ApiResource, HashSet<String>> = HashMap::new();
    let mut unsynced: HashSet<ApiResource> = HashSet::new();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(event) = event else { return };
        match event {
            GraphEvent::Started(resource) => {
                unsynced.insert(resource);
                synced.send_replace(false);
            }
            GraphEvent::Stopped(resource) => {
                relists.remove(&resource);
                unsynced.remove(&resource);
                synced.send_replace(unsynced.is_empty());
            }
            GraphEvent::VirtualDelete(identity) => {
                collector.apply(Change::VirtualDelete(identity));
            }
            GraphEvent::Watched { resource, event } => match *event {
                Event::Init => {
                    relists.insert((*resource).clone(), HashSet::new());
                }
                Event::InitApply(object) => {
                    let observed = observed(&resource, object);
                    if let Some(seen) = relists.get_mut(&*resource) {
                        seen.insert(observed.identity.uid.clone());
                    }
                    collector.apply(Change::Upsert(observed));
                }
                Event::InitDone => {
                    let seen = relists.remove(&*resource).unwrap_or_default();
                    let gone: Vec<Identity> = collector
                        .graph
                        .lock()
                        .expect("graph poisoned")
                        .observed_of_type(&resource.api_version, &resource.kind)
                        .into_iter()
                        .filter(|identity| !seen.contains(&identity.uid))
                        .collect();
                    for identity in gone {
                        collector.apply(Change::Delete(identity));
                    }
                    if unsynced.remove(&*resource) && unsynced.is_empty() {
                        tracing::info!("garbage collector: every type listed; collecting");
                        synced.send_replace(true);
                    }
                }
                Event::Apply(object) => {
                    collector.apply(Change::Upsert(observed(&resource, object)))
                }
                Event::Delete(object) => {
                    let identity = observed(&resource, object).identity;
                    collector.apply(Change::Delete(identity));
                }
            },
        }
    }
}

impl Collector {
    /// Applies a change to the graph and queues the work it makes necessary.
    fn apply(&self, change: Change) {
        let effects = self.graph.lock().expect("graph poisoned").apply(change);
        self.dispatch(effects);
    }

    fn dispatch(&self, effects: Effects) {
        for item in effects.attempt_to_delete {
            self.attempt_to_delete.add(item);
        }
        for item in effects.attempt_to_delete_later {
            self.attempt_to_delete.add_rate_limited(item);
        }
        for uid in effects.attempt_to_orphan {
            self.attempt_to_orphan.add(uid);
        }
        for invalid in effects.invalid_namespace {
            let dependent = &invalid.dependent;
            self.recorder.record(
                &ObjectReference {
                    api_version: Some(dependent.api_version.clone()),
                    kind: Some(dependent.kind.clone()),
                    namespace: Some(dependent.namespace.clone()).filter(|n| !n.is_empty()),
                    name: Some(dependent.name.clone()),
                    uid: Some(dependent.uid.clone()),
                    ..ObjectReference::default()
                },
                EventType::Warning,
                "OwnerRefInvalidNamespace",
                &format!(
                    "ownerRef {} does not exist in namespace {:?}",
                    invalid.owner, dependent.namespace
                ),
            );
        }
    }
}

/// Waits until every watched type has been listed, or shutdown (false).
async fn wait_synced(synced: &mut watch::Receiver<bool>, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        result = synced.wait_for(|s| *s) => result.is_ok(),
    }
}

/// Takes objects off `attempt_to_delete` until shutdown.
async fn delete_worker(
    collector: Arc<Collector>,
    mut synced: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    while wait_synced(&mut synced, &shutdown).await {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = collector.attempt_to_delete.get() => item,
        };
        let result = collector.attempt_to_delete_item(&item).await;
        finish(&collector.attempt_to_delete, &item, result);
    }
}

/// Takes owners off `attempt_to_orphan` until shutdown.
async fn orphan_worker(
    collector: Arc<Collector>,
    mut synced: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    while wait_synced(&mut synced, &shutdown).await {
        let uid = tokio::select! {
            () = shutdown.cancelled() => return,
            uid = collector.attempt_to_orphan.get() => uid,
        };
        let result = collector.attempt_to_orphan_item(&uid).await;
        finish(&collector.attempt_to_orphan, &uid, result);
    }
}

/// Whether an item is finished or must be looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Finished.
    Done,
    /// Look again after a backoff (a virtual owner that exists but no
    /// watch has shown yet).
    Again,
}

fn finish<T: std::hash::Hash + Eq + Clone + std::fmt::Debug>(
    queue: &WorkQueue<T>,
    item: &T,
    result: Result<Outcome, GarbageCollectorError>,
) {
    match result {
        Ok(Outcome::Done) => queue.forget(item),
        Ok(Outcome::Again) => queue.add_rate_limited(item.clone()),
        Err(error @ GarbageCollectorError::UnknownType { .. }) => {
            // Perhaps a type discovery has not shown yet; perhaps a wrong
            // reference that never resolves (its dependent is then never
            // collected, as upstream).
            tracing::debug!(?item, error = %error, "garbage collection: owner type unknown; retrying");
            queue.add_rate_limited(item.clone());
        }
        Err(error) if error.is_retryable() => {
            tracing::warn!(?item, error = %error, "garbage collection failed; retrying");
            queue.add_rate_limited(item.clone());
        }
        Err(error) => {
            tracing::debug!(?item, error = %error, "garbage collection gave up");
            queue.forget(item);
        }
    }
    queue.done(item);
}
