//! NTP bytes: the 48-byte client request out, the server's reply in, and the verdict on it
//! (RFC 5905 §7.3 for the fields, RFC 4330 §5 for what a client checks).
//!
//! This is netmon's own code rather than rsntp's because the verdict needs what rsntp keeps to
//! itself: rsntp 4.1 returns no packet with its errors, judges stratum 0 before the mode and the
//! origin timestamp (so an unsynchronised chronyd, LI 3 stratum 0 refid 0, and our own request
//! reflected back both came out as "kiss-of-death, unknown code"), folds stratum 16 and leap
//! indicator 3 into one error, and maps DENY and RSTR to one code. The exchange is one
//! datagram each way, so owning it costs less than working around it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::outcome::Reason;

/// Length of an NTP header without extension fields or MAC, the only part we read.
const PACKET_LEN: usize = 48;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;

/// One unit of the 32.32 fixed-point timestamp, in seconds.
const FRACTION: f64 = 4_294_967_296.0;

/// An NTP timestamp: seconds since 1900 in the high 32 bits, the fraction in the low ones.
/// Only differences are taken, with wrapping arithmetic, so the era (the 2036 roll-over)
/// does not matter as long as the two clocks are within 68 years of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp(pub(super) u64);

impl Timestamp {
    /// `t` as an NTP timestamp (era 0 or 1: the high word wraps).
    pub(super) fn from_system_time(t: SystemTime) -> Timestamp {
        // A clock before 1970 is not something to probe with; read it as the epoch.
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs().wrapping_add(NTP_UNIX_DELTA) & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    /// `self - earlier` in seconds, signed.
    fn seconds_since(self, earlier: Timestamp) -> f64 {
        // Reinterpreting the wrapped difference as signed is RFC 5905 §6's era-free subtraction.
        self.0.wrapping_sub(earlier.0) as i64 as f64 / FRACTION
    }
}

/// The request we send: version 4, mode 3 (client), everything zero but the transmit
/// timestamp, which is `nonce` rather than our clock. The server copies it into the reply's
/// origin timestamp, so a random one proves the reply answers this request without telling
/// anyone on the path what our clock reads (the IETF NTP working group's client data
/// minimisation draft recommends it); the offset is computed from our own send time instead.
pub(super) fn request(nonce: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// The fields of a reply that the verdict reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Leap indicator: 0 none, 1 and 2 a leap second today, 3 not synchronised.
    pub(super) leap: u8,
    pub(super) version: u8,
    pub(super) mode: u8,
    pub(super) stratum: u8,
    /// Reference identifier: a kiss code or clock name at stratum 0 and 1, an address above.
    pub(super) refid: [u8; 4],
    pub(super) origin: Timestamp,
    pub(super) receive: Timestamp,
    pub(super) transmit: Timestamp,
}

impl Header {
    /// Reads the first 48 bytes of a datagram; anything after them (extension fields, MAC) is
    /// ignored.
    pub(super) fn parse(bytes: &[u8]) -> Result<Header, ReplyError> {
        let Some(p) = bytes.first_chunk::<PACKET_LEN>() else {
            return Err(ReplyError::TooShort(bytes.len()));
        };
        let ts = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            Timestamp(u64::from_be_bytes(b))
        };
        Ok(Header {
            leap: p[0] >> 6,
            version: (p[0] >> 3) & 0x07,
            mode: p[0] & 0x07,
            stratum: p[1],
            refid: [p[12], p[13], p[14], p[15]],
            origin: ts(24),
            receive: ts(32),
            transmit: ts(40),
        })
    }
}

/// What a valid reply from a synchronised server tells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Reading {
    /// 1 to 15.
    pub(super) stratum: u8,
    /// The server's clock minus ours, `((T2 - T1) + (T3 - T4)) / 2`, in seconds.
    pub(super) offset: f64,
    /// The round trip without the server's processing, `(T4 - T1) - (T3 - T2)`, in seconds.
    pub(super) delay: f64,
}

/// Our side of the exchange: what we sent, when, and how long the answer took.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// The transmit timestamp of our request, which a reply must carry as its origin.
    pub(super) nonce: u64,
    /// Our clock when the request left (T1).
    pub(super) at: Timestamp,
    /// Measured on the monotonic clock, so a step of our wall clock during the exchange does
    /// not enter the delay; T4 is `at + round_trip`.
    pub(super) round_trip: Duration,
}

