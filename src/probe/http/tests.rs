//! Tests of the HTTP probe against hyper servers started here on 127.0.0.1, plain and TLS,
//! with rcgen certificates whose `notAfter` is known.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use testkit::http::{Version, serve_async};
use testkit::pki::{Ca, Day, Leaf};
use tokio::net::TcpListener;

use super::*;
use crate::base::labels::Labels;
use crate::probe::{ProbeMetrics, Protocol};

type Body = BoxBody<Bytes, Infallible>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

fn redirect(code: u16, to: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("location", to)
        .body(full(""))
        .unwrap()
}

/// The test server's routes.
async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let header = req
        .headers()
        .get("x-test")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let auth = req.headers().contains_key("authorization");
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .replace("127.0.0.1", "localhost");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = String::from_utf8_lossy(&body.unwrap_or_default()).to_string();
    let resp = if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        Response::builder()
            .status(code)
            .body(full(format!("status {code}")))
            .unwrap()
    } else if let Some(n) = path.strip_prefix("/hops/") {
        // /hops/N redirects N times before a 200.
        let n: u32 = n.parse().unwrap_or(0);
        if n == 0 {
            Response::new(full("arrived"))
        } else {
            redirect(302, &format!("/hops/{}", n - 1))
        }
    } else {
        match path.as_str() {
            "/ok" => Response::new(full("hello: the service is \"status\":\"ok\"")),
            "/loop" => redirect(302, "/loop"),
            "/echo" => Response::new(full(format!(
                "method={method} x-test={header} auth={auth} body={body}"
            ))),
            "/see-other" => redirect(303, "/echo"),
            "/cross-origin" => redirect(302, &format!("http://{host}/echo")),
            "/temporary" => redirect(307, "/echo"),
            "/no-location" => Response::builder().status(302).body(full("")).unwrap(),
            "/stall" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Response::new(full("late"))
            }
            "/endless" => {
                static CHUNK: [u8; 16384] = [b'x'; 16384];
                let frames = futures_util::stream::repeat_with(|| {
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK)))
                });
                Response::new(BodyExt::boxed(StreamBody::new(frames)))
            }
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(full("not found"))
                .unwrap(),
        }
    };
    Ok(resp)
}

/// Serves [`route`] on 127.0.0.1, over TLS when `tls` is given.
async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    serve_async(tls, Version::Http1, |req| {
        Box::pin(async move { route(req).await.unwrap_or_else(|e| match e {}) })
    })
    .await
}

/// A CA and a leaf for `localhost` and 127.0.0.1 that it signed. The CA expires first, so the
/// exported expiry (the earliest in the chain) is the CA's.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

const CA_NOT_AFTER: (i32, u8, u8) = (2029, 3, 4);
const LEAF_NOT_AFTER: (i32, u8, u8) = (2030, 1, 2);
const SELF_SIGNED_NOT_AFTER: (i32, u8, u8) = (2031, 5, 6);

fn unix(ymd: (i32, u8, u8)) -> i64 {
    rcgen::date_time_ymd(ymd.0, ymd.1, ymd.2).unix_timestamp()
}

/// Every leaf here names `localhost` and 127.0.0.1.
const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

fn pki() -> Pki {
    let ca = Ca::valid("netmon test CA", (2015, 1, 1), CA_NOT_AFTER);
    let leaf = Leaf::new(&NAMES).valid((2020, 1, 1), LEAF_NOT_AFTER);
    Pki {
        ca_pem: ca.pem(),
        server: leaf.signed_by(&ca).server_config(),
    }
}

/// A self-signed leaf; returns its PEM and a server config presenting it.
fn self_signed() -> (String, Arc<rustls::ServerConfig>) {
    let cert = Leaf::new(&NAMES)
        .valid((2020, 1, 1), SELF_SIGNED_NOT_AFTER)
        .self_signed();
    (cert.pem(), cert.server_config())
}

/// Options parsed from YAML through the config's own path, so validation runs too.
fn options(protocol: Protocol, yaml: &str) -> Options {
    let node = marked_yaml::parse_yaml(0, yaml).unwrap();
    match crate::probe::parse_options(protocol, &node) {
        Ok(crate::probe::Options::Http(o)) | Ok(crate::probe::Options::Https(o)) => o,
        Ok(other) => panic!("not http options: {other:?}"),
        Err(e) => panic!("{yaml}: {}", e.message),
    }
}

