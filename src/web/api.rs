//! The JSON API (streams, styles, scheduler, server) and the latest-frame image.
//! The operational calls (`/api/scheduler`, `/api/cluster`, `/api/server`)
//! are for administrators, the metrics token or `[ops] allow` ([`OpsAccess`]).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use dreamstream_actors::presets::{self, style_name};
use dreamstream_actors::store::EndReason;
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::style::{PresetMix, ProcessorKind, StyleSource};
use dreamstream_actors::{StyleError, Username};
use serde::Deserialize;

use super::AppState;
use super::auth::authorize_broadcast;
use super::errors::ApiError;
use super::ops::OpsAccess;

/// A change of a stream's live style; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StyleUpdate {
    /// A built-in style: index, blend (`3:0.5,12:0.5`) or name (`Starry Swirl`).
    pub style: Option<String>,
    pub strength: Option<f32>,
    pub preserve_color: Option<bool>,
    /// `"neural-style"` or `"diffusion"`; absent keeps the stream's processor
    /// (a preset `style` switches back to neural-style).
    pub processor: Option<String>,
    /// A text prompt (diffusion; neural-style workers map it to a preset).
    pub prompt: Option<String>,
    /// What the picture should not show (diffusion with guidance > 1); `""` clears it.
    pub negative_prompt: Option<String>,
    /// A model id a worker advertises (e.g. `sd-turbo`); `""` = the worker's default.
    pub model: Option<String>,
    /// Diffusion steps, 1 to 50.
    pub steps: Option<u32>,
    /// Classifier-free guidance, 0 to 30 (CFG when > 1).
    pub guidance: Option<f32>,
    pub seed: Option<u64>,
    /// The longer side of the processed frame in pixels.
    pub max_side: Option<u32>,
}

/// Longest accepted prompt and negative prompt, in characters.
const MAX_PROMPT_CHARS: usize = 500;
/// Longest accepted model id.
const MAX_MODEL_ID: usize = 64;

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

/// A model id as cluster.toml names them: letters, digits, `.`, `_`, `-`.
fn check_model_id(id: &str) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.len() > MAX_MODEL_ID || !id.chars().all(ok_char) {
        return Err(bad(format!(
            "model must be a model id of at most {MAX_MODEL_ID} letters, digits, '.', '_' or '-' \
             (e.g. \"sd-turbo\")"
        )));
    }
    Ok(())
}

/// Parses a style as users type it: a spec or a preset name.
pub fn parse_style(text: &str) -> Result<PresetMix, StyleError> {
    match presets::by_name(text) {
        Some(i) => PresetMix::single(i),
        None => PresetMix::parse(text),
    }
}

