//! STAMP test packets (RFC 8762, unauthenticated mode): the only code that reads or writes
//! their bytes. All integers are big-endian; timestamps are NTP 64-bit (RFC 8762 §4.2.1, Z = 0).
//!
//! ```text
//! Session-Sender test packet (44 octets and more)
//!  0        4                12      14      16      18                              44
//!  +--------+----------------+-------+-------+-------+------------------------------+----
//!  |  seq   |  timestamp T1  | error |  MBZ  | SSID  |             MBZ              | padding
//!  +--------+----------------+-------+-------+-------+------------------------------+----
//!
//! Session-Reflector test packet (as long as the packet it answers)
//!  0        4                12      14      16               24        28
//!  +--------+----------------+-------+-------+----------------+---------+----------------+
//!  |  seq   |  timestamp T3  | error | SSID  | receive T2     | snd seq | snd timestamp  |
//!  +--------+----------------+-------+-------+----------------+---------+----------------+
//!  36        38      40   41      44
//!  +---------+-------+----+-------+----
//!  | snd err |  MBZ  |TTL |  MBZ  | bytes 44.. of the sender's packet
//!  +---------+-------+----+-------+----
//! ```
//! The SSID (Session-Sender Identifier) is RFC 8972's, in what RFC 8762 calls MBZ; a reflector
//! that only knows RFC 8762 answers 0 there. Octets after the first 44 (padding, or RFC 8972
//! TLVs) are copied back unchanged: this reflector does not interpret TLVs.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The port IANA assigned to STAMP (and OWAMP/TWAMP control before it).
pub const DEFAULT_PORT: u16 = 862;
/// Length of a test packet without padding or TLVs: both formats are 44 octets.
pub const BASE_LEN: usize = 44;
/// The largest packet: the largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_LEN: usize = 65_507;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;
/// One unit of the 32.32 fixed-point timestamp, in seconds.
const FRACTION: f64 = 4_294_967_296.0;

/// An NTP 64-bit timestamp: seconds since 1900 in the high 32 bits, the fraction in the low
/// ones. Only differences are taken, with wrapping arithmetic, so the 2036 era roll-over does
/// not matter while the two clocks are within 68 years of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `t` as an NTP timestamp (the seconds wrap into era 1 after 2036).
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        // A clock before 1970 is not something to measure with; read it as the epoch.
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs().wrapping_add(NTP_UNIX_DELTA) & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    /// `self` moved on by `d` (wrapping like the clock's own counter).
    pub fn after(self, d: Duration) -> Timestamp {
        let frac = (u128::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        let units = (u128::from(d.as_secs()) << 32) + frac;
        // Truncation is the wrap: timestamps are modulo 2^64 units.
        Timestamp(self.0.wrapping_add(units as u64))
    }

    /// `self - earlier` in seconds, signed (RFC 5905 §6's era-free subtraction).
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        self.0.wrapping_sub(earlier.0) as i64 as f64 / FRACTION
    }
}

/// The Error Estimate field (RFC 4656 §4.1.2, RFC 8762 §4.2.1):
/// `S|Z|scale(6)|multiplier(8)`, error = multiplier × 2^(scale − 32) seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorEstimate {
    /// S: the clock is synchronised to UTC by an external source.
    pub synchronised: bool,
    /// Z: the timestamps are in PTPv2 truncated format rather than NTP 64-bit.
    pub ptp: bool,
    /// Scale, 0 to 63.
    pub scale: u8,
    /// Multiplier; 0 is invalid (RFC 4656).
    pub multiplier: u8,
}

impl ErrorEstimate {
    /// What netmon sends: S = 0, since it cannot know whether the host's clock is synchronised
    /// to UTC, and an error of 2^-10 s (about 1 ms), the order of an NTP-disciplined clock on a
    /// LAN. One-way delays need both clocks synchronised whatever the fields say.
    pub const NETMON: ErrorEstimate = ErrorEstimate {
        synchronised: false,
        ptp: false,
        scale: 22,
        multiplier: 1,
    };

    /// The field's two octets.
    pub fn to_bits(self) -> u16 {
        (u16::from(self.synchronised) << 15)
            | (u16::from(self.ptp) << 14)
            | (u16::from(self.scale & 0x3f) << 8)
            | u16::from(self.multiplier)
    }

