//! A UDP server on loopback that answers each datagram as a closure decides, in a thread.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to send back for one datagram: (delay, bytes) pairs, sent in order of their delays.
pub type Replies = Vec<(Duration, Vec<u8>)>;

/// One reply, now.
pub fn now(bytes: Vec<u8>) -> Replies {
    vec![(Duration::ZERO, bytes)]
}

/// How a [`Responder`] answers: `(n, datagram, from)`, where `n` counts datagrams from 0.
pub type Handler = dyn Fn(u64, &[u8], SocketAddr) -> Replies + Send + Sync;

/// A UDP server that stops when dropped.
pub struct Responder {
    /// The address it listens on.
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Listens on 127.0.0.1 (a port the kernel picks).
    pub fn start(
        handler: impl Fn(u64, &[u8], SocketAddr) -> Replies + Send + Sync + 'static,
    ) -> Responder {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        Responder::on(socket, None, Arc::new(handler))
    }

    /// Serves on `socket`; replies leave from `sender` when given (another source port), from
    /// `socket` otherwise.
    pub fn on(socket: UdpSocket, sender: Option<UdpSocket>, handler: Arc<Handler>) -> Responder {
        let addr = socket.local_addr().expect("local address");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let sender = match sender {
            Some(s) => s,
            None => socket.try_clone().expect("clone the socket"),
        };
        let late_sender = sender.try_clone().expect("clone the socket");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
        let (stop_rx, seen) = (stop.clone(), received.clone());
        let receiver = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop_rx.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let at = Instant::now();
                let i = seen.fetch_add(1, Ordering::SeqCst);
                for (delay, bytes) in handler(i, &buf[..n], from) {
                    if delay.is_zero() {
                        let _ = sender.send_to(&bytes, from);
                    } else if tx.send((at + delay, bytes, from)).is_err() {
                        return;
                    }
                }
            }
        });
        let stop_tx = stop.clone();
        let delayed = std::thread::spawn(move || {
            // Replies wait here in arrival order, which is also their order of delay for a
            // fixed delay: the common case of a slow server.
            let mut pending: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
            while !stop_tx.load(Ordering::SeqCst) {
                let wait = pending
                    .iter()
                    .map(|(due, ..)| due.saturating_duration_since(Instant::now()))
                    .min()
                    .unwrap_or(Duration::from_millis(50))
                    .min(Duration::from_millis(50));
                if let Ok(item) = rx.recv_timeout(wait) {
                    pending.push(item);
                }
                let now = Instant::now();
                pending.retain(|(due, bytes, to)| {
                    if *due > now {
                        return true;
                    }
                    let _ = late_sender.send_to(bytes, to);
                    false
                });
            }
        });
        Responder {
            addr,
            received,
            stop,
            threads: vec![receiver, delayed],
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many datagrams arrived so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Responders kept alive together until the group is dropped, for tests that start many and
/// only need their ports.
#[derive(Default)]
pub struct Group(std::sync::Mutex<Vec<Responder>>);

impl Group {
    /// Keeps `r` and returns its port.
    pub fn keep(&self, r: Responder) -> u16 {
        let port = r.port();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_their_delay_and_can_leave_from_another_port() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = sender.local_addr().unwrap();
        let r = Responder::on(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            Some(sender),
            Arc::new(|n, d: &[u8], _| {
                vec![
                    (Duration::from_millis(150), format!("late {n}").into_bytes()),
                    (Duration::ZERO, d.to_vec()),
                ]
            }),
        );
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sent = Instant::now();
        c.send_to(b"ping", r.addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], other));
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late 0");
        assert!(sent.elapsed() >= Duration::from_millis(150));
        assert_eq!(r.received(), 1);
    }
}
