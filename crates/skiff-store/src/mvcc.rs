//! The MVCC layer every backend shares.
//!
//! A backend only stores four tables; this module gives them etcd's meaning, the way
//! kine layers a generic log over per-database dialects:
//!
//! - **log**: `revision → (key, value, create_revision, prev_revision, tombstone)`,
//!   one row per successful write. The row id *is* the revision.
//! - **latest**: `key → revision` of the key's newest row, for live keys only. Reads
//!   at the latest revision and compare-and-swap checks use it.
//! - **history**: the set of `(key, revision)`, one per log row, so a range at a past
//!   revision can find each key's newest row at or below that revision.
//! - **meta**: the current revision and the compaction revision.
//!
//! A worked example. `create a` (rev 1), `update a` (rev 2), `delete a` (rev 3),
//! `create a` (rev 4) leaves log rows 1, 2, 3 (tombstone, `prev_revision` 2) and 4
//! (`prev_revision` 0: a fresh incarnation), history `(a,1) (a,2) (a,3) (a,4)` and
//! latest `a → 4`. A range at revision 3 finds `(a,3)`, a tombstone, so `a` is absent;
//! at revision 2 it finds `(a,2)`.
//!
//! Compacting at revision `C` drops every row below `C` that no read at `C` or later
//! can reach: tombstones, and rows the same key superseded before `C`. Rows at or
//! above `C` all stay, and so does the predecessor of each of them (a row superseded
//! at or after `C` is not dropped), so a watch replayed from `C` can always report the
//! previous value. In the example above, compacting at 3 drops only row 1: row 2 is
//! the predecessor of the tombstone at 3, which a watch from 3 still reports. Compacting
//! at 4 drops rows 1, 2 and 3.

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, StoreError};

/// One row of the revision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEntry {
    /// The key written.
    pub key: String,
    /// The new value; empty for a tombstone (the deleted value is the previous row's).
    pub value: Bytes,
    /// Revision at which this incarnation of the key was created.
    pub create_revision: Revision,
    /// The key's previous row, or 0 if the key did not exist before this write.
    pub prev_revision: Revision,
    /// True if this row deletes the key.
    pub tombstone: bool,
}

impl LogEntry {
    fn into_kv(self, revision: Revision) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: revision,
        }
    }
}

/// The store-wide counters, written in the same transaction as the rows they count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The newest assigned revision (0 for an empty store).
    pub revision: Revision,
    /// Ranges and watches below this revision answer `Compacted`.
    pub compacted: Revision,
}

/// A visitor over scanned rows; it returns `Ok(false)` to stop the scan.
pub(crate) type Visit<'a, T> = &'a mut dyn FnMut(T) -> Result<bool, StoreError>;

