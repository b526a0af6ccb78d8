//! Reload under load: the real binary probes ~3,000 TCP and UDP services on
//! 127.77.0.0/16 while a thread scrapes `/metrics` without pause, and two reloads (SIGHUP, then
//! `POST /-/reload`) each change a tenth of the services. Then a burst of SIGHUPs.
//!
//! What "started" means for a new service: its series exist in the first scrape after the
//! reload returns (label sets are created when the service starts, before any probe), and its
//! first probe has run within the reload spread (`runner::RELOAD_SPREAD`, 1 s) of the reload,
//! plus slack for a loaded machine. The new services use a 10 s interval so that a 5 s
//! start-up spread would show.
//!
//! Removal is checked two ways: no line of any later scrape carries a removed service's labels,
//! and the listener only removed services used receives nothing after the reload (so their
//! tasks really stopped, which the series alone cannot show).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start};

/// Services on each stable host (half tcp, half udp).
const PER_HOST: usize = 100;
/// Stable hosts: never touched by a reload.
const STABLE_HOSTS: usize = 27;
/// Services in each changing group (a tenth of the whole, together).
const GROUP: usize = 100;
const INTERVAL: &str = "2s";
const TIMEOUT: &str = "1s";

/// One loopback host address with a TCP listener and a UDP echo socket, counting what
/// reaches them.
struct Host {
    ip: Ipv4Addr,
    tcp: u16,
    udp: u16,
    hits: Arc<AtomicU64>,
}

impl Host {
    fn start(ip: Ipv4Addr, stop: &Arc<AtomicBool>) -> Host {
        let hits = Arc::new(AtomicU64::new(0));
        let l = TcpListener::bind((ip, 0)).unwrap();
        let tcp = l.local_addr().unwrap().port();
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                if c.is_ok() {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let u = UdpSocket::bind((ip, 0)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let udp = u.local_addr().unwrap().port();
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    h.fetch_add(1, Ordering::Relaxed);
                    let _ = u.send_to(&buf[..n.max(1)], peer);
                }
            }
        });
        Host { ip, tcp, udp, hits }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The YAML of `n` services named `{prefix}{j}` on this host.
    fn yaml(&self, prefix: &str, n: usize, extra: &str) -> String {
        let mut s = format!("  \"{}\":\n    services:\n", self.ip);
        for j in 0..n {
            if j % 2 == 0 {
                s += &format!(
                    "      - {{ type: tcp, name: {prefix}{j}, port: {}{extra} }}\n",
                    self.tcp
                );
            } else {
                s += &format!(
                    "      - {{ type: udp, name: {prefix}{j}, port: {}, send: \"x\"{extra} }}\n",
                    self.udp
                );
            }
        }
        s
    }

    fn keys(&self, prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|j| format!("{}|{prefix}{j}", self.ip)).collect()
    }
}

/// Wakes a listener thread blocked in accept so it sees the stop flag.
fn unblock(h: &Host) {
    let _ =
        TcpStream::connect_timeout(&SocketAddr::from((h.ip, h.tcp)), Duration::from_millis(200));
}

/// One scrape: when it ran, and `netmon_probes_total` per `host|service`, plus every
/// `host|service` that had any line at all.
struct Scrape {
    start: Instant,
    end: Instant,
    probes: HashMap<String, f64>,
    any: HashSet<String>,
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=\"");
    let at = line.find(&pat)? + pat.len();
    let rest = &line[at..];
    Some(&rest[..rest.find('"')?])
}

fn parse(text: &str, start: Instant) -> Scrape {
    let mut probes = HashMap::new();
    let mut any = HashSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (Some(host), Some(service)) = (label(line, "host"), label(line, "service")) else {
            continue;
        };
        let key = format!("{host}|{service}");
        if line.starts_with("netmon_probes_total{") {
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse().ok()) {
                probes.insert(key.clone(), v);
            }
        }
        any.insert(key);
    }
    Scrape {
        start,
        end: Instant::now(),
        probes,
        any,
    }
}

