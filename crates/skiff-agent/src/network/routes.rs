//! Routes to the other nodes' pod CIDRs, as flannel's `host-gw` backend:
//! each node's pod subnet is reached through that node's InternalIP, so pod
//! traffic crosses nodes with its source address intact. It needs the nodes
//! on one layer-2 network; a node whose address is not on a local link gets
//! no route (and a warning), as with host-gw; simulated nodes, whose
//! addresses are on no network, get none either.
//!
//! The routes carry their own protocol number, so the agent finds and
//! replaces exactly the routes it made and leaves everything else alone.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// The routing protocol number that marks the agent's routes.
pub const ROUTE_PROTOCOL: u8 = 86;

/// How often routes are checked even when no node changed, to put back a
/// route someone deleted.
const RESYNC: Duration = Duration::from_secs(30);

/// One other node's pod subnet and the node address it is reached through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRoute {
    /// The node's pod CIDR.
    pub cidr: Ipv4Net,
    /// The node's InternalIP.
    pub via: Ipv4Addr,
}

/// The routes this node needs: one per other node with an IPv4 pod CIDR and
/// an IPv4 InternalIP that is not this node's own address.
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    own_node: &str,
    own_ip: Option<Ipv4Addr>,
) -> BTreeSet<PodRoute> {
    nodes
        .into_iter()
        .filter(|node| node.metadata.name.as_deref() != Some(own_node))
        .filter_map(|node| {
            let spec = node.spec.as_ref()?;
            let cidr = spec
                .pod_cidrs
                .iter()
                .flatten()
                .chain(spec.pod_cidr.iter())
                .find_map(|c| c.parse::<Ipv4Net>().ok())?
                .trunc();
            let via = node
                .status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
            (Some(via) != own_ip).then_some(PodRoute { cidr, via })
        })
        .collect()
}

/// What to change to get from the routes in place to the desired ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to add or point elsewhere (`ip route replace`).
    pub replace: Vec<PodRoute>,
    /// Routes of nodes that are gone or whose subnet changed.
    pub delete: Vec<PodRoute>,
}

/// Compares the agent's routes in place with the desired ones. A subnet whose
/// gateway changed is replaced, not deleted and re-added.
pub fn plan(current: &BTreeSet<PodRoute>, desired: &BTreeSet<PodRoute>) -> RoutePlan {
    let replace = desired.difference(current).cloned().collect::<Vec<_>>();
    let delete = current
        .difference(desired)
        .filter(|old| !replace.iter().any(|new| new.cidr == old.cidr))
        .cloned()
        .collect();
    RoutePlan { replace, delete }
}

/// Why a route could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {reason}")]
pub struct RouteError {
    action: String,
    reason: String,
}

/// The host's routing table, as far as the agent's routes go.
pub trait RouteTable: Send + Sync {
    /// The IPv4 networks of the host's own addresses (the local links).
    fn local_networks(&self) -> Result<Vec<Ipv4Net>, RouteError>;
    /// The routes carrying [`ROUTE_PROTOCOL`].
    fn list(&self) -> Result<BTreeSet<PodRoute>, RouteError>;
    /// Adds `route`, or points its subnet at the new gateway.
    fn replace(&self, route: &PodRoute) -> Result<(), RouteError>;
    /// Removes `route`; one already gone is fine.
    fn delete(&self, route: &PodRoute) -> Result<(), RouteError>;
}

/// [`RouteTable`] through the `ip` command, optionally inside a named
/// network namespace (tests).
#[derive(Debug, Clone, Default)]
pub struct IpRouteCommand {
    /// `ip netns` name to run in; `None` for the host.
    pub netns: Option<String>,
}

