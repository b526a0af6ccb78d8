//! Probes: one file per protocol behind one shape.
//!
//! A probe measures and decides; the runner (`crate::runner`) does what every probe shares:
//! the timeout, timing, `netmon_up`, latency, counters, the failure reason and the UP/DOWN log
//! line. Adding a protocol is one new file here plus one line in each list below (the `mod`
//! lines, [`Protocol`], [`Options`], [`ProbeMetrics`] and [`build`]).
//!
//! Each `x.rs` holds, in order: its `Options` (serde, `deny_unknown_fields`, validated while
//! the config is read), its `Metrics` (registered once per registry), the probe type with its
//! `impl Probe`, then tests against a fake server started by the test.

pub mod dns;
pub mod echo;
pub mod http;
pub mod icmp;
pub mod ntp;
pub mod packets;
pub mod tcp;
pub mod udp;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::base::labels::Labels;
use crate::base::outcome::{Outcome, Target};

/// Default `max_read` of the stream and datagram probes (tcp, udp): bytes read at most.
pub(crate) fn default_max_read() -> usize {
    4096
}

/// Whether `n` is [`default_max_read`], so `save` can leave it out.
pub(crate) fn is_default_max_read(n: &usize) -> bool {
    *n == default_max_read()
}

/// The protocols netmon knows by name. Names are case-insensitive in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP request, `http://host/` by default.
    Http,
    /// HTTP over TLS, with certificate checks.
    Https,
    /// ICMP echo (ping).
    Icmp,
    /// A DNS query sent to the target as the server.
    Dns,
    /// An NTP query.
    Ntp,
    /// A TCP connect, optionally with a banner check.
    Tcp,
    /// A UDP request/response check.
    Udp,
    /// Our own UDP echo protocol (the seed's bare `UDP` with no port).
    Echo,
}

impl Protocol {
    /// Every protocol, in the order they are documented.
    pub const ALL: [Protocol; 8] = [
        Protocol::Http,
        Protocol::Https,
        Protocol::Icmp,
        Protocol::Dns,
        Protocol::Ntp,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Echo,
    ];

    /// The lowercase name used in the config and in the `protocol` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Icmp => "icmp",
            Protocol::Dns => "dns",
            Protocol::Ntp => "ntp",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Echo => "echo",
        }
    }

    /// Parses a protocol name, ignoring case.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether `NAME:PORT` and a `port:` option make sense for this protocol.
    pub fn takes_port(self) -> bool {
        !matches!(self, Protocol::Icmp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured probe, ready to run.
pub trait Probe: fmt::Debug + Send + Sync + 'static {
    /// Probes `target` once. The runner applies the timeout by dropping this future, so it must
    /// hold no state that outlives a drop.
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome>;

    /// Removes the protocol's own series (the runner removes the common ones) when the
    /// service is stopped for good.
    fn forget(&self) {}
}

/// A protocol's options as validated from the config, one variant per protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Options {
    /// `dns` options.
    Dns(dns::Options),
    /// `ntp` options.
    Ntp(ntp::Options),
    /// `http` options.
    Http(http::Options),
    /// `https` options.
    Https(http::Options),
    /// `tcp` options.
    Tcp(tcp::Options),
    /// `icmp` options.
    Icmp(icmp::Options),
    /// `udp` options.
    Udp(udp::Options),
    /// `echo` options.
    Echo(echo::Options),
}

/// A problem with a service's options, located by the config loader.
#[derive(Debug)]
pub struct OptionsError {
    /// What is wrong.
    pub message: String,
    /// Where, if the deserializer knew.
    pub line_col: Option<(usize, usize)>,
}

impl OptionsError {
    /// An error about the whole service mapping.
    pub fn whole(message: impl Into<String>) -> Self {
        OptionsError {
            message: message.into(),
            line_col: None,
        }
    }
}

