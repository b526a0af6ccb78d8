//! The ICMP probe: a round of `count` echo requests, `packet_interval` apart; up when at least one
//! echo reply comes back, latency = mean RTT, per-packet figures in the shared packet families
//! (`crate::probe::packets`).
//!
//! # One socket per address family
//! Every `icmp` service of the process shares one ICMPv4 and one ICMPv6 socket, opened with
//! surge-ping's [`AsyncSocket`] the first time a service needs it. surge-ping tries an
//! unprivileged datagram socket first (Linux `ping_group_range`) and silently falls back to a
//! raw socket (root or `CAP_NET_RAW`); we log which one is in use. When neither may be opened,
//! [`IcmpProbe::new`] fails with a [`BuildError`] that says how to grant the privilege, so
//! start-up fails for the service.
//!
//! # Why not surge-ping's `Client`/`Pinger`
//! Its pinger stamps the send time *after* `send_to` returns, so loopback RTTs read 0 ns about
//! a third of the time and every RTT reads low; its reply timestamp is private. We keep
//! surge-ping for what it does well (opening the socket with its fallback, decoding replies and
//! ICMP errors) and do the bookkeeping here: a dedicated thread (`netmon-icmp`) runs the receive
//! loops and stamps each datagram as soon as `recv_from` returns; the probe stamps its own
//! [`std::time::Instant`] just before `send_to`. The RTT is therefore never low and never zero;
//! it includes the send system call and one thread wake-up (as `ping` without kernel
//! timestamps does). The thread also keeps the sockets independent of any tokio runtime that
//! comes and goes (tests, one-shot checks).
//!
//! # Matching replies
//! A reply counts for a probe only when its source is the probed address, its sequence number
//! is one that probe is waiting for, its identifier is ours (raw sockets; on datagram sockets
//! the kernel rewrites the identifier and delivers only our socket's replies) and its payload is
//! byte-for-byte the one sent, which starts with a random per-packet nonce. Sequence numbers
//! come from one process-wide counter, so concurrent probes of one host never share one.
//! Anything else (another process's ping, a late reply whose probe has finished, a corrupted
//! payload) is dropped and logged at debug level.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use socket2::Type as SockType;
use surge_ping::{AsyncSocket, Icmpv4Packet, Icmpv6Packet};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::base::outcome::{Failure, Outcome, Reason, Success, Target};
use crate::base::resolve;
use crate::base::values::{Duration, IpPreference};
use crate::base::round::Round;
use crate::probe::packets::{Handles, Metrics};
use crate::probe::shape::{BuildError, Context, Definition, PortRule, Probe};

/// The largest ICMP echo payload that fits in one IPv4 datagram (65535 - 20 - 8).
pub const MAX_PAYLOAD: usize = 65_507;
/// The most packets one round may send.
pub const MAX_COUNT: u32 = 100;

fn default_count() -> u32 {
    3
}
fn is_default_count(n: &u32) -> bool {
    *n == default_count()
}
fn default_interval() -> Duration {
    Duration(StdDuration::from_millis(200))
}
fn is_default_interval(d: &Duration) -> bool {
    *d == default_interval()
}
fn default_payload_size() -> usize {
    56
}
fn is_default_payload_size(n: &usize) -> bool {
    *n == default_payload_size()
}

/// Options of an `icmp` service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Echo requests per round (1-100).
    #[serde(default = "default_count", skip_serializing_if = "is_default_count")]
    pub count: u32,
    /// Time between two requests of a round (1ms-10s; 200ms, `ping`'s unprivileged minimum,
    /// by default). Not `interval`: that key is the service's schedule.
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    pub packet_interval: Duration,
    /// Bytes of payload after the 8-byte ICMP header (0-65507; 56 as `ping`).
    #[serde(
        default = "default_payload_size",
        skip_serializing_if = "is_default_payload_size"
    )]
    pub payload_size: usize,
    /// Address family: `auto`, `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "IpPreference::is_auto")]
    pub ip: IpPreference,
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(format!("count must be between 1 and {MAX_COUNT}"));
        }
        if self.packet_interval.0 < StdDuration::from_millis(1)
            || self.packet_interval.0 > StdDuration::from_secs(10)
        {
            return Err(format!(
                "packet_interval {} is out of range: use 1ms to 10s",
                self.packet_interval
            ));
        }
        if self.payload_size > MAX_PAYLOAD {
            return Err(format!("payload_size must be at most {MAX_PAYLOAD} bytes"));
        }
        Ok(())
    }

    /// Checks that a round fits in the service's `timeout`: the requests must all leave, each
    /// with time for its reply, before the probe's own deadline ([`wait_budget`]).
    pub fn check_fits(&self, timeout: StdDuration) -> Result<(), String> {
        let round = self.packet_interval.0 * self.count;
        let budget = wait_budget(timeout);
        if round > budget {
            return Err(format!(
                "count {} x packet_interval {} = {} does not fit in the timeout {} (the round must end by {}, 90% of it): lower count or packet_interval, or raise the timeout",
                self.count,
                self.packet_interval,
                Duration(round),
                Duration(timeout),
                Duration(budget)
            ));
        }
        Ok(())
    }
}

