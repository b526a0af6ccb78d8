//! The echo server (RFC 862): every UDP datagram goes back to its sender byte for byte; with
//! `tcp`, every byte of a TCP connection too.
//!
//! An echo service on the Internet is a reflector waiting to be abused, so before echoing it
//! drops, and counts by reason in `netmon_echo_server_packets_total{result}`:
//! - datagrams from a well-known service's source port ([`policy::is_reflector_port`]): a spoofed
//!   datagram "from" another echo, chargen, DNS... server would otherwise start a ping-pong
//!   between the two services that never ends;
//! - sources outside the `allow` networks, when some are given;
//! - datagrams larger than `max_size`;
//! - sources over `rate_limit` datagrams per second (a token bucket per source address, in a
//!   bounded table, so a flood from spoofed sources cannot grow memory).
//!
//! UDP runs on one OS thread with batched system calls (`recvmmsg`/`sendmmsg` through nix,
//! since the crate forbids `unsafe`), so one core echoes near the kernel's loopback limit. The
//! same [`EchoServer`] runs standalone (`netmon echo-server`, `crate::cmd::echo_server::run`) or inside `serve`
//! (`echo_server:` in the config), where its metrics join the main registry.

pub mod metrics;
pub mod policy;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::echo::server::metrics::Metrics;
use crate::echo::server::policy::Policy;
use crate::echo::server::tcp::tcp_loop;
use crate::echo::server::udp::{POLL, udp_loop};
use crate::echo::settings::{Net, Settings};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The settings are invalid.
    #[error("{0}")]
    Settings(String),
    /// Binding a socket failed.
    #[error("cannot listen on {proto} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Starting the UDP thread failed.
    #[error("cannot start the echo thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running echo server. Stop it with [`EchoServer::stop`]; cancelling the token it was
/// started with stops it too.
#[derive(Debug)]
pub struct EchoServer {
    settings: Settings,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    token: CancellationToken,
    udp_done: tokio::sync::oneshot::Receiver<()>,
    tcp_task: Option<tokio::task::JoinHandle<()>>,
}

/// Kernel-picked ports tried for `--listen ADDR:0 --tcp` before giving up: each is free for
/// UDP, and taken for TCP only by chance.
const PORT_PICKS: u32 = 16;

