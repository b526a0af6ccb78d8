//! Per-packet measurements shared by the packet probes (`icmp`, `echo`): the RTT histogram,
//! packet counters, loss of the last round, jitter, and the R-factor and MOS estimated from them.
//!
//! A probe collects a [`Round`] (how many it sent, the RTT of each reply in send order) and
//! hands it to its [`Handles::record`]; the statistics are computed here once so ICMP and echo
//! report alike.
//!
//! Each service chooses its RTT buckets (`rtt_buckets:`) or has no histogram at all
//! (`rtt_histogram: false`). prometheus-client gives every series of a `Family` the buckets of
//! the family's one constructor, so `netmon_rtt_seconds` is a family of our own
//! ([`RttFamily`]): one name, one `# TYPE` line, and each series with the buckets its service
//! was started with. The exposition formats allow that: buckets are per series.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::base::labels::{FGauge, Labels};
use crate::base::quality::Quality;
use crate::base::round::Round;
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

/// `netmon_rtt_seconds`: a histogram family whose series each carry their own buckets.
#[derive(Debug, Clone, Default)]
pub struct RttFamily(Arc<RwLock<HashMap<Labels, Histogram>>>);

impl RttFamily {
    /// The series of `labels`, created with `buckets` if it does not exist yet.
    fn get_or_create(&self, labels: &Labels, buckets: &[f64]) -> Histogram {
        if let Some(h) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            return h.clone();
        }
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels.clone())
            .or_insert_with(|| Histogram::new(buckets.iter().copied()))
            .clone()
    }

    fn remove(&self, labels: &Labels) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(labels);
    }
}

impl TypedMetric for RttFamily {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for RttFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let series = self.0.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, h) in series.iter() {
            h.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// The packet families, registered once.
#[derive(Debug, Clone)]
pub struct Metrics {
    rtt: RttFamily,
    sent: Family<Labels, Counter>,
    received: Family<Labels, Counter>,
    loss: Family<Labels, FGauge>,
    jitter: Family<Labels, FGauge>,
    r_factor: Family<Labels, FGauge>,
    mos: Family<Labels, FGauge>,
}

impl Metrics {
    /// Registers `netmon_rtt_seconds`, `netmon_packets_{sent,received}_total`,
    /// `netmon_packet_loss_ratio`, `netmon_rtt_jitter_seconds`, `netmon_r_factor` and
    /// `netmon_mos`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            rtt: RttFamily::default(),
            sent: Family::default(),
            received: Family::default(),
            loss: Family::default(),
            jitter: Family::default(),
            r_factor: Family::default(),
            mos: Family::default(),
        };
        registry.register_with_unit(
            "rtt",
            "Round-trip time of each reply",
            Unit::Seconds,
            m.rtt.clone(),
        );
        registry.register(
            "packets_sent",
            "Packets sent by packet probes",
            m.sent.clone(),
        );
        registry.register(
            "packets_received",
            "Valid replies received by packet probes",
            m.received.clone(),
        );
        registry.register(
            "packet_loss_ratio",
            "Share of packets lost in the last round (0 to 1)",
            m.loss.clone(),
        );
        registry.register_with_unit(
            "rtt_jitter",
            "Mean absolute difference of consecutive RTTs in the last round",
            Unit::Seconds,
            m.jitter.clone(),
        );
        registry.register(
            "r_factor",
            "E-model R-factor of the last round (0 to 100), from mean RTT, jitter and loss as check_icmp computes it",
            m.r_factor.clone(),
        );
        registry.register(
            "mos",
            "Mean opinion score of the last round (1 to 4.5), from its R-factor",
            m.mos.clone(),
        );
        m
    }

    /// Creates one service's series and returns its handles; `rtt_buckets` are the upper
    /// bounds of its RTT histogram, `None` for a service without one.
    pub fn handles(&self, labels: &Labels, rtt_buckets: Option<&[f64]>) -> Handles {
        Handles {
            rtt: rtt_buckets.map(|b| self.rtt.get_or_create(labels, b)),
            sent: self.sent.get_or_create_owned(labels),
            received: self.received.get_or_create_owned(labels),
            loss: self.loss.get_or_create_owned(labels),
            jitter: self.jitter.get_or_create_owned(labels),
            r_factor: self.r_factor.get_or_create_owned(labels),
            mos: self.mos.get_or_create_owned(labels),
            labels: labels.clone(),
            families: self.clone(),
        }
    }
}