fn from_node<T: serde::de::DeserializeOwned>(node: &marked_yaml::Node) -> Result<T, OptionsError> {
    marked_yaml::from_node::<T>(node).map_err(|e| {
        let line_col = e.start_mark().map(|m| (m.line(), m.column()));
        let message = match &*e {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => format!(
                "unknown option `{field}`{}; valid options here: {}",
                crate::base::hint::did_you_mean(field, expected.iter().copied()),
                expected.join(", ")
            ),
            other => match e.path() {
                Some(path) => format!("`{path}`: {}", lowercase_first(&other.to_string())),
                None => lowercase_first(&other.to_string()),
            },
        };
        OptionsError { message, line_col }
    })
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Parses and validates the protocol-specific options of one service. `node` is the service's
/// mapping with the common keys (`type`, `name`, `interval`, `timeout`) already taken out.
pub fn parse_options(
    protocol: Protocol,
    node: &marked_yaml::Node,
) -> Result<Options, OptionsError> {
    let options = match protocol {
        Protocol::Dns => Options::Dns(from_node(node)?),
        Protocol::Ntp => Options::Ntp(from_node(node)?),
        Protocol::Http => Options::Http(from_node(node)?),
        Protocol::Https => Options::Https(from_node(node)?),
        Protocol::Tcp => Options::Tcp(from_node(node)?),
        Protocol::Icmp => Options::Icmp(from_node(node)?),
        Protocol::Udp => Options::Udp(from_node(node)?),
        Protocol::Echo => Options::Echo(from_node(node)?),
    };
    options.validate().map_err(OptionsError::whole)?;
    Ok(options)
}

impl Options {
    /// Checks what serde cannot: required fields, value ranges, combinations.
    fn validate(&self) -> Result<(), String> {
        match self {
            Options::Dns(o) => o.validate(),
            Options::Ntp(o) => o.validate(),
            Options::Http(o) => o.validate(Protocol::Http),
            Options::Https(o) => o.validate(Protocol::Https),
            Options::Tcp(o) => o.validate(),
            Options::Icmp(o) => o.validate(),
            Options::Udp(o) => o.validate(),
            Options::Echo(o) => o.validate(),
        }
    }

    /// The port the service talks to, for the `service` label (`tcp:22`).
    pub fn port(&self) -> Option<u16> {
        match self {
            Options::Dns(o) => Some(o.port()),
            Options::Ntp(o) => Some(o.port()),
            Options::Http(o) | Options::Https(o) => o.port(),
            Options::Tcp(o) => o.port,
            Options::Icmp(_) => None,
            Options::Udp(o) => o.port,
            Options::Echo(o) => Some(o.port()),
        }
    }
}

/// Every protocol's own metric families, registered once per registry. A protocol with only
/// the common families (tcp) has no field here.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    /// Packet families shared by `icmp` and `echo`.
    pub packets: packets::Metrics,
    /// `netmon_dns_*`.
    pub dns: dns::Metrics,
    /// `netmon_ntp_*`.
    pub ntp: ntp::Metrics,
    /// `http` and `https`.
    pub http: http::Metrics,
}

impl ProbeMetrics {
    /// Registers every protocol's families under `registry` (already prefixed `netmon`).
    pub fn register(registry: &mut Registry) -> Self {
        ProbeMetrics {
            packets: packets::Metrics::register(registry),
            dns: dns::Metrics::register(registry),
            ntp: ntp::Metrics::register(registry),
            http: http::Metrics::register(registry),
        }
    }
}

/// What [`build`] gets besides the options.
#[derive(Debug)]
pub struct Context<'a> {
    /// The service's label set: host, protocol, service, then configured labels.
    pub labels: &'a Labels,
    /// The protocol families.
    pub metrics: &'a ProbeMetrics,
    /// The service's timeout. The runner drops the probe then; probes that decide by
    /// themselves when to stop waiting (a round of ICMP packets, UDP silence) finish a little
    /// before it so they can still report what they saw.
    pub timeout: Duration,
}

/// A probe that cannot start on this machine (e.g. ICMP without the privilege to open its
/// socket). The message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Builds the probe for a service from its validated options.
pub fn build(options: &Options, ctx: &Context<'_>) -> Result<Arc<dyn Probe>, BuildError> {
    Ok(match options {
        Options::Dns(o) => Arc::new(dns::DnsProbe::new(o.clone(), ctx)?),
        Options::Ntp(o) => Arc::new(ntp::NtpProbe::new(o.clone(), ctx)),
        Options::Http(o) => Arc::new(http::HttpProbe::new(Protocol::Http, o.clone(), ctx)?),
        Options::Https(o) => Arc::new(http::HttpProbe::new(Protocol::Https, o.clone(), ctx)?),
        Options::Tcp(o) => Arc::new(tcp::TcpProbe::new(o.clone(), ctx)),
        Options::Icmp(o) => Arc::new(icmp::IcmpProbe::new(o.clone(), ctx)?),
        Options::Udp(o) => Arc::new(udp::UdpProbe::new(o.clone(), ctx)?),
        Options::Echo(o) => Arc::new(echo::EchoProbe::new(o.clone(), ctx)),
    })
}
