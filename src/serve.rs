//! `netmon serve`: load the config, start the monitor and the web server, reload on SIGHUP or
//! `POST /-/reload`, and stop cleanly on SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::ServeArgs;
use crate::config::{self, LoadError, Source};
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
}

impl Reloader {
    /// Wraps a monitor whose config comes from `source`.
    pub fn new(source: Source, monitor: Monitor) -> Self {
        let metrics = monitor.metrics().clone();
        Reloader {
            source,
            monitor: Mutex::new(monitor),
            metrics,
        }
    }

    /// Reads the source again and applies it. On error the running config stays and
    /// `netmon_config_last_reload_successful` drops to 0.
    pub async fn reload(&self) -> Result<Changes, LoadError> {
        match self.source.load() {
            Ok(config) => {
                let changes = self.monitor.lock().await.apply(&config).await;
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
    let mut monitor = Monitor::new(metrics.clone(), args.max_in_flight);
    let listener = web::bind(&args.listen_address).await?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let changes = monitor.apply(&config).await;
    if !changes.failed.is_empty() {
        monitor.stop_all().await;
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
    let reloader = Arc::new(Reloader::new(source, monitor));
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
    if tokio::time::timeout(web::GRACE * 2, web).await.is_err() {
        warn!("web server did not stop in time");
    }
    info!("stopped");
    Ok(())
}
