//! The real netmon binary against real NTP servers, and its verdicts next to a reference
//! client's.
//!
//! chronyd runs as a test would run it anywhere: from a config in a temporary directory, on a
//! free loopback port, without control of the clock (`-x`). ntpsec's ntpd cannot listen on
//! any port but 123, and ntpsec's `ntpdig` (the reference client) can only query port 123, so
//! the comparisons run inside a private network namespace of their own (`unshare --net`, as
//! root: CI runs as root), where port 123 on its loopback belongs to the test alone. ntpd runs
//! there with `CAP_SYS_TIME` dropped from its bounding set, so it can never touch the clock.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Daemon, free_port, metric, not_run, programs, run};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// A server started by a test, with the temporary directory holding its config and log.
struct Started {
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Started {
    /// Starts `command` with its output in `NAME.log` in `dir`; no port is waited for here
    /// (NTP is UDP).
    fn new(name: &str, command: Command, dir: tempfile::TempDir) -> Started {
        let log = dir.path().join(format!("{name}.log"));
        Started {
            daemon: Daemon::start(name, command, &log, &[]),
            _dir: dir,
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Where a test runs its programs: this machine's loopback, or a private network namespace.
enum Place {
    Host,
    Netns {
        /// `unshare --net sleep`: the namespace lives as long as this process does.
        holder: Started,
        nsenter: PathBuf,
        ntpdig: PathBuf,
        bash: PathBuf,
    },
}

impl Place {
    /// A private network namespace with its loopback up and ntpdig to ask, or `None` (after
    /// saying why) when this machine cannot make one for us.
    fn reference(test: &str) -> Option<Place> {
        let [unshare, nsenter, ip, ntpdig, bash] =
            programs(test, ["unshare", "nsenter", "ip", "ntpdig", "bash"])?;
        if !is_root() {
            not_run(test, "a private network namespace needs root");
            return None;
        }
        let mut c = Command::new(unshare);
        c.args(["--net", "--", "sleep", "600"]);
        let holder = Started::new("unshare", c, tempdir());
        let ns = format!("/proc/{}/ns/net", holder.daemon.pid());
        // The pid is unshare's before it switches namespace and execs sleep: wait for the switch.
        let ours = std::fs::read_link("/proc/self/ns/net").ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&ns).ok() == ours {
            assert!(Instant::now() < deadline, "unshare --net made no namespace");
            std::thread::sleep(Duration::from_millis(10));
        }
        let place = Place::Netns {
            holder,
            nsenter,
            ntpdig,
            bash,
        };
        let mut up = place.command(&ip);
        up.args(["link", "set", "lo", "up"]);
        let out = run(up, Duration::from_secs(10));
        assert_eq!(
            out.code, 0,
            "ip link set lo up in the namespace: {}",
            out.stderr
        );
        Some(place)
    }

    /// `program` to be run in this place.
    fn command(&self, program: impl AsRef<Path>) -> Command {
        match self {
            Place::Host => Command::new(program.as_ref()),
            Place::Netns {
                holder, nsenter, ..
            } => {
                let mut c = Command::new(nsenter);
                // nsenter execs the program (no fork), so killing it kills the program.
                c.arg(format!("--net=/proc/{}/ns/net", holder.daemon.pid()))
                    .arg("--")
                    .arg(program.as_ref());
                c
            }
        }
    }
}

fn is_root() -> bool {
    testkit::process::euid() == Some(0)
}

/// A 48-byte client request (version 4, mode 3) with a non-zero transmit timestamp.
fn ntp_request() -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&0xeeee_0000_1234_5678u64.to_be_bytes());
    p
}

/// The libfaketime library the `faketime` package installs, for `LD_PRELOAD` (the `faketime`
/// wrapper forks, so killing it would leave the server running).
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.is_file())
}

/// chronyd serving 127.0.0.1:`port` with `extra` config lines, its clock shifted by
/// `faketime` (a libfaketime offset such as `+30s`) if given; returns once it answers.
fn chronyd(place: &Place, bin: &Path, port: u16, extra: &str, faketime: Option<&str>) -> Started {
    let dir = tempdir();
    let d = dir.path().display();
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\ncmdport 0\n\
             pidfile {d}/chronyd.pid\ndriftfile {d}/chrony.drift\n{extra}\n"
        ),
    )
    .expect("write chrony.conf");
    let mut c = place.command(bin);
    c.arg("-d").arg("-f").arg(&conf).arg("-x");
    if let Some(shift) = faketime {
        let lib = libfaketime().expect("libfaketime.so.1 of the faketime package");
        c.env("LD_PRELOAD", lib).env("FAKETIME", shift);
    }
    let mut server = Started::new("chronyd", c, dir);
    wait_answering(place, &mut server, port);
    server
}

