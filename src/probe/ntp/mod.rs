//! The NTP probe: one SNTP exchange (RFC 4330) with host:port from a fresh UDP socket bound to
//! the family of the server's address and connected to it.
//!
//! Up when the first datagram from the server is a valid reply to our request from a
//! synchronised server (stratum 1-15, leap indicator not 3, not a kiss-of-death) and, if
//! `max_offset` is set, when `|offset| <= max_offset`. Latency is the round-trip delay of the
//! exchange, `(T4 - T1) - (T3 - T2)`, i.e. without the server's own processing time.
//!
//! The first datagram is judged, not skipped when it is wrong: the socket is connected, so only
//! the server's address can send it, and a reply that does not answer our request is reason
//! `protocol` at once.
//!
//! # Files
//! `wire.rs` holds the bytes (request, reply header, timestamps) and the verdict on a reply
//! with its typed error; this file the options, the metrics, the exchange and the gauges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::base::labels::{FGauge, Labels};
use crate::base::udp;
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::IpPreference;
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe};

mod wire;

use wire::{Sent, Timestamp};

/// The NTP port.
pub const DEFAULT_PORT: u16 = 123;

/// Bytes read of a reply: the 48-byte header plus room for extension fields and a MAC, which
/// are ignored. A longer datagram is cut here by the kernel, not read whole.
const RECEIVE_BUFFER: usize = 1024;

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
            "Stratum of the server in the last reply: 1-15 when synchronised, 0 after a kiss-of-death refusing us, -1 when the server is not synchronised or no valid reply came",
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
    /// The service's timeout, which also bounds the exchange itself (the runner drops the
    /// probe at the same moment; this holds when the probe is run without the runner).
    timeout: Duration,
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
            timeout: ctx.timeout,
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
        let (reply, sent) = tokio::time::timeout(self.timeout, exchange(addr))
            .await
            .map_err(|_| {
                Failure::new(
                    Reason::Timeout,
                    format!(
                        "no ntp reply from {addr} within {}",
                        humantime::format_duration(self.timeout)
                    ),
                )
            })??;
        guard.0 = None;
        let reading = match wire::judge(&reply, &sent) {
            Ok(r) => r,
            Err(e) => {
                self.handles.no_reading(e.stratum_gauge());
                return Err(Failure::new(e.reason(), format!("ntp reply from {addr}: {e}")));
            }
        };
        self.handles.stratum.set(f64::from(reading.stratum));
        self.handles.offset.set(reading.offset);
        if let Some(max) = self.options.max_offset {
            if reading.offset.abs() > max.0.as_secs_f64() {
                return Err(Failure::new(
                    Reason::Mismatch,
                    format!(
                        "clock offset {:+.6}s of {addr} exceeds max_offset {max}",
                        reading.offset
                    ),
                ));
            }
        }
        // A negative delay means the server's T3 - T2 exceeds our whole round trip: clock
        // granularity on a fast path; report the smallest positive latency, never 0.
        let latency = Duration::try_from_secs_f64(reading.delay.max(0.0)).unwrap_or(Duration::ZERO);
        Ok(Success::new(latency.max(Duration::from_nanos(1))))
    }
}

/// Sends one request to `addr` and returns the first datagram that comes back, with what we
/// sent and when.
async fn exchange(addr: SocketAddr) -> Result<(Vec<u8>, Sent), Failure> {
    let socket = udp::connected(addr).await?;
    // Zero is the origin a blank or reflected packet carries: never accept it as ours.
    let nonce = rand::random::<u64>().max(1);
    let request = wire::request(nonce);
    let at = Timestamp::from_system_time(SystemTime::now());
    let start = Instant::now();
    socket
        .send(&request)
        .await
        .map_err(|e| Failure::io(&format!("send ntp request to {addr}"), &e))?;
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|e| Failure::io(&format!("ntp exchange with {addr}"), &e))?;
    let round_trip = start.elapsed();
    buf.truncate(n);
    Ok((
        buf,
        Sent {
            nonce,
            at,
            round_trip,
        },
    ))
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
