//! The shared ICMP sockets: one per address family, a receive loop on the `netmon-icmp`
//! thread, and the table that routes each reply to the probe waiting for it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use socket2::Type as SockType;
use tokio::net::UdpSocket;

use crate::base::rxtime;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info};


use super::wire::{Decoded, Family, decode};

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
/// Opens an ICMP socket of type `hint`, else of the other type: an unprivileged datagram
/// socket needs `net.ipv4.ping_group_range` to include our group, a raw one root or
/// `CAP_NET_RAW`. On failure, the first error is the one that explains.
fn open_socket(family: Family, hint: SockType) -> std::io::Result<(SockType, socket2::Socket)> {
    let (domain, protocol) = match family {
        Family::V4 => (socket2::Domain::IPV4, socket2::Protocol::ICMPV4),
        Family::V6 => (socket2::Domain::IPV6, socket2::Protocol::ICMPV6),
    };
    match socket2::Socket::new(domain, hint, Some(protocol)) {
        Ok(s) => Ok((hint, s)),
        Err(first) => {
            let other = if hint == SockType::DGRAM {
                SockType::RAW
            } else {
                SockType::DGRAM
            };
            socket2::Socket::new(domain, other, Some(protocol))
                .map(|s| (other, s))
                .map_err(|_| first)
        }
    }
}

/// What the receive loop hands to a waiting probe.
#[derive(Debug)]
pub(super) struct Reply {
    /// When the reply arrived: the kernel's receive stamp where it gives one
    /// ([`rxtime`]), else when `recv` returned.
    pub(super) at: std::time::Instant,
    /// `None` for an echo reply, else the ICMP error that quoted our request.
    pub(super) error: Option<String>,
}

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) payload: Vec<u8>,
    pub(super) tx: oneshot::Sender<Reply>,
}

/// The waiters of one socket, keyed by (probed address, sequence number).
#[derive(Default)]
pub(super) struct Table {
    pub(super) waiters: Mutex<HashMap<(IpAddr, u16), Waiter>>,
    pub(super) next_id: AtomicU64,
    /// Datagrams that matched no waiter: other processes' pings, late or corrupted replies.
    pub(super) strays: AtomicU64,
}

/// The process-wide sequence counter: every echo request of the process takes the next one,
/// so two probes of one host never wait for the same (host, sequence) pair.
pub(super) static SEQUENCE: AtomicU16 = AtomicU16::new(0);

impl Table {
    /// Registers a wait for the reply to a request to `dest` carrying `payload`; returns the
    /// sequence number to send with.
    pub(super) fn register(
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
    pub(super) fn dispatch(
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

    pub(super) fn stray(&self, from: IpAddr, d: &Decoded<'_>, why: &str) {
        self.strays.fetch_add(1, Ordering::Relaxed);
        debug!(%from, seq = d.seq, ident = d.ident, why, "icmp reply ignored");
    }
}

/// Removes its waiter when the probe stops waiting (reply, deadline or the probe dropped).
pub(super) struct Registration {
    pub(super) table: Arc<Table>,
    pub(super) key: (IpAddr, u16),
    pub(super) id: u64,
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


/// One shared ICMP socket and its receive loop.
pub struct IcmpSocket {
    pub(super) family: Family,
    pub(super) socket: Arc<UdpSocket>,
    /// Whether the kernel stamps what this socket receives.
    pub(super) kernel_stamps: bool,
    pub(super) kind: SockType,
    /// Our identifier on raw sockets (random, so two netmon processes differ).
    pub(super) ident: u16,
    pub(super) table: Arc<Table>,
    pub(super) recv: JoinHandle<()>,
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
        let fail = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                OpenError::Denied {
                    family: family.as_str(),
                    detail: e.to_string(),
                }
            } else {
                OpenError::Other {
                    family: family.as_str(),
                    detail: e.to_string(),
                }
            }
        };
        let (kind, raw) = open_socket(family, hint).map_err(fail)?;
        raw.set_nonblocking(true).map_err(fail)?;
        // A raw socket is handed every ICMP message the host gets, and all services share
        // this one: a burst while the receive loop waits for a core must not push out our
        // replies. The kernel caps it at net.core.rmem_max; a smaller buffer only costs that.
        let _ = raw.set_recv_buffer_size(4 << 20);
        let kernel_stamps = rxtime::enable(&raw);
        // The socket registers with the reactor of the current runtime: ours.
        let socket = {
            let _enter = rt.enter();
            UdpSocket::from_std(std::net::UdpSocket::from(raw))
        }
        .map(Arc::new)
        .map_err(fail)?;
        let ident = rand::random();
        let table = Arc::new(Table::default());
        let recv = rt.spawn(recv_loop(socket.clone(), table.clone(), kind, ident));
        let s = IcmpSocket {
            family,
            socket,
            kernel_stamps,
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
            kernel_stamps,
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

    /// Whether the kernel stamps what this socket receives (else RTTs use user-space stamps).
    pub fn kernel_stamps(&self) -> bool {
        self.kernel_stamps
    }

    /// Datagrams received that matched no waiting probe.
    pub fn strays(&self) -> u64 {
        self.table.strays.load(Ordering::Relaxed)
    }
}

pub(super) async fn recv_loop(
    socket: Arc<UdpSocket>,
    table: Arc<Table>,
    kind: SockType,
    ident: u16,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match rxtime::recv_from(&socket, &mut buf).await {
            Ok((n, Some(from), at)) => table.dispatch(&buf[..n], from.ip(), at, kind, ident),
            Ok((_, None, _)) => {}
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
pub(super) fn icmp_runtime() -> Result<Handle, String> {
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
