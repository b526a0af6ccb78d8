//! The DNS probe: one query sent to the target, which is the DNS server (as in
//! blackbox_exporter), over UDP or TCP.
//!
//! The query is built and the answer parsed by hickory-proto; the exchange itself is a few lines
//! here (a connected UDP socket, or a TCP stream with the RFC 1035 §4.2.2 two-byte length
//! prefix), so the probe sees the raw response — rcode, flags, answers — with no resolver cache
//! and no retries in between. NXDOMAIN and SERVFAIL are answers with an rcode, judged against
//! `valid_rcodes`. A response with another id is ignored (we keep waiting until the runner's
//! timeout); bytes that do not parse as a DNS message are reason `protocol`. A truncated UDP
//! answer (TC bit) is reported as reason `protocol` rather than silently retried over TCP, so a
//! `transport: udp` service always measures UDP; use `transport: tcp` for large answers.
//!
//! Up when a well-formed response arrives, its rcode is in `valid_rcodes` and, if
//! `expect_answer_regex` is set, at least one answer record's text form matches it. Latency is
//! the query round trip: from sending the query to receiving the whole response (for TCP, the
//! connect is not included).
//!
//! # Files
//! `options.rs` holds what a service may set (query type and name, rcodes, transport),
//! `exchange.rs` the query's round trip over UDP or TCP and the check that a message is ours,
//! this file the definition, the metrics, the probe and the verdict.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{RData, Record};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::base::labels::{FGauge, Labels};
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe};

mod exchange;
mod options;

pub use options::{DEFAULT_PORT, Options, QueryType, Rcode, Transport};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use exchange::accept;
use exchange::{tcp_exchange, udp_exchange};
pub(crate) use options::query_name;

/// The EDNS(0) UDP payload size we advertise: the DNS Flag Day 2020 value, which avoids IP
/// fragmentation and makes truncation rare.
const EDNS_PAYLOAD: u16 = 1232;

/// The `dns` families.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    rcode: Family<Labels, FGauge>,
    answers: Family<Labels, FGauge>,
}

impl Metrics {
    /// Registers `netmon_dns_rcode` and `netmon_dns_answer_records`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "dns_rcode",
            "Response code of the last DNS answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...); -1 when the last probe got no answer",
            m.rcode.clone(),
        );
        registry.register(
            "dns_answer_records",
            "Records in the answer section of the last DNS response; 0 when the last probe got no answer",
            m.answers.clone(),
        );
        m
    }
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        Metrics::register(registry)
    }
}

/// One service's handles into the `dns` families.
#[derive(Debug, Clone)]
struct Handles {
    rcode: FGauge,
    answers: FGauge,
}

impl Handles {
    fn no_answer(&self) {
        self.rcode.set(-1.0);
        self.answers.set(0.0);
    }
}

/// Marks the service as having no answer unless disarmed: covers every early return and the
/// runner dropping the probe at its timeout.
struct NoAnswerGuard<'a>(Option<&'a Handles>);

impl Drop for NoAnswerGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.0 {
            h.no_answer();
        }
    }
}

/// The `dns` protocol in the table of protocols.
#[derive(Debug)]
pub struct Dns;

impl Definition for Dns {
    const NAME: &'static str = "dns";
    const PORT: PortRule = PortRule::Default(DEFAULT_PORT);
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate()
    }

    fn port(options: &Options) -> Option<u16> {
        Some(options.port())
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(DnsProbe::new(options.clone(), ctx, metrics)?))
    }
}

/// Probes one DNS server.
#[derive(Debug)]
pub struct DnsProbe {
    options: Options,
    query: Query,
    /// The encoded query; each probe writes a fresh id into its first two bytes.
    wire: Vec<u8>,
    handles: Handles,
    families: Metrics,
    labels: Labels,
}

