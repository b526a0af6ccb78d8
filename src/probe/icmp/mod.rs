//! The ICMP probe: a round of `count` echo requests, `packet_interval` apart; up when at least one
//! echo reply comes back, latency = mean RTT, per-packet figures in the shared packet families
//! (`crate::probe::packets`).
//!
//! # One socket per address family
//! Every `icmp` service of the process shares one ICMPv4 and one ICMPv6 socket, opened the
//! first time a service needs it: an unprivileged datagram socket first (Linux
//! `ping_group_range`), else a raw socket (root or `CAP_NET_RAW`); we log which one is in use.
//! When neither may be opened, [`IcmpProbe::new`] fails with a [`BuildError`] that says how to
//! grant the privilege, so the service cannot start (and `config check` says so).
//!
//! # Timing
//! The probe stamps its [`std::time::Instant`] just before the `send_to` system call; the
//! reply's time is the kernel's receive stamp (`SO_TIMESTAMPNS`, see
//! [`crate::base::rxtime`]), so the RTT leaves out the wake-up of the receiving thread, as
//! ping and fping do. Where the kernel gives no stamp, the receive loop's own stamp right
//! after `recv` is used: never low, never zero, one wake-up high. A dedicated thread
//! (`netmon-icmp`) runs the receive loops, which keeps the sockets independent of any tokio
//! runtime that comes and goes (tests, one-shot checks). surge-ping decodes the replies and
//! ICMP errors; its own pinger is not used, since it stamps the send after `send_to` returns
//! and reads every RTT low.
//!
//! # Matching replies
//! A reply counts for a probe only when its source is the probed address, its sequence number
//! is one that probe is waiting for, its identifier is ours (raw sockets; on datagram sockets
//! the kernel rewrites the identifier and delivers only our socket's replies) and its payload is
//! byte-for-byte the one sent, which starts with a random per-packet nonce. Sequence numbers
//! come from one process-wide counter, so concurrent probes of one host never share one.
//! Anything else (another process's ping, a late reply whose probe has finished, a corrupted
//! payload) is dropped and logged at debug level.
//!
//! # Files
//! `wire.rs` encodes requests and decodes replies (the only code that touches ICMP bytes),
//! `socket.rs` holds the shared sockets, their receive loop and the table of waiting probes,
//! this file the options, the definition and the probe.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::warn;

use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::{Duration, IpPreference};
use crate::base::round::Round;
use crate::probe::packets::{Handles, Metrics};
use crate::probe::shape::{BuildError, Context, Definition, PortRule, Probe, wait_budget};

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod socket;
mod wire;

pub use socket::{IcmpSocket, OpenError, shared_socket};
pub use wire::Family;

use socket::{Registration, Reply};
use wire::{echo_request, payload};


/// The largest ICMP echo payload that fits in one IPv4 datagram (65535 - 20 - 8).
pub const MAX_PAYLOAD: usize = 65_507;
/// The most packets one round may send.
pub const MAX_COUNT: u32 = 100;

fn default_count() -> u32 {
    3
}
fn is_default_count(n: &u32) -> bool {
    *n == default_count()
}
fn default_interval() -> Duration {
    Duration(StdDuration::from_millis(200))
}
fn is_default_interval(d: &Duration) -> bool {
    *d == default_interval()
}
fn default_payload_size() -> usize {
    56
}
fn is_default_payload_size(n: &usize) -> bool {
    *n == default_payload_size()
}

