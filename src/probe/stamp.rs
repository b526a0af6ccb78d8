//! The `stamp` probe: an RFC 8762 STAMP Session-Sender (unauthenticated mode) against any
//! Session-Reflector, such as `netmon stamp-reflector` (`crate::stamp::reflector`).
//!
//! A round sends `count` test packets `packet_interval` apart and waits `reply_timeout` after
//! the last for the replies. Each reply carries the reflector's receive (T2) and transmit (T3)
//! timestamps next to ours (T1, and T4 when it arrives):
//! - round trip = (T4 − T1) − (T3 − T2): the reflector's dwell time taken off, measured on our
//!   monotonic clock with the kernel's receive stamp for T4;
//! - forward delay = T2 − T1 and backward delay = T4 − T3, which mix the two hosts' clocks and
//!   mean something only when both are synchronised (NTP, PTP): otherwise they carry the clock
//!   offset and may even be negative. The reflector's Error Estimate S bit is exported so a
//!   dashboard can say which case it is;
//! - directional loss: a stateless reflector copies our sequence number, so a missing reply
//!   cannot tell which way it was lost. A stateful one (RFC 8762 §4.3.2) numbers the packets it
//!   received itself, so between two replies the gap in its numbers against ours is forward
//!   loss and the rest backward loss. Packets lost before the first or after the last reply of
//!   a round have no direction; they count in `netmon_packet_loss_ratio` only;
//! - reordering (a reply for a packet sent before one already answered) and duplicates.
//!
//! Up when at least one reply came and the loss is within `max_loss`; latency is the mean round
//! trip. Round trips, loss, jitter and MOS go to the shared packet families
//! (`crate::probe::packets`); the rest to `netmon_stamp_*`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use std::time::Instant;

use crate::base::labels::{FGauge, Labels};
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::round::Round;
use crate::base::rxtime;
use crate::base::values::{Duration as ConfigDuration, IpPreference};
use crate::echo::client;
use crate::probe::packets::{self, Handles};
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe, Registered, wait_budget};
use crate::stamp::wire::{self, ErrorEstimate, ReflectorPacket, SenderPacket, Timestamp};

fn default_count() -> u64 {
    3
}
fn is_default_count(n: &u64) -> bool {
    *n == default_count()
}
fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(100))
}
fn is_default_interval(d: &ConfigDuration) -> bool {
    *d == default_interval()
}
fn default_size() -> usize {
    wire::BASE_LEN
}
fn is_default_size(n: &usize) -> bool {
    *n == default_size()
}
fn default_reply_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}
fn is_default_reply_timeout(d: &ConfigDuration) -> bool {
    *d == default_reply_timeout()
}

/// Options of a `stamp` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The reflector's UDP port (default 862).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Test packets per round.
    #[serde(default = "default_count", skip_serializing_if = "is_default_count")]
    pub count: u64,
    /// Time between test packets (the service's `interval` is the time between rounds).
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    pub packet_interval: ConfigDuration,
    /// Test packet size in bytes (44 to 65507; past 44, zero padding).
    #[serde(default = "default_size", skip_serializing_if = "is_default_size")]
    pub size: usize,
    /// How long to wait for replies after the last packet; a later one counts as lost.
    #[serde(
        default = "default_reply_timeout",
        skip_serializing_if = "is_default_reply_timeout"
    )]
    pub reply_timeout: ConfigDuration,
    /// Largest lost share (0 to 1) still up; default: up with at least one reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss: Option<f64>,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.port == Some(0) {
            return Err("port 0 is not a port to probe: use 1-65535".into());
        }
        if !(1..=1000).contains(&self.count) {
            return Err(format!(
                "count {} is out of range: use 1 to 1000",
                self.count
            ));
        }
        if !(wire::BASE_LEN..=wire::MAX_LEN).contains(&self.size) {
            return Err(format!(
                "size {} is out of range: use {} to {} bytes",
                self.size,
                wire::BASE_LEN,
                wire::MAX_LEN
            ));
        }
        if self.reply_timeout.0.is_zero() {
            return Err("reply_timeout must be greater than zero".into());
        }
        if let Some(l) = self.max_loss {
            if !(0.0..=1.0).contains(&l) {
                return Err(format!("max_loss {l} is out of range: a ratio from 0 to 1"));
            }
        }
        Ok(())
    }

    /// The port probed.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(wire::DEFAULT_PORT)
    }

    fn sending(&self) -> Duration {
        self.packet_interval.0 * u32::try_from(self.count.saturating_sub(1)).unwrap_or(u32::MAX)
    }

    fn check_fits(&self, timeout: Duration) -> Result<(), String> {
        let budget = wait_budget(timeout);
        if self.sending() >= budget {
            return Err(format!(
                "count {} x packet_interval {} does not fit in the timeout {} (the round must end by {}, 90% of it): lower count or packet_interval, or raise the timeout",
                self.count,
                self.packet_interval,
                ConfigDuration(timeout),
                ConfigDuration(budget)
            ));
        }
        Ok(())
    }
}

