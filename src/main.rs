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
        Err(e) => {
            eprintln!("netmon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "netmon", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Config(ConfigCommand::Check { file })) => {
            // The same steps as `serve` before it starts anything: read, validate, and build
            // every service's probe, so a file accepted here starts.
            let loaded = config::load_file(&file).and_then(|c| {
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
                    println!(
                        "{}: valid, {} target(s), {} service(s)",
                        file.display(),
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
            netmon::logging::init(cli.log.level.into(), cli.log.format.into(), std::io::stderr);
            Ok(netmon::cmd::check::run(&args))
        }
        Some(Command::Console(args)) => netmon::console::run(cli.log, args),
        Some(Command::Man) => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::EchoServer(args)) => echo_server(cli.log, args),
        Some(Command::Echo(args)) => echo(args),
        Some(Command::Serve(args)) => serve(cli.log, args),
        None => serve(cli.log, cli.serve),
    }
}

fn serve(log: netmon::cli::LogArgs, args: netmon::cli::ServeArgs) -> anyhow::Result<ExitCode> {
    netmon::logging::init(log.level.into(), log.format.into(), std::io::stdout);
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
    netmon::logging::init(log.level.into(), log.format.into(), std::io::stdout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(netmon::cmd::echo_server::run(
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
