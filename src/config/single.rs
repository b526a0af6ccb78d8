//! One-service configurations: `netmon check PROTOCOL HOST` and the console's `add` describe a
//! single service; it goes through the same loader as a file, so both accept exactly what a
//! file would and report the same errors.

use serde_yaml::{Mapping, Value};

use crate::base::hint::Dialect;
use crate::config::error::{ConfigError, ConfigErrors};
use crate::config::loader::load_as;
use crate::config::model::Service;

/// A service described by arguments rather than a file.
#[derive(Debug, Clone, Default)]
pub struct OneService {
    /// The host, as a config key.
    pub host: String,
    /// The service type as in the classic form: `http`, `TCP:22`.
    pub service: String,
    /// `port:`, if given apart from the type.
    pub port: Option<u16>,
    /// `interval:`, as written (`30s`).
    pub interval: Option<String>,
    /// Protocol options, already YAML values.
    pub options: Vec<(String, Value)>,
    /// Where the user typed it, so that hints use that place's syntax.
    pub dialect: Dialect,
}

impl OneService {
    /// Validates the service through the config loader; `origin` names it in errors
    /// (`<command line>`).
    pub fn load(&self, origin: &str) -> Result<Service, ConfigErrors> {
        let mut service = Mapping::new();
        service.insert("type".into(), self.service.clone().into());
        if let Some(p) = self.port {
            service.insert("port".into(), u64::from(p).into());
        }
        if let Some(i) = &self.interval {
            service.insert("interval".into(), i.clone().into());
        }
        for (k, v) in &self.options {
            service.insert(k.clone().into(), v.clone());
        }
        let mut target = Mapping::new();
        target.insert(
            "services".into(),
            Value::Sequence(vec![Value::Mapping(service)]),
        );
        let mut targets = Mapping::new();
        targets.insert(self.host.clone().into(), Value::Mapping(target));
        let mut doc = Mapping::new();
        doc.insert("targets".into(), Value::Mapping(targets));
        // Serializing a mapping of strings and plain values cannot fail; if it ever did, the
        // empty document below is refused by the loader with a message of its own.
        let text = serde_yaml::to_string(&Value::Mapping(doc)).unwrap_or_default();
        let config = load_as(&text, origin, self.dialect)?;
        config.services().next().cloned().ok_or_else(|| {
            ConfigErrors(vec![ConfigError {
                file: origin.to_string(),
                line: 0,
                column: 0,
                message: "no service given".into(),
            }])
        })
    }
}

/// A `-o KEY=VALUE` value as YAML: numbers, booleans, flow lists and mappings and quoted
/// strings as written; anything else as a string.
pub fn option_value(v: &str) -> Value {
    let t = v.trim();
    let literal = t.parse::<f64>().is_ok()
        || matches!(t, "true" | "false")
        || (t.starts_with('[') && t.ends_with(']'))
        || (t.starts_with('{') && t.ends_with('}'))
        || (t.len() >= 2 && t.starts_with('"') && t.ends_with('"'))
        || (t.len() >= 2 && t.starts_with('\'') && t.ends_with('\''));
    if literal && !t.contains('\n') {
        if let Ok(value) = serde_yaml::from_str::<Value>(t) {
            return value;
        }
    }
    Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_become_yaml() {
        assert_eq!(option_value("100"), Value::from(100));
        assert_eq!(
            option_value("[200, 301]"),
            Value::Sequence(vec![200.into(), 301.into()])
        );
        assert_eq!(
            option_value("^SSH-2.0 # x: y"),
            Value::String("^SSH-2.0 # x: y".into())
        );
    }

    #[test]
    fn one_service_loads_like_a_file() {
        let s = OneService {
            host: "::1".into(),
            service: "TCP:22".into(),
            options: vec![("expect_regex".into(), option_value("^SSH-"))],
            ..OneService::default()
        }
        .load("<test>")
        .unwrap();
        assert_eq!((s.host.as_str(), s.name.as_str()), ("::1", "tcp:22"));
        assert_eq!(s.endpoint(), "[::1]:22");
        let e = OneService {
            host: "h".into(),
            service: "htpp".into(),
            ..OneService::default()
        }
        .load("<test>")
        .unwrap_err();
        assert!(e.0[0].message.contains("did you mean `http`"), "{e}");
    }

    #[test]
    fn console_hints_are_console_commands() {
        let error = |service: &str| {
            OneService {
                host: "h".into(),
                service: service.into(),
                dialect: Dialect::Console,
                ..OneService::default()
            }
            .load("<console>")
            .unwrap_err()
            .0[0]
                .message
                .clone()
        };
        assert_eq!(
            error("tcp"),
            "tcp service on `h` needs a port: write `tcp:22`, e.g. `add h tcp:22`"
        );
        assert_eq!(
            error("UDP"),
            "udp service on `h` needs a port: write `udp:53`, e.g. `add h udp:53` (`add h echo` checks netmon's echo server)"
        );
        assert_eq!(
            error("ICMP:3"),
            "`icmp` has no port: write `icmp` without `:3`"
        );
    }
}
