//! One HTTP/1.1 request on one fresh connection, timed phase by phase: resolve, connect, TLS,
//! processing (request sent until the response head is in) and transfer (the body).
//!
//! This is the one code path the probe measures with: a hyper 1 client connection over a tokio
//! `TcpStream`, wrapped in tokio-rustls for https. reqwest hides these phases, hence hyper. The
//! connection future is polled inside the probe's own future (never spawned), so when the
//! runner drops the probe on timeout, the socket goes with it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::{Host, Position, Url};

use super::tls::{Chain, Tls, earliest_not_after};
use crate::base::outcome::{Failure, Reason};
use crate::base::resolve;
use crate::base::values::IpPreference;

/// The phases of `netmon_http_phase_seconds`, in the order a request goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Name resolution.
    Resolve,
    /// TCP connect (every address tried).
    Connect,
    /// TLS handshake (https only).
    Tls,
    /// From sending the request to the complete response head: the time to first byte.
    Processing,
    /// Reading the body.
    Transfer,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tls,
        Phase::Processing,
        Phase::Transfer,
    ];

    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Processing => "processing",
            Phase::Transfer => "transfer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A stopwatch with one lap per phase. Each instant between start and stop belongs to exactly
/// one phase, so the phases add up to the total to the nanosecond, over any number of
/// redirects.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    last: Instant,
    current: Phase,
    spent: [Duration; 5],
    stopped: bool,
}

impl Clock {
    /// Starts in the resolve phase.
    pub fn start() -> Self {
        let now = Instant::now();
        Clock {
            start: now,
            last: now,
            current: Phase::Resolve,
            spent: [Duration::ZERO; 5],
            stopped: false,
        }
    }

    /// Charges the time since the last change to the current phase and moves to `phase`.
    pub fn enter(&mut self, phase: Phase) {
        if self.stopped {
            return;
        }
        let now = Instant::now();
        self.spent[self.current.index()] += now - self.last;
        self.last = now;
        self.current = phase;
    }

    /// Stops the clock (charging the current phase) and returns the total; idempotent.
    pub fn stop(&mut self) -> Duration {
        let current = self.current;
        self.enter(current);
        self.stopped = true;
        self.last - self.start
    }

    /// Time spent per phase, in [`Phase::ALL`] order.
    pub fn spent(&self) -> [Duration; 5] {
        self.spent
    }
}

/// What to send.
#[derive(Debug)]
pub struct Request<'a> {
    /// The absolute URL; its host is resolved and connected to.
    pub url: &'a Url,
    /// The method.
    pub method: &'a Method,
    /// Headers besides the defaults (`Host`, `User-Agent`, `Accept`, `Connection`).
    pub headers: &'a HeaderMap,
    /// The body (empty for none).
    pub body: Bytes,
    /// TLS name to use instead of the URL's host.
    pub server_name: Option<&'a str>,
    /// Address family.
    pub ip: IpPreference,
}

/// A response whose head has arrived; the body is still on the connection.
#[derive(Debug)]
pub struct Exchange {
    /// The status.
    pub status: StatusCode,
    /// The `Location` header, if any and readable.
    pub location: Option<String>,
    body: Incoming,
    driver: Driver,
}

/// Polls the hyper connection future alongside whatever waits on it.
struct Driver {
    conn: Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

impl Driver {
    /// Runs `fut` to completion while driving the connection. Once the connection ends (the
    /// server closed, or an error that hyper also hands to the request), `fut` finishes alone.
    async fn run<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        if let Some(conn) = self.conn.as_mut() {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = conn => self.conn = None,
            }
        }
        fut.await
    }
}

/// Sends `req` over a new connection and waits for the response head. `clock` is moved
/// through the phases; `not_after` is lowered to the earliest certificate expiry seen, even
/// when verification fails.
pub async fn fetch(
    req: &Request<'_>,
    tls: &Tls,
    clock: &mut Clock,
    not_after: &mut Option<i64>,
) -> Result<Exchange, Failure> {
    let url = req.url;
    let host = url
        .host_str()
        .ok_or_else(|| Failure::new(Reason::Protocol, format!("url {url} has no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Failure::new(Reason::Protocol, format!("url {url} has no port")))?;
    clock.enter(Phase::Resolve);
    let addrs = resolve::resolve(host, port, req.ip).await?;
    clock.enter(Phase::Connect);
    let tcp = connect(&addrs).await?;
    // Small writes (the request) go out at once rather than waiting on Nagle.
    let _ = tcp.set_nodelay(true);
    match url.scheme() {
        "https" => {
            clock.enter(Phase::Tls);
            let chain = Chain::default();
            let config = tls
                .client_config(chain.clone())
                .map_err(|e| Failure::new(Reason::Tls, format!("tls setup: {e}")))?;
            let name = server_name(url, req.server_name)?;
            let result = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await;
            let presented = chain.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(t) = earliest_not_after(&presented) {
                *not_after = Some(not_after.map_or(t, |old| old.min(t)));
            }
            let stream = result.map_err(|e| tls_failure(host, &e))?;
            clock.enter(Phase::Processing);
            exchange_on(stream, req, clock).await
        }
        _ => {
            clock.enter(Phase::Processing);
            exchange_on(tcp, req, clock).await
        }
    }
}

/// Sends `req` over an established stream and waits for the response head: everything after
/// connect and TLS. `pub(crate)` so `crate::fuzzing` can answer from memory.
pub(crate) async fn exchange_on<S>(
    io: S,
    req: &Request<'_>,
    clock: &mut Clock,
) -> Result<Exchange, Failure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, mut driver) = handshake(io).await?;
    let request = build_request(req)?;
    let head = driver
        .run(sender.send_request(request))
        .await
        .map_err(|e| hyper_failure("request", &e))?;
    clock.enter(Phase::Transfer);
    let status = head.status();
    let location = head
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Exchange {
        status,
        location,
        body: head.into_body(),
        driver,
    })
}

