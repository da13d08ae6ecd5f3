//! Watch streams: newline-delimited JSON events over a long-lived response.
//!
//! A watch is served by a task that reads the watch cache (or, for a
//! resourceVersion older than the cache's history, the store itself) and
//! writes encoded events into a small bounded channel that backs the response
//! body. A client that stops reading fills the channel and the task waits.
//! A task that falls behind the cache's live buffer catches up from the
//! cache's history, and ends only when the history no longer reaches back to
//! its last event (the client then resumes from its last resourceVersion), so
//! memory stays bounded and a short stall does not cost a replay from the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use skiff_api::registry::ResourceType;
use skiff_store::{EventKind, Revision, StoreError};
use tokio::sync::{broadcast, mpsc};

use crate::body::Representation;
use crate::cache::{CacheError, CacheEvent, Cached, type_prefix};
use crate::error::{ApiError, ApiResult};
use crate::list::{Filter, TableRow, table};
use crate::request::Query;
use crate::rest::Rest;
use crate::views;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// What the client asked of a watch.
pub struct WatchRequest {
    /// The type watched.
    pub rt: &'static ResourceType,
    /// Only this namespace, if set.
    pub namespace: Option<String>,
    /// Selectors.
    pub filter: Filter,
    /// Table or plain objects.
    pub representation: Representation,
    /// `resourceVersion`: None for "" (start with the current state).
    pub resource_version: Option<Revision>,
    /// `sendInitialEvents=true`.
    pub initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Query, for Table options.
    pub query: Query,
}

