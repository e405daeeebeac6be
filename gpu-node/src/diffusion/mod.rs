//! Text-prompted img2img with Stable-Diffusion-family models (SD 1.5, SD-Turbo,
//! SDXL-Turbo, SDXL-Lightning), built on candle and candle-transformers'
//! `stable_diffusion` building blocks.
//!
//! candle-transformers has the resnet, timestep and VAE blocks but no img2img
//! pipeline, no non-ancestral Euler, no SDXL added conditioning, private CLIP
//! configs, a tanh-approximated GELU in its transformer blocks and noise drawn
//! internally. Those parts are written here so that, given the same noise, the
//! output matches diffusers' (proven against `../shared/testdata/diffusion-reference`):
//!
//! - [`config`]: diffusers `config.json` files read into our configs; families.
//! - [`clip`]: the CLIP text encoder (exact or quick GELU, penultimate states, pooled + projection).
//! - [`unet`]: UNet2DConditionModel with exact-GELU transformer blocks and SDXL's `text_time` conditioning.
//! - [`vae`]: the autoencoder, returning the posterior's mean and std.
//! - [`scheduler`]: Euler, Euler-ancestral and DDIM with diffusers' timesteps and caller-supplied noise.
//! - [`pipeline`]: loading a model folder and the img2img driver.
//! - [`reference`](mod@reference): runs a reference `cases.json` (the `diffusion-ref` verb and the parity tests).
//! - [`pull`]: `gpu-node models pull` (hf-hub).
//! - [`processor`]: the live `diffusion` processor behind the [`crate::Processor`] trait.

pub mod clip;
pub mod config;
pub mod pipeline;
pub mod processor;
pub mod pull;
pub mod reference;
pub mod scheduler;
pub mod tokenizer;
pub mod unet;
pub mod vae;

use std::path::PathBuf;

pub use config::Family;
pub use pipeline::{DiffusionModel, Img2Img, Img2ImgNoise, Img2ImgOutput};
pub use processor::{BlendOptions, DiffusionProcessor, DiffusionRequest, ModelSpec};

/// CLIP's fixed context length: longer prompts are truncated.
pub const MAX_TOKENS: usize = 77;

/// Everything that can go wrong in loading or running a diffusion model.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("unknown model id {id:?} (configured: {known})")]
    UnknownModel { id: String, known: String },
    #[error("model {id:?} is still loading")]
    ModelLoading { id: String },
    #[error("missing model files in {dir}: {}", files.join(", "))]
    MissingFiles { dir: PathBuf, files: Vec<String> },
    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("family {family} does not fit the model in {dir}: {reason}")]
    FamilyMismatch {
        family: String,
        dir: PathBuf,
        reason: String,
    },
    #[error("unknown family {0:?} (known: sd15, sd-turbo, sdxl-turbo, sdxl-lightning)")]
    UnknownFamily(String),
    #[error("steps {steps} out of range {min}..={max}")]
    StepsOutOfRange {
        steps: usize,
        min: usize,
        max: usize,
    },
    #[error("width and height must be multiples of 8 (got {width}x{height})")]
    SizeNotMultipleOf8 { width: usize, height: usize },
    #[error("width and height must be between {min} and {max} (got {width}x{height})")]
    SizeOutOfRange {
        width: usize,
        height: usize,
        min: usize,
        max: usize,
    },
    #[error("guidance must not be negative (got {0})")]
    NegativeGuidance(f64),
    #[error("strength must be in (0, 1] (got {0})")]
    StrengthOutOfRange(f64),
    #[error("strength {strength} with {steps} steps leaves no denoising step")]
    NoSteps { strength: f64, steps: usize },
    #[error("t_index_list {list:?} is not increasing within 0..{steps}")]
    BadTIndexList { list: Vec<usize>, steps: usize },
    #[error("{what} weights sum to 0")]
    WeightsSumToZero { what: &'static str },
    #[error("no prompt given")]
    EmptyPrompt,
    #[error("noise {name}: expected shape {expected:?}, got {got:?}")]
    NoiseShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("models pull: {0}")]
    Pull(String),
    #[error("reference: {0}")]
    Reference(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = DiffusionError> = std::result::Result<T, E>;
