//! A minimal Kubernetes HTTPS client: the admin kubeconfig's client
//! certificate, one HTTP/2 connection per simulated client.
//!
//! client-go keeps one HTTP/2 connection per client and multiplexes every
//! request and watch on it, so each benchmark client here owns one connection
//! too. Its flow-control windows follow Go's HTTP/2 transport (4 MiB per
//! stream), so that large lists are not throttled by hyper's smaller defaults.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::client::conn::http2::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::http::uri::Authority;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The media type of JSON bodies.
pub const JSON: &str = "application/json";
/// What `kubectl get` asks for: server-side printed columns.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Go's HTTP/2 transport advertises a 4 MiB stream window.
const STREAM_WINDOW: u32 = 4 << 20;
/// ... and a 1 GiB connection window.
const CONNECTION_WINDOW: u32 = 1 << 30;

/// The parts of a kubeconfig the client needs.
#[derive(Deserialize)]
struct KubeConfig {
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
}

#[derive(Deserialize)]
struct Named<T> {
    #[serde(flatten)]
    entry: T,
}

#[derive(Deserialize)]
struct ClusterEntry {
    cluster: Cluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority_data: String,
}

#[derive(Deserialize)]
struct UserEntry {
    user: User,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

/// Opens authenticated HTTP/2 connections to one API server.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    address: SocketAddr,
    server_name: ServerName<'static>,
    authority: Authority,
}

impl Connector {
    /// A connector for the first cluster and user of the kubeconfig at `path`
    /// (which must embed its certificates, as skiff's admin kubeconfig does).
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Connector> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config: KubeConfig = serde_saphyr::from_str(&text)
            .with_context(|| format!("parsing kubeconfig {}", path.display()))?;
        let cluster = &config
            .clusters
            .first()
            .context("kubeconfig has no cluster")?
            .entry
            .cluster;
        let user = &config
            .users
            .first()
            .context("kubeconfig has no user")?
            .entry
            .user;
        let decode = |field: &str, value: &str| {
            STANDARD
                .decode(value.trim())
                .with_context(|| format!("kubeconfig {field} is not base64"))
        };
        let ca = decode(
            "certificate-authority-data",
            &cluster.certificate_authority_data,
        )?;
        let cert = decode("client-certificate-data", &user.client_certificate_data)?;
        let key = decode("client-key-data", &user.client_key_data)?;

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.context("kubeconfig CA is not PEM")?)?;
        }
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .context("kubeconfig client certificate is not PEM")?;
        let key =
            PrivateKeyDer::from_pem_slice(&key).context("kubeconfig client key is not PEM")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("kubeconfig client certificate and key do not match")?;
        tls.alpn_protocols = vec![b"h2".to_vec()];

        let uri: Uri = cluster
            .server
            .parse()
            .with_context(|| format!("kubeconfig server {:?} is not a URL", cluster.server))?;
        if uri.scheme_str() != Some("https") {
            bail!("kubeconfig server {} is not https", cluster.server);
        }
        let authority = uri
            .authority()
            .cloned()
            .context("kubeconfig server has no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(443);
        let address = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let server_name = ServerName::try_from(host.to_string())
            .with_context(|| format!("{host} is not a valid TLS server name"))?;
        Ok(Connector {
            tls: TlsConnector::from(Arc::new(tls)),
            address,
            server_name,
            authority,
        })
    }

    /// The server's URL, e.g. `https://127.0.0.1:6443`.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority)
    }

    /// Open one HTTP/2 connection. The connection lives as long as any clone
    /// of the returned [`Conn`].
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(self.address)
            .await
            .with_context(|| format!("connecting to {}", self.address))?;
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        // The connection ends when every sender is dropped or the server goes
        // away; a request on a dead connection reports the error itself.
        tokio::spawn(connection);
        Ok(Conn {
            sender,
            authority: self.authority.clone(),
        })
    }
}

