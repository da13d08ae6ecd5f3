//! The Skiff node agent: the kubelet equivalent.
//!
//! - [`images`]: OCI image-layout tarballs built locally from host binaries, so
//!   a node can run pods (which always need a pause image) with no registry.
//! - [`containerd`]: a supervisor for a private containerd, configured so that
//!   CRI works on this kind of host and cannot collide with a system containerd.
//! - [`objects`]: the seam through which env vars and volumes read ConfigMaps
//!   and Secrets.
//! - [`eviction`]: pods whose disk `emptyDir` outgrows its `sizeLimit` are
//!   evicted, as upstream's eviction manager does.
//! - [`provisioner`]: the built-in `local-path` dynamic provisioner: volume
//!   directories on this node for claims scheduled here, removed on reclaim.
#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod containerd;
pub mod downward;
pub mod eviction;
pub mod images;
pub mod locate;
pub mod logs;
pub mod network;
pub mod node;
pub mod objects;
pub mod pods;
pub mod probes;
pub mod provisioner;
pub mod server;
pub mod static_pods;
pub mod streaming;
pub mod volumes;
