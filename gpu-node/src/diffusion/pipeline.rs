//! Loading a diffusers model folder and the img2img driver (diffusers'
//! `StableDiffusionImg2ImgPipeline` / `StableDiffusionXLImg2ImgPipeline`
//! recipe), with every random draw supplied by the caller.
//!
//! The recipe: `z0 = (mean + std·n_vae)·scale`; the strength (or a t-index
//! list) picks the timesteps; `x = add_noise(z0, n_init, t0)`; per step the
//! UNet sees `scale_model_input(x)` (batch `[uncond, cond]` when guidance > 1,
//! mixed as `u + g(c − u)`); the scheduler steps; `decode(x / scale)`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::clip::ClipTextEncoder;
use super::config::{self, Arch, ClipConfig, Family, SchedulerConfig, UNetConfig, VaeConfig};
use super::scheduler::{Scheduler, check_shape};
use super::tokenizer::ClipTokenizer;
use super::unet::{AddedCond, UNet};
use super::vae::Vae;
use super::{DiffusionError, Result};

/// A loaded model: text encoder(s), UNet, VAE, tokenizer(s) and the folder's scheduler config.
pub struct DiffusionModel {
    pub family: Family,
    pub dir: PathBuf,
    pub device: Device,
    pub dtype: DType,
    pub text_encoder: ClipTextEncoder,
    pub text_encoder_2: Option<ClipTextEncoder>,
    pub tokenizer: ClipTokenizer,
    pub tokenizer_2: Option<ClipTokenizer>,
    pub unet: UNet,
    pub vae: Vae,
    /// The family's scheduler on the folder's noise schedule ([`SchedulerConfig::for_family`]).
    pub scheduler: SchedulerConfig,
    /// SDXL: an absent negative prompt means zero embeddings (model_index.json).
    pub force_zeros_for_empty_prompt: bool,
}

fn weights(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    // Safety: the file is mmapped read-only; a model folder is not rewritten while loaded.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device)? })
}

