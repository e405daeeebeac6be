//! Euler, Euler-ancestral and DDIM schedulers with diffusers' exact timesteps,
//! taking every noise tensor from the caller.
//!
//! Why our own: candle has no (non-ancestral) Euler, its Euler-ancestral draws
//! noise from an unseedable RNG, and its trailing spacing uses an integer step
//! ratio (4 timesteps for n = 3). Here the timesteps follow diffusers'
//! `set_timesteps` formulas in float64 with numpy's rounding (half to even), the
//! betas/alphas/sigmas are float32 like diffusers' tensors (cumprod accumulated
//! in float64 as torch does on CPU), and scalar arithmetic follows diffusers'
//! order so results agree to float32 noise.
//!
//! Steps are addressed by index into [`Scheduler::timesteps`]: img2img with
//! strength runs indices `t_start..n` (diffusers' `set_begin_index`), and a
//! StreamDiffusion-style `t_index_list` runs any increasing subset.

use candle_core::Tensor;

use super::config::{
    BetaSchedule, PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing,
};
use super::{DiffusionError, Result};

pub struct Scheduler {
    config: SchedulerConfig,
    n: usize,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f64>,
    /// Euler family: sigma per timestep, then a final 0.
    sigmas: Vec<f32>,
}

/// numpy's `arange(start, stop, step)` for a negative step (length = ceil((stop-start)/step)).
fn arange_desc(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// numpy's `linspace(start, stop, num)`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
    v[num - 1] = stop;
    v
}

/// torch's float32 `linspace` on CPU: the first half counted up from `start`,
/// the second half down from `end`, all in float32.
fn torch_linspace_f32(start: f64, end: f64, num: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if num == 1 {
        return vec![start];
    }
    let step = (end - start) / (num - 1) as f32;
    let half = num / 2;
    (0..num)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (num - i - 1) as f32
            }
        })
        .collect()
}

/// numpy's `interp(x, arange(len(fp)), fp)`.
fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let i = x.floor() as usize;
    let frac = x - i as f64;
    if frac == 0.0 {
        return fp[i] as f64;
    }
    let (a, b) = (fp[i] as f64, fp[i + 1] as f64);
    a + (b - a) * frac
}

fn scalar(x: f32, like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::new(x, like.device())?.to_dtype(like.dtype())?)
}

/// `t * x` with x a float32 scalar (exact float32 product).
fn mul(t: &Tensor, x: f32) -> Result<Tensor> {
    Ok(t.broadcast_mul(&scalar(x, t)?)?)
}

fn div(t: &Tensor, x: f32) -> Result<Tensor> {
    Ok(t.broadcast_div(&scalar(x, t)?)?)
}