/// Validates and applies a style change; viewers get `style_changed`.
/// Every rejected field is a [`ApiError::BadRequest`] that says what is accepted.
pub fn apply_style(
    stream: &StreamShared,
    update: StyleUpdate,
    by: Option<String>,
) -> Result<String, ApiError> {
    let mut params = stream.settings();
    let processor = match update.processor.as_deref().map(str::trim) {
        None => None,
        Some("diffusion") => Some(ProcessorKind::Diffusion),
        Some("neural-style" | "neural_style") => Some(ProcessorKind::NeuralStyle),
        Some(other) => {
            return Err(bad(format!(
                "unknown processor {other:?}: use \"neural-style\" or \"diffusion\""
            )));
        }
    };
    if update.style.is_some() && update.prompt.is_some() {
        return Err(bad(
            "give either a preset style or a prompt, not both".to_string()
        ));
    }
    if let Some(style) = &update.style {
        if processor == Some(ProcessorKind::Diffusion) {
            return Err(bad(
                "the diffusion processor takes a prompt, not a preset style".to_string(),
            ));
        }
        params.source = StyleSource::Preset {
            mix: parse_style(style)?,
        };
        params.processor = ProcessorKind::NeuralStyle;
    }
    if let Some(prompt) = &update.prompt {
        let prompt = prompt.trim();
        let n = prompt.chars().count();
        if n == 0 || n > MAX_PROMPT_CHARS {
            return Err(bad(format!(
                "prompt must be 1 to {MAX_PROMPT_CHARS} characters, got {n}"
            )));
        }
        let negative_prompt = match &params.source {
            StyleSource::Prompt {
                negative_prompt, ..
            } => negative_prompt.clone(),
            _ => None,
        };
        // One prompt replaces a weighted list.
        params.source = StyleSource::Prompt {
            prompt: prompt.to_string(),
            negative_prompt,
            blend: None,
        };
    }
    if let Some(neg) = &update.negative_prompt {
        let neg = neg.trim();
        let n = neg.chars().count();
        if n > MAX_PROMPT_CHARS {
            return Err(bad(format!(
                "negative_prompt must be at most {MAX_PROMPT_CHARS} characters, got {n}"
            )));
        }
        match &mut params.source {
            StyleSource::Prompt {
                negative_prompt, ..
            } => *negative_prompt = (!neg.is_empty()).then(|| neg.to_string()),
            _ => {
                return Err(bad(
                    "negative_prompt needs a prompt: set prompt as well".to_string()
                ));
            }
        }
    }
    if let Some(p) = processor {
        params.processor = p;
    }
    if params.processor == ProcessorKind::Diffusion
        && !matches!(params.source, StyleSource::Prompt { .. })
    {
        return Err(bad(
            "the diffusion processor needs a prompt: set prompt as well".to_string(),
        ));
    }
    if let Some(model) = &update.model {
        let model = model.trim();
        check_model_id(model)?;
        params.diffusion.model = (!model.is_empty()).then(|| model.to_string());
    }
    if let Some(steps) = update.steps {
        // Steps are model passes here: a t_index_list (from /v1) no longer applies.
        params.diffusion.steps = steps;
        params.diffusion.t_index_list = None;
    }
    if let Some(g) = update.guidance {
        params.diffusion.guidance = g;
    }
    if let Some(seed) = update.seed {
        params.diffusion.seed = seed;
        params.diffusion.seeds = None;
    }
    if let Some(side) = update.max_side {
        params.max_side = side;
    }
    if let Some(s) = update.strength {
        params.strength = s;
    }
    if let Some(p) = update.preserve_color {
        params.preserve_color = p;
    }
    params.stamp_version();
    params.validate()?;
    let name = style_name(&params);
    stream.set_settings(params, name.clone(), by);
    Ok(name)
}

fn username(raw: &str) -> Result<Username, ApiError> {
    Ok(Username::parse(raw)?)
}

async fn live(state: &AppState, user: &Username) -> Result<Arc<StreamShared>, ApiError> {
    state
        .control
        .get(user)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("{user} is not live")))
}

pub async fn list_streams(state: web::Data<AppState>) -> HttpResponse {
    let streams: Vec<_> = state
        .control
        .list()
        .await
        .iter()
        .map(|s| {
            let snap = s.snapshot();
            serde_json::json!({
                "username": snap.username,
                "stream_id": snap.stream_id,
                "viewers": snap.viewers,
                "style": style_name(&snap.settings),
                "started_at_ms": snap.started_at_ms,
                "frames_out": snap.frames_out,
            })
        })
        .collect();
    HttpResponse::Ok().json(streams)
}

pub async fn get_stream(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = username(&path)?;
    let stream = live(&state, &user).await?;
    Ok(HttpResponse::Ok().json(stream.snapshot()))
}

pub async fn start_stream(
    req: HttpRequest,
    path: web::Path<String>,
    body: Option<web::Json<StyleUpdate>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = username(&path)?;
    authorize_broadcast(&req, &user, &state).await?;
    let defaults = state.config.default_style.clone();
    let stream = state.control.start_stream(user, defaults).await?;
    if let Some(update) = body {
        apply_style(&stream, update.into_inner(), None)?;
    }
    Ok(HttpResponse::Created().json(stream.snapshot()))
}

pub async fn stop_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = username(&path)?;
    authorize_broadcast(&req, &user, &state).await?;
    live(&state, &user).await?;
    state.control.stop(&user, EndReason::Stopped);
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "stopping": user.as_str() })))
}

pub async fn set_style(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<StyleUpdate>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = username(&path)?;
    authorize_broadcast(&req, &user, &state).await?;
    let stream = live(&state, &user).await?;
    let name = apply_style(&stream, body.into_inner(), None)?;
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({ "style": name, "settings": stream.settings() })),
    )
}

pub async fn styles() -> HttpResponse {
    let list: Vec<_> = presets::NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::json!({ "index": i, "name": n }))
        .collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(list)
}

pub async fn scheduler(_: OpsAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let snap = state
        .control
        .scheduler_snapshot()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(snap))
}

