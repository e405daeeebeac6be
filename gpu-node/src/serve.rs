//! `gpu-node serve`: the node's workers, joined to a control node's cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dreamstream_actors::WorkerId;
use dreamstream_actors::worker::WorkerInfo;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use rustls::pki_types::ServerName;
use serde::Deserialize;

use crate::cluster::{NodeOptions, TlsFiles, run_node};
use crate::neural_style::{NeuralStyle, NeuralStyleConfig, Weights};
use crate::processor::Processor;

/// The repository's cluster.toml (its `[cluster]` and `[gpu_node]` sections).
const DEFAULT_CONFIG: &str = include_str!("../../cluster.toml");

pub use dreamstream_actors::cookie::COOKIE_ENV;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// A configuration file (cluster.toml format) over the built-in defaults.
    #[arg(long, env = "DREAMSTREAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The control node's cluster address.
    #[arg(long, value_name = "HOST:PORT")]
    pub control: Option<String>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Workers on this node (one per device).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Threads per worker for one frame (0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Jobs one worker runs at once.
    #[arg(long)]
    pub capacity: Option<u32>,
    /// "neural-style" or "passthrough".
    #[arg(long)]
    pub processor: Option<String>,
    /// Directory with the .safetensors weights (default: built in).
    #[arg(long, value_name = "DIR")]
    pub weights: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct FileConfig {
    cluster: LinkConfig,
    gpu_node: NodeSection,
    /// `[[gpu.models]]`: the diffusion models this node serves.
    #[serde(default)]
    gpu: GpuSection,
}

#[derive(Debug, Default, Deserialize)]
struct GpuSection {
    #[serde(default)]
    models: Vec<crate::diffusion::ModelSpec>,
}

#[derive(Debug, Deserialize)]
struct LinkConfig {
    max_frame_bytes: u64,
    #[serde(default)]
    require_tls: bool,
    tls: Option<TlsFiles>,
}

#[derive(Debug, Deserialize)]
struct NodeSection {
    control: String,
    name: Option<String>,
    workers: usize,
    processor: String,
    threads: usize,
    capacity: u32,
    tls_server_name: Option<String>,
    /// Similar-frame filter: skip frames at least this similar to the last processed one (off when absent).
    #[serde(default)]
    similar_frame_threshold: Option<f32>,
    /// Consecutive frames the filter may skip.
    #[serde(default = "default_max_skip")]
    similar_frame_max_skip: u32,
}

fn default_max_skip() -> u32 {
    10
}

fn load_config(args: &ServeArgs) -> anyhow::Result<FileConfig> {
    let mut fig = Figment::from(Toml::string(DEFAULT_CONFIG));
    if let Some(path) = &args.config {
        if !path.exists() {
            bail!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed("DREAMSTREAM_").split("__"));
    let mut c: FileConfig = fig.extract().context("invalid configuration")?;
    let n = &mut c.gpu_node;
    if let Some(v) = &args.control {
        n.control = v.clone();
    }
    if let Some(v) = &args.name {
        n.name = Some(v.clone());
    }
    if let Some(v) = args.workers {
        n.workers = v;
    }
    if let Some(v) = args.threads {
        n.threads = v;
    }
    if let Some(v) = args.capacity {
        n.capacity = v;
    }
    if let Some(v) = &args.processor {
        n.processor = v.clone();
    }
    Ok(c)
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gpu-node".into())
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let node = &config.gpu_node;
    let name = node.name.clone().unwrap_or_else(host_name);
    let cookie = dreamstream_actors::cookie::ClusterCookie::required_from_env()?;
    if node.workers == 0 || node.capacity == 0 {
        bail!("a GPU node needs at least one worker with a capacity of at least 1");
    }
    let tls = match &config.cluster.tls {
        Some(files) => {
            let host = node
                .tls_server_name
                .clone()
                .or_else(|| {
                    node.control
                        .rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                })
                .unwrap_or_else(|| node.control.clone());
            let server_name = ServerName::try_from(host.clone())
                .with_context(|| format!("{host} is not a valid TLS server name"))?;
            Some((files.connector()?, server_name))
        }
        None if config.cluster.require_tls => {
            bail!("cluster.require_tls is set but cluster.tls (ca, cert, key) is not configured")
        }
        None => None,
    };
    let mut workers: Vec<(WorkerInfo, Arc<dyn Processor>)> = Vec::new();
    // Diffusion weights are loaded once and shared by the node's workers (they are large).
    let diffusion = if node.processor == "diffusion" {
        Some(load_diffusion(&config.gpu.models)?)
    } else {
        None
    };
    for i in 0..node.workers {
        let processor: Arc<dyn Processor> = match node.processor.as_str() {
            "diffusion" => match &diffusion {
                Some(p) => p.clone(),
                None => bail!("the diffusion processor was not loaded"),
            },
            "passthrough" => Arc::new(crate::passthrough::Passthrough),
            "neural-style" => {
                let p = NeuralStyle::load(&NeuralStyleConfig {
                    weights: args.weights.clone().map_or(Weights::Embedded, Weights::Dir),
                    threads: node.threads,
                })?;
                p.warm_up()?;
                Arc::new(p)
            }
            other => {
                bail!("unknown processor {other:?}: use neural-style, diffusion or passthrough")
            }
        };
        // Always wrapped: a stream may turn the filter on (or off) for itself;
        // the node's setting is the default of streams that do not.
        let default = match node.similar_frame_threshold {
            None => None,
            Some(t) if t > 0.0 && t <= 1.0 => Some((t, node.similar_frame_max_skip)),
            Some(t) => bail!("similar_frame_threshold must be in (0, 1], got {t}"),
        };
        let processor: Arc<dyn Processor> = Arc::new(
            crate::similarity::SimilarityFilter::per_stream(processor, default),
        );
        let info = WorkerInfo {
            id: WorkerId(format!("{name}/worker-{i}")),
            node: name.clone(),
            capacity: node.capacity,
            capabilities: processor.capabilities(),
        };
        workers.push((info, processor));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let options = NodeOptions {
        control: node.control.clone(),
        name: name.clone(),
        cookie,
        tls,
        max_link_frame_bytes: config.cluster.max_frame_bytes,
        workers,
        drain_timeout: Duration::from_secs(30),
    };
    tracing::info!(%name, control = %options.control, workers = node.workers, "gpu node starting");
    runtime.block_on(run_node(options, shutdown_signal()))
}

/// Loads `[[gpu.models]]` (CUDA when built with `--features cuda` and a GPU is there, else CPU).
fn load_diffusion(models: &[crate::diffusion::ModelSpec]) -> anyhow::Result<Arc<dyn Processor>> {
    if models.is_empty() {
        bail!("processor \"diffusion\" needs at least one [[gpu.models]] entry (id, family, path)");
    }
    let device = if cfg!(feature = "cuda") {
        candle_core::Device::cuda_if_available(0)?
    } else {
        candle_core::Device::Cpu
    };
    let p = crate::diffusion::DiffusionProcessor::load(models, &device)
        .context("cannot load the diffusion models")?;
    p.warm_up()?;
    tracing::info!(models = ?p.model_ids(), device = ?device, "diffusion models loaded");
    Ok(Arc::new(p))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
