//! A minimal SPDY/3.1 client for the runtime's streaming server.
//!
//! containerd 1.6 serves the URLs that CRI `Exec` and `Attach` return with
//! the kubelet's streaming server: SPDY, or WebSocket `v4.channel.k8s.io`.
//! WebSocket v4 has no way to end stdin while output keeps flowing (that is
//! why v5 added channel 255), but a SPDY stream can be half-closed: a data
//! frame with the FIN flag ends the runtime's stdin reader, and containerd
//! then closes the process's stdin (it attaches exec IO with `StdinOnce`).
//! Upstream's apiserver translates v5 WebSocket to SPDY for the same reason.
//!
//! Only what the remote-command protocol needs is here: the HTTP upgrade,
//! `SYN_STREAM` with a `streamtype` header per stream, data frames (with FIN
//! for stdin), answers to `PING`, and parsing of whatever the server sends.
//! The server (Go's spdystream) enforces no flow-control windows, so none are
//! kept. Header blocks must be zlib streams; ours do not use SPDY's preset
//! dictionary, which the zlib format allows, and the server's header blocks
//! are never decompressed because nothing in them is needed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{Decoder, FramedRead};

/// The remote-command protocol version we ask the runtime for. containerd
/// 1.6 also offers v1–v3; v4 is the one with JSON exit statuses and resize.
pub(super) const REMOTE_COMMAND_V4: &str = "v4.channel.k8s.io";

/// How long dialling the runtime and its upgrade response may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest HTTP response head accepted from the runtime.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Largest frame payload accepted: the 24-bit length field's maximum is
/// 16 MiB, and the runtime sends at most tens of KiB at a time.
const MAX_FRAME_PAYLOAD: usize = 1 << 20;

/// Largest payload we put in one data frame (the runtime copies stdin with
/// 32 KiB buffers).
const MAX_DATA_CHUNK: usize = 32 * 1024;

const SPDY_VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;

/// Why talking SPDY to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SpdyError {
    /// The URL is not `http://host:port/path`. TLS streaming is not enabled
    /// in the runtime configurations the agent uses.
    #[error("unsupported streaming URL {0:?}")]
    Url(String),
    /// Connecting, writing or reading failed.
    #[error("streaming connection to the runtime failed")]
    Io(#[from] std::io::Error),
    /// The runtime did not answer the upgrade within the timeout.
    #[error("the runtime did not answer the streaming upgrade within {0:?}")]
    Timeout(Duration),
    /// The runtime refused the upgrade.
    #[error("the runtime refused the streaming upgrade: {0}")]
    Refused(String),
    /// The runtime sent something that is not SPDY/3.
    #[error("malformed SPDY frame from the runtime: {0}")]
    Protocol(&'static str),
    /// zlib failed to compress a header block.
    #[error("compressing SPDY headers failed")]
    Compress(#[from] flate2::CompressError),
}

/// One stream of the remote-command protocol, named by its `streamtype`
/// header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamType {
    /// Status JSON from the runtime when the command ends.
    Error,
    /// Input to the process.
    Stdin,
    /// The process's stdout (all output, with a tty).
    Stdout,
    /// The process's stderr (never with a tty).
    Stderr,
    /// Terminal size changes, as JSON `{"Width":..,"Height":..}`.
    Resize,
}

impl StreamType {
    fn header_value(self) -> &'static str {
        match self {
            StreamType::Error => "error",
            StreamType::Stdin => "stdin",
            StreamType::Stdout => "stdout",
            StreamType::Stderr => "stderr",
            StreamType::Resize => "resize",
        }
    }
}

/// A frame from the runtime, reduced to what the client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    /// Payload of a stream; `fin` ends the stream from the runtime's side.
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// The runtime aborted one stream.
    Reset { stream_id: u32 },
    /// A ping to echo back.
    Ping { id: u32 },
    /// The runtime is closing the session; nothing follows.
    GoAway,
    /// Anything else (replies, headers, settings, window updates).
    Other,
}

