//! TLS: certificates from `kubernetes.io/tls` Secrets, chosen by SNI.
//!
//! Each `spec.tls` entry of an owned Ingress maps its hosts to a Secret in
//! the Ingress's namespace. [`CertStore::build`] parses those Secrets once
//! per build (a Secret referenced by several Ingresses is parsed once), and
//! [`SniResolver`] picks the certificate during the handshake from whichever
//! store is current, so a new or renewed Secret is served without touching
//! the listener or open connections.
//!
//! Lookup order for a server name: the exact host, then a `*.suffix` entry
//! whose `*` stands for the first label, then the certificate of a TLS entry
//! that lists no hosts (the API says such an entry applies to the
//! controller's wildcard host), then a self-signed fallback generated at
//! start. As for routes, the oldest Ingress wins a host claimed twice.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::IngressError;
use crate::routes::{IngressRef, normalize_host, oldest_first};

/// The Secret type that holds a certificate and its key.
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

/// ALPN protocols offered to clients, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A `spec.tls` entry that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProblem {
    /// The Ingress with the entry.
    pub ingress: IngressRef,
    /// The Secret it names.
    pub secret: String,
    /// What is wrong.
    pub reason: String,
}

/// Certificates by host, for one generation of the owned Ingresses.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    problems: Vec<CertProblem>,
}

impl CertStore {
    /// Maps the TLS hosts of `ingresses` (the owned ones) to the parsed
    /// certificates of `secrets`.
    pub fn build(ingresses: &[Arc<Ingress>], secrets: &[Arc<Secret>]) -> Self {
        let by_name: HashMap<(&str, &str), &Secret> = secrets
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    &**s,
                ))
            })
            .collect();
        let mut parsed: HashMap<(String, String), Result<Arc<CertifiedKey>, String>> =
            HashMap::new();
        let mut store = Self::default();
        for ingress in oldest_first(ingresses) {
            let source = IngressRef {
                namespace: ingress.namespace().unwrap_or_default(),
                name: ingress.name_any(),
            };
            let entries = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
            for tls in entries.into_iter().flatten() {
                let Some(secret_name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let key = (source.namespace.clone(), secret_name.to_owned());
                let certified = parsed
                    .entry(key)
                    .or_insert_with(|| {
                        let secret = by_name
                            .get(&(source.namespace.as_str(), secret_name))
                            .ok_or_else(|| "secret not found".to_owned())?;
                        certified_key_from_secret(secret).map(Arc::new)
                    })
                    .clone();
                let certified = match certified {
                    Ok(certified) => certified,
                    Err(reason) => {
                        store.problems.push(CertProblem {
                            ingress: source.clone(),
                            secret: secret_name.to_owned(),
                            reason,
                        });
                        continue;
                    }
                };
                let hosts = tls.hosts.as_deref().unwrap_or_default();
                if hosts.is_empty() {
                    store.default.get_or_insert(certified);
                    continue;
                }
                for host in hosts {
                    let host = host.to_ascii_lowercase();
                    let map = match host.strip_prefix("*.") {
                        Some(suffix) => store.wildcard.entry(suffix.to_owned()),
                        None => store.exact.entry(host),
                    };
                    map.or_insert_with(|| Arc::clone(&certified));
                }
            }
        }
        store
    }

    /// The certificate for `server_name` (the client's SNI), if a TLS entry
    /// covers it.
    pub fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = server_name.and_then(|name| {
            let name = normalize_host(name);
            self.exact.get(name.as_ref()).or_else(|| {
                name.split_once('.')
                    .filter(|(label, _)| !label.is_empty())
                    .and_then(|(_, suffix)| self.wildcard.get(suffix))
            })
        });
        by_name.or(self.default.as_ref()).cloned()
    }

    /// TLS entries whose Secret is missing or unusable.
    pub fn problems(&self) -> &[CertProblem] {
        &self.problems
    }
}

