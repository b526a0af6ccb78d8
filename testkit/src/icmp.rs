//! ICMP messages with their checksum right, for tests that play a host's replies.

/// The Internet checksum (RFC 1071).
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMPv4 message of `kind` (0 echo reply, 8 echo request, ...) with identifier, sequence
/// and payload.
pub fn message(kind: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_sums_to_zero() {
        let m = super::message(8, 7, 1, b"abc");
        assert_eq!(super::checksum(&m), 0);
    }
}
