//! One test suite, run against every backend.
//!
//! Each behaviour is a generic async fn taking a way to open a fresh store; the
//! `suite!` macro instantiates every one of them once per backend (rg's testutil
//! pattern), so the backends cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tempfile::TempDir;

use crate::{
    EmbeddedStore, Event, EventKind, KeyValue, MemoryStore, RangeRequest, Revision, Store,
    StoreError, StoreOptions,
};

/// A store plus whatever must outlive it.
struct Fixture {
    store: Arc<dyn Store>,
    /// Set for a store on disk, which keeps its directory until dropped.
    dir: Option<TempDir>,
}

/// Small batches, so that every test also walks the chunked compaction and replay.
fn options() -> StoreOptions {
    StoreOptions {
        compaction_batch: 3,
        replay_batch: 3,
        max_batch: 16,
        ..StoreOptions::default()
    }
}

fn memory(options: StoreOptions) -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::with_options(options).expect("memory store")),
        dir: None,
    }
}

fn embedded(options: StoreOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open_with(&dir.path().join("store.redb"), options).expect("open");
    Fixture {
        store: Arc::new(store),
        dir: Some(dir),
    }
}

type Open = fn(StoreOptions) -> Fixture;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::memory).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::embedded).await;
                }
            )*
        }
    };
}

suite!(
    create_then_get,
    update_is_compare_and_swap,
    delete_with_and_without_precondition,
    range_with_limit_pages_in_key_order,
    range_at_past_revision,
    watch_replays_history_then_goes_live,
    watch_is_gapless_under_concurrent_writes,
    watch_from_zero_sees_only_new_changes,
    compaction_keeps_latest_and_rejects_old_revisions,
    lagging_watcher_is_dropped,
    concurrent_writers_get_distinct_revisions,
    model_check,
);

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(kvs: &[KeyValue]) -> Vec<(&str, &[u8])> {
    kvs.iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_ref()))
        .collect()
}

async fn create_then_get(open: Open) {
    let f = open(options());
    let s = &*f.store;
    assert_eq!(s.current_revision().await.unwrap(), 0);
    assert_eq!(s.create("/a", v("1")).await.unwrap(), 1);
    let kv = s.get("/a").await.unwrap().unwrap();
    assert_eq!(
        kv,
        KeyValue {
            key: "/a".into(),
            value: v("1"),
            create_revision: 1,
            mod_revision: 1,
        }
    );
    assert!(matches!(
        s.create("/a", v("2")).await,
        Err(StoreError::AlreadyExists(k)) if k == "/a"
    ));
    // A refused write does not use up a revision.
    assert_eq!(s.current_revision().await.unwrap(), 1);
    assert_eq!(s.get("/missing").await.unwrap(), None);
}

