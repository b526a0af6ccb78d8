//! `type: traceroute` end to end, through a chain of routers the test builds from network
//! namespaces, compared with the reference client (`traceroute`, Debian's package):
//!
//! ```text
//!   src 198.18.1.2 ── r1 ── r2 (drops its time-exceeded) ── r3 ── dst 198.18.4.2
//!                      └──── r4 ───────────────────────────┘
//! ```
//!
//! Every router forwards; r2 is silent (an nftables rule drops the ICMP time-exceeded it
//! sends), so hop 2 loses every probe while the path still reaches the target. Midway the test
//! switches r1's route to the target from r2 to r4, and the route change must be counted and
//! logged with the new path. A second target behind r3 is refused with ICMP host unreachable.
//! netmon runs in the source namespace (`ip netns exec`); the test reads its `/metrics` and
//! API from a thread inside that namespace. Addresses are in 198.18.0.0/15 (RFC 2544's
//! benchmarking range) and exist only in these namespaces.
//!
//! Needs root, `ip`, `nft` and `traceroute`; without them the test says what is missing and
//! passes, unless `NETMON_REQUIRE_PRIVILEGE_TESTS=1` (CI), where it fails.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{BIN, Netmon, metric};

const TARGET: &str = "198.18.4.2";
/// Behind r3, which answers host unreachable for it.
const REFUSED: &str = "198.18.9.9";

fn missing() -> Option<String> {
    match testkit::process::euid() {
        Some(0) => {}
        euid => return Some(format!("not running as root (euid {euid:?})")),
    }
    testkit::process::missing_tool(
        &["ip", "nft", "traceroute"],
        "apt-get install iproute2 nftables traceroute",
    )
}

fn can_run(test: &str) -> bool {
    let Some(why) = missing() else {
        return true;
    };
    testkit::process::not_run("NETMON_REQUIRE_PRIVILEGE_TESTS", test, &why);
    false
}

/// Runs `program args`, panicking with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces of one chain, named after this process and a counter; deleted on drop.
struct Chain {
    prefix: String,
}

const NODES: [&str; 6] = ["src", "r1", "r2", "r3", "r4", "dst"];

impl Chain {
    fn build() -> Chain {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "nmtr{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let chain = Chain { prefix };
        for node in NODES {
            let ns = chain.ns(node);
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
            run("ip", &["netns", "add", &ns]);
            chain.ip(node, &["link", "set", "dev", "lo", "up"]);
            // Strict reverse-path filtering would drop what r4 forwards to r3 (r3 routes the
            // source back through r2), and ICMP rate limits would make losses depend on timing.
            chain.sysctl(node, "net/ipv4/conf/all/rp_filter", "0");
            chain.sysctl(node, "net/ipv4/conf/default/rp_filter", "0");
            chain.sysctl(node, "net/ipv4/icmp_ratelimit", "0");
        }
        // (a, b, subnet): a is 198.18.subnet.1, b is 198.18.subnet.2; each end is named after
        // the node it leads to.
        for (a, b, net) in [
            ("r1", "src", 1),
            ("r1", "r2", 2),
            ("r2", "r3", 3),
            ("r3", "dst", 4),
            ("r1", "r4", 5),
            ("r4", "r3", 6),
        ] {
            let peer_ns = chain.ns(b);
            chain.ip(
                a,
                &[
                    "link", "add", "name", b, "type", "veth", "peer", "name", a, "netns", &peer_ns,
                ],
            );
            chain.ip(a, &["addr", "add", &format!("198.18.{net}.1/24"), "dev", b]);
            chain.ip(b, &["addr", "add", &format!("198.18.{net}.2/24"), "dev", a]);
            chain.ip(a, &["link", "set", "dev", b, "up"]);
            chain.ip(b, &["link", "set", "dev", a, "up"]);
        }
        for router in ["r1", "r2", "r3", "r4"] {
            chain.sysctl(router, "net/ipv4/ip_forward", "1");
        }
        for (node, to, via) in [
            ("src", "default", "198.18.1.1"),
            ("dst", "default", "198.18.4.1"),
            ("r1", "198.18.4.0/24", "198.18.2.2"),
            ("r1", "198.18.9.0/24", "198.18.2.2"),
            ("r2", "198.18.4.0/24", "198.18.3.2"),
            ("r2", "198.18.9.0/24", "198.18.3.2"),
            ("r2", "198.18.1.0/24", "198.18.2.1"),
            ("r3", "198.18.1.0/24", "198.18.3.1"),
            // A route, so the packets reach the forward hook that rejects them.
            ("r3", "198.18.9.0/24", "198.18.4.2"),
            ("r4", "198.18.4.0/24", "198.18.6.2"),
            ("r4", "198.18.1.0/24", "198.18.5.1"),
        ] {
            chain.ip(node, &["route", "add", to, "via", via]);
        }
        chain.nft(
            "r2",
            "table ip netmon {\n chain outgoing {\n  type filter hook output priority 0;\n  icmp type time-exceeded drop\n }\n}\n",
        );
        chain.nft(
            "r3",
            "table ip netmon {\n chain forwarding {\n  type filter hook forward priority 0;\n  ip daddr 198.18.9.0/24 reject with icmp type host-unreachable\n }\n}\n",
        );
        chain
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn ip(&self, node: &str, args: &[&str]) {
        let ns = self.ns(node);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    fn sysctl(&self, node: &str, key: &str, value: &str) {
        let ns = self.ns(node);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sh",
                "-c",
                &format!("echo '{value}' > /proc/sys/{key}"),
            ],
        );
    }

