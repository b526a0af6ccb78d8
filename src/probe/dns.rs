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

use std::sync::Arc;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::base::labels::{FGauge, Labels};
use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::{IpPreference, Regex};
use crate::probe::shape::{BuildError, Context, Definition, Families, PortRule, Probe};

/// The DNS port.
pub const DEFAULT_PORT: u16 = 53;

/// The largest UDP payload we read; a datagram cannot be larger.
const UDP_BUFFER: usize = 64 * 1024;

/// The EDNS(0) UDP payload size we advertise: the DNS Flag Day 2020 value, which avoids IP
/// fragmentation and makes truncation rare.
const EDNS_PAYLOAD: u16 = 1232;

/// The rcodes written by name (RFC 1035, 2136, 6891, 8945, 2930, 4635, 7873).
const RCODE_NAMES: [(&str, u16); 19] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
    ("BADVERS", 16),
    ("BADKEY", 17),
    ("BADTIME", 18),
    ("BADMODE", 19),
    ("BADNAME", 20),
    ("BADALG", 21),
    ("BADTRUNC", 22),
    ("BADCOOKIE", 23),
];

/// A DNS response code, written by name (`NOERROR`, `NXDOMAIN`, ...; any case) or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rcode(pub u16);

impl Rcode {
    /// NOERROR.
    pub const NOERROR: Rcode = Rcode(0);

    /// Parses a name (case-insensitive) or a number from 0 to 4095 (rcodes are 12 bits).
    pub fn parse(s: &str) -> Result<Rcode, String> {
        let t = s.trim();
        if let Some((_, code)) = RCODE_NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
        {
            return Ok(Rcode(*code));
        }
        match t.parse::<u16>() {
            Ok(n) if n <= 4095 => Ok(Rcode(n)),
            _ => Err(format!(
                "unknown rcode `{t}`{}; write a name ({}) or a number from 0 to 4095",
                crate::base::hint::did_you_mean(&t.to_ascii_uppercase(), RCODE_NAMES.map(|r| r.0)),
                RCODE_NAMES.map(|r| r.0).join(", ")
            )),
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match RCODE_NAMES.iter().find(|(_, code)| *code == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Rcode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rcode::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Rcode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The record types a probe may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueryType {
    /// IPv4 address.
    #[default]
    A,
    /// IPv6 address.
    Aaaa,
    /// Canonical name.
    Cname,
    /// Mail exchanger.
    Mx,
    /// Name server.
    Ns,
    /// Reverse pointer.
    Ptr,
    /// Start of authority.
    Soa,
    /// Service locator.
    Srv,
    /// Text.
    Txt,
}

impl QueryType {
    /// Every supported type.
    pub const ALL: [QueryType; 9] = [
        QueryType::A,
        QueryType::Aaaa,
        QueryType::Cname,
        QueryType::Mx,
        QueryType::Ns,
        QueryType::Ptr,
        QueryType::Soa,
        QueryType::Srv,
        QueryType::Txt,
    ];

    /// The name as written in zone files.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Cname => "CNAME",
            QueryType::Mx => "MX",
            QueryType::Ns => "NS",
            QueryType::Ptr => "PTR",
            QueryType::Soa => "SOA",
            QueryType::Srv => "SRV",
            QueryType::Txt => "TXT",
        }
    }

    pub(crate) fn record_type(self) -> RecordType {
        match self {
            QueryType::A => RecordType::A,
            QueryType::Aaaa => RecordType::AAAA,
            QueryType::Cname => RecordType::CNAME,
            QueryType::Mx => RecordType::MX,
            QueryType::Ns => RecordType::NS,
            QueryType::Ptr => RecordType::PTR,
            QueryType::Soa => RecordType::SOA,
            QueryType::Srv => RecordType::SRV,
            QueryType::Txt => RecordType::TXT,
        }
    }

    fn is_default(&self) -> bool {
        *self == QueryType::A
    }
}

impl<'de> Deserialize<'de> for QueryType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        QueryType::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown query_type `{t}`{}; valid types: {}",
                    crate::base::hint::did_you_mean(
                        &t.to_ascii_uppercase(),
                        QueryType::ALL.map(QueryType::as_str)
                    ),
                    QueryType::ALL.map(QueryType::as_str).join(", ")
                ))
            })
    }
}

