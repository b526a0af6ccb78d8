//! The TCP probe: connect to host:port, optionally send a line and match the banner.
//!
//! Up when the connection is established (and `expect_regex` matches what the peer sends);
//! latency is the connect time, so a slow banner does not read as a slow network. Reads are
//! bounded by `max_read` bytes.
//!
//! What arrived decides, not the clock: the banner is judged as soon as its first line is
//! complete (with whatever arrived together with it), when the peer closes, when `max_read`
//! bytes are in, or [`SETTLE`] after the first bytes when no newline comes. A banner that
//! does not match is then reason `mismatch`, with the bytes shown in the message; only a peer
//! that sends nothing at all runs into the timeout (reason `timeout`). sshd, for example,
//! sends its one-line banner and then waits for ours, so waiting for more would only ever end
//! in the timeout.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::base::escape::shown;
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::{IpPreference, Regex};
use crate::probe::shape::{BuildError, Context, Definition, PortRule, Probe};

/// Options of a `tcp` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The port to connect to (required; `TCP:22` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Text sent once connected (escapes such as `\r\n` are written as YAML escapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// A pattern the peer's banner (or reply to `send`) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_regex: Option<Regex>,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
    /// How many bytes of banner to read at most while looking for `expect_regex`.
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
                Err("a tcp service needs a port: write `TCP:22` or `{type: tcp, port: 22}`".into())
            }
            Some(0) => Err("port 0 is not a port to probe: use 1-65535".into()),
            Some(_) if self.max_read == 0 || self.max_read > 1 << 20 => {
                Err("max_read must be between 1 and 1048576 bytes".into())
            }
            Some(_) => Ok(()),
        }
    }
}

/// The `tcp` protocol in the table of protocols.
#[derive(Debug)]
pub struct Tcp;

impl Definition for Tcp {
    const NAME: &'static str = "tcp";
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
        Ok(Arc::new(TcpProbe::new(options.clone(), ctx)))
    }
}

/// How long a banner that has begun may take to complete its first line: 250 ms after its
/// first bytes (or a quarter of the service's timeout, if that is shorter).
pub const SETTLE: Duration = Duration::from_millis(250);

/// Probes one TCP service.
#[derive(Debug)]
pub struct TcpProbe {
    options: Options,
    settle: Duration,
}

impl TcpProbe {
    /// Builds the probe; TCP has only the common metric families.
    pub fn new(options: Options, ctx: &Context<'_>) -> Self {
        TcpProbe {
            options,
            // Leaves the runner's timeout room to fall after a banner has been judged.
            settle: SETTLE.min(ctx.timeout / 4),
        }
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let port = self.options.port.unwrap_or_default();
        let addrs = resolve::resolve(&target.host, port, self.options.ip).await?;
        let start = Instant::now();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(Failure::io(&format!("connect to {addr}"), &e)),
            }
        }
        let Some(mut stream) = stream else {
            return Err(
                last.unwrap_or_else(|| Failure::new(Reason::Dns, "no address to connect to"))
            );
        };
        let latency = start.elapsed();
        if let Some(send) = &self.options.send {
            stream
                .write_all(send.as_bytes())
                .await
                .map_err(|e| Failure::io("send", &e))?;
        }
        if let Some(re) = &self.options.expect_regex {
            expect_settled(&mut stream, re, self.options.max_read, self.settle).await?;
        }
        Ok(Success::new(latency.max(Duration::from_nanos(1))))
    }
}

/// Reads the banner and judges it with the default [`SETTLE`] time. Generic over the stream
/// and `pub(crate)` so `crate::fuzzing` can feed it bytes in memory.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn expect<S: AsyncRead + Unpin>(
    stream: &mut S,
    re: &Regex,
    max: usize,
) -> Result<(), Failure> {
    expect_settled(stream, re, max, SETTLE).await
}

/// Reads until `re` matches what arrived, or until the banner can be judged: its first line
/// is complete, the peer closed, `max` bytes are in, or `settle` has passed since the first
/// bytes. Until the first bytes, the wait is the runner's timeout.
pub(crate) async fn expect_settled<S: AsyncRead + Unpin>(
    stream: &mut S,
    re: &Regex,
    max: usize,
    settle: Duration,
) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(max.min(4096));
    // One read takes everything the socket holds (up to this), so a reply sent in one piece
    // is judged whole even when its first line is complete.
    let mut chunk = vec![0u8; max.min(16 * 1024)];
    let mut settled_at = None;
    loop {
        let room = (max - buf.len()).min(chunk.len());
        let read = stream.read(&mut chunk[..room]);
        let n = match settled_at {
            None => read.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                Ok(r) => r,
                Err(_) => return Err(mismatch(&buf, re, "")),
            },
        }
        .map_err(|e| Failure::io("read banner", &e))?;
        buf.extend_from_slice(&chunk[..n]);
        if re.0.is_match(&String::from_utf8_lossy(&buf)) {
            return Ok(());
        }
        if n == 0 {
            if buf.is_empty() {
                return Err(Failure::new(
                    Reason::Mismatch,
                    format!(
                        "the peer closed the connection without sending anything (expected /{}/)",
                        re.as_str()
                    ),
                ));
            }
            return Err(mismatch(&buf, re, " before the peer closed"));
        }
        if buf.len() >= max {
            return Err(mismatch(&buf, re, " (max_read reached)"));
        }
        if buf.contains(&b'\n') {
            return Err(mismatch(&buf, re, ""));
        }
        settled_at.get_or_insert_with(|| Instant::now() + settle);
    }
}

