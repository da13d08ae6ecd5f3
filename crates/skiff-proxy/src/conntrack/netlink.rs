//! [`Conntrack`] over ctnetlink, the kernel's netlink interface to
//! connection tracking (`NETLINK_NETFILTER`, subsystem `CTNETLINK`).
//!
//! Listing is one dump request (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`) for
//! family `AF_INET`. It carries a `CTA_FILTER` asking the kernel for the one
//! protocol only (Linux 5.8 and later honour it, earlier ones ignore it; the
//! answer is filtered here again either way). Deleting sends one
//! `IPCTNL_MSG_CT_DELETE` per entry, naming its original tuple, zone and id,
//! in batches, each acknowledged; an entry that is already gone (`ENOENT`)
//! is not an error. The messages are a handful of fixed layouts, written and
//! read here by hand.
//!
//! A socket stays in the network namespace it was made in, so for a named
//! namespace it is made on a short-lived thread that enters the namespace
//! first.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, sockopt};

use super::{Conntrack, ConntrackError, Flow, Tuple};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const AF_INET: u8 = 2;
const NFNETLINK_V0: u8 = 0;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
/// `CTA_FILTER_FLAG(CTA_PROTO_NUM)`: match the original protocol number.
const FILTER_PROTO_NUM: u32 = 1 << 3;

/// The largest datagram the kernel sends a dump reader (it sizes them by the
/// reader's buffer, at most 32 KiB).
const RECEIVE_BUFFER: usize = 64 * 1024;
/// Deletions sent before their acknowledgements are read.
const DELETE_BATCH: usize = 128;
/// How long to wait for the kernel before giving up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel's connection tracking, in this network namespace or a named
/// one (`ip netns`).
#[derive(Debug, Clone, Default)]
pub struct NetlinkConntrack {
    netns: Option<String>,
}

impl NetlinkConntrack {
    /// Acts in the named network namespace, or in the caller's with `None`.
    pub fn new(netns: Option<String>) -> Self {
        Self { netns }
    }

    /// A ctnetlink socket in the chosen namespace.
    fn socket(&self) -> Result<OwnedFd, ConntrackError> {
        let Some(name) = &self.netns else {
            return open_socket();
        };
        let path = format!("/run/netns/{name}");
        let netns_error = |source| ConntrackError::Netns {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(netns_error)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| netns_error(e.into()))?;
                    open_socket()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(netns_error(io::Error::other(
                        "the namespace thread panicked",
                    )))
                })
        })
    }
}

fn socket_error(action: &'static str) -> impl Fn(rustix::io::Errno) -> ConntrackError {
    move |errno| ConntrackError::Socket {
        action,
        source: errno.into(),
    }
}

fn open_socket() -> Result<OwnedFd, ConntrackError> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::NETFILTER),
    )
    .map_err(socket_error("opening"))?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0)).map_err(socket_error("binding"))?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(TIMEOUT))
        .map_err(socket_error("setting a timeout"))?;
    Ok(fd)
}

fn send(fd: &OwnedFd, message: &[u8]) -> Result<(), ConntrackError> {
    rustix::net::sendto(
        fd,
        message,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )
    .map_err(socket_error("sending"))?;
    Ok(())
}

/// Receives one datagram into `buf`; returns its length.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, ConntrackError> {
    let (_, length) =
        rustix::net::recv(fd, &mut *buf, RecvFlags::TRUNC).map_err(socket_error("receiving"))?;
    if length > buf.len() {
        return Err(ConntrackError::Malformed(
            "a datagram larger than the buffer",
        ));
    }
    Ok(length)
}

impl Conntrack for NetlinkConntrack {
    fn flows(&self, protocol: u8) -> Result<Vec<Flow>, ConntrackError> {
        let fd = self.socket()?;
        let flows = match dump(&fd, 1, Some(protocol)) {
            // A kernel that knows the filter attribute but not this use of it.
            Err(ConntrackError::Refused { .. }) => dump(&fd, 2, None)?,
            other => other?,
        };
        Ok(flows
            .into_iter()
            .filter(|f| f.protocol == protocol)
            .collect())
    }

