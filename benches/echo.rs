//! Benchmark: the UDP echo server and client against a C-level ceiling and the
//! server's defences under a flood. `bench/echo.sh` runs every mode.
//!
//! `cargo bench --bench echo -- MODE [SECONDS]`, MODE one of:
//! - `server`: a closed-loop load generator (several sockets, batched `sendmmsg`/`recvmmsg`, a
//!   bounded window of datagrams in flight per socket) drives, in turn and with the same load,
//!   the C reflector `bench/reflector.c` (compiled here with gcc), `netmon echo-server` with the
//!   rate limit off, and with the rate limit on but never reached; 64-byte datagrams for SECONDS
//!   (default 5) each, after a 1 s warm-up. Prints datagrams echoed per second, the server's
//!   CPU (from /proc/PID/stat) and CPU nanoseconds per datagram.
//! - `client`: `client::Session` (what `netmon echo` runs) against the C reflector at 50k and
//!   100k messages/s and flat out, then the `netmon echo` binary itself; prints messages/s
//!   received and the client's CPU.
//! - `abuse`: `netmon echo-server --rate-limit 1000` flooded from 127.0.0.3 flat out for SECONDS
//!   (default 10) while a legitimate client on 127.0.0.1 sends 500 messages/s; then datagrams
//!   from source ports 7 and 19, from a source outside `--allow`, and oversized ones. Prints the
//!   legitimate client's reply ratio and the server's counters.
//!
//! The bench pins itself to CPU 0 and the server to CPU 1 with `taskset` (set ECHO_BENCH_PIN=0
//! to disable), so "one core" means one core. Every load is bounded by time and stops by itself.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagram size for throughput runs.
const SIZE: usize = 64;
/// Datagrams per system call in the generator.
const BATCH: usize = 32;
/// Datagrams in flight per generator socket at most.
const WINDOW: u64 = 256;
/// Generator sockets.
const SOCKETS: usize = 4;
/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const HZ: f64 = 100.0;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn pin() -> bool {
    std::env::var("ECHO_BENCH_PIN").map_or(true, |v| v != "0")
}

/// CPU seconds (user + system) of a process so far, and its state letter.
fn cpu(pid: u32) -> (f64, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may contain spaces, closed by the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let state = f.first().and_then(|s| s.chars().next()).unwrap_or('?');
    ((t(11) + t(12)) / HZ, state)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
    s.local_addr().expect("local addr").port()
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
    l.local_addr().expect("local addr").port()
}

fn wait_udp_ready(addr: SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(50))).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut b = [0u8; 64];
    while Instant::now() < deadline {
        let _ = s.send_to(&[1u8; 40], addr);
        if s.recv_from(&mut b).is_ok() {
            return;
        }
    }
    panic!("no echo from {addr} within 10 s");
}

/// A server under test: its process, address and a name.
struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn pinned(cmd: &str, cpu_list: &str) -> Command {
    if pin() {
        let mut c = Command::new("taskset");
        c.args(["-c", cpu_list, cmd]);
        c
    } else {
        Command::new(cmd)
    }
}

fn reflector_bin() -> String {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let out = format!("{dir}/echo-reflector");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/reflector.c");
    let ok = Command::new("gcc")
        .args(["-O2", "-o", &out, src])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "gcc could not build {src}");
    out
}

