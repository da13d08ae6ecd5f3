//! What every node runs beside its agent for Service networking: the
//! service proxy and NetworkPolicy enforcement, each in its own nftables
//! table. `skiff server` (with its local agent) and `skiff agent` both run it.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::AgentArgs;

/// The nftables table of the service proxy.
pub const PROXY_TABLE: &str = "skiff-proxy";
/// The nftables table of NetworkPolicy enforcement.
pub const NETPOL_TABLE: &str = "skiff-netpol";

/// Runs the node's proxy and policy enforcement (those not disabled) until
/// `shutdown`.
pub async fn run(
    client: skiff_client::Client,
    agent: &AgentArgs,
    node_name: &str,
    node_ip: IpAddr,
    cluster_cidr: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let proxy = async {
        if agent.disable_kube_proxy {
            return Ok(());
        }
        let config = skiff_proxy::ProxyConfig {
            node_name: node_name.to_string(),
            node_ips: ipv4(node_ip).into_iter().collect(),
            cluster_cidr: cluster_cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("cluster CIDR {cluster_cidr}: {e}"))?,
            table: PROXY_TABLE.to_string(),
            ..Default::default()
        };
        skiff_proxy::run(client.clone(), config, shutdown.child_token())
            .await
            .context("service proxy")
    };
    let policies = async {
        if agent.disable_network_policy {
            return Ok(());
        }
        let mut config = skiff_netpol::NetpolConfig::new(node_name);
        config.table = NETPOL_TABLE.to_string();
        skiff_netpol::run(client.clone(), config, shutdown.child_token())
            .await
            .context("network policy enforcement")
    };
    tokio::try_join!(proxy, policies)?;
    Ok(())
}

/// The `--cluster-cidr` flag's network.
pub fn cluster_cidr(text: &str) -> anyhow::Result<ipnet::Ipv4Net> {
    text.parse()
        .with_context(|| format!("--cluster-cidr {text}: not an IPv4 CIDR"))
}

/// The cluster DNS the node's pods are given (`--cluster-dns`,
/// `--cluster-domain`).
pub fn cluster_dns(agent: &AgentArgs) -> skiff_agent::config::ClusterDns {
    skiff_agent::config::ClusterDns {
        servers: vec![agent.cluster_dns.to_string()],
        domain: agent.cluster_domain.clone(),
    }
}

fn ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

/// Removes the node's nftables tables (`skiff killall`): pods are gone, so
/// their rules go too. Tables that do not exist are fine.
pub fn remove_tables() -> anyhow::Result<()> {
    for table in [PROXY_TABLE, NETPOL_TABLE] {
        let exists = std::process::Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .with_context(|| format!("running nft list table ip {table}"))?
            .status
            .success();
        if !exists {
            continue;
        }
        let status = std::process::Command::new("nft")
            .args(["delete", "table", "ip", table])
            .status()
            .with_context(|| format!("running nft delete table ip {table}"))?;
        anyhow::ensure!(status.success(), "nft delete table ip {table} failed");
    }
    Ok(())
}
