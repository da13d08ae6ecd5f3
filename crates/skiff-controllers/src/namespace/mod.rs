//! Namespace lifecycle: empties a deleted namespace, then lets it go.
//!
//! Deleting a namespace only marks it: the API server sets its
//! `deletionTimestamp` and phase `Terminating`, and keeps it while
//! `spec.finalizers` holds `kubernetes` (which it adds at creation). As
//! upstream's namespace controller (`pkg/controller/namespace`), this
//! controller then, for each such namespace:
//!
//! 1. discovers every namespaced type that can be deleted;
//! 2. deletes the namespace's objects of each type (a collection delete
//!    where served, else one by one, in the background so owners do not
//!    wait for dependents), then lists what is left;
//! 3. reports progress in `status.conditions`, with upstream's types,
//!    reasons and messages ([`status`]): `NamespaceDeletionDiscoveryFailure`,
//!    `NamespaceDeletionGroupVersionParsingFailure`,
//!    `NamespaceDeletionContentFailure`, `NamespaceContentRemaining` and
//!    `NamespaceFinalizersRemaining`;
//! 4. once nothing is left, removes `kubernetes` from `spec.finalizers`
//!    through the `finalize` subresource; the API server deletes the
//!    namespace when no finalizer remains.
//!
//! Content that takes time to go (pods terminating gracefully, objects
//! held by finalizers) is looked at again after half its estimate, as
//! upstream does, and at once when the namespace's last pod is gone, so a
//! namespace of pods goes as soon as they do. Failures are retried with
//! backoff. Content is never deleted without its own finalizers being
//! honoured: the API server keeps such objects until their finalizers are
//! removed, and the namespace waits.

pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    DeleteParams, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams,
};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::garbagecollector::discovery::{Served, ServedResources};
use crate::informer::{Informer, InformerFactory};
use crate::runtime::{Clock, SystemClock, api_message, run_controller};
use status::{ContentReport, KUBERNETES_FINALIZER, Next, Remaining};

#[cfg(test)]
mod tests;

/// The component name of the controller's writes and logs.
const COMPONENT: &str = "namespace-controller";
/// Types emptied at once.
const CONTENT_CONCURRENCY: usize = 8;

/// Tunables, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// A terminating namespace is looked at again at least this often
    /// (`--namespace-sync-period`, 5 minutes).
    pub sync_period: Duration,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a namespace could not be moved on; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// Its content could not all be discovered or deleted.
    #[error("emptying namespace {namespace}: {}", .errors.join("; "))]
    Content {
        /// The namespace.
        namespace: String,
        /// What failed.
        errors: Vec<String>,
    },
    /// A write to the namespace failed.
    #[error("{action} namespace {namespace}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

struct Context {
    client: Client,
    pods: Informer<Pod>,
    clock: Arc<dyn Clock>,
    config: NamespaceConfig,
}

/// Builds the controller on `factory`'s informers; the returned future runs
/// it (after the caches sync) until `shutdown`.
pub fn start(
    factory: &mut InformerFactory,
    client: Client,
    config: NamespaceConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    start_with_clock(factory, client, config, Arc::new(SystemClock), shutdown)
}

/// [`start`] with an injected clock.
pub fn start_with_clock(
    factory: &mut InformerFactory,
    client: Client,
    config: NamespaceConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let namespaces = factory.informer::<Namespace>();
    let pods = factory.informer::<Pod>();
    let namespace_changes = namespaces.subscribe();
    let pod_changes = pods.subscribe();
    let last_pod_gone = {
        let namespaces = namespaces.clone();
        let pods = pods.clone();
        move |pod: Arc<Pod>| {
            let namespace = pod.namespace()?;
            let gone = pods.get(&namespace, &pod.name_any()).is_none();
            let terminating = namespaces
                .get("", &namespace)
                .is_some_and(|ns| status::waits_for_content_removal(&ns));
            (gone && terminating && pods.list_namespace(&namespace).is_empty())
                .then(|| ObjectRef::new(&namespace))
        }
    };
    let ctx = Arc::new(Context {
        client,
        pods: pods.clone(),
        clock,
        config,
    });
    async move {
        namespaces.wait_synced().await;
        pods.wait_synced().await;
        let controller = Controller::for_shared_stream(namespace_changes, namespaces.store())
            .watches_shared_stream(pod_changes, last_pod_gone);
        run_controller(COMPONENT, controller, ctx, reconcile, shutdown).await;
    }
}

async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, NamespaceError> {
    if !status::waits_for_content_removal(&namespace) {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let deleted_at = namespace
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let report = delete_all_content(&ctx, &name, deleted_at).await;
    let status = status::status(namespace.status.as_ref(), &report, ctx.clock.now());
    if namespace.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &name, &status).await?;
    }
    match status::next(&report) {
        Next::Retry(errors) => Err(NamespaceError::Content {
            namespace: name,
            errors,
        }),
        Next::Wait(delay) => Ok(Action::requeue(delay.min(ctx.config.sync_period))),
        Next::Finalize => {
            finalize(&ctx.client, &name).await?;
            Ok(Action::await_change())
        }
    }
}

