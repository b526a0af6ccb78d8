//! The TCP probe: connect to host:port, optionally send a line and match the banner.
//!
//! Up when the connection is established (and `expect_regex` matches what the peer sends
//! within the timeout); latency is the connect time, so a slow banner does not read as a slow
//! network. Reads are bounded by `max_read` bytes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

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

/// Probes one TCP service.
#[derive(Debug)]
pub struct TcpProbe {
    options: Options,
}

impl TcpProbe {
    /// Builds the probe; TCP has only the common metric families.
    pub fn new(options: Options, _ctx: &Context<'_>) -> Self {
        TcpProbe { options }
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
            expect(&mut stream, re, self.options.max_read).await?;
        }
        Ok(Success::new(latency.max(Duration::from_nanos(1))))
    }
}

/// Reads until `re` matches, the peer closes, or `max` bytes have come without a match.
/// Generic over the stream and `pub(crate)` so `crate::fuzzing` can feed it bytes in memory.
pub(crate) async fn expect<S: AsyncRead + Unpin>(
    stream: &mut S,
    re: &Regex,
    max: usize,
) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(max.min(4096));
    let mut chunk = [0u8; 1024];
    loop {
        let room = (max - buf.len()).min(chunk.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| Failure::io("read banner", &e))?;
        buf.extend_from_slice(&chunk[..n]);
        if re.0.is_match(&String::from_utf8_lossy(&buf)) {
            return Ok(());
        }
        if n == 0 || buf.len() >= max {
            return Err(Failure::new(
                Reason::Mismatch,
                format!(
                    "banner {:?} does not match /{}/",
                    String::from_utf8_lossy(&buf[..buf.len().min(128)]),
                    re.as_str()
                ),
            ));
        }
    }
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

    #[test]
    fn port_is_required() {
        let mut o = options(22);
        o.port = None;
        assert!(o.validate().unwrap_err().contains("needs a port"));
    }
}