impl DnsProbe {
    /// Builds the probe and creates its series (rcode -1 until the first answer).
    pub fn new(
        options: Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let name = query_name(&options.query_name).map_err(BuildError)?;
        let query = Query::query(name, options.query_type.record_type());
        let mut msg = Message::query();
        msg.metadata.recursion_desired = options.recursion_desired;
        msg.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(edns);
        let wire = msg
            .to_vec()
            .map_err(|e| BuildError(format!("cannot encode the dns query: {e}")))?;
        let families = metrics.clone();
        let handles = Handles {
            rcode: families.rcode.get_or_create_owned(ctx.labels),
            answers: families.answers.get_or_create_owned(ctx.labels),
        };
        handles.no_answer();
        Ok(DnsProbe {
            options,
            query,
            wire,
            handles,
            families,
            labels: ctx.labels.clone(),
        })
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let mut guard = NoAnswerGuard(Some(&self.handles));
        let addrs = resolve::resolve(&target.host, self.options.port(), self.options.ip).await?;
        let id: u16 = rand::random();
        let mut wire = self.wire.clone();
        // The id is the first field of the header (RFC 1035 §4.1.1), always encoded.
        if let Some(field) = wire.get_mut(..2) {
            field.copy_from_slice(&id.to_be_bytes());
        }
        let (response, rtt) = match self.options.transport {
            Transport::Udp => {
                let addr = *addrs
                    .first()
                    .ok_or_else(|| Failure::new(Reason::Dns, "no address to query"))?;
                udp_exchange(addr, &wire, id, &self.query).await?
            }
            Transport::Tcp => tcp_exchange(&addrs, &wire, id, &self.query).await?,
        };
        guard.0 = None;
        let rcode = Rcode(response.metadata.response_code.into());
        self.handles.rcode.set(f64::from(rcode.0));
        self.handles.answers.set(response.answers.len() as f64);
        judge(&self.options, &response)?;
        Ok(Success::new(rtt.max(Duration::from_nanos(1))))
    }
}

impl Probe for DnsProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.families.rcode.remove(&self.labels);
        self.families.answers.remove(&self.labels);
    }
}

/// Judges a response that [`accept`] took as ours: the TC bit over UDP, the rcode, then
/// `expect_answer_regex` against each answer's zone-file text. `pub(crate)` for
/// `crate::fuzzing`.
pub(crate) fn judge(options: &Options, response: &Message) -> Result<(), Failure> {
    let rcode = Rcode(response.metadata.response_code.into());
    if response.metadata.truncation && options.transport == Transport::Udp {
        return Err(Failure::new(
            Reason::Protocol,
            format!(
                "truncated answer over udp (TC bit set, rcode {rcode}, {} records): use `transport: tcp` for this query",
                response.answers.len()
            ),
        ));
    }
    if !options.valid_rcodes.contains(&rcode) {
        let valid: Vec<String> = options.valid_rcodes.iter().map(Rcode::to_string).collect();
        return Err(Failure::new(
            Reason::Status,
            format!(
                "rcode {rcode} ({}) is not in valid_rcodes [{}]",
                rcode.0,
                valid.join(", ")
            ),
        ));
    }
    if let Some(re) = &options.expect_answer_regex {
        let texts: Vec<String> = response.answers.iter().map(record_text).collect();
        if !texts.iter().any(|t| re.0.is_match(t)) {
            let shown = texts.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
            return Err(Failure::new(
                Reason::Mismatch,
                format!(
                    "no answer record matches /{}/ ({} records{}{})",
                    re.as_str(),
                    texts.len(),
                    if texts.is_empty() { "" } else { ": " },
                    shown
                ),
            ));
        }
    }
    Ok(())
}

/// A record in its zone-file text form, as `dig` prints it but with spaces between the fields.
/// hickory's `Display` runs the strings of a TXT record together unquoted (`"v=spf1 a" "-all"`
/// reads `v=spf1 a-all`), so TXT data is written here as RFC 1035 §5.1 character-strings.
fn record_text(record: &Record) -> String {
    match &record.data {
        RData::TXT(txt) => {
            let strings: Vec<String> = txt.txt_data.iter().map(|s| quoted(s)).collect();
            format!(
                "{} {} {} {} {}",
                record.name,
                record.ttl,
                record.dns_class,
                record.record_type(),
                strings.join(" ")
            )
        }
        _ => record.to_string(),
    }
}

/// One character-string in double quotes, with `"` and `\` escaped and every byte outside
/// printable ASCII as `\DDD` (RFC 1035 §5.1), the way BIND's tools print it.
fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' '..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
