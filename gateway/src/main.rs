use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use callgate_gateway::config::{Cli, Command, SpoolCommand};
use callgate_gateway::{Gateway, spool_cli, verify_cli};
use callgate_ops::{init_command_logs, init_logs, shutdown_signal};
use clap::Parser as _;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sign(message) => {
            writeln!(std::io::stdout().lock(), "{}", verify_cli::sign(&message)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let verdict = verify_cli::verify(&args)?;
            let mut out = std::io::stdout().lock();
            Ok(match verdict {
                Ok(()) => {
                    writeln!(out, "valid")?;
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    writeln!(out, "invalid: {reason}")?;
                    ExitCode::from(1)
                }
            })
        }
        Command::Spool(SpoolCommand::Drain(args)) => {
            init_command_logs(&args.log);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let (stop, stopped) = callgate_ops::shutdown_channel();
                let signal = tokio::spawn(async move {
                    shutdown_signal().await;
                    stop.trigger();
                });
                let drained = spool_cli::drain(&args, stopped).await.context("draining the spool")?;
                signal.abort();
                writeln!(std::io::stdout().lock(), "{drained}")?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Healthcheck(args) => Ok(healthcheck_exit(&args)),
        Command::Serve(config) => {
            init_logs(&config.log);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let gateway = Gateway::start(*config).await.context("starting the gateway")?;
                shutdown_signal().await;
                tracing::info!("shutdown requested");
                gateway.shutdown().await;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

fn healthcheck_exit(args: &callgate_ops::HealthcheckArgs) -> ExitCode {
    match callgate_ops::healthcheck(args) {
        Ok(200..=299) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
