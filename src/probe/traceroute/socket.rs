//! The socket of one traceroute round: probes out with a chosen TTL, answers in.
//!
//! Routers' ICMP errors (time exceeded, unreachable) come back through the kernel's per-socket
//! error queue (`IP_RECVERR` / `IPV6_RECVERR`, read with `recvmsg(MSG_ERRQUEUE)`), which tells
//! the offender's address and quotes the probe that caused it. For UDP probes that needs no
//! privilege at all; ICMP echo probes need an ICMP socket, a datagram one where
//! `net.ipv4.ping_group_range` admits our group, else a raw one (root or `CAP_NET_RAW`). The
//! error queue sets `POLLERR`, so tokio wakes the round on error readiness. Every socket is
//! held as a tokio `UdpSocket`, as the icmp probe's are: tokio only waits for readiness, and
//! the reads are our own `recvmsg` calls.
//!
//! Matching a UDP answer to its probe: each probe goes to its own destination port
//! (`base_port + index`) and the kernel reports the quoted packet's destination port with the
//! error. ICMP probes carry the index as their sequence number, which the quoted echo request
//! gives back. A socket lives for one round, so an answer to an earlier round (another port,
//! another identifier) can never be taken for one of this round.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::base::rxtime;

/// What the probes are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// UDP datagrams to `base_port` and up; the target answers with ICMP port unreachable.
    /// Needs no privilege.
    #[default]
    Udp,
    /// ICMP echo requests; the target answers with an echo reply. Needs a datagram ICMP socket
    /// (`net.ipv4.ping_group_range`) or a raw one (`CAP_NET_RAW`).
    Icmp,
}

impl Method {
    pub(super) fn is_udp(&self) -> bool {
        *self == Method::Udp
    }
}

/// The most messages that are not answers read in one go.
const MAX_SKIPPED: usize = 256;

/// `ee_origin` of an error from an ICMPv4 message.
const ORIGIN_ICMP: u8 = 2;
/// `ee_origin` of an error from an ICMPv6 message.
const ORIGIN_ICMP6: u8 = 3;

/// What an answer says about the probe it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    /// A router on the way: the TTL ran out there.
    TimeExceeded,
    /// The target itself answered (port unreachable to UDP, echo reply to ICMP).
    Reached,
    /// A router or the target said the target cannot be reached; the path ends there.
    Unreachable(&'static str),
}

/// One answer to one probe of the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Answer {
    /// The probe's index in the round.
    pub(super) index: u16,
    /// Who answered.
    pub(super) from: IpAddr,
    /// When the answer arrived (the kernel's stamp where it gives one).
    pub(super) at: Instant,
    /// What it said.
    pub(super) what: What,
}

/// Why the round's socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No ICMP socket of either type is permitted.
    #[error(
        "cannot open an ICMP socket for `method: icmp`: {0}. Use `method: udp` (the default, which \
         needs no privilege), grant the raw-socket capability (`sudo setcap cap_net_raw+ep \
         $(which netmon)`) or allow unprivileged ICMP sockets (`sudo sysctl -w \
         net.ipv4.ping_group_range=\"0 2147483647\"`)"
    )]
    Denied(io::Error),
    /// Any other failure (no IPv6 in the kernel, no file descriptors, a refused option).
    #[error("cannot open the traceroute socket: {0}")]
    Other(io::Error),
}

/// The kind of ICMP socket in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpKind {
    Dgram,
    Raw,
}

/// The socket of one round towards one target.
#[derive(Debug)]
pub(super) struct RoundSocket {
    socket: UdpSocket,
    target: IpAddr,
    base_port: u16,
    /// `None` for UDP probes.
    icmp: Option<IcmpKind>,
    /// The echo identifier of raw ICMP probes (the kernel picks its own on datagram sockets).
    ident: u16,
}