/// Deletes the namespace's content of every deletable type and reports
/// what is left.
async fn delete_all_content(
    ctx: &Context,
    namespace: &str,
    deleted_at: Timestamp,
) -> ContentReport {
    let served = match ServedResources::discover(&ctx.client).await {
        Ok(served) => served,
        Err(error) => {
            return ContentReport {
                discovery_error: Some(api_message(&error.0)),
                ..ContentReport::default()
            };
        }
    };
    let results: Vec<Result<Remaining, (Remaining, String)>> =
        futures::stream::iter(served.namespaced_deletable().cloned())
            .map(|served| async move { delete_content(ctx, &served, namespace, deleted_at).await })
            .buffer_unordered(CONTENT_CONCURRENCY)
            .collect()
            .await;
    let mut report = ContentReport::default();
    for result in results {
        match result {
            Ok(left) => report.remaining.push(left),
            Err((left, error)) => {
                report.remaining.push(left);
                report.delete_errors.push(error);
            }
        }
    }
    report.remaining.sort_by(|a, b| a.resource.cmp(&b.resource));
    report
}

/// Deletes the namespace's objects of one type and lists what is left.
async fn delete_content(
    ctx: &Context,
    served: &Served,
    namespace: &str,
    deleted_at: Timestamp,
) -> Result<Remaining, (Remaining, String)> {
    let resource = served.group_resource();
    let failed = |error: kube::Error| {
        let left = Remaining {
            resource: resource.clone(),
            ..Remaining::default()
        };
        (left, format!("{resource}: {}", api_message(&error)))
    };
    let grace = if (
        served.resource.group.as_str(),
        served.resource.plural.as_str(),
    ) == ("", "pods")
    {
        status::pod_grace_estimate(&pods_of(ctx, namespace), deleted_at, ctx.clock.now())
    } else {
        0
    };
    let api: Api<PartialObjectMeta<DynamicObject>> =
        Api::namespaced_with(ctx.client.clone(), namespace, &served.resource);
    let background = DeleteParams::background();
    let collection_deleted = served.supports("deletecollection")
        && match api
            .delete_collection(&background, &ListParams::default())
            .await
        {
            Ok(_) => true,
            Err(e) if matches!(status_code(&e), Some(404 | 405)) => false,
            Err(e) => return Err(failed(e)),
        };
    if !served.supports("list") {
        return Ok(Remaining {
            resource,
            estimate: grace,
            ..Remaining::default()
        });
    }
    if !collection_deleted {
        let listed = api
            .list_metadata(&ListParams::default())
            .await
            .map_err(failed)?;
        for item in listed
            .items
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
        {
            match api.delete(&item.name_any(), &background).await {
                Ok(_) => {}
                Err(e) if matches!(status_code(&e), Some(404 | 405)) => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }
    let left = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(failed)?;
    let items: Vec<_> = left.items.into_iter().map(|i| i.metadata).collect();
    match status::remaining(&resource, namespace, &items, grace) {
        (left, None) => Ok(left),
        (left, Some(error)) => Err((left, error)),
    }
}

/// The namespace's pods as the shared cache shows them (for the graceful
/// termination estimate only).
fn pods_of(ctx: &Context, namespace: &str) -> Vec<Pod> {
    ctx.pods
        .list_namespace(namespace)
        .into_iter()
        .map(|p| (*p).clone())
        .collect()
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

async fn write_status(
    client: &Client,
    name: &str,
    status: &k8s_openapi::api::core::v1::NamespaceStatus,
) -> Result<(), NamespaceError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"status": status});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(source) => Err(NamespaceError::Write {
            action: "update the status of",
            namespace: name.to_string(),
            source,
        }),
    }
}

/// Removes `kubernetes` from the live namespace's `spec.finalizers`
/// through the `finalize` subresource, guarded by its resourceVersion.
async fn finalize(client: &Client, name: &str) -> Result<(), NamespaceError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let write_error = |source| NamespaceError::Write {
        action: "finalize",
        namespace: name.to_string(),
        source,
    };
    let mut namespace = match api.get(name).await {
        Ok(namespace) => namespace,
        Err(e) if status_code(&e) == Some(404) => return Ok(()),
        Err(e) => return Err(write_error(e)),
    };
    let Some(spec) = namespace.spec.as_mut() else {
        return Ok(());
    };
    let finalizers = spec.finalizers.take().unwrap_or_default();
    if !finalizers.iter().any(|f| f == KUBERNETES_FINALIZER) {
        return Ok(());
    }
    spec.finalizers = Some(
        finalizers
            .into_iter()
            .filter(|f| f != KUBERNETES_FINALIZER)
            .collect(),
    );
    tracing::debug!(namespace = name, "namespace emptied; finalizing");
    match api
        .replace_subresource("finalize", name, &PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(write_error(e)),
    }
}
