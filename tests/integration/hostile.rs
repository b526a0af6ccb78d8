//! Hostile peers: the real `netmon` binary probing servers on 127.0.0.1 that
//! misbehave on purpose, through /metrics. For every peer: the failure `reason` it must give
//! (`netmon_probe_failures_total{reason}`, and `netmon_up 0`), no panic (the process stays up
//! and logs none), and no leak: the open fds (`/proc/PID/fd`) and the tokio runtime's alive
//! tasks (`netmon_runtime_tasks`) after many probe rounds are no higher than after warm-up,
//! beyond a small constant. One netmon per protocol family runs all of its peers at once.
//! Each family also has a well-behaved control peer built by the same code, so a hostile
//! peer fails for the reason it is hostile and not because the fake is broken.
//! docs/hostile.md lists peer → reason → test.

mod peers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start, metric, series};
use peers::{Replies, now};

/// Every probe runs every 500 ms with a 400 ms timeout: short enough for many rounds within
/// seconds, long enough that a loaded CI machine does not turn a quick failure into a timeout.
const TIMING: &str = "defaults: { interval: 500ms, timeout: 400ms }\n";

/// Probe rounds between the two leak samples.
const ROUNDS: f64 = 12.0;

/// How far the fd and task counts may rise between the samples. A leak of one fd or task per
/// probe would rise by at least [`ROUNDS`] per service.
const SLACK: f64 = 3.0;

/// A runtime for the peers: two workers, dropped (with every peer) at the end of the test.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One service in a netmon config: its YAML line (a flow mapping with `name:`) and what it
/// must report.
struct Case {
    name: &'static str,
    yaml: String,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Down, every failure of this reason.
    Down(&'static str),
    /// Up (a control, or a peer whose misbehaviour the protocol tolerates).
    Up,
}

fn case(name: &'static str, yaml: String, expect: Expect) -> Case {
    Case { name, yaml, expect }
}

fn config(cases: &[Case]) -> String {
    let mut c = format!("{TIMING}targets:\n  127.0.0.1:\n    services:\n");
    for k in cases {
        c.push_str(&format!("      - {}\n", k.yaml));
    }
    c
}

fn labels(name: &str) -> [(&str, &str); 2] {
    [("host", "127.0.0.1"), ("service", name)]
}

/// Failure counts of service `name` by reason.
fn failures(text: &str, name: &str) -> BTreeMap<String, f64> {
    series(text, "netmon_probe_failures_total", &labels(name))
        .into_iter()
        .filter_map(|(line, v)| {
            let reason = line.split("reason=\"").nth(1)?.split('"').next()?;
            Some((reason.to_string(), v))
        })
        .collect()
}

fn probes(text: &str, name: &str) -> f64 {
    metric(text, "netmon_probes_total", &labels(name)).unwrap_or(0.0)
}

/// What a leak would grow, sampled once.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: f64,
    tasks: f64,
    rss: f64,
}

fn usage(n: &Netmon) -> Usage {
    let text = n.scrape();
    let tasks = metric(&text, "netmon_runtime_tasks", &[])
        .unwrap_or_else(|| panic!("no netmon_runtime_tasks:\n{text}"));
    Usage {
        fds: n.open_fds() as f64,
        tasks,
        rss: n.rss_bytes() as f64,
    }
}

/// Eight samples over about a probe interval: probes in flight come and go within it.
fn window(n: &Netmon) -> Vec<Usage> {
    (0..8)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(70));
            usage(n)
        })
        .collect()
}

fn max_of(w: &[Usage], f: impl Fn(&Usage) -> f64) -> f64 {
    w.iter().map(f).fold(f64::MIN, f64::max)
}

fn min_of(w: &[Usage], f: impl Fn(&Usage) -> f64) -> f64 {
    w.iter().map(f).fold(f64::MAX, f64::min)
}