fn mismatch(received: &[u8], re: &Regex, how: &str) -> Failure {
    Failure::new(
        Reason::Mismatch,
        format!(
            "received {}{how}, which does not match /{}/",
            shown(received),
            re.as_str()
        ),
    )
}

impl Probe for TcpProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::labels::Labels;
    use tokio::net::TcpListener;

    fn probe(options: Options) -> TcpProbe {
        let labels = Labels::new();
        TcpProbe::new(
            options,
            &Context {
                labels: &labels,
                timeout: Duration::from_secs(1),
                rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
            },
        )
    }

    fn options(port: u16) -> Options {
        Options {
            port: Some(port),
            send: None,
            expect_regex: None,
            ip: IpPreference::Auto,
            max_read: crate::probe::shape::default_max_read(),
        }
    }

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
        }
    }

    /// A listener that writes `banner` to every connection, echoing one read back first if
    /// `echo` is set.
    async fn server(banner: &'static [u8], echo: bool) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if echo {
                        let mut b = [0u8; 64];
                        let n = s.read(&mut b).await.unwrap_or(0);
                        let _ = s.write_all(&b[..n]).await;
                    }
                    let _ = s.write_all(banner).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn open_port_is_up_with_positive_latency() {
        let addr = server(b"", false).await;
        let ok = probe(options(addr.port())).run(&target()).await.unwrap();
        assert!(ok.latency > Duration::ZERO);
        assert!(ok.latency < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = probe(options(port)).run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
    }

    #[tokio::test]
    async fn banner_regex_matches_and_mismatches() {
        let addr = server(b"SSH-2.0-OpenSSH_9.2\r\n", false).await;
        let mut o = options(addr.port());
        o.expect_regex = Some(Regex::new("^SSH-2\\.0-").unwrap());
        probe(o.clone()).run(&target()).await.unwrap();
        o.expect_regex = Some(Regex::new("^220 ").unwrap());
        let e = probe(o).run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch);
        assert!(e.message.contains("SSH-2.0"), "{}", e.message);
    }

    #[tokio::test]
    async fn send_then_expect_reads_the_reply() {
        let addr = server(b"", true).await;
        let mut o = options(addr.port());
        o.send = Some("PING\r\n".into());
        o.expect_regex = Some(Regex::new("PING").unwrap());
        probe(o).run(&target()).await.unwrap();
    }

    #[tokio::test]
    async fn banner_read_is_bounded() {
        static BIG: [u8; 8192] = [b'x'; 8192];
        let addr = server(&BIG, false).await;
        let mut o = options(addr.port());
        o.expect_regex = Some(Regex::new("never").unwrap());
        o.max_read = 100;
        let e = probe(o).run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch);
    }

    /// A peer that sends `parts` with `gap` between them and then keeps the connection open.
    async fn trickle(parts: &'static [&'static [u8]], gap: Duration) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    for p in parts {
                        let _ = s.write_all(p).await;
                        tokio::time::sleep(gap).await;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        addr
    }

    fn expecting(port: u16, re: &str) -> TcpProbe {
        let mut o = options(port);
        o.expect_regex = Some(Regex::new(re).unwrap());
        probe(o)
    }

    #[tokio::test]
    async fn a_banner_that_does_not_match_fails_at_its_first_line() {
        // As sshd does: one line, then it waits for the client's banner.
        let addr = server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", false).await;
        let start = Instant::now();
        let e = expecting(addr.port(), "^SSH-1\\.99")
            .run(&target())
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert_eq!(
            e.message,
            r#"received "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", which does not match /^SSH-1\.99/"#
        );
    }

    #[tokio::test]
    async fn a_banner_without_newline_is_judged_after_the_settle_time() {
        let addr = trickle(&[b"+OK hel", b"lo"], Duration::from_millis(20)).await;
        let start = Instant::now();
        let e = expecting(addr.port(), "^-ERR")
            .run(&target())
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(240) && took < Duration::from_secs(1), "{took:?}");
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert!(e.message.contains(r#""+OK hello""#), "{e}");
    }

    #[tokio::test]
    async fn lines_that_arrive_together_are_judged_together() {
        let addr = server(b"220-mail.example\r\n220 ESMTP ready\r\n", false).await;
        expecting(addr.port(), "ESMTP ready")
            .run(&target())
            .await
            .unwrap();
        // The first line decides when the rest comes later.
        let addr = trickle(&[b"220-mail.example\r\n", b"220 ESMTP ready\r\n"], Duration::from_millis(100)).await;
        let e = expecting(addr.port(), "ESMTP ready")
            .run(&target())
            .await
            .unwrap_err();
        assert!(e.message.contains(r#""220-mail.example\r\n""#), "{e}");
        // A pattern matched by the bytes before the newline needs no more.
        let addr = trickle(&[b"SSH-2.0-x", b"\r\n"], Duration::from_millis(50)).await;
        expecting(addr.port(), "^SSH-2").run(&target()).await.unwrap();
    }

    #[tokio::test]
    async fn silence_is_left_to_the_timeout_and_a_close_is_judged_at_once() {
        // Nothing arrives: the probe waits; the runner's timeout (here the test's) ends it.
        let addr = server(b"", false).await;
        let waited = tokio::time::timeout(
            Duration::from_millis(400),
            expecting(addr.port(), "^SSH").run(&target()),
        )
        .await;
        assert!(waited.is_err(), "{waited:?}");

        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        let e = expecting(port, "^SSH").run(&target()).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert!(e.message.contains("without sending anything"), "{e}");
    }

    #[test]
    fn port_is_required() {
        let mut o = options(22);
        o.port = None;
        assert!(o.validate().unwrap_err().contains("needs a port"));
    }
}
