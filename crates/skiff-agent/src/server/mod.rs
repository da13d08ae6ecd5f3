//! The node's HTTPS API, the equivalent of the kubelet's port 10250.
//!
//! The API server reaches a node here for `kubectl logs` (`/containerLogs`),
//! `exec`, `attach` and `port-forward` (the streaming router, merged in as
//! given). Every connection must present a client certificate signed by the
//! configured CA: upstream's kubelet lets anyone who can reach this port run
//! commands in its containers unless it authenticates them, so we make that
//! the only mode.
//!
//! Connections are served by `skiff_https` with upgrades enabled, so that
//! HTTP/1.1 WebSocket and SPDY upgrades reach the streaming handlers.

mod logs;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::locate::PodLocator;

/// Where and as whom the node API listens.
#[derive(Debug, Clone)]
pub struct KubeletServerConfig {
    /// Address to listen on (upstream's port is 10250).
    pub listen: SocketAddr,
    /// The node's serving certificate chain, PEM.
    pub serving_cert_pem: String,
    /// Its private key, PEM.
    pub serving_key_pem: String,
    /// The CA whose client certificates are accepted (the API server's
    /// kubelet client certificate is signed by it), PEM.
    pub client_ca_pem: String,
}

/// Why the node API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A PEM input held no usable certificate or key.
    #[error("invalid {what}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificates (a key that does not match, a CA
    /// that is not one).
    #[error("TLS configuration")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening failed.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds and serves the node API until `shutdown`.
pub async fn serve(
    config: KubeletServerConfig,
    locator: Arc<dyn PodLocator>,
    streaming: Router,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    KubeletServer::bind(config)
        .await?
        .run(locator, streaming, shutdown)
        .await;
    Ok(())
}

/// The routes of the node API: `/healthz`, `/containerLogs/...`, and the
/// streaming routes as given.
pub fn app(locator: Arc<dyn PodLocator>, streaming: Router) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .with_state(locator)
        .merge(streaming)
}

