//! `dreamstream-push`: the push and pull clients alone (the binary for a
//! Raspberry Pi); `dreamstream push` and `dreamstream pull` are the same.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dreamstream-push",
    version,
    about = "Push video to a DreamStream stream, pull its restyled output"
)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Stream a video file, a folder of images or a camera to a stream.
    Push(dreamstream_push::PushArgs),
    /// Save a stream's restyled output as JPEGs or an MP4.
    Pull(dreamstream_push::PullArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Verb::Push(args) => dreamstream_push::push(args),
        Verb::Pull(args) => dreamstream_push::pull(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