impl WatchRequest {
    /// Reads watch parameters from the query.
    pub fn new(
        rt: &'static ResourceType,
        namespace: Option<String>,
        filter: Filter,
        representation: Representation,
        query: Query,
    ) -> ApiResult<WatchRequest> {
        let resource_version =
            match query.resource_version.as_deref() {
                None | Some("") | Some("0") => None,
                Some(rv) => Some(rv.parse::<Revision>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?),
            };
        let initial_events = Query::flag(&query.send_initial_events, "sendInitialEvents")?;
        if initial_events && query.resource_version_match.as_deref() != Some("NotOlderThan") {
            return Err(ApiError::bad_request(
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        let bookmarks = Query::flag(&query.allow_watch_bookmarks, "allowWatchBookmarks")?;
        let timeout = Query::int(&query.timeout_seconds, "timeoutSeconds")?
            .filter(|t| *t > 0)
            .map(|t| Duration::from_secs(t as u64));
        Ok(WatchRequest {
            rt,
            namespace,
            filter,
            representation,
            resource_version,
            initial_events,
            bookmarks,
            timeout,
            query,
        })
    }
}

/// Starts a watch; the stream yields encoded events.
pub async fn watch(
    rest: Arc<Rest>,
    request: WatchRequest,
) -> ApiResult<impl Stream<Item = Result<Bytes, std::convert::Infallible>>> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let source = open(&rest, &request).await?;
    tokio::spawn(async move {
        let timeout = request.timeout;
        let after = request.resource_version.unwrap_or(0);
        let run = Watcher {
            rest,
            request,
            tx,
            headers_sent: false,
            after,
        }
        .run(source);
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, run).await;
            }
            None => run.await,
        }
    });
    Ok(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

/// Where a watch's events come from.
enum Source {
    Cache {
        snapshot: Vec<Arc<Cached>>,
        backlog: Vec<Arc<CacheEvent>>,
        revision: Revision,
        live: broadcast::Receiver<Arc<CacheEvent>>,
    },
    Store(skiff_store::WatchStream),
    /// The requested revision is gone: send a 410 and end.
    Expired(ApiError),
}

async fn open(rest: &Rest, request: &WatchRequest) -> ApiResult<Source> {
    let cache = &rest.cache;
    let initial = request.initial_events || request.resource_version.is_none();
    if initial {
        match request.resource_version {
            Some(rv) => cache.wait_for(rv).await,
            None => cache.sync().await,
        }
        .map_err(|e| ApiError::timeout(e.to_string()))?;
    }
    let from = request.resource_version.unwrap_or(0);
    match cache.subscribe(request.rt, from, initial) {
        Ok(sub) => Ok(Source::Cache {
            snapshot: sub.snapshot,
            backlog: sub.backlog,
            revision: sub.revision,
            live: sub.live,
        }),
        Err(CacheError::TooOld { .. }) => {
            match rest.store().watch(&type_prefix(request.rt), from + 1).await {
                Ok(stream) => Ok(Source::Store(stream)),
                Err(StoreError::Compacted {
                    requested,
                    compacted,
                }) => Ok(Source::Expired(ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                )))),
                Err(e) => Err(ApiError::internal(e.to_string())),
            }
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

struct Watcher {
    rest: Arc<Rest>,
    request: WatchRequest,
    tx: mpsc::Sender<Bytes>,
    headers_sent: bool,
    /// Changes at or before this revision were already seen by the client.
    after: Revision,
}

impl Watcher {
    async fn run(mut self, source: Source) {
        match source {
            Source::Expired(error) => {
                let line = event_line("ERROR", &error.status().to_string().into_bytes());
                let _ = self.tx.send(line).await;
            }
            Source::Store(stream) => self.run_store(stream).await,
            Source::Cache {
                snapshot,
                backlog,
                revision,
                live,
            } => {
                self.after = self.after.max(revision);
                self.run_cache(snapshot, backlog, revision, live).await
            }
        }
    }

    async fn run_cache(
        &mut self,
        snapshot: Vec<Arc<Cached>>,
        backlog: Vec<Arc<CacheEvent>>,
        revision: Revision,
        mut live: broadcast::Receiver<Arc<CacheEvent>>,
    ) {
        for object in snapshot {
            let object = views::present(self.request.rt, object);
            if self.in_scope(&object.key)
                && self.request.filter.matches(&object.object)
                && !self.send("ADDED", &object).await
            {
                return;
            }
        }
        if self.request.initial_events
            && self.request.bookmarks
            && !self.bookmark(revision, true).await
        {
            return;
        }
        for event in backlog {
            if !self.deliver(&event).await {
                return;
            }
        }
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => {
                        if !self.deliver(&event).await {
                            return;
                        }
                    }
                    // Fell behind the live buffer: catch up from the history.
                    Err(broadcast::error::RecvError::Lagged(_)) => match self.catch_up().await {
                        Some(resumed) => live = resumed,
                        None => return,
                    },
                    // The cache refilled: end; the client resumes.
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.request.bookmarks => {
                    let current = self.rest.cache.revision();
                    loop {
                        match live.try_recv() {
                            Ok(event) => {
                                if !self.deliver(&event).await {
                                    return;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    if !self.bookmark(current, false).await {
                        return;
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Resubscribes after the last delivered event, sending what the history
    /// holds since then. `None` (the watch ends, the client resumes from its
    /// last resourceVersion) if the history no longer reaches back that far.
    async fn catch_up(&mut self) -> Option<broadcast::Receiver<Arc<CacheEvent>>> {
        let sub = self
            .rest
            .cache
            .subscribe(self.request.rt, self.after, false)
            .ok()?;
        for event in sub.backlog {
            if !self.deliver(&event).await {
                return None;
            }
        }
        Some(sub.live)
    }

    async fn run_store(&mut self, mut stream: skiff_store::WatchStream) {
        let rt = self.request.rt;
        while let Some(item) = stream.next().await {
            let Ok(event) = item else { return };
            let Ok(object) = Cached::decode_stored(&event.kv).map(Arc::new) else {
                tracing::error!(kind = rt.kind, key = %event.kv.key, "undecodable object in watch");
                continue;
            };
            // Only selectors read the previous object: it is never encoded.
            let prev = event
                .prev
                .as_ref()
                .and_then(|p| Cached::from_kv(p).ok().map(Arc::new));
            let change = CacheEvent {
                revision: event.kv.mod_revision,
                kind: event.kind,
                object,
                prev,
            };
            if !self.deliver(&change).await {
                return;
            }
        }
    }

    fn in_scope(&self, key: &str) -> bool {
        match &self.request.namespace {
            Some(ns) => key
                .strip_prefix(&type_prefix(self.request.rt))
                .and_then(|rest| rest.strip_prefix(ns.as_str()))
                .is_some_and(|rest| rest.starts_with('/')),
            None => true,
        }
    }

    /// Sends one change, translated through the selectors: an object that
    /// starts matching is ADDED, one that stops matching is DELETED.
    async fn deliver(&mut self, event: &CacheEvent) -> bool {
        if event.revision <= self.after {
            return true;
        }
        // Events come in revision order: everything up to here is handled.
        self.after = event.revision;
        if !self.in_scope(&event.object.key) {
            return true;
        }
        let rt = self.request.rt;
        let converted;
        let event = if views::is_view(rt) {
            converted = CacheEvent {
                revision: event.revision,
                kind: event.kind.clone(),
                object: views::present(rt, event.object.clone()),
                prev: event.prev.clone().map(|p| views::present(rt, p)),
            };
            &converted
        } else {
            event
        };
        let filter = &self.request.filter;
        let now = filter.matches(&event.object.object);
        let before = event
            .prev
            .as_ref()
            .is_some_and(|p| filter.matches(&p.object));
        let kind = match event.kind {
            EventKind::Delete if before || now => "DELETED",
            EventKind::Delete => return true,
            EventKind::Put => match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return true,
            },
        };
        self.send(kind, &event.object).await
    }

    async fn send(&mut self, kind: &str, object: &Cached) -> bool {
        let line = match self.request.representation {
            Representation::Table => {
                let headers = !self.headers_sent;
                self.headers_sent = true;
                let mut meta = Map::new();
                meta.insert("resourceVersion".into(), json!(object.revision.to_string()));
                match table(
                    self.request.rt,
                    std::iter::once(TableRow::from(object)),
                    meta,
                    &self.request.query,
                    headers,
                ) {
                    Ok(table) => event_line(kind, &table),
                    Err(e) => event_line("ERROR", e.status().to_string().as_bytes()),
                }
            }
            _ => event_line(kind, object.json()),
        };
        self.tx.send(line).await.is_ok()
    }

    async fn bookmark(&mut self, revision: Revision, initial_events_end: bool) -> bool {
        let rt = self.request.rt;
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object: Value =
            json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata});
        let line = event_line("BOOKMARK", &serde_json::to_vec(&object).unwrap_or_default());
        self.tx.send(line).await.is_ok()
    }
}

/// `{"type":"ADDED","object":...}\n`, assembled around already-encoded bytes.
fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(object.len() + kind.len() + 24);
    line.put_slice(b"{\"type\":\"");
    line.put_slice(kind.as_bytes());
    line.put_slice(b"\",\"object\":");
    line.put_slice(object);
    line.put_slice(b"}\n");
    line.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_valid_json() {
        let line = event_line("ADDED", br#"{"kind":"Pod"}"#);
        let parsed: Value = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed["type"], "ADDED");
        assert_eq!(parsed["object"]["kind"], "Pod");
        assert_eq!(line.last(), Some(&b'\n'));
    }
}
