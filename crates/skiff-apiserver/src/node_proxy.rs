//! The pod subresources that a node serves: `log`, `exec`, `attach` and
//! `portforward`, proxied to the node agent's HTTPS API (upstream's kubelet
//! port 10250).
//!
//! As upstream's API server does, we load the pod, pick the container, find
//! the pod's node and its kubelet endpoint, and forward:
//!
//! - `log` is a plain GET to `/containerLogs/{ns}/{pod}/{container}` whose
//!   body streams back chunk by chunk, so `kubectl logs -f` follows.
//! - `exec`, `attach` and `portforward` are HTTP/1.1 upgrades (WebSocket, or
//!   SPDY for old clients). The upgrade request goes to the kubelet with its
//!   protocol headers; on `101 Switching Protocols` both connections are
//!   upgraded and spliced byte for byte until either side closes, so the
//!   stream protocol is the kubelet's business alone.
//!
//! The API server authenticates to the kubelet with a client certificate
//! ([`KubeletClientTls`]) and checks the kubelet's serving certificate
//! against the given CA. Install a [`NodeProxy`] on the router with
//! [`NodeProxy::attach`]; without one these subresources answer 503.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use skiff_api::registry;
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult};
use crate::request::{Target, parse_path};
use crate::rest::{ObjectRef, Rest};

/// Upstream's default kubelet port, used when a Node reports none.
const DEFAULT_KUBELET_PORT: i64 = 10250;

/// How long dialling a kubelet (TCP and TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a kubelet's error body put into a Status message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// The pod annotation naming the container `kubectl logs/exec` default to.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Request headers that carry the upgrade negotiation to the kubelet.
const UPGRADE_REQUEST_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "origin",
];

/// Response headers of a `101` that the client must see.
const UPGRADE_RESPONSE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// The credentials the API server uses towards kubelets, PEM encoded.
#[derive(Debug, Clone)]
pub struct KubeletClientTls {
    /// The CA that signed the kubelets' serving certificates.
    pub ca_pem: String,
    /// The API server's client certificate (chain).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// Why a [`NodeProxy`] could not be built from its credentials.
#[derive(Debug, thiserror::Error)]
pub enum NodeProxyError {
    /// A PEM input held no usable certificate or key.
    #[error("invalid kubelet client {what}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the credentials.
    #[error("kubelet client TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// Dials kubelets with the API server's client certificate.
#[derive(Clone)]
pub struct NodeProxy {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for NodeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProxy").finish_non_exhaustive()
    }
}

impl NodeProxy {
    /// A proxy that authenticates with `tls`.
    pub fn new(tls: &KubeletClientTls) -> Result<Self, NodeProxyError> {
        let pem = |what| move |source| NodeProxyError::Pem { what, source };
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
            roots.add(ca.map_err(pem("CA"))?)?;
        }
        let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(pem("key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        // Upgrades need HTTP/1.1, and one protocol keeps the client simple.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Installs the proxy on the API router (as a request extension the
    /// resource handler looks for).
    pub fn attach(self, router: Router) -> Router {
        router.layer(axum::Extension(Arc::new(self)))
    }

    /// Opens an HTTP/1.1 connection (with upgrades) to a kubelet.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<hyper::client::conn::http1::SendRequest<Body>, String> {
        let dial = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| format!("dial tcp {}: {e}", endpoint.authority()))?;
            let _ = tcp.set_nodelay(true);
            let name = match endpoint.host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| format!("invalid kubelet host {:?}: {e}", endpoint.host))?,
            };
            self.tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls handshake with {}: {e}", endpoint.authority()))
        };
        let tls = tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| format!("dial tcp {}: i/o timeout", endpoint.authority()))??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http handshake with {}: {e}", endpoint.authority()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "kubelet connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Where a node's kubelet listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 address.
    fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Whether `path` is a pod subresource served by the node, which
/// [`serve`] handles instead of the generic resource code.
pub(crate) fn is_node_subresource(path: &str) -> bool {
    matches!(
        parse_path(path),
        Ok(Some(Target { rt, name: Some(_), subresource: Some(sub), .. }))
            if rt.group.is_empty()
                && rt.kind == "Pod"
                && matches!(sub.as_str(), "log" | "exec" | "attach" | "portforward")
    )
}

