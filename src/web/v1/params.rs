//! `/v1` stream params: Daydream's StreamDiffusion fields and our
//! neural-style pipeline, checked field by field from the raw JSON (so every
//! refusal names the field and says what is accepted, in our words), then
//! mapped onto the live style ([`StyleParams`]).
//!
//! What is applied and what is only kept:
//! - `model_id` picks the worker model: each accepted id maps to the model
//!   id a GPU node serves it under (`[[gpu.models]] id`, e.g.
//!   `stabilityai/sd-turbo` → `sd-turbo`) and its family in
//!   `gpu_node::diffusion::config::Family` (default steps and guidance).
//! - `prompt`, `negative_prompt`, `guidance_scale`, `seed`, `width`/`height`
//!   (the longer side becomes the processed size) are applied. A weighted
//!   `prompt` or `seed` list reaches the worker whole, with
//!   `prompt_interpolation_method` / `seed_interpolation_method` and
//!   `normalize_prompt_weights` / `normalize_seed_weights` (Daydream's
//!   defaults: linear, normalised): prompt embeddings are combined by their
//!   weighted sum (or slerp for two), seed noises likewise (a weighted sum is
//!   rescaled to unit variance, so normalising seed weights changes nothing
//!   there). The single `prompt`/`seed` of the style is the list's heaviest
//!   entry (what pages show).
//! - `t_index_list` runs exactly those indices of a `num_inference_steps`
//!   (default 50) schedule of the model family's scheduler, one model pass
//!   each (a repeated index runs once); without it the family's default steps
//!   run over the whole schedule.
//! - The similar-image-filter fields apply per stream: when any is given the
//!   stream's filter is on if `enable_similar_image_filter` is true (Daydream's
//!   default is off), with `similar_image_filter_threshold` (default 0.98) and
//!   `similar_image_filter_max_skip_frame` (default 10); when none is given the
//!   GPU node's own setting (`similar_frame_threshold`) applies. The similarity
//!   measure is ours (32×32 thumbnails), not StreamDiffusion's.
//! - `delta` is checked and kept (GET and `/status` show it), not applied.
//! - `pipeline: "neural-style"`: `style` (a preset name, index or blend such
//!   as `3:0.5,12:0.5`), `strength` (0–1), `preserve_color`.

use dreamstream_actors::style::{
    self as wire, DiffusionParams, ProcessorKind, SimilarImageFilter, StyleParams, StyleSource,
    Weighted,
};
use gpu_node::diffusion::config::Family;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Daydream's pipeline (img2img diffusion).
pub const STREAMDIFFUSION: &str = "streamdiffusion";
/// Our own pipeline: the 26-style network.
pub const NEURAL_STYLE: &str = "neural-style";

/// Daydream's `model_id`s we run: (id, the worker model id, its family).
pub const DIFFUSION_MODELS: [(&str, &str, Family); 7] = [
    ("stabilityai/sd-turbo", "sd-turbo", Family::SdTurbo),
    ("stabilityai/sdxl-turbo", "sdxl-turbo", Family::SdxlTurbo),
    (
        "ByteDance/SDXL-Lightning",
        "sdxl-lightning",
        Family::SdxlLightning,
    ),
    (
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "sd15",
        Family::Sd15,
    ),
    ("runwayml/stable-diffusion-v1-5", "sd15", Family::Sd15),
    ("Lykon/dreamshaper-8", "dreamshaper-8", Family::Sd15),
    ("prompthero/openjourney-v4", "openjourney-v4", Family::Sd15),
];

/// The `model_id` of the neural-style pipeline (optional there).
pub const NEURAL_STYLE_MODEL: &str = "dreamstream/neural-style";

/// The prompt a diffusion stream gets when it is created without one.
pub const DEFAULT_PROMPT: &str = "a dreamy oil painting, vivid colours";

const MAX_TEXT: usize = 500;
const MAX_WEIGHTED: usize = 8;
/// Daydream's integers are JavaScript-safe.
const MAX_SEED: u64 = 9_007_199_254_740_991;

/// A text prompt, or a weighted list of `[text, weight]` pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Weighted(Vec<(String, f64)>),
}