/// How long a probe waits for replies: 90% of the service timeout, so it can still report the
/// round (packets, loss, the reason) before the runner's timeout drops it.
fn wait_budget(timeout: StdDuration) -> StdDuration {
    timeout.mul_f64(0.9)
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
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// Why an ICMP socket could not be opened. Cached per process: the answer does not change
/// while netmon runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Neither a datagram nor a raw ICMP socket is permitted.
    #[error(
        "cannot open an {family} ICMP socket: {detail}. netmon needs either the raw-socket capability \
         (`sudo setcap cap_net_raw+ep $(which netmon)`, or run it as root) or permission for \
         unprivileged ICMP sockets (`sudo sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`, \
         which covers IPv6 too; persist it in /etc/sysctl.d/)"
    )]
    Denied {
        /// `ipv4` or `ipv6`.
        family: &'static str,
        /// The system's error.
        detail: String,
    },
    /// Any other failure (no IPv6 in the kernel, no file descriptors, ...).
    #[error("cannot open an {family} ICMP socket: {detail}")]
    Other {
        /// `ipv4` or `ipv6`.
        family: &'static str,
        /// The system's error.
        detail: String,
    },
}

/// Which socket type to ask surge-ping for first.
fn config(family: Family, hint: SockType) -> surge_ping::Config {
    let kind = match family {
        Family::V4 => surge_ping::ICMP::V4,
        Family::V6 => surge_ping::ICMP::V6,
    };
    surge_ping::Config::builder()
        .kind(kind)
        .sock_type_hint(hint)
        .build()
}

/// What the receive loop hands to a waiting probe.
#[derive(Debug)]
struct Reply {
    /// When `recv_from` returned.
    at: std::time::Instant,
    /// `None` for an echo reply, else the ICMP error that quoted our request.
    error: Option<String>,
}

struct Waiter {
    id: u64,
    payload: Vec<u8>,
    tx: oneshot::Sender<Reply>,
}

/// The waiters of one socket, keyed by (probed address, sequence number).
#[derive(Default)]
struct Table {
    waiters: Mutex<HashMap<(IpAddr, u16), Waiter>>,
    next_id: AtomicU64,
    /// Datagrams that matched no waiter: other processes' pings, late or corrupted replies.
    strays: AtomicU64,
}

/// The process-wide sequence counter: every echo request of the process takes the next one,
/// so two probes of one host never wait for the same (host, sequence) pair.
static SEQUENCE: AtomicU16 = AtomicU16::new(0);

impl Table {
    /// Registers a wait for the reply to a request to `dest` carrying `payload`; returns the
    /// sequence number to send with.
    fn register(
        self: &Arc<Self>,
        dest: IpAddr,
        payload: Vec<u8>,
    ) -> Option<(u16, oneshot::Receiver<Reply>, Registration)> {
        let mut map = self.waiters.lock().ok()?;
        // A taken pair means 65536 requests to this host are in flight; skip past it.
        for _ in 0..64 {
            let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            if let Entry::Vacant(v) = map.entry((dest, seq)) {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                v.insert(Waiter { id, payload, tx });
                let reg = Registration {
                    table: self.clone(),
                    key: (dest, seq),
                    id,
                };
                return Some((seq, rx, reg));
            }
        }
        None
    }

    /// Routes one received datagram to the probe waiting for it, if any.
    fn dispatch(
        &self,
        msg: &[u8],
        from: IpAddr,
        at: std::time::Instant,
        kind: SockType,
        ident: u16,
    ) {
        let Some(d) = decode(msg, from, kind) else {
            // Echo requests (a raw socket sees our own on loopback), neighbour discovery,
            // malformed packets: nothing to route.
            return;
        };
        if kind == SockType::RAW && d.ident != ident {
            self.stray(from, &d, "foreign identifier");
            return;
        }
        let Ok(mut map) = self.waiters.lock() else {
            return;
        };
        let Entry::Occupied(e) = map.entry((d.dest, d.seq)) else {
            drop(map);
            self.stray(from, &d, "no probe waits for it (late or not ours)");
            return;
        };
        if let Some(payload) = d.payload {
            if payload != e.get().payload.as_slice() {
                drop(map);
                self.stray(from, &d, "payload differs from the request");
                return;
            }
        }
        let w = e.remove();
        drop(map);
        // The probe may have just given up; then nobody listens and that is fine.
        let _ = w.tx.send(Reply { at, error: d.error });
    }

    fn stray(&self, from: IpAddr, d: &Decoded<'_>, why: &str) {
        self.strays.fetch_add(1, Ordering::Relaxed);
        debug!(%from, seq = d.seq, ident = d.ident, why, "icmp reply ignored");
    }
}

/// Removes its waiter when the probe stops waiting (reply, deadline or the probe dropped).
struct Registration {
    table: Arc<Table>,
    key: (IpAddr, u16),
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut map) = self.table.waiters.lock() {
            if let Entry::Occupied(e) = map.entry(self.key) {
                // Only our own entry: the pair may already belong to a later request.
                if e.get().id == self.id {
                    e.remove();
                }
            }
        }
    }
}

