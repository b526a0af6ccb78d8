//! Leaf building blocks every other layer uses and which use nothing of netmon: config value
//! types, name hints, label sets, per-service series and their exposition writer, probe
//! outcomes, packet rounds and their quality estimates, name resolution, listening sockets and
//! the escaping of received bytes for messages.

pub mod escape;
pub mod hint;
pub mod labels;
pub mod listen;
pub mod outcome;
pub mod quality;
pub mod resolve;
pub mod round;
pub mod rxtime;
pub mod series;
pub mod shard;
pub mod udp;
pub mod values;
