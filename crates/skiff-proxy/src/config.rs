//! What the proxy needs to know about its node and cluster.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

/// The proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name: endpoints whose `nodeName` equals it are local (for
    /// the `Local` traffic policies).
    pub node_name: String,
    /// This node's addresses. An endpoint at one of them is local too, whatever
    /// its `nodeName` says: the cluster DNS server listens on the host and its
    /// EndpointSlice names the node by address.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod network (`--cluster-cidr`). ClusterIP traffic from outside it,
    /// host processes included, is masqueraded so replies come back here.
    pub cluster_cidr: Ipv4Cidr,
    /// The nftables table (family `ip`) the proxy owns and replaces.
    pub table: String,
    /// The packet mark bit that asks `postrouting` to masquerade.
    pub masquerade_mark: u32,
    /// Run `nft` and set sysctls inside this named network namespace
    /// (`ip netns exec`) instead of the proxy's own; for tests and benchmarks.
    pub netns: Option<String>,
    /// How long after the first change of a burst the rules are synced: one
    /// sync covers the burst, and a change is live well within a second.
    pub sync_delay: Duration,
    /// How long to wait before retrying a failed sync.
    pub retry_delay: Duration,
}

impl Default for ProxyConfig {
    /// The cluster's fixed layout (pods in 10.42.0.0/16), table `skiff-proxy`,
    /// kube-proxy's masquerade bit, and no node name or addresses.
    fn default() -> Self {
        Self {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 16),
            table: "skiff-proxy".to_owned(),
            masquerade_mark: 0x4000,
            netns: None,
            sync_delay: Duration::from_millis(100),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// An IPv4 network in CIDR notation, such as `10.42.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network holding `addr` with a `prefix`-bit mask (host bits are
    /// cleared; a prefix above 32 is taken as 32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    /// Whether `addr` is inside the network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        Self::new(addr, self.prefix).network == self.network
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A string that is not `a.b.c.d/n`.
#[derive(Debug, thiserror::Error)]
#[error("{input:?} is not an IPv4 CIDR (a.b.c.d/n)")]
pub struct CidrError {
    input: String,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || CidrError {
            input: s.to_owned(),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(error)?;
        let addr = addr.parse::<Ipv4Addr>().map_err(|_| error())?;
        let prefix = prefix.parse::<u8>().map_err(|_| error())?;
        if prefix > 32 {
            return Err(error());
        }
        Ok(Self::new(addr, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_normalises_and_matches() {
        let cidr: Ipv4Cidr = "10.42.7.9/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.42.0.0/16");
        assert!(cidr.contains(Ipv4Addr::new(10, 42, 255, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(
            "0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert!(
            "1.2.3.4/0"
                .parse::<Ipv4Cidr>()
                .unwrap()
                .contains(Ipv4Addr::BROADCAST)
        );
        for bad in ["10.42.0.0", "10.42.0.0/33", "x/8", "10.42.0.0/-1"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }
}
