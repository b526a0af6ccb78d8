//! The traceroute probe: probes of rising TTL (UDP to high ports by default, or ICMP echo
//! requests), `probes_per_hop` per hop from `first_hop` up to `max_hops`, every hop's probes
//! sent at once at the start of the round as mtr and trippy do, so a round lasts about one
//! `hop_timeout` however long the path. Up when the target answered; latency is the mean RTT
//! of the target's hop.
//!
//! Per round it sets `netmon_traceroute_hops` (the target's hop, or the last hop that
//! answered), `netmon_traceroute_reached`, and per hop `netmon_traceroute_hop_rtt_seconds{hop}`
//! (the mean RTT of the hop's answers; no series for a hop that did not answer) and
//! `netmon_traceroute_hop_loss_ratio{hop}`. The `hop` label is the TTL, so it is bounded by
//! `max_hops` (at most [`MAX_HOPS`]); hop addresses are never labels. The path (each hop's
//! addresses and RTT, `*` for a silent hop) is the probe's detail on the status page, and is
//! logged at info level when first seen and when it changes; a change is a change of the hash
//! of the ordered hop addresses and counts in `netmon_traceroute_route_changes_total`.
//!
//! Sending stops as soon as the target has answered (on short paths its answer is back before
//! the later TTLs are sent), so the target is not flooded with probes past itself. The kernel
//! side is in `socket.rs`.

mod socket;

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::base::labels::{FGauge, Labels, with_label};
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::round::Round;
use crate::base::values::{Duration, IpPreference};
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe, wait_budget};

pub use socket::{Method, OpenError};
use socket::{Answer, RoundSocket, What};

/// The highest `max_hops`: each hop is a series of each per-hop family.
pub const MAX_HOPS: u32 = 64;
/// The most probes one hop may get per round.
pub const MAX_PROBES_PER_HOP: u32 = 10;
/// The most queued messages read at once between sends, so a stream of foreign ICMP on a raw
/// socket cannot hold the round up.
const DRAIN: usize = 64;
/// The first UDP destination port by default, as traceroute's.
pub const DEFAULT_BASE_PORT: u16 = 33434;

fn default_max_hops() -> u32 {
    30
}
fn is_default_max_hops(n: &u32) -> bool {
    *n == default_max_hops()
}
fn default_first_hop() -> u32 {
    1
}
fn is_default_first_hop(n: &u32) -> bool {
    *n == default_first_hop()
}
fn default_probes_per_hop() -> u32 {
    3
}
fn is_default_probes_per_hop(n: &u32) -> bool {
    *n == default_probes_per_hop()
}
/// A probe's wait when `hop_timeout` is not given, if the round's budget allows it.
pub const DEFAULT_HOP_TIMEOUT: StdDuration = StdDuration::from_secs(2);
fn default_base_port() -> u16 {
    DEFAULT_BASE_PORT
}
fn is_default_base_port(p: &u16) -> bool {
    *p == DEFAULT_BASE_PORT
}

