//! Reads a diffusers model folder's `config.json` files into the configs our
//! networks take, and names the model families we serve.
//!
//! candle-transformers has no serde on its configs (and its CLIP config cannot
//! be built outside the crate), so the mapping from diffusers' field names is
//! written out here, with an error naming the file for anything we cannot run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use super::{DiffusionError, Result};

/// The model families the processor knows. The architecture decides the
/// network code; the family also decides defaults (scheduler, steps, guidance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Family {
    /// SD 1.5: DDIM, 20–25 steps, guidance with a negative prompt.
    Sd15,
    /// SD-Turbo (SD 2.1 architecture): Euler trailing, 1–4 steps, no guidance.
    SdTurbo,
    /// SDXL-Turbo: Euler-ancestral trailing, 1–4 steps, no guidance.
    SdxlTurbo,
    /// SDXL-Lightning: Euler trailing, 1/2/4/8 steps (1 step: "sample" prediction).
    SdxlLightning,
}

/// The network layout behind a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Sd1,
    Sd2,
    Sdxl,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Sd15,
        Family::SdTurbo,
        Family::SdxlTurbo,
        Family::SdxlLightning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Sd15 => "sd15",
            Family::SdTurbo => "sd-turbo",
            Family::SdxlTurbo => "sdxl-turbo",
            Family::SdxlLightning => "sdxl-lightning",
        }
    }

    pub fn arch(self) -> Arch {
        match self {
            Family::Sd15 => Arch::Sd1,
            Family::SdTurbo => Arch::Sd2,
            Family::SdxlTurbo | Family::SdxlLightning => Arch::Sdxl,
        }
    }

    /// Allowed step counts (SDXL-Lightning ships distilled UNets for 1/2/4/8).
    pub fn steps_range(self) -> (usize, usize) {
        match self {
            Family::Sd15 => (1, 50),
            Family::SdTurbo | Family::SdxlTurbo => (1, 4),
            Family::SdxlLightning => (1, 8),
        }
    }

    pub fn default_steps(self) -> usize {
        match self {
            Family::Sd15 => 25,
            Family::SdTurbo | Family::SdxlTurbo => 2,
            Family::SdxlLightning => 4,
        }
    }

    pub fn default_guidance(self) -> f64 {
        match self {
            Family::Sd15 => 7.5,
            _ => 0.0,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self> {
        // The reference set names families by architecture (sd21, sdxl): accept those too.
        Ok(match s {
            "sd15" | "sd1.5" => Family::Sd15,
            "sd-turbo" | "sd21" | "sd2.1" => Family::SdTurbo,
            "sdxl-turbo" | "sdxl" => Family::SdxlTurbo,
            "sdxl-lightning" => Family::SdxlLightning,
            other => return Err(DiffusionError::UnknownFamily(other.to_string())),
        })
    }
}

impl TryFrom<String> for Family {
    type Error = DiffusionError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Family> for String {
    fn from(f: Family) -> String {
        f.as_str().to_string()
    }
}

/// CLIP text encoder configuration (transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub activation: ClipActivation,
    pub eos_token_id: u32,
    /// `Some` for `CLIPTextModelWithProjection` (SDXL's second encoder).
    pub projection_dim: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: x * sigmoid(1.702 x) (OpenAI CLIP, SD 1.5, SDXL's first encoder).
    QuickGelu,
    /// `gelu`: the exact erf GELU (OpenCLIP: SD 2.x, SDXL's second encoder).
    GeluErf,
}

/// One down or up block of the UNet.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetBlock {
    pub out_channels: usize,
    pub cross_attention: bool,
    /// Attention heads (diffusers' `attention_head_dim` is, confusingly, the head count).
    pub heads: usize,
    pub transformer_layers: usize,
}

/// UNet2DConditionModel configuration (the subset diffusers' SD/SDXL models use).
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub blocks: Vec<UNetBlock>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    /// SDXL's `addition_embed_type = "text_time"`: (time-id embedding width, add_embedding input width).
    pub text_time: Option<(usize, usize)>,
}

