//! Registration, login and logout: HTML forms and the same as JSON calls
//! (`/api/auth/...`) for scripts and the benchmark. Logins are rate-limited
//! per client IP and per account.

use std::time::Duration;

use actix_session::Session;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
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
    session: &Session,
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
        nav: super::pages::Nav::anonymous(session),
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
        return Ok(see_other(next));
    }
    render(&state, &session, "login", "", next, None)
}

pub async fn register_page(
    state: web::Data<AppState>,
    session: Session,
    q: web::Query<NextQuery>,
) -> Result<HttpResponse, ApiError> {
    render(
        &state,
        &session,
        "register",
        "",
        safe_next(q.next.as_deref()),
        None,
    )
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

fn ip_of(state: &AppState, req: &HttpRequest) -> String {
    client_ip(req, &state.trusted_proxies)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// Counts an attempt against `key`; 429 beyond `limit` in the window.
async fn limit(state: &AppState, key: &str, limit: u32, window: Duration) -> Result<(), ApiError> {
    let hit = state.limiter.hit(key, limit, window).await?;
    if !hit.allowed {
        tracing::warn!(%key, count = hit.count, "rate limit");
        return Err(ApiError::TooManyRequests(hit.retry_after.as_secs().max(1)));
    }
    Ok(())
}

/// Logins: every attempt counts against the client's IP; only failed ones
/// count against the account (so nobody can lock a streamer out by trying
/// their name), and an account over its limit is blocked for the window.
async fn do_login(state: &AppState, req: &HttpRequest, c: &Credentials) -> Result<User, ApiError> {
    let cfg = &state.settings.accounts;
    let window = Duration::from_secs(cfg.login_window_secs);
    limit(
        state,
        &format!("login:ip:{}", ip_of(state, req)),
        cfg.login_attempts_per_ip,
        window,
    )
    .await?;
    // Only real names have a per-account counter (no unbounded keys).
    let account_key = dreamstream_actors::Username::parse(&c.username)
        .ok()
        .map(|u| format!("login:user:{u}"));
    if let Some(key) = &account_key
        && let Some(left) = state.limiter.blocked_for(key).await?
    {
        return Err(ApiError::TooManyRequests(left.as_secs().max(1)));
    }
    match state.accounts.login(&c.username, &c.password).await {
        Ok(user) => Ok(user),
        Err(e) => {
            if let Some(key) = &account_key {
                let hit = state
                    .limiter
                    .hit(key, cfg.login_attempts_per_account, window)
                    .await?;
                if !hit.allowed {
                    state.limiter.block(key, window).await?;
                    return Err(ApiError::TooManyRequests(window.as_secs()));
                }
            }
            Err(e.into())
        }
    }
}

/// Signups per client IP (each hashes a password and grants the bonus).
async fn limit_signup(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let cfg = &state.settings.accounts;
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
            Ok(see_other(next))
        }
        Err(e @ ApiError::Internal(_)) => Err(e),
        Err(e) => {
            let s = status_of(&e);
            render(
                &state,
                &session,
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
            Ok(see_other(next))
        }
        Err(e @ ApiError::Internal(_)) => Err(e),
        Err(e) => {
            let s = status_of(&e);
            render(
                &state,
                &session,
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
    session: Session,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    session::log_out(&session);
    Ok(see_other("/"))
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
    Ok(serde_json::json!({
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "balance": balance,
        "period_minutes": state.settings.credits.period_minutes,
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

pub async fn logout_json(req: HttpRequest, session: Session) -> Result<HttpResponse, ApiError> {
    check_csrf_header(&req)?;
    session::log_out(&session);
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
