//! `netmon serve`: load the config, start the monitor and the web server, reload on SIGHUP or
//! `POST /-/reload`, and stop cleanly on SIGINT/SIGTERM.

use crate::base::shard::Shard;
use crate::cli::ServeArgs;
use crate::config;
use crate::config::error::LoadError;
use crate::config::loader::Source;
use crate::echo::server::EchoServer;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::runner::{Monitor, Placement};
use crate::stamp::reflector::StampReflector;
use crate::{shutdown, web};
use anyhow::Context as _;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    let stamp_metrics = metrics.stamp_reflector.clone();
    let shard = match (args.shard_index, args.shard_count) {
        (Some(index), Some(count)) => Some(Shard::new(index, count)?),
        _ => None,
    };
    let placement = Placement {
        site: args.site.clone(),
        shard,
    };
    let mut monitor = Monitor::new(metrics.clone(), args.max_in_flight)
        .with_history_results(usize::from(args.history_results))
        .with_placement(placement.clone());
    let listener = crate::base::listen::bind(&args.listen_address).await?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    // Every service is built once before anything starts, so a file that cannot run fails
    // here with every reason listed, as `config check` would.
    monitor.check(&config).map_err(LoadError::Start)?;
    // Before the probes, so an `echo` service of this host finds it from its first probe.
    let echo = match &config.echo_server {
        Some(settings) => Some(
            EchoServer::start(settings.clone(), &echo_metrics, &shutdown)
                .await
                .context("starting the echo server (`echo_server:` in the config)")?,
        ),
        None => None,
    };
    // Likewise for a `stamp` service of this host.
    let stamp = match &config.stamp_reflector {
        Some(settings) => {
            match StampReflector::start(settings.clone(), &stamp_metrics, &shutdown).await {
                Ok(r) => Some(r),
                Err(e) => {
                    if let Some(e) = echo {
                        e.stop().await;
                    }
                    return Err(anyhow::Error::new(e).context(
                        "starting the STAMP reflector (`stamp_reflector:` in the config)",
                    ));
                }
            }
        }
        None => None,
    };
    crate::base::resolve::configure(&config.defaults.resolver.clone().unwrap_or_default());
    let changes = monitor.apply_checked(&config).await;
    if !changes.failed.is_empty() {
        monitor.stop_all().await;
        if let Some(e) = echo {
            e.stop().await;
        }
        if let Some(s) = stamp {
            s.stop().await;
        }
        return Err(LoadError::Start(config::error::ConfigErrors(changes.failed)).into());
    }
    metrics.reloaded(true);
    info!(
        config = %source,
        services = changes.added,
        site = placement.site.as_deref().unwrap_or("-"),
        shard = %placement.shard.map_or_else(|| "-".to_string(), |s| s.to_string()),
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
    let reloader = Arc::new(
        Reloader::new(source, monitor)
            .with_config(config)
            .with_echo_server(echo_metrics, echo, shutdown.clone())
            .with_stamp_reflector(stamp_metrics, stamp, shutdown.clone()),
    );
    // Reads the `discovery:` sources, following reloads, until shutdown.
    tokio::spawn(crate::discovery::run(reloader.clone(), shutdown.clone()));
    let wanted = web::Limits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: args.read_header_timeout,
        idle_timeout: args.idle_timeout,
    };
    let limits = match web::fd_limit() {
        Some(fds) => wanted.within_fds(fds),
        None => wanted,
    };
    if limits.max_connections < wanted.max_connections {
        warn!(
            wanted = wanted.max_connections,
            allowed = limits.max_connections,
            "--web.max-connections lowered to half the open-file limit, keeping the rest for the probes"
        );
    }
    let encoder = crate::metrics::Encoder::start(metrics.clone())
        .context("starting the metrics encoding thread")?;
    let state = Arc::new(web::AppState {
        encoder,
        limits,
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
    reloader.close_discovery().await;
    reloader.monitor().lock().await.stop_all().await;
    reloader.stop_echo_server().await;
    reloader.stop_stamp_reflector().await;
    if tokio::time::timeout(crate::base::listen::GRACE * 2, web)
        .await
        .is_err()
    {
        warn!("web server did not stop in time");
    }
    info!("stopped");
    Ok(())
}