/// AutoencoderKL configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub scaling_factor: f64,
    pub mid_block_add_attention: bool,
}

/// What a scheduler needs from `scheduler_config.json` (or a reference case).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub kind: SchedulerKind,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// DDIM: the "previous" alpha of the last step is 1 (true) or `alphas_cumprod[0]`.
    pub set_alpha_to_one: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Euler,
    EulerAncestral,
    Ddim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// Reads a JSON file into a `Value`.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| DiffusionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))
}

fn bad(path: &Path, reason: impl Into<String>) -> DiffusionError {
    DiffusionError::BadConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Typed access to a config object, every error naming the file and field.
struct Fields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl<'a> Fields<'a> {
    fn new(path: &'a Path, v: &'a Value) -> Result<Self> {
        if !v.is_object() {
            return Err(bad(path, "not a JSON object"));
        }
        Ok(Self { path, v })
    }
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.v.get(k).filter(|v| !v.is_null())
    }
    fn usize(&self, k: &str) -> Result<usize> {
        self.get(k)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| bad(self.path, format!("{k}: expected a non-negative integer")))
    }
    fn usize_or(&self, k: &str, d: usize) -> Result<usize> {
        if self.get(k).is_none() {
            Ok(d)
        } else {
            self.usize(k)
        }
    }
    fn f64_or(&self, k: &str, d: f64) -> Result<f64> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(self.path, format!("{k}: expected a number"))),
        }
    }
    fn bool_or(&self, k: &str, d: bool) -> Result<bool> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(self.path, format!("{k}: expected true or false"))),
        }
    }
    fn str_or(&self, k: &str, d: &'a str) -> Result<&'a str> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v
                .as_str()
                .ok_or_else(|| bad(self.path, format!("{k}: expected a string"))),
        }
    }
    /// An integer or a list of integers, one per block.
    fn per_block(&self, k: &str, n: usize, d: usize) -> Result<Vec<usize>> {
        match self.get(k) {
            None => Ok(vec![d; n]),
            Some(Value::Number(x)) => {
                let x = x
                    .as_u64()
                    .ok_or_else(|| bad(self.path, format!("{k}: expected an integer")))?;
                Ok(vec![x as usize; n])
            }
            Some(Value::Array(a)) => {
                if a.len() != n {
                    return Err(bad(
                        self.path,
                        format!("{k}: expected {n} entries, got {}", a.len()),
                    ));
                }
                a.iter()
                    .map(|x| {
                        x.as_u64()
                            .map(|x| x as usize)
                            .ok_or_else(|| bad(self.path, format!("{k}: expected integers")))
                    })
                    .collect()
            }
            Some(_) => Err(bad(
                self.path,
                format!("{k}: expected an integer or a list"),
            )),
        }
    }
    fn strings(&self, k: &str) -> Result<Vec<&'a str>> {
        self.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(self.path, format!("{k}: expected a list")))?
            .iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| bad(self.path, format!("{k}: expected strings")))
            })
            .collect()
    }
}

impl ClipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let f = Fields::new(path, &v)?;
        let activation = match f.str_or("hidden_act", "quick_gelu")? {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::GeluErf,
            other => return Err(bad(path, format!("hidden_act {other:?} is not supported"))),
        };
        let with_projection = f
            .get("architectures")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str() == Some("CLIPTextModelWithProjection"))
            });
        let hidden_size = f.usize("hidden_size")?;
        let heads = f.usize("num_attention_heads")?;
        if heads == 0 || hidden_size % heads != 0 {
            return Err(bad(
                path,
                "hidden_size is not a multiple of num_attention_heads",
            ));
        }
        Ok(Self {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads: heads,
            max_position_embeddings: f.usize_or("max_position_embeddings", 77)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-5)?,
            activation,
            eos_token_id: f.usize_or("eos_token_id", 49407)? as u32,
            projection_dim: if with_projection {
                Some(f.usize("projection_dim")?)
            } else {
                None
            },
        })
    }
}

