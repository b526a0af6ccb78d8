//! The status page `/` and its JSON twin `GET /api/v1/services`: every service with its
//! endpoint, interval, site and labels, state (DOWN first), last latency, a latency sparkline
//! and uptime over its [`history`], last error and last check, under a header with the
//! version, uptime and config source, and a banner when the last reload failed.
//!
//! [`snapshot`] gathers the data once; [`page`] renders it as HTML with inline SVG
//! ([`sparkline`]) and the API serialises the same [`Snapshot`] with serde, so the two never
//! disagree. `crate::web` only routes to them. The [`history`] itself is kept by the runner
//! (it sits in the lowest layer, using nothing of netmon).

pub mod history;
pub mod page;
pub mod sparkline;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::model::Service;
use crate::probe::Options;
use crate::reload::Reloader;
use crate::runner::ServiceStatus;

/// The longest filter honoured, in characters; the rest is ignored.
pub const MAX_FILTER: usize = 200;

/// Everything the page and the API show, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// netmon's version.
    pub version: &'static str,
    /// When monitoring started (RFC 3339).
    pub started: String,
    /// Seconds since then.
    pub uptime_seconds: u64,
    /// Where the configuration comes from: a file path or the built-in default.
    pub config_source: String,
    /// The last reload, `null` before the first.
    pub last_reload: Option<ReloadView>,
    /// The filter applied, `null` for none.
    pub filter: Option<String>,
    /// How many services run, filtered or not.
    pub services_total: usize,
    /// The services the filter kept: DOWN first, then PENDING, UP and PAUSED, each by host and
    /// service.
    pub services: Vec<Row>,
    /// When the snapshot was taken (not serialised: the page's relative times count from it).
    #[serde(skip)]
    pub now: SystemTime,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadView {
    /// When it ended (RFC 3339).
    pub at: String,
    /// Whether it applied in full.
    pub successful: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
}

/// A service's state, in the order the page lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The last probe failed.
    Down,
    /// No result yet.
    Pending,
    /// The last probe succeeded.
    Up,
    /// Probing is paused (from the console).
    Paused,
}

impl State {
    /// The uppercase word the page shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Down => "DOWN",
            State::Pending => "PENDING",
            State::Up => "UP",
            State::Paused => "PAUSED",
        }
    }
}

/// One service.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The host, as configured.
    pub host: String,
    /// The `service` label.
    pub service: String,
    /// The protocol's lowercase name.
    pub protocol: &'static str,
    /// What is probed: a URL for http(s), `host:port` or the host otherwise.
    pub endpoint: String,
    /// Seconds between probes.
    pub interval_seconds: f64,
    /// Seconds a probe may take.
    pub timeout_seconds: f64,
    /// The `site` label, if any.
    pub site: Option<String>,
    /// The extra constant labels (including `site`).
    pub labels: BTreeMap<String, String>,
    /// The state.
    pub state: State,
    /// Latency of the last successful probe, seconds.
    pub latency_seconds: Option<f64>,
    /// Packet loss of the last probe (0 to 1), for protocols that send rounds.
    pub loss_ratio: Option<f64>,
    /// When the last probe finished (RFC 3339).
    pub last_check: Option<String>,
    /// Seconds since then.
    pub last_check_age_seconds: Option<f64>,
    /// The last failure's message, kept after recovery.
    pub last_error: Option<String>,
    /// Whether the last probe failed, so `last_error` is current.
    pub failing: bool,
    /// What the last probe saw beyond up and latency, where the protocol tells more: a
    /// traceroute's path (`1 192.0.2.1 0.412ms, 2 *, ...`).
    pub detail: Option<String>,
    /// Successful results as a percentage of those in the history.
    pub uptime_percent: Option<f64>,
    /// The history behind the sparkline and the uptime.
    pub history: HistoryView,
}

