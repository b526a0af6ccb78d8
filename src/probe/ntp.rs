//! The NTP probe: one SNTP exchange (RFC 4330) with host:port through rsntp's
//! `AsyncSntpClient`, bound to the family of the server's address.
//!
//! Up when a valid server reply arrives (rsntp checks the mode, that the reply answers our
//! request's transmit timestamp, a non-zero transmit timestamp, stratum 1–15, no leap-indicator
//! alarm, and reports a kiss-of-death for stratum 0) and, if `max_offset` is set, when
//! `|offset| <= max_offset`. Latency is the round-trip delay of the exchange,
//! `(T4 - T1) - (T3 - T2)`, i.e. without the server's own processing time.
//!
//! rsntp reports stratum 16 and a leap-indicator alarm as one error ("server not
//! synchronized") without the packet, so the stratum gauge reads -1 (unknown) in that case and
//! the message says both are possible. It reads the first datagram from the server's address
//! only (the socket is connected) and judges it: a reply that does not answer our request is
//! reason `protocol` at once, not ignored.

use std::sync::Arc;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use rsntp::{AsyncSntpClient, KissCode, ProtocolError, SynchronizationError};
use serde::{Deserialize, Serialize};

use crate::base::labels::{FGauge, Labels};
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::IpPreference;
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe};

/// The NTP port.
pub const DEFAULT_PORT: u16 = 123;

/// rsntp's own reply timeout. The runner's timeout (always shorter in practice) drops the probe
/// first; this only bounds the exchange if the probe were run without one.
const RSNTP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Options of an `ntp` service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The server's port, 123 unless set (`NTP:1123` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The largest clock offset, either way, that still counts as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offset: Option<crate::base::values::Duration>,
    /// Address family of the server when its name resolves to both.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.port == Some(0) {
            return Err("port 0 is not a port to probe: use 1-65535".into());
        }
        Ok(())
    }

    /// The port queried.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

/// The `ntp` families.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    offset: Family<Labels, FGauge>,
    stratum: Family<Labels, FGauge>,
}

impl Metrics {
    /// Registers `netmon_ntp_offset_seconds` and `netmon_ntp_stratum`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register_with_unit(
            "ntp_offset",
            "Clock offset of the server against this host in the last valid reply (positive: the server is ahead); NaN when the last probe got none",
            Unit::Seconds,
            m.offset.clone(),
        );
        registry.register(
            "ntp_stratum",
            "Stratum of the server in the last reply (0 for a kiss-of-death); -1 when unknown",
            m.stratum.clone(),
        );
        m
    }
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        Metrics::register(registry)
    }
}

/// One service's handles into the `ntp` families.
#[derive(Debug, Clone)]
struct Handles {
    offset: FGauge,
    stratum: FGauge,
}

impl Handles {
    fn no_reading(&self, stratum: f64) {
        self.offset.set(f64::NAN);
        self.stratum.set(stratum);
    }
}

/// Clears the readings unless disarmed: covers every early return and the runner dropping the
/// probe at its timeout, so a dead server never shows its last good offset.
struct NoReadingGuard<'a>(Option<&'a Handles>);

impl Drop for NoReadingGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.0 {
            h.no_reading(-1.0);
        }
    }
}

/// The `ntp` protocol in the table of protocols.
#[derive(Debug)]
pub struct Ntp;

impl Definition for Ntp {
    const NAME: &'static str = "ntp";
    const PORT: PortRule = PortRule::Default(DEFAULT_PORT);
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate()
    }

    fn port(options: &Options) -> Option<u16> {
        Some(options.port())
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(NtpProbe::new(options.clone(), ctx, metrics)))
    }
}

/// Probes one NTP server.
#[derive(Debug)]
pub struct NtpProbe {
    options: Options,
    handles: Handles,
    families: Metrics,
    labels: Labels,
}

