//! The stateless STAMP Session-Reflector (RFC 8762 §4.3.1, unauthenticated mode):
//! `netmon stamp-reflector`, also hosted by `serve` via the config's `stamp_reflector:`.
//!
//! Each test packet is answered with the reflector format, as long as the packet it answers:
//! the reflector's sequence number copies the sender's, the receive timestamp is the kernel's
//! (`SO_TIMESTAMPNS`, on the real-time clock as STAMP wants) and the transmit timestamp is
//! read just before the send, so the sender can take the time spent here off its round trip.
//! The sender's TTL (IPv4) or Hop Limit (IPv6) as received is reported back when the kernel
//! gives it.
//!
//! A reflector is an amplifier waiting to be abused, so before answering it drops, and counts
//! by reason in `netmon_stamp_reflector_packets_total{result}`:
//! - packets from a well-known service's source port, the echo server's list
//!   ([`crate::echo::server::policy::REFLECTOR_PORTS`]) plus STAMP's own 862: a spoofed packet
//!   "from" another reflector would otherwise start a ping-pong that never ends;
//! - sources outside the `allow` networks, when some are given;
//! - packets shorter than a test packet (44 octets) or longer than `max_size`;
//! - sources over `rate_limit` packets per second (the echo server's bounded token buckets).
//!
//! The answer is never longer than the request, so the reflector amplifies nothing.

use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::echo::server::policy::{MAX_SOURCES, RateLimiter, is_reflector_port};
use crate::stamp::settings::{Net, Settings};
use crate::stamp::wire::{self, ErrorEstimate, Timestamp};

/// How long one reply may wait for room in the socket's send buffer before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors starting the reflector.
#[derive(Debug, thiserror::Error)]
pub enum ReflectorError {
    /// The settings are invalid.
    #[error("{0}")]
    Settings(String),
    /// Binding the socket failed.
    #[error("cannot listen on udp {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
        /// What to do about it, when the reason is a common one.
        hint: &'static str,
    },
}

/// What happened to a packet: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Answered.
    Reflected,
    /// Its source port is a well-known service's or STAMP's own.
    DroppedSourcePort,
    /// Its source is outside the allow-list.
    DroppedNotAllowed,
    /// Shorter than a STAMP test packet.
    DroppedTooShort,
    /// Longer than `max_size`.
    DroppedTooLarge,
    /// Its source is over the rate limit.
    DroppedRateLimit,
    /// Receiving or sending it failed.
    Error,
}

impl Verdict {
    /// Every verdict, so every series exists from the start.
    pub const ALL: [Verdict; 7] = [
        Verdict::Reflected,
        Verdict::DroppedSourcePort,
        Verdict::DroppedNotAllowed,
        Verdict::DroppedTooShort,
        Verdict::DroppedTooLarge,
        Verdict::DroppedRateLimit,
        Verdict::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reflected => "reflected",
            Verdict::DroppedSourcePort => "dropped_source_port",
            Verdict::DroppedNotAllowed => "dropped_not_allowed",
            Verdict::DroppedTooShort => "dropped_too_short",
            Verdict::DroppedTooLarge => "dropped_too_large",
            Verdict::DroppedRateLimit => "dropped_rate_limit",
            Verdict::Error => "error",
        }
    }
}

type ResultLabels = Vec<(&'static str, &'static str)>;

/// The reflector's families, registered once per registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    packets: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// Registers `netmon_stamp_reflector_packets_total{result}` under `registry` (already
    /// prefixed `netmon`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            packets: Family::default(),
        };
        registry.register(
            "stamp_reflector_packets",
            "Packets received by the STAMP reflector, by what was done with them",
            m.packets.clone(),
        );
        for v in Verdict::ALL {
            let _ = m.packets.get_or_create_owned(&vec![("result", v.as_str())]);
        }
        m
    }

    fn count(&self, v: Verdict) {
        self.packets
            .get_or_create(&vec![("result", v.as_str())])
            .inc();
    }
}

/// Decides what to do with each packet: the defences, cheapest first.
#[derive(Debug)]
struct Policy {
    settings: Settings,
    limiter: Option<RateLimiter>,
}

impl Policy {
    fn new(settings: Settings) -> Self {
        let limiter =
            (settings.rate_limit > 0).then(|| RateLimiter::new(settings.rate_limit, MAX_SOURCES));
        Policy { settings, limiter }
    }