impl Serialize for QueryType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How the query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One datagram each way.
    #[default]
    Udp,
    /// A TCP connection, messages prefixed by their two-byte length.
    Tcp,
}

impl Transport {
    fn is_default(&self) -> bool {
        *self == Transport::Udp
    }
}

fn default_query_name() -> String {
    "example.com".into()
}

fn is_default_query_name(s: &str) -> bool {
    s == "example.com"
}

fn default_valid_rcodes() -> Vec<Rcode> {
    vec![Rcode::NOERROR]
}

fn is_default_valid_rcodes(v: &[Rcode]) -> bool {
    v == [Rcode::NOERROR]
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Options of a `dns` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The name asked about.
    #[serde(
        default = "default_query_name",
        skip_serializing_if = "is_default_query_name"
    )]
    pub query_name: String,
    /// The record type asked for.
    #[serde(default, skip_serializing_if = "QueryType::is_default")]
    pub query_type: QueryType,
    /// `udp` (default) or `tcp`.
    #[serde(default, skip_serializing_if = "Transport::is_default")]
    pub transport: Transport,
    /// The server's port, 53 unless set (`DNS:5353` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The rcodes that count as up.
    #[serde(
        default = "default_valid_rcodes",
        skip_serializing_if = "is_default_valid_rcodes"
    )]
    pub valid_rcodes: Vec<Rcode>,
    /// A pattern at least one answer record (in its zone-file text form) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_answer_regex: Option<Regex>,
    /// The RD flag: ask the server to recurse.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub recursion_desired: bool,
    /// Address family of the server when its name resolves to both.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            query_name: default_query_name(),
            query_type: QueryType::default(),
            transport: Transport::default(),
            port: None,
            valid_rcodes: default_valid_rcodes(),
            expect_answer_regex: None,
            recursion_desired: true,
            ip: IpPreference::Auto,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.port == Some(0) {
            return Err("port 0 is not a port to probe: use 1-65535".into());
        }
        if self.valid_rcodes.is_empty() {
            return Err(
                "valid_rcodes is empty, so no answer could be up: leave it out for [NOERROR]"
                    .into(),
            );
        }
        query_name(&self.query_name).map(|_| ())
    }

    /// The port queried.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

