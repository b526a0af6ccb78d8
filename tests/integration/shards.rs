//! `--site` and `--shard.index/--shard.count` end to end: instances over the same config split
//! its services between them, each service probed by exactly one shard, and every probe series
//! carries the instance's site.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start, series};

const SERVICES_PER_HOST: usize = 30;

fn config(port: u16) -> String {
    let mut c = String::from("defaults: { interval: 1s, timeout: 500ms }\ntargets:\n");
    for host in ["127.0.0.1", "localhost"] {
        c.push_str(&format!("  {host}:\n    services:\n"));
        for i in 0..SERVICES_PER_HOST {
            c.push_str(&format!(
                "      - {{ type: tcp, name: s{i}, port: {port} }}\n"
            ));
        }
    }
    c.push_str(&format!(
        "  127.0.0.2:\n    labels: {{ site: elsewhere }}\n    services: [\"TCP:{port}\"]\n"
    ));
    c
}

/// The (host, service, site) of every `netmon_up` series, once all `want` are present.
fn up_series(n: &Netmon, want: usize) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = n.scrape();
        let found: Vec<(String, String, String)> = series(&text, "netmon_up", &[])
            .into_iter()
            .filter_map(|(line, _)| {
                let (_, labels, _) = testkit::exposition::parse_line(&line)?;
                let get = |k: &str| {
                    labels
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                Some((get("host"), get("service"), get("site")))
            })
            .collect();
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn owned(n: &Netmon) -> f64 {
    testkit::exposition::metric(&n.scrape(), "netmon_shard_services", &[]).unwrap()
}

#[test]
fn two_shards_split_the_services_and_every_series_has_the_site() {
    let port = testkit::net::accepting_port();
    let config = config(port);
    let total = 2 * SERVICES_PER_HOST + 1;
    let whole = Netmon::start(&config, &["--site", "a"]);
    let shard0 = Netmon::start(
        &config,
        &["--site", "b", "--shard.index", "0", "--shard.count", "2"],
    );
    let shard1 = Netmon::start(
        &config,
        &["--site", "b", "--shard.index", "1", "--shard.count", "2"],
    );

    let all = up_series(&whole, total);
    assert_eq!(all.len(), total, "{all:?}");
    assert_eq!(owned(&whole), total as f64);
    for (host, service, site) in &all {
        let want = if host == "127.0.0.2" {
            "elsewhere"
        } else {
            "a"
        };
        assert_eq!(
            site, want,
            "{host} {service}: a service's own site label is kept"
        );
    }

    let (n0, n1) = (owned(&shard0) as usize, owned(&shard1) as usize);
    assert_eq!(n0 + n1, total, "the shards own {n0} + {n1} services");
    // Both shards get a fair part (rendezvous hashing over 61 services).
    assert!(n0 >= total / 4 && n1 >= total / 4, "{n0} / {n1}");
    let s0 = up_series(&shard0, n0);
    let s1 = up_series(&shard1, n1);
    assert_eq!((s0.len(), s1.len()), (n0, n1));
    let keys = |s: &[(String, String, String)]| -> BTreeSet<(String, String)> {
        s.iter().map(|(h, n, _)| (h.clone(), n.clone())).collect()
    };
    let (k0, k1) = (keys(&s0), keys(&s1));
    assert!(k0.is_disjoint(&k1), "a service probed by both shards");
    let union: BTreeSet<_> = k0.union(&k1).cloned().collect();
    assert_eq!(
        union,
        keys(&all),
        "every service is probed by one of the shards"
    );
    assert!(
        s0.iter()
            .chain(&s1)
            .all(|(h, _, site)| site == if h == "127.0.0.2" { "elsewhere" } else { "b" })
    );
}
