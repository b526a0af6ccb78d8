//! The UDP socket every request/response probe starts from.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

use crate::base::outcome::Failure;

/// A UDP socket bound to an ephemeral port of `addr`'s family and connected to `addr`:
/// connected, so the kernel drops datagrams from anyone else and reports ICMP errors.
pub async fn connected(addr: SocketAddr) -> Result<UdpSocket, Failure> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| Failure::io("bind udp socket", &e))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| Failure::io(&format!("connect udp socket to {addr}"), &e))?;
    Ok(socket)
}
