//! Pod networking: the CNI configuration containerd applies to each sandbox.
//!
//! containerd's CRI plugin runs the CNI plugins itself when it creates or
//! tears down a sandbox, from the first config in its CNI conf dir (and it
//! picks a new file up without a restart). So the agent's whole job here is
//! to write one conflist once the node's pod CIDR is known:
//!
//! - `bridge`: a Linux bridge on the node, one veth per pod, the bridge as the
//!   pods' gateway, and hairpin mode so a pod can reach itself through a
//!   Service (no `ipMasq`: [`egress`] masquerades once for the node);
//! - `host-local` IPAM over the node's pod CIDR, with its lease files under
//!   the agent's data dir (so they survive restarts with the pods);
//! - `portmap`, for `hostPort`.
//!
//! Beside the conflist, the node masquerades pod traffic leaving the cluster
//! network ([`egress`]) and routes to the other nodes' pod subnets
//! ([`routes`]); [`netns_dir`] keeps pod network namespaces removable.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;

pub mod egress;
pub mod netns_dir;
pub mod routes;

/// Name of the conflist file; `10-` sorts it before anything a user drops in.
pub(crate) const CONFLIST_NAME: &str = "10-skiff.conflist";

/// The CNI network name containerd reports for pods.
pub const NETWORK_NAME: &str = "skiff";

/// What the node's pod network looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The node's pod CIDR, e.g. `10.42.0.0/24`.
    pub pod_cidr: String,
    /// Name of the Linux bridge (at most 15 bytes).
    pub bridge: String,
    /// Where host-local keeps its address leases.
    pub ipam_dir: PathBuf,
}

impl PodNetwork {
    /// The conflist text for this network.
    pub fn conflist(&self) -> String {
        let config = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.pod_cidr }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": self.ipam_dir,
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
            ],
        });
        // A json! value always serializes.
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }

    /// Writes the conflist into `conf_dir` atomically (a temp file renamed
    /// over the old one), so containerd never reads half a file.
    pub fn install(&self, conf_dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(conf_dir)?;
        std::fs::create_dir_all(&self.ipam_dir)?;
        let path = conf_dir.join(CONFLIST_NAME);
        let temp = conf_dir.join(format!(".{CONFLIST_NAME}.tmp"));
        std::fs::write(&temp, self.conflist())?;
        std::fs::rename(&temp, &path)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> PodNetwork {
        PodNetwork {
            pod_cidr: "10.42.3.0/24".into(),
            bridge: "skiff0".into(),
            ipam_dir: "/data/agent/cni/ipam".into(),
        }
    }

    #[test]
    fn conflist_names_bridge_ipam_and_portmap() {
        let value: serde_json::Value =
            serde_json::from_str(&network().conflist()).expect("valid JSON");
        assert_eq!(value["name"], NETWORK_NAME);
        let bridge = &value["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "skiff0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/data/agent/cni/ipam");
        assert_eq!(value["plugins"][1]["type"], "portmap");
        assert_eq!(value["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn install_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut net = network();
        net.ipam_dir = dir.path().join("ipam");
        let path = net.install(&dir.path().join("net.d")).expect("install");
        net.pod_cidr = "10.42.4.0/24".into();
        net.install(&dir.path().join("net.d")).expect("reinstall");
        let text = std::fs::read_to_string(path).expect("read");
        assert!(text.contains("10.42.4.0/24"));
        assert!(dir.path().join("ipam").is_dir());
        let entries = std::fs::read_dir(dir.path().join("net.d"))
            .expect("dir")
            .count();
        assert_eq!(entries, 1, "no temp file left behind");
    }
}
