//! The families of `discovery:` sources, one series per source: how many targets it gave,
//! how often reading it failed, and when it was last read well. The app layer's discovery
//! tasks write them; a source's series go when a reload removes the source.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::base::labels::{FGauge, Labels};

/// `netmon_discovery_*`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    targets: Family<Labels, Gauge>,
    failures: Family<Labels, Counter>,
    last_success: Family<Labels, FGauge>,
}

fn source(name: &str) -> Labels {
    vec![("source".to_string(), name.to_string())]
}

impl Metrics {
    /// Registers the families under `registry` (already prefixed `netmon`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "discovery_targets",
            "Targets the discovery source gave in its last list that was read and applied",
            m.targets.clone(),
        );
        registry.register(
            "discovery_failures",
            "Reads of the discovery source that failed (unreachable, invalid, over a limit, refused by the check); the last good list stays",
            m.failures.clone(),
        );
        registry.register_with_unit(
            "discovery_last_success_timestamp",
            "Unix time of the last successful read of the discovery source",
            Unit::Seconds,
            m.last_success.clone(),
        );
        m
    }

    /// Creates `name`'s series, so they exist (at 0) before its first read.
    pub fn add(&self, name: &str) {
        let labels = source(name);
        let _ = self.targets.get_or_create(&labels);
        let _ = self.failures.get_or_create(&labels);
        let _ = self.last_success.get_or_create(&labels);
    }

    /// Removes `name`'s series: the source is gone from the config.
    pub fn remove(&self, name: &str) {
        let labels = source(name);
        self.targets.remove(&labels);
        self.failures.remove(&labels);
        self.last_success.remove(&labels);
    }

    /// A read of `name` that gave (or kept) `targets` targets, at Unix time `now`.
    pub fn succeeded(&self, name: &str, targets: usize, now: f64) {
        let labels = source(name);
        self.targets
            .get_or_create(&labels)
            .set(i64::try_from(targets).unwrap_or(i64::MAX));
        self.last_success.get_or_create(&labels).set(now);
    }

    /// A read of `name` that failed.
    pub fn failed(&self, name: &str) {
        self.failures.get_or_create(&source(name)).inc();
    }
}
