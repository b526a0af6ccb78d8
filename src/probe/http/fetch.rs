//! One HTTP request on one fresh connection, timed phase by phase: resolve, connect, TLS,
//! processing (request sent until the response head is in) and transfer (the body).
//!
//! This is the one code path the probe measures with: a hyper 1 client connection (HTTP/1.1,
//! or HTTP/2 when ALPN picks `h2` or the service asks for it) over a tokio `TcpStream`,
//! wrapped in tokio-rustls for https. reqwest hides these phases, hence hyper. The connection
//! future, and everything hyper's HTTP/2 client would spawn, is polled inside the probe's own
//! future (see `Inline`), so when the runner drops the probe on timeout, the socket goes
//! with it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::{Host, Position, Url};

use super::options::HttpVersion;
use super::tls::{ALPN_H2, ALPN_HTTP1, Chain, Tls, earliest_not_after};
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

/// Which HTTP version to speak on each kind of connection, from `http_version` and `h2c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// Over TLS: `Auto` speaks what ALPN picks; `Http2` requires `h2`.
    pub tls: HttpVersion,
    /// Over cleartext: `Http1`, or `Http2` with prior knowledge.
    pub cleartext: HttpVersion,
}

impl Versions {
    /// The versions for a service's `http_version` and `h2c` options.
    pub fn new(version: HttpVersion, h2c: bool) -> Self {
        let cleartext = if h2c || version == HttpVersion::Http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http1
        };
        Versions {
            tls: version,
            cleartext,
        }
    }

    /// The ALPN protocols offered over TLS, most preferred first.
    pub fn alpn(self) -> &'static [&'static [u8]] {
        match self.tls {
            HttpVersion::Auto => &[ALPN_H2, ALPN_HTTP1],
            HttpVersion::Http1 => &[ALPN_HTTP1],
            HttpVersion::Http2 => &[ALPN_H2],
        }
    }
}

impl Default for Versions {
    fn default() -> Self {
        Versions::new(HttpVersion::Auto, false)
    }
}

/// A response whose head has arrived; the body is still on the connection.
#[derive(Debug)]
pub struct Exchange {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version of the response.
    pub version: Version,
    /// The `Location` header, if any and readable.
    pub location: Option<String>,
    body: Incoming,
    driver: Driver,
}

/// The executor given to hyper's HTTP/2 client, which would otherwise spawn the connection
/// (and a task per request body) onto the runtime, where a probe dropped on timeout could not
/// take the socket with it. It only queues the futures; [`Driver`] polls them.
#[derive(Clone, Default)]
struct Inline(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl<F> hyper::rt::Executor<F> for Inline
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::pin(fut));
    }
}

impl Inline {
    fn take(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// Polls the hyper connection future, and what hyper handed to [`Inline`], alongside whatever
/// waits on them.
struct Driver {
    conn: Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>,
    spawned: Inline,
    tasks: Vec<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

impl Driver {
    fn new(conn: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>, spawned: Inline) -> Self {
        Driver {
            conn: Some(conn),
            spawned,
            tasks: Vec::new(),
        }
    }

    /// Runs `fut` to completion while driving the connection. Once the connection ends (the
    /// server closed, or an error that hyper also hands to the request), `fut` finishes alone.
    async fn run<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            self.poll_background(cx);
            // Whatever the background made ready has woken this task: it is polled again.
            Poll::Pending
        })
        .await
    }

    fn poll_background(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.as_mut().poll(cx).is_ready() {
                self.conn = None;
            }
        }
        // Polling a task may queue another (a request body pipe); hyper queues a bounded
        // number per request, so this ends.
        loop {
            self.tasks.extend(self.spawned.take());
            self.tasks.retain_mut(|t| t.as_mut().poll(cx).is_pending());
            if self.spawned.is_empty() {
                return;
            }
        }
    }
}