fn options_error(protocol: Protocol, yaml: &str) -> String {
    let node = marked_yaml::parse_yaml(0, yaml).unwrap();
    match crate::probe::parse_options(protocol, &node) {
        Ok(o) => panic!("{yaml} was accepted: {o:?}"),
        Err(e) => e.message,
    }
}

/// A probe with its own metric families, to read them back.
fn probe(protocol: Protocol, yaml: &str) -> (HttpProbe, ProbeMetrics) {
    let labels: Labels = vec![
        ("host".into(), "127.0.0.1".into()),
        ("protocol".into(), protocol.as_str().into()),
        ("service".into(), "s".into()),
    ];
    let metrics = ProbeMetrics::register(&mut Registry::default());
    let p = HttpProbe::new(
        protocol.as_str(),
        options(protocol, yaml),
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.http,
    )
    .unwrap();
    (p, metrics)
}

fn target() -> Target {
    Target {
        host: "127.0.0.1".into(),
    }
}

/// Runs the probe with a bound, so a hang fails the test instead of blocking it.
async fn run(p: &HttpProbe) -> Outcome {
    tokio::time::timeout(Duration::from_secs(20), p.run(&target()))
        .await
        .expect("probe finished")
}

async fn http(yaml: &str) -> (Outcome, HttpProbe) {
    let (p, _) = probe(Protocol::Http, yaml);
    (run(&p).await, p)
}

fn phase(p: &HttpProbe, phase: Phase) -> f64 {
    p.phases[phase as usize].get()
}

fn not_after(p: &HttpProbe) -> Option<i64> {
    // Reading through the family would create the series; look without creating.
    let text = {
        let mut registry = Registry::default();
        registry.register("c", "c", p.metrics.not_after.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    };
    text.lines()
        .find(|l| l.starts_with("c{"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test]
async fn status_codes_and_classes() {
    let addr = server(None).await;
    let port = addr.port();
    let (ok, p) = http(&format!("{{port: {port}, path: /ok}}")).await;
    ok.unwrap();
    assert_eq!(p.status.get(), 200);

    // Default: 2xx and 3xx pass, 4xx and 5xx fail with reason status.
    let (e, p) = http(&format!("{{port: {port}, path: /status/404}}")).await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("404"), "{e}");
    assert_eq!(p.status.get(), 404);
    let (ok, _) = http(&format!("{{port: {port}, path: /status/304}}")).await;
    ok.unwrap();

    // Explicit codes and classes.
    let (ok, _) = http(&format!(
        "{{port: {port}, path: /status/404, expect_status: [200, 4xx]}}"
    ))
    .await;
    ok.unwrap();
    let (ok, _) = http(&format!(
        "{{port: {port}, path: /status/503, expect_status: 503}}"
    ))
    .await;
    ok.unwrap();
    let (e, _) = http(&format!(
        "{{port: {port}, path: /ok, expect_status: [5xx]}}"
    ))
    .await;
    assert_eq!(e.unwrap_err().reason, Reason::Status);
}

#[tokio::test]
async fn redirects_are_followed_and_bounded() {
    let addr = server(None).await;
    let port = addr.port();
    let (ok, p) = http(&format!("{{port: {port}, path: /hops/{MAX_REDIRECTS}}}")).await;
    ok.unwrap();
    assert_eq!(p.status.get(), 200);

    let (e, p) = http(&format!(
        "{{port: {port}, path: /hops/{}}}",
        MAX_REDIRECTS + 1
    ))
    .await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("more than 10 redirects"), "{e}");
    assert_eq!(p.status.get(), 302);

    // Not followed: the 302 itself is the answer, and 3xx passes by default.
    let (ok, p) = http(&format!(
        "{{port: {port}, path: /hops/1, follow_redirects: false}}"
    ))
    .await;
    ok.unwrap();
    assert_eq!(p.status.get(), 302);
    let (e, _) = http(&format!(
        "{{port: {port}, path: /hops/1, follow_redirects: false, expect_status: 200}}"
    ))
    .await;
    assert_eq!(e.unwrap_err().reason, Reason::Status);

    // A 3xx without Location is a final answer.
    let (ok, p) = http(&format!("{{port: {port}, path: /no-location}}")).await;
    ok.unwrap();
    assert_eq!(p.status.get(), 302);
}

#[tokio::test]
async fn a_redirect_loop_fails() {
    let addr = server(None).await;
    let (e, _) = http(&format!("{{port: {}, path: /loop}}", addr.port())).await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Status, "{e}");
    assert!(e.message.contains("redirect loop"), "{e}");
}

