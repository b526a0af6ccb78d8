//! The status page in a real browser: headless Chromium loads `/` of a running netmon with an
//! UP and a DOWN service, and the tests assert on the DOM after its script ran: DOWN first,
//! a sparkline per service, and the filter box hiding rows (set from `#filter=` on load, and
//! typed into through chromedriver's WebDriver endpoint, including widening a filter the server
//! applied, which must fetch the rows it left out).
//!
//! Without `chromium` (or `chromedriver`) on the machine the tests say so and pass, unless
//! `NETMON_REQUIRE_BROWSER=1` (set by `.ci/run`), where a missing browser fails them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start, closed_port, tcp_listener};

/// The paths of `names`, or `None` (after saying why) when the test cannot run here.
fn browser<const N: usize>(test: &str, names: [&str; N]) -> Option<[PathBuf; N]> {
    testkit::process::programs(
        "NETMON_REQUIRE_BROWSER",
        test,
        "Debian packages chromium and chromium-driver",
        names,
    )
}

/// Flags for a headless Chromium that talks to nothing but the page it is given.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// A netmon with one TCP service that is UP (a listener of this test) and one DOWN (a
/// closed port), both probed at least twice. Returns it with the two ports.
fn netmon_up_and_down() -> (Netmon, std::net::TcpListener, u16, u16) {
    let (listener, up) = tcp_listener();
    let down = closed_port();
    let config = format!(
        "defaults: {{ interval: 300ms, timeout: 200ms }}\ntargets:\n  127.0.0.1:\n    labels: {{ site: lab }}\n    services: [\"TCP:{up}\", \"TCP:{down}\"]\n"
    );
    let n = Netmon::start(&config, &[]);
    for port in [up, down] {
        let service = format!("tcp:{port}");
        n.wait_metric(
            "netmon_probes_total",
            &[("service", service.as_str())],
            Duration::from_secs(15),
            |v| v >= 2.0,
        );
    }
    (n, listener, up, down)
}

/// The rows of the services table in `dom`, each as its opening `<tr ...>` tag and content.
fn rows(dom: &str) -> Vec<&str> {
    let body = dom
        .split_once("<tbody>")
        .and_then(|(_, b)| b.split_once("</tbody>"))
        .map_or("", |(b, _)| b);
    body.split("<tr ").skip(1).collect()
}

