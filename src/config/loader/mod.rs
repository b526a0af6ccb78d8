//! Reading a configuration: YAML with positions (marked-yaml), walked by hand so that every
//! problem is reported with file, line and column.
//!
//! This file reads the document, its defaults, targets, labels and the echo server;
//! `service.rs` reads one service entry in any of its forms.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};

use crate::base::hint::{Dialect, did_you_mean};
use crate::base::values::Duration;

use crate::config::error::{ConfigError, ConfigErrors, LoadError, MAX_SHOWN};
use crate::config::model::{Config, Defaults, Discovery, Target};
use crate::config::sd::TargetGroup;

mod discovery;
mod limits;
mod rtt;
mod service;
mod yaml;

pub use limits::{
    MAX_HOST_LABEL, MAX_HOST_NAME, MAX_LABEL_NAME, MAX_LABEL_VALUE, MAX_LABELS, MAX_TARGETS_CEILING,
};

pub use yaml::MAX_DEPTH;
use yaml::{too_deep, unclosed_bracket};

/// The configuration compiled into the binary: `examples/netmon.yml`.
pub const BUILTIN: &str = include_str!("../../../examples/netmon.yml");

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

/// The largest configuration file read: generous (a million services fit in 16 MiB), and a
/// bound on the memory and time one file can cost.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    use std::io::Read;
    let read_error = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_string(&mut text))
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(LoadError::TooLarge {
            path: path.display().to_string(),
            limit: MAX_FILE_SIZE,
        });
    }
    Ok(load(&text, &path.display().to_string())?)
}

/// Validates configuration `text`; `file` names it in errors. Returns every error found.
pub fn load(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    load_as(text, file, Dialect::File)
}

/// As [`load`], for text generated from what the user typed somewhere else (`netmon check`'s
/// arguments, the console's `add`): the rules are the same, and hints are written in
/// `dialect`'s syntax.
pub fn load_as(text: &str, file: &str, dialect: Dialect) -> Result<Config, ConfigErrors> {
    let mut cx = Loader::new(file, dialect);
    let config = crate::base::values::Regex::sharing(|| cx.document(text));
    cx.finish(config)
}

/// The targets that `groups`, given by `source` of `config`, stand for: each with the
/// source's services, its group's labels and `config`'s defaults and `global:` labels, as a
/// static target would have them. Errors name the source, the group and the target.
pub fn discovered(
    config: &Config,
    source: &Discovery,
    groups: &[TargetGroup],
) -> Result<Vec<Target>, ConfigErrors> {
    let file = format!("discovery source `{}`", source.name);
    let mut cx = Loader::new(&file, Dialect::File);
    let targets = cx.discovered(source, groups, &config.defaults, &config.global_labels);
    cx.finish(Some(targets))
}

impl<'a> Loader<'a> {
    fn new(file: &'a str, dialect: Dialect) -> Self {
        Loader {
            file,
            dialect,
            origin_file: file.into(),
            errors: Vec::new(),
            left_out: 0,
            defaults_timeout_at: None,
            target_timeout_at: None,
            default_rtt_buckets: std::sync::Arc::from(
                &crate::probe::packets::DEFAULT_RTT_BUCKETS[..],
            ),
        }
    }

    /// `value`, or every error found on the way to it.
    fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => {
                self.errors.sort_by_key(|e| (e.line, e.column));
                if self.left_out > 0 {
                    self.errors
                        .push(ConfigError::more(self.file.to_string(), self.left_out));
                }
                Err(ConfigErrors(self.errors))
            }
        }
    }
}

const TOP_KEYS: [&str; 6] = [
    "defaults",
    "targets",
    "echo_server",
    "stamp_reflector",
    "global",
    "discovery",
];
const GLOBAL_KEYS: [&str; 1] = ["labels"];
const DEFAULTS_KEYS: [&str; 5] = [
    "interval",
    "timeout",
    "resolver",
    "rtt_buckets",
    "rtt_histogram",
];
const TARGET_KEYS: [&str; 4] = ["services", "interval", "timeout", "labels"];
/// Keys every service mapping may have; the rest belong to the protocol.
const COMMON_SERVICE_KEYS: [&str; 7] = [
    "type",
    "name",
    "interval",
    "timeout",
    "rtt_buckets",
    "rtt_histogram",
    "max_addresses",
];
/// Label names netmon sets itself.
const RESERVED_LABELS: [&str; 6] = ["host", "protocol", "service", "reason", "phase", "le"];

