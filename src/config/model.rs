//! The validated configuration: targets, their services and the values every service ends up
//! with. Built by [`crate::config::loader`], written back by [`crate::config::save`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::base::values::Duration;
use crate::echo::settings::Settings;
use crate::probe::{Options, Protocol};

/// Interval when neither the service, its target nor `defaults` set one.
pub const DEFAULT_INTERVAL: StdDuration = StdDuration::from_secs(30);
/// Timeout when none is set; lowered to 90% of the interval for shorter intervals.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// The shortest interval accepted: below it a probe measures its own scheduling.
pub const MIN_INTERVAL: StdDuration = StdDuration::from_millis(100);

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `defaults:` as written.
    pub defaults: Defaults,
    /// Every target, in file order.
    pub targets: Vec<Target>,
    /// `echo_server:`: the echo server hosted by `serve`, if any.
    pub echo_server: Option<Settings>,
    /// `stamp_reflector:`: the STAMP reflector hosted by `serve`, if any.
    pub stamp_reflector: Option<crate::stamp::settings::Settings>,
    /// `global: { labels: ... }`: labels on every probe series; a target's own label of the
    /// same name wins. Already merged into each service's `labels`.
    pub global_labels: BTreeMap<String, String>,
}

/// The `defaults:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// Interval for services that set none.
    pub interval: Option<Duration>,
    /// Timeout for services that set none.
    pub timeout: Option<Duration>,
    /// `resolver:`: name servers and caching of name lookups; `None` is the system's.
    pub resolver: Option<crate::base::resolve::Settings>,
    /// `rtt_buckets:`: RTT histogram buckets (seconds, ascending) for services that set none.
    pub rtt_buckets: Option<Arc<[f64]>>,
    /// `rtt_histogram:`: whether services that say nothing have the RTT histogram.
    pub rtt_histogram: Option<bool>,
}

/// One host and its services.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The host as written: a name or an IP literal.
    pub host: String,
    /// The target's own `interval:`, if written.
    pub interval: Option<Duration>,
    /// The target's own `timeout:`, if written.
    pub timeout: Option<Duration>,
    /// Extra constant labels for every series of this target.
    pub labels: BTreeMap<String, String>,
    /// The services, in file order.
    pub services: Vec<Service>,
}

/// One (target, service) pair: what one probe task runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The host this service belongs to.
    pub host: String,
    /// The `service` label: the `name:` if given, else e.g. `http` or `tcp:22`.
    pub name: String,
    /// Whether `name` was written by the user (so `save` writes it back).
    pub named: bool,
    /// The protocol.
    pub protocol: Protocol,
    /// Effective interval.
    pub interval: StdDuration,
    /// Effective timeout, below the interval.
    pub timeout: StdDuration,
    /// The service's own `interval:`, if written.
    pub own_interval: Option<Duration>,
    /// The service's own `timeout:`, if written.
    pub own_timeout: Option<Duration>,
    /// Effective RTT histogram buckets (seconds, ascending); `None` when the service has no
    /// histogram: turned off, or a protocol without one.
    pub rtt_buckets: Option<Arc<[f64]>>,
    /// The service's own `rtt_buckets:`, if written.
    pub own_rtt_buckets: Option<Arc<[f64]>>,
    /// The service's own `rtt_histogram:`, if written.
    pub own_rtt_histogram: Option<bool>,
    /// The target's extra labels.
    pub labels: BTreeMap<String, String>,
    /// `ip: all`: every address of the host probed, each with an `ip` label; `None` probes
    /// the one address the protocol picks.
    pub addresses: Option<crate::base::resolve::EveryAddress>,
    /// Protocol options, validated.
    pub options: Options,
    /// Where the service was written, for errors found after loading (building its probe).
    pub origin: Origin,
}

/// A place in a configuration file: the file as the user named it, 1-based line and column
/// (0 when unknown).
///
/// Every `Origin` equals every other: where a service is written does not change what it runs,
/// so moving it within the file is not a change on reload.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file, as named in errors.
    pub file: Arc<str>,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

impl Config {
    /// Every service of every target, in file order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.targets.iter().flat_map(|t| t.services.iter())
    }
}

impl Service {
    /// `host:port` (`[v6]:port`), or the host alone for protocols without a port.
    pub fn endpoint(&self) -> String {
        match self.options.port() {
            Some(p) if self.host.contains(':') && !self.host.starts_with('[') => {
                format!("[{}]:{p}", self.host)
            }
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}
