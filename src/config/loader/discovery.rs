//! `discovery:`: the sources of targets found while netmon runs, and the targets built from
//! what a source gives.
//!
//! A source's `services:` is checked when the config is read, on a stand-in target, so
//! `config check` refuses a template no target could run. What a source gives later (see
//! `crate::config::sd`) becomes targets here through the same [`Loader::target`] as a static
//! target's entry: host checks, label rules, defaults, RTT settings and `global:` labels apply
//! alike.

use std::collections::{BTreeMap, HashSet};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{Node, Span};

use crate::base::values::Duration;
use crate::config::model::{
    Authorization, BasicAuth, DEFAULT_FILE_INTERVAL, DEFAULT_HTTP_REFRESH, DEFAULT_HTTP_TIMEOUT,
    DEFAULT_MAX_TARGETS, Defaults, Discovery, DiscoveryKind, HttpSource, MIN_DISCOVERY_INTERVAL,
    ServiceTemplate, Target,
};
use crate::config::sd::{Format, TargetGroup};
use crate::probe::Protocol;

use super::Loader;
use super::limits::MAX_TARGETS_CEILING;

const FILE_KEYS: [&str; 5] = ["file", "name", "services", "interval", "max_targets"];
const HTTP_KEYS: [&str; 9] = [
    "http",
    "name",
    "services",
    "refresh",
    "timeout",
    "max_targets",
    "basic_auth",
    "authorization",
    "tls_config",
];
/// The host the `services:` of a source are checked on when the config is read.
const STAND_IN: &str = "discovered-target";
/// The port the stand-in target gives, so services that need one are checked with one.
const STAND_IN_PORT: u16 = 1;

