//! A session: numbered messages sent on a schedule, every reply classified once.

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::base::round::Round;
use crate::base::rxtime;
use crate::echo::wire::{self, Message};

/// How a session runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Messages to send (at least 1).
    pub count: u64,
    /// Time between sends.
    pub interval: Duration,
    /// Message size in bytes, `wire::HEADER_LEN..=wire::MAX_LEN`.
    pub size: usize,
    /// How long a reply may take before it counts as lost (and, if it comes, as late).
    pub wait: Duration,
}

/// What happened to one datagram or one send, as it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reply identical to its request.
    Reply {
        /// Its sequence number.
        seq: u64,
        /// Its length.
        bytes: usize,
        /// Round-trip time.
        rtt: Duration,
        /// Already answered before: a duplicate (not counted as received again).
        duplicate: bool,
        /// A later message was answered first.
        reordered: bool,
        /// It came after its wait: counted as lost.
        late: bool,
    },
    /// A reply whose bytes differ from every request we could tie it to.
    Corrupted {
        /// The request it claims to answer, if its header could be read.
        seq: Option<u64>,
        /// Its length.
        bytes: usize,
        /// Time since that request, when known.
        rtt: Option<Duration>,
        /// What is wrong with it.
        detail: String,
    },
    /// The peer's host answered with ICMP port unreachable.
    Refused,
}

/// A session's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Messages sent.
    pub sent: u64,
    /// Intact replies in time, one per message at most.
    pub received: u64,
    /// RTT of each intact reply in time, in send order.
    pub rtts: Vec<Duration>,
    /// Extra copies of replies already received.
    pub duplicates: u64,
    /// Replies that came after an later message's reply.
    pub reordered: u64,
    /// Intact replies that came after their wait.
    pub late: u64,
    /// Replies whose bytes differ from what was sent.
    pub corrupted: u64,
    /// ICMP port unreachable errors seen.
    pub refused: u64,
    /// Wall time of the session.
    pub elapsed: Duration,
}

impl Report {
    /// The packet counts and RTTs for the shared packet metrics.
    pub fn round(&self) -> Round {
        Round {
            sent: self.sent,
            rtts: self.rtts.clone(),
        }
    }

    /// True when every message came back exactly once, intact and in time. Reordering alone
    /// is normal for UDP and is reported, not failed.
    pub fn all_intact(&self) -> bool {
        self.sent > 0
            && self.received == self.sent
            && self.duplicates == 0
            && self.corrupted == 0
            && self.late == 0
            && self.refused == 0
    }
}

/// A session failed in a way that is not a property of the replies.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The options cannot make a message.
    #[error(transparent)]
    Encode(#[from] wire::EncodeError),
    /// Sending or receiving failed (other than a refusal, which is counted).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// What is kept of a sent message: enough to rebuild its bytes (the padding is a fixed
/// pattern), so a long session holds 24 bytes per message, not the message.
struct Sent {
    sent_ns: u64,
    at: Instant,
    answered: bool,
}

/// One session: a random nonce and the messages sent so far.
#[derive(Debug)]
pub struct Session {
    options: SessionOptions,
    nonce: u64,
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sent")
            .field("sent_ns", &self.sent_ns)
            .field("answered", &self.answered)
            .finish()
    }
}

/// Whether an I/O error is the ICMP port unreachable of a connected UDP socket.
fn is_refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionRefused
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("byte {i} differs"),
        None => format!("{} bytes instead of {}", b.len(), a.len()),
    }
}

/// RTT from our own clock, never reported as 0 (a 0 would read as "no measurement").
fn rtt(from: Instant, to: Instant) -> Duration {
    to.saturating_duration_since(from)
        .max(Duration::from_nanos(1))
}

impl Session {
    /// A session with a fresh random nonce.
    pub fn new(options: SessionOptions) -> Self {
        Session {
            options,
            nonce: rand::random(),
        }
    }

