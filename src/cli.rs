//! The command line (clap derive). Flags follow the Prometheus exporter conventions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging;

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
    /// Run the UDP echo server (RFC 862), optionally TCP echo too.
    EchoServer(EchoServerArgs),
    /// Echo client: send numbered messages, check every reply byte for byte, print ping-like
    /// lines and a summary; exit 0 only when every message came back intact.
    Echo(EchoArgs),
    /// Run a stateless STAMP Session-Reflector (RFC 8762, unauthenticated) for `type: stamp`
    /// services and other STAMP senders.
    StampReflector(StampReflectorArgs),
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
  netmon check http http://127.0.0.1:9855/-/healthy
  netmon check tcp 127.0.0.1 -p 25 -o 'expect_regex=^220 '
  netmon check icmp 192.0.2.1 -w 0.1,20% -c 0.2,60%
  netmon check --config.file netmon.yml --host www.example.com")]
pub struct CheckArgs {
    /// The protocol to probe; the help lists the protocol table, so a new protocol shows up
    /// there by itself.
    #[arg(value_name = "PROTOCOL", help = protocol_help())]
    pub protocol: Option<String>,
    /// The host to probe; for http and https also a URL (scheme, host, port and path are
    /// taken from it).
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
        /// The file to check [default: what `serve` would load: --config.file, else
        /// ./netmon.yml, else the built-in default].
        file: Option<PathBuf>,
    },
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    // Only `--config.file` is global (`check` and `config` read it too); the web and probe
    // flags belong to `serve` and `console`, so other commands' help does not list them.
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
        default_value = ":9855"
    )]
    pub listen_address: String,
    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,
    /// TLS and basic auth for the web endpoints (Prometheus exporter-toolkit format).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Refuse `POST /-/reload` (SIGHUP still reloads).
    #[arg(long = "web.disable-reload")]
    pub disable_reload: bool,
    /// Most probes running at once, across all services.
    #[arg(
        long = "probes.max-in-flight",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_in_flight: usize,
    /// Results kept per service for the status page's sparkline and uptime, at most the last
    /// 24 hours' worth; 8 bytes each, allocated when the service starts. 0 keeps none.
    #[arg(
        long = "status.history-results",
        value_name = "N",
        default_value_t = 1440,
        value_parser = clap::value_parser!(u16).range(0..=1440)
    )]
    pub history_results: u16,
    /// A `site` label for every probe series of this instance (a service's own `site` label
    /// is kept), so the same targets probed from several places can be told apart.
    #[arg(long = "site", value_name = "NAME", value_parser = parse_site)]
    pub site: Option<String>,
    /// This instance's shard, 0-based: it probes only the services that rendezvous hashing of
    /// (host, service) gives to it among --shard.count instances sharing the config.
    #[arg(long = "shard.index", value_name = "I", requires = "shard_count")]
    pub shard_index: Option<u32>,
    /// How many instances share the config's services (see --shard.index).
    #[arg(long = "shard.count", value_name = "N", requires = "shard_index",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_count: Option<u32>,
    /// Most web connections open at once (lowered to half the open-file limit). At the cap,
    /// the connection idle longest is closed for a new one, or the new one when all are busy.
    #[arg(
        long = "web.max-connections",
        value_name = "N",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Time a client has to send a request's head before its connection is closed.
    #[arg(
        long = "web.read-header-timeout",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub read_header_timeout: std::time::Duration,
    /// Time a web connection may stay open with no request in progress and no byte moving.
    #[arg(
        long = "web.idle-timeout",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub idle_timeout: std::time::Duration,
}

/// Options of `echo-server`.
#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    /// Address to listen on (UDP, and TCP with --tcp): IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = crate::echo::settings::DEFAULT_LISTEN,
          value_parser = crate::echo::settings::parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Echo TCP connections on the same address too.
    #[arg(long)]
    pub tcp: bool,
    /// Answer only these networks (repeatable): `10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<crate::echo::settings::Net>,
    /// Datagrams per second per source address; 0 turns the limit off.
    #[arg(long = "rate-limit", value_name = "PPS", default_value_t = crate::echo::settings::DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,
    /// Largest datagram echoed, in bytes.
    #[arg(long = "max-size", value_name = "BYTES", default_value_t = crate::echo::settings::DEFAULT_MAX_SIZE)]
    pub max_size: usize,
    /// Serve the server's metrics on /metrics at this address (off when not given).
    // Same id as serve's global flag, so this one (without its `:9855` default) takes its place.
    #[arg(
        id = "listen_address",
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "",
        hide_default_value = true
    )]
    pub metrics_address: String,
}

