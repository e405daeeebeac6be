//! Comments and style requests on a live stream, and the streamer's
//! moderation (delete, ban, switches, approve/reject). JSON calls with the
//! session cookie and the CSRF header; events reach every viewer and the
//! studio over the stream's sockets (`StreamShared::broadcast` includes the
//! broadcaster).
//!
//! - `GET  /api/streams/{u}/comments` — recent comments (anyone)
//! - `POST /api/streams/{u}/comments` `{text}` — logged in, not banned, comments on,
//!   at most 3 per 2 s (then muted for 10 s)
//! - `DELETE /api/streams/{u}/comments/{id}`, `POST /api/streams/{u}/bans`
//!   `{username}`, `DELETE /api/streams/{u}/bans/{name}`, `PUT /api/streams/{u}/community`
//!   — the owner only
//! - `GET  /api/streams/{u}/requests` — queue, history, switches (anyone)
//! - `POST /api/streams/{u}/requests` `{style}` or `{prompt}`; `POST
//!   /api/streams/{u}/requests/picture` (a JPEG/PNG body) — logged in, requests on
//! - `POST /api/streams/{u}/requests/{id}/approve|reject` — the owner only

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use dreamstream_actors::presets;
use dreamstream_actors::sink::StreamEvent;
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::stream::community::{CommunitySettings, RequestStatus, StyleRequest};
use dreamstream_actors::style::{ProcessorKind, StyleImage, StyleSource};
use dreamstream_actors::{PresetMix, StyleParams, Username};
use futures_util::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::api::{diffusion_models, parse_style};
use super::auth::authorize_broadcast;
use super::errors::ApiError;
use super::session::{CurrentUser, check_csrf_header};
use crate::accounts::User;
use crate::community::{self, MAX_COMMENT_CHARS, NewRequest};
use dreamstream_actors::presets::style_name;

/// Comments per user: this many within the window, then muted.
const COMMENTS_PER_WINDOW: u32 = 3;
const COMMENT_WINDOW: Duration = Duration::from_secs(2);
const MUTE: Duration = Duration::from_secs(10);
/// Largest style picture accepted (it is shrunk to the network's input).
pub const MAX_PICTURE_BYTES: usize = 8 * 1024 * 1024;
/// Longest side a style picture is kept at.
const PICTURE_SIDE: u32 = 256;
/// Largest picture decoded (pixels): bounds the memory an upload can take.
const MAX_PICTURE_PIXELS: u64 = 16_000_000;
/// Style requests per user and minute.
const REQUESTS_PER_MINUTE: u32 = 6;

/// Registered before the `/api` scope (a scope would not fall through to it).
pub fn routes(cfg: &mut web::ServiceConfig) {
    const S: &str = "/api/streams/{username}";
    cfg.route(&format!("{S}/comments"), web::get().to(list_comments))
        .route(&format!("{S}/comments"), web::post().to(post_comment))
        .route(
            &format!("{S}/comments/{{id}}"),
            web::delete().to(delete_comment),
        )
        .route(&format!("{S}/bans"), web::post().to(ban))
        .route(&format!("{S}/bans/{{name}}"), web::delete().to(unban))
        .route(&format!("{S}/community"), web::put().to(set_switches))
        .route(&format!("{S}/requests"), web::get().to(list_requests))
        .route(&format!("{S}/requests"), web::post().to(request_style))
        .route(
            &format!("{S}/requests/picture"),
            web::post().to(request_picture),
        )
        .route(
            &format!("{S}/requests/{{id}}/{{decision}}"),
            web::post().to(decide),
        );
}

async fn live(state: &AppState, raw: &str) -> Result<(Username, Arc<StreamShared>), ApiError> {
    let name = Username::parse(raw).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let stream = state
        .control
        .get(&name)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("{name} is not live")))?;
    Ok((name, stream))
}

