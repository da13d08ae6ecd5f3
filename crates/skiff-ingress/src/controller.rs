//! The IO half: caches of the API objects, rebuilding and publishing the
//! routing table and certificates, and writing Ingress status.
//!
//! Five reflectors (Ingress, IngressClass, Service, EndpointSlice, and
//! Secrets of type `kubernetes.io/tls`) feed one loop. A change marks what
//! it invalidates (routes, certificates, or both) and wakes the loop, which
//! waits [`COALESCE`] so that a burst of EndpointSlice updates costs one
//! rebuild, then publishes fresh values on the watch channels the proxy
//! reads. Certificates are only re-parsed when an Ingress, IngressClass or
//! Secret changed, not on every endpoint change.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::class::{Classes, ingress_class};
use crate::routes::{Conflict, Inputs, RoutingTable};
use crate::status;
use crate::tls::{CertProblem, CertStore, SECRET_TYPE_TLS};

#[cfg(test)]
mod tests;

/// How long the loop waits after a change for more changes.
const COALESCE: Duration = Duration::from_millis(50);
/// The pause before retrying a failed API write.
const RETRY: Duration = Duration::from_secs(5);

/// What a change invalidates.
#[derive(Debug, Default)]
struct Dirty {
    routes: AtomicBool,
    certs: AtomicBool,
    wake: Notify,
}

impl Dirty {
    fn mark(&self, routes: bool, certs: bool) {
        if routes {
            self.routes.store(true, Ordering::Release);
        }
        if certs {
            self.certs.store(true, Ordering::Release);
        }
        self.wake.notify_one();
    }

    /// Takes the flags: (routes, certs).
    fn take(&self) -> (bool, bool) {
        (
            self.routes.swap(false, Ordering::AcqRel),
            self.certs.swap(false, Ordering::AcqRel),
        )
    }
}

/// The caches the loop reads.
pub(crate) struct Caches {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
    dirty: Arc<Dirty>,
}

impl Caches {
    /// Starts the watches; they run until `shutdown`.
    pub(crate) fn start(client: &Client, shutdown: &CancellationToken) -> Self {
        let dirty = Arc::new(Dirty::default());
        let tls_only = watcher::Config::default().fields(&format!("type={SECRET_TYPE_TLS}"));
        Self {
            ingresses: reflect(
                client,
                watcher::Config::default(),
                (true, true),
                &dirty,
                shutdown,
            ),
            classes: reflect(
                client,
                watcher::Config::default(),
                (true, true),
                &dirty,
                shutdown,
            ),
            services: reflect(
                client,
                watcher::Config::default(),
                (true, false),
                &dirty,
                shutdown,
            ),
            slices: reflect(
                client,
                watcher::Config::default(),
                (true, false),
                &dirty,
                shutdown,
            ),
            secrets: reflect(client, tls_only, (false, true), &dirty, shutdown),
            dirty,
        }
    }

    /// Waits until every cache has its first full list; false when the
    /// watches stopped first (shutdown).
    pub(crate) async fn ready(&self) -> bool {
        let all = async {
            self.ingresses.wait_until_ready().await?;
            self.classes.wait_until_ready().await?;
            self.services.wait_until_ready().await?;
            self.slices.wait_until_ready().await?;
            self.secrets.wait_until_ready().await
        };
        all.await.is_ok()
    }
}

/// Runs a reflector of `K` over all namespaces in a task, marking `marks`
/// (routes, certs) dirty on every change.
fn reflect<K>(
    client: &Client,
    config: watcher::Config,
    marks: (bool, bool),
    dirty: &Arc<Dirty>,
    shutdown: &CancellationToken,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let dirty = Arc::clone(dirty);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let events = watcher(api, config).default_backoff().reflect(writer);
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                )) => {
                    dirty.mark(marks.0, marks.1);
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Err(error)) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                }
                None => return,
            }
        }
    });
    reader
}

