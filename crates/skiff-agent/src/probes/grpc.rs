//! `grpc` probes: one `grpc.health.v1.Health/Check` call over plaintext
//! HTTP/2 to the pod, the way upstream's kubelet makes it.
//!
//! - `SERVING` passes; any other answer, any RPC error and running out of
//!   time fail. Nothing is [`ProbeOutcome::Unknown`] once the pod has an IP:
//!   upstream maps every error of this handler to a failure, as the
//!   `grpc_health_probe` tool does.
//! - The timeout covers connecting and the call together. Connecting means
//!   what it means to grpc-go with a blocking dial: a TCP connection on
//!   which the server has spoken (its HTTP/2 preface). A refused connection
//!   is retried (grpc-go's one-second back-off) until the time is up, so a
//!   port with nothing behind it, and one whose server never answers, both
//!   end in upstream's `timeout: failed to connect service "10.42.0.5:9000"
//!   within 1s: context deadline exceeded`.
//! - RPC errors read as grpc-go prints a status:
//!   `error: health rpc probe failed: rpc error: code = NotFound desc = …`.
//!
//! The two messages of `grpc/health/v1/health.proto` are written out here
//! with prost's derives rather than generated: they are one field each, and
//! a build step for them would cost more than it saves.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{self, Instant};
use tonic::codegen::http::Uri;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{KUBE_VERSION, ProbeOutcome, join_host_port, net};

/// The method every gRPC probe calls.
const CHECK: &str = "/grpc.health.v1.Health/Check";

/// How long grpc-go waits before dialling again after a failed connection
/// (its base back-off).
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

/// The proto name of a serving status, as Go's generated `String()` gives
/// it (the number for a value the proto does not define).
fn status_name(value: i32) -> String {
    match ServingStatus::try_from(value) {
        Ok(ServingStatus::Unknown) => "UNKNOWN".to_owned(),
        Ok(ServingStatus::Serving) => "SERVING".to_owned(),
        Ok(ServingStatus::NotServing) => "NOT_SERVING".to_owned(),
        Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN".to_owned(),
        Err(_) => value.to_string(),
    }
}

/// A gRPC code as grpc-go names it (`OK`, `Canceled`; the others match
/// tonic's variant names).
fn code_name(code: Code) -> String {
    match code {
        Code::Ok => "OK".to_owned(),
        Code::Cancelled => "Canceled".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A whole-second duration as Go's `time.Duration` prints it: `1s`,
/// `1m30s`, `1h0m0s`. Probe timeouts are whole seconds.
fn go_seconds(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// One gRPC probe attempt against `ip:port`, asking about `service` (empty:
/// the server as a whole).
pub(super) async fn probe(ip: IpAddr, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    let host = ip.to_string();
    let address = join_host_port(&host, port);
    let deadline = Instant::now() + timeout;
    let endpoint = match Endpoint::from_shared(format!("http://{address}"))
        .and_then(|e| e.user_agent(format!("kube-probe/{KUBE_VERSION}")))
    {
        Ok(endpoint) => endpoint,
        Err(e) => return ProbeOutcome::Unknown(format!("invalid gRPC target {address:?}: {e}")),
    };
    let Ok(channel) = time::timeout_at(deadline, connect(&endpoint, &host, port)).await else {
        return ProbeOutcome::Failure(format!(
            "timeout: failed to connect service {address:?} within {}: context deadline exceeded",
            go_seconds(timeout)
        ));
    };
    let rpc_timed_out = || {
        ProbeOutcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            go_seconds(timeout)
        ))
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    match time::timeout_at(deadline, check(channel, service, remaining)).await {
        Err(_) => rpc_timed_out(),
        Ok(Ok(status)) if status == ServingStatus::Serving as i32 => ProbeOutcome::Success,
        Ok(Ok(status)) => ProbeOutcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status_name(status)
        )),
        Ok(Err(status)) => match status.code() {
            Code::Unimplemented => ProbeOutcome::Failure(format!(
                "error: this server does not implement the grpc health protocol \
                 (grpc.health.v1.Health): {}",
                status.message()
            )),
            Code::DeadlineExceeded => rpc_timed_out(),
            code => ProbeOutcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                code_name(code),
                status.message()
            )),
        },
    }
}

