//! Faults from outside that must cost only what they touch (docs/faults.md), against the real
//! binary:
//!
//! * a name server that answers 3 s late, for 200 services, in a network namespace made by the
//!   test: the other services' probes keep succeeding, scrapes stay fast, and the slow names
//!   fail with reason `dns` and a sentence saying how long the lookup was allowed;
//! * 1,100 clients that send half a request and wait, with netmon limited to 1,024 open files:
//!   the services stay up, scrapes keep working, and the idle connections are closed;
//! * 2,000 simultaneous scrapes of 1,000 services: memory grows by a bounded amount and probes
//!   start on time.
//!
//! Each scenario is bounded in count and time and runs alone (they measure timing). The
//! namespace needs root and `ip`; without them that test skips with a message, unless
//! `NETMON_REQUIRE_PRIVILEGE_TESTS=1` (CI), where it fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Netmon, Start, metric, series};

/// Raises this process's open-file limit to `n` (the tests open more sockets than the usual
/// 1,024), within the hard limit.
fn raise_fd_limit(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < n {
        setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard).unwrap();
    }
}

/// A TCP listener on 127.0.0.1 that accepts and drops connections until `stop`.
fn accepting(stop: &Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = stop.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port
}

/// GET `path` with a deadline; the status, body length and time taken, or why it failed.
fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, usize, Duration), String> {
    let started = Instant::now();
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&raw[..raw.len().min(16)])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {} bytes", raw.len()))?;
    Ok((status, raw.len(), started.elapsed()))
}

/// Sum of `name` over the series whose labels include `labels`.
fn total(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(text, name, labels).iter().map(|(_, v)| v).sum()
}

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A slow name server

/// Why the namespace test cannot run here, if it cannot.
fn namespace_missing() -> Option<String> {
    match testkit::process::euid() {
        Some(0) => {}
        euid => {
            return Some(format!(
                "not running as root (euid {euid:?}): cannot make a network namespace"
            ));
        }
    }
    testkit::process::missing_tool(&["ip"], "apt-get install iproute2")
}

fn can_make_namespace(test: &str) -> bool {
    let Some(why) = namespace_missing() else {
        return true;
    };
    testkit::process::not_run("NETMON_REQUIRE_PRIVILEGE_TESTS", test, &why);
    false
}

