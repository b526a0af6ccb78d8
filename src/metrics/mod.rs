//! The metric registry: the common probe families, build info, reload gauges, scheduler
//! lateness, the discovery sources' families (`discovery.rs`) and the standard `process_*`
//! metrics.
//!
//! Families are registered once, at start-up. Each service fetches its own handles
//! ([`ServiceMetrics`]) when it starts, so a probe result updates atomics and never takes the
//! family lock a scrape holds while encoding; the series are removed when the service stops.
//! The common families and the probes' packet families, most of the lines at scale, are not
//! prometheus-client families: they are rows written by netmon's own exposition writer
//! (`base::series`), which renders a service's labels once when it starts; the exposition is
//! the registry's encoding followed by theirs.
//! [`Encoder`] (`encoder.rs`) encodes for `/metrics` on a thread of its own, gzips there when
//! asked, and shares one encoding among the scrapes that arrive together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::labels::{FGauge, Labels};
use crate::base::series::{
    self, Counter, Family, Format, Gauge as FloatGauge, Kind, LabelText, Rows, Sheet, Sizes, Writer,
};

pub mod discovery;
mod encoder;

pub use encoder::{EncodeError, Encoder, Encoding, GZIP_LEVEL, gzip};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::base::outcome::Reason;
use crate::probe::ProbeMetrics;

/// The git commit this binary was built from (`build.rs`), `-dirty` when tracked files had
/// changed, or `unknown` when it was not built from a checkout.
pub const REVISION: &str = match option_env!("NETMON_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The common families every probe writes through the runner, one row per service, written
/// by [`series::Writer`] rather than prometheus-client: at 100,000 services these five
/// families alone are half a million lines.
#[derive(Debug, Clone, Default)]
pub struct Common {
    rows: Rows<ServiceSeries>,
    sizes: Sizes,
}

const UP: Family = Family {
    name: "netmon_up",
    help: "Whether the last probe of the service succeeded (1) or not (0)",
    unit: None,
    kind: Kind::Gauge,
};
const LATENCY: Family = Family {
    name: "netmon_latency",
    help: "Latency of the last successful probe; what it measures depends on the protocol",
    unit: Some("seconds"),
    kind: Kind::Gauge,
};
const DURATION: Family = Family {
    name: "netmon_probe_duration",
    help: "Wall time of the last probe, failed or not",
    unit: Some("seconds"),
    kind: Kind::Gauge,
};
const PROBES: Family = Family {
    name: "netmon_probes",
    help: "Probes run",
    unit: None,
    kind: Kind::Counter,
};
const FAILURES: Family = Family {
    name: "netmon_probe_failures",
    help: "Failed probes by reason",
    unit: None,
    kind: Kind::Counter,
};
const LAST: Family = Family {
    name: "netmon_last_probe_timestamp",
    help: "Unix time when the last probe finished",
    unit: Some("seconds"),
    kind: Kind::Gauge,
};

/// One service's series in the common families.
#[derive(Debug, Default)]
pub struct ServiceSeries {
    /// `netmon_up`.
    pub up: FloatGauge,
    /// `netmon_latency_seconds`.
    pub latency: FloatGauge,
    /// `netmon_probe_duration_seconds`.
    pub duration: FloatGauge,
    /// `netmon_probes_total`.
    pub probes: Counter,
    /// `netmon_last_probe_timestamp_seconds`.
    pub last: FloatGauge,
    /// `netmon_probe_failures_total{reason}`, by [`Reason::ALL`] index; a reason's series
    /// exists once it has counted one.
    failures: [Counter; Reason::ALL.len()],
}

impl Sheet for Common {
    fn write(&self, w: &mut Writer<'_>) {
        let rows = self.rows.read();
        if rows.is_empty() {
            return;
        }
        // The order the families had when prometheus-client wrote them. The first goes
        // straight into the output, the others into buffers of their own: fresh memory
        // written and copied costs more than the lines themselves at this size.
        w.head(&UP);
        let families = [&LATENCY, &DURATION, &PROBES, &FAILURES, &LAST];
        let mut lines = self.sizes.buffers::<5>();
        {
            let [
                mut latency,
                mut duration,
                mut probes,
                mut failures,
                mut last,
            ] = lines.each_mut().map(|b| w.to(b));
            for (labels, s) in rows.iter() {
                w.gauge(&UP, labels, s.up.get());
                latency.gauge(&LATENCY, labels, s.latency.get());
                duration.gauge(&DURATION, labels, s.duration.get());
                probes.counter(&PROBES, labels, None, s.probes.get());
                for (reason, c) in Reason::ALL.iter().zip(&s.failures) {
                    let n = c.get();
                    if n > 0 {
                        failures.counter(&FAILURES, labels, Some(("reason", reason.as_str())), n);
                    }
                }
                last.gauge(&LAST, labels, s.last.get());
            }
        }
        for (family, text) in families.into_iter().zip(&lines) {
            w.family(family, text);
        }
        self.sizes.remember(&lines);
    }
}

/// One service's handle into the common families: its row, read by the fields of
/// [`ServiceSeries`] (`metrics.up.set(1.0)`).
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    labels: Labels,
    key: LabelText,
    common: Common,
    series: Arc<ServiceSeries>,
}

