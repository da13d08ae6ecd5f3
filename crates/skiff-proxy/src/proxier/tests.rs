use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::conntrack::fake::FakeConntrack;
use crate::conntrack::{Flow, IPPROTO_UDP, Tuple};
use crate::host::fake::RecordingHost;

fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap()
}

fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{service}-1"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn proxier() -> (Proxier, Arc<RecordingHost>) {
    let (proxier, host, _) = proxier_with_conntrack();
    (proxier, host)
}

fn proxier_with_conntrack() -> (Proxier, Arc<RecordingHost>, Arc<FakeConntrack>) {
    let host = Arc::new(RecordingHost::default());
    let conntrack = Arc::new(FakeConntrack::default());
    let proxier =
        Proxier::new(ProxyConfig::default(), host.clone()).with_conntrack(conntrack.clone());
    (proxier, host, conntrack)
}

/// `dns`: UDP port 53 "dns" on 10.43.0.10.
fn udp_service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "dns"},
        "spec": {"clusterIP": "10.43.0.10",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
    .unwrap()
}

fn udp_slice(ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "dns-1",
                     "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// A client's UDP entry to the `dns` ClusterIP, DNATed to `endpoint`.
fn dns_flow(endpoint: &str, client_port: u16) -> Flow {
    let client = "10.42.0.2".parse().unwrap();
    Flow {
        protocol: IPPROTO_UDP,
        original: Tuple {
            src: client,
            dst: "10.43.0.10".parse().unwrap(),
            src_port: client_port,
            dst_port: 53,
        },
        reply: Tuple {
            src: endpoint.parse().unwrap(),
            dst: client,
            src_port: 5353,
            dst_port: client_port,
        },
        zone: 0,
        id: None,
    }
}

#[test]
fn syncs_delete_udp_entries_of_removed_endpoints_once_per_change() {
    let (mut proxier, host, conntrack) = proxier_with_conntrack();
    let services = [Arc::new(udp_service())];
    let to_a = dns_flow("10.42.1.5", 40000);
    let to_b = dns_flow("10.42.1.6", 40001);
    *conntrack.table.lock().unwrap() = vec![to_a, to_b];

    let both = [Arc::new(udp_slice(&["10.42.1.5", "10.42.1.6"]))];
    let stats = proxier.sync(&services, &both).unwrap();
    assert_eq!((stats.mode, stats.conntrack_deleted), (SyncMode::Full, 0));
    assert_eq!(conntrack.listings(), 1, "the first sync checks the table");
    // Unchanged: the table is not even listed.
    proxier.sync(&services, &both).unwrap();
    assert_eq!(conntrack.listings(), 1);

    // 10.42.1.5 goes: its entry is deleted after the rules changed.
    let stats = proxier
        .sync(&services, &[Arc::new(udp_slice(&["10.42.1.6"]))])
        .unwrap();
    assert_eq!(
        (stats.mode, stats.conntrack_deleted),
        (SyncMode::Incremental, 1)
    );
    assert_eq!(conntrack.deleted(), [to_a]);
    assert_eq!(*conntrack.table.lock().unwrap(), [to_b]);
    assert_eq!(host.scripts().len(), 2);
}

#[test]
fn a_failed_conntrack_cleanup_does_not_fail_the_sync_and_is_retried() {
    let (mut proxier, _host, conntrack) = proxier_with_conntrack();
    let services = [Arc::new(udp_service())];
    let both = [Arc::new(udp_slice(&["10.42.1.5", "10.42.1.6"]))];
    let one = [Arc::new(udp_slice(&["10.42.1.6"]))];
    proxier.sync(&services, &both).unwrap();
    *conntrack.table.lock().unwrap() = vec![dns_flow("10.42.1.5", 40000)];
    *conntrack.fail_next.lock().unwrap() = 1;
    let stats = proxier.sync(&services, &one).unwrap();
    assert_eq!(
        (stats.mode, stats.conntrack_deleted),
        (SyncMode::Incremental, 0)
    );
    assert_eq!(conntrack.listings(), 2);
    // The rules are in place, yet the next sync cleans up.
    let stats = proxier.sync(&services, &one).unwrap();
    assert_eq!(
        (stats.mode, stats.conntrack_deleted),
        (SyncMode::Unchanged, 1)
    );
    assert_eq!(conntrack.deleted(), [dns_flow("10.42.1.5", 40000)]);
    proxier.sync(&services, &one).unwrap();
    assert_eq!(conntrack.listings(), 3);
}

#[test]
fn no_cleanup_happens_when_the_rules_could_not_be_applied() {
    let (mut proxier, host, conntrack) = proxier_with_conntrack();
    *host.fail_next.lock().unwrap() = 1;
    let services = [Arc::new(udp_service())];
    proxier
        .sync(&services, &[Arc::new(udp_slice(&["10.42.1.5"]))])
        .unwrap_err();
    assert_eq!(conntrack.listings(), 0);
}

#[test]
fn the_first_sync_replaces_the_table_later_ones_apply_differences() {
    let (mut proxier, host) = proxier();
    let services = [Arc::new(service("web", "10.43.0.20"))];
    let stats = proxier
        .sync(&services, &[Arc::new(slice("web", &["10.42.1.5"]))])
        .unwrap();
    assert_eq!(stats.mode, SyncMode::Full);
    let scripts = host.scripts();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].starts_with("add table ip skiff-proxy\ndelete table ip skiff-proxy\n"));
    assert_eq!(stats.script_bytes, scripts[0].len());

    // Nothing changed: nft is not run.
    let stats = proxier
        .sync(&services, &[Arc::new(slice("web", &["10.42.1.5"]))])
        .unwrap();
    assert_eq!(
        (stats.mode, stats.apply),
        (SyncMode::Unchanged, Duration::ZERO)
    );
    assert_eq!(host.scripts().len(), 1);

    // An endpoint replaced: only its map and hairpin elements change.
    let stats = proxier
        .sync(&services, &[Arc::new(slice("web", &["10.42.1.6"]))])
        .unwrap();
    assert_eq!(stats.mode, SyncMode::Incremental);
    assert_eq!(
        host.scripts()[1],
        "delete element ip skiff-proxy endpoints-1 { 10.43.0.20 . tcp . 80 . 0 }\n\
         add element ip skiff-proxy endpoints-1 { 10.43.0.20 . tcp . 80 . 0 : 10.42.1.6 . 8080 }\n\
         delete element ip skiff-proxy hairpin { 10.42.1.5 . 10.42.1.5 }\n\
         add element ip skiff-proxy hairpin { 10.42.1.6 . 10.42.1.6 }\n"
    );
    // The 11 fixed chains and `pick-1`; the ClusterIP, its endpoint, the hairpin.
    assert_eq!((stats.chains, stats.elements), (12, 3));
}