/// A network namespace with its own resolv.conf and hosts (`ip netns exec` mounts
/// `/etc/netns/NAME/*` over `/etc/*` for what it runs), removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(resolv_conf: &str, hosts: &str) -> Netns {
        let name = format!("netmon-faults-{}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["netns", "add", &name]);
        let ns = Netns { name };
        run(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let etc = ns.etc();
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(format!("{etc}/resolv.conf"), resolv_conf).unwrap();
        std::fs::write(format!("{etc}/hosts"), hosts).unwrap();
        ns
    }

    fn etc(&self) -> String {
        format!("/etc/netns/{}", self.name)
    }

    /// Runs `f` on a thread inside the namespace: sockets it (and the threads it starts)
    /// opens live there.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.etc());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A name server on 127.0.0.1:53 (of the current namespace) that answers every A query with
/// 127.0.0.1 and every other query with no record, `delay` after it arrived.
fn late_name_server(delay: Duration) -> testkit::dns::Server {
    use testkit::dns::{NOERROR, Query, Server};
    Server::on(
        std::net::IpAddr::from([127, 0, 0, 1]),
        53,
        move |bytes, _| {
            Query::parse(bytes)
                .map(|q| {
                    vec![(
                        delay,
                        q.answer(NOERROR, &[std::net::Ipv4Addr::LOCALHOST], 300),
                    )]
                })
                .unwrap_or_default()
        },
    )
    .expect("bind 127.0.0.1:53 in the test's namespace")
}

#[test]
fn a_slow_name_server_costs_only_the_names_it_serves() {
    let _one = crate::one_at_a_time();
    if !can_make_namespace("a_slow_name_server_costs_only_the_names_it_serves") {
        return;
    }
    let ns = Netns::create(
        "nameserver 127.0.0.1\n",
        "127.0.0.1 localhost fast.test\n::1 localhost\n",
    );
    let name = ns.name.clone();
    let report = ns.run(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let name_server = late_name_server(Duration::from_secs(3));
        let port = accepting(&stop);
        // Every second (timeout 900 ms, so lookups get 360 ms): 200 lookups a second, each
        // answered 3 s late, more than tokio's 512 blocking threads could wait on together.
        let mut config = String::from("targets:\n  slow.test:\n    interval: 1s\n    services:\n");
        for i in 0..200 {
            config.push_str(&format!(
                "      - {{ type: tcp, name: s{i}, port: {port} }}\n"
            ));
        }
        let mut fast =
            String::from("  fast.test:\n    interval: 500ms\n    timeout: 400ms\n    services:\n");
        for i in 0..10 {
            fast.push_str(&format!(
                "      - {{ type: tcp, name: f{i}, port: {port} }}\n"
            ));
        }
        config.push_str(&fast);
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &name, crate::support::BIN]);
        let mut n = Netmon::start_command(command, tempfile::tempdir().unwrap(), &config);

        let run_for = Duration::from_secs(20);
        let started = Instant::now();
        let mut slowest_scrape = Duration::ZERO;
        let mut scrapes = 0;
        let mut most_threads = 0;
        while started.elapsed() < run_for {
            let took = match get(&n.addr, "/metrics", Duration::from_secs(10)) {
                Ok((200, _, took)) => took,
                _ => Duration::from_secs(10),
            };
            slowest_scrape = slowest_scrape.max(took);
            scrapes += 1;
            most_threads = most_threads.max(threads(n.pid()));
            std::thread::sleep(Duration::from_millis(250));
        }
        let text = n.get("/metrics").1;
        let line = n
            .log()
            .into_iter()
            .find(|l| l.contains("DOWN") && l.contains("slow.test"))
            .unwrap_or_default();
        let queries = name_server.udp_queries();
        // Recovery: a reload removes the slow services, and the rest must be up and on
        // schedule at once, not after the lookups left behind have drained.
        n.write_config(&format!("targets:\n{fast}"));
        let reloaded = Instant::now();
        let (status, body) = n.post("/-/reload");
        assert_eq!(status, 200, "{body}");
        let recovery = loop {
            let text = get_text(&n.addr, "/metrics");
            if recovered(&text, 10) {
                break reloaded.elapsed();
            }
            assert!(
                reloaded.elapsed() < Duration::from_secs(15),
                "not recovered 15 s after the reload:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        n.assert_alive_without_panic();
        stop.store(true, Ordering::SeqCst);
        (
            text,
            line,
            slowest_scrape,
            scrapes,
            most_threads,
            queries,
            recovery,
        )
    });
    let (text, line, slowest_scrape, scrapes, most_threads, queries, recovery) = report;
    let fast = [("host", "fast.test")];
    let slow = [("host", "slow.test")];
    let fast_probes = total(&text, "netmon_probes_total", &fast);
    let fast_failed = total(&text, "netmon_probe_failures_total", &fast);
    let slow_probes = total(&text, "netmon_probes_total", &slow);
    let slow_dns = total(
        &text,
        "netmon_probe_failures_total",
        &[("host", "slow.test"), ("reason", "dns")],
    );
    let timeouts = total(
        &text,
        "netmon_probe_failures_total",
        &[("reason", "timeout")],
    );
    eprintln!(
        "slow name server: unrelated probes {}/{} ok; slow probes {slow_dns}/{slow_probes} failed dns; \
         {queries} queries reached the server; slowest of {scrapes} scrapes {slowest_scrape:?}; \
         at most {most_threads} threads; up and on schedule {recovery:?} after the reload removing them",
        fast_probes - fast_failed,
        fast_probes
    );
    assert!(
        fast_probes >= 300.0,
        "too few unrelated probes ran: {fast_probes}"
    );
    assert!(
        (fast_probes - fast_failed) / fast_probes >= 0.99,
        "unrelated probes failed: {fast_failed} of {fast_probes}"
    );
    assert!(
        slowest_scrape < Duration::from_secs(1),
        "a scrape took {slowest_scrape:?}"
    );
    assert!(
        slow_probes >= 2000.0,
        "too few slow probes ran: {slow_probes}"
    );
    assert_eq!(
        slow_dns, slow_probes,
        "every slow probe fails with reason dns"
    );
    assert_eq!(timeouts, 0.0, "no probe runs into its timeout");
    assert!(
        line.contains("reason=dns")
            && line.contains("name lookup of slow.test took longer than 360ms"),
        "{line}"
    );
    // One query per name (A and AAAA) at a time, resent at most a few times, not one per probe.
    assert!(
        (queries as f64) < slow_probes / 2.0,
        "{queries} queries for {slow_probes} probes"
    );
    assert!(most_threads < 40, "{most_threads} threads");
    assert!(
        recovery < Duration::from_secs(2),
        "the unrelated probes took {recovery:?} to recover"
    );
}