/// Options of an `icmp` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Echo requests per round (1-100).
    #[serde(default = "default_count", skip_serializing_if = "is_default_count")]
    pub count: u32,
    /// Time between two requests of a round (1ms-10s; 200ms, `ping`'s unprivileged minimum,
    /// by default). Not `interval`: that key is the service's schedule.
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    pub packet_interval: Duration,
    /// Bytes of payload after the 8-byte ICMP header (0-65507; 56 as `ping`).
    #[serde(
        default = "default_payload_size",
        skip_serializing_if = "is_default_payload_size"
    )]
    pub payload_size: usize,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(format!("count must be between 1 and {MAX_COUNT}"));
        }
        if self.packet_interval.0 < StdDuration::from_millis(1)
            || self.packet_interval.0 > StdDuration::from_secs(10)
        {
            return Err(format!(
                "packet_interval {} is out of range: use 1ms to 10s",
                self.packet_interval
            ));
        }
        if self.payload_size > MAX_PAYLOAD {
            return Err(format!("payload_size must be at most {MAX_PAYLOAD} bytes"));
        }
        Ok(())
    }

    /// Checks that a round fits in the service's `timeout`: the requests must all leave, each
    /// with time for its reply, before the probe's own deadline (`wait_budget`).
    pub fn check_fits(&self, timeout: StdDuration) -> Result<(), String> {
        let round = self.packet_interval.0 * self.count;
        let budget = wait_budget(timeout);
        if round > budget {
            return Err(format!(
                "count {} x packet_interval {} = {} does not fit in the timeout {} (the round must end by {}, 90% of it): lower count or packet_interval, or raise the timeout",
                self.count,
                self.packet_interval,
                Duration(round),
                Duration(timeout),
                Duration(budget)
            ));
        }
        Ok(())
    }
}


/// The `icmp` protocol in the table of protocols.
#[derive(Debug)]
pub struct Icmp;

impl Definition for Icmp {
    const NAME: &'static str = "icmp";
    const PORT: PortRule = PortRule::None;
    const RTT_HISTOGRAM: bool = true;
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate()
    }

    fn port(_: &Options) -> Option<u16> {
        None
    }

    fn fits(options: &Options, timeout: StdDuration) -> Result<(), String> {
        options.check_fits(timeout)
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(IcmpProbe::new(options.clone(), ctx, metrics)?))
    }
}

/// Probes one host with rounds of echo requests.
#[derive(Debug)]
pub struct IcmpProbe {
    options: Options,
    budget: StdDuration,
    handles: Handles,
    /// A fixed socket (tests); the shared ones otherwise.
    socket: Option<Arc<IcmpSocket>>,
}

impl IcmpProbe {
    /// Builds the probe: checks the round fits in the timeout and that the socket of the
    /// family it will most likely use can be opened, so a missing privilege fails start-up.
    pub fn new(
        options: Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        options.check_fits(ctx.timeout).map_err(BuildError)?;
        let family = match options.ip {
            IpPreference::Ipv6 => Family::V6,
            IpPreference::Auto | IpPreference::Ipv4 => Family::V4,
        };
        shared_socket(family).map_err(|e| BuildError(e.to_string()))?;
        Ok(IcmpProbe {
            options,
            budget: wait_budget(ctx.timeout),
            handles: metrics.handles(ctx.labels, ctx.rtt_buckets),
            socket: None,
        })
    }

    /// A probe on a given socket, for tests of both socket types.
    #[cfg(test)]
    fn with_socket(
        options: Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
        socket: Arc<IcmpSocket>,
    ) -> Self {
        IcmpProbe {
            options,
            budget: wait_budget(ctx.timeout),
            handles: metrics.handles(ctx.labels, ctx.rtt_buckets),
            socket: Some(socket),
        }
    }

