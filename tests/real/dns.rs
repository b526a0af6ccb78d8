//! The real netmon binary's dns probe against unbound serving a local zone on a loopback port,
//! next to `dig` asking the same questions over UDP and TCP: the verdicts, rcodes, answer
//! counts and answer texts must agree.
//!
//! unbound answers only from its configuration (`local-zone: "." refuse` refuses every name
//! outside the test zone), so no query leaves the machine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Daemon, free_port, ok, programs, run, serve};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// The zone unbound serves, and the answers dig and netmon must both see.
const LOCAL_DATA: &[&str] = &[
    "a.netmon.test. 300 IN A 192.0.2.10",
    "a.netmon.test. 300 IN AAAA 2001:db8::10",
    r#"txt.netmon.test. 300 IN TXT "hello netmon""#,
    r#"multi.netmon.test. 300 IN TXT "v=spf1 a" "-all" "q\"uote" "caf\195\169""#,
    "netmon.test. 300 IN MX 10 mail.netmon.test.",
    "www.netmon.test. 300 IN CNAME a.netmon.test.",
];

/// unbound on 127.0.0.1:`port`, UDP and TCP, answering from `LOCAL_DATA` alone; `dir` holds
/// its config, pid file and log.
fn unbound(bin: &Path, dir: &Path, port: u16) -> Daemon {
    write_unbound_conf(dir, port, LOCAL_DATA);
    let mut c = Command::new(bin);
    c.arg("-d").arg("-c").arg(dir.join("unbound.conf"));
    // unbound opens its UDP and TCP sockets together: TCP accepting means UDP is ready too.
    Daemon::start("unbound", c, &dir.join("unbound.log"), &[port])
}

/// Writes unbound's config for 127.0.0.1:`port` serving `records` alone under netmon.test.
fn write_unbound_conf(dir: &Path, port: u16, records: &[&str]) {
    let d = dir.display();
    let data: String = records
        .iter()
        .map(|rr| format!("  local-data: '{rr}'\n"))
        .collect();
    let conf = dir.join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  \
             chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  \
             use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  do-ip6: no\n  do-udp: yes\n  \
             do-tcp: yes\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  \
             local-zone: \"netmon.test.\" static\n{data}  local-zone: \".\" refuse\n\
             remote-control:\n  control-enable: no\n"
        ),
    )
    .expect("write unbound.conf");
}

/// What dig got: the rcode name and the answer records (fields joined by single spaces).
#[derive(Debug, PartialEq)]
struct DigAnswer {
    rcode: String,
    answers: Vec<String>,
}

fn dig(bin: &Path, port: u16, name: &str, qtype: &str, tcp: bool) -> DigAnswer {
    let mut c = Command::new(bin);
    c.args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+time=2",
        "+tries=1",
        if tcp { "+tcp" } else { "+notcp" },
        name,
        qtype,
    ]);
    let o = run(c, Duration::from_secs(20));
    let out = o.stdout;
    assert_eq!(o.code, 0, "dig {name} {qtype}: {out}{}", o.stderr);
    let rcode = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's output:\n{out}"))
        .to_string();
    let answers = out
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    DigAnswer { rcode, answers }
}

/// `netmon check dns` on 127.0.0.1:`port` with these options; returns (exit code, line).
fn check(port: u16, name: &str, qtype: &str, tcp: bool, extra: &[&str]) -> (i32, String) {
    let mut c = Command::new(NETMON);
    c.args([
        "check",
        "dns",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "-t",
        "2s",
    ])
    .args(["-o", &format!("query_name={name}")])
    .args(["-o", &format!("query_type={qtype}")])
    .args([
        "-o",
        if tcp {
            "transport=tcp"
        } else {
            "transport=udp"
        },
    ]);
    for o in extra {
        c.args(["-o", o]);
    }
    let o = run(c, Duration::from_secs(20));
    assert!(
        (0..=2).contains(&o.code),
        "netmon check: {} {}{}",
        o.code,
        o.stdout,
        o.stderr
    );
    (o.code, o.stdout.trim().to_string())
}

