//! Signals: SIGINT and SIGTERM stop netmon, SIGHUP reloads its configuration.

use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGINT or SIGTERM (named): stop.
    Stop(&'static str),
}

/// The signal streams netmon listens to.
#[derive(Debug)]
pub struct Signals {
    int: UnixSignal,
    term: UnixSignal,
    hup: UnixSignal,
}

impl Signals {
    /// Installs the handlers. Must run inside the tokio runtime.
    pub fn new() -> std::io::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
