//! The STAMP Session-Reflector's settings, shared by `netmon stamp-reflector` flags and the
//! config's `stamp_reflector:` section.

use serde::{Deserialize, Deserializer, Serialize};
use std::net::{IpAddr, SocketAddr};

pub use crate::echo::settings::Net;
use crate::stamp::wire;

/// Where the reflector listens unless told otherwise: STAMP's port on loopback. Ports below
/// 1024 need root or `CAP_NET_BIND_SERVICE`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:862";
/// Default per-source rate limit, packets per second.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;
/// Default largest test packet answered, bytes.
pub const DEFAULT_MAX_SIZE: usize = 1500;

/// Parses `IP:PORT` (no names: a reflector binds an address).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not an address to listen on: write IP:PORT, e.g. `127.0.0.1:862`, `0.0.0.0:862` or `[::]:862`")
    })
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], wire::DEFAULT_PORT))
}
fn default_rate_limit() -> u32 {
    DEFAULT_RATE_LIMIT
}
fn default_max_size() -> usize {
    DEFAULT_MAX_SIZE
}

/// The reflector's settings: `netmon stamp-reflector` flags or the config's
/// `stamp_reflector:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// UDP address to listen on.
    #[serde(default = "default_listen", deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// Networks answered; empty answers everyone.
    #[serde(default)]
    pub allow: Vec<Net>,
    /// Test packets per second per source address; 0 turns the limit off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Largest test packet answered, bytes (a reply is as long as its request).
    #[serde(default = "default_max_size")]
    pub max_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: default_listen(),
            allow: Vec::new(),
            rate_limit: DEFAULT_RATE_LIMIT,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

impl Settings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(wire::BASE_LEN..=wire::MAX_LEN).contains(&self.max_size) {
            return Err(format!(
                "max_size {} is out of range: use {} to {} bytes",
                self.max_size,
                wire::BASE_LEN,
                wire::MAX_LEN
            ));
        }
        Ok(())
    }

    /// Whether `ip` may be answered.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.0.contains(&ip))
    }
}
