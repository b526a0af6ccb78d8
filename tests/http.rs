//! End to end: the real binary probing an HTTP and an HTTPS server started by this test on
//! 127.0.0.1 (a test CA signs the server's certificate; netmon trusts it through `ca_file`),
//! with the HTTP metrics read back from a scrape of /metrics.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Netmon, metric, series};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path() == "/" {
        "ok"
    } else {
        "something else"
    };
    Ok(Response::new(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))))
}

async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            let _ = conn
                                .serve_connection(TokioIo::new(s), service_fn(route))
                                .await;
                        }
                    }
                    None => {
                        let _ = conn
                            .serve_connection(TokioIo::new(stream), service_fn(route))
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// A test CA (PEM) and a server config presenting a leaf for 127.0.0.1 that it signed, which
/// expires on 2030-01-02 (before the CA), so that is the exported expiry.
fn pki() -> (String, Arc<rustls::ServerConfig>, i64) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.not_after = rcgen::date_time_ymd(2030, 1, 2);
    let expiry = leaf.not_after.unix_timestamp();
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(config), expiry)
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
