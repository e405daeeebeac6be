//! WHIP (RFC 9725) and WHEP over HTTP; the media side is `crate::media`.
//!
//! - `POST /whip/{username}` — `application/sdp` offer, `Authorization:
//!   Bearer <stream key>` or the owner's session (with the CSRF header) →
//!   `201` with the answer, `Location: /whip/{username}/{session}`, and the
//!   playback URL in `Link: <…/whep/{username}>; rel="alternate"` and
//!   `livepeer-playback-url` (what Daydream's clients read). A second
//!   publisher while one is live is refused (409), unless the live one has
//!   been silent for `media.session_timeout_ms` (the owner replacing a dead
//!   publisher).
//! - `POST /whep/{username}` — a public stream needs no token; the stream
//!   must be live (404); at most `media.max_viewers_per_ip` sessions per
//!   client network and stream (429). A session counts as one viewer of
//!   the stream for as long as it lives, exactly like a viewer socket (the
//!   stream's count and peak, the audience statistics), until its DELETE,
//!   its reaping or the stream's end. A session that names the viewer
//!   page's tab (`?cid=`) turns that tab's viewer socket's pictures off
//!   first (the socket stays for events and chat, and is not counted while
//!   its pictures are off), so one browser counts once.
//! - `POST /whip/{username}?companion=1` (the studio, with its login
//!   cookie, while its WebSocket broadcaster is connected): the camera comes
//!   by WHIP, the WebSocket stays the control channel; such a publisher
//!   holds no broadcaster slot and its DELETE does not end the stream.
//! - `DELETE` on a session's URL → 200 (a WHIP DELETE ends the stream);
//!   `PATCH` → 405 (no trickle ICE: the answer has every candidate).
//!
//! Offers without H.264 are refused with 415 naming the accepted codecs;
//! anything that is not SDP with 400.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use dreamstream_actors::Username;
use dreamstream_actors::store::EndReason;

use super::AppState;
use super::auth::{authorize_broadcast, presented_key};
use super::errors::ApiError;
use crate::audience::AudienceSeat;
use crate::media::sdp::{OfferError, check_offer};
use crate::media::{Kind, Media, MediaError, SessionId};

/// The largest offer we read (browsers send a few KB).
const MAX_OFFER: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/whip/{username}", web::post().to(whip))
        .route("/whip/{username}/{session}", web::delete().to(delete_whip))
        .route("/whip/{username}/{session}", web::patch().to(no_trickle))
        .route("/whep/{username}", web::post().to(whep))
        .route("/whep/{username}/{session}", web::delete().to(delete_whep))
        .route("/whep/{username}/{session}", web::patch().to(no_trickle));
}

/// `?companion=1`: see [`whip`].
fn is_companion(req: &HttpRequest) -> bool {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .is_ok_and(|q| q.get("companion").is_some_and(|v| v == "1"))
}

fn media(state: &AppState) -> Result<&Media, ApiError> {
    state.media.as_deref().ok_or_else(|| {
        ApiError::Unavailable("WebRTC is not enabled on this server (media.udp_listen)".into())
    })
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Offer(OfferError::NotSdp) => ApiError::BadRequest(e.to_string()),
            MediaError::Offer(_) => ApiError::UnsupportedMedia(e.to_string()),
            MediaError::Unanswerable(why) => {
                tracing::info!(why, "offer not answerable");
                ApiError::BadRequest("the offer cannot be answered (no usable media)".into())
            }
            MediaError::Down => ApiError::Unavailable("the media server is not running".into()),
        }
    }
}

/// The offer's text, checked: `application/sdp`, UTF-8, size.
fn offer_text(req: &HttpRequest, body: &[u8]) -> Result<String, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    {
        return Err(ApiError::UnsupportedMedia(
            "the offer must be sent as application/sdp".into(),
        ));
    }
    if body.len() > MAX_OFFER {
        return Err(ApiError::PayloadTooLarge(format!(
            "the offer is over {MAX_OFFER} bytes"
        )));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the body is not an SDP offer".into()))
}

/// `201 Created` with the session's URL, for an `application/sdp` answer.
fn created(location: String) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::Created();
    r.insert_header((header::LOCATION, location))
        .insert_header((header::CONTENT_TYPE, "application/sdp"))
        .insert_header(("Access-Control-Expose-Headers", "Location, Link"));
    r
}