#[test]
fn a_failed_update_falls_back_to_a_full_replacement() {
    let (mut proxier, host) = proxier();
    let services = [Arc::new(service("web", "10.43.0.20"))];
    proxier.sync(&services, &[]).unwrap();
    *host.fail_next.lock().unwrap() = 1;
    let stats = proxier
        .sync(&services, &[Arc::new(slice("web", &["10.42.1.5"]))])
        .unwrap();
    assert_eq!(stats.mode, SyncMode::Full);
    let scripts = host.scripts();
    assert_eq!(scripts.len(), 2);
    assert!(scripts[1].starts_with("add table ip skiff-proxy\ndelete table"));
}

#[test]
fn after_a_failed_sync_the_next_one_replaces_the_table() {
    let (mut proxier, host) = proxier();
    let services = [Arc::new(service("web", "10.43.0.20"))];
    proxier.sync(&services, &[]).unwrap();
    *host.fail_next.lock().unwrap() = 2;
    let error = proxier
        .sync(&services, &[Arc::new(slice("web", &["10.42.1.5"]))])
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProxyError::Apply {
                mode: SyncMode::Full,
                ..
            }
        ),
        "{error}"
    );
    // Same snapshot again: not "unchanged", since the table is unknown now.
    let stats = proxier
        .sync(&services, &[Arc::new(slice("web", &["10.42.1.5"]))])
        .unwrap();
    assert_eq!(stats.mode, SyncMode::Full);
}

type Sender<K> = mpsc::UnboundedSender<watcher::Result<Event<K>>>;