/// Waits until the NTP server on 127.0.0.1:`port` of `place` answers, at most 20 s.
fn wait_answering(place: &Place, server: &mut Started, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        server.daemon.assert_running();
        let answered = match place {
            Place::Host => wait_udp(
                SocketAddr::from(([127, 0, 0, 1], port)),
                &ntp_request(),
                Duration::from_millis(500),
            )
            .is_some(),
            // Inside the namespace only port 123 is used, and ntpdig reports any reply.
            Place::Netns { .. } => ntpdig(place).answered,
        };
        if answered {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the ntp server on port {port} did not answer within 20s:\n{}",
            server.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What netmon said about the NTP server on 127.0.0.1:`port`: one `netmon check`, then a
/// running `netmon serve` scraped after its second probe.
#[derive(Debug)]
struct Verdict {
    check_code: i32,
    check_line: String,
    up: f64,
    stratum: f64,
    offset: f64,
    status_failures: f64,
    protocol_failures: f64,
}

fn netmon_verdict(place: &Place, port: u16) -> Verdict {
    let mut check = place.command(NETMON);
    check.args([
        "check",
        "ntp",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "-t",
        "2s",
    ]);
    let out = run(check, Duration::from_secs(20));
    assert!(
        (0..=2).contains(&out.code),
        "netmon check: exit {}\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    let text = metrics_after_two_probes(place, port);
    let get = |name: &str| {
        metric(&text, name, "ntp", None).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // A reason's series appears with its first failure.
    let failures = |reason: &str| {
        metric(
            &text,
            "netmon_probe_failures_total",
            "ntp",
            Some(("reason", reason)),
        )
        .unwrap_or(0.0)
    };
    Verdict {
        check_code: out.code,
        check_line: out.stdout.trim().to_string(),
        up: get("netmon_up"),
        stratum: get("netmon_ntp_stratum"),
        offset: get("netmon_ntp_offset_seconds"),
        status_failures: failures("status"),
        protocol_failures: failures("protocol"),
    }
}

/// Runs `netmon serve` with one ntp service (`ntp`) on 127.0.0.1:`port` in `place` and
/// returns its metrics once two probes have run, waiting at most 20 s.
fn metrics_after_two_probes(place: &Place, port: u16) -> String {
    let dir = tempdir();
    let config = format!(
        "defaults: {{ interval: 500ms, timeout: 400ms }}\ntargets:\n  127.0.0.1:\n    services:\n      - {{ type: ntp, name: ntp, port: {port} }}\n"
    );
    let wait = |scrape: &mut dyn FnMut() -> String, log: &dyn Fn() -> String| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = scrape();
            if metric(&text, "netmon_probes_total", "ntp", None).is_some_and(|v| v >= 2.0) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "netmon ran no two ntp probes in 20s:\n{text}\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    match place {
        Place::Host => {
            let n = crate::support::serve(dir.path(), &config);
            wait(&mut || n.scrape(), &|| n.log().join("\n"))
        }
        Place::Netns { bash, .. } => {
            let path = dir.path().join("netmon.yml");
            std::fs::write(&path, &config).expect("write netmon.yml");
            let mut serve = place.command(NETMON);
            serve
                .arg("--config.file")
                .arg(&path)
                .args(["--web.listen-address", "127.0.0.1:0"]);
            let mut n = Started::new("netmon", serve, tempdir());
            let web = wait_web_address(&mut n.daemon);
            wait(&mut || scrape_in(place, bash, &web), &|| {
                n.daemon.log_text()
            })
        }
    }
}

/// The address netmon logs when it serves, at most 20 s.
fn wait_web_address(n: &mut Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        n.assert_running();
        if let Some(addr) = n
            .log_text()
            .lines()
            .find(|l| l.contains("serving metrics at"))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|s| s.split_whitespace().next())
        {
            return addr.trim_matches('"').to_string();
        }
        assert!(
            Instant::now() < deadline,
            "netmon does not serve:\n{}",
            n.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/metrics` of the netmon at `addr` inside the namespace, through bash's /dev/tcp, since
/// this process is outside it.
fn scrape_in(place: &Place, bash: &Path, addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut c = place.command(bash);
    c.args([
        "-c",
        "exec 3<>/dev/tcp/$0/$1 && printf 'GET /metrics HTTP/1.0\\r\\nHost: netmon\\r\\n\\r\\n' >&3 && cat <&3",
        host,
        port,
    ]);
    run(c, Duration::from_secs(10)).stdout
}

/// Sends `request` to `addr` until something answers, at most `limit`; returns the answer.
fn wait_udp(addr: SocketAddr, request: &[u8], limit: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback udp socket");
    socket.connect(addr).expect("connect a udp socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set a read timeout");
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        // A refused send (nothing bound yet) is expected while the server starts.
        let _ = socket.send(request);
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(buf[..n].to_vec());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// What ntpsec's ntpdig said about 127.0.0.1:123 of `place`.
#[derive(Debug, Default)]
struct Ntpdig {
    /// A reply arrived (accepted or dropped).
    answered: bool,
    /// The JSON report of an accepted reply.
    stratum: Option<i64>,
    leap: Option<String>,
    offset: Option<f64>,
    /// Why it dropped the reply, in its words.
    dropped: Option<String>,
    /// The first two bytes of the reply from ntpdig's hex dump: LI/VN/mode, stratum.
    reply_head: Option<[u8; 2]>,
    /// The reference id bytes from the same dump.
    reply_refid: Option<[u8; 4]>,
}

fn ntpdig(place: &Place) -> Ntpdig {
    let Place::Netns { ntpdig, .. } = place else {
        panic!("ntpdig queries port 123: run it in a namespace");
    };
    let mut c = place.command(ntpdig);
    c.args(["-d", "-d", "-j", "-t", "1", "127.0.0.1"]);
    let o = run(c, Duration::from_secs(15));
    let (out, err) = (o.stdout, o.stderr);
    let mut r = Ntpdig::default();
    // -d -d dumps the request and then the reply, 16 bytes a line in hex.
    let bytes: Vec<u8> = out
        .lines()
        .chain(err.lines())
        .filter_map(|l| {
            let hex: Vec<u8> = l
                .split_whitespace()
                .take(16)
                .map_while(|h| {
                    (h.len() == 2)
                        .then(|| u8::from_str_radix(h, 16).ok())
                        .flatten()
                })
                .collect();
            (hex.len() == 16).then_some(hex)
        })
        .flatten()
        .collect();
    if bytes.len() >= 96 {
        r.answered = true;
        r.reply_head = Some([bytes[48], bytes[49]]);
        r.reply_refid = Some([bytes[60], bytes[61], bytes[62], bytes[63]]);
    }
    if let Some(json) = out.lines().find(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(json).expect("ntpdig -j prints JSON");
        r.answered = true;
        r.stratum = v["stratum"].as_i64();
        r.leap = v["leap"].as_str().map(str::to_string);
        r.offset = v["offset"].as_f64();
    }
    r.dropped = err
        .lines()
        .find_map(|l| l.split("Response dropped: ").nth(1))
        .map(str::to_string);
    r.answered |= r.dropped.is_some();
    r
}

const SYNCED_CHRONYD: &str = "local stratum 8";

#[test]
fn chronyd_with_a_local_clock_is_up_with_its_stratum() {
    const T: &str = "chronyd_with_a_local_clock_is_up_with_its_stratum";
    let Some([chronyd_bin]) = programs(T, ["chronyd"]) else {
        return;
    };
    let port = free_port();
    let _chronyd = chronyd(&Place::Host, &chronyd_bin, port, SYNCED_CHRONYD, None);
    let v = netmon_verdict(&Place::Host, port);
    assert_eq!(v.check_code, 0, "{v:?}");
    assert!(v.check_line.starts_with("NETMON NTP OK"), "{v:?}");
    assert_eq!((v.up, v.stratum), (1.0, 8.0), "{v:?}");
    assert!(v.offset.abs() < 0.05, "{v:?}");

    let Some(ns) = Place::reference(T) else {
        return;
    };
    let _chronyd = chronyd(&ns, &chronyd_bin, 123, SYNCED_CHRONYD, None);
    let r = ntpdig(&ns);
    let v = netmon_verdict(&ns, 123);
    eprintln!("{T}: ntpdig {r:?}\n  netmon {v:?}");
    assert_eq!(r.stratum, Some(8), "{r:?}");
    assert_eq!(r.leap.as_deref(), Some("no-leap"), "{r:?}");
    assert_eq!((v.up, v.stratum), (1.0, 8.0), "{v:?}");
    let ref_offset = r.offset.expect("ntpdig reports an offset");
    assert!((v.offset - ref_offset).abs() < 0.01, "{r:?} {v:?}");
}

#[test]
fn chronyd_without_a_source_is_down_not_synchronised() {
    const T: &str = "chronyd_without_a_source_is_down_not_synchronised";
    let Some([chronyd_bin]) = programs(T, ["chronyd"]) else {
        return;
    };
    let port = free_port();
    let _chronyd = chronyd(&Place::Host, &chronyd_bin, port, "", None);
    let v = netmon_verdict(&Place::Host, port);
    assert_unsynchronised_chronyd(&v);

    let Some(ns) = Place::reference(T) else {
        return;
    };
    let _chronyd = chronyd(&ns, &chronyd_bin, 123, "", None);
    let r = ntpdig(&ns);
    let v = netmon_verdict(&ns, 123);
    eprintln!("{T}: ntpdig {r:?}\n  netmon {v:?}");
    // ntpdig refuses the reply too, calling it a probable kiss-of-death for its stratum 0; its
    // dump shows what netmon names: leap indicator 3 (0xe4: LI 3, version 4, mode 4), stratum 0,
    // reference id 0.
    assert_eq!(r.stratum, None, "{r:?}");
    assert!(
        r.dropped
            .as_deref()
            .is_some_and(|d| d.contains("stratum 0")),
        "{r:?}"
    );
    assert_eq!(r.reply_head, Some([0xe4, 0]), "{r:?}");
    assert_eq!(r.reply_refid, Some([0; 4]), "{r:?}");
    assert_unsynchronised_chronyd(&v);
}

fn assert_unsynchronised_chronyd(v: &Verdict) {
    assert_eq!(v.check_code, 2, "{v:?}");
    assert!(
        v.check_line.contains(
            "status: ntp reply from 127.0.0.1:"
        ) && v.check_line.contains(
            "not synchronised (leap indicator 3, stratum 0 without a kiss code, reference id 0x00000000)"
        ),
        "{v:?}"
    );
    assert!(!v.check_line.contains("kiss-of-death"), "{v:?}");
    assert_eq!((v.up, v.stratum), (0.0, -1.0), "{v:?}");
    assert!(v.offset.is_nan(), "{v:?}");
    assert!(v.status_failures >= 2.0, "{v:?}");
}

#[test]
fn chronyd_thirty_seconds_ahead_under_libfaketime() {
    const T: &str = "chronyd_thirty_seconds_ahead_under_libfaketime";
    let Some([chronyd_bin, _faketime]) = programs(T, ["chronyd", "faketime"]) else {
        return;
    };
    if libfaketime().is_none() {
        not_run(
            T,
            "faketime is installed but libfaketime.so.1 was not found",
        );
        return;
    }
    let port = free_port();
    let _chronyd = chronyd(
        &Place::Host,
        &chronyd_bin,
        port,
        SYNCED_CHRONYD,
        Some("+30s"),
    );
    let v = netmon_verdict(&Place::Host, port);
    assert_eq!((v.check_code, v.up, v.stratum), (0, 1.0, 8.0), "{v:?}");
    assert!((v.offset - 30.0).abs() < 0.5, "{v:?}");
    // With max_offset the same reading is down, reason mismatch, and says by how much.
    let mut check = Command::new(NETMON);
    check.args([
        "check",
        "ntp",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "-o",
        "max_offset=1s",
    ]);
    let out = run(check, Duration::from_secs(20)).stdout;
    assert!(out.starts_with("NETMON NTP CRITICAL"), "{out}");
    assert!(out.contains("exceeds max_offset 1s"), "{out}");
    let said: f64 = out
        .split("mismatch: clock offset ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {out}"));
    assert!((said - 30.0).abs() < 0.5, "{out}");

    let Some(ns) = Place::reference(T) else {
        return;
    };
    let _chronyd = chronyd(&ns, &chronyd_bin, 123, SYNCED_CHRONYD, Some("+30s"));
    let r = ntpdig(&ns);
    let v = netmon_verdict(&ns, 123);
    eprintln!("{T}: ntpdig {r:?}\n  netmon {v:?}");
    let ref_offset = r.offset.expect("ntpdig reports an offset");
    assert!((ref_offset - 30.0).abs() < 0.5, "{r:?}");
    assert!((v.offset - ref_offset).abs() < 0.01, "{r:?} {v:?}");
    assert_eq!(r.stratum, Some(8), "{r:?}");
}

/// ntpsec's ntpd with a config of `extra` lines plus access for loopback, in `ns`, unable to
/// set the clock; returns once it answers.
fn ntpd(ns: &Place, setpriv: &Path, ntpd: &Path, extra: &str) -> Started {
    let dir = tempdir();
    let d = dir.path().display();
    let conf = dir.path().join("ntp.conf");
    std::fs::write(
        &conf,
        format!(
            "driftfile {d}/ntp.drift\nstatsdir {d}/\nrestrict default nomodify noquery\nrestrict 127.0.0.1\n{extra}\n"
        ),
    )
    .expect("write ntp.conf");
    let mut c = ns.command(setpriv);
    c.args(["--bounding-set", "-sys_time", "--"])
        .arg(ntpd)
        .args(["-n", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.path().join("ntpd.pid"));
    let mut server = Started::new("ntpd", c, dir);
    wait_answering(ns, &mut server, 123);
    server
}

#[test]
fn ntpsec_ntpd_without_a_source_answers_init() {
    const T: &str = "ntpsec_ntpd_without_a_source_answers_init";
    let Some([ntpd_bin, setpriv]) = programs(T, ["ntpd", "setpriv"]) else {
        return;
    };
    let Some(ns) = Place::reference(T) else {
        return;
    };
    let _ntpd = ntpd(&ns, &setpriv, &ntpd_bin, "");
    let r = ntpdig(&ns);
    let v = netmon_verdict(&ns, 123);
    eprintln!("{T}: ntpdig {r:?}\n  netmon {v:?}");
    // An unsynchronised ntpd sends LI 3, stratum 0 and the kiss code INIT.
    assert!(
        r.dropped
            .as_deref()
            .is_some_and(|d| d.contains("stratum 0")),
        "{r:?}"
    );
    assert_eq!(r.reply_head, Some([0xe4, 0]), "{r:?}");
    assert_eq!(r.reply_refid, Some(*b"INIT"), "{r:?}");
    assert_eq!(v.check_code, 2, "{v:?}");
    assert!(
        v.check_line.contains("status: ")
            && v.check_line
                .contains("kiss-of-death INIT: not synchronised"),
        "{v:?}"
    );
    assert_eq!((v.up, v.stratum), (0.0, -1.0), "{v:?}");
    assert!(v.offset.is_nan(), "{v:?}");
}

#[test]
fn ntpsec_ntpd_with_a_local_clock_is_up_once_synchronised() {
    const T: &str = "ntpsec_ntpd_with_a_local_clock_is_up_once_synchronised";
    let Some([ntpd_bin, setpriv]) = programs(T, ["ntpd", "setpriv"]) else {
        return;
    };
    let Some(ns) = Place::reference(T) else {
        return;
    };
    // The local clock driver's root dispersion (10 s) is above the default maximum distance,
    // and ntpd selects a local clock only when it is preferred.
    let ntpd = ntpd(
        &ns,
        &setpriv,
        &ntpd_bin,
        "refclock local stratum 8 minpoll 0 maxpoll 0 prefer\ntos maxdist 16 minsane 1 minclock 1",
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let r = loop {
        let r = ntpdig(&ns);
        if r.stratum.is_some() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "ntpd did not synchronise to its local clock in 120s: {r:?}\n{}",
            ntpd.daemon.log_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let v = netmon_verdict(&ns, 123);
    eprintln!("{T}: ntpdig {r:?}\n  netmon {v:?}");
    assert_eq!(r.stratum, Some(9), "one above its local clock: {r:?}");
    assert_eq!(r.leap.as_deref(), Some("no-leap"), "{r:?}");
    assert_eq!((v.check_code, v.up, v.stratum), (0, 1.0, 9.0), "{v:?}");
    let ref_offset = r.offset.expect("ntpdig reports an offset");
    assert!((v.offset - ref_offset).abs() < 0.01, "{r:?} {v:?}");
}

#[test]
fn netmon_echo_server_reflecting_the_request_is_protocol() {
    const T: &str = "netmon_echo_server_reflecting_the_request_is_protocol";
    let port = free_port();
    let mut echo = Command::new(NETMON);
    echo.args(["echo-server", "--listen", &format!("127.0.0.1:{port}")]);
    let mut server = Started::new("echo-server", echo, tempdir());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_udp(addr, b"ping", Duration::from_secs(20)).is_some(),
        "{T}: the echo server does not answer:\n{}",
        server.daemon.log_text()
    );
    server.daemon.assert_running();
    let v = netmon_verdict(&Place::Host, port);
    assert_eq!(v.check_code, 2, "{v:?}");
    assert!(
        v.check_line.contains("protocol: ")
            && v.check_line
                .contains("our own request sent back (mode 3, client)"),
        "{v:?}"
    );
    assert_eq!((v.up, v.stratum), (0.0, -1.0), "{v:?}");
    assert!(v.protocol_failures >= 2.0, "{v:?}");
}
