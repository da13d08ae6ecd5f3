//! Where the agent reads the API objects a pod refers to.
//!
//! Env vars and volumes name ConfigMaps, Secrets and PersistentVolumeClaims
//! (and through those, PersistentVolumes), and every container's
//! environment carries the docker-links variables of Services. The pod
//! manager reads ConfigMaps, Secrets, claims and volumes from the API server
//! when a pod needs them (a claim volume is resolved once per pod, so a watch
//! would cost more than it saves), and Services from one cluster-wide watch
//! ([`ServiceCache`]), as
//! upstream's kubelet keeps a Service informer: every container start needs
//! them, and a list per start would cost the API server a full read each
//! time. Tests answer from maps. Keeping the seam this small lets env
//! resolution and volume setup be tested with no API server.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service,
};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

/// Why an object could not be read. An absent object is not an error: the
/// lookups return `Ok(None)`, because `optional: true` references are legal.
#[derive(Debug, thiserror::Error)]
#[error("reading {kind} {}{name}: {message}", namespace_prefix(.namespace))]
pub struct ObjectError {
    /// `ConfigMap`, `Secret`, `Service`, `PersistentVolumeClaim` or
    /// `PersistentVolume`.
    pub kind: &'static str,
    /// The object's namespace (empty for a PersistentVolume).
    pub namespace: String,
    /// The object's name (`*` for a whole namespace).
    pub name: String,
    /// What went wrong (the API error, or why the cache is not ready).
    pub message: String,
}

/// `namespace/`, or nothing for a cluster-scoped object.
fn namespace_prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}/")
    }
}

/// Read access to the ConfigMaps, Secrets, Services and storage objects pods
/// reference.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// The ConfigMap `namespace/name`, or `None` if it does not exist.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMap>>, ObjectError>;

    /// The Secret `namespace/name`, or `None` if it does not exist.
    async fn secret(&self, namespace: &str, name: &str)
    -> Result<Option<Arc<Secret>>, ObjectError>;

    /// Every Service of `namespace`, for the docker-links variables.
    async fn services(&self, namespace: &str) -> Result<Vec<Arc<Service>>, ObjectError>;

    /// The PersistentVolumeClaim `namespace/name`, or `None` if it does not
    /// exist.
    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolumeClaim>>, ObjectError>;

    /// The PersistentVolume `name`, or `None` if it does not exist.
    async fn persistent_volume(
        &self,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolume>>, ObjectError>;
}

/// How long a lookup waits for the first list of Services before failing
/// (the container then waits in `CreateContainerConfigError` and is retried).
const SERVICE_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Upstream's message while the Service cache has not been filled once.
const SERVICES_NOT_SYNCED: &str =
    "services have not yet been read at least once, cannot construct envvars";

/// Every Service in the cluster, from one watch.
///
/// The watch starts at the first lookup (so building the cache needs no
/// runtime) and stops when the cache is dropped. Until its first list has
/// been read, lookups fail, as upstream's kubelet refuses to build an
/// environment that would silently lack `KUBERNETES_SERVICE_HOST`.
pub struct ServiceCache {
    client: kube::Client,
    store: OnceLock<Store<Service>>,
    stop: CancellationToken,
}

impl ServiceCache {
    /// A cache whose watch goes through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            store: OnceLock::new(),
            stop: CancellationToken::new(),
        }
    }

    /// The store, starting the watch that fills it on first use. Must be
    /// called within a tokio runtime.
    fn store(&self) -> &Store<Service> {
        self.store.get_or_init(|| {
            let (reader, writer) = reflector::store();
            let api: Api<Service> = Api::all(self.client.clone());
            let events =
                reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                    .default_backoff();
            let stop = self.stop.clone();
            tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        event = events.next() => match event {
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                tracing::warn!(%error, "service watch failed; retrying");
                            }
                            None => break,
                        },
                    }
                }
            });
            reader
        })
    }

    /// The Services of `namespace`, once the first list has been read
    /// (waiting up to a few seconds for it).
    pub async fn list(&self, namespace: &str) -> Result<Vec<Arc<Service>>, ObjectError> {
        let store = self.store();
        let synced = tokio::time::timeout(SERVICE_SYNC_WAIT, store.wait_until_ready()).await;
        if !matches!(synced, Ok(Ok(()))) {
            return Err(ObjectError {
                kind: "Service",
                namespace: namespace.to_string(),
                name: "*".into(),
                message: SERVICES_NOT_SYNCED.into(),
            });
        }
        Ok(store
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .collect())
    }
}

