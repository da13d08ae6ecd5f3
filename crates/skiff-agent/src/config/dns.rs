//! A pod's resolv.conf, as upstream's kubelet builds it (`kubelet/network/dns`).
//!
//! The base is the host's resolver config, read from the file the agent is
//! configured with. `ClusterFirst` (off the host network) and
//! `ClusterFirstWithHostNet` replace the servers with the cluster DNS, put the
//! cluster search domains before the host's and set `ndots:5`; without a
//! cluster DNS they fall back to the host's config, as upstream does. `None`
//! starts empty. `spec.dnsConfig` is merged on top, and the result is cut to
//! the resolver's limits.

use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfigOption};
use skiff_cri::v1::DnsConfig;

use super::{ConfigError, SandboxContext};

/// The cluster DNS search depth, upstream's `ndots:5`.
const NDOTS: &str = "ndots:5";
/// At most this many nameservers (glibc's `MAXNS`).
const MAX_SERVERS: usize = 3;
/// At most this many search domains.
const MAX_SEARCHES: usize = 32;
/// At most this many characters on the search line.
const MAX_SEARCH_CHARS: usize = 2048;
/// Longer search domains crash some resolvers; upstream drops them.
const MAX_SEARCH_LEN: usize = 253;

/// The pod's DNS config per `dnsPolicy` (default `ClusterFirst`).
pub fn dns_config(pod: &Pod, ctx: &SandboxContext) -> Result<DnsConfig, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        "Default" | "None" => false,
        other => return Err(ConfigError::InvalidDnsPolicy(other.to_string())),
    };
    let mut config = if policy == "None" {
        DnsConfig::default()
    } else {
        host_config(&ctx.host_resolv_conf)?
    };
    if let (true, Some(dns)) = (cluster, &ctx.cluster_dns) {
        config.servers = dns.servers.clone();
        if !dns.domain.is_empty() {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut searches = vec![
                format!("{namespace}.svc.{}", dns.domain),
                format!("svc.{}", dns.domain),
                dns.domain.clone(),
            ];
            searches.append(&mut config.searches);
            config.searches = searches;
        }
        config.options = vec![NDOTS.to_string()];
    }
    if let Some(extra) = spec.dns_config {
        config.servers.extend(extra.nameservers.unwrap_or_default());
        config.searches.extend(extra.searches.unwrap_or_default());
        merge_options(&mut config.options, extra.options.unwrap_or_default());
    }
    dedup(&mut config.servers);
    dedup(&mut config.searches);
    config.servers.truncate(MAX_SERVERS);
    fit_searches(&mut config.searches);
    Ok(config)
}

/// The host's resolver config; a missing file is an empty one.
fn host_config(path: &Path) -> Result<DnsConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_resolv_conf(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DnsConfig::default()),
        Err(e) => Err(ConfigError::ResolvConf {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// resolv.conf as the resolver reads it: comments start at `#` or `;`, a
/// later `search` line replaces an earlier one (with `.` and trailing dots
/// dropped), and a later option replaces an earlier one of the same name.
pub(super) fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut config = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(server) = words
                    .next()
                    .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
                {
                    config.servers.push(server.to_string());
                }
            }
            Some("search") => {
                config.searches = words
                    .filter(|d| *d != ".")
                    .map(|d| d.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => {
                for option in words {
                    set_option(&mut config.options, option.to_string());
                }
            }
            _ => {}
        }
    }
    config
}

fn option_name(option: &str) -> &str {
    option.split(':').next().unwrap_or_default()
}

/// Sets `option`, replacing one of the same name in place.
fn set_option(options: &mut Vec<String>, option: String) {
    match options
        .iter_mut()
        .find(|o| option_name(o) == option_name(&option))
    {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

/// `spec.dnsConfig.options` override options of the same name; an empty
/// value is a bare option.
fn merge_options(options: &mut Vec<String>, extra: Vec<PodDNSConfigOption>) {
    for option in extra {
        let name = option.name.unwrap_or_default();
        let rendered = match option.value.filter(|v| !v.is_empty()) {
            Some(value) => format!("{name}:{value}"),
            None => name,
        };
        set_option(options, rendered);
    }
}

/// Drops repeats, keeping first occurrences in order.
fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

/// Cuts the search list to the resolver's limits: a count, a length per
/// domain, and a length of the whole line (dropping domains from the end).
fn fit_searches(searches: &mut Vec<String>) {
    searches.truncate(MAX_SEARCHES);
    searches.retain(|s| s.len() <= MAX_SEARCH_LEN);
    let line_len = |s: &[String]| {
        s.iter()
            .map(|d| d.len() + 1)
            .sum::<usize>()
            .saturating_sub(1)
    };
    while line_len(searches) > MAX_SEARCH_CHARS {
        searches.pop();
    }
}
