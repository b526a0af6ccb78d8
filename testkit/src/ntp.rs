//! NTP server replies built by hand (RFC 5905 §7.3), for fake servers made with
//! [`crate::udp::Responder`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900 (NTP era 0) to 1970.
pub const NTP_UNIX_DELTA: u64 = 2_208_988_800;

/// `t + offset` seconds as a 64-bit NTP timestamp (RFC 5905 §6), computed in integers so the
/// test's own arithmetic adds no error.
pub fn timestamp(t: SystemTime, offset: f64) -> [u8; 8] {
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .expect("a time after 1970")
        .as_nanos() as i128
        + (offset * 1e9).round() as i128
        + i128::from(NTP_UNIX_DELTA) * 1_000_000_000;
    let secs = (nanos / 1_000_000_000) as u32;
    let frac = (((nanos % 1_000_000_000) << 32) / 1_000_000_000) as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..].copy_from_slice(&frac.to_be_bytes());
    b
}

/// The header of a server reply; [`Reply::to`] fills in the timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reply {
    /// Leap indicator (3: not synchronised).
    pub leap: u8,
    /// Mode (4: server).
    pub mode: u8,
    /// Stratum (0: kiss-of-death, 16: not synchronised).
    pub stratum: u8,
    /// Reference identifier (a kiss code when the stratum is 0).
    pub refid: [u8; 4],
    /// How far the server's clock is ahead of ours, in seconds.
    pub offset: f64,
}

impl Reply {
    /// A synchronised server at `stratum` whose clock is `offset` seconds ahead.
    pub fn server(stratum: u8, offset: f64) -> Reply {
        Reply {
            leap: 0,
            mode: 4,
            stratum,
            refid: *b"LOCL",
            offset,
        }
    }

    /// A kiss-of-death with this code (stratum 0 and leap indicator 3, as servers send it).
    pub fn kiss(code: [u8; 4]) -> Reply {
        Reply {
            leap: 3,
            mode: 4,
            stratum: 0,
            refid: code,
            offset: 0.0,
        }
    }

    /// The 48-byte reply (version 4) to `request`, which arrived at `received`: reference
    /// time a minute before, originate = the request's transmit time, receive and transmit
    /// on the server's clock. `None` for a request shorter than an NTP header.
    pub fn to(&self, request: &[u8], received: SystemTime) -> Option<Vec<u8>> {
        if request.len() < 48 {
            return None;
        }
        let mut p = vec![0u8; 48];
        p[0] = (self.leap << 6) | (4 << 3) | self.mode;
        p[1] = self.stratum;
        p[2] = 6; // poll 64 s
        p[3] = 0xec; // precision 2^-20
        p[7] = 0x10; // root delay 1/4096 s
        p[11] = 0x10; // root dispersion
        p[12..16].copy_from_slice(&self.refid);
        p[16..24].copy_from_slice(&timestamp(received - Duration::from_secs(60), self.offset));
        p[24..32].copy_from_slice(&request[40..48]);
        p[32..40].copy_from_slice(&timestamp(received, self.offset));
        p[40..48].copy_from_slice(&timestamp(SystemTime::now(), self.offset));
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_epoch_is_the_delta() {
        let b = timestamp(UNIX_EPOCH, 0.5);
        assert_eq!(
            u32::from_be_bytes(b[..4].try_into().unwrap()),
            2_208_988_800
        );
        assert_eq!(u32::from_be_bytes(b[4..].try_into().unwrap()), 1 << 31);
    }

    #[test]
    fn a_reply_answers_the_request_transmit_time() {
        let mut request = vec![0u8; 48];
        request[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let r = Reply::kiss(*b"RATE")
            .to(&request, SystemTime::now())
            .unwrap();
        assert_eq!(r[0], 0xe4);
        assert_eq!((r[1], &r[12..16]), (0, &b"RATE"[..]));
        assert_eq!(&r[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Reply::server(2, 0.0).to(&[0; 20], SystemTime::now()), None);
    }
}
