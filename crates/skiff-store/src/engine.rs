//! The machinery every backend shares: the group-commit writer and watch fan-out.
//!
//! **Group commit.** All writes go through one bounded queue to one writer thread.
//! The thread takes every request queued at that moment, applies them in one backend
//! transaction (each op still gets its own revision and its own compare-and-swap
//! result), commits once (one fsync for the embedded backend), and only then answers
//! the callers. Under load many writes share an fsync; alone, a write pays one.
//!
//! **Watch fan-out.** Right after a commit, still on the writer thread and under the
//! hub lock, the batch's events go to every matching watcher in revision order, and
//! the hub's `published` revision moves on. A watcher registers under that same lock,
//! saying which revision it needs next, so it can neither miss nor repeat an event.
//! A watch from the past first replays the log in bounded chunks until it has caught
//! up with `published`, then registers. Each watcher has a bounded buffer; one that
//! fills up is dropped and its stream ends with [`StoreError::WatcherLagged`].
//!
//! **Compaction** runs on the writer thread too (it is a write), one bounded step per
//! loop turn, interleaved with write batches so that writers never wait for a whole
//! compaction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::mvcc::{self, Backend, Meta, ReadTables, WriteOp, WriteOutcome};
use crate::{Event, KeyValue, RangeRequest, RangeResponse, Revision, StoreError, WatchStream};

/// Tuning knobs shared by every backend. The defaults suit the API server.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Events buffered per watcher before it is dropped as lagging.
    pub watch_buffer: usize,
    /// Most write requests committed in one transaction.
    pub max_batch: usize,
    /// Write requests that may wait for the writer before callers are held back.
    pub queue_depth: usize,
    /// Log rows one compaction step visits (one transaction each).
    pub compaction_batch: usize,
    /// Log rows one watch replay read visits.
    pub replay_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            watch_buffer: 4096,
            max_batch: 1024,
            queue_depth: 8192,
            compaction_batch: 1000,
            replay_batch: 1000,
        }
    }
}

