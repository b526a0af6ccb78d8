//! Config errors as a table: one file per rule, one row (file, exact messages). The message is
//! the interface. Also `netmon config check` exit codes, and the valid examples.

use std::path::Path;
use std::process::Command;

use netmon::config::{self, LoadError};

const DIR: &str = "tests/testdata/config";

/// (file, every expected error as `line:col: message`).
const INVALID: &[(&str, &[&str])] = &[
    (
        "invalid-icmp-port.yml",
        &["3:16: `icmp` has no port: write `ICMP` without `:5`"],
    ),
    (
        "invalid-udp-no-port.yml",
        &[
            "4:9: udp service on `example.com`: a udp service needs a port: write `UDP:53` or `{type: udp, port: 53}` (a bare `UDP` is the echo check)",
        ],
    ),
    (
        "invalid-duplicate-key.yml",
        &[
            "4:3: duplicate key `example.com` (first at line 2): each key may appear once in a mapping",
        ],
    ),
    (
        "invalid-duplicate-service.yml",
        &[
            "3:26: service `tcp:22` appears twice on `example.com`: give one of them a distinct `name:`",
        ],
    ),
    (
        "invalid-duration.yml",
        &[
            "2:13: `interval`: invalid duration `5 parsecs`: write e.g. `30s`, `500ms`, `2m`, `1h30m` or a number of seconds",
        ],
    ),
    (
        "invalid-empty.yml",
        &["the configuration is empty: it needs a `targets:` mapping (see examples/netmon.yml)"],
    ),
    (
        "invalid-interval-too-short.yml",
        &["4:16: interval 10ms is too short: the minimum is 100ms"],
    ),
    (
        "invalid-host-label-too-long.yml",
        &[
            "2:3: host name `www.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` has a label of 64 bytes (`xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`): each part between dots has at most 63 bytes; shorten it or write the IP address",
        ],
    ),
    (
        "invalid-too-many-labels.yml",
        &[
            "3:261: target `example.com` has 34 labels, more than the 32 allowed (each is on every series of the target): remove 2 of them",
        ],
    ),
    (
        "invalid-label-name.yml",
        &[
            "3:15: `9lives` is not a valid label name: use letters, digits and `_`, not starting with a digit or `__`",
        ],
    ),
    (
        "invalid-many-errors.yml",
        &[
            "1:28: unknown key `timout` in `defaults` (did you mean `timeout`?); valid keys: interval, timeout, resolver, rtt_buckets, rtt_histogram",
            "4:16: unknown protocol `HTPP` (did you mean `HTTP`?); valid protocols: http, https, icmp, dns, ntp, tcp, udp, echo, stamp, traceroute",
            "4:22: tcp service on `a.example`: a tcp service needs a port: write `TCP:22` or `{type: tcp, port: 22}`",
            "6:15: `interval`: invalid duration `2x`: write e.g. `30s`, `500ms`, `2m`, `1h30m` or a number of seconds",
        ],
    ),
    (
        "invalid-missing-type.yml",
        &[
            "4:9: a service mapping needs `type:`, one of http, https, icmp, dns, ntp, tcp, udp, echo, stamp, traceroute",
        ],
    ),
    (
        "invalid-no-targets.yml",
        &[
            "1:1: missing `targets:`: list the hosts to monitor, e.g. `targets: {localhost: {services: [ICMP]}}`",
        ],
    ),
    (
        "invalid-port-range.yml",
        &["3:16: `TCP:70000`: the port after `:` must be a number from 1 to 65535"],
    ),
    (
        "invalid-port-twice.yml",
        &["4:9: the port is given twice: in `type` and in `port`; keep one"],
    ),
    (
        "invalid-regex.yml",
        &[
            "4:46: tcp service on `example.com`: `expect_regex`: invalid regular expression `(unclosed`: unclosed group",
        ],
    ),
    (
        "invalid-reserved-label.yml",
        &["3:15: label `host` is set by netmon itself; choose another name"],
    ),
    (
        "invalid-services-not-list.yml",
        &["3:15: `services` must be a list, e.g. `services: [HTTP, ICMP, \"TCP:22\"]`"],
    ),
    (
        "invalid-tcp-no-port.yml",
        &[
            "3:16: tcp service on `example.com`: a tcp service needs a port: write `TCP:22` or `{type: tcp, port: 22}`",
        ],
    ),
    (
        "invalid-timeout-above-interval.yml",
        &[
            "5:32: timeout 10s must be below the interval 10s: lower the timeout or raise the interval",
        ],
    ),
    (
        "invalid-unknown-option.yml",
        &[
            "4:32: tcp service on `example.com`: unknown option `expect_regexp` (did you mean `expect_regex`?); valid options here: port, send, expect_regex, ip, max_read",
        ],
    ),
    (
        "invalid-unknown-protocol.yml",
        &[
            "3:16: unknown protocol `HTPP` (did you mean `HTTP`?); valid protocols: http, https, icmp, dns, ntp, tcp, udp, echo, stamp, traceroute",
        ],
    ),
    (
        "invalid-unknown-target-key.yml",
        &[
            "3:5: unknown key `intervall` in target `example.com` (did you mean `interval`?); valid keys: services, interval, timeout, labels",
        ],
    ),
    (
        "invalid-unknown-top-key.yml",
        &[
            "1:1: unknown key `target` at the top level (did you mean `targets`?); valid keys: defaults, targets, echo_server, stamp_reflector, global, discovery",
            "1:1: missing `targets:`: list the hosts to monitor, e.g. `targets: {localhost: {services: [ICMP]}}`",
        ],
    ),
    (
        "invalid-yaml-syntax.yml",
        &[
            "3:15: invalid YAML: unclosed `[` opened at 3:15: close the list with `]` (the parser stopped at 4:1: while parsing a flow sequence, expected ',' or ']')",
        ],
    ),
    (
        "invalid-rtt-buckets.yml",
        &[
            "2:3: `rtt_buckets` must be ascending without repeats: `0.0005` comes after `0.001`",
            "6:23: `rtt_buckets` lists 0 values: give 1 to 32 (each is a series of every service), or `rtt_histogram: false` for none",
            "7:32: `rtt_buckets`: `.inf` is not a number of seconds above 0: write bounds such as `0.005` (5 ms)",
            "8:23: `rtt_buckets` must be a list of upper bounds in seconds, ascending, e.g. `rtt_buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1]`",
            "9:32: `rtt_buckets` must be ascending without repeats: `0.005` comes after `0.005`",
            "10:32: `rtt_buckets`: `0` is not a number of seconds above 0: write bounds such as `0.005` (5 ms)",
            "11:32: `rtt_buckets`: `1ms` is not a number of seconds above 0: write bounds such as `0.005` (5 ms)",
            "12:32: `rtt_buckets` lists 33 values: give 1 to 32 (each is a series of every service), or `rtt_histogram: false` for none",
        ],
    ),
    (
        "invalid-rtt-histogram.yml",
        &[
            "1:13: `rtt_histogram` must be `true` or `false`",
            "5:23: `rtt_buckets` and `rtt_histogram: false` contradict each other: remove one",
            "6:23: `rtt_histogram` must be `true` or `false`",
        ],
    ),
    (
        "invalid-rtt-protocol.yml",
        &[
            "5:32: `rtt_buckets` applies to icmp, echo and stamp services only (tcp has no RTT histogram): remove it",
            "6:23: `rtt_histogram` applies to icmp, echo and stamp services only (http has no RTT histogram): remove it",
        ],
    ),
    (
        "invalid-discovery-source.yml",
        &[
            "3:9: a discovery source has either `file:` or `http:`, not both: split it into two sources",
            "6:11: `file: /etc/netmon/targets/*.txt`: file_sd files end in `.json`, `.yml` or `.yaml`, e.g. `/etc/netmon/targets/*.yml`",
            "8:11: `http`: write the user and password under `basic_auth: {username: ..., password_file: ...}` rather than in the URL, where logs and the `source` label would show them",
            "12:14: timeout 10s must be below the refresh 10s: lower the timeout or raise `refresh`",
            "15:5: unknown key `intervall` in a `file:` discovery source (did you mean `interval`?); valid keys: file, name, services, interval, max_targets",
        ],
    ),
    (
        "invalid-discovery-services.yml",
        &[
            "3:16: unknown protocol `HTPP` (did you mean `HTTP`?); valid protocols: http, https, icmp, dns, ntp, tcp, udp, echo, stamp, traceroute",
            "5:16: `icmp` has no port: write `ICMP` without `:22`",
            "8:9: discovery source `/srv/a.json` is listed twice: give one of them a distinct `name:`",
            "11:18: `max_targets` must be a number from 1 to 1000000",
        ],
    ),
    (
        "invalid-zero-interval.yml",
        &["3:15: `interval` must be greater than zero"],
    ),
];

