//! Namespace lifecycle: the built-in namespaces, and deletion that first
//! empties the namespace (upstream's namespace controller, run in-process
//! until the controller manager of a later issue takes it over).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceType};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{DeleteOptions, Mutation, ObjectRef, Rest, WriteContext};
use crate::views;

/// Namespaces that exist from the start.
pub const BUILT_IN: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];
/// Namespaces that may never be deleted.
const UNDELETABLE: [&str; 3] = ["default", "kube-system", "kube-public"];
/// How often terminating namespaces are re-checked while they drain.
const DRAIN_INTERVAL: Duration = Duration::from_secs(1);

fn namespace_type() -> &'static ResourceType {
    registry::by_plural("", "v1", "namespaces").expect("namespaces are served")
}

/// Creates the built-in namespaces that are missing.
pub async fn ensure_built_in(rest: &Rest) -> ApiResult<()> {
    let rt = namespace_type();
    for name in BUILT_IN {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let mut ctx = WriteContext::internal("skiff-apiserver");
        match rest.create(rt, None, body, &mut ctx).await {
            Ok(_) => tracing::info!(namespace = name, "created built-in namespace"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts deleting a namespace: it turns Terminating, and the drain task
/// removes its content and then the namespace itself.
pub async fn delete(
    rest: &Rest,
    name: &str,
    options: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<Value> {
    let rt = namespace_type();
    if UNDELETABLE.contains(&name) {
        return Err(ApiError::forbidden(
            rt,
            name,
            "this namespace may not be deleted",
        ));
    }
    let at = ObjectRef {
        rt,
        namespace: None,
        name,
    };
    let current = rest.get(at).await?;
    if spec_finalizers(&current.object).is_empty() {
        return rest.delete(at, options, dry_run).await;
    }
    if dry_run {
        return Ok(current.object.clone());
    }
    rest.guaranteed_update(at, |ns| {
        if object::is_deleting(ns) {
            return Ok(Mutation::Unchanged);
        }
        let mut new = object::without_resource_version(ns);
        object::meta_mut(&mut new).insert(
            "deletionTimestamp".into(),
            json!(object::format_time(jiff::Timestamp::now())),
        );
        object::meta_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
        new["status"]["phase"] = json!("Terminating");
        Ok(Mutation::Write(new))
    })
    .await
}

fn spec_finalizers(ns: &Value) -> Vec<Value> {
    ns["spec"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Drains terminating namespaces until `shutdown`.
pub async fn run_drainer(rest: Arc<Rest>, shutdown: CancellationToken) {
    let rt = namespace_type();
    let mut ticker = tokio::time::interval(DRAIN_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (namespaces, _) = rest.cache.list(rt, None);
        for ns in namespaces.iter().filter(|n| object::is_deleting(&n.object)) {
            let name = object::name(&ns.object).to_string();
            if let Err(e) = drain(&rest, &name).await {
                tracing::warn!(namespace = %name, error = %e, "namespace drain incomplete");
            }
        }
    }
}

/// Deletes everything in a terminating namespace; once it is empty, clears
/// the `kubernetes` finalizer so that the namespace itself goes away.
async fn drain(rest: &Rest, name: &str) -> ApiResult<()> {
    let mut remaining = 0;
    for rt in registry::all()
        .iter()
        .filter(|rt| rt.namespaced() && !views::is_view(rt))
    {
        let (items, _) = rest.cache.list(rt, Some(name));
        for item in items {
            remaining += 1;
            if object::is_deleting(&item.object) {
                continue;
            }
            let at = ObjectRef {
                rt,
                namespace: Some(name),
                name: object::name(&item.object),
            };
            match rest.delete(at, &DeleteOptions::default(), false).await {
                Ok(_) => {}
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    let at = ObjectRef {
        rt: namespace_type(),
        namespace: None,
        name,
    };
    rest.guaranteed_update(at, |ns| {
        let mut new = object::without_resource_version(ns);
        let kept: Vec<Value> = spec_finalizers(ns)
            .into_iter()
            .filter(|f| f != "kubernetes")
            .collect();
        new["spec"]["finalizers"] = Value::Array(kept);
        Ok(Mutation::Write(new))
    })
    .await
    .map(|_| ())
}
