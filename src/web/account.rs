//! Registration, login and logout: HTML forms and the same as JSON calls
//! (`/api/auth/...`) for scripts and the benchmark. Failed logins are
//! limited per client network and per (account, network) — see [`do_login`];
//! sign-ups per client network on every route that makes an account.

use std::time::Duration;

use actix_session::Session;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::AppState;
use super::client_ip::client_ip;
use super::errors::ApiError;
use super::session::{self, MaybeUser, check_csrf, check_csrf_header, csrf_token};
use crate::accounts::User;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    nav: super::pages::Nav,
    /// "login" or "register".
    mode: &'a str,
    username: &'a str,
    next: &'a str,
    error: Option<String>,
    providers: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub csrf: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    pub next: Option<String>,
}

/// Only local paths: an open redirect would hand logins to another site.
/// Visible ASCII only: browsers drop tabs and newlines from `Location`, so
/// `/\t/evil.example` would become `//evil.example`.
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/studio",
    }
}

fn render(
    state: &AppState,
    nav: super::pages::Nav,
    mode: &str,
    username: &str,
    next: &str,
    error: Option<(ApiError, actix_web::http::StatusCode)>,
) -> Result<HttpResponse, ApiError> {
    let (error, status) = match error {
        Some((e, s)) => (Some(e.to_string()), s),
        None => (None, actix_web::http::StatusCode::OK),
    };
    let page = LoginPage {
        nav,
        mode,
        username,
        next,
        error,
        providers: state
            .oauth
            .iter()
            .map(|p| (p.name.clone(), p.display_name.clone()))
            .collect(),
    };
    let html = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

pub async fn login_page(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    q: web::Query<NextQuery>,
) -> Result<HttpResponse, ApiError> {
    let next = safe_next(q.next.as_deref());
    if user.0.is_some() {
        return Ok(super::see_other(next));
    }
    render(
        &state,
        super::pages::Nav::anonymous(&session),
        "login",
        "",
        next,
        None,
    )
}

/// The sign-up form; a logged-in visitor sees their own header (and a note
/// that they are logged in), never the logged-out one.
pub async fn register_page(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    q: web::Query<NextQuery>,
) -> Result<HttpResponse, ApiError> {
    render(
        &state,
        super::pages::Nav::with_form(&session, &user),
        "register",
        "",
        safe_next(q.next.as_deref()),
        None,
    )
}

/// The client's network as a limit key: the address for IPv4, its /64 for
/// IPv6 (one subscriber usually holds a whole /64).
fn ip_of(state: &AppState, req: &HttpRequest) -> String {
    client_ip(req, &state.trusted_proxies)
        .map(super::client_ip::network_key)
        .unwrap_or_default()
}

/// The limiter could not count (Redis down or slow): logins and sign-ups
/// fail closed, with 503 and the cause in the log only.
fn cannot_count(e: anyhow::Error) -> ApiError {
    tracing::error!(
        error = format!("{e:#}"),
        "rate limiter unavailable: refusing"
    );
    ApiError::Unavailable("signing in is unavailable for a moment: try again shortly".into())
}

/// Counts an attempt against `key`; 429 beyond `limit` in the window.
async fn limit(state: &AppState, key: &str, limit: u32, window: Duration) -> Result<(), ApiError> {
    let hit = state
        .limiter
        .hit(key, limit, window)
        .await
        .map_err(cannot_count)?;
    if !hit.allowed {
        tracing::warn!(%key, count = hit.count, "rate limit");
        return Err(ApiError::TooManyRequests(hit.retry_after.as_secs().max(1)));
    }
    Ok(())
}

/// 429 while `key` is blocked.
async fn refuse_if_blocked(state: &AppState, key: &str) -> Result<(), ApiError> {
    match state.limiter.blocked_for(key).await.map_err(cannot_count)? {
        Some(left) => Err(ApiError::TooManyRequests(left.as_secs().max(1))),
        None => Ok(()),
    }
}

/// Counts a failure against `key`; blocks it for the window once over `limit`.
/// True when it is blocked now.
async fn count_failure(
    state: &AppState,
    key: &str,
    limit: u32,
    window: Duration,
) -> Result<bool, ApiError> {
    let hit = state
        .limiter
        .hit(key, limit, window)
        .await
        .map_err(cannot_count)?;
    if !hit.allowed {
        tracing::warn!(%key, count = hit.count, "login failures: blocked");
        state
            .limiter
            .block(key, window)
            .await
            .map_err(cannot_count)?;
    }
    Ok(!hit.allowed)
}

/// The pause before answering a failed login once an account has had
/// `failures` in the window, more than `free` of them: 250 ms, doubling,
/// at most 4 s. It slows guessing across many addresses without ever
/// refusing the right password.
fn failure_delay(failures: u64, free: u32) -> Duration {
    let over = failures.saturating_sub(u64::from(free));
    if over == 0 {
        return Duration::ZERO;
    }
    let ms = 250u64.saturating_mul(1 << (over - 1).min(10));
    Duration::from_millis(ms.min(4000))
}

/// Logins, as the OWASP authentication guidance has it: only *failures*
/// count, so a NAT's many successful logins cost nothing. Failures count
/// per client network (IPv6 by /64) and per (account, network); either over
/// its limit blocks that key for the window. Nothing blocks an account as a
/// whole, so nobody can lock a streamer out by trying their public name:
/// the owner, from their own network, still gets in. Failures against an
/// account from everywhere add a growing pause to each further failure.
async fn do_login(state: &AppState, req: &HttpRequest, c: &Credentials) -> Result<User, ApiError> {
    let cfg = &state.config.accounts;
    let window = Duration::from_secs(cfg.login_window_secs);
    let net = ip_of(state, req);
    let ip_key = format!("login:ip:{net}");
    refuse_if_blocked(state, &ip_key).await?;
    // Only real names have counters (no unbounded keys).
    let account = dreamstream_actors::Username::parse(&c.username).ok();
    let pair_key = account.as_ref().map(|u| format!("login:user:{u}:{net}"));
    if let Some(key) = &pair_key {
        refuse_if_blocked(state, key).await?;
    }
    match state.accounts.login(&c.username, &c.password).await {
        Ok(user) => Ok(user),
        Err(crate::accounts::AccountError::BadCredentials) => {
            let mut blocked =
                count_failure(state, &ip_key, cfg.login_attempts_per_ip, window).await?;
            if let (Some(pair), Some(user)) = (&pair_key, &account) {
                blocked |=
                    count_failure(state, pair, cfg.login_attempts_per_account, window).await?;
                let all = state
                    .limiter
                    .hit(&format!("login:account:{user}"), u32::MAX, window)
                    .await
                    .map_err(cannot_count)?;
                tokio::time::sleep(failure_delay(all.count, cfg.login_attempts_per_account)).await;
            }
            if blocked {
                return Err(ApiError::TooManyRequests(window.as_secs()));
            }
            Err(crate::accounts::AccountError::BadCredentials.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Signups per client IP (each hashes a password and grants the bonus),
/// whichever route makes the account: the form, the JSON call, a first
/// OAuth login.
pub(crate) async fn limit_signup(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let cfg = &state.config.accounts;
    limit(
        state,
        &format!("signup:ip:{}", ip_of(state, req)),
        cfg.signups_per_ip_per_hour,
        Duration::from_secs(3600),
    )
    .await
}

fn status_of(e: &ApiError) -> actix_web::http::StatusCode {
    actix_web::ResponseError::status_code(e)
}

pub async fn login_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<Credentials>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    let next = safe_next(form.next.as_deref());
    match do_login(&state, &req, &form).await {
        Ok(user) => {
            session::log_in(&session, &user)?;
            Ok(super::see_other(next))
        }
        Err(e @ ApiError::Internal(_)) => Err(e),
        Err(e) => {
            let s = status_of(&e);
            render(
                &state,
                super::pages::Nav::anonymous(&session),
                "login",
                &form.username,
                next,
                Some((e, s)),
            )
        }
    }
}

pub async fn register_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<Credentials>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    let next = safe_next(form.next.as_deref());
    let registered = match limit_signup(&state, &req).await {
        Ok(()) => state
            .accounts
            .register(&form.username, &form.password)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match registered {
        Ok(user) => {
            session::log_in(&session, &user)?;
            Ok(super::see_other(next))
        }
        Err(e @ ApiError::Internal(_)) => Err(e),
        Err(e) => {
            let s = status_of(&e);
            render(
                &state,
                super::pages::Nav::anonymous(&session),
                "register",
                &form.username,
                next,
                Some((e, s)),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: Option<String>,
}

pub async fn logout_form(
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    session::log_out(&state, &session).await?;
    Ok(super::see_other("/"))
}

/// `GET /api/auth/csrf`: the token JSON calls send as `X-CSRF-Token`.
pub async fn csrf_json(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "csrf": csrf_token(&session) }))
}

async fn me_json(
    state: &AppState,
    session: &Session,
    user: &User,
) -> Result<serde_json::Value, ApiError> {
    let balance = state.accounts.balance(user.id).await?;
    // Streaming time already paid (a credit buys the streamer's time, not
    // one stream's): going live before it runs out costs nothing.
    let paid_left = crate::accounts::paid_left(state.accounts.db(), user.id).await?;
    Ok(serde_json::json!({
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "balance": balance,
        "paid_seconds_left": paid_left.as_secs(),
        "period_minutes": state.config.credits.period_minutes,
        "csrf": csrf_token(session),
    }))
}

pub async fn register_json(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    check_csrf_header(&req)?;
    limit_signup(&state, &req).await?;
    let user = state
        .accounts
        .register(&body.username, &body.password)
        .await?;
    session::log_in(&session, &user)?;
    Ok(HttpResponse::Created().json(me_json(&state, &session, &user).await?))
}

pub async fn login_json(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    check_csrf_header(&req)?;
    let user = do_login(&state, &req, &body).await?;
    session::log_in(&session, &user)?;
    Ok(HttpResponse::Ok().json(me_json(&state, &session, &user).await?))
}

/// `POST /api/auth/logout` and `POST /api/auth/logout-everywhere`: both end
/// every session of the user (one session version per user).
pub async fn logout_json(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    check_csrf_header(&req)?;
    session::log_out(&state, &session).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct PasswordChange {
    /// Ignored for an account without a password (OAuth only).
    #[serde(default)]
    pub current: String,
    pub new: String,
}

/// `POST /api/me/password`: a new password; every other session ends, this
/// one continues under the new session version.
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    user: session::CurrentUser,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    check_csrf_header(&req)?;
    // Guessing the current password here counts like a failed login.
    let window = Duration::from_secs(state.config.accounts.login_window_secs);
    limit(
        &state,
        &format!("password:user:{}", user.0.id),
        state.config.accounts.login_attempts_per_account,
        window,
    )
    .await?;
    let updated = state
        .accounts
        .change_password(user.0.id, &body.current, &body.new)
        .await?;
    session::log_in(&session, &updated)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/me`: who is logged in, their credits.
pub async fn me(
    state: web::Data<AppState>,
    session: Session,
    user: session::CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let mut v = me_json(&state, &session, &user.0).await?;
    let live = state.control.get(&user.0.username).await.is_some();
    v["live"] = live.into();
    v["has_stream_key"] = crate::accounts::keys::exists(state.accounts.db(), user.0.id)
        .await?
        .into();
    Ok(HttpResponse::Ok().json(v))
}

/// `POST /api/me/stream-key`: a new stream key (shown once; the old one stops working).
pub async fn rotate_stream_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: session::CurrentUser,
) -> Result<HttpResponse, ApiError> {
    check_csrf_header(&req)?;
    let key = crate::accounts::keys::rotate(state.accounts.db(), user.0.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "key": key })))
}

/// One API key as the account page lists it (never the key itself).
struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
    revoked: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: super::pages::Nav,
    username: String,
    keys: Vec<KeyRow>,
    /// A key just made: (name, key), shown this once.
    new_key: Option<(String, String)>,
    error: Option<String>,
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

async fn account_page(
    state: &AppState,
    session: &Session,
    user: &MaybeUser,
    me: &User,
    new_key: Option<(String, String)>,
    error: Option<(String, actix_web::http::StatusCode)>,
) -> Result<HttpResponse, ApiError> {
    let keys = crate::accounts::keys::list_api_keys(state.accounts.db(), me.id)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created: when(k.created_at),
            last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            revoked: k.revoked_at.map(when),
        })
        .collect();
    let (error, status) = match error {
        Some((e, s)) => (Some(e), s),
        None => (None, actix_web::http::StatusCode::OK),
    };
    let page = AccountPage {
        nav: super::pages::Nav::new(session, user),
        username: me.username.to_string(),
        keys,
        new_key,
        error,
    };
    let html = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// `GET /account`: the user's API keys (name, first characters, when made,
/// last used, revoked), a form to make one and a button to revoke each.
pub async fn account(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let Some(me) = user.0.clone() else {
        return Ok(super::see_other("/login?next=/account"));
    };
    account_page(&state, &session, &user, &me, None, None).await
}

#[derive(Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    pub csrf: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// `POST /account/api-keys`: makes a named API key and shows it once, on
/// the page this answers with (only its hash is stored).
pub async fn create_api_key_form(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    form: web::Form<NewKeyForm>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    let Some(me) = user.0.clone() else {
        return Ok(super::see_other("/login?next=/account"));
    };
    use crate::accounts::keys::{KeyError, create_api_key};
    match create_api_key(state.accounts.db(), me.id, &form.name).await {
        Ok((row, key)) => {
            tracing::info!(user = %me.username, key = row.id, "API key made");
            account_page(&state, &session, &user, &me, Some((row.name, key)), None).await
        }
        Err(e @ (KeyError::BadName | KeyError::NameTaken(_))) => {
            let status = actix_web::http::StatusCode::BAD_REQUEST;
            account_page(
                &state,
                &session,
                &user,
                &me,
                None,
                Some((e.to_string(), status)),
            )
            .await
        }
        Err(KeyError::NoSuchKey) => Err(ApiError::NotFound("no such API key".into())),
        Err(KeyError::Db(e)) => Err(e.into()),
    }
}

/// `POST /account/api-keys/{id}/revoke`: the key is refused from now on.
pub async fn revoke_api_key_form(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    let Some(me) = user.0.clone() else {
        return Ok(super::see_other("/login?next=/account"));
    };
    use crate::accounts::keys::{KeyError, KeyRef, revoke_api_key};
    match revoke_api_key(state.accounts.db(), me.id, KeyRef::Id(path.into_inner())).await {
        Ok(row) => {
            tracing::info!(user = %me.username, key = row.id, "API key revoked");
            Ok(super::see_other("/account"))
        }
        Err(KeyError::Db(e)) => Err(e.into()),
        Err(_) => Err(ApiError::NotFound("no such API key".into())),
    }
}
