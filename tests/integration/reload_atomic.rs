//! Reloads are all or nothing, and `config check` accepts exactly what `serve` starts: the real
//! binary, its answers, its log and its metrics.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start, metric, series, tcp_listener};

/// Accepts connections in a thread so the backlog never fills.
fn serve_forever(l: std::net::TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
}

fn tcp_config(port: u16) -> String {
    format!(
        "defaults: {{ interval: 300ms, timeout: 200ms }}\ntargets:\n  127.0.0.1:\n    services: [\"TCP:{port}\"]\n"
    )
}

/// A file that loads but whose services cannot all start: an ICMP round that does not fit
/// its timeout and an HTTP header that is not one, next to a healthy TCP service.
fn broken_config(port: u16) -> String {
    format!(
        "targets:\n  127.0.0.1:\n    services:\n      - \"TCP:{port}\"\n      - {{ type: icmp, count: 10, timeout: 1s }}\n      - {{ type: http, port: {port}, headers: {{ \"bad header\": x }} }}\n"
    )
}

#[test]
fn a_reload_that_cannot_start_changes_nothing() {
    let (l, port) = tcp_listener();
    serve_forever(l);
    let (other, other_port) = tcp_listener();
    serve_forever(other);
    let mut n = Netmon::start(&tcp_config(port), &[]);
    let svc = format!("tcp:{port}");
    let labels = [("service", svc.as_str())];
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);

    // The broken file plus a new service: none of it may start.
    let mut broken = broken_config(port);
    broken.push_str(&format!(
        "  localhost:\n    services: [\"TCP:{other_port}\"]\n"
    ));
    n.write_config(&broken);
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("2 errors in configuration"), "{body}");
    assert!(
        body.contains(":5:34: icmp service on `127.0.0.1`: count 10 x packet_interval 200ms"),
        "the round error points at `timeout:`:\n{body}"
    );
    assert!(
        body.contains(":6:9: http service on `127.0.0.1`:") && body.contains("bad header"),
        "the header error points at its service:\n{body}"
    );
    assert!(
        body.contains("nothing changed: the previous configuration is still running"),
        "{body}"
    );
    n.wait_log("reload failed: nothing changed", Duration::from_secs(2));

    // SIGHUP takes the same path.
    n.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while n
        .log()
        .iter()
        .filter(|l| l.contains("reload failed: nothing changed"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", n.log().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }

    // The old service still runs, with its counters, and nothing of the new file appeared.
    let text = n.scrape();
    assert_eq!(
        metric(&text, "netmon_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(metric(&text, "netmon_up", &labels), Some(1.0), "{text}");
    assert_eq!(series(&text, "netmon_up", &[]).len(), 1, "{text}");
    let probes = metric(&text, "netmon_probes_total", &labels).unwrap();
    n.wait_metric(
        "netmon_probes_total",
        &labels,
        Duration::from_secs(5),
        |v| v > probes,
    );
    assert!(
        !n.log().iter().any(|l| l.contains("configuration reloaded")),
        "{}",
        n.log().join("\n")
    );

    // Fixed, it applies, and the gauge says so.
    n.write_config(&tcp_config(other_port));
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        metric(&n.scrape(), "netmon_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

/// A free UDP port on 127.0.0.1 (bound and released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `netmon ARGS...` exits 0; its output is not needed.
fn netmon_succeeds(args: &[&std::ffi::OsStr]) -> bool {
    Command::new(crate::support::BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn echo_answers(port: u16) -> bool {
    let target = format!("127.0.0.1:{port}");
    netmon_succeeds(&["echo", &target, "-c", "1", "-W", "1s"].map(std::ffi::OsStr::new))
}

#[test]
fn a_refused_reload_keeps_the_hosted_echo_server() {
    let (l, port) = tcp_listener();
    serve_forever(l);
    let echo_port = free_udp_port();
    let with_echo = |echo: u16| {
        format!(
            "echo_server: {{ listen: \"127.0.0.1:{echo}\", tcp: false }}\n{}",
            tcp_config(port)
        )
    };
    let mut n = Netmon::start(&with_echo(echo_port), &[]);
    n.wait_log("netmon started", Duration::from_secs(10));
    assert!(echo_answers(echo_port), "{}", n.log().join("\n"));

    // The new echo port is taken: the reload is refused and the old server answers again.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    n.write_config(&with_echo(taken_port));
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("echo server"), "{body}");
    assert!(body.contains("nothing changed"), "{body}");
    assert!(echo_answers(echo_port), "{}", n.log().join("\n"));
    assert_eq!(
        metric(&n.scrape(), "netmon_config_last_reload_successful", &[]),
        Some(0.0)
    );
}

/// Whether `serve` starts with `file`: it logs "netmon started", or exits.
fn serve_starts(file: &Path) -> bool {
    let mut child = Command::new(crate::support::BIN)
        .arg("--config.file")
        .arg(file)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = crate::support::capture(&mut child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        if log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("netmon started"))
        {
            break true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "serve neither started nor exited with {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    started
}

fn config_check_accepts(file: &Path) -> bool {
    netmon_succeeds(&["config".as_ref(), "check".as_ref(), file.as_os_str()])
}

#[test]
fn config_check_accepts_exactly_what_serve_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("tests/testdata/config")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let (l, port) = tcp_listener();
    serve_forever(l);
    // Not in the table: a listen address another process holds. `config check` does not bind
    // ports, since the netmon it checks a file for usually holds them itself.
    for (name, text) in [
        ("tcp.yml", tcp_config(port)),
        ("broken.yml", broken_config(port)),
        (
            "icmp-round.yml",
            "targets:\n  127.0.0.1:\n    services: [{ type: icmp, count: 10, timeout: 1s }]\n"
                .to_string(),
        ),
        (
            "ca-file.yml",
            "targets:\n  localhost:\n    services: [{ type: https, tls: { ca_file: /nonexistent.crt } }]\n"
                .to_string(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    files.sort();
    let mut disagree = Vec::new();
    for f in &files {
        let (check, serve) = (config_check_accepts(f), serve_starts(f));
        if check != serve {
            disagree.push(format!(
                "{}: config check {}, serve {}",
                f.display(),
                if check { "accepts" } else { "refuses" },
                if serve { "starts" } else { "exits" }
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}

#[test]
fn no_config_crashes_a_reload_or_a_start() {
    let (l, port) = tcp_listener();
    serve_forever(l);
    let mut n = Netmon::start(&tcp_config(port), &[]);
    let svc = format!("tcp:{port}");
    // Up before the hostile files, so the check after them means "still up".
    n.wait_metric(
        "netmon_up",
        &[("service", &svc)],
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let deep = |levels: usize| {
        format!(
            "targets:\n  127.0.0.1:\n    services:\n      {}TCP:1\n",
            "- ".repeat(levels)
        )
    };
    for text in [deep(5_000), deep(50_000)] {
        n.write_config(&text);
        let (status, body) = n.post("/-/reload");
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("nested more than 64 levels"), "{body}");
        n.signal("HUP");
    }
    // Above the size limit (sparse, so nothing is written).
    std::fs::File::create(&n.config)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("larger than 16 MiB"), "{body}");
    n.assert_alive_without_panic();
    assert_eq!(
        metric(
            &n.scrape(),
            "netmon_up",
            &[("service", &format!("tcp:{port}"))]
        ),
        Some(1.0)
    );

    // At start-up and in `config check`, the same files are errors, not crashes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yml");
    std::fs::write(&path, deep(50_000)).unwrap();
    for args in [vec!["config", "check"], vec!["--config.file"]] {
        let out = Command::new(crate::support::BIN)
            .args(&args)
            .arg(&path)
            .args(
                ["--web.listen-address", "127.0.0.1:0"]
                    .iter()
                    .take(if args.len() == 1 { 2 } else { 0 }),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nested more than 64 levels"),
            "{args:?}: {err}"
        );
    }
}