/// Dials until a connection is up and the server has spoken on it; the
/// caller bounds the wait.
async fn connect(endpoint: &Endpoint, host: &str, port: u16) -> Channel {
    loop {
        let answered = Arc::new(Notify::new());
        let connector = {
            let (host, answered) = (host.to_owned(), answered.clone());
            tower::service_fn(move |_: Uri| {
                let (host, answered) = (host.clone(), answered.clone());
                async move {
                    let stream = net::dial(&host, port).await.map_err(io::Error::other)?;
                    Ok::<_, io::Error>(TokioIo::new(Answering {
                        stream,
                        answered: Some(answered),
                    }))
                }
            })
        };
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => {
                // A server that accepts and never speaks is not connected
                // yet; grpc-go waits for its preface the same way.
                answered.notified().await;
                return channel;
            }
            Err(e) => {
                tracing::debug!(host, port, error = %e, "gRPC probe: connecting failed; retrying");
                time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
}

/// The health check call; the serving status the server answered.
async fn check(channel: Channel, service: &str, timeout: Duration) -> Result<i32, Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    // Sent as `grpc-timeout`, as grpc-go derives it from the deadline.
    request.set_timeout(timeout);
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let response = client
        .unary(request, PathAndQuery::from_static(CHECK), codec)
        .await?;
    Ok(response.into_inner().status)
}

/// A TCP stream that signals the first bytes the server sends.
struct Answering {
    stream: TcpStream,
    answered: Option<Arc<Notify>>,
}

impl AsyncRead for Answering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && let Some(answered) = self.answered.take()
        {
            answered.notify_one();
        }
        poll
    }
}

impl AsyncWrite for Answering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::transport::Server;
    use tonic_health::ServingStatus as Reported;

    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const SECOND: Duration = Duration::from_secs(1);

    async fn listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        (listener, port)
    }

    /// A tonic health server on 127.0.0.1: the server as a whole (`""`)
    /// serving, `ready` SERVING and `draining` NOT_SERVING.
    async fn health_server() -> u16 {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("ready", Reported::Serving)
            .await;
        reporter
            .set_service_status("draining", Reported::NotServing)
            .await;
        let (listener, port) = listener().await;
        tokio::spawn(async move {
            // Keeps the statuses alive as long as the server.
            let _reporter = reporter;
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        port
    }

    #[tokio::test]
    async fn serving_passes_and_anything_else_fails_like_upstream() {
        let port = health_server().await;
        assert_eq!(
            probe(LOCALHOST, port, "", SECOND).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            probe(LOCALHOST, port, "ready", SECOND).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            probe(LOCALHOST, port, "draining", SECOND).await,
            ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            probe(LOCALHOST, port, "nope", SECOND).await,
            ProbeOutcome::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound \
                 desc = service not registered"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn probe_specs_reach_the_pod_ip_with_their_service() {
        use k8s_openapi::api::core::v1::{Container, GRPCAction, Probe};
        use skiff_cri::fake::FakeRuntime;

        use super::super::{ProbeTarget, probe_once};

        let port = health_server().await;
        let spec = |service: Option<&str>| Probe {
            grpc: Some(GRPCAction {
                mode: None,
                port: i32::from(port),
                service: service.map(str::to_owned),
            }),
            ..Probe::default()
        };
        let target = ProbeTarget {
            pod_ip: Some(LOCALHOST),
            container_id: "c1".into(),
        };
        let (container, runtime) = (Container::default(), FakeRuntime::new());
        assert_eq!(
            probe_once(&spec(None), &container, &target, &runtime).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            probe_once(&spec(Some("draining")), &container, &target, &runtime).await,
            ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
    }

    #[tokio::test]
    async fn a_grpc_server_without_the_health_service_says_so() {
        let (listener, port) = listener().await;
        tokio::spawn(
            Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let ProbeOutcome::Failure(message) = probe(LOCALHOST, port, "", SECOND).await else {
            panic!("expected a failure");
        };
        assert!(
            message.starts_with(
                "error: this server does not implement the grpc health protocol \
                 (grpc.health.v1.Health)"
            ),
            "{message}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_times_out_connecting() {
        let (listener, port) = listener().await;
        drop(listener);
        let start = Instant::now();
        assert_eq!(
            probe(LOCALHOST, port, "", SECOND).await,
            ProbeOutcome::Failure(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: \
                 context deadline exceeded"
            ))
        );
        // Refused connections are retried until the deadline, not reported
        // at once.
        assert!(start.elapsed() >= SECOND);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_connecting() {
        let (listener, port) = listener().await;
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        assert_eq!(
            probe(LOCALHOST, port, "", SECOND).await,
            ProbeOutcome::Failure(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: \
                 context deadline exceeded"
            ))
        );
        held.abort();
    }

    #[test]
    fn names_print_like_go() {
        assert_eq!(status_name(2), "NOT_SERVING");
        assert_eq!(status_name(0), "UNKNOWN");
        assert_eq!(status_name(3), "SERVICE_UNKNOWN");
        assert_eq!(status_name(9), "9");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::Unavailable), "Unavailable");
        assert_eq!(go_seconds(Duration::from_secs(1)), "1s");
        assert_eq!(go_seconds(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_seconds(Duration::from_secs(3600)), "1h0m0s");
    }
}
