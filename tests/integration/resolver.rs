//! `defaults: { resolver: ... }` end to end: netmon asks the name server the config names
//! (one started here, on a loopback port resolv.conf could not name), caches its answers
//! for their TTL, or asks on every probe with `cache: false`.

use std::net::Ipv4Addr;
use std::time::Duration;

use testkit::dns::{NOERROR, NXDOMAIN, Query, Server};

use crate::support::{Netmon, Start};

/// Answers `svc.test` with 127.0.0.1 (TTL 60), anything else with NXDOMAIN.
fn name_server() -> Server {
    Server::start(|q, _| {
        let Some(q) = Query::parse(q) else {
            return Vec::new();
        };
        testkit::udp::now(if q.name == "svc.test" {
            q.answer(NOERROR, &[Ipv4Addr::LOCALHOST], 60)
        } else {
            q.answer(NXDOMAIN, &[], 60)
        })
    })
}

fn config(dns: u16, port: u16, cache: bool) -> String {
    format!(
        "defaults:\n  interval: 200ms\n  timeout: 150ms\n  resolver: {{ nameservers: [\"127.0.0.1:{dns}\"], cache: {cache} }}\n\
         targets:\n  svc.test:\n    services: [\"TCP:{port}\"]\n"
    )
}

#[test]
fn the_configured_name_server_answers_and_its_answers_are_cached() {
    let dns = name_server();
    let port = testkit::net::accepting_port();
    let service = format!("tcp:{port}");
    let labels = [("host", "svc.test"), ("service", service.as_str())];

    let n = Netmon::start(&config(dns.port(), port, true), &[]);
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);
    n.wait_metric(
        "netmon_probes_total",
        &labels,
        Duration::from_secs(10),
        |v| v >= 10.0,
    );
    let cached = dns.udp_queries();
    // A and AAAA once each, a retry at most: not one per probe.
    assert!(
        (1..=4).contains(&cached),
        "{cached} queries for 10 probes with a 60 s TTL"
    );
    drop(n);

    let before = dns.udp_queries();
    let n = Netmon::start(&config(dns.port(), port, false), &[]);
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);
    n.wait_metric(
        "netmon_probes_total",
        &labels,
        Duration::from_secs(10),
        |v| v >= 10.0,
    );
    let uncached = dns.udp_queries() - before;
    assert!(
        uncached >= 10,
        "{uncached} queries for 10 probes with cache: false"
    );
}

/// `ip: all` against a name server whose answer changes: every address is probed as its own
/// series (`ip` label), at most `max_addresses` of them (the lowest), and addresses that
/// vanish or appear remove or add their series while the others keep counting.
#[test]
fn ip_all_probes_every_address_and_follows_the_answer() {
    use std::sync::{Arc, Mutex};

    let answer = Arc::new(Mutex::new(vec![
        Ipv4Addr::new(127, 0, 0, 4),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 2),
    ]));
    let served = answer.clone();
    let dns = Server::start(move |q, _| {
        let Some(q) = Query::parse(q) else {
            return Vec::new();
        };
        let ips = served.lock().unwrap().clone();
        testkit::udp::now(if q.name == "multi.test" {
            q.answer(NOERROR, &ips, 1)
        } else {
            q.answer(NXDOMAIN, &[], 60)
        })
    });
    // The same port on three loopback addresses; nothing listens on 127.0.0.4.
    let first = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = first.local_addr().unwrap().port();
    let second = std::net::TcpListener::bind(("127.0.0.3", port)).expect("bind 127.0.0.3");
    let third = std::net::TcpListener::bind(("127.0.0.5", port)).expect("bind 127.0.0.5");
    let config = format!(
        "defaults:\n  interval: 200ms\n  timeout: 150ms\n  resolver: {{ nameservers: [\"127.0.0.1:{}\"] }}\n\
         targets:\n  multi.test:\n    services:\n      - {{ type: tcp, port: {port}, ip: all, max_addresses: 2 }}\n",
        dns.port()
    );
    let mut n = Netmon::start(&config, &[]);
    let service = format!("tcp:{port}");
    let at = |ip: &'static str| {
        [
            ("host", "multi.test"),
            ("service", service.as_str()),
            ("ip", ip),
        ]
    };
    let wait = Duration::from_secs(10);
    n.wait_metric("netmon_up", &at("127.0.0.2"), wait, |v| v == 1.0);
    n.wait_metric("netmon_up", &at("127.0.0.3"), wait, |v| v == 1.0);
    let before = n.wait_metric("netmon_probes_total", &at("127.0.0.3"), wait, |v| v >= 3.0);
    let up = |text: &str| testkit::exposition::series(text, "netmon_up", &[("host", "multi.test")]);
    assert_eq!(
        up(&n.scrape()).len(),
        2,
        "max_addresses: 2 keeps the two lowest of three:\n{}",
        n.scrape()
    );
    n.wait_log("address resolved: probing it", wait);

    // 127.0.0.2 goes away, 127.0.0.4 (closed) and 127.0.0.5 come: .3 and .4 are the lowest two.
    *answer.lock().unwrap() = vec![
        Ipv4Addr::new(127, 0, 0, 5),
        Ipv4Addr::new(127, 0, 0, 4),
        Ipv4Addr::new(127, 0, 0, 3),
    ];
    n.wait_metric("netmon_up", &at("127.0.0.4"), wait, |v| v == 0.0);
    n.wait_metric(
        "netmon_probe_failures_total",
        &[
            ("host", "multi.test"),
            ("ip", "127.0.0.4"),
            ("reason", "refused"),
        ],
        wait,
        |v| v >= 1.0,
    );
    let text = n.scrape();
    let ips: Vec<String> = up(&text).into_iter().map(|(labels, _)| labels).collect();
    assert!(
        ips.iter().all(|l| !l.contains("127.0.0.2")) && ips.len() == 2,
        "the vanished address's series are gone, two remain: {ips:?}"
    );
    let after = testkit::exposition::metric(&text, "netmon_probes_total", &at("127.0.0.3"))
        .expect("127.0.0.3 still probed");
    assert!(
        after > before,
        "127.0.0.3 kept its counter: {before} then {after}"
    );
    n.wait_log("address no longer resolved", wait);
    drop((first, second, third));
}
