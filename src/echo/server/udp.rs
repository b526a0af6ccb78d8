//! The UDP echo loop on a blocking thread, in batches of `recvmmsg`/`sendmmsg`.

use crate::echo::server::policy::Policy;
use crate::echo::server::policy::Verdict;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use prometheus_client::metrics::counter::Counter;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 32;
/// How often the UDP thread looks at its stop token while idle.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// A received datagram's place in the batch buffers, and where it came from.
struct Received {
    len: usize,
    from: SockaddrStorage,
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// The UDP echo loop: receive a batch, judge each datagram, send the echoed ones back in one
/// call, count everything. Runs until `token` is cancelled.
pub(crate) fn udp_loop(
    socket: &std::net::UdpSocket,
    mut policy: Policy,
    counters: &[Counter; 6],
    max_size: usize,
    token: &CancellationToken,
) {
    let fd = socket.as_raw_fd();
    // One more byte than allowed, so an oversized datagram shows as longer than max_size.
    let slot = max_size + 1;
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; slot]).collect();
    // Separate headers for receiving and sending: sendmmsg points a header's name at the
    // caller's addresses, which must never be written by a later recvmmsg.
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut batch: Vec<Received> = Vec::with_capacity(BATCH);
    let mut echo: Vec<usize> = Vec::with_capacity(BATCH);
    let mut tally = [0u64; 6];
    while !token.is_cancelled() {
        batch.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                .collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => {
                    for m in msgs {
                        match m.address {
                            Some(from) => batch.push(Received { len: m.bytes, from }),
                            None => tally[Verdict::Error.index()] += 1,
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    // ICMP errors queued on the socket and the like: count, don't spin.
                    tally[Verdict::Error.index()] += 1;
                    debug!(error = %e, "echo server receive failed");
                    flush(&mut tally, counters);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let now = Instant::now();
        echo.clear();
        for (i, r) in batch.iter().enumerate() {
            let verdict = match to_std(&r.from) {
                Some(src) => policy.judge(src, r.len, now),
                None => Verdict::Error,
            };
            if verdict == Verdict::Echoed {
                echo.push(i);
            } else {
                tally[verdict.index()] += 1;
            }
        }
        let sent = send_batch(fd, &mut send_headers, &bufs, &batch, &echo);
        tally[Verdict::Echoed.index()] += sent as u64;
        tally[Verdict::Error.index()] += (echo.len() - sent) as u64;
        flush(&mut tally, counters);
    }
}

fn flush(tally: &mut [u64; 6], counters: &[Counter; 6]) {
    for (t, c) in tally.iter_mut().zip(counters) {
        if *t > 0 {
            c.inc_by(*t);
            *t = 0;
        }
    }
}

/// Sends `batch[echo[..]]` back to their sources; returns how many left. A message the kernel
/// refuses is skipped (and counted as an error by the caller) so the rest still go.
fn send_batch(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &[Vec<u8>],
    batch: &[Received],
    echo: &[usize],
) -> usize {
    let slices: Vec<[IoSlice<'_>; 1]> = echo
        .iter()
        .map(|&i| [IoSlice::new(&bufs[i][..batch[i].len])])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = echo.iter().map(|&i| Some(batch[i].from)).collect();
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let mut start = 0;
    let mut sent = 0;
    while start < slices.len() {
        match sendmmsg(
            fd,
            headers,
            slices[start..].iter(),
            &addrs[start..],
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(results) => {
                let n = results.count();
                if n == 0 {
                    break;
                }
                sent += n;
                start += n;
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                let to = addrs[start].as_ref().and_then(to_std);
                debug!(error = %e, to = ?to, "echo server send failed");
                start += 1;
            }
        }
    }
    sent
}