impl NtpProbe {
    /// Builds the probe and creates its series (no reading until the first reply).
    pub fn new(options: Options, ctx: &Context<'_>, metrics: &Metrics) -> Self {
        let families = metrics.clone();
        let handles = Handles {
            offset: families.offset.get_or_create_owned(ctx.labels),
            stratum: families.stratum.get_or_create_owned(ctx.labels),
        };
        handles.no_reading(-1.0);
        NtpProbe {
            options,
            handles,
            families,
            labels: ctx.labels.clone(),
        }
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let mut guard = NoReadingGuard(Some(&self.handles));
        let addrs = resolve::resolve(&target.host, self.options.port(), self.options.ip).await?;
        let addr = *addrs
            .first()
            .ok_or_else(|| Failure::new(Reason::Dns, "no address to query"))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let client = AsyncSntpClient::with_config(
            rsntp::Config::default()
                .bind_address(bind)
                .timeout(RSNTP_TIMEOUT),
        );
        let result = match client.synchronize(addr).await {
            Ok(r) => r,
            Err(e) => {
                guard.0 = None;
                return Err(self.failure(addr, e));
            }
        };
        guard.0 = None;
        let stratum = result.stratum();
        let offset = result.clock_offset().as_secs_f64();
        let delay = result.round_trip_delay().as_secs_f64();
        self.handles.stratum.set(f64::from(stratum));
        self.handles.offset.set(offset);
        // rsntp already refuses 0 (kiss-of-death) and 16+; kept so "up" never rests on that.
        if !(1..=15).contains(&stratum) {
            return Err(Failure::new(
                Reason::Status,
                format!("{addr} replied with stratum {stratum}, outside 1-15"),
            ));
        }
        if let Some(max) = self.options.max_offset {
            if offset.abs() > max.0.as_secs_f64() {
                return Err(Failure::new(
                    Reason::Mismatch,
                    format!("clock offset {offset:+.6}s of {addr} exceeds max_offset {max}"),
                ));
            }
        }
        // A negative delay means the server's T3 - T2 exceeds our whole round trip: clock
        // granularity on a fast path; report the smallest positive latency, never 0.
        let latency = Duration::try_from_secs_f64(delay.max(0.0)).unwrap_or(Duration::ZERO);
        Ok(Success::new(latency.max(Duration::from_nanos(1))))
    }

    /// Classifies an rsntp error and records what it tells about the server.
    fn failure(&self, addr: SocketAddr, e: SynchronizationError) -> Failure {
        match e {
            SynchronizationError::IOError(io) => {
                self.handles.no_reading(-1.0);
                Failure::io(&format!("ntp exchange with {addr}"), &io)
            }
            SynchronizationError::ProtocolError(ProtocolError::KissODeath(code)) => {
                // A kiss-of-death is a stratum 0 packet (RFC 5905 §7.4).
                self.handles.no_reading(0.0);
                Failure::new(
                    Reason::Status,
                    format!(
                        "kiss-of-death {} from {addr}: {}",
                        kiss_code(code),
                        lowercase_first(code.to_string().trim())
                    ),
                )
            }
            SynchronizationError::ProtocolError(ProtocolError::ServerNotSynchronized) => {
                self.handles.no_reading(-1.0);
                Failure::new(
                    Reason::Status,
                    format!(
                        "{addr} is not synchronized (stratum 16 or leap indicator alarm; rsntp does not say which)"
                    ),
                )
            }
            SynchronizationError::ProtocolError(p) => {
                self.handles.no_reading(-1.0);
                Failure::new(
                    Reason::Protocol,
                    format!(
                        "malformed ntp reply from {addr}: {}",
                        lowercase_first(&p.to_string())
                    ),
                )
            }
        }
    }
}

/// The four-letter code of RFC 5905 §7.4 (rsntp keeps only the meaning).
fn kiss_code(code: KissCode) -> &'static str {
    match code {
        KissCode::Unknown => "(unknown code)",
        KissCode::AssociationBelongsToAnycastServer => "ACST",
        KissCode::AssociationBelongsToBroadcastServer => "BCST",
        KissCode::AssociationBelongsToManycastServer => "MCST",
        KissCode::ServerAuthenticationFailed => "AUTH",
        KissCode::AutokeySequenceFailed => "AUTO",
        KissCode::CryptographicAuthenticationFailed => "CRYP",
        KissCode::AccessDenied => "DENY/RSTR",
        KissCode::LostPeer => "DROP",
        KissCode::AssociationNotYetSynchronized => "INIT",
        KissCode::NoKeyFound => "NKEY",
        KissCode::RateExceeded => "RATE",
        KissCode::TinkeringWithAssociation => "RMOT",
        KissCode::StepChange => "STEP",
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Probe for NtpProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.families.offset.remove(&self.labels);
        self.families.stratum.remove(&self.labels);
    }
}

#[cfg(test)]
mod tests {
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
}
