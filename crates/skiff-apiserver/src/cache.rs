//! The watch cache: every stored object, decoded and re-encoded once.
//!
//! One store watch over all of `/registry/` feeds a per-type map of current
//! objects plus a bounded history of recent events. Lists without pagination and
//! watches are served from here, so N watchers of pods cost one decode per change,
//! not N, and none when the write came through this server's REST store: it tells
//! the cache what it writes ([`WatchCache::expect_write`]), and the Put event with
//! exactly those bytes takes a copy of that object. Each object's JSON (with
//! `resourceVersion` filled in) is kept as `Bytes` and handed to every list
//! response and watcher as is ("encode once").
//!
//! Lock order: a type's `state` lock is taken before `revision` is read or written;
//! the dispatcher holds a type's write lock while it appends to history and
//! broadcasts, so a subscriber that snapshots history under the read lock and
//! subscribes before releasing it never misses or repeats an event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use skiff_api::registry::{self, ResourceType};
use skiff_store::{EventKind, KeyValue, RangeRequest, Revision, Store, StoreError};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Events kept per type for watches that resume from a recent resourceVersion,
/// and for watchers catching up after falling behind the live buffer.
const HISTORY_PER_TYPE: usize = 8192;
/// Live events buffered per type; a watcher further behind catches up from
/// the history (which must be longer than this to be of any help).
const WATCHER_BUFFER: usize = 1024;
/// Keys read per page while filling the cache.
const FILL_PAGE: usize = 10_000;

/// One object as stored, decoded once.
#[derive(Debug)]
pub struct Cached {
    /// Store key.
    pub key: String,
    /// The object with `metadata.resourceVersion` set (in the watch cache,
    /// without `metadata.managedFields`: see [`Cached::decode_for_cache`]).
    pub object: Value,
    /// The object serialized with its resourceVersion (and managedFields):
    /// given when the object is decoded for the watch cache, encoded on first
    /// use otherwise, so that single reads pay for no encoding they do not send.
    json: OnceLock<Bytes>,
    /// The object's resourceVersion (mod revision).
    pub revision: Revision,
}

impl Cached {
    /// An object whose JSON is encoded from `object` when first asked for.
    pub fn new(key: String, object: Value, revision: Revision) -> Cached {
        Cached {
            key,
            object,
            json: OnceLock::new(),
            revision,
        }
    }

    /// Decodes a stored value and stamps its resourceVersion.
    pub fn from_kv(kv: &KeyValue) -> Result<Cached, serde_json::Error> {
        Self::decode(kv.key.clone(), &kv.value, kv.mod_revision)
    }

    /// [`decode`](Self::decode) for keeping: `object` drops
    /// `metadata.managedFields` (still in `json`). No selector, printer or
    /// owner lookup reads them, and they about double a decoded object's size.
    /// The JSON is the stored bytes with the resourceVersion spliced in, not
    /// a second encoding of the decoded tree.
    pub fn decode_for_cache(
        key: String,
        value: &[u8],
        revision: Revision,
    ) -> Result<Cached, serde_json::Error> {
        if let Some(json) = crate::object::splice_resource_version(value, revision) {
            return Ok(Cached::stamped(
                key,
                trimmed::decode(value)?,
                json,
                revision,
            ));
        }
        let mut object: Value = serde_json::from_slice(value)?;
        crate::object::set_resource_version(&mut object, revision);
        let json = Bytes::from(serde_json::to_vec(&object)?);
        crate::object::meta_mut(&mut object).remove("managedFields");
        Ok(Cached {
            key,
            object,
            json: OnceLock::from(json),
            revision,
        })
    }

    /// [`decode_for_cache`](Self::decode_for_cache) without the decoding:
    /// `object` is what `value` decodes to, already without managedFields.
    /// `None` when the JSON cannot be spliced (then decode).
    fn from_expected(
        key: String,
        object: Value,
        value: &[u8],
        revision: Revision,
    ) -> Option<Cached> {
        let json = crate::object::splice_resource_version(value, revision)?;
        Some(Cached::stamped(key, object, json, revision))
    }

    /// `object` stamped with `revision`, with `json` its spliced encoding.
    fn stamped(key: String, mut object: Value, json: Bytes, revision: Revision) -> Cached {
        crate::object::set_resource_version(&mut object, revision);
        Cached {
            key,
            object,
            json: OnceLock::from(json),
            revision,
        }
    }

