//! Skiff's scheduler: the kube-scheduler equivalent.
//!
//! It talks to the cluster only through the API, like every other Skiff
//! component: informers (kube-runtime watchers) feed a [`Snapshot`] of nodes
//! and the resources their pods request, a [`SchedulingQueue`] orders the
//! pending pods, pure [`filters`] and [`score`]s pick a node, and the pod is
//! bound with `POST pods/{name}/binding`. Pods that fit nowhere get upstream's
//! `FailedScheduling` event and `PodScheduled=False` condition, with the same
//! `0/N nodes are available: …` message.
//!
//! The behaviour follows upstream's default profile for the plugins present:
//! `NodeUnschedulable`, `TaintToleration`, `NodeAffinity`, `NodePorts`,
//! `NodeResourcesFit` (LeastAllocated) and `NodeResourcesBalancedAllocation`.
//! Inter-pod affinity, topology spread, volume binding and preemption are not
//! implemented yet.
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), skiff_scheduler::SchedulerError> {
//! use skiff_scheduler::{SchedulerConfig, run};
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! run(client, SchedulerConfig::default(), shutdown.child_token()).await
//! # }
//! ```
#![warn(missing_docs)]

pub mod algorithm;
pub mod filters;
pub mod queue;
pub mod resources;
mod scheduler;
pub mod score;
pub mod snapshot;

pub use queue::SchedulingQueue;
pub use scheduler::{DEFAULT_SCHEDULER_NAME, SchedulerConfig, SchedulerError, run};
pub use snapshot::Snapshot;
