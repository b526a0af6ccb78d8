//! Helpers for end-to-end tests: run the real `netmon` binary on loopback, read its log,
//! scrape its metrics and match series line by line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `netmon serve` with its config file and captured stdout.
pub struct Netmon {
    child: Child,
    /// The web address, `127.0.0.1:PORT`.
    pub addr: String,
    /// The config file it was started with; rewrite it and reload.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Netmon {
    /// Starts netmon with `config` (YAML text) and extra arguments; waits until it serves.
    pub fn start(config: &str, extra: &[&str]) -> Netmon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_netmon"));
        command.args(extra);
        Netmon::start_command(command, tempfile::tempdir().unwrap(), config)
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`; panics with the whole log on timeout.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
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
                    "no log line with {needle:?} within {timeout:?}:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path`; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path)
    }

    /// POST `path`; returns (status, body).
    pub fn post(&self, path: &str) -> (u16, String) {
        http(&self.addr, "POST", path)
    }

    /// The `/metrics` text.
    pub fn scrape(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls /metrics until `name{labels}` satisfies `pred`; returns the value. Panics with
    /// the last scrape on timeout.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.scrape();
            if let Some(v) = metric(&text, name, labels) {
                if pred(v) {
                    return v;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}{labels:?} did not reach the expected value within {timeout:?}; last scrape:\n{text}\nlog:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rewrites the config file.
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit and returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "netmon did not exit within {timeout:?}:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's open file descriptors, counted in `/proc/PID/fd` (Linux) rather than
    /// through a scrape, whose own connection would be counted.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("reading /proc/{}/fd: {e}", self.pid()))
    }

    /// The process's resident memory in bytes, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("reading /proc/{}/status: {e}", self.pid()));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc/PID/status")
    }

    /// Panics (with the log) if the process exited or logged a panic.
    pub fn assert_alive_without_panic(&mut self) {
        let panics: Vec<String> = self
            .log()
            .into_iter()
            .filter(|l| l.contains("panicked"))
            .collect();
        assert!(panics.is_empty(), "netmon panicked:\n{}", panics.join("\n"));
        assert!(self.running(), "netmon exited:\n{}", self.log().join("\n"));
    }
}

impl Drop for Netmon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request with `Connection: close`; enough for tests, no client crate.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
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

/// The value of the series `name` whose labels include every pair in `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text, name, labels).first().map(|(_, v)| *v)
}

/// Every series `name` whose labels include every pair of `labels`, as (line, value).
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| {
                (l.to_string(), value.parse().ok())
                    .1
                    .map(|v| (l.to_string(), v))
            })?
        })
        .collect()
}

/// A TCP listener on 127.0.0.1 that accepts and drops connections, in a thread.
pub fn tcp_listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let (l, port) = tcp_listener();
    drop(l);
    port
}

impl Netmon {
    /// Starts netmon through `command` (a copy of the binary, or a wrapper such as
    /// `setpriv ... -- BINARY`), appending `--config.file` (`config` written in `dir`, which the
    /// process must be able to read) and a loopback `--web.listen-address`; waits until it
    /// serves. For runs under another user, in another network namespace, or with capabilities.
    pub fn start_command(mut command: Command, dir: tempfile::TempDir, config: &str) -> Netmon {
        let path = dir.path().join("netmon.yml");
        std::fs::write(&path, config).unwrap();
        let mut child = command
            .arg("--config.file")
            .arg(&path)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} runs: {e}"));
        let log = capture(&mut child);
        let mut n = Netmon {
            child,
            addr: String::new(),
            config: path,
            _dir: dir,
            log,
        };
        let line = n.wait_log("serving metrics at", Duration::from_secs(20));
        n.addr = line
            .split("address=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("listen address in log")
            .to_string();
        n
    }
}

/// Collects a child's stdout and stderr lines, in threads, into a shared list.
pub fn capture(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    log
}
