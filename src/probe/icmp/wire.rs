//! ICMP bytes: echo requests out, replies and errors in.

use std::net::{IpAddr, Ipv4Addr};

use socket2::Type as SockType;
use surge_ping::{Icmpv4Packet, Icmpv6Packet};


/// The fields of a received ICMP message that matching needs.
pub(super) struct Decoded<'a> {
    /// The address the answered request was sent to.
    pub(super) dest: IpAddr,
    pub(super) ident: u16,
    pub(super) seq: u16,
    /// The echoed payload; `None` for an ICMP error.
    pub(super) payload: Option<&'a [u8]>,
    /// The ICMP error, described.
    pub(super) error: Option<String>,
}

/// Decodes with surge-ping, keeping only echo replies and the errors that quote a request.
pub(super) fn decode(msg: &[u8], from: IpAddr, kind: SockType) -> Option<Decoded<'_>> {
    match from {
        IpAddr::V4(src) => {
            let p = Icmpv4Packet::decode(msg, kind, src, Ipv4Addr::UNSPECIFIED).ok()?;
            let (ty, code) = (p.get_icmp_type().0, p.get_icmp_code().0);
            // Raw IPv4 sockets deliver the IP header too; datagram sockets start at ICMP.
            let icmp_at = if kind == SockType::RAW {
                usize::from(msg.first()? & 0x0f) * 4
            } else {
                0
            };
            let (payload, error) = match ty {
                0 => (Some(msg.get(icmp_at + 8..)?), None),
                3 => (None, Some(unreachable_v4(code))),
                11 => (
                    None,
                    Some("time exceeded (TTL expired in transit)".to_string()),
                ),
                12 => (None, Some("parameter problem".to_string())),
                _ => return None,
            };
            Some(Decoded {
                dest: IpAddr::V4(p.get_real_dest()),
                ident: p.get_identifier().0,
                seq: p.get_sequence().0,
                payload,
                error,
            })
        }
        IpAddr::V6(src) => {
            let p = Icmpv6Packet::decode(msg, src).ok()?;
            let (ty, code) = (p.get_icmpv6_type().0, p.get_icmpv6_code().0);
            // ICMPv6 sockets of both types start at the ICMP header (RFC 3542 §3).
            let (payload, error) = match ty {
                129 => (Some(msg.get(8..)?), None),
                1 => (None, Some(unreachable_v6(code))),
                2 => (None, Some("packet too big".to_string())),
                3 => (None, Some("time exceeded (hop limit expired)".to_string())),
                4 => (None, Some("parameter problem".to_string())),
                _ => return None,
            };
            Some(Decoded {
                dest: IpAddr::V6(p.get_real_dest()),
                ident: p.get_identifier().0,
                seq: p.get_sequence().0,
                payload,
                error,
            })
        }
    }
}

/// RFC 792 destination-unreachable codes.
pub(super) fn unreachable_v4(code: u8) -> String {
    match code {
        0 => "destination network unreachable".into(),
        1 => "destination host unreachable".into(),
        3 => "destination port unreachable".into(),
        9 | 10 | 13 => "communication administratively prohibited".into(),
        c => format!("destination unreachable (code {c})"),
    }
}

/// RFC 4443 §3.1 destination-unreachable codes.
pub(super) fn unreachable_v6(code: u8) -> String {
    match code {
        0 => "no route to destination".into(),
        1 => "communication administratively prohibited".into(),
        3 => "address unreachable".into(),
        4 => "port unreachable".into(),
        c => format!("destination unreachable (code {c})"),
    }
}

/// The internet checksum (RFC 1071): ones' complement of the ones' complement sum of 16-bit
/// words. surge-ping's packet builder is private, so the 8-byte echo header is written here.
pub(super) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request (RFC 792 type 8, RFC 4443 type 128). The kernel fills the ICMPv6 checksum
/// (RFC 3542 §3.1) and, on datagram sockets, the identifier.
pub(super) fn echo_request(family: Family, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let ty = match family {
        Family::V4 => 8,
        Family::V6 => 128,
    };
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&[ty, 0, 0, 0]);
    b.extend_from_slice(&ident.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(payload);
    if family == Family::V4 {
        let sum = checksum(&b);
        b[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    b
}

/// A payload of `size` bytes: a random nonce first (so a reply proves it answers this very
/// request), then `ping`'s counting pattern.
pub(super) fn payload(size: usize) -> Vec<u8> {
    let nonce = rand::random::<u64>().to_be_bytes();
    (0..size)
        .map(|i| nonce.get(i).copied().unwrap_or(i as u8))
        .collect()
}

/// ICMP version of a shared socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ICMPv4.
    V4,
    /// ICMPv6.
    V6,
}

impl Family {
    pub(super) fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}
