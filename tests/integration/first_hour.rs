//! The operator's first hour, end to end on the real binary: a URL given to `netmon check`,
//! the git revision in `netmon_build_info`, and log lines a person can read (rounded
//! latencies, timestamps of one width).

use std::process::Command;
use std::time::Duration;

use crate::support::{BIN, Netmon, Start, tcp_listener};

/// A netmon probing a listening TCP port every second; the listener is returned to keep it open.
fn netmon_with_a_tcp_service() -> (Netmon, std::net::TcpListener) {
    let (listener, port) = tcp_listener();
    let config =
        format!("targets:\n  127.0.0.1:\n    interval: 1s\n    services: [\"TCP:{port}\"]\n");
    (Netmon::start(&config, &[]), listener)
}

#[test]
fn check_takes_a_url_for_http() {
    let (netmon, _listener) = netmon_with_a_tcp_service();
    let url = format!("http://{}/-/healthy", netmon.addr);
    let out = Command::new(BIN)
        .args(["check", "http", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with(&format!("NETMON HTTP OK - {} time=", netmon.addr)),
        "{stdout}"
    );

    let out = Command::new(BIN)
        .args(["check", "tcp", &url])
        .output()
        .unwrap();
    let port = netmon.addr.rsplit(':').next().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "NETMON UNKNOWN - tcp takes a host, not a URL: write `netmon check tcp 127.0.0.1 --port {port}`"
        )
    );
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn build_info_names_the_commit_and_logs_read_like_numbers() {
    let (mut netmon, _listener) = netmon_with_a_tcp_service();
    let metrics = netmon.scrape();
    let info = metrics
        .lines()
        .find(|l| l.starts_with("netmon_build_info{"))
        .unwrap_or_else(|| panic!("no build_info:\n{metrics}"));
    let revision = info
        .split("revision=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no revision in {info}"));
    let git = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output();
    match git {
        Ok(out) if out.status.success() => {
            let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(
                revision.strip_suffix("-dirty").unwrap_or(revision),
                commit,
                "{info}"
            );
        }
        _ => assert_eq!(revision, "unknown", "{info}"),
    }

    let line = netmon.wait_log("first result: UP", Duration::from_secs(10));
    // 2026-12-02T20:18:16.123456Z, then the level.
    let (stamp, _) = line.split_once(' ').unwrap();
    assert_eq!(stamp.len(), 27, "{line}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "{line}"
    );
    let ms = line
        .split("latency_ms=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no latency_ms in {line}"));
    let decimals = ms.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 3, "{line}");
    assert!(ms.parse::<f64>().is_ok(), "{line}");
}
