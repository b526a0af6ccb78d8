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