impl std::ops::Deref for ServiceMetrics {
    type Target = ServiceSeries;

    fn deref(&self) -> &ServiceSeries {
        &self.series
    }
}

impl ServiceMetrics {
    /// Counts one failure for `reason`.
    pub fn failed(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.series.failures[i].inc();
        }
    }

    /// Removes every series of this service from the common families.
    pub fn remove(&self) {
        self.common.rows.remove(&self.key);
    }

    /// The service's label set.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
}

/// Everything registered: the encoder reads `registry`, the rest is written by the monitor.
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Common probe families.
    pub common: Common,
    /// Protocol-specific families.
    pub probe: ProbeMetrics,
    /// `netmon_config_last_reload_successful`.
    pub reload_ok: Gauge,
    /// `netmon_config_last_reload_success_timestamp_seconds`.
    pub reload_time: FGauge,
    /// `netmon_scheduler_lateness_seconds`: how late probes start against their plan.
    pub lateness: Histogram,
    /// `netmon_probes_in_flight`.
    pub in_flight: Gauge,
    /// `netmon_shard_services`: the services this instance probes, after `--shard.*`.
    pub shard_services: Gauge,
    /// The hosted echo server's families, registered even without `echo_server:` so a
    /// reload can add one.
    pub echo_server: crate::echo::server::metrics::Metrics,
    /// The hosted STAMP reflector's families, registered even without `stamp_reflector:` so
    /// a reload can add one.
    pub stamp_reflector: crate::stamp::reflector::Metrics,
    /// `netmon_discovery_*`: one series per `discovery:` source.
    pub discovery: discovery::Metrics,
    /// The family sets that write their own text: the common families, then the probes'.
    sheets: Vec<Arc<dyn Sheet>>,
    /// Size of the last encoding: the next one reserves that much up front instead of
    /// growing (and copying) its buffer a dozen times on the way to megabytes.
    last_size: AtomicUsize,
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(RuntimeCollector));
        let common = Common::default();
        let reload_ok = Gauge::default();
        let reload_time = FGauge::default();
        let lateness = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let in_flight = Gauge::default();
        let shard_services = Gauge::default();
        let ns = registry.sub_registry_with_prefix("netmon");
        ns.register(
            "build",
            "netmon version and git revision",
            Info::new(vec![
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ("revision".to_string(), REVISION.to_string()),
            ]),
        );
        ns.register(
            "config_last_reload_successful",
            "Whether the last configuration load or reload succeeded",
            reload_ok.clone(),
        );
        ns.register_with_unit(
            "config_last_reload_success_timestamp",
            "Unix time of the last successful configuration load",
            Unit::Seconds,
            reload_time.clone(),
        );
        ns.register_with_unit(
            "scheduler_lateness",
            "How late probes start against their planned time",
            Unit::Seconds,
            lateness.clone(),
        );
        ns.register("probes_in_flight", "Probes running now", in_flight.clone());
        ns.register(
            "shard_services",
            "Services this instance probes: all of the config's, or its shard's share with --shard.count",
            shard_services.clone(),
        );
        let probe = ProbeMetrics::register(ns);
        let echo_server = crate::echo::server::metrics::Metrics::register(ns);
        let stamp_reflector = crate::stamp::reflector::Metrics::register(ns);
        let discovery = discovery::Metrics::register(ns);
        let mut sheets: Vec<Arc<dyn Sheet>> = vec![Arc::new(common.clone())];
        sheets.extend(probe.sheets());
        Metrics {
            registry,
            sheets,
            common,
            probe,
            reload_ok,
            reload_time,
            lateness,
            in_flight,
            shard_services,
            echo_server,
            stamp_reflector,
            discovery,
            last_size: AtomicUsize::new(0),
        }
    }

    /// Creates a service's series (so they exist before its first result) and returns handles.
    pub fn service(&self, labels: Labels) -> ServiceMetrics {
        let key = LabelText::new(&labels);
        let series = self.common.rows.get_or_create(&key, ServiceSeries::default);
        ServiceMetrics {
            labels,
            key,
            common: self.common.clone(),
            series,
        }
    }

    /// Records a (re)load: success sets the timestamp too.
    pub fn reloaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_time.set(unix_now());
        }
    }

    /// Encodes in the Prometheus text format (0.0.4) or OpenMetrics.
    pub fn encode(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let hint = self.last_size.load(Ordering::Relaxed);
        let mut out = String::with_capacity((hint + hint / 8).max(64 * 1024));
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        };
        series::encode(&mut out, &self.registry, &self.sheets, format)?;
        self.last_size.store(out.len(), Ordering::Relaxed);
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds since the Unix epoch, as a float.
pub fn unix_now() -> f64 {
    unix(SystemTime::now())
}

