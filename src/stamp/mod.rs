//! STAMP, the Simple Two-way Active Measurement Protocol (RFC 8762), unauthenticated mode.
//!
//! - [`wire`]: the only code that reads or writes STAMP test packet bytes.
//! - [`settings`]: the reflector's settings (flags and the config's `stamp_reflector:`).
//! - [`reflector`]: the stateless Session-Reflector, `netmon stamp-reflector`, also hosted by
//!   `serve`.
//!
//! The Session-Sender is the `stamp` probe (`crate::probe::stamp`).

pub mod reflector;
pub mod settings;
pub mod wire;