    fn nft(&self, node: &str, ruleset: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ruleset).unwrap();
        let ns = self.ns(node);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "nft",
                "-f",
                &file.path().to_string_lossy(),
            ],
        );
    }

    /// The reference client's hops to `target` from the source: one address per hop, `None`
    /// for a hop that did not answer.
    fn traceroute(&self, target: &str, icmp: bool) -> Vec<Option<String>> {
        let ns = self.ns("src");
        let mut args = vec![
            "netns",
            "exec",
            &ns,
            "traceroute",
            "-n",
            "-q",
            "3",
            "-w",
            "1",
            "-m",
            "8",
        ];
        if icmp {
            args.push("-I");
        }
        args.push(target);
        let out = run("ip", &args);
        out.lines()
            .skip(1)
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .find(|w| *w != "*")
                    .filter(|w| w.parse::<std::net::IpAddr>().is_ok())
                    .map(str::to_string)
            })
            .collect()
    }

    /// Runs `f` on a thread inside the source namespace: the sockets it opens live there.
    fn in_source<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns("src"));
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for node in NODES {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .status();
        }
    }
}

/// The hop addresses of a path as netmon shows it (`1 198.18.1.1 0.061ms, 2 *, ...`).
fn hops_of(path: &str) -> Vec<Option<String>> {
    path.split(", ")
        .map(|hop| {
            hop.split_whitespace()
                .nth(1)
                .filter(|w| *w != "*")
                .map(str::to_string)
        })
        .collect()
}

/// The `path=` field of a log line.
fn path_field(line: &str) -> String {
    line.split("path=")
        .nth(1)
        .and_then(|rest| rest.strip_prefix('"'))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no path in {line}"))
        .to_string()
}

fn addrs(list: &[&str]) -> Vec<Option<String>> {
    list.iter()
        .map(|a| (*a != "*").then(|| a.to_string()))
        .collect()
}

