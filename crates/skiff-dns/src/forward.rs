//! Forwarding names that are not the cluster's to upstream nameservers.
//!
//! A plain forwarder, as CoreDNS's `forward` plugin: the client's query goes
//! upstream unchanged except for a fresh random ID, over the protocol the
//! client used (a truncated UDP answer is passed on truncated, and the
//! client's retry over TCP is forwarded over TCP). Upstreams are tried in
//! turn, starting from the next one each query so that load spreads, each
//! with its own timeout; when none answers the server returns SERVFAIL.
//! There is no cache: the upstream (typically the host's resolver) has one.
//!
//! The upstream list comes from the host's resolv.conf, minus the addresses
//! that would lead back to this server (see [`upstreams_from_resolv_conf`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The most upstreams one query tries.
const MAX_ATTEMPTS: usize = 3;

/// The UDP payload size advertised on queries this server makes itself
/// (completing ExternalName CNAMEs): the DNS flag day's safe size.
pub(crate) const EDNS_PAYLOAD: u16 = 1232;

/// The transport to use upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP; a truncated answer is returned as it is.
    Udp,
    /// TCP.
    Tcp,
}

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// No upstream nameservers are configured.
    #[error("no upstream nameservers")]
    NoUpstreams,
    /// Talking to an upstream failed.
    #[error("upstream {upstream}: {source}")]
    Io {
        /// The upstream.
        upstream: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// An upstream did not answer in time.
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout {
        /// The upstream.
        upstream: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The query could not be sent as it is.
    #[error("query cannot be forwarded: {reason}")]
    BadQuery {
        /// What is wrong with it.
        reason: String,
    },
}

/// Sends queries to the upstream nameservers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Arc<[SocketAddr]>,
    timeout: Duration,
    next: Arc<AtomicUsize>,
}

impl Forwarder {
    /// A forwarder to `upstreams`, waiting `timeout` for each.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams: upstreams.into(),
            timeout,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The upstream nameservers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Send the wire-format `query`, which asks `question`, and return the
    /// first upstream answer to it.
    pub async fn exchange(
        &self,
        query: &[u8],
        question: &Query,
        transport: Transport,
    ) -> Result<Message, ForwardError> {
        if query.len() < 12 {
            return Err(ForwardError::BadQuery {
                reason: format!("{} bytes is shorter than a DNS header", query.len()),
            });
        }
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = ForwardError::NoUpstreams;
        for attempt in 0..self.upstreams.len().min(MAX_ATTEMPTS) {
            let upstream = self.upstreams[(start + attempt) % self.upstreams.len()];
            let id: u16 = rand::random();
            let mut bytes = query.to_vec();
            bytes[..2].copy_from_slice(&id.to_be_bytes());
            let exchange = async {
                match transport {
                    Transport::Udp => udp_exchange(upstream, &bytes, id, question).await,
                    Transport::Tcp => tcp_exchange(upstream, &bytes, id, question).await,
                }
            };
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(source)) => last = ForwardError::Io { upstream, source },
                Err(_) => {
                    last = ForwardError::Timeout {
                        upstream,
                        timeout: self.timeout,
                    }
                }
            }
            tracing::debug!(error = %last, "forwarding failed, trying the next upstream");
        }
        Err(last)
    }

    /// Ask upstream for `name`/`qtype` on this server's own account (to
    /// complete a CNAME): over UDP, and again over TCP if the answer was
    /// truncated.
    pub async fn lookup(&self, name: &Name, qtype: RecordType) -> Result<Message, ForwardError> {
        let question = Query::query(name.clone(), qtype);
        let mut query = Message::new(0, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(question.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        query.set_edns(edns);
        let bytes = query.to_vec().map_err(|error| ForwardError::BadQuery {
            reason: error.to_string(),
        })?;
        let response = self.exchange(&bytes, &question, Transport::Udp).await?;
        if response.metadata.truncation {
            return self.exchange(&bytes, &question, Transport::Tcp).await;
        }
        Ok(response)
    }
}

/// Whether `response` answers query `id` asking `question`.
fn answers(response: &Message, id: u16, question: &Query) -> bool {
    response.metadata.id == id
        && response.metadata.message_type == MessageType::Response
        && response.queries.len() == 1
        && response.queries[0].name() == question.name()
        && response.queries[0].query_type() == question.query_type()
        && response.queries[0].query_class() == question.query_class()
}

async fn udp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    question: &Query,
) -> io::Result<Message> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: datagrams from elsewhere are dropped by the kernel, and a
    // closed port fails at once (ICMP) instead of timing out.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buffer).await?;
        // Anything else (stale or forged) is ignored, as resolvers do.
        if let Ok(response) = Message::from_vec(&buffer[..len])
            && answers(&response, id, question)
        {
            return Ok(response);
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    question: &Query,
) -> io::Result<Message> {
    let length = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query over 64 KiB"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut length = [0; 2];
    stream.read_exact(&mut length).await?;
    let mut buffer = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut buffer).await?;
    let response = Message::from_vec(&buffer)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
    if !answers(&response, id, question) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the response does not answer the query",
        ));
    }
    Ok(response)
}