impl EchoServerArgs {
    /// The server settings the flags describe.
    pub fn settings(&self) -> crate::echo::settings::Settings {
        crate::echo::settings::Settings {
            listen: self.listen,
            allow: self.allow.clone(),
            rate_limit: self.rate_limit,
            max_size: self.max_size,
            tcp: self.tcp,
        }
    }

    /// `--web.listen-address`, if given.
    pub fn metrics_address(&self) -> Option<&str> {
        Some(self.metrics_address.as_str()).filter(|a| !a.is_empty())
    }
}

/// Options of `stamp-reflector`.
#[derive(Debug, Clone, Args)]
pub struct StampReflectorArgs {
    /// UDP address to listen on: IP:PORT (ports below 1024 need root or CAP_NET_BIND_SERVICE).
    #[arg(long, value_name = "ADDR", default_value = crate::stamp::settings::DEFAULT_LISTEN,
          value_parser = crate::stamp::settings::parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Answer only these networks (repeatable): `10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<crate::stamp::settings::Net>,
    /// Test packets per second per source address; 0 turns the limit off.
    #[arg(long = "rate-limit", value_name = "PPS", default_value_t = crate::stamp::settings::DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,
    /// Largest test packet answered, in bytes (44 or more).
    #[arg(long = "max-size", value_name = "BYTES", default_value_t = crate::stamp::settings::DEFAULT_MAX_SIZE)]
    pub max_size: usize,
    /// Serve the reflector's metrics on /metrics at this address (off when not given).
    // Same id as serve's global flag, so this one (without its `:9855` default) takes its place.
    #[arg(
        id = "listen_address",
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "",
        hide_default_value = true
    )]
    pub metrics_address: String,
}

impl StampReflectorArgs {
    /// The reflector settings the flags describe.
    pub fn settings(&self) -> crate::stamp::settings::Settings {
        crate::stamp::settings::Settings {
            listen: self.listen,
            allow: self.allow.clone(),
            rate_limit: self.rate_limit,
            max_size: self.max_size,
        }
    }

    /// `--web.listen-address`, if given.
    pub fn metrics_address(&self) -> Option<&str> {
        Some(self.metrics_address.as_str()).filter(|a| !a.is_empty())
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::base::values::Duration::parse(s).map(|d| d.0)
}

/// Options of `echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// The echo server: HOST, HOST:PORT or \[IPv6\]:PORT (default port 7007).
    #[arg(value_name = "HOST[:PORT]")]
    pub target: String,
    /// Messages to send.
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Time between messages: `1s`, `200ms`, or seconds (`0.2`).
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Message size in bytes, header included (32 to 65507).
    #[arg(short = 's', long, value_name = "SIZE", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(32..=65_507))]
    pub size: u64,
    /// How long to wait for each reply; later replies are flagged late and count as lost.
    #[arg(short = 'W', long = "timeout", value_name = "TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,
    // Same id as serve's global `--config.file`, so `-c` is free for the count here.
    #[arg(id = "config_file", long = "config.file", hide = true)]
    #[doc(hidden)]
    pub unused_config_file: Option<PathBuf>,
}

/// Logging options.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Least severe level logged [default: info; `check` logs nothing unless this is given,
    /// since plugin runners mix stderr into the plugin's output].
    #[arg(long = "log.level", value_enum, global = true)]
    pub level: Option<LogLevel>,
    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value = "text", global = true)]
    pub format: LogFormat,
}

fn protocol_help() -> String {
    format!(
        "The protocol to probe ({})",
        crate::probe::Protocol::names()
    )
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

impl From<LogLevel> for logging::Level {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => logging::Level::Error,
            LogLevel::Warn => logging::Level::Warn,
            LogLevel::Info => logging::Level::Info,
            LogLevel::Debug => logging::Level::Debug,
            LogLevel::Trace => logging::Level::Trace,
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

impl LogArgs {
    /// The level asked for, else `info`.
    pub fn level(&self) -> logging::Level {
        self.level.map_or(logging::Level::Info, Into::into)
    }
}

impl From<LogFormat> for logging::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => logging::Format::Text,
            LogFormat::Json => logging::Format::Json,
        }
    }
}

