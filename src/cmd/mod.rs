//! The commands: each turns its command-line arguments into the lower layers' own types and
//! runs them. Only this layer (and `crate::cli`) sees clap types.

pub mod check;
pub mod echo;
pub mod echo_server;
pub mod serve;
pub mod stamp_reflector;
mod standalone;