fn errors_of(file: &str) -> Vec<String> {
    let path = Path::new(DIR).join(file);
    match config::load_file(&path) {
        Ok(_) => panic!("{file} was accepted"),
        Err(LoadError::Invalid(errs)) => errs
            .0
            .iter()
            .map(|e| {
                assert_eq!(e.file, path.display().to_string());
                if e.line == 0 {
                    e.message.clone()
                } else {
                    format!("{}:{}: {}", e.line, e.column, e.message)
                }
            })
            .collect(),
        Err(e) => panic!("{file}: unexpected error {e}"),
    }
}

#[test]
fn every_invalid_file_yields_exactly_its_errors() {
    for (file, expected) in INVALID {
        assert_eq!(errors_of(file), *expected, "{file}");
    }
}

#[test]
fn every_invalid_file_is_in_the_table() {
    for entry in std::fs::read_dir(DIR).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.starts_with("invalid-") {
            assert!(
                INVALID.iter().any(|(f, _)| *f == name),
                "{name} has no row in the table"
            );
        }
    }
}

#[test]
fn valid_files_load() {
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("valid-")
        {
            config::load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn the_full_form_parses_to_the_expected_model() {
    let c = config::load_file(&Path::new(DIR).join("valid-full.yml")).unwrap();
    let hosts: Vec<&str> = c.targets.iter().map(|t| t.host.as_str()).collect();
    assert_eq!(hosts, ["example.com", "::1", "127.0.0.1"]);
    let ex = &c.targets[0];
    assert_eq!(ex.labels.get("site").map(String::as_str), Some("eu-west"));
    let names: Vec<&str> = ex.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tcp:22", "tcp:443", "smtp"]);
    // Target interval and timeout apply; the service's own override them.
    assert_eq!(ex.services[0].interval.as_secs(), 60);
    assert_eq!(ex.services[0].timeout.as_secs(), 2);
    assert_eq!(ex.services[2].interval.as_secs(), 10);
    assert_eq!(ex.services[2].timeout.as_millis(), 500);
    assert_eq!(ex.services[2].options.port(), Some(25));
    // A bare number is seconds.
    assert_eq!(c.targets[2].services[0].interval.as_secs(), 60);
    // `defaults` applies where nothing else does.
    assert_eq!(c.targets[1].services[0].interval.as_secs(), 30);
    assert_eq!(c.targets[1].services[0].timeout.as_secs(), 5);
}

#[test]
fn the_classic_dictionary_parses_to_the_expected_model() {
    use netmon::probe::Protocol;
    let c = config::load_file(Path::new("examples/classic.yml")).unwrap();
    let got: Vec<(&str, &str, Protocol, u64)> = c
        .services()
        .map(|s| {
            (
                s.host.as_str(),
                s.name.as_str(),
                s.protocol,
                s.interval.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("www.google.com", "http", Protocol::Http, 60),
            ("www.google.com", "icmp", Protocol::Icmp, 60),
            ("pool.ntp.org", "ntp", Protocol::Ntp, 120),
            // The classic form's bare `UDP` is the echo check against our echo server's port.
            ("localhost", "echo", Protocol::Echo, 180),
        ]
    );
    let echo = c.services().last().unwrap();
    assert_eq!(echo.options.port(), Some(7007));
    // No timeout written: the default 5 s, below every interval.
    assert!(c.services().all(|s| s.timeout.as_secs() == 5));
}

#[test]
fn the_builtin_default_is_valid() {
    let c = config::Source::BuiltIn.load().unwrap();
    assert!(c.services().count() >= 1);
}

#[test]
fn config_check_exit_codes() {
    let bin = crate::support::BIN;
    let ok = Command::new(bin)
        .args(["config", "check", "tests/testdata/config/valid-full.yml"])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid, 3 target(s), 5 service(s)"));
    let bad = Command::new(bin)
        .args([
            "config",
            "check",
            "tests/testdata/config/invalid-many-errors.yml",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("4 errors in configuration:"), "{err}");
    let missing = Command::new(bin)
        .args(["config", "check", "/nonexistent/netmon.yml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read config file /nonexistent/netmon.yml")
    );
}
