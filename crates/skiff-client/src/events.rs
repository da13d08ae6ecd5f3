//! Recording core/v1 Events, as upstream's event recorder does.
//!
//! Components emit events from their hot paths (a pod worker, a reconcile),
//! which must never wait on the API server. [`EventRecorder::record`] only
//! queues; a background task writes. Repeats of the same event (same object,
//! reason, message and type) become one Event whose `count` and
//! `lastTimestamp` grow, which is what `kubectl describe` shows as `x5 over 2m`.
//! When the queue is full, events are dropped with a log line: events are
//! best-effort in upstream too.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// How many events may wait to be written before new ones are dropped.
const QUEUE_DEPTH: usize = 1024;

/// How many distinct events are remembered for aggregation.
const MAX_REMEMBERED: usize = 4096;

/// `Normal` or `Warning`, the two event types upstream defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

struct Pending {
    regarding: ObjectReference,
    event_type: EventType,
    reason: String,
    message: String,
    at: jiff::Timestamp,
}

/// Queues events and writes them in the background; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    queue: mpsc::Sender<Pending>,
}

impl EventRecorder {
    /// A recorder whose events name `component` (e.g. `kubelet`) on `host` as
    /// their source. Spawns the writer task on the current tokio runtime; it
    /// ends when every clone of the recorder is dropped.
    pub fn new(client: Client, component: &str, host: &str) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            client,
            source: EventSource {
                component: Some(component.to_string()),
                host: (!host.is_empty()).then(|| host.to_string()),
            },
            seen: HashMap::new(),
        };
        tokio::spawn(writer.run(pending));
        Self { queue }
    }

    /// Queues an event about `regarding`. Never blocks.
    pub fn record(
        &self,
        regarding: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        let pending = Pending {
            regarding: regarding.clone(),
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
            at: jiff::Timestamp::now(),
        };
        if self.queue.try_send(pending).is_err() {
            tracing::warn!(reason, message, "event queue full; dropping event");
        }
    }
}

/// What makes two events "the same" for aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggregationKey {
    uid: Option<String>,
    namespace: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    field_path: Option<String>,
    event_type: EventType,
    reason: String,
    message: String,
}

impl AggregationKey {
    fn of(pending: &Pending) -> Self {
        let r = &pending.regarding;
        Self {
            uid: r.uid.clone(),
            namespace: r.namespace.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            field_path: r.field_path.clone(),
            event_type: pending.event_type,
            reason: pending.reason.clone(),
            message: pending.message.clone(),
        }
    }
}

/// The stored Event an aggregation key maps to.
struct Recorded {
    name: String,
    count: i32,
}

struct Writer {
    client: Client,
    source: EventSource,
    seen: HashMap<AggregationKey, Recorded>,
}

impl Writer {
    async fn run(mut self, mut pending: mpsc::Receiver<Pending>) {
        while let Some(event) = pending.recv().await {
            if let Err(e) = self.write(event).await {
                tracing::debug!(error = %e, "writing an event failed");
            }
        }
    }

    async fn write(&mut self, pending: Pending) -> Result<(), kube::Error> {
        // Events live in the namespace of their object; cluster-scoped
        // objects' events go to `default`, as upstream does.
        let namespace = pending
            .regarding
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = AggregationKey::of(&pending);
        let now = Time(pending.at);

        if let Some(recorded) = self.seen.get(&key) {
            let count = recorded.count + 1;
            let patch = serde_json::json!({ "count": count, "lastTimestamp": now });
            match api
                .patch(
                    &recorded.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    if let Some(recorded) = self.seen.get_mut(&key) {
                        recorded.count = count;
                    }
                    return Ok(());
                }
                // Deleted meanwhile (or expired): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.seen.remove(&key);
                }
                Err(e) => return Err(e),
            }
        }

        let object_name = pending.regarding.name.clone().unwrap_or_default();
        let name = format!("{object_name}.{:x}", pending.at.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: pending.regarding,
            reason: Some(pending.reason),
            message: Some(pending.message),
            type_: Some(pending.event_type.as_str().to_string()),
            source: Some(self.source.clone()),
            reporting_component: self.source.component.clone(),
            reporting_instance: self.source.host.clone(),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            event_time: None::<MicroTime>,
            count: Some(1),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        self.seen.insert(key, Recorded { name, count: 1 });
        Ok(())
    }
}
