//! http_sd sources: an endpoint answering a JSON list of target groups, asked every
//! `refresh` with reqwest, as Prometheus' `http_sd_configs` asks it.
//!
//! Each request has the source's `timeout` for the whole exchange, body included; the body is
//! read chunk by chunk and refused as soon as it passes [`MAX_DOCUMENT_BYTES`], so an endless
//! answer costs at most that much memory. As Prometheus requires, the answer must be `200`
//! with `Content-Type: application/json`. TLS uses netmon's own rustls settings, those of the
//! HTTPS probe (`ca_file`, `insecure_skip_verify`); credentials files are read at every
//! request, so they can be rotated.

use std::time::Duration;

use crate::config::model::HttpSource;
use crate::config::sd::{self, Format, MAX_DOCUMENT_BYTES, TargetGroup};
use crate::probe::http::tls::{ALPN_H2, ALPN_HTTP1, Tls};

/// Why an endpoint's answer was not used.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A credentials file could not be read.
    #[error("cannot read {path}: {source}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request failed: connection, TLS, timeout.
    #[error("GET {url}: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The endpoint answered with another status than 200.
    #[error("GET {url}: the endpoint answered {status}, not 200 OK")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The answer is not JSON by its content type.
    #[error(
        "GET {url}: the answer's Content-Type is `{content_type}`: an http_sd endpoint answers `application/json`"
    )]
    ContentType {
        /// The URL.
        url: String,
        /// The type it gave.
        content_type: String,
    },
    /// The body is over the limit.
    #[error(
        "GET {url}: the answer is larger than {MAX_DOCUMENT_BYTES} bytes, the most an http_sd answer may be: it was not read further"
    )]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// The body is not a valid list of groups, or over the source's `max_targets`.
    #[error("GET {url}: {error}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong with it.
        error: sd::SdError,
    },
}

/// One http_sd endpoint and the client that asks it.
#[derive(Debug)]
pub struct Endpoint {
    source: HttpSource,
    max_targets: usize,
    client: reqwest::Client,
}

