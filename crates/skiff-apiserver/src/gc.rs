//! Garbage collection by owner references, with upstream's three propagation
//! policies:
//! - Background: a dependent whose owners are all gone is deleted.
//! - Foreground: an owner with the `foregroundDeletion` finalizer waits until
//!   its dependents are deleted, then goes.
//! - Orphan: an owner with the `orphan` finalizer first strips its reference
//!   from every dependent, then goes.
//!
//! It runs in the API server process over the watch cache and writes through
//! the REST layer, like the namespace drainer, until the controller manager
//! (a later issue) takes it over.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_api::registry::{self, ResourceType};
use tokio_util::sync::CancellationToken;

use crate::cache::Cached;
use crate::error::ApiResult;
use crate::object;
use crate::rest::{DeleteOptions, Mutation, ObjectRef, Rest};
use crate::views;

/// How often owner references are re-examined.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// An object found in the cache.
struct Node {
    rt: &'static ResourceType,
    cached: Arc<Cached>,
}

impl Node {
    fn at(&self) -> ObjectRef<'_> {
        let namespace = object::namespace(&self.cached.object);
        ObjectRef {
            rt: self.rt,
            namespace: Some(namespace).filter(|n| !n.is_empty()),
            name: object::name(&self.cached.object),
        }
    }

    fn object(&self) -> &Value {
        &self.cached.object
    }
}

/// A pass may use at most this share of one core: the pause after a pass is
/// at least this many times as long as the pass took.
const PAUSE_PER_SCAN_TIME: u32 = 20;

/// Runs the collector until `shutdown`. A pass runs only when something was
/// written since the last complete one, and large stores are scanned less
/// often so that a full pass never takes more than a small share of the CPU.
pub async fn run(rest: Arc<Rest>, shutdown: CancellationToken) {
    let mut pause = SCAN_INTERVAL;
    let mut scanned_at = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let revision = rest.cache.revision();
        if scanned_at == Some(revision) {
            continue;
        }
        let started = tokio::time::Instant::now();
        match scan(&rest).await {
            Ok(()) => scanned_at = Some(revision),
            Err(e) => tracing::warn!(error = %e, "garbage collection pass incomplete"),
        }
        pause = SCAN_INTERVAL.max(started.elapsed() * PAUSE_PER_SCAN_TIME);
    }
}

fn owner_uids(obj: &Value) -> Vec<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| refs.iter().filter_map(|r| r["uid"].as_str()).collect())
        .unwrap_or_default()
}

async fn scan(rest: &Rest) -> ApiResult<()> {
    let mut all = Vec::new();
    for rt in registry::all().iter().filter(|rt| !views::is_view(rt)) {
        let (items, _) = rest.cache.list(rt, None);
        all.extend(items.into_iter().map(|cached| Node { rt, cached }));
    }
    let uids: HashSet<&str> = all.iter().map(|n| object::uid(n.object())).collect();
    let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
    for node in &all {
        for owner in owner_uids(node.object()) {
            dependents.entry(owner).or_default().push(node);
        }
    }
    for node in all.iter().filter(|n| object::is_deleting(n.object())) {
        let finalizers = object::finalizers(node.object());
        let uid = object::uid(node.object());
        let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or_default();
        if finalizers.iter().any(|f| f == ORPHAN) {
            for dep in deps {
                strip_owner(rest, dep, uid).await?;
            }
            remove_finalizer(rest, node, ORPHAN).await?;
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            if deps.is_empty() {
                remove_finalizer(rest, node, FOREGROUND).await?;
            }
            let options = DeleteOptions {
                propagation_policy: Some("Foreground".into()),
                ..DeleteOptions::default()
            };
            for dep in deps.iter().filter(|d| !object::is_deleting(d.object())) {
                ignore_not_found(rest.delete(dep.at(), &options, false).await)?;
            }
        }
    }
    let orphans = all.iter().filter(|n| {
        let owners = owner_uids(n.object());
        !owners.is_empty()
            && !object::is_deleting(n.object())
            && !owners.iter().any(|uid| uids.contains(uid))
    });
    for node in orphans {
        if !owners_really_gone(rest, node).await? {
            continue;
        }
        let options = DeleteOptions {
            propagation_policy: Some("Background".into()),
            ..DeleteOptions::default()
        };
        ignore_not_found(rest.delete(node.at(), &options, false).await)?;
    }
    Ok(())
}

/// The cache may lag a just-created owner: confirm absence against the store
/// before deleting anything.
async fn owners_really_gone(rest: &Rest, node: &Node) -> ApiResult<bool> {
    let refs = node.object()["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for owner in refs {
        let api_version = owner["apiVersion"].as_str().unwrap_or_default();
        let (group, _) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some(rt) = registry::by_kind(group, owner["kind"].as_str().unwrap_or_default()) else {
            continue;
        };
        let name = owner["name"].as_str().unwrap_or_default();
        let at = ObjectRef {
            rt,
            namespace: Some(object::namespace(node.object())).filter(|_| rt.namespaced()),
            name,
        };
        match rest.get(at).await {
            Ok(found)
                if object::uid(&found.object) == owner["uid"].as_str().unwrap_or_default() =>
            {
                return Ok(false);
            }
            Ok(_) => {}
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

async fn strip_owner(rest: &Rest, dep: &Node, owner_uid: &str) -> ApiResult<()> {
    let result = rest
        .guaranteed_update(dep.at(), |current| {
            let mut new = object::without_resource_version(current);
            let refs = object::meta_mut(&mut new)
                .get_mut("ownerReferences")
                .and_then(Value::as_array_mut);
            let Some(refs) = refs else {
                return Ok(Mutation::Unchanged);
            };
            let before = refs.len();
            refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
            if refs.len() == before {
                return Ok(Mutation::Unchanged);
            }
            if refs.is_empty() {
                object::meta_mut(&mut new).remove("ownerReferences");
            }
            Ok(Mutation::Write(new))
        })
        .await;
    ignore_not_found(result)
}

async fn remove_finalizer(rest: &Rest, node: &Node, finalizer: &str) -> ApiResult<()> {
    let result = rest
        .guaranteed_update(node.at(), |current| {
            let finalizers = object::finalizers(current);
            if !finalizers.iter().any(|f| f == finalizer) {
                return Ok(Mutation::Unchanged);
            }
            let kept: Vec<String> = finalizers.into_iter().filter(|f| f != finalizer).collect();
            let mut new = object::without_resource_version(current);
            object::set_finalizers(&mut new, &kept);
            Ok(Mutation::Write(new))
        })
        .await;
    ignore_not_found(result)
}

fn ignore_not_found<T>(result: ApiResult<T>) -> ApiResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "NotFound" => Ok(()),
        Err(e) => Err(e),
    }
}