#[tokio::test]
async fn method_headers_and_body_are_sent_and_redirects_rewrite_them() {
    let addr = server(None).await;
    let port = addr.port();
    let base = format!(
        "port: {port}, method: POST, body: payload, headers: {{X-Test: yes, Authorization: Bearer t}}"
    );
    let (ok, _) = http(&format!(
        "{{{base}, path: /echo, body_regex: '^method=POST x-test=yes auth=true body=payload$'}}"
    ))
    .await;
    ok.unwrap();
    // 303: GET without the body. 307: same method and body.
    let (ok, _) = http(&format!(
        "{{{base}, path: /see-other, body_regex: '^method=GET x-test=yes auth=true body=$'}}"
    ))
    .await;
    ok.unwrap();
    let (ok, _) = http(&format!(
        "{{{base}, path: /temporary, body_regex: '^method=POST x-test=yes auth=true body=payload$'}}"
    ))
    .await;
    ok.unwrap();
}

#[tokio::test]
async fn credentials_do_not_follow_a_redirect_to_another_origin() {
    let addr = server(None).await;
    // /cross-origin sends 127.0.0.1:PORT to localhost:PORT: the same server, another origin.
    let (ok, _) = http(&format!(
        "{{port: {}, path: /cross-origin, headers: {{Authorization: Bearer t, X-Test: kept}}, body_regex: '^method=GET x-test=kept auth=false body=$'}}",
        addr.port()
    ))
    .await;
    ok.unwrap();
}

#[tokio::test]
async fn body_regexes() {
    let addr = server(None).await;
    let port = addr.port();
    let (ok, _) = http(&format!(
        "{{port: {port}, path: /ok, body_regex: '\"status\":\"ok\"', body_not_regex: error}}"
    ))
    .await;
    ok.unwrap();
    let (e, _) = http(&format!("{{port: {port}, path: /ok, body_regex: '^nope'}}")).await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Body, "{e}");
    assert!(
        e.message.contains("does not match body_regex /^nope/"),
        "{e}"
    );
    let (e, _) = http(&format!(
        "{{port: {port}, path: /ok, body_not_regex: 'status'}}"
    ))
    .await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Body, "{e}");
    assert!(e.message.contains("matches body_not_regex"), "{e}");
}

#[tokio::test]
async fn a_stalled_server_keeps_the_probe_pending_and_the_phase_shows_where() {
    let addr = server(None).await;
    let (p, _) = probe(
        Protocol::Http,
        &format!("{{port: {}, path: /stall}}", addr.port()),
    );
    // The runner's timeout drops the probe future; do the same.
    let r = tokio::time::timeout(Duration::from_millis(300), p.run(&target())).await;
    assert!(
        r.is_err(),
        "the probe returned {r:?} from a server that never answers"
    );
    // Dropped while waiting for the head: the time went to `processing`.
    assert!(
        phase(&p, Phase::Processing) >= 0.25,
        "{}",
        phase(&p, Phase::Processing)
    );
    assert_eq!(phase(&p, Phase::Transfer), 0.0);
    assert_eq!(p.status.get(), 0);
}

#[tokio::test]
async fn an_endless_body_is_capped() {
    let addr = server(None).await;
    let (e, _) = http(&format!(
        "{{port: {}, path: /endless, max_body: 100000, body_regex: never}}",
        addr.port()
    ))
    .await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Body, "{e}");
    assert!(e.message.contains("max_body (100000 bytes)"), "{e}");
    // Default cap, no regex (bytes are counted, not kept): fails the same way.
    let (e, _) = http(&format!("{{port: {}, path: /endless}}", addr.port())).await;
    assert!(e.unwrap_err().message.contains("1048576 bytes"));
}

#[tokio::test]
async fn refused_and_address_family_failures() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let (e, p) = http(&format!("{{port: {port}}}")).await;
    assert_eq!(e.unwrap_err().reason, Reason::Refused);
    assert_eq!(p.status.get(), 0);
    // No IPv6 address for an IPv4 literal: reason dns, without asking any resolver.
    let (e, _) = http(&format!("{{port: {port}, ip: ipv6}}")).await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Dns, "{e}");
    assert!(e.message.contains("no IPv6 address"), "{e}");
}

