//! Runs the img2img cases of a reference `cases.json` (the layout of
//! `../shared/testdata/diffusion-reference/`) and compares our outputs with
//! diffusers' saved `.npy` files, each within the case's `suggested_atol` for
//! an exact-GELU implementation. Used by `gpu-node diffusion-ref` and the tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{Family, SchedulerConfig};
use super::pipeline::{DiffusionModel, Img2Img, Img2ImgNoise, Img2ImgOutput, StepSelection};
use super::{DiffusionError, Result};

#[derive(Debug, Clone, Deserialize)]
pub struct CasesFile {
    pub cases: Vec<Case>,
    #[serde(default)]
    pub components: HashMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub name: String,
    pub family: String,
    pub model_dir: String,
    pub image: String,
    pub guidance_scale: f64,
    pub num_inference_steps: usize,
    pub strength: f64,
    #[serde(default)]
    pub t_index_list: Option<Vec<usize>>,
    pub timesteps_used: Vec<f64>,
    pub scheduler: CaseScheduler,
    pub token_ids: HashMap<String, Vec<u32>>,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default)]
    /// A map of token ids per tokenizer, or a note (SDXL's zeroed negative).
    pub negative_token_ids: Option<Value>,
    pub noise: HashMap<String, String>,
    pub noise_call_order: Vec<String>,
    pub expected: Expected,
    pub tolerance: HashMap<String, Value>,
    #[serde(default)]
    pub sdxl: Option<SdxlInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CaseScheduler {
    pub cls: String,
    pub config: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SdxlInfo {
    pub add_time_ids: Vec<Vec<f32>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Expected {
    pub final_latents: String,
    pub decoded: String,
    pub image_hwc01: String,
    pub init_latents_scaled: String,
    pub noisy_latents: String,
    pub prompt_embeds: String,
    pub vae_moments: String,
    #[serde(default)]
    pub add_text_embeds: Option<String>,
    pub steps: Vec<ExpectedStep>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedStep {
    pub t: f64,
    pub unet_input: String,
    pub unet_output: String,
    pub latents_after: String,
}

/// Max and mean absolute difference.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Diff {
    pub max_abs: f64,
    pub mean_abs: f64,
}

/// One compared quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub diff: Diff,
    /// `None`: reported, not gated (the reference gives no tolerance for it).
    pub atol: Option<f64>,
    pub pass: bool,
}

/// The result of one case (one JSON line of `diffusion-ref`).
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub case: String,
    pub family: String,
    pub final_latents: Diff,
    pub final_latents_atol: f64,
    pub image: Diff,
    pub image_atol: f64,
    pub pass: bool,
    /// Every gated or reported comparison (prompt embeds, init latents, steps, decode).
    pub checks: Vec<Check>,
}

