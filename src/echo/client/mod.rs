//! The echo client: one session of numbered messages to an echo server, every reply checked
//! byte for byte. `netmon echo` prints it like ping; the `echo` probe (`crate::probe::echo`)
//! runs the same [`Session`] inside the monitor and turns its [`Report`] into metrics.
//!
//! A session sends `count` messages `interval` apart on a connected UDP socket (so an ICMP port
//! unreachable comes back as `ECONNREFUSED`) and listens until every message has its reply or
//! the last one's wait has passed. Each reply is classified once: intact, duplicate, reordered
//! (an earlier message answered after a later one), late (after its wait) or corrupted (bytes
//! differ from what was sent). An RTT runs from our monotonic clock read just before the send
//! to the kernel's receive stamp of the reply ([`crate::base::rxtime`]; our own clock just
//! after the receive where the kernel gives none), and is never 0.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::base::rxtime;

mod print;
mod session;

pub use print::{event_line, summary};
pub use session::{Event, Report, Session, SessionError, SessionOptions};

/// The echo server's default port (RFC 862's port 7 needs privileges).
pub const DEFAULT_PORT: u16 = 7007;
/// Errors of `netmon echo` before any message is sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The target is not `HOST`, `HOST:PORT` or `[IPv6]:PORT`.
    #[error("`{0}` is not HOST, HOST:PORT or [IPv6]:PORT")]
    Target(String),
    /// The name did not resolve.
    #[error("{0}")]
    Resolve(String),
    /// The socket could not be opened or connected.
    #[error("{context}: {source}")]
    Socket {
        /// What was being done.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Splits `HOST[:PORT]`: `host`, `host:7`, `192.0.2.1:7`, `::1`, `[::1]`, `[::1]:7`.
pub fn split_target(s: &str, default_port: u16) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Target(s.to_string());
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        return match after {
            "" => Ok((host.to_string(), default_port)),
            _ => Ok((
                host.to_string(),
                port(after.strip_prefix(':').ok_or_else(bad)?)?,
            )),
        };
    }
    if s.matches(':').count() > 1 {
        // A bare IPv6 address: no port possible without brackets.
        return s
            .parse::<std::net::Ipv6Addr>()
            .map(|_| (s.to_string(), default_port))
            .map_err(|_| bad());
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_string(), port(p)?)),
        Some(_) => Err(bad()),
        None if s.is_empty() => Err(bad()),
        None => Ok((s.to_string(), default_port)),
    }
}

/// Opens a UDP socket connected to `addr`, so ICMP errors from it come back as errors.
pub async fn connect(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Room for a burst of replies at high rates; the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    // Replies stamped by the kernel on arrival: RTTs then leave out our own wake-up, and a
    // reply read late (while a burst of sends goes out) still reads its true time.
    rxtime::enable(&s);
    s.set_nonblocking(true)?;
    s.bind(&local.into())?;
    let s = UdpSocket::from_std(s.into())?;
    s.connect(addr).await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_like_ping_and_ssh() {
        let ok = |s: &str| split_target(s, 7007).unwrap();
        assert_eq!(ok("host"), ("host".into(), 7007));
        assert_eq!(ok("host:7"), ("host".into(), 7));
        assert_eq!(ok("127.0.0.1:9"), ("127.0.0.1".into(), 9));
        assert_eq!(ok("::1"), ("::1".into(), 7007));
        assert_eq!(ok("[::1]"), ("::1".into(), 7007));
        assert_eq!(ok("[::1]:8"), ("::1".into(), 8));
        for bad in [
            "",
            ":7",
            "host:",
            "host:0",
            "host:99999",
            "[::1",
            "[::1]x",
            "a:b:c",
        ] {
            assert!(split_target(bad, 7007).is_err(), "{bad}");
        }
    }
}
