//! Helpers of the real-server tests, kept here so this test binary stands alone: finding the
//! programs (or saying clearly which are missing), temporary servers that die with the test,
//! commands with a deadline, curl, and a `netmon serve` whose log and metrics can be read.
//! Every wait here is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// With this set to 1 (CI sets it), a missing program fails the test instead of skipping it.
pub const REQUIRE: &str = "NETMON_REQUIRE_REAL_SERVERS";

/// Where programs are looked for besides `PATH`: nginx and sshd live in sbin directories,
/// which an unprivileged `PATH` often lacks.
const SBIN: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The absolute paths of `names`, or `None` after saying which are missing (the test then
/// passes without running), or a panic when [`REQUIRE`] is 1.
pub fn programs<const N: usize>(test: &str, names: [&str; N]) -> Option<[PathBuf; N]> {
    let found = names.map(find);
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Some(found.map(|f| f.expect("checked above")));
    }
    not_run(
        test,
        &format!(
            "{} not found (Debian: apt-get install nginx-light openssh-server curl openssl fping chrony faketime ntpsec-ntpdig unbound bind9-dnsutils; see .ci/run for ntpsec's ntpd)",
            missing.join(", ")
        ),
    );
    None
}

/// Says that `test` cannot run here and why (the test then passes without running), or
/// panics when [`REQUIRE`] is 1.
pub fn not_run(test: &str, why: &str) {
    let text = format!("{test}: NOT RUN: {why}");
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{text}; {REQUIRE}=1 makes this a failure");
    }
    eprintln!("{text}");
    println!("{text}");
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port on 127.0.0.1 that was free a moment ago for both TCP and UDP (the kernel picks
/// it), since some servers (DNS, NTP) listen on UDP.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 free for both TCP and UDP in 100 tries");
}

/// A server process that is killed when the test ends, its output in a file.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with stdout and stderr into `log`, then waits (at most 10 s) until
    /// every port in `ports` accepts connections on 127.0.0.1.
    pub fn start(name: &str, mut command: Command, log: &Path, ports: &[u16]) -> Daemon {
        let out = std::fs::File::create(log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        let mut d = Daemon {
            name: name.into(),
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in ports {
            while TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_err()
            {
                if let Ok(Some(status)) = d.child.try_wait() {
                    panic!("{name} exited ({status}):\n{}", d.log_text());
                }
                if Instant::now() > deadline {
                    panic!(
                        "{name} does not accept on port {port} within 10 s:\n{}",
                        d.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        d
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the server's log if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command said.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub took: Duration,
}

/// Runs `command` to its end, killing it after `limit`.
pub fn run(mut command: Command, limit: Duration) -> Output {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let readers = [
        read_all(Box::new(child.stdout.take().expect("piped stdout"))),
        read_all(Box::new(child.stderr.take().expect("piped stderr"))),
    ];
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the command") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    let [stdout, stderr] = readers.map(|r| r.join().unwrap_or_default());
    Output {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
        took,
    }
}

fn read_all(mut r: Box<dyn Read + Send>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs `program` with `args` and fails the test unless it exits 0 within 60 s.
pub fn ok(program: &Path, args: &[&str]) {
    let mut c = Command::new(program);
    c.args(args);
    let out = run(c, Duration::from_secs(60));
    assert_eq!(
        out.code,
        0,
        "{} {args:?} failed:\n{}{}",
        program.display(),
        out.stdout,
        out.stderr
    );
}

/// What curl made of one URL.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code: 0 for a transfer, 60 for a certificate it did not accept, ...
    pub code: i32,
    /// The HTTP status (0 when none arrived).
    pub status: u16,
    /// The HTTP version of the response as curl prints it (`1.1`, `2`), empty when none.
    pub version: String,
    /// curl's own error line, if any.
    pub error: String,
}

impl Curl {
    /// Whether curl got a 2xx or 3xx response, the way netmon's default expect_status
    /// judges.
    pub fn up(&self) -> bool {
        self.code == 0 && (200..400).contains(&self.status)
    }
}

/// `curl -sS ARGS URL` with a 10 s limit, reporting status and HTTP version.
pub fn curl(curl: &Path, args: &[&str], url: &str) -> Curl {
    let mut c = Command::new(curl);
    c.args(["-sS", "-o", "/dev/null", "--max-time", "10"])
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(url);
    let out = run(c, Duration::from_secs(20));
    let mut w = out.stdout.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = match w.next() {
        Some("0") | None => String::new(),
        Some(v) => v.to_string(),
    };
    Curl {
        code: out.code,
        status,
        version,
        error: out.stderr.lines().next().unwrap_or_default().to_string(),
    }
}

/// A running `netmon serve` on 127.0.0.1 with a config file, its log lines collected.
pub struct Netmon {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Netmon {
    /// Starts the real binary with `config` (written to `dir`) and waits (at most 20 s) until
    /// it serves its metrics.
    pub fn serve(dir: &Path, config: &str) -> Netmon {
        let path = dir.join("netmon.yml");
        std::fs::write(&path, config).expect("write the netmon config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_netmon"))
            .arg("--config.file")
            .arg(&path)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netmon");
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let mut n = Netmon {
            child,
            addr: String::new(),
            log,
        };
        let line = n.wait_log("serving metrics at", Duration::from_secs(20));
        n.addr = line
            .split("address=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("the listen address in the log")
            .to_string();
        n
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first log line containing `needle`, waiting at most `limit`.
    pub fn wait_log(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "netmon exited ({status}) before logging {needle:?}:\n{}",
                    self.log().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "netmon logged no {needle:?} within {limit:?}:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `/metrics` text.
    pub fn scrape(&self) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect to netmon");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("send the scrape");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read the scrape");
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if raw
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        }
    }
}

impl Drop for Netmon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the series `name` of service `service` (and the `extra` label, if given).
pub fn metric(text: &str, name: &str, service: &str, extra: Option<(&str, &str)>) -> Option<f64> {
    let want = format!("service=\"{service}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{')?;
            let matches = n == name
                && labels
                    .split(',')
                    .any(|p| p == want || p == format!("{want}}}"))
                && extra.is_none_or(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            if matches { value.parse().ok() } else { None }
        })
        .next()
}