/// A batch commit failure, shared by every caller in the batch.
#[derive(Debug, thiserror::Error)]
#[error("batch commit failed: {0}")]
struct BatchFailed(#[source] Arc<StoreError>);

fn shut_down() -> StoreError {
    StoreError::Backend("the store is shut down".into())
}

/// One registered live watcher.
struct Watcher {
    prefix: String,
    /// Events below this revision were already replayed (or are not wanted).
    from: Revision,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

/// Live watchers and the newest revision they have been sent.
#[derive(Default)]
struct Hub {
    /// Every event up to this revision has been offered to the registered watchers.
    published: Revision,
    watchers: Vec<Watcher>,
}

impl Hub {
    fn publish(&mut self, events: &[Event], revision: Revision) {
        self.watchers.retain(|w| {
            for event in events {
                if event.kv.mod_revision < w.from || !event.kv.key.starts_with(&w.prefix) {
                    continue;
                }
                match w.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.lagged.store(true, Ordering::Release);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            !w.tx.is_closed()
        });
        self.published = revision;
    }
}

/// State shared by the store handle, the writer thread and watch streams.
struct Shared<B> {
    backend: B,
    /// A leaf lock: nothing else is locked, read or awaited while it is held. The
    /// writer takes it after its commit to publish; watchers take it to register.
    hub: Mutex<Hub>,
    options: StoreOptions,
}

impl<B: Backend> Shared<B> {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the hub lock leaves the watcher list intact (each
        // operation on it is a single Vec call), so a poisoned lock is still usable.
        self.hub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a read, on a blocking thread if the backend may wait on the disk.
    async fn read<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn ReadTables) -> Result<R, StoreError> + Send + 'static,
    {
        if B::BLOCKING_READS {
            let shared = Arc::clone(self);
            tokio::task::spawn_blocking(move || shared.backend.read(f))
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?
        } else {
            self.backend.read(f)
        }
    }
}

enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A store over any [`Backend`]; the public stores wrap one of these.
pub(crate) struct Engine<B: Backend> {
    shared: Arc<Shared<B>>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl<B: Backend> Engine<B> {
    /// Starts the writer thread over `backend`.
    pub(crate) fn start(backend: B, options: StoreOptions) -> Result<Self, StoreError> {
        let meta = backend.read(|t| t.meta())?;
        let shared = Arc::new(Shared {
            backend,
            hub: Mutex::new(Hub {
                published: meta.revision,
                watchers: Vec::new(),
            }),
            options,
        });
        let (tx, rx) = mpsc::channel(shared.options.queue_depth.max(1));
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            meta,
            compaction: None,
        };
        let handle = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Engine {
            shared,
            requests: Some(tx),
            writer: Some(handle),
        })
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or_else(shut_down)?;
        requests
            .send(Request::Write { op, reply })
            .await
            .map_err(|_| shut_down())?;
        answer.await.map_err(|_| shut_down())?
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.shared.read(move |t| mvcc::get(t, &key)).await
    }

    pub(crate) async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.shared.read(move |t| mvcc::range(t, &request)).await
    }

    pub(crate) async fn meta(&self) -> Result<Meta, StoreError> {
        self.shared.read(|t| t.meta()).await
    }

    pub(crate) async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let op = WriteOp::Create {
            key: key.to_owned(),
            value,
        };
        match self.write(op).await? {
            WriteOutcome::Put(revision) => Ok(revision),
            WriteOutcome::Deleted(..) => Err(unexpected()),
        }
    }

    pub(crate) async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let op = WriteOp::Update {
            key: key.to_owned(),
            value,
            expected,
        };
        match self.write(op).await? {
            WriteOutcome::Put(revision) => Ok(revision),
            WriteOutcome::Deleted(..) => Err(unexpected()),
        }
    }

    pub(crate) async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(Revision, KeyValue), StoreError> {
        let op = WriteOp::Delete {
            key: key.to_owned(),
            expected,
        };
        match self.write(op).await? {
            WriteOutcome::Deleted(revision, kv) => Ok((revision, kv)),
            WriteOutcome::Put(_) => Err(unexpected()),
        }
    }

    pub(crate) async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or_else(shut_down)?;
        requests
            .send(Request::Compact { revision, reply })
            .await
            .map_err(|_| shut_down())?;
        answer.await.map_err(|_| shut_down())?
    }

    pub(crate) async fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> Result<WatchStream, StoreError> {
        let next = if from == 0 {
            self.shared.hub().published + 1
        } else {
            let meta = self.meta().await?;
            if from < meta.compacted {
                return Err(StoreError::Compacted {
                    requested: from,
                    compacted: meta.compacted,
                });
            }
            from
        };
        let state = WatchState::Replay {
            shared: Arc::downgrade(&self.shared),
            prefix: prefix.to_owned(),
            next,
            buffered: VecDeque::new(),
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::step)))
    }
}

fn unexpected() -> StoreError {
    StoreError::Backend("writer answered with the wrong kind of outcome".into())
}

