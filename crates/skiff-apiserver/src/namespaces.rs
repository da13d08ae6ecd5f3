//! Namespaces as upstream's namespace registry keeps them: the built-in
//! namespaces, and deletion that only marks a namespace `Terminating` while
//! `spec.finalizers` is not empty. The namespace controller (in the
//! controller manager) empties it and removes the `kubernetes` finalizer
//! through the `finalize` subresource; the update that leaves no finalizer
//! deletes the namespace ([`crate::strategy::ready_to_remove`]).

use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceType};

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{DeleteOptions, Mutation, ObjectRef, Rest, WriteContext};

/// Namespaces that exist from the start.
pub const BUILT_IN: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];
/// Namespaces that may never be deleted.
const UNDELETABLE: [&str; 3] = ["default", "kube-system", "kube-public"];

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

/// Starts deleting a namespace: it turns Terminating (with the metadata
/// finalizer `propagationPolicy` asks for, as for any object), and stays
/// until its finalizers are gone. One without spec finalizers is deleted as
/// any object is.
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
        let mut finalizers = object::finalizers(ns);
        let wanted = match options.propagation_policy.as_deref() {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        if let Some(wanted) = wanted.filter(|w| !finalizers.iter().any(|f| f == w)) {
            finalizers.push(wanted.to_string());
            object::set_finalizers(&mut new, &finalizers);
        }
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