#[tokio::test]
async fn phases_add_up_to_the_latency() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let tls = server(Some(pki.server)).await;
    let plain = server(None).await;
    let cases = [
        (
            Protocol::Http,
            format!("{{port: {}, path: /hops/2}}", plain.port()),
        ),
        (
            Protocol::Https,
            format!(
                "{{port: {}, path: /hops/3, tls: {{ca_file: '{}'}}}}",
                tls.port(),
                ca.display()
            ),
        ),
    ];
    for (protocol, yaml) in cases {
        let (p, _) = probe(protocol, &yaml);
        let ok = run(&p).await.unwrap();
        let sum: f64 = Phase::ALL.iter().map(|&ph| phase(&p, ph)).sum();
        let total = ok.latency.as_secs_f64();
        // The contract is 1 ms; the clock makes it exact, so hold it to float rounding, which
        // also catches a short phase (transfer on loopback) going uncounted.
        assert!(
            (sum - total).abs() < 1e-6,
            "phases {sum} vs latency {total}"
        );
        assert!(phase(&p, Phase::Transfer) > 0.0);
        assert!(phase(&p, Phase::Connect) > 0.0);
        assert!(phase(&p, Phase::Processing) > 0.0);
        if protocol == Protocol::Https {
            assert!(phase(&p, Phase::Tls) > 0.0);
        } else {
            assert_eq!(phase(&p, Phase::Tls), 0.0);
        }
    }
}

#[tokio::test]
async fn https_with_ca_file_reads_the_earliest_expiry_exactly() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let addr = server(Some(pki.server)).await;
    let yaml = format!(
        "{{port: {}, path: /ok, tls: {{ca_file: '{}'}}}}",
        addr.port(),
        ca.display()
    );
    let (p, _) = probe(Protocol::Https, &yaml);
    assert_eq!(not_after(&p), None, "no expiry series before a handshake");
    run(&p).await.unwrap();
    assert_eq!(p.status.get(), 200);
    assert_eq!(not_after(&p), Some(unix(CA_NOT_AFTER)));
    assert!(unix(CA_NOT_AFTER) < unix(LEAF_NOT_AFTER));

    // By name: the certificate is for localhost too; server_name can also say so for the IP.
    let yaml = format!(
        "{{url: 'https://localhost:{}/ok', ip: ipv4, tls: {{ca_file: '{}'}}}}",
        addr.port(),
        ca.display()
    );
    let (p, _) = probe(Protocol::Https, &yaml);
    run(&p).await.unwrap();
    let yaml = format!(
        "{{port: {}, path: /ok, tls: {{ca_file: '{}', server_name: localhost}}}}",
        addr.port(),
        ca.display()
    );
    let (p, _) = probe(Protocol::Https, &yaml);
    run(&p).await.unwrap();
    // A name the certificate does not carry fails verification.
    let yaml = format!(
        "{{port: {}, path: /ok, tls: {{ca_file: '{}', server_name: example.org}}}}",
        addr.port(),
        ca.display()
    );
    let (p, _) = probe(Protocol::Https, &yaml);
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Tls, "{e}");
    assert!(e.message.contains("certificate"), "{e}");
}

#[tokio::test]
async fn a_self_signed_certificate_fails_unless_trusted() {
    let (pem, config) = self_signed();
    let addr = server(Some(config)).await;
    let port = addr.port();

    // The system trust store: not trusted, reason tls, and the expiry is still exported.
    let (p, _) = probe(Protocol::Https, &format!("{{port: {port}, path: /ok}}"));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Tls, "{e}");
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: self-signed certificate not in the system trust store")
    );
    assert_eq!(p.status.get(), 0);
    assert_eq!(not_after(&p), Some(unix(SELF_SIGNED_NOT_AFTER)));

    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {port}, path: /ok, tls: {{insecure_skip_verify: true}}}}"),
    );
    run(&p).await.unwrap();
    assert_eq!(not_after(&p), Some(unix(SELF_SIGNED_NOT_AFTER)));

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("self.pem");
    std::fs::write(&ca, &pem).unwrap();
    let (p, _) = probe(
        Protocol::Https,
        &format!(
            "{{port: {port}, path: /ok, tls: {{ca_file: '{}'}}}}",
            ca.display()
        ),
    );
    run(&p).await.unwrap();
}