/// The fields of a received ICMP message that matching needs.
struct Decoded<'a> {
    /// The address the answered request was sent to.
    dest: IpAddr,
    ident: u16,
    seq: u16,
    /// The echoed payload; `None` for an ICMP error.
    payload: Option<&'a [u8]>,
    /// The ICMP error, described.
    error: Option<String>,
}

/// Decodes with surge-ping, keeping only echo replies and the errors that quote a request.
fn decode(msg: &[u8], from: IpAddr, kind: SockType) -> Option<Decoded<'_>> {
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
fn unreachable_v4(code: u8) -> String {
    match code {
        0 => "destination network unreachable".into(),
        1 => "destination host unreachable".into(),
        3 => "destination port unreachable".into(),
        9 | 10 | 13 => "communication administratively prohibited".into(),
        c => format!("destination unreachable (code {c})"),
    }
}

/// RFC 4443 §3.1 destination-unreachable codes.
fn unreachable_v6(code: u8) -> String {
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
fn checksum(data: &[u8]) -> u16 {
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
fn echo_request(family: Family, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
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
fn payload(size: usize) -> Vec<u8> {
    let nonce = rand::random::<u64>().to_be_bytes();
    (0..size)
        .map(|i| nonce.get(i).copied().unwrap_or(i as u8))
        .collect()
}

/// One shared ICMP socket and its receive loop.
pub struct IcmpSocket {
    family: Family,
    socket: AsyncSocket,
    kind: SockType,
    /// Our identifier on raw sockets (random, so two netmon processes differ).
    ident: u16,
    table: Arc<Table>,
    recv: JoinHandle<()>,
}

impl std::fmt::Debug for IcmpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpSocket")
            .field("family", &self.family)
            .field("kind", &self.kind_str())
            .finish()
    }
}

impl Drop for IcmpSocket {
    fn drop(&mut self) {
        self.recv.abort();
    }
}

impl IcmpSocket {
    /// Opens a socket, trying `hint` first and then the other type (surge-ping's fallback).
    pub fn open(family: Family, hint: SockType) -> Result<Arc<IcmpSocket>, OpenError> {
        let rt = icmp_runtime().map_err(|detail| OpenError::Other {
            family: family.as_str(),
            detail,
        })?;
        // The socket registers with the reactor of the current runtime: ours.
        let socket = {
            let _enter = rt.enter();
            AsyncSocket::new(&config(family, hint))
        }
        .map_err(|e| {
            // surge-ping's own message names a non-existent `net.ipv6` sysctl; keep the cause.
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("Original error: ")
                .to_string();
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                OpenError::Denied {
                    family: family.as_str(),
                    detail,
                }
            } else {
                OpenError::Other {
                    family: family.as_str(),
                    detail,
                }
            }
        })?;
        let kind = socket.get_type();
        let ident = rand::random();
        let table = Arc::new(Table::default());
        let recv = rt.spawn(recv_loop(socket.clone(), table.clone(), kind, ident));
        let s = IcmpSocket {
            family,
            socket,
            kind,
            ident,
            table,
            recv,
        };
        info!(
            family = family.as_str(),
            socket = s.kind_str(),
            allowed_by = if kind == SockType::RAW {
                "root or CAP_NET_RAW"
            } else {
                "net.ipv4.ping_group_range"
            },
            "icmp socket opened"
        );
        Ok(Arc::new(s))
    }

    /// `raw` or `dgram`.
    pub fn kind_str(&self) -> &'static str {
        if self.kind == SockType::RAW {
            "raw"
        } else {
            "dgram"
        }
    }

    /// Datagrams received that matched no waiting probe.
    pub fn strays(&self) -> u64 {
        self.table.strays.load(Ordering::Relaxed)
    }
}

async fn recv_loop(socket: AsyncSocket, table: Arc<Table>, kind: SockType, ident: u16) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let at = std::time::Instant::now();
                table.dispatch(&buf[..n], from.ip(), at, kind, ident);
            }
            // Datagram sockets report ICMP errors as a socket error on the next receive; they
            // cannot be tied to a request, so that request simply counts as lost.
            Err(e) => {
                debug!(error = %e, "icmp receive error");
                // Never spin on an error that repeats.
                tokio::time::sleep(StdDuration::from_millis(1)).await;
            }
        }
    }
}

/// The runtime of the `netmon-icmp` thread, started once per process.
fn icmp_runtime() -> Result<Handle, String> {
    static RT: OnceLock<Result<Handle, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the icmp runtime: {e}"))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("netmon-icmp".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("cannot start the icmp thread: {e}"))?;
        Ok(handle)
    })
    .clone()
}

/// The process's shared socket for `family`, opened on first use.
pub fn shared_socket(family: Family) -> Result<Arc<IcmpSocket>, OpenError> {
    static V4: OnceLock<Result<Arc<IcmpSocket>, OpenError>> = OnceLock::new();
    static V6: OnceLock<Result<Arc<IcmpSocket>, OpenError>> = OnceLock::new();
    let cell = match family {
        Family::V4 => &V4,
        Family::V6 => &V6,
    };
    // Unprivileged datagram sockets first: the kernel then delivers only our replies.
    cell.get_or_init(|| IcmpSocket::open(family, SockType::DGRAM))
        .clone()
}

/// The `icmp` protocol in the table of protocols.
#[derive(Debug)]
pub struct Icmp;

