//! The multi-site deployment of examples/multi-site/ end to end, on loopback: three netmon
//! instances over the same targets (site a alone; site b as shards 0 and 1 of 2), an
//! agent-mode Prometheus per site remote-writing to a central Prometheus that evaluates
//! examples/multi-site/alerts.yml. The central one must see every service exactly once per
//! site, fire the "down from every site" rule for the one target down for everyone, and fire
//! the missing-shard rule for the shard that is stopped, and for no other.
//!
//! Needs Debian's `prometheus` (2.42 has agent mode and the remote-write receiver); without
//! it the test says so and passes, unless `NETMON_REQUIRE_PROMETHEUS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::exposition::urlencode;
use testkit::process::Daemon;

use crate::support::{Netmon, Start, closed_port, http};

const SERVICES: usize = 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(up: u16, down: u16) -> String {
    let mut c = String::from(
        "defaults: { interval: 1s, timeout: 500ms }\ntargets:\n  127.0.0.1:\n    services:\n",
    );
    for i in 0..SERVICES {
        c.push_str(&format!(
            "      - {{ type: tcp, name: s{i}, port: {up} }}\n"
        ));
    }
    c.push_str(&format!("  localhost:\n    services: [\"TCP:{down}\"]\n"));
    c
}

/// A Prometheus on a free loopback port, run from `dir` with `config`; its log in the dir.
fn prometheus(
    bin: &Path,
    dir: &Path,
    name: &str,
    config: &str,
    extra: &[&str],
) -> (Daemon, String) {
    let port = closed_port();
    let file = dir.join(format!("{name}.yml"));
    std::fs::write(&file, config).unwrap();
    let mut c = Command::new(bin);
    c.arg(format!("--config.file={}", file.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    let d = Daemon::start(name, c, &dir.join(format!("{name}.log")), &[port]);
    (d, format!("127.0.0.1:{port}"))
}

fn query(addr: &str, q: &str) -> Vec<Value> {
    let url = format!("/api/v1/query?query={}", urlencode(q));
    let (status, body) = http(addr, "GET", &url);
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {status} {e}: {body}"));
    assert_eq!(v["status"], "success", "{q}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most `limit`) until `q` on `addr` satisfies `done`; returns the last result.
fn wait(
    addr: &str,
    q: &str,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
    log: impl Fn() -> String,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let r = query(addr, q);
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{q} never as expected; last {r:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn label(v: &Value, name: &str) -> String {
    v["metric"][name].as_str().unwrap_or_default().to_string()
}

#[test]
fn sites_and_shards_through_agents_to_a_central_prometheus() {
    let Some(bin) = testkit::process::find("prometheus") else {
        testkit::process::not_run(
            "NETMON_REQUIRE_PROMETHEUS",
            "sites_and_shards_through_agents_to_a_central_prometheus",
            "`prometheus` is not installed (Debian package `prometheus`)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = testkit::net::accepting_port();
    let config = config(up, closed_port());
    let a = Netmon::start(&config, &["--site", "a"]);
    let b0 = Netmon::start(
        &config,
        &["--site", "b", "--shard.index", "0", "--shard.count", "2"],
    );
    let mut b1 = Some(Netmon::start(
        &config,
        &["--site", "b", "--shard.index", "1", "--shard.count", "2"],
    ));
    let b1_addr = b1.as_ref().unwrap().addr.clone();

    // The shipped rules, with `for:` at zero so the test need not wait minutes; promtool's
    // unit tests are the place for the durations.
    let rules = std::fs::read_to_string(root().join("examples/multi-site/alerts.yml"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                "        for: 0s"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
    let (_central, central) = prometheus(
        &bin,
        dir.path(),
        "central",
        "global: { evaluation_interval: 1s }\nrule_files: [alerts.yml]\n",
        &[
            "--web.enable-remote-write-receiver",
            &format!(
                "--storage.tsdb.path={}",
                dir.path().join("central-data").display()
            ),
        ],
    );
    let remote = format!(
        "remote_write:\n  - url: http://{central}/api/v1/write\n    queue_config: {{ batch_send_deadline: 500ms }}\n"
    );
    let agent = |site: &str, targets: &[(&str, &str)]| {
        let mut c = String::from(
            "global: { scrape_interval: 1s, scrape_timeout: 900ms }\nscrape_configs:\n  - job_name: netmon\n    honor_labels: true\n    static_configs:\n",
        );
        for (addr, shard) in targets {
            c.push_str(&format!(
                "      - targets: [\"{addr}\"]\n        labels: {{ site: {site}, shard: \"{shard}\" }}\n"
            ));
        }
        c.push_str(&remote);
        let name = format!("agent-{site}");
        let data = dir.path().join(format!("{name}-data"));
        prometheus(
            &bin,
            dir.path(),
            &name,
            &c,
            &[
                "--enable-feature=agent",
                &format!("--storage.agent.path={}", data.display()),
            ],
        )
    };
    let _agent_a = agent("a", &[(&a.addr, "0")]);
    let _agent_b = agent("b", &[(&b0.addr, "0"), (&b1_addr, "1")]);
    let log = || std::fs::read_to_string(dir.path().join("central.log")).unwrap_or_default();

    // Every service once per site: site a from its one instance, site b from its two shards.
    let total = (SERVICES + 1).to_string();
    let is_total = |v: &Value| v["value"][1].as_str() == Some(total.as_str());
    let per_site = wait(
        &central,
        "count by (site) (netmon_up)",
        Duration::from_secs(60),
        |r| r.len() == 2 && r.iter().all(is_total),
        log,
    );
    assert_eq!(per_site.len(), 2, "{per_site:?}");
    assert!(query(&central, "count by (site, host, service) (netmon_up) > 1").is_empty());
    let shards = query(&central, "sum by (site) (netmon_shard_services)");
    assert!(shards.iter().all(is_total), "{shards:?}");

    // The target down for everyone: the global rule, for it alone.
    let everywhere = wait(
        &central,
        "ALERTS{alertname=\"NetmonServiceDownEverywhere\",alertstate=\"firing\"}",
        Duration::from_secs(30),
        |r| !r.is_empty(),
        log,
    );
    assert_eq!(everywhere.len(), 1, "{everywhere:?}");
    assert_eq!(label(&everywhere[0], "host"), "localhost");
    assert!(query(&central, "ALERTS{alertname=\"NetmonServiceDownFromSite\"}").is_empty());

    // Stop shard 1 of site b: its agent cannot scrape it, and only it is missing.
    b1.take();
    let missing = wait(
        &central,
        "ALERTS{alertname=\"NetmonShardMissing\",alertstate=\"firing\"}",
        Duration::from_secs(30),
        |r| !r.is_empty(),
        log,
    );
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        (label(&missing[0], "site"), label(&missing[0], "shard")),
        ("b".to_string(), "1".to_string())
    );
    drop((a, b0));
}

/// The rules' durations and annotations, with promtool's unit tests.
#[test]
fn the_multi_site_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = testkit::process::find("promtool") else {
        testkit::process::not_run(
            "NETMON_REQUIRE_PROMETHEUS",
            "the_multi_site_rules_pass_their_promtool_unit_tests",
            "`promtool` is not installed (Debian package `prometheus`)",
        );
        return;
    };
    let mut c = Command::new(promtool);
    c.current_dir(root())
        .args(["test", "rules", "tests/testdata/multi_site_alerts_test.yml"]);
    let out = testkit::process::run(c, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut c = Command::new(testkit::process::find("promtool").unwrap());
    c.current_dir(root().join("examples/multi-site")).args([
        "check",
        "config",
        "prometheus-central.yml",
    ]);
    let out = testkit::process::run(c, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}
