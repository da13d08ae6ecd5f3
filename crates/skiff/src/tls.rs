//! The API server's TLS configuration.
//!
//! Client certificates signed by the cluster CA are verified during the
//! handshake, but clients without one are let in too: service-account tokens,
//! bootstrap tokens and anonymous `/readyz` probes arrive without certificates,
//! and it is the API server, not TLS, that decides what each identity may do.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::pki::Pki;

/// ALPN protocols offered, in preference order: kubectl speaks HTTP/2 for
/// requests but needs HTTP/1.1 for upgrades (exec, port-forward).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Build the server configuration from the cluster PKI (ring crypto provider).
pub fn server_config(pki: &Pki) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        roots
            .add(ca.context("parsing the CA certificate")?)
            .context("adding the CA certificate to the client trust store")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;

    let chain = CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes())
        .context("parsing the serving key")?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("installing the serving certificate")?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, ServingNames};

    #[test]
    fn builds_from_generated_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = pki::ensure(tmp.path(), &ServingNames::for_host(None, &[], &[])).unwrap();
        let config = server_config(&pki).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn rejects_garbage_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut pki = pki::ensure(tmp.path(), &ServingNames::default()).unwrap();
        pki.server_key = "not a key".into();
        assert!(server_config(&pki).is_err());
    }
}
