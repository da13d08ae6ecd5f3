//! The DNS server: hickory-server's UDP and TCP loops with a handler that
//! answers from the record index or forwards.
//!
//! hickory-server parses requests, runs one task per UDP query and one per
//! TCP connection, and encodes responses, truncating UDP answers that exceed
//! the client's EDNS payload size (512 bytes without EDNS, at most
//! 1232 bytes here) and setting TC so the client retries over TCP.
//! The handler only decides what to answer: it reads the index under a read
//! lock held for the lookup alone (no await while holding it), then forwards
//! or completes CNAMEs without it.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::DnsError;
use crate::forward::{EDNS_PAYLOAD, Forwarder, Transport};
use crate::records::{Records, Resolution};

/// The record index as the server reads it and the watch task writes it.
pub type SharedRecords = Arc<RwLock<Records>>;

/// How long a TCP connection may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;

/// Attempts at binding UDP and TCP on the same free port.
const BIND_ATTEMPTS: usize = 16;

/// A bound DNS server, not yet serving.
pub struct Server {
    inner: hickory_server::Server<Handler>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Bind UDP and TCP on `listen` (port 0: one free port for both),
    /// answering from `records` and forwarding with `forwarder`.
    pub async fn bind(
        listen: SocketAddr,
        records: SharedRecords,
        forwarder: Forwarder,
    ) -> Result<Server, DnsError> {
        let (udp, tcp) = bind_pair(listen).await.map_err(|source| DnsError::Bind {
            addr: listen,
            source,
        })?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: listen,
            source,
        })?;
        let mut inner = hickory_server::Server::new(Handler { records, forwarder });
        inner.register_socket(udp);
        inner.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        Ok(Server { inner, local_addr })
    }

    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until `shutdown`, then stop accepting and wait for the queries
    /// in progress.
    pub async fn serve(mut self, shutdown: CancellationToken) -> Result<(), DnsError> {
        let stopped = tokio::select! {
            () = shutdown.cancelled() => None,
            result = self.inner.block_until_done() => Some(result),
        };
        match stopped {
            // The sockets' loops end only on shutdown or a broken socket.
            Some(result) => Err(DnsError::Serve {
                reason: match result {
                    Ok(()) => "the server stopped".to_string(),
                    Err(error) => error.to_string(),
                },
            }),
            None => self
                .inner
                .shutdown_gracefully()
                .await
                .map_err(|error| DnsError::Serve {
                    reason: error.to_string(),
                }),
        }
    }
}

/// UDP and TCP sockets on one port.
async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if listen.port() != 0 {
        return Ok((
            UdpSocket::bind(listen).await?,
            TcpListener::bind(listen).await?,
        ));
    }
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(listen).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// Answers one request.
struct Handler {
    records: SharedRecords,
    forwarder: Forwarder,
}

/// The sections of a response.
#[derive(Default)]
struct Sections {
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        // Our own OPT: the smaller of the client's payload size and ours,
        // which is also the size hickory truncates UDP answers to.
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().clamp(512, EDNS_PAYLOAD));
            ours
        });
        let sections = if request.metadata.op_code != OpCode::Query {
            metadata.response_code = ResponseCode::NotImp;
            Sections::default()
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            metadata.response_code = ResponseCode::BADVERS;
            Sections::default()
        } else if request.queries.len() != 1 {
            metadata.response_code = ResponseCode::FormErr;
            Sections::default()
        } else {
            self.answer(request, &mut metadata).await
        };
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            sections.answers.iter(),
            sections.authorities.iter(),
            std::iter::empty(),
            sections.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sending a DNS response failed");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    async fn answer(&self, request: &Request, metadata: &mut Metadata) -> Sections {
        let query = request.queries.queries()[0].original();
        let resolution = if query.query_class() == DNSClass::IN {
            self.records
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .resolve(query.name(), query.query_type())
        } else {
            Resolution::Forward
        };
        match resolution {
            Resolution::Answer(response) => {
                metadata.authoritative = true;
                metadata.response_code = response.code;
                let mut answers = response.answers;
                if let Some(target) = response.chase {
                    // The cluster name exists, so the rcode stays NOERROR
                    // whatever upstream says of the target (as CoreDNS).
                    match self.forwarder.lookup(&target, query.query_type()).await {
                        Ok(completion) => answers.extend(completion.answers),
                        Err(error) => {
                            tracing::debug!(%target, %error, "completing an ExternalName failed");
                        }
                    }
                }
                rotate_addresses(&mut answers);
                Sections {
                    answers,
                    authorities: response.authorities,
                    additionals: response.additionals,
                }
            }
            Resolution::Forward => {
                let transport = if request.protocol().is_datagram() {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                match self
                    .forwarder
                    .exchange(request.as_slice(), query, transport)
                    .await
                {
                    Ok(upstream) => {
                        let flags = upstream.metadata;
                        metadata.response_code = flags.response_code;
                        metadata.authoritative = flags.authoritative;
                        metadata.truncation = flags.truncation;
                        metadata.recursion_available = flags.recursion_available;
                        metadata.authentic_data = flags.authentic_data;
                        Sections {
                            answers: upstream.answers,
                            authorities: upstream.authorities,
                            additionals: upstream.additionals,
                        }
                    }
                    Err(error) => {
                        tracing::debug!(name = %query.name(), %error, "forwarding failed");
                        metadata.response_code = ResponseCode::ServFail;
                        Sections::default()
                    }
                }
            }
        }
    }
}

/// Rotate the address records that end an answer by a random offset, so
/// that clients taking the first address spread over all of them (CoreDNS's
/// `loadbalance`). CNAMEs before them stay first.
fn rotate_addresses(answers: &mut [Record]) {
    let first = answers
        .iter()
        .position(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .unwrap_or(answers.len());
    let addresses = &mut answers[first..];
    let all_addresses = addresses
        .iter()
        .all(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA));
    if addresses.len() > 1 && all_addresses {
        let offset = rand::random_range(0..addresses.len());
        addresses.rotate_left(offset);
    }
}

#[cfg(test)]
mod tests;