/// Scrapes `/metrics` back to back in a thread until stopped.
struct Scraper {
    scrapes: Arc<Mutex<Vec<Scrape>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(addr: &str) -> Scraper {
        let scrapes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, s, addr) = (scrapes.clone(), stop.clone(), addr.to_string());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let start = Instant::now();
                let (status, body) = crate::support::http(&addr, "GET", "/metrics");
                assert_eq!(status, 200);
                let scrape = parse(&body, start);
                out.lock().unwrap().push(scrape);
            }
        });
        Scraper {
            scrapes,
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<Scrape> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("the scraper thread never fails");
        }
        std::mem::take(&mut *self.scrapes.lock().unwrap())
    }
}

/// The fewest open fds and threads of `pid` over 20 samples 50 ms apart: each probe in flight
/// holds a socket for a moment, a leak raises the floor.
fn floor(pid: u32) -> (usize, usize) {
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap()
            .count()
    };
    let (mut fds, mut threads) = (usize::MAX, usize::MAX);
    for _ in 0..20 {
        fds = fds.min(count("fd"));
        threads = threads.min(count("task"));
        std::thread::sleep(Duration::from_millis(50));
    }
    (fds, threads)
}

/// Waits until the log holds `count` lines containing `needle`.
fn wait_count(n: &Netmon, needle: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while n.log().iter().filter(|l| l.contains(needle)).count() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} {needle:?} lines within {timeout:?}:\n{}",
            n.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks one reload, asked for at `asked` and returned (logged or answered) at `done`.
#[allow(clippy::too_many_arguments)]
fn check_reload(
    what: &str,
    scrapes: &[Scrape],
    asked: Instant,
    done: Instant,
    unchanged: &[String],
    removed: &[String],
    added: &[String],
    restarted: &[String],
) {
    // Unchanged: present in every scrape, never decreasing, and increasing over the run.
    for key in unchanged {
        let mut last = None::<f64>;
        for (i, s) in scrapes.iter().enumerate() {
            let v = s
                .probes
                .get(key)
                .unwrap_or_else(|| panic!("{what}: {key} missing from scrape {i}"));
            if let Some(l) = last {
                assert!(*v >= l, "{what}: {key} went from {l} to {v} at scrape {i}");
            }
            last = Some(*v);
        }
    }
    let first_after = scrapes
        .iter()
        .position(|s| s.start >= done)
        .expect("scrapes after the reload");
    let before = scrapes
        .iter()
        .rposition(|s| s.end <= asked)
        .expect("a scrape before the reload");
    let grew = unchanged
        .iter()
        .filter(|k| scrapes.last().unwrap().probes[*k] > scrapes[before].probes[*k])
        .count();
    assert_eq!(
        grew,
        unchanged.len(),
        "{what}: every unchanged service kept probing"
    );

    // Removed: no line at all in any scrape that began after the reload returned.
    for (i, s) in scrapes.iter().enumerate().skip(first_after) {
        for key in removed {
            assert!(
                !s.any.contains(key),
                "{what}: removed {key} still has series in scrape {i}"
            );
        }
    }

    // Added and restarted: series at once, a first probe soon.
    for key in added.iter().chain(restarted) {
        assert!(
            scrapes[first_after].any.contains(key),
            "{what}: new {key} has no series in the first scrape after the reload"
        );
    }
    let mut delays: Vec<Duration> = added
        .iter()
        .chain(restarted)
        .map(|key| {
            let s = scrapes[first_after..]
                .iter()
                .find(|s| s.probes.get(key).is_some_and(|v| *v >= 1.0))
                .unwrap_or_else(|| panic!("{what}: {key} never probed"));
            // An upper bound: the probe finished before this scrape ended. Counted from the
            // end of the reload: how long the reload itself takes is reported apart.
            s.end.saturating_duration_since(done)
        })
        .collect();
    delays.sort();
    let gaps: Vec<Duration> = scrapes
        .windows(2)
        .map(|w| w[1].start.saturating_duration_since(w[0].start))
        .collect();
    let max_gap = gaps.iter().max().copied().unwrap_or_default();
    let max = *delays.last().unwrap();
    eprintln!(
        "{what}: reload took {:?}; {} scrapes, longest gap {max_gap:?}; first probe of the {} \
         new/restarted services after the reload returned (upper bound, includes the scrape): min {:?} median {:?} \
         p90 {:?} max {max:?}",
        done - asked,
        scrapes.len(),
        delays.len(),
        delays[0],
        delays[delays.len() / 2],
        delays[delays.len() * 9 / 10],
    );
    // The spread is 1 s; the rest is slack for the reload itself, the semaphore, a busy
    // machine and the scrape period, none of which is what this asserts. A 5 s spread fails.
    let bound = netmon::runner::RELOAD_SPREAD + Duration::from_millis(1500) + max_gap;
    assert!(
        max <= bound,
        "{what}: a new service's first probe came {max:?} after the reload (bound {bound:?})"
    );
}