/// A visitor over scanned `(key, revision)` pairs; `Ok(false)` stops the scan.
pub(crate) type KeyVisit<'a> =
    &'a mut dyn for<'k> FnMut(&'k str, Revision) -> Result<bool, StoreError>;

/// Read access to the tables, inside one consistent snapshot.
pub(crate) trait ReadTables {
    /// The counters.
    fn meta(&self) -> Result<Meta, StoreError>;
    /// The newest revision of a live key.
    fn latest(&self, key: &str) -> Result<Option<Revision>, StoreError>;
    /// One log row.
    fn entry(&self, revision: Revision) -> Result<Option<LogEntry>, StoreError>;
    /// Live keys in `[start, end)` with their newest revision, in key order.
    fn scan_latest(&self, start: &str, end: &str, visit: KeyVisit<'_>) -> Result<(), StoreError>;
    /// History pairs with a key in `[start, end)`, ordered by key then revision.
    fn scan_history(&self, start: &str, end: &str, visit: KeyVisit<'_>) -> Result<(), StoreError>;
    /// Log rows from revision `from` on, in revision order.
    fn scan_log(
        &self,
        from: Revision,
        visit: Visit<'_, (Revision, LogEntry)>,
    ) -> Result<(), StoreError>;
    /// The oldest revision of `key` in `(after, upto]`, if any.
    fn next_revision_of(
        &self,
        key: &str,
        after: Revision,
        upto: Revision,
    ) -> Result<Option<Revision>, StoreError>;
}

/// Write access to the tables, inside one transaction.
pub(crate) trait WriteTables: ReadTables {
    /// Adds a log row and its history pair.
    fn append(&mut self, revision: Revision, entry: &LogEntry) -> Result<(), StoreError>;
    /// Removes a log row and its history pair.
    fn remove(&mut self, revision: Revision, key: &str) -> Result<(), StoreError>;
    /// Points `key` at its newest row.
    fn set_latest(&mut self, key: &str, revision: Revision) -> Result<(), StoreError>;
    /// Forgets a deleted key.
    fn clear_latest(&mut self, key: &str) -> Result<(), StoreError>;
    /// Stores the counters.
    fn set_meta(&mut self, meta: Meta) -> Result<(), StoreError>;
}

/// A place the tables live: a redb file, or memory.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Whether reads may wait on the disk, so must run on a blocking thread.
    const BLOCKING_READS: bool;
    /// Runs `f` on a consistent snapshot of the committed state.
    fn read<R>(
        &self,
        f: impl FnOnce(&dyn ReadTables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;
    /// Runs `f` in one transaction and commits it durably if `f` succeeds; an error
    /// from `f` or from the commit discards every change `f` made.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn WriteTables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;
}

/// One mutation, as queued for the writer.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// What a successful [`WriteOp`] returns to its caller.
#[derive(Debug, Clone)]
pub(crate) enum WriteOutcome {
    /// A create or update, at this revision.
    Put(Revision),
    /// A delete, at this revision, of this value.
    Deleted(Revision, KeyValue),
}

/// The result of one op: the caller's answer plus the event to publish, or the op's
/// own failure (a failed compare-and-swap), which does not abort the batch.
pub(crate) type Applied = Result<(WriteOutcome, Event), StoreError>;

/// A backend fault: an index or log row that must exist is missing.
pub(crate) fn corrupt(what: String) -> StoreError {
    StoreError::Backend(what.into())
}

/// The live value of `key`.
pub(crate) fn get(t: &dyn ReadTables, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let Some(revision) = t.latest(key)? else {
        return Ok(None);
    };
    Ok(Some(live_entry(t, key, revision)?.into_kv(revision)))
}

fn live_entry(t: &dyn ReadTables, key: &str, revision: Revision) -> Result<LogEntry, StoreError> {
    t.entry(revision)?
        .ok_or_else(|| corrupt(format!("key {key} points at missing revision {revision}")))
}

/// Applies `op` at `revision`. The outer error is a backend fault that must abort the
/// whole transaction; the inner one is the op's own refusal.
pub(crate) fn apply(
    t: &mut dyn WriteTables,
    revision: Revision,
    op: WriteOp,
) -> Result<Applied, StoreError> {
    match op {
        WriteOp::Create { key, value } => {
            if t.latest(&key)?.is_some() {
                return Ok(Err(StoreError::AlreadyExists(key)));
            }
            let entry = LogEntry {
                key,
                value,
                create_revision: revision,
                prev_revision: 0,
                tombstone: false,
            };
            put(t, revision, entry, None)
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let Some(prev) = get(t, &key)? else {
                return Ok(Err(StoreError::NotFound(key)));
            };
            if prev.mod_revision != expected {
                return Ok(Err(conflict(key, expected, prev)));
            }
            let entry = LogEntry {
                key,
                value,
                create_revision: prev.create_revision,
                prev_revision: prev.mod_revision,
                tombstone: false,
            };
            put(t, revision, entry, Some(prev))
        }
        WriteOp::Delete { key, expected } => {
            let Some(prev) = get(t, &key)? else {
                return Ok(Err(StoreError::NotFound(key)));
            };
            if let Some(expected) = expected.filter(|&e| e != prev.mod_revision) {
                return Ok(Err(conflict(key, expected, prev)));
            }
            let entry = LogEntry {
                key,
                value: Bytes::new(),
                create_revision: prev.create_revision,
                prev_revision: prev.mod_revision,
                tombstone: true,
            };
            t.append(revision, &entry)?;
            t.clear_latest(&entry.key)?;
            let kv = KeyValue {
                key: entry.key,
                value: prev.value.clone(),
                create_revision: prev.create_revision,
                mod_revision: revision,
            };
            let event = Event {
                kind: EventKind::Delete,
                kv: kv.clone(),
                prev: Some(prev),
            };
            Ok(Ok((WriteOutcome::Deleted(revision, kv), event)))
        }
    }
}

fn conflict(key: String, expected: Revision, current: KeyValue) -> StoreError {
    StoreError::Conflict {
        key,
        expected,
        current: Some(Box::new(current)),
    }
}

fn put(
    t: &mut dyn WriteTables,
    revision: Revision,
    entry: LogEntry,
    prev: Option<KeyValue>,
) -> Result<Applied, StoreError> {
    t.append(revision, &entry)?;
    t.set_latest(&entry.key, revision)?;
    let event = Event {
        kind: EventKind::Put,
        kv: entry.into_kv(revision),
        prev,
    };
    Ok(Ok((WriteOutcome::Put(revision), event)))
}

/// Checks that `revision` (non-zero) may be read: retained and not in the future.
fn check_readable(meta: Meta, revision: Revision) -> Result<(), StoreError> {
    if revision > meta.revision {
        return Err(StoreError::FutureRevision(revision));
    }
    if revision < meta.compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted: meta.compacted,
        });
    }
    Ok(())
}

/// Answers a range request from one snapshot.
pub(crate) fn range(
    t: &dyn ReadTables,
    request: &RangeRequest,
) -> Result<RangeResponse, StoreError> {
    let meta = t.meta()?;
    let at = if request.revision == 0 {
        meta.revision
    } else {
        check_readable(meta, request.revision)?;
        request.revision
    };
    let mut collector = Collector {
        limit: if request.limit == 0 {
            usize::MAX
        } else {
            request.limit
        },
        kvs: Vec::new(),
        more: false,
    };
    let (start, end) = (request.keys.start.as_str(), request.keys.end.as_str());
    if start < end {
        if at == meta.revision {
            t.scan_latest(start, end, &mut |key, revision| {
                collector.offer(t, key, revision)
            })?;
        } else {
            range_past(t, start, end, at, &mut collector)?;
        }
    }
    Ok(RangeResponse {
        kvs: collector.kvs,
        more: collector.more,
        revision: at,
    })
}

/// Accumulates range results up to the limit.
struct Collector {
    limit: usize,
    kvs: Vec<KeyValue>,
    more: bool,
}

impl Collector {
    /// Adds `key` as of its row at `revision` unless that row is a tombstone.
    /// Returns false once the limit is exceeded.
    fn offer(
        &mut self,
        t: &dyn ReadTables,
        key: &str,
        revision: Revision,
    ) -> Result<bool, StoreError> {
        let entry = live_entry(t, key, revision)?;
        if entry.tombstone {
            return Ok(true);
        }
        if self.kvs.len() == self.limit {
            self.more = true;
            return Ok(false);
        }
        self.kvs.push(entry.into_kv(revision));
        Ok(true)
    }
}

/// A range at a past revision: per key, the newest history pair at or below `at`.
fn range_past(
    t: &dyn ReadTables,
    start: &str,
    end: &str,
    at: Revision,
    collector: &mut Collector,
) -> Result<(), StoreError> {
    // The key being scanned, and its newest revision at or below `at` so far.
    let mut current: Option<(String, Option<Revision>)> = None;
    let mut stopped = false;
    t.scan_history(start, end, &mut |key, revision| {
        let visible = (revision <= at).then_some(revision);
        match &mut current {
            Some((k, best)) if k == key => {
                if visible.is_some() {
                    *best = visible;
                }
                return Ok(true);
            }
            _ => {}
        }
        if let Some((k, Some(best))) = current.take()
            && !collector.offer(t, &k, best)?
        {
            stopped = true;
            return Ok(false);
        }
        current = Some((key.to_owned(), visible));
        Ok(true)
    })?;
    if !stopped && let Some((k, Some(best))) = current {
        collector.offer(t, &k, best)?;
    }
    Ok(())
}

/// A chunk of watch history.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Events for the prefix, in revision order.
    pub events: Vec<Event>,
    /// Where the next chunk starts.
    pub next: Revision,
}

