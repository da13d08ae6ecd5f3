//! Skiff's controllers: the kube-controller-manager equivalent.
//!
//! Every controller here talks to the API server only through the API (a
//! [`kube::Client`]), never through the store, so they run unchanged inside
//! `skiff server` or against a remote cluster.
//!
//! # How a controller is laid out
//!
//! Each controller is one module, named after upstream's (`replicaset`,
//! `deployment`, ...), with the same shape:
//!
//! - a `…Config` struct with upstream's defaults in `Default`;
//! - a pure `plan` that takes the object, what the caches show and the time,
//!   and returns the writes it wants, with no IO, so its decisions are unit
//!   tested without a server;
//! - a `start(factory, client, config, shutdown)` that registers the shared
//!   informers it reads and returns the future that runs it: kube-runtime's
//!   `Controller` (a deduplicating work queue, never one key twice at once)
//!   through [`runtime::run_controller`], which performs the writes, records
//!   events and retries failures with exponential backoff.
//!
//! All controllers read one set of caches ([`informer`]): one watch per
//! resource type for the whole manager, with indexes by namespace and by
//! controller owner. Pods they create are named by the controller itself and
//! tracked by [`expectations`] until the cache shows them, so a reconcile
//! that runs before the cache catches up never creates twice.
//!
//! Controllers are level-triggered: they compare what the API shows with what
//! should be and act on the difference, so a missed event or a restart costs
//! at most a relist, never a wrong state. Node IPAM is the exception to the
//! shape above: it needs a complete view of all Nodes before it may allocate
//! anything, so it folds its own watch events.
//!
//! [`manager::run`] runs them all; the binary runs it under leader election
//! (`skiff_client::leader`), so only one server's controllers work at a time.
//!
//! # Controllers
//!
//! - [`cronjob`]: creates a Job each time a CronJob's schedule fires.
//! - [`daemonset`]: one pod on every eligible node, rolled through
//!   ControllerRevisions.
//! - [`deployment`]: rolls a pod template out through ReplicaSets
//!   (RollingUpdate or Recreate), with revision history and rollout status.
//! - [`disruption`]: counts the healthy pods under each PodDisruptionBudget
//!   and how many evictions it allows.
//! - [`endpoints`]: keeps the legacy v1 Endpoints of each Service with a
//!   selector.
//! - [`endpointslice`]: publishes the pods behind each Service with a selector
//!   as EndpointSlices.
//! - [`garbagecollector`]: deletes objects whose owners are gone, and
//!   carries out foreground and orphan deletions, over metadata-only watches
//!   of every discovered type.
//! - [`job`]: runs a Job's pods to completion, counting them with
//!   finalizers; [`job::ttl`] deletes finished Jobs after their TTL.
//! - [`namespace`]: empties a deleted namespace, reporting progress in its
//!   conditions, then removes its `kubernetes` finalizer.
//! - [`node_ipam`]: gives each Node a pod CIDR from the cluster CIDR.
//! - [`node_lifecycle`]: marks Nodes that stop heartbeating Unknown, taints
//!   unhealthy Nodes and evicts the pods that do not tolerate NoExecute taints.
//! - [`persistentvolume`]: binds PersistentVolumeClaims to
//!   PersistentVolumes, hands unmatched claims to their class's provisioner
//!   and releases volumes whose claims are gone.
//! - [`replicaset`]: keeps a ReplicaSet's pods at `spec.replicas`.
//! - [`resourcequota`]: recounts each ResourceQuota's `status.used` from the
//!   objects of its namespace, so deletions give quota back.
//! - [`service_lb`]: gives `type: LoadBalancer` Services the addresses of
//!   the nodes, as k3s's servicelb does.
//! - [`serviceaccount`]: the `default` ServiceAccount and the
//!   `kube-root-ca.crt` ConfigMap in every namespace.
//! - [`statefulset`]: ordered pods with stable names and storage, rolled
//!   through ControllerRevisions.
//! - [`volume_protection`]: takes the `pvc-protection` finalizer off deleted
//!   claims no pod uses and `pv-protection` off deleted unbound volumes.
#![warn(missing_docs)]

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod expectations;
pub mod garbagecollector;
pub mod informer;
pub mod job;
pub mod manager;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod ownership;
pub mod persistentvolume;
pub mod pods;
pub mod replicaset;
pub mod resourcequota;
pub mod runtime;
pub mod service_lb;
pub mod serviceaccount;
pub mod statefulset;
pub mod volume_protection;
