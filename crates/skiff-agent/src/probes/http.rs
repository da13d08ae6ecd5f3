//! `httpGet` probes and hooks: one HTTP/1.1 GET per connection, from the
//! node, the way upstream's kubelet sends it.
//!
//! - The URL is `scheme://host:port/path`; `host` defaults to the pod IP and
//!   a named port resolves from the container's ports. A `Host` entry in
//!   `httpHeaders` sets the Host header (not the address connected to).
//! - `User-Agent: kube-probe/1.37` (`kube-lifecycle/…` for hooks) and
//!   `Accept: */*` unless the handler sets them; an `Accept` set to the empty
//!   string removes the header.
//! - HTTPS does not verify the server's certificate, as upstream does not:
//!   the pod is addressed by IP, and the point is liveness, not identity.
//! - Connections are not reused (upstream disables keep-alive for probes),
//!   so a probe can never block on a connection another probe left behind.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::{Either, select};
use hyper::body::{Body, Incoming};
use hyper::header::{ACCEPT, CONNECTION, HOST, HeaderName, HeaderValue, LOCATION, USER_AGENT};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{KUBE_VERSION, MAX_OUTPUT, NO_POD_IP, ProbeOutcome, ProbeTarget, join_host_port};
use super::{net, resolve_port};

/// Redirects upstream follows before giving up (Go's `http.Client` default).
const MAX_REDIRECTS: usize = 10;

/// Go's message when an HTTPS client meets a plain HTTP server; lifecycle
/// hooks retry over HTTP on it, as upstream does.
pub(super) const HTTP_TO_HTTPS: &str = "http: server gave HTTP response to HTTPS client";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A GET request as built from an `HTTPGetAction`.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub scheme: Scheme,
    /// Address connected to: an IP or a name to resolve.
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
    /// The handler's headers, in order, `Host` excluded.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The Host header: the handler's `Host` entry, else `host:port`.
    host_header: Option<String>,
    user_agent: String,
    /// How the URL reads in messages (Go prints the path as given, so an
    /// empty path shows no `/`).
    display_path: String,
}

/// A response, with at most [`MAX_OUTPUT`] bytes of its body.
#[derive(Debug)]
pub(super) struct Response {
    pub status: StatusCode,
    location: Option<String>,
    pub body: String,
}

/// Why a request got no response.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FetchError {
    /// No response: connection refused, TLS failure, malformed response,
    /// too many redirects. Upstream counts these as probe failures.
    Transport(String),
    /// The response came but its body broke off. Upstream treats this as a
    /// probe error (unknown), not a failure.
    Body(String),
}