/// Reads `tls.crt` (PEM chain) and `tls.key` (PEM key) of a
/// `kubernetes.io/tls` Secret and checks that they belong together.
fn certified_key_from_secret(secret: &Secret) -> Result<CertifiedKey, String> {
    if secret.type_.as_deref() != Some(SECRET_TYPE_TLS) {
        return Err(format!("secret type is not {SECRET_TYPE_TLS}"));
    }
    let field = |name: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| format!("secret has no {name}"))
    };
    certified_key_from_pem(field("tls.crt")?, field("tls.key")?)
}

/// A certificate chain and key from PEM, checked to belong together.
pub fn certified_key_from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt: no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
    let signer = any_supported_type(&key).map_err(|e| format!("tls.key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| format!("tls.crt and tls.key: {e}"))?;
    Ok(certified)
}

/// A self-signed certificate for `names`, served when no Secret covers the
/// requested name.
pub fn self_signed(names: &[&str]) -> Result<CertifiedKey, IngressError> {
    let generated = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .map_err(IngressError::DefaultCertificate)?;
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let signer = any_supported_type(&key).map_err(IngressError::Tls)?;
    Ok(CertifiedKey::new(
        vec![generated.cert.der().clone()],
        signer,
    ))
}

/// Picks the certificate of the current [`CertStore`] by SNI.
#[derive(Debug)]
pub struct SniResolver {
    certs: watch::Receiver<Arc<CertStore>>,
    fallback: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver reading `certs`, answering `fallback` for names no TLS
    /// entry covers.
    pub fn new(certs: watch::Receiver<Arc<CertStore>>, fallback: CertifiedKey) -> Self {
        Self {
            certs,
            fallback: Arc::new(fallback),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = self.certs.borrow().resolve(client_hello.server_name());
        Some(found.unwrap_or_else(|| Arc::clone(&self.fallback)))
    }
}

/// The rustls server configuration of the HTTPS listener: TLS 1.2 and 1.3
/// with ring, no client authentication, ALPN `h2` and `http/1.1`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, IngressError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(IngressError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde_json::{Value, json};

    use super::*;

    /// A PEM certificate and key for `names`.
    fn pem(names: &[&str]) -> (String, String) {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    fn secret(namespace: &str, name: &str, type_: &str, crt: &str, key: &str) -> Arc<Secret> {
        let mut secret: Secret = serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name},
            "type": type_,
        }))
        .unwrap();
        secret.data = Some(
            [
                ("tls.crt".to_owned(), ByteString(crt.as_bytes().to_vec())),
                ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
            ]
            .into_iter()
            .collect(),
        );
        Arc::new(secret)
    }

    fn ingress(namespace: &str, name: &str, age: u32, tls: Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "namespace": namespace,
                    "name": name,
                    "creationTimestamp": format!("2025-01-01T00:00:{age:02}Z"),
                },
                "spec": {"tls": tls},
            }))
            .unwrap(),
        )
    }

    /// The DER of the leaf certificate the store picks for `name`.
    fn leaf(store: &CertStore, name: Option<&str>) -> Option<Vec<u8>> {
        store.resolve(name).map(|c| c.cert[0].to_vec())
    }

    fn der(crt: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(crt.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn hosts_map_to_their_secret_by_exact_then_wildcard_then_default() {
        let (a_crt, a_key) = pem(&["a.example.com"]);
        let (w_crt, w_key) = pem(&["*.example.com"]);
        let (d_crt, d_key) = pem(&["default"]);
        let secrets = vec![
            secret("default", "a", SECRET_TYPE_TLS, &a_crt, &a_key),
            secret("default", "w", SECRET_TYPE_TLS, &w_crt, &w_key),
            secret("default", "d", SECRET_TYPE_TLS, &d_crt, &d_key),
        ];
        let ingresses = vec![ingress(
            "default",
            "i",
            0,
            json!([
                {"hosts": ["A.example.com"], "secretName": "a"},
                {"hosts": ["*.example.com"], "secretName": "w"},
                {"secretName": "d"},
            ]),
        )];
        let store = CertStore::build(&ingresses, &secrets);
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        assert_eq!(leaf(&store, Some("a.example.com")), Some(der(&a_crt)));
        assert_eq!(leaf(&store, Some("A.EXAMPLE.COM")), Some(der(&a_crt)));
        assert_eq!(leaf(&store, Some("b.example.com")), Some(der(&w_crt)));
        assert_eq!(leaf(&store, Some("x.b.example.com")), Some(der(&d_crt)));
        assert_eq!(leaf(&store, Some("other.org")), Some(der(&d_crt)));
        assert_eq!(leaf(&store, None), Some(der(&d_crt)));
    }

    #[test]
    fn unknown_names_without_a_default_entry_resolve_to_nothing() {
        let (crt, key) = pem(&["a.example.com"]);
        let store = CertStore::build(
            &[ingress(
                "default",
                "i",
                0,
                json!([{"hosts": ["a.example.com"], "secretName": "a"}]),
            )],
            &[secret("default", "a", SECRET_TYPE_TLS, &crt, &key)],
        );
        assert_eq!(leaf(&store, Some("b.example.com")), None);
        assert_eq!(leaf(&store, None), None);
    }

    #[test]
    fn oldest_ingress_keeps_a_host() {
        let (old_crt, old_key) = pem(&["a.example.com"]);
        let (new_crt, new_key) = pem(&["a.example.com"]);
        let secrets = vec![
            secret("ns", "old", SECRET_TYPE_TLS, &old_crt, &old_key),
            secret("ns", "new", SECRET_TYPE_TLS, &new_crt, &new_key),
        ];
        let old = ingress(
            "ns",
            "z-old",
            1,
            json!([{"hosts": ["a.example.com"], "secretName": "old"}]),
        );
        let new = ingress(
            "ns",
            "a-new",
            2,
            json!([{"hosts": ["a.example.com"], "secretName": "new"}]),
        );
        for ingresses in [
            vec![old.clone(), new.clone()],
            vec![new.clone(), old.clone()],
        ] {
            let store = CertStore::build(&ingresses, &secrets);
            assert_eq!(leaf(&store, Some("a.example.com")), Some(der(&old_crt)));
        }
    }

    #[test]
    fn unusable_secrets_are_reported_and_skipped() {
        let (crt, key) = pem(&["a.example.com"]);
        let (_, other_key) = pem(&["b.example.com"]);
        let secrets = vec![
            secret("ns", "opaque", "Opaque", &crt, &key),
            secret("ns", "garbage", SECRET_TYPE_TLS, "not pem", &key),
            secret("ns", "mismatch", SECRET_TYPE_TLS, &crt, &other_key),
            secret("other", "elsewhere", SECRET_TYPE_TLS, &crt, &key),
        ];
        let ingresses = vec![ingress(
            "ns",
            "i",
            0,
            json!([
                {"hosts": ["a.example.com"], "secretName": "opaque"},
                {"hosts": ["b.example.com"], "secretName": "garbage"},
                {"hosts": ["c.example.com"], "secretName": "mismatch"},
                {"hosts": ["d.example.com"], "secretName": "elsewhere"},
            ]),
        )];
        let store = CertStore::build(&ingresses, &secrets);
        let problems: Vec<(&str, &str)> = store
            .problems()
            .iter()
            .map(|p| (p.secret.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(
            problems[0],
            ("opaque", "secret type is not kubernetes.io/tls")
        );
        assert!(problems[1].1.starts_with("tls.crt"), "{:?}", problems[1]);
        assert!(
            problems[2].1.starts_with("tls.crt and tls.key"),
            "{:?}",
            problems[2]
        );
        assert_eq!(problems[3], ("elsewhere", "secret not found"));
        for host in ["a", "b", "c", "d"] {
            assert_eq!(leaf(&store, Some(&format!("{host}.example.com"))), None);
        }
    }

    #[test]
    fn self_signed_fallback_is_usable() {
        let certified = self_signed(&["skiff-ingress"]).unwrap();
        certified.keys_match().unwrap();
        let (_, rx) = watch::channel(Arc::new(CertStore::default()));
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(SniResolver::new(rx, certified));
        let config = server_config(resolver).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
