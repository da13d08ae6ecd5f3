//! The pods bound to hollow nodes: one watch for all of them, and a pool of
//! workers that write their statuses.
//!
//! # Scale
//!
//! A scheduling benchmark binds 10,000 to 30,000 pods to 1,000 to 5,000
//! hollow nodes. One watch of every bound pod (field selector
//! `spec.nodeName!=`) serves them all; a watch per node would be thousands
//! of streams. The watch task only folds events into a table of
//! [`PodView`]s (a digest, not the Pod) and queues keys that need a write;
//! `pod_concurrency` workers take keys off a work queue and do the
//! writes. The watch never waits for a write, and a pod is never written by
//! two workers at once.
//!
//! Failed writes are retried with a per-pod backoff (1 s doubling to 30 s);
//! completions due later (`complete_after`) wait on a timer. Both put the
//! key back on the queue.
//!
//! # Restarts
//!
//! Nothing is kept outside the API. After a restart (or a relist), a pod the
//! API shows Running with an IP of its node's range is adopted with that IP;
//! pods gone meanwhile free theirs at the end of the relist.

pub mod ips;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::nodes::Nodes;
use crate::queue::WorkQueue;
use crate::{FIELD_MANAGER, HollowError};
use ips::PodIps;
use status::{Action, PodView, Reported};

/// The first retry of a failed write waits this long...
const RETRY_START: Duration = Duration::from_secs(1);
/// ...doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A pod: namespace and name.
type PodKey = (String, String);

/// The pods bound to one set of hollow nodes.
pub struct Pods {
    nodes: Arc<Nodes>,
    client: kube::Client,
    table: Mutex<PodTable>,
    queue: WorkQueue<PodKey>,
    /// Runs retry and completion timers.
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// What the hollow nodes know of their pods. Never locked across an await.
struct PodTable {
    pods: HashMap<PodKey, Entry>,
    /// Per node.
    ips: Vec<PodIps>,
    /// Pods seen since the watch began a (re)list.
    listed: Option<HashSet<PodKey>>,
}

struct Entry {
    view: PodView,
    /// The host of its node's `/24` it holds.
    ip: Option<u8>,
    /// What this node last reported.
    reported: Option<Reported>,
    /// A retry or completion timer will queue it.
    timer: bool,
    /// Writes failed in a row.
    failures: u32,
}

/// A write a worker performs for one pod, decided under the table lock.
enum Job {
    Run {
        view: PodView,
        pod_ip: String,
        start: Timestamp,
    },
    Reject {
        uid: String,
    },
    Complete {
        view: PodView,
        start: Timestamp,
    },
    Delete {
        uid: String,
    },
}

impl Pods {
    /// The pods of `nodes`; writes through `client`, timers on `tracker`.
    pub fn new(
        client: kube::Client,
        nodes: Arc<Nodes>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let ips = (0..nodes.config.nodes)
            .map(|_| PodIps::new(nodes.pods_per_node))
            .collect();
        Self {
            nodes,
            client,
            table: Mutex::new(PodTable {
                pods: HashMap::new(),
                ips,
                listed: None,
            }),
            queue: WorkQueue::new(),
            tracker,
            shutdown,
        }
    }

    /// Runs `pod_concurrency` workers on the tracker, then watches the
    /// bound pods until shutdown.
    pub async fn run(self: Arc<Self>) -> Result<(), HollowError> {
        for _ in 0..self.nodes.config.pod_concurrency {
            self.tracker.spawn(Arc::clone(&self).work());
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields("spec.nodeName!=");
        let mut events = skiff_client::watch::cache_feed(api, config).boxed();
        loop {
            let event = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                event = events.next() => event,
            };
            match event {
                None => return Err(HollowError::WatchEnded { resource: "pods" }),
                Some(Err(error)) => tracing::warn!(%error, "watching pods on hollow nodes"),
                Some(Ok(event)) => self.observe(event),
            }
        }
    }

