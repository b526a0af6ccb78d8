//! Leaf building blocks every other layer uses and which use nothing of netmon: config value
//! types, name hints, label sets, probe outcomes, name resolution and listening sockets.

pub mod hint;
pub mod labels;
pub mod listen;
pub mod outcome;
pub mod resolve;
pub mod round;
pub mod rxtime;
pub mod values;
