//! The kubelet's streaming API: exec, attach and port-forward.
//!
//! Each area is its own module with its own routes; [`router`] merges them
//! so the kubelet API server mounts one router. They share the two seams the
//! node already has: [`PodLocator`] to find a pod's containers and sandbox,
//! and the CRI [`RuntimeService`] whose streaming server does the work.

use std::sync::Arc;

use axum::Router;
use skiff_cri::RuntimeService;

use crate::locate::PodLocator;

mod exec;
mod portforward;

/// The streaming routes: `/exec/{namespace}/{pod}/{container}` and
/// `/attach/...` (also with the pod uid before the container), as
/// WebSocket upgrades with the `v5.channel.k8s.io` family of subprotocols.
/// Serve it with HTTP/1.1 upgrades enabled.
pub fn router(locator: Arc<dyn PodLocator>, runtime: Arc<dyn RuntimeService>) -> Router {
    Router::new()
        .merge(exec::routes(Arc::clone(&locator), Arc::clone(&runtime)))
        .merge(portforward::routes(locator))
}