/// Splits the byte stream from the runtime into [`Frame`]s.
#[derive(Debug, Default)]
pub(super) struct FrameDecoder;

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = SpdyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if src.len() < 8 {
            return Ok(None);
        }
        let length = usize::from(src[5]) << 16 | usize::from(src[6]) << 8 | usize::from(src[7]);
        if length > MAX_FRAME_PAYLOAD {
            return Err(SpdyError::Protocol("frame too large"));
        }
        if src.len() < 8 + length {
            src.reserve(8 + length - src.len());
            return Ok(None);
        }
        let mut head = src.split_to(8);
        let payload = src.split_to(length).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        // Truncation is intended: the version is the low 15 bits of the
        // first half, the type the second half.
        let version = (first >> 16) as u16 & 0x7fff;
        let kind = first as u16;
        if version != SPDY_VERSION {
            return Err(SpdyError::Protocol("not SPDY version 3"));
        }
        let word = |at: usize| -> Result<u32, SpdyError> {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(SpdyError::Protocol("control frame too short"))
        };
        Ok(Some(match kind {
            TYPE_RST_STREAM => Frame::Reset {
                stream_id: word(0)? & 0x7fff_ffff,
            },
            TYPE_PING => Frame::Ping { id: word(0)? },
            TYPE_GOAWAY => Frame::GoAway,
            TYPE_SYN_REPLY | TYPE_HEADERS if flags & FLAG_FIN != 0 => Frame::Data {
                stream_id: word(0)? & 0x7fff_ffff,
                fin: true,
                data: Bytes::new(),
            },
            _ => Frame::Other,
        }))
    }
}

/// The write side of a session: frames to the runtime.
pub(super) struct Writer {
    io: OwnedWriteHalf,
    /// One zlib stream for all header blocks of the session, as SPDY asks.
    headers: Compress,
    next_stream_id: u32,
}

impl Writer {
    fn new(io: OwnedWriteHalf) -> Self {
        Self {
            io,
            headers: Compress::new(Compression::default(), true),
            // Client-initiated streams have odd ids.
            next_stream_id: 1,
        }
    }

    /// Opens a stream of `kind` and returns its id.
    async fn open(&mut self, kind: StreamType) -> Result<u32, SpdyError> {
        let id = self.next_stream_id;
        self.next_stream_id += 2;
        let block = compress_headers(&mut self.headers, &[("streamtype", kind.header_value())])?;
        let mut frame = BytesMut::with_capacity(18 + block.len());
        put_control_head(&mut frame, TYPE_SYN_STREAM, 0, 10 + block.len())?;
        frame.put_u32(id);
        frame.put_u32(0); // associated-to stream
        frame.put_u16(0); // priority 0 (highest), unused bits, slot 0
        frame.put_slice(&block);
        self.io.write_all(&frame).await?;
        Ok(id)
    }

    /// Sends `data` on a stream, split into frames of bounded size; `fin`
    /// half-closes the stream after it (an empty `data` with `fin` only
    /// closes it).
    pub(super) async fn data(
        &mut self,
        stream_id: u32,
        data: &[u8],
        fin: bool,
    ) -> Result<(), SpdyError> {
        let mut chunks = data.chunks(MAX_DATA_CHUNK).peekable();
        if chunks.peek().is_none() {
            return self
                .io
                .write_all(&data_frame(stream_id, &[], fin))
                .await
                .map_err(Into::into);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            self.io
                .write_all(&data_frame(stream_id, chunk, fin && last))
                .await?;
        }
        Ok(())
    }

    /// Echoes a ping from the runtime.
    pub(super) async fn pong(&mut self, id: u32) -> Result<(), SpdyError> {
        let mut frame = BytesMut::with_capacity(12);
        put_control_head(&mut frame, TYPE_PING, 0, 4)?;
        frame.put_u32(id);
        self.io.write_all(&frame).await.map_err(Into::into)
    }

    /// Closes our direction of the TCP connection; the runtime then tears
    /// the session down (and with it the process's stdin).
    pub(super) async fn shutdown(&mut self) -> Result<(), SpdyError> {
        self.io.shutdown().await.map_err(Into::into)
    }
}