impl Definition for Icmp {
    const NAME: &'static str = "icmp";
    const PORT: PortRule = PortRule::None;
    type Options = Options;
    type Metrics = Metrics;

    fn validate(options: &Options) -> Result<(), String> {
        options.validate()
    }

    fn port(_: &Options) -> Option<u16> {
        None
    }

    fn build(
        options: &Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(IcmpProbe::new(options.clone(), ctx, metrics)?))
    }
}

/// Probes one host with rounds of echo requests.
#[derive(Debug)]
pub struct IcmpProbe {
    options: Options,
    budget: StdDuration,
    handles: Handles,
    /// A fixed socket (tests); the shared ones otherwise.
    socket: Option<Arc<IcmpSocket>>,
}

impl IcmpProbe {
    /// Builds the probe: checks the round fits in the timeout and that the socket of the
    /// family it will most likely use can be opened, so a missing privilege fails start-up.
    pub fn new(
        options: Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        options.check_fits(ctx.timeout).map_err(BuildError)?;
        let family = match options.ip {
            IpPreference::Ipv6 => Family::V6,
            IpPreference::Auto | IpPreference::Ipv4 => Family::V4,
        };
        shared_socket(family).map_err(|e| BuildError(e.to_string()))?;
        Ok(IcmpProbe {
            options,
            budget: wait_budget(ctx.timeout),
            handles: metrics.handles(ctx.labels),
            socket: None,
        })
    }

    /// A probe on a given socket, for tests of both socket types.
    #[cfg(test)]
    fn with_socket(
        options: Options,
        ctx: &Context<'_>,
        metrics: &Metrics,
        socket: Arc<IcmpSocket>,
    ) -> Self {
        IcmpProbe {
            options,
            budget: wait_budget(ctx.timeout),
            handles: metrics.handles(ctx.labels),
            socket: Some(socket),
        }
    }

    fn socket(&self, family: Family) -> Result<Arc<IcmpSocket>, Failure> {
        match &self.socket {
            Some(s) if s.family == family => Ok(s.clone()),
            Some(_) => Err(Failure::new(Reason::Io, "test socket of the other family")),
            None => shared_socket(family).map_err(|e| Failure::new(Reason::Io, e.to_string())),
        }
    }

    async fn probe(&self, target: &Target) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.budget;
        let addr = resolve::resolve(&target.host, 0, self.options.ip).await?[0];
        let socket = self.socket(Family::of(addr.ip()))?;
        let mut round = RoundGuard {
            handles: &self.handles,
            sent: 0,
            rtts: Vec::with_capacity(self.options.count as usize),
            finished: false,
        };
        let mut pending = FuturesUnordered::new();
        let mut next = tokio::time::Instant::now();
        let mut left = self.options.count;
        let mut icmp_error = None;
        let mut send_error = None;
        loop {
            let now = tokio::time::Instant::now();
            if left > 0 && now >= next {
                left -= 1;
                next += self.options.packet_interval.0;
                // Leave the last request a moment for its reply; later ones would only be lost.
                if now + self.options.packet_interval.0.min(self.budget / 10) > deadline {
                    left = 0;
                    continue;
                }
                let index = round.rtts.len();
                round.rtts.push(None);
                round.sent += 1;
                match send(&socket, addr, self.options.payload_size).await {
                    Ok((t0, rx, reg)) => pending.push(async move {
                        let _reg = reg;
                        (index, t0, tokio::time::timeout_at(deadline, rx).await)
                    }),
                    Err(f) => send_error = Some(f),
                }
                continue;
            }
            if left == 0 && pending.is_empty() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next), if left > 0 => {}
                Some((index, t0, r)) = pending.next(), if !pending.is_empty() => match r {
                    Ok(Ok(Reply { at, error: None })) => {
                        // Both stamps are std Instants: ours before send_to, the receive
                        // thread's after recv_from, so the difference is never low.
                        let rtt = at.saturating_duration_since(t0).max(StdDuration::from_nanos(1));
                        round.rtts[index] = Some(rtt);
                    }
                    Ok(Ok(Reply { error: Some(e), .. })) => icmp_error = Some(e),
                    // Deadline passed or the socket closed: the request is lost.
                    Ok(Err(_)) | Err(_) => {}
                },
            }
        }
        round.finished = true;
        let measured = Round {
            sent: round.sent,
            rtts: round.rtts.iter().flatten().copied().collect(),
        };
        self.judge(addr, measured, icmp_error, send_error)
    }

    /// Decides a finished round: up when any reply came, else the clearest reason why not.
    fn judge(
        &self,
        addr: SocketAddr,
        measured: Round,
        icmp_error: Option<String>,
        send_error: Option<Failure>,
    ) -> Outcome {
        let sent = measured.sent;
        if let Some(mean) = measured.mean() {
            return Ok(Success::new(mean).with_round(measured));
        }
        let failure = if let Some(e) = icmp_error {
            Failure::new(
                Reason::Unreachable,
                format!("{e} for echo requests to {}", addr.ip()),
            )
        } else if let Some(f) = send_error {
            f
        } else {
            Failure::new(
                Reason::Loss,
                format!(
                    "no echo reply from {}: 0 of {sent} within {}",
                    addr.ip(),
                    Duration(self.budget)
                ),
            )
        };
        Err(failure.with_round(measured))
    }
}