#[tokio::test]
async fn https_to_a_plain_http_port_is_a_tls_failure() {
    let addr = server(None).await;
    let (p, _) = probe(
        Protocol::Https,
        &format!(
            "{{port: {}, tls: {{insecure_skip_verify: true}}}}",
            addr.port()
        ),
    );
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Tls, "{e}");
}

#[tokio::test]
async fn forget_removes_every_series() {
    let (_, config) = self_signed();
    let addr = server(Some(config)).await;
    let labels: Labels = vec![("host".into(), "h".into())];
    let mut registry = Registry::default();
    let metrics = ProbeMetrics::register(&mut registry);
    let p = HttpProbe::new(
        Protocol::Https.as_str(),
        options(
            Protocol::Https,
            &format!(
                "{{port: {}, tls: {{insecure_skip_verify: true}}}}",
                addr.port()
            ),
        ),
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.http,
    )
    .unwrap();
    let _ = run(&p).await;
    let encode = |r: &Registry| {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, r).unwrap();
        out
    };
    let text = encode(&registry);
    for name in [
        "http_status_code{host=\"h\"} 404",
        "http_phase_seconds{host=\"h\",phase=\"transfer\"}",
        "tls_cert_not_after_timestamp_seconds{host=\"h\"}",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    p.forget();
    let text = encode(&registry);
    assert!(!text.contains("host=\"h\""), "{text}");
}

#[test]
fn options_are_validated_while_the_config_loads() {
    let cases = [
        (
            Protocol::Http,
            "{url: 'https://x/'}",
            "has scheme `https` but the service type is `http`",
        ),
        (
            Protocol::Http,
            "{url: 'http://x/', path: /a}",
            "either `url` or `path`/`port`",
        ),
        (
            Protocol::Http,
            "{url: 'not a url'}",
            "invalid url `not a url`",
        ),
        (
            Protocol::Http,
            "{url: 'ftp://x/'}",
            "must start with http:// or https://",
        ),
        (
            Protocol::Http,
            "{url: 'http://u:p@x/'}",
            "carries credentials",
        ),
        (Protocol::Http, "{path: healthz}", "must start with `/`"),
        (Protocol::Http, "{method: 'GE T'}", "invalid method"),
        (
            Protocol::Http,
            "{method: HEAD, body_regex: x}",
            "a HEAD response has no body",
        ),
        (
            Protocol::Http,
            "{headers: {'bad name': x}}",
            "invalid header name",
        ),
        (
            Protocol::Http,
            "{headers: {Content-Length: '3'}}",
            "is set by netmon",
        ),
        (
            Protocol::Http,
            "{headers: {X-A: '1', x-a: '2'}}",
            "given twice",
        ),
        (
            Protocol::Http,
            "{expect_status: [200, 6xx]}",
            "invalid status `6xx`",
        ),
        (Protocol::Http, "{expect_status: 99}", "invalid status `99`"),
        (
            Protocol::Http,
            "{expect_status: []}",
            "expect_status is empty",
        ),
        (
            Protocol::Http,
            "{body_regex: '('}",
            "invalid regular expression",
        ),
        (Protocol::Http, "{max_body: 0}", "max_body must be between"),
        (
            Protocol::Http,
            "{follow_redirect: false}",
            "unknown option `follow_redirect`",
        ),
        (
            Protocol::Https,
            "{tls: {insecure_skip_verify: true, ca_file: /etc/hostname}}",
            "ca_file",
        ),
        (
            Protocol::Https,
            "{tls: {ca_file: /no/such/file.pem}}",
            "cannot read ca_file `/no/such/file.pem`",
        ),
        (
            Protocol::Https,
            "{tls: {server_name: 'a b'}}",
            "invalid server_name",
        ),
        (
            Protocol::Https,
            "{tls: {verify: false}}",
            "unknown option `verify`",
        ),
    ];
    for (protocol, yaml, want) in cases {
        let got = options_error(protocol, yaml);
        assert!(
            got.contains(want),
            "{yaml}: {got:?} does not contain {want:?}"
        );
    }
}

#[test]
fn a_ca_file_must_hold_pem_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let got = options_error(
        Protocol::Https,
        &format!("{{tls: {{ca_file: '{}'}}}}", empty.display()),
    );
    assert!(got.contains("holds no PEM certificate"), "{got}");
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let got = options_error(
        Protocol::Https,
        &format!("{{tls: {{ca_file: '{}'}}}}", broken.display()),
    );
    assert!(got.contains("ca_file"), "{got}");
}

