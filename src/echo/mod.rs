//! The UDP echo service: the server (RFC 862, with defences against reflection abuse), its
//! client, and the message format they share.
//!
//! - [`wire`]: the only code that reads or writes echo message bytes.
//! - [`server`]: `netmon echo-server`, also hosted by `serve` via the config's `echo_server:`.
//! - [`client`]: one checked session of messages; `netmon echo` prints it like ping and the
//!   `echo` probe (`crate::probe::echo`) turns it into metrics.

pub mod client;
pub mod server;
pub mod settings;
pub mod wire;
