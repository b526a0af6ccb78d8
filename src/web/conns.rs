//! Connection limits and timeouts: the cap below the file descriptor limit, the longest idle
//! connection closed for a new one at the cap, and accepts that back off while they fail.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long a client gets to finish the TLS handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP/2 streams one connection may have open: each is a request in progress.
pub(super) const MAX_STREAMS: u32 = 32;

/// Longest pause between accept attempts while the process is out of file descriptors.
pub(super) const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long a connection must have been idle before a new one may take its place.
pub(super) const EVICT_QUIET_MS: u64 = 1000;

/// How often a failing accept is logged at most.
pub(super) const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(30);

/// What a client may hold of the web side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (`--web.max-connections`), lowered at start to half the
    /// process's file descriptor limit so the rest stays for the probes.
    pub max_connections: usize,
    /// Time a request's head may take to arrive (`--web.read-header-timeout`).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress and no byte moving
    /// (`--web.idle-timeout`).
    pub idle_timeout: Duration,
}

impl Limits {
    /// The defaults of the flags.
    pub const DEFAULT: Limits = Limits {
        max_connections: 256,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    /// These limits with `max_connections` at most half of `fd_limit` (the soft
    /// `RLIMIT_NOFILE`), and at least one.
    pub fn within_fds(self, fd_limit: u64) -> Limits {
        let half = usize::try_from(fd_limit / 2).unwrap_or(usize::MAX).max(1);
        Limits {
            max_connections: self.max_connections.min(half).max(1),
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The soft limit on open file descriptors of this process, if it can be read.
pub fn fd_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
pub(super) struct Conn {
    /// Milliseconds since [`Conns::epoch`] when a byte last moved or a request ended.
    pub(super) last_io: AtomicU64,
    /// Requests in progress.
    pub(super) requests: AtomicUsize,
    /// Closes the connection.
    pub(super) close: CancellationToken,
}

impl Conn {
    pub(super) fn idle(&self) -> bool {
        self.requests.load(Ordering::SeqCst) == 0
    }
}

/// The open connections: counted against the cap, closed when idle too long, and the
/// longest idle one closed to make room when the cap is reached.
#[derive(Debug)]
pub(super) struct Conns {
    pub(super) epoch: std::time::Instant,
    pub(super) open: Mutex<HashMap<u64, Arc<Conn>>>,
    pub(super) next: AtomicU64,
    pub(super) limits: Limits,
}

impl Conns {
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection, or returns `None` when the cap is reached and every open
    /// connection has a request in progress. Otherwise the connection idle longest is told to
    /// close, so a scraper gets in however many clients sit on connections doing nothing.
    pub(super) fn admit(self: &Arc<Self>) -> Option<ConnGuard> {
        let mut open = self.open();
        let live = open.values().filter(|c| !c.close.is_cancelled()).count();
        if live >= self.limits.max_connections {
            // Only a connection quiet for a while makes room: one just opened has not had its
            // request read yet, and a burst of scrapers must not close each other.
            let quiet_before = self.now_ms().saturating_sub(EVICT_QUIET_MS);
            let oldest = open
                .values()
                .filter(|c| c.idle() && !c.close.is_cancelled())
                .map(|c| (c.last_io.load(Ordering::SeqCst), c))
                .filter(|(at, _)| *at <= quiet_before)
                .min_by_key(|(at, _)| *at)?;
            oldest.1.close.cancel();
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            last_io: AtomicU64::new(self.now_ms()),
            requests: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        open.insert(id, conn.clone());
        Some(ConnGuard {
            conns: self.clone(),
            id,
            conn,
        })
    }

    /// Closes the connections idle for longer than the idle timeout.
    pub(super) fn sweep(&self) {
        let idle_ms = u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        for c in self.open().values() {
            if c.idle() && now.saturating_sub(c.last_io.load(Ordering::SeqCst)) >= idle_ms {
                c.close.cancel();
            }
        }
    }
}

/// A connection's place in [`Conns`], given back when its task ends.
#[derive(Debug)]
pub(super) struct ConnGuard {
    pub(super) conns: Arc<Conns>,
    pub(super) id: u64,
    pub(super) conn: Arc<Conn>,
}

impl ConnGuard {
    pub(super) fn touch(&self) {
        self.conn
            .last_io
            .store(self.conns.now_ms(), Ordering::SeqCst);
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.open().remove(&self.id);
    }
}

/// A request in progress on a connection; while one is, the connection is not idle.
pub(super) struct InRequest(Arc<ConnGuard>);

impl InRequest {
    pub(super) fn new(guard: Arc<ConnGuard>) -> Self {
        guard.conn.requests.fetch_add(1, Ordering::SeqCst);
        InRequest(guard)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.touch();
        self.0.conn.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that records when bytes last moved, for the idle timeout.
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) guard: Arc<ConnGuard>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.guard.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.guard.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.guard.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Backs off while accepting fails, and logs it now and then rather than every time.
#[derive(Debug, Default)]
pub(super) struct AcceptFailures {
    pub(super) backoff: Duration,
    pub(super) last_warned: Option<tokio::time::Instant>,
    pub(super) unlogged: u64,
}

impl AcceptFailures {
    /// Logs `e` if it is time to, and returns how long to wait before the next accept.
    pub(super) fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_EVERY)
        {
            warn!(error = %e, failures = self.unlogged, "accepting a web connection failed; retrying");
            self.last_warned = Some(now);
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
        self.backoff
    }

    pub(super) fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_half_the_file_descriptors() {
        let l = Limits::DEFAULT;
        assert_eq!(l.within_fds(1024).max_connections, 256);
        assert_eq!(l.within_fds(256).max_connections, 128);
        assert_eq!(l.within_fds(1).max_connections, 1);
        assert_eq!(l.within_fds(u64::MAX).max_connections, 256);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_up_to_a_second() {
        let mut f = AcceptFailures::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<Duration> = (0..9).map(|_| f.failed(&e)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[8], MAX_ACCEPT_BACKOFF);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        f.succeeded();
        assert_eq!(f.failed(&e), Duration::from_millis(10));
    }

    fn conns(max: usize) -> Arc<Conns> {
        Arc::new(Conns {
            // Connections opened now are ten seconds into the clock, those set to 0 quiet.
            epoch: std::time::Instant::now() - Duration::from_secs(10),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            limits: Limits {
                max_connections: max,
                ..Limits::DEFAULT
            },
        })
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let c = conns(2);
        let a = c.admit().unwrap();
        let b = c.admit().unwrap();
        // Both just opened: nobody has been quiet long enough to be replaced.
        assert!(c.admit().is_none());
        a.conn.last_io.store(1, Ordering::SeqCst);
        // `b` has been quiet longer still, but has a request in progress.
        let busy = InRequest::new(Arc::new(ConnGuard {
            conns: c.clone(),
            id: u64::MAX,
            conn: b.conn.clone(),
        }));
        b.conn.last_io.store(0, Ordering::SeqCst);
        let _new = c.admit().expect("room made");
        assert!(a.conn.close.is_cancelled());
        assert!(!b.conn.close.is_cancelled());
        drop(busy);
    }
}
