//! The pod manager: runs the pods bound to this node.
//!
//! Pods come from a watch on the API server (`spec.nodeName` = this node).
//! Each pod gets a worker task that syncs it (see [`worker`]) whenever the
//! pod changes, one of its containers changes state, or a probe result
//! changes, and on a timer. Container state changes are found by a relist of
//! the runtime every second, as upstream's PLEG does; the runtime, not the
//! agent, is the record of what runs, so a restarted agent picks every pod up
//! where it was.
//!
//! The eviction manager ([`crate::eviction`]) runs beside the workers and
//! reads the pods from here; a pod it evicts gets its event from the
//! manager, and its worker fails and kills it on its next sync.

mod backoff;
mod cgroups;
mod pull;
mod resize;
mod runtime;
mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::api::Api;
use kube::runtime::watcher;
use skiff_client::events::{EventRecorder, EventType};
use skiff_cri::{ImageService, RuntimeService};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::SandboxContext;
use crate::downward::NodeAllocatable;
use crate::eviction::{self, Eviction, EvictionSource};
use crate::locate::{LocatedContainer, LocatedPod, PodLocator};
use crate::objects::{ObjectError, ObjectSource, ServiceCache};
use crate::probes::{ProbeManager, ProbeUpdate};
use crate::volumes::VolumeManager;
pub use runtime::PodRuntime;
use runtime::RuntimeView;
use worker::{Next, PodMemory};

/// How often the runtime is relisted for container state changes.
const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// What the pod manager needs to know about its node.
#[derive(Debug, Clone)]
pub struct PodManagerConfig {
    /// The node's name (pods are selected by `spec.nodeName`).
    pub node_name: String,
    /// The node's IPs, reported as `hostIP`.
    pub host_ips: Vec<IpAddr>,
    /// Sandbox settings: log dir, DNS, cgroup root.
    pub sandbox: SandboxContext,
    /// For downward API resource values without limits.
    pub node_allocatable: NodeAllocatable,
    /// Where pods' directories are (`DATA/agent/pods`): volumes and the
    /// managed `/etc/hosts`.
    pub pods_dir: std::path::PathBuf,
}

/// Everything the workers share.
pub(crate) struct Shared {
    config: PodManagerConfig,
    client: kube::Client,
    runtime: Arc<dyn RuntimeService>,
    images: Arc<dyn ImageService>,
    view: RuntimeView,
    volumes: VolumeManager,
    probes: ProbeManager,
    recorder: EventRecorder,
    objects: Arc<dyn ObjectSource>,
    backoff: Mutex<backoff::Backoff>,
    pull_failures: Mutex<HashMap<String, (SystemTime, String)>>,
    /// Container ids whose liveness (or startup) probe failed.
    unhealthy: Mutex<HashSet<String>>,
    /// Pods the eviction manager evicted, by uid, with the message of their
    /// status.
    evicted: Mutex<HashMap<String, String>>,
    /// The pods known from the watch, by uid.
    pods: Mutex<HashMap<String, Arc<Pod>>>,
    /// Sandbox/container view for the streaming API, by `(namespace, name)`.
    located: Mutex<HashMap<(String, String), LocatedPod>>,
}

impl Shared {
    fn liveness_failed(&self, container_id: &str) -> bool {
        lock(&self.unhealthy).contains(container_id)
    }
}

/// Runs the node's pods.
pub struct PodManager {
    shared: Arc<Shared>,
    probe_updates: tokio::sync::mpsc::Receiver<ProbeUpdate>,
}

/// The worker of one pod, as the manager sees it.
struct WorkerHandle {
    pod: watch::Sender<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
}