    /// Reads the field's two octets.
    pub fn from_bits(bits: u16) -> ErrorEstimate {
        ErrorEstimate {
            synchronised: bits & 0x8000 != 0,
            ptp: bits & 0x4000 != 0,
            scale: ((bits >> 8) & 0x3f) as u8,
            multiplier: (bits & 0xff) as u8,
        }
    }

    /// The estimated error in seconds.
    pub fn seconds(self) -> f64 {
        f64::from(self.multiplier) * 2f64.powi(i32::from(self.scale) - 32)
    }
}

/// A Session-Sender test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderPacket {
    /// Sequence number within the session.
    pub seq: u32,
    /// When it was sent (T1).
    pub timestamp: Timestamp,
    /// The sender clock's error estimate.
    pub error: ErrorEstimate,
    /// Session-Sender Identifier (RFC 8972); 0 when none.
    pub ssid: u16,
}

/// A Session-Reflector test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReflectorPacket {
    /// The reflector's sequence number: a copy of the sender's in stateless mode, its own
    /// count of the session's packets in stateful mode (RFC 8762 §4.3.1, §4.3.2).
    pub seq: u32,
    /// When the reflector sent it (T3).
    pub timestamp: Timestamp,
    /// The reflector clock's error estimate.
    pub error: ErrorEstimate,
    /// The SSID of the packet answered (RFC 8972), 0 from an RFC 8762-only reflector.
    pub ssid: u16,
    /// When the reflector received the sender's packet (T2).
    pub receive: Timestamp,
    /// The sender's sequence number, copied.
    pub sender_seq: u32,
    /// The sender's timestamp (T1), copied.
    pub sender_timestamp: Timestamp,
    /// The sender's error estimate, copied.
    pub sender_error: ErrorEstimate,
    /// TTL or Hop Limit of the sender's packet as it reached the reflector (0 when unknown).
    pub sender_ttl: u8,
}

/// Why bytes are not a valid test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer octets than a test packet has.
    #[error("too short: {0} bytes, a STAMP test packet has at least {BASE_LEN}")]
    TooShort(usize),
    /// More octets than any UDP datagram may carry.
    #[error("too long: {0} bytes, a STAMP test packet has at most {MAX_LEN}")]
    TooLong(usize),
}

/// Errors building a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The requested size is outside `BASE_LEN..=MAX_LEN`.
    #[error("packet size {0} is out of range: use {BASE_LEN} to {MAX_LEN} bytes")]
    Size(usize),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn check_len(b: &[u8]) -> Result<(), WireError> {
    if b.len() < BASE_LEN {
        Err(WireError::TooShort(b.len()))
    } else if b.len() > MAX_LEN {
        Err(WireError::TooLong(b.len()))
    } else {
        Ok(())
    }
}

impl SenderPacket {
    /// Writes the packet into `out` (cleared first), `size` octets long: the 44-octet base and
    /// zero padding.
    pub fn encode_into(&self, size: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !(BASE_LEN..=MAX_LEN).contains(&size) {
            return Err(EncodeError::Size(size));
        }
        out.clear();
        out.resize(size, 0);
        out[0..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..12].copy_from_slice(&self.timestamp.0.to_be_bytes());
        out[12..14].copy_from_slice(&self.error.to_bits().to_be_bytes());
        out[16..18].copy_from_slice(&self.ssid.to_be_bytes());
        Ok(())
    }

    /// Reads a sender packet; MBZ octets and padding are ignored, as RFC 8762 has a receiver
    /// do. Never panics, whatever the input.
    pub fn decode(b: &[u8]) -> Result<SenderPacket, WireError> {
        check_len(b)?;
        Ok(SenderPacket {
            seq: u32_at(b, 0),
            timestamp: Timestamp(u64_at(b, 4)),
            error: ErrorEstimate::from_bits(u16_at(b, 12)),
            ssid: u16_at(b, 16),
        })
    }
}

