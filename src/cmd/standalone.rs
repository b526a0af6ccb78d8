//! What the standalone servers (`netmon echo-server`, `netmon stamp-reflector`) share: an
//! optional `/metrics` of their own, and running until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::shutdown::{Signal, Signals};

/// Serves `registry` on `metrics_address` when given (logged as "serving WHAT metrics at
/// ..."), then waits for SIGINT or SIGTERM; SIGHUP reloads nothing, as the flags are the
/// configuration. Returns the `/metrics` task, for [`wind_down`] once the server has stopped.
pub(crate) async fn serve_until_stopped(
    what: &str,
    metrics_address: Option<&str>,
    registry: Registry,
    token: &CancellationToken,
    signals: &mut Signals,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let web = match metrics_address {
        Some(addr) => {
            let listener = crate::base::listen::bind(addr).await?;
            let local = listener
                .local_addr()
                .context("reading the listen address")?;
            info!(address = %local, "serving {what} metrics at http://{local}/metrics");
            Some(tokio::spawn(serve_metrics(
                listener,
                Arc::new(registry),
                token.clone(),
            )))
        }
        None => None,
    };
    loop {
        match signals.next().await {
            Signal::Stop(name) => {
                info!(signal = name, "stopping");
                break;
            }
            Signal::Reload => {}
        }
    }
    Ok(web)
}

/// Stops the `/metrics` server, giving its open connections the grace period.
pub(crate) async fn wind_down(token: &CancellationToken, web: Option<JoinHandle<()>>) {
    token.cancel();
    if let Some(w) = web {
        let _ = tokio::time::timeout(crate::base::listen::GRACE, w).await;
    }
}

/// A minimal `/metrics` server for the standalone echo server and STAMP reflector (the
/// monitor's `web` module serves a monitor; this serves only a registry).
async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>, token: CancellationToken) {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::header::{CONTENT_TYPE, HeaderValue};
    use hyper::{Response, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let registry = registry.clone();
            async move {
                let mut resp = Response::new(Full::new(Bytes::new()));
                if req.uri().path() != "/metrics" {
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    *resp.body_mut() = Full::new(Bytes::from_static(b"see /metrics\n"));
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                let mut text = String::new();
                if prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
                    .is_err()
                {
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(resp);
                }
                *resp.body_mut() = Full::new(Bytes::from(text));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    ),
                );
                Ok(resp)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let token = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}