impl PodManager {
    /// A manager for the node in `config`.
    pub fn new(
        config: PodManagerConfig,
        client: kube::Client,
        runtime: Arc<dyn RuntimeService>,
        images: Arc<dyn ImageService>,
        volumes: VolumeManager,
        recorder: EventRecorder,
    ) -> Self {
        let (probes, probe_updates) = ProbeManager::new(runtime.clone());
        let objects = Arc::new(ApiObjects {
            client: client.clone(),
            services: ServiceCache::new(client.clone()),
        });
        let shared = Arc::new(Shared {
            view: RuntimeView::new(runtime.clone()),
            config,
            client,
            runtime,
            images,
            volumes,
            probes,
            recorder,
            objects,
            backoff: Mutex::default(),
            pull_failures: Mutex::default(),
            unhealthy: Mutex::default(),
            evicted: Mutex::default(),
            pods: Mutex::default(),
            located: Mutex::default(),
        });
        Self {
            shared,
            probe_updates,
        }
    }

    /// The view the kubelet API uses to find pods' containers.
    pub fn locator(&self) -> Arc<dyn PodLocator> {
        Arc::new(Locator {
            shared: self.shared.clone(),
        })
    }

    /// Runs until `shutdown`. Pods keep running when the agent stops: they
    /// belong to the runtime, and the next agent adopts them.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let api: Api<Pod> = Api::all(self.shared.client.clone());
        let selector = format!("spec.nodeName={}", self.shared.config.node_name);
        let mut pod_events = watcher(api, watcher::Config::default().fields(&selector)).boxed();
        let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
        let mut relist = tokio::time::interval(RELIST_PERIOD);
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fingerprints: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        let mut listed = false;
        let mut initial: HashSet<String> = HashSet::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let (eviction_sender, mut evictions) = tokio::sync::mpsc::channel(EVICTION_BUFFER);
        let node_pods = Arc::new(NodePods {
            shared: self.shared.clone(),
        });
        tasks.spawn(eviction::run(
            node_pods,
            eviction::PERIOD,
            eviction_sender,
            shutdown.child_token(),
        ));

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                event = pod_events.next() => match event {
                    Some(Ok(watcher::Event::Init)) => initial.clear(),
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            initial.insert(uid);
                        }
                        self.apply(&mut workers, &tasks, pod, &shutdown);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        // Pods that vanished while the watch was down.
                        let gone: Vec<String> = workers
                            .keys()
                            .filter(|uid| !initial.contains(*uid))
                            .cloned()
                            .collect();
                        for uid in gone {
                            self.forget(&workers, &uid);
                        }
                        listed = true;
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => {
                        self.apply(&mut workers, &tasks, pod, &shutdown);
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            self.forget(&workers, uid);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pod watch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => break,
                },
                _ = relist.tick() => {
                    let Ok(current) = self.shared.view.fingerprints().await else {
                        continue;
                    };
                    for (uid, states) in &current {
                        if fingerprints.get(uid) == Some(states) {
                            continue;
                        }
                        if let Some(worker) = workers.get(uid) {
                            worker.wake.notify_one();
                        } else if listed {
                            // Runtime leftovers of a pod the API no longer
                            // has: a worker with no pod cleans them up.
                            self.spawn_worker(&mut workers, &tasks, uid.clone(), None, &shutdown);
                        }
                    }
                    fingerprints = current;
                    workers.retain(|_, w| !w.pod.is_closed());
                },
                Some(update) = self.probe_updates.recv() => self.on_probe(&workers, update),
                Some(eviction) = evictions.recv() => self.on_eviction(&workers, eviction),
            }
        }
        tasks.close();
    }

    fn apply(
        &self,
        workers: &mut HashMap<String, WorkerHandle>,
        tasks: &tokio_util::task::TaskTracker,
        pod: Pod,
        shutdown: &CancellationToken,
    ) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        lock(&self.shared.pods).insert(uid.clone(), pod.clone());
        match workers.get(&uid) {
            Some(worker) if !worker.pod.is_closed() => {
                // Status-only changes are mostly the worker's own writes:
                // keep the newest object without waking the worker for them.
                worker.pod.send_if_modified(|current| {
                    let wake = current.as_deref().is_none_or(|old| needs_sync(old, &pod));
                    *current = Some(pod);
                    wake
                });
            }
            _ => self.spawn_worker(workers, tasks, uid, Some(pod), shutdown),
        }
    }

    fn forget(&self, workers: &HashMap<String, WorkerHandle>, uid: &str) {
        lock(&self.shared.pods).remove(uid);
        lock(&self.shared.evicted).remove(uid);
        if let Some(worker) = workers.get(uid) {
            worker.pod.send_replace(None);
        }
    }

    fn spawn_worker(
        &self,
        workers: &mut HashMap<String, WorkerHandle>,
        tasks: &tokio_util::task::TaskTracker,
        uid: String,
        pod: Option<Arc<Pod>>,
        shutdown: &CancellationToken,
    ) {
        let (sender, receiver) = watch::channel(pod);
        let wake = Arc::new(Notify::new());
        tasks.spawn(run_worker(
            self.shared.clone(),
            uid.clone(),
            receiver,
            wake.clone(),
            shutdown.child_token(),
        ));
        workers.insert(uid, WorkerHandle { pod: sender, wake });
    }

    fn on_probe(&self, workers: &HashMap<String, WorkerHandle>, update: ProbeUpdate) {
        let pod = lock(&self.shared.pods).get(&update.pod_uid).cloned();
        let deleting = pod
            .as_ref()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        // Upstream stops acting on liveness once a pod is being deleted.
        if update.requires_restart() && !deleting {
            lock(&self.shared.unhealthy).insert(update.container_id.clone());
        }
        if let (Some(pod), Some(event)) = (pod, update.event()) {
            // The first failure and then every tenth, not one per period.
            if update.consecutive <= 1 || update.consecutive.is_multiple_of(10) {
                let field = Some(format!("spec.containers{{{}}}", update.container_name));
                self.shared.recorder.record(
                    &worker::pod_reference(&pod, field),
                    EventType::Warning,
                    event.reason,
                    &event.message,
                );
            }
        }
        if let Some(worker) = workers.get(&update.pod_uid) {
            worker.wake.notify_one();
        }
    }
}