impl Families for Metrics {
    fn register(registry: &mut Registry) -> Self {
        Metrics::register(registry)
    }
}

/// One service's handles into the packet families.
#[derive(Debug, Clone)]
pub struct Handles {
    labels: Labels,
    families: Metrics,
    /// `None` with `rtt_histogram: false`.
    rtt: Option<Histogram>,
    sent: Counter,
    received: Counter,
    loss: FGauge,
    jitter: FGauge,
    r_factor: FGauge,
    mos: FGauge,
}

impl Handles {
    /// Records a finished round.
    pub fn record(&self, round: &Round) {
        self.sent.inc_by(round.sent);
        self.received.inc_by(round.rtts.len() as u64);
        if let Some(rtt) = &self.rtt {
            for r in &round.rtts {
                rtt.observe(r.as_secs_f64());
            }
        }
        self.loss.set(round.loss_ratio());
        if let Some(j) = round.jitter() {
            self.jitter.set(j.as_secs_f64());
        }
        if let Some(q) = Quality::of(round) {
            self.r_factor.set(q.r_factor);
            self.mos.set(q.mos);
        }
    }

    /// Removes the service's series.
    pub fn remove(&self) {
        let f = &self.families;
        f.rtt.remove(&self.labels);
        f.sent.remove(&self.labels);
        f.received.remove(&self.labels);
        f.loss.remove(&self.labels);
        f.jitter.remove(&self.labels);
        f.r_factor.remove(&self.labels);
        f.mos.remove(&self.labels);
    }
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
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("packets_sent_total{host=\"h\"} 2"), "{text}");
        assert!(
            text.contains("rtt_jitter_seconds{host=\"h\"} 0.002"),
            "{text}"
        );
        // Mean 2 ms, jitter 2 ms: EL = 16 ms → R = 93.2 − 0.4 = 92.8.
        assert!((value(&text, "r_factor") - 92.8).abs() < 1e-9, "{text}");
        assert!((value(&text, "mos") - 4.401409536).abs() < 1e-9, "{text}");
        h.remove();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(!text.contains("host=\"h\""), "{text}");
    }

    /// The value of `netmon_<name>{host="h"}` in an exposition.
    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("{name}{{host=\"h\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    fn encode(reg: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, reg).unwrap();
        text
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
        let text = encode(&reg);
        assert_eq!(value(&text, "r_factor"), 0.0, "{text}");
        assert_eq!(value(&text, "mos"), 1.0, "{text}");
        // A round that sent nothing has nothing to judge and keeps the last estimate.
        h.record(&Round {
            sent: 1,
            rtts: vec![ms(30)],
        });
        h.record(&Round::default());
        let text = encode(&reg);
        assert!((value(&text, "r_factor") - 92.2).abs() < 1e-9, "{text}");
        assert!(!text.contains("NaN"), "{text}");
    }
}

#[cfg(test)]
mod rtt_tests {
    use super::*;
    use std::time::Duration;

    fn encode(reg: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, reg).unwrap();
        text
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
        let text = encode(&reg);
        assert_eq!(
            text.matches("# TYPE rtt_seconds histogram").count(),
            1,
            "{text}"
        );
        let buckets = |svc: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with("rtt_seconds_bucket") && l.contains(&format!("service=\"{svc}\""))
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
        let text = encode(&reg);
        assert!(!text.contains("service=\"a\""), "{text}");
        assert!(text.contains("service=\"b\""), "{text}");
    }
}
