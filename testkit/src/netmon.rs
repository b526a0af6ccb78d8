//! A running `netmon serve` on loopback: its log lines, its HTTP endpoints, its metrics, its
//! process state. The binary's path comes from the test (`env!("CARGO_BIN_EXE_netmon")`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exposition::{http, metric};
use crate::process::capture;

/// A running `netmon serve` with its config file and captured output; killed when dropped.
pub struct Netmon {
    child: Child,
    /// The web address, `127.0.0.1:PORT`.
    pub addr: String,
    /// The config file it was started with; rewrite it and reload.
    pub config: PathBuf,
    _dir: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Netmon {
    /// Starts `bin` with `config` (YAML text, in a new temporary directory) and `extra`
    /// arguments; waits (at most 20 s) until it serves.
    pub fn start_bin(bin: &str, config: &str, extra: &[&str]) -> Netmon {
        let mut command = Command::new(bin);
        command.args(extra);
        Netmon::start_command(
            command,
            tempfile::tempdir().expect("a temporary directory"),
            config,
        )
    }

    /// Starts netmon through `command` (the binary, a copy of it, or a wrapper such as
    /// `setpriv ... -- BINARY` or `ip netns exec NS BINARY`), appending `--config.file`
    /// (`config` written in `dir`, which the process must be able to read) and a loopback
    /// `--web.listen-address`; waits until it serves.
    pub fn start_command(command: Command, dir: tempfile::TempDir, config: &str) -> Netmon {
        let path = dir.path().to_path_buf();
        let mut n = Netmon::start_in(command, &path, config);
        n._dir = Some(dir);
        n
    }

    /// The same with the config written in `dir`, a directory the caller keeps.
    pub fn start_in(mut command: Command, dir: &Path, config: &str) -> Netmon {
        let path = dir.join("netmon.yml");
        std::fs::write(&path, config).expect("write the netmon config");
        let mut child = command
            .arg("--config.file")
            .arg(&path)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} runs: {e}"));
        let log = capture(&mut child);
        let mut n = Netmon {
            child,
            addr: String::new(),
            config: path,
            _dir: None,
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

    /// Waits for a log line containing `needle`; panics with the whole log on timeout or if
    /// netmon exits first.
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
    /// the last scrape and the log on timeout.
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
            if let Some(v) = metric(&text, name, labels).filter(|v| pred(*v)) {
                return v;
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
        std::fs::write(&self.config, config).expect("rewrite the netmon config");
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit and returns the exit code; panics with the log on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for netmon") {
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

    /// The process's open file descriptors, counted in `/proc/PID/fd` rather than through a
    /// scrape, whose own connection would be counted.
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
