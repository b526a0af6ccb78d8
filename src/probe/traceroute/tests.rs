//! The traceroute probe's tests: options, the path's text and hash, route-change accounting,
//! and rounds on loopback (the target is the first hop). Paths of several routers are tested
//! in network namespaces by `tests/integration/traceroute.rs`.

use std::net::Ipv4Addr;

use super::*;
use crate::probe::ProbeMetrics;

fn options() -> Options {
    Options {
        method: Method::Udp,
        max_hops: 30,
        first_hop: 1,
        probes_per_hop: 3,
        hop_timeout: Some(Duration(StdDuration::from_millis(500))),
        base_port: DEFAULT_BASE_PORT,
        ip: IpPreference::Auto,
    }
}

struct Fixture {
    registry: Registry,
    metrics: ProbeMetrics,
    labels: Labels,
}

impl Fixture {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = ProbeMetrics::register(&mut registry);
        Fixture {
            registry,
            metrics,
            labels: vec![("host".into(), "h".into())],
        }
    }

    fn probe(&self, o: Options) -> Result<TracerouteProbe, BuildError> {
        o.validate().map_err(BuildError)?;
        let ctx = Context {
            labels: &self.labels,
            timeout: StdDuration::from_secs(2),
            rtt_buckets: None,
        };
        TracerouteProbe::new(o, &ctx, &self.metrics.traceroute)
    }

    fn text(&self) -> String {
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, &self.registry).unwrap();
        t
    }

    /// The value of series `line_start` (name and labels), if it is exposed.
    fn value(&self, series: &str) -> Option<f64> {
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

fn target(host: &str) -> Target {
    Target { host: host.into() }
}

fn hop(ttl: u8, addr: Option<[u8; 4]>, answered: usize) -> Hop {
    Hop {
        ttl,
        sent: 3,
        rtts: vec![StdDuration::from_micros(400); answered],
        addrs: addr
            .map(|a| IpAddr::from(Ipv4Addr::from(a)))
            .into_iter()
            .collect(),
        reached: false,
        mark: None,
    }
}

#[test]
fn options_out_of_range_say_what_to_write() {
    let ok = options();
    assert_eq!(ok.validate(), Ok(()));
    let cases: [(Options, &str); 7] = [
        (
            Options {
                max_hops: 0,
                ..options()
            },
            "max_hops must be between 1 and 64",
        ),
        (
            Options {
                max_hops: 65,
                ..options()
            },
            "max_hops must be between 1 and 64",
        ),
        (
            Options {
                first_hop: 31,
                ..options()
            },
            "first_hop 31 must be between 1 and max_hops (30)",
        ),
        (
            Options {
                first_hop: 0,
                ..options()
            },
            "first_hop 0 must be between 1 and max_hops (30)",
        ),
        (
            Options {
                probes_per_hop: 11,
                ..options()
            },
            "probes_per_hop must be between 1 and 10",
        ),
        (
            Options {
                base_port: 0,
                ..options()
            },
            "base_port 0 is not a port to probe",
        ),
        (
            Options {
                base_port: 65_500,
                ..options()
            },
            "base_port 65500 + 90 probes runs past port 65535: lower base_port to at most 65446",
        ),
    ];
    for (o, want) in cases {
        let e = o.validate().unwrap_err();
        assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
    }
    // ICMP probes carry no port.
    let icmp = Options {
        base_port: 65_500,
        method: Method::Icmp,
        ..options()
    };
    assert_eq!(icmp.validate(), Ok(()));
    let e = options()
        .check_fits(StdDuration::from_millis(500))
        .unwrap_err();
    assert!(
        e.starts_with(
            "hop_timeout 500ms does not fit in the timeout 500ms (a round must end by 450ms"
        ),
        "{e}"
    );
    assert_eq!(options().check_fits(StdDuration::from_secs(1)), Ok(()));
    // Not given, the wait is 2s or the round's budget, whichever is shorter: any timeout fits.
    let unset = Options {
        hop_timeout: None,
        ..options()
    };
    assert_eq!(unset.check_fits(StdDuration::from_millis(500)), Ok(()));
    assert_eq!(
        unset.hop_wait(StdDuration::from_millis(450)),
        StdDuration::from_millis(450)
    );
    assert_eq!(unset.hop_wait(StdDuration::from_secs(9)), DEFAULT_HOP_TIMEOUT);
    assert_eq!(
        options().hop_wait(StdDuration::from_secs(9)),
        StdDuration::from_millis(500)
    );
}

#[test]
fn the_path_reads_as_traceroute_prints_it_and_its_hash_follows_the_addresses_only() {
    let mut last = hop(3, Some([192, 0, 2, 3]), 3);
    last.reached = true;
    let path = Path {
        hops: vec![hop(1, Some([192, 0, 2, 1]), 3), hop(2, None, 0), last],
        reached: true,
    };
    assert_eq!(path.addresses(), "192.0.2.1 * 192.0.2.3");
    assert_eq!(path.text(), "1 192.0.2.1 0.400ms, 2 *, 3 192.0.2.3 0.400ms");
    assert_eq!(path.len(), 3);
    // Other RTTs and losses, same addresses: the same route.
    let mut slower = path.clone();
    slower.hops[0].rtts = vec![StdDuration::from_millis(9)];
    assert_eq!(slower.hash(), path.hash());
    assert!(
        slower.text().starts_with("1 192.0.2.1 9.000ms (1/3), 2 *"),
        "{}",
        slower.text()
    );
    // Another router at hop 2: another route.
    let mut other = path.clone();
    other.hops[1] = hop(2, Some([192, 0, 2, 22]), 3);
    assert_ne!(other.hash(), path.hash());
    // Balanced paths: one hop answering from two addresses, in either order.
    let mut a = path.clone();
    a.hops[1].addrs = vec![[192, 0, 2, 5].into(), [192, 0, 2, 4].into()];
    let mut b = path.clone();
    b.hops[1].addrs = vec![[192, 0, 2, 4].into(), [192, 0, 2, 5].into()];
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.addresses(), "192.0.2.1 192.0.2.4|192.0.2.5 192.0.2.3");
    let empty = Path {
        hops: vec![],
        reached: false,
    };
    assert_eq!(empty.text(), "no hop answered");
    assert_eq!(empty.len(), 0);
}

