//! `netmon stamp-reflector`: the STAMP Session-Reflector on its own, with an optional
//! `/metrics` of its own.

use crate::cmd::standalone::{serve_until_stopped, wind_down};
use crate::stamp::reflector::{Metrics, StampReflector};
use crate::stamp::settings::Settings;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

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
    let web = serve_until_stopped(
        "stamp reflector",
        metrics_address,
        registry,
        &token,
        &mut signals,
    )
    .await?;
    reflector.stop().await;
    wind_down(&token, web).await;
    Ok(())
}
