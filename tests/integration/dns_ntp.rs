//! End to end: the real binary probing an in-process DNS server (UDP and TCP) and NTP
//! responders on loopback, with the protocol series read back from a real scrape of /metrics.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use crate::support::{Netmon, Start, metric};
use testkit::dns::{A, NOERROR, NXDOMAIN, Query, Server};
use testkit::ntp::Reply;
use testkit::udp::{Responder, now};

/// `a.test` A has two records; every other name is NXDOMAIN.
fn dns_server() -> Server {
    Server::start(|request, _| {
        let Some(q) = Query::parse(request) else {
            return Vec::new();
        };
        let two = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        now(if q.name == "a.test" && q.qtype == A {
            q.answer(NOERROR, &two, 60)
        } else {
            q.answer(NXDOMAIN, &[], 0)
        })
    })
}

/// An NTP responder on 127.0.0.1 answering with `stratum` and `refid`, its clock `offset`
/// seconds ahead (stratum 0 makes it a kiss-of-death).
fn ntp_server(stratum: u8, refid: [u8; 4], offset: f64) -> Responder {
    let reply = Reply {
        refid,
        ..Reply::server(stratum, offset)
    };
    Responder::start(move |_, request, _| {
        reply
            .to(request, SystemTime::now())
            .map(now)
            .unwrap_or_default()
    })
}

#[test]
fn dns_and_ntp_series_come_through_a_real_scrape() {
    let dns_server = dns_server();
    let ntp_server_ahead = ntp_server(2, *b"LOCL", 0.5);
    let kod_server = ntp_server(0, *b"RATE", 0.0);
    let (dns, ntp, kod) = (
        dns_server.port(),
        ntp_server_ahead.port(),
        kod_server.port(),
    );
    let config = format!(
        "defaults: {{ interval: 500ms, timeout: 300ms }}
targets:
  127.0.0.1:
    services:
      - {{ type: dns, port: {dns}, query_name: a.test, expect_answer_regex: '192\\.0\\.2\\.2$' }}
      - {{ type: dns, name: dns-tcp, transport: tcp, port: {dns}, query_name: a.test }}
      - {{ type: dns, name: dns-missing, port: {dns}, query_name: missing.test }}
      - {{ type: ntp, port: {ntp}, max_offset: 2s }}
      - {{ type: ntp, name: ntp-kod, port: {kod} }}
"
    );
    let n = Netmon::start(&config, &[]);
    let wait = Duration::from_secs(10);
    let dns_svc = format!("dns:{dns}");
    let ntp_svc = format!("ntp:{ntp}");

    for svc in [dns_svc.as_str(), "dns-tcp"] {
        let l = [("protocol", "dns"), ("service", svc)];
        n.wait_metric("netmon_up", &l, wait, |v| v == 1.0);
        let text = n.scrape();
        assert_eq!(metric(&text, "netmon_dns_rcode", &l), Some(0.0), "{text}");
        assert_eq!(
            metric(&text, "netmon_dns_answer_records", &l),
            Some(2.0),
            "{text}"
        );
    }

    let l = [("protocol", "dns"), ("service", "dns-missing")];
    n.wait_metric(
        "netmon_probe_failures_total",
        &[("service", "dns-missing"), ("reason", "status")],
        wait,
        |v| v >= 1.0,
    );
    let text = n.scrape();
    assert_eq!(metric(&text, "netmon_up", &l), Some(0.0), "{text}");
    assert_eq!(metric(&text, "netmon_dns_rcode", &l), Some(3.0), "{text}");
    assert_eq!(
        metric(&text, "netmon_dns_answer_records", &l),
        Some(0.0),
        "{text}"
    );

    let l = [("protocol", "ntp"), ("service", ntp_svc.as_str())];
    n.wait_metric("netmon_up", &l, wait, |v| v == 1.0);
    let text = n.scrape();
    let offset = metric(&text, "netmon_ntp_offset_seconds", &l).unwrap();
    assert!((offset - 0.5).abs() < 0.05, "offset {offset}:\n{text}");
    assert_eq!(metric(&text, "netmon_ntp_stratum", &l), Some(2.0), "{text}");
    let latency = metric(&text, "netmon_latency_seconds", &l).unwrap();
    assert!(latency > 0.0 && latency < 0.3, "latency {latency}");

    let l = [("protocol", "ntp"), ("service", "ntp-kod")];
    n.wait_metric(
        "netmon_probe_failures_total",
        &[("service", "ntp-kod"), ("reason", "status")],
        wait,
        |v| v >= 1.0,
    );
    let text = n.scrape();
    assert_eq!(metric(&text, "netmon_up", &l), Some(0.0), "{text}");
    assert_eq!(metric(&text, "netmon_ntp_stratum", &l), Some(0.0), "{text}");
    assert!(
        metric(&text, "netmon_ntp_offset_seconds", &l).is_some_and(f64::is_nan),
        "{text}"
    );
}
