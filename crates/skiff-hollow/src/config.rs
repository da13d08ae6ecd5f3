//! What a set of hollow nodes looks like, and the fake addresses each one
//! gets.
//!
//! # Addresses
//!
//! Hollow nodes and their pods get addresses from two private ranges that
//! nothing routes to; they only fill the fields that controllers and the
//! scheduler read (EndpointSlices, `kubectl get pods -o wide`):
//!
//! - node `i` reports the InternalIP `10.255.0.0 + i + 1`
//!   ([`NODE_IP_RANGE`]): `hollow-node-0` is `10.255.0.1`, `hollow-node-256`
//!   is `10.255.1.1`;
//! - node `i` owns the pod CIDR `10.128.0.0/10`'s `i`-th `/24`
//!   ([`POD_IP_RANGE`]), registered as its `spec.podCIDR` so the node IPAM
//!   controller leaves it alone: `hollow-node-0` has `10.128.0.0/24`,
//!   `hollow-node-257` has `10.129.1.0/24`. Its pods get `.1` to `.254`.
//!
//! The `/10` holds 16,384 such subnets, hence [`MAX_NODES`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The range node InternalIPs come from (`10.255.0.0/16`): not routable.
pub const NODE_IP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 255, 0, 0), 16);

/// The range pod IPs come from (`10.128.0.0/10`), one `/24` per node: not
/// routable.
pub const POD_IP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 128, 0, 0), 10);

/// The most hollow nodes one set may have: one per `/24` of
/// [`POD_IP_RANGE`].
pub const MAX_NODES: usize = 1 << (24 - POD_IP_RANGE.1);

/// The most pods a hollow node can run at once: the hosts of its `/24`.
pub const MAX_PODS_PER_NODE: u32 = 254;

/// The label every hollow Node carries (value `true`).
pub const HOLLOW_LABEL: &str = "skiff.dev/hollow";

/// The kubelet version hollow nodes report.
pub const HOLLOW_KUBELET_VERSION: &str = "v1.37.0-skiff-hollow";

/// A set of hollow nodes. `HollowConfig { nodes: 100, ..Default::default() }`
/// is 100 nodes with upstream's kubelet timings.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// How many nodes, named `{name_prefix}-0` to `{name_prefix}-{nodes - 1}`.
    pub nodes: usize,
    /// The node name prefix (default `hollow-node`).
    pub name_prefix: String,
    /// `status.capacity` (default: cpu 4, memory 16Gi, pods 110,
    /// ephemeral-storage 100Gi). Extended resources may be added.
    pub capacity: BTreeMap<String, Quantity>,
    /// `status.allocatable` (default: the same as the capacity). Its `pods`
    /// also bounds how many pods a node admits, as a kubelet's does.
    pub allocatable: BTreeMap<String, Quantity>,
    /// The `kubernetes.io/arch` label and `nodeInfo.architecture` (default
    /// `amd64`).
    pub architecture: String,
    /// Labels added to every node, beside the well-known ones (e.g.
    /// `topology.kubernetes.io/zone`).
    pub labels: BTreeMap<String, String>,
    /// Taints every node is registered with.
    pub taints: Vec<Taint>,
    /// How often each node renews its Lease (upstream: 10 s).
    pub heartbeat_interval: Duration,
    /// The Leases' `leaseDurationSeconds` (upstream: 40).
    pub lease_duration_seconds: i32,
    /// How often an unchanged node status is reported again (upstream's
    /// `nodeStatusReportFrequency`: 5 minutes). A status that differs from
    /// what the API shows (say Ready=Unknown set by the node lifecycle
    /// controller) is reported at the next heartbeat.
    pub status_report_interval: Duration,
    /// When set, pods with `restartPolicy` Never or OnFailure succeed this
    /// long after they started (for Job tests). Otherwise every pod runs
    /// until it is deleted.
    pub complete_after: Option<Duration>,
    /// How many pod writes (status reports, deletions) may be in flight.
    pub pod_concurrency: usize,
    /// How many node writes (Leases, node statuses) may be in flight.
    pub heartbeat_concurrency: usize,
}

