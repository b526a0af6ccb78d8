//! The TCP echo service: one task per connection, bounded in count, buffer and idle time.

use crate::echo::server::metrics::Metrics;
use crate::echo::settings::Settings;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// TCP: connections open at once at most.
const TCP_MAX_CONNECTIONS: usize = 256;
/// TCP: a connection silent this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// TCP: the one buffer each connection has.
const TCP_BUFFER: usize = 16 * 1024;

/// Accepts TCP connections until `token` is cancelled; each is echoed by its own task.
pub(crate) async fn tcp_loop(
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