/// A seed, or a weighted list of `[seed, weight]` pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Seed {
    One(u64),
    Weighted(Vec<(u64, f64)>),
}

/// The pipelines (the schema of `pipeline` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    /// Daydream's img2img diffusion.
    Streamdiffusion,
    /// Our 26-style network.
    NeuralStyle,
}

/// How to move between weighted prompts or seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Linear,
    Slerp,
}

/// A stream's params as stored and answered: the fields the client set,
/// checked. Which apply to the picture is said in this module's doc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// `stabilityai/sd-turbo`, `stabilityai/sdxl-turbo`,
    /// `ByteDance/SDXL-Lightning`, an SD 1.5 id, or (neural-style)
    /// `dreamstream/neural-style`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Text (1–500 characters) or up to 8 `[text, weight]` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_interpolation_method: Option<Interpolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize_prompt_weights: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize_seed_weights: Option<bool>,
    /// At most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// 0 to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 30)]
    pub guidance_scale: Option<f64>,
    /// 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub delta: Option<f64>,
    /// 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub num_inference_steps: Option<u32>,
    /// 1 to 4 non-decreasing step indices within `num_inference_steps`
    /// (default 50); their number is the diffusion steps per frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 4)]
    pub t_index_list: Option<Vec<u32>>,
    /// 0 to 2^53 − 1, or up to 8 `[seed, weight]` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_interpolation_method: Option<Interpolation>,
    /// 384 to 1024, a multiple of 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 384, maximum = 1024, multiple_of = 64)]
    pub width: Option<u32>,
    /// 384 to 1024, a multiple of 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 384, maximum = 1024, multiple_of = 64)]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_similar_image_filter: Option<bool>,
    /// 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub similar_image_filter_threshold: Option<f64>,
    /// 0 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub similar_image_filter_max_skip_frame: Option<u32>,
    /// neural-style: a preset name (`Starry Swirl`), index (`19`) or blend
    /// (`3:0.5,12:0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// neural-style: 0 (the camera) to 1 (fully restyled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub strength: Option<f64>,
    /// neural-style: keep the camera's colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_color: Option<bool>,
}

/// A refused field: its path (`params.guidance_scale`) and what is accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Fields only the diffusion pipeline reads.
const DIFFUSION_ONLY: [&str; 12] = [
    "prompt",
    "prompt_interpolation_method",
    "normalize_prompt_weights",
    "normalize_seed_weights",
    "negative_prompt",
    "guidance_scale",
    "delta",
    "num_inference_steps",
    "t_index_list",
    "seed",
    "seed_interpolation_method",
    "model_id",
];
/// Fields only the neural-style pipeline reads.
const NEURAL_ONLY: [&str; 3] = ["style", "strength", "preserve_color"];
/// Fields both read.
const COMMON: [&str; 5] = [
    "width",
    "height",
    "enable_similar_image_filter",
    "similar_image_filter_threshold",
    "similar_image_filter_max_skip_frame",
];

/// Checks a pipeline name.
pub fn check_pipeline(field: &str, v: &Value) -> Result<&'static str, Invalid> {
    match v.as_str() {
        Some(STREAMDIFFUSION) => Ok(STREAMDIFFUSION),
        Some(NEURAL_STYLE) => Ok(NEURAL_STYLE),
        _ => Err(Invalid::new(
            field,
            format!("{field} must be \"{STREAMDIFFUSION}\" or \"{NEURAL_STYLE}\""),
        )),
    }
}

fn number(field: &str, v: &Value, min: f64, max: f64) -> Result<f64, Invalid> {
    match v.as_f64() {
        Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(x),
        Some(_) => Err(Invalid::new(
            field,
            format!("{field} must be a number from {min} to {max}"),
        )),
        None => Err(Invalid::new(field, format!("{field} must be a number"))),
    }
}

fn integer(field: &str, v: &Value, min: u64, max: u64) -> Result<u64, Invalid> {
    if let Some(x) = v.as_u64()
        && (min..=max).contains(&x)
    {
        return Ok(x);
    }
    let whole = v.as_i64().is_some() || v.as_u64().is_some();
    if whole
        || v.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
    {
        Err(Invalid::new(
            field,
            format!("{field} must be a whole number from {min} to {max}"),
        ))
    } else {
        Err(Invalid::new(
            field,
            format!("{field} must be a whole number"),
        ))
    }
}

