//! WebSocket endpoints.
//!
//! - `/ws/broadcast/{username}`: binary JPEG frames in (optionally with the
//!   `DSF1` header, see `dreamstream_actors::frame`), JSON control in, JSON
//!   acks and events out (plus the restyled frames, for the studio preview).
//! - `/ws/watch/{username}`: binary frames out (header + JPEG), JSON events;
//!   in, `{"type":"frames","send":false|true}` turns the pictures off or on
//!   (events keep coming; a viewer with pictures off is not counted: its
//!   page plays WHEP, which is), see `watch`.
//! - The seed protocol beside them: `/ws/broadcaster/{id}` and `/ws/viewer/{id}`
//!   with `{"type":"frame","frame":"<base64 or data URL>"}` both ways.

mod broadcast;
pub mod direct;
mod session;
mod watch;

use actix_web::{HttpRequest, HttpResponse, web};
use dreamstream_actors::Username;

pub use broadcast::{BroadcastSession, input_side_limit};
pub use watch::{TabWhep, ViewerTabs};

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
    // One broadcaster per stream, claimed before anything starts: of many
    // simultaneous handshakes exactly one gets past here.
    let slot = state.broadcasters.claim(&username).ok_or_else(|| {
        ApiError::Conflict(format!(
            "{username} is already live from another connection"
        ))
    })?;
    let defaults = state.config.default_style.clone();
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
    super::v1::streams::on_publish(&req, &state, &stream).await?;
    let session = Claimed {
        inner: BroadcastSession::new(stream, protocol, state.clone()),
        slot: Some(slot),
    };
    session::upgrade(&req, payload, session)
}

/// The streams that have a broadcaster connection (or one being set up).
#[derive(Default)]
pub struct BroadcastSlots(std::sync::Mutex<std::collections::HashSet<Username>>);

impl BroadcastSlots {
    /// The stream's slot, unless another connection holds it.
    pub fn claim(self: &std::sync::Arc<Self>, username: &Username) -> Option<SlotGuard> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(username.clone()).then(|| SlotGuard {
            slots: self.clone(),
            username: username.clone(),
        })
    }
}

/// A claimed broadcaster slot, released when dropped.
pub struct SlotGuard {
    slots: std::sync::Arc<BroadcastSlots>,
    username: Username,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut held = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.username);
    }
}

/// Viewer sockets per (stream, client network): one address cannot
/// inflate a stream's viewer count (or its fan-out) without bound.
#[derive(Default)]
pub struct ViewerCounts(std::sync::Mutex<std::collections::HashMap<(Username, String), u32>>);

impl ViewerCounts {
    /// A viewer slot for `network` on `username`'s stream, unless it holds
    /// `cap` already.
    pub fn claim(
        self: &std::sync::Arc<Self>,
        username: &Username,
        network: String,
        cap: u32,
    ) -> Option<ViewerSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (username.clone(), network);
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ViewerSlot {
            counts: self.clone(),
            key,
        })
    }
}

/// A counted viewer socket, released when dropped.
pub struct ViewerSlot {
    counts: std::sync::Arc<ViewerCounts>,
    key: (Username, String),
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// A session holding a slot (a stream's broadcaster slot, a viewer's)
/// until it stops.
struct Claimed<S, G> {
    inner: S,
    slot: Option<G>,
}

impl<S: session::Session, G: 'static> session::Session for Claimed<S, G> {
    fn max_message(&self) -> usize {
        self.inner.max_message()
    }
    fn started(&mut self, socket: &std::sync::Arc<direct::DirectSocket>) -> bool {
        self.inner.started(socket)
    }
    fn text(&mut self, socket: &direct::DirectSocket, text: &str) {
        self.inner.text(socket, text)
    }
    fn binary(&mut self, socket: &direct::DirectSocket, bytes: bytes::Bytes) {
        self.inner.binary(socket, bytes)
    }
    fn too_big(&mut self) -> String {
        self.inner.too_big()
    }
    fn stopped(&mut self) {
        self.inner.stopped();
        self.slot = None;
    }
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
    let slot = match ip {
        Some(ip) => Some(
            state
                .viewers
                .claim(
                    &username,
                    super::client_ip::network_key(ip),
                    state.config.http.max_viewers_per_ip,
                )
                .ok_or_else(|| ApiError::TooManyRequests(timing::PING_EVERY.as_secs()))?,
        ),
        None => None,
    };
    let viewer = watch::Viewer::new(
        username,
        state.control.registry.clone(),
        protocol,
        state.config.stream.viewer_buffer,
        state.audience.clone(),
        ip,
        client_id(&req).map(|id| watch::Tab {
            id,
            tabs: state.tabs.clone(),
        }),
    );
    let session = Claimed {
        inner: viewer,
        slot,
    };
    session::upgrade(&req, payload, session)
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
pub(crate) fn client_id(req: &HttpRequest) -> Option<String> {
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