/// Waits until every service has run `want(name)` probes.
fn wait_probes(n: &Netmon, cases: &[Case], want: impl Fn(&str) -> f64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = n.scrape();
        let behind: Vec<&str> = cases
            .iter()
            .filter(|k| probes(&text, k.name) < want(k.name))
            .map(|k| k.name)
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "services {behind:?} did not probe often enough:\n{text}\nlog:\n{}",
            n.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `cases` in one netmon: warm-up, a first usage window, [`ROUNDS`] more probes of each
/// service, a second window; then checks reasons, liveness and usage. `rss_slack` (bytes)
/// also bounds the resident memory's growth.
fn run(cases: &[Case], rss_slack: Option<f64>) -> Netmon {
    let mut n = Netmon::start(&config(cases), &[]);
    wait_probes(&n, cases, |_| 3.0);
    let before = window(&n);
    let text = n.scrape();
    let base: BTreeMap<&str, f64> = cases
        .iter()
        .map(|k| (k.name, probes(&text, k.name)))
        .collect();
    wait_probes(&n, cases, |name| base[name] + ROUNDS);
    let after = window(&n);
    let text = n.scrape();
    let log = || n.log().join("\n");

    for k in cases {
        let up = metric(&text, "netmon_up", &labels(k.name));
        let fails = failures(&text, k.name);
        match k.expect {
            Expect::Down(reason) => {
                assert_eq!(up, Some(0.0), "{} should be down:\n{text}", k.name);
                let total: f64 = fails.values().sum();
                let ours = fails.get(reason).copied().unwrap_or(0.0);
                assert!(
                    ours >= ROUNDS && ours == total,
                    "{}: every failure should be reason {reason}, got {fails:?}\n{text}\nlog:\n{}",
                    k.name,
                    log()
                );
            }
            Expect::Up => {
                assert_eq!(
                    up,
                    Some(1.0),
                    "{} should be up:\n{text}\nlog:\n{}",
                    k.name,
                    log()
                );
            }
        }
    }

    eprintln!(
        "{:?}: usage after warm-up {before:?}\nafter {ROUNDS} more rounds {after:?}",
        cases.iter().map(|k| k.name).collect::<Vec<_>>()
    );
    let grew = |f: &dyn Fn(&Usage) -> f64| min_of(&after, f) - max_of(&before, f);
    assert!(
        grew(&|u| u.fds) <= SLACK,
        "open fds grew: before {before:?}\nafter {after:?}\n{}",
        fd_list(&n)
    );
    assert!(
        grew(&|u| u.tasks) <= SLACK,
        "runtime tasks grew: before {before:?}\nafter {after:?}"
    );
    if let Some(slack) = rss_slack {
        assert!(
            grew(&|u| u.rss) <= slack,
            "resident memory grew by more than {slack} bytes: before {before:?}\nafter {after:?}"
        );
    }
    n.assert_alive_without_panic();
    n
}

/// What netmon's fds point at, for a failure message.
fn fd_list(n: &Netmon) -> String {
    let dir = format!("/proc/{}/fd", n.pid());
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_dir(&dir) {
        for e in d.flatten() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            out.push(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            ));
        }
    }
    out.join("\n")
}

/// The message of the last DOWN log line of service `name` (the runner logs the first result
/// and every change; the span names the service).
fn down_line(n: &Netmon, name: &str) -> String {
    n.log()
        .into_iter()
        .rev()
        .find(|l| l.contains("DOWN") && l.contains(&format!("service={name}")))
        .unwrap_or_else(|| panic!("no DOWN line for {name}:\n{}", n.log().join("\n")))
}

