//! Reading a configuration: YAML with positions (marked-yaml), walked by hand so that every
//! problem is reported with file, line and column.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};

use crate::base::hint::did_you_mean;
use crate::base::values::Duration;
use crate::probe::{self, Protocol};

use crate::config::error::{ConfigError, ConfigErrors, LoadError};
use crate::config::model::{
    Config, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Defaults, MIN_INTERVAL, Service, Target,
};

/// The configuration compiled into the binary: `examples/netmon.yml`.
pub const BUILTIN: &str = include_str!("../../examples/netmon.yml");

/// Where a configuration comes from, so a reload reads the same place again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// `examples/netmon.yml`, compiled in.
    BuiltIn,
}

impl Source {
    /// `--config.file` if given, else `./netmon.yml` if it exists, else the built-in default.
    pub fn choose(flag: Option<PathBuf>) -> Source {
        match flag {
            Some(p) => Source::File(p),
            None if Path::new("netmon.yml").is_file() => Source::File(PathBuf::from("netmon.yml")),
            None => Source::BuiltIn,
        }
    }

    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, LoadError> {
        match self {
            Source::File(p) => load_file(p),
            Source::BuiltIn => Ok(load(BUILTIN, "<built-in examples/netmon.yml>")?),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::BuiltIn => f.write_str("built-in default (examples/netmon.yml)"),
        }
    }
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(load(&text, &path.display().to_string())?)
}

/// Validates configuration `text`; `file` names it in errors. Returns every error found.
pub fn load(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut cx = Loader {
        file,
        errors: Vec::new(),
    };
    let config = cx.document(text);
    match config {
        Some(c) if cx.errors.is_empty() => Ok(c),
        _ => {
            cx.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(cx.errors))
        }
    }
}

const TOP_KEYS: [&str; 3] = ["defaults", "targets", "echo_server"];
const DEFAULTS_KEYS: [&str; 2] = ["interval", "timeout"];
const TARGET_KEYS: [&str; 4] = ["services", "interval", "timeout", "labels"];
/// Keys every service mapping may have; the rest belong to the protocol.
const COMMON_SERVICE_KEYS: [&str; 4] = ["type", "name", "interval", "timeout"];
/// Label names netmon sets itself.
const RESERVED_LABELS: [&str; 6] = ["host", "protocol", "service", "reason", "phase", "le"];

struct Loader<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
}