    /// Folds one watch event into the table, queueing pods with work.
    fn observe(&self, event: Event<Pod>) {
        match event {
            Event::Init => self.lock().listed = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) => self.apply(&pod),
            Event::InitDone => {
                let mut table = self.lock();
                if let Some(listed) = table.listed.take() {
                    let gone: Vec<PodKey> = table
                        .pods
                        .keys()
                        .filter(|key| !listed.contains(*key))
                        .cloned()
                        .collect();
                    for key in gone {
                        table.remove(&key);
                    }
                }
            }
            Event::Delete(pod) => {
                let Some(key) = key_of(&pod) else { return };
                let mut table = self.lock();
                if table.pods.get(&key).map(|e| e.view.uid.as_str()) == pod.metadata.uid.as_deref()
                {
                    table.remove(&key);
                }
            }
        }
    }

    fn apply(&self, pod: &Pod) {
        let Some(key) = key_of(pod) else { return };
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let Some(node) = node_name.and_then(|n| self.nodes.index(n)) else {
            return;
        };
        let view = PodView::new(pod, node);
        let mut table = self.lock();
        if let Some(listed) = &mut table.listed {
            listed.insert(key.clone());
        }
        let same_pod = table.pods.get(&key).is_some_and(|e| e.view.uid == view.uid);
        if !same_pod {
            // New, or recreated under the same name.
            table.remove(&key);
            let ip = view
                .pod_ip
                .as_deref()
                .filter(|_| view.phase.as_deref() == Some("Running"))
                .and_then(|ip| config::pod_host(node, ip));
            if let Some(host) = ip {
                table.ips[node].mark(host);
            }
            table.pods.insert(
                key.clone(),
                Entry {
                    view: view.clone(),
                    ip,
                    reported: None,
                    timer: false,
                    failures: 0,
                },
            );
        }
        let entry = table.pods.get_mut(&key).expect("inserted above");
        entry.view = view;
        let action = status::decide(
            &entry.view,
            entry.reported,
            self.nodes.config.complete_after,
            Timestamp::now(),
        );
        if matches!(entry.view.phase.as_deref(), Some("Succeeded" | "Failed")) {
            // Finished: its IP is free.
            table.release(&key);
        }
        drop(table);
        if action != Action::Nothing {
            self.queue.add(key);
        }
    }

    /// A worker: takes keys off the queue until shutdown.
    async fn work(self: Arc<Self>) {
        loop {
            let key = tokio::select! {
                () = self.shutdown.cancelled() => return,
                key = self.queue.next() => key,
            };
            self.process(&key).await;
            self.queue.done(&key);
        }
    }

    /// Does what pod `key` needs now.
    async fn process(self: &Arc<Self>, key: &PodKey) {
        let Some(job) = self.job(key) else { return };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let (uid, result, outcome) = match job {
            Job::Run {
                view,
                pod_ip,
                start,
            } => {
                let host_ip = config::node_ip(view.node).to_string();
                let status = status::running_status(&view, &host_ip, &pod_ip, start);
                let patch = with_uid(serde_json::json!({ "status": status }), &view.uid);
                let result = api
                    .patch_status(&key.1, &params, &Patch::Strategic(&patch))
                    .await;
                (view.uid, result.map(drop), Reported::Running(start))
            }
            Job::Reject { uid } => {
                let status = status::rejected_status(self.nodes.pods_per_node);
                let patch = with_uid(serde_json::json!({ "status": status }), &uid);
                let result = api
                    .patch_status(&key.1, &params, &Patch::Strategic(&patch))
                    .await;
                (uid, result.map(drop), Reported::Terminal)
            }
            Job::Complete { view, start } => {
                let patch = status::succeeded_patch(&view, start, Timestamp::now());
                let patch = with_uid(patch, &view.uid);
                let result = api
                    .patch_status(&key.1, &params, &Patch::Strategic(&patch))
                    .await;
                (view.uid, result.map(drop), Reported::Terminal)
            }
            Job::Delete { uid } => {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let result = api.delete(&key.1, &params).await;
                (uid, result.map(drop), Reported::Deleted)
            }
        };
        self.finish(key, &uid, result, outcome);
    }

