//! netmon's end-to-end tests in one binary: the real `netmon` binary against servers started
//! by the tests on loopback (and, for the privilege tests, in network namespaces they create).
//! One module per area; the peers and helpers come from the test kit (`testkit/`).

#[path = "../support/mod.rs"]
mod support;

mod check;
mod config;
mod console;
mod dashboards;
mod discovery;
mod dns_ntp;
mod echo;
mod echo_abuse;
mod first_hour;
mod fuzz_regressions;
mod hostile;
mod http;
mod icmp_udp;
mod multi_site;
mod privileges;
mod prometheus;
mod reload_atomic;
mod resolver;
mod scrape;
mod serve;
mod shards;
mod stamp;
mod status_page;
mod traceroute;
mod web_security;
