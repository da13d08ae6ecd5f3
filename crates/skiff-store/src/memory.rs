//! [`MemoryStore`]: the store's semantics with nothing on disk.
//!
//! It runs the very same MVCC layer, writer and watch hub as the embedded store; only
//! the four tables are `BTreeMap`s behind a lock. Use it in unit tests of code that
//! needs a [`Store`](crate::Store); everything is lost when it is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use crate::engine::{Engine, StoreOptions, forward_store};
use crate::mvcc::{Backend, KeyVisit, LogEntry, Meta, ReadTables, Visit, WriteTables};
use crate::{Revision, StoreError};

/// An in-memory [`Store`](crate::Store) with the embedded store's semantics.
pub struct MemoryStore {
    engine: Engine<MemoryBackend>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Result<Self, StoreError> {
        Self::with_options(StoreOptions::default())
    }

    /// An empty store with non-default tuning (small watch buffers in tests, say).
    pub fn with_options(options: StoreOptions) -> Result<Self, StoreError> {
        Ok(MemoryStore {
            engine: Engine::start(MemoryBackend::default(), options)?,
        })
    }
}

forward_store!(MemoryStore);

#[derive(Default)]
struct Tables {
    log: BTreeMap<Revision, LogEntry>,
    latest: BTreeMap<String, Revision>,
    history: BTreeSet<(String, Revision)>,
    meta: Meta,
}

#[derive(Default)]
struct MemoryBackend {
    tables: RwLock<Tables>,
}

impl Backend for MemoryBackend {
    const BLOCKING_READS: bool = false;

    fn read<R>(
        &self,
        f: impl FnOnce(&dyn ReadTables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // Only the writer thread writes, and it checks before it changes anything,
        // so a poisoned lock still guards consistent tables.
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        f(&*tables)
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn WriteTables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // Table operations in memory cannot fail, so `f` only fails before it changes
        // anything (a refused op is not a failure) or on a broken invariant; the
        // changes are made in place.
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut *tables)
    }
}

/// One bound on the history set.
type HistoryBound = Bound<(String, Revision)>;

/// Key bounds over the history set for keys in `[start, end)`.
fn history_bounds(start: &str, end: &str) -> (HistoryBound, HistoryBound) {
    (
        Bound::Included((start.to_owned(), Revision::MIN)),
        Bound::Excluded((end.to_owned(), Revision::MIN)),
    )
}

impl ReadTables for Tables {
    fn meta(&self) -> Result<Meta, StoreError> {
        Ok(self.meta)
    }

    fn latest(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        Ok(self.latest.get(key).copied())
    }

    fn entry(&self, revision: Revision) -> Result<Option<LogEntry>, StoreError> {
        Ok(self.log.get(&revision).cloned())
    }

    fn scan_latest(&self, start: &str, end: &str, visit: KeyVisit<'_>) -> Result<(), StoreError> {
        let bounds = (Bound::Included(start), Bound::Excluded(end));
        for (key, &revision) in self.latest.range::<str, _>(bounds) {
            if !visit(key, revision)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_history(&self, start: &str, end: &str, visit: KeyVisit<'_>) -> Result<(), StoreError> {
        for (key, revision) in self.history.range(history_bounds(start, end)) {
            if !visit(key, *revision)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_log(
        &self,
        from: Revision,
        visit: Visit<'_, (Revision, LogEntry)>,
    ) -> Result<(), StoreError> {
        for (&revision, entry) in self.log.range(from..) {
            if !visit((revision, entry.clone()))? {
                break;
            }
        }
        Ok(())
    }

    fn next_revision_of(
        &self,
        key: &str,
        after: Revision,
        upto: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        if after >= upto {
            return Ok(None);
        }
        let bounds = (
            Bound::Excluded((key.to_owned(), after)),
            Bound::Included((key.to_owned(), upto)),
        );
        Ok(self.history.range(bounds).next().map(|(_, r)| *r))
    }
}

impl WriteTables for Tables {
    fn append(&mut self, revision: Revision, entry: &LogEntry) -> Result<(), StoreError> {
        self.history.insert((entry.key.clone(), revision));
        self.log.insert(revision, entry.clone());
        Ok(())
    }

    fn remove(&mut self, revision: Revision, key: &str) -> Result<(), StoreError> {
        self.log.remove(&revision);
        self.history.remove(&(key.to_owned(), revision));
        Ok(())
    }

    fn set_latest(&mut self, key: &str, revision: Revision) -> Result<(), StoreError> {
        self.latest.insert(key.to_owned(), revision);
        Ok(())
    }

    fn clear_latest(&mut self, key: &str) -> Result<(), StoreError> {
        self.latest.remove(key);
        Ok(())
    }

    fn set_meta(&mut self, meta: Meta) -> Result<(), StoreError> {
        self.meta = meta;
        Ok(())
    }
}