/// Serves a pod `log`, `exec`, `attach` or `portforward` request.
pub(crate) async fn serve(rest: Arc<Rest>, request: axum::extract::Request) -> Response {
    proxy(&rest, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn proxy(rest: &Rest, mut request: axum::extract::Request) -> ApiResult<Response> {
    let path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or_default().to_owned();
    let Some(Target {
        rt,
        namespace,
        name: Some(name),
        subresource: Some(sub),
    }) = parse_path(&path)?
    else {
        return Err(ApiError::no_route(&path));
    };
    let namespace = namespace.unwrap_or_default();
    let pod = rest
        .get(ObjectRef {
            rt,
            namespace: Some(&namespace),
            name: &name,
        })
        .await?;
    let pod = &pod.object;
    let container = |query: &str| -> ApiResult<String> {
        let requested = query_param(query, "container")?;
        select_container(pod, &name, requested.as_deref())
    };
    let (kubelet_path, upgrade) = match sub.as_str() {
        "log" => {
            if request.method() != Method::GET {
                return Err(method_not_allowed(request.method()));
            }
            let container = container(&raw_query)?;
            (
                format!("/containerLogs/{namespace}/{name}/{container}"),
                false,
            )
        }
        "exec" | "attach" => {
            check_connect_method(request.method())?;
            let container = container(&raw_query)?;
            (format!("/{sub}/{namespace}/{name}/{container}"), true)
        }
        _ => {
            check_connect_method(request.method())?;
            (format!("/portForward/{namespace}/{name}"), true)
        }
    };
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let endpoint = kubelet_endpoint(rest, node_name).await?;
    let proxy = request
        .extensions()
        .get::<Arc<NodeProxy>>()
        .cloned()
        .ok_or_else(|| {
            unavailable("the API server has no credentials for the node agents".into())
        })?;
    let target_uri = if raw_query.is_empty() {
        kubelet_path
    } else {
        format!("{kubelet_path}?{raw_query}")
    };
    let location = format!("https://{}{target_uri}", endpoint.authority());

    let mut sender = proxy.connect(&endpoint).await.map_err(|e| {
        if upgrade {
            ApiError::internal(format!("error dialing backend: {e}"))
        } else {
            ApiError::internal(format!("Get \"{location}\": {e}"))
        }
    })?;
    let mut forward = hyper::Request::builder()
        .method(request.method().clone())
        .uri(target_uri.as_str())
        .header(header::HOST, endpoint.authority());
    let client_upgrade = if upgrade {
        for name in UPGRADE_REQUEST_HEADERS {
            for value in request.headers().get_all(*name) {
                forward = forward.header(*name, value.clone());
            }
        }
        Some(hyper::upgrade::on(&mut request))
    } else {
        None
    };
    let forward = forward
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let mut response = sender
        .send_request(forward)
        .await
        .map_err(|e| ApiError::internal(format!("error proxying to {location}: {e}")))?;

    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::internal(
                "the kubelet switched protocols on a plain request",
            ));
        };
        let kubelet_upgrade = hyper::upgrade::on(&mut response);
        let mut switched = Response::new(Body::empty());
        *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_headers(
            response.headers(),
            switched.headers_mut(),
            UPGRADE_RESPONSE_HEADERS,
        );
        tokio::spawn(splice(client_upgrade, kubelet_upgrade));
        return Ok(switched);
    }
    if !status.is_success() {
        return Err(kubelet_error(status, response.into_body()).await);
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/plain"));
    let mut relayed = Response::new(Body::new(response.into_body()));
    relayed
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    Ok(relayed)
}

/// Copies bytes both ways between the two upgraded connections until one
/// side closes.
async fn splice(client: hyper::upgrade::OnUpgrade, kubelet: hyper::upgrade::OnUpgrade) {
    let (client, kubelet) = match tokio::try_join!(client, kubelet) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut kubelet = TokioIo::new(kubelet);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
        tracing::debug!(error = %e, "stream to the kubelet ended with an error");
    }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, names: &[&'static str]) {
    for name in names.iter().copied() {
        let name = HeaderName::from_static(name);
        for value in from.get_all(&name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Upstream accepts GET (WebSocket) and POST (SPDY) for the connect
/// subresources.
fn check_connect_method(method: &Method) -> ApiResult<()> {
    if *method == Method::GET || *method == Method::POST {
        Ok(())
    } else {
        Err(method_not_allowed(method))
    }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method})"
    ))
}

fn unavailable(message: String) -> ApiError {
    ApiError {
        code: StatusCode::SERVICE_UNAVAILABLE,
        reason: "ServiceUnavailable",
        message,
        details: None,
    }
}

/// The last value of `key` in a raw query string.
fn query_param(query: &str, key: &str) -> ApiResult<Option<String>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    Ok(pairs
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

/// Names of the pod's containers of one kind (`containers`, ...).
fn names<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a str> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
}

