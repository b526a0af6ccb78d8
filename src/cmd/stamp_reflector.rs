//! `netmon stamp-reflector`: the STAMP Session-Reflector on its own, with an optional
//! `/metrics` of its own.

use crate::cmd::echo_server::serve_metrics;
use crate::stamp::reflector::{Metrics, StampReflector};
use crate::stamp::settings::Settings;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// `netmon stamp-reflector`: runs the reflector until SIGINT/SIGTERM, with its own `/metrics`
/// on `metrics_address` when given.
pub async fn run(settings: Settings, metrics_address: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut signals = crate::shutdown::Signals::new().context("installing signal handlers")?;
    let token = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = Metrics::register(registry.sub_registry_with_prefix("netmon"));
    // Before /metrics, so a /metrics that answers means the reflector does too.
    let reflector = StampReflector::start(settings, &metrics, &token).await?;
    let web = match metrics_address {
        Some(addr) => {
            let listener = crate::base::listen::bind(addr).await?;
            let local = listener
                .local_addr()
                .context("reading the listen address")?;
            info!(address = %local, "serving stamp reflector metrics at http://{local}/metrics");
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
            crate::shutdown::Signal::Stop(name) => {
                info!(signal = name, "stopping");
                break;
            }
            // Nothing to reload: the flags are the configuration.
            crate::shutdown::Signal::Reload => {}
        }
    }
    reflector.stop().await;
    token.cancel();
    if let Some(w) = web {
        let _ = tokio::time::timeout(crate::base::listen::GRACE, w).await;
    }
    Ok(())
}
