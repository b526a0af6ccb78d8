//! Per-packet measurements shared by the packet probes (`icmp`, `echo`): the RTT histogram,
//! packet counters, loss of the last round, jitter, and the R-factor and MOS estimated from them.
//!
//! A probe collects a [`Round`] (how many it sent, the RTT of each reply in send order) and
//! hands it to its [`Handles::record`]; the statistics are computed here once so ICMP and echo
//! report alike.
//!
//! Each service chooses its RTT buckets (`rtt_buckets:`) or has no histogram at all
//! (`rtt_histogram: false`). The families are written by netmon's own exposition writer
//! (`base::series`): they are most of the lines of a scrape at scale, and the writer renders
//! a service's labels once instead of once per line; it also lets each series of
//! `netmon_rtt_seconds` carry its own buckets under one `# TYPE` line.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::registry::Registry;

use crate::base::labels::Labels;
use crate::base::quality::Quality;
use crate::base::round::Round;
use crate::base::series::{
    Bounds, Counter, Family, Gauge, Histogram, Kind, LabelText, Rows, Sheet, Sizes, Writer,
};
use crate::probe::shape::Families;

/// The RTT buckets (upper bounds, seconds) of a service that sets none: 0.1 ms doubling to
/// 6.5 s, loopback and LAN in the first buckets, bad WAN in the last.
pub const DEFAULT_RTT_BUCKETS: [f64; 17] = doubling(0.0001);

const fn doubling<const N: usize>(start: f64) -> [f64; N] {
    let mut out = [start; N];
    let mut i = 1;
    while i < N {
        out[i] = out[i - 1] * 2.0;
        i += 1;
    }
    out
}

/// The most buckets `rtt_buckets:` may list: each is a series per service.
pub const MAX_RTT_BUCKETS: usize = 32;

const RTT: Family = Family {
    name: "netmon_rtt",
    help: "Round-trip time of each reply",
    unit: Some("seconds"),
    kind: Kind::Histogram,
};
const SENT: Family = Family {
    name: "netmon_packets_sent",
    help: "Packets sent by packet probes",
    unit: None,
    kind: Kind::Counter,
};
const RECEIVED: Family = Family {
    name: "netmon_packets_received",
    help: "Valid replies received by packet probes",
    unit: None,
    kind: Kind::Counter,
};
const LOSS: Family = Family {
    name: "netmon_packet_loss_ratio",
    help: "Share of packets lost in the last round (0 to 1)",
    unit: None,
    kind: Kind::Gauge,
};
const JITTER: Family = Family {
    name: "netmon_rtt_jitter",
    help: "Mean absolute difference of consecutive RTTs in the last round",
    unit: Some("seconds"),
    kind: Kind::Gauge,
};
const R_FACTOR: Family = Family {
    name: "netmon_r_factor",
    help: "E-model R-factor of the last round (0 to 100), from mean RTT, jitter and loss as check_icmp computes it",
    unit: None,
    kind: Kind::Gauge,
};
const MOS: Family = Family {
    name: "netmon_mos",
    help: "Mean opinion score of the last round (1 to 4.5), from its R-factor",
    unit: None,
    kind: Kind::Gauge,
};

/// One service's packet series.
#[derive(Debug)]
struct Series {
    /// `None` with `rtt_histogram: false`.
    rtt: Option<Histogram>,
    sent: Counter,
    received: Counter,
    loss: Gauge,
    jitter: Gauge,
    r_factor: Gauge,
    mos: Gauge,
}

/// The packet families: `netmon_rtt_seconds`, `netmon_packets_{sent,received}_total`,
/// `netmon_packet_loss_ratio`, `netmon_rtt_jitter_seconds`, `netmon_r_factor` and
/// `netmon_mos`, one row per service, written by [`Writer`] (a [`Sheet`]).
///
/// Each series of `netmon_rtt_seconds` carries the buckets its service was started with; the
/// exposition formats allow that: buckets are per series.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    rows: Rows<Series>,
    /// The bounds of the last series made, shared by the next one with the same bounds, so
    /// 100,000 services with the default buckets hold one copy of them.
    bounds: Arc<Mutex<Option<Arc<Bounds>>>>,
    sizes: Sizes,
}

impl Metrics {
    /// The packet families; they register nothing with prometheus-client, the exposition
    /// writes them from [`Families::sheet`].
    pub fn register(_registry: &mut Registry) -> Self {
        Metrics::default()
    }

    fn shared_bounds(&self, buckets: &[f64]) -> Arc<Bounds> {
        let mut last = self.bounds.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted = Bounds::new(buckets);
        match last.as_ref() {
            Some(b) if **b == wanted => b.clone(),
            _ => {
                let b = Arc::new(wanted);
                *last = Some(b.clone());
                b
            }
        }
    }