#[test]
fn reload_under_load_keeps_unchanged_counters_removes_and_starts_services() {
    let _one = crate::one_at_a_time();
    let stop = Arc::new(AtomicBool::new(false));
    let stable: Vec<Host> = (1..=STABLE_HOSTS)
        .map(|k| Host::start(Ipv4Addr::new(127, 77, 0, k as u8), &stop))
        .collect();
    // r: removed by reload 1 (back in reload 2); m: modified by both; n: added by reload 1,
    // removed by reload 2.
    let r = Host::start(Ipv4Addr::new(127, 77, 1, 1), &stop);
    let m = Host::start(Ipv4Addr::new(127, 77, 1, 2), &stop);
    let nh = Host::start(Ipv4Addr::new(127, 77, 1, 3), &stop);

    let head = format!("defaults: {{ interval: {INTERVAL}, timeout: {TIMEOUT} }}\ntargets:\n");
    let stable_yaml: String = stable.iter().map(|h| h.yaml("s", PER_HOST, "")).collect();
    let config_a = format!(
        "{head}{stable_yaml}{}{}",
        r.yaml("r", GROUP, ""),
        m.yaml("m", GROUP, "")
    );
    let config_b = format!(
        "{head}{stable_yaml}{}{}",
        m.yaml("m", GROUP, ", timeout: 900ms"),
        nh.yaml("n", GROUP, ", interval: 10s")
    );
    let unchanged: Vec<String> = stable.iter().flat_map(|h| h.keys("s", PER_HOST)).collect();
    let (rk, mk, nk) = (r.keys("r", GROUP), m.keys("m", GROUP), nh.keys("n", GROUP));

    let mut n = Netmon::start(&config_a, &[]);
    let pid = n.pid();
    // Every service has run once (the first round is spread over at most an interval here).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = parse(&n.scrape(), Instant::now());
        let probed = s.probes.values().filter(|v| **v >= 1.0).count();
        if probed == unchanged.len() + 2 * GROUP {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {probed} services probed after 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let up = crate::support::series(&n.scrape(), "netmon_up", &[])
        .iter()
        .filter(|(_, v)| *v == 1.0)
        .count();
    assert_eq!(up, unchanged.len() + 2 * GROUP, "every loopback service up");

    // Reload 1 by SIGHUP: r removed, m modified, n added.
    let scraper = Scraper::start(&n.addr);
    std::thread::sleep(Duration::from_millis(1500));
    n.write_config(&config_b);
    let asked = Instant::now();
    n.signal("HUP");
    n.wait_log("configuration reloaded", Duration::from_secs(10));
    let done = Instant::now();
    let r_hits = r.hits();
    std::thread::sleep(Duration::from_millis(3500));
    let scrapes = scraper.finish();
    check_reload("SIGHUP", &scrapes, asked, done, &unchanged, &rk, &nk, &mk);
    let reloaded = n
        .log()
        .into_iter()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        reloaded.contains("added=100 removed=100 changed=100 unchanged=2700"),
        "{reloaded}"
    );
    // A removed service's task stopped: its listener hears nothing more. (A probe sent just
    // before the reload may be counted by the listener thread just after; a live group sends
    // 50 a second.)
    assert!(
        r.hits() <= r_hits + 5,
        "removed services kept probing: {r_hits} -> {}",
        r.hits()
    );

    // Reload 2 by POST /-/reload: back to config A.
    let scraper = Scraper::start(&n.addr);
    std::thread::sleep(Duration::from_millis(1000));
    n.write_config(&config_a);
    let asked = Instant::now();
    let (status, body) = n.post("/-/reload");
    let done = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("100 added, 100 removed, 100 changed, 2700 unchanged"),
        "{body}"
    );
    let n_hits = nh.hits();
    std::thread::sleep(Duration::from_millis(3000));
    let scrapes = scraper.finish();
    check_reload("POST", &scrapes, asked, done, &unchanged, &nk, &rk, &mk);
    assert!(nh.hits() <= n_hits + 5, "removed services kept probing");

    // A burst of 50 SIGHUPs, alternating the file between A and B, ending on A.
    let (fds_before, threads_before) = floor(pid);
    let open_before = crate::support::metric(&n.scrape(), "process_open_fds", &[]).unwrap();
    let reloads_before = n
        .log()
        .iter()
        .filter(|l| l.contains("configuration reloaded"))
        .count();
    for i in 0..50 {
        n.write_config(if i % 2 == 0 { &config_b } else { &config_a });
        n.signal("HUP");
        std::thread::sleep(Duration::from_millis(5));
    }
    n.write_config(&config_a);
    n.signal("HUP");
    // Signals coalesce: wait for at least one more reload, then for quiet.
    wait_count(
        &n,
        "configuration reloaded",
        reloads_before + 1,
        Duration::from_secs(10),
    );
    let mut count = 0;
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let c = n
            .log()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count();
        if c == count {
            break;
        }
        count = c;
    }
    // Give anything still stopping a round to go, then the n group's listener must be silent
    // (config A has no n service) and nothing may have piled up.
    std::thread::sleep(Duration::from_millis(2500));
    let quiet = nh.hits();
    let (fds_after, threads_after) = floor(pid);
    let open_after = crate::support::metric(&n.scrape(), "process_open_fds", &[]).unwrap();
    eprintln!(
        "SIGHUP burst: {} reloads ran for 51 signals; fds {fds_before} -> {fds_after} \
         (process_open_fds {open_before} -> {open_after}), threads {threads_before} -> \
         {threads_after}",
        count - reloads_before
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        nh.hits(),
        quiet,
        "services of config B still probing after the burst"
    );
    // Floors, so in-flight probes hardly count; a leak of one fd per reload would add 25+.
    assert!(
        fds_after <= fds_before + 8,
        "fds grew: {fds_before} -> {fds_after}"
    );
    assert!(
        threads_after <= threads_before + 2,
        "threads grew: {threads_before} -> {threads_after}"
    );
    let s = parse(&n.scrape(), Instant::now());
    assert_eq!(
        s.any.len(),
        unchanged.len() + 2 * GROUP,
        "exactly config A's services have series"
    );
    assert_eq!(
        crate::support::metric(&n.scrape(), "netmon_config_last_reload_successful", &[]),
        Some(1.0)
    );

    stop.store(true, Ordering::Relaxed);
    for h in stable.iter().chain([&r, &m, &nh]) {
        unblock(h);
    }
    n.signal("TERM");
    assert_eq!(n.wait_exit(Duration::from_secs(10)), Some(0));
}