#[test]
fn defaults_and_port_for_the_service_label() {
    let o = options(Protocol::Http, "{}");
    assert_eq!(o.method, "GET");
    assert!(o.follow_redirects);
    assert_eq!(o.max_body, options::DEFAULT_MAX_BODY);
    assert!(o.expect_status.accepts(200) && o.expect_status.accepts(399));
    assert!(!o.expect_status.accepts(404) && !o.expect_status.accepts(101));
    assert_eq!(o.port(), None);
    assert_eq!(options(Protocol::Http, "{port: 8080}").port(), Some(8080));
    assert_eq!(
        options(Protocol::Https, "{url: 'https://x:8443/a'}").port(),
        Some(8443)
    );
    assert_eq!(
        options(Protocol::Https, "{url: 'https://x:443/a'}").port(),
        None
    );
}

#[test]
fn bare_services_request_the_root_of_the_target() {
    for (protocol, host, want) in [
        (Protocol::Http, "example.com", "http://example.com/"),
        (Protocol::Https, "example.com", "https://example.com/"),
        (Protocol::Http, "::1", "http://[::1]/"),
        (Protocol::Https, "[::1]", "https://[::1]/"),
    ] {
        let (p, _) = probe(protocol, "{}");
        assert_eq!(p.start_url(host).unwrap().as_str(), want);
    }
    let (p, _) = probe(Protocol::Http, "{port: 8080, path: '/health?full=1'}");
    assert_eq!(
        p.start_url("example.com").unwrap().as_str(),
        "http://example.com:8080/health?full=1"
    );
}

#[tokio::test]
async fn a_server_that_hangs_up_without_answering_fails_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            // Read the request, then close without a response.
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        }
    });
    let (e, p) = http(&format!("{{port: {port}}}")).await;
    let e = e.unwrap_err();
    assert!(
        matches!(e.reason, Reason::Protocol | Reason::Refused),
        "{e}"
    );
    assert_eq!(p.status.get(), 0);
}

// ------------------------------------------------------------------ trust and HTTP versions

/// Serves [`route`] in HTTP/1.1 and HTTP/2 (over TLS by ALPN, in cleartext by prior
/// knowledge), as nginx with `http2 on` does.
async fn server_h2(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let tls = tls.map(|c| {
        let mut c = (*c).clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    });
    serve_async(tls, Version::Auto, |req| {
        Box::pin(async move { route(req).await.unwrap_or_else(|e| match e {}) })
    })
    .await
}

/// Serves [`route`] in HTTP/2 only, with prior knowledge, as nginx `listen ... http2` does in
/// cleartext.
async fn h2_only_server() -> SocketAddr {
    serve_async(None, Version::Http2, |req| {
        Box::pin(async move { route(req).await.unwrap_or_else(|e| match e {}) })
    })
    .await
}

/// A self-signed certificate as `openssl req -x509` makes it: CA:TRUE, with the names in
/// subjectAltName. Returns its PEM and a server config presenting it.
fn openssl_style(
    names: &[&str],
    not_before: Day,
    not_after: Day,
) -> (String, Arc<rustls::ServerConfig>) {
    let cert = Leaf::new(names)
        .common_name(names[0])
        .ca_true()
        .valid(not_before, not_after)
        .self_signed();
    (cert.pem(), cert.server_config())
}

fn write_pem(dir: &tempfile::TempDir, name: &str, pem: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_ca_true_self_signed_certificate_given_as_ca_file_is_trusted_with_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, config) = openssl_style(&["localhost", "127.0.0.1"], (2020, 1, 1), (2031, 5, 6));
    let port = server(Some(config)).await.port();
    let ca = write_pem(&dir, "c.crt", &pem);
    let https = |extra: &str| format!("{{port: {port}, path: /ok, tls: {{ca_file: '{ca}'{extra}}}}}");

    let (p, _) = probe(Protocol::Https, &https(""));
    run(&p).await.unwrap();
    assert_eq!(p.status.get(), 200);
    let (p, _) = probe(Protocol::Https, &https(", server_name: localhost"));
    run(&p).await.unwrap();

    // Its names are still checked.
    let (p, _) = probe(Protocol::Https, &https(", server_name: example.org"));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Tls, "{e}");
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: certificate is for localhost, 127.0.0.1, not example.org")
    );

    // Another self-signed certificate in ca_file does not make this one trusted.
    let (other, _) = openssl_style(&["localhost"], (2020, 1, 1), (2031, 5, 6));
    let wrong = write_pem(&dir, "other.crt", &other);
    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {port}, tls: {{ca_file: '{wrong}'}}}}"),
    );
    let e = run(&p).await.unwrap_err();
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: self-signed certificate not in ca_file")
    );
}

