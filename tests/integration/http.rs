//! End to end: the real binary probing an HTTP and an HTTPS server started by this test on
//! 127.0.0.1 (a test CA signs the server's certificate; netmon trusts it through `ca_file`),
//! with the HTTP metrics read back from a scrape of /metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Netmon, Start, metric, series};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use testkit::http::{Version, response, serve};
use testkit::pki::{Ca, Leaf};

/// "ok" at `/`, something else elsewhere.
fn route(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == "/" {
        "ok"
    } else {
        "something else"
    };
    response(200, body)
}

async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    serve(tls, Version::Http1, route).await
}

/// A test CA (PEM) and a server config presenting a leaf for 127.0.0.1 that it signed, which
/// expires on 2030-01-02 (before the CA), so that is the exported expiry.
fn pki() -> (String, Arc<rustls::ServerConfig>, i64) {
    let ca = Ca::valid("netmon test CA", (2015, 1, 1), (2035, 1, 1));
    let leaf = Leaf::new(&["127.0.0.1"]).valid((2020, 1, 1), (2030, 1, 2));
    (
        ca.pem(),
        leaf.signed_by(&ca).server_config(),
        leaf.not_after_unix(),
    )
}

#[test]
fn http_and_https_services_export_status_phases_and_certificate_expiry() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ca_pem, tls_config, expiry) = pki();
    let plain = rt.block_on(server(None));
    let tls = rt.block_on(server(Some(tls_config)));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let config = format!(
        "defaults: {{ interval: 500ms, timeout: 400ms }}\n\
         targets:\n  127.0.0.1:\n    services:\n\
         \x20     - \"HTTP:{}\"\n\
         \x20     - {{ type: https, port: {}, body_regex: '^ok$', tls: {{ ca_file: '{}' }} }}\n",
        plain.port(),
        tls.port(),
        ca.display()
    );
    let n = Netmon::start(&config, &[]);
    let http_svc = format!("http:{}", plain.port());
    let https_svc = format!("https:{}", tls.port());
    let http = [("protocol", "http"), ("service", http_svc.as_str())];
    let https = [("protocol", "https"), ("service", https_svc.as_str())];
    for labels in [&http, &https] {
        n.wait_metric("netmon_up", labels, Duration::from_secs(10), |v| v == 1.0);
    }
    let text = n.scrape();
    assert_eq!(
        metric(&text, "netmon_http_status_code", &http),
        Some(200.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netmon_http_status_code", &https),
        Some(200.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netmon_tls_cert_not_after_timestamp_seconds", &https),
        Some(expiry as f64),
        "{text}"
    );
    assert!(
        series(&text, "netmon_tls_cert_not_after_timestamp_seconds", &http).is_empty(),
        "a plain http service has no certificate:\n{text}"
    );
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        let mut labels = https.to_vec();
        labels.push(("phase", phase));
        let v = metric(&text, "netmon_http_phase_seconds", &labels);
        assert!(v.is_some_and(|v| v >= 0.0), "phase {phase}:\n{text}");
    }
    let tls_phase = metric(
        &text,
        "netmon_http_phase_seconds",
        &[("service", https_svc.as_str()), ("phase", "tls")],
    );
    assert!(tls_phase.is_some_and(|v| v > 0.0), "{text}");

    // The phases add up to the latency. A probe may finish between the two reads of one
    // scrape, so a few scrapes get a chance.
    let consistent = (0..10).any(|_| {
        let text = n.scrape();
        let latency = metric(&text, "netmon_latency_seconds", &https).unwrap_or(-1.0);
        let sum: f64 = series(&text, "netmon_http_phase_seconds", &https)
            .iter()
            .map(|(_, v)| v)
            .sum();
        let ok = (sum - latency).abs() < 0.001;
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(
        consistent,
        "phases never added up to the latency:\n{}",
        n.scrape()
    );
}
