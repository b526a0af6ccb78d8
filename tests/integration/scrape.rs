//! End to end: what `/metrics` sends: a gzipped body when the scrape asks for one, the same
//! series either way, and the RTT histogram as each service configures it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Netmon, Start, closed_port};

/// GET /metrics with the given extra header lines; returns (lowercased head, raw body).
fn get_metrics(addr: &str, headers: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    (head, raw.split_off(end + 4))
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("not gzip ({e}): {:?}", &body[..body.len().min(64)]));
    text
}

/// The sample lines of `text` without their values, sorted: what two scrapes taken moments
/// apart must share (counters and gauges move in between, the series do not).
fn series_of(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter(|l| !l.starts_with("process_") && !l.starts_with("netmon_runtime_tasks"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn metrics_are_gzipped_when_asked_and_hold_the_same_series() {
    let port = closed_port();
    let config = format!(
        "defaults: {{ interval: 500ms, timeout: 300ms }}\ntargets:\n  127.0.0.1:\n    services: [\"TCP:{port}\"]\n"
    );
    let n = Netmon::start(&config, &[]);
    n.wait_metric(
        "netmon_probes_total",
        &[("protocol", "tcp")],
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    // What Prometheus sends.
    let (head, zipped) = get_metrics(
        &n.addr,
        "Accept-Encoding: gzip\r\nAccept: text/plain;version=0.0.4\r\n",
    );
    assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
    assert!(head.contains("\r\nvary: accept-encoding"), "{head}");
    let unzipped = gunzip(&zipped);
    let (head, plain) = get_metrics(&n.addr, "");
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(head.contains("\r\nvary: accept-encoding"), "{head}");
    let plain = String::from_utf8(plain).expect("the plain body is text");
    assert_eq!(series_of(&unzipped), series_of(&plain));
    assert!(
        plain.contains(&format!(
            "netmon_up{{host=\"127.0.0.1\",protocol=\"tcp\",service=\"tcp:{port}\"}} 0"
        )),
        "{plain}"
    );
    assert!(
        zipped.len() * 3 < plain.len(),
        "{} bytes gzipped, {} plain",
        zipped.len(),
        plain.len()
    );
    // Refused, or not offered: the plain text.
    for refused in [
        "Accept-Encoding: gzip;q=0\r\n",
        "Accept-Encoding: identity\r\n",
        "Accept-Encoding: br\r\n",
        "Accept-Encoding: *, gzip;q=0\r\n",
    ] {
        let (head, body) = get_metrics(&n.addr, refused);
        assert!(!head.contains("content-encoding"), "{refused}: {head}");
        assert!(body.starts_with(b"# HELP"), "{refused}");
    }
    // OpenMetrics gzips too.
    let (head, om) = get_metrics(
        &n.addr,
        "Accept-Encoding: deflate, gzip\r\nAccept: application/openmetrics-text; version=1.0.0\r\n",
    );
    assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(gunzip(&om).ends_with("# EOF\n"));
}

fn free_udp_port() -> u16 {
    // Bound then released: netmon binds it again at once (tests must not use fixed ports).
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("its address").port()
}

/// The `le` bounds of `netmon_rtt_seconds` for the service named `service`.
fn bounds(text: &str, service: &str) -> Vec<String> {
    let label = format!("service=\"{service}\"");
    text.lines()
        .filter(|l| l.starts_with("netmon_rtt_seconds_bucket{") && l.contains(&label))
        .filter_map(|l| Some(l.split("le=\"").nth(1)?.split('"').next()?.to_string()))
        .collect()
}

#[test]
fn each_service_has_the_rtt_histogram_it_configures() {
    let port = free_udp_port();
    let config = format!(
        "defaults: {{ interval: 500ms, timeout: 400ms, rtt_buckets: [0.001, 0.01, 0.1] }}\n\
         echo_server: {{ listen: \"127.0.0.1:{port}\", allow: [127.0.0.0/8], tcp: false }}\n\
         targets:\n  \
           localhost:\n    \
             services:\n      \
               - {{ type: echo, name: defaults, port: {port}, count: 2, packet_interval: 10ms }}\n      \
               - {{ type: echo, name: own, port: {port}, count: 2, packet_interval: 10ms, rtt_buckets: [0.0005, 0.25] }}\n      \
               - {{ type: echo, name: none, port: {port}, count: 2, packet_interval: 10ms, rtt_histogram: false }}\n"
    );
    let n = Netmon::start(&config, &[]);
    n.wait_metric(
        "netmon_packets_received_total",
        &[("service", "none")],
        Duration::from_secs(10),
        |v| v >= 2.0,
    );
    let text = n.scrape();
    assert_eq!(
        text.matches("# TYPE netmon_rtt_seconds histogram").count(),
        1,
        "{text}"
    );
    assert_eq!(
        bounds(&text, "defaults"),
        ["0.001", "0.01", "0.1", "+Inf"],
        "{text}"
    );
    assert_eq!(bounds(&text, "own"), ["0.0005", "0.25", "+Inf"], "{text}");
    assert!(bounds(&text, "none").is_empty(), "{text}");
    assert!(
        !text.contains(
            "netmon_rtt_seconds_count{host=\"localhost\",protocol=\"echo\",service=\"none\"}"
        ),
        "{text}"
    );
    // The rest of the packet families stay.
    assert!(
        text.contains(
            "netmon_packet_loss_ratio{host=\"localhost\",protocol=\"echo\",service=\"none\"}"
        ),
        "{text}"
    );
}

#[test]
fn serve_refuses_the_rtt_keys_config_check_refuses() {
    for file in [
        "invalid-rtt-buckets.yml",
        "invalid-rtt-histogram.yml",
        "invalid-rtt-protocol.yml",
    ] {
        let path = format!("tests/testdata/config/{file}");
        let check = std::process::Command::new(crate::support::BIN)
            .args(["config", "check", &path])
            .output()
            .expect("run config check");
        let serve = std::process::Command::new(crate::support::BIN)
            .args([
                "--config.file",
                &path,
                "--web.listen-address",
                "127.0.0.1:0",
            ])
            .output()
            .expect("run serve");
        assert_eq!(check.status.code(), Some(1), "{file}");
        assert_eq!(serve.status.code(), Some(1), "{file}");
        let errors = |out: &std::process::Output| -> Vec<String> {
            String::from_utf8_lossy(&out.stderr)
                .lines()
                // The `FILE:LINE:COL: message` lines; the headers above them differ.
                .filter_map(|l| {
                    let at = l.find(&format!("{path}:"))?;
                    let located = &l[at..];
                    located[path.len() + 1..]
                        .starts_with(|c: char| c.is_ascii_digit())
                        .then(|| located.to_string())
                })
                .collect()
        };
        let (check, serve) = (errors(&check), errors(&serve));
        assert!(!check.is_empty(), "{file}");
        assert_eq!(check, serve, "{file}");
    }
}