impl Scheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let nt = config.num_train_timesteps;
        if steps == 0 || steps > nt {
            return Err(DiffusionError::StepsOutOfRange {
                steps,
                min: 1,
                max: nt,
            });
        }
        // betas as torch.linspace(..., dtype=float32) computes them: float32, from both ends.
        let betas: Vec<f32> = match config.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(config.beta_start, config.beta_end, nt),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), nt)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
        };
        let mut acc = 1f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|&b| {
                acc *= (1f32 - b) as f64;
                acc as f32
            })
            .collect();
        let nf = nt as f64;
        let n = steps as f64;
        let timesteps: Vec<f64> = match config.timestep_spacing {
            // diffusers' Euler schedulers keep these as float32; DDIM rounds them.
            TimestepSpacing::Linspace => linspace(0.0, nf - 1.0, steps)
                .into_iter()
                .rev()
                .map(|t| match config.kind {
                    SchedulerKind::Euler | SchedulerKind::EulerAncestral => t as f32 as f64,
                    SchedulerKind::Ddim => t.round_ties_even(),
                })
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = (nt / steps) as f64;
                (0..steps)
                    .rev()
                    .map(|i| (i as f64 * ratio).round_ties_even() + config.steps_offset as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => arange_desc(nf, 0.0, -(nf / n))
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect(),
        };
        if timesteps.iter().any(|&t| t < 0.0 || t > nf - 1.0) {
            return Err(DiffusionError::StepsOutOfRange {
                steps,
                min: 1,
                max: nt,
            });
        }
        let sigmas = match config.kind {
            SchedulerKind::Ddim => Vec::new(),
            _ => {
                let base: Vec<f32> = alphas_cumprod
                    .iter()
                    .map(|&a| ((1f32 - a) / a).sqrt())
                    .collect();
                let mut s: Vec<f32> = timesteps.iter().map(|&t| interp(t, &base) as f32).collect();
                s.push(0.0);
                s
            }
        };
        Ok(Self {
            config: config.clone(),
            n: steps,
            alphas_cumprod,
            timesteps,
            sigmas,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// All timesteps for this step count, noisiest first.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Euler family: sigma per timestep and a final 0 (empty for DDIM).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' img2img `get_timesteps`: the indices run for a strength.
    pub fn strength_indices(&self, strength: f64) -> Result<Vec<usize>> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(DiffusionError::StrengthOutOfRange(strength));
        }
        // Same float64 product and truncation as Python's int(n * strength).
        let init = ((self.n as f64 * strength) as usize).min(self.n);
        if init == 0 {
            return Err(DiffusionError::NoSteps {
                strength,
                steps: self.n,
            });
        }
        Ok((self.n - init..self.n).collect())
    }

    /// Checks a StreamDiffusion-style `t_index_list`.
    pub fn check_indices(&self, list: &[usize]) -> Result<()> {
        let ok = !list.is_empty()
            && list.windows(2).all(|w| w[0] < w[1])
            && list.iter().all(|&i| i < self.n);
        if ok {
            Ok(())
        } else {
            Err(DiffusionError::BadTIndexList {
                list: list.to_vec(),
                steps: self.n,
            })
        }
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i < self.n {
            Ok(())
        } else {
            Err(DiffusionError::BadTIndexList {
                list: vec![i],
                steps: self.n,
            })
        }
    }

    /// Noise the clean latents to the level of timestep index `i`.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        self.check_index(i)?;
        match self.config.kind {
            SchedulerKind::Ddim => {
                let a = self.alphas_cumprod[self.timesteps[i] as usize];
                Ok((mul(original, a.sqrt())? + mul(noise, (1f32 - a).sqrt())?)?)
            }
            _ => Ok((original + mul(noise, self.sigmas[i])?)?),
        }
    }

    /// The UNet's input at timestep index `i`.
    pub fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        self.check_index(i)?;
        match self.config.kind {
            SchedulerKind::Ddim => Ok(sample.clone()),
            _ => {
                let s = self.sigmas[i];
                div(sample, (s * s + 1f32).sqrt())
            }
        }
    }

    /// One denoising step from timestep index `i` to index `next` (`None`: to the end).
    /// `noise` is required by Euler-ancestral and ignored by the others.
    pub fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        next: Option<usize>,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.check_index(i)?;
        if let Some(j) = next {
            self.check_index(j)?;
        }
        let pred = self.config.prediction_type;
        match self.config.kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let sigma = self.sigmas[i];
                let sigma_next = match next {
                    Some(j) => self.sigmas[j],
                    None => 0.0,
                };
                let x0 = match pred {
                    PredictionType::Epsilon => (sample - mul(model_output, sigma)?)?,
                    PredictionType::VPrediction => {
                        let c = -sigma / (sigma * sigma + 1f32).sqrt();
                        (mul(model_output, c)? + div(sample, sigma * sigma + 1f32)?)?
                    }
                    PredictionType::Sample => model_output.clone(),
                };
                let derivative = div(&(sample - &x0)?, sigma)?;
                if self.config.kind == SchedulerKind::Euler {
                    // s_churn = 0: sigma_hat = sigma.
                    Ok((sample + mul(&derivative, sigma_next - sigma)?)?)
                } else {
                    let (from, to) = (sigma, sigma_next);
                    let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
                    let down = (to * to - up * up).sqrt();
                    let prev = (sample + mul(&derivative, down - sigma)?)?;
                    let noise = noise.ok_or_else(|| DiffusionError::NoiseShape {
                        name: format!("step_noise_{i}"),
                        expected: sample.dims().to_vec(),
                        got: vec![],
                    })?;
                    check_shape(&format!("step_noise_{i}"), noise, sample)?;
                    Ok((prev + mul(noise, up)?)?)
                }
            }
            SchedulerKind::Ddim => {
                let nt = self.config.num_train_timesteps;
                let t = self.timesteps[i] as i64;
                // diffusers: prev = t - N // n; a non-contiguous t_index_list goes to its next entry.
                let prev_t = match next {
                    Some(j) if j != i + 1 => self.timesteps[j] as i64,
                    _ => t - (nt / self.n) as i64,
                };
                let a_t = self.alphas_cumprod[t as usize];
                let a_prev = if prev_t >= 0 {
                    self.alphas_cumprod[prev_t as usize]
                } else if self.config.set_alpha_to_one {
                    1.0
                } else {
                    self.alphas_cumprod[0]
                };
                let b_t = 1f32 - a_t;
                let (x0, eps) = match pred {
                    PredictionType::Epsilon => (
                        div(&(sample - mul(model_output, b_t.sqrt())?)?, a_t.sqrt())?,
                        model_output.clone(),
                    ),
                    PredictionType::VPrediction => (
                        (mul(sample, a_t.sqrt())? - mul(model_output, b_t.sqrt())?)?,
                        (mul(model_output, a_t.sqrt())? + mul(sample, b_t.sqrt())?)?,
                    ),
                    PredictionType::Sample => (
                        model_output.clone(),
                        div(&(sample - mul(model_output, a_t.sqrt())?)?, b_t.sqrt())?,
                    ),
                };
                // eta = 0: no variance term.
                let direction = mul(&eps, (1f32 - a_prev).sqrt())?;
                Ok((mul(&x0, a_prev.sqrt())? + direction)?)
            }
        }
    }
}

pub(crate) fn check_shape(name: &str, got: &Tensor, like: &Tensor) -> Result<()> {
    if got.dims() != like.dims() {
        return Err(DiffusionError::NoiseShape {
            name: name.to_string(),
            expected: like.dims().to_vec(),
            got: got.dims().to_vec(),
        });
    }
    Ok(())
}