/// Options of a `traceroute` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `udp` (default) or `icmp` probes.
    #[serde(default, skip_serializing_if = "Method::is_udp")]
    pub method: Method,
    /// The highest TTL probed (1-64; 30 by default).
    #[serde(
        default = "default_max_hops",
        skip_serializing_if = "is_default_max_hops"
    )]
    pub max_hops: u32,
    /// The TTL of the first hop probed (as `traceroute -f`; 1 by default).
    #[serde(
        default = "default_first_hop",
        skip_serializing_if = "is_default_first_hop"
    )]
    pub first_hop: u32,
    /// Probes per hop and round (1-10; 3 by default).
    #[serde(
        default = "default_probes_per_hop",
        skip_serializing_if = "is_default_probes_per_hop"
    )]
    pub probes_per_hop: u32,
    /// How long a probe waits for its answer: at most 90% of the timeout; when not given,
    /// [`DEFAULT_HOP_TIMEOUT`] or that 90% if it is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_timeout: Option<Duration>,
    /// The UDP destination port of the first probe; each further probe of a round takes the
    /// next one (33434 by default, as traceroute's).
    #[serde(
        default = "default_base_port",
        skip_serializing_if = "is_default_base_port"
    )]
    pub base_port: u16,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_hops == 0 || self.max_hops > MAX_HOPS {
            return Err(format!("max_hops must be between 1 and {MAX_HOPS}"));
        }
        if self.first_hop == 0 || self.first_hop > self.max_hops {
            return Err(format!(
                "first_hop {} must be between 1 and max_hops ({})",
                self.first_hop, self.max_hops
            ));
        }
        if self.probes_per_hop == 0 || self.probes_per_hop > MAX_PROBES_PER_HOP {
            return Err(format!(
                "probes_per_hop must be between 1 and {MAX_PROBES_PER_HOP}"
            ));
        }
        if let Some(t) = self.hop_timeout.filter(|t| t.0 < StdDuration::from_millis(1)) {
            return Err(format!("hop_timeout {t} is too short: use 1ms or more"));
        }
        if self.base_port == 0 {
            return Err("base_port 0 is not a port to probe: use 1-65535".into());
        }
        let last = u32::from(self.base_port) + self.probes() - 1;
        if self.method == Method::Udp && last > 65_535 {
            return Err(format!(
                "base_port {} + {} probes runs past port 65535: lower base_port to at most {}",
                self.base_port,
                self.probes(),
                65_536 - self.probes()
            ));
        }
        Ok(())
    }

    /// Probes per round at most.
    fn probes(&self) -> u32 {
        (self.max_hops - self.first_hop + 1) * self.probes_per_hop
    }

    /// Checks that a given `hop_timeout` fits in the round's budget (90% of the service
    /// timeout).
    pub fn check_fits(&self, timeout: StdDuration) -> Result<(), String> {
        let budget = wait_budget(timeout);
        match self.hop_timeout {
            Some(t) if t.0 > budget => Err(format!(
                "hop_timeout {t} does not fit in the timeout {} (a round must end by {}, 90% of it): lower hop_timeout or raise the timeout",
                Duration(timeout),
                Duration(budget)
            )),
            _ => Ok(()),
        }
    }

    /// How long a probe waits for its answer in a round of `budget`.
    fn hop_wait(&self, budget: StdDuration) -> StdDuration {
        self.hop_timeout
            .map_or(DEFAULT_HOP_TIMEOUT.min(budget), |t| t.0)
    }
}

/// The traceroute families, registered once.
#[derive(Debug, Clone)]
pub struct Metrics {
    hops: Family<Labels, FGauge>,
    hop_rtt: Family<Labels, FGauge>,
    hop_loss: Family<Labels, FGauge>,
    route_changes: Family<Labels, Counter>,
    reached: Family<Labels, FGauge>,
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            hops: Family::default(),
            hop_rtt: Family::default(),
            hop_loss: Family::default(),
            route_changes: Family::default(),
            reached: Family::default(),
        };
        registry.register(
            "traceroute_hops",
            "Hops to the target in the last round (the last hop that answered when it was not reached)",
            m.hops.clone(),
        );
        registry.register_with_unit(
            "traceroute_hop_rtt",
            "Mean round-trip time of the hop's answers in the last round",
            Unit::Seconds,
            m.hop_rtt.clone(),
        );
        registry.register(
            "traceroute_hop_loss_ratio",
            "Share of the hop's probes unanswered in the last round (0 to 1)",
            m.hop_loss.clone(),
        );
        registry.register(
            "traceroute_route_changes",
            "Rounds whose hop addresses differed from the round before",
            m.route_changes.clone(),
        );
        registry.register(
            "traceroute_reached",
            "Whether the last round reached the target (1) or not (0)",
            m.reached.clone(),
        );
        m
    }
}

/// The `traceroute` protocol in the table of protocols.
#[derive(Debug)]
pub struct Traceroute;

impl Definition for Traceroute {
    const NAME: &'static str = "traceroute";
    const PORT: PortRule = PortRule::None;
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
        Ok(Arc::new(TracerouteProbe::new(
            options.clone(),
            ctx,
            metrics,
        )?))
    }
}

