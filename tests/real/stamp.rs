//! netmon's STAMP (RFC 8762) against an independent implementation, both ways: stamp-suite
//! (a Rust STAMP sender and reflector from crates.io, `cargo install stamp-suite`).
//!
//! - netmon's `stamp` probe against stamp-suite's stateless and stateful reflectors, directly
//!   and through a relay of the test's own that drops the second packet of every session on
//!   the way there: netmon must read the loss, and tell it was forward loss only from the
//!   stateful reflector's own numbering; stamp-suite's sender through the same relay reads the
//!   same loss.
//! - stamp-suite's sender against `netmon stamp-reflector` and against the reflector `serve`
//!   hosts (`stamp_reflector:`): every reply must be one stamp-suite accepts as the answer to
//!   its packet, with our Error Estimate, timestamps and the TTL its packets arrived with.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, free_port, metric, programs, run};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// Waits (at most 10 s) until `daemon`'s log holds `needle`.
fn wait_log(daemon: &mut Daemon, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains(needle) {
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "no `{needle}` within 10 s; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free UDP port on loopback.
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("its address").port()
}

/// stamp-suite's reflector on `port`, stateful or not.
fn stamp_suite_reflector(bin: &Path, dir: &Path, port: u16, stateful: bool) -> Daemon {
    let mut c = Command::new(bin);
    c.args(["--is-reflector", "--local-addr", "127.0.0.1"])
        .args(["--local-port", &port.to_string()]);
    if stateful {
        c.arg("--stateful-reflector");
    }
    let name = if stateful {
        "stamp-suite-stateful"
    } else {
        "stamp-suite-stateless"
    };
    let mut d = Daemon::start(name, c, &dir.join(format!("{name}.log")), &[]);
    wait_log(&mut d, "STAMP Reflector listening on");
    d
}

/// A UDP relay on loopback in front of `upstream` that drops the second datagram from each
/// client address (one session), and passes everything else both ways. Stops when dropped.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let addr = socket.local_addr().expect("the relay's address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: HashMap<SocketAddr, u64> = HashMap::new();
            let mut last_client = None;
            let mut buf = [0u8; 2048];
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if from == upstream {
                    if let Some(c) = last_client {
                        let _ = socket.send_to(&buf[..n], c);
                    }
                    continue;
                }
                last_client = Some(from);
                let count = seen.entry(from).or_default();
                *count += 1;
                if *count != 2 {
                    let _ = socket.send_to(&buf[..n], upstream);
                }
            }
        });
        Relay {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// stamp-suite's sender: `count` packets 10 ms apart to `port`; its JSON summary and the
/// whole text it printed.
fn stamp_suite_sender(bin: &Path, port: u16, count: u32, extra: &[&str]) -> (Value, String) {
    let mut c = Command::new(bin);
    c.args([
        "--remote-addr",
        "127.0.0.1",
        "--remote-port",
        &port.to_string(),
    ])
    .args(["--count", &count.to_string(), "--send-delay", "10ms"])
    .args(["--timeout", "1", "--output-format", "json"])
    .args(extra);
    let out = run(c, Duration::from_secs(60));
    assert_eq!(
        out.code, 0,
        "stamp-suite sender failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    let summary = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no JSON summary from stamp-suite:\n{}", out.stdout));
    (summary, format!("{}\n{}", out.stdout, out.stderr))
}