impl ReflectorPacket {
    /// Writes the packet's 44-octet base into `out[..44]`; `out` must be at least that long.
    fn write_base(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..12].copy_from_slice(&self.timestamp.0.to_be_bytes());
        out[12..14].copy_from_slice(&self.error.to_bits().to_be_bytes());
        out[14..16].copy_from_slice(&self.ssid.to_be_bytes());
        out[16..24].copy_from_slice(&self.receive.0.to_be_bytes());
        out[24..28].copy_from_slice(&self.sender_seq.to_be_bytes());
        out[28..36].copy_from_slice(&self.sender_timestamp.0.to_be_bytes());
        out[36..38].copy_from_slice(&self.sender_error.to_bits().to_be_bytes());
        out[38..40].fill(0);
        out[40] = self.sender_ttl;
        out[41..44].fill(0);
    }

    /// Writes the packet into `out` (cleared first), `size` octets long with zero padding.
    pub fn encode_into(&self, size: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !(BASE_LEN..=MAX_LEN).contains(&size) {
            return Err(EncodeError::Size(size));
        }
        out.clear();
        out.resize(size, 0);
        self.write_base(out);
        Ok(())
    }

    /// Reads a reflector packet. Never panics, whatever the input.
    pub fn decode(b: &[u8]) -> Result<ReflectorPacket, WireError> {
        check_len(b)?;
        Ok(ReflectorPacket {
            seq: u32_at(b, 0),
            timestamp: Timestamp(u64_at(b, 4)),
            error: ErrorEstimate::from_bits(u16_at(b, 12)),
            ssid: u16_at(b, 14),
            receive: Timestamp(u64_at(b, 16)),
            sender_seq: u32_at(b, 24),
            sender_timestamp: Timestamp(u64_at(b, 28)),
            sender_error: ErrorEstimate::from_bits(u16_at(b, 36)),
            sender_ttl: b[40],
        })
    }
}

impl fmt::Display for ReflectorPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq={} sender_seq={} ssid={} ttl={}",
            self.seq, self.sender_seq, self.ssid, self.sender_ttl
        )
    }
}

