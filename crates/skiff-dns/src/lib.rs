//! Cluster DNS: Services, headless pod records and StatefulSet hostnames
//! under the cluster domain, other names forwarded upstream.
//!
//! The equivalent of CoreDNS with its `kubernetes`, `forward` and
//! `loadbalance` plugins, built into `skiff server` and run on the host:
//!
//! - [`records`]: the pure part. Services, EndpointSlices and Namespaces in,
//!   a precomputed index out, answering a query with one hash lookup; it is
//!   updated one Service at a time as objects change. What it answers, and
//!   where it follows CoreDNS rather than the bare specification, is in its
//!   module docs.
//! - [`server`]: hickory-server's UDP and TCP loops (truncation included)
//!   with a handler that answers from the index or forwards.
//! - [`forward`]: the upstream side, a plain UDP/TCP forwarder to the host's
//!   resolv.conf nameservers, never to this server itself.
//! - `watch`: kube-runtime reflectors feeding the index.
//! - [`publish`]: the selector-less `kube-system/kube-dns` Service and the
//!   EndpointSlice that points it at this server's host port, which is how
//!   pods (given the Service's IP as nameserver) reach it.
//!
//! [`run`] wires them together.
#![warn(missing_docs)]

pub mod forward;
pub mod publish;
pub mod records;
pub mod server;
mod watch;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use hickory_proto as proto;
pub use ipnet::IpNet;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::forward::{Forwarder, SelfAddresses, upstreams_from_resolv_conf};
use crate::publish::Publication;
use crate::records::{Cluster, Records, Zone, ZoneError};
use crate::server::Server;

/// Where names outside the cluster's zones are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstreams {
    /// The `nameserver`s of a resolv.conf (the host's `/etc/resolv.conf`),
    /// read at start, on port 53, minus those that are this server.
    ResolvConf(PathBuf),
    /// These servers, as given.
    Servers(Vec<SocketAddr>),
}

/// Where the published EndpointSlice says the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEndpoint {
    /// The node IP (the endpoint address); the port is the one served.
    pub node_ip: IpAddr,
    /// The endpoint's `nodeName`.
    pub node_name: Option<String>,
}

/// The cluster DNS server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The address served over UDP and TCP; port 0 picks one free port for
    /// both (the published EndpointSlice follows it). With [`publish`]
    /// set, an unspecified IP (`0.0.0.0`) means the node IP: pods reach the
    /// server through DNAT to that address, and a wildcard UDP socket would
    /// answer from the address of the route back to the pod (the bridge's),
    /// which the pod's connection tracking does not map back to the Service
    /// IP, so the pod would drop the answer.
    ///
    /// [`publish`]: DnsConfig::publish
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// The service CIDRs: PTR queries for their addresses are answered here.
    pub service_cidrs: Vec<IpNet>,
    /// The pod CIDRs: likewise.
    pub pod_cidrs: Vec<IpNet>,
    /// The `kube-dns` Service's cluster IP, also the address of
    /// `ns.dns.<domain>`.
    pub service_ip: IpAddr,
    /// Where other names go.
    pub upstreams: Upstreams,
    /// How long each upstream gets to answer (at most three are tried).
    pub forward_timeout: Duration,
    /// The TTL of cluster records.
    pub ttl: u32,
    /// Publish the `kube-dns` Service with this endpoint; `None` publishes
    /// nothing.
    pub publish: Option<PublishEndpoint>,
}

impl Default for DnsConfig {
    /// Skiff's cluster: `cluster.local`, services 10.43.0.0/16 with DNS at
    /// 10.43.0.10, pods 10.42.0.0/16, the host's resolv.conf upstream, a 2 s
    /// forward timeout and CoreDNS's 5 s TTL, on 0.0.0.0:10053, publishing
    /// nothing.
    fn default() -> Self {
        DnsConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10053),
            cluster_domain: "cluster.local".into(),
            service_cidrs: vec![IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::new(10, 43, 0, 0), 16).expect("valid prefix"),
            )],
            pod_cidrs: vec![IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid prefix"),
            )],
            service_ip: IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10)),
            upstreams: Upstreams::ResolvConf("/etc/resolv.conf".into()),
            forward_timeout: Duration::from_secs(2),
            ttl: 5,
            publish: None,
        }
    }
}

