//! Writing a [`Config`] back as YAML: what `netmon console`'s `save` writes, and what the
//! console re-reads through [`super::load`] after every change, so the running configuration
//! is always one that `netmon config check` accepts.
//!
//! Only what the user wrote is written: the `defaults:` and `global:`, each target's own
//! `interval`, `timeout` and `labels`, and each service's own keys; `echo_server:` is written
//! with every setting spelled out. Effective values (a service's interval
//! inherited from its target) are left to the loader to derive again, so `load(save(c)) == c`.
//! A service with no options besides its port is written in the short form (`tcp:22`).
//! `discovery:` sources are written with their effective intervals and limits, and their
//! `services:` as written; what they discovered is not part of the file.

use serde_yaml::{Mapping, Value};

use crate::config::model::{
    Config, DEFAULT_MAX_TARGETS, Discovery, DiscoveryKind, Service, Target,
};
use crate::probe::Protocol;

/// Why a configuration could not be written as YAML.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// A value did not serialize (a bug in an `Options` type's `Serialize`).
    #[error("cannot write the configuration as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A protocol's options did not serialize to a mapping.
    #[error("cannot write the {0} options of `{1}` as a YAML mapping")]
    NotAMapping(Protocol, String),
}

/// Writes `config` as YAML text that [`super::load`] reads back into an equal `Config`.
pub fn to_yaml(config: &Config) -> Result<String, SaveError> {
    let mut root = Mapping::new();
    let mut defaults = Mapping::new();
    if let Some(i) = config.defaults.interval {
        defaults.insert("interval".into(), serde_yaml::to_value(i)?);
    }
    if let Some(t) = config.defaults.timeout {
        defaults.insert("timeout".into(), serde_yaml::to_value(t)?);
    }
    if let Some(r) = &config.defaults.resolver {
        defaults.insert("resolver".into(), serde_yaml::to_value(r)?);
    }
    rtt(
        &mut defaults,
        config.defaults.rtt_buckets.as_deref(),
        config.defaults.rtt_histogram,
    )?;
    if !defaults.is_empty() {
        root.insert("defaults".into(), Value::Mapping(defaults));
    }
    if !config.global_labels.is_empty() {
        let mut global = Mapping::new();
        global.insert(
            "labels".into(),
            serde_yaml::to_value(&config.global_labels)?,
        );
        root.insert("global".into(), Value::Mapping(global));
    }
    let mut targets = Mapping::new();
    for t in &config.targets {
        targets.insert(t.host.clone().into(), target(t)?);
    }
    // A config that only discovers may have no `targets:`, which the loader accepts.
    if !targets.is_empty() || config.discovery.is_empty() {
        root.insert("targets".into(), Value::Mapping(targets));
    }
    // A source's `services:` is written as it was (see `ServiceTemplate::to_flow`), which
    // serde_yaml cannot do: each gets a placeholder, replaced in the text.
    let nonce: u64 = rand::random();
    let mut templates = Vec::new();
    if !config.discovery.is_empty() {
        let mut sources = Vec::new();
        for (i, d) in config.discovery.iter().enumerate() {
            let token = format!("netmon-template-{nonce:016x}-{i}");
            sources.push(discovery(d, &token)?);
            templates.push((token, d.services.to_flow()));
        }
        root.insert("discovery".into(), Value::Sequence(sources));
    }
    if let Some(echo) = &config.echo_server {
        root.insert("echo_server".into(), serde_yaml::to_value(echo)?);
    }
    if let Some(stamp) = &config.stamp_reflector {
        root.insert("stamp_reflector".into(), serde_yaml::to_value(stamp)?);
    }
    let mut text = serde_yaml::to_string(&Value::Mapping(root))?;
    for (token, flow) in templates {
        text = text.replacen(&token, &flow, 1);
    }
    Ok(text)
}

fn discovery(d: &Discovery, services: &str) -> Result<Value, SaveError> {
    let mut m = Mapping::new();
    match &d.kind {
        DiscoveryKind::File { patterns, interval } => {
            let file = match patterns.as_slice() {
                [one] => Value::String(one.clone()),
                many => serde_yaml::to_value(many)?,
            };
            m.insert("file".into(), file);
            m.insert("interval".into(), serde_yaml::to_value(interval)?);
        }
        DiscoveryKind::Http(h) => {
            m.insert("http".into(), h.url.as_str().into());
            m.insert("refresh".into(), serde_yaml::to_value(h.refresh)?);
            m.insert("timeout".into(), serde_yaml::to_value(h.timeout)?);
            if let Some(a) = &h.basic_auth {
                m.insert("basic_auth".into(), serde_yaml::to_value(a)?);
            }
            if let Some(a) = &h.authorization {
                m.insert("authorization".into(), serde_yaml::to_value(a)?);
            }
            if !h.tls.is_default() {
                m.insert("tls_config".into(), serde_yaml::to_value(&h.tls)?);
            }
        }
    }
    if d.named {
        m.insert("name".into(), d.name.clone().into());
    }
    if d.max_targets != DEFAULT_MAX_TARGETS {
        m.insert("max_targets".into(), (d.max_targets as u64).into());
    }
    m.insert("services".into(), services.into());
    Ok(Value::Mapping(m))
}

