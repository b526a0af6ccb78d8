//! Benchmark: what resolving 10,000 hostname targets costs, netmon's resolver (hickory, async,
//! cached for the answers' TTL) against the system's `getaddrinfo` on tokio's blocking pool,
//! the way netmon resolved names before.
//!
//! It must run where 127.0.0.1:53 is free and `/etc/resolv.conf` names 127.0.0.1, with
//! nothing else: `bench/resolve.sh` makes such a place (a private network and mount
//! namespace, as root) and runs `cargo bench --bench resolve -- [NAMES] [ROUNDS]` in it. A
//! name server started here on 127.0.0.1:53 answers every `hN.bench.test` with one A record
//! (TTL 300). Each round resolves every name once, 1,000 at a time, as one probe round of
//! NAMES services would; the first round of each resolver is cold. Reported per round: wall
//! time, CPU time of this process (both resolvers and the name server), queries that reached
//! the name server, and the most threads alive.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use netmon::base::resolve;
use netmon::base::values::IpPreference;
use testkit::dns::{NOERROR, Query, Server};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime, fields 14 and 15 of the whole line (11 and 12 after the name).
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[derive(Clone, Copy)]
enum Resolver {
    Netmon,
    Getaddrinfo,
}

async fn one(resolver: Resolver, name: String) -> bool {
    match resolver {
        Resolver::Netmon => resolve::with_budget(
            Duration::from_secs(5),
            resolve::resolve(&name, 80, IpPreference::Ipv4),
        )
        .await
        .is_ok(),
        Resolver::Getaddrinfo => {
            tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((name, 80)))
                .await
                .is_ok_and(|r| r.is_ok_and(|mut a| a.next().is_some()))
        }
    }
}

fn main() {
    let names = arg(0, 10_000);
    let rounds = arg(1, 3).max(1);
    let server = match Server::on(IpAddr::from([127, 0, 0, 1]), 53, |q, _| {
        let Some(q) = Query::parse(q) else {
            return Vec::new();
        };
        let n: u32 = q
            .name
            .strip_prefix('h')
            .and_then(|r| r.strip_suffix(".bench.test"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let ip = Ipv4Addr::from(0xC612_0000 | (n & 0xffff)); // 198.18.0.0/15
        testkit::udp::now(q.answer(NOERROR, &[ip], 300))
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "resolve bench: cannot listen on 127.0.0.1:53 ({e}); run it through bench/resolve.sh"
            );
            return;
        }
    };
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "nameserver 127.0.0.1") {
        eprintln!(
            "resolve bench: /etc/resolv.conf does not name 127.0.0.1; run it through bench/resolve.sh"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "| resolver | round | names | resolved | wall | CPU | queries at the server | most threads |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for resolver in [Resolver::Getaddrinfo, Resolver::Netmon] {
        let label = match resolver {
            Resolver::Netmon => "netmon (hickory, cached)",
            Resolver::Getaddrinfo => "getaddrinfo (blocking pool)",
        };
        for round in 1..=rounds {
            let queries = server.udp_queries();
            let (cpu, start) = (cpu_seconds(), Instant::now());
            let mut most = 0;
            let ok = rt.block_on(async {
                let mut ok = 0;
                for chunk in (0..names).collect::<Vec<_>>().chunks(1000) {
                    let tasks: Vec<_> = chunk
                        .iter()
                        .map(|i| tokio::spawn(one(resolver, format!("h{i}.bench.test"))))
                        .collect();
                    most = most.max(threads());
                    for t in tasks {
                        ok += usize::from(t.await.unwrap_or(false));
                    }
                    most = most.max(threads());
                }
                ok
            });
            println!(
                "| {label} | {round} | {names} | {ok} | {:.3} s | {:.2} s | {} | {most} |",
                start.elapsed().as_secs_f64(),
                cpu_seconds() - cpu,
                server.udp_queries() - queries
            );
        }
    }
}
