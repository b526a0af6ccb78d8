//! Ports on 127.0.0.1: free ones and closed ones.

use std::net::{TcpListener, UdpSocket};

/// A TCP listener on 127.0.0.1 (a port the kernel picks) and its port; connections queue in
/// the backlog, so a connect succeeds while it lives.
pub fn tcp_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local address").port();
    (l, port)
}

/// A TCP port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    tcp_listener().1
}

/// A UDP port on 127.0.0.1 with nothing bound to it (bound, then released).
pub fn closed_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a UDP socket on 127.0.0.1")
        .port()
}

/// A port on 127.0.0.1 free a moment ago for both TCP and UDP, for servers that listen on
/// both (DNS) or whose transport the test does not choose.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let (l, port) = tcp_listener();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            drop(l);
            return port;
        }
    }
    panic!("no port on 127.0.0.1 free for both TCP and UDP in 100 tries");
}

/// A TCP port on 127.0.0.1 that accepts every connection and closes it at once, in a thread
/// that lives as long as the test process (its only work is blocking in `accept`).
pub fn accepting_port() -> u16 {
    let (l, port) = tcp_listener();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}
