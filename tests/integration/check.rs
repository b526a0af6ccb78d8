//! End to end: `netmon check` against TCP services on loopback, one test per exit code, with
//! its output parsed as Nagios plugin output and performance data.

use std::process::Command;

use crate::support::{closed_port, tcp_listener};

/// Runs `netmon check ARGS`; returns (exit code, stdout).
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(crate::support::BIN)
        .arg("check")
        .args(args)
        .output()
        .expect("netmon runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let code = out.status.code().expect("exited, not killed");
    (code, stdout)
}

/// One performance-data item: `'label'=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Debug, PartialEq)]
struct Perf {
    label: String,
    value: f64,
    unit: String,
    warn: String,
    crit: String,
    min: String,
    max: String,
}

/// Parses plugin output `TEXT | PERFDATA` per the Nagios plugin guidelines; panics with the
/// line on anything malformed.
fn parse_line(line: &str) -> (String, Vec<Perf>) {
    let (text, perf) = match line.split_once(" | ") {
        Some((t, p)) => (t.to_string(), p),
        None => (line.to_string(), ""),
    };
    let mut items = Vec::new();
    let mut rest = perf.trim();
    while !rest.is_empty() {
        let (label, after) = if let Some(r) = rest.strip_prefix('\'') {
            let end = r
                .find("'=")
                .unwrap_or_else(|| panic!("unterminated label in {line:?}"));
            (r[..end].to_string(), &r[end + 1..])
        } else {
            let end = rest
                .find('=')
                .unwrap_or_else(|| panic!("no `=` in {line:?}"));
            (rest[..end].to_string(), &rest[end..])
        };
        let after = after.strip_prefix('=').expect("=");
        let (item, next) = after.split_once(' ').unwrap_or((after, ""));
        let mut fields = item.split(';');
        let vu = fields.next().unwrap_or_default();
        let split = vu
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(vu.len());
        let value: f64 = vu[..split]
            .parse()
            .unwrap_or_else(|_| panic!("bad value {vu:?} in {line:?}"));
        let unit = vu[split..].to_string();
        assert!(
            ["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&unit.as_str()),
            "unit {unit:?} in {line:?}"
        );
        let mut f = || fields.next().unwrap_or_default().to_string();
        items.push(Perf {
            label,
            value,
            unit,
            warn: f(),
            crit: f(),
            min: f(),
            max: f(),
        });
        rest = next.trim();
    }
    (text, items)
}

fn open_port() -> u16 {
    testkit::net::accepting_port()
}

#[test]
fn ok_exits_0_with_latency_perfdata() {
    let port = open_port().to_string();
    let (code, out) = check(&["tcp", "127.0.0.1", "--port", &port, "-w", "5", "-c", "10"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let (text, perf) = parse_line(lines[0]);
    assert!(
        text.starts_with(&format!("NETMON TCP OK - 127.0.0.1:{port} time=")),
        "{text}"
    );
    assert_eq!(perf.len(), 1, "{out}");
    let p = &perf[0];
    assert_eq!(p.label, "time");
    assert_eq!(p.unit, "s");
    assert!(p.value > 0.0 && p.value < 5.0, "{p:?}");
    assert_eq!(
        (p.warn.as_str(), p.crit.as_str(), p.min.as_str()),
        ("5", "10", "0")
    );
}

#[test]
fn latency_above_the_warning_range_exits_1() {
    let port = open_port().to_string();
    // No loopback connect takes less than a nanosecond.
    let (code, out) = check(&["tcp", "-H", "127.0.0.1", "-p", &port, "-w", "0.000000001"]);
    assert_eq!(code, 1, "{out}");
    let (text, perf) = parse_line(out.trim());
    assert!(text.starts_with("NETMON TCP WARNING - "), "{text}");
    assert_eq!(perf[0].warn, "0.000000001");
    assert_eq!(perf[0].crit, "");
    // An inside range (@) on the critical side wins over the warning.
    let (code, out) = check(&[
        "tcp",
        "127.0.0.1",
        "-p",
        &port,
        "-w",
        "0.000000001",
        "-c",
        "@0:10",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("NETMON TCP CRITICAL - "), "{out}");
}

#[test]
fn closed_port_exits_2_with_the_reason() {
    let port = closed_port().to_string();
    let (code, out) = check(&["tcp", "127.0.0.1", "-p", &port, "--timeout", "2s"]);
    assert_eq!(code, 2, "{out}");
    let (text, perf) = parse_line(out.trim());
    assert!(
        text.starts_with(&format!("NETMON TCP CRITICAL - 127.0.0.1:{port} refused")),
        "{text}"
    );
    assert!(perf.is_empty(), "no latency for a failed probe: {out}");
}

#[test]
fn bad_arguments_exit_3_on_one_line() {
    let port = open_port().to_string();
    let cases: &[&[&str]] = &[
        &[],
        &["tcp"],
        &["tcp", "127.0.0.1"],
        &["tcpp", "127.0.0.1", "-p", &port],
        &["tcp", "127.0.0.1", "-p", &port, "-w", "20:10"],
        &["tcp", "127.0.0.1", "-p", &port, "--timeout", "soon"],
        &["tcp", "127.0.0.1", "-p", &port, "-o", "max_reed=10"],
        &["tcp", "127.0.0.1", "-p", "99999"],
        &["tcp", "127.0.0.1", "--no-such-flag"],
        &["--config.file", "/nonexistent/netmon.yml"],
    ];
    for args in cases {
        let (code, out) = check(args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert_eq!(out.lines().count(), 1, "{args:?}: {out}");
        assert!(out.starts_with("NETMON UNKNOWN - "), "{args:?}: {out}");
    }
    let (_, out) = check(&["tcpp", "127.0.0.1"]);
    assert!(out.contains("did you mean `tcp`"), "{out}");
    let (_, out) = check(&["tcp", "127.0.0.1", "-p", &port, "-o", "max_reed=10"]);
    assert!(out.contains("did you mean `max_read`"), "{out}");
}

#[test]
fn options_reach_the_probe() {
    // A banner server: `expect_regex` decides between OK and CRITICAL.
    let (l, port) = tcp_listener();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut c in l.incoming().map_while(Result::ok) {
            let _ = c.write_all(b"SSH-2.0-test\r\n");
        }
    });
    let port = port.to_string();
    let (code, out) = check(&["tcp", "127.0.0.1", "-p", &port, "-o", "expect_regex=^SSH-2"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&["tcp", "127.0.0.1", "-p", &port, "-o", "expect_regex=^220 "]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("mismatch"), "{out}");
}

#[test]
fn config_file_checks_every_service_and_exits_with_the_worst() {
    let up = open_port();
    let down = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netmon.yml");
    std::fs::write(
        &file,
        format!("targets:\n  127.0.0.1:\n    services: [\"TCP:{up}\", \"TCP:{down}\"]\n  localhost:\n    services: [\"TCP:{up}\"]\n"),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out) = check(&["--config.file", f]);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NETMON TCP OK - 127.0.0.1:"), "{out}");
    assert!(
        lines[1].starts_with("NETMON TCP CRITICAL - 127.0.0.1:"),
        "{out}"
    );
    let (_, perf) = parse_line(lines[0]);
    assert_eq!(perf[0].label, format!("127.0.0.1 tcp:{up} time"));
    // --host narrows it to the healthy target.
    let (code, out) = check(&["--config.file", f, "--host", "localhost"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn man_page_is_roff_with_every_command() {
    let out = Command::new(crate::support::BIN)
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let roff = String::from_utf8_lossy(&out.stdout);
    assert!(roff.contains(".TH netmon 1"), "{roff}");
    for cmd in ["serve", "check", "console", "completions"] {
        assert!(roff.contains(cmd), "{cmd} missing from the man page");
    }
}

/// `check --help` lists only what check uses: Icinga users read it to write their commands,
/// and the web and scheduling flags of `serve` mean nothing to a single probe.
#[test]
fn check_help_lists_only_the_flags_check_uses() {
    let (code, help) = check(&["--help"]);
    assert_eq!(code, 0);
    for foreign in ["--web.", "--probes.", "--status.", "--shard.", "--site"] {
        assert!(
            !help.contains(foreign),
            "`check --help` shows {foreign}:\n{help}"
        );
    }
    for own in ["--port", "--timeout", "--log.level"] {
        assert!(help.contains(own), "`check --help` lacks {own}:\n{help}");
    }
}
