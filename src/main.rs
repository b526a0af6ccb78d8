//! The `netmon` binary: parse the command line, start logging, run one command, and turn its
//! error into a message and an exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use netmon::cli::{Cli, Command, ConfigCommand};
use netmon::config::{self, LoadError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    netmon::install_crypto_provider();
    match run(cli) {
        Ok(code) => code,
        // `netmon man | head`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netmon: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, each cause once: our errors already name their
/// source in their own text, and printing the chain again would repeat it.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "netmon", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Config(ConfigCommand::Check { file })) => {
            // Without FILE, what `serve` would load: --config.file, ./netmon.yml, or the
            // built-in default.
            let source = config::loader::Source::choose(file.or(cli.serve.config_file));
            // The same steps as `serve` before it starts anything: read, validate, and build
            // every service's probe, so a file accepted here starts.
            let loaded = source.load().and_then(|c| {
                let errors = netmon::runner::validate(c.services());
                if errors.is_empty() {
                    Ok(c)
                } else {
                    Err(LoadError::Invalid(config::error::ConfigErrors::capped(
                        errors,
                    )))
                }
            });
            Ok(match loaded {
                Ok(c) => {
                    let n = c.services().count();
                    let discovery = match c.discovery.len() {
                        0 => String::new(),
                        d => format!(", {d} discovery source(s)"),
                    };
                    println!(
                        "{source}: valid, {} target(s), {} service(s){discovery}",
                        c.targets.len(),
                        n
                    );
                    ExitCode::SUCCESS
                }
                Err(LoadError::Invalid(errors)) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("netmon: {e}");
                    ExitCode::FAILURE
                }
            })
        }
        Some(Command::Check(args)) => {
            if let Some(level) = cli.log.level {
                netmon::logging::init(level.into(), cli.log.format.into(), std::io::stderr);
            }
            Ok(netmon::cmd::check::run(&args))
        }
        Some(Command::Console(args)) => netmon::console::run(cli.log, args),
        Some(Command::Man) => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::EchoServer(args)) => echo_server(cli.log, args),
        Some(Command::Echo(args)) => echo(args),
        Some(Command::StampReflector(args)) => stamp_reflector(cli.log, args),
        Some(Command::Serve(args)) => serve(cli.log, args),
        None => serve(cli.log, cli.serve),
    }
}

fn serve(log: netmon::cli::LogArgs, args: netmon::cli::ServeArgs) -> anyhow::Result<ExitCode> {
    netmon::logging::init(log.level(), log.format.into(), std::io::stdout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(netmon::cmd::serve::run(args))?;
    Ok(ExitCode::SUCCESS)
}

/// A command line clap refused. `netmon check` is a Nagios plugin, whose callers read bad
/// arguments as UNKNOWN (3) on one line of stdout; every other command exits as clap does.
fn usage_error(e: clap::Error) -> ExitCode {
    let is_check = Cli::command()
        .ignore_errors(true)
        .try_get_matches()
        .is_ok_and(|m| m.subcommand_name() == Some("check"));
    if !is_check || !e.use_stderr() {
        e.exit();
    }
    let text = e.to_string();
    let reason = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    println!("NETMON UNKNOWN - {reason}");
    ExitCode::from(3)
}

fn echo_server(
    log: netmon::cli::LogArgs,
    args: netmon::cli::EchoServerArgs,
) -> anyhow::Result<ExitCode> {
    netmon::logging::init(log.level(), log.format.into(), std::io::stdout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(netmon::cmd::echo_server::run(
        args.settings(),
        args.metrics_address(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn stamp_reflector(
    log: netmon::cli::LogArgs,
    args: netmon::cli::StampReflectorArgs,
) -> anyhow::Result<ExitCode> {
    netmon::logging::init(log.level(), log.format.into(), std::io::stdout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(netmon::cmd::stamp_reflector::run(
        args.settings(),
        args.metrics_address(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn echo(args: netmon::cli::EchoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let intact = rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_ctrl_c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_ctrl_c.cancel();
            }
        });
        let mut out = std::io::stdout();
        netmon::cmd::echo::run(&args, &mut out, &cancel).await
    })?;
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
