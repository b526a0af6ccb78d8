use super::*;
use crate::probe::ProbeMetrics;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use testkit::ntp::Reply;
use testkit::udp::{Responder, now};

/// What the fake server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// A valid server reply with its clock `offset` seconds ahead of ours.
    Answer { offset: f64, stratum: u8 },
    /// A kiss-of-death (stratum 0, leap indicator 3 as servers send it) with this code.
    Kiss(&'static [u8; 4]),
    /// A reply with these header fields, answering our request, clock in step.
    Header {
        leap: u8,
        mode: u8,
        stratum: u8,
        refid: [u8; 4],
    },
    /// Sends the request back unchanged, as a UDP echo service does.
    Reflect,
    /// A 20-byte datagram.
    Short,
    /// Reads and never answers.
    Silent,
}

/// What the fake server sends for `request` in behaviour `b`.
fn reply(request: &[u8], received: SystemTime, b: Behaviour) -> Option<Vec<u8>> {
    let header = match b {
        Behaviour::Answer { offset, stratum } => Reply::server(stratum, offset),
        Behaviour::Kiss(code) => Reply::kiss(*code),
        Behaviour::Header {
            leap,
            mode,
            stratum,
            refid,
        } => Reply {
            leap,
            mode,
            stratum,
            refid,
            offset: 0.0,
        },
        Behaviour::Reflect => return Some(request.to_vec()),
        Behaviour::Short => return Some(vec![0x24; 20]),
        Behaviour::Silent => return None,
    };
    header.to(request, received)
}

/// An NTP responder on 127.0.0.1 whose behaviour the test can change, until dropped.
fn server(b: Arc<Mutex<Behaviour>>) -> Responder {
    server_on("127.0.0.1", b).unwrap()
}

/// The same on `ip`; `None` when `ip` cannot be bound (no IPv6 loopback on this machine).
fn server_on(ip: &str, b: Arc<Mutex<Behaviour>>) -> Option<Responder> {
    let socket = std::net::UdpSocket::bind((ip, 0)).ok()?;
    Some(Responder::on(
        socket,
        None,
        Arc::new(move |_, request: &[u8], _| {
            let behaviour = *b.lock().unwrap();
            reply(request, SystemTime::now(), behaviour)
                .map(now)
                .unwrap_or_default()
        }),
    ))
}

fn fixed(b: Behaviour) -> Responder {
    server(Arc::new(Mutex::new(b)))
}

fn probe(options: Options) -> NtpProbe {
    let labels: Labels = vec![("service".into(), "ntp".into())];
    let metrics = ProbeMetrics::register(&mut Registry::default());
    NtpProbe::new(
        options,
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.ntp,
    )
}

fn options(port: u16) -> Options {
    Options {
        port: Some(port),
        ..Options::default()
    }
}

fn target() -> Target {
    Target {
        host: "127.0.0.1".into(),
    }
}

async fn run(p: &NtpProbe) -> Outcome {
    tokio::time::timeout(Duration::from_secs(5), p.run(&target()))
        .await
        .expect("probe finished within 5s")
}

/// Asserts the measured offset is `want` within what the exchange can know: half the round
/// trip (the path asymmetry is unknowable) plus 2 ms for timestamp rounding.
fn assert_offset(p: &NtpProbe, latency: Duration, want: f64) {
    let got = p.handles.offset.get();
    let bound = latency.as_secs_f64() / 2.0 + 0.002;
    assert!(
        (got - want).abs() <= bound,
        "offset {got} is not {want} within {bound}"
    );
}

#[tokio::test]
async fn known_offset_and_stratum_are_measured() {
    for (offset, stratum) in [(0.5, 2u8), (-0.25, 1), (0.0, 15)] {
        let peer = fixed(Behaviour::Answer { offset, stratum });
        let port = peer.port();
        let p = probe(options(port));
        assert!(
            p.handles.offset.get().is_nan(),
            "no reading before the first probe"
        );
        assert_eq!(p.handles.stratum.get(), -1.0);
        let ok = run(&p).await.unwrap_or_else(|e| panic!("{offset}: {e}"));
        assert!(ok.latency > Duration::ZERO && ok.latency < Duration::from_secs(1));
        assert_offset(&p, ok.latency, offset);
        assert_eq!(p.handles.stratum.get(), f64::from(stratum));
    }
}

