//! Image pulls: `imagePullPolicy` and credentials from `imagePullSecrets`.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use skiff_cri::v1::AuthConfig;

/// The registry host an image reference names, as containerd resolves it:
/// the first path component when it looks like a host (has a `.` or `:`, or
/// is `localhost`), else Docker Hub.
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Whether the image reference has a tag or digest other than `latest`.
fn has_explicit_version(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    matches!(last.split_once(':'), Some((_, tag)) if tag != "latest")
}

/// The pull policy of a container, defaulted as upstream: `Always` for
/// `:latest` or untagged images, else `IfNotPresent`.
pub fn pull_policy(policy: Option<&str>, image: &str) -> PullPolicy {
    match policy {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ if has_explicit_version(image) => PullPolicy::IfNotPresent,
        _ => PullPolicy::Always,
    }
}

/// When to pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Every time a container starts.
    Always,
    /// Only when the image is not on the node.
    IfNotPresent,
    /// Never: a missing image is an error (`ErrImageNeverPull`).
    Never,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

/// The host part of a key in a docker config's `auths` (which may be a URL).
fn auth_key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// Credentials for `image` from pull secrets of type
/// `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg`, in the
/// order the pod lists them; `None` when none matches. A secret that does not
/// parse is passed over. The server address stays empty, as the kubelet
/// sends it: containerd parses a set address as a URL, which a bare
/// `host:port` key is not.
pub fn credentials(image: &str, secrets: &[&Secret]) -> Option<AuthConfig> {
    let host = registry_host(image);
    for secret in secrets {
        let data = secret.data.clone().unwrap_or_default();
        let auths = if let Some(json) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<DockerConfig>(&json.0).map(|c| c.auths)
        } else if let Some(json) = data.get(".dockercfg") {
            serde_json::from_slice::<BTreeMap<String, DockerAuth>>(&json.0)
        } else {
            continue;
        };
        let Ok(auths) = auths else { continue };
        if let Some(auth) = auths
            .into_iter()
            .find_map(|(k, auth)| (auth_key_host(&k) == host).then_some(auth))
        {
            let (mut username, mut password) = (auth.username, auth.password);
            if username.is_empty() && !auth.auth.is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.auth.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                if let Some((u, p)) = decoded.split_once(':') {
                    (username, password) = (u.to_string(), p.to_string());
                }
            }
            return Some(AuthConfig {
                username,
                password,
                identity_token: auth.identity_token,
                registry_token: auth.registry_token,
                ..AuthConfig::default()
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn registry_host_follows_docker_rules() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(registry_host("ghcr.io/org/app"), "ghcr.io");
    }

    #[test]
    fn default_policy_depends_on_the_tag() {
        assert_eq!(pull_policy(None, "busybox"), PullPolicy::Always);
        assert_eq!(pull_policy(None, "busybox:latest"), PullPolicy::Always);
        assert_eq!(pull_policy(None, "busybox:1.35"), PullPolicy::IfNotPresent);
        assert_eq!(
            pull_policy(None, "localhost:5000/busybox"),
            PullPolicy::Always
        );
        assert_eq!(pull_policy(None, "a@sha256:00"), PullPolicy::IfNotPresent);
        assert_eq!(pull_policy(Some("Never"), "busybox"), PullPolicy::Never);
    }

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(json.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_match_the_registry_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let cfg = secret(
            ".dockerconfigjson",
            &format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"username":"d","password":"p"}}}}}}"#
            ),
        );
        let got = credentials("127.0.0.1:5000/app:v1", &[&cfg]).expect("match");
        assert_eq!(
            (
                got.username.as_str(),
                got.password.as_str(),
                got.server_address.as_str()
            ),
            ("bob", "s3cret", "")
        );
        let hub = credentials("busybox:1", &[&cfg]).expect("docker hub");
        assert_eq!(hub.username, "d");
        assert!(credentials("ghcr.io/x", &[&cfg]).is_none());
        let legacy = secret(
            ".dockercfg",
            r#"{"ghcr.io":{"username":"g","password":"h"}}"#,
        );
        let broken = secret(".dockerconfigjson", "{not json");
        assert_eq!(
            credentials("ghcr.io/x", &[&broken, &cfg, &legacy])
                .expect("legacy")
                .username,
            "g"
        );
    }
}
