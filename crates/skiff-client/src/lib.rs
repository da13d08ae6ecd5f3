//! The API client every Skiff component (agent, scheduler, controllers) uses.
//!
//! Components talk to the API server only through the Kubernetes REST API,
//! never through the store, so that the same code runs in `skiff server` and
//! on a joined node. The transport, typed requests, watches and informer
//! caches are kube-rs's (`kube::Client`, `kube::Api`, `kube::runtime`): it is
//! a mature client that our own acceptance tests already drive against the
//! server. This crate adds what kube-rs leaves to the application:
//!
//! - [`connect`]: a client from a kubeconfig file or from a server URL, CA and
//!   bearer token (how `skiff agent --server --token` joins);
//! - [`controller`]: running a kube-runtime `Controller` with per-object
//!   exponential retry, as upstream's work queues retry;
//! - [`events`]: a recorder of core/v1 Events that aggregates repeats the way
//!   upstream's event correlator does, so `kubectl describe` shows `x5` rather
//!   than five rows;
//! - [`leader`]: leader election on a Lease, so that several servers can
//!   run the scheduler and controllers with one of each working;
//! - [`watch`]: watches for in-process caches, without managedFields;
//! - [`tls`]: the TLS client for servers that cannot be verified (HTTPS
//!   probes, fetching the CA when joining).
#![warn(missing_docs)]

pub mod connect;
pub mod controller;
pub mod events;
pub mod leader;
pub mod tls;
pub mod watch;

pub use kube;
pub use kube::Client;