fn u64_of(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

fn f64_of(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn find_stamp_suite(test: &str) -> Option<PathBuf> {
    programs(test, ["stamp-suite"]).map(|[p]| p)
}

#[test]
fn our_sender_against_stamp_suite_reflectors() {
    let Some(bin) = find_stamp_suite("stamp: netmon's sender against stamp-suite's reflectors")
    else {
        return;
    };
    let dir = tempdir();
    let (stateless_port, stateful_port) = (free_udp_port(), free_udp_port());
    let _stateless = stamp_suite_reflector(&bin, dir.path(), stateless_port, false);
    let _stateful = stamp_suite_reflector(&bin, dir.path(), stateful_port, true);
    let lossy_stateless = Relay::start(SocketAddr::from(([127, 0, 0, 1], stateless_port)));
    let lossy_stateful = Relay::start(SocketAddr::from(([127, 0, 0, 1], stateful_port)));
    let round = "count: 5, packet_interval: 20ms, reply_timeout: 500ms";
    let config = format!(
        "defaults: {{ interval: 1s, timeout: 900ms }}\ntargets:\n  127.0.0.1:\n    services:\n\
         \x20     - {{ type: stamp, name: direct, port: {stateless_port}, {round} }}\n\
         \x20     - {{ type: stamp, name: direct-stateful, port: {stateful_port}, {round} }}\n\
         \x20     - {{ type: stamp, name: lossy, port: {}, {round} }}\n\
         \x20     - {{ type: stamp, name: lossy-stateful, port: {}, {round} }}\n",
        lossy_stateless.addr.port(),
        lossy_stateful.addr.port(),
    );
    let netmon = crate::support::serve(dir.path(), &config);
    for service in ["direct", "direct-stateful", "lossy", "lossy-stateful"] {
        netmon.wait_metric(
            "netmon_probes_total",
            &[("service", service)],
            Duration::from_secs(20),
            |v| v >= 2.0,
        );
    }
    let text = netmon.scrape();
    let m = |name: &str, service: &str| metric(&text, name, service, None);
    for service in ["direct", "direct-stateful"] {
        assert_eq!(m("netmon_up", service), Some(1.0), "{service}\n{text}");
        assert_eq!(
            m("netmon_packet_loss_ratio", service),
            Some(0.0),
            "{service}\n{text}"
        );
        // One clock on loopback: one-way delays are tiny, whatever their sign.
        for name in [
            "netmon_stamp_forward_delay_seconds",
            "netmon_stamp_backward_delay_seconds",
        ] {
            let v = m(name, service).unwrap_or_else(|| panic!("no {name}\n{text}"));
            assert!(v.abs() < 0.5, "{name}{{service={service}}} = {v}\n{text}");
        }
        let dwell = m("netmon_stamp_reflector_dwell_seconds", service).unwrap();
        assert!((0.0..0.5).contains(&dwell), "{dwell}\n{text}");
        assert!(m("netmon_stamp_reflector_clock_synchronised", service).is_some());
        assert_eq!(m("netmon_stamp_duplicates_total", service), Some(0.0));
    }
    // stamp-suite's stateless reflector copies our numbers: no direction to tell.
    assert_eq!(
        m("netmon_stamp_forward_loss_ratio", "direct"),
        None,
        "{text}"
    );
    // Its stateful one numbers by itself: no loss either way.
    assert_eq!(
        m("netmon_stamp_forward_loss_ratio", "direct-stateful"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        m("netmon_stamp_backward_loss_ratio", "direct-stateful"),
        Some(0.0),
        "{text}"
    );
    // Through the relay, 1 of 5 lost on the way there.
    for service in ["lossy", "lossy-stateful"] {
        assert_eq!(m("netmon_up", service), Some(1.0), "{service}\n{text}");
        let loss = m("netmon_packet_loss_ratio", service).unwrap();
        assert!((loss - 0.2).abs() < 1e-9, "{service}: {loss}\n{text}");
    }
    assert_eq!(
        m("netmon_stamp_forward_loss_ratio", "lossy"),
        None,
        "{text}"
    );
    let forward = m("netmon_stamp_forward_loss_ratio", "lossy-stateful").unwrap();
    assert!((forward - 0.2).abs() < 1e-9, "{forward}\n{text}");
    assert_eq!(
        m("netmon_stamp_backward_loss_ratio", "lossy-stateful"),
        Some(0.0),
        "{text}"
    );
    drop(netmon);

    // stamp-suite's own sender through the same relay reads the same loss.
    let (summary, _) = stamp_suite_sender(&bin, lossy_stateful.addr.port(), 5, &[]);
    assert_eq!(u64_of(&summary, &["packets_sent"]), 5, "{summary}");
    assert_eq!(u64_of(&summary, &["packets_lost"]), 1, "{summary}");
}

/// Checks stamp-suite's verdict on `count` packets answered by a netmon reflector on `port`.
fn stamp_suite_accepts_our_reflector(bin: &Path, port: u16, count: u64) {
    let (summary, _) = stamp_suite_sender(bin, port, count as u32, &[]);
    assert_eq!(u64_of(&summary, &["packets_sent"]), count, "{summary}");
    assert_eq!(u64_of(&summary, &["packets_received"]), count, "{summary}");
    for field in ["unknown_replies", "duplicate_replies", "late_replies"] {
        assert_eq!(
            u64_of(&summary, &["measurements", field]),
            0,
            "{field}: {summary}"
        );
    }
    // Stateless: the reflector's sequence number is the sender's, so the last is count - 1.
    assert_eq!(
        u64_of(&summary, &["measurements", "last_reflector_sequence"]),
        count - 1,
        "{summary}"
    );
    // Our Error Estimate as stamp-suite reads it: not synchronised, 2^-10 s.
    let ours = &summary["owd"]["clock_quality"]["last_reflector"];
    assert_eq!(ours["synchronized"], false, "{summary}");
    assert_eq!(ours["format"], "NTP", "{summary}");
    assert_eq!(ours["scale"], 22, "{summary}");
    assert_eq!(ours["multiplier"], 1, "{summary}");
    // One-way delays from our receive and transmit timestamps: tiny on one clock.
    assert_eq!(u64_of(&summary, &["owd", "samples"]), count, "{summary}");
    for f in ["forward_avg_ms", "reverse_avg_ms"] {
        let v = f64_of(&summary, &["owd", f]);
        assert!(v.abs() < 500.0, "{f} = {v} ms: {summary}");
    }
    // The TTL field: stamp-suite sends with TTL 255 and prints what we say arrived.
    let (_, printed) = stamp_suite_sender(bin, port, 2, &["-R"]);
    assert_eq!(
        printed.matches("ttl=255").count(),
        2,
        "the TTL our reflector reported:\n{printed}"
    );
}

#[test]
fn stamp_suite_sender_against_our_reflectors() {
    let Some(bin) = find_stamp_suite("stamp: stamp-suite's sender against netmon's reflectors")
    else {
        return;
    };
    let dir = tempdir();

    // `netmon stamp-reflector` on its own; its /metrics answers once it reflects.
    let port = free_udp_port();
    let web = free_port();
    let mut c = Command::new(NETMON);
    c.args(["stamp-reflector", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--web.listen-address", &format!("127.0.0.1:{web}")]);
    let reflector = Daemon::start(
        "netmon-stamp-reflector",
        c,
        &dir.path().join("r.log"),
        &[web],
    );
    stamp_suite_accepts_our_reflector(&bin, port, 10);
    let (status, metrics) =
        testkit::exposition::http(&format!("127.0.0.1:{web}"), "GET", "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let reflected = testkit::exposition::metric(
        &metrics,
        "netmon_stamp_reflector_packets_total",
        &[("result", "reflected")],
    );
    // stamp-suite's check plus the two TTL packets.
    assert_eq!(reflected, Some(12.0), "{metrics}");
    drop(reflector);

    // The reflector `serve` hosts.
    let port = free_udp_port();
    let config = format!(
        "stamp_reflector: {{ listen: \"127.0.0.1:{port}\", allow: [127.0.0.0/8] }}\ntargets:\n  127.0.0.1:\n    services:\n      - {{ type: stamp, port: {port} }}\n"
    );
    let netmon = crate::support::serve(dir.path(), &config);
    stamp_suite_accepts_our_reflector(&bin, port, 10);
    netmon.wait_metric(
        "netmon_up",
        &[("service", &format!("stamp:{port}"))],
        Duration::from_secs(20),
        |v| v == 1.0,
    );
}