impl PodManager {
    /// Records an eviction for the pod's worker and posts upstream's
    /// `Evicted` warning, once per pod.
    fn on_eviction(&self, workers: &HashMap<String, WorkerHandle>, eviction: Eviction) {
        let Some(pod) = lock(&self.shared.pods).get(&eviction.pod_uid).cloned() else {
            return;
        };
        let first = lock(&self.shared.evicted)
            .insert(eviction.pod_uid.clone(), eviction.message.clone())
            .is_none();
        if first {
            self.shared.recorder.record(
                &worker::pod_reference(&pod, None),
                EventType::Warning,
                eviction::REASON,
                &eviction.message,
            );
        }
        if let Some(worker) = workers.get(&eviction.pod_uid) {
            worker.wake.notify_one();
        }
    }
}

/// Evictions buffered before the eviction manager waits for the pod
/// manager.
const EVICTION_BUFFER: usize = 16;

/// The eviction manager's view of the node: the pods from the watch and the
/// volume manager's layout.
struct NodePods {
    shared: Arc<Shared>,
}

impl EvictionSource for NodePods {
    fn pods(&self) -> Vec<Arc<Pod>> {
        lock(&self.shared.pods).values().cloned().collect()
    }

    fn empty_dir(&self, pod_uid: &str, volume: &str) -> Option<std::path::PathBuf> {
        self.shared.volumes.empty_dir_path(pod_uid, volume)
    }
}

/// Whether a pod update asks something of the worker: anything but its
/// status (and resourceVersion/managedFields bookkeeping) changed.
fn needs_sync(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || old.metadata.deletion_grace_period_seconds != new.metadata.deletion_grace_period_seconds
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
        // A phase the worker did not write (an eviction, a reset).
        || old.status.as_ref().and_then(|s| s.phase.as_ref())
            != new.status.as_ref().and_then(|s| s.phase.as_ref())
}

