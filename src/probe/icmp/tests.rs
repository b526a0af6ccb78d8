//! The ICMP probe's tests: loopback rounds over raw and datagram sockets, reply matching,
//! options.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use socket2::Type as SockType;

use super::socket::*;
use super::wire::*;
use super::*;
use crate::base::labels::Labels;
use crate::probe::ProbeMetrics;

/// Opens a socket of `family` (type `hint` first) or says why the test is skipped; with
/// `NETMON_REQUIRE_ICMP=1` a missing socket fails the test instead.
fn socket_or_skip(family: Family, hint: SockType) -> Option<Arc<IcmpSocket>> {
    if family == Family::V6 && std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no ::1");
        return None;
    }
    match IcmpSocket::open(family, hint) {
        Ok(s) => Some(s),
        Err(e) if std::env::var("NETMON_REQUIRE_ICMP").as_deref() == Ok("1") => {
            panic!("NETMON_REQUIRE_ICMP=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A socket of exactly type `want`, or a skip message (e.g. no datagram sockets allowed).
fn socket_of_type(family: Family, want: SockType) -> Option<Arc<IcmpSocket>> {
    let s = socket_or_skip(family, want)?;
    if s.kind != want {
        eprintln!(
            "skipped: {} {want:?} ICMP sockets are not permitted here (got {})",
            family.as_str(),
            s.kind_str()
        );
        return None;
    }
    Some(s)
}

fn options(count: u32, interval_ms: u64) -> Options {
    Options {
        count,
        packet_interval: Duration(StdDuration::from_millis(interval_ms)),
        payload_size: 56,
        ip: IpPreference::Auto,
    }
}

struct Fixture {
    registry: prometheus_client::registry::Registry,
    metrics: ProbeMetrics,
    labels: Labels,
}

impl Fixture {
    fn new() -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ProbeMetrics::register(&mut registry);
        Fixture {
            registry,
            metrics,
            labels: vec![("host".into(), "h".into())],
        }
    }

    fn probe(&self, o: Options, timeout: StdDuration, s: &Arc<IcmpSocket>) -> IcmpProbe {
        let ctx = Context {
            labels: &self.labels,
            timeout,
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        };
        o.check_fits(timeout).unwrap();
        IcmpProbe::with_socket(o, &ctx, &self.metrics.icmp, s.clone())
    }

    fn text(&self) -> String {
        self.metrics.encode_with(&self.registry)
    }
}

fn target(host: &str) -> Target {
    Target { host: host.into() }
}

/// A round to `host` on `s`: every reply back, RTTs above zero and below 50 ms.
async fn loopback_round(s: Arc<IcmpSocket>, host: &str) {
    let f = Fixture::new();
    let p = f.probe(options(5, 20), StdDuration::from_secs(2), &s);
    let ok = p.run(&target(host)).await.unwrap();
    assert!(ok.latency > StdDuration::ZERO, "{ok:?}");
    assert!(ok.latency < StdDuration::from_millis(50), "{ok:?}");
    let text = f.text();
    assert!(text.contains("packets_sent_total{host=\"h\"} 5"), "{text}");
    assert!(
        text.contains("packets_received_total{host=\"h\"} 5"),
        "{text}"
    );
    assert!(text.contains("packet_loss_ratio{host=\"h\"} 0.0"), "{text}");
    // Under 50 ms of RTT and jitter with no loss, R stays above 93.2 − 160/40.
    let mos: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("netmon_mos{host=\"h\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no mos in {text}"));
    assert!(mos > 4.3 && mos < 4.41, "{text}");
}

#[tokio::test]
async fn loopback_v4_over_raw_and_dgram_sockets() {
    let mut ran = 0;
    for kind in [SockType::RAW, SockType::DGRAM] {
        if let Some(s) = socket_of_type(Family::V4, kind) {
            loopback_round(s, "127.0.0.1").await;
            ran += 1;
        }
    }
    if ran == 0 {
        eprintln!("skipped: no ICMPv4 socket");
    }
}

#[tokio::test]
async fn loopback_v6_over_raw_and_dgram_sockets() {
    for kind in [SockType::RAW, SockType::DGRAM] {
        if let Some(s) = socket_of_type(Family::V6, kind) {
            loopback_round(s, "::1").await;
        }
    }
}

/// Regression (surge-ping stamps the send after `send_to`): no RTT may read zero.
#[tokio::test]
async fn fifty_pings_have_no_zero_rtt() {
    let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
        return;
    };
    let table = s.table.clone();
    for _ in 0..50 {
        let (t0, rx, _reg) = send(&s, "127.0.0.1:0".parse().unwrap(), 56).await.unwrap();
        let reply = tokio::time::timeout(StdDuration::from_secs(2), rx)
            .await
            .unwrap()
            .unwrap();
        let rtt = reply.at.saturating_duration_since(t0);
        // A loopback round trip is two system calls and a wake-up: never below 1 µs.
        assert!(rtt >= StdDuration::from_micros(1), "rtt {rtt:?}");
        assert!(rtt < StdDuration::from_millis(50), "rtt {rtt:?}");
    }
    assert!(table.waiters.lock().unwrap().is_empty());
}

