//! ping-like lines for `netmon echo`: one per event, and the summary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::session::{Event, Report};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One ping-like line for an event.
pub fn event_line(peer: SocketAddr, e: &Event, wait: Duration) -> String {
    match e {
        Event::Reply {
            seq,
            bytes,
            rtt,
            duplicate,
            reordered,
            late,
        } => {
            let mut l = format!(
                "{bytes} bytes from {peer}: seq={seq} time={:.3} ms",
                ms(*rtt)
            );
            if *duplicate {
                l.push_str(" (DUP!)");
            }
            if *late {
                let _ = write!(l, " (LATE: after the {:.0} ms wait)", ms(wait));
            }
            if *reordered {
                l.push_str(" (REORDERED)");
            }
            l
        }
        Event::Corrupted {
            seq,
            bytes,
            rtt,
            detail,
        } => match (seq, rtt) {
            (Some(seq), Some(rtt)) => format!(
                "{bytes} bytes from {peer}: seq={seq} time={:.3} ms (CORRUPTED: {detail})",
                ms(*rtt)
            ),
            _ => format!("{bytes} bytes from {peer}: (CORRUPTED: {detail})"),
        },
        Event::Refused => format!("From {peer}: port unreachable (nothing listens there)"),
    }
}

/// The ping-style summary lines.
pub fn summary(peer: SocketAddr, r: &Report) -> String {
    let lost = r.sent.saturating_sub(r.received);
    let loss = if r.sent == 0 {
        0.0
    } else {
        lost as f64 * 100.0 / r.sent as f64
    };
    let mut s = format!(
        "--- {peer} echo statistics ---\n{} messages sent, {} received",
        r.sent, r.received
    );
    for (n, what) in [
        (r.duplicates, "duplicates"),
        (r.corrupted, "corrupted"),
        (r.late, "late"),
        (r.reordered, "reordered"),
        (r.refused, "refused"),
    ] {
        if n > 0 {
            let _ = write!(s, ", +{n} {what}");
        }
    }
    // ping's style: at most 4 decimals, no trailing zeros (0%, 33.3333%).
    let _ = write!(
        s,
        ", {}% loss, time {:.0} ms",
        trim_float(loss),
        ms(r.elapsed)
    );
    let round = r.round();
    if let (Some(min), Some(avg), Some(max), Some(mdev)) =
        (round.min(), round.mean(), round.max(), round.mdev())
    {
        let _ = write!(
            s,
            "\nrtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            ms(min),
            ms(avg),
            ms(max),
            ms(mdev)
        );
    }
    s
}

fn trim_float(v: f64) -> String {
    let t = format!("{v:.4}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_like_ping() {
        let peer: SocketAddr = "127.0.0.1:7007".parse().unwrap();
        let r = Report {
            sent: 3,
            received: 2,
            rtts: vec![Duration::from_micros(100), Duration::from_micros(300)],
            duplicates: 1,
            elapsed: Duration::from_millis(2002),
            ..Report::default()
        };
        assert_eq!(
            summary(peer, &r),
            "--- 127.0.0.1:7007 echo statistics ---\n\
             3 messages sent, 2 received, +1 duplicates, 33.3333% loss, time 2002 ms\n\
             rtt min/avg/max/mdev = 0.100/0.200/0.300/0.100 ms"
        );
        assert!(!r.all_intact());
        let line = event_line(
            peer,
            &Event::Reply {
                seq: 3,
                bytes: 64,
                rtt: Duration::from_micros(81),
                duplicate: false,
                reordered: false,
                late: false,
            },
            Duration::from_secs(1),
        );
        assert_eq!(line, "64 bytes from 127.0.0.1:7007: seq=3 time=0.081 ms");
    }
}