impl EchoServer {
    /// Binds and starts the server; logs where it listens. `shutdown` stops it when cancelled.
    pub async fn start(
        settings: Settings,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Result<EchoServer, ServerError> {
        settings.validate().map_err(ServerError::Settings)?;
        let bind = |source| ServerError::Bind {
            proto: "udp",
            addr: settings.listen,
            source,
        };
        // TCP takes the same port as UDP, even when the configured port was 0: then the
        // kernel's pick for UDP may be a port some TCP socket holds, and another pick is tried.
        let picks = if settings.listen.port() == 0 && settings.tcp {
            PORT_PICKS
        } else {
            1
        };
        let mut attempt = 0;
        let (udp, tcp) = loop {
            attempt += 1;
            let udp = std::net::UdpSocket::bind(settings.listen).map_err(bind)?;
            if !settings.tcp {
                break (udp, None);
            }
            let addr = udp.local_addr().map_err(bind)?;
            match TcpListener::bind(addr).await {
                Ok(l) => break (udp, Some(l)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < picks => {}
                Err(source) => {
                    return Err(ServerError::Bind {
                        proto: "tcp",
                        addr,
                        source,
                    });
                }
            }
        };
        // The thread wakes this often to see whether it should stop.
        udp.set_read_timeout(Some(POLL)).map_err(bind)?;
        // Room for bursts while the thread is busy echoing the previous batch.
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(4 << 20);
        let udp_addr = udp.local_addr().map_err(bind)?;
        let token = shutdown.child_token();
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let (done_tx, udp_done) = tokio::sync::oneshot::channel();
        let policy = Policy::new(settings.clone());
        let counters = metrics.packet_counters();
        let max_size = settings.max_size;
        let thread_token = token.clone();
        std::thread::Builder::new()
            .name("echo-udp".into())
            .spawn(move || {
                udp_loop(&udp, policy, &counters, max_size, &thread_token);
                // Close the socket before saying we are done: a restart with new settings binds
                // the same port right after `stop` returns.
                drop(udp);
                let _ = done_tx.send(());
            })
            .map_err(ServerError::Thread)?;
        let tcp_task = tcp.map(|l| {
            tokio::spawn(tcp_loop(
                l,
                settings.clone(),
                metrics.clone(),
                token.clone(),
            ))
        });
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
            udp = %udp_addr,
            tcp = %tcp_addr.map_or("off".to_string(), |a| a.to_string()),
            allow = %allow,
            rate_limit = settings.rate_limit,
            max_size = settings.max_size,
            "echo server listening on {udp_addr}"
        );
        Ok(EchoServer {
            settings,
            udp_addr,
            tcp_addr,
            token,
            udp_done,
            tcp_task,
        })
    }

    /// The bound UDP address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound TCP address, when TCP echo is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Stops the server and waits (briefly) until its sockets are closed.
    pub async fn stop(self) {
        self.token.cancel();
        // The UDP thread notices within POLL; give it a few.
        if tokio::time::timeout(POLL * 20, self.udp_done)
            .await
            .is_err()
        {
            warn!("echo server UDP thread did not stop in time");
        }
        if let Some(t) = self.tcp_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        info!(udp = %self.udp_addr, "echo server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Instant;

    use crate::echo::server::policy::{RateLimiter, Verdict, is_reflector_port};
    use crate::echo::settings::DEFAULT_LISTEN;

    #[test]
    fn nets_parse_cidrs_and_bare_addresses() {
        assert_eq!(
            "10.1.2.3/8".parse::<Net>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<Net>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!("::1".parse::<Net>().unwrap().to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("example.com".parse::<Net>().is_err());
    }

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
        assert_eq!(
            p.judge("127.0.0.1:19".parse().unwrap(), 10, now),
            Verdict::DroppedSourcePort
        );
        assert_eq!(
            p.judge("127.0.0.2:40000".parse().unwrap(), 10, now),
            Verdict::DroppedNotAllowed
        );
        // A v4-mapped source on a dual-stack socket is judged as its IPv4 address.
        assert_eq!(
            p.judge("[::ffff:127.0.0.1]:40000".parse().unwrap(), 101, now),
            Verdict::DroppedTooLarge
        );
        assert_eq!(p.judge(a, 100, now), Verdict::Echoed);
        assert_eq!(p.judge(a, 100, now), Verdict::Echoed);
        assert_eq!(p.judge(a, 100, now), Verdict::DroppedRateLimit);
        // Half a second refills one token at 2 per second.
        assert_eq!(
            p.judge(a, 100, now + Duration::from_millis(500)),
            Verdict::Echoed
        );
    }

    #[test]
    fn rate_limiter_table_stays_bounded() {
        let mut l = RateLimiter::new(1, 1000);
        let now = Instant::now();
        for i in 0..100_000u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), now));
            assert!(l.len() <= 1000);
        }
        // A recently seen source keeps its (empty) bucket across a generation change.
        let hot = IpAddr::from([10, 0, 0, 1]);
        let mut l = RateLimiter::new(1, 10);
        assert!(l.allow(hot, now));
        for i in 0..5u32 {
            l.allow(IpAddr::from((i + 100).to_be_bytes()), now);
        }
        assert!(!l.allow(hot, now));
    }

    #[test]
    fn reflector_ports_include_the_classics() {
        for p in [0, 7, 19, 53, 123, 1900, 11211] {
            assert!(is_reflector_port(p), "{p}");
        }
        assert!(!is_reflector_port(40000));
    }

    #[test]
    fn settings_defaults_and_validation() {
        let s = Settings::default();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        s.validate().unwrap();
        let bad = Settings {
            max_size: 0,
            ..Settings::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_size"));
    }
}