    /// Decodes a stored value to send: the JSON is the stored bytes with the
    /// resourceVersion spliced in, so it is ready without a second encoding.
    pub fn decode_stored(kv: &KeyValue) -> Result<Cached, serde_json::Error> {
        let cached = Self::decode(kv.key.clone(), &kv.value, kv.mod_revision)?;
        if let Some(json) = crate::object::splice_resource_version(&kv.value, kv.mod_revision) {
            // Just created: nothing has encoded it yet.
            let _ = cached.json.set(json);
        }
        Ok(cached)
    }

    /// Decodes `value` and stamps `revision` as its resourceVersion.
    pub fn decode(
        key: String,
        value: &[u8],
        revision: Revision,
    ) -> Result<Cached, serde_json::Error> {
        let mut object: Value = serde_json::from_slice(value)?;
        crate::object::set_resource_version(&mut object, revision);
        Ok(Cached::new(key, object, revision))
    }

    /// The object as JSON, with its resourceVersion.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            // Serializing a `Value` cannot fail: its map keys are strings.
            Bytes::from(serde_json::to_vec(&self.object).unwrap_or_default())
        })
    }
}

/// A copy of `object` without `metadata.managedFields`, which the cache keeps
/// only in the JSON.
fn without_managed_fields(object: &Value) -> Value {
    let Value::Object(fields) = object else {
        return object.clone();
    };
    let copy = fields.iter().map(|(name, value)| {
        let value = match (name.as_str(), value) {
            ("metadata", Value::Object(meta)) => Value::Object(
                meta.iter()
                    .filter(|(key, _)| *key != "managedFields")
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ),
            _ => value.clone(),
        };
        (name.clone(), value)
    });
    Value::Object(copy.collect())
}

/// Decoding an object without `metadata.managedFields`: they are skipped while
/// parsing instead of being built and dropped, for they are often the larger
/// part of an object.
mod trimmed {
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::{Map, Value};

    /// Decodes a JSON object, leaving out `metadata.managedFields`.
    pub fn decode(json: &[u8]) -> Result<Value, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let object = Object { top: true }.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(object)
    }

    /// An object; at the top its `metadata` is decoded without managedFields.
    struct Object {
        top: bool,
    }

    impl<'de> DeserializeSeed<'de> for Object {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Object {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
            let mut map = Map::new();
            while let Some(key) = access.next_key::<String>()? {
                let value = match (self.top, key.as_str()) {
                    (true, "metadata") => access.next_value_seed(Object { top: false })?,
                    (false, "managedFields") => {
                        access.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    _ => access.next_value()?,
                };
                map.insert(key, value);
            }
            Ok(Value::Object(map))
        }
    }
}

/// A change to one object.
#[derive(Debug)]
pub struct CacheEvent {
    /// The revision of the change.
    pub revision: Revision,
    /// Put or Delete.
    pub kind: EventKind,
    /// The new object, or for a delete the last state stamped with the deletion revision.
    pub object: Arc<Cached>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Cached>>,
}

struct TypeState {
    objects: BTreeMap<String, Arc<Cached>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event after this revision is in `history`.
    floor: Revision,
    /// Live events; replaced (closing every receiver) when the cache refills.
    events: broadcast::Sender<Arc<CacheEvent>>,
}

struct TypeCache {
    state: RwLock<TypeState>,
}

/// Why the cache cannot serve a watch.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The requested revision is older than the cache's history.
    #[error("revision {requested} is older than the watch cache history ({floor})")]
    TooOld {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision the cache can resume from.
        floor: Revision,
    },
    /// The cache did not catch up with the store in time.
    #[error("timed out waiting for the watch cache to reach revision {0}")]
    Timeout(Revision),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A live subscription: the backlog to send first, then the receiver.
pub struct Subscription {
    /// Events to send before the live ones, in order.
    pub backlog: Vec<Arc<CacheEvent>>,
    /// For initial-events watches: the objects present at `revision`.
    pub snapshot: Vec<Arc<Cached>>,
    /// The revision the subscription starts after.
    pub revision: Revision,
    /// Live events.
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
}

/// The watch cache for every type in the registry.
pub struct WatchCache {
    store: Arc<dyn Store>,
    types: HashMap<(String, String), TypeCache>,
    revision: watch::Sender<Revision>,
    /// Objects the REST store is writing, decoded, by key, each with the
    /// bytes it stores: a Put event carrying exactly those bytes takes the
    /// object instead of decoding them again.
    expected: Mutex<HashMap<String, Vec<(Bytes, Value)>>>,
}

