//! `type: traceroute` end to end, through a chain of routers the test builds from network
//! namespaces, compared with the reference client (`traceroute`, Debian's package):
//!
//! ```text
//!   src ── r1 ── r2 (drops its time-exceeded) ── r3 ── dst
//!           └──── r4 ────────────────────────────┘
//! ```
//!
//! Every router forwards IPv4 and IPv6; r2 is silent (an nftables rule drops the ICMP and
//! ICMPv6 time-exceeded it sends), so hop 2 loses every probe while the path still reaches the
//! target. Midway the test switches r1's route to the target from r2 to r4, and the route change
//! must be counted and logged with the new path. An address behind r3 is refused with ICMP host
//! (ICMPv6 address) unreachable. netmon runs in the source namespace (`ip netns exec`); the
//! test reads its `/metrics` and API from a thread inside that namespace. `netmon check` runs
//! there as `nobody` with no capability: UDP probes need none. Addresses are in 198.18.0.0/15
//! (RFC 2544's benchmarking range) and 2001:db8::/32 (documentation) and exist only in these
//! namespaces.
//!
//! Needs root, `ip`, `nft`, `traceroute` and `setpriv`; without them the tests say what is
//! missing and pass, unless `NETMON_REQUIRE_PRIVILEGE_TESTS=1` (CI), where they fail.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{BIN, Netmon, metric};

/// An address of the chain: `host` on subnet `net` (198.18.net.host or 2001:db8:net::host).
fn at(v6: bool, net: u8, host: u8) -> String {
    if v6 {
        format!("2001:db8:{net}::{host}")
    } else {
        format!("198.18.{net}.{host}")
    }
}

fn missing() -> Option<String> {
    match testkit::process::euid() {
        Some(0) => {}
        euid => return Some(format!("not running as root (euid {euid:?})")),
    }
    testkit::process::missing_tool(
        &["ip", "nft", "traceroute", "setpriv"],
        "apt-get install iproute2 nftables traceroute util-linux",
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
            chain.sysctl(node, "net/ipv6/icmp/ratelimit", "0");
            // Neighbour discovery waits for link-local addresses to finish duplicate address
            // detection; these links are new and private, so there is nothing to detect.
            chain.sysctl(node, "net/ipv6/conf/all/accept_dad", "0");
            chain.sysctl(node, "net/ipv6/conf/default/accept_dad", "0");
        }
        // (a, b, subnet): a is 198.18.subnet.1 and 2001:db8:subnet::1, b is .2 and ::2; each
        // end is named after the node it leads to.
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
            for (node, dev, host) in [(a, b, 1), (b, a, 2)] {
                chain.ip(
                    node,
                    &[
                        "addr",
                        "add",
                        &format!("198.18.{net}.{host}/24"),
                        "dev",
                        dev,
                    ],
                );
                // No duplicate address detection: the address is usable at once.
                chain.ip(
                    node,
                    &[
                        "addr",
                        "add",
                        &format!("2001:db8:{net}::{host}/64"),
                        "dev",
                        dev,
                        "nodad",
                    ],
                );
                chain.ip(node, &["link", "set", "dev", dev, "up"]);
            }
        }
        for router in ["r1", "r2", "r3", "r4"] {
            chain.sysctl(router, "net/ipv4/ip_forward", "1");
            chain.sysctl(router, "net/ipv6/conf/all/forwarding", "1");
        }
        // (node, destination subnet or 0 for the default route, via subnet, via host).
        for (node, to, net, host) in [
            ("src", 0, 1, 1),
            ("dst", 0, 4, 1),
            ("r1", 4, 2, 2),
            ("r1", 9, 2, 2),
            ("r2", 4, 3, 2),
            ("r2", 9, 3, 2),
            ("r2", 1, 2, 1),
            ("r3", 1, 3, 1),
            // A route, so the packets reach the forward hook that rejects them.
            ("r3", 9, 4, 2),
            ("r4", 4, 6, 2),
            ("r4", 1, 5, 1),
        ] {
            let (to4, to6) = match to {
                0 => ("default".to_string(), "default".to_string()),
                n => (format!("198.18.{n}.0/24"), format!("2001:db8:{n}::/64")),
            };
            chain.ip(
                node,
                &["route", "add", &to4, "via", &format!("198.18.{net}.{host}")],
            );
            chain.ip(
                node,
                &[
                    "-6",
                    "route",
                    "add",
                    &to6,
                    "via",
                    &format!("2001:db8:{net}::{host}"),
                ],
            );
        }
        chain.nft(
            "r2",
            "table inet netmon {\n chain outgoing {\n  type filter hook output priority 0;\n  icmp type time-exceeded drop\n  icmpv6 type time-exceeded drop\n }\n}\n",
        );
        chain.nft(
            "r3",
            "table inet netmon {\n chain forwarding {\n  type filter hook forward priority 0;\n  ip daddr 198.18.9.0/24 reject with icmp type host-unreachable\n  ip6 daddr 2001:db8:9::/64 reject with icmpv6 type addr-unreachable\n }\n}\n",
        );
        chain
    }

    /// Sends r1's traffic for the target through r4 instead of r2.
    fn reroute(&self) {
        self.ip(
            "r1",
            &["route", "replace", "198.18.4.0/24", "via", "198.18.5.2"],
        );
        self.ip(
            "r1",
            &[
                "-6",
                "route",
                "replace",
                "2001:db8:4::/64",
                "via",
                "2001:db8:5::2",
            ],
        );
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
    fn in_source<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns("src"));
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let fd = std::fs::File::open(&path).unwrap();
                    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    f()
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
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
fn an_ipv4_path_with_a_silent_hop_and_a_route_change_midway() {
    if can_run("an_ipv4_path_with_a_silent_hop_and_a_route_change_midway") {
        trace_the_chain(false);
    }
}