impl DiffusionModel {
    /// Loads `dir` (diffusers layout). Every missing file is named in one error;
    /// a config that does not fit `family` is a [`DiffusionError::FamilyMismatch`].
    /// `unet_file` replaces `unet/diffusion_pytorch_model.safetensors` (SDXL-Lightning
    /// ships its distilled UNet as a separate file).
    pub fn load(
        dir: &Path,
        family: Family,
        unet_file: Option<&Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let arch = family.arch();
        config::check_family(dir, family)?;
        let mut missing: Vec<String> = config::required_files(arch)
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .filter(|f| !(unet_file.is_some() && *f == "unet/diffusion_pytorch_model.safetensors"))
            .map(str::to_string)
            .collect();
        if let Some(u) = unet_file.filter(|u| !u.is_file()) {
            missing.push(u.display().to_string());
        }
        if !missing.is_empty() {
            return Err(DiffusionError::MissingFiles {
                dir: dir.to_path_buf(),
                files: missing,
            });
        }
        let mismatch = |reason: String| DiffusionError::FamilyMismatch {
            family: family.to_string(),
            dir: dir.to_path_buf(),
            reason,
        };
        // Catch a wrong family before reading gigabytes of weights.
        if arch != Arch::Sdxl && dir.join("text_encoder_2/config.json").is_file() {
            return Err(mismatch(
                "the folder has a second text encoder (an SDXL model)".into(),
            ));
        }
        let unet_cfg = UNetConfig::from_file(&dir.join("unet/config.json"))?;
        match (arch, unet_cfg.text_time.is_some()) {
            (Arch::Sdxl, false) => {
                return Err(mismatch(
                    "the UNet has no text_time added conditioning".into(),
                ));
            }
            (Arch::Sd1 | Arch::Sd2, true) => {
                return Err(mismatch("the UNet takes SDXL's added conditioning".into()));
            }
            _ => {}
        }
        let te_cfg = ClipConfig::from_file(&dir.join("text_encoder/config.json"))?;
        let te2_cfg = if arch == Arch::Sdxl {
            let c = ClipConfig::from_file(&dir.join("text_encoder_2/config.json"))?;
            if c.projection_dim.is_none() {
                return Err(mismatch("text_encoder_2 has no projection".into()));
            }
            Some(c)
        } else {
            None
        };
        let context_dim = te_cfg.hidden_size + te2_cfg.as_ref().map_or(0, |c| c.hidden_size);
        if context_dim != unet_cfg.cross_attention_dim {
            return Err(mismatch(format!(
                "text width {context_dim} != the UNet's cross_attention_dim {}",
                unet_cfg.cross_attention_dim
            )));
        }
        if let (Some((tdim, in_dim)), Some(c2)) = (unet_cfg.text_time, &te2_cfg) {
            let want = c2.projection_dim.unwrap_or(0) + 6 * tdim;
            if want != in_dim {
                return Err(mismatch(format!(
                    "add_embedding takes {in_dim} features, pooled + time ids give {want}"
                )));
            }
        }
        match (family, te_cfg.activation) {
            (Family::SdTurbo, config::ClipActivation::QuickGelu) => {
                return Err(mismatch(
                    "SD 2.x uses OpenCLIP (gelu), this text encoder is quick_gelu".into(),
                ));
            }
            (Family::Sd15, config::ClipActivation::GeluErf) => {
                return Err(mismatch(
                    "SD 1.5 uses OpenAI CLIP (quick_gelu), this text encoder is gelu".into(),
                ));
            }
            _ => {}
        }
        let vae_cfg = VaeConfig::from_file(&dir.join("vae/config.json"))?;
        let scheduler =
            SchedulerConfig::for_family(&dir.join("scheduler/scheduler_config.json"), family)?;
        let index = config::read_json(&dir.join("model_index.json"))?;
        let force_zeros_for_empty_prompt = index
            .get("force_zeros_for_empty_prompt")
            .and_then(|v| v.as_bool())
            .unwrap_or(arch == Arch::Sdxl);

        let text_encoder = ClipTextEncoder::new(
            weights(&dir.join("text_encoder/model.safetensors"), dtype, device)?,
            &te_cfg,
        )?;
        let text_encoder_2 = match &te2_cfg {
            Some(c) => Some(ClipTextEncoder::new(
                weights(&dir.join("text_encoder_2/model.safetensors"), dtype, device)?,
                c,
            )?),
            None => None,
        };
        let unet_path = unet_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("unet/diffusion_pytorch_model.safetensors"));
        let unet = UNet::new(weights(&unet_path, dtype, device)?, &unet_cfg)?;
        // The VAE runs in float32 even under fp16 (diffusers' force_upcast: SD VAEs overflow in fp16).
        let vae = Vae::new(
            weights(
                &dir.join("vae/diffusion_pytorch_model.safetensors"),
                DType::F32,
                device,
            )?,
            &vae_cfg,
        )?;
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let tokenizer_2 = if arch == Arch::Sdxl {
            Some(ClipTokenizer::from_dir(&dir.join("tokenizer_2"))?)
        } else {
            None
        };
        Ok(Self {
            family,
            dir: dir.to_path_buf(),
            device: device.clone(),
            dtype,
            text_encoder,
            text_encoder_2,
            tokenizer,
            tokenizer_2,
            unet,
            vae,
            scheduler,
            force_zeros_for_empty_prompt,
        })
    }

    pub fn is_sdxl(&self) -> bool {
        self.text_encoder_2.is_some()
    }

    /// Prompt embeddings from token ids (77 each; `ids_2` for SDXL's second tokenizer).
    pub fn encode_ids(&self, ids: &[u32], ids_2: Option<&[u32]>) -> Result<PromptEmbeds> {
        let out = self.text_encoder.forward(ids, &self.device)?;
        match &self.text_encoder_2 {
            None => Ok(PromptEmbeds {
                context: out.last_hidden_state,
                pooled: None,
            }),
            Some(te2) => {
                let ids_2 = ids_2.unwrap_or(ids);
                let out2 = te2.forward(ids_2, &self.device)?;
                // SDXL: penultimate states of both encoders side by side; pooled from the second.
                let context = Tensor::cat(&[&out.penultimate, &out2.penultimate], D::Minus1)?;
                Ok(PromptEmbeds {
                    context,
                    pooled: out2.text_embeds,
                })
            }
        }
    }

    /// Tokenizes and encodes a prompt; `truncated` says the prompt was cut at 77 tokens.
    pub fn encode_prompt(&self, text: &str) -> Result<(PromptEmbeds, bool)> {
        let t = self.tokenizer.encode(text);
        let t2 = self.tokenizer_2.as_ref().map(|tk| tk.encode(text));
        let e = self.encode_ids(&t.ids, t2.as_ref().map(|t| t.ids.as_slice()))?;
        Ok((e, t.truncated || t2.is_some_and(|t| t.truncated)))
    }

    /// The unconditional embeddings for "no negative prompt": zeros for SDXL
    /// (force_zeros_for_empty_prompt), the empty prompt's otherwise.
    pub fn empty_negative(&self) -> Result<PromptEmbeds> {
        if self.is_sdxl() && self.force_zeros_for_empty_prompt {
            let (e, _) = self.encode_prompt("")?;
            Ok(PromptEmbeds {
                context: e.context.zeros_like()?,
                pooled: match e.pooled {
                    Some(p) => Some(p.zeros_like()?),
                    None => None,
                },
            })
        } else {
            Ok(self.encode_prompt("")?.0)
        }
    }

    /// Latent shape for an image size.
    pub fn latent_dims(&self, height: usize, width: usize) -> (usize, usize, usize, usize) {
        (1, self.vae.config().latent_channels, height / 8, width / 8)
    }

    /// Runs img2img. `image` is NCHW in [-1, 1]; `noise` holds every random draw.
    pub fn img2img(
        &self,
        image: &Tensor,
        req: &Img2Img<'_>,
        noise: &Img2ImgNoise,
        trace: bool,
    ) -> Result<Img2ImgOutput> {
        let sched = Scheduler::new(req.scheduler, req.steps)?;
        let indices = match &req.schedule {
            StepSelection::Strength(s) => sched.strength_indices(*s)?,
            StepSelection::TIndexList(list) => {
                sched.check_indices(list)?;
                list.clone()
            }
        };
        if req.guidance < 0.0 || req.guidance.is_nan() {
            return Err(DiffusionError::NegativeGuidance(req.guidance));
        }
        let cfg = req.guidance > 1.0;
        let scale = self.vae.config().scaling_factor;
        let mut timings = PipelineTimings::default();

        let t0 = Instant::now();
        let posterior = self.vae.encode(&image.to_dtype(DType::F32)?)?;
        check_shape("vae_sample", &noise.vae, &posterior.mean)?;
        let z0 = (posterior.sample(&noise.vae)? * scale)?;
        timings.vae_encode = t0.elapsed();

        check_shape("init_noise", &noise.init, &z0)?;
        let mut latents = sched.add_noise(&z0, &noise.init, indices[0])?;
        let noisy = latents.clone();

        let context = match (cfg, req.uncond) {
            (true, Some(u)) => Tensor::cat(&[&u.context, &req.cond.context], 0)?,
            (true, None) => {
                return Err(DiffusionError::Reference(
                    "guidance > 1 needs unconditional embeddings".into(),
                ));
            }
            (false, _) => req.cond.context.clone(),
        }
        .to_dtype(self.dtype)?;
        let added = match &req.cond.pooled {
            None => None,
            Some(pooled) => {
                let ids = req
                    .time_ids
                    .ok_or_else(|| DiffusionError::Reference("SDXL needs time ids".into()))?;
                let ids = Tensor::new(&ids[..], &self.device)?.unsqueeze(0)?;
                let (text_embeds, time_ids) =
                    match (cfg, req.uncond.and_then(|u| u.pooled.as_ref())) {
                        (true, Some(up)) => (
                            Tensor::cat(&[up, pooled], 0)?,
                            Tensor::cat(&[&ids, &ids], 0)?,
                        ),
                        _ => (pooled.clone(), ids),
                    };
                Some(AddedCond {
                    text_embeds,
                    time_ids,
                })
            }
        };

        let mut steps = Vec::new();
        for (k, &i) in indices.iter().enumerate() {
            let t_step = Instant::now();
            let x = if cfg {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let unet_input = sched.scale_model_input(&x, i)?;
            let out = self
                .unet
                .forward(
                    &unet_input.to_dtype(self.dtype)?,
                    sched.timesteps()[i],
                    &context,
                    added.as_ref(),
                )?
                .to_dtype(DType::F32)?;
            let eps = if cfg {
                let u = out.narrow(0, 0, 1)?;
                let c = out.narrow(0, 1, 1)?;
                (&u + ((c - &u)? * req.guidance)?)?
            } else {
                out.clone()
            };
            let next = indices.get(k + 1).copied();
            let step_noise = noise.steps.get(k);
            latents = sched.step(&eps, i, next, &latents, step_noise)?;
            timings.unet_steps.push(t_step.elapsed());
            if trace {
                steps.push(StepTrace {
                    timestep: sched.timesteps()[i],
                    unet_input,
                    unet_output: out,
                    latents: latents.clone(),
                });
            }
        }

        let t_dec = Instant::now();
        let decoded = self.vae.decode(&(&latents / scale)?)?;
        let image01 = ((&decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        timings.vae_decode = t_dec.elapsed();
        Ok(Img2ImgOutput {
            init_latents_scaled: z0,
            noisy_latents: noisy,
            moments: posterior.moments,
            steps,
            final_latents: latents,
            decoded,
            image01,
            timesteps_used: indices.iter().map(|&i| sched.timesteps()[i]).collect(),
            timings,
        })
    }
}

/// Text conditioning for the UNet.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// (1, 77, cross_attention_dim)
    pub context: Tensor,
    /// SDXL: pooled projected embeds of the second encoder (1, P).
    pub pooled: Option<Tensor>,
}

impl PromptEmbeds {
    /// Weighted sum of several prompts' embeddings (weights already normalised).
    pub fn blend(parts: &[(f64, &PromptEmbeds)]) -> Result<PromptEmbeds> {
        let mut context: Option<Tensor> = None;
        let mut pooled: Option<Tensor> = None;
        for (w, e) in parts {
            let c = (&e.context * *w)?;
            context = Some(match context {
                None => c,
                Some(acc) => (acc + c)?,
            });
            if let Some(p) = &e.pooled {
                let p = (p * *w)?;
                pooled = Some(match pooled {
                    None => p,
                    Some(acc) => (acc + p)?,
                });
            }
        }
        Ok(PromptEmbeds {
            context: context.ok_or(DiffusionError::EmptyPrompt)?,
            pooled,
        })
    }

    /// Spherical interpolation from `a` (t = 0) to `b` (t = 1), as
    /// StreamDiffusion's `prompt_interpolation_method = "slerp"` ([`slerp`]).
    pub fn slerp(a: &PromptEmbeds, b: &PromptEmbeds, t: f64) -> Result<PromptEmbeds> {
        Ok(PromptEmbeds {
            context: slerp(&a.context, &b.context, t)?,
            pooled: match (&a.pooled, &b.pooled) {
                (Some(x), Some(y)) => Some(slerp(x, y, t)?),
                _ => None,
            },
        })
    }
}

/// Spherical linear interpolation of two tensors taken as one vector each
/// (StreamDiffusion's `_slerp`): `t ≤ 0` gives `a`, `t ≥ 1` gives `b`, between
/// them `sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b` with θ the angle between
/// them (linear when they are parallel).
pub fn slerp(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    if t <= 0.0 {
        return Ok(a.clone());
    }
    if t >= 1.0 {
        return Ok(b.clone());
    }
    let fa = a.to_dtype(DType::F32)?.flatten_all()?;
    let fb = b.to_dtype(DType::F32)?.flatten_all()?;
    let norm = |x: &Tensor| -> Result<f64> {
        Ok((x.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
            .sqrt()
            .max(1e-12))
    };
    let dot = (&fa * &fb)?.sum_all()?.to_scalar::<f32>()? as f64;
    let cos = (dot / (norm(&fa)? * norm(&fb)?)).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let (wa, wb) = if theta.abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        let s = theta.sin();
        (((1.0 - t) * theta).sin() / s, (t * theta).sin() / s)
    };
    Ok(((a * wa)? + (b * wb)?)?)
}

/// Which timestep indices run.
#[derive(Debug, Clone, PartialEq)]
pub enum StepSelection {
    /// diffusers img2img: the last `int(steps · strength)` of the schedule.
    Strength(f64),
    /// StreamDiffusion: these indices into the schedule, increasing.
    TIndexList(Vec<usize>),
}

/// One img2img request (embeddings already computed: they are cached per prompt).
pub struct Img2Img<'a> {
    pub cond: &'a PromptEmbeds,
    pub uncond: Option<&'a PromptEmbeds>,
    pub guidance: f64,
    pub scheduler: &'a SchedulerConfig,
    pub steps: usize,
    pub schedule: StepSelection,
    /// SDXL: [orig_h, orig_w, crop_top, crop_left, target_h, target_w].
    pub time_ids: Option<[f32; 6]>,
}