/// Creates our IngressClass unless one of that name exists, retrying until
/// it is there or `shutdown`.
pub(crate) async fn ensure_class(client: &Client, name: &str, shutdown: &CancellationToken) {
    let api: Api<IngressClass> = Api::all(client.clone());
    loop {
        match api
            .create(&PostParams::default(), &ingress_class(name))
            .await
        {
            Ok(_) => {
                tracing::info!(class = name, "created the IngressClass");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => return,
            Err(error) => {
                tracing::warn!(class = name, %error, "creating the IngressClass failed; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Where the loop publishes, and what it needs besides the caches.
pub(crate) struct Publisher {
    pub(crate) routes: watch::Sender<Arc<RoutingTable>>,
    pub(crate) certs: watch::Sender<Arc<CertStore>>,
    pub(crate) class_name: String,
    pub(crate) status_addresses: Vec<IpAddr>,
}

/// Rebuilds and publishes on every change until `shutdown`.
pub(crate) async fn sync_loop(
    client: Client,
    caches: Caches,
    publisher: Publisher,
    shutdown: CancellationToken,
) {
    let mut last_conflicts: Vec<Conflict> = Vec::new();
    let mut last_problems: Vec<CertProblem> = Vec::new();
    // The first pass builds everything.
    caches.dirty.mark(true, true);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = caches.dirty.wake.notified() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(COALESCE) => {}
        }
        let (routes_dirty, certs_dirty) = caches.dirty.take();
        let classes = Classes::new(&caches.classes.state(), &publisher.class_name);
        let owned = classes.owned(&caches.ingresses.state());

        if routes_dirty {
            let table = RoutingTable::build(&Inputs {
                ingresses: &owned,
                services: &caches.services.state(),
                endpoint_slices: &caches.slices.state(),
            });
            if table.conflicts() != last_conflicts.as_slice() {
                for conflict in table.conflicts() {
                    tracing::warn!(?conflict.route, kept = %conflict.kept, dropped = %conflict.dropped,
                        "conflicting Ingress rule ignored; the older Ingress keeps it");
                }
                last_conflicts = table.conflicts().to_vec();
            }
            for backend in table.backends() {
                if let Some(problem) = backend.problem() {
                    tracing::debug!(backend = %backend.reference(), %problem, "backend unavailable");
                }
            }
            publisher.routes.send_replace(Arc::new(table));
        }
        if certs_dirty {
            let certs = CertStore::build(&owned, &caches.secrets.state());
            if certs.problems() != last_problems.as_slice() {
                for problem in certs.problems() {
                    tracing::warn!(ingress = %problem.ingress, secret = %problem.secret,
                        reason = %problem.reason, "TLS secret unusable");
                }
                last_problems = certs.problems().to_vec();
            }
            publisher.certs.send_replace(Arc::new(certs));
        }

        if !publisher.status_addresses.is_empty()
            && !write_status(&client, &owned, &publisher.status_addresses).await
        {
            let dirty = Arc::clone(&caches.dirty);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(RETRY) => dirty.mark(false, false),
                }
            });
        }
    }
}

/// Writes the load balancer status of the owned Ingresses that show other
/// addresses; false if a write failed.
async fn write_status(client: &Client, owned: &[Arc<Ingress>], addresses: &[IpAddr]) -> bool {
    let desired = status::desired(addresses);
    let mut ok = true;
    for ingress in owned {
        if !status::needs_update(ingress, &desired) {
            continue;
        }
        if let Err(error) = status::update(client, ingress, &desired).await {
            // Gone since the cache saw it: the next event settles it.
            if !matches!(&error, kube::Error::Api(s) if s.code == 404) {
                ok = false;
            }
            tracing::warn!(
                namespace = ingress.metadata.namespace.as_deref().unwrap_or_default(),
                name = ingress.metadata.name.as_deref().unwrap_or_default(),
                %error,
                "writing the Ingress status failed"
            );
        }
    }
    ok
}