    /// Creates one service's series and returns its handles; `rtt_buckets` are the upper
    /// bounds of its RTT histogram, `None` for a service without one.
    pub fn handles(&self, labels: &Labels, rtt_buckets: Option<&[f64]>) -> Handles {
        let key = LabelText::new(labels);
        let series = self.rows.get_or_create(&key, || Series {
            rtt: rtt_buckets.map(|b| Histogram::new(self.shared_bounds(b))),
            sent: Counter::default(),
            received: Counter::default(),
            loss: Gauge::default(),
            jitter: Gauge::default(),
            r_factor: Gauge::default(),
            mos: Gauge::default(),
        });
        Handles {
            key,
            rows: self.rows.clone(),
            series,
        }
    }
}

impl Sheet for Metrics {
    fn write(&self, w: &mut Writer<'_>) {
        let rows = self.rows.read();
        if rows.is_empty() {
            return;
        }
        // The order prometheus-client had them in when they were registered there. The
        // histogram, two thirds of the text, goes straight into the output, the others into
        // buffers of their own: fresh memory written and copied costs more than the lines
        // themselves at this size.
        if rows.values().any(|s| s.rtt.is_some()) {
            w.head(&RTT);
        }
        let families = [&SENT, &RECEIVED, &LOSS, &JITTER, &R_FACTOR, &MOS];
        let mut lines = self.sizes.buffers::<6>();
        {
            let [
                mut sent,
                mut received,
                mut loss,
                mut jitter,
                mut r_factor,
                mut mos,
            ] = lines.each_mut().map(|b| w.to(b));
            for (labels, s) in rows.iter() {
                if let Some(h) = &s.rtt {
                    w.histogram(&RTT, labels, h);
                }
                sent.counter(&SENT, labels, None, s.sent.get());
                received.counter(&RECEIVED, labels, None, s.received.get());
                loss.gauge(&LOSS, labels, s.loss.get());
                jitter.gauge(&JITTER, labels, s.jitter.get());
                r_factor.gauge(&R_FACTOR, labels, s.r_factor.get());
                mos.gauge(&MOS, labels, s.mos.get());
            }
        }
        for (family, text) in families.into_iter().zip(&lines) {
            w.family(family, text);
        }
        self.sizes.remember(&lines);
    }
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        Metrics::register(registry)
    }

    fn sheet(&self) -> Option<Arc<dyn Sheet>> {
        Some(Arc::new(self.clone()))
    }
}

/// One service's handles into the packet families.
#[derive(Debug, Clone)]
pub struct Handles {
    key: LabelText,
    rows: Rows<Series>,
    series: Arc<Series>,
}

impl Handles {
    /// Records a finished round.
    pub fn record(&self, round: &Round) {
        let s = &self.series;
        s.sent.inc_by(round.sent);
        s.received.inc_by(round.rtts.len() as u64);
        if let Some(rtt) = &s.rtt {
            for r in &round.rtts {
                rtt.observe(r.as_secs_f64());
            }
        }
        s.loss.set(round.loss_ratio());
        if let Some(j) = round.jitter() {
            s.jitter.set(j.as_secs_f64());
        }
        if let Some(q) = Quality::of(round) {
            s.r_factor.set(q.r_factor);
            s.mos.set(q.mos);
        }
    }

    /// Removes the service's series.
    pub fn remove(&self) {
        self.rows.remove(&self.key);
    }
}

