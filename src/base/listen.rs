//! Listening sockets shared by the web server and the echo server.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// How long open connections get to finish when netmon stops.
pub const GRACE: Duration = Duration::from_secs(5);

/// Why a listening socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The listen address is not `HOST:PORT` or `:PORT`.
    #[error("invalid --web.listen-address `{0}`: write `:9855`, `127.0.0.1:9855` or `[::1]:9855`")]
    Address(String),
    /// Binding failed.
    #[error(
        "cannot listen on {addr}: {source} (is another netmon or exporter using this port? choose another with --web.listen-address)"
    )]
    Bind {
        /// The address tried.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `address` (`:PORT` means every interface, IPv6 and IPv4 where possible).
pub async fn bind(address: &str) -> Result<TcpListener, ListenError> {
    let bind_err = |source| ListenError::Bind {
        addr: address.to_string(),
        source,
    };
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| ListenError::Address(address.to_string()))?;
        return match dual_stack(port) {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await.map_err(bind_err),
        };
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|_| ListenError::Address(address.to_string()))?
        .collect();
    let first = addrs
        .first()
        .ok_or_else(|| ListenError::Address(address.to_string()))?;
    TcpListener::bind(first).await.map_err(bind_err)
}

fn dual_stack(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}