/// The `netmon_stamp_*` families, registered once.
#[derive(Debug, Clone)]
pub struct StampFamilies {
    forward: Family<Labels, FGauge>,
    backward: Family<Labels, FGauge>,
    dwell: Family<Labels, FGauge>,
    forward_loss: Family<Labels, FGauge>,
    backward_loss: Family<Labels, FGauge>,
    reordered: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    synchronised: Family<Labels, FGauge>,
}

impl Families for StampFamilies {
    fn register(registry: &mut Registry) -> Self {
        let m = StampFamilies {
            forward: Family::default(),
            backward: Family::default(),
            dwell: Family::default(),
            forward_loss: Family::default(),
            backward_loss: Family::default(),
            reordered: Family::default(),
            duplicates: Family::default(),
            synchronised: Family::default(),
        };
        registry.register_with_unit(
            "stamp_forward_delay",
            "Mean sender-to-reflector delay of the last round (T2 - T1); valid only when both clocks are synchronised",
            Unit::Seconds,
            m.forward.clone(),
        );
        registry.register_with_unit(
            "stamp_backward_delay",
            "Mean reflector-to-sender delay of the last round (T4 - T3); valid only when both clocks are synchronised",
            Unit::Seconds,
            m.backward.clone(),
        );
        registry.register_with_unit(
            "stamp_reflector_dwell",
            "Mean time the reflector held a packet in the last round (T3 - T2), taken off the round trip",
            Unit::Seconds,
            m.dwell.clone(),
        );
        registry.register(
            "stamp_forward_loss_ratio",
            "Share of packets lost on the way to a stateful reflector in the last round (0 to 1)",
            m.forward_loss.clone(),
        );
        registry.register(
            "stamp_backward_loss_ratio",
            "Share of a stateful reflector's replies lost on the way back in the last round (0 to 1)",
            m.backward_loss.clone(),
        );
        registry.register(
            "stamp_reordered",
            "Replies that arrived after the reply to a later packet",
            m.reordered.clone(),
        );
        registry.register(
            "stamp_duplicates",
            "Extra copies of a reply already received",
            m.duplicates.clone(),
        );
        registry.register(
            "stamp_reflector_clock_synchronised",
            "1 when the reflector's last reply said its clock is synchronised to UTC (Error Estimate S bit)",
            m.synchronised.clone(),
        );
        m
    }
}

/// The families a `stamp` service writes: the shared packet ones and its own.
#[derive(Debug, Clone)]
pub struct Metrics {
    packets: packets::Metrics,
    stamp: StampFamilies,
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        Metrics::register_shared(registry, &mut Registered::default())
    }

    fn register_shared(registry: &mut Registry, shared: &mut Registered) -> Self {
        Metrics {
            packets: shared.get(registry),
            stamp: shared.get(registry),
        }
    }
}

/// The `stamp` protocol in the table of protocols.
#[derive(Debug)]
pub struct Stamp;

impl Definition for Stamp {
    const NAME: &'static str = "stamp";
    const PORT: PortRule = PortRule::Default(wire::DEFAULT_PORT);
    const RTT_HISTOGRAM: bool = true;
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate()
    }

    fn port(options: &Options) -> Option<u16> {
        Some(options.port())
    }

    fn fits(options: &Options, timeout: Duration) -> Result<(), String> {
        options.check_fits(timeout)
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(StampProbe::new(options.clone(), ctx, metrics)))
    }
}

/// One service's `netmon_stamp_*` series.
#[derive(Debug)]
struct StampHandles {
    labels: Labels,
    families: StampFamilies,
    forward: FGauge,
    backward: FGauge,
    dwell: FGauge,
    reordered: Counter,
    duplicates: Counter,
    synchronised: FGauge,
}

