//! The shipped Prometheus and Grafana files against the real programs: `promtool` checks
//! prometheus.yml and alerts.yml and runs the rule unit tests, lints a real scrape of netmon,
//! and a real Prometheus server scraping a real netmon answers every query of every dashboard
//! panel with data.
//!
//! The netmon under test watches loopback services for every protocol this build supports
//! (found with `netmon config check`): its own port (tcp) and /metrics (http), a closed port (a
//! service that is down), an HTTPS server, DNS and NTP responders and a UDP echo responder
//! started here, 127.0.0.1 by ICMP and by traceroute (the first hop), the in-process echo
//! server when `echo_server:` exists, and STAMP against the in-process reflector
//! (`stamp_reflector:`) and a stateful one started here.
//! Panel queries whose families only protocols not built yet produce are checked for "no error"
//! only, and the test prints them.
//!
//! Without `promtool`/`prometheus` in PATH these tests print what they skipped and pass, unless
//! NETMON_REQUIRE_PROMETHEUS=1 (as in CI), which makes the absence a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::{Netmon, Start, closed_port, http};
use serde_json::Value;
use testkit::dns::{NOERROR, Query};
use testkit::exposition::urlencode;
use testkit::http::{Version, response, serve};
use testkit::ntp::Reply;
use testkit::pki::Leaf;
use testkit::udp::{Group, Responder, now};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes past libtest's output capture, so a skip is seen in a plain `cargo test`.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The program `name` from PATH; `None` (with a message) when it is missing and not required.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("NETMON_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!(
                "{name} is not in PATH and NETMON_REQUIRE_PROMETHEUS=1: install the Debian package `prometheus`"
            );
        }
        say(&format!(
            "SKIPPED {test}: `{name}` is not installed (Debian package `prometheus`); \
             set NETMON_REQUIRE_PROMETHEUS=1 to make this a failure"
        ));
    }
    found
}

/// Runs a program to completion; returns (success, stdout + stderr).
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_unit_tests_pass() {
    let Some(promtool) = tool("promtool", "promtool check config/rules, test rules") else {
        return;
    };
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "tests/testdata/alerts_test.yml"],
    ] {
        let (ok, out) = run(&promtool, args, None);
        assert!(ok, "promtool {}:\n{out}", args.join(" "));
        assert!(
            out.contains("SUCCESS"),
            "promtool {}:\n{out}",
            args.join(" ")
        );
    }
}

#[test]
fn promtool_check_metrics_finds_nothing_in_a_real_scrape() {
    let Some(promtool) = tool("promtool", "promtool check metrics") else {
        return;
    };
    let lab = Lab::start();
    lab.wait_for_every_protocol();
    let text = lab.netmon.scrape();
    let (ok, out) = run(&promtool, &["check", "metrics"], Some(&text));
    assert!(ok && out.trim().is_empty(), "{out}\n--- scrape:\n{text}");
}

