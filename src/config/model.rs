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
    /// `discovery:`: where more targets come from while netmon runs, in file order.
    pub discovery: Vec<Discovery>,
}

/// The shortest time between two reads of a discovery source.
pub const MIN_DISCOVERY_INTERVAL: StdDuration = StdDuration::from_secs(1);
/// How often a `file:` source's files are checked for changes when `interval:` is not set.
pub const DEFAULT_FILE_INTERVAL: StdDuration = StdDuration::from_secs(5);
/// How often an `http:` source is asked when `refresh:` is not set (Prometheus' http_sd
/// default).
pub const DEFAULT_HTTP_REFRESH: StdDuration = StdDuration::from_secs(60);
/// How long one `http:` request may take when `timeout:` is not set.
pub const DEFAULT_HTTP_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// The most targets one discovery source may give when `max_targets:` is not set.
pub const DEFAULT_MAX_TARGETS: usize = 10_000;

/// One `discovery:` entry: a source of target groups in Prometheus' file_sd/http_sd format
/// and the services to run on each target it gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// The `source` label of the discovery metrics and the name in logs: `name:` if written,
    /// else the file patterns or the URL.
    pub name: String,
    /// Whether `name` was written by the user (so `save` writes it back).
    pub named: bool,
    /// Where the groups come from.
    pub kind: DiscoveryKind,
    /// `services:`, as for a static target; checked when the config is read.
    pub services: ServiceTemplate,
    /// The most targets this source may give; a longer list is refused as a whole.
    pub max_targets: usize,
}

/// Where a discovery source reads its target groups.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryKind {
    /// `file:`: Prometheus file_sd files (`.json`, `.yml`, `.yaml`), checked every `interval`.
    File {
        /// The patterns as written; `*`, `?` and `[...]` match as in a shell.
        patterns: Vec<String>,
        /// How often the files are checked for changes.
        interval: Duration,
    },
    /// `http:`: a Prometheus http_sd endpoint, polled.
    Http(Box<HttpSource>),
}

/// An `http:` source: the endpoint and how to ask it, with the option names of Prometheus'
/// `http_sd_configs`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSource {
    /// The URL, `http://` or `https://`, without user or password.
    pub url: url::Url,
    /// How often it is asked.
    pub refresh: Duration,
    /// How long one answer may take, body included; below `refresh`.
    pub timeout: Duration,
    /// `basic_auth:`.
    pub basic_auth: Option<BasicAuth>,
    /// `authorization:` (a bearer token, by default).
    pub authorization: Option<Authorization>,
    /// `tls_config:`: trust for an `https://` URL.
    pub tls: crate::probe::http::options::TlsOptions,
}

/// `basic_auth: { username, password | password_file }`.
#[derive(Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password, written in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file holding the password, read at every request (so it can be rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `authorization: { type, credentials | credentials_file }`: an `Authorization` header.
#[derive(Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme, `Bearer` unless written.
    #[serde(default = "bearer", rename = "type")]
    pub kind: String,
    /// The credentials (the token), written in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// A file holding the credentials, read at every request (so a token can be rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<std::path::PathBuf>,
}

fn bearer() -> String {
    "Bearer".into()
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("type", &self.kind)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<secret>"),
            )
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

/// A discovery source's `services:` list as written, applied to every target it gives by
/// the loader's own service reading ([`crate::config::loader::discovered`]), so defaults,
/// labels and RTT settings apply exactly as for a static target. Two are equal when their
/// services are (where they are written does not count).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTemplate(pub(crate) marked_yaml::Node);

impl ServiceTemplate {
    /// The list in YAML's flow style (`[ICMP, {type: tcp, port: 22}]`), for `save`: each
    /// scalar as it was written, plain if it was plain (so `port: 007` stays a number the
    /// probe reads, and `send: 007` stays the text `007`), else double-quoted.
    pub fn to_flow(&self) -> String {
        fn scalar(out: &mut String, s: &marked_yaml::types::MarkedScalarNode) {
            let text = s.as_str();
            // Plain only what reads back as the same plain scalar anywhere in a flow
            // collection: no indicator, separator, comment or surrounding space.
            let safe = !text.is_empty()
                && !text.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c) || c == ' ')
                && !text.ends_with([' ', ':'])
                && !text.contains(|c: char| ",[]{}#".contains(c) || c.is_control())
                && !text.contains(": ");
            if s.may_coerce() && (safe || text.is_empty()) {
                // An empty plain scalar is YAML's null: written as nothing, it stays one.
                out.push_str(text);
            } else {
                out.push_str(&serde_json::Value::from(text).to_string());
            }
        }
        fn node(out: &mut String, n: &marked_yaml::Node) {
            match n {
                marked_yaml::Node::Scalar(s) => scalar(out, s),
                marked_yaml::Node::Sequence(seq) => {
                    out.push('[');
                    for (i, item) in seq.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        node(out, item);
                    }
                    out.push(']');
                }
                marked_yaml::Node::Mapping(map) => {
                    out.push('{');
                    for (i, (k, v)) in map.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        scalar(out, k);
                        out.push_str(": ");
                        node(out, v);
                    }
                    out.push('}');
                }
            }
        }
        let mut out = String::new();
        node(&mut out, &self.0);
        out
    }
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

/// A discovered service left out because another of the same host and name runs already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The source that gave it.
    pub source: String,
    /// Its host.
    pub host: String,
    /// Its `service` label.
    pub service: String,
    /// Who has it: `static` (the config's `targets:`) or the name of an earlier source.
    pub by: String,
}

impl Config {
    /// This config with the targets of discovery sources added, in the order given. A
    /// service whose host and name are taken already (by `targets:`, an earlier source, or
    /// an earlier target of the same source) is left out and returned: what the file says
    /// wins over what is discovered, so a discovery source cannot change a static service.
    pub fn with_discovered<'s>(
        &self,
        sources: impl IntoIterator<Item = (&'s str, Vec<Target>)>,
    ) -> (Config, Vec<Shadowed>) {
        let mut config = self.clone();
        let mut taken: std::collections::HashMap<(String, String), String> = self
            .services()
            .map(|s| ((s.host.clone(), s.name.clone()), "static".to_string()))
            .collect();
        let mut shadowed = Vec::new();
        for (source, targets) in sources {
            for mut target in targets {
                target.services.retain(|s| {
                    let key = (s.host.clone(), s.name.clone());
                    match taken.get(&key) {
                        Some(by) => {
                            shadowed.push(Shadowed {
                                source: source.to_string(),
                                host: s.host.clone(),
                                service: s.name.clone(),
                                by: by.clone(),
                            });
                            false
                        }
                        None => {
                            taken.insert(key, source.to_string());
                            true
                        }
                    }
                });
                if !target.services.is_empty() {
                    config.targets.push(target);
                }
            }
        }
        (config, shadowed)
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