impl Request {
    /// Builds the request of `action` for `container`; `purpose` names the
    /// User-Agent (`probe` or `lifecycle`). Errors are upstream's texts for
    /// a handler that cannot be run (unknown port name, no pod IP).
    pub fn new(
        action: &HTTPGetAction,
        container: &Container,
        target: &ProbeTarget,
        purpose: &str,
    ) -> Result<Self, String> {
        if let Some(protocol) = action.protocol.as_deref()
            && !protocol.eq_ignore_ascii_case("HTTP/1.1")
        {
            return Err(format!("unsupported HTTP probe protocol {protocol:?}"));
        }
        let scheme = match action
            .scheme
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => return Err(format!("unsupported protocol scheme {other:?}")),
        };
        let host = match action.host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => host.to_owned(),
            None => target
                .pod_ip
                .ok_or_else(|| NO_POD_IP.to_owned())?
                .to_string(),
        };
        let port = resolve_port(&action.port, container)?;
        let display_path = action.path.clone().unwrap_or_default();
        let path = if display_path.starts_with('/') {
            display_path.clone()
        } else {
            format!("/{display_path}")
        };
        let mut headers = Vec::new();
        let mut host_header = None;
        for header in action.http_headers.iter().flatten() {
            if header.name.eq_ignore_ascii_case("host") {
                host_header.get_or_insert_with(|| header.value.clone());
                continue;
            }
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| format!("net/http: invalid header field name {:?}", header.name))?;
            let value = HeaderValue::from_str(&header.value).map_err(|_| {
                format!("net/http: invalid header field value for {:?}", header.name)
            })?;
            headers.push((name, value));
        }
        Ok(Request {
            scheme,
            host,
            port,
            path,
            headers,
            host_header: host_header.filter(|h| !h.is_empty()),
            user_agent: format!("kube-{purpose}/{KUBE_VERSION}"),
            display_path,
        })
    }

    /// The URL as upstream prints it in messages.
    pub fn url(&self) -> String {
        let path = if self.display_path.is_empty() || self.display_path.starts_with('/') {
            self.display_path.clone()
        } else {
            format!("/{}", self.display_path)
        };
        format!(
            "{}://{}{path}",
            self.scheme.as_str(),
            join_host_port(&self.host, self.port)
        )
    }

    /// Where a redirect to `location` goes, or `None` if it cannot be
    /// understood (the 3xx is then the final answer, as in Go).
    fn redirect(&self, location: &str) -> Option<Request> {
        let mut next = self.clone();
        let absolute = match location.split_once("://") {
            Some((scheme, rest)) => {
                next.scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    _ => return None,
                };
                Some(rest)
            }
            None => location.strip_prefix("//"),
        };
        match absolute {
            Some(rest) => {
                let (authority, path) = match rest.find(['/', '?']) {
                    Some(at) => (&rest[..at], &rest[at..]),
                    None => (rest, ""),
                };
                let uri: hyper::Uri = format!("http://{authority}/").parse().ok()?;
                let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
                next.host = host.to_owned();
                next.port = uri.port_u16().unwrap_or(match next.scheme {
                    Scheme::Http => 80,
                    Scheme::Https => 443,
                });
                next.set_path(path);
                // Go keeps an explicit Host header only on relative redirects.
                next.host_header = None;
            }
            None if location.starts_with('/') => next.set_path(location),
            None => {
                let base = self.path.split(['?', '#']).next().unwrap_or("/");
                let dir = &base[..=base.rfind('/').unwrap_or(0)];
                next.set_path(&format!("{dir}{location}"));
            }
        }
        Some(next)
    }

    /// The same request without any header called `name` (lower case).
    pub fn without_header(&self, name: &str) -> Request {
        let mut request = self.clone();
        request.headers.retain(|(n, _)| n.as_str() != name);
        request
    }

    fn set_path(&mut self, path: &str) {
        let path = path.split('#').next().unwrap_or_default();
        self.display_path = path.to_owned();
        self.path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
    }

    fn to_http(&self) -> Result<hyper::Request<String>, String> {
        let uri: hyper::Uri = self
            .path
            .parse()
            .map_err(|e| format!("parse {:?}: {e}", self.url()))?;
        let host = self
            .host_header
            .clone()
            .unwrap_or_else(|| join_host_port(&self.host, self.port));
        let mut request = hyper::Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(String::new())
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.insert(
            HOST,
            HeaderValue::from_str(&host).map_err(|_| format!("invalid Host {host:?}"))?,
        );
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if !headers.contains_key(USER_AGENT) {
            let agent = HeaderValue::from_str(&self.user_agent).map_err(|e| e.to_string())?;
            headers.insert(USER_AGENT, agent);
        }
        match headers.get(ACCEPT) {
            None => {
                headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            }
            Some(value) if value.is_empty() => {
                headers.remove(ACCEPT);
            }
            Some(_) => {}
        }
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        Ok(request)
    }
}