impl Loader<'_> {
    /// `discovery:`: a list of sources.
    pub(super) fn discovery(&mut self, node: &Node, defaults: &Defaults) -> Vec<Discovery> {
        let Some(seq) = node.as_sequence() else {
            self.err(
                node.span(),
                "`discovery` must be a list of sources, e.g. `discovery: [{file: /etc/netmon/targets/*.yml, services: [ICMP]}]`",
            );
            return Vec::new();
        };
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for item in seq.iter() {
            if let Some(source) = self.discovery_source(item, defaults) {
                if !names.insert(source.name.clone()) {
                    self.err(
                        item.span(),
                        format!(
                            "discovery source `{}` is listed twice: give one of them a distinct `name:`",
                            source.name
                        ),
                    );
                    continue;
                }
                out.push(source);
            }
        }
        out
    }

    fn discovery_source(&mut self, node: &Node, defaults: &Defaults) -> Option<Discovery> {
        let Some(map) = node.as_mapping() else {
            self.err(
                node.span(),
                "a discovery source must be a mapping with `file:` or `http:`, e.g. `{file: /etc/netmon/targets/*.yml, services: [ICMP]}`",
            );
            return None;
        };
        let kind = match (map.get_node("file"), map.get_node("http")) {
            (Some(_), Some(_)) => {
                self.err(
                    map.span(),
                    "a discovery source has either `file:` or `http:`, not both: split it into two sources",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    map.span(),
                    "a discovery source needs `file:` (file_sd files) or `http:` (an http_sd URL)",
                );
                return None;
            }
            (Some(files), None) => {
                self.unknown_keys(map, &FILE_KEYS, "in a `file:` discovery source");
                self.file_source(map, files)?
            }
            (None, Some(url)) => {
                self.unknown_keys(map, &HTTP_KEYS, "in an `http:` discovery source");
                DiscoveryKind::Http(Box::new(self.http_source(map, url)?))
            }
        };
        let name = match map.get_node("name") {
            Some(n) => match n.as_scalar().map(|s| s.as_str().trim()) {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    self.err(n.span(), "`name` must be a non-empty string");
                    return None;
                }
            },
            None => None,
        };
        let max_targets = match map.get_node("max_targets") {
            None => DEFAULT_MAX_TARGETS,
            Some(n) => match n.as_scalar().and_then(|s| s.as_str().parse::<usize>().ok()) {
                Some(m) if (1..=MAX_TARGETS_CEILING).contains(&m) => m,
                _ => {
                    self.err(
                        n.span(),
                        format!("`max_targets` must be a number from 1 to {MAX_TARGETS_CEILING}"),
                    );
                    return None;
                }
            },
        };
        let Some(services) = map.get_node("services") else {
            self.err(
                map.span(),
                "a discovery source needs `services:`, what to run on each target it gives, e.g. `services: [ICMP, \"TCP:22\"]`",
            );
            return None;
        };
        let template = ServiceTemplate(services.clone());
        let shown_before = self.errors.len();
        let errors_before = shown_before + self.left_out;
        let stand_in = self.template_target(
            &template,
            STAND_IN,
            Some(STAND_IN_PORT),
            BTreeMap::new(),
            defaults,
        );
        if stand_in.is_none() || self.errors.len() + self.left_out > errors_before {
            // Said of the stand-in, meant of every target the source will give.
            let stand_in = format!("on `{STAND_IN}`");
            for e in self.errors.iter_mut().skip(shown_before) {
                e.message = e.message.replace(&stand_in, "on each discovered target");
            }
            return None;
        }
        let named = name.is_some();
        let name = name.unwrap_or_else(|| match &kind {
            DiscoveryKind::File { patterns, .. } => patterns.join(","),
            DiscoveryKind::Http(h) => h.url.to_string(),
        });
        Some(Discovery {
            name,
            named,
            kind,
            services: template,
            max_targets,
        })
    }

    fn file_source(&mut self, map: &MarkedMappingNode, files: &Node) -> Option<DiscoveryKind> {
        let items: Vec<&MarkedScalarNode> = match files {
            Node::Scalar(s) => vec![s],
            Node::Sequence(seq) if !seq.is_empty() => {
                let scalars: Vec<_> = seq.iter().filter_map(Node::as_scalar).collect();
                if scalars.len() != seq.len() {
                    self.err(
                        files.span(),
                        "`file` must be a pattern or a list of patterns",
                    );
                    return None;
                }
                scalars
            }
            _ => {
                self.err(
                    files.span(),
                    "`file` must be a pattern or a list of patterns, e.g. `file: /etc/netmon/targets/*.yml`",
                );
                return None;
            }
        };
        let mut patterns = Vec::new();
        for s in items {
            let text = s.as_str().trim();
            if let Err(e) = glob::Pattern::new(text) {
                self.err(
                    s.span(),
                    format!("`file: {text}` is not a valid pattern: {e}"),
                );
                return None;
            }
            if text.is_empty() || Format::of_path(std::path::Path::new(text)).is_none() {
                self.err(
                    s.span(),
                    format!("`file: {text}`: file_sd files end in `.json`, `.yml` or `.yaml`, e.g. `/etc/netmon/targets/*.yml`"),
                );
                return None;
            }
            patterns.push(text.to_string());
        }
        let interval = self.discovery_interval(map, "interval", DEFAULT_FILE_INTERVAL)?;
        Some(DiscoveryKind::File { patterns, interval })
    }

    fn http_source(&mut self, map: &MarkedMappingNode, url: &Node) -> Option<HttpSource> {
        let Some(text) = url.as_scalar().map(|s| s.as_str().trim()) else {
            self.err(
                url.span(),
                "`http` must be a URL, e.g. `http: http://127.0.0.1:8500/sd`",
            );
            return None;
        };
        let parsed = match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            Ok(_) => {
                self.err(url.span(), format!("`http: {text}`: the URL must start with `http://` or `https://` and name a host"));
                return None;
            }
            Err(e) => {
                self.err(url.span(), format!("`http: {text}` is not a URL: {e}"));
                return None;
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            self.err(
                url.span(),
                "`http`: write the user and password under `basic_auth: {username: ..., password_file: ...}` rather than in the URL, where logs and the `source` label would show them",
            );
            return None;
        }
        let refresh = self.discovery_interval(map, "refresh", DEFAULT_HTTP_REFRESH)?;
        let timeout = match map.get_node("timeout") {
            Some(n) => {
                let t = self.duration(n, "timeout")?;
                if t.0 >= refresh.0 {
                    self.err(
                        n.span(),
                        format!("timeout {t} must be below the refresh {refresh}: lower the timeout or raise `refresh`"),
                    );
                    return None;
                }
                t
            }
            None => Duration(DEFAULT_HTTP_TIMEOUT.min(refresh.0.mul_f64(0.9))),
        };
        let basic_auth = match map.get_node("basic_auth") {
            Some(n) => {
                let auth: BasicAuth = self.section(n, "basic_auth")?;
                if auth.password.is_some() && auth.password_file.is_some() {
                    self.err(
                        n.span(),
                        "`basic_auth`: give `password` or `password_file`, not both",
                    );
                    return None;
                }
                Some(auth)
            }
            None => None,
        };
        let authorization = match map.get_node("authorization") {
            Some(n) => {
                let auth: Authorization = self.section(n, "authorization")?;
                if auth.credentials.is_some() == auth.credentials_file.is_some() {
                    self.err(
                        n.span(),
                        "`authorization`: give one of `credentials` and `credentials_file` (a file holding the token)",
                    );
                    return None;
                }
                if auth.kind.is_empty() || auth.kind.contains(char::is_whitespace) {
                    self.err(
                        n.span(),
                        "`authorization`: `type` must be one word, e.g. `Bearer`",
                    );
                    return None;
                }
                Some(auth)
            }
            None => None,
        };
        if basic_auth.is_some() && authorization.is_some() {
            self.err(map.span(), "give `basic_auth` or `authorization`, not both: a request carries one `Authorization` header");
            return None;
        }
        let tls: crate::probe::http::options::TlsOptions = match map.get_node("tls_config") {
            Some(n) => {
                let tls: crate::probe::http::options::TlsOptions = self.section(n, "tls_config")?;
                if tls.insecure_skip_verify && tls.ca_file.is_some() {
                    self.err(
                        n.span(),
                        "`tls_config`: `insecure_skip_verify` and `ca_file` contradict each other; keep one",
                    );
                    return None;
                }
                if tls.server_name.is_some() {
                    self.err(
                        n.span(),
                        "`tls_config`: `server_name` is not supported for http_sd: the URL's host is the name checked",
                    );
                    return None;
                }
                tls
            }
            None => Default::default(),
        };
        Some(HttpSource {
            url: parsed,
            refresh,
            timeout,
            basic_auth,
            authorization,
            tls,
        })
    }

    /// `interval:` or `refresh:` of a source: how often it is read.
    fn discovery_interval(
        &mut self,
        map: &MarkedMappingNode,
        key: &str,
        default: std::time::Duration,
    ) -> Option<Duration> {
        let Some(n) = map.get_node(key) else {
            return Some(Duration(default));
        };
        let d = self.duration(n, key)?;
        if d.0 < MIN_DISCOVERY_INTERVAL {
            self.err(
                n.span(),
                format!(
                    "`{key}` {d} is too short: a discovery source is read at most once a second"
                ),
            );
            return None;
        }
        Some(d)
    }

    /// The target `host` with `template`'s services, `port` given to those that take one,
    /// built as a static target's entry is.
    fn template_target(
        &mut self,
        template: &ServiceTemplate,
        host: &str,
        port: Option<u16>,
        labels: BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Option<Target> {
        let blank = Span::new_blank();
        let scalar = |s: &str| MarkedScalarNode::new(blank, s);
        let services = match (&template.0, port) {
            (Node::Sequence(seq), Some(port)) => Node::Sequence(MarkedSequenceNode::new(
                *seq.span(),
                seq.iter().map(|item| with_port(item, port)).collect(),
            )),
            (other, _) => other.clone(),
        };
        let mut entry = MarkedMappingNode::new_empty(blank);
        entry.insert(scalar("services"), services);
        if !labels.is_empty() {
            let mut l = MarkedMappingNode::new_empty(blank);
            for (k, v) in labels {
                l.insert(scalar(&k), Node::Scalar(scalar(&v)));
            }
            entry.insert(scalar("labels"), Node::Mapping(l));
        }
        self.target_timeout_at = None;
        self.target(&scalar(host), &Node::Mapping(entry), defaults)
    }

    /// The targets of `groups` for `source`, each with `source`'s services and its group's
    /// labels (`__`-prefixed ones dropped), then `global_labels`.
    pub(super) fn discovered(
        &mut self,
        source: &Discovery,
        groups: &[TargetGroup],
        defaults: &Defaults,
        global_labels: &BTreeMap<String, String>,
    ) -> Vec<Target> {
        let mut out = Vec::new();
        for (index, group) in groups.iter().enumerate() {
            let labels: BTreeMap<String, String> = group
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for written in &group.targets {
                let before = self.errors.len();
                let target = match split_host_port(written) {
                    Ok((host, port)) => {
                        self.template_target(&source.services, host, port, labels.clone(), defaults)
                    }
                    Err(message) => {
                        self.err_at((0, 0), message);
                        None
                    }
                };
                // What the loader says of the target, with the place it came from; positions
                // would point into the generated entry, so none is given.
                for e in &mut self.errors[before..] {
                    e.line = 0;
                    e.column = 0;
                    e.message = format!("group {} target `{written}`: {}", index + 1, e.message);
                }
                if let Some(mut t) = target {
                    for service in &mut t.services {
                        for (k, v) in global_labels {
                            service.labels.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    out.push(t);
                }
            }
        }
        out
    }
}

/// `item` of a `services:` list with `port` given, when it is a service that takes a port and
/// names none (neither `TYPE:PORT`, nor `port:`, nor an HTTP `url:`).
fn with_port(item: &Node, port: u16) -> Node {
    let blank = Span::new_blank();
    let port_node = || Node::Scalar(MarkedScalarNode::new(blank, port.to_string()));
    match item {
        Node::Scalar(s) if !s.as_str().contains(':') => {
            let Some(protocol) = Protocol::from_name(s.as_str().trim()) else {
                return item.clone();
            };
            // The classic bare `UDP` is the echo check, and stays one with the port.
            let protocol = match protocol {
                Protocol::Udp => Protocol::Echo,
                p => p,
            };
            if !protocol.takes_port() {
                return item.clone();
            }
            let mut m = MarkedMappingNode::new_empty(*s.span());
            m.insert(
                MarkedScalarNode::new(blank, "type"),
                Node::Scalar(MarkedScalarNode::new(*s.span(), protocol.as_str())),
            );
            m.insert(MarkedScalarNode::new(blank, "port"), port_node());
            Node::Mapping(m)
        }
        Node::Mapping(map) => {
            let ty = map.get_node("type").and_then(Node::as_scalar);
            let takes_port = ty
                .filter(|t| !t.as_str().contains(':'))
                .and_then(|t| Protocol::from_name(t.as_str().trim()))
                .is_some_and(Protocol::takes_port);
            if !takes_port || map.get_node("port").is_some() || map.get_node("url").is_some() {
                return item.clone();
            }
            let mut m = map.clone();
            m.insert(MarkedScalarNode::new(blank, "port"), port_node());
            Node::Mapping(m)
        }
        _ => item.clone(),
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address, as Prometheus writes targets.
fn split_host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(format!(
            "`{}`: the port after `:` must be a number from 1 to 65535",
            super::limits::quoted(text)
        )),
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!(
                "`{}`: `[` without `]`: write `[v6]:port`",
                super::limits::quoted(text)
            ));
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, port_of(p)?)),
                None => Err(format!(
                    "`{}`: write `[v6]:port`",
                    super::limits::quoted(text)
                )),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, p) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, port_of(p)?))
        }
        // Several colons and no brackets: an IPv6 address alone.
        _ if text.parse::<std::net::Ipv6Addr>().is_ok() => Ok((text, None)),
        _ => Err(format!(
            "`{}` is not `host`, `host:port` or `[v6]:port`",
            super::limits::quoted(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn targets_split_as_prometheus_writes_them() {
        assert_eq!(split_host_port("a"), Ok(("a", None)));
        assert_eq!(split_host_port("a:9100"), Ok(("a", Some(9100))));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", Some(80))));
        assert_eq!(split_host_port("[::1]"), Ok(("::1", None)));
        assert_eq!(split_host_port("::1"), Ok(("::1", None)));
        for bad in ["a:0", "a:x", "a:70000", "[::1", "[::1]80", "a:b:c"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }
}