impl RoundSocket {
    /// Opens the socket of a round of `method` probes to `target`.
    pub(super) fn open(method: Method, target: IpAddr, base_port: u16) -> Result<Self, OpenError> {
        let v6 = target.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let (socket, icmp) = match method {
            Method::Udp => (
                Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(OpenError::Other)?,
                None,
            ),
            Method::Icmp => {
                let protocol = if v6 {
                    Protocol::ICMPV6
                } else {
                    Protocol::ICMPV4
                };
                match Socket::new(domain, Type::DGRAM, Some(protocol)) {
                    Ok(s) => (s, Some(IcmpKind::Dgram)),
                    Err(dgram) => match Socket::new(domain, Type::RAW, Some(protocol)) {
                        Ok(s) => (s, Some(IcmpKind::Raw)),
                        Err(_) if denied(&dgram) => return Err(OpenError::Denied(dgram)),
                        Err(e) if denied(&e) => return Err(OpenError::Denied(e)),
                        Err(e) => return Err(OpenError::Other(e)),
                    },
                }
            }
        };
        socket.set_nonblocking(true).map_err(OpenError::Other)?;
        if v6 {
            setsockopt(&socket, sockopt::Ipv6RecvErr, &true)
        } else {
            setsockopt(&socket, sockopt::Ipv4RecvErr, &true)
        }
        .map_err(|e| OpenError::Other(e.into()))?;
        // Without kernel stamps the user-space stamp after recvmsg is used: never low.
        rxtime::enable(&socket);
        let socket =
            UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(OpenError::Other)?;
        Ok(RoundSocket {
            socket,
            target,
            base_port,
            icmp,
            ident: rand::random(),
        })
    }