    fn delete(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let fd = self.socket()?;
        let mut deleted = 0;
        let mut buf = vec![0; RECEIVE_BUFFER];
        // Each request's sequence number; a batch's acknowledgements are
        // those from `first_seq` on.
        let mut seq: u32 = 0;
        for batch in flows.chunks(DELETE_BATCH) {
            let first_seq = seq.wrapping_add(1);
            let mut requests = Vec::new();
            for flow in batch {
                seq = seq.wrapping_add(1);
                requests.extend(delete_request(seq, flow));
            }
            send(&fd, &requests)?;
            let mut pending = batch.len();
            while pending > 0 {
                let length = receive(&fd, &mut buf)?;
                for message in messages(&buf[..length]) {
                    let message = message?;
                    if message.kind != NLMSG_ERROR
                        || message.seq.wrapping_sub(first_seq) as usize >= batch.len()
                    {
                        continue;
                    }
                    pending = pending.saturating_sub(1);
                    match error_code(message.payload)? {
                        0 => deleted += 1,
                        errno if errno == rustix::io::Errno::NOENT.raw_os_error() => {}
                        errno => {
                            return Err(ConntrackError::Refused {
                                request: "delete",
                                source: io::Error::from_raw_os_error(errno),
                            });
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// Dumps the IPv4 table (only `protocol`, if the kernel filters).
fn dump(fd: &OwnedFd, seq: u32, protocol: Option<u8>) -> Result<Vec<Flow>, ConntrackError> {
    send(fd, &dump_request(seq, protocol))?;
    let mut flows = Vec::new();
    let mut buf = vec![0; RECEIVE_BUFFER];
    loop {
        let length = receive(fd, &mut buf)?;
        for message in messages(&buf[..length]) {
            let message = message?;
            if message.seq != seq {
                continue;
            }
            match message.kind {
                NLMSG_DONE => return Ok(flows),
                NLMSG_ERROR => match error_code(message.payload)? {
                    0 => {}
                    errno => {
                        return Err(ConntrackError::Refused {
                            request: "list",
                            source: io::Error::from_raw_os_error(errno),
                        });
                    }
                },
                kind if kind == ctnetlink(IPCTNL_MSG_CT_NEW) => {
                    flows.extend(parse_flow(message.payload)?);
                }
                _ => {}
            }
        }
    }
}

/// The message type of a ctnetlink message.
fn ctnetlink(message: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | message
}

/// A netlink message: header, `nfgenmsg`, then `attributes`.
fn request(kind: u16, flags: u16, seq: u32, attributes: &Attributes) -> Vec<u8> {
    let length = NLMSG_HDRLEN + 4 + attributes.0.len();
    let mut out = Vec::with_capacity(length);
    out.extend((length as u32).to_ne_bytes());
    out.extend(ctnetlink(kind).to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend([AF_INET, NFNETLINK_V0, 0, 0]);
    out.extend(&attributes.0);
    out
}

/// The dump request, with a protocol filter when `protocol` is given.
fn dump_request(seq: u32, protocol: Option<u8>) -> Vec<u8> {
    let mut attributes = Attributes::default();
    if let Some(protocol) = protocol {
        attributes.nest(CTA_TUPLE_ORIG, |tuple| {
            tuple.nest(CTA_TUPLE_PROTO, |proto| {
                proto.put(CTA_PROTO_NUM, &[protocol]);
            });
        });
        attributes.nest(CTA_FILTER, |filter| {
            filter.put(CTA_FILTER_ORIG_FLAGS, &FILTER_PROTO_NUM.to_ne_bytes());
        });
    }
    request(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &attributes,
    )
}

/// The deletion of one entry, by its original tuple, zone and id.
fn delete_request(seq: u32, flow: &Flow) -> Vec<u8> {
    request(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &entry_attributes(flow, false),
    )
}

/// The attributes describing `flow`, as the kernel writes them in a dump
/// (`with_reply`) or as a deletion names it.
fn entry_attributes(flow: &Flow, with_reply: bool) -> Attributes {
    let mut attributes = Attributes::default();
    let mut tuple = |kind: u16, t: &Tuple| {
        attributes.nest(kind, |tuple| {
            tuple.nest(CTA_TUPLE_IP, |ip| {
                ip.put(CTA_IP_V4_SRC, &t.src.octets());
                ip.put(CTA_IP_V4_DST, &t.dst.octets());
            });
            tuple.nest(CTA_TUPLE_PROTO, |proto| {
                proto.put(CTA_PROTO_NUM, &[flow.protocol]);
                proto.put(CTA_PROTO_SRC_PORT, &t.src_port.to_be_bytes());
                proto.put(CTA_PROTO_DST_PORT, &t.dst_port.to_be_bytes());
            });
        });
    };
    tuple(CTA_TUPLE_ORIG, &flow.original);
    if with_reply {
        tuple(CTA_TUPLE_REPLY, &flow.reply);
    }
    if flow.zone != 0 {
        attributes.put(CTA_ZONE, &flow.zone.to_be_bytes());
    }
    if let Some(id) = flow.id {
        attributes.put(CTA_ID, &id.to_be_bytes());
    }
    attributes
}

/// Netlink attributes being written: type, length, payload, padding to 4.
#[derive(Debug, Default)]
struct Attributes(Vec<u8>);

impl Attributes {
    fn put(&mut self, kind: u16, payload: &[u8]) {
        self.header(kind, payload.len());
        self.0.extend(payload);
        self.pad();
    }

    fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attributes)) {
        let mut inner = Attributes::default();
        fill(&mut inner);
        self.header(kind | NLA_F_NESTED, inner.0.len());
        self.0.extend(inner.0);
    }

    fn header(&mut self, kind: u16, payload: usize) {
        self.0.extend(((4 + payload) as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
    }

    fn pad(&mut self) {
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }
}

/// One received netlink message.
struct Message<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one datagram.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ConntrackError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let header = (|| {
            let length = u32_at(buf, 0)? as usize;
            (NLMSG_HDRLEN..=buf.len()).contains(&length).then_some((
                length,
                u16_at(buf, 4)?,
                u32_at(buf, 8)?,
            ))
        })();
        let Some((length, kind, seq)) = header else {
            buf = &[];
            return Some(Err(ConntrackError::Malformed("a truncated message")));
        };
        let message = Message {
            kind,
            seq,
            payload: &buf[NLMSG_HDRLEN..length],
        };
        buf = buf.get(length.next_multiple_of(4)..).unwrap_or_default();
        Some(Ok(message))
    })
}

/// The (positive) error number of an `NLMSG_ERROR` payload, 0 for an
/// acknowledgement.
fn error_code(payload: &[u8]) -> Result<i32, ConntrackError> {
    let code = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or(ConntrackError::Malformed("a short error message"))?;
    Ok(code.saturating_neg())
}

/// The attributes of `buf` as `(type, payload)`.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ConntrackError>> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let length = u16_at(buf, 0).unwrap_or_default() as usize;
        let kind = u16_at(buf, 2).unwrap_or_default() & NLA_TYPE_MASK;
        let Some(payload) = buf.get(4..length.max(4)) else {
            buf = &[];
            return Some(Err(ConntrackError::Malformed("a truncated attribute")));
        };
        buf = buf.get(length.next_multiple_of(4)..).unwrap_or_default();
        Some(Ok((kind, payload)))
    })
}

/// The entry a `IPCTNL_MSG_CT_NEW` payload describes, if it is an IPv4
/// entry with ports.
fn parse_flow(payload: &[u8]) -> Result<Option<Flow>, ConntrackError> {
    let body = payload
        .get(4..)
        .ok_or(ConntrackError::Malformed("a message without nfgenmsg"))?;
    let (mut original, mut reply, mut zone, mut id) = (None, None, 0, None);
    for attribute in attributes(body) {
        let (kind, value) = attribute?;
        match kind {
            CTA_TUPLE_ORIG => original = parse_tuple(value)?,
            CTA_TUPLE_REPLY => reply = parse_tuple(value)?,
            CTA_ZONE => zone = value.try_into().map(u16::from_be_bytes).unwrap_or(0),
            CTA_ID => id = value.try_into().ok().map(u32::from_be_bytes),
            _ => {}
        }
    }
    Ok(match (original, reply) {
        (Some((protocol, original)), Some((_, reply))) => Some(Flow {
            protocol,
            original,
            reply,
            zone,
            id,
        }),
        _ => None,
    })
}

/// A `CTA_TUPLE_*` attribute: the protocol and the tuple, if IPv4 with ports.
fn parse_tuple(buf: &[u8]) -> Result<Option<(u8, Tuple)>, ConntrackError> {
    let (mut src, mut dst, mut protocol, mut src_port, mut dst_port) =
        (None, None, None, None, None);
    for attribute in attributes(buf) {
        let (kind, value) = attribute?;
        match kind {
            CTA_TUPLE_IP => {
                for attribute in attributes(value) {
                    let (kind, value) = attribute?;
                    let address = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from);
                    match kind {
                        CTA_IP_V4_SRC => src = address,
                        CTA_IP_V4_DST => dst = address,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for attribute in attributes(value) {
                    let (kind, value) = attribute?;
                    let port = <[u8; 2]>::try_from(value).ok().map(u16::from_be_bytes);
                    match kind {
                        CTA_PROTO_NUM => protocol = value.first().copied(),
                        CTA_PROTO_SRC_PORT => src_port = port,
                        CTA_PROTO_DST_PORT => dst_port = port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (protocol, src, dst, src_port, dst_port) {
        (Some(protocol), Some(src), Some(dst), Some(src_port), Some(dst_port)) => Some((
            protocol,
            Tuple {
                src,
                dst,
                src_port,
                dst_port,
            },
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            protocol: 17,
            original: Tuple {
                src: Ipv4Addr::new(10, 42, 0, 2),
                dst: Ipv4Addr::new(10, 43, 0, 10),
                src_port: 40000,
                dst_port: 53,
            },
            reply: Tuple {
                src: Ipv4Addr::new(10, 42, 1, 2),
                dst: Ipv4Addr::new(10, 42, 0, 2),
                src_port: 5353,
                dst_port: 40000,
            },
            zone: 0,
            id: Some(0xdead_beef),
        }
    }

    /// A dump datagram as the kernel writes it: entries, then `NLMSG_DONE`.
    fn datagram(seq: u32, flows: &[Flow]) -> Vec<u8> {
        let mut out = Vec::new();
        for flow in flows {
            let mut message = request(IPCTNL_MSG_CT_NEW, 0x2, seq, &entry_attributes(flow, true));
            // Something the parser skips: CTA_STATUS.
            message.extend([8, 0, 3, 0, 0, 0, 1, 0x8a]);
            let length = message.len() as u32;
            message[..4].copy_from_slice(&length.to_ne_bytes());
            out.extend(message);
        }
        let mut done = Vec::new();
        done.extend(20u32.to_ne_bytes());
        done.extend(NLMSG_DONE.to_ne_bytes());
        done.extend(0x2u16.to_ne_bytes());
        done.extend(seq.to_ne_bytes());
        done.extend(0u32.to_ne_bytes());
        done.extend(0i32.to_ne_bytes());
        out.extend(done);
        out
    }

    #[test]
    fn dumped_entries_parse_back_into_flows() {
        let mut zoned = flow();
        zoned.zone = 7;
        zoned.id = None;
        zoned.original.src_port = 1;
        let bytes = datagram(9, &[flow(), zoned]);
        let mut parsed = Vec::new();
        let mut done = false;
        for message in messages(&bytes) {
            let message = message.unwrap();
            assert_eq!(message.seq, 9);
            match message.kind {
                NLMSG_DONE => done = true,
                kind => {
                    assert_eq!(kind, 0x100);
                    parsed.extend(parse_flow(message.payload).unwrap());
                }
            }
        }
        assert!(done);
        assert_eq!(parsed, [flow(), zoned]);
    }

    #[test]
    fn an_entry_without_ports_is_skipped_and_garbage_is_an_error() {
        let mut attributes = Attributes::default();
        attributes.nest(CTA_TUPLE_ORIG, |t| {
            t.nest(CTA_TUPLE_PROTO, |p| p.put(CTA_PROTO_NUM, &[1]));
        });
        let message = request(IPCTNL_MSG_CT_NEW, 0, 1, &attributes);
        assert_eq!(parse_flow(&message[NLMSG_HDRLEN..]).unwrap(), None);
        // An attribute claiming more bytes than there are.
        assert!(parse_flow(&[2, 0, 0, 0, 200, 0, 1, 0x80, 0, 0]).is_err());
        // A message header claiming more bytes than there are.
        let mut short = message.clone();
        short.truncate(18);
        assert!(messages(&short).next().unwrap().is_err());
    }

    #[test]
    fn requests_have_the_ctnetlink_layout() {
        let dump = dump_request(5, Some(17));
        assert_eq!(u32_at(&dump, 0).unwrap() as usize, dump.len());
        assert_eq!(u16_at(&dump, 4), Some(0x101));
        assert_eq!(u16_at(&dump, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_at(&dump, 8), Some(5));
        assert_eq!(&dump[16..20], [AF_INET, 0, 0, 0]);
        let top: Vec<(u16, Vec<u8>)> = attributes(&dump[20..])
            .map(|a| a.map(|(k, v)| (k, v.to_vec())).unwrap())
            .collect();
        assert_eq!(
            top.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [CTA_TUPLE_ORIG, CTA_FILTER]
        );
        assert_eq!(top[1].1, [8, 0, 1, 0, 8, 0, 0, 0]);
        // Nested attributes carry NLA_F_NESTED (the kernel insists for
        // CTA_FILTER).
        assert_eq!(u16_at(&dump, 22), Some(CTA_TUPLE_ORIG | NLA_F_NESTED));
        assert_eq!(dump_request(5, None).len(), 20);

        let delete = delete_request(3, &flow());
        assert_eq!(u16_at(&delete, 4), Some(0x102));
        assert_eq!(u16_at(&delete, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        // The original tuple and the id, no reply tuple: it parses back to
        // the original direction only.
        let kinds: Vec<u16> = attributes(&delete[20..]).map(|a| a.unwrap().0).collect();
        assert_eq!(kinds, [CTA_TUPLE_ORIG, CTA_ID]);
        let (_, original) = attributes(&delete[20..]).next().unwrap().unwrap();
        assert_eq!(parse_tuple(original).unwrap(), Some((17, flow().original)));
    }

    #[test]
    fn error_messages_carry_negative_errnos() {
        assert_eq!(error_code(&(-2i32).to_ne_bytes()).unwrap(), 2);
        assert_eq!(error_code(&0i32.to_ne_bytes()).unwrap(), 0);
        assert!(error_code(&[0]).is_err());
    }
}