/// Parses `query_name` as a fully qualified name (a trailing dot is optional).
pub(crate) fn query_name(s: &str) -> Result<Name, String> {
    if s.trim().is_empty() {
        return Err("query_name is empty: write a name such as `example.com` or `.`".into());
    }
    let mut name =
        Name::from_utf8(s.trim()).map_err(|e| format!("invalid query_name `{s}`: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

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
        let texts: Vec<String> = response.answers.iter().map(|r| r.to_string()).collect();
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

/// Decides what a received message is: ours (`Some`), someone else's (`None`: ignored), or a
/// protocol error.
pub(crate) fn accept(
    bytes: &[u8],
    id: u16,
    query: &Query,
    from: SocketAddr,
) -> Result<Option<Message>, Failure> {
    let msg = Message::from_vec(bytes).map_err(|e| {
        Failure::new(
            Reason::Protocol,
            format!(
                "malformed dns response from {from} ({} bytes): {e}",
                bytes.len()
            ),
        )
    })?;
    if msg.metadata.id != id {
        tracing::debug!(%from, got = msg.metadata.id, want = id, "ignoring dns message with another id");
        return Ok(None);
    }
    if msg.metadata.message_type != MessageType::Response {
        return Err(Failure::new(
            Reason::Protocol,
            format!("{from} sent a query, not a response, with our id"),
        ));
    }
    // Servers may leave the question out of an error response (FORMERR, some SERVFAIL), but a
    // question that is there must be ours (RFC 5452 §9.1).
    if !msg.queries.is_empty() && (msg.queries.len() != 1 || msg.queries[0] != *query) {
        return Err(Failure::new(
            Reason::Protocol,
            format!(
                "{from} answered another question: {}",
                msg.queries
                    .iter()
                    .map(|q| format!("{} {}", q.name(), q.query_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(Some(msg))
}

/// Sends `wire` over a connected UDP socket and waits for the response with `id`.
async fn udp_exchange(
    addr: SocketAddr,
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<(Message, Duration), Failure> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| Failure::io("bind udp socket", &e))?;
    // Connected, so the kernel drops datagrams from anyone else and reports ICMP errors.
    socket
        .connect(addr)
        .await
        .map_err(|e| Failure::io(&format!("connect udp socket to {addr}"), &e))?;
    let start = Instant::now();
    socket
        .send(wire)
        .await
        .map_err(|e| Failure::io(&format!("send query to {addr}"), &e))?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| Failure::io(&format!("receive from {addr}"), &e))?;
        let rtt = start.elapsed();
        if let Some(msg) = accept(&buf[..n], id, query, addr)? {
            return Ok((msg, rtt));
        }
    }
}

/// Connects to the first address that accepts, sends `wire` with its length prefix and reads
/// length-prefixed messages until the one with `id`.
async fn tcp_exchange(
    addrs: &[SocketAddr],
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<(Message, Duration), Failure> {
    let mut last = None;
    let mut connected = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                connected = Some((s, addr));
                break;
            }
            Err(e) => last = Some(Failure::io(&format!("connect to {addr}"), &e)),
        }
    }
    let Some((mut stream, addr)) = connected else {
        return Err(last.unwrap_or_else(|| Failure::new(Reason::Dns, "no address to connect to")));
    };
    let len = u16::try_from(wire.len())
        .map_err(|_| Failure::new(Reason::Protocol, "query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    let start = Instant::now();
    stream
        .write_all(&framed)
        .await
        .map_err(|e| Failure::io(&format!("send query to {addr}"), &e))?;
    loop {
        let mut prefix = [0u8; 2];
        read_exact(&mut stream, &mut prefix, addr, "length prefix").await?;
        let len = usize::from(u16::from_be_bytes(prefix));
        if len == 0 {
            return Err(Failure::new(
                Reason::Protocol,
                format!("{addr} sent a zero-length dns message"),
            ));
        }
        // At most 65535 bytes: the prefix is the bound.
        let mut buf = vec![0u8; len];
        read_exact(&mut stream, &mut buf, addr, "message").await?;
        let rtt = start.elapsed();
        if let Some(msg) = accept(&buf, id, query, addr)? {
            return Ok((msg, rtt));
        }
    }
}

async fn read_exact(
    stream: &mut TcpStream,
    buf: &mut [u8],
    addr: SocketAddr,
    what: &str,
) -> Result<(), Failure> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Failure::new(
            Reason::Protocol,
            format!("{addr} closed the connection in the middle of the answer ({what})"),
        )),
        Err(e) => Err(Failure::io(&format!("read {what} from {addr}"), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeMetrics;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{RData, Record};
    use tokio::net::TcpListener;

    /// How the fake server behaves.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        /// Answers from the little zone in [`respond`].
        Normal,
        /// Sends bytes that are not a DNS message.
        Garbage,
        /// Answers with another id, and nothing else.
        WrongIdOnly,
        /// Answers with another id, then with the right one.
        WrongIdThenRight,
        /// Answers with our id but another question.
        WrongQuestion,
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The zone: `a.test` A (two records), `t.test` TXT, `rd.test` TXT echoing the RD flag,
    /// `fail.test` SERVFAIL, `big.test` truncated over UDP (three A records over TCP), anything
    /// else NXDOMAIN.
    fn respond(req: &Message, tcp: bool) -> Message {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        let Some(q) = req.queries.first().cloned() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp;
        };
        resp.add_query(q.clone());
        let qname = q.name().to_lowercase().to_ascii();
        let a = |ip: [u8; 4]| {
            Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(std::net::Ipv4Addr::from(ip))),
            )
        };
        let txt = |s: &str| {
            Record::from_rdata(q.name().clone(), 60, RData::TXT(TXT::new(vec![s.into()])))
        };
        match (qname.as_str(), q.query_type()) {
            ("a.test.", RecordType::A) => {
                resp.add_answer(a([192, 0, 2, 1]));
                resp.add_answer(a([192, 0, 2, 2]));
            }
            ("t.test.", RecordType::TXT) => {
                resp.add_answer(txt("v=spf1 -all"));
            }
            ("rd.test.", RecordType::TXT) => {
                let rd = if req.metadata.recursion_desired {
                    "rd=1"
                } else {
                    "rd=0"
                };
                resp.add_answer(txt(rd));
            }
            ("fail.test.", _) => resp.metadata.response_code = ResponseCode::ServFail,
            ("big.test.", _) if !tcp => resp.metadata.truncation = true,
            ("big.test.", RecordType::A) => {
                for i in 1..=3 {
                    resp.add_answer(a([192, 0, 2, i]));
                }
            }
            ("a.test." | "t.test." | "rd.test." | "big.test.", _) => {}
            _ => resp.metadata.response_code = ResponseCode::NXDomain,
        }
        resp
    }

    /// What the server sends for `bytes` in `mode`: zero or more messages.
    fn replies(bytes: &[u8], mode: Mode, tcp: bool) -> Vec<Vec<u8>> {
        let Ok(req) = Message::from_vec(bytes) else {
            return vec![];
        };
        let right = respond(&req, tcp);
        let mut wrong = right.clone();
        wrong.metadata.id = req.metadata.id.wrapping_add(1);
        match mode {
            Mode::Normal => vec![right.to_vec().unwrap()],
            Mode::Garbage => vec![b"\x13\x37 this is not dns".to_vec()],
            Mode::WrongIdOnly => vec![wrong.to_vec().unwrap()],
            Mode::WrongIdThenRight => vec![wrong.to_vec().unwrap(), right.to_vec().unwrap()],
            Mode::WrongQuestion => {
                let mut other = right.clone();
                other.queries = vec![Query::query(name("other.test."), RecordType::A)];
                vec![other.to_vec().unwrap()]
            }
        }
    }

    /// A DNS server on 127.0.0.1, UDP and TCP on one port. Returns the port.
    async fn server(mode: Mode) -> u16 {
        server_on("127.0.0.1", mode).await.unwrap()
    }

    /// A DNS server on `ip`, UDP and TCP on one port. Returns the port, or `None` when `ip`
    /// cannot be bound (no IPv6 loopback on this machine).
    async fn server_on(ip: &'static str, mode: Mode) -> Option<u16> {
        // The TCP port must match the UDP one; retry in the rare case it is taken.
        let (udp, tcp) = {
            let mut bound = None;
            for _ in 0..20 {
                let udp = UdpSocket::bind((ip, 0)).await.ok()?;
                let port = udp.local_addr().unwrap().port();
                if let Ok(tcp) = TcpListener::bind((ip, port)).await {
                    bound = Some((udp, tcp));
                    break;
                }
            }
            bound?
        };
        let port = udp.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                for r in replies(&buf[..n], mode, false) {
                    let _ = udp.send_to(&r, from).await;
                }
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    loop {
                        let mut prefix = [0u8; 2];
                        if s.read_exact(&mut prefix).await.is_err() {
                            return;
                        }
                        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
                        if s.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        for r in replies(&msg, mode, true) {
                            let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&r);
                            if s.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Some(port)
    }

    fn probe(options: Options) -> DnsProbe {
        let labels: Labels = vec![("service".into(), "dns".into())];
        let metrics = ProbeMetrics::register(&mut Registry::default());
        DnsProbe::new(
            options,
            &Context {
                labels: &labels,
                timeout: std::time::Duration::from_secs(5),
            },
            &metrics.dns,
        )
        .unwrap()
    }

    fn options(
        port: u16,
        query_name: &str,
        query_type: QueryType,
        transport: Transport,
    ) -> Options {
        Options {
            query_name: query_name.into(),
            query_type,
            transport,
            port: Some(port),
            ..Options::default()
        }
    }

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
        }
    }

    /// Runs the probe with a test-side bound so a hang fails rather than blocks.
    async fn run(p: &DnsProbe) -> Outcome {
        run_on(p, &target()).await
    }

    async fn run_on(p: &DnsProbe, target: &Target) -> Outcome {
        tokio::time::timeout(Duration::from_secs(5), p.run(target))
            .await
            .expect("probe finished within 5s")
    }

    fn gauges(p: &DnsProbe) -> (f64, f64) {
        (p.handles.rcode.get(), p.handles.answers.get())
    }

    const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    #[tokio::test]
    async fn a_query_is_up_with_rcode_and_answer_count_over_udp_and_tcp() {
        let port = server(Mode::Normal).await;
        for t in BOTH {
            let p = probe(options(port, "a.test", QueryType::A, t));
            assert_eq!(gauges(&p), (-1.0, 0.0), "no answer before the first probe");
            let ok = run(&p).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert!(ok.latency > Duration::ZERO && ok.latency < Duration::from_secs(1));
            assert_eq!(gauges(&p), (0.0, 2.0), "{t:?}");
        }
    }

    #[tokio::test]
    async fn txt_answers_are_matched_by_regex() {
        let port = server(Mode::Normal).await;
        for t in BOTH {
            let mut o = options(port, "t.test", QueryType::Txt, t);
            o.expect_answer_regex = Some(Regex::new(r"TXT v=spf1 -all$").unwrap());
            run(&probe(o.clone()))
                .await
                .unwrap_or_else(|e| panic!("{t:?}: {e}"));
            // The record's text form includes its name, so patterns can anchor on it.
            o.expect_answer_regex = Some(Regex::new(r"^t\.test\. 60 IN TXT").unwrap());
            run(&probe(o.clone()))
                .await
                .unwrap_or_else(|e| panic!("{t:?}: {e}"));
            o.expect_answer_regex = Some(Regex::new("v=DMARC1").unwrap());
            let p = probe(o);
            let e = run(&p).await.unwrap_err();
            assert_eq!(e.reason, Reason::Mismatch, "{e}");
            assert!(e.message.contains("v=spf1"), "{}", e.message);
            assert_eq!(gauges(&p), (0.0, 1.0), "the answer is still counted");
        }
    }

    #[tokio::test]
    async fn regex_with_no_answer_records_is_a_mismatch() {
        let port = server(Mode::Normal).await;
        // NOERROR with an empty answer section (NODATA).
        let mut o = options(port, "t.test", QueryType::A, Transport::Udp);
        run(&probe(o.clone())).await.unwrap();
        o.expect_answer_regex = Some(Regex::new(".").unwrap());
        let e = run(&probe(o)).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert!(e.message.contains("0 records"), "{}", e.message);
    }

    #[tokio::test]
    async fn nxdomain_is_an_answer_with_its_rcode() {
        let port = server(Mode::Normal).await;
        for t in BOTH {
            let mut o = options(port, "missing.test", QueryType::A, t);
            let p = probe(o.clone());
            let e = run(&p).await.unwrap_err();
            assert_eq!(e.reason, Reason::Status, "{e}");
            assert!(e.message.contains("NXDOMAIN (3)"), "{}", e.message);
            assert_eq!(gauges(&p), (3.0, 0.0), "{t:?}");
            // Monitoring that a name does NOT exist is a valid use.
            o.valid_rcodes = vec![Rcode::parse("nxdomain").unwrap()];
            let p = probe(o);
            run(&p).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(gauges(&p), (3.0, 0.0));
        }
    }

    #[tokio::test]
    async fn servfail_is_an_answer_with_its_rcode() {
        let port = server(Mode::Normal).await;
        for t in BOTH {
            let p = probe(options(port, "fail.test", QueryType::A, t));
            let e = run(&p).await.unwrap_err();
            assert_eq!(e.reason, Reason::Status, "{e}");
            assert!(e.message.contains("SERVFAIL (2)"), "{}", e.message);
            assert_eq!(gauges(&p), (2.0, 0.0), "{t:?}");
        }
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_failure() {
        let port = server(Mode::Garbage).await;
        for t in BOTH {
            let p = probe(options(port, "a.test", QueryType::A, t));
            let e = run(&p).await.unwrap_err();
            assert_eq!(e.reason, Reason::Protocol, "{t:?}: {e}");
            assert!(
                e.message.contains("malformed dns response"),
                "{}",
                e.message
            );
            assert_eq!(gauges(&p), (-1.0, 0.0), "{t:?}");
        }
    }

    #[tokio::test]
    async fn another_question_is_a_protocol_failure() {
        let port = server(Mode::WrongQuestion).await;
        for t in BOTH {
            let e = run(&probe(options(port, "a.test", QueryType::A, t)))
                .await
                .unwrap_err();
            assert_eq!(e.reason, Reason::Protocol, "{t:?}: {e}");
            assert!(e.message.contains("other.test."), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn responses_with_another_id_are_ignored() {
        let port = server(Mode::WrongIdThenRight).await;
        for t in BOTH {
            let p = probe(options(port, "a.test", QueryType::A, t));
            run(&p).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(gauges(&p), (0.0, 2.0));
        }
        let port = server(Mode::WrongIdOnly).await;
        for t in BOTH {
            let p = probe(options(port, "a.test", QueryType::A, t));
            // Only the runner's timeout ends the wait; dropping the probe clears the gauges.
            let waited = tokio::time::timeout(Duration::from_millis(300), p.run(&target())).await;
            assert!(
                waited.is_err(),
                "{t:?}: a reply with another id was taken: {waited:?}"
            );
            assert_eq!(gauges(&p), (-1.0, 0.0), "{t:?}");
        }
    }

    #[tokio::test]
    async fn truncated_udp_answer_is_reported_and_tcp_gets_it_whole() {
        let port = server(Mode::Normal).await;
        let e = run(&probe(options(
            port,
            "big.test",
            QueryType::A,
            Transport::Udp,
        )))
        .await
        .unwrap_err();
        assert_eq!(e.reason, Reason::Protocol, "{e}");
        assert!(
            e.message.contains("truncated") && e.message.contains("transport: tcp"),
            "{}",
            e.message
        );
        let p = probe(options(port, "big.test", QueryType::A, Transport::Tcp));
        run(&p).await.unwrap();
        assert_eq!(gauges(&p), (0.0, 3.0));
    }

    #[tokio::test]
    async fn recursion_desired_sets_the_rd_flag() {
        let port = server(Mode::Normal).await;
        let mut o = options(port, "rd.test", QueryType::Txt, Transport::Udp);
        o.expect_answer_regex = Some(Regex::new("rd=1").unwrap());
        run(&probe(o.clone())).await.unwrap();
        o.recursion_desired = false;
        o.expect_answer_regex = Some(Regex::new("rd=0").unwrap());
        run(&probe(o)).await.unwrap();
    }

    #[tokio::test]
    async fn ipv6_servers_and_the_ip_option() {
        let Some(port) = server_on("::1", Mode::Normal).await else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        for t in BOTH {
            let p = probe(options(port, "a.test", QueryType::A, t));
            let target = Target { host: "::1".into() };
            run_on(&p, &target)
                .await
                .unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(gauges(&p), (0.0, 2.0));
            let mut o = options(port, "a.test", QueryType::A, t);
            o.ip = IpPreference::Ipv4;
            let e = run_on(&probe(o), &target).await.unwrap_err();
            assert_eq!(e.reason, Reason::Dns, "{e}");
            assert!(e.message.contains("no IPv4 address"), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn closed_ports_are_refused() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        drop(udp);
        let p = probe(options(port, "a.test", QueryType::A, Transport::Udp));
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
        assert_eq!(gauges(&p), (-1.0, 0.0));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        drop(tcp);
        let e = run(&probe(options(
            port,
            "a.test",
            QueryType::A,
            Transport::Tcp,
        )))
        .await
        .unwrap_err();
        assert_eq!(e.reason, Reason::Refused, "{e}");
    }

    #[tokio::test]
    async fn forget_removes_the_series() {
        let mut registry = Registry::default();
        let metrics = ProbeMetrics::register(&mut registry);
        let labels: Labels = vec![("service".into(), "dns".into())];
        let p = DnsProbe::new(
            Options::default(),
            &Context {
                labels: &labels,
                timeout: std::time::Duration::from_secs(5),
            },
            &metrics.dns,
        )
        .unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("dns_rcode{service=\"dns\"} -1"), "{text}");
        assert!(
            text.contains("dns_answer_records{service=\"dns\"} 0"),
            "{text}"
        );
        p.forget();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("service=\"dns\""), "{text}");
    }

    fn service(yaml_service: &str) -> Result<crate::config::model::Service, String> {
        let text = format!("targets:\n  127.0.0.1:\n    services: [{yaml_service}]\n");
        crate::config::loader::load(&text, "t.yml")
            .map(|c| c.services().next().unwrap().clone())
            .map_err(|e| e.to_string())
    }

    fn dns_options(s: &crate::config::model::Service) -> &Options {
        match &s.options {
            crate::probe::Options::Dns(o) => o,
            other => panic!("not dns options: {other:?}"),
        }
    }

    #[test]
    fn config_defaults_and_shorthand() {
        let s = service("DNS").unwrap();
        assert_eq!(s.name, "dns");
        assert_eq!(dns_options(&s), &Options::default());
        assert_eq!(dns_options(&s).port(), 53);
        let s = service("\"DNS:5353\"").unwrap();
        assert_eq!(s.name, "dns:5353");
        assert_eq!(dns_options(&s).port(), 5353);
    }

    #[test]
    fn config_reads_every_option() {
        let s = service(
            "{ type: dns, query_name: example.org, query_type: txt, transport: tcp, port: 5300, \
             valid_rcodes: [NoError, nxdomain, 2], expect_answer_regex: 'v=spf1', \
             recursion_desired: false, ip: ipv4 }",
        )
        .unwrap();
        let o = dns_options(&s);
        assert_eq!(o.query_name, "example.org");
        assert_eq!(o.query_type, QueryType::Txt);
        assert_eq!(o.transport, Transport::Tcp);
        assert_eq!(o.port(), 5300);
        assert_eq!(o.valid_rcodes, vec![Rcode(0), Rcode(3), Rcode(2)]);
        assert_eq!(o.expect_answer_regex.as_ref().unwrap().as_str(), "v=spf1");
        assert!(!o.recursion_desired);
        assert_eq!(o.ip, IpPreference::Ipv4);
        // Service names (SRV) and reverse names (PTR) are ordinary query names.
        service("{ type: dns, query_name: _sip._tcp.example.com, query_type: SRV }").unwrap();
        service("{ type: dns, query_name: 1.2.0.192.in-addr.arpa., query_type: PTR }").unwrap();
        for t in ["aaaa", "CNAME", "mx", "NS", "ptr", "SOA", "srv"] {
            service(&format!("{{ type: dns, query_type: {t} }}")).unwrap();
        }
    }

    #[test]
    fn config_errors_say_what_is_valid() {
        let e = service("{ type: dns, query_type: AAA }").unwrap_err();
        assert!(e.contains("unknown query_type `AAA`"), "{e}");
        assert!(e.contains("did you mean `AAAA`"), "{e}");
        let e = service("{ type: dns, valid_rcodes: [NXDOMIAN] }").unwrap_err();
        assert!(e.contains("unknown rcode `NXDOMIAN`"), "{e}");
        assert!(e.contains("did you mean `NXDOMAIN`"), "{e}");
        let e = service("{ type: dns, valid_rcodes: [] }").unwrap_err();
        assert!(e.contains("valid_rcodes is empty"), "{e}");
        let e = service("{ type: dns, transport: quic }").unwrap_err();
        assert!(e.contains("quic"), "{e}");
        let e = service("{ type: dns, query_nam: x }").unwrap_err();
        assert!(e.contains("did you mean `query_name`"), "{e}");
        let e = service("{ type: dns, query_name: 'a..b' }").unwrap_err();
        assert!(e.contains("invalid query_name"), "{e}");
        let e = service("{ type: dns, expect_answer_regex: '(' }").unwrap_err();
        assert!(e.contains("invalid regular expression"), "{e}");
    }

    #[test]
    fn rcodes_print_by_name_or_number() {
        assert_eq!(Rcode(3).to_string(), "NXDOMAIN");
        assert_eq!(Rcode(4000).to_string(), "4000");
        assert_eq!(Rcode::parse("servfail"), Ok(Rcode(2)));
        assert!(Rcode::parse("4096").is_err());
    }
}