    fn socket(&self, family: Family) -> Result<Arc<IcmpSocket>, Failure> {
        match &self.socket {
            Some(s) if s.family == family => Ok(s.clone()),
            Some(_) => Err(Failure::new(Reason::Io, "test socket of the other family")),
            None => shared_socket(family).map_err(|e| Failure::new(Reason::Io, e.to_string())),
        }
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.budget;
        let addr = resolve::resolve(&target.host, 0, self.options.ip).await?[0];
        let socket = self.socket(Family::of(addr.ip()))?;
        let mut round = RoundGuard {
            handles: &self.handles,
            sent: 0,
            rtts: Vec::with_capacity(self.options.count as usize),
            finished: false,
        };
        let mut pending = FuturesUnordered::new();
        let mut next = tokio::time::Instant::now();
        let mut left = self.options.count;
        let mut icmp_error = None;
        let mut send_error = None;
        loop {
            let now = tokio::time::Instant::now();
            if left > 0 && now >= next {
                left -= 1;
                next += self.options.packet_interval.0;
                // Leave the last request a moment for its reply; later ones would only be lost.
                if now + self.options.packet_interval.0.min(self.budget / 10) > deadline {
                    left = 0;
                    continue;
                }
                let index = round.rtts.len();
                round.rtts.push(None);
                round.sent += 1;
                match send(&socket, addr, self.options.payload_size).await {
                    Ok((t0, rx, reg)) => pending.push(async move {
                        let _reg = reg;
                        (index, t0, tokio::time::timeout_at(deadline, rx).await)
                    }),
                    Err(f) => send_error = Some(f),
                }
                continue;
            }
            if left == 0 && pending.is_empty() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next), if left > 0 => {}
                Some((index, t0, r)) = pending.next(), if !pending.is_empty() => match r {
                    Ok(Ok(Reply { at, error: None })) => {
                        // Both stamps are std Instants: ours before send_to, the receive
                        // thread's after recv_from, so the difference is never low.
                        let rtt = at.saturating_duration_since(t0).max(StdDuration::from_nanos(1));
                        round.rtts[index] = Some(rtt);
                    }
                    Ok(Ok(Reply { error: Some(e), .. })) => icmp_error = Some(e),
                    // Deadline passed or the socket closed: the request is lost.
                    Ok(Err(_)) | Err(_) => {}
                },
            }
        }
        round.finished = true;
        let measured = Round {
            sent: round.sent,
            rtts: round.rtts.iter().flatten().copied().collect(),
        };
        self.judge(addr, measured, icmp_error, send_error)
    }

    /// Decides a finished round: up when any reply came, else the clearest reason why not.
    fn judge(
        &self,
        addr: SocketAddr,
        measured: Round,
        icmp_error: Option<String>,
        send_error: Option<Failure>,
    ) -> Outcome {
        let sent = measured.sent;
        if let Some(mean) = measured.mean() {
            return Ok(Success::new(mean).with_round(measured));
        }
        let failure = if let Some(e) = icmp_error {
            Failure::new(
                Reason::Unreachable,
                format!("{e} for echo requests to {}", addr.ip()),
            )
        } else if let Some(f) = send_error {
            f
        } else {
            Failure::new(
                Reason::Loss,
                format!(
                    "no echo reply from {}: 0 of {sent} within {}",
                    addr.ip(),
                    Duration(self.budget)
                ),
            )
        };
        Err(failure.with_round(measured))
    }
}

/// Sends one echo request; returns the send stamp and the wait for its reply.
async fn send(
    socket: &Arc<IcmpSocket>,
    addr: SocketAddr,
    size: usize,
) -> Result<(std::time::Instant, oneshot::Receiver<Reply>, Registration), Failure> {
    let data = payload(size);
    let dest = addr.ip();
    let (seq, rx, reg) = socket.table.register(dest, data.clone()).ok_or_else(|| {
        Failure::new(
            Reason::Io,
            format!("no free icmp sequence number for {dest}"),
        )
    })?;
    let packet = echo_request(socket.family, socket.ident, seq, &data);
    let to = SocketAddr::new(dest, 0);
    // Stamped just before the poll that makes the system call: a first send may wait for the
    // socket's writable readiness, and that wait is not part of the round trip.
    let mut t0 = std::time::Instant::now();
    let mut sending = std::pin::pin!(socket.socket.send_to(&packet, to));
    std::future::poll_fn(|cx| {
        t0 = std::time::Instant::now();
        sending.as_mut().poll(cx)
    })
    .await
    .map_err(|e| Failure::io(&format!("send echo request to {dest}"), &e))?;
    Ok((t0, rx, reg))
}

/// The round in progress. Recorded into the packet families when dropped, so a round cut short
/// by the runner's timeout still counts its packets.
struct RoundGuard<'a> {
    handles: &'a Handles,
    sent: u64,
    /// RTT per request, in send order; `None` while unanswered.
    rtts: Vec<Option<StdDuration>>,
    finished: bool,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if self.sent == 0 {
            return;
        }
        if !self.finished {
            warn!(
                sent = self.sent,
                "icmp round cut short by the service timeout: the name lookup probably took most of it"
            );
        }
        self.handles.record(&Round {
            sent: self.sent,
            rtts: self.rtts.iter().flatten().copied().collect(),
        });
    }
}

impl Probe for IcmpProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.handles.remove();
    }
}

#[cfg(test)]
mod tests;