#[tokio::test]
async fn max_offset_bounds_the_offset_either_way() {
    for offset in [0.5, -0.5] {
        let peer = fixed(Behaviour::Answer { offset, stratum: 2 });
        let port = peer.port();
        let mut o = options(port);
        o.max_offset = Some(crate::base::values::Duration::parse("100ms").unwrap());
        let p = probe(o.clone());
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert!(
            e.message.contains("exceeds max_offset 100ms"),
            "{}",
            e.message
        );
        // The reading is kept: the server answered, its clock is just off.
        assert!((p.handles.offset.get() - offset).abs() < 0.1);
        assert_eq!(p.handles.stratum.get(), 2.0);
        o.max_offset = Some(crate::base::values::Duration::parse("1s").unwrap());
        run(&probe(o)).await.unwrap();
    }
}

#[tokio::test]
async fn kiss_of_death_is_status_with_stratum_zero() {
    let peer = fixed(Behaviour::Kiss(b"RATE"));
    let port = peer.port();
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("kiss-of-death RATE"), "{}", e.message);
    assert_eq!(p.handles.stratum.get(), 0.0);
    assert!(p.handles.offset.get().is_nan());
}

#[tokio::test]
async fn stratum_16_is_status() {
    let peer = fixed(Behaviour::Answer {
        offset: 0.0,
        stratum: 16,
    });
    let port = peer.port();
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(
        e.message.contains("not synchronised (stratum 16)"),
        "{}",
        e.message
    );
    assert_eq!(p.handles.stratum.get(), -1.0);
    assert!(p.handles.offset.get().is_nan());
}

/// Runs one probe against a server answering with these header fields.
async fn header(leap: u8, mode: u8, stratum: u8, refid: [u8; 4]) -> (Failure, NtpProbe) {
    let peer = fixed(Behaviour::Header {
        leap,
        mode,
        stratum,
        refid,
    });
    let port = peer.port();
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    (e, p)
}

#[tokio::test]
async fn unsynchronised_servers_are_status_with_what_was_seen() {
    // chronyd with no source: LI 3, stratum 0, refid 0. It used to pass for a kiss-of-death
    // with an unknown code and a stratum of 0.
    let (e, p) = header(3, 4, 0, [0; 4]).await;
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(
        e.message.contains(
            "not synchronised (leap indicator 3, stratum 0 without a kiss code, reference id 0x00000000)"
        ),
        "{}",
        e.message
    );
    assert!(!e.message.contains("kiss-of-death"), "{}", e.message);
    assert_eq!(p.handles.stratum.get(), -1.0);
    assert!(p.handles.offset.get().is_nan());

    for (leap, stratum, refid, want) in [
        (3, 2, [127, 0, 0, 1], "not synchronised (leap indicator 3)"),
        (
            3,
            16,
            [127, 0, 0, 1],
            "not synchronised (leap indicator 3, stratum 16)",
        ),
        (
            0,
            0,
            [0x7f, 0, 0, 1],
            "not synchronised (stratum 0 without a kiss code, reference id 0x7f000001)",
        ),
        (
            0,
            0,
            *b"rate",
            "not synchronised (stratum 0 without a kiss code, reference id \"rate\")",
        ),
    ] {
        let (e, p) = header(leap, 4, stratum, refid).await;
        assert_eq!(e.reason, Reason::Status, "{e}");
        assert!(e.message.contains(want), "{want}: {}", e.message);
        assert_eq!(p.handles.stratum.get(), -1.0, "{want}");
    }
}

#[tokio::test]
async fn leap_second_warnings_are_up() {
    for leap in [1, 2] {
        let peer = fixed(Behaviour::Header {
            leap,
            mode: 4,
            stratum: 3,
            refid: [10, 0, 0, 1],
        });
        let port = peer.port();
        let p = probe(options(port));
        run(&p).await.unwrap_or_else(|e| panic!("leap {leap}: {e}"));
        assert_eq!(p.handles.stratum.get(), 3.0);
    }
}

#[tokio::test]
async fn kiss_codes_are_named() {
    for (code, want, stratum) in [
        (b"RATE", "kiss-of-death RATE: the server asks us to slow down", 0.0),
        (b"DENY", "kiss-of-death DENY: the server denies us access", 0.0),
        (
            b"RSTR",
            "kiss-of-death RSTR: the server's access policy refuses us",
            0.0,
        ),
        (
            b"INIT",
            "kiss-of-death INIT: not synchronised: the server has not yet synchronised",
            -1.0,
        ),
        (
            b"STEP",
            "kiss-of-death STEP: not synchronised: the server stepped its clock",
            -1.0,
        ),
        (b"AUTH", "kiss-of-death AUTH: server authentication failed", 0.0),
        (b"NTSN", "kiss-of-death NTSN: the server rejected our NTS cookie", 0.0),
        (
            b"XYZW",
            "kiss-of-death XYZW: a kiss code RFC 5905 does not define",
            0.0,
        ),
        (b"DRO\0", "kiss-of-death DRO: a kiss code RFC 5905 does not define", 0.0),
    ] {
        let peer = fixed(Behaviour::Kiss(code));
        let port = peer.port();
        let p = probe(options(port));
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Status, "{e}");
        assert!(e.message.contains(want), "{want}: {}", e.message);
        assert_eq!(p.handles.stratum.get(), stratum, "{want}");
        assert!(p.handles.offset.get().is_nan());
    }
}