/// Judges a received datagram against the request it should answer: first that it is a reply
/// to us at all (`protocol`), then what the server says about itself (`status`).
pub(super) fn judge(bytes: &[u8], sent: &Sent) -> Result<Reading, ReplyError> {
    let h = Header::parse(bytes)?;
    if !(3..=4).contains(&h.version) {
        return Err(ReplyError::Version(h.version));
    }
    // Our own request carries mode 3 and origin 0: check the mode first so a reflector is
    // named as one rather than as "another request".
    if h.mode == 3 {
        return Err(ReplyError::Reflected);
    }
    if h.mode != 4 {
        return Err(ReplyError::Mode(h.mode));
    }
    // The origin check comes before the kiss codes: RFC 5905 §7.4 has a client trust a
    // kiss-of-death only from a reply that answers its request, else anyone could forge one.
    if h.origin.0 != sent.nonce {
        return Err(ReplyError::OtherRequest);
    }
    if h.transmit.0 == 0 {
        return Err(ReplyError::ZeroTransmit);
    }
    if h.stratum == 0 {
        return Err(match Kiss::from_refid(h.refid) {
            Some(kiss) => ReplyError::Kiss(kiss),
            None => ReplyError::NotSynchronised(Unsynchronised::from_header(&h)),
        });
    }
    if h.leap == 3 || h.stratum == 16 {
        return Err(ReplyError::NotSynchronised(Unsynchronised::from_header(&h)));
    }
    if h.stratum > 16 {
        return Err(ReplyError::ReservedStratum(h.stratum));
    }
    let t1 = sent.at;
    let t4_minus_t1 = sent.round_trip.as_secs_f64();
    let t2_minus_t1 = h.receive.seconds_since(t1);
    let t3_minus_t1 = h.transmit.seconds_since(t1);
    let server_time = h.transmit.seconds_since(h.receive);
    Ok(Reading {
        stratum: h.stratum,
        offset: (t2_minus_t1 + (t3_minus_t1 - t4_minus_t1)) / 2.0,
        delay: t4_minus_t1 - server_time,
    })
}

/// Why a reply does not count as a synchronised server's answer to our request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Fewer than 48 bytes.
    #[error("too short: {0} bytes, an ntp packet has at least 48")]
    TooShort(usize),
    /// A version other than 3 or 4 (we ask in version 4).
    #[error("version {0}, not 3 or 4")]
    Version(u8),
    /// Mode 3: the datagram is a client request, almost surely ours sent back.
    #[error(
        "it is our own request sent back (mode 3, client): whatever listens there reflects datagrams instead of answering ntp"
    )]
    Reflected,
    /// Any other mode than 4 (server).
    #[error("mode {0} ({mode}), not 4 (server)", mode = mode_name(*.0))]
    Mode(u8),
    /// The origin timestamp is not our request's transmit timestamp.
    #[error("it answers another request (its origin timestamp is not the one we sent)")]
    OtherRequest,
    /// A server always stamps its transmit time.
    #[error("its transmit timestamp is zero")]
    ZeroTransmit,
    /// Stratum 0 with a kiss code (RFC 5905 §7.4).
    #[error("{0}")]
    Kiss(Kiss),
    /// Leap indicator 3, stratum 16, or stratum 0 without a kiss code.
    #[error("{0}")]
    NotSynchronised(Unsynchronised),
    /// Strata 17 to 255 are reserved (RFC 5905 §7.3).
    #[error("stratum {0} is reserved: a synchronised server has stratum 1-15")]
    ReservedStratum(u8),
}

impl ReplyError {
    /// The failure reason: `status` when a server answered us and said what state it is in,
    /// `protocol` when the datagram is not a proper reply to our request.
    pub(super) fn reason(&self) -> Reason {
        match self {
            ReplyError::Kiss(_) | ReplyError::NotSynchronised(_) | ReplyError::ReservedStratum(_) => {
                Reason::Status
            }
            ReplyError::TooShort(_)
            | ReplyError::Version(_)
            | ReplyError::Reflected
            | ReplyError::Mode(_)
            | ReplyError::OtherRequest
            | ReplyError::ZeroTransmit => Reason::Protocol,
        }
    }

    /// The value of `netmon_ntp_stratum` after this reply: 0 for a kiss-of-death (the wire
    /// value that marks one), -1 for an unsynchronised server and for anything that is not a
    /// valid reply, where no stratum is known.
    pub(super) fn stratum_gauge(&self) -> f64 {
        match self {
            ReplyError::Kiss(k) if !k.code.means_unsynchronised() => 0.0,
            _ => -1.0,
        }
    }
}

fn mode_name(mode: u8) -> &'static str {
    match mode {
        0 => "reserved",
        1 => "symmetric active",
        2 => "symmetric passive",
        3 => "client",
        4 => "server",
        5 => "broadcast",
        6 => "control message",
        _ => "private",
    }
}

/// What an unsynchronised reply showed, so the message says exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsynchronised {
    leap: u8,
    stratum: u8,
    refid: [u8; 4],
}

impl Unsynchronised {
    fn from_header(h: &Header) -> Self {
        Unsynchronised {
            leap: h.leap,
            stratum: h.stratum,
            refid: h.refid,
        }
    }
}

