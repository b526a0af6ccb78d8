//! The query's round trip: a connected UDP socket, or a TCP stream with the RFC 1035
//! §4.2.2 two-byte length prefix; and the check that a received message answers our query.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::base::udp;
use crate::base::outcome::{Failure, Reason};

/// The largest UDP payload we read; a datagram cannot be larger.
const UDP_BUFFER: usize = 64 * 1024;

/// Decides what a received message is: ours (`Some`), someone else's (`None`: ignored), or a
/// protocol error.
pub(crate) fn accept(
    bytes: &[u8],
    id: u16,
    query: &Query,
    from: SocketAddr,
) -> Result<Option<Message>, Failure> {
    let msg = Message::from_vec(bytes).map_err(|e| {
        Failure::new(
            Reason::Protocol,
            format!(
                "malformed dns response from {from} ({} bytes): {e}",
                bytes.len()
            ),
        )
    })?;
    if msg.metadata.id != id {
        tracing::debug!(%from, got = msg.metadata.id, want = id, "ignoring dns message with another id");
        return Ok(None);
    }
    if msg.metadata.message_type != MessageType::Response {
        return Err(Failure::new(
            Reason::Protocol,
            format!("{from} sent a query, not a response, with our id"),
        ));
    }
    // Servers may leave the question out of an error response (FORMERR, some SERVFAIL), but a
    // question that is there must be ours (RFC 5452 §9.1).
    if !msg.queries.is_empty() && (msg.queries.len() != 1 || msg.queries[0] != *query) {
        return Err(Failure::new(
            Reason::Protocol,
            format!(
                "{from} answered another question: {}",
                msg.queries
                    .iter()
                    .map(|q| format!("{} {}", q.name(), q.query_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(Some(msg))
}

/// Sends `wire` over a connected UDP socket and waits for the response with `id`.
pub(super) async fn udp_exchange(
    addr: SocketAddr,
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<(Message, Duration), Failure> {
    let socket = udp::connected(addr).await?;
    let start = Instant::now();
    socket
        .send(wire)
        .await
        .map_err(|e| Failure::io(&format!("send query to {addr}"), &e))?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| Failure::io(&format!("receive from {addr}"), &e))?;
        let rtt = start.elapsed();
        if let Some(msg) = accept(&buf[..n], id, query, addr)? {
            return Ok((msg, rtt));
        }
    }
}

/// Connects to the first address that accepts, sends `wire` with its length prefix and reads
/// length-prefixed messages until the one with `id`.
pub(super) async fn tcp_exchange(
    addrs: &[SocketAddr],
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<(Message, Duration), Failure> {
    let mut last = None;
    let mut connected = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                connected = Some((s, addr));
                break;
            }
            Err(e) => last = Some(Failure::io(&format!("connect to {addr}"), &e)),
        }
    }
    let Some((mut stream, addr)) = connected else {
        return Err(last.unwrap_or_else(|| Failure::new(Reason::Dns, "no address to connect to")));
    };
    let len = u16::try_from(wire.len())
        .map_err(|_| Failure::new(Reason::Protocol, "query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    let start = Instant::now();
    stream
        .write_all(&framed)
        .await
        .map_err(|e| Failure::io(&format!("send query to {addr}"), &e))?;
    loop {
        let mut prefix = [0u8; 2];
        read_exact(&mut stream, &mut prefix, addr, "length prefix").await?;
        let len = usize::from(u16::from_be_bytes(prefix));
        if len == 0 {
            return Err(Failure::new(
                Reason::Protocol,
                format!("{addr} sent a zero-length dns message"),
            ));
        }
        // At most 65535 bytes: the prefix is the bound.
        let mut buf = vec![0u8; len];
        read_exact(&mut stream, &mut buf, addr, "message").await?;
        let rtt = start.elapsed();
        if let Some(msg) = accept(&buf, id, query, addr)? {
            return Ok((msg, rtt));
        }
    }
}

async fn read_exact(
    stream: &mut TcpStream,
    buf: &mut [u8],
    addr: SocketAddr,
    what: &str,
) -> Result<(), Failure> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Failure::new(
            Reason::Protocol,
            format!("{addr} closed the connection in the middle of the answer ({what})"),
        )),
        Err(e) => Err(Failure::io(&format!("read {what} from {addr}"), &e)),
    }
}