/// One hop of a finished round.
#[derive(Debug, Clone, Default, PartialEq)]
struct Hop {
    ttl: u8,
    sent: u32,
    /// The RTT of each answer, in arrival order.
    rtts: Vec<StdDuration>,
    /// Who answered, in order of first answer (more than one where paths balance).
    addrs: Vec<IpAddr>,
    /// The target answered at this hop.
    reached: bool,
    /// An unreachable mark (`!H host unreachable`): the path ends here.
    mark: Option<&'static str>,
}

impl Hop {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - self.rtts.len() as f64 / f64::from(self.sent)
    }

    fn mean(&self) -> Option<StdDuration> {
        if self.rtts.is_empty() {
            return None;
        }
        Some(self.rtts.iter().sum::<StdDuration>() / self.rtts.len() as u32)
    }
}

/// A finished round: the hops from `first_hop` to the last one that matters (the target's,
/// else the last that answered).
#[derive(Debug, Clone, PartialEq)]
struct Path {
    hops: Vec<Hop>,
    reached: bool,
}

impl Path {
    /// The TTL of the last hop, 0 when nothing answered.
    fn len(&self) -> u8 {
        self.hops.last().map(|h| h.ttl).unwrap_or(0)
    }

    /// The ordered hop addresses, `*` for a silent hop: what a route change is a change of.
    fn addresses(&self) -> String {
        let mut s = String::new();
        for h in &self.hops {
            if !s.is_empty() {
                s.push(' ');
            }
            if h.addrs.is_empty() {
                s.push('*');
            } else {
                let mut addrs = h.addrs.clone();
                addrs.sort();
                let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                s.push_str(&list.join("|"));
            }
        }
        s
    }

    fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.addresses().hash(&mut h);
        h.finish()
    }

    /// The path as the status page and the log show it: `1 192.0.2.1 0.412ms, 2 *, ...`.
    fn text(&self) -> String {
        let mut s = String::new();
        for h in &self.hops {
            if !s.is_empty() {
                s.push_str(", ");
            }
            let _ = write!(s, "{}", h.ttl);
            if h.addrs.is_empty() {
                s.push_str(" *");
                continue;
            }
            for a in &h.addrs {
                let _ = write!(s, " {a}");
            }
            if let Some(m) = h.mean() {
                let _ = write!(s, " {:.3}ms", m.as_secs_f64() * 1e3);
            }
            if h.sent as usize > h.rtts.len() {
                let _ = write!(s, " ({}/{})", h.rtts.len(), h.sent);
            }
            if let Some(mark) = h.mark {
                let _ = write!(s, " {}", mark.split(' ').next().unwrap_or(mark));
            }
        }
        if s.is_empty() {
            s.push_str("no hop answered");
        }
        s
    }
}

/// What the probe remembers between rounds.
#[derive(Debug, Default)]
struct Memory {
    /// The hash of the last round's hop addresses.
    route: Option<u64>,
    /// The highest hop with series.
    shown: u8,
}

/// Traces the path to one host.
#[derive(Debug)]
pub struct TracerouteProbe {
    options: Options,
    budget: StdDuration,
    /// How long a probe waits for its answer.
    hop_wait: StdDuration,
    labels: Labels,
    metrics: Metrics,
    memory: Mutex<Memory>,
}

impl TracerouteProbe {
    /// Builds the probe: checks a probe's wait fits in the timeout and, for ICMP probes, that
    /// an ICMP socket can be opened, so a missing privilege fails start-up.
    pub fn new(options: Options, ctx: &Context<'_>, metrics: &Metrics) -> Result<Self, BuildError> {
        options.check_fits(ctx.timeout).map_err(BuildError)?;
        if options.method == Method::Icmp {
            let probe_addr = match options.ip {
                IpPreference::Ipv6 => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                IpPreference::Auto | IpPreference::Ipv4 => {
                    IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
                }
            };
            let s = RoundSocket::open(Method::Icmp, probe_addr, options.base_port)
                .map_err(|e| BuildError(e.to_string()))?;
            debug!(socket = s.kind(), "traceroute can open its ICMP socket");
        }
        // The counter is there from the start, so `increase()` sees the first change.
        let _ = metrics.route_changes.get_or_create(ctx.labels);
        let budget = wait_budget(ctx.timeout);
        Ok(TracerouteProbe {
            hop_wait: options.hop_wait(budget),
            options,
            budget,
            labels: ctx.labels.clone(),
            metrics: metrics.clone(),
            memory: Mutex::default(),
        })
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.budget;
        let addr = resolve::resolve(&target.host, 0, self.options.ip).await?[0].ip();
        let socket = RoundSocket::open(self.options.method, addr, self.options.base_port)
            .map_err(|e| Failure::new(Reason::Io, e.to_string()))?;
        let path = self.round(&socket, addr, deadline).await?;
        self.record(&path);
        self.judge(addr, path)
    }

