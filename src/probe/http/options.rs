//! Options of `http` and `https` services, as written in the config and checked while it loads.
//!
//! Everything that can be wrong with an option is caught here so a probe never meets it at
//! run time: the URL parses and its scheme matches the service type, the method and headers
//! are valid HTTP tokens, status patterns are codes or classes, the regexes compile and the
//! `tls.ca_file` is read and parsed as PEM certificates when the config is read (a reload
//! reads it again, so a renewed CA file is picked up by `POST /-/reload`), and `http_version`
//! and `h2c` agree with each other and with the scheme.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::base::values::{IpPreference, Regex};

/// The body cap when `max_body` is not given: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The largest `max_body` accepted: the body is held in memory while the regexes run.
pub const MAX_MAX_BODY: usize = 64 << 20;

fn default_method() -> String {
    "GET".into()
}

fn is_default_method(m: &String) -> bool {
    m == "GET"
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY
}

fn is_default_max_body(n: &usize) -> bool {
    *n == DEFAULT_MAX_BODY
}

/// Options of an `http` or `https` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The whole URL to request; its host is the one connected to. Excludes `path`/`port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<HttpUrl>,
    /// Path and query on the target host (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port on the target host (default 80 for http, 443 for https; `HTTP:8080` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Request method (default `GET`).
    #[serde(default = "default_method", skip_serializing_if = "is_default_method")]
    pub method: String,
    /// Extra request headers; a `Host` header here overrides the URL's host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body, sent with a `Content-Length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Status codes and classes that count as up (default 2xx and 3xx, after redirects).
    #[serde(default, skip_serializing_if = "StatusSet::is_default")]
    pub expect_status: StatusSet,
    /// A pattern the response body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<Regex>,
    /// A pattern the response body must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_not_regex: Option<Regex>,
    /// Follow 301, 302, 303, 307 and 308 redirects, at most [`super::MAX_REDIRECTS`] of them.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub follow_redirects: bool,
    /// Certificate checks of https connections (including redirects to https).
    #[serde(default, skip_serializing_if = "TlsOptions::is_default")]
    pub tls: TlsOptions,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
    /// The most body bytes read; a longer body fails the probe with reason `body`.
    #[serde(
        default = "default_max_body",
        skip_serializing_if = "is_default_max_body"
    )]
    pub max_body: usize,
    /// Which HTTP version to speak: `auto` (ALPN's choice on https, 1.1 on http), `1.1` or `2`.
    #[serde(default, skip_serializing_if = "HttpVersion::is_auto")]
    pub http_version: HttpVersion,
    /// Speak HTTP/2 with prior knowledge on cleartext connections (h2c, RFC 9113 3.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2c: bool,
}

impl Options {
    /// Checks what serde cannot, for a service whose type is `scheme` (http or https).
    pub(crate) fn validate(&self, scheme: &str) -> Result<(), String> {
        if let Some(url) = &self.url {
            if self.path.is_some() || self.port.is_some() {
                return Err("give either `url` or `path`/`port` (or `TYPE:PORT`), not both".into());
            }
            if url.0.scheme() != scheme {
                return Err(format!(
                    "url `{}` has scheme `{}` but the service type is `{scheme}`: make them agree",
                    url.0,
                    url.0.scheme()
                ));
            }
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') {
                return Err(format!("path `{path}` must start with `/`"));
            }
            // Parsing against a base catches characters no request line may carry.
            let base = url::Url::parse("http://netmon.invalid/").map_err(|e| e.to_string())?;
            base.join(path)
                .map_err(|e| format!("invalid path `{path}`: {e}"))?;
        }
        if self.port == Some(0) {
            return Err("port 0 is not a port to probe: use 1-65535".into());
        }
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("invalid method `{}`", self.method))?;
        if method == Method::HEAD && (self.body_regex.is_some() || self.body_not_regex.is_some()) {
            return Err(
                "a HEAD response has no body: drop `body_regex`/`body_not_regex` or use GET".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header `{name}`"))?;
            if n == hyper::header::CONTENT_LENGTH || n == hyper::header::TRANSFER_ENCODING {
                return Err(format!(
                    "header `{name}` is set by netmon from `body`; remove it"
                ));
            }
            if !seen.insert(n) {
                return Err(format!(
                    "header `{name}` is given twice (names ignore case); keep one"
                ));
            }
        }
        if self.max_body == 0 || self.max_body > MAX_MAX_BODY {
            return Err(format!(
                "max_body must be between 1 and {MAX_MAX_BODY} bytes"
            ));
        }
        if self.h2c && self.http_version == HttpVersion::Http1 {
            return Err(
                "`h2c: true` (HTTP/2) and `http_version: 1.1` contradict each other; keep one"
                    .into(),
            );
        }
        if self.h2c && scheme == "https" {
            return Err("`h2c` is HTTP/2 over cleartext and this is an https service: over TLS, HTTP/2 is chosen by ALPN (`http_version: auto`, the default) or required with `http_version: 2`".into());
        }
        self.tls.validate()
    }

    /// The method, parsed (validation has accepted it).
    pub(crate) fn method(&self) -> Method {
        Method::from_bytes(self.method.as_bytes()).unwrap_or(Method::GET)
    }

    /// The port for the `service` label: the URL's explicit port or `port`.
    pub fn port(&self) -> Option<u16> {
        match &self.url {
            Some(u) => u.0.port(),
            None => self.port,
        }
    }
}

/// `http_version`: which HTTP versions a service speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpVersion {
    /// Over TLS, offer `h2` and `http/1.1` by ALPN and speak what the server picks; over
    /// cleartext, HTTP/1.1 (unless `h2c`).
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: required by ALPN over TLS, with prior knowledge over cleartext.
    Http2,
}