#[tokio::test]
async fn a_reflected_request_is_a_protocol_failure() {
    let peer = fixed(Behaviour::Reflect);
    let port = peer.port();
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(
        e.message.contains("our own request sent back (mode 3, client)"),
        "{}",
        e.message
    );
    assert_eq!(p.handles.stratum.get(), -1.0);
}

#[tokio::test]
async fn other_modes_and_reserved_strata_are_refused() {
    let (e, _) = header(0, 5, 2, [127, 0, 0, 1]).await;
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(
        e.message.contains("mode 5 (broadcast), not 4 (server)"),
        "{}",
        e.message
    );
    let (e, p) = header(0, 4, 200, [127, 0, 0, 1]).await;
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("stratum 200 is reserved"), "{}", e.message);
    assert_eq!(p.handles.stratum.get(), -1.0);
}

#[tokio::test]
async fn the_probe_bounds_its_own_wait() {
    let peer = fixed(Behaviour::Silent);
    let port = peer.port();
    let labels: Labels = vec![("service".into(), "ntp".into())];
    let metrics = ProbeMetrics::register(&mut Registry::default());
    let p = NtpProbe::new(
        options(port),
        &Context {
            labels: &labels,
            timeout: Duration::from_millis(200),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.ntp,
    );
    let e = tokio::time::timeout(Duration::from_secs(5), p.run(&target()))
        .await
        .expect("the probe stops by itself")
        .unwrap_err();
    assert_eq!(e.reason, Reason::Timeout, "{e}");
}

/// A header from a server one second ahead, answering `nonce`, sent at `t1`.
fn wire_reply(nonce: u64, t1: Timestamp) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = (4 << 3) | 4;
    p[1] = 2;
    p[24..32].copy_from_slice(&nonce.to_be_bytes());
    // T2 = T1 + 1.25 s, T3 = T2 + 0.5 s: with T4 = T1 + 1 s (below), offset 1 s and delay 0.5 s.
    let t2 = t1.0.wrapping_add(5 << 30);
    let t3 = t2.wrapping_add(1 << 31);
    p[32..40].copy_from_slice(&t2.to_be_bytes());
    p[40..48].copy_from_slice(&t3.to_be_bytes());
    p
}

#[test]
fn offset_and_delay_hold_across_the_ntp_era_boundary() {
    // 2036-02-07 06:28:16 UTC, when the 32-bit seconds field wraps to era 1.
    let era_end = UNIX_EPOCH + Duration::from_secs((1u64 << 32) - testkit::ntp::NTP_UNIX_DELTA);
    for t in [
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        era_end - Duration::from_millis(600),
        era_end,
    ] {
        let sent = Sent {
            nonce: 7,
            at: Timestamp::from_system_time(t),
            round_trip: Duration::from_secs(1),
        };
        let r = wire::judge(&wire_reply(7, sent.at), &sent).unwrap();
        assert!((r.offset - 1.0).abs() < 1e-6, "{t:?}: {r:?}");
        assert!((r.delay - 0.5).abs() < 1e-6, "{t:?}: {r:?}");
    }
}