/// `block_out_channels`, a list of integers (UNet and VAE configs alike).
fn block_out_channels(path: &Path, f: &Fields) -> Result<Vec<usize>> {
    f.get("block_out_channels")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(path, "block_out_channels: expected a list"))?
        .iter()
        .map(|x| x.as_u64().map(|x| x as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad(path, "block_out_channels: expected integers"))
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let f = Fields::new(path, &v)?;
        let channels = block_out_channels(path, &f)?;
        let n = channels.len();
        if n == 0 {
            return Err(bad(path, "block_out_channels is empty"));
        }
        let down = f.strings("down_block_types")?;
        let up = f.strings("up_block_types")?;
        if down.len() != n || up.len() != n {
            return Err(bad(
                path,
                "down/up_block_types must have one entry per block",
            ));
        }
        // Up blocks mirror down blocks; we build both from the down list.
        for (i, d) in down.iter().enumerate() {
            let want_up = match *d {
                "CrossAttnDownBlock2D" => "CrossAttnUpBlock2D",
                "DownBlock2D" => "UpBlock2D",
                other => {
                    return Err(bad(
                        path,
                        format!("down block type {other} is not supported"),
                    ));
                }
            };
            if up[n - 1 - i] != want_up {
                return Err(bad(path, "up_block_types do not mirror down_block_types"));
            }
        }
        let mid = f.str_or("mid_block_type", "UNetMidBlock2DCrossAttn")?;
        if mid != "UNetMidBlock2DCrossAttn" {
            return Err(bad(path, format!("mid_block_type {mid} is not supported")));
        }
        // diffusers: num_attention_heads defaults to attention_head_dim (a historical naming slip).
        let heads_key = if f.get("num_attention_heads").is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let heads = f.per_block(heads_key, n, 8)?;
        let layers = f.per_block("transformer_layers_per_block", n, 1)?;
        if f.get("reverse_transformer_layers_per_block").is_some() {
            return Err(bad(
                path,
                "reverse_transformer_layers_per_block is not supported",
            ));
        }
        for key in [
            "class_embed_type",
            "encoder_hid_dim_type",
            "time_cond_proj_dim",
        ] {
            if f.get(key).is_some() {
                return Err(bad(path, format!("{key} is not supported")));
            }
        }
        if f.str_or("resnet_time_scale_shift", "default")? != "default" {
            return Err(bad(
                path,
                "resnet_time_scale_shift other than default is not supported",
            ));
        }
        let text_time = match f.get("addition_embed_type").and_then(Value::as_str) {
            None => None,
            Some("text_time") => Some((
                f.usize("addition_time_embed_dim")?,
                f.usize("projection_class_embeddings_input_dim")?,
            )),
            Some(other) => {
                return Err(bad(
                    path,
                    format!("addition_embed_type {other} is not supported"),
                ));
            }
        };
        let blocks = (0..n)
            .map(|i| UNetBlock {
                out_channels: channels[i],
                cross_attention: down[i] == "CrossAttnDownBlock2D",
                heads: heads[i],
                transformer_layers: layers[i],
            })
            .collect::<Vec<_>>();
        for b in &blocks {
            if b.heads == 0 || b.out_channels % b.heads != 0 {
                return Err(bad(
                    path,
                    "block channels are not a multiple of the head count",
                ));
            }
        }
        let cad = match f.get("cross_attention_dim") {
            Some(Value::Number(x)) => x.as_u64().unwrap_or(0) as usize,
            _ => return Err(bad(path, "cross_attention_dim: expected one integer")),
        };
        Ok(Self {
            in_channels: f.usize_or("in_channels", 4)?,
            out_channels: f.usize_or("out_channels", 4)?,
            blocks,
            layers_per_block: f.usize_or("layers_per_block", 2)?,
            norm_num_groups: f.usize_or("norm_num_groups", 32)?,
            norm_eps: f.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim: cad,
            use_linear_projection: f.bool_or("use_linear_projection", false)?,
            flip_sin_to_cos: f.bool_or("flip_sin_to_cos", true)?,
            freq_shift: f.f64_or("freq_shift", 0.0)?,
            downsample_padding: f.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: f.f64_or("mid_block_scale_factor", 1.0)?,
            text_time,
        })
    }
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let f = Fields::new(path, &v)?;
        let block_out_channels = block_out_channels(path, &f)?;
        if block_out_channels.is_empty() {
            return Err(bad(path, "block_out_channels is empty"));
        }
        if f.get("latents_mean").is_some() || f.get("shift_factor").is_some() {
            return Err(bad(path, "latents_mean / shift_factor are not supported"));
        }
        Ok(Self {
            in_channels: f.usize_or("in_channels", 3)?,
            out_channels: f.usize_or("out_channels", 3)?,
            block_out_channels,
            layers_per_block: f.usize_or("layers_per_block", 1)?,
            latent_channels: f.usize_or("latent_channels", 4)?,
            norm_num_groups: f.usize_or("norm_num_groups", 32)?,
            use_quant_conv: f.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: f.bool_or("use_post_quant_conv", true)?,
            // Not defaulted: SDXL's 0.13025 differs from SD's 0.18215, and a wrong one is silent.
            scaling_factor: f
                .get("scaling_factor")
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(path, "scaling_factor: expected a number"))?,
            mid_block_add_attention: f.bool_or("mid_block_add_attention", true)?,
        })
    }
}