/// The `/metrics` text, or an empty string when the scrape fails.
fn get_text(addr: &str, path: &str) -> String {
    let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
        return String::new();
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// Whether the slow services are gone from `text` and each of the `fast` `fast.test`
/// services is up and probed within the last 750 ms (its interval is 500 ms): on schedule.
fn recovered(text: &str, fast: usize) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let gone = series(text, "netmon_up", &[("host", "slow.test")]).is_empty();
    let up = series(text, "netmon_up", &[("host", "fast.test")]);
    let last = series(
        text,
        "netmon_last_probe_timestamp_seconds",
        &[("host", "fast.test")],
    );
    gone && up.len() == fast
        && up.iter().all(|(_, v)| *v == 1.0)
        && last.len() == fast
        && last.iter().all(|(_, t)| now - t < 0.75)
}

// ---------------------------------------------------------------------------------------------
// Idle, half-open and greedy web clients

/// Whether the peer has closed `s` (a read sees the end or a reset), waiting at most a moment.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a 408 or 4xx for the half request): read on to the end.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn half_open_and_idle_clients_cannot_take_the_web_side_down() {
    let _one = crate::one_at_a_time();
    raise_fd_limit(8192);
    let stop = Arc::new(AtomicBool::new(false));
    let port = accepting(&stop);
    let mut config = String::from(
        "targets:\n  127.0.0.1:\n    interval: 500ms\n    timeout: 400ms\n    services:\n",
    );
    for i in 0..20 {
        config.push_str(&format!(
            "      - {{ type: tcp, name: t{i}, port: {port} }}\n"
        ));
    }
    let mut command = Command::new("prlimit");
    command.args([
        "--nofile=1024:1024",
        "--",
        crate::support::BIN,
        "--web.read-header-timeout",
        "3s",
        "--web.idle-timeout",
        "4s",
    ]);
    let n = Netmon::start_command(command, tempfile::tempdir().unwrap(), &config);
    n.wait_metric(
        "netmon_up",
        &[("service", "t19")],
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let before = n.scrape();
    let fds_before = n.open_fds();

    // 1,100 clients that send half a request and wait, and 20 that send nothing.
    let addr: std::net::SocketAddr = n.addr.parse().unwrap();
    let mut half_open = Vec::new();
    for _ in 0..1100 {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: netmon\r\nUser-Agent: half");
        half_open.push(s);
    }
    let mut silent: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    let opened = Instant::now();
    assert!(
        half_open.len() >= 1000,
        "only {} connected",
        half_open.len()
    );

    // Scrapes keep working (once the half-open connections have been quiet for a second, a
    // scrape takes the place of the oldest), and the probes do not notice.
    std::thread::sleep(Duration::from_millis(1200));
    let mut slowest = Duration::ZERO;
    let mut scrape_errors = Vec::new();
    for _ in 0..10 {
        match get(&n.addr, "/metrics", Duration::from_secs(5)) {
            Ok((200, _, took)) => slowest = slowest.max(took),
            other => scrape_errors.push(format!("{other:?}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fds_peak = n.open_fds();

    // Every half-open connection is closed within the header timeout (3s), every silent one
    // within the idle timeout (4s, checked every second).
    let deadline = opened + Duration::from_secs(8);
    loop {
        half_open.retain_mut(|s| !closed_by_peer(s));
        silent.retain_mut(|s| !closed_by_peer(s));
        if (half_open.is_empty() && silent.is_empty()) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_closed = opened.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    let after = match get(&n.addr, "/-/healthy", Duration::from_secs(5)) {
        Ok(_) => n.get("/metrics").1,
        Err(_) => String::new(),
    };
    let fds_after = n.open_fds();
    stop.store(true, Ordering::SeqCst);
    let probes =
        total(&after, "netmon_probes_total", &[]) - total(&before, "netmon_probes_total", &[]);
    let failed = total(&after, "netmon_probe_failures_total", &[])
        - total(&before, "netmon_probe_failures_total", &[]);
    eprintln!(
        "half-open clients: {probes} probes meanwhile, {failed} failed; {} of 10 scrapes failed, \
         slowest of the others {slowest:?}; fds {fds_before} before, {fds_peak} with the clients, \
         {fds_after} after; {} half-open and {} silent connections open after {all_closed:?}",
        scrape_errors.len(),
        half_open.len(),
        silent.len()
    );
    assert!(scrape_errors.is_empty(), "{scrape_errors:?}");
    assert!(
        half_open.is_empty() && silent.is_empty(),
        "connections left open"
    );
    for i in 0..20 {
        assert_eq!(
            metric(&after, "netmon_up", &[("service", &format!("t{i}"))]),
            Some(1.0),
            "{after}"
        );
    }
    assert_eq!(failed, 0.0, "{after}");
    assert!(probes >= 20.0 * 8.0, "probes stalled: {probes}");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?}"
    );
    assert!(
        fds_peak < fds_before + 300,
        "{fds_peak} fds with the clients"
    );
    assert!(
        fds_after < fds_before + 10,
        "{fds_after} fds after, {fds_before} before"
    );
}

/// `netmon_scheduler_lateness_seconds`: (starts, starts later than 102.4 ms).
fn late_starts(text: &str) -> (f64, f64) {
    let count = metric(text, "netmon_scheduler_lateness_seconds_count", &[]).unwrap_or(0.0);
    let on_time = metric(
        text,
        "netmon_scheduler_lateness_seconds_bucket",
        &[("le", "0.1024")],
    )
    .unwrap_or(0.0);
    (count, count - on_time)
}

#[test]
fn simultaneous_scrapes_share_one_encoding_and_leave_probes_on_time() {
    let _one = crate::one_at_a_time();
    raise_fd_limit(8192);
    let port = crate::support::closed_port();
    let mut config =
        String::from("targets:\n  127.0.0.1:\n    interval: 2s\n    timeout: 1s\n    services:\n");
    for i in 0..1000 {
        config.push_str(&format!(
            "      - {{ type: tcp, name: t{i}, port: {port} }}\n"
        ));
    }
    let n = Netmon::start(&config, &[]);
    std::thread::sleep(Duration::from_secs(4));
    let before = n.scrape();
    let body_bytes = before.len();
    let rss_before = n.rss_bytes();

    let peak = Arc::new(Mutex::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), n.pid());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024;
                let mut p = peak.lock().unwrap();
                *p = (*p).max(rss);
                drop(p);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // Three bursts of 2,000 scrapes at once, each scrape on its own connection.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = n.addr.clone();
    let started = Instant::now();
    let (ok, refused) = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut ok, mut refused) = (0usize, 0usize);
        for _ in 0..3 {
            let tasks: Vec<_> = (0..2000)
                .map(|_| {
                    let addr = addr.clone();
                    tokio::spawn(async move {
                        let scrape = async {
                            let mut s = tokio::net::TcpStream::connect(&addr).await?;
                            s.write_all(
                                b"GET /metrics HTTP/1.1\r\nHost: netmon\r\nConnection: close\r\n\r\n",
                            )
                            .await?;
                            let mut sink = vec![0u8; 64 * 1024];
                            let mut got = 0usize;
                            loop {
                                let k = s.read(&mut sink).await?;
                                if k == 0 {
                                    break;
                                }
                                got += k;
                            }
                            Ok::<usize, std::io::Error>(got)
                        };
                        tokio::time::timeout(Duration::from_secs(30), scrape).await
                    })
                })
                .collect();
            for t in tasks {
                match t.await {
                    Ok(Ok(Ok(got))) if got > 1000 => ok += 1,
                    _ => refused += 1,
                }
            }
        }
        (ok, refused)
    });
    let abuse = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let after = n.scrape();
    let peak = *peak.lock().unwrap();
    let growth = peak.saturating_sub(rss_before);
    let (count_before, late_before) = late_starts(&before);
    let (count_after, late_after) = late_starts(&after);
    let (starts, late) = (count_after - count_before, late_after - late_before);
    eprintln!(
        "simultaneous scrapes: {ok} served, {refused} refused or cut, in {abuse:?}; body {body_bytes} bytes; \
         RSS {} MiB before, peak {} MiB (+{} MiB); {late} of {starts} probe starts later than 102 ms",
        rss_before >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(ok >= 1000, "only {ok} of 6000 scrapes were served");
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    assert!(starts >= 1000.0, "too few probe starts: {starts}");
    // Measured on a quiet machine: 0 late (docs/faults.md; before the fix about two thirds
    // were). The bound leaves room for a busy CI machine and the other tests of this binary.
    assert!(
        late <= starts * 0.10,
        "{late} of {starts} probe starts were late by more than 100 ms"
    );
}
