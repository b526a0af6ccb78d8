//! The command line (clap derive). Flags follow the Prometheus exporter conventions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A network monitor and Prometheus exporter.
///
/// Without a command, `netmon` runs `serve`.
#[derive(Debug, Parser)]
#[command(name = "netmon", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the command name too.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the monitor and serve /metrics (the default).
    Serve(ServeArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Probe once and exit with a Nagios plugin code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check(CheckArgs),
    /// Run the monitor and /metrics with an interactive prompt and tab completion.
    Console(ServeArgs),
    /// Print the man page (roff): `netmon man > netmon.1`.
    Man,
}

/// Options of `check`: either `PROTOCOL HOST` or `--config.file FILE`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  netmon check tcp 127.0.0.1 --port 22 -w 0.1 -c 0.5
  netmon check tcp 127.0.0.1 -p 25 -o 'expect_regex=^220 '
  netmon check icmp 192.0.2.1 -w 0.1,20% -c 0.2,60%
  netmon check --config.file netmon.yml --host www.example.com")]
pub struct CheckArgs {
    /// The protocol to probe (http, https, icmp, dns, ntp, tcp, udp, echo).
    #[arg(value_name = "PROTOCOL")]
    pub protocol: Option<String>,
    /// The host to probe.
    #[arg(value_name = "HOST")]
    pub host: Option<String>,
    /// The host: with PROTOCOL, instead of HOST; with --config.file, only this target.
    #[arg(long = "host", short = 'H', value_name = "HOST")]
    pub host_flag: Option<String>,
    /// The port (for protocols that have one).
    #[arg(long, short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// A protocol option as in the config file, e.g. `-o expect_regex=^SSH` (repeatable).
    #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// WARNING threshold: latency range in seconds, then optionally `,LOSS%` (Nagios ranges).
    #[arg(
        long,
        short = 'w',
        value_name = "RANGE[,RANGE%]",
        allow_hyphen_values = true
    )]
    pub warning: Option<String>,
    /// CRITICAL threshold: latency range in seconds, then optionally `,LOSS%` (Nagios ranges).
    #[arg(
        long,
        short = 'c',
        value_name = "RANGE[,RANGE%]",
        allow_hyphen_values = true
    )]
    pub critical: Option<String>,
    /// Probe timeout (default: the service's timeout, 5s without a config).
    #[arg(long, short = 't', value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Check the services of this configuration file instead of PROTOCOL HOST.
    #[arg(long = "config.file", visible_alias = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

/// `netmon config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file: exit 0 when valid, 1 with every error listed.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (default: ./netmon.yml if present, else the built-in default).
    #[arg(
        long = "config.file",
        short = 'c',
        visible_alias = "config",
        value_name = "FILE",
        global = true
    )]
    pub config_file: Option<PathBuf>,
    /// Address for /metrics and the other endpoints; `:PORT` listens on every interface.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = ":9855",
        global = true
    )]
    pub listen_address: String,
    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics",
        global = true
    )]
    pub telemetry_path: String,
    /// TLS and basic auth for the web endpoints (Prometheus exporter-toolkit format).
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    pub web_config_file: Option<PathBuf>,
    /// Refuse `POST /-/reload` (SIGHUP still reloads).
    #[arg(long = "web.disable-reload", global = true)]
    pub disable_reload: bool,
    /// Most probes running at once, across all services.
    #[arg(
        long = "probes.max-in-flight",
        value_name = "N",
        default_value_t = 1024,
        global = true
    )]
    pub max_in_flight: usize,
}

/// Logging options.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Least severe level logged.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    pub level: LogLevel,
    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value = "text", global = true)]
    pub format: LogFormat,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, reloads, first results and state changes.
    Info,
    /// Every probe result.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level's name for tracing's filter.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_work_with_and_without_the_command() {
        let a = Cli::try_parse_from([
            "netmon",
            "--config.file",
            "x.yml",
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert!(a.command.is_none());
        assert_eq!(a.serve.config_file.unwrap(), PathBuf::from("x.yml"));
        let b = Cli::try_parse_from(["netmon", "serve", "-c", "y.yml"]).unwrap();
        let Some(Command::Serve(s)) = b.command else {
            panic!("serve expected")
        };
        assert_eq!(s.config_file.unwrap(), PathBuf::from("y.yml"));
        let c = Cli::try_parse_from(["netmon", "--config", "z.yml"]).unwrap();
        assert_eq!(c.serve.config_file.unwrap(), PathBuf::from("z.yml"));
    }
}
