//! Debian's nginx serving HTTPS with certificates made by openssl as operators make them, and
//! HTTP/2 over TLS and in cleartext; netmon's verdict on each server next to curl's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{self, Daemon, curl, metric, ok};

/// The certificates, made in `dir` with openssl.
struct Pki {
    /// `openssl req -x509` self-signed for localhost and 127.0.0.1 (OpenSSL 3: CA:TRUE).
    self_signed: (PathBuf, PathBuf),
    /// A test CA.
    ca: PathBuf,
    /// A leaf for localhost and 127.0.0.1 signed by the CA, followed by the CA (a chain).
    chain: (PathBuf, PathBuf),
    /// Self-signed for wrong.example only.
    wrong_name: (PathBuf, PathBuf),
    /// A leaf signed by the CA that expired on 2020-01-02, followed by the CA.
    expired: (PathBuf, PathBuf),
}

fn pki(openssl: &Path, dir: &Path) -> Pki {
    let p = |name: &str| dir.join(name);
    let s = |path: &PathBuf| path.to_str().expect("a UTF-8 temp path").to_string();
    let (c, k) = (p("c.crt"), p("k.pem"));
    ok(
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &s(&k),
            "-out",
            &s(&c),
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
    );
    let (wc, wk) = (p("wrong.crt"), p("wrong.pem"));
    ok(
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &s(&wk),
            "-out",
            &s(&wc),
            "-days",
            "30",
            "-subj",
            "/CN=wrong.example",
            "-addext",
            "subjectAltName=DNS:wrong.example",
        ],
    );
    let (ca, cak) = (p("ca.crt"), p("ca.pem"));
    ok(
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &s(&cak),
            "-out",
            &s(&ca),
            "-days",
            "30",
            "-subj",
            "/CN=netmon real test CA",
        ],
    );
    let (csr, lk) = (p("leaf.csr"), p("leaf.pem"));
    ok(
        openssl,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &s(&lk),
            "-out",
            &s(&csr),
            "-subj",
            "/CN=localhost",
        ],
    );
    let ext = p("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.ext");
    let leaf = p("leaf.crt");
    ok(
        openssl,
        &[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&ca),
            "-CAkey",
            &s(&cak),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&leaf),
        ],
    );
    // `openssl ca` is the one OpenSSL 3.0 command that writes dates in the past.
    std::fs::write(p("index.txt"), "").expect("write index.txt");
    std::fs::write(p("serial"), "01\n").expect("write serial");
    let cnf = p("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
            d = dir.display()
        ),
    )
    .expect("write ca.cnf");
    let old = p("expired.crt");
    ok(
        openssl,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &s(&cnf),
            "-cert",
            &s(&ca),
            "-keyfile",
            &s(&cak),
            "-in",
            &s(&csr),
            "-out",
            &s(&old),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            &s(&ext),
        ],
    );
    let concat = |name: &str, parts: &[&PathBuf]| {
        let mut text = String::new();
        for part in parts {
            text.push_str(&std::fs::read_to_string(part).expect("read a certificate"));
        }
        std::fs::write(p(name), text).expect("write a chain");
        p(name)
    };
    Pki {
        chain: (concat("chain.crt", &[&leaf, &ca]), lk.clone()),
        expired: (concat("expired-chain.crt", &[&old, &ca]), lk),
        self_signed: (c, k),
        ca,
        wrong_name: (wc, wk),
    }
}

/// One nginx server block: a port, and TLS (certificate, key) or cleartext, h2 or not.
struct Site {
    port: u16,
    tls: Option<(PathBuf, PathBuf)>,
    http2: bool,
}

fn nginx_conf(dir: &Path, sites: &[&Site]) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for s in sites {
        let mut listen = format!("127.0.0.1:{}", s.port);
        if s.tls.is_some() {
            listen.push_str(" ssl");
        }
        // nginx 1.22 (Debian 12) takes http2 as a listen parameter.
        if s.http2 {
            listen.push_str(" http2");
        }
        let tls = match &s.tls {
            Some((cert, key)) => format!(
                "ssl_certificate {}; ssl_certificate_key {};",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        servers.push_str(&format!(
            "  server {{ listen {listen}; {tls} location / {{ return 200 \"ok\\n\"; }} }}\n"
        ));
    }
    // One process (no master), everything in the temp dir, nothing from /etc/nginx.
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  default_type text/plain;\n\
         client_body_temp_path {d}/tmp-body; proxy_temp_path {d}/tmp-proxy;\n\
         fastcgi_temp_path {d}/tmp-fastcgi; uwsgi_temp_path {d}/tmp-uwsgi; scgi_temp_path {d}/tmp-scgi;\n\
         {servers}}}\n"
    )
}

/// What netmon is expected to say about one service.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Up, with this `netmon_http_version`.
    Up(f64),
    /// Down with this reason, the message containing the text.
    Down(&'static str, &'static str),
}

