//! The fuzzing entry point of the ICMP reply path; built only for tests and the fuzz targets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use socket2::Type as SockType;

use super::MAX_PAYLOAD;
use super::socket::Table;
use super::wire::{Family, checksum, decode, echo_request, payload};

/// The entry point for received ICMP bytes (`crate::fuzzing::icmp_reply`). `data[0]` picks raw or datagram socket and the family, the rest is the datagram.
/// Any datagram must decode and route without a panic and without waking the wrong waiter; and
/// an echo reply built from the same bytes must decode to its fields and reach its waiter.
pub fn reply(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let kind = if flags & 1 == 0 {
        SockType::RAW
    } else {
        SockType::DGRAM
    };
    let (family, from): (Family, IpAddr) = if flags & 2 == 0 {
        (Family::V4, Ipv4Addr::LOCALHOST.into())
    } else {
        (Family::V6, std::net::Ipv6Addr::LOCALHOST.into())
    };
    let now = std::time::Instant::now();
    let ident = 0x4242;
    // 1. Arbitrary bytes, with a waiter registered whose payload nothing can guess.
    let table = Arc::new(Table::default());
    let Some((_, mut rx, _reg)) = table.register(from, payload(16)) else {
        return;
    };
    let _ = decode(rest, from, kind);
    table.dispatch(rest, from, now, kind, ident);
    assert!(rx.try_recv().is_err(), "arbitrary bytes woke a waiter");
    // 2. A well-formed reply carrying `rest` as its payload reaches its waiter.
    let table = Arc::new(Table::default());
    let Some((seq, mut rx, _reg)) = table.register(from, rest.to_vec()) else {
        return;
    };
    let mut icmp = echo_request(family, ident, seq, rest);
    icmp[0] = match family {
        Family::V4 => 0,
        Family::V6 => 129,
    };
    if family == Family::V4 {
        icmp[2..4].fill(0);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&icmp), 0, "checksum does not verify");
    }
    let wire = if family == Family::V4 && kind == SockType::RAW {
        // A raw IPv4 socket delivers the IP header (20 bytes, no options) first.
        let Ok(total) = u16::try_from(20 + icmp.len()) else {
            return;
        };
        let mut m = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        m[2..4].copy_from_slice(&total.to_be_bytes());
        m.extend_from_slice(&icmp);
        m
    } else {
        icmp
    };
    if wire.len() > MAX_PAYLOAD + 28 {
        return;
    }
    let d = decode(&wire, from, kind).expect("a well-formed echo reply did not decode");
    assert_eq!((d.ident, d.seq, d.payload), (ident, seq, Some(rest)));
    table.dispatch(&wire, from, now, kind, ident);
    let reply = rx
        .try_recv()
        .expect("a well-formed reply did not reach its waiter");
    assert!(reply.error.is_none());
}