async fn run_worker(
    shared: Arc<Shared>,
    uid: String,
    mut pod: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut memory = PodMemory::default();
    let mut last: Option<Arc<Pod>> = pod.borrow().clone();
    loop {
        let current = pod.borrow_and_update().clone();
        if current.is_some() {
            last.clone_from(&current);
        }
        let next = shared
            .sync_pod(current.as_deref(), last.as_deref(), &uid, &mut memory)
            .await;
        shared
            .update_located(&uid, current.as_deref().or(last.as_deref()))
            .await;
        let delay = match next {
            Next::Done => break,
            Next::After(delay) => delay,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = pod.changed() => if changed.is_err() { return },
            () = wake.notified() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
    if let Some(pod) = last {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        lock(&shared.located).remove(&key);
    }
}

impl Shared {
    /// Refreshes the streaming API's view of a pod after a sync.
    async fn update_located(&self, uid: &str, pod: Option<&Pod>) {
        let Some(pod) = pod else { return };
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let Ok(runtime) = self.view.pod(uid).await else {
            return;
        };
        let Some(sandbox) = runtime.sandboxes.first() else {
            lock(&self.located).remove(&key);
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| {
                let latest = runtime.latest_anywhere(&c.name);
                LocatedContainer {
                    name: c.name.clone(),
                    id: latest.map(|r| r.id.clone()),
                    running: latest.is_some_and(runtime::ContainerRecord::running),
                    log_path: latest
                        .filter(|r| !r.log_path.is_empty())
                        .map(|r| r.log_path.clone().into()),
                    previous_log_path: runtime
                        .previous(&c.name)
                        .filter(|r| !r.log_path.is_empty())
                        .map(|r| r.log_path.clone().into()),
                }
            })
            .collect();
        let located = LocatedPod {
            uid: uid.to_string(),
            sandbox_id: sandbox.id.clone(),
            netns_path: sandbox.netns.clone(),
            pod_ip: sandbox.ip,
            containers,
        };
        lock(&self.located).insert(key, located);
    }
}

struct Locator {
    shared: Arc<Shared>,
}

#[async_trait]
impl PodLocator for Locator {
    async fn pod(&self, namespace: &str, name: &str) -> Option<LocatedPod> {
        let key = (namespace.to_string(), name.to_string());
        lock(&self.shared.located).get(&key).cloned()
    }

    async fn container_running(&self, container_id: &str) -> bool {
        let request = skiff_cri::v1::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: false,
        };
        self.shared
            .runtime
            .container_status(request)
            .await
            .ok()
            .and_then(|r| r.status)
            .is_some_and(|s| s.state == skiff_cri::v1::ContainerState::ContainerRunning as i32)
    }
}

/// ConfigMaps, Secrets, claims and volumes read straight from the API
/// server; Services from a watch.
struct ApiObjects {
    client: kube::Client,
    services: ServiceCache,
}

#[async_trait]
impl ObjectSource for ApiObjects {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMap>>, ObjectError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map(|o| o.map(Arc::new))
            .map_err(|e| object_error("ConfigMap", namespace, name, &e))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, ObjectError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map(|o| o.map(Arc::new))
            .map_err(|e| object_error("Secret", namespace, name, &e))
    }

    async fn services(&self, namespace: &str) -> Result<Vec<Arc<Service>>, ObjectError> {
        self.services.list(namespace).await
    }

    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolumeClaim>>, ObjectError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map(|o| o.map(Arc::new))
            .map_err(|e| object_error("PersistentVolumeClaim", namespace, name, &e))
    }

    async fn persistent_volume(
        &self,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolume>>, ObjectError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .map(|o| o.map(Arc::new))
            .map_err(|e| object_error("PersistentVolume", "", name, &e))
    }
}

fn object_error(kind: &'static str, namespace: &str, name: &str, e: &kube::Error) -> ObjectError {
    ObjectError {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        message: e.to_string(),
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves its map consistent, so a panic elsewhere cannot corrupt it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
