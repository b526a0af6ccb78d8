//! The `echo` probe: one session of the echo client (`crate::echo::client`) against a UDP echo
//! server such as `netmon echo-server`. The classic form's bare `UDP` (no port) is this probe.
//!
//! Up when no reply is corrupted and the loss is within `max_loss` (by default: at least one
//! intact reply); latency is the mean RTT. Packets, RTTs, loss and jitter go to the shared
//! packet families (`crate::probe::packets`), recorded even when the runner's timeout cuts the
//! session short.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::{Duration as ConfigDuration, IpPreference};
use crate::echo::client::{self, Event, Report, Session, SessionError, SessionOptions};
use crate::echo::wire;
use crate::probe::packets::Handles;
use crate::probe::packets::Metrics;
use crate::probe::shape::{BuildError, Context, Definition, PortRule, Probe};

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
    64
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

/// Options of an `echo` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The echo server's UDP port (default 7007).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Messages per probe.
    #[serde(default = "default_count", skip_serializing_if = "is_default_count")]
    pub count: u64,
    /// Time between messages (the service's `interval` is the time between probes).
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    pub packet_interval: ConfigDuration,
    /// Message size in bytes, header included (32 to 65507).
    #[serde(default = "default_size", skip_serializing_if = "is_default_size")]
    pub size: usize,
    /// How long each reply may take; a later one counts as lost.
    #[serde(
        default = "default_reply_timeout",
        skip_serializing_if = "is_default_reply_timeout"
    )]
    pub reply_timeout: ConfigDuration,
    /// Largest lost share (0 to 1) still up; default: up with at least one intact reply.
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
        if !(wire::HEADER_LEN..=wire::MAX_LEN).contains(&self.size) {
            return Err(format!(
                "size {} is out of range: use {} to {} bytes",
                self.size,
                wire::HEADER_LEN,
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
        self.port.unwrap_or(client::DEFAULT_PORT)
    }

    fn session(&self) -> SessionOptions {
        SessionOptions {
            count: self.count,
            interval: self.packet_interval.0,
            size: self.size,
            wait: self.reply_timeout.0,
        }
    }
}

/// The `echo` protocol in the table of protocols.
#[derive(Debug)]
pub struct Echo;

impl Definition for Echo {
    const NAME: &'static str = "echo";
    const PORT: PortRule = PortRule::Default(client::DEFAULT_PORT);
    const RTT_HISTOGRAM: bool = true;
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
        Ok(Arc::new(EchoProbe::new(options.clone(), ctx, metrics)))
    }
}

/// Probes one echo server.
#[derive(Debug)]
pub struct EchoProbe {
    options: Options,
    packets: Handles,
}

/// Records a session's report when dropped, so a session cut short by the runner's timeout
/// still counts the messages it sent.
struct Recorder<'a> {
    packets: &'a Handles,
    report: Report,
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.packets.record(&self.report.round());
    }
}

impl EchoProbe {
    /// Builds the probe and creates its packet series.
    pub fn new(options: Options, ctx: &Context<'_>, metrics: &Metrics) -> Self {
        EchoProbe {
            options,
            packets: metrics.handles(ctx.labels, ctx.rtt_buckets),
        }
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let o = &self.options;
        let addrs = resolve::resolve(&target.host, o.port(), o.ip).await?;
        let peer = addrs[0];
        let socket = client::connect(peer)
            .await
            .map_err(|e| Failure::io(&format!("udp socket to {peer}"), &e))?;
        let session = Session::new(o.session());
        let mut rec = Recorder {
            packets: &self.packets,
            report: Report::default(),
        };
        let mut first_corruption = None;
        let result = session
            .run(&socket, &CancellationToken::new(), &mut rec.report, |e| {
                if let (None, Event::Corrupted { seq, detail, .. }) = (&first_corruption, e) {
                    first_corruption = Some(match seq {
                        Some(s) => format!("seq={s}: {detail}"),
                        None => detail.clone(),
                    });
                }
            })
            .await;
        let report = rec.report.clone();
        drop(rec);
        match result {
            Ok(()) => {}
            Err(SessionError::Io { context, source }) => {
                return Err(Failure::io(&format!("{context} {peer}"), &source));
            }
            Err(e @ SessionError::Encode(_)) => {
                return Err(Failure::new(Reason::Io, e.to_string()));
            }
        }
        let round = report.round();
        match self.judge(peer, &report, first_corruption) {
            Ok(s) => Ok(s.with_round(round)),
            Err(f) => Err(f.with_round(round)),
        }
    }

