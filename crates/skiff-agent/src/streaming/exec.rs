//! `kubectl exec` and `kubectl attach` on the node.
//!
//! The client (kubectl, through the apiserver's proxy) opens a WebSocket with
//! the kubelet's channel protocol: every binary message starts with a channel
//! byte (0 stdin, 1 stdout, 2 stderr, 3 status, 4 terminal resize) and, in
//! `v5.channel.k8s.io`, a message `[255, channel]` closes that channel, which
//! is how `echo hi | kubectl exec -i pod -- cat` ends `cat`'s input.
//!
//! The runtime runs the command: CRI `Exec`/`Attach` returns a URL on
//! containerd's streaming server, which speaks SPDY and WebSocket v4 but not
//! v5. v4 cannot close stdin alone, so the agent talks SPDY to the runtime
//! ([`spdy`]) and translates, as upstream's apiserver does when it proxies
//! v5 to a kubelet: client stdin and resize become SPDY data, v5's stdin close
//! becomes a FIN on the stdin stream (containerd then closes the process's
//! stdin), and the runtime's output comes back on channels 1 and 2. When the
//! runtime ends the session the client gets the status on channel 3 (a
//! `metav1.Status` JSON: `Success`, or `Failure` with reason
//! `NonZeroExitCode` and the exit code as cause `ExitCode`) and a normal close.
//!
//! Every check that can fail (stream flags, pod and container, the CRI call,
//! the runtime connection) runs before the WebSocket upgrade, so failures
//! reach the client as HTTP errors with a `Status` body, as upstream's.

mod spdy;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code,
    rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::{Deserialize, Serialize};
use skiff_cri::v1::{AttachRequest, ExecRequest};
use skiff_cri::{CriError, RuntimeService};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::locate::PodLocator;
use spdy::{Frame, SpdyError, StreamType};

