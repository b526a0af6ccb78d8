//! The shipped Grafana dashboards and alert rules, checked without any external program: every
//! metric name they use is one netmon exports, the dashboards are importable (an `__inputs`
//! datasource, the `datasource`, `host`, `protocol` and `site` variables, every query through the
//! `datasource` variable), and every alert is unit-tested both firing and not firing.
//!
//! tests/prometheus.rs runs the same queries against a real Prometheus scraping a real netmon.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every metric name netmon exports, from the metrics table of the design contract
/// (DESIGN.md), plus `netmon_scheduler_lateness_seconds` and `netmon_probes_in_flight`
/// (src/metrics.rs), `netmon_rtt_jitter_seconds`, `netmon_r_factor` and `netmon_mos` (ICMP/echo
/// probes), `netmon_echo_server_packets_total` (the echo server), the `stamp` probe's and
/// STAMP reflector's `netmon_stamp_*` families, and the `netmon_traceroute_*` families
/// (DESIGN.md, "Link and path quality"). Histograms are listed by
/// their base name; `_bucket`, `_sum` and `_count` follow from [`HISTOGRAMS`].
const EXPORTED: &[&str] = &[
    "netmon_up",
    "netmon_latency_seconds",
    "netmon_probe_duration_seconds",
    "netmon_probes_total",
    "netmon_probe_failures_total",
    "netmon_last_probe_timestamp_seconds",
    "netmon_packets_sent_total",
    "netmon_packets_received_total",
    "netmon_packet_loss_ratio",
    "netmon_rtt_jitter_seconds",
    "netmon_r_factor",
    "netmon_mos",
    "netmon_http_status_code",
    "netmon_http_phase_seconds",
    "netmon_tls_cert_not_after_timestamp_seconds",
    "netmon_dns_rcode",
    "netmon_dns_answer_records",
    "netmon_ntp_offset_seconds",
    "netmon_ntp_stratum",
    "netmon_traceroute_hops",
    "netmon_traceroute_hop_rtt_seconds",
    "netmon_traceroute_hop_loss_ratio",
    "netmon_traceroute_route_changes_total",
    "netmon_traceroute_reached",
    "netmon_build_info",
    "netmon_config_last_reload_successful",
    "netmon_config_last_reload_success_timestamp_seconds",
    "netmon_probes_in_flight",
    "netmon_echo_server_packets_total",
    "netmon_echo_server_tcp_connections_total",
    "netmon_echo_server_tcp_bytes_total",
    "netmon_stamp_forward_delay_seconds",
    "netmon_stamp_backward_delay_seconds",
    "netmon_stamp_reflector_dwell_seconds",
    "netmon_stamp_forward_loss_ratio",
    "netmon_stamp_backward_loss_ratio",
    "netmon_stamp_reordered_total",
    "netmon_stamp_duplicates_total",
    "netmon_stamp_reflector_clock_synchronised",
    "netmon_stamp_reflector_packets_total",
    "netmon_discovery_targets",
    "netmon_discovery_failures_total",
    "netmon_discovery_last_success_timestamp_seconds",
    "netmon_runtime_tasks",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
];

/// Histogram families (base names).
const HISTOGRAMS: &[&str] = &["netmon_rtt_seconds", "netmon_scheduler_lateness_seconds"];

/// Series Prometheus itself makes for every target.
const SYNTHETIC: &[&str] = &["up"];