    fn judge(
        &self,
        peer: std::net::SocketAddr,
        r: &Report,
        first_corruption: Option<String>,
    ) -> Outcome {
        let o = &self.options;
        if r.received == 0 && r.refused > 0 {
            return Err(Failure::new(
                Reason::Refused,
                format!("port unreachable: nothing listens on udp {peer}"),
            ));
        }
        if r.corrupted > 0 {
            return Err(Failure::new(
                Reason::Mismatch,
                format!(
                    "{} corrupted {} from {peer} (first: {})",
                    r.corrupted,
                    if r.corrupted == 1 { "reply" } else { "replies" },
                    first_corruption.unwrap_or_default()
                ),
            ));
        }
        let round = r.round();
        if r.received == 0 {
            return Err(Failure::new(
                Reason::Timeout,
                format!(
                    "no reply from {peer} to {} messages within {}",
                    r.sent, o.reply_timeout
                ),
            ));
        }
        let loss = round.loss_ratio();
        if let Some(max) = o.max_loss {
            if loss > max {
                return Err(Failure::new(
                    Reason::Loss,
                    format!(
                        "{} of {} messages to {peer} lost ({:.0}%, max_loss {max})",
                        r.sent - r.received,
                        r.sent,
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

impl Probe for EchoProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.packets.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::labels::Labels;
    use crate::echo::server::EchoServer;
    use crate::echo::server::metrics::Metrics as ServerMetrics;
    use crate::echo::settings::Settings;
    use crate::probe::ProbeMetrics;
    use prometheus_client::registry::Registry;
    use tokio::net::UdpSocket;

    fn options(port: u16) -> Options {
        Options {
            port: Some(port),
            count: 3,
            packet_interval: ConfigDuration(Duration::from_millis(10)),
            size: 64,
            reply_timeout: ConfigDuration(Duration::from_millis(300)),
            max_loss: None,
            ip: IpPreference::Auto,
        }
    }

    fn probe(options: Options) -> (EchoProbe, (Registry, ProbeMetrics)) {
        let mut reg = Registry::default();
        let metrics = ProbeMetrics::register(&mut reg);
        let labels: Labels = vec![("service".into(), "echo".into())];
        let p = EchoProbe::new(
            options,
            &Context {
                labels: &labels,
                timeout: std::time::Duration::from_secs(5),
                rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
            },
            &metrics.echo,
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

    /// A reflector that applies `f` to each datagram and sends back what it returns.
    async fn reflector(
        f: impl Fn(u64, Vec<u8>) -> Vec<Vec<u8>> + Send + 'static,
    ) -> std::net::SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut n_seen = 0u64;
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                for out in f(n_seen, buf[..n].to_vec()) {
                    let _ = s.send_to(&out, from).await;
                }
                n_seen += 1;
            }
        });
        addr
    }

    #[tokio::test]
    async fn up_against_the_real_server_with_packet_metrics() {
        let token = CancellationToken::new();
        let mut reg = Registry::default();
        let sm = ServerMetrics::register(&mut reg);
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        };
        let server = EchoServer::start(settings, &sm, &token).await.unwrap();
        let (p, preg) = probe(options(server.local_addr().port()));
        let ok = p.run(&target()).await.unwrap();
        assert!(ok.latency > Duration::ZERO && ok.latency < Duration::from_millis(300));
        let t = text(&preg);
        assert!(t.contains("packets_sent_total{service=\"echo\"} 3"), "{t}");
        assert!(
            t.contains("packets_received_total{service=\"echo\"} 3"),
            "{t}"
        );
        assert!(t.contains("packet_loss_ratio{service=\"echo\"} 0.0"), "{t}");
        assert!(t.contains("\nnetmon_mos{service=\"echo\"} 4."), "{t}");
        p.forget();
        assert!(!text(&preg).contains("service=\"echo\""));
        server.stop().await;
    }

    #[tokio::test]
    async fn corrupted_replies_are_a_mismatch() {
        let addr = reflector(|_, mut b| {
            let last = b.len() - 1;
            b[last] ^= 1;
            vec![b]
        })
        .await;
        let (p, _) = probe(options(addr.port()));
        let e = p.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert!(e.message.contains("padding corrupted at byte 63"), "{e}");
    }

    #[tokio::test]
    async fn loss_over_max_loss_is_down_and_under_it_up() {
        // Drops seq 1: 2 of 3 come back (1/3 lost), in every session.
        let addr = reflector(|_, b| match wire::ids(&b) {
            Some((_, 1)) => vec![],
            _ => vec![b],
        })
        .await;
        let mut o = options(addr.port());
        o.max_loss = Some(0.2);
        let (p, reg) = probe(o.clone());
        let e = p.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Loss, "{e}");
        assert!(text(&reg).contains("packets_received_total{service=\"echo\"} 2"));
        o.max_loss = Some(0.5);
        probe(o.clone()).0.run(&target()).await.unwrap();
        // Default: one intact reply is enough.
        o.max_loss = None;
        probe(o).0.run(&target()).await.unwrap();
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_a_closed_port_refused() {
        let addr = reflector(|_, _| vec![]).await;
        let (p, reg) = probe(options(addr.port()));
        let e = p.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Timeout, "{e}");
        let t = text(&reg);
        assert!(t.contains("packet_loss_ratio{service=\"echo\"} 1.0"), "{t}");
        assert!(t.contains("\nnetmon_r_factor{service=\"echo\"} 0.0"), "{t}");
        assert!(t.contains("\nnetmon_mos{service=\"echo\"} 1.0"), "{t}");

        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        drop(s);
        let e = probe(options(port)).0.run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
    }

    #[tokio::test]
    async fn a_session_cut_short_still_counts_what_it_sent() {
        let addr = reflector(|_, _| vec![]).await;
        let (p, reg) = probe(options(addr.port()));
        // The runner's timeout drops the future mid-session.
        let r = tokio::time::timeout(Duration::from_millis(50), p.run(&target())).await;
        assert!(r.is_err());
        assert!(
            text(&reg).contains("packets_sent_total{service=\"echo\"} 3"),
            "{}",
            text(&reg)
        );
    }

    #[test]
    fn options_are_validated() {
        let mut o = options(7007);
        o.validate().unwrap();
        o.size = 10;
        assert!(o.validate().unwrap_err().contains("size"));
        let mut o = options(7007);
        o.max_loss = Some(1.5);
        assert!(o.validate().unwrap_err().contains("max_loss"));
        let mut o = options(7007);
        o.count = 0;
        assert!(o.validate().unwrap_err().contains("count"));
        o = options(7007);
        o.port = None;
        assert_eq!(o.port(), 7007);
    }
}
