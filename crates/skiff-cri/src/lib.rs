//! CRI v1 (the Kubernetes Container Runtime Interface) for the node agent.
//!
//! The agent never talks gRPC directly: it holds an `Arc<dyn RuntimeService>`
//! and an `Arc<dyn ImageService>`. In production both are a [`CriClient`]
//! connected to containerd's unix socket; in tests they are a
//! [`fake::FakeRuntime`], which keeps sandboxes, containers and images in
//! memory, records every call and can be told to fail the next call of a kind.
//!
//! The traits take and return the generated CRI messages ([`v1`]) unchanged,
//! so nothing is lost between the agent and the runtime, and the seam stays
//! as small as the handful of calls a kubelet actually makes.
//!
//! This crate has no cargo features: the fake is a plain module (it costs no
//! dependencies), and the generated tonic server trait
//! ([`v1::runtime_service_server`], [`v1::image_service_server`]) is always
//! there so other crates can stand up an in-process CRI server in tests.
//! Serving it over a socket needs tonic's `server` feature, which this crate
//! does not turn on.

#![warn(missing_docs)]

mod client;
mod error;
pub mod fake;
mod service;

pub use client::CriClient;
pub use error::{CriError, Op};
pub use service::{ImageService, RuntimeService};

/// Messages, client and server of the `runtime.v1` package, generated at build
/// time from the vendored `api.proto` (see `proto/README.md`). Its docs are
/// upstream's proto comments, which are not written as rustdoc markdown.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}