/// A service's recent results.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Results of the last 24 hours held (at most `capacity`).
    pub results: usize,
    /// How many succeeded.
    pub up: usize,
    /// The most results held for this service: 24 hours' worth at its interval, at most 1440.
    pub capacity: usize,
    /// Time of the oldest result held (RFC 3339).
    pub since: Option<String>,
    /// The results in at most 120 consecutive groups, oldest first, as the sparkline draws them.
    pub points: Vec<PointView>,
}

/// A group of consecutive results.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PointView {
    /// Mean latency of the group's successes, seconds; `null` when none succeeded.
    pub latency_seconds: Option<f64>,
    /// Whether a result of the group failed.
    pub down: bool,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What a service probes, as an operator would write it.
pub fn endpoint(s: &Service) -> String {
    let host = if s.host.contains(':') && !s.host.starts_with('[') {
        format!("[{}]", s.host)
    } else {
        s.host.clone()
    };
    match &s.options {
        Options::Http(o) | Options::Https(o) => {
            if let Some(u) = &o.url {
                return u.0.to_string();
            }
            let port = o.port.map(|p| format!(":{p}")).unwrap_or_default();
            let path = o.path.as_deref().unwrap_or("/");
            format!("{}://{host}{port}{path}", s.protocol.as_str())
        }
        options => match options.port().or(s.protocol.default_port()) {
            Some(p) => format!("{host}:{p}"),
            None => host,
        },
    }
}

impl Row {
    /// The row of one service, its history read at `now`.
    pub fn of(s: &ServiceStatus, now: SystemTime) -> Row {
        let v = &s.view;
        let state = match (s.paused, v.up) {
            (true, _) => State::Paused,
            (false, None) => State::Pending,
            (false, Some(true)) => State::Up,
            (false, Some(false)) => State::Down,
        };
        let summary = s.live.history(now);
        Row {
            host: s.service.host.clone(),
            service: s.service.name.clone(),
            protocol: s.service.protocol.as_str(),
            endpoint: endpoint(&s.service),
            interval_seconds: s.service.interval.as_secs_f64(),
            timeout_seconds: s.service.timeout.as_secs_f64(),
            site: s.service.labels.get("site").cloned(),
            labels: s.service.labels.clone(),
            state,
            latency_seconds: v.latency.map(|l| l.as_secs_f64()),
            loss_ratio: v.loss.filter(|l| l.is_finite()),
            last_check: v.last_check.map(rfc3339),
            last_check_age_seconds: v
                .last_check
                .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
            last_error: v.last_error.clone(),
            failing: v.failing,
            detail: v.detail.clone(),
            uptime_percent: summary.uptime_percent(),
            history: HistoryView {
                results: summary.results,
                up: summary.up,
                capacity: summary.capacity,
                since: summary.since.map(rfc3339),
                points: summary
                    .points
                    .iter()
                    .map(|p| PointView {
                        latency_seconds: p.latency.filter(|l| l.is_finite()),
                        down: p.down,
                    })
                    .collect(),
            },
        }
    }

    /// The lowercase text the filter searches: host, service, protocol, endpoint, state,
    /// labels (`key=value`), the detail (a traceroute's hop addresses) and the current error. The page's script searches the same text.
    pub fn search_text(&self) -> String {
        let mut t = format!(
            "{} {} {} {} {}",
            self.host,
            self.service,
            self.protocol,
            self.endpoint,
            self.state.as_str()
        );
        for (k, v) in &self.labels {
            t.push_str(&format!(" {k}={v}"));
        }
        if let Some(d) = &self.detail {
            t.push(' ');
            t.push_str(d);
        }
        if self.failing {
            if let Some(e) = &self.last_error {
                t.push(' ');
                t.push_str(e);
            }
        }
        t.to_lowercase()
    }