async fn update_is_compare_and_swap(open: Open) {
    let f = open(options());
    let s = &*f.store;
    s.create("/a", v("1")).await.unwrap();
    s.create("/b", v("1")).await.unwrap();
    match s.update("/a", v("x"), 7).await {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected), ("/a", 7));
            assert_eq!(current.unwrap().value, v("1"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(s.update("/a", v("2"), 1).await.unwrap(), 3);
    let kv = s.get("/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (v("2"), 1, 3)
    );
    // The old revision no longer matches.
    assert!(matches!(
        s.update("/a", v("3"), 1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.update("/nope", v("3"), 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.current_revision().await.unwrap(), 3);
}

async fn delete_with_and_without_precondition(open: Open) {
    let f = open(options());
    let s = &*f.store;
    s.create("/a", v("1")).await.unwrap();
    s.create("/b", v("1")).await.unwrap();
    assert!(matches!(
        s.delete("/a", Some(2)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (revision, kv) = s.delete("/a", Some(1)).await.unwrap();
    assert_eq!(revision, 3);
    assert_eq!(
        kv,
        KeyValue {
            key: "/a".into(),
            value: v("1"),
            create_revision: 1,
            mod_revision: 3,
        }
    );
    assert_eq!(s.get("/a").await.unwrap(), None);
    assert!(matches!(
        s.delete("/a", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.delete("/b", None).await.unwrap().0, 4);
    // A new incarnation gets a new create revision.
    assert_eq!(s.create("/a", v("again")).await.unwrap(), 5);
    assert_eq!(s.get("/a").await.unwrap().unwrap().create_revision, 5);
    assert!(
        s.range(RangeRequest::prefix("/b"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
}

async fn range_with_limit_pages_in_key_order(open: Open) {
    let f = open(options());
    let s = &*f.store;
    for key in ["/p/d", "/p/b", "/q/x", "/p/a", "/p/c", "/p"] {
        s.create(key, v(key)).await.unwrap();
    }
    let mut request = RangeRequest::prefix("/p/");
    request.limit = 2;
    let page = s.range(request.clone()).await.unwrap();
    assert_eq!(keys(&page.kvs), [("/p/a", &b"/p/a"[..]), ("/p/b", b"/p/b")]);
    assert!(page.more);
    assert_eq!(page.revision, 6);
    // The API server's continue: the last key plus NUL, at the same revision.
    s.create("/p/aa", v("later")).await.unwrap();
    request.keys.start = "/p/b\0".into();
    request.revision = page.revision;
    let page = s.range(request).await.unwrap();
    assert_eq!(keys(&page.kvs), [("/p/c", &b"/p/c"[..]), ("/p/d", b"/p/d")]);
    assert!(!page.more);
    assert_eq!(page.revision, 6);
    let all = s.range(RangeRequest::prefix("/p/")).await.unwrap();
    assert_eq!(all.kvs.len(), 5);
    assert_eq!(all.revision, 7);
    // An empty or inverted interval is empty, not an error.
    let mut inverted = RangeRequest::prefix("/p/");
    std::mem::swap(&mut inverted.keys.start, &mut inverted.keys.end);
    assert!(s.range(inverted).await.unwrap().kvs.is_empty());
}

async fn range_at_past_revision(open: Open) {
    let f = open(options());
    let s = &*f.store;
    s.create("/a", v("a1")).await.unwrap(); // 1
    s.update("/a", v("a2"), 1).await.unwrap(); // 2
    s.create("/b", v("b1")).await.unwrap(); // 3
    s.delete("/a", None).await.unwrap(); // 4
    s.create("/c", v("c1")).await.unwrap(); // 5
    let at = |revision, limit| RangeRequest {
        revision,
        limit,
        ..RangeRequest::prefix("/")
    };
    let r = s.range(at(1, 0)).await.unwrap();
    assert_eq!((keys(&r.kvs), r.revision), (vec![("/a", &b"a1"[..])], 1));
    assert_eq!(r.kvs[0].mod_revision, 1);
    let r = s.range(at(2, 0)).await.unwrap();
    assert_eq!(keys(&r.kvs), [("/a", &b"a2"[..])]);
    assert_eq!((r.kvs[0].create_revision, r.kvs[0].mod_revision), (1, 2));
    let r = s.range(at(3, 0)).await.unwrap();
    assert_eq!(keys(&r.kvs), [("/a", &b"a2"[..]), ("/b", b"b1")]);
    let r = s.range(at(3, 1)).await.unwrap();
    assert_eq!((keys(&r.kvs), r.more), (vec![("/a", &b"a2"[..])], true));
    let r = s.range(at(4, 0)).await.unwrap();
    assert_eq!(keys(&r.kvs), [("/b", &b"b1"[..])]);
    let r = s.range(at(5, 1)).await.unwrap();
    assert_eq!((keys(&r.kvs), r.more), (vec![("/b", &b"b1"[..])], true));
    assert!(matches!(
        s.range(at(6, 0)).await,
        Err(StoreError::FutureRevision(6))
    ));
}

/// Reads `n` events, failing on an error or a stall.
async fn take(stream: &mut crate::WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("watch stalled");
        events.push(next.expect("watch ended").expect("watch failed"));
    }
    events
}

async fn watch_replays_history_then_goes_live(open: Open) {
    let f = open(options());
    let s = &*f.store;
    s.create("/w/a", v("1")).await.unwrap(); // 1
    s.create("/other", v("x")).await.unwrap(); // 2
    s.update("/w/a", v("2"), 1).await.unwrap(); // 3
    s.create("/w/b", v("1")).await.unwrap(); // 4
    s.delete("/w/a", Some(3)).await.unwrap(); // 5
    for i in 0..5 {
        s.create(&format!("/x/{i}"), v("x")).await.unwrap(); // 6..=10
    }
    let mut watch = s.watch("/w/", 3).await.unwrap();
    let events = take(&mut watch, 3).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.kind.clone(), e.kv.key.as_str(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, "/w/a", 3),
            (EventKind::Put, "/w/b", 4),
            (EventKind::Delete, "/w/a", 5),
        ]
    );
    assert_eq!(events[0].prev.as_ref().unwrap().value, v("1"));
    assert_eq!(events[1].prev, None);
    // A delete carries the deleted value and the previous state.
    assert_eq!(events[2].kv.value, v("2"));
    assert_eq!(events[2].prev.as_ref().unwrap().mod_revision, 3);
    s.create("/w/c", v("1")).await.unwrap(); // 11
    s.create("/y", v("1")).await.unwrap(); // 12
    s.update("/w/c", v("2"), 11).await.unwrap(); // 13
    let live = take(&mut watch, 2).await;
    let revisions: Vec<_> = live.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions, [11, 13]);
    assert_eq!(live[1].prev.as_ref().unwrap().mod_revision, 11);
}

async fn watch_is_gapless_under_concurrent_writes(open: Open) {
    const TOTAL: i64 = 120;
    let f = open(options());
    let store = Arc::clone(&f.store);
    for i in 0..20 {
        store.create(&format!("/g/{i:04}"), v("x")).await.unwrap();
    }
    let writer = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            for i in 20..TOTAL {
                store.create(&format!("/g/{i:04}"), v("x")).await.unwrap();
            }
        }
    });
    // Start while the writer runs, from a revision in the past: the replay and the
    // live phase must meet without a gap or a duplicate.
    let mut watch = store.watch("/g/", 5).await.unwrap();
    let events = take(&mut watch, (TOTAL - 4) as usize).await;
    writer.await.unwrap();
    let revisions: Vec<_> = events.iter().map(|e| e.kv.mod_revision).collect();
    let expected: Vec<_> = (5..=TOTAL).collect();
    assert_eq!(revisions, expected);
}

async fn watch_from_zero_sees_only_new_changes(open: Open) {
    let f = open(options());
    let s = &*f.store;
    s.create("/n/old", v("1")).await.unwrap();
    let mut watch = s.watch("/n/", 0).await.unwrap();
    s.create("/n/new", v("1")).await.unwrap();
    let events = take(&mut watch, 1).await;
    assert_eq!(events[0].kv.key, "/n/new");
    assert_eq!(events[0].kv.mod_revision, 2);
}

async fn compaction_keeps_latest_and_rejects_old_revisions(open: Open) {
    let f = open(options());
    let s = &*f.store;
    s.create("/a", v("1")).await.unwrap(); // 1
    for (expected, value) in [(1, "2"), (2, "3"), (3, "4")] {
        s.update("/a", v(value), expected).await.unwrap(); // 2, 3, 4
    }
    s.create("/b", v("1")).await.unwrap(); // 5
    s.create("/gone", v("1")).await.unwrap(); // 6
    s.delete("/gone", None).await.unwrap(); // 7
    s.delete("/b", None).await.unwrap(); // 8
    s.compact(8).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 8);
    let old = RangeRequest {
        revision: 7,
        ..RangeRequest::prefix("/")
    };
    assert!(matches!(
        s.range(old).await,
        Err(StoreError::Compacted {
            requested: 7,
            compacted: 8
        })
    ));
    assert!(matches!(
        s.watch("/", 7).await.err(),
        Some(StoreError::Compacted { .. })
    ));
    let at = RangeRequest {
        revision: 8,
        ..RangeRequest::prefix("/")
    };
    let r = s.range(at).await.unwrap();
    assert_eq!(keys(&r.kvs), [("/a", &b"4"[..])]);
    assert_eq!(r.kvs[0].mod_revision, 4);
    // A watch from the compaction revision still sees the delete with its value.
    let mut watch = s.watch("/", 8).await.unwrap();
    let events = take(&mut watch, 1).await;
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(events[0].kv.value, v("1"));
    // Writes and compactions go on; an older target is a no-op, a future one an error.
    s.update("/a", v("5"), 4).await.unwrap(); // 9
    s.compact(9).await.unwrap();
    s.compact(3).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 9);
    assert!(matches!(
        s.compact(100).await,
        Err(StoreError::FutureRevision(100))
    ));
    let r = s.range(RangeRequest::prefix("/")).await.unwrap();
    assert_eq!(keys(&r.kvs), [("/a", &b"5"[..])]);
    assert_eq!(r.kvs[0].create_revision, 1);
    let events = take(&mut watch, 1).await;
    assert_eq!(events[0].kv.mod_revision, 9);
    assert_eq!(events[0].prev.as_ref().unwrap().mod_revision, 4);
}

async fn lagging_watcher_is_dropped(open: Open) {
    let f = open(StoreOptions {
        watch_buffer: 4,
        ..options()
    });
    let s = &*f.store;
    let mut watch = s.watch("/l/", 0).await.unwrap();
    // Poll once with nothing to read: the watcher catches up and registers live.
    let idle = tokio::time::timeout(std::time::Duration::from_millis(50), watch.next());
    assert!(idle.await.is_err());
    for i in 0..10 {
        s.create(&format!("/l/{i}"), v("1")).await.unwrap();
    }
    let events = take(&mut watch, 4).await;
    assert_eq!(events[0].kv.key, "/l/0");
    assert!(matches!(
        watch.next().await,
        Some(Err(StoreError::WatcherLagged))
    ));
    assert!(watch.next().await.is_none());
    // The store carries on for everyone else.
    assert_eq!(s.current_revision().await.unwrap(), 10);
}

async fn concurrent_writers_get_distinct_revisions(open: Open) {
    let f = open(options());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            let key = format!("/c/{i}");
            let created = store.create(&key, v("0")).await.unwrap();
            let updated = store.update(&key, v("1"), created).await.unwrap();
            // Everyone races for the same counter key, too.
            let raced = store.create("/c/shared", v("x")).await;
            (created, updated, raced.is_ok())
        }));
    }
    let mut revisions = Vec::new();
    let mut winners = 0;
    for task in tasks {
        let (created, updated, won) = task.await.unwrap();
        assert!(updated > created);
        revisions.extend([created, updated]);
        winners += usize::from(won);
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 128);
    assert_eq!(winners, 1);
    assert_eq!(f.store.current_revision().await.unwrap(), 129);
}

