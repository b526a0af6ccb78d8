//! The console's command language: one table of commands (name, usage, help) that parsing,
//! `help`, completion and hints all read, and a parser from a typed line to a [`Command`].
//! Parsing checks only the shape of a line; what the names mean is checked against the
//! running monitor when the command runs.

use std::path::PathBuf;

use crate::base::values::Duration;

/// One command of the console: its name, its usage line and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The word typed.
    pub name: &'static str,
    /// Arguments, in the usage notation of `help`.
    pub args: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// More, for `help COMMAND`.
    pub more: &'static str,
}

impl Spec {
    /// `name args`.
    pub fn usage(&self) -> String {
        if self.args.is_empty() {
            self.name.to_string()
        } else {
            format!("{} {}", self.name, self.args)
        }
    }
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: [Spec; 11] = [
    Spec {
        name: "status",
        args: "[HOST]",
        about: "show each service: state, latency, loss, last check, last error",
        more: "Without HOST, every service. STATE is up, DOWN or pending (no result yet), plus `paused`.",
    },
    Spec {
        name: "add",
        args: "HOST PROTOCOL[:PORT] [every DURATION]",
        about: "start monitoring a service",
        more: "Examples: `add 127.0.0.1 tcp:22`, `add example.com https every 30s`. The new configuration is validated as `netmon config check` would before it runs.",
    },
    Spec {
        name: "remove",
        args: "HOST [SERVICE]",
        about: "stop monitoring a host, or one of its services",
        more: "Its series disappear from /metrics at once.",
    },
    Spec {
        name: "pause",
        args: "[HOST [SERVICE]]",
        about: "stop probing everything, a host, or one service",
        more: "Paused services keep their last results; `resume` starts probing again. Pausing is not saved.",
    },
    Spec {
        name: "resume",
        args: "[HOST [SERVICE]]",
        about: "probe paused services again",
        more: "",
    },
    Spec {
        name: "check",
        args: "HOST [SERVICE]",
        about: "probe now and print the result",
        more: "The result is recorded as any scheduled probe's (metrics, status, log).",
    },
    Spec {
        name: "interval",
        args: "HOST [SERVICE] DURATION",
        about: "change how often a host (or one service) is probed",
        more: "DURATION is e.g. 500ms, 30s, 2m. For a host, its services' own intervals are dropped so all follow the new one.",
    },
    Spec {
        name: "save",
        args: "[FILE]",
        about: "write the running configuration as YAML",
        more: "Without FILE, the file netmon was started with (comments in it are not kept). `netmon config check FILE` accepts what is written.",
    },
    Spec {
        name: "log",
        args: "on|off|LEVEL",
        about: "show or hide log lines, or set the level",
        more: "LEVEL is error, warn, info, debug or trace, or a RUST_LOG filter such as `netmon=debug`. `on` goes back to the level netmon started with.",
    },
    Spec {
        name: "help",
        args: "[COMMAND]",
        about: "list the commands, or explain one",
        more: "",
    },
    Spec {
        name: "quit",
        args: "",
        about: "stop netmon and leave (also `exit` or Ctrl-D)",
        more: "",
    },
];

/// The spec of command `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// What `log` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSetting {
    /// Back to the starting level.
    On,
    /// Nothing at all.
    Off,
    /// A level or filter.
    Filter(String),
}

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status [HOST]`
    Status(Option<String>),
    /// `add HOST PROTOCOL[:PORT] [every DURATION]`
    Add {
        /// The host.
        host: String,
        /// `PROTOCOL[:PORT]` as typed.
        service: String,
        /// `every DURATION`.
        every: Option<Duration>,
    },
    /// `remove HOST [SERVICE]`
    Remove {
        /// The host.
        host: String,
        /// One service, or all.
        service: Option<String>,
    },
    /// `pause` / `resume` `[HOST [SERVICE]]`
    Pause {
        /// True for pause, false for resume.
        paused: bool,
        /// Only this host.
        host: Option<String>,
        /// Only this service.
        service: Option<String>,
    },
    /// `check HOST [SERVICE]`
    Check {
        /// The host.
        host: String,
        /// One service, or all.
        service: Option<String>,
    },
    /// `interval HOST [SERVICE] DURATION`
    Interval {
        /// The host.
        host: String,
        /// One service, or the whole host.
        service: Option<String>,
        /// The new interval.
        every: Duration,
    },
    /// `save [FILE]`
    Save(Option<PathBuf>),
    /// `log on|off|LEVEL`
    Log(LogSetting),
    /// `help [COMMAND]`
    Help(Option<String>),
    /// `quit`
    Quit,
    /// An empty line.
    Nothing,
}

/// A line that is not a command, with the usage to show beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// The usage of the command, if one was recognised.
    pub usage: Option<String>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.usage {
            Some(u) => write!(f, "{}; usage: {u}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    match Duration::parse(text) {
        Ok(d) if d.0.is_zero() => Err("the duration must be greater than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e),
    }
}

/// Parses one typed line.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&first, args)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    let name = first.to_ascii_lowercase();
    let name = match name.as_str() {
        "exit" => "quit",
        "?" => "help",
        n => n,
    };
    let Some(spec) = spec(name) else {
        let hint = crate::base::hint::did_you_mean(first, COMMANDS.iter().map(|c| c.name));
        return Err(ParseError {
            message: format!("unknown command `{first}`{hint}; type `help` for the list"),
            usage: None,
        });
    };
    let err = |message: String| ParseError {
        message,
        usage: Some(spec.usage()),
    };
    let count = |min: usize, max: usize| {
        if args.len() < min {
            Err(err("missing argument".into()))
        } else if args.len() > max {
            Err(err(format!("unexpected `{}`", args[max])))
        } else {
            Ok(())
        }
    };
    let arg = |i: usize| args.get(i).map(|s| s.to_string());
    Ok(match name {
        "status" => {
            count(0, 1)?;
            Command::Status(arg(0))
        }
        "add" => {
            let every = match args.len() {
                2 => None,
                4 if args[2].eq_ignore_ascii_case("every") => Some(duration(args[3]).map_err(err)?),
                4 => return Err(err(format!("expected `every`, not `{}`", args[2]))),
                3 if args[2].eq_ignore_ascii_case("every") => {
                    return Err(err("`every` needs a DURATION such as 30s".into()));
                }
                _ => {
                    count(2, 4)?;
                    return Err(err(format!("unexpected `{}`", args[2])));
                }
            };
            Command::Add {
                host: args[0].to_string(),
                service: args[1].to_string(),
                every,
            }
        }
        "remove" => {
            count(1, 2)?;
            Command::Remove {
                host: args[0].to_string(),
                service: arg(1),
            }
        }
        "pause" | "resume" => {
            count(0, 2)?;
            Command::Pause {
                paused: name == "pause",
                host: arg(0),
                service: arg(1),
            }
        }
        "check" => {
            count(1, 2)?;
            Command::Check {
                host: args[0].to_string(),
                service: arg(1),
            }
        }
        "interval" => {
            count(2, 3)?;
            let (service, every) = match args {
                [_, d] => (None, d),
                [_, s, d] => (Some(s.to_string()), d),
                _ => return Err(err("missing argument".into())),
            };
            Command::Interval {
                host: args[0].to_string(),
                service,
                every: duration(every).map_err(err)?,
            }
        }
        "save" => {
            count(0, 1)?;
            Command::Save(arg(0).map(PathBuf::from))
        }
        "log" => {
            count(1, 1)?;
            Command::Log(match args[0].to_ascii_lowercase().as_str() {
                "on" => LogSetting::On,
                "off" => LogSetting::Off,
                _ => LogSetting::Filter(args[0].to_string()),
            })
        }
        "help" => {
            count(0, 1)?;
            Command::Help(arg(0))
        }
        _ => {
            count(0, 0)?;
            Command::Quit
        }
    })
}

/// The text of `help` or `help COMMAND`.
pub fn help(topic: Option<&str>) -> Result<String, ParseError> {
    match topic {
        None => {
            let width = COMMANDS.iter().map(|c| c.usage().len()).max().unwrap_or(0);
            let mut out =
                String::from("commands (Tab completes commands, hosts, protocols and services):\n");
            for c in &COMMANDS {
                out.push_str(&format!("  {:width$}  {}\n", c.usage(), c.about));
            }
            Ok(out.trim_end().to_string())
        }
        Some(t) => {
            let name = if t == "exit" { "quit" } else { t };
            let Some(c) = spec(&name.to_ascii_lowercase()) else {
                let hint = crate::base::hint::did_you_mean(t, COMMANDS.iter().map(|c| c.name));
                return Err(ParseError {
                    message: format!("no command `{t}`{hint}"),
                    usage: Some("help [COMMAND]".into()),
                });
            };
            let mut out = format!("usage: {}\n  {}", c.usage(), c.about);
            if !c.more.is_empty() {
                out.push_str(&format!("\n  {}", c.more));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_parse() {
        assert_eq!(parse("  ").unwrap(), Command::Nothing);
        assert_eq!(parse("status").unwrap(), Command::Status(None));
        assert_eq!(
            parse("add h tcp:22 every 10s").unwrap(),
            Command::Add {
                host: "h".into(),
                service: "tcp:22".into(),
                every: Some(Duration::parse("10s").unwrap())
            }
        );
        assert_eq!(
            parse("interval h tcp:22 1m").unwrap(),
            Command::Interval {
                host: "h".into(),
                service: Some("tcp:22".into()),
                every: Duration::parse("1m").unwrap()
            }
        );
        assert_eq!(parse("EXIT").unwrap(), Command::Quit);
        assert_eq!(parse("log off").unwrap(), Command::Log(LogSetting::Off));
    }

    #[test]
    fn bad_lines_say_what_is_wrong_with_the_usage() {
        let cases = [
            (
                "stauts",
                "unknown command `stauts` (did you mean `status`?)",
            ),
            (
                "add h",
                "missing argument; usage: add HOST PROTOCOL[:PORT] [every DURATION]",
            ),
            ("add h tcp:1 each 5s", "expected `every`, not `each`"),
            ("add h tcp:1 every", "`every` needs a DURATION"),
            ("add h tcp:1 every 0s", "greater than zero"),
            ("remove", "missing argument; usage: remove HOST [SERVICE]"),
            ("quit now", "unexpected `now`"),
            ("interval h soon", "invalid duration `soon`"),
            ("log", "missing argument; usage: log on|off|LEVEL"),
        ];
        for (line, expected) in cases {
            let e = parse(line).unwrap_err().to_string();
            assert!(e.contains(expected), "{line:?}: {e}");
            assert!(!e.contains('\n'), "{line:?}: {e}");
        }
    }

    #[test]
    fn help_lists_every_command() {
        let h = help(None).unwrap();
        for c in &COMMANDS {
            assert!(h.contains(&c.usage()), "{h}");
        }
        assert!(help(Some("add")).unwrap().contains("usage: add HOST"));
        assert!(help(Some("nope")).is_err());
    }
}