#[test]
fn a_real_prometheus_answers_every_dashboard_query_with_data() {
    let Some(prometheus) = tool("prometheus", "dashboard queries against a real Prometheus") else {
        return;
    };
    let lab = Lab::start();
    let prom = Prometheus::start(&prometheus, &lab.netmon.addr);

    // Every dashboard, with the values Grafana would substitute for its variables.
    let mut runs = Vec::new();
    for (file, d) in dashboards() {
        let all = [("host", ".*"), ("protocol", ".*"), ("site", ".*")];
        if file.contains("host") {
            runs.push((
                file.clone(),
                d.clone(),
                vec![("host", "127.0.0.1"), all[1], all[2]],
            ));
        } else {
            runs.push((file.clone(), d.clone(), all.to_vec()));
            // One host and one site chosen: Grafana regex-escapes multi-value selections.
            runs.push((
                file.clone(),
                d.clone(),
                vec![
                    ("host", r"127\\.0\\.0\\.1"),
                    ("protocol", ".*"),
                    ("site", "test"),
                ],
            ));
        }
    }
    let mut checks = Vec::new();
    for (file, d, vars) in &runs {
        for (place, expr) in panel_queries(file, d) {
            let q = substitute(&expr, vars);
            let needs = lab.missing_producers(&q);
            checks.push((format!("{place} {vars:?}"), q, needs));
        }
    }

    // Poll until every query that can have data has it (rates need two scrapes).
    let deadline = Instant::now() + Duration::from_secs(90);
    let failures = loop {
        let mut failures = Vec::new();
        for (place, q, needs) in &checks {
            match prom.query(q) {
                Err(e) => failures.push(format!("{place}: {q}\n    error: {e}")),
                Ok(0) if needs.is_empty() => {
                    failures.push(format!("{place}: {q}\n    no data"));
                }
                Ok(_) => {}
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}\n--- netmon scrape:\n{}\n--- prometheus log:\n{}",
        failures.len(),
        checks.len(),
        failures.join("\n"),
        lab.netmon.scrape(),
        prom.log()
    );
    let unchecked: BTreeSet<String> = checks
        .iter()
        .filter(|(_, _, needs)| !needs.is_empty())
        .map(|(place, _, needs)| format!("  {place} (needs {})", needs.join(" or ")))
        .collect();
    if !unchecked.is_empty() {
        say(&format!(
            "dashboard queries run without error but not required to return data, because this \
             build does not monitor what produces their metrics:\n{}",
            unchecked.into_iter().collect::<Vec<_>>().join("\n")
        ));
    }

    // The variables' label_values() lists hold the lab's values.
    for (file, d) in dashboards() {
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().unwrap();
            let q = v["query"]["query"].as_str().unwrap();
            let (selector, label) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
                .unwrap_or_else(|| panic!("{file} {name}: {q}"));
            let selector = substitute(
                selector.trim(),
                &[("host", "127.0.0.1"), ("protocol", ".*"), ("site", ".*")],
            );
            let values = prom.label_values(&selector, label.trim());
            let want: Vec<&str> = match name {
                "site" => vec!["test"],
                "host" => vec!["127.0.0.1"],
                _ => lab
                    .monitored
                    .iter()
                    .map(|s| s.as_str())
                    .filter(|s| !NOT_PROTOCOLS.contains(s))
                    .collect(),
            };
            for w in want {
                assert!(
                    values.iter().any(|v| v == w),
                    "{file} variable {name} ({q}) lacks {w:?}: {values:?}"
                );
            }
        }
    }

    // Prometheus loaded alerts.yml, evaluates every rule without error, and the down service
    // already has a pending NetmonServiceDown with the labels the annotations use.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rules = prom.get_json("/api/v1/rules");
        let mut health = BTreeMap::new();
        for g in rules["data"]["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                health.insert(
                    r["name"].as_str().unwrap().to_string(),
                    (r["health"].as_str().unwrap_or("").to_string(), r.clone()),
                );
            }
        }
        let pending = health.get("NetmonServiceDown").is_some_and(|(_, r)| {
            r["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|a| {
                    a["labels"]["service"] == format!("tcp:{}", lab.closed)
                        && a["labels"]["host"] == "127.0.0.1"
                        && a["labels"]["protocol"] == "tcp"
                        && a["annotations"]["summary"]
                            .as_str()
                            .is_some_and(|s| s.contains("127.0.0.1"))
                })
            })
        });
        let all_ok = health.len() >= 7 && health.values().all(|(h, _)| h == "ok");
        if all_ok && pending {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all healthy, or no pending NetmonServiceDown for tcp:{}:\n{rules:#}",
            lab.closed
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ------------------------------------------------------------------------------- dashboards

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            out.push((name, serde_json::from_str(&text).unwrap()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "dashboards missing");
    out
}

/// (where, expr) of every panel query, rows' nested panels included.
fn panel_queries(file: &str, d: &Value) -> Vec<(String, String)> {
    let mut panels = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!(
                    "{file} {:?} {}",
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"].as_str().unwrap_or("?")
                ),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Replaces Grafana's variables as Grafana would for a Prometheus at a 1 s scrape interval.
fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut q = expr
        .replace("$__rate_interval", "15s")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    for (name, value) in vars {
        q = q
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!q.contains('$'), "unsubstituted variable in {q}");
    q
}

/// What the lab can monitor that is not a protocol of a service: hosted servers, discovery.
const NOT_PROTOCOLS: [&str; 3] = ["echo_server", "stamp_reflector", "discovery"];

/// Which protocols produce a family only they have (the common families come from all).
const PRODUCERS: &[(&str, &[&str])] = &[
    ("netmon_rtt_seconds", &["icmp", "echo", "stamp"]),
    ("netmon_rtt_jitter_seconds", &["icmp", "echo", "stamp"]),
    ("netmon_r_factor", &["icmp", "echo", "stamp"]),
    ("netmon_mos", &["icmp", "echo", "stamp"]),
    ("netmon_packets_sent_total", &["icmp", "echo", "stamp"]),
    ("netmon_packets_received_total", &["icmp", "echo", "stamp"]),
    ("netmon_packet_loss_ratio", &["icmp", "echo", "stamp"]),
    ("netmon_http_status_code", &["http", "https"]),
    ("netmon_http_phase_seconds", &["http", "https"]),
    ("netmon_tls_cert_not_after_timestamp_seconds", &["https"]),
    ("netmon_dns_", &["dns"]),
    ("netmon_ntp_", &["ntp"]),
    ("netmon_traceroute_", &["traceroute"]),
    ("netmon_echo_server_", &["echo_server"]),
    ("netmon_stamp_reflector_packets", &["stamp_reflector"]),
    ("netmon_stamp_", &["stamp"]),
    ("netmon_discovery_", &["discovery"]),
];

// ------------------------------------------------------------------------------------- lab

/// A netmon watching a loopback service of every protocol it supports.
struct Lab {
    netmon: Netmon,
    /// Protocols with a running service (plus `echo_server` when hosted in-process).
    monitored: BTreeSet<String>,
    /// The closed TCP port: a service that is down.
    closed: u16,
    _peers: Peers,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let peers = Peers::new();
        let dns = peers.udp(dns_answer);
        let ntp = peers.udp(ntp_answer);
        let udp_echo = peers.udp(|q| Some(q.to_vec()));
        let stateful_stamp = peers.stateful_stamp_reflector();
        let (https, ca) = peers.https(dir.path());
        let closed = closed_port();
        let echo_port = free_udp_port();

        let base = format!("targets:\n  127.0.0.1:\n    services: [\"TCP:{closed}\"]\n");
        let mut netmon = Netmon::start(&base, &[]);
        let own: u16 = netmon.addr.rsplit(':').next().unwrap().parse().unwrap();

        let echo_server = format!("echo_server: {{ listen: \"127.0.0.1:{echo_port}\" }}\n");
        let hosted = config_check(&dir, &echo_server, "\"TCP:1\"", "echo_server");
        let echo_target = if hosted { echo_port } else { udp_echo };
        let stamp_port = free_udp_port();
        let stamp_reflector =
            format!("stamp_reflector: {{ listen: \"127.0.0.1:{stamp_port}\" }}\n");
        let stamp_hosted = config_check(&dir, &stamp_reflector, "\"TCP:1\"", "stamp_reflector");
        let candidates: Vec<(&str, String)> = vec![
            ("tcp", format!("\"TCP:{own}\"")),
            (
                "http",
                format!("{{ type: http, url: \"http://127.0.0.1:{own}/metrics\" }}"),
            ),
            (
                "https",
                format!(
                    "{{ type: https, port: {https}, tls: {{ ca_file: \"{}\" }} }}",
                    ca.display()
                ),
            ),
            (
                "icmp",
                "{ type: icmp, count: 2, interval: 3s, timeout: 2500ms }".into(),
            ),
            ("dns", format!("\"DNS:{dns}\"")),
            ("ntp", format!("\"NTP:{ntp}\"")),
            (
                "udp",
                format!("{{ type: udp, port: {udp_echo}, send_hex: \"6e65746d6f6e\" }}"),
            ),
            (
                "echo",
                format!("{{ type: echo, port: {echo_target}, count: 3 }}"),
            ),
            (
                "stamp",
                format!("{{ type: stamp, port: {stateful_stamp}, count: 3 }}"),
            ),
            (
                "traceroute",
                "{ type: traceroute, max_hops: 4, hop_timeout: 500ms }".into(),
            ),
        ];
        let mut candidates = candidates;
        // A file_sd source giving one more loopback address, for the discovery panels.
        let sd = dir.path().join("lab-sd.json");
        std::fs::write(&sd, "[{\"targets\": [\"127.0.0.2\"]}]").unwrap();
        let discovery = format!(
            "discovery: [{{ file: \"{}\", name: lab, interval: 1s, services: [\"TCP:{closed}\"] }}]\n",
            sd.display()
        );
        let discovers = config_check(&dir, &discovery, "\"TCP:1\"", "discovery");
        if stamp_hosted {
            candidates.push((
                "stamp",
                format!("{{ type: stamp, port: {stamp_port}, count: 3 }}"),
            ));
        }
        let mut services: Vec<(&str, String)> = candidates
            .into_iter()
            .filter(|(p, s)| config_check(&dir, "", s, p))
            .collect();
        let unsupported: Vec<&str> = [
            "tcp",
            "http",
            "https",
            "icmp",
            "dns",
            "ntp",
            "udp",
            "echo",
            "stamp",
            "traceroute",
        ]
        .into_iter()
        .filter(|p| !services.iter().any(|(q, _)| q == p))
        .collect();
        if !unsupported.is_empty() {
            say(&format!(
                "netmon under test does not support yet: {}",
                unsupported.join(", ")
            ));
        }

        // Reload with the full config; a reload is all or nothing, so services that cannot start
        // here (ICMP without the privilege) are left out and the rest reloaded again.
        for _ in 0..3 {
            let mut cfg = String::from("defaults: { interval: 2s, timeout: 1500ms }\n");
            if hosted && services.iter().any(|(p, _)| *p == "echo") {
                cfg.push_str(&echo_server);
            }
            if stamp_hosted && services.iter().any(|(p, _)| *p == "stamp") {
                cfg.push_str(&stamp_reflector);
            }
            if discovers {
                cfg.push_str(&discovery);
            }
            cfg.push_str("targets:\n  127.0.0.1:\n    labels: { site: test }\n    services:\n");
            cfg.push_str(&format!("      - \"TCP:{closed}\"\n"));
            for (_, s) in &services {
                cfg.push_str(&format!("      - {s}\n"));
            }
            netmon.write_config(&cfg);
            let (status, body) = netmon.post("/-/reload");
            if status == 200 {
                break;
            }
            // Each refused service is a line `FILE:LINE:COL: PROTOCOL service on `HOST`: why`.
            let failed: Vec<String> = body
                .lines()
                .filter_map(|l| {
                    l.split_once(" service on `127.0.0.1`")
                        .map(|(head, _)| head)
                })
                .filter_map(|head| head.rsplit(' ').next())
                .map(str::to_string)
                .collect();
            assert!(!failed.is_empty(), "reload failed:\n{body}\nconfig:\n{cfg}");
            say(&format!("could not start here, left out: {}", body.trim()));
            services.retain(|(p, _)| !failed.iter().any(|f| f == p));
        }
        netmon.wait_log("configuration reloaded", Duration::from_secs(10));
        let mut monitored: BTreeSet<String> = services.iter().map(|(p, _)| p.to_string()).collect();
        if hosted && monitored.contains("echo") {
            monitored.insert("echo_server".into());
        }
        if stamp_hosted && monitored.contains("stamp") {
            monitored.insert("stamp_reflector".into());
        }
        if discovers {
            monitored.insert("discovery".into());
        }
        say(&format!(
            "netmon under test monitors: {}",
            monitored.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        Lab {
            netmon,
            monitored,
            closed,
            _peers: peers,
            _dir: dir,
        }
    }

    /// Waits until every monitored protocol has run a probe.
    fn wait_for_every_protocol(&self) {
        for p in self
            .monitored
            .iter()
            .filter(|p| !NOT_PROTOCOLS.contains(&p.as_str()))
        {
            self.netmon.wait_metric(
                "netmon_probes_total",
                &[("protocol", p)],
                Duration::from_secs(20),
                |v| v >= 1.0,
            );
        }
    }

    /// The protocols that would have to be monitored for `query` to have data; empty when
    /// it can have data now.
    fn missing_producers(&self, query: &str) -> Vec<String> {
        let mut missing = Vec::new();
        for (family, producers) in PRODUCERS {
            if query.contains(family) && !producers.iter().any(|p| self.monitored.contains(*p)) {
                missing.extend(producers.iter().map(|p| p.to_string()));
            }
        }
        for p in [
            "http",
            "https",
            "icmp",
            "dns",
            "ntp",
            "tcp",
            "udp",
            "echo",
            "stamp",
            "traceroute",
        ] {
            if query.contains(&format!("protocol=\"{p}\"")) && !self.monitored.contains(p) {
                missing.push(p.to_string());
            }
        }
        missing
    }
}

/// Whether `netmon config check` accepts `service` (with `top` keys above `targets`). "Not
/// supported yet" and an unknown `echo_server`, `stamp_reflector` or `discovery` key mean no;
/// any other error is a bug here.
fn config_check(dir: &tempfile::TempDir, top: &str, service: &str, what: &str) -> bool {
    let path = dir.path().join(format!("check-{what}.yml"));
    std::fs::write(
        &path,
        format!("{top}targets:\n  127.0.0.1:\n    services:\n      - {service}\n"),
    )
    .unwrap();
    let (ok, out) = run(
        Path::new(crate::support::BIN),
        &["config", "check", path.to_str().unwrap()],
        None,
    );
    if ok {
        return true;
    }
    assert!(
        out.contains("not supported yet")
            || out.contains("unknown key `echo_server`")
            || out.contains("unknown key `stamp_reflector`")
            || out.contains("unknown key `discovery`"),
        "netmon config check refused the {what} service {service}:\n{out}"
    );
    false
}

fn free_udp_port() -> u16 {
    testkit::net::closed_udp_port()
}

/// The lab's peers on 127.0.0.1: UDP responders and an HTTPS server, stopped when dropped.
struct Peers {
    udp: Group,
    rt: tokio::runtime::Runtime,
}

impl Peers {
    fn new() -> Peers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Peers {
            udp: Group::default(),
            rt,
        }
    }

    /// A UDP server answering each datagram with `answer`; returns its port.
    fn udp(&self, answer: fn(&[u8]) -> Option<Vec<u8>>) -> u16 {
        self.udp.keep(Responder::start(move |_, q, _| {
            answer(q).map(now).unwrap_or_default()
        }))
    }

    /// A stateful STAMP reflector (RFC 8762 §4.3.2): its own sequence numbers count the packets
    /// it received, so the `stamp` probe has directional loss to report. Returns its port.
    fn stateful_stamp_reflector(&self) -> u16 {
        use netmon::stamp::wire::{ErrorEstimate, Timestamp, reflect_in_place};
        self.udp.keep(Responder::start(|n, q, _| {
            let mut b = q.to_vec();
            let now_ts = Timestamp::now();
            if reflect_in_place(&mut b, now_ts, 64, ErrorEstimate::NETMON, Timestamp::now).is_err()
            {
                return Vec::new();
            }
            // Truncation is the wrap of the reflector's 32-bit counter.
            b[0..4].copy_from_slice(&(n as u32).to_be_bytes());
            now(b)
        }))
    }

    /// An HTTPS server with a fresh self-signed certificate answering `ok`; returns its port
    /// and the certificate's PEM file (the probe's `ca_file`).
    fn https(&self, dir: &Path) -> (u16, PathBuf) {
        let cert = Leaf::new(&["127.0.0.1", "localhost"]).self_signed();
        let (ca, _) = cert.write(dir, "ca");
        let config = cert.server_config();
        let addr = self.rt.block_on(serve(Some(config), Version::Http1, |_| {
            response(200, "ok\n")
        }));
        (addr.port(), ca)
    }
}

/// A DNS answer to a one-question query: NOERROR with one A record 127.0.0.1.
fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    Query::parse(q).map(|q| q.answer(NOERROR, &[Ipv4Addr::LOCALHOST], 60))
}

/// An NTP server reply: stratum 2, synchronised, our clock.
fn ntp_answer(q: &[u8]) -> Option<Vec<u8>> {
    let reply = Reply {
        refid: [127, 0, 0, 1],
        ..Reply::server(2, 0.0)
    };
    reply.to(q, SystemTime::now())
}

// ------------------------------------------------------------------------------ prometheus

/// A Prometheus server on 127.0.0.1 scraping one netmon every second, with alerts.yml loaded.
struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(program: &Path, netmon: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }}\n\
                 rule_files: [\"{}\"]\n\
                 scrape_configs:\n  - job_name: netmon\n    honor_labels: true\n    \
                 static_configs:\n      - targets: [\"{netmon}\"]\n        labels: {{ site: lab }}\n",
                root().join("alerts.yml").display()
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", closed_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus runs");
        let mut p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(&p.addr).is_ok()
                && http(&p.addr, "GET", "/-/ready").0 == 200
            {
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = http(&self.addr, "GET", path);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {e}:\n{body}"))
    }

    /// Runs an instant query; returns the number of series or Prometheus's error.
    fn query(&self, q: &str) -> Result<usize, String> {
        let v = self.get_json(&format!("/api/v1/query?query={}", urlencode(q)));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(match &v["data"]["result"] {
            Value::Array(a) => a.len(),
            Value::Null => 0,
            _ => 1,
        })
    }

    /// What Grafana's `label_values(selector, label)` lists.
    fn label_values(&self, selector: &str, label: &str) -> Vec<String> {
        let v = self.get_json(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            urlencode(selector)
        ));
        assert_eq!(v["status"], "success", "{selector} {label}: {v}");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    }
}

