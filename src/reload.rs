//! Reloading: the configuration read again from its source and applied to the running
//! monitor and hosted echo server. Shared by SIGHUP, `POST /-/reload` and the console.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::error::LoadError;
use crate::config::loader::Source;
use crate::echo::server::EchoServer;
use crate::metrics::Metrics;
use crate::runner::{Changes, Monitor, ServiceStatus};

/// Reloads the configuration from its source into the running monitor. Shared by SIGHUP, the
/// web endpoint and the console.
#[derive(Debug)]

pub struct Reloader {
    source: Source,
    monitor: Mutex<Monitor>,
    metrics: Arc<Metrics>,
    echo: Mutex<HostedEcho>,
}

/// The echo server `serve` hosts for the config's `echo_server:`, restarted by a reload only
/// when its settings change.
#[derive(Debug, Default)]
struct HostedEcho {
    /// Its families in the main registry; `None` when this reloader hosts no echo server.
    metrics: Option<crate::echo::server::metrics::Metrics>,
    running: Option<EchoServer>,
    shutdown: CancellationToken,
}

impl HostedEcho {
    /// Makes the running server match `want`. On failure nothing runs and the error says why.
    async fn apply(
        &mut self,
        want: Option<&crate::echo::settings::Settings>,
    ) -> Result<(), String> {
        let Some(metrics) = self.metrics.clone() else {
            return Ok(());
        };
        if self.running.as_ref().map(EchoServer::settings) == want {
            return Ok(());
        }
        if let Some(old) = self.running.take() {
            old.stop().await;
        }
        if let Some(settings) = want {
            let server = EchoServer::start(settings.clone(), &metrics, &self.shutdown)
                .await
                .map_err(|e| format!("echo server: {e}"))?;
            self.running = Some(server);
        }
        Ok(())
    }
}

impl Reloader {
    /// Wraps a monitor whose config comes from `source`.
    pub fn new(source: Source, monitor: Monitor) -> Self {
        let metrics = monitor.metrics().clone();
        Reloader {
            source,
            monitor: Mutex::new(monitor),
            metrics,
            echo: Mutex::new(HostedEcho::default()),
        }
    }

    /// Hosts the config's `echo_server:` with families `metrics` (registered in the main
    /// registry), starting with `running`, stopped by `shutdown`.
    pub fn with_echo_server(
        self,
        metrics: crate::echo::server::metrics::Metrics,
        running: Option<EchoServer>,
        shutdown: CancellationToken,
    ) -> Self {
        Reloader {
            echo: Mutex::new(HostedEcho {
                metrics: Some(metrics),
                running,
                shutdown,
            }),
            ..self
        }
    }

    /// Stops the hosted echo server, if one runs.
    pub async fn stop_echo_server(&self) {
        if let Some(s) = self.echo.lock().await.running.take() {
            s.stop().await;
        }
    }

    /// The hosted echo server's UDP address, if one runs.
    pub async fn echo_server_addr(&self) -> Option<std::net::SocketAddr> {
        self.echo
            .lock()
            .await
            .running
            .as_ref()
            .map(EchoServer::local_addr)
    }

    /// Reads the source again and applies it. On error the running config stays and
    /// `netmon_config_last_reload_successful` drops to 0.
    pub async fn reload(&self) -> Result<Changes, LoadError> {
        match self.source.load() {
            Ok(config) => {
                let echo = self
                    .echo
                    .lock()
                    .await
                    .apply(config.echo_server.as_ref())
                    .await;
                let mut changes = self.monitor.lock().await.apply(&config).await;
                if let Err(e) = echo {
                    changes.failed.push(e);
                }
                if !changes.failed.is_empty() {
                    let e = LoadError::Start(changes.failed.clone());
                    self.metrics.reloaded(false);
                    error!(config = %self.source, error = %e, "reload applied, but some services could not start");
                    return Err(e);
                }
                self.metrics.reloaded(true);
                info!(
                    config = %self.source,
                    added = changes.added,
                    removed = changes.removed,
                    changed = changes.changed,
                    unchanged = changes.kept,
                    "configuration reloaded"
                );
                Ok(changes)
            }
            Err(e) => {
                self.metrics.reloaded(false);
                error!(config = %self.source, error = %e, "reload failed; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// Every service and its status.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        self.monitor.lock().await.status()
    }

    /// The monitor, for the console.
    pub fn monitor(&self) -> &Mutex<Monitor> {
        &self.monitor
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where the config comes from.
    pub fn source(&self) -> &Source {
        &self.source
    }
}
