//! The hostile peers of the hostile module: small servers on 127.0.0.1 ephemeral ports that
//! speak their protocol wrongly on purpose. The TCP peers run as tokio tasks on the test's
//! runtime and end when it is dropped; the UDP peers are the test kit's responders, kept in a
//! group that the test drops.

use std::future::Future;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use testkit::pki::{Ca, Leaf};
pub use testkit::udp::{Group, Replies, Responder, now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server on 127.0.0.1 running `handler` for every connection; returns its port.
pub async fn tcp_peer<F, Fut>(handler: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    port
}

/// Reads until the end of a request head (or 8 KiB, or the peer closes); returns what came.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Accepts, reads and never answers; lets go when the prober closes.
pub async fn silent(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Answers a valid response one byte a second.
pub async fn trickle(mut s: TcpStream) {
    read_head(&mut s).await;
    for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" {
        if s.write_all(&[*b]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A 200 whose body never ends (no length: it would end at close, which never comes).
pub async fn endless_body(mut s: TcpStream) {
    read_head(&mut s).await;
    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let chunk = vec![b'x'; 64 * 1024];
    while s.write_all(&chunk).await.is_ok() {}
}

/// `/loop` redirects to itself; `/chain/N` redirects to `/chain/N+1` forever.
pub async fn redirects(mut s: TcpStream) {
    let head = read_head(&mut s).await;
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let location = match path.strip_prefix("/chain/") {
        Some(n) => format!("/chain/{}", n.parse::<u64>().unwrap_or(0) + 1),
        None => "/loop".to_string(),
    };
    let _ = s
        .write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
}

/// Answers whatever comes with bytes that are not HTTP, then closes.
pub async fn garbage(mut s: TcpStream) {
    read_head(&mut s).await;
    let _ = s.write_all(b"\x00\x01\x02 this is not http\r\n\r\n").await;
}

/// Answers the first bytes (for TLS: the ClientHello) with a plain HTTP response.
pub async fn plain_http(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf).await;
    let _ = s
        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
}

/// A TLS server presenting `config`'s certificate and answering `200 ok` if a handshake
/// ever succeeds.
pub async fn tls_peer(config: Arc<rustls::ServerConfig>) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tcp_peer(move |s| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(s).await {
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await
}

/// The certificates of the TLS peers: a test CA (trusted by the probes through `ca_file`)
/// and three bad server configurations.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// A leaf for 127.0.0.1 signed by the CA that expired in 2020.
    pub expired: Arc<rustls::ServerConfig>,
    /// A leaf signed by the CA for `wrong.example` only.
    pub wrong_name: Arc<rustls::ServerConfig>,
    /// A self-signed leaf for 127.0.0.1 (no CA the probe trusts).
    pub self_signed: Arc<rustls::ServerConfig>,
    /// A valid leaf for 127.0.0.1 signed by the CA: the control.
    pub good: Arc<rustls::ServerConfig>,
}

impl Pki {
    /// Generates every certificate.
    pub fn new() -> Pki {
        let ca = Ca::new("netmon hostile test CA");
        let leaf = Leaf::new(&["127.0.0.1"]);
        Pki {
            ca_pem: ca.pem(),
            expired: leaf
                .clone()
                .valid((2019, 1, 1), (2020, 1, 1))
                .signed_by(&ca)
                .server_config(),
            wrong_name: Leaf::new(&["wrong.example"]).signed_by(&ca).server_config(),
            // Its own name: rcgen's default one is the CA's too, and webpki would then try the
            // CA as its issuer and report a bad signature instead of an unknown issuer.
            self_signed: leaf
                .clone()
                .common_name("self-signed 127.0.0.1")
                .self_signed()
                .server_config(),
            good: leaf.signed_by(&ca).server_config(),
        }
    }
}

/// A UDP peer on 127.0.0.1, kept in `group`: `f(n, datagram)` (n counts datagrams from 0)
/// decides the replies. With `other_port`, replies leave from a second socket, i.e. from
/// another source port. Returns its port.
pub fn udp_peer(group: &Group, other_port: bool, f: fn(u64, &[u8]) -> Replies) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = other_port.then(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    group.keep(Responder::on(
        socket,
        sender,
        Arc::new(move |n, datagram: &[u8], _| f(n, datagram)),
    ))
}

/// A DNS response to `query` built from its own bytes, no answers; `tc` sets the truncation
/// bit.
pub fn dns_response(query: &[u8], tc: bool) -> Vec<u8> {
    testkit::dns::echo_response(query, tc)
}

/// An NTP server reply (version 4, mode 4) to `request` with this leap indicator, stratum and
/// reference identifier, answering the request's transmit timestamp with the current time.
pub fn ntp_reply(request: &[u8], leap: u8, stratum: u8, refid: [u8; 4]) -> Vec<u8> {
    let reply = testkit::ntp::Reply {
        leap,
        mode: 4,
        stratum,
        refid,
        offset: 0.0,
    };
    reply.to(request, SystemTime::now()).unwrap_or_default()
}

/// A 200 whose header section never ends.
pub async fn endless_headers(mut s: TcpStream) {
    read_head(&mut s).await;
    if s.write_all(b"HTTP/1.1 200 OK\r\n").await.is_err() {
        return;
    }
    let line = format!("X-Junk: {}\r\n", "a".repeat(1000));
    while s.write_all(line.as_bytes()).await.is_ok() {}
}

/// Promises 1000 body bytes, sends 3 and closes.
pub async fn short_body(mut s: TcpStream) {
    read_head(&mut s).await;
    let _ = s
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
        .await;
}

/// Reads one length-prefixed DNS query over TCP (RFC 1035 §4.2.2).
async fn read_dns_tcp(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    s.read_exact(&mut prefix).await.ok()?;
    let mut q = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    s.read_exact(&mut q).await.ok()?;
    Some(q)
}

/// Over TCP: announces a 100-byte answer, sends 10 bytes and closes.
pub async fn dns_tcp_cut(mut s: TcpStream) {
    if read_dns_tcp(&mut s).await.is_some() {
        let _ = s.write_all(&[0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await;
    }
}

/// Over TCP: answers with responses carrying another id, as fast as it can, until the
/// prober closes.
pub async fn dns_tcp_wrong_id_flood(mut s: TcpStream) {
    let Some(q) = read_dns_tcp(&mut s).await else {
        return;
    };
    let mut r = dns_response(&q, false);
    r[0] ^= 0xff;
    let mut framed = (r.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&r);
    while s.write_all(&framed).await.is_ok() {}
}