/// The reference model: per revision, the full key → value map.
#[derive(Default)]
struct Model {
    live: BTreeMap<String, KeyValue>,
    snapshots: Vec<BTreeMap<String, KeyValue>>,
    compacted: Revision,
}

impl Model {
    fn revision(&self) -> Revision {
        self.snapshots.len() as Revision
    }

    fn commit(&mut self) -> Revision {
        self.snapshots.push(self.live.clone());
        self.revision()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u8),
    /// Key, value, whether the expected revision is right.
    Update(u8, u8, bool),
    /// Key, precondition: none, right or wrong.
    Delete(u8, Option<bool>),
    /// Compact this fraction (in 1/8ths) of the retained history.
    Compact(u8),
    /// Range at this fraction of the retained history, with this limit.
    Range(u8, usize),
}

fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        4 => (0..6u8, any::<u8>(), any::<bool>()).prop_map(|(k, v, ok)| Op::Update(k, v, ok)),
        2 => (0..6u8, proptest::option::of(any::<bool>())).prop_map(|(k, e)| Op::Delete(k, e)),
        1 => (0..=8u8).prop_map(Op::Compact),
        3 => (0..=8u8, 0..4usize).prop_map(|(f, l)| Op::Range(f, l)),
    ]
}

fn key(k: u8) -> String {
    format!("/m/{k}")
}