impl StampHandles {
    fn new(f: &StampFamilies, labels: &Labels) -> Self {
        StampHandles {
            labels: labels.clone(),
            families: f.clone(),
            forward: f.forward.get_or_create_owned(labels),
            backward: f.backward.get_or_create_owned(labels),
            dwell: f.dwell.get_or_create_owned(labels),
            reordered: f.reordered.get_or_create_owned(labels),
            duplicates: f.duplicates.get_or_create_owned(labels),
            synchronised: f.synchronised.get_or_create_owned(labels),
        }
    }

    fn record(&self, t: &Tally) {
        self.reordered.inc_by(t.reordered);
        self.duplicates.inc_by(t.duplicates);
        let replies: Vec<&Reply> = t.replies.iter().flatten().collect();
        if let Some(last) = t.last_reply.as_ref() {
            self.synchronised
                .set(f64::from(u8::from(last.error.synchronised)));
        }
        if !replies.is_empty() {
            let n = replies.len() as f64;
            self.forward
                .set(replies.iter().map(|r| r.forward).sum::<f64>() / n);
            self.backward
                .set(replies.iter().map(|r| r.backward).sum::<f64>() / n);
            self.dwell
                .set(replies.iter().map(|r| r.dwell).sum::<f64>() / n);
        }
        let f = &self.families;
        match t.directional() {
            Some(d) => {
                f.forward_loss.get_or_create(&self.labels).set(d.forward);
                f.backward_loss.get_or_create(&self.labels).set(d.backward);
            }
            None => {
                // Nothing said about the direction this round: no stale value either.
                f.forward_loss.remove(&self.labels);
                f.backward_loss.remove(&self.labels);
            }
        }
    }

    fn remove(&self) {
        let f = &self.families;
        for fam in [
            &f.forward,
            &f.backward,
            &f.dwell,
            &f.forward_loss,
            &f.backward_loss,
            &f.synchronised,
        ] {
            fam.remove(&self.labels);
        }
        f.reordered.remove(&self.labels);
        f.duplicates.remove(&self.labels);
    }
}

/// Probes one STAMP reflector.
#[derive(Debug)]
pub struct StampProbe {
    options: Options,
    budget: Duration,
    packets: Handles,
    stamp: StampHandles,
}

/// What one reply measured.
#[derive(Debug, Clone, Copy)]
struct Reply {
    rtt: Duration,
    forward: f64,
    backward: f64,
    dwell: f64,
    reflector_seq: u32,
}

/// What a round saw so far.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    /// By packet index (sequence number minus the round's first).
    replies: Vec<Option<Reply>>,
    reordered: u64,
    duplicates: u64,
    refused: u64,
    /// Replies that answer none of this round's packets.
    unmatched: u64,
    last_reply: Option<ReflectorPacket>,
    highest: Option<usize>,
    /// The sequence number of the round's first packet (random, so a stateful reflector's
    /// own numbers differ from ours).
    first_seq: u32,
}

/// Directional loss of a round, when the reflector is stateful.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Directional {
    forward: f64,
    backward: f64,
}

impl Tally {
    fn round(&self) -> Round {
        Round {
            sent: self.sent,
            rtts: self.replies.iter().flatten().map(|r| r.rtt).collect(),
        }
    }

    /// Forward and backward loss between the first and last reply, from a stateful reflector's
    /// own numbering; `None` for a stateless reflector (it copies our numbers), or when the
    /// numbers make no sense as one session's count.
    fn directional(&self) -> Option<Directional> {
        let answered: Vec<(usize, Reply)> = self
            .replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .collect();
        let (first_i, first) = *answered.first()?;
        let (last_i, last) = *answered.last()?;
        // The reflector numbers as we do: stateless, no direction to tell.
        if self
            .replies
            .iter()
            .enumerate()
            .all(|(i, r)| r.is_none_or(|r| r.reflector_seq == self.seq_of(i)))
        {
            return None;
        }
        let span_sent = (last_i - first_i + 1) as u64;
        let reflected = u64::from(last.reflector_seq.wrapping_sub(first.reflector_seq)) + 1;
        let replies = answered.len() as u64;
        if reflected > span_sent || reflected < replies {
            return None;
        }
        Some(Directional {
            forward: (span_sent - reflected) as f64 / span_sent as f64,
            backward: (reflected - replies) as f64 / reflected as f64,
        })
    }

