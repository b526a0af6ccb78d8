//! The `http` and `https` probes: one implementation for both protocols.
//!
//! Up when a response arrives whose status (after following redirects, at most
//! [`MAX_REDIRECTS`]) is in `expect_status` (default 2xx/3xx), whose body fits in `max_body` and
//! satisfies `body_regex` / `body_not_regex`, and, for https, whose certificate verified.
//! Latency is the total request time over all redirects, and the five phases of
//! `netmon_http_phase_seconds` add up to it exactly (see [`fetch::Clock`]).
//!
//! - [`options`]: what the config says, validated while it loads.
//! - [`fetch`]: one timed request on one connection (hyper over tokio-rustls), in HTTP/1.1 or
//!   HTTP/2.
//! - [`tls`]: trust (ca_file or the system store), the verifier that records the presented
//!   chain, and handshake failures in words.

pub mod fetch;
pub mod options;
pub mod tls;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use url::Url;

pub use options::Options;

use self::fetch::{Clock, Phase, Versions};
use crate::base::labels::{FGauge, Labels, with_label};
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe};

/// The most redirects followed before the probe fails with reason `status`.
pub const MAX_REDIRECTS: usize = 10;

/// Headers that must not follow a redirect to another origin (they are credentials, or name
/// the original host).
const ORIGIN_BOUND: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
];

/// The HTTP families, shared by `http` and `https` services.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    status: Family<Labels, Gauge>,
    version: Family<Labels, FGauge>,
    phase: Family<Labels, FGauge>,
    not_after: Family<Labels, Gauge>,
}

impl Metrics {
    /// Registers the families under `registry` (prefixed `netmon`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "http_status_code",
            "HTTP status of the last response, after redirects; 0 when no response arrived",
            m.status.clone(),
        );
        registry.register(
            "http_version",
            "HTTP version of the last response (1, 1.1 or 2), after redirects; 0 when no response arrived",
            m.version.clone(),
        );
        registry.register_with_unit(
            "http_phase",
            "Time the last HTTP probe spent in each phase (resolve, connect, tls, processing, transfer), summed over redirects",
            Unit::Seconds,
            m.phase.clone(),
        );
        registry.register_with_unit(
            "tls_cert_not_after_timestamp",
            "Earliest notAfter among the certificates the server presented, as a Unix timestamp",
            Unit::Seconds,
            m.not_after.clone(),
        );
        m
    }
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        Metrics::register(registry)
    }
}

/// The `http` protocol in the table of protocols.
#[derive(Debug)]
pub struct Http;

impl Definition for Http {
    const NAME: &'static str = "http";
    const PORT: PortRule = PortRule::Default(80);
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate(Self::NAME)
    }

    fn port(options: &Options) -> Option<u16> {
        options.port()
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(HttpProbe::new(Self::NAME, options.clone(), ctx, metrics)?))
    }
}

/// The `https` protocol in the table of protocols.
#[derive(Debug)]
pub struct Https;

impl Definition for Https {
    const NAME: &'static str = "https";
    const PORT: PortRule = PortRule::Default(443);
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate(Self::NAME)
    }

    fn port(options: &Options) -> Option<u16> {
        options.port()
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(HttpProbe::new(Self::NAME, options.clone(), ctx, metrics)?))
    }
}

/// Probes one `http` or `https` service.
#[derive(Debug)]
pub struct HttpProbe {
    scheme: &'static str,
    options: Options,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    tls: tls::Tls,
    versions: Versions,
    labels: Labels,
    metrics: Metrics,
    status: Gauge,
    version: FGauge,
    phases: [FGauge; 5],
}

