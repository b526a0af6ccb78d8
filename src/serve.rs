//! `netmon serve`: load the config, start the monitor and the web server, reload on SIGHUP or
//! `POST /-/reload`, and stop cleanly on SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::ServeArgs;
use crate::config::{self, LoadError, Source};
use crate::echo::server::{self as echo_server, EchoServer};
use crate::metrics::Metrics;
use crate::runner::{Changes, Monitor, ServiceStatus};
use crate::{shutdown, web};

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
    metrics: Option<echo_server::Metrics>,
    running: Option<EchoServer>,
    shutdown: CancellationToken,
}

impl HostedEcho {
    /// Makes the running server match `want`. On failure nothing runs and the error says why.
    async fn apply(&mut self, want: Option<&echo_server::Settings>) -> Result<(), String> {
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
        metrics: echo_server::Metrics,
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

/// Starts the monitor and web server for `args`; returns them running.
pub async fn start(
    args: &ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Reloader>, tokio::task::JoinHandle<()>)> {
    let source = Source::choose(args.config_file.clone());
    let config = source.load().with_context(|| format!("loading {source}"))?;
    let web_config = match &args.web_config_file {
        Some(p) => config::load_web_config(p)
            .with_context(|| format!("loading --web.config.file {}", p.display()))?,
        None => config::WebConfig::default(),
    };
    let tls = web_config
        .tls_server_config
        .as_ref()
        .map(web::tls_acceptor)
        .transpose()?;
    let metrics = Arc::new(Metrics::new());
    let echo_metrics = metrics.echo_server.clone();
    let mut monitor = Monitor::new(metrics.clone(), args.max_in_flight);
    let listener = crate::base::listen::bind(&args.listen_address).await?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    // Before the probes, so an `echo` service of this host finds it from its first probe.
    let echo = match &config.echo_server {
        Some(settings) => Some(
            EchoServer::start(settings.clone(), &echo_metrics, &shutdown)
                .await
                .context("starting the echo server (`echo_server:` in the config)")?,
        ),
        None => None,
    };
    let changes = monitor.apply(&config).await;
    if !changes.failed.is_empty() {
        monitor.stop_all().await;
        if let Some(e) = echo {
            e.stop().await;
        }
        return Err(LoadError::Start(changes.failed).into());
    }
    metrics.reloaded(true);
    info!(
        config = %source,
        services = changes.added,
        version = env!("CARGO_PKG_VERSION"),
        "netmon started"
    );
    let shown = if local.ip().is_unspecified() {
        format!("localhost:{}", local.port())
    } else {
        local.to_string()
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(
        address = %local,
        tls = tls.is_some(),
        basic_auth = !web_config.basic_auth_users.is_empty(),
        "serving metrics at {scheme}://{shown}{}",
        args.telemetry_path
    );
    let reloader = Arc::new(Reloader::new(source, monitor).with_echo_server(
        echo_metrics,
        echo,
        shutdown.clone(),
    ));
    let state = Arc::new(web::AppState {
        reloader: reloader.clone(),
        telemetry_path: args.telemetry_path.clone(),
        reload_enabled: !args.disable_reload,
        auth: (!web_config.basic_auth_users.is_empty())
            .then(|| Arc::new(web::BasicAuth::new(web_config.basic_auth_users.clone()))),
    });
    let web = tokio::spawn(web::serve(listener, state, tls, shutdown));
    Ok((reloader, web))
}

/// `netmon serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut signals = shutdown::Signals::new().context("installing signal handlers")?;
    let token = CancellationToken::new();
    let (reloader, web) = start(&args, token.clone()).await?;
    loop {
        match signals.next().await {
            shutdown::Signal::Reload => {
                let _ = reloader.reload().await;
            }
            shutdown::Signal::Stop(name) => {
                info!(signal = name, "stopping");
                break;
            }
        }
    }
    token.cancel();
    reloader.monitor().lock().await.stop_all().await;
    reloader.stop_echo_server().await;
    if tokio::time::timeout(crate::base::listen::GRACE * 2, web)
        .await
        .is_err()
    {
        warn!("web server did not stop in time");
    }
    info!("stopped");
    Ok(())
}