/// A `--site` value: a non-empty label value without control characters.
fn parse_site(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a site needs a name, e.g. `--site fra1`".into());
    }
    if s.chars().any(char::is_control) || s.len() > 128 {
        return Err("a site name is at most 128 printable characters".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

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

    #[test]
    fn web_limits_have_defaults_and_refuse_zero_connections() {
        let a = Cli::try_parse_from(["netmon"]).unwrap();
        assert_eq!(a.serve.max_connections, 256);
        assert_eq!(a.serve.read_header_timeout, Duration::from_secs(10));
        assert_eq!(a.serve.idle_timeout, Duration::from_secs(60));
        let b = Cli::try_parse_from([
            "netmon",
            "serve",
            "--web.max-connections",
            "8",
            "--web.read-header-timeout",
            "2s",
            "--web.idle-timeout",
            "500ms",
        ])
        .unwrap();
        let Some(Command::Serve(s)) = b.command else {
            panic!("serve expected")
        };
        assert_eq!(s.max_connections, 8);
        assert_eq!(s.read_header_timeout, Duration::from_secs(2));
        assert_eq!(s.idle_timeout, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["netmon", "--web.max-connections", "0"]).is_err());
    }

    #[test]
    fn echo_client_takes_ping_flags() {
        let a = Cli::try_parse_from([
            "netmon", "echo", "-c", "3", "-i", "0.2", "-s", "100", "-W", "500ms", "host:7",
        ])
        .unwrap();
        let Some(Command::Echo(e)) = a.command else {
            panic!("echo expected")
        };
        assert_eq!(e.count, 3);
        assert_eq!(e.interval, std::time::Duration::from_millis(200));
        assert_eq!(e.size, 100);
        assert_eq!(e.timeout, std::time::Duration::from_millis(500));
        assert_eq!(e.target, "host:7");
        assert!(Cli::try_parse_from(["netmon", "echo", "-s", "10", "h"]).is_err());
    }

    #[test]
    fn stamp_reflector_flags() {
        let a = Cli::try_parse_from(["netmon", "stamp-reflector"]).unwrap();
        let Some(Command::StampReflector(s)) = a.command else {
            panic!("stamp-reflector expected")
        };
        assert_eq!(s.settings(), crate::stamp::settings::Settings::default());
        assert_eq!(s.metrics_address(), None);
        let a = Cli::try_parse_from([
            "netmon",
            "stamp-reflector",
            "--listen",
            "127.0.0.1:8620",
            "--allow",
            "10.0.0.0/8",
            "--rate-limit",
            "5",
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .unwrap();
        let Some(Command::StampReflector(s)) = a.command else {
            panic!("stamp-reflector expected")
        };
        assert_eq!(s.settings().listen.port(), 8620);
        assert_eq!(s.settings().rate_limit, 5);
        assert_eq!(s.metrics_address(), Some("127.0.0.1:0"));
        assert!(Cli::try_parse_from(["netmon", "stamp-reflector", "--listen", "x"]).is_err());
    }

    #[test]
    fn echo_server_metrics_are_off_unless_asked_for() {
        let a = Cli::try_parse_from(["netmon", "echo-server"]).unwrap();
        let Some(Command::EchoServer(s)) = a.command else {
            panic!("echo-server expected")
        };
        assert_eq!(s.metrics_address(), None);
        assert_eq!(s.settings(), crate::echo::settings::Settings::default());
        let a = Cli::try_parse_from([
            "netmon",
            "echo-server",
            "--listen",
            "127.0.0.1:0",
            "--tcp",
            "--allow",
            "127.0.0.1/32",
            "--allow",
            "::1",
            "--rate-limit",
            "5",
            "--max-size",
            "100",
            "--web.listen-address",
            "127.0.0.1:9999",
        ])
        .unwrap();
        let Some(Command::EchoServer(s)) = a.command else {
            panic!("echo-server expected")
        };
        assert_eq!(s.metrics_address(), Some("127.0.0.1:9999"));
        let set = s.settings();
        assert!(set.tcp);
        assert_eq!(set.allow.len(), 2);
        assert_eq!((set.rate_limit, set.max_size), (5, 100));
        assert!(Cli::try_parse_from(["netmon", "echo-server", "--allow", "nope"]).is_err());
    }
}