/// The container a request is about, chosen as upstream does: the one asked
/// for if the pod has it; else the default-container annotation's; else the
/// only app container.
fn select_container(pod: &Value, pod_name: &str, requested: Option<&str>) -> ApiResult<String> {
    let all: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|field| names(pod, field))
        .collect();
    if let Some(requested) = requested.filter(|c| !c.is_empty()) {
        return if all.contains(&requested) {
            Ok(requested.to_owned())
        } else {
            Err(ApiError::bad_request(format!(
                "container {requested} is not valid for pod {pod_name}"
            )))
        };
    }
    if let Some(default) = pod["metadata"]["annotations"][DEFAULT_CONTAINER_ANNOTATION]
        .as_str()
        .filter(|c| all.contains(c))
    {
        return Ok(default.to_owned());
    }
    let app: Vec<&str> = names(pod, "containers").collect();
    match app.as_slice() {
        [only] => Ok((*only).to_owned()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// The kubelet endpoint of a node: its InternalIP (else its Hostname, else
/// any other address) and the port it reports.
async fn kubelet_endpoint(rest: &Rest, node_name: &str) -> ApiResult<Endpoint> {
    let nodes = registry::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not registered"))?;
    let node = rest
        .get(ObjectRef {
            rt: nodes,
            namespace: None,
            name: node_name,
        })
        .await?;
    endpoint_of(&node.object, node_name)
}

fn endpoint_of(node: &Value, node_name: &str) -> ApiResult<Endpoint> {
    let addresses = node["status"]["addresses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let host = [
        "InternalIP",
        "Hostname",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
    ]
    .iter()
    .find_map(|kind| {
        addresses
            .iter()
            .find(|a| a["type"] == *kind)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    })
    .ok_or_else(|| {
        ApiError::internal(format!(
            "no preferred addresses found for node {node_name}; known addresses: {}",
            Value::Array(addresses.to_vec())
        ))
    })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    let port = u16::try_from(port).map_err(|_| {
        ApiError::internal(format!(
            "node {node_name} reports an invalid kubelet port {port}"
        ))
    })?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// A kubelet's error answer as a Status: its code, and its text (plain, as
/// the kubelet writes errors) as the message.
async fn kubelet_error(status: StatusCode, body: hyper::body::Incoming) -> ApiError {
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    let text = match limited.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        format!("the node agent answered {status}")
    } else {
        text
    };
    let reason = match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::GATEWAY_TIMEOUT => "Timeout",
        _ => "InternalError",
    };
    ApiError {
        code: status,
        reason,
        message,
        details: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(containers: &[&str], init: &[&str], annotations: Value) -> Value {
        let list = |names: &[&str]| -> Value {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "x"}))
                .collect()
        };
        json!({
            "metadata": {"name": "web", "annotations": annotations},
            "spec": {"containers": list(containers), "initContainers": list(init)},
        })
    }

    #[test]
    fn container_selection_follows_upstream() {
        let one = pod(&["app"], &["setup"], json!({}));
        assert_eq!(select_container(&one, "web", None).expect("only"), "app");
        assert_eq!(
            select_container(&one, "web", Some("")).expect("only"),
            "app"
        );
        assert_eq!(
            select_container(&one, "web", Some("setup")).expect("init"),
            "setup"
        );
        let err = select_container(&one, "web", Some("y")).expect_err("unknown");
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "container y is not valid for pod web");

        let two = pod(&["a", "b"], &["i"], json!({}));
        let err = select_container(&two, "web", None).expect_err("ambiguous");
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [i a b]"
        );
        let annotated = pod(&["a", "b"], &[], json!({DEFAULT_CONTAINER_ANNOTATION: "b"}));
        assert_eq!(
            select_container(&annotated, "web", None).expect("default"),
            "b"
        );
        let stale = pod(
            &["a", "b"],
            &[],
            json!({DEFAULT_CONTAINER_ANNOTATION: "gone"}),
        );
        assert!(select_container(&stale, "web", None).is_err());
        let none = pod(&[], &[], json!({}));
        assert_eq!(
            select_container(&none, "web", None)
                .expect_err("none")
                .message,
            "a container name must be specified for pod web"
        );
    }

    #[test]
    fn endpoint_prefers_internal_ip_and_the_reported_port() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "node-1"},
                {"type": "InternalIP", "address": "10.0.0.5"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}},
        }});
        assert_eq!(
            endpoint_of(&node, "n").expect("endpoint"),
            Endpoint {
                host: "10.0.0.5".into(),
                port: 10251
            }
        );
        let hostname_only =
            json!({"status": {"addresses": [{"type": "Hostname", "address": "node-1"}]}});
        assert_eq!(
            endpoint_of(&hostname_only, "n").expect("endpoint"),
            Endpoint {
                host: "node-1".into(),
                port: 10250
            }
        );
        let err = endpoint_of(&json!({}), "n").expect_err("no address");
        assert_eq!(err.code, StatusCode::INTERNAL_SERVER_ERROR);
        let v6 = Endpoint {
            host: "fd00::1".into(),
            port: 10250,
        };
        assert_eq!(v6.authority(), "[fd00::1]:10250");
    }

    #[test]
    fn only_node_subresources_of_pods_are_intercepted() {
        assert!(is_node_subresource(
            "/api/v1/namespaces/default/pods/web/log"
        ));
        assert!(is_node_subresource(
            "/api/v1/namespaces/default/pods/web/exec"
        ));
        assert!(is_node_subresource(
            "/api/v1/namespaces/default/pods/web/portforward"
        ));
        assert!(!is_node_subresource("/api/v1/namespaces/default/pods/web"));
        assert!(!is_node_subresource(
            "/api/v1/namespaces/default/pods/web/status"
        ));
        assert!(!is_node_subresource("/api/v1/namespaces/default/pods"));
    }
}