/// Workers (local and remote, with their heartbeat) and the ready queue.
pub async fn cluster(_: OpsAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let unavailable = |e: crate::control::NotAnswering| ApiError::Unavailable(e.to_string());
    let snap = state
        .control
        .scheduler_snapshot()
        .await
        .map_err(unavailable)?;
    let remote = state.control.remote_workers().await.map_err(unavailable)?;
    let workers: Vec<serde_json::Value> = snap
        .workers
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or_default();
            if let Some(r) = remote.iter().find(|r| r.id == w.id) {
                v["last_heartbeat_ms"] = r.last_heartbeat_ms.into();
                v["node_id"] = r.node_id.into();
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "workers": workers,
        "ready": snap.ready,
        "jobs_dispatched": snap.jobs_dispatched,
        "node_bytes_in_flight": snap.node_bytes_in_flight,
    })))
}

/// The diffusion models the cluster's workers advertise (sorted, no duplicates);
/// empty when no diffusion worker is in the cluster (or the scheduler does not answer).
pub async fn diffusion_models(state: &AppState) -> Vec<String> {
    let Ok(snap) = state.control.scheduler_snapshot().await else {
        return Vec::new();
    };
    let mut models: Vec<String> = snap
        .workers
        .iter()
        .filter(|w| w.processor == ProcessorKind::Diffusion.as_str())
        .flat_map(|w| w.models.iter().cloned())
        .collect();
    models.sort();
    models.dedup();
    models
}

/// What the studio offers: `{"diffusion": bool, "models": [...]}`.
pub async fn diffusion(state: web::Data<AppState>) -> HttpResponse {
    let models = diffusion_models(&state).await;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "diffusion": !models.is_empty(), "models": models }))
}

/// CPU time and memory of the server process (for `bench live`).
pub async fn server(_: OpsAccess) -> HttpResponse {
    let (cpu, rss) = crate::telemetry::process_usage().unwrap_or((0.0, 0));
    HttpResponse::Ok().json(serde_json::json!({ "cpu_seconds": cpu, "rss_bytes": rss }))
}

/// `/s/{username}/frame.jpg`: the newest restyled frame (thumbnails, previews).
pub async fn latest_frame(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = username(&path)?;
    let stream = live(&state, &user).await?;
    let frame = stream
        .last_output()
        .ok_or_else(|| ApiError::NotFound(format!("{user} has no frame yet")))?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(frame.jpeg.clone()))
}

/// The frame sizes the studio offers, largest first.
const FRAME_SIZES: [(u32, u32); 3] = [(640, 480), (480, 360), (320, 240)];

/// The latest measurement of the neural-style workers' speed: milliseconds
/// of job time per processed pixel (kept after the stream it came from ends).
static MS_PER_PIXEL: std::sync::Mutex<Option<f64>> = std::sync::Mutex::new(None);

#[derive(Debug, Deserialize)]
pub struct FrameSizeQuery {
    /// The frame rate the studio will send.
    pub fps: Option<u32>,
}

