//! One service entry: `HTTP`, `TCP:22`, or a mapping with `type` and options.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};

use crate::base::hint::{Dialect, did_you_mean};
use crate::base::resolve::{DEFAULT_MAX_ADDRESSES, EveryAddress, MAX_ADDRESSES_LIMIT};
use crate::base::values::Duration;
use crate::probe::shape::PortRule;
use crate::probe::{self, Protocol};

use crate::config::model::{
    DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Defaults, MIN_INTERVAL, Origin, Service, Target,
};

use super::{COMMON_SERVICE_KEYS, Loader, key_at, line_col, rtt};

impl Loader<'_> {
    /// Parses `HTTP`, `TCP:22` or a mapping into a service.
    pub(super) fn service(
        &mut self,
        node: &Node,
        target: &Target,
        defaults: &Defaults,
    ) -> Option<Service> {
        let span = *node.span();
        let mut own_timeout_at = None;
        let mut own_rtt = rtt::RttKeys::default();
        let mut own_map = None;
        let mut addresses = None;
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
                own_timeout_at = key_at(map, "timeout");
                let own_timeout = map
                    .get_node("timeout")
                    .and_then(|n| self.duration(n, "timeout"));
                own_rtt = self.rtt_keys(map);
                own_map = Some(map);
                let mut rest = (**map).clone();
                for k in COMMON_SERVICE_KEYS {
                    rest.remove(k);
                }
                addresses = self.every_address(map, target)?;
                if addresses.is_some() {
                    // The protocol's own `ip:` reads one family; `all` is the runner's.
                    rest.remove("ip");
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
        let port_key = options_node
            .as_mapping()
            .and_then(|m| m.get_node("port"))
            .and_then(|n| n.as_scalar());
        if let (false, Some(p)) = (protocol.takes_port(), port_key) {
            // Only `--port` reaches here from the command line; a file gets the
            // protocol's list of options, which says what it takes instead.
            if self.dialect == Dialect::CommandLine {
                self.err(
                    &span,
                    format!(
                        "{protocol} has no port: drop `--port {}`",
                        p.as_str().trim()
                    ),
                );
                return None;
            }
        }
        if port.is_none() && port_key.is_none() && protocol.port_rule() == PortRule::Required {
            let (example, echo) = match protocol {
                Protocol::Udp => (53, true),
                _ => (22, false),
            };
            let fix = self
                .dialect
                .give_port(protocol.as_str(), &target.host, example);
            let mut message = match self.dialect {
                // As the probe's own options check says it, the sentence a file has always had.
                Dialect::File => format!(
                    "{protocol} service on `{}`: a {protocol} service needs a port: {fix}",
                    target.host
                ),
                _ => format!(
                    "{protocol} service on `{}` needs a port: {fix}",
                    target.host
                ),
            };
            if echo {
                message.push_str(&format!(" ({})", self.dialect.echo_instead(&target.host)));
            }
            self.err(&span, message);
            return None;
        }
        if let Some(port) = port {
            if !protocol.takes_port() {
                // A file writes protocols as the classic form does; commands, in lowercase.
                let written = match self.dialect {
                    Dialect::File => protocol.as_str().to_uppercase(),
                    _ => protocol.as_str().to_string(),
                };
                self.err(
                    &span,
                    format!("`{protocol}` has no port: write `{written}` without `:{port}`"),
                );
                return None;
            }
            if let Node::Mapping(m) = &mut options_node {
                if let Some(given) = m.get_node("port").and_then(|n| n.as_scalar()) {
                    let message = match self.dialect {
                        Dialect::CommandLine => format!(
                            "the port is given twice: in `{}:{port}` and in `--port {}`; keep one",
                            protocol.as_str(),
                            given.as_str()
                        ),
                        _ => "the port is given twice: in `type` and in `port`; keep one".into(),
                    };
                    self.err(&span, message);
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
        // The key that set the timeout in effect, so errors about it point there.
        let timeout_at = match (own_timeout, target.timeout, defaults.timeout) {
            (Some(_), _, _) => own_timeout_at,
            (None, Some(_), _) => self.target_timeout_at,
            (None, None, Some(_)) => self.defaults_timeout_at,
            (None, None, None) => None,
        }
        .unwrap_or_else(|| line_col(&span));
        let timeout = match explicit_timeout {
            Some(t) if t.0 >= interval => {
                self.err_at(
                    timeout_at,
                    format!("timeout {} must be below the interval {}: lower the timeout or raise the interval", t, Duration(interval)),
                );
                return None;
            }
            Some(t) => t.0,
            None => DEFAULT_TIMEOUT.min(interval.mul_f64(0.9)),
        };
        if let Err(e) = probe::fits(&options, timeout) {
            let what = if explicit_timeout.is_some() {
                String::new()
            } else {
                format!(" (the default timeout {})", Duration(timeout))
            };
            self.err_at(
                timeout_at,
                format!("{protocol} service on `{}`{what}: {e}", target.host),
            );
            return None;
        }
        let defaults_rtt = rtt::RttKeys {
            buckets: defaults.rtt_buckets.clone(),
            histogram: defaults.rtt_histogram,
        };
        let default_rtt_buckets = self.default_rtt_buckets.clone();
        let rtt_buckets = self
            .effective_rtt(
                protocol,
                &own_rtt,
                own_map,
                &defaults_rtt,
                &default_rtt_buckets,
            )
            .ok()?;
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
            rtt_buckets,
            own_rtt_buckets: own_rtt.buckets,
            own_rtt_histogram: own_rtt.histogram,
            labels: target.labels.clone(),
            addresses,
            options,
            origin: {
                let (line, column) = line_col(&span);
                Origin {
                    file: self.origin_file.clone(),
                    line,
                    column,
                }
            },
        })
    }

    /// `ip: all` (`all-ipv4`, `all-ipv6`) and `max_addresses:`; `Some(None)` for a service
    /// that probes one address, `None` after an error.
    fn every_address(
        &mut self,
        map: &MarkedMappingNode,
        target: &Target,
    ) -> Option<Option<EveryAddress>> {
        let family = map
            .get_node("ip")
            .and_then(|n| n.as_scalar())
            .and_then(|s| EveryAddress::parse(s.as_str()));
        let max = match map.get_node("max_addresses") {
            None => None,
            Some(n) => {
                let text = n.as_scalar().map(|s| s.as_str().trim()).unwrap_or("");
                match text.parse::<usize>() {
                    Ok(m) if (1..=MAX_ADDRESSES_LIMIT).contains(&m) => Some(m),
                    _ => {
                        self.err(
                            n.span(),
                            format!(
                                "`max_addresses: {text}`: give a number from 1 to {MAX_ADDRESSES_LIMIT}"
                            ),
                        );
                        return None;
                    }
                }
            }
        };
        let Some(family) = family else {
            if let Some(n) = map.get_node("max_addresses") {
                self.err(
                    n.span(),
                    "`max_addresses` only applies with `ip: all` (or `all-ipv4`, `all-ipv6`): add `ip: all` or drop it",
                );
                return None;
            }
            return Some(None);
        };
        if target.labels.contains_key("ip") {
            self.err(
                map.span(),
                format!(
                    "`ip: all` on `{}` labels each address `ip`, and the target already has a label `ip`: rename that label",
                    target.host
                ),
            );
            return None;
        }
        Some(Some(EveryAddress {
            family,
            max: max.unwrap_or(DEFAULT_MAX_ADDRESSES),
        }))
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