/// The channel owner's user id.
async fn owner_id(state: &AppState, name: &Username) -> Result<i64, ApiError> {
    Ok(state
        .accounts
        .find(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user named {name}")))?
        .id)
}

/// A logged-in viewer acting on `channel`: CSRF checked, not banned there.
async fn participant(
    req: &HttpRequest,
    state: &AppState,
    user: &User,
    channel: i64,
) -> Result<(), ApiError> {
    check_csrf_header(req)?;
    if community::is_banned(state.accounts.db(), channel, user.id).await? {
        return Err(ApiError::Forbidden("you are banned from this chat".into()));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct CommentBody {
    pub text: String,
}

pub async fn list_comments(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, stream) = live(&state, &path).await?;
    let rows = community::recent_comments(state.accounts.db(), stream.id.0, 50).await?;
    let list: Vec<_> = rows
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id, "user": c.username, "text": c.body,
                "at_ms": c.created_at.timestamp_millis(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

pub async fn post_comment(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    user: CurrentUser,
    body: web::Json<CommentBody>,
) -> Result<HttpResponse, ApiError> {
    let (name, stream) = live(&state, &path).await?;
    let channel = owner_id(&state, &name).await?;
    participant(&req, &state, &user.0, channel).await?;
    if !stream.community.settings().comments {
        return Err(ApiError::Forbidden(format!(
            "{name} has turned comments off"
        )));
    }
    let text = plain_text(&body.text);
    let text = text.as_str();
    if text.is_empty() {
        return Err(ApiError::BadRequest("a comment needs some text".into()));
    }
    if text.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "comments are at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    let mute_key = format!("mute:{}", user.0.id);
    if let Some(left) = state.limiter.blocked_for(&mute_key).await? {
        return Err(muted(left));
    }
    let hit = state
        .limiter
        .hit(
            &format!("comment:{}", user.0.id),
            COMMENTS_PER_WINDOW,
            COMMENT_WINDOW,
        )
        .await?;
    if !hit.allowed {
        state.limiter.block(&mute_key, MUTE).await?;
        return Err(muted(MUTE));
    }
    let row = community::add_comment(
        state.accounts.db(),
        stream.id.0,
        channel,
        (user.0.id, user.0.username.as_str()),
        text,
    )
    .await?;
    let event = StreamEvent::Comment {
        id: row.id,
        user: row.username.clone(),
        text: row.body.clone(),
        at_ms: row.created_at.timestamp_millis().max(0) as u64,
    };
    stream.broadcast(&event);
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": row.id, "text": row.body })))
}

fn muted(left: Duration) -> ApiError {
    ApiError::Muted(left.as_secs().max(1))
}

pub async fn delete_comment(
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (raw, id) = path.into_inner();
    let (name, stream) = live(&state, &raw).await?;
    let owner = authorize_broadcast(&req, &name, &state).await?;
    if !community::delete_comment(state.accounts.db(), owner.id, id).await? {
        return Err(ApiError::NotFound(format!("no comment {id} in this chat")));
    }
    let event = StreamEvent::CommentDeleted { id };
    stream.broadcast(&event);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct BanBody {
    pub username: String,
}

pub async fn ban(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    body: web::Json<BanBody>,
) -> Result<HttpResponse, ApiError> {
    let name = Username::parse(&path)?;
    let owner = authorize_broadcast(&req, &name, &state).await?;
    let target = state.accounts.get(&body.username).await?;
    if target.id == owner.id {
        return Err(ApiError::BadRequest("you cannot ban yourself".into()));
    }
    community::ban(state.accounts.db(), owner.id, target.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "banned": target.username })))
}

pub async fn unban(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (raw, target) = path.into_inner();
    let name = Username::parse(&raw)?;
    let owner = authorize_broadcast(&req, &name, &state).await?;
    let target = state.accounts.get(&target).await?;
    community::unban(state.accounts.db(), owner.id, target.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct Switches {
    pub comments: Option<bool>,
    pub requests: Option<bool>,
    pub auto_approve: Option<bool>,
    pub dwell_secs: Option<u64>,
}

pub async fn set_switches(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    body: web::Json<Switches>,
) -> Result<HttpResponse, ApiError> {
    let name = Username::parse(&path)?;
    let owner = authorize_broadcast(&req, &name, &state).await?;
    let stream = state.control.get(&name).await;
    let mut s = match &stream {
        Some(st) => st.community.settings(),
        None => community::load_settings(state.accounts.db(), owner.id).await?,
    };
    if let Some(v) = body.comments {
        s.comments = v;
    }
    if let Some(v) = body.requests {
        s.requests = v;
    }
    if let Some(v) = body.auto_approve {
        s.auto_approve = v;
    }
    if let Some(v) = body.dwell_secs {
        if !(5..=3600).contains(&v) {
            return Err(ApiError::BadRequest(
                "dwell_secs is between 5 and 3600".into(),
            ));
        }
        s.dwell_secs = v;
    }
    community::save_settings(state.accounts.db(), owner.id, &s).await?;
    if let Some(st) = &stream {
        st.community.set_settings(s.clone());
        let event = StreamEvent::CommunitySettings {
            comments: s.comments,
            requests: s.requests,
            auto_approve: s.auto_approve,
        };
        st.broadcast(&event);
    }
    Ok(HttpResponse::Ok().json(s))
}

pub async fn list_requests(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, stream) = live(&state, &path).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "settings": stream.community.settings(),
        "queue": stream.community.queue(),
        "history": stream.community.history(),
        "style": style_name(&stream.settings()),
    })))
}

