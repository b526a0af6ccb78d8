//! The echo server (RFC 862): every UDP datagram goes back to its sender byte for byte; with
//! `tcp`, every byte of a TCP connection too.
//!
//! An echo service on the Internet is a reflector waiting to be abused, so before echoing it
//! drops, and counts by reason in `netmon_echo_server_packets_total{result}`:
//! - datagrams from a well-known service's source port ([`is_reflector_port`]): a spoofed
//!   datagram "from" another echo, chargen, DNS... server would otherwise start a ping-pong
//!   between the two services that never ends;
//! - sources outside the `allow` networks, when some are given;
//! - datagrams larger than `max_size`;
//! - sources over `rate_limit` datagrams per second (a token bucket per source address, in a
//!   bounded table, so a flood from spoofed sources cannot grow memory).
//!
//! UDP runs on one OS thread with batched system calls (`recvmmsg`/`sendmmsg` through nix,
//! since the crate forbids `unsafe`), so one core echoes near the kernel's loopback limit. The
//! same [`EchoServer`] runs standalone (`netmon echo-server`, [`run`]) or inside `serve`
//! (`echo_server:` in the config), where its metrics join the main registry.

use std::collections::HashMap;
use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Where the server listens unless told otherwise (RFC 862's port 7 needs privileges).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7007";
/// Default per-source rate limit, datagrams per second.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;
/// Default largest datagram echoed, bytes.
pub const DEFAULT_MAX_SIZE: usize = 2048;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Sources tracked by the rate limiter at most; the oldest are forgotten first.
pub const MAX_SOURCES: usize = 65_536;
/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 32;
/// How often the UDP thread looks at its stop token while idle.
const POLL: Duration = Duration::from_millis(100);
/// TCP: connections open at once at most.
const TCP_MAX_CONNECTIONS: usize = 256;
/// TCP: a connection silent this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// TCP: the one buffer each connection has.
const TCP_BUFFER: usize = 16 * 1024;

/// Source ports of UDP services that answer unsolicited datagrams. A datagram from one of them
/// is either a reply from such a service or spoofed to start a loop between it and us: never
/// answered. Port 0 is not a valid source at all; 7007 is this server's own default port.
pub const REFLECTOR_PORTS: &[u16] = &[
    0,     // invalid
    7,     // echo
    9,     // discard
    13,    // daytime
    17,    // qotd
    19,    // chargen
    37,    // time
    53,    // dns
    67,    // dhcp server
    68,    // dhcp client
    69,    // tftp
    111,   // portmap
    123,   // ntp
    137,   // netbios-ns
    138,   // netbios-dgm
    161,   // snmp
    162,   // snmp-trap
    389,   // cldap
    427,   // slp
    500,   // isakmp
    520,   // rip
    623,   // ipmi
    1434,  // ms-sql-m
    1900,  // ssdp
    3702,  // ws-discovery
    4500,  // ipsec nat-t
    5060,  // sip
    5353,  // mdns
    5683,  // coap
    7007,  // netmon echo
    11211, // memcached
];

/// Whether datagrams from source port `port` are dropped (see [`REFLECTOR_PORTS`]).
pub fn is_reflector_port(port: u16) -> bool {
    REFLECTOR_PORTS.contains(&port)
}

/// A network in an allow-list: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net(pub IpNet);

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<IpNet>() {
            return Ok(Net(n.trunc()));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Net(IpNet::from(ip)));
        }
        Err(format!(
            "`{s}` is not a network: write e.g. `10.0.0.0/8`, `192.0.2.7` or `2001:db8::/32`"
        ))
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses `IP:PORT` (no names: a server binds an address).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not an address to listen on: write IP:PORT, e.g. `127.0.0.1:7007`, `0.0.0.0:7007` or `[::]:7007`")
    })
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7007))
}
fn default_rate_limit() -> u32 {
    DEFAULT_RATE_LIMIT
}
fn default_max_size() -> usize {
    DEFAULT_MAX_SIZE
}