impl IpRouteCommand {
    fn ip(&self, args: &[&str]) -> Result<String, RouteError> {
        let mut command = Command::new("ip");
        if let Some(netns) = &self.netns {
            command.args(["-n", netns]);
        }
        let output = command.args(args).output().map_err(|e| RouteError {
            action: format!("running ip {}", args.join(" ")),
            reason: e.to_string(),
        })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(RouteError {
                action: format!("ip {}", args.join(" ")),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}

/// One entry of `ip -j addr show`.
#[derive(serde::Deserialize)]
struct ListedLink {
    #[serde(default)]
    addr_info: Vec<ListedAddress>,
}

#[derive(serde::Deserialize)]
struct ListedAddress {
    local: String,
    prefixlen: u8,
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, RouteError> {
    serde_json::from_str(text.trim()).map_err(|e| RouteError {
        action: format!("reading {what}"),
        reason: e.to_string(),
    })
}

/// One entry of `ip -j route show`.
#[derive(serde::Deserialize)]
struct ListedRoute {
    dst: String,
    gateway: Option<String>,
}

impl RouteTable for IpRouteCommand {
    fn local_networks(&self) -> Result<Vec<Ipv4Net>, RouteError> {
        let text = self.ip(&["-j", "-4", "addr", "show"])?;
        let links: Vec<ListedLink> = parse_json(&text, "ip -j addr show")?;
        Ok(links
            .iter()
            .flat_map(|link| &link.addr_info)
            .filter_map(|a| Ipv4Net::new(a.local.parse().ok()?, a.prefixlen).ok())
            .map(|net| net.trunc())
            .collect())
    }

    fn list(&self) -> Result<BTreeSet<PodRoute>, RouteError> {
        let protocol = ROUTE_PROTOCOL.to_string();
        let text = self.ip(&["-j", "-4", "route", "show", "proto", &protocol])?;
        let listed: Vec<ListedRoute> = parse_json(&text, "ip -j route show")?;
        Ok(listed
            .into_iter()
            .filter_map(|r| {
                Some(PodRoute {
                    cidr: r.dst.parse().ok()?,
                    via: r.gateway?.parse().ok()?,
                })
            })
            .collect())
    }

    fn replace(&self, route: &PodRoute) -> Result<(), RouteError> {
        let (cidr, via, protocol) = (
            route.cidr.to_string(),
            route.via.to_string(),
            ROUTE_PROTOCOL.to_string(),
        );
        self.ip(&["route", "replace", &cidr, "via", &via, "proto", &protocol])
            .map(drop)
    }

    fn delete(&self, route: &PodRoute) -> Result<(), RouteError> {
        let (cidr, protocol) = (route.cidr.to_string(), ROUTE_PROTOCOL.to_string());
        match self.ip(&["route", "del", &cidr, "proto", &protocol]) {
            Err(e) if e.reason.contains("No such process") => Ok(()),
            other => other.map(drop),
        }
    }
}

/// Applies `plan`; every route is tried, and the ones that failed are
/// returned (with why) so the caller reports each failure once.
pub fn apply(table: &dyn RouteTable, plan: &RoutePlan) -> Vec<(PodRoute, RouteError)> {
    let deletes = plan.delete.iter().map(|r| (r, table.delete(r)));
    let replaces = plan.replace.iter().map(|r| (r, table.replace(r)));
    deletes
        .chain(replaces)
        .filter_map(|(route, result)| result.err().map(|e| (route.clone(), e)))
        .collect()
}

/// Removes every route the agent made (`skiff killall`).
pub fn remove_all(table: &dyn RouteTable) -> Result<(), RouteError> {
    for route in table.list()? {
        table.delete(&route)?;
    }
    Ok(())
}

/// Keeps the routes in step with the Nodes until `shutdown`.
pub async fn run(
    client: Client,
    own_node: String,
    own_ip: IpAddr,
    table: Arc<dyn RouteTable>,
    shutdown: CancellationToken,
) {
    let own_ip = match own_ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    let (store, writer) = reflector::store::<Node>();
    let mut events =
        skiff_client::watch::cache_feed(Api::<Node>::all(client), watcher::Config::default())
            .reflect(writer)
            .boxed();
    // Routes follow the cache only once its first list is complete, or a
    // partial list would delete the routes of nodes not seen yet.
    let mut listed = false;
    let mut synced: Option<BTreeSet<PodRoute>> = None;
    let mut failed: BTreeSet<PodRoute> = BTreeSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let due = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => {
                    listed = true;
                    false
                }
                Some(Ok(_)) => false,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "node watch for pod routes");
                    continue;
                }
                None => return,
            },
            _ = resync.tick() => true,
        };
        if !listed {
            continue;
        }
        let nodes = store.state();
        let desired = desired_routes(nodes.iter().map(|n| n.as_ref()), &own_node, own_ip);
        // Node heartbeats change nothing here: only a new set of routes, or
        // the periodic check, touches the host.
        if !due && synced.as_ref() == Some(&desired) {
            continue;
        }
        failed = sync(table.clone(), desired.clone(), &failed).await;
        synced = Some(desired);
    }
}

/// One reconcile pass; returns the routes that could not be made, warning
/// only about those that did not fail last time.
async fn sync(
    table: Arc<dyn RouteTable>,
    desired: BTreeSet<PodRoute>,
    failed_before: &BTreeSet<PodRoute>,
) -> BTreeSet<PodRoute> {
    let result = tokio::task::spawn_blocking(move || {
        let local = table.local_networks()?;
        let (reachable, off_link): (BTreeSet<_>, BTreeSet<_>) = desired
            .into_iter()
            .partition(|r| local.iter().any(|net| net.contains(&r.via)));
        let mut failures = apply(table.as_ref(), &plan(&table.list()?, &reachable));
        failures.extend(off_link.into_iter().map(|route| {
            let error = RouteError {
                action: format!("routing {} via {}", route.cidr, route.via),
                reason: "the node address is on no local network".into(),
            };
            (route, error)
        }));
        Ok::<_, RouteError>(failures)
    })
    .await;
    match result {
        Ok(Ok(failures)) => {
            for (route, error) in &failures {
                if !failed_before.contains(route) {
                    tracing::warn!(cidr = %route.cidr, via = %route.via, %error, "cannot route to a node's pods");
                }
            }
            failures.into_iter().map(|(route, _)| route).collect()
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot read the pod routes");
            failed_before.clone()
        }
        Err(error) => {
            tracing::warn!(%error, "pod route sync task failed");
            failed_before.clone()
        }
    }
}

#[cfg(test)]
mod tests;