/// Reads the events for keys under `prefix` with revisions in `[from, upto]`, scanning
/// at most `max_rows` log rows.
pub(crate) fn replay(
    t: &dyn ReadTables,
    prefix: &str,
    from: Revision,
    upto: Revision,
    max_rows: usize,
) -> Result<Replay, StoreError> {
    let meta = t.meta()?;
    if from < meta.compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted: meta.compacted,
        });
    }
    let mut events = Vec::new();
    let mut next = upto + 1;
    let mut rows = 0;
    t.scan_log(from, &mut |(revision, entry)| {
        if revision > upto {
            return Ok(false);
        }
        if entry.key.starts_with(prefix) {
            events.push(event_for(t, revision, entry)?);
        }
        rows += 1;
        if rows == max_rows {
            next = revision + 1;
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(Replay { events, next })
}

/// Rebuilds the watch event a log row recorded.
fn event_for(t: &dyn ReadTables, revision: Revision, entry: LogEntry) -> Result<Event, StoreError> {
    let prev = match entry.prev_revision {
        0 => None,
        p => Some(live_entry(t, &entry.key, p)?.into_kv(p)),
    };
    if !entry.tombstone {
        return Ok(Event {
            kind: EventKind::Put,
            kv: entry.into_kv(revision),
            prev,
        });
    }
    let prev = prev.ok_or_else(|| {
        corrupt(format!(
            "tombstone at revision {revision} has no previous row"
        ))
    })?;
    Ok(Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: entry.key,
            value: prev.value.clone(),
            create_revision: prev.create_revision,
            mod_revision: revision,
        },
        prev: Some(prev),
    })
}