/// The API's `detail` of service `name` on `host`.
fn detail(n: &Netmon, host: &str, name: &str) -> Option<String> {
    let (status, body) = n.get("/api/v1/services");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["services"]
        .as_array()?
        .iter()
        .find(|r| r["host"] == host && r["service"] == name)?["detail"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_path_of_routers_with_a_silent_hop_and_a_route_change_midway() {
    if !can_run("a_path_of_routers_with_a_silent_hop_and_a_route_change_midway") {
        return;
    }
    let chain = Chain::build();
    let before = addrs(&["198.18.1.1", "*", "198.18.3.2", TARGET]);
    let after = addrs(&["198.18.1.1", "198.18.5.2", "198.18.3.2", TARGET]);
    // The reference client sees the same paths netmon must see.
    assert_eq!(chain.traceroute(TARGET, false), before);
    assert_eq!(chain.traceroute(TARGET, true), before);
    // Datagram ICMP sockets for the ICMP probes (root's group admitted in this namespace).
    chain.sysctl("src", "net/ipv4/ping_group_range", "0 2147483647");

    let config = format!(
        "targets:\n  {TARGET}:\n    interval: 1s\n    timeout: 900ms\n    services:\n      \
         - {{ type: traceroute, max_hops: 8, hop_timeout: 300ms }}\n      \
         - {{ type: traceroute, name: traceroute-icmp, method: icmp, max_hops: 8, hop_timeout: 300ms }}\n  \
         {REFUSED}:\n    interval: 1s\n    timeout: 900ms\n    services:\n      \
         - {{ type: traceroute, max_hops: 8, hop_timeout: 300ms }}\n"
    );
    let src = chain.ns("src");
    let r1 = chain.ns("r1");
    let expected = after.clone();
    chain.in_source(move || {
        let after = expected;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &src, BIN]);
        let mut n = Netmon::start_command(command, tempfile::tempdir().unwrap(), &config);
        let wait = Duration::from_secs(15);
        for service in ["traceroute", "traceroute-icmp"] {
            let labels = [("host", TARGET), ("service", service)];
            n.wait_metric("netmon_traceroute_reached", &labels, wait, |v| v == 1.0);
            n.wait_metric("netmon_up", &labels, wait, |v| v == 1.0);
            let text = n.scrape();
            assert_eq!(
                metric(&text, "netmon_traceroute_hops", &labels),
                Some(4.0),
                "{text}"
            );
            for (hop, loss) in [("1", 0.0), ("2", 1.0), ("3", 0.0), ("4", 0.0)] {
                let l = [("host", TARGET), ("service", service), ("hop", hop)];
                assert_eq!(
                    metric(&text, "netmon_traceroute_hop_loss_ratio", &l),
                    Some(loss),
                    "{service} hop {hop}: {text}"
                );
                let rtt = metric(&text, "netmon_traceroute_hop_rtt_seconds", &l);
                if loss == 1.0 {
                    assert_eq!(rtt, None, "a silent hop has no RTT: {text}");
                } else {
                    assert!(
                        rtt.is_some_and(|r| r > 0.0 && r < 0.1),
                        "{service} hop {hop}: {text}"
                    );
                }
            }
            assert!(
                metric(
                    &text,
                    "netmon_traceroute_hop_loss_ratio",
                    &[("service", service), ("hop", "5")]
                )
                .is_none(),
                "nothing past the target: {text}"
            );
            assert_eq!(
                metric(&text, "netmon_traceroute_route_changes_total", &labels),
                Some(0.0),
                "{text}"
            );
            let shown = detail(&n, TARGET, service).expect("the path on the status page");
            assert_eq!(hops_of(&shown), before, "{shown}");
        }
        let first = n.wait_log("route ", Duration::from_secs(2));
        assert_eq!(hops_of(&path_field(&first)), before, "{first}");

        // The target behind r3 is refused: down, reason unreachable, the path up to r3.
        let refused = [("host", REFUSED), ("service", "traceroute")];
        n.wait_metric("netmon_traceroute_reached", &refused, wait, |v| v == 0.0);
        let text = n.scrape();
        assert_eq!(metric(&text, "netmon_up", &refused), Some(0.0), "{text}");
        assert_eq!(
            metric(&text, "netmon_traceroute_hops", &refused),
            Some(4.0),
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                "netmon_probe_failures_total",
                &[("host", REFUSED), ("reason", "unreachable")]
            )
            .map(|v| v >= 1.0),
            Some(true),
            "{text}"
        );
        let down = n.wait_log("first result: DOWN", Duration::from_secs(2));
        assert!(
            down.contains("198.18.9.9 not reached: hop 4 (198.18.3.2) answered host unreachable"),
            "{down}"
        );

        // The route changes: r1 now sends through r4.
        run(
            "ip",
            &[
                "-n",
                &r1,
                "route",
                "replace",
                "198.18.4.0/24",
                "via",
                "198.18.5.2",
            ],
        );
        let changed_at = Instant::now();
        for service in ["traceroute", "traceroute-icmp"] {
            let labels = [("host", TARGET), ("service", service)];
            n.wait_metric(
                "netmon_traceroute_route_changes_total",
                &labels,
                wait,
                |v| v == 1.0,
            );
            let l = [("host", TARGET), ("service", service), ("hop", "2")];
            n.wait_metric("netmon_traceroute_hop_loss_ratio", &l, wait, |v| v == 0.0);
            let shown = detail(&n, TARGET, service).expect("the path on the status page");
            assert_eq!(hops_of(&shown), after, "{shown}");
        }
        let line = n.wait_log("route changed", Duration::from_secs(2));
        assert_eq!(hops_of(&path_field(&line)), after, "{line}");
        assert!(line.contains("hops=4"), "{line}");
        // Later rounds see the same new path: no further change.
        while changed_at.elapsed() < Duration::from_secs(4) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = n.scrape();
        for service in ["traceroute", "traceroute-icmp"] {
            let labels = [("host", TARGET), ("service", service)];
            assert_eq!(
                metric(&text, "netmon_traceroute_route_changes_total", &labels),
                Some(1.0),
                "{text}"
            );
            assert_eq!(
                metric(&text, "netmon_traceroute_reached", &labels),
                Some(1.0)
            );
        }
        let changes = n
            .log()
            .iter()
            .filter(|l| l.contains("route changed"))
            .count();
        assert_eq!(
            changes,
            2,
            "one change per service:\n{}",
            n.log().join("\n")
        );
    });
    assert_eq!(chain.traceroute(TARGET, false), after);
}

#[test]
fn netmon_check_traces_the_path_once() {
    if !can_run("netmon_check_traces_the_path_once") {
        return;
    }
    let chain = Chain::build();
    let src = chain.ns("src");
    let out = Command::new("ip")
        .args(["netns", "exec", &src, BIN, "check", "traceroute", TARGET])
        .args([
            "-o",
            "max_hops=8",
            "-o",
            "hop_timeout=300ms",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("NETMON TRACEROUTE OK - 198.18.4.2 "),
        "{stdout}"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &src, BIN, "check", "traceroute", REFUSED])
        .args([
            "-o",
            "max_hops=8",
            "-o",
            "hop_timeout=300ms",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("answered host unreachable"), "{stdout}");
}
