//! netmon: a network monitor and Prometheus exporter.
//!
//! # Layout
//! - [`cli`]: the command line (clap).
//! - [`config`]: what the user wrote, validated into typed values with located errors.
//! - [`probe`]: one file per protocol behind the [`probe::shape::Probe`] trait.
//! - [`echo`]: the UDP echo server, its client and their wire format.
//! - [`runner`]: one task per service on absolute deadlines; reconciles on reload.
//! - [`metrics`]: the registry, common families and `process_*` metrics.
//! - [`web`]: `/metrics`, `/-/healthy`, `/-/ready`, `POST /-/reload` and the landing page.
//! - [`serve`]: the `serve` command wiring all of the above with signals.
//! - [`check`]: `netmon check`, one-shot probes answering as a Nagios plugin.
//! - [`console`]: `netmon console`, the monitor with an interactive prompt.
//! - [`logging`], [`shutdown`]: stdout logging with RFC 3339 times; signal handling.
//! - `fuzzing` (hidden): the entry points of the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod base;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod console;
pub mod echo;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod runner;
pub mod shutdown;
pub mod web;

/// Installs rustls' crypto provider (ring) once; reqwest and tokio-rustls need one chosen.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