fn line_col(span: &Span) -> (usize, usize) {
    span.start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

impl Loader<'_> {
    fn err_at(&mut self, (line, column): (usize, usize), message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    fn err(&mut self, span: &Span, message: impl Into<String>) {
        self.err_at(line_col(span), message)
    }

    fn document(&mut self, text: &str) -> Option<Config> {
        if text.trim().is_empty()
            || text
                .lines()
                .all(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        {
            self.err_at((0, 0), "the configuration is empty: it needs a `targets:` mapping (see examples/netmon.yml)");
            return None;
        }
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                self.yaml_error(e);
                return None;
            }
        };
        let Some(root) = root.as_mapping() else {
            self.err(
                root.span(),
                "the top level must be a mapping with a `targets:` key",
            );
            return None;
        };
        self.unknown_keys(root, &TOP_KEYS, "at the top level");
        let defaults = match root.get_node("defaults") {
            Some(n) => self.defaults(n),
            None => Defaults::default(),
        };
        let Some(targets_node) = root.get_node("targets") else {
            self.err_at((1, 1), "missing `targets:`: list the hosts to monitor, e.g. `targets: {localhost: {services: [ICMP]}}`");
            return None;
        };
        let targets = self.targets(targets_node, &defaults);
        let echo_server = root
            .get_node("echo_server")
            .and_then(|n| self.echo_server(n));
        Some(Config {
            defaults,
            targets,
            echo_server,
        })
    }

    fn yaml_error(&mut self, e: marked_yaml::LoadError) {
        use marked_yaml::LoadError as E;
        let (at, msg) = match &e {
            E::ScanError(m, s) => (
                (m.line(), m.column()),
                format!("invalid YAML: {}", s.info()),
            ),
            E::DuplicateKey(d) => (
                line_col(d.key.span()),
                format!(
                    "duplicate key `{}` (first at line {}): each key may appear once in a mapping",
                    d.key.as_str(),
                    line_col(d.prev_key.span()).0
                ),
            ),
            E::UnexpectedAnchor(m) => (
                (m.line(), m.column()),
                "YAML anchors and aliases are not supported: write the value out".into(),
            ),
            E::UnexpectedTag(m) => (
                (m.line(), m.column()),
                "YAML tags (`!tag`) are not supported here".into(),
            ),
            E::MappingKeyMustBeScalar(m) => (
                (m.line(), m.column()),
                "mapping keys must be plain strings".into(),
            ),
            E::TopLevelMustBeMapping(m) | E::TopLevelMustBeSequence(m) => (
                (m.line(), m.column()),
                "the top level must be a mapping with a `targets:` key".into(),
            ),
        };
        self.err_at(at, msg);
    }

    fn unknown_keys(&mut self, map: &MarkedMappingNode, valid: &[&str], place: &str) {
        for key in map.keys() {
            if !valid.contains(&key.as_str()) {
                let hint = did_you_mean(key.as_str(), valid.iter().copied());
                self.err(
                    key.span(),
                    format!(
                        "unknown key `{}` {place}{hint}; valid keys: {}",
                        key.as_str(),
                        valid.join(", ")
                    ),
                );
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let Some(s) = node.as_scalar() else {
            self.err(node.span(), format!("`{what}` must be a duration such as `30s`, `500ms`, `2m` or a number of seconds"));
            return None;
        };
        match Duration::parse(s.as_str()) {
            Ok(d) if d.0.is_zero() => {
                self.err(s.span(), format!("`{what}` must be greater than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(s.span(), format!("`{what}`: {e}"));
                None
            }
        }
    }

    /// `echo_server:`, validated by the server's own serde `Settings`.
    fn echo_server(&mut self, node: &Node) -> Option<crate::echo::settings::Settings> {
        const HINT: &str = "e.g. `echo_server: {listen: \"127.0.0.1:7007\"}`";
        // `echo_server:` with nothing after it means every default.
        if node.as_scalar().is_some_and(|s| s.as_str().is_empty()) {
            return Some(crate::echo::settings::Settings::default());
        }
        if node.as_mapping().is_none() {
            self.err(
                node.span(),
                format!("`echo_server` must be a mapping, {HINT}"),
            );
            return None;
        }
        let settings = match marked_yaml::from_node::<crate::echo::settings::Settings>(node) {
            Ok(s) => s,
            Err(e) => {
                let mut at = e
                    .start_mark()
                    .map(|m| (m.line(), m.column()))
                    .unwrap_or_else(|| line_col(node.span()));
                let message = match &*e {
                    marked_yaml::Error::UnknownFieldError(field, expected, _) => {
                        // Point at the key itself rather than the mapping around it.
                        if let Some(k) = node
                            .as_mapping()
                            .and_then(|m| m.keys().find(|k| k.as_str() == field.as_str()))
                        {
                            at = line_col(k.span());
                        }
                        format!(
                            "unknown key `{field}` in `echo_server`{}; valid keys: {}",
                            did_you_mean(field, expected.iter().copied()),
                            expected.join(", ")
                        )
                    }
                    other => format!("`echo_server`: {other}"),
                };
                self.err_at(at, message);
                return None;
            }
        };
        if let Err(m) = settings.validate() {
            self.err(node.span(), format!("`echo_server`: {m}"));
            return None;
        }
        Some(settings)
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let Some(map) = node.as_mapping() else {
            self.err(
                node.span(),
                "`defaults` must be a mapping, e.g. `defaults: {interval: 30s, timeout: 5s}`",
            );
            return Defaults::default();
        };
        self.unknown_keys(map, &DEFAULTS_KEYS, "in `defaults`");
        Defaults {
            interval: map
                .get_node("interval")
                .and_then(|n| self.duration(n, "interval")),
            timeout: map
                .get_node("timeout")
                .and_then(|n| self.duration(n, "timeout")),
        }
    }

    fn targets(&mut self, node: &Node, defaults: &Defaults) -> Vec<Target> {
        let Some(map) = node.as_mapping() else {
            self.err(node.span(), "`targets` must be a mapping of host names, e.g. `targets: {localhost: {services: [ICMP]}}`");
            return Vec::new();
        };
        if map.is_empty() {
            self.err(node.span(), "`targets` is empty: add at least one host");
        }
        map.iter()
            .filter_map(|(host, value)| self.target(host, value, defaults))
            .collect()
    }

    fn target(
        &mut self,
        host: &MarkedScalarNode,
        node: &Node,
        defaults: &Defaults,
    ) -> Option<Target> {
        let name = host.as_str().trim();
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('/') {
            self.err(
                host.span(),
                format!("`{}` is not a host name or IP address", host.as_str()),
            );
            return None;
        }
        let Some(map) = node.as_mapping() else {
            self.err(node.span(), format!("target `{name}` must be a mapping with `services:`, e.g. `{name}: {{services: [ICMP]}}`"));
            return None;
        };
        self.unknown_keys(map, &TARGET_KEYS, &format!("in target `{name}`"));
        let interval = map
            .get_node("interval")
            .and_then(|n| self.duration(n, "interval"));
        let timeout = map
            .get_node("timeout")
            .and_then(|n| self.duration(n, "timeout"));
        let labels = map
            .get_node("labels")
            .map(|n| self.labels(n))
            .unwrap_or_default();
        let mut target = Target {
            host: name.to_string(),
            interval,
            timeout,
            labels,
            services: Vec::new(),
        };
        let Some(services) = map.get_node("services") else {
            self.err(
                map.span(),
                format!("target `{name}` has no `services:`; e.g. `services: [ICMP, \"TCP:22\"]`"),
            );
            return None;
        };
        let Some(seq) = services.as_sequence() else {
            self.err(
                services.span(),
                "`services` must be a list, e.g. `services: [HTTP, ICMP, \"TCP:22\"]`",
            );
            return None;
        };
        if seq.is_empty() {
            self.err(
                services.span(),
                format!("target `{name}` has an empty `services:` list"),
            );
        }
        let mut seen = HashSet::new();
        for item in seq.iter() {
            if let Some(svc) = self.service(item, &target, defaults) {
                if !seen.insert(svc.name.clone()) {
                    self.err(
                        item.span(),
                        format!("service `{}` appears twice on `{name}`: give one of them a distinct `name:`", svc.name),
                    );
                    continue;
                }
                target.services.push(svc);
            }
        }
        Some(target)
    }

    fn labels(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(map) = node.as_mapping() else {
            self.err(
                node.span(),
                "`labels` must be a mapping of names to values, e.g. `labels: {site: eu-west}`",
            );
            return out;
        };
        for (k, v) in map.iter() {
            let key = k.as_str();
            let valid = key
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if key.is_empty() || !valid || key.starts_with("__") {
                self.err(k.span(), format!("`{key}` is not a valid label name: use letters, digits and `_`, not starting with a digit or `__`"));
            } else if RESERVED_LABELS.contains(&key) {
                self.err(
                    k.span(),
                    format!("label `{key}` is set by netmon itself; choose another name"),
                );
            } else if let Some(s) = v.as_scalar() {
                out.insert(key.to_string(), s.as_str().to_string());
            } else {
                self.err(
                    v.span(),
                    format!("label `{key}` must have a plain string value"),
                );
            }
        }
        out
    }

    /// Parses `HTTP`, `TCP:22` or a mapping into a service.
    fn service(&mut self, node: &Node, target: &Target, defaults: &Defaults) -> Option<Service> {
        let span = *node.span();
        let (protocol, port, options_node, name, own_interval, own_timeout) = match node {
            Node::Scalar(s) => {
                let (protocol, port) = self.protocol_and_port(s.as_str(), s.span())?;
                // The classic form's bare `UDP` (no port) is the echo check against our echo server.
                let protocol = if protocol == Protocol::Udp && port.is_none() {
                    Protocol::Echo
                } else {
                    protocol
                };
                (protocol, port, empty_mapping(&span), None, None, None)
            }
            Node::Mapping(map) => {
                let Some(ty) = map.get_node("type") else {
                    self.err(
                        &span,
                        format!(
                            "a service mapping needs `type:`, one of {}",
                            Protocol::names()
                        ),
                    );
                    return None;
                };
                let Some(ty) = ty.as_scalar() else {
                    self.err(
                        ty.span(),
                        format!(
                            "`type` must be a protocol name, one of {}",
                            Protocol::names()
                        ),
                    );
                    return None;
                };
                let (protocol, port) = self.protocol_and_port(ty.as_str(), ty.span())?;
                let name = match map.get_node("name") {
                    Some(n) => match n.as_scalar() {
                        Some(s) if !s.as_str().trim().is_empty() => {
                            Some(s.as_str().trim().to_string())
                        }
                        _ => {
                            self.err(n.span(), "`name` must be a non-empty string");
                            None
                        }
                    },
                    None => None,
                };
                let own_interval = map
                    .get_node("interval")
                    .and_then(|n| self.duration(n, "interval"));
                let own_timeout = map
                    .get_node("timeout")
                    .and_then(|n| self.duration(n, "timeout"));
                let mut rest = (**map).clone();
                for k in COMMON_SERVICE_KEYS {
                    rest.remove(k);
                }
                (
                    protocol,
                    port,
                    Node::Mapping(MarkedMappingNode::new(*map.span(), rest)),
                    name,
                    own_interval,
                    own_timeout,
                )
            }
            Node::Sequence(_) => {
                self.err(&span, "a service must be a name such as `HTTP`, a `NAME:PORT` string or a mapping with `type:`");
                return None;
            }
        };
        let mut options_node = options_node;
        if let Some(port) = port {
            if !protocol.takes_port() {
                self.err(
                    &span,
                    format!(
                        "`{protocol}` has no port: write `{}` without `:{port}`",
                        protocol.as_str().to_uppercase()
                    ),
                );
                return None;
            }
            if let Node::Mapping(m) = &mut options_node {
                if m.contains_key("port") {
                    self.err(
                        &span,
                        "the port is given twice: in `type` and in `port`; keep one",
                    );
                    return None;
                }
                let key = MarkedScalarNode::new(span, "port");
                m.insert(
                    key,
                    Node::Scalar(MarkedScalarNode::new(span, port.to_string())),
                );
            }
        }
        let options = match probe::parse_options(protocol, &options_node) {
            Ok(o) => o,
            Err(e) => {
                let at = e
                    .line_col
                    .filter(|lc| lc.0 > 0)
                    .unwrap_or_else(|| line_col(&span));
                self.err_at(
                    at,
                    format!("{protocol} service on `{}`: {}", target.host, e.message),
                );
                return None;
            }
        };
        let interval = own_interval
            .or(target.interval)
            .or(defaults.interval)
            .map_or(DEFAULT_INTERVAL, |d| d.0);
        if interval < MIN_INTERVAL {
            self.err(
                &span,
                format!(
                    "interval {} is too short: the minimum is 100ms",
                    Duration(interval)
                ),
            );
            return None;
        }
        let explicit_timeout = own_timeout.or(target.timeout).or(defaults.timeout);
        let timeout = match explicit_timeout {
            Some(t) if t.0 >= interval => {
                self.err(
                    &span,
                    format!("timeout {} must be below the interval {}: lower the timeout or raise the interval", t, Duration(interval)),
                );
                return None;
            }
            Some(t) => t.0,
            None => DEFAULT_TIMEOUT.min(interval.mul_f64(0.9)),
        };
        let default_name = match options.port() {
            Some(p) if port.is_some() || Some(p) != protocol.default_port() => {
                format!("{protocol}:{p}")
            }
            _ => protocol.as_str().to_string(),
        };
        Some(Service {
            host: target.host.clone(),
            named: name.is_some(),
            name: name.unwrap_or(default_name),
            protocol,
            interval,
            timeout,
            own_interval,
            own_timeout,
            labels: target.labels.clone(),
            options,
        })
    }

    fn protocol_and_port(&mut self, text: &str, span: &Span) -> Option<(Protocol, Option<u16>)> {
        let (name, port) = match text.rsplit_once(':') {
            Some((n, p)) => match p.trim().parse::<u16>() {
                Ok(p) if p > 0 => (n.trim(), Some(p)),
                _ => {
                    self.err(
                        span,
                        format!("`{text}`: the port after `:` must be a number from 1 to 65535"),
                    );
                    return None;
                }
            },
            None => (text.trim(), None),
        };
        match Protocol::from_name(name) {
            Some(p) => Some((p, port)),
            None => {
                let mut hint = did_you_mean(name, Protocol::ALL.iter().map(|p| p.as_str()));
                if name.chars().any(|c| c.is_ascii_uppercase()) {
                    // Answer in the user's style: `HTPP` gets `HTTP`, as the classic form writes them.
                    hint = hint.to_uppercase().replace("DID YOU MEAN", "did you mean");
                }
                self.err(
                    span,
                    format!(
                        "unknown protocol `{name}`{hint}; valid protocols: {}",
                        Protocol::names()
                    ),
                );
                None
            }
        }
    }
}

fn empty_mapping(span: &Span) -> Node {
    Node::Mapping(MarkedMappingNode::new_empty(*span))
}