/// More keys with expected objects than this means their events went
/// elsewhere (a refill after compaction): start over rather than grow.
const EXPECTED_KEYS_LIMIT: usize = 4096;

/// The store key prefix of a type: `/registry/{group or core}/{plural}/`.
pub fn type_prefix(rt: &'static ResourceType) -> String {
    let rt = crate::views::storage(rt);
    let group = if rt.group.is_empty() {
        "core"
    } else {
        rt.group
    };
    format!("/registry/{group}/{}/", rt.plural)
}

/// The store key of one object.
pub fn object_key(rt: &'static ResourceType, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if rt.namespaced() => format!("{}{ns}/{name}", type_prefix(rt)),
        _ => format!("{}{name}", type_prefix(rt)),
    }
}

/// `(group, plural)` of a store key.
fn key_type(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("/registry/")?;
    let mut parts = rest.splitn(3, '/');
    let group = parts.next()?;
    let plural = parts.next()?;
    let group = if group == "core" { "" } else { group };
    Some((group.to_string(), plural.to_string()))
}

impl WatchCache {
    /// Fills the cache from the store and starts following it.
    pub async fn start(
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<WatchCache>, StoreError> {
        let types = registry::all()
            .iter()
            .filter(|rt| !crate::views::is_view(rt))
            .map(|rt| {
                let state = TypeState {
                    objects: BTreeMap::new(),
                    history: VecDeque::new(),
                    floor: 0,
                    events: broadcast::channel(WATCHER_BUFFER).0,
                };
                (
                    (rt.group.to_string(), rt.plural.to_string()),
                    TypeCache {
                        state: RwLock::new(state),
                    },
                )
            })
            .collect();
        let (revision, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            store,
            types,
            revision,
            expected: Mutex::default(),
        });
        let start = cache.fill().await?;
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(start, shutdown).await });
        Ok(cache)
    }

    /// Replaces every type's objects with the store's content; returns its revision.
    async fn fill(&self) -> Result<Revision, StoreError> {
        let revision = self.store.current_revision().await?;
        let mut fresh: HashMap<(String, String), BTreeMap<String, Arc<Cached>>> = HashMap::new();
        let mut request = RangeRequest::prefix("/registry/");
        request.limit = FILL_PAGE;
        request.revision = revision;
        loop {
            let page = self.store.range(request.clone()).await?;
            for kv in &page.kvs {
                // Keys of no served type (the node port records under
                // `/registry/ranges/`) are not objects.
                let Some(type_key) = key_type(&kv.key).filter(|t| self.types.contains_key(t))
                else {
                    continue;
                };
                match Cached::decode_for_cache(kv.key.clone(), &kv.value, kv.mod_revision) {
                    Ok(cached) => {
                        fresh
                            .entry(type_key)
                            .or_default()
                            .insert(kv.key.clone(), Arc::new(cached));
                    }
                    Err(e) => {
                        tracing::error!(key = %kv.key, error = %e, "undecodable stored object skipped")
                    }
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => request.keys.start = format!("{}\0", last.key),
                _ => break,
            }
        }
        for (type_key, cache) in &self.types {
            let mut state = cache.state.write().unwrap_or_else(|p| p.into_inner());
            state.objects = fresh.remove(type_key).unwrap_or_default();
            state.history.clear();
            state.floor = revision;
            // Watchers of the old state may have missed changes: end them so
            // they resume from their last revision and get 410 if it is gone.
            state.events = broadcast::channel(WATCHER_BUFFER).0;
        }
        self.revision.send_replace(revision);
        Ok(revision)
    }

    async fn follow(self: Arc<Self>, mut from: Revision, shutdown: CancellationToken) {
        loop {
            let stream = match self.store.watch("/registry/", from + 1).await {
                Ok(stream) => stream,
                Err(StoreError::Compacted { .. }) => {
                    match self.fill().await {
                        Ok(rev) => from = rev,
                        Err(e) => {
                            tracing::error!(error = %e, "watch cache refill failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch cache cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut stream = std::pin::pin!(stream.take_until(shutdown.cancelled()));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        from = event.kv.mod_revision;
                        self.apply(event);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cache store watch ended; resuming");
                        break;
                    }
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    fn apply(&self, event: skiff_store::Event) {
        let revision = event.kv.mod_revision;
        let Some(cache) = key_type(&event.kv.key).and_then(|t| self.types.get(&t)) else {
            self.revision.send_replace(revision);
            return;
        };
        let expected = match event.kind {
            EventKind::Put => self.take_expected(&event.kv.key, &event.kv.value),
            EventKind::Delete => None,
        }
        .and_then(|object| {
            Cached::from_expected(event.kv.key.clone(), object, &event.kv.value, revision)
        });
        let decoded = match expected {
            Some(cached) => Ok(cached),
            None => Cached::decode_for_cache(event.kv.key.clone(), &event.kv.value, revision),
        };
        let object = match decoded {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(key = %event.kv.key, error = %e, "undecodable stored object skipped");
                self.revision.send_replace(revision);
                return;
            }
        };
        let mut state = cache.state.write().unwrap_or_else(|p| p.into_inner());
        let prev = match event.kind {
            EventKind::Put => state.objects.insert(event.kv.key.clone(), object.clone()),
            EventKind::Delete => state.objects.remove(&event.kv.key),
        };
        let change = Arc::new(CacheEvent {
            revision,
            kind: event.kind,
            object,
            prev,
        });
        if state.history.len() == HISTORY_PER_TYPE
            && let Some(oldest) = state.history.pop_front()
        {
            state.floor = oldest.revision;
        }
        state.history.push_back(change.clone());
        // No receivers is fine: nobody is watching this type.
        let _ = state.events.send(change);
        self.revision.send_replace(revision);
    }

    /// Tells the cache that `value`, the encoding of `object`, is about to be
    /// stored under `key`, so that applying the store's event takes a copy of
    /// `object` instead of decoding `value`. Call [`forget`](Self::forget) if
    /// the write fails.
    pub fn expect_write(&self, key: &str, value: &Bytes, object: &Value) {
        let object = without_managed_fields(object);
        let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        if expected.len() >= EXPECTED_KEYS_LIMIT {
            expected.clear();
        }
        expected
            .entry(key.to_string())
            .or_default()
            .push((value.clone(), object));
    }

    /// Withdraws an [`expect_write`](Self::expect_write) whose write failed.
    pub fn forget(&self, key: &str, value: &Bytes) {
        self.take_expected(key, value);
    }

    /// The object expected under `key` with exactly the bytes `value`.
    fn take_expected(&self, key: &str, value: &[u8]) -> Option<Value> {
        let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        let pending = expected.get_mut(key)?;
        let found = pending
            .iter()
            .position(|(bytes, _)| bytes.as_ref() == value)
            .map(|at| pending.swap_remove(at).1);
        if pending.is_empty() {
            expected.remove(key);
        }
        found
    }

    fn type_cache(&self, rt: &'static ResourceType) -> &TypeCache {
        let rt = crate::views::storage(rt);
        self.types
            .get(&(rt.group.to_string(), rt.plural.to_string()))
            .expect("every registry type has a cache")
    }

    /// Waits until the cache has seen `revision`.
    pub async fn wait_for(&self, revision: Revision) -> Result<(), CacheError> {
        let mut rx = self.revision.subscribe();
        match tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CacheError::Timeout(revision)),
        }
    }

    /// Waits until the cache holds everything the store has acknowledged, so a
    /// list reflects every write that completed before it began.
    pub async fn sync(&self) -> Result<(), CacheError> {
        let current = self.store.current_revision().await?;
        self.wait_for(current).await
    }

    /// The objects of a type, optionally in one namespace, and the revision
    /// they are current at.
    pub fn list(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Cached>>, Revision) {
        let prefix = match namespace {
            Some(ns) if rt.namespaced() => format!("{}{ns}/", type_prefix(rt)),
            _ => type_prefix(rt),
        };
        let state = self
            .type_cache(rt)
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let items = state
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, *self.revision.borrow())
    }

    /// Subscribes to changes of a type after `from`. With `initial` the
    /// subscription also carries a snapshot of every object at its revision
    /// (and `from` is ignored).
    pub fn subscribe(
        &self,
        rt: &'static ResourceType,
        from: Revision,
        initial: bool,
    ) -> Result<Subscription, CacheError> {
        let cache = self.type_cache(rt);
        let state = cache.state.read().unwrap_or_else(|p| p.into_inner());
        let revision = *self.revision.borrow();
        if initial {
            return Ok(Subscription {
                backlog: Vec::new(),
                snapshot: state.objects.values().cloned().collect(),
                revision,
                live: state.events.subscribe(),
            });
        }
        if from < state.floor {
            return Err(CacheError::TooOld {
                requested: from,
                floor: state.floor,
            });
        }
        let backlog = state
            .history
            .iter()
            .filter(|e| e.revision > from)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            snapshot: Vec::new(),
            revision: from.max(0),
            live: state.events.subscribe(),
        })
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The latest revision the cache has applied.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_decoding_drops_only_managed_fields() {
        let json = br#"{"kind":"Pod","metadata":{"name":"a","managedFields":[{"manager":"m","fieldsV1":{"f:spec":{}}}],"labels":{"managedFields":"kept"}},"spec":{"managedFields":1}}"#;
        let object = trimmed::decode(json).unwrap();
        let mut expected: Value = serde_json::from_slice(json).unwrap();
        crate::object::meta_mut(&mut expected).remove("managedFields");
        assert_eq!(object, expected);
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            r#"{"kind":"Pod","metadata":{"name":"a","labels":{"managedFields":"kept"}},"spec":{"managedFields":1}}"#,
            "key order is kept"
        );
    }

    #[test]
    fn trimmed_decoding_rejects_what_full_decoding_rejects() {
        assert!(trimmed::decode(b"[1]").is_err());
        assert!(trimmed::decode(br#"{"metadata":{"name":"a"}} x"#).is_err());
        assert!(trimmed::decode(br#"{"metadata":{"managedFields":[}}"#).is_err());
    }

    #[test]
    fn cached_objects_keep_managed_fields_only_in_their_json() {
        let json = br#"{"metadata":{"name":"a","managedFields":[{"manager":"m"}]}}"#;
        let cached = Cached::decode_for_cache("k".into(), json, 7).unwrap();
        assert_eq!(
            cached.object,
            serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"}})
        );
        let sent: Value = serde_json::from_slice(cached.json()).unwrap();
        assert_eq!(sent["metadata"]["managedFields"][0]["manager"], "m");
        assert_eq!(sent["metadata"]["resourceVersion"], "7");
    }

    async fn empty_cache() -> Arc<WatchCache> {
        let store = Arc::new(skiff_store::MemoryStore::new().unwrap());
        WatchCache::start(store, CancellationToken::new())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn expected_objects_are_taken_once_by_their_exact_bytes() {
        let cache = empty_cache().await;
        let object =
            serde_json::json!({"metadata": {"name": "a", "managedFields": [{"manager": "m"}]}});
        let bytes = Bytes::from(serde_json::to_vec(&object).unwrap());
        cache.expect_write("k", &bytes, &object);
        assert_eq!(cache.take_expected("k", b"{}"), None, "other bytes");
        assert_eq!(cache.take_expected("j", &bytes), None, "another key");
        assert_eq!(
            cache.take_expected("k", &bytes),
            Some(serde_json::json!({"metadata": {"name": "a"}}))
        );
        assert_eq!(cache.take_expected("k", &bytes), None, "taken once");

        cache.expect_write("k", &bytes, &object);
        cache.forget("k", &bytes);
        assert_eq!(cache.take_expected("k", &bytes), None, "forgotten");
        assert!(cache.expected.lock().unwrap().is_empty());
    }

    #[test]
    fn an_expected_object_is_cached_as_if_decoded() {
        let stored = br#"{"kind":"Pod","metadata":{"name":"a","managedFields":[{"manager":"m"}],"labels":{"x":"y"}},"spec":{}}"#;
        let written: Value = serde_json::from_slice(stored).unwrap();
        let decoded = Cached::decode_for_cache("k".into(), stored, 9).unwrap();
        let taken =
            Cached::from_expected("k".into(), without_managed_fields(&written), stored, 9).unwrap();
        assert_eq!(taken.object, decoded.object);
        assert_eq!(
            serde_json::to_string(&taken.object).unwrap(),
            serde_json::to_string(&decoded.object).unwrap()
        );
        assert_eq!(taken.json(), decoded.json());
    }

    #[test]
    fn keys_map_back_to_types() {
        assert_eq!(
            key_type("/registry/core/pods/default/x"),
            Some((String::new(), "pods".to_string()))
        );
        assert_eq!(
            key_type("/registry/apps/deployments/ns/d"),
            Some(("apps".to_string(), "deployments".to_string()))
        );
        assert_eq!(key_type("/other/x"), None);
    }
}