impl SchedulerConfig {
    /// From a diffusers scheduler config object; `class` is its `_class_name`
    /// (or the `cls` of a reference case).
    pub fn from_value(path: &Path, class: &str, v: &Value) -> Result<Self> {
        let f = Fields::new(path, v)?;
        let kind = match class {
            "EulerDiscreteScheduler" => SchedulerKind::Euler,
            "EulerAncestralDiscreteScheduler" => SchedulerKind::EulerAncestral,
            "DDIMScheduler" => SchedulerKind::Ddim,
            other => return Err(bad(path, format!("scheduler {other} is not supported"))),
        };
        let beta_schedule = match f.str_or("beta_schedule", "linear")? {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            other => return Err(bad(path, format!("beta_schedule {other} is not supported"))),
        };
        let prediction_type = match f.str_or("prediction_type", "epsilon")? {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => {
                return Err(bad(
                    path,
                    format!("prediction_type {other} is not supported"),
                ));
            }
        };
        let timestep_spacing = match f.str_or("timestep_spacing", "linspace")? {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => {
                return Err(bad(
                    path,
                    format!("timestep_spacing {other} is not supported"),
                ));
            }
        };
        for (key, default) in [
            ("use_karras_sigmas", false),
            ("use_exponential_sigmas", false),
            ("use_beta_sigmas", false),
            ("rescale_betas_zero_snr", false),
            ("thresholding", false),
            ("clip_sample", false),
        ] {
            if f.bool_or(key, default)? {
                return Err(bad(path, format!("{key} = true is not supported")));
            }
        }
        if f.get("trained_betas").is_some() {
            return Err(bad(path, "trained_betas is not supported"));
        }
        if kind == SchedulerKind::Euler {
            if f.str_or("interpolation_type", "linear")? != "linear" {
                return Err(bad(
                    path,
                    "interpolation_type other than linear is not supported",
                ));
            }
            if f.str_or("final_sigmas_type", "zero")? != "zero" {
                return Err(bad(
                    path,
                    "final_sigmas_type other than zero is not supported",
                ));
            }
            if f.str_or("timestep_type", "discrete")? != "discrete" {
                return Err(bad(
                    path,
                    "timestep_type other than discrete is not supported",
                ));
            }
        }
        Ok(Self {
            kind,
            num_train_timesteps: f.usize_or("num_train_timesteps", 1000)?,
            beta_start: f.f64_or("beta_start", 0.0001)?,
            beta_end: f.f64_or("beta_end", 0.02)?,
            beta_schedule,
            prediction_type,
            timestep_spacing,
            steps_offset: f.usize_or("steps_offset", 0)?,
            set_alpha_to_one: f.bool_or("set_alpha_to_one", true)?,
        })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let class = v
            .get("_class_name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(path, "_class_name: expected a string"))?
            .to_string();
        Self::from_value(path, &class, &v)
    }
}

impl SchedulerConfig {
    /// The family's scheduler with the folder's noise schedule (betas, training
    /// steps, prediction type): diffusers' `Scheduler.from_config(folder_config, ...)`
    /// as each family's model card prescribes. SD 1.5 folders ship PNDM, which we
    /// replace by DDIM; SD-Turbo runs Euler trailing, SDXL-Turbo Euler-ancestral
    /// trailing, SDXL-Lightning Euler trailing (its 1-step UNet: "sample"
    /// prediction, see [`SchedulerConfig::for_steps`]).
    pub fn for_family(path: &Path, family: Family) -> Result<Self> {
        let v = read_json(path)?;
        let (class, spacing) = match family {
            Family::Sd15 => ("DDIMScheduler", None),
            Family::SdTurbo => ("EulerDiscreteScheduler", Some(TimestepSpacing::Trailing)),
            Family::SdxlTurbo => (
                "EulerAncestralDiscreteScheduler",
                Some(TimestepSpacing::Trailing),
            ),
            Family::SdxlLightning => ("EulerDiscreteScheduler", Some(TimestepSpacing::Trailing)),
        };
        let mut c = Self::from_value(path, class, &v)?;
        if let Some(s) = spacing {
            c.timestep_spacing = s;
        }
        if family == Family::Sd15 && v.get("timestep_spacing").is_none() {
            // DDIM's default spacing when the folder (PNDM) does not say.
            c.timestep_spacing = TimestepSpacing::Leading;
        }
        Ok(c)
    }