fn start_reflector(bin: &str) -> Server {
    let port = free_port();
    let child = pinned(bin, "1")
        .args(["127.0.0.1", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the reflector");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_udp_ready(addr);
    Server {
        name: "C reflector (recvmmsg/sendmmsg, 32 per call)".into(),
        child,
        addr,
    }
}

fn start_netmon(name: &str, extra: &[&str]) -> Server {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = pinned(env!("CARGO_BIN_EXE_netmon"), "1")
        .args([
            "echo-server",
            "--listen",
            &addr.to_string(),
            "--log.level",
            "warn",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start netmon echo-server");
    wait_udp_ready(addr);
    Server {
        name: name.into(),
        child,
        addr,
    }
}

fn udp_socket(local: &str, peer: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(local).expect("bind generator socket");
    s.connect(peer).expect("connect");
    s.set_nonblocking(true).expect("nonblocking");
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
    let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
    s
}

/// Sends up to `n` (≤ BATCH) copies of `payload` on a connected socket in one call.
fn send_batch(
    s: &UdpSocket,
    h: &mut MultiHeaders<SockaddrStorage>,
    payload: &[u8],
    n: usize,
) -> usize {
    let iovs: Vec<[IoSlice<'_>; 1]> = (0..n).map(|_| [IoSlice::new(payload)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = vec![None; n];
    let no: [nix::sys::socket::ControlMessage<'_>; 0] = [];
    match sendmmsg(
        s.as_raw_fd(),
        h,
        iovs.iter(),
        &addrs,
        no,
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(r) => r.count(),
        Err(_) => 0,
    }
}

/// Receives what is queued, up to BATCH datagrams, without waiting.
fn recv_batch(
    s: &UdpSocket,
    h: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [[u8; 2048]],
) -> usize {
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
        bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    match recvmmsg(
        s.as_raw_fd(),
        h,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    ) {
        Ok(r) => r.count(),
        Err(_) => 0,
    }
}

/// Closed loop: keeps WINDOW datagrams in flight on each of SOCKETS sockets until `stop`,
/// adding every reply to `echoed`. A socket silent for 20 ms forgets its window (losses).
fn generator(peer: SocketAddr, stop: Arc<AtomicBool>, echoed: Arc<AtomicU64>) {
    let socks: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| udp_socket("127.0.0.1:0", peer))
        .collect();
    let payload = [0x5au8; SIZE];
    let mut sh = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut rh = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut inflight = [0u64; SOCKETS];
    let mut last = [Instant::now(); SOCKETS];
    while !stop.load(Ordering::Relaxed) {
        for (i, s) in socks.iter().enumerate() {
            while inflight[i] + BATCH as u64 <= WINDOW {
                let n = send_batch(s, &mut sh, &payload, BATCH);
                if n == 0 {
                    break;
                }
                inflight[i] += n as u64;
            }
            let mut got = 0;
            loop {
                let n = recv_batch(s, &mut rh, &mut bufs);
                got += n;
                if n < BATCH {
                    break;
                }
            }
            if got > 0 {
                inflight[i] = inflight[i].saturating_sub(got as u64);
                echoed.fetch_add(got as u64, Ordering::Relaxed);
                last[i] = Instant::now();
            } else if last[i].elapsed() > Duration::from_millis(20) {
                inflight[i] = 0;
                last[i] = Instant::now();
            }
        }
    }
}

/// One measured run against `server`: (datagrams echoed per second, server CPU share of one
/// core, CPU ns per echoed datagram).
fn measure(server: &Server, seconds: f64) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let g = {
        let (stop, echoed, peer) = (stop.clone(), echoed.clone(), server.addr);
        std::thread::spawn(move || generator(peer, stop, echoed))
    };
    std::thread::sleep(Duration::from_secs(1));
    let pid = server.child.id();
    let (c0, _) = cpu(pid);
    let n0 = echoed.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (c1, _) = cpu(pid);
    let n1 = echoed.load(Ordering::Relaxed);
    let dt = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = g.join();
    let pps = (n1 - n0) as f64 / dt;
    let share = (c1 - c0) / dt;
    (pps, share, (c1 - c0) * 1e9 / (n1 - n0).max(1) as f64)
}

fn pin_self() {
    if pin() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn header(mode: &str) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "echo bench {mode}: {cores} cores, {cpu_model}, pinned={}, load average {}",
        pin(),
        loadavg()
    );
}

fn server_mode() {
    let seconds: f64 = arg(1, 5.0);
    let rounds: usize = arg(2, 2);
    header("server");
    let bin = reflector_bin();
    pin_self();
    println!(
        "{SIZE}-byte datagrams, {SOCKETS} sockets x {WINDOW} in flight, {seconds} s per run, {rounds} rounds"
    );
    println!(
        "{:<52} {:>12} {:>10} {:>12}",
        "server", "echoed/s", "cpu", "cpu ns/dgram"
    );
    let mut best: Vec<(String, f64, f64, f64)> = Vec::new();
    for _ in 0..rounds {
        let runs: Vec<Box<dyn Fn() -> Server>> = vec![
            Box::new(|| start_reflector(&bin)),
            Box::new(|| start_netmon("netmon echo-server --rate-limit 0", &["--rate-limit", "0"])),
            Box::new(|| {
                start_netmon(
                    "netmon echo-server --rate-limit 100000000",
                    &["--rate-limit", "100000000"],
                )
            }),
        ];
        for (i, start) in runs.iter().enumerate() {
            let s = start();
            let (pps, share, ns) = measure(&s, seconds);
            println!(
                "{:<52} {:>12.0} {:>9.0}% {:>12.0}   (load {})",
                s.name,
                pps,
                share * 100.0,
                ns,
                loadavg()
            );
            if best.len() <= i {
                best.push((s.name.clone(), pps, share, ns));
            } else if pps > best[i].1 {
                best[i] = (s.name.clone(), pps, share, ns);
            }
        }
    }
    println!("best of {rounds}:");
    let (cp, cns) = (best[0].1, best[0].3);
    for (name, pps, share, ns) in &best {
        println!(
            "{name:<52} {pps:>12.0} {:>9.0}% {ns:>12.0}   {:>5.1}% of C pps, {:>5.1}% of C per-core efficiency",
            share * 100.0,
            pps * 100.0 / cp,
            cns * 100.0 / ns
        );
    }
}

fn client_session(addr: SocketAddr, count: u64, interval: Duration) {
    use netmon::echo::client::{Report, Session, SessionOptions, connect};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let me = std::process::id();
    let (c0, _) = cpu(me);
    let report = rt.block_on(async {
        let socket = connect(addr).await.expect("connect");
        let session = Session::new(SessionOptions {
            count,
            interval,
            size: SIZE,
            wait: Duration::from_secs(1),
        });
        let mut report = Report::default();
        let mut events = 0u64;
        session
            .run(
                &socket,
                &tokio_util::sync::CancellationToken::new(),
                &mut report,
                |_| events += 1,
            )
            .await
            .expect("session");
        report
    });
    let (c1, _) = cpu(me);
    let secs = report.elapsed.as_secs_f64();
    let label = if interval.is_zero() {
        "flat out (-i 0)".to_string()
    } else {
        format!(
            "{:.0}/s (-i {}us)",
            1.0 / interval.as_secs_f64(),
            interval.as_micros()
        )
    };
    println!(
        "Session {label:<22} sent {:>7} received {:>7} ({:>6.2}%) in {:>6.3} s = {:>8.0} msg/s, client cpu {:.2} s ({:.0}%, {:.2} us/msg)",
        report.sent,
        report.received,
        report.received as f64 * 100.0 / report.sent.max(1) as f64,
        secs,
        report.received as f64 / secs,
        c1 - c0,
        (c1 - c0) * 100.0 / secs,
        (c1 - c0) * 1e6 / report.sent.max(1) as f64
    );
}

/// Runs the `netmon echo` binary to completion; returns its CPU seconds (read while it is a
/// zombie, before it is reaped), wall time and last summary line.
fn client_cli(addr: SocketAddr, count: u64, interval: &str) {
    let t0 = Instant::now();
    let mut child = pinned(env!("CARGO_BIN_EXE_netmon"), "0")
        .args([
            "echo",
            &addr.to_string(),
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start netmon echo");
    let mut out = child.stdout.take().expect("stdout");
    // Read everything (a terminal would), keep only the summary.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s.lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ")
    });
    let pid = child.id();
    let mut last = 0.0;
    loop {
        let (c, state) = cpu(pid);
        if state == 'Z' || state == '?' {
            break;
        }
        last = c;
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (c, _) = cpu(pid);
    let c = if c > 0.0 { c } else { last };
    let _ = child.wait();
    let wall = t0.elapsed().as_secs_f64();
    let summary = reader.join().unwrap_or_default();
    println!(
        "netmon echo -c {count} -i {interval}: wall {wall:.3} s, cpu {c:.2} s ({:.0}%): {summary}",
        c * 100.0 / wall
    );
}

fn client_mode() {
    let count: u64 = arg(1, 200_000);
    header("client");
    let bin = reflector_bin();
    pin_self();
    let r = start_reflector(&bin);
    for interval_us in [20, 10, 0] {
        client_session(r.addr, count, Duration::from_micros(interval_us));
    }
    for interval in ["20us", "10us", "0"] {
        client_cli(r.addr, count, interval);
    }
    println!("load average {}", loadavg());
}

fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn counter(text: &str, result: &str) -> u64 {
    let key = format!("netmon_echo_server_packets_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sends `n` datagrams of `size` bytes from `local` and counts replies within 300 ms of the
/// last; `None` when `local` cannot be bound (ports 7 and 19 need root).
fn probe_from(local: &str, peer: SocketAddr, n: usize, size: usize) -> Option<usize> {
    let s = UdpSocket::bind(local).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    let payload = vec![7u8; size];
    for _ in 0..n {
        let _ = s.send_to(&payload, peer);
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut got = 0;
    let mut b = vec![0u8; 4096];
    while s.recv_from(&mut b).is_ok() {
        got += 1;
    }
    Some(got)
}

fn abuse_mode() {
    let seconds: u64 = arg(1, 10);
    header("abuse");
    pin_self();
    let metrics_port = free_tcp_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let s = start_netmon(
        "netmon echo-server --rate-limit 1000",
        &[
            "--rate-limit",
            "1000",
            "--max-size",
            "512",
            "--allow",
            "127.0.0.1",
            "--allow",
            "127.0.0.3",
            "--web.listen-address",
            &metrics,
        ],
    );
    let before = http_get(&metrics, "/metrics");
    let pid = s.child.id();
    // The flood: one source (127.0.0.3), open loop, flat out, for `seconds`.
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let f = {
        let (stop, flooded, peer) = (stop.clone(), flooded.clone(), s.addr);
        std::thread::spawn(move || {
            let sock = udp_socket("127.0.0.3:0", peer);
            let payload = [0xa5u8; SIZE];
            let mut h = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut rh = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut bufs = vec![[0u8; 2048]; BATCH];
            while !stop.load(Ordering::Relaxed) {
                let n = send_batch(&sock, &mut h, &payload, BATCH);
                flooded.fetch_add(n as u64, Ordering::Relaxed);
                // Its 1000 replies a second are read and ignored.
                recv_batch(&sock, &mut rh, &mut bufs);
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (c0, _) = cpu(pid);
    let t0 = Instant::now();
    // The legitimate client: 500 messages/s, under the limit, for the flood's duration.
    let count = seconds * 500;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(async {
        use netmon::echo::client::{Report, Session, SessionOptions, connect};
        let socket = connect(s.addr).await.expect("connect");
        let session = Session::new(SessionOptions {
            count,
            interval: Duration::from_millis(2),
            size: SIZE,
            wait: Duration::from_secs(1),
        });
        let mut report = Report::default();
        let _ = session
            .run(
                &socket,
                &tokio_util::sync::CancellationToken::new(),
                &mut report,
                |_| {},
            )
            .await;
        report
    });
    let dt = t0.elapsed().as_secs_f64();
    let (c1, _) = cpu(pid);
    let flood_mid = flooded.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = f.join();
    let flood_total = flooded.load(Ordering::Relaxed);
    let during = http_get(&metrics, "/metrics");
    println!(
        "flood from 127.0.0.3: {flood_total} datagrams sent ({:.0}/s offered, limit 1000/s); server cpu {:.0}% of one core",
        flood_mid as f64 / (dt + 0.3),
        (c1 - c0) * 100.0 / dt
    );
    println!(
        "legitimate client 127.0.0.1 at 500/s during the flood: sent {} received {} = {:.2}% (target >= 99%), late {}, rtt max {:.3} ms",
        report.sent,
        report.received,
        report.received as f64 * 100.0 / report.sent.max(1) as f64,
        report.late,
        report
            .rtts
            .iter()
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    let n = 200;
    for (what, local, size) in [
        ("source port 7", "127.0.0.1:7", SIZE),
        ("source port 19", "127.0.0.1:19", SIZE),
        ("source 127.0.0.2 (not in --allow)", "127.0.0.2:0", SIZE),
        ("600-byte datagrams (--max-size 512)", "127.0.0.1:0", 600),
    ] {
        match probe_from(local, s.addr, n, size) {
            Some(got) => println!("{what}: {n} sent, {got} answered (must be 0)"),
            None => println!("{what}: skipped, cannot bind {local} (ports below 1024 need root)"),
        }
    }
    let after = http_get(&metrics, "/metrics");
    for r in [
        "echoed",
        "dropped_rate_limit",
        "dropped_source_port",
        "dropped_not_allowed",
        "dropped_too_large",
        "error",
    ] {
        println!(
            "netmon_echo_server_packets_total{{result=\"{r}\"}}: during flood +{}, after the checks +{}",
            counter(&during, r) - counter(&before, r),
            counter(&after, r) - counter(&during, r)
        );
    }
    println!("load average {}", loadavg());
}

fn main() {
    match arg(0, String::from("server")).as_str() {
        "server" => server_mode(),
        "client" => client_mode(),
        "abuse" => abuse_mode(),
        other => {
            eprintln!("unknown mode {other}: use server, client or abuse");
            std::process::exit(2);
        }
    }
}
