//! End to end: the real binary pinging 127.0.0.1 and probing UDP services on loopback, read
//! back through /metrics and the log.
//!
//! The ICMP half needs an ICMP socket (root, `CAP_NET_RAW`, or `net.ipv4.ping_group_range`);
//! without one it prints why and is skipped, unless `NETMON_REQUIRE_ICMP=1`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start, metric, series};

/// Whether this process may open an ICMPv4 socket of either type (the binary runs with the
/// same privileges).
fn icmp_allowed() -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut errors = Vec::new();
    for ty in [Type::DGRAM, Type::RAW] {
        match Socket::new(Domain::IPV4, ty, Some(Protocol::ICMPV4)) {
            Ok(_) => return true,
            Err(e) => errors.push(format!("{ty:?}: {e}")),
        }
    }
    if std::env::var("NETMON_REQUIRE_ICMP").as_deref() == Ok("1") {
        panic!(
            "NETMON_REQUIRE_ICMP=1 but no ICMP socket: {}",
            errors.join("; ")
        );
    }
    eprintln!(
        "skipped the icmp part: no ICMP socket ({})",
        errors.join("; ")
    );
    false
}

/// A UDP responder on 127.0.0.1 answering `pong:` + each datagram, in a thread that stops
/// after 60 s or 10,000 datagrams.
fn udp_responder() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        let mut n_seen = 0;
        while start.elapsed() < Duration::from_secs(60) && n_seen < 10_000 {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                n_seen += 1;
                let mut reply = b"pong:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, peer);
            }
        }
    });
    port
}

fn closed_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

#[test]
fn icmp_and_udp_services_report_through_metrics() {
    let icmp = icmp_allowed();
    let up_port = udp_responder();
    let closed = closed_udp_port();
    let icmp_service = if icmp {
        "      - { type: icmp, count: 3, packet_interval: 50ms }\n"
    } else {
        ""
    };
    let config = format!(
        "defaults: {{ interval: 1s, timeout: 800ms }}\n\
         targets:\n  127.0.0.1:\n    services:\n{icmp_service}\
         \x20     - {{ type: udp, port: {up_port}, send: ping, expect_regex: '^pong:ping$' }}\n\
         \x20     - \"UDP:{closed}\"\n"
    );
    let mut n = Netmon::start(&config, &[]);
    let udp_up = format!("udp:{up_port}");
    let udp_closed = format!("udp:{closed}");
    let up = [("protocol", "udp"), ("service", udp_up.as_str())];
    n.wait_metric("netmon_up", &up, Duration::from_secs(10), |v| v == 1.0);
    // Series exist (at 0) before the first result: wait for the failure itself.
    let refused = [("service", udp_closed.as_str()), ("reason", "refused")];
    n.wait_metric(
        "netmon_probe_failures_total",
        &refused,
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    let text = n.scrape();
    let down = [("protocol", "udp"), ("service", udp_closed.as_str())];
    assert_eq!(metric(&text, "netmon_up", &down), Some(0.0), "{text}");
    let latency = metric(&text, "netmon_latency_seconds", &up).unwrap();
    assert!(latency > 0.0 && latency < 0.1, "udp latency {latency}");

    if !icmp {
        return;
    }
    let labels = [
        ("host", "127.0.0.1"),
        ("protocol", "icmp"),
        ("service", "icmp"),
    ];
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);
    // The first round's packets are recorded before its result is published; wait for two
    // rounds so the counters are past the first.
    n.wait_metric(
        "netmon_packets_sent_total",
        &labels,
        Duration::from_secs(10),
        |v| v >= 6.0,
    );
    let text = n.scrape();
    let loss = metric(&text, "netmon_packet_loss_ratio", &labels).unwrap();
    assert_eq!(loss, 0.0, "{text}");
    let buckets = series(&text, "netmon_rtt_seconds_bucket", &labels);
    assert!(buckets.len() > 10, "{text}");
    let inf = buckets
        .iter()
        .find(|(l, _)| l.contains("le=\"+Inf\""))
        .map(|(_, v)| *v)
        .unwrap();
    let received = metric(&text, "netmon_packets_received_total", &labels).unwrap();
    // Counters are bumped before the histogram, so a scrape may catch the latter behind.
    assert!(
        inf >= 1.0 && inf <= received,
        "replies missing from the histogram:\n{text}"
    );
    let latency = metric(&text, "netmon_latency_seconds", &labels).unwrap();
    assert!(latency > 0.0 && latency < 0.05, "icmp latency {latency}");
    let opened = n.wait_log("icmp socket opened", Duration::from_secs(1));
    assert!(
        opened.contains("socket=\"raw\"") || opened.contains("socket=\"dgram\""),
        "{opened}"
    );
}