/// Sends one echo request; returns the send stamp and the wait for its reply.
async fn send(
    socket: &Arc<IcmpSocket>,
    addr: SocketAddr,
    size: usize,
) -> Result<(std::time::Instant, oneshot::Receiver<Reply>, Registration), Failure> {
    let data = payload(size);
    let dest = addr.ip();
    let (seq, rx, reg) = socket.table.register(dest, data.clone()).ok_or_else(|| {
        Failure::new(
            Reason::Io,
            format!("no free icmp sequence number for {dest}"),
        )
    })?;
    let mut packet = echo_request(socket.family, socket.ident, seq, &data);
    let to = SocketAddr::new(dest, 0);
    // Stamped just before the poll that makes the system call: a first send may wait for the
    // socket's writable readiness, and that wait is not part of the round trip.
    let mut t0 = std::time::Instant::now();
    let mut sending = std::pin::pin!(socket.socket.send_to(&mut packet, &to));
    std::future::poll_fn(|cx| {
        t0 = std::time::Instant::now();
        sending.as_mut().poll(cx)
    })
    .await
    .map_err(|e| Failure::io(&format!("send echo request to {dest}"), &e))?;
    Ok((t0, rx, reg))
}

/// The round in progress. Recorded into the packet families when dropped, so a round cut short
/// by the runner's timeout still counts its packets.
struct RoundGuard<'a> {
    handles: &'a Handles,
    sent: u64,
    /// RTT per request, in send order; `None` while unanswered.
    rtts: Vec<Option<StdDuration>>,
    finished: bool,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if self.sent == 0 {
            return;
        }
        if !self.finished {
            warn!(
                sent = self.sent,
                "icmp round cut short by the service timeout: the name lookup probably took most of it"
            );
        }
        self.handles.record(&Round {
            sent: self.sent,
            rtts: self.rtts.iter().flatten().copied().collect(),
        });
    }
}

impl Probe for IcmpProbe {
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome> {
        self.probe(target).boxed()
    }

    fn forget(&self) {
        self.handles.remove();
    }
}

