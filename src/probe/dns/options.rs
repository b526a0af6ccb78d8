//! What a `dns` service may set: the query, the rcodes that count as up, the transport.

use std::fmt;

use hickory_proto::rr::{Name, RecordType};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::base::values::{IpPreference, Regex};

/// The DNS port.
pub const DEFAULT_PORT: u16 = 53;

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