    /// The socket type in use, for the log: `udp`, `icmp-dgram` or `icmp-raw`.
    pub(super) fn kind(&self) -> &'static str {
        match self.icmp {
            None => "udp",
            Some(IcmpKind::Dgram) => "icmp-dgram",
            Some(IcmpKind::Raw) => "icmp-raw",
        }
    }

    /// Sends probe `index` with `ttl`; returns when it left.
    pub(super) fn send(&self, index: u16, ttl: u8) -> io::Result<Instant> {
        let socket = SockRef::from(&self.socket);
        if self.target.is_ipv6() {
            socket.set_unicast_hops_v6(u32::from(ttl))?;
        } else {
            socket.set_ttl_v4(u32::from(ttl))?;
        }
        let (port, packet) = match self.icmp {
            None => (self.base_port.saturating_add(index), Vec::new()),
            Some(_) => (0, self.echo_request(index)),
        };
        let to = SockAddr::from(SocketAddr::new(self.target, port));
        // An earlier probe's ICMP error is also left pending on the socket, and the next send
        // reports it instead of sending: the error is in the queue all the same, so send again.
        let mut tries = 0;
        loop {
            let t0 = Instant::now();
            match socket.send_to(&packet, &to) {
                Ok(_) => return Ok(t0),
                Err(e) if tries < 3 && pending_icmp_error(&e) => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// An echo request whose sequence number is `index`, with an 8-byte payload that tells
    /// netmon's probes from others'.
    fn echo_request(&self, index: u16) -> Vec<u8> {
        let ty = if self.target.is_ipv6() { 128 } else { 8 };
        let mut p = vec![ty, 0, 0, 0];
        p.extend_from_slice(&self.ident.to_be_bytes());
        p.extend_from_slice(&index.to_be_bytes());
        p.extend_from_slice(b"netmon-t");
        // The kernel fills the checksum of ICMPv6 and of datagram ICMP sockets; a raw ICMPv4
        // socket sends what it is given.
        if !self.target.is_ipv6() {
            let sum = checksum(&p);
            p[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// Waits for the next answer to a probe of this round.
    pub(super) async fn next(&self) -> io::Result<Answer> {
        let interest = Interest::READABLE | Interest::ERROR;
        loop {
            self.socket.ready(interest).await?;
            // Nothing queued clears the readiness, and the next wait is for a new message.
            match self.socket.try_io(interest, || {
                self.try_next()?
                    .ok_or_else(|| io::ErrorKind::WouldBlock.into())
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Many foreign messages in a row: let other tasks run, then read on.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => tokio::task::yield_now().await,
                r => return r,
            }
        }
    }

    /// The next answer already queued, if any: the error queue first, then ordinary
    /// datagrams (echo replies, or a UDP reply from a service listening on a probed port).
    /// After [`MAX_SKIPPED`] messages that are not answers (a raw socket sees all the host's
    /// ICMP) it gives up for now with `Interrupted`, the queues still holding the rest.
    pub(super) fn try_next(&self) -> io::Result<Option<Answer>> {
        for _ in 0..MAX_SKIPPED {
            match self.recv_error()? {
                Some(Some(a)) => return Ok(Some(a)),
                Some(None) => continue,
                None => {}
            }
            match self.recv_datagram()? {
                Some(Some(a)) => return Ok(Some(a)),
                Some(None) => continue,
                None => return Ok(None),
            }
        }
        Err(io::ErrorKind::Interrupted.into())
    }

    /// One message of the error queue: `None` when it is empty, `Some(None)` for one that is
    /// not an answer to this round.
    fn recv_error(&self) -> io::Result<Option<Option<Answer>>> {
        let mut buf = [0u8; 64];
        let mut space = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6, TimeSpec);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let user = Instant::now();
        let mut at = user;
        let mut error = None;
        for c in msg.cmsgs().into_iter().flatten() {
            match c {
                ControlMessageOwned::Ipv4RecvErr(ee, from) => {
                    error = Some((
                        ee,
                        from.map(|a| IpAddr::V4(u32::from_be(a.sin_addr.s_addr).into())),
                    ));
                }
                ControlMessageOwned::Ipv6RecvErr(ee, from) => {
                    error = Some((ee, from.map(|a| IpAddr::V6(a.sin6_addr.s6_addr.into()))));
                }
                ControlMessageOwned::ScmTimestampns(ts) => at = rxtime::stamped(ts, user),
                _ => {}
            }
        }
        let dest = msg.address.as_ref().and_then(socket_addr);
        let len = msg.bytes;
        let Some((ee, Some(from))) = error else {
            return Ok(Some(None));
        };
        let Some(dest) = dest else {
            return Ok(Some(None));
        };
        if dest.ip() != self.target {
            return Ok(Some(None));
        }
        let quoted = &buf[..len.min(buf.len())];
        let index = match self.icmp {
            None => match dest.port().checked_sub(self.base_port) {
                Some(i) => i,
                None => return Ok(Some(None)),
            },
            Some(kind) => match self.quoted_index(quoted, kind) {
                Some(i) => i,
                None => return Ok(Some(None)),
            },
        };
        let what = match classify(ee.ee_origin, ee.ee_type, ee.ee_code, from == self.target) {
            Some(w) => w,
            None => return Ok(Some(None)),
        };
        Ok(Some(Some(Answer {
            index,
            from,
            at,
            what,
        })))
    }

    /// The index of the echo request an ICMP error quotes (its first 8 bytes), if it is one
    /// of ours.
    fn quoted_index(&self, quoted: &[u8], kind: IcmpKind) -> Option<u16> {
        let request = if self.target.is_ipv6() { 128 } else { 8 };
        if quoted.len() < 8 || quoted[0] != request {
            return None;
        }
        // A raw socket sees every ICMP error of the host: only our identifier is ours.
        if kind == IcmpKind::Raw && quoted[4..6] != self.ident.to_be_bytes() {
            return None;
        }
        Some(u16::from_be_bytes([quoted[6], quoted[7]]))
    }

    /// One ordinary datagram: `None` when none is queued, `Some(None)` for one that is not an
    /// answer to this round.
    fn recv_datagram(&self) -> io::Result<Option<Option<Answer>>> {
        let mut buf = [0u8; 256];
        let mut space = nix::cmsg_space!(TimeSpec);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            // The pending error of a queued ICMP message: the error queue has it.
            Err(e) if pending_icmp_error(&e.into()) => return Ok(Some(None)),
            Err(e) => return Err(e.into()),
        };
        let user = Instant::now();
        let mut at = user;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                at = rxtime::stamped(ts, user);
            }
        }
        let from = msg.address.as_ref().and_then(socket_addr);
        let len = msg.bytes;
        let Some(from) = from else {
            return Ok(Some(None));
        };
        if from.ip() != self.target {
            return Ok(Some(None));
        }
        let data = &buf[..len.min(buf.len())];
        let index = match self.icmp {
            None => match from.port().checked_sub(self.base_port) {
                Some(i) => i,
                None => return Ok(Some(None)),
            },
            Some(kind) => {
                // A raw IPv4 socket delivers the IP header too.
                let at_icmp = if kind == IcmpKind::Raw && !self.target.is_ipv6() {
                    usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4
                } else {
                    0
                };
                let Some(icmp) = data.get(at_icmp..at_icmp + 8) else {
                    return Ok(Some(None));
                };
                let reply = if self.target.is_ipv6() { 129 } else { 0 };
                if icmp[0] != reply
                    || (kind == IcmpKind::Raw && icmp[4..6] != self.ident.to_be_bytes())
                {
                    return Ok(Some(None));
                }
                u16::from_be_bytes([icmp[6], icmp[7]])
            }
        };
        Ok(Some(Some(Answer {
            index,
            from: from.ip(),
            at,
            what: What::Reached,
        })))
    }
}

/// What an ICMP error of `origin`, `ty` and `code` says; `None` for what a traceroute does not
/// read (a local error, packet too big, a redirect).
fn classify(origin: u8, ty: u8, code: u8, from_target: bool) -> Option<What> {
    match (origin, ty, code) {
        (ORIGIN_ICMP, 11, _) | (ORIGIN_ICMP6, 3, _) => Some(What::TimeExceeded),
        (ORIGIN_ICMP, 3, 3) | (ORIGIN_ICMP6, 1, 4) if from_target => Some(What::Reached),
        (ORIGIN_ICMP, 3, code) => Some(What::Unreachable(unreachable_v4(code))),
        (ORIGIN_ICMP6, 1, code) => Some(What::Unreachable(unreachable_v6(code))),
        _ => None,
    }
}

/// traceroute's short marks of ICMPv4 unreachable codes.
fn unreachable_v4(code: u8) -> &'static str {
    match code {
        0 => "!N network unreachable",
        1 => "!H host unreachable",
        2 => "!P protocol unreachable",
        3 => "!p port unreachable",
        4 => "!F fragmentation needed",
        9 | 10 | 13 => "!X administratively prohibited",
        _ => "! unreachable",
    }
}

/// traceroute's short marks of ICMPv6 unreachable codes.
fn unreachable_v6(code: u8) -> &'static str {
    match code {
        0 => "!N no route",
        1 => "!X administratively prohibited",
        3 => "!H address unreachable",
        4 => "!p port unreachable",
        _ => "! unreachable",
    }
}

