//! The scheduler and controllers of `skiff server`, driven with real kubectl
//! against hollow (simulated) nodes: `skiff agent --hollow N` processes that
//! register nodes, heartbeat and report bound pods Running without running
//! anything. Nothing here asserts that a container runs; the agent tests do
//! that on a real node.
//!
//! Every test shares one server and its hollow agents (see [`fixture`]),
//! owns a group of nodes and a namespace, and runs in parallel with the
//! others. The expectations are upstream Kubernetes' behaviour: where pods
//! go, and the words the scheduler and controllers use when they cannot.

mod fixture;
mod util;

mod daemonset;
mod node_affinity;
mod node_lifecycle;
mod pod_affinity;
mod preemption;
mod scale;
mod spread;
mod taints;
mod unschedulable;