pub fn diff(a: &Tensor, b: &Tensor) -> Result<Diff> {
    if a.dims() != b.dims() {
        return Err(DiffusionError::Reference(format!(
            "shape {:?} vs reference {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .flatten_all()?;
    Ok(Diff {
        max_abs: d.max(0)?.to_scalar::<f64>()?,
        mean_abs: d.mean(0)?.to_scalar::<f64>()?,
    })
}

pub fn read_npy(path: &Path) -> Result<Tensor> {
    Tensor::read_npy(path)
        .map_err(|e| DiffusionError::Reference(format!("{}: {e}", path.display())))
}

/// The exact-GELU tolerance the reference suggests for a quantity.
fn atol(tol: &HashMap<String, Value>, key: &str) -> Option<f64> {
    tol.get(key)?
        .get("suggested_atol")?
        .get("exact_gelu")?
        .as_f64()
}

/// Reference runner: models are loaded once per folder.
pub struct Runner {
    root: PathBuf,
    device: Device,
    models: HashMap<String, DiffusionModel>,
}

impl Runner {
    pub fn new(cases_json: &Path, device: Device) -> Result<(Self, CasesFile)> {
        let text = std::fs::read_to_string(cases_json).map_err(|source| DiffusionError::Io {
            path: cases_json.to_path_buf(),
            source,
        })?;
        let file: CasesFile = serde_json::from_str(&text)
            .map_err(|e| DiffusionError::Reference(format!("{}: {e}", cases_json.display())))?;
        let root = cases_json
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok((
            Self {
                root,
                device,
                models: HashMap::new(),
            },
            file,
        ))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn npy(&self, rel: &str) -> Result<Tensor> {
        read_npy(&self.path(rel))?
            .to_device(&self.device)
            .map_err(Into::into)
    }

    pub fn model(&mut self, model_dir: &str, family: &str) -> Result<&DiffusionModel> {
        if !self.models.contains_key(model_dir) {
            let family: Family = family.parse()?;
            let m = DiffusionModel::load(
                &self.path(model_dir),
                family,
                None,
                &self.device,
                DType::F32,
            )?;
            self.models.insert(model_dir.to_string(), m);
        }
        self.models
            .get(model_dir)
            .ok_or_else(|| DiffusionError::Reference(format!("model {model_dir} not loaded")))
    }

    /// Runs one case with its own token ids, scheduler, strength and noise.
    pub fn run_case(&mut self, case: &Case) -> Result<(Img2ImgOutput, CaseReport)> {
        let image = self.npy(&case.image)?;
        let noise_of = |name: &str| -> Result<Tensor> {
            let rel = case.noise.get(name).ok_or_else(|| {
                DiffusionError::Reference(format!("{}: no noise {name}", case.name))
            })?;
            self.npy(rel)
        };
        let vae = noise_of("vae_sample")?;
        let init = noise_of("init_noise")?;
        let mut steps = Vec::new();
        for name in case
            .noise_call_order
            .iter()
            .filter(|n| n.starts_with("step_noise_"))
        {
            steps.push(noise_of(name)?);
        }
        let noise = Img2ImgNoise { vae, init, steps };
        let scheduler = SchedulerConfig::from_value(
            &self.path("cases.json"),
            &case.scheduler.cls,
            &case.scheduler.config,
        )?;
        let ids =
            |m: &HashMap<String, Vec<u32>>, k: &str| -> Option<Vec<u32>> { m.get(k).cloned() };
        let cond_ids = ids(&case.token_ids, "tokenizer")
            .ok_or_else(|| DiffusionError::Reference(format!("{}: no token ids", case.name)))?;
        let cond_ids_2 = ids(&case.token_ids, "tokenizer_2");
        let expected_prompt = self.npy(&case.expected.prompt_embeds)?;
        let expected_decoded = self.npy(&case.expected.decoded)?;
        let expected_image = self.npy(&case.expected.image_hwc01)?;
        let expected_final = self.npy(&case.expected.final_latents)?;
        let expected_init = self.npy(&case.expected.init_latents_scaled)?;
        let expected_noisy = self.npy(&case.expected.noisy_latents)?;
        let expected_moments = self.npy(&case.expected.vae_moments)?;
        let mut expected_steps = Vec::new();
        for s in &case.expected.steps {
            expected_steps.push((s.t, self.npy(&s.unet_output)?, self.npy(&s.latents_after)?));
        }
        let (_, _, h, w) = image.dims4()?;
        let model = self.model(&case.model_dir, &case.family)?;
        let cond = model.encode_ids(&cond_ids, cond_ids_2.as_deref())?;
        let cfg = case.guidance_scale > 1.0;
        let uncond = if !cfg {
            None
        } else if case.negative_prompt.is_none()
            && model.is_sdxl()
            && model.force_zeros_for_empty_prompt
        {
            Some(model.empty_negative()?)
        } else {
            let neg: HashMap<String, Vec<u32>> = case
                .negative_token_ids
                .clone()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| {
                    DiffusionError::Reference(format!(
                        "{}: guidance without negative token ids",
                        case.name
                    ))
                })?;
            let neg = &neg;
            let n1 = ids(neg, "tokenizer").ok_or_else(|| {
                DiffusionError::Reference(format!("{}: no negative ids", case.name))
            })?;
            Some(model.encode_ids(&n1, ids(neg, "tokenizer_2").as_deref())?)
        };
        let time_ids = case
            .sdxl
            .as_ref()
            .and_then(|s| s.add_time_ids.last())
            .map(|v| {
                let mut a = [0f32; 6];
                for (d, s) in a.iter_mut().zip(v) {
                    *d = *s;
                }
                a
            });
        let time_ids = match (model.is_sdxl(), time_ids) {
            (true, None) => Some([h as f32 * 8.0, w as f32 * 8.0, 0.0, 0.0, h as f32, w as f32]),
            (_, t) => t,
        };
        let req = Img2Img {
            cond: &cond,
            uncond: uncond.as_ref(),
            guidance: case.guidance_scale,
            scheduler: &scheduler,
            steps: case.num_inference_steps,
            schedule: match &case.t_index_list {
                Some(l) => StepSelection::TIndexList(l.clone()),
                None => StepSelection::Strength(case.strength),
            },
            time_ids,
        };
        let out = model.img2img(&image, &req, &noise, true)?;

        let mut checks = Vec::new();
        let tol = &case.tolerance;
        let mut check =
            |what: &str, got: &Tensor, want: &Tensor, atol: Option<f64>| -> Result<Diff> {
                let d = diff(got, want)?;
                checks.push(Check {
                    what: what.to_string(),
                    diff: d,
                    atol,
                    pass: atol.is_none_or(|a| d.max_abs <= a),
                });
                Ok(d)
            };
        if out.timesteps_used != case.timesteps_used {
            return Err(DiffusionError::Reference(format!(
                "{}: timesteps {:?}, reference {:?}",
                case.name, out.timesteps_used, case.timesteps_used
            )));
        }
        let embeds = match &uncond {
            Some(u) => Tensor::cat(&[&u.context, &cond.context], 0)?,
            None => cond.context.clone(),
        };
        check(
            "prompt_embeds",
            &embeds,
            &expected_prompt,
            atol(tol, "prompt_embeds"),
        )?;
        check("vae_moments", &out.moments, &expected_moments, None)?;
        check(
            "init_latents_scaled",
            &out.init_latents_scaled,
            &expected_init,
            atol(tol, "init_latents_scaled"),
        )?;
        check("noisy_latents", &out.noisy_latents, &expected_noisy, None)?;
        for (k, ((_, want_out, want_lat), got)) in expected_steps.iter().zip(&out.steps).enumerate()
        {
            check(
                &format!("step{k}_unet_output"),
                &got.unet_output,
                want_out,
                None,
            )?;
            check(&format!("step{k}_latents"), &got.latents, want_lat, None)?;
        }
        let fl_atol = atol(tol, "final_latents").unwrap_or(0.0);
        let im_atol = atol(tol, "image").unwrap_or(0.0);
        let final_latents = check(
            "final_latents",
            &out.final_latents,
            &expected_final,
            Some(fl_atol),
        )?;
        check(
            "decoded",
            &out.decoded,
            &expected_decoded,
            atol(tol, "decoded"),
        )?;
        let image_hwc = out.image01.squeeze(0)?.permute((1, 2, 0))?;
        let image = check("image", &image_hwc, &expected_image, Some(im_atol))?;
        if out.steps.len() != expected_steps.len() {
            return Err(DiffusionError::Reference(format!(
                "{}: ran {} steps, reference {}",
                case.name,
                out.steps.len(),
                expected_steps.len()
            )));
        }
        let pass = checks.iter().all(|c| c.pass);
        let report = CaseReport {
            case: case.name.clone(),
            family: case.family.clone(),
            final_latents,
            final_latents_atol: fl_atol,
            image,
            image_atol: im_atol,
            pass,
            checks,
        };
        Ok((out, report))
    }
}