/// The read side of a session: frames from the runtime.
pub(super) type Reader = FramedRead<OwnedReadHalf, FrameDecoder>;

/// An established session: the upgraded connection and the ids of the
/// streams opened on it, in the order of `kinds` given to [`connect`].
pub(super) struct Session {
    pub(super) reader: Reader,
    pub(super) writer: Writer,
    pub(super) stream_ids: Vec<u32>,
}

/// Connects to a streaming URL from CRI `Exec`/`Attach`, upgrades to SPDY
/// with the v4 remote-command protocol and opens one stream per `kinds`
/// entry. The streams must match the flags of the CRI request, or the
/// runtime waits for the missing ones until its stream-creation timeout.
pub(super) async fn connect(url: &str, kinds: &[StreamType]) -> Result<Session, SpdyError> {
    let (authority, path) = split_url(url)?;
    let (stream, leftover) = tokio::time::timeout(CONNECT_TIMEOUT, upgrade(authority, path))
        .await
        .map_err(|_| SpdyError::Timeout(CONNECT_TIMEOUT))??;
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, FrameDecoder);
    reader.read_buffer_mut().extend_from_slice(&leftover);
    let mut writer = Writer::new(write);
    let mut stream_ids = Vec::with_capacity(kinds.len());
    for kind in kinds {
        stream_ids.push(writer.open(*kind).await?);
    }
    Ok(Session {
        reader,
        writer,
        stream_ids,
    })
}

/// Sends the upgrade request and reads the response head. Returns the
/// connection and any bytes read past the head (the first frames).
async fn upgrade(authority: &str, path: &str) -> Result<(TcpStream, Vec<u8>), SpdyError> {
    let mut stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
         Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {REMOTE_COMMAND_V4}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(SpdyError::Refused("response head too large".into()));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(SpdyError::Refused(
                "connection closed before a response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if status_line.split(' ').nth(1) != Some("101") {
        // The body (if any arrived) says why; it is plain text upstream.
        let body = String::from_utf8_lossy(&buf[head_end..]);
        return Err(SpdyError::Refused(
            format!("{} {}", status_line.trim(), body.trim())
                .trim()
                .to_owned(),
        ));
    }
    let negotiated = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-stream-protocol-version")
            .then(|| value.trim())
    });
    if negotiated != Some(REMOTE_COMMAND_V4) {
        return Err(SpdyError::Refused(format!(
            "the runtime negotiated protocol {negotiated:?}, not {REMOTE_COMMAND_V4}"
        )));
    }
    Ok((stream, buf[head_end..].to_vec()))
}

/// Splits `http://host:port/path` into `host:port` and `/path`.
fn split_url(url: &str) -> Result<(&str, &str), SpdyError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| SpdyError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(SpdyError::Url(url.to_owned()));
    }
    Ok((authority, path))
}

fn put_control_head(
    frame: &mut BytesMut,
    kind: u16,
    flags: u8,
    length: usize,
) -> Result<(), SpdyError> {
    if length >= 1 << 24 {
        return Err(SpdyError::Protocol("frame too large"));
    }
    frame.put_u16(0x8000 | SPDY_VERSION);
    frame.put_u16(kind);
    frame.put_u8(flags);
    frame.put_uint(length as u64, 3);
    Ok(())
}

fn data_frame(stream_id: u32, data: &[u8], fin: bool) -> BytesMut {
    let mut frame = BytesMut::with_capacity(8 + data.len());
    frame.put_u32(stream_id & 0x7fff_ffff);
    frame.put_u8(if fin { FLAG_FIN } else { 0 });
    // `data` is at most MAX_DATA_CHUNK long, well under the 24-bit limit.
    frame.put_uint(data.len() as u64, 3);
    frame.put_slice(data);
    frame
}

