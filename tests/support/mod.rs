//! What the integration and load tests share beyond the test kit: the path of the netmon
//! binary built for these tests, and `Netmon::start` with it.
#![allow(dead_code, unused_imports)]

pub use testkit::exposition::{http, metric, series, total};
pub use testkit::net::{closed_port, tcp_listener};
pub use testkit::netmon::Netmon;
pub use testkit::process::capture;

/// The netmon binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_netmon");

/// `Netmon::start`: the kit's harness, started with [`BIN`].
pub trait Start {
    /// Starts netmon with `config` (YAML text) and extra arguments; waits until it serves.
    fn start(config: &str, extra: &[&str]) -> Netmon;
}

impl Start for Netmon {
    fn start(config: &str, extra: &[&str]) -> Netmon {
        Netmon::start_bin(BIN, config, extra)
    }
}
