//! The server half of SPDY/3.1 as kubectl's port-forward speaks it.
//!
//! Only what port-forward needs: parsing frames, decompressing the
//! SYN_STREAM header blocks (zlib with SPDY/3's preset dictionary, one
//! stream per session), and building SYN_REPLY, DATA, PING and GOAWAY
//! frames. Flow control is not enforced: kubectl's client (moby/spdystream)
//! neither sends nor honours WINDOW_UPDATE limits.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const VERSION: u16 = 3;
/// FLAG_FIN on DATA, SYN_STREAM and SYN_REPLY frames.
pub const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// Frames larger than this are refused (kubectl sends at most 32 KiB).
const MAX_PAYLOAD: usize = 1 << 20;
/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// A malformed or unsupported frame; the session ends.
#[derive(Debug, thiserror::Error)]
#[error("SPDY protocol error: {0}")]
pub struct ProtocolError(pub &'static str);

/// SPDY/3's zlib dictionary for header blocks (draft-mbelshe-httpbis-spdy-00,
/// section 2.6.10.1): length-prefixed header words, then a run of common
/// values.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412\
        413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
        Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal \
        Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug \
        Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,\
        image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
        text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=\
        iso-8859-1,utf-,*,enq=0.";
    let mut out = Vec::with_capacity(1423);
    for word in WORDS {
        out.extend_from_slice(&u32::try_from(word.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(TAIL.as_bytes());
    out
});

/// A frame from the client, reduced to what port-forward acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A new stream with its headers.
    SynStream {
        /// The stream id (odd: client-initiated).
        id: u32,
        /// Header names (lower case) to values.
        headers: HashMap<String, String>,
        /// The client will send nothing on it.
        fin: bool,
    },
    /// Payload on a stream; `fin` half-closes it.
    Data {
        /// The stream id.
        id: u32,
        /// The payload.
        data: Bytes,
        /// The client's last frame on this stream.
        fin: bool,
    },
    /// The client aborted a stream.
    Reset {
        /// The stream id.
        id: u32,
    },
    /// A ping to echo.
    Ping {
        /// Its id.
        id: u32,
    },
    /// The client is closing the session.
    GoAway,
    /// Anything else (SETTINGS, WINDOW_UPDATE, HEADERS...).
    Ignored,
}

/// Parses frames from the client's byte stream.
pub struct Decoder {
    headers: Decompress,
    dictionary_set: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            headers: Decompress::new(true),
            dictionary_set: false,
        }
    }
}

impl Decoder {
    /// The next whole frame in `buf` (consumed), or `None` if more bytes are
    /// needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
        if length > MAX_PAYLOAD {
            return Err(ProtocolError("frame too large"));
        }
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let first = buf.get_u32();
        let flags = buf.get_u8();
        buf.advance(3);
        let mut payload = buf.split_to(length).freeze();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: first & 0x7fff_ffff,
                data: payload,
                fin,
            }));
        }
        let version = u16::try_from((first >> 16) & 0x7fff).unwrap_or(0);
        if version != VERSION {
            return Err(ProtocolError("not SPDY/3"));
        }
        let kind = u16::try_from(first & 0xffff).unwrap_or(0);
        let need = |payload: &Bytes, n: usize| {
            if payload.len() < n {
                Err(ProtocolError("control frame too short"))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(&payload, 10)?;
                let id = payload.get_u32() & 0x7fff_ffff;
                payload.advance(6); // associated stream, priority, slot
                let headers = self.header_block(&payload)?;
                Frame::SynStream { id, headers, fin }
            }
            RST_STREAM => {
                need(&payload, 4)?;
                Frame::Reset {
                    id: payload.get_u32() & 0x7fff_ffff,
                }
            }
            PING => {
                need(&payload, 4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Ignored,
        }))
    }

    fn header_block(
        &mut self,
        compressed: &[u8],
    ) -> Result<HashMap<String, String>, ProtocolError> {
        let mut plain = Vec::with_capacity(256);
        let mut input = compressed;
        loop {
            let before_in = self.headers.total_in();
            let result = self
                .headers
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.headers
                        .set_dictionary(&DICTIONARY)
                        .map_err(|_| ProtocolError("bad header dictionary"))?;
                    self.dictionary_set = true;
                }
                Err(_) => return Err(ProtocolError("corrupt header block")),
            }
            let used = usize::try_from(self.headers.total_in() - before_in).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(ProtocolError("header block too large"));
            }
            if input.is_empty() && plain.len() < plain.capacity() {
                break;
            }
            plain.reserve(256);
        }
        parse_header_block(&plain)
    }
}