impl Exchange {
    /// Reads the body, failing with reason `body` past `max` bytes; keeps the bytes only if
    /// `keep` (for the regexes), else just counts them.
    pub async fn read_body(&mut self, max: usize, keep: bool) -> Result<Vec<u8>, Failure> {
        let mut kept = Vec::new();
        let mut total = 0usize;
        loop {
            let frame = match self.driver.run(self.body.frame()).await {
                None => return Ok(kept),
                Some(Err(e)) => {
                    return Err(Failure::new(
                        Reason::Body,
                        format!("reading the body: {}", chain_text(&e)),
                    ));
                }
                Some(Ok(frame)) => frame,
            };
            // Trailers carry no body bytes.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len();
            if total > max {
                return Err(Failure::new(
                    Reason::Body,
                    format!(
                        "body longer than max_body ({max} bytes); raise max_body if that is expected"
                    ),
                ));
            }
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
}

/// Tries each address in turn; the error of the last one is the failure.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(Failure::io(&format!("connect to {addr}"), &e)),
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(Reason::Dns, "no address to connect to")))
}

async fn handshake<S>(io: S) -> Result<(SendRequest<Full<Bytes>>, Driver), Failure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // No I/O happens here for HTTP/1: hyper only sets up the connection state.
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| hyper_failure("http handshake", &e))?;
    Ok((
        sender,
        Driver {
            conn: Some(Box::pin(conn)),
        },
    ))
}

fn build_request(req: &Request<'_>) -> Result<hyper::Request<Full<Bytes>>, Failure> {
    let url = req.url;
    let target: Uri = url[Position::BeforePath..Position::AfterQuery]
        .parse()
        .map_err(|e| Failure::new(Reason::Protocol, format!("cannot request {url}: {e}")))?;
    let mut headers = req.headers.clone();
    let defaults = [
        (
            header::HOST,
            &url[Position::BeforeHost..Position::AfterPort],
        ),
        (
            header::USER_AGENT,
            concat!("netmon/", env!("CARGO_PKG_VERSION")),
        ),
        (header::ACCEPT, "*/*"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            let value = HeaderValue::from_str(value).map_err(|e| {
                Failure::new(Reason::Protocol, format!("cannot request {url}: {e}"))
            })?;
            headers.insert(name, value);
        }
    }
    // One request per connection: tell the server so it can free the socket at once.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut request = hyper::Request::new(Full::new(req.body.clone()));
    *request.method_mut() = req.method.clone();
    *request.uri_mut() = target;
    *request.headers_mut() = headers;
    Ok(request)
}

fn server_name(url: &Url, over: Option<&str>) -> Result<ServerName<'static>, Failure> {
    let bad = |name: &str| Failure::new(Reason::Tls, format!("`{name}` is not a valid TLS name"));
    if let Some(name) = over {
        return ServerName::try_from(name.to_string()).map_err(|_| bad(name));
    }
    match url.host() {
        Some(Host::Domain(d)) => ServerName::try_from(d.to_string()).map_err(|_| bad(d)),
        Some(Host::Ipv4(ip)) => Ok(ServerName::from(std::net::IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) => Ok(ServerName::from(std::net::IpAddr::V6(ip))),
        None => Err(bad("")),
    }
}

/// A failed handshake is reason `tls` whatever the cause; the rustls error (for example
/// `invalid peer certificate: UnknownIssuer`) is the message.
fn tls_failure(host: &str, e: &std::io::Error) -> Failure {
    let detail = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => t.to_string(),
        None => e.to_string(),
    };
    Failure::new(Reason::Tls, format!("tls handshake with {host}: {detail}"))
}

/// Socket errors keep their class (refused, unreachable, io); anything else hyper reports is
/// the peer speaking HTTP wrongly, reason `protocol`.
fn hyper_failure(context: &str, e: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Failure::io(context, io);
        }
        source = s.source();
    }
    Failure::new(Reason::Protocol, format!("{context}: {}", chain_text(e)))
}

/// `e` and its causes, joined by `: `.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
