//! Real kubectl against a real `skiff server`, one module per area. Every test
//! of this binary shares one server, started on first use (see
//! `skiff_testing::shared`), and works in its own namespace, so the tests run
//! in parallel.
//!
//! The expectations are upstream Kubernetes' behaviour as kubectl 1.37 shows it.

mod util;

mod apply;
mod create;
mod delete;
mod discovery;
mod errors;
mod get;
mod patch;
mod smoke;
mod wait;
