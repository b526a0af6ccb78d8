//! A DNS server on loopback (UDP and TCP on one port) answering as a closure decides, and the
//! few RFC 1035 pieces a test needs to answer a query by hand.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::udp::{Replies, Responder};

/// Which transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram.
    Udp,
    /// A length-prefixed message on a TCP connection (RFC 1035 §4.2.2).
    Tcp,
}

/// How a [`Server`] answers one query: replies with their delays, possibly none.
pub type Handler = dyn Fn(&[u8], Transport) -> Replies + Send + Sync;

/// A DNS server that stops when dropped.
pub struct Server {
    /// The address it listens on, for UDP and TCP alike.
    pub addr: SocketAddr,
    udp: Responder,
    stop: Arc<AtomicBool>,
    tcp: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on 127.0.0.1, a port free for both UDP and TCP.
    pub fn start(handler: impl Fn(&[u8], Transport) -> Replies + Send + Sync + 'static) -> Server {
        Server::on(IpAddr::from([127, 0, 0, 1]), 0, handler)
            .expect("a port on 127.0.0.1 free for both UDP and TCP")
    }

    /// Listens on `ip`:`port` (0: one free for both transports); an error when the address
    /// cannot be bound (no IPv6 loopback, or the port is taken).
    pub fn on(
        ip: IpAddr,
        port: u16,
        handler: impl Fn(&[u8], Transport) -> Replies + Send + Sync + 'static,
    ) -> std::io::Result<Server> {
        let (udp, tcp) = bind_both(ip, port)?;
        let addr = udp.local_addr()?;
        let handler: Arc<Handler> = Arc::new(handler);
        let for_udp = handler.clone();
        let udp = Responder::on(
            udp,
            None,
            Arc::new(move |_, query: &[u8], _| for_udp(query, Transport::Udp)),
        );
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true)?;
        let stopped = stop.clone();
        let tcp = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match tcp.accept() {
                    Ok((s, _)) => {
                        let handler = handler.clone();
                        let stopped = stopped.clone();
                        std::thread::spawn(move || serve_tcp(s, &*handler, &stopped));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Server {
            addr,
            udp,
            stop,
            tcp: Some(tcp),
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many datagrams (UDP queries) arrived so far.
    pub fn udp_queries(&self) -> u64 {
        self.udp.received()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.tcp.take() {
            let _ = t.join();
        }
    }
}

fn bind_both(ip: IpAddr, port: u16) -> std::io::Result<(UdpSocket, TcpListener)> {
    if port != 0 {
        return Ok((UdpSocket::bind((ip, port))?, TcpListener::bind((ip, port))?));
    }
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0))?;
        match TcpListener::bind((ip, udp.local_addr()?.port())) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

fn serve_tcp(mut s: TcpStream, handler: &Handler, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    while !stop.load(Ordering::SeqCst) {
        let mut prefix = [0u8; 2];
        if s.read_exact(&mut prefix).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        for (delay, reply) in handler(&msg, Transport::Tcp) {
            std::thread::sleep(delay);
            let Ok(len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if s.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// The question of a query, read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The message id.
    pub id: u16,
    /// The name asked for, lower case, dotted, without the final dot (`a.test`).
    pub name: String,
    /// The record type asked for (1 = A, 16 = TXT, 28 = AAAA).
    pub qtype: u16,
    /// Whether recursion was desired.
    pub rd: bool,
    header_and_question: Vec<u8>,
}

/// Record type A.
pub const A: u16 = 1;
/// Response code NOERROR.
pub const NOERROR: u8 = 0;
/// Response code SERVFAIL.
pub const SERVFAIL: u8 = 2;
/// Response code NXDOMAIN.
pub const NXDOMAIN: u8 = 3;

impl Query {
    /// Reads a one-question query; `None` for anything else.
    pub fn parse(q: &[u8]) -> Option<Query> {
        if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 || q[2] & 0x80 != 0 {
            return None;
        }
        let mut labels = Vec::new();
        let mut i = 12;
        loop {
            let len = usize::from(*q.get(i)?);
            i += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
            i += len;
        }
        let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
        q.get(i + 3)?;
        Some(Query {
            id: u16::from_be_bytes([q[0], q[1]]),
            name: labels.join("."),
            qtype,
            rd: q[2] & 0x01 != 0,
            header_and_question: q[..i + 4].to_vec(),
        })
    }

    /// A response with `rcode` and one A record per address in `answers` (only for an A
    /// question: other types get no records), each with this TTL; recursion available.
    pub fn answer(&self, rcode: u8, answers: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
        let answers = if self.qtype == A { answers } else { &[] };
        let mut r = self.header_and_question.clone();
        r[2] = 0x80 | (r[2] & 0x79); // QR, the query's opcode and RD
        r[3] = 0x80 | (rcode & 0x0f); // RA
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        r[8..12].fill(0);
        for ip in answers {
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]); // the question's name, A, IN
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4]);
            r.extend_from_slice(&ip.octets());
        }
        r
    }
}

/// A response to `query` built from its own bytes: QR set, rcode NOERROR, the question (and
/// any EDNS OPT record) echoed, no answers. `tc` sets the truncation bit.
pub fn echo_response(query: &[u8], tc: bool) -> Vec<u8> {
    let mut r = query.to_vec();
    if r.len() >= 12 {
        r[2] |= 0x80;
        if tc {
            r[2] |= 0x02;
        }
        r[3] &= 0xf0;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a.test` A, id 0x1234, RD.
    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        q
    }

    #[test]
    fn a_query_is_read_and_answered() {
        let q = Query::parse(&query()).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype, q.rd),
            (0x1234, "a.test", A, true)
        );
        let r = q.answer(NOERROR, &[Ipv4Addr::new(192, 0, 2, 1)], 60);
        assert_eq!(&r[..4], &[0x12, 0x34, 0x81, 0x80]);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[192, 0, 2, 1]);
        assert_eq!(Query::parse(&r), None, "a response is not a query");
    }

    #[test]
    fn the_server_answers_over_udp_and_tcp() {
        let s = Server::start(|q, _| {
            let q = Query::parse(q).unwrap();
            crate::udp::now(q.answer(NXDOMAIN, &[], 0))
        });
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(&query(), s.addr).unwrap();
        let mut buf = [0u8; 512];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(buf[3] & 0x0f, NXDOMAIN);
        assert_eq!(n, query().len());
        let mut t = TcpStream::connect(s.addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let q = query();
        t.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        t.write_all(&q).unwrap();
        let mut prefix = [0u8; 2];
        t.read_exact(&mut prefix).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes(prefix)), q.len());
        assert_eq!(s.udp_queries(), 1);
    }
}
