//! Benchmark: netmon at scale on this machine, as an operator would run it.
//!
//! `cargo bench --bench scale -- [SERVICES] [INTERVAL_S] [SECONDS] [MIX] [DEFAULTS]` starts loopback
//! targets, runs the release `netmon` binary with SERVICES services (default 10000) at
//! INTERVAL_S (default 10) spread over 127.0.0.0/8 hosts, lets the first round pass, then
//! measures for SECONDS (default 60): CPU (from /proc/PID/stat), RSS, probes run (from
//! /metrics), CPU seconds per 1,000 probes, and scheduler lateness p50/p99 (from
//! netmon_scheduler_lateness_seconds), while scraping /metrics every second, alternately
//! without and with `Accept-Encoding: gzip` (time and body size of each). MIX is a comma
//! list of protocols to cycle through (default `tcp`; `icmp`, `udp` where supported); DEFAULTS
//! adds keys to the config's `defaults:` (e.g. `"rtt_histogram: false"`).
//! The encoder thread's CPU per scrape is reported beside the scrapes' wall time.
//! `NETMON_BIN=path` runs that binary instead of this tree's release build; `SCALE_ARGS`
//! adds flags to its command line (e.g. `--probes.max-in-flight 16384`).
//! `SCALE_DISCOVERY=1` gives the targets through file_sd files (one `discovery:` source per
//! protocol of MIX, icmp and tcp only) instead of the config file, whose 16 MiB cap holds
//! about 400,000 services; measuring starts once every source's targets are applied.
//! Every load is bounded by SECONDS and stops by itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn http_get(addr: &str, path: &str) -> String {
    String::from_utf8_lossy(&scrape(addr, path, false).1).into_owned()
}

/// One GET: (whether the body came gzipped, the body as sent). `gzip` asks for
/// `Accept-Encoding: gzip` as Prometheus does.
fn scrape(addr: &str, path: &str, gzip: bool) -> (bool, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (false, Vec::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (false, out);
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let gzipped = head.contains("\r\ncontent-encoding: gzip");
    (gzipped, out.split_off(end + 4))
}

/// Median and max of a list of milliseconds.
fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        v.get(v.len() / 2).copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

/// Sums of every sample of `name` (all label sets) in a scrape.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// (le, cumulative count) of a histogram without labels.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, v) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v.trim().parse().ok()?))
        })
        .collect()
}

fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let d: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = d.last().map_or(0.0, |x| x.1);
    if total == 0.0 {
        return f64::NAN;
    }
    d.iter()
        .find(|(_, c)| *c >= q * total)
        .map_or(f64::INFINITY, |x| x.0)
}

fn proc_stat(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    ((ticks(11) + ticks(12)) / 100.0, rss_kb / 1024.0)
}

