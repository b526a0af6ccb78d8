//! The `/metrics` encoder: encodes the registry on a thread of its own, gzips the text there
//! when a scrape asks for it, and shares both among the scrapes that arrive together.
//!
//! `web` calls [`Encoder::encode`] once per scrape; everything CPU-heavy a scrape costs
//! (walking every family, compressing megabytes of text) runs here, never on an async worker.

use std::fmt;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

/// Why a scrape got no encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A collector failed to write its series.
    #[error("encoding the metrics failed")]
    Format,
    /// More encodings are waiting than the encoder queues.
    #[error("the metrics encoder is busy")]
    Busy,
    /// The encoding thread is gone.
    #[error("the metrics encoder has stopped")]
    Stopped,
}

/// What a scrape gets: the body to send and whether it is gzipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// The exposition, gzipped when `gzip` is true.
    pub body: Bytes,
    /// Whether `body` is gzipped (`Content-Encoding: gzip`).
    pub gzip: bool,
}

/// One encoding's bodies, shared by every scrape that joined it.
#[derive(Debug, Clone)]
struct Bodies {
    plain: Bytes,
    /// Made only when a scrape that joined asked for gzip.
    gzip: Option<Bytes>,
}

type Encoded = Result<Bodies, EncodeError>;
type PendingEncoding = Shared<BoxFuture<'static, Encoded>>;

/// One encoding asked of the thread.
struct Job {
    openmetrics: bool,
    done: tokio::sync::oneshot::Sender<Encoded>,
}

/// The encoding that scrapes may still join: queued, not yet begun. The thread takes it out of
/// its slot, under the slot's lock, when it begins; so a scrape that finds it there can still
/// ask for gzip, and one that finds the slot empty queues the next encoding.
struct Queued {
    gzip: bool,
    pending: PendingEncoding,
}

/// One slot per format (Prometheus text, OpenMetrics).
type Slots = Arc<[Mutex<Option<Queued>>; 2]>;

/// Encodes the registry for `/metrics` on a thread of its own, and lets the scrapes that
/// arrive together share one encoding and one compression.
///
/// Its own thread, because tokio's blocking pool is shared: anything else queued there (a
/// burst of bcrypt checks, say) would delay a scrape, and a scrape's encoding would delay them.
/// A scrape joins the encoding queued for its format if that one has not begun, so every
/// scrape sees series read after it arrived, and any number of simultaneous scrapes cost one
/// encoding, at most one gzip of it, and one buffer each, handed out by reference. After an
/// encoding the thread rests as long as it worked, so scrapes back to back take at most half a
/// core from the probes.
pub struct Encoder {
    jobs: std::sync::mpsc::SyncSender<Job>,
    slots: Slots,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

/// Encodings waiting for the thread at most: one per format is all the sharing needs.
const ENCODE_QUEUE: usize = 4;

/// The longest rest between two encodings.
const MAX_REST: Duration = Duration::from_millis(500);

/// The gzip level of `/metrics`. Exposition text is repetitive (the same label names and
/// values on every line), so the fastest level already shrinks it ~12×; level 3 costs ~3× the
/// CPU for ~18% fewer bytes (BENCHMARKS.md, "Metrics encoding").
pub const GZIP_LEVEL: u32 = 1;

/// `body` gzipped at [`GZIP_LEVEL`]. Writing into a `Vec` does not fail; should the
/// compressor report an error all the same, the scrape gets the plain text.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::new(GZIP_LEVEL),
    );
    out.write_all(body)?;
    out.finish()
}

impl Encoder {
    /// Starts the encoding thread; `encode(openmetrics)` makes one exposition. Called inside
    /// a runtime, the thread enters it, so collectors can read that runtime.
    pub(super) fn spawn<F>(encode: F) -> std::io::Result<Encoder>
    where
        F: Fn(bool) -> Result<String, fmt::Error> + Send + 'static,
    {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(ENCODE_QUEUE);
        let slots: Slots = Arc::new([Mutex::new(None), Mutex::new(None)]);
        let taken = slots.clone();
        let runtime = tokio::runtime::Handle::try_current().ok();
        std::thread::Builder::new()
            .name("metrics-encode".into())
            .spawn(move || {
                let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                // Ends when the encoder, and with it the sender, is dropped.
                while let Ok(job) = rx.recv() {
                    // From here on no scrape joins this encoding, so whether any asked for
                    // gzip is settled.
                    let gzip = taken[usize::from(job.openmetrics)]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take()
                        .is_some_and(|q| q.gzip);
                    let began = std::time::Instant::now();
                    let bodies = encode(job.openmetrics)
                        .map_err(|_| EncodeError::Format)
                        .map(|text| Bodies {
                            gzip: gzip
                                .then(|| self::gzip(text.as_bytes()).ok())
                                .flatten()
                                .map(Bytes::from),
                            plain: Bytes::from(text),
                        });
                    let _ = job.done.send(bodies);
                    std::thread::sleep(began.elapsed().min(MAX_REST));
                }
            })?;
        Ok(Encoder { jobs, slots })
    }

