//! The hostile peers of tests/hostile.rs: small servers on 127.0.0.1 ephemeral ports that
//! speak their protocol wrongly on purpose. Each runs as tokio tasks on the test's runtime and
//! ends when the test's runtime is dropped; every loop is bounded by the peer closing or by
//! that drop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

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

fn server_config(chain: Vec<rcgen::Certificate>, key: &KeyPair) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain.iter().map(|c| c.der().clone()).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Arc::new(config)
}

fn name(common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    dn
}

impl Pki {
    /// Generates every certificate.
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name = name("netmon hostile test CA");
        ca.not_before = rcgen::date_time_ymd(2015, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let signed = |names: &[&str], before: (i32, u8, u8), after: (i32, u8, u8)| {
            let key = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            p.not_before = rcgen::date_time_ymd(before.0, before.1, before.2);
            p.not_after = rcgen::date_time_ymd(after.0, after.1, after.2);
            let cert = p.signed_by(&key, &issuer).unwrap();
            server_config(vec![cert, ca_cert.clone()], &key)
        };
        let expired = signed(&["127.0.0.1"], (2019, 1, 1), (2020, 1, 1));
        let wrong_name = signed(&["wrong.example"], (2020, 1, 1), (2040, 1, 1));
        let good = signed(&["127.0.0.1"], (2020, 1, 1), (2040, 1, 1));
        let self_key = KeyPair::generate().unwrap();
        // Its own name: rcgen's default one is the CA's too, and webpki would then try the CA
        // as its issuer and report a bad signature instead of an unknown issuer.
        let mut self_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        self_params.distinguished_name = name("self-signed 127.0.0.1");
        let self_cert = self_params.self_signed(&self_key).unwrap();
        let self_signed = server_config(vec![self_cert], &self_key);
        Pki {
            ca_pem: ca_cert.pem(),
            expired,
            wrong_name,
            self_signed,
            good,
        }
    }
}

/// What a UDP peer sends back for one datagram: (delay, bytes) pairs, in order.
pub type Replies = Vec<(Duration, Vec<u8>)>;

/// A UDP peer on 127.0.0.1: `f(n, datagram)` (n counts datagrams from 0) decides the replies.
/// With `other_port`, replies leave from a second socket, i.e. from another source port.
pub async fn udp_peer<F>(other_port: bool, f: F) -> u16
where
    F: Fn(u64, &[u8]) -> Replies + Send + Sync + 'static,
{
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = socket.local_addr().unwrap().port();
    let sender = if other_port {
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    } else {
        socket.clone()
    };
    let seen = AtomicU64::new(0);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let i = seen.fetch_add(1, Ordering::Relaxed);
            for (delay, bytes) in f(i, &buf[..n]) {
                send_later(sender.clone(), from, delay, bytes);
            }
        }
    });
    port
}

fn send_later(socket: Arc<UdpSocket>, to: SocketAddr, delay: Duration, bytes: Vec<u8>) {
    if delay.is_zero() {
        let _ = socket.try_send_to(&bytes, to);
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = socket.send_to(&bytes, to).await;
    });
}

/// One reply, now.
pub fn now(bytes: Vec<u8>) -> Replies {
    vec![(Duration::ZERO, bytes)]
}

/// A DNS response to `query` built from its own bytes: QR set, rcode NOERROR, the question
/// (and EDNS OPT) echoed, no answers. `tc` sets the truncation bit.
pub fn dns_response(query: &[u8], tc: bool) -> Vec<u8> {
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

/// An NTP timestamp (seconds since 1900, 32.32 fixed point) of `t`.
fn ntp_timestamp(t: SystemTime) -> [u8; 8] {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let secs = (d.as_secs() + 2_208_988_800) as u32;
    let frac = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..].copy_from_slice(&frac.to_be_bytes());
    b
}

/// An NTP server reply (version 4, mode 4) to `request` with this leap indicator, stratum and
/// reference identifier, answering the request's transmit timestamp with the current time.
pub fn ntp_reply(request: &[u8], li: u8, stratum: u8, refid: [u8; 4]) -> Vec<u8> {
    let now = ntp_timestamp(SystemTime::now());
    let mut r = vec![0u8; 48];
    r[0] = (li << 6) | (4 << 3) | 4;
    r[1] = stratum;
    r[2] = 6;
    r[3] = 0xec;
    r[12..16].copy_from_slice(&refid);
    r[16..24].copy_from_slice(&now);
    if request.len() >= 48 {
        r[24..32].copy_from_slice(&request[40..48]);
    }
    r[32..40].copy_from_slice(&now);
    r[40..48].copy_from_slice(&now);
    r
}

/// The RFC 1071 checksum.
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let word = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMPv4 message of `kind` with identifier, sequence and payload, its checksum right.
pub fn icmp_message(kind: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
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
