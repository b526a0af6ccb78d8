//! Benchmark: encoding `/metrics` with many series, and whether a scrape blocks probe updates.
//!
//! `cargo bench --bench encode` prints, for 1k/10k/100k services (each with the common
//! families), the median encode time over several runs and the text size; then it encodes
//! 100k series in a loop on one thread while another thread updates the services' gauges and
//! counters as probes do, and reports the update rate with and without concurrent scrapes.
//! It also times gzip of the 100k-service text at a few levels, and encodes the mix of the
//! scale bench (a third each ICMP with the packet families and the default 17-bucket RTT
//! histogram, TCP and UDP; about 1.3 M series at 100k services) with and without gzip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netmon::base::labels::Labels;
use netmon::base::round::Round;
use netmon::metrics::{Metrics, ServiceMetrics};
use netmon::probe::packets::{DEFAULT_RTT_BUCKETS, Handles};

fn services(m: &Metrics, n: usize) -> Vec<ServiceMetrics> {
    (0..n)
        .map(|i| {
            let labels: Labels = vec![
                (
                    "host".into(),
                    format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                ),
                ("protocol".into(), "tcp".into()),
                ("service".into(), "tcp:443".into()),
                ("site".into(), "bench".into()),
            ];
            let s = m.service(labels);
            s.up.set(1.0);
            s.latency.set(0.000_123 * (i % 100) as f64);
            s.probes.inc_by(i as u64);
            s
        })
        .collect()
}

/// `n` services as the scale bench runs them: every third an ICMP service with its packet
/// series and a recorded round of three replies, the others TCP and UDP.
fn mix(m: &Metrics, n: usize) -> (Vec<ServiceMetrics>, Vec<Handles>) {
    let mut common = Vec::with_capacity(n);
    let mut packets = Vec::new();
    for i in 0..n {
        let protocol = ["icmp", "tcp", "udp"][i % 3];
        let labels: Labels = vec![
            (
                "host".into(),
                format!("127.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            ),
            ("protocol".into(), protocol.into()),
            ("service".into(), format!("{protocol}-{i}")),
        ];
        let s = m.service(labels.clone());
        s.up.set(1.0);
        s.latency.set(0.000_123 * (i % 100) as f64);
        s.probes.inc_by(i as u64);
        if protocol == "icmp" {
            let h = m.probe.icmp.handles(&labels, Some(&DEFAULT_RTT_BUCKETS));
            let us = (i % 900) as u64 + 40;
            h.record(&Round {
                sent: 3,
                rtts: [us, us + 7, us + 3].map(Duration::from_micros).to_vec(),
            });
            packets.push(h);
        }
        common.push(s);
    }
    (common, packets)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    println!("encode: services, series, median ms (prometheus text), median ms (openmetrics), MB");
    for n in [1_000, 10_000, 20_000, 100_000] {
        let m = Metrics::new();
        let _s = services(&m, n);
        let mut text_runs = Vec::new();
        let mut om_runs = Vec::new();
        let mut size = 0;
        for _ in 0..7 {
            let t = Instant::now();
            size = m.encode(false).expect("encode").len();
            text_runs.push(t.elapsed());
            let t = Instant::now();
            m.encode(true).expect("encode");
            om_runs.push(t.elapsed());
        }
        let series = size_of_series(&m);
        println!(
            "encode: {n:>7} services, {series:>7} series, {:>8.1} ms, {:>8.1} ms, {:>6.1} MB",
            median(text_runs).as_secs_f64() * 1e3,
            median(om_runs).as_secs_f64() * 1e3,
            size as f64 / 1e6
        );
    }

    println!(
        "mix: services, series, median ms (prometheus text), median ms (openmetrics), median ms (text + gzip), MB, MB gzipped"
    );
    for n in [10_000, 100_000] {
        let m = Metrics::new();
        let _s = mix(&m, n);
        let (mut text_runs, mut om_runs, mut gz_runs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut size, mut zipped) = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            size = m.encode(false).expect("encode").len();
            text_runs.push(t.elapsed());
            let t = Instant::now();
            m.encode(true).expect("encode");
            om_runs.push(t.elapsed());
            let t = Instant::now();
            let text = m.encode(false).expect("encode");
            zipped = netmon::metrics::gzip(text.as_bytes()).expect("gzip").len();
            gz_runs.push(t.elapsed());
        }
        println!(
            "mix: {n:>7} services, {:>8} series, {:>8.1} ms, {:>8.1} ms, {:>8.1} ms, {:>7.2} MB, {:>6.2} MB",
            size_of_series(&m),
            median(text_runs).as_secs_f64() * 1e3,
            median(om_runs).as_secs_f64() * 1e3,
            median(gz_runs).as_secs_f64() * 1e3,
            size as f64 / 1e6,
            zipped as f64 / 1e6
        );
    }

    // What gzip costs on top: `netmon::metrics::gzip` (the level `/metrics` uses) and, for
    // comparison, other levels, on the 100k-service text.
    let m = Metrics::new();
    let _s = services(&m, 100_000);
    let text = m.encode(false).expect("encode");
    println!(
        "gzip: {:.1} MB of text; level, median ms, MB, ratio (/metrics uses level {})",
        text.len() as f64 / 1e6,
        netmon::metrics::GZIP_LEVEL
    );
    for level in [1, 3, 6] {
        let mut runs = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let mut z = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 8),
                flate2::Compression::new(level),
            );
            std::io::Write::write_all(&mut z, text.as_bytes()).expect("gzip");
            size = z.finish().expect("gzip").len();
            runs.push(t.elapsed());
        }
        println!(
            "gzip: level {level}, {:>8.1} ms, {:>6.2} MB, {:>5.1}x",
            median(runs).as_secs_f64() * 1e3,
            size as f64 / 1e6,
            text.len() as f64 / size as f64
        );
    }

    // Do scrapes block probe updates? Update every service's handles in a loop for 2 s, alone
    // and with a scraper encoding 100k series back to back.
    let m = Arc::new(Metrics::new());
    let handles = Arc::new(services(&m, 100_000));
    for scraping in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = scraping.then(|| {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    m.encode(false).expect("encode");
                    n += 1;
                }
                n
            })
        });
        let start = Instant::now();
        let mut updates = 0u64;
        let mut worst = Duration::ZERO;
        while start.elapsed() < Duration::from_secs(2) {
            for s in handles.iter().take(10_000) {
                let t = Instant::now();
                s.up.set(1.0);
                s.latency.set(0.001);
                s.probes.inc();
                worst = worst.max(t.elapsed());
                updates += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let scrapes = scraper.map(|h| h.join().expect("scraper"));
        println!(
            "updates: scraping={scraping} {:.1} M probe results/s, slowest single update {:.1} µs, scrapes done {}",
            updates as f64 / start.elapsed().as_secs_f64() / 1e6,
            worst.as_secs_f64() * 1e6,
            scrapes.map_or("-".to_string(), |n| n.to_string())
        );
    }
}

fn size_of_series(m: &Metrics) -> usize {
    m.encode(false)
        .expect("encode")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}
