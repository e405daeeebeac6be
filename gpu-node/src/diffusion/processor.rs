//! The live `diffusion` processor: JPEG frame in, JPEG frame out, through a
//! configured model's img2img.
//!
//! What makes it usable live (StreamDiffusion's lessons): prompt embeddings are
//! cached per (model, prompt), so a prompt change costs one text-encoder call
//! and no weight load; the noise is fixed per seed set and frame size, so a
//! still camera gives a still picture; any parameter (prompt, negative prompt,
//! guidance, strength / t-index list, steps, seed) can change on the next frame.
//! Weighted prompts and seeds are combined as StreamDiffusion does: prompt
//! embeddings by their weighted sum (weights divided by their sum when asked)
//! or, for exactly two, by slerp with `t` = the second weight; seed noises by
//! the same rules, a weighted sum being rescaled to unit variance.
//! Frames of any aspect are resized to the model's width × height (multiples of
//! 8, as diffusers requires) and the result back to the frame's aspect.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use dreamstream_actors::style::{Interpolation, ProcessorKind, StyleParams, StyleSource};
use serde::{Deserialize, Serialize};

use super::config::{Family, check_family, check_files};
use super::pipeline::{DiffusionModel, Img2Img, Img2ImgNoise, PromptEmbeds, StepSelection, slerp};
use super::{DiffusionError, MAX_TOKENS, Result};
use crate::image_io::{self, ResizeQuality, RgbImage};
use crate::processor::{Capabilities, ProcessError, ProcessedFrame, Processor, StageTimings};

/// One `[[gpu.models]]` entry of cluster.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The name streams ask for (e.g. `sd-turbo`).
    pub id: String,
    pub family: Family,
    /// A diffusers-layout folder.
    pub path: PathBuf,
    /// SDXL-Lightning: its distilled UNet file (replaces `unet/diffusion_pytorch_model.safetensors`).
    #[serde(default)]
    pub unet_file: Option<PathBuf>,
}

/// Longest schedule a t_index_list may index into.
pub const MAX_SCHEDULE_STEPS: usize = 1000;

/// Smallest and largest side the API accepts (Daydream's range).
pub const MIN_SIDE: usize = 64;
pub const MAX_SIDE: usize = 1024;

/// Everything one frame's diffusion needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionRequest {
    /// Model id; `None` = the first configured model.
    pub model: Option<String>,
    /// Prompts and weights; embeddings are combined as `blend` says.
    pub prompts: Vec<(String, f64)>,
    pub negative_prompt: Option<String>,
    pub steps: usize,
    pub schedule: StepSelection,
    pub guidance: f64,
    /// Seeds and weights; the noises are combined as `blend` says.
    pub seeds: Vec<(u64, f64)>,
    pub blend: BlendOptions,
    pub width: usize,
    pub height: usize,
    pub jpeg_quality: u8,
}

/// How weighted prompts and seeds are combined (Daydream's
/// `prompt_interpolation_method`, `normalize_prompt_weights`,
/// `seed_interpolation_method`, `normalize_seed_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlendOptions {
    /// Linear: weighted sum of the embeddings; slerp (exactly two prompts):
    /// spherical interpolation with `t` = the second weight.
    pub prompt_interpolation: Interpolation,
    /// Divide the prompt weights by their sum first.
    pub normalize_prompt_weights: bool,
    /// Linear: weighted sum of the noises rescaled to unit variance (so
    /// normalising changes nothing); slerp (exactly two seeds) as for prompts.
    pub seed_interpolation: Interpolation,
    pub normalize_seed_weights: bool,
}

impl Default for BlendOptions {
    fn default() -> Self {
        Self {
            prompt_interpolation: Interpolation::Linear,
            normalize_prompt_weights: true,
            seed_interpolation: Interpolation::Linear,
            normalize_seed_weights: true,
        }
    }
}

impl DiffusionRequest {
    /// A request for `prompt` with the family's defaults.
    pub fn new(prompt: &str, family: Family) -> Self {
        Self {
            model: None,
            prompts: vec![(prompt.to_string(), 1.0)],
            negative_prompt: None,
            steps: family.default_steps(),
            schedule: StepSelection::Strength(0.5),
            guidance: family.default_guidance(),
            seeds: vec![(42, 1.0)],
            blend: BlendOptions::default(),
            width: 512,
            height: 512,
            jpeg_quality: 85,
        }
    }
}

