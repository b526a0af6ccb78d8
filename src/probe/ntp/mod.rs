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
mod tests;
