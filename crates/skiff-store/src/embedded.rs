//! [`EmbeddedStore`]: the default, durable, single-file store on redb.
//!
//! Every commit is fsynced before any caller hears of it (redb's
//! `Durability::Immediate`), and redb's copy-on-write pages with checksummed commit
//! slots mean the file opens after a crash at any moment, holding exactly the
//! acknowledged writes. Throughput comes from group commit (see the engine): many
//! concurrent writes share one transaction and one fsync.
//!
//! The four MVCC tables (see the crate's `mvcc` module) are redb tables:
//! `log: i64 → (key, value, create_revision, prev_revision, tombstone)`,
//! `latest: key → i64`, `history: (key, i64) → ()` and `meta: name → i64`.

use std::ops::Bound;
use std::path::Path;

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};

use crate::engine::{Engine, StoreOptions, forward_store};
use crate::mvcc::{Backend, KeyVisit, LogEntry, Meta, ReadTables, Visit, WriteTables};
use crate::{Revision, StoreError};

/// A log row: key, value, create revision, previous revision, tombstone.
type LogRow = (&'static str, &'static [u8], i64, i64, bool);

const LOG: TableDefinition<i64, LogRow> = TableDefinition::new("log");
const LATEST: TableDefinition<&str, i64> = TableDefinition::new("latest");
const HISTORY: TableDefinition<(&str, i64), ()> = TableDefinition::new("history");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// redb's page cache (its default is 1 GiB, all of it resident once the log has
/// grown that big). The API server reads the store only for single objects
/// (recently written, so cached) and for watches older than its watch cache;
/// pages beyond this are read back from the kernel's page cache, which does
/// not count against the server's memory.
const CACHE_BYTES: usize = 256 << 20;

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

fn db_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

/// The durable store: one redb file.
pub struct EmbeddedStore {
    engine: Engine<RedbBackend>,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file if it does not exist. A file left
    /// by a crash is repaired by redb on open, which may take a while for big files.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`open`](Self::open) with non-default tuning.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        {
            // Create the tables so that read transactions always find them.
            txn.open_table(LOG).map_err(db_error)?;
            txn.open_table(LATEST).map_err(db_error)?;
            txn.open_table(HISTORY).map_err(db_error)?;
            txn.open_table(META).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(EmbeddedStore {
            engine: Engine::start(RedbBackend { db }, options)?,
        })
    }
}

forward_store!(EmbeddedStore);

struct RedbBackend {
    db: Database,
}

impl Backend for RedbBackend {
    const BLOCKING_READS: bool = true;

    fn read<R>(
        &self,
        f: impl FnOnce(&dyn ReadTables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let tables = Tables {
            log: txn.open_table(LOG).map_err(db_error)?,
            latest: txn.open_table(LATEST).map_err(db_error)?,
            history: txn.open_table(HISTORY).map_err(db_error)?,
            meta: txn.open_table(META).map_err(db_error)?,
        };
        f(&tables)
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn WriteTables) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let result = {
            let mut tables = Tables {
                log: txn.open_table(LOG).map_err(db_error)?,
                latest: txn.open_table(LATEST).map_err(db_error)?,
                history: txn.open_table(HISTORY).map_err(db_error)?,
                meta: txn.open_table(META).map_err(db_error)?,
            };
            // On error the transaction is dropped uncommitted, which aborts it.
            f(&mut tables)?
        };
        txn.commit().map_err(db_error)?;
        Ok(result)
    }
}

/// The four tables of one transaction, read-only or writable.
struct Tables<L, A, H, M> {
    log: L,
    latest: A,
    history: H,
    meta: M,
}

