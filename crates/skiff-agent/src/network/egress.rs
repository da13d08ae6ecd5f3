//! Masquerade for pod traffic leaving the cluster network, as flannel does.
//!
//! The CNI bridge plugin's own `ipMasq` rewrites everything that leaves the
//! node's pod subnet, pods on other nodes included, so a policy or a server
//! there would see the node's address instead of the pod's. It also runs
//! `iptables` several times for every sandbox set up and torn down. One
//! table per node says it once: pod sources talking to the cluster network
//! keep their address; anything else (the host network, the outside world)
//! is masqueraded. Multicast is left alone, as the bridge plugin does.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

/// The node's nftables table for pod egress.
pub const EGRESS_TABLE: &str = "skiff-egress";

/// An nft script that (re)creates the egress table for `cluster_cidr` in one
/// transaction, replacing whatever an earlier start left.
pub fn egress_script(cluster_cidr: Ipv4Net) -> String {
    let cidr = cluster_cidr.trunc();
    format!(
        "table ip {EGRESS_TABLE} {{}}\n\
         delete table ip {EGRESS_TABLE}\n\
         table ip {EGRESS_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cidr} ip daddr {cidr} return\n\
         \t\tip saddr {cidr} ip daddr 224.0.0.0/4 return\n\
         \t\tip saddr {cidr} masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
}

/// Why the egress table could not be written.
#[derive(Debug, thiserror::Error)]
#[error("programming the pod egress masquerade (nft table ip {EGRESS_TABLE}): {reason}")]
pub struct EgressError {
    reason: String,
}

/// Loads the egress table with `nft -f -`.
pub fn install(cluster_cidr: Ipv4Net) -> Result<(), EgressError> {
    run_nft(&[], &egress_script(cluster_cidr))
}

/// Deletes the egress table (`skiff killall`); a missing table is fine.
pub fn remove() -> Result<(), EgressError> {
    run_nft(
        &[],
        &format!("table ip {EGRESS_TABLE} {{}}\ndelete table ip {EGRESS_TABLE}\n"),
    )
}

fn run_nft(flags: &[&str], script: &str) -> Result<(), EgressError> {
    let error = |reason: String| EgressError { reason };
    let mut child = Command::new("nft")
        .args(flags)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| error(format!("cannot run nft: {e}")))?;
    child
        .stdin
        .take()
        .ok_or_else(|| error("no stdin to nft".into()))?
        .write_all(script.as_bytes())
        .map_err(|e| error(format!("writing to nft: {e}")))?;
    let output = child
        .wait_with_output()
        .map_err(|e| error(format!("waiting for nft: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(error(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_traffic_keeps_its_source_and_the_rest_is_masqueraded() {
        let script = egress_script("10.42.7.9/16".parse().expect("cidr"));
        let rules: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("ip saddr"))
            .collect();
        assert_eq!(
            rules,
            [
                "ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return",
                "ip saddr 10.42.0.0/16 ip daddr 224.0.0.0/4 return",
                "ip saddr 10.42.0.0/16 masquerade fully-random",
            ]
        );
        assert!(script.starts_with(&format!(
            "table ip {EGRESS_TABLE} {{}}\ndelete table ip {EGRESS_TABLE}\n"
        )));
        assert!(script.contains("type nat hook postrouting priority srcnat"));
    }

    #[test]
    fn nft_accepts_the_script() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: `nft -c` needs root");
            return;
        }
        run_nft(
            &["-c"],
            &egress_script("10.42.0.0/16".parse().expect("cidr")),
        )
        .expect("nft --check accepts the egress table");
    }
}