impl fmt::Display for Unsynchronised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut seen = Vec::new();
        if self.leap == 3 {
            seen.push("leap indicator 3".to_string());
        }
        match self.stratum {
            0 => seen.push(format!(
                "stratum 0 without a kiss code, reference id {}",
                refid_text(self.refid)
            )),
            16 => seen.push("stratum 16".to_string()),
            _ => {}
        }
        write!(f, "not synchronised ({})", seen.join(", "))
    }
}

/// A reference id as an operator reads it: its letters when printable, else hex.
fn refid_text(refid: [u8; 4]) -> String {
    if refid.iter().all(|b| b.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(&refid))
    } else {
        format!("0x{:08x}", u32::from_be_bytes(refid))
    }
}

/// A kiss-of-death: stratum 0 with a four-letter code in the reference id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kiss {
    code: KissCode,
    /// The letters as received (an unknown code is shown as it came).
    letters: [u8; 4],
}

impl Kiss {
    /// The kiss in a stratum 0 reference id, if it holds one: four upper-case ASCII letters
    /// (RFC 5905 §7.4; shorter codes padded with NULs are accepted). Anything else, such as
    /// chronyd's all-zero id when it has no source, is not a kiss.
    fn from_refid(refid: [u8; 4]) -> Option<Kiss> {
        let len = refid.iter().position(|&b| b == 0).unwrap_or(4);
        let (letters, padding) = refid.split_at(len);
        if letters.is_empty()
            || !letters.iter().all(u8::is_ascii_uppercase)
            || padding.iter().any(|&b| b != 0)
        {
            return None;
        }
        Some(Kiss {
            code: KissCode::from_letters(letters),
            letters: refid,
        })
    }
}

impl fmt::Display for Kiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letters = String::from_utf8_lossy(&self.letters);
        write!(
            f,
            "kiss-of-death {}: {}",
            letters.trim_end_matches('\0'),
            self.code.meaning()
        )
    }
}

/// The kiss codes of RFC 5905 §7.4 (and NTSN of RFC 8915 §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KissCode {
    Acst,
    Auth,
    Auto,
    Bcst,
    Cryp,
    Deny,
    Drop,
    Rstr,
    Init,
    Mcst,
    Nkey,
    Ntsn,
    Rate,
    Rmot,
    Step,
    /// Four letters RFC 5905 does not define.
    Other,
}

impl KissCode {
    fn from_letters(letters: &[u8]) -> KissCode {
        match letters {
            b"ACST" => KissCode::Acst,
            b"AUTH" => KissCode::Auth,
            b"AUTO" => KissCode::Auto,
            b"BCST" => KissCode::Bcst,
            b"CRYP" => KissCode::Cryp,
            b"DENY" => KissCode::Deny,
            b"DROP" => KissCode::Drop,
            b"RSTR" => KissCode::Rstr,
            b"INIT" => KissCode::Init,
            b"MCST" => KissCode::Mcst,
            b"NKEY" => KissCode::Nkey,
            b"NTSN" => KissCode::Ntsn,
            b"RATE" => KissCode::Rate,
            b"RMOT" => KissCode::Rmot,
            b"STEP" => KissCode::Step,
            _ => KissCode::Other,
        }
    }

    /// INIT and STEP say the server itself is not synchronised; the others refuse us.
    fn means_unsynchronised(self) -> bool {
        matches!(self, KissCode::Init | KissCode::Step)
    }

    /// RFC 5905's meaning, said from the probing side.
    fn meaning(self) -> &'static str {
        match self {
            KissCode::Acst => "the association belongs to a unicast server",
            KissCode::Auth => "server authentication failed",
            KissCode::Auto => "autokey sequence failed",
            KissCode::Bcst => "the association belongs to a broadcast server",
            KissCode::Cryp => "cryptographic authentication or identification failed",
            KissCode::Deny => "the server denies us access",
            KissCode::Drop => "lost peer in symmetric mode",
            KissCode::Rstr => "the server's access policy refuses us",
            KissCode::Init => {
                "not synchronised: the server has not yet synchronised to a source for the first time"
            }
            KissCode::Mcst => "the association belongs to a dynamically discovered server",
            KissCode::Nkey => "no key found: the key was never installed or is not trusted",
            KissCode::Ntsn => "the server rejected our NTS cookie (negative acknowledgement)",
            KissCode::Rate => {
                "the server asks us to slow down: we exceeded its rate limit (raise this service's interval)"
            }
            KissCode::Rmot => "somebody is altering the association from a remote host",
            KissCode::Step => {
                "not synchronised: the server stepped its clock and has not resynchronised yet"
            }
            KissCode::Other => "a kiss code RFC 5905 does not define",
        }
    }
}
