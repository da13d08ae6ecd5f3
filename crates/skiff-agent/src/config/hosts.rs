//! A pod's names: its host name, its domain (`spec.subdomain`), the name the
//! kernel sees (`setHostnameAsFQDN`), and the `/etc/hosts` file the agent
//! mounts into its containers, by upstream's rules (`GeneratePodHostNameAndDomain`,
//! `GetNodenameForKernel`, `managedHostsFileContent`).

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{HostAlias, Pod};

use super::ConfigError;

/// Longest host name (a DNS label).
const MAX_HOSTNAME: usize = 63;
/// Longest kernel node name for an FQDN host name.
const MAX_FQDN: usize = 64;

/// Whether `name` is a DNS-1123 label: lower-case alphanumerics and `-`,
/// starting and ending alphanumeric, at most 63 long.
fn is_dns_label(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= MAX_HOSTNAME
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-')
}

/// Whether `name` is a DNS-1123 subdomain: dot-separated labels, at most
/// 253 long.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// Cuts a host name to 63 bytes, without a trailing `-` or `.`.
fn truncate(pod_name: &str, hostname: &str) -> Result<String, ConfigError> {
    if hostname.len() <= MAX_HOSTNAME {
        return Ok(hostname.to_string());
    }
    // Validated names are ASCII; cut on a char boundary all the same.
    let mut end = MAX_HOSTNAME;
    while !hostname.is_char_boundary(end) {
        end -= 1;
    }
    let cut = hostname[..end].trim_end_matches(['-', '.']);
    if cut.is_empty() {
        return Err(ConfigError::InvalidHostname(format!(
            "hostname for pod {pod_name:?} was invalid: {hostname:?}"
        )));
    }
    Ok(cut.to_string())
}

/// The pod's host name and, with `spec.subdomain`, its domain
/// (`SUBDOMAIN.NAMESPACE.svc.CLUSTER_DOMAIN`).
///
/// The host name is `spec.hostnameOverride`, else `spec.hostname`, else the
/// pod name, cut to 63 bytes.
pub fn hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, Option<String>), ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    if let Some(hostname) = spec.hostname_override.filter(|h| !h.is_empty()) {
        if !is_dns_subdomain(&hostname) {
            return Err(ConfigError::InvalidHostname(format!(
                "pod HostnameOverride {hostname:?} is not a valid DNS subdomain"
            )));
        }
        return Ok((truncate(&pod_name, &hostname)?, None));
    }
    let hostname = match spec.hostname.filter(|h| !h.is_empty()) {
        Some(hostname) if !is_dns_label(&hostname) => {
            return Err(ConfigError::InvalidHostname(format!(
                "pod Hostname {hostname:?} is not a valid DNS label"
            )));
        }
        Some(hostname) => hostname,
        None => pod_name.clone(),
    };
    let hostname = truncate(&pod_name, &hostname)?;
    let domain = match spec.subdomain.filter(|s| !s.is_empty()) {
        Some(subdomain) if !is_dns_label(&subdomain) => {
            return Err(ConfigError::InvalidHostname(format!(
                "pod Subdomain {subdomain:?} is not a valid DNS label"
            )));
        }
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            Some(format!("{subdomain}.{namespace}.svc.{cluster_domain}"))
        }
        None => None,
    };
    Ok((hostname, domain))
}

/// The name the sandbox's UTS namespace gets: the host name, or with
/// `setHostnameAsFQDN` and a domain, the FQDN (at most 64 bytes).
pub(super) fn kernel_hostname(pod: &Pod, cluster_domain: &str) -> Result<String, ConfigError> {
    let (hostname, domain) = hostname_and_domain(pod, cluster_domain)?;
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match domain {
        Some(domain) if as_fqdn => {
            let fqdn = format!("{hostname}.{domain}");
            if fqdn.len() > MAX_FQDN {
                return Err(ConfigError::InvalidHostname(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} \
                     is too long ({MAX_FQDN} characters is the max, {} characters requested)",
                    fqdn.len()
                )));
            }
            Ok(fqdn)
        }
        _ => Ok(hostname),
    }
}

/// The content of the pod's `/etc/hosts`.
///
/// Off the host network: localhost entries, then one line per pod IP naming
/// the pod (with its FQDN first when it has a domain), then `hostAliases`. On
/// the host network: the node's hosts file (`node_hosts`) plus `hostAliases`.
///
/// Upstream writes this to `PODDIR/etc-hosts` and bind-mounts it at
/// `/etc/hosts` into every container that does not mount something there
/// itself, once the pod has an IP (or is on the host network).
pub fn etc_hosts(
    pod: &Pod,
    pod_ips: &[String],
    cluster_domain: &str,
    node_hosts: &str,
) -> Result<String, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let aliases = spec.host_aliases.unwrap_or_default();
    let mut out = String::new();
    if spec.host_network.unwrap_or(false) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(node_hosts);
    } else {
        let (hostname, domain) = hostname_and_domain(pod, cluster_domain)?;
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        for ip in pod_ips {
            // Writing to a String cannot fail.
            let _ = match &domain {
                Some(domain) => writeln!(out, "{ip}\t{hostname}.{domain}\t{hostname}"),
                None => writeln!(out, "{ip}\t{hostname}"),
            };
        }
    }
    out.push_str(&alias_lines(&aliases));
    Ok(out)
}

fn alias_lines(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        let _ = writeln!(out, "{}\t{names}", alias.ip);
    }
    out
}