/// Starts `serve` on fake watch streams; returns their senders.
fn start(
    host: Arc<RecordingHost>,
    shutdown: CancellationToken,
) -> (
    Sender<Service>,
    Sender<EndpointSlice>,
    tokio::task::JoinHandle<Result<(), ProxyError>>,
) {
    let (service_tx, service_rx) = mpsc::unbounded();
    let (slice_tx, slice_rx) = mpsc::unbounded();
    let (services, services_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let proxier = Proxier::new(ProxyConfig::default(), host)
        .with_conntrack(Arc::new(FakeConntrack::default()));
    let task = tokio::spawn(serve(
        proxier,
        (services, reflector::reflector(services_writer, service_rx)),
        (slices, reflector::reflector(slices_writer, slice_rx)),
        shutdown,
    ));
    (service_tx, slice_tx, task)
}

/// Lets the loop run for `ms` of (paused) time.
async fn after(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    // The blocking sync finishes on another thread; give it real time.
    for _ in 0..50 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(start_paused = true)]
async fn the_loop_waits_for_both_lists_batches_changes_and_leaves_rules_on_shutdown() {
    let host = Arc::new(RecordingHost::default());
    let shutdown = CancellationToken::new();
    let (services, slices, task) = start(host.clone(), shutdown.clone());

    services.unbounded_send(Ok(Event::Init)).unwrap();
    services
        .unbounded_send(Ok(Event::InitApply(service("web", "10.43.0.20"))))
        .unwrap();
    services.unbounded_send(Ok(Event::InitDone)).unwrap();
    after(500).await;
    assert!(
        host.scripts().is_empty(),
        "synced before the slices were listed"
    );

    slices.unbounded_send(Ok(Event::Init)).unwrap();
    slices
        .unbounded_send(Ok(Event::InitApply(slice("web", &["10.42.1.5"]))))
        .unwrap();
    slices.unbounded_send(Ok(Event::InitDone)).unwrap();
    // The listing started long ago: the first sync is due at once.
    after(1).await;
    let scripts = host.scripts();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].contains("10.43.0.20 . tcp . 80 : goto pick-1"));
    assert_eq!(
        *host.sysctls.lock().unwrap(),
        [
            ("net.ipv4.ip_forward".to_owned(), "1".to_owned()),
            (
                "net.bridge.bridge-nf-call-iptables".to_owned(),
                "1".to_owned()
            ),
        ]
    );

    // A burst of changes is one sync, `sync_delay` after its first change.
    for ip in ["10.42.1.6", "10.42.1.7", "10.42.1.8"] {
        slices
            .unbounded_send(Ok(Event::Apply(slice("web", &[ip]))))
            .unwrap();
        after(10).await;
    }
    slices
        .unbounded_send(Err(watcher::Error::NoResourceVersion))
        .unwrap();
    after(50).await;
    assert_eq!(host.scripts().len(), 1, "synced before the delay");
    after(50).await;
    let scripts = host.scripts();
    assert_eq!(scripts.len(), 2);
    assert!(scripts[1].contains("10.43.0.20 . tcp . 80 . 0 : 10.42.1.8 . 8080"));
    assert!(!scripts[1].contains("10.42.1.7 . 8080"));

    // A deleted Service is removed; an unchanged re-apply runs nothing.
    services
        .unbounded_send(Ok(Event::Delete(service("web", "10.43.0.20"))))
        .unwrap();
    after(200).await;
    services
        .unbounded_send(Ok(Event::Apply(service("other", "10.43.0.21"))))
        .unwrap();
    services
        .unbounded_send(Ok(Event::Delete(service("other", "10.43.0.21"))))
        .unwrap();
    after(200).await;
    let scripts = host.scripts();
    assert_eq!(scripts.len(), 3, "{scripts:#?}");
    assert!(
        scripts[2].contains("delete element ip skiff-proxy service-ips { 10.43.0.20 . tcp . 80 }")
    );
    assert!(scripts[2].contains("delete chain ip skiff-proxy pick-1\n"));
    assert!(scripts[2].contains("delete map ip skiff-proxy endpoints-1\n"));

    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(host.scripts().len(), 3, "shutdown touched the rules");
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_is_retried() {
    let host = Arc::new(RecordingHost::default());
    *host.fail_next.lock().unwrap() = 1;
    let shutdown = CancellationToken::new();
    let (services, slices, task) = start(host.clone(), shutdown.clone());
    services.unbounded_send(Ok(Event::Init)).unwrap();
    services.unbounded_send(Ok(Event::InitDone)).unwrap();
    slices.unbounded_send(Ok(Event::Init)).unwrap();
    slices.unbounded_send(Ok(Event::InitDone)).unwrap();
    after(200).await;
    assert!(host.scripts().is_empty());
    after(1000).await;
    assert_eq!(host.scripts().len(), 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_closed_watch_is_an_error() {
    let host = Arc::new(RecordingHost::default());
    let (services, _slices, task) = start(host, CancellationToken::new());
    drop(services);
    let error = task.await.unwrap().unwrap_err();
    assert!(
        matches!(error, ProxyError::WatchEnded("Service")),
        "{error}"
    );
}