/// The echo server's settings: `netmon echo-server` flags or the config's `echo_server:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (UDP, and TCP with `tcp`).
    #[serde(default = "default_listen", deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// Networks answered; empty answers everyone.
    #[serde(default)]
    pub allow: Vec<Net>,
    /// Datagrams per second per source address; 0 turns the limit off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Largest datagram echoed, bytes.
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// Echo TCP connections on the same address too.
    #[serde(default)]
    pub tcp: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: default_listen(),
            allow: Vec::new(),
            rate_limit: DEFAULT_RATE_LIMIT,
            max_size: DEFAULT_MAX_SIZE,
            tcp: false,
        }
    }
}

impl Settings {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_DATAGRAM).contains(&self.max_size) {
            return Err(format!(
                "max_size {} is out of range: use 1 to {MAX_DATAGRAM} bytes",
                self.max_size
            ));
        }
        Ok(())
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.0.contains(&ip))
    }
}

/// What happened to a datagram: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Sent back.
    Echoed,
    /// Its source port is a well-known service's.
    DroppedSourcePort,
    /// Its source is over the rate limit.
    DroppedRateLimit,
    /// Its source is outside the allow-list.
    DroppedNotAllowed,
    /// Larger than `max_size`.
    DroppedTooLarge,
    /// Receiving or sending it failed.
    Error,
}

impl Verdict {
    /// Every verdict, so every series exists from the start.
    pub const ALL: [Verdict; 6] = [
        Verdict::Echoed,
        Verdict::DroppedSourcePort,
        Verdict::DroppedRateLimit,
        Verdict::DroppedNotAllowed,
        Verdict::DroppedTooLarge,
        Verdict::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Echoed => "echoed",
            Verdict::DroppedSourcePort => "dropped_source_port",
            Verdict::DroppedRateLimit => "dropped_rate_limit",
            Verdict::DroppedNotAllowed => "dropped_not_allowed",
            Verdict::DroppedTooLarge => "dropped_too_large",
            Verdict::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

type ResultLabels = Vec<(&'static str, &'static str)>;

/// The server's families, registered once per registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    packets: Family<ResultLabels, Counter>,
    connections: Family<ResultLabels, Counter>,
    tcp_bytes: Counter,
}

impl Metrics {
    /// Registers `netmon_echo_server_packets_total{result}`,
    /// `netmon_echo_server_tcp_connections_total{result}` and
    /// `netmon_echo_server_tcp_bytes_total` under `registry` (already prefixed `netmon`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            packets: Family::default(),
            connections: Family::default(),
            tcp_bytes: Counter::default(),
        };
        registry.register(
            "echo_server_packets",
            "UDP datagrams received by the echo server, by what was done with them",
            m.packets.clone(),
        );
        registry.register(
            "echo_server_tcp_connections",
            "TCP connections to the echo server, by what was done with them",
            m.connections.clone(),
        );
        registry.register(
            "echo_server_tcp_bytes",
            "Bytes echoed over TCP",
            m.tcp_bytes.clone(),
        );
        for v in Verdict::ALL {
            let _ = m.packets.get_or_create_owned(&vec![("result", v.as_str())]);
        }
        m
    }

    fn packet_counters(&self) -> [Counter; 6] {
        Verdict::ALL.map(|v| {
            self.packets
                .get_or_create_owned(&vec![("result", v.as_str())])
        })
    }

    fn connection(&self, result: &'static str) {
        self.connections
            .get_or_create(&vec![("result", result)])
            .inc();
    }
}

