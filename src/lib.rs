//! netmon: a network monitor and Prometheus exporter.
//!
//! # Layout
//! Layers, each importing from itself and the layers below; the module graph has no cycle
//! (`.ci/module_cycles.py` checks it in CI):
//! - leaf: [`base`] (config values, hints, labels, outcomes, rounds, resolution, listening
//!   sockets), [`echo::wire`], [`echo::settings`], [`stamp::wire`], [`stamp::settings`] and
//!   [`status::history`] (the bounded result history the runner keeps per service);
//! - domain: [`probe`] (the protocol table, [`probe::shape`], one module per protocol), the
//!   [`echo`] server and client and the [`stamp`] reflector;
//! - engine: [`config`], [`runner`], [`metrics`];
//! - app: [`web`], [`status`] (the status page and its JSON API), [`reload`], [`discovery`]
//!   (the tasks reading `discovery:` sources), [`logging`], [`shutdown`];
//! - edges: [`cli`], [`cmd`] (one module per command: serve, check, echo, echo-server,
//!   stamp-reflector), [`console`]; `fuzzing` (hidden, only with the `fuzzing` feature or in
//!   tests) holds the entry points of the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod base;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod console;
pub mod discovery;
pub mod echo;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod runner;
pub mod shutdown;
pub mod stamp;
pub mod status;
pub mod web;

/// Installs rustls' crypto provider (ring) once; reqwest and tokio-rustls need one chosen.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
