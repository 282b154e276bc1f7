use std::io::Write as _;

use callgate_worker::cli::{Cli, run};
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr).init();
    let lines = run(Cli::parse().command).await?;
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