#[test]
fn http_peers_that_stall_flood_or_loop() {
    let rt = runtime();
    let silent = rt.block_on(peers::tcp_peer(peers::silent));
    let trickle = rt.block_on(peers::tcp_peer(peers::trickle));
    let endless = rt.block_on(peers::tcp_peer(peers::endless_body));
    let redirects = rt.block_on(peers::tcp_peer(peers::redirects));
    let garbage = rt.block_on(peers::tcp_peer(peers::garbage));
    let headers = rt.block_on(peers::tcp_peer(peers::endless_headers));
    let short = rt.block_on(peers::tcp_peer(peers::short_body));
    let http = |name: &str, port: u16, extra: &str| {
        format!("{{ type: http, name: {name}, port: {port}{extra} }}")
    };
    let cases = [
        case(
            "never-answers",
            http("never-answers", silent, ""),
            Expect::Down("timeout"),
        ),
        case(
            "trickle",
            http("trickle", trickle, ""),
            Expect::Down("timeout"),
        ),
        // A body regex makes the probe keep the bytes: memory is still bounded by max_body.
        case(
            "endless-body",
            http("endless-body", endless, ", body_regex: 'never-there'"),
            Expect::Down("body"),
        ),
        case(
            "redirect-loop",
            http("redirect-loop", redirects, ", path: /loop"),
            Expect::Down("status"),
        ),
        case(
            "redirect-chain",
            http("redirect-chain", redirects, ", path: /chain/0"),
            Expect::Down("status"),
        ),
        case(
            "not-http",
            http("not-http", garbage, ""),
            Expect::Down("protocol"),
        ),
        case(
            "endless-headers",
            http("endless-headers", headers, ""),
            Expect::Down("protocol"),
        ),
        case(
            "short-body",
            http("short-body", short, ""),
            Expect::Down("body"),
        ),
        // The control: the redirect peer's loop, but with redirects not followed.
        case(
            "redirect-control",
            http(
                "redirect-control",
                redirects,
                ", path: /loop, follow_redirects: false",
            ),
            Expect::Up,
        ),
    ];
    let n = run(&cases, Some(16.0 * 1024.0 * 1024.0));
    let text = n.scrape();
    let loop_msg = down_line(&n, "redirect-loop");
    assert!(loop_msg.contains("loop"), "{loop_msg}");
    assert!(down_line(&n, "redirect-chain").contains("redirect"));
    assert!(down_line(&n, "endless-body").contains("max_body"));
    assert_eq!(
        metric(&text, "netmon_http_status_code", &labels("endless-body")),
        Some(200.0),
        "{text}"
    );
}

#[test]
fn tls_peers_with_bad_certificates() {
    let rt = runtime();
    let pki = peers::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let expired = rt.block_on(peers::tls_peer(pki.expired.clone()));
    let wrong_name = rt.block_on(peers::tls_peer(pki.wrong_name.clone()));
    let self_signed = rt.block_on(peers::tls_peer(pki.self_signed.clone()));
    let good = rt.block_on(peers::tls_peer(pki.good.clone()));
    let plain = rt.block_on(peers::tcp_peer(peers::plain_http));
    let silent = rt.block_on(peers::tcp_peer(peers::silent));
    let https = |name: &str, port: u16| {
        format!(
            "{{ type: https, name: {name}, port: {port}, tls: {{ ca_file: '{}' }} }}",
            ca.display()
        )
    };
    let cases = [
        case("expired", https("expired", expired), Expect::Down("tls")),
        case(
            "wrong-name",
            https("wrong-name", wrong_name),
            Expect::Down("tls"),
        ),
        case(
            "self-signed",
            https("self-signed", self_signed),
            Expect::Down("tls"),
        ),
        case(
            "plain-http",
            https("plain-http", plain),
            Expect::Down("tls"),
        ),
        case(
            "no-server-hello",
            https("no-server-hello", silent),
            Expect::Down("timeout"),
        ),
        case(
            "good-certificate",
            https("good-certificate", good),
            Expect::Up,
        ),
    ];
    let n = run(&cases, None);
    let expect = [
        ("expired", "certificate expired at 2020-01-01t00:00:00z"),
        (
            "wrong-name",
            "certificate is for wrong.example, not 127.0.0.1",
        ),
        ("self-signed", "self-signed certificate not in ca_file"),
        ("plain-http", "corrupt message"),
    ];
    for (name, word) in expect {
        let line = down_line(&n, name).to_lowercase();
        assert!(line.contains(word), "{name}: no {word:?} in {line}");
    }
    // The expired certificate's date is exported even though verification failed.
    let text = n.scrape();
    let not_after = metric(
        &text,
        "netmon_tls_cert_not_after_timestamp_seconds",
        &labels("expired"),
    );
    assert_eq!(not_after, Some(1_577_836_800.0), "{text}");
}

