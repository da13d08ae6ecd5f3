//! NetworkPolicy enforcement in nftables for the pods of one node.
//!
//! Every node agent runs [`run`]: it watches NetworkPolicies, Pods and
//! Namespaces, computes one nftables table for the pods on its own node and
//! replaces that table in one `nft -f` transaction whenever the computed
//! text changes (within [`NetpolConfig::debounce`] of the change).
//!
//! # Semantics (networking.k8s.io/v1)
//!
//! - A pod is *isolated* for ingress (egress) when a policy in its namespace
//!   selects it and lists that type in `policyTypes` (which defaults to
//!   Ingress, plus Egress when the policy has egress rules). An isolated pod
//!   only gets the traffic the union of those policies' rules allows; a pod
//!   no policy selects is left alone. A connection needs the source pod's
//!   egress *and* the destination pod's ingress to allow it.
//! - Peers: `podSelector` (the policy's namespace), `namespaceSelector`
//!   (every pod there), both (pods matching in matching namespaces),
//!   `ipBlock` minus `except`. Pods on other nodes are peers like local
//!   ones: their addresses come from the API.
//! - Ports: numbers, `endPort` ranges, names (resolved against the
//!   destination pod's container ports), TCP (default), UDP and SCTP. A rule
//!   without ports allows every protocol; a rule without peers every peer.
//! - Replies of allowed connections pass (`ct state established,related`).
//! - Only pods with an IPv4 address that have not finished take part;
//!   host-network pods are neither policed nor peers (their address is the
//!   node's).
//!
//! # Where the rules sit
//!
//! The table (family `ip`, default name `skiff-netpol`) hooks `forward` at
//! filter priority. br_netfilter is on, so bridged pod-to-pod packets pass
//! that hook as routed ones do; the service proxy's DNAT runs earlier, in
//! prerouting, so the rules see real pod addresses. Traffic between a pod
//! and its own node never passes `forward` (it is local input or output),
//! which is how "traffic to and from the node is always allowed" holds
//! without a rule. The `ruleset` module documents the table's shape.
//!
//! [`render`] is the pure part; [`Nft`] is the seam to the host.
#![warn(missing_docs)]

mod controller;
mod model;
mod nft;
mod ruleset;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod netns_tests;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

pub use controller::{NetpolConfig, NetpolError, run, run_with};
pub use nft::{Nft, NftCommand, NftError, RecordingNft};

/// The `nft -f` text that replaces table `ip <table>` with the rules for the
/// pods on `node_name`, given every pod, namespace and policy of the
/// cluster. The same objects (in any order) give the same text.
pub fn render(
    table: &str,
    node_name: &str,
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
    policies: &[Arc<NetworkPolicy>],
) -> String {
    ruleset::Ruleset::plan(node_name, pods, namespaces, policies).to_nft(table)
}
