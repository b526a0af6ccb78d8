//! What one probe run tells: success with its measurements, or a classified failure.

use std::fmt;
use std::time::Duration;

use crate::base::round::Round;

/// Why a probe failed: the `reason` label of `netmon_probe_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No answer within the timeout.
    Timeout,
    /// The peer refused: TCP RST or ICMP port unreachable.
    Refused,
    /// No route to the host or network.
    Unreachable,
    /// The host name could not be resolved.
    Dns,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// An HTTP status, DNS rcode or NTP state outside what is expected.
    Status,
    /// An answer arrived but did not match what was expected (regex, echo bytes).
    Mismatch,
    /// The HTTP body failed its checks or could not be read.
    Body,
    /// Too many packets were lost.
    Loss,
    /// The peer spoke the protocol wrongly (malformed reply).
    Protocol,
    /// Any other socket error.
    Io,
}

impl Reason {
    /// Every reason, so a service's series can all be removed when it goes.
    pub const ALL: [Reason; 11] = [
        Reason::Timeout,
        Reason::Refused,
        Reason::Unreachable,
        Reason::Dns,
        Reason::Tls,
        Reason::Status,
        Reason::Mismatch,
        Reason::Body,
        Reason::Loss,
        Reason::Protocol,
        Reason::Io,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Unreachable => "unreachable",
            Reason::Dns => "dns",
            Reason::Tls => "tls",
            Reason::Status => "status",
            Reason::Mismatch => "mismatch",
            Reason::Body => "body",
            Reason::Loss => "loss",
            Reason::Protocol => "protocol",
            Reason::Io => "io",
        }
    }

    /// Maps a socket error to a reason.
    pub fn from_io(e: &std::io::Error) -> Reason {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused | K::ConnectionReset => Reason::Refused,
            K::TimedOut => Reason::Timeout,
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => Reason::Unreachable,
            _ => match e.raw_os_error() {
                Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) | Some(libc::EHOSTDOWN) => {
                    Reason::Unreachable
                }
                _ => Reason::Io,
            },
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a successful probe measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    /// The protocol's latency (see the table in the README).
    pub latency: Duration,
    /// The round of packets behind it (icmp, echo, stamp; a traceroute's target hop), for loss
    /// and RTT statistics.
    pub round: Option<Round>,
    /// What the probe saw beyond up and latency, for the status page (a traceroute's path).
    pub detail: Option<String>,
}

impl Success {
    /// A success of `latency` with no packet round.
    pub fn new(latency: Duration) -> Self {
        Success {
            latency,
            round: None,
            detail: None,
        }
    }

    /// The same success, carrying the round it measured.
    pub fn with_round(self, round: Round) -> Self {
        Success {
            round: Some(round),
            ..self
        }
    }

    /// The same success, with what the probe saw for the status page.
    pub fn with_detail(self, detail: String) -> Self {
        Success {
            detail: Some(detail),
            ..self
        }
    }
}

/// Why a probe failed, with the detail for the log and the landing page.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The failure class.
    pub reason: Reason,
    /// A lowercase, human sentence: what happened.
    pub message: String,
    /// The round of packets that failed (icmp, echo, stamp), for loss and RTT statistics.
    pub round: Option<Round>,
    /// What the probe saw besides the failure, for the status page (a traceroute's path).
    pub detail: Option<String>,
}

impl Failure {
    /// A failure of `reason` with `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            round: None,
            detail: None,
        }
    }

    /// The same failure, carrying the round it measured.
    pub fn with_round(self, round: Round) -> Self {
        Failure {
            round: Some(round),
            ..self
        }
    }

    /// The same failure, with what the probe saw for the status page.
    pub fn with_detail(self, detail: String) -> Self {
        Failure {
            detail: Some(detail),
            ..self
        }
    }

    /// A failure from a socket error, classified by [`Reason::from_io`].
    pub fn io(context: &str, e: &std::io::Error) -> Self {
        Failure::new(Reason::from_io(e), format!("{context}: {e}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The result of one probe.
pub type Outcome = Result<Success, Failure>;

/// The round of packets behind an outcome, where the protocol sends rounds (icmp, echo, stamp; a
/// traceroute's target hop).
pub fn round_of(outcome: &Outcome) -> Option<&Round> {
    match outcome {
        Ok(s) => s.round.as_ref(),
        Err(f) => f.round.as_ref(),
    }
}

/// What the probe saw beyond up and latency, where the protocol tells more (traceroute).
pub fn detail_of(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Ok(s) => s.detail.as_deref(),
        Err(f) => f.detail.as_deref(),
    }
}

/// What a probe is pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as configured: a name or an IP literal.
    pub host: String,
}