    /// Whether every whitespace-separated word of `filter` is in [`Row::search_text`],
    /// ignoring case. An empty filter keeps every row.
    pub fn matches(&self, filter: &str) -> bool {
        let text = self.search_text();
        filter
            .to_lowercase()
            .split_whitespace()
            .all(|word| text.contains(word))
    }
}

/// The filter of a request's query string (`filter=...`), cut to [`MAX_FILTER`] characters.
pub fn filter_of(query: Option<&str>) -> Option<String> {
    let query = query?;
    let value = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.trim().chars().take(MAX_FILTER).collect::<String>())?;
    (!value.is_empty()).then_some(value)
}

/// Builds the snapshot from `rows` (every running service) and the reloader's facts.
pub fn build(
    rows: &[ServiceStatus],
    reloader: &Reloader,
    filter: Option<String>,
    now: SystemTime,
) -> Snapshot {
    let mut services: Vec<Row> = rows
        .iter()
        .map(|s| Row::of(s, now))
        .filter(|r| filter.as_deref().is_none_or(|f| r.matches(f)))
        .collect();
    services.sort_by(|a, b| (a.state, &a.host, &a.service).cmp(&(b.state, &b.host, &b.service)));
    let started = reloader.started();
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        started: rfc3339(started),
        uptime_seconds: now.duration_since(started).unwrap_or_default().as_secs(),
        config_source: reloader.source().to_string(),
        last_reload: reloader.last_reload().map(|l| ReloadView {
            at: rfc3339(l.at),
            successful: l.error.is_none(),
            error: l.error,
        }),
        filter,
        services_total: rows.len(),
        services,
        now,
    }
}

/// The snapshot now, of the services `filter` keeps (see [`Row::matches`]).
pub async fn snapshot(reloader: &Reloader, filter: Option<String>) -> Snapshot {
    // The monitor's lock is held only to copy the rows; the histories are read after.
    let rows = reloader.status().await;
    build(&rows, reloader, filter, SystemTime::now())
}

/// The API's JSON for `snapshot`.
pub fn json(snapshot: &Snapshot) -> Vec<u8> {
    // Serialising these plain types cannot fail (string keys, no maps of other keys).
    let mut body = serde_json::to_vec(snapshot).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    body
}

/// `d` for a person: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::loader::{Source, load};
    use crate::metrics::Metrics;
    use crate::runner::{Monitor, Status, StatusView};

    const CONFIG: &str = r#"
targets:
  "db<1>.example":
    interval: 1m
    labels: { site: eu-west, rack: "r&1" }
    services: ["TCP:5432", { type: https, name: api, path: /healthz, port: 8443 }]
  "2001:db8::1":
    services: [ICMP, "UDP:53"]
