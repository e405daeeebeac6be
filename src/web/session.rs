//! Sessions, the logged-in user and CSRF.
//!
//! Sessions are actix-session's: the whole state in an encrypted cookie on the
//! embedded default, or in Redis (`REDIS_URL`) with only the key in the cookie
//! — for logged-in sessions only; anonymous ones stay in their cookie
//! ([`AnyStore`]).
//! Cookies are HttpOnly, SameSite=Lax, Secure when `public_url` is https.
//!
//! Ending sessions: a session holds the user's id and their *session
//! version* at login. Every authenticated request compares it with the
//! user's row; logout, "log out everywhere" and a password change bump the
//! version ([`crate::accounts::Accounts::end_sessions`]), so a copied or old
//! cookie stops working at once, with the cookie store as with Redis.
//! Logout therefore ends all of the user's sessions, not only this one.
//!
//! CSRF: every session has a random token; forms send it as the `csrf` field,
//! JSON calls as the `X-CSRF-Token` header. State-changing handlers call
//! [`check_csrf`] before doing anything.

use std::future::Future;
use std::pin::Pin;

use actix_session::storage::{
    CookieSessionStore, LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore,
    UpdateError,
};
use actix_session::{Session, SessionExt, SessionMiddleware, config::PersistentSession};
use actix_web::cookie::{Key, SameSite, time::Duration as CookieDuration};
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use anyhow::Context;
use secrecy::ExposeSecret;

use super::AppState;
use super::errors::ApiError;
use crate::accounts::User;
use crate::settings::Settings;

const USER_ID: &str = "uid";
/// The user's session version when this session logged in.
const SESSION_VERSION: &str = "sv";
const CSRF: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session store the settings ask for.
///
/// With Redis, only logged-in sessions are stored there. An anonymous
/// session (a CSRF token, an OAuth sign-up in progress) lives in its cookie
/// as the cookie store keeps it (encrypted and signed by the middleware), so
/// visitors who never log in cost no Redis key. A session moves to Redis
/// when it logs in (`log_in` renews it, which saves it anew) and leaves it
/// when it logs out.
pub enum AnyStore {
    Cookie(CookieSessionStore),
    Redis(RedisSessionStore),
}

type State = std::collections::HashMap<String, String>;

/// Whether a state belongs in Redis: only a logged-in one.
fn stored_in_redis(state: &State) -> bool {
    state.contains_key(USER_ID)
}

/// Whether a session key is a whole state kept in the cookie (JSON) rather
/// than a Redis key (alphanumeric).
fn kept_in_cookie(key: &SessionKey) -> bool {
    key.as_ref().starts_with('{')
}

/// `call` against Redis, or an error after [`crate::limits::REDIS_TIMEOUT`]
/// (the session store's own connection has no deadline of its own).
async fn in_time<T, E>(
    call: impl Future<Output = Result<T, E>>,
    timed_out: impl FnOnce(anyhow::Error) -> E,
) -> Result<T, E> {
    match tokio::time::timeout(crate::limits::REDIS_TIMEOUT, call).await {
        Ok(r) => r,
        // actix-session answers a store error with 500 and this text (its
        // own, no cause): say what the user can do.
        Err(_) => Err(timed_out(anyhow::anyhow!(
            "sessions are unavailable for a moment: try again shortly"
        ))),
    }
}

impl SessionStore for AnyStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        match self {
            AnyStore::Redis(s) if !kept_in_cookie(key) => {
                in_time(s.load(key), LoadError::Other).await
            }
            _ => CookieSessionStore::default().load(key).await,
        }
    }
    async fn save(&self, state: State, ttl: &CookieDuration) -> Result<SessionKey, SaveError> {
        match self {
            AnyStore::Redis(s) if stored_in_redis(&state) => {
                in_time(s.save(state, ttl), SaveError::Other).await
            }
            _ => CookieSessionStore::default().save(state, ttl).await,
        }
    }
    async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let AnyStore::Redis(s) = self else {
            return CookieSessionStore::default().update(key, state, ttl).await;
        };
        match (kept_in_cookie(&key), stored_in_redis(&state)) {
            (false, true) => in_time(s.update(key, state, ttl), UpdateError::Other).await,
            (true, false) => CookieSessionStore::default().update(key, state, ttl).await,
            (true, true) => {
                in_time(s.save(state, ttl), SaveError::Other)
                    .await
                    .map_err(|e| match e {
                        SaveError::Serialization(e) => UpdateError::Serialization(e),
                        SaveError::Other(e) => UpdateError::Other(e),
                    })
            }
            (false, false) => {
                in_time(s.delete(&key), |e| e)
                    .await
                    .map_err(UpdateError::Other)?;
                CookieSessionStore::default().update(key, state, ttl).await
            }
        }
    }
    async fn update_ttl(&self, key: &SessionKey, ttl: &CookieDuration) -> anyhow::Result<()> {
        match self {
            AnyStore::Redis(s) if !kept_in_cookie(key) => {
                in_time(s.update_ttl(key, ttl), |e| e).await
            }
            _ => Ok(()),
        }
    }
    async fn delete(&self, key: &SessionKey) -> anyhow::Result<()> {
        match self {
            AnyStore::Redis(s) if !kept_in_cookie(key) => in_time(s.delete(key), |e| e).await,
            _ => Ok(()),
        }
    }
}

