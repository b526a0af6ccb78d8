//! The status page's HTML: one self-contained document (inline CSS, SVG and script, no
//! external asset) that works without JavaScript.
//!
//! Without JavaScript the filter box is a form: submitting it reloads `/?filter=...`, which
//! [`super::snapshot`] filters on the server, and a `<noscript>` refresh reloads the page every
//! 30 seconds. With JavaScript the box filters the rows as one types (over the same text the
//! server searches, kept in each row's `data-search`), `/#filter=...` sets it on load, and the
//! page reloads itself every 10 seconds unless the box has the focus. Everything that comes
//! from the config or the network is escaped with [`html`].

use std::fmt::Write as _;
use std::time::Duration;

use crate::base::escape::html;

use super::{Row, Snapshot, State, human, sparkline};

/// The most rows the page shows; the API has them all. Beyond it the page says so and the
/// filter narrows the list: a page of many thousand rows helps nobody and costs the server.
pub const MAX_ROWS: usize = 2000;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fff}\
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.4em 1.2em;padding:.8em 0;border-bottom:1px solid #ddd}\
header h1{font-size:1.4em;margin:0}header a{color:#2a6fdb}\
.banner{background:#fdecea;border:1px solid #c62828;color:#611a15;padding:.6em .9em;margin:1em 0;border-radius:4px}\
.banner pre{white-space:pre-wrap;margin:.4em 0 0;font-size:.92em}\
form{margin:1em 0}input[type=search]{width:24em;max-width:70vw;padding:.3em}\
table{border-collapse:collapse;width:100%}\
th,td{padding:.3em .5em;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}\
th{background:#f6f6f6;font-weight:600;white-space:nowrap}\
td.num{text-align:right;white-space:nowrap}small,.dim{color:#777}code{font-size:.92em}td.endpoint code{display:inline-block;max-width:18em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;vertical-align:bottom}\
.badge{display:inline-block;min-width:5em;text-align:center;border-radius:3px;padding:.05em .4em;font-weight:600;color:#fff}\
.badge.up{background:#2e7d32}.badge.down{background:#c62828}.badge.pending{background:#888}.badge.paused{background:#999}\
tr.down td{background:#fff6f5}.err{color:#8b1a1a;min-width:12em;max-width:30em;overflow-wrap:anywhere}\
small.detail{display:block;max-width:30em;overflow-wrap:anywhere}\
.label{display:inline-block;white-space:nowrap;background:#eef2f8;border-radius:3px;padding:0 .35em;margin:.1em .2em .1em 0;font-size:.9em}\
svg.spark{display:block}";

const SCRIPT: &str = r#"(function () {
  var input = document.getElementById("filter");
  var table = document.getElementById("services");
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var none = document.getElementById("none");
  var shown = document.getElementById("shown");
  var served = (table.getAttribute("data-filter") || "").toLowerCase();
  var words = function (s) { return s.toLowerCase().split(/\s+/).filter(Boolean); };
  var apply = function () {
    var want = words(input.value), n = 0;
    rows.forEach(function (r) {
      var text = r.getAttribute("data-search") || "";
      var ok = want.every(function (w) { return text.indexOf(w) >= 0; });
      r.hidden = !ok;
      if (ok) { n += 1; }
    });
    none.hidden = n > 0;
    shown.textContent = String(n);
  };
  var m = /^#filter=(.*)$/.exec(location.hash);
  if (m) { try { input.value = decodeURIComponent(m[1]); } catch (e) { input.value = m[1]; } }
  var wider;
  input.addEventListener("input", function () {
    apply();
    var q = input.value.trim();
    history.replaceState(null, "", q ? "?filter=" + encodeURIComponent(q) : location.pathname);
    // Rows the server filtered out are not on the page: ask for them again.
    clearTimeout(wider);
    if (served && words(served).some(function (w) { return q.toLowerCase().indexOf(w) < 0; })) {
      wider = setTimeout(function () { location.replace(location.href); }, 500);
    }
  });
  document.getElementById("filter-form").addEventListener("submit", function (e) {
    if (!served) { e.preventDefault(); apply(); }
  });
  apply();
  setInterval(function () { if (document.activeElement !== input) { location.reload(); } }, 10000);
})();"#;

/// The page for `snapshot`, whose metrics are at `telemetry_path`.
pub fn render(snapshot: &Snapshot, telemetry_path: &str) -> String {
    let rows = &snapshot.services;
    let mut h = String::with_capacity(8192 + rows.len().min(MAX_ROWS) * 2048);
    let down = rows.iter().filter(|r| r.state == State::Down).count();
    let title = if down > 0 {
        format!("netmon: {down} down")
    } else {
        "netmon".to_string()
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>\
         <style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(
        h,
        "<header><h1>netmon</h1><span id=\"version\">version {}</span>\
         <span id=\"uptime\" title=\"since {}\">up {}</span>\
         <span>config <code id=\"source\">{}</code></span>\
         <span><a href=\"{}\">metrics</a> · <a href=\"/api/v1/services\">JSON</a> · <a href=\"/-/healthy\">health</a></span></header>",
        html(snapshot.version),
        html(&snapshot.started),
        human(Duration::from_secs(snapshot.uptime_seconds)),
        html(&snapshot.config_source),
        html(telemetry_path),
    );
    if let Some(r) = snapshot.last_reload.as_ref().filter(|r| !r.successful) {
        let _ = writeln!(
            h,
            "<div id=\"reload-failed\" class=\"banner\" role=\"alert\"><strong>The last reload failed</strong> \
             (<time datetime=\"{at}\">{at}</time>): fix the configuration and reload again.<pre>{}</pre></div>",
            html(r.error.as_deref().unwrap_or("")),
            at = html(&r.at),
        );
    }
    let count = |s: State| rows.iter().filter(|r| r.state == s).count();
    let filter = snapshot.filter.as_deref().unwrap_or("");
    let _ = writeln!(
        h,
        "<form id=\"filter-form\" method=\"get\" action=\"/\"><label>Filter \
         <input id=\"filter\" name=\"filter\" type=\"search\" value=\"{}\" \
         placeholder=\"host, service, label, state, error\" autocomplete=\"off\"></label> \
         <button type=\"submit\">Apply</button> <a href=\"/\">clear</a> \
         <span class=\"dim\"><span id=\"shown\">{}</span> shown of {} services: {} down, {} up, {} pending, {} paused</span></form>",
        html(filter),
        rows.len().min(MAX_ROWS),
        snapshot.services_total,
        count(State::Down),
        count(State::Up),
        count(State::Pending),
        count(State::Paused),
    );
    let _ = writeln!(
        h,
        "<table id=\"services\" data-filter=\"{}\"><thead><tr><th>State</th><th>Host</th>\
         <th>Service</th><th>Endpoint</th><th>Interval</th><th>Site / labels</th>\
         <th>Latency</th><th>Last 24 h</th><th>Uptime</th><th>Last check</th><th>Last error</th>\
         </tr></thead><tbody>",
        html(filter)
    );
    for r in rows.iter().take(MAX_ROWS) {
        row(&mut h, r);
    }
    h.push_str("</tbody></table>\n");
    let _ = writeln!(
        h,
        "<p id=\"none\"{}>No service matches the filter.</p>",
        if rows.is_empty() { "" } else { " hidden" }
    );
    if rows.len() > MAX_ROWS {
        let _ = writeln!(
            h,
            "<p id=\"more\">{} more services are not shown: narrow the filter, or read them all from <a href=\"/api/v1/services\">the API</a>.</p>",
            rows.len() - MAX_ROWS
        );
    }
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

fn row(h: &mut String, r: &Row) {
    let state = r.state.as_str();
    let class = state.to_ascii_lowercase();
    let labels: String = r
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "site")
        .map(|(k, v)| format!("<span class=\"label\">{}={}</span>", html(k), html(v)))
        .collect();
    let latency = match r.latency_seconds {
        Some(l) if r.failing => format!(
            "<span class=\"dim\" title=\"the last success\">{:.3} ms</span>",
            l * 1e3
        ),
        Some(l) => format!("{:.3} ms", l * 1e3),
        None => String::new(),
    };
    let uptime = match r.uptime_percent {
        Some(u) => format!(
            "<span title=\"{} of {} results up\">{u:.1} %</span>",
            r.history.up, r.history.results
        ),
        None => String::new(),
    };
    let last = match (&r.last_check, r.last_check_age_seconds) {
        (Some(t), Some(age)) => format!(
            "<time datetime=\"{t}\" title=\"{t}\">{} ago</time>",
            human(Duration::from_secs_f64(age.clamp(0.0, 1e12))),
            t = html(t)
        ),
        _ => "<span class=\"dim\">never</span>".to_string(),
    };
    let error = match (&r.last_error, r.failing) {
        (Some(e), true) => html(e),
        _ => String::new(),
    };
    let points: Vec<super::history::Point> = r
        .history
        .points
        .iter()
        .map(|p| super::history::Point {
            latency: p.latency_seconds,
            down: p.down,
        })
        .collect();
    let _ = writeln!(
        h,
        "<tr class=\"svc {class}\" data-state=\"{class}\" data-search=\"{search}\">\
         <td><span class=\"badge {class}\">{state}</span></td><td class=\"host\">{host}</td>\
         <td class=\"service\">{service}<br><small>{protocol}</small></td>\
         <td class=\"endpoint\"><code title=\"{endpoint}\">{endpoint}</code>{detail}</td><td class=\"num\">{interval}</td>\
         <td>{site}{labels}</td><td class=\"num\">{latency}</td><td>{spark}</td>\
         <td class=\"num uptime\">{uptime}</td><td class=\"num\">{last}</td><td class=\"err\">{error}</td></tr>",
        search = html(&r.search_text()),
        host = html(&r.host),
        service = html(&r.service),
        protocol = r.protocol,
        endpoint = html(&r.endpoint),
        detail = r
            .detail
            .as_deref()
            .map(|d| format!("<small class=\"detail\">{}</small>", html(d)))
            .unwrap_or_default(),
        interval = humantime::format_duration(Duration::from_secs_f64(
            r.interval_seconds.clamp(0.0, 1e12)
        )),
        site = r
            .site
            .as_deref()
            .map(|s| format!("<strong>{}</strong> ", html(s)))
            .unwrap_or_default(),
        spark = sparkline::svg(&points),
    );
}