impl HttpProbe {
    /// Builds the probe and creates its status and phase series. The certificate series is
    /// created by the first handshake that delivers a certificate: a 0 there would read as
    /// "expired in 1970" to an expiry alert.
    pub fn new(
        scheme: &'static str,
        options: Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &options.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| BuildError(format!("header `{name}`: {e}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|e| BuildError(format!("header `{name}`: {e}")))?;
            headers.insert(n, v);
        }
        let metrics = metrics.clone();
        let labels = ctx.labels.clone();
        let status = metrics.status.get_or_create_owned(&labels);
        let version = metrics.version.get_or_create_owned(&labels);
        let phases = Phase::ALL.map(|p| {
            metrics
                .phase
                .get_or_create_owned(&with_label(&labels, "phase", p.as_str()))
        });
        Ok(HttpProbe {
            scheme,
            method: options.method(),
            body: Bytes::from(options.body.clone().unwrap_or_default()),
            tls: tls::Tls::new(&options.tls)?,
            versions: Versions::new(options.http_version, options.h2c),
            headers,
            options,
            labels,
            metrics,
            status,
            version,
            phases,
        })
    }

    /// The first URL: `url`, or the target with `path` and `port`.
    fn start_url(&self, host: &str) -> Result<Url, Failure> {
        if let Some(u) = &self.options.url {
            return Ok(u.0.clone());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let host = if bare.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{bare}]")
        } else {
            host.to_string()
        };
        let port = self
            .options
            .port
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let path = self.options.path.as_deref().unwrap_or("/");
        Url::parse(&format!("{}://{host}{port}{path}", self.scheme)).map_err(|e| {
            Failure::new(
                Reason::Dns,
                format!("cannot make a URL of host `{host}`: {e}"),
            )
        })
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let mut report = Report {
            probe: self,
            clock: Clock::start(),
            status: 0,
            version: 0.0,
            not_after: None,
        };
        let mut url = self.start_url(&target.host)?;
        let first_host = url.host_str().map(str::to_owned);
        let mut method = self.method.clone();
        let mut body = self.body.clone();
        let mut headers = self.headers.clone();
        let mut visited = vec![url.clone()];
        loop {
            // The configured TLS name belongs to the first host, not to where redirects lead.
            let server_name = self
                .options
                .tls
                .server_name
                .as_deref()
                .filter(|_| url.host_str() == first_host.as_deref());
            let request = fetch::Request {
                url: &url,
                method: &method,
                headers: &headers,
                body: body.clone(),
                server_name,
                ip: self.options.ip,
            };
            let mut exchange = fetch::fetch(
                &request,
                &self.tls,
                self.versions,
                &mut report.clock,
                &mut report.not_after,
            )
            .await?;
            let status = exchange.status;
            report.status = status.as_u16();
            report.version = version_value(exchange.version);
            if self.options.follow_redirects && is_redirect(status) {
                if let Some(location) = exchange.location.take() {
                    let next = redirect_target(&url, &location, &visited)?;
                    if next.origin() != url.origin() {
                        for h in &ORIGIN_BOUND {
                            headers.remove(h);
                        }
                    }
                    // RFC 9110 15.4: 303 asks for a GET; browsers (and so servers) treat a
                    // POST answered by 301/302 the same way. 307/308 keep method and body.
                    if (status == StatusCode::SEE_OTHER && method != Method::HEAD)
                        || (method == Method::POST
                            && matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND))
                    {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                    visited.push(next.clone());
                    url = next;
                    continue;
                }
            }
            if !self.options.expect_status.accepts(status.as_u16()) {
                return Err(Failure::new(
                    Reason::Status,
                    format!(
                        "status {status} from {url}, expected {}",
                        self.options.expect_status
                    ),
                ));
            }
            let keep = self.options.body_regex.is_some() || self.options.body_not_regex.is_some();
            let bytes = exchange.read_body(self.options.max_body, keep).await?;
            check_body(&bytes, &self.options)?;
            return Ok(Success::new(report.clock.stop().max(std::time::Duration::from_nanos(1))));
        }
    }
}

/// Where a redirect leads, resolved against the current URL; a loop, too many hops or a
/// non-HTTP target fail the probe.
pub(crate) fn redirect_target(url: &Url, location: &str, visited: &[Url]) -> Result<Url, Failure> {
    let next = url.join(location).map_err(|e| {
        Failure::new(
            Reason::Protocol,
            format!("redirect from {url} to an invalid Location {location:?}: {e}"),
        )
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(Failure::new(
            Reason::Protocol,
            format!("redirect from {url} to {next}, which is not http(s)"),
        ));
    }
    if visited.contains(&next) {
        return Err(Failure::new(
            Reason::Status,
            format!("redirect loop: {url} sends back to {next}"),
        ));
    }
    if visited.len() > MAX_REDIRECTS {
        return Err(Failure::new(
            Reason::Status,
            format!("more than {MAX_REDIRECTS} redirects; the last one from {url} to {next}"),
        ));
    }
    Ok(next)
}

/// The value of `netmon_http_version` for a response of `version`.
fn version_value(version: hyper::Version) -> f64 {
    match version {
        hyper::Version::HTTP_09 => 0.9,
        hyper::Version::HTTP_10 => 1.0,
        hyper::Version::HTTP_11 => 1.1,
        hyper::Version::HTTP_2 => 2.0,
        hyper::Version::HTTP_3 => 3.0,
        // An unknown version cannot come from hyper's parsers; 0 reads as "none".
        _ => 0.0,
    }
}

pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

pub(crate) fn check_body(bytes: &[u8], options: &Options) -> Result<(), Failure> {
    let text = String::from_utf8_lossy(bytes);
    if let Some(re) = &options.body_regex {
        if !re.0.is_match(&text) {
            return Err(Failure::new(
                Reason::Body,
                format!("body does not match body_regex /{}/", re.as_str()),
            ));
        }
    }
    if let Some(re) = &options.body_not_regex {
        if re.0.is_match(&text) {
            return Err(Failure::new(
                Reason::Body,
                format!("body matches body_not_regex /{}/", re.as_str()),
            ));
        }
    }
    Ok(())
}

/// Publishes what one probe measured when it ends, including when the runner drops it on
/// timeout: the phase reached then is charged with the time spent in it.
struct Report<'a> {
    probe: &'a HttpProbe,
    clock: Clock,
    status: u16,
    version: f64,
    not_after: Option<i64>,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        self.clock.stop();
        for (gauge, spent) in self.probe.phases.iter().zip(self.clock.spent()) {
            gauge.set(spent.as_secs_f64());
        }
        self.probe.status.set(i64::from(self.status));
        self.probe.version.set(self.version);
        if let Some(t) = self.not_after {
            self.probe
                .metrics
                .not_after
                .get_or_create(&self.probe.labels)
                .set(t);
        }
    }
}

impl Probe for HttpProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.metrics.status.remove(&self.labels);
        self.metrics.version.remove(&self.labels);
        self.metrics.not_after.remove(&self.labels);
        for p in Phase::ALL {
            self.metrics
                .phase
                .remove(&with_label(&self.labels, "phase", p.as_str()));
        }
    }
}