/// One httpGet probe attempt, with upstream's verdicts: `200..300` passes,
/// `300..400` passes with a warning (a redirect it did not follow), anything
/// else fails with `HTTP probe failed with statuscode: N`.
pub(super) async fn probe(
    action: &HTTPGetAction,
    container: &Container,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeOutcome {
    let request = match Request::new(action, container, target, "probe") {
        Ok(request) => request,
        Err(message) => return ProbeOutcome::Unknown(message),
    };
    match tokio::time::timeout(timeout, fetch(&request, true)).await {
        Err(_) => ProbeOutcome::Failure(timed_out(&request)),
        Ok(Err(FetchError::Transport(message))) => ProbeOutcome::Failure(message),
        Ok(Err(FetchError::Body(message))) => ProbeOutcome::Unknown(message),
        Ok(Ok(response)) => {
            let code = response.status.as_u16();
            if (200..300).contains(&code) {
                ProbeOutcome::Success
            } else if (300..400).contains(&code) {
                ProbeOutcome::Warning(format!(
                    "Probe terminated redirects, Response body: {}",
                    response.body
                ))
            } else {
                ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
    }
}

/// Go's message for a request that overran the client timeout.
pub(super) fn timed_out(request: &Request) -> String {
    format!(
        "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
        request.url()
    )
}

/// Sends `first`, following same-host redirects if `follow` is set (at most
/// [`MAX_REDIRECTS`]). A redirect to another host name is not followed: its
/// 3xx is the answer.
pub(super) async fn fetch(first: &Request, follow: bool) -> Result<Response, FetchError> {
    let mut current = first.clone();
    let mut followed = 0;
    loop {
        let response = send(&current).await?;
        let redirect = matches!(response.status.as_u16(), 301 | 302 | 303 | 307 | 308);
        if !follow || !redirect {
            return Ok(response);
        }
        let Some(next) = response
            .location
            .as_deref()
            .and_then(|l| current.redirect(l))
        else {
            return Ok(response);
        };
        if !next.host.eq_ignore_ascii_case(&first.host) {
            return Ok(response);
        }
        if followed == MAX_REDIRECTS {
            return Err(FetchError::Transport(format!(
                "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
                next.url()
            )));
        }
        followed += 1;
        current = next;
    }
}

/// One request on a fresh connection.
async fn send(request: &Request) -> Result<Response, FetchError> {
    let transport =
        |message: String| FetchError::Transport(format!("Get {:?}: {message}", request.url()));
    let stream = net::dial(&request.host, request.port)
        .await
        .map_err(transport)?;
    let http = request.to_http().map_err(transport)?;
    match request.scheme {
        Scheme::Http => exchange(TokioIo::new(stream), http, request).await,
        Scheme::Https => {
            let tls = connect_tls(&request.host, stream)
                .await
                .map_err(transport)?;
            exchange(TokioIo::new(tls), http, request).await
        }
    }
}

/// Runs the HTTP/1.1 exchange on `io`: the request, the head of the
/// response, and its body up to [`MAX_OUTPUT`] bytes.
async fn exchange<I>(
    io: I,
    http: hyper::Request<String>,
    request: &Request,
) -> Result<Response, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let transport =
        |e: hyper::Error| FetchError::Transport(format!("Get {:?}: {e}", request.url()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(transport)?;
    let work = pin!(async {
        let response = sender.send_request(http).await.map_err(transport)?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(response.into_body())
            .await
            .map_err(|e| FetchError::Body(format!("Get {:?}: reading body: {e}", request.url())))?;
        Ok(Response {
            status,
            location,
            body,
        })
    });
    // The connection must be driven while the exchange runs. If it ends
    // first, the exchange still holds whatever it delivered (or its error).
    match select(work, pin!(connection)).await {
        Either::Left((result, _)) => result,
        Either::Right((_, work)) => work.await,
    }
}

async fn read_capped(mut body: Incoming) -> Result<String, hyper::Error> {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_OUTPUT {
        let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            let room = MAX_OUTPUT - bytes.len();
            bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

async fn connect_tls(
    host: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("tls: {e}"))?;
    tokio_rustls::TlsConnector::from(tls_config()?)
        .connect(name, stream)
        .await
        .map_err(|err| {
            let plain_http = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                    )
                });
            if plain_http {
                HTTP_TO_HTTPS.to_owned()
            } else {
                format!("tls: {err}")
            }
        })
}

/// The TLS client configuration of probes: any certificate is accepted
/// (signatures are still checked, so the handshake itself is sound). Built
/// once; an error means the crypto provider lacks the default TLS versions.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config =
                skiff_client::tls::unverified_client_config().map_err(|e| format!("tls: {e}"))?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server answers: status, extra headers, body.
    pub type Reply = (u16, Vec<(&'static str, String)>, String);
    type Answer = Arc<dyn Fn(&str, u16) -> Reply + Send + Sync>;

    /// A hand-rolled HTTP/1.1 server on 127.0.0.1 that answers each request
    /// by its path and records the request heads it saw.
    pub struct Server {
        pub port: u16,
        heads: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        pub async fn start(answer: impl Fn(&str, u16) -> Reply + Send + Sync + 'static) -> Self {
            Self::start_with(answer, None).await
        }

        /// Serves HTTPS with a fresh self-signed certificate when `tls`.
        pub async fn start_with(
            answer: impl Fn(&str, u16) -> Reply + Send + Sync + 'static,
            tls: Option<tokio_rustls::TlsAcceptor>,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let heads = Arc::new(Mutex::new(Vec::new()));
            let answer: Answer = Arc::new(answer);
            let seen = heads.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let answer = answer.clone();
                    let seen = seen.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    respond(stream, answer, seen, port).await;
                                }
                            }
                            None => respond(stream, answer, seen, port).await,
                        }
                    });
                }
            });
            Server { port, heads }
        }

        pub fn heads(&self) -> Vec<String> {
            self.heads.lock().expect("heads").clone()
        }
    }

    async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        answer: Answer,
        seen: Arc<Mutex<Vec<String>>>,
        port: u16,
    ) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            // A TLS ClientHello: answer as a plain HTTP server would.
            if head.first() == Some(&0x16) {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                return;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        seen.lock().expect("heads").push(head);
        let (status, headers, body) = answer(&path, port);
        let mut out = format!(
            "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        let _ = stream.write_all(out.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    pub fn target() -> ProbeTarget {
        ProbeTarget {
            pod_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            container_id: "c1".into(),
        }
    }

    pub fn action(port: u16, path: &str) -> HTTPGetAction {
        HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            path: Some(path.into()),
            ..HTTPGetAction::default()
        }
    }

    async fn run(action: &HTTPGetAction) -> ProbeOutcome {
        probe(
            action,
            &Container::default(),
            &target(),
            Duration::from_secs(5),
        )
        .await
    }

    fn ok(body: &str) -> Reply {
        (200, Vec::new(), body.into())
    }

    fn redirect(to: String) -> Reply {
        (302, vec![("Location", to)], "moved".into())
    }

    #[tokio::test]
    async fn status_codes_decide_like_upstream() {
        let server = Server::start(|path, _| match path {
            "/ok" => ok("fine"),
            "/created" => (201, Vec::new(), String::new()),
            "/missing" => (404, Vec::new(), String::new()),
            _ => (500, Vec::new(), "boom".into()),
        })
        .await;
        assert_eq!(
            run(&action(server.port, "/ok")).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            run(&action(server.port, "/created")).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            run(&action(server.port, "/missing")).await,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into())
        );
        assert_eq!(
            run(&action(server.port, "/fail")).await,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
    }

    #[tokio::test]
    async fn the_request_carries_upstreams_headers_and_the_handlers() {
        let server = Server::start(|_, _| ok("")).await;
        let container = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(server.port),
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        let mut action = action(0, "healthz?full=1");
        action.port = IntOrString::String("http".into());
        action.http_headers = Some(vec![
            HTTPHeader {
                name: "X-Custom".into(),
                value: "a".into(),
            },
            HTTPHeader {
                name: "X-Custom".into(),
                value: "b".into(),
            },
        ]);
        let outcome = probe(&action, &container, &target(), Duration::from_secs(5)).await;
        assert_eq!(outcome, ProbeOutcome::Success);
        let head = server
            .heads()
            .pop()
            .expect("one request")
            .to_ascii_lowercase();
        assert!(
            head.starts_with("get /healthz?full=1 http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("host: 127.0.0.1:{}\r\n", server.port)),
            "{head}"
        );
        assert!(head.contains("user-agent: kube-probe/1.37\r\n"), "{head}");
        assert!(head.contains("accept: */*\r\n"), "{head}");
        assert!(head.contains("x-custom: a\r\nx-custom: b\r\n"), "{head}");

        // Host, User-Agent and an empty Accept from the handler win.
        action.http_headers = Some(
            [
                ("Host", "example.com"),
                ("User-Agent", "mine"),
                ("Accept", ""),
            ]
            .map(|(name, value)| HTTPHeader {
                name: name.into(),
                value: value.into(),
            })
            .to_vec(),
        );
        probe(&action, &container, &target(), Duration::from_secs(5)).await;
        let head = server.heads().pop().expect("request").to_ascii_lowercase();
        assert!(head.contains("host: example.com\r\n"), "{head}");
        assert!(head.contains("user-agent: mine\r\n"), "{head}");
        assert!(!head.contains("accept:"), "{head}");
    }

    #[tokio::test]
    async fn same_host_redirects_are_followed_others_end_in_a_warning() {
        let server = Server::start(|path, port| match path {
            "/old" => redirect("/new".into()),
            "/new" => ok("here"),
            "/away" => redirect(format!("http://localhost:{port}/new")),
            "/loop" => redirect("/loop".into()),
            _ => (404, Vec::new(), String::new()),
        })
        .await;
        assert_eq!(
            run(&action(server.port, "/old")).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            run(&action(server.port, "/away")).await,
            ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        assert_eq!(
            run(&action(server.port, "/loop")).await,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{}/loop\": stopped after 10 redirects",
                server.port
            ))
        );
        // The first request of /loop and its ten redirects.
        let loops = server
            .heads()
            .iter()
            .filter(|h| h.starts_with("GET /loop "))
            .count();
        assert_eq!(loops, 11);
    }

    #[tokio::test]
    async fn the_body_is_read_up_to_10_kib() {
        let server = Server::start(|_, port| {
            let (_, headers, _) = redirect(format!("http://localhost:{port}/"));
            (301, headers, "y".repeat(3 * MAX_OUTPUT))
        })
        .await;
        let ProbeOutcome::Warning(message) = run(&action(server.port, "/")).await else {
            panic!("a redirect elsewhere is a warning");
        };
        let prefix = "Probe terminated redirects, Response body: ";
        assert_eq!(message.len(), prefix.len() + MAX_OUTPUT);
    }

    #[tokio::test]
    async fn transport_errors_fail_with_gos_wording() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        assert_eq!(
            run(&action(port, "/healthz")).await,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: \
                 connection refused"
            ))
        );

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream);
            }
        });
        let outcome = probe(
            &action(port, ""),
            &Container::default(),
            &target(),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}\": context deadline exceeded (Client.Timeout \
                 exceeded while awaiting headers)"
            ))
        );
        hold.abort();
    }

    #[tokio::test]
    async fn handlers_that_cannot_run_are_unknown() {
        let mut named = action(0, "/");
        named.port = IntOrString::String("web".into());
        assert_eq!(
            run(&named).await,
            ProbeOutcome::Unknown("strconv.Atoi: parsing \"web\": invalid syntax".into())
        );
        let no_ip = ProbeTarget {
            pod_ip: None,
            container_id: "c1".into(),
        };
        let outcome = probe(
            &action(80, "/"),
            &Container::default(),
            &no_ip,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(outcome, ProbeOutcome::Unknown(NO_POD_IP.into()));
    }

    /// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1.
    pub fn self_signed() -> tokio_rustls::TlsAcceptor {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_checks() {
        let server = Server::start_with(|_, _| ok("secure"), Some(self_signed())).await;
        let mut https = action(server.port, "/healthz");
        https.scheme = Some("HTTPS".into());
        assert_eq!(run(&https).await, ProbeOutcome::Success);

        // HTTPS against a plain HTTP server says so, in Go's words.
        let plain = Server::start(|_, _| ok("")).await;
        https.port = IntOrString::Int(i32::from(plain.port));
        assert_eq!(
            run(&https).await,
            ProbeOutcome::Failure(format!(
                "Get \"https://127.0.0.1:{}/healthz\": {HTTP_TO_HTTPS}",
                plain.port
            ))
        );
    }
}