impl DnsConfig {
    /// The zone these settings describe.
    pub fn zone(&self) -> Result<Zone, ZoneError> {
        let reverse = self
            .service_cidrs
            .iter()
            .chain(&self.pod_cidrs)
            .copied()
            .collect();
        Zone::new(
            &self.cluster_domain,
            self.ttl,
            reverse,
            Some(self.service_ip),
        )
    }

    /// The address actually bound: [`DnsConfig::listen`], with an
    /// unspecified IP replaced by the published node IP.
    pub fn listen_address(&self) -> SocketAddr {
        match &self.publish {
            Some(endpoint) if self.listen.ip().is_unspecified() => {
                SocketAddr::new(endpoint.node_ip, self.listen.port())
            }
            _ => self.listen,
        }
    }

    /// The upstream servers for a server listening on `bound`.
    pub async fn upstream_servers(&self, bound: SocketAddr) -> Result<Vec<SocketAddr>, DnsError> {
        match &self.upstreams {
            Upstreams::Servers(servers) => Ok(servers.clone()),
            Upstreams::ResolvConf(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|source| {
                    DnsError::ResolvConf {
                        path: path.clone(),
                        source,
                    }
                })?;
                let mut reach = vec![self.service_ip];
                if bound.port() == 53 && bound.ip().is_unspecified() {
                    reach.extend(self.publish.as_ref().map(|p| p.node_ip));
                }
                let own = SelfAddresses {
                    listen: bound,
                    reach,
                };
                Ok(upstreams_from_resolv_conf(&text, &own))
            }
        }
    }
}

/// Why the DNS server could not run. [`run`] retries nothing that ends in
/// one of these (API errors are retried inside it): a bad zone or resolv.conf
/// is a configuration error, a taken port stays taken, and a failed socket
/// is the caller's to restart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The zone settings are invalid.
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// The resolv.conf naming the upstreams could not be read.
    #[error("reading upstream nameservers from {}: {source}", path.display())]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listening sockets could not be bound.
    #[error("binding the DNS server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's sockets failed while serving.
    #[error("DNS server failed: {reason}")]
    Serve {
        /// What failed.
        reason: String,
    },
}

/// Serve cluster DNS until `shutdown`: bind, watch the API into the record
/// index, publish the `kube-dns` Service if configured, and answer.
pub async fn run(
    client: Client,
    config: DnsConfig,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let zone = Arc::new(config.zone()?);
    let records = Arc::new(RwLock::new(Records::new(
        Arc::clone(&zone),
        initial_serial(),
    )));
    let listen = config.listen_address();
    // A free port (listen port 0) is never 53, so the configured address
    // tells which upstreams would be this server.
    let upstreams = config.upstream_servers(listen).await?;
    if upstreams.is_empty() {
        tracing::warn!("no upstream nameservers: names outside the cluster get SERVFAIL");
    }
    let forwarder = Forwarder::new(upstreams, config.forward_timeout);
    let upstreams = forwarder.upstreams().to_vec();
    let server = Server::bind(listen, Arc::clone(&records), forwarder).await?;
    let bound = server.local_addr();
    tracing::info!(
        address = %bound,
        domain = %zone.domain(),
        ?upstreams,
        "cluster DNS serving"
    );
    let tasks = shutdown.child_token();
    let publication = config.publish.map(|endpoint| Publication {
        service_ip: config.service_ip,
        node_ip: endpoint.node_ip,
        port: bound.port(),
        node_name: endpoint.node_name,
    });
    let serve = async {
        let served = server.serve(tasks.clone()).await;
        // A failed server stops the rest.
        tasks.cancel();
        served
    };
    let publish = async {
        if let Some(publication) = publication {
            publish::maintain(client.clone(), publication, tasks.clone()).await;
        }
    };
    let watch = watch::run(client.clone(), Cluster::new(zone), records, tasks.clone());
    let (served, (), ()) = tokio::join!(serve, watch, publish);
    served
}

/// The first SOA serial: the Unix time, as CoreDNS uses, so that a restart
/// does not go back.
fn initial_serial() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs() % (1 << 32)).unwrap_or(0))
        .unwrap_or(0)
}
