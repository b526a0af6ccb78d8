//! `netmon console`: the monitor and its web server, as `serve` runs them, with a prompt.
//!
//! The prompt (rustyline) blocks, so it has its own thread; commands run on the tokio runtime
//! through a [`Session`]. Log lines go through a bounded channel to a printer thread that hands
//! them to rustyline's `ExternalPrinter`, which prints them above the prompt and redraws what
//! is being typed; a tokio worker never waits on the terminal. Without a terminal on stdin and
//! stdout, commands are read as plain lines from stdin and logs go to stdout, for scripts.
//!
//! - `command`: the command table and parser; `session`: what commands do;
//!   `helper`: Tab completion and hints.

mod command;
mod helper;
mod session;

pub use command::{COMMANDS, Command, ParseError, parse};
pub use session::{Names, Next, Session, SharedNames};

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rustyline::Editor;
use rustyline::config::{CompletionType, Config as EditorConfig};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{LogArgs, ServeArgs};
use crate::cmd::serve;
use crate::logging;
use crate::shutdown;
use helper::ConsoleHelper;

/// The prompt.
pub const PROMPT: &str = "netmon> ";

/// Log lines waiting for the terminal; beyond this they are dropped and counted.
const LOG_QUEUE: usize = 4096;

type LineEditor = Editor<ConsoleHelper, DefaultHistory>;

/// The history file: `$XDG_STATE_HOME/netmon/history`, else `~/.local/state/netmon/history`.
pub fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(base.join("netmon").join("history"))
}

/// A tracing writer that queues each log line for the printer thread.
#[derive(Debug, Clone)]
struct QueueWriter {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

/// One event's bytes; sent as one message when tracing drops it.
struct LineBuf {
    buf: Vec<u8>,
    queue: QueueWriter,
}

impl Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        if let Err(TrySendError::Full(_)) = self.queue.tx.try_send(line) {
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueueWriter {
    type Writer = LineBuf;

    fn make_writer(&'a self) -> LineBuf {
        LineBuf {
            buf: Vec::with_capacity(256),
            queue: self.clone(),
        }
    }
}

/// Prints queued log lines above the prompt until every writer is gone.
fn printer_thread(
    rx: Receiver<String>,
    mut printer: impl rustyline::ExternalPrinter + Send + 'static,
    dropped: Arc<AtomicU64>,
) {
    let spawned = std::thread::Builder::new()
        .name("console-log".into())
        .spawn(move || {
            for line in rx {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = printer.print(format!(
                        "({lost} log lines dropped: the terminal was too slow)\n"
                    ));
                }
                if printer.print(line.clone()).is_err() {
                    // The terminal is gone; stdout may still be a file.
                    print!("{line}");
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("netmon: cannot start the log printer: {e}");
    }
}

/// `netmon console`.
pub fn run(log: LogArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let names: SharedNames = Arc::new(Mutex::new(Names::default()));
    let mut editor = None;
    let mut control = None;
    if terminal {
        let config = EditorConfig::builder()
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .max_history_size(1000)
            .map_err(|e| anyhow::anyhow!("console history size: {e}"))?
            .build();
        let mut ed: LineEditor = Editor::with_config(config).context("starting the line editor")?;
        ed.set_helper(Some(ConsoleHelper::new(names.clone())));
        if let Ok(printer) = ed.create_external_printer() {
            let (tx, rx) = sync_channel(LOG_QUEUE);
            let dropped = Arc::new(AtomicU64::new(0));
            printer_thread(rx, printer, dropped.clone());
            let writer = QueueWriter { tx, dropped };
            control = Some(logging::init_reloadable(
                log.level(),
                log.format.into(),
                writer,
            ));
            editor = Some(ed);
        }
    }
    let control = match control {
        Some(c) => c,
        None => logging::init_reloadable(log.level(), log.format.into(), std::io::stdout),
    };
    // Saved so a stop by signal, while the prompt thread sits in raw mode, can restore it.
    let saved_tty = editor
        .as_ref()
        .and_then(|_| nix::sys::termios::tcgetattr(std::io::stdin()).ok());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let token = CancellationToken::new();
    let mut signals = {
        let _guard = rt.enter();
        shutdown::Signals::new().context("installing signal handlers")?
    };
    let (reloader, web_task) = rt.block_on(serve::start(&args, token.clone()))?;
    let config = reloader
        .source()
        .load()
        .with_context(|| format!("loading {}", reloader.source()))?;
    let session = Session::new(config, reloader.clone(), Some(control), names);
    rt.block_on(session.refresh_names());

    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            match editor {
                Some(ed) => prompt_loop(ed, session, &handle),
                None => plain_loop(session, &handle),
            }
            let _ = done_tx.send(());
        })
        .context("starting the console thread")?;

    let by_signal = rt.block_on(async {
        loop {
            tokio::select! {
                _ = &mut done_rx => return false,
                s = signals.next() => match s {
                    shutdown::Signal::Reload => { let _ = reloader.reload().await; }
                    shutdown::Signal::Stop(name) => {
                        info!(signal = name, "stopping");
                        return true;
                    }
                },
            }
        }
    });
    rt.block_on(async {
        token.cancel();
        reloader.close_discovery().await;
        reloader.monitor().lock().await.stop_all().await;
        if tokio::time::timeout(crate::base::listen::GRACE * 2, web_task)
            .await
            .is_err()
        {
            warn!("web server did not stop in time");
        }
    });
    info!("stopped");
    if by_signal {
        if let Some(t) = &saved_tty {
            // The prompt thread is still in raw mode and ends with the process: give the
            // terminal back as it was, once the last log line had its moment to print.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one line, never letting a panic in a command end the console.
fn execute(session: &mut Session, handle: &Handle, line: &str) -> Next {
    let run = std::panic::AssertUnwindSafe(|| handle.block_on(session.execute(line)));
    match std::panic::catch_unwind(run) {
        Ok((next, Ok(out))) => {
            if !out.is_empty() {
                println!("{out}");
            }
            next
        }
        Ok((next, Err(e))) => {
            println!("error: {e}");
            next
        }
        Err(_) => {
            println!(
                "error: internal error running `{}`; netmon keeps running",
                line.trim()
            );
            Next::Continue
        }
    }
}

fn prompt_loop(mut ed: LineEditor, mut session: Session, handle: &Handle) {
    let history = history_path();
    if let Some(p) = &history {
        let _ = ed.load_history(p);
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    let mut history_warned = false;
    println!("netmon console: type `help` for commands, Tab to complete, Ctrl-D to quit.");
    loop {
        handle.block_on(session.refresh_names());
        let line = match ed.readline(PROMPT) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                println!("(Ctrl-C clears the line; type `quit` or press Ctrl-D to leave)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("netmon: terminal error: {e}");
                break;
            }
        };
        if !line.trim().is_empty() {
            let _ = ed.add_history_entry(line.as_str());
            if let Some(p) = &history {
                // History is a convenience: failing to keep it must not stop the console.
                if let Err(e) = ed.append_history(p) {
                    if !history_warned {
                        println!("note: cannot write history to {}: {e}", p.display());
                        history_warned = true;
                    }
                }
            }
        }
        if execute(&mut session, handle, &line) == Next::Quit {
            break;
        }
    }
}

fn plain_loop(mut session: Session, handle: &Handle) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if execute(&mut session, handle, &line) == Next::Quit {
            break;
        }
        let _ = std::io::stdout().flush();
    }
}
