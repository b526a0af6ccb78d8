//! Label sets and the gauge type every probe family shares.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;

/// A series' labels: `host`, `protocol`, `service`, then the configured labels in name order.
pub type Labels = Vec<(String, String)>;

/// A float gauge.
pub type FGauge = Gauge<f64, AtomicU64>;

/// `labels` plus one more pair, for families such as `{reason}` or `{phase}`.
pub fn with_label(labels: &Labels, name: &str, value: &str) -> Labels {
    let mut l = Vec::with_capacity(labels.len() + 1);
    l.extend(labels.iter().cloned());
    l.push((name.to_string(), value.to_string()));
    l
}
