//! The UDP probe: send one datagram to host:port and judge the answer.
//!
//! Up when a reply arrives (and matches `expect_regex` if set); latency is the time to the
//! first reply. The socket is connected, which buys two things from the kernel: an ICMP port
//! unreachable comes back as `ECONNREFUSED` (reason `refused`), and datagrams from any other
//! address or port are never delivered to us. Silence until shortly before the timeout is down
//! (reason `timeout`) unless `silence_is_up: true`, for services that never answer a probe they
//! do not understand. Reads are bounded by `max_read` bytes.
//!
//! As for tcp banners, what arrived decides: the first reply is judged the moment it arrives,
//! and one that does not match is reason `mismatch` with its first bytes in the message;
//! `timeout` means that nothing arrived.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::base::escape::shown;
use crate::base::udp;
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::{IpPreference, Regex};
use crate::probe::shape::{BuildError, Context, Definition, PortRule, Probe, wait_budget};

fn is_false(b: &bool) -> bool {
    !*b
}

/// Options of a `udp` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The port to send to (required; `UDP:53` sets it; a bare `UDP` is the echo check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The datagram's payload as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// The datagram's payload as hex digits (spaces allowed), for binary protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_hex: Option<String>,
    /// A pattern the first reply must match (bytes read as UTF-8, invalid sequences replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_regex: Option<Regex>,
    /// Count no reply within the timeout as up (an ICMP port unreachable is still down).
    #[serde(default, skip_serializing_if = "is_false")]
    pub silence_is_up: bool,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
    /// How many bytes of the reply are read at most (the rest of the datagram is dropped).
    #[serde(
        default = "crate::probe::shape::default_max_read",
        skip_serializing_if = "crate::probe::shape::is_default_max_read"
    )]
    pub max_read: usize,
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self.port {
            None => {
                return Err(
                    "a udp service needs a port: write `UDP:53` or `{type: udp, port: 53}` (a bare `UDP` is the echo check)"
                        .into(),
                );
            }
            Some(0) => return Err("port 0 is not a port to probe: use 1-65535".into()),
            Some(_) => {}
        }
        if self.send.is_some() && self.send_hex.is_some() {
            return Err("give the payload once: `send` (text) or `send_hex`, not both".into());
        }
        if self.max_read == 0 || self.max_read > 65_535 {
            return Err("max_read must be between 1 and 65535 bytes".into());
        }
        let len = self.payload()?.len();
        if len > 65_507 {
            return Err(format!(
                "the payload is {len} bytes; a UDP datagram carries at most 65507"
            ));
        }
        Ok(())
    }

    /// The bytes to send: `send`, decoded `send_hex`, or an empty datagram.
    pub fn payload(&self) -> Result<Vec<u8>, String> {
        match (&self.send, &self.send_hex) {
            (Some(text), _) => Ok(text.as_bytes().to_vec()),
            (None, Some(hex)) => decode_hex(hex),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// Decodes hex digit pairs; ASCII whitespace between them is ignored.
fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!(
            "send_hex has an odd number of hex digits ({}): write whole bytes such as `0a1b`",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "send_hex: `{}` is not a hex byte",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

/// The `udp` protocol in the table of protocols.
#[derive(Debug)]
pub struct Udp;

impl Definition for Udp {
    const NAME: &'static str = "udp";
    const PORT: PortRule = PortRule::Required;
    type Options = Options;
    type Metrics = ();

    fn validate(options: &Options) -> Result<(), String> {
        options.validate()
    }

    fn port(options: &Options) -> Option<u16> {
        options.port
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        _: &(),
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(UdpProbe::new(options.clone(), ctx)?))
    }
}

/// Probes one UDP service.
#[derive(Debug)]
pub struct UdpProbe {
    options: Options,
    payload: Vec<u8>,
    budget: Duration,
}

impl UdpProbe {
    /// Builds the probe; UDP has only the common metric families.
    pub fn new(options: Options, ctx: &Context<'_>) -> Result<Self, BuildError> {
        let payload = options.payload().map_err(BuildError)?;
        Ok(UdpProbe {
            options,
            payload,
            budget: wait_budget(ctx.timeout),
        })
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let deadline = Instant::now() + self.budget;
        let port = self.options.port.unwrap_or_default();
        let addr = resolve::resolve(&target.host, port, self.options.ip).await?[0];
        let socket = udp::connected(addr).await?;
        let start = Instant::now();
        socket
            .send(&self.payload)
            .await
            .map_err(|e| Failure::io(&format!("send to {addr}"), &e))?;
        let sent = start.elapsed();
        let mut buf = vec![0u8; self.options.max_read];
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(Failure::io(&format!("receive from {addr}"), &e)),
            Err(_) if self.options.silence_is_up => {
                // Nothing to time: the latency is what sending took.
                return Ok(Success::new(sent.max(Duration::from_nanos(1))));
            }
            Err(_) => {
                return Err(Failure::new(
                    Reason::Timeout,
                    format!(
                        "no reply from {addr} within {}",
                        humantime::format_duration(self.budget)
                    ),
                ));
            }
        };
        let latency = start.elapsed().max(Duration::from_nanos(1));
        check_reply(self.options.expect_regex.as_ref(), &buf[..n])?;
        Ok(Success::new(latency))
    }
}

/// Judges the reply's bytes against `expect_regex`, read as UTF-8 with invalid sequences
/// replaced. A datagram is complete when it arrives, so this is the moment of judgement: the
/// first reply decides at once. `pub(crate)` for `crate::fuzzing`.
pub(crate) fn check_reply(expect: Option<&Regex>, reply: &[u8]) -> Result<(), Failure> {
    if let Some(re) = expect {
        if !re.0.is_match(&String::from_utf8_lossy(reply)) {
            return Err(Failure::new(
                Reason::Mismatch,
                format!(
                    "received {}, which does not match /{}/",
                    shown(reply),
                    re.as_str()
                ),
            ));
        }
    }
    Ok(())
}

impl Probe for UdpProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::UdpSocket;
    use crate::base::labels::Labels;

    fn probe(options: Options, timeout: Duration) -> UdpProbe {
        let labels = Labels::new();
        options.validate().unwrap();
        UdpProbe::new(
            options,
            &Context {
                labels: &labels,
                timeout,
                rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
            },
        )
        .unwrap()
    }

    fn options(port: u16) -> Options {
        Options {
            port: Some(port),
            send: Some("ping".into()),
            send_hex: None,
            expect_regex: None,
            silence_is_up: false,
            ip: IpPreference::Auto,
            max_read: crate::probe::shape::default_max_read(),
        }
    }

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
        }
    }

    /// A responder that answers every datagram with `prefix` + the datagram, from its own
    /// socket, or from a second socket (another port) when `from_other_port` is set.
    async fn responder(prefix: &'static [u8], from_other_port: bool) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // Bounded: the test ends long before 100 datagrams.
            for _ in 0..100 {
                let Ok((n, peer)) = s.recv_from(&mut buf).await else {
                    return;
                };
                let mut reply = prefix.to_vec();
                reply.extend_from_slice(&buf[..n]);
                let from = if from_other_port { &other } else { &s };
                let _ = from.send_to(&reply, peer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn responder_is_up_with_positive_latency() {
        let addr = responder(b"pong:", false).await;
        let ok = probe(options(addr.port()), Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap();
        assert!(ok.latency > Duration::ZERO);
        assert!(ok.latency < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn expect_regex_matches_and_mismatches() {
        let addr = responder(b"pong:", false).await;
        let mut o = options(addr.port());
        o.expect_regex = Some(Regex::new("^pong:ping$").unwrap());
        probe(o.clone(), Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap();
        o.expect_regex = Some(Regex::new("^PONG").unwrap());
        let e = probe(o, Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch);
        assert!(e.message.contains("pong:ping"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_reply_that_does_not_match_fails_at_once_and_shows_its_bytes() {
        let addr = responder(b"\x00\x01\r\n", false).await;
        let mut o = options(addr.port());
        o.expect_regex = Some(Regex::new("^PONG").unwrap());
        let start = Instant::now();
        let e = probe(o, Duration::from_secs(2))
            .run(&target())
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        assert_eq!(e.reason, Reason::Mismatch);
        assert_eq!(
            e.message,
            r#"received "\x00\x01\r\nping", which does not match /^PONG/"#
        );
    }

    #[tokio::test]
    async fn send_hex_sends_binary_bytes() {
        let addr = responder(b"", false).await;
        let mut o = options(addr.port());
        o.send = None;
        o.send_hex = Some("68 69 0a".into());
        o.expect_regex = Some(Regex::new("^hi\n$").unwrap());
        probe(o, Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap();
        assert_eq!(decode_hex("00ff 10").unwrap(), vec![0, 255, 16]);
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        drop(s);
        let e = probe(options(port), Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
        // Refused stays down even when silence would count as up.
        let mut o = options(port);
        o.silence_is_up = true;
        let e = probe(o, Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
    }

    #[tokio::test]
    async fn silent_port_is_down_unless_silence_is_up() {
        // Bound and never read: no reply and no port unreachable.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let e = probe(options(port), Duration::from_millis(300))
            .run(&target())
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Timeout, "{e}");
        let mut o = options(port);
        o.silence_is_up = true;
        let ok = probe(o, Duration::from_millis(300))
            .run(&target())
            .await
            .unwrap();
        assert!(ok.latency > Duration::ZERO);
    }

    #[tokio::test]
    async fn reply_from_another_port_is_ignored() {
        let addr = responder(b"pong:", true).await;
        let e = probe(options(addr.port()), Duration::from_millis(300))
            .run(&target())
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Timeout, "{e}");
    }

    #[tokio::test]
    async fn reads_are_bounded_by_max_read() {
        let addr = responder(b"0123456789", false).await;
        let mut o = options(addr.port());
        o.max_read = 4;
        o.expect_regex = Some(Regex::new("^0123$").unwrap());
        probe(o, Duration::from_secs(1))
            .run(&target())
            .await
            .unwrap();
    }

    #[test]
    fn options_come_from_the_config() {
        let text = "targets:\n  h:\n    services:\n      - \"UDP:53\"\n      - { type: udp, port: 161, send_hex: '30 26', expect_regex: '^0', silence_is_up: true, ip: ipv6, max_read: 512 }\n";
        let c = crate::config::loader::load(text, "t.yml").unwrap();
        let s: Vec<_> = c.services().collect();
        assert_eq!(s[0].name, "udp:53");
        assert_eq!(
            s[0].options,
            crate::probe::Options::Udp(Options {
                port: Some(53),
                send: None,
                send_hex: None,
                expect_regex: None,
                silence_is_up: false,
                ip: IpPreference::Auto,
                max_read: 4096,
            })
        );
        match &s[1].options {
            crate::probe::Options::Udp(o) => {
                assert_eq!(o.payload().unwrap(), vec![0x30, 0x26]);
                assert!(o.silence_is_up);
                assert_eq!(o.max_read, 512);
            }
            other => panic!("{other:?}"),
        }
        let bad = "targets:\n  h:\n    services:\n      - { type: udp, port: 9, send: a, send_hex: '00' }\n";
        let e = crate::config::loader::load(bad, "t.yml").unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
        let bad = "targets:\n  h:\n    services:\n      - { type: udp, send: a }\n";
        let e = crate::config::loader::load(bad, "t.yml").unwrap_err().to_string();
        assert!(e.contains("needs a port"), "{e}");
    }

    #[test]
    fn options_are_validated() {
        let mut o = options(53);
        o.port = None;
        assert!(o.validate().unwrap_err().contains("needs a port"));
        let mut o = options(53);
        o.send_hex = Some("00".into());
        assert!(o.validate().unwrap_err().contains("not both"));
        let mut o = options(53);
        o.send = None;
        o.send_hex = Some("abc".into());
        assert!(o.validate().unwrap_err().contains("odd number"));
        o.send_hex = Some("zz".into());
        assert!(o.validate().unwrap_err().contains("not a hex byte"));
        let mut o = options(53);
        o.max_read = 0;
        assert!(o.validate().unwrap_err().contains("max_read"));
    }
}
