//! The `dreamstream` command line. `serve` is the default subcommand; the
//! other verbs live beside it (`admin`, `cluster status`).

pub mod admin;
mod cluster_status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::Application;
use crate::settings::Settings;

#[derive(Parser)]
#[command(
    name = "dreamstream",
    version,
    about = "DreamStream control node: live streams restyled by neural networks"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the site, the WebSockets and the control plane (the default).
    Serve(ServeArgs),
    /// Benchmarks against a running server.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Stream a video file, a folder of images or a V4L2 camera to a stream
    /// by its stream key (WHIP when the server takes it, else the WebSocket).
    Push(dreamstream_push::PushArgs),
    /// Save a stream's restyled output as JPEGs (a folder) or an MP4.
    Pull(dreamstream_push::PullArgs),
    /// The GPU cluster of a running control node.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Accounts and credits (works on the database directly).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
        /// Directory of the SQLite file (as for `serve`).
        #[arg(long, env = "DREAMSTREAM_DATA_DIR", value_name = "DIR", global = true)]
        data_dir: Option<PathBuf>,
        /// A configuration file over the built-in defaults.
        #[arg(long, env = "DREAMSTREAM_CONFIG", value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes and workers, as the running control node sees them.
    Status {
        /// The control node's HTTP address (default: the configured `listen`).
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        json: bool,
        /// The server's metrics token (`/api/cluster` is for administrators,
        /// the token or `[ops] allow`).
        #[arg(long, env = "DREAMSTREAM_METRICS_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// HTTP address to listen on.
    #[arg(long, env = "DREAMSTREAM_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory for the SQLite file and any state.
    #[arg(long, env = "DREAMSTREAM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// In-process CPU workers (0 = GPU nodes only).
    #[arg(long, env = "DREAMSTREAM_LOCAL_WORKERS", value_name = "N")]
    pub local_workers: Option<usize>,
    /// Address of the cluster node server GPU nodes connect to.
    #[arg(long, env = "DREAMSTREAM_CLUSTER_LISTEN", value_name = "ADDR")]
    pub cluster_listen: Option<std::net::SocketAddr>,
    /// A configuration file (cluster.toml format) over the built-in defaults.
    #[arg(long, env = "DREAMSTREAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ServeArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::load(self.config.as_deref())?;
        if let Some(l) = self.listen {
            s.listen = l;
        }
        if let Some(d) = &self.data_dir {
            s.data_dir = d.clone();
        }
        if let Some(n) = self.local_workers {
            s.local_workers = n;
        }
        if let Some(c) = self.cluster_listen {
            s.cluster_listen = Some(c);
        }
        Ok(s)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Bench(cmd)) => crate::bench::run(cmd),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Push(args)) => dreamstream_push::push(args),
        Some(Command::Pull(args)) => dreamstream_push::pull(args),
        Some(Command::Cluster(ClusterCommand::Status { url, json, token })) => {
            cluster_status::run(url, json, token, &cli.serve)
        }
        Some(Command::Admin {
            command,
            data_dir,
            config,
        }) => ServeArgs {
            data_dir,
            config,
            ..Default::default()
        }
        .settings()
        .and_then(|s| admin::run(command, s)),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    })
}
