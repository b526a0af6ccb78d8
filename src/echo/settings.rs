//! The echo server's settings, shared by `netmon echo-server` flags and the config's
//! `echo_server:` section.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where the server listens unless told otherwise (RFC 862's port 7 needs privileges).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7007";
/// Default per-source rate limit, datagrams per second.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;
/// Default largest datagram echoed, bytes.
pub const DEFAULT_MAX_SIZE: usize = 2048;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// A network in an allow-list: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net(pub IpNet);

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<IpNet>() {
            return Ok(Net(n.trunc()));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Net(IpNet::from(ip)));
        }
        Err(format!(
            "`{s}` is not a network: write e.g. `10.0.0.0/8`, `192.0.2.7` or `2001:db8::/32`"
        ))
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses `IP:PORT` (no names: a server binds an address).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not an address to listen on: write IP:PORT, e.g. `127.0.0.1:7007`, `0.0.0.0:7007` or `[::]:7007`")
    })
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7007))
}
fn default_rate_limit() -> u32 {
    DEFAULT_RATE_LIMIT
}
fn default_max_size() -> usize {
    DEFAULT_MAX_SIZE
}

/// The echo server's settings: `netmon echo-server` flags or the config's `echo_server:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (UDP, and TCP with `tcp`).
    #[serde(default = "default_listen", deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// Networks answered; empty answers everyone.
    #[serde(default)]
    pub allow: Vec<Net>,
    /// Datagrams per second per source address; 0 turns the limit off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Largest datagram echoed, bytes.
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// Echo TCP connections on the same address too.
    #[serde(default)]
    pub tcp: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: default_listen(),
            allow: Vec::new(),
            rate_limit: DEFAULT_RATE_LIMIT,
            max_size: DEFAULT_MAX_SIZE,
            tcp: false,
        }
    }
}

impl Settings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_DATAGRAM).contains(&self.max_size) {
            return Err(format!(
                "max_size {} is out of range: use 1 to {MAX_DATAGRAM} bytes",
                self.max_size
            ));
        }
        Ok(())
    }

    pub(crate) fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.0.contains(&ip))
    }
}
