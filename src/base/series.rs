//! Per-service series written by a text writer of our own, for the families every service
//! has (`netmon_up`, the packet counters, the RTT histogram, ...): at 100,000 services they
//! are most of the million-odd lines of a scrape.
//!
//! prometheus-client writes each line's labels from the label pairs, checking every value for
//! characters to escape, once per line: an RTT histogram of 20 lines writes its four labels 20
//! times. Here a service's labels are rendered and escaped once, when it starts
//! ([`LabelText`]); a line is then the family's name, that text and the value. The output is
//! what prometheus-client writes for the same families, byte for byte, in both formats
//! (Prometheus text 0.0.4 and OpenMetrics), so the two can share one exposition:
//! [`encode`] writes the registry through prometheus-client and then every [`Sheet`].
//!
//! A family set keeps its series in [`Rows`]: one row per service, keyed by its label text and
//! kept in label order, holding the atomics the probe updates through its handle.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use prometheus_client::registry::Registry;

use crate::base::labels::Labels;

/// The exposition format being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics text.
    OpenMetrics,
}

/// What a family is, for its `# TYPE` line and sample names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonic count; its samples end in `_total`.
    Counter,
    /// Cumulative buckets, `_sum` and `_count`.
    Histogram,
}

/// A family's name, help text, unit and kind, as prometheus-client's registry takes them.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The full name without unit or `_total` (`netmon_latency`).
    pub name: &'static str,
    /// The help text; the written one ends with a `.`, as prometheus-client's does.
    pub help: &'static str,
    /// The unit (`seconds`), appended to the name.
    pub unit: Option<&'static str>,
    /// The kind.
    pub kind: Kind,
}

/// A service's labels, rendered once: `host="a",protocol="tcp",service="tcp:22"`, values
/// escaped, no braces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelText(Arc<str>);

impl LabelText {
    /// Renders `labels` in their order, escaping `\`, `"` and newlines in values.
    pub fn new(labels: &Labels) -> Self {
        let mut out =
            String::with_capacity(labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_into(&mut out, v);
            out.push('"');
        }
        LabelText(out.into())
    }

    /// The rendered text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float gauge: the value's bits in an atomic.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram's upper bounds (ascending, finite; `+Inf` is implicit) and their `le` label
/// values in both formats, rendered once and shared by every histogram made with them.
#[derive(Debug, PartialEq)]
pub struct Bounds {
    values: Box<[f64]>,
    prometheus: Box<[Box<str>]>,
    openmetrics: Box<[Box<str>]>,
}

impl Bounds {
    /// `values` without the non-finite ones, as prometheus-client drops them.
    pub fn new(values: &[f64]) -> Self {
        let values: Box<[f64]> = values.iter().copied().filter(|b| b.is_finite()).collect();
        let prometheus = values
            .iter()
            .map(|b| {
                let mut s = String::new();
                go_float(&mut s, *b);
                s.into_boxed_str()
            })
            .collect();
        let mut buf = dtoa::Buffer::new();
        let openmetrics = values.iter().map(|b| buf.format(*b).into()).collect();
        Bounds {
            values,
            prometheus,
            openmetrics,
        }
    }

    /// The bounds.
    pub fn values(&self) -> &[f64] {
        &self.values
    }
}

/// A histogram with the upper bounds it was made with and an implicit `+Inf` bucket. One lock
/// per histogram, as prometheus-client's, so a scrape never sees a count without its sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: Arc<Bounds>,
    inner: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    sum: f64,
    count: u64,
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: Box<[u64]>,
}

impl Histogram {
    /// A histogram with `bounds`.
    pub fn new(bounds: Arc<Bounds>) -> Self {
        let buckets = vec![0; bounds.values.len() + 1].into_boxed_slice();
        Histogram {
            bounds,
            inner: Mutex::new(Counts {
                sum: 0.0,
                count: 0,
                buckets,
            }),
        }
    }

    /// Counts one observation in the first bucket whose bound is at least `v`.
    pub fn observe(&self, v: f64) {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        c.sum += v;
        c.count += 1;
        let i = self.bounds.values.iter().position(|b| *b >= v);
        let i = match i {
            Some(i) => Some(i),
            // `+Inf` holds everything but NaN.
            None if !v.is_nan() => Some(self.bounds.values.len()),
            None => None,
        };
        if let Some(i) = i {
            c.buckets[i] += 1;
        }
    }

