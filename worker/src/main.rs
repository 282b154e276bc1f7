use std::io::Write as _;

use callgate_worker::cli::{Cli, Command, run};
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    match &command {
        Command::Run(config) => callgate_ops::init_logs(&config.log),
        _ => tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr).init(),
    }
    let lines = run(command).await?;
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