#[test]
fn an_ipv6_path_with_a_silent_hop_and_a_route_change_midway() {
    if can_run("an_ipv6_path_with_a_silent_hop_and_a_route_change_midway") {
        trace_the_chain(true);
    }
}

/// netmon in the source namespace traces the target over UDP and ICMP and a refused address
/// over UDP; the route changes midway.
fn trace_the_chain(v6: bool) {
    let chain = Chain::build();
    let target = at(v6, 4, 2);
    let refused = at(v6, 9, 9);
    let hop = |net, host| Some(at(v6, net, host));
    let before = vec![hop(1, 1), None, hop(3, 2), Some(target.clone())];
    // r3 answers IPv4 from the address facing the source's way back (r2's link, whichever way
    // the probe came), IPv6 from the address the probe came in on (r4's link after the change).
    let r3_after = if v6 { hop(6, 2) } else { hop(3, 2) };
    let after = vec![hop(1, 1), hop(5, 2), r3_after, Some(target.clone())];
    // The reference client sees the same paths netmon must see.
    assert_eq!(chain.traceroute(&target, false), before);
    assert_eq!(chain.traceroute(&target, true), before);
    // Datagram ICMP sockets for the ICMP probes (root's group admitted in this namespace; the
    // setting covers IPv6 too).
    chain.sysctl("src", "net/ipv4/ping_group_range", "0 2147483647");

    let service = |name: &str, method: &str| {
        format!(
            "      - {{ type: traceroute, name: {name}, method: {method}, max_hops: 8, hop_timeout: 300ms }}\n"
        )
    };
    let config = format!(
        "defaults: {{ interval: 1s, timeout: 900ms }}\ntargets:\n  \"{target}\":\n    services:\n{}{}  \"{refused}\":\n    services:\n{}",
        service("traceroute", "udp"),
        service("traceroute-icmp", "icmp"),
        service("traceroute", "udp"),
    );
    let services = ["traceroute", "traceroute-icmp"];
    let src = chain.ns("src");
    chain.in_source(|| {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &src, BIN]);
        let mut n = Netmon::start_command(command, tempfile::tempdir().unwrap(), &config);
        let wait = Duration::from_secs(15);
        for service in services {
            let labels = [("host", target.as_str()), ("service", service)];
            n.wait_metric("netmon_traceroute_reached", &labels, wait, |v| v == 1.0);
            n.wait_metric("netmon_up", &labels, wait, |v| v == 1.0);
            let text = n.scrape();
            assert_eq!(
                metric(&text, "netmon_traceroute_hops", &labels),
                Some(4.0),
                "{text}"
            );
            for (hop, loss) in [("1", 0.0), ("2", 1.0), ("3", 0.0), ("4", 0.0)] {
                let l = [
                    ("host", target.as_str()),
                    ("service", service),
                    ("hop", hop),
                ];
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
            let past = [
                ("host", target.as_str()),
                ("service", service),
                ("hop", "5"),
            ];
            assert_eq!(
                metric(&text, "netmon_traceroute_hop_loss_ratio", &past),
                None,
                "nothing past the target: {text}"
            );
            assert_eq!(
                metric(&text, "netmon_traceroute_route_changes_total", &labels),
                Some(0.0),
                "{text}"
            );
            let shown = detail(&n, &target, service).expect("the path on the status page");
            assert_eq!(hops_of(&shown), before, "{shown}");
        }
        let first = n.wait_log(
            &format!("host={target} protocol=traceroute service=traceroute}}: route "),
            Duration::from_secs(2),
        );
        assert_eq!(hops_of(&path_field(&first)), before, "{first}");

        // The address behind r3 is refused: down, reason unreachable, the path up to r3.
        let labels = [("host", refused.as_str()), ("service", "traceroute")];
        n.wait_metric("netmon_traceroute_reached", &labels, wait, |v| v == 0.0);
        let text = n.scrape();
        assert_eq!(metric(&text, "netmon_up", &labels), Some(0.0), "{text}");
        assert_eq!(
            metric(&text, "netmon_traceroute_hops", &labels),
            Some(4.0),
            "{text}"
        );
        let reason = [("host", refused.as_str()), ("reason", "unreachable")];
        assert!(
            metric(&text, "netmon_probe_failures_total", &reason).is_some_and(|v| v >= 1.0),
            "{text}"
        );
        let down = n.wait_log("first result: DOWN", Duration::from_secs(2));
        let said = if v6 {
            "address unreachable"
        } else {
            "host unreachable"
        };
        let r3 = at(v6, 3, 2);
        assert!(
            down.contains(&format!(
                "{refused} not reached: hop 4 ({r3}) answered {said}"
            )),
            "{down}"
        );

        // The route changes: r1 now sends through r4.
        chain.reroute();
        let changed_at = Instant::now();
        for service in services {
            let labels = [("host", target.as_str()), ("service", service)];
            n.wait_metric(
                "netmon_traceroute_route_changes_total",
                &labels,
                wait,
                |v| v == 1.0,
            );
            let l = [
                ("host", target.as_str()),
                ("service", service),
                ("hop", "2"),
            ];
            n.wait_metric("netmon_traceroute_hop_loss_ratio", &l, wait, |v| v == 0.0);
            let shown = detail(&n, &target, service).expect("the path on the status page");
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
        for service in services {
            let labels = [("host", target.as_str()), ("service", service)];
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
    assert_eq!(chain.traceroute(&target, false), after);
}

/// A copy of the binary in a directory `nobody` can enter (the build's may be below one it
/// cannot).
fn binary_for_nobody() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("netmon");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

#[test]
fn netmon_check_traces_the_path_without_any_privilege() {
    if !can_run("netmon_check_traces_the_path_without_any_privilege") {
        return;
    }
    let chain = Chain::build();
    let src = chain.ns("src");
    let (_dir, bin) = binary_for_nobody();
    let bin = bin.to_string_lossy().into_owned();
    // nobody, no group, no capability: UDP probes and the error queue need none.
    let check = |host: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &src,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
            ])
            .args(["--clear-groups", "--", &bin, "check", "traceroute", host])
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
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    let (code, out) = check(&at(false, 4, 2));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("NETMON TRACEROUTE OK - 198.18.4.2 "),
        "{out}"
    );
    // The path as long output, on the plugin line's heels.
    let path = out.lines().nth(1).unwrap_or_default();
    assert_eq!(
        hops_of(path.strip_prefix("path: ").unwrap_or_default()),
        [
            Some("198.18.1.1".to_string()),
            None,
            Some("198.18.3.2".to_string()),
            Some("198.18.4.2".to_string())
        ],
        "{out}"
    );
    let (code, out) = check(&at(false, 9, 9));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("198.18.9.9 not reached: hop 4 (198.18.3.2) answered host unreachable"),
        "{out}"
    );
    // ICMP probes need a privilege nobody does not have here, and say what to do.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &src,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
        ])
        .args([
            "--clear-groups",
            "--",
            &bin,
            "check",
            "traceroute",
            &at(false, 4, 2),
        ])
        .args(["-o", "method=icmp", "--timeout", "3s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("Use `method: udp`"), "{stdout}");
}
