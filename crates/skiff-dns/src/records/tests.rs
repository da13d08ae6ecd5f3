use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;

use super::*;
use crate::testing::*;

fn ask(records: &Records, name: &str, qtype: RecordType) -> Response {
    match records.resolve(&Name::from_ascii(name).unwrap(), qtype) {
        Resolution::Answer(response) => response,
        Resolution::Forward => panic!("{name} {qtype} was forwarded"),
    }
}

/// Sections as sorted `name ttl class type data` lines.
fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut lines: Vec<String> = records.iter().map(ToString::to_string).collect();
    lines.sort();
    lines
}

fn answers(records: &Records, name: &str, qtype: RecordType) -> Vec<String> {
    let response = ask(records, name, qtype);
    assert_eq!(response.code, ResponseCode::NoError, "{name} {qtype}");
    lines(&response.answers)
}

/// Asserts NOERROR without answers and with the zone's SOA.
fn assert_nodata(records: &Records, name: &str, qtype: RecordType, apex: &str) {
    let response = ask(records, name, qtype);
    assert_eq!(response.code, ResponseCode::NoError, "{name} {qtype}");
    assert!(response.answers.is_empty(), "{name} {qtype}: {response:?}");
    assert_soa(&response, apex);
}

fn assert_nxdomain(records: &Records, name: &str, qtype: RecordType, apex: &str) {
    let response = ask(records, name, qtype);
    assert_eq!(response.code, ResponseCode::NXDomain, "{name} {qtype}");
    assert!(response.answers.is_empty());
    assert_soa(&response, apex);
}

fn assert_soa(response: &Response, apex: &str) {
    assert_eq!(response.authorities.len(), 1, "{response:?}");
    let soa = &response.authorities[0];
    assert_eq!(soa.name, Name::from_str(apex).unwrap());
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.ttl, 5);
    let RData::SOA(data) = &soa.data else {
        panic!("not a SOA");
    };
    assert_eq!(data.mname.to_string(), "ns.dns.cluster.local.");
    assert_eq!(data.rname.to_string(), "hostmaster.cluster.local.");
    assert_eq!(data.minimum, 5);
}

fn web() -> Service {
    service(
        "default",
        "web",
        &["10.43.0.20"],
        vec![port("http", 80, "TCP"), port("", 8443, "TCP")],
    )
}

