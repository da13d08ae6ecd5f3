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
//!
//! - filters ([`filters`]): `NodeUnschedulable`, `TaintToleration`,
//!   `NodeAffinity`, `NodePorts`, `NodeResourcesFit`, `VolumeBinding` and
//!   `VolumeZone` ([`volume_binding`]), `PodTopologySpread`
//!   ([`pod_topology_spread`]) and `InterPodAffinity`
//!   ([`inter_pod_affinity`]);
//! - scores ([`score`]): `NodeResourcesFit` (LeastAllocated),
//!   `NodeResourcesBalancedAllocation`, `NodeAffinity`, `TaintToleration`,
//!   `PodTopologySpread` and `InterPodAffinity`;
//! - post-filter: `DefaultPreemption` ([`preemption`]): a pod that fits
//!   nowhere evicts the fewest, least important lower-priority pods of one
//!   node, preferring nodes and victims that violate no
//!   PodDisruptionBudget (DisruptionTarget condition, then DELETE with the
//!   victim's grace period, and a `Preempted` event), is nominated to that
//!   node (`status.nominatedNodeName`) and retried once they are gone;
//! - pre-bind: `VolumeBinding` ([`volume_binding::prebind`]): before a pod
//!   is bound, static volumes chosen for its unbound claims are pre-bound,
//!   its other `WaitForFirstConsumer` claims get
//!   `volume.kubernetes.io/selected-node`, and the scheduler waits for them
//!   to be bound.
//!
//! Not implemented: `ImageLocality`, `VolumeRestrictions` (ReadWriteOncePod
//! conflicts), `NodeVolumeLimits`, storage-capacity checks and the
//! `VolumeBinding` score, and upstream's cluster-default topology spread
//! constraints.
//!
//! Pods that name no inter-pod affinity or spread constraints cost about the
//! same as without these plugins: they only visit the placed pods whose
//! affinity terms may select them, found through a label index, never every
//! pod. Pods with constraints visit the pods their selectors may match (also
//! indexed) and, for spreading, every node once (see [`snapshot`]).
//!
//! The scheduler watches nodes, pods, namespaces (for `namespaceSelector`),
//! PersistentVolumeClaims, PersistentVolumes, StorageClasses and
//! PodDisruptionBudgets, and writes `pods/binding`, `pods/status`
//! (conditions, `nominatedNodeName`), pod deletions (preemption), events,
//! PersistentVolumes (pre-binding) and claim annotations (selected node).
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
pub mod inter_pod_affinity;
pub mod pod_topology_spread;
pub mod preemption;
pub mod queue;
pub mod resources;
mod scheduler;
pub mod score;
pub mod snapshot;
pub mod volume_binding;

pub use queue::SchedulingQueue;
pub use scheduler::{DEFAULT_SCHEDULER_NAME, SchedulerConfig, SchedulerError, run};
pub use snapshot::Snapshot;