/// `t` as float seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The standard `process_*` metrics, read from `/proc/self` at scrape time (Linux).
#[derive(Debug)]
struct ProcessCollector;

#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: f64,
    resident: f64,
    virtual_bytes: f64,
    start_time: f64,
    open_fds: f64,
    max_fds: f64,
    threads: f64,
}

/// USER_HZ: the unit of the CPU times in `/proc/self/stat`, fixed at 100 by the Linux ABI.
const CLOCK_TICKS: f64 = 100.0;

/// A `kB` field of `/proc/self/status`, in bytes; this avoids assuming a page size.
fn status_kb(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may itself contain spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Indices are field number - 3 (proc(5): state is field 3).
    let utime = num(11);
    let stime = num(12);
    let threads = num(17);
    let starttime = num(19);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    })?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as f64)
        .unwrap_or(0.0);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<f64>().ok())
                })
        })
        .unwrap_or(0.0);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / CLOCK_TICKS,
        resident: status_kb(&status, "VmRSS:"),
        virtual_bytes: status_kb(&status, "VmSize:"),
        start_time: boot + starttime / CLOCK_TICKS,
        open_fds,
        max_fds,
        threads,
    })
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = read_process_stats() else {
            return Ok(());
        };
        let counter = ConstCounter::new(s.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, f64); 6] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                s.resident,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                s.virtual_bytes,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(Unit::Seconds),
                s.start_time,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                s.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                s.threads,
            ),
        ];
        for (name, help, unit, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// `netmon_runtime_tasks`: the tokio runtime's alive tasks, read at scrape time from the
/// runtime the scrape runs on (`RuntimeMetrics::num_alive_tasks`, stable in tokio 1.x). A
/// count that keeps growing while the configuration stays the same is a task leak. Nothing
/// is exported when encoding happens outside a runtime (unit tests, benches).
#[derive(Debug)]
struct RuntimeCollector;

impl prometheus_client::collector::Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let tasks = handle.metrics().num_alive_tasks();
        ConstGauge::new(i64::try_from(tasks).unwrap_or(i64::MAX)).encode(
            encoder.encode_descriptor(
                "netmon_runtime_tasks",
                "Tasks alive in the tokio runtime",
                None,
                MetricType::Gauge,
            )?,
        )
    }
}

/// Shared handle to the metrics.
pub type SharedMetrics = Arc<Metrics>;

