//! End to end: the real binary probing an in-process DNS server (UDP and TCP) and NTP
//! responders on loopback, with the protocol series read back from a real scrape of /metrics.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Netmon, metric};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// How long the test servers live; they stop by themselves.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);

/// `a.test` A has two records; every other name is NXDOMAIN.
fn dns_answer(request: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(request).ok()?;
    let q = req.queries.first()?.clone();
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_query(q.clone());
    if q.name().to_lowercase().to_ascii() == "a.test." && q.query_type() == RecordType::A {
        for last in [1, 2] {
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, last))),
            ));
        }
    } else {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}

/// A DNS server on 127.0.0.1 serving UDP and TCP on one port, in threads.
fn dns_server() -> u16 {
    let (udp, tcp) = (0..20)
        .find_map(|_| {
            let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = udp.local_addr().ok()?.port();
            let tcp = TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some((udp, tcp))
        })
        .expect("a port free for both udp and tcp");
    let port = udp.local_addr().unwrap().port();
    let deadline = Instant::now() + SERVER_LIFETIME;
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                if let Some(r) = dns_answer(&buf[..n]) {
                    let _ = udp.send_to(&r, from);
                }
            }
        }
    });
    tcp.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            let Ok((mut s, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut prefix = [0u8; 2];
            if s.read_exact(&mut prefix).is_err() {
                continue;
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            if s.read_exact(&mut msg).is_err() {
                continue;
            }
            if let Some(r) = dns_answer(&msg) {
                let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&r);
                let _ = s.write_all(&framed);
            }
        }
    });
    port
}

/// `t + offset` as an NTP timestamp.
fn ntp_timestamp(t: SystemTime, offset: f64) -> [u8; 8] {
    let nanos = t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
        + (offset * 1e9).round() as i128
        + 2_208_988_800 * 1_000_000_000;
    let secs = (nanos / 1_000_000_000) as u32;
    let frac = (((nanos % 1_000_000_000) << 32) / 1_000_000_000) as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..].copy_from_slice(&frac.to_be_bytes());
    b
}

/// An NTP responder on 127.0.0.1 answering with `stratum` and `refid`, its clock `offset`
/// seconds ahead (stratum 0 makes it a kiss-of-death).
fn ntp_server(stratum: u8, refid: [u8; 4], offset: f64) -> u16 {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + SERVER_LIFETIME;
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                continue;
            };
            let received = SystemTime::now();
            if n < 48 {
                continue;
            }
            let mut p = [0u8; 48];
            p[0] = (4 << 3) | 4;
            p[1] = stratum;
            p[12..16].copy_from_slice(&refid);
            p[16..24].copy_from_slice(&ntp_timestamp(received, offset - 60.0));
            p[24..32].copy_from_slice(&buf[40..48]);
            p[32..40].copy_from_slice(&ntp_timestamp(received, offset));
            p[40..48].copy_from_slice(&ntp_timestamp(SystemTime::now(), offset));
            let _ = udp.send_to(&p, from);
        }
    });
    port
}

#[test]
fn dns_and_ntp_series_come_through_a_real_scrape() {
    let dns = dns_server();
    let ntp = ntp_server(2, *b"LOCL", 0.5);
    let kod = ntp_server(0, *b"RATE", 0.0);
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