#[test]
fn dns_peers_truncating_garbling_or_answering_another_id() {
    let rt = runtime();
    let group = peers::Group::default();
    let peer = |other: bool, f: fn(u64, &[u8]) -> Replies| peers::udp_peer(&group, other, f);
    let truncated = peer(false, |_, q| now(peers::dns_response(q, true)));
    let garbage = peer(false, |_, _| now(b"\xde\xad\xbe\xef\x00".to_vec()));
    let wrong_id = peer(false, |_, q| {
        let mut r = peers::dns_response(q, false);
        r[0] ^= 0xff;
        now(r)
    });
    let wrong_id_flood = peer(false, |_, q| {
        let mut r = peers::dns_response(q, false);
        r[0] ^= 0xff;
        vec![(Duration::ZERO, r); 200]
    });
    let other_port = peer(true, |_, q| now(peers::dns_response(q, false)));
    let good = peer(false, |_, q| now(peers::dns_response(q, false)));
    let reflector = peer(false, |_, q| now(q.to_vec()));
    let tcp_cut = rt.block_on(peers::tcp_peer(peers::dns_tcp_cut));
    let tcp_flood = rt.block_on(peers::tcp_peer(peers::dns_tcp_wrong_id_flood));
    let dns = |name: &str, port: u16| format!("{{ type: dns, name: {name}, port: {port} }}");
    let dns_tcp = |name: &str, port: u16| {
        format!("{{ type: dns, name: {name}, port: {port}, transport: tcp }}")
    };
    let cases = [
        case(
            "truncated",
            dns("truncated", truncated),
            Expect::Down("protocol"),
        ),
        case("garbage", dns("garbage", garbage), Expect::Down("protocol")),
        case(
            "wrong-id",
            dns("wrong-id", wrong_id),
            Expect::Down("timeout"),
        ),
        case(
            "wrong-id-flood",
            dns("wrong-id-flood", wrong_id_flood),
            Expect::Down("timeout"),
        ),
        case(
            "other-port",
            dns("other-port", other_port),
            Expect::Down("timeout"),
        ),
        case(
            "reflector",
            dns("reflector", reflector),
            Expect::Down("protocol"),
        ),
        case(
            "tcp-cut",
            dns_tcp("tcp-cut", tcp_cut),
            Expect::Down("protocol"),
        ),
        case(
            "tcp-wrong-id-flood",
            dns_tcp("tcp-wrong-id-flood", tcp_flood),
            Expect::Down("timeout"),
        ),
        case("good-answer", dns("good-answer", good), Expect::Up),
    ];
    let n = run(&cases, None);
    assert!(down_line(&n, "truncated").contains("transport: tcp"));
    let text = n.scrape();
    // The truncated answer is a response: its rcode is exported; garbage is none.
    assert_eq!(
        metric(&text, "netmon_dns_rcode", &labels("truncated")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netmon_dns_rcode", &labels("garbage")),
        Some(-1.0),
        "{text}"
    );
}

#[test]
fn ntp_peers_short_kiss_of_death_and_bad_strata() {
    let group = peers::Group::default();
    let peer = |other: bool, f: fn(u64, &[u8]) -> Replies| peers::udp_peer(&group, other, f);
    let short = peer(false, |_, q| {
        now(peers::ntp_reply(q, 0, 2, [127, 0, 0, 1])[..20].to_vec())
    });
    let kiss = peer(false, |_, q| now(peers::ntp_reply(q, 3, 0, *b"RATE")));
    let stratum0 = peer(false, |_, q| now(peers::ntp_reply(q, 0, 0, [0; 4])));
    let stratum16 = peer(false, |_, q| {
        now(peers::ntp_reply(q, 0, 16, [127, 0, 0, 1]))
    });
    let other_port = peer(true, |_, q| now(peers::ntp_reply(q, 0, 2, [127, 0, 0, 1])));
    let other_request = peer(false, |_, q| {
        let mut r = peers::ntp_reply(q, 0, 2, [127, 0, 0, 1]);
        r[31] ^= 0xff;
        now(r)
    });
    let version_2 = peer(false, |_, q| {
        let mut r = peers::ntp_reply(q, 0, 2, [127, 0, 0, 1]);
        r[0] = (2 << 3) | 4;
        now(r)
    });
    let good = peer(false, |_, q| now(peers::ntp_reply(q, 0, 2, [127, 0, 0, 1])));
    let ntp = |name: &str, port: u16| format!("{{ type: ntp, name: {name}, port: {port} }}");
    let cases = [
        case(
            "short-packet",
            ntp("short-packet", short),
            Expect::Down("protocol"),
        ),
        case(
            "kiss-of-death",
            ntp("kiss-of-death", kiss),
            Expect::Down("status"),
        ),
        case(
            "stratum-0",
            ntp("stratum-0", stratum0),
            Expect::Down("status"),
        ),
        case(
            "stratum-16",
            ntp("stratum-16", stratum16),
            Expect::Down("status"),
        ),
        case(
            "other-port",
            ntp("other-port", other_port),
            Expect::Down("timeout"),
        ),
        case(
            "answers-another-request",
            ntp("answers-another-request", other_request),
            Expect::Down("protocol"),
        ),
        case(
            "version-2",
            ntp("version-2", version_2),
            Expect::Down("protocol"),
        ),
        case("good-server", ntp("good-server", good), Expect::Up),
    ];
    let n = run(&cases, None);
    assert!(down_line(&n, "kiss-of-death").contains("kiss-of-death RATE"));
    assert!(down_line(&n, "stratum-0").contains("not synchronised (stratum 0 without a kiss code"));
    assert!(down_line(&n, "stratum-16").contains("not synchronised (stratum 16)"));
    let text = n.scrape();
    // Stratum 0 without a kiss code is an unsynchronised server, whose stratum is unknown.
    for (name, stratum) in [
        ("kiss-of-death", 0.0),
        ("stratum-0", -1.0),
        ("stratum-16", -1.0),
    ] {
        assert_eq!(
            metric(&text, "netmon_ntp_stratum", &labels(name)),
            Some(stratum),
            "{name}:\n{text}"
        );
    }
    assert_eq!(
        metric(&text, "netmon_ntp_stratum", &labels("good-server")),
        Some(2.0)
    );
}

#[test]
fn udp_and_echo_peers_replying_from_another_port_or_mangling() {
    let group = peers::Group::default();
    let peer = |other: bool, f: fn(u64, &[u8]) -> Replies| peers::udp_peer(&group, other, f);
    let pong = |_: u64, _: &[u8]| now(b"pong".to_vec());
    let udp_other = peer(true, pong);
    let udp_good = peer(false, pong);
    // Echo probes send 3 messages 20 ms apart per round, so datagram n is message n % 3.
    let corrupt = peer(false, |_, d| {
        let mut d = d.to_vec();
        if let Some(last) = d.last_mut() {
            *last ^= 0x5a;
        }
        now(d)
    });
    let truncate = peer(false, |_, d| now(d[..d.len().saturating_sub(8)].to_vec()));
    let padded = peer(false, |_, d| {
        let mut d = d.to_vec();
        d.extend_from_slice(&[0u8; 100]);
        now(d)
    });
    let duplicate = peer(false, |_, d| {
        vec![(Duration::ZERO, d.to_vec()), (Duration::ZERO, d.to_vec())]
    });
    let delay = peer(false, |_, d| vec![(Duration::from_millis(250), d.to_vec())]);
    let reorder = peer(false, |n, d| {
        // The first message of each round comes back after the second.
        let wait = if n % 3 == 0 { 60 } else { 0 };
        vec![(Duration::from_millis(wait), d.to_vec())]
    });
    let lossy = peer(false, |n, d| {
        if n % 3 == 0 {
            now(d.to_vec())
        } else {
            Vec::new()
        }
    });
    let echo_other = peer(true, |_, d| now(d.to_vec()));
    let echo_good = peer(false, |_, d| now(d.to_vec()));
    let udp = |name: &str, port: u16| {
        format!("{{ type: udp, name: {name}, port: {port}, send: ping, expect_regex: '^pong$' }}")
    };
    let echo = |name: &str, port: u16, extra: &str| {
        format!(
            "{{ type: echo, name: {name}, port: {port}, count: 3, packet_interval: 20ms, reply_timeout: 150ms{extra} }}"
        )
    };
    let cases = [
        case(
            "udp-other-port",
            udp("udp-other-port", udp_other),
            Expect::Down("timeout"),
        ),
        case("udp-good", udp("udp-good", udp_good), Expect::Up),
        case(
            "echo-corrupt",
            echo("echo-corrupt", corrupt, ""),
            Expect::Down("mismatch"),
        ),
        case(
            "echo-truncate",
            echo("echo-truncate", truncate, ""),
            Expect::Down("mismatch"),
        ),
        case(
            "echo-padded",
            echo("echo-padded", padded, ""),
            Expect::Down("mismatch"),
        ),
        case(
            "echo-duplicate",
            echo("echo-duplicate", duplicate, ""),
            Expect::Up,
        ),
        case(
            "echo-delay",
            echo("echo-delay", delay, ""),
            Expect::Down("timeout"),
        ),
        case(
            "echo-reorder",
            echo("echo-reorder", reorder, ""),
            Expect::Up,
        ),
        case(
            "echo-lossy",
            echo("echo-lossy", lossy, ", max_loss: 0.2"),
            Expect::Down("loss"),
        ),
        case(
            "echo-other-port",
            echo("echo-other-port", echo_other, ""),
            Expect::Down("timeout"),
        ),
        case("echo-good", echo("echo-good", echo_good, ""), Expect::Up),
    ];
    let n = run(&cases, None);
    let text = n.scrape();
    // Duplicates are not counted as replies: never more received than sent.
    for name in ["echo-duplicate", "echo-reorder", "echo-good"] {
        let sent = metric(&text, "netmon_packets_sent_total", &labels(name)).unwrap();
        let got = metric(&text, "netmon_packets_received_total", &labels(name)).unwrap();
        assert!(
            got <= sent && got > 0.0,
            "{name}: {got} received of {sent}:\n{text}"
        );
        assert_eq!(
            metric(&text, "netmon_packet_loss_ratio", &labels(name)),
            Some(0.0),
            "{name}:\n{text}"
        );
    }
    // Late replies count as lost.
    assert_eq!(
        metric(&text, "netmon_packet_loss_ratio", &labels("echo-delay")),
        Some(1.0),
        "{text}"
    );
    assert!(down_line(&n, "echo-corrupt").contains("corrupted"));
}

/// Whether this process may open a raw ICMPv4 socket to craft replies with.
fn raw_icmp() -> Option<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipped: no raw ICMP socket to craft foreign replies with ({e})");
            None
        }
    }
}

