//! The HTTP side: `/metrics`, `/-/healthy`, `/-/ready`, `POST /-/reload`, the status page `/`
//! and `GET /api/v1/services` (both from [`crate::status`]), served by hyper 1 with graceful
//! shutdown.
//!
//! No endpoint takes a target from the request: netmon probes only what its config names.
//! No client can take the monitor down either ([`Limits`], docs/faults.md): connections are
//! capped below the file descriptor limit, a request head must arrive in time, idle connections
//! are closed (the longest idle first when the cap is reached), failing accepts back off, and
//! simultaneous scrapes share one encoding made off the async workers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::base::listen::{GRACE, ListenError};
use crate::config::web_config::{ClientAuth, TlsServerConfig};
use crate::metrics::{EncodeError, Encoder};
use crate::reload::Reloader;
use crate::status;

/// Errors starting the web server.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address cannot be used.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The TLS settings of `--web.config.file` cannot be used.
    #[error("web TLS: {0}")]
    Tls(String),
}

/// What the handlers need.
#[derive(Debug)]
pub struct AppState {
    /// Reloads and the monitor behind it.
    pub reloader: Arc<Reloader>,
    /// `--web.telemetry-path`.
    pub telemetry_path: String,
    /// Whether `POST /-/reload` is allowed (`--web.disable-reload` turns it off).
    pub reload_enabled: bool,
    /// Basic auth users from `--web.config.file`; `None` means open.
    pub auth: Option<Arc<BasicAuth>>,
    /// Encodes `/metrics`, sharing one encoding among simultaneous scrapes.
    pub encoder: Encoder,
    /// Connection limits and timeouts.
    pub limits: Limits,
}

/// Basic authentication against bcrypt hashes, with a small cache of verified credentials:
/// bcrypt is deliberately slow (tens of ms), and Prometheus sends the same credentials on
/// every scrape.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<u64>>,
    hasher: RandomState,
    /// A hash at the users' cost, checked for unknown names.
    dummy: String,
}

/// Verified credentials remembered at most; beyond it the cache starts again.
const AUTH_CACHE: usize = 1024;

impl BasicAuth {
    /// Users mapped to bcrypt hashes.
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| h.split('$').nth(2)?.parse::<u32>().ok())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("netmon-unknown-user", cost).unwrap_or_default();
        BasicAuth {
            dummy,
            users,
            verified: Mutex::new(HashSet::new()),
            hasher: RandomState::new(),
        }
    }

    /// Whether the request's `Authorization` header holds a valid user and password.
    fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(encoded) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            // Spend the same time as for a known user, so names cannot be probed by timing.
            let _ = bcrypt::verify(password, &self.dummy);
            return false;
        };
        let key = self.hasher.hash_one((user, password, hash));
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= AUTH_CACHE {
                    v.clear();
                }
                v.insert(key);
            }
        }
        ok
    }
}