/// Normalises weights to sum 1; a zero (or non-finite) sum is an error.
fn normalise(weights: &[f64], what: &'static str) -> Result<Vec<f64>> {
    blend_weights(weights, true, what)
}

/// The weights a blend uses: divided by their sum when `normalize`, as given
/// otherwise; a zero (or non-finite) sum is an error either way.
fn blend_weights(weights: &[f64], normalize: bool, what: &'static str) -> Result<Vec<f64>> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum == 0.0 || !sum.is_finite() {
        return Err(DiffusionError::WeightsSumToZero { what });
    }
    Ok(if normalize {
        weights.iter().map(|w| w / sum).collect()
    } else {
        weights.to_vec()
    })
}

/// Slerp is StreamDiffusion's only for exactly two entries; otherwise linear.
fn is_slerp(method: Interpolation, entries: usize) -> bool {
    method == Interpolation::Slerp && entries == 2
}

/// What [`DiffusionProcessor::run`] did besides the picture.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub text_encode: Duration,
    pub vae_encode: Duration,
    pub unet_steps: Vec<Duration>,
    pub vae_decode: Duration,
    /// The timesteps the model ran at, in order.
    pub timesteps: Vec<f64>,
    pub notes: Vec<String>,
}

/// (model id, prompt) -> embeddings and whether the prompt was truncated.
type EmbedKey = (String, String);
type CachedEmbeds = (Arc<PromptEmbeds>, bool);
/// (model id, (seed, weight bits), slerp, latent dims, step noises).
type NoiseKey = (
    String,
    Vec<(u64, u64)>,
    bool,
    (usize, usize, usize, usize),
    usize,
);

type Loaded = (ModelSpec, Arc<DiffusionModel>);

pub struct DiffusionProcessor {
    /// Loaded models; a reload swaps an entry in place (readers keep their `Arc`).
    models: RwLock<Vec<Loaded>>,
    /// Ids being loaded in the background.
    loading: Mutex<HashSet<String>>,
    device: Device,
    dtype: DType,
    embeds: Mutex<HashMap<EmbedKey, CachedEmbeds>>,
    noise: Mutex<HashMap<NoiseKey, Arc<Img2ImgNoise>>>,
    calls: AtomicU64,
    text_encodes: AtomicU64,
    /// Models whose weights were read from disk (start and background loads).
    weight_loads: AtomicU64,
}

