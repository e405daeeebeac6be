//! `dreamstream bench ...`: measurements against a running server.

pub mod live;
pub mod webrtc;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Real WebSocket broadcasters and viewers against a running server.
    Live(live::LiveArgs),
    /// A WHIP publisher and WHEP viewers (str0m, in-process) against a
    /// running server, compared with the WebSocket/MJPEG path.
    Webrtc(webrtc::WebRtcArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Live(args) => live::run(args),
        BenchCommand::Webrtc(args) => webrtc::run(args),
    }
}
