//! Targets from discovery, end to end: the real binary reading a file_sd file the test
//! writes and an http_sd endpoint the test serves, both changed under it. Series appear and
//! go with their targets, unchanged services keep counting, a failing source keeps its last
//! good list, a static service wins over a discovered one, and a reload keeps what was
//! discovered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use testkit::http::{Version, serve};

use crate::support::{Netmon, Start, metric, tcp_listener};

const WAIT: Duration = Duration::from_secs(15);

/// Accepts connections in a thread so the backlog never fills.
fn serve_forever(l: std::net::TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
}

/// Writes `text` to `path` as tools do: a new file renamed over the old one.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `/metrics` has no `name` series with `labels`.
fn wait_gone(n: &Netmon, name: &str, labels: &[(&str, &str)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = n.scrape();
        if metric(&text, name, labels).is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} still there:\n{text}\n{}",
            n.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn up(n: &Netmon, port: u16) -> f64 {
    let service = format!("tcp:{port}");
    n.wait_metric(
        "netmon_up",
        &[("host", "127.0.0.1"), ("service", &service)],
        WAIT,
        |v| v == 1.0,
    )
}

fn probes(n: &Netmon, port: u16) -> f64 {
    let service = format!("tcp:{port}");
    metric(
        &n.scrape(),
        "netmon_probes_total",
        &[("host", "127.0.0.1"), ("service", &service)],
    )
    .unwrap_or(0.0)
}

#[test]
fn a_file_sd_file_adds_and_removes_targets_as_it_changes() {
    let (l1, p1) = tcp_listener();
    serve_forever(l1);
    let (l2, p2) = tcp_listener();
    serve_forever(l2);
    let sd = tempfile::tempdir().unwrap();
    let file = sd.path().join("targets.json");
    replace(
        &file,
        &format!(
            r#"[{{"targets": ["127.0.0.1:{p1}", "localhost:{p1}"], "labels": {{"team": "db", "__meta_dc": "x"}}}}]"#
        ),
    );
    let pattern = format!("{}/*.json", sd.path().display());
    let config = format!(
        "defaults: {{ interval: 300ms, timeout: 200ms }}\ntargets:\n  localhost: {{ services: [\"TCP:{p1}\"] }}\ndiscovery:\n  - file: {pattern}\n    name: files\n    interval: 1s\n    services: [{{ type: tcp }}]\n"
    );
    let mut n = Netmon::start(&config, &[]);
    let source = [("source", "files")];

    up(&n, p1);
    let text = n.scrape();
    let s1 = format!("tcp:{p1}");
    let first = [("host", "127.0.0.1"), ("service", s1.as_str())];
    // The group's label is on the series; the `__` one is not.
    assert_eq!(
        metric(&text, "netmon_up", &[("team", "db"), first[0], first[1]]),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("__meta_dc"), "{text}");
    // localhost:p1 is the static service's: the file's, not the source's (no `team`).
    n.wait_log("discovered service left out", WAIT);
    let static_up = testkit::exposition::series(
        &text,
        "netmon_up",
        &[("host", "localhost"), ("service", s1.as_str())],
    );
    assert_eq!(static_up.len(), 1, "{text}");
    assert!(!static_up[0].0.contains("team"), "{text}");
    assert_eq!(
        metric(&text, "netmon_discovery_targets", &source),
        Some(2.0)
    );
    assert!(
        metric(
            &text,
            "netmon_discovery_last_success_timestamp_seconds",
            &source
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric(&text, "netmon_discovery_failures_total", &source),
        Some(0.0)
    );

    // A target added: its series appear, the unchanged one keeps its counter.
    let wait = Instant::now() + WAIT;
    while probes(&n, p1) < 3.0 {
        assert!(Instant::now() < wait, "{}", n.scrape());
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = probes(&n, p1);
    replace(
        &file,
        &format!(
            r#"[{{"targets": ["127.0.0.1:{p1}", "127.0.0.1:{p2}"], "labels": {{"team": "db"}}}}]"#
        ),
    );
    up(&n, p2);
    assert!(
        probes(&n, p1) >= before,
        "the unchanged service's counter was reset"
    );
    n.wait_metric("netmon_discovery_targets", &source, WAIT, |v| v == 2.0);

    // A target removed: its series go.
    replace(&file, &format!(r#"[{{"targets": ["127.0.0.1:{p2}"]}}]"#));
    wait_gone(&n, "netmon_up", &first);
    n.wait_metric("netmon_discovery_targets", &source, WAIT, |v| v == 1.0);

    // A broken file: counted, logged with what is wrong, the last good list stays.
    replace(&file, r#"[{"targets": "#);
    n.wait_metric("netmon_discovery_failures_total", &source, WAIT, |v| {
        v >= 1.0
    });
    let line = n.wait_log("discovery source read failed", WAIT);
    assert!(
        line.contains("targets.json") && line.contains("EOF"),
        "{line}"
    );
    assert_eq!(
        metric(&n.scrape(), "netmon_discovery_targets", &source),
        Some(1.0)
    );
    up(&n, p2);

    // A reload of the static file keeps what was discovered.
    let kept = probes(&n, p2);
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    up(&n, p2);
    assert!(
        probes(&n, p2) >= kept,
        "the reload reset a discovered service"
    );

    // A reload without the source stops it: its targets and series go.
    n.write_config(&format!(
        "defaults: {{ interval: 300ms, timeout: 200ms }}\ntargets:\n  localhost: {{ services: [\"TCP:{p1}\"] }}\n"
    ));
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    let s2 = format!("tcp:{p2}");
    wait_gone(&n, "netmon_up", &[("host", "127.0.0.1"), ("service", &s2)]);
    wait_gone(&n, "netmon_discovery_targets", &source);

    // And one that adds it again starts it: the file (mended meanwhile) is read anew.
    replace(&file, &format!(r#"[{{"targets": ["127.0.0.1:{p2}"]}}]"#));
    n.write_config(&config);
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    up(&n, p2);
    n.wait_metric("netmon_discovery_targets", &source, WAIT, |v| v == 1.0);
    n.assert_alive_without_panic();
}

/// An http_sd endpoint answering whatever `answer` holds: (status, content type, body).
type Answer = Arc<Mutex<(u16, &'static str, String)>>;

fn endpoint(rt: &tokio::runtime::Runtime) -> (std::net::SocketAddr, Answer) {
    let answer: Answer = Arc::new(Mutex::new((200, "application/json", "[]".to_string())));
    let shared = answer.clone();
    let addr = rt.block_on(serve(None, Version::Http1, move |_| {
        let (status, content_type, body) = shared.lock().unwrap().clone();
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }));
    (addr, answer)
}

#[test]
fn an_http_sd_source_that_fails_keeps_its_last_good_list() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, answer) = endpoint(&rt);
    let (l1, p1) = tcp_listener();
    serve_forever(l1);
    let (l2, p2) = tcp_listener();
    serve_forever(l2);
    let set =
        |status: u16, body: String| *answer.lock().unwrap() = (status, "application/json", body);
    set(200, format!(r#"[{{"targets": ["127.0.0.1:{p1}"]}}]"#));
    let config = format!(
        "defaults: {{ interval: 300ms, timeout: 200ms }}\ndiscovery:\n  - http: http://{addr}/sd\n    refresh: 1s\n    timeout: 500ms\n    services: [{{ type: tcp }}]\n"
    );
    let n = Netmon::start(&config, &[]);
    let url = format!("http://{addr}/sd");
    let source = [("source", url.as_str())];
    up(&n, p1);
    n.wait_metric("netmon_discovery_targets", &source, WAIT, |v| v == 1.0);

    set(
        200,
        format!(r#"[{{"targets": ["127.0.0.1:{p1}", "127.0.0.1:{p2}"]}}]"#),
    );
    up(&n, p2);
    n.wait_metric("netmon_discovery_targets", &source, WAIT, |v| v == 2.0);

    // A 500, then invalid JSON, then the wrong content type: each counted, the list kept.
    set(500, "down for maintenance".into());
    n.wait_metric("netmon_discovery_failures_total", &source, WAIT, |v| {
        v >= 1.0
    });
    let failed = metric(&n.scrape(), "netmon_discovery_failures_total", &source).unwrap();
    set(200, r#"[{"targets": [1]}]"#.into());
    n.wait_metric("netmon_discovery_failures_total", &source, WAIT, |v| {
        v > failed
    });
    let failed = metric(&n.scrape(), "netmon_discovery_failures_total", &source).unwrap();
    *answer.lock().unwrap() = (200, "text/html", "[]".into());
    n.wait_metric("netmon_discovery_failures_total", &source, WAIT, |v| {
        v > failed
    });
    let text = n.scrape();
    assert_eq!(
        metric(&text, "netmon_discovery_targets", &source),
        Some(2.0),
        "{text}"
    );
    up(&n, p1);
    up(&n, p2);
    let log = n.log().join("\n");
    for want in [
        "the endpoint answered 500 Internal Server Error, not 200 OK",
        "invalid type: integer `1`, expected a string",
        "an http_sd endpoint answers `application/json`",
    ] {
        assert!(log.contains(want), "{want}\n{log}");
    }

    // Good again, with one target fewer: its series go.
    set(200, format!(r#"[{{"targets": ["127.0.0.1:{p2}"]}}]"#));
    let s1 = format!("tcp:{p1}");
    wait_gone(&n, "netmon_up", &[("host", "127.0.0.1"), ("service", &s1)]);
    n.wait_metric("netmon_discovery_targets", &source, WAIT, |v| v == 1.0);
    drop(rt);
}

/// What a set of targets looks like from one side: each `host:port` with its labels.
type Seen = std::collections::BTreeSet<(String, Vec<(String, String)>)>;

/// The targets netmon probes, from its `netmon_up` series of `tcp` services.
fn netmon_seen(n: &Netmon) -> Seen {
    let text = n.scrape();
    let mut seen = Seen::new();
    for line in text.lines().filter(|l| l.starts_with("netmon_up{")) {
        let Some((_, labels, _)) = testkit::exposition::parse_line(line) else {
            continue;
        };
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (Some(host), Some(service)) = (get("host"), get("service")) else {
            continue;
        };
        let Some(port) = service.strip_prefix("tcp:") else {
            continue;
        };
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let rest: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| !["host", "protocol", "service"].contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        seen.insert((addr, rest));
    }
    seen
}

/// The targets a Prometheus scrapes in job `sd`, from its targets API.
fn prometheus_seen(addr: &str) -> Seen {
    let (_, body) = testkit::exposition::http(addr, "GET", "/api/v1/targets?state=active");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut seen = Seen::new();
    for t in v["data"]["activeTargets"].as_array().into_iter().flatten() {
        let labels = t["labels"].as_object().cloned().unwrap_or_default();
        let Some(instance) = labels.get("instance").and_then(|i| i.as_str()) else {
            continue;
        };
        let mut rest: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "instance" && k.as_str() != "job")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        rest.sort();
        seen.insert((instance.to_string(), rest));
    }
    seen
}

#[test]
fn netmon_reads_a_file_sd_file_as_prometheus_does() {
    const TEST: &str = "discovery::netmon_reads_a_file_sd_file_as_prometheus_does";
    let Some([prometheus]) = testkit::process::programs(
        "NETMON_REQUIRE_PROMETHEUS",
        TEST,
        "apt-get install prometheus",
        ["prometheus"],
    ) else {
        return;
    };
    let ports: Vec<u16> = (0..5).map(|_| testkit::net::closed_port()).collect();
    let sd = tempfile::tempdir().unwrap();
    let file = sd.path().join("targets.yml");
    let first = format!(
        "# what an inventory writes\n\
         - targets: ['127.0.0.1:{0}', 'localhost:{1}']\n  labels: {{ env: prod, team: db ops, __meta_dc: fra }}\n\
         - targets: ['[::1]:{2}']\n  labels: {{ env: dev, rack: \"12\" }}\n\
         - targets: ['127.0.0.2:{3}']\n",
        ports[0], ports[1], ports[2], ports[3]
    );
    replace(&file, &first);

    let dir = tempfile::tempdir().unwrap();
    let prom_port = testkit::net::closed_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{ scrape_interval: 1m }}\nscrape_configs:\n  - job_name: sd\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
            file.display()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(prometheus);
    command
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prom = testkit::process::Daemon::start(
        "prometheus",
        command,
        &dir.path().join("prometheus.log"),
        &[prom_port],
    );
    let prom_addr = format!("127.0.0.1:{prom_port}");

    let n = Netmon::start(
        &format!(
            "defaults: {{ interval: 1s, timeout: 500ms }}\ndiscovery:\n  - file: {}\n    interval: 1s\n    services: [{{ type: tcp }}]\n",
            file.display()
        ),
        &[],
    );
    // Both sides agree, on the first file and after it changed.
    let changed = format!(
        "- targets: ['127.0.0.1:{0}']\n  labels: {{ env: prod, team: db ops }}\n\
         - targets: ['[::1]:{1}', '127.0.0.3:{2}']\n  labels: {{ env: canary }}\n",
        ports[0], ports[2], ports[4]
    );
    for (step, want) in [(0, 4), (1, 3)] {
        if step == 1 {
            replace(&file, &changed);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ours, theirs) = (netmon_seen(&n), prometheus_seen(&prom_addr));
            if ours.len() == want && ours == theirs {
                break;
            }
            prom.assert_running();
            assert!(
                Instant::now() < deadline,
                "step {step}: netmon and Prometheus disagree:\nnetmon:     {ours:?}\nprometheus: {theirs:?}\n{}",
                prom.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn hostile_sources_are_refused_within_their_bounds() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let rt = tokio::runtime::Runtime::new().unwrap();
    // An answer that never ends, and one that never comes.
    let endless = rt.block_on(testkit::http::serve_async(None, Version::Http1, |req| {
        Box::pin(async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            static CHUNK: [u8; 65536] = [b' '; 65536];
            let frames = futures_util::stream::repeat_with(|| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&CHUNK)))
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap()
        })
    }));
    // A million targets in 9 MB: under the size limit, far over the target cap.
    let sd = tempfile::tempdir().unwrap();
    let mut text = String::with_capacity(10 << 20);
    text.push_str(r#"[{"targets": ["#);
    for i in 0..1_000_000 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("\"h{i}\""));
    }
    text.push_str("]}]");
    replace(&sd.path().join("million.json"), &text);
    let config = format!(
        "discovery:\n  - file: {dir}/*.json\n    name: million\n    interval: 1s\n    services: [\"TCP:9\"]\n  - http: http://{endless}/endless\n    name: endless\n    refresh: 5s\n    timeout: 4s\n    services: [\"TCP:9\"]\n  - http: http://{endless}/slow\n    name: slow\n    refresh: 1s\n    timeout: 500ms\n    services: [\"TCP:9\"]\n",
        dir = sd.path().display()
    );
    let mut n = Netmon::start(&config, &[]);
    for name in ["million", "endless", "slow"] {
        n.wait_metric(
            "netmon_discovery_failures_total",
            &[("source", name)],
            WAIT,
            |v| v >= 1.0,
        );
        assert_eq!(
            metric(&n.scrape(), "netmon_discovery_targets", &[("source", name)]),
            Some(0.0)
        );
    }
    let log = n.log().join("\n");
    for want in [
        "million.json: more than 10000 targets: raise the source's `max_targets` or split it into several sources",
        "the answer is larger than 16777216 bytes, the most an http_sd answer may be",
        "GET http://",
    ] {
        assert!(log.contains(want), "{want}\n{log}");
    }
    let rss = n.rss_bytes();
    println!(
        "netmon RSS after refusing the hostile sources: {} MiB",
        rss >> 20
    );
    assert!(rss < 256 << 20, "netmon holds {} MiB", rss >> 20);
    n.assert_alive_without_panic();
    drop(rt);
}

#[test]
fn shards_split_discovered_services_between_them() {
    let sd = tempfile::tempdir().unwrap();
    let file = sd.path().join("targets.json");
    let targets: Vec<String> = (1..=30).map(|i| format!("\"127.0.1.{i}:9\"")).collect();
    replace(
        &file,
        &format!(r#"[{{"targets": [{}]}}]"#, targets.join(",")),
    );
    let config = format!(
        "defaults: {{ interval: 10m }}\ndiscovery:\n  - file: {}\n    services: [\"TCP:9\", {{ type: tcp, port: 10 }}]\n",
        file.display()
    );
    let shards: Vec<Netmon> = (0..2)
        .map(|i| {
            let index = i.to_string();
            Netmon::start(&config, &["--shard.index", &index, "--shard.count", "2"])
        })
        .collect();
    let mut owned = Vec::new();
    for n in &shards {
        n.wait_metric("netmon_discovery_targets", &[], WAIT, |v| v == 30.0);
        let count = n.wait_metric("netmon_shard_services", &[], WAIT, |v| v > 0.0);
        let text = n.scrape();
        let mine: std::collections::BTreeSet<String> = text
            .lines()
            .filter(|l| l.starts_with("netmon_up{"))
            .filter_map(testkit::exposition::parse_line)
            .map(|(_, labels, _)| {
                let get = |k: &str| {
                    labels
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default()
                };
                format!("{} {}", get("host"), get("service"))
            })
            .collect();
        assert_eq!(mine.len() as f64, count, "{text}");
        owned.push(mine);
    }
    // Every one of the 60 discovered services is probed by exactly one of the two shards.
    assert!(owned[0].is_disjoint(&owned[1]));
    assert_eq!(owned[0].len() + owned[1].len(), 60);
}