#[derive(Deserialize)]
pub struct RequestBody {
    /// A preset: index, name or blend (`3:0.5,12:0.5`).
    pub style: Option<String>,
    /// A text prompt.
    pub prompt: Option<String>,
}

/// Checks a requester may ask `stream` for a style.
async fn may_request(
    req: &HttpRequest,
    state: &AppState,
    user: &User,
    name: &Username,
    stream: &StreamShared,
) -> Result<(), ApiError> {
    let channel = owner_id(state, name).await?;
    participant(req, state, user, channel).await?;
    if !stream.community.settings().requests {
        return Err(ApiError::Forbidden(format!(
            "{name} is not taking style requests right now"
        )));
    }
    if !stream.community.has_room() {
        return Err(ApiError::Conflict(
            "the request queue is full: try again in a moment".into(),
        ));
    }
    let hit = state
        .limiter
        .hit(
            &format!("request:{}", user.id),
            REQUESTS_PER_MINUTE,
            Duration::from_secs(60),
        )
        .await?;
    if !hit.allowed {
        return Err(ApiError::TooManyRequests(hit.retry_after.as_secs().max(1)));
    }
    Ok(())
}

pub async fn request_style(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    user: CurrentUser,
    body: web::Json<RequestBody>,
) -> Result<HttpResponse, ApiError> {
    let (name, stream) = live(&state, &path).await?;
    may_request(&req, &state, &user.0, &name, &stream).await?;
    let (kind, spec, source, label, processor) = match (&body.style, &body.prompt) {
        (Some(style), None) => {
            let style = plain_text(style);
            if style.chars().count() > MAX_SPEC_CHARS {
                return Err(ApiError::BadRequest(format!(
                    "a style is at most {MAX_SPEC_CHARS} characters"
                )));
            }
            let mix = parse_style(&style)?;
            let source = StyleSource::Preset { mix: mix.clone() };
            let label = label_of(&source)?;
            ("preset", style, source, label, ProcessorKind::NeuralStyle)
        }
        (None, Some(prompt)) => {
            let prompt = plain_text(prompt);
            let prompt = prompt.as_str();
            if prompt.is_empty() || prompt.chars().count() > 200 {
                return Err(ApiError::BadRequest(
                    "a prompt is 1 to 200 characters".into(),
                ));
            }
            let source = StyleSource::Prompt {
                prompt: prompt.to_string(),
                negative_prompt: None,
                blend: None,
            };
            // With a diffusion worker in the cluster the prompt is drawn for real;
            // without one, neural-style workers map it to the closest preset: say which.
            let (label, processor) = if diffusion_models(&state).await.is_empty() {
                let closest = presets::NAMES[presets::closest_to_prompt(prompt)];
                (
                    format!("\u{201c}{prompt}\u{201d} (as {closest}: no diffusion worker)"),
                    ProcessorKind::NeuralStyle,
                )
            } else {
                (
                    format!("\u{201c}{prompt}\u{201d} (diffusion)"),
                    ProcessorKind::Diffusion,
                )
            };
            ("prompt", prompt.to_string(), source, label, processor)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "send either {\"style\": ...} or {\"prompt\": ...}".into(),
            ));
        }
    };
    queue(
        &state,
        &stream,
        &user.0,
        Queued {
            kind,
            spec: &spec,
            source,
            processor,
            label,
            image: None,
        },
    )
    .await
}

/// The longest style spec a request may carry (the column holds 300).
const MAX_SPEC_CHARS: usize = 200;

/// What people type, as it is stored and shown: trimmed, without control
/// characters (NUL included, which PostgreSQL would refuse) or invisible
/// formatting ones (bidirectional overrides such as U+202E, zero-width
/// characters), so the same text is accepted on both databases and renders
/// as it reads.
pub fn plain_text(raw: &str) -> String {
    let invisible = |c: char| {
        matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
    };
    raw.chars()
        .filter(|&c| !c.is_control() && !invisible(c))
        .collect::<String>()
        .trim()
        .to_string()
}

fn label_of(source: &StyleSource) -> Result<String, ApiError> {
    let mut params = StyleParams::preset(PresetMix::single(0)?);
    params.source = source.clone();
    Ok(style_name(&params))
}

/// A request about to be queued.
struct Queued<'a> {
    kind: &'a str,
    spec: &'a str,
    source: StyleSource,
    processor: ProcessorKind,
    label: String,
    image: Option<Vec<u8>>,
}