/// The fuzzing entry point for received ICMP bytes (`crate::fuzzing::icmp_reply`); not part
/// of the API. `data[0]` picks raw or datagram socket and the family, the rest is the datagram.
/// Any datagram must decode and route without a panic and without waking the wrong waiter; and
/// an echo reply built from the same bytes must decode to its fields and reach its waiter.
#[doc(hidden)]
pub fn fuzz_reply(data: &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::labels::Labels;
    use crate::probe::ProbeMetrics;

    /// Opens a socket of `family` (type `hint` first) or says why the test is skipped; with
    /// `NETMON_REQUIRE_ICMP=1` a missing socket fails the test instead.
    fn socket_or_skip(family: Family, hint: SockType) -> Option<Arc<IcmpSocket>> {
        if family == Family::V6 && std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: this machine has no ::1");
            return None;
        }
        match IcmpSocket::open(family, hint) {
            Ok(s) => Some(s),
            Err(e) if std::env::var("NETMON_REQUIRE_ICMP").as_deref() == Ok("1") => {
                panic!("NETMON_REQUIRE_ICMP=1 but {e}")
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// A socket of exactly type `want`, or a skip message (e.g. no datagram sockets allowed).
    fn socket_of_type(family: Family, want: SockType) -> Option<Arc<IcmpSocket>> {
        let s = socket_or_skip(family, want)?;
        if s.kind != want {
            eprintln!(
                "skipped: {} {want:?} ICMP sockets are not permitted here (got {})",
                family.as_str(),
                s.kind_str()
            );
            return None;
        }
        Some(s)
    }

    fn options(count: u32, interval_ms: u64) -> Options {
        Options {
            count,
            packet_interval: Duration(StdDuration::from_millis(interval_ms)),
            payload_size: 56,
            ip: IpPreference::Auto,
        }
    }

    struct Fixture {
        registry: prometheus_client::registry::Registry,
        metrics: ProbeMetrics,
        labels: Labels,
    }

    impl Fixture {
        fn new() -> Self {
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = ProbeMetrics::register(&mut registry);
            Fixture {
                registry,
                metrics,
                labels: vec![("host".into(), "h".into())],
            }
        }

        fn probe(&self, o: Options, timeout: StdDuration, s: &Arc<IcmpSocket>) -> IcmpProbe {
            let ctx = Context {
                labels: &self.labels,
                timeout,
            };
            o.check_fits(timeout).unwrap();
            IcmpProbe::with_socket(o, &ctx, &self.metrics.icmp, s.clone())
        }

        fn text(&self) -> String {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, &self.registry).unwrap();
            t
        }
    }

    fn target(host: &str) -> Target {
        Target { host: host.into() }
    }

    /// A round to `host` on `s`: every reply back, RTTs above zero and below 50 ms.
    async fn loopback_round(s: Arc<IcmpSocket>, host: &str) {
        let f = Fixture::new();
        let p = f.probe(options(5, 20), StdDuration::from_secs(2), &s);
        let ok = p.run(&target(host)).await.unwrap();
        assert!(ok.latency > StdDuration::ZERO, "{ok:?}");
        assert!(ok.latency < StdDuration::from_millis(50), "{ok:?}");
        let text = f.text();
        assert!(text.contains("packets_sent_total{host=\"h\"} 5"), "{text}");
        assert!(
            text.contains("packets_received_total{host=\"h\"} 5"),
            "{text}"
        );
        assert!(text.contains("packet_loss_ratio{host=\"h\"} 0.0"), "{text}");
    }

    #[tokio::test]
    async fn loopback_v4_over_raw_and_dgram_sockets() {
        let mut ran = 0;
        for kind in [SockType::RAW, SockType::DGRAM] {
            if let Some(s) = socket_of_type(Family::V4, kind) {
                loopback_round(s, "127.0.0.1").await;
                ran += 1;
            }
        }
        if ran == 0 {
            eprintln!("skipped: no ICMPv4 socket");
        }
    }

    #[tokio::test]
    async fn loopback_v6_over_raw_and_dgram_sockets() {
        for kind in [SockType::RAW, SockType::DGRAM] {
            if let Some(s) = socket_of_type(Family::V6, kind) {
                loopback_round(s, "::1").await;
            }
        }
    }

    /// Regression (surge-ping stamps the send after `send_to`): no RTT may read zero.
    #[tokio::test]
    async fn fifty_pings_have_no_zero_rtt() {
        let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
            return;
        };
        let table = s.table.clone();
        for _ in 0..50 {
            let (t0, rx, _reg) = send(&s, "127.0.0.1:0".parse().unwrap(), 56).await.unwrap();
            let reply = tokio::time::timeout(StdDuration::from_secs(2), rx)
                .await
                .unwrap()
                .unwrap();
            let rtt = reply.at.saturating_duration_since(t0);
            // A loopback round trip is two system calls and a wake-up: never below 1 µs.
            assert!(rtt >= StdDuration::from_micros(1), "rtt {rtt:?}");
            assert!(rtt < StdDuration::from_millis(50), "rtt {rtt:?}");
        }
        assert!(table.waiters.lock().unwrap().is_empty());
    }

    /// Our mean RTT against `ping`'s on the same path: never below a third of its minimum.
    #[tokio::test]
    async fn rtt_agrees_with_system_ping() {
        let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
            return;
        };
        let out = match std::process::Command::new("ping")
            .args(["-c", "5", "-i", "0.2", "-n", "127.0.0.1"])
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
            Ok(o) => {
                eprintln!(
                    "skipped: ping failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return;
            }
            Err(e) => {
                eprintln!("skipped: no `ping` binary ({e}); install iputils-ping");
                return;
            }
        };
        // rtt min/avg/max/mdev = 0.032/0.045/0.061/0.010 ms
        let stats: Vec<f64> = out
            .lines()
            .find(|l| l.contains("min/avg/max"))
            .and_then(|l| l.split('=').nth(1))
            .map(|v| {
                v.trim()
                    .trim_end_matches("ms")
                    .split('/')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(stats.len(), 4, "cannot read ping's summary:\n{out}");
        let ping_min = stats[0] / 1000.0;
        let f = Fixture::new();
        let p = f.probe(options(5, 200), StdDuration::from_secs(2), &s);
        let ours = p
            .run(&target("127.0.0.1"))
            .await
            .unwrap()
            .latency
            .as_secs_f64();
        eprintln!(
            "ping min/avg/max {:?} ms, ours (socket {}) {:.3} ms",
            stats,
            s.kind_str(),
            ours * 1000.0
        );
        assert!(ours > 0.0);
        assert!(
            ours >= 0.3 * ping_min,
            "our mean {ours}s is below 0.3 x ping's min {ping_min}s"
        );
        assert!(ours < 0.05, "our mean {ours}s");
    }

    /// Concurrent probes of one host on one socket: each gets exactly its own replies.
    #[tokio::test]
    async fn concurrent_probes_of_one_host_get_their_own_replies() {
        for kind in [SockType::RAW, SockType::DGRAM] {
            let Some(s) = socket_of_type(Family::V4, kind) else {
                continue;
            };
            let fixtures: Vec<Fixture> = (0..4).map(|_| Fixture::new()).collect();
            let probes: Vec<IcmpProbe> = fixtures
                .iter()
                .map(|f| f.probe(options(10, 2), StdDuration::from_secs(2), &s))
                .collect();
            let t = target("127.0.0.1");
            let results = futures_util::future::join_all(probes.iter().map(|p| p.run(&t))).await;
            for (r, f) in results.iter().zip(&fixtures) {
                assert!(r.is_ok(), "{r:?}");
                let text = f.text();
                assert!(text.contains("packets_sent_total{host=\"h\"} 10"), "{text}");
                assert!(
                    text.contains("packets_received_total{host=\"h\"} 10"),
                    "{text}"
                );
            }
            assert!(s.table.waiters.lock().unwrap().is_empty());
        }
    }

    fn ipv4_header(len: usize, src: u8) -> Vec<u8> {
        let total = (20 + len) as u16;
        let mut h = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, src, 127, 0, 0, 1,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h
    }

    /// An echo reply from 127.0.0.`src` as a raw IPv4 socket would receive it.
    fn raw_reply_from(src: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut icmp = echo_request(Family::V4, ident, seq, payload);
        icmp[0] = 0;
        let mut m = ipv4_header(icmp.len(), src);
        m.extend_from_slice(&icmp);
        m
    }

    fn raw_reply(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        raw_reply_from(1, ident, seq, payload)
    }

    #[test]
    fn foreign_identifier_wrong_sequence_and_payload_are_ignored() {
        let table = Arc::new(Table::default());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let data = payload(56);
        let (seq, mut rx, _reg) = table.register(lo, data.clone()).unwrap();
        let now = std::time::Instant::now();
        let ours = 0x1234;
        // Another process's ping with our sequence number (raw sockets see every reply).
        table.dispatch(&raw_reply(0x9999, seq, &data), lo, now, SockType::RAW, ours);
        // Our identifier, a sequence nobody waits for (a late reply).
        table.dispatch(
            &raw_reply(ours, seq.wrapping_add(7), &data),
            lo,
            now,
            SockType::RAW,
            ours,
        );
        // Our identifier and sequence but another payload (a reply to an earlier request).
        table.dispatch(
            &raw_reply(ours, seq, &payload(56)),
            lo,
            now,
            SockType::RAW,
            ours,
        );
        // The right pair from another address.
        table.dispatch(
            &raw_reply_from(2, ours, seq, &data),
            "127.0.0.2".parse().unwrap(),
            now,
            SockType::RAW,
            ours,
        );
        assert!(rx.try_recv().is_err(), "a stray reply was delivered");
        assert_eq!(table.strays.load(Ordering::Relaxed), 4);
        table.dispatch(&raw_reply(ours, seq, &data), lo, now, SockType::RAW, ours);
        let r = rx.try_recv().unwrap();
        assert!(r.error.is_none());
    }

    #[test]
    fn datagram_replies_are_matched_without_the_identifier() {
        let table = Arc::new(Table::default());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let data = payload(8);
        let (seq, mut rx, reg) = table.register(lo, data.clone()).unwrap();
        // The kernel rewrote the identifier to the socket's; only payload and seq decide.
        let mut m = echo_request(Family::V4, 4242, seq, &data);
        m[0] = 0;
        table.dispatch(&m, lo, std::time::Instant::now(), SockType::DGRAM, 1);
        assert!(rx.try_recv().is_ok());
        drop(reg);
        assert!(table.waiters.lock().unwrap().is_empty());
    }

    /// A destination unreachable quoting our request reaches the probe as an error, routed by
    /// the quoted destination (the router that sent it is another address).
    #[test]
    fn icmp_errors_are_routed_by_the_quoted_request() {
        let table = Arc::new(Table::default());
        let dest: IpAddr = "127.0.0.9".parse().unwrap();
        let (seq, mut rx, _reg) = table.register(dest, payload(56)).unwrap();
        let ours = 0x4242;
        // Type 3 code 1, unused word, then the quoted IPv4 header and our echo header.
        let mut quoted = vec![
            0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 9,
        ];
        quoted.extend_from_slice(&echo_request(Family::V4, ours, seq, &[])[..8]);
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let mut m = ipv4_header(icmp.len(), 1);
        m.extend_from_slice(&icmp);
        let router: IpAddr = "127.0.0.1".parse().unwrap();
        table.dispatch(&m, router, std::time::Instant::now(), SockType::RAW, ours);
        let r = rx.try_recv().unwrap();
        assert_eq!(r.error.as_deref(), Some("destination host unreachable"));
    }

    #[test]
    fn dropped_registration_frees_its_pair_only() {
        let table = Arc::new(Table::default());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let (_, _rx1, reg1) = table.register(lo, vec![]).unwrap();
        let (_, _rx2, _reg2) = table.register(lo, vec![]).unwrap();
        assert_eq!(table.waiters.lock().unwrap().len(), 2);
        drop(reg1);
        assert_eq!(table.waiters.lock().unwrap().len(), 1);
    }

    /// A crafted echo reply with a foreign identifier, sent on the wire from a second raw
    /// socket, reaches our raw socket and is ignored; the right one is accepted.
    #[tokio::test]
    async fn crafted_foreign_reply_on_the_wire_is_ignored() {
        let Some(s) = socket_of_type(Family::V4, SockType::RAW) else {
            return;
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let data = payload(56);
        let (seq, mut rx, _reg) = s.table.register(lo, data.clone()).unwrap();
        let crafter = socket2::Socket::new(
            socket2::Domain::IPV4,
            SockType::RAW,
            Some(socket2::Protocol::ICMPV4),
        )
        .unwrap();
        let to: socket2::SockAddr = SocketAddr::from(([127, 0, 0, 1], 0)).into();
        let reply = |ident: u16| {
            let mut m = echo_request(Family::V4, ident, seq, &data);
            m[0] = 0;
            m[2] = 0;
            m[3] = 0;
            let sum = checksum(&m);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            m
        };
        let before = s.strays();
        crafter
            .send_to(&reply(s.ident.wrapping_add(1)), &to)
            .unwrap();
        let t = std::time::Instant::now();
        while s.strays() == before && t.elapsed() < StdDuration::from_secs(2) {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        assert!(s.strays() > before, "the crafted reply never arrived");
        assert!(rx.try_recv().is_err(), "a foreign reply was accepted");
        crafter.send_to(&reply(s.ident), &to).unwrap();
        let r = tokio::time::timeout(StdDuration::from_secs(2), rx).await;
        assert!(matches!(r, Ok(Ok(Reply { error: None, .. }))), "{r:?}");
    }

    /// No reply at all (the receive loop stopped): reason `loss`, every packet counted lost,
    /// and the round ends before the timeout so the runner never reports `timeout`.
    #[tokio::test]
    async fn no_reply_is_loss_with_full_loss_ratio() {
        let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
            return;
        };
        s.recv.abort();
        let f = Fixture::new();
        let timeout = StdDuration::from_millis(300);
        let p = f.probe(options(3, 10), timeout, &s);
        let started = std::time::Instant::now();
        let e = p.run(&target("127.0.0.1")).await.unwrap_err();
        assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
        assert_eq!(e.reason, Reason::Loss, "{e}");
        assert!(e.message.contains("0 of 3"), "{e}");
        let text = f.text();
        assert!(text.contains("packets_sent_total{host=\"h\"} 3"), "{text}");
        assert!(
            text.contains("packets_received_total{host=\"h\"} 0"),
            "{text}"
        );
        assert!(text.contains("packet_loss_ratio{host=\"h\"} 1.0"), "{text}");
        assert!(s.table.waiters.lock().unwrap().is_empty());
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2, so the checksum is 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // A message with its checksum in place sums to zero.
        let m = echo_request(Family::V4, 7, 9, b"odd");
        assert_eq!(checksum(&m), 0);
    }

    #[test]
    fn options_are_validated_and_must_fit_the_timeout() {
        assert!(options(3, 200).validate().is_ok());
        assert!(options(0, 200).validate().unwrap_err().contains("count"));
        assert!(options(101, 200).validate().unwrap_err().contains("count"));
        assert!(
            options(3, 0)
                .validate()
                .unwrap_err()
                .contains("packet_interval")
        );
        let mut o = options(3, 200);
        o.payload_size = MAX_PAYLOAD + 1;
        assert!(o.validate().unwrap_err().contains("payload_size"));
        assert!(
            options(3, 200)
                .check_fits(StdDuration::from_secs(5))
                .is_ok()
        );
        let e = options(5, 1000)
            .check_fits(StdDuration::from_secs(5))
            .unwrap_err();
        assert!(e.contains("does not fit in the timeout 5s"), "{e}");
    }

    #[test]
    fn options_come_from_the_config_with_defaults_and_typo_hints() {
        let text = "targets:\n  127.0.0.1:\n    services:\n      - ICMP\n      - { type: icmp, name: big, count: 5, packet_interval: 100ms, payload_size: 1400, ip: ipv4 }\n";
        let c = crate::config::loader::load(text, "t.yml").unwrap();
        let opts: Vec<_> = c.services().map(|s| s.options.clone()).collect();
        assert_eq!(
            opts[0],
            crate::probe::Options::Icmp(Options {
                count: 3,
                packet_interval: Duration(StdDuration::from_millis(200)),
                payload_size: 56,
                ip: IpPreference::Auto,
            })
        );
        assert_eq!(
            opts[1],
            crate::probe::Options::Icmp(Options {
                count: 5,
                packet_interval: Duration(StdDuration::from_millis(100)),
                payload_size: 1400,
                ip: IpPreference::Ipv4,
            })
        );
        let bad = "targets:\n  h:\n    services:\n      - { type: icmp, cuont: 5 }\n";
        let e = crate::config::loader::load(bad, "t.yml").unwrap_err().to_string();
        assert!(e.contains("t.yml:4:"), "{e}");
        assert!(e.contains("`count`"), "{e}");
        let bad = "targets:\n  h:\n    services:\n      - \"ICMP:7\"\n";
        assert!(crate::config::loader::load(bad, "t.yml").is_err());
    }

    #[test]
    fn a_round_longer_than_the_timeout_fails_to_build() {
        let f = Fixture::new();
        let ctx = Context {
            labels: &f.labels,
            timeout: StdDuration::from_millis(500),
        };
        let e = IcmpProbe::new(options(3, 200), &ctx, &f.metrics.icmp).unwrap_err();
        assert!(e.0.contains("does not fit in the timeout 500ms"), "{}", e.0);
    }

    #[test]
    fn permission_error_says_what_to_do() {
        let e = OpenError::Denied {
            family: "ipv4",
            detail: "Permission denied (os error 13)".into(),
        }
        .to_string();
        assert!(e.contains("setcap cap_net_raw+ep $(which netmon)"), "{e}");
        assert!(
            e.contains("sysctl -w net.ipv4.ping_group_range=\"0 2147483647\""),
            "{e}"
        );
    }

    #[tokio::test]
    async fn unknown_host_is_dns() {
        let Some(s) = socket_or_skip(Family::V4, SockType::DGRAM) else {
            return;
        };
        let f = Fixture::new();
        let p = f.probe(options(1, 10), StdDuration::from_secs(1), &s);
        let e = p.run(&target("no-such-host.invalid")).await.unwrap_err();
        assert_eq!(e.reason, Reason::Dns);
    }
}