/// Channel of the process's input.
const STDIN: u8 = 0;
/// Channel of the process's stdout (all output with a tty).
const STDOUT: u8 = 1;
/// Channel of the process's stderr.
const STDERR: u8 = 2;
/// Channel of the final status.
const ERROR: u8 = 3;
/// Channel of terminal size changes.
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` closes one channel.
const CLOSE: u8 = 255;

/// Largest status the runtime may send; a real one is a few hundred bytes.
const MAX_STATUS: usize = 64 * 1024;

/// How long to wait for the client's answer to our close frame, so that its
/// unread messages do not turn our close into a TCP reset.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The routes `/exec/...` and `/attach/...`, with and without the pod uid, as
/// upstream's kubelet serves them (GET for WebSocket clients; POST is
/// accepted and refused with a clear error, SPDY clients use it).
pub(super) fn routes(locator: Arc<dyn PodLocator>, runtime: Arc<dyn RuntimeService>) -> Router {
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route(
            "/exec/{namespace}/{pod}/{uid}/{container}",
            get(exec).post(exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach).post(attach),
        )
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            get(attach).post(attach),
        )
        .with_state(Backends { locator, runtime })
}

#[derive(Clone)]
struct Backends {
    locator: Arc<dyn PodLocator>,
    runtime: Arc<dyn RuntimeService>,
}

/// The path parameters.
#[derive(Debug, Deserialize)]
struct Target {
    namespace: String,
    pod: String,
    /// Only in the long form of the path; must match the pod's uid.
    uid: Option<String>,
    container: String,
}

/// Exec or attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
        }
    }
}

async fn exec(
    State(backends): State<Backends>,
    Path(target): Path<Target>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(backends, Kind::Exec, target, query, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn attach(
    State(backends): State<Backends>,
    Path(target): Path<Target>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(backends, Kind::Attach, target, query, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Checks the request, asks the runtime for a session, connects to it and
/// only then accepts the WebSocket.
async fn serve(
    backends: Backends,
    kind: Kind,
    target: Target,
    query: Option<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ExecError> {
    let request = RemoteCommand::parse(query.as_deref().unwrap_or_default(), kind)?;
    let container_id = locate(backends.locator.as_ref(), &target).await?;
    let upgrade = upgrade.map_err(|rejection| {
        ExecError::BadRequest(format!(
            "{} needs a WebSocket upgrade with subprotocol {} or {} ({})",
            kind.name(),
            Protocol::V5.name(),
            Protocol::V4.name(),
            rejection.body_text()
        ))
    })?;
    let upgrade = upgrade.protocols(Protocol::ALL.map(Protocol::name));
    let protocol = match upgrade.selected_protocol() {
        Some(name) => name.to_str().ok().and_then(Protocol::from_name),
        // A client that offers no subprotocol gets the original one.
        None if upgrade.requested_protocols().next().is_none() => Some(Protocol::V1),
        None => None,
    }
    .ok_or_else(|| {
        ExecError::BadRequest("none of the requested WebSocket subprotocols is supported".into())
    })?;

    let flags = request.flags;
    let url = match kind {
        Kind::Exec => {
            backends
                .runtime
                .exec(ExecRequest {
                    container_id,
                    cmd: request.command,
                    tty: flags.tty,
                    stdin: flags.stdin,
                    stdout: flags.stdout,
                    stderr: flags.stderr,
                })
                .await?
                .url
        }
        Kind::Attach => {
            backends
                .runtime
                .attach(AttachRequest {
                    container_id,
                    stdin: flags.stdin,
                    tty: flags.tty,
                    stdout: flags.stdout,
                    stderr: flags.stderr,
                })
                .await?
                .url
        }
    };
    let kinds = flags.stream_types();
    let session = spdy::connect(&url, &kinds).await?;
    let streams = RuntimeStreams::new(&kinds, &session.stream_ids);
    Ok(upgrade.on_upgrade(move |socket| bridge(socket, protocol, flags, session, streams)))
}

/// The CRI id of the target container, if it runs.
async fn locate(locator: &dyn PodLocator, target: &Target) -> Result<String, ExecError> {
    let pod = locator
        .pod(&target.namespace, &target.pod)
        .await
        .filter(|pod| target.uid.as_ref().is_none_or(|uid| *uid == pod.uid))
        .ok_or(ExecError::PodNotFound)?;
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == target.container)
        .ok_or_else(|| ExecError::ContainerNotFound(target.container.clone()))?;
    match container.id {
        Some(id) if container.running => Ok(id),
        Some(_) => Err(ExecError::ContainerNotRunning(target.container.clone())),
        None => Err(ExecError::ContainerNotFound(target.container.clone())),
    }
}

/// Which of the process's streams the client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StreamFlags {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl StreamFlags {
    /// The runtime streams to open, in the order client-go opens them. The
    /// runtime expects exactly these: error always, resize with a tty.
    fn stream_types(self) -> Vec<StreamType> {
        let mut kinds = vec![StreamType::Error];
        kinds.extend(self.stdin.then_some(StreamType::Stdin));
        kinds.extend(self.stdout.then_some(StreamType::Stdout));
        kinds.extend(self.stderr.then_some(StreamType::Stderr));
        kinds.extend(self.tty.then_some(StreamType::Resize));
        kinds
    }

    /// The lowest channel the client reads; upstream sends an empty message
    /// on it once the session is up.
    fn first_output_channel(self) -> u8 {
        if self.stdout {
            STDOUT
        } else if self.stderr {
            STDERR
        } else {
            ERROR
        }
    }
}

/// The query of an exec or attach request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteCommand {
    flags: StreamFlags,
    /// The command and its arguments (exec only).
    command: Vec<String>,
}

impl RemoteCommand {
    /// Parses `command=..&command=..&stdin=1&stdout=1&stderr=1&tty=1`. The
    /// flags also go by the names the apiserver uses towards upstream's
    /// kubelet (`input`, `output`, `error`), and take `1`/`true` (kubectl
    /// sends `true`, the apiserver `1`).
    fn parse(query: &str, kind: Kind) -> Result<Self, ExecError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ExecError::BadRequest(format!("invalid query: {e}")))?;
        let mut flags = StreamFlags::default();
        let mut command = Vec::new();
        for (name, value) in pairs {
            let flag = match name.as_str() {
                "command" => {
                    command.push(value);
                    continue;
                }
                "stdin" | "input" => &mut flags.stdin,
                "stdout" | "output" => &mut flags.stdout,
                "stderr" | "error" => &mut flags.stderr,
                "tty" => &mut flags.tty,
                // `container` and anything else the proxy passes along.
                _ => continue,
            };
            *flag = parse_bool(&value)
                .ok_or_else(|| ExecError::BadRequest(format!("invalid {name}={value:?}")))?;
        }
        // A terminal merges stderr into stdout.
        if flags.tty {
            flags.stderr = false;
        }
        if !(flags.stdin || flags.stdout || flags.stderr) {
            return Err(ExecError::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        if kind == Kind::Exec && command.is_empty() {
            return Err(ExecError::BadRequest(
                "you must specify at least one command for the container".into(),
            ));
        }
        Ok(Self { flags, command })
    }
}

/// Go's `strconv.ParseBool`, which the apiserver's query decoding uses.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A WebSocket subprotocol of the kubelet's channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// v4 plus channel close (`[255, channel]`).
    V5,
    /// Binary frames, JSON status on channel 3.
    V4,
    /// v4 with text frames: an ASCII channel digit, then base64.
    V4Base64,
    /// The original: binary frames, the error message as text on channel 3
    /// and nothing on success.
    V1,
    /// The original with base64 text frames.
    V1Base64,
}

impl Protocol {
    /// In order of preference.
    const ALL: [Protocol; 5] = [
        Protocol::V5,
        Protocol::V4,
        Protocol::V4Base64,
        Protocol::V1,
        Protocol::V1Base64,
    ];

    fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V4Base64 => "v4.base64.channel.k8s.io",
            Protocol::V1 => "channel.k8s.io",
            Protocol::V1Base64 => "base64.channel.k8s.io",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    fn is_base64(self) -> bool {
        matches!(self, Protocol::V4Base64 | Protocol::V1Base64)
    }

    /// A message carrying `data` on `channel`.
    fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.is_base64() {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            BASE64.encode_string(data, &mut text);
            Message::Text(text.into())
        } else {
            let mut frame = Vec::with_capacity(1 + data.len());
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
    }

    /// What a message from the client asks for; `None` for control and
    /// empty messages.
    fn decode(self, message: Message) -> Result<Option<Inbound>, FrameError> {
        let raw = match message {
            Message::Binary(bytes) => bytes,
            Message::Text(text) => Bytes::copy_from_slice(text.as_str().as_bytes()),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(None),
        };
        let Some(&first) = raw.first() else {
            return Ok(None);
        };
        if self == Protocol::V5 && first == CLOSE {
            return match raw.get(1..) {
                Some(&[channel]) => Ok(Some(Inbound::Close { channel })),
                _ => Err(FrameError::BadClose(raw.len())),
            };
        }
        if self.is_base64() {
            let channel = first
                .checked_sub(b'0')
                .filter(|c| *c <= 9)
                .ok_or(FrameError::BadChannel(first))?;
            let data = BASE64.decode(&raw[1..]).map_err(FrameError::Base64)?;
            return Ok(Some(Inbound::Data {
                channel,
                data: data.into(),
            }));
        }
        Ok(Some(Inbound::Data {
            channel: first,
            data: raw.slice(1..),
        }))
    }

    /// The message that reports `status` on channel 3, if this protocol
    /// reports it at all.
    fn status_message(self, status: &ExecStatus) -> Option<Message> {
        match self {
            Protocol::V5 | Protocol::V4 | Protocol::V4Base64 => serde_json::to_vec(status)
                .ok()
                .map(|json| self.encode(ERROR, &json)),
            Protocol::V1 | Protocol::V1Base64 => (!status.is_success())
                .then(|| self.encode(ERROR, status.message.as_deref().unwrap_or("").as_bytes())),
        }
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inbound {
    /// Data for a channel (stdin, resize).
    Data { channel: u8, data: Bytes },
    /// v5: the client will send nothing more on `channel`.
    Close { channel: u8 },
}

/// A client message that breaks the channel protocol.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("a close message must be 2 bytes long, not {0}")]
    BadClose(usize),
    #[error("invalid channel byte {0:#04x} in a base64 message")]
    BadChannel(u8),
    #[error("invalid base64 payload")]
    Base64(#[source] base64::DecodeError),
}

/// The status sent on channel 3: the JSON of upstream's `metav1.Status`
/// (without kind and apiVersion, as upstream's kubelet writes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ExecStatus {
    #[serde(default)]
    metadata: EmptyMeta,
    #[serde(default)]
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
}

/// `metav1.ListMeta`, always empty here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct EmptyMeta {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StatusCause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl ExecStatus {
    #[cfg(test)]
    fn success() -> Self {
        Self {
            status: "Success".into(),
            ..Self::default()
        }
    }

    /// Upstream's `NewInternalError`.
    fn internal_error(error: &str) -> Self {
        Self {
            status: "Failure".into(),
            message: Some(format!("Internal error occurred: {error}")),
            reason: Some("InternalError".into()),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: None,
                    message: Some(error.to_owned()),
                }],
            }),
            code: Some(500),
            ..Self::default()
        }
    }

    /// The status the runtime wrote on its error stream. containerd writes
    /// one for every outcome (v4), so none at all means the session broke.
    fn from_runtime(raw: &[u8]) -> Self {
        if raw.is_empty() {
            return Self::internal_error("the runtime ended the session without a status");
        }
        match serde_json::from_slice::<ExecStatus>(raw) {
            Ok(status) if status.status == "Success" || status.status == "Failure" => status,
            // A v1-style runtime writes the error text itself.
            _ => Self::internal_error(String::from_utf8_lossy(raw).trim()),
        }
    }

    fn is_success(&self) -> bool {
        self.status == "Success"
    }
}

/// The runtime stream ids of one session.
#[derive(Debug, Clone, Copy, Default)]
struct RuntimeStreams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl RuntimeStreams {
    fn new(kinds: &[StreamType], ids: &[u32]) -> Self {
        let mut streams = Self::default();
        for (kind, id) in kinds.iter().zip(ids) {
            let slot = match kind {
                StreamType::Error => &mut streams.error,
                StreamType::Stdin => &mut streams.stdin,
                StreamType::Stdout => &mut streams.stdout,
                StreamType::Stderr => &mut streams.stderr,
                StreamType::Resize => &mut streams.resize,
            };
            *slot = Some(*id);
        }
        streams
    }
}

/// Relays one upgraded session until the runtime ends it or the client
/// goes away. Each direction runs on its own so that a full pipe one way
/// never stalls the other (a `cat` of a large input needs both to flow).
async fn bridge(
    socket: WebSocket,
    protocol: Protocol,
    flags: StreamFlags,
    session: spdy::Session,
    streams: RuntimeStreams,
) {
    let (sink, source) = socket.split();
    let (pings, ping_requests) = mpsc::channel(8);
    let done = CancellationToken::new();
    let client_gone = CancellationToken::new();
    let up = uplink(
        source,
        session.writer,
        protocol,
        streams,
        ping_requests,
        done.clone(),
        client_gone.clone(),
    );
    let down = async {
        tokio::select! {
            () = downlink(sink, session.reader, protocol, flags, streams, pings) => {}
            // Dropping the reader closes the runtime connection, which ends
            // the session there even if the command would run on.
            () = client_gone.cancelled() => {}
        }
        done.cancel();
    };
    tokio::join!(up, down);
}

/// Client → runtime: stdin, resize and stdin close; pong answers.
async fn uplink(
    mut source: SplitStream<WebSocket>,
    mut writer: spdy::Writer,
    protocol: Protocol,
    streams: RuntimeStreams,
    mut ping_requests: mpsc::Receiver<u32>,
    done: CancellationToken,
    client_gone: CancellationToken,
) {
    let mut stdin_open = streams.stdin.is_some();
    let mut runtime_gone = false;
    loop {
        let message = tokio::select! {
            () = done.cancelled() => break,
            Some(id) = ping_requests.recv() => {
                if let Err(e) = writer.pong(id).await {
                    tracing::debug!(error = %e, "answering the runtime's ping");
                }
                continue;
            }
            message = source.next() => message,
        };
        let message = match message {
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                // The client is gone: close the runtime connection, which
                // ends the session (and the process's stdin) there.
                if let Err(e) = writer.shutdown().await {
                    tracing::debug!(error = %e, "closing the runtime session");
                }
                client_gone.cancel();
                return;
            }
            Some(Ok(message)) => message,
        };
        if runtime_gone {
            continue;
        }
        let sent = match protocol.decode(message) {
            Ok(Some(Inbound::Data {
                channel: STDIN,
                data,
            })) => match streams.stdin {
                Some(id) if stdin_open => writer.data(id, &data, false).await,
                _ => Ok(()),
            },
            Ok(Some(Inbound::Data {
                channel: RESIZE,
                data,
            })) => match streams.resize {
                Some(id) => writer.data(id, &data, false).await,
                None => Ok(()),
            },
            Ok(Some(Inbound::Close { channel: STDIN })) => match streams.stdin {
                Some(id) if stdin_open => {
                    stdin_open = false;
                    writer.data(id, &[], true).await
                }
                _ => Ok(()),
            },
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a malformed message from the client");
                Ok(())
            }
        };
        if let Err(e) = sent {
            // The downlink sees the same failure and ends the session.
            tracing::debug!(error = %e, "writing to the runtime");
            runtime_gone = true;
        }
    }
    // The downlink sent its close frame; read the client's answer so that
    // closing the connection does not reset it with messages unread.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = source.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Why relaying output stopped early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("reading from the runtime")]
    Runtime(#[from] SpdyError),
    #[error("writing to the client")]
    Client(#[source] axum::Error),
}

/// Runtime → client: output, then the status and a normal close.
async fn downlink(
    mut sink: SplitSink<WebSocket, Message>,
    mut reader: spdy::Reader,
    protocol: Protocol,
    flags: StreamFlags,
    streams: RuntimeStreams,
    pings: mpsc::Sender<u32>,
) {
    let status = match relay_output(&mut sink, &mut reader, protocol, flags, streams, &pings).await
    {
        Ok(raw) => ExecStatus::from_runtime(&raw),
        Err(RelayError::Client(e)) => {
            tracing::debug!(error = %e, "the exec client went away");
            return;
        }
        Err(RelayError::Runtime(e)) => {
            tracing::warn!(error = %e, "exec session with the runtime failed");
            ExecStatus::internal_error(&format!("error executing command in container: {e}"))
        }
    };
    if let Some(message) = protocol.status_message(&status)
        && sink.send(message).await.is_err()
    {
        return;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

/// Forwards stdout and stderr until the runtime closes the session, and
/// returns what it wrote on the error stream.
async fn relay_output(
    sink: &mut SplitSink<WebSocket, Message>,
    reader: &mut spdy::Reader,
    protocol: Protocol,
    flags: StreamFlags,
    streams: RuntimeStreams,
    pings: &mpsc::Sender<u32>,
) -> Result<Vec<u8>, RelayError> {
    sink.send(protocol.encode(flags.first_output_channel(), &[]))
        .await
        .map_err(RelayError::Client)?;
    let mut status = Vec::new();
    while let Some(frame) = reader.next().await {
        match frame? {
            Frame::Data {
                stream_id, data, ..
            } => {
                let channel = if Some(stream_id) == streams.stdout {
                    STDOUT
                } else if Some(stream_id) == streams.stderr {
                    STDERR
                } else {
                    if Some(stream_id) == streams.error && status.len() + data.len() <= MAX_STATUS {
                        status.extend_from_slice(&data);
                    }
                    continue;
                };
                if !data.is_empty() {
                    sink.send(protocol.encode(channel, &data))
                        .await
                        .map_err(RelayError::Client)?;
                }
            }
            // Dropped when the uplink is busy; containerd never pings.
            Frame::Ping { id } => {
                let _ = pings.try_send(id);
            }
            Frame::GoAway => break,
            Frame::Reset { .. } | Frame::Other => {}
        }
    }
    Ok(status)
}

/// Why an exec or attach request was refused before the upgrade.
#[derive(Debug, thiserror::Error)]
enum ExecError {
    /// Bad flags, command or upgrade.
    #[error("{0}")]
    BadRequest(String),
    /// No such pod on this node (or a different uid).
    #[error("pod does not exist")]
    PodNotFound,
    /// No such container in the pod, or it was never created.
    #[error("container not found ({0:?})")]
    ContainerNotFound(String),
    /// The container exists but does not run.
    #[error("container {0:?} is not running")]
    ContainerNotRunning(String),
    /// CRI `Exec`/`Attach` failed.
    #[error("{}", .0.message())]
    Runtime(#[from] CriError),
    /// The runtime's streaming server could not be reached or refused.
    #[error("error connecting to the runtime's streaming server: {0}")]
    Stream(#[from] SpdyError),
}

impl ExecError {
    fn status_code(&self) -> StatusCode {
        match self {
            ExecError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ExecError::PodNotFound
            | ExecError::ContainerNotFound(_)
            | ExecError::ContainerNotRunning(_) => StatusCode::NOT_FOUND,
            ExecError::Runtime(e) => match e.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ExecError::Stream(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ExecError {
    fn into_response(self) -> Response {
        let code = self.status_code();
        let reason = match code {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            _ => "InternalError",
        };
        let status = meta::Status {
            code: Some(i32::from(code.as_u16())),
            message: Some(self.to_string()),
            reason: Some(reason.to_owned()),
            status: Some("Failure".to_owned()),
            ..meta::Status::default()
        };
        match serde_json::to_vec(&status) {
            Ok(body) => (code, [(CONTENT_TYPE, "application/json")], body).into_response(),
            Err(_) => (code, self.to_string()).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(bytes: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn query_flags_command_and_tty_rules() {
        let parsed = RemoteCommand::parse(
            "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=1&stderr=1&tty=true&container=app",
            Kind::Exec,
        )
        .expect("valid");
        assert_eq!(parsed.command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            parsed.flags,
            StreamFlags {
                stdin: true,
                stdout: true,
                // A terminal has no separate stderr.
                stderr: false,
                tty: true,
            }
        );

        // The apiserver's names for the kubelet URL.
        let parsed =
            RemoteCommand::parse("input=1&output=1&error=1", Kind::Attach).expect("attach");
        assert!(parsed.flags.stdin && parsed.flags.stdout && parsed.flags.stderr);
        assert!(parsed.command.is_empty());

        for bad in [
            "command=ls",                    // no stream
            "stdout=1",                      // exec without a command
            "command=ls&stdout=yes",         // not a bool
            "command=ls&stdout=1&tty=maybe", // not a bool
        ] {
            let err = RemoteCommand::parse(bad, Kind::Exec).expect_err(bad);
            assert_eq!(err.status_code(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn streams_follow_the_flags_in_client_go_order() {
        let tty = StreamFlags {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(
            tty.stream_types(),
            [
                StreamType::Error,
                StreamType::Stdin,
                StreamType::Stdout,
                StreamType::Resize
            ]
        );
        let plain = StreamFlags {
            stdout: true,
            stderr: true,
            ..StreamFlags::default()
        };
        let kinds = plain.stream_types();
        assert_eq!(
            kinds,
            [StreamType::Error, StreamType::Stdout, StreamType::Stderr]
        );
        let streams = RuntimeStreams::new(&kinds, &[1, 3, 5]);
        assert_eq!(
            (
                streams.error,
                streams.stdin,
                streams.stdout,
                streams.stderr,
                streams.resize
            ),
            (Some(1), None, Some(3), Some(5), None)
        );
        assert_eq!(plain.first_output_channel(), STDOUT);
        let stdin_only = StreamFlags {
            stdin: true,
            ..StreamFlags::default()
        };
        assert_eq!(stdin_only.first_output_channel(), ERROR);
    }

    #[test]
    fn binary_frames_carry_the_channel_first() {
        assert_eq!(Protocol::V5.encode(STDOUT, b"hi"), binary(&[1, b'h', b'i']));
        assert_eq!(Protocol::V4.encode(ERROR, b""), binary(&[3]));
        assert_eq!(
            Protocol::V5.decode(binary(&[0, b'x'])).expect("stdin"),
            Some(Inbound::Data {
                channel: STDIN,
                data: Bytes::from_static(b"x"),
            })
        );
        assert_eq!(
            Protocol::V4
                .decode(binary(br#"{"Width":80,"Height":24}"#))
                .expect("resize"),
            Some(Inbound::Data {
                channel: b'{',
                data: Bytes::from_static(br#""Width":80,"Height":24}"#),
            }),
            "the channel is the first byte, whatever it is"
        );
        assert_eq!(Protocol::V5.decode(binary(&[])).expect("empty"), None);
        assert_eq!(
            Protocol::V5
                .decode(Message::Ping(Bytes::new()))
                .expect("ping"),
            None
        );
    }

    #[test]
    fn only_v5_closes_channels() {
        assert_eq!(
            Protocol::V5.decode(binary(&[CLOSE, STDIN])).expect("close"),
            Some(Inbound::Close { channel: STDIN })
        );
        assert!(matches!(
            Protocol::V5.decode(binary(&[CLOSE])),
            Err(FrameError::BadClose(1))
        ));
        assert!(matches!(
            Protocol::V5.decode(binary(&[CLOSE, 0, 0])),
            Err(FrameError::BadClose(3))
        ));
        // Before v5, 255 is just a channel number nobody uses.
        assert_eq!(
            Protocol::V4.decode(binary(&[CLOSE, STDIN])).expect("data"),
            Some(Inbound::Data {
                channel: CLOSE,
                data: Bytes::from_static(&[STDIN]),
            })
        );
    }

    #[test]
    fn base64_frames_use_an_ascii_channel_digit() {
        let Message::Text(text) = Protocol::V4Base64.encode(STDERR, b"oops") else {
            panic!("base64 protocols send text");
        };
        assert_eq!(text.as_str(), "2b29wcw==");
        assert_eq!(
            Protocol::V1Base64
                .decode(Message::Text("0aGkK".into()))
                .expect("stdin"),
            Some(Inbound::Data {
                channel: STDIN,
                data: Bytes::from_static(b"hi\n"),
            })
        );
        assert!(matches!(
            Protocol::V4Base64.decode(Message::Text("xaGk=".into())),
            Err(FrameError::BadChannel(b'x'))
        ));
        assert!(matches!(
            Protocol::V4Base64.decode(Message::Text("0!!".into())),
            Err(FrameError::Base64(_))
        ));
    }

    #[test]
    fn protocol_names_round_trip_in_preference_order() {
        assert_eq!(Protocol::ALL[0], Protocol::V5);
        for protocol in Protocol::ALL {
            assert_eq!(Protocol::from_name(protocol.name()), Some(protocol));
        }
        assert_eq!(Protocol::from_name("v3.channel.k8s.io"), None);
    }

    #[test]
    fn success_status_is_upstreams_json() {
        let message = Protocol::V5
            .status_message(&ExecStatus::success())
            .expect("v5 reports success");
        assert_eq!(
            message,
            binary(b"\x03{\"metadata\":{},\"status\":\"Success\"}")
        );
        // The original protocol says nothing on success.
        assert_eq!(Protocol::V1.status_message(&ExecStatus::success()), None);
    }

    #[test]
    fn runtime_exit_status_is_passed_on() {
        let raw = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        let status = ExecStatus::from_runtime(raw);
        assert!(!status.is_success());
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        let cause = &status.details.as_ref().expect("details").causes[0];
        assert_eq!(cause.reason.as_deref(), Some("ExitCode"));
        assert_eq!(cause.message.as_deref(), Some("3"));
        // Re-encoded byte for byte as the runtime (and upstream) wrote it.
        assert_eq!(
            Protocol::V4.status_message(&status),
            Some(Protocol::V4.encode(ERROR, raw))
        );
        // v1 clients get the message text.
        let Some(Message::Binary(v1)) = Protocol::V1.status_message(&status) else {
            panic!("v1 reports failures");
        };
        assert!(v1.starts_with(b"\x03command terminated with non-zero exit code"));

        assert!(ExecStatus::from_runtime(br#"{"metadata":{},"status":"Success"}"#).is_success());
    }

    #[test]
    fn missing_or_garbled_runtime_status_is_an_internal_error() {
        let missing = ExecStatus::from_runtime(b"");
        assert_eq!(missing.reason.as_deref(), Some("InternalError"));
        assert_eq!(missing.code, Some(500));
        let text = ExecStatus::from_runtime(b"error executing command: boom\n");
        assert_eq!(
            text.message.as_deref(),
            Some("Internal error occurred: error executing command: boom")
        );
        assert_eq!(
            serde_json::to_value(&text).expect("json")["details"]["causes"][0]["message"],
            "error executing command: boom"
        );
    }

    #[test]
    fn errors_map_to_http_statuses_with_a_status_body() {
        let cases = [
            (
                ExecError::ContainerNotFound("app".into()),
                404,
                "container not found (\"app\")",
            ),
            (ExecError::PodNotFound, 404, "pod does not exist"),
            (
                ExecError::Runtime(CriError::rpc(
                    skiff_cri::Op::Exec,
                    "c1",
                    tonic::Status::failed_precondition("container is not running"),
                )),
                500,
                "container is not running",
            ),
        ];
        for (error, code, message) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), code);
            assert_eq!(
                response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(&b"application/json"[..])
            );
            let body =
                futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                    .expect("body");
            let status: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["status"], "Failure");
            assert_eq!(status["code"], code);
            assert_eq!(status["message"], message);
        }
    }
}