/// Families without the per-service labels (host, protocol, service).
const NOT_PER_SERVICE: &[&str] = &[
    "netmon_build_info",
    "netmon_config_last_reload_successful",
    "netmon_config_last_reload_success_timestamp_seconds",
    "netmon_probes_in_flight",
    "netmon_runtime_tasks",
    "netmon_echo_server_packets_total",
    "netmon_echo_server_tcp_connections_total",
    "netmon_echo_server_tcp_bytes_total",
    "netmon_stamp_reflector_packets_total",
    "netmon_discovery_targets",
    "netmon_discovery_failures_total",
    "netmon_discovery_last_success_timestamp_seconds",
    "netmon_scheduler_lateness_seconds_bucket",
    "up",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn exported() -> BTreeSet<String> {
    let mut s: BTreeSet<String> = EXPORTED.iter().map(|s| s.to_string()).collect();
    for h in HISTOGRAMS {
        for suffix in ["_bucket", "_sum", "_count"] {
            s.insert(format!("{h}{suffix}"));
        }
    }
    s.extend(SYNTHETIC.iter().map(|s| s.to_string()));
    s
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// range brackets and grouping lists, not followed by `(` (functions, aggregations) and not
/// keywords. Enough for the expressions we ship; not a PromQL parser.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // After `by`, `on`, ...: the next parenthesised list holds label names.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            // Matchers and ranges hold strings; skip them with their quotes.
            i += 1;
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '(' && label_list_next {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            label_list_next = false;
        } else if c.is_ascii_digit() || c == '.' {
            // A number, possibly 1e-9 or 0x1F: skip its alphanumerics.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let rest: String = chars[j..].iter().collect();
            // `sum by (le) (...)` is an aggregation as much as `sum(...)`.
            let is_call = rest.starts_with('(')
                || rest.starts_with("by ")
                || rest.starts_with("by(")
                || rest.starts_with("without");
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                label_list_next = true;
            } else if !is_call && !KEYWORDS.contains(&lower.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_found_and_labels_functions_and_strings_are_not() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (instance, le) (rate(netmon_rtt_seconds_bucket{host=~"a.b",x="netmon_fake"}[$__rate_interval])))"#
        ),
        ["netmon_rtt_seconds_bucket"]
    );
    assert_eq!(
        metric_names("count(netmon_up{a=\"1\"} == 0) or vector(0)"),
        ["netmon_up"]
    );
    assert_eq!(
        metric_names(
            "rate(process_cpu_seconds_total[1m]) and on (job, instance) netmon_build_info"
        ),
        ["process_cpu_seconds_total", "netmon_build_info"]
    );
    assert_eq!(
        metric_names("netmon_tls_cert_not_after_timestamp_seconds - time() < 14 * 86400"),
        ["netmon_tls_cert_not_after_timestamp_seconds"]
    );
    assert_eq!(metric_names("netmon_nope > 1e-9"), ["netmon_nope"]);
}

/// A query found in a dashboard: where it is and its expression.
#[derive(Debug)]
struct Query {
    place: String,
    expr: String,
}

fn load_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            out.push((name, load_json(&path)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        out.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["netmon-host.json", "netmon-overview.json"]
    );
    out
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

fn queries(name: &str, d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "{name} panel {:?} query {}",
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"].as_str().unwrap_or("?")
                ),
                expr: t["expr"].as_str().expect("every target has an expr").into(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            out.push(Query {
                place: format!("{name} variable {}", v["name"]),
                expr: label_values_selector(variable_query(v)).to_string(),
            });
        }
    }
    out
}

/// The series selector of `label_values(SELECTOR, LABEL)`, the form every variable uses.
fn label_values_selector(q: &str) -> &str {
    q.strip_prefix("label_values(")
        .and_then(|r| r.rsplit_once(','))
        .map(|(selector, _)| selector.trim())
        .unwrap_or_else(|| panic!("variable query {q:?} is not label_values(SELECTOR, LABEL)"))
}

fn variable_query(v: &Value) -> &str {
    v["query"]["query"]
        .as_str()
        .or(v["query"].as_str())
        .expect("variable query")
}

/// The rule expressions of alerts.yml with their alert names.
fn alert_rules() -> Vec<(String, serde_yaml::Value)> {
    let text = std::fs::read_to_string(root().join("alerts.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("named rule");
            out.push((name.to_string(), r.clone()));
        }
    }
    out
}