impl HttpVersion {
    /// The values accepted in the config.
    pub const NAMES: [&'static str; 3] = ["auto", "1.1", "2"];

    /// True for the default, so `save` can leave it out.
    pub fn is_auto(&self) -> bool {
        *self == HttpVersion::Auto
    }

    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
        }
    }

    /// Parses `auto`, `1.1` or `2` (also `2.0`, `http/1.1`, `h2`, ignoring case).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(HttpVersion::Auto),
            "1.1" | "http/1.1" => Ok(HttpVersion::Http1),
            "2" | "2.0" | "h2" | "http/2" => Ok(HttpVersion::Http2),
            other => Err(format!(
                "invalid http_version `{other}`{}: write `auto`, `1.1` or `2`",
                crate::base::hint::did_you_mean(other, HttpVersion::NAMES)
            )),
        }
    }
}

impl<'de> Deserialize<'de> for HttpVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HttpVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto`, `1.1` or `2`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HttpVersion, E> {
                HttpVersion::parse(v).map_err(E::custom)
            }
            // YAML reads an unquoted `1.1` or `2` as a number.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HttpVersion, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HttpVersion, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HttpVersion, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for HttpVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A URL from the config, parsed while it loads. Only `http` and `https` are accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl(pub url::Url);

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl HttpUrl {
    /// Parses an absolute http(s) URL with a host and no credentials.
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("invalid url `{s}`: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!("url `{s}` must start with http:// or https://"));
        }
        if u.host().is_none() {
            return Err(format!("url `{s}` has no host"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!(
                "url `{s}` carries credentials: send them with `headers: {{Authorization: ...}}`"
            ));
        }
        Ok(HttpUrl(u))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HttpUrl::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// One accepted status: an exact code (`200`) or a class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPattern {
    /// Exactly this code.
    Code(u16),
    /// Any code of this hundred, 1 to 5.
    Class(u16),
}

impl StatusPattern {
    /// Parses `200` or `2xx` (the `x`s in either case).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let err =
            || format!("invalid status `{t}`: write a code such as `200` or a class such as `2xx`");
        let lower = t.to_ascii_lowercase();
        if let Some(d) = lower.strip_suffix("xx") {
            return match d.parse::<u16>() {
                Ok(c @ 1..=5) if d.len() == 1 => Ok(StatusPattern::Class(c)),
                _ => Err(err()),
            };
        }
        match t.parse::<u16>() {
            Ok(c @ 100..=599) => Ok(StatusPattern::Code(c)),
            _ => Err(err()),
        }
    }

    /// Whether `code` matches.
    pub fn matches(self, code: u16) -> bool {
        match self {
            StatusPattern::Code(c) => c == code,
            StatusPattern::Class(c) => code / 100 == c,
        }
    }
}

impl fmt::Display for StatusPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusPattern::Code(c) => write!(f, "{c}"),
            StatusPattern::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// `expect_status`: one pattern or a list. Empty means the default, 2xx and 3xx.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSet(pub Vec<StatusPattern>);

impl StatusSet {
    /// True for the default, so `save` can leave it out.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `code` is accepted.
    pub fn accepts(&self, code: u16) -> bool {
        if self.0.is_empty() {
            return (200..400).contains(&code);
        }
        self.0.iter().any(|p| p.matches(code))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("2xx, 3xx");
        }
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code such as 200, a class such as `2xx`, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSet, E> {
                StatusPattern::parse(v)
                    .map(|p| StatusSet(vec![p]))
                    .map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSet, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSet, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSet, A::Error> {
                let mut out = Vec::new();
                while let Some(one) = seq.next_element::<StatusSet>()? {
                    out.extend(one.0);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "expect_status is empty: list at least one code or class, or leave it out",
                    ));
                }
                Ok(StatusSet(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for StatusSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        parts.serialize(s)
    }
}

/// `tls:` options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Accept any certificate (the expiry is still read and exported).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// PEM file of the certificates to trust instead of the system trust store: CA
    /// certificates, or the server's own (self-signed) certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<CaFile>,
    /// The name sent in SNI and checked against the certificate, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// True when nothing is set, so `save` can leave the block out.
    pub fn is_default(&self) -> bool {
        *self == TlsOptions::default()
    }

    fn validate(&self) -> Result<(), String> {
        if self.insecure_skip_verify && self.ca_file.is_some() {
            return Err(
                "tls: `insecure_skip_verify` and `ca_file` contradict each other; keep one".into(),
            );
        }
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.as_str())
                .map_err(|_| format!("tls: invalid server_name `{name}`"))?;
        }
        Ok(())
    }
}

/// `tls.ca_file`: the path as written and the certificates it held when the config was read.
#[derive(Clone, PartialEq)]
pub struct CaFile {
    /// The path as written (relative paths are relative to netmon's working directory).
    pub path: PathBuf,
    /// The certificates, DER-encoded.
    pub certs: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl CaFile {
    /// Reads and parses `path`; every certificate must be usable as a trust anchor.
    pub fn load(path: &str) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file `{path}`: {e}"))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca_file `{path}` is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file `{path}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in &certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("ca_file `{path}`: unusable certificate: {e}"))?;
        }
        Ok(CaFile {
            path: PathBuf::from(path),
            certs,
        })
    }
}

impl<'de> Deserialize<'de> for CaFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CaFile::load(&s).map_err(de::Error::custom)
    }
}

impl Serialize for CaFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.path.to_string_lossy())
    }
}
