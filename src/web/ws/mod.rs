//! WebSocket endpoints.
//!
//! - `/ws/broadcast/{username}`: binary JPEG frames in (optionally with the
//!   `DSF1` header, see `dreamstream_actors::frame`), JSON control in, JSON
//!   acks and events out (plus the restyled frames, for the studio preview).
//! - `/ws/watch/{username}`: binary frames out (header + JPEG), JSON events.
//! - The seed protocol beside them: `/ws/broadcaster/{id}` and `/ws/viewer/{id}`
//!   with `{"type":"frame","frame":"<base64 or data URL>"}` both ways.

mod broadcast;
pub mod direct;
mod session;
mod watch;

use actix_web::{HttpRequest, HttpResponse, web};
use dreamstream_actors::Username;

pub use broadcast::BroadcastSession;

use super::AppState;
use super::auth::authorize_broadcast;
use super::errors::ApiError;

/// How a session talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Binary frames with the DSF1 header, JSON events.
    Binary,
    /// The seed's JSON messages with base64 JPEGs.
    SeedJson,
}

/// Close codes and timings shared by both kinds of session.
pub mod timing {
    use std::time::Duration;
    /// How often the server pings.
    pub const PING_EVERY: Duration = Duration::from_secs(10);
    /// Silence after which a connection is considered dead.
    pub const DEAD_AFTER: Duration = Duration::from_secs(30);
}

async fn start_broadcast(
    req: HttpRequest,
    payload: web::Payload,
    raw: &str,
    state: web::Data<AppState>,
    protocol: Protocol,
) -> Result<HttpResponse, actix_web::Error> {
    let username = Username::parse(raw).map_err(ApiError::from)?;
    // A valid WebSocket handshake before anything starts (and is charged).
    session::check_upgrade(&req)?;
    let owner = authorize_broadcast(&req, &username, &state).await?;
    let defaults = state.settings.default_style().map_err(ApiError::Internal)?;
    let stream = state
        .control
        .get_or_start(&username, defaults)
        .await
        .map_err(ApiError::from)?;
    // One live stream per user, from one connection: a second broadcaster is
    // refused while the first is connected (a reconnect after a drop is fine).
    if stream.broadcaster_connected() {
        return Err(ApiError::Conflict(format!(
            "{username} is already live from another connection"
        ))
        .into());
    }
    super::community::restore_switches(&state, owner.id, &stream).await?;
    let session = BroadcastSession::new(stream, protocol, state.clone());
    session::upgrade(&req, payload, session)
}

async fn start_watch(
    req: HttpRequest,
    payload: web::Payload,
    raw: &str,
    state: web::Data<AppState>,
    protocol: Protocol,
) -> Result<HttpResponse, actix_web::Error> {
    let username = Username::parse(raw).map_err(ApiError::from)?;
    session::check_upgrade(&req)?;
    let exists = state.control.get(&username).await.is_some()
        || state
            .accounts
            .find(&username)
            .await
            .map_err(ApiError::from)?
            .is_some();
    if !exists {
        return session::upgrade(&req, payload, watch::NoSuchChannel(username));
    }
    let ip = super::client_ip::client_ip(&req, &state.trusted_proxies);
    let viewer = watch::Viewer::new(
        username,
        state.control.registry.clone(),
        protocol,
        state.settings.stream.viewer_buffer,
        state.audience.clone(),
        ip,
        client_id(&req),
    );
    session::upgrade(&req, payload, viewer)
}

pub async fn broadcast(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    start_broadcast(req, payload, &path, state, Protocol::Binary).await
}

pub async fn watch(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    start_watch(req, payload, &path, state, Protocol::Binary).await
}

pub async fn seed_broadcaster(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    start_broadcast(req, payload, &path, state, Protocol::SeedJson).await
}

pub async fn seed_viewer(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    start_watch(req, payload, &path, state, Protocol::SeedJson).await
}

/// The viewer's tab id from `?cid=` (letters, digits, `-`, at most 64), if any.
fn client_id(req: &HttpRequest) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()?
        .get("cid")
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        })
        .cloned()
}

/// `{"type":"error","code":...,"message":...}`
pub fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({ "type": "error", "code": code, "message": message }).to_string()
}