/// The regex that matches exactly this text.
fn literal(text: &str) -> String {
    format!("^{}$", regex::escape(text))
}

#[test]
fn unbound_answers_agree_with_dig_over_udp_and_tcp() {
    const T: &str = "unbound_answers_agree_with_dig_over_udp_and_tcp";
    let Some([unbound_bin, dig_bin]) = programs(T, ["unbound", "dig"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let port = free_port();
    let _unbound = unbound(&unbound_bin, dir.path(), port);
    let cases: &[(&str, &str, &str, usize)] = &[
        ("a.netmon.test", "A", "NOERROR", 1),
        ("a.netmon.test", "AAAA", "NOERROR", 1),
        ("txt.netmon.test", "TXT", "NOERROR", 1),
        ("multi.netmon.test", "TXT", "NOERROR", 1),
        ("netmon.test", "MX", "NOERROR", 1),
        ("www.netmon.test", "CNAME", "NOERROR", 1),
        // The name exists with other types: NOERROR with no answer.
        ("a.netmon.test", "TXT", "NOERROR", 0),
        ("missing.netmon.test", "A", "NXDOMAIN", 0),
        ("example.com", "A", "REFUSED", 0),
    ];
    for &(name, qtype, want_rcode, want_answers) in cases {
        for tcp in [false, true] {
            let how = format!("{name} {qtype} over {}", if tcp { "tcp" } else { "udp" });
            let d = dig(&dig_bin, port, name, qtype, tcp);
            assert_eq!(d.rcode, want_rcode, "{how}: dig {d:?}");
            assert_eq!(d.answers.len(), want_answers, "{how}: dig {d:?}");

            // The default valid_rcodes is NOERROR: up exactly when dig saw NOERROR.
            let (code, line) = check(port, name, qtype, tcp, &[]);
            if d.rcode == "NOERROR" {
                assert_eq!(code, 0, "{how}: {line}");
                assert!(line.starts_with("NETMON DNS OK"), "{how}: {line}");
            } else {
                assert_eq!(code, 2, "{how}: {line}");
                assert!(
                    line.contains(&format!("status: rcode {} (", d.rcode)),
                    "{how}: netmon and dig disagree on the rcode: {line} / dig {d:?}"
                );
            }
            // Told that dig's rcode is valid, netmon is up.
            let valid = format!("valid_rcodes=[{}]", d.rcode);
            let (code, line) = check(port, name, qtype, tcp, &[&valid]);
            assert_eq!(code, 0, "{how} with {valid}: {line}");

            // A pattern that never matches makes netmon list what it got: the same count and
            // the same records as dig.
            let (code, line) = check(port, name, qtype, tcp, &[&valid, "expect_answer_regex=x^"]);
            assert_eq!(code, 2, "{how}: {line}");
            assert!(
                line.contains(&format!("({} records", d.answers.len())),
                "{how}: netmon and dig disagree on the answer count: {line} / dig {d:?}"
            );
            for record in &d.answers {
                assert!(
                    line.contains(record.as_str()),
                    "{how}: dig's record {record:?} is not netmon's text: {line}"
                );
                // Each of dig's records, as an anchored pattern, makes netmon up.
                let exact = format!("expect_answer_regex={}", literal(record));
                let (code, line) = check(port, name, qtype, tcp, &[&valid, &exact]);
                assert_eq!(code, 0, "{how} with {exact}: {line}");
            }
            eprintln!("{how}: dig {} {:?}; netmon agrees", d.rcode, d.answers);
        }
    }
}

/// `ip: all` with unbound as the name server while its zone changes: netmon probes exactly
/// the addresses dig gets, follows a new A set once the old one's TTL has run out, and keeps
/// an answer with a long TTL although the zone has changed since.
#[test]
fn ip_all_follows_unbound_as_its_a_set_and_ttl_change() {
    const T: &str = "ip_all_follows_unbound_as_its_a_set_and_ttl_change";
    let Some([unbound_bin, dig_bin]) = programs(T, ["unbound", "dig"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let dns = free_port();
    // One port on three loopback addresses; nothing listens on 127.0.0.4.
    let a = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = a.local_addr().expect("address").port();
    let b = std::net::TcpListener::bind(("127.0.0.3", port)).expect("bind 127.0.0.3");
    let c = std::net::TcpListener::bind(("127.0.0.5", port)).expect("bind 127.0.0.5");
    let zone = |ttl: u32, last: &[u8]| -> Vec<String> {
        last.iter()
            .map(|n| format!("pool.netmon.test. {ttl} IN A 127.0.0.{n}"))
            .collect()
    };
    let set_zone = |records: &[String], unbound: &Daemon| {
        let records: Vec<&str> = records.iter().map(String::as_str).collect();
        write_unbound_conf(dir.path(), dns, &records);
        ok(
            Path::new("/bin/kill"),
            &["-HUP", &unbound.pid().to_string()],
        );
    };
    let dig_set = |want: &[&str]| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut got = dig(&dig_bin, dns, "pool.netmon.test", "A", false)
                .answers
                .iter()
                .filter_map(|rr| rr.split(' ').nth(4).map(str::to_string))
                .collect::<Vec<_>>();
            got.sort();
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "unbound did not reload: dig says {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = zone(2, &[2, 3]);
    let records: Vec<&str> = first.iter().map(String::as_str).collect();
    write_unbound_conf(dir.path(), dns, &records);
    let mut command = Command::new(&unbound_bin);
    command
        .arg("-d")
        .arg("-c")
        .arg(dir.path().join("unbound.conf"));
    let unbound = Daemon::start("unbound", command, &dir.path().join("unbound.log"), &[dns]);
    dig_set(&["127.0.0.2", "127.0.0.3"]);

    let n = serve(
        dir.path(),
        &format!(
            "defaults:\n  interval: 200ms\n  timeout: 150ms\n  resolver: {{ nameservers: [\"127.0.0.1:{dns}\"] }}\n\
             targets:\n  pool.netmon.test:\n    services: [{{ type: tcp, port: {port}, ip: all }}]\n"
        ),
    );
    let probed = |n: &crate::support::Netmon| -> Vec<(String, f64)> {
        let text = n.scrape();
        let mut ips: Vec<(String, f64)> = text
            .lines()
            .filter_map(testkit::exposition::parse_line)
            .filter(|(name, labels, _)| {
                *name == "netmon_up"
                    && labels
                        .iter()
                        .any(|(k, v)| k == "host" && v == "pool.netmon.test")
            })
            .filter_map(|(_, labels, v)| {
                labels
                    .iter()
                    .find(|(k, _)| k == "ip")
                    .map(|(_, ip)| (ip.to_string(), v))
            })
            .collect();
        ips.sort_by(|x, y| x.0.cmp(&y.0));
        ips
    };
    let wait_for = |n: &crate::support::Netmon, want: &[(&str, f64)], why: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = probed(n);
            if got
                .iter()
                .map(|(ip, v)| (ip.as_str(), *v))
                .eq(want.iter().copied())
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{why}: netmon probes {got:?}, want {want:?}\n{}",
                n.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(
        &n,
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
        "the first A set",
    );

    // A new set whose old TTL (2 s) runs out: netmon follows, with 127.0.0.4 refused.
    set_zone(&zone(300, &[3, 4, 5]), &unbound);
    dig_set(&["127.0.0.3", "127.0.0.4", "127.0.0.5"]);
    wait_for(
        &n,
        &[("127.0.0.3", 1.0), ("127.0.0.4", 0.0), ("127.0.0.5", 1.0)],
        "the second A set, after the first one's TTL",
    );

    // That answer's TTL is 300 s: a change now is not seen for as long as it is cached.
    set_zone(&zone(300, &[2]), &unbound);
    dig_set(&["127.0.0.2"]);
    std::thread::sleep(Duration::from_secs(3));
    wait_for(
        &n,
        &[("127.0.0.3", 1.0), ("127.0.0.4", 0.0), ("127.0.0.5", 1.0)],
        "the cached answer, within its TTL",
    );
    drop((a, b, c));
}
