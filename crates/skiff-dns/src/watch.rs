//! Keeping the record index up to date from the API.
//!
//! Services, EndpointSlices and Namespaces are watched through kube-runtime
//! reflectors, whose stores hold the objects. Each event updates the
//! [`Cluster`] inputs and rebuilds the records of the Services it names, which
//! are swapped into the index under a short write lock. The end of a (re)list
//! rebuilds the whole index from the stores instead, off the lock, because
//! objects deleted while the watch was down vanish from a relist without a
//! delete event. Once all three kinds have listed, the index is synced.

use std::pin::pin;
use std::sync::{Arc, PoisonError};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use tokio_util::sync::CancellationToken;

use crate::records::{Cluster, ServiceKey};
use crate::server::SharedRecords;

/// One event of one of the watched kinds (Services boxed: they are large).
enum Change {
    Service(Box<Event<Service>>),
    Slice(Event<EndpointSlice>),
    Namespace(Event<Namespace>),
}

/// A reflector of every `K` in the cluster, with its store.
fn watch<K>(client: &Client) -> (Store<K>, impl Stream<Item = watcher::Result<Event<K>>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let events = reflector::reflector(
        writer,
        skiff_client::watch::cache_feed(Api::<K>::all(client.clone()), watcher::Config::default()),
    );
    (reader, events)
}

/// Which kinds have completed a list.
#[derive(Default)]
struct Listed {
    services: bool,
    slices: bool,
    namespaces: bool,
}

impl Listed {
    fn all(&self) -> bool {
        self.services && self.slices && self.namespaces
    }
}

/// Watch until `shutdown`, keeping `records` equal to what `cluster` builds.
pub(crate) async fn run(
    client: Client,
    mut cluster: Cluster,
    records: SharedRecords,
    shutdown: CancellationToken,
) {
    let (services, service_events) = watch::<Service>(&client);
    let (slices, slice_events) = watch::<EndpointSlice>(&client);
    let (namespaces, namespace_events) = watch::<Namespace>(&client);
    let changes = stream::select(
        stream::select(
            service_events.map(|e| e.map(|e| Change::Service(Box::new(e)))),
            slice_events.map(|e| e.map(Change::Slice)),
        ),
        namespace_events.map(|e| e.map(Change::Namespace)),
    );
    let mut changes = pin!(changes);
    let mut listed = Listed::default();
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.next() => change,
        };
        let change = match change {
            Some(Ok(change)) => change,
            Some(Err(error)) => {
                tracing::warn!(%error, "cluster DNS watch failed; retrying");
                continue;
            }
            None => return,
        };
        let keys = match change {
            Change::Service(event) => match *event {
                Event::Apply(service) => {
                    let service = shared(&services, service);
                    cluster.apply_service(service).into_iter().collect()
                }
                Event::Delete(service) => cluster.delete_service(&service).into_iter().collect(),
                Event::InitDone => {
                    cluster.replace_services(services.state());
                    listed.services = true;
                    rebuild(&cluster, &records, &listed);
                    continue;
                }
                Event::Init | Event::InitApply(_) => continue,
            },
            Change::Slice(event) => match event {
                Event::Apply(slice) => cluster.apply_slice(shared(&slices, slice)),
                Event::Delete(slice) => cluster.delete_slice(&slice),
                Event::InitDone => {
                    cluster.replace_slices(slices.state());
                    listed.slices = true;
                    rebuild(&cluster, &records, &listed);
                    continue;
                }
                Event::Init | Event::InitApply(_) => continue,
            },
            Change::Namespace(event) => {
                match event {
                    Event::Apply(namespace) => cluster.apply_namespace(&namespace),
                    Event::Delete(namespace) => cluster.delete_namespace(&namespace),
                    Event::InitDone => {
                        let all = namespaces.state();
                        cluster.replace_namespaces(all.iter().map(Arc::as_ref));
                        listed.namespaces = true;
                        rebuild(&cluster, &records, &listed);
                        continue;
                    }
                    Event::Init | Event::InitApply(_) => continue,
                }
                let namespaces = cluster.namespaces().clone();
                records
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .set_namespaces(namespaces);
                continue;
            }
        };
        update(&cluster, &records, &keys);
    }
}

/// The store's copy of an object an event carries, so the index shares it.
fn shared<K>(store: &Store<K>, object: K) -> Arc<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .get(&ObjectRef::from_obj(&object))
        .unwrap_or_else(|| Arc::new(object))
}

/// Rebuild the records of `keys` and swap them in.
fn update(cluster: &Cluster, records: &SharedRecords, keys: &[ServiceKey]) {
    let built: Vec<_> = keys
        .iter()
        .map(|key| (key, cluster.service_records(key)))
        .collect();
    let mut records = records.write().unwrap_or_else(PoisonError::into_inner);
    for (key, built) in built {
        records.set_service(key, built);
    }
}

/// Rebuild the whole index from `cluster` and swap it in.
fn rebuild(cluster: &Cluster, records: &SharedRecords, listed: &Listed) {
    let serial = records
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .serial()
        .wrapping_add(1);
    let mut fresh = cluster.records(serial);
    fresh.set_synced(listed.all());
    if listed.all() {
        tracing::debug!(serial, "cluster DNS records rebuilt");
    }
    *records.write().unwrap_or_else(PoisonError::into_inner) = fresh;
}