#[test]
fn the_request_is_a_version_4_client_packet_carrying_the_nonce() {
    let r = wire::request(0x0102_0304_0506_0708);
    assert_eq!(r[0], 0x23, "LI 0, version 4, mode 3");
    assert!(r[1..40].iter().all(|&b| b == 0));
    assert_eq!(r[40..48], [1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn arbitrary_datagrams_never_panic_and_only_answers_to_us_pass() {
    use rand::Rng;
    let mut rng = rand::rng();
    let sent = Sent {
        nonce: 42,
        at: Timestamp::from_system_time(SystemTime::now()),
        round_trip: Duration::from_millis(1),
    };
    for _ in 0..20_000 {
        let len = rng.random_range(0..=96);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half of them carry our nonce, so the checks past the origin are reached too.
        if len >= 48 && rng.random_bool(0.5) {
            bytes[24..32].copy_from_slice(&42u64.to_be_bytes());
        }
        match wire::judge(&bytes, &sent) {
            Ok(r) => {
                assert!((1..=15).contains(&r.stratum), "{bytes:?}");
                assert_eq!(bytes[24..32], 42u64.to_be_bytes());
                assert_eq!(bytes[0] & 0x07, 4);
                assert_ne!(bytes[0] >> 6, 3);
            }
            Err(e) => {
                let _ = (e.to_string(), e.reason(), e.stratum_gauge());
            }
        }
    }
}

#[tokio::test]
async fn short_packet_is_a_protocol_failure() {
    let peer = fixed(Behaviour::Short);
    let port = peer.port();
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(e.message.contains("too short"), "{}", e.message);
    assert!(p.handles.offset.get().is_nan());
    assert_eq!(p.handles.stratum.get(), -1.0);
}

#[tokio::test]
async fn ipv6_server_and_the_ip_option() {
    let b = Behaviour::Answer {
        offset: 0.5,
        stratum: 2,
    };
    let Some(peer) = server_on("::1", Arc::new(Mutex::new(b))) else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    let port = peer.port();
    let target = Target { host: "::1".into() };
    // The client socket must be bound in the server's family for this to work.
    let p = probe(options(port));
    let ok = tokio::time::timeout(Duration::from_secs(5), p.run(&target))
        .await
        .unwrap()
        .unwrap();
    assert_offset(&p, ok.latency, 0.5);
    let mut o = options(port);
    o.ip = IpPreference::Ipv4;
    let e = tokio::time::timeout(Duration::from_secs(5), probe(o).run(&target))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.reason, Reason::Dns, "{e}");
}

#[tokio::test]
async fn closed_port_is_refused() {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    drop(s);
    let e = run(&probe(options(port))).await.unwrap_err();
    assert_eq!(e.reason, Reason::Refused, "{e}");
}

#[tokio::test]
async fn a_silent_server_clears_the_last_reading_at_the_timeout() {
    let b = Arc::new(Mutex::new(Behaviour::Answer {
        offset: 0.5,
        stratum: 3,
    }));
    let peer = server(b.clone());
    let port = peer.port();
    let p = probe(options(port));
    run(&p).await.unwrap();
    assert_eq!(p.handles.stratum.get(), 3.0);
    *b.lock().unwrap() = Behaviour::Silent;
    let waited = tokio::time::timeout(Duration::from_millis(300), p.run(&target())).await;
    assert!(waited.is_err(), "{waited:?}");
    assert!(p.handles.offset.get().is_nan());
    assert_eq!(p.handles.stratum.get(), -1.0);
}

#[tokio::test]
async fn forget_removes_the_series() {
    let mut registry = Registry::default();
    let metrics = ProbeMetrics::register(&mut registry);
    let labels: Labels = vec![("service".into(), "ntp".into())];
    let p = NtpProbe::new(
        Options::default(),
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.ntp,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("ntp_offset_seconds{service=\"ntp\"} NaN"),
        "{text}"
    );
    assert!(text.contains("ntp_stratum{service=\"ntp\"} -1"), "{text}");
    p.forget();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(!text.contains("service=\"ntp\""), "{text}");
}

fn service(yaml_service: &str) -> Result<crate::config::model::Service, String> {
    let text = format!("targets:\n  127.0.0.1:\n    services: [{yaml_service}]\n");
    crate::config::loader::load(&text, "t.yml")
        .map(|c| c.services().next().unwrap().clone())
        .map_err(|e| e.to_string())
}

fn ntp_options(s: &crate::config::model::Service) -> &Options {
    match &s.options {
        crate::probe::Options::Ntp(o) => o,
        other => panic!("not ntp options: {other:?}"),
    }
}

#[test]
fn config_defaults_shorthand_and_options() {
    let s = service("NTP").unwrap();
    assert_eq!(s.name, "ntp");
    assert_eq!(ntp_options(&s), &Options::default());
    assert_eq!(ntp_options(&s).port(), 123);
    let s = service("\"ntp:1123\"").unwrap();
    assert_eq!(s.name, "ntp:1123");
    assert_eq!(ntp_options(&s).port(), 1123);
    let s = service("{ type: ntp, max_offset: 100ms, ip: ipv6, port: 1234 }").unwrap();
    let o = ntp_options(&s);
    assert_eq!(o.max_offset.unwrap().0, Duration::from_millis(100));
    assert_eq!(o.ip, IpPreference::Ipv6);
    assert_eq!(o.port(), 1234);
    let e = service("{ type: ntp, max_ofset: 1s }").unwrap_err();
    assert!(e.contains("did you mean `max_offset`"), "{e}");
    let e = service("{ type: ntp, max_offset: soon }").unwrap_err();
    assert!(e.contains("invalid duration"), "{e}");
}
