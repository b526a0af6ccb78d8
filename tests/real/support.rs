//! Helpers of the real-server tests on top of the test kit: the rule for missing programs
//! (skip, or fail under `NETMON_REQUIRE_REAL_SERVERS=1`), curl's verdict, and a `netmon serve`
//! of this build. Every wait here is bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use testkit::net::free_port;
pub use testkit::netmon::Netmon;
pub use testkit::process::{Daemon, ok, run};

/// With this set to 1 (CI sets it), a missing program fails the test instead of skipping it.
pub const REQUIRE: &str = "NETMON_REQUIRE_REAL_SERVERS";

/// How to install every program these tests use.
const INSTALL: &str = "Debian: apt-get install nginx-light openssh-server curl openssl fping chrony faketime ntpsec-ntpdig unbound bind9-dnsutils; see .ci/run for ntpsec's ntpd and stamp-suite (cargo install stamp-suite --version 1.0.0 --locked --root /opt/stamp-suite, then /opt/stamp-suite/bin on PATH)";

/// The absolute paths of `names`, or `None` after saying which are missing (the test then
/// passes without running), or a panic when [`REQUIRE`] is 1.
pub fn programs<const N: usize>(test: &str, names: [&str; N]) -> Option<[PathBuf; N]> {
    testkit::process::programs(REQUIRE, test, INSTALL, names)
}

/// Says that `test` cannot run here and why (the test then passes without running), or
/// panics when [`REQUIRE`] is 1.
pub fn not_run(test: &str, why: &str) {
    testkit::process::not_run(REQUIRE, test, why)
}

/// Starts this build's netmon with `config` written in `dir`; waits until it serves.
pub fn serve(dir: &Path, config: &str) -> Netmon {
    Netmon::start_in(Command::new(env!("CARGO_BIN_EXE_netmon")), dir, config)
}

/// The value of the series `name` of service `service` (and the `extra` label, if given).
pub fn metric(text: &str, name: &str, service: &str, extra: Option<(&str, &str)>) -> Option<f64> {
    let mut labels = vec![("service", service)];
    labels.extend(extra);
    testkit::exposition::metric(text, name, &labels)
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