#[tokio::test]
async fn dates_of_an_exactly_trusted_certificate_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, config) = openssl_style(&["localhost", "127.0.0.1"], (2020, 1, 1), (2021, 1, 2));
    let port = server(Some(config)).await.port();
    let ca = write_pem(&dir, "expired.crt", &pem);
    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {port}, tls: {{ca_file: '{ca}'}}}}"),
    );
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Tls, "{e}");
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: certificate expired at 2021-01-02T00:00:00Z")
    );
    assert_eq!(not_after(&p), Some(unix((2021, 1, 2))));

    let (pem, config) = openssl_style(&["127.0.0.1"], (2090, 1, 1), (2091, 1, 1));
    let port = server(Some(config)).await.port();
    let ca = write_pem(&dir, "future.crt", &pem);
    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {port}, tls: {{ca_file: '{ca}'}}}}"),
    );
    let e = run(&p).await.unwrap_err();
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: certificate is not valid before 2090-01-01T00:00:00Z")
    );
}

#[tokio::test]
async fn chain_failures_are_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let port = server(Some(pki.server)).await.port();
    let ca = write_pem(&dir, "ca.pem", &pki.ca_pem);
    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {port}, tls: {{ca_file: '{ca}', server_name: example.org}}}}"),
    );
    let e = run(&p).await.unwrap_err();
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: certificate is for localhost, 127.0.0.1, not example.org")
    );
    // A ca_file with another CA: the issuer the chain leads to is named.
    let other = write_pem(&dir, "other.pem", &self_signed().0);
    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {port}, tls: {{ca_file: '{other}'}}}}"),
    );
    let e = run(&p).await.unwrap_err();
    assert_eq!(
        e.message,
        format!("127.0.0.1:{port}: unknown issuer CN=netmon test CA, not in ca_file")
    );
    // Plain http where TLS was expected.
    let plain = server(None).await.port();
    let (p, _) = probe(
        Protocol::Https,
        &format!("{{port: {plain}, tls: {{ca_file: '{ca}'}}}}"),
    );
    let e = run(&p).await.unwrap_err();
    assert!(
        e.message.ends_with("the server does not speak TLS here (it sent a corrupt message): is the port plain http?"),
        "{e}"
    );
    assert!(!e.message.contains("Other(") && !e.message.contains("Error"), "{e}");
}

fn version(p: &HttpProbe) -> f64 {
    p.version.get()
}

#[tokio::test]
async fn https_speaks_what_alpn_picks_and_http_version_can_require_it() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, config) = openssl_style(&["localhost", "127.0.0.1"], (2020, 1, 1), (2031, 5, 6));
    let ca = write_pem(&dir, "c.crt", &pem);
    let both = server_h2(Some(config.clone())).await.port();
    let only_h1 = server(Some(config)).await.port();
    let https = |port: u16, extra: &str| {
        format!("{{port: {port}, path: /ok, tls: {{ca_file: '{ca}'}}{extra}}}")
    };
    let (p, _) = probe(Protocol::Https, &https(both, ""));
    assert_eq!(version(&p), 0.0, "no version before a response");
    run(&p).await.unwrap();
    assert_eq!(version(&p), 2.0);
    let (p, _) = probe(Protocol::Https, &https(both, ", http_version: 1.1"));
    run(&p).await.unwrap();
    assert_eq!(version(&p), 1.1);
    let (p, _) = probe(Protocol::Https, &https(both, ", http_version: 2"));
    run(&p).await.unwrap();
    assert_eq!(version(&p), 2.0);

    // A server without h2: auto falls back to 1.1, `2` is down.
    let (p, _) = probe(Protocol::Https, &https(only_h1, ""));
    run(&p).await.unwrap();
    assert_eq!(version(&p), 1.1);
    let (p, _) = probe(Protocol::Https, &https(only_h1, ", http_version: 2"));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(e.message.contains("did not agree to HTTP/2 by ALPN"), "{e}");
    assert_eq!(version(&p), 0.0);
}