/// netmon pings 127.0.0.1 while this test sprays ICMP at 127.0.0.1 from a raw socket: echo
/// replies with foreign identifiers and every sequence number, truncated messages, bad
/// checksums and destination-unreachable errors quoting garbage. With a raw socket (netmon as
/// root) netmon's receive loop sees all of it; with a datagram socket the kernel filters it.
/// Either way: still up from the kernel's own replies, never more replies counted than sent,
/// no panic, no leak. (The exact matching rules are unit tests in src/probe/icmp.rs.)
#[test]
fn icmp_foreign_replies_are_ignored() {
    let Some(crafter) = raw_icmp() else {
        return;
    };
    let to: socket2::SockAddr = std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into();
    let stop = Arc::new(AtomicBool::new(false));
    let cases = [case(
        "ping",
        "{ type: icmp, name: ping, count: 3, packet_interval: 20ms }".to_string(),
        Expect::Up,
    )];
    let sprayer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0u32;
            // Bounded: 20,000 messages or 60 s, 4 every millisecond at most.
            while !stop.load(Ordering::Relaxed)
                && sent < 20_000
                && started.elapsed() < Duration::from_secs(60)
            {
                let seq = (sent % 65_536) as u16;
                let ident = 0xbeef ^ (sent as u16).rotate_left(7);
                let payload = [0xa5u8; 56];
                let mut bad_sum = testkit::icmp::message(0, ident, seq, &payload);
                bad_sum[2] ^= 0xff;
                let mut unreachable: Vec<u8> = vec![3, 3, 0, 0, 0, 0, 0, 0];
                unreachable.extend_from_slice(&[0x45, 0xff, 0xff]);
                let sum = testkit::icmp::checksum(&unreachable);
                unreachable[2..4].copy_from_slice(&sum.to_be_bytes());
                for m in [
                    testkit::icmp::message(0, ident, seq, &payload),
                    testkit::icmp::message(0, ident, seq, &[]),
                    bad_sum,
                    unreachable,
                    vec![0, 0],
                ] {
                    let _ = crafter.send_to(&m, &to);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    let n = run(&cases, None);
    stop.store(true, Ordering::Relaxed);
    let sprayed = sprayer.join().unwrap();
    // Say which socket netmon had: only a raw one sees the spray.
    let opened = n
        .log()
        .into_iter()
        .find(|l| l.contains("icmp socket opened"))
        .unwrap_or_default();
    eprintln!("netmon: {opened}");
    assert!(sprayed > 100, "only {sprayed} crafted messages sent");
    let text = n.scrape();
    let sent = metric(&text, "netmon_packets_sent_total", &labels("ping")).unwrap();
    let got = metric(&text, "netmon_packets_received_total", &labels("ping")).unwrap();
    assert!(
        got <= sent && got > 0.0,
        "{got} replies counted for {sent} requests:\n{text}"
    );
    assert!(
        failures(&text, "ping").values().all(|v| *v == 0.0),
        "{text}"
    );
}
