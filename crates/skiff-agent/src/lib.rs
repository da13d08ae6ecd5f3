//! The Skiff node agent.
//!
//! This crate grows into the kubelet-equivalent of Skiff. For now it holds the
//! two pieces the agent needs before it can run any pod:
//!
//! - [`images`]: OCI image-layout tarballs built locally from host binaries, so
//!   a node can run pods (which always need a pause image) with no registry and
//!   no network.
//! - [`containerd`]: a supervisor for a private containerd, configured so that
//!   CRI works on this kind of host and cannot collide with a system containerd.
#![warn(missing_docs)]

pub mod containerd;
pub mod images;