/// One server as both clients see it.
struct Case {
    /// The netmon service name.
    name: &'static str,
    /// The netmon service, YAML (the name and type are added).
    service: String,
    /// What curl is given: arguments, then the URL.
    curl: (Vec<String>, String),
    want: Want,
}

#[test]
fn nginx_https_and_http2_verdicts_agree_with_curl() {
    let Some([nginx, curl_bin, openssl]) = support::programs(
        "nginx_https_and_http2_verdicts_agree_with_curl",
        ["nginx", "curl", "openssl"],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let pki = pki(&openssl, d);
    let site = |tls: Option<&(PathBuf, PathBuf)>, http2: bool| Site {
        port: support::free_port(),
        tls: tls.cloned(),
        http2,
    };
    let self_signed = site(Some(&pki.self_signed), false);
    let chain = site(Some(&pki.chain), false);
    let wrong = site(Some(&pki.wrong_name), false);
    let expired = site(Some(&pki.expired), false);
    let h2 = site(Some(&pki.self_signed), true);
    let h2c = site(None, true);
    let sites = [&self_signed, &chain, &wrong, &expired, &h2, &h2c];
    let conf = d.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(d, &sites)).expect("write nginx.conf");
    let mut command = Command::new(&nginx);
    command
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(d.join("error.log"));
    let ports: Vec<u16> = sites.iter().map(|s| s.port).collect();
    let mut server = Daemon::start("nginx", command, &d.join("nginx.out"), &ports);

    let ca_file = |p: &PathBuf| format!("tls: {{ ca_file: '{}' }}", p.display());
    let https = |s: &Site| format!("https://127.0.0.1:{}/", s.port);
    let cacert = |p: &PathBuf| vec!["--cacert".to_string(), p.display().to_string()];
    let cases = [
        Case {
            name: "self-signed-ca-file",
            service: format!(
                "type: https, port: {}, {}",
                self_signed.port,
                ca_file(&pki.self_signed.0)
            ),
            curl: (cacert(&pki.self_signed.0), https(&self_signed)),
            want: Want::Up(1.1),
        },
        Case {
            name: "self-signed-system-store",
            service: format!("type: https, port: {}", self_signed.port),
            curl: (vec![], https(&self_signed)),
            want: Want::Down(
                "tls",
                "self-signed certificate not in the system trust store",
            ),
        },
        Case {
            name: "ca-chain",
            service: format!("type: https, port: {}, {}", chain.port, ca_file(&pki.ca)),
            curl: (cacert(&pki.ca), https(&chain)),
            want: Want::Up(1.1),
        },
        Case {
            name: "ca-chain-wrong-ca",
            service: format!(
                "type: https, port: {}, {}",
                chain.port,
                ca_file(&pki.self_signed.0)
            ),
            curl: (cacert(&pki.self_signed.0), https(&chain)),
            want: Want::Down(
                "tls",
                "unknown issuer CN=netmon real test CA, not in ca_file",
            ),
        },
        Case {
            name: "wrong-name",
            service: format!(
                "type: https, port: {}, {}",
                wrong.port,
                ca_file(&pki.wrong_name.0)
            ),
            curl: (cacert(&pki.wrong_name.0), https(&wrong)),
            want: Want::Down("tls", "certificate is for wrong.example, not 127.0.0.1"),
        },
        Case {
            name: "expired",
            service: format!("type: https, port: {}, {}", expired.port, ca_file(&pki.ca)),
            curl: (cacert(&pki.ca), https(&expired)),
            want: Want::Down("tls", "certificate expired at 2020-01-02T00:00:00Z"),
        },
        Case {
            name: "h2-auto",
            service: format!(
                "type: https, port: {}, {}",
                h2.port,
                ca_file(&pki.self_signed.0)
            ),
            curl: (
                [cacert(&pki.self_signed.0), vec!["--http2".into()]].concat(),
                https(&h2),
            ),
            want: Want::Up(2.0),
        },
        Case {
            name: "h2-required",
            service: format!(
                "type: https, port: {}, http_version: 2, {}",
                h2.port,
                ca_file(&pki.self_signed.0)
            ),
            curl: (
                [cacert(&pki.self_signed.0), vec!["--http2".into()]].concat(),
                https(&h2),
            ),
            want: Want::Up(2.0),
        },
        Case {
            name: "h2-required-http1-server",
            service: format!(
                "type: https, port: {}, http_version: 2, {}",
                self_signed.port,
                ca_file(&pki.self_signed.0)
            ),
            // curl --http2 only prefers h2 and falls back to 1.1; `http_version: 2`
            // requires it, and nginx ends the handshake when ALPN offers nothing it has,
            // so here netmon is down by design where curl is up.
            curl: (
                [cacert(&pki.self_signed.0), vec!["--http2".into()]].concat(),
                https(&self_signed),
            ),
            want: Want::Down(
                "tls",
                "the server ended the handshake with the TLS alert no_application_protocol",
            ),
        },
        Case {
            name: "h2c",
            service: format!("type: http, port: {}, h2c: true", h2c.port),
            curl: (
                vec!["--http2-prior-knowledge".into()],
                format!("http://127.0.0.1:{}/", h2c.port),
            ),
            want: Want::Up(2.0),
        },
        Case {
            name: "h2c-port-as-http1",
            service: format!("type: http, port: {}", h2c.port),
            curl: (vec![], format!("http://127.0.0.1:{}/", h2c.port)),
            want: Want::Down("protocol", "then set h2c: true"),
        },
    ];

    let mut config = String::from(
        "defaults: { interval: 2s, timeout: 1500ms }\ntargets:\n  127.0.0.1:\n    services:\n",
    );
    for c in &cases {
        config.push_str(&format!("      - {{ name: {}, {} }}\n", c.name, c.service));
    }
    let mut netmon = support::serve(d, &config);
    let store = netmon.wait_log("tls trust store loaded", Duration::from_secs(10));
    for c in &cases {
        netmon.wait_log(
            &format!("service={}}}: first result", c.name),
            Duration::from_secs(20),
        );
    }
    server.assert_running();
    let text = netmon.scrape();

    let mut report = vec![format!("trust store: {store}")];
    let mut failures = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.curl.0.iter().map(String::as_str).collect();
        let seen = curl(&curl_bin, &args, &c.curl.1);
        let up = metric(&text, "netmon_up", c.name, None);
        let version = metric(&text, "netmon_http_version", c.name, None);
        let line = netmon
            .log()
            .into_iter()
            .find(|l| l.contains(&format!("service={}}}: first result", c.name)))
            .unwrap_or_default();
        let said = line
            .split("first result: ")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        report.push(format!(
            "{:<26} curl {} {:>3} {:<3} exit {:<2} {:<48} | netmon {}",
            c.name,
            args.join(" ").replace(&d.display().to_string(), "DIR"),
            seen.status,
            seen.version,
            seen.code,
            seen.error.chars().take(48).collect::<String>(),
            said
        ));
        let verdict_ok = match c.want {
            Want::Up(v) => {
                up == Some(1.0)
                    && version == Some(v)
                    && (seen.up() && seen.version == v.to_string())
            }
            Want::Down(reason, words) => {
                let failed = metric(
                    &text,
                    "netmon_probe_failures_total",
                    c.name,
                    Some(("reason", reason)),
                );
                up == Some(0.0)
                    && failed.is_some_and(|n| n >= 1.0)
                    && said.contains(words)
                    && (c.name == "h2-required-http1-server" || !seen.up())
            }
        };
        if !verdict_ok {
            failures.push(format!(
                "{}: expected {:?}; netmon up={up:?} version={version:?} said {said:?}; curl {seen:?}",
                c.name, c.want
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n\nall:\n{}\n\nnetmon log:\n{}\nnginx log:\n{}",
        failures.join("\n"),
        report.join("\n"),
        netmon.log().join("\n"),
        std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
    );
}

#[test]
fn the_system_trust_store_is_the_one_ssl_cert_file_names() {
    let Some([nginx, curl_bin, openssl]) = support::programs(
        "the_system_trust_store_is_the_one_ssl_cert_file_names",
        ["nginx", "curl", "openssl"],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let pki = pki(&openssl, d);
    let chain = Site {
        port: support::free_port(),
        tls: Some(pki.chain.clone()),
        http2: false,
    };
    let conf = d.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(d, &[&chain])).expect("write nginx.conf");
    let mut command = Command::new(&nginx);
    command
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(d.join("error.log"));
    let _server = Daemon::start("nginx", command, &d.join("nginx.out"), &[chain.port]);

    // The test CA as the whole system store, as an operator's internal CA bundle would be.
    let mut check = Command::new(env!("CARGO_BIN_EXE_netmon"));
    check
        .args([
            "check",
            "https",
            "127.0.0.1",
            "-p",
            &chain.port.to_string(),
            "-t",
            "5s",
            // `check` logs nothing unless asked; the store it loaded is an info line.
            "--log.level",
            "info",
        ])
        .env("SSL_CERT_FILE", &pki.ca)
        .env_remove("SSL_CERT_DIR");
    let out = support::run(check, Duration::from_secs(20));
    let mut curl_env = Command::new(&curl_bin);
    curl_env
        .args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(&pki.ca)
        .arg(format!("https://127.0.0.1:{}/", chain.port));
    let seen = support::run(curl_env, Duration::from_secs(20));
    println!(
        "netmon with SSL_CERT_FILE=ca.crt: exit {} {} {}\ncurl --cacert ca.crt: exit {}",
        out.code,
        out.stdout.trim(),
        out.stderr.trim(),
        seen.code
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(seen.code, 0, "{seen:?}");
    assert!(
        out.stderr
            .contains(&format!("store=SSL_CERT_FILE={} roots=1", pki.ca.display())),
        "{out:?}"
    );
}