    /// (sum, count, per-bucket counts) read under the lock.
    fn snapshot(&self, buckets: &mut Vec<u64>) -> (f64, u64) {
        let c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.clear();
        buckets.extend_from_slice(&c.buckets);
        (c.sum, c.count)
    }
}

/// One row per service of a family set, keyed and ordered by the service's [`LabelText`].
#[derive(Debug)]
pub struct Rows<R>(Arc<RwLock<BTreeMap<LabelText, Arc<R>>>>);

impl<R> Clone for Rows<R> {
    fn clone(&self) -> Self {
        Rows(self.0.clone())
    }
}

impl<R> Default for Rows<R> {
    fn default() -> Self {
        Rows(Arc::default())
    }
}

impl<R> Rows<R> {
    /// The row of `labels`, made by `make` if there is none: services with the same labels
    /// share their series, as they would in a prometheus-client family.
    pub fn get_or_create(&self, labels: &LabelText, make: impl FnOnce() -> R) -> Arc<R> {
        if let Some(r) = self.read().get(labels) {
            return r.clone();
        }
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels.clone())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Removes the row of `labels`, so its series leave the exposition.
    pub fn remove(&self, labels: &LabelText) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(labels);
    }

    /// Every row, in label order, under a read lock: starting or stopping a service waits
    /// for the scrape, probe updates never do (they hold their row).
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<LabelText, Arc<R>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// The size of each family's text at the last scrape, so the next one reserves its buffers
/// once instead of growing them on the way to megabytes.
#[derive(Debug, Clone, Default)]
pub struct Sizes(Arc<Mutex<Vec<usize>>>);

impl Sizes {
    /// `N` empty buffers, each reserved at its family's last size and an eighth.
    pub fn buffers<const N: usize>(&self) -> [String; N] {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::array::from_fn(|i| {
            let n = last.get(i).copied().unwrap_or(0);
            String::with_capacity(n + n / 8)
        })
    }

    /// Remembers the sizes of `buffers` for the next scrape.
    pub fn remember(&self, buffers: &[String]) {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        last.clear();
        last.extend(buffers.iter().map(String::len));
    }
}

/// A family set that writes its own text into the exposition.
pub trait Sheet: Send + Sync + fmt::Debug {
    /// Writes every family of the set that has series: `# HELP`/`# TYPE` once, then a line
    /// per series.
    fn write(&self, out: &mut Writer<'_>);
}

/// Writes exposition text in one [`Format`].
pub struct Writer<'a> {
    out: &'a mut String,
    format: Format,
    /// Scratch space for histogram snapshots, reused across series.
    buckets: Vec<u64>,
}