    /// Sends every hop's probes and gathers the answers until each probe that matters has its
    /// answer or its `hop_timeout`, within the round's deadline.
    async fn round(
        &self,
        socket: &RoundSocket,
        addr: IpAddr,
        deadline: tokio::time::Instant,
    ) -> Result<Path, Failure> {
        let o = &self.options;
        let per_hop = o.probes_per_hop as usize;
        let first = o.first_hop as u8;
        let last = o.max_hops as u8;
        let count = usize::from(last - first + 1) * per_hop;
        let mut sent: Vec<Option<Instant>> = vec![None; count];
        let mut answers: Vec<Option<Answer>> = vec![None; count];
        // The lowest TTL the target (or an unreachable) answered from: nothing past it matters.
        let mut end: Option<u8> = None;
        let mut send_error = None;
        let ttl_of = |index: usize| first + (index / per_hop) as u8;
        let take = |a: Answer,
                    sent: &[Option<Instant>],
                    answers: &mut [Option<Answer>],
                    end: &mut Option<u8>| {
            let i = usize::from(a.index);
            if i >= count || sent[i].is_none() || answers[i].is_some() {
                return;
            }
            if a.what != What::TimeExceeded {
                let ttl = ttl_of(i);
                *end = Some(end.map_or(ttl, |e| e.min(ttl)));
            }
            answers[i] = Some(a);
        };
        for ttl in first..=last {
            if end.is_some_and(|e| ttl > e) {
                break;
            }
            for k in 0..per_hop {
                let index = usize::from(ttl - first) * per_hop + k;
                match socket.send(index as u16, ttl) {
                    Ok(t0) => sent[index] = Some(t0),
                    Err(e) => send_error = Some(e),
                }
            }
            // Answers that came back meanwhile: on a short path the target has answered
            // before the later TTLs are sent.
            for _ in 0..DRAIN {
                let Ok(Some(a)) = socket.try_next() else { break };
                take(a, &sent, &mut answers, &mut end);
            }
        }
        if sent.iter().all(Option::is_none) {
            let e = send_error.unwrap_or_else(|| std::io::Error::other("nothing sent"));
            return Err(Failure::io(&format!("send probes to {addr}"), &e));
        }
        loop {
            let limit = end.unwrap_or(last);
            // The latest moment a probe that matters may still be answered.
            let waiting = (0..count)
                .filter(|&i| ttl_of(i) <= limit && answers[i].is_none())
                .filter_map(|i| sent[i])
                .max();
            let Some(t0) = waiting else { break };
            let until = tokio::time::Instant::from_std(t0 + self.hop_wait).min(deadline);
            tokio::select! {
                r = socket.next() => match r {
                    Ok(a) => take(a, &sent, &mut answers, &mut end),
                    Err(e) => return Err(Failure::io(&format!("receive answers from the path to {addr}"), &e)),
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        // Answers already queued when the wait ended (a busy machine may wake this task late):
        // their kernel stamps say whether they came in time.
        for _ in 0..count + DRAIN {
            let Ok(Some(a)) = socket.try_next() else { break };
            take(a, &sent, &mut answers, &mut end);
        }
        Ok(self.path(&sent, &answers, end))
    }

    /// Folds the probes' answers into hops, each answer counted only within `hop_timeout`.
    fn path(&self, sent: &[Option<Instant>], answers: &[Option<Answer>], end: Option<u8>) -> Path {
        let o = &self.options;
        let per_hop = o.probes_per_hop as usize;
        let first = o.first_hop as u8;
        let mut hops: Vec<Hop> = Vec::new();
        for (i, (t0, answer)) in sent.iter().zip(answers).enumerate() {
            let ttl = first + (i / per_hop) as u8;
            if end.is_some_and(|e| ttl > e) {
                break;
            }
            let Some(t0) = t0 else { continue };
            if hops.last().is_none_or(|h| h.ttl != ttl) {
                hops.push(Hop {
                    ttl,
                    ..Hop::default()
                });
            }
            let Some(hop) = hops.last_mut() else { continue };
            hop.sent += 1;
            let Some(a) = answer else { continue };
            let rtt = a.at.saturating_duration_since(*t0);
            if rtt > self.hop_wait {
                continue;
            }
            hop.rtts.push(rtt.max(StdDuration::from_nanos(1)));
            if !hop.addrs.contains(&a.from) {
                hop.addrs.push(a.from);
            }
            match a.what {
                What::Reached => hop.reached = true,
                What::Unreachable(mark) => hop.mark = Some(mark),
                What::TimeExceeded => {}
            }
        }
        let reached = hops.iter().any(|h| h.reached);
        // Past the last hop that answered there is nothing to show.
        while hops.last().is_some_and(|h| h.addrs.is_empty()) {
            hops.pop();
        }
        Path { hops, reached }
    }

    /// Sets the families from a finished round and notices a route change.
    fn record(&self, path: &Path) {
        let m = &self.metrics;
        m.hops
            .get_or_create(&self.labels)
            .set(f64::from(path.len()));
        m.reached
            .get_or_create(&self.labels)
            .set(if path.reached { 1.0 } else { 0.0 });
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        for h in &path.hops {
            let labels = with_label(&self.labels, "hop", &h.ttl.to_string());
            m.hop_loss.get_or_create(&labels).set(h.loss());
            match h.mean() {
                Some(rtt) => {
                    m.hop_rtt.get_or_create(&labels).set(rtt.as_secs_f64());
                }
                None => {
                    m.hop_rtt.remove(&labels);
                }
            }
        }
        for ttl in path.len().saturating_add(1)..=memory.shown {
            let labels = with_label(&self.labels, "hop", &ttl.to_string());
            m.hop_loss.remove(&labels);
            m.hop_rtt.remove(&labels);
        }
        memory.shown = path.len();
        let hash = path.hash();
        match memory.route.replace(hash) {
            None => info!(hops = path.len(), path = path.text().as_str(), "route"),
            Some(old) if old != hash => {
                m.route_changes.get_or_create(&self.labels).inc();
                info!(hops = path.len(), path = path.text().as_str(), "route changed");
            }
            Some(_) => debug!(path = path.text().as_str(), "route unchanged"),
        }
    }

    /// Up when the target answered; the detail is the path either way.
    fn judge(&self, addr: IpAddr, path: Path) -> Outcome {
        let detail = path.text();
        if let Some(hop) = path.hops.iter().find(|h| h.reached) {
            let latency = hop.mean().unwrap_or(StdDuration::from_nanos(1));
            let round = Round {
                sent: u64::from(hop.sent),
                rtts: hop.rtts.clone(),
            };
            return Ok(Success::new(latency).with_round(round).with_detail(detail));
        }
        let message = match path.hops.last() {
            Some(h) if h.mark.is_some() => format!(
                "{addr} not reached: hop {} ({}) answered {}",
                h.ttl,
                h.addrs
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                h.mark
                    .map(|m| m.split_once(' ').map_or(m, |(_, t)| t))
                    .unwrap_or_default()
            ),
            Some(h) => format!(
                "{addr} not reached within {} hops: the last answer came from hop {} ({})",
                self.options.max_hops,
                h.ttl,
                h.addrs
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!(
                "{addr} not reached: no hop answered from hop {} to {} within {}",
                self.options.first_hop,
                self.options.max_hops,
                Duration(self.hop_wait)
            ),
        };
        Err(Failure::new(Reason::Unreachable, message).with_detail(detail))
    }
}

impl Probe for TracerouteProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        let m = &self.metrics;
        m.hops.remove(&self.labels);
        m.reached.remove(&self.labels);
        m.route_changes.remove(&self.labels);
        for ttl in 1..=MAX_HOPS {
            let labels = with_label(&self.labels, "hop", &ttl.to_string());
            m.hop_loss.remove(&labels);
            m.hop_rtt.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests;
