//! Logging: tracing to stdout, every line with an RFC 3339 UTC timestamp, as text or JSON.
//!
//! The filter can be changed while running ([`LogControl`]), which the console's `log`
//! command uses; the writer is any `MakeWriter`, so the console can route lines above its
//! prompt.

use std::fmt;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::time::UtcTime;

/// The least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, reloads, first results and state changes.
    Info,
    /// Every probe result.
    Debug,
    /// Everything.
    Trace,
}

impl Level {
    /// The level's name for tracing's filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// How a log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Changes the filter of the subscriber [`init_reloadable`] installed.
pub struct LogControl {
    set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    initial: String,
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogControl")
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// Replaces the filter with `directives` (`off`, a level, or `RUST_LOG` syntax).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives)
            .map_err(|e| format!("invalid log filter `{directives}`: {e}"))?;
        (self.set)(filter)
    }

    /// The filter netmon started with (`RUST_LOG` if set, else `--log.level`).
    pub fn initial(&self) -> &str {
        &self.initial
    }
}

/// The timestamp of every line: RFC 3339 in UTC with exactly six fractional digits
/// (`2026-12-02T20:18:16.123400Z`), so timestamps line up in a column and sort as text;
/// `UtcTime::rfc_3339()` drops trailing zeros and the width wanders.
fn timer() -> UtcTime<&'static [BorrowedFormatItem<'static>]> {
    UtcTime::new(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
}

/// Installs the global subscriber writing to `writer`. `RUST_LOG`, when set, refines the level
/// per module (e.g. `RUST_LOG=netmon=debug,hyper=info`).
pub fn init<W>(level: Level, format: Format, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    init_reloadable(level, format, writer);
}

/// As [`init`], returning a handle that changes the filter later.
pub fn init_reloadable<W>(level: Level, format: Format, writer: W) -> LogControl
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let initial = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| level.as_str().to_string());
    let filter = EnvFilter::new(&initial);
    let timer = timer();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(timer)
        .with_writer(writer)
        .with_target(false);
    let set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = match format {
        Format::Text => {
            let b = builder.with_ansi(false).with_filter_reloading();
            let handle = b.reload_handle();
            let _ = b.try_init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        Format::Json => {
            let b = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let handle = b.reload_handle();
            let _ = b.try_init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    LogControl { set, initial }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::time::FormatTime;

    #[test]
    fn timestamps_have_a_fixed_width() {
        let mut line = String::new();
        let mut w = tracing_subscriber::fmt::format::Writer::new(&mut line);
        timer().format_time(&mut w).unwrap();
        // 2026-12-02T20:18:16.123456Z
        assert_eq!(line.len(), 27, "{line}");
        let b = line.as_bytes();
        assert_eq!(
            (b[4], b[10], b[19], b[26]),
            (b'-', b'T', b'.', b'Z'),
            "{line}"
        );
        assert!(line[20..26].bytes().all(|c| c.is_ascii_digit()), "{line}");
    }
}
