//! End to end: the real binary monitoring TCP services on loopback, its metrics, its log,
//! reloads by SIGHUP and POST /-/reload, and a clean stop.

use std::time::Duration;

use crate::support::{Netmon, Start, closed_port, metric, series, tcp_listener};

fn config(ports: &[u16]) -> String {
    let services: Vec<String> = ports.iter().map(|p| format!("\"TCP:{p}\"")).collect();
    format!(
        "defaults: {{ interval: 500ms, timeout: 300ms }}\ntargets:\n  127.0.0.1:\n    labels: {{ site: test }}\n    services: [{}]\n",
        services.join(", ")
    )
}

/// Accepts connections in a thread so the backlog never fills.
fn serve_forever(l: std::net::TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
}

#[test]
fn tcp_service_goes_up_then_down_with_a_timestamped_log_line() {
    // Not accepting is fine: the kernel completes handshakes into the backlog.
    let (l, port) = tcp_listener();
    let mut n = Netmon::start(&config(&[port]), &[]);
    let svc = format!("tcp:{port}");
    let labels = [
        ("host", "127.0.0.1"),
        ("protocol", "tcp"),
        ("service", svc.as_str()),
        ("site", "test"),
    ];
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);
    let latency = metric(&n.scrape(), "netmon_latency_seconds", &labels).unwrap();
    assert!(latency > 0.0 && latency < 0.1, "latency {latency}");

    // Closing the listener: the next probe is refused, within interval + timeout.
    drop(l);
    let text = n.wait_metric("netmon_up", &labels, Duration::from_secs(3), |v| v == 0.0);
    assert_eq!(text, 0.0);
    let down = n.wait_log("DOWN", Duration::from_secs(2));
    // RFC 3339 timestamp first: 2026-11-24T22:46:06.608129173Z
    let ts = down.split_whitespace().next().unwrap();
    assert!(time_like(ts), "no RFC 3339 timestamp in {down:?}");
    assert!(down.contains("reason=refused"), "{down}");
    let scrape = n.scrape();
    let refused = metric(
        &scrape,
        "netmon_probe_failures_total",
        &[("service", svc.as_str()), ("reason", "refused")],
    );
    assert!(refused.unwrap_or(0.0) >= 1.0, "{scrape}");
}

fn time_like(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && s.ends_with('Z')
}

#[test]
fn reload_adds_removes_and_keeps_counters() {
    let (a, pa) = tcp_listener();
    let (b, pb) = tcp_listener();
    let (c, pc) = tcp_listener();
    for l in [a, b, c] {
        serve_forever(l);
    }
    let mut n = Netmon::start(&config(&[pa, pb]), &[]);
    let sa = format!("tcp:{pa}");
    let sb = format!("tcp:{pb}");
    let sc = format!("tcp:{pc}");
    n.wait_metric(
        "netmon_probes_total",
        &[("service", &sa)],
        Duration::from_secs(10),
        |v| v >= 2.0,
    );
    n.wait_metric(
        "netmon_up",
        &[("service", &sb)],
        Duration::from_secs(10),
        |v| v == 1.0,
    );

    // SIGHUP: drop b, add c, keep a.
    let before = metric(&n.scrape(), "netmon_probes_total", &[("service", &sa)]).unwrap();
    n.write_config(&config(&[pa, pc]));
    n.signal("HUP");
    n.wait_log("configuration reloaded", Duration::from_secs(5));
    n.wait_metric(
        "netmon_up",
        &[("service", &sc)],
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let text = n.scrape();
    assert!(
        series(&text, "netmon_up", &[("service", &sb)]).is_empty(),
        "removed service still exported:\n{text}"
    );
    assert!(
        !text.contains(&sb),
        "a series of the removed service is left:\n{text}"
    );
    let after = metric(&text, "netmon_probes_total", &[("service", &sa)]).unwrap();
    assert!(
        after >= before,
        "counter of an unchanged service went from {before} to {after}"
    );

    // POST /-/reload with a broken file: refused, old services keep running.
    n.write_config("targets:\n  127.0.0.1:\n    services: [HTPP]\n");
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("did you mean `HTTP`"), "{body}");
    assert_eq!(
        metric(&n.scrape(), "netmon_config_last_reload_successful", &[]),
        Some(0.0)
    );
    n.wait_log("reload failed", Duration::from_secs(2));
    let kept = metric(&n.scrape(), "netmon_probes_total", &[("service", &sa)]).unwrap();
    n.wait_metric(
        "netmon_probes_total",
        &[("service", &sa)],
        Duration::from_secs(5),
        |v| v > kept,
    );

    // A good reload again sets the gauge back to 1.
    n.write_config(&config(&[pa]));
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 removed"), "{body}");
    assert_eq!(
        metric(&n.scrape(), "netmon_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn endpoints_and_landing_page() {
    let port = closed_port();
    let n = Netmon::start(&config(&[port]), &[]);
    assert_eq!(n.get("/-/healthy").0, 200);
    assert_eq!(n.get("/-/ready").0, 200);
    assert_eq!(n.get("/-/reload").0, 405);
    assert_eq!(n.get("/nope").0, 404);
    n.wait_metric(
        "netmon_probes_total",
        &[("protocol", "tcp")],
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    let (status, page) = n.get("/");
    assert_eq!(status, 200);
    assert!(page.contains(&format!("tcp:{port}")), "{page}");
    assert!(page.contains("DOWN") && page.contains("refused"), "{page}");
    let text = n.scrape();
    for family in [
        "netmon_build_info",
        "netmon_config_last_reload_successful",
        "netmon_config_last_reload_success_timestamp_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            series(&text, family, &[]).len() == 1,
            "{family} missing:\n{text}"
        );
    }
}

#[test]
fn sigterm_stops_cleanly() {
    let port = closed_port();
    let mut n = Netmon::start(&config(&[port]), &[]);
    n.signal("TERM");
    assert_eq!(n.wait_exit(Duration::from_secs(10)), Some(0));
    n.wait_log("stopped", Duration::from_secs(1));
}

#[test]
fn invalid_config_at_start_exits_1_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, "targets:\n  a:\n    services: [HTPP, \"TCP\"]\n").unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--config.file")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yml:3:16: unknown protocol `HTPP` (did you mean `HTTP`?)"),
        "{err}"
    );
    assert!(
        err.contains("bad.yml:3:22: tcp service on `a`: a tcp service needs a port"),
        "{err}"
    );
}