/// A token bucket per source address in a bounded table of two generations: when the current
/// one is half the bound, it becomes the previous one and the one before is forgotten. A source
/// seen in either keeps its bucket; memory never exceeds [`MAX_SOURCES`] entries.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` datagrams per second with a burst of one second's worth; at most `max` sources.
    pub fn new(rate: u32, max: usize) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(rate.max(1)),
            current: HashMap::new(),
            previous: HashMap::new(),
            max: max.max(2),
        }
    }

    /// Takes a token for `ip` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let bucket = match self.current.get_mut(&ip) {
            Some(b) => b,
            None => {
                if self.current.len() >= self.max / 2 {
                    self.previous = std::mem::take(&mut self.current);
                }
                let b = self.previous.remove(&ip).unwrap_or(Bucket {
                    tokens: self.burst,
                    at: now,
                });
                self.current.entry(ip).or_insert(b)
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides what to do with each datagram: the defences, in order of cost.
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
        if is_reflector_port(src.port()) {
            Verdict::DroppedSourcePort
        } else if !self.settings.allowed(ip) {
            Verdict::DroppedNotAllowed
        } else if len > self.settings.max_size {
            Verdict::DroppedTooLarge
        } else if self.limiter.as_mut().is_some_and(|l| !l.allow(ip, now)) {
            Verdict::DroppedRateLimit
        } else {
            Verdict::Echoed
        }
    }
}

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
        let udp = std::net::UdpSocket::bind(settings.listen).map_err(bind)?;
        // The thread wakes this often to see whether it should stop.
        udp.set_read_timeout(Some(POLL)).map_err(bind)?;
        // Room for bursts while the thread is busy echoing the previous batch.
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(4 << 20);
        let udp_addr = udp.local_addr().map_err(bind)?;
        let token = shutdown.child_token();
        let tcp = if settings.tcp {
            // The same port as UDP, even when the configured port was 0.
            let addr = udp_addr;
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    proto: "tcp",
                    addr,
                    source,
                })?;
            Some(l)
        } else {
            None
        };
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

/// A received datagram's place in the batch buffers, and where it came from.
struct Received {
    len: usize,
    from: SockaddrStorage,
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// The UDP echo loop: receive a batch, judge each datagram, send the echoed ones back in one
/// call, count everything. Runs until `token` is cancelled.
fn udp_loop(
    socket: &std::net::UdpSocket,
    mut policy: Policy,
    counters: &[Counter; 6],
    max_size: usize,
    token: &CancellationToken,
) {
    let fd = socket.as_raw_fd();
    // One more byte than allowed, so an oversized datagram shows as longer than max_size.
    let slot = max_size + 1;
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; slot]).collect();
    // Separate headers for receiving and sending: sendmmsg points a header's name at the
    // caller's addresses, which must never be written by a later recvmmsg.
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut batch: Vec<Received> = Vec::with_capacity(BATCH);
    let mut echo: Vec<usize> = Vec::with_capacity(BATCH);
    let mut tally = [0u64; 6];
    while !token.is_cancelled() {
        batch.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                .collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => {
                    for m in msgs {
                        match m.address {
                            Some(from) => batch.push(Received { len: m.bytes, from }),
                            None => tally[Verdict::Error.index()] += 1,
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    // ICMP errors queued on the socket and the like: count, don't spin.
                    tally[Verdict::Error.index()] += 1;
                    debug!(error = %e, "echo server receive failed");
                    flush(&mut tally, counters);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let now = Instant::now();
        echo.clear();
        for (i, r) in batch.iter().enumerate() {
            let verdict = match to_std(&r.from) {
                Some(src) => policy.judge(src, r.len, now),
                None => Verdict::Error,
            };
            if verdict == Verdict::Echoed {
                echo.push(i);
            } else {
                tally[verdict.index()] += 1;
            }
        }
        let sent = send_batch(fd, &mut send_headers, &bufs, &batch, &echo);
        tally[Verdict::Echoed.index()] += sent as u64;
        tally[Verdict::Error.index()] += (echo.len() - sent) as u64;
        flush(&mut tally, counters);
    }
}

fn flush(tally: &mut [u64; 6], counters: &[Counter; 6]) {
    for (t, c) in tally.iter_mut().zip(counters) {
        if *t > 0 {
            c.inc_by(*t);
            *t = 0;
        }
    }
}

/// Sends `batch[echo[..]]` back to their sources; returns how many left. A message the kernel
/// refuses is skipped (and counted as an error by the caller) so the rest still go.
fn send_batch(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &[Vec<u8>],
    batch: &[Received],
    echo: &[usize],
) -> usize {
    let slices: Vec<[IoSlice<'_>; 1]> = echo
        .iter()
        .map(|&i| [IoSlice::new(&bufs[i][..batch[i].len])])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = echo.iter().map(|&i| Some(batch[i].from)).collect();
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let mut start = 0;
    let mut sent = 0;
    while start < slices.len() {
        match sendmmsg(
            fd,
            headers,
            slices[start..].iter(),
            &addrs[start..],
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(results) => {
                let n = results.count();
                if n == 0 {
                    break;
                }
                sent += n;
                start += n;
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                let to = addrs[start].as_ref().and_then(to_std);
                debug!(error = %e, to = ?to, "echo server send failed");
                start += 1;
            }
        }
    }
    sent
}

/// Accepts TCP connections until `token` is cancelled; each is echoed by its own task.
async fn tcp_loop(
    listener: TcpListener,
    settings: Settings,
    metrics: Metrics,
    token: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "echo server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !settings.allowed(peer.ip().to_canonical()) {
            metrics.connection("dropped_not_allowed");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connection("dropped_connection_limit");
            continue;
        };
        metrics.connection("accepted");
        let token = token.clone();
        let bytes = metrics.tcp_bytes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = token.cancelled() => {}
                r = echo_stream(stream, &bytes) => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "echo connection ended");
                    }
                }
            }
        });
    }
}