/// CPU seconds of the thread named `metrics-encode` (the `/metrics` encoder and its gzip), so
/// a scrape's own CPU can be told from its wall time, which also holds the wait for a core and
/// the transfer.
fn encoder_cpu(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "metrics-encode" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        return (ticks(11) + ticks(12)) / 100.0;
    }
    0.0
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let n: usize = arg(1, 10_000);
    let interval: u64 = arg(2, 10);
    let seconds: u64 = arg(3, 60);
    let mix: String = arg(4, "tcp".to_string());
    let protocols: Vec<&str> = mix.split(',').collect();

    // Targets: one TCP listener on every loopback address, one UDP responder.
    let tcp = TcpListener::bind("0.0.0.0:0").expect("bind tcp");
    let tcp_port = tcp.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in tcp.incoming() {
            drop(c);
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let udp_port = udp.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..len], from);
        }
    });

    let dir = std::env::temp_dir().join(format!("netmon-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // DEFAULTS: more keys for `defaults:`, e.g. `rtt_histogram: false`.
    let extra: String = arg(5, String::new());
    let extra = if extra.is_empty() {
        extra
    } else {
        format!(", {extra}")
    };
    let discovery = std::env::var("SCALE_DISCOVERY").is_ok_and(|v| v == "1");
    let mut cfg = format!("defaults: {{ interval: {interval}s, timeout: 2s{extra} }}\ntargets:\n");
    // With discovery: each protocol's hosts, written as file_sd files of at most 100,000.
    let mut discovered: Vec<(&str, Vec<String>)> = Vec::new();
    // UDP services all go to 127.0.0.1 under distinct names: the responder's socket is bound
    // to 0.0.0.0, so its replies leave from 127.0.0.1 whatever address the probe sent to, and
    // a probe's connected socket would drop replies from any other source.
    let mut udp_services = Vec::new();
    for i in 0..n {
        // 127.0.0.0/8 minus .0 and .255 host parts: plenty of distinct hosts.
        let host = format!(
            "127.{}.{}.{}",
            1 + (i / 62_500) % 250,
            (i / 250) % 250,
            1 + i % 250
        );
        if discovery {
            let p = protocols[i % protocols.len()];
            assert!(
                p == "icmp" || p == "tcp",
                "SCALE_DISCOVERY=1 takes icmp and tcp, not {p}"
            );
            match discovered.iter_mut().find(|(q, _)| *q == p) {
                Some((_, hosts)) => hosts.push(host),
                None => discovered.push((p, vec![host])),
            }
            continue;
        }
        let svc = match protocols[i % protocols.len()] {
            "icmp" => "ICMP".to_string(),
            "udp" => {
                udp_services.push(format!(
                    "      - {{ type: udp, name: u{i}, port: {udp_port}, send: ping }}\n"
                ));
                continue;
            }
            _ => format!("\"TCP:{tcp_port}\""),
        };
        cfg.push_str(&format!("  {host}: {{ services: [{svc}] }}\n"));
    }
    if !udp_services.is_empty() {
        cfg.push_str("  127.0.0.1:\n    services:\n");
        cfg.extend(udp_services);
    }
    if discovery {
        // No static targets: the sources give them all.
        cfg = cfg.replace("targets:\n", "");
        cfg.push_str("discovery:\n");
        for (p, hosts) in &discovered {
            for (k, chunk) in hosts.chunks(100_000).enumerate() {
                let list: Vec<String> = chunk.iter().map(|h| format!("\"{h}\"")).collect();
                let text = format!("[{{\"targets\": [{}]}}]", list.join(","));
                std::fs::write(dir.join(format!("{p}-{k}.json")), text).expect("write file_sd");
            }
            let svc = if *p == "icmp" {
                "ICMP".to_string()
            } else {
                format!("\"TCP:{tcp_port}\"")
            };
            cfg.push_str(&format!(
                "  - {{ file: \"{}/{p}-*.json\", name: {p}, interval: 1m, max_targets: 1000000, services: [{svc}] }}\n",
                dir.display()
            ));
        }
    }
    let cfg_path = dir.join("netmon.yml");
    std::fs::write(&cfg_path, cfg).expect("write config");
    let listen = {
        let l = TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").to_string()
    };
    // NETMON_BIN runs another build (e.g. an older one) under the same load.
    let binary = std::env::var_os("NETMON_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_netmon").into(),
        std::path::PathBuf::from,
    );
    let mut child = Command::new(binary)
        .arg("--config.file")
        .arg(&cfg_path)
        .args(["--web.listen-address", &listen, "--log.level", "warn"])
        .args(
            std::env::var("SCALE_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start netmon");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let (_, idle_rss) = proc_stat(pid);
    if discovery {
        // Until every discovered target is applied (bounded: ten minutes).
        let started = Instant::now();
        loop {
            let text = http_get(&listen, "/metrics");
            let applied = sum(&text, "netmon_discovery_targets");
            if applied as usize >= discovered.iter().map(|(_, h)| h.len()).sum::<usize>() {
                println!(
                    "discovery: {applied:.0} targets applied {:.1} s after start",
                    started.elapsed().as_secs_f64() + 2.0
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "discovered targets not applied within 10 minutes ({applied:.0})"
            );
            // A scrape of a million services is itself seconds of work.
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    // Let the first round (spread over 5 s) and one whole interval pass.
    std::thread::sleep(Duration::from_secs(5 + interval));
    let first = http_get(&listen, "/metrics");
    let (cpu0, _) = proc_stat(pid);
    let enc0 = encoder_cpu(pid);
    let load0 = loadavg();
    let t0 = Instant::now();
    // Scrapes alternate between identity and gzip (as Prometheus asks), one a second.
    let mut scrape_ms = [Vec::new(), Vec::new()];
    let mut bytes = [0usize; 2];
    let mut gzipped = false;
    let mut rss_max: f64 = 0.0;
    let mut i = 0usize;
    while t0.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        let gzip = i % 2 == 1;
        i += 1;
        let (was_gzipped, body) = scrape(&listen, "/metrics", gzip);
        scrape_ms[usize::from(gzip)].push(t.elapsed().as_secs_f64() * 1e3);
        assert!(body.len() > 100, "scrape failed");
        bytes[usize::from(gzip)] = body.len();
        gzipped |= was_gzipped;
        rss_max = rss_max.max(proc_stat(pid).1);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
    }
    let (cpu1, rss) = proc_stat(pid);
    let enc1 = encoder_cpu(pid);
    let wall = t0.elapsed().as_secs_f64();
    let last = http_get(&listen, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let probes = sum(&last, "netmon_probes_total") - sum(&first, "netmon_probes_total");
    let up = sum(&last, "netmon_up");
    let cpu = cpu1 - cpu0;
    let lb0 = buckets(&first, "netmon_scheduler_lateness_seconds");
    let lb1 = buckets(&last, "netmon_scheduler_lateness_seconds");
    println!("scale: {n} services ({mix}) every {interval}s, measured {wall:.0}s after warm-up");
    println!("  load average      before {load0}, after {}", loadavg());
    println!(
        "  probes run        {probes:.0} ({:.0}/s); services up {up:.0}/{n}",
        probes / wall
    );
    println!(
        "  cpu               {cpu:.2} s = {:.1}% of one core",
        100.0 * cpu / wall
    );
    println!(
        "  cpu per 1k probes {:.4} s",
        1000.0 * cpu / probes.max(1.0)
    );
    println!("  rss               idle {idle_rss:.1} MB, end {rss:.1} MB, max {rss_max:.1} MB");
    println!(
        "  lateness          p50 <= {:.4} s, p99 <= {:.4} s (bucket upper bounds)",
        quantile(&lb0, &lb1, 0.5),
        quantile(&lb0, &lb1, 0.99)
    );
    let [plain_ms, gzip_ms] = scrape_ms;
    let (plain_n, gzip_n) = (plain_ms.len(), gzip_ms.len());
    let ((p50, pmax), (g50, gmax)) = (median_max(plain_ms), median_max(gzip_ms));
    println!(
        "  scrape identity   median {p50:.1} ms, max {pmax:.1} ms ({plain_n} scrapes), {:.2} MB",
        bytes[0] as f64 / 1e6
    );
    println!(
        "  scrape gzip       median {g50:.1} ms, max {gmax:.1} ms ({gzip_n} scrapes), {:.2} MB{}",
        bytes[1] as f64 / 1e6,
        if gzipped { "" } else { " (sent uncompressed)" }
    );
    println!(
        "  encoder thread    {:.2} s of CPU = {:.0} ms per scrape ({} scrapes, half gzipped)",
        enc1 - enc0,
        1e3 * (enc1 - enc0) / (plain_n + gzip_n).max(1) as f64,
        plain_n + gzip_n
    );
}
