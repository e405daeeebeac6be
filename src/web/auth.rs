//! Who may broadcast to a stream (and start, stop or restyle it): its owner,
//! logged in (session cookie) or holding the stream key (`?key=` or
//! `Authorization: Bearer`).
//!
//! With a cookie, a state-changing call must carry the CSRF header, and a
//! WebSocket upgrade must come from this site's own pages (its `Origin`), so
//! another site cannot broadcast with a visitor's cookie.

use actix_web::{HttpRequest, http::Method, web};
use dreamstream_actors::Username;
use dreamstream_actors::supervisor::StartError;

use super::AppState;
use super::errors::ApiError;
use super::session::{MaybeUser, check_csrf_header};
use crate::accounts::{User, keys};

/// The stream key a request presents (`Authorization: Bearer` or `?key=`).
pub fn presented_key(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        && let Some(k) = v.strip_prefix("Bearer ")
    {
        return Some(k.trim().to_string());
    }
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("key").cloned())
}

/// True when the request comes from a page of this site. Browsers send
/// `Origin` with every WebSocket handshake; a cookie-authenticated upgrade
/// without one is refused (a top-level navigation carries the Lax cookie but
/// no `Origin`). Scripts authenticate with the stream key instead.
///
/// The origin must match scheme, host and port: `public_url` when set, else
/// the address the request was made to — its `Host` header and this
/// server's scheme, or what a trusted proxy reports (`X-Forwarded-Host`,
/// `X-Forwarded-Proto`); those headers from any other peer are ignored.
fn same_origin(req: &HttpRequest, state: &AppState) -> bool {
    let Some(origin) = req.headers().get("origin").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if state.config.configured_public_url.is_some() {
        return origin_matches(origin, &state.config.public_url);
    }
    let (scheme, host) = request_site(req, state);
    origin_matches(origin, &format!("{scheme}://{host}"))
}

/// The scheme and host (with port) the request was made to: what a trusted
/// proxy reports (`X-Forwarded-Proto`/`-Host`, `Forwarded`), else this
/// server's scheme and the `Host` header (empty when missing); forwarded
/// headers from any other peer are ignored.
pub(crate) fn request_site(req: &HttpRequest, state: &AppState) -> (String, String) {
    let from_proxy = req
        .peer_addr()
        .is_some_and(|p| state.trusted_proxies.iter().any(|n| n.contains(&p.ip())));
    if from_proxy {
        let info = req.connection_info();
        return (info.scheme().to_string(), info.host().to_string());
    }
    let scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    (scheme.to_string(), host.to_string())
}

/// Whether `origin` is the same origin as `site` (scheme, host, port; the
/// scheme's default port may be left out).
fn origin_matches(origin: &str, site: &str) -> bool {
    let (Ok(o), Ok(s)) = (url::Url::parse(origin), url::Url::parse(site)) else {
        return false;
    };
    o.scheme() == s.scheme()
        && o.host_str().is_some()
        && o.host_str() == s.host_str()
        && o.port_or_known_default() == s.port_or_known_default()
}

/// The owner of `username`'s stream, or why the request may not act for it.
pub async fn authorize_broadcast(
    req: &HttpRequest,
    username: &Username,
    state: &AppState,
) -> Result<User, ApiError> {
    let user = if let Some(key) = presented_key(req) {
        let id = keys::owner(state.accounts.db(), &key)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown stream key".into()))?;
        state
            .accounts
            .by_id(id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown stream key".into()))?
    } else {
        let MaybeUser(user) = <MaybeUser as actix_web::FromRequest>::extract(req).await?;
        let user = user.ok_or_else(|| {
            ApiError::Unauthorized("log in (or use your stream key) to broadcast".into())
        })?;
        if req.method() == Method::GET {
            if !same_origin(req, state) {
                return Err(ApiError::Forbidden(
                    "broadcasting with a login cookie is only allowed from this site".into(),
                ));
            }
        } else {
            check_csrf_header(req)?;
        }
        user
    };
    if &user.username != username {
        return Err(ApiError::Forbidden(format!(
            "only {username} can broadcast to /s/{username}"
        )));
    }
    Ok(user)
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::AlreadyLive(_) => ApiError::Conflict(e.to_string()),
            StartError::NoCredits(_) => ApiError::PaymentRequired(e.to_string()),
            StartError::Unavailable => ApiError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origins_match_on_scheme_host_and_port() {
        assert!(origin_matches(
            "https://dream.example",
            "https://dream.example"
        ));
        assert!(origin_matches(
            "https://dream.example",
            "https://dream.example:443"
        ));
        assert!(origin_matches(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080"
        ));
        assert!(!origin_matches(
            "http://dream.example",
            "https://dream.example"
        ));
        assert!(!origin_matches(
            "https://dream.example:8443",
            "https://dream.example"
        ));
        assert!(!origin_matches(
            "https://evil.example",
            "https://dream.example"
        ));
        assert!(!origin_matches("null", "https://dream.example"));
    }
}
