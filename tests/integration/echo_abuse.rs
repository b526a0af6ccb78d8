//! The echo server's defences under abuse, in a few seconds on loopback: a
//! bounded flood from one source far above its rate limit does not stop a legitimate client
//! from getting its replies; datagrams from source ports 7 and 19, from outside `allow`, and
//! over `max_size` are never answered and are counted by reason.
//!
//! The server runs in-process (its UDP thread is the same as `netmon echo-server`'s); the flood
//! is paced and bounded in count and time so a debug build keeps up. The longer measurement,
//! flat out against the release binary, is `cargo bench --bench echo -- abuse`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netmon::echo::client::{Report, Session, SessionOptions, connect};
use netmon::echo::server::EchoServer;
use netmon::echo::server::metrics::Metrics;
use netmon::echo::settings::Settings;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The flood: datagrams per second offered from one source (20 times its limit), and for how long.
const FLOOD_RATE: u64 = 20_000;
const FLOOD_TIME: Duration = Duration::from_secs(2);
const RATE_LIMIT: u32 = 1000;
const MAX_SIZE: usize = 512;

fn counters(registry: &Registry) -> std::collections::HashMap<String, u64> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("netmon_echo_server_packets_total{result=\""))
        .filter_map(|l| {
            let (result, value) = l.split_once("\"} ")?;
            Some((result.to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Waits (up to 3 s) until `result` has counted at least `at_least`; returns its value.
async fn counted(registry: &Registry, result: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = counters(registry).get(result).copied().unwrap_or(0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` datagrams of `size` bytes from `local` to `peer`; returns how many were answered
/// within 300 ms of the last, or `None` when `local` cannot be bound.
fn send_from(local: &str, peer: SocketAddr, n: usize, size: usize) -> Option<usize> {
    let s = match UdpSocket::bind(local) {
        Ok(s) => s,
        Err(e) => {
            println!("skipped: cannot bind {local} ({e}); ports below 1024 need root");
            return None;
        }
    };
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let payload = vec![0x42u8; size];
    for _ in 0..n {
        s.send_to(&payload, peer).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while s.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    Some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defences_hold_under_a_flood() {
    let mut registry = Registry::default();
    let metrics = Metrics::register(registry.sub_registry_with_prefix("netmon"));
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: vec!["127.0.0.1".parse().unwrap(), "127.0.0.3".parse().unwrap()],
        rate_limit: RATE_LIMIT,
        max_size: MAX_SIZE,
        tcp: false,
    };
    let token = CancellationToken::new();
    let server = EchoServer::start(settings, &metrics, &token).await.unwrap();
    let addr = server.local_addr();

    // The flood from 127.0.0.3: paced in 1 ms slices, bounded by FLOOD_TIME.
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let flood_replies = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, flooded, replies) = (stop.clone(), flooded.clone(), flood_replies.clone());
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.3:0").unwrap();
            s.connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 128];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD_TIME {
                let due = (start.elapsed().as_secs_f64() * FLOOD_RATE as f64) as u64;
                while sent < due {
                    if s.send(&[0x5a; 64]).is_ok() {
                        sent += 1;
                    } else {
                        break;
                    }
                }
                while s.recv(&mut buf).is_ok() {
                    replies.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            flooded.store(sent, Ordering::Relaxed);
        })
    };

    // The legitimate client on 127.0.0.1, 200 messages/s (under the limit) during the flood.
    let socket = connect(addr).await.unwrap();
    let session = Session::new(SessionOptions {
        count: 300,
        interval: Duration::from_millis(5),
        size: 64,
        wait: Duration::from_secs(1),
    });
    let mut report = Report::default();
    session
        .run(&socket, &CancellationToken::new(), &mut report, |_| {})
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let flooded = flooded.load(Ordering::Relaxed);
    let rate_dropped = counted(&registry, "dropped_rate_limit", 1).await;
    println!(
        "flood: {flooded} datagrams, {} answered, {rate_dropped} dropped by the rate limit; \
         legitimate client: {}/{} replies",
        flood_replies.load(Ordering::Relaxed),
        report.received,
        report.sent
    );
    assert!(
        flooded >= FLOOD_RATE,
        "the flood was too small to mean anything"
    );
    assert!(
        report.received * 100 >= report.sent * 99,
        "legitimate client got {} of {} replies under the flood",
        report.received,
        report.sent
    );
    // The flooder gets its burst and its rate, not more.
    let allowed = u64::from(RATE_LIMIT) * 4;
    assert!(
        flood_replies.load(Ordering::Relaxed) <= allowed,
        "flooder got {} replies",
        flood_replies.load(Ordering::Relaxed)
    );
    assert!(
        rate_dropped >= flooded - allowed,
        "only {rate_dropped} of {flooded} flood datagrams dropped by the rate limit"
    );

    // Never answered, always counted.
    let n = 50;
    let mut source_port = 0;
    for local in ["127.0.0.1:7", "127.0.0.1:19"] {
        if let Some(got) = send_from(local, addr, n, 64) {
            assert_eq!(got, 0, "datagrams from {local} were answered");
            source_port += n as u64;
        }
    }
    assert_eq!(
        counted(&registry, "dropped_source_port", source_port).await,
        source_port
    );
    let outside = send_from("127.0.0.2:0", addr, n, 64).unwrap();
    assert_eq!(outside, 0, "a source outside --allow was answered");
    assert_eq!(
        counted(&registry, "dropped_not_allowed", n as u64).await,
        n as u64
    );
    let large = send_from("127.0.0.1:0", addr, n, MAX_SIZE + 1).unwrap();
    assert_eq!(large, 0, "an oversized datagram was answered");
    assert_eq!(
        counted(&registry, "dropped_too_large", n as u64).await,
        n as u64
    );
    // The allow-list and the size cap still let the rest through.
    assert_eq!(send_from("127.0.0.1:0", addr, 5, MAX_SIZE), Some(5));
    assert_eq!(counters(&registry).get("error").copied(), Some(0));
    server.stop().await;
}