    /// Per-run adjustments: SDXL-Lightning's 1-step UNet predicts the sample itself.
    pub fn for_steps(&self, family: Family, steps: usize) -> Self {
        let mut c = self.clone();
        if family == Family::SdxlLightning && steps == 1 {
            c.prediction_type = PredictionType::Sample;
        }
        c
    }
}

/// The files a model folder of an architecture must have, relative to it.
pub fn required_files(arch: Arch) -> Vec<&'static str> {
    let mut files = vec![
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ];
    if arch == Arch::Sdxl {
        files.extend([
            "text_encoder_2/config.json",
            "text_encoder_2/model.safetensors",
            "tokenizer_2/vocab.json",
            "tokenizer_2/merges.txt",
        ]);
    }
    files
}

/// Every required file missing from `dir` (all of them, so one error says everything).
pub fn check_files(dir: &Path, arch: Arch) -> Result<()> {
    let missing: Vec<String> = required_files(arch)
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .map(str::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DiffusionError::MissingFiles {
            dir: dir.to_path_buf(),
            files: missing,
        })
    }
}

/// A quick look at a folder's UNet config (if readable) for whether it fits the
/// family's architecture, so "wrong family" is not reported as "missing files".
pub fn check_family(dir: &Path, family: Family) -> Result<()> {
    let Ok(unet) = UNetConfig::from_file(&dir.join("unet/config.json")) else {
        return Ok(());
    };
    let sdxl = unet.text_time.is_some();
    let reason = match (family.arch(), sdxl) {
        (Arch::Sdxl, false) => "the UNet has no text_time added conditioning (not an SDXL model)",
        (Arch::Sd1 | Arch::Sd2, true) => "the UNet takes SDXL's added conditioning (an SDXL model)",
        _ => return Ok(()),
    };
    Err(DiffusionError::FamilyMismatch {
        family: family.to_string(),
        dir: dir.to_path_buf(),
        reason: reason.into(),
    })
}

/// A path inside a model folder.
pub fn file(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}
