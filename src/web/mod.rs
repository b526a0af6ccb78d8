//! The HTTP side: `/metrics`, `/-/healthy`, `/-/ready`, `POST /-/reload`, the status page `/`
//! and `GET /api/v1/services` (both from [`crate::status`]), served by hyper 1 with graceful
//! shutdown.
//!
//! No endpoint takes a target from the request: netmon probes only what its config names.
//! No client can take the monitor down either ([`Limits`], docs/faults.md): connections are
//! capped below the file descriptor limit, a request head must arrive in time, idle connections
//! are closed (the longest idle first when the cap is reached), failing accepts back off, and
//! simultaneous scrapes share one encoding made off the async workers, gzipped there when the
//! scrape asks (`Accept-Encoding: gzip`, as Prometheus always does).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, VARY, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::base::listen::GRACE;
use crate::metrics::{EncodeError, Encoder};
use crate::reload::Reloader;
use crate::status;

mod accept;
mod conns;
mod error;
mod security;

use conns::*;
pub use conns::{Limits, fd_limit};
pub use error::WebError;
pub use security::{BasicAuth, tls_acceptor};

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
    let gzip = accept::accepts_gzip(req.headers());
    let encoded = state.encoder.encode(openmetrics, gzip).await;
    match encoded {
        Ok(encoding) => {
            let mut r = Response::new(Full::new(encoding.body));
            // The body depends on Accept-Encoding, so a cache must key on it too.
            r.headers_mut()
                .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
            if encoding.gzip {
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
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