    /// Our sequence number of packet `i`.
    fn seq_of(&self, i: usize) -> u32 {
        self.first_seq.wrapping_add(i as u32)
    }
}

/// Records a round when dropped, so a round cut short by the runner's timeout still counts
/// the packets it sent.
struct Recorder<'a> {
    probe: &'a StampProbe,
    tally: Tally,
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.probe.packets.record(&self.tally.round());
        self.probe.stamp.record(&self.tally);
    }
}

/// What the round keeps of each packet it sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    timestamp: Timestamp,
}

impl StampProbe {
    /// Builds the probe and creates its series.
    pub fn new(options: Options, ctx: &Context<'_>, metrics: &Metrics) -> Self {
        StampProbe {
            options,
            budget: wait_budget(ctx.timeout),
            packets: metrics.packets.handles(ctx.labels, ctx.rtt_buckets),
            stamp: StampHandles::new(&metrics.stamp, ctx.labels),
        }
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let o = &self.options;
        let started = Instant::now();
        let addrs = resolve::resolve(&target.host, o.port(), o.ip).await?;
        let peer = addrs[0];
        let socket = client::connect(peer)
            .await
            .map_err(|e| Failure::io(&format!("udp socket to {peer}"), &e))?;
        let count = usize::try_from(o.count).unwrap_or(1000);
        let first_seq: u32 = rand::random();
        // RFC 8972's Session-Sender Identifier; never 0, which means "none".
        let ssid: u16 = rand::random::<u16>().max(1);
        let mut rec = Recorder {
            probe: self,
            tally: Tally {
                replies: vec![None; count],
                first_seq,
                ..Tally::default()
            },
        };
        let mut sent: Vec<Sent> = Vec::with_capacity(count);
        let mut out = Vec::with_capacity(o.size);
        let mut buf = vec![0u8; o.size.max(wire::BASE_LEN) + 1];
        let deadline = started + self.budget;
        let mut next_send = Instant::now();
        let mut io_error = None;
        loop {
            let all_sent = sent.len() == count;
            let answered = rec.tally.replies.iter().flatten().count();
            if all_sent && answered == count {
                break;
            }
            let wait_until = if all_sent {
                let last = sent.last().map_or(started, |s| s.at);
                (last + o.reply_timeout.0).min(deadline)
            } else {
                next_send.min(deadline)
            };
            if Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wait_until.into()) => {
                    // Out of time before the round was sent: a packet now could not be
                    // answered in time, and would only count as lost.
                    if all_sent || Instant::now() >= deadline {
                        break;
                    }
                    let i = sent.len();
                    let now_wall = Timestamp::now();
                    let packet = SenderPacket {
                        seq: first_seq.wrapping_add(i as u32),
                        timestamp: now_wall,
                        error: ErrorEstimate::NETMON,
                        ssid,
                    };
                    if let Err(e) = packet.encode_into(o.size, &mut out) {
                        return Err(Failure::new(Reason::Io, e.to_string()));
                    }
                    let at = Instant::now();
                    match socket.send(&out).await {
                        Ok(_) => {
                            sent.push(Sent { at, timestamp: now_wall });
                            rec.tally.sent += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            // An earlier packet's port unreachable, reported on this send;
                            // the packet itself did not go.
                            rec.tally.refused += 1;
                            sent.push(Sent { at, timestamp: now_wall });
                        }
                        Err(e) => {
                            io_error = Some(e);
                            break;
                        }
                    }
                    next_send = at + o.packet_interval.0;
                }
                r = rxtime::recv_from(&socket, &mut buf) => match r {
                    Ok((n, _, arrived)) => {
                        self.take_reply(&buf[..n], arrived, ssid, &sent, &mut rec.tally);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        rec.tally.refused += 1;
                    }
                    Err(e) => {
                        io_error = Some(e);
                        break;
                    }
                },
            }
        }
        let round = rec.tally.round();
        let verdict = self.judge(peer, &rec.tally, io_error);
        drop(rec);
        match verdict {
            Ok(s) => Ok(s.with_round(round)),
            Err(f) => Err(f.with_round(round)),
        }
    }

    /// Matches a datagram to the packet it answers and measures it; anything else is counted
    /// as unmatched and otherwise ignored.
    fn take_reply(&self, bytes: &[u8], arrived: Instant, ssid: u16, sent: &[Sent], t: &mut Tally) {
        let Ok(p) = ReflectorPacket::decode(bytes) else {
            t.unmatched += 1;
            return;
        };
        let i = p.sender_seq.wrapping_sub(t.first_seq) as usize;
        // The copied T1 proves the reply answers this packet; an RFC 8762-only reflector
        // answers SSID 0.
        let Some(s) = sent.get(i).filter(|s| s.timestamp == p.sender_timestamp) else {
            t.unmatched += 1;
            return;
        };
        if p.ssid != ssid && p.ssid != 0 {
            t.unmatched += 1;
            return;
        }
        t.last_reply = Some(p);
        if t.replies.get(i).is_some_and(Option::is_some) {
            t.duplicates += 1;
            return;
        }
        if t.highest.is_some_and(|h| i < h) {
            t.reordered += 1;
        }
        t.highest = Some(t.highest.map_or(i, |h| h.max(i)));
        let total = arrived.saturating_duration_since(s.at);
        let dwell = p.timestamp.seconds_since(p.receive);
        // A reflector clock stepped between T2 and T3, or a dwell longer than the whole round
        // trip, is not believed: the round trip is then taken whole.
        let dwell = if (0.0..total.as_secs_f64()).contains(&dwell) {
            dwell
        } else {
            0.0
        };
        let rtt = total
            .saturating_sub(Duration::from_secs_f64(dwell))
            .max(Duration::from_nanos(1));
        let t4 = s.timestamp.after(total);
        let reply = Reply {
            rtt,
            forward: p.receive.seconds_since(s.timestamp),
            backward: t4.seconds_since(p.timestamp),
            dwell,
            reflector_seq: p.seq,
        };
        if let Some(slot) = t.replies.get_mut(i) {
            *slot = Some(reply);
        }
    }

    fn judge(&self, peer: std::net::SocketAddr, t: &Tally, io: Option<std::io::Error>) -> Outcome {
        let o = &self.options;
        let round = t.round();
        if let Some(e) = io {
            return Err(Failure::io(&format!("udp {peer}"), &e));
        }
        if round.received() == 0 {
            if t.refused > 0 {
                return Err(Failure::new(
                    Reason::Refused,
                    format!("port unreachable: nothing listens on udp {peer}"),
                ));
            }
            let extra = if t.unmatched > 0 {
                format!(
                    " ({} datagrams came back that answer none of them: not a STAMP reflector?)",
                    t.unmatched
                )
            } else {
                String::new()
            };
            return Err(Failure::new(
                Reason::Timeout,
                format!(
                    "no reply from the STAMP reflector at {peer} to {} test packets within {}{extra}",
                    t.sent, o.reply_timeout
                ),
            ));
        }
        let loss = round.loss_ratio();
        if let Some(max) = o.max_loss {
            if loss > max {
                return Err(Failure::new(
                    Reason::Loss,
                    format!(
                        "{} of {} test packets to {peer} lost ({:.0}%, max_loss {max})",
                        round.sent - round.received(),
                        round.sent,
                        loss * 100.0
                    ),
                ));
            }
        }
        let latency = round
            .mean()
            .unwrap_or(Duration::from_nanos(1))
            .max(Duration::from_nanos(1));
        Ok(Success::new(latency))
    }
}