fn boolean(field: &str, v: &Value) -> Result<bool, Invalid> {
    v.as_bool()
        .ok_or_else(|| Invalid::new(field, format!("{field} must be true or false")))
}

fn text(field: &str, v: &Value, min: usize, max: usize) -> Result<String, Invalid> {
    let Some(s) = v.as_str() else {
        return Err(Invalid::new(field, format!("{field} must be a string")));
    };
    let s = s.trim();
    let n = s.chars().count();
    if n < min || n > max {
        return Err(Invalid::new(
            field,
            format!("{field} must be {min} to {max} characters, got {n}"),
        ));
    }
    Ok(s.to_string())
}

fn weight(field: &str, v: &Value) -> Result<f64, Invalid> {
    number(field, v, 0.0, 1000.0)
}

fn pairs<'a>(field: &str, v: &'a Value) -> Result<&'a [Value], Invalid> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() || list.len() > MAX_WEIGHTED {
        return Err(Invalid::new(
            field,
            format!("{field} must have 1 to {MAX_WEIGHTED} [value, weight] pairs"),
        ));
    }
    for (i, pair) in list.iter().enumerate() {
        if pair.as_array().is_none_or(|p| p.len() != 2) {
            return Err(Invalid::new(
                format!("{field}[{i}]"),
                format!("{field}[{i}] must be a [value, weight] pair"),
            ));
        }
    }
    Ok(list)
}

fn prompt(field: &str, v: &Value) -> Result<Prompt, Invalid> {
    if v.is_string() {
        return Ok(Prompt::Text(text(field, v, 1, MAX_TEXT)?));
    }
    if !v.is_array() {
        return Err(Invalid::new(
            field,
            format!("{field} must be a string or a list of [text, weight] pairs"),
        ));
    }
    let mut out = Vec::new();
    for (i, pair) in pairs(field, v)?.iter().enumerate() {
        out.push((
            text(&format!("{field}[{i}][0]"), &pair[0], 1, MAX_TEXT)?,
            weight(&format!("{field}[{i}][1]"), &pair[1])?,
        ));
    }
    if out.iter().all(|(_, w)| *w == 0.0) {
        return Err(Invalid::new(
            field,
            format!("{field} needs at least one positive weight"),
        ));
    }
    Ok(Prompt::Weighted(out))
}

fn seed(field: &str, v: &Value) -> Result<Seed, Invalid> {
    if !v.is_array() {
        return Ok(Seed::One(integer(field, v, 0, MAX_SEED)?));
    }
    let mut out = Vec::new();
    for (i, pair) in pairs(field, v)?.iter().enumerate() {
        out.push((
            integer(&format!("{field}[{i}][0]"), &pair[0], 0, MAX_SEED)?,
            weight(&format!("{field}[{i}][1]"), &pair[1])?,
        ));
    }
    if out.iter().all(|(_, w)| *w == 0.0) {
        return Err(Invalid::new(
            field,
            format!("{field} needs at least one positive weight"),
        ));
    }
    Ok(Seed::Weighted(out))
}

fn interpolation(field: &str, v: &Value) -> Result<Interpolation, Invalid> {
    match v.as_str() {
        Some("linear") => Ok(Interpolation::Linear),
        Some("slerp") => Ok(Interpolation::Slerp),
        _ => Err(Invalid::new(
            field,
            format!("{field} must be \"linear\" or \"slerp\""),
        )),
    }
}

fn side(field: &str, v: &Value) -> Result<u32, Invalid> {
    let n = integer(field, v, 384, 1024)?;
    if n % 64 != 0 {
        return Err(Invalid::new(
            field,
            format!("{field} must be a multiple of 64 from 384 to 1024"),
        ));
    }
    Ok(n as u32)
}