fn parse_header_block(block: &[u8]) -> Result<HashMap<String, String>, ProtocolError> {
    let mut cursor = Cursor(block);
    let count = cursor.u32()?;
    let mut headers = HashMap::new();
    for _ in 0..count.min(1024) {
        let len = cursor.u32()?;
        let name = String::from_utf8_lossy(cursor.take(len)?).to_ascii_lowercase();
        let len = cursor.u32()?;
        let value = String::from_utf8_lossy(cursor.take(len)?).into_owned();
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Reads a header block's length-prefixed fields.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError("truncated header block"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

/// Builds frames for the client.
pub struct Encoder {
    headers: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut headers = Compress::new(Compression::default(), true);
        // Setting the dictionary cannot fail on a fresh stream.
        let _ = headers.set_dictionary(&DICTIONARY);
        Self { headers }
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u16(0x8000 | VERSION);
    frame.put_u16(kind);
    frame.put_u8(flags);
    frame.put_uint(payload.len() as u64, 3);
    frame.put_slice(payload);
    frame.freeze()
}

impl Encoder {
    /// A SYN_REPLY accepting stream `id`, with no headers.
    pub fn syn_reply(&mut self, id: u32) -> Bytes {
        let block = self.compress(&0u32.to_be_bytes());
        let mut payload = BytesMut::with_capacity(4 + block.len());
        payload.put_u32(id & 0x7fff_ffff);
        payload.put_slice(&block);
        control(SYN_REPLY, 0, &payload)
    }

    fn compress(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = plain;
        loop {
            let before = self.headers.total_in();
            if self
                .headers
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                return out;
            }
            let used = usize::try_from(self.headers.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(64);
        }
    }
}

/// A DATA frame.
pub fn data(id: u32, payload: &[u8], fin: bool) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u32(id & 0x7fff_ffff);
    frame.put_u8(if fin { FLAG_FIN } else { 0 });
    frame.put_uint(payload.len() as u64, 3);
    frame.put_slice(payload);
    frame.freeze()
}

/// The answer to a PING.
pub fn ping(id: u32) -> Bytes {
    control(PING, 0, &id.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN_STREAM as a client builds it: headers compressed with the
    /// dictionary.
    fn syn_stream(zlib: &mut Compress, id: u32, headers: &[(&str, &str)]) -> Bytes {
        let mut plain = BytesMut::new();
        plain.put_u32(headers.len() as u32);
        for (k, v) in headers {
            plain.put_u32(k.len() as u32);
            plain.put_slice(k.as_bytes());
            plain.put_u32(v.len() as u32);
            plain.put_slice(v.as_bytes());
        }
        let mut block = Vec::with_capacity(1024);
        zlib.compress_vec(&plain, &mut block, FlushCompress::Sync)
            .expect("compress");
        let mut payload = BytesMut::new();
        payload.put_u32(id);
        payload.put_u32(0);
        payload.put_u16(0);
        payload.put_slice(&block);
        control(SYN_STREAM, 0, &payload)
    }

    #[test]
    fn the_dictionary_has_the_specs_size() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }

    #[test]
    fn syn_streams_decode_across_one_zlib_session_and_split_reads() {
        let mut client = Compress::new(Compression::default(), true);
        client.set_dictionary(&DICTIONARY).expect("dictionary");
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&syn_stream(
            &mut client,
            1,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        ));
        wire.extend_from_slice(&syn_stream(
            &mut client,
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ));
        wire.extend_from_slice(&data(3, b"GET /", false));
        wire.extend_from_slice(&ping(7));

        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // Feed byte by byte: frames must wait for their whole length.
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut buf).expect("valid") {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 4, "{frames:?}");
        let Frame::SynStream { id, headers, .. } = &frames[0] else {
            panic!("{:?}", frames[0]);
        };
        assert_eq!(*id, 1);
        assert_eq!(headers["streamtype"], "error");
        assert_eq!(headers["requestid"], "0");
        let Frame::SynStream { id, headers, .. } = &frames[1] else {
            panic!("{:?}", frames[1]);
        };
        assert_eq!((*id, headers["streamtype"].as_str()), (3, "data"));
        assert_eq!(
            frames[2],
            Frame::Data {
                id: 3,
                data: Bytes::from_static(b"GET /"),
                fin: false
            }
        );
        assert_eq!(frames[3], Frame::Ping { id: 7 });
    }

    #[test]
    fn syn_replies_decompress_with_the_dictionary() {
        let mut encoder = Encoder::default();
        let mut client = Decompress::new(true);
        for id in [1, 3] {
            let reply = encoder.syn_reply(id);
            assert_eq!(&reply[..4], &[0x80, 0x03, 0x00, 0x02]);
            let mut block = &reply[12..];
            let mut plain = Vec::with_capacity(64);
            for _ in 0..4 {
                if block.is_empty() {
                    break;
                }
                let before = client.total_in();
                if let Err(e) = client.decompress_vec(block, &mut plain, FlushDecompress::Sync) {
                    assert!(e.needs_dictionary().is_some(), "{e}");
                    client.set_dictionary(&DICTIONARY).expect("dictionary");
                }
                let used = usize::try_from(client.total_in() - before).expect("size");
                block = &block[used..];
            }
            assert_eq!(plain, [0, 0, 0, 0], "an empty header block");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&[0x80, 0x02, 0, 1, 0, 0, 0, 0][..]);
        assert!(decoder.decode(&mut buf).is_err(), "SPDY/2 is refused");
        let mut buf = BytesMut::from(&[0x80, 0x03, 0, 1, 0, 0, 0, 2, 1, 2][..]);
        assert!(decoder.decode(&mut buf).is_err(), "short SYN_STREAM");
        let mut buf = BytesMut::from(&[0x80, 0x03, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(decoder.decode(&mut buf).is_err(), "oversized frame");
    }
}