/// Turns the sender's packet `request`, received at `receive` with TTL `ttl`, into a stateless
/// reflector's answer in place (RFC 8762 §4.3.1): the reply has the request's length, the
/// sender's fields copied where the reflector format wants them, and the reflector's sequence
/// number equal to the sender's. `transmit` is read last, just before the caller sends, so the
/// dwell time the sender takes off the round trip is as long as it really was.
pub fn reflect_in_place(
    request: &mut [u8],
    receive: Timestamp,
    ttl: u8,
    error: ErrorEstimate,
    transmit: impl FnOnce() -> Timestamp,
) -> Result<(), WireError> {
    let s = SenderPacket::decode(request)?;
    let reply = ReflectorPacket {
        seq: s.seq,
        timestamp: transmit(),
        error,
        ssid: s.ssid,
        receive,
        sender_seq: s.seq,
        sender_timestamp: s.timestamp,
        sender_error: s.error,
        sender_ttl: ttl,
    };
    reply.write_base(request);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> SenderPacket {
        SenderPacket {
            seq: 0x0102_0304,
            timestamp: Timestamp(0xe000_0000_8000_0000),
            error: ErrorEstimate::NETMON,
            ssid: 0xbeef,
        }
    }

    #[test]
    fn timestamps_convert_and_subtract() {
        let t = UNIX_EPOCH + Duration::new(1_800_000_000, 500_000_000);
        let ts = Timestamp::from_system_time(t);
        assert_eq!(ts.0 >> 32, (1_800_000_000 + NTP_UNIX_DELTA) & 0xffff_ffff);
        assert_eq!(ts.0 & 0xffff_ffff, 0x8000_0000);
        let later = ts.after(Duration::from_micros(1500));
        assert!((later.seconds_since(ts) - 0.0015).abs() < 1e-9);
        assert!((ts.seconds_since(later) + 0.0015).abs() < 1e-9);
        // Across the 2036 roll-over the difference stays small.
        let before = Timestamp(0xffff_ffff_0000_0000);
        assert!((before.after(Duration::from_secs(2)).seconds_since(before) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn error_estimate_bits() {
        let e = ErrorEstimate::NETMON;
        assert_eq!(e.to_bits(), 0x1601);
        assert_eq!(ErrorEstimate::from_bits(e.to_bits()), e);
        assert!((e.seconds() - 1.0 / 1024.0).abs() < 1e-12);
        let s = ErrorEstimate::from_bits(0xc0ff);
        assert!(s.synchronised && s.ptp);
        assert_eq!((s.scale, s.multiplier), (0, 255));
    }

    #[test]
    fn sender_layout_is_as_documented() {
        let mut b = Vec::new();
        sender().encode_into(60, &mut b).unwrap();
        assert_eq!(b.len(), 60);
        assert_eq!(&b[0..4], &[1, 2, 3, 4]);
        assert_eq!(&b[4..12], &0xe000_0000_8000_0000u64.to_be_bytes());
        assert_eq!(&b[12..14], &[0x16, 0x01]);
        assert_eq!(&b[14..16], &[0, 0]);
        assert_eq!(&b[16..18], &[0xbe, 0xef]);
        assert!(b[18..].iter().all(|&x| x == 0));
        assert_eq!(SenderPacket::decode(&b), Ok(sender()));
        assert_eq!(sender().encode_into(43, &mut b), Err(EncodeError::Size(43)));
        assert_eq!(
            sender().encode_into(MAX_LEN + 1, &mut b),
            Err(EncodeError::Size(MAX_LEN + 1))
        );
    }

    #[test]
    fn reflecting_copies_the_sender_fields_and_keeps_the_length() {
        let mut b = Vec::new();
        sender().encode_into(50, &mut b).unwrap();
        b[45] = 0x77; // padding or a TLV: reflected unchanged
        let receive = Timestamp(0xe000_0001_0000_0000);
        reflect_in_place(&mut b, receive, 64, ErrorEstimate::NETMON, || {
            receive.after(Duration::from_micros(20))
        })
        .unwrap();
        assert_eq!(b.len(), 50);
        assert_eq!(b[45], 0x77);
        let r = ReflectorPacket::decode(&b).unwrap();
        assert_eq!(r.seq, sender().seq);
        assert_eq!(r.sender_seq, sender().seq);
        assert_eq!(r.sender_timestamp, sender().timestamp);
        assert_eq!(r.sender_error, sender().error);
        assert_eq!(r.ssid, 0xbeef);
        assert_eq!(r.receive, receive);
        assert_eq!(r.sender_ttl, 64);
        assert!((r.timestamp.seconds_since(r.receive) - 20e-6).abs() < 1e-9);
        assert_eq!(&b[38..40], &[0, 0]);
        assert_eq!(&b[41..44], &[0, 0, 0]);
        // The same bytes through the encoder.
        let mut again = Vec::new();
        r.encode_into(50, &mut again).unwrap();
        assert_eq!(again[..BASE_LEN], b[..BASE_LEN]);
    }

    #[test]
    fn short_and_long_packets_are_refused() {
        let mut b = vec![0u8; 43];
        assert_eq!(SenderPacket::decode(&b), Err(WireError::TooShort(43)));
        assert_eq!(ReflectorPacket::decode(&b), Err(WireError::TooShort(43)));
        assert_eq!(
            reflect_in_place(
                &mut b,
                Timestamp(1),
                0,
                ErrorEstimate::NETMON,
                Timestamp::now
            ),
            Err(WireError::TooShort(43))
        );
        let big = vec![0u8; MAX_LEN + 1];
        assert_eq!(
            SenderPacket::decode(&big),
            Err(WireError::TooLong(MAX_LEN + 1))
        );
        assert_eq!(
            ReflectorPacket::decode(&big),
            Err(WireError::TooLong(MAX_LEN + 1))
        );
        assert!(SenderPacket::decode(&[]).is_err());
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(8762);
        for _ in 0..20_000 {
            let len = rng.random_range(0..120);
            let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = SenderPacket::decode(&b);
            let _ = ReflectorPacket::decode(&b);
            // The fuzz target's invariants too: re-encoding, length and tail kept on reflection.
            crate::fuzzing::stamp_wire(&b);
            let _ = reflect_in_place(
                &mut b,
                Timestamp(rng.random()),
                1,
                ErrorEstimate::NETMON,
                || Timestamp(2),
            );
        }
    }
}