/// Applies `ops` to the store and the model, checking every answer.
async fn check_against_model(store: &dyn Store, ops: Vec<Op>) {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Create(k, value) => {
                let result = store.create(&key(k), Bytes::from(vec![value])).await;
                if model.live.contains_key(&key(k)) {
                    assert!(matches!(result, Err(StoreError::AlreadyExists(_))));
                } else {
                    let revision = model.revision() + 1;
                    assert_eq!(result.unwrap(), revision);
                    model.live.insert(
                        key(k),
                        KeyValue {
                            key: key(k),
                            value: Bytes::from(vec![value]),
                            create_revision: revision,
                            mod_revision: revision,
                        },
                    );
                    model.commit();
                }
            }
            Op::Update(k, value, right) => {
                let current = model.live.get(&key(k)).map(|kv| kv.mod_revision);
                let expected = match current {
                    Some(m) if right => m,
                    Some(m) => m + 1000,
                    None => 1,
                };
                let result = store
                    .update(&key(k), Bytes::from(vec![value]), expected)
                    .await;
                match current {
                    None => assert!(matches!(result, Err(StoreError::NotFound(_)))),
                    Some(_) if !right => {
                        assert!(matches!(result, Err(StoreError::Conflict { .. })))
                    }
                    Some(_) => {
                        let revision = model.revision() + 1;
                        assert_eq!(result.unwrap(), revision);
                        let kv = model.live.get_mut(&key(k)).unwrap();
                        kv.value = Bytes::from(vec![value]);
                        kv.mod_revision = revision;
                        model.commit();
                    }
                }
            }
            Op::Delete(k, precondition) => {
                let current = model.live.get(&key(k)).map(|kv| kv.mod_revision);
                let expected = precondition.map(|right| match current {
                    Some(m) if right => m,
                    Some(m) => m + 1000,
                    None => 1,
                });
                let result = store.delete(&key(k), expected).await;
                match current {
                    None => assert!(matches!(result, Err(StoreError::NotFound(_)))),
                    Some(_) if precondition == Some(false) => {
                        assert!(matches!(result, Err(StoreError::Conflict { .. })))
                    }
                    Some(_) => {
                        let revision = model.revision() + 1;
                        let (got, kv) = result.unwrap();
                        assert_eq!(got, revision);
                        let old = model.live.remove(&key(k)).unwrap();
                        assert_eq!((kv.value, kv.mod_revision), (old.value, revision));
                        model.commit();
                    }
                }
            }
            Op::Compact(eighths) => {
                let span = model.revision() - model.compacted;
                let target = model.compacted + span * Revision::from(eighths) / 8;
                store.compact(target).await.unwrap();
                model.compacted = model.compacted.max(target);
                assert_eq!(store.compacted_revision().await.unwrap(), model.compacted);
            }
            Op::Range(eighths, limit) => {
                let span = model.revision() - model.compacted;
                let at = model.compacted + span * Revision::from(eighths) / 8;
                if at == 0 {
                    continue;
                }
                let request = RangeRequest {
                    revision: at,
                    limit,
                    ..RangeRequest::prefix("/m/")
                };
                let got = store.range(request).await.unwrap();
                let want: Vec<_> = model.snapshots[(at - 1) as usize]
                    .values()
                    .cloned()
                    .collect();
                let cut = if limit == 0 {
                    want.len()
                } else {
                    limit.min(want.len())
                };
                assert_eq!(got.kvs, want[..cut], "range at {at} limit {limit}");
                assert_eq!(got.more, cut < want.len());
            }
        }
        assert_eq!(store.current_revision().await.unwrap(), model.revision());
    }
    // Every retained revision reads exactly as the model saw it, and a watch from
    // the oldest one replays exactly the changes in between.
    let oldest = model.compacted.max(1);
    for at in oldest..=model.revision() {
        let request = RangeRequest {
            revision: at,
            ..RangeRequest::prefix("/m/")
        };
        let got = store.range(request).await.unwrap();
        let want: Vec<_> = model.snapshots[(at - 1) as usize]
            .values()
            .cloned()
            .collect();
        assert_eq!(got.kvs, want, "range at {at}");
    }
    if model.revision() >= oldest {
        let mut watch = store.watch("/m/", oldest).await.unwrap();
        let events = take(&mut watch, (model.revision() - oldest + 1) as usize).await;
        for (event, at) in events.iter().zip(oldest..) {
            assert_eq!(event.kv.mod_revision, at);
            let live = model.snapshots[(at - 1) as usize].get(&event.kv.key);
            match event.kind {
                EventKind::Put => assert_eq!(Some(&event.kv), live),
                EventKind::Delete => assert_eq!(live, None),
            }
        }
    }
}

async fn model_check(open: Open) {
    use proptest::test_runner::{Config, TestRunner};
    // Every write on disk is an fsync: fewer cases there.
    let cases = if open(options()).dir.is_some() { 8 } else { 48 };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        runner.run(&proptest::collection::vec(op_strategy(), 1..60), |ops| {
            let f = open(options());
            handle.block_on(check_against_model(&*f.store, ops));
            Ok(())
        })
    })
    .await
    .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}
