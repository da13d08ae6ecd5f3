//! How a machine joins a cluster with `skiff agent --server URL --token T`,
//! in the style of k3s.
//!
//! The server writes a join token, `K10<sha256 of the CA PEM>::<bootstrap
//! token>`, to `DATA_DIR/node-token`. A joining agent:
//!
//! 1. fetches the CA from the unauthenticated `/cacerts` (over TLS it cannot
//!    verify yet, `skiff_client::tls`) and accepts it only if its hash matches the token, so a
//!    man in the middle cannot substitute another CA;
//! 2. talks to the API with the bootstrap token as its bearer credential;
//! 3. asks `POST /v1-skiff/serving-kubelet` (authenticated) for a serving
//!    certificate for its kubelet API, signed by the cluster CA, which the API
//!    server checks when it proxies logs, exec and port-forward to the node.
//!
//! A token without the `K10` prefix (the bare bootstrap token) needs
//! `--ca-file` instead of the hash.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::pki::Pki;

/// The token's prefix, as k3s spells it.
const TOKEN_PREFIX: &str = "K10";

/// The path of the kubelet serving certificate request.
pub const SERVING_KUBELET_PATH: &str = "/v1-skiff/serving-kubelet";

/// The join token for a cluster with CA `ca_pem` and bootstrap token `token`.
pub fn node_token(ca_pem: &str, token: &str) -> String {
    format!("{TOKEN_PREFIX}{}::{token}", sha256_hex(ca_pem.as_bytes()))
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A join token split into the CA hash (if it has one) and the bearer token.
#[derive(Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The hex SHA-256 of the CA PEM the server must present.
    pub ca_hash: Option<String>,
    /// The bootstrap token.
    pub bearer: String,
}

impl JoinToken {
    /// Parses `K10<hash>::<token>` or a bare token.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix(TOKEN_PREFIX) {
            let Some((hash, bearer)) = rest.split_once("::") else {
                bail!("a K10 token has the form K10<ca-hash>::<token>");
            };
            let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid_hash || bearer.is_empty() {
                bail!("a K10 token has the form K10<64 hex digits>::<token>");
            }
            return Ok(Self {
                ca_hash: Some(hash.to_ascii_lowercase()),
                bearer: bearer.to_string(),
            });
        }
        if text.is_empty() {
            bail!("the token is empty");
        }
        Ok(Self {
            ca_hash: None,
            bearer: text.to_string(),
        })
    }
}

/// The request a joining agent sends for its serving certificate.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingRequest {
    /// The node's name.
    pub node_name: String,
    /// The node's addresses.
    pub addresses: Vec<IpAddr>,
}

/// The answer: a certificate and its key, PEM.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingCertificate {
    /// The certificate, signed by the cluster CA.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// The server's join routes: `/cacerts` and the serving certificate issuer.
pub fn routes(pki: Arc<Pki>) -> Router {
    Router::new()
        .route("/cacerts", get(ca_certs))
        .route(SERVING_KUBELET_PATH, post(serving_kubelet))
        .with_state(pki)
}

async fn ca_certs(State(pki): State<Arc<Pki>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pki.ca_cert.clone(),
    )
}

async fn serving_kubelet(
    State(pki): State<Arc<Pki>>,
    Json(request): Json<ServingRequest>,
) -> Result<Json<ServingCertificate>, (StatusCode, String)> {
    let valid_name = !request.node_name.is_empty()
        && request.node_name.len() <= 253
        && request
            .node_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_name {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid node name {:?}", request.node_name),
        ));
    }
    let (cert, key) = pki
        .issue_kubelet_serving(&request.node_name, &request.addresses)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(Json(ServingCertificate { cert, key }))
}

/// Fetches `/cacerts` from `server` (an `https://host:port` URL) without
/// verifying the server, and returns it if its hash is `expected_hash`.
pub fn fetch_ca(server: &str, expected_hash: &str) -> anyhow::Result<String> {
    let authority = server
        .strip_prefix("https://")
        .context("the server URL must start with https://")?
        .trim_end_matches('/');
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let config = skiff_client::tls::unverified_client_config().context("TLS setup")?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a valid server name"))?;
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).context("TLS client")?;
    let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(10))
        .with_context(|| format!("connecting to {address}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = rustls::Stream::new(&mut connection, &mut socket);
    write!(
        stream,
        "GET /cacerts HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .context("requesting /cacerts")?;
    let mut response = Vec::new();
    // The server may close without a TLS close_notify; what was read counts.
    if let Err(e) = stream.read_to_end(&mut response)
        && response.is_empty()
    {
        return Err(e).context("reading /cacerts");
    }
    let text = String::from_utf8(response).context("/cacerts is not text")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("/cacerts: not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "/cacerts answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    let actual = sha256_hex(body.as_bytes());
    if actual != expected_hash {
        bail!(
            "the server's CA (sha256 {actual}) does not match the token's hash {expected_hash}; \
             refusing to trust it"
        );
    }
    Ok(body)
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).context("short chunk")?;
        out.push_str(chunk);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_and_without_a_ca_hash() {
        let hash = "ab".repeat(32);
        let token = JoinToken::parse(&format!("K10{hash}::abcdef.0123456789abcdef\n")).unwrap();
        assert_eq!(token.ca_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(token.bearer, "abcdef.0123456789abcdef");
        let bare = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(bare.ca_hash, None);
        for bad in ["", "K10nothex::t", "K10abc", &format!("K10{hash}::")] {
            assert!(JoinToken::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn node_token_hashes_the_ca() {
        let token = node_token("PEM", "abcdef.0123456789abcdef");
        let parsed = JoinToken::parse(&token).unwrap();
        assert_eq!(parsed.ca_hash.unwrap(), sha256_hex(b"PEM"));
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk("5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n").unwrap(),
            "hello!"
        );
        assert!(dechunk("zz\r\n").is_err());
    }
}