/// The exposition of `registry` plus the packet families of `metrics`, in OpenMetrics, for
/// the tests of the probes that record into them.
#[cfg(test)]
pub(crate) fn encode_for_tests(registry: &Registry, metrics: &Metrics) -> String {
    let mut text = String::new();
    let sheets: Vec<Arc<dyn Sheet>> = vec![Arc::new(metrics.clone())];
    crate::base::series::encode(
        &mut text,
        registry,
        &sheets,
        crate::base::series::Format::OpenMetrics,
    )
    .unwrap_or_else(|e| panic!("encoding: {e}"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::base::round::Round;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn round_statistics() {
        let r = Round {
            sent: 4,
            rtts: vec![ms(10), ms(14), ms(12)],
        };
        assert_eq!(r.received(), 3);
        assert!((r.loss_ratio() - 0.25).abs() < 1e-12);
        assert_eq!(r.mean(), Some(ms(12)));
        assert_eq!(r.min(), Some(ms(10)));
        assert_eq!(r.max(), Some(ms(14)));
        // |14-10| and |12-14| average to 3 ms.
        assert_eq!(r.jitter().map(|j| j.as_micros()), Some(3000));
        let mdev = r.mdev().unwrap().as_secs_f64();
        assert!(
            (mdev - (8.0f64 / 3.0).sqrt() / 1000.0).abs() < 1e-9,
            "{mdev}"
        );
    }

    #[test]
    fn empty_rounds_are_total_loss_without_statistics() {
        let r = Round {
            sent: 3,
            rtts: vec![],
        };
        assert_eq!(r.loss_ratio(), 1.0);
        assert_eq!(r.mean(), None);
        assert_eq!(r.jitter(), None);
        assert_eq!(Round::default().loss_ratio(), 0.0);
    }

    #[test]
    fn series_are_created_and_removed() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        let labels: Labels = vec![("host".into(), "h".into())];
        let h = m.handles(&labels, Some(&DEFAULT_RTT_BUCKETS));
        h.record(&Round {
            sent: 2,
            rtts: vec![ms(1), ms(3)],
        });
        let text = encode_for_tests(&reg, &m);
        assert!(text.contains("packets_sent_total{host=\"h\"} 2"), "{text}");
        assert!(
            text.contains("rtt_jitter_seconds{host=\"h\"} 0.002"),
            "{text}"
        );
        // Mean 2 ms, jitter 2 ms: EL = 16 ms → R = 93.2 − 0.4 = 92.8.
        assert!((value(&text, "r_factor") - 92.8).abs() < 1e-9, "{text}");
        assert!((value(&text, "mos") - 4.401409536).abs() < 1e-9, "{text}");
        h.remove();
        let text = encode_for_tests(&reg, &m);
        assert!(!text.contains("host=\"h\""), "{text}");
    }

    /// The value of `netmon_<name>{host="h"}` in an exposition.
    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("netmon_{name}{{host=\"h\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    fn encode(reg: &Registry, m: &Metrics) -> String {
        encode_for_tests(reg, m)
    }

    #[test]
    fn a_lost_round_is_the_worst_quality_and_an_empty_one_changes_nothing() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        let h = m.handles(
            &vec![("host".into(), "h".into())],
            Some(&DEFAULT_RTT_BUCKETS),
        );
        h.record(&Round {
            sent: 3,
            rtts: vec![],
        });
        let text = encode(&reg, &m);
        assert_eq!(value(&text, "r_factor"), 0.0, "{text}");
        assert_eq!(value(&text, "mos"), 1.0, "{text}");
        // A round that sent nothing has nothing to judge and keeps the last estimate.
        h.record(&Round {
            sent: 1,
            rtts: vec![ms(30)],
        });
        h.record(&Round::default());
        let text = encode(&reg, &m);
        assert!((value(&text, "r_factor") - 92.2).abs() < 1e-9, "{text}");
        assert!(!text.contains("NaN"), "{text}");
    }
}

#[cfg(test)]
mod rtt_tests {
    use super::*;
    use std::time::Duration;

    fn encode(reg: &Registry, m: &Metrics) -> String {
        encode_for_tests(reg, m)
    }

    #[test]
    fn the_default_buckets_are_the_documented_doubling() {
        assert_eq!(DEFAULT_RTT_BUCKETS[0], 0.0001);
        assert_eq!(DEFAULT_RTT_BUCKETS[16], 6.5536);
        let old: Vec<f64> =
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 17).collect();
        assert_eq!(DEFAULT_RTT_BUCKETS.to_vec(), old);
    }

    #[test]
    fn each_series_has_its_own_buckets_under_one_family() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        let a: Labels = vec![("service".into(), "a".into())];
        let b: Labels = vec![("service".into(), "b".into())];
        let off: Labels = vec![("service".into(), "off".into())];
        let round = Round {
            sent: 1,
            rtts: vec![Duration::from_micros(700)],
        };
        m.handles(&a, Some(&[0.0005, 0.001])).record(&round);
        m.handles(&b, Some(&DEFAULT_RTT_BUCKETS)).record(&round);
        let h = m.handles(&off, None);
        h.record(&round);
        let text = encode(&reg, &m);
        assert_eq!(
            text.matches("# TYPE netmon_rtt_seconds histogram").count(),
            1,
            "{text}"
        );
        let buckets = |svc: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with("netmon_rtt_seconds_bucket")
                        && l.contains(&format!("service=\"{svc}\""))
                })
                .count()
        };
        assert_eq!(buckets("a"), 3, "{text}");
        assert_eq!(buckets("b"), 18, "{text}");
        assert_eq!(buckets("off"), 0, "{text}");
        assert!(
            text.contains("rtt_seconds_bucket{le=\"0.0005\",service=\"a\"} 0")
                || text.contains("rtt_seconds_bucket{service=\"a\",le=\"0.0005\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("packets_sent_total{service=\"off\"} 1"),
            "{text}"
        );
        h.remove();
        m.handles(&a, None).remove();
        let text = encode(&reg, &m);
        assert!(!text.contains("service=\"a\""), "{text}");
        assert!(text.contains("service=\"b\""), "{text}");
    }
}