fn style(field: &str, v: &Value) -> Result<String, Invalid> {
    let spec = match v {
        Value::Number(_) => integer(field, v, 0, 25)?.to_string(),
        Value::String(_) => text(field, v, 1, 200)?,
        _ => {
            return Err(Invalid::new(
                field,
                format!("{field} must be a preset name, index or blend"),
            ));
        }
    };
    crate::web::api::parse_style(&spec)
        .map_err(|e| Invalid::new(field, format!("{field}: {e}")))?;
    Ok(spec)
}

/// The worker model and family of a diffusion `model_id`.
pub fn diffusion_model(model_id: &str) -> Option<(&'static str, Family)> {
    DIFFUSION_MODELS
        .iter()
        .find(|(id, _, _)| *id == model_id)
        .map(|&(_, worker, family)| (worker, family))
}

/// Applies the fields of `obj` (the JSON object at `at`, e.g. `params`) onto
/// `into`, each checked; `null` clears a field. Fields of the other
/// pipeline, and unknown fields, are refused by name.
pub fn merge(
    pipeline: &str,
    at: &str,
    obj: &Value,
    into: &mut StreamParams,
) -> Result<(), Invalid> {
    let Some(obj): Option<&Map<String, Value>> = obj.as_object() else {
        return Err(Invalid::new(at, format!("{at} must be an object")));
    };
    for (key, v) in obj {
        let field = format!("{at}.{key}");
        let known = DIFFUSION_ONLY.contains(&key.as_str())
            || NEURAL_ONLY.contains(&key.as_str())
            || COMMON.contains(&key.as_str());
        if !known {
            return Err(Invalid::new(
                &field,
                format!("{field} is not a parameter this server knows"),
            ));
        }
        let other = if pipeline == NEURAL_STYLE {
            DIFFUSION_ONLY.contains(&key.as_str()) && key != "model_id"
        } else {
            NEURAL_ONLY.contains(&key.as_str())
        };
        if other {
            return Err(Invalid::new(
                &field,
                format!("{field} is not a parameter of the {pipeline} pipeline"),
            ));
        }
        let clear = v.is_null();
        macro_rules! set {
            ($slot:expr, $parse:expr) => {
                $slot = if clear { None } else { Some($parse?) }
            };
        }
        match key.as_str() {
            "model_id" => {
                set!(into.model_id, model_id(pipeline, &field, v));
            }
            "prompt" => set!(into.prompt, prompt(&field, v)),
            "prompt_interpolation_method" => {
                set!(into.prompt_interpolation_method, interpolation(&field, v))
            }
            "normalize_prompt_weights" => set!(into.normalize_prompt_weights, boolean(&field, v)),
            "normalize_seed_weights" => set!(into.normalize_seed_weights, boolean(&field, v)),
            "negative_prompt" => set!(into.negative_prompt, text(&field, v, 0, MAX_TEXT)),
            "guidance_scale" => set!(into.guidance_scale, number(&field, v, 0.0, 30.0)),
            "delta" => set!(into.delta, number(&field, v, 0.0, 1.0)),
            "num_inference_steps" => set!(
                into.num_inference_steps,
                integer(&field, v, 1, 100).map(|n| n as u32)
            ),
            "t_index_list" => set!(into.t_index_list, t_index_list(&field, v)),
            "seed" => set!(into.seed, seed(&field, v)),
            "seed_interpolation_method" => {
                set!(into.seed_interpolation_method, interpolation(&field, v))
            }
            "width" => set!(into.width, side(&field, v)),
            "height" => set!(into.height, side(&field, v)),
            "enable_similar_image_filter" => {
                set!(into.enable_similar_image_filter, boolean(&field, v))
            }
            "similar_image_filter_threshold" => set!(
                into.similar_image_filter_threshold,
                number(&field, v, 0.0, 1.0)
            ),
            "similar_image_filter_max_skip_frame" => set!(
                into.similar_image_filter_max_skip_frame,
                integer(&field, v, 0, 1000).map(|n| n as u32)
            ),
            "style" => set!(into.style, style(&field, v)),
            "strength" => set!(into.strength, number(&field, v, 0.0, 1.0)),
            "preserve_color" => set!(into.preserve_color, boolean(&field, v)),
            _ => unreachable!("every known field is matched above"),
        }
    }
    Ok(())
}

