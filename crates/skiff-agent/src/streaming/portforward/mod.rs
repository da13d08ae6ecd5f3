//! `kubectl port-forward` (and the Python client's) on the node: TCP
//! connections into a pod's network namespace, multiplexed over one
//! upgraded HTTP connection.
//!
//! Three framings reach `GET /portForward/{namespace}/{pod}`:
//!
//! - kubectl 1.31+: a WebSocket with subprotocol
//!   `SPDY/3.1+portforward.k8s.io` whose binary messages carry a SPDY/3.1
//!   byte stream (the WebSocket is only a tunnel);
//! - older kubectl (and kubectl's fallback): a plain `Upgrade: SPDY/3.1`;
//! - the Python client: a WebSocket with the channel protocol
//!   (`v4.channel.k8s.io`), the ports in `?ports=`, channel `2i` carrying
//!   port `i`'s data and `2i+1` its errors.
//!
//! In SPDY, the client opens two streams per forwarded connection, an error
//! stream and a data stream, with headers `streamtype`, `port` and
//! `requestid`; the agent dials the port once both exist. Connections are
//! made from inside the pod's network namespace to `localhost`, as
//! upstream's runtime does, so servers bound to 127.0.0.1 in the pod are
//! reachable; host-network pods are dialled on the host's loopback.

mod spdy;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::locate::PodLocator;
use spdy::Frame;

/// kubectl's WebSocket tunnel for SPDY.
const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The channel protocols of the Python client, newest first.
const CHANNEL_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];
/// How long dialling a pod port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size from a pod connection (kubectl's SPDY frames are this big).
const CHUNK: usize = 32 * 1024;

/// Where a pod's ports are dialled from.
#[derive(Debug, Clone)]
enum Dialer {
    /// Inside this network namespace, on its loopback.
    Netns(PathBuf),
    /// On the host's loopback (host-network pods).
    Host,
}

impl Dialer {
    async fn dial(&self, port: u16) -> std::io::Result<TcpStream> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = match self {
            Dialer::Host => std::net::TcpStream::connect_timeout(&address, DIAL_TIMEOUT)?,
            Dialer::Netns(path) => {
                let path = path.clone();
                // A thread of its own: entering a namespace changes the
                // calling thread for good, so never a pooled one. The socket
                // stays in the namespace it was created in.
                let (done, result) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    let connect = || -> std::io::Result<std::net::TcpStream> {
                        let netns = std::fs::File::open(&path)?;
                        rustix::thread::move_into_link_name_space(
                            netns.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )?;
                        std::net::TcpStream::connect_timeout(&address, DIAL_TIMEOUT)
                    };
                    let _ = done.send(connect());
                });
                result
                    .await
                    .map_err(|_| std::io::Error::other("dial thread ended"))??
            }
        };
        stream.set_nonblocking(true)?;
        TcpStream::from_std(stream)
    }
}

/// The port-forward routes.
pub(crate) fn routes(locator: Arc<dyn PodLocator>) -> Router {
    Router::new()
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward).post(port_forward),
        )
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            get(port_forward).post(port_forward),
        )
        .with_state(locator)
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

async fn port_forward(
    State(locator): State<Arc<dyn PodLocator>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let namespace = params.get("namespace").cloned().unwrap_or_default();
    let name = params.get("pod").cloned().unwrap_or_default();
    let Some(pod) = locator.pod(&namespace, &name).await else {
        return error(StatusCode::NOT_FOUND, format!("pod \"{name}\" not found"));
    };
    if params.get("uid").is_some_and(|uid| *uid != pod.uid) {
        return error(StatusCode::NOT_FOUND, format!("pod \"{name}\" not found"));
    }
    let dialer = match pod.netns_path {
        Some(path) => Dialer::Netns(path),
        None => Dialer::Host,
    };
    let headers = request.headers().clone();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        let offered: Vec<String> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
            .collect();
        let query = request.uri().query().unwrap_or_default().to_string();
        let (mut parts, _) = request.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        if offered.iter().any(|p| p == SPDY_TUNNEL_PROTOCOL) {
            return ws
                .protocols([SPDY_TUNNEL_PROTOCOL])
                .on_upgrade(move |socket| spdy_over_websocket(socket, dialer));
        }
        let ports = match parse_ports(&query) {
            Ok(ports) => ports,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        return ws
            .protocols(CHANNEL_PROTOCOLS)
            .on_upgrade(move |socket| channels(socket, dialer, ports));
    }
    if upgrade == "spdy/3.1" {
        let on_upgrade = hyper::upgrade::on(request);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    serve_spdy(hyper_util::rt::TokioIo::new(upgraded), dialer).await;
                }
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            "X-Stream-Protocol-Version",
            HeaderValue::from_static("portforward.k8s.io"),
        );
        return response;
    }
    error(
        StatusCode::BAD_REQUEST,
        "port-forward needs a WebSocket or SPDY/3.1 upgrade".into(),
    )
}

