//! HTTPS serving shared by the API server and the node API.
//!
//! Each accepted connection is wrapped in TLS, then served as HTTP/1.1 or
//! HTTP/2 (with upgrades, for watches over WebSocket and exec streams). What a
//! server needs to know about the peer (its client certificate) is taken from
//! the TLS session once per connection and put in every request's extensions.
//! On shutdown the listener closes and open connections get a grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::ServerConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long open connections may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` over TLS on `listener` until `shutdown`. `peer` derives,
/// once per connection, a value put in each request's extensions (the API
/// server's peer identity from the client certificate).
pub async fn serve<T, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
    peer: F,
) where
    F: Fn(&ServerConnection) -> T + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let connections = TaskTracker::new();
    loop {
        let (stream, address) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            acceptor.clone(),
            stream,
            address,
            router.clone(),
            shutdown.clone(),
            peer.clone(),
        ));
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
}

async fn serve_connection<T, F>(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    address: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    peer: F,
) where
    F: Fn(&ServerConnection) -> T,
    T: Clone + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::debug!(peer = %address, error = %e, "TLS handshake failed");
            return;
        }
    };
    let tag = peer(tls.get_ref().1);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(tag.clone());
            tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
        });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %address, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Extension;
    use axum::routing::get;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone)]
    struct Sni(String);

    fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[tokio::test]
    async fn serves_requests_with_the_connection_tag_until_shutdown() {
        let (server_tls, client_tls) = tls_pair();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/who",
            get(|Extension(Sni(name)): Extension<Sni>| async move { name }),
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            server_tls,
            router,
            shutdown.clone(),
            |tls: &ServerConnection| Sni(tls.server_name().unwrap_or_default().to_string()),
        ));

        let tcp = TcpStream::connect(address).await.unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(client_tls)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        stream
            .write_all(b"GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("\r\n\r\nlocalhost"), "{response}");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returns once shut down")
            .unwrap();
        assert!(
            TcpStream::connect(address).await.is_err(),
            "listener closed"
        );
    }
}
