//! Building a [`Client`] for a Skiff component.

use std::path::{Path, PathBuf};

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The kubeconfig file could not be read or parsed.
    #[error("reading kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    /// The server URL is not a valid URI.
    #[error("invalid server URL {url:?}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
    },
    /// The CA bundle holds no PEM certificate.
    #[error("the CA bundle holds no PEM certificate")]
    NoCaCertificate,
    /// The user agent is not a valid header value.
    #[error("invalid user agent {user_agent:?}")]
    InvalidUserAgent {
        /// The user agent given.
        user_agent: String,
    },
    /// The CA bundle is not valid PEM.
    #[error("parsing the CA bundle")]
    InvalidCa(#[source] pem::PemError),
    /// kube-rs could not build its HTTP stack (TLS setup, proxy...).
    #[error("building the HTTP client")]
    Client(#[source] Box<kube::Error>),
}

/// A client for the cluster described by the kubeconfig at `path` (its
/// current context).
pub async fn from_kubeconfig(path: &Path) -> Result<Client, ConnectError> {
    let kubeconfig_error = |source| ConnectError::Kubeconfig {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)?;
    Client::try_from(config).map_err(|e| ConnectError::Client(Box::new(e)))
}

/// A client for `url` that trusts only the CAs in `ca_pem` and authenticates
/// with a bearer token. This is how a node joins with `--server` and
/// `--token`. Its requests name `user_agent`, from which the server derives
/// the field manager of its writes (as upstream's `kubelet`).
pub fn with_token(
    url: &str,
    ca_pem: &[u8],
    token: &str,
    user_agent: &str,
) -> Result<Client, ConnectError> {
    let cluster_url = url.parse().map_err(|_| ConnectError::InvalidUrl {
        url: url.to_string(),
    })?;
    let mut config = Config::new(cluster_url);
    config.root_cert = Some(ca_certificates(ca_pem)?);
    config.auth_info = AuthInfo {
        token: Some(token.to_string().into()),
        ..AuthInfo::default()
    };
    let user_agent =
        http::HeaderValue::from_str(user_agent).map_err(|_| ConnectError::InvalidUserAgent {
            user_agent: user_agent.to_string(),
        })?;
    config.headers.push((http::header::USER_AGENT, user_agent));
    Client::try_from(config).map_err(|e| ConnectError::Client(Box::new(e)))
}

/// The DER bodies of the `CERTIFICATE` blocks in a PEM bundle.
fn ca_certificates(ca_pem: &[u8]) -> Result<Vec<Vec<u8>>, ConnectError> {
    let blocks = pem::parse_many(ca_pem).map_err(ConnectError::InvalidCa)?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(ConnectError::NoCaCertificate);
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nBAUG\n-----END PRIVATE KEY-----\n";

    #[test]
    fn ca_bundle_keeps_only_certificates() {
        let bundle = format!("{CERT}{KEY}{CERT}");
        let certs = ca_certificates(bundle.as_bytes()).expect("parse");
        assert_eq!(certs, vec![vec![1, 2, 3], vec![1, 2, 3]]);
    }

    #[test]
    fn ca_bundle_without_certificates_is_refused() {
        assert!(matches!(
            ca_certificates(KEY.as_bytes()),
            Err(ConnectError::NoCaCertificate)
        ));
        assert!(matches!(
            ca_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"),
            Err(ConnectError::InvalidCa(_))
        ));
    }

    #[test]
    fn bad_url_is_refused() {
        assert!(matches!(
            with_token("not a url", CERT.as_bytes(), "t", "kubelet"),
            Err(ConnectError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bad_user_agent_is_refused() {
        assert!(matches!(
            with_token("https://127.0.0.1:6443", CERT.as_bytes(), "t", "kube\nlet"),
            Err(ConnectError::InvalidUserAgent { .. })
        ));
    }
}
