//! Receive times from the kernel: a datagram is stamped when the kernel queued it
//! (`SO_TIMESTAMPNS`), not when our task got round to reading it.
//!
//! A user-space stamp taken after `recv` includes the wake-up of the receiving thread, which on
//! loopback is most of the round trip (netmon read 4x fping's RTT before this). The kernel's
//! stamp is on the real-time clock while our send stamps are monotonic [`Instant`]s, so each
//! kernel stamp is mapped onto the monotonic clock by its age: the real-time clock is read
//! right after the receive, and the datagram's age (now minus the kernel stamp) is taken off
//! the monotonic "now". A clock step between the two reads (microseconds apart) could skew
//! one sample; an age that is negative or above a second is not believed and the user-space
//! stamp is used instead, as it is on a socket or kernel without the option. The kernel turns
//! stamping on lazily the first time any socket asks, so the first datagrams after start-up
//! may be stamped when read: no better than the fallback, never worse.

use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The longest a datagram may have waited in the socket's queue for its kernel stamp to be
/// believed.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Asks the kernel to stamp every datagram `socket` receives. Returns whether it will; when
/// not, receives fall back to user-space stamps.
pub fn enable(socket: &impl AsFd) -> bool {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).is_ok()
}

/// Receives one datagram if one is queued (`WouldBlock` otherwise), with its sender and the
/// time it arrived.
pub fn try_recv_from(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Instant)> {
    socket.try_io(Interest::READABLE, || recv_now(socket, buf))
}

/// Waits for one datagram; returns its length, its sender and the time it arrived.
pub async fn recv_from(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Instant)> {
    socket
        .async_io(Interest::READABLE, || recv_now(socket, buf))
        .await
}

/// One non-blocking `recvmsg` with room for the timestamp.
fn recv_now(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Instant)> {
    let mut space = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let user = Instant::now();
    let mut at = user;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                at = monotonic(ts, user, SystemTime::now());
            }
        }
    }
    let from = msg.address.as_ref().and_then(to_socket_addr);
    Ok((msg.bytes, from, at))
}

/// The arrival time of a message whose kernel stamp (`SCM_TIMESTAMPNS`) is `ts`, read by a
/// receive that returned at `user`: the stamp on the monotonic clock where it can be believed,
/// else `user`.
pub fn stamped(ts: TimeSpec, user: Instant) -> Instant {
    monotonic(ts, user, SystemTime::now())
}

/// Maps kernel stamp `ts` (real-time clock) onto the monotonic clock, given the monotonic and
/// real-time clocks read together just after the receive.
fn monotonic(ts: TimeSpec, now: Instant, now_real: SystemTime) -> Instant {
    let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec())) else {
        return now;
    };
    let Some(kernel) = UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) else {
        return now;
    };
    match now_real.duration_since(kernel) {
        Ok(age) if age <= MAX_AGE => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(SocketAddr::V6((*v6).into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(d: Duration) -> TimeSpec {
        TimeSpec::new(d.as_secs() as i64, i64::from(d.subsec_nanos()))
    }

    #[test]
    fn a_stamp_is_moved_back_by_its_age_and_only_a_believable_one() {
        let now = Instant::now();
        let real = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let since = |t: SystemTime| spec(t.duration_since(UNIX_EPOCH).unwrap());
        let age = Duration::from_micros(150);
        assert_eq!(monotonic(since(real - age), now, real), now - age);
        // From the future (a clock step backwards) or too old (a step forwards): not believed.
        assert_eq!(
            monotonic(since(real + Duration::from_millis(1)), now, real),
            now
        );
        assert_eq!(
            monotonic(since(real - Duration::from_secs(5)), now, real),
            now
        );
        assert_eq!(monotonic(TimeSpec::new(-1, 0), now, real), now);
    }

    #[tokio::test]
    async fn loopback_datagrams_carry_the_kernel_stamp() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(enable(&rx), "SO_TIMESTAMPNS is refused on this kernel");
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 16];
        // The kernel turns receive stamping on lazily (a deferred static key) the first time a
        // socket asks; until then it stamps when the datagram is read. A few tries.
        let mut stamped_at_arrival = false;
        for _ in 0..5 {
            tx.send_to(b"x", rx.local_addr().unwrap()).await.unwrap();
            // On loopback the datagram is queued before `send_to` returns.
            let sent = Instant::now();
            // Read late on purpose: the stamp must still say when the datagram arrived.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let reading = Instant::now();
            let (n, from, at) = recv_from(&rx, &mut buf).await.unwrap();
            assert_eq!(n, 1);
            assert_eq!(from, Some(tx.local_addr().unwrap()));
            if reading.duration_since(at) >= Duration::from_millis(45) {
                // A few microseconds of slack for mapping the stamp onto the monotonic clock.
                assert!(
                    at <= sent + Duration::from_millis(1),
                    "stamped {:?} after the send returned",
                    at.saturating_duration_since(sent)
                );
                stamped_at_arrival = true;
                break;
            }
        }
        assert!(stamped_at_arrival, "every datagram was stamped when read");
        assert!(
            matches!(try_recv_from(&rx, &mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        );
    }
}
