//! A revisioned key-value store with etcd's semantics.
//!
//! Every write bumps one global revision. An object's `resourceVersion` is the
//! revision of its last modification (`mod_revision`), so the API server can offer
//! optimistic concurrency (compare-and-swap on `mod_revision`) and watches that
//! resume from any retained revision. Old revisions are dropped by compaction;
//! asking for one afterwards is [`StoreError::Compacted`] (HTTP 410 upstream).
//!
//! Backends implement [`Store`]. The API server is the only component that may name
//! this crate; everything else goes through the Kubernetes API.
//!
//! - [`EmbeddedStore`]: the default, a durable single redb file with group commit.
//! - [`MemoryStore`]: the same semantics in memory, for tests of other crates.
//! - [`spawn_compactor`]: the periodic compaction the API server runs.
//!
//! Both backends share one MVCC layer (`mvcc`) and one writer/watch engine
//! (`engine`); a backend only supplies four tables.

mod compactor;
pub mod embedded;
mod engine;
pub mod memory;
mod mvcc;
#[cfg(test)]
mod suite;

pub use compactor::{compact_once, spawn_compactor};
pub use embedded::EmbeddedStore;
pub use engine::StoreOptions;
pub use memory::MemoryStore;

use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A store revision. Revisions start at 1 and only grow.
pub type Revision = i64;

/// One key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/core/pods/default/web-0`.
    pub key: String,
    /// The serialized object.
    pub value: Bytes,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

/// What happened to a key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or Delete.
    pub kind: EventKind,
    /// For a Put, the new value. For a Delete, the key with the value it had
    /// before deletion and `mod_revision` set to the deletion's revision.
    pub kv: KeyValue,
    /// The previous value of the key, if it existed.
    pub prev: Option<KeyValue>,
}

/// A range request: every key in `[start, end)`, read at `revision` (0 = latest).
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    /// Keys in this half-open interval are returned, in key order.
    pub keys: Range<String>,
    /// At most this many keys (0 = no limit).
    pub limit: usize,
    /// Read as of this revision; 0 means the latest.
    pub revision: Revision,
}

impl RangeRequest {
    /// All keys starting with `prefix`, at the latest revision.
    pub fn prefix(prefix: &str) -> Self {
        RangeRequest {
            keys: prefix.to_string()..prefix_end(prefix),
            limit: 0,
            revision: 0,
        }
    }
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    // An empty or all-0xff prefix: the range has no upper bound.
    "\u{10ffff}".to_string()
}

/// The answer to a [`RangeRequest`].
#[derive(Debug, Clone, Default)]
pub struct RangeResponse {
    /// Matching keys in key order.
    pub kvs: Vec<KeyValue>,
    /// True if `limit` cut the result short.
    pub more: bool,
    /// The revision the range was read at (the store's current revision for a
    /// latest read).
    pub revision: Revision,
}

/// A stream of watch events in revision order. It ends only when the store shuts
/// down or the watcher falls too far behind (then the client must re-list).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// Errors from a store. None of them are retryable as-is except `Unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already present.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// Compare-and-swap failed: the key's `mod_revision` differs (the current
    /// value is returned so the caller can report or retry).
    #[error("key {key} was modified (expected revision {expected}, current {})", current.as_ref().map_or(0, |kv| kv.mod_revision))]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The current value, if the key still exists.
        current: Option<Box<KeyValue>>,
    },
    /// The requested revision was compacted away.
    #[error("revision {requested} has been compacted (oldest retained is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction revision.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {0} is in the future")]
    FutureRevision(Revision),
    /// The watcher fell too far behind and was dropped.
    #[error("watcher fell behind and was dropped")]
    WatcherLagged,
    /// The backend failed (I/O, corruption, shutdown).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Reads. Split from writes as etcd splits its read and write views.
#[async_trait]
pub trait ReadView: Send + Sync {
    /// The latest value of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Keys in a range, possibly at a past revision.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError>;
    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}

/// A revisioned, durable, watchable key-value store.
///
/// A write returns only after it is durable. Every successful write returns the
/// new revision, which is also the written key's `mod_revision`.
#[async_trait]
pub trait Store: ReadView {
    /// Create `key` if absent; `AlreadyExists` otherwise.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError>;
    /// Replace `key` if its `mod_revision` is `expected`; `Conflict` otherwise,
    /// `NotFound` if the key is absent.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError>;
    /// Delete `key`, if `expected` is given only when its `mod_revision` matches.
    /// Returns the deletion revision and the value that was deleted.
    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(Revision, KeyValue), StoreError>;
    /// Watch every key starting with `prefix`, from revision `from` inclusive
    /// (0 = only changes after now). `Compacted` if `from` is no longer retained.
    ///
    /// Events come exactly once and in revision order: history from `from` is
    /// replayed first, then live changes follow with no gap. A `from` beyond the
    /// current revision simply waits for it. A watcher whose buffer fills up gets
    /// `WatcherLagged` and its stream ends; the client must re-list.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;
    /// Drop history older than `revision` (the latest value of each key stays).
    ///
    /// Returns once the history is gone. A `revision` at or below the current
    /// compaction revision is a no-op; one above the current revision is
    /// `FutureRevision`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
    /// The oldest revision a range or watch may still ask for.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}