/// The `nameserver` addresses of a resolv.conf, in order.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?;
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // An IPv6 link-local address may carry a zone (`fe80::1%eth0`);
            // a bare IP without it is not reachable, so skip those.
            words.next()?.parse().ok()
        })
        .collect()
}

/// Where this server can be reached, to keep it out of its own upstreams.
#[derive(Debug, Clone)]
pub struct SelfAddresses {
    /// The address the server listens on.
    pub listen: SocketAddr,
    /// Addresses that always reach this server on port 53: the cluster DNS
    /// Service's IP, and the node IP when the server listens on port 53.
    pub reach: Vec<IpAddr>,
}

impl SelfAddresses {
    /// Whether a query to `ip` port 53 would come back here.
    fn contains(&self, ip: IpAddr) -> bool {
        if self.reach.contains(&ip) {
            return true;
        }
        if self.listen.port() != 53 {
            return false;
        }
        self.listen.ip() == ip || (self.listen.ip().is_unspecified() && ip.is_loopback())
    }
}

/// The upstreams of resolv.conf `text` (port 53), without the ones that are
/// this server: forwarding to them would loop.
pub fn upstreams_from_resolv_conf(text: &str, own: &SelfAddresses) -> Vec<SocketAddr> {
    parse_resolv_conf(text)
        .into_iter()
        .filter(|ip| {
            let ours = own.contains(*ip);
            if ours {
                tracing::warn!(nameserver = %ip, "skipping a resolv.conf nameserver that is this DNS server");
            }
            !ours
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "\
# generated
search example.com
nameserver 10.0.0.2 ; primary
nameserver   2001:db8::53
nameserver fe80::1%eth0
nameserver not-an-ip
options ndots:5
;nameserver 10.9.9.9
nameserver 10.0.0.3";
        let expected: Vec<IpAddr> = ["10.0.0.2", "2001:db8::53", "10.0.0.3"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        assert_eq!(parse_resolv_conf(text), expected);
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn own_addresses_are_not_upstreams() {
        let text = "nameserver 127.0.0.53\nnameserver 10.43.0.10\nnameserver 192.0.2.1\n";
        let service_ip: IpAddr = "10.43.0.10".parse().unwrap();
        // On a high port, a loopback resolver is someone else.
        let own = SelfAddresses {
            listen: "0.0.0.0:10053".parse().unwrap(),
            reach: vec![service_ip],
        };
        let upstreams: Vec<String> = upstreams_from_resolv_conf(text, &own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(upstreams, ["127.0.0.53:53", "192.0.2.1:53"]);
        // On port 53 of every address, loopback is this server.
        let own = SelfAddresses {
            listen: "0.0.0.0:53".parse().unwrap(),
            reach: vec![service_ip],
        };
        let upstreams: Vec<String> = upstreams_from_resolv_conf(text, &own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(upstreams, ["192.0.2.1:53"]);
        // On port 53 of one address, that address is.
        let own = SelfAddresses {
            listen: "192.0.2.1:53".parse().unwrap(),
            reach: vec![],
        };
        assert_eq!(
            upstreams_from_resolv_conf(text, &own).len(),
            2,
            "127.0.0.53 and 10.43.0.10 remain"
        );
    }

    #[test]
    fn response_must_answer_the_question() {
        let question = Query::query(Name::from_ascii("a.example.").unwrap(), RecordType::A);
        let mut response = Message::new(7, MessageType::Response, OpCode::Query);
        response.add_query(question.clone());
        assert!(answers(&response, 7, &question));
        assert!(!answers(&response, 8, &question));
        let other = Query::query(Name::from_ascii("b.example.").unwrap(), RecordType::A);
        assert!(!answers(&response, 7, &other));
        response.metadata.message_type = MessageType::Query;
        assert!(!answers(&response, 7, &question));
    }

    #[tokio::test]
    async fn no_upstreams_and_short_queries_fail_at_once() {
        let question = Query::query(Name::from_ascii("a.example.").unwrap(), RecordType::A);
        let forwarder = Forwarder::new(vec![], Duration::from_secs(1));
        assert!(matches!(
            forwarder
                .exchange(&[0; 20], &question, Transport::Udp)
                .await,
            Err(ForwardError::NoUpstreams)
        ));
        assert!(matches!(
            forwarder.exchange(&[0; 3], &question, Transport::Udp).await,
            Err(ForwardError::BadQuery { .. })
        ));
    }
}