impl<B: Backend> Drop for Engine<B> {
    fn drop(&mut self) {
        // Closing the queue stops the writer after its current batch; joining it
        // releases the backend (and the database file lock) before drop returns.
        self.requests = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// A compaction in progress on the writer thread.
struct Compaction {
    target: Revision,
    cursor: Revision,
    /// Whether `target` has been stored as the compaction revision yet.
    persisted: bool,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// The writer thread's state.
struct Writer<B> {
    shared: Arc<Shared<B>>,
    rx: mpsc::Receiver<Request>,
    /// The committed counters; only this thread changes them.
    meta: Meta,
    compaction: Option<Compaction>,
}

impl<B: Backend> Writer<B> {
    fn run(mut self) {
        let max_batch = self.shared.options.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            if self.compaction.is_none() {
                match self.rx.blocking_recv() {
                    Some(request) => batch.push(request),
                    None => break,
                }
            }
            while batch.len() < max_batch {
                match self.rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) if batch.is_empty() => {
                        self.close();
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            self.compaction_step();
        }
        self.close();
    }

    /// Ends every watch stream: the store is going away.
    fn close(&self) {
        self.shared.hub().watchers.clear();
    }

    fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        let mut ops = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            match request {
                Request::Write { op, reply } => {
                    ops.push(op);
                    replies.push(reply);
                }
                Request::Compact { revision, reply } => self.queue_compaction(revision, reply),
            }
        }
        if ops.is_empty() {
            return;
        }
        let meta = self.meta;
        let result = self.shared.backend.write(move |t| {
            let mut revision = meta.revision;
            let mut applied = Vec::with_capacity(ops.len());
            for op in ops {
                let outcome = mvcc::apply(t, revision + 1, op)?;
                if outcome.is_ok() {
                    revision += 1;
                }
                applied.push(outcome);
            }
            if revision != meta.revision {
                t.set_meta(Meta { revision, ..meta })?;
            }
            Ok((applied, revision))
        });
        match result {
            Ok((applied, revision)) => {
                self.meta.revision = revision;
                let mut events = Vec::new();
                let mut answers = Vec::with_capacity(applied.len());
                for outcome in applied {
                    answers.push(outcome.map(|(answer, event)| {
                        events.push(event);
                        answer
                    }));
                }
                self.shared.hub().publish(&events, revision);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that gave up no longer needs the answer.
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store batch commit failed");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(Box::new(BatchFailed(
                        Arc::clone(&e),
                    )))));
                }
            }
        }
    }

    fn queue_compaction(
        &mut self,
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    ) {
        let pending = self
            .compaction
            .as_ref()
            .map_or(self.meta.compacted, |c| c.target);
        match mvcc::check_compact(self.meta, revision) {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            // Already compacted that far, or about to be: answer with that compaction.
            Ok(()) if revision <= pending => match &mut self.compaction {
                Some(c) => c.waiters.push(reply),
                None => {
                    let _ = reply.send(Ok(()));
                }
            },
            Ok(()) => {
                // A higher target makes rows kept for the old one obsolete: rescan.
                let waiters = self.compaction.take().map_or_else(Vec::new, |c| c.waiters);
                let mut compaction = Compaction {
                    target: revision,
                    cursor: 0,
                    persisted: false,
                    waiters,
                };
                compaction.waiters.push(reply);
                self.compaction = Some(compaction);
            }
        }
    }

    fn compaction_step(&mut self) {
        let Some(c) = &mut self.compaction else {
            return;
        };
        let (target, cursor, persisted) = (c.target, c.cursor, c.persisted);
        let batch = self.shared.options.compaction_batch.max(1);
        let meta = Meta {
            compacted: target,
            ..self.meta
        };
        let result = self.shared.backend.write(move |t| {
            if !persisted {
                t.set_meta(meta)?;
            }
            mvcc::compact_step(t, target, cursor, batch)
        });
        match result {
            Ok(next) => {
                self.meta.compacted = target;
                c.persisted = true;
                match next {
                    Some(cursor) => c.cursor = cursor,
                    None => {
                        for waiter in std::mem::take(&mut c.waiters) {
                            let _ = waiter.send(Ok(()));
                        }
                        self.compaction = None;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store compaction step failed");
                let e = Arc::new(e);
                for waiter in std::mem::take(&mut c.waiters) {
                    let _ = waiter.send(Err(StoreError::Backend(Box::new(BatchFailed(
                        Arc::clone(&e),
                    )))));
                }
                self.compaction = None;
            }
        }
    }
}

/// A watch stream's state machine, unfolded into the stream.
enum WatchState<B> {
    /// Reading history until caught up with the hub.
    Replay {
        /// Weak, so an open watch does not keep a dropped store (and its file) alive.
        shared: Weak<Shared<B>>,
        prefix: String,
        /// The next revision this watcher needs.
        next: Revision,
        buffered: VecDeque<Event>,
    },
    /// Registered; events arrive from the writer.
    Live {
        rx: mpsc::Receiver<Event>,
        lagged: Arc<AtomicBool>,
    },
    Done,
}

impl<B: Backend> WatchState<B> {
    async fn step(mut self) -> Option<(Result<Event, StoreError>, Self)> {
        loop {
            match self {
                WatchState::Replay {
                    ref shared,
                    ref prefix,
                    ref mut next,
                    ref mut buffered,
                } => {
                    if let Some(event) = buffered.pop_front() {
                        return Some((Ok(event), self));
                    }
                    let shared = shared.upgrade()?;
                    let upto = {
                        let mut hub = shared.hub();
                        if *next > hub.published {
                            // Caught up: from here on the writer delivers.
                            let (tx, rx) = mpsc::channel(shared.options.watch_buffer.max(1));
                            let lagged = Arc::new(AtomicBool::new(false));
                            hub.watchers.push(Watcher {
                                prefix: prefix.clone(),
                                from: *next,
                                tx,
                                lagged: Arc::clone(&lagged),
                            });
                            self = WatchState::Live { rx, lagged };
                            continue;
                        }
                        hub.published
                    };
                    let (p, from, rows) =
                        (prefix.clone(), *next, shared.options.replay_batch.max(1));
                    match shared
                        .read(move |t| mvcc::replay(t, &p, from, upto, rows))
                        .await
                    {
                        Ok(chunk) => {
                            buffered.extend(chunk.events);
                            *next = chunk.next;
                        }
                        Err(e) => return Some((Err(e), WatchState::Done)),
                    }
                }
                WatchState::Live {
                    ref mut rx,
                    ref lagged,
                } => {
                    return match rx.recv().await {
                        Some(event) => Some((Ok(event), self)),
                        None if lagged.load(Ordering::Acquire) => {
                            Some((Err(StoreError::WatcherLagged), WatchState::Done))
                        }
                        None => None,
                    };
                }
                WatchState::Done => return None,
            }
        }
    }
}

/// Implements [`ReadView`](crate::ReadView) and [`Store`](crate::Store) for a
/// newtype over an [`Engine`] (field `engine`).
macro_rules! forward_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ReadView for $store {
            async fn get(&self, key: &str) -> Result<Option<$crate::KeyValue>, $crate::StoreError> {
                self.engine.get(key).await
            }

            async fn range(
                &self,
                request: $crate::RangeRequest,
            ) -> Result<$crate::RangeResponse, $crate::StoreError> {
                self.engine.range(request).await
            }

            async fn current_revision(&self) -> Result<$crate::Revision, $crate::StoreError> {
                Ok(self.engine.meta().await?.revision)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            async fn create(
                &self,
                key: &str,
                value: bytes::Bytes,
            ) -> Result<$crate::Revision, $crate::StoreError> {
                self.engine.create(key, value).await
            }

            async fn update(
                &self,
                key: &str,
                value: bytes::Bytes,
                expected: $crate::Revision,
            ) -> Result<$crate::Revision, $crate::StoreError> {
                self.engine.update(key, value, expected).await
            }

            async fn delete(
                &self,
                key: &str,
                expected: Option<$crate::Revision>,
            ) -> Result<($crate::Revision, $crate::KeyValue), $crate::StoreError> {
                self.engine.delete(key, expected).await
            }

            async fn watch(
                &self,
                prefix: &str,
                from: $crate::Revision,
            ) -> Result<$crate::WatchStream, $crate::StoreError> {
                self.engine.watch(prefix, from).await
            }

            async fn compact(&self, revision: $crate::Revision) -> Result<(), $crate::StoreError> {
                self.engine.compact(revision).await
            }

            async fn compacted_revision(&self) -> Result<$crate::Revision, $crate::StoreError> {
                Ok(self.engine.meta().await?.compacted)
            }
        }
    };
}

pub(crate) use forward_store;