#[test]
fn cluster_ip_service_has_a_srv_and_ptr() {
    let records = build(vec![web()], vec![]);
    assert_eq!(
        answers(&records, "web.default.svc.cluster.local.", RecordType::A),
        ["web.default.svc.cluster.local. 5 IN A 10.43.0.20"]
    );
    // IPv4 only: AAAA is NODATA, not NXDOMAIN.
    assert_nodata(
        &records,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        "cluster.local.",
    );
    // A named port has its SRV record, with the target's address added.
    let srv = ask(
        &records,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        lines(&srv.answers),
        [
            "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        lines(&srv.additionals),
        ["web.default.svc.cluster.local. 5 IN A 10.43.0.20"]
    );
    // The wrong protocol or an unnamed port has none.
    assert_nxdomain(
        &records,
        "_http._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
        "cluster.local.",
    );
    // The bare name lists every port, as CoreDNS does.
    assert_eq!(
        answers(&records, "web.default.svc.cluster.local.", RecordType::SRV),
        [
            "web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. 5 IN SRV 0 50 8443 web.default.svc.cluster.local.",
        ]
    );
    assert_eq!(
        answers(&records, "20.0.43.10.in-addr.arpa.", RecordType::PTR),
        ["20.0.43.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."]
    );
}

#[test]
fn dual_stack_service_has_aaaa_and_ip6_ptr() {
    let mut cluster = Cluster::new(Arc::new(
        Zone::new(
            "cluster.local",
            5,
            vec!["fd00:43::/112".parse().unwrap()],
            None,
        )
        .unwrap(),
    ));
    let key = cluster
        .apply_service(Arc::new(service(
            "default",
            "web",
            &["10.43.0.20", "fd00:43::20"],
            vec![port("http", 80, "TCP")],
        )))
        .unwrap();
    let mut records = cluster.records(1);
    records.set_synced(true);
    assert_eq!(key, ServiceKey::new("default", "web"));
    assert_eq!(
        answers(&records, "web.default.svc.cluster.local.", RecordType::AAAA),
        ["web.default.svc.cluster.local. 5 IN AAAA fd00:43::20"]
    );
    let reverse = Name::from(IpAddr::from_str("fd00:43::20").unwrap());
    assert_eq!(
        answers(&records, &reverse.to_string(), RecordType::PTR),
        [format!("{reverse} 5 IN PTR web.default.svc.cluster.local.")]
    );
    // 10.43.0.0/16 is not a reverse zone of this configuration.
    assert_eq!(
        records.resolve(
            &Name::from_str("20.0.43.10.in-addr.arpa.").unwrap(),
            RecordType::PTR
        ),
        Resolution::Forward
    );
}

#[test]
fn headless_service_answers_ready_endpoints_only() {
    let db = headless("db", "pg", vec![port("pg", 5432, "TCP")]);
    let endpoints = slice(
        "db",
        "pg-abcde",
        "pg",
        vec![
            endpoint("10.42.0.5", None, Some(true)),
            endpoint("10.42.0.6", None, None),
            endpoint("10.42.0.7", None, Some(false)),
        ],
        vec![slice_port("pg", 5432, "TCP")],
    );
    let records = build(vec![db.clone()], vec![endpoints.clone()]);
    assert_eq!(
        answers(&records, "pg.db.svc.cluster.local.", RecordType::A),
        [
            "pg.db.svc.cluster.local. 5 IN A 10.42.0.5",
            "pg.db.svc.cluster.local. 5 IN A 10.42.0.6",
        ]
    );
    // Endpoints without a hostname are named by their dashed IP.
    assert_eq!(
        answers(
            &records,
            "10-42-0-5.pg.db.svc.cluster.local.",
            RecordType::A
        ),
        ["10-42-0-5.pg.db.svc.cluster.local. 5 IN A 10.42.0.5"]
    );
    assert_nxdomain(
        &records,
        "10-42-0-7.pg.db.svc.cluster.local.",
        RecordType::A,
        "cluster.local.",
    );
    // publishNotReadyAddresses publishes the unready one too.
    let mut tolerant = db.clone();
    tolerant.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let records = build(vec![tolerant], vec![endpoints]);
    assert_eq!(
        answers(&records, "pg.db.svc.cluster.local.", RecordType::A).len(),
        3
    );
    // No ready endpoints: the name does not exist (the specification's
    // NXDOMAIN), and neither do its ports.
    let unready = slice(
        "db",
        "pg-abcde",
        "pg",
        vec![endpoint("10.42.0.7", None, Some(false))],
        vec![slice_port("pg", 5432, "TCP")],
    );
    let records = build(vec![db], vec![unready]);
    for name in [
        "pg.db.svc.cluster.local.",
        "_pg._tcp.pg.db.svc.cluster.local.",
    ] {
        assert_nxdomain(&records, name, RecordType::A, "cluster.local.");
    }
}

#[test]
fn statefulset_hostnames_have_a_srv_and_ptr() {
    let web = headless("default", "web", vec![port("web", 80, "TCP")]);
    let endpoints = slice(
        "default",
        "web-xyz",
        "web",
        vec![
            endpoint("10.42.0.10", Some("web-0"), Some(true)),
            endpoint("10.42.0.11", Some("web-1"), Some(true)),
        ],
        // The endpoint's port (the target port), not the Service's.
        vec![slice_port("web", 8080, "TCP")],
    );
    let records = build(vec![web], vec![endpoints]);
    assert_eq!(
        answers(
            &records,
            "web-0.web.default.svc.cluster.local.",
            RecordType::A
        ),
        ["web-0.web.default.svc.cluster.local. 5 IN A 10.42.0.10"]
    );
    // Case-insensitive, answered with the name as asked.
    assert_eq!(
        answers(
            &records,
            "WEB-1.Web.default.SVC.cluster.local.",
            RecordType::A
        ),
        ["WEB-1.Web.default.SVC.cluster.local. 5 IN A 10.42.0.11"]
    );
    let srv = ask(
        &records,
        "_web._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(srv.code, ResponseCode::NoError);
    assert_eq!(
        lines(&srv.answers),
        [
            "_web._tcp.web.default.svc.cluster.local. 5 IN SRV 0 50 8080 web-0.web.default.svc.cluster.local.",
            "_web._tcp.web.default.svc.cluster.local. 5 IN SRV 0 50 8080 web-1.web.default.svc.cluster.local.",
        ]
    );
    assert_eq!(
        lines(&srv.additionals),
        [
            "web-0.web.default.svc.cluster.local. 5 IN A 10.42.0.10",
            "web-1.web.default.svc.cluster.local. 5 IN A 10.42.0.11",
        ]
    );
    // `_tcp.web…` is the empty parent of `_web._tcp.web…`: NODATA.
    assert_nodata(
        &records,
        "_tcp.web.default.svc.cluster.local.",
        RecordType::A,
        "cluster.local.",
    );
    assert_eq!(
        answers(&records, "11.0.42.10.in-addr.arpa.", RecordType::PTR),
        ["11.0.42.10.in-addr.arpa. 5 IN PTR web-1.web.default.svc.cluster.local."]
    );
}

#[test]
fn external_name_is_a_cname_completed_by_the_server_or_in_zone() {
    let records = build(
        vec![
            web(),
            external("default", "search", "www.example.com"),
            external("default", "alias", "web.default.svc.cluster.local."),
            external("default", "by-ip", "192.0.2.1"),
        ],
        vec![],
    );
    let response = ask(&records, "search.default.svc.cluster.local.", RecordType::A);
    assert_eq!(response.code, ResponseCode::NoError);
    assert_eq!(
        lines(&response.answers),
        ["search.default.svc.cluster.local. 5 IN CNAME www.example.com."]
    );
    assert_eq!(
        response.chase,
        Some(Name::from_str("www.example.com.").unwrap())
    );
    // Asked for the CNAME itself, there is nothing to complete.
    let response = ask(
        &records,
        "search.default.svc.cluster.local.",
        RecordType::CNAME,
    );
    assert_eq!(response.answers.len(), 1);
    assert_eq!(response.chase, None);
    // A target in the zone is followed here.
    let response = ask(&records, "alias.default.svc.cluster.local.", RecordType::A);
    assert_eq!(response.chase, None);
    assert_eq!(
        lines(&response.answers),
        [
            "alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. 5 IN A 10.43.0.20",
        ]
    );
    // An IP is no alias: CoreDNS serves nothing for it.
    assert_nxdomain(
        &records,
        "by-ip.default.svc.cluster.local.",
        RecordType::A,
        "cluster.local.",
    );
}

#[test]
fn cname_loops_in_the_zone_end() {
    let records = build(
        vec![
            external("default", "a", "b.default.svc.cluster.local"),
            external("default", "b", "a.default.svc.cluster.local"),
        ],
        vec![],
    );
    let response = ask(&records, "a.default.svc.cluster.local.", RecordType::A);
    assert_eq!(response.chase, None);
    assert_eq!(response.answers.len(), MAX_CNAME_CHAIN + 1);
}

#[test]
fn pod_records_follow_the_name_in_existing_namespaces() {
    let records = build(vec![], vec![]);
    assert_eq!(
        answers(
            &records,
            "10-42-0-5.default.pod.cluster.local.",
            RecordType::A
        ),
        ["10-42-0-5.default.pod.cluster.local. 5 IN A 10.42.0.5"]
    );
    assert_eq!(
        answers(
            &records,
            "fd00--5.default.pod.cluster.local.",
            RecordType::AAAA
        ),
        ["fd00--5.default.pod.cluster.local. 5 IN AAAA fd00::5"]
    );
    assert_nodata(
        &records,
        "10-42-0-5.default.pod.cluster.local.",
        RecordType::AAAA,
        "cluster.local.",
    );
    for missing in [
        "10-42-0-5.nowhere.pod.cluster.local.",
        "10-42-0-x.default.pod.cluster.local.",
        "a.10-42-0-5.default.pod.cluster.local.",
    ] {
        assert_nxdomain(&records, missing, RecordType::A, "cluster.local.");
    }
    assert_nodata(
        &records,
        "default.pod.cluster.local.",
        RecordType::A,
        "cluster.local.",
    );
}

#[test]
fn missing_names_are_nxdomain_and_existing_ones_nodata() {
    let records = build(vec![web()], vec![]);
    for missing in [
        "nope.default.svc.cluster.local.",
        "web.nowhere.svc.cluster.local.",
        "nowhere.svc.cluster.local.",
        "x.y.z.web.default.svc.cluster.local.",
        "foo.cluster.local.",
    ] {
        assert_nxdomain(&records, missing, RecordType::A, "cluster.local.");
    }
    for (name, qtype) in [
        ("web.default.svc.cluster.local.", RecordType::TXT),
        ("web.default.svc.cluster.local.", RecordType::MX),
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("pod.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
        ("dns-version.cluster.local.", RecordType::A),
    ] {
        assert_nodata(&records, name, qtype, "cluster.local.");
    }
    // The SOA carries the index's serial.
    let response = ask(&records, "nope.default.svc.cluster.local.", RecordType::A);
    let RData::SOA(soa) = &response.authorities[0].data else {
        panic!("not a SOA");
    };
    assert_eq!(soa.serial, records.serial());
    // Zone transfers are refused.
    assert_eq!(
        ask(&records, "cluster.local.", RecordType::AXFR).code,
        ResponseCode::Refused
    );
}

#[test]
fn before_sync_missing_names_are_servfail() {
    let mut records = build(vec![web()], vec![]);
    records.set_synced(false);
    let response = ask(&records, "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(response.code, ResponseCode::ServFail);
    assert!(response.authorities.is_empty());
    let response = ask(&records, "99.0.43.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(response.code, ResponseCode::ServFail);
    // What is known is answered.
    assert_eq!(
        answers(&records, "web.default.svc.cluster.local.", RecordType::A).len(),
        1
    );
}

#[test]
fn zone_apex_version_and_name_server() {
    let records = build(vec![], vec![]);
    assert_eq!(
        answers(&records, "dns-version.cluster.local.", RecordType::TXT),
        [format!(
            "dns-version.cluster.local. 28800 IN TXT {SCHEMA_VERSION}"
        )]
    );
    let soa = ask(&records, "cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    let ns = ask(&records, "cluster.local.", RecordType::NS);
    assert_eq!(
        lines(&ns.answers),
        ["cluster.local. 5 IN NS ns.dns.cluster.local."]
    );
    assert_eq!(
        lines(&ns.additionals),
        ["ns.dns.cluster.local. 5 IN A 10.43.0.10"]
    );
    assert_eq!(
        answers(&records, "ns.dns.cluster.local.", RecordType::A),
        ["ns.dns.cluster.local. 5 IN A 10.43.0.10"]
    );
}

#[test]
fn reverse_names_outside_the_cidrs_and_other_names_are_forwarded() {
    let records = build(vec![web()], vec![]);
    for (name, qtype) in [
        ("1.2.0.192.in-addr.arpa.", RecordType::PTR),
        ("10.in-addr.arpa.", RecordType::PTR),
        ("www.example.com.", RecordType::A),
        ("local.", RecordType::SOA),
        ("x.in-addr.arpa.", RecordType::PTR),
    ] {
        assert_eq!(
            records.resolve(&Name::from_str(name).unwrap(), qtype),
            Resolution::Forward,
            "{name}"
        );
    }
    // Ours but unknown: NXDOMAIN with the reverse zone's SOA.
    assert_nxdomain(
        &records,
        "99.0.43.10.in-addr.arpa.",
        RecordType::PTR,
        "43.10.in-addr.arpa.",
    );
    assert_nxdomain(
        &records,
        "7.1.42.10.in-addr.arpa.",
        RecordType::PTR,
        "42.10.in-addr.arpa.",
    );
    // Networks inside a CIDR are empty non-terminals.
    assert_nodata(
        &records,
        "0.43.10.in-addr.arpa.",
        RecordType::PTR,
        "43.10.in-addr.arpa.",
    );
    // A known IP asked for another type: NODATA.
    assert_nodata(
        &records,
        "20.0.43.10.in-addr.arpa.",
        RecordType::A,
        "43.10.in-addr.arpa.",
    );
}

/// Queries covering every kind of record, to compare two indexes.
fn survey(records: &Records) -> Vec<(String, ResponseCode, Vec<String>, Vec<String>)> {
    let queries = [
        ("web.default.svc.cluster.local.", RecordType::A),
        ("web.default.svc.cluster.local.", RecordType::SRV),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ("10-42-0-1.web.default.svc.cluster.local.", RecordType::A),
        ("db-0.pg.db.svc.cluster.local.", RecordType::A),
        ("pg.db.svc.cluster.local.", RecordType::A),
        ("_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV),
        ("1.0.42.10.in-addr.arpa.", RecordType::PTR),
        ("9.0.42.10.in-addr.arpa.", RecordType::PTR),
        ("20.0.43.10.in-addr.arpa.", RecordType::PTR),
        ("db.svc.cluster.local.", RecordType::A),
    ];
    queries
        .iter()
        .map(|(name, qtype)| {
            let response = ask(records, name, *qtype);
            (
                format!("{name} {qtype}"),
                response.code,
                lines(&response.answers),
                lines(&response.additionals),
            )
        })
        .collect()
}

#[test]
fn incremental_updates_match_a_full_rebuild() {
    let mut cluster = Cluster::new(zone());
    let mut records = Records::new(zone(), 1);
    records.set_synced(true);
    // Apply one object at a time as watch events would, updating the index
    // with only the Services each event names.
    let mut apply = |cluster: &mut Cluster, keys: Vec<ServiceKey>| {
        for key in keys {
            records.set_service(&key, cluster.service_records(&key));
        }
        records.set_namespaces(cluster.namespaces().clone());
        let mut full = cluster.records(0);
        full.set_synced(true);
        assert_eq!(survey(&records), survey(&full));
        survey(&records)
    };
    cluster.apply_namespace(&namespace("default"));
    apply(&mut cluster, vec![]);
    let web_slice = Arc::new(slice(
        "default",
        "web-1",
        "web",
        vec![endpoint("10.42.0.1", None, Some(true))],
        vec![slice_port("http", 8080, "TCP")],
    ));
    // The slice may arrive before its Service.
    let keys = cluster.apply_slice(Arc::clone(&web_slice));
    let before = apply(&mut cluster, keys);
    assert_eq!(before[0].1, ResponseCode::NXDomain);
    let keys = cluster.apply_service(Arc::new(web())).into_iter().collect();
    let after = apply(&mut cluster, keys);
    assert_eq!(
        after[0].2,
        ["web.default.svc.cluster.local. 5 IN A 10.43.0.20"]
    );
    assert_eq!(
        after[3].2,
        ["10-42-0-1.web.default.svc.cluster.local. 5 IN A 10.42.0.1"]
    );
    // A Service in a namespace whose Namespace object is not seen yet still
    // makes the namespace exist.
    let keys = cluster
        .apply_service(Arc::new(headless(
            "db",
            "pg",
            vec![port("pg", 5432, "TCP")],
        )))
        .into_iter()
        .collect();
    apply(&mut cluster, keys);
    let pg_slice = Arc::new(slice(
        "db",
        "pg-1",
        "pg",
        vec![
            endpoint("10.42.0.9", Some("db-0"), Some(true)),
            endpoint("10.42.0.1", None, Some(true)),
        ],
        vec![slice_port("pg", 5432, "TCP")],
    ));
    let keys = cluster.apply_slice(Arc::clone(&pg_slice));
    let both = apply(&mut cluster, keys);
    assert_eq!(both[4].2.len(), 1);
    assert_eq!(both[10].1, ResponseCode::NoError);
    // 10.42.0.1 is an endpoint of both Services: two PTRs.
    assert_eq!(both[7].2.len(), 2);
    // The slice moves to another Service: the old one loses its endpoints.
    let mut moved = (*web_slice).clone();
    moved
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_SERVICE.into(), "other".into());
    let keys = cluster.apply_slice(Arc::new(moved.clone()));
    assert_eq!(
        keys,
        [
            ServiceKey::new("default", "web"),
            ServiceKey::new("default", "other")
        ]
    );
    let after_move = apply(&mut cluster, keys);
    assert_eq!(after_move[3].1, ResponseCode::NXDomain);
    assert_eq!(after_move[7].2.len(), 1);
    let keys = cluster.delete_slice(&moved);
    apply(&mut cluster, keys);
    let keys = cluster.delete_slice(&pg_slice);
    let gone = apply(&mut cluster, keys);
    assert_eq!(gone[5].1, ResponseCode::NXDomain);
    assert_eq!(gone[7].1, ResponseCode::NXDomain);
    let keys = cluster.delete_service(&web()).into_iter().collect();
    let empty = apply(&mut cluster, keys);
    assert_eq!(empty[0].1, ResponseCode::NXDomain);
    assert_eq!(empty[9].1, ResponseCode::NXDomain);
}

const LABEL_SERVICE: &str = super::cluster::LABEL_SERVICE_NAME;

#[test]
fn zone_rejects_bad_domains() {
    assert!(Zone::new("", 5, vec![], None).is_err());
    assert!(Zone::new("bad..domain", 5, vec![], None).is_err());
    let zone = Zone::new("Cluster.Local.", 5, vec![], None).unwrap();
    assert_eq!(zone.domain().to_string(), "cluster.local.");
}