impl fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String, format: Format) -> Self {
        Writer {
            out,
            format,
            buckets: Vec::new(),
        }
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A writer in the same format appending to `out`: a sheet writes its largest family
    /// straight into the output and each other one into a buffer of its own, in one pass over
    /// its rows, so each row is read once rather than once per family (at 100,000 services
    /// the rows are scattered over the heap, and reading them is what a pass costs), then
    /// appends the buffers with [`Writer::family`].
    pub fn to<'b>(&self, out: &'b mut String) -> Writer<'b> {
        Writer::new(out, self.format)
    }

    /// `# HELP`/`# TYPE` of `f` and its lines from `lines`, unless there are none.
    pub fn family(&mut self, f: &Family, lines: &str) {
        if !lines.is_empty() {
            self.head(f);
            self.out.push_str(lines);
        }
    }

    fn name(&mut self, f: &Family) {
        self.out.push_str(f.name);
        if let Some(unit) = f.unit {
            self.out.push('_');
            self.out.push_str(unit);
        }
    }

    /// `# HELP`, `# TYPE` and, in OpenMetrics with a unit, `# UNIT`. The Prometheus format
    /// names a counter's family with its `_total`, OpenMetrics without.
    pub fn head(&mut self, f: &Family) {
        let total = f.kind == Kind::Counter && self.format == Format::Prometheus;
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        for (i, what) in ["# HELP ", "# TYPE "].into_iter().enumerate() {
            self.out.push_str(what);
            self.name(f);
            if total {
                self.out.push_str("_total");
            }
            self.out.push(' ');
            if i == 0 {
                self.out.push_str(f.help);
                self.out.push_str(".\n");
            } else {
                self.out.push_str(kind);
                self.out.push('\n');
            }
        }
        if let (Format::OpenMetrics, Some(unit)) = (self.format, f.unit) {
            self.out.push_str("# UNIT ");
            self.name(f);
            self.out.push(' ');
            self.out.push_str(unit);
            self.out.push('\n');
        }
    }

    /// `{labels,extra}` (nothing when both are empty).
    fn labels(&mut self, labels: &LabelText, extra: Option<(&str, &str)>) {
        let labels = labels.as_str();
        if labels.is_empty() && extra.is_none() {
            return;
        }
        self.out.push('{');
        self.out.push_str(labels);
        if let Some((k, v)) = extra {
            if !labels.is_empty() {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn float(&mut self, v: f64) {
        self.out.push(' ');
        let mut buf = dtoa::Buffer::new();
        match self.format {
            Format::OpenMetrics => self.out.push_str(buf.format(v)),
            Format::Prometheus if v.is_finite() => self.out.push_str(buf.format_finite(v)),
            Format::Prometheus => self.out.push_str(nonfinite(v)),
        }
        self.out.push('\n');
    }

    fn integer(&mut self, v: u64) {
        self.out.push(' ');
        self.out.push_str(itoa::Buffer::new().format(v));
        self.out.push('\n');
    }

    /// One gauge line.
    pub fn gauge(&mut self, f: &Family, labels: &LabelText, v: f64) {
        self.name(f);
        self.labels(labels, None);
        self.float(v);
    }

    /// One counter line, with one more label after the service's when `extra` is given.
    pub fn counter(&mut self, f: &Family, labels: &LabelText, extra: Option<(&str, &str)>, v: u64) {
        self.name(f);
        self.out.push_str("_total");
        self.labels(labels, extra);
        self.integer(v);
    }

    /// One histogram's lines: buckets, `_sum` and `_count` in the Prometheus format;
    /// `_sum`, `_count` and buckets in OpenMetrics, where `le` comes first among the labels.
    pub fn histogram(&mut self, f: &Family, labels: &LabelText, h: &Histogram) {
        let mut buckets = std::mem::take(&mut self.buckets);
        let (sum, count) = h.snapshot(&mut buckets);
        let om = self.format == Format::OpenMetrics;
        if om {
            self.sum_count(f, labels, sum, count);
        }
        let mut cumulative = 0;
        let les = if om {
            &h.bounds.openmetrics
        } else {
            &h.bounds.prometheus
        };
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            self.name(f);
            self.out.push_str("_bucket{");
            let service = labels.as_str();
            if !om && !service.is_empty() {
                self.out.push_str(service);
                self.out.push(',');
            }
            self.out.push_str("le=\"");
            self.out.push_str(les.get(i).map_or("+Inf", |l| l));
            self.out.push('"');
            if om && !service.is_empty() {
                self.out.push(',');
                self.out.push_str(service);
            }
            self.out.push('}');
            self.integer(cumulative);
        }
        if !om {
            self.sum_count(f, labels, sum, count);
        }
        self.buckets = buckets;
    }

    fn sum_count(&mut self, f: &Family, labels: &LabelText, sum: f64, count: u64) {
        self.name(f);
        self.out.push_str("_sum");
        self.labels(labels, None);
        self.float(sum);
        self.name(f);
        self.out.push_str("_count");
        self.labels(labels, None);
        self.integer(count);
    }
}

fn nonfinite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v.is_sign_positive() {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// A bucket bound as the Prometheus format's Go clients write it (`strconv.FormatFloat(v,
/// 'g', -1, 64)`) and prometheus-client copies: whole numbers below 1e6 as integers, plain
/// decimals within [1e-4, 1e6), exponent notation with a signed two-digit exponent outside.
fn go_float(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    if !v.is_finite() {
        out.push_str(nonfinite(v));
    } else if v.fract() == 0.0 && v.abs() < 1e6 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else if (1e-4..1e6).contains(&v.abs()) {
        let _ = write!(out, "{v}");
    } else {
        let sci = format!("{v:e}");
        match sci.split_once('e') {
            Some((mantissa, exponent)) => {
                let exponent: i32 = exponent.parse().unwrap_or(0);
                let _ = write!(out, "{mantissa}e{exponent:+03}");
            }
            None => out.push_str(&sci),
        }
    }
}

/// The whole exposition: `registry` through prometheus-client, then each sheet, then `# EOF`
/// in OpenMetrics. `out` should be reserved at about the expected size.
pub fn encode(
    out: &mut String,
    registry: &Registry,
    sheets: &[Arc<dyn Sheet>],
    format: Format,
) -> Result<(), fmt::Error> {
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode_registry(out, registry)?,
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(out, registry)?,
    }
    let mut w = Writer::new(out, format);
    for sheet in sheets {
        sheet.write(&mut w);
    }
    if format == Format::OpenMetrics {
        prometheus_client::encoding::text::encode_eof(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use prometheus_client::metrics::counter::Counter as PcCounter;
    use prometheus_client::metrics::family::Family as PcFamily;
    use prometheus_client::metrics::histogram::Histogram as PcHistogram;
    use prometheus_client::registry::Unit;

    use crate::base::labels::{FGauge, with_label};

    const UP: Family = Family {
        name: "netmon_up",
        help: "Whether it is up",
        unit: None,
        kind: Kind::Gauge,
    };
    const LATENCY: Family = Family {
        name: "netmon_latency",
        help: "Latency",
        unit: Some("seconds"),
        kind: Kind::Gauge,
    };
    const PROBES: Family = Family {
        name: "netmon_probes",
        help: "Probes run",
        unit: None,
        kind: Kind::Counter,
    };
    const RTT: Family = Family {
        name: "netmon_rtt",
        help: "Round-trip time",
        unit: Some("seconds"),
        kind: Kind::Histogram,
    };

    fn labels(host: &str) -> Labels {
        vec![
            ("host".into(), host.into()),
            ("protocol".into(), "icmp".into()),
            ("service".into(), "icmp".into()),
        ]
    }

    /// The same families and values through prometheus-client and through the writer give
    /// the same text, in both formats, including escaped values, odd floats and bounds.
    #[test]
    fn the_writer_writes_what_prometheus_client_writes() {
        let hosts = ["a", "b\"q\\\nz", "ünï"];
        let values = [1.0, 0.000_123, f64::NAN, f64::INFINITY, 1e21, -0.5];
        const BOUNDS: [f64; 6] = [0.00003, 0.0001, 0.25, 1.0, 2.0, 1e7];
        let bounds = Arc::new(Bounds::new(&BOUNDS));
        let observed = [0.0, 0.00005, 0.2, 1.0, 5.0, 1e9];

        let mut reg = Registry::default();
        let ns = reg.sub_registry_with_prefix("netmon");
        let up = PcFamily::<Labels, FGauge>::default();
        let latency = PcFamily::<Labels, FGauge>::default();
        let probes = PcFamily::<Labels, PcCounter>::default();
        let failures = PcFamily::<Labels, PcCounter>::default();
        ns.register("up", "Whether it is up", up.clone());
        ns.register_with_unit("latency", "Latency", Unit::Seconds, latency.clone());
        ns.register("probes", "Probes run", probes.clone());
        ns.register("probe_failures", "Failures", failures.clone());
        let mut expected_rtt = Vec::new();

        let mut ours = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let l = labels(host);
            let v = values[i % values.len()];
            up.get_or_create(&l).set(v);
            latency
                .get_or_create(&l)
                .set(values[(i + 3) % values.len()]);
            probes.get_or_create(&l).inc_by(i as u64 * 1000);
            failures
                .get_or_create(&with_label(&l, "reason", "refused"))
                .inc();
            let h = Histogram::new(bounds.clone());
            for o in observed.iter().skip(i) {
                h.observe(*o);
            }
            expected_rtt.push((l.clone(), i));
            ours.push((
                LabelText::new(&l),
                v,
                values[(i + 3) % values.len()],
                i as u64 * 1000,
                h,
            ));
        }
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut expected = String::new();
            match format {
                Format::Prometheus => {
                    prometheus_client::encoding::prometheus_text::encode(&mut expected, &reg)
                }
                Format::OpenMetrics => {
                    prometheus_client::encoding::text::encode_registry(&mut expected, &reg)
                }
            }
            .unwrap();
            let mut got = String::new();
            let mut w = Writer::new(&mut got, format);
            w.head(&UP);
            for (l, up, ..) in &ours {
                w.gauge(&UP, l, *up);
            }
            w.head(&LATENCY);
            for (l, _, lat, ..) in &ours {
                w.gauge(&LATENCY, l, *lat);
            }
            w.head(&PROBES);
            for (l, _, _, n, _) in &ours {
                w.counter(&PROBES, l, None, *n);
            }
            let failures = Family {
                name: "netmon_probe_failures",
                help: "Failures",
                unit: None,
                kind: Kind::Counter,
            };
            w.head(&failures);
            for (l, ..) in &ours {
                w.counter(&failures, l, Some(("reason", "refused")), 1);
            }
            assert_eq!(
                sorted(&got),
                sorted(&expected),
                "{format:?}\n{got}\n{expected}"
            );
            assert_eq!(heads(&got), heads(&expected), "{format:?}");

            // A registry per histogram series: a family's series come in hash order, the
            // lines of one series in a fixed one, which is what is compared.
            for ((l, skip), (ours_l, .., h)) in expected_rtt.iter().zip(&ours) {
                let mut reg = Registry::default();
                let ns = reg.sub_registry_with_prefix("netmon");
                let fam = PcFamily::<Labels, PcHistogram>::new_with_constructor(|| {
                    PcHistogram::new(BOUNDS)
                });
                ns.register_with_unit("rtt", "Round-trip time", Unit::Seconds, fam.clone());
                let series = fam.get_or_create(l);
                for o in observed.iter().skip(*skip) {
                    series.observe(*o);
                }
                drop(series);
                let mut expected = String::new();
                match format {
                    Format::Prometheus => {
                        prometheus_client::encoding::prometheus_text::encode(&mut expected, &reg)
                    }
                    Format::OpenMetrics => {
                        prometheus_client::encoding::text::encode_registry(&mut expected, &reg)
                    }
                }
                .unwrap();
                let mut got = String::new();
                let mut w = Writer::new(&mut got, format);
                w.head(&RTT);
                w.histogram(&RTT, ours_l, h);
                assert_eq!(got, expected, "{format:?}");
            }
        }
    }

    fn sorted(text: &str) -> Vec<&str> {
        let mut v: Vec<&str> = text.lines().collect();
        v.sort_unstable();
        v
    }

    fn heads(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with('#')).collect()
    }

    #[test]
    fn labels_and_an_extra_label_render_without_empty_braces() {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, Format::Prometheus);
        let none = LabelText::new(&Vec::new());
        w.gauge(&UP, &none, 1.0);
        w.counter(&PROBES, &none, Some(("reason", "dns")), 2);
        let h = Histogram::new(Arc::new(Bounds::new(&[1.0, f64::INFINITY])));
        h.observe(f64::NAN);
        w.histogram(&RTT, &none, &h);
        assert_eq!(
            out,
            "netmon_up 1.0\nnetmon_probes_total{reason=\"dns\"} 2\n\
             netmon_rtt_seconds_bucket{le=\"1\"} 0\nnetmon_rtt_seconds_bucket{le=\"+Inf\"} 0\n\
             netmon_rtt_seconds_sum NaN\nnetmon_rtt_seconds_count 1\n"
        );
    }

    #[test]
    fn rows_share_a_label_set_and_forget_it_on_removal() {
        let rows: Rows<Gauge> = Rows::default();
        let a = LabelText::new(&labels("a"));
        let first = rows.get_or_create(&a, Gauge::default);
        first.set(2.0);
        assert_eq!(rows.get_or_create(&a, Gauge::default).get(), 2.0);
        rows.get_or_create(&LabelText::new(&labels("b")), Gauge::default);
        assert_eq!(rows.len(), 2);
        rows.remove(&a);
        assert_eq!(rows.len(), 1);
        assert!(!rows.read().contains_key(&a));
    }
}