/// Validates a compaction target: history cannot be dropped beyond the present.
pub(crate) fn check_compact(meta: Meta, revision: Revision) -> Result<(), StoreError> {
    if revision > meta.revision {
        return Err(StoreError::FutureRevision(revision));
    }
    Ok(())
}

/// One bounded compaction step towards `target`: looks at up to `batch` log rows
/// from `cursor` and removes the ones no read at or after `target` can reach.
/// Returns the next cursor, or `None` when every row below `target` was visited.
pub(crate) fn compact_step(
    t: &mut dyn WriteTables,
    target: Revision,
    cursor: Revision,
    batch: usize,
) -> Result<Option<Revision>, StoreError> {
    let mut rows = Vec::new();
    t.scan_log(cursor, &mut |(revision, entry)| {
        if revision >= target {
            return Ok(false);
        }
        rows.push((revision, entry.key, entry.tombstone));
        Ok(rows.len() < batch)
    })?;
    let next = match rows.last() {
        Some(&(revision, _, _)) if rows.len() == batch => Some(revision + 1),
        _ => None,
    };
    // Rows are visited oldest first, so a key's superseded rows always go before (or
    // with) the tombstone that superseded them: a crash between steps never makes a
    // deleted key visible again.
    for (revision, key, tombstone) in rows {
        // A row superseded exactly at `target` stays: the row at `target` is still
        // watchable, and its event reports this one as the previous value.
        let obsolete = tombstone
            || (t.latest(&key)? != Some(revision)
                && t.next_revision_of(&key, revision, target - 1)?.is_some());
        if obsolete {
            t.remove(revision, &key)?;
        }
    }
    Ok(next)
}