async fn queue(
    state: &AppState,
    stream: &StreamShared,
    user: &User,
    q: Queued<'_>,
) -> Result<HttpResponse, ApiError> {
    let Queued {
        kind,
        spec,
        source,
        processor,
        label,
        image,
    } = q;
    let id = community::add_request(
        state.accounts.db(),
        NewRequest {
            stream_id: stream.id.0,
            author: (user.id, user.username.as_str()),
            kind,
            label: &label,
            spec,
            image,
        },
    )
    .await?;
    let request = StyleRequest {
        id,
        by: user.username.to_string(),
        label: label.clone(),
        source,
        processor,
        created_ms: dreamstream_actors::frame::unix_ms(),
    };
    if !stream.community.push(request) {
        community::decide_request(state.accounts.db(), id, RequestStatus::Rejected).await?;
        return Err(ApiError::Conflict(
            "the request queue is full: try again in a moment".into(),
        ));
    }
    let event = StreamEvent::RequestQueued {
        id,
        by: user.username.to_string(),
        label: label.clone(),
    };
    stream.broadcast(&event);
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": id, "label": label })))
}

pub async fn request_picture(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    user: CurrentUser,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (name, stream) = live(&state, &path).await?;
    may_request(&req, &state, &user.0, &name, &stream).await?;
    let too_big = || {
        ApiError::PayloadTooLarge(format!(
            "style pictures are at most {} MB",
            MAX_PICTURE_BYTES / (1024 * 1024)
        ))
    };
    if req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_PICTURE_BYTES)
    {
        return Err(too_big());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("upload failed: {e}")))?;
        if body.len() + chunk.len() > MAX_PICTURE_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    let bytes = body.freeze();
    let (_, width, height) = gpu_node::image_io::check_header(&bytes).map_err(|e| {
        ApiError::UnsupportedMedia(format!(
            "the upload is not a usable JPEG or PNG picture: {e}"
        ))
    })?;
    if width as u64 * height as u64 > MAX_PICTURE_PIXELS {
        return Err(ApiError::PayloadTooLarge(format!(
            "the picture is {width}x{height}; style pictures are at most {} megapixels",
            MAX_PICTURE_PIXELS / 1_000_000
        )));
    }
    // Shrink to the network's input off the async runtime.
    let small = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use gpu_node::image_io::{self, ResizeQuality};
        let img = image_io::decode(&bytes).map_err(|e| e.to_string())?;
        let scale = (PICTURE_SIDE as f32 / img.width.max(img.height) as f32).min(1.0);
        let (w, h) = (
            ((img.width as f32 * scale).round() as u32).max(1),
            ((img.height as f32 * scale).round() as u32).max(1),
        );
        let img = image_io::resize(&img, w, h, ResizeQuality::Best);
        image_io::encode_jpeg(&img, 90).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| ApiError::UnsupportedMedia(format!("the picture cannot be read: {e}")))?;
    let source = StyleSource::Image {
        image: StyleImage::new(small.clone()),
    };
    let label = format!("a picture from @{}", user.0.username);
    queue(
        &state,
        &stream,
        &user.0,
        Queued {
            kind: "picture",
            spec: "",
            source,
            processor: ProcessorKind::NeuralStyle,
            label,
            image: Some(small),
        },
    )
    .await
}

pub async fn decide(
    req: HttpRequest,
    path: web::Path<(String, i64, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (raw, id, decision) = path.into_inner();
    let (name, stream) = live(&state, &raw).await?;
    authorize_broadcast(&req, &name, &state).await?;
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(ApiError::NotFound(format!("no decision {other:?}"))),
    };
    let request = stream
        .community
        .take(id)
        .ok_or_else(|| ApiError::NotFound(format!("no pending request {id}")))?;
    let status = stream.decide_request(&request, approve);
    community::decide_request(state.accounts.db(), id, status).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id, "status": status })))
}

/// Loads the owner's saved switches into a stream (when its broadcaster connects).
pub async fn restore_switches(
    state: &AppState,
    owner: i64,
    stream: &StreamShared,
) -> Result<CommunitySettings, ApiError> {
    let s = community::load_settings(state.accounts.db(), owner).await?;
    stream.community.set_settings(s.clone());
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::plain_text;

    #[test]
    fn text_loses_controls_and_invisible_formatting() {
        assert_eq!(plain_text("  a\u{0}b\n "), "ab");
        assert_eq!(plain_text("evil\u{202e}txt.exe"), "eviltxt.exe");
        assert_eq!(plain_text("zero\u{200b}width\u{feff}"), "zerowidth");
        assert_eq!(plain_text("héllo wörld ✨"), "héllo wörld ✨");
    }
}
