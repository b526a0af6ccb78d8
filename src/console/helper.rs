//! Tab completion and hints for the console's line editor (rustyline).
//!
//! What is completed depends on the word's position: the command name first, then per
//! command a host, a protocol, a service of that host, `every`, a log level, or a file name
//! for `save`. Hosts and services come from [`SharedNames`], which the session refreshes from
//! the monitor after every command. Hints show the rest of a command's usage in grey.

use std::borrow::Cow;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::{Hint, Hinter};
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::{COMMANDS, spec};
use super::session::{Session, SharedNames};

/// The console's rustyline helper.
pub struct ConsoleHelper {
    names: SharedNames,
    files: FilenameCompleter,
}

impl std::fmt::Debug for ConsoleHelper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHelper").finish_non_exhaustive()
    }
}

impl ConsoleHelper {
    /// A helper completing from `names`.
    pub fn new(names: SharedNames) -> Self {
        ConsoleHelper {
            names,
            files: FilenameCompleter::new(),
        }
    }

    /// The words that may stand at argument `index` of `command`, given the earlier `args`.
    fn candidates(&self, command: &str, index: usize, args: &[&str]) -> Vec<(String, bool)> {
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        let hosts = || names.hosts.keys().map(|h| (h.clone(), true)).collect();
        let services = |host: &str| {
            names
                .hosts
                .get(host)
                .map(|s| s.iter().map(|n| (n.clone(), true)).collect())
                .unwrap_or_default()
        };
        let command = if command == "exit" { "quit" } else { command };
        match (command, index) {
            ("status" | "remove" | "pause" | "resume" | "check" | "interval" | "add", 0) => hosts(),
            ("remove" | "pause" | "resume" | "check" | "interval", 1) => services(args[0]),
            // A protocol that takes a port is left open for `:PORT`.
            ("add", 1) => Session::protocols()
                .into_iter()
                .map(|p| (p.to_string(), false))
                .collect(),
            ("add", 2) => vec![("every".into(), true)],
            ("log", 0) => ["on", "off", "error", "warn", "info", "debug", "trace"]
                .map(|l| (l.to_string(), true))
                .to_vec(),
            ("help", 0) => COMMANDS
                .iter()
                .map(|c| (c.name.to_string(), true))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let candidates: Vec<(String, bool)> = match words.split_first() {
            None => COMMANDS
                .iter()
                .map(|c| (c.name.to_string(), true))
                .collect(),
            Some((cmd, args)) if cmd.eq_ignore_ascii_case("save") && args.is_empty() => {
                return self.files.complete(line, pos, ctx);
            }
            Some((cmd, args)) => self.candidates(&cmd.to_ascii_lowercase(), args.len(), args),
        };
        let pairs = candidates
            .into_iter()
            .filter(|(c, _)| c.starts_with(word))
            .map(|(c, space)| Pair {
                replacement: if space { format!("{c} ") } else { c.clone() },
                display: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

/// A hint: grey text after the cursor; `complete` is what Right-arrow inserts.
#[derive(Debug)]
pub struct UsageHint {
    display: String,
    complete: Option<String>,
}

impl Hint for UsageHint {
    fn display(&self) -> &str {
        &self.display
    }

    fn completion(&self) -> Option<&str> {
        self.complete.as_deref()
    }
}

impl Hinter for ConsoleHelper {
    type Hint = UsageHint;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<UsageHint> {
        if pos < line.len() || line.trim().is_empty() {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let ends_in_space = line.ends_with(char::is_whitespace);
        if words.len() == 1 && !ends_in_space {
            // The rest of the one command this prefix names.
            let typed = words[0].to_ascii_lowercase();
            let mut matches = COMMANDS.iter().filter(|c| c.name.starts_with(&typed));
            let only = matches.next()?;
            if matches.next().is_some() || only.name == typed {
                return None;
            }
            let rest = only.name[typed.len()..].to_string();
            return Some(UsageHint {
                display: rest.clone(),
                complete: Some(rest),
            });
        }
        if !ends_in_space {
            return None;
        }
        // The arguments still to type, from the usage line.
        let spec = spec(&words[0].to_ascii_lowercase())?;
        let given = words.len() - 1;
        let rest: Vec<&str> = spec.args.split_whitespace().skip(given).collect();
        if rest.is_empty() {
            return None;
        }
        Some(UsageHint {
            display: rest.join(" "),
            complete: None,
        })
    }
}

impl Highlighter for ConsoleHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        // Dim, so a hint never reads as typed text.
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        false
    }
}

impl Validator for ConsoleHelper {}

impl Helper for ConsoleHelper {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::session::Names;
    use rustyline::history::DefaultHistory;
    use std::sync::{Arc, Mutex};

    fn helper() -> ConsoleHelper {
        let mut names = Names::default();
        names
            .hosts
            .insert("127.0.0.1".into(), vec!["tcp:22".into(), "tcp:80".into()]);
        names
            .hosts
            .insert("db.example".into(), vec!["tcp:5432".into()]);
        ConsoleHelper::new(Arc::new(Mutex::new(names)))
    }

    fn complete(line: &str) -> Vec<String> {
        let h = helper();
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = h.complete(line, line.len(), &ctx).unwrap();
        pairs
            .into_iter()
            .map(|p| format!("{}{}", &line[..start], p.replacement))
            .collect()
    }

    #[test]
    fn completes_commands_hosts_services_and_protocols() {
        assert_eq!(complete("sta"), ["status "]);
        assert_eq!(complete("re"), ["remove ", "resume "]);
        assert_eq!(complete("status 127"), ["status 127.0.0.1 "]);
        assert_eq!(
            complete("check 127.0.0.1 tcp:2"),
            ["check 127.0.0.1 tcp:22 "]
        );
        assert_eq!(complete("add db.example tc"), ["add db.example tcp"]);
        assert_eq!(
            complete("add db.example tcp:5 ev"),
            ["add db.example tcp:5 every "]
        );
        assert_eq!(complete("log de"), ["log debug "]);
        assert!(complete("quit x").is_empty());
    }

    #[test]
    fn hints_show_the_rest_of_the_usage() {
        let h = helper();
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let hint = |l: &str| h.hint(l, l.len(), &ctx).map(|h| h.display);
        assert_eq!(hint("stat").as_deref(), Some("us"));
        assert_eq!(
            hint("add ").as_deref(),
            Some("HOST PROTOCOL[:PORT] [every DURATION]")
        );
        assert_eq!(
            hint("add h ").as_deref(),
            Some("PROTOCOL[:PORT] [every DURATION]")
        );
        assert_eq!(hint("quit "), None);
        assert_eq!(hint("re"), None);
    }
}
