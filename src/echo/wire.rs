//! The echo message format: the only code that reads or writes echo message bytes.
//!
//! The echo server never looks inside a datagram (RFC 862 echoes whatever arrives); this format
//! is what the client (`netmon echo` and the `echo` probe) sends, so that a reply can be tied to
//! its request and checked byte for byte. All integers are big-endian.
//!
//! ```text
//!  0      4   5   6      8              16             24             32
//!  +------+---+---+------+--------------+--------------+--------------+------------
//!  | NMEC |ver|rsv| size |    nonce     |   sequence   |  sent (ns)   | padding ...
//!  +------+---+---+------+--------------+--------------+--------------+------------
//! ```
//! `size` is the whole message's length, so truncation shows; the padding is a fixed pattern
//! (byte at offset `i` is `i mod 256`), so [`decode`] can reject a corrupted message on its own,
//! without the copy the client keeps.

use std::fmt;

/// The first four bytes of every message ("NetMon EChO").
pub const MAGIC: [u8; 4] = *b"NMEC";
/// The format version this code writes and accepts.
pub const VERSION: u8 = 1;
/// Length of the fixed header; the smallest message.
pub const HEADER_LEN: usize = 32;
/// The largest message: the largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_LEN: usize = 65_507;

/// One echo message, as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message {
    /// Random per session, so replies to another session (or another process) never match.
    pub nonce: u64,
    /// Sequence number within the session, from 0.
    pub seq: u64,
    /// When the client sent it: nanoseconds on the session's monotonic clock, never 0.
    pub sent_ns: u64,
    /// The whole message's length in bytes, header included (`HEADER_LEN..=MAX_LEN`).
    pub size: usize,
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header.
    #[error("too short: {0} bytes, a message has at least {HEADER_LEN}")]
    TooShort(usize),
    /// More bytes than any message may have.
    #[error("too long: {0} bytes, a message has at most {MAX_LEN}")]
    TooLong(usize),
    /// The magic is wrong: not an echo message.
    #[error("bad magic {0:02x?}")]
    Magic([u8; 4]),
    /// A version this code does not know.
    #[error("unknown version {0}")]
    Version(u8),
    /// The reserved byte is not zero.
    #[error("reserved byte is {0}, not 0")]
    Reserved(u8),
    /// The length field disagrees with the bytes received (truncated or extended).
    #[error("length field says {header} bytes, got {actual}")]
    Length {
        /// What the header says.
        header: usize,
        /// What arrived.
        actual: usize,
    },
    /// The send timestamp is zero, which no sender writes.
    #[error("send timestamp is zero")]
    Timestamp,
    /// The padding differs from its pattern at this offset.
    #[error("padding corrupted at byte {0}")]
    Padding(usize),
}

/// Errors building a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The requested size is outside `HEADER_LEN..=MAX_LEN`.
    #[error("message size {0} is out of range: use {HEADER_LEN} to {MAX_LEN} bytes")]
    Size(usize),
    /// A zero timestamp would be indistinguishable from an unset one.
    #[error("send timestamp must not be zero")]
    Timestamp,
}

fn pad_byte(offset: usize) -> u8 {
    // Truncation is the pattern: 0, 1, ..., 255, 0, 1, ...
    (offset % 256) as u8
}

impl Message {
    /// Writes the message into `out` (cleared first), `self.size` bytes long.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !(HEADER_LEN..=MAX_LEN).contains(&self.size) {
            return Err(EncodeError::Size(self.size));
        }
        if self.sent_ns == 0 {
            return Err(EncodeError::Timestamp);
        }
        out.clear();
        out.reserve(self.size);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(0);
        // `size` <= MAX_LEN < 65536, checked above.
        out.extend_from_slice(&(self.size as u16).to_be_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ns.to_be_bytes());
        out.extend((HEADER_LEN..self.size).map(pad_byte));
        Ok(())
    }

    /// The message's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {:016x} seq={} sent={}ns size={}",
            self.nonce, self.seq, self.sent_ns, self.size
        )
    }
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Strictly decodes a message: every header field and every padding byte must be right.
/// Never panics, whatever the input.
pub fn decode(b: &[u8]) -> Result<Message, WireError> {
    if b.len() < HEADER_LEN {
        return Err(WireError::TooShort(b.len()));
    }
    if b.len() > MAX_LEN {
        return Err(WireError::TooLong(b.len()));
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&b[..4]);
    if magic != MAGIC {
        return Err(WireError::Magic(magic));
    }
    if b[4] != VERSION {
        return Err(WireError::Version(b[4]));
    }
    if b[5] != 0 {
        return Err(WireError::Reserved(b[5]));
    }
    let size = usize::from(u16::from_be_bytes([b[6], b[7]]));
    if size != b.len() {
        return Err(WireError::Length {
            header: size,
            actual: b.len(),
        });
    }
    let (Some(nonce), Some(seq), Some(sent_ns)) = (be_u64(b, 8), be_u64(b, 16), be_u64(b, 24))
    else {
        return Err(WireError::TooShort(b.len()));
    };
    if sent_ns == 0 {
        return Err(WireError::Timestamp);
    }
    if let Some(i) = (HEADER_LEN..b.len()).find(|&i| b[i] != pad_byte(i)) {
        return Err(WireError::Padding(i));
    }
    Ok(Message {
        nonce,
        seq,
        sent_ns,
        size,
    })
}