#[test]
fn every_metric_in_dashboards_and_rules_is_one_netmon_exports() {
    let known = exported();
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    let mut check = |place: &str, expr: &str| {
        let names = metric_names(expr);
        if names.is_empty() {
            unknown.push(format!("{place}: no metric at all in {expr:?}"));
        }
        for n in names {
            if !known.contains(&n) {
                unknown.push(format!("{place}: unknown metric {n:?} in {expr:?}"));
            }
            used.insert(n);
        }
    };
    for (name, d) in dashboards() {
        for q in queries(&name, &d) {
            check(&q.place, &q.expr);
        }
    }
    for (name, rule) in alert_rules() {
        let expr = rule["expr"].as_str().expect("expr");
        check(&format!("alerts.yml {name}"), expr);
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    // The dashboards show every probe family (nothing exported is forgotten).
    for family in [
        "netmon_up",
        "netmon_latency_seconds",
        "netmon_probe_duration_seconds",
        "netmon_probes_total",
        "netmon_probe_failures_total",
        "netmon_last_probe_timestamp_seconds",
        "netmon_rtt_seconds_bucket",
        "netmon_packets_sent_total",
        "netmon_packets_received_total",
        "netmon_packet_loss_ratio",
        "netmon_rtt_jitter_seconds",
        "netmon_r_factor",
        "netmon_mos",
        "netmon_http_status_code",
        "netmon_http_phase_seconds",
        "netmon_tls_cert_not_after_timestamp_seconds",
        "netmon_dns_rcode",
        "netmon_dns_answer_records",
        "netmon_ntp_offset_seconds",
        "netmon_ntp_stratum",
        "netmon_build_info",
        "netmon_config_last_reload_successful",
    ] {
        assert!(used.contains(family), "no dashboard or rule uses {family}");
    }
}

#[test]
fn an_unknown_metric_name_is_caught() {
    let known = exported();
    let bad = metric_names(r#"rate(netmon_probe_failure_total{host="a"}[5m])"#);
    assert_eq!(bad, ["netmon_probe_failure_total"]);
    assert!(!known.contains(&bad[0]));
}

#[test]
fn dashboards_are_importable_and_use_the_datasource_variable() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        // Grafana's import asks for the datasource named in __inputs.
        let inputs = d["__inputs"].as_array().expect("__inputs");
        assert!(
            inputs
                .iter()
                .any(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus"),
            "{name}: no prometheus datasource input"
        );
        let input_name = inputs[0]["name"].as_str().unwrap();
        assert!(uids.insert(d["uid"].as_str().expect("uid").to_string()));
        assert!(d["title"].as_str().is_some_and(|t| t.starts_with("netmon")));

        let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        for v in ["datasource", "host", "protocol", "site"] {
            assert!(vars.contains_key(v), "{name}: no variable {v}");
        }
        let ds = vars["datasource"];
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        assert_eq!(
            ds["current"]["value"],
            format!("${{{input_name}}}"),
            "{name}: the import fills the datasource variable"
        );
        for v in ["host", "protocol", "site"] {
            assert_eq!(vars[v]["datasource"]["uid"], "${datasource}", "{name} {v}");
        }

        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}: duplicate id"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && g["h"].as_u64().unwrap() > 0,
                "{name} {title}"
            );
            if p["type"] == "row" {
                continue;
            }
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name} {title}: no description"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name} {title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name} {title}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name} {title}");
            }
        }
    }
}

#[test]
fn per_service_queries_filter_on_host_protocol_and_site() {
    for (name, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap();
                let per_service = metric_names(expr)
                    .iter()
                    .any(|n| !NOT_PER_SERVICE.contains(&n.as_str()) && !n.starts_with("process_"));
                if per_service {
                    for v in ["$host", "$protocol", "$site"] {
                        assert!(
                            expr.contains(v),
                            "{name} panel {:?}: {expr:?} ignores {v}",
                            p["title"]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_alert_names_host_protocol_and_service_and_is_unit_tested_both_ways() {
    let tests_text =
        std::fs::read_to_string(root().join("tests/testdata/alerts_test.yml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests_text).unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            if a["exp_alerts"].as_sequence().is_some_and(|s| s.is_empty()) {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let rules = alert_rules();
    assert!(rules.len() >= 7);
    for (name, rule) in &rules {
        assert!(firing.contains(name), "{name} is never tested firing");
        assert!(quiet.contains(name), "{name} is never tested not firing");
        let summary = rule["annotations"]["summary"].as_str().unwrap_or("");
        let description = rule["annotations"]["description"].as_str().unwrap_or("");
        assert!(!summary.is_empty() && !description.is_empty(), "{name}");
        let expr = rule["expr"].as_str().unwrap();
        let per_service = metric_names(expr)
            .iter()
            .any(|n| !NOT_PER_SERVICE.contains(&n.as_str()));
        if per_service {
            for label in ["$labels.host", "$labels.protocol", "$labels.service"] {
                assert!(
                    description.contains(label),
                    "{name}: description lacks {label}"
                );
            }
        }
    }
}

#[test]
fn provisioning_files_point_at_prometheus_and_the_dashboards() {
    let ds = std::fs::read_to_string(root().join("grafana/provisioning/datasources/netmon.yml"))
        .unwrap();
    let ds: serde_yaml::Value = serde_yaml::from_str(&ds).unwrap();
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    let db =
        std::fs::read_to_string(root().join("grafana/provisioning/dashboards/netmon.yml")).unwrap();
    let db: serde_yaml::Value = serde_yaml::from_str(&db).unwrap();
    assert_eq!(db["providers"][0]["type"].as_str(), Some("file"));
    assert!(db["providers"][0]["options"]["path"].as_str().is_some());
}
