//! TCP connections from the node, with error texts in the form upstream's
//! (Go) kubelet reports them: `dial tcp 10.42.0.5:80: connect: connection
//! refused`. Users grep events for these, so the wording is kept.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::{ProbeOutcome, join_host_port};

/// Connects to `host:port`, resolving a host name first. The error is the
/// message upstream would give.
pub(super) async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let address = join_host_port(host, port);
    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("dial tcp: lookup {host}: {}", os_message(&e)))?
            .collect(),
    };
    let mut last = None;
    for candidate in candidates {
        match TcpStream::connect(candidate).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(match last {
        Some(err) => format!("dial tcp {address}: connect: {}", os_message(&err)),
        None => format!("dial tcp: lookup {host}: no such host"),
    })
}

/// Upstream's message for a connection attempt that overran its timeout.
pub(super) fn dial_timed_out(host: &str, port: u16) -> String {
    format!("dial tcp {}: i/o timeout", join_host_port(host, port))
}

/// One tcpSocket probe attempt: a connection that opens within `timeout`
/// passes (and is closed at once).
pub(super) async fn probe_tcp(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    match tokio::time::timeout(timeout, dial(host, port)).await {
        Ok(Ok(_stream)) => ProbeOutcome::Success,
        Ok(Err(message)) => ProbeOutcome::Failure(message),
        Err(_) => ProbeOutcome::Failure(dial_timed_out(host, port)),
    }
}

/// The system error text in Go's form: lower case, no "(os error N)".
pub(super) fn os_message(err: &io::Error) -> String {
    let known = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset by peer",
        io::ErrorKind::HostUnreachable => "no route to host",
        io::ErrorKind::NetworkUnreachable => "network is unreachable",
        io::ErrorKind::TimedOut => "connection timed out",
        io::ErrorKind::AddrNotAvailable => "cannot assign requested address",
        _ => {
            let text = err.to_string();
            let text = match text.rfind(" (os error ") {
                Some(at) => &text[..at],
                None => text.as_str(),
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            };
        }
    };
    known.to_owned()
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A port on 127.0.0.1 that nothing listens on (bound, then released).
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        port
    }

    #[tokio::test]
    async fn tcp_probe_passes_on_a_listener_and_fails_like_upstream_without() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(
            probe_tcp("127.0.0.1", port, Duration::from_secs(1)).await,
            ProbeOutcome::Success
        );

        let port = closed_port().await;
        assert_eq!(
            probe_tcp("127.0.0.1", port, Duration::from_secs(1)).await,
            ProbeOutcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn host_names_are_resolved() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(dial("localhost", port).await.is_ok());
    }

    #[test]
    fn os_errors_read_like_go() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(os_message(&refused), "connection refused");
        let other = io::Error::from_raw_os_error(13);
        assert_eq!(os_message(&other), "permission denied");
        assert_eq!(
            dial_timed_out("10.0.0.1", 80),
            "dial tcp 10.0.0.1:80: i/o timeout"
        );
    }
}