#[tokio::test]
async fn h2c_speaks_http2_with_prior_knowledge_and_carries_bodies_and_redirects() {
    let port = server_h2(None).await.port();
    let (ok, p) = http(&format!("{{port: {port}, path: /ok}}")).await;
    ok.unwrap();
    assert_eq!(version(&p), 1.1);
    for opt in ["h2c: true", "http_version: 2"] {
        let (ok, p) = http(&format!("{{port: {port}, path: /ok, {opt}}}")).await;
        ok.unwrap();
        assert_eq!(version(&p), 2.0, "{opt}");
    }
    // A request body and a 307 (same method and body) over HTTP/2, with a Host override
    // that becomes the :authority.
    let (ok, p) = http(&format!(
        "{{port: {port}, h2c: true, method: POST, body: payload, path: /temporary, headers: {{Host: 'localhost:{port}', X-Test: h2}}, body_regex: '^method=POST x-test=h2 auth=false body=payload$'}}"
    ))
    .await;
    ok.unwrap();
    assert_eq!(p.status.get(), 200);
    // An HTTP/1.1-only server does not understand the HTTP/2 preface.
    let h1 = server(None).await.port();
    let (e, _) = http(&format!("{{port: {h1}, h2c: true}}")).await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(e.message.contains("does 127.0.0.1:"), "{e}");
    // And the other way round: HTTP/1.1 to a port that speaks only HTTP/2.
    let h2_only = h2_only_server().await.port();
    let (e, _) = http(&format!("{{port: {h2_only}}}")).await;
    let e = e.unwrap_err();
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(e.message.contains("then set h2c: true"), "{e}");
    let (ok, p) = http(&format!("{{port: {h2_only}, path: /ok, h2c: true}}")).await;
    ok.unwrap();
    assert_eq!(version(&p), 2.0);
}

#[tokio::test]
async fn an_http2_connection_is_closed_when_the_probe_is_dropped() {
    // A peer that reads the HTTP/2 preface and never answers; it reports when we hang up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = closed_tx.send(());
    });
    let (p, _) = probe(Protocol::Http, &format!("{{port: {port}, h2c: true}}"));
    let r = tokio::time::timeout(Duration::from_millis(300), p.run(&target())).await;
    assert!(r.is_err(), "{r:?}");
    tokio::time::timeout(Duration::from_secs(2), closed_rx)
        .await
        .expect("the socket closed with the probe")
        .unwrap();
}

#[test]
fn http_version_and_h2c_are_validated() {
    assert_eq!(options(Protocol::Https, "{http_version: 1.1}").http_version, options::HttpVersion::Http1);
    assert_eq!(options(Protocol::Https, "{http_version: '2'}").http_version, options::HttpVersion::Http2);
    assert_eq!(options(Protocol::Https, "{http_version: 2}").http_version, options::HttpVersion::Http2);
    assert_eq!(options(Protocol::Http, "{http_version: auto, h2c: true}").http_version, options::HttpVersion::Auto);
    let cases = [
        (Protocol::Http, "{http_version: 3}", "invalid http_version `3`: write `auto`, `1.1` or `2`"),
        (Protocol::Http, "{http_version: atuo}", "(did you mean `auto`?)"),
        (Protocol::Http, "{h2c: true, http_version: 1.1}", "contradict each other"),
        (Protocol::Https, "{h2c: true}", "`h2c` is HTTP/2 over cleartext and this is an https service"),
        (Protocol::Http, "{http_versoin: 2}", "unknown option `http_versoin` (did you mean `http_version`?)"),
    ];
    for (protocol, yaml, want) in cases {
        let got = options_error(protocol, yaml);
        assert!(got.contains(want), "{yaml}: {got:?} does not contain {want:?}");
    }
}

#[test]
fn http_version_and_h2c_survive_save_and_load() {
    let text = "targets:\n  h:\n    services:\n      - { type: https, name: a, http_version: 1.1 }\n      - { type: http, name: b, http_version: '2', h2c: true }\n      - { type: http, name: c }\n";
    let c = crate::config::loader::load(text, "t.yml").unwrap();
    let saved = crate::config::save::to_yaml(&c).unwrap();
    let again = crate::config::loader::load(&saved, "t.yml").unwrap();
    assert_eq!(c, again, "{saved}");
    assert!(!saved.contains("h2c: false") && !saved.contains("auto"), "{saved}");
}
