//! Skiff's controllers: the kube-controller-manager equivalent.
//!
//! Every controller here talks to the API server only through the API (a
//! [`kube::Client`]), never through the store, so they run unchanged inside
//! `skiff server` or against a remote cluster.
//!
//! # How a controller is laid out
//!
//! Each controller is one module, named after upstream's (`node_ipam`, and
//! later `replicaset`, `deployment`, ...), with the same shape:
//!
//! - a `…Config` struct with upstream's defaults in `Default`;
//! - a pure reconciler that folds watch events (or cached objects) into its
//!   state and returns the writes it wants, with no IO, so its decisions are
//!   unit tested without a server;
//! - a `…Controller` that owns the watch (kube-runtime's watcher with
//!   client-go's default backoff), performs the writes, records events, and
//!   retries; and a module-level `run(client, config, shutdown)` that the
//!   binary spawns with a child of its root `CancellationToken`.
//!
//! Controllers are level-triggered: they compare what the API shows with what
//! should be and act on the difference, so a missed event or a restart costs
//! at most a relist, never a wrong state. Controllers that reconcile objects
//! one at a time (ReplicaSet, Deployment, ...) fit kube-runtime's
//! `Controller`: a reflector cache, a deduplicating work queue and
//! rate-limited requeues, with the reconcile function as the pure part. Node
//! IPAM instead needs a complete view of all Nodes before it may allocate
//! anything, so it folds the watch events itself.
//!
//! # Controllers
//!
//! - [`node_ipam`]: gives each Node a pod CIDR from the cluster CIDR.
#![warn(missing_docs)]

pub mod node_ipam;