/// A bound, not yet serving, node API: split from [`serve`] so that a caller
/// listening on port 0 learns the port first.
pub struct KubeletServer {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl KubeletServer {
    /// Builds the TLS configuration and binds the listener.
    pub async fn bind(config: KubeletServerConfig) -> Result<Self, ServerError> {
        let tls = Arc::new(tls_config(&config)?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self { listener, tls })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown`, then gives open ones a grace
    /// period to finish.
    pub async fn run(
        self,
        locator: Arc<dyn PodLocator>,
        streaming: Router,
        shutdown: CancellationToken,
    ) {
        let router = app(locator, streaming);
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(address = %addr, "node API listening");
        }
        skiff_https::serve(self.listener, self.tls, router, shutdown, |_| ()).await;
    }
}

/// Server TLS that requires a client certificate from `client_ca`.
fn tls_config(config: &KubeletServerConfig) -> Result<rustls::ServerConfig, ServerError> {
    let certs = CertificateDer::pem_slice_iter(config.serving_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServerError::Pem {
            what: "serving certificate",
            source,
        })?;
    let key =
        PrivateKeyDer::from_pem_slice(config.serving_key_pem.as_bytes()).map_err(|source| {
            ServerError::Pem {
                what: "serving key",
                source,
            }
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(config.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|source| ServerError::Pem {
            what: "client CA",
            source,
        })?;
        roots.add(ca).map_err(|e| ServerError::Tls(Box::new(e)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| ServerError::Tls(Box::new(e)))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(Box::new(e)))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(Box::new(e)))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use async_trait::async_trait;
    use http_body_util::BodyExt;
    use hyper::StatusCode;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls::pki_types::ServerName;

    use super::*;
    use crate::locate::{LocatedContainer, LocatedPod};

    /// A CA, a serving pair for `localhost`/127.0.0.1 and a client pair.
    struct Pki {
        ca: String,
        serving: (String, String),
        client: (String, String),
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let ca_pem = ca.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |sans: Vec<String>, usage| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            serving: leaf(
                vec!["localhost".into(), "127.0.0.1".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            client: leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth),
            ca: ca_pem,
        }
    }

    struct FixedLocator {
        pods: HashMap<(String, String), LocatedPod>,
        running: bool,
    }

    #[async_trait]
    impl PodLocator for FixedLocator {
        async fn pod(&self, namespace: &str, name: &str) -> Option<LocatedPod> {
            self.pods
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        }

        async fn container_running(&self, _container_id: &str) -> bool {
            self.running
        }
    }

    fn locator(dir: &Path) -> Arc<dyn PodLocator> {
        let current = dir.join("1.log");
        let previous = dir.join("0.log");
        std::fs::write(
            &current,
            "2024-01-01T00:00:01Z stdout F hello\n2024-01-01T00:00:02Z stderr F world\n",
        )
        .expect("write");
        std::fs::write(&previous, "2024-01-01T00:00:00Z stdout F before\n").expect("write");
        let pod = LocatedPod {
            uid: "uid-1".into(),
            sandbox_id: "sb".into(),
            netns_path: None,
            pod_ip: None,
            containers: vec![
                LocatedContainer {
                    name: "app".into(),
                    id: Some("c1".into()),
                    running: true,
                    log_path: Some(current),
                    previous_log_path: Some(previous),
                },
                LocatedContainer {
                    name: "waiting".into(),
                    id: None,
                    running: false,
                    log_path: None,
                    previous_log_path: None,
                },
            ],
        };
        Arc::new(FixedLocator {
            pods: HashMap::from([(("default".into(), "web".into()), pod)]),
            running: false,
        })
    }

    async fn start(pki: &Pki, dir: &Path) -> (SocketAddr, tokio_util::sync::DropGuard) {
        let server = KubeletServer::bind(KubeletServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            serving_cert_pem: pki.serving.0.clone(),
            serving_key_pem: pki.serving.1.clone(),
            client_ca_pem: pki.ca.clone(),
        })
        .await
        .expect("bind");
        let addr = server.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let streaming = Router::new().route("/exec/{a}/{b}/{c}", get(|| async { "streaming" }));
        tokio::spawn(server.run(locator(dir), streaming, shutdown.clone()));
        (addr, shutdown.drop_guard())
    }

    fn client_tls(pki: &Pki, with_cert: bool) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).expect("ca"))
            .expect("add");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = if with_cert {
            builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(pki.client.0.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(pki.client.1.as_bytes()).expect("key"),
                )
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// One HTTP/1.1 GET over a fresh TLS connection.
    async fn get_path(
        connector: &tokio_rustls::TlsConnector,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(StatusCode, String), Box<dyn std::error::Error + Send + Sync>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost")?;
        let tls = connector.connect(name, tcp).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(http_body_util::Empty::<axum::body::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn serves_logs_to_authenticated_clients_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki();
        let (addr, _guard) = start(&pki, dir.path()).await;
        let client = client_tls(&pki, true);

        let get = async |path: &str| get_path(&client, addr, path).await.expect("request");
        assert_eq!(get("/healthz").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get("/containerLogs/default/web/app").await,
            (StatusCode::OK, "hello\nworld\n".into())
        );
        assert_eq!(
            get("/containerLogs/default/web/app?tailLines=1&timestamps=true").await,
            (StatusCode::OK, "2024-01-01T00:00:02Z world\n".into())
        );
        assert_eq!(
            get("/containerLogs/default/web/app?previous=true").await,
            (StatusCode::OK, "before\n".into())
        );
        // The container is not running: follow ends at the end of the file.
        assert_eq!(
            get("/containerLogs/default/web/app?follow=true&limitBytes=3").await,
            (StatusCode::OK, "hel".into())
        );
        assert_eq!(
            get("/exec/default/web/app").await,
            (StatusCode::OK, "streaming".into())
        );

        let (status, body) = get("/containerLogs/default/nope/app").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "pod \"nope\" does not exist");
        let (status, body) = get("/containerLogs/default/web/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "container \"other\" not found in pod \"web\"");
        let (status, body) = get("/containerLogs/default/web/waiting").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            "container \"waiting\" in pod \"web\" is waiting to start"
        );
        let (status, body) = get("/containerLogs/default/web/waiting?previous=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            "previous terminated container \"waiting\" in pod \"web\" not found"
        );
        let (status, _) = get("/containerLogs/default/web/app?tailLines=x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get("/containerLogs/default/web/app?tailLines=-1").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        // Without a client certificate the handshake (or the first request
        // on it, with TLS 1.3) fails.
        let anonymous = client_tls(&pki, false);
        assert!(get_path(&anonymous, addr, "/healthz").await.is_err());
    }
}