/// Whether `e` is an ICMP error the kernel left pending on the socket, which the next send or
/// receive reports once.
fn pending_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPROTO)
    )
}

/// Whether opening a socket failed for want of privilege.
fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_of_an_echo_request_verifies() {
        let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0, 7];
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&p), 0);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn icmp_errors_are_read_as_a_traceroute_reads_them() {
        assert_eq!(
            classify(ORIGIN_ICMP, 11, 0, false),
            Some(What::TimeExceeded)
        );
        assert_eq!(
            classify(ORIGIN_ICMP6, 3, 0, false),
            Some(What::TimeExceeded)
        );
        assert_eq!(classify(ORIGIN_ICMP, 3, 3, true), Some(What::Reached));
        assert_eq!(classify(ORIGIN_ICMP6, 1, 4, true), Some(What::Reached));
        // Port unreachable from a router is not the target answering.
        assert_eq!(
            classify(ORIGIN_ICMP, 3, 3, false),
            Some(What::Unreachable("!p port unreachable"))
        );
        assert_eq!(
            classify(ORIGIN_ICMP, 3, 1, false),
            Some(What::Unreachable("!H host unreachable"))
        );
        assert_eq!(classify(1, 0, 0, false), None);
        assert_eq!(classify(ORIGIN_ICMP6, 2, 0, false), None);
    }
}
