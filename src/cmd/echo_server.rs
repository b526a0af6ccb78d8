//! `netmon echo-server`: the echo server on its own, with an optional `/metrics` of its own.

use crate::cmd::standalone::{serve_until_stopped, wind_down};
use crate::echo::server::EchoServer;
use crate::echo::server::metrics::Metrics;
use crate::echo::settings::Settings;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// `netmon echo-server`: runs the server until SIGINT/SIGTERM, with its own `/metrics` on
/// `metrics_address` when given.
pub async fn run(settings: Settings, metrics_address: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut signals = crate::shutdown::Signals::new().context("installing signal handlers")?;
    let token = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = Metrics::register(registry.sub_registry_with_prefix("netmon"));
    // Before /metrics, so a /metrics that answers means the server does too.
    let server = EchoServer::start(settings, &metrics, &token).await?;
    let web = serve_until_stopped(
        "echo server",
        metrics_address,
        registry,
        &token,
        &mut signals,
    )
    .await?;
    server.stop().await;
    wind_down(&token, web).await;
    Ok(())
}