impl Drop for ServiceCache {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An [`ObjectSource`] over fixed maps, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct StaticObjects {
    /// ConfigMaps by `(namespace, name)`.
    pub config_maps: std::collections::HashMap<(String, String), Arc<ConfigMap>>,
    /// Secrets by `(namespace, name)`.
    pub secrets: std::collections::HashMap<(String, String), Arc<Secret>>,
    /// Services, in any namespace.
    pub services: Vec<Arc<Service>>,
    /// PersistentVolumeClaims by `(namespace, name)`.
    pub persistent_volume_claims:
        std::collections::HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    /// PersistentVolumes by name.
    pub persistent_volumes: std::collections::HashMap<String, Arc<PersistentVolume>>,
}

#[cfg(test)]
impl StaticObjects {
    /// Adds a ConfigMap; its namespace and name come from its metadata.
    pub fn with_config_map(mut self, cm: ConfigMap) -> Self {
        let key = (
            cm.metadata.namespace.clone().unwrap_or_default(),
            cm.metadata.name.clone().unwrap_or_default(),
        );
        self.config_maps.insert(key, Arc::new(cm));
        self
    }

    /// Adds a Secret; its namespace and name come from its metadata.
    pub fn with_secret(mut self, secret: Secret) -> Self {
        let key = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        self.secrets.insert(key, Arc::new(secret));
        self
    }

    /// Adds a Service.
    pub fn with_service(mut self, service: Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Adds a PersistentVolumeClaim; its namespace and name come from its
    /// metadata.
    pub fn with_persistent_volume_claim(mut self, claim: PersistentVolumeClaim) -> Self {
        let key = (
            claim.metadata.namespace.clone().unwrap_or_default(),
            claim.metadata.name.clone().unwrap_or_default(),
        );
        self.persistent_volume_claims.insert(key, Arc::new(claim));
        self
    }

    /// Adds a PersistentVolume; its name comes from its metadata.
    pub fn with_persistent_volume(mut self, volume: PersistentVolume) -> Self {
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.persistent_volumes.insert(name, Arc::new(volume));
        self
    }
}

#[cfg(test)]
#[async_trait]
impl ObjectSource for StaticObjects {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMap>>, ObjectError> {
        let key = (namespace.to_string(), name.to_string());
        Ok(self.config_maps.get(&key).cloned())
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, ObjectError> {
        let key = (namespace.to_string(), name.to_string());
        Ok(self.secrets.get(&key).cloned())
    }

    async fn services(&self, namespace: &str) -> Result<Vec<Arc<Service>>, ObjectError> {
        Ok(self
            .services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect())
    }

    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolumeClaim>>, ObjectError> {
        let key = (namespace.to_string(), name.to_string());
        Ok(self.persistent_volume_claims.get(&key).cloned())
    }

    async fn persistent_volume(
        &self,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolume>>, ObjectError> {
        Ok(self.persistent_volumes.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    fn service(namespace: &str, name: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "5"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80}]},
        })
    }

    /// A fake API server: Service lists answer `list` (or fail with 500 when
    /// it is `None`); watches never answer, and hold `watching` while open.
    fn client(list: Option<serde_json::Value>, watching: Arc<Mutex<()>>) -> kube::Client {
        let service = tower::service_fn(move |request: Request<Body>| {
            let list = list.clone();
            let watching = watching.clone();
            async move {
                assert_eq!(request.uri().path(), "/api/v1/services");
                let query = request.uri().query().unwrap_or_default();
                if query.contains("watch=true") {
                    let _held = watching;
                    futures::future::pending::<()>().await;
                }
                let (code, body) = match list {
                    Some(items) => (
                        200,
                        json!({
                            "apiVersion": "v1", "kind": "ServiceList",
                            "metadata": {"resourceVersion": "5"}, "items": items,
                        }),
                    ),
                    None => (
                        500,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "code": 500, "reason": "InternalError", "message": "down"}),
                    ),
                };
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string().into_bytes()))
                    .expect("valid response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn the_cache_lists_a_namespace_and_its_watch_stops_when_dropped() {
        let watching = Arc::new(Mutex::new(()));
        let items = json!([
            service("shop", "web"),
            service("shop", "db"),
            service("default", "kubernetes")
        ]);
        let cache = ServiceCache::new(client(Some(items), watching.clone()));
        let mut names: Vec<String> = cache
            .list("shop")
            .await
            .expect("synced")
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["db", "web"]);
        assert!(cache.list("empty").await.expect("synced").is_empty());
        // The watch is open until the cache goes.
        let open_then_closed = async {
            while Arc::strong_count(&watching) == 1 {
                tokio::task::yield_now().await;
            }
            drop(cache);
            while Arc::strong_count(&watching) > 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), open_then_closed)
            .await
            .expect("the watch closes when the cache is dropped");
    }

    #[test]
    fn errors_name_cluster_scoped_objects_without_a_namespace() {
        let error = |namespace: &str| ObjectError {
            kind: "PersistentVolume",
            namespace: namespace.into(),
            name: "pv-1".into(),
            message: "forbidden".into(),
        };
        assert_eq!(
            error("").to_string(),
            "reading PersistentVolume pv-1: forbidden"
        );
        assert_eq!(
            error("ns").to_string(),
            "reading PersistentVolume ns/pv-1: forbidden"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_fail_until_the_first_list_succeeds() {
        let cache = ServiceCache::new(client(None, Arc::default()));
        let err = cache.list("shop").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading Service shop/*: services have not yet been read at least once, \
             cannot construct envvars"
        );
    }
}