impl Endpoint {
    /// The endpoint of `source`, giving at most `max_targets` targets.
    pub fn new(source: &HttpSource, max_targets: usize) -> Result<Self, HttpError> {
        let tls = Tls::new(&source.tls).map_err(|e| HttpError::Client(e.to_string()))?;
        let rustls = tls
            .client_config(Default::default(), &[ALPN_H2, ALPN_HTTP1])
            .map_err(|e| HttpError::Client(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls)
            .timeout(source.timeout.0)
            .connect_timeout(source.timeout.0)
            .user_agent(concat!("netmon/", env!("CARGO_PKG_VERSION")))
            // As Prometheus does without `proxy_url`: `HTTP_PROXY` in netmon's environment
            // does not reroute the inventory's address.
            .no_proxy()
            .build()
            .map_err(|e| HttpError::Client(chain(&e)))?;
        Ok(Endpoint {
            source: source.clone(),
            max_targets,
            client,
        })
    }

    /// Asks the endpoint once.
    pub async fn read(&self) -> Result<Vec<TargetGroup>, HttpError> {
        let url = self.source.url.to_string();
        let request_error = |e: reqwest::Error| HttpError::Request {
            url: url.clone(),
            message: chain(&e),
        };
        let mut request = self
            .client
            .get(self.source.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            // As Prometheus sends it, so an endpoint can plan its caching.
            .header(
                "X-Prometheus-Refresh-Interval-Seconds",
                self.source.refresh.0.as_secs().to_string(),
            );
        if let Some(auth) = &self.source.basic_auth {
            let password = match (&auth.password, &auth.password_file) {
                (_, Some(file)) => Some(secret(file)?),
                (Some(p), None) => Some(p.clone()),
                (None, None) => None,
            };
            request = request.basic_auth(&auth.username, password);
        }
        if let Some(auth) = &self.source.authorization {
            let credentials = match (&auth.credentials, &auth.credentials_file) {
                (_, Some(file)) => secret(file)?,
                (Some(c), None) => c.clone(),
                (None, None) => String::new(),
            };
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("{} {credentials}", auth.kind),
            );
        }
        // The client's timeout covers the body too; this one is the bound should it not.
        let deadline = self.source.timeout.0 + Duration::from_secs(1);
        let body = tokio::time::timeout(deadline, async {
            let mut response = request.send().await.map_err(request_error)?;
            if response.status() != reqwest::StatusCode::OK {
                return Err(HttpError::Status {
                    url: url.clone(),
                    status: response.status(),
                });
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(HttpError::ContentType {
                    url: url.clone(),
                    content_type,
                });
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_DOCUMENT_BYTES)
            {
                return Err(HttpError::TooLarge { url: url.clone() });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(request_error)? {
                if (body.len() + chunk.len()) as u64 > MAX_DOCUMENT_BYTES {
                    return Err(HttpError::TooLarge { url: url.clone() });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
        .await
        .map_err(|_| HttpError::Request {
            url: url.clone(),
            message: format!("no whole answer within {}", self.source.timeout),
        })??;
        let text = String::from_utf8(body).map_err(|_| HttpError::Invalid {
            url: url.clone(),
            error: sd::SdError::Invalid("the answer is not UTF-8".into()),
        })?;
        sd::parse(&text, Format::Json, self.max_targets)
            .map_err(|error| HttpError::Invalid { url, error })
    }
}

/// The contents of a credentials file, without the line end editors add.
fn secret(path: &std::path::Path) -> Result<String, HttpError> {
    use std::io::Read as _;
    let mut text = String::new();
    // A secret is short; a bound keeps a wrong path (a log file) from being read whole.
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .map_err(|source| HttpError::Credentials {
            path: path.display().to_string(),
            source,
        })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// An error and its causes, `: `-separated: reqwest's own message is often only "error
/// sending request".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::Response;
    use hyper::body::Frame;
    use testkit::http::{Body, Version, serve_async};

    use super::*;
    use crate::base::values::Duration as Written;
    use crate::config::model::{Authorization, BasicAuth};

    fn json(status: u16, body: &str) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(body.to_string())).boxed())
            .unwrap()
    }

    /// An http_sd endpoint on 127.0.0.1 answering by path; `/auth` echoes the
    /// `Authorization` header as a label.
    async fn endpoint() -> std::net::SocketAddr {
        serve_async(None, Version::Http1, |req| {
            let path = req.uri().path().to_string();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let refresh = req
                .headers()
                .get("x-prometheus-refresh-interval-seconds")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Box::pin(async move {
                match path.as_str() {
                    "/sd" => json(
                        200,
                        &format!(
                            r#"[{{"targets": ["a:1"], "labels": {{"refresh": "{refresh}"}}}}]"#
                        ),
                    ),
                    "/auth" => json(
                        200,
                        &format!(r#"[{{"targets": ["a"], "labels": {{"auth": "{auth}"}}}}]"#),
                    ),
                    "/500" => json(500, "oops"),
                    "/text" => Response::new(Full::new(Bytes::from("[]")).boxed()),
                    "/invalid" => json(200, r#"[{"targets": "a"}]"#),
                    "/huge" => json(
                        200,
                        &format!(r#"[{{"targets": [{}]}}]"#, vec!["\"h\""; 100].join(",")),
                    ),
                    _ => {
                        // Endless, without a Content-Length: only the cap stops the read.
                        static CHUNK: [u8; 16384] = [b' '; 16384];
                        let frames = futures_util::stream::repeat_with(|| {
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK)))
                        });
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(BodyExt::boxed(StreamBody::new(frames)))
                            .unwrap()
                    }
                }
            })
        })
        .await
    }

    fn source(addr: std::net::SocketAddr, path: &str) -> HttpSource {
        HttpSource {
            url: format!("http://{addr}{path}").parse().unwrap(),
            refresh: Written(Duration::from_secs(30)),
            timeout: Written(Duration::from_secs(20)),
            basic_auth: None,
            authorization: None,
            tls: Default::default(),
        }
    }

    async fn read(source: &HttpSource, max: usize) -> Result<Vec<TargetGroup>, HttpError> {
        crate::install_crypto_provider();
        Endpoint::new(source, max).unwrap().read().await
    }

    #[tokio::test]
    async fn a_good_answer_gives_its_groups() {
        let addr = endpoint().await;
        let groups = read(&source(addr, "/sd"), 10).await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].targets, ["a:1"]);
        assert_eq!(groups[0].labels["refresh"], "30");
    }

    #[tokio::test]
    async fn bad_answers_say_what_is_wrong() {
        let addr = endpoint().await;
        let cases = [
            (
                "/500",
                "the endpoint answered 500 Internal Server Error, not 200 OK",
            ),
            (
                "/text",
                "the answer's Content-Type is ``: an http_sd endpoint answers `application/json`",
            ),
            (
                "/invalid",
                "expected a list of `host` or `host:port` strings",
            ),
            ("/huge", "more than 10 targets"),
        ];
        for (path, want) in cases {
            let e = read(&source(addr, path), 10).await.unwrap_err().to_string();
            assert!(e.contains(want), "{path}: {e}");
            assert!(e.starts_with(&format!("GET http://{addr}{path}: ")), "{e}");
        }
    }

    #[tokio::test]
    async fn an_endless_answer_is_refused_at_the_cap() {
        let addr = endpoint().await;
        let e = read(&source(addr, "/endless"), 10).await.unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("larger than 16777216 bytes"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_request_error() {
        let port = testkit::net::closed_port();
        let s = source(format!("127.0.0.1:{port}").parse().unwrap(), "/sd");
        let e = read(&s, 10).await.unwrap_err();
        assert!(matches!(e, HttpError::Request { .. }), "{e}");
    }

    #[tokio::test]
    async fn https_endpoints_are_checked_against_ca_file_or_not_at_all() {
        use crate::probe::http::options::CaFile;
        use testkit::pki::{Ca, Leaf};
        let ca = Ca::new("inventory CA");
        let leaf = Leaf::new(&["localhost", "127.0.0.1"]).signed_by(&ca);
        let tls = Some(leaf.server_config_with_alpn(&[b"h2", b"http/1.1"]));
        let addr = serve_async(tls, Version::Auto, |_| {
            Box::pin(async { json(200, r#"[{"targets": ["a"]}]"#) })
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let ca_path = ca.write(dir.path(), "ca.pem");
        let mut s = source(addr, "/sd");
        s.url = format!("https://localhost:{}/sd", addr.port())
            .parse()
            .unwrap();
        // The system trust store does not know the test CA.
        let e = read(&s, 10).await.unwrap_err();
        assert!(matches!(e, HttpError::Request { .. }), "{e}");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        s.tls.ca_file = Some(CaFile::load(&ca_path.display().to_string()).unwrap());
        assert_eq!(read(&s, 10).await.unwrap()[0].targets, ["a"]);
        s.tls.ca_file = None;
        s.tls.insecure_skip_verify = true;
        assert_eq!(read(&s, 10).await.unwrap()[0].targets, ["a"]);
    }

    #[tokio::test]
    async fn credentials_are_sent_and_files_read_at_each_request() {
        let addr = endpoint().await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut s = source(addr, "/auth");
        s.authorization = Some(Authorization {
            kind: "Bearer".into(),
            credentials: None,
            credentials_file: Some(token.clone()),
        });
        let endpoint = Arc::new({
            crate::install_crypto_provider();
            Endpoint::new(&s, 10).unwrap()
        });
        let g = endpoint.read().await.unwrap();
        assert_eq!(g[0].labels["auth"], "Bearer s3cret");
        std::fs::write(&token, "rotated").unwrap();
        let g = endpoint.read().await.unwrap();
        assert_eq!(g[0].labels["auth"], "Bearer rotated");
        std::fs::remove_file(&token).unwrap();
        let e = endpoint.read().await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}", token.display())),
            "{e}"
        );

        s.authorization = None;
        s.basic_auth = Some(BasicAuth {
            username: "netmon".into(),
            password: Some("pw".into()),
            password_file: None,
        });
        let g = read(&s, 10).await.unwrap();
        // base64("netmon:pw")
        assert_eq!(g[0].labels["auth"], "Basic bmV0bW9uOnB3");
    }
}