/// Every random draw of one run, in latent shape.
#[derive(Debug, Clone)]
pub struct Img2ImgNoise {
    /// The VAE posterior sample's noise.
    pub vae: Tensor,
    /// The noise added at the first timestep.
    pub init: Tensor,
    /// Euler-ancestral: one per step.
    pub steps: Vec<Tensor>,
}

impl Img2ImgNoise {
    /// Standard normal noise from a seed (candle's CPU RNG cannot be seeded, so a
    /// small seeded generator here: per-stream fixed noise needs reproducibility).
    pub fn from_seed(
        seed: u64,
        dims: (usize, usize, usize, usize),
        steps: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = SplitMix64(seed);
        let n = dims.0 * dims.1 * dims.2 * dims.3;
        let mut draw = || -> Result<Tensor> {
            let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            Ok(Tensor::from_vec(v, dims, device)?)
        };
        let vae = draw()?;
        let init = draw()?;
        let steps = (0..steps).map(|_| draw()).collect::<Result<Vec<_>>>()?;
        Ok(Self { vae, init, steps })
    }
}

/// SplitMix64 + Box–Muller: tiny, seedable, good enough for diffusion noise.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Time per pipeline stage.
#[derive(Debug, Clone, Default)]
pub struct PipelineTimings {
    pub vae_encode: Duration,
    pub unet_steps: Vec<Duration>,
    pub vae_decode: Duration,
}

#[derive(Debug, Clone)]
pub struct StepTrace {
    pub timestep: f64,
    pub unet_input: Tensor,
    pub unet_output: Tensor,
    pub latents: Tensor,
}

/// Result and (with `trace`) every intermediate of one run.
#[derive(Debug, Clone)]
pub struct Img2ImgOutput {
    pub init_latents_scaled: Tensor,
    pub noisy_latents: Tensor,
    pub moments: Tensor,
    pub steps: Vec<StepTrace>,
    pub final_latents: Tensor,
    /// VAE output, NCHW, about [-1, 1].
    pub decoded: Tensor,
    /// `clamp(decoded/2 + 0.5, 0, 1)`, NCHW.
    pub image01: Tensor,
    pub timesteps_used: Vec<f64>,
    pub timings: PipelineTimings,
}