async fn whip(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let media = media(&state)?;
    let username = Username::parse(&path)?;
    let owner = authorize_broadcast(&req, &username, &state).await?;
    let text = offer_text(&req, &body)?;
    let (offer, _) = check_offer(&text).map_err(MediaError::from)?;
    // The studio keeps its WebSocket as the control channel (style, events,
    // preview) and sends its camera by WHIP: `?companion=1` with the login
    // cookie, while that WebSocket is connected. Such a publisher feeds
    // frames only; it holds no broadcaster slot.
    let companion = is_companion(&req)
        && presented_key(&req).is_none()
        && state
            .control
            .get(&username)
            .await
            .is_some_and(|s| s.broadcaster_connected());
    if let Some((old, idle)) = media.publisher_of(&username) {
        // One WHIP publisher per stream; a silent one is replaced.
        let dead_after = std::time::Duration::from_millis(media.settings.session_timeout_ms)
            .min(std::time::Duration::from_secs(3));
        if idle < dead_after {
            return Err(ApiError::Conflict(format!(
                "{username} is already live from another connection"
            )));
        }
        tracing::info!(stream = %username, session = %old, "replacing a silent WHIP publisher");
        media.end_now(old);
    }
    let (rtc, answer) = media.answer(offer, Kind::Publisher)?;
    let id = if companion {
        let stream = state
            .control
            .get(&username)
            .await
            .ok_or_else(|| ApiError::Conflict(format!("{username} is not live")))?;
        let jpeg_quality = stream.settings().jpeg_quality;
        media.publish(stream, rtc, jpeg_quality, false, Box::new(()))?
    } else {
        // The broadcaster slot, shared with the WebSocket broadcaster.
        let slot = state.broadcasters.claim(&username).ok_or_else(|| {
            ApiError::Conflict(format!(
                "{username} is already live from another connection"
            ))
        })?;
        let defaults = state.config.default_style.clone();
        let stream = state.control.get_or_start(&username, defaults).await?;
        if stream.broadcaster_connected() {
            return Err(ApiError::Conflict(format!(
                "{username} is already live from another connection"
            )));
        }
        super::community::restore_switches(&state, owner.id, &stream).await?;
        super::v1::streams::on_publish(&req, &state, &stream).await?;
        let jpeg_quality = stream.settings().jpeg_quality;
        media.publish(stream, rtc, jpeg_quality, true, Box::new(slot))?
    };
    let playback = format!("{}/whep/{username}", state.config.public_url);
    Ok(created(format!("/whip/{username}/{id}"))
        .insert_header((
            header::LINK,
            format!("<{playback}>; rel=\"alternate\"; type=\"application/sdp\""),
        ))
        .insert_header(("livepeer-playback-url", playback))
        .body(answer.to_sdp_string()))
}

async fn whep(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let media = media(&state)?;
    let username = Username::parse(&path)?;
    let text = offer_text(&req, &body)?;
    let (offer, _) = check_offer(&text).map_err(MediaError::from)?;
    let stream = state
        .control
        .get(&username)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("{username} is not live")))?;
    let ip = super::client_ip::client_ip(&req, &state.trusted_proxies);
    let slot = match ip {
        Some(ip) => Some(
            state
                .viewers
                .claim(
                    &username,
                    format!("whep:{}", super::client_ip::network_key(ip)),
                    media.settings.max_viewers_per_ip,
                )
                .ok_or(ApiError::TooManyRequests(10))?,
        ),
        None => None,
    };
    let (rtc, answer) = media.answer(offer, Kind::Viewer)?;
    // The viewer page's player names its tab (`?cid=`): the tab's socket
    // stops its pictures and its count before this session counts.
    let tab = super::ws::client_id(&req).map(|tab| state.tabs.whep_started(&username, &tab));
    let seat = AudienceSeat::take(state.audience.clone(), stream.id, username.as_str(), ip);
    let guard = WhepViewer {
        _seat: seat,
        _tab: tab,
        _slot: slot,
    };
    let id = media.play(stream, rtc, Box::new(guard))?;
    Ok(created(format!("/whep/{username}/{id}")).body(answer.to_sdp_string()))
}

/// What a WHEP session holds while it lives (the media side drops it when
/// the session ends: DELETE, reaped, the stream's end): its place in the
/// stream's audience, its tab's WHEP mark, its per-network slot.
struct WhepViewer {
    _seat: AudienceSeat,
    _tab: Option<super::ws::TabWhep>,
    _slot: Option<super::ws::ViewerSlot>,
}

/// The session named by a DELETE's path: (id, stream owner, broadcaster?).
fn session_of(
    media: &Media,
    kind: Kind,
    path: &(String, String),
) -> Result<(SessionId, Username, bool), ApiError> {
    let not_found = || ApiError::NotFound("no such session".into());
    let id: SessionId = path.1.parse().map_err(|_| not_found())?;
    match media.session(id) {
        Some((k, user, broadcaster)) if k == kind && user.as_str() == path.0 => {
            Ok((id, user, broadcaster))
        }
        _ => Err(not_found()),
    }
}

/// Ends a publisher session and its stream. The session URL (128 random
/// bits, known only to the publisher) is the capability.
async fn delete_whip(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let media = media(&state)?;
    let (id, username, broadcaster) = session_of(media, Kind::Publisher, &path)?;
    media.end_now(id);
    if broadcaster {
        state.control.stop(&username, EndReason::Stopped);
    }
    Ok(HttpResponse::Ok().finish())
}

async fn delete_whep(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let media = media(&state)?;
    let (id, _, _) = session_of(media, Kind::Viewer, &path)?;
    media.end_now(id);
    Ok(HttpResponse::Ok().finish())
}

async fn no_trickle() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "DELETE"))
        .json(serde_json::json!({
            "error": "trickle ICE is not supported: the answer carries every candidate"
        }))
}