/// Builds the TLS acceptor for `tls_server_config`.
pub fn tls_acceptor(cfg: &TlsServerConfig) -> Result<TlsAcceptor, WebError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: String| WebError::Tls(what);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_err(format!(
                "cannot read cert_file {}: {e}",
                cfg.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "cert_file {} holds no PEM certificate",
            cfg.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        tls_err(format!(
            "cannot read key_file {}: {e}",
            cfg.key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if cfg.tls13_only() {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| tls_err(e.to_string()))?;
    let builder = match (cfg.client_auth(), &cfg.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| tls_err(format!("cannot read client_ca_file {}: {e}", ca.display())))?
            {
                let c = c.map_err(|e| tls_err(format!("client_ca_file {}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("client_ca_file {}: {e}", ca.display())))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if mode == ClientAuth::VerifyIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| tls_err(e.to_string()))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(format!("certificate and key do not fit together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP/2 streams one connection may have open: each is a request in progress.
const MAX_STREAMS: u32 = 32;

/// Longest pause between accept attempts while the process is out of file descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long a connection must have been idle before a new one may take its place.
const EVICT_QUIET_MS: u64 = 1000;

/// How often a failing accept is logged at most.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(30);

/// What a client may hold of the web side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (`--web.max-connections`), lowered at start to half the
    /// process's file descriptor limit so the rest stays for the probes.
    pub max_connections: usize,
    /// Time a request's head may take to arrive (`--web.read-header-timeout`).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress and no byte moving
    /// (`--web.idle-timeout`).
    pub idle_timeout: Duration,
}

impl Limits {
    /// The defaults of the flags.
    pub const DEFAULT: Limits = Limits {
        max_connections: 256,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    /// These limits with `max_connections` at most half of `fd_limit` (the soft
    /// `RLIMIT_NOFILE`), and at least one.
    pub fn within_fds(self, fd_limit: u64) -> Limits {
        let half = usize::try_from(fd_limit / 2).unwrap_or(usize::MAX).max(1);
        Limits {
            max_connections: self.max_connections.min(half).max(1),
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The soft limit on open file descriptors of this process, if it can be read.
pub fn fd_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    /// Milliseconds since [`Conns::epoch`] when a byte last moved or a request ended.
    last_io: AtomicU64,
    /// Requests in progress.
    requests: AtomicUsize,
    /// Closes the connection.
    close: CancellationToken,
}

impl Conn {
    fn idle(&self) -> bool {
        self.requests.load(Ordering::SeqCst) == 0
    }
}

/// The open connections: counted against the cap, closed when idle too long, and the
/// longest idle one closed to make room when the cap is reached.
#[derive(Debug)]
struct Conns {
    epoch: std::time::Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    limits: Limits,
}

impl Conns {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection, or returns `None` when the cap is reached and every open
    /// connection has a request in progress. Otherwise the connection idle longest is told to
    /// close, so a scraper gets in however many clients sit on connections doing nothing.
    fn admit(self: &Arc<Self>) -> Option<ConnGuard> {
        let mut open = self.open();
        let live = open.values().filter(|c| !c.close.is_cancelled()).count();
        if live >= self.limits.max_connections {
            // Only a connection quiet for a while makes room: one just opened has not had its
            // request read yet, and a burst of scrapers must not close each other.
            let quiet_before = self.now_ms().saturating_sub(EVICT_QUIET_MS);
            let oldest = open
                .values()
                .filter(|c| c.idle() && !c.close.is_cancelled())
                .map(|c| (c.last_io.load(Ordering::SeqCst), c))
                .filter(|(at, _)| *at <= quiet_before)
                .min_by_key(|(at, _)| *at)?;
            oldest.1.close.cancel();
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            last_io: AtomicU64::new(self.now_ms()),
            requests: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        open.insert(id, conn.clone());
        Some(ConnGuard {
            conns: self.clone(),
            id,
            conn,
        })
    }

    /// Closes the connections idle for longer than the idle timeout.
    fn sweep(&self) {
        let idle_ms = u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        for c in self.open().values() {
            if c.idle() && now.saturating_sub(c.last_io.load(Ordering::SeqCst)) >= idle_ms {
                c.close.cancel();
            }
        }
    }
}

/// A connection's place in [`Conns`], given back when its task ends.
#[derive(Debug)]
struct ConnGuard {
    conns: Arc<Conns>,
    id: u64,
    conn: Arc<Conn>,
}

impl ConnGuard {
    fn touch(&self) {
        self.conn
            .last_io
            .store(self.conns.now_ms(), Ordering::SeqCst);
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.open().remove(&self.id);
    }
}

/// A request in progress on a connection; while one is, the connection is not idle.
struct InRequest(Arc<ConnGuard>);

impl InRequest {
    fn new(guard: Arc<ConnGuard>) -> Self {
        guard.conn.requests.fetch_add(1, Ordering::SeqCst);
        InRequest(guard)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.touch();
        self.0.conn.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that records when bytes last moved, for the idle timeout.
struct Tracked<S> {
    inner: S,
    guard: Arc<ConnGuard>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.guard.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.guard.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.guard.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Backs off while accepting fails, and logs it now and then rather than every time.
#[derive(Debug, Default)]
struct AcceptFailures {
    backoff: Duration,
    last_warned: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// Logs `e` if it is time to, and returns how long to wait before the next accept.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_EVERY)
        {
            warn!(error = %e, failures = self.unlogged, "accepting a web connection failed; retrying");
            self.last_warned = Some(now);
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
        self.backoff
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

/// Serves HTTP (or HTTPS with `tls`) on `listener` until `shutdown`, then drains connections
/// for up to [`GRACE`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let limits = state.limits;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS);
    let conns = Arc::new(Conns {
        epoch: std::time::Instant::now(),
        open: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        limits,
    });
    let mut sweep =
        tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(100)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = AcceptFailures::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                conns.sweep();
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => {
                    failures.succeeded();
                    x
                }
                Err(e) => {
                    // Out of file descriptors, typically: the connection stays in the backlog,
                    // so wait (still answering shutdown) instead of spinning on it.
                    let wait = failures.failed(&e);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            },
        };
        let Some(guard) = conns.admit() else {
            debug!(%peer, "web connection refused: every connection is busy");
            drop(stream);
            continue;
        };
        let guard = Arc::new(guard);
        let state = state.clone();
        let svc_guard = guard.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            let busy = InRequest::new(svc_guard.clone());
            async move {
                let response = route(req, &state).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let close = guard.conn.close.clone();
            let stream = Tracked {
                inner: stream,
                guard: guard.clone(),
            };
            let serving = async {
                match tls {
                    None => {
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .into_owned();
                        watcher.watch(conn).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "TLS handshake failed");
                                    return Ok(());
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    return Ok(());
                                }
                            };
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .into_owned();
                        watcher.watch(conn).await
                    }
                }
            };
            let result = tokio::select! {
                r = serving => r,
                _ = close.cancelled() => {
                    debug!(%peer, "closing an idle web connection");
                    Ok(())
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
            drop(guard);
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("some HTTP connections did not finish within the grace period");
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn route(req: Request<Incoming>, state: &AppState) -> Response<Full<Bytes>> {
    if let Some(auth) = &state.auth {
        let header = req.headers().get(AUTHORIZATION).cloned();
        let auth = auth.clone();
        // bcrypt is CPU-heavy: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || auth.allows(header.as_ref()))
            .await
            .unwrap_or(false);
        if !ok {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"netmon\""),
            );
            return r;
        }
    }
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, p) if p == state.telemetry_path => {
            metrics(&req, state).await
        }
        (&Method::GET | &Method::HEAD, "/-/healthy") => {
            text(StatusCode::OK, "netmon is healthy.\n")
        }
        (&Method::GET | &Method::HEAD, "/-/ready") => text(StatusCode::OK, "netmon is ready.\n"),
        (&Method::POST | &Method::PUT, "/-/reload") if !state.reload_enabled => text(
            StatusCode::FORBIDDEN,
            "reloading over HTTP is disabled (--web.disable-reload); send SIGHUP instead\n",
        ),
        (&Method::POST | &Method::PUT, "/-/reload") => match state.reloader.reload().await {
            Ok(c) => text(
                StatusCode::OK,
                format!(
                    "configuration reloaded: {} added, {} removed, {} changed, {} unchanged\n",
                    c.added, c.removed, c.changed, c.kept
                ),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        (_, "/-/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST /-/reload\n"),
        (&Method::GET | &Method::HEAD, "/") => status_page(&req, state).await,
        (&Method::GET | &Method::HEAD, "/api/v1/services") => services_api(&req, state).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn metrics(req: &Request<Incoming>, state: &AppState) -> Response<Full<Bytes>> {
    let openmetrics = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let encoded = state.encoder.encode(openmetrics).await;
    match encoded {
        Ok(body) => {
            let mut r = Response::new(Full::new(body));
            let ct = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            r
        }
        Err(e @ EncodeError::Busy) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `/`: the status page ([`crate::status::page`]).
async fn status_page(req: &Request<Incoming>, state: &AppState) -> Response<Full<Bytes>> {
    let filter = status::filter_of(req.uri().query());
    let snapshot = status::snapshot(&state.reloader, filter).await;
    let body = status::page::render(&snapshot, &state.telemetry_path);
    with_type(Bytes::from(body), "text/html; charset=utf-8")
}

/// `/api/v1/services`: the status page's data as JSON (docs/status.md).
async fn services_api(req: &Request<Incoming>, state: &AppState) -> Response<Full<Bytes>> {
    let filter = status::filter_of(req.uri().query());
    let snapshot = status::snapshot(&state.reloader, filter).await;
    with_type(Bytes::from(status::json(&snapshot)), "application/json")
}

fn with_type(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_half_the_file_descriptors() {
        let l = Limits::DEFAULT;
        assert_eq!(l.within_fds(1024).max_connections, 256);
        assert_eq!(l.within_fds(256).max_connections, 128);
        assert_eq!(l.within_fds(1).max_connections, 1);
        assert_eq!(l.within_fds(u64::MAX).max_connections, 256);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_up_to_a_second() {
        let mut f = AcceptFailures::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<Duration> = (0..9).map(|_| f.failed(&e)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[8], MAX_ACCEPT_BACKOFF);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        f.succeeded();
        assert_eq!(f.failed(&e), Duration::from_millis(10));
    }

    fn conns(max: usize) -> Arc<Conns> {
        Arc::new(Conns {
            // Connections opened now are ten seconds into the clock, those set to 0 quiet.
            epoch: std::time::Instant::now() - Duration::from_secs(10),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            limits: Limits {
                max_connections: max,
                ..Limits::DEFAULT
            },
        })
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let c = conns(2);
        let a = c.admit().unwrap();
        let b = c.admit().unwrap();
        // Both just opened: nobody has been quiet long enough to be replaced.
        assert!(c.admit().is_none());
        a.conn.last_io.store(1, Ordering::SeqCst);
        // `b` has been quiet longer still, but has a request in progress.
        let busy = InRequest::new(Arc::new(ConnGuard {
            conns: c.clone(),
            id: u64::MAX,
            conn: b.conn.clone(),
        }));
        b.conn.last_io.store(0, Ordering::SeqCst);
        let _new = c.admit().expect("room made");
        assert!(a.conn.close.is_cancelled());
        assert!(!b.conn.close.is_cancelled());
        drop(busy);
    }
}