fn target(t: &Target) -> Result<Value, SaveError> {
    let mut m = Mapping::new();
    if let Some(i) = t.interval {
        m.insert("interval".into(), serde_yaml::to_value(i)?);
    }
    if let Some(to) = t.timeout {
        m.insert("timeout".into(), serde_yaml::to_value(to)?);
    }
    if !t.labels.is_empty() {
        m.insert("labels".into(), serde_yaml::to_value(&t.labels)?);
    }
    let services = t
        .services
        .iter()
        .map(service)
        .collect::<Result<Vec<_>, _>>()?;
    m.insert("services".into(), Value::Sequence(services));
    Ok(Value::Mapping(m))
}

fn service(s: &Service) -> Result<Value, SaveError> {
    let options = match serde_yaml::to_value(&s.options)? {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => return Err(SaveError::NotAMapping(s.protocol, s.host.clone())),
    };
    let plain = !s.named
        && s.own_interval.is_none()
        && s.own_timeout.is_none()
        && s.own_rtt_buckets.is_none()
        && s.own_rtt_histogram.is_none()
        && s.addresses.is_none();
    // A bare `udp` means the echo check (the classic form's shorthand), so udp is always a mapping.
    if plain && s.protocol != Protocol::Udp {
        if options.is_empty() {
            return Ok(Value::String(s.protocol.as_str().to_string()));
        }
        if options.len() == 1 {
            if let Some(port) = options.get("port").and_then(Value::as_u64) {
                return Ok(Value::String(format!("{}:{port}", s.protocol)));
            }
        }
    }
    let mut m = Mapping::new();
    m.insert("type".into(), s.protocol.as_str().into());
    if s.named {
        m.insert("name".into(), s.name.clone().into());
    }
    if let Some(i) = s.own_interval {
        m.insert("interval".into(), serde_yaml::to_value(i)?);
    }
    if let Some(t) = s.own_timeout {
        m.insert("timeout".into(), serde_yaml::to_value(t)?);
    }
    rtt(&mut m, s.own_rtt_buckets.as_deref(), s.own_rtt_histogram)?;
    m.extend(options);
    if let Some(every) = s.addresses {
        // After the options, whose own `ip:` (always `auto` here) it replaces.
        m.insert("ip".into(), every.as_str().into());
        if every.max != crate::base::resolve::DEFAULT_MAX_ADDRESSES {
            m.insert("max_addresses".into(), (every.max as u64).into());
        }
    }
    Ok(Value::Mapping(m))
}