/// What the session middleware is built from (made once, cloned per worker).
#[derive(Clone)]
pub struct SessionConfig {
    key: Key,
    redis: Option<RedisSessionStore>,
    secure: bool,
    days: u32,
}

impl SessionConfig {
    pub async fn load(settings: &Settings) -> anyhow::Result<Self> {
        let key = Key::from(
            crate::secrets::load_key(
                SESSION_KEY,
                settings.session_key.as_ref(),
                &settings.data_dir,
            )?
            .expose_secret(),
        );
        let redis = match &settings.redis_url {
            Some(url) => Some({
                let prefix = format!("{}session:", settings.redis_prefix);
                RedisSessionStore::builder(url.expose_secret().to_string())
                    .cache_keygen(move |k| format!("{prefix}{k}"))
                    .build()
                    .await
                    .context("failed to connect the session store to REDIS_URL")?
            }),
            None => None,
        };
        Ok(Self {
            key,
            redis,
            secure: settings.public_url().starts_with("https://"),
            days: settings.accounts.session_days,
        })
    }

    pub fn middleware(&self) -> SessionMiddleware<AnyStore> {
        let store = match &self.redis {
            Some(r) => AnyStore::Redis(r.clone()),
            None => AnyStore::Cookie(CookieSessionStore::default()),
        };
        SessionMiddleware::builder(store, self.key.clone())
            .cookie_name("ds_session".into())
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_secure(self.secure)
            .session_lifecycle(
                PersistentSession::default().session_ttl(CookieDuration::days(self.days.into())),
            )
            .build()
    }
}

/// The signing/encryption key: `DREAMSTREAM_SESSION_KEY` (hex or base64, at
/// least 64 bytes), else a random key kept in `data_dir/session.key` (so
/// restarts keep people logged in).
const SESSION_KEY: crate::secrets::KeySource = crate::secrets::KeySource {
    env: "DREAMSTREAM_SESSION_KEY",
    file: "session.key",
    min_bytes: 64,
};

/// The session's CSRF token (made on first use).
pub fn csrf_token(session: &Session) -> String {
    if let Ok(Some(t)) = session.get::<String>(CSRF) {
        return t;
    }
    let t = hex::encode(rand::random::<[u8; 32]>());
    let _ = session.insert(CSRF, &t);
    t
}

/// Refuses (403) unless `given` is this session's CSRF token.
pub fn check_csrf(session: &Session, given: Option<&str>) -> Result<(), ApiError> {
    let expected = session.get::<String>(CSRF).ok().flatten();
    match (expected, given) {
        (Some(e), Some(g)) if crate::secrets::same_secret(e.as_bytes(), g.as_bytes()) => Ok(()),
        _ => Err(ApiError::Forbidden(
            "missing or wrong CSRF token: reload the page and try again".into(),
        )),
    }
}

/// The CSRF header of a JSON call, checked.
pub fn check_csrf_header(req: &HttpRequest) -> Result<(), ApiError> {
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    check_csrf(&req.get_session(), given)
}

/// Logs `user` in: a new session id (no fixation), a new CSRF token.
pub fn log_in(session: &Session, user: &User) -> Result<(), ApiError> {
    session.renew();
    session.clear();
    session
        .insert(USER_ID, user.id)
        .and_then(|()| session.insert(SESSION_VERSION, user.session_version))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("session: {e}")))?;
    csrf_token(session);
    Ok(())
}

/// Logs out: ends every session of the user on the server (see the
/// module's "Ending sessions"), then forgets this one.
pub async fn log_out(state: &AppState, session: &Session) -> Result<(), ApiError> {
    if let Ok(Some(id)) = session.get::<i64>(USER_ID) {
        state.accounts.end_sessions(id).await?;
    }
    session.purge();
    Ok(())
}

/// The logged-in user, if any (an extractor that never fails on its own).
pub struct MaybeUser(pub Option<User>);

/// The logged-in user; 401 without one.
pub struct CurrentUser(pub User);

async fn load_user(req: HttpRequest) -> Result<Option<User>, ApiError> {
    let session = req.get_session();
    let Ok(Some(id)) = session.get::<i64>(USER_ID) else {
        return Ok(None);
    };
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::Internal(anyhow::anyhow!("no app state")));
    };
    let version = session.get::<i64>(SESSION_VERSION).ok().flatten();
    match state.accounts.by_id(id).await {
        Ok(Some(u)) if version == Some(u.session_version) => Ok(Some(u)),
        // The account is gone, or this session was ended: forget it.
        Ok(_) => {
            session.purge();
            Ok(None)
        }
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

impl FromRequest for MaybeUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { load_user(req).await.map(MaybeUser) })
    }
}

impl FromRequest for CurrentUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            load_user(req)
                .await?
                .map(CurrentUser)
                .ok_or_else(|| ApiError::Unauthorized("log in first".into()))
        })
    }
}