#[test]
fn chromium_renders_down_first_with_sparklines_and_filters_from_the_address() {
    let Some([chromium]) = browser("status page in chromium", ["chromium"]) else {
        return;
    };
    let (n, _listener, up, down) = netmon_up_and_down();
    let profile = tempfile::tempdir().unwrap();
    // The filter in the fragment never reaches the server: only the page's script applies it.
    let url = format!("http://{}/#filter=tcp:{up}", n.addr);
    let out = Command::new(&chromium)
        .args(chromium_args(profile.path()))
        .arg("--dump-dom")
        .arg(&url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    let rows = rows(&dom);
    assert_eq!(rows.len(), 2, "two services expected in:\n{dom}");
    assert!(
        rows[0].contains(&format!("tcp:{down}")) && rows[0].contains("data-state=\"down\""),
        "the DOWN service comes first:\n{dom}"
    );
    assert!(rows[1].contains(&format!("tcp:{up}")) && rows[1].contains("data-state=\"up\""));
    for r in &rows {
        assert!(r.contains("<svg class=\"spark\""), "no sparkline in {r}");
    }
    assert!(
        rows[1].contains("<path class=\"line\"") || rows[1].contains("<circle"),
        "the UP service's sparkline draws its latency: {}",
        rows[1]
    );
    assert!(
        rows[0].contains("class=\"fail\""),
        "the DOWN one marks failures"
    );
    // The script read the fragment and hid the DOWN row.
    assert!(
        rows[0].contains(" hidden"),
        "DOWN row not hidden:\n{}",
        rows[0]
    );
    assert!(!rows[1].contains(" hidden"), "UP row hidden:\n{}", rows[1]);
    assert!(dom.contains("<span id=\"shown\">1</span>"), "{dom}");
    assert!(
        dom.contains("id=\"version\""),
        "the header shows the version"
    );
}

#[test]
fn the_page_works_without_javascript() {
    // No browser needed: what a client without a script sees is the server's HTML.
    let (n, _listener, up, down) = netmon_up_and_down();
    let (status, page) = n.get(&format!("/?filter=tcp%3A{down}"));
    assert_eq!(status, 200);
    let rows = rows(&page);
    assert_eq!(rows.len(), 1, "{page}");
    assert!(rows[0].contains(&format!("tcp:{down}")) && rows[0].contains("DOWN"));
    assert!(
        page.contains(&format!("value=\"tcp:{down}\"")),
        "the box shows the filter"
    );
    assert!(page.contains("<noscript><meta http-equiv=\"refresh\""));
    let (status, all) = n.get("/");
    assert_eq!(status, 200);
    assert!(all.find(&format!("tcp:{down}")) < all.find(&format!("tcp:{up}")));
    let (status, json) = n.get("/api/v1/services");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(v["services"][0]["state"], "down", "{json}");
    assert_eq!(v["services"][1]["state"], "up", "{json}");
    assert_eq!(v["services"][1]["site"], "lab");
    assert!(v["services"][1]["history"]["results"].as_u64() >= Some(2));
    assert_eq!(v["services"][1]["uptime_percent"], 100.0);
}

/// A chromedriver on a loopback port, stopped when dropped.
struct Driver {
    child: Child,
    addr: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(path: &Path) -> Driver {
        let port = closed_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Driver {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, v)) = d.try_call("GET", "/status", None) {
                if v["value"]["ready"] == true {
                    return d;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One WebDriver command over HTTP/1.1 (`Connection: close`, so the answer ends at EOF).
    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(ToString::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        // chromedriver keeps the connection open whatever the request says: read the head,
        // then exactly Content-Length bytes.
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        let (head_len, length) = loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&buf[..n]);
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while answer.len() < head_len + length {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&answer[..head_len]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let end = answer.len().min(head_len + length);
        let value =
            serde_json::from_slice(&answer[head_len..end]).map_err(std::io::Error::other)?;
        Ok((status, value))
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, v) = self
            .try_call(method, path, Some(&body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }
}

#[test]
fn typing_into_the_filter_box_hides_the_other_rows() {
    let Some([chromium, chromedriver]) =
        browser("status page filter typed", ["chromium", "chromedriver"])
    else {
        return;
    };
    let (n, _listener, up, down) = netmon_up_and_down();
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let session = driver.call(
        "POST",
        "/session",
        serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": chromium_args(profile.path()),
            }
        }}}),
    );
    let id = session["sessionId"]
        .as_str()
        .expect("a session")
        .to_string();
    let s = |p: &str| format!("/session/{id}{p}");
    driver.call(
        "POST",
        &s("/url"),
        serde_json::json!({ "url": format!("http://{}/", n.addr) }),
    );
    let visible = || -> Vec<(String, bool)> {
        let v = driver.call(
            "POST",
            &s("/execute/sync"),
            serde_json::json!({ "script": "return Array.prototype.map.call(document.querySelectorAll('#services tbody tr'), function (r) { return [r.querySelector('.service').firstChild.textContent, r.offsetParent !== null]; });", "args": [] }),
        );
        v.as_array()
            .expect("rows")
            .iter()
            .map(|r| (r[0].as_str().unwrap_or("").to_string(), r[1] == true))
            .collect()
    };
    // The WebDriver id of the filter box of the page loaded now.
    let filter_box = || -> String {
        let found = driver.call(
            "POST",
            &s("/element"),
            serde_json::json!({ "using": "css selector", "value": "#filter" }),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .expect("the filter box")
            .to_string()
    };
    let up_name = format!("tcp:{up}");
    let down_name = format!("tcp:{down}");
    assert_eq!(
        visible(),
        [(down_name.clone(), true), (up_name.clone(), true)],
        "both rows shown, DOWN first"
    );
    let element = filter_box();
    driver.call(
        "POST",
        &s(&format!("/element/{element}/value")),
        serde_json::json!({ "text": "down" }),
    );
    assert_eq!(
        visible(),
        [(down_name.clone(), true), (up_name.clone(), false)],
        "typing `down` hides the UP row"
    );
    let shown = driver.call(
        "POST",
        &s("/execute/sync"),
        serde_json::json!({ "script": "return [document.getElementById('shown').textContent, location.search];", "args": [] }),
    );
    assert_eq!(shown, serde_json::json!(["1", "?filter=down"]));
    driver.call(
        "POST",
        &s(&format!("/element/{element}/clear")),
        serde_json::json!({}),
    );
    driver.call(
        "POST",
        &s(&format!("/element/{element}/value")),
        serde_json::json!({ "text": "no-such-service" }),
    );
    assert_eq!(
        visible(),
        [(down_name.clone(), false), (up_name.clone(), false)],
        "nothing matches"
    );
    let none = driver.call(
        "POST",
        &s("/execute/sync"),
        serde_json::json!({ "script": "return document.getElementById('none').hidden;", "args": [] }),
    );
    assert_eq!(none, false, "the page says nothing matches");

    // A page the server filtered has only the rows it kept: widening the filter asks again.
    driver.call(
        "POST",
        &s("/url"),
        serde_json::json!({ "url": format!("http://{}/?filter={down_name}", n.addr) }),
    );
    assert_eq!(
        visible(),
        [(down_name.clone(), true)],
        "filtered by the server"
    );
    let element = filter_box();
    driver.call(
        "POST",
        &s(&format!("/element/{element}/clear")),
        serde_json::json!({}),
    );
    driver.call(
        "POST",
        &s(&format!("/element/{element}/value")),
        serde_json::json!({ "text": "tcp" }),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The page reloads under the script: a call may fail while it does.
        let rows = driver
            .try_call(
                "POST",
                &s("/execute/sync"),
                Some(&serde_json::json!({ "script": "return document.querySelectorAll('#services tbody tr').length;", "args": [] })),
            )
            .ok()
            .and_then(|(_, v)| v["value"].as_u64());
        if rows == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "widening the filter did not bring the other row back (rows: {rows:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(visible(), [(down_name, true), (up_name, true)]);
    let _ = driver.try_call("DELETE", &s(""), None);
}