/// `rtt_buckets:` and `rtt_histogram:` as written.
fn rtt(m: &mut Mapping, buckets: Option<&[f64]>, histogram: Option<bool>) -> Result<(), SaveError> {
    if let Some(b) = buckets {
        m.insert("rtt_buckets".into(), serde_yaml::to_value(b)?);
    }
    if let Some(h) = histogram {
        m.insert("rtt_histogram".into(), h.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::loader::load;

    /// Every tcp option, labels, defaults, intervals and timeouts at all three levels, a named
    /// service, RTT histogram keys in the defaults and in services, and strings YAML would
    /// misread if written bare.
    const FULL: &str = r#"
defaults: { interval: 1m 30s, timeout: 2500ms, rtt_buckets: [0.001, 0.01, 2.5], rtt_histogram: true }
targets:
  127.0.0.1:
    interval: 45s
    timeout: 3s
    labels: { site: eu-west, rack: "12", team_name: "a: b # c", yes: "true" }
    services:
      - "TCP:22"
      - { type: tcp, port: 2222 }
      - type: TCP
        name: banner
        interval: 500ms
        timeout: 400ms
        port: 25
        send: "EHLO netmon\r\n"
        expect_regex: '^220 .*(ESMTP|"x")\s'
        ip: ipv4
        max_read: 100
      - { type: tcp, port: 80, send: "123", ip: ipv6 }
      - { type: tcp, port: 81, ip: all }
      - { type: tcp, port: 82, ip: all-ipv6, max_addresses: 3 }
  "::1":
    services: ["tcp:443", { type: tcp, port: 8443, timeout: 1s }]
  localhost:
    services: [TCP:7, ICMP, { type: icmp, name: quiet, rtt_histogram: false }, { type: echo, rtt_buckets: [0.0005, 0.002] }]
"#;

    #[test]
    fn the_hosted_echo_server_is_saved_too() {
        let c = load(
            "echo_server: { listen: \"127.0.0.1:7007\", tcp: true }\ntargets: { a: { services: [ICMP] } }\n",
            "netmon.yml",
        )
        .unwrap();
        assert!(c.echo_server.is_some());
        let text = to_yaml(&c).unwrap();
        assert_eq!(load(&text, "saved.yml").unwrap(), c, "{text}");
    }

    #[test]
    fn the_hosted_stamp_reflector_and_stamp_services_are_saved_too() {
        let c = load(
            "stamp_reflector: { listen: \"127.0.0.1:8620\", allow: [127.0.0.0/8], rate_limit: 10 }\ntargets: { a: { services: [STAMP, { type: stamp, port: 8620, count: 5, size: 100 }] } }\n",
            "netmon.yml",
        )
        .unwrap();
        assert_eq!(c.stamp_reflector.as_ref().map(|s| s.rate_limit), Some(10));
        let text = to_yaml(&c).unwrap();
        assert!(text.contains("stamp_reflector:"), "{text}");
        assert_eq!(load(&text, "saved.yml").unwrap(), c, "{text}");
    }

    #[test]
    fn load_save_load_gives_an_equal_config() {
        let first = load(FULL, "full.yml").unwrap();
        let text = to_yaml(&first).unwrap();
        let second = load(&text, "saved.yml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(first, second, "\n{text}");
        // And saving again is stable.
        assert_eq!(to_yaml(&second).unwrap(), text);
    }

    #[test]
    fn discovery_sources_are_saved_too() {
        let c = load(
            r#"
targets: { a: { services: [ICMP] } }
discovery:
  - file: [/etc/netmon/targets/*.yml, /srv/sd.json]
    interval: 30s
    services: [HTTPS, ICMP, "TCP:22"]
  - http: http://127.0.0.1:8500/sd
    name: consul
    refresh: 1m
    max_targets: 50
    authorization: { credentials_file: /run/token }
    tls_config: { insecure_skip_verify: true }
    services: [{ type: tcp, port: 022, name: ssh, send: 007 }, { type: icmp, rtt_histogram: false }, { type: http, path: /health, headers: { "X-A": "a: b # c, d", Empty: "" } }]
"#,
            "netmon.yml",
        )
        .unwrap();
        assert_eq!(c.discovery.len(), 2);
        let text = to_yaml(&c).unwrap();
        assert_eq!(load(&text, "saved.yml").unwrap(), c, "{text}");
        // Written as written: a leading zero is kept where it is a number and where it is text.
        assert!(text.contains("port: 022, name: ssh, send: 007"), "{text}");
        // A config that only discovers needs no `targets:`.
        let only = load(
            "discovery: [{ file: /srv/*.json, services: [ICMP] }]
",
            "netmon.yml",
        )
        .unwrap();
        let text = to_yaml(&only).unwrap();
        assert!(!text.contains("targets"), "{text}");
        assert_eq!(load(&text, "saved.yml").unwrap(), only, "{text}");
    }

    #[test]
    fn discovery_templates_keep_the_fuzz_round_trip() {
        for text in [
            "discovery: [{file: /a.json, services: [ICMP, 'TCP:22', UDP, {type: udp, port: +53, send: ~}]}]",
            "discovery:\n  - file: /a.json\n    services:\n      - type: tcp\n        send: \"\\t[x], {y}: #z\"\n        port: 1_0\n",
            "discovery: [{file: /a.json, services: [{type: http, headers: {'': x, 'a b': 'c'}, path: \"/p?q=1&r=[2]\"}]}]",
            "discovery: [{http: 'http://[::1]:8500/sd?x=1', services: [{type: icmp, count: 0x3}]}]",
        ] {
            crate::fuzzing::config_load(text.as_bytes());
        }
    }

    #[test]
    fn plain_services_use_the_short_form() {
        let c = load(
            "targets: {h: {services: ['TCP:22', {type: tcp, port: 23, name: x}]}}",
            "t",
        )
        .unwrap();
        let text = to_yaml(&c).unwrap();
        assert!(text.contains("- tcp:22\n"), "{text}");
        assert!(text.contains("name: x"), "{text}");
        assert!(!text.contains("defaults"), "{text}");
    }
}