/// Reads one model's weights; every load is logged ("diffusion weights loaded"),
/// which is how operators (and the end-to-end test) see that a prompt change
/// reloads nothing.
fn load_weights(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<DiffusionModel> {
    let t = Instant::now();
    let m = DiffusionModel::load(
        &spec.path,
        spec.family,
        spec.unet_file.as_deref(),
        device,
        dtype,
    )?;
    tracing::info!(
        model = %spec.id,
        family = ?spec.family,
        ms = t.elapsed().as_millis() as u64,
        "diffusion weights loaded"
    );
    Ok(m)
}

/// Cached prompts per processor before the cache is cleared (a stream rarely has many).
const EMBED_CACHE: usize = 256;
const NOISE_CACHE: usize = 64;

impl DiffusionProcessor {
    /// Loads every configured model; one error names every missing file of every model.
    pub fn load(specs: &[ModelSpec], device: &Device) -> Result<Self> {
        if specs.is_empty() {
            return Err(DiffusionError::UnknownModel {
                id: "(none)".into(),
                known: "no [[gpu.models]] configured".into(),
            });
        }
        for s in specs {
            check_family(&s.path, s.family)?;
        }
        let mut missing = Vec::new();
        for s in specs {
            if let Err(DiffusionError::MissingFiles { dir, files }) =
                check_files(&s.path, s.family.arch())
            {
                missing.extend(
                    files
                        .into_iter()
                        .map(|f| format!("{} ({}): {}", s.id, dir.display(), f)),
                );
            }
            if let Some(u) = s.unet_file.as_ref().filter(|u| !u.is_file()) {
                missing.push(format!("{}: {}", s.id, u.display()));
            }
        }
        if !missing.is_empty() {
            return Err(DiffusionError::MissingFiles {
                dir: PathBuf::from("[[gpu.models]]"),
                files: missing,
            });
        }
        // fp16 on CUDA (the real models' size), fp32 on CPU (candle's CPU fp16 is slow and inexact).
        let dtype = if device.is_cuda() {
            DType::F16
        } else {
            DType::F32
        };
        let mut models = Vec::new();
        for s in specs {
            let m = load_weights(s, device, dtype)?;
            models.push((s.clone(), Arc::new(m)));
        }
        Ok(Self {
            models: RwLock::new(models),
            loading: Mutex::new(HashSet::new()),
            device: device.clone(),
            dtype,
            embeds: Mutex::new(HashMap::new()),
            noise: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            text_encodes: AtomicU64::new(0),
            weight_loads: AtomicU64::new(specs.len() as u64),
        })
    }

    pub fn model_ids(&self) -> Vec<String> {
        match self.models.read() {
            Ok(m) => m.iter().map(|(s, _)| s.id.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Frames processed so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Model weight loads so far (each configured model once at start, plus reloads).
    pub fn weight_loads(&self) -> u64 {
        self.weight_loads.load(Ordering::Relaxed)
    }

    /// Text-encoder runs so far (a cached prompt costs none).
    pub fn text_encodes(&self) -> u64 {
        self.text_encodes.load(Ordering::Relaxed)
    }

    fn model(&self, id: Option<&str>) -> Result<Loaded> {
        let models = self.models.read().map_err(poisoned)?;
        let found = match id {
            None => models.first(),
            Some(id) => models.iter().find(|(s, _)| s.id == id),
        };
        if let Some(l) = found {
            return Ok(l.clone());
        }
        if let Some(id) = id
            && self.loading.lock().map_err(poisoned)?.contains(id)
        {
            return Err(DiffusionError::ModelLoading { id: id.to_string() });
        }
        Err(DiffusionError::UnknownModel {
            id: id.unwrap_or("(default)").to_string(),
            known: models
                .iter()
                .map(|(s, _)| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Loads (or reloads) a model on a background thread while the processor
    /// keeps serving: frames asking for a new id get [`DiffusionError::ModelLoading`]
    /// (the stream keeps showing its last output), a reloaded id keeps its old
    /// weights until the new ones are in. Missing files and a family that does not
    /// fit are reported at once, before any thread starts.
    pub fn load_in_background(
        self: &Arc<Self>,
        spec: ModelSpec,
    ) -> Result<std::thread::JoinHandle<Result<()>>> {
        check_family(&spec.path, spec.family)?;
        check_files(&spec.path, spec.family.arch())?;
        self.loading
            .lock()
            .map_err(poisoned)?
            .insert(spec.id.clone());
        let this = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name(format!("load-{}", spec.id))
            .spawn(move || {
                let loaded = load_weights(&spec, &this.device, this.dtype);
                let result = match loaded {
                    Ok(m) => {
                        this.weight_loads.fetch_add(1, Ordering::Relaxed);
                        this.install(spec.clone(), m)
                    }
                    Err(e) => Err(e),
                };
                this.loading.lock().map_err(poisoned)?.remove(&spec.id);
                result
            })
            .map_err(|source| DiffusionError::Io {
                path: PathBuf::from("(thread)"),
                source,
            })?;
        Ok(handle)
    }

    fn install(&self, spec: ModelSpec, model: DiffusionModel) -> Result<()> {
        let id = spec.id.clone();
        {
            let mut models = self.models.write().map_err(poisoned)?;
            match models.iter_mut().find(|(s, _)| s.id == id) {
                Some(entry) => *entry = (spec, Arc::new(model)),
                None => models.push((spec, Arc::new(model))),
            }
        }
        // Embeddings and noise of the old weights must not be reused.
        self.embeds
            .lock()
            .map_err(poisoned)?
            .retain(|(m, _), _| *m != id);
        self.noise
            .lock()
            .map_err(poisoned)?
            .retain(|k, _| k.0 != id);
        Ok(())
    }

    fn embed(
        &self,
        model_id: &str,
        model: &DiffusionModel,
        prompt: &str,
    ) -> Result<(Arc<PromptEmbeds>, bool)> {
        let key = (model_id.to_string(), prompt.to_string());
        if let Some(hit) = self.embeds.lock().map_err(poisoned)?.get(&key) {
            return Ok(hit.clone());
        }
        self.text_encodes.fetch_add(1, Ordering::Relaxed);
        let (e, truncated) = model.encode_prompt(prompt)?;
        let v = (Arc::new(e), truncated);
        let mut cache = self.embeds.lock().map_err(poisoned)?;
        if cache.len() >= EMBED_CACHE {
            cache.clear();
        }
        cache.insert(key, v.clone());
        Ok(v)
    }

    fn negative(
        &self,
        model_id: &str,
        model: &DiffusionModel,
        neg: Option<&str>,
    ) -> Result<Arc<PromptEmbeds>> {
        match neg {
            Some(n) if !n.trim().is_empty() => Ok(self.embed(model_id, model, n)?.0),
            _ => {
                let key = (model_id.to_string(), "\u{0}empty-negative".to_string());
                if let Some(hit) = self.embeds.lock().map_err(poisoned)?.get(&key) {
                    return Ok(hit.0.clone());
                }
                let e = Arc::new(model.empty_negative()?);
                self.embeds
                    .lock()
                    .map_err(poisoned)?
                    .insert(key, (e.clone(), false));
                Ok(e)
            }
        }
    }

    /// The (cached) noise of a seed blend; `steps` = step noises drawn.
    fn noise_for(
        &self,
        model_id: &str,
        seeds: &[(u64, f64)],
        blend: &BlendOptions,
        dims: (usize, usize, usize, usize),
        steps: usize,
    ) -> Result<Arc<Img2ImgNoise>> {
        let weights = blend_weights(
            &seeds.iter().map(|s| s.1).collect::<Vec<_>>(),
            blend.normalize_seed_weights,
            "seed",
        )?;
        let spherical = is_slerp(blend.seed_interpolation, seeds.len());
        let key: NoiseKey = (
            model_id.to_string(),
            seeds
                .iter()
                .zip(&weights)
                .map(|(s, w)| (s.0, w.to_bits()))
                .collect(),
            spherical,
            dims,
            steps,
        );
        if let Some(n) = self.noise.lock().map_err(poisoned)?.get(&key) {
            return Ok(n.clone());
        }
        let n = Arc::new(if spherical {
            let a = Img2ImgNoise::from_seed(seeds[0].0, dims, steps, &self.device)?;
            let b = Img2ImgNoise::from_seed(seeds[1].0, dims, steps, &self.device)?;
            let t = weights[1];
            Img2ImgNoise {
                vae: slerp(&a.vae, &b.vae, t)?,
                init: slerp(&a.init, &b.init, t)?,
                steps: a
                    .steps
                    .iter()
                    .zip(&b.steps)
                    .map(|(x, y)| slerp(x, y, t))
                    .collect::<Result<_>>()?,
            }
        } else {
            self.linear_noise(seeds, &weights, dims, steps)?
        });
        let mut cache = self.noise.lock().map_err(poisoned)?;
        if cache.len() >= NOISE_CACHE {
            cache.clear();
        }
        cache.insert(key, n.clone());
        Ok(n)
    }

    /// Weighted sum of the seeds' noises divided by the weights' L2 norm, so the
    /// result stays unit-variance (independent draws); zero weights draw nothing.
    fn linear_noise(
        &self,
        seeds: &[(u64, f64)],
        weights: &[f64],
        dims: (usize, usize, usize, usize),
        steps: usize,
    ) -> Result<Img2ImgNoise> {
        let norm = weights.iter().map(|w| w * w).sum::<f64>().sqrt();
        let mut acc: Option<Img2ImgNoise> = None;
        for ((seed, _), w) in seeds.iter().zip(weights) {
            if *w == 0.0 {
                continue;
            }
            let n = Img2ImgNoise::from_seed(*seed, dims, steps, &self.device)?;
            let f = w / norm;
            let scaled = Img2ImgNoise {
                vae: (n.vae * f)?,
                init: (n.init * f)?,
                steps: n
                    .steps
                    .into_iter()
                    .map(|t| t * f)
                    .collect::<candle_core::Result<_>>()?,
            };
            acc = Some(match acc {
                None => scaled,
                Some(a) => Img2ImgNoise {
                    vae: (a.vae + scaled.vae)?,
                    init: (a.init + scaled.init)?,
                    steps: a
                        .steps
                        .iter()
                        .zip(&scaled.steps)
                        .map(|(x, y)| x + y)
                        .collect::<candle_core::Result<_>>()?,
                },
            });
        }
        acc.ok_or(DiffusionError::WeightsSumToZero { what: "seed" })
    }

    /// Checks a request against a model without running anything.
    pub fn validate(&self, req: &DiffusionRequest) -> Result<Family> {
        let (spec, _) = self.model(req.model.as_deref())?;
        let family = spec.family;
        let (min, max) = family.steps_range();
        // Model passes: `steps` with a strength, the list's length with a t_index_list
        // (whose `steps` is only the length of the schedule it indexes into).
        let passes = match &req.schedule {
            StepSelection::Strength(_) => req.steps,
            StepSelection::TIndexList(l) => l.len().max(min),
        };
        if passes < min || passes > max {
            return Err(DiffusionError::StepsOutOfRange {
                steps: passes,
                min,
                max,
            });
        }
        if req.steps > MAX_SCHEDULE_STEPS {
            return Err(DiffusionError::StepsOutOfRange {
                steps: req.steps,
                min: 1,
                max: MAX_SCHEDULE_STEPS,
            });
        }
        if !req.width.is_multiple_of(8) || !req.height.is_multiple_of(8) {
            return Err(DiffusionError::SizeNotMultipleOf8 {
                width: req.width,
                height: req.height,
            });
        }
        for side in [req.width, req.height] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&side) {
                return Err(DiffusionError::SizeOutOfRange {
                    width: req.width,
                    height: req.height,
                    min: MIN_SIDE,
                    max: MAX_SIDE,
                });
            }
        }
        if req.guidance < 0.0 || !req.guidance.is_finite() {
            return Err(DiffusionError::NegativeGuidance(req.guidance));
        }
        if req.prompts.iter().all(|(p, _)| p.trim().is_empty()) {
            return Err(DiffusionError::EmptyPrompt);
        }
        normalise(
            &req.prompts.iter().map(|p| p.1).collect::<Vec<_>>(),
            "prompt",
        )?;
        normalise(&req.seeds.iter().map(|s| s.1).collect::<Vec<_>>(), "seed")?;
        match &req.schedule {
            StepSelection::Strength(s) if !(*s > 0.0 && *s <= 1.0) => {
                return Err(DiffusionError::StrengthOutOfRange(*s));
            }
            StepSelection::TIndexList(l)
                if l.is_empty()
                    || !l.windows(2).all(|w| w[0] < w[1])
                    || l.iter().any(|&i| i >= req.steps) =>
            {
                return Err(DiffusionError::BadTIndexList {
                    list: l.clone(),
                    steps: req.steps,
                });
            }
            _ => {}
        }
        Ok(family)
    }

    /// Runs one decoded frame through the request's model; the result has the frame's size.
    pub fn run(&self, frame: &RgbImage, req: &DiffusionRequest) -> Result<(RgbImage, RunInfo)> {
        self.validate(req)?;
        let (spec, model) = self.model(req.model.as_deref())?;
        let model = model.as_ref();
        let mut info = RunInfo::default();

        let t = Instant::now();
        let weights = blend_weights(
            &req.prompts.iter().map(|p| p.1).collect::<Vec<_>>(),
            req.blend.normalize_prompt_weights,
            "prompt",
        )?;
        let mut parts = Vec::new();
        for ((p, _), w) in req.prompts.iter().zip(&weights) {
            let (e, truncated) = self.embed(&spec.id, model, p)?;
            if truncated {
                info.notes
                    .push(format!("prompt truncated to {MAX_TOKENS} tokens: {p:.40}…"));
            }
            parts.push((*w, e));
        }
        let cond = match &parts[..] {
            [(w, e)] if *w == 1.0 => e.clone(),
            [(_, a), (t, b)] if is_slerp(req.blend.prompt_interpolation, 2) => {
                Arc::new(PromptEmbeds::slerp(a, b, *t)?)
            }
            _ => {
                let refs: Vec<(f64, &PromptEmbeds)> =
                    parts.iter().map(|(w, e)| (*w, e.as_ref())).collect();
                Arc::new(PromptEmbeds::blend(&refs)?)
            }
        };
        let uncond = if req.guidance > 1.0 {
            Some(self.negative(&spec.id, model, req.negative_prompt.as_deref())?)
        } else {
            None
        };
        info.text_encode = t.elapsed();

        let input = image_io::resize(
            frame,
            req.width as u32,
            req.height as u32,
            ResizeQuality::Fast,
        );
        let image = to_tensor(&input, &self.device)?;
        let dims = model.latent_dims(req.height, req.width);
        // Step noises are consumed one per pass: a t_index_list needs only its length.
        let step_noises = match &req.schedule {
            StepSelection::Strength(_) => req.steps,
            StepSelection::TIndexList(l) => l.len(),
        };
        let noise = self.noise_for(&spec.id, &req.seeds, &req.blend, dims, step_noises)?;
        let scheduler = model.scheduler.for_steps(spec.family, req.steps);
        let r = Img2Img {
            cond: &cond,
            uncond: uncond.as_deref(),
            guidance: req.guidance,
            scheduler: &scheduler,
            steps: req.steps,
            schedule: req.schedule.clone(),
            time_ids: model.is_sdxl().then(|| {
                let (h, w) = (req.height as f32, req.width as f32);
                [h, w, 0.0, 0.0, h, w]
            }),
        };
        let out = model.img2img(&image, &r, &noise, false)?;
        info.vae_encode = out.timings.vae_encode;
        info.unet_steps = out.timings.unet_steps.clone();
        info.vae_decode = out.timings.vae_decode;
        info.timesteps = out.timesteps_used.clone();
        let rgb = from_tensor(&out.image01)?;
        let restored = image_io::resize(&rgb, frame.width, frame.height, ResizeQuality::Fast);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok((restored, info))
    }

    /// The request a stream's [`StyleParams`] describe (prompt styles only).
    pub fn request_from_params(
        &self,
        params: &StyleParams,
    ) -> Result<DiffusionRequest, ProcessError> {
        let StyleSource::Prompt {
            prompt,
            negative_prompt,
            blend,
        } = &params.source
        else {
            return Err(ProcessError::Unsupported(
                "non-prompt styles on a diffusion worker".into(),
            ));
        };
        let d = &params.diffusion;
        let (spec, _) = self.model(d.model.as_deref()).map_err(input_error)?;
        // A square box of max_side (a multiple of 8); `process` fits the frame's aspect into it.
        let side = ((params.max_side as usize).clamp(MIN_SIDE, MAX_SIDE) / 8 * 8).max(MIN_SIDE);
        let mut options = BlendOptions::default();
        let prompts = match blend {
            Some(b) => {
                options.prompt_interpolation = b.interpolation;
                options.normalize_prompt_weights = b.normalize;
                b.items
                    .iter()
                    .map(|(p, w)| (p.clone(), *w as f64))
                    .collect()
            }
            None => vec![(prompt.clone(), 1.0)],
        };
        let seeds = match &d.seeds {
            Some(b) => {
                options.seed_interpolation = b.interpolation;
                options.normalize_seed_weights = b.normalize;
                b.items.iter().map(|(s, w)| (*s, *w as f64)).collect()
            }
            None => vec![(d.seed, 1.0)],
        };
        let schedule = match &d.t_index_list {
            // Daydream's list may repeat an index; the scheduler steps between
            // distinct timesteps, so a repeat runs once.
            Some(list) => {
                let mut l: Vec<usize> = list.iter().map(|&i| i as usize).collect();
                l.dedup();
                StepSelection::TIndexList(l)
            }
            None => StepSelection::Strength(params.strength.clamp(0.0, 1.0) as f64),
        };
        Ok(DiffusionRequest {
            model: Some(spec.id.clone()),
            prompts,
            negative_prompt: negative_prompt.clone(),
            steps: d.steps as usize,
            schedule,
            guidance: d.guidance as f64,
            seeds,
            blend: options,
            width: side,
            height: side,
            jpeg_quality: params.jpeg_quality,
        })
    }

    /// JPEG in, JPEG out, with stage timings and notes.
    pub fn process_request(
        &self,
        jpeg: &[u8],
        req: &DiffusionRequest,
    ) -> Result<ProcessedFrame, ProcessError> {
        let t = Instant::now();
        let frame = image_io::decode(jpeg)?;
        let decode = t.elapsed();
        let t = Instant::now();
        // Fit the frame's aspect into the request's box (the output keeps the frame's aspect).
        let (fw, fh) = image_io::fit(frame.width, frame.height, req.width.max(req.height) as u32);
        let frame = image_io::resize(&frame, fw.max(1), fh.max(1), ResizeQuality::Fast);
        let (out, info) = self.run(&frame, req).map_err(input_error)?;
        let infer = t.elapsed();
        let t = Instant::now();
        let jpeg = image_io::encode_jpeg(&out, req.jpeg_quality)?;
        let encode = t.elapsed();
        Ok(ProcessedFrame {
            jpeg,
            width: out.width,
            height: out.height,
            timings: StageTimings {
                decode,
                infer,
                encode,
            },
            note: if info.notes.is_empty() {
                None
            } else {
                Some(info.notes.join("; "))
            },
        })
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> DiffusionError {
    DiffusionError::Reference("a cache lock was poisoned by a panic".into())
}

/// Request problems are the stream's fault (it goes on); the rest is the model's.
fn input_error(e: DiffusionError) -> ProcessError {
    match e {
        DiffusionError::Candle(_) | DiffusionError::Io { .. } | DiffusionError::Reference(_) => {
            ProcessError::Model(e.to_string())
        }
        other => ProcessError::Diffusion(other.to_string()),
    }
}

/// RGB u8 HWC -> NCHW float in [-1, 1] (diffusers' preprocessing).
pub fn to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width as usize, img.height as usize);
    let t = Tensor::from_slice(&img.data, (h, w, 3), device)?
        .to_dtype(DType::F32)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?;
    let t = ((t / 255.0)? * 2.0)?;
    Ok((t - 1.0)?)
}

/// NCHW in [0, 1] -> RGB u8 (rounded as diffusers' PIL conversion).
pub fn from_tensor(t: &Tensor) -> Result<RgbImage> {
    let t = t.squeeze(0)?.permute((1, 2, 0))?;
    let (h, w, _) = t.dims3()?;
    let data: Vec<u8> = (t * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1()?;
    Ok(RgbImage::new(w as u32, h as u32, data))
}

impl Processor for DiffusionProcessor {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            processor: ProcessorKind::Diffusion,
            models: self.model_ids(),
            device: if self.device.is_cuda() {
                "cuda:0".into()
            } else {
                "cpu".into()
            },
            prompts: true,
            style_images: false,
        }
    }

    fn warm_up(&self) -> Result<(), ProcessError> {
        let (spec, _) = self.model(None).map_err(input_error)?;
        let mut req = DiffusionRequest::new("warm up", spec.family);
        req.width = MIN_SIDE;
        req.height = MIN_SIDE;
        let frame = RgbImage::new(64, 64, vec![128; 64 * 64 * 3]);
        self.run(&frame, &req).map_err(input_error)?;
        Ok(())
    }

    fn process(&self, frame: &[u8], params: &StyleParams) -> Result<ProcessedFrame, ProcessError> {
        if !StyleParams::is_known_version(params.version) {
            return Err(ProcessError::Version(params.version));
        }
        if params.processor != ProcessorKind::Diffusion {
            return Err(ProcessError::Unsupported(format!(
                "{} styles on a diffusion worker",
                params.processor.as_str()
            )));
        }
        let mut req = self.request_from_params(params)?;
        // Keep the frame's aspect: its fit into max_side, rounded down to multiples of 8.
        let (_, fw, fh) = image_io::dimensions(frame)?;
        let (w, h) = image_io::fit(fw, fh, req.width as u32);
        let round8 = |x: u32| ((x as usize) / 8 * 8).clamp(MIN_SIDE, MAX_SIDE);
        req.width = round8(w);
        req.height = round8(h);
        self.process_request(frame, &req)
    }
}
