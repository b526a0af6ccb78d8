//! End to end: `netmon console` driven through a real pseudo-terminal, its screen rendered by
//! a terminal emulator (vt100) so the tests see what a person would: completion, commands
//! changing /metrics, log lines arriving above a half-typed line, `save` then `config check`.
//! Also the plain-stdin fallback without a terminal.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{http, metric, series};
use nix::pty::{Winsize, openpty};

const ROWS: u16 = 50;
const COLS: u16 = 200;

/// A `netmon console` on a pseudo-terminal.
struct Console {
    child: Child,
    input: File,
    screen: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<String>>,
    /// The web address.
    addr: String,
    dir: tempfile::TempDir,
}

impl Console {
    fn start(config: &str) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netmon.yml");
        std::fs::write(&path, config).unwrap();
        let size = Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let mut cmd = Command::new(crate::support::BIN);
        cmd.arg("console")
            .arg("--config.file")
            .arg(&path)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .env("TERM", "xterm")
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("netmon runs");
        drop(cmd); // closes our copies of the slave side
        let mut output = File::from(pty.master.try_clone().unwrap());
        let mut answer = File::from(pty.master.try_clone().unwrap());
        let input = File::from(pty.master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let raw = Arc::new(Mutex::new(String::new()));
        {
            let (screen, raw) = (screen.clone(), raw.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = output.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let chunk = &buf[..n];
                    let mut s = screen.lock().unwrap();
                    s.process(chunk);
                    // rustyline asks where the cursor is (DSR); answer as a terminal would.
                    if chunk.windows(4).any(|w| w == b"\x1b[6n") {
                        let (r, c) = s.screen().cursor_position();
                        let _ = write!(answer, "\x1b[{};{}R", r + 1, c + 1);
                    }
                    raw.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(chunk));
                }
            });
        }
        let mut c = Console {
            child,
            input,
            screen,
            raw,
            addr: String::new(),
            dir,
        };
        c.wait_raw("netmon> ");
        // The log line and the prompt share the terminal; on a busy machine the prompt can
        // come first, so wait for the whole address, not only for the prompt.
        let address = |c: &Console| {
            let raw = c.raw.lock().unwrap().clone();
            let rest = raw.split("address=").nth(1)?.to_string();
            let end = rest.find(char::is_whitespace)?;
            Some(rest[..end].to_string())
        };
        c.wait("the listen address in the log", |c| address(c).is_some());
        c.addr = address(&c).expect("the listen address in the log");
        c
    }

    fn send(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// The screen's rows, trailing spaces trimmed.
    fn rows(&self) -> Vec<String> {
        let p = self.screen.lock().unwrap();
        p.screen()
            .rows(0, COLS)
            .map(|r| r.trim_end().to_string())
            .collect()
    }

    fn text(&self) -> String {
        self.rows().join("\n")
    }

    /// The row the cursor is on, up to the cursor: the prompt and what is typed (a grey hint
    /// after the cursor is not typed text).
    fn typed(&self) -> String {
        let (r, c) = self.screen.lock().unwrap().screen().cursor_position();
        let row = &self.rows()[usize::from(r)];
        row.chars()
            .take(usize::from(c))
            .collect::<String>()
            .trim_end()
            .to_string()
    }

    /// Waits until the screen satisfies `pred`; panics with the screen on timeout.
    fn wait(&self, what: &str, pred: impl Fn(&Console) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !pred(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_screen(&self, needle: &str) {
        self.wait(needle, |c| c.text().contains(needle));
    }

    fn wait_raw(&self, needle: &str) {
        self.wait(needle, |c| c.raw.lock().unwrap().contains(needle));
    }

    /// Sends a command line and waits until it was accepted and a new, empty prompt follows.
    fn command(&mut self, line: &str) -> String {
        let shown: String = line.chars().filter(|c| !c.is_control()).collect();
        let echoed = format!("netmon> {}", shown.trim_end());
        let count = |c: &Console| c.rows().iter().filter(|r| **r == echoed).count();
        let before = count(self);
        self.send(&format!("{line}\r"));
        self.wait(&format!("the prompt after `{line}`"), |c| {
            count(c) > before && c.typed() == "netmon>"
        });
        self.text()
    }

    fn scrape(&self) -> String {
        let (status, body) = http(&self.addr, "GET", "/metrics");
        assert_eq!(status, 200);
        body
    }

    fn wait_metric(&self, name: &str, labels: &[(&str, &str)], pred: impl Fn(Option<f64>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.scrape();
            if pred(metric(&text, name, labels)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} never as expected:\n{text}\nscreen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn quit(mut self) {
        self.send("quit\r");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}:\n{}", self.text());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after quit:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_port() -> u16 {
    testkit::net::accepting_port()
}

fn config(port: u16) -> String {
    format!(
        "defaults: {{ interval: 1s, timeout: 500ms }}\ntargets:\n  127.0.0.1:\n    services: [\"TCP:{port}\"]\n"
    )
}

#[test]
fn tab_completes_a_partial_command_and_a_partial_host() {
    let port = open_port();
    let mut c = Console::start(&config(port));
    c.send("sta\t");
    c.wait("`status ` completed", |c| c.typed() == "netmon> status");
    c.send("127.0\t");
    c.wait("the host completed", |c| {
        c.typed() == "netmon> status 127.0.0.1"
    });
    c.send("\r");
    c.wait_screen(&format!("tcp:{port} (127.0.0.1:{port} every 1s)"));
    // A service name completes after its host.
    c.send("check 127.0.0.1 tc\t");
    c.wait("the service completed", |c| {
        c.typed() == format!("netmon> check 127.0.0.1 tcp:{port}")
    });
    c.send("\r");
    c.wait_screen(&format!("127.0.0.1 tcp:{port}: UP in "));
    c.quit();
}

#[test]
fn add_shows_in_status_and_remove_vanishes_from_metrics() {
    let first = open_port();
    let added = open_port();
    let mut c = Console::start(&config(first));
    let svc = format!("tcp:{added}");
    let labels = [("host", "127.0.0.1"), ("service", svc.as_str())];
    assert!(metric(&c.scrape(), "netmon_up", &labels).is_none());

    let screen = c.command(&format!("add 127.0.0.1 tcp:{added} every 200ms"));
    assert!(
        screen.contains(&format!(
            "added 127.0.0.1 {svc} (timeout lowered to fit: {svc} 180ms)"
        )),
        "{screen}"
    );
    c.wait_metric("netmon_up", &labels, |v| v == Some(1.0));
    let screen = c.command("status");
    let row = screen
        .lines()
        .find(|l| l.contains(&format!("{svc} (127.0.0.1:{added} every 200ms)")))
        .unwrap_or_else(|| panic!("no status row for {svc}:\n{screen}"));
    assert!(row.contains(" up "), "{row}");

    c.command(&format!("remove 127.0.0.1 {svc}"));
    let text = c.scrape();
    assert!(
        series(&text, "netmon_up", &labels).is_empty()
            && series(&text, "netmon_probes_total", &labels).is_empty(),
        "removed service still on /metrics:\n{text}"
    );
    // The other service is untouched.
    let first_svc = format!("tcp:{first}");
    assert!(metric(&text, "netmon_up", &[("service", first_svc.as_str())]).is_some());
    c.quit();
}

#[test]
fn status_shows_a_traceroutes_path_below_the_table() {
    let port = open_port();
    let mut c = Console::start(&config(port));
    let screen = c.command("add 127.0.0.1 traceroute every 1s");
    assert!(screen.contains("added 127.0.0.1 traceroute"), "{screen}");
    let labels = [("host", "127.0.0.1"), ("service", "traceroute")];
    c.wait_metric("netmon_traceroute_reached", &labels, |v| v == Some(1.0));
    let screen = c.command("status");
    // Loopback is the first hop.
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("127.0.0.1 traceroute path: 1 127.0.0.1 ")),
        "{screen}"
    );
    c.quit();
}

#[test]
fn a_log_line_arriving_while_typing_leaves_the_typed_text_intact() {
    let port = open_port();
    let mut c = Console::start(&config(port));
    c.send("status 127.0");
    c.wait("the typed text", |c| c.typed() == "netmon> status 127.0");
    // A reload logs a line at info while the line is half typed.
    let (code, _) = http(&c.addr, "POST", "/-/reload");
    assert_eq!(code, 200);
    c.wait_screen("configuration reloaded");
    // rustyline writes the log line, then redraws the prompt: wait for the redraw.
    c.wait("the prompt redrawn below the log line", |c| {
        c.typed() == "netmon> status 127.0"
    });
    let rows = c.rows();
    let log_row = rows
        .iter()
        .position(|r| r.contains("configuration reloaded"))
        .unwrap();
    let (cursor, col) = c.screen.lock().unwrap().screen().cursor_position();
    assert!(
        log_row < usize::from(cursor),
        "log below the prompt:\n{}",
        c.text()
    );
    assert_eq!(c.typed(), "netmon> status 127.0", "{}", c.text());
    assert_eq!(usize::from(col), "netmon> status 127.0".len());
    assert_eq!(rows[usize::from(cursor)], "netmon> status 127.0");
    assert!(
        rows[log_row]
            .split_whitespace()
            .next()
            .unwrap()
            .ends_with('Z'),
        "log line without its timestamp: {}",
        rows[log_row]
    );
    // The line still runs as typed.
    c.send(".0.1\r");
    c.wait_screen("HOST       SERVICE");
    c.quit();
}

#[test]
fn save_writes_a_file_that_config_check_accepts() {
    let port = open_port();
    let other = open_port();
    let mut c = Console::start(&config(port));
    c.command(&format!("add localhost tcp:{other}"));
    c.command("interval 127.0.0.1 2s");
    let file = c.dir.path().join("saved.yml");
    let screen = c.command(&format!("save {}", file.display()));
    assert!(
        screen.contains(&format!(
            "saved 2 target(s), 2 service(s) to {}",
            file.display()
        )),
        "{screen}"
    );
    let out = Command::new(crate::support::BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid, 2 target(s), 2 service(s)"),
        "{stdout}"
    );
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("interval: 2s"), "{saved}");
    assert!(saved.contains(&format!("tcp:{other}")), "{saved}");
    c.quit();
}

#[test]
fn bad_input_gets_a_one_line_error_and_the_console_goes_on() {
    let port = open_port();
    let mut c = Console::start(&config(port));
    for (line, expected) in [
        (
            "stauts",
            "error: unknown command `stauts` (did you mean `status`?)",
        ),
        (
            "add 127.0.0.1",
            "error: missing argument; usage: add HOST PROTOCOL[:PORT] [every DURATION]",
        ),
        (
            "add 127.0.0.1 tcp",
            "error: tcp service on `127.0.0.1` needs a port: write `tcp:22`, e.g. `add 127.0.0.1 tcp:22`",
        ),
        (
            "add 127.0.0.1 gopher:70",
            "error: unknown protocol `gopher`",
        ),
        (
            "remove nowhere",
            "error: no host `nowhere`; hosts: 127.0.0.1",
        ),
        (
            "interval 127.0.0.1 50ms",
            "error: interval 50ms is too short",
        ),
        ("log loud", "error: unknown level `loud`"),
        ("%s%n\u{7}", "error: unknown command `%s%n"),
    ] {
        let screen = c.command(line);
        assert!(screen.contains(expected), "{line:?}:\n{screen}");
    }
    c.wait("still prompting", |c| c.typed() == "netmon>");
    c.quit();
}

#[test]
fn without_a_terminal_commands_are_read_from_stdin() {
    let port = open_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netmon.yml");
    std::fs::write(&path, config(port)).unwrap();
    let mut child = Command::new(crate::support::BIN)
        .arg("console")
        .arg("--config.file")
        .arg(&path)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "check 127.0.0.1\nstatus\nnonsense\nquit").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("127.0.0.1 tcp:{port}: UP in ")),
        "{stdout}"
    );
    assert!(stdout.contains("HOST       SERVICE"), "{stdout}");
    assert!(
        stdout.contains("error: unknown command `nonsense`"),
        "{stdout}"
    );
}