struct Loader<'a> {
    file: &'a str,
    /// Where the text came from, for the syntax of hints.
    dialect: Dialect,
    /// `file`, shared by every service's origin.
    origin_file: std::sync::Arc<str>,
    errors: Vec<ConfigError>,
    /// Errors found beyond [`MAX_SHOWN`], counted only.
    left_out: usize,
    /// Where `defaults: {timeout:}` and the current target's `timeout:` were written, so an
    /// error about the timeout a service inherits points at the key that set it.
    defaults_timeout_at: Option<(usize, usize)>,
    target_timeout_at: Option<(usize, usize)>,
    /// The default RTT buckets, allocated once and shared by every service using them.
    default_rtt_buckets: std::sync::Arc<[f64]>,
}

/// Where `key` is written in `map`, if it is.
fn key_at(map: &MarkedMappingNode, key: &str) -> Option<(usize, usize)> {
    map.keys()
        .find(|k| k.as_str() == key)
        .map(|k| line_col(k.span()))
}

fn line_col(span: &Span) -> (usize, usize) {
    span.start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

impl Loader<'_> {
    fn err_at(&mut self, (line, column): (usize, usize), message: impl Into<String>) {
        if self.errors.len() >= MAX_SHOWN {
            self.left_out += 1;
            return;
        }
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
        if let Some(at) = too_deep(text) {
            self.err_at(
                at,
                format!("mappings and sequences are nested more than {MAX_DEPTH} levels deep here: a netmon configuration needs far fewer"),
            );
            return None;
        }
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let mut root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                self.yaml_error(text, e);
                return None;
            }
        };
        let span = *root.span();
        let Some(root) = root.as_mapping_mut() else {
            self.err(
                &span,
                "the top level must be a mapping with a `targets:` key",
            );
            return None;
        };
        self.unknown_keys(root, &TOP_KEYS, "at the top level");
        let defaults = match root.get_node("defaults") {
            Some(n) => self.defaults(n),
            None => Defaults::default(),
        };
        let discovery = root
            .get_node("discovery")
            .map(|n| self.discovery(n, &defaults))
            .unwrap_or_default();
        let discovers = root.get_node("discovery").is_some();
        if root.get_node("targets").is_none() && !discovers {
            self.err_at((1, 1), "missing `targets:`: list the hosts to monitor, e.g. `targets: {localhost: {services: [ICMP]}}`");
            return None;
        }
        let global_labels = root
            .get_node("global")
            .map(|n| self.global(n))
            .unwrap_or_default();
        let mut targets = match root.get_mut("targets") {
            Some(node) => self.targets(node, &defaults, discovers),
            None => Vec::new(),
        };
        for service in targets.iter_mut().flat_map(|t| t.services.iter_mut()) {
            for (k, v) in &global_labels {
                service.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let echo_server = root
            .get_node("echo_server")
            .and_then(|n| self.echo_server(n));
        let stamp_reflector = root
            .get_node("stamp_reflector")
            .and_then(|n| self.stamp_reflector(n));
        Some(Config {
            defaults,
            targets,
            echo_server,
            stamp_reflector,
            global_labels,
            discovery,
        })
    }

    fn yaml_error(&mut self, text: &str, e: marked_yaml::LoadError) {
        use marked_yaml::LoadError as E;
        let (at, msg) = match &e {
            // A missing `]` or `}` is only noticed where the parser gives up, often a line or
            // more later; the place to look is the bracket that was never closed.
            E::ScanError(m, s) => match unclosed_bracket(text, (m.line(), m.column())) {
                Some((open, bracket_at)) => {
                    let (close, what) = if open == '[' {
                        (']', "list")
                    } else {
                        ('}', "mapping")
                    };
                    (
                        bracket_at,
                        format!(
                            "invalid YAML: unclosed `{open}` opened at {}:{}: close the {what} with `{close}` (the parser stopped at {}:{}: {})",
                            bracket_at.0,
                            bracket_at.1,
                            m.line(),
                            m.column(),
                            s.info()
                        ),
                    )
                }
                None => (
                    (m.line(), m.column()),
                    format!("invalid YAML: {}", s.info()),
                ),
            },
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
                        limits::quoted(key.as_str()),
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
        let settings: crate::echo::settings::Settings = self.section(node, "echo_server")?;
        if let Err(m) = settings.validate() {
            self.err(node.span(), format!("`echo_server`: {m}"));
            return None;
        }
        Some(settings)
    }

    /// `stamp_reflector:`, validated by the reflector's own serde `Settings`.
    fn stamp_reflector(&mut self, node: &Node) -> Option<crate::stamp::settings::Settings> {
        const HINT: &str = "e.g. `stamp_reflector: {listen: \"127.0.0.1:862\"}`";
        // `stamp_reflector:` with nothing after it means every default.
        if node.as_scalar().is_some_and(|s| s.as_str().is_empty()) {
            return Some(crate::stamp::settings::Settings::default());
        }
        if node.as_mapping().is_none() {
            self.err(
                node.span(),
                format!("`stamp_reflector` must be a mapping, {HINT}"),
            );
            return None;
        }
        let settings: crate::stamp::settings::Settings = self.section(node, "stamp_reflector")?;
        if let Err(m) = settings.validate() {
            self.err(node.span(), format!("`stamp_reflector`: {m}"));
            return None;
        }
        Some(settings)
    }

    /// A section read by its own serde type, its errors placed at the key at fault.
    fn section<T: serde::de::DeserializeOwned>(&mut self, node: &Node, what: &str) -> Option<T> {
        match marked_yaml::from_node::<T>(node) {
            Ok(s) => Some(s),
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
                            "unknown key `{field}` in `{what}`{}; valid keys: {}",
                            did_you_mean(field, expected.iter().copied()),
                            expected.join(", ")
                        )
                    }
                    other => format!("`{what}`: {other}"),
                };
                self.err_at(at, message);
                None
            }
        }
    }

    /// `defaults: { resolver: ... }`.
    fn resolver(&mut self, node: &Node) -> Option<crate::base::resolve::Settings> {
        if node.as_mapping().is_none() {
            self.err(
                node.span(),
                "`resolver` must be a mapping, e.g. `resolver: {nameservers: [\"127.0.0.1:5353\"]}`",
            );
            return None;
        }
        let settings: crate::base::resolve::Settings = self.section(node, "resolver")?;
        if let Err(m) = settings.validate() {
            self.err(node.span(), format!("`resolver`: {m}"));
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
        let rtt = self.rtt_keys(map);
        Defaults {
            rtt_buckets: rtt.buckets,
            rtt_histogram: rtt.histogram,
            interval: map
                .get_node("interval")
                .and_then(|n| self.duration(n, "interval")),
            timeout: map.get_node("timeout").and_then(|n| {
                self.defaults_timeout_at = key_at(map, "timeout");
                self.duration(n, "timeout")
            }),
            resolver: map.get_node("resolver").and_then(|n| self.resolver(n)),
        }
    }

    /// Reads the targets, taking each one's YAML out of `node` and dropping it once read: the
    /// tree with its positions takes some 30 times the text, so keeping it whole while the
    /// model is built would add the model's memory on top of it.
    fn targets(&mut self, node: &mut Node, defaults: &Defaults, discovers: bool) -> Vec<Target> {
        let span = *node.span();
        let Some(map) = node.as_mapping_mut() else {
            self.err(node.span(), "`targets` must be a mapping of host names, e.g. `targets: {localhost: {services: [ICMP]}}`");
            return Vec::new();
        };
        if map.is_empty() && !discovers {
            self.err(&span, "`targets` is empty: add at least one host");
        }
        let mut targets = Vec::with_capacity(map.len());
        while let Some((host, value)) = map.pop_front() {
            targets.extend(self.target(&host, &value, defaults));
        }
        targets
    }

    fn target(
        &mut self,
        host: &MarkedScalarNode,
        node: &Node,
        defaults: &Defaults,
    ) -> Option<Target> {
        let name = host.as_str().trim();
        if let Some(hint) = url_instead_of_host(name, self.dialect) {
            self.err(host.span(), hint);
            return None;
        }
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('/') {
            self.err(
                host.span(),
                format!("`{}` is not a host name or IP address", host.as_str()),
            );
            return None;
        }
        if let Some(message) = limits::host_name_too_long(name) {
            self.err(host.span(), message);
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
        self.target_timeout_at = key_at(map, "timeout");
        let timeout = map
            .get_node("timeout")
            .and_then(|n| self.duration(n, "timeout"));
        let labels = map
            .get_node("labels")
            .map(|n| self.labels(n, &format!("target `{name}`"), "the target"))
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

    /// `global:`: what applies to the whole instance, today its constant labels.
    fn global(&mut self, node: &Node) -> BTreeMap<String, String> {
        let Some(map) = node.as_mapping() else {
            self.err(
                node.span(),
                "`global` must be a mapping, e.g. `global: {labels: {site: fra1}}`",
            );
            return BTreeMap::new();
        };
        self.unknown_keys(map, &GLOBAL_KEYS, "in `global`");
        map.get_node("labels")
            .map(|n| self.labels(n, "`global`", "every service"))
            .unwrap_or_default()
    }

    /// `labels:` of `owner` (``target `h` `` or `` `global` ``), whose labels are on every
    /// series of `scope`.
    fn labels(&mut self, node: &Node, owner: &str, scope: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(map) = node.as_mapping() else {
            self.err(
                node.span(),
                "`labels` must be a mapping of names to values, e.g. `labels: {site: eu-west}`",
            );
            return out;
        };
        if let Some((extra, _)) = map.iter().nth(MAX_LABELS) {
            self.err(
                extra.span(),
                format!(
                    "{owner} has {} labels, more than the {MAX_LABELS} allowed (each is on every series of {scope}): remove {} of them",
                    map.len(),
                    map.len() - MAX_LABELS
                ),
            );
        }
        for (k, v) in map.iter().take(MAX_LABELS) {
            let key = k.as_str();
            let valid = key
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if key.len() > MAX_LABEL_NAME {
                self.err(
                    k.span(),
                    format!(
                        "label name `{}` is {} bytes long: at most {MAX_LABEL_NAME} are allowed; shorten it",
                        limits::quoted(key),
                        key.len()
                    ),
                );
            } else if key.is_empty() || !valid || key.starts_with("__") {
                self.err(k.span(), format!("`{key}` is not a valid label name: use letters, digits and `_`, not starting with a digit or `__`"));
            } else if RESERVED_LABELS.contains(&key) {
                self.err(
                    k.span(),
                    format!("label `{key}` is set by netmon itself; choose another name"),
                );
            } else if let Some(s) = v.as_scalar() {
                if s.as_str().len() > MAX_LABEL_VALUE {
                    self.err(
                        s.span(),
                        format!(
                            "the value of label `{key}` is {} bytes long: at most {MAX_LABEL_VALUE} are allowed; shorten it",
                            s.as_str().len()
                        ),
                    );
                } else {
                    out.insert(key.to_string(), s.as_str().to_string());
                }
            } else {
                self.err(
                    v.span(),
                    format!("label `{key}` must have a plain string value"),
                );
            }
        }
        out
    }
}

/// The error for a URL written where a host name belongs, or `None` if `text` is no URL.
fn url_instead_of_host(text: &str, dialect: Dialect) -> Option<String> {
    let url = url::Url::parse(text)
        .ok()
        .filter(|_| text.contains("://"))?;
    let host = match url.host()? {
        url::Host::Ipv6(a) => a.to_string(),
        other => other.to_string(),
    };
    let scheme = url.scheme();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let fix = match (dialect, scheme) {
        (Dialect::File, "http" | "https") => format!(
            "write the host as the key and the URL in the service: `{host}: {{services: [{{type: {scheme}, url: \"{url}\"}}]}}`"
        ),
        (Dialect::File, _) => format!("write the host alone as the key: `{host}:`"),
        (Dialect::Console, "http" | "https") => format!("write `add {host} {scheme}{port}`"),
        (Dialect::Console, _) => format!("write `add {host} PROTOCOL{port}`"),
        (Dialect::CommandLine, _) => format!("write `{host}` and give the port with `--port`"),
    };
    Some(format!("`{text}` is a URL, not a host name: {fix}"))
}

#[cfg(test)]
mod tests;
