//! Integration-test harness: runs the real `skiff` binary in a temporary data
//! directory and drives it with the real clients users have (kubectl, helm, the
//! Python client).
//!
//! A test crate passes the binary cargo built for it (`env!` works only there):
//!
//! ```ignore
//! let cluster = skiff_testing::shared(env!("CARGO_BIN_EXE_skiff"));
//! let ns = cluster.namespace("smoke");
//! cluster.kubectl_ok(&["get", "configmaps", "-n", ns.name()]);
//! ```
//!
//! Starting a server costs far more than most tests, so every test of one test
//! binary shares one cluster ([`shared`]) and isolates itself in its own
//! namespace ([`TestCluster::namespace`]). Tests that restart or kill the server
//! start their own with [`TestCluster::start`].
//!
//! Missing tools are a failure, never a skip: run `scripts/install-test-tools.sh`.
//!
//! Unit tests of code that talks to the API server use [`FakeApi`] instead: a
//! fake server behind a `kube::Client`, with no binary and no sockets.

mod cluster;
mod fake_api;
mod process;
mod tools;

pub use cluster::{
    AgentPorts, NODE_NAME, TestCluster, TestNamespace, free_port, shared, shared_with_agent,
};
pub use fake_api::{FakeApi, Write};
pub use process::{DEFAULT_TIMEOUT, LineWatcher, TiedCommand, eventually, output_with_timeout};
pub use tools::{Tools, tools};
