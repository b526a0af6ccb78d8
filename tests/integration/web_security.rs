//! `--web.config.file`: TLS and basic auth on every endpoint, checked with a real TLS client;
//! `--web.disable-reload`.

use std::time::Duration;

use crate::support::{Netmon, Start, closed_port};

struct Pki {
    _dir: tempfile::TempDir,
    web_config: String,
    ca_pem: String,
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a web config with TLS and one
/// user `alice` with password `wonderland`.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = testkit::pki::Ca::new("netmon test CA");
    testkit::pki::Leaf::new(&["127.0.0.1", "localhost"])
        .signed_by(&ca)
        .write(dir.path(), "server");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: '{hash}'\n"),
    )
    .unwrap();
    Pki {
        web_config: web.display().to_string(),
        ca_pem: ca.pem(),
        _dir: dir,
    }
}

fn client(ca_pem: &str) -> reqwest::Client {
    netmon::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn config() -> String {
    format!(
        "targets:\n  127.0.0.1:\n    services: [\"TCP:{}\"]\n",
        closed_port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_basic_auth_protect_every_endpoint() {
    let pki = pki();
    let n = Netmon::start(&config(), &["--web.config.file", &pki.web_config]);
    let base = format!("https://{}", n.addr);
    let c = client(&pki.ca_pem);
    for path in [
        "/metrics",
        "/",
        "/api/v1/services",
        "/-/healthy",
        "/-/ready",
    ] {
        let url = format!("{base}{path}");
        let none = c.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path} without credentials");
        assert!(none.headers().get("www-authenticate").is_some());
        let wrong = c
            .get(&url)
            .basic_auth("alice", Some("rabbit"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
        let stranger = c
            .get(&url)
            .basic_auth("mallory", Some("wonderland"))
            .send()
            .await
            .unwrap();
        assert_eq!(stranger.status(), 401, "{path} with an unknown user");
        let right = c
            .get(&url)
            .basic_auth("alice", Some("wonderland"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path} with the right password");
    }
    let reload = c.post(format!("{base}/-/reload")).send().await.unwrap();
    assert_eq!(reload.status(), 401);
    let body = c
        .get(format!("{base}/metrics"))
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("netmon_up{"), "{body}");
    // Plain HTTP on the TLS port gets no metrics.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/metrics", n.addr))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let pki = pki();
    let other = pki_other_ca();
    let n = Netmon::start(&config(), &["--web.config.file", &pki.web_config]);
    let err = client(&other)
        .get(format!("https://{}/metrics", n.addr))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_connect() || err.to_string().contains("certificate"),
        "{err}"
    );
}

fn pki_other_ca() -> String {
    testkit::pki::Ca::new("another CA").pem()
}

#[test]
fn reload_over_http_can_be_disabled() {
    let n = Netmon::start(&config(), &["--web.disable-reload"]);
    let (status, body) = n.post("/-/reload");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("SIGHUP"), "{body}");
}

#[test]
fn a_bad_web_config_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  bob: hunter2\n").unwrap();
    let cfg = dir.path().join("netmon.yml");
    std::fs::write(&cfg, config()).unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(&cfg)
        .arg("--web.config.file")
        .arg(&web)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("basic_auth_users.bob: not a bcrypt hash"),
        "{err}"
    );
}
