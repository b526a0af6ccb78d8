//! STAMP on loopback: the reflector's defences (source ports of well-known services and
//! STAMP's own, the allow-list, short and oversized packets, the per-source rate limit), each
//! drop counted by reason while a legitimate sender keeps getting its answers; and the `stamp`
//! probe end to end through `serve`, with the reflector hosted by the same `serve` and moved
//! by a reload. Interoperability with another implementation is tests/real/stamp.rs.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netmon::stamp::reflector::{Metrics, StampReflector};
use netmon::stamp::settings::Settings;
use netmon::stamp::wire::{ErrorEstimate, ReflectorPacket, SenderPacket, Timestamp};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::support::{Netmon, Start, metric};

fn counters(registry: &Registry) -> std::collections::HashMap<String, u64> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("netmon_stamp_reflector_packets_total{result=\""))
        .filter_map(|l| {
            let (result, value) = l.split_once("\"} ")?;
            Some((result.to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Waits (up to 3 s) until `result` has counted at least `at_least`; returns its value.
fn counted(registry: &Registry, result: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = counters(registry).get(result).copied().unwrap_or(0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn packet(seq: u32, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    SenderPacket {
        seq,
        timestamp: Timestamp::now(),
        error: ErrorEstimate::NETMON,
        ssid: 1,
    }
    .encode_into(size, &mut out)
    .unwrap();
    out
}

/// Sends `n` packets of `size` bytes from `local` to `peer` 1 ms apart; returns how many were
/// answered within 300 ms of the last, or `None` when `local` cannot be bound.
fn send_from(local: &str, peer: SocketAddr, n: u32, size: usize) -> Option<usize> {
    let s = match UdpSocket::bind(local) {
        Ok(s) => s,
        Err(e) => {
            println!("skipped: cannot bind {local} ({e}); ports below 1024 need root");
            return None;
        }
    };
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for i in 0..n {
        // A too-short packet is cut from a real one.
        let p = packet(i, size.max(44));
        s.send_to(&p[..size], peer).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while let Ok((len, _)) = s.recv_from(&mut buf) {
        assert!(ReflectorPacket::decode(&buf[..len]).is_ok());
        assert_eq!(len, size, "a reply is as long as its request");
        got += 1;
    }
    Some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_defences_drop_and_count_by_reason() {
    let mut registry = Registry::default();
    let metrics = Metrics::register(registry.sub_registry_with_prefix("netmon"));
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: vec!["127.0.0.1".parse().unwrap(), "127.0.0.3".parse().unwrap()],
        rate_limit: 100,
        max_size: 200,
    };
    let token = CancellationToken::new();
    let r = StampReflector::start(settings, &metrics, &token)
        .await
        .unwrap();
    let peer = r.local_addr();
    let reg = &registry;
    tokio::task::spawn_blocking(move || {
        // A legitimate sender is answered, packet for packet, at every allowed size.
        assert_eq!(send_from("127.0.0.1:0", peer, 5, 44), Some(5));
        assert_eq!(send_from("127.0.0.1:0", peer, 5, 200), Some(5));
        // Too short, too large, not allowed: never answered.
        assert_eq!(send_from("127.0.0.1:0", peer, 3, 20), Some(0));
        assert_eq!(send_from("127.0.0.1:0", peer, 3, 201), Some(0));
        assert_eq!(send_from("127.0.0.2:0", peer, 3, 44), Some(0));
        // From DNS's port and STAMP's own (another reflector's answers, or spoofed to start
        // a loop between two reflectors): never answered.
        let mut from_ports = 0;
        for port in [53, 862] {
            if let Some(got) = send_from(&format!("127.0.0.1:{port}"), peer, 3, 44) {
                assert_eq!(got, 0, "answered source port {port}");
                from_ports += 3;
            }
        }
        from_ports
    })
    .await
    .map(|from_ports| {
        assert_eq!(counted(reg, "dropped_too_short", 3), 3);
        assert_eq!(counted(reg, "dropped_too_large", 3), 3);
        assert_eq!(counted(reg, "dropped_not_allowed", 3), 3);
        assert_eq!(counted(reg, "dropped_source_port", from_ports), from_ports);
        assert_eq!(counted(reg, "reflected", 10), 10);
    })
    .unwrap();

    // A burst from one source far over its limit (100/s, a burst of 100) is cut down; another
    // source is still answered meanwhile.
    let answered = tokio::task::spawn_blocking(move || {
        let flood = UdpSocket::bind("127.0.0.3:0").unwrap();
        let p = packet(1, 44);
        for i in 0..400 {
            flood.send_to(&p, peer).unwrap();
            // Paced a little, so the socket's queue is not what drops them.
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        send_from("127.0.0.1:0", peer, 5, 44)
    })
    .await
    .unwrap();
    assert_eq!(answered, Some(5));
    let limited = counted(&registry, "dropped_rate_limit", 200);
    assert!(limited >= 200, "{:?}", counters(&registry));
    r.stop().await;
}

fn free_udp_port() -> u16 {
    // Bound then released: the caller binds it again at once (tests must not use fixed ports).
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn hosted_config(port: u16) -> String {
    format!(
        "defaults: {{ interval: 500ms, timeout: 400ms }}\n\
         stamp_reflector: {{ listen: \"127.0.0.1:{port}\", allow: [127.0.0.0/8] }}\n\
         targets:\n  \
           localhost:\n    \
             services:\n      \
               - {{ type: stamp, name: stamp, port: {port}, count: 3, packet_interval: 10ms, reply_timeout: 200ms }}\n"
    )
}

#[test]
fn stamp_probe_end_to_end_with_the_reflector_hosted_by_serve() {
    let port = free_udp_port();
    let mut n = Netmon::start(&hosted_config(port), &[]);
    n.wait_log("stamp reflector listening on", Duration::from_secs(10));
    let labels = [
        ("host", "localhost"),
        ("protocol", "stamp"),
        ("service", "stamp"),
    ];
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);
    let text = n.scrape();
    assert!(metric(&text, "netmon_rtt_seconds_count", &labels).unwrap_or(0.0) >= 3.0);
    assert_eq!(
        metric(&text, "netmon_packet_loss_ratio", &labels),
        Some(0.0)
    );
    for name in [
        "netmon_stamp_forward_delay_seconds",
        "netmon_stamp_backward_delay_seconds",
        "netmon_stamp_reflector_dwell_seconds",
        "netmon_stamp_reflector_clock_synchronised",
        "netmon_stamp_reordered_total",
        "netmon_stamp_duplicates_total",
    ] {
        assert!(metric(&text, name, &labels).is_some(), "no {name}:\n{text}");
    }
    assert!(
        metric(
            &text,
            "netmon_stamp_reflector_packets_total",
            &[("result", "reflected")]
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );

    // A reload that moves the reflector stops the old one and starts the new one.
    let moved = free_udp_port();
    n.write_config(&hosted_config(moved));
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    n.wait_log("stamp reflector stopped", Duration::from_secs(5));
    n.wait_log(
        &format!("stamp reflector listening on 127.0.0.1:{moved}"),
        Duration::from_secs(5),
    );
    let old = UdpSocket::bind("127.0.0.1:0").unwrap();
    old.connect(("127.0.0.1", port)).unwrap();
    old.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = old.send(&packet(1, 44));
    let mut buf = [0u8; 64];
    assert!(old.recv(&mut buf).is_err(), "the old port still answers");
    let probes = metric(&n.scrape(), "netmon_probes_total", &labels).unwrap_or(0.0);
    n.wait_metric(
        "netmon_probes_total",
        &labels,
        Duration::from_secs(10),
        |v| v >= probes + 2.0,
    );
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);

    // A reflector that cannot start refuses the reload and keeps the running one.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    n.write_config(&hosted_config(busy));
    let (status, body) = n.post("/-/reload");
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("stamp reflector"), "{body}");
    let again = UdpSocket::bind("127.0.0.1:0").unwrap();
    again.connect(("127.0.0.1", moved)).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    again.send(&packet(2, 44)).unwrap();
    let len = again.recv(&mut buf).expect("the running reflector answers");
    assert_eq!(ReflectorPacket::decode(&buf[..len]).unwrap().sender_seq, 2);
    drop(taken);
}
