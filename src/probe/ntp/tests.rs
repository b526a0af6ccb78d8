use super::*;
use crate::probe::ProbeMetrics;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// What the fake server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// A valid server reply with its clock `offset` seconds ahead of ours.
    Answer { offset: f64, stratum: u8 },
    /// A kiss-of-death (stratum 0) with this code.
    Kiss(&'static [u8; 4]),
    /// A 20-byte datagram.
    Short,
    /// Reads and never answers.
    Silent,
}

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_DELTA: i128 = 2_208_988_800;

/// `t + offset` as a 64-bit NTP timestamp (RFC 5905 §6), computed in integers so the test's
/// own arithmetic adds no error.
fn ntp_timestamp(t: SystemTime, offset: f64) -> [u8; 8] {
    let nanos = t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
        + (offset * 1e9).round() as i128
        + NTP_UNIX_DELTA * 1_000_000_000;
    let secs = (nanos / 1_000_000_000) as u32;
    let frac = (((nanos % 1_000_000_000) << 32) / 1_000_000_000) as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..].copy_from_slice(&frac.to_be_bytes());
    b
}

/// A hand-built 48-byte server reply to `request`.
fn reply(request: &[u8], received: SystemTime, b: Behaviour) -> Option<Vec<u8>> {
    let (stratum, refid, offset): (u8, [u8; 4], f64) = match b {
        Behaviour::Answer { offset, stratum } => (stratum, *b"LOCL", offset),
        Behaviour::Kiss(code) => (0, *code, 0.0),
        Behaviour::Short => return Some(vec![0x24; 20]),
        Behaviour::Silent => return None,
    };
    if request.len() < 48 {
        return None;
    }
    let mut p = vec![0u8; 48];
    p[0] = (4 << 3) | 4; // LI 0, version 4, mode 4 (server)
    p[1] = stratum;
    p[2] = 6; // poll
    p[3] = 0xec; // precision 2^-20
    p[12..16].copy_from_slice(&refid);
    p[16..24].copy_from_slice(&ntp_timestamp(received - Duration::from_secs(60), offset));
    p[24..32].copy_from_slice(&request[40..48]); // originate = the client's transmit
    p[32..40].copy_from_slice(&ntp_timestamp(received, offset));
    p[40..48].copy_from_slice(&ntp_timestamp(SystemTime::now(), offset));
    Some(p)
}

/// An NTP responder on 127.0.0.1 whose behaviour the test can change. Returns the port.
async fn server(b: Arc<Mutex<Behaviour>>) -> u16 {
    server_on("127.0.0.1", b).await.unwrap()
}

/// The same on `ip`; `None` when `ip` cannot be bound (no IPv6 loopback on this machine).
async fn server_on(ip: &str, b: Arc<Mutex<Behaviour>>) -> Option<u16> {
    let socket = UdpSocket::bind((ip, 0)).await.ok()?;
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let received = SystemTime::now();
            let behaviour = *b.lock().unwrap();
            if let Some(r) = reply(&buf[..n], received, behaviour) {
                let _ = socket.send_to(&r, from).await;
            }
        }
    });
    Some(port)
}

async fn fixed(b: Behaviour) -> u16 {
    server(Arc::new(Mutex::new(b))).await
}

fn probe(options: Options) -> NtpProbe {
    let labels: Labels = vec![("service".into(), "ntp".into())];
    let metrics = ProbeMetrics::register(&mut Registry::default());
    NtpProbe::new(
        options,
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
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
        let port = fixed(Behaviour::Answer { offset, stratum }).await;
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
        let port = fixed(Behaviour::Answer { offset, stratum: 2 }).await;
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
    let port = fixed(Behaviour::Kiss(b"RATE")).await;
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("kiss-of-death RATE"), "{}", e.message);
    assert_eq!(p.handles.stratum.get(), 0.0);
    assert!(p.handles.offset.get().is_nan());
}

#[tokio::test]
async fn stratum_16_is_status() {
    let port = fixed(Behaviour::Answer {
        offset: 0.0,
        stratum: 16,
    })
    .await;
    let p = probe(options(port));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("not synchronized"), "{}", e.message);
    assert!(p.handles.offset.get().is_nan());
}

#[tokio::test]
async fn short_packet_is_a_protocol_failure() {
    let port = fixed(Behaviour::Short).await;
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
    let Some(port) = server_on("::1", Arc::new(Mutex::new(b))).await else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
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
    let port = server(b.clone()).await;
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