#[test]
fn a_route_change_counts_once_and_a_shorter_path_drops_the_hops_past_it() {
    let f = Fixture::new();
    let p = f.probe(options()).unwrap();
    assert_eq!(
        f.value("traceroute_route_changes_total{host=\"h\"}"),
        Some(0.0)
    );
    let long = Path {
        hops: vec![
            hop(1, Some([192, 0, 2, 1]), 3),
            hop(2, None, 0),
            hop(3, Some([192, 0, 2, 3]), 2),
        ],
        reached: true,
    };
    p.record(&long);
    p.record(&long);
    assert_eq!(
        f.value("traceroute_route_changes_total{host=\"h\"}"),
        Some(0.0)
    );
    assert_eq!(f.value("traceroute_hops{host=\"h\"}"), Some(3.0));
    assert_eq!(f.value("traceroute_reached{host=\"h\"}"), Some(1.0));
    assert_eq!(
        f.value("traceroute_hop_loss_ratio{host=\"h\",hop=\"1\"}"),
        Some(0.0)
    );
    assert_eq!(
        f.value("traceroute_hop_loss_ratio{host=\"h\",hop=\"2\"}"),
        Some(1.0)
    );
    let third = f
        .value("traceroute_hop_loss_ratio{host=\"h\",hop=\"3\"}")
        .unwrap();
    assert!((third - 1.0 / 3.0).abs() < 1e-9, "{third}");
    assert_eq!(
        f.value("traceroute_hop_rtt_seconds{host=\"h\",hop=\"1\"}"),
        Some(0.0004)
    );
    // A silent hop has a loss and no RTT.
    assert_eq!(
        f.value("traceroute_hop_rtt_seconds{host=\"h\",hop=\"2\"}"),
        None
    );

    let short = Path {
        hops: vec![hop(1, Some([192, 0, 2, 9]), 3)],
        reached: false,
    };
    p.record(&short);
    assert_eq!(
        f.value("traceroute_route_changes_total{host=\"h\"}"),
        Some(1.0)
    );
    assert_eq!(f.value("traceroute_hops{host=\"h\"}"), Some(1.0));
    assert_eq!(f.value("traceroute_reached{host=\"h\"}"), Some(0.0));
    let text = f.text();
    assert!(!text.contains("hop=\"2\""), "{text}");
    assert!(!text.contains("hop=\"3\""), "{text}");

    p.forget();
    let text = f.text();
    assert!(!text.contains("host=\"h\""), "{text}");
}