    /// The write pod `key` needs, if any; arms its completion timer when
    /// that is still to come.
    fn job(self: &Arc<Self>, key: &PodKey) -> Option<Job> {
        let now = Timestamp::now();
        let complete_after = self.nodes.config.complete_after;
        let mut table = self.lock();
        let table = &mut *table;
        let entry = table.pods.get_mut(key)?;
        match status::decide(&entry.view, entry.reported, complete_after, now) {
            Action::Nothing => None,
            Action::CompleteIn(wait) => {
                if !entry.timer {
                    entry.timer = true;
                    self.requeue_after(key.clone(), wait);
                }
                None
            }
            Action::Delete => Some(Job::Delete {
                uid: entry.view.uid.clone(),
            }),
            Action::Complete => Some(Job::Complete {
                view: entry.view.clone(),
                start: start_of(entry, now),
            }),
            Action::Run => {
                let node = entry.view.node;
                if entry.ip.is_none() {
                    entry.ip = table.ips[node].allocate();
                }
                match entry.ip {
                    Some(host) => Some(Job::Run {
                        view: entry.view.clone(),
                        pod_ip: config::pod_ip(node, host).to_string(),
                        start: entry.view.start_time.unwrap_or(now),
                    }),
                    None => Some(Job::Reject {
                        uid: entry.view.uid.clone(),
                    }),
                }
            }
        }
    }

    /// Records the result of a write to pod `key` (if it is still the pod
    /// with `uid`): what was reported, or a retry after a failure.
    fn finish(
        self: &Arc<Self>,
        key: &PodKey,
        uid: &str,
        result: Result<(), kube::Error>,
        outcome: Reported,
    ) {
        let mut table = self.lock();
        let Some(entry) = table.pods.get_mut(key).filter(|e| e.view.uid == uid) else {
            return;
        };
        match result {
            Ok(()) => {
                entry.failures = 0;
                entry.reported = Some(outcome);
                if matches!(outcome, Reported::Running(_)) {
                    if entry.view.may_complete && self.nodes.config.complete_after.is_some() {
                        // Again once done, to arm its completion timer.
                        self.queue.add(key.clone());
                    }
                } else {
                    table.release(key);
                }
            }
            // Gone, or another pod under the name now (uid precondition):
            // the watch brings the news.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {
                tracing::debug!(pod = ?key, code = status.code, "pod changed under a write");
            }
            Err(error) => {
                tracing::warn!(namespace = key.0, pod = key.1, %error, "writing a hollow pod");
                let wait = RETRY_START
                    .saturating_mul(1 << entry.failures.min(5))
                    .min(RETRY_MAX);
                entry.failures += 1;
                if !entry.timer {
                    entry.timer = true;
                    self.requeue_after(key.clone(), wait);
                }
            }
        }
    }

    /// Queues `key` again after `wait` (unless shut down first). The
    /// entry's `timer` is set by the caller and cleared here.
    fn requeue_after(self: &Arc<Self>, key: PodKey, wait: Duration) {
        let pods = Arc::clone(self);
        self.tracker.spawn(async move {
            tokio::select! {
                () = pods.shutdown.cancelled() => {}
                () = tokio::time::sleep(wait) => {
                    if let Some(entry) = pods.lock().pods.get_mut(&key) {
                        entry.timer = false;
                    }
                    pods.queue.add(key);
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, PodTable> {
        // Never poisoned: nothing panics while holding it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PodTable {
    /// Forgets pod `key`, freeing its IP.
    fn remove(&mut self, key: &PodKey) {
        self.release(key);
        self.pods.remove(key);
    }

    /// Frees pod `key`'s IP, if it holds one.
    fn release(&mut self, key: &PodKey) {
        if let Some(entry) = self.pods.get_mut(key)
            && let Some(host) = entry.ip.take()
        {
            self.ips[entry.view.node].release(host);
        }
    }
}

/// When the pod started: as this node reported, else as the API shows,
/// else now.
fn start_of(entry: &Entry, now: Timestamp) -> Timestamp {
    match entry.reported {
        Some(Reported::Running(start)) => start,
        _ => entry.view.start_time.unwrap_or(now),
    }
}

/// `patch` with `metadata.uid`, so it cannot land on another pod of the
/// same name (the API server rejects a changed uid).
fn with_uid(mut patch: serde_json::Value, uid: &str) -> serde_json::Value {
    patch["metadata"] = serde_json::json!({ "uid": uid });
    patch
}

/// A pod's namespace and name.
fn key_of(pod: &Pod) -> Option<PodKey> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}