impl Default for HollowConfig {
    fn default() -> Self {
        let resources = default_resources();
        Self {
            nodes: 1,
            name_prefix: "hollow-node".to_string(),
            capacity: resources.clone(),
            allocatable: resources,
            architecture: "amd64".to_string(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            heartbeat_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_report_interval: Duration::from_secs(5 * 60),
            complete_after: None,
            pod_concurrency: 64,
            heartbeat_concurrency: 32,
        }
    }
}

/// cpu 4, memory 16Gi, pods 110, ephemeral-storage 100Gi.
pub fn default_resources() -> BTreeMap<String, Quantity> {
    [
        ("cpu", "4"),
        ("memory", "16Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(name, amount)| (name.to_string(), Quantity(amount.to_string())))
    .collect()
}

/// Why a [`HollowConfig`] cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `nodes` is zero.
    #[error("a hollow node set needs at least one node")]
    NoNodes,
    /// `nodes` is over [`MAX_NODES`].
    #[error("{requested} hollow nodes asked for; the fake pod range has room for {MAX_NODES}")]
    TooManyNodes {
        /// The `nodes` asked for.
        requested: usize,
    },
    /// Node names would not be valid DNS subdomains.
    #[error("node name prefix {prefix:?} is not a lowercase DNS label")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
    },
    /// Allocatable `pods` is missing, not a whole number, or over
    /// [`MAX_PODS_PER_NODE`].
    #[error("allocatable pods {value:?} is not a whole number from 1 to {MAX_PODS_PER_NODE}")]
    InvalidPods {
        /// The quantity as given, if any.
        value: Option<String>,
    },
    /// A duration or concurrency that must be positive is zero.
    #[error("{field} must be positive")]
    Zero {
        /// The field.
        field: &'static str,
    },
}

impl HollowConfig {
    /// Checks the config, returning how many pods each node admits.
    pub(crate) fn validate(&self) -> Result<u32, ConfigError> {
        if self.nodes == 0 {
            return Err(ConfigError::NoNodes);
        }
        if self.nodes > MAX_NODES {
            return Err(ConfigError::TooManyNodes {
                requested: self.nodes,
            });
        }
        if !is_dns_label_prefix(&self.name_prefix) {
            return Err(ConfigError::InvalidPrefix {
                prefix: self.name_prefix.clone(),
            });
        }
        for (field, zero) in [
            ("heartbeat_interval", self.heartbeat_interval.is_zero()),
            (
                "status_report_interval",
                self.status_report_interval.is_zero(),
            ),
            ("lease_duration_seconds", self.lease_duration_seconds <= 0),
            ("pod_concurrency", self.pod_concurrency == 0),
            ("heartbeat_concurrency", self.heartbeat_concurrency == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { field });
            }
        }
        let pods = self.allocatable.get("pods").map(|q| q.0.clone());
        match pods.as_deref().map(str::parse::<u32>) {
            Some(Ok(n)) if (1..=MAX_PODS_PER_NODE).contains(&n) => Ok(n),
            _ => Err(ConfigError::InvalidPods { value: pods }),
        }
    }

    /// The name of node `index`.
    pub fn node_name(&self, index: usize) -> String {
        format!("{}-{index}", self.name_prefix)
    }
}