/// How fast the workers that serve a new (neural-style) stream are, in ms of
/// job time per processed pixel, and where that number comes from:
/// `measured` (the newest restyled frame of live streams: its size and the
/// worker's job time), `remembered` (the last such measurement), `workers`
/// (the scheduler's median job time, taken as if at the largest processed
/// size, so the estimate errs towards smaller frames), or `None`.
async fn worker_speed(state: &AppState) -> Option<(f64, &'static str)> {
    let mut measured: Vec<f64> = Vec::new();
    for s in state.control.list().await {
        if s.settings().processor != ProcessorKind::NeuralStyle {
            continue;
        }
        let Some(frame) = s.last_output() else {
            continue;
        };
        if let Ok((_, w, h)) = gpu_node::image_io::dimensions(&frame.jpeg)
            && w > 0
            && h > 0
            && frame.process_us > 0
        {
            let pixels = f64::from(w) * f64::from(h);
            measured.push(f64::from(frame.process_us) / 1000.0 / pixels);
        }
    }
    let remembered = {
        let mut last = MS_PER_PIXEL.lock().unwrap_or_else(|e| e.into_inner());
        if !measured.is_empty() {
            measured.sort_by(f64::total_cmp);
            *last = Some(measured[measured.len() / 2]);
        }
        *last
    };
    match remembered {
        Some(v) if !measured.is_empty() => return Some((v, "measured")),
        Some(v) => return Some((v, "remembered")),
        None => {}
    }
    let snap = state.control.scheduler_snapshot().await.ok()?;
    let mut times: Vec<f64> = snap
        .workers
        .iter()
        .filter(|w| w.processor == ProcessorKind::NeuralStyle.as_str() && w.jobs_done > 0)
        .map(|w| w.job_p50_ms)
        .filter(|ms| *ms > 0.0)
        .collect();
    if times.is_empty() {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let side = f64::from(state.config.stream.max_side);
    Some((times[times.len() / 2] / (side * side * 0.75), "workers"))
}

/// Pixels the worker processes for a `w`×`h` frame (the longer side is
/// fitted to `max_side`).
fn processed_pixels(w: u32, h: u32, max_side: u32) -> f64 {
    let scale = (f64::from(max_side) / f64::from(w.max(h))).min(1.0);
    f64::from(w) * f64::from(h) * scale * scale
}

/// `GET /api/frame-size?fps=15` (logged in): the largest frame size the
/// workers that will serve a new stream can restyle at that rate, from their
/// measured job time; the studio starts with it.
/// `{"size": "320x240", "width", "height", "fps", "expected_fps", "job_ms",
/// "basis", "explanation", "sizes": [{"size", "expected_fps", "job_ms"}]}`.
pub async fn frame_size(
    _: super::session::CurrentUser,
    q: web::Query<FrameSizeQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let fps = q.fps.unwrap_or(15).clamp(1, 60);
    let max_side = state.config.stream.max_side;
    let speed = worker_speed(&state).await;
    // Jobs that run at once for this stream: the neural-style workers'
    // capacity, shared with the streams already live.
    let (capacity, live) = match state.control.scheduler_snapshot().await {
        Ok(snap) => (
            snap.workers
                .iter()
                .filter(|w| {
                    w.processor == ProcessorKind::NeuralStyle.as_str()
                        && w.state != dreamstream_actors::scheduler::WorkerState::Lost
                })
                .map(|w| f64::from(w.capacity))
                .sum::<f64>(),
            state.control.list().await.len(),
        ),
        Err(_) => (0.0, 0),
    };
    let share = (capacity / (live as f64 + 1.0)).max(1.0);
    let sizes: Vec<(u32, u32, Option<f64>, Option<f64>)> = FRAME_SIZES
        .iter()
        .map(|&(w, h)| {
            let job = speed.map(|(ms, _)| ms * processed_pixels(w, h, max_side));
            let expected = job.map(|ms| (share * 1000.0 / ms.max(0.1)).min(f64::from(fps)));
            (w, h, job, expected)
        })
        .collect();
    // The largest size that keeps (nearly) up; the smallest when none does
    // or nothing has been measured yet.
    let pick = sizes
        .iter()
        .find(|(_, _, _, e)| e.is_some_and(|e| e >= 0.9 * f64::from(fps)))
        .or(sizes.last())
        .copied()
        .unwrap_or((320, 240, None, None));
    let (w, h, job, expected) = pick;
    let explanation = match (speed, job) {
        (Some(_), Some(ms)) => format!(
            "{w} × {h} suggested: the workers take about {ms:.0} ms to restyle a frame of this size, \
             enough for {:.0} of your {fps} frames a second.",
            expected.unwrap_or(0.0)
        ),
        _ => format!(
            "{w} × {h} to start with: the workers' speed is not measured yet. \
             A larger size is worth trying once the output keeps up."
        ),
    };
    HttpResponse::Ok().json(serde_json::json!({
        "size": format!("{w}x{h}"),
        "width": w,
        "height": h,
        "fps": fps,
        "expected_fps": expected,
        "job_ms": job,
        "basis": speed.map_or("none", |(_, b)| b),
        "explanation": explanation,
        "sizes": sizes.iter().map(|(w, h, job, e)| serde_json::json!({
            "size": format!("{w}x{h}"), "job_ms": job, "expected_fps": e,
        })).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod frame_size_tests {
    use super::processed_pixels;

    #[test]
    fn frames_are_processed_at_most_at_max_side() {
        assert_eq!(processed_pixels(320, 240, 512), 76_800.0);
        assert_eq!(processed_pixels(640, 480, 512), 512.0 * 384.0);
        assert_eq!(processed_pixels(640, 480, 1280), 640.0 * 480.0);
    }
}