/// `ports=8080,9090` (repeated `ports` parameters also count).
fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in url_pairs(query) {
        if key == "ports" || key == "port" {
            for part in value.split(',').filter(|p| !p.is_empty()) {
                let port: u16 = part
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("invalid port {part:?}"))?;
                ports.push(port);
            }
        }
    }
    if ports.is_empty() {
        return Err("at least one port must be given (ports=...)".into());
    }
    Ok(ports)
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k.to_string(), v.replace("%2C", ",").replace("%2c", ","))
    })
}

/// Bridges a tunnel WebSocket to a SPDY session over an in-memory pipe.
async fn spdy_over_websocket(socket: WebSocket, dialer: Dialer) {
    let (session_side, tunnel_side) = tokio::io::duplex(256 * 1024);
    let (mut tunnel_read, mut tunnel_write) = tokio::io::split(tunnel_side);
    let (mut ws_tx, mut ws_rx) = socket.split();
    let inbound = async move {
        while let Some(Ok(message)) = ws_rx.next().await {
            match message {
                Message::Binary(bytes) if tunnel_write.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = tunnel_write.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; CHUNK + 64];
        loop {
            match tunnel_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if ws_tx.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::join!(inbound, outbound, serve_spdy(session_side, dialer));
}

/// One forwarded connection's streams, by request id.
#[derive(Default)]
struct Pending {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

/// Serves one SPDY port-forward session until the client goes away.
async fn serve_spdy<S>(io: S, dialer: Dialer)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(64);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut decoder = spdy::Decoder::default();
    let mut encoder = spdy::Encoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // Data from the client for each open data stream.
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    'session: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward session ended");
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { id, headers, .. } => {
                    if frames_tx.send(encoder.syn_reply(id)).await.is_err() {
                        break 'session;
                    }
                    let request = headers.get("requestid").cloned().unwrap_or_default();
                    let entry = pending.entry(request.clone()).or_default();
                    entry.port = headers
                        .get("port")
                        .and_then(|p| p.parse().ok())
                        .or(entry.port);
                    match headers.get("streamtype").map(String::as_str) {
                        Some("error") => entry.error = Some(id),
                        Some("data") => entry.data = Some(id),
                        _ => {}
                    }
                    if let Some(Pending {
                        error: Some(error_id),
                        data: Some(data_id),
                        port,
                    }) = pending.get(&request)
                    {
                        let (error_id, data_id, port) = (*error_id, *data_id, *port);
                        pending.remove(&request);
                        let (pod_tx, pod_rx) = mpsc::channel(64);
                        to_pod.insert(data_id, pod_tx);
                        tokio::spawn(forward(
                            dialer.clone(),
                            port,
                            error_id,
                            data_id,
                            pod_rx,
                            frames_tx.clone(),
                        ));
                    }
                }
                Frame::Data { id, data, fin } => {
                    if let Some(sender) = to_pod.get(&id) {
                        if !data.is_empty() {
                            let _ = sender.send(Some(data)).await;
                        }
                        if fin {
                            let _ = sender.send(None).await;
                            to_pod.remove(&id);
                        }
                    }
                }
                Frame::Reset { id } => {
                    to_pod.remove(&id);
                }
                Frame::Ping { id } => {
                    if frames_tx.send(spdy::ping(id)).await.is_err() {
                        break 'session;
                    }
                }
                Frame::GoAway => break 'session,
                Frame::Ignored => {}
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(to_pod);
    drop(frames_tx);
    let _ = writer_task.await;
}

/// Dials the pod port and copies both ways for one forwarded connection.
async fn forward(
    dialer: Dialer,
    port: Option<u16>,
    error_id: u32,
    data_id: u32,
    mut from_client: mpsc::Receiver<Option<Bytes>>,
    frames: mpsc::Sender<Bytes>,
) {
    let Some(port) = port else {
        let message = b"port-forward: the stream names no port";
        let _ = frames.send(spdy::data(error_id, message, true)).await;
        let _ = frames.send(spdy::data(data_id, b"", true)).await;
        return;
    };
    let stream = match dialer.dial(port).await {
        Ok(stream) => stream,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod: {e}");
            let _ = frames
                .send(spdy::data(error_id, message.as_bytes(), true))
                .await;
            let _ = frames.send(spdy::data(data_id, b"", true)).await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = stream.into_split();
    let upstream = async {
        while let Some(Some(chunk)) = from_client.recv().await {
            if pod_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = pod_write.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match pod_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if frames
                        .send(spdy::data(data_id, &buf[..n], false))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = frames.send(spdy::data(data_id, b"", true)).await;
    };
    tokio::join!(upstream, downstream);
    let _ = frames.send(spdy::data(error_id, b"", true)).await;
}

/// The channel protocol: one connection per port, opened at once.
async fn channels(socket: WebSocket, dialer: Dialer, ports: Vec<u16>) {
    let (ws_tx, mut ws_rx) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let sender = tokio::spawn(async move {
        let mut ws_tx = ws_tx;
        while let Some(message) = out_rx.recv().await {
            if ws_tx.send(Message::Binary(message.into())).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });
    let mut writers = Vec::with_capacity(ports.len());
    let mut readers = tokio::task::JoinSet::new();
    for (index, port) in ports.iter().enumerate() {
        let Ok(data_channel) = u8::try_from(index * 2) else {
            break;
        };
        let error_channel = data_channel + 1;
        let prefix = port.to_le_bytes();
        for channel in [data_channel, error_channel] {
            let _ = out_tx.send(vec![channel, prefix[0], prefix[1]]).await;
        }
        match dialer.dial(*port).await {
            Ok(stream) => {
                let (mut read, write) = stream.into_split();
                writers.push(Some(write));
                let out = out_tx.clone();
                readers.spawn(async move {
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        match read.read(&mut buf[1..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                buf[0] = data_channel;
                                if out.send(buf[..=n].to_vec()).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => {
                writers.push(None);
                let mut message = vec![error_channel];
                message.extend_from_slice(
                    format!("error forwarding port {port} to pod: {e}").as_bytes(),
                );
                let _ = out_tx.send(message).await;
            }
        }
    }
    // The session ends when the client closes it, or when every pod
    // connection has closed (as upstream's kubelet closes the WebSocket).
    {
        let all_closed = async { while readers.join_next().await.is_some() {} };
        tokio::pin!(all_closed);
        loop {
            let message = tokio::select! {
                message = ws_rx.next() => message,
                () = &mut all_closed => break,
            };
            let Some(Ok(message)) = message else {
                break;
            };
            let payload = match message {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, data)) = payload.split_first() else {
                continue;
            };
            let index = usize::from(channel / 2);
            if channel % 2 == 0
                && let Some(Some(writer)) = writers.get_mut(index)
                && writer.write_all(data).await.is_err()
            {
                writers[index] = None;
            }
        }
    }
    // The client left first: stop reading from the pod.
    readers.abort_all();
    drop(out_tx);
    drop(writers);
    // Flushes what the readers queued, then closes the WebSocket.
    let _ = sender.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(parse_ports("ports=8080,9090"), Ok(vec![8080, 9090]));
        assert_eq!(parse_ports("ports=80&ports=81"), Ok(vec![80, 81]));
        assert_eq!(parse_ports("ports=80%2C81"), Ok(vec![80, 81]));
        assert!(parse_ports("").is_err());
        assert!(parse_ports("ports=0").is_err());
        assert!(parse_ports("ports=http").is_err());
    }

    /// A SPDY session over an in-memory pipe, forwarding to a listener on the
    /// host's loopback (the host-network case).
    #[tokio::test]
    async fn spdy_session_forwards_a_connection() {
        use flate2::{Compress, Compression, FlushCompress};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await.expect("read");
            conn.write_all(b"echo:").await.expect("write");
            conn.write_all(&buf).await.expect("write");
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_spdy(server, Dialer::Host));
        let (mut client_read, mut client_write) = tokio::io::split(client);

        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&spdy::DICTIONARY).expect("dictionary");
        let mut syn = |id: u32, kind: &str| {
            let port = port.to_string();
            let headers = [
                ("streamtype", kind),
                ("port", port.as_str()),
                ("requestid", "0"),
            ];
            let mut plain = Vec::new();
            plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
            for (k, v) in headers {
                plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
                plain.extend_from_slice(k.as_bytes());
                plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
                plain.extend_from_slice(v.as_bytes());
            }
            let mut block = Vec::with_capacity(512);
            zlib.compress_vec(&plain, &mut block, FlushCompress::Sync)
                .expect("compress");
            let mut frame = vec![0x80, 0x03, 0x00, 0x01, 0x00];
            let len = 10 + block.len();
            frame.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&[0; 6]);
            frame.extend_from_slice(&block);
            frame
        };
        client_write.write_all(&syn(1, "error")).await.expect("syn");
        client_write.write_all(&syn(3, "data")).await.expect("syn");
        client_write
            .write_all(&spdy::data(3, b"hello", false))
            .await
            .expect("data");

        // Collect frames until the data stream ends.
        let mut decoder = spdy::Decoder::default();
        let mut buf = BytesMut::new();
        let mut received = Vec::new();
        let mut replies = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        'outer: loop {
            while let Some(frame) = decoder.decode(&mut buf).expect("frame") {
                match frame {
                    Frame::Data { id: 3, data, fin } => {
                        received.extend_from_slice(&data);
                        if fin {
                            break 'outer;
                        }
                    }
                    Frame::Ignored => replies += 1,
                    _ => {}
                }
            }
            let read = tokio::time::timeout_at(deadline, client_read.read_buf(&mut buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                other => panic!("session ended early: {other:?}, got {received:?}"),
            }
        }
        assert_eq!(replies, 2, "a SYN_REPLY per stream");
        assert_eq!(received, b"echo:hello");
    }
}
