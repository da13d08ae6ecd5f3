//! Service proxy: ClusterIP, NodePort and LoadBalancer traffic to ready
//! endpoints in one nftables table, as kube-proxy's nftables mode.
//!
//! The proxy is a function from the API's Services and EndpointSlices to one
//! nftables table (family `ip`, default name `skiff-proxy`), kept current by a
//! watch loop:
//!
//! - [`service`] reads the objects into Service ports and their usable
//!   endpoints (ready, else serving-and-terminating; node-local ones for the
//!   `Local` traffic policies);
//! - [`render`](mod@render) lays them out as chains, maps and sets (see its docs for the
//!   packet path) in a [`Ruleset`];
//! - [`ruleset`] turns a ruleset into an `nft -f` script, whole or as the
//!   difference from the last applied one, always one atomic transaction;
//! - [`host`] is the seam to the machine (`nft`, sysctls), faked in tests;
//! - [`conntrack`] deletes the UDP conntrack entries a sync made stale
//!   (through ctnetlink, behind a trait faked in tests);
//! - [`proxier`] is the loop: [`run`] watches, debounces, syncs, and leaves
//!   the rules in place on shutdown.
//!
//! Only the renderer and the conntrack cleanup decide anything, so they are
//! unit-tested with hand-built objects; the tests under `tests/` load the output into real nftables in
//! private network namespaces and send traffic through it.
#![warn(missing_docs)]

pub mod config;
pub mod conntrack;
pub mod host;
pub mod proxier;
pub mod render;
pub mod ruleset;
pub mod service;

pub use config::{Ipv4Cidr, ProxyConfig};
pub use conntrack::{Conntrack, ConntrackError, NetlinkConntrack};
pub use host::{Host, HostError, SystemHost};
pub use proxier::{Proxier, ProxyError, SyncMode, SyncStats, run};
pub use render::{render, render_ports};
pub use ruleset::Ruleset;