impl<L, A, H, M> ReadTables for Tables<L, A, H, M>
where
    L: ReadableTable<i64, LogRow>,
    A: ReadableTable<&'static str, i64>,
    H: ReadableTable<(&'static str, i64), ()>,
    M: ReadableTable<&'static str, i64>,
{
    fn meta(&self) -> Result<Meta, StoreError> {
        let read = |name: &str| -> Result<i64, StoreError> {
            Ok(self
                .meta
                .get(name)
                .map_err(db_error)?
                .map_or(0, |v| v.value()))
        };
        Ok(Meta {
            revision: read(META_REVISION)?,
            compacted: read(META_COMPACTED)?,
        })
    }

    fn latest(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        Ok(self.latest.get(key).map_err(db_error)?.map(|v| v.value()))
    }

    fn entry(&self, revision: Revision) -> Result<Option<LogEntry>, StoreError> {
        Ok(self
            .log
            .get(revision)
            .map_err(db_error)?
            .map(|row| to_entry(row.value())))
    }

    fn scan_latest(&self, start: &str, end: &str, visit: KeyVisit<'_>) -> Result<(), StoreError> {
        for item in self.latest.range(start..end).map_err(db_error)? {
            let (key, revision) = item.map_err(db_error)?;
            if !visit(key.value(), revision.value())? {
                break;
            }
        }
        Ok(())
    }

    fn scan_history(&self, start: &str, end: &str, visit: KeyVisit<'_>) -> Result<(), StoreError> {
        let bounds = (
            Bound::Included((start, Revision::MIN)),
            Bound::Excluded((end, Revision::MIN)),
        );
        for item in self.history.range(bounds).map_err(db_error)? {
            let (pair, _) = item.map_err(db_error)?;
            let (key, revision) = pair.value();
            if !visit(key, revision)? {
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
        for item in self.log.range(from..).map_err(db_error)? {
            let (revision, row) = item.map_err(db_error)?;
            if !visit((revision.value(), to_entry(row.value())))? {
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
        let bounds = (Bound::Excluded((key, after)), Bound::Included((key, upto)));
        let mut range = self.history.range(bounds).map_err(db_error)?;
        match range.next() {
            Some(item) => Ok(Some(item.map_err(db_error)?.0.value().1)),
            None => Ok(None),
        }
    }
}

fn to_entry(
    (key, value, create_revision, prev_revision, tombstone): (&str, &[u8], i64, i64, bool),
) -> LogEntry {
    LogEntry {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        create_revision,
        prev_revision,
        tombstone,
    }
}

type WriteTablesOf<'t> = Tables<
    Table<'t, i64, LogRow>,
    Table<'t, &'static str, i64>,
    Table<'t, (&'static str, i64), ()>,
    Table<'t, &'static str, i64>,
>;

impl WriteTables for WriteTablesOf<'_> {
    fn append(&mut self, revision: Revision, entry: &LogEntry) -> Result<(), StoreError> {
        let row = (
            entry.key.as_str(),
            entry.value.as_ref(),
            entry.create_revision,
            entry.prev_revision,
            entry.tombstone,
        );
        self.log.insert(revision, row).map_err(db_error)?;
        self.history
            .insert((entry.key.as_str(), revision), ())
            .map_err(db_error)?;
        Ok(())
    }

    fn remove(&mut self, revision: Revision, key: &str) -> Result<(), StoreError> {
        self.log.remove(revision).map_err(db_error)?;
        self.history.remove((key, revision)).map_err(db_error)?;
        Ok(())
    }

    fn set_latest(&mut self, key: &str, revision: Revision) -> Result<(), StoreError> {
        self.latest.insert(key, revision).map_err(db_error)?;
        Ok(())
    }

    fn clear_latest(&mut self, key: &str) -> Result<(), StoreError> {
        self.latest.remove(key).map_err(db_error)?;
        Ok(())
    }

    fn set_meta(&mut self, meta: Meta) -> Result<(), StoreError> {
        self.meta
            .insert(META_REVISION, meta.revision)
            .map_err(db_error)?;
        self.meta
            .insert(META_COMPACTED, meta.compacted)
            .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::{RangeRequest, ReadView, Store};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_keeps_data_revision_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.create("/a", Bytes::from_static(b"1")).await.unwrap(); // 1
            store
                .update("/a", Bytes::from_static(b"2"), 1)
                .await
                .unwrap(); // 2
            store.create("/b", Bytes::from_static(b"1")).await.unwrap(); // 3
            store.delete("/b", None).await.unwrap(); // 4
            store.create("/c", Bytes::from_static(b"1")).await.unwrap(); // 5
            store.compact(3).await.unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 5);
        assert_eq!(store.compacted_revision().await.unwrap(), 3);
        let a = store.get("/a").await.unwrap().unwrap();
        assert_eq!(
            (a.value.as_ref(), a.create_revision, a.mod_revision),
            (&b"2"[..], 1, 2)
        );
        let past = RangeRequest {
            revision: 3,
            ..RangeRequest::prefix("/")
        };
        let keys: Vec<_> = store
            .range(past)
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, ["/a", "/b"]);
        let mut watch = store.watch("/", 3).await.unwrap();
        let revisions: Vec<_> = (&mut watch)
            .take(3)
            .map(|e| e.unwrap().kv.mod_revision)
            .collect()
            .await;
        assert_eq!(revisions, [3, 4, 5]);
        // Revisions carry on from where they were.
        assert_eq!(store.create("/d", Bytes::new()).await.unwrap(), 6);
    }

    #[test]
    fn a_second_open_of_the_same_file_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let _first = EmbeddedStore::open(&path).unwrap();
        assert!(matches!(
            EmbeddedStore::open(&path),
            Err(StoreError::Backend(_))
        ));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        std::fs::write(
            &path,
            b"definitely not a redb file, but long enough to look at",
        )
        .unwrap();
        assert!(EmbeddedStore::open(&path).is_err());
    }
}
