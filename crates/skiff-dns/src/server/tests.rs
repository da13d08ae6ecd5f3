//! The server over real sockets on loopback, queried with hickory's client,
//! fed from a hand-built snapshot (no API server) and forwarding to fake
//! upstreams that are also on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::DnsError;
use crate::records::Records;
use crate::testing::*;

/// A server on 127.0.0.1 answering from `records`; stopped on drop.
struct TestServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), DnsError>>>,
}

impl TestServer {
    async fn start(records: Records, upstreams: Vec<SocketAddr>, timeout: Duration) -> TestServer {
        let records = Arc::new(RwLock::new(records));
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            records,
            Forwarder::new(upstreams, timeout),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn data(records: &[Record]) -> Vec<String> {
    let mut data: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    data
}

/// What a fake upstream was asked.
type Asked = Arc<Mutex<Vec<(String, RecordType, &'static str)>>>;

/// A nameserver on 127.0.0.1 (UDP and TCP, one port) answering every A
/// query with `answer`; `big.example.` is truncated over UDP.
struct FakeUpstream {
    addr: SocketAddr,
    asked: Asked,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn upstream_answer(query: &Message, answer: Ipv4Addr, udp: bool) -> Message {
    let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_available = true;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    let question = query.queries[0].clone();
    let name = question.name().clone();
    let qtype = question.query_type();
    response.add_query(question);
    if name.to_ascii() == "big.example." && udp {
        response.metadata.truncation = true;
    } else if name.to_ascii() == "missing.example." {
        response.metadata.response_code = ResponseCode::NXDomain;
    } else if qtype == RecordType::A {
        response.add_answer(Record::from_rdata(name, 60, RData::A(A(answer))));
    }
    response
}

async fn fake_upstream(answer: Ipv4Addr) -> FakeUpstream {
    // One port for both protocols, retried when TCP's half is taken.
    let (udp, tcp) = super::bind_pair(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = udp.local_addr().unwrap();
    let asked: Asked = Arc::default();
    let udp_asked = Arc::clone(&asked);
    let udp_task = tokio::spawn(async move {
        let mut buffer = vec![0; 4096];
        loop {
            let (len, from) = udp.recv_from(&mut buffer).await.unwrap();
            let query = Message::from_vec(&buffer[..len]).unwrap();
            let q = &query.queries[0];
            udp_asked
                .lock()
                .unwrap()
                .push((q.name().to_ascii(), q.query_type(), "udp"));
            let response = upstream_answer(&query, answer, true);
            udp.send_to(&response.to_vec().unwrap(), from)
                .await
                .unwrap();
        }
    });
    let tcp_asked = Arc::clone(&asked);
    let tcp_task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let asked = Arc::clone(&tcp_asked);
            tokio::spawn(async move {
                let mut length = [0; 2];
                while stream.read_exact(&mut length).await.is_ok() {
                    let mut buffer = vec![0; usize::from(u16::from_be_bytes(length))];
                    stream.read_exact(&mut buffer).await.unwrap();
                    let query = Message::from_vec(&buffer).unwrap();
                    let q = &query.queries[0];
                    asked
                        .lock()
                        .unwrap()
                        .push((q.name().to_ascii(), q.query_type(), "tcp"));
                    let bytes = upstream_answer(&query, answer, false).to_vec().unwrap();
                    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
                    framed.extend(bytes);
                    stream.write_all(&framed).await.unwrap();
                }
            });
        }
    });
    FakeUpstream {
        addr,
        asked,
        tasks: vec![udp_task, tcp_task],
    }
}

fn snapshot() -> Records {
    let web = service(
        "default",
        "web",
        &["10.43.0.20"],
        vec![port("http", 80, "TCP")],
    );
    let sts = headless("default", "db", vec![port("pg", 5432, "TCP")]);
    let sts_slice = slice(
        "default",
        "db-1",
        "db",
        vec![
            endpoint("10.42.0.10", Some("db-0"), Some(true)),
            endpoint("10.42.0.11", Some("db-1"), Some(true)),
        ],
        vec![slice_port("pg", 5432, "TCP")],
    );
    let many = headless("default", "many", vec![port("http", 80, "TCP")]);
    let many_slice = slice(
        "default",
        "many-1",
        "many",
        (0..100)
            .map(|i| endpoint(&format!("10.42.1.{i}"), None, Some(true)))
            .collect(),
        vec![slice_port("http", 80, "TCP")],
    );
    let search = external("default", "search", "www.example.com");
    let gone = external("default", "gone", "missing.example");
    build(
        vec![web, sts, many, search, gone],
        vec![sts_slice, many_slice],
    )
}

#[tokio::test]
async fn answers_cluster_names_over_udp_and_tcp() {
    let server = TestServer::start(snapshot(), vec![], TIMEOUT).await;
    for mut client in [udp_client(server.addr).await, tcp_client(server.addr).await] {
        let response = query(&mut client, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert_eq!(data(&response.answers), ["10.43.0.20"]);
        assert_eq!(response.answers[0].ttl, 5);

        let response = query(
            &mut client,
            "db-1.db.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(data(&response.answers), ["10.42.0.11"]);

        let response = query(
            &mut client,
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(
            data(&response.answers),
            [
                "0 50 5432 db-0.db.default.svc.cluster.local.",
                "0 50 5432 db-1.db.default.svc.cluster.local.",
            ]
        );
        assert_eq!(data(&response.additionals), ["10.42.0.10", "10.42.0.11"]);

        let response = query(&mut client, "20.0.43.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(data(&response.answers), ["web.default.svc.cluster.local."]);

        // Missing: NXDOMAIN with the SOA; existing without the type: NODATA.
        let response = query(
            &mut client,
            "nope.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(response.authorities.len(), 1);
        assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
        let response = query(
            &mut client,
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
        assert_eq!(response.authorities[0].record_type(), RecordType::SOA);

        let response = query(&mut client, "dns-version.cluster.local.", RecordType::TXT).await;
        assert_eq!(data(&response.answers), ["1.0.1"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn large_udp_answers_are_truncated_and_complete_over_tcp() {
    let server = TestServer::start(snapshot(), vec![], TIMEOUT).await;
    let name = "many.default.svc.cluster.local.";
    // Without EDNS a UDP answer is at most 512 bytes.
    let mut udp = udp_client(server.addr).await;
    udp.disable_edns();
    let response = query(&mut udp, name, RecordType::A).await;
    assert!(response.metadata.truncation);
    assert!(response.answers.len() < 100);
    assert!(response.to_vec().unwrap().len() <= 512);
    // With EDNS, at most our 1232 bytes: still too small for 100 addresses.
    let mut udp = udp_client(server.addr).await;
    let response = query(&mut udp, name, RecordType::A).await;
    assert!(response.metadata.truncation);
    assert!(response.to_vec().unwrap().len() <= 1232);
    // TCP carries them all.
    let mut tcp = tcp_client(server.addr).await;
    let response = query(&mut tcp, name, RecordType::A).await;
    assert!(!response.metadata.truncation);
    assert_eq!(response.answers.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn addresses_are_rotated_between_answers() {
    let server = TestServer::start(snapshot(), vec![], TIMEOUT).await;
    let mut tcp = tcp_client(server.addr).await;
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..20 {
        let response = query(&mut tcp, "many.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(response.answers.len(), 100);
        firsts.insert(response.answers[0].data.to_string());
    }
    // 20 draws from 100 offsets: all equal has probability 100^-19.
    assert!(firsts.len() > 1);
    server.stop().await;
}

#[tokio::test]
async fn other_names_are_forwarded_over_the_clients_protocol() {
    let upstream = fake_upstream(Ipv4Addr::new(192, 0, 2, 80)).await;
    let server = TestServer::start(snapshot(), vec![upstream.addr], TIMEOUT).await;
    let mut udp = udp_client(server.addr).await;
    let response = query(&mut udp, "www.example.org.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(!response.metadata.authoritative);
    assert!(response.metadata.recursion_available);
    assert_eq!(data(&response.answers), ["192.0.2.80"]);
    // An upstream NXDOMAIN is passed on.
    let response = query(&mut udp, "missing.example.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    // A truncated upstream answer reaches the client truncated; its retry
    // over TCP goes upstream over TCP.
    let response = query(&mut udp, "big.example.", RecordType::A).await;
    assert!(response.metadata.truncation);
    let mut tcp = tcp_client(server.addr).await;
    let response = query(&mut tcp, "big.example.", RecordType::A).await;
    assert!(!response.metadata.truncation);
    assert_eq!(data(&response.answers), ["192.0.2.80"]);
    // Reverse names outside the service and pod CIDRs are not ours.
    query(&mut udp, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await;
    let asked = upstream.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            ("www.example.org.".to_string(), RecordType::A, "udp"),
            ("missing.example.".to_string(), RecordType::A, "udp"),
            ("big.example.".to_string(), RecordType::A, "udp"),
            ("big.example.".to_string(), RecordType::A, "tcp"),
            (
                "1.2.0.192.in-addr.arpa.".to_string(),
                RecordType::PTR,
                "udp"
            ),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn external_names_are_completed_from_upstream() {
    let upstream = fake_upstream(Ipv4Addr::new(192, 0, 2, 81)).await;
    let server = TestServer::start(snapshot(), vec![upstream.addr], TIMEOUT).await;
    let mut udp = udp_client(server.addr).await;
    let response = query(&mut udp, "search.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    let answers: Vec<String> = response.answers.iter().map(ToString::to_string).collect();
    assert_eq!(
        answers,
        [
            "search.default.svc.cluster.local. 5 IN CNAME www.example.com.",
            "www.example.com. 60 IN A 192.0.2.81",
        ]
    );
    // A target upstream does not know: the CNAME alone, NOERROR, as CoreDNS
    // answers (the rcode is the cluster name's, which exists).
    let response = query(&mut udp, "gone.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&response.answers), ["missing.example."]);
    server.stop().await;
}

#[tokio::test]
async fn a_dead_upstream_is_servfail() {
    // A closed port: the kernel refuses at once.
    let closed = {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.local_addr().unwrap()
    };
    let server = TestServer::start(snapshot(), vec![closed], TIMEOUT).await;
    let mut udp = udp_client(server.addr).await;
    let response = query(&mut udp, "www.example.org.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
    // Cluster names do not depend on upstream.
    let response = query(&mut udp, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    // An ExternalName whose target cannot be resolved still gets its CNAME.
    let response = query(&mut udp, "search.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&response.answers), ["www.example.com."]);
    server.stop().await;

    // A silent one: SERVFAIL after the timeout, for each upstream tried.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let timeout = Duration::from_millis(300);
    let server = TestServer::start(
        snapshot(),
        vec![silent.local_addr().unwrap(), silent.local_addr().unwrap()],
        timeout,
    )
    .await;
    let mut udp = udp_client(server.addr).await;
    let started = Instant::now();
    let response = query(&mut udp, "www.example.org.", RecordType::A).await;
    let took = started.elapsed();
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
    assert!(took >= timeout * 2, "{took:?}");
    assert!(took < TIMEOUT, "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_next_upstream_answers_when_one_is_dead() {
    let closed = {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.local_addr().unwrap()
    };
    let upstream = fake_upstream(Ipv4Addr::new(192, 0, 2, 82)).await;
    let server = TestServer::start(snapshot(), vec![closed, upstream.addr], TIMEOUT).await;
    let mut udp = udp_client(server.addr).await;
    for _ in 0..4 {
        let response = query(&mut udp, "www.example.org.", RecordType::A).await;
        assert_eq!(data(&response.answers), ["192.0.2.82"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_unsupported_requests_get_error_codes() {
    let server = TestServer::start(snapshot(), vec![], TIMEOUT).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.addr).await.unwrap();
    let exchange = |message: Message| {
        let socket = &socket;
        async move {
            socket.send(&message.to_vec().unwrap()).await.unwrap();
            let mut buffer = vec![0; 4096];
            let len = tokio::time::timeout(TIMEOUT, socket.recv(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            Message::from_vec(&buffer[..len]).unwrap()
        }
    };
    // No question.
    let empty = Message::new(1, MessageType::Query, OpCode::Query);
    assert_eq!(
        exchange(empty).await.metadata.response_code,
        ResponseCode::FormErr
    );
    // An opcode other than QUERY.
    let mut status = Message::new(2, MessageType::Query, OpCode::Status);
    status.add_query(hickory_proto::op::Query::query(
        Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        exchange(status).await.metadata.response_code,
        ResponseCode::NotImp
    );
    // An EDNS version this server does not speak.
    let mut future = Message::new(4, MessageType::Query, OpCode::Query);
    future.add_query(hickory_proto::op::Query::query(
        Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_version(1);
    future.set_edns(edns);
    let answer = exchange(future).await;
    // 16 on the wire, which hickory decodes as its other name, BADSIG.
    assert_eq!(
        u16::from(answer.metadata.response_code),
        u16::from(ResponseCode::BADVERS)
    );
    assert!(answer.answers.is_empty());
    // Zone transfers.
    let mut axfr = Message::new(3, MessageType::Query, OpCode::Query);
    axfr.add_query(hickory_proto::op::Query::query(
        Name::from_ascii("cluster.local.").unwrap(),
        RecordType::AXFR,
    ));
    assert_eq!(
        exchange(axfr).await.metadata.response_code,
        ResponseCode::Refused
    );
    server.stop().await;
}

#[tokio::test]
async fn records_swapped_in_are_served_at_once() {
    let records = Arc::new(RwLock::new(snapshot()));
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&records),
        Forwarder::new(vec![], TIMEOUT),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));
    let mut udp = udp_client(addr).await;
    let name = "web.default.svc.cluster.local.";
    assert_eq!(query(&mut udp, name, RecordType::A).await.answers.len(), 1);
    *records.write().unwrap() = build(vec![], vec![]);
    assert_eq!(
        query(&mut udp, name, RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn binding_a_taken_port_fails_with_context() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = Server::bind(
        addr,
        Arc::new(RwLock::new(snapshot())),
        Forwarder::new(vec![], TIMEOUT),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, DnsError::Bind { addr: a, .. } if a == addr));
    assert!(error.to_string().contains(&addr.to_string()));
}
