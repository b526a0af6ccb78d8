//! Logging: tracing to stdout, every line with an RFC 3339 UTC timestamp, as text or JSON.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::time::UtcTime;

use crate::cli::{LogFormat, LogLevel};

/// Installs the global subscriber writing to `writer`. `RUST_LOG`, when set, refines the level
/// per module (e.g. `RUST_LOG=netmon=debug,hyper=info`).
pub fn init<W>(level: LogLevel, format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let timer = UtcTime::rfc_3339();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(timer)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