"#;

    fn rows(now: SystemTime) -> Vec<ServiceStatus> {
        let config = load(CONFIG, "test.yml").expect("valid");
        config
            .services()
            .map(|s| {
                let live = Arc::new(Status::new(s.interval, history::MAX_RESULTS));
                let mut view = StatusView::default();
                match s.name.as_str() {
                    "tcp:5432" => {
                        for i in 0..10u64 {
                            let at = now - Duration::from_secs(60 * (10 - i));
                            live.push_history(at, (i != 3).then(|| Duration::from_millis(2 + i)));
                        }
                        view.up = Some(true);
                        view.latency = Some(Duration::from_millis(11));
                        view.last_check = Some(now - Duration::from_secs(60));
                        view.last_error = Some("timeout: no answer within 5s".into());
                        view.detail = Some("1 192.0.2.1 0.412ms, 2 *, 3 <192.0.2.3>".into());
                    }
                    "api" => {
                        live.push_history(now, None);
                        view.up = Some(false);
                        view.failing = true;
                        view.last_check = Some(now);
                        view.last_error = Some("<script>alert(1)</script>".into());
                    }
                    _ => {}
                }
                ServiceStatus {
                    service: s.clone(),
                    paused: false,
                    view,
                    live,
                }
            })
            .collect()
    }

    fn reloader() -> Reloader {
        Reloader::new(Source::BuiltIn, Monitor::new(Arc::new(Metrics::new()), 1))
    }

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn the_api_has_the_documented_schema() {
        let now = SystemTime::now();
        let snap = build(&rows(now), &reloader(), None, now);
        let v: serde_json::Value = serde_json::from_slice(&json(&snap)).expect("JSON");
        assert_eq!(
            keys(&v),
            [
                "config_source",
                "filter",
                "last_reload",
                "services",
                "services_total",
                "started",
                "uptime_seconds",
                "version"
            ]
        );
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["services_total"], 4);
        assert!(v["last_reload"].is_null() && v["filter"].is_null());
        let services = v["services"].as_array().expect("a list");
        let row = &services[0];
        assert_eq!(
            keys(row),
            [
                "detail",
                "endpoint",
                "failing",
                "history",
                "host",
                "interval_seconds",
                "labels",
                "last_check",
                "last_check_age_seconds",
                "last_error",
                "latency_seconds",
                "loss_ratio",
                "protocol",
                "service",
                "site",
                "state",
                "timeout_seconds",
                "uptime_percent"
            ]
        );
        assert_eq!(
            keys(&row["history"]),
            ["capacity", "points", "results", "since", "up"]
        );
        // DOWN first, then PENDING (by host), then UP.
        let order: Vec<(&str, &str)> = services
            .iter()
            .map(|s| (s["service"].as_str().unwrap(), s["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                ("api", "down"),
                ("icmp", "pending"),
                ("udp:53", "pending"),
                ("tcp:5432", "up")
            ]
        );
        assert_eq!(row["endpoint"], "https://db<1>.example:8443/healthz");
        assert_eq!(row["site"], "eu-west");
        assert_eq!(row["labels"]["rack"], "r&1");
        assert_eq!(row["uptime_percent"], 0.0);
        assert_eq!(services[1]["endpoint"], "[2001:db8::1]");
        assert_eq!(services[2]["endpoint"], "[2001:db8::1]:53");
        assert!(services[1]["uptime_percent"].is_null());
        let up = &services[3];
        assert_eq!(up["uptime_percent"], 90.0);
        assert_eq!(up["latency_seconds"], 0.011);
        assert_eq!(up["interval_seconds"], 60.0);
        assert_eq!(up["history"]["results"], 10);
        assert_eq!(up["history"]["capacity"], 1440);
        assert_eq!(up["history"]["points"].as_array().unwrap().len(), 10);
        assert_eq!(up["history"]["points"][3]["down"], true);
        assert!(up["history"]["points"][3]["latency_seconds"].is_null());
        assert_eq!(up["history"]["points"][4]["latency_seconds"], 0.006);
        assert_eq!(up["last_check_age_seconds"], 60.0);
        // Recovered: the old error is kept but not current.
        assert_eq!(up["failing"], false);
        assert_eq!(up["last_error"], "timeout: no answer within 5s");
    }

    #[test]
    fn the_filter_keeps_rows_with_every_word_ignoring_case() {
        let now = SystemTime::now();
        let all = rows(now);
        let kept = |f: &str| -> Vec<String> {
            build(&all, &reloader(), filter_of(Some(f)), now)
                .services
                .into_iter()
                .map(|r| r.service)
                .collect()
        };
        assert_eq!(kept("filter=DOWN"), ["api"]);
        assert_eq!(kept("filter=site%3Deu-west+tcp"), ["tcp:5432"]);
        assert_eq!(kept("filter=2001"), ["icmp", "udp:53"]);
        assert_eq!(
            kept("filter=alert"),
            ["api"],
            "the current error is searched"
        );
        assert_eq!(
            kept("filter=timeout"),
            Vec::<String>::new(),
            "an old one is not"
        );
        assert_eq!(kept("filter=").len(), 4);
        assert_eq!(kept("other=x").len(), 4);
        let long = format!("filter={}", "x".repeat(10_000));
        assert_eq!(filter_of(Some(&long)).unwrap().len(), MAX_FILTER);
        assert_eq!(
            filter_of(Some("filter=%ZZ%FF")).as_deref(),
            Some("%ZZ\u{fffd}")
        );
    }

    #[test]
    fn the_page_escapes_what_comes_from_config_and_network() {
        let now = SystemTime::now();
        let page = page::render(&build(&rows(now), &reloader(), None, now), "/metrics");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("db&lt;1&gt;.example") && !page.contains("db<1>"));
        assert!(page.contains("rack=r&amp;1"));
        assert_eq!(page.matches("<svg class=\"spark\"").count(), 4);
        assert!(page.find("api<br>").unwrap() < page.find("tcp:5432<br>").unwrap());
        assert!(!page.contains("reload-failed"));
        assert!(!page.contains("NaN") && !page.contains("inf "));
    }

    #[test]
    fn a_probes_detail_shows_under_its_endpoint_and_the_filter_finds_it() {
        let now = SystemTime::now();
        let snap = build(&rows(now), &reloader(), None, now);
        let page = page::render(&snap, "/metrics");
        assert!(
            page.contains(
                "<small class=\"detail\">1 192.0.2.1 0.412ms, 2 *, 3 &lt;192.0.2.3&gt;</small></td>"
            ),
            "{page}"
        );
        assert_eq!(page.matches("class=\"detail\"").count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&json(&snap)).expect("JSON");
        let details: Vec<&serde_json::Value> = v["services"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| &r["detail"])
            .filter(|d| !d.is_null())
            .collect();
        assert_eq!(details, ["1 192.0.2.1 0.412ms, 2 *, 3 <192.0.2.3>"]);
        // A hop's address finds the service whose path has it.
        let kept = build(&rows(now), &reloader(), Some("192.0.2.3".into()), now);
        let names: Vec<&str> = kept.services.iter().map(|r| r.service.as_str()).collect();
        assert_eq!(names, ["tcp:5432"]);
    }

    #[test]
    fn a_failed_reload_shows_a_banner_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yml");
        std::fs::write(&path, "targets: [<oops>\n").unwrap();
        let reloader = Reloader::new(
            Source::File(path.clone()),
            Monitor::new(Arc::new(Metrics::new()), 1),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(reloader.reload()).is_err());
        let now = SystemTime::now();
        let snap = build(&[], &reloader, None, now);
        let last = snap.last_reload.clone().expect("a reload happened");
        assert!(!last.successful);
        assert!(
            last.error.as_deref().unwrap().contains("bad.yml"),
            "{last:?}"
        );
        let page = page::render(&snap, "/metrics");
        assert!(page.contains("id=\"reload-failed\""), "{page}");
        assert!(page.contains("No service matches"));
        // Loopback only; the probe never runs: the runtime stops before its first round.
        std::fs::write(&path, "targets:\n  127.0.0.1:\n    services: [\"TCP:9\"]\n").unwrap();
        let again = rt.block_on(reloader.reload());
        assert!(again.is_ok(), "{again:?}");
        let snap = build(&[], &reloader, None, SystemTime::now());
        assert!(snap.last_reload.as_ref().unwrap().successful);
        assert!(!page::render(&snap, "/metrics").contains("reload-failed"));
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        let h = |s| human(Duration::from_secs(s));
        assert_eq!(h(0), "0 s");
        assert_eq!(h(59), "59 s");
        assert_eq!(h(61), "1 min");
        assert_eq!(h(3600), "1 h");
        assert_eq!(h(3 * 3600 + 5 * 60), "3 h 5 min");
        assert_eq!(h(86_400 * 2 + 3600 * 4), "2 d 4 h");
        assert!(h(u64::MAX).starts_with(&format!("{} d ", u64::MAX / 86_400)));
    }
}