/// Echoes one TCP connection with one bounded buffer until EOF, an error, or `TCP_IDLE` of
/// silence (reading or writing: a peer that never reads cannot pin us either).
async fn echo_stream(mut s: TcpStream, bytes: &Counter) -> std::io::Result<()> {
    let mut buf = vec![0u8; TCP_BUFFER];
    let idle = || std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout");
    loop {
        let n = tokio::time::timeout(TCP_IDLE, s.read(&mut buf))
            .await
            .map_err(|_| idle())??;
        if n == 0 {
            return Ok(());
        }
        tokio::time::timeout(TCP_IDLE, s.write_all(&buf[..n]))
            .await
            .map_err(|_| idle())??;
        bytes.inc_by(n as u64);
    }
}

/// `netmon echo-server`: runs the server until SIGINT/SIGTERM, with its own `/metrics` on
/// `metrics_address` when given.
pub async fn run(settings: Settings, metrics_address: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut signals = crate::shutdown::Signals::new().context("installing signal handlers")?;
    let token = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = Metrics::register(registry.sub_registry_with_prefix("netmon"));
    let web = match metrics_address {
        Some(addr) => {
            let listener = crate::base::listen::bind(addr).await?;
            let local = listener
                .local_addr()
                .context("reading the listen address")?;
            info!(address = %local, "serving echo server metrics at http://{local}/metrics");
            Some(tokio::spawn(serve_metrics(
                listener,
                Arc::new(registry),
                token.clone(),
            )))
        }
        None => None,
    };
    let server = EchoServer::start(settings, &metrics, &token).await?;
    loop {
        match signals.next().await {
            crate::shutdown::Signal::Stop(name) => {
                info!(signal = name, "stopping");
                break;
            }
            // Nothing to reload: the flags are the configuration.
            crate::shutdown::Signal::Reload => {}
        }
    }
    server.stop().await;
    token.cancel();
    if let Some(w) = web {
        let _ = tokio::time::timeout(crate::base::listen::GRACE, w).await;
    }
    Ok(())
}

/// A minimal `/metrics` server for the standalone echo server (the monitor's `web` module
/// serves a monitor; this serves only a registry).
async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>, token: CancellationToken) {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::header::{CONTENT_TYPE, HeaderValue};
    use hyper::{Response, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let registry = registry.clone();
            async move {
                let mut resp = Response::new(Full::new(Bytes::new()));
                if req.uri().path() != "/metrics" {
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    *resp.body_mut() = Full::new(Bytes::from_static(b"see /metrics\n"));
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                let mut text = String::new();
                if prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
                    .is_err()
                {
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(resp);
                }
                *resp.body_mut() = Full::new(Bytes::from(text));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    ),
                );
                Ok(resp)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let token = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
