//! Real pods on the node agent of `skiff server`, driven with real kubectl:
//! containerd runs them, CNI networks them, and kubectl logs/exec/port-forward
//! reach them through the API server. Every test shares one cluster (with an
//! agent) and works in its own namespace.

mod util;

mod accounts;
mod batch;
mod failures;
mod lifecycle;
mod network;
mod policy;
mod registry;
mod resize;
mod static_pods;
mod storage;
mod streaming;
mod termination;
mod volumes;
mod workloads;