/// Whether `{prefix}-{n}` is a DNS label for every node number: lowercase
/// alphanumerics and `-`, starting with an alphanumeric, leaving room for
/// the suffix within 63 characters.
fn is_dns_label_prefix(prefix: &str) -> bool {
    let longest_suffix = "-".len() + MAX_NODES.to_string().len();
    !prefix.is_empty()
        && prefix.len() + longest_suffix <= 63
        && prefix.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The InternalIP of node `index` (below [`MAX_NODES`]).
pub fn node_ip(index: usize) -> Ipv4Addr {
    let offset = u32::try_from(index + 1).expect("node index below MAX_NODES");
    Ipv4Addr::from(u32::from(NODE_IP_RANGE.0) + offset)
}

/// The first address of node `index`'s pod `/24`.
fn pod_subnet_base(index: usize) -> u32 {
    let offset = u32::try_from(index).expect("node index below MAX_NODES") << 8;
    u32::from(POD_IP_RANGE.0) + offset
}

/// Node `index`'s pod CIDR, e.g. `10.128.3.0/24`.
pub fn pod_cidr(index: usize) -> String {
    format!("{}/24", Ipv4Addr::from(pod_subnet_base(index)))
}

/// Host `host` (1 to 254) of node `index`'s pod `/24`.
pub fn pod_ip(index: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::from(pod_subnet_base(index) + u32::from(host))
}

/// The host number of `ip` within node `index`'s pod `/24`, if it lies
/// there.
pub fn pod_host(index: usize, ip: &str) -> Option<u8> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    let host = u32::from(ip).checked_sub(pod_subnet_base(index))?;
    u8::try_from(host)
        .ok()
        .filter(|h| (1..=MAX_PODS_PER_NODE).contains(&u32::from(*h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstream_kubelet_timings_and_valid() {
        let config = HollowConfig::default();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.lease_duration_seconds, 40);
        assert_eq!(config.status_report_interval, Duration::from_secs(300));
        assert_eq!(config.capacity["memory"], Quantity("16Gi".into()));
        assert_eq!(
            config.capacity["ephemeral-storage"],
            Quantity("100Gi".into())
        );
        assert_eq!(config.validate(), Ok(110));
        assert_eq!(config.node_name(7), "hollow-node-7");
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let with = |f: fn(&mut HollowConfig)| {
            let mut config = HollowConfig::default();
            f(&mut config);
            config.validate()
        };
        assert_eq!(with(|c| c.nodes = 0), Err(ConfigError::NoNodes));
        assert_eq!(
            with(|c| c.nodes = MAX_NODES + 1),
            Err(ConfigError::TooManyNodes {
                requested: MAX_NODES + 1
            })
        );
        assert_eq!(with(|c| c.nodes = MAX_NODES), Ok(110));
        for prefix in ["", "Hollow", "-x", "a_b", &"a".repeat(58)] {
            assert_eq!(
                with_prefix(prefix),
                Err(ConfigError::InvalidPrefix {
                    prefix: prefix.to_string()
                }),
                "{prefix:?}"
            );
        }
        assert_eq!(with_prefix(&"a".repeat(57)), Ok(110));
        assert_eq!(
            with(|c| c.heartbeat_interval = Duration::ZERO),
            Err(ConfigError::Zero {
                field: "heartbeat_interval"
            })
        );
        assert_eq!(
            with(|c| c.pod_concurrency = 0),
            Err(ConfigError::Zero {
                field: "pod_concurrency"
            })
        );
        for pods in ["0", "255", "1k", "x"] {
            let result = with_pods(Some(pods));
            assert_eq!(
                result,
                Err(ConfigError::InvalidPods {
                    value: Some(pods.to_string())
                })
            );
        }
        assert_eq!(
            with_pods(None),
            Err(ConfigError::InvalidPods { value: None })
        );
        assert_eq!(with_pods(Some("254")), Ok(254));
    }

    fn with_prefix(prefix: &str) -> Result<u32, ConfigError> {
        HollowConfig {
            name_prefix: prefix.to_string(),
            ..HollowConfig::default()
        }
        .validate()
    }

    fn with_pods(pods: Option<&str>) -> Result<u32, ConfigError> {
        let mut config = HollowConfig::default();
        match pods {
            Some(p) => config
                .allocatable
                .insert("pods".into(), Quantity(p.to_string())),
            None => config.allocatable.remove("pods"),
        };
        config.validate()
    }

    #[test]
    fn addresses_are_unique_per_node() {
        assert_eq!(node_ip(0), Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(node_ip(256), Ipv4Addr::new(10, 255, 1, 1));
        assert_eq!(node_ip(MAX_NODES - 1), Ipv4Addr::new(10, 255, 64, 0));
        assert_eq!(pod_cidr(0), "10.128.0.0/24");
        assert_eq!(pod_cidr(257), "10.129.1.0/24");
        assert_eq!(pod_cidr(MAX_NODES - 1), "10.191.255.0/24");
        assert_eq!(pod_ip(3, 1), Ipv4Addr::new(10, 128, 3, 1));
        assert_eq!(pod_ip(3, 254), Ipv4Addr::new(10, 128, 3, 254));
    }

    #[test]
    fn pod_hosts_lie_in_their_nodes_subnet() {
        assert_eq!(pod_host(3, "10.128.3.7"), Some(7));
        assert_eq!(pod_host(3, "10.128.4.7"), None);
        assert_eq!(pod_host(3, "10.128.2.7"), None);
        assert_eq!(pod_host(3, "10.128.3.0"), None);
        assert_eq!(pod_host(3, "10.128.3.255"), None);
        assert_eq!(pod_host(3, "fd00::1"), None);
    }
}