impl Probe for StampProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.packets.remove();
        self.stamp.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeMetrics;
    use crate::stamp::reflector::{Metrics as ReflectorMetrics, StampReflector};
    use crate::stamp::settings::Settings;
    use tokio::net::UdpSocket;
    use tokio_util::sync::CancellationToken;

    fn options(port: u16) -> Options {
        Options {
            port: Some(port),
            count: 3,
            packet_interval: ConfigDuration(Duration::from_millis(10)),
            size: wire::BASE_LEN,
            reply_timeout: ConfigDuration(Duration::from_millis(300)),
            max_loss: None,
            ip: IpPreference::Auto,
        }
    }

    fn probe(options: Options) -> (StampProbe, (Registry, ProbeMetrics)) {
        let mut reg = Registry::default();
        let metrics = ProbeMetrics::register(&mut reg);
        let labels: Labels = vec![("service".into(), "stamp".into())];
        let p = StampProbe::new(
            options,
            &Context {
                labels: &labels,
                timeout: Duration::from_secs(5),
                rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
            },
            &metrics.stamp,
        );
        (p, (reg, metrics))
    }

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
        }
    }

    fn text(reg: &(Registry, ProbeMetrics)) -> String {
        reg.1.encode_with(&reg.0)
    }

    fn value(text: &str, name: &str) -> Option<f64> {
        let prefix = format!("{name}{{service=\"stamp\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    }

    /// A stateful reflector of our own making: answers each packet with `f(n, packet)`'s
    /// replies, where `n` counts the packets it received; its own sequence numbers start at 0.
    async fn reflector(
        f: impl Fn(u32, Vec<u8>) -> Vec<Vec<u8>> + Send + 'static,
    ) -> std::net::SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0u32;
            while let Ok((len, from)) = s.recv_from(&mut buf).await {
                let mut b = buf[..len].to_vec();
                let receive = Timestamp::now();
                if wire::reflect_in_place(&mut b, receive, 64, ErrorEstimate::NETMON, || {
                    receive.after(Duration::from_micros(100))
                })
                .is_ok()
                {
                    // Stateful: its own count, not the sender's number.
                    b[0..4].copy_from_slice(&n.to_be_bytes());
                }
                for out in f(n, b) {
                    let _ = s.send_to(&out, from).await;
                }
                n += 1;
            }
        });
        addr
    }

    #[tokio::test]
    async fn up_against_our_reflector_with_every_measurement() {
        let token = CancellationToken::new();
        let mut reg = Registry::default();
        let rm = ReflectorMetrics::register(&mut reg);
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        };
        let r = StampReflector::start(settings, &rm, &token).await.unwrap();
        let mut o = options(r.local_addr().port());
        o.size = 100;
        let (p, preg) = probe(o);
        let ok = p.run(&target()).await.unwrap();
        assert!(ok.latency > Duration::ZERO && ok.latency < Duration::from_millis(300));
        let t = text(&preg);
        assert!(t.contains("packets_sent_total{service=\"stamp\"} 3"), "{t}");
        assert!(
            t.contains("packets_received_total{service=\"stamp\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("packet_loss_ratio{service=\"stamp\"} 0.0"),
            "{t}"
        );
        assert!(t.contains("rtt_seconds_count{service=\"stamp\"} 3"), "{t}");
        // One clock on loopback: both one-way delays are small and not negative beyond the
        // microseconds between reading the two clocks.
        for name in [
            "stamp_forward_delay_seconds",
            "stamp_backward_delay_seconds",
        ] {
            let v = value(&t, name).unwrap_or_else(|| panic!("no {name} in {t}"));
            assert!((-0.001..0.3).contains(&v), "{name} {v}");
        }
        let dwell = value(&t, "stamp_reflector_dwell_seconds").unwrap();
        assert!((0.0..0.3).contains(&dwell), "{dwell}");
        assert_eq!(value(&t, "stamp_reflector_clock_synchronised"), Some(0.0));
        // Stateless: no direction to tell.
        assert!(!t.contains("stamp_forward_loss_ratio{"), "{t}");
        assert!(
            t.contains("stamp_duplicates_total{service=\"stamp\"} 0"),
            "{t}"
        );
        p.forget();
        assert!(!text(&preg).contains("service=\"stamp\""));
        r.stop().await;
    }

    #[tokio::test]
    async fn up_over_ipv6_with_the_hop_limit_reported() {
        let token = CancellationToken::new();
        let mut reg = Registry::default();
        let rm = ReflectorMetrics::register(&mut reg);
        let settings = Settings {
            listen: "[::1]:0".parse().unwrap(),
            ..Settings::default()
        };
        let Ok(r) = StampReflector::start(settings, &rm, &token).await else {
            println!("not run: no IPv6 on loopback here");
            return;
        };
        let mut o = options(r.local_addr().port());
        o.ip = IpPreference::Ipv6;
        let (p, preg) = probe(o);
        let v6 = Target { host: "::1".into() };
        p.run(&v6).await.unwrap();
        assert!(text(&preg).contains("packets_received_total{service=\"stamp\"} 3"));
        // The reflector's answer carries the Hop Limit our packet arrived with.
        let client = UdpSocket::bind("[::1]:0").await.unwrap();
        client.connect(r.local_addr()).await.unwrap();
        let mut out = Vec::new();
        SenderPacket {
            seq: 1,
            timestamp: Timestamp::now(),
            error: ErrorEstimate::NETMON,
            ssid: 9,
        }
        .encode_into(wire::BASE_LEN, &mut out)
        .unwrap();
        client.send(&out).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ReflectorPacket::decode(&buf[..n]).unwrap().sender_ttl, 64);
        r.stop().await;
    }

    #[tokio::test]
    async fn a_stateful_reflector_tells_forward_from_backward_loss() {
        // 6 packets: a relay in front of the reflector swallows #1 (forward loss); the
        // reflector's reply to #3 (its own number 2) is lost on the way back; #4's comes twice.
        let addr = reflector(|n, b| match n {
            2 => vec![],
            3 => vec![b.clone(), b],
            _ => vec![b],
        })
        .await;
        let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut client = None;
            let mut seen = 0u32;
            while let Ok((len, from)) = relay.recv_from(&mut buf).await {
                if from == addr {
                    if let Some(c) = client {
                        let _ = relay.send_to(&buf[..len], c).await;
                    }
                    continue;
                }
                client = Some(from);
                seen += 1;
                if seen == 2 {
                    continue;
                }
                let _ = relay.send_to(&buf[..len], addr).await;
            }
        });
        let mut o = options(relay_addr.port());
        o.count = 6;
        let (p, reg) = probe(o);
        p.run(&target()).await.unwrap();
        let t = text(&reg);
        assert!(
            t.contains("packets_received_total{service=\"stamp\"} 4"),
            "{t}"
        );
        // Span: packets 0..=5 (6 sent), the reflector counted 5 (0..=4): 1 forward loss.
        let fwd = value(&t, "stamp_forward_loss_ratio").unwrap();
        assert!((fwd - 1.0 / 6.0).abs() < 1e-9, "{t}");
        // Of the reflector's 5 replies 4 arrived.
        let bwd = value(&t, "stamp_backward_loss_ratio").unwrap();
        assert!((bwd - 1.0 / 5.0).abs() < 1e-9, "{t}");
        assert!(
            t.contains("stamp_duplicates_total{service=\"stamp\"} 1"),
            "{t}"
        );
    }

    #[tokio::test]
    async fn late_replies_count_as_reordered_and_strangers_are_ignored() {
        // Holds the reply to packet 0 until packet 1's is out; sends a stranger too.
        let held = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let addr = reflector(move |n, b| match n {
            0 => {
                *held.lock().unwrap() = Some(b);
                vec![vec![0u8; 44]]
            }
            1 => {
                let mut out = vec![b];
                out.extend(held.lock().unwrap().take());
                out
            }
            _ => vec![b],
        })
        .await;
        let (p, reg) = probe(options(addr.port()));
        p.run(&target()).await.unwrap();
        let t = text(&reg);
        assert!(
            t.contains("packets_received_total{service=\"stamp\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("stamp_reordered_total{service=\"stamp\"} 1"),
            "{t}"
        );
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_a_closed_port_refused() {
        let addr = reflector(|_, _| vec![]).await;
        let (p, reg) = probe(options(addr.port()));
        let e = p.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Timeout, "{e}");
        assert!(e.message.contains("STAMP reflector"), "{e}");
        assert!(text(&reg).contains("packet_loss_ratio{service=\"stamp\"} 1.0"));

        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        drop(s);
        let e = probe(options(port)).0.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
    }

    #[tokio::test]
    async fn loss_over_max_loss_is_down() {
        let addr = reflector(|n, b| if n == 1 { vec![] } else { vec![b] }).await;
        let mut o = options(addr.port());
        o.max_loss = Some(0.2);
        let e = probe(o).0.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Loss, "{e}");
    }

    #[test]
    fn options_are_validated_and_must_fit_the_timeout() {
        let mut o = options(862);
        o.validate().unwrap();
        o.size = 43;
        assert!(o.validate().unwrap_err().contains("size"));
        let mut o = options(862);
        o.count = 0;
        assert!(o.validate().unwrap_err().contains("count"));
        let mut o = options(862);
        o.max_loss = Some(2.0);
        assert!(o.validate().unwrap_err().contains("max_loss"));
        let mut o = options(862);
        o.port = None;
        assert_eq!(o.port(), 862);
        o.count = 100;
        o.packet_interval = ConfigDuration(Duration::from_millis(100));
        assert!(
            o.check_fits(Duration::from_secs(5))
                .unwrap_err()
                .contains("timeout")
        );
        o.check_fits(Duration::from_secs(20)).unwrap();
    }
}