#[test]
fn the_test_itself_substitutes_and_classifies_queries() {
    assert_eq!(
        substitute(
            r#"rate(netmon_probes_total{host=~"$host",site=~"${site}"}[$__rate_interval])"#,
            &[("host", ".*"), ("site", "a")]
        ),
        r#"rate(netmon_probes_total{host=~".*",site=~"a"}[15s])"#
    );
    assert_eq!(urlencode("a b{\"}"), "a%20b%7B%22%7D");
}

/// The lab's responders answer real clients, so a missing panel value after the probes are
/// merged points at netmon, not at the lab.
#[test]
fn the_lab_responders_answer_real_clients() {
    let peers = Peers::new();

    // NTP: rsntp, an SNTP client independent of netmon's, accepts the reply.
    let ntp = peers.udp(ntp_answer);
    let result = rsntp::SntpClient::new()
        .synchronize(format!("127.0.0.1:{ntp}"))
        .expect("rsntp accepts the lab's NTP reply");
    assert_eq!(result.stratum(), 2);
    assert!(result.clock_offset().as_secs_f64().abs() < 1.0);

    // DNS: hickory parses the answer to an A query as NOERROR with one record.
    let dns = peers.udp(dns_answer);
    let mut query = hickory_proto::op::Message::query();
    query.add_query(hickory_proto::op::Query::query(
        "example.com.".parse().unwrap(),
        hickory_proto::rr::RecordType::A,
    ));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), ("127.0.0.1", dns))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).unwrap();
    let answer = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, query.metadata.id);
    assert_eq!(
        answer.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError
    );
    assert_eq!(answer.answers.len(), 1);

    // HTTPS: a rustls client trusting only the lab's certificate gets a 200.
    let dir = tempfile::tempdir().unwrap();
    let (port, ca) = peers.https(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
}