/// Our mean RTT against `ping`'s on the same path: never below a third of its minimum.
#[tokio::test]
async fn rtt_agrees_with_system_ping() {
    let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
        return;
    };
    let out = match std::process::Command::new("ping")
        .args(["-c", "5", "-i", "0.2", "-n", "127.0.0.1"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
        Ok(o) => {
            eprintln!(
                "skipped: ping failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: no `ping` binary ({e}); install iputils-ping");
            return;
        }
    };
    // rtt min/avg/max/mdev = 0.032/0.045/0.061/0.010 ms
    let stats: Vec<f64> = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .map(|v| {
            v.trim()
                .trim_end_matches("ms")
                .split('/')
                .filter_map(|x| x.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(stats.len(), 4, "cannot read ping's summary:\n{out}");
    let ping_min = stats[0] / 1000.0;
    let f = Fixture::new();
    let p = f.probe(options(5, 200), StdDuration::from_secs(2), &s);
    let ours = p
        .run(&target("127.0.0.1"))
        .await
        .unwrap()
        .latency
        .as_secs_f64();
    eprintln!(
        "ping min/avg/max {:?} ms, ours (socket {}) {:.3} ms",
        stats,
        s.kind_str(),
        ours * 1000.0
    );
    assert!(ours > 0.0);
    assert!(s.kernel_stamps(), "this kernel stamps ICMP receives, so must we");
    assert!(
        ours >= 0.3 * ping_min,
        "our mean {ours}s is below 0.3 x ping's min {ping_min}s"
    );
    assert!(ours < 0.05, "our mean {ours}s");
}

/// Concurrent probes of one host on one socket: each gets exactly its own replies.
#[tokio::test]
async fn concurrent_probes_of_one_host_get_their_own_replies() {
    for kind in [SockType::RAW, SockType::DGRAM] {
        let Some(s) = socket_of_type(Family::V4, kind) else {
            continue;
        };
        let fixtures: Vec<Fixture> = (0..4).map(|_| Fixture::new()).collect();
        let probes: Vec<IcmpProbe> = fixtures
            .iter()
            .map(|f| f.probe(options(10, 2), StdDuration::from_secs(2), &s))
            .collect();
        let t = target("127.0.0.1");
        let results = futures_util::future::join_all(probes.iter().map(|p| p.run(&t))).await;
        for (r, f) in results.iter().zip(&fixtures) {
            assert!(r.is_ok(), "{r:?}");
            let text = f.text();
            assert!(text.contains("packets_sent_total{host=\"h\"} 10"), "{text}");
            assert!(
                text.contains("packets_received_total{host=\"h\"} 10"),
                "{text}"
            );
        }
        assert!(s.table.waiters.lock().unwrap().is_empty());
    }
}

fn ipv4_header(len: usize, src: u8) -> Vec<u8> {
    let total = (20 + len) as u16;
    let mut h = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, src, 127, 0, 0, 1,
    ];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h
}

/// An echo reply from 127.0.0.`src` as a raw IPv4 socket would receive it.
fn raw_reply_from(src: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = echo_request(Family::V4, ident, seq, payload);
    icmp[0] = 0;
    let mut m = ipv4_header(icmp.len(), src);
    m.extend_from_slice(&icmp);
    m
}

fn raw_reply(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    raw_reply_from(1, ident, seq, payload)
}

#[test]
fn foreign_identifier_wrong_sequence_and_payload_are_ignored() {
    let table = Arc::new(Table::default());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let data = payload(56);
    let (seq, mut rx, _reg) = table.register(lo, data.clone()).unwrap();
    let now = std::time::Instant::now();
    let ours = 0x1234;
    // Another process's ping with our sequence number (raw sockets see every reply).
    table.dispatch(&raw_reply(0x9999, seq, &data), lo, now, SockType::RAW, ours);
    // Our identifier, a sequence nobody waits for (a late reply).
    table.dispatch(
        &raw_reply(ours, seq.wrapping_add(7), &data),
        lo,
        now,
        SockType::RAW,
        ours,
    );
    // Our identifier and sequence but another payload (a reply to an earlier request).
    table.dispatch(
        &raw_reply(ours, seq, &payload(56)),
        lo,
        now,
        SockType::RAW,
        ours,
    );
    // The right pair from another address.
    table.dispatch(
        &raw_reply_from(2, ours, seq, &data),
        "127.0.0.2".parse().unwrap(),
        now,
        SockType::RAW,
        ours,
    );
    assert!(rx.try_recv().is_err(), "a stray reply was delivered");
    assert_eq!(table.strays.load(Ordering::Relaxed), 4);
    table.dispatch(&raw_reply(ours, seq, &data), lo, now, SockType::RAW, ours);
    let r = rx.try_recv().unwrap();
    assert!(r.error.is_none());
}

#[test]
fn datagram_replies_are_matched_without_the_identifier() {
    let table = Arc::new(Table::default());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let data = payload(8);
    let (seq, mut rx, reg) = table.register(lo, data.clone()).unwrap();
    // The kernel rewrote the identifier to the socket's; only payload and seq decide.
    let mut m = echo_request(Family::V4, 4242, seq, &data);
    m[0] = 0;
    table.dispatch(&m, lo, std::time::Instant::now(), SockType::DGRAM, 1);
    assert!(rx.try_recv().is_ok());
    drop(reg);
    assert!(table.waiters.lock().unwrap().is_empty());
}

/// A destination unreachable quoting our request reaches the probe as an error, routed by
/// the quoted destination (the router that sent it is another address).
#[test]
fn icmp_errors_are_routed_by_the_quoted_request() {
    let table = Arc::new(Table::default());
    let dest: IpAddr = "127.0.0.9".parse().unwrap();
    let (seq, mut rx, _reg) = table.register(dest, payload(56)).unwrap();
    let ours = 0x4242;
    // Type 3 code 1, unused word, then the quoted IPv4 header and our echo header.
    let mut quoted = vec![
        0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 9,
    ];
    quoted.extend_from_slice(&echo_request(Family::V4, ours, seq, &[])[..8]);
    let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let mut m = ipv4_header(icmp.len(), 1);
    m.extend_from_slice(&icmp);
    let router: IpAddr = "127.0.0.1".parse().unwrap();
    table.dispatch(&m, router, std::time::Instant::now(), SockType::RAW, ours);
    let r = rx.try_recv().unwrap();
    assert_eq!(r.error.as_deref(), Some("destination host unreachable"));
}

#[test]
fn dropped_registration_frees_its_pair_only() {
    let table = Arc::new(Table::default());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let (_, _rx1, reg1) = table.register(lo, vec![]).unwrap();
    let (_, _rx2, _reg2) = table.register(lo, vec![]).unwrap();
    assert_eq!(table.waiters.lock().unwrap().len(), 2);
    drop(reg1);
    assert_eq!(table.waiters.lock().unwrap().len(), 1);
}

/// A crafted echo reply with a foreign identifier, sent on the wire from a second raw
/// socket, reaches our raw socket and is ignored; the right one is accepted.
#[tokio::test]
async fn crafted_foreign_reply_on_the_wire_is_ignored() {
    let Some(s) = socket_of_type(Family::V4, SockType::RAW) else {
        return;
    };
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let data = payload(56);
    let (seq, mut rx, _reg) = s.table.register(lo, data.clone()).unwrap();
    let crafter = socket2::Socket::new(
        socket2::Domain::IPV4,
        SockType::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
    .unwrap();
    let to: socket2::SockAddr = SocketAddr::from(([127, 0, 0, 1], 0)).into();
    let reply = |ident: u16| {
        let mut m = echo_request(Family::V4, ident, seq, &data);
        m[0] = 0;
        m[2] = 0;
        m[3] = 0;
        let sum = checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    };
    let before = s.strays();
    crafter
        .send_to(&reply(s.ident.wrapping_add(1)), &to)
        .unwrap();
    let t = std::time::Instant::now();
    while s.strays() == before && t.elapsed() < StdDuration::from_secs(2) {
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    assert!(s.strays() > before, "the crafted reply never arrived");
    assert!(rx.try_recv().is_err(), "a foreign reply was accepted");
    crafter.send_to(&reply(s.ident), &to).unwrap();
    let r = tokio::time::timeout(StdDuration::from_secs(2), rx).await;
    assert!(matches!(r, Ok(Ok(Reply { error: None, .. }))), "{r:?}");
}

/// No reply at all (the receive loop stopped): reason `loss`, every packet counted lost,
/// and the round ends before the timeout so the runner never reports `timeout`.
#[tokio::test]
async fn no_reply_is_loss_with_full_loss_ratio() {
    let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
        return;
    };
    s.recv.abort();
    let f = Fixture::new();
    let timeout = StdDuration::from_millis(300);
    let p = f.probe(options(3, 10), timeout, &s);
    let started = std::time::Instant::now();
    let e = p.run(&target("127.0.0.1")).await.unwrap_err();
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    assert_eq!(e.reason, Reason::Loss, "{e}");
    assert!(e.message.contains("0 of 3"), "{e}");
    let text = f.text();
    assert!(text.contains("packets_sent_total{host=\"h\"} 3"), "{text}");
    assert!(
        text.contains("packets_received_total{host=\"h\"} 0"),
        "{text}"
    );
    assert!(text.contains("packet_loss_ratio{host=\"h\"} 1.0"), "{text}");
    assert!(text.contains("\nnetmon_r_factor{host=\"h\"} 0.0"), "{text}");
    assert!(text.contains("\nnetmon_mos{host=\"h\"} 1.0"), "{text}");
    assert!(s.table.waiters.lock().unwrap().is_empty());
}

#[test]
fn checksum_matches_rfc_1071_example() {
    // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2, so the checksum is 220d.
    assert_eq!(
        checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
    // A message with its checksum in place sums to zero.
    let m = echo_request(Family::V4, 7, 9, b"odd");
    assert_eq!(checksum(&m), 0);
}

#[test]
fn options_are_validated_and_must_fit_the_timeout() {
    assert!(options(3, 200).validate().is_ok());
    assert!(options(0, 200).validate().unwrap_err().contains("count"));
    assert!(options(101, 200).validate().unwrap_err().contains("count"));
    assert!(
        options(3, 0)
            .validate()
            .unwrap_err()
            .contains("packet_interval")
    );
    let mut o = options(3, 200);
    o.payload_size = MAX_PAYLOAD + 1;
    assert!(o.validate().unwrap_err().contains("payload_size"));
    assert!(
        options(3, 200)
            .check_fits(StdDuration::from_secs(5))
            .is_ok()
    );
    let e = options(5, 1000)
        .check_fits(StdDuration::from_secs(5))
        .unwrap_err();
    assert!(e.contains("does not fit in the timeout 5s"), "{e}");
}

#[test]
fn options_come_from_the_config_with_defaults_and_typo_hints() {
    let text = "targets:\n  127.0.0.1:\n    services:\n      - ICMP\n      - { type: icmp, name: big, count: 5, packet_interval: 100ms, payload_size: 1400, ip: ipv4 }\n";
    let c = crate::config::loader::load(text, "t.yml").unwrap();
    let opts: Vec<_> = c.services().map(|s| s.options.clone()).collect();
    assert_eq!(
        opts[0],
        crate::probe::Options::Icmp(Options {
            count: 3,
            packet_interval: Duration(StdDuration::from_millis(200)),
            payload_size: 56,
            ip: IpPreference::Auto,
        })
    );
    assert_eq!(
        opts[1],
        crate::probe::Options::Icmp(Options {
            count: 5,
            packet_interval: Duration(StdDuration::from_millis(100)),
            payload_size: 1400,
            ip: IpPreference::Ipv4,
        })
    );
    let bad = "targets:\n  h:\n    services:\n      - { type: icmp, cuont: 5 }\n";
    let e = crate::config::loader::load(bad, "t.yml").unwrap_err().to_string();
    assert!(e.contains("t.yml:4:"), "{e}");
    assert!(e.contains("`count`"), "{e}");
    let bad = "targets:\n  h:\n    services:\n      - \"ICMP:7\"\n";
    assert!(crate::config::loader::load(bad, "t.yml").is_err());
}

#[test]
fn a_round_longer_than_the_timeout_fails_to_build() {
    let f = Fixture::new();
    let ctx = Context {
        labels: &f.labels,
        timeout: StdDuration::from_millis(500),
        rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
    };
    let e = IcmpProbe::new(options(3, 200), &ctx, &f.metrics.icmp).unwrap_err();
    assert!(e.0.contains("does not fit in the timeout 500ms"), "{}", e.0);
}

#[test]
fn permission_error_says_what_to_do() {
    let e = OpenError::Denied {
        family: "ipv4",
        detail: "Permission denied (os error 13)".into(),
    }
    .to_string();
    assert!(e.contains("setcap cap_net_raw+ep $(which netmon)"), "{e}");
    assert!(
        e.contains("sysctl -w net.ipv4.ping_group_range=\"0 2147483647\""),
        "{e}"
    );
}

#[tokio::test]
async fn unknown_host_is_dns() {
    let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
        return;
    };
    let f = Fixture::new();
    let p = f.probe(options(1, 10), StdDuration::from_secs(1), &s);
    let e = p.run(&target("no-such-host.invalid")).await.unwrap_err();
    assert_eq!(e.reason, Reason::Dns);
}