/// One HTTP/2 connection; clones share it, each request is a stream on it.
#[derive(Clone)]
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    authority: Authority,
}

impl Conn {
    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let uri = Uri::builder()
            .scheme("https")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .with_context(|| format!("bad request path {path}"))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(ACCEPT, accept);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, JSON);
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let mut sender = self.sender.clone();
        sender.ready().await.context("connection closed")?;
        sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Send a request and read the whole response body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let response = self.send(method.clone(), path, accept, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the response to {method} {path}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// GET `path`, failing on anything but 200.
    pub async fn get(&self, path: &str, accept: &str) -> anyhow::Result<Bytes> {
        let (status, body) = self.request(Method::GET, path, accept, None).await?;
        expect(status, StatusCode::OK, "GET", path, &body)?;
        Ok(body)
    }

    /// POST a JSON object to the collection at `path`, failing on anything but
    /// 201 Created.
    pub async fn create(&self, path: &str, object: Bytes) -> anyhow::Result<Bytes> {
        let (status, body) = self.request(Method::POST, path, JSON, Some(object)).await?;
        expect(status, StatusCode::CREATED, "POST", path, &body)?;
        Ok(body)
    }

    /// Open a watch (`path` carries `watch=true`) and return its event lines.
    pub async fn watch(&self, path: &str) -> anyhow::Result<Lines<hyper::body::Incoming>> {
        let response = self.send(Method::GET, path, JSON, None).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.into_body().collect().await?.to_bytes();
            return Err(status_error(status, "GET", path, &body));
        }
        Ok(Lines::new(response.into_body()))
    }
}

fn expect(
    status: StatusCode,
    wanted: StatusCode,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    if status == wanted {
        return Ok(());
    }
    Err(status_error(status, method, path, body))
}

/// An error for an unexpected status, with the start of the body (a `Status`).
fn status_error(status: StatusCode, method: &str, path: &str, body: &[u8]) -> anyhow::Error {
    let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
    anyhow!("{method} {path}: {status}: {text}")
}

/// Newline-delimited records of a streamed body (watch events).
pub struct Lines<B> {
    body: B,
    buffer: BytesMut,
    done: bool,
}

impl<B> Lines<B>
where
    B: Body + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    /// Split `body` into lines.
    pub fn new(body: B) -> Lines<B> {
        Lines {
            body,
            buffer: BytesMut::new(),
            done: false,
        }
    }

    /// The next non-empty line without its newline; `None` at the end of the
    /// stream (a last line without a newline is still returned).
    pub async fn next_line(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line = self.buffer.split_to(end + 1);
                line.truncate(end);
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line.freeze()));
            }
            if self.done {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.buffer.split().freeze()));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(frame) => {
                    if let Ok(mut data) = frame.context("reading the stream")?.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    fn body(chunks: &[&'static str]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn lines_span_frames() {
        let mut lines = Lines::new(body(&["{\"a\":", "1}\n{\"b\"", ":2}\n\n", "tail"]));
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(String::from_utf8(line.to_vec()).unwrap());
        }
        assert_eq!(seen, ["{\"a\":1}", "{\"b\":2}", "tail"]);
    }

    #[test]
    fn reads_an_embedded_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("kubeconfig");
        let pem = STANDARD.encode(certified.cert.pem());
        let key_pem = STANDARD.encode(certified.signing_key.serialize_pem());
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {pem}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {pem}\n    client-key-data: {key_pem}\ncontexts: []\ncurrent-context: skiff\n"
            ),
        )
        .unwrap();
        let connector = Connector::from_kubeconfig(&path).unwrap();
        assert_eq!(connector.address, "127.0.0.1:6443".parse().unwrap());
        assert_eq!(connector.authority.as_str(), "127.0.0.1:6443");

        std::fs::write(&path, "clusters: []\nusers: []\n").unwrap();
        assert!(Connector::from_kubeconfig(&path).is_err());
    }
}