/// Sends `req` over a new connection and waits for the response head, speaking the HTTP
/// version `versions` asks for. `clock` is moved through the phases; `not_after` is lowered to
/// the earliest certificate expiry seen, even when verification fails.
pub async fn fetch(
    req: &Request<'_>,
    tls: &Tls,
    versions: Versions,
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
            let alpn = versions.alpn();
            let config = tls
                .client_config(chain.clone(), alpn)
                .map_err(|e| Failure::new(Reason::Tls, format!("tls setup: {e}")))?;
            let name = server_name(url, req.server_name)?;
            let checked = req.server_name.unwrap_or(host).to_string();
            let result = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await;
            let presented = chain.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(t) = earliest_not_after(&presented) {
                *not_after = Some(not_after.map_or(t, |old| old.min(t)));
            }
            let stream = result.map_err(|e| {
                let why = tls.explain_io(&e, &presented, &checked, alpn);
                Failure::new(Reason::Tls, format!("{host}:{port}: {why}"))
            })?;
            let h2 = match stream.get_ref().1.alpn_protocol() {
                Some(p) => p == ALPN_H2,
                None => false,
            };
            if versions.tls == HttpVersion::Http2 && !h2 {
                return Err(Failure::new(
                    Reason::Protocol,
                    format!(
                        "{host}:{port} did not agree to HTTP/2 by ALPN, which http_version: 2 requires"
                    ),
                ));
            }
            clock.enter(Phase::Processing);
            exchange_with(stream, req, clock, h2).await
        }
        _ => {
            clock.enter(Phase::Processing);
            let h2 = versions.cleartext == HttpVersion::Http2;
            exchange_with(tcp, req, clock, h2).await.map_err(|f| {
                // A server that hangs up on the HTTP/2 preface does not speak h2c.
                if h2 && matches!(f.reason, Reason::Io | Reason::Refused | Reason::Protocol) {
                    Failure::new(
                        Reason::Protocol,
                        format!(
                            "{} (HTTP/2 with prior knowledge: does {host}:{port} speak h2c?)",
                            f.message
                        ),
                    )
                } else {
                    f
                }
            })
        }
    }
}

/// Sends `req` over an established stream with HTTP/1.1 and waits for the response head:
/// everything after connect and TLS. `pub(crate)` so `crate::fuzzing` can answer from memory.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn exchange_on<S>(
    io: S,
    req: &Request<'_>,
    clock: &mut Clock,
) -> Result<Exchange, Failure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    exchange_with(io, req, clock, false).await
}

/// [`exchange_on`] in HTTP/2 when `h2`, else HTTP/1.1.
pub(crate) async fn exchange_with<S>(
    io: S,
    req: &Request<'_>,
    clock: &mut Clock,
    h2: bool,
) -> Result<Exchange, Failure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let request = build_request(req, h2)?;
    let (head, driver) = if h2 {
        let spawned = Inline::default();
        let (mut sender, conn) = http2::Builder::new(spawned.clone())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| hyper_failure("http/2 handshake", &e))?;
        let mut driver = Driver::new(Box::pin(conn), spawned);
        let head = driver.run(sender.send_request(request)).await;
        (head, driver)
    } else {
        // No I/O happens here for HTTP/1: hyper only sets up the connection state.
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| hyper_failure("http handshake", &e))?;
        let mut driver = Driver::new(Box::pin(conn), Inline::default());
        let head = driver.run(sender.send_request(request)).await;
        (head, driver)
    };
    let head = head.map_err(|e| {
        let f = hyper_failure("request", &e);
        // An HTTP/2-only port (nginx `listen ... http2` in cleartext) answers an HTTP/1.1
        // request with HTTP/2 frames, which do not parse as a status line.
        if !h2 && e.is_parse() && f.message.contains("version") {
            Failure::new(
                f.reason,
                format!("{}: the server may speak only HTTP/2 here (then set h2c: true)", f.message),
            )
        } else {
            f
        }
    })?;
    clock.enter(Phase::Transfer);
    let status = head.status();
    let version = head.version();
    let location = head
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Exchange {
        status,
        version,
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

fn build_request(req: &Request<'_>, h2: bool) -> Result<hyper::Request<Full<Bytes>>, Failure> {
    let url = req.url;
    let bad = |e: &dyn std::fmt::Display| {
        Failure::new(Reason::Protocol, format!("cannot request {url}: {e}"))
    };
    let path = &url[Position::BeforePath..Position::AfterQuery];
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
            let value = HeaderValue::from_str(value).map_err(|e| bad(&e))?;
            headers.insert(name, value);
        }
    }
    let mut request = hyper::Request::new(Full::new(req.body.clone()));
    if h2 {
        // RFC 9113 8.3.1: the host travels as `:authority` (taken from a `Host` header the
        // config gives, for virtual hosts), and 8.2.2 forbids connection-specific headers.
        let authority = headers
            .remove(header::HOST)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| url[Position::BeforeHost..Position::AfterPort].to_string());
        *request.uri_mut() = format!("{}://{authority}{path}", url.scheme())
            .parse()
            .map_err(|e| bad(&e))?;
        *request.version_mut() = Version::HTTP_2;
    } else {
        let target: Uri = path.parse().map_err(|e| bad(&e))?;
        *request.uri_mut() = target;
        // One request per connection: tell the server so it can free the socket at once.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    *request.method_mut() = req.method.clone();
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
