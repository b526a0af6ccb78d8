//! ICMP next to fping and ping on the same paths: loopback, a namespace whose loopback is down
//! (nothing answers), and a host 5 ms away behind a TUN device (bench/rtt/tun_delay.py) in a
//! namespace the test makes. The verdicts must agree, and the RTTs must be close.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, run};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// netmon's verdict and mean RTT in ms for a round of `count` requests 20 ms apart.
fn netmon(ns: Option<&str>, host: &str, count: u32) -> (bool, Option<f64>, String) {
    let mut c = in_ns(ns, NETMON);
    c.args(["check", "icmp", host, "-o", &format!("count={count}")])
        .args(["-o", "packet_interval=20ms", "-t", "3"]);
    let out = run(c, Duration::from_secs(30));
    let rtt = out
        .stdout
        .split("time=")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| s * 1000.0);
    (out.code == 0, rtt, out.stdout + &out.stderr)
}

/// fping's verdict and mean RTT in ms for the same round.
fn fping(fping: &Path, ns: Option<&str>, host: &str, count: u32) -> (bool, Option<f64>, String) {
    let mut c = in_ns(ns, fping.to_str().expect("a UTF-8 path"));
    c.args([
        "-q",
        "-C",
        &count.to_string(),
        "-p",
        "20",
        "-t",
        "1000",
        host,
    ]);
    let out = run(c, Duration::from_secs(30));
    // "127.0.0.1 : 0.04 0.05 - 0.04": one figure per request, `-` for no reply.
    let rtts: Vec<f64> = out
        .stderr
        .rsplit(" : ")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let mean = (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
    (out.code == 0, mean, out.stderr)
}

fn in_ns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// A network namespace made for one test, deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn new(name: &str) -> Namespace {
        let _ = run(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "del", name]);
                c
            },
            Duration::from_secs(10),
        );
        let mut c = Command::new("ip");
        c.args(["netns", "add", name]);
        let out = run(c, Duration::from_secs(10));
        assert_eq!(out.code, 0, "ip netns add {name}: {}", out.stderr);
        Namespace(name.to_string())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn icmp_verdicts_and_rtts_agree_with_fping_and_ping() {
    let Some([fping_bin, _ping, _ip, _python]) = support::programs(
        "icmp_verdicts_and_rtts_agree_with_fping_and_ping",
        ["fping", "ping", "ip", "python3"],
    ) else {
        return;
    };
    // Loopback: both up, and netmon's RTT (kernel receive stamps) near fping's. The bound is
    // loose on purpose, a busy test machine moves both; bench/rtt/ measures the real ratio.
    let (up, ours, text) = netmon(None, "127.0.0.1", 10);
    let (fup, theirs, ftext) = fping(&fping_bin, None, "127.0.0.1", 10);
    assert!(up && fup, "netmon: {text}\nfping: {ftext}");
    let (ours, theirs) = (ours.expect("netmon's RTT"), theirs.expect("fping's RTT"));
    eprintln!("loopback: netmon {ours:.4} ms, fping {theirs:.4} ms");
    assert!(
        ours < 3.0 * theirs + 0.1,
        "netmon {ours} ms vs fping {theirs} ms"
    );

    // A namespace whose loopback is down: nothing answers, both say so.
    let dark = Namespace::new("netmon-real-dark");
    let (up, _, text) = netmon(Some(&dark.0), "127.0.0.1", 3);
    let (fup, _, ftext) = fping(&fping_bin, Some(&dark.0), "127.0.0.1", 3);
    assert!(!up && !fup, "netmon: {text}\nfping: {ftext}");

    // 5 ms away: the same delay for everyone, so the RTTs must be within a fraction of it.
    let delayed = Namespace::new("netmon-real-tun");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/rtt/tun_delay.py");
    let mut responder = Command::new("ip")
        .args(["netns", "exec", &delayed.0, "python3", script])
        .args(["--delay-ms", "5", "--seconds", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the TUN responder");
    let mut first = String::new();
    BufReader::new(responder.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .expect("read the responder's first line");
    assert_eq!(first.trim(), "ready", "the TUN responder did not start");
    // The Python responder's own scheduling noise is up to a millisecond on a busy machine:
    // the quietest of three rounds per tool is compared.
    let best = |rounds: Vec<(bool, Option<f64>, String)>| {
        let up = rounds.iter().all(|r| r.0);
        let text = rounds
            .iter()
            .map(|r| r.2.clone())
            .collect::<Vec<_>>()
            .join("\n");
        let min = rounds.iter().filter_map(|r| r.1).reduce(f64::min);
        (up, min, text)
    };
    let (up, ours, text) = best(
        (0..3)
            .map(|_| netmon(Some(&delayed.0), "10.77.0.2", 20))
            .collect(),
    );
    let (fup, theirs, ftext) = best(
        (0..3)
            .map(|_| fping(&fping_bin, Some(&delayed.0), "10.77.0.2", 20))
            .collect(),
    );
    let _ = responder.kill();
    let _ = responder.wait();
    assert!(up && fup, "netmon: {text}\nfping: {ftext}");
    let (ours, theirs) = (ours.expect("netmon's RTT"), theirs.expect("fping's RTT"));
    eprintln!("5 ms path: netmon {ours:.4} ms, fping {theirs:.4} ms");
    assert!(
        ours >= 5.0 && theirs >= 5.0,
        "netmon {ours} ms, fping {theirs} ms"
    );
    assert!(
        (ours - theirs).abs() < 1.0,
        "netmon {ours} ms vs fping {theirs} ms on the same 5 ms path"
    );
}