fn model_id(pipeline: &str, field: &str, v: &Value) -> Result<String, Invalid> {
    let Some(id) = v.as_str() else {
        return Err(Invalid::new(field, format!("{field} must be a string")));
    };
    if pipeline == NEURAL_STYLE {
        if id == NEURAL_STYLE_MODEL {
            return Ok(id.to_string());
        }
        return Err(Invalid::new(
            field,
            format!("{field} of the {NEURAL_STYLE} pipeline is \"{NEURAL_STYLE_MODEL}\""),
        ));
    }
    if diffusion_model(id).is_some() {
        return Ok(id.to_string());
    }
    let known: Vec<&str> = DIFFUSION_MODELS.iter().map(|(id, _, _)| *id).collect();
    Err(Invalid::new(
        field,
        format!("{field} must be one of {}", known.join(", ")),
    ))
}

fn t_index_list(field: &str, v: &Value) -> Result<Vec<u32>, Invalid> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if !v.is_array() || list.is_empty() || list.len() > 4 {
        return Err(Invalid::new(
            field,
            format!("{field} must be a list of 1 to 4 step indices"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, x) in list.iter().enumerate() {
        out.push(integer(&format!("{field}[{i}]"), x, 0, 100)? as u32);
    }
    Ok(out)
}

/// The checks between fields, once all are merged: a diffusion stream has a
/// known `model_id`; `t_index_list` is non-decreasing and within
/// `num_inference_steps`.
pub fn check_whole(pipeline: &str, at: &str, p: &StreamParams) -> Result<(), Invalid> {
    if pipeline == STREAMDIFFUSION && p.model_id.is_none() {
        return Err(Invalid::new(
            format!("{at}.model_id"),
            format!("{at}.model_id is required for the {STREAMDIFFUSION} pipeline"),
        ));
    }
    if let Some(list) = &p.t_index_list {
        let steps = p.num_inference_steps.unwrap_or(50);
        let field = format!("{at}.t_index_list");
        if list.windows(2).any(|w| w[0] > w[1]) {
            return Err(Invalid::new(&field, format!("{field} must not decrease")));
        }
        if list.iter().any(|&t| t >= steps) {
            return Err(Invalid::new(
                &field,
                format!("{field} entries must be below num_inference_steps ({steps})"),
            ));
        }
    }
    Ok(())
}

/// Daydream's similar-image-filter defaults.
const DEFAULT_FILTER_THRESHOLD: f32 = 0.98;
const DEFAULT_FILTER_MAX_SKIP: u32 = 10;
/// Daydream's `num_inference_steps` default (the schedule a `t_index_list` indexes).
const DEFAULT_SCHEDULE_STEPS: u32 = 50;

fn wire_interpolation(i: Option<Interpolation>) -> wire::Interpolation {
    match i {
        Some(Interpolation::Slerp) => wire::Interpolation::Slerp,
        Some(Interpolation::Linear) | None => wire::Interpolation::Linear,
    }
}

/// A weighted list as the worker takes it.
fn weighted<T: Clone>(
    list: &[(T, f64)],
    interpolation: Option<Interpolation>,
    normalize: Option<bool>,
) -> Weighted<T> {
    Weighted {
        items: list.iter().map(|(v, w)| (v.clone(), *w as f32)).collect(),
        interpolation: wire_interpolation(interpolation),
        normalize: normalize.unwrap_or(true),
    }
}

/// The stream's own similar-image filter, when the client set any of its fields.
fn similar_image_filter(p: &StreamParams) -> Option<SimilarImageFilter> {
    if p.enable_similar_image_filter.is_none()
        && p.similar_image_filter_threshold.is_none()
        && p.similar_image_filter_max_skip_frame.is_none()
    {
        return None;
    }
    Some(SimilarImageFilter {
        enabled: p.enable_similar_image_filter.unwrap_or(false),
        threshold: p
            .similar_image_filter_threshold
            .map_or(DEFAULT_FILTER_THRESHOLD, |t| t as f32),
        max_skip_frames: p
            .similar_image_filter_max_skip_frame
            .unwrap_or(DEFAULT_FILTER_MAX_SKIP),
    })
}

/// The live style these params give, over the server's defaults (`base`:
/// its processed size and JPEG quality).
pub fn to_style(
    pipeline: &str,
    p: &StreamParams,
    base: &StyleParams,
) -> Result<StyleParams, Invalid> {
    let mut style = base.clone();
    if let Some(side) = p.width.into_iter().chain(p.height).max() {
        style.max_side = side;
    }
    style.similar_image_filter = similar_image_filter(p);
    if pipeline == NEURAL_STYLE {
        style.processor = ProcessorKind::NeuralStyle;
        if let Some(spec) = &p.style {
            let mix = crate::web::api::parse_style(spec)
                .map_err(|e| Invalid::new("params.style", format!("params.style: {e}")))?;
            style.source = StyleSource::Preset { mix };
        }
        if let Some(s) = p.strength {
            style.strength = s as f32;
        }
        if let Some(c) = p.preserve_color {
            style.preserve_color = c;
        }
    } else {
        let id = p.model_id.as_deref().unwrap_or_default();
        let (worker_model, family) = diffusion_model(id).ok_or_else(|| {
            Invalid::new(
                "params.model_id",
                "params.model_id is not a model this server runs",
            )
        })?;
        let (prompt, blend) = match &p.prompt {
            Some(Prompt::Text(t)) => (t.clone(), None),
            Some(Prompt::Weighted(list)) => {
                let b = weighted(
                    list,
                    p.prompt_interpolation_method,
                    p.normalize_prompt_weights,
                );
                (b.heaviest().cloned().unwrap_or_default(), Some(b))
            }
            None => (DEFAULT_PROMPT.to_string(), None),
        };
        let (seed, seeds) = match &p.seed {
            Some(Seed::One(s)) => (*s, None),
            Some(Seed::Weighted(list)) => {
                let b = weighted(list, p.seed_interpolation_method, p.normalize_seed_weights);
                (b.heaviest().copied().unwrap_or(42), Some(b))
            }
            None => (DiffusionParams::default().seed, None),
        };
        // With a t_index_list, `steps` is the schedule's length and the list the passes.
        let steps = match &p.t_index_list {
            Some(_) => p.num_inference_steps.unwrap_or(DEFAULT_SCHEDULE_STEPS),
            None => family.default_steps() as u32,
        };
        style.processor = ProcessorKind::Diffusion;
        style.source = StyleSource::Prompt {
            prompt,
            negative_prompt: p.negative_prompt.clone().filter(|n| !n.is_empty()),
            blend,
        };
        style.diffusion = DiffusionParams {
            model: Some(worker_model.to_string()),
            steps,
            seed,
            guidance: p.guidance_scale.unwrap_or(family.default_guidance()) as f32,
            seeds,
            t_index_list: p.t_index_list.clone(),
        };
    }
    style.stamp_version();
    style
        .validate()
        .map_err(|e| Invalid::new("params", format!("params: {e}")))?;
    Ok(style)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(pipeline: &str, v: Value) -> Result<StreamParams, Invalid> {
        let mut p = StreamParams::default();
        merge(pipeline, "params", &v, &mut p)?;
        check_whole(pipeline, "params", &p)?;
        Ok(p)
    }

    #[test]
    fn refusals_name_the_field() {
        let e = parse(STREAMDIFFUSION, json!({"model_id": "x/y"})).unwrap_err();
        assert_eq!(e.field, "params.model_id");
        let e = parse(
            STREAMDIFFUSION,
            json!({"model_id": "stabilityai/sd-turbo", "guidance_scale": 31}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "params.guidance_scale must be a number from 0 to 30"
        );
        let e = parse(
            STREAMDIFFUSION,
            json!({"model_id": "stabilityai/sd-turbo", "bogus": 1}),
        )
        .unwrap_err();
        assert_eq!(e.field, "params.bogus");
        let e = parse(
            STREAMDIFFUSION,
            json!({"model_id": "stabilityai/sd-turbo", "prompt": [["a", 1], ["b", "x"]]}),
        )
        .unwrap_err();
        assert_eq!(e.field, "params.prompt[1][1]");
        let e = parse(NEURAL_STYLE, json!({"prompt": "a cat"})).unwrap_err();
        assert_eq!(e.field, "params.prompt");
        let e = parse(
            STREAMDIFFUSION,
            json!({"model_id": "stabilityai/sd-turbo", "t_index_list": [30, 10]}),
        )
        .unwrap_err();
        assert_eq!(e.message, "params.t_index_list must not decrease");
        let e = parse(STREAMDIFFUSION, json!({"width": 500})).unwrap_err();
        assert_eq!(e.field, "params.width");
    }

    #[test]
    fn diffusion_params_reach_the_style_whole() {
        let p = parse(
            STREAMDIFFUSION,
            json!({
                "model_id": "ByteDance/SDXL-Lightning",
                "prompt": [["a fox", 0.2], ["a castle", 0.8]],
                "seed": [[7, 0.9], [8, 0.1]],
                "seed_interpolation_method": "slerp",
                "normalize_prompt_weights": false,
                "t_index_list": [10, 20, 30],
                "width": 768, "height": 512,
                "enable_similar_image_filter": true,
                "similar_image_filter_threshold": 0.9,
            }),
        )
        .unwrap();
        let base = StyleParams::preset(dreamstream_actors::style::PresetMix::single(0).unwrap());
        let s = to_style(STREAMDIFFUSION, &p, &base).unwrap();
        assert_eq!(s.processor, ProcessorKind::Diffusion);
        assert_eq!(s.version, 2, "blends need version 2");
        assert_eq!(s.diffusion.model.as_deref(), Some("sdxl-lightning"));
        // The t_index_list indexes a 50-step schedule (num_inference_steps' default).
        assert_eq!(s.diffusion.steps, 50);
        assert_eq!(s.diffusion.t_index_list, Some(vec![10, 20, 30]));
        assert_eq!(s.diffusion.seed, 7);
        let seeds = s.diffusion.seeds.as_ref().unwrap();
        assert_eq!(seeds.items, vec![(7, 0.9), (8, 0.1)]);
        assert_eq!(seeds.interpolation, wire::Interpolation::Slerp);
        assert!(seeds.normalize);
        assert_eq!(s.max_side, 768);
        let StyleSource::Prompt { prompt, blend, .. } = &s.source else {
            panic!("a prompt style: {:?}", s.source);
        };
        assert_eq!(prompt, "a castle", "the heaviest is the one pages show");
        let blend = blend.as_ref().unwrap();
        assert_eq!(
            blend.items,
            vec![("a fox".to_string(), 0.2), ("a castle".to_string(), 0.8)]
        );
        assert_eq!(blend.interpolation, wire::Interpolation::Linear);
        assert!(!blend.normalize);
        assert_eq!(
            s.similar_image_filter,
            Some(SimilarImageFilter {
                enabled: true,
                threshold: 0.9,
                max_skip_frames: 10
            })
        );
        // Plain params stay version 1 (older workers take them) and leave the
        // filter to the GPU node.
        let p = parse(
            STREAMDIFFUSION,
            json!({"model_id": "stabilityai/sd-turbo", "prompt": "a fox", "seed": 3}),
        )
        .unwrap();
        let s = to_style(STREAMDIFFUSION, &p, &base).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.diffusion.steps, 2);
        assert_eq!(
            (
                s.diffusion.seeds.as_ref(),
                s.diffusion.t_index_list.as_ref()
            ),
            (None, None)
        );
        assert_eq!(s.similar_image_filter, None);
    }

    #[test]
    fn neural_style_params_map_to_a_preset() {
        let p = parse(
            NEURAL_STYLE,
            json!({"style": "3:0.5,12:0.5", "strength": 0.5, "preserve_color": true}),
        )
        .unwrap();
        let base = StyleParams::preset(dreamstream_actors::style::PresetMix::single(0).unwrap());
        let s = to_style(NEURAL_STYLE, &p, &base).unwrap();
        assert_eq!(s.processor, ProcessorKind::NeuralStyle);
        assert_eq!(s.strength, 0.5);
        assert!(s.preserve_color);
    }
}