/// Encodes a SPDY/3 name/value block and compresses it with the session's
/// zlib stream, ending with a sync flush so the server can decode it alone.
fn compress_headers(zlib: &mut Compress, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
    let mut plain = BytesMut::new();
    plain.put_u32(headers.len() as u32);
    for (name, value) in headers {
        plain.put_u32(name.len() as u32);
        plain.put_slice(name.as_bytes());
        plain.put_u32(value.len() as u32);
        plain.put_slice(value.as_bytes());
    }
    let mut out = Vec::with_capacity(plain.len() + 64);
    let mut input: &[u8] = &plain;
    loop {
        let before = zlib.total_in();
        zlib.compress_vec(input, &mut out, FlushCompress::Sync)?;
        let consumed = usize::try_from(zlib.total_in() - before)
            .map_err(|_| SpdyError::Protocol("header block too large"))?;
        input = &input[consumed..];
        // Done when all input is in and the flush did not run out of room.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(256);
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};
    use futures::StreamExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Reads frames until the runtime closes the session.
    async fn drain(reader: &mut Reader) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(Ok(frame)) = reader.next().await {
            frames.push(frame);
        }
        frames
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = FrameDecoder.decode(&mut buf).expect("valid frames") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "bytes left over: {buf:?}");
        frames
    }

    #[test]
    fn data_frames_round_trip_with_fin() {
        let mut wire = data_frame(3, b"hello", false);
        wire.extend_from_slice(&data_frame(3, b"", true));
        assert_eq!(&wire[..8], &[0, 0, 0, 3, 0, 0, 0, 5]);
        assert_eq!(
            decode_all(&wire),
            [
                Frame::Data {
                    stream_id: 3,
                    fin: false,
                    data: Bytes::from_static(b"hello"),
                },
                Frame::Data {
                    stream_id: 3,
                    fin: true,
                    data: Bytes::new(),
                },
            ]
        );
    }

    #[test]
    fn control_frames_are_recognised() {
        let mut wire = BytesMut::new();
        put_control_head(&mut wire, TYPE_PING, 0, 4).expect("head");
        wire.put_u32(2);
        put_control_head(&mut wire, TYPE_RST_STREAM, 0, 8).expect("head");
        wire.put_u32(5);
        wire.put_u32(5); // CANCEL
        put_control_head(&mut wire, TYPE_SYN_REPLY, 0, 6).expect("head");
        wire.put_u32(1);
        wire.put_u16(0);
        put_control_head(&mut wire, TYPE_GOAWAY, 0, 8).expect("head");
        wire.put_u64(0);
        assert_eq!(
            decode_all(&wire),
            [
                Frame::Ping { id: 2 },
                Frame::Reset { stream_id: 5 },
                Frame::Other,
                Frame::GoAway
            ]
        );
    }

    #[test]
    fn partial_frames_wait_for_more_bytes_and_bad_ones_fail() {
        let wire = data_frame(1, b"abcdef", false);
        let mut buf = BytesMut::from(&wire[..10]);
        assert_eq!(FrameDecoder.decode(&mut buf).expect("partial"), None);
        buf.extend_from_slice(&wire[10..]);
        assert!(FrameDecoder.decode(&mut buf).expect("whole").is_some());

        let mut v2 = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            FrameDecoder.decode(&mut v2),
            Err(SpdyError::Protocol(_))
        ));
        let mut short_ping = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 0][..]);
        assert!(FrameDecoder.decode(&mut short_ping).is_err());
    }

    #[test]
    fn header_blocks_share_one_zlib_stream() {
        let mut zlib = Compress::new(Compression::default(), true);
        let first = compress_headers(&mut zlib, &[("streamtype", "error")]).expect("first");
        let second = compress_headers(&mut zlib, &[("streamtype", "stdin")]).expect("second");
        // A zlib header starts the first block only.
        assert_eq!(first[0] & 0x0f, 8, "deflate method");
        assert_eq!((u16::from(first[0]) << 8 | u16::from(first[1])) % 31, 0);

        let mut inflate = Decompress::new(true);
        let mut blocks = Vec::new();
        for block in [first, second] {
            let mut out = Vec::with_capacity(256);
            inflate
                .decompress_vec(&block, &mut out, FlushDecompress::Sync)
                .expect("inflate");
            blocks.push(out);
        }
        let mut expected = BytesMut::new();
        expected.put_u32(1);
        expected.put_u32(10);
        expected.put_slice(b"streamtype");
        expected.put_u32(5);
        expected.put_slice(b"error");
        assert_eq!(blocks[0], expected);
        assert!(blocks[1].ends_with(b"stdin"));
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert_eq!(
            split_url("http://127.0.0.1:4242/exec/AbC").expect("url"),
            ("127.0.0.1:4242", "/exec/AbC")
        );
        assert_eq!(
            split_url("http://[::1]:80").expect("url"),
            ("[::1]:80", "/")
        );
        for bad in ["https://127.0.0.1/exec/x", "127.0.0.1/exec", "http:///x"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    /// A server that checks the upgrade, reads the SYN_STREAMs and answers
    /// with data, a ping and GOAWAY, as containerd's does.
    #[tokio::test]
    async fn connect_upgrades_opens_streams_and_reads_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(conn.read_u8().await.expect("request"));
            }
            let head = String::from_utf8(head).expect("utf-8");
            assert!(head.starts_with("POST /exec/token HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("Upgrade: SPDY/3.1\r\n"));
            assert!(head.contains("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
            // The first frame rides in the same write as the response head.
            let mut reply = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
                .to_vec();
            reply.extend_from_slice(&data_frame(3, b"out", false));
            conn.write_all(&reply).await.expect("reply");
            // Two SYN_STREAMs (ids 1 and 3), then stdin data with FIN.
            let mut streams = Vec::new();
            let mut zlib = Decompress::new(true);
            for _ in 0..2 {
                let mut head = [0u8; 8];
                conn.read_exact(&mut head).await.expect("frame head");
                assert_eq!(&head[..4], &[0x80, 3, 0, 1]);
                let len = usize::from(head[6]) << 8 | usize::from(head[7]);
                let mut body = vec![0u8; len];
                conn.read_exact(&mut body).await.expect("frame body");
                let mut plain = Vec::with_capacity(128);
                zlib.decompress_vec(&body[10..], &mut plain, FlushDecompress::Sync)
                    .expect("inflate");
                streams.push((body[3], String::from_utf8_lossy(&plain[22..]).into_owned()));
            }
            assert_eq!(streams, [(1, "error".to_owned()), (3, "stdin".to_owned())]);
            let mut frame = [0u8; 10];
            conn.read_exact(&mut frame).await.expect("stdin frame");
            assert_eq!(frame, [0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']);
            let mut tail = BytesMut::new();
            put_control_head(&mut tail, TYPE_PING, 0, 4).expect("head");
            tail.put_u32(2);
            tail.extend_from_slice(&data_frame(1, b"{}", false));
            put_control_head(&mut tail, TYPE_GOAWAY, 0, 8).expect("head");
            tail.put_u64(0);
            conn.write_all(&tail).await.expect("tail");
            let mut pong = [0u8; 12];
            conn.read_exact(&mut pong).await.expect("pong");
            assert_eq!(pong, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2]);
        });

        let url = format!("http://{addr}/exec/token");
        let mut session = connect(&url, &[StreamType::Error, StreamType::Stdin])
            .await
            .expect("connect");
        assert_eq!(session.stream_ids, [1, 3]);
        session.writer.data(3, b"hi", true).await.expect("stdin");
        let first = session.reader.next().await.expect("frame").expect("ok");
        assert_eq!(
            first,
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"out"),
            }
        );
        assert_eq!(
            session.reader.next().await.expect("frame").expect("ok"),
            Frame::Ping { id: 2 }
        );
        session.writer.pong(2).await.expect("pong");
        let rest = drain(&mut session.reader).await;
        assert_eq!(rest.last(), Some(&Frame::GoAway));
        server.await.expect("server checks");
    }

    #[tokio::test]
    async fn refused_upgrade_reports_the_runtime_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\ninvalid session")
                .await;
        });
        let err = connect(&format!("http://{addr}/exec/x"), &[StreamType::Error])
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&err, SpdyError::Refused(why) if why.contains("404") && why.contains("invalid session")),
            "{err:?}"
        );
    }
}