/// The nonce and sequence number at their places in `b`, without any other check: lets the
/// client say *which* request a corrupted reply belongs to. `None` when `b` is shorter than the
/// header.
pub fn ids(b: &[u8]) -> Option<(u64, u64)> {
    Some((be_u64(b, 8)?, be_u64(b, 16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(size: usize) -> Message {
        Message {
            nonce: 0x0123_4567_89ab_cdef,
            seq: 42,
            sent_ns: 1_000_001,
            size,
        }
    }

    #[test]
    fn round_trips_at_every_edge_size() {
        for size in [HEADER_LEN, HEADER_LEN + 1, 64, 300, 1500, MAX_LEN] {
            let m = msg(size);
            let b = m.encode().unwrap();
            assert_eq!(b.len(), size);
            assert_eq!(decode(&b), Ok(m));
            assert_eq!(ids(&b), Some((m.nonce, m.seq)));
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let b = msg(40).encode().unwrap();
        assert_eq!(&b[..4], b"NMEC");
        assert_eq!(b[4], 1);
        assert_eq!(&b[6..8], &[0, 40]);
        assert_eq!(&b[16..24], &42u64.to_be_bytes());
        assert_eq!(&b[32..], &[32, 33, 34, 35, 36, 37, 38, 39]);
    }

    #[test]
    fn bad_sizes_and_zero_timestamps_are_refused() {
        assert_eq!(msg(31).encode(), Err(EncodeError::Size(31)));
        assert_eq!(
            msg(MAX_LEN + 1).encode(),
            Err(EncodeError::Size(MAX_LEN + 1))
        );
        let mut m = msg(64);
        m.sent_ns = 0;
        assert_eq!(m.encode(), Err(EncodeError::Timestamp));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = msg(80).encode().unwrap();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                // Nonce, seq and timestamp bits decode to a different message; the rest fail.
                match decode(&b) {
                    Ok(m) => assert!((8..32).contains(&i) && m != msg(80), "byte {i}"),
                    Err(_) => assert!(!(8..24).contains(&i), "byte {i}"),
                }
            }
        }
    }

    #[test]
    fn each_error_is_reported() {
        let good = msg(64).encode().unwrap();
        assert_eq!(decode(&good[..10]), Err(WireError::TooShort(10)));
        assert_eq!(
            decode(&vec![0; MAX_LEN + 1]),
            Err(WireError::TooLong(MAX_LEN + 1))
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(WireError::Magic(_))));
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(decode(&b), Err(WireError::Version(9)));
        let mut b = good.clone();
        b[5] = 1;
        assert_eq!(decode(&b), Err(WireError::Reserved(1)));
        assert_eq!(
            decode(&good[..63]),
            Err(WireError::Length {
                header: 64,
                actual: 63
            })
        );
        let mut b = good.clone();
        b[24..32].fill(0);
        assert_eq!(decode(&b), Err(WireError::Timestamp));
        let mut b = good;
        b[50] ^= 0xff;
        assert_eq!(decode(&b), Err(WireError::Padding(50)));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_input() {
        // A cheap deterministic fuzz: random lengths and bytes, and mutations of a valid message.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let good = msg(100).encode().unwrap();
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = decode(&b);
            let _ = ids(&b);
            let mut m = good.clone();
            let i = rng.random_range(0..m.len());
            m[i] = rng.random();
            m.truncate(rng.random_range(0..=m.len()));
            let _ = decode(&m);
        }
    }
}
