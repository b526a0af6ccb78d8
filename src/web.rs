//! The HTTP side: `/metrics`, `/-/healthy`, `/-/ready`, `POST /-/reload` and a landing page
//! `/` listing every service, served by hyper 1 with graceful shutdown.
//!
//! No endpoint takes a target from the request: netmon probes only what its config names.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::base::listen::{GRACE, ListenError};
use crate::config::web_config::{ClientAuth, TlsServerConfig};
use crate::reload::Reloader;

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

/// Serves HTTP (or HTTPS with `tls`) on `listener` until `shutdown`, then drains connections
/// for up to [`GRACE`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of fds or similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(req, &state).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result =
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
                                    return;
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .into_owned();
                        watcher.watch(conn).await
                    }
                };
            if let Err(e) = result {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
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
        (&Method::GET | &Method::HEAD, "/") => landing(state).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn metrics(req: &Request<Incoming>, state: &AppState) -> Response<Full<Bytes>> {
    let openmetrics = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    // Encoding 10k services takes tens of milliseconds: on the blocking pool it does not hold
    // up the probe tasks (and their timers) queued on this runtime worker.
    let all = state.reloader.metrics().clone();
    let encoded = tokio::task::spawn_blocking(move || all.encode(openmetrics))
        .await
        .unwrap_or(Err(std::fmt::Error));
    match encoded {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            let ct = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            r
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        ),
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

async fn landing(state: &AppState) -> Response<Full<Bytes>> {
    let rows = state.reloader.status().await;
    let mut h = String::with_capacity(4096 + rows.len() * 256);
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>netmon</title>",
        "<meta http-equiv=\"refresh\" content=\"10\">",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}",
        "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}",
        ".up{color:#080}.down{color:#b00}.unknown,.paused{color:#888}</style></head><body>\n",
        "<h1>netmon</h1>\n"
    ));
    let _ = writeln!(
        h,
        "<p>{} services from {}. <a href=\"{}\">Metrics</a> · <a href=\"/-/healthy\">Health</a></p>",
        rows.len(),
        escape(&state.reloader.source().to_string()),
        escape(&state.telemetry_path)
    );
    h.push_str("<table><tr><th>Host</th><th>Service</th><th>Protocol</th><th>State</th><th>Latency</th><th>Last check</th><th>Last error</th></tr>\n");
    for r in rows {
        let (class, state_text) = match (r.paused, r.view.up) {
            (true, _) => ("paused", "PAUSED"),
            (false, None) => ("unknown", "PENDING"),
            (false, Some(true)) => ("up", "UP"),
            (false, Some(false)) => ("down", "DOWN"),
        };
        let latency = r
            .view
            .latency
            .map(|l| format!("{:.3} ms", l.as_secs_f64() * 1e3))
            .unwrap_or_default();
        let last = r
            .view
            .last_check
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default();
        let err = if r.view.failing {
            r.view.last_error.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{state_text}</td><td>{latency}</td><td>{last}</td><td>{}</td></tr>",
            escape(&r.service.host),
            escape(&r.service.name),
            r.service.protocol,
            escape(&err)
        );
    }
    h.push_str("</table></body></html>\n");
    let mut resp = Response::new(Full::new(Bytes::from(h)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