    /// The registry in the Prometheus text format (0.0.4) or OpenMetrics, gzipped if `gzip`.
    pub async fn encode(&self, openmetrics: bool, gzip: bool) -> Result<Encoding, EncodeError> {
        let pending = {
            let mut slot = self.slots[usize::from(openmetrics)]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match slot.as_mut() {
                Some(q) => {
                    q.gzip |= gzip;
                    q.pending.clone()
                }
                None => {
                    let (done, rx) = tokio::sync::oneshot::channel();
                    let job = Job { openmetrics, done };
                    self.jobs.try_send(job).map_err(|e| match e {
                        std::sync::mpsc::TrySendError::Full(_) => EncodeError::Busy,
                        std::sync::mpsc::TrySendError::Disconnected(_) => EncodeError::Stopped,
                    })?;
                    let pending = rx
                        .map(|r| r.unwrap_or(Err(EncodeError::Stopped)))
                        .boxed()
                        .shared();
                    *slot = Some(Queued {
                        gzip,
                        pending: pending.clone(),
                    });
                    pending
                }
            }
        };
        let bodies = pending.await?;
        Ok(match bodies.gzip {
            Some(body) if gzip => Encoding { body, gzip: true },
            _ => Encoding {
                body: bodies.plain,
                gzip: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::io::Read as _;

    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_scrapes_share_one_encoding() {
        let m = Arc::new(Metrics::new());
        let encoder = Encoder::start(m).unwrap();
        let bodies =
            futures_util::future::join_all((0..200).map(|_| encoder.encode(false, false))).await;
        let first = bodies[0].as_ref().unwrap().body.clone();
        assert!(first.starts_with(b"# HELP"), "{first:?}");
        // The first scrape may begin an encoding alone; every later one joins the next.
        let distinct: std::collections::HashSet<*const u8> = bodies
            .iter()
            .map(|b| b.as_ref().unwrap().body.as_ptr())
            .collect();
        assert!(distinct.len() <= 2, "{} encodings", distinct.len());
        let text = String::from_utf8(first.to_vec()).unwrap();
        assert!(text.contains("netmon_runtime_tasks"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_gzip_scrapes_share_one_compression() {
        let m = Arc::new(Metrics::new());
        let encoder = Encoder::start(m).unwrap();
        // Half ask for gzip, half do not; all of them join at most two encodings.
        let bodies =
            futures_util::future::join_all((0..200).map(|i| encoder.encode(false, i % 2 == 1)))
                .await;
        let mut zipped = std::collections::HashSet::new();
        for (i, b) in bodies.iter().enumerate() {
            let b = b.as_ref().unwrap();
            if i % 2 == 1 && b.gzip {
                zipped.insert(b.body.as_ptr());
                assert!(gunzip(&b.body).starts_with("# HELP"));
            } else {
                assert!(!b.gzip, "scrape {i} did not ask for gzip");
                assert!(b.body.starts_with(b"# HELP"));
            }
        }
        assert!(
            (1..=2).contains(&zipped.len()),
            "{} compressions",
            zipped.len()
        );
    }

    #[tokio::test]
    async fn a_gzipped_scrape_holds_the_same_series_as_a_plain_one() {
        let m = Arc::new(Metrics::new());
        let s = m.service(vec![
            ("host".into(), "h".into()),
            ("protocol".into(), "tcp".into()),
            ("service".into(), "tcp:1".into()),
        ]);
        s.up.set(1.0);
        let encoder = Encoder::start(m.clone()).unwrap();
        let zipped = encoder.encode(false, true).await.unwrap();
        assert!(zipped.gzip);
        let plain = encoder.encode(false, false).await.unwrap();
        assert!(!plain.gzip);
        let series = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("netmon_up"))
                .map(String::from)
                .collect()
        };
        let text = gunzip(&zipped.body);
        assert_eq!(series(&text), series(&String::from_utf8_lossy(&plain.body)));
        assert!(zipped.body.len() < text.len() / 3, "{}", zipped.body.len());
        let om = encoder.encode(true, true).await.unwrap();
        assert!(gunzip(&om.body).ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn a_scrape_after_another_sees_a_new_encoding() {
        let m = Arc::new(Metrics::new());
        let encoder = Encoder::start(m.clone()).unwrap();
        let before = encoder.encode(false, false).await.unwrap().body;
        let s = m.service(vec![
            ("host".into(), "later".into()),
            ("protocol".into(), "tcp".into()),
            ("service".into(), "tcp:1".into()),
        ]);
        s.up.set(1.0);
        let after = encoder.encode(false, false).await.unwrap().body;
        let (before, after) = (
            String::from_utf8_lossy(&before),
            String::from_utf8_lossy(&after),
        );
        assert!(!before.contains("host=\"later\""), "{before}");
        assert!(after.contains("host=\"later\""), "{after}");
        let om = encoder.encode(true, false).await.unwrap().body;
        assert!(om.ends_with(b"# EOF\n"));
    }
}