    fn judge(&mut self, src: SocketAddr, len: usize, now: Instant) -> Verdict {
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; the allow-list says a.b.c.d.
        let ip = src.ip().to_canonical();
        if is_reflector_port(src.port()) || src.port() == wire::DEFAULT_PORT {
            Verdict::DroppedSourcePort
        } else if !self.settings.allowed(ip) {
            Verdict::DroppedNotAllowed
        } else if len < wire::BASE_LEN {
            Verdict::DroppedTooShort
        } else if len > self.settings.max_size {
            Verdict::DroppedTooLarge
        } else if self.limiter.as_mut().is_some_and(|l| !l.allow(ip, now)) {
            Verdict::DroppedRateLimit
        } else {
            Verdict::Reflected
        }
    }
}

/// A running reflector. Stop it with [`StampReflector::stop`]; cancelling the token it was
/// started with stops it too.
#[derive(Debug)]
pub struct StampReflector {
    settings: Settings,
    addr: SocketAddr,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StampReflector {
    /// Binds and starts the reflector; logs where it listens. `shutdown` stops it when
    /// cancelled.
    pub async fn start(
        settings: Settings,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Result<StampReflector, ReflectorError> {
        settings.validate().map_err(ReflectorError::Settings)?;
        let bind = |source: io::Error| ReflectorError::Bind {
            addr: settings.listen,
            hint: if source.kind() == io::ErrorKind::PermissionDenied
                && settings.listen.port() < 1024
            {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root or listen on a higher port, e.g. 8620)"
            } else {
                ""
            },
            source,
        };
        let socket = UdpSocket::bind(settings.listen).await.map_err(bind)?;
        let addr = socket.local_addr().map_err(bind)?;
        // Room for bursts while the task is busy answering the previous packets.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
        // Without these the receive time is taken when read and the TTL is reported as 0.
        let _ = setsockopt(&socket, sockopt::ReceiveTimestampns, &true);
        let _ = setsockopt(&socket, sockopt::Ipv4RecvTtl, &true);
        if addr.is_ipv6() {
            let _ = setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true);
        }
        let token = shutdown.child_token();
        let task = tokio::spawn(serve(
            socket,
            Policy::new(settings.clone()),
            metrics.clone(),
            token.clone(),
        ));
        let allow = if settings.allow.is_empty() {
            "any".to_string()
        } else {
            settings
                .allow
                .iter()
                .map(Net::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        info!(
            udp = %addr,
            allow = %allow,
            rate_limit = settings.rate_limit,
            max_size = settings.max_size,
            "stamp reflector listening on {addr}"
        );
        Ok(StampReflector {
            settings,
            addr,
            token,
            task,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Stops the reflector and waits (briefly) until its socket is closed.
    pub async fn stop(self) {
        self.token.cancel();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            warn!("stamp reflector did not stop in time");
        }
        info!(udp = %self.addr, "stamp reflector stopped");
    }
}

/// One received packet: its length, source, kernel receive time and TTL.
struct Arrival {
    len: usize,
    from: SocketAddr,
    at: SystemTime,
    ttl: u8,
}

/// Answers packets until `token` is cancelled.
async fn serve(socket: UdpSocket, mut policy: Policy, metrics: Metrics, token: CancellationToken) {
    let max = policy.settings.max_size;
    // One more byte than allowed, so an oversized packet shows as longer than max_size.
    let mut buf = vec![0u8; max + 1];
    loop {
        let got = tokio::select! {
            _ = token.cancelled() => break,
            r = socket.async_io(Interest::READABLE, || receive(&socket, &mut buf)) => r,
        };
        let a = match got {
            Ok(Some(a)) => a,
            Ok(None) => {
                metrics.count(Verdict::Error);
                continue;
            }
            Err(e) => {
                // ICMP errors queued on the socket and the like: count, don't spin.
                metrics.count(Verdict::Error);
                debug!(error = %e, "stamp reflector receive failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let verdict = policy.judge(a.from, a.len, Instant::now());
        if verdict != Verdict::Reflected {
            metrics.count(verdict);
            continue;
        }
        let packet = &mut buf[..a.len];
        let receive = Timestamp::from_system_time(a.at);
        if wire::reflect_in_place(
            packet,
            receive,
            a.ttl,
            ErrorEstimate::NETMON,
            Timestamp::now,
        )
        .is_err()
        {
            metrics.count(Verdict::DroppedTooShort);
            continue;
        }
        let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send_to(packet, a.from)).await;
        match sent {
            Ok(Ok(_)) => metrics.count(Verdict::Reflected),
            Ok(Err(e)) => {
                metrics.count(Verdict::Error);
                debug!(error = %e, to = %a.from, "stamp reflector send failed");
            }
            Err(_) => metrics.count(Verdict::Error),
        }
    }
}

/// One non-blocking `recvmsg` with room for the kernel's timestamp and the TTL; `None` when
/// the source address is not an IP one.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<Arrival>> {
    let mut space = nix::cmsg_space!(TimeSpec, i32, i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut at = None;
    let mut ttl = 0u8;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmTimestampns(ts) => at = wall(ts),
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    let from = msg.address.as_ref().and_then(|s| {
        if let Some(v4) = s.as_sockaddr_in() {
            return Some(SocketAddr::from(*v4));
        }
        s.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
    });
    Ok(from.map(|from| Arrival {
        len: msg.bytes,
        from,
        at: at.unwrap_or_else(SystemTime::now),
        ttl,
    }))
}

/// The kernel's stamp as a wall-clock time.
fn wall(ts: TimeSpec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::wire::{ReflectorPacket, SenderPacket};

    #[test]
    fn policy_checks_in_order() {
        let settings = Settings {
            allow: vec!["127.0.0.1".parse().unwrap()],
            rate_limit: 2,
            max_size: 100,
            ..Settings::default()
        };
        let mut p = Policy::new(settings);
        let now = Instant::now();
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for port in [7, 19, 53, 123, 862] {
            let src = SocketAddr::new(a.ip(), port);
            assert_eq!(p.judge(src, 44, now), Verdict::DroppedSourcePort, "{port}");
        }
        assert_eq!(
            p.judge("127.0.0.2:40000".parse().unwrap(), 44, now),
            Verdict::DroppedNotAllowed
        );
        assert_eq!(p.judge(a, 43, now), Verdict::DroppedTooShort);
        assert_eq!(
            p.judge("[::ffff:127.0.0.1]:40000".parse().unwrap(), 101, now),
            Verdict::DroppedTooLarge
        );
        assert_eq!(p.judge(a, 44, now), Verdict::Reflected);
        assert_eq!(p.judge(a, 100, now), Verdict::Reflected);
        assert_eq!(p.judge(a, 44, now), Verdict::DroppedRateLimit);
        assert_eq!(
            p.judge(a, 44, now + Duration::from_millis(500)),
            Verdict::Reflected
        );
    }

    #[test]
    fn settings_are_validated() {
        Settings::default().validate().unwrap();
        let bad = Settings {
            max_size: 43,
            ..Settings::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_size"));
    }

    fn text(reg: &Registry) -> String {
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, reg).unwrap();
        t
    }

    #[tokio::test]
    async fn answers_a_test_packet_with_timestamps_and_ttl_and_drops_the_rest() {
        let token = CancellationToken::new();
        let mut reg = Registry::default();
        let metrics = Metrics::register(&mut reg);
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        };
        let r = StampReflector::start(settings, &metrics, &token)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(r.local_addr()).await.unwrap();
        let t1 = Timestamp::now();
        let mut out = Vec::new();
        SenderPacket {
            seq: 7,
            timestamp: t1,
            error: ErrorEstimate::NETMON,
            ssid: 0x1234,
        }
        .encode_into(80, &mut out)
        .unwrap();
        // Too short first: dropped, no answer; then the real one.
        client.send(&out[..20]).await.unwrap();
        client.send(&out).await.unwrap();
        let mut buf = [0u8; 200];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 80);
        let p = ReflectorPacket::decode(&buf[..n]).unwrap();
        assert_eq!((p.seq, p.sender_seq, p.ssid), (7, 7, 0x1234));
        assert_eq!(p.sender_timestamp, t1);
        assert_eq!(p.sender_ttl, 64, "the loopback TTL Linux sends with");
        assert!(p.timestamp.seconds_since(p.receive) >= 0.0);
        let forward = p.receive.seconds_since(t1);
        assert!((-0.001..1.0).contains(&forward), "{forward}");
        // The reply can overtake the reflector's counting it.
        let mut t = text(&reg);
        for _ in 0..100 {
            if t.contains("stamp_reflector_packets_total{result=\"reflected\"} 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            t = text(&reg);
        }
        assert!(
            t.contains("stamp_reflector_packets_total{result=\"reflected\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("stamp_reflector_packets_total{result=\"dropped_too_short\"} 1"),
            "{t}"
        );
        r.stop().await;
    }
}
