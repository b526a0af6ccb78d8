//! Programs found on the machine (or a clear "not run"), daemons that die with the test,
//! commands with a deadline, and a child's output collected line by line.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where programs are looked for besides `PATH`: daemons live in sbin directories, which an
/// unprivileged `PATH` often lacks.
const SBIN: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The full path of `name` on `PATH` or in the sbin directories.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Says that `test` cannot run here and why: the test then passes without running, unless
/// the environment variable `require` is 1 (CI sets it), which makes this a failure.
pub fn not_run(require: &str, test: &str, why: &str) {
    let text = format!("{test}: NOT RUN: {why}");
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{text}; {require}=1 makes this a failure");
    }
    eprintln!("{text}");
    println!("{text}");
}

/// The full paths of `names`, or `None` after [`not_run`] said which are missing and how to
/// install them (`install`).
pub fn programs<const N: usize>(
    require: &str,
    test: &str,
    install: &str,
    names: [&str; N],
) -> Option<[PathBuf; N]> {
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
        require,
        test,
        &format!("{} not found ({install})", missing.join(", ")),
    );
    None
}

/// Collects a child's stdout and stderr lines, in threads, into a shared list.
pub fn capture(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    log
}

/// A server process that is killed when the test ends, its output in a file.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with stdout and stderr into `log`, then waits (at most 10 s) until
    /// every port in `ports` accepts TCP connections on 127.0.0.1.
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

/// Runs `command` to its end with stdin closed, killing it (and failing the test) after
/// `limit`.
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

/// This process's effective user id, from `/proc/self/status`; `None` where that cannot be
/// read.
pub fn euid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Why `tools` cannot be used here, if one is missing: `None` when all are on `PATH` or in
/// the sbin directories; otherwise which one, and `install`, the way to get them.
pub fn missing_tool(tools: &[&str], install: &str) -> Option<String> {
    tools
        .iter()
        .find(|t| find(t).is_none())
        .map(|t| format!("`{t}` is not installed ({install})"))
}