#[tokio::test]
async fn loopback_is_reached_at_the_first_hop_over_udp() {
    let f = Fixture::new();
    let p = f.probe(options()).unwrap();
    let ok = p.run(&target("127.0.0.1")).await.unwrap();
    assert!(
        ok.latency > StdDuration::ZERO && ok.latency < StdDuration::from_millis(100),
        "{ok:?}"
    );
    let round = ok.round.as_ref().unwrap();
    assert_eq!((round.sent, round.rtts.len()), (3, 3), "{ok:?}");
    let detail = ok.detail.as_deref().unwrap();
    assert!(detail.starts_with("1 127.0.0.1 "), "{detail}");
    assert!(!detail.contains(','), "one hop only: {detail}");
    assert_eq!(f.value("traceroute_hops{host=\"h\"}"), Some(1.0));
    assert_eq!(f.value("traceroute_reached{host=\"h\"}"), Some(1.0));
    assert_eq!(
        f.value("traceroute_hop_loss_ratio{host=\"h\",hop=\"1\"}"),
        Some(0.0)
    );
    assert!(!f.text().contains("hop=\"2\""), "{}", f.text());
    // The same path again is no change.
    p.run(&target("127.0.0.1")).await.unwrap();
    assert_eq!(
        f.value("traceroute_route_changes_total{host=\"h\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn first_hop_skips_the_hops_before_it() {
    let f = Fixture::new();
    let p = f
        .probe(Options {
            first_hop: 3,
            max_hops: 5,
            ..options()
        })
        .unwrap();
    let ok = p.run(&target("127.0.0.1")).await.unwrap();
    let detail = ok.detail.unwrap();
    assert!(detail.starts_with("3 127.0.0.1 "), "{detail}");
    assert_eq!(f.value("traceroute_hops{host=\"h\"}"), Some(3.0));
    assert!(!f.text().contains("hop=\"1\""), "{}", f.text());
    assert_eq!(
        f.value("traceroute_hop_loss_ratio{host=\"h\",hop=\"3\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn loopback_v6_is_reached_over_udp() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no ::1");
        return;
    }
    let f = Fixture::new();
    let p = f
        .probe(Options {
            ip: IpPreference::Ipv6,
            ..options()
        })
        .unwrap();
    let ok = p.run(&target("::1")).await.unwrap();
    let detail = ok.detail.unwrap();
    assert!(detail.starts_with("1 ::1 "), "{detail}");
    assert_eq!(f.value("traceroute_reached{host=\"h\"}"), Some(1.0));
}

#[tokio::test]
async fn loopback_is_reached_over_icmp_where_an_icmp_socket_opens() {
    let f = Fixture::new();
    let p = match f.probe(Options {
        method: Method::Icmp,
        ..options()
    }) {
        Ok(p) => p,
        Err(e) if std::env::var("NETMON_REQUIRE_ICMP").as_deref() == Ok("1") => {
            panic!("NETMON_REQUIRE_ICMP=1 but {e}")
        }
        Err(e) => {
            assert!(e.0.contains("Use `method: udp`"), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let ok = p.run(&target("127.0.0.1")).await.unwrap();
    let round = ok.round.as_ref().unwrap();
    assert_eq!((round.sent, round.rtts.len()), (3, 3), "{ok:?}");
    assert!(ok.detail.unwrap().starts_with("1 127.0.0.1 "));
    // A second round opens a new socket whose identifier differs: nothing of the first
    // round's is taken for it.
    let again = p.run(&target("127.0.0.1")).await.unwrap();
    assert_eq!(again.round.unwrap().rtts.len(), 3);
}
