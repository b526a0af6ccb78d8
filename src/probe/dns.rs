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

use crate::config::{IpPreference, Regex};
use crate::metrics::{FGauge, Labels};
use crate::probe::{
    BuildError, Context, Failure, Outcome, Probe, Reason, Success, Target, resolve,
};

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
                crate::config::did_you_mean(&t.to_ascii_uppercase(), RCODE_NAMES.map(|r| r.0)),
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

    fn record_type(self) -> RecordType {
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
                    crate::config::did_you_mean(
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
fn query_name(s: &str) -> Result<Name, String> {
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
    pub fn new(options: Options, ctx: &Context<'_>) -> Result<Self, BuildError> {
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
        let families = ctx.metrics.dns.clone();
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
        wire[..2].copy_from_slice(&id.to_be_bytes());
        let (response, rtt) = match self.options.transport {
            Transport::Udp => udp_exchange(addrs[0], &wire, id, &self.query).await?,
            Transport::Tcp => tcp_exchange(&addrs, &wire, id, &self.query).await?,
        };
        guard.0 = None;
        let rcode = Rcode(response.metadata.response_code.into());
        self.handles.rcode.set(f64::from(rcode.0));
        self.handles.answers.set(response.answers.len() as f64);
        if response.metadata.truncation && self.options.transport == Transport::Udp {
            return Err(Failure::new(
                Reason::Protocol,
                format!(
                    "truncated answer over udp (TC bit set, rcode {rcode}, {} records): use `transport: tcp` for this query",
                    response.answers.len()
                ),
            ));
        }
        if !self.options.valid_rcodes.contains(&rcode) {
            let valid: Vec<String> = self
                .options
                .valid_rcodes
                .iter()
                .map(Rcode::to_string)
                .collect();
            return Err(Failure::new(
                Reason::Status,
                format!(
                    "rcode {rcode} ({}) is not in valid_rcodes [{}]",
                    rcode.0,
                    valid.join(", ")
                ),
            ));
        }
        if let Some(re) = &self.options.expect_answer_regex {
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
        Ok(Success {
            latency: rtt.max(Duration::from_nanos(1)),
        })
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

/// Decides what a received message is: ours (`Some`), someone else's (`None`: ignored), or a
/// protocol error.
fn accept(
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