    /// The session nonce.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Runs the session on `socket` (already connected to the server), calling `on_event` for
    /// every reply as it arrives. Stops early, with what it has, when `cancel` fires. The
    /// report is also kept current in `report`, so a caller dropped mid-session (a probe
    /// timeout) still has the counts so far.
    pub async fn run(
        &self,
        socket: &UdpSocket,
        cancel: &CancellationToken,
        report: &mut Report,
        mut on_event: impl FnMut(&Event),
    ) -> Result<(), SessionError> {
        let o = &self.options;
        let start = Instant::now();
        let mut sent: Vec<Sent> = Vec::with_capacity(o.count.min(4096) as usize);
        // Largest possible UDP payload, so an oversized reply is seen whole and flagged.
        let mut buf = vec![0u8; 65_536];
        let mut next_send = start;
        let mut highest_answered: Option<u64> = None;
        let mut rtt_seqs: Vec<u64> = Vec::new();
        let mut scratch = Vec::with_capacity(o.size);
        // Messages sent and not yet answered, kept as a count so the end test is O(1).
        let mut unanswered = 0u64;
        let result = loop {
            // Replies already queued are read before anything else: at high rates the
            // socket's receive queue would otherwise overflow while we keep sending.
            let queued = match rxtime::try_recv_from(socket, &mut buf) {
                Ok((n, _, at)) => Some((n, Instant::from_std(at))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) if is_refused(&e) => {
                    report.refused += 1;
                    on_event(&Event::Refused);
                    continue;
                }
                Err(e) => {
                    break Err(SessionError::Io {
                        context: "receive",
                        source: e,
                    });
                }
            };
            let now = Instant::now();
            let all_sent = sent.len() as u64 >= o.count;
            if queued.is_none() && !all_sent && now >= next_send {
                let seq = sent.len() as u64;
                let at = Instant::now();
                // Session clock in ns, +1 so the first message is never stamped 0.
                let sent_ns = u64::try_from(at.duration_since(start).as_nanos())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                Message {
                    nonce: self.nonce,
                    seq,
                    sent_ns,
                    size: o.size,
                }
                .encode_into(&mut scratch)?;
                match socket.send(&scratch).await {
                    Ok(_) => {}
                    // A refusal caused by an earlier message: count it, the message still left.
                    Err(e) if is_refused(&e) => {
                        report.refused += 1;
                        on_event(&Event::Refused);
                    }
                    Err(e) => {
                        break Err(SessionError::Io {
                            context: "send",
                            source: e,
                        });
                    }
                }
                sent.push(Sent {
                    sent_ns,
                    at,
                    answered: false,
                });
                report.sent = sent.len() as u64;
                next_send += o.interval;
                unanswered += 1;
                if sent.len() % 32 == 0 {
                    // Lets the runtime poll its I/O driver, so `try_recv` above sees replies
                    // that arrived during a burst of sends.
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let done_waiting = sent.last().map(|s| s.at + o.wait);
            // Once every message is answered, only what is already queued (duplicates) is
            // read; then the session ends, as ping does after its count of replies.
            let mut drain = false;
            if all_sent {
                if done_waiting.is_some_and(|d| now >= d) {
                    break Ok(());
                }
                drain = unanswered == 0;
            }
            let wake = if all_sent {
                done_waiting.unwrap_or(now)
            } else {
                next_send
            };
            let (n, arrived) = if let Some(got) = queued {
                got
            } else if drain {
                // Every message is answered and nothing more is queued.
                break Ok(());
            } else {
                tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                _ = sleep_until(wake) => continue,
                r = rxtime::recv_from(socket, &mut buf) => match r {
                    Ok((n, _, at)) => (n, Instant::from_std(at)),
                    Err(e) if is_refused(&e) => {
                        report.refused += 1;
                        on_event(&Event::Refused);
                        continue;
                    }
                    Err(e) => break Err(SessionError::Io { context: "receive", source: e }),
                },
                }
            };
            let event = self.classify(
                &buf[..n],
                arrived,
                &mut sent,
                &mut highest_answered,
                &mut scratch,
            );
            if let Event::Reply {
                seq,
                rtt,
                duplicate,
                reordered,
                late,
                ..
            } = &event
            {
                if !*duplicate {
                    unanswered = unanswered.saturating_sub(1);
                }
                if *duplicate {
                    report.duplicates += 1;
                } else if *late {
                    report.late += 1;
                } else {
                    report.received += 1;
                    report.reordered += u64::from(*reordered);
                    // Keep RTTs in send order (for jitter) even when replies come reordered.
                    let at = rtt_seqs.partition_point(|s| s < seq);
                    rtt_seqs.insert(at, *seq);
                    report.rtts.insert(at, *rtt);
                }
            } else if let Event::Corrupted { .. } = &event {
                report.corrupted += 1;
            }
            on_event(&event);
        };
        report.elapsed = start.elapsed();
        result
    }

    /// Ties a datagram to its request and says what it is. Marks the request answered.
    fn classify(
        &self,
        b: &[u8],
        arrived: Instant,
        sent: &mut [Sent],
        highest: &mut Option<u64>,
        expected: &mut Vec<u8>,
    ) -> Event {
        let known = wire::ids(b).and_then(|(nonce, seq)| {
            let i = usize::try_from(seq).ok()?;
            (nonce == self.nonce && i < sent.len()).then_some((seq, i))
        });
        let Some((seq, i)) = known else {
            let detail = match wire::decode(b) {
                Err(e) => e.to_string(),
                Ok(m) if m.nonce != self.nonce => {
                    format!("session {:016x} is not ours", m.nonce)
                }
                Ok(m) => format!("seq={} was never sent", m.seq),
            };
            return Event::Corrupted {
                seq: None,
                bytes: b.len(),
                rtt: None,
                detail,
            };
        };
        let s = &mut sent[i];
        let rtt = rtt(s.at, arrived);
        let rebuilt = Message {
            nonce: self.nonce,
            seq,
            sent_ns: s.sent_ns,
            size: self.options.size,
        }
        .encode_into(expected);
        if rebuilt.is_err() || b != expected.as_slice() {
            let detail = match wire::decode(b) {
                Err(e) => e.to_string(),
                Ok(_) => first_difference(expected, b),
            };
            return Event::Corrupted {
                seq: Some(seq),
                bytes: b.len(),
                rtt: Some(rtt),
                detail,
            };
        }
        let duplicate = s.answered;
        let late = !duplicate && rtt > self.options.wait;
        let reordered = !duplicate && highest.is_some_and(|h| h > seq);
        if !duplicate {
            s.answered = true;
            if !late {
                *highest = Some(highest.map_or(seq, |h| h.max(seq)));
            }
        }
        Event::Reply {
            seq,
            bytes: b.len(),
            rtt,
            duplicate,
            reordered,
            late,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::client::connect;

    #[tokio::test]
    async fn a_reply_that_decodes_but_differs_is_corrupted_at_its_byte() {
        // Flips the top bit of the timestamp: still a valid message (never 0), not the one sent.
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                buf[24] ^= 0x80;
                let _ = server.send_to(&buf[..n], from).await;
            }
        });
        let socket = connect(addr).await.unwrap();
        let session = Session::new(SessionOptions {
            count: 2,
            interval: Duration::from_millis(5),
            size: 40,
            wait: Duration::from_millis(200),
        });
        let mut report = Report::default();
        let mut details = Vec::new();
        session
            .run(&socket, &CancellationToken::new(), &mut report, |e| {
                if let Event::Corrupted { seq, detail, .. } = e {
                    details.push((*seq, detail.clone()));
                }
            })
            .await
            .unwrap();
        assert_eq!(report.corrupted, 2);
        assert_eq!(report.received, 0);
        assert_eq!(report.round().loss_ratio(), 1.0);
        assert_eq!(
            details,
            vec![
                (Some(0), "byte 24 differs".to_string()),
                (Some(1), "byte 24 differs".to_string())
            ]
        );
    }

    #[test]
    fn rtts_are_never_zero() {
        let t = Instant::now();
        assert_eq!(rtt(t, t), Duration::from_nanos(1));
        assert_eq!(rtt(t + Duration::from_secs(1), t), Duration::from_nanos(1));
    }
}