impl Encoder {
    /// Starts the encoding thread for `metrics`. Called inside a runtime, that runtime's task
    /// count is exported too.
    pub fn start(metrics: SharedMetrics) -> std::io::Result<Encoder> {
        Encoder::spawn(move |openmetrics| metrics.encode(openmetrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_service_removes_every_series() {
        let m = Metrics::new();
        let labels: Labels = vec![
            ("host".into(), "h".into()),
            ("protocol".into(), "tcp".into()),
            ("service".into(), "tcp:1".into()),
        ];
        let s = m.service(labels);
        s.up.set(1.0);
        s.failed(Reason::Refused);
        let text = m.encode(false).unwrap();
        assert!(
            text.contains("netmon_up{host=\"h\",protocol=\"tcp\",service=\"tcp:1\"} 1"),
            "{text}"
        );
        assert!(text.contains("reason=\"refused\"} 1"), "{text}");
        s.remove();
        let text = m.encode(false).unwrap();
        assert!(!text.contains("host=\"h\""), "{text}");
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(text.contains("netmon_build_info{version="), "{text}");
    }

    #[test]
    fn build_info_carries_the_git_commit_of_the_checkout() {
        let text = Metrics::new().encode(false).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("netmon_build_info{"))
            .unwrap_or_else(|| panic!("no build_info in\n{text}"));
        assert!(line.contains(&format!("revision=\"{REVISION}\"")), "{line}");
        let git = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(["rev-parse", "--short=12", "HEAD"])
            .output();
        match git {
            Ok(out) if out.status.success() => {
                let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let built = REVISION.strip_suffix("-dirty").unwrap_or(REVISION);
                assert_eq!(built, commit, "build.rs recorded another commit");
            }
            // No git here (a tarball build): the revision says so.
            _ => assert_eq!(REVISION, "unknown"),
        }
    }

    #[test]
    fn runtime_tasks_are_exported_inside_a_runtime_only() {
        let m = Metrics::new();
        assert!(!m.encode(false).unwrap().contains("netmon_runtime_tasks"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let text = rt.block_on(async {
            let _alive = tokio::spawn(std::future::pending::<()>());
            m.encode(false).unwrap()
        });
        assert!(text.contains("# TYPE netmon_runtime_tasks gauge"), "{text}");
        assert!(text.contains("\nnetmon_runtime_tasks 1\n"), "{text}");
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter as PcCounter;
    use prometheus_client::metrics::family::Family as PcFamily;

    use crate::base::labels::with_label;

    /// The common families as they were registered with prometheus-client before they had a
    /// writer of their own, with the same values: the exposition must not have changed.
    #[test]
    fn the_common_families_read_as_prometheus_client_wrote_them() {
        let mut reg = Registry::default();
        let ns = reg.sub_registry_with_prefix("netmon");
        let gauge = PcFamily::<Labels, FGauge>::default;
        let (up, latency, duration, last) = (gauge(), gauge(), gauge(), gauge());
        let probes = PcFamily::<Labels, PcCounter>::default();
        let failures = PcFamily::<Labels, PcCounter>::default();
        ns.register(
            "up",
            "Whether the last probe of the service succeeded (1) or not (0)",
            up.clone(),
        );
        ns.register_with_unit(
            "latency",
            "Latency of the last successful probe; what it measures depends on the protocol",
            Unit::Seconds,
            latency.clone(),
        );
        ns.register_with_unit(
            "probe_duration",
            "Wall time of the last probe, failed or not",
            Unit::Seconds,
            duration.clone(),
        );
        ns.register("probes", "Probes run", probes.clone());
        ns.register(
            "probe_failures",
            "Failed probes by reason",
            failures.clone(),
        );
        ns.register_with_unit(
            "last_probe_timestamp",
            "Unix time when the last probe finished",
            Unit::Seconds,
            last.clone(),
        );

        let m = Metrics::new();
        let mut kept = Vec::new();
        for (i, host) in ["a", "b\"c", "d"].into_iter().enumerate() {
            let labels: Labels = vec![
                ("host".into(), host.into()),
                ("protocol".into(), "tcp".into()),
                ("service".into(), "tcp:22".into()),
                ("site".into(), "x\\y".into()),
            ];
            let s = m.service(labels.clone());
            let v = 0.25 * i as f64;
            s.up.set(v);
            up.get_or_create(&labels).set(v);
            s.latency.set(v / 3.0);
            latency.get_or_create(&labels).set(v / 3.0);
            s.duration.set(1e-7);
            duration.get_or_create(&labels).set(1e-7);
            s.last.set(1_764_000_000.5);
            last.get_or_create(&labels).set(1_764_000_000.5);
            s.probes.inc_by(i as u64);
            probes.get_or_create(&labels).inc_by(i as u64);
            for _ in 0..=i {
                s.failed(Reason::Dns);
                failures
                    .get_or_create(&with_label(&labels, "reason", "dns"))
                    .inc();
            }
            kept.push(s);
        }
        for openmetrics in [false, true] {
            let mut expected = String::new();
            if openmetrics {
                prometheus_client::encoding::text::encode(&mut expected, &reg).unwrap();
            } else {
                prometheus_client::encoding::prometheus_text::encode(&mut expected, &reg).unwrap();
            }
            let ours = m.encode(openmetrics).unwrap();
            let samples = |text: &str| -> Vec<String> {
                let mut v: Vec<String> = text
                    .lines()
                    .filter(|l| l.contains("tcp:22"))
                    .map(String::from)
                    .collect();
                v.sort();
                v
            };
            assert_eq!(samples(&ours), samples(&expected), "{ours}");
            let heads: Vec<&str> = ours.lines().filter(|l| l.starts_with('#')).collect();
            let expected_heads: Vec<&str> =
                expected.lines().filter(|l| l.starts_with('#')).collect();
            let mut at = heads.iter();
            for h in &expected_heads {
                assert!(at.any(|o| o == h), "{h} missing or out of order in\n{ours}");
            }
            assert!(ours.contains("netmon_probe_failures_total{host=\"b\\\"c\","));
        }
    }
}
