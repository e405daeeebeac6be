//! `dreamstream bench ...`: measurements against a running server.

pub mod live;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Real WebSocket broadcasters and viewers against a running server.
    Live(live::LiveArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Live(args) => live::run(args),
    }
}
